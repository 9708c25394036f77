/* Engine-internal: int8 Linear layers (ATTENTION.md §24, FastFormers). Weights quantised per
 * output channel at load, activations per row (per token) at run time, s32 accumulation, a
 * fused epilogue (dequantise + bias + GELU/ReLU). The int8 kernel table is separate from the
 * fp32 one (kernels.h) and picked the same way (cpu.h, XF_CPU caps): portable reference, AVX2
 * (vpmaddubsw), AVX-512 VNNI (vpdpbusd), AMX (TDPBUSD). Kernels never allocate, lock, log or
 * make syscalls; ith/nth split the work statically and every output element is the same
 * integer dot product whatever the split (bitwise thread independence). */
#ifndef XF_ENGINE_KERNELS_QGEMM_H
#define XF_ENGINE_KERNELS_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels.h"

/* Rows of the quantised activations are XF_QGEMM_KALIGN bytes apart at least (k padded with
 * x^q = 0), and a kernel may read whole groups of XF_QGEMM_MALIGN rows (the AMX tiles): the
 * buffer holds round_up(m, XF_QGEMM_MALIGN) rows; rows past m may hold anything. */
#define XF_QGEMM_KALIGN 64
#define XF_QGEMM_MALIGN 16
/* Weight panels: 16 output channels, K in groups of 4 (the VNNI / AMX B layout). */
#define XF_QGEMM_PANEL 16

/* An int8 Linear weight W[n][k] (HF layout), with wmax = 127 (or 63: the 7-bit weights of the
 * "avx2-w7" kernel, which keeps vpmaddubsw pairs of u8 × s7 below the s16 saturation):
 *   σ_o = max_k |W_ok| / wmax,  W^q_ok = clamp(round(W_ok / σ_o), −wmax, wmax)   (never −128)
 *   c_o = Σ_k W^q_ok                                                          (column sums)
 * With lane_max = L (128, the "avx2-s16" kernel; wmax 127) the weights are also bounded per
 * s16 lane of that kernel: every channel's four weights k ∈ {8j+2h, 8j+2h+1, 8j+2h+4,
 * 8j+2h+5} (h = 0, 1; the two vpmaddubsw pairs of two k-steps that one s16 lane sums) have
 * Σ|W^q| ≤ L, so that 255·L = 32640 ≤ 32767 and the s16 sum is exact. The scale takes the
 * lane bound, with room for the rounding of the four (each ≤ 1/2):
 *   σ_o = max_lanes Σ|W| / (L − 2),  Σ_lane |W^q| ≤ (L − 2) + 4·½ = L,  |W^q| ≤ L − 2.
 * For Gaussian-like weights this is the step of 7-bit weights (the fullest lane of 4 is about
 * twice the largest weight); a channel whose largest weight stands out keeps nearly 8 bits
 * (up to ±126) where wmax 63 would halve its resolution.
 * Packed in panels of 16 channels × k_pad (k in groups of 4: 64 bytes per panel and k-group),
 * zero for padding (16p + c >= n or 4g + r >= k), the panels in runs of G = group panels
 * (the last run of a weight may be shorter: G_P = min(G, n_pad/16 − P·G)). In run P the
 * k-groups go outermost, so its panels' 64 bytes of one k-group are consecutive:
 *   wq[P·G·k_pad·16 + (g·G_P + j)·64 + c·4 + r] = W^q[16(P·G + j) + c][4g + r].
 * G = 1 (the AVX2, AMX and reference tables): one panel is k_pad·16 consecutive bytes, and 16
 * consecutive k-groups of it are one AMX B tile (16 rows × 64 bytes). G = 3 (the VNNI table,
 * whose tiles are 48 channels wide, when k_pad ≤ XF_QGEMM_GROUP_KMAX): a tile's weights are one
 * sequential run of 192 bytes per k-group instead of three streams k_pad·16 bytes apart. */
typedef struct xf_qgemm_w {
    int32_t n, k;           /* out features, in features */
    int32_t n_pad, k_pad;   /* n rounded up to 16, k rounded up to XF_QGEMM_KALIGN */
    int32_t wmax;           /* 127 or 63 */
    int32_t lane_max;       /* 0 (no lane bound) or the bound L on the s16 lanes' Σ|W^q| */
    int32_t group;          /* G: panels per run (1, or 3 for the VNNI table; above) */
    int8_t *wq;             /* owned, 64-byte aligned, n_pad·k_pad bytes */
    float *sigma;           /* owned [n_pad], 0 for padding channels */
    int32_t *colsum;        /* owned [n_pad] */
    size_t bytes;           /* wq + sigma + colsum */
} xf_qgemm_w_t;

/* Quantise and pack w[n][k] (fp32, row-major) to [−wmax, wmax] (127, or 63 for a table whose
 * wmax says so), with the lane bound lane_max (0: none; else 8..128, only with wmax 127), in
 * runs of `group` panels (the table's wgroup: 1 or 3; 3 only when k_pad ≤ XF_QGEMM_GROUP_KMAX,
 * else 1). A
 * channel of zeros gets σ = 0; a non-finite weight is refused (-EINVAL: the model file is
 * broken). Returns 0, -EINVAL or -ENOMEM; on failure *qw is left empty. Free with
 * xf_qgemm_w_deinit() (which accepts an empty one). */
int xf_qgemm_w_init(xf_qgemm_w_t *qw, const float *w, int32_t n, int32_t k, int32_t wmax,
                    int32_t lane_max, int32_t group);
/* The largest Σ|W^q| over the s16 lanes of channel o (lane_max's definition above). */
int32_t xf_qgemm_w_lane_sum(const xf_qgemm_w_t *qw, int32_t o);
void xf_qgemm_w_deinit(xf_qgemm_w_t *qw);
/* One weight of n_parts quantised weights stacked along the output channels (Q, K, V: one
 * GEMM, one column split): the same k, wmax, lane bound and group, and every part but the
 * last a whole number of panels (n % 16 == 0), so that the panels, scales and column sums just
 * follow each other (repacked into runs of the group over the whole stack) and channel o of
 * the result is the same integers and σ as in its part (the outputs are
 * bitwise those of the separate GEMMs). Returns 0, -ENOTSUP (not stackable), -EINVAL or
 * -ENOMEM; on failure *out is left empty. The parts are not changed. */
int xf_qgemm_w_stack(xf_qgemm_w_t *out, const xf_qgemm_w_t *parts, int n_parts);

/* The layout with G = 3 only for k_pad up to this: its 48-channel tile (k_pad·48 bytes) then
 * fits a 48 KB L1 and is read again from there by every row tile. Measured (Zen 5, VNNI, one
 * thread, 64 rows, weights from L3 or memory, bench/results/qgemm_zen5.txt q8pack): G = 3 was
 * 1–7 % faster at K = 768 and 4 % slower at K = 3072 (level at 1024–2048). */
#define XF_QGEMM_GROUP_KMAX 1024

/* Byte offset of panel p's first k-group in wq, and the bytes from one k-group of the panel to
 * the next (G_P·64). */
static inline size_t xf_qgemm_w_panel_off(const xf_qgemm_w_t *qw, int32_t p)
{
    size_t G = (size_t)qw->group, P = (size_t)p / G;
    return P * G * (size_t)qw->k_pad * 16 + ((size_t)p - P * G) * 64;
}
static inline size_t xf_qgemm_w_gstride(const xf_qgemm_w_t *qw, int32_t p)
{
    int32_t left = qw->n_pad / 16 - p / qw->group * qw->group;
    return (size_t)(left < qw->group ? left : qw->group) * 64;
}

/* W^q[o][k] of a packed weight (for the reference kernel and tests). */
static inline int8_t xf_qgemm_w_at(const xf_qgemm_w_t *qw, int32_t o, int32_t k)
{
    size_t g = (size_t)k / 4, r = (size_t)k % 4, c = (size_t)o % 16;
    return qw->wq[xf_qgemm_w_panel_off(qw, o / 16) + g * xf_qgemm_w_gstride(qw, o / 16) + c * 4 +
                  r];
}

/* Bytes of the activation buffer for m rows of k inputs: round_up(m, 16) rows of
 * round_up(k, 64) u8, then the m row scales (float), 64-byte aligned parts. The row stride
 * is xf_qgemm_ldq(k); the scales start at xf_qgemm_alpha_offset(m, k). */
int32_t xf_qgemm_ldq(int32_t k);
size_t xf_qgemm_alpha_offset(int32_t m, int32_t k);
size_t xf_qgemm_act_bytes(int32_t m, int32_t k);

/* Where qlinear_quant puts the quantised copy of its output y[m][n] (the next Linear's
 * activation buffer, as xf_qgemm_act_bytes(m, n) lays it out). */
typedef struct xf_qout {
    uint8_t *xq;      /* rows ldq = xf_qgemm_ldq(n) apart */
    int32_t ldq;
    float *alpha;     /* [m] row scales */
} xf_qout_t;

typedef void (*xf_quant_rows_fn)(int32_t r0, int32_t r1, int32_t k, const float *x,
                                 int32_t ldx, uint8_t *xq, int32_t ldq, float *alpha);

typedef struct xf_qkernels {
    const char *name;   /* "ref", "avx2", "avx2-w7", "avx2-s16", "vnni", "amx" */
    int32_t wmax;       /* the weights it takes: xf_qgemm_w_init(..., wmax, lane_max) */
    int32_t lane_max;
    int32_t wgroup;     /* panels per run of the weights it takes (xf_qgemm_w_init's group; 0
                         * or 1: one panel, which the AVX2 and AMX kernels need; VNNI: 3, and
                         * it takes runs of one panel too) */

    /* Per-row (per-token) symmetric quantisation of rows [r0, r1) of x[.][k]:
     *   α_t = max_k |x_tk| / 127,  x^q = clamp(round(x_tk · (127 / max_k|x_tk|)), −127, 127),
     *   xq[t][k] = x^q + 128 (u8, in [1, 255]); xq[t][k..ldq) = 128 (x^q = 0).
     * Rounding to nearest even. A zero row gets α = 0; a row with a NaN or ±inf gets α = NaN
     * and x^q = 0 (the outputs become NaN and the forward reports non-finite states).
     * Bitwise identical in every implementation (a max and one multiply per element). */
    void (*quant_rows)(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                       uint8_t *xq, int32_t ldq, float *alpha);

    /* y[t][o] = epi(acc_to · (α_t·σ_o) + b_o) with acc_to = Σ_k x^q_tk · W^q_ok (s32, exact),
     * for this thread's share of rows [0, m) and channels [0, n) (ith/nth). The float part is
     * rounded in that order in every implementation (bitwise equal before the activation;
     * the activation is the vector GELU of the fp32 kernels). bias may be NULL only with
     * XF_EPI_NONE (which adds no bias). xq rows up to round_up(m, 16) must be readable.
     * The activation of the GELU epilogues is the polynomial GELU of gelu_poly.h (every
     * table: the same fp32 operations, so the whole epilogue is bitwise the same). */
    void (*qlinear)(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth);

    /* qlinear, and its output quantised for the next Linear: y exactly as qlinear writes it,
     * and qo's rows [0, m) and scales exactly (bitwise) as quant_rows(0, m, n, y, ldy, qo->xq,
     * qo->ldq, qo->alpha) would make them afterwards. The work is split by whole rows (each
     * thread all n columns of its rows), and each chunk of rows is quantised right after its
     * last column is written, while it is still in cache: no second pass over y from memory
     * and no quantising op (with its barrier) before the next Linear. For m well above the
     * thread count (a row split reads all of W per thread; plan.c decides). */
    void (*qlinear_quant)(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);

    /* Int8 peak loop: `iters` rounds of independent multiply-accumulate chains of this
     * ISA's int8 instruction (vpdpbusd, vpmaddubsw + vpmaddwd, TDPBUSD); returns the
     * operations done (2 per multiply-add) and adds a result to *sink. */
    double (*peak_loop)(int64_t iters, int32_t *sink);
} xf_qkernels_t;

/* The loops the AVX2 and VNNI kernels share (no ISA in them): this thread's share of the
 * m × n output (rows or 16-channel panels, one policy for every own GEMM), rows in chunks whose
 * activations fit in half a 512 KB L2 while the weights stream by, then nr-column tiles (nr a
 * multiple of 16: whole panels) starting at multiples of nr (a share starting between two
 * gets a narrower first tile: with nr = 16·G every tile lies in one run of G panels) and
 * mr-row tiles. tile() computes one tile, rows [ir, ir + rows) × columns [jr, jr + ncol),
 * full K, with the epilogue; first = 1 for the first row tile of a column tile in its chunk
 * (the one that fetches the tile's weights: VNNI prefetches there); ctx is the kernel's own
 * (e.g. its micro-kernel table). Every output element is the same whatever the split. With qo
 * (qlinear_quant): whole rows per thread (blocks of mr), in chunks of xf_qout_chunk_rows
 * (below), and quant() on each chunk's rows once its last tile is done.
 * A chunk's rows of y stay in L2 (XF_QOUT_CHUNK_BYTES: 128 KB, 8 rows at d_ff 3072)...
 * unless all of the thread's rows of y fit in XF_QOUT_WHOLE_BYTES (the L2 of the VNNI
 * machines): then they are one chunk, and every weight tile is fetched once and used for all
 * of them. At b=1 n=128 on 2 threads (64 rows × 3072 columns per thread) eight 8-row chunks
 * read all of FFN1's weight eight times from L3; one chunk was ~8 % faster (bench, 1 thread);
 * at 512 rows the 128 KB chunks were faster than 80-row ones. */
#define XF_QOUT_CHUNK_BYTES (128 * 1024)
#define XF_QOUT_WHOLE_BYTES (1024 * 1024)
/* Rows per chunk of qlinear_quant for a thread's `rows` rows of y[.][n]: a multiple of mr. */
int xf_qout_chunk_rows(int32_t rows, int32_t n, int mr);
/* The work of thread ith of nth in a qlinear (qo = 0) or qlinear_quant (qo = 1) of m rows:
 * rows [r0, r1) × columns [c0, c1) and rows per chunk *mc (a multiple of rb, at least rb).
 * qlinear: the own GEMMs' split (xf_gemm_share with mr × nr tiles), chunks whose activations
 * take at most 256 KB; qlinear_quant: whole rows per thread in blocks of rb, all columns,
 * chunks also of at most xf_qout_chunk_rows. Returns 0 when the thread has no work. Shared by
 * xf_qgemm_drive (rb = mr) and the AMX kernel (rb = 32, 16 × 32 tiles). */
int xf_qgemm_share(const xf_qgemm_w_t *w, int32_t m, int rb, int mr, int nr, int qo, int ith,
                   int nth, int32_t *r0, int32_t *r1, int32_t *c0, int32_t *c1, int *mc);
typedef void (*xf_qtile_fn)(const void *ctx, const xf_qgemm_w_t *w, int rows, int32_t jr,
                            int ncol, const uint8_t *xq, size_t ldq, const float *alpha,
                            const float *bias, enum xf_epilogue epi, float *y, size_t ldy,
                            int first);   /* first: the column tile's first row tile in its chunk */
void xf_qgemm_drive(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth, int mr, int nr, xf_qtile_fn tile,
                    const void *ctx, const xf_qout_t *qo, xf_quant_rows_fn quant);

/* The int8 table for this CPU (after the XF_CPU cap: avx2 → AVX2, avx512 → VNNI, amx → AMX
 * when the CPU has AMX-INT8). Ownership: borrowed, static. Thread-safe. */
const xf_qkernels_t *xf_qkernels(void);
const xf_qkernels_t *xf_qkernels_ref(void);
/* Every int8 table this CPU runs, reference first (tests): returns the count. */
int xf_qkernels_all(const xf_qkernels_t **tables, int cap);

/* Reference implementations (kernels/ref/qlinear_ref.c). */
void xf_quant_rows_ref(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                       uint8_t *xq, int32_t ldq, float *alpha);
void xf_qlinear_ref(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth);
void xf_qlinear_quant_ref(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);
double xf_qpeak_loop_ref(int64_t iters, int32_t *sink);

#ifdef XF_HAVE_X86_64
void xf_quant_rows_avx2(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                        uint8_t *xq, int32_t ldq, float *alpha);
void xf_qlinear_avx2(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                     const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                     int32_t ldy, int ith, int nth);
double xf_qpeak_loop_avx2(int64_t iters, int32_t *sink);
void xf_qlinear_quant_avx2(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);
void xf_qlinear_quant_avx2_w7(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);
void xf_qlinear_quant_avx2_s16(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);
void xf_qlinear_avx2_s16(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                         const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                         int32_t ldy, int ith, int nth);
void xf_qlinear_avx2_w7(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                        const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                        int32_t ldy, int ith, int nth);
void xf_quant_rows_avx512(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                          uint8_t *xq, int32_t ldq, float *alpha);
void xf_qlinear_vnni(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                     const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                     int32_t ldy, int ith, int nth);
double xf_qpeak_loop_vnni(int64_t iters, int32_t *sink);
void xf_qlinear_quant_vnni(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);
#ifdef XF_HAVE_AMX
void xf_qlinear_amx(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth);
double xf_qpeak_loop_amx(int64_t iters, int32_t *sink);
void xf_qlinear_quant_amx(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth);
#endif
#endif

#endif
