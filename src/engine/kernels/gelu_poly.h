/* Engine-internal: the piecewise-polynomial GELU of every epilogue, fp32 (kernels.h) and int8
 * (qgemm.h). It costs an abs, a clamp, the piece index, six table lookups (one vpermps each: 8
 * pieces fit one ymm) and five FMAs, no division: 0.27 of the time of the erfc/exp GELU the fp32
 * kernels used before (~30 vector operations and a division per vector; measured on Zen 5,
 * AVX-512, 64×3072 values in L2), whose 7–8 % of FFN1's time it cut to ~2 %. Its error (below,
 * ≤ 6e-7·max(1, |x|) absolute) is of the order of the fp32 rounding of the K = 768 sums it is
 * applied to, and far below the int8 path's quantisation noise (~1e-2).
 *
 *   GELU(x) = 0.5·x + |x|·q(|x|),  q(a) = 0.5·erf(a/√2)  (tanh GELU: 0.5·tanh(√(2/π)(a + 0.044715a³)))
 *   a_c = min(|x|, XF_GELU_POLY_CLAMP),  s = a_c·XF_GELU_POLY_SCALE,  i = rint(s),  t = s − i
 *   q ≈ c5[i]·t⁵ + … + c0[i] (Horner, fmaf),  result = fmaf(|x|, q, 0.5·x)
 * (q is odd, so x·erf(x/√2) = |x|·erf(|x|/√2) and one table over a ≥ 0 serves both signs; past
 * the clamp, 6, q is 0.5 to within 1e-9.) The tables (gelu_poly.c) come from
 * scripts/gelu_poly_fit.c. Every implementation does these fp32 operations in this order, so
 * the scalar twin xf_gelu_poly_ref and the AVX2/AVX-512 versions are bitwise equal.
 * Error against the float64 GELU (test_qgemm checks it on every 7th float in [−10, 10] and on
 * large/non-finite values): |g − GELU(x)| ≤ 6e-7·max(1, |x|) for erf (measured 4.8e-7), the
 * same for tanh; NaN stays NaN, GELU(+inf) = +inf, GELU(−inf) = NaN (as 0.5·x·erfc(−x/√2)). */
#ifndef XF_ENGINE_KERNELS_GELU_POLY_H
#define XF_ENGINE_KERNELS_GELU_POLY_H

#include "engine/kernels.h"

#define XF_GELU_POLY_DEG 5
#define XF_GELU_POLY_N 8                 /* pieces: one ymm of each coefficient */
#define XF_GELU_POLY_SCALE 1.25f         /* pieces 0.8 wide, centred on 0, 0.8, …, 5.6 */
#define XF_GELU_POLY_CLAMP 5.99999952f   /* the float below 6: s < 7.5, i ≤ 7 */

/* coefficient k of piece i: xf_gelu_poly_erf[k][i] */
extern const float xf_gelu_poly_erf[XF_GELU_POLY_DEG + 1][XF_GELU_POLY_N];
extern const float xf_gelu_poly_tanh[XF_GELU_POLY_DEG + 1][XF_GELU_POLY_N];

/* The table of an epilogue's GELU (XF_EPI_BIAS_GELU or _GELU_TANH), NULL for the others
 * (inline: xf_act512/xf_act256 ask per vector). */
static inline const float (*xf_gelu_poly_table(enum xf_epilogue epi))[XF_GELU_POLY_N]
{
    return epi == XF_EPI_BIAS_GELU        ? xf_gelu_poly_erf
           : epi == XF_EPI_BIAS_GELU_TANH ? xf_gelu_poly_tanh
                                          : NULL;
}

/* The scalar twin (reference) of the vector versions in vmath_avx2.h / vmath_avx512.h. */
float xf_gelu_poly_ref(float x, const float (*c)[XF_GELU_POLY_N]);

#endif
