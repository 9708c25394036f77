/* Attention family P (ATTENTION.md §10–§12): the shared pieces — seeded LSH rotations, the
 * angular hash, and the per-query union of key groups (a stamp array dedups keys reachable
 * through several rounds or blocks, so each counts once, §0). */
#include "config.h"

#include <math.h>

#include "attention/fam_p.h"
#include "attention/rng.h"

void xf_at_p_rotation(uint64_t seed, int32_t layer, int32_t head, int32_t rho, int32_t d,
                      int32_t nb, double *r)
{
    xf_rng_t rng;
    size_t cnt = (size_t)d * (size_t)(nb / 2);

    xf_rng_init(&rng, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_LSH, (uint64_t)rho);
    for (size_t i = 0; i < cnt; i++)
        r[i] = xf_rng_normal(&rng);
}

int32_t xf_at_p_hash(const double *xhat, int32_t d, const double *r, int32_t nb, double *acc)
{
    int32_t half = nb / 2, best = 0;
    double bv = -INFINITY;

    if (nb < 2)
        return 0;
    /* acc[col] = Σ_c x̂_c R[c][col], summed over c in order for every column */
    for (int32_t col = 0; col < half; col++)
        acc[col] = 0;
    for (int32_t c = 0; c < d; c++) {
        const double *rc = r + (size_t)c * (size_t)half;
        double xc = xhat[c];
        for (int32_t col = 0; col < half; col++)
            acc[col] += xc * rc[col];
    }
    for (int32_t col = 0; col < half; col++)
        if (acc[col] > bv) {
            bv = acc[col];
            best = col;
        }
    for (int32_t col = 0; col < half; col++)
        if (-acc[col] > bv) {
            bv = -acc[col];
            best = half + col;
        }
    return best;
}

int32_t xf_reformer_buckets(const xf_reformer_params_t *p, int32_t n)
{
    int32_t v, nb = 1;

    if (p->n_buckets > 0)
        return p->n_buckets;
    v = (int32_t)(((int64_t)2 * n) / p->chunk);
    while ((int64_t)nb * 2 <= v)
        nb *= 2;
    return nb < 2 ? 2 : nb;
}

int32_t xf_routing_clusters(const xf_routing_params_t *p, int32_t n)
{
    int32_t k = p->clusters;

    if (k == 0) {
        if (p->mode == XF_ROUTING_CLUSTERED) {
            k = 25;
        } else {
            k = (int32_t)ceil(sqrt((double)n));
            while ((int64_t)k * k < n)
                k++;
            while (k > 1 && (int64_t)(k - 1) * (k - 1) >= n)
                k--;
        }
    }
    if (k > n)
        k = n;
    return k < 1 ? 1 : k;
}
