/* Property tests for every family-T variant (ATTENTION.md §27): fast kernel vs the double
 * reference on odd shapes and mixed batches, limit = dense, packing and thread independence
 * (bitwise), BigBird determinism and seed sensitivity, n = 1, huge logits, union semantics,
 * exact exclusion, Longformer global projections, Synthesizer logits. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_t.h"
#include "attention/registry.h"
#include "engine/cpu.h"
#include "helpers/xf_test.h"
#include "ref/attn_ref_t.h"

enum { K_DENSE, K_BLOCK, K_WIN, K_STRIDED, K_FIXED, K_AXIAL, K_LF, K_ETC, K_BIGBIRD };

typedef struct tcase {
    const char *json;
    int kind;
    int32_t a, b, c, d, e;     /* pattern parameters (see build()) */
    int32_t dil[4], n_dil;     /* K_WIN / K_LF per-head dilation */
    int32_t gpos[4], n_gpos;   /* K_LF global positions */
    uint64_t seed;
    const int32_t *types;      /* K_ETC: token types of the batch */
    const int32_t *cu;         /* K_ETC: offsets of the batch */
    int32_t layer;
} tcase;

static int32_t isqrt_ceil(int32_t n)
{
    int32_t r = 0;
    while (r * r < n)
        r++;
    return r;
}

/* Membership matrices straight from the sections' formulas (attn_ref_t.c). */
static void build(void *ctx, int32_t s, int32_t n, int32_t head, uint8_t *A)
{
    const tcase *t = ctx;
    int part;
    switch (t->kind) {
    case K_DENSE:
        xf_ref_set_dense(n, A);
        break;
    case K_BLOCK:
        xf_ref_set_blockwise(n, t->a, t->b, A);
        break;
    case K_WIN:
        xf_ref_set_window(n, t->a, t->n_dil == 1 ? t->dil[0] : t->dil[head], A);
        break;
    case K_STRIDED:
        part = t->b == 0 ? 0 : (head % 2 == 0 ? 1 : 2);
        xf_ref_set_strided(n, t->a ? t->a : isqrt_ceil(n), part, A);
        break;
    case K_FIXED:
        part = t->c == 0 ? 0 : (head % 2 == 0 ? 1 : 2);
        xf_ref_set_fixed(n, t->a, t->b, head, t->d, part, A);
        break;
    case K_AXIAL:
        part = t->b == 0 ? 0 : (head % 2 == 0 ? 1 : 2);
        xf_ref_set_axial(n, t->a ? t->a : isqrt_ceil(n), part, A);
        break;
    case K_LF:
    case K_ETC: {
        uint8_t *g = calloc((size_t)n, 1);
        if (t->kind == K_LF) {
            for (int k = 0; k < t->n_gpos; k++)
                if (t->gpos[k] < n)
                    g[t->gpos[k]] = 1;
        } else {
            const int32_t *ty = t->types + t->cu[s];
            g[0] = g[n - 1] = 1;
            for (int32_t i = 0; i + 1 < n; i++)
                if (ty[i] != ty[i + 1])
                    g[i] = 1;
        }
        xf_ref_set_longformer(n, t->a, t->n_dil == 1 ? t->dil[0] : t->dil[head], g, A);
        free(g);
        break;
    }
    case K_BIGBIRD:
        xf_ref_set_bigbird(n, t->a, t->b, t->c, t->d, t->e, t->seed, t->layer, head, A);
        break;
    }
}

static xf_attn_t *parse_ok(const char *js)
{
    xf_attn_t *a = NULL;
    char err[200] = "";
    int rc = xf_attn_parse(js, strlen(js), &a, err, sizeof(err));
    if (rc)
        print_message("parse %s: %d %s\n", js, rc, err);
    assert_int_equal(rc, 0);
    return a;
}

static tcase cases[] = {
    { .json = "{\"variant\":\"blockwise\",\"block\":16}", .kind = K_BLOCK, .a = 16 },
    { .json = "{\"variant\":\"local1d\",\"block\":20,\"halo\":7}", .kind = K_BLOCK, .a = 20,
      .b = 7 },
    { .json = "{\"variant\":\"window\",\"window\":5}", .kind = K_WIN, .a = 5, .dil = { 1 },
      .n_dil = 1 },
    { .json = "{\"variant\":\"window\",\"window\":40}", .kind = K_WIN, .a = 40, .dil = { 1 },
      .n_dil = 1 },
    { .json = "{\"variant\":\"dilated\",\"window\":4,\"dilation\":3}", .kind = K_WIN, .a = 4,
      .dil = { 3 }, .n_dil = 1 },
    { .json = "{\"variant\":\"strided\",\"stride\":5}", .kind = K_STRIDED, .a = 5 },
    { .json = "{\"variant\":\"strided\"}", .kind = K_STRIDED, .a = 0 },
    { .json = "{\"variant\":\"strided\",\"stride\":6,\"combine\":\"heads\"}", .kind = K_STRIDED,
      .a = 6, .b = 1 },
    { .json = "{\"variant\":\"fixed\",\"block\":16,\"summary\":4}", .kind = K_FIXED, .a = 16,
      .b = 4, .d = 1 },
    { .json = "{\"variant\":\"fixed\",\"block\":12,\"summary\":3,\"combine\":\"heads\","
              "\"heads_per_pattern\":2}", .kind = K_FIXED, .a = 12, .b = 3, .c = 1, .d = 2 },
    { .json = "{\"variant\":\"axial\"}", .kind = K_AXIAL, .a = 0 },
    { .json = "{\"variant\":\"axial\",\"cols\":9,\"mode\":\"heads\"}", .kind = K_AXIAL, .a = 9,
      .b = 1 },
    { .json = "{\"variant\":\"longformer\",\"window\":6}", .kind = K_LF, .a = 6, .dil = { 1 },
      .n_dil = 1, .gpos = { 0 }, .n_gpos = 1 },
    { .json = "{\"variant\":\"longformer\",\"window\":3,\"global\":[0,5,64,300]}", .kind = K_LF,
      .a = 3, .dil = { 1 }, .n_dil = 1, .gpos = { 0, 5, 64, 300 }, .n_gpos = 4 },
    { .json = "{\"variant\":\"longformer\",\"window\":3,\"dilation\":2,\"global\":\"none\"}",
      .kind = K_LF, .a = 3, .dil = { 2 }, .n_dil = 1, .n_gpos = 0 },
    { .json = "{\"variant\":\"bigbird\",\"block\":8,\"random_blocks\":2,\"seed\":7}",
      .kind = K_BIGBIRD, .a = 8, .b = 2, .c = 1, .d = 1, .e = 1, .seed = 7 },
    { .json = "{\"variant\":\"bigbird\",\"block\":16,\"random_blocks\":3,\"window_blocks\":0,"
              "\"global_first\":2,\"global_last\":0,\"seed\":3}",
      .kind = K_BIGBIRD, .a = 16, .b = 3, .c = 0, .d = 2, .e = 0, .seed = 3 },
    { .json = "{\"variant\":\"bigbird\",\"block\":40,\"random_blocks\":1}",
      .kind = K_BIGBIRD, .a = 40, .b = 1, .c = 1, .d = 1, .e = 1, .seed = 0 },
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/* Run case t on a batch and compare with the reference. Tolerance 1e-5: §0 "equals dense"
 * rule (V in [-1, 1], logits std <= 4, fp32 sums over <= 1000 keys). */
static void check_case(tcase *t, const int32_t *lens, int32_t B, int32_t h, int32_t d,
                       int layer, int nth)
{
    xf_attn_t *a = parse_ok(t->json);
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, B, h, d, 77u + (uint64_t)B * 13 + (uint64_t)d,
                                      4.0f), 0);
    c.sh.layer = layer;
    t->layer = layer;
    float *ref = calloc(c.plane + 1, sizeof(float));
    xf_ref_case_reference(&c, build, t, ref);
    int rc = xf_ref_run(a, &c.sh, &c.io, nth, NULL);
    assert_int_equal(rc, 0);
    double e = xf_ref_maxdiff(c.out, ref, c.plane);
    if (!(e <= 1e-5))
        print_message("%s B=%d h=%d d=%d: max err %g\n", t->json, B, h, d, e);
    assert_true(e <= 1e-5);
    free(ref);
    xf_ref_case_free(&c);
    xf_attn_free(a);
}

static const int32_t odd_lens[] = { 1, 2, 3, 7, 63, 64, 65, 257, 1000 };

static void test_vs_reference(void **state)
{
    (void)state;
    static const int32_t mix[] = { 65, 0, 7, 200, 1, 64 };
    for (size_t i = 0; i < N_CASES; i++) {
        check_case(&cases[i], odd_lens, 9, 3, 40, 2, 2);
        check_case(&cases[i], mix, 6, 12, 64, 0, 3);
        check_case(&cases[i], odd_lens + 7, 2, 1, 32, 5, 1);
        /* with the selected table's kernel: make check reruns this program under XF_CPU=avx2
         * and XF_CPU=generic (tests/isa/) for the AVX2 and the portable kernels */
        check_case(&cases[i], mix, 6, 3, 40, 1, 2);
        check_case(&cases[i], odd_lens, 9, 3, 32, 2, 3);
    }
}

static void test_dilated_per_head(void **state)
{
    (void)state;
    tcase t = { .json = "{\"variant\":\"dilated\",\"window\":5,\"dilation\":[1,2,7]}",
                .kind = K_WIN, .a = 5, .dil = { 1, 2, 7 }, .n_dil = 3 };
    check_case(&t, odd_lens, 9, 3, 40, 0, 2);
    tcase l = { .json = "{\"variant\":\"longformer\",\"window\":4,\"dilation\":[2,1,3],"
                        "\"global\":[1,8]}",
                .kind = K_LF, .a = 4, .dil = { 2, 1, 3 }, .n_dil = 3, .gpos = { 1, 8 },
                .n_gpos = 2 };
    check_case(&l, odd_lens, 9, 3, 32, 0, 3);
    /* a per-head list shorter than the head count is refused at plan time */
    xf_attn_t *a = parse_ok(t.json);
    xf_ref_case c;
    int32_t n = 10;
    assert_int_equal(xf_ref_case_init(&c, &n, 1, 4, 32, 1, 1.0f), 0);
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 1, NULL), XF_EPARAM);
    xf_ref_case_free(&c);
    xf_attn_free(a);
}

static void test_etc_cls_sep(void **state)
{
    (void)state;
    static const int32_t lens[] = { 30, 65, 7 };
    int32_t cu[4] = { 0, 30, 95, 102 };
    int32_t *types = calloc(102, sizeof(int32_t));
    for (int32_t i = 12; i < 30; i++)
        types[i] = 1;                 /* [CLS] a.. [SEP]=11 | b.. [SEP]=29 */
    for (int32_t i = 30 + 40; i < 95; i++)
        types[i] = 1;
    tcase t = { .json = "{\"variant\":\"etc\",\"radius\":3}", .kind = K_ETC, .a = 3,
                .dil = { 1 }, .n_dil = 1, .types = types, .cu = cu };
    xf_attn_t *a = parse_ok(t.json);
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, 3, 3, 40, 5, 4.0f), 0);
    c.io.type_ids = types;
    float *ref = calloc(c.plane, sizeof(float));
    xf_ref_case_reference(&c, build, &t, ref);
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
    assert_true(xf_ref_maxdiff(c.out, ref, c.plane) <= 1e-5);   /* §0 tolerance */
    /* is_global, when given, names the global tokens instead */
    uint8_t *isg = calloc(102, 1);
    isg[0] = isg[11] = isg[29] = isg[30] = isg[69] = isg[94] = isg[95] = isg[101] = 1;
    c.io.type_ids = NULL;
    c.io.is_global = isg;
    float *o2 = malloc(c.plane * sizeof(float));
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 3, NULL), 0);
    memcpy(o2, c.out, c.plane * sizeof(float));
    c.io.is_global = NULL;
    c.io.type_ids = types;
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 1, NULL), 0);
    assert_memory_equal(o2, c.out, c.plane * sizeof(float));
    free(o2);
    free(isg);
    free(ref);
    free(types);
    xf_ref_case_free(&c);
    xf_attn_free(a);
}

/* Limits: each variant at its §-limit equals dense to 1e-5 and the plan counts the fallback. */
static void test_limits(void **state)
{
    (void)state;
    static const char *const lim[] = {
        "{\"variant\":\"blockwise\",\"block\":1000}",
        "{\"variant\":\"local1d\",\"block\":8,\"halo\":1000}",
        "{\"variant\":\"window\",\"window\":999}",
        "{\"variant\":\"dilated\",\"window\":999,\"dilation\":1}",
        "{\"variant\":\"strided\",\"stride\":1000}",
        "{\"variant\":\"strided\",\"stride\":1}",
        "{\"variant\":\"fixed\",\"block\":1000,\"summary\":8}",
        "{\"variant\":\"fixed\",\"block\":16,\"summary\":16}",
        "{\"variant\":\"axial\",\"cols\":1000}",
        "{\"variant\":\"longformer\",\"window\":999}",
        "{\"variant\":\"etc\",\"radius\":999}",
        "{\"variant\":\"bigbird\",\"block\":64,\"global_first\":16}",
        "{\"variant\":\"bigbird\",\"block\":16,\"window_blocks\":63}",
    };
    static const int32_t lens[] = { 1000, 257, 3, 1 };
    tcase dense = { .kind = K_DENSE };
    for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
        xf_attn_t *a = parse_ok(lim[i]);
        xf_ref_case c;
        assert_int_equal(xf_ref_case_init(&c, lens, 4, 2, 64, 11, 4.0f), 0);
        float *ref = calloc(c.plane, sizeof(float));
        xf_ref_case_reference(&c, build, &dense, ref);
        xf_attn_plan pl;
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, &pl), 0);
        double e = xf_ref_maxdiff(c.out, ref, c.plane);
        if (!(e <= 1e-5) || pl.dense_fallbacks != 4)
            print_message("%s: err %g fallbacks %d\n", lim[i], e, pl.dense_fallbacks);
        assert_true(e <= 1e-5);   /* §0 tolerance */
        assert_int_equal(pl.dense_fallbacks, 4);
        free(ref);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
    /* every token global (Longformer) with copied projections is dense as well */
    xf_attn_t *a = parse_ok("{\"variant\":\"longformer\",\"window\":2,\"global\":\"segment_a\"}");
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, 4, 2, 64, 12, 4.0f), 0);
    float *ref = calloc(c.plane, sizeof(float));
    xf_ref_case_reference(&c, build, &dense, ref);
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
    assert_true(xf_ref_maxdiff(c.out, ref, c.plane) <= 1e-5);
    free(ref);
    xf_ref_case_free(&c);
    xf_attn_free(a);
}

/* Output of every sequence is bitwise the same for nth 1, 2, 3, 8, alone or packed (in any
 * position, next to any other sequences). */
static void test_packing_threads(void **state)
{
    (void)state;
    static const int32_t lens[] = { 65, 7, 300, 1, 64 };
    static const int32_t lens2[] = { 300, 20, 3 };
    const int32_t H = 3, d = 40;
    for (size_t i = 0; i < N_CASES; i++) {
        xf_attn_t *a = parse_ok(cases[i].json);
        xf_ref_case c;
        assert_int_equal(xf_ref_case_init(&c, lens, 5, H, d, 5, 4.0f), 0);
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 1, NULL), 0);
        float *o1 = malloc(c.plane * sizeof(float));
        memcpy(o1, c.out, c.plane * sizeof(float));
        static const int nths[] = { 2, 3, 8 };
        for (int k = 0; k < 3; k++) {
            memset(c.out, 0, c.plane * sizeof(float));
            assert_int_equal(xf_ref_run(a, &c.sh, &c.io, nths[k], NULL), 0);
            assert_memory_equal(c.out, o1, c.plane * sizeof(float));
        }
        /* the n = 300 sequence first in another batch (different neighbours, contents) */
        xf_ref_case b;
        assert_int_equal(xf_ref_case_init(&b, lens2, 3, H, d, 6, 4.0f), 0);
        const int32_t N = c.sh.n_tokens, Nb = b.sh.n_tokens, t0 = 72, n = 300;
        for (int32_t h = 0; h < H; h++) {
            size_t src = ((size_t)h * N + t0) * d, dst = (size_t)h * Nb * d;
            memcpy(b.q + dst, c.q + src, (size_t)n * d * 4);
            memcpy(b.k + dst, c.k + src, (size_t)n * d * 4);
            memcpy(b.v + dst, c.v + src, (size_t)n * d * 4);
        }
        assert_int_equal(xf_ref_run(a, &b.sh, &b.io, 2, NULL), 0);
        assert_memory_equal(b.out, o1 + (size_t)t0 * H * d, (size_t)n * H * d * sizeof(float));
        xf_ref_case_free(&b);
        free(o1);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
}

static void test_n1_and_huge(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        xf_attn_t *a = parse_ok(cases[i].json);
        int32_t one = 1;
        xf_ref_case c;
        assert_int_equal(xf_ref_case_init(&c, &one, 1, 3, 40, 8, 50.0f), 0);
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
        for (int32_t h = 0; h < 3; h++)
            assert_memory_equal(c.out + h * 40, c.v + (size_t)h * 40, 40 * sizeof(float));
        xf_ref_case_free(&c);
        /* q × 300 on top of the usual 4: logits ~1e4, everything finite */
        static const int32_t lens[] = { 257, 65, 7 };
        assert_int_equal(xf_ref_case_init(&c, lens, 3, 3, 64, 9, 1200.0f), 0);
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
        for (size_t k = 0; k < c.plane; k++)
            assert_true(isfinite(c.out[k]) && fabsf(c.out[k]) <= 1.0f);
        xf_ref_case_free(&c);
        /* B = 0: plan and forward are no-ops */
        assert_int_equal(xf_ref_case_init(&c, lens, 0, 3, 64, 9, 1.0f), 0);
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
}

/* All-zero q (uniform weights over A(i)) vs the reference; denormal k/v and constant rows stay
 * finite. */
static void test_degenerate_inputs(void **state)
{
    (void)state;
    static const int32_t lens[] = { 70, 5, 1 };
    for (size_t i = 0; i < N_CASES; i++) {
        tcase *t = &cases[i];
        xf_attn_t *a = parse_ok(t->json);
        xf_ref_case c;
        assert_int_equal(xf_ref_case_init(&c, lens, 3, 3, 40, 12, 0.0f), 0);   /* q = 0 */
        t->layer = 0;
        float *ref = calloc(c.plane, sizeof(float));
        xf_ref_case_reference(&c, build, t, ref);
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
        assert_true(xf_ref_maxdiff(c.out, ref, c.plane) <= 1e-5);   /* §0 tolerance */
        for (size_t k = 0; k < c.plane; k++) {
            c.q[k] = 1.0f;                      /* constant rows */
            c.k[k] = 1e-40f;                    /* denormal */
            c.v[k] = (k % 3) ? 1e-41f : -2e-40f;
        }
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 3, NULL), 0);
        for (size_t k = 0; k < c.plane; k++)
            assert_true(isfinite(c.out[k]) && fabsf(c.out[k]) <= 2.1e-40f);
        free(ref);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
}

/* Changing an excluded key/value (even to 1e30) leaves the rows that exclude it unchanged. */
static void test_exclusion_exact(void **state)
{
    (void)state;
    const int32_t n = 200, H = 2, d = 32;
    for (size_t i = 0; i < N_CASES; i++) {
        tcase *t = &cases[i];
        xf_attn_t *a = parse_ok(t->json);
        xf_ref_case c;
        assert_int_equal(xf_ref_case_init(&c, &n, 1, H, d, 10, 4.0f), 0);
        t->layer = 0;
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
        float *o1 = malloc(c.plane * sizeof(float));
        memcpy(o1, c.out, c.plane * sizeof(float));
        static const int32_t js[] = { 0, 37, 199 };
        uint8_t *A = malloc((size_t)n * n);
        for (int k = 0; k < 3; k++) {
            int32_t j = js[k];
            float *kk = malloc(c.plane * sizeof(float)), *vv = malloc(c.plane * sizeof(float));
            memcpy(kk, c.k, c.plane * sizeof(float));
            memcpy(vv, c.v, c.plane * sizeof(float));
            for (int32_t h = 0; h < H; h++)
                for (int32_t x = 0; x < d; x++) {
                    c.k[((size_t)h * n + j) * d + x] = 1e30f;
                    c.v[((size_t)h * n + j) * d + x] = 1e30f;
                }
            assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 3, NULL), 0);
            for (int32_t h = 0; h < H; h++) {
                build(t, 0, n, h, A);
                for (int32_t r = 0; r < n; r++)
                    if (!A[(size_t)r * n + j] && r != j)
                        assert_memory_equal(c.out + ((size_t)r * H + h) * d,
                                            o1 + ((size_t)r * H + h) * d, d * sizeof(float));
            }
            memcpy(c.k, kk, c.plane * sizeof(float));
            memcpy(c.v, vv, c.plane * sizeof(float));
            free(kk);
            free(vv);
        }
        free(A);
        free(o1);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
}

/* Union semantics: keys reachable by two rules count once — BigBird with few blocks (random
 * candidates overlap G ∪ W) and Longformer globals inside the window, vs explicit sets. */
static void test_union(void **state)
{
    (void)state;
    static const int32_t lens[] = { 40, 17, 64 };
    tcase bb = { .json = "{\"variant\":\"bigbird\",\"block\":8,\"random_blocks\":5,"
                         "\"global_first\":1,\"global_last\":1,\"window_blocks\":1}",
                 .kind = K_BIGBIRD, .a = 8, .b = 5, .c = 1, .d = 1, .e = 1 };
    check_case(&bb, lens, 3, 3, 32, 1, 2);
    tcase lf = { .json = "{\"variant\":\"longformer\",\"window\":8,\"global\":[2,3,4,30]}",
                 .kind = K_LF, .a = 8, .dil = { 1 }, .n_dil = 1, .gpos = { 2, 3, 4, 30 },
                 .n_gpos = 4 };
    check_case(&lf, lens, 3, 3, 32, 0, 2);
    tcase st = { .json = "{\"variant\":\"strided\",\"stride\":4}", .kind = K_STRIDED, .a = 4 };
    check_case(&st, lens, 3, 3, 32, 0, 2);
}

/* BigBird: same seed/layer/head ⇒ identical; another seed or layer ⇒ different output;
 * random blocks are distinct and avoid G ∪ W (checked on the reference sets). */
static void test_bigbird_seed(void **state)
{
    (void)state;
    int32_t n = 1000;
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, &n, 1, 2, 32, 4, 4.0f), 0);
    xf_attn_t *a0 = parse_ok("{\"variant\":\"bigbird\",\"block\":16,\"seed\":0}");
    xf_attn_t *a1 = parse_ok("{\"variant\":\"bigbird\",\"block\":16,\"seed\":1}");
    float *o0 = malloc(c.plane * sizeof(float));
    assert_int_equal(xf_ref_run(a0, &c.sh, &c.io, 1, NULL), 0);
    memcpy(o0, c.out, c.plane * sizeof(float));
    assert_int_equal(xf_ref_run(a0, &c.sh, &c.io, 3, NULL), 0);
    assert_memory_equal(o0, c.out, c.plane * sizeof(float));
    assert_int_equal(xf_ref_run(a1, &c.sh, &c.io, 1, NULL), 0);
    assert_true(xf_ref_maxdiff(o0, c.out, c.plane) > 1e-4);
    c.sh.layer = 3;
    assert_int_equal(xf_ref_run(a0, &c.sh, &c.io, 1, NULL), 0);
    assert_true(xf_ref_maxdiff(o0, c.out, c.plane) > 1e-4);
    /* per-head draws differ unless random_per_head is false */
    xf_attn_t *a2 = parse_ok("{\"variant\":\"bigbird\",\"block\":16,\"random_per_head\":false}");
    c.sh.layer = 0;
    for (size_t i = 0; i < c.plane / 2; i++) {   /* head 1 := head 0 */
        c.q[c.plane / 2 + i] = c.q[i];
        c.k[c.plane / 2 + i] = c.k[i];
        c.v[c.plane / 2 + i] = c.v[i];
    }
    assert_int_equal(xf_ref_run(a2, &c.sh, &c.io, 2, NULL), 0);
    for (int32_t t = 0; t < n; t++)
        assert_memory_equal(c.out + (size_t)t * 64, c.out + (size_t)t * 64 + 32, 32 * 4);
    assert_int_equal(xf_ref_run(a0, &c.sh, &c.io, 2, NULL), 0);
    int differs = 0;
    for (int32_t t = 0; t < n && !differs; t++)
        differs = memcmp(c.out + (size_t)t * 64, c.out + (size_t)t * 64 + 32, 32 * 4) != 0;
    assert_true(differs);
    /* reference sets: r random blocks per non-global block, outside G ∪ W, distinct */
    int32_t nb = 63;
    uint8_t *A = malloc((size_t)n * n);
    xf_ref_set_bigbird(n, 16, 3, 1, 1, 1, 0, 0, 0, A);
    for (int32_t blk = 2; blk < nb - 2; blk++) {
        int32_t cnt = 0;
        for (int32_t x = 0; x < nb; x++)
            cnt += A[(size_t)(blk * 16) * n + x * 16];
        assert_int_equal(cnt, 1 + 1 + 3 + 3);   /* G (2) + W (3) + R (3) */
    }
    free(A);
    free(o0);
    xf_attn_free(a0);
    xf_attn_free(a1);
    xf_attn_free(a2);
    xf_ref_case_free(&c);
}

/* Longformer global rows use qg/kg/vg (with the q_scale folded in as for q). */
static void test_longformer_global_planes(void **state)
{
    (void)state;
    static const int32_t lens[] = { 70, 9 };
    const int32_t H = 3, d = 32;
    xf_attn_t *a = parse_ok("{\"variant\":\"longformer\",\"window\":4,\"global\":[0,20]}");
    xf_ref_case c, g;
    assert_int_equal(xf_ref_case_init(&c, lens, 2, H, d, 21, 4.0f), 0);
    assert_int_equal(xf_ref_case_init(&g, lens, 2, H, d, 22, 4.0f), 0);
    c.io.qg = g.q;
    c.io.kg = g.k;
    c.io.vg = g.v;
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 3, NULL), 0);
    const int32_t N = c.sh.n_tokens;
    double f = 1.0 / sqrt((double)d);
    float *ref = calloc(c.plane, sizeof(float));
    for (int32_t s = 0; s < 2; s++) {
        int32_t t0 = c.cu[s], n = lens[s];
        uint8_t *glob = calloc((size_t)n, 1), *A = malloc((size_t)n * n), *notg = malloc(n);
        glob[0] = 1;
        if (n > 20)
            glob[20] = 1;
        for (int32_t i = 0; i < n; i++)
            notg[i] = !glob[i];
        xf_ref_set_longformer(n, 4, 1, glob, A);
        for (int32_t h = 0; h < H; h++) {
            size_t off = ((size_t)h * N + t0) * d;
            float *o = ref + ((size_t)t0 * H + h) * d;
            xf_ref_attend(n, d, c.q + off, c.k + off, c.v + off, d, f, A, NULL, notg, o, H * d);
            xf_ref_set_dense(n, A);
            xf_ref_attend(n, d, g.q + off, g.k + off, g.v + off, d, f, A, NULL, glob, o, H * d);
            xf_ref_set_longformer(n, 4, 1, glob, A);
        }
        free(glob);
        free(A);
        free(notg);
    }
    assert_true(xf_ref_maxdiff(c.out, ref, c.plane) <= 1e-5);   /* §0 tolerance */
    free(ref);
    xf_ref_case_free(&c);
    xf_ref_case_free(&g);
    xf_attn_free(a);
}

/* Synthesizer logits (random and factorized and dense) vs the reference with a bias matrix. */
static void test_synthesizer(void **state)
{
    (void)state;
    static const int32_t lens[] = { 70, 1, 33 };
    const int32_t H = 2, d = 40, nmax = 80, k = 5, dm = 24, dh = 16;
    xf_attn_t *a = parse_ok("\"synthesizer\"");
    assert_true(xf_attn_flags(a) & XF_ATTN_NEEDS_WEIGHTS);
    assert_false(xf_attn_flags(a) & XF_ATTN_PER_REQUEST);
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, 3, H, d, 31, 1.0f), 0);
    /* no weights: refused */
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 1, NULL), XF_EPARAM);
    float *R = malloc(sizeof(float) * H * nmax * nmax);
    float *R1 = malloc(sizeof(float) * H * nmax * k), *R2 = malloc(sizeof(float) * H * nmax * k);
    float *W1 = malloc(sizeof(float) * H * dh * dm), *B1 = malloc(sizeof(float) * H * dh);
    float *W2 = malloc(sizeof(float) * H * nmax * dh), *B2 = malloc(sizeof(float) * H * nmax);
    float *X = malloc(sizeof(float) * 104 * dm);
    xf_test_fill(R, (size_t)H * nmax * nmax, 1, -3, 3);
    xf_test_fill(R1, (size_t)H * nmax * k, 2, -1, 1);
    xf_test_fill(R2, (size_t)H * nmax * k, 3, -1, 1);
    xf_test_fill(W1, (size_t)H * dh * dm, 4, -0.5f, 0.5f);
    xf_test_fill(B1, (size_t)H * dh, 5, -0.5f, 0.5f);
    xf_test_fill(W2, (size_t)H * nmax * dh, 6, -1, 1);
    xf_test_fill(B2, (size_t)H * nmax, 7, -1, 1);
    xf_test_fill(X, (size_t)104 * dm, 8, -1, 1);
    xf_synth_weights w = { .n_head = H, .n_max = nmax, .k = k, .d_model = dm, .d_hidden = dh,
                           .r = R, .r1 = R1, .r2 = R2, .w1 = W1, .b1 = B1, .w2 = W2, .b2 = B2 };
    c.io.weights = &w;
    c.io.x = X;
    const int32_t N = c.sh.n_tokens;
    for (int kind = XF_SYNTH_RANDOM; kind <= XF_SYNTH_DENSE; kind++) {
        w.kind = kind;
        assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
        float *ref = calloc(c.plane, sizeof(float));
        for (int32_t s = 0; s < 3; s++) {
            int32_t t0 = c.cu[s], n = lens[s];
            double *bias = malloc(sizeof(double) * (size_t)n * n);
            uint8_t *A = malloc((size_t)n * n);
            xf_ref_set_dense(n, A);
            for (int32_t h = 0; h < H; h++) {
                for (int32_t i = 0; i < n; i++) {
                    double hid[16];
                    for (int32_t u = 0; u < dh && kind == XF_SYNTH_DENSE; u++) {
                        double acc = B1[h * dh + u];
                        for (int32_t x = 0; x < dm; x++)
                            acc += (double)W1[((size_t)h * dh + u) * dm + x] *
                                   X[(size_t)(t0 + i) * dm + x];
                        hid[u] = acc > 0 ? acc : 0;
                    }
                    for (int32_t j = 0; j < n; j++) {
                        double b = 0;
                        if (kind == XF_SYNTH_RANDOM) {
                            b = R[((size_t)h * nmax + i) * nmax + j];
                        } else if (kind == XF_SYNTH_FACTORIZED) {
                            for (int32_t x = 0; x < k; x++)
                                b += (double)R1[((size_t)h * nmax + i) * k + x] *
                                     R2[((size_t)h * nmax + j) * k + x];
                        } else {
                            b = B2[h * nmax + j];
                            for (int32_t u = 0; u < dh; u++)
                                b += (double)W2[((size_t)h * nmax + j) * dh + u] * hid[u];
                        }
                        bias[(size_t)i * n + j] = b;
                    }
                }
                size_t off = ((size_t)h * N + t0) * d;
                xf_ref_attend(n, d, c.q + off, c.k + off, c.v + off, d, 0.0, A, bias, NULL,
                              ref + ((size_t)t0 * H + h) * d, H * d);
            }
            free(bias);
            free(A);
        }
        /* fp32 logits from short dot products (k, d_hidden <= 24 terms): 1e-5 holds */
        double e = xf_ref_maxdiff(c.out, ref, c.plane);
        if (!(e <= 1e-5))
            print_message("synthesizer kind %d: err %g\n", kind, e);
        assert_true(e <= 1e-5);
        free(ref);
    }
    /* a sequence longer than n_max is a shape error */
    w.n_max = 50;
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 1, NULL), XF_ESHAPE);
    free(R); free(R1); free(R2); free(W1); free(B1); free(W2); free(B2); free(X);
    xf_ref_case_free(&c);
    xf_attn_free(a);
}

XF_TEST_MAIN(cmocka_unit_test(test_vs_reference), cmocka_unit_test(test_dilated_per_head),
             cmocka_unit_test(test_etc_cls_sep), cmocka_unit_test(test_limits),
             cmocka_unit_test(test_packing_threads), cmocka_unit_test(test_n1_and_huge),
             cmocka_unit_test(test_degenerate_inputs),
             cmocka_unit_test(test_exclusion_exact), cmocka_unit_test(test_union),
             cmocka_unit_test(test_bigbird_seed), cmocka_unit_test(test_longformer_global_planes),
             cmocka_unit_test(test_synthesizer))
