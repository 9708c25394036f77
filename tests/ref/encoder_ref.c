/* Test-side reference encoder: random-weight models built by filling struct xf_model, a plain
 * padded BERT forward in double with explicit padding masks, and a reference attention with
 * explicit additive masks. Written for obviousness; shares no code with the engine. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "encoder_ref.h"
#include "../helpers/xf_test.h"

void xf_ref_model_opts_init(xf_ref_model_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->arch = XF_ARCH_BERT;
    o->n_layer = 2;
    o->d_model = 32;
    o->vocab_size = 100;
    o->max_positions = 64;
    o->type_vocab_size = 2;
    for (int l = 0; l < XF_REF_MAX_LAYERS; l++) {
        o->n_head[l] = 4;
        o->d_head[l] = 8;
        o->d_ff[l] = 64;
    }
    o->act = XF_ACT_GELU;
    o->ln_eps = 1e-12f;
    o->head = XF_HEAD_NONE;
    o->has_pooler = 1;
    o->pooling = XF_POOL_CLS;
    o->w_scale = 0.08f;
}

/* Takes p: on failure frees it. */
static int own(xf_model_t *m, void *p)
{
    return xf_owned_add(&m->owned, p);
}

/* Fill w with rows × cols values: uniform noise around base. */
static int mkw(xf_model_t *m, xf_w_t *w, int32_t rows, int32_t cols, uint64_t *seed, float base,
               float scale)
{
    size_t n = (size_t)rows * (size_t)cols;
    float *d = malloc(n * sizeof *d);

    if (own(m, d))
        return -ENOMEM;
    xf_test_fill(d, n, (*seed)++, -scale, scale);
    for (size_t i = 0; i < n; i++)
        d[i] += base;
    w->data = d;
    w->rows = rows;
    w->cols = cols;
    return 0;
}

void xf_ref_model_free(xf_model_t *m)
{
    if (!m)
        return;
    if (m->prep_free)
        m->prep_free(m->prep);
    xf_owned_free(&m->owned);
    free(m->layers);
    free(m->layer_info);
    free(m);
}

int xf_ref_model_create(const xf_ref_model_opts_t *o, xf_model_t **out)
{
    xf_model_t *m = calloc(1, sizeof *m);
    uint64_t seed = o->seed * 1000003u + 17;
    float s = o->w_scale > 0 ? o->w_scale : 0.08f;
    int32_t D = o->d_model;
    int rc = 0;

    if (!m)
        return -ENOMEM;
    m->layers = calloc((size_t)o->n_layer + 1, sizeof *m->layers);
    m->layer_info = calloc((size_t)o->n_layer + 1, sizeof *m->layer_info);
    if (!m->layers || !m->layer_info) {
        xf_ref_model_free(m);
        return -ENOMEM;
    }
    m->info.name = "ref";
    m->info.dir = "";
    m->info.arch = o->arch;
    m->info.arch_name = o->arch == XF_ARCH_ROBERTA      ? "RobertaModel"
                        : o->arch == XF_ARCH_DISTILBERT ? "DistilBertModel"
                                                        : "BertModel";
    m->info.n_layer = o->n_layer;
    m->info.d_model = D;
    m->info.vocab_size = o->vocab_size;
    m->info.max_positions = o->max_positions;
    m->info.type_vocab_size = o->type_vocab_size;
    m->info.position_offset = o->position_offset;
    m->info.layers = m->layer_info;
    m->info.act = o->act;
    m->info.ln_eps = o->ln_eps;
    m->info.pre_ln = o->pre_ln;
    m->info.head = o->head;
    m->info.n_labels = o->head != XF_HEAD_NONE ? o->n_labels : 0;
    m->info.has_pooler = o->has_pooler;
    m->info.pooling = o->pooling;
    m->info.normalize = o->normalize;
    m->info.file_dtype = "F32";

    rc |= mkw(m, &m->word_emb, o->vocab_size, D, &seed, 0, 1.0f);
    rc |= mkw(m, &m->pos_emb, o->max_positions + o->position_offset, D, &seed, 0, 0.5f);
    if (o->type_vocab_size > 0)
        rc |= mkw(m, &m->type_emb, o->type_vocab_size, D, &seed, 0, 0.5f);
    if (!o->pre_ln) {
        rc |= mkw(m, &m->emb_ln_g, 1, D, &seed, 1.0f, 0.2f);
        rc |= mkw(m, &m->emb_ln_b, 1, D, &seed, 0, 0.2f);
    } else {
        rc |= mkw(m, &m->final_ln_g, 1, D, &seed, 1.0f, 0.2f);
        rc |= mkw(m, &m->final_ln_b, 1, D, &seed, 0, 0.2f);
    }
    for (int32_t l = 0; l < o->n_layer && !rc; l++) {
        xf_layer_t *L = &m->layers[l];
        int32_t da = o->n_head[l] * o->d_head[l], ff = o->d_ff[l];
        L->n_head = o->n_head[l];
        L->d_head = o->d_head[l];
        L->d_ff = ff;
        m->layer_info[l].n_head = L->n_head;
        m->layer_info[l].d_head = L->d_head;
        m->layer_info[l].d_ff = ff;
        /* Q and K a little larger, so that attention is not uniform. */
        rc |= mkw(m, &L->q_w, da, D, &seed, 0, 3 * s);
        rc |= mkw(m, &L->q_b, 1, da, &seed, 0, s);
        rc |= mkw(m, &L->k_w, da, D, &seed, 0, 3 * s);
        rc |= mkw(m, &L->k_b, 1, da, &seed, 0, s);
        rc |= mkw(m, &L->v_w, da, D, &seed, 0, s * 2);
        rc |= mkw(m, &L->v_b, 1, da, &seed, 0, s);
        rc |= mkw(m, &L->o_w, D, da, &seed, 0, s * 2);
        rc |= mkw(m, &L->o_b, 1, D, &seed, 0, s);
        rc |= mkw(m, &L->ln1_g, 1, D, &seed, 1.0f, 0.2f);
        rc |= mkw(m, &L->ln1_b, 1, D, &seed, 0, 0.2f);
        rc |= mkw(m, &L->ff1_w, ff, D, &seed, 0, s * 2);
        rc |= mkw(m, &L->ff1_b, 1, ff, &seed, 0, s);
        rc |= mkw(m, &L->ff2_w, D, ff, &seed, 0, s * 2);
        rc |= mkw(m, &L->ff2_b, 1, D, &seed, 0, s);
        rc |= mkw(m, &L->ln2_g, 1, D, &seed, 1.0f, 0.2f);
        rc |= mkw(m, &L->ln2_b, 1, D, &seed, 0, 0.2f);
    }
    if (o->has_pooler) {
        rc |= mkw(m, &m->pool_w, D, D, &seed, 0, 2 * s);
        rc |= mkw(m, &m->pool_b, 1, D, &seed, 0, s);
    }
    if (o->head == XF_HEAD_ROBERTA || o->head == XF_HEAD_DISTILBERT) {
        rc |= mkw(m, &m->head_dense_w, D, D, &seed, 0, 2 * s);
        rc |= mkw(m, &m->head_dense_b, 1, D, &seed, 0, s);
    }
    if (o->head != XF_HEAD_NONE && o->n_labels > 0) {
        rc |= mkw(m, &m->cls_w, o->n_labels, D, &seed, 0, 2 * s);
        rc |= mkw(m, &m->cls_b, 1, o->n_labels, &seed, 0, s);
    }
    if (rc) {
        xf_ref_model_free(m);
        return -ENOMEM;
    }
    *out = m;
    return 0;
}

/* ---- math ------------------------------------------------------------------------------- */

double xf_ref_act(enum xf_act a, double x)
{
    switch (a) {
    case XF_ACT_RELU:
        return x > 0 ? x : 0;
    case XF_ACT_GELU_TANH:
        return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    default:
        return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    }
}

void xf_ref_layernorm(const double *x, int32_t d, const float *g, const float *b, double eps,
                      double *y)
{
    double mean = 0, var = 0;

    for (int32_t i = 0; i < d; i++)
        mean += x[i];
    mean /= d;
    for (int32_t i = 0; i < d; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= d;
    for (int32_t i = 0; i < d; i++)
        y[i] = (x[i] - mean) / sqrt(var + eps) * g[i] + b[i];
}

/* y[r] = x[r] · Wᵀ + b for rows r < n; W is [out][in]. */
static void ref_linear(const double *x, int32_t n, int32_t in, const xf_w_t *w, const xf_w_t *b,
                       double *y)
{
    int32_t out = w->rows;

    for (int32_t r = 0; r < n; r++)
        for (int32_t o = 0; o < out; o++) {
            double s = b && b->data ? b->data[o] : 0;
            for (int32_t i = 0; i < in; i++)
                s += x[(size_t)r * in + i] * w->data[(size_t)o * in + i];
            y[(size_t)r * out + o] = s;
        }
}

void xf_ref_attention(int32_t nq, int32_t nk, int32_t dqk, int32_t dv, const double *q,
                      int32_t ldq, const double *k, int32_t ldk, const double *v, int32_t ldv,
                      double scale, const double *bias, double *out, int32_t ldo)
{
    double *p = malloc((size_t)(nk > 0 ? nk : 1) * sizeof *p);

    if (!p)
        abort();
    for (int32_t i = 0; i < nq; i++) {
        double mx = -INFINITY, sum = 0;
        for (int32_t j = 0; j < nk; j++) {
            double s = 0;
            for (int32_t c = 0; c < dqk; c++)
                s += q[(size_t)i * ldq + c] * k[(size_t)j * ldk + c];
            p[j] = s * scale + (bias ? bias[(size_t)i * nk + j] : 0);
            if (p[j] > mx)
                mx = p[j];
        }
        for (int32_t j = 0; j < nk; j++) {
            p[j] = exp(p[j] - mx);   /* NaN for every j when mx = -inf, as torch */
            sum += p[j];
        }
        for (int32_t c = 0; c < dv; c++) {
            double a = 0;
            for (int32_t j = 0; j < nk; j++)
                a += p[j] * v[(size_t)j * ldv + c];
            out[(size_t)i * ldo + c] = a / sum;
        }
    }
    free(p);
}

/* Attention of one padded sequence (Lp rows, n valid) in double, for one layer. */
static void ref_attention_layer(const xf_layer_t *L, const double *x, int32_t Lp, int32_t n,
                                int32_t D, double *att)
{
    int32_t h = L->n_head, dh = L->d_head, da = h * dh;
    double *q = malloc((size_t)Lp * da * sizeof *q);
    double *k = malloc((size_t)Lp * da * sizeof *k);
    double *v = malloc((size_t)Lp * da * sizeof *v);
    double *p = malloc((size_t)Lp * sizeof *p);

    if (!q || !k || !v || !p)
        abort();
    ref_linear(x, Lp, D, &L->q_w, &L->q_b, q);
    ref_linear(x, Lp, D, &L->k_w, &L->k_b, k);
    ref_linear(x, Lp, D, &L->v_w, &L->v_b, v);
    for (int32_t hh = 0; hh < h; hh++)
        for (int32_t i = 0; i < Lp; i++) {
            double mx = -INFINITY, sum = 0;
            for (int32_t j = 0; j < Lp; j++) {
                double s = 0;
                /* The explicit padding mask: padded keys are excluded. */
                if (j >= n) {
                    p[j] = -INFINITY;
                    continue;
                }
                for (int32_t c = 0; c < dh; c++)
                    s += q[(size_t)i * da + hh * dh + c] * k[(size_t)j * da + hh * dh + c];
                p[j] = s / sqrt((double)dh);
                if (p[j] > mx)
                    mx = p[j];
            }
            for (int32_t j = 0; j < Lp; j++) {
                p[j] = j < n ? exp(p[j] - mx) : 0;
                sum += p[j];
            }
            for (int32_t c = 0; c < dh; c++) {
                double a = 0;
                for (int32_t j = 0; j < Lp; j++)
                    a += p[j] * v[(size_t)j * da + hh * dh + c];
                att[(size_t)i * da + hh * dh + c] = a / sum;
            }
        }
    free(q);
    free(k);
    free(v);
    free(p);
}

/* One layer on a padded sequence, in place on x [Lp][D]. */
static void ref_layer(const xf_model_t *m, const xf_layer_t *L, double *x, int32_t Lp,
                      int32_t n)
{
    int32_t D = m->info.d_model, da = L->n_head * L->d_head, ff = L->d_ff;
    double eps = m->info.ln_eps;
    double *y = malloc((size_t)Lp * D * sizeof *y);
    double *att = malloc((size_t)Lp * da * sizeof *att);
    double *pr = malloc((size_t)Lp * D * sizeof *pr);
    double *f1 = malloc((size_t)Lp * ff * sizeof *f1);
    double *t = malloc((size_t)D * sizeof *t);

    if (!y || !att || !pr || !f1 || !t)
        abort();
    if (m->info.pre_ln) {
        for (int32_t r = 0; r < Lp; r++)
            xf_ref_layernorm(x + (size_t)r * D, D, L->ln1_g.data, L->ln1_b.data, eps,
                             y + (size_t)r * D);
        ref_attention_layer(L, y, Lp, n, D, att);
        ref_linear(att, Lp, da, &L->o_w, &L->o_b, pr);
        for (size_t i = 0; i < (size_t)Lp * D; i++)
            x[i] += pr[i];
        for (int32_t r = 0; r < Lp; r++)
            xf_ref_layernorm(x + (size_t)r * D, D, L->ln2_g.data, L->ln2_b.data, eps,
                             y + (size_t)r * D);
        ref_linear(y, Lp, D, &L->ff1_w, &L->ff1_b, f1);
        for (size_t i = 0; i < (size_t)Lp * ff; i++)
            f1[i] = xf_ref_act(m->info.act, f1[i]);
        ref_linear(f1, Lp, ff, &L->ff2_w, &L->ff2_b, pr);
        for (size_t i = 0; i < (size_t)Lp * D; i++)
            x[i] += pr[i];
    } else {
        ref_attention_layer(L, x, Lp, n, D, att);
        ref_linear(att, Lp, da, &L->o_w, &L->o_b, pr);
        for (int32_t r = 0; r < Lp; r++) {
            for (int32_t i = 0; i < D; i++)
                t[i] = x[(size_t)r * D + i] + pr[(size_t)r * D + i];
            xf_ref_layernorm(t, D, L->ln1_g.data, L->ln1_b.data, eps, x + (size_t)r * D);
        }
        ref_linear(x, Lp, D, &L->ff1_w, &L->ff1_b, f1);
        for (size_t i = 0; i < (size_t)Lp * ff; i++)
            f1[i] = xf_ref_act(m->info.act, f1[i]);
        ref_linear(f1, Lp, ff, &L->ff2_w, &L->ff2_b, pr);
        for (int32_t r = 0; r < Lp; r++) {
            for (int32_t i = 0; i < D; i++)
                t[i] = x[(size_t)r * D + i] + pr[(size_t)r * D + i];
            xf_ref_layernorm(t, D, L->ln2_g.data, L->ln2_b.data, eps, x + (size_t)r * D);
        }
    }
    free(y);
    free(att);
    free(pr);
    free(f1);
    free(t);
}

int xf_ref_forward(const xf_model_t *m, int32_t n_seq, const int32_t *cu_len,
                   const int32_t *ids, const int32_t *type_ids, enum xf_pooling pooling,
                   int normalize, float *hidden, float *pooled, float *logits)
{
    int32_t D = m->info.d_model, Lp = 0;
    double eps = m->info.ln_eps;
    double *x, *v, *w;

    for (int32_t b = 0; b < n_seq; b++)
        if (cu_len[b + 1] - cu_len[b] > Lp)
            Lp = cu_len[b + 1] - cu_len[b];
    x = malloc(((size_t)Lp + 1) * D * sizeof *x);
    v = malloc((size_t)D * sizeof *v);
    w = malloc((size_t)D * sizeof *w);
    if (!x || !v || !w) {
        free(x);
        free(v);
        free(w);
        return -ENOMEM;
    }
    for (int32_t b = 0; b < n_seq; b++) {
        int32_t n = cu_len[b + 1] - cu_len[b], c0 = cu_len[b];
        /* Embeddings of the padded sequence: pad tokens are id 0, type 0, positions on. */
        for (int32_t t = 0; t < Lp; t++) {
            int32_t id = t < n ? ids[c0 + t] : 0;
            int32_t ty = t < n && type_ids ? type_ids[c0 + t] : 0;
            int32_t pos = t + m->info.position_offset;
            for (int32_t i = 0; i < D; i++) {
                double e = (double)m->word_emb.data[(size_t)id * D + i] +
                           m->pos_emb.data[(size_t)pos * D + i];
                if (m->type_emb.data)
                    e += m->type_emb.data[(size_t)ty * D + i];
                v[i] = e;
            }
            if (m->emb_ln_g.data)
                xf_ref_layernorm(v, D, m->emb_ln_g.data, m->emb_ln_b.data, eps,
                                 x + (size_t)t * D);
            else
                memcpy(x + (size_t)t * D, v, (size_t)D * sizeof *v);
        }
        for (int32_t l = 0; l < m->info.n_layer; l++)
            ref_layer(m, &m->layers[l], x, Lp, n);
        if (m->info.pre_ln && m->final_ln_g.data)
            for (int32_t t = 0; t < Lp; t++) {
                memcpy(v, x + (size_t)t * D, (size_t)D * sizeof *v);
                xf_ref_layernorm(v, D, m->final_ln_g.data, m->final_ln_b.data, eps,
                                 x + (size_t)t * D);
            }
        if (hidden)
            for (size_t i = 0; i < (size_t)n * D; i++)
                hidden[(size_t)c0 * D + i] = (float)x[i];
        if (pooled) {
            if (pooling == XF_POOL_MEAN) {
                for (int32_t i = 0; i < D; i++) {
                    double s = 0;
                    for (int32_t t = 0; t < n; t++)   /* padding excluded from the mean */
                        s += x[(size_t)t * D + i];
                    v[i] = s / n;
                }
            } else if (pooling == XF_POOL_POOLER) {
                ref_linear(x, 1, D, &m->pool_w, &m->pool_b, v);
                for (int32_t i = 0; i < D; i++)
                    v[i] = tanh(v[i]);
            } else {
                memcpy(v, x, (size_t)D * sizeof *v);
            }
            if (normalize) {
                double s = 0;
                for (int32_t i = 0; i < D; i++)
                    s += v[i] * v[i];
                s = sqrt(s) > 1e-12 ? sqrt(s) : 1e-12;
                for (int32_t i = 0; i < D; i++)
                    v[i] /= s;
            }
            for (int32_t i = 0; i < D; i++)
                pooled[(size_t)b * D + i] = (float)v[i];
        }
        if (logits) {
            int32_t nl = m->cls_w.rows;
            double *lg = x + (size_t)Lp * D;   /* spare row */
            if (m->info.head == XF_HEAD_BERT) {
                ref_linear(x, 1, D, &m->pool_w, &m->pool_b, w);
                for (int32_t i = 0; i < D; i++)
                    w[i] = tanh(w[i]);
            } else {
                ref_linear(x, 1, D, &m->head_dense_w, &m->head_dense_b, w);
                for (int32_t i = 0; i < D; i++)
                    w[i] = m->info.head == XF_HEAD_DISTILBERT ? (w[i] > 0 ? w[i] : 0)
                                                              : tanh(w[i]);
            }
            ref_linear(w, 1, D, &m->cls_w, &m->cls_b, lg);
            for (int32_t i = 0; i < nl; i++)
                logits[(size_t)b * nl + i] = (float)lg[i];
        }
    }
    free(x);
    free(v);
    free(w);
    return 0;
}
