/* Set Transformer ISAB as an attention-level substitute (ATTENTION.md §13), family S.
 * m inducing directions per (sequence, head): spherical k-means centroids of k̂ (§11 init and
 * Lloyd steps, seeded) or m contiguous segments. hard (default): keys grouped by nearest
 * direction (or segment), K̃_a/Ṽ_a = group means, bias ln |group|, empty groups dropped.
 * soft: queries grouped the same way, U_a = mean query of group a (empty dropped),
 * P = softmax(s·U Kᵀ), K̃ = PK, Ṽ = PV, O = softmax(s·Q K̃ᵀ)Ṽ. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "attention/params.h"
#include "attention/fam_s.h"

static const char *const init_names[] = { "kmeans", "segments", NULL };
static const char *const mode_names[] = { "hard", "soft", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_isab_params_t, m, "m", XF_AT_K_INT, 1, 1 << 16, NULL),
    XF_AT_KEY(xf_isab_params_t, init, "init", XF_AT_K_ENUM, 0, 0, init_names),
    XF_AT_KEY(xf_isab_params_t, iters, "iters", XF_AT_K_INT, 0, 1000, NULL),
    XF_AT_KEY(xf_isab_params_t, mode, "mode", XF_AT_K_ENUM, 0, 0, mode_names),
    XF_AT_KEY(xf_isab_params_t, seed, "seed", XF_AT_K_SEED, 0, 0, NULL),
};

static const xf_isab_params_t is_defaults = {
    .m = 64, .init = XF_ISAB_KMEANS, .iters = 10, .mode = XF_ISAB_HARD,
};

typedef struct lay {
    double *pts, *mu, *acc;
    int32_t *idx, *grp, *cnt;
    float *Ks, *Vs, *beta, *U, *scr;
    unsigned char *amx;
} lay_t;

enum { IN = XF_AT_DIM_USER, ID, IM, IAMX };   /* n, d, m, argmax scratch bytes */
static const xf_at_slot_t slots[] = {
    XF_AT_SLOT(pts, IN, ID, 0), XF_AT_SLOT(mu, IM, ID, 0), XF_AT_SLOT(acc, IM, ID, 0),
    XF_AT_SLOT(idx, IN, 1, 0), XF_AT_SLOT(grp, IN, 1, 0), XF_AT_SLOT(cnt, IM, 1, 0),
    XF_AT_SLOT(Ks, IM, ID, 0), XF_AT_SLOT(Vs, IM, ID, 0),
    XF_AT_SLOT(beta, IM, 1, 0), XF_AT_SLOT(U, IM, ID, 0),
    XF_AT_SLOT(scr, IN, 1, IM), XF_AT_SLOT(amx, IAMX, 1, 0),
};

static size_t layout(int32_t n, int32_t d, int32_t m, void *ws, lay_t *l)
{
    const size_t dim[] = { 0, 1, (size_t)n, (size_t)d, (size_t)m, xf_at_s_argmax_ws(m, d) };
    return XF_AT_CARVE(ws, l, slots, dim);
}

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t is_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    const xf_isab_params_t *p = params;
    return layout(nmax, sh->d_head, p->m < nmax ? p->m : nmax, NULL, NULL);
}

/* Segment of position i (§16 contiguous segments). */
static int32_t segment_of(int32_t n, int32_t m, int32_t i)
{
    int32_t a = (int32_t)((int64_t)i * m / n);       /* first guess, then fix up */
    while (a > 0 && xf_at_s_seg_start(n, m, a) > i)
        a--;
    while (a + 1 < m && xf_at_s_seg_start(n, m, a + 1) <= i)
        a++;
    return a;
}

/* out = mean over the rows j of group a (cnt of them) of x_j / div (stride d), in double. */
static void group_mean(const float *x, int32_t n, int32_t d, const int32_t *grp, int32_t a,
                       int32_t cnt, double div, double *acc, float *out)
{
    for (int32_t c = 0; c < d; c++)
        acc[c] = 0;
    for (int32_t j = 0; j < n; j++)
        if (grp[j] == a)
            for (int32_t c = 0; c < d; c++)
                acc[c] += (double)x[(size_t)j * (size_t)d + (size_t)c] / div;
    for (int32_t c = 0; c < d; c++)
        out[c] = (float)(acc[c] / cnt);
}

static void item(const void *params, const xf_attn_shape *sh, const xf_at_item_t *it,
                 float q_scale, float scale, void *ws, void *tws)
{
    const xf_isab_params_t *p = params;
    int32_t n = it->n, d = it->d, m = p->m < n ? p->m : n, mm = 0;
    lay_t l;

    layout(n, d, m, ws, &l);
    if (p->init == XF_ISAB_KMEANS) {
        for (int32_t j = 0; j < n; j++)
            xf_at_s_unit(it->k + (size_t)j * (size_t)d, d, l.pts + (size_t)j * (size_t)d);
        xf_at_s_kmeans(l.pts, n, d, m, p->iters, p->seed, sh->layer, it->head, l.mu, l.idx,
                       l.acc, l.amx);
        /* group every key (hard) or query (soft): nearest centroid of its unit vector */
        if (p->mode == XF_ISAB_SOFT)
            for (int32_t j = 0; j < n; j++)
                xf_at_s_unit(it->q + (size_t)j * (size_t)d, d, l.pts + (size_t)j * (size_t)d);
        xf_at_s_argmax(l.pts, n, d, l.mu, m, (size_t)d, 1, 0, XF_AT_S_UNIT_MARGIN, l.amx,
                       l.grp);
    } else {
        for (int32_t j = 0; j < n; j++)
            l.grp[j] = segment_of(n, m, j);
    }
    memset(l.cnt, 0, sizeof(int32_t) * (size_t)m);
    for (int32_t j = 0; j < n; j++)
        l.cnt[l.grp[j]]++;
    /* compact non-empty groups: idx[a] = new index or -1 */
    for (int32_t a = 0; a < m; a++)
        l.idx[a] = l.cnt[a] > 0 ? mm++ : -1;
    if (p->mode == XF_ISAB_HARD) {
        for (int32_t c0 = 0; c0 < 2; c0++) {
            const float *src = c0 ? it->v : it->k;
            float *dst = c0 ? l.Vs : l.Ks;
            for (int32_t a = 0; a < m; a++) {       /* group means (x / 1 is exact) */
                if (l.idx[a] < 0)
                    continue;
                group_mean(src, n, d, l.grp, a, l.cnt[a], 1.0, l.acc,
                           dst + (size_t)l.idx[a] * (size_t)d);
                l.beta[l.idx[a]] = (float)log((double)l.cnt[a]);
            }
        }
        xf_at_s_attend_summaries(it, scale / q_scale, l.Ks, l.Vs, l.beta, mm, tws);
        return;
    }
    for (int32_t a = 0; a < m; a++) {               /* mean raw query of each group */
        if (l.idx[a] < 0)
            continue;
        group_mean(it->q, n, d, l.grp, a, l.cnt[a], q_scale, l.acc,
                   l.U + (size_t)l.idx[a] * (size_t)d);
    }
    xf_at_s_attnpool(it, l.U, mm, scale, l.Ks, l.Vs, l.scr);
    xf_at_s_attend_summaries(it, scale / q_scale, l.Ks, l.Vs, NULL, mm, tws);
}

const xf_attn_ops xf_at_isab = {
    XF_AT_PARAMS(xf_isab_params_t, is_defaults, keys),
    .item_ws = is_ws, .item = item,
};
