/* Attention family F (ATTENTION.md §17–§19): the shared feature-map linear-attention kernel and
 * the seeded projection generators (FAVOR+ orthogonal blocks, RFA Gaussian rows). Keys are
 * mapped with one per-(sequence, head) shift so exponentials stay in range; every accumulation
 * (S, z) is in double. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "attention/fam_f.h"
#include "attention/rng.h"

int32_t xf_famf_features(const xf_famf_map_t *mp)
{
    return (mp->kind == XF_FAMF_TRIG || mp->kind == XF_FAMF_TRIGNORM) ? 2 * mp->r : mp->r;
}

static size_t al8(size_t x)
{
    return (x + 7u) & ~(size_t)7u;
}

size_t xf_famf_ws(const xf_famf_map_t *mp, int32_t nmax, int32_t d)
{
    size_t F = (size_t)xf_famf_features(mp), r = (size_t)mp->r, n = (size_t)nmax;

    return al8(sizeof(float) * n * r)            /* pre-activations of the keys */
           + sizeof(double) * n                  /* per-key log weight */
           + sizeof(double) * F * (size_t)d      /* S */
           + sizeof(double) * 3u * F             /* z, Σ|φ|, φ */
           + sizeof(double) * 2u * (size_t)d     /* numerator, mean of V */
           + al8(sizeof(float) * ((size_t)d + r)) /* mapped input, its projection */
           + al8(sizeof(float) * F * (size_t)d)   /* fp32 partial S / fp32 copy of S */
           + al8(sizeof(float) * 32u * F);        /* features of a block of 32 keys */
}

static inline float elu1(float x)
{
    return x > 0 ? x + 1.0f : expf(x);
}

/* pre = W·x (r rows) for the projection maps, x itself for LINEAR. */
static void project(const xf_famf_map_t *mp, const float *x, int32_t d, float *pre)
{
    if (mp->kind == XF_FAMF_LINEAR) {
        memcpy(pre, x, sizeof(float) * (size_t)d);
        return;
    }
    for (int32_t r = 0; r < mp->r; r++)
        pre[r] = xf_sfpm_dot(mp->w + (size_t)r * (size_t)d, x, d);
}

/* x = mul·raw (or the unit vector for TRIGNORM); returns ‖x‖²/2. */
static double map_input(const xf_famf_map_t *mp, const float *raw, int32_t d, float mul, float *x)
{
    double nn = 0;

    if (mp->kind == XF_FAMF_TRIGNORM) {
        double s = 0;
        for (int32_t c = 0; c < d; c++)
            s += (double)raw[c] * (double)raw[c];
        s = sqrt(s);
        for (int32_t c = 0; c < d; c++)
            x[c] = s > 0 ? (float)((double)raw[c] / s) : 0.0f;
        return 0.5;
    }
    for (int32_t c = 0; c < d; c++) {
        x[c] = raw[c] * mul;
        nn += (double)x[c] * (double)x[c];
    }
    return 0.5 * nn;
}

/* Features of one row from its projection: phi[F]. g = log weight (already shifted). */
static void expand(const xf_famf_map_t *mp, const float *pre, double g, double *phi)
{
    int32_t r = mp->r;

    switch (mp->kind) {
    case XF_FAMF_LINEAR:
        for (int32_t c = 0; c < r; c++)
            phi[c] = (double)elu1(pre[c]);
        break;
    case XF_FAMF_FAVOR:
        for (int32_t c = 0; c < r; c++)
            phi[c] = exp((double)pre[c] + g);
        break;
    case XF_FAMF_TRIG:
    case XF_FAMF_TRIGNORM: {
        double e = exp(g);
        for (int32_t c = 0; c < r; c++) {
            phi[c] = e * sin((double)pre[c]);
            phi[r + c] = e * cos((double)pre[c]);
        }
        break;
    }
    }
}

void xf_famf_item(const xf_famf_map_t *mp, const xf_sfpm_item_t *it, void *ws)
{
    int32_t n = it->n, d = it->d, r = mp->r, F = xf_famf_features(mp);
    unsigned char *p = ws;
    float *pre = (float *)p;
    double *g, *S, *z, *za, *phi, *num, *vmean, G = -INFINITY;
    float *x, *qpre, *Sf, *phib;
    int trig = mp->kind == XF_FAMF_TRIG || mp->kind == XF_FAMF_TRIGNORM;

    p += al8(sizeof(float) * (size_t)n * (size_t)r);
    g = (double *)p;
    S = g + n;
    z = S + (size_t)F * (size_t)d;
    za = z + F;
    phi = za + F;
    num = phi + F;
    vmean = num + d;
    x = (float *)(vmean + d);
    qpre = x + d;
    Sf = (float *)((unsigned char *)x + al8(sizeof(float) * ((size_t)d + (size_t)r)));
    phib = (float *)((unsigned char *)Sf + al8(sizeof(float) * (size_t)F * (size_t)d));

    /* Keys: projections and log weights, then one shift G for this (sequence, head). */
    for (int32_t j = 0; j < n; j++) {
        float *pj = pre + (size_t)j * (size_t)r;
        double h = map_input(mp, it->k + (size_t)j * (size_t)d, d, mp->kmul, x);
        project(mp, x, d, pj);
        if (mp->kind == XF_FAMF_FAVOR) {
            float mx = -INFINITY;
            for (int32_t c = 0; c < r; c++)
                mx = pj[c] > mx ? pj[c] : mx;
            g[j] = -h;
            if ((double)mx - h > G)
                G = (double)mx - h;
        } else if (mp->kind == XF_FAMF_TRIG) {
            g[j] = h;
            if (h > G)
                G = h;
        } else {
            g[j] = 0;
            G = 0;
        }
    }
    memset(S, 0, sizeof(double) * (size_t)F * (size_t)d);
    memset(z, 0, sizeof(double) * 2u * (size_t)F);
    memset(vmean, 0, sizeof(double) * (size_t)d);
    /* S = Σ_j φ_j v_jᵀ: fp32 partial sums over blocks of 32 keys (vectorisable), added into
     * the double S; z, Σ|φ| in double */
    for (int32_t j0 = 0; j0 < n; j0 += 32) {
        int32_t j1 = j0 + 32 < n ? j0 + 32 : n;
        memset(Sf, 0, sizeof(float) * (size_t)F * (size_t)d);
        for (int32_t j = j0; j < j1; j++) {
            const float *vj = it->v + (size_t)j * (size_t)d;
            float *pb = phib + (size_t)(j - j0) * (size_t)F;
            expand(mp, pre + (size_t)j * (size_t)r, g[j] - G, phi);
            for (int32_t f = 0; f < F; f++) {
                z[f] += phi[f];
                za[f] += fabs(phi[f]);
                pb[f] = (float)phi[f];
            }
            for (int32_t c = 0; c < d; c++)
                vmean[c] += (double)vj[c];
        }
        for (int32_t f = 0; f < F; f++) {
            float *sf = Sf + (size_t)f * (size_t)d;
            for (int32_t j = j0; j < j1; j++) {
                const float *vj = it->v + (size_t)j * (size_t)d;
                float w = phib[(size_t)(j - j0) * (size_t)F + (size_t)f];
                for (int32_t c = 0; c < d; c++)
                    sf[c] += w * vj[c];
            }
        }
        for (size_t t = 0; t < (size_t)F * (size_t)d; t++)
            S[t] += (double)Sf[t];
    }
    for (size_t t = 0; t < (size_t)F * (size_t)d; t++)
        Sf[t] = (float)S[t];                 /* fp32 copy for the query side */
    for (int32_t c = 0; c < d; c++)
        vmean[c] /= (double)n;

    /* Queries. */
    for (int32_t i = 0; i < n; i++) {
        float *oi = it->out + (size_t)i * (size_t)it->ldo;
        double den = 0, floor_ = 0, gq = 0;

        map_input(mp, it->q + (size_t)i * (size_t)d, d, mp->qmul, x);
        project(mp, x, d, qpre);
        if (mp->kind == XF_FAMF_FAVOR) {
            float mx = -INFINITY;
            for (int32_t c = 0; c < r; c++)
                mx = qpre[c] > mx ? qpre[c] : mx;
            gq = -(double)mx;
        }
        expand(mp, qpre, gq, phi);
        memset(num, 0, sizeof(double) * (size_t)d);
        for (int32_t f = 0; f < F; f++) {
            den += phi[f] * z[f];
            floor_ += fabs(phi[f]) * za[f];
        }
        /* numerator: fp32 partials over blocks of 32 features, added in double */
        for (int32_t f0 = 0; f0 < F; f0 += 32) {
            float part[256];
            int32_t f1 = f0 + 32 < F ? f0 + 32 : F;
            for (int32_t c0 = 0; c0 < d; c0 += 256) {
                int32_t cw = d - c0 < 256 ? d - c0 : 256;
                memset(part, 0, sizeof(float) * (size_t)cw);
                for (int32_t f = f0; f < f1; f++) {
                    float pf = (float)phi[f];
                    const float *sf = Sf + (size_t)f * (size_t)d + c0;
                    for (int32_t c = 0; c < cw; c++)
                        part[c] += pf * sf[c];
                }
                for (int32_t c = 0; c < cw; c++)
                    num[c0 + c] += (double)part[c];
            }
        }
        if (mp->kind == XF_FAMF_LINEAR)
            den += mp->eps;
        if (trig && den < 1e-6 * floor_)
            den = 1e-6 * floor_;             /* §19: the trig estimator is not positive */
        if (!(den > 0) || !isfinite(den)) {
            for (int32_t c = 0; c < d; c++)  /* nothing usable: the uniform average */
                oi[c] = (float)vmean[c];
            continue;
        }
        for (int32_t c = 0; c < d; c++)
            oi[c] = (float)(num[c] / den);
    }
}

void xf_famf_favor_w(uint64_t seed, int32_t layer, int32_t head, int32_t m, int32_t d,
                     int orthogonal, int row_norm, double *w)
{
    for (int32_t b = 0; b * d < m; b++) {
        xf_rng_t rng;
        int32_t rows = m - b * d < d ? m - b * d : d;
        double *blk = w + (size_t)b * (size_t)d * (size_t)d;  /* rows of this block */

        /* The Gaussian block G (row-major) is generated into blk's space when it fits; for the
         * truncated last block generate row by row and keep what fits. */
        xf_rng_init(&rng, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_FAVOR, (uint64_t)b);
        if (!orthogonal) {
            for (int32_t r = 0; r < rows; r++)
                for (int32_t c = 0; c < d; c++)
                    blk[(size_t)r * (size_t)d + (size_t)c] = xf_rng_normal(&rng);
        } else {
            /* Modified Gram–Schmidt on the columns of G gives Q with diag(R) > 0 (= QR with the
             * sign fix). Direction r = column r of Q. Work column-wise in a transposed copy. */
            double *qt = w + (size_t)m * (size_t)d;    /* scratch d*d after w (caller sized) */
            for (int32_t r = 0; r < d; r++)
                for (int32_t c = 0; c < d; c++)
                    qt[(size_t)c * (size_t)d + (size_t)r] = xf_rng_normal(&rng); /* G[r][c] */
            for (int32_t c = 0; c < d; c++) {
                double *qc = qt + (size_t)c * (size_t)d, nn = 0;
                for (int32_t p = 0; p < c; p++) {
                    const double *qp = qt + (size_t)p * (size_t)d;
                    double dot = 0;
                    for (int32_t t = 0; t < d; t++)
                        dot += qp[t] * qc[t];
                    for (int32_t t = 0; t < d; t++)
                        qc[t] -= dot * qp[t];
                }
                for (int32_t t = 0; t < d; t++)
                    nn += qc[t] * qc[t];
                nn = sqrt(nn);
                for (int32_t t = 0; t < d; t++)
                    qc[t] = nn > 0 ? qc[t] / nn : 0.0;
            }
            memcpy(blk, qt, sizeof(double) * (size_t)rows * (size_t)d);
        }
        for (int32_t r = 0; r < rows; r++) {
            double *wr = blk + (size_t)r * (size_t)d, nn = 0, target;
            int32_t row = b * d + r;
            for (int32_t c = 0; c < d; c++)
                nn += wr[c] * wr[c];
            nn = sqrt(nn);
            if (row_norm == XF_ROWNORM_SQRT_D) {
                target = sqrt((double)d);
            } else if (orthogonal) {
                xf_rng_t rn;
                double s = 0;
                xf_rng_init(&rn, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_FAVOR_NORM,
                            (uint64_t)row);
                for (int32_t c = 0; c < d; c++) {
                    double u = xf_rng_normal(&rn);
                    s += u * u;
                }
                target = sqrt(s);
            } else {
                target = nn;                    /* Gaussian rows already have chi norms */
            }
            for (int32_t c = 0; c < d; c++)
                wr[c] = nn > 0 ? wr[c] * (target / nn) : 0.0;
        }
    }
}

void xf_famf_rfa_w(uint64_t seed, int32_t layer, int32_t head, int32_t D, int32_t d, double tau,
                   double *w)
{
    double sc = 1.0 / sqrt(tau);

    for (int32_t r = 0; r < D; r++) {
        xf_rng_t rng;
        xf_rng_init(&rng, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_RFA, (uint64_t)r);
        for (int32_t c = 0; c < d; c++)
            w[(size_t)r * (size_t)d + (size_t)c] = xf_rng_normal(&rng) * sc;
    }
}
