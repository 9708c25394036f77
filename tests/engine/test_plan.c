/* Tests of the memory planner (plan.c): no two tensors with overlapping lifetimes share bytes,
 * lower bound <= arena <= naive, stats for BERT-base shapes (arena / lower bound printed),
 * heterogeneous layers, variant runs and their workspaces, shape errors, storage reuse. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../helpers/xf_test.h"

#include "engine/model.h"
#include "engine/plan_internal.h"

/* ---- a shape-only model (no weights: planning needs shapes alone) ---------------------- */

typedef struct shape_model {
    xf_model_t m;
    xf_layer_t layers[12];
    xf_layer_info_t info[12];
} shape_model_t;

static void shape_init(shape_model_t *s, int32_t L, int32_t D, const int32_t *heads,
                       const int32_t *dh, const int32_t *ff, int32_t maxpos, int pre_ln)
{
    memset(s, 0, sizeof *s);
    s->m.info.n_layer = L;
    s->m.info.d_model = D;
    s->m.info.vocab_size = 30522;
    s->m.info.max_positions = maxpos;
    s->m.info.type_vocab_size = 2;
    s->m.info.pre_ln = pre_ln;
    s->m.info.layers = s->info;
    s->m.layers = s->layers;
    s->m.layer_info = s->info;
    if (pre_ln)
        s->m.final_ln_g.data = (const float *)s;   /* only tested for presence */
    for (int32_t l = 0; l < L; l++) {
        s->layers[l].n_head = s->info[l].n_head = heads[l];
        s->layers[l].d_head = s->info[l].d_head = dh[l];
        s->layers[l].d_ff = s->info[l].d_ff = ff[l];
    }
}

static void bert_base(shape_model_t *s)
{
    int32_t h[12], d[12], f[12];
    for (int i = 0; i < 12; i++) {
        h[i] = 12;
        d[i] = 64;
        f[i] = 3072;
    }
    shape_init(s, 12, 768, h, d, f, 512, 0);
}

/* ---- a test variant with known workspace sizes ----------------------------------------- */

static int fake_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    (void)params;
    memset(out, 0, sizeof *out);
    out->ws_shared = 100 * (size_t)sh->n_seq;
    out->ws_per_thread = 1000 + (size_t)sh->n_head;
    out->n_items = sh->n_seq * sh->n_head;
    out->dense_fallbacks = sh->n_seq;   /* pretend every sequence fell back */
    (void)nth;
    return 0;
}

static int fake_plan_reject(const void *params, const xf_attn_shape *sh, int nth,
                            xf_attn_plan *out)
{
    (void)params;
    (void)sh;
    (void)nth;
    (void)out;
    return XF_EPARAM;
}

static int fake_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                        const xf_attn_plan *pl, const void *wss, void *wst, int ith, int nth)
{
    (void)params, (void)sh, (void)io, (void)pl, (void)wss, (void)wst, (void)ith, (void)nth;
    return 0;
}

static const xf_attn_ops fake_ops = { .plan = fake_plan, .forward = fake_forward };
static const xf_attn_ops reject_ops = { .plan = fake_plan_reject, .forward = fake_forward };
static const xf_attn_vtbl fake_vt = { .name = "fake", .family = XF_FAM_T, .ops = &fake_ops };
static const xf_attn_vtbl fake_vt2 = { .name = "fake2", .family = XF_FAM_T, .ops = &fake_ops };
static const xf_attn_vtbl reject_vt = {
    .name = "reject", .family = XF_FAM_T, .ops = &reject_ops,
};
static const xf_attn_t fake_attn = { .vt = &fake_vt };
static const xf_attn_t fake_attn2 = { .vt = &fake_vt2 };
static const xf_attn_t reject_attn = { .vt = &reject_vt };

/* ---- checks ----------------------------------------------------------------------------- */

static void check_plan(const xf_plan_t *p)
{
    xf_plan_stats_t st;

    xf_plan_get_stats(p, &st);
    assert_int_equal(st.n_tensors, p->n_t);
    for (int32_t i = 0; i < p->n_t; i++) {
        const xf_plan_tensor_t *a = &p->t[i];
        assert_true(a->first >= 0 && a->first <= a->last && a->last < p->n_ops);
        assert_int_equal(a->offset % XF_PLAN_ALIGN, 0);
        assert_int_equal(a->bytes % XF_PLAN_ALIGN, 0);
        assert_true(a->offset + a->bytes <= st.arena_bytes);
        for (int32_t j = i + 1; j < p->n_t; j++) {
            const xf_plan_tensor_t *b = &p->t[j];
            int live = a->first <= b->last && b->first <= a->last;
            int mem = a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
            if (live && mem)
                fail_msg("tensors %d (%s, layer %d, ops %d..%d, [%zu,+%zu)) and %d (%s, layer "
                         "%d, ops %d..%d, [%zu,+%zu)) overlap", (int)i, a->what, (int)a->layer,
                         (int)a->first, (int)a->last, a->offset, a->bytes, (int)j, b->what,
                         (int)b->layer, (int)b->first, (int)b->last, b->offset, b->bytes);
        }
    }
    assert_true(st.arena_bytes >= st.lower_bound_bytes);
    assert_true(st.arena_bytes <= st.naive_bytes);
    /* Every op's inputs are made before it and live through it. */
    for (int32_t o = 0; o < p->n_ops; o++) {
        const xf_plan_op_t *op = &p->ops[o];
        int32_t ins[2] = { op->in0, op->in1 };
        for (int k = 0; k < 2; k++)
            if (ins[k] >= 0)
                assert_true(p->t[ins[k]].first < o && p->t[ins[k]].last >= o);
        if (op->out >= 0)
            assert_true(p->t[op->out].first <= o && p->t[op->out].last >= o);
        /* no barrier after it: what it uses lives on into the next op (its memory is not
         * handed to a tensor the next op writes while a peer may still read it) */
        int32_t used[4] = { op->in0, op->in1, op->out, op->ws };
        for (int k = 0; k < 4 && op->no_barrier; k++)
            if (used[k] >= 0)
                assert_true(o + 1 < p->n_ops && p->t[used[k]].last > o);
        /* ... and it and the next op own the same rows on every thread, in one layer */
        if (op->no_barrier) {
            assert_true(op->row_block > 0 && o + 1 < p->n_ops);
            assert_int_equal(p->ops[o + 1].row_block, op->row_block);
            assert_int_equal(p->ops[o + 1].layer, op->layer);
        }
        /* fused OPROJ/FF2 ops own rows (int8: whole row groups of the int8 kernels) */
        if ((op->kind == XF_OP_OPROJ || op->kind == XF_OP_FF2) && op->which)
            assert_int_equal(op->row_block, p->m->q8 ? XF_PLAN_Q8_ROW_BLOCK : 1);
        assert_true(!op->quant_in || (op->kind == XF_OP_OPROJ && op->row_block > 0));
        /* an op owns rows only when fused or next to an op without a barrier */
        if (op->row_block > 0)
            assert_true(((op->kind == XF_OP_OPROJ || op->kind == XF_OP_FF2) && op->which) ||
                        op->no_barrier || (o > 0 && p->ops[o - 1].no_barrier));
    }
}

static void build_lengths(xf_plan_t *p, const int32_t *len, int32_t B, const xf_attn_t **attn,
                          int nth, int want_rc)
{
    int32_t cu[64];
    xf_batch_t b = { 0 };
    xf_diag_t diag = { 0 };
    int rc;

    cu[0] = 0;
    for (int32_t i = 0; i < B; i++)
        cu[i + 1] = cu[i] + len[i];
    b.n_seq = B;
    b.cu_len = cu;
    b.attn = attn;
    rc = xf_plan_build(p, &b, nth, &diag);
    if (rc != want_rc)
        fail_msg("xf_plan_build: %d (%s), want %d", rc, diag.msg, want_rc);
    if (!rc)
        check_plan(p);
}

static const int32_t varlen16[16] = { 42,  153, 224, 213, 203, 24,  73,  38,
                                      134, 202, 123, 128, 174, 105, 209, 61 };

static void report(const char *name, const xf_plan_t *p)
{
    xf_plan_stats_t st;
    xf_plan_get_stats(p, &st);
    print_message("# plan %-14s N=%5d tensors=%3d arena=%9zu lower_bound=%9zu naive=%10zu "
                  "arena/lb=%.4f naive/arena=%.2f GFLOP=%.2f\n",
                  name, (int)st.n_tokens, (int)st.n_tensors, st.arena_bytes,
                  st.lower_bound_bytes, st.naive_bytes,
                  (double)st.arena_bytes / (double)st.lower_bound_bytes,
                  (double)st.naive_bytes / (double)st.arena_bytes, st.flops / 1e9);
}

/* BERT-base shapes: arena within 10% of the lower bound (DESIGN.md §10 memory goal). */
static void test_bert_base_shapes(void **state)
{
    shape_model_t s;
    xf_plan_t *p = NULL;
    const xf_attn_t *attn[32];
    int32_t len128[32];
    xf_plan_stats_t st;
    (void)state;

    bert_base(&s);
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    for (int i = 0; i < 32; i++) {
        len128[i] = 128;
        attn[i] = NULL;
    }
    struct {
        const char *name;
        const int32_t *len;
        int32_t B;
    } cases[] = { { "b1n128", len128, 1 }, { "b32n128", len128, 32 },
                  { "varlen16", varlen16, 16 }, { "b1n16", (const int32_t[]){ 16 }, 1 },
                  { "b1n512", (const int32_t[]){ 512 }, 1 } };
    /* With the test variant, then with the real dense variant when the attention component
     * provides it (its per-thread tiles are part of the arena). */
    for (int v = 0; v < 2; v++) {
        char name[64];
        if (v == 1) {
            if (!xf_attn_find("dense"))
                break;
            s.m.attn = NULL;   /* the default: dense */
        }
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            build_lengths(p, cases[c].len, cases[c].B, attn, 2, 0);
            snprintf(name, sizeof name, "%s%s", cases[c].name, v ? "/dense" : "");
            report(name, p);
            xf_plan_get_stats(p, &st);
            /* The goal of DESIGN.md §10: within 10% of the lifetime lower bound. */
            assert_true((double)st.arena_bytes <= 1.10 * (double)st.lower_bound_bytes);
            if (v == 1)
                assert_int_equal(st.dense_fallbacks, 0);
        }
    }
    xf_plan_free(p);
}

/* Exact sizes, counts and FLOPs of a small heterogeneous model. */
static void test_heterogeneous_layers(void **state)
{
    shape_model_t s;
    xf_plan_t *p = NULL;
    const int32_t heads[3] = { 4, 2, 3 }, dh[3] = { 8, 16, 8 }, ff[3] = { 64, 40, 96 };
    const int32_t len[3] = { 5, 1, 9 };
    const int32_t N = 15, D = 32;
    xf_plan_stats_t st;
    double flops = 0;
    int seen[3] = { 0 };
    (void)state;

    shape_init(&s, 3, D, heads, dh, ff, 64, 0);
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    build_lengths(p, len, 3, NULL, 3, 0);
    xf_plan_get_stats(p, &st);
    assert_int_equal(st.n_seq, 3);
    assert_int_equal(st.n_tokens, N);
    assert_int_equal(st.max_len, 9);
    /* Per layer 8 tensors + 1 workspace (one run), plus embeddings and head temporaries. */
    assert_int_equal(st.n_tensors, 3 * 9 + 2);
    for (int32_t i = 0; i < p->n_t; i++) {
        const xf_plan_tensor_t *t = &p->t[i];
        size_t want = 0;
        if (t->layer < 0)
            continue;
        int32_t da = heads[t->layer] * dh[t->layer];
        if (!strcmp(t->what, "qkv") || !strcmp(t->what, "qkv_planes"))
            want = (size_t)N * 3 * da * 4;
        else if (!strcmp(t->what, "ffn1"))
            want = (size_t)N * ff[t->layer] * 4;
        else if (!strcmp(t->what, "attn_out"))
            want = (size_t)N * da * 4;
        else if (!strcmp(t->what, "attn_ws")) {
            /* fake variant: shared 100·B (aligned) + nth · (1000 + h) (aligned) */
            want = 320 + 3 * ((1000 + (size_t)heads[t->layer] + 63) / 64 * 64);
            seen[t->layer]++;
        } else
            want = (size_t)N * D * 4;
        assert_int_equal(t->bytes, (want + 63) / 64 * 64);
    }
    for (int l = 0; l < 3; l++) {
        double da = heads[l] * dh[l];
        assert_int_equal(seen[l], 1);
        flops += 2.0 * N * (3 * D * da + da * D + 2.0 * D * ff[l]);
    }
    /* The fake variant is not dense: no attention FLOPs are counted. */
    assert_true(st.flops == flops);
    assert_int_equal(st.dense_fallbacks, 3);
    xf_plan_free(p);

    /* Pre-LN: two more LayerNorm tensors per layer and the final one; with the residual
     * adds fused into OPROJ and FFN2 (one thread: always), no attn_proj and ffn2 tensors. */
    shape_init(&s, 3, D, heads, dh, ff, 64, 1);
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    p->fuse_rows = 0;
    build_lengths(p, len, 3, NULL, 1, 0);
    xf_plan_get_stats(p, &st);
    assert_int_equal(st.n_tensors, 3 * 11 + 3);
    p->fuse_rows = XF_FUSE_ROWS;
    build_lengths(p, len, 3, NULL, 1, 0);
    xf_plan_get_stats(p, &st);
    assert_int_equal(st.n_tensors, xf_kernels()->nth_exact ? 3 * 9 + 3 : 3 * 11 + 3);
    xf_plan_free(p);
}

/* OPROJ and FFN2 take over their residual + LayerNorm ops (XF_FUSE_ROWS): at b1n128 on 2
 * threads the plan has no ADD_LN op, 24 ops fewer, OPROJ reads the layer input as its
 * residual and writes ln1_out, FFN2 reads ln1_out and writes ln2_out, FFN1 splits by rows with
 * no barrier before FFN2, and the arena is no bigger; at b1n16 (8 tokens per thread) nothing
 * is fused. */
static void test_fused_residual_plan(void **state)
{
    shape_model_t s;
    xf_plan_t *p = NULL;
    int32_t len128 = 128, len16 = 16, n_ops[2];
    size_t arena[2];
    xf_plan_stats_t st;
    (void)state;

    bert_base(&s);
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    if (!xf_kernels()->nth_exact) {   /* the cblas Linear (XF_CPU=generic): never fused */
        build_lengths(p, &len128, 1, NULL, 2, 0);
        for (int32_t i = 0; i < p->n_ops; i++)
            assert_true(p->ops[i].kind != XF_OP_OPROJ || !p->ops[i].which);
        xf_plan_free(p);
        return;
    }
    for (int fuse = 0; fuse < 2; fuse++) {
        p->fuse_rows = fuse ? XF_FUSE_ROWS : 0;
        build_lengths(p, &len128, 1, NULL, 2, 0);
        xf_plan_get_stats(p, &st);
        n_ops[fuse] = p->n_ops;
        arena[fuse] = st.arena_bytes;
        int n_fused = 0, n_resid = 0;
        int32_t layer_in = -1;
        for (int32_t i = 0; i < p->n_ops; i++) {
            const xf_plan_op_t *o = &p->ops[i];
            if (o->kind == XF_OP_QKV)
                layer_in = o->in0;
            n_resid += o->kind == XF_OP_ADD_LN || o->kind == XF_OP_ADD;
            if (o->kind == XF_OP_FF1) {   /* the row chain FFN1 → FFN2: no barrier between */
                assert_int_equal(o->row_block, fuse);
                assert_int_equal(o->no_barrier, fuse);
                assert_int_equal(p->ops[i + 1].kind, XF_OP_FF2);
            } else {
                assert_int_equal(o->no_barrier, 0);
            }
            if ((o->kind != XF_OP_OPROJ && o->kind != XF_OP_FF2) || !o->which)
                continue;
            n_fused++;
            assert_true(o->in1 >= 0 && o->out >= 0);
            if (o->kind == XF_OP_OPROJ) {
                assert_int_equal(o->which, XF_W_LN1);
                assert_int_equal(o->in1, layer_in);
                assert_string_equal(p->t[o->out].what, "ln1_out");
            } else {
                assert_int_equal(o->which, XF_W_LN2);
                assert_string_equal(p->t[o->in1].what, "ln1_out");
                assert_int_equal(p->t[o->in1].layer, o->layer);
                assert_string_equal(p->t[o->out].what, "ln2_out");
            }
        }
        assert_int_equal(n_fused, fuse ? 24 : 0);
        assert_int_equal(n_resid, fuse ? 0 : 24);
    }
    assert_int_equal(n_ops[0] - n_ops[1], 24);
    assert_true(arena[1] <= arena[0]);
    /* 8 tokens per thread: not fused by default; a smaller batch reuses the storage */
    const void *o0 = p->ops;
    build_lengths(p, &len16, 1, NULL, 2, 0);
    assert_ptr_equal(p->ops, o0);
    for (int32_t i = 0; i < p->n_ops; i++)
        assert_true(p->ops[i].which == 0 ||
                    (p->ops[i].kind != XF_OP_OPROJ && p->ops[i].kind != XF_OP_FF2));
    xf_plan_free(p);
}

/* Mixed variants: one run per stretch of equal variants, each with its workspace. */
static void test_runs(void **state)
{
    shape_model_t s;
    xf_plan_t *p = NULL;
    const int32_t len[5] = { 3, 4, 5, 6, 7 };
    const xf_attn_t *attn[5] = { &fake_attn, NULL, &fake_attn2, &fake_attn2, &fake_attn };
    int32_t ws = 0;
    (void)state;

    bert_base(&s);
    s.m.info.n_layer = 2;
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    build_lengths(p, len, 5, attn, 2, 0);
    /* fake, default(=fake) | fake2, fake2 | fake: 3 runs per layer. */
    assert_int_equal(p->runs_per_layer, 3);
    assert_int_equal(p->n_runs, 6);
    assert_int_equal(p->runs[0].s0, 0);
    assert_int_equal(p->runs[0].s1, 2);
    assert_int_equal(p->runs[1].s0, 2);
    assert_int_equal(p->runs[1].s1, 4);
    assert_int_equal(p->runs[2].s0, 4);
    assert_int_equal(p->runs[2].s1, 5);
    for (int32_t i = 0; i < p->n_t; i++)
        ws += !strcmp(p->t[i].what, "attn_ws");
    assert_int_equal(ws, 6);

    /* A variant that rejects the shape: XF_EPARAM. */
    attn[1] = &reject_attn;
    build_lengths(p, len, 5, attn, 2, XF_EPARAM);
    xf_plan_free(p);
}

static void test_errors(void **state)
{
    shape_model_t s;
    xf_plan_t *p = NULL;
    xf_diag_t diag = { 0 };
    xf_batch_t b = { 0 };
    int32_t cu_bad0[3] = { 1, 2, 3 }, cu_dec[4] = { 0, 5, 3, 8 }, cu_empty[3] = { 0, 4, 4 };
    int32_t cu_long[4] = { 0, 10, 10 + 513, 530 }, cu_ok[3] = { 0, 512, 1024 };
    xf_plan_stats_t st;
    (void)state;

    bert_base(&s);
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    assert_int_equal(xf_plan_create(NULL, NULL), -EINVAL);
    assert_int_equal(xf_plan_build(p, NULL, 1, &diag), -EINVAL);
    b.n_seq = -1;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), -EINVAL);
    b.n_seq = 2;
    b.cu_len = NULL;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), -EINVAL);
    b.cu_len = cu_bad0;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), -EINVAL);
    assert_non_null(strstr(diag.msg, "cu_len[0]"));
    b.n_seq = 3;
    b.cu_len = cu_dec;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), -EINVAL);
    assert_non_null(strstr(diag.msg, "sequence 1"));
    b.n_seq = 2;
    b.cu_len = cu_empty;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), -EINVAL);
    b.n_seq = 3;
    b.cu_len = cu_long;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), XF_ETOOLONG);
    assert_int_equal(diag.code, XF_ETOOLONG);
    assert_non_null(strstr(diag.msg, "sequence 1 has 513 tokens"));
    /* Exactly max_positions is fine. */
    b.n_seq = 2;
    b.cu_len = cu_ok;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), 0);
    /* An empty batch plans nothing. */
    b.n_seq = 0;
    b.cu_len = NULL;
    assert_int_equal(xf_plan_build(p, &b, 1, &diag), 0);
    xf_plan_get_stats(p, &st);
    assert_int_equal(st.n_tensors, 0);
    assert_int_equal(st.arena_bytes, 0);
    assert_true(st.flops == 0);
    xf_plan_get_stats(NULL, &st);
    assert_int_equal(st.arena_bytes, 0);
    xf_plan_free(p);
    xf_plan_free(NULL);
}

/* Storage is reused: a smaller batch after a bigger one allocates nothing new. */
static void test_reuse(void **state)
{
    shape_model_t s;
    xf_plan_t *p = NULL;
    int32_t lens[16];
    const void *t0, *o0, *c0, *pos0;
    xf_plan_stats_t a, b;
    (void)state;

    bert_base(&s);
    s.m.attn = (xf_attn_t *)&fake_attn;
    assert_int_equal(xf_plan_create(&s.m, &p), 0);
    build_lengths(p, varlen16, 16, NULL, 2, 0);
    xf_plan_get_stats(p, &a);
    t0 = p->t;
    o0 = p->ops;
    c0 = p->cu_len;
    pos0 = p->pos_ids;
    for (int i = 0; i < 16; i++)
        lens[i] = 1 + i;
    build_lengths(p, lens, 16, NULL, 2, 0);
    build_lengths(p, lens, 3, NULL, 2, 0);
    build_lengths(p, varlen16, 16, NULL, 2, 0);
    assert_ptr_equal(p->t, t0);
    assert_ptr_equal(p->ops, o0);
    assert_ptr_equal(p->cu_len, c0);
    assert_ptr_equal(p->pos_ids, pos0);
    xf_plan_get_stats(p, &b);
    /* The same shape gives the same plan. */
    assert_int_equal(a.arena_bytes, b.arena_bytes);
    assert_int_equal(a.lower_bound_bytes, b.lower_bound_bytes);
    assert_int_equal(a.n_tensors, b.n_tensors);
    /* Position ids restart per sequence. */
    assert_int_equal(p->pos_ids[0], 0);
    assert_int_equal(p->pos_ids[41], 41);
    assert_int_equal(p->pos_ids[42], 0);
    assert_int_equal(p->pos_ids[42 + 152], 152);
    xf_plan_free(p);
}

XF_TEST_MAIN(cmocka_unit_test(test_bert_base_shapes), cmocka_unit_test(test_heterogeneous_layers),
             cmocka_unit_test(test_runs), cmocka_unit_test(test_fused_residual_plan),
             cmocka_unit_test(test_errors), cmocka_unit_test(test_reuse))
