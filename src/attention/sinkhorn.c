/* Sparse Sinkhorn attention (ATTENTION.md §12), family P, parameter-free substitute: block
 * similarity R_ac = s·(mean_a q)·(mean_c k) ("qk") or (mean_a k)·(mean_c k) ("kk"), in double.
 * hard: own block + the k_s blocks c ≠ a with the largest R_ac (ties: lower c), real keys.
 * soft: log-space Sinkhorn on R/τ (no Gumbel), P = exp(S), sorted block a = Σ_c P_ac (K_c, V_c)
 * row-wise (rows a ragged block lacks are skipped); queries attend [K_a ; K^σ_a] (no k_s). */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "attention/params.h"
#include "attention/fam_p.h"

static const char *const mode_names[] = { "hard", "soft", NULL };
static const char *const sim_names[] = { "qk", "kk", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_sinkhorn_params_t, block, "block", XF_AT_K_INT, 1, 1 << 20, NULL),
    XF_AT_KEY(xf_sinkhorn_params_t, mode, "mode", XF_AT_K_ENUM, 0, 0, mode_names),
    XF_AT_KEY(xf_sinkhorn_params_t, k_s, "k_s", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(xf_sinkhorn_params_t, tau, "tau", XF_AT_K_REAL, 1e-6, 1e6, NULL),
    XF_AT_KEY(xf_sinkhorn_params_t, iters, "iters", XF_AT_K_INT, 0, 1000, NULL),
    XF_AT_KEY(xf_sinkhorn_params_t, sim, "sim", XF_AT_K_ENUM, 0, 0, sim_names),
};

static const xf_sinkhorn_params_t sk_defaults = {
    .block = 64, .mode = XF_SINKHORN_HARD, .k_s = 1, .tau = 0.7, .iters = 8, .sim = XF_SINKHORN_QK,
};

typedef struct lay {
    double *mq, *mk, *R, *row;
    int32_t *sel, *list;
    float *logit, *kbuf, *vbuf;
} lay_t;

enum { SN = XF_AT_DIM_USER, SD, SNB, SB2 };   /* n, d, blocks, 2·min(b, n) */
static const xf_at_slot_t slots[] = {
    XF_AT_SLOT(mq, SNB, SD, 0), XF_AT_SLOT(mk, SNB, SD, 0), XF_AT_SLOT(R, SNB, SNB, 0),
    XF_AT_SLOT(row, SNB, 1, 1), XF_AT_SLOT(sel, SNB, 1, 1),
    XF_AT_SLOT(list, SN, 1, 0),
    XF_AT_SLOT(logit, SN, 1, SB2), XF_AT_SLOT(kbuf, SB2, SD, 0), XF_AT_SLOT(vbuf, SB2, SD, 0),
};

static size_t layout(int32_t n, int32_t d, int32_t b, void *ws, lay_t *l)
{
    const size_t dim[] = { 0, 1, (size_t)n, (size_t)d, (size_t)((n + b - 1) / b),
                           2u * (size_t)(b < n ? b : n) };
    return XF_AT_CARVE(ws, l, slots, dim);
}

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t sk_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    const xf_sinkhorn_params_t *p = params;
    return layout(nmax, sh->d_head, p->block, NULL, NULL);
}

static void block_means(const float *x, int32_t n, int32_t d, int32_t b, int32_t nb, double mul,
                        double *out)
{
    for (int32_t a = 0; a < nb; a++) {
        int32_t r0 = a * b, r1 = r0 + b < n ? r0 + b : n;
        for (int32_t c = 0; c < d; c++) {
            double s = 0;
            for (int32_t r = r0; r < r1; r++)
                s += (double)x[(size_t)r * (size_t)d + (size_t)c];
            out[(size_t)a * (size_t)d + (size_t)c] = s / (r1 - r0) * mul;
        }
    }
}

static void lse_norm(double *S, int32_t nb, int rows)
{
    for (int32_t a = 0; a < nb; a++) {
        double mx = -INFINITY, l = 0;
        for (int32_t c = 0; c < nb; c++) {
            double x = rows ? S[(size_t)a * (size_t)nb + (size_t)c]
                            : S[(size_t)c * (size_t)nb + (size_t)a];
            mx = x > mx ? x : mx;
        }
        for (int32_t c = 0; c < nb; c++) {
            double x = rows ? S[(size_t)a * (size_t)nb + (size_t)c]
                            : S[(size_t)c * (size_t)nb + (size_t)a];
            l += exp(x - mx);
        }
        l = mx + log(l);
        for (int32_t c = 0; c < nb; c++) {
            if (rows)
                S[(size_t)a * (size_t)nb + (size_t)c] -= l;
            else
                S[(size_t)c * (size_t)nb + (size_t)a] -= l;
        }
    }
}

/* queries [r0, r1) over keys idx[0..m) (NULL: K, V rows 0..m) in tiles */
static void rows_tiles(const xf_at_item_t *it, int32_t r0, int32_t r1, float alpha,
                       const float *K, const float *V, const int32_t *idx, int32_t m, void *tws)
{
    const float *q[XF_AT_TQ];
    float *o[XF_AT_TQ];

    for (int32_t i0 = r0; i0 < r1; i0 += XF_AT_TQ) {
        int32_t nq = r1 - i0 < XF_AT_TQ ? r1 - i0 : XF_AT_TQ;
        for (int32_t r = 0; r < nq; r++) {
            q[r] = it->q + (size_t)(i0 + r) * (size_t)it->d;
            o[r] = it->out + (size_t)(i0 + r) * (size_t)it->ldo;
        }
        xf_at_attend_tile(q, nq, it->d, alpha, K, V, NULL, idx, m, tws, o);
    }
}

static void item(const void *params, const xf_attn_shape *sh, const xf_at_item_t *it,
                 float q_scale, float scale, void *ws, void *tws)
{
    const xf_sinkhorn_params_t *p = params;
    int32_t n = it->n, d = it->d, b = p->block, nb = (n + b - 1) / b;
    float alpha = scale / q_scale;
    lay_t l;

    (void)sh;
    layout(n, d, b, ws, &l);
    block_means(p->sim == XF_SINKHORN_KK ? it->k : it->q, n, d, b, nb,
                p->sim == XF_SINKHORN_KK ? 1.0 : 1.0 / (double)q_scale, l.mq);
    block_means(it->k, n, d, b, nb, 1.0, l.mk);
    for (int32_t a = 0; a < nb; a++)
        for (int32_t c = 0; c < nb; c++) {
            double s = 0;
            for (int32_t t = 0; t < d; t++)
                s += l.mq[(size_t)a * (size_t)d + (size_t)t] *
                     l.mk[(size_t)c * (size_t)d + (size_t)t];
            l.R[(size_t)a * (size_t)nb + (size_t)c] =
                p->sim == XF_SINKHORN_KK ? s : (double)scale * s;
        }
    if (p->mode == XF_SINKHORN_SOFT && nb > 1) {
        for (size_t t = 0; t < (size_t)nb * (size_t)nb; t++)
            l.R[t] /= p->tau;
        for (int32_t t = 0; t < p->iters; t++) {
            lse_norm(l.R, nb, 1);
            lse_norm(l.R, nb, 0);
        }
        for (size_t t = 0; t < (size_t)nb * (size_t)nb; t++)
            l.R[t] = exp(l.R[t]);
    }
    for (int32_t a = 0; a < nb; a++) {
        int32_t r0 = a * b, r1 = r0 + b < n ? r0 + b : n, nl = 0;

        if (p->mode == XF_SINKHORN_SOFT && nb > 1) {
            /* [K_a ; K^σ_a] into a contiguous buffer */
            int32_t own = r1 - r0, m;
            memcpy(l.kbuf, it->k + (size_t)r0 * (size_t)d, sizeof(float) * (size_t)own * (size_t)d);
            memcpy(l.vbuf, it->v + (size_t)r0 * (size_t)d, sizeof(float) * (size_t)own * (size_t)d);
            m = own;
            for (int32_t t = 0; t < b; t++) {
                int any = 0;
                for (int32_t c0 = 0; c0 < d; c0++) {
                    double sk = 0, sv = 0;
                    for (int32_t c = 0; c < nb; c++) {
                        int32_t r = c * b + t;
                        double w = l.R[(size_t)a * (size_t)nb + (size_t)c];
                        if (r >= n)
                            continue;
                        any = 1;
                        sk += w * (double)it->k[(size_t)r * (size_t)d + (size_t)c0];
                        sv += w * (double)it->v[(size_t)r * (size_t)d + (size_t)c0];
                    }
                    l.kbuf[(size_t)m * (size_t)d + (size_t)c0] = (float)sk;
                    l.vbuf[(size_t)m * (size_t)d + (size_t)c0] = (float)sv;
                }
                m += any;
            }
            rows_tiles(it, r0, r1, alpha, l.kbuf, l.vbuf, NULL, m, tws);
            continue;
        }
        /* hard: own block plus the k_s best other blocks (all when k_s >= nb − 1) */
        for (int32_t c = 0; c < nb; c++)
            l.sel[c] = c == a;
        for (int32_t t = 0; t < p->k_s && t < nb - 1; t++) {
            int32_t best = -1;
            double bv = -INFINITY;
            for (int32_t c = 0; c < nb; c++)
                if (!l.sel[c] && (best < 0 || l.R[(size_t)a * (size_t)nb + (size_t)c] > bv)) {
                    bv = l.R[(size_t)a * (size_t)nb + (size_t)c];
                    best = c;
                }
            l.sel[best] = 1;
        }
        for (int32_t c = 0; c < nb; c++)
            if (l.sel[c])
                for (int32_t j = c * b; j < (c + 1) * b && j < n; j++)
                    l.list[nl++] = j;
        rows_tiles(it, r0, r1, alpha, it->k, it->v, l.list, nl, tws);
    }
}

const xf_attn_ops xf_at_sinkhorn = {
    XF_AT_PARAMS(xf_sinkhorn_params_t, sk_defaults, keys),
    .item_ws = sk_ws, .item = item,
};
