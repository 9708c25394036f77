/* AVX2+FMA Linear GEMM: a 6-row × 16-column micro-kernel (12 ymm accumulators; 2 B loads and
 * 6 broadcasts per 12 FMAs) over one packed 16-column group (ref.h, xf_gemm_w_pack with this
 * table's w_group = 16: a contiguous KC×16 micro-panel; weights packed in 48-column groups
 * for AVX-512 are read as 16-column slices of a group row, same bits), blocked as BLIS does:
 * K in XF_GEMM_KC steps, columns in NC steps (a KC×NC block of W sized for a share of L3),
 * rows in MC blocks packed once per (column block, K step) so that the packed A block (MC×KC)
 * stays in L2 and each 16-column W micro-panel (KC×16 = 16 KB) stays in L1 while it meets
 * every row micro-panel of the block. MC and NC come from the cache sizes the
 * CPU reports (xf_gemm_avx2_setup). Epilogue on the last K step; every output element is one
 * in-order fp32 FMA chain, so results are identical for any nth and any blocking. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>

#include "engine/kernels/ref/ref.h"
#include "engine/kernels/x86/vmath_avx2.h"
#include "engine/kernels/x86/x86.h"

#define MR 6
#define NV 2                 /* ymm vectors per row = 16 columns */
#define NR (8 * NV)
#define KC XF_GEMM_KC
#define MC_MAX (MR * 32)     /* 192 rows: a 192 KB packed A block */

/* Rows per MC block (packed A block at most half of L2) and columns per NC block (a KC×NC
 * block of W within a quarter of L3, at most 192 panels): set once by xf_gemm_avx2_setup. */
static int mc_rows = MR * 16;
static int nc_cols = NR * 96;
#define MC mc_rows
#define NC nc_cols

void xf_gemm_avx2_setup(long l2_bytes, long l3_bytes)
{
    long mc = l2_bytes > 0 ? l2_bytes / 2 / ((long)KC * (long)sizeof(float)) / MR * MR : 0;
    mc_rows = mc < MR * 4 ? MR * 16 : mc > MC_MAX ? MC_MAX : (int)mc;
    long panels = l3_bytes > 0 ? l3_bytes / 4 / ((long)KC * NR * (long)sizeof(float)) : 0;
    nc_cols = NR * (panels < 16 ? 96 : panels > 192 ? 192 : (int)panels);
}

#define XF_INLINE static inline __attribute__((always_inline))

XF_INLINE void ukr(const int mr, int kc, const float *ap, const float *b, size_t bs, float *c,
                   size_t ldc, int ncol, int first, int last, const float *bias,
                   enum xf_epilogue epi, const float *cnext, const float *bnext, size_t bns)
{
    __m256 acc[MR][NV];
    __m256i m0 = xf_mask256(ncol), m1 = xf_mask256(ncol - 8);
    const int full = ncol == 16;
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        if (first) {
            acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        } else if (full) {
            acc[i][0] = _mm256_loadu_ps(c + (size_t)i * ldc);
            acc[i][1] = _mm256_loadu_ps(c + (size_t)i * ldc + 8);
        } else {
            acc[i][0] = _mm256_maskload_ps(c + (size_t)i * ldc, m0);
            acc[i][1] = _mm256_maskload_ps(c + (size_t)i * ldc + 8, m1);
        }
    }
    /* the next tile's C is loaded after this one's K loop: fetch it now (prefetches do not
     * fault, so the tile past the block's end is harmless) */
    if (!first) {
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b + bs * k), b1 = _mm256_load_ps(b + bs * k + 8);
        /* one line of the next W micro-panel per k step, into L2 (small M streams W) */
        _mm_prefetch((const char *)(bnext + bns * k), _MM_HINT_T1);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 a = _mm256_broadcast_ss(ap + MR * k + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
    }
    if (last && epi != XF_EPI_NONE) {
        __m256 bb0 = _mm256_maskload_ps(bias, m0), bb1 = _mm256_maskload_ps(bias + 8, m1);
        __m256 gc[XF_GELU_POLY_DEG + 1];   /* the GELU's table, loaded once per tile */
        const float (*gtab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
        if (gtab)
            xf_gelu_poly_load256(gc, gtab);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            acc[i][0] = xf_act_tab256(epi, _mm256_add_ps(acc[i][0], bb0), gc);
            acc[i][1] = xf_act_tab256(epi, _mm256_add_ps(acc[i][1], bb1), gc);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        if (full) {
            _mm256_storeu_ps(c + (size_t)i * ldc, acc[i][0]);
            _mm256_storeu_ps(c + (size_t)i * ldc + 8, acc[i][1]);
        } else {
            _mm256_maskstore_ps(c + (size_t)i * ldc, m0, acc[i][0]);
            _mm256_maskstore_ps(c + (size_t)i * ldc + 8, m1, acc[i][1]);
        }
    }
}

typedef void (*ukr_fn)(int kc, const float *ap, const float *b, size_t bs, float *c,
                       size_t ldc, int ncol, int first, int last, const float *bias,
                       enum xf_epilogue epi, const float *cnext, const float *bnext,
                       size_t bns);

#define UKR(mr)                                                                            \
    static void ukr_##mr(int kc, const float *ap, const float *b, size_t bs, float *c,     \
                         size_t ldc, int ncol, int first, int last, const float *bias,     \
                         enum xf_epilogue epi, const float *cnext, const float *bnext,     \
                         size_t bns)                                                       \
    {                                                                                      \
        ukr(mr, kc, ap, b, bs, c, ldc, ncol, first, last, bias, epi, cnext, bnext, bns);   \
    }
UKR(1) UKR(2) UKR(3) UKR(4) UKR(5) UKR(6)

static const ukr_fn ukrs[MR] = { ukr_1, ukr_2, ukr_3, ukr_4, ukr_5, ukr_6 };

/* ap[k·MR + i] = x[i][k] for i < mr (zero rows from mr on), k < kc. Full 6-row panels go
 * through 8×8 transposes (two zero rows): column k of the transpose is stored as 8 floats at
 * ap + 6k, in increasing k, so each store's 2 extra lanes are overwritten by the next one;
 * the last column of each 8-k step is stored with a 6-lane mask (nothing past the panel). */
static void pack_a(int mr, int kc, const float *x, size_t ldx, float *ap)
{
    int k0 = 0;
    if (mr == MR) {
        const __m256 z = _mm256_setzero_ps();
        const __m256i m6 = xf_mask256(MR);
        for (; k0 + 8 <= kc; k0 += 8) {
            __m256 r[8] = { z, z, z, z, z, z, z, z };
#pragma GCC unroll 6
            for (int i = 0; i < MR; i++)
                r[i] = _mm256_loadu_ps(x + (size_t)i * ldx + k0);
            xf_tr8x8_256(r);
            float *o = ap + (size_t)k0 * MR;
#pragma GCC unroll 7
            for (int q = 0; q < 7; q++)
                _mm256_storeu_ps(o + q * MR, r[q]);
            _mm256_maskstore_ps(o + 7 * MR, m6, r[7]);
        }
    }
    for (int i = 0; i < MR; i++) {
        const float *xi = x + (size_t)i * ldx;
        if (i < mr)
            for (int k = k0; k < kc; k++)
                ap[k * MR + i] = xi[k];
        else
            for (int k = k0; k < kc; k++)
                ap[k * MR + i] = 0.0f;
    }
}

/* The packed A block (MC×KC floats, 192 KB at most) goes into the thread's GEMM scratch
 * (kernels.h): the kernels may not allocate and pool threads' stacks are not sized for it.
 * Without a scratch, blocks of one row panel on the stack: each W micro-panel is then read
 * from L2 once per 6 rows instead of once per MC, the same sums in the same order. */
_Static_assert(MC_MAX * KC * sizeof(float) <= XF_GEMM_SCRATCH, "A block exceeds the scratch");

static void gemm_block(const xf_gemm_w_t *w, int r0, int r1, int c0, int c1, const float *x,
                       size_t ldx, const float *bias, enum xf_epilogue epi, float *y,
                       size_t ldy)
{
    float ap1[MR * KC] __attribute__((aligned(64)));
    float *ap = xf_gemm_scratch();
    const int K = w->k, mcb = ap ? MC : MR;
    if (!ap)
        ap = ap1;
    const size_t npad = xf_gemm_npad(w), G = (size_t)w->group;
    for (int jc = c0; jc < c1; jc += NC) {
        int jc1 = jc + NC < c1 ? jc + NC : c1;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int first = pc == 0, last = pc + kc == K;
            const float *blk = w->packed + (size_t)pc * npad;
            for (int ic = r0; ic < r1; ic += mcb) {
                int ic1 = ic + mcb < r1 ? ic + mcb : r1;
                for (int ir = ic; ir < ic1; ir += MR)
                    pack_a(ic1 - ir < MR ? ic1 - ir : MR, kc, x + (size_t)ir * ldx + pc, ldx,
                           ap + (size_t)(ir - ic) * (size_t)kc);
                for (int jr = jc; jr < jc1; jr += NR) {
                    int ncol = jc1 - jr < NR ? jc1 - jr : NR;
                    /* this 16-column micro-panel (its own group, or a slice of a 48-column
                     * group: ref.h), and the next one */
                    size_t bs, bns = 0;
                    const float *b = blk + xf_gemm_group_at((size_t)jr, npad, (size_t)kc, G, &bs);
                    const float *bn = (size_t)jr + NR < npad
                        ? blk + xf_gemm_group_at((size_t)jr + NR, npad, (size_t)kc, G, &bns)
                        : b;
                    const float *bj = bias ? bias + jr : NULL;
                    for (int ir = ic; ir < ic1; ir += MR) {
                        int mr = ic1 - ir < MR ? ic1 - ir : MR;
                        float *c = y + (size_t)ir * ldy + jr;
                        ukrs[mr - 1](kc, ap + (size_t)(ir - ic) * (size_t)kc, b, bs, c, ldy,
                                     ncol, first, last, bj, epi, c + MR * ldy, bn,
                                     bn == b ? bs : bns);
                    }
                }
            }
        }
    }
}

void xf_linear_avx2(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
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
