/* AVX-512 Linear GEMM: y = epi(x·Wᵀ + b) with W pre-packed in 16-column panels
 * (ref.h, xf_gemm_w_pack). Micro-kernel: MR=8 rows × NR=48 columns of zmm accumulators
 * (24 registers), A broadcast from an 8-row packed micro-panel, B read from three packed
 * panels. Blocking: K in KC steps (the accumulators go through y between steps), columns in
 * NC steps so that a KC×NC block of W stays in L2. The epilogue (bias, GELU, ReLU) runs when
 * a tile's last K step finishes. While a KC×NC block of W is used, the block read next is
 * prefetched into L2, a share with each row panel's tiles (at small M the weights stream from
 * memory, and the hardware prefetcher does not cross into the next block). Every output element is summed in k order in one fp32 FMA
 * chain whatever the thread split, so results are bitwise identical for any nth. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>

#include "engine/kernels/ref/ref.h"
#include "engine/kernels/x86/vmath_avx512.h"
#include "engine/kernels/x86/x86.h"

#define MR 8
#define NV 3                 /* zmm vectors per row = 48 columns */
#define NR (16 * NV)
#define KC XF_GEMM_KC
#define NC_GROUPS_MAX 16      /* 16 × 48 columns: a 256×768 block of W = 768 KB */

/* Columns per NC block: a KC×NC block of W should take at most half of L2 (set once by
 * xf_gemm_avx512_setup from the L2 size; 2 MB on Sapphire Rapids, 1 MB on Zen 5). Only the
 * blocking depends on it, not the per-element sums. */
static int nc_cols = NR * NC_GROUPS_MAX;
#define NC nc_cols

void xf_gemm_avx512_setup(long l2_bytes)
{
    long groups = l2_bytes > 0 ? l2_bytes / 2 / ((long)KC * NR * (long)sizeof(float)) : 0;
    if (groups < 1)
        groups = NC_GROUPS_MAX;
    if (groups > NC_GROUPS_MAX)
        groups = NC_GROUPS_MAX;
    nc_cols = NR * (int)groups;
}

#define XF_INLINE static inline __attribute__((always_inline))

/* The tile [mr][nv·16] at c: acc (+)= ap·B over kc steps; on the last K step add bias and
 * apply the activation. msk[j] masks the columns of vector j that exist. */
XF_INLINE void ukr(const int mr, const int nv, int kc, const float *ap, const float *b,
                   size_t bstride, float *c, size_t ldc, const __mmask16 *msk, int first,
                   int last, const float *bias, enum xf_epilogue epi, const float *cnext,
                   const float *pf, int pfn)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            acc[i][j] = first ? _mm512_setzero_ps()
                              : _mm512_maskz_loadu_ps(msk[j], c + (size_t)i * ldc + 16 * j);
    }
    const float *b0 = b, *b1 = b + bstride, *b2 = b + 2 * bstride;
#ifndef XF_GEMM_NO_CPREFETCH
    /* the next tile's C (cnext) is loaded after this tile's K loop: fetch it now so that
     * those loads do not stall (on the first K step nothing is loaded) */
    if (!first) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc + 32), _MM_HINT_T0);
        }
    }
#endif
    const int pstep = pfn > 0 ? (pfn + kc - 1) / kc : 0;
    for (int k = 0; k < kc; k++) {
        __m512 bv[NV];
        if (k * pstep < pfn)
            for (int q = 0; q < pstep; q++)
                _mm_prefetch((const char *)(pf + 16 * (k * pstep + q)), _MM_HINT_T1);
        bv[0] = _mm512_load_ps(b0 + 16 * k);
        if (nv > 1)
            bv[1] = _mm512_load_ps(b1 + 16 * k);
        if (nv > 2)
            bv[2] = _mm512_load_ps(b2 + 16 * k);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512 a = _mm512_set1_ps(ap[MR * k + i]);
#pragma GCC unroll 3
            for (int j = 0; j < nv; j++)
                acc[i][j] = _mm512_fmadd_ps(a, bv[j], acc[i][j]);
        }
    }
    if (last && epi != XF_EPI_NONE) {
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++) {
            __m512 bb = _mm512_maskz_loadu_ps(msk[j], bias + 16 * j);
#pragma GCC unroll 8
            for (int i = 0; i < mr; i++)
                acc[i][j] = xf_act512(epi, _mm512_add_ps(acc[i][j], bb));
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            _mm512_mask_storeu_ps(c + (size_t)i * ldc + 16 * j, msk[j], acc[i][j]);
    }
}

typedef void (*ukr_fn)(int kc, const float *ap, const float *b, size_t bstride, float *c,
                       size_t ldc, const __mmask16 *msk, int first, int last,
                       const float *bias, enum xf_epilogue epi, const float *cnext,
                       const float *pf, int pfn);

#define UKR(mr, nv)                                                                        \
    static void ukr_##mr##_##nv(int kc, const float *ap, const float *b, size_t bstride,   \
                                float *c, size_t ldc, const __mmask16 *msk, int first,     \
                                int last, const float *bias, enum xf_epilogue epi,         \
                                const float *cnext, const float *pf, int pfn)              \
    {                                                                                      \
        ukr(mr, nv, kc, ap, b, bstride, c, ldc, msk, first, last, bias, epi, cnext, pf, pfn); \
    }
#define UKR_NV(mr) UKR(mr, 1) UKR(mr, 2) UKR(mr, 3)
UKR_NV(1) UKR_NV(2) UKR_NV(3) UKR_NV(4) UKR_NV(5) UKR_NV(6) UKR_NV(7) UKR_NV(8)

static const ukr_fn ukrs[MR][NV] = {
    { ukr_1_1, ukr_1_2, ukr_1_3 }, { ukr_2_1, ukr_2_2, ukr_2_3 },
    { ukr_3_1, ukr_3_2, ukr_3_3 }, { ukr_4_1, ukr_4_2, ukr_4_3 },
    { ukr_5_1, ukr_5_2, ukr_5_3 }, { ukr_6_1, ukr_6_2, ukr_6_3 },
    { ukr_7_1, ukr_7_2, ukr_7_3 }, { ukr_8_1, ukr_8_2, ukr_8_3 },
};

/* ap[k·MR + i] = x[i][k] for i < mr (zero rows from mr on), k < kc. Full 8-row panels go
 * through 8×8 transposes in ymm registers. */
static void pack_a(int mr, int kc, const float *x, size_t ldx, float *ap)
{
    int k = 0;
    if (mr == MR) {
        for (; k + 8 <= kc; k += 8) {
            __m256 r0 = _mm256_loadu_ps(x + k), r1 = _mm256_loadu_ps(x + ldx + k);
            __m256 r2 = _mm256_loadu_ps(x + 2 * ldx + k), r3 = _mm256_loadu_ps(x + 3 * ldx + k);
            __m256 r4 = _mm256_loadu_ps(x + 4 * ldx + k), r5 = _mm256_loadu_ps(x + 5 * ldx + k);
            __m256 r6 = _mm256_loadu_ps(x + 6 * ldx + k), r7 = _mm256_loadu_ps(x + 7 * ldx + k);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
            __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
            __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
            float *o = ap + (size_t)k * MR;
            _mm256_store_ps(o + 0, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_store_ps(o + 8, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_store_ps(o + 16, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_store_ps(o + 24, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_store_ps(o + 32, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_store_ps(o + 40, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_store_ps(o + 48, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_store_ps(o + 56, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
    }
    for (; k < kc; k++)
        for (int i = 0; i < MR; i++)
            ap[k * MR + i] = i < mr ? x[(size_t)i * ldx + k] : 0.0f;
}

/* Lane masks of a tile of ncol (1..48) columns; returns the vectors it spans. */
static int tile_masks(int ncol, __mmask16 *msk)
{
    for (int j = 0; j < NV; j++) {
        int left = ncol - 16 * j;
        msk[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    return (ncol + 15) / 16;
}

/* Columns [c0, c1) (c0 a multiple of 16) and rows [r0, r1) of y. */
static void gemm_block(const xf_gemm_w_t *w, int r0, int r1, int c0, int c1, const float *x,
                       size_t ldx, const float *bias, enum xf_epilogue epi, float *y,
                       size_t ldy)
{
    float ap[MR * KC] __attribute__((aligned(64)));
    const int K = w->k;
    const size_t npad = ((size_t)w->n + 15) / 16 * 16;
    for (int jc = c0; jc < c1; jc += NC) {
        int jc1 = jc + NC < c1 ? jc + NC : c1;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int first = pc == 0, last = pc + kc == K;
            /* the W block read next (next K step, or the next column block's first one),
             * prefetched into L2 a share per row panel, so that its first panel does not
             * wait on memory */
            const float *nb = NULL;
            size_t nlines = 0;
            if (pc + kc < K) {
                int kc2 = K - pc - kc < KC ? K - pc - kc : KC;
                nb = w->packed + (size_t)(pc + kc) * npad + (size_t)(jc / 16) * 16 * (size_t)kc2;
                nlines = (size_t)((jc1 - jc + 15) / 16) * (size_t)kc2;
            } else if (jc1 < c1) {
                int kc2 = K < KC ? K : KC, jn1 = jc1 + NC < c1 ? jc1 + NC : c1;
                nb = w->packed + (size_t)(jc1 / 16) * 16 * (size_t)kc2;
                nlines = (size_t)((jn1 - jc1 + 15) / 16) * (size_t)kc2;
            }
            const int npan = (r1 - r0 + MR - 1) / MR;
            for (int ir = r0; ir < r1; ir += MR) {
                int mr = r1 - ir < MR ? r1 - ir : MR;
                int pan = (ir - r0) / MR;
                size_t l0 = nlines * (size_t)pan / (size_t)npan;
                size_t l1 = nlines * (size_t)(pan + 1) / (size_t)npan;
                int ntile = (jc1 - jc + NR - 1) / NR, t = 0;
                pack_a(mr, kc, x + (size_t)ir * ldx + pc, ldx, ap);
                for (int jr = jc; jr < jc1; jr += NR, t++) {
                    __mmask16 msk[NV];
                    int nv = tile_masks(jc1 - jr < NR ? jc1 - jr : NR, msk);
                    size_t bstride = (size_t)16 * (size_t)kc;
                    const float *b = w->packed + (size_t)pc * npad + (size_t)(jr / 16) * bstride;
                    float *c = y + (size_t)ir * ldy + jr;
                    size_t t0 = l0 + (l1 - l0) * (size_t)t / (size_t)ntile;
                    size_t t1 = l0 + (l1 - l0) * (size_t)(t + 1) / (size_t)ntile;
                    ukrs[mr - 1][nv - 1](kc, ap, b, bstride, c, ldy, msk, first, last,
                                         bias ? bias + jr : NULL, epi, c + NR,
                                         nb ? nb + 16 * t0 : NULL, (int)(t1 - t0));
                }
            }
        }
    }
}

void xf_linear_avx512(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                      const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                      int ith, int nth)
{
    if (!w->packed) {
        xf_linear_cblas(w, m, x, ldx, bias, epi, y, ldy, ith, nth);
        return;
    }
    int32_t r0, r1, c0, c1;
    if (!xf_gemm_share(m, w->n, MR, NR, ith, nth, &r0, &r1, &c0, &c1))
        return;
    gemm_block(w, r0, r1, c0, c1, x, (size_t)ldx, bias, epi, y, (size_t)ldy);
}
