/* Attention family S (ATTENTION.md §26.1): summary keys/values + dense attention over them, and
 * the helpers shared by the S/F/P/M variant files (parameter tables, item walk, attend-over-a-set
 * with double accumulation, spherical k-means of §11). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attention/fam_s.h"
#include "attention/params.h"
#include "attention/fam_t.h"
#include "attention/rng.h"

int xf_at_check_shape(const xf_attn_shape *sh)
{
    int32_t nmax = 0;

    if (!sh || sh->n_seq < 0 || sh->n_head < 1 || sh->d_head < 1 || sh->n_tokens < 0)
        return XF_ESHAPE;
    if ((int64_t)sh->n_tokens * sh->n_head * sh->d_head > INT32_MAX * (int64_t)16)
        return XF_ESHAPE;
    if (sh->n_seq == 0)
        return 0;
    if (!sh->cu_len || sh->cu_len[0] < 0)
        return XF_ESHAPE;
    for (int32_t b = 0; b < sh->n_seq; b++) {
        int32_t n = sh->cu_len[b + 1] - sh->cu_len[b];
        if (n < 0 || sh->cu_len[b + 1] > sh->n_tokens)
            return XF_ESHAPE;
        if (n > nmax)
            nmax = n;
    }
    return nmax;
}

void xf_at_item(const xf_attn_shape *sh, const xf_attn_io *io, int32_t it, xf_at_item_t *o)
{
    int32_t h = sh->n_head, d = sh->d_head;
    size_t plane;

    o->b = it / h;
    o->head = it % h;
    o->t0 = sh->cu_len[o->b];
    o->n = sh->cu_len[o->b + 1] - o->t0;
    o->d = d;
    plane = ((size_t)o->head * (size_t)sh->n_tokens + (size_t)o->t0) * (size_t)d;
    o->q = io->q + plane;
    o->k = io->k + plane;
    o->v = io->v + plane;
    o->ldo = h * d;
    o->out = io->out + ((size_t)o->t0 * (size_t)h + (size_t)o->head) * (size_t)d;
}

void xf_at_plan_items(const xf_attn_shape *sh, size_t ws_per_thread, size_t ws_shared,
                        xf_attn_plan *out)
{
    out->ws_per_thread = ws_per_thread;
    out->ws_shared = ws_shared;
    out->state_per_seq = 0;
    out->n_items = sh->n_seq * sh->n_head;
    out->dense_fallbacks = 0;
}

void xf_at_walk(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                  const xf_attn_plan *pl, void *ws_thread, int ith, int nth, xf_at_item_fn fn)
{
    for (int32_t t = ith; t < pl->n_items; t += nth) {
        xf_at_item_t it;
        xf_at_item(sh, io, t, &it);
        if (it.n > 0)
            fn(params, sh, &it, io->q_scale, io->scale, ws_thread,
               xf_at_tile_scratch(pl, ws_thread, sh->d_head));
    }
}

void *xf_at_take(xf_at_carve_t *c, size_t elem, size_t cnt)
{
    void *p = c->base ? (void *)(c->base + c->off) : NULL;
    size_t a = c->align ? c->align : 16u;

    c->off += ((elem * cnt) + a - 1u) & ~(a - 1u);
    return p;
}

size_t xf_at_carve_table(void *ws, size_t align, void *lay, const xf_at_slot_t *slots, size_t n,
                         const size_t *dim)
{
    xf_at_carve_t cv = { ws, 0, align };

    for (size_t i = 0; i < n; i++) {
        const xf_at_slot_t *s = &slots[i];
        void *p = xf_at_take(&cv, s->elem, dim[s->a] * dim[s->b] + dim[s->c]);
        if (ws && lay)   /* the pointer's bytes into the lay struct's field */
            memcpy((unsigned char *)lay + s->off, &p, sizeof p);
    }
    return cv.off;
}

float xf_at_dot(const float *a, const float *b, int32_t d)
{
    /* Four partial sums: a fixed order, independent of alignment. */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int32_t c = 0;

    for (; c + 4 <= d; c += 4) {
        s0 += a[c] * b[c];
        s1 += a[c + 1] * b[c + 1];
        s2 += a[c + 2] * b[c + 2];
        s3 += a[c + 3] * b[c + 3];
    }
    for (; c < d; c++)
        s0 += a[c] * b[c];
    return (s0 + s1) + (s2 + s3);
}

void xf_at_attend(const float *q, int32_t d, float alpha, const float *K, const float *V,
                    int32_t ldk, const float *beta, const int32_t *idx, int32_t m, float *logit,
                    float *out)
{
    double l = 0;
    float mx = -INFINITY;

    for (int32_t a = 0; a < m; a++) {
        int32_t r = idx ? idx[a] : a;
        float x = alpha * xf_at_dot(q, K + (size_t)r * (size_t)ldk, d);
        if (beta)
            x += beta[r];
        logit[a] = x;
        if (x > mx)
            mx = x;
    }
    for (int32_t a = 0; a < m; a++) {          /* weights in (0, 1], the max is exactly 1 */
        logit[a] = expf(logit[a] - mx);
        l += (double)logit[a];
    }
    /* Σ w·v: fp32 partial sums over blocks of 32 keys (vectorisable), added in double; d may
     * exceed 64: column blocks of 64. */
    for (int32_t c0 = 0; c0 < d; c0 += 64) {
        double acc[64];
        int32_t cw = d - c0 < 64 ? d - c0 : 64;
        memset(acc, 0, sizeof(double) * (size_t)cw);
        for (int32_t a0 = 0; a0 < m; a0 += 32) {
            float part[64];
            int32_t a1 = a0 + 32 < m ? a0 + 32 : m;
            memset(part, 0, sizeof(float) * (size_t)cw);
            for (int32_t a = a0; a < a1; a++) {
                int32_t r = idx ? idx[a] : a;
                float w = logit[a];
                const float *vr = V + (size_t)r * (size_t)ldk + c0;
                for (int32_t c = 0; c < cw; c++)
                    part[c] += w * vr[c];
            }
            for (int32_t c = 0; c < cw; c++)
                acc[c] += (double)part[c];
        }
        for (int32_t c = 0; c < cw; c++)
            out[c0 + c] = (float)(acc[c] / l);
    }
}

/* ---- tiles on the family-T micro-kernels ---- */

static int32_t dpad(int32_t d)
{
    return (d + 15) & ~15;
}

static size_t al64(size_t x)
{
    return (x + 63u) & ~(size_t)63u;
}

size_t xf_at_tile_ws(int32_t d)
{
    size_t dp = (size_t)dpad(d), F = sizeof(float);

    return 64u + al64(F * XF_AT_TQ * dp) + al64(F * dp * XF_AT_T_BK) +
           al64(F * XF_AT_TQ * XF_AT_T_BK) + al64(F * XF_AT_TQ) +
           al64(F * XF_AT_TQ * XF_AT_T_LW) + al64(F * XF_AT_TQ * dp) + al64(F * XF_AT_T_BK * dp);
}

void *xf_at_tile_scratch(const xf_attn_plan *pl, void *ws_thread, int32_t d)
{
    return (unsigned char *)ws_thread + pl->ws_per_thread - xf_at_tile_ws(d);
}

void xf_at_attend_tile(const float *const *q, int32_t nq, int32_t d, float alpha,
                         const float *K, const float *V, const float *beta, const int32_t *idx,
                         int32_t m, void *tws, float *const *out)
{
    const xf_at_kern *kn = xf_at_kern_get();
    int32_t dp = dpad(d);
    size_t F = sizeof(float);
    unsigned char *b = (unsigned char *)(((uintptr_t)tws + 63u) & ~(uintptr_t)63u);
    float *qt = (float *)(void *)b, *kt, *s, *mx, *l, *acc, *vbuf;
    int32_t rows[XF_AT_T_BK];
    const float *vt[XF_AT_T_BK];

    b += al64(F * XF_AT_TQ * (size_t)dp);
    kt = (float *)(void *)b;
    b += al64(F * (size_t)dp * XF_AT_T_BK);
    s = (float *)(void *)b;
    b += al64(F * XF_AT_TQ * XF_AT_T_BK);
    mx = (float *)(void *)b;
    b += al64(F * XF_AT_TQ);
    l = (float *)(void *)b;
    b += al64(F * XF_AT_TQ * XF_AT_T_LW);
    acc = (float *)(void *)b;
    b += al64(F * XF_AT_TQ * (size_t)dp);
    vbuf = (float *)(void *)b;

    memset(qt, 0, F * (size_t)nq * (size_t)dp);
    memset(acc, 0, F * (size_t)nq * (size_t)dp);
    memset(l, 0, F * (size_t)nq * XF_AT_T_LW);
    for (int32_t r = 0; r < nq; r++) {
        memcpy(qt + (size_t)r * (size_t)dp, q[r], F * (size_t)d);
        mx[r] = -INFINITY;
    }
    for (int32_t k0 = 0; k0 < m; k0 += XF_AT_T_BK) {
        int32_t nk = m - k0 < XF_AT_T_BK ? m - k0 : XF_AT_T_BK;
        for (int32_t jj = 0; jj < nk; jj++)
            rows[jj] = idx ? idx[k0 + jj] : k0 + jj;
        kn->kt(nk, d, d, K, rows, kt);
        kn->qk(nq, d, dp, qt, kt, alpha, s);
        if (beta)
            for (int32_t r = 0; r < nq; r++)
                for (int32_t jj = 0; jj < nk; jj++)
                    s[(size_t)r * XF_AT_T_BK + (size_t)jj] += beta[rows[jj]];
        for (int32_t jj = 0; jj < nk; jj++) {
            if (d == dp) {
                vt[jj] = V + (size_t)rows[jj] * (size_t)d;
            } else {       /* the kernel reads dp columns: padded copies */
                float *vr = vbuf + (size_t)jj * (size_t)dp;
                memcpy(vr, V + (size_t)rows[jj] * (size_t)d, F * (size_t)d);
                memset(vr + d, 0, F * (size_t)(dp - d));
                vt[jj] = vr;
            }
        }
        kn->softmax(nq, nk, dp, s, mx, l, acc);
        kn->pv(nq, nk, dp, s, vt, acc);
    }
    for (int32_t r = 0; r < nq; r++) {
        float lr = 0.0f;
        for (int32_t x = 0; x < XF_AT_T_LW; x++)      /* fixed lane order: deterministic */
            lr += l[(size_t)r * XF_AT_T_LW + (size_t)x];
        for (int32_t c = 0; c < d; c++)
            out[r][c] = acc[(size_t)r * (size_t)dp + (size_t)c] / lr;
    }
}

/* ---- family S ---- */

int32_t xf_at_s_seg_start(int32_t n, int32_t k, int32_t a)
{
    int32_t base = n / k, rem = n % k;

    return a * base + (a < rem ? a : rem);
}

void xf_at_s_mean_rows(const float *x, int32_t d, int32_t r0, int32_t r1, float *out)
{
    for (int32_t c = 0; c < d; c++) {
        double s = 0;
        for (int32_t r = r0; r < r1; r++)
            s += (double)x[(size_t)r * (size_t)d + (size_t)c];
        out[c] = r1 > r0 ? (float)(s / (double)(r1 - r0)) : 0.0f;
    }
}

void xf_at_s_attend_summaries(const xf_at_item_t *it, float alpha, const float *Ks,
                              const float *Vs, const float *beta, int32_t m, void *tws)
{
    const float *q[XF_AT_TQ];
    float *o[XF_AT_TQ];

    for (int32_t i0 = 0; i0 < it->n; i0 += XF_AT_TQ) {
        int32_t nq = it->n - i0 < XF_AT_TQ ? it->n - i0 : XF_AT_TQ;
        for (int32_t r = 0; r < nq; r++) {
            q[r] = it->q + (size_t)(i0 + r) * (size_t)it->d;
            o[r] = it->out + (size_t)(i0 + r) * (size_t)it->ldo;
        }
        xf_at_attend_tile(q, nq, it->d, alpha, Ks, Vs, beta, NULL, m, tws, o);
    }
}

void xf_at_s_attnpool(const xf_at_item_t *it, const float *U, int32_t m, float alpha,
                      float *Ks, float *Vs, float *logit)
{
    int32_t n = it->n, d = it->d;

    for (int32_t a = 0; a < m; a++) {
        const float *u = U + (size_t)a * (size_t)d;
        float mx = -INFINITY;
        double l = 0;

        for (int32_t j = 0; j < n; j++) {
            logit[j] = alpha * xf_at_dot(u, it->k + (size_t)j * (size_t)d, d);
            mx = logit[j] > mx ? logit[j] : mx;
        }
        for (int32_t j = 0; j < n; j++) {
            logit[j] = (float)exp((double)(logit[j] - mx));   /* weights in (0, 1] */
            l += (double)logit[j];
        }
        for (int32_t c0 = 0; c0 < d; c0 += 32) {
            double ak[32], av[32];
            int32_t cw = d - c0 < 32 ? d - c0 : 32;
            memset(ak, 0, sizeof(ak));
            memset(av, 0, sizeof(av));
            for (int32_t j = 0; j < n; j++) {
                double w = (double)logit[j];
                const float *kr = it->k + (size_t)j * (size_t)d + c0;
                const float *vr = it->v + (size_t)j * (size_t)d + c0;
                for (int32_t c = 0; c < cw; c++) {
                    ak[c] += w * (double)kr[c];
                    av[c] += w * (double)vr[c];
                }
            }
            for (int32_t c = 0; c < cw; c++) {
                Ks[(size_t)a * (size_t)d + (size_t)(c0 + c)] = (float)(ak[c] / l);
                Vs[(size_t)a * (size_t)d + (size_t)(c0 + c)] = (float)(av[c] / l);
            }
        }
    }
}

void xf_at_s_unit(const float *x, int32_t d, double *y)
{
    double s = 0;

    for (int32_t c = 0; c < d; c++)
        s += (double)x[c] * (double)x[c];
    s = sqrt(s);
    for (int32_t c = 0; c < d; c++)
        y[c] = s > 0 ? (double)x[c] / s : 0.0;
}

size_t xf_at_s_argmax_ws(int32_t k, int32_t d)
{
    size_t dp = (size_t)dpad(d), ch = ((size_t)k + XF_AT_T_BK - 1) / XF_AT_T_BK, F = sizeof(float);

    return 64u + al64(F * ch * dp * XF_AT_T_BK) + al64(F * XF_AT_TQ * dp) +
           al64(F * XF_AT_TQ * XF_AT_T_BK) + al64(sizeof(double) * (size_t)k);
}

void xf_at_s_argmax(const double *pts, int32_t np, int32_t d, const double *ctr, int32_t k,
                    size_t cs_a, size_t cs_c, int sym, double margin, void *scratch,
                    int32_t *out)
{
    const xf_at_kern *kn = xf_at_kern_get();
    int32_t dp = dpad(d), nch = (k + XF_AT_T_BK - 1) / XF_AT_T_BK;
    size_t F = sizeof(float);
    unsigned char *b = (unsigned char *)(((uintptr_t)scratch + 63u) & ~(uintptr_t)63u);
    float *kt = (float *)(void *)b, *qt, *s;
    double *dot;

    b += al64(F * (size_t)nch * (size_t)dp * XF_AT_T_BK);
    qt = (float *)(void *)b;
    b += al64(F * XF_AT_TQ * (size_t)dp);
    s = (float *)(void *)b;
    b += al64(F * XF_AT_TQ * XF_AT_T_BK);
    dot = (double *)(void *)b;
    /* centers, transposed in chunks of 64: kt[ch][c][aa] */
    memset(kt, 0, F * (size_t)nch * (size_t)dp * XF_AT_T_BK);
    for (int32_t a = 0; a < k; a++)
        for (int32_t c = 0; c < d; c++)
            kt[((size_t)(a / XF_AT_T_BK) * (size_t)dp + (size_t)c) * XF_AT_T_BK +
               (size_t)(a % XF_AT_T_BK)] = (float)ctr[(size_t)a * cs_a + (size_t)c * cs_c];
    for (int32_t p0 = 0; p0 < np; p0 += XF_AT_TQ) {
        int32_t nq = np - p0 < XF_AT_TQ ? np - p0 : XF_AT_TQ;
        float b1[XF_AT_TQ], b2[XF_AT_TQ];
        int32_t i1[XF_AT_TQ];

        memset(qt, 0, F * (size_t)nq * (size_t)dp);
        for (int32_t q = 0; q < nq; q++) {
            for (int32_t c = 0; c < d; c++)
                qt[(size_t)q * (size_t)dp + (size_t)c] =
                    (float)pts[(size_t)(p0 + q) * (size_t)d + (size_t)c];
            b1[q] = b2[q] = -INFINITY;
            i1[q] = 0;
        }
        for (int32_t ch = 0; ch < nch; ch++) {
            int32_t na = k - ch * XF_AT_T_BK < XF_AT_T_BK ? k - ch * XF_AT_T_BK : XF_AT_T_BK;
            kn->qk(nq, d, dp, qt, kt + (size_t)ch * (size_t)dp * XF_AT_T_BK, 1.0f, s);
            for (int32_t q = 0; q < nq; q++)
                for (int32_t sg = 0; sg <= sym; sg++)
                    for (int32_t aa = 0; aa < na; aa++) {
                        float x = s[(size_t)q * XF_AT_T_BK + (size_t)aa];
                        int32_t idx = ch * XF_AT_T_BK + aa + sg * k;
                        if (sg)
                            x = -x;
                        if (x > b1[q]) {
                            b2[q] = b1[q];
                            b1[q] = x;
                            i1[q] = idx;
                        } else if (x > b2[q]) {
                            b2[q] = x;
                        }
                    }
        }
        for (int32_t q = 0; q < nq; q++) {
            const double *x = pts + (size_t)(p0 + q) * (size_t)d;
            int32_t best = 0;
            double bv = -INFINITY;
            if ((double)b1[q] - (double)b2[q] > margin) {
                out[p0 + q] = i1[q];
                continue;
            }
            /* near tie: the exact double scores, sequential sums, lowest index wins */
            for (int32_t a = 0; a < k; a++) {
                double t = 0;
                for (int32_t c = 0; c < d; c++)
                    t += ctr[(size_t)a * cs_a + (size_t)c * cs_c] * x[c];
                dot[a] = t;
            }
            for (int32_t sg = 0; sg <= sym; sg++)
                for (int32_t a = 0; a < k; a++) {
                    double t = sg ? -dot[a] : dot[a];
                    if (t > bv) {
                        bv = t;
                        best = a + sg * k;
                    }
                }
            out[p0 + q] = best;
        }
    }
}

int32_t xf_at_s_nearest(const double *mu, int32_t k, int32_t d, const double *x)
{
    int32_t best = 0;
    double bv = -INFINITY;

    for (int32_t a = 0; a < k; a++) {
        double s = 0;
        for (int32_t c = 0; c < d; c++)
            s += mu[(size_t)a * (size_t)d + (size_t)c] * x[c];
        if (s > bv) {
            bv = s;
            best = a;
        }
    }
    return best;
}

void xf_at_s_kmeans(const double *pts, int32_t np, int32_t d, int32_t k, int32_t iters,
                    uint64_t seed, int32_t layer, int32_t head, double *mu, int32_t *idx,
                    double *acc, void *amx)
{
    xf_rng_t r;

    for (int32_t p = 0; p < np; p++)
        idx[p] = p;
    xf_rng_init(&r, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_KMEANS, 0);
    xf_rng_partial_shuffle(&r, idx, np, k);
    for (int32_t a = 0; a < k; a++)
        memcpy(mu + (size_t)a * (size_t)d, pts + (size_t)idx[a] * (size_t)d,
               sizeof(double) * (size_t)d);
    for (int32_t t = 0; t < iters; t++) {
        int changed = t == 0;
        memset(acc, 0, sizeof(double) * (size_t)k * (size_t)d);
        for (int32_t p0 = 0; p0 < np; p0 += XF_AT_TQ) {
            int32_t nq = np - p0 < XF_AT_TQ ? np - p0 : XF_AT_TQ, a[XF_AT_TQ];
            xf_at_s_argmax(pts + (size_t)p0 * (size_t)d, nq, d, mu, k, (size_t)d, 1, 0,
                           XF_AT_S_UNIT_MARGIN, amx, a);
            for (int32_t q = 0; q < nq; q++) {
                const double *x = pts + (size_t)(p0 + q) * (size_t)d;
                double *s = acc + (size_t)a[q] * (size_t)d;
                changed |= idx[p0 + q] != a[q];
                idx[p0 + q] = a[q];         /* idx is free after the init */
                for (int32_t c = 0; c < d; c++)
                    s[c] += x[c];
            }
        }
        /* An unchanged assignment gives the same sums in the same order, hence the same
         * centroids bit for bit: the remaining steps would change nothing. */
        if (!changed)
            break;
        for (int32_t a = 0; a < k; a++) {
            double *s = acc + (size_t)a * (size_t)d, nn = 0;
            for (int32_t c = 0; c < d; c++)
                nn += s[c] * s[c];
            if (!(nn > 0))
                continue;                       /* empty (or cancelling) cluster: keep */
            nn = sqrt(nn);
            for (int32_t c = 0; c < d; c++)
                mu[(size_t)a * (size_t)d + (size_t)c] = s[c] / nn;
        }
    }
}
