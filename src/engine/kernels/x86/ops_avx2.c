/* avx2 kernels besides the GEMM: the FMA peak loop and the other ops. */
#include "config.h"

#include <immintrin.h>

#include "engine/kernels/x86/x86.h"
#include <math.h>

#include "engine/kernels/x86/vmath_avx2.h"

#define V __m256
#define VW 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VLOADN(p, n) _mm256_maskload_ps((p), xf_mask256(n))
#define VSTOREN(p, n, v) _mm256_maskstore_ps((p), xf_mask256(n), (v))
#define VKEEPN(v, n) _mm256_and_ps((v), _mm256_castsi256_ps(xf_mask256(n)))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VHSUM(v) xf_hsum256(v)
#define VHMAX(v) xf_hmax256(v)
#define VEXP(v) xf_exp256(v)
#define VACT(act, v) xf_act256((act), (v))
#define XF_FN(name) name##_avx2
#include "engine/kernels/x86/ops_tmpl.h"

double xf_fma_loop_avx2(int64_t iters, float *sink)
{
    /* distinct starting values, so that the compiler cannot merge the chains */
    __m256 a0 = _mm256_set1_ps(1.0f), a1 = _mm256_set1_ps(1.1f), a2 = _mm256_set1_ps(1.2f), a3 = _mm256_set1_ps(1.3f);
    __m256 a4 = _mm256_set1_ps(1.4f), a5 = _mm256_set1_ps(1.5f), a6 = _mm256_set1_ps(1.6f), a7 = _mm256_set1_ps(1.7f);
    __m256 a8 = _mm256_set1_ps(1.8f), a9 = _mm256_set1_ps(1.9f), a10 = _mm256_set1_ps(2.0f), a11 = _mm256_set1_ps(2.1f);
    const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, m, b);
        a1 = _mm256_fmadd_ps(a1, m, b);
        a2 = _mm256_fmadd_ps(a2, m, b);
        a3 = _mm256_fmadd_ps(a3, m, b);
        a4 = _mm256_fmadd_ps(a4, m, b);
        a5 = _mm256_fmadd_ps(a5, m, b);
        a6 = _mm256_fmadd_ps(a6, m, b);
        a7 = _mm256_fmadd_ps(a7, m, b);
        a8 = _mm256_fmadd_ps(a8, m, b);
        a9 = _mm256_fmadd_ps(a9, m, b);
        a10 = _mm256_fmadd_ps(a10, m, b);
        a11 = _mm256_fmadd_ps(a11, m, b);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    *sink += xf_hsum256(s);
    return 12.0 * 2.0 * 8 * (double)iters;
}

void xf_kernels_fill_avx2(xf_kernels_t *t)
{
    t->gemm_path = "own-avx2";
    t->linear = xf_linear_avx2;
    fill_ops_avx2(t);
}
