/* Family P (Reformer, Routing / clustered, Sinkhorn; ATTENTION.md §10–§12, §27): fast kernels
 * vs double references with explicit key sets on odd shapes, limit tests (equal dense to 1e-5),
 * union semantics through the references' sets, thread and packing independence (bitwise),
 * seeds, n = 1, huge logits, parse errors. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/helpers/xf_test.h"
#include "tests/ref/attn_ref_sfpm.h"

static const int32_t odd_lens[] = { 1, 2, 3, 7, 63, 64, 65, 257, 1000 };

/* dense with the diagonal excluded (paper-mode limit), logits x_i·x̂_j */
static void ref_dense_noself(XF_REF_FN_ARGS)
{
    uint8_t *mask = malloc((size_t)n * (size_t)n + 1);
    double *xd = malloc(sizeof(double) * ((size_t)n * (size_t)d + 1));
    double *kh = malloc(sizeof(double) * ((size_t)n * (size_t)d + 1));
    double *vd = malloc(sizeof(double) * ((size_t)n * (size_t)d + 1));

    (void)p;
    (void)w;
    (void)k;
    (void)s;
    (void)layer;
    (void)head;
    for (int32_t i = 0; i < n; i++) {
        double nn = 0;
        for (int32_t c = 0; c < d; c++)
            nn +=
                (double)q[(size_t)i * (size_t)d + (size_t)c] * q[(size_t)i * (size_t)d + (size_t)c];
        for (int32_t c = 0; c < d; c++) {
            xd[(size_t)i * (size_t)d + (size_t)c] = q[(size_t)i * (size_t)d + (size_t)c];
            kh[(size_t)i * (size_t)d + (size_t)c] = q[(size_t)i * (size_t)d + (size_t)c] / sqrt(nn);
            vd[(size_t)i * (size_t)d + (size_t)c] = v[(size_t)i * (size_t)d + (size_t)c];
        }
        for (int32_t j = 0; j < n; j++)
            mask[(size_t)i * (size_t)n + (size_t)j] = (uint8_t)(i != j || n == 1);
    }
    xf_ref_attend_d(n, n, d, xd, kh, vd, 1.0, mask, NULL, out);
    free(mask);
    free(xd);
    free(kh);
    free(vd);
}

static void ref_reformer(XF_REF_FN_ARGS)
{
    (void)w;
    xf_ref_reformer(n, d, q, k, v, s, p, layer, head, out);
}

static void ref_routing(XF_REF_FN_ARGS)
{
    (void)w;
    xf_ref_routing(n, d, q, k, v, s, p, layer, head, out);
}

static void ref_sinkhorn(XF_REF_FN_ARGS)
{
    (void)w;
    (void)layer;
    (void)head;
    xf_ref_sinkhorn(n, d, q, k, v, s, p, out);
}

/* Tolerance 1e-5 (§0): hashing is done in double in both with the same summation order, so the
 * key sets agree exactly; only fp32 logits (dot over d) and double sums differ. */
static void test_reformer(void **state)
{
    (void)state;
    xf_ref_odd_shapes(&xf_attn_vt_reformer, "{\"seed\":3}", ref_reformer, NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_reformer,
                      "{\"seed\":4,\"n_hashes\":3,\"n_buckets\":8,\"max_bucket\":5}",
               ref_reformer, NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_reformer, "{\"seed\":5,\"mode\":\"shared\",\"chunk\":16,"
               "\"chunks_after\":1}", ref_reformer, NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_reformer, "{\"seed\":6,\"mode\":\"shared\",\"n_hashes\":2}",
               ref_reformer, NULL, 1e-5);
}

/* §10 limit: n_buckets = 1 (any n_hashes) is dense; paper mode with one chunk is dense without
 * the diagonal. Also: with buckets the result is not dense (the check can fail). */
static void test_reformer_limit(void **state)
{
    (void)state;
    assert_true(xf_ref_check(&xf_attn_vt_reformer, "{\"n_buckets\":1,\"n_hashes\":1}", xf_ref_dense,
                             NULL, 9, odd_lens, 3, 64, 2.0f, 0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_reformer, "{\"n_buckets\":1,\"n_hashes\":7}", xf_ref_dense,
                             NULL, 9, odd_lens, 3, 32, 2.0f, 0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_reformer, "{\"n_buckets\":1,\"mode\":\"shared\","
                             "\"chunk\":1000}", ref_dense_noself, NULL, 9, odd_lens, 3, 64,
                             1.0f, 0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_reformer, "{\"n_buckets\":8}", xf_ref_dense, NULL, 9,
                             odd_lens, 3, 64, 2.0f, 0) > 1e-3);
}

/* Routing: k-means in double with the same summation order as the reference (identical
 * clusters), then fp32 logits: 1e-5 (§0). Limits: routed clusters = 1 and clustered C = n are
 * dense. */
static void test_routing(void **state)
{
    (void)state;
    xf_ref_odd_shapes(&xf_attn_vt_routing, "{\"seed\":3}", ref_routing, NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_routing, "{\"seed\":4,\"clusters\":5,\"iters\":3}", ref_routing,
               NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_routing, "{\"seed\":5,\"mode\":\"clustered\"}", ref_routing, NULL,
               1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_routing, "{\"clusters\":1}", xf_ref_dense, NULL, 9,
                             odd_lens, 3, 64, 2.0f, 0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_routing, "{\"mode\":\"clustered\",\"clusters\":1000,"
                             "\"iters\":2}", xf_ref_dense, NULL, 8, odd_lens, 3, 32, 2.0f,
                             0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_routing, "{\"clusters\":4}", xf_ref_dense, NULL, 9,
                             odd_lens, 3, 64, 2.0f, 0) > 1e-3);
}

/* Sinkhorn: block similarities in double in both (identical block choices); 1e-5. Limits:
 * block >= n, and hard with k_s >= n_b − 1, are dense. */
static void test_sinkhorn(void **state)
{
    (void)state;
    xf_ref_odd_shapes(&xf_attn_vt_sinkhorn, "{\"block\":16}", ref_sinkhorn, NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_sinkhorn, "{\"block\":7,\"k_s\":2,\"sim\":\"kk\"}", ref_sinkhorn,
               NULL, 1e-5);
    xf_ref_odd_shapes(&xf_attn_vt_sinkhorn, "{\"block\":16,\"mode\":\"soft\"}", ref_sinkhorn, NULL,
               1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_sinkhorn, "{\"block\":1000}", xf_ref_dense, NULL, 9,
                             odd_lens, 3, 64, 2.0f, 0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_sinkhorn, "{\"block\":64,\"k_s\":15}", xf_ref_dense, NULL,
                             9, odd_lens, 3, 40, 2.0f, 0) <= 1e-5);
}

static void run_once(const xf_attn_vtbl *vt, const char *json, xf_rbatch_t *b)
{
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[128];
    assert_int_equal(xf_ref_parse(vt, json, params, err, sizeof(err)), 0);
    assert_int_equal(xf_ref_run(vt, params, b, 2, NULL, NULL, NULL, NULL), 0);
}

static void seeds(const xf_attn_vtbl *vt, const char *j1, const char *j2)
{
    static const int32_t lens[] = { 150, 17 };
    xf_rbatch_t *b = xf_rbatch_new(2, lens, 2, 32, 1.0f, 5);
    size_t cnt = (size_t)b->n_tok * 2 * 32;
    float *o1 = malloc(cnt * sizeof(float));

    run_once(vt, j1, b);
    memcpy(o1, b->out, cnt * sizeof(float));
    run_once(vt, j2, b);
    assert_memory_not_equal(o1, b->out, cnt * sizeof(float));
    run_once(vt, j1, b);
    assert_memory_equal(o1, b->out, cnt * sizeof(float));
    free(o1);
    xf_rbatch_free(b);
}

static void test_reformer_props(void **state)
{
    (void)state;
    xf_ref_independence(NULL, &xf_attn_vt_reformer, "{\"seed\":2,\"chunk\":8}");
    xf_ref_independence(NULL, &xf_attn_vt_reformer, "{\"seed\":2,\"mode\":\"shared\",\"chunk\":8}");
    seeds(&xf_attn_vt_reformer, "{\"seed\":1,\"chunk\":16}", "{\"seed\":2,\"chunk\":16}");
    xf_ref_edges(&xf_attn_vt_reformer, "{}", NULL);
    xf_ref_edges(&xf_attn_vt_reformer, "{\"mode\":\"shared\"}", NULL);
}

static void test_props(void **state)
{
    (void)state;
    xf_ref_independence(NULL, &xf_attn_vt_routing, "{\"seed\":2}");
    xf_ref_independence(NULL, &xf_attn_vt_routing, "{\"seed\":2,\"mode\":\"clustered\"}");
    xf_ref_independence(NULL, &xf_attn_vt_sinkhorn, "{\"block\":8}");
    xf_ref_independence(NULL, &xf_attn_vt_sinkhorn, "{\"block\":8,\"mode\":\"soft\"}");
    seeds(&xf_attn_vt_routing, "{\"seed\":1}", "{\"seed\":2}");
    seeds(&xf_attn_vt_routing, "{\"seed\":1,\"mode\":\"clustered\",\"clusters\":9}",
          "{\"seed\":2,\"mode\":\"clustered\",\"clusters\":9}");
    xf_ref_edges(&xf_attn_vt_routing, "{}", NULL);
    xf_ref_edges(&xf_attn_vt_routing, "{\"mode\":\"clustered\"}", NULL);
    xf_ref_edges(&xf_attn_vt_sinkhorn, "{\"block\":4}", NULL);
    xf_ref_edges(&xf_attn_vt_sinkhorn, "{\"block\":4,\"mode\":\"soft\"}", NULL);
}

static void test_parse(void **state)
{
    (void)state;
    xf_ref_expect_parse_err(&xf_attn_vt_reformer, "{\"n_buckets\":3}", "n_buckets");
    xf_ref_expect_parse_err(&xf_attn_vt_reformer, "{\"n_hashes\":0}", "n_hashes");
    xf_ref_expect_parse_err(&xf_attn_vt_reformer, "{\"chunk\":0}", "chunk");
    xf_ref_expect_parse_err(&xf_attn_vt_reformer, "{\"mode\":\"lsh\"}", "mode");
    xf_ref_expect_parse_err(&xf_attn_vt_reformer, "{\"chunks_before\":-1}", "chunks_before");
    xf_ref_expect_parse_err(&xf_attn_vt_routing, "{\"mode\":\"balanced\"}", "mode");
    xf_ref_expect_parse_err(&xf_attn_vt_routing, "{\"clusters\":0}", "clusters");
    xf_ref_expect_parse_err(&xf_attn_vt_sinkhorn, "{\"tau\":0}", "tau");
    xf_ref_expect_parse_err(&xf_attn_vt_sinkhorn, "{\"sim\":\"qq\"}", "sim");
}

XF_TEST_MAIN(cmocka_unit_test(test_parse), cmocka_unit_test(test_reformer),
             cmocka_unit_test(test_reformer_limit), cmocka_unit_test(test_reformer_props),
             cmocka_unit_test(test_routing), cmocka_unit_test(test_sinkhorn),
             cmocka_unit_test(test_props))
