/* Tests for the engine's vector exp (src/engine/kernels/x86/vmath_avx2.h xf_exp256,
 * vmath_avx512.h xf_exp512; also the family-T AVX2 attention's exp) against libm's expf on odd
 * lengths (masked tails) with special values mixed in: NaN stays NaN (the max/min operand
 * order), +inf and x > ln(FLT_MAX) give +inf, −inf and x below the normal range give 0 (or a
 * denormal), the rest within 4 ulp. The int8 epilogue's polynomial GELU (kernels/gelu_poly.h)
 * of both ISAs against its scalar twin xf_gelu_poly_ref, bitwise, on odd lengths over a
 * stride of all floats in [−16, 16], the piece edges (rounding ties of s) and special values.
 * Each ISA runs only where the CPU has it (XF_CPU does not matter: these call the ISA's
 * functions directly). */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../helpers/xf_test.h"
#include "engine/cpu.h"
#include "engine/kernels/gelu_poly.h"
#include "vmath_x86_t.h"

static const float specials[] = {
    NAN, INFINITY, -INFINITY, -100.0f, 88.8f, 88.7f, 88.0f, -87.3f, -87.0f, -104.0f, -110.0f,
    0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 20.25f, -20.25f, 80.0f, -80.0f, 89.0f, 1e-8f, -1e-8f,
};
#define N_SPECIALS (sizeof specials / sizeof specials[0])
static const size_t lens[] = { 1, 3, 7, 9, 15, 17, 23, 31, 33, 65, 257 };

/* x[i]: every third a special value (all of them over the lengths), else a deterministic
 * pseudo-random value in [−87, 88.5]; NaN also with the sign bit set. */
static void fill(float *x, size_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        if (i % 3 == 0)
            x[i] = specials[(i / 3 + seed) % N_SPECIALS];
        else
            x[i] = -87.0f + 175.5f * (float)(s >> 8) / 16777216.0f;
    }
    if (n > 4)
        x[4] = -NAN;
}

static int check_one(const char *isa, float x, float y)
{
    float ref = expf(x);
    int ok;
    if (isnan(x))
        ok = isnan(y);
    else if (isinf(ref))
        ok = isinf(y) && y > 0;
    else if (ref < 1e-37f)   /* the edge of the normal range: flushed to 0 or a denormal */
        ok = y >= 0.0f && y < 1e-37f;
    else
        ok = fabs((double)y - (double)ref) <= 4.0 * FLT_EPSILON * (double)ref;
    if (!ok)
        print_message("%s: exp(%.9g) = %.9g, expf %.9g\n", isa, (double)x, (double)y,
                      (double)ref);
    return ok;
}

static void check_isa(const char *isa, void (*fn)(const float *, float *, size_t))
{
    float x[260], y[260];
    int bad = 0, nan_in = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t n = lens[li];
        fill(x, n, (uint32_t)li);
        for (size_t i = 0; i < n + 3; i++)
            y[i] = 12345.0f;           /* the tail past n must stay untouched */
        fn(x, y, n);
        for (size_t i = 0; i < n; i++) {
            bad += !check_one(isa, x[i], y[i]);
            nan_in += isnan(x[i]);
        }
        for (size_t i = n; i < n + 3; i++)
            assert_true(y[i] == 12345.0f);
    }
    assert_true(nan_in > 0);
    assert_int_equal(bad, 0);
}

static void test_exp256(void **state)
{
    (void)state;
    const xf_cpu_t *cpu = xf_cpu();
    if (!(cpu->avx2 && cpu->fma)) {
        print_message("# no AVX2+FMA on this CPU: xf_exp256 not checked\n");
        skip();
    }
    check_isa("avx2", xf_test_exp256);
}

static void test_exp512(void **state)
{
    (void)state;
    const xf_cpu_t *cpu = xf_cpu();
    if (!(cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq && cpu->fma)) {
        print_message("# no AVX-512 on this CPU: xf_exp512 not checked\n");
        skip();
    }
    check_isa("avx512", xf_test_exp512);
}

/* x: the floats of [−16, 16] with a stride (all exponents), the specials, and the piece
 * edges ±(i + ½)/1.25 with their neighbours (s on a rounding tie). Returns the count. */
static size_t gelu_inputs(float *x, size_t cap)
{
    size_t n = 0;
    static const float sp[] = { NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-30f, -1e-30f,
                                1e-45f, 5.99999952f, 6.0f, -6.0f, 7.0f, -7.0f, 100.0f, -100.0f,
                                3e38f, -3e38f };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0] && n < cap; i++)
        x[n++] = sp[i];
    for (int i = 0; i < 8; i++)
        for (int d = -2; d <= 2; d++) {
            float e = ((float)i + 0.5f) / 1.25f;
            for (int j = 0; j < abs(d); j++)
                e = nextafterf(e, d < 0 ? 0.0f : 10.0f);
            if (n + 2 <= cap) {
                x[n++] = e;
                x[n++] = -e;
            }
        }
    for (float v = -16.0f; v < 16.0f && n < cap;) {
        x[n++] = v;
        union { float f; uint32_t u; } b = { v };
        /* 2048 points per binade */
        uint32_t step = 4096;
        b.u = v < 0.0f ? b.u - step : b.u + step;
        if (v < 0.0f && b.f > -1e-6f)
            b.f = 1e-6f;   /* jump over the tiny magnitudes (sampled by the specials) */
        v = b.f;
    }
    return n;
}

static void check_gelu_poly(const char *isa, void (*fn)(const float *, float *, size_t, int))
{
    enum { CAP = 1 << 17 };
    float *x = malloc(CAP * sizeof *x), *y = malloc((CAP + 3) * sizeof *y);
    assert_true(x && y);
    size_t n = gelu_inputs(x, CAP);
    assert_true(n > 20000 && n < CAP);
    static const int epis[] = { XF_EPI_BIAS_GELU, XF_EPI_BIAS_GELU_TANH };
    for (int e = 0; e < 2; e++) {
        const float (*tab)[XF_GELU_POLY_N] = xf_gelu_poly_table((enum xf_epilogue)epis[e]);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            /* odd lengths (masked tails) from odd offsets */
            size_t len = lens[li], off = (li * 997) % (n - len);
            for (size_t i = 0; i < len + 3; i++)
                y[i] = 12345.0f;
            fn(x + off, y, len, epis[e]);
            for (size_t i = len; i < len + 3; i++)
                assert_true(y[i] == 12345.0f);
        }
        fn(x, y, n, epis[e]);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            float r = xf_gelu_poly_ref(x[i], tab);
            int same = isnan(r) ? isnan(y[i]) : memcmp(&r, &y[i], sizeof r) == 0;
            if (!same && bad++ < 5)
                print_message("%s gelu_poly epi %d: x %.9g -> %.9g, scalar twin %.9g\n", isa,
                              epis[e], (double)x[i], (double)y[i], (double)r);
        }
        assert_int_equal(bad, 0);
    }
    free(x);
    free(y);
}

static void test_gelu_poly256(void **state)
{
    (void)state;
    const xf_cpu_t *cpu = xf_cpu();
    if (!(cpu->avx2 && cpu->fma)) {
        print_message("# no AVX2+FMA on this CPU: xf_gelu_poly256 not checked\n");
        skip();
    }
    check_gelu_poly("avx2", xf_test_gelu_poly256);
}

static void test_gelu_poly512(void **state)
{
    (void)state;
    const xf_cpu_t *cpu = xf_cpu();
    if (!(cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq && cpu->fma)) {
        print_message("# no AVX-512 on this CPU: xf_gelu_poly512 not checked\n");
        skip();
    }
    check_gelu_poly("avx512", xf_test_gelu_poly512);
}

XF_TEST_MAIN(cmocka_unit_test(test_exp256), cmocka_unit_test(test_exp512),
             cmocka_unit_test(test_gelu_poly256), cmocka_unit_test(test_gelu_poly512))
