/* AVX-512 Linear GEMM: y = epi(x·Wᵀ + b) with W pre-packed in 48-column groups, k-major (ref.h,
 * xf_gemm_w_pack; weights packed in 16-column groups for the AVX2 kernel give the same bits
 * through 16-column tiles). Micro-kernel: MR=8 rows × NR=48 columns of zmm accumulators (24
 * registers), A broadcast from an 8-row packed micro-panel, B read as one group row per k step,
 * 192 consecutive bytes, so that a tile streams its weights as one sequential run (3 loads and 8
 * broadcasts per 24 FMAs: 0.94 of the zmm peak in cache on Zen 5; 12×32 and 14×32 tiles measured
 * no better). Tiles end on group edges; only a thread's first and last tile may be narrower (16 or
 * 32 columns of a group row). Blocking: K in KC steps (the accumulators go through y between
 * steps), columns in NC steps so that a KC×NC block of W stays in L2 while every row panel of the
 * thread's share meets it (NC from the L2 size the CPU reports, xf_gemm_avx512_setup; the thread's
 * columns cut into blocks of about equal width). A thread's rows are cut into panels of equal
 * height (at most MR), so that no panel is a thin remainder (x packed through 8×8 transposes,
 * partial ones too). The epilogue (bias, GELU, ReLU) runs when a tile's last K step finishes.
 * While a KC×NC block of W is used, the block read next is prefetched into L2, a share with each
 * row panel's tiles, spread evenly over each tile's k steps (at small M the weights stream from
 * memory, and the hardware prefetcher does not cross into the next block; a tile's share issued
 * one line a step from its first step on measured up to 10 % slower at 64–512 rows per thread).
 * With bf16 panels (xf_gemm_w_add_bf16, ref.h: k pairs) each B load brings two k steps, widened
 * to fp32 in registers (shift / mask), so the products and sums are those of the fp32 path on the
 * rounded weights; only the bytes read per weight halve. A thread share of 9..16 rows of fp32
 * weights (b1n16, short queries) takes a one-pass path instead (gemm_small, below: 16-row ×
 * 16-column tiles, so each weight is read from memory once rather than by two row panels);
 * one of 2,048 rows or more (large batches) the BLIS order (gemm_big, below: the tile's W
 * micro-panel stays in L1 while a block of row panels meets it, x packed once per K step).
 * Every output element is summed in k order in one fp32 FMA chain whatever the thread split,
 * path, tile or blocking, so results are bitwise identical for any nth. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>

#include "engine/kernels/ref/ref.h"
#include "engine/kernels/x86/vmath_avx2.h"
#include "engine/kernels/x86/vmath_avx512.h"
#include "engine/kernels/x86/x86.h"

#define MR 8                 /* rows of a full tile (x elements broadcast) */
#define NV 3                 /* zmm vectors per row: 48 columns */
#define NR (16 * NV)
#define KC XF_GEMM_KC
#define NC_MAX (NR * 16)     /* 768 columns: a 256×768 block of W = 768 KB */
#define NC_DEFAULT (NR * 10) /* 480 columns: 480 KB, for an L2 of 1 MB */

/* Columns per NC block: a KC×NC block of W should take at most half of L2 (set once by
 * xf_gemm_avx512_setup from the L2 size; 2 MB on Sapphire Rapids, 1 MB on Zen 5). A quarter
 * of L2 (room for the prefetched next block as well) measured no faster on Zen 5 and slower
 * at N = 256 (more x packing, thinner blocks). Only the blocking depends on it, not the
 * per-element sums. */
static int nc_cols = NC_DEFAULT;
#define NC nc_cols

void xf_gemm_avx512_setup(long l2_bytes)
{
    long cols = l2_bytes > 0 ? l2_bytes / 2 / ((long)KC * (long)sizeof(float)) / NR * NR : 0;
    nc_cols = cols < NR ? NC_DEFAULT : cols > NC_MAX ? NC_MAX : (int)cols;
}

#define XF_INLINE static inline __attribute__((always_inline))

/* One k step of a tile: acc[i][j] += ap[i]·bv[j] for the tile's rows and vectors. */
#define TILE_FMA(mr, nv, acc, ap, bv)                                                      \
    do {                                                                                   \
        _Pragma("GCC unroll 8") for (int i_ = 0; i_ < (mr); i_++) {                        \
            __m512 a_ = _mm512_set1_ps((ap)[i_]);                                          \
            _Pragma("GCC unroll 3") for (int j_ = 0; j_ < (nv); j_++)                      \
                (acc)[i_][j_] = _mm512_fmadd_ps(a_, (bv)[j_], (acc)[i_][j_]);              \
        }                                                                                  \
    } while (0)

/* Step s (a k, or a k pair for bf16) of the tile's nv vectors, one group row (ref.h) of
 * sstride bytes per step: the 64·nv bytes at b + s·sstride into v[]. With sd, also prefetch
 * into L1 the same row's lines sd bytes further on in the stream. */
XF_INLINE void load_b(const void *b, size_t sstride, int nv, int s, int sd, __m512i *v)
{
    const char *row = (const char *)b + (size_t)s * sstride;
    if (sd)
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            _mm_prefetch(row + sd + 64 * j, _MM_HINT_T0);
#pragma GCC unroll 3
    for (int j = 0; j < nv; j++)
        v[j] = _mm512_load_si512(row + 64 * j);
}

/* A tile's share of the next W block, pfn lines from pf into L2, spread evenly over the
 * tile's iters steps: *acc gains pfn a step and a line goes out each time it passes iters
 * (*q is the next line), so exactly pfn lines over the tile. */
XF_INLINE void prefetch_share(const char *pf, int pfn, int iters, int *acc, int *q)
{
    for (*acc += pfn; *acc >= iters; *acc -= iters)
        _mm_prefetch(pf + 64 * (*q)++, _MM_HINT_T1);
}

/* The tile [mr][nv·16] at c: acc (+)= ap·B over kc steps, B's steps bstride 32-bit units
 * apart (its group's width, ref.h), read sd bytes ahead into L1 when sd is not 0; on the
 * last K step add bias and apply the activation. msk[j] masks the columns of vector j that
 * exist. */
XF_INLINE void ukr(const int bf, const int mr, const int nv, int kc, const float *ap,
                   const void *b, size_t bstride, int sd, float *c, size_t ldc,
                   const __mmask16 *msk, int first, int last, const float *bias,
                   enum xf_epilogue epi, const float *cnext, const char *pf, int pfn)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            acc[i][j] = first ? _mm512_setzero_ps()
                              : _mm512_maskz_loadu_ps(msk[j], c + (size_t)i * ldc + 16 * j);
    }
    /* the next tile's C (cnext) is loaded after this tile's K loop: fetch it now so that
     * those loads do not stall (on the first K step nothing is loaded) */
    if (!first) {
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(cnext + (size_t)i * ldc + 32), _MM_HINT_T0);
        }
    }
    const int iters = bf ? (kc + 1) / 2 : kc;   /* k steps, or k pairs */
    int pacc = 0, pq = 0;   /* prefetch_share's count */
    if (!bf) {
        for (int k = 0; k < kc; k++) {
            __m512i v[NV];
            __m512 bv[NV];
            if (pf)
                prefetch_share(pf, pfn, iters, &pacc, &pq);
            load_b(b, bstride * 4, nv, k, sd, v);
#pragma GCC unroll 3
            for (int j = 0; j < nv; j++)
                bv[j] = _mm512_castsi512_ps(v[j]);
            TILE_FMA(mr, nv, acc, ap + MR * k, bv);
        }
    } else {
        /* bf16 pairs (ref.h): one 64-byte load holds k and k+1 of 16 columns; k's fp32 is
         * the low half shifted up, k+1's the high half with the low bits cleared. Same
         * products, same order as the fp32 path on the rounded weights. */
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
        for (int p = 0; p < iters; p++) {
            __m512i v[NV];
            __m512 be[NV], bo[NV];
            if (pf)
                prefetch_share(pf, pfn, iters, &pacc, &pq);
            load_b(b, bstride * 4, nv, p, sd, v);
#pragma GCC unroll 3
            for (int j = 0; j < nv; j++) {
                be[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v[j], 16));
                bo[j] = _mm512_castsi512_ps(_mm512_and_si512(v[j], hi));
            }
            TILE_FMA(mr, nv, acc, ap + MR * 2 * p, be);
            if (2 * p + 1 == kc)   /* odd kc: the pair's second half is padding */
                break;
            TILE_FMA(mr, nv, acc, ap + MR * (2 * p + 1), bo);
        }
    }
    if (last && epi != XF_EPI_NONE) {
        __m512 gc[XF_GELU_POLY_DEG + 1];   /* the GELU's table, loaded once per tile */
        const float (*gtab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
        if (gtab)
            xf_gelu_poly_load512(gc, gtab);
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++) {
            __m512 bb = _mm512_maskz_loadu_ps(msk[j], bias + 16 * j);
#pragma GCC unroll 8
            for (int i = 0; i < mr; i++)
                acc[i][j] = xf_act_tab512(epi, _mm512_add_ps(acc[i][j], bb), gc);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++)
            _mm512_mask_storeu_ps(c + (size_t)i * ldc + 16 * j, msk[j], acc[i][j]);
    }
}

typedef void (*ukr_fn)(int kc, const float *ap, const void *b, size_t bstride, int sd,
                       float *c, size_t ldc, const __mmask16 *msk, int first, int last,
                       const float *bias, enum xf_epilogue epi, const float *cnext,
                       const char *pf, int pfn);

#define UKR1(bf, pre, mr, nv)                                                              \
    static void pre##mr##_##nv(int kc, const float *ap, const void *b, size_t bstride,     \
                               int sd, float *c, size_t ldc, const __mmask16 *msk,         \
                               int first, int last, const float *bias,                     \
                               enum xf_epilogue epi, const float *cnext, const char *pf,   \
                               int pfn)                                                    \
    {                                                                                      \
        ukr(bf, mr, nv, kc, ap, b, bstride, sd, c, ldc, msk, first, last, bias, epi, cnext, \
            pf, pfn);                                                                      \
    }
#define UKR(mr) UKR1(0, ukr_, mr, 1) UKR1(0, ukr_, mr, 2) UKR1(0, ukr_, mr, 3)            \
    UKR1(1, ukrh_, mr, 1) UKR1(1, ukrh_, mr, 2) UKR1(1, ukrh_, mr, 3)
#define ROW(mr) { ukr_##mr##_1, ukr_##mr##_2, ukr_##mr##_3 }
#define ROWH(mr) { ukrh_##mr##_1, ukrh_##mr##_2, ukrh_##mr##_3 }
UKR(1) UKR(2) UKR(3) UKR(4) UKR(5) UKR(6) UKR(7) UKR(8)

static const ukr_fn ukrs[MR][NV] = {
    ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6), ROW(7), ROW(8),
};
static const ukr_fn ukrhs[MR][NV] = {   /* bf16 weights */
    ROWH(1), ROWH(2), ROWH(3), ROWH(4), ROWH(5), ROWH(6), ROWH(7), ROWH(8),
};

/* Columns k..k+7 of rows 0..nr-1 (nr <= 8) of x, transposed in ymm registers: column q goes
 * to o + q·MR (nr floats; rows from nr on read row 0 and are not stored). */
XF_INLINE void tr8(const float *x, size_t ldx, int nr, float *o)
{
    const __mmask8 sm = (__mmask8)((1u << nr) - 1);
    __m256 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(x + (size_t)(i < nr ? i : 0) * ldx);
    xf_tr8x8_256(r);
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) {
        if (nr == 8)
            _mm256_storeu_ps(o + q * MR, r[q]);
        else
            _mm256_mask_storeu_ps(o + q * MR, sm, r[q]);
    }
}

/* ap[k·MR + i] = x[i][k] for i < mr, k < kc (rows from mr on are not written: the kernel
 * for mr rows never reads them), 8 k at a time through 8×8 transposes. */
static void pack_a(int mr, int kc, const float *x, size_t ldx, float *ap)
{
    int k = 0;
    if (mr == MR)
        for (; k + 8 <= kc; k += 8)
            tr8(x + k, ldx, 8, ap + (size_t)k * MR);
    else
        for (; k + 8 <= kc; k += 8)
            tr8(x + k, ldx, mr, ap + (size_t)k * MR);
    for (; k < kc; k++)
        for (int i = 0; i < mr; i++)
            ap[k * MR + i] = x[(size_t)i * ldx + k];
}

/* Lane masks of a tile of ncol (1..NR) columns; returns the vectors it spans. */
static int tile_masks(int ncol, __mmask16 *msk)
{
    for (int j = 0; j < NV; j++) {
        int left = ncol - 16 * j;
        msk[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    return (ncol + 15) / 16;
}

/* The width of the column blocks of a thread's columns [c0, c1): about equal blocks, each a
 * multiple of NR and at most nc, on a grid from g0 = c0 rounded down to a column group
 * (ref.h), so that only the share's first and last tile may be narrower than a group. */
static int block_cols(int c0, int c1, int nc)
{
    const int g0 = c0 / NR * NR, nblk = (c1 - g0 + nc - 1) / nc;
    return (c1 - g0 + nblk * NR - 1) / (nblk * NR) * NR;
}

/* The packed bytes of columns [j0, j1) (j0 a multiple of 16) of the K block at k0 with ks
 * stored steps, groups of G columns: from j0's group to the end of (j1 - 1)'s, whole 64-byte
 * lines (ref.h). Returns the start; *len the length. */
static const char *block_span(const char *wp, size_t npad, size_t G, int k0, int ks, int bf,
                              int j0, int j1, size_t *len)
{
    const size_t blk = (size_t)k0 * npad * 4 / (bf ? 2 : 1);   /* bytes */
    size_t g0 = (size_t)j0 / G * G, g1 = ((size_t)j1 + G - 1) / G * G;
    g1 = g1 < npad ? g1 : npad;
    *len = (g1 - g0) * (size_t)ks * 4;
    return wp + blk + g0 * (size_t)ks * 4;
}

/* The W block a share reads after the K step at pc (kc steps) of its columns [jc, jc1): the
 * next K step of the same columns, else the first K step of the next column block (ncb wide,
 * up to c1); NULL after the last (*len 0). */
static const char *next_block(const xf_gemm_w_t *w, const char *wp, int bf, int pc, int kc,
                              int jc, int jc1, int c1, int ncb, size_t *len)
{
    const int K = w->k;
    const size_t npad = xf_gemm_npad(w), G = (size_t)w->group;
    *len = 0;
    if (pc + kc < K) {
        int kn = K - pc - kc < KC ? K - pc - kc : KC;
        return block_span(wp, npad, G, pc + kc, bf ? (kn + 1) / 2 : kn, bf, jc, jc1, len);
    }
    if (jc1 < c1) {
        int kn = K < KC ? K : KC, jn1 = jc1 + ncb < c1 ? jc1 + ncb : c1;
        return block_span(wp, npad, G, 0, bf ? (kn + 1) / 2 : kn, bf, jc1, jn1, len);
    }
    return NULL;
}

/* A tile of a column block [.., jc1) starting at column jr: it ends on the next group edge
 * (je), its lane masks and vectors, and where its W run of the K block at pc (ks stored
 * steps) starts, gw 32-bit units a step (its group's width, ref.h). */
typedef struct {
    int je, nv;
    __mmask16 msk[NV];
    const char *b;
    size_t gw;
} tile_t;

XF_INLINE void tile_at(const xf_gemm_w_t *w, const char *wp, int bf, int pc, int ks, int jr,
                       int jc1, tile_t *t)
{
    const size_t npad = xf_gemm_npad(w), G = (size_t)w->group;
    const int gi = (int)G;
    t->je = (jr / gi + 1) * gi < jc1 ? (jr / gi + 1) * gi : jc1;
    t->nv = tile_masks(t->je - jr, t->msk);
    t->b = wp + (size_t)pc * npad * 4 / (bf ? 2 : 1) +
           xf_gemm_group_at((size_t)jr, npad, (size_t)ks, G, &t->gw) * 4;
}

/* The first row of row panel p of npan equal panels over rows [r0, r1). */
static inline int panel_row(int r0, int r1, int npan, int p)
{
    return r0 + (int)((long)(r1 - r0) * p / npan);
}

/* At small M (at most LEAD_ROWS rows in a thread's share) the GEMM streams its weights from
 * memory, and the FMAs do not wait for them only if they are asked for early enough: the
 * first row panel's tiles prefetch into L1 the weights STREAM_PF bytes ahead in the block's
 * sequential run (which runs on into the next tile's group). 4 KB (21 k steps of 48 fp32
 * columns, 21 k pairs of bf16) measured 0.89–0.97 of the time without it at M = 8 and 16 on
 * Zen 5, 2 KB about the same; into L2, or two distances, no better. At M = 128 (weights from
 * L2 after the first panel) it cost 2–20 %, so it is not used there. Later row panels read
 * the block from L2. */
#define LEAD_ROWS (4 * MR)
#define STREAM_PF 4096

/* Columns [c0, c1) (c0 a multiple of 16) and rows [r0, r1) of y; bf: from the bf16 copy. */
static void gemm_block(const xf_gemm_w_t *w, int bf, int r0, int r1, int c0, int c1,
                       const float *x, size_t ldx, const float *bias, enum xf_epilogue epi,
                       float *y, size_t ldy)
{
    float ap[MR * KC] __attribute__((aligned(64)));
    const int K = w->k, gi = w->group;
    const char *wp = bf ? (const char *)w->packed_bf16 : (const char *)w->packed;
    const ukr_fn(*uk)[NV] = bf ? ukrhs : ukrs;
    const int npan = (r1 - r0 + MR - 1) / MR;   /* row panels of equal height */
    const int ncb = block_cols(c0, c1, NC), g0 = c0 / NR * NR;
    const int sdist = r1 - r0 <= LEAD_ROWS ? STREAM_PF : 0;
    for (int jb = g0; jb < c1; jb += ncb) {
        int jc = jb > c0 ? jb : c0, jc1 = jb + ncb < c1 ? jb + ncb : c1;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int first = pc == 0, last = pc + kc == K;
            const int ks = bf ? (kc + 1) / 2 : kc;   /* stored steps of this block */
            /* the W block read next (next K step, or the next column block's first one),
             * prefetched into L2 a share per row panel, so that its first panel does not
             * wait on memory */
            size_t nbytes;
            const char *nb = next_block(w, wp, bf, pc, kc, jc, jc1, c1, ncb, &nbytes);
            const size_t nlines = nbytes / 64;
            const int ntile = (jc1 - 1) / gi - jc / gi + 1;
            for (int pan = 0; pan < npan; pan++) {
                int ir = panel_row(r0, r1, npan, pan);
                int mr = panel_row(r0, r1, npan, pan + 1) - ir;
                size_t l0 = nlines * (size_t)pan / (size_t)npan;
                size_t l1 = nlines * (size_t)(pan + 1) / (size_t)npan;
                pack_a(mr, kc, x + (size_t)ir * ldx + pc, ldx, ap);
                const int sd = pan == 0 ? sdist : 0;
                /* tiles end on group edges: one sequential run of W each */
                tile_t tl;
                for (int jr = jc, t = 0; jr < jc1; jr = tl.je, t++) {
                    tile_at(w, wp, bf, pc, ks, jr, jc1, &tl);
                    float *c = y + (size_t)ir * ldy + jr;
                    size_t t0 = l0 + (l1 - l0) * (size_t)t / (size_t)ntile;
                    size_t t1 = l0 + (l1 - l0) * (size_t)(t + 1) / (size_t)ntile;
                    uk[mr - 1][tl.nv - 1](kc, ap, tl.b, tl.gw, sd, c, ldy, tl.msk, first, last,
                                          bias ? bias + jr : NULL, epi, c + (tl.je - jr),
                                          nb ? nb + 64 * t0 : NULL, (int)(t1 - t0));
                }
            }
        }
    }
}

/* ---- large M: the W micro-panel stays in L1 ----
 * From BIG_ROWS rows in a thread's share (b32n128's GEMMs, the QKV of a 2,000-token batch) the
 * rows are cut into blocks of BIG_MC rows (whole row panels) packed together once per (column
 * block, K step) into the thread's GEMM scratch (256 KB, in L2), and each 48-column tile meets
 * every panel of the block KH k steps at a time: its W micro-panel (KH × 48 floats = 24 KB) is
 * read from L2 or L3 once and stays in L1 while the panels' x streams from L2 (32 bytes per 24
 * FMAs instead of W's 192). So the KC×NC W block need not fit in L2, and the column blocks
 * grow to BIG_NC (3,072) columns: x, which at these M comes from memory, is packed once per
 * K step instead of once per 480 columns. Measured on Zen 5 (one thread, alternated call by
 * call with gemm_block; bench/results/engine-zen5.md run 34): 1.01–1.07× gemm_block's speed
 * at 2,048–4,096 rows (one repeat 0.98–1.01), 0.94–1.01× at 512–1,024 (x stays in L3 there),
 * hence the threshold; in the BLIS order with 480-column blocks, level at every M (so the gain
 * is x's packing, not W's stream from L2); the whole forward, b32n128, 1.01–1.06× faster in
 * 10 of 10 alternated rounds. Same per-element FMA chains in k order as gemm_block (the
 * accumulators go through y between K halves), so the same bits. */
#define BIG_ROWS 2048
#define BIG_MC (MR * 32)     /* rows per packed A block */
#define BIG_NC (NR * 64)     /* columns per W block */
#define KH 128               /* k steps a tile takes before the next panel */

_Static_assert(BIG_MC * KC * sizeof(float) <= XF_GEMM_SCRATCH, "A block exceeds the scratch");

/* ap: the thread's GEMM scratch (kernels.h), for the A block */
static void gemm_big(const xf_gemm_w_t *w, int bf, int r0, int r1, int c0, int c1,
                     const float *x, size_t ldx, const float *bias, enum xf_epilogue epi,
                     float *y, size_t ldy, float *ap)
{
    const int K = w->k, gi = w->group, PB = BIG_MC / MR;
    const char *wp = bf ? (const char *)w->packed_bf16 : (const char *)w->packed;
    const ukr_fn(*uk)[NV] = bf ? ukrhs : ukrs;
    const int npan = (r1 - r0 + MR - 1) / MR;   /* row panels of equal height */
    const int ncb = block_cols(c0, c1, BIG_NC), g0 = c0 / NR * NR;
    for (int jb = g0; jb < c1; jb += ncb) {
        int jc = jb > c0 ? jb : c0, jc1 = jb + ncb < c1 ? jb + ncb : c1;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int first = pc == 0, last = pc + kc == K;
            const int ks = bf ? (kc + 1) / 2 : kc, nh = (kc + KH - 1) / KH;
            /* the W block read next, into L2 a share per tile call, as in gemm_block */
            size_t nbytes;
            const char *nb = next_block(w, wp, bf, pc, kc, jc, jc1, c1, ncb, &nbytes);
            const size_t nlines = nbytes / 64;
            const size_t ncalls = (size_t)npan * (size_t)((jc1 - 1) / gi - jc / gi + 1) * nh;
            size_t q = 0;
            for (int pb = 0; pb < npan; pb += PB) {
                const int pe = pb + PB < npan ? pb + PB : npan;
                for (int pan = pb; pan < pe; pan++) {
                    int ir = panel_row(r0, r1, npan, pan);
                    pack_a(panel_row(r0, r1, npan, pan + 1) - ir, kc, x + (size_t)ir * ldx + pc,
                           ldx, ap + (size_t)(pan - pb) * MR * KC);
                }
                tile_t tl;
                for (int jr = jc; jr < jc1; jr = tl.je) {
                    tile_at(w, wp, bf, pc, ks, jr, jc1, &tl);
                    for (int h = 0; h < nh; h++) {
                        const int k0 = h * KH, kh = kc - k0 < KH ? kc - k0 : KH;
                        /* KH is even: a bf16 half starts on a k pair */
                        const char *bh = tl.b + (size_t)(bf ? k0 / 2 : k0) * tl.gw * 4;
                        for (int pan = pb; pan < pe; pan++, q++) {
                            int ir = panel_row(r0, r1, npan, pan);
                            int ir1 = panel_row(r0, r1, npan, pan + 1), mr = ir1 - ir;
                            /* the next call's C: the next panel's, or the block's first */
                            int in = pan + 1 < pe ? ir1 : panel_row(r0, r1, npan, pb);
                            float *c = y + (size_t)ir * ldy + jr;
                            size_t t0 = nlines * q / ncalls, t1 = nlines * (q + 1) / ncalls;
                            uk[mr - 1][tl.nv - 1](kh, ap + (size_t)(pan - pb) * MR * KC + MR * k0,
                                                  bh, tl.gw, 0, c, ldy, tl.msk, first && h == 0,
                                                  last && h == nh - 1, bias ? bias + jr : NULL,
                                                  epi, y + (size_t)in * ldy + jr,
                                                  nb ? nb + 64 * t0 : NULL, (int)(t1 - t0));
                        }
                    }
                }
            }
        }
    }
}

/* ---- small M: one pass over the weights ----
 * With SM_MIN_ROWS..SM_ROWS rows in a thread's share, gemm_block cuts them into two row panels
 * that each read every KC×NC block: the first from memory (at most 8 rows: 4 FLOP per weight
 * byte), the second from L2. Here one tile holds all of the share's rows × 16 columns (16 zmm
 * accumulators, x broadcast from memory into the FMAs: 1 B load and mr broadcasts per mr
 * FMAs), so each weight byte is read once and used by every row. A 16-column tile reads one of
 * the three 64-byte lines of each 192-byte group row (ref.h layout): a strided stream the
 * hardware prefetchers follow poorly (without software prefetch 1.4× slower). So while the
 * tiles of one group row run are used, the run SM_AHEAD groups further on (in K-block, then
 * column order) is prefetched into L2 as one sequential stream, its lines spread evenly over
 * the tiles' k steps (about one line a step). Measured at M = 16 on Zen 5 (one BERT layer's
 * GEMMs, 12 layers' weights rotated, 2 threads, alternated with gemm_block): 0.90–0.95 of
 * gemm_block's time (0.86–0.89 at 9 and 13 rows; the forward's b1n16 0.96 at the median of
 * 12 loaded rounds, bench/results/engine-zen5.md run 18b); 2 or 4 groups ahead, a burst
 * prefetch of the first group, T0/T2 hints, an extra L1 prefetch of the tile's own stream: no
 * better; without the prefetch 1.4× slower; keeping 8-row panels but walking each group in
 * chunks of 32–256 k steps that both panels meet in L1: 1.1–1.2× slower. At 12 rows level; at
 * 8 rows or fewer gemm_block (one panel, sequential 48-column tiles) is as fast or 3 % faster,
 * so it keeps them. K in KC blocks (x packed per block: 16 rows × KC = 16 KB, stays in L1);
 * the accumulators go through y between K blocks. Same per-element FMA chains in k order as
 * gemm_block, so the same bits. In cache this tile takes about 1.06× ukr's 8×48 time (1.14×
 * with 16 scalar broadcasts: 17 loads per 16 FMAs against 11 per 24; now 14), so it wins only
 * where the weights stream from memory;
 * bf16 panels (half the bytes) measured 1.04–1.07× slower through it, and keep gemm_block. */
#define SM_MIN_ROWS (MR + 1)
#define SM_ROWS (2 * MR)
#define SM_AHEAD 1

/* The tile [mr][16] at c: acc (+)= ap·B over ks steps (k, or k pairs for bf16; kc k in all),
 * B's steps sstride bytes apart; pfn lines from pf into L2 spread over the steps; on the last
 * K step add bias and apply the activation. msk masks the columns that exist. */
XF_INLINE void sm_ukr(const int mr, int ks, const float *ap, const char *b, size_t sstride,
                      const char *pf, int pfn, float *c, size_t ldc, __mmask16 msk, int first,
                      int last, const float *bias, enum xf_epilogue epi)
{
    __m512 acc[SM_ROWS];
#pragma GCC unroll 16
    for (int i = 0; i < mr; i++)
        acc[i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(msk, c + (size_t)i * ldc);
    int pacc = 0, pq = 0;   /* prefetch_share's count */
    for (int s = 0; s < ks; s++) {
        if (pf)
            prefetch_share(pf, pfn, ks, &pacc, &pq);
        const __m512 bv = _mm512_load_ps((const float *)(b + (size_t)s * sstride));
        const float *a = ap + SM_ROWS * s;
        /* rows 0-3 from one 16-byte load through in-lane shuffles, the others broadcast
         * from memory: fewer loads (in cache 1.06× gemm_block's time against 1.14× with 16
         * broadcasts; 8 shuffled rows no better, 16 worse) */
        const __m512 q = _mm512_broadcast_f32x4(_mm_load_ps(a));
        acc[0] = _mm512_fmadd_ps(_mm512_permute_ps(q, 0x00), bv, acc[0]);
        acc[1] = _mm512_fmadd_ps(_mm512_permute_ps(q, 0x55), bv, acc[1]);
        acc[2] = _mm512_fmadd_ps(_mm512_permute_ps(q, 0xaa), bv, acc[2]);
        acc[3] = _mm512_fmadd_ps(_mm512_permute_ps(q, 0xff), bv, acc[3]);
#pragma GCC unroll 16
        for (int i = 4; i < mr; i++)
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), bv, acc[i]);
    }
    if (last && epi != XF_EPI_NONE) {
        __m512 gc[XF_GELU_POLY_DEG + 1];   /* the GELU's table, as in ukr */
        const float (*gtab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
        if (gtab)
            xf_gelu_poly_load512(gc, gtab);
        __m512 bb = _mm512_maskz_loadu_ps(msk, bias);
#pragma GCC unroll 16
        for (int i = 0; i < mr; i++)
            acc[i] = xf_act_tab512(epi, _mm512_add_ps(acc[i], bb), gc);
    }
#pragma GCC unroll 16
    for (int i = 0; i < mr; i++)
        _mm512_mask_storeu_ps(c + (size_t)i * ldc, msk, acc[i]);
}

typedef void (*sm_fn)(int ks, const float *ap, const char *b, size_t sstride, const char *pf,
                      int pfn, float *c, size_t ldc, __mmask16 msk, int first, int last,
                      const float *bias, enum xf_epilogue epi);

#define SMK(mr)                                                                            \
    static void smk_##mr(int ks, const float *ap, const char *b, size_t sstride,           \
                         const char *pf, int pfn, float *c, size_t ldc, __mmask16 msk,     \
                         int first, int last, const float *bias, enum xf_epilogue epi)     \
    {                                                                                      \
        sm_ukr(mr, ks, ap, b, sstride, pf, pfn, c, ldc, msk, first, last, bias, epi);      \
    }
SMK(9) SMK(10) SMK(11) SMK(12) SMK(13) SMK(14) SMK(15) SMK(16)

static const sm_fn smks[SM_ROWS - SM_MIN_ROWS + 1] = {
    smk_9, smk_10, smk_11, smk_12, smk_13, smk_14, smk_15, smk_16,
};

/* ap[k·SM_ROWS + i] = x[i][k] for i < mr (<= SM_ROWS), k < kc, through 8×8 transposes (rows
 * from mr on are not written). */
static void sm_pack_a(int mr, int kc, const float *x, size_t ldx, float *ap)
{
    for (int i0 = 0; i0 < mr; i0 += 8) {
        const int nr = mr - i0 < 8 ? mr - i0 : 8;
        const __mmask8 sm = (__mmask8)((1u << nr) - 1);
        const float *xr = x + (size_t)i0 * ldx;
        int k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_ps(xr + (size_t)(i < nr ? i : 0) * ldx + k);
            xf_tr8x8_256(r);
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++)
                _mm256_mask_storeu_ps(ap + (size_t)(k + q) * SM_ROWS + i0, sm, r[q]);
        }
        for (; k < kc; k++)
            for (int i = 0; i < nr; i++)
                ap[(size_t)k * SM_ROWS + i0 + i] = xr[(size_t)i * ldx + k];
    }
}

/* The share's group row run number q (K block q / ntile, then the ntile groups the columns
 * from c0 touch, in order): its start (the whole group's run, from the group's first column)
 * and *lines, its 64-byte lines; NULL past the last K block. */
static const char *sm_run(const xf_gemm_w_t *w, size_t npad, int c0, int ntile, int q,
                          size_t *lines)
{
    const int K = w->k, gi = w->group, pc = q / ntile * KC;
    if (pc >= K)
        return NULL;
    const int kc = K - pc < KC ? K - pc : KC, g = (c0 / gi + q % ntile) * gi;
    size_t len;
    const char *run = block_span((const char *)w->packed, npad, (size_t)gi, pc, kc, 0, g,
                                 g + gi, &len);
    *lines = len / 64;
    return run;
}

/* Rows [r0, r1) (SM_MIN_ROWS..SM_ROWS of them) and columns [c0, c1) (c0 a multiple of 16) of
 * y in one pass over the fp32 weights. */
static void gemm_small(const xf_gemm_w_t *w, int r0, int r1, int c0, int c1, const float *x,
                       size_t ldx, const float *bias, enum xf_epilogue epi, float *y,
                       size_t ldy)
{
    float ap[SM_ROWS * KC] __attribute__((aligned(64)));
    const int K = w->k, mr = r1 - r0;
    const size_t npad = xf_gemm_npad(w), G = (size_t)w->group;
    const int gi = (int)G, ntile = (c1 - 1) / gi - c0 / gi + 1;
    const sm_fn fn = smks[mr - SM_MIN_ROWS];
    for (int pc = 0; pc < K; pc += KC) {
        const int kc = K - pc < KC ? K - pc : KC;
        const int first = pc == 0, last = pc + kc == K;
        const float *blk = w->packed + (size_t)pc * npad;
        sm_pack_a(mr, kc, x + (size_t)r0 * ldx + pc, ldx, ap);
        for (int jr = c0; jr < c1; jr += 16) {
            const int ncol = c1 - jr < 16 ? c1 - jr : 16;
            const __mmask16 msk = (__mmask16)((1u << ncol) - 1);
            size_t gw;
            const float *b = blk + xf_gemm_group_at((size_t)jr, npad, (size_t)kc, G, &gw);
            /* this tile's part of the run SM_AHEAD groups on, shared by its group's tiles */
            const int t = jr / gi - c0 / gi;
            const int gs = t == 0 ? c0 : jr / gi * gi;
            const int ge = (jr / gi + 1) * gi < c1 ? (jr / gi + 1) * gi : c1;
            const int nsub = (ge - gs + 15) / 16, sub = (jr - gs) / 16;
            size_t lines = 0;
            const char *pf = sm_run(w, npad, c0, ntile, pc / KC * ntile + t + SM_AHEAD, &lines);
            const size_t l0 = lines * (size_t)sub / (size_t)nsub;
            const size_t l1 = lines * (size_t)(sub + 1) / (size_t)nsub;
            float *c = y + (size_t)r0 * ldy + jr;
            fn(kc, ap, (const char *)b, gw * 4, pf ? pf + 64 * l0 : NULL, (int)(l1 - l0), c,
               ldy, msk, first, last, bias ? bias + jr : NULL, epi);
        }
    }
}

void xf_linear_avx512(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                      const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                      int ith, int nth)
{
    if (!w->packed && !w->packed_bf16) {
        xf_linear_cblas(w, m, x, ldx, bias, epi, y, ldy, ith, nth);
        return;
    }
    int32_t r0, r1, c0, c1;
    if (!xf_gemm_share(m, w->n, MR, NR, ith, nth, &r0, &r1, &c0, &c1))
        return;
    int bf = w->packed_bf16 != NULL;
    if (!bf && r1 - r0 >= SM_MIN_ROWS && r1 - r0 <= SM_ROWS) {
        gemm_small(w, r0, r1, c0, c1, x, (size_t)ldx, bias, epi, y, (size_t)ldy);
        return;
    }
    float *ap;   /* without a scratch, gemm_block: the same bits */
    if (r1 - r0 >= BIG_ROWS && (ap = xf_gemm_scratch()) != NULL) {
        gemm_big(w, bf, r0, r1, c0, c1, x, (size_t)ldx, bias, epi, y, (size_t)ldy, ap);
        return;
    }
    gemm_block(w, bf, r0, r1, c0, c1, x, (size_t)ldx, bias, epi, y, (size_t)ldy);
}

/* The first W block gemm_block reads for this share: K step 0 of the first column block, a
 * contiguous run of column groups (ref.h layout). Only at small M (at most LEAD_ROWS rows
 * in the share), where the GEMM streams its weights from memory: at M = 16 having that block
 * in L2 saved 3-4 % of a BERT GEMM's time, at M = 128 nothing, and there the prefetch would
 * only push the activations the ops between two GEMMs use out of L2. */
size_t xf_linear_lead_avx512(const xf_gemm_w_t *w, int32_t m, int ith, int nth,
                             const void **p)
{
    int32_t r0, r1, c0, c1;
    *p = NULL;
    if ((!w->packed && !w->packed_bf16) ||
        !xf_gemm_share(m, w->n, MR, NR, ith, nth, &r0, &r1, &c0, &c1) ||
        r1 - r0 > LEAD_ROWS)
        return 0;
    const int bf = w->packed_bf16 != NULL;
    const int kc = w->k < KC ? w->k : KC;
    const size_t npad = xf_gemm_npad(w);
    int jc1 = c0 / NR * NR + block_cols(c0, c1, NC);
    jc1 = jc1 < c1 ? jc1 : c1;
    const char *wp = bf ? (const char *)w->packed_bf16 : (const char *)w->packed;
    size_t len;
    *p = block_span(wp, npad, (size_t)w->group, 0, bf ? (kc + 1) / 2 : kc, bf, c0, jc1, &len);
    return len;
}
