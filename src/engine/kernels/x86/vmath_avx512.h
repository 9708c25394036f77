/* Engine-internal: AVX-512 vector math shared by the avx512 kernel files (static inline, so
 * only files built with the avx512 flags include it): exp and the piecewise-polynomial GELU
 * (gelu_poly.h; erf and tanh forms) of every epilogue, fp32 and int8. Accuracy (checked in
 * tests/engine/test_kernels.c and test_vmath.c): exp within ~2 ulp; GELU within
 * 6e-7·max(1, |x|) of the float64 GELU, bitwise its scalar twin xf_gelu_poly_ref. */
#ifndef XF_ENGINE_KERNELS_X86_VMATH_AVX512_H
#define XF_ENGINE_KERNELS_X86_VMATH_AVX512_H

#include <immintrin.h>

#include "engine/kernels.h"
#include "engine/kernels/gelu_poly.h"

/* e^x: n = round(x·log2 e), r = x - n·ln2 (two-part ln2), e^r by its degree-7 Taylor
 * polynomial (|r| <= 0.35: truncation error < 1e-8 relative), scaled by 2^n with scalef
 * (exact, underflows to 0 and overflows to +inf like expf); NaN stays NaN. */
/* xf_exp512 without its range clamps: the same bits for x in [-104, 88.8]; outside, any value
 * (callers mask those lanes off). */
static inline __m512 xf_exp512_inrange(__m512 x)
{
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 xf_exp512(__m512 x)
{
    /* max/min return their second operand when either is NaN: x last keeps a NaN lane NaN */
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(88.8f), x);
    return xf_exp512_inrange(x);
}

/* The int8 epilogue's piecewise-polynomial GELU (gelu_poly.h), bitwise xf_gelu_poly_ref: c holds
 * the table's six coefficient vectors (xf_gelu_poly_load512; pieces 0-7 in lanes 0-7 and again
 * in 8-15). The piece index is rint(s) read from the low mantissa bits of s + 1.5·2^23. */
static inline void xf_gelu_poly_load512(__m512 *c, const float (*tab)[XF_GELU_POLY_N])
{
    for (int k = 0; k <= XF_GELU_POLY_DEG; k++)
        c[k] = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)tab[k])));
}

static inline __m512 xf_gelu_poly512(__m512 x, const __m512 *c)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    __m512 a = _mm512_abs_ps(x);
    __m512 ac = _mm512_min_ps(_mm512_set1_ps(XF_GELU_POLY_CLAMP), a);   /* NaN stays NaN */
    __m512 s = _mm512_mul_ps(ac, _mm512_set1_ps(XF_GELU_POLY_SCALE));
    __m512 f = _mm512_add_ps(s, magic);
    __m512i i = _mm512_castps_si512(f);
    __m512 t = _mm512_sub_ps(s, _mm512_sub_ps(f, magic));
    __m512 q = _mm512_permutexvar_ps(i, c[XF_GELU_POLY_DEG]);
    for (int k = XF_GELU_POLY_DEG - 1; k >= 0; k--)
        q = _mm512_fmadd_ps(q, t, _mm512_permutexvar_ps(i, c[k]));
    return _mm512_fmadd_ps(a, q, _mm512_mul_ps(x, _mm512_set1_ps(0.5f)));
}

/* act(v) of an epilogue (xf_act_ref) with the GELU table preloaded: gc = the table's vectors
 * (xf_gelu_poly_table; read by the GELU epilogues only). */
static inline __m512 xf_act_tab512(enum xf_epilogue act, __m512 v, const __m512 *gc)
{
    switch (act) {
    case XF_EPI_BIAS_GELU:
    case XF_EPI_BIAS_GELU_TANH:
        return xf_gelu_poly512(v, gc);
    case XF_EPI_BIAS_RELU:
        return _mm512_max_ps(v, _mm512_setzero_ps());
    default:
        return v;
    }
}

/* act(v) for an epilogue value (kernels.h enum xf_epilogue), bitwise xf_act_ref: xf_act_tab512
 * with the GELU table loaded here (callers with many vectors load it once and call that). */
static inline __m512 xf_act512(enum xf_epilogue act, __m512 v)
{
    __m512 c[XF_GELU_POLY_DEG + 1];
    const float (*tab)[XF_GELU_POLY_N] = xf_gelu_poly_table(act);
    if (tab)
        xf_gelu_poly_load512(c, tab);
    return xf_act_tab512(act, v, c);
}

static inline float xf_hsum512(__m512 v)
{
    return _mm512_reduce_add_ps(v);
}

static inline float xf_hmax512(__m512 v)
{
    return _mm512_reduce_max_ps(v);
}

#endif
