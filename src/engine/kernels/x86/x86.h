/* Engine-internal: the x86-64 kernels, compiled per file with their ISA flags (mk/kernels.am)
 * and reached only through the tables in kernels.c after run-time detection (cpu.c). */
#ifndef XF_ENGINE_KERNELS_X86_H
#define XF_ENGINE_KERNELS_X86_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels.h"

/* FMA peak loops for cpu.c: `iters` rounds of 12 independent vector FMA chains; return the
 * flops done and add a result to *sink. */
double xf_fma_loop_avx512(int64_t iters, float *sink);
double xf_fma_loop_avx2(int64_t iters, float *sink);

/* Own GEMM kernels (kernels.h linear slot); fall back to cblas when w->packed is NULL
 * (and, for the AVX-512 one, w->packed_bf16). */
void xf_linear_avx512(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                      const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                      int ith, int nth);
size_t xf_linear_lead_avx512(const xf_gemm_w_t *w, int32_t m, int ith, int nth,
                             const void **p);
void xf_linear_avx2(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                    const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                    int ith, int nth);

/* Blocking of the AVX-512 GEMM for this CPU's L2 size in bytes (<= 0: unknown, default).
 * Called once before the table is used. */
void xf_gemm_avx512_setup(long l2_bytes);
/* Blocking of the AVX2 GEMM (MC rows from L2, NC columns from L3; <= 0: unknown, defaults).
 * Called once before the table is used. */
void xf_gemm_avx2_setup(long l2_bytes, long l3_bytes);

/* Fill the slots this ISA implements (the rest stay as given). */
void xf_kernels_fill_avx2(xf_kernels_t *t);
void xf_kernels_fill_avx512(xf_kernels_t *t);

#endif
