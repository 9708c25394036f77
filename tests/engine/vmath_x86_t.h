/* Test-only entry points to the engine's static-inline vector math (src/engine/kernels/x86/
 * vmath_avx2.h, vmath_avx512.h), each file compiled with its ISA's flags (mk/kernels.am):
 * y[i] = e^x[i] (exp) or the int8 epilogue's polynomial GELU of x[i] (gelu_poly, with the table
 * xf_gelu_poly_table(epi)) for i < n, in vectors of 8 (AVX2) or 16 (AVX-512) lanes with a masked
 * tail.
 * Call only where the CPU has the ISA (engine/cpu.h). Not part of the library. */
#ifndef XF_TESTS_ENGINE_VMATH_X86_T_H
#define XF_TESTS_ENGINE_VMATH_X86_T_H

#include <stddef.h>

void xf_test_exp256(const float *x, float *y, size_t n);
void xf_test_exp512(const float *x, float *y, size_t n);
void xf_test_gelu_poly256(const float *x, float *y, size_t n, int epi);
void xf_test_gelu_poly512(const float *x, float *y, size_t n, int epi);

#endif
