/* Tests for int8 Linear layers in the engine (model.quantize = "int8": src/engine/quant.c, the
 * planner's int8 activation buffers, the forward's int8 path): the load option and its errors,
 * cosine ≥ 0.99 per sequence against fp32 on a demo-shaped model (BERT-base layer widths) and on
 * Hugging Face layout models (F32/F16/BF16, RoBERTa, DistilBERT, pre-LN, pruned layers), a
 * sequence's output bitwise the same alone and in a batch, classifier labels unchanged on ≥ 99%
 * of a fixed input set, bitwise thread independence, the planner's XF_OP_Q8 ops and buffers,
 * and no allocation in a steady-state forward (linked with --wrap=malloc,...). Also the bf16
 * weight option (model.quantize = "bf16", kernels.h xf_gemm_w_add_bf16): cosine ≥ 0.9999
 * against fp32, a sequence bitwise the same alone and in a batch; fp32 with info "none" where
 * the kernels have no bf16 weights (XF_CPU=avx2, generic). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/xformd.h>

#include "../helpers/hfmodel.h"
#include "../helpers/alloc_count.h"
#include "../helpers/xf_test.h"
#include "engine/ctx.h"
#include "engine/kernels.h"
#include "engine/kernels/qgemm.h"
#include "engine/model.h"
#include "engine/plan_internal.h"
#include "engine/quant.h"

/* ---- helpers ---------------------------------------------------------------------------- */

#define MAX_SEQ 64

typedef struct seqs {
    int32_t B, N;
    int32_t cu[MAX_SEQ + 1];
    int32_t *ids;
} seqs_t;

/* B sequences of lengths 2 + (b·37 + seed) % max_len, deterministic ids in [1000, vocab) (past
 * the specials), each starting with id 101 ([CLS] in the generated vocabularies). */
static void make_seqs(seqs_t *s, int32_t B, int32_t max_len, int32_t vocab, uint32_t seed)
{
    s->B = B;
    s->cu[0] = 0;
    for (int32_t b = 0; b < B; b++)
        s->cu[b + 1] = s->cu[b] + 2 + (int32_t)((uint32_t)(b * 37) + seed) % (max_len - 1);
    s->N = s->cu[B];
    s->ids = malloc((size_t)s->N * sizeof *s->ids);
    assert_non_null(s->ids);
    uint32_t st = seed * 2654435761u + 1;
    int32_t lo = vocab > 2000 ? 1000 : 5;
    for (int32_t t = 0; t < s->N; t++) {
        st = st * 1664525u + 1013904223u;
        s->ids[t] = lo + (int32_t)((st >> 8) % (uint32_t)(vocab - lo));
    }
    for (int32_t b = 0; b < B; b++)
        s->ids[s->cu[b]] = vocab > 101 ? 101 : 1;
}

static xf_batch_t as_batch(const seqs_t *s)
{
    xf_batch_t b;
    memset(&b, 0, sizeof b);
    b.n_seq = s->B;
    b.cu_len = s->cu;
    b.ids = s->ids;
    return b;
}

static xf_model_t *load(const char *dir, const char *quantize)
{
    xf_load_opts_t lo = { 0 };
    xf_diag_t diag = { 0 };
    xf_model_t *m = NULL;
    lo.quantize = quantize;
    int rc = xf_model_load(dir, &lo, &m, &diag);
    if (rc)
        fail_msg("load %s (quantize %s): %s", dir, quantize ? quantize : "NULL", diag.msg);
    return m;
}

/* Pooled (mean, not normalised) embeddings [B][D] and, if logits != NULL, the logits. */
static void embed(const xf_model_t *m, const seqs_t *s, int nth, float *pooled, float *hidden,
                  float *logits)
{
    xf_ctx_opts_t co = { .n_threads = nth };
    xf_ctx_t *c = NULL;
    xf_diag_t diag = { 0 };
    xf_batch_t b = as_batch(s);
    xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 0, .pooled = pooled,
                        .hidden = hidden, .logits = logits };
    assert_int_equal(xf_ctx_create(&co, &c), 0);
    int rc = xf_run(c, m, &b, &out, &diag);
    if (rc)
        fail_msg("forward: %s", diag.msg);
    xf_ctx_free(c);
}

static double cosine(const float *a, const float *b, int32_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int32_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb + 1e-300);
}

/* Every sequence's pooled embedding (and every token's hidden state, reported) of the int8
 * model against the fp32 one: cosine ≥ 0.99 per sequence (the accuracy bar). Returns
 * the worst sequence cosine. */
static double check_cosine(const char *dir, const char *what, int32_t B, int32_t max_len)
{
    xf_model_t *mf = load(dir, NULL), *mq = load(dir, "int8");
    const xf_model_info_t *mi = xf_model_info(mf);
    assert_string_equal(mi->quantize, "none");
    assert_string_equal(xf_model_info(mq)->quantize, "int8");
    assert_non_null(mq->q8);
    assert_null(mf->q8);
    int32_t D = mi->d_model;
    seqs_t s;
    make_seqs(&s, B, max_len < mi->max_positions ? max_len : mi->max_positions,
              mi->vocab_size, 5);
    float *pf = malloc((size_t)B * D * 4), *pq = malloc((size_t)B * D * 4);
    float *hf = malloc((size_t)s.N * D * 4), *hq = malloc((size_t)s.N * D * 4);
    assert_true(pf && pq && hf && hq);
    embed(mf, &s, 2, pf, hf, NULL);
    embed(mq, &s, 2, pq, hq, NULL);
    double worst = 1.0, worst_tok = 1.0;
    int same = 1;
    for (int32_t b = 0; b < B; b++) {
        double c = cosine(pf + (size_t)b * D, pq + (size_t)b * D, D);
        worst = c < worst ? c : worst;
        if (!(c >= 0.99))
            fail_msg("%s: sequence %d (length %d): cosine %.5f < 0.99", what, (int)b,
                     (int)(s.cu[b + 1] - s.cu[b]), c);
        same &= memcmp(pf + (size_t)b * D, pq + (size_t)b * D, (size_t)D * 4) == 0;
    }
    for (int32_t t = 0; t < s.N; t++) {
        double c = cosine(hf + (size_t)t * D, hq + (size_t)t * D, D);
        worst_tok = c < worst_tok ? c : worst_tok;
    }
    assert_false(same);   /* the int8 path did run: results differ from fp32 */
    print_message("# %s: %d sequences, worst cosine %.5f (worst token %.5f)\n", what, (int)B,
                  worst, worst_tok);
    free(pf);
    free(pq);
    free(hf);
    free(hq);
    free(s.ids);
    xf_model_free(mf);
    xf_model_free(mq);
    return worst;
}

/* Under XF_CPU=generic the int8 GEMMs run on the plain reference kernel (scalar, ~1 GMAC/s):
 * the demo-shaped models then shrink to 128 wide (d_ff 512) so that the capped run stays
 * within make check's budget. */
static void demo_shape(xf_demo_opts_t *o)
{
    xf_demo_opts_init(o);
    o->n_layer = 2;
    o->vocab_size = 2000;
    if (xf_qkernels() == xf_qkernels_ref()) {
        o->d_model = 128;
        o->n_head = 4;
        o->d_ff = 512;
        print_message("# int8 reference kernels: demo shape reduced to 2x128/512\n");
    }
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_option(void **state)
{
    (void)state;
    enum xf_quant_mode q;
    assert_int_equal(xf_quant_parse(NULL, &q, NULL), 0);
    assert_int_equal(q, XF_QUANT_NONE);
    assert_int_equal(xf_quant_parse("none", &q, NULL), 0);
    assert_int_equal(q, XF_QUANT_NONE);
    assert_int_equal(xf_quant_parse("int8", &q, NULL), 0);
    assert_int_equal(q, XF_QUANT_INT8);
    assert_string_equal(xf_quant_name(XF_QUANT_INT8), "int8");
    assert_int_equal(xf_quant_parse("bf16", &q, NULL), 0);
    assert_int_equal(q, XF_QUANT_BF16);
    assert_string_equal(xf_quant_name(XF_QUANT_BF16), "bf16");

    char dir[512];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_opt"));
    xf_test_hfmodel_opts o;
    xf_test_hfmodel_opts_init(&o);
    assert_int_equal(xf_test_hfmodel_write(dir, &o), 0);
    static const char *const bad[] = { "int4", "INT8", "fp16", " int8", "BF16", "bf16 " };
    for (int i = 0; i < 6; i++) {
        xf_load_opts_t lo = { 0 };
        xf_diag_t diag = { 0 };
        xf_model_t *m = (xf_model_t *)&diag;   /* must stay untouched */
        lo.quantize = bad[i];
        assert_int_equal(xf_model_load(dir, &lo, &m, &diag), -EINVAL);
        assert_ptr_equal(m, (xf_model_t *)&diag);
        assert_non_null(strstr(diag.msg, "quantize"));
    }
    xf_model_t *m = load(dir, "none");
    assert_string_equal(xf_model_info(m)->quantize, "none");
    xf_model_free(m);
    xf_test_rmtree(dir);
}

/* BERT-base layer widths (768 / 12 heads / 3072, the demo model's shape) with 2 layers and a
 * small vocabulary so the test stays fast: the GEMMs run at the real K = 768 and 3072. */
static void test_cosine_demo_shape(void **state)
{
    (void)state;
    char dir[512];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_demo"));
    xf_demo_opts_t o;
    demo_shape(&o);
    o.max_positions = 128;
    xf_diag_t diag = { 0 };
    assert_int_equal(xf_demo_write(dir, &o, &diag), 0);
    check_cosine(dir, o.d_model == 768 ? "demo shape 2x768/3072" : "demo shape 2x128/512", 12,
                 100);
    xf_test_rmtree(dir);
}

/* quantize=bf16 on the BERT-base layer widths: where the kernels have bf16 weights, every
 * sequence's pooled embedding within cosine 0.9999 of fp32 (and not bitwise fp32: the bf16
 * path ran), each sequence bitwise the same alone as in the batch; elsewhere fp32 exactly,
 * reported as "none". */
static void test_bf16(void **state)
{
    (void)state;
    char dir[512];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_bf16"));
    xf_demo_opts_t o;
    xf_demo_opts_init(&o);
    o.n_layer = 2;
    o.vocab_size = 2000;
    o.max_positions = 128;
    xf_diag_t diag = { 0 };
    assert_int_equal(xf_demo_write(dir, &o, &diag), 0);
    xf_model_t *mf = load(dir, NULL), *mh = load(dir, "bf16");
    const int on = strcmp(xf_model_info(mh)->quantize, "bf16") == 0;
    if (!on)
        assert_string_equal(xf_model_info(mh)->quantize, "none");
    assert_int_equal(on, xf_kernels()->bf16_w && xf_kernels()->packs_w);
    const int32_t D = xf_model_info(mf)->d_model, B = 10;
    seqs_t s;
    make_seqs(&s, B, 100, 2000, 11);
    float *pf = malloc((size_t)B * D * 4), *ph = malloc((size_t)B * D * 4);
    float *hf = malloc((size_t)s.N * D * 4), *hh = malloc((size_t)s.N * D * 4);
    assert_true(pf && ph && hf && hh);
    embed(mf, &s, 2, pf, hf, NULL);
    embed(mh, &s, 2, ph, hh, NULL);
    double worst = 1.0;
    for (int32_t b = 0; b < B; b++) {
        double c = cosine(pf + (size_t)b * D, ph + (size_t)b * D, D);
        worst = c < worst ? c : worst;
        if (!(c >= 0.9999))
            fail_msg("bf16: sequence %d: cosine %.6f < 0.9999", (int)b, c);
    }
    int same = memcmp(pf, ph, (size_t)B * D * 4) == 0;
    assert_int_equal(same, !on);
    /* sequence 3 alone: bitwise its rows of the batch */
    seqs_t one = { .B = 1, .N = s.cu[4] - s.cu[3] };
    one.cu[0] = 0;
    one.cu[1] = one.N;
    one.ids = s.ids + s.cu[3];
    float *p1 = malloc((size_t)D * 4), *h1 = malloc((size_t)one.N * D * 4);
    assert_true(p1 && h1);
    embed(mh, &one, 1, p1, h1, NULL);
    if (on)   /* (the cblas fp32 path of XF_CPU=generic promises no batch independence) */
        assert_memory_equal(h1, hh + (size_t)s.cu[3] * D, (size_t)one.N * D * 4);
    print_message("# bf16 weights %s: %d sequences, worst cosine %.7f\n", on ? "on" : "off",
                  (int)B, worst);
    free(p1);
    free(h1);
    free(pf);
    free(ph);
    free(hf);
    free(hh);
    free(s.ids);
    xf_model_free(mf);
    xf_model_free(mh);
    xf_test_rmtree(dir);
}

/* Hugging Face layout models: every dtype the loader quantises from, the three architectures,
 * pre-LN, ReLU, and pruned layers (different head counts and FFN widths per layer). */
static void test_cosine_hf(void **state)
{
    (void)state;
    static const struct {
        const char *arch, *dtype, *act;
        int pre_ln, pruned, prefix;
    } cases[] = {
        { "bert", "F32", NULL, 0, 0, 1 },    { "bert", "F16", NULL, 0, 1, 0 },
        { "bert", "BF16", "relu", 0, 0, 0 }, { "roberta", "F32", NULL, 0, 0, 1 },
        { "distilbert", "F16", NULL, 0, 0, 0 }, { "bert", "F32", "gelu_new", 1, 1, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[512], what[128];
        assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_hf"));
        xf_test_hfmodel_opts o;
        xf_test_hfmodel_opts_init(&o);
        o.arch = cases[i].arch;
        o.dtype = cases[i].dtype;
        o.act = cases[i].act ? cases[i].act : o.act;
        o.pre_ln = cases[i].pre_ln;
        o.prefix = cases[i].prefix;
        o.n_layer = 3;
        o.d_model = 64;
        o.d_head = 16;
        o.d_ff = 128;
        o.seed = 40 + i;
        if (cases[i].pruned) {
            o.heads[0] = 4;
            o.heads[1] = 2;
            o.heads[2] = 3;
            o.ffn[0] = 128;
            o.ffn[1] = 40;
            o.ffn[2] = 77;
        }
        assert_int_equal(xf_test_hfmodel_write(dir, &o), 0);
        snprintf(what, sizeof what, "%s %s%s%s%s", o.arch, o.dtype, cases[i].act ? " " : "",
                 cases[i].act ? cases[i].act : "", cases[i].pruned ? " pruned" : "");
        check_cosine(dir, what, 9, 60);
        xf_test_rmtree(dir);
    }
}

/* A sequence's output is bitwise the same alone and in a batch (per-token activation scales:
 * no sequence's outlier moves another's), for 1 and 2 threads, and the batch result is
 * bitwise the same for 1, 2 and 3 threads. */
static void test_batch_independent(void **state)
{
    (void)state;
    char dir[512];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_batch"));
    xf_test_hfmodel_opts o;
    xf_test_hfmodel_opts_init(&o);
    o.d_model = 64;
    o.d_head = 16;
    o.d_ff = 128;
    o.max_pos = 128;
    assert_int_equal(xf_test_hfmodel_write(dir, &o), 0);
    xf_model_t *m = load(dir, "int8");
    int32_t D = xf_model_info(m)->d_model;
    seqs_t s;
    make_seqs(&s, 7, 100, xf_model_info(m)->vocab_size, 9);
    float *pb = malloc((size_t)s.B * D * 4), *hb = malloc((size_t)s.N * D * 4);
    float *pb3 = malloc((size_t)s.B * D * 4), *hb3 = malloc((size_t)s.N * D * 4);
    assert_true(pb && hb && pb3 && hb3);
    embed(m, &s, 2, pb, hb, NULL);
    for (int nth = 1; nth <= 3; nth += 2) {
        embed(m, &s, nth, pb3, hb3, NULL);
        assert_memory_equal(pb, pb3, (size_t)s.B * D * 4);
        assert_memory_equal(hb, hb3, (size_t)s.N * D * 4);
    }
    for (int32_t b = 0; b < s.B; b++) {
        seqs_t one;
        int32_t len = s.cu[b + 1] - s.cu[b];
        one.B = 1;
        one.N = len;
        one.cu[0] = 0;
        one.cu[1] = len;
        one.ids = s.ids + s.cu[b];
        float p1[256], *h1 = malloc((size_t)len * D * 4);
        assert_non_null(h1);
        for (int nth = 1; nth <= 2; nth++) {
            embed(m, &one, nth, p1, h1, NULL);
            if (memcmp(p1, pb + (size_t)b * D, (size_t)D * 4) != 0 ||
                memcmp(h1, hb + (size_t)s.cu[b] * D, (size_t)len * D * 4) != 0)
                fail_msg("sequence %d (length %d, nth %d) differs alone and in the batch",
                         (int)b, (int)len, nth);
        }
        free(h1);
    }
    free(pb);
    free(hb);
    free(pb3);
    free(hb3);
    free(s.ids);
    xf_model_free(m);
    xf_test_rmtree(dir);
}

/* A classifier (demo shape, BERT-base layer widths, 2 layers, 3 labels): the argmax label of
 * the int8 model equals the fp32 one on ≥ 99% of 240 fixed inputs. */
static void test_labels(void **state)
{
    (void)state;
    char dir[512];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_cls"));
    xf_demo_opts_t o;
    demo_shape(&o);
    o.max_positions = 64;
    o.n_labels = 3;
    xf_diag_t diag = { 0 };
    assert_int_equal(xf_demo_write(dir, &o, &diag), 0);
    xf_model_t *mf = load(dir, NULL), *mq = load(dir, "int8");
    const int32_t B = 48, L = 3;
    int agree = 0, total = 0;
    for (uint32_t round = 0; round < 5; round++) {
        seqs_t s;
        make_seqs(&s, B, 40, o.vocab_size, 100 + round);
        float lf[48 * 3], lq[48 * 3], pf[48 * 768];
        embed(mf, &s, 2, pf, NULL, lf);
        embed(mq, &s, 2, pf, NULL, lq);
        for (int32_t b = 0; b < B; b++) {
            int af = 0, aq = 0;
            for (int32_t l = 1; l < L; l++) {
                af = lf[b * L + l] > lf[b * L + af] ? l : af;
                aq = lq[b * L + l] > lq[b * L + aq] ? l : aq;
            }
            agree += af == aq;
            total++;
        }
        free(s.ids);
    }
    print_message("# labels unchanged on %d of %d inputs\n", agree, total);
    assert_true(agree * 100 >= total * 99);
    xf_model_free(mf);
    xf_model_free(mq);
    xf_test_rmtree(dir);
}

/* An int8 plan's row chains (plan_internal.h XF_Q8_CHAIN_MAX_ROWS): with XF_Q8_FUSE_ROWS to
 * XF_Q8_CHAIN_MAX_ROWS rows per thread, each layer's ops from the output projection (which
 * quantises its own input) to the layer's last op (FFN2 fused with its residual op, or that
 * op), and no other op, own the same rows (blocks of XF_PLAN_Q8_ROW_BLOCK) and have no barrier
 * after them but the last; every tensor those ops use lives to the chain's end. An fp32 plan
 * has none of them (its FFN1 row split: test_plan). */
static void check_chains(const xf_plan_t *p, int quant, int nth, int *n_self)
{
    int want = quant && p->n_tokens >= XF_Q8_FUSE_ROWS * nth &&
               p->n_tokens <= XF_Q8_CHAIN_MAX_ROWS * nth;
    int n_chains = 0;
    for (int32_t i = 0; i < p->n_ops; i++) {
        if (!quant || !p->ops[i].no_barrier) {
            assert_int_equal(p->ops[i].quant_in, 0);
            continue;
        }
        assert_true(want);
        assert_int_equal(p->ops[i].kind, XF_OP_OPROJ);
        assert_int_equal(p->ops[i].quant_in, 1);
        int32_t e = i;   /* the chain's last op: the layer's last */
        while (e + 1 < p->n_ops && p->ops[e + 1].layer == p->ops[i].layer)
            e++;
        assert_true(e - i >= 2);
        for (int32_t j = i; j <= e; j++) {
            const xf_plan_op_t *op = &p->ops[j];
            assert_true(op->kind == XF_OP_OPROJ || op->kind == XF_OP_ADD_LN ||
                        op->kind == XF_OP_ADD || op->kind == XF_OP_LN ||
                        op->kind == XF_OP_FF1 || op->kind == XF_OP_FF2);
            assert_int_equal(op->row_block, XF_PLAN_Q8_ROW_BLOCK);
            assert_int_equal(op->no_barrier, j < e);
            assert_int_equal(op->quant_in, j == i);
            const int32_t used[] = { op->in0, op->in1, op->out, op->ws, op->aux };
            for (size_t u = 0; u < sizeof used / sizeof used[0]; u++)
                if (used[u] >= 0)
                    assert_true(p->t[used[u]].last >= e);
        }
        assert_true(p->ops[e].kind == XF_OP_FF2 || p->ops[e].kind == XF_OP_ADD_LN ||
                    p->ops[e].kind == XF_OP_ADD);
        n_chains++;
        (*n_self)++;
        i = e;
    }
    assert_int_equal(n_chains, want ? p->m->info.n_layer : 0);
}

/* The planner gives every Linear op of an int8 model its activation buffer (and none to an
 * fp32 model), and a steady-state forward allocates nothing; post-LN and pre-LN. The plans fuse
 * OPROJ and FFN2 with their residual LayerNorm (fuse_rows 1: every thread owns rows) and give
 * the unfused plan's bits, for 1-3 threads. The batch (64 ≤ N < 128) is one int8 row chain
 * per layer at 1 thread and none at 2 or 3: the int8 outputs are bitwise the same (the chain
 * changes only who computes which row, and the barriers). */
static void test_plan_and_zero_alloc(void **state)
{
    (void)state;
    char dir[512];
    for (int v = 0; v < 4; v++) {
        int pre_ln = v / 2, quant = v % 2;
        assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_plan"));
        xf_test_hfmodel_opts o;
        xf_test_hfmodel_opts_init(&o);
        o.n_labels = 2;
        o.heads[1] = 2;
        o.ffn[1] = 48;
        o.pre_ln = pre_ln;
        assert_int_equal(xf_test_hfmodel_write(dir, &o), 0);
        xf_model_t *m = load(dir, quant ? "int8" : NULL);
        seqs_t s;
        make_seqs(&s, 5, 30, xf_model_info(m)->vocab_size, 3);
        assert_true(s.N >= XF_Q8_FUSE_ROWS && s.N < 2 * XF_Q8_FUSE_ROWS);
        xf_batch_t b = as_batch(&s);
        int32_t D = xf_model_info(m)->d_model;
        float *h1t = calloc((size_t)s.N * D, 4);
        assert_non_null(h1t);
        for (int nth = 1; nth <= 3; nth++) {
            xf_ctx_opts_t co = { .n_threads = nth };
            xf_ctx_t *c = NULL;
            xf_plan_t *p = NULL;
            assert_int_equal(xf_ctx_create(&co, &c), 0);
            assert_int_equal(xf_plan_create(m, &p), 0);
            p->fuse_rows = 1;
            assert_int_equal(xf_plan_build(p, &b, nth, NULL), 0);
            int n_q8 = 0, n_qop = 0, n_fused = 0, n_fused_ff1 = 0, n_resid = 0, n_self = 0;
            check_chains(p, quant, nth, &n_self);
            for (int32_t i = 0; i < p->n_ops; i++) {
                const xf_plan_op_t *op = &p->ops[i];
                if (op->kind == XF_OP_Q8) {
                    /* the quantising op writes the buffer the next op (its Linear) reads */
                    assert_true(i + 1 < p->n_ops);
                    assert_int_equal(p->ops[i + 1].kind, op->which);
                    assert_int_equal(p->ops[i + 1].ws, op->out);
                    assert_true(op->which == XF_OP_OPROJ || op->which == XF_OP_FF2);
                    n_qop++;
                }
                if (op->kind == XF_OP_FF1 && op->aux >= 0) {
                    /* FFN1's GEMM quantises its output for FFN2 (enough rows per thread) */
                    assert_true(quant && i + 1 < p->n_ops);
                    assert_true(s.N >= XF_Q8_FUSE_ROWS * nth);
                    assert_int_equal(p->ops[i + 1].kind, XF_OP_FF2);
                    assert_int_equal(p->ops[i + 1].in0, op->out);
                    assert_int_equal(p->ops[i + 1].ws, op->aux);
                    n_fused_ff1++;
                }
                int resid = (op->kind == XF_OP_OPROJ || op->kind == XF_OP_FF2) && op->which;
                n_resid += resid;
                if ((op->kind == XF_OP_EMBED || op->kind == XF_OP_LN ||
                     op->kind == XF_OP_ADD_LN || resid) && op->aux >= 0) {
                    /* fused: the row op quantises its output for the next op, a Linear
                     * reading it (QKV, FFN1) with that buffer as its ws */
                    assert_true(quant && i + 1 < p->n_ops);
                    assert_true(p->ops[i + 1].kind == XF_OP_QKV ||
                                p->ops[i + 1].kind == XF_OP_FF1);
                    assert_int_equal(p->ops[i + 1].in0, op->out);
                    assert_int_equal(p->ops[i + 1].ws, op->aux);
                    n_fused++;
                }
                int lin = op->kind == XF_OP_QKV || op->kind == XF_OP_OPROJ ||
                          op->kind == XF_OP_FF1 || op->kind == XF_OP_FF2;
                if (!lin)
                    continue;
                if (!quant) {
                    assert_int_equal(op->ws, -1);
                    continue;
                }
                assert_true(op->ws >= 0);
                assert_string_equal(p->t[op->ws].what, "q8_act");
                const xf_layer_t *L = &m->layers[op->layer];
                int32_t k = op->kind == XF_OP_OPROJ ? L->n_head * L->d_head
                            : op->kind == XF_OP_FF2 ? L->d_ff : D;
                assert_true(p->t[op->ws].bytes >= xf_qgemm_act_bytes(s.N, k));
                n_q8++;
            }
            assert_int_equal(n_q8, quant ? 4 * xf_model_info(m)->n_layer : 0);
            assert_int_equal(n_qop + n_fused + n_fused_ff1 + n_self, n_q8);
            assert_int_equal(n_fused, quant ? 2 * xf_model_info(m)->n_layer : 0);
            assert_int_equal(n_fused_ff1, quant && s.N >= XF_Q8_FUSE_ROWS * nth
                                              ? xf_model_info(m)->n_layer : 0);
            /* OPROJ and FFN2 fused (fp32: only where the kernels are split-exact) */
            assert_int_equal(n_resid, quant || xf_kernels()->nth_exact
                                          ? 2 * xf_model_info(m)->n_layer : 0);
            assert_int_equal(xf_ctx_reserve(c, p), 0);
            float *h = calloc((size_t)s.N * D, 4), *h2 = calloc((size_t)s.N * D, 4);
            float pl[5 * 64], lg[5 * 2];
            xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 1, .pooled = pl,
                                .hidden = h, .logits = lg };
            assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
            out.hidden = h2;
            xf_test_alloc_count_start();
            int rc = xf_forward(c, m, p, &b, &out, NULL);
            long n_allocs = xf_test_alloc_count_stop();
            assert_int_equal(rc, 0);
            assert_int_equal(n_allocs, 0);
            assert_memory_equal(h, h2, (size_t)s.N * D * 4);
            /* the unfused plan: the same bits */
            xf_plan_t *pu = NULL;
            assert_int_equal(xf_plan_create(m, &pu), 0);
            pu->fuse_rows = 0;
            assert_int_equal(xf_plan_build(pu, &b, nth, NULL), 0);
            int n_self_u = 0;
            check_chains(pu, quant, nth, &n_self_u);
            assert_int_equal(xf_ctx_reserve(c, pu), 0);
            memset(h2, 0, (size_t)s.N * D * 4);
            assert_int_equal(xf_forward(c, m, pu, &b, &out, NULL), 0);
            assert_memory_equal(h, h2, (size_t)s.N * D * 4);
            xf_plan_free(pu);
            if (nth == 1)
                memcpy(h1t, h, (size_t)s.N * D * 4);
            else if (quant)   /* a row chain at 1 thread, none at 2 and 3 */
                assert_memory_equal(h, h1t, (size_t)s.N * D * 4);
            free(h);
            free(h2);
            xf_plan_free(p);
            xf_ctx_free(c);
        }
        free(h1t);
        free(s.ids);
        xf_model_free(m);
        xf_test_rmtree(dir);
    }
}

/* xf_qgemm_w_init with each of its three allocations failing in turn: -ENOMEM, *qw left
 * empty, nothing leaked (the sanitizer build checks that); then it succeeds. */
static void test_qgemm_w_enomem(void **state)
{
    (void)state;
    float w[3 * 5];
    xf_test_fill(w, 3 * 5, 7, -1.0f, 1.0f);
    xf_qgemm_w_t qw;
    for (long k = 1; k <= 3; k++) {
        xf_test_alloc_fail_at(k);
        int rc = xf_qgemm_w_init(&qw, w, 3, 5, 127, 0, 1);
        xf_test_alloc_fail_at(0);
        assert_int_equal(rc, -ENOMEM);
        assert_null(qw.wq);
        assert_null(qw.sigma);
        assert_null(qw.colsum);
        assert_int_equal(qw.bytes, 0);
        xf_qgemm_w_deinit(&qw);
    }
    assert_int_equal(xf_qgemm_w_init(&qw, w, 3, 5, 127, 0, 1), 0);
    assert_non_null(qw.wq);
    assert_true(qw.sigma[0] > 0.0f);
    xf_qgemm_w_deinit(&qw);
}

/* The op list of a plan, one word per op: its kind, "@b" when it owns rows (row_block b), "q"
 * when it quantises its own input, "/" when no barrier follows it. */
static void op_list(const xf_plan_t *p, char *buf, size_t cap)
{
    static const char *const name[XF_OP_COUNT] = {
        [XF_OP_EMBED] = "embed", [XF_OP_LN] = "ln", [XF_OP_QKV] = "qkv",
        [XF_OP_SPLIT] = "split", [XF_OP_ATTN_STATE] = "attn_state",
        [XF_OP_ATTN_PREP] = "attn_prep", [XF_OP_ATTN] = "attn",
        [XF_OP_ATTN_UPDATE] = "attn_update", [XF_OP_OPROJ] = "oproj", [XF_OP_ADD_LN] = "add_ln",
        [XF_OP_ADD] = "add", [XF_OP_FF1] = "ff1", [XF_OP_FF2] = "ff2", [XF_OP_POOL] = "pool",
        [XF_OP_POOLER] = "pooler", [XF_OP_POOL_END] = "pool_end",
        [XF_OP_HEAD_DENSE] = "head_dense", [XF_OP_HEAD_TANH] = "head_tanh", [XF_OP_CLS] = "cls",
        [XF_OP_Q8] = "q8",
    };
    size_t at = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < p->n_ops; i++) {
        const xf_plan_op_t *o = &p->ops[i];
        char rows[16] = "";
        if (o->row_block > 0)
            snprintf(rows, sizeof rows, "@%d", (int)o->row_block);
        int n = snprintf(buf + at, cap - at, "%s%s%s%s%s", i ? " " : "", name[o->kind], rows,
                         o->quant_in ? "q" : "", o->no_barrier ? "/" : "");
        assert_true(n > 0 && (size_t)n < cap - at);
        at += (size_t)n;
    }
}

/* A b=1 n=128 request on 2 threads (64 tokens per thread: the fused residual, the fp32 FFN1
 * row split, the int8 row chain), fp32 and int8, post-LN and pre-LN: the plan's op list and
 * the barriers the pool actually waits per forward — not profiling, then profiling (which
 * changes none). Written out by hand; the sums: embeddings 1, per layer (2) fp32 post-LN
 * qkv + attn + oproj + ff2 = 4, int8 qkv + attn + ff2 = 3 (the chain), pre-LN one more (ln1),
 * pre-LN's final LayerNorm 1; the heads pool, pool_end, head_dense, head_tanh = 4 (pooled CLS
 * rows, normalised, and logits: the pooler op is idle, the last op, cls, has none). The cblas
 * path (XF_CPU=generic) does not fuse fp32 (test_fused_residual_plan). */
static void test_b1n128_barriers(void **state)
{
    (void)state;
    static const char *const heads = "pool pooler pool_end head_dense head_tanh cls";
    static const struct {
        int pre_ln, quant, fused;
        const char *layer;
        int barriers;
    } want[] = {
        { 0, 0, 1, "qkv attn oproj@1 ff1@1/ ff2@1", 1 + 2 * 4 + 4 },
        { 0, 0, 0, "qkv attn oproj add_ln ff1 ff2 add_ln", 1 + 2 * 7 + 4 },
        { 0, 1, 1, "qkv attn oproj@16q/ ff1@16/ ff2@16", 1 + 2 * 3 + 4 },
        { 1, 0, 1, "ln qkv attn oproj@1 ln@1/ ff1@1/ ff2@1", 1 + 2 * 5 + 1 + 4 },
        { 1, 0, 0, "ln qkv attn oproj add ln ff1 ff2 add", 1 + 2 * 9 + 1 + 4 },
        { 1, 1, 1, "ln qkv attn oproj@16q/ ln@16/ ff1@16/ ff2@16", 1 + 2 * 4 + 1 + 4 },
    };
    char dir[512], got[2048], expect[2048];
    const int fused_fp32 = xf_kernels()->nth_exact;
    for (size_t v = 0; v < sizeof want / sizeof want[0]; v++) {
        if (want[v].fused != (want[v].quant || fused_fp32))
            continue;
        assert_non_null(xf_test_tmpdir(dir, sizeof dir, "quant_b1n128"));
        xf_test_hfmodel_opts o;
        xf_test_hfmodel_opts_init(&o);
        o.n_labels = 2;
        o.max_pos = 128;
        o.pre_ln = want[v].pre_ln;
        assert_int_equal(o.n_layer, 2);
        assert_int_equal(xf_test_hfmodel_write(dir, &o), 0);
        xf_model_t *m = load(dir, want[v].quant ? "int8" : NULL);
        int32_t cu[2] = { 0, 128 }, ids[128];
        for (int32_t t = 0; t < 128; t++)
            ids[t] = t ? 5 + (t * 37) % 200 : 101;
        xf_batch_t b = { .n_seq = 1, .cu_len = cu, .ids = ids };
        xf_ctx_opts_t co = { .n_threads = 2 };
        xf_ctx_t *c = NULL;
        xf_plan_t *p = NULL;
        assert_int_equal(xf_ctx_create(&co, &c), 0);
        assert_int_equal(xf_plan_create(m, &p), 0);
        p->fuse_rows = XF_FUSE_ROWS;   /* not the environment's */
        assert_int_equal(xf_plan_build(p, &b, 2, NULL), 0);
        assert_int_equal(xf_ctx_reserve(c, p), 0);
        op_list(p, got, sizeof got);
        snprintf(expect, sizeof expect, "embed %s %s %s%s", want[v].layer, want[v].layer,
                 want[v].pre_ln ? "ln " : "", heads);
        print_message("# pre_ln %d %s: %s\n", want[v].pre_ln, want[v].quant ? "int8" : "fp32",
                      got);
        assert_string_equal(got, expect);
        static float pooled[64], logits[2];
        xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 1, .pooled = pooled,
                            .logits = logits };
        for (int prof = 0; prof < 2; prof++) {
            xf_pool_stats_t s0, s1;
            assert_int_equal(xf_ctx_profile(c, prof), 0);
            xf_pool_stats(c->pool, &s0);
            assert_int_equal(xf_forward(c, m, p, &b, &out, NULL), 0);
            xf_pool_stats(c->pool, &s1);
            assert_int_equal(s1.waits - s0.waits, want[v].barriers);   /* 2 threads: 1 each */
        }
        xf_plan_free(p);
        xf_ctx_free(c);
        xf_model_free(m);
        xf_test_rmtree(dir);
    }
}

XF_TEST_MAIN(cmocka_unit_test(test_option), cmocka_unit_test(test_qgemm_w_enomem),
             cmocka_unit_test(test_cosine_demo_shape),
             cmocka_unit_test(test_cosine_hf), cmocka_unit_test(test_batch_independent),
             cmocka_unit_test(test_labels), cmocka_unit_test(test_plan_and_zero_alloc),
             cmocka_unit_test(test_b1n128_barriers), cmocka_unit_test(test_bf16))
