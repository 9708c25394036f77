/* AVX2 int8 Linear (qgemm.h). Without VNNI the u8 × s8 product goes through vpmaddubsw, which
 * adds PAIRS of products into s16 with saturation: 2·255·127 = 64770 > 32767 with the +128
 * activations. Instead of 7-bit weights ("reduce_range") this path moves the sign: with
 * x^q ∈ [−127, 127] (x^u XOR 0x80) it multiplies |x^q| (u8 ≤ 127) by sign(x^q)·W^q (vpsignb,
 * s8 ∈ [−127, 127]): a pair is at most 2·127·127 = 32258 < 32767, so the sum is exact with the
 * same 8-bit weights as every other path ("avx2": bit-exact integers across ISAs). Cost: one
 * vpsignb per (row, vector) and an XOR + vpabsb per broadcast on top of vpmaddubsw + vpmaddwd
 * (×1) + vpaddd. The other way ("avx2-w7"): 7-bit weights [−63, 63] and x^u = x^q + 128 fed
 * as is (2·255·63 = 32130), compensated by the column sums like VNNI. Measured (bench_qgemm,
 * Zen 5 capped to AVX2, 1 thread, two runs): "avx2" 0.37-0.53 and "avx2-w7" 0.45-0.69 of the
 * vpmaddubsw peak per CPU-second, so avx2-w7 is the AVX2 default (qgemm.c says why that
 * accuracy cost is acceptable). Micro-kernel: MR=4 rows × 16 channels (one panel, two ymm), full
 * K per tile. Also the AVX2 quantiser and the vpmaddubsw peak loop. AVX2 flags only. */
#include "config.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine/kernels/qgemm.h"
#include "engine/kernels/x86/vmath_avx2.h"

#define MR 4
#define NR 16

#define XF_INLINE static inline __attribute__((always_inline))

static inline float hmax8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

void xf_quant_rows_avx2(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                        uint8_t *xq, int32_t ldq, float *alpha)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 fmax = _mm256_set1_ps(FLT_MAX);
    for (int32_t t = r0; t < r1; t++) {
        const float *xt = x + (size_t)t * (size_t)ldx;
        uint8_t *qt = xq + (size_t)t * (size_t)ldq;
        __m256 vmax = _mm256_setzero_ps(), vbad = _mm256_setzero_ps();
        int32_t i = 0;
        for (; i + 8 <= k; i += 8) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(xt + i), absmask);
            vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));
            vmax = _mm256_max_ps(vmax, a);
        }
        float amax = hmax8(vmax);
        int bad = _mm256_movemask_ps(vbad) != 0;
        for (; i < k; i++) {
            float a = fabsf(xt[i]);
            if (!(a <= FLT_MAX))
                bad = 1;
            else if (a > amax)
                amax = a;
        }
        memset(qt + k, 128, (size_t)(ldq - k));
        if (bad || amax == 0.0f) {
            memset(qt, 128, (size_t)k);
            alpha[t] = bad ? NAN : 0.0f;
            continue;
        }
        alpha[t] = amax / 127.0f;
        float inv_s = 127.0f / amax;
        const __m256 inv = _mm256_set1_ps(inv_s);
        const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
        const __m256i off = _mm256_set1_epi32(128);
        const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
                                              -1, -1, -1, -1, -1, -1);
        for (i = 0; i + 8 <= k; i += 8) {
            __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xt + i), inv));
            q = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(q, lo), hi), off);
            q = _mm256_shuffle_epi8(q, pick);   /* low byte of each lane, per 128-bit half */
            uint32_t w0 = (uint32_t)_mm256_extract_epi32(q, 0);
            uint32_t w1 = (uint32_t)_mm256_extract_epi32(q, 4);
            memcpy(qt + i, &w0, 4);
            memcpy(qt + i + 4, &w1, 4);
        }
        for (; i < k; i++) {
            float v = rintf(xt[i] * inv_s);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            qt[i] = (uint8_t)((int)v + 128);
        }
    }
}

/* rows × ncol (≤ 16) of y from the s32 sums cb[mr][cbs] (16 used per row): (float)acc ·
 * (α_t·σ_o) (+ b_o, activation). Out of line, so that the micro-kernel's accumulators are never
 * indexed at run time (they would be kept in memory). Full rows are stored with plain stores
 * (vmaskmovps stores are slow on AMD). */
static void epilogue(const int32_t *cb, int cbs, int mr, int ncol, const float *alpha,
                     const float *sigma, const int32_t *colsum, const float *bias,
                     enum xf_epilogue epi, float *c, size_t ldc)
{
    /* the w7 path summed x^u = x^q + 128: take 128·c_o back out (colsum NULL: signed path) */
    __m256i comp0 = _mm256_setzero_si256(), comp1 = _mm256_setzero_si256();
    if (colsum) {
        comp0 = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)colsum), 7);
        comp1 = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(colsum + 8)), 7);
    }
    const __m256i m0 = xf_mask256(ncol), m1 = xf_mask256(ncol - 8);
    const __m256 sg0 = _mm256_loadu_ps(sigma), sg1 = _mm256_loadu_ps(sigma + 8);
    __m256 bb0 = _mm256_setzero_ps(), bb1 = _mm256_setzero_ps();
    __m256 gc[XF_GELU_POLY_DEG + 1];
    const float (*gtab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
    if (gtab)
        xf_gelu_poly_load256(gc, gtab);
    if (epi != XF_EPI_NONE) {
        bb0 = _mm256_maskload_ps(bias, m0);
        bb1 = _mm256_maskload_ps(bias + 8, m1);
    }
    for (int i = 0; i < mr; i++) {
        __m256 al = _mm256_set1_ps(alpha[i]);
        const int32_t *ci = cb + (size_t)cbs * (size_t)i;
        __m256i a0 = _mm256_sub_epi32(_mm256_load_si256((const __m256i *)ci), comp0);
        __m256i a1 = _mm256_sub_epi32(_mm256_load_si256((const __m256i *)(ci + 8)), comp1);
        __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(a0), _mm256_mul_ps(al, sg0));
        __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(a1), _mm256_mul_ps(al, sg1));
        if (epi != XF_EPI_NONE) {
            v0 = xf_act_tab256(epi, _mm256_add_ps(v0, bb0), gc);
            v1 = xf_act_tab256(epi, _mm256_add_ps(v1, bb1), gc);
        }
        if (ncol >= 16) {
            _mm256_storeu_ps(c + (size_t)i * ldc, v0);
            _mm256_storeu_ps(c + (size_t)i * ldc + 8, v1);
        } else {
            _mm256_maskstore_ps(c + (size_t)i * ldc, m0, v0);
            _mm256_maskstore_ps(c + (size_t)i * ldc + 8, m1, v1);
        }
    }
}

/* The tile [mr][16] at c (ncol columns stored): full K, then the epilogue. */
XF_INLINE void ukr(const int mr, int kg, const uint8_t *a, size_t ldq, const int8_t *b,
                   float *c, size_t ldc, int ncol, const float *alpha, const float *sigma,
                   const float *bias, enum xf_epilogue epi)
{
    __m256i acc[MR][2];
    int32_t cb[MR * 16] __attribute__((aligned(32)));
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (int g = 0; g < kg; g++) {
        __m256i b0 = _mm256_load_si256((const __m256i *)(b + 64 * (size_t)g));
        __m256i b1 = _mm256_load_si256((const __m256i *)(b + 64 * (size_t)g + 32));
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            int32_t a4;
            memcpy(&a4, a + (size_t)i * ldq + 4 * (size_t)g, 4);
            __m256i xs = _mm256_xor_si256(_mm256_set1_epi32(a4), flip);   /* x^q, s8 */
            __m256i ax = _mm256_abs_epi8(xs);
            __m256i p0 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(b0, xs));
            __m256i p1 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(b1, xs));
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p0, ones));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p1, ones));
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        _mm256_store_si256((__m256i *)(cb + 16 * i), acc[i][0]);
        _mm256_store_si256((__m256i *)(cb + 16 * i + 8), acc[i][1]);
    }
    epilogue(cb, 16, mr, ncol, alpha, sigma, NULL, bias, epi, c, ldc);
}

/* The 7-bit weight variant ("avx2-w7", W^q ∈ [−63, 63]): x^u ∈ [1, 255] straight into
 * vpmaddubsw (2·255·63 = 32130 < 32767), no vpsignb/abs/XOR; the epilogue subtracts 128·c_o. */
XF_INLINE void ukr_w7(const int mr, int kg, const uint8_t *a, size_t ldq, const int8_t *b,
                      float *c, size_t ldc, int ncol, const float *alpha, const float *sigma,
                      const int32_t *colsum, const float *bias, enum xf_epilogue epi)
{
    __m256i acc[MR][2];
    int32_t cb[MR * 16] __attribute__((aligned(32)));
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (int g = 0; g < kg; g++) {
        __m256i b0 = _mm256_load_si256((const __m256i *)(b + 64 * (size_t)g));
        __m256i b1 = _mm256_load_si256((const __m256i *)(b + 64 * (size_t)g + 32));
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            int32_t a4;
            memcpy(&a4, a + (size_t)i * ldq + 4 * (size_t)g, 4);
            __m256i xu = _mm256_set1_epi32(a4);
            __m256i p0 = _mm256_maddubs_epi16(xu, b0);
            __m256i p1 = _mm256_maddubs_epi16(xu, b1);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p0, ones));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p1, ones));
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        _mm256_store_si256((__m256i *)(cb + 16 * i), acc[i][0]);
        _mm256_store_si256((__m256i *)(cb + 16 * i + 8), acc[i][1]);
    }
    epilogue(cb, 16, mr, ncol, alpha, sigma, colsum, bias, epi, c, ldc);
}

typedef void (*ukr_fn)(int kg, const uint8_t *a, size_t ldq, const int8_t *b, float *c,
                       size_t ldc, int ncol, const float *alpha, const float *sigma,
                       const int32_t *colsum, const float *bias, enum xf_epilogue epi);

#define UKR(mr)                                                                              \
    static void ukr_##mr(int kg, const uint8_t *a, size_t ldq, const int8_t *b, float *c,     \
                         size_t ldc, int ncol, const float *alpha, const float *sigma,       \
                         const int32_t *colsum, const float *bias, enum xf_epilogue epi)     \
    {                                                                                        \
        (void)colsum;                                                                        \
        ukr(mr, kg, a, ldq, b, c, ldc, ncol, alpha, sigma, bias, epi);                       \
    }                                                                                        \
    static void ukr7_##mr(int kg, const uint8_t *a, size_t ldq, const int8_t *b, float *c,    \
                          size_t ldc, int ncol, const float *alpha, const float *sigma,      \
                          const int32_t *colsum, const float *bias, enum xf_epilogue epi)    \
    {                                                                                        \
        ukr_w7(mr, kg, a, ldq, b, c, ldc, ncol, alpha, sigma, colsum, bias, epi);            \
    }
UKR(1) UKR(2) UKR(3) UKR(4)

static const ukr_fn ukrs[MR] = { ukr_1, ukr_2, ukr_3, ukr_4 };
static const ukr_fn ukrs7[MR] = { ukr7_1, ukr7_2, ukr7_3, ukr7_4 };

/* ---- avx2-s16: lane-bounded 8-bit weights, two k-steps summed in s16 ---- */

#ifndef S16_MR
#define S16_MR 4   /* rows */
#endif
#ifndef S16_NP
#define S16_NP 1   /* 16-channel panels (two ymm each) */
#endif
#define S16_NV (2 * S16_NP)

/* The tile [mr][np·16] from rows a (ldq apart) and np panels at b (bstride apart), full K (kg
 * groups of 4, kg even: k_pad is a multiple of 64), then the epilogue per panel. Per row and
 * pair of groups g, g+1: x^u of each group broadcast; per 8 channels
 *   s = vpmaddubsw(x_g, W_g) + vpmaddubsw(x_g+1, W_g+1)  (s16, wrapping add)
 *   acc += vpmaddwd(s, 1)
 * Each s16 lane of s is Σ x^u·W^q over the four k of one lane (qgemm.h): with x^u ≤ 255 and
 * the lane's Σ|W^q| ≤ 128, |s| ≤ 32640 — no vpmaddubsw pair saturates and the add does not
 * wrap, so acc is the exact sum (the kernel is only used on weights with lane_max ≤ 128). */
XF_INLINE void ukr_s16(const int mr, const int np, int kg, const uint8_t *a, size_t ldq,
                       const int8_t *b, size_t bstride, float *c, size_t ldc, int ncol,
                       const float *alpha, const float *sigma, const int32_t *colsum,
                       const float *bias, enum xf_epilogue epi)
{
    __m256i acc[S16_MR][S16_NV];
    int32_t cb[S16_MR * 16 * S16_NP] __attribute__((aligned(32)));
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 2 * np; v++)
            acc[i][v] = _mm256_setzero_si256();
    for (int g = 0; g < kg; g += 2) {
        __m256i b0[S16_NV], b1[S16_NV];
#pragma GCC unroll 4
        for (int v = 0; v < 2 * np; v++) {
            const int8_t *bp = b + (size_t)(v / 2) * bstride + 64 * (size_t)g + 32 * (size_t)(v % 2);
            b0[v] = _mm256_load_si256((const __m256i *)bp);
            b1[v] = _mm256_load_si256((const __m256i *)(bp + 64));
        }
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            int32_t a0, a1;
            memcpy(&a0, a + (size_t)i * ldq + 4 * (size_t)g, 4);
            memcpy(&a1, a + (size_t)i * ldq + 4 * (size_t)g + 4, 4);
            __m256i x0 = _mm256_set1_epi32(a0), x1 = _mm256_set1_epi32(a1);
#pragma GCC unroll 4
            for (int v = 0; v < 2 * np; v++) {
                __m256i sv = _mm256_add_epi16(_mm256_maddubs_epi16(x0, b0[v]),
                                              _mm256_maddubs_epi16(x1, b1[v]));
                acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(sv, ones));
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 2 * np; v++)
            _mm256_store_si256((__m256i *)(cb + (16 * S16_NP) * i + 8 * v), acc[i][v]);
    for (int p = 0; p < np && 16 * p < ncol; p++)
        epilogue(cb + 16 * p, 16 * S16_NP, mr, ncol - 16 * p, alpha, sigma + 16 * p,
                 colsum + 16 * p, bias ? bias + 16 * p : NULL, epi, c + 16 * p, ldc);
}

typedef void (*ukr16_fn)(int kg, const uint8_t *a, size_t ldq, const int8_t *b, size_t bstride,
                         float *c, size_t ldc, int ncol, const float *alpha,
                         const float *sigma, const int32_t *colsum, const float *bias,
                         enum xf_epilogue epi);

#define UKR16(mr, np)                                                                        \
    static void ukr16_##mr##_##np(int kg, const uint8_t *a, size_t ldq, const int8_t *b,     \
                                  size_t bstride, float *c, size_t ldc, int ncol,            \
                                  const float *alpha, const float *sigma,                    \
                                  const int32_t *colsum, const float *bias,                  \
                                  enum xf_epilogue epi)                                      \
    {                                                                                        \
        ukr_s16(mr, np, kg, a, ldq, b, bstride, c, ldc, ncol, alpha, sigma, colsum, bias,    \
                epi);                                                                        \
    }
#if S16_NP == 1
#define UKR16_NP(mr) UKR16(mr, 1)
#define UKR16_ROW(mr) { ukr16_##mr##_1 }
#else
#define UKR16_NP(mr) UKR16(mr, 1) UKR16(mr, 2)
#define UKR16_ROW(mr) { ukr16_##mr##_1, ukr16_##mr##_2 }
#endif
UKR16_NP(1) UKR16_NP(2) UKR16_NP(3)
#if S16_MR >= 4
UKR16_NP(4)
#endif
#if S16_MR >= 5
UKR16_NP(5)
#endif
#if S16_MR >= 6
UKR16_NP(6)
#endif

static const ukr16_fn ukrs16[S16_MR][S16_NP] = {
    UKR16_ROW(1), UKR16_ROW(2), UKR16_ROW(3),
#if S16_MR >= 4
    UKR16_ROW(4),
#endif
#if S16_MR >= 5
    UKR16_ROW(5),
#endif
#if S16_MR >= 6
    UKR16_ROW(6),
#endif
};

static void s16_tile(const void *ctx, const xf_qgemm_w_t *w, int rows, int32_t jr, int ncol,
                     const uint8_t *xq, size_t ldq, const float *alpha, const float *bias,
                     enum xf_epilogue epi, float *y, size_t ldy,
                     int first)
{
    (void)first;
    (void)ctx;
    const size_t bstride = (size_t)w->k_pad * 16;
    ukrs16[rows - 1][(ncol + 15) / 16 - 1](w->k_pad / 4, xq, ldq,
                                           w->wq + (size_t)(jr / 16) * bstride, bstride, y, ldy,
                                           ncol, alpha, w->sigma + jr, w->colsum + jr, bias,
                                           epi);
}

/* Needs lane-bounded weights (0 < w->lane_max <= 128): the s16 lane sums must stay below 32767. */
void xf_qlinear_avx2_s16(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                         const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                         int32_t ldy, int ith, int nth)
{
    if (w->lane_max <= 0 || w->lane_max > 128) {   /* would wrap: the exact path instead */
        xf_qlinear_avx2(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth);
        return;
    }
    xf_qgemm_drive(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth, S16_MR, 16 * S16_NP,
                   s16_tile, NULL, NULL, NULL);
}

void xf_qlinear_quant_avx2_s16(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq,
                               int32_t ldq, const float *alpha, const float *bias,
                               enum xf_epilogue epi, float *y, int32_t ldy, const xf_qout_t *qo,
                               int ith, int nth)
{
    if (w->lane_max <= 0 || w->lane_max > 128) {
        xf_qlinear_quant_avx2(w, m, xq, ldq, alpha, bias, epi, y, ldy, qo, ith, nth);
        return;
    }
    xf_qgemm_drive(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth, S16_MR, 16 * S16_NP,
                   s16_tile, NULL, qo, xf_quant_rows_avx2);
}

/* One tile for xf_qgemm_drive: rows × ncol (up to MR × 16) at column jr; ctx is the
 * micro-kernel table (sign trick or 7-bit). */
static void avx2_tile(const void *ctx, const xf_qgemm_w_t *w, int rows, int32_t jr, int ncol,
                      const uint8_t *xq, size_t ldq, const float *alpha, const float *bias,
                      enum xf_epilogue epi, float *y, size_t ldy,
                      int first)
{
    (void)first;
    const ukr_fn *uk = ctx;
    uk[rows - 1](w->k_pad / 4, xq, ldq, w->wq + (size_t)(jr / 16) * (size_t)w->k_pad * 16, y, ldy,
                 ncol, alpha, w->sigma + jr, w->colsum + jr, bias, epi);
}

static void qlinear(const ukr_fn *uk, const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq,
                    int32_t ldq, const float *alpha, const float *bias, enum xf_epilogue epi,
                    float *y, int32_t ldy, const xf_qout_t *qo, int ith, int nth)
{
    xf_qgemm_drive(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth, MR, NR, avx2_tile, uk,
                   qo, xf_quant_rows_avx2);
}

void xf_qlinear_avx2(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                     const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                     int32_t ldy, int ith, int nth)
{
    qlinear(ukrs, w, m, xq, ldq, alpha, bias, epi, y, ldy, NULL, ith, nth);
}

void xf_qlinear_quant_avx2(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                           const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                           int32_t ldy, const xf_qout_t *qo, int ith, int nth)
{
    qlinear(ukrs, w, m, xq, ldq, alpha, bias, epi, y, ldy, qo, ith, nth);
}

/* Needs 7-bit weights (w->wmax <= 63): x^u·W^q pairs must stay below 32767; 8-bit weights
 * would saturate: the exact path instead. */
void xf_qlinear_avx2_w7(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                        const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                        int32_t ldy, int ith, int nth)
{
    qlinear(w->wmax > 63 ? ukrs : ukrs7, w, m, xq, ldq, alpha, bias, epi, y, ldy, NULL, ith, nth);
}

void xf_qlinear_quant_avx2_w7(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq,
                              int32_t ldq, const float *alpha, const float *bias,
                              enum xf_epilogue epi, float *y, int32_t ldy, const xf_qout_t *qo,
                              int ith, int nth)
{
    qlinear(w->wmax > 63 ? ukrs : ukrs7, w, m, xq, ldq, alpha, bias, epi, y, ldy, qo, ith, nth);
}

/* 4 independent vpmaddubsw → vpmaddwd → vpaddd chains (distinct weights per chain): 4 × 32
 * multiply-adds per round. The asm barrier makes `a` opaque each round, so the compiler cannot
 * hoist the loop-invariant products; only vpaddd is on a chain (latency 1). */
double xf_qpeak_loop_avx2(int64_t iters, int32_t *sink)
{
    __m256i acc[4], b[4];
    __m256i a = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int j = 0; j < 4; j++) {
        acc[j] = _mm256_set1_epi32(j);
        b[j] = _mm256_set1_epi8((char)(j - 2));
    }
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("" : "+x"(a));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_add_epi32(acc[j],
                                      _mm256_madd_epi16(_mm256_maddubs_epi16(a, b[j]), ones));
    }
    __m256i s = _mm256_xor_si256(_mm256_xor_si256(acc[0], acc[1]),
                                 _mm256_xor_si256(acc[2], acc[3]));
    *sink ^= _mm256_extract_epi32(s, 0) & 0x7fffffff;
    return 4.0 * 32.0 * 2.0 * (double)iters;
}
