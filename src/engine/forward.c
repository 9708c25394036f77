/* The packed forward pass (xf_forward, xf_run): runs a plan's op list — embeddings, per layer
 * QKV GEMM, head split, attention runs (state, prepare, forward, state update), output
 * projection, residual + LayerNorm (inside the projection's op from XF_FUSE_ROWS tokens per
 * thread on: op_fused), FFN with fused bias + activation, FFN2 and its residual + LayerNorm
 * (likewise), then pooling, pooler, classifier and L2 norm — inside ONE xf_pool_run with
 * one barrier after every op and none inside (ggml style, fwd_thread), except after an op the
 * plan marks no_barrier (plan_internal.h: each thread keeps its rows into the next op). Never
 * allocates: every tensor lives in the context's arena at the plan's offsets. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "engine/ctx.h"
#include "engine/diag.h"
#include "engine/kernels/qgemm.h"
#include "engine/model.h"
#include "engine/plan_internal.h"

typedef struct fwd_task {
    const xf_ctx_t *c;
    const xf_model_t *m;
    const xf_plan_t *p;
    const xf_batch_t *batch;
    const xf_kernels_t *K;
    const xf_qkernels_t *Q;    /* int8 kernels (model.quantize = int8) */
    const int32_t *types;      /* token types for the embedding, or NULL */
    float *pooled, *hidden, *logits;
    enum xf_pooling pooling;
    int normalize;
    atomic_int err;
    atomic_int nonfinite;
    atomic_int stopped_at;     /* layers done when the progress callback stopped the forward */
    double t_start;            /* profiling (c->prof_on): wall clock at the pool start */
} fwd_task_t;

static float *tens(const fwd_task_t *T, int32_t i)
{
    return i < 0 ? NULL : (float *)((char *)T->c->arena + T->p->t[i].offset);
}

static void set_err(fwd_task_t *T, int rc)
{
    int zero = 0;
    atomic_compare_exchange_strong(&T->err, &zero, rc);
}

static enum xf_epilogue act_epi(enum xf_act a)
{
    switch (a) {
    case XF_ACT_GELU_TANH:
        return XF_EPI_BIAS_GELU_TANH;
    case XF_ACT_RELU:
        return XF_EPI_BIAS_RELU;
    default:
        return XF_EPI_BIAS_GELU;
    }
}

/* y = epi(x·Wᵀ + b); an absent bias is a zero vector, so the activation still applies. */
static void linear(const fwd_task_t *T, const xf_gemm_w_t *w, int32_t rows, const float *x,
                   int32_t ldx, const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                   int ith, int nth)
{
    if (!bias && epi != XF_EPI_NONE)
        bias = T->p->prep->zeros;
    T->K->linear(w, rows, x, ldx, bias, epi, y, ldy, ith, nth);
}

/* int8 models: rows [r0, r1) of x (k wide) quantised per token into the activation buffer
 * q8 of the plan (a Linear op's ws). */
static void quant_rows(const fwd_task_t *T, int32_t q8, const float *x, int32_t k, int r0,
                       int r1)
{
    uint8_t *act = (uint8_t *)tens(T, q8);
    T->Q->quant_rows(r0, r1, k, x, k, act, xf_qgemm_ldq(k),
                     (float *)(act + xf_qgemm_alpha_offset(T->p->n_tokens, k)));
}

/* int8 models (model.quantize = int8, kernels/qgemm.h), XF_OP_Q8: the rows of in0 quantised
 * per token into out (the next Linear op's ws), rows split across threads. k is the input
 * width of the Linear op it feeds (o->which). (QKV's and FFN1's inputs are quantised by the
 * embedding or LayerNorm op that writes them: aux.) */
static void op_q8(const fwd_task_t *T, const xf_plan_op_t *o, int ith, int nth)
{
    const xf_layer_t *L = &T->m->layers[o->layer];
    int32_t N = T->p->n_tokens, da = L->n_head * L->d_head;
    int32_t k = o->which == XF_OP_OPROJ ? da
                : o->which == XF_OP_FF2 ? L->d_ff : T->m->info.d_model;
    int r0, r1;

    xf_split_rows(N, ith, nth, &r0, &r1);
    if (r0 < r1)
        quant_rows(T, o->out, tens(T, o->in0), k, r0, r1);
}

/* The rows [r0, r1) of the tokens that thread ith takes in op o: its own rows when the op owns
 * rows (o->row_block, plan_internal.h), else an even split. */
static void op_rows(const xf_plan_t *p, const xf_plan_op_t *o, int ith, int nth, int *r0,
                    int *r1)
{
    if (o->row_block > 0)
        xf_fuse_rows(p->n_tokens, o->row_block, ith, nth, r0, r1);
    else
        xf_split_rows(p->n_tokens, ith, nth, r0, r1);
}

/* This thread's part of a layer's Linear op o: y = epi(x·Wᵀ + bias) on the plan's N rows. An op
 * that owns rows (o->row_block) runs its rows (op_rows), all columns, as a one-thread GEMM on
 * them; else the kernel splits the GEMM by ith/nth. Every output element is the same either
 * way (the own and int8 kernels; the cblas path never owns rows). int8 weights: the GEMM
 * reads the rows quantised into the op's ws (by the op before, an XF_OP_Q8 op, or here first
 * with o->quant_in: x is read only then; an int8 row block's rows start on an
 * XF_QGEMM_MALIGN group, so the kernel's whole-group reads stay in this thread's rows — the
 * last thread's: also the buffer's padding rows past N); qout >= 0: it also quantises its
 * output rows into that buffer, for the next Linear (FFN1 for FFN2: plan.c q8_quant). */
static void linear_op(const fwd_task_t *T, const xf_plan_op_t *o, const xf_gemm_w_t *w,
                      const float *x, int32_t ldx, const float *bias, enum xf_epilogue epi,
                      float *y, int32_t ldy, int32_t qout, int ith, int nth)
{
    const int32_t N = T->p->n_tokens;
    int r0 = 0, r1 = N;

    if (!bias && epi != XF_EPI_NONE)   /* an absent bias is a zero vector */
        bias = T->p->prep->zeros;
    if (o->row_block > 0) {
        op_rows(T->p, o, ith, nth, &r0, &r1);
        if (r0 >= r1)
            return;
        ith = 0;
        nth = 1;
    }
    y += (size_t)r0 * (size_t)ldy;
    if (!w->q8) {
        T->K->linear(w, r1 - r0, x + (size_t)r0 * (size_t)ldx, ldx, bias, epi, y, ldy, ith,
                     nth);
        return;
    }
    uint8_t *act = (uint8_t *)tens(T, o->ws);
    float *alpha = (float *)(act + xf_qgemm_alpha_offset(N, w->k));
    const int32_t ldq = xf_qgemm_ldq(w->k);
    if (o->quant_in)   /* in place of an XF_OP_Q8 op */
        T->Q->quant_rows(r0, r1, w->k, x, ldx, act, ldq, alpha);
    act += (size_t)r0 * (size_t)ldq;
    alpha += r0;
    if (qout < 0) {
        T->Q->qlinear(w->q8, r1 - r0, act, ldq, alpha, bias, epi, y, ldy, ith, nth);
        return;
    }
    uint8_t *next = (uint8_t *)tens(T, qout);
    xf_qout_t qo = { next, xf_qgemm_ldq(w->n),
                     (float *)(next + xf_qgemm_alpha_offset(N, w->n)) };
    qo.xq += (size_t)r0 * (size_t)qo.ldq;
    qo.alpha += r0;
    T->Q->qlinear_quant(w->q8, r1 - r0, act, ldq, alpha, bias, epi, y, ldy, &qo, ith, nth);
}

static void op_embed(const fwd_task_t *T, const xf_plan_op_t *o, int ith, int nth)
{
    const xf_model_t *m = T->m;
    int32_t D = m->info.d_model;
    int r0, r1;

    xf_split_rows(T->p->n_tokens, ith, nth, &r0, &r1);
    if (r0 >= r1)
        return;
    T->K->embed(r0, r1, D, T->batch->ids, T->p->pos_ids, T->types, m->word_emb.data,
                m->pos_emb.data, T->types ? m->type_emb.data : NULL, m->emb_ln_g.data,
                m->emb_ln_b.data, m->info.ln_eps, tens(T, o->out));
    if (o->aux >= 0)   /* int8: the first QKV's input, this thread's rows */
        quant_rows(T, o->aux, tens(T, o->out), D, r0, r1);
}

static void ln_weights(const xf_model_t *m, const xf_plan_op_t *o, const float **g,
                       const float **b, const float **bias)
{
    const xf_layer_t *L = o->layer >= 0 ? &m->layers[o->layer] : NULL;

    switch (o->which) {
    case XF_W_LN1:
        *g = L->ln1_g.data;
        *b = L->ln1_b.data;
        *bias = L->o_b.data;
        break;
    case XF_W_LN2:
        *g = L->ln2_g.data;
        *b = L->ln2_b.data;
        *bias = L->ff2_b.data;
        break;
    default:
        *g = m->final_ln_g.data;
        *b = m->final_ln_b.data;
        *bias = NULL;
        break;
    }
}

/* An int8 op that owns rows takes whole row groups of the int8 kernels (linear_op). */
_Static_assert(XF_PLAN_Q8_ROW_BLOCK % XF_QGEMM_MALIGN == 0, "int8 row blocks split a group");

/* Rows [r0, r1) of a LayerNorm or residual op of kind `kind` (LN, ADD_LN, ADD) with o's
 * weights (o->which): y = LN(x) / LN(x + bias + res) / x + bias + res; an int8 model's aux
 * buffer gets y's rows quantised. x may be y. */
static void norm_rows(const fwd_task_t *T, const xf_plan_op_t *o, enum xf_op_kind kind,
                      const float *x, const float *res, float *y, int r0, int r1)
{
    const xf_model_t *m = T->m;
    int32_t D = m->info.d_model;
    const float *g, *b, *bias;

    ln_weights(m, o, &g, &b, &bias);
    if (kind == XF_OP_LN) {
        T->K->add_layernorm(r0, r1, D, x, D, NULL, NULL, D, g, b, m->info.ln_eps, y, D);
    } else if (kind == XF_OP_ADD_LN) {
        T->K->add_layernorm(r0, r1, D, x, D, bias, res, D, g, b, m->info.ln_eps, y, D);
    } else {   /* XF_OP_ADD: pre-LN residual */
        for (int r = r0; r < r1; r++) {
            const float *xr = x + (size_t)r * D, *rr = res + (size_t)r * D;
            float *yr = y + (size_t)r * D;
            for (int32_t i = 0; i < D; i++)
                yr[i] = xr[i] + (bias ? bias[i] : 0.0f) + rr[i];
        }
    }
    if (o->aux >= 0)   /* int8: QKV's or FFN1's input, this thread's rows (plan.c q8_quant) */
        quant_rows(T, o->aux, y, D, r0, r1);
}

static void op_norm(const fwd_task_t *T, const xf_plan_op_t *o, int ith, int nth)
{
    int r0, r1;

    op_rows(T->p, o, ith, nth, &r0, &r1);
    if (r0 < r1)
        norm_rows(T, o, o->kind, tens(T, o->in0), tens(T, o->in1), tens(T, o->out), r0, r1);
}

/* An OPROJ or FFN2 op fused with its residual op (o->which, plan_internal.h): this thread
 * computes whole rows [r0, r1) of y = x·Wᵀ (o->row_block: linear_op runs them as one thread's
 * GEMM, which reads all of W), then y = LN(y + bias + residual) (ADD for pre-LN models) on
 * the same rows in place while they are in its cache. The GEMM's sums do not depend on the
 * split and the residual op is the same kernel on the same rows, so the result is the
 * unfused plan's, bit for bit. */
static void op_fused(const fwd_task_t *T, const xf_plan_op_t *o, const xf_gemm_w_t *w,
                     int32_t ldx, int ith, int nth)
{
    float *y = tens(T, o->out);
    int r0, r1;

    linear_op(T, o, w, tens(T, o->in0), ldx, NULL, XF_EPI_NONE, y, T->m->info.d_model, -1, ith,
              nth);
    op_rows(T->p, o, ith, nth, &r0, &r1);
    if (r0 < r1)
        norm_rows(T, o, T->m->info.pre_ln ? XF_OP_ADD : XF_OP_ADD_LN, y, tens(T, o->in1), y, r0,
                  r1);
}

/* The shape and io of an attention run (the same for each of its ops). */
static void attn_args(const fwd_task_t *T, const xf_plan_op_t *o, xf_attn_shape *sh,
                      xf_attn_io *io)
{
    const xf_plan_t *p = T->p;
    const xf_layer_t *L = &T->m->layers[o->layer];
    const xf_plan_run_t *R = &p->runs[o->run];
    size_t plane = (size_t)L->n_head * (size_t)p->n_tokens * (size_t)L->d_head;
    float scale = 1.0f / sqrtf((float)L->d_head);
    const float *planes = tens(T, o->in0);

    sh->n_seq = R->s1 - R->s0;
    sh->cu_len = p->cu_len + R->s0;
    sh->n_tokens = p->n_tokens;
    sh->n_head = L->n_head;
    sh->d_head = L->d_head;
    sh->layer = o->layer;
    sh->mem_rows = NULL;
    memset(io, 0, sizeof *io);
    if (o->kind == XF_OP_ATTN && o->which) {   /* QKV's rows read in place (no split) */
        size_t da = (size_t)L->n_head * (size_t)L->d_head;
        io->q = planes;
        io->k = planes + da;
        io->v = planes + 2 * da;
        io->ld = (int32_t)(3 * da);
        io->q_scale = 1.0f;
    } else {
        io->q = planes;
        io->k = planes + plane;
        io->v = planes + 2 * plane;
        io->q_scale = scale;
    }
    io->type_ids = T->batch->type_ids;
    io->x = tens(T, o->in1);
    /* Stateful variants: the state pointers XF_OP_ATTN_STATE gathered. */
    io->state = o->aux >= 0 && T->batch->attn_state ? (void *const *)tens(T, o->aux) : NULL;
    io->scale = scale;
    io->out = tens(T, o->out);
}

/* The attention ops of one run (plan_internal.h): state pointers and prepare() on thread 0
 * (prepare_par() on every thread when the variant has it), forward and state_update() on
 * every thread. */
static void op_attn(fwd_task_t *T, const xf_plan_op_t *o, int ith, int nth)
{
    const xf_plan_run_t *R = &T->p->runs[o->run];
    const xf_attn_vtbl *vt = R->attn->vt;
    size_t per = (R->pl.ws_per_thread + XF_PLAN_ALIGN - 1) / XF_PLAN_ALIGN * XF_PLAN_ALIGN;
    char *ws = (char *)tens(T, o->ws);
    xf_attn_shape sh;
    xf_attn_io io;
    int rc = 0;

    if (o->kind == XF_OP_ATTN_STATE) {
        /* batch->attn_state[b] is sequence b's array of per-layer state pointers
         * (void *const[n_layer]); aux gets this layer's, per sequence. */
        void **ptrs = (void **)tens(T, o->aux);
        if (ith == 0 && T->batch->attn_state)
            for (int32_t b = R->s0; b < R->s1; b++) {
                void *const *layers = T->batch->attn_state[b];
                ptrs[b - R->s0] = layers ? layers[o->layer] : NULL;
            }
        return;
    }
    attn_args(T, o, &sh, &io);
    if (o->kind == XF_OP_ATTN_PREP) {
        if (vt->ops->prepare_par)
            rc = vt->ops->prepare_par(R->attn->params, &sh, &io, &R->pl, ws, ith, nth);
        else if (ith == 0)
            rc = vt->ops->prepare(R->attn->params, &sh, &io, &R->pl, ws);
    } else if (o->kind == XF_OP_ATTN) {
        rc = xf_at_forward(vt, R->attn->params, &sh, &io, &R->pl, ws,
                           ws ? ws + R->ws_offset_thread + (size_t)ith * per : NULL, ith, nth);
    } else if (vt->flags & XF_ATTN_STATEFUL) {   /* XF_OP_ATTN_UPDATE */
        rc = vt->ops->state_update(R->attn->params, &sh, &io, ith, nth);
    }
    if (rc)
        set_err(T, rc);
}

void xf_l2_normalize_rows(float *x, int32_t rows, int32_t d)
{
    for (int32_t r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * d;
        double s = 0;
        for (int32_t i = 0; i < d; i++)
            s += (double)xr[i] * xr[i];
        s = sqrt(s);
        if (s < 1e-12)
            s = 1e-12;   /* as torch.nn.functional.normalize */
        for (int32_t i = 0; i < d; i++)
            xr[i] = (float)(xr[i] / s);
    }
}

static void tanh_rows(float *x, int32_t r0, int32_t r1, int32_t d)
{
    for (size_t i = (size_t)r0 * d; i < (size_t)r1 * d; i++)
        x[i] = tanhf(x[i]);
}

/* Pooling, pooler, classifier heads and the hidden-state copy, one op per step
 * (plan_internal.h XF_OP_POOL..XF_OP_CLS). The heads tensor holds the [CLS] rows [B][D] and a
 * temporary [B][D]; threads take rows [r0, r1) of the tokens and [b0, b1) of the sequences, or
 * their share of a Linear. */
static void op_heads(fwd_task_t *T, const xf_plan_op_t *o, int ith, int nth)
{
    const xf_model_t *m = T->m;
    const xf_plan_t *p = T->p;
    const xf_prep_t *pr = p->prep;
    int32_t B = p->n_seq, N = p->n_tokens, D = m->info.d_model;
    float *cls = tens(T, p->heads_ws), *tmp = cls + (size_t)B * D;
    int want_pooler = T->pooled && T->pooling == XF_POOL_POOLER;
    int distil = m->info.head == XF_HEAD_DISTILBERT;
    int r0, r1, b0, b1, bad = 0;

    xf_split_rows(N, ith, nth, &r0, &r1);
    xf_split_rows(B, ith, nth, &b0, &b1);
    switch (o->kind) {
    case XF_OP_POOL: {
        const float *H = tens(T, o->in0);
        /* Non-finite check on this thread's rows of the final hidden states. */
        for (size_t i = (size_t)r0 * D; i < (size_t)r1 * D; i++)
            if (!isfinite(H[i]))
                bad = 1;
        if (bad)
            atomic_store(&T->nonfinite, 1);
        if (T->hidden && r0 < r1)
            memcpy(T->hidden + (size_t)r0 * D, H + (size_t)r0 * D,
                   (size_t)(r1 - r0) * D * sizeof(float));
        for (int b = b0; b < b1; b++) {
            const float *first = H + (size_t)p->cu_len[b] * D;
            memcpy(cls + (size_t)b * D, first, (size_t)D * sizeof(float));
            if (!T->pooled)
                continue;
            if (T->pooling == XF_POOL_CLS) {
                memcpy(T->pooled + (size_t)b * D, first, (size_t)D * sizeof(float));
            } else if (T->pooling == XF_POOL_MEAN) {
                int32_t n = p->cu_len[b + 1] - p->cu_len[b];
                float *y = T->pooled + (size_t)b * D;
                for (int32_t i = 0; i < D; i++) {
                    double s = 0;
                    for (int32_t t = 0; t < n; t++)
                        s += first[(size_t)t * D + i];
                    y[i] = (float)(s / n);
                }
            }
        }
        break;
    }
    case XF_OP_POOLER:
        if (want_pooler)
            linear(T, &pr->pool, B, cls, D, m->pool_b.data, XF_EPI_BIAS, T->pooled, D, ith,
                   nth);
        break;
    case XF_OP_POOL_END:
        if (want_pooler)
            tanh_rows(T->pooled, b0, b1, D);
        if (T->pooled && T->normalize)
            xf_l2_normalize_rows(T->pooled + (size_t)b0 * D, b1 - b0, D);
        break;
    case XF_OP_HEAD_DENSE:
        if (!T->logits)
            break;
        if (distil) {
            linear(T, &pr->head_dense, B, cls, D, m->head_dense_b.data, XF_EPI_BIAS_RELU, tmp,
                   D, ith, nth);
        } else {
            const xf_gemm_w_t *w = m->info.head == XF_HEAD_BERT ? &pr->pool : &pr->head_dense;
            const float *bias = m->info.head == XF_HEAD_BERT ? m->pool_b.data
                                                             : m->head_dense_b.data;
            linear(T, w, B, cls, D, bias, XF_EPI_BIAS, tmp, D, ith, nth);
        }
        break;
    case XF_OP_HEAD_TANH:
        if (T->logits && !distil)
            tanh_rows(tmp, b0, b1, D);
        break;
    default:   /* XF_OP_CLS */
        if (T->logits)
            linear(T, &pr->cls, B, tmp, D, m->cls_b.data, XF_EPI_BIAS, T->logits, pr->cls.n,
                   ith, nth);
        break;
    }
}

/* Whether the layer's Q/K/V weights are stacked into one GEMM (fp32, bf16 or int8 weights,
 * n = 3·da) rather than kept as three. */
static int qkv_stacked(const xf_prep_layer_t *P)
{
    return P->qkv.packed || P->qkv.packed_bf16 || P->qkv.q8;
}

static void run_op(fwd_task_t *T, const xf_plan_op_t *o, int ith, int nth)
{
    const xf_model_t *m = T->m;
    const xf_plan_t *p = T->p;
    int32_t N = p->n_tokens, D = m->info.d_model;
    const xf_layer_t *L = o->layer >= 0 ? &m->layers[o->layer] : NULL;
    const xf_prep_layer_t *P = o->layer >= 0 ? &p->prep->layers[o->layer] : NULL;
    int32_t da = L ? L->n_head * L->d_head : 0;
    int r0, r1;

    switch (o->kind) {
    case XF_OP_EMBED:
        op_embed(T, o, ith, nth);
        break;
    case XF_OP_LN:
    case XF_OP_ADD_LN:
    case XF_OP_ADD:
        op_norm(T, o, ith, nth);
        break;
    case XF_OP_QKV: {
        const float *x = tens(T, o->in0);
        float *y = tens(T, o->out);
        if (qkv_stacked(P)) {   /* one GEMM, same layout */
            linear_op(T, o, &P->qkv, x, D, P->qkv_b, XF_EPI_BIAS, y, 3 * da, -1, ith, nth);
            break;
        }
        linear_op(T, o, &P->q, x, D, L->q_b.data, XF_EPI_BIAS, y, 3 * da, -1, ith, nth);
        linear_op(T, o, &P->k, x, D, L->k_b.data, XF_EPI_BIAS, y + da, 3 * da, -1, ith, nth);
        linear_op(T, o, &P->v, x, D, L->v_b.data, XF_EPI_BIAS, y + 2 * da, 3 * da, -1, ith, nth);
        break;
    }
    case XF_OP_Q8:
        op_q8(T, o, ith, nth);
        break;
    case XF_OP_SPLIT: {
        const float *x = tens(T, o->in0);
        float *y = tens(T, o->out);
        size_t plane = (size_t)N * (size_t)da;
        xf_split_rows(N, ith, nth, &r0, &r1);
        if (r0 < r1)
            T->K->qkv_split(r0, r1, N, L->n_head, L->d_head, x, x + da, x + 2 * da, 3 * da,
                            1.0f / sqrtf((float)L->d_head), y, y + plane, y + 2 * plane);
        break;
    }
    case XF_OP_ATTN_STATE:
    case XF_OP_ATTN_PREP:
    case XF_OP_ATTN:
    case XF_OP_ATTN_UPDATE:
        op_attn(T, o, ith, nth);
        break;
    case XF_OP_OPROJ:
        if (o->which)
            op_fused(T, o, &P->o, da, ith, nth);
        else
            linear_op(T, o, &P->o, tens(T, o->in0), da, NULL, XF_EPI_NONE, tens(T, o->out), D,
                      -1, ith, nth);
        break;
    case XF_OP_FF1:   /* int8 with aux: it also quantises its output for FFN2 */
        linear_op(T, o, &P->ff1, tens(T, o->in0), D, L->ff1_b.data, act_epi(m->info.act),
                  tens(T, o->out), L->d_ff, o->aux, ith, nth);
        break;
    case XF_OP_FF2:
        if (o->which)
            op_fused(T, o, &P->ff2, L->d_ff, ith, nth);
        else
            linear_op(T, o, &P->ff2, tens(T, o->in0), L->d_ff, NULL, XF_EPI_NONE,
                      tens(T, o->out), D, -1, ith, nth);
        break;
    case XF_OP_POOL:
    case XF_OP_POOLER:
    case XF_OP_POOL_END:
    case XF_OP_HEAD_DENSE:
    case XF_OP_HEAD_TANH:
    case XF_OP_CLS:
        op_heads(T, o, ith, nth);
        break;
    default:
        break;
    }
}

/* ---- prefetch of the next GEMM's weights while waiting at a barrier ----
 * A thread that reaches the barrier after an op before the others would only spin. The
 * weights of the next Linear op are known (they do not depend on any result), so it uses the
 * wait to bring into L2 the block of them its share of that GEMM reads first
 * (kernels.h linear_lead: at most half of L2), a few lines per step; when the barrier opens
 * it stops, and the rest comes from memory as before. At small M the GEMMs stream their
 * weights from memory, and this first block is the one the kernel's own next-block prefetch
 * cannot cover. Nothing but the cache contents changes: the results are the same bits. */

/* The fp32 or bf16 weight of a Linear op of a layer (NULL: another op, or int8). */
static const xf_gemm_w_t *op_weight(const fwd_task_t *T, const xf_plan_op_t *o)
{
    const xf_prep_layer_t *P = o->layer >= 0 ? &T->p->prep->layers[o->layer] : NULL;
    const xf_gemm_w_t *w;

    switch (o->kind) {
    case XF_OP_QKV:
        w = qkv_stacked(P) ? &P->qkv : &P->q;
        break;
    case XF_OP_OPROJ:
        w = &P->o;
        break;
    case XF_OP_FF1:
        w = &P->ff1;
        break;
    case XF_OP_FF2:
        w = &P->ff2;
        break;
    default:
        return NULL;
    }
    return w->q8 ? NULL : w;
}

/* One thread's prefetch: the weight block [p, p + len) of op `op`, `done` bytes issued. */
typedef struct lead_pf {
    const char *p;
    size_t len, done;
    int32_t op;
} lead_pf_t;

#define LEAD_PF_STEP 1024   /* bytes per idle step (16 lines) */

static int lead_pf_step(void *arg)
{
    lead_pf_t *L = arg;
    size_t end = L->done + LEAD_PF_STEP < L->len ? L->done + LEAD_PF_STEP : L->len;
    for (size_t b = L->done; b < end; b += 64)
        __builtin_prefetch(L->p + b, 0, 2);   /* prefetcht1: into L2 */
    L->done = end;
    return end < L->len;
}

/* Point L at the first weight block of this thread's share of the next Linear op after op i
 * (keeping its progress when it is the same op as before); returns whether there is one. */
static int lead_pf_target(const fwd_task_t *T, int32_t i, int ith, int nth, lead_pf_t *L)
{
    const xf_plan_t *p = T->p;
    int32_t j = i + 1;

    if (!T->K->linear_lead)
        return 0;
    while (j < p->n_ops && p->ops[j].layer >= 0 && !op_weight(T, &p->ops[j]))
        j++;
    if (j >= p->n_ops || p->ops[j].layer < 0)
        return 0;
    if (L->op != j) {
        const void *wp = NULL;
        const xf_gemm_w_t *w = op_weight(T, &p->ops[j]);
        L->op = j;
        if (p->ops[j].row_block > 0) {
            int r0, r1;   /* an op that owns rows: this thread's, as one thread's GEMM */
            op_rows(p, &p->ops[j], ith, nth, &r0, &r1);
            L->len = r1 > r0 ? T->K->linear_lead(w, r1 - r0, 0, 1, &wp) : 0;
        } else {
            L->len = T->K->linear_lead(w, p->n_tokens, ith, nth, &wp);
        }
        L->p = wp;
        L->done = 0;
    }
    return L->p && L->done < L->len;
}

/* Whether op o does nothing in this forward (the outputs asked for do not need it; the same
 * answer on every thread): fwd_thread then skips its barrier as well. */
static int op_idle(const fwd_task_t *T, const xf_plan_op_t *o)
{
    int want_pooler = T->pooled && T->pooling == XF_POOL_POOLER;

    switch (o->kind) {
    case XF_OP_POOLER:
        return !want_pooler;
    case XF_OP_POOL_END:
        return !want_pooler && !(T->pooled && T->normalize);
    case XF_OP_HEAD_DENSE:
    case XF_OP_CLS:
        return !T->logits;
    case XF_OP_HEAD_TANH:
        return !T->logits || T->m->info.head == XF_HEAD_DISTILBERT;
    default:
        return 0;
    }
}

/* Profiling (xf_ctx_profile): the class an op's time counts under. */
static int prof_class(enum xf_op_kind k)
{
    switch (k) {
    case XF_OP_EMBED:
        return XF_PROF_EMBED;
    case XF_OP_LN:
    case XF_OP_ADD_LN:
    case XF_OP_ADD:
        return XF_PROF_NORM;
    case XF_OP_QKV:
        return XF_PROF_QKV;
    case XF_OP_SPLIT:
        return XF_PROF_SPLIT;
    case XF_OP_ATTN_STATE:
    case XF_OP_ATTN_PREP:
    case XF_OP_ATTN:
    case XF_OP_ATTN_UPDATE:
        return XF_PROF_ATTN;
    case XF_OP_OPROJ:
        return XF_PROF_OPROJ;
    case XF_OP_FF1:
        return XF_PROF_FF1;
    case XF_OP_FF2:
        return XF_PROF_FF2;
    case XF_OP_Q8:
        return XF_PROF_Q8;
    default:
        return XF_PROF_HEADS;
    }
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Every pool thread runs every op of the plan in order, with one barrier after each but
 * - an op marked no_barrier (plan_internal.h: the fp32 FFN1 row split, an int8 row chain's
 *   ops but its last), whose next op reads only the rows the same thread wrote; unless it is
 *   FFN1 and the pruning FFN tap is on (the tap reads all of FFN1's rows);
 * - an op that does nothing for this forward (op_idle: head ops the request does not need);
 * - the last op (xf_pool_run joins);
 * and none inside an op, so every thread meets the same barriers whatever happens (each skip
 * is decided from the plan and the request, the same on every thread). Profiling changes no
 * barrier: a profiled forward waits where an unprofiled one does (op_cpu slots go by barrier
 * count; an op without a barrier after it counts its wait as none and its spread under the
 * next op that has one). Ownership: during an op a thread writes only its share of the op's
 * output (rows, columns or items split by ith/nth, or everything on thread 0 for
 * XF_OP_ATTN_STATE and XF_OP_ATTN_PREP); nothing is read before the barrier that ends the op
 * writing it, but the rows a thread wrote itself in a no_barrier op. After an error (T->err,
 * set once by the first failing op) the remaining ops are skipped; the barriers are still
 * met. With a progress callback (xf_ctx_set_progress) each layer's last op is followed by a
 * second barrier, after thread 0 called it, so that a stop is seen by every thread at once. */
static void fwd_thread(void *arg, int ith, int nth)
{
    fwd_task_t *T = arg;
    const xf_plan_t *p = T->p;
    struct xf_prof_thread *pt = T->c->prof_on ? &T->c->prof[ith] : NULL;
    double w0 = 0, c0 = 0, w1 = 0, c1 = 0, c_bar = 0;
    unsigned n_bar = 0;   /* op barriers passed (profiling's op_cpu slot) */
    lead_pf_t lead = { .op = -1 };
    int pf_on = nth > 1 && T->c->lead_pf;

    if (pt) {
        w0 = clock_s(CLOCK_MONOTONIC);
        c0 = c_bar = clock_s(CLOCK_THREAD_CPUTIME_ID);
        pt->start += w0 - T->t_start;
    }
    for (int32_t i = 0; i < p->n_ops; i++) {
        const xf_plan_op_t *o = &p->ops[i];
        const int tap = T->c->ffn_tap && o->kind == XF_OP_FF1;
        const int bar = !(o->no_barrier && !tap) && !op_idle(T, o) && i + 1 < p->n_ops;
        if (!atomic_load(&T->err))
            run_op(T, o, ith, nth);
        if (pt) {
            w1 = clock_s(CLOCK_MONOTONIC);
            c1 = clock_s(CLOCK_THREAD_CPUTIME_ID);
            if (bar)   /* the CPU since the last barrier, in the slot of this barrier */
                pt->op_cpu[n_bar & 1] = c1 - c_bar;
        }
        if (bar && pf_on && lead_pf_target(T, i, ith, nth, &lead))
            xf_pool_barrier_idle(T->c->pool, lead_pf_step, &lead);
        else if (bar)
            xf_pool_barrier(T->c->pool);
        /* The pruning scores' FFN tap (ctx.h): thread 0 reads the finished intermediate; the
         * extra barrier keeps the others from overwriting it meanwhile. */
        if (tap) {
            if (ith == 0 && !atomic_load(&T->err))
                T->c->ffn_tap(T->c->ffn_tap_user, o->layer, tens(T, o->out), p->n_tokens,
                              T->m->layers[o->layer].d_ff);
            xf_pool_barrier(T->c->pool);
        }
        /* A layer boundary (the same decision on every thread): every thread has finished
         * the layer. Thread 0 reports progress and may stop the forward; one more barrier
         * so that every thread sees the stop before the next op (a half-skipped attention
         * prepare would leave others reading stale shared scratch). */
        if (T->c->progress && o->layer >= 0 &&
            (i + 1 == p->n_ops || p->ops[i + 1].layer != o->layer)) {
            if (ith == 0 && !atomic_load(&T->err) &&
                T->c->progress(T->c->progress_user, o->layer + 1, T->m->info.n_layer) != 0) {
                atomic_store(&T->stopped_at, o->layer + 1);
                set_err(T, XF_EDEADLINE);
            }
            xf_pool_barrier(T->c->pool);
        }
        if (pt) {   /* busy: the op; wait: the barrier(s) after it */
            int k = prof_class(o->kind);
            double w2 = clock_s(CLOCK_MONOTONIC), c2 = clock_s(CLOCK_THREAD_CPUTIME_ID);
            /* Every thread's op CPU was stored before the barrier (slot n_bar & 1; a slot
             * is written again only before the barrier after next, and a thread reaches that
             * one only after passing the next barrier, which thread 0 has not). The ops since
             * the barrier before (no_barrier ones) count their spread under this op's class. */
            if (ith == 0 && bar) {
                double lo = 1e300, hi = 0;
                for (int t = 0; t < nth; t++) {
                    double v = T->c->prof[t].op_cpu[n_bar & 1];
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
                pt->spread[k] += hi - lo;
            }
            pt->busy[k] += w1 - w0;
            pt->busy_cpu[k] += c1 - c0;
            pt->wait[k] += w2 - w1;
            pt->wait_cpu[k] += c2 - c1;
            pt->ops[k]++;
            w0 = w2;
            c0 = c2;
            c_bar = bar ? c2 : c_bar;
        }
        n_bar += bar;
    }
}

/* The batch must be the one the plan was built from. */
static int check_batch(const xf_plan_t *p, const xf_batch_t *batch, xf_diag_t *diag)
{
    if (batch->n_seq != p->n_seq)
        return xf_diag_set(diag, -EINVAL, "batch has %d sequences, the plan %d",
                           (int)batch->n_seq, (int)p->n_seq);
    if (p->n_seq == 0)
        return 0;
    if (!batch->cu_len || !batch->ids)
        return xf_diag_set(diag, -EINVAL, "batch: cu_len or ids is NULL");
    for (int32_t b = 0; b <= p->n_seq; b++)
        if (batch->cu_len[b] != p->cu_len[b])
            return xf_diag_set(diag, -EINVAL, "batch: cu_len[%d] = %d, the plan has %d",
                               (int)b, (int)batch->cu_len[b], (int)p->cu_len[b]);
    for (int32_t b = 0; b < p->n_seq; b++)
        if (!xf_plan_attn_same(xf_plan_seq_attn(p->m, batch, b), p->seq_attn[b]))
            return xf_diag_set(diag, -EINVAL, "batch: sequence %d's attention differs from "
                               "the plan's", (int)b);
    return 0;
}

static int check_ids(const xf_model_t *m, const xf_batch_t *batch, int32_t N, xf_diag_t *diag)
{
    int32_t V = m->info.vocab_size, TV = m->info.type_vocab_size;

    for (int32_t t = 0; t < N; t++) {
        if (batch->ids[t] < 0 || batch->ids[t] >= V)
            return xf_diag_set(diag, -EINVAL, "token %d: id %d out of range [0, %d)", (int)t,
                               (int)batch->ids[t], (int)V);
        if (batch->type_ids && batch->type_ids[t] != 0 &&
            (batch->type_ids[t] < 0 || batch->type_ids[t] >= TV))
            return xf_diag_set(diag, -EINVAL, "token %d: type id %d out of range [0, %d)",
                               (int)t, (int)batch->type_ids[t], (int)(TV > 0 ? TV : 1));
    }
    return 0;
}

static int setup_outputs(fwd_task_t *T, const xf_output_t *out, xf_diag_t *diag)
{
    const xf_model_t *m = T->m;
    const xf_prep_t *pr = T->p->prep;

    T->pooling = XF_POOL_CLS;
    T->normalize = 0;
    T->pooled = T->hidden = T->logits = NULL;
    if (!out)
        return 0;
    T->pooling = out->pooling != XF_POOL_DEFAULT ? out->pooling : m->info.pooling;
    if (T->pooling == XF_POOL_DEFAULT)
        T->pooling = XF_POOL_CLS;
    if ((int)T->pooling < 0 || T->pooling >= XF_POOL_COUNT)
        return xf_diag_set(diag, -EINVAL, "output: unknown pooling %d", (int)T->pooling);
    T->normalize = out->normalize < 0 ? m->info.normalize : out->normalize != 0;
    T->pooled = out->pooled;
    T->hidden = out->hidden;
    T->logits = out->logits;
    if (T->pooled && T->pooling == XF_POOL_NONE)
        return xf_diag_set(diag, -EINVAL, "output: pooled rows requested with pooling none");
    if (T->pooled && T->pooling == XF_POOL_POOLER && (!pr->pool.n || !m->pool_b.data))
        return xf_diag_set(diag, XF_EUNSUPPORTED, "output: the model has no pooler");
    if (T->logits) {
        int ok = pr->cls.n > 0 && m->cls_b.data;
        if (m->info.head == XF_HEAD_BERT)
            ok = ok && pr->pool.n && m->pool_b.data;
        else if (m->info.head == XF_HEAD_ROBERTA || m->info.head == XF_HEAD_DISTILBERT)
            ok = ok && pr->head_dense.n && m->head_dense_b.data;
        else
            ok = 0;
        if (!ok)
            return xf_diag_set(diag, XF_EUNSUPPORTED, "output: the model has no classifier");
    }
    return 0;
}

int xf_forward(xf_ctx_t *c, const xf_model_t *m, const xf_plan_t *p, const xf_batch_t *batch,
               const xf_output_t *out, xf_diag_t *diag)
{
    fwd_task_t T;
    int rc;

    if (!c || !m || !p || !batch)
        return xf_diag_set(diag, -EINVAL, "forward: NULL argument");
    if (p->m != m || !p->built)
        return xf_diag_set(diag, -EINVAL, "forward: the plan is not built for this model");
    if (!p->prep)
        return xf_diag_set(diag, -EINVAL, "forward: the model has no weights");
    rc = check_batch(p, batch, diag);
    if (rc)
        return rc;
    if (p->n_seq == 0)
        return 0;
    if (p->n_threads != c->n_threads)
        return xf_diag_set(diag, -EINVAL, "forward: plan built for %d threads, context has %d",
                           p->n_threads, c->n_threads);
    if (c->arena_bytes < p->stats.arena_bytes)
        return xf_diag_set(diag, -EINVAL, "forward: context not reserved for the plan "
                           "(%zu < %zu bytes)", c->arena_bytes, p->stats.arena_bytes);
    memset(&T, 0, sizeof T);
    T.c = c;
    T.m = m;
    T.p = p;
    T.batch = batch;
    rc = setup_outputs(&T, out, diag);
    if (rc)
        return rc;
    rc = check_ids(m, batch, p->n_tokens, diag);
    if (rc)
        return rc;
    T.K = xf_kernels();
    T.Q = xf_qkernels();
    T.types = NULL;
    if (m->type_emb.data)
        T.types = batch->type_ids ? batch->type_ids : p->zero_types;
    atomic_init(&T.err, 0);
    atomic_init(&T.nonfinite, 0);
    atomic_init(&T.stopped_at, 0);

    if (c->prof_on)
        T.t_start = clock_s(CLOCK_MONOTONIC);
    xf_pool_run(c->pool, fwd_thread, &T);
    if (c->prof_on) {
        c->prof_forwards++;
        c->prof_wall_s += clock_s(CLOCK_MONOTONIC) - T.t_start;
    }

    rc = atomic_load(&T.err);
    if (rc == XF_EDEADLINE && atomic_load(&T.stopped_at) > 0)
        return xf_diag_set(diag, rc, "forward: stopped after layer %d of %d",
                           atomic_load(&T.stopped_at), (int)m->info.n_layer);
    if (rc)
        return xf_diag_set(diag, rc, "forward: attention failed: %s", xf_strerror(rc));
    if (atomic_load(&T.nonfinite))
        return xf_diag_set(diag, XF_ENUMERIC, "forward: hidden states are not finite");
    return 0;
}

int xf_run(xf_ctx_t *c, const xf_model_t *m, const xf_batch_t *batch, const xf_output_t *out,
           xf_diag_t *diag)
{
    xf_plan_t *p = NULL;
    int rc;

    if (!c || !m || !batch)
        return xf_diag_set(diag, -EINVAL, "run: NULL argument");
    rc = xf_plan_create(m, &p);
    if (rc)
        return xf_diag_set(diag, rc, "run: cannot prepare the model: %s", xf_strerror(rc));
    rc = xf_plan_build(p, batch, c->n_threads, diag);
    if (!rc) {
        rc = xf_ctx_reserve(c, p);
        if (rc)
            xf_diag_set(diag, rc, "run: cannot reserve %zu arena bytes", p->stats.arena_bytes);
    }
    if (!rc)
        rc = xf_forward(c, m, p, batch, out, diag);
    xf_plan_free(p);
    return rc;
}
