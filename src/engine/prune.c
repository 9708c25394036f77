/* Structured pruning, part 1: importance scores and the per-layer selection (include/xformd/
 * prune.h). Heads by output-change ablation on a copy of the model's weight view whose output
 * projection lacks one head's columns; FFN units by |activation| × ‖W2 column‖ from the FFN
 * tap of the forward (ctx.h). Runs the ordinary forward in fp32; never touches the model
 * passed in (the ablation copies are views with their own prepared weights). One thread. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/forward.h>
#include <xformd/prune.h>

#include "engine/ctx.h"
#include "engine/diag.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/plan_internal.h"

#define PRUNE_BATCH 16     /* sequences per calibration forward */

void xf_prune_scores_free(xf_prune_scores_t *s)
{
    if (!s)
        return;
    for (int32_t l = 0; l < s->n_layer; l++) {
        if (s->head)
            free(s->head[l]);
        if (s->ffn)
            free(s->ffn[l]);
    }
    free(s->head);
    free(s->ffn);
    free(s->n_head);
    free(s->d_ff);
    free(s);
}

void xf_prune_keep_free(xf_prune_keep_t *k)
{
    if (!k)
        return;
    for (int32_t l = 0; l < k->n_layer; l++) {
        if (k->head)
            free(k->head[l]);
        if (k->ffn)
            free(k->ffn[l]);
    }
    free(k->head);
    free(k->ffn);
    free(k->n_head);
    free(k->n_ffn);
    free(k);
}

/* The calibration set packed into batches of up to PRUNE_BATCH sequences. */
typedef struct calib {
    int32_t n_batch;
    xf_batch_t *b;           /* [n_batch]; ids/cu_len point into the arrays below */
    int32_t *ids, *types, *cu;
    int64_t n_tokens;
    int32_t d_model;
    float *base;             /* [n_tokens][d_model] hidden states of the unmasked model */
    float *out;              /* [max batch tokens][d_model] scratch */
} calib_t;

static void calib_free(calib_t *c)
{
    free(c->b);
    free(c->ids);
    free(c->types);
    free(c->cu);
    free(c->base);
    free(c->out);
}

static int calib_init(calib_t *c, const xf_model_t *m, const xf_tokens_t *seqs, int32_t n_seq,
                      xf_diag_t *diag)
{
    const xf_model_info_t *mi = &m->info;
    int64_t n = 0, max_b = 0;

    memset(c, 0, sizeof *c);
    if (!seqs || n_seq < 1)
        return xf_diag_set(diag, -EINVAL, "prune: no calibration sequences");
    for (int32_t i = 0; i < n_seq; i++) {
        if (seqs[i].n < 1 || seqs[i].n > mi->max_positions)
            return xf_diag_set(diag, -EINVAL, "prune: calibration sequence %d: %d tokens "
                               "(want 1..%d)", i + 1, seqs[i].n, mi->max_positions);
        for (int32_t j = 0; j < seqs[i].n; j++)
            if (seqs[i].ids[j] < 0 || seqs[i].ids[j] >= mi->vocab_size)
                return xf_diag_set(diag, -EINVAL, "prune: calibration sequence %d: token id "
                                   "%d out of range", i + 1, seqs[i].ids[j]);
        n += seqs[i].n;
    }
    c->n_tokens = n;
    c->d_model = mi->d_model;
    c->n_batch = (n_seq + PRUNE_BATCH - 1) / PRUNE_BATCH;
    c->b = calloc((size_t)c->n_batch, sizeof *c->b);
    c->ids = malloc((size_t)n * sizeof *c->ids);
    c->types = malloc((size_t)n * sizeof *c->types);
    c->cu = malloc(((size_t)n_seq + (size_t)c->n_batch) * sizeof *c->cu);
    c->base = malloc((size_t)n * (size_t)mi->d_model * sizeof *c->base);
    if (!c->b || !c->ids || !c->types || !c->cu || !c->base)
        goto oom;
    {
        int64_t t = 0;
        int32_t *cu = c->cu;
        for (int32_t k = 0; k < c->n_batch; k++) {
            int32_t s0 = k * PRUNE_BATCH, s1 = s0 + PRUNE_BATCH < n_seq ? s0 + PRUNE_BATCH
                                                                         : n_seq;
            int64_t t0 = t;
            c->b[k].n_seq = s1 - s0;
            c->b[k].cu_len = cu;
            c->b[k].ids = c->ids + t0;
            c->b[k].type_ids = mi->type_vocab_size > 0 ? c->types + t0 : NULL;
            cu[0] = 0;
            for (int32_t i = s0; i < s1; i++) {
                for (int32_t j = 0; j < seqs[i].n; j++) {
                    c->ids[t] = seqs[i].ids[j];
                    c->types[t] = seqs[i].type_ids && mi->type_vocab_size > 0 &&
                                  seqs[i].type_ids[j] >= 0 &&
                                  seqs[i].type_ids[j] < mi->type_vocab_size
                                      ? seqs[i].type_ids[j] : 0;
                    t++;
                }
                cu[i - s0 + 1] = (int32_t)(t - t0);
            }
            if (t - t0 > max_b)
                max_b = t - t0;
            cu += s1 - s0 + 1;
        }
    }
    c->out = malloc((size_t)max_b * (size_t)mi->d_model * sizeof *c->out);
    if (!c->out)
        goto oom;
    return 0;
oom:
    calib_free(c);
    return xf_diag_set(diag, -ENOMEM, "prune: out of memory for the calibration set");
}

/* A view of m sharing its weights, in fp32 (no int8 copy), with its own prepared weights
 * (built at its first plan) and its own layer array so one layer's tensors can be swapped. */
static int view_init(xf_model_t *v, const xf_model_t *m)
{
    *v = *m;
    v->q8 = NULL;
    v->prep = NULL;
    v->prep_free = NULL;
    v->owned = (xf_owned_t){ 0 };
    v->map = NULL;
    v->layers = malloc((size_t)m->info.n_layer * sizeof *v->layers);
    if (!v->layers)
        return -ENOMEM;
    memcpy(v->layers, m->layers, (size_t)m->info.n_layer * sizeof *v->layers);
    return 0;
}

static void view_drop_prep(xf_model_t *v)
{
    if (v->prep && v->prep_free)
        v->prep_free(v->prep);
    v->prep = NULL;
    v->prep_free = NULL;
}

static void view_deinit(xf_model_t *v)
{
    view_drop_prep(v);
    free(v->layers);
    v->layers = NULL;
}

/* FFN tap: Σ_t |a_{t,u}| per layer and unit (double sums: thousands of tokens). */
typedef struct ffn_acc {
    double **sum;            /* [n_layer][d_ff] */
} ffn_acc_t;

static void ffn_tap(void *user, int32_t layer, const float *act, int32_t n_tokens, int32_t d_ff)
{
    ffn_acc_t *a = user;
    double *s = a->sum[layer];
    for (int32_t t = 0; t < n_tokens; t++)
        for (int32_t u = 0; u < d_ff; u++)
            s[u] += fabs((double)act[(size_t)t * (size_t)d_ff + (size_t)u]);
}

/* Run every calibration batch on v. base_out: store the hidden states as the baseline;
 * otherwise return Σ_t ‖H'_t − H_t‖₂ in *change. */
static int run_all(xf_ctx_t *ctx, const xf_model_t *v, calib_t *c, int base_out, double *change,
                   xf_diag_t *diag)
{
    int64_t off = 0;
    double ch = 0;

    for (int32_t k = 0; k < c->n_batch; k++) {
        const xf_batch_t *b = &c->b[k];
        const int32_t nt = b->cu_len[b->n_seq];
        float *h = base_out ? c->base + off * c->d_model : c->out;
        xf_output_t o = { 0 };
        int rc;

        o.pooling = XF_POOL_NONE;
        o.normalize = 0;
        o.hidden = h;
        rc = xf_run(ctx, v, b, &o, diag);
        if (rc < 0)
            return rc;
        if (!base_out) {
            const float *h0 = c->base + off * c->d_model;
            for (int32_t t = 0; t < nt; t++) {
                double s = 0;
                for (int32_t j = 0; j < c->d_model; j++) {
                    double d = (double)h[(size_t)t * (size_t)c->d_model + (size_t)j] -
                               (double)h0[(size_t)t * (size_t)c->d_model + (size_t)j];
                    s += d * d;
                }
                ch += sqrt(s);
            }
        }
        off += nt;
    }
    if (change)
        *change = ch;
    return 0;
}

/* Divide x[0..n) by its L2 norm (unless 0). */
static void l2_normalise(float *x, int32_t n)
{
    double s = 0;
    for (int32_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    if (s > 0) {
        double r = 1.0 / sqrt(s);
        for (int32_t i = 0; i < n; i++)
            x[i] = (float)((double)x[i] * r);
    }
}

static xf_prune_scores_t *scores_new(const xf_model_t *m)
{
    const int32_t L = m->info.n_layer;
    xf_prune_scores_t *s = calloc(1, sizeof *s);

    if (!s)
        return NULL;
    s->n_layer = L;
    s->n_head = calloc((size_t)L, sizeof *s->n_head);
    s->d_ff = calloc((size_t)L, sizeof *s->d_ff);
    s->head = calloc((size_t)L, sizeof *s->head);
    s->ffn = calloc((size_t)L, sizeof *s->ffn);
    if (!s->n_head || !s->d_ff || !s->head || !s->ffn)
        goto oom;
    for (int32_t l = 0; l < L; l++) {
        s->n_head[l] = m->layers[l].n_head;
        s->d_ff[l] = m->layers[l].d_ff;
        s->head[l] = calloc((size_t)s->n_head[l], sizeof **s->head);
        s->ffn[l] = calloc((size_t)s->d_ff[l], sizeof **s->ffn);
        if (!s->head[l] || !s->ffn[l])
            goto oom;
    }
    return s;
oom:
    xf_prune_scores_free(s);
    return NULL;
}

/* An ablation view's prepared weights: the base view's (shared, not freed here), except layer
 * `layer`'s output projection, prepared again from the masked copy — packing one [D][da]
 * matrix per ablated head instead of the whole model. p is first: &a->p == a. */
typedef struct ab_prep {
    xf_prep_t p;
    int32_t layer;
} ab_prep_t;

static void ab_prep_free(void *ptr)
{
    ab_prep_t *a = ptr;
    if (!a)
        return;
    xf_gemm_w_deinit(&a->p.layers[a->layer].o);
    free(a->p.layers);
    free(a);
}

static int ab_prep_make(xf_model_t *v2, const xf_prep_t *base, int32_t l, const float *o,
                        int32_t D, int32_t da)
{
    ab_prep_t *a = malloc(sizeof *a);
    int rc;
    if (!a)
        return -ENOMEM;
    a->p = *base;
    a->layer = l;
    a->p.layers = malloc((size_t)base->n_layer * sizeof *a->p.layers);
    if (!a->p.layers) {
        free(a);
        return -ENOMEM;
    }
    memcpy(a->p.layers, base->layers, (size_t)base->n_layer * sizeof *a->p.layers);
    rc = xf_gemm_w_init(&a->p.layers[l].o, o, D, da);
    if (rc < 0) {
        free(a->p.layers);
        free(a);
        return rc;
    }
    v2->prep = &a->p;
    v2->prep_free = ab_prep_free;
    return 0;
}

/* Heads by ablation: layer l's output projection with head h's columns zeroed, in a second
 * view sharing the base view's prepared weights for everything else. */
static int score_heads(xf_ctx_t *ctx, xf_model_t *v, const xf_model_t *m, calib_t *c,
                       xf_prune_scores_t *s, xf_diag_t *diag)
{
    const xf_prep_t *base = NULL;
    xf_model_t v2;
    int rc = xf_plan_prep_get(v, &base);

    if (rc < 0)
        return xf_diag_set(diag, rc, "prune: cannot prepare the weights");
    if (view_init(&v2, v) < 0)
        return xf_diag_set(diag, -ENOMEM, "prune: out of memory");
    for (int32_t l = 0; l < m->info.n_layer && rc == 0; l++) {
        const xf_layer_t *L = &m->layers[l];
        const int32_t D = L->o_w.rows, da = L->o_w.cols, dh = L->d_head;
        float *o = malloc((size_t)D * (size_t)da * sizeof *o);
        if (!o) {
            rc = xf_diag_set(diag, -ENOMEM, "prune: out of memory");
            break;
        }
        for (int32_t h = 0; h < L->n_head && rc == 0; h++) {
            double ch = 0;
            memcpy(o, L->o_w.data, (size_t)D * (size_t)da * sizeof *o);
            for (int32_t r = 0; r < D; r++)
                memset(o + (size_t)r * (size_t)da + (size_t)h * (size_t)dh, 0,
                       (size_t)dh * sizeof *o);
            v2.layers[l].o_w.data = o;
            rc = ab_prep_make(&v2, base, l, o, D, da);
            if (rc < 0) {
                xf_diag_set(diag, rc, "prune: cannot prepare the ablated weights");
                break;
            }
            rc = run_all(ctx, &v2, c, 0, &ch, diag);
            view_drop_prep(&v2);
            s->head[l][h] = (float)(ch / (double)c->n_tokens);
        }
        v2.layers[l].o_w = L->o_w;
        free(o);
    }
    view_deinit(&v2);
    return rc;
}

int xf_prune_score(const xf_model_t *m, const xf_tokens_t *seqs, int32_t n_seq, int n_threads,
                   xf_prune_scores_t **out, xf_diag_t *diag)
{
    xf_ctx_opts_t co = { .n_threads = n_threads };
    xf_prune_scores_t *s = NULL;
    xf_ctx_t *ctx = NULL;
    xf_model_t v;
    calib_t c;
    ffn_acc_t acc = { 0 };
    int rc;

    if (!m || !out)
        return xf_diag_set(diag, -EINVAL, "prune: NULL argument");
    rc = calib_init(&c, m, seqs, n_seq, diag);
    if (rc < 0)
        return rc;
    memset(&v, 0, sizeof v);
    if (view_init(&v, m) < 0 || !(s = scores_new(m)) ||
        !(acc.sum = calloc((size_t)m->info.n_layer, sizeof *acc.sum))) {
        rc = xf_diag_set(diag, -ENOMEM, "prune: out of memory");
        goto done;
    }
    for (int32_t l = 0; l < m->info.n_layer; l++)
        if (!(acc.sum[l] = calloc((size_t)m->layers[l].d_ff, sizeof **acc.sum))) {
            rc = xf_diag_set(diag, -ENOMEM, "prune: out of memory");
            goto done;
        }
    rc = xf_ctx_create(&co, &ctx);
    if (rc < 0) {
        xf_diag_set(diag, rc, "prune: cannot create a context");
        goto done;
    }
    s->n_tokens = c.n_tokens;

    /* Baseline pass: hidden states and the FFN activations. */
    xf_ctx_set_ffn_tap(ctx, ffn_tap, &acc);
    rc = run_all(ctx, &v, &c, 1, NULL, diag);
    xf_ctx_set_ffn_tap(ctx, NULL, NULL);
    if (rc < 0)
        goto done;
    for (int32_t l = 0; l < m->info.n_layer; l++) {
        const xf_layer_t *L = &m->layers[l];
        const int32_t D = L->ff2_w.rows, F = L->d_ff;
        for (int32_t u = 0; u < F; u++) {
            double w = 0;
            for (int32_t r = 0; r < D; r++) {
                double x = L->ff2_w.data[(size_t)r * (size_t)F + (size_t)u];
                w += x * x;
            }
            s->ffn[l][u] = (float)(acc.sum[l][u] / (double)c.n_tokens * sqrt(w));
        }
    }
    rc = score_heads(ctx, &v, m, &c, s, diag);
    if (rc < 0)
        goto done;
    for (int32_t l = 0; l < m->info.n_layer; l++) {
        l2_normalise(s->head[l], s->n_head[l]);
        l2_normalise(s->ffn[l], s->d_ff[l]);
    }
    *out = s;
    s = NULL;
done:
    if (acc.sum)
        for (int32_t l = 0; l < m->info.n_layer; l++)
            free(acc.sum[l]);
    free(acc.sum);
    xf_ctx_free(ctx);
    view_deinit(&v);
    xf_prune_scores_free(s);
    calib_free(&c);
    return rc;
}

/* Indices of the k largest of x[0..n) (ties: lower index first), written ascending. */
static void top_k(const float *x, int32_t n, int32_t k, int32_t *idx, unsigned char *taken)
{
    memset(taken, 0, (size_t)n);
    for (int32_t j = 0; j < k; j++) {
        int32_t best = -1;
        for (int32_t i = 0; i < n; i++)
            if (!taken[i] && (best < 0 || x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))))
                best = i;
        taken[best] = 1;
    }
    for (int32_t i = 0, j = 0; i < n; i++)
        if (taken[i])
            idx[j++] = i;
}

int xf_prune_select(const xf_prune_scores_t *s, const int32_t *heads, const int32_t *ffn,
                    xf_prune_keep_t **out, xf_diag_t *diag)
{
    xf_prune_keep_t *k;
    unsigned char *taken = NULL;
    int32_t max_n = 1;

    if (!s || !heads || !ffn || !out)
        return xf_diag_set(diag, -EINVAL, "prune: NULL argument");
    for (int32_t l = 0; l < s->n_layer; l++) {
        if (heads[l] < 1 || heads[l] > s->n_head[l])
            return xf_diag_set(diag, -EINVAL, "prune: layer %d: cannot keep %d heads (it has "
                               "%d; keep 1..%d)", l, heads[l], s->n_head[l], s->n_head[l]);
        if (ffn[l] < 1 || ffn[l] > s->d_ff[l])
            return xf_diag_set(diag, -EINVAL, "prune: layer %d: cannot keep %d FFN units (it "
                               "has %d; keep 1..%d)", l, ffn[l], s->d_ff[l], s->d_ff[l]);
        if (s->d_ff[l] > max_n)
            max_n = s->d_ff[l];
        if (s->n_head[l] > max_n)
            max_n = s->n_head[l];
    }
    k = calloc(1, sizeof *k);
    if (!k)
        return xf_diag_set(diag, -ENOMEM, "prune: out of memory");
    k->n_layer = s->n_layer;
    k->n_head = calloc((size_t)s->n_layer, sizeof *k->n_head);
    k->n_ffn = calloc((size_t)s->n_layer, sizeof *k->n_ffn);
    k->head = calloc((size_t)s->n_layer, sizeof *k->head);
    k->ffn = calloc((size_t)s->n_layer, sizeof *k->ffn);
    taken = malloc((size_t)max_n);
    if (!k->n_head || !k->n_ffn || !k->head || !k->ffn || !taken)
        goto oom;
    for (int32_t l = 0; l < s->n_layer; l++) {
        k->head[l] = malloc((size_t)heads[l] * sizeof **k->head);
        k->ffn[l] = malloc((size_t)ffn[l] * sizeof **k->ffn);
        if (!k->head[l] || !k->ffn[l])
            goto oom;
        k->n_head[l] = heads[l];
        k->n_ffn[l] = ffn[l];
        top_k(s->head[l], s->n_head[l], heads[l], k->head[l], taken);
        top_k(s->ffn[l], s->d_ff[l], ffn[l], k->ffn[l], taken);
    }
    free(taken);
    *out = k;
    return 0;
oom:
    free(taken);
    xf_prune_keep_free(k);
    return xf_diag_set(diag, -ENOMEM, "prune: out of memory");
}
