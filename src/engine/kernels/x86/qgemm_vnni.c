/* AVX-512 VNNI int8 Linear (qgemm.h): vpdpbusd multiplies u8 × s8 and sums 4 products into
 * each s32 lane without saturation, so activations go in as x^u = x^q + 128 and the column sums
 * take the 128 back out: acc = Σ x^u·W^q − 128·c_o (ATTENTION.md §24). Micro-kernel: MR=8 rows
 * × 48 channels (3 panels; 24 zmm accumulators), A broadcast 4 bytes at a time straight from the
 * quantised rows, full K per tile (s32 accumulators never leave the registers); the weights
 * packed in runs of 3 panels (wgroup 3, up to K = XF_QGEMM_GROUP_KMAX), so that a tile reads
 * them as one sequential stream of 192 bytes per k-group; the tile loops
 * are qgemm.c's xf_qgemm_drive (shared with AVX2). Also the AVX-512 per-row
 * quantiser and the vpdpbusd peak loop. Compiled with the AVX-512 + VNNI flags only. */
#include "config.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine/kernels/qgemm.h"
#include "engine/kernels/x86/vmath_avx512.h"

#define MR 8
#define NV 3
#define NR (16 * NV)

#define XF_INLINE static inline __attribute__((always_inline))

/* How far ahead of its loads the first row tile of a column tile prefetches the weights (runs
 * of 3 panels only: one stream). The later row tiles find the tile in L1. Measured (Zen 5, one
 * thread, 64 rows, weights from L3 or memory, the same layout with and without, bench/results/
 * qgemm_zen5.txt q8pack): 2–9 % faster at K = 768 for 1–6 KB; with one-panel runs (K = 3072,
 * three streams) 2–5 % slower, so not there. */
#define PF_BYTES 4096

void xf_quant_rows_avx512(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                          uint8_t *xq, int32_t ldq, float *alpha)
{
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 fmax = _mm512_set1_ps(FLT_MAX);
    for (int32_t t = r0; t < r1; t++) {
        const float *xt = x + (size_t)t * (size_t)ldx;
        uint8_t *qt = xq + (size_t)t * (size_t)ldq;
        __m512 vmax = _mm512_setzero_ps();
        __mmask16 bad = 0;
        int32_t i = 0;
        for (; i < k; i += 16) {
            __mmask16 m = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
            __m512 a = _mm512_and_ps(_mm512_maskz_loadu_ps(m, xt + i), absmask);
            bad |= _mm512_cmp_ps_mask(a, fmax, _CMP_NLE_UQ);   /* NaN or > FLT_MAX */
            vmax = _mm512_max_ps(vmax, a);
        }
        float amax = _mm512_reduce_max_ps(vmax);
        memset(qt + k, 128, (size_t)(ldq - k));
        if (bad || amax == 0.0f) {
            memset(qt, 128, (size_t)k);
            alpha[t] = bad ? NAN : 0.0f;
            continue;
        }
        alpha[t] = amax / 127.0f;
        const __m512 inv = _mm512_set1_ps(127.0f / amax);
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        const __m512i off = _mm512_set1_epi32(128);
        for (i = 0; i < k; i += 16) {
            __mmask16 m = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, xt + i), inv));
            q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
            _mm_mask_storeu_epi8(qt + i, m, _mm512_cvtepi32_epi8(q));
        }
    }
}

/* rows × nv·16 of y from the s32 sums cb[MR][NR] (masks per vector):
 * (acc − 128·c_o)·(α_t·σ_o) (+ b_o, activation). Out of line: the micro-kernel's accumulators
 * stay in registers only if nothing indexes them with a run-time index. */
static void epilogue(const int32_t *cb, int mr, int nv, const __mmask16 *msk, const float *alpha,
                     const float *sigma, const int32_t *colsum, const float *bias,
                     enum xf_epilogue epi, float *c, size_t ldc)
{
    __m512 gc[XF_GELU_POLY_DEG + 1];
    const float (*gtab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
    if (gtab)
        xf_gelu_poly_load512(gc, gtab);
    for (int j = 0; j < nv; j++) {
        __m512i comp = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(colsum + 16 * j)), 7);
        __m512 sg = _mm512_loadu_ps(sigma + 16 * j);
        __m512 bb = epi != XF_EPI_NONE ? _mm512_maskz_loadu_ps(msk[j], bias + 16 * j)
                                       : _mm512_setzero_ps();
        for (int i = 0; i < mr; i++) {
            __m512i acc = _mm512_load_si512((const void *)(cb + i * NR + 16 * j));
            __m512 s = _mm512_mul_ps(_mm512_set1_ps(alpha[i]), sg);
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, comp)), s);
            if (epi != XF_EPI_NONE)
                v = xf_act_tab512(epi, _mm512_add_ps(v, bb), gc);
            _mm512_mask_storeu_ps(c + (size_t)i * ldc + 16 * j, msk[j], v);
        }
    }
}

/* The tile [mr][nv·16] at c from rows a (ldq apart) and nv panels at b (bstride apart; the
 * next k-group gstride further), full K (kg groups of 4), then the epilogue. pf: prefetch
 * each panel's stream PF_BYTES ahead (prefetches never fault, past the end included). */
XF_INLINE void ukr(const int mr, const int nv, const int pf, int kg, const uint8_t *a,
                   size_t ldq, const int8_t *b, size_t bstride, size_t gstride, float *c,
                   size_t ldc, const __mmask16 *msk, const float *alpha, const float *sigma,
                   const int32_t *colsum, const float *bias, enum xf_epilogue epi)
{
    __m512i acc[MR][NV];
    int32_t cb[MR * NR] __attribute__((aligned(64)));
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            acc[i][j] = _mm512_setzero_si512();
    for (int g = 0; g < kg; g++) {
        __m512i bv[NV];
        if (pf) {
#pragma GCC unroll 3
            for (int j = 0; j < nv; j++)
                _mm_prefetch((const char *)(b + (size_t)j * bstride + PF_BYTES), _MM_HINT_T0);
        }
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            bv[j] = _mm512_load_si512((const void *)(b + (size_t)j * bstride));
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            int32_t a4;
            memcpy(&a4, a + (size_t)i * ldq + 4 * (size_t)g, 4);
            __m512i av = _mm512_set1_epi32(a4);
#pragma GCC unroll 3
            for (int j = 0; j < nv; j++)
                acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, bv[j]);
        }
        b += gstride;
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            _mm512_store_si512((void *)(cb + i * NR + 16 * j), acc[i][j]);
    epilogue(cb, mr, nv, msk, alpha, sigma, colsum, bias, epi, c, ldc);
}

typedef void (*ukr_fn)(int kg, const uint8_t *a, size_t ldq, const int8_t *b, size_t bstride,
                       size_t gstride, float *c, size_t ldc, const __mmask16 *msk,
                       const float *alpha, const float *sigma, const int32_t *colsum,
                       const float *bias, enum xf_epilogue epi);

#define UKR(mr, nv, pf, sfx)                                                                 \
    static void ukr_##mr##_##nv##sfx(int kg, const uint8_t *a, size_t ldq, const int8_t *b,  \
                                     size_t bstride, size_t gstride, float *c, size_t ldc,   \
                                     const __mmask16 *msk, const float *alpha,               \
                                     const float *sigma, const int32_t *colsum,              \
                                     const float *bias, enum xf_epilogue epi)                \
    {                                                                                        \
        ukr(mr, nv, pf, kg, a, ldq, b, bstride, gstride, c, ldc, msk, alpha, sigma, colsum,  \
            bias, epi);                                                                      \
    }
#define UKR_NV(mr)                                                                           \
    UKR(mr, 1, 0, ) UKR(mr, 2, 0, ) UKR(mr, 3, 0, ) UKR(mr, 1, 1, _pf) UKR(mr, 2, 1, _pf)     \
    UKR(mr, 3, 1, _pf)
UKR_NV(1) UKR_NV(2) UKR_NV(3) UKR_NV(4) UKR_NV(5) UKR_NV(6) UKR_NV(7) UKR_NV(8)

#define UKR_ROW(mr, sfx) { ukr_##mr##_1##sfx, ukr_##mr##_2##sfx, ukr_##mr##_3##sfx }
static const ukr_fn ukrs[2][MR][NV] = {
    { UKR_ROW(1, ), UKR_ROW(2, ), UKR_ROW(3, ), UKR_ROW(4, ), UKR_ROW(5, ), UKR_ROW(6, ),
      UKR_ROW(7, ), UKR_ROW(8, ) },
    { UKR_ROW(1, _pf), UKR_ROW(2, _pf), UKR_ROW(3, _pf), UKR_ROW(4, _pf), UKR_ROW(5, _pf),
      UKR_ROW(6, _pf), UKR_ROW(7, _pf), UKR_ROW(8, _pf) },
};

/* One tile for xf_qgemm_drive: rows × ncol (up to MR × NR) at column jr. The drive starts tiles
 * at multiples of NR, so with runs of 3 panels (the table's wgroup, qgemm.h) a tile's panels
 * are one run: 64 bytes apart, the next k-group 192 bytes on, one sequential stream, which
 * the first row tile (the one that brings it from L3/memory) also prefetches PF_BYTES ahead.
 * With runs of one panel (k_pad > XF_QGEMM_GROUP_KMAX, or weights packed for another table)
 * the panels are k_pad·16 bytes apart. */
_Static_assert(NR == 3 * XF_QGEMM_PANEL, "a VNNI tile is one run of 3 panels");
static void vnni_tile(const void *ctx, const xf_qgemm_w_t *w, int rows, int32_t jr, int ncol,
                      const uint8_t *xq, size_t ldq, const float *alpha, const float *bias,
                      enum xf_epilogue epi, float *y, size_t ldy, int first)
{
    (void)ctx;
    const int32_t p = jr / 16;
    const size_t bstride = w->group > 1 ? 64 : (size_t)w->k_pad * 16;
    __mmask16 msk[NV];
    for (int j = 0; j < NV; j++) {
        int left = ncol - 16 * j;
        msk[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    /* the row tile that fetches a one-stream tile's weights prefetches ahead of itself */
    const int pf = first && w->group > 1;
    ukrs[pf][rows - 1][(ncol + 15) / 16 - 1](w->k_pad / 4, xq, ldq,
                                             w->wq + xf_qgemm_w_panel_off(w, p), bstride,
                                             xf_qgemm_w_gstride(w, p), y, ldy, msk, alpha,
                                             w->sigma + jr, w->colsum + jr, bias, epi);
}

void xf_qlinear_vnni(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                     const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                     int32_t ldy, int ith, int nth)
{
    xf_qgemm_drive(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth, MR, NR, vnni_tile, NULL,
                   NULL, NULL);
}

void xf_qlinear_quant_vnni(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                           const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                           int32_t ldy, const xf_qout_t *qo, int ith, int nth)
{
    xf_qgemm_drive(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth, MR, NR, vnni_tile, NULL,
                   qo, xf_quant_rows_avx512);
}

/* 12 independent vpdpbusd chains: 12 × 64 multiply-adds per round. */
double xf_qpeak_loop_vnni(int64_t iters, int32_t *sink)
{
    __m512i acc[12];
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (int j = 0; j < 12; j++)
        acc[j] = _mm512_set1_epi32(j);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    }
    __m512i s = acc[0];
    for (int j = 1; j < 12; j++)
        s = _mm512_xor_si512(s, acc[j]);
    *sink ^= _mm512_reduce_or_epi32(s) & 0x7fffffff;
    return 12.0 * 64.0 * 2.0 * (double)iters;
}
