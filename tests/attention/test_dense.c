/* Tests for the "dense" variant (ATTENTION.md §1, §27): fast kernel (the selected table's;
 * make check reruns this program under XF_CPU=avx2 and generic for the others) vs the double
 * reference on odd shapes and mixed batches, packing and thread independence (bitwise), n = 1,
 * huge logits, non-finite logits (every micro-kernel this CPU runs, called directly), scale
 * parameter, every micro-kernel against the portable one on each tile height. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_t.h"
#include "attention/registry.h"
#include "engine/cpu.h"
#include "helpers/xf_test.h"
#include "ref/attn_ref_t.h"

static void build_dense(void *ctx, int32_t s, int32_t n, int32_t head, uint8_t *A)
{
    (void)ctx, (void)s, (void)head;
    xf_ref_set_dense(n, A);
}

static int n_kerns(const xf_at_kern **k)
{
    int c = 0;
    k[c++] = xf_at_kern_c();
#ifdef XF_HAVE_X86_64
    const xf_cpu_t *cpu = xf_cpu();
    /* the AVX-512 kernel runs here only when the CPU has it and XF_CPU does not cap it */
    if (cpu->level >= XF_ISA_AVX512 && cpu->avx512f && cpu->avx512bw && cpu->avx512vl &&
        cpu->avx512dq && cpu->fma)
        k[c++] = xf_at_kern_avx512();
    /* the AVX2 kernel wherever the CPU runs AVX2+FMA within the cap (also on AVX-512 CPUs) */
    if (cpu->level >= XF_ISA_AVX2 && cpu->avx2 && cpu->fma)
        k[c++] = xf_at_kern_avx2();
#endif
    static int said;
    if (!said++) {
        print_message("# attention kernels checked:");
        for (int i = 0; i < c; i++)
            print_message(" %s", k[i]->name);
        print_message(" (AVX-512/AVX2 ones run only when the CPU has them within XF_CPU)\n");
    }
    return c;
}

/* One batch vs the reference; tolerance 1e-5 is the §0 "equals dense" rule (V in [-1, 1],
 * logit std <= 4, fp32 accumulation over <= 1000 keys). */
static void check_batch(const int32_t *lens, int32_t B, int32_t h, int32_t d, float qmul,
                        double tol)
{
    /* the kernel of the selected table: make check reruns this program under XF_CPU=avx2 and
     * XF_CPU=generic (tests/isa/), which select the AVX2 and the portable kernels */
    const xf_at_kern *kn = xf_at_kern_get();
    static int said;
    if (!said++)
        print_message("# attention kernel in use: %s (others under the XF_CPU caps)\n", kn->name);
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, B, h, d, 1234u + (uint64_t)d, qmul), 0);
    float *ref = calloc(c.plane + 1, sizeof(float));
    xf_ref_case_reference(&c, build_dense, NULL, ref);
    memset(c.out, 0xff, c.plane * sizeof(float));
    assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &c.io, 2, NULL), 0);
    double e = xf_ref_maxdiff(c.out, ref, c.plane);
    if (!(e <= tol))
        print_message("kernel %s B=%d h=%d d=%d: max err %g\n", kn->name, B, h, d, e);
    assert_true(e <= tol);
    free(ref);
    xf_ref_case_free(&c);
}

static void test_odd_shapes(void **state)
{
    (void)state;
    static const int32_t ns[] = { 1, 2, 3, 7, 63, 64, 65, 257, 1000 };
    static const int32_t ds[] = { 32, 64, 40 };
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++)
        for (size_t j = 0; j < 3; j++) {
            int32_t h = ns[i] >= 257 ? 1 : (ns[i] >= 63 ? 3 : 12);
            /* q×4 gives logits with std ≈ 4·(2/3)²·√d/√d·... ≤ 4 (the §0 regime) */
            check_batch(&ns[i], 1, h, ds[j], 4.0f, 1e-5);
        }
}

static void test_mixed_batch(void **state)
{
    (void)state;
    static const int32_t lens[] = { 7, 0, 65, 1, 257, 3, 64, 2, 63 };
    check_batch(lens, 9, 3, 64, 4.0f, 1e-5);
    check_batch(lens, 9, 12, 40, 4.0f, 1e-5);
    check_batch(lens, 9, 3, 32, 4.0f, 1e-5);
}

static void test_n1_is_v0(void **state)
{
    (void)state;
    int32_t one = 1;
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, &one, 1, 3, 40, 7, 100.0f), 0);
    assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &c.io, 1, NULL), 0);
    for (int32_t h = 0; h < 3; h++)
        assert_memory_equal(c.out + h * 40, c.v + (size_t)h * 40, 40 * sizeof(float));
    xf_ref_case_free(&c);
}

static void test_huge_logits(void **state)
{
    (void)state;
    static const int32_t lens[] = { 100, 33 };
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, 2, 3, 64, 99, 300.0f * 8.0f), 0);
    float *ref = calloc(c.plane, sizeof(float));
    xf_ref_case_reference(&c, build_dense, NULL, ref);
    assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &c.io, 3, NULL), 0);
    for (size_t i = 0; i < c.plane; i++)
        assert_true(isfinite(c.out[i]));
    /* Logits ~1e4: fp32 rounding of a logit is ~1e-3 absolute, so the weights of near-tied
     * keys may differ by ~1e-3 relative; outputs are convex combinations of V in [-1, 1]. */
    assert_true(xf_ref_maxdiff(c.out, ref, c.plane) <= 2e-2);
    free(ref);
    xf_ref_case_free(&c);
}

/* Each sequence's output in a batch equals its output alone, bitwise; nth does not matter. */
static void test_packing_threads(void **state)
{
    (void)state;
    static const int32_t lens[] = { 65, 7, 300, 1, 64 };
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, lens, 5, 3, 40, 5, 4.0f), 0);
    assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &c.io, 1, NULL), 0);
    float *o1 = malloc(c.plane * sizeof(float));
    memcpy(o1, c.out, c.plane * sizeof(float));
    static const int nths[] = { 2, 3, 8 };
    for (int t = 0; t < 3; t++) {
        memset(c.out, 0, c.plane * sizeof(float));
        assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &c.io, nths[t], NULL), 0);
        assert_memory_equal(c.out, o1, c.plane * sizeof(float));
    }
    /* sequence 2 (n = 300) alone, copied out of the batch planes */
    const int32_t H = 3, d = 40, N = c.sh.n_tokens, t0 = 65 + 7, n = 300;
    xf_ref_case a;
    assert_int_equal(xf_ref_case_init(&a, &n, 1, H, d, 1, 1.0f), 0);
    for (int32_t h = 0; h < H; h++) {
        memcpy(a.q + (size_t)h * n * d, c.q + ((size_t)h * N + t0) * d, (size_t)n * d * 4);
        memcpy(a.k + (size_t)h * n * d, c.k + ((size_t)h * N + t0) * d, (size_t)n * d * 4);
        memcpy(a.v + (size_t)h * n * d, c.v + ((size_t)h * N + t0) * d, (size_t)n * d * 4);
    }
    assert_int_equal(xf_ref_run(xf_attn_dense(), &a.sh, &a.io, 2, NULL), 0);
    assert_memory_equal(a.out, o1 + (size_t)t0 * H * d, (size_t)n * H * d * sizeof(float));
    xf_ref_case_free(&a);
    free(o1);
    xf_ref_case_free(&c);
}

/* The forward's no-split layout (xf_attn_io.ld): Q, K and V rows read with a row stride from
 * one [N][ld] buffer (head h at column h·d) give bitwise the planes' output, for 1-3 threads,
 * d a multiple of 16 or not, n not a multiple of the tiles; only a variant that declares it
 * reads that layout (another refuses io.ld). */
static void test_strided_rows(void **state)
{
    (void)state;
    static const int32_t lens[] = { 7, 0, 65, 1, 257, 3, 64, 2, 63, 128 };
    static const int32_t ds[] = { 64, 40, 24 };
    assert_true(xf_at_reads_strided(xf_attn_dense()->vt));
    for (size_t j = 0; j < sizeof(ds) / sizeof(ds[0]); j++) {
        const int32_t H = 3, d = ds[j], da = H * d, ld = 3 * da + 16;
        xf_ref_case c;
        assert_int_equal(xf_ref_case_init(&c, lens, 10, H, d, 77u + (uint64_t)d, 4.0f), 0);
        const int32_t N = c.sh.n_tokens;
        float *rows = malloc((size_t)N * ld * sizeof(float));
        float *o1 = malloc(c.plane * sizeof(float));
        assert_non_null(rows);
        assert_non_null(o1);
        for (size_t i = 0; i < (size_t)N * ld; i++)
            rows[i] = NAN;   /* the gaps must never be read into the output */
        for (int32_t t = 0; t < N; t++)
            for (int32_t h = 0; h < H; h++) {
                size_t pl = ((size_t)h * N + t) * d, r = (size_t)t * ld + (size_t)h * d;
                memcpy(rows + r, c.q + pl, (size_t)d * sizeof(float));
                memcpy(rows + r + da, c.k + pl, (size_t)d * sizeof(float));
                memcpy(rows + r + 2 * da, c.v + pl, (size_t)d * sizeof(float));
            }
        assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &c.io, 1, NULL), 0);
        memcpy(o1, c.out, c.plane * sizeof(float));
        xf_attn_io io = c.io;
        io.q = rows;
        io.k = rows + da;
        io.v = rows + 2 * da;
        io.ld = ld;
        for (int nth = 1; nth <= 3; nth++) {
            memset(c.out, 0xff, c.plane * sizeof(float));
            assert_int_equal(xf_ref_run(xf_attn_dense(), &c.sh, &io, nth, NULL), 0);
            assert_memory_equal(c.out, o1, c.plane * sizeof(float));
        }
        /* a variant that reads the planes only refuses the strided layout */
        xf_attn_t *bw = NULL;
        char err[128];
        const char *js = "{\"variant\":\"blockwise\",\"block\":16}";
        assert_int_equal(xf_attn_parse(js, strlen(js), &bw, err, sizeof err), 0);
        assert_false(xf_at_reads_strided(bw->vt));
        assert_int_equal(xf_ref_run(bw, &c.sh, &io, 1, NULL), -EINVAL);
        xf_attn_free(bw);
        free(o1);
        free(rows);
        xf_ref_case_free(&c);
    }
}

/* The scale parameter replaces io.scale; q_scale folded into q is divided out. */
static void test_scale_param(void **state)
{
    (void)state;
    int32_t n = 50;
    xf_ref_case c;
    assert_int_equal(xf_ref_case_init(&c, &n, 1, 2, 32, 3, 4.0f), 0);
    float *ref = calloc(c.plane, sizeof(float));
    c.io.scale = 0.3f;
    xf_ref_case_reference(&c, build_dense, NULL, ref);
    xf_attn_t *a = NULL;
    char err[128];
    const char *js = "{\"variant\":\"dense\",\"scale\":0.3}";
    assert_int_equal(xf_attn_parse(js, strlen(js), &a, err, sizeof(err)), 0);
    c.io.scale = 0.125f;   /* ignored: the parameter wins */
    for (size_t i = 0; i < c.plane; i++)
        c.q[i] *= 0.5f;    /* exact in binary */
    c.io.q_scale = 0.5f;
    assert_int_equal(xf_ref_run(a, &c.sh, &c.io, 2, NULL), 0);
    assert_true(xf_ref_maxdiff(c.out, ref, c.plane) <= 1e-5);   /* §0 tolerance */
    xf_attn_free(a);
    free(ref);
    xf_ref_case_free(&c);
}

/* Non-finite logits reach the output of their row as NaN in the vector kernels' online
 * softmax: a NaN among finite logits, a row of NaN, +inf (exp(inf − inf)), and a NaN chunk
 * after a finite one (the running l and acc turn NaN). Excluded keys (−inf) stay exact 0. */
static void test_nonfinite_logits(void **state)
{
    (void)state;
    const xf_at_kern *ks[4];
    int nk = n_kerns(ks);
    enum { DP = 48, NQ = 5, NKEY = 37 };
    static _Alignas(64) float s[XF_AT_T_BQ * XF_AT_T_BK], l[XF_AT_T_BQ * XF_AT_T_LW],
        acc[XF_AT_T_BQ * DP];
    float m[XF_AT_T_BQ];
    for (int k = 0; k < nk; k++) {
        /* the portable kernel is another helper's (issue: softmax_c on NaN rows) */
        if (strcmp(ks[k]->name, "avx2") != 0)
            continue;
        for (int round = 0; round < 2; round++) {
            for (int r = 0; r < NQ; r++) {
                m[r] = -INFINITY;
                for (int j = 0; j < XF_AT_T_LW; j++)
                    l[r * XF_AT_T_LW + j] = 0.0f;
                for (int c = 0; c < DP; c++)
                    acc[r * DP + c] = 0.0f;
            }
            if (round == 1) {   /* a finite first chunk, then the non-finite one */
                for (int r = 0; r < NQ; r++)
                    for (int j = 0; j < NKEY; j++)
                        s[r * XF_AT_T_BK + j] = 0.01f * (float)(j - r);
                ks[k]->softmax(NQ, NKEY, DP, s, m, l, acc);
                for (int r = 0; r < NQ; r++)
                    for (int c = 0; c < DP; c++)
                        acc[r * DP + c] = 0.5f;
            }
            for (int r = 0; r < NQ; r++)
                for (int j = 0; j < NKEY; j++)
                    s[r * XF_AT_T_BK + j] = (j % 5 == 0) ? -INFINITY : 0.1f * (float)j;
            s[0 * XF_AT_T_BK + 11] = NAN;                    /* row 0: one NaN */
            for (int j = 0; j < NKEY; j++)                 /* row 1: all NaN */
                s[1 * XF_AT_T_BK + j] = NAN;
            s[2 * XF_AT_T_BK + 36] = INFINITY;               /* row 2: +inf */
            /* row 3: finite; row 4: every key excluded */
            for (int j = 0; j < NKEY; j++)
                s[4 * XF_AT_T_BK + j] = -INFINITY;
            ks[k]->softmax(NQ, NKEY, DP, s, m, l, acc);
            for (int r = 0; r < NQ; r++) {
                float lt = 0.0f;
                for (int j = 0; j < XF_AT_T_LW; j++)
                    lt += l[r * XF_AT_T_LW + j];
                if (r <= 2) {
                    /* l and some weight are NaN (P·V then spreads it over the row); a NaN
                     * max also turns the rescaled acc NaN (+inf rescales it by exp(−inf)) */
                    int any = 0;
                    for (int j = 0; j < NKEY; j++)
                        any |= isnan(s[r * XF_AT_T_BK + j]);
                    assert_true(isnan(lt) && any);
                    if (round == 1 && r <= 1)
                        assert_true(isnan(acc[r * DP + 7]));
                } else if (r == 3 || round == 1) {
                    assert_true(isfinite(lt) && lt > 0.0f);
                } else {
                    assert_true(lt == 0.0f);
                }
                if (r == 3)
                    for (int j = 0; j < NKEY; j++)
                        assert_true(j % 5 == 0 ? s[r * XF_AT_T_BK + j] == 0.0f
                                               : s[r * XF_AT_T_BK + j] > 0.0f);
            }
        }
    }
}

static void test_empty_and_bad(void **state)
{
    (void)state;
    xf_attn_shape sh = { 0 };
    xf_attn_plan pl;
    const xf_attn_t *a = xf_attn_dense();
    sh.n_head = 1;
    sh.d_head = 8;
    assert_int_equal(xf_at_plan(a->vt, a->params, &sh, 2, &pl), 0);   /* B = 0: no-op */
    int32_t cu[3] = { 0, 5, 3 };
    sh.n_seq = 2;
    sh.cu_len = cu;
    sh.n_tokens = 5;
    assert_int_equal(xf_at_plan(a->vt, a->params, &sh, 2, &pl), XF_ESHAPE);
}

/* Uniform in [-1, 1) (SplitMix64). */
static float urand1(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * 0x1p-52 - 1.0);
}

/* Every micro-kernel this CPU runs against the portable twin (kern_c) on each row count
 * 1..32 (every register-block tail: 6-row AVX2 and 4-row AVX-512 blocks), odd head widths and
 * key counts (whole 64-key chunks and masked tails): qk, then two online-softmax chunks (the
 * second with a higher max: the rescale path; some rows wholly excluded in the first: the
 * m = −inf path) each followed by pv. s, m, the row sums and acc within 1e-5 relative. */
static void test_kernels_vs_portable(void **state)
{
    (void)state;
    enum { BQ = XF_AT_T_BQ, BK = XF_AT_T_BK, DPM = 64 };
    const xf_at_kern *ks[4];
    const int nkern = n_kerns(ks);
    const xf_at_kern *ref = xf_at_kern_c();
    static _Alignas(64) float qt[BQ * DPM], kt[DPM * BK], vr[BK * DPM], sq[BQ * BK];
    static _Alignas(64) float s[2][BQ * BK], acc[2][BQ * DPM], l[2][BQ * XF_AT_T_LW];
    float m[2][BQ];
    static const int32_t ds[] = { 13, 40, 64 };
    static const int32_t nks[] = { 1, 7, 17, 33, 63, 64 };
    uint64_t st = 99;
    for (size_t i = 0; i < sizeof qt / sizeof qt[0]; i++)
        qt[i] = urand1(&st);
    for (size_t i = 0; i < sizeof kt / sizeof kt[0]; i++)
        kt[i] = urand1(&st);
    for (size_t i = 0; i < sizeof vr / sizeof vr[0]; i++)
        vr[i] = urand1(&st);
    const float *vt[BK];
    for (int k = 0; k < nkern; k++) {
        if (ks[k] == ref)
            continue;
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
            const int32_t d = ds[di], dp = (d + 15) & ~15;
            for (int32_t j = 0; j < BK; j++)
                vt[j] = vr + (size_t)j * dp;
            for (int32_t nq = 1; nq <= BQ; nq++) {
                const xf_at_kern *kk[2] = { ref, ks[k] };
                for (int w = 0; w < 2; w++)
                    kk[w]->qk(nq, d, dp, qt, kt, 0.7f, s[w]);
                for (int32_t i = 0; i < nq * BK; i++)
                    assert_true(fabsf(s[1][i] - s[0][i]) <= 1e-5f * (1.0f + fabsf(s[0][i])));
                memcpy(sq, s[0], sizeof(float) * (size_t)nq * BK);
                for (size_t ni = 0; ni < sizeof nks / sizeof nks[0]; ni++) {
                    const int32_t nkey = nks[ni];
                    for (int w = 0; w < 2; w++) {
                        for (int32_t r = 0; r < nq; r++)
                            m[w][r] = -INFINITY;
                        memset(l[w], 0, sizeof l[w]);
                        memset(acc[w], 0, sizeof acc[w]);
                    }
                    for (int chunk = 0; chunk < 2; chunk++) {
                        for (int w = 0; w < 2; w++) {
                            for (int32_t r = 0; r < nq; r++)
                                for (int32_t j = 0; j < nkey; j++) {
                                    float x = sq[r * BK + j] + (chunk ? 0.8f : 0.0f);
                                    if (!chunk && (r % 5 == 4 || (r % 3 == 1 && j % 7 == 3)))
                                        x = -INFINITY;
                                    s[w][r * BK + j] = x;
                                }
                            kk[w]->softmax(nq, nkey, dp, s[w], m[w], l[w], acc[w]);
                        }
                        for (int32_t i = 0; i < nq; i++)
                            for (int32_t j = 0; j < nkey; j++)
                                assert_true(fabsf(s[1][i * BK + j] - s[0][i * BK + j]) <=
                                            1e-5f * (1.0f + s[0][i * BK + j]));
                        for (int w = 0; w < 2; w++)
                            kk[w]->pv(nq, nkey, dp, s[w], vt, acc[w]);
                    }
                    for (int32_t r = 0; r < nq; r++) {
                        float l0 = 0.0f, l1 = 0.0f;
                        for (int x = 0; x < XF_AT_T_LW; x++) {
                            l0 += l[0][r * XF_AT_T_LW + x];
                            l1 += l[1][r * XF_AT_T_LW + x];
                        }
                        assert_true(m[1][r] == m[0][r]);
                        assert_true(fabsf(l1 - l0) <= 1e-5f * l0);
                        for (int32_t c = 0; c < d; c++)
                            assert_true(fabsf(acc[1][r * dp + c] - acc[0][r * dp + c]) <=
                                        1e-5f * l0);
                    }
                }
            }
        }
    }
}

XF_TEST_MAIN(cmocka_unit_test(test_odd_shapes), cmocka_unit_test(test_mixed_batch),
             cmocka_unit_test(test_n1_is_v0), cmocka_unit_test(test_huge_logits),
             cmocka_unit_test(test_packing_threads), cmocka_unit_test(test_scale_param),
             cmocka_unit_test(test_nonfinite_logits), cmocka_unit_test(test_empty_and_bad),
             cmocka_unit_test(test_strided_rows), cmocka_unit_test(test_kernels_vs_portable))
