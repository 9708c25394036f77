/* avx2 kernels besides the GEMM: the element-wise and row ops of ops_tmpl.h instantiated for
 * 8-lane vectors, the FMA peak loop, and the table fill for this ISA. */
#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <unistd.h>

#include "engine/kernels/x86/vmath_avx2.h"
#include "engine/kernels/x86/x86.h"

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
    return fma_loop_avx2(iters, sink);
}

void xf_kernels_fill_avx2(xf_kernels_t *t)
{
    xf_gemm_avx2_setup(sysconf(_SC_LEVEL2_CACHE_SIZE), sysconf(_SC_LEVEL3_CACHE_SIZE));
    t->gemm_path = "own-avx2";
    t->packs_w = 1;
    t->w_group = 16;
    t->nth_exact = 1;
    t->linear = xf_linear_avx2;
    fill_ops_avx2(t);
}
