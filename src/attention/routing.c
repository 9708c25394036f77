/* Routing / clustered attention (ATTENTION.md §11), family P; clustering in double. "routed":
 * spherical k-means per (sequence, head) (seeded init over the 2n points q̂_0.., k̂_0..; Lloyd
 * steps); A(i) = keys of q_i's cluster, else of the key-owning centroid nearest q̂_i.
 * "clustered" (Vyas et al.): Euclidean k-means of the raw queries (same seeded init); each
 * member gets the dense attention output of its cluster's mean query. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "attention/params.h"
#include "attention/fam_p.h"
#include "attention/rng.h"

static const char *const mode_names[] = { "routed", "clustered", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_routing_params_t, mode, "mode", XF_AT_K_ENUM, 0, 0, mode_names),
    XF_AT_KEY(xf_routing_params_t, clusters, "clusters", XF_AT_K_AUTO, 1, 1 << 16, NULL),
    XF_AT_KEY(xf_routing_params_t, iters, "iters", XF_AT_K_INT, 0, 1000, NULL),
    XF_AT_KEY(xf_routing_params_t, seed, "seed", XF_AT_K_SEED, 0, 0, NULL),
};

static const xf_routing_params_t ro_defaults = { .mode = XF_ROUTING_ROUTED, .iters = 10 };

typedef struct lay {
    double *pts, *mu, *acc;
    int32_t *idx, *cq, *ck, *order, *start, *cnt;
    float *logit, *qbar, *obar;
    unsigned char *amx;
} lay_t;

enum { RN = XF_AT_DIM_USER, RN2, RD, RK, RAMX };   /* n, 2n, d, k, argmax scratch bytes */
static const xf_at_slot_t slots[] = {
    XF_AT_SLOT(pts, RN2, RD, 0), XF_AT_SLOT(mu, RK, RD, 0), XF_AT_SLOT(acc, RK, RD, RD),
    XF_AT_SLOT(idx, RN2, 1, 0),
    XF_AT_SLOT(cq, RN, 1, 0), XF_AT_SLOT(ck, RN, 1, 0), XF_AT_SLOT(order, RN, 1, 0),
    XF_AT_SLOT(start, RK, 1, 1), XF_AT_SLOT(cnt, RK, 1, 0),
    XF_AT_SLOT(logit, RN, 1, 0),
    XF_AT_SLOT(qbar, RK, RD, 0), XF_AT_SLOT(obar, RK, RD, 0), XF_AT_SLOT(amx, RAMX, 1, 0),
};

static size_t layout(int32_t n, int32_t d, int32_t k, void *ws, lay_t *l)
{
    const size_t dim[] = { 0, 1, (size_t)n, 2u * (size_t)n, (size_t)d, (size_t)k,
                           xf_at_s_argmax_ws(k, d) };
    return XF_AT_CARVE(ws, l, slots, dim);
}

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t ro_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    const xf_routing_params_t *p = params;
    int32_t kmax = 1;
    /* clusters(n) is not monotone in n when explicit (clamped); take the max over sequences */
    for (int32_t b = 0; b < sh->n_seq; b++) {
        int32_t n = sh->cu_len[b + 1] - sh->cu_len[b], k = n > 0 ? xf_routing_clusters(p, n) : 1;
        kmax = k > kmax ? k : kmax;
    }
    return layout(nmax, sh->d_head, kmax, NULL, NULL);
}

static double dist2(const double *a, const double *b, int32_t d)
{
    double s = 0;
    for (int32_t c = 0; c < d; c++)
        s += (a[c] - b[c]) * (a[c] - b[c]);
    return s;
}

static int32_t nearest_l2(const double *mu, int32_t k, int32_t d, const double *x)
{
    int32_t best = 0;
    double bv = INFINITY;
    for (int32_t a = 0; a < k; a++) {
        double s = dist2(mu + (size_t)a * (size_t)d, x, d);
        if (s < bv) {
            bv = s;
            best = a;
        }
    }
    return best;
}

static void clustered(const xf_routing_params_t *p, const xf_attn_shape *sh,
                      const xf_at_item_t *it, float q_scale, float scale, lay_t *l,
                      void *tws)
{
    int32_t n = it->n, d = it->d, k = xf_routing_clusters(p, n);
    xf_rng_t r;

    for (int32_t i = 0; i < n; i++)
        for (int32_t c = 0; c < d; c++)
            l->pts[(size_t)i * (size_t)d + (size_t)c] =
                (double)it->q[(size_t)i * (size_t)d + (size_t)c] / (double)q_scale;
    for (int32_t i = 0; i < n; i++)
        l->idx[i] = i;
    xf_rng_init(&r, p->seed, (uint64_t)sh->layer, (uint64_t)it->head, XF_RNG_KMEANS, 0);
    xf_rng_partial_shuffle(&r, l->idx, n, k);
    for (int32_t a = 0; a < k; a++)
        memcpy(l->mu + (size_t)a * (size_t)d, l->pts + (size_t)l->idx[a] * (size_t)d,
               sizeof(double) * (size_t)d);
    for (int32_t t = 0; t <= p->iters; t++) {
        int changed = 0;
        /* assign; then (Lloyd step, or the final centroids) means of the members */
        memset(l->acc, 0, sizeof(double) * (size_t)k * (size_t)d);
        memset(l->cnt, 0, sizeof(int32_t) * (size_t)k);
        for (int32_t i = 0; i < n; i++) {
            int32_t a = nearest_l2(l->mu, k, d, l->pts + (size_t)i * (size_t)d);
            changed |= t == 0 || l->cq[i] != a;
            l->cq[i] = a;
            l->cnt[a]++;
            for (int32_t c = 0; c < d; c++)
                l->acc[(size_t)a * (size_t)d + (size_t)c] +=
                    l->pts[(size_t)i * (size_t)d + (size_t)c];
        }
        if (!changed)
            break;                  /* same members: the means below are already in mu */
        for (int32_t a = 0; a < k; a++)
            if (l->cnt[a] > 0)
                for (int32_t c = 0; c < d; c++)
                    l->mu[(size_t)a * (size_t)d + (size_t)c] =
                        l->acc[(size_t)a * (size_t)d + (size_t)c] / l->cnt[a];
    }
    /* after the last pass mu = mean of the final members; attend once per cluster */
    for (int32_t a = 0; a < k; a++) {
        if (!l->cnt[a])
            continue;
        for (int32_t c = 0; c < d; c++)
            l->qbar[(size_t)a * (size_t)d + (size_t)c] =
                (float)l->mu[(size_t)a * (size_t)d + (size_t)c];
    }
    {   /* dense attention of the centroids, in tiles; members copy their centroid's row */
        const float *qp[XF_AT_TQ];
        float *op[XF_AT_TQ];
        int32_t nq = 0;
        for (int32_t a = 0; a < k; a++) {
            if (l->cnt[a]) {
                qp[nq] = l->qbar + (size_t)a * (size_t)d;
                op[nq++] = l->obar + (size_t)a * (size_t)d;
            }
            if (nq == XF_AT_TQ || (a == k - 1 && nq > 0)) {
                xf_at_attend_tile(qp, nq, d, scale, it->k, it->v, NULL, NULL, n, tws, op);
                nq = 0;
            }
        }
    }
    for (int32_t i = 0; i < n; i++)
        memcpy(it->out + (size_t)i * (size_t)it->ldo, l->obar + (size_t)l->cq[i] * (size_t)d,
               sizeof(float) * (size_t)d);
}

static void item(const void *params, const xf_attn_shape *sh, const xf_at_item_t *it,
                 float q_scale, float scale, void *ws, void *tws)
{
    const xf_routing_params_t *p = params;
    int32_t n = it->n, d = it->d, k = xf_routing_clusters(p, n);
    lay_t l;

    layout(n, d, k, ws, &l);
    if (p->mode == XF_ROUTING_CLUSTERED) {
        clustered(p, sh, it, q_scale, scale, &l, tws);
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        xf_at_s_unit(it->q + (size_t)i * (size_t)d, d, l.pts + (size_t)i * (size_t)d);
        xf_at_s_unit(it->k + (size_t)i * (size_t)d, d, l.pts + (size_t)(n + i) * (size_t)d);
    }
    xf_at_s_kmeans(l.pts, 2 * n, d, k, p->iters, p->seed, sh->layer, it->head, l.mu, l.idx,
                   l.acc, l.amx);
    xf_at_s_argmax(l.pts, n, d, l.mu, k, (size_t)d, 1, 0, XF_AT_S_UNIT_MARGIN, l.amx, l.cq);
    xf_at_s_argmax(l.pts + (size_t)n * (size_t)d, n, d, l.mu, k, (size_t)d, 1, 0,
                   XF_AT_S_UNIT_MARGIN, l.amx, l.ck);
    memset(l.start, 0, sizeof(int32_t) * ((size_t)k + 1));
    for (int32_t i = 0; i < n; i++)
        l.start[l.ck[i] + 1]++;
    for (int32_t a = 0; a < k; a++)
        l.start[a + 1] += l.start[a];
    memcpy(l.cnt, l.start, sizeof(int32_t) * (size_t)k);
    for (int32_t j = 0; j < n; j++)
        l.order[l.cnt[l.ck[j]]++] = j;
    for (int32_t i = 0; i < n; i++) {
        int32_t a = l.cq[i];
        if (l.start[a + 1] == l.start[a]) {
            /* no keys here: the key-owning centroid with the largest μ·q̂_i */
            double bv = -INFINITY;
            for (int32_t b = 0; b < k; b++) {
                double s = 0;
                if (l.start[b + 1] == l.start[b])
                    continue;
                for (int32_t c = 0; c < d; c++)
                    s += l.mu[(size_t)b * (size_t)d + (size_t)c] *
                         l.pts[(size_t)i * (size_t)d + (size_t)c];
                if (s > bv) {
                    bv = s;
                    a = b;
                }
            }
        }
        l.cq[i] = a;                         /* the cluster whose keys q_i attends */
    }
    {   /* queries grouped by that cluster, in tiles over its keys */
        const float *qp[XF_AT_TQ];
        float *op[XF_AT_TQ];
        for (int32_t a = 0; a < k; a++) {
            int32_t nq = 0;
            if (l.start[a + 1] == l.start[a])
                continue;
            for (int32_t i = 0; i < n; i++) {
                if (l.cq[i] == a) {
                    qp[nq] = it->q + (size_t)i * (size_t)d;
                    op[nq++] = it->out + (size_t)i * (size_t)it->ldo;
                }
                if (nq == XF_AT_TQ || (i == n - 1 && nq > 0)) {
                    xf_at_attend_tile(qp, nq, d, scale / q_scale, it->k, it->v, NULL,
                                        l.order + l.start[a], l.start[a + 1] - l.start[a], tws,
                                        op);
                    nq = 0;
                }
            }
        }
    }
}

const xf_attn_ops xf_at_routing = {
    XF_AT_PARAMS(xf_routing_params_t, ro_defaults, keys),
    .item_ws = ro_ws, .item = item,
};
