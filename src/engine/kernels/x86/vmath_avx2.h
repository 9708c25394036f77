/* Engine-internal: AVX2+FMA vector math shared by the avx2 kernel files (static inline, only
 * for files built with the avx2 flags): exp and the polynomial GELU — the same formulas as
 * vmath_avx512.h, with the 2^n scaling done on the exponent bits. */
#ifndef XF_ENGINE_KERNELS_X86_VMATH_AVX2_H
#define XF_ENGINE_KERNELS_X86_VMATH_AVX2_H

#include <immintrin.h>
#include <math.h>

#include "engine/kernels.h"
#include "engine/kernels/gelu_poly.h"

/* The core of e^x shared by xf_exp256 and the softmax's exp (fam_t_avx2.c): n = rint(x·log2 e)
 * into *n, and e^r for r = x − n·ln 2 (two-step Cody-Waite reduction, degree-7 Taylor
 * polynomial in Horner form); e^x = e^r·2^n, the scaling left to the caller. */
static inline __m256 xf_exp_core256(__m256 x, __m256 *n_out)
{
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    *n_out = n;
    return p;
}

/* e^x: as xf_exp512; 2^n built from exponent bits with n clamped to [-126, 128], 0 where
 * x < -87.3 (below the normal range; expf gives a denormal or 0 there) and +inf where
 * x > 88.72 (expf overflows there too); NaN stays NaN. */
static inline __m256 xf_exp256(__m256 x)
{
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);   /* false for NaN */
    __m256 huge = _mm256_cmp_ps(x, _mm256_set1_ps(88.72f), _CMP_GT_OQ);
    /* max/min return their second operand when either is NaN: x last keeps a NaN lane NaN */
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);
    x = _mm256_min_ps(_mm256_set1_ps(88.72f), x);
    __m256 n, p = xf_exp_core256(x, &n);
    /* n in [-126, 128]: split 2^n = 2^(n/2)·2^(n - n/2) so that n = 128 stays finite-safe */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_blendv_ps(_mm256_andnot_ps(tiny, y), _mm256_set1_ps(INFINITY), huge);
}

static inline float xf_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline float xf_hmax256(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* Lane mask for the first n (0..8) lanes, for maskload/maskstore. */
static inline __m256i xf_mask256(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* In-register 8×8 transpose: r[i] lane j -> r[j] lane i (unpack, shuffle, 128-bit permute). */
static inline void xf_tr8x8_256(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* The int8 epilogue's piecewise-polynomial GELU (gelu_poly.h), bitwise xf_gelu_poly_ref: c holds
 * the table's six coefficient vectors (xf_gelu_poly_load256); the piece index is rint(s) read
 * from the low mantissa bits of s + 1.5·2^23 (vpermps uses the low 3 bits). */
static inline void xf_gelu_poly_load256(__m256 *c, const float (*tab)[XF_GELU_POLY_N])
{
    for (int k = 0; k <= XF_GELU_POLY_DEG; k++)
        c[k] = _mm256_loadu_ps(tab[k]);
}

static inline __m256 xf_gelu_poly256(__m256 x, const __m256 *c)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    __m256 ac = _mm256_min_ps(_mm256_set1_ps(XF_GELU_POLY_CLAMP), a);   /* NaN stays NaN */
    __m256 s = _mm256_mul_ps(ac, _mm256_set1_ps(XF_GELU_POLY_SCALE));
    __m256 f = _mm256_add_ps(s, magic);
    __m256i i = _mm256_castps_si256(f);
    __m256 t = _mm256_sub_ps(s, _mm256_sub_ps(f, magic));
    __m256 q = _mm256_permutevar8x32_ps(c[XF_GELU_POLY_DEG], i);
    for (int k = XF_GELU_POLY_DEG - 1; k >= 0; k--)
        q = _mm256_fmadd_ps(q, t, _mm256_permutevar8x32_ps(c[k], i));
    return _mm256_fmadd_ps(a, q, _mm256_mul_ps(x, _mm256_set1_ps(0.5f)));
}

/* act(v) of an epilogue (xf_act_ref) with the GELU table preloaded: gc = the table's vectors
 * (xf_gelu_poly_table; read by the GELU epilogues only). */
static inline __m256 xf_act_tab256(enum xf_epilogue act, __m256 v, const __m256 *gc)
{
    switch (act) {
    case XF_EPI_BIAS_GELU:
    case XF_EPI_BIAS_GELU_TANH:
        return xf_gelu_poly256(v, gc);
    case XF_EPI_BIAS_RELU:
        return _mm256_max_ps(v, _mm256_setzero_ps());
    default:
        return v;
    }
}

/* act(v) for an epilogue value, bitwise xf_act_ref (as xf_act512). */
static inline __m256 xf_act256(enum xf_epilogue act, __m256 v)
{
    __m256 c[XF_GELU_POLY_DEG + 1];
    const float (*tab)[XF_GELU_POLY_N] = xf_gelu_poly_table(act);
    if (tab)
        xf_gelu_poly_load256(c, tab);
    return xf_act_tab256(act, v, c);
}

#endif
