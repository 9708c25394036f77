/* Double-precision references for the family-T variants and the vtable runner used by the
 * attention tests (attn_ref_t.h). Written for obviousness, not speed. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/rng.h"
#include "ref/attn_ref_t.h"

void xf_ref_attend(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                   int32_t ld, double factor, const uint8_t *A, const double *bias,
                   const uint8_t *rows_mask, float *out, int32_t ldo)
{
    double *x = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    double *o = malloc(sizeof(double) * (size_t)d);

    for (int32_t i = 0; i < n; i++) {
        if (rows_mask && !rows_mask[i])
            continue;
        double mx = -INFINITY;
        int any = 0;
        for (int32_t j = 0; j < n; j++) {
            if (!A[(size_t)i * n + j])
                continue;
            double s = 0;
            for (int32_t c = 0; c < d; c++)
                s += (double)q[(size_t)i * ld + c] * (double)k[(size_t)j * ld + c];
            s *= factor;
            if (bias)
                s += bias[(size_t)i * n + j];
            x[j] = s;
            if (s > mx)
                mx = s;
            any = 1;
        }
        if (!any) {
            for (int32_t c = 0; c < d; c++)
                out[(size_t)i * ldo + c] = v[(size_t)i * ld + c];
            continue;
        }
        double sum = 0;
        for (int32_t c = 0; c < d; c++)
            o[c] = 0;
        for (int32_t j = 0; j < n; j++) {
            if (!A[(size_t)i * n + j])
                continue;
            double p = exp(x[j] - mx);
            sum += p;
            for (int32_t c = 0; c < d; c++)
                o[c] += p * (double)v[(size_t)j * ld + c];
        }
        for (int32_t c = 0; c < d; c++)
            out[(size_t)i * ldo + c] = (float)(o[c] / sum);
    }
    free(x);
    free(o);
}

#define SET(i, j) A[(size_t)(i) * n + (j)] = 1

void xf_ref_set_dense(int32_t n, uint8_t *A)
{
    memset(A, 1, (size_t)n * n);
}

void xf_ref_set_blockwise(int32_t n, int32_t b, int32_t h, uint8_t *A)
{
    memset(A, 0, (size_t)n * n);
    for (int32_t i = 0; i < n; i++) {
        int32_t t = i / b;
        int32_t lo = t * b - h, hi = ((t + 1) * b < n ? (t + 1) * b : n) + h;
        for (int32_t j = 0; j < n; j++)
            if (j >= lo && j < hi)
                SET(i, j);
    }
}

void xf_ref_set_window(int32_t n, int32_t w, int32_t dil, uint8_t *A)
{
    memset(A, 0, (size_t)n * n);
    for (int32_t i = 0; i < n; i++)
        for (int32_t t = -w; t <= w; t++) {
            int64_t j = (int64_t)i + (int64_t)dil * t;
            if (j >= 0 && j < n)
                SET(i, j);
        }
}

void xf_ref_set_strided(int32_t n, int32_t l, int part, uint8_t *A)
{
    memset(A, 0, (size_t)n * n);
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < n; j++) {
            int a1 = abs(i - j) < l;
            int a2 = (i - j) % l == 0;
            if ((part != 2 && a1) || (part != 1 && a2))
                SET(i, j);
        }
}

void xf_ref_set_fixed(int32_t n, int32_t l, int32_t c, int32_t head, int32_t v, int part,
                      uint8_t *A)
{
    int32_t hm = head % v;
    int32_t lo = l - c * (1 + hm), hi = l - c * hm;
    memset(A, 0, (size_t)n * n);
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < n; j++) {
            int a1 = j / l == i / l;
            int a2 = j % l >= lo && j % l < hi;
            if ((part != 2 && a1) || (part != 1 && a2))
                SET(i, j);
        }
}

void xf_ref_set_axial(int32_t n, int32_t cols, int part, uint8_t *A)
{
    memset(A, 0, (size_t)n * n);
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < n; j++) {
            int r = j / cols == i / cols;
            int c = j % cols == i % cols;
            if ((part != 2 && r) || (part != 1 && c))
                SET(i, j);
        }
}

void xf_ref_set_longformer(int32_t n, int32_t w, int32_t dil, const uint8_t *glob, uint8_t *A)
{
    xf_ref_set_window(n, w, dil, A);
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < n; j++)
            if (glob[i] || glob[j])
                SET(i, j);
}

void xf_ref_set_bigbird(int32_t n, int32_t b, int32_t r, int32_t w, int32_t gf, int32_t gl,
                        uint64_t seed, int32_t layer, int32_t head, uint8_t *A)
{
    int32_t nb = (n + b - 1) / b;
    uint8_t *sel = calloc((size_t)nb, 1);
    int32_t *cand = malloc(sizeof(int32_t) * (size_t)nb);

    memset(A, 0, (size_t)n * n);
    for (int32_t a = 0; a < nb; a++) {
        memset(sel, 0, (size_t)nb);
        int a_global = a < gf || a >= nb - gl;
        for (int32_t x = 0; x < nb; x++) {
            int g = x < gf || x >= nb - gl;
            int win = x >= a - w && x <= a + w;
            if (a_global || g || win)
                sel[x] = 1;
        }
        if (!a_global) {
            int32_t m = 0;
            for (int32_t x = 0; x < nb; x++) {
                int g = x < gf || x >= nb - gl;
                int win = x >= a - w && x <= a + w;
                if (!g && !win)
                    cand[m++] = x;
            }
            xf_rng_t rng;
            xf_rng_init(&rng, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_BIGBIRD,
                        (uint64_t)a);
            int32_t cnt = r < m ? r : m;
            /* partial Fisher–Yates, written out (§0) */
            for (int32_t t = 0; t < cnt; t++) {
                double u = xf_rng_uniform(&rng);
                int32_t j = t + (int32_t)floor(u * (m - t));
                int32_t tmp = cand[t];
                cand[t] = cand[j];
                cand[j] = tmp;
            }
            for (int32_t t = 0; t < cnt; t++)
                sel[cand[t]] = 1;
        }
        for (int32_t i = a * b; i < (a + 1) * b && i < n; i++)
            for (int32_t j = 0; j < n; j++)
                if (sel[j / b])
                    SET(i, j);
    }
    free(sel);
    free(cand);
}

int xf_ref_run(const xf_attn_t *a, const xf_attn_shape *sh, const xf_attn_io *io, int nth,
               xf_attn_plan *plan_out)
{
    const xf_attn_vtbl *vt = a->vt;
    xf_attn_plan pl;
    int rc = xf_at_plan(vt, a->params, sh, nth, &pl);
    if (rc)
        return rc;
    if (plan_out)
        *plan_out = pl;
    void *shared = pl.ws_shared ? malloc(pl.ws_shared) : NULL;
    if (vt->ops->prepare) {
        /* a parallel prepare: every thread's share, last thread first (no order may matter) */
        if (vt->ops->prepare_par)
            for (int ith = nth - 1; ith >= 0 && !rc; ith--)
                rc = vt->ops->prepare_par(a->params, sh, io, &pl, shared, ith, nth);
        else
            rc = vt->ops->prepare(a->params, sh, io, &pl, shared);
        if (rc) {
            free(shared);
            return rc;
        }
    }
    for (int ith = 0; ith < nth && !rc; ith++) {
        void *ws = malloc(pl.ws_per_thread ? pl.ws_per_thread : 1);
        if (ws)
            memset(ws, 0xA5, pl.ws_per_thread);   /* garbage: the kernel must not read it */
        rc = xf_at_forward(vt, a->params, sh, io, &pl, shared, ws, ith, nth);
        free(ws);
    }
    free(shared);
    return rc;
}

int xf_ref_case_init(xf_ref_case *c, const int32_t *lens, int32_t n_seq, int32_t h, int32_t d,
                     uint64_t seed, float qmul)
{
    memset(c, 0, sizeof(*c));
    c->cu = malloc(sizeof(int32_t) * (size_t)(n_seq + 1));
    if (!c->cu)
        return -1;
    c->cu[0] = 0;
    for (int32_t s = 0; s < n_seq; s++)
        c->cu[s + 1] = c->cu[s] + lens[s];
    int32_t N = c->cu[n_seq];
    c->plane = (size_t)h * (size_t)N * (size_t)d;
    size_t np = c->plane ? c->plane : 1;
    c->q = malloc(np * sizeof(float));
    c->k = malloc(np * sizeof(float));
    c->v = malloc(np * sizeof(float));
    c->out = malloc(np * sizeof(float));
    if (!c->q || !c->k || !c->v || !c->out)
        return -1;
    /* SplitMix64 fill, uniform [-1, 1) */
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    float *bufs[3] = { c->q, c->k, c->v };
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < c->plane; i++) {
            st += 0x9E3779B97F4A7C15ull;
            uint64_t z = xf_rng_mix64(st);
            bufs[b][i] = (float)((double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
            if (b == 0)
                bufs[b][i] *= qmul;
        }
    memset(c->out, 0, np * sizeof(float));
    c->sh.n_seq = n_seq;
    c->sh.cu_len = c->cu;
    c->sh.n_tokens = N;
    c->sh.n_head = h;
    c->sh.d_head = d;
    c->io.q = c->q;
    c->io.k = c->k;
    c->io.v = c->v;
    c->io.q_scale = 1.0f;
    c->io.scale = (float)(1.0 / sqrt((double)d));
    c->io.out = c->out;
    return 0;
}

void xf_ref_case_free(xf_ref_case *c)
{
    free(c->cu);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    memset(c, 0, sizeof(*c));
}

void xf_ref_case_reference(const xf_ref_case *c, xf_ref_build_fn build, void *ctx, float *out)
{
    const int32_t N = c->sh.n_tokens, H = c->sh.n_head, d = c->sh.d_head;
    for (int32_t s = 0; s < c->sh.n_seq; s++) {
        int32_t t0 = c->cu[s], n = c->cu[s + 1] - t0;
        if (n == 0)
            continue;
        uint8_t *A = malloc((size_t)n * n);
        for (int32_t hh = 0; hh < H; hh++) {
            build(ctx, s, n, hh, A);
            size_t off = ((size_t)hh * N + t0) * d;
            xf_ref_attend(n, d, c->q + off, c->k + off, c->v + off, d,
                          (double)c->io.scale / c->io.q_scale, A, NULL, NULL,
                          out + ((size_t)t0 * H + hh) * d, H * d);
        }
        free(A);
    }
}

double xf_ref_maxdiff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e != e)
            return INFINITY;
        if (e > m)
            m = e;
    }
    return m;
}
