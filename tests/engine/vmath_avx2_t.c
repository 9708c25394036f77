/* xf_test_exp256, xf_test_gelu_poly256 (vmath_x86_t.h), built with -mavx2 -mfma. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>

#include "engine/kernels/x86/vmath_avx2.h"
#include "vmath_x86_t.h"

void xf_test_exp256(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        int k = n - i < 8 ? (int)(n - i) : 8;
        __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(k),
                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(y + i, mk, xf_exp256(_mm256_maskload_ps(x + i, mk)));
    }
}

void xf_test_gelu_poly256(const float *x, float *y, size_t n, int epi)
{
    __m256 c[XF_GELU_POLY_DEG + 1];
    xf_gelu_poly_load256(c, xf_gelu_poly_table((enum xf_epilogue)epi));
    for (size_t i = 0; i < n; i += 8) {
        int k = n - i < 8 ? (int)(n - i) : 8;
        __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(k),
                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(y + i, mk, xf_gelu_poly256(_mm256_maskload_ps(x + i, mk), c));
    }
}
