/* xf_test_exp512, xf_test_gelu_poly512 (vmath_x86_t.h), built with the AVX-512 flags. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>

#include "engine/kernels/x86/vmath_avx512.h"
#include "vmath_x86_t.h"

void xf_test_exp512(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        size_t k = n - i < 16 ? n - i : 16;
        __mmask16 mk = (__mmask16)((1u << k) - 1u);
        _mm512_mask_storeu_ps(y + i, mk, xf_exp512(_mm512_maskz_loadu_ps(mk, x + i)));
    }
}

void xf_test_gelu_poly512(const float *x, float *y, size_t n, int epi)
{
    __m512 c[XF_GELU_POLY_DEG + 1];
    xf_gelu_poly_load512(c, xf_gelu_poly_table((enum xf_epilogue)epi));
    for (size_t i = 0; i < n; i += 16) {
        size_t k = n - i < 16 ? n - i : 16;
        __mmask16 mk = (__mmask16)((1u << k) - 1u);
        _mm512_mask_storeu_ps(y + i, mk, xf_gelu_poly512(_mm512_maskz_loadu_ps(mk, x + i), c));
    }
}
