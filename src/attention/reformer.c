/* Reformer LSH attention (ATTENTION.md §10), family P: rotations R_ρ from stream
 * (seed, layer, head, LSH, ρ), bucket = argmax([x̂R; −x̂R]) in double; rounds are a union (each
 * key once), one softmax. "substitute" (default, BERT): q̂, k̂ hashed alike, A(i) = keys of q_i's
 * buckets (optionally the max_bucket nearest), logits s·q·k. "shared" (shared-QK): x = q, keys
 * x/‖x‖, logit x_i·k̂_j, same-bucket positions in sorted chunks t − before … t + after (no
 * wrap-around), self excluded unless alone. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "attention/params.h"
#include "attention/fam_p.h"

static const char *const mode_names[] = { "substitute", "shared", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_reformer_params_t, n_hashes, "n_hashes", XF_AT_K_INT, 1, 64, NULL),
    /* Capped at 1024: the rotations R [d][n_buckets/2] are drawn per head on every call. */
    XF_AT_KEY(xf_reformer_params_t, n_buckets, "n_buckets", XF_AT_K_AUTO, 1, 1024, NULL),
    XF_AT_KEY(xf_reformer_params_t, chunk, "chunk", XF_AT_K_INT, 1, 1 << 20, NULL),
    XF_AT_KEY(xf_reformer_params_t, chunks_before, "chunks_before", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(xf_reformer_params_t, chunks_after, "chunks_after", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(xf_reformer_params_t, mode, "mode", XF_AT_K_ENUM, 0, 0, mode_names),
    XF_AT_KEY(xf_reformer_params_t, max_bucket, "max_bucket", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(xf_reformer_params_t, seed, "seed", XF_AT_K_SEED, 0, 0, NULL),
};

static const xf_reformer_params_t rf_defaults = {
    .n_hashes = 4, .chunk = 64, .chunks_before = 1, .mode = XF_REFORMER_SUBSTITUTE,
};

static int rf_check(const void *params, char *err, size_t errlen)
{
    const xf_reformer_params_t *p = params;

    if (p->n_buckets > 1 && p->n_buckets % 2)
        return xf_at_key_err(err, errlen, "n_buckets", "must be 1, even, or \"auto\"");
    return 0;
}

typedef struct lay {
    double *r, *xhat, *hacc, *qh, *kh;
    unsigned char *amx;
    int32_t *qb, *kb, *order, *start, *spos, *stamp, *list, *qo, *qt, *bcnt;
    float *logit, *khat;
} lay_t;

/* n, d, hashes, buckets + 1, max(buckets / 2, 1), argmax scratch bytes */
enum { FN = XF_AT_DIM_USER, FD, FH, FB1, FHALF, FAMX };
static const xf_at_slot_t slots[] = {
    XF_AT_SLOT(r, FD, FHALF, 0), XF_AT_SLOT(xhat, FD, 1, 0), XF_AT_SLOT(hacc, FHALF, 1, 0),
    XF_AT_SLOT(qh, FN, FD, 0), XF_AT_SLOT(kh, FN, FD, 0),
    XF_AT_SLOT(amx, FAMX, 1, 0),
    XF_AT_SLOT(qb, FH, FN, 0), XF_AT_SLOT(kb, FH, FN, 0), XF_AT_SLOT(order, FH, FN, 0),
    XF_AT_SLOT(start, FH, FB1, 0), XF_AT_SLOT(spos, FH, FN, 0),
    XF_AT_SLOT(stamp, FN, 1, 0), XF_AT_SLOT(list, FN, 1, 0), XF_AT_SLOT(logit, FN, 1, 0),
    XF_AT_SLOT(qo, FN, 1, 0), XF_AT_SLOT(qt, FN, 1, 0),
    XF_AT_SLOT(bcnt, FB1, 1, 0), XF_AT_SLOT(khat, FN, FD, 0),
};

static size_t layout(const xf_reformer_params_t *p, int32_t n, int32_t d, int32_t nb, void *ws,
                     lay_t *l)
{
    const int32_t half = nb / 2 > 0 ? nb / 2 : 1;
    const size_t dim[] = { 0, 1, (size_t)n, (size_t)d, (size_t)p->n_hashes, (size_t)nb + 1,
                           (size_t)half, xf_at_s_argmax_ws(half, d) };
    return XF_AT_CARVE(ws, l, slots, dim);
}

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t rf_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    const xf_reformer_params_t *p = params;
    return layout(p, nmax, sh->d_head, xf_reformer_buckets(p, nmax), NULL, NULL);
}

/* Add the keys of sorted group g[0..cnt) (positions ascending) to the list; with cap > 0 only
 * the cap nearest to i in position (ties: the smaller position first). */
static void add_group(const int32_t *g, int32_t cnt, int32_t i, int32_t cap, int32_t *stamp,
                      int32_t *list, int32_t *nl)
{
    int32_t lo, hi, taken = 0;

    if (cap <= 0 || cnt <= cap) {
        for (int32_t t = 0; t < cnt; t++)
            if (stamp[g[t]] != i + 1) {
                stamp[g[t]] = i + 1;
                list[(*nl)++] = g[t];
            }
        return;
    }
    /* first index with g >= i */
    lo = 0;
    hi = cnt;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if (g[mid] < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    hi = lo;        /* right candidate */
    lo = lo - 1;    /* left candidate */
    while (taken < cap) {
        int32_t pick;
        if (lo >= 0 && (hi >= cnt || i - g[lo] <= g[hi] - i))
            pick = g[lo--];
        else
            pick = g[hi++];
        taken++;
        if (stamp[pick] != i + 1) {
            stamp[pick] = i + 1;
            list[(*nl)++] = pick;
        }
    }
}

/* Substitute mode without a bucket cap: queries with the same bucket in every round share one
 * key set, so they are sorted by their bucket tuple (LSD radix over the rounds) and each run
 * attends its union in query tiles. */
static void grouped(const xf_reformer_params_t *p, const xf_at_item_t *it, float alpha,
                    int32_t nb, const lay_t *l, void *tws)
{
    int32_t n = it->n, d = it->d, H = p->n_hashes, *qo = l->qo, *tmp = l->qt;
    const float *qp[XF_AT_TQ];
    float *op[XF_AT_TQ];

    for (int32_t i = 0; i < n; i++)
        qo[i] = i;
    for (int32_t rho = H - 1; rho >= 0; rho--) {          /* stable counting sorts */
        const int32_t *b = l->qb + (size_t)rho * (size_t)n;
        int32_t *sw;
        memset(l->bcnt, 0, sizeof(int32_t) * ((size_t)nb + 1));
        for (int32_t i = 0; i < n; i++)
            l->bcnt[b[i] + 1]++;
        for (int32_t x = 0; x < nb; x++)
            l->bcnt[x + 1] += l->bcnt[x];
        for (int32_t t = 0; t < n; t++)
            tmp[l->bcnt[b[qo[t]]]++] = qo[t];
        sw = qo;
        qo = tmp;
        tmp = sw;
    }
    memset(l->stamp, 0, sizeof(int32_t) * (size_t)n);
    for (int32_t g0 = 0, g1; g0 < n; g0 = g1) {
        int32_t first = qo[g0], nl = 0;
        for (g1 = g0 + 1; g1 < n; g1++) {
            int same = 1;
            for (int32_t rho = 0; rho < H && same; rho++)
                same = l->qb[(size_t)rho * (size_t)n + (size_t)qo[g1]] ==
                       l->qb[(size_t)rho * (size_t)n + (size_t)first];
            if (!same)
                break;
        }
        for (int32_t rho = 0; rho < H; rho++) {          /* the run's union, each key once */
            const int32_t *st = l->start + (size_t)rho * ((size_t)nb + 1);
            const int32_t *ord = l->order + (size_t)rho * (size_t)n;
            int32_t b = l->qb[(size_t)rho * (size_t)n + (size_t)first];
            for (int32_t s = st[b]; s < st[b + 1]; s++)
                if (l->stamp[ord[s]] != g0 + 1) {
                    l->stamp[ord[s]] = g0 + 1;
                    l->list[nl++] = ord[s];
                }
        }
        for (int32_t t0 = g0; t0 < g1; t0 += XF_AT_TQ) {
            int32_t nq = g1 - t0 < XF_AT_TQ ? g1 - t0 : XF_AT_TQ;
            for (int32_t r = 0; r < nq; r++) {
                int32_t i = qo[t0 + r];
                qp[r] = it->q + (size_t)i * (size_t)d;
                op[r] = it->out + (size_t)i * (size_t)it->ldo;
                if (nl == 0)                                /* A(i) = {i} */
                    xf_at_attend(qp[r], d, alpha, it->k, it->v, d, NULL, &i, 1, l->logit,
                                   op[r]);
            }
            if (nl > 0)
                xf_at_attend_tile(qp, nq, d, alpha, it->k, it->v, NULL, l->list, nl, tws, op);
        }
    }
}

static void item(const void *params, const xf_attn_shape *sh, const xf_at_item_t *it,
                 float q_scale, float scale, void *ws, void *tws)
{
    const xf_reformer_params_t *p = params;
    int32_t n = it->n, d = it->d, H = p->n_hashes, nb = xf_reformer_buckets(p, n);
    int shared = p->mode == XF_REFORMER_SHARED;
    lay_t l;

    layout(p, n, d, nb, ws, &l);
    for (int32_t i = 0; i < n; i++) {
        xf_at_s_unit(it->q + (size_t)i * (size_t)d, d, l.qh + (size_t)i * (size_t)d);
        if (!shared)
            xf_at_s_unit(it->k + (size_t)i * (size_t)d, d, l.kh + (size_t)i * (size_t)d);
    }
    for (int32_t rho = 0; rho < H; rho++) {
        int32_t *qb = l.qb + (size_t)rho * (size_t)n, *kb = l.kb + (size_t)rho * (size_t)n;
        int32_t *st = l.start + (size_t)rho * ((size_t)nb + 1);
        int32_t *ord = l.order + (size_t)rho * (size_t)n;

        if (nb >= 2)
            xf_at_p_rotation(p->seed, sh->layer, it->head, rho, d, nb, l.r);
        if (nb >= 2) {
            /* argmax over [x̂R ; −x̂R]: the columns of R [d][nb/2] are the centers; fp32
             * scores with an exact double re-check of near ties (margin far above the fp32
             * error of |x̂·r| <= ‖r‖ ~ √d) */
            xf_at_s_argmax(l.qh, n, d, l.r, nb / 2, 1, (size_t)(nb / 2), 1, 1e-3, l.amx, qb);
            if (!shared)
                xf_at_s_argmax(l.kh, n, d, l.r, nb / 2, 1, (size_t)(nb / 2), 1, 1e-3, l.amx,
                               kb);
        } else {
            memset(qb, 0, sizeof(int32_t) * (size_t)n);
            if (!shared)
                memset(kb, 0, sizeof(int32_t) * (size_t)n);
        }
        if (shared)
            memcpy(kb, qb, sizeof(int32_t) * (size_t)n);
        /* counting sort of positions by bucket (stable: positions ascending per bucket) */
        memset(st, 0, sizeof(int32_t) * ((size_t)nb + 1));
        for (int32_t j = 0; j < n; j++)
            st[kb[j] + 1]++;
        for (int32_t b = 0; b < nb; b++)
            st[b + 1] += st[b];
        for (int32_t j = 0; j < n; j++)
            l.stamp[j] = st[kb[j]]++;                /* next slot of its bucket */
        for (int32_t j = 0; j < n; j++) {
            ord[l.stamp[j]] = j;
            l.spos[(size_t)rho * (size_t)n + (size_t)j] = l.stamp[j];
        }
        for (int32_t b = nb; b > 0; b--)
            st[b] = st[b - 1];
        st[0] = 0;
    }
    if (shared)
        for (int32_t j = 0; j < n; j++) {
            double nn = 0;
            const float *x = it->q + (size_t)j * (size_t)d;
            for (int32_t c = 0; c < d; c++)
                nn += (double)x[c] * (double)x[c];
            nn = sqrt(nn);
            for (int32_t c = 0; c < d; c++)
                l.khat[(size_t)j * (size_t)d + (size_t)c] = nn > 0 ? (float)(x[c] / nn) : 0.0f;
        }
    if (!shared && p->max_bucket == 0) {
        grouped(p, it, scale / q_scale, nb, &l, tws);
        return;
    }
    memset(l.stamp, 0, sizeof(int32_t) * (size_t)n);
    for (int32_t i = 0; i < n; i++) {
        int32_t nl = 0;
        float *oi = it->out + (size_t)i * (size_t)it->ldo;
        const float *qi = it->q + (size_t)i * (size_t)d;

        for (int32_t rho = 0; rho < H; rho++) {
            const int32_t *st = l.start + (size_t)rho * ((size_t)nb + 1);
            const int32_t *ord = l.order + (size_t)rho * (size_t)n;
            int32_t b = l.qb[(size_t)rho * (size_t)n + (size_t)i];
            if (!shared) {
                add_group(ord + st[b], st[b + 1] - st[b], i, p->max_bucket, l.stamp, l.list,
                          &nl);
            } else {
                /* sorted slots of the chunks t − before … t + after, same bucket only */
                int32_t c = p->chunk, pos = l.spos[(size_t)rho * (size_t)n + (size_t)i];
                int32_t t = pos / c;
                int64_t s0 = ((int64_t)t - p->chunks_before) * c;
                int64_t s1 = ((int64_t)t + p->chunks_after + 1) * c;
                int32_t a0 = s0 < st[b] ? st[b] : (int32_t)s0;
                int32_t a1 = s1 > st[b + 1] ? st[b + 1] : (int32_t)s1;
                for (int32_t s = a0; s < a1; s++) {
                    int32_t j = ord[s];
                    if (l.stamp[j] != i + 1) {
                        l.stamp[j] = i + 1;
                        l.list[nl++] = j;
                    }
                }
            }
        }
        if (shared && nl > 1) {                     /* self-exclusion unless alone */
            for (int32_t t = 0; t < nl; t++)
                if (l.list[t] == i) {
                    l.list[t] = l.list[--nl];
                    break;
                }
        }
        if (nl == 0)
            l.list[nl++] = i;
        if (shared)
            xf_at_attend(qi, d, 1.0f / q_scale, l.khat, it->v, d, NULL, l.list, nl, l.logit,
                           oi);
        else
            xf_at_attend(qi, d, scale / q_scale, it->k, it->v, d, NULL, l.list, nl, l.logit,
                           oi);
    }
}

const xf_attn_ops xf_at_reformer = {
    XF_AT_PARAMS(xf_reformer_params_t, rf_defaults, keys),
    .check = rf_check, .item_ws = rf_ws, .item = item,
};
