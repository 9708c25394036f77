/* The public attention-state API of stateful encoders (<xformd/state.h>): a demo BERT model
 * loaded with model attention txl or compressive, segments A B C run with one state kept in
 * process versus the same segments with the state saved to a §22.1 blob and loaded into a new
 * state between segments (the session path): bitwise in f32, within the dtype's rounding in
 * f16/bf16; two sequences with their own states in one batch equal each alone; memory changes
 * the result (the test can fail); corrupted, truncated and foreign blobs are rejected with the
 * state untouched; a stateless model is refused. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/xformd.h>

#include "../helpers/xf_test.h"

static char g_dir[4096];

static const int32_t SEG[3][9] = { { 2, 150, 7, 250, 40, 12, 3 },
                                   { 2, 201, 99, 100, 45, 299, 60, 1, 3 },
                                   { 2, 17, 230, 120, 3 } };
static const int32_t SEGN[3] = { 7, 9, 5 };

static int setup(void **state)
{
    xf_demo_opts_t o;
    xf_diag_t diag = { 0 };
    (void)state;
    if (!xf_test_tmpdir(g_dir, sizeof g_dir, "state-bert"))
        return -1;
    xf_demo_opts_init_tiny(&o);
    return xf_demo_write(g_dir, &o, &diag);
}

static int teardown(void **state)
{
    (void)state;
    xf_test_rmtree(g_dir);
    return 0;
}

static xf_model_t *load(const char *attn)
{
    xf_load_opts_t lo = { .attention = attn };
    xf_model_t *m = NULL;
    xf_diag_t diag = { 0 };
    if (xf_model_load(g_dir, &lo, &m, &diag) != 0)
        fail_msg("load: %s", diag.msg);
    return m;
}

/* One segment k of one sequence with state st (NULL: none); pooled (mean) and hidden out. */
static void run_seg(xf_ctx_t *c, const xf_model_t *m, xf_state_t *st, int k, float *pooled,
                    float *hidden)
{
    int32_t cu[2] = { 0, SEGN[k] };
    void *states[1] = { st ? (void *)xf_state_layers(st) : NULL };
    xf_batch_t b = { .n_seq = 1, .cu_len = cu, .ids = SEG[k], .attn_state = states };
    xf_output_t out = { .pooling = XF_POOL_MEAN, .pooled = pooled, .hidden = hidden };
    xf_diag_t diag = { 0 };
    if (xf_run(c, m, &b, &out, &diag) != 0)
        fail_msg("run: %s", diag.msg);
}

static double maxdiff(const float *a, const float *b, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

/* A B C in process versus through a blob of dtype between segments. */
static void stream_vs_blob(const char *attn, enum xf_state_dtype dt, double tol)
{
    xf_model_t *m = load(attn);
    int32_t d = xf_model_info(m)->d_model;
    xf_state_def_t *def = NULL;
    xf_state_t *keep = NULL, *via = NULL;
    xf_ctx_opts_t co = { .n_threads = 2 };
    xf_ctx_t *c = NULL;
    xf_diag_t diag = { 0 };
    float pa[64], pb[64], ha[9 * 64], hb[9 * 64], alone[64];
    double err = 0, err_mem = 0;

    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_state_def_create(m, NULL, &def, &diag), 0);
    assert_int_equal(xf_state_create(def, &keep), 0);
    for (int k = 0; k < 3; k++) {
        uint8_t *blob = NULL;
        size_t len = 0;
        assert_int_equal(xf_state_create(def, &via), 0);
        if (k > 0) {
            /* the previous segment's state travelled as a blob */
            len = xf_state_blob_size(keep, dt);
            blob = malloc(len);
            assert_non_null(blob);
            assert_int_equal(xf_state_save(keep, dt, blob, len), 0);
            assert_int_equal(xf_state_load(via, blob, len, &diag), 0);
            {   /* round trip: the loaded state writes the same blob (f16/bf16: values are
                   already representable) */
                uint8_t *again = malloc(len);
                assert_int_equal(xf_state_blob_size(via, dt), len);
                assert_int_equal(xf_state_save(via, dt, again, len), 0);
                assert_memory_equal(blob, again, len);
                free(again);
            }
        }
        run_seg(c, m, keep, k, pa, ha);
        run_seg(c, m, via, k, pb, hb);
        err = fmax(err, maxdiff(pa, pb, (size_t)d));
        err = fmax(err, maxdiff(ha, hb, (size_t)SEGN[k] * (size_t)d));
        run_seg(c, m, NULL, k, alone, NULL);
        if (k > 0)
            err_mem = fmax(err_mem, maxdiff(pa, alone, (size_t)d));
        else   /* a fresh state is the stateless run */
            assert_true(maxdiff(pa, alone, (size_t)d) == 0);
        {
            xf_state_stats_t s1, s2;
            xf_state_stats(keep, &s1);
            xf_state_stats(via, &s2);
            assert_int_equal(s1.mem_rows, s2.mem_rows);
            assert_int_equal(s1.cmem_rows, s2.cmem_rows);
            assert_int_equal(s1.pend_rows, s2.pend_rows);
            assert_int_equal(s1.segments, k + 1);
            assert_int_equal(s2.segments, k + 1);
            assert_int_equal(s1.tokens, s2.tokens);
        }
        free(blob);
        xf_state_free(via);
    }
    print_message("# %s dtype %d: max |session - in process| %.3g, memory effect %.3g\n", attn,
                  (int)dt, err, err_mem);
    if (tol == 0)
        assert_true(err == 0);
    else
        assert_true(err <= tol);
    assert_true(err_mem > 1e-4);   /* the memory matters: this comparison can fail */
    xf_state_free(keep);
    xf_state_def_free(def);
    xf_ctx_free(c);
    xf_model_free(m);
}

#define TXL "{\"variant\":\"txl\",\"mem_len\":8}"
#define CMP "{\"variant\":\"compressive\",\"mem_len\":4,\"cmem_len\":4,\"rate\":3}"

static void test_txl_blob_f32(void **state)
{
    (void)state;
    stream_vs_blob(TXL, XF_STATE_F32, 0);
}

static void test_txl_blob_f16_bf16(void **state)
{
    (void)state;
    stream_vs_blob(TXL, XF_STATE_F16, 1e-4);
    stream_vs_blob(TXL, XF_STATE_BF16, 1e-3);
}

static void test_compressive_blob(void **state)
{
    (void)state;
    stream_vs_blob(CMP, XF_STATE_F32, 0);
    stream_vs_blob(CMP, XF_STATE_F16, 1e-4);
    stream_vs_blob(CMP, XF_STATE_BF16, 1e-3);
}

/* Two sequences, each with its own state, in one batch: each equals its run alone. */
static void test_batch_of_states(void **state)
{
    xf_model_t *m = load(TXL);
    int32_t d = xf_model_info(m)->d_model;
    xf_state_def_t *def = NULL;
    xf_state_t *s[4] = { NULL };
    xf_ctx_opts_t co = { .n_threads = 2 };
    xf_ctx_t *c = NULL;
    float pooled[2 * 64], one[64];
    int32_t ids[18], cu[3];
    (void)state;

    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_state_def_create(m, NULL, &def, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(xf_state_create(def, &s[i]), 0);
    /* s0, s2 see A then B; s1, s3 see C then A */
    run_seg(c, m, s[0], 0, one, NULL);
    run_seg(c, m, s[1], 2, one, NULL);
    {
        void *st[2] = { (void *)xf_state_layers(s[2]), (void *)xf_state_layers(s[3]) };
        xf_output_t out = { .pooling = XF_POOL_MEAN, .pooled = pooled };
        for (int step = 0; step < 2; step++) {
            int ka = step == 0 ? 0 : 1, kb = step == 0 ? 2 : 0;
            memcpy(ids, SEG[ka], sizeof(int32_t) * (size_t)SEGN[ka]);
            memcpy(ids + SEGN[ka], SEG[kb], sizeof(int32_t) * (size_t)SEGN[kb]);
            cu[0] = 0;
            cu[1] = SEGN[ka];
            cu[2] = SEGN[ka] + SEGN[kb];
            xf_batch_t b = { .n_seq = 2, .cu_len = cu, .ids = ids, .attn_state = st };
            assert_int_equal(xf_run(c, m, &b, &out, NULL), 0);
        }
    }
    run_seg(c, m, s[0], 1, one, NULL);
    assert_true(maxdiff(one, pooled, (size_t)d) <= 1e-5);
    run_seg(c, m, s[1], 0, one, NULL);
    assert_true(maxdiff(one, pooled + d, (size_t)d) <= 1e-5);
    for (int i = 0; i < 4; i++)
        xf_state_free(s[i]);
    xf_state_def_free(def);
    xf_ctx_free(c);
    xf_model_free(m);
}

/* Every corrupted byte of the header's checked fields and of the payload, truncation and a
 * foreign model's blob are rejected; the state keeps what it had. */
static void test_corrupt(void **state)
{
    xf_model_t *m = load(TXL), *m2 = load(CMP);
    xf_state_def_t *def = NULL, *def2 = NULL;
    xf_state_t *st = NULL, *into = NULL, *other = NULL;
    xf_ctx_opts_t co = { .n_threads = 1 };
    xf_ctx_t *c = NULL;
    xf_diag_t diag = { 0 };
    xf_state_stats_t before, after;
    float p[64];
    uint8_t *blob;
    size_t len;
    (void)state;

    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_state_def_create(m, NULL, &def, NULL), 0);
    assert_int_equal(xf_state_def_create(m2, NULL, &def2, NULL), 0);
    /* same files: same hash; a different selection is told apart by its caps and flags */
    assert_memory_equal(xf_state_def_hash(def), xf_state_def_hash(def2), 32);
    assert_int_equal(xf_state_create(def, &st), 0);
    assert_int_equal(xf_state_create(def, &into), 0);
    assert_int_equal(xf_state_create(def2, &other), 0);
    run_seg(c, m, st, 0, p, NULL);
    run_seg(c, m, into, 2, p, NULL);
    len = xf_state_blob_size(st, XF_STATE_F32);
    blob = malloc(len);
    assert_int_equal(xf_state_save(st, XF_STATE_F32, blob, len), 0);
    assert_int_equal(xf_state_save(st, XF_STATE_F32, blob, len - 1), -EINVAL);
    assert_int_equal(xf_state_blob_size(st, (enum xf_state_dtype)9), 0);
    xf_state_stats(into, &before);
    for (size_t i = 0; i < len; i += (i < 128 ? 1 : 97)) {
        if (i >= 104 && i < 108)
            continue;   /* the CRC field itself: covered by the other bytes' checks */
        blob[i] ^= 0x5a;
        assert_int_equal(xf_state_load(into, blob, len, &diag), XF_EFORMAT);
        blob[i] ^= 0x5a;
    }
    assert_int_equal(xf_state_load(into, blob, len - 1, &diag), XF_EFORMAT);
    assert_int_equal(xf_state_load(into, blob, 50, &diag), XF_EFORMAT);
    assert_int_equal(xf_state_load(into, NULL, 0, &diag), XF_EFORMAT);
    xf_state_stats(into, &after);
    assert_memory_equal(&before, &after, sizeof before);
    blob[104] ^= 1;
    assert_int_equal(xf_state_load(into, blob, len, &diag), XF_EFORMAT);
    assert_non_null(strstr(diag.msg, "CRC"));
    blob[104] ^= 1;
    /* a txl blob into a compressive state of the same model: its memory rows load (the
       newest min(rows, mem_len)), nothing compressed */
    assert_int_equal(xf_state_load(other, blob, len, &diag), 0);
    xf_state_stats(other, &after);
    assert_int_equal(after.mem_rows, 4);
    assert_int_equal(after.cmem_rows, 0);
    assert_int_equal(xf_state_load(into, blob, len, &diag), 0);
    xf_state_stats(into, &after);
    assert_int_equal(after.segments, 1);
    assert_int_equal(after.mem_rows, SEGN[0]);
    xf_state_reset(into);
    xf_state_stats(into, &after);
    assert_int_equal(after.mem_rows, 0);
    assert_int_equal(after.segments, 0);
    assert_true(xf_state_def_bytes(def) >= 2 * 8 * 64 * sizeof(float));
    free(blob);
    xf_state_free(st);
    xf_state_free(into);
    xf_state_free(other);
    xf_state_def_free(def);
    xf_state_def_free(def2);
    xf_ctx_free(c);
    xf_model_free(m);
    xf_model_free(m2);
}

static void test_stateless_refused(void **state)
{
    xf_model_t *m = load(NULL);
    xf_state_def_t *def = NULL;
    xf_diag_t diag = { 0 };
    xf_attn_t *txl = NULL;
    char err[128];
    (void)state;

    assert_int_equal(xf_state_supported(m, NULL), 0);
    assert_int_equal(xf_state_def_create(m, NULL, &def, &diag), XF_EUNSUPPORTED);
    assert_null(def);
    assert_non_null(strstr(diag.msg, "keeps no state"));
    assert_int_equal(xf_attn_parse(TXL, strlen(TXL), &txl, err, sizeof err), 0);
    assert_int_equal(xf_state_supported(m, txl), 1);
    assert_int_equal(xf_state_def_create(m, txl, &def, &diag), 0);
    assert_string_equal(xf_attn_name(xf_state_def_attn(def)), "txl");
    xf_state_def_free(def);
    xf_attn_free(txl);
    xf_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txl_blob_f32), cmocka_unit_test(test_txl_blob_f16_bf16),
        cmocka_unit_test(test_compressive_blob), cmocka_unit_test(test_batch_of_states),
        cmocka_unit_test(test_corrupt), cmocka_unit_test(test_stateless_refused),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, setup, teardown);
}
