/* Double-precision references for attention families S, F, P, M (ATTENTION.md §27) and the test
 * harness shared by tests/attention/test_fam_{s,f,p,m}.c. Written for obviousness: full
 * matrices, explicit key sets, two-pass softmax, one (sequence, head) at a time. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "attention/rng.h"
#include "tests/ref/attn_ref_sfpm.h"
#include "tests/helpers/xf_test.h"

/* ---- harness ---- */

xf_rbatch_t *xf_rbatch_new(int32_t n_seq, const int32_t *lens, int32_t h, int32_t d, float amp,
                           uint64_t seed)
{
    xf_rbatch_t *b = calloc(1, sizeof(*b));
    size_t plane;

    b->n_seq = n_seq;
    b->n_head = h;
    b->d = d;
    b->cu = calloc((size_t)n_seq + 1, sizeof(int32_t));
    for (int32_t s = 0; s < n_seq; s++)
        b->cu[s + 1] = b->cu[s] + lens[s];
    b->n_tok = b->cu[n_seq];
    plane = (size_t)h * (size_t)b->n_tok * (size_t)d + 1;
    b->q = malloc(plane * sizeof(float));
    b->k = malloc(plane * sizeof(float));
    b->v = malloc(plane * sizeof(float));
    b->out = malloc(plane * sizeof(float));
    xf_test_fill(b->q, plane, seed * 3 + 1, -amp, amp);
    xf_test_fill(b->k, plane, seed * 3 + 2, -amp, amp);
    xf_test_fill(b->v, plane, seed * 3 + 3, -1.0f, 1.0f);
    for (size_t i = 0; i < plane; i++)
        b->out[i] = NAN;
    return b;
}

void xf_rbatch_free(xf_rbatch_t *b)
{
    if (!b)
        return;
    free(b->cu);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->out);
    free(b);
}

void xf_rbatch_slice(const xf_rbatch_t *b, int32_t s, int32_t head, float *q, float *k, float *v)
{
    int32_t n = b->cu[s + 1] - b->cu[s];
    size_t off = ((size_t)head * (size_t)b->n_tok + (size_t)b->cu[s]) * (size_t)b->d;
    size_t cnt = (size_t)n * (size_t)b->d;

    if (q)
        memcpy(q, b->q + off, cnt * sizeof(float));
    if (k)
        memcpy(k, b->k + off, cnt * sizeof(float));
    if (v)
        memcpy(v, b->v + off, cnt * sizeof(float));
}

double xf_rbatch_err(const xf_rbatch_t *b, int32_t s, int32_t head, const double *ref)
{
    int32_t n = b->cu[s + 1] - b->cu[s], d = b->d;
    double e = 0;

    for (int32_t i = 0; i < n; i++) {
        const float *o = b->out + ((size_t)(b->cu[s] + i) * (size_t)b->n_head + (size_t)head) *
                                      (size_t)d;
        for (int32_t c = 0; c < d; c++) {
            double x = fabs((double)o[c] - ref[(size_t)i * (size_t)d + (size_t)c]);
            if (!(x <= e))
                e = isnan(x) ? INFINITY : x;
        }
    }
    return e;
}

int xf_ref_parse(const xf_attn_vtbl *vt, const char *json, void *params, char *err, size_t errlen)
{
    json_error_t je;
    json_t *obj = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    int rc;

    if (!obj)
        return XF_EFORMAT;
    memset(params, 0, XF_ATTN_PARAMS_MAX);
    rc = xf_at_parse_params(vt, params, obj, err, errlen);
    json_decref(obj);
    return rc;
}

float xf_ref_q_scale = 1.0f;

int xf_ref_run(const xf_attn_vtbl *vt, const void *params, xf_rbatch_t *b, int nth,
               const void *weights, void *const *state, const int32_t *mem_rows,
               xf_attn_plan *plan_out)
{
    xf_attn_shape sh = { .n_seq = b->n_seq, .cu_len = b->cu, .n_tokens = b->n_tok,
                         .n_head = b->n_head, .d_head = b->d, .layer = b->layer,
                         .mem_rows = mem_rows };
    xf_attn_io io = { .q = b->q, .k = b->k, .v = b->v, .q_scale = xf_ref_q_scale, .weights = weights,
                      .state = state, .scale = 1.0f / sqrtf((float)b->d), .out = b->out };
    xf_attn_plan pl;
    void *shared = NULL;
    unsigned char *thr = NULL;
    int rc = xf_at_plan(vt, params, &sh, nth, &pl);

    if (rc)
        return rc;
    shared = malloc(pl.ws_shared + 64);
    thr = malloc((pl.ws_per_thread + 64) * (size_t)nth);
    if (vt->ops->prepare && (rc = vt->ops->prepare(params, &sh, &io, &pl, shared)) != 0)
        goto out;
    for (int ith = 0; ith < nth && !rc; ith++)
        rc = xf_at_forward(vt, params, &sh, &io, &pl, shared,
                         thr + (size_t)ith * ((pl.ws_per_thread + 64) & ~(size_t)63), ith, nth);
out:
    if (plan_out)
        *plan_out = pl;
    free(shared);
    free(thr);
    return rc;
}

/* Run vt on a batch and compare (seq, head) slices with the reference; heads_max limits the
 * heads checked for long sequences (the quadratic reference is slow). */
double xf_ref_check(const xf_attn_vtbl *vt, const char *json, xf_ref_fn ref, const void *weights,
                    int32_t n_seq, const int32_t *lens, int32_t h, int32_t d, float amp,
                    int32_t layer)
{
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[256] = "";
    xf_rbatch_t *b = xf_rbatch_new(n_seq, lens, h, d, amp, (uint64_t)(n_seq * 131 + h * 7 + d));
    double worst = 0;

    b->layer = layer;
    assert_int_equal(xf_ref_parse(vt, json, params, err, sizeof(err)), 0);
    assert_int_equal(xf_ref_run(vt, params, b, 2, weights, NULL, NULL, NULL), 0);
    for (int32_t s = 0; s < n_seq; s++) {
        int32_t n = lens[s];
        float *q = malloc(sizeof(float) * ((size_t)n * (size_t)d + 1));
        float *k = malloc(sizeof(float) * ((size_t)n * (size_t)d + 1));
        float *v = malloc(sizeof(float) * ((size_t)n * (size_t)d + 1));
        double *o = malloc(sizeof(double) * ((size_t)n * (size_t)d + 1));
        int32_t hh = n > 300 ? 1 : h;
        for (int32_t head = 0; head < hh && n > 0; head++) {
            double e;
            xf_rbatch_slice(b, s, head, q, k, v);
            ref(params, weights, n, d, q, k, v, 1.0 / sqrt((double)d), layer, head, o);
            /* error relative to max(1, max|ref|): outputs are averages of v in [-1, 1]
             * except where a non-positive (trig) estimator had a tiny denominator */
            {
                double mx = 1;
                for (size_t t = 0; t < (size_t)n * (size_t)d; t++)
                    mx = fabs(o[t]) > mx ? fabs(o[t]) : mx;
                e = xf_rbatch_err(b, s, head, o) / mx;
            }
            if (e > worst)
                worst = e;
        }
        free(q);
        free(k);
        free(v);
        free(o);
    }
    xf_rbatch_free(b);
    return worst;
}

/* nth ∈ {1,2,3,8} bitwise; packing: a sequence alone vs inside batches (other positions,
 * other neighbours) bitwise. */
void xf_ref_independence(const void *weights, const xf_attn_vtbl *vt, const char *json)
{
    static const int32_t lens[] = { 65, 7, 130, 1, 33 };
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[128];
    xf_rbatch_t *b = xf_rbatch_new(5, lens, 3, 40, 1.0f, 11);
    size_t cnt = (size_t)b->n_tok * 3 * 40;
    float *first = malloc(sizeof(float) * cnt);
    static const int nths[] = { 1, 2, 3, 8 };

    assert_int_equal(xf_ref_parse(vt, json, params, err, sizeof(err)), 0);
    for (int t = 0; t < 4; t++) {
        assert_int_equal(xf_ref_run(vt, params, b, nths[t], weights, NULL, NULL, NULL), 0);
        if (t == 0)
            memcpy(first, b->out, sizeof(float) * cnt);
        else
            assert_memory_equal(first, b->out, sizeof(float) * cnt);
    }
    /* sequence 2 (130 tokens) alone and first in a different batch */
    for (int variant_ = 0; variant_ < 2; variant_++) {
        int32_t l2[3] = { 130, 5, 9 };
        int32_t nseq = variant_ ? 3 : 1;
        xf_rbatch_t *a = xf_rbatch_new(nseq, l2, 3, 40, 1.0f, 99);
        for (int32_t head = 0; head < 3; head++) {
            size_t src = ((size_t)head * (size_t)b->n_tok + (size_t)b->cu[2]) * 40;
            size_t dst = (size_t)head * (size_t)a->n_tok * 40;
            memcpy(a->q + dst, b->q + src, sizeof(float) * 130 * 40);
            memcpy(a->k + dst, b->k + src, sizeof(float) * 130 * 40);
            memcpy(a->v + dst, b->v + src, sizeof(float) * 130 * 40);
        }
        assert_int_equal(xf_ref_run(vt, params, a, 2, weights, NULL, NULL, NULL), 0);
        assert_memory_equal(a->out, first + (size_t)b->cu[2] * 3 * 40,
                            sizeof(float) * 130 * 3 * 40);
        xf_rbatch_free(a);
    }
    free(first);
    xf_rbatch_free(b);
}

/* ---- references ---- */

void xf_ref_attend_d(int32_t nq, int32_t nk, int32_t d, const double *q, const double *k,
                     const double *v, double s, const uint8_t *mask, const double *beta,
                     double *out)
{
    double *x = malloc(sizeof(double) * ((size_t)nk + 1));

    for (int32_t i = 0; i < nq; i++) {
        double mx = -INFINITY, l = 0;
        double *o = out + (size_t)i * (size_t)d;
        for (int32_t j = 0; j < nk; j++) {
            double dot = 0;
            if (mask && !mask[(size_t)i * (size_t)nk + (size_t)j]) {
                x[j] = -INFINITY;
                continue;
            }
            for (int32_t c = 0; c < d; c++)
                dot += q[(size_t)i * (size_t)d + (size_t)c] * k[(size_t)j * (size_t)d + (size_t)c];
            x[j] = s * dot + (beta ? beta[(size_t)i * (size_t)nk + (size_t)j] : 0.0);
            if (x[j] > mx)
                mx = x[j];
        }
        memset(o, 0, sizeof(double) * (size_t)d);
        if (mx == -INFINITY)
            continue;
        for (int32_t j = 0; j < nk; j++) {
            double w;
            if (x[j] == -INFINITY)
                continue;
            w = exp(x[j] - mx);
            l += w;
            for (int32_t c = 0; c < d; c++)
                o[c] += w * v[(size_t)j * (size_t)d + (size_t)c];
        }
        for (int32_t c = 0; c < d; c++)
            o[c] /= l;
    }
    free(x);
}

static double *to_d(const float *x, size_t cnt)
{
    double *y = malloc(sizeof(double) * (cnt + 1));
    for (size_t i = 0; i < cnt; i++)
        y[i] = (double)x[i];
    return y;
}

void xf_ref_attend(int32_t nq, int32_t nk, int32_t d, const float *q, const float *k,
                   const float *v, double s, const uint8_t *mask, const double *beta, double *out)
{
    double *qd = to_d(q, (size_t)nq * (size_t)d), *kd = to_d(k, (size_t)nk * (size_t)d);
    double *vd = to_d(v, (size_t)nk * (size_t)d);

    xf_ref_attend_d(nq, nk, d, qd, kd, vd, s, mask, beta, out);
    free(qd);
    free(kd);
    free(vd);
}

/* Segment means with bias ln(size) over explicit segments [st[a], st[a+1]). */
static void pooled_ref(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                       double s, int32_t m, const int32_t *st, double *out)
{
    double *qd = to_d(q, (size_t)n * (size_t)d);
    double *ks = calloc((size_t)m * (size_t)d + 1, sizeof(double));
    double *vs = calloc((size_t)m * (size_t)d + 1, sizeof(double));
    double *beta = malloc(sizeof(double) * ((size_t)n * (size_t)m + 1));

    for (int32_t a = 0; a < m; a++) {
        int32_t cnt = st[a + 1] - st[a];
        for (int32_t j = st[a]; j < st[a + 1]; j++)
            for (int32_t c = 0; c < d; c++) {
                ks[(size_t)a * (size_t)d + (size_t)c] += k[(size_t)j * (size_t)d + (size_t)c];
                vs[(size_t)a * (size_t)d + (size_t)c] += v[(size_t)j * (size_t)d + (size_t)c];
            }
        for (int32_t c = 0; c < d; c++) {
            ks[(size_t)a * (size_t)d + (size_t)c] /= cnt;
            vs[(size_t)a * (size_t)d + (size_t)c] /= cnt;
        }
        for (int32_t i = 0; i < n; i++)
            beta[(size_t)i * (size_t)m + (size_t)a] = log((double)cnt);
    }
    xf_ref_attend_d(n, m, d, qd, ks, vs, s, NULL, beta, out);
    free(qd);
    free(ks);
    free(vs);
    free(beta);
}

void xf_ref_linformer(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                      double s, int32_t kk, double *out)
{
    int32_t m = kk < n ? kk : n;
    int32_t *st = malloc(sizeof(int32_t) * ((size_t)m + 1));

    /* sizes ceil(n/m) for the first n mod m segments, floor(n/m) for the rest */
    st[0] = 0;
    for (int32_t a = 0; a < m; a++)
        st[a + 1] = st[a] + n / m + (a < n % m ? 1 : 0);
    pooled_ref(n, d, q, k, v, s, m, st, out);
    free(st);
}

void xf_ref_memcomp(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                    double s, int32_t rate, double *out)
{
    int32_t m = (n + rate - 1) / rate;
    int32_t *st = malloc(sizeof(int32_t) * ((size_t)m + 1));

    for (int32_t a = 0; a <= m; a++)
        st[a] = a * rate < n ? a * rate : n;
    pooled_ref(n, d, q, k, v, s, m, st, out);
    free(st);
}

/* Family F quadratic form: O_i = Σ_j (φq_i·φk_j) v_j / Σ_j (φq_i·φk_j), rows of F features. */
static void quad_form(int32_t n, int32_t d, int32_t F, const double *pq, const double *pk,
                      const float *v, double eps, int clamp, double *out)
{
    for (int32_t i = 0; i < n; i++) {
        double den = eps, fl = 0;
        double *o = out + (size_t)i * (size_t)d;
        memset(o, 0, sizeof(double) * (size_t)d);
        for (int32_t j = 0; j < n; j++) {
            double a = 0;
            for (int32_t f = 0; f < F; f++)
                a += pq[(size_t)i * (size_t)F + (size_t)f] * pk[(size_t)j * (size_t)F + (size_t)f];
            den += a;
            for (int32_t c = 0; c < d; c++)
                o[c] += a * v[(size_t)j * (size_t)d + (size_t)c];
        }
        if (clamp) {
            for (int32_t f = 0; f < F; f++) {
                double za = 0;
                for (int32_t j = 0; j < n; j++)
                    za += fabs(pk[(size_t)j * (size_t)F + (size_t)f]);
                fl += fabs(pq[(size_t)i * (size_t)F + (size_t)f]) * za;
            }
            if (den < 1e-6 * fl)
                den = 1e-6 * fl;
        }
        for (int32_t c = 0; c < d; c++)
            o[c] /= den;
    }
}

/* FAVOR+ W by classical Gram–Schmidt (a different formulation from the engine's modified one;
 * both equal QR with diag(R) > 0). */
static void ref_favor_w(const xf_performer_params_t *p, int32_t layer, int32_t head, int32_t m,
                        int32_t d, double *w)
{
    double *g = malloc(sizeof(double) * (size_t)d * (size_t)d);
    double *qm = malloc(sizeof(double) * (size_t)d * (size_t)d);

    for (int32_t b = 0; b * d < m; b++) {
        xf_rng_t r;
        xf_rng_init(&r, p->seed, (uint64_t)layer, (uint64_t)head, XF_RNG_FAVOR, (uint64_t)b);
        for (int32_t i = 0; i < d * d; i++)
            g[i] = xf_rng_normal(&r);                    /* G[row][col] */
        for (int32_t c = 0; c < d; c++) {                /* column c of Q into qm[c][*] */
            double nn = 0;
            for (int32_t t = 0; t < d; t++)
                qm[(size_t)c * (size_t)d + (size_t)t] = g[(size_t)t * (size_t)d + (size_t)c];
            for (int32_t pp = 0; pp < c; pp++) {
                double dot = 0;
                for (int32_t t = 0; t < d; t++)
                    dot += qm[(size_t)pp * (size_t)d + (size_t)t] *
                           g[(size_t)t * (size_t)d + (size_t)c];
                for (int32_t t = 0; t < d; t++)
                    qm[(size_t)c * (size_t)d + (size_t)t] -=
                        dot * qm[(size_t)pp * (size_t)d + (size_t)t];
            }
            for (int32_t t = 0; t < d; t++)
                nn += qm[(size_t)c * (size_t)d + (size_t)t] * qm[(size_t)c * (size_t)d + (size_t)t];
            for (int32_t t = 0; t < d; t++)
                qm[(size_t)c * (size_t)d + (size_t)t] /= sqrt(nn);
        }
        for (int32_t rr = 0; rr < d && b * d + rr < m; rr++) {
            int32_t row = b * d + rr;
            double target = 0, *wr = w + (size_t)row * (size_t)d;
            const double *src = p->orthogonal ? qm + (size_t)rr * (size_t)d
                                              : g + (size_t)rr * (size_t)d;
            double nn = 0;
            for (int32_t t = 0; t < d; t++)
                nn += src[t] * src[t];
            nn = sqrt(nn);
            if (p->row_norm == XF_ROWNORM_SQRT_D) {
                target = sqrt((double)d);
            } else if (p->orthogonal) {
                xf_rng_t rn;
                xf_rng_init(&rn, p->seed, (uint64_t)layer, (uint64_t)head, XF_RNG_FAVOR_NORM,
                            (uint64_t)row);
                for (int32_t t = 0; t < d; t++) {
                    double u = xf_rng_normal(&rn);
                    target += u * u;
                }
                target = sqrt(target);
            } else {
                target = nn;
            }
            for (int32_t t = 0; t < d; t++)
                wr[t] = src[t] / nn * target;
        }
    }
    free(g);
    free(qm);
}

void xf_ref_performer(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                      double s, const xf_performer_params_t *p, int32_t layer, int32_t head,
                      double *out)
{
    int32_t m = xf_performer_features(p, d);
    double *w = malloc(sizeof(double) * (size_t)m * (size_t)d);
    double *pq = malloc(sizeof(double) * (size_t)n * (size_t)m);
    double *pk = malloc(sizeof(double) * (size_t)n * (size_t)m);
    double rs = sqrt(s);

    ref_favor_w(p, layer, head, m, d, w);
    /* φ(x) = exp(Wx − ‖x‖²/2) with x = √s·q (the m^{-1/2} factor cancels). Computed with a
     * per-row shift for queries and one global shift for keys: both cancel exactly. */
    for (int pass = 0; pass < 2; pass++) {
        const float *x = pass ? k : q;
        double *ph = pass ? pk : pq, gmax = -INFINITY;
        for (int32_t i = 0; i < n; i++) {
            double nn = 0, mx = -INFINITY;
            for (int32_t c = 0; c < d; c++)
                nn += rs * x[(size_t)i * (size_t)d + (size_t)c] * rs *
                      x[(size_t)i * (size_t)d + (size_t)c];
            for (int32_t r = 0; r < m; r++) {
                double a = 0;
                for (int32_t c = 0; c < d; c++)
                    a += w[(size_t)r * (size_t)d + (size_t)c] * rs *
                         x[(size_t)i * (size_t)d + (size_t)c];
                ph[(size_t)i * (size_t)m + (size_t)r] = a - nn / 2;
                if (a - nn / 2 > mx)
                    mx = a - nn / 2;
            }
            if (!pass)
                for (int32_t r = 0; r < m; r++)
                    ph[(size_t)i * (size_t)m + (size_t)r] -= mx;
            if (mx > gmax)
                gmax = mx;
        }
        for (size_t t = 0; t < (size_t)n * (size_t)m; t++)
            ph[t] = exp(ph[t] - (pass ? gmax : 0.0));
    }
    quad_form(n, d, m, pq, pk, v, 0.0, 0, out);
    free(w);
    free(pq);
    free(pk);
}

void xf_ref_linear(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                   double eps, double *out)
{
    double *pq = malloc(sizeof(double) * (size_t)n * (size_t)d);
    double *pk = malloc(sizeof(double) * (size_t)n * (size_t)d);

    for (size_t t = 0; t < (size_t)n * (size_t)d; t++) {
        pq[t] = q[t] > 0 ? q[t] + 1.0 : exp(q[t]);
        pk[t] = k[t] > 0 ? k[t] + 1.0 : exp(k[t]);
    }
    quad_form(n, d, d, pq, pk, v, eps, 0, out);
    free(pq);
    free(pk);
}

void xf_ref_rfa(int32_t n, int32_t d, const float *q, const float *k, const float *v, double s,
                const xf_rfa_params_t *p, int32_t layer, int32_t head, double *out)
{
    int32_t D = p->features, F = 2 * D;
    double *w = malloc(sizeof(double) * (size_t)D * (size_t)d);
    double *pq = malloc(sizeof(double) * (size_t)n * (size_t)F);
    double *pk = malloc(sizeof(double) * (size_t)n * (size_t)F);
    double *x = malloc(sizeof(double) * (size_t)d), gmax = -INFINITY;
    double *g = malloc(sizeof(double) * (size_t)n);

    for (int32_t r = 0; r < D; r++) {
        xf_rng_t rng;
        xf_rng_init(&rng, p->seed, (uint64_t)layer, (uint64_t)head, XF_RNG_RFA, (uint64_t)r);
        for (int32_t c = 0; c < d; c++)
            w[(size_t)r * (size_t)d + (size_t)c] =
                xf_rng_normal(&rng) / (p->mode == XF_RFA_NORM ? sqrt(p->tau) : 1.0);
    }
    for (int pass = 0; pass < 2; pass++) {
        const float *src = pass ? k : q;
        double *ph = pass ? pk : pq;
        for (int32_t i = 0; i < n; i++) {
            double nn = 0;
            for (int32_t c = 0; c < d; c++) {
                x[c] = src[(size_t)i * (size_t)d + (size_t)c] * sqrt(s);
                nn += x[c] * x[c];
            }
            if (p->mode == XF_RFA_NORM) {
                double l = 0;
                for (int32_t c = 0; c < d; c++)
                    l += (double)src[(size_t)i * (size_t)d + (size_t)c] *
                         src[(size_t)i * (size_t)d + (size_t)c];
                for (int32_t c = 0; c < d; c++)
                    x[c] = l > 0 ? src[(size_t)i * (size_t)d + (size_t)c] / sqrt(l) : 0;
                nn = 0;
            }
            /* trig: exp(‖x‖²/2) per row; a per-query factor cancels, keys get one shift */
            g[i] = pass ? nn / 2 : 0;
            if (pass && g[i] > gmax)
                gmax = g[i];
            for (int32_t r = 0; r < D; r++) {
                double a = 0;
                for (int32_t c = 0; c < d; c++)
                    a += w[(size_t)r * (size_t)d + (size_t)c] * x[c];
                ph[(size_t)i * (size_t)F + (size_t)r] = sin(a);
                ph[(size_t)i * (size_t)F + (size_t)D + (size_t)r] = cos(a);
            }
        }
        if (pass)
            for (int32_t i = 0; i < n; i++)
                for (int32_t f = 0; f < F; f++)
                    ph[(size_t)i * (size_t)F + (size_t)f] *= exp(g[i] - gmax);
    }
    quad_form(n, d, F, pq, pk, v, 0.0, 1, out);
    free(w);
    free(pq);
    free(pk);
    free(x);
    free(g);
}

/* ---- family P ---- */

static void ref_unit(const float *x, int32_t d, double *y)
{
    double s = 0;
    for (int32_t c = 0; c < d; c++)
        s += (double)x[c] * (double)x[c];
    s = sqrt(s);
    for (int32_t c = 0; c < d; c++)
        y[c] = s > 0 ? (double)x[c] / s : 0.0;
}

/* argmax over [x̂R ; −x̂R] with R [d][nb/2], ties to the lowest index */
static int32_t ref_hash(const double *xh, int32_t d, const double *r, int32_t nb)
{
    int32_t half = nb / 2, best = 0;
    double bv = -INFINITY;

    if (nb < 2)
        return 0;
    for (int32_t col = 0; col < nb; col++) {
        double s = 0;
        for (int32_t c = 0; c < d; c++)
            s += xh[c] * r[(size_t)c * (size_t)half + (size_t)(col % half)];
        if (col >= half)
            s = -s;
        if (s > bv) {
            bv = s;
            best = col;
        }
    }
    return best;
}

static int cmp_near_i;
static int cmp_near(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    int32_t dx = abs(x - cmp_near_i), dy = abs(y - cmp_near_i);
    if (dx != dy)
        return dx < dy ? -1 : 1;
    return x < y ? -1 : x > y;
}

void xf_ref_reformer(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                     double s, const xf_reformer_params_t *p, int32_t layer, int32_t head,
                     double *out)
{
    int32_t nb = xf_reformer_buckets(p, n), half = nb / 2 > 0 ? nb / 2 : 1;
    double *r = malloc(sizeof(double) * (size_t)d * (size_t)half);
    double *xh = malloc(sizeof(double) * (size_t)d);
    int32_t *qb = malloc(sizeof(int32_t) * (size_t)n), *kb = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *grp = malloc(sizeof(int32_t) * (size_t)n);
    uint8_t *mask = calloc((size_t)n * (size_t)n, 1);
    int shared = p->mode == XF_REFORMER_SHARED;

    for (int32_t rho = 0; rho < p->n_hashes; rho++) {
        xf_rng_t rng;
        xf_rng_init(&rng, p->seed, (uint64_t)layer, (uint64_t)head, XF_RNG_LSH, (uint64_t)rho);
        for (int32_t t = 0; t < d * half; t++)
            r[t] = xf_rng_normal(&rng);
        for (int32_t i = 0; i < n; i++) {
            ref_unit(q + (size_t)i * (size_t)d, d, xh);
            qb[i] = ref_hash(xh, d, r, nb);
            ref_unit((shared ? q : k) + (size_t)i * (size_t)d, d, xh);
            kb[i] = ref_hash(xh, d, r, nb);
        }
        if (shared)
            for (int32_t j = 0; j < n; j++) {
                grp[j] = 0;
                for (int32_t t = 0; t < n; t++)
                    grp[j] += kb[t] < kb[j] || (kb[t] == kb[j] && t < j);
            }
        for (int32_t i = 0; i < n; i++) {
            if (shared) {
                /* chunk of j = rank of (bucket, position) in the sorted order / c */
                int32_t ti = grp[i] / p->chunk;
                for (int32_t j = 0; j < n; j++) {
                    int32_t tj = grp[j] / p->chunk;
                    if (kb[j] == kb[i] && tj >= ti - p->chunks_before &&
                        tj <= ti + p->chunks_after)
                        mask[(size_t)i * (size_t)n + (size_t)j] = 1;
                }
            } else {
                int32_t cnt = 0;
                for (int32_t j = 0; j < n; j++)
                    if (kb[j] == qb[i])
                        grp[cnt++] = j;
                if (p->max_bucket > 0 && cnt > p->max_bucket) {
                    cmp_near_i = i;
                    qsort(grp, (size_t)cnt, sizeof(int32_t), cmp_near);
                    cnt = p->max_bucket;
                }
                for (int32_t t = 0; t < cnt; t++)
                    mask[(size_t)i * (size_t)n + (size_t)grp[t]] = 1;
            }
        }
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t cnt = 0;
        for (int32_t j = 0; j < n; j++)
            cnt += mask[(size_t)i * (size_t)n + (size_t)j];
        if (shared && cnt > 1)
            mask[(size_t)i * (size_t)n + (size_t)i] = 0;
        if (cnt == 0)
            mask[(size_t)i * (size_t)n + (size_t)i] = 1;
    }
    if (shared) {
        double *qd = to_d(q, (size_t)n * (size_t)d),
               *kh = malloc(sizeof(double) * (size_t)n * (size_t)d);
        double *vd = to_d(v, (size_t)n * (size_t)d);
        for (int32_t j = 0; j < n; j++)
            ref_unit(q + (size_t)j * (size_t)d, d, kh + (size_t)j * (size_t)d);
        xf_ref_attend_d(n, n, d, qd, kh, vd, 1.0, mask, NULL, out);
        free(qd);
        free(kh);
        free(vd);
    } else {
        xf_ref_attend(n, n, d, q, k, v, s, mask, NULL, out);
    }
    free(r);
    free(xh);
    free(qb);
    free(kb);
    free(grp);
    free(mask);
}

/* ---- family M ---- */

void xf_ref_txl(int32_t nm, int32_t n, int32_t d, const float *q, const float *kk,
                const float *vv, double s, int causal, int32_t clamp, int32_t dm,
                const float *w_r, const float *u, const float *vb, int32_t mask_from,
                double *out)
{
    int32_t L = nm + n;
    double *x = malloc(sizeof(double) * (size_t)L);
    double *R = malloc(sizeof(double) * (size_t)(dm > 0 ? dm : 1));
    double *r = malloc(sizeof(double) * (size_t)d * (2u * (size_t)L + 1u));

    for (int32_t ti = 0; w_r && ti < 2 * L - 1; ti++) {
        double t = ti - (L - 1);
        if (clamp >= 0 && t > clamp)
            t = clamp;
        if (clamp >= 0 && t < -clamp)
            t = -clamp;
        for (int32_t e = 0; e < dm / 2; e++) {
            double f = pow(10000.0, -2.0 * e / dm);
            R[e] = sin(t * f);
            R[dm / 2 + e] = cos(t * f);
        }
        for (int32_t c = 0; c < d; c++) {
            double acc = 0;
            for (int32_t e = 0; e < dm; e++)
                acc += (double)w_r[(size_t)c * (size_t)dm + (size_t)e] * R[e];
            r[(size_t)ti * (size_t)d + (size_t)c] = acc;
        }
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t ip = nm + i;
        double mx = -INFINITY, l = 0;
        double *o = out + (size_t)i * (size_t)d;
        for (int32_t j = 0; j < L; j++) {
            double a = 0, b = 0;
            int ok = !(causal && j > ip) && !(i < mask_from && j >= mask_from);
            if (!ok) {
                x[j] = -INFINITY;
                continue;
            }
            for (int32_t c = 0; c < d; c++)
                a += ((double)q[(size_t)i * (size_t)d + (size_t)c] + (u ? u[c] : 0.0)) *
                     kk[(size_t)j * (size_t)d + (size_t)c];
            if (w_r) {
                /* r_t = W_r R_t, t = i' − j in [−(L−1), L−1]: table row t + L − 1 */
                const double *rt = r + (size_t)(ip - j + L - 1) * (size_t)d;
                for (int32_t c = 0; c < d; c++)
                    b += ((double)q[(size_t)i * (size_t)d + (size_t)c] + (vb ? vb[c] : 0.0)) *
                         rt[c];
            }
            x[j] = s * (a + b);
            if (x[j] > mx)
                mx = x[j];
        }
        memset(o, 0, sizeof(double) * (size_t)d);
        for (int32_t j = 0; j < L; j++) {
            double wgt;
            if (x[j] == -INFINITY)
                continue;
            wgt = exp(x[j] - mx);
            l += wgt;
            for (int32_t c = 0; c < d; c++)
                o[c] += wgt * vv[(size_t)j * (size_t)d + (size_t)c];
        }
        for (int32_t c = 0; c < d; c++)
            o[c] /= l;
    }
    free(x);
    free(R);
    free(r);
}

/* ---- family S: ISAB, Perceiver, Nyström ---- */

static int32_t ref_nearest(const double *mu, int32_t k, int32_t d, const double *x)
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

/* §11 spherical k-means, written out: init by partial Fisher–Yates, Lloyd steps. */
static void ref_kmeans(const double *pts, int32_t np, int32_t d, int32_t k, int32_t iters,
                       uint64_t seed, int32_t layer, int32_t head, double *mu)
{
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)np);
    double *sum = malloc(sizeof(double) * (size_t)k * (size_t)d);
    xf_rng_t r;

    for (int32_t p = 0; p < np; p++)
        idx[p] = p;
    xf_rng_init(&r, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_KMEANS, 0);
    for (int32_t t = 0; t < k; t++) {
        int32_t j = t + (int32_t)(xf_rng_uniform(&r) * (double)(np - t)), tmp;
        if (j >= np)
            j = np - 1;
        tmp = idx[t];
        idx[t] = idx[j];
        idx[j] = tmp;
    }
    for (int32_t a = 0; a < k; a++)
        memcpy(mu + (size_t)a * (size_t)d, pts + (size_t)idx[a] * (size_t)d,
               sizeof(double) * (size_t)d);
    for (int32_t it = 0; it < iters; it++) {
        memset(sum, 0, sizeof(double) * (size_t)k * (size_t)d);
        for (int32_t p = 0; p < np; p++) {
            int32_t a = ref_nearest(mu, k, d, pts + (size_t)p * (size_t)d);
            for (int32_t c = 0; c < d; c++)
                sum[(size_t)a * (size_t)d + (size_t)c] += pts[(size_t)p * (size_t)d + (size_t)c];
        }
        for (int32_t a = 0; a < k; a++) {
            double nn = 0;
            for (int32_t c = 0; c < d; c++)
                nn +=
                    sum[(size_t)a * (size_t)d + (size_t)c] * sum[(size_t)a * (size_t)d + (size_t)c];
            if (nn > 0)
                for (int32_t c = 0; c < d; c++)
                    mu[(size_t)a * (size_t)d + (size_t)c] =
                        sum[(size_t)a * (size_t)d + (size_t)c] / sqrt(nn);
        }
    }
    free(idx);
    free(sum);
}

/* group of each row: segment (§16) or nearest centroid of its unit vector */
static void ref_groups(const float *x, int32_t n, int32_t d, int32_t m, int segments,
                       const double *mu, int32_t *grp)
{
    double *u = malloc(sizeof(double) * (size_t)d);
    for (int32_t i = 0; i < n; i++) {
        if (segments) {
            int32_t a = 0, st = 0;
            for (a = 0; a < m; a++) {
                int32_t sz = n / m + (a < n % m ? 1 : 0);
                if (i < st + sz)
                    break;
                st += sz;
            }
            grp[i] = a;
        } else {
            ref_unit(x + (size_t)i * (size_t)d, d, u);
            grp[i] = ref_nearest(mu, m, d, u);
        }
    }
    free(u);
}

/* P = softmax(s U Kᵀ) (mu rows), Ks = P K, Vs = P V */
static void ref_pool(int32_t m, int32_t n, int32_t d, const double *U, const float *k,
                     const float *v, double s, double *Ks, double *Vs)
{
    double *kd = to_d(k, (size_t)n * (size_t)d), *vd = to_d(v, (size_t)n * (size_t)d);
    double *kv = malloc(sizeof(double) * (size_t)n * 2u * (size_t)d);
    double *o = malloc(sizeof(double) * (size_t)m * 2u * (size_t)d);

    /* attend with values [k | v] of width 2d */
    for (int32_t j = 0; j < n; j++) {
        memcpy(kv + (size_t)j * 2u * (size_t)d, kd + (size_t)j * (size_t)d,
               sizeof(double) * (size_t)d);
        memcpy(kv + (size_t)j * 2u * (size_t)d + d, vd + (size_t)j * (size_t)d,
               sizeof(double) * (size_t)d);
    }
    for (int32_t a = 0; a < m; a++) {
        double *x = malloc(sizeof(double) * (size_t)n), mx = -INFINITY, l = 0;
        for (int32_t j = 0; j < n; j++) {
            double t = 0;
            for (int32_t c = 0; c < d; c++)
                t += U[(size_t)a * (size_t)d + (size_t)c] * kd[(size_t)j * (size_t)d + (size_t)c];
            x[j] = s * t;
            mx = x[j] > mx ? x[j] : mx;
        }
        for (int32_t c = 0; c < 2 * d; c++)
            o[(size_t)a * 2u * (size_t)d + (size_t)c] = 0;
        for (int32_t j = 0; j < n; j++) {
            double w = exp(x[j] - mx);
            l += w;
            for (int32_t c = 0; c < 2 * d; c++)
                o[(size_t)a * 2u * (size_t)d + (size_t)c] +=
                    w * kv[(size_t)j * 2u * (size_t)d + (size_t)c];
        }
        for (int32_t c = 0; c < d; c++) {
            Ks[(size_t)a * (size_t)d + (size_t)c] = o[(size_t)a * 2u * (size_t)d + (size_t)c] / l;
            Vs[(size_t)a * (size_t)d + (size_t)c] =
                o[(size_t)a * 2u * (size_t)d + d + (size_t)c] / l;
        }
        free(x);
    }
    free(kd);
    free(vd);
    free(kv);
    free(o);
}

void xf_ref_isab(int32_t n, int32_t d, const float *q, const float *k, const float *v, double s,
                 const xf_isab_params_t *p, int32_t layer, int32_t head, double *out)
{
    int32_t m = p->m < n ? p->m : n, mm = 0;
    int seg = p->init == XF_ISAB_SEGMENTS;
    double *mu = calloc((size_t)m * (size_t)d, sizeof(double));
    int32_t *grp = malloc(sizeof(int32_t) * (size_t)n);
    double *Ks = calloc((size_t)m * (size_t)d, sizeof(double));
    double *Vs = calloc((size_t)m * (size_t)d, sizeof(double));
    double *beta = malloc(sizeof(double) * (size_t)n * (size_t)m);
    double *qd = to_d(q, (size_t)n * (size_t)d);

    if (!seg) {
        double *pts = malloc(sizeof(double) * (size_t)n * (size_t)d);
        for (int32_t j = 0; j < n; j++)
            ref_unit(k + (size_t)j * (size_t)d, d, pts + (size_t)j * (size_t)d);
        ref_kmeans(pts, n, d, m, p->iters, p->seed, layer, head, mu);
        free(pts);
    }
    ref_groups(p->mode == XF_ISAB_HARD ? k : q, n, d, m, seg, mu, grp);
    if (p->mode == XF_ISAB_HARD) {
        for (int32_t a = 0; a < m; a++) {
            int32_t cnt = 0;
            for (int32_t j = 0; j < n; j++)
                if (grp[j] == a) {
                    cnt++;
                    for (int32_t c = 0; c < d; c++) {
                        Ks[(size_t)mm * (size_t)d + (size_t)c] +=
                            k[(size_t)j * (size_t)d + (size_t)c];
                        Vs[(size_t)mm * (size_t)d + (size_t)c] +=
                            v[(size_t)j * (size_t)d + (size_t)c];
                    }
                }
            if (!cnt)
                continue;                                     /* empty group dropped */
            for (int32_t c = 0; c < d; c++) {
                Ks[(size_t)mm * (size_t)d + (size_t)c] /= cnt;
                Vs[(size_t)mm * (size_t)d + (size_t)c] /= cnt;
            }
            for (int32_t i = 0; i < n; i++)
                beta[(size_t)i * (size_t)m + (size_t)mm] = log((double)cnt);
            mm++;
        }
        /* beta rows have stride m; compact to stride mm */
        for (int32_t i = 0; i < n; i++)
            for (int32_t a = 0; a < mm; a++)
                beta[(size_t)i * (size_t)mm + (size_t)a] = beta[(size_t)i * (size_t)m + (size_t)a];
        xf_ref_attend_d(n, mm, d, qd, Ks, Vs, s, NULL, beta, out);
    } else {
        double *U = calloc((size_t)m * (size_t)d, sizeof(double));
        for (int32_t a = 0; a < m; a++) {
            int32_t cnt = 0;
            for (int32_t i = 0; i < n; i++)
                if (grp[i] == a) {
                    cnt++;
                    for (int32_t c = 0; c < d; c++)
                        U[(size_t)mm * (size_t)d + (size_t)c] +=
                            q[(size_t)i * (size_t)d + (size_t)c];
                }
            if (!cnt)
                continue;
            for (int32_t c = 0; c < d; c++)
                U[(size_t)mm * (size_t)d + (size_t)c] /= cnt;
            mm++;
        }
        ref_pool(mm, n, d, U, k, v, s, Ks, Vs);
        xf_ref_attend_d(n, mm, d, qd, Ks, Vs, s, NULL, NULL, out);
        free(U);
    }
    free(mu);
    free(grp);
    free(Ks);
    free(Vs);
    free(beta);
    free(qd);
}

void xf_ref_perceiver(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                      double s, int32_t m, const float *qz, double *out)
{
    double *U = to_d(qz, (size_t)m * (size_t)d), *qd = to_d(q, (size_t)n * (size_t)d);
    double *Ks = malloc(sizeof(double) * (size_t)m * (size_t)d);
    double *Vs = malloc(sizeof(double) * (size_t)m * (size_t)d);

    ref_pool(m, n, d, U, k, v, s, Ks, Vs);
    xf_ref_attend_d(n, m, d, qd, Ks, Vs, s, NULL, NULL, out);
    free(U);
    free(qd);
    free(Ks);
    free(Vs);
}

/* One-sided Jacobi SVD: A = U Σ Vᵀ; pinv = V Σ⁺ Uᵀ (σ below 1e-12·σ_max treated as 0). */
void xf_ref_pinv(int32_t m, const double *a, double *ainv)
{
    size_t mm = (size_t)m * (size_t)m;
    double *u = malloc(sizeof(double) * mm), *vv = calloc(mm, sizeof(double));
    double *sg = malloc(sizeof(double) * (size_t)m), smax = 0;

    memcpy(u, a, sizeof(double) * mm);
    for (int32_t i = 0; i < m; i++)
        vv[(size_t)i * (size_t)m + (size_t)i] = 1;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0;
        for (int32_t p = 0; p < m; p++)
            for (int32_t q = p + 1; q < m; q++) {
                double al = 0, be = 0, ga = 0, ze, t, c, s;
                for (int32_t i = 0; i < m; i++) {
                    double up = u[(size_t)i * (size_t)m + (size_t)p],
                           uq = u[(size_t)i * (size_t)m + (size_t)q];
                    al += up * up;
                    be += uq * uq;
                    ga += up * uq;
                }
                if (fabs(ga) <= 1e-15 * sqrt(al * be) || ga == 0)
                    continue;
                off = fmax(off, fabs(ga) / sqrt(al * be));
                ze = (be - al) / (2 * ga);
                t = (ze >= 0 ? 1.0 : -1.0) / (fabs(ze) + sqrt(1 + ze * ze));
                c = 1 / sqrt(1 + t * t);
                s = c * t;
                for (int32_t i = 0; i < m; i++) {
                    double up = u[(size_t)i * (size_t)m + (size_t)p],
                           uq = u[(size_t)i * (size_t)m + (size_t)q];
                    u[(size_t)i * (size_t)m + (size_t)p] = c * up - s * uq;
                    u[(size_t)i * (size_t)m + (size_t)q] = s * up + c * uq;
                    up = vv[(size_t)i * (size_t)m + (size_t)p];
                    uq = vv[(size_t)i * (size_t)m + (size_t)q];
                    vv[(size_t)i * (size_t)m + (size_t)p] = c * up - s * uq;
                    vv[(size_t)i * (size_t)m + (size_t)q] = s * up + c * uq;
                }
            }
        if (off < 1e-15)
            break;
    }
    for (int32_t j = 0; j < m; j++) {
        double nn = 0;
        for (int32_t i = 0; i < m; i++)
            nn += u[(size_t)i * (size_t)m + (size_t)j] * u[(size_t)i * (size_t)m + (size_t)j];
        sg[j] = sqrt(nn);
        smax = fmax(smax, sg[j]);
    }
    memset(ainv, 0, sizeof(double) * mm);
    for (int32_t j = 0; j < m; j++) {
        if (sg[j] <= 1e-12 * smax)
            continue;
        for (int32_t r = 0; r < m; r++)
            for (int32_t c = 0; c < m; c++)   /* V Σ⁺ Uᵀ with U_j = u_j / σ_j */
                ainv[(size_t)r * (size_t)m + (size_t)c] += vv[(size_t)r * (size_t)m + (size_t)j] *
                                                           u[(size_t)c * (size_t)m + (size_t)j] /
                                                           (sg[j] * sg[j]);
    }
    free(u);
    free(vv);
    free(sg);
}

static void ref_softmax_rows(double *x, int32_t rows, int32_t cols)
{
    for (int32_t r = 0; r < rows; r++) {
        double mx = -INFINITY, l = 0, *row = x + (size_t)r * (size_t)cols;
        for (int32_t c = 0; c < cols; c++)
            mx = fmax(mx, row[c]);
        for (int32_t c = 0; c < cols; c++)
            l += (row[c] = exp(row[c] - mx));
        for (int32_t c = 0; c < cols; c++)
            row[c] /= l;
    }
}

/* C[r×c] = A[r×k] B[k×c] */
static void ref_mm(const double *a, const double *b, int32_t r, int32_t k, int32_t c, double *out)
{
    for (int32_t i = 0; i < r; i++)
        for (int32_t j = 0; j < c; j++) {
            double s = 0;
            for (int32_t t = 0; t < k; t++)
                s += a[(size_t)i * (size_t)k + (size_t)t] * b[(size_t)t * (size_t)c + (size_t)j];
            out[(size_t)i * (size_t)c + (size_t)j] = s;
        }
}

void xf_ref_nystrom(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                    double s, int32_t landmarks, int32_t iters, double *out)
{
    int32_t m = landmarks < n ? landmarks : n;
    double rs = sqrt(s);
    double *X = malloc(sizeof(double) * (size_t)n * (size_t)d),
           *Y = malloc(sizeof(double) * (size_t)n * (size_t)d);
    double *Xl = calloc((size_t)m * (size_t)d, sizeof(double)),
           *Yl = calloc((size_t)m * (size_t)d, sizeof(double));
    double *F = malloc(sizeof(double) * (size_t)n * (size_t)m),
           *A = malloc(sizeof(double) * (size_t)m * (size_t)m);
    double *Bm = malloc(sizeof(double) * (size_t)m * (size_t)n),
           *Z = malloc(sizeof(double) * (size_t)m * (size_t)m);
    double *BV = malloc(sizeof(double) * (size_t)m * (size_t)d),
           *W = malloc(sizeof(double) * (size_t)m * (size_t)d);
    double *vd = to_d(v, (size_t)n * (size_t)d);
    double *Yt = malloc(sizeof(double) * (size_t)n * (size_t)d),
           *Ylt = malloc(sizeof(double) * (size_t)m * (size_t)d);
    int32_t st = 0;

    for (size_t t = 0; t < (size_t)n * (size_t)d; t++) {
        X[t] = q[t] * rs;
        Y[t] = k[t] * rs;
    }
    for (int32_t a = 0; a < m; a++) {
        int32_t sz = n / m + (a < n % m ? 1 : 0);
        for (int32_t j = st; j < st + sz; j++)
            for (int32_t c = 0; c < d; c++) {
                Xl[(size_t)a * (size_t)d + (size_t)c] += X[(size_t)j * (size_t)d + (size_t)c] / sz;
                Yl[(size_t)a * (size_t)d + (size_t)c] += Y[(size_t)j * (size_t)d + (size_t)c] / sz;
            }
        st += sz;
    }
    /* transposes for the products */
    for (int32_t j = 0; j < n; j++)
        for (int32_t c = 0; c < d; c++)
            Yt[(size_t)c * (size_t)n + (size_t)j] = Y[(size_t)j * (size_t)d + (size_t)c];
    for (int32_t a = 0; a < m; a++)
        for (int32_t c = 0; c < d; c++)
            Ylt[(size_t)c * (size_t)m + (size_t)a] = Yl[(size_t)a * (size_t)d + (size_t)c];
    ref_mm(X, Ylt, n, d, m, F);
    ref_softmax_rows(F, n, m);
    ref_mm(Xl, Ylt, m, d, m, A);
    ref_softmax_rows(A, m, m);
    ref_mm(Xl, Yt, m, d, n, Bm);
    ref_softmax_rows(Bm, m, n);
    if (iters <= 0) {
        xf_ref_pinv(m, A, Z);
    } else {
        double n1 = 0, ni = 0;
        double *AZ = malloc(sizeof(double) * (size_t)m * (size_t)m),
               *T = malloc(sizeof(double) * (size_t)m * (size_t)m);
        double *T2 = malloc(sizeof(double) * (size_t)m * (size_t)m);
        for (int32_t i = 0; i < m; i++) {
            double r = 0, c = 0;
            for (int32_t j = 0; j < m; j++) {
                r += fabs(A[(size_t)i * (size_t)m + (size_t)j]);
                c += fabs(A[(size_t)j * (size_t)m + (size_t)i]);
            }
            ni = fmax(ni, r);
            n1 = fmax(n1, c);
        }
        for (int32_t i = 0; i < m; i++)
            for (int32_t j = 0; j < m; j++)
                Z[(size_t)i * (size_t)m + (size_t)j] =
                    A[(size_t)j * (size_t)m + (size_t)i] / (n1 * ni);
        for (int32_t it = 0; it < iters; it++) {
            ref_mm(A, Z, m, m, m, AZ);
            for (size_t t = 0; t < (size_t)m * (size_t)m; t++)
                T[t] = -AZ[t];
            for (int32_t i = 0; i < m; i++)
                T[(size_t)i * (size_t)m + (size_t)i] += 7;
            ref_mm(AZ, T, m, m, m, T2);
            for (size_t t = 0; t < (size_t)m * (size_t)m; t++)
                T2[t] = -T2[t];
            for (int32_t i = 0; i < m; i++)
                T2[(size_t)i * (size_t)m + (size_t)i] += 15;
            ref_mm(AZ, T2, m, m, m, T);
            for (size_t t = 0; t < (size_t)m * (size_t)m; t++)
                T[t] = -T[t];
            for (int32_t i = 0; i < m; i++)
                T[(size_t)i * (size_t)m + (size_t)i] += 13;
            ref_mm(Z, T, m, m, m, T2);
            for (size_t t = 0; t < (size_t)m * (size_t)m; t++)
                Z[t] = 0.25 * T2[t];
        }
        free(AZ);
        free(T);
        free(T2);
    }
    ref_mm(Bm, vd, m, n, d, BV);
    ref_mm(Z, BV, m, m, d, W);
    ref_mm(F, W, n, m, d, out);
    free(X);
    free(Y);
    free(Xl);
    free(Yl);
    free(F);
    free(A);
    free(Bm);
    free(Z);
    free(BV);
    free(W);
    free(vd);
    free(Yt);
    free(Ylt);
}

/* ---- family P: routing, sinkhorn ---- */

void xf_ref_routing(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                    double s, const xf_routing_params_t *p, int32_t layer, int32_t head,
                    double *out)
{
    int32_t K = xf_routing_clusters(p, n);
    double *mu = malloc(sizeof(double) * (size_t)K * (size_t)d);
    int32_t *cq = malloc(sizeof(int32_t) * (size_t)n), *ck = malloc(sizeof(int32_t) * (size_t)n);

    if (p->mode == XF_ROUTING_ROUTED) {
        double *pts = malloc(sizeof(double) * 2u * (size_t)n * (size_t)d);
        uint8_t *mask = calloc((size_t)n * (size_t)n, 1);
        for (int32_t i = 0; i < n; i++) {
            ref_unit(q + (size_t)i * (size_t)d, d, pts + (size_t)i * (size_t)d);
            ref_unit(k + (size_t)i * (size_t)d, d, pts + (size_t)(n + i) * (size_t)d);
        }
        ref_kmeans(pts, 2 * n, d, K, p->iters, p->seed, layer, head, mu);
        for (int32_t i = 0; i < n; i++) {
            cq[i] = ref_nearest(mu, K, d, pts + (size_t)i * (size_t)d);
            ck[i] = ref_nearest(mu, K, d, pts + (size_t)(n + i) * (size_t)d);
        }
        for (int32_t i = 0; i < n; i++) {
            int32_t a = cq[i], owned = 0;
            for (int32_t j = 0; j < n; j++)
                owned += ck[j] == a;
            if (!owned) {               /* the key-owning centroid with the largest μ·q̂ */
                double bv = -INFINITY;
                for (int32_t b = 0; b < K; b++) {
                    double t = 0;
                    int has = 0;
                    for (int32_t j = 0; j < n; j++)
                        has |= ck[j] == b;
                    if (!has)
                        continue;
                    for (int32_t c = 0; c < d; c++)
                        t += mu[(size_t)b * (size_t)d + (size_t)c] *
                             pts[(size_t)i * (size_t)d + (size_t)c];
                    if (t > bv) {
                        bv = t;
                        a = b;
                    }
                }
            }
            for (int32_t j = 0; j < n; j++)
                mask[(size_t)i * (size_t)n + (size_t)j] = ck[j] == a;
        }
        xf_ref_attend(n, n, d, q, k, v, s, mask, NULL, out);
        free(pts);
        free(mask);
    } else {
        /* Euclidean k-means of the raw queries; centroid = mean of final members */
        double *pts = to_d(q, (size_t)n * (size_t)d),
               *sum = malloc(sizeof(double) * (size_t)K * (size_t)d);
        int32_t *idx = malloc(sizeof(int32_t) * (size_t)n),
                *cnt = malloc(sizeof(int32_t) * (size_t)K);
        double *kd = to_d(k, (size_t)n * (size_t)d), *vd = to_d(v, (size_t)n * (size_t)d);
        xf_rng_t r;
        for (int32_t i = 0; i < n; i++)
            idx[i] = i;
        xf_rng_init(&r, p->seed, (uint64_t)layer, (uint64_t)head, XF_RNG_KMEANS, 0);
        xf_rng_partial_shuffle(&r, idx, n, K);
        for (int32_t a = 0; a < K; a++)
            memcpy(mu + (size_t)a * (size_t)d, pts + (size_t)idx[a] * (size_t)d,
                   sizeof(double) * (size_t)d);
        for (int32_t it = 0; it <= p->iters; it++) {
            memset(sum, 0, sizeof(double) * (size_t)K * (size_t)d);
            memset(cnt, 0, sizeof(int32_t) * (size_t)K);
            for (int32_t i = 0; i < n; i++) {
                int32_t best = 0;
                double bv = INFINITY;
                for (int32_t a = 0; a < K; a++) {
                    double t = 0;
                    for (int32_t c = 0; c < d; c++) {
                        double x = pts[(size_t)i * (size_t)d + (size_t)c] -
                                   mu[(size_t)a * (size_t)d + (size_t)c];
                        t += x * x;
                    }
                    if (t < bv) {
                        bv = t;
                        best = a;
                    }
                }
                cq[i] = best;
                cnt[best]++;
                for (int32_t c = 0; c < d; c++)
                    sum[(size_t)best * (size_t)d + (size_t)c] +=
                        pts[(size_t)i * (size_t)d + (size_t)c];
            }
            for (int32_t a = 0; a < K; a++)
                if (cnt[a])
                    for (int32_t c = 0; c < d; c++)
                        mu[(size_t)a * (size_t)d + (size_t)c] =
                            sum[(size_t)a * (size_t)d + (size_t)c] / cnt[a];
        }
        for (int32_t i = 0; i < n; i++)
            xf_ref_attend_d(1, n, d, mu + (size_t)cq[i] * (size_t)d, kd, vd, s, NULL, NULL,
                            out + (size_t)i * (size_t)d);
        free(pts);
        free(sum);
        free(idx);
        free(cnt);
        free(kd);
        free(vd);
    }
    free(mu);
    free(cq);
    free(ck);
}

void xf_ref_sinkhorn(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                     double s, const xf_sinkhorn_params_t *p, double *out)
{
    int32_t b = p->block, nb = (n + b - 1) / b;
    double *mq = calloc((size_t)nb * (size_t)d, sizeof(double)),
           *mk = calloc((size_t)nb * (size_t)d, sizeof(double));
    double *R = malloc(sizeof(double) * (size_t)nb * (size_t)nb);
    const float *src = p->sim == XF_SINKHORN_KK ? k : q;

    for (int32_t a = 0; a < nb; a++) {
        int32_t r1 = (a + 1) * b < n ? (a + 1) * b : n, cnt = r1 - a * b;
        for (int32_t c = 0; c < d; c++) {
            double x = 0, y = 0;
            for (int32_t r = a * b; r < r1; r++) {
                x += src[(size_t)r * (size_t)d + (size_t)c];
                y += k[(size_t)r * (size_t)d + (size_t)c];
            }
            mq[(size_t)a * (size_t)d + (size_t)c] = x / cnt;
            mk[(size_t)a * (size_t)d + (size_t)c] = y / cnt;
        }
    }
    for (int32_t a = 0; a < nb; a++)
        for (int32_t c = 0; c < nb; c++) {
            double t = 0;
            for (int32_t e = 0; e < d; e++)
                t += mq[(size_t)a * (size_t)d + (size_t)e] * mk[(size_t)c * (size_t)d + (size_t)e];
            R[(size_t)a * (size_t)nb + (size_t)c] = p->sim == XF_SINKHORN_KK ? t : s * t;
        }
    if (p->mode == XF_SINKHORN_HARD || nb == 1) {
        uint8_t *mask = calloc((size_t)n * (size_t)n, 1);
        int32_t *sel = malloc(sizeof(int32_t) * (size_t)nb);
        for (int32_t a = 0; a < nb; a++) {
            for (int32_t c = 0; c < nb; c++)
                sel[c] = c == a;
            for (int32_t t = 0; t < p->k_s && t < nb - 1; t++) {
                int32_t best = -1;
                for (int32_t c = 0; c < nb; c++)
                    if (!sel[c] && (best < 0 || R[(size_t)a * (size_t)nb + (size_t)c] >
                                                    R[(size_t)a * (size_t)nb + (size_t)best]))
                        best = c;
                sel[best] = 1;
            }
            for (int32_t i = a * b; i < (a + 1) * b && i < n; i++)
                for (int32_t j = 0; j < n; j++)
                    mask[(size_t)i * (size_t)n + (size_t)j] = (uint8_t)sel[j / b];
        }
        xf_ref_attend(n, n, d, q, k, v, s, mask, NULL, out);
        free(mask);
        free(sel);
    } else {
        double *P = malloc(sizeof(double) * (size_t)nb * (size_t)nb);
        double *kk = malloc(sizeof(double) * 2u * (size_t)b * (size_t)d);
        double *vv = malloc(sizeof(double) * 2u * (size_t)b * (size_t)d);
        double *qd = to_d(q, (size_t)n * (size_t)d);
        for (size_t t = 0; t < (size_t)nb * (size_t)nb; t++)
            P[t] = R[t] / p->tau;
        for (int32_t it = 0; it < p->iters; it++) {
            for (int pass = 0; pass < 2; pass++)
                for (int32_t a = 0; a < nb; a++) {
                    double mx = -INFINITY, l = 0;
                    for (int32_t c = 0; c < nb; c++)
                        mx = fmax(mx, pass ? P[(size_t)c * (size_t)nb + (size_t)a]
                                           : P[(size_t)a * (size_t)nb + (size_t)c]);
                    for (int32_t c = 0; c < nb; c++)
                        l += exp((pass ? P[(size_t)c * (size_t)nb + (size_t)a]
                                       : P[(size_t)a * (size_t)nb + (size_t)c]) -
                                 mx);
                    for (int32_t c = 0; c < nb; c++)
                        *(pass ? &P[(size_t)c * (size_t)nb + (size_t)a]
                               : &P[(size_t)a * (size_t)nb + (size_t)c]) -= mx + log(l);
                }
        }
        for (size_t t = 0; t < (size_t)nb * (size_t)nb; t++)
            P[t] = exp(P[t]);
        for (int32_t a = 0; a < nb; a++) {
            int32_t r0 = a * b, r1 = r0 + b < n ? r0 + b : n, m = 0;
            for (int32_t j = r0; j < r1; j++, m++)
                for (int32_t c = 0; c < d; c++) {
                    kk[(size_t)m * (size_t)d + (size_t)c] = k[(size_t)j * (size_t)d + (size_t)c];
                    vv[(size_t)m * (size_t)d + (size_t)c] = v[(size_t)j * (size_t)d + (size_t)c];
                }
            for (int32_t t = 0; t < b; t++, m++)
                for (int32_t c = 0; c < d; c++) {
                    double sk = 0, sv = 0;
                    for (int32_t cb = 0; cb < nb; cb++)
                        if (cb * b + t < n) {
                            sk += P[(size_t)a * (size_t)nb + (size_t)cb] *
                                  k[(size_t)(cb * b + t) * (size_t)d + (size_t)c];
                            sv += P[(size_t)a * (size_t)nb + (size_t)cb] *
                                  v[(size_t)(cb * b + t) * (size_t)d + (size_t)c];
                        }
                    kk[(size_t)m * (size_t)d + (size_t)c] = sk;
                    vv[(size_t)m * (size_t)d + (size_t)c] = sv;
                }
            xf_ref_attend_d(r1 - r0, m, d, qd + (size_t)r0 * (size_t)d, kk, vv, s, NULL, NULL,
                            out + (size_t)r0 * (size_t)d);
        }
        free(P);
        free(kk);
        free(vv);
        free(qd);
    }
    free(mq);
    free(mk);
    free(R);
}

void xf_ref_odd_shapes(const xf_attn_vtbl *vt, const char *json, xf_ref_fn ref,
                       const void *weights, double tol)
{
    static const int32_t odd_lens[] = { 1, 2, 3, 7, 63, 64, 65, 257, 1000 };
    static const int32_t short_lens[] = { 3, 65, 1, 64, 7 };
    static const int32_t ds[] = { 32, 64, 40 };
    double e;

    for (int i = 0; i < 3; i++) {
        e = xf_ref_check(vt, json, ref, weights, 9, odd_lens, 3, ds[i], 1.0f, 2);
        print_message("# %s %s d=%d max err %.3g\n", vt->name, json, ds[i], e);
        assert_true(e <= tol);
    }
    e = xf_ref_check(vt, json, ref, weights, 5, short_lens, 12, 64, 1.0f, 0);
    assert_true(e <= tol);
    e = xf_ref_check(vt, json, ref, weights, 5, short_lens, 1, 40, 1.0f, 1);
    assert_true(e <= tol);
}

void xf_ref_edges(const xf_attn_vtbl *vt, const char *json, const void *weights)
{
    static const int32_t lens1[] = { 1, 0, 9 };
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[128];
    xf_rbatch_t *b = xf_rbatch_new(3, lens1, 2, 64, 1.0f, 3);
    size_t cnt = (size_t)b->n_tok * 2 * 64;

    assert_int_equal(xf_ref_parse(vt, json, params, err, sizeof(err)), 0);
    assert_int_equal(xf_ref_run(vt, params, b, 2, weights, NULL, NULL, NULL), 0);
    /* n = 1: the only key's value */
    for (int32_t head = 0; head < 2; head++)
        for (int32_t c = 0; c < 64; c++)
            assert_float_equal(b->out[(size_t)head * 64 + (size_t)c],
                               b->v[(size_t)head * (size_t)b->n_tok * 64 + (size_t)c], 1e-6);
    for (size_t i = 0; i < cnt; i++)
        b->q[i] *= 300.0f;
    assert_int_equal(xf_ref_run(vt, params, b, 2, weights, NULL, NULL, NULL), 0);
    for (size_t i = 0; i < cnt; i++)
        assert_true(isfinite(b->out[i]));
    memset(b->q, 0, cnt * sizeof(float));
    memset(b->k, 0, cnt * sizeof(float));
    assert_int_equal(xf_ref_run(vt, params, b, 2, weights, NULL, NULL, NULL), 0);
    for (size_t i = 0; i < cnt; i++)
        assert_true(isfinite(b->out[i]));
    xf_rbatch_free(b);
}

void xf_ref_dense(XF_REF_FN_ARGS)
{
    (void)p;
    (void)w;
    (void)layer;
    (void)head;
    xf_ref_attend(n, n, d, q, k, v, s, NULL, NULL, out);
}

void xf_ref_expect_parse_err(const xf_attn_vtbl *vt, const char *json, const char *key)
{
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[256] = "";

    assert_int_equal(xf_ref_parse(vt, json, params, err, sizeof(err)), XF_EPARAM);
    print_message("# %s -> %s\n", json, err);
    assert_non_null(strstr(err, key));
}
