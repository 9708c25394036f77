/* avx512 kernels besides the GEMM: the FMA peak loop and the other ops. */
#include "config.h"

#include <immintrin.h>

#include "engine/kernels/x86/x86.h"
#include <math.h>

#include "engine/kernels/x86/vmath_avx512.h"

#define V __m512
#define VW 16
#define MASKN(n) ((__mmask16)((1u << (n)) - 1))
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VLOADN(p, n) _mm512_maskz_loadu_ps(MASKN(n), (p))
#define VSTOREN(p, n, v) _mm512_mask_storeu_ps((p), MASKN(n), (v))
#define VKEEPN(v, n) _mm512_maskz_mov_ps(MASKN(n), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VSUB(a, b) _mm512_sub_ps((a), (b))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMAX(a, b) _mm512_max_ps((a), (b))
#define VHSUM(v) xf_hsum512(v)
#define VHMAX(v) xf_hmax512(v)
#define VEXP(v) xf_exp512(v)
#define VACT(act, v) xf_act512((act), (v))
#define XF_FN(name) name##_avx512
#include "engine/kernels/x86/ops_tmpl.h"

double xf_fma_loop_avx512(int64_t iters, float *sink)
{
    /* distinct starting values, so that the compiler cannot merge the chains */
    __m512 a0 = _mm512_set1_ps(1.0f), a1 = _mm512_set1_ps(1.1f), a2 = _mm512_set1_ps(1.2f), a3 = _mm512_set1_ps(1.3f);
    __m512 a4 = _mm512_set1_ps(1.4f), a5 = _mm512_set1_ps(1.5f), a6 = _mm512_set1_ps(1.6f), a7 = _mm512_set1_ps(1.7f);
    __m512 a8 = _mm512_set1_ps(1.8f), a9 = _mm512_set1_ps(1.9f), a10 = _mm512_set1_ps(2.0f), a11 = _mm512_set1_ps(2.1f);
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
    t->gemm_path = "own-avx512";
    t->linear = xf_linear_avx512;
    fill_ops_avx512(t);
}
