/* avx512 kernels besides the GEMM: the FMA peak loop (more ops follow here). */
#include "config.h"

#include <immintrin.h>

#include "engine/kernels/x86/x86.h"

double xf_fma_loop_avx512(int64_t iters, float *sink)
{
    __m512 a0 = _mm512_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m512 a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; i++) {
        a0 = _mm512_fmadd_ps(a0, m, b);
        a1 = _mm512_fmadd_ps(a1, m, b);
        a2 = _mm512_fmadd_ps(a2, m, b);
        a3 = _mm512_fmadd_ps(a3, m, b);
        a4 = _mm512_fmadd_ps(a4, m, b);
        a5 = _mm512_fmadd_ps(a5, m, b);
        a6 = _mm512_fmadd_ps(a6, m, b);
        a7 = _mm512_fmadd_ps(a7, m, b);
        a8 = _mm512_fmadd_ps(a8, m, b);
        a9 = _mm512_fmadd_ps(a9, m, b);
        a10 = _mm512_fmadd_ps(a10, m, b);
        a11 = _mm512_fmadd_ps(a11, m, b);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    *sink += _mm512_reduce_add_ps(s);
    return 12.0 * 2.0 * 16 * (double)iters;
}

void xf_kernels_fill_avx512(xf_kernels_t *t)
{
    (void)t;
}
