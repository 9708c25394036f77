/* Transformer-XL engine tests: the forward pass against the float64 HF-definition reference
 * (tests/ref/txl_ref.c) segment by segment with memory, mem_len 0 = independent segments, empty
 * vs zeros initial memory, the word tokenizer (vocab.txt and tokenizer.json idx2sym), and the
 * §22.1 session blob (round trip in each dtype, every header field corrupted → rejected). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xformd/txl.h>

#include "../ref/txl_ref.h"
#include "../helpers/xf_test.h"

/* fp32 engine vs float64 reference: hidden states are LayerNorm outputs of size ~1 after a few
 * fp32 GEMMs of width <= 64 (error ~1e-6); log-probs are ~log(300) and add a few more rounding
 * steps. 1e-4 is the bound and leaves a margin of ~10x. */
#define TOL 1e-4

static char g_dir[3][4096];

static void write_model(int which)
{
    xf_txl_demo_opts_t o;
    xf_diag_t diag = { 0 };
    char tag[32];

    xf_txl_demo_opts_init(&o);
    if (which == 1) {       /* pre-LN, same_length, shared r biases, untied crit, clamp 5 */
        o.pre_lnorm = 1;
        o.same_length = 1;
        o.untie_r = 0;
        o.tie_weights = 0;
        o.clamp_len = 5;
        o.seed = 12;
    } else if (which == 2) { /* div_val 1 with d_embed != d_model (projections, sliced layers) */
        o.div_val = 1;
        o.d_embed = 24;
        o.n_layer = 3;
        o.seed = 13;
    }
    snprintf(tag, sizeof tag, "txl%d", which);
    xf_test_tmpdir(g_dir[which], sizeof g_dir[which], tag);
    assert_int_equal(xf_txl_demo_write(g_dir[which], &o, &diag), 0);
}

static xf_txl_t *load(int which, int mem_len)
{
    xf_txl_opts_t o = { NULL, mem_len };
    xf_txl_t *m = NULL;
    xf_diag_t diag = { 0 };

    if (!g_dir[which][0])
        write_model(which);
    if (xf_txl_load(g_dir[which], &o, &m, &diag) != 0)
        fail_msg("load: %s", diag.msg);
    return m;
}

static const int32_t SEG_A[] = { 3, 150, 7, 250, 0, 12, 199 };
static const int32_t SEG_B[] = { 201, 2, 99, 100, 45, 299, 0, 1, 160 };
static const int32_t SEG_C[] = { 17, 230, 5, 120, 8 };

typedef struct seg {
    const int32_t *ids;
    int n;
} seg_t;

/* Run segs through the engine (one memory, init) and the reference (HF mems threaded through,
 * starting from none or zeros); compare hidden states, per-token log-probs (row t−1 scores
 * token t; token 0 of a later segment is scored by the previous segment's last row) and the
 * argmax prediction. Returns the max abs error seen. */
static double check_stream(int which, int mem_len, enum xf_txl_init init, const seg_t *segs,
                           int nseg)
{
    xf_txl_t *m = load(which, mem_len);
    txl_ref_t *r = NULL;
    xf_txl_mem_t *mem = NULL;
    int D, V, L, mlen = 0;
    double *mems = NULL, prev_last[4096], maxerr = 0;
    int have_prev = 0;

    assert_int_equal(txl_ref_load(g_dir[which], mem_len, &r), 0);
    D = txl_ref_d_model(r);
    V = txl_ref_vocab(r);
    L = txl_ref_n_layer(r);
    assert_int_equal(xf_txl_mem_create(m, init, &mem), 0);
    if (init == XF_TXL_INIT_ZEROS && txl_ref_mem_len(r) > 0) {
        mlen = txl_ref_mem_len(r);
        mems = calloc((size_t)L * mlen * D, sizeof(double));
    }
    for (int s = 0; s < nseg; s++) {
        int n = segs[s].n, nm = 0;
        double *logp = malloc(sizeof(double) * (size_t)n * V);
        double *hid = malloc(sizeof(double) * (size_t)n * D), *new_mems = NULL;
        xf_txl_result_t res = { 0 };
        xf_diag_t diag = { 0 };
        double sum = 0;
        int best = 0;

        assert_int_equal(txl_ref_forward(r, mems, mlen, segs[s].ids, n, logp, hid, &new_mems,
                                         &nm), 0);
        if (xf_txl_run(m, mem, segs[s].ids, n, XF_TXL_OUT_HIDDEN | XF_TXL_OUT_POOLED, &res,
                       &diag) != 0)
            fail_msg("run: %s", diag.msg);
        for (int i = 0; i < n * D; i++)
            maxerr = fmax(maxerr, fabs(res.hidden[i] - hid[i]));
        for (int t = 0; t < n; t++) {
            double want;
            if (t > 0)
                want = logp[(size_t)(t - 1) * V + segs[s].ids[t]];
            else if (have_prev)
                want = prev_last[segs[s].ids[0]];
            else {
                assert_true(isnan(res.logprobs[0]));
                continue;
            }
            maxerr = fmax(maxerr, fabs(res.logprobs[t] - want));
            sum += want;
        }
        maxerr = fmax(maxerr, fabs(res.sum - sum));
        for (int v = 1; v < V; v++)
            if (logp[(size_t)(n - 1) * V + v] > logp[(size_t)(n - 1) * V + best])
                best = v;
        assert_int_equal(res.next_id, best);
        maxerr = fmax(maxerr, fabs(res.next_logprob - logp[(size_t)(n - 1) * V + best]));
        for (int c = 0; c < D; c++) {
            double p = 0;
            for (int t = 0; t < n; t++)
                p += hid[(size_t)t * D + c];
            maxerr = fmax(maxerr, fabs(res.pooled[c] - p / n));
        }
        assert_true(V <= 4096);
        memcpy(prev_last, logp + (size_t)(n - 1) * V, sizeof(double) * (size_t)V);
        have_prev = 1;
        {
            xf_txl_mem_stats_t st;
            xf_txl_mem_stats(mem, &st);
            assert_int_equal(st.rows, nm);
            assert_int_equal(st.segments, s + 1);
        }
        free(mems);
        mems = new_mems;
        mlen = nm;
        free(logp);
        free(hid);
        xf_txl_result_deinit(&res);
    }
    free(mems);
    xf_txl_mem_free(mem);
    txl_ref_free(r);
    xf_txl_free(m);
    return maxerr;
}

static const seg_t ABC[] = { { SEG_A, 7 }, { SEG_B, 9 }, { SEG_C, 5 } };

static void test_vs_reference(void **state)
{
    (void)state;
    /* mem_len 16: A leaves 7 rows, B fills 16 (trims), C reads a full memory */
    for (int which = 0; which < 3; which++) {
        double e = check_stream(which, -1, XF_TXL_INIT_EMPTY, ABC, 3);
        print_message("# model %d, empty init, A B C: max err %.3g\n", which, e);
        assert_true(e <= TOL);
    }
    /* a memory shorter than a segment (mem_len 4 < 9) */
    {
        double e = check_stream(0, 4, XF_TXL_INIT_EMPTY, ABC, 3);
        print_message("# mem_len 4: max err %.3g\n", e);
        assert_true(e <= TOL);
    }
}

static void test_init_zeros(void **state)
{
    (void)state;
    for (int which = 0; which < 2; which++) {
        double e = check_stream(which, -1, XF_TXL_INIT_ZEROS, ABC, 3);
        print_message("# model %d, zeros init: max err %.3g\n", which, e);
        assert_true(e <= TOL);
    }
}

/* The two starts differ (HF's zeros are attended through the position terms). */
static void test_init_differs(void **state)
{
    xf_txl_t *m = load(0, -1);
    xf_txl_mem_t *a, *b;
    xf_txl_result_t ra = { 0 }, rb = { 0 };
    double d = 0;

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_ZEROS, &b), 0);
    assert_int_equal(xf_txl_run(m, a, SEG_A, 7, 0, &ra, NULL), 0);
    assert_int_equal(xf_txl_run(m, b, SEG_A, 7, 0, &rb, NULL), 0);
    for (int t = 1; t < 7; t++)
        d = fmax(d, fabs(ra.logprobs[t] - rb.logprobs[t]));
    assert_true(d > 1e-3);
    xf_txl_result_deinit(&ra);
    xf_txl_result_deinit(&rb);
    xf_txl_mem_free(a);
    xf_txl_mem_free(b);
    xf_txl_free(m);
}

/* mem_len 0: B after A equals B alone (bitwise: same code path, same inputs), and both equal
 * the reference with mems = None. */
static void test_mem_len_zero(void **state)
{
    xf_txl_t *m = load(0, 0);
    xf_txl_mem_t *a, *b;
    xf_txl_result_t r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
    double e;

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_ZEROS, &b), 0);
    assert_int_equal(xf_txl_run(m, a, SEG_A, 7, XF_TXL_OUT_HIDDEN, &r1, NULL), 0);
    assert_int_equal(xf_txl_run(m, a, SEG_B, 9, XF_TXL_OUT_HIDDEN, &r2, NULL), 0);
    assert_int_equal(xf_txl_run(m, b, SEG_B, 9, XF_TXL_OUT_HIDDEN, &r3, NULL), 0);
    assert_memory_equal(r2.hidden, r3.hidden, sizeof(float) * 9 * 32);
    assert_memory_equal(r2.logprobs + 1, r3.logprobs + 1, sizeof(float) * 8);
    assert_false(isnan(r2.logprobs[0]));   /* scored by A's last row */
    assert_true(isnan(r3.logprobs[0]));
    xf_txl_result_deinit(&r1);
    xf_txl_result_deinit(&r2);
    xf_txl_result_deinit(&r3);
    xf_txl_mem_free(a);
    xf_txl_mem_free(b);
    xf_txl_free(m);
    e = check_stream(0, 0, XF_TXL_INIT_EMPTY, ABC, 3);
    print_message("# mem_len 0 vs reference (mems None): max err %.3g\n", e);
    assert_true(e <= TOL);
}

static void test_tokenizer(void **state)
{
    xf_txl_t *m = load(0, -1);
    int32_t *ids = NULL, n = 0;
    xf_diag_t diag = { 0 };
    const char *text = "  The OF\tzzz w250\n";

    (void)state;
    assert_int_equal(xf_txl_encode(m, text, strlen(text), 1, &ids, &n, &diag), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[0], 2);                      /* the (lower-cased) */
    assert_int_equal(ids[1], 3);                      /* of */
    assert_int_equal(ids[2], xf_txl_info(m)->unk_id); /* zzz */
    assert_int_equal(ids[3], 250);
    assert_int_equal(ids[4], xf_txl_info(m)->eos_id);
    assert_string_equal(xf_txl_symbol(m, 250), "w250");
    free(ids);
    assert_int_equal(xf_txl_encode(m, "a\xff", 2, 0, &ids, &n, &diag), XF_EFORMAT);
    assert_int_equal(xf_txl_encode(m, "   ", 3, 0, &ids, &n, &diag), 0);
    assert_int_equal(n, 0);
    free(ids);
    xf_txl_free(m);
}

/* A copy of model 0 in dir without vocab.txt and with tokenizer.json = tok (config.json,
 * model.safetensors and tokenizer_config.json copied). */
static void model_with_tokenizer_json(const char *dir, const char *tok)
{
    static const char *const files[] = { "config.json", "model.safetensors",
                                         "tokenizer_config.json" };
    char p[4200];

    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        size_t len;
        char *d;
        snprintf(p, sizeof p, "%s/%s", g_dir[0], files[k]);
        d = xf_test_slurp(p, &len);
        assert_non_null(d);
        snprintf(p, sizeof p, "%s/%s", dir, files[k]);
        assert_int_equal(xf_test_write_file(p, d, len), 0);
        free(d);
    }
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    assert_int_equal(xf_test_write_file(p, tok, strlen(tok)), 0);
}

/* tokenizer.json's idx2sym (TransfoXLTokenizer's symbol list) instead of vocab.txt: the same
 * symbols give the same ids; a list that would make ids ambiguous or unreadable is refused
 * with a message naming the entry; a directory with neither file names both. */
static void test_tokenizer_json(void **state)
{
    xf_txl_t *m = load(0, -1), *j = NULL;
    char dir[4096], *tok;
    size_t cap, len = 0;
    int32_t *a = NULL, *b = NULL, na = 0, nb = 0;
    int32_t nsym = xf_txl_info(m)->n_symbols;
    xf_diag_t diag = { 0 };
    const char *text = "The of zzz w250 w17 <eos> w299";
    static const struct {
        const char *json, *msg;
    } bad[] = {
        { "{\"idx2sym\":[\"<eos>\",\"<unk>\",\"the\",\"the\"]}", "repeats id 2" },
        { "{\"idx2sym\":\"the\"}", "no \"idx2sym\" array" },
        { "{\"sym2idx\":{\"the\":0}}", "no \"idx2sym\" array" },
        { "{\"idx2sym\":[\"<eos>\",7]}", "idx2sym[1]" },
        { "{\"idx2sym\":[\"<eos>\",\"\"]}", "idx2sym[1]" },
        { "{\"idx2sym\":[\"<eos>\",\"a b\"]}", "idx2sym[1]" },
        { "{\"idx2sym\":[]}", "no symbols" },
        { "{\"idx2sym\":[\"<eos>\"", "tokenizer.json: line" },
    };

    (void)state;
    cap = 64 + (size_t)nsym * 16;
    tok = malloc(cap);
    assert_non_null(tok);
    len += (size_t)snprintf(tok + len, cap - len, "{\"idx2sym\": [");
    for (int32_t i = 0; i < nsym; i++)
        len += (size_t)snprintf(tok + len, cap - len, "%s\"%s\"", i ? ", " : "",
                                xf_txl_symbol(m, i));
    snprintf(tok + len, cap - len, "]}\n");
    xf_test_tmpdir(dir, sizeof dir, "txljson");
    model_with_tokenizer_json(dir, tok);
    if (xf_txl_load(dir, NULL, &j, &diag) != 0)
        fail_msg("load with tokenizer.json: %s", diag.msg);
    assert_int_equal(xf_txl_info(j)->n_symbols, nsym);
    assert_int_equal(xf_txl_info(j)->eos_id, xf_txl_info(m)->eos_id);
    assert_int_equal(xf_txl_info(j)->unk_id, xf_txl_info(m)->unk_id);
    assert_int_equal(xf_txl_info(j)->lower_case, 1);
    assert_int_equal(xf_txl_encode(m, text, strlen(text), 1, &a, &na, &diag), 0);
    assert_int_equal(xf_txl_encode(j, text, strlen(text), 1, &b, &nb, &diag), 0);
    assert_int_equal(na, 8);
    assert_int_equal(nb, na);
    assert_memory_equal(a, b, sizeof *a * (size_t)na);
    assert_int_equal(b[2], xf_txl_info(j)->unk_id);
    assert_string_equal(xf_txl_symbol(j, 250), "w250");
    free(a);
    free(b);
    xf_txl_free(j);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        j = NULL;
        memset(&diag, 0, sizeof diag);
        model_with_tokenizer_json(dir, bad[k].json);
        assert_int_equal(xf_txl_load(dir, NULL, &j, &diag), XF_EFORMAT);
        assert_null(j);
        if (!strstr(diag.msg, bad[k].msg))
            fail_msg("%s: diag '%s' lacks '%s'", bad[k].json, diag.msg, bad[k].msg);
    }
    {   /* neither vocab.txt nor tokenizer.json */
        char p[4200];
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        assert_int_equal(unlink(p), 0);
        assert_int_equal(xf_txl_load(dir, NULL, &j, &diag), -ENOENT);
        assert_non_null(strstr(diag.msg, "tokenizer.json"));
        assert_non_null(strstr(diag.msg, "vocab.txt"));
    }
    xf_test_rmtree(dir);
    free(tok);
    xf_txl_free(m);
}

/* Two memories hold the same state: rows, counters and every row value (exact for f32, the
 * dtype's rounding for f16/bf16). */
static void mem_equal(xf_txl_t *m, xf_txl_mem_t *a, xf_txl_mem_t *b, enum xf_txl_dtype dt)
{
    size_t la = xf_txl_mem_blob_size(m, a, XF_TXL_F32);
    uint8_t *ba = malloc(la), *bb = malloc(la);
    xf_txl_mem_stats_t sa, sb;

    xf_txl_mem_stats(a, &sa);
    xf_txl_mem_stats(b, &sb);
    assert_int_equal(sa.rows, sb.rows);
    assert_int_equal(sa.segments, sb.segments);
    assert_int_equal(sa.tokens, sb.tokens);
    assert_int_equal(sa.has_boundary, sb.has_boundary);
    assert_int_equal(xf_txl_mem_blob_size(m, b, XF_TXL_F32), la);
    assert_int_equal(xf_txl_mem_save(m, a, XF_TXL_F32, ba, la), 0);
    assert_int_equal(xf_txl_mem_save(m, b, XF_TXL_F32, bb, la), 0);
    if (dt == XF_TXL_F32) {
        assert_memory_equal(ba, bb, la);
    } else {
        /* f16: 11-bit significand (rel 2^-11); bf16: 8 bits (rel 2^-8), round to nearest */
        double rel = dt == XF_TXL_F16 ? 1.0 / 2048 : 1.0 / 256, worst = 0;
        for (size_t i = 128; i + 4 <= la; i += 4) {
            float x, y;
            memcpy(&x, ba + i, 4);
            memcpy(&y, bb + i, 4);
            worst = fmax(worst, fabs(x - y) / fmax(fabs(x), 1e-3));
        }
        assert_true(worst <= rel);
        assert_true(worst > 0);
    }
    free(ba);
    free(bb);
}

static void test_blob_round_trip(void **state)
{
    xf_txl_t *m = load(0, -1);
    xf_txl_mem_t *a, *b;
    xf_txl_result_t r = { 0 };
    const enum xf_txl_dtype dts[3] = { XF_TXL_F32, XF_TXL_F16, XF_TXL_BF16 };

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    /* an empty memory round-trips too */
    for (int k = 0; k < 3; k++) {
        size_t len = xf_txl_mem_blob_size(m, a, dts[k]);
        uint8_t *buf = malloc(len);
        assert_int_equal(len, 128);
        assert_int_equal(xf_txl_mem_save(m, a, dts[k], buf, len), 0);
        assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_ZEROS, &b), 0);
        assert_int_equal(xf_txl_mem_load(m, buf, len, b, NULL), 0);
        mem_equal(m, a, b, XF_TXL_F32);
        xf_txl_mem_free(b);
        free(buf);
    }
    assert_int_equal(xf_txl_run(m, a, SEG_A, 7, 0, &r, NULL), 0);
    xf_txl_result_deinit(&r);
    assert_int_equal(xf_txl_run(m, a, SEG_B, 9, 0, &r, NULL), 0);
    xf_txl_result_deinit(&r);
    for (int k = 0; k < 3; k++) {
        size_t len = xf_txl_mem_blob_size(m, a, dts[k]);
        uint8_t *buf = malloc(len);
        xf_txl_result_t r1 = { 0 }, r2 = { 0 };
        xf_txl_mem_t *a2;
        xf_diag_t diag = { 0 };
        assert_int_equal(len, 128 + (2 * 16 + 1) * 32 * (dts[k] == XF_TXL_F32 ? 4 : 2));
        assert_int_equal(xf_txl_mem_save(m, a, dts[k], buf, len - 1), -ENOBUFS);
        assert_int_equal(xf_txl_mem_save(m, a, dts[k], buf, len), 0);
        assert_memory_equal(buf, "XFMM", 4);
        assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &b), 0);
        if (xf_txl_mem_load(m, buf, len, b, &diag) != 0)
            fail_msg("load: %s", diag.msg);
        mem_equal(m, a, b, dts[k]);
        /* continuing from the loaded memory: identical for f32, close for 16-bit payloads */
        assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a2), 0);
        assert_int_equal(xf_txl_mem_load(m, buf, len, a2, NULL), 0);
        assert_int_equal(xf_txl_run(m, b, SEG_C, 5, 0, &r1, NULL), 0);
        {
            /* the original memory, copied through an f32 blob */
            size_t l32 = xf_txl_mem_blob_size(m, a, XF_TXL_F32);
            uint8_t *b32 = malloc(l32);
            xf_txl_mem_t *c;
            assert_int_equal(xf_txl_mem_save(m, a, XF_TXL_F32, b32, l32), 0);
            assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &c), 0);
            assert_int_equal(xf_txl_mem_load(m, b32, l32, c, NULL), 0);
            assert_int_equal(xf_txl_run(m, c, SEG_C, 5, 0, &r2, NULL), 0);
            for (int t = 0; t < 5; t++) {
                if (dts[k] == XF_TXL_F32)
                    assert_true(r1.logprobs[t] == r2.logprobs[t]);
                else   /* 16-bit memory rows: log-probs move by ~1e-2 at most on this model */
                    assert_true(fabs(r1.logprobs[t] - r2.logprobs[t]) < 0.05);
            }
            xf_txl_mem_free(c);
            free(b32);
        }
        xf_txl_result_deinit(&r1);
        xf_txl_result_deinit(&r2);
        xf_txl_mem_free(a2);
        xf_txl_mem_free(b);
        free(buf);
    }
    /* a smaller configured mem_len keeps the newest rows */
    {
        xf_txl_t *m4 = load(0, 4);
        size_t len = xf_txl_mem_blob_size(m, a, XF_TXL_F32);
        uint8_t *buf = malloc(len);
        xf_txl_mem_stats_t st;
        assert_int_equal(xf_txl_mem_save(m, a, XF_TXL_F32, buf, len), 0);
        assert_int_equal(xf_txl_mem_create(m4, XF_TXL_INIT_EMPTY, &b), 0);
        /* same weights, same config bytes: the hash matches (mem_len is a load option) */
        assert_int_equal(xf_txl_mem_load(m4, buf, len, b, NULL), 0);
        xf_txl_mem_stats(b, &st);
        assert_int_equal(st.rows, 4);
        {
            /* last row of layer 0: blob row 15 of a == row 3 of b */
            size_t lb = xf_txl_mem_blob_size(m4, b, XF_TXL_F32);
            uint8_t *bb = malloc(lb);
            assert_int_equal(lb, 128 + (2 * 4 + 1) * 32 * 4);
            assert_int_equal(xf_txl_mem_save(m4, b, XF_TXL_F32, bb, lb), 0);
            assert_memory_equal(buf + 128 + 12 * 32 * 4, bb + 128, 4 * 32 * 4);
            free(bb);
        }
        xf_txl_mem_free(b);
        xf_txl_free(m4);
        free(buf);
    }
    xf_txl_mem_free(a);
    xf_txl_free(m);
}

/* Each header field and the payload corrupted → rejected, the memory untouched. */
static void test_blob_corrupt(void **state)
{
    static const struct { int off; const char *field; } F[] = {
        { 0, "magic" }, { 4, "version" }, { 5, "version (newer)" }, { 6, "dtype" },
        { 8, "header_size" }, { 9, "header_size" }, { 12, "flags" }, { 16, "model hash" },
        { 47, "model hash" }, { 48, "n_layers" }, { 52, "d_model" }, { 56, "mem_cap" },
        { 60, "mem_rows" }, { 64, "cmem_cap" }, { 68, "cmem_rows" }, { 72, "pend_rows" },
        { 76, "comp_rate" }, { 80, "segments" }, { 88, "tokens" }, { 96, "payload_bytes" },
        { 104, "crc" }, { 108, "reserved" }, { 127, "reserved" }, { 128, "payload" },
        { -1, "last payload byte" },
    };
    xf_txl_t *m = load(0, -1), *other;
    xf_txl_mem_t *a, *b;
    xf_txl_result_t r = { 0 };
    size_t len;
    uint8_t *buf, *bad;
    xf_txl_mem_stats_t st;

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    assert_int_equal(xf_txl_run(m, a, SEG_A, 7, 0, &r, NULL), 0);
    xf_txl_result_deinit(&r);
    len = xf_txl_mem_blob_size(m, a, XF_TXL_F16);
    buf = malloc(len);
    bad = malloc(len);
    assert_int_equal(xf_txl_mem_save(m, a, XF_TXL_F16, buf, len), 0);
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &b), 0);
    for (size_t k = 0; k < sizeof F / sizeof F[0]; k++) {
        size_t off = F[k].off < 0 ? len - 1 : (size_t)F[k].off;
        xf_diag_t diag = { 0 };
        for (int bit = 0; bit < 8; bit += 7) {
            memcpy(bad, buf, len);
            bad[off] ^= (uint8_t)(1u << bit);
            assert_int_equal(xf_txl_mem_load(m, bad, len, b, &diag), XF_EFORMAT);
            print_message("# %s bit %d: %s\n", F[k].field, bit, diag.msg);
            xf_txl_mem_stats(b, &st);
            assert_int_equal(st.rows, 0);
            assert_int_equal(st.segments, 0);
        }
    }
    /* truncated / extended */
    for (size_t cut = 0; cut < len; cut += 37)
        assert_int_equal(xf_txl_mem_load(m, buf, cut, b, NULL), XF_EFORMAT);
    memcpy(bad, buf, len);
    assert_int_equal(xf_txl_mem_load(m, buf, len, b, NULL), 0);
    /* another model (other weights): hash mismatch */
    other = load(1, 16);
    {
        xf_txl_mem_t *c;
        xf_diag_t diag = { 0 };
        assert_int_equal(xf_txl_mem_create(other, XF_TXL_INIT_EMPTY, &c), 0);
        assert_int_equal(xf_txl_mem_load(other, buf, len, c, &diag), XF_EFORMAT);
        assert_non_null(strstr(diag.msg, "hash"));
        xf_txl_mem_free(c);
    }
    xf_txl_free(other);
    xf_txl_mem_free(a);
    xf_txl_mem_free(b);
    free(buf);
    free(bad);
    xf_txl_free(m);
}

/* CRC-32C (Castagnoli, reflected 0x82F63B78), bit by bit: the test's own, for patched blobs. */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* Found by fuzz_session: a valid blob (right hash and CRC) whose segment and token counts are
 * INT64_MAX loaded, and the next segment overflowed them (signed overflow, UBSan). They
 * saturate now. */
static void test_blob_counts_saturate(void **state)
{
    xf_txl_t *m = load(0, -1);
    xf_txl_mem_t *a, *b;
    xf_txl_result_t r = { 0 };
    xf_txl_mem_stats_t st;
    xf_diag_t diag = { 0 };
    size_t len;
    uint8_t *buf;
    uint32_t crc;

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    assert_int_equal(xf_txl_run(m, a, SEG_A, 7, 0, &r, NULL), 0);
    xf_txl_result_deinit(&r);
    len = xf_txl_mem_blob_size(m, a, XF_TXL_F32);
    buf = malloc(len);
    assert_int_equal(xf_txl_mem_save(m, a, XF_TXL_F32, buf, len), 0);
    /* the CRC as the writer computed it: header bytes 0..103, then the payload */
    crc = crc32c(crc32c(0, buf, 104), buf + 128, len - 128);
    assert_int_equal(crc, (uint32_t)buf[104] | (uint32_t)buf[105] << 8 |
                              (uint32_t)buf[106] << 16 | (uint32_t)buf[107] << 24);
    for (int i = 0; i < 8; i++) {
        buf[80 + i] = i == 7 ? 0x7f : 0xff;     /* segments = INT64_MAX */
        buf[88 + i] = i == 7 ? 0x7f : 0xff;     /* tokens = INT64_MAX */
    }
    crc = crc32c(crc32c(0, buf, 104), buf + 128, len - 128);
    for (int i = 0; i < 4; i++)
        buf[104 + i] = (uint8_t)(crc >> (8 * i));
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &b), 0);
    if (xf_txl_mem_load(m, buf, len, b, &diag) != 0)
        fail_msg("load: %s", diag.msg);
    assert_int_equal(xf_txl_run(m, b, SEG_B, 9, 0, &r, NULL), 0);
    xf_txl_result_deinit(&r);
    xf_txl_mem_stats(b, &st);
    assert_true(st.segments == INT64_MAX);
    assert_true(st.tokens == INT64_MAX);
    xf_txl_mem_free(a);
    xf_txl_mem_free(b);
    free(buf);
    xf_txl_free(m);
}

static void test_bad_input(void **state)
{
    xf_txl_t *m = load(0, -1);
    xf_txl_mem_t *a;
    xf_txl_result_t r = { 0 };
    int32_t ids[2] = { 1, 300 };
    xf_diag_t diag = { 0 };
    xf_txl_mem_stats_t st;
    char bad[4096];

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    assert_int_equal(xf_txl_run(m, a, ids, 2, 0, &r, &diag), -EINVAL);
    assert_int_equal(xf_txl_run(m, a, ids, 0, 0, &r, &diag), -EINVAL);
    xf_txl_mem_stats(a, &st);
    assert_int_equal(st.segments, 0);
    xf_txl_mem_free(a);
    xf_txl_free(m);
    /* a directory without config.json, and a BERT-style config */
    assert_int_equal(xf_txl_load("/nonexistent-xformd", NULL, &m, &diag), -ENOENT);
    xf_test_tmpdir(bad, sizeof bad, "txlbad");
    {
        char p[4200];
        const char *cfg = "{\"model_type\":\"bert\"}";
        snprintf(p, sizeof p, "%s/config.json", bad);
        assert_int_equal(xf_test_write_file(p, cfg, strlen(cfg)), 0);
        assert_int_equal(xf_txl_probe(bad), 0);
        assert_int_equal(xf_txl_load(bad, NULL, &m, &diag), XF_EFORMAT);
    }
    assert_int_equal(xf_txl_probe(g_dir[0]), 1);
    xf_test_rmtree(bad);
}

/* The progress hook: asked before every layer (0..L-1); a stop returns XF_EDEADLINE and
 * leaves the memory as it was, so the next segment equals a run where the stopped one never
 * happened. */
typedef struct stopper {
    int calls, stop_at;
} stopper_t;

static int stop_cb(void *user, int32_t done, int32_t n_layer)
{
    stopper_t *st = user;
    assert_true(done >= 0 && done < n_layer);
    assert_int_equal(done, st->calls);
    st->calls++;
    return done == st->stop_at;
}

static void test_progress_stop(void **state)
{
    xf_txl_t *m = load(0, -1);
    xf_txl_mem_t *a, *b;
    xf_txl_result_t ra = { 0 }, rb = { 0 };
    xf_diag_t diag = { 0 };
    stopper_t st = { 0, -1 };
    xf_txl_mem_stats_t sa, sb;

    (void)state;
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &a), 0);
    assert_int_equal(xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &b), 0);
    /* a hook that never stops is asked once per layer and changes nothing */
    assert_int_equal(xf_txl_run_progress(m, a, SEG_A, 7, 0, stop_cb, &st, &ra, &diag), 0);
    assert_int_equal(st.calls, xf_txl_info(m)->n_layer);
    assert_int_equal(xf_txl_run(m, b, SEG_A, 7, 0, &rb, &diag), 0);
    assert_memory_equal(ra.logprobs + 1, rb.logprobs + 1, sizeof(float) * 6);
    xf_txl_result_deinit(&ra);
    xf_txl_result_deinit(&rb);
    /* stopped before layer 1, then before layer 0: memory untouched each time */
    for (int at = 1; at >= 0; at--) {
        st.calls = 0;
        st.stop_at = at;
        assert_int_equal(xf_txl_run_progress(m, a, SEG_B, 9, XF_TXL_OUT_POOLED, stop_cb, &st,
                                             &ra, &diag), XF_EDEADLINE);
        assert_int_equal(st.calls, at + 1);
        assert_null(ra.logprobs);
        assert_null(ra.pooled);
        assert_non_null(strstr(diag.msg, "stopped before layer"));
        xf_txl_mem_stats(a, &sa);
        assert_int_equal(sa.segments, 1);
        assert_int_equal(sa.tokens, 7);
        assert_int_equal(sa.rows, 7);
    }
    assert_int_equal(xf_txl_run(m, a, SEG_B, 9, 0, &ra, &diag), 0);
    assert_int_equal(xf_txl_run(m, b, SEG_B, 9, 0, &rb, &diag), 0);
    assert_memory_equal(ra.logprobs, rb.logprobs, sizeof(float) * 9);
    xf_txl_mem_stats(a, &sa);
    xf_txl_mem_stats(b, &sb);
    assert_int_equal(sa.segments, sb.segments);
    assert_int_equal(sa.rows, sb.rows);
    xf_txl_result_deinit(&ra);
    xf_txl_result_deinit(&rb);
    xf_txl_mem_free(a);
    xf_txl_mem_free(b);
    xf_txl_free(m);
}

static int teardown(void **state)
{
    (void)state;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_reference),  cmocka_unit_test(test_init_zeros),
        cmocka_unit_test(test_init_differs),  cmocka_unit_test(test_mem_len_zero),
        cmocka_unit_test(test_tokenizer),     cmocka_unit_test(test_blob_round_trip),
        cmocka_unit_test(test_blob_corrupt),  cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_tokenizer_json), cmocka_unit_test(test_progress_stop),
        cmocka_unit_test(test_blob_counts_saturate),
    };
    int rc;

    cmocka_set_message_output(CM_OUTPUT_TAP);
    rc = cmocka_run_group_tests(tests, NULL, teardown);
    for (int i = 0; i < 3; i++)
        if (g_dir[i][0])
            xf_test_rmtree(g_dir[i]);
    return rc;
}
