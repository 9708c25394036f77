/* Tests of the packed forward pass (forward.c, ctx.c): equality with the padded double
 * reference of tests/ref (BERT, RoBERTa offset, DistilBERT, pre-LN, heterogeneous layers,
 * pooling, normalisation, heads), packing independence, identical output for 1-3 threads,
 * zero allocations in a steady-state forward (--wrap=malloc...), and the error paths.
 * Timings are printed, never asserted (XF_FWD_TIMING=1: BERT-base shape b1n128). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../helpers/hfmodel.h"
#include "../helpers/alloc_count.h"
#include "../helpers/xf_test.h"

#include <xformd/attention.h>
#include <xformd/forward.h>

#include "../ref/encoder_ref.h"
#include "engine/ctx.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/plan_internal.h"

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct batch_data {
    int32_t B, N;
    int32_t cu[33];
    int32_t ids[4096];
    int32_t types[4096];
} batch_data_t;

static void make_batch(batch_data_t *bd, const int32_t *len, int32_t B, int32_t vocab,
                       int32_t type_vocab, uint64_t seed)
{
    bd->B = B;
    bd->cu[0] = 0;
    for (int32_t b = 0; b < B; b++)
        bd->cu[b + 1] = bd->cu[b] + len[b];
    bd->N = bd->cu[B];
    for (int32_t t = 0; t < bd->N; t++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        bd->ids[t] = (int32_t)((seed >> 33) % (uint64_t)vocab);
        bd->types[t] = type_vocab > 1 ? (int32_t)((seed >> 20) % (uint64_t)type_vocab) : 0;
    }
}

static xf_batch_t as_batch(const batch_data_t *bd, int with_types)
{
    xf_batch_t b = { 0 };
    b.n_seq = bd->B;
    b.cu_len = bd->cu;
    b.ids = bd->ids;
    b.type_ids = with_types ? bd->types : NULL;
    return b;
}

/* >= 0: engine_run's plans take this fuse_rows (plan_internal.h) instead of the default. */
static int32_t g_fuse_rows = -1;

/* Plan + reserve + forward on a fresh context of nth threads. */
static int engine_run(const xf_model_t *m, const xf_batch_t *b, int nth, const xf_output_t *out,
                      xf_diag_t *diag)
{
    xf_ctx_opts_t co = { .n_threads = nth, .arena_chunk_bytes = 0 };
    xf_ctx_t *c = NULL;
    xf_plan_t *p = NULL;
    int rc;

    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_ctx_threads(c), nth);
    assert_int_equal(xf_plan_create(m, &p), 0);
    if (g_fuse_rows >= 0)
        p->fuse_rows = g_fuse_rows;
    rc = xf_plan_build(p, b, nth, diag);
    if (!rc)
        rc = xf_ctx_reserve(c, p);
    if (!rc)
        rc = xf_forward(c, m, p, b, out, diag);
    xf_plan_free(p);
    xf_ctx_free(c);
    return rc;
}

/* max |got - exp| / max(1, max |exp|): the hidden states after LayerNorm are O(1). */
static double rel_err(const float *got, const float *exp, size_t n)
{
    double md = 0, mx = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - exp[i]);
        if (!(d <= md))
            md = d;   /* NaN propagates */
        if (fabs(exp[i]) > mx)
            mx = fabs(exp[i]);
    }
    return md / mx;
}

/* Engine vs the padded double reference, within 1e-4 relative: the engine runs fp32 (GEMM
 * sums of <= 96 products, fp32 LayerNorm and online softmax), the reference double; over a few
 * layers the differences stay around 1e-6..1e-5, LayerNorm rescaling included. */
#define REF_TOL 1e-4

/* One engine run checked against the reference: its name, the outputs asked for and the
 * thread count. */
typedef struct ref_run {
    const char *name;
    int with_types;              /* pass the batch's token types */
    enum xf_pooling pool;
    int normalize;               /* -1: the model's default */
    int nth;
} ref_run_t;

/* Every rel_err within REF_TOL and unit rows when normalised; a failure names r. */
static void check_vs_ref(const xf_model_t *m, const batch_data_t *bd, const ref_run_t *r)
{
    const char *n = r->name;
    int32_t D = m->info.d_model, nl = m->info.n_labels;
    size_t nh = (size_t)bd->N * D, np = (size_t)bd->B * D, ng = (size_t)bd->B * nl;
    float *h = calloc(nh, 4), *hr = calloc(nh, 4), *pl = calloc(np, 4), *pr = calloc(np, 4);
    float *lg = calloc(ng + 1, 4), *lr = calloc(ng + 1, 4);
    xf_batch_t b = as_batch(bd, r->with_types);
    xf_output_t out = { .pooling = r->pool, .normalize = r->normalize, .pooled = pl,
                        .hidden = h, .logits = nl > 0 ? lg : NULL };
    xf_diag_t diag = { 0 };
    enum xf_pooling rp = r->pool == XF_POOL_DEFAULT ? m->info.pooling : r->pool;
    int rn = r->normalize < 0 ? m->info.normalize : r->normalize;
    double e;
    int rc;

    rc = engine_run(m, &b, r->nth, &out, &diag);
    if (!XF_CHECK_INT(n, rc, 0)) {
        print_message("# forward: %s\n", diag.msg);
        goto done;
    }
    if (!XF_CHECK_INT(n, xf_ref_forward(m, bd->B, bd->cu, bd->ids,
                                        r->with_types ? bd->types : NULL, rp, rn, hr, pr,
                                        nl > 0 ? lr : NULL),
                      0))
        goto done;
    e = rel_err(h, hr, nh);
    print_message("# %s: hidden rel err %.3g", n, e);
    XF_CHECK(n, e <= REF_TOL);
    e = rel_err(pl, pr, np);
    print_message(", pooled %.3g", e);
    XF_CHECK(n, e <= REF_TOL);
    if (nl > 0) {
        e = rel_err(lg, lr, ng);
        print_message(", logits %.3g", e);
        XF_CHECK(n, e <= REF_TOL);
    }
    print_message("\n");
    if (rn)
        for (int32_t row = 0; row < bd->B; row++) {
            double s = 0;
            for (int32_t i = 0; i < D; i++)
                s += (double)pl[(size_t)row * D + i] * pl[(size_t)row * D + i];
            XF_CHECK(n, fabs(sqrt(s) - 1) < 1e-5);   /* unit rows, fp32 rounding */
        }
done:
    free(h);
    free(hr);
    free(pl);
    free(pr);
    free(lg);
    free(lr);
    xf_cases_end();
}

/* Build the model o describes and check one run of bd against the reference. */
static void check_model(const xf_ref_model_opts_t *o, const batch_data_t *bd, const ref_run_t *r)
{
    xf_model_t *m = NULL;
    assert_int_equal(xf_ref_model_create(o, &m), 0);
    check_vs_ref(m, bd, r);
    xf_ref_model_free(m);
}

static const int32_t mix_len[5] = { 5, 1, 17, 9, 30 };

/* ---- tests ------------------------------------------------------------------------------ */

/* The tiny BERT, one batch, every pooling and thread count. */
static const ref_run_t bert_runs[] = {
    { "bert cls, 1 thread", 1, XF_POOL_CLS, 0, 1 },
    { "bert mean, no token types", 0, XF_POOL_MEAN, 0, 2 },
    { "bert pooler normalised, 3 threads", 1, XF_POOL_POOLER, 1, 3 },
    { "bert mean normalised", 1, XF_POOL_MEAN, 1, 2 },
};

static void test_bert_vs_ref(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    (void)state;

    xf_ref_model_opts_init(&o);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 7);
    for (size_t i = 0; i < sizeof bert_runs / sizeof bert_runs[0]; i++)
        check_vs_ref(m, &bd, &bert_runs[i]);
    /* Model defaults: pooling MEAN + normalise. */
    m->info.pooling = XF_POOL_MEAN;
    m->info.normalize = 1;
    check_vs_ref(m, &bd, &(ref_run_t){ "bert model defaults", 1, XF_POOL_DEFAULT, -1, 2 });
    xf_ref_model_free(m);

    /* tanh-GELU and ReLU FFNs, a 4-layer model. */
    xf_ref_model_opts_init(&o);
    o.act = XF_ACT_GELU_TANH;
    o.n_layer = 4;
    o.seed = 3;
    check_model(&o, &bd, &(ref_run_t){ "tanh-gelu, 4 layers", 1, XF_POOL_CLS, 0, 2 });
    o.act = XF_ACT_RELU;
    check_model(&o, &bd, &(ref_run_t){ "relu, 4 layers", 1, XF_POOL_CLS, 0, 2 });
}

static void test_heads(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    (void)state;

    /* BertForSequenceClassification: pooler then classifier. */
    xf_ref_model_opts_init(&o);
    o.head = XF_HEAD_BERT;
    o.n_labels = 3;
    o.seed = 11;
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 8);
    check_model(&o, &bd, &(ref_run_t){ "bert classifier", 1, XF_POOL_CLS, 0, 2 });

    /* RoBERTa: positions start at pad + 1 = 2, one token type, dense + tanh + out_proj. */
    xf_ref_model_opts_init(&o);
    o.arch = XF_ARCH_ROBERTA;
    o.position_offset = 2;
    o.type_vocab_size = 1;
    o.head = XF_HEAD_ROBERTA;
    o.has_pooler = 0;
    o.n_labels = 2;
    o.seed = 12;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, (const int32_t[]){ 64, 3, 7 }, 3, o.vocab_size, 1, 9);
    check_vs_ref(m, &bd, &(ref_run_t){ "roberta classifier", 0, XF_POOL_MEAN, 0, 2 });
    /* The last position row is used by a sequence of max_positions tokens. */
    assert_int_equal(m->pos_emb.rows, 66);
    xf_ref_model_free(m);

    /* DistilBERT: no token types, pre_classifier + ReLU + classifier. */
    xf_ref_model_opts_init(&o);
    o.arch = XF_ARCH_DISTILBERT;
    o.type_vocab_size = 0;
    o.head = XF_HEAD_DISTILBERT;
    o.has_pooler = 0;
    o.n_labels = 4;
    o.seed = 13;
    make_batch(&bd, mix_len, 5, o.vocab_size, 1, 10);
    check_model(&o, &bd, &(ref_run_t){ "distilbert classifier", 0, XF_POOL_CLS, 1, 2 });
}

static void test_pre_ln_and_heterogeneous(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    (void)state;

    xf_ref_model_opts_init(&o);
    o.pre_ln = 1;
    o.n_layer = 3;
    o.seed = 21;
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 11);
    check_model(&o, &bd, &(ref_run_t){ "pre-LN, 3 layers", 1, XF_POOL_MEAN, 0, 2 });

    /* Pruned layers: own head count, head width and FFN width per layer (d_attn != D too). */
    xf_ref_model_opts_init(&o);
    o.n_layer = 3;
    o.seed = 22;
    o.n_head[0] = 4, o.d_head[0] = 8, o.d_ff[0] = 64;
    o.n_head[1] = 2, o.d_head[1] = 16, o.d_ff[1] = 40;
    o.n_head[2] = 3, o.d_head[2] = 8, o.d_ff[2] = 96;
    check_model(&o, &bd, &(ref_run_t){ "pruned layers", 1, XF_POOL_CLS, 0, 3 });

    /* Linears without biases (the activation must still apply). */
    xf_ref_model_opts_init(&o);
    o.seed = 23;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    for (int32_t l = 0; l < o.n_layer; l++) {
        m->layers[l].q_b.data = NULL;
        m->layers[l].o_b.data = NULL;
        m->layers[l].ff1_b.data = NULL;
        m->layers[l].ff2_b.data = NULL;
    }
    check_vs_ref(m, &bd, &(ref_run_t){ "linears without biases", 1, XF_POOL_MEAN, 0, 2 });
    xf_ref_model_free(m);
}

/* Each sequence of a packed batch comes out as when run alone. */
static void test_packing_independence(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd, one;
    int32_t D;
    float *h, *p, *h1, *p1;
    double worst = 0;
    int bitwise = 1;
    (void)state;

    xf_ref_model_opts_init(&o);
    o.seed = 31;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    D = o.d_model;
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 12);
    h = calloc((size_t)bd.N * D, 4);
    p = calloc((size_t)bd.B * D, 4);
    h1 = calloc((size_t)bd.N * D, 4);
    p1 = calloc((size_t)D, 4);
    {
        xf_batch_t b = as_batch(&bd, 1);
        xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 0, .pooled = p, .hidden = h };
        assert_int_equal(engine_run(m, &b, 2, &out, NULL), 0);
    }
    for (int32_t s = 0; s < bd.B; s++) {
        int32_t n = bd.cu[s + 1] - bd.cu[s];
        xf_batch_t b;
        xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 0, .pooled = p1,
                            .hidden = h1 };
        one.B = 1;
        one.cu[0] = 0;
        one.cu[1] = n;
        one.N = n;
        memcpy(one.ids, bd.ids + bd.cu[s], (size_t)n * 4);
        memcpy(one.types, bd.types + bd.cu[s], (size_t)n * 4);
        b = as_batch(&one, 1);
        assert_int_equal(engine_run(m, &b, 2, &out, NULL), 0);
        if (memcmp(h1, h + (size_t)bd.cu[s] * D, (size_t)n * D * 4) ||
            memcmp(p1, p + (size_t)s * D, (size_t)D * 4))
            bitwise = 0;
        double e1 = rel_err(h1, h + (size_t)bd.cu[s] * D, (size_t)n * D);
        double e2 = rel_err(p1, p + (size_t)s * D, (size_t)D);
        worst = e1 > worst ? e1 : worst;
        worst = e2 > worst ? e2 : worst;
    }
    print_message("# packing independence: %s, max rel diff %.3g\n",
                  bitwise ? "bitwise" : "not bitwise", worst);
    /* Attention is per sequence and the kernels' row results do not depend on the batch, so
     * equality is expected bitwise; the assert allows 1e-6 for a GEMM path (e.g. a BLAS
     * choosing another blocking for another M) that changes the summation order. */
    assert_true(worst <= 1e-6);
    free(h);
    free(p);
    free(h1);
    free(p1);
    xf_ref_model_free(m);
}

/* max |a - b| <= tol · max(1, max |a|) over n floats */
static int close_rel(const float *a, const float *b, size_t n, double tol)
{
    double amax = 1.0, e = 0.0;
    for (size_t i = 0; i < n; i++) {
        amax = fmax(amax, fabs(a[i]));
        e = fmax(e, fabs((double)a[i] - b[i]));
    }
    if (!(e <= tol * amax))
        print_message("# max diff %g (scale %g)\n", e, amax);
    return e <= tol * amax;
}

/* Output bitwise identical for 1, 2 and 3 threads (kernels and variants promise it). */
static void test_threads(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    float *h[3], *p[3], *l[3];
    (void)state;

    xf_ref_model_opts_init(&o);
    o.head = XF_HEAD_BERT;
    o.n_labels = 3;
    o.seed = 41;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 13);
    for (int t = 0; t < 3; t++) {
        xf_batch_t b = as_batch(&bd, 1);
        h[t] = calloc((size_t)bd.N * o.d_model, 4);
        p[t] = calloc((size_t)bd.B * o.d_model, 4);
        l[t] = calloc((size_t)bd.B * 3, 4);
        xf_output_t out = { .pooling = XF_POOL_POOLER, .normalize = 1, .pooled = p[t],
                            .hidden = h[t], .logits = l[t] };
        assert_int_equal(engine_run(m, &b, t + 1, &out, NULL), 0);
    }
    /* the cblas Linear (XF_CPU=generic) is thread-independent only within its rounding
     * bound (kernels.h, nth_exact): there the outputs must agree to 1e-5 relative */
    const int exact = xf_kernels()->nth_exact;
    print_message("# gemm %s: %s\n", xf_kernels()->gemm_path,
                  exact ? "bitwise across threads" : "within 1e-5 across threads");
    for (int t = 1; t < 3; t++) {
        if (exact) {
            assert_memory_equal(h[0], h[t], (size_t)bd.N * o.d_model * 4);
            assert_memory_equal(p[0], p[t], (size_t)bd.B * o.d_model * 4);
            assert_memory_equal(l[0], l[t], (size_t)bd.B * 3 * 4);
        } else {
            assert_true(close_rel(h[0], h[t], (size_t)bd.N * o.d_model, 1e-5));
            assert_true(close_rel(p[0], p[t], (size_t)bd.B * o.d_model, 1e-5));
            assert_true(close_rel(l[0], l[t], (size_t)bd.B * 3, 1e-5));
        }
    }
    for (int t = 0; t < 3; t++) {
        free(h[t]);
        free(p[t]);
        free(l[t]);
    }
    xf_ref_model_free(m);
}

/* hdp through the engine: its pre-pass runs on every pool thread (prepare_par), the heads are
 * decided in the forward; hidden states bitwise the same for 1, 2, 3 and 5 threads (the
 * Linear kernels of a cblas build only within 1e-5, as test_threads), and pruning happened. */
static void test_threads_hdp(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    static const int nths[] = { 1, 2, 3, 5 };
    float *h[4];
    xf_attn_t *a = NULL;
    const char *js = "{\"variant\":\"hdp\",\"rho_B\":1.3,\"tau_H\":0.6}";
    (void)state;

    assert_int_equal(xf_attn_parse(js, strlen(js), &a, NULL, 0), 0);
    xf_ref_model_opts_init(&o);
    o.seed = 43;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 17);
    const xf_attn_t *attn[5] = { a, a, a, a, a };
    uint64_t cnt[4][4];
    for (int t = 0; t < 4; t++) {
        xf_attn_prune_stats_t s0, s1;
        xf_batch_t b = as_batch(&bd, 1);
        b.attn = attn;
        h[t] = calloc((size_t)bd.N * o.d_model, 4);
        xf_output_t out = { .pooling = XF_POOL_CLS, .hidden = h[t] };
        xf_attn_prune_stats(&s0);
        assert_int_equal(engine_run(m, &b, nths[t], &out, NULL), 0);
        xf_attn_prune_stats(&s1);
        cnt[t][0] = s1.blocks - s0.blocks;
        cnt[t][1] = s1.blocks_pruned - s0.blocks_pruned;
        cnt[t][2] = s1.heads - s0.heads;
        cnt[t][3] = s1.heads_pruned - s0.heads_pruned;
        assert_true(cnt[t][1] > 0 && cnt[t][1] < cnt[t][0] && cnt[t][2] > 0);
        assert_memory_equal(cnt[t], cnt[0], sizeof cnt[0]);
    }
    print_message("# hdp: %llu of %llu blocks and %llu of %llu heads pruned per forward\n",
                  (unsigned long long)cnt[0][1], (unsigned long long)cnt[0][0],
                  (unsigned long long)cnt[0][3], (unsigned long long)cnt[0][2]);
    for (int t = 1; t < 4; t++) {
        if (xf_kernels()->nth_exact)
            assert_memory_equal(h[0], h[t], (size_t)bd.N * o.d_model * 4);
        else
            assert_true(close_rel(h[0], h[t], (size_t)bd.N * o.d_model, 1e-5));
    }
    for (int t = 0; t < 4; t++)
        free(h[t]);
    xf_attn_free(a);
    xf_ref_model_free(m);
}

/* A second forward on the same plan allocates nothing, with 1 and 2 threads. */
static void test_zero_alloc(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    (void)state;

    xf_ref_model_opts_init(&o);
    o.head = XF_HEAD_BERT;
    o.n_labels = 2;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 14);
    for (int nth = 1; nth <= 2; nth++) {
        xf_ctx_opts_t co = { .n_threads = nth };
        xf_ctx_t *c = NULL;
        xf_plan_t *p = NULL;
        xf_batch_t b = as_batch(&bd, 1);
        float *h = calloc((size_t)bd.N * o.d_model, 4), *h2 = calloc((size_t)bd.N * o.d_model, 4);
        float *pl = calloc((size_t)bd.B * o.d_model, 4), *lg = calloc((size_t)bd.B * 2, 4);
        xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 1, .pooled = pl, .hidden = h,
                            .logits = lg };
        size_t arena;

        assert_int_equal(xf_ctx_create(&co, &c), 0);
        assert_int_equal(xf_plan_create(m, &p), 0);
        assert_int_equal(xf_plan_build(p, &b, nth, NULL), 0);
        assert_int_equal(xf_ctx_reserve(c, p), 0);
        arena = xf_ctx_arena_bytes(c);
        assert_true(arena >= p->stats.arena_bytes);
        assert_int_equal(arena % ((size_t)4 << 20), 0);   /* default chunk: 4 MiB */
        assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
        out.hidden = h2;
        xf_test_alloc_count_start();
        int rc = xf_forward(c, m, p, &b, &out, NULL);
        /* Reserving again for the same plan allocates nothing either. */
        int rc2 = xf_ctx_reserve(c, p);
        long n_allocs = xf_test_alloc_count_stop();
        assert_int_equal(rc, 0);
        assert_int_equal(rc2, 0);
        print_message("# nth=%d: %ld allocations in the second forward\n", nth, n_allocs);
        assert_int_equal(n_allocs, 0);
        assert_int_equal(xf_ctx_arena_bytes(c), arena);
        /* And it computes the same thing again. */
        assert_memory_equal(h, h2, (size_t)bd.N * o.d_model * 4);
        free(h);
        free(h2);
        free(pl);
        free(lg);
        xf_plan_free(p);
        xf_ctx_free(c);
    }
    xf_ref_model_free(m);
}

/* xf_forward expecting want and, when msg is set, msg in the diagnostic; checks named name. */
static void check_forward(const char *name, xf_ctx_t *c, const xf_model_t *m,
                          const xf_plan_t *p, const xf_batch_t *b, const xf_output_t *out,
                          int want, const char *msg)
{
    xf_diag_t diag = { 0 };
    int rc = xf_forward(c, m, p, b, out, &diag);
    if (!XF_CHECK_INT(name, rc, want))
        print_message("# %s: %s\n", name, diag.msg);
    if (msg && !XF_CHECK(name, strstr(diag.msg, msg) != NULL))
        print_message("# %s: \"%s\" lacks \"%s\"\n", name, diag.msg, msg);
}

/* In test_errors, one named case: forward batch bt into output ot (its c, m, p), expecting
 * want (and msg in the diagnostic). */
#define FWD(name, bt, ot, want, msg) check_forward((name), c, m, p, (bt), (ot), (want), (msg))

static void test_errors(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    xf_ctx_t *c = NULL;
    xf_plan_t *p = NULL;
    xf_ctx_opts_t co = { .n_threads = 2 };
    xf_diag_t diag = { 0 };
    xf_batch_t b;
    float pooled[5 * 32], lg[10];
    xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 0, .pooled = pooled };
    (void)state;

    xf_ref_model_opts_init(&o);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 15);
    b = as_batch(&bd, 1);
    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_plan_create(m, &p), 0);
    assert_int_equal(xf_plan_build(p, &b, 2, NULL), 0);
    /* Not reserved yet. */
    FWD("not reserved", &b, &out, -EINVAL, NULL);
    assert_int_equal(xf_ctx_reserve(c, p), 0);
    FWD("reserved", &b, &out, 0, NULL);

    /* Token id out of range, named by position; nothing is computed. */
    memset(pooled, 0x7f, sizeof pooled);
    bd.ids[7] = o.vocab_size;
    FWD("token id = vocab size", &b, &out, -EINVAL, "token 7");
    XF_CHECK("token id = vocab size", ((uint32_t *)pooled)[0] == 0x7f7f7f7fu);
    bd.ids[7] = -1;
    FWD("token id -1", &b, &out, -EINVAL, NULL);
    bd.ids[7] = 1;
    bd.types[3] = 2;
    FWD("type id 2 of 2", &b, &out, -EINVAL, "token 3: type id 2");
    bd.types[3] = 0;

    /* The batch must be the planned one. */
    bd.cu[2] += 1;
    FWD("other lengths than planned", &b, &out, -EINVAL, NULL);
    bd.cu[2] -= 1;
    b.n_seq = 4;
    FWD("fewer sequences than planned", &b, &out, -EINVAL, NULL);
    b.n_seq = 5;

    /* Logits without a classifier; pooled rows with pooling NONE. */
    out.logits = lg;
    FWD("logits without a classifier", &b, &out, XF_EUNSUPPORTED, NULL);
    out.logits = NULL;
    out.pooling = XF_POOL_NONE;
    FWD("pooled rows with pooling none", &b, &out, -EINVAL, NULL);
    out.pooling = XF_POOL_CLS;
    FWD("nothing wanted", &b, NULL, 0, NULL);

    /* A non-finite weight reaches the hidden states: XF_ENUMERIC. */
    {
        float *we = (float *)m->word_emb.data + (size_t)bd.ids[0] * o.d_model;
        float keep = we[0];
        we[0] = NAN;
        FWD("NaN weight", &b, &out, XF_ENUMERIC, NULL);
        we[0] = keep;
        FWD("weight restored", &b, &out, 0, NULL);
    }

    /* A plan built for other thread counts. */
    assert_int_equal(xf_plan_build(p, &b, 3, NULL), 0);
    FWD("plan for 3 threads, context of 2", &b, &out, -EINVAL, NULL);

    /* B = 0: a no-op that touches no output. */
    {
        xf_batch_t e = { 0 };
        memset(pooled, 0x7f, sizeof pooled);
        assert_int_equal(xf_plan_build(p, &e, 2, NULL), 0);
        FWD("no sequences", &e, &out, 0, NULL);
        XF_CHECK_INT("no sequences, xf_run", xf_run(c, m, &e, &out, &diag), 0);
        XF_CHECK("no sequences", ((uint32_t *)pooled)[0] == 0x7f7f7f7fu);
    }
    /* xf_run: too long a sequence. */
    {
        int32_t cu[2] = { 0, 65 };
        int32_t ids[65] = { 0 };
        xf_batch_t t = { .n_seq = 1, .cu_len = cu, .ids = ids };
        XF_CHECK_INT("xf_run, 65 tokens of 64", xf_run(c, m, &t, &out, &diag), XF_ETOOLONG);
    }
    XF_CHECK_INT("no context", xf_forward(NULL, m, p, &b, &out, &diag), -EINVAL);
    xf_cases_end();
    xf_plan_free(p);
    xf_ctx_free(c);
    xf_ctx_free(NULL);
    xf_ref_model_free(m);
}
#undef FWD

/* A NaN in a query or key weight makes every score of a head NaN. The dense path must not
 * take its empty-key fallback (which copies the token's own V row and looks finite): the
 * forward reports XF_ENUMERIC like a NaN anywhere else. Runs under whatever attention kernel
 * this CPU selects; make check reruns the program capped (tests/isa/test_forward-*.cap), so
 * the AVX-512 and the portable kernels are both covered where the CPU has them. */
static void test_nan_qk_weight(void **state)
{
    static const char *const which[] = { "q_w", "k_w", "q_b" };
    (void)state;
    for (int w = 0; w < 3; w++) {
        xf_ref_model_opts_t o;
        xf_model_t *m = NULL;
        batch_data_t bd;
        xf_diag_t diag = { 0 };
        float pooled[5 * 64];
        xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 0, .pooled = pooled };

        xf_ref_model_opts_init(&o);
        assert_true(o.d_model <= 64);
        assert_int_equal(xf_ref_model_create(&o, &m), 0);
        make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 15);
        xf_batch_t b = as_batch(&bd, 1);
        /* Finite before (the prepared weights are cached per model: poison a fresh one). */
        assert_int_equal(engine_run(m, &b, 2, &out, &diag), 0);
        xf_ref_model_free(m);
        assert_int_equal(xf_ref_model_create(&o, &m), 0);
        const xf_w_t *t = w == 0 ? &m->layers[0].q_w : w == 1 ? &m->layers[0].k_w
                                                             : &m->layers[0].q_b;
        assert_non_null(t->data);
        ((float *)t->data)[0] = NAN;
        for (int nth = 1; nth <= 2; nth++) {
            diag.msg[0] = '\0';
            int rc = engine_run(m, &b, nth, &out, &diag);
            if (rc != XF_ENUMERIC)
                fail_msg("NaN in layer 0 %s, %d thread(s): rc %d (%s), want XF_ENUMERIC",
                         which[w], nth, rc, diag.msg);
            assert_non_null(strstr(diag.msg, "not finite"));
        }
        xf_ref_model_free(m);
    }
}

/* The progress callback: called once per layer in order, on one thread; returning
 * non-zero stops the forward at that layer boundary with XF_EDEADLINE; returning 0 leaves
 * the output bitwise unchanged. */
typedef struct prog {
    atomic_int calls;
    int last, stop_after, n_layer_seen, out_of_order;
} prog_t;

static int prog_cb(void *user, int32_t done, int32_t n_layer)
{
    prog_t *pg = user;
    atomic_fetch_add(&pg->calls, 1);
    if (done != pg->last + 1)
        pg->out_of_order = 1;
    pg->last = done;
    pg->n_layer_seen = n_layer;
    return pg->stop_after > 0 && done >= pg->stop_after;
}

static void test_progress_stop(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    xf_diag_t diag = { 0 };
    float ref[5 * 64], got[5 * 64];
    (void)state;

    xf_ref_model_opts_init(&o);
    assert_true(o.d_model <= 64 && o.n_layer >= 2);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 15);
    xf_batch_t b = as_batch(&bd, 1);
    for (int nth = 1; nth <= 3; nth++) {
        xf_ctx_opts_t co = { .n_threads = nth };
        xf_ctx_t *c = NULL;
        xf_plan_t *p = NULL;
        xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 0, .pooled = ref };
        assert_int_equal(xf_ctx_create(&co, &c), 0);
        assert_int_equal(xf_plan_create(m, &p), 0);
        assert_int_equal(xf_plan_build(p, &b, nth, NULL), 0);
        assert_int_equal(xf_ctx_reserve(c, p), 0);
        assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), 0);
        /* Observing only: every layer once, in order; the same bits. */
        prog_t pg = { .stop_after = 0 };
        xf_ctx_set_progress(c, prog_cb, &pg);
        out.pooled = got;
        assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), 0);
        assert_int_equal(atomic_load(&pg.calls), o.n_layer);
        assert_int_equal(pg.last, o.n_layer);
        assert_int_equal(pg.n_layer_seen, o.n_layer);
        assert_false(pg.out_of_order);
        assert_memory_equal(ref, got, 5 * (size_t)o.d_model * sizeof(float));
        /* Stop after the first layer: XF_EDEADLINE, no further calls, diag names the layer. */
        prog_t st = { .stop_after = 1 };
        xf_ctx_set_progress(c, prog_cb, &st);
        assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), XF_EDEADLINE);
        assert_int_equal(atomic_load(&st.calls), 1);
        assert_non_null(strstr(diag.msg, "stopped after layer 1 of"));
        /* The context is reusable: without the callback the result is the reference again. */
        xf_ctx_set_progress(c, NULL, NULL);
        assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), 0);
        assert_memory_equal(ref, got, 5 * (size_t)o.d_model * sizeof(float));
        xf_plan_free(p);
        xf_ctx_free(c);
    }
    xf_ref_model_free(m);
}

/* xf_ctx_profile: before it is on nothing is readable; while on, every forward counts its ops
 * per class as the plan has them, the times are non-negative and add up within the forwards'
 * wall time, and the output bits do not change; off stops counting; on again clears. */
static void test_profile(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    xf_diag_t diag = { 0 };
    float ref[5 * 64], got[5 * 64];
    xf_prof_t pr;
    (void)state;

    xf_ref_model_opts_init(&o);
    assert_true(o.d_model <= 64);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 16);
    xf_batch_t b = as_batch(&bd, 1);
    assert_string_equal(xf_prof_class_name(XF_PROF_ATTN), "attn");
    assert_string_equal(xf_prof_class_name(XF_PROF_COUNT), "?");
    assert_int_equal(xf_ctx_profile(NULL, 1), -EINVAL);
    for (int nth = 1; nth <= 3; nth++) {
        xf_ctx_opts_t co = { .n_threads = nth };
        xf_ctx_t *c = NULL;
        xf_plan_t *p = NULL;
        xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 0, .pooled = ref };
        int64_t want[XF_PROF_COUNT] = { 0 };
        assert_int_equal(xf_ctx_create(&co, &c), 0);
        assert_int_equal(xf_ctx_profile_get(c, &pr), -EINVAL);
        assert_int_equal(xf_plan_create(m, &p), 0);
        assert_int_equal(xf_plan_build(p, &b, nth, NULL), 0);
        assert_int_equal(xf_ctx_reserve(c, p), 0);
        assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), 0);
        for (int32_t i = 0; i < p->n_ops; i++) {
            enum xf_op_kind k = p->ops[i].kind;
            int cls = k == XF_OP_QKV ? XF_PROF_QKV : k == XF_OP_FF1 ? XF_PROF_FF1
                      : k == XF_OP_FF2 ? XF_PROF_FF2 : k == XF_OP_OPROJ ? XF_PROF_OPROJ
                      : k == XF_OP_EMBED ? XF_PROF_EMBED : -1;
            if (cls >= 0)
                want[cls]++;
        }
        assert_int_equal(want[XF_PROF_QKV], o.n_layer);
        assert_int_equal(xf_ctx_profile(c, 1), 0);
        out.pooled = got;
        for (int r = 0; r < 2; r++) {
            assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), 0);
            assert_memory_equal(ref, got, 5 * (size_t)o.d_model * sizeof(float));
        }
        assert_int_equal(xf_ctx_profile(c, 0), 0);
        assert_int_equal(xf_forward(c, m, p, &b, &out, &diag), 0);   /* not counted */
        assert_int_equal(xf_ctx_profile_get(c, &pr), 0);
        assert_int_equal(pr.n_threads, nth);
        assert_int_equal(pr.forwards, 2);
        assert_true(pr.wall_s > 0);
        for (int k = 0; k < XF_PROF_COUNT; k++) {
            if (k == XF_PROF_QKV || k == XF_PROF_FF1 || k == XF_PROF_FF2 ||
                k == XF_PROF_OPROJ || k == XF_PROF_EMBED)
                assert_int_equal(pr.ops[k], 2 * want[k]);
            assert_int_equal(pr.ops[XF_PROF_Q8], 0);
        }
        for (int t = 0; t < nth; t++) {
            double sum = pr.start_s[t];
            for (int k = 0; k < XF_PROF_COUNT; k++) {
                assert_true(pr.busy_s[k][t] >= 0 && pr.wait_s[k][t] >= 0);
                assert_true(pr.busy_cpu_s[k][t] >= 0 && pr.wait_cpu_s[k][t] >= 0);
                sum += pr.busy_s[k][t] + pr.wait_s[k][t];
            }
            assert_true(sum > 0 && sum <= pr.wall_s * 1.0001 + 1e-6);
        }
        assert_int_equal(xf_ctx_profile(c, 1), 0);   /* cleared */
        assert_int_equal(xf_ctx_profile_get(c, &pr), 0);
        assert_int_equal(pr.forwards, 0);
        assert_int_equal(pr.ops[XF_PROF_QKV], 0);
        xf_plan_free(p);
        xf_ctx_free(c);
    }
    xf_ref_model_free(m);
}

/* The next-GEMM weight prefetch during barrier waits (ctx lead_pf, XF_PREFETCH_NEXT) touches
 * only the caches: every hidden state is bitwise the same with it on or off, for 1-3
 * threads, and alternating does not carry anything from one forward to the next; with 62
 * tokens and with 23 (the AVX-512 kernel names a block to prefetch only at small M). */
static void test_prefetch_next(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    static float ref[62 * 64], got[62 * 64];
    (void)state;

    xf_ref_model_opts_init(&o);
    assert_true(o.d_model <= 64);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    for (int run = 0; run < 6; run++) {
        make_batch(&bd, mix_len, run < 3 ? 5 : 3, o.vocab_size, o.type_vocab_size, 18);
        assert_int_equal(bd.N, run < 3 ? 62 : 23);
        xf_batch_t b = as_batch(&bd, 1);
        int n_threads = run % 3 + 1;
        xf_ctx_opts_t co = { .n_threads = n_threads };
        xf_ctx_t *c = NULL;
        xf_plan_t *p = NULL;
        xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 0, .hidden = ref };
        assert_int_equal(xf_ctx_create(&co, &c), 0);
        assert_int_equal(xf_plan_create(m, &p), 0);
        assert_int_equal(xf_plan_build(p, &b, n_threads, NULL), 0);
        assert_int_equal(xf_ctx_reserve(c, p), 0);
        if (xf_kernels()->linear_lead && bd.N == 23) {   /* the prefetch has work here */
            const void *wp = NULL;
            assert_true(xf_kernels()->linear_lead(&p->prep->layers[0].ff1, bd.N, 0, n_threads,
                                                  &wp) > 0);
            assert_non_null(wp);
        }
        xf_ctx_set_prefetch(c, 0);
        assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
        out.hidden = got;
        for (int r = 0; r < 4; r++) {
            memset(got, 0, sizeof got);
            xf_ctx_set_prefetch(c, r % 2 == 0);
            assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
            assert_memory_equal(ref, got, (size_t)bd.N * (size_t)o.d_model * sizeof(float));
        }
        xf_plan_free(p);
        xf_ctx_free(c);
    }
    xf_ref_model_free(m);
}

/* Ops of plan p of kind k, and residual ops (ADD, ADD_LN) / fused OPROJ and FF2 ops. */
static int count_ops(const xf_plan_t *p, int *residual, int *fused)
{
    *residual = *fused = 0;
    for (int32_t i = 0; i < p->n_ops; i++) {
        const xf_plan_op_t *op = &p->ops[i];
        *residual += op->kind == XF_OP_ADD || op->kind == XF_OP_ADD_LN;
        *fused += (op->kind == XF_OP_OPROJ || op->kind == XF_OP_FF2) && op->which != 0;
    }
    return p->n_ops;
}

/* One forward of m on b with nth threads and the plan's fuse_rows set to fuse; outputs into
 * h/pl/lg. Checks the plan's residual ops: none left when fused, one per residual block when
 * not. */
static void fused_run(const xf_model_t *m, const xf_batch_t *b, int nth, int32_t fuse, float *h,
                      float *pl, float *lg)
{
    xf_ctx_opts_t co = { .n_threads = nth };
    xf_ctx_t *c = NULL;
    xf_plan_t *p = NULL;
    xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 0, .hidden = h, .pooled = pl,
                        .logits = lg };
    int residual, fused, nl = m->info.n_layer;
    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_plan_create(m, &p), 0);
    if (!getenv("XF_FUSE_ROWS"))   /* the default */
        assert_int_equal(p->fuse_rows, XF_FUSE_ROWS);
    p->fuse_rows = fuse;
    assert_int_equal(xf_plan_build(p, b, nth, NULL), 0);
    count_ops(p, &residual, &fused);
    int want = fuse > 0 && (nth == 1 || b->cu_len[b->n_seq] >= fuse * nth) &&
               xf_kernels()->nth_exact;
    assert_int_equal(fused, want ? 2 * nl : 0);
    assert_int_equal(residual, want ? 0 : 2 * nl);
    assert_int_equal(xf_ctx_reserve(c, p), 0);
    assert_int_equal(xf_forward(c, m, p, b, &out, NULL), 0);
    xf_plan_free(p);
    xf_ctx_free(c);
}

/* OPROJ and FFN2 fused with their residual + LayerNorm (each thread owning whole rows) give
 * the unfused plan's bits: post-LN and pre-LN, layers whose d_attn differs from D, Linears
 * without biases; odd token counts (1, 23, 62, 113) and 1-3 threads, thresholds that fuse
 * and that do not. The cblas path (XF_CPU=generic) never fuses (its sums depend on the
 * column slice). The fused plans also pass the float64 reference. */
static void test_fused_residual(void **state)
{
    static const int32_t lens[4][6] = {
        { 1 }, { 5, 1, 17 }, { 5, 1, 17, 9, 30 }, { 30, 1, 33, 17, 9, 23 },
    };
    static const int32_t nseq[4] = { 1, 3, 5, 6 };
    xf_ref_model_opts_t o;
    batch_data_t bd;
    (void)state;

    for (int model = 0; model < 4; model++) {
        xf_model_t *m = NULL;
        xf_ref_model_opts_init(&o);
        o.head = XF_HEAD_BERT;
        o.n_labels = 3;
        o.seed = 61 + model;
        if (model == 1)
            o.pre_ln = 1;
        if (model == 2) {   /* pruned: d_attn != D, own FFN widths */
            o.n_layer = 2;
            o.n_head[0] = 3, o.d_head[0] = 8, o.d_ff[0] = 40;
            o.n_head[1] = 2, o.d_head[1] = 16, o.d_ff[1] = 72;
        }
        assert_int_equal(xf_ref_model_create(&o, &m), 0);
        if (model == 3)
            for (int32_t l = 0; l < o.n_layer; l++) {
                m->layers[l].o_b.data = NULL;
                m->layers[l].ff2_b.data = NULL;
            }
        for (int shape = 0; shape < 4; shape++) {
            make_batch(&bd, lens[shape], nseq[shape], o.vocab_size, o.type_vocab_size, 70);
            xf_batch_t b = as_batch(&bd, 1);
            size_t nh = (size_t)bd.N * o.d_model, np = (size_t)bd.B * o.d_model;
            size_t ng = (size_t)bd.B * 3;
            float *h0 = calloc(nh, 4), *h1 = calloc(nh, 4), *p0 = calloc(np, 4);
            float *p1 = calloc(np, 4), *l0 = calloc(ng, 4), *l1 = calloc(ng, 4);
            for (int nth = 1; nth <= 3; nth++) {
                fused_run(m, &b, nth, 0, h0, p0, l0);
                /* every thread at least one row; then a threshold of about half */
                int32_t th[2] = { 1, bd.N / nth / 2 > 0 ? bd.N / nth / 2 : 1 };
                for (int i = 0; i < 2; i++) {
                    memset(h1, 0xff, nh * 4);
                    fused_run(m, &b, nth, th[i], h1, p1, l1);
                    assert_memory_equal(h0, h1, nh * 4);
                    assert_memory_equal(p0, p1, np * 4);
                    assert_memory_equal(l0, l1, ng * 4);
                }
            }
            free(h0);
            free(h1);
            free(p0);
            free(p1);
            free(l0);
            free(l1);
        }
        /* the fused plan against the float64 reference */
        make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 71);
        g_fuse_rows = 1;
        check_vs_ref(m, &bd, &(ref_run_t){ "fused residual", 1, XF_POOL_MEAN, 1, 2 });
        g_fuse_rows = -1;
        xf_ref_model_free(m);
    }
}

/* The pruning FFN tap of test_barrier_count: counts its calls, checks it sees all of FFN1. */
static void count_tap(void *user, int32_t layer, const float *act, int32_t n_tokens, int32_t d_ff)
{
    int *n = user;
    assert_true(layer >= 0 && n_tokens > 0 && d_ff > 0);
    for (size_t i = 0; i < (size_t)n_tokens * (size_t)d_ff; i++)
        assert_true(isfinite(act[i]));
    (*n)++;
}

/* Barriers per forward (the pool's wait count: nth - 1 per barrier): one after every op but
 * those marked no_barrier (the fused plan's FFN1 → FFN2), the head ops the outputs asked for
 * do not need, and the last — the same with the profiler on (it changes no barrier; it still
 * counts every op). With the pruning FFN tap, FFN1 keeps its barrier and one more follows the
 * tap. Same hidden states every way. */
static void test_barrier_count(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    static float ref[62 * 64], got[62 * 64], pooled[5 * 64], logits[5 * 3];
    (void)state;

    xf_ref_model_opts_init(&o);
    o.head = XF_HEAD_BERT;
    o.n_labels = 3;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 19);
    xf_batch_t b = as_batch(&bd, 1);
    for (int nth = 2; nth <= 3; nth++)
        for (int fuse = 0; fuse < 2; fuse++)
            for (int outs = 0; outs < 3; outs++)
                for (int mode = 0; mode < 3; mode++) {   /* plain, profiled, FFN tap */
                    xf_ctx_opts_t co = { .n_threads = nth };
                    xf_ctx_t *c = NULL;
                    xf_plan_t *p = NULL;
                    xf_pool_stats_t s0, s1;
                    int n_tap = 0;
                    /* 0: hidden only; 1: + pooler output, normalised; 2: + logits */
                    xf_output_t out = { .pooling = outs ? XF_POOL_POOLER : XF_POOL_MEAN,
                                        .normalize = outs != 0,
                                        .hidden = fuse || mode ? got : ref,
                                        .pooled = outs ? pooled : NULL,
                                        .logits = outs == 2 ? logits : NULL };
                    assert_int_equal(xf_ctx_create(&co, &c), 0);
                    assert_int_equal(xf_plan_create(m, &p), 0);
                    p->fuse_rows = fuse;
                    assert_int_equal(xf_plan_build(p, &b, nth, NULL), 0);
                    assert_int_equal(xf_ctx_reserve(c, p), 0);
                    if (mode == 1)
                        assert_int_equal(xf_ctx_profile(c, 1), 0);
                    if (mode == 2)
                        xf_ctx_set_ffn_tap(c, count_tap, &n_tap);
                    int want = 0, n_nb = 0;
                    for (int32_t i = 0; i + 1 < p->n_ops; i++) {
                        enum xf_op_kind k = p->ops[i].kind;
                        int idle = (k == XF_OP_POOLER && outs == 0) ||
                                   (k == XF_OP_POOL_END && outs == 0) ||
                                   ((k == XF_OP_HEAD_DENSE || k == XF_OP_HEAD_TANH) && outs < 2);
                        want += !p->ops[i].no_barrier && !idle;
                        n_nb += p->ops[i].no_barrier;
                        /* the tap: FFN1's barrier and one after the tap */
                        if (mode == 2 && k == XF_OP_FF1)
                            want += 1 + p->ops[i].no_barrier;
                    }
                    /* a BERT post-LN plan: FFN1 is the only op without a barrier */
                    assert_int_equal(n_nb, fuse && xf_kernels()->nth_exact ? o.n_layer : 0);
                    xf_pool_stats(c->pool, &s0);
                    assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
                    xf_pool_stats(c->pool, &s1);
                    print_message("# nth %d fuse %d outputs %d mode %d: %d ops, %ld barriers\n",
                                  nth, fuse, outs, mode, (int)p->n_ops,
                                  (s1.waits - s0.waits) / (nth - 1));
                    assert_int_equal(s1.waits - s0.waits, (long)want * (nth - 1));
                    assert_int_equal(n_tap, mode == 2 ? o.n_layer : 0);
                    if (mode == 1) {   /* every op still counted, once */
                        xf_prof_t pr;
                        int64_t n = 0;
                        assert_int_equal(xf_ctx_profile_get(c, &pr), 0);
                        assert_int_equal(pr.forwards, 1);
                        for (int k = 0; k < XF_PROF_COUNT; k++) {
                            n += pr.ops[k];
                            assert_true(pr.spread_cpu_s[k] >= 0);
                        }
                        assert_int_equal(n, p->n_ops);
                    }
                    if (fuse || mode)
                        assert_memory_equal(ref, got, (size_t)bd.N * o.d_model * sizeof(float));
                    xf_plan_free(p);
                    xf_ctx_free(c);
                }
    xf_ref_model_free(m);
}

/* xf_run (plan + reserve + forward) gives the plan path's result; version string. */
static void test_run_and_version(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    xf_ctx_t *c = NULL;
    xf_ctx_opts_t co = { .n_threads = 2, .arena_chunk_bytes = 1000 };
    float a[5 * 32], b2[5 * 32];
    xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 0, .pooled = a };
    (void)state;

    assert_string_equal(xf_version(), PACKAGE_VERSION);
    xf_ref_model_opts_init(&o);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, mix_len, 5, o.vocab_size, o.type_vocab_size, 16);
    xf_batch_t b = as_batch(&bd, 1);
    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_run(c, m, &b, &out, NULL), 0);
    assert_int_equal(xf_ctx_arena_bytes(c) % 1000, 0);
    out.pooled = b2;
    assert_int_equal(engine_run(m, &b, 2, &out, NULL), 0);
    assert_memory_equal(a, b2, sizeof a);
    xf_ctx_free(c);
    xf_ref_model_free(m);
}

/* Models written as Hugging Face directories and loaded by the loader: the forward on the loaded
 * model equals the reference on the same weights (tensor mapping, RoBERTa offsets, DistilBERT
 * names, F16 conversion, per-layer shapes, sentence-transformers pooling defaults). */
static void test_hf_models(void **state)
{
    struct {
        const char *arch, *dtype, *pooling;
        int n_labels, prefix, pre_ln, per_layer, normalize;
    } cases[] = {
        { "bert", "F32", NULL, 3, 1, 0, 0, 0 },     { "roberta", "F32", NULL, 2, 1, 0, 0, 0 },
        { "distilbert", "F32", NULL, 2, 1, 0, 0, 0 }, { "bert", "F16", "mean", 0, 0, 0, 0, 1 },
        { "bert", "F32", "cls", 0, 0, 1, 0, 0 },     { "bert", "BF16", NULL, 0, 0, 0, 1, 0 },
    };
    char dir[1024];
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xf_test_hfmodel_opts ho;
        xf_model_t *m = NULL;
        xf_diag_t diag = { 0 };
        batch_data_t bd;
        int rc;

        assert_non_null(xf_test_tmpdir(dir, sizeof dir, "fwd_hf"));
        xf_test_hfmodel_opts_init(&ho);
        ho.arch = cases[i].arch;
        ho.dtype = cases[i].dtype;
        ho.pooling = cases[i].pooling;
        ho.normalize = cases[i].normalize;
        ho.n_labels = cases[i].n_labels;
        ho.prefix = cases[i].prefix;
        ho.pre_ln = cases[i].pre_ln;
        ho.seed = 100 + i;
        if (cases[i].per_layer) {
            ho.n_layer = 3;
            ho.per_layer_config = 1;
            ho.heads[0] = 4, ho.heads[1] = 2, ho.heads[2] = 3;
            ho.ffn[0] = 64, ho.ffn[1] = 40, ho.ffn[2] = 96;
        }
        assert_int_equal(xf_test_hfmodel_write(dir, &ho), 0);
        rc = xf_model_load(dir, NULL, &m, &diag);
        if (rc)
            fail_msg("load %s: %d %s", cases[i].arch, rc, diag.msg);
        char name[160];
        snprintf(name, sizeof name, "%s %s%s%s", m->info.arch_name, cases[i].dtype,
                 cases[i].pre_ln ? " pre-LN" : "", cases[i].per_layer ? " per-layer" : "");
        make_batch(&bd, mix_len, 5, m->info.vocab_size,
                   m->info.type_vocab_size > 0 ? m->info.type_vocab_size : 1, 20 + i);
        check_vs_ref(m, &bd, &(ref_run_t){ name, m->info.type_vocab_size > 1, XF_POOL_DEFAULT,
                                           -1, 2 });
        xf_model_free(m);
        xf_test_rmtree(dir);
    }
}

/* A stateful test variant: attention output = V (each token attends to itself), and every
 * call's state_update counts itself in this layer's state of each sequence. */
static int st_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    (void)params, (void)nth;
    memset(out, 0, sizeof *out);
    out->n_items = sh->n_seq;
    out->state_per_seq = 2 * sizeof(int);
    return 0;
}

static int st_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *wss, void *wst, int ith, int nth)
{
    (void)params, (void)pl, (void)wss, (void)wst, (void)nth;
    if (ith != 0)
        return 0;
    for (int32_t t = sh->cu_len[0]; t < sh->cu_len[sh->n_seq]; t++)
        for (int32_t h = 0; h < sh->n_head; h++)
            memcpy(io->out + ((size_t)t * sh->n_head + h) * sh->d_head,
                   io->v + ((size_t)h * sh->n_tokens + t) * sh->d_head,
                   (size_t)sh->d_head * sizeof(float));
    return 0;
}

static int st_update(const void *params, const xf_attn_shape *sh, const xf_attn_io *io, int ith,
                     int nth)
{
    (void)params, (void)nth;
    if (ith != 0 || !io->state)
        return 0;
    for (int32_t i = 0; i < sh->n_seq; i++) {
        int *st = io->state[i];
        if (st) {
            st[0] += 1;
            st[1] = sh->layer;
        }
    }
    return 0;
}

static const xf_attn_ops st_ops = {
    .plan = st_plan, .forward = st_forward, .state_update = st_update,
};
static const xf_attn_vtbl st_vt = {
    .name = "test_stateful", .family = XF_FAM_M, .flags = XF_ATTN_STATEFUL, .ops = &st_ops,
};
static const xf_attn_t st_attn = { .vt = &st_vt };

/* Stateful variants get, per layer, each sequence's state of that layer. */
static void test_stateful_variant(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t bd;
    int states[3][2][2];
    void *layer_ptrs[3][2];
    void *seq_state[3];
    const xf_attn_t *attn[3] = { &st_attn, &st_attn, NULL };
    float hid[64 * 32];
    (void)state;

    xf_ref_model_opts_init(&o);
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    make_batch(&bd, (const int32_t[]){ 4, 6, 3 }, 3, o.vocab_size, 2, 30);
    memset(states, 0, sizeof states);
    for (int b = 0; b < 3; b++) {
        for (int l = 0; l < 2; l++)
            layer_ptrs[b][l] = states[b][l];
        seq_state[b] = layer_ptrs[b];
    }
    seq_state[1] = NULL;   /* a sequence without state: its state pointers are NULL */
    xf_batch_t b = as_batch(&bd, 1);
    b.attn = attn;
    b.attn_state = seq_state;
    xf_output_t out = { .pooling = XF_POOL_CLS, .hidden = hid };
    for (int rep = 1; rep <= 2; rep++) {
        assert_int_equal(engine_run(m, &b, 2, &out, NULL), 0);
        for (int l = 0; l < 2; l++) {
            assert_int_equal(states[0][l][0], rep);
            assert_int_equal(states[0][l][1], l);
            assert_int_equal(states[1][l][0], 0);
            assert_int_equal(states[2][l][0], 0);   /* dense sequence: not stateful */
        }
    }
    for (int i = 0; i < bd.N * o.d_model; i++)
        assert_true(isfinite(hid[i]));
    xf_ref_model_free(m);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Timing of a forward (printed, never asserted): BERT-base shape b1n128 with 1 and 2 threads
 * when XF_FWD_TIMING is set, else a small 2-layer model (so the test stays quick). */
static void test_timing(void **state)
{
    xf_ref_model_opts_t o;
    xf_model_t *m = NULL;
    batch_data_t *bd;
    const char *env = getenv("XF_FWD_TIMING");
    int big = env && *env;
    int32_t len = 128;
    (void)state;

    xf_ref_model_opts_init(&o);
    o.n_layer = big ? 12 : 2;
    o.d_model = big ? 768 : 128;
    o.vocab_size = big ? 30522 : 1000;
    o.max_positions = 512;
    for (int l = 0; l < o.n_layer; l++)
        o.n_head[l] = big ? 12 : 4, o.d_head[l] = big ? 64 : 32, o.d_ff[l] = big ? 3072 : 512;
    assert_int_equal(xf_ref_model_create(&o, &m), 0);
    bd = calloc(1, sizeof *bd);
    assert_non_null(bd);
    for (int nth = 1; nth <= 2; nth++) {
        xf_ctx_opts_t co = { .n_threads = nth };
        xf_ctx_t *c = NULL;
        xf_plan_t *p = NULL;
        double best = 1e30, t0;
        xf_plan_stats_t st;
        float *pooled = calloc((size_t)o.d_model, sizeof *pooled);
        make_batch(bd, &len, 1, o.vocab_size, 2, 17);
        xf_batch_t b = as_batch(bd, 1);
        xf_output_t out = { .pooling = XF_POOL_CLS, .pooled = pooled };
        assert_int_equal(xf_ctx_create(&co, &c), 0);
        assert_int_equal(xf_plan_create(m, &p), 0);
        assert_int_equal(xf_plan_build(p, &b, nth, NULL), 0);
        assert_int_equal(xf_ctx_reserve(c, p), 0);
        xf_plan_get_stats(p, &st);
        for (int r = 0; r < 6; r++) {
            t0 = now_ms();
            assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
            t0 = now_ms() - t0;
            best = t0 < best ? t0 : best;
        }
        for (int32_t i = 0; i < o.d_model; i++)
            assert_true(isfinite(pooled[i]));
        print_message("# %s b1n128 nth=%d: best of 6 %.2f ms, %.1f GFLOP/s (%s)\n",
                      big ? "BERT-base" : "small 2x128", nth, best, st.flops / best / 1e6,
                      xf_kernels()->gemm_path);
        free(pooled);
        xf_plan_free(p);
        xf_ctx_free(c);
    }
    free(bd);
    xf_ref_model_free(m);
}

XF_TEST_MAIN(cmocka_unit_test(test_bert_vs_ref), cmocka_unit_test(test_heads),
             cmocka_unit_test(test_pre_ln_and_heterogeneous),
             cmocka_unit_test(test_packing_independence), cmocka_unit_test(test_threads),
             cmocka_unit_test(test_zero_alloc), cmocka_unit_test(test_errors),
             cmocka_unit_test(test_nan_qk_weight), cmocka_unit_test(test_progress_stop),
             cmocka_unit_test(test_profile), cmocka_unit_test(test_prefetch_next),
             cmocka_unit_test(test_fused_residual), cmocka_unit_test(test_barrier_count),
             cmocka_unit_test(test_run_and_version), cmocka_unit_test(test_hf_models),
             cmocka_unit_test(test_stateful_variant), cmocka_unit_test(test_threads_hdp),
             cmocka_unit_test(test_timing))
