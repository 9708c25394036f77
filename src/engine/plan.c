/* The memory planner (xf_plan_*): from a batch's shape and the model's per-layer shapes, the op
 * list of one packed forward pass, every intermediate tensor with its size and lifetime, the
 * attention runs with their variant plans, and the tensors' offsets in one arena (greedy by
 * size, lowest free offset, as TurboTransformers/TFLite). Also the model's prepared weights. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/diag.h"
#include "engine/model.h"
#include "engine/plan_internal.h"
#include "engine/pool.h"
#include "engine/quant.h"

static size_t align_up(size_t n)
{
    return (n + XF_PLAN_ALIGN - 1) / XF_PLAN_ALIGN * XF_PLAN_ALIGN;
}

/* ---- prepared weights ------------------------------------------------------------------- */

static pthread_mutex_t prep_lock = PTHREAD_MUTEX_INITIALIZER;

static void prep_free(void *ptr)
{
    xf_prep_t *pr = ptr;

    if (!pr)
        return;
    for (int32_t l = 0; l < pr->n_layer && pr->layers; l++) {
        xf_prep_layer_t *pl = &pr->layers[l];
        xf_gemm_w_deinit(&pl->q);
        xf_gemm_w_deinit(&pl->k);
        xf_gemm_w_deinit(&pl->v);
        xf_gemm_w_deinit(&pl->o);
        xf_gemm_w_deinit(&pl->ff1);
        xf_gemm_w_deinit(&pl->ff2);
        xf_gemm_w_deinit(&pl->qkv);
        free(pl->qkv_b);
    }
    xf_gemm_w_deinit(&pr->pool);
    xf_gemm_w_deinit(&pr->head_dense);
    xf_gemm_w_deinit(&pr->cls);
    free(pr->zeros);
    free(pr->layers);
    free(pr);
}

/* Prepare one Linear when present; checks its shape (rows = out, cols = in). An int8 layer
 * (q8 != NULL, quant.h) points at its quantised weight and packs no fp32 copy. */
static int prep_one(xf_gemm_w_t *pw, const xf_w_t *w, int32_t out, int32_t in, int required,
                    const xf_qgemm_w_t *q8)
{
    if (!w->data)
        return required ? XF_ESHAPE : 0;
    if (w->rows != out || w->cols != in)
        return XF_ESHAPE;
    if (q8) {
        memset(pw, 0, sizeof *pw);
        pw->n = out;
        pw->k = in;
        pw->w = w->data;
        pw->q8 = q8;
        return 0;
    }
    return xf_gemm_w_init(pw, w->data, out, in);
}

/* Q/K/V as one stacked GEMM (n = 3·da, one pass over the activations and one column split
 * across threads) when the kernels pack weights and the layer is fp32, or when the int8
 * weights were stacked at load (quant.h); else three Linears (int8: three quantised Linears
 * sharing one quantised activation, Q8 op). */
static int prep_qkv(xf_prep_layer_t *P, const xf_layer_t *L, int32_t da, int32_t D,
                    const xf_quant_layer_t *Q)
{
    const xf_w_t *w[3] = { &L->q_w, &L->k_w, &L->v_w };
    const xf_w_t *b[3] = { &L->q_b, &L->k_b, &L->v_b };
    const float *parts[3];
    int32_t rows[3] = { da, da, da };
    for (int i = 0; i < 3; i++) {
        if (!w[i]->data || w[i]->rows != da || w[i]->cols != D)
            return XF_ESHAPE;
        parts[i] = w[i]->data;
    }
    if (Q ? Q->qkv.wq != NULL : xf_kernels()->packs_w) {
        P->qkv_b = calloc(3 * (size_t)da, sizeof *P->qkv_b);
        if (!P->qkv_b)
            return -ENOMEM;
        for (int i = 0; i < 3; i++)
            if (b[i]->data)
                memcpy(P->qkv_b + (size_t)i * da, b[i]->data, (size_t)da * sizeof(float));
        if (Q) {
            memset(&P->qkv, 0, sizeof P->qkv);
            P->qkv.n = 3 * da;
            P->qkv.k = D;
            P->qkv.q8 = &Q->qkv;
            return 0;
        }
        int rc = xf_gemm_w_init_stacked(&P->qkv, parts, rows, 3, D);
        if (rc != -ENOTSUP)
            return rc;
        free(P->qkv_b);
        P->qkv_b = NULL;
    }
    int rc = prep_one(&P->q, &L->q_w, da, D, 1, Q ? &Q->q : NULL);
    if (!rc)
        rc = prep_one(&P->k, &L->k_w, da, D, 1, Q ? &Q->k : NULL);
    if (!rc)
        rc = prep_one(&P->v, &L->v_w, da, D, 1, Q ? &Q->v : NULL);
    return rc;
}

static int prep_build(const xf_model_t *m, xf_prep_t **out)
{
    const xf_model_info_t *mi = &m->info;
    int32_t D = mi->d_model;
    xf_prep_t *pr;
    int rc = 0;

    pr = calloc(1, sizeof *pr);
    if (!pr)
        return -ENOMEM;
    pr->layers = calloc(mi->n_layer > 0 ? (size_t)mi->n_layer : 1, sizeof *pr->layers);
    if (!pr->layers) {
        free(pr);
        return -ENOMEM;
    }
    pr->n_layer = mi->n_layer;
    {
        int32_t wide = D > m->cls_w.rows ? D : m->cls_w.rows;
        for (int32_t l = 0; l < mi->n_layer; l++) {
            int32_t da = m->layers[l].n_head * m->layers[l].d_head;
            wide = da > wide ? da : wide;
            wide = m->layers[l].d_ff > wide ? m->layers[l].d_ff : wide;
        }
        pr->zeros = calloc((size_t)wide + 1, sizeof *pr->zeros);
        if (!pr->zeros) {
            prep_free(pr);
            return -ENOMEM;
        }
    }
    /* quantize=bf16 (the loader checked that the kernels have bf16 weights): the six Linear
     * weights of each layer, like int8 */
    const int bf16 = mi->quantize && strcmp(mi->quantize, "bf16") == 0;
    for (int32_t l = 0; l < mi->n_layer && !rc; l++) {
        const xf_layer_t *L = &m->layers[l];
        xf_prep_layer_t *P = &pr->layers[l];
        const xf_quant_layer_t *Q = m->q8 ? &m->q8->layers[l] : NULL;
        int32_t da = L->n_head * L->d_head;
        rc = prep_qkv(P, L, da, D, Q);
        if (!rc)
            rc = prep_one(&P->o, &L->o_w, D, da, 1, Q ? &Q->o : NULL);
        if (!rc)
            rc = prep_one(&P->ff1, &L->ff1_w, L->d_ff, D, 1, Q ? &Q->ff1 : NULL);
        if (!rc)
            rc = prep_one(&P->ff2, &L->ff2_w, D, L->d_ff, 1, Q ? &Q->ff2 : NULL);
        xf_gemm_w_t *six[] = { &P->qkv, &P->q, &P->k, &P->v, &P->o, &P->ff1, &P->ff2 };
        for (size_t i = 0; i < sizeof six / sizeof six[0] && bf16 && !rc; i++)
            if (six[i]->packed)
                rc = xf_gemm_w_add_bf16(six[i]);
    }
    if (!rc)
        rc = prep_one(&pr->pool, &m->pool_w, D, D, 0, NULL);
    if (!rc)
        rc = prep_one(&pr->head_dense, &m->head_dense_w, D, D, 0, NULL);
    if (!rc && m->cls_w.data)
        rc = prep_one(&pr->cls, &m->cls_w, m->cls_w.rows, D, 1, NULL);
    if (rc) {
        prep_free(pr);
        return rc;
    }
    *out = pr;
    return 0;
}

int xf_plan_prep_build(xf_model_t *m)
{
    int rc = 0;

    pthread_mutex_lock(&prep_lock);
    if (!m->prep) {
        xf_prep_t *pr = NULL;
        rc = prep_build(m, &pr);
        if (!rc) {
            m->prep = pr;
            m->prep_free = prep_free;
        }
    }
    pthread_mutex_unlock(&prep_lock);
    return rc;
}

int xf_plan_prep_get(const xf_model_t *m, const xf_prep_t **out)
{
    int rc = 0;

    /* A loaded model got its prepared weights in xf_model_load (never NULL here then, and
     * never written again); a model assembled by hand (tests) gets them at its first plan:
     * the documented once-only write to an otherwise immutable model (doc/threads.md). */
    pthread_mutex_lock(&prep_lock);
    const xf_prep_t *pr = m->prep;
    pthread_mutex_unlock(&prep_lock);
    if (!pr) {
        rc = xf_plan_prep_build((xf_model_t *)m);
        pr = m->prep;
    }
    if (!rc)
        *out = pr;
    return rc;
}

/* ---- variants --------------------------------------------------------------------------- */

int xf_plan_attn_same(const xf_attn_t *a, const xf_attn_t *b)
{
    if (a == b)
        return 1;
    if (!a || !b || a->vt != b->vt)
        return 0;
    return memcmp(a->params, b->params, a->vt->ops->params_size) == 0;
}

const xf_attn_t *xf_plan_seq_attn(const xf_model_t *m, const xf_batch_t *batch, int32_t b)
{
    if (batch->attn && batch->attn[b])
        return batch->attn[b];
    return m->attn ? m->attn : xf_attn_dense();
}

/* ---- create / free ---------------------------------------------------------------------- */

static int32_t fuse_default = XF_FUSE_ROWS;
static pthread_once_t fuse_once = PTHREAD_ONCE_INIT;

/* XF_FUSE_ROWS=n in the environment (read once): another threshold, 0 = never fuse (to
 * measure both plans in one binary). */
static void fuse_env(void)
{
    const char *e = getenv("XF_FUSE_ROWS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == '\0' && v >= 0 && v <= (1L << 24))
            fuse_default = (int32_t)v;
    }
}

static int32_t fuse_rows_default(void)
{
    pthread_once(&fuse_once, fuse_env);
    return fuse_default;
}

void xf_fuse_rows(int32_t n_tokens, int32_t block, int ith, int nth, int *r0, int *r1)
{
    int b0, b1;
    xf_split_rows((n_tokens + block - 1) / block, ith, nth, &b0, &b1);
    *r0 = b0 * block;
    *r1 = b1 * block < n_tokens ? b1 * block : n_tokens;
    if (*r0 > n_tokens)
        *r0 = n_tokens;
}

int xf_plan_create(const xf_model_t *m, xf_plan_t **out)
{
    xf_plan_t *p;
    int rc;

    if (!m || !out)
        return -EINVAL;
    p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->m = m;
    p->fuse_rows = fuse_rows_default();
    /* A model without weights (a shape only, as `xformd-cli inspect` and tests use) can be
     * planned but not run: p->prep stays NULL and xf_forward() refuses it. */
    if (m->word_emb.data) {
        rc = xf_plan_prep_get(m, &p->prep);
        if (rc) {
            free(p);
            return rc;
        }
    }
    *out = p;
    return 0;
}

void xf_plan_free(xf_plan_t *p)
{
    if (!p)
        return;
    free(p->cu_len);
    free(p->pos_ids);
    free(p->zero_types);
    free(p->seq_attn);
    free(p->t);
    free(p->ops);
    free(p->runs);
    free(p->order);
    free(p);
}

void xf_plan_get_stats(const xf_plan_t *p, xf_plan_stats_t *out)
{
    if (!out)
        return;
    if (!p) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = p->stats;
}

/* ---- storage ---------------------------------------------------------------------------- */

static int grow(void **ptr, int32_t *cap, int32_t need, size_t elem)
{
    void *n;

    if (need <= *cap)
        return 0;
    n = realloc(*ptr, (size_t)need * elem);
    if (!n)
        return -ENOMEM;
    *ptr = n;
    *cap = need;
    return 0;
}

static int ensure_shape_storage(xf_plan_t *p, int32_t n_seq, int32_t n_tok)
{
    if (n_seq + 1 > p->cap_seq) {
        int32_t cap = n_seq + 1, c1 = p->cap_seq, c2 = p->cap_seq;
        if (grow((void **)&p->cu_len, &c1, cap, sizeof *p->cu_len) ||
            grow((void **)&p->seq_attn, &c2, cap, sizeof *p->seq_attn))
            return -ENOMEM;
        p->cap_seq = cap;
    }
    if (n_tok > p->cap_tok) {
        int32_t c1 = p->cap_tok, c2 = p->cap_tok;
        if (grow((void **)&p->pos_ids, &c1, n_tok, sizeof *p->pos_ids) ||
            grow((void **)&p->zero_types, &c2, n_tok, sizeof *p->zero_types))
            return -ENOMEM;
        p->cap_tok = n_tok;
    }
    return 0;
}

/* ---- graph ------------------------------------------------------------------------------ */

/* Tensors and ops are appended within the capacity counted by a first build pass
 * (p->counting: nothing is written, the adds only count). A real pass that would go past it
 * sets p->overflow and writes nothing; xf_plan_build then fails. */
static int32_t add_tensor(xf_plan_t *p, size_t bytes, const char *what, int32_t layer)
{
    xf_plan_tensor_t *t;

    if (p->counting || p->n_t >= p->cap_t) {
        p->overflow |= !p->counting;
        p->n_t++;
        return -1;
    }
    t = &p->t[p->n_t];
    t->bytes = align_up(bytes);
    t->offset = 0;
    t->first = t->last = t->op_made = -1;
    t->what = what;
    t->layer = layer;
    return p->n_t++;
}

static void use_tensor(xf_plan_t *p, int32_t ti, int32_t op, int writes)
{
    xf_plan_tensor_t *t;

    if (ti < 0 || ti >= p->n_t || op < 0)
        return;
    t = &p->t[ti];
    if (t->first < 0) {
        t->first = op;
        if (writes)
            t->op_made = op;
    }
    if (op > t->last)
        t->last = op;
}

/* Appends an op; returns it for the caller to fill in which/run/aux (a scratch op when
 * counting or past the capacity). */
static xf_plan_op_t *add_op(xf_plan_t *p, enum xf_op_kind kind, int32_t layer, int32_t in0,
                            int32_t in1, int32_t out, int32_t ws)
{
    int32_t i = p->n_ops++;
    xf_plan_op_t *o;

    if (p->counting || i >= p->cap_ops) {
        p->overflow |= !p->counting;
        return &p->spare;
    }
    o = &p->ops[i];
    o->kind = kind;
    o->layer = layer;
    o->in0 = in0;
    o->in1 = in1;
    o->out = out;
    o->ws = ws;
    o->which = 0;
    o->run = -1;
    o->aux = -1;
    o->row_block = 0;
    o->quant_in = 0;
    o->no_barrier = 0;
    use_tensor(p, in0, i, 0);
    use_tensor(p, in1, i, 0);
    use_tensor(p, out, i, 1);
    use_tensor(p, ws, i, 1);
    return o;
}

/* Index of the op add_op returned last (-1 when counting). */
static int32_t last_op(const xf_plan_t *p)
{
    return p->counting || p->n_ops > p->cap_ops ? -1 : p->n_ops - 1;
}

/* Runs of consecutive sequences with the same variant (the same for every layer). */
static int32_t count_runs(const xf_plan_t *p)
{
    int32_t n = 0;

    for (int32_t b = 0; b < p->n_seq; b++)
        if (b == 0 || !xf_plan_attn_same(p->seq_attn[b], p->seq_attn[b - 1]))
            n++;
    return n;
}

/* Plan every run of layer l; appends to p->runs. */
static int plan_layer_runs(xf_plan_t *p, int32_t l, int32_t *first_run, xf_diag_t *diag)
{
    const xf_layer_t *L = &p->m->layers[l];
    int32_t b = 0;

    *first_run = p->n_runs;
    while (b < p->n_seq) {
        int32_t e = b + 1;
        const xf_attn_t *a = p->seq_attn[b];
        xf_plan_run_t *r = &p->runs[p->n_runs];
        xf_attn_shape sh;
        char err[256] = "";
        int rc;

        while (e < p->n_seq && xf_plan_attn_same(p->seq_attn[e], a))
            e++;
        memset(r, 0, sizeof *r);
        r->s0 = b;
        r->s1 = e;
        r->attn = a;
        if (!a->vt || !xf_at_runnable(a->vt))
            return xf_diag_set(diag, XF_EUNSUPPORTED, "attention variant has no forward");
        rc = xf_at_validate(a->vt, a->params, p->m, l, err, sizeof err);
        if (rc)
            return xf_diag_set(diag, rc < 0 ? rc : XF_EPARAM, "attention %s, layer %d: %s",
                               a->vt->name, (int)l, err);
        sh.n_seq = e - b;
        sh.cu_len = p->cu_len + b;
        sh.n_tokens = p->n_tokens;
        sh.n_head = L->n_head;
        sh.d_head = L->d_head;
        sh.layer = l;
        sh.mem_rows = NULL;
        rc = xf_at_plan(a->vt, a->params, &sh, p->n_threads, &r->pl);
        if (rc)
            return xf_diag_set(diag, rc == -ENOMEM ? rc : XF_EPARAM,
                               "attention %s, layer %d, sequences %d..%d: plan failed (%s)",
                               a->vt->name, (int)l, (int)b, (int)e - 1, xf_strerror(rc));
        r->ws_offset_thread = align_up(r->pl.ws_shared);
        p->n_runs++;
        b = e;
    }
    return 0;
}

/* int8 model with XF_Q8_FUSE_ROWS to XF_Q8_CHAIN_MAX_ROWS rows per thread (plan_internal.h):
 * each layer's ops from the output projection to its last one form a row chain (build_layer):
 * each owns the same rows (row_block), the output projection quantises its own rows of the
 * attention output (quant_in), the three GEMMs split by rows (each thread reads all of Wo,
 * W1, W2), and every op but the last is no_barrier: the barriers between those ops (2 with
 * the residual ops fused into OPROJ and FFN2, fuse_residual; 4 without) and the quantising
 * op's go. Else column splits (unless fused) and barriers. */
static int q8_chain(const xf_plan_t *p)
{
    return p->m->q8 && p->n_tokens >= XF_Q8_FUSE_ROWS * p->n_threads &&
           p->n_tokens <= XF_Q8_CHAIN_MAX_ROWS * p->n_threads;
}

/* int8 model (model.quantize = int8): x's rows (k wide) quantised into a new activation
 * buffer for the Linear op `feeds`, which reads it as its ws. When x was just made by an op
 * that writes whole rows per thread (embeddings, LayerNorm, an OPROJ or FFN2 fused with its
 * residual LayerNorm: QKV's and FFN1's inputs), that op
 * quantises its rows right after writing them (its aux = the buffer): no op, no barrier, no
 * second pass over x. So does FFN1's GEMM for FFN2 when there are at least XF_Q8_FUSE_ROWS
 * rows per thread (it then splits by rows, each thread reading all of W1), and a row chain's
 * output projection its own input (q8_chain). Else an XF_OP_Q8 op (the attention output:
 * heads split across threads; FFN1's output for few rows).
 * Returns the buffer, or -1 for an fp32 model (or while counting, which then counts the op). */
static int32_t q8_quant(xf_plan_t *p, int32_t l, int32_t x, int32_t k, enum xf_op_kind feeds)
{
    if (!p->m->q8)
        return -1;
    int32_t q = add_tensor(p, xf_qgemm_act_bytes(p->n_tokens, k), "q8_act", l);
    if (feeds == XF_OP_OPROJ && q8_chain(p))
        return q;   /* the output projection quantises its rows itself (quant_in) */
    int32_t last = p->n_ops - 1;
    if (!p->counting && q >= 0 && last >= 0 && last < p->cap_ops) {
        xf_plan_op_t *o = &p->ops[last];
        int row_op = k == p->m->info.d_model &&
                     (o->kind == XF_OP_EMBED || o->kind == XF_OP_LN || o->kind == XF_OP_ADD_LN ||
                      ((o->kind == XF_OP_OPROJ || o->kind == XF_OP_FF2) && o->which));
        /* FFN1's int8 GEMM quantises its output rows for FFN2 as it finishes them
         * (qlinear_quant: whole rows per thread, so only with enough rows for every thread) */
        int ffn1 = o->kind == XF_OP_FF1 && feeds == XF_OP_FF2 &&
                   p->n_tokens >= XF_Q8_FUSE_ROWS * p->n_threads;
        if (o->out == x && o->aux < 0 && (row_op || ffn1)) {
            o->aux = q;
            use_tensor(p, q, last, 1);
            return q;
        }
    }
    add_op(p, XF_OP_Q8, l, x, -1, q, -1)->which = (int32_t)feeds;
    return q;
}

/* Whether the output projection and FFN2 finish the residual op's rows themselves
 * (plan_internal.h XF_FUSE_ROWS): one thread, or enough tokens per thread (a row split makes
 * every thread read all of W, which costs where the GEMM streams its weights), and Linear
 * results that do not
 * depend on the thread split (the own and int8 kernels; not the cblas path, whose sums
 * depend on the column slice), so that the fused forward gives the unfused one's bits. */
static int fuse_residual(const xf_plan_t *p)
{
    /* counting: the unfused graph, an upper bound (so a plan's capacity for a batch covers
     * every smaller batch, fused or not) */
    if (p->counting || p->fuse_rows <= 0 ||
        (p->n_threads > 1 && (int64_t)p->n_tokens < (int64_t)p->fuse_rows * p->n_threads))
        return 0;
    return p->m->q8 || xf_kernels()->nth_exact;
}

/* A layer's output projection or FFN2 (kind) on in (k wide) and its residual op with res,
 * writing the layer-wide tensor name (N × D): fused (fuse_residual), the op does its rows'
 * bias + residual (+ LayerNorm, `which`) itself; else it writes tmp and an ADD_LN (pre-LN:
 * ADD) op follows. Returns the tensor written. */
static int32_t linear_residual(xf_plan_t *p, int32_t l, enum xf_op_kind kind, int32_t in,
                               int32_t k, int32_t res, int fuse, const char *tmp,
                               const char *name, int32_t which)
{
    size_t bytes = (size_t)p->n_tokens * (size_t)p->m->info.d_model * 4;
    int32_t h;

    if (fuse) {
        int32_t q = q8_quant(p, l, in, k, kind);
        h = add_tensor(p, bytes, name, l);
        xf_plan_op_t *o = add_op(p, kind, l, in, res, h, q);
        o->which = which;
        o->row_block = p->m->q8 ? XF_PLAN_Q8_ROW_BLOCK : 1;
        return h;
    }
    int32_t t = add_tensor(p, bytes, tmp, l);
    add_op(p, kind, l, in, -1, t, q8_quant(p, l, in, k, kind));
    h = add_tensor(p, bytes, name, l);
    add_op(p, p->m->info.pre_ln ? XF_OP_ADD : XF_OP_ADD_LN, l, t, res, h, -1)->which = which;
    return h;
}

/* One encoder layer from input x; returns the output tensor in *y. */
static int build_layer(xf_plan_t *p, int32_t l, int32_t x, int32_t *y, xf_diag_t *diag)
{
    const xf_model_t *m = p->m;
    const xf_layer_t *L = &m->layers[l];
    size_t N = (size_t)p->n_tokens, D = (size_t)m->info.d_model;
    size_t da = (size_t)L->n_head * (size_t)L->d_head, ff = (size_t)L->d_ff;
    int32_t ain, qkv, planes, att, h1, f1, h2, r0 = 0, rc;

    if (m->info.pre_ln) {
        ain = add_tensor(p, N * D * 4, "ln1", l);
        add_op(p, XF_OP_LN, l, x, -1, ain, -1)->which = XF_W_LN1;
    } else {
        ain = x;
    }
    qkv = add_tensor(p, N * 3 * da * 4, "qkv", l);
    add_op(p, XF_OP_QKV, l, ain, -1, qkv, q8_quant(p, l, ain, (int32_t)D, XF_OP_QKV));
    if (!p->counting) {
        rc = plan_layer_runs(p, l, &r0, diag);
        if (rc)
            return rc;
    }
    /* The head split, unless every run's variant reads the QKV output's rows in place (the
     * dense family-T kernel: xf_at_reads_strided). Counting keeps it (an upper bound). */
    int strided = !p->counting;
    for (int32_t i = 0; strided && i < p->runs_per_layer; i++)
        strided = xf_at_reads_strided(p->runs[r0 + i].attn->vt);
    if (strided) {
        planes = qkv;
    } else {
        planes = add_tensor(p, 3 * N * da * 4, "qkv_planes", l);
        add_op(p, XF_OP_SPLIT, l, qkv, -1, planes, -1);
    }
    att = add_tensor(p, N * da * 4, "attn_out", l);
    /* Per run: its workspace and state tensors and up to four ops (counted at the most). */
    for (int32_t i = 0; i < p->runs_per_layer; i++) {
        const xf_plan_run_t *R = p->counting ? NULL : &p->runs[r0 + i];
        const xf_attn_vtbl *vt = R ? R->attn->vt : NULL;
        int stateful = !R || (vt->flags & XF_ATTN_STATEFUL);
        size_t ws = R ? R->ws_offset_thread + (size_t)p->n_threads * align_up(R->pl.ws_per_thread)
                      : 1;
        int32_t wt = ws > 0 ? add_tensor(p, ws, "attn_ws", l) : -1;
        int32_t st = -1;
        xf_plan_op_t *o;
        if (stateful) {
            st = add_tensor(p, (size_t)(R ? R->s1 - R->s0 : 1) * sizeof(void *), "attn_state", l);
            o = add_op(p, XF_OP_ATTN_STATE, l, -1, -1, -1, -1);
            o->run = r0 + i;
            o->aux = st;
            use_tensor(p, st, last_op(p), 1);
        }
        if (!R || vt->ops->prepare)
            add_op(p, XF_OP_ATTN_PREP, l, planes, ain, -1, wt)->run = r0 + i;
        o = add_op(p, XF_OP_ATTN, l, planes, ain, att, wt);
        o->run = r0 + i;
        o->aux = st;
        o->which = strided;
        use_tensor(p, st, last_op(p), 0);
        if (stateful && (!R || vt->ops->state_update)) {
            o = add_op(p, XF_OP_ATTN_UPDATE, l, planes, ain, att, wt);
            o->run = r0 + i;
            o->aux = st;
            use_tensor(p, st, last_op(p), 0);
        }
    }
    /* Fused (fuse_residual): OPROJ writes ln1_out itself, its rows' residual (+ LN) done by
     * the thread that computed them; likewise FFN2 and ln2_out. */
    const int fuse = fuse_residual(p);
    int32_t chain0 = p->n_ops;   /* the int8 row chain's first op (q8_chain) */
    /* fp32 fused: the rows stay with their thread from FFN1 to FFN2 (FFN1 split by rows too;
     * pre-LN's LN2 op before it takes the same rows): no barrier between those ops. Not
     * after OPROJ: the attention output and the layer input would then stay live through
     * FFN1 (extend_lifetimes), 12 % more arena at b1n128 than the lifetime lower bound. */
    const int chain = fuse && !m->q8;
    h1 = linear_residual(p, l, XF_OP_OPROJ, att, (int32_t)da, x, fuse, "attn_proj", "ln1_out",
                         XF_W_LN1);
    if (m->info.pre_ln) {
        int32_t y2 = add_tensor(p, N * D * 4, "ln2", l);
        xf_plan_op_t *o = add_op(p, XF_OP_LN, l, h1, -1, y2, -1);
        o->which = XF_W_LN2;
        o->row_block = chain;
        o->no_barrier = chain;
        ain = y2;
    } else {
        ain = h1;
    }
    f1 = add_tensor(p, N * ff * 4, "ffn1", l);
    {
        xf_plan_op_t *o = add_op(p, XF_OP_FF1, l, ain, -1, f1,
                                 q8_quant(p, l, ain, (int32_t)D, XF_OP_FF1));
        o->row_block = chain;
        o->no_barrier = chain;
    }
    h2 = linear_residual(p, l, XF_OP_FF2, f1, (int32_t)ff, h1, fuse, "ffn2", "ln2_out", XF_W_LN2);
    if (q8_chain(p) && !p->counting && p->n_ops <= p->cap_ops) {
        for (int32_t i = chain0; i < p->n_ops; i++) {
            p->ops[i].row_block = XF_PLAN_Q8_ROW_BLOCK;
            p->ops[i].no_barrier = i + 1 < p->n_ops;
        }
        p->ops[chain0].quant_in = 1;
    }
    *y = h2;
    return 0;
}

/* The whole graph: embeddings, the layers, the final LayerNorm, pooling and heads. */
static int build_graph(xf_plan_t *p, xf_diag_t *diag)
{
    const xf_model_t *m = p->m;
    size_t N = (size_t)p->n_tokens, D = (size_t)m->info.d_model, B = (size_t)p->n_seq;
    int32_t x, rc;

    p->n_t = p->n_ops = p->n_runs = 0;
    p->overflow = 0;
    x = add_tensor(p, N * D * 4, "embeddings", -1);
    add_op(p, XF_OP_EMBED, -1, -1, -1, x, -1);
    for (int32_t l = 0; l < m->info.n_layer; l++) {
        int32_t y;
        rc = build_layer(p, l, x, &y, diag);
        if (rc)
            return rc;
        x = y;
    }
    if (m->info.pre_ln && m->final_ln_g.data) {
        int32_t z = add_tensor(p, N * D * 4, "final_ln", -1);
        add_op(p, XF_OP_LN, -1, x, -1, z, -1)->which = XF_W_FINAL;
        x = z;
    }
    p->final_hidden = x;
    p->heads_ws = add_tensor(p, 2 * B * D * 4, "heads", -1);
    add_op(p, XF_OP_POOL, -1, x, -1, -1, p->heads_ws);
    add_op(p, XF_OP_POOLER, -1, p->heads_ws, -1, -1, -1);
    add_op(p, XF_OP_POOL_END, -1, p->heads_ws, -1, -1, -1);
    add_op(p, XF_OP_HEAD_DENSE, -1, p->heads_ws, -1, -1, -1);
    add_op(p, XF_OP_HEAD_TANH, -1, p->heads_ws, -1, -1, -1);
    add_op(p, XF_OP_CLS, -1, p->heads_ws, -1, -1, -1);
    return 0;
}

/* ---- offsets ---------------------------------------------------------------------------- */

/* An op without a barrier after it (no_barrier: fp32 FF1 row splits, int8 row chains) lets a
 * thread start the next op while another still reads this one's inputs: every tensor used in
 * such an op stays live until the next barrier, so that nothing written after it can take
 * its memory. */
static void extend_lifetimes(xf_plan_t *p)
{
    for (int32_t i = 0; i < p->n_t; i++) {
        xf_plan_tensor_t *t = &p->t[i];
        while (t->last >= 0 && t->last + 1 < p->n_ops && p->ops[t->last].no_barrier)
            t->last++;
    }
}

static int cmp_size_desc(const void *a, const void *b, void *arg)
{
    const xf_plan_tensor_t *base = arg;
    const xf_plan_tensor_t *x = &base[*(const int32_t *)a];
    const xf_plan_tensor_t *y = &base[*(const int32_t *)b];

    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

static int cmp_offset(const void *a, const void *b, void *arg)
{
    const xf_plan_tensor_t *base = arg;
    const xf_plan_tensor_t *x = &base[*(const int32_t *)a];
    const xf_plan_tensor_t *y = &base[*(const int32_t *)b];

    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return 0;
}

/* Greedy by size: each tensor, largest first, goes to the lowest offset where it overlaps no
 * already placed tensor whose lifetime overlaps its own. Returns the arena size. */
static size_t assign_offsets(xf_plan_t *p)
{
    int32_t *order = p->order, *live = p->order + p->n_t;
    size_t arena = 0;

    for (int32_t i = 0; i < p->n_t; i++)
        order[i] = i;
    qsort_r(order, (size_t)p->n_t, sizeof *order, cmp_size_desc, p->t);
    for (int32_t k = 0; k < p->n_t; k++) {
        xf_plan_tensor_t *t = &p->t[order[k]];
        int32_t n_live = 0;
        size_t at = 0;

        for (int32_t j = 0; j < k; j++) {
            const xf_plan_tensor_t *u = &p->t[order[j]];
            if (u->last >= t->first && t->last >= u->first)
                live[n_live++] = order[j];
        }
        qsort_r(live, (size_t)n_live, sizeof *live, cmp_offset, p->t);
        for (int32_t j = 0; j < n_live; j++) {
            const xf_plan_tensor_t *u = &p->t[live[j]];
            if (u->offset >= at + t->bytes)
                break;
            if (u->offset + u->bytes > at)
                at = u->offset + u->bytes;
        }
        t->offset = at;
        if (at + t->bytes > arena)
            arena = at + t->bytes;
    }
    return arena;
}

/* ---- build ------------------------------------------------------------------------------ */

static int check_shape(const xf_plan_t *p, const xf_batch_t *s, xf_diag_t *diag)
{
    int32_t maxpos = p->m->info.max_positions;

    if (s->n_seq < 0)
        return xf_diag_set(diag, -EINVAL, "batch: n_seq %d < 0", (int)s->n_seq);
    if (s->n_seq == 0)
        return 0;
    if (!s->cu_len)
        return xf_diag_set(diag, -EINVAL, "batch: cu_len is NULL");
    if (s->cu_len[0] != 0)
        return xf_diag_set(diag, -EINVAL, "batch: cu_len[0] = %d, want 0", (int)s->cu_len[0]);
    for (int32_t b = 0; b < s->n_seq; b++) {
        int32_t n = s->cu_len[b + 1] - s->cu_len[b];
        if (s->cu_len[b + 1] < s->cu_len[b])
            return xf_diag_set(diag, -EINVAL, "batch: cu_len decreases at sequence %d (%d < %d)",
                               (int)b, (int)s->cu_len[b + 1], (int)s->cu_len[b]);
        if (n == 0)
            return xf_diag_set(diag, -EINVAL, "batch: sequence %d is empty", (int)b);
        if (n > maxpos)
            return xf_diag_set(diag, XF_ETOOLONG,
                               "batch: sequence %d has %d tokens, the model allows %d", (int)b,
                               (int)n, (int)maxpos);
    }
    return 0;
}

static double layer_flops(const xf_plan_t *p, int32_t l)
{
    const xf_layer_t *L = &p->m->layers[l];
    double N = p->n_tokens, D = p->m->info.d_model;
    double da = (double)L->n_head * L->d_head, ff = L->d_ff;
    double f = 2.0 * N * (3.0 * D * da + da * D + D * ff + ff * D);

    for (int32_t b = 0; b < p->n_seq; b++) {
        double n = (double)p->cu_len[b + 1] - p->cu_len[b];
        const xf_attn_t *a = p->seq_attn[b];
        if (a->vt && a->vt->name && !strcmp(a->vt->name, "dense"))
            f += 4.0 * n * n * da;
    }
    return f;
}

static void compute_stats(xf_plan_t *p, size_t arena)
{
    xf_plan_stats_t *st = &p->stats;
    size_t naive = 0, lb = 0;

    for (int32_t i = 0; i < p->n_t; i++)
        naive += p->t[i].bytes;
    for (int32_t o = 0; o < p->n_ops; o++) {
        size_t live = 0;
        for (int32_t i = 0; i < p->n_t; i++)
            if (p->t[i].first <= o && o <= p->t[i].last)
                live += p->t[i].bytes;
        if (live > lb)
            lb = live;
    }
    st->arena_bytes = arena;
    st->naive_bytes = naive;
    st->lower_bound_bytes = lb;
    st->n_tensors = p->n_t;
    st->n_seq = p->n_seq;
    st->n_tokens = p->n_tokens;
    st->max_len = p->max_len;
    st->flops = 0;
    for (int32_t l = 0; l < p->m->info.n_layer; l++)
        st->flops += layer_flops(p, l);
    /* Fallbacks: sequences of the batch that took the dense path, the most over layers (every
     * layer has the same runs, in layer order). */
    st->dense_fallbacks = 0;
    for (int32_t l = 0; l < p->m->info.n_layer && p->runs_per_layer > 0; l++) {
        int32_t acc = 0;
        for (int32_t r = 0; r < p->runs_per_layer; r++)
            acc += p->runs[l * p->runs_per_layer + r].pl.dense_fallbacks;
        if (acc > st->dense_fallbacks)
            st->dense_fallbacks = acc;
    }
}

int xf_plan_build(xf_plan_t *p, const xf_batch_t *shape, int n_threads, xf_diag_t *diag)
{
    const xf_model_t *m;
    int32_t B, N, L, runs, need_t, need_ops;
    int rc;

    if (!p || !shape)
        return xf_diag_set(diag, -EINVAL, "plan: NULL argument");
    m = p->m;
    p->built = 0;
    rc = check_shape(p, shape, diag);
    if (rc)
        return rc;
    B = shape->n_seq;
    N = B > 0 ? shape->cu_len[B] : 0;
    L = m->info.n_layer;
    rc = ensure_shape_storage(p, B, N > 0 ? N : 1);
    if (rc)
        return xf_diag_set(diag, rc, "plan: out of memory");

    p->n_threads = n_threads > 0 ? n_threads : 1;
    p->n_seq = B;
    p->n_tokens = N;
    p->max_len = 0;
    p->cu_len[0] = 0;
    for (int32_t b = 0; b < B; b++) {
        int32_t n = shape->cu_len[b + 1] - shape->cu_len[b];
        p->cu_len[b + 1] = shape->cu_len[b + 1];
        if (n > p->max_len)
            p->max_len = n;
        for (int32_t t = shape->cu_len[b]; t < shape->cu_len[b + 1]; t++)
            p->pos_ids[t] = t - shape->cu_len[b] + m->info.position_offset;
        p->seq_attn[b] = xf_plan_seq_attn(m, shape, b);
    }
    if (N > 0)
        memset(p->zero_types, 0, (size_t)N * sizeof *p->zero_types);

    p->n_t = p->n_ops = p->n_runs = p->runs_per_layer = 0;
    p->final_hidden = p->heads_ws = -1;
    p->counting = p->overflow = 0;
    memset(&p->stats, 0, sizeof p->stats);
    if (B == 0) {
        p->built = 1;
        return 0;
    }

    runs = count_runs(p);
    p->runs_per_layer = runs;
    /* Capacity from the graph itself: a counting pass of the same build. */
    p->counting = 1;
    rc = build_graph(p, diag);
    p->counting = 0;
    if (rc)
        return rc;
    need_t = p->n_t;
    need_ops = p->n_ops;
    if (grow((void **)&p->t, &p->cap_t, need_t, sizeof *p->t) ||
        grow((void **)&p->ops, &p->cap_ops, need_ops, sizeof *p->ops) ||
        grow((void **)&p->runs, &p->cap_runs, L * runs > 0 ? L * runs : 1, sizeof *p->runs) ||
        grow((void **)&p->order, &p->cap_order, 2 * need_t, sizeof *p->order))
        return xf_diag_set(diag, -ENOMEM, "plan: out of memory");
    rc = build_graph(p, diag);
    if (rc)
        return rc;
    if (p->overflow)
        return xf_diag_set(diag, -EOVERFLOW, "plan: the graph outgrew its counted capacity "
                           "(%d tensors, %d ops)", (int)need_t, (int)need_ops);

    extend_lifetimes(p);
    compute_stats(p, assign_offsets(p));
    p->built = 1;
    return 0;
}
