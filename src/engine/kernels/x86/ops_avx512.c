/* avx512 kernels besides the GEMM: the element-wise and row ops of ops_tmpl.h instantiated for
 * 16-lane vectors, the FMA peak loop, and the table fill for this ISA. */
#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <unistd.h>

#include "engine/kernels/x86/vmath_avx512.h"
#include "engine/kernels/x86/x86.h"

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
    return fma_loop_avx512(iters, sink);
}

void xf_kernels_fill_avx512(xf_kernels_t *t)
{
    xf_gemm_avx512_setup(sysconf(_SC_LEVEL2_CACHE_SIZE));
    t->gemm_path = "own-avx512";
    t->packs_w = 1;
    t->w_group = 48;
    t->nth_exact = 1;
    t->bf16_w = 1;
    t->linear = xf_linear_avx512;
    t->linear_lead = xf_linear_lead_avx512;
    fill_ops_avx512(t);
}
