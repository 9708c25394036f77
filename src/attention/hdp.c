/* "hdp" (ATTENTION.md §25, RECONSTRUCTED): hybrid dynamic pruning, run by the family-T kernel.
 * Per (sequence, layer), all heads together, in prepare (prepare_par on the pool):
 *   fixed point X = sat(round(x·2^f)) of the raw q (q / q_scale) and k, saturated so that the
 *   integer part fits int8 (X ∈ [−128·2^f, 128·2^f − 1]); split "floor": I = X >> f,
 *   F = X − I·2^f ∈ [0, 2^f); split "sign": I = sign(X)·(|X| >> f), F = X − I·2^f;
 *   integer scores S = I_q I_kᵀ (exact, int32), block importance Imp[a][c] = Σ|S| over the
 *   2×2 block (clipped to n), row-balanced threshold θ_a(ρ_B) from the row's lo/mean/hi
 *   (θ ≤ mean for ρ_B ≤ 1, θ ≤ hi always: the row maximum is kept), head importance
 *   Σ_{a,c} Imp / max over heads, head pruned iff Ĥ < τ_H (the strongest head survives).
 * The forward zeroes the pruned heads' output rows and runs the kept heads through the tile
 * kernel in tiles of tile_rows rows (32: the dense tiles): a tile's keys are the union of its
 * block rows' kept blocks ("full" where all keep them), the rest masked by the bitmap (2 rows:
 * one block row, its kept blocks exactly, no mask, but short tiles), logits exact
 * (factor·q·k: with every block kept the arithmetic is the dense kernel's, bitwise) or, with
 * approx, s·(X_q·X_k − F_q·F_k)/2^{2f} (the fraction×fraction term dropped), NaN inputs kept
 * visible. ρ_B = 0, τ_H = 0 without approx prunes nothing by definition: dense, no pre-pass.
 * Params: rho_B 1.0 [0, 2], tau_H 0.0 [0, 1], frac_bits 3 [0, 8], approx false,
 * split "floor" | "sign", tile_rows 32 (even, 2..32). The pre-pass runs on every pool thread
 * (prepare_par: (sequence, head) items split by cost; the heads are decided in the forward
 * from the sums), its integer kernel per ISA (XF_CPU caps it; integers: the same bits). Counts of
 * kept/pruned blocks and heads: xf_attn_prune_stats(). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_s.h"
#include "attention/fam_t.h"
#include "attention/params.h"
#include "engine/cpu.h"
#include "engine/model.h"

#define HDP_TILE XF_AT_T_BQ   /* default and most query rows per tile: the dense tiles */
#define HDP_IMAX 128          /* integer parts saturate to [−128, 127] (int8) */

static const char *const split_names[] = { "floor", "sign", NULL };

typedef struct hdp_params {
    double rho_B, tau_H;
    int32_t frac_bits, approx, split, tile_rows;
} hdp_params;

static const hdp_params hdp_defaults = {
    .rho_B = 1.0, .tau_H = 0.0, .frac_bits = 3, .approx = 0, .split = 0, .tile_rows = HDP_TILE,
};

static const xf_at_key_t hdp_pkeys[] = {
    XF_AT_KEY(hdp_params, rho_B, "rho_B", XF_AT_K_REAL, 0.0, 2.0, NULL),
    XF_AT_KEY(hdp_params, tau_H, "tau_H", XF_AT_K_REAL, 0.0, 1.0, NULL),
    XF_AT_KEY(hdp_params, frac_bits, "frac_bits", XF_AT_K_INT, 0, 8, NULL),
    XF_AT_KEY(hdp_params, approx, "approx", XF_AT_K_BOOL, 0, 1, NULL),
    XF_AT_KEY(hdp_params, split, "split", XF_AT_K_ENUM, 0, 0, split_names),
    XF_AT_KEY(hdp_params, tile_rows, "tile_rows", XF_AT_K_INT, 2, HDP_TILE, NULL),
};

static int hdp_check(const void *params, char *err, size_t errlen)
{
    const hdp_params *p = params;
    if (p->tile_rows % 2)
        return xf_at_err(err, errlen, "tile_rows: must be even (whole block rows), got %d",
                         p->tile_rows);
    return 0;
}

/* Nothing can be pruned: the dense kernel, no pre-pass. */
static int hdp_nothing(const hdp_params *p)
{
    return p->rho_B == 0.0 && p->tau_H == 0.0 && !p->approx;
}

/* ---- process-wide counts (metrics) ---- */

static _Atomic uint64_t st_blocks, st_blocks_pruned, st_heads, st_heads_pruned;

void xf_attn_prune_stats(xf_attn_prune_stats_t *out)
{
    if (!out)
        return;
    out->blocks = atomic_load_explicit(&st_blocks, memory_order_relaxed);
    out->blocks_pruned = atomic_load_explicit(&st_blocks_pruned, memory_order_relaxed);
    out->heads = atomic_load_explicit(&st_heads, memory_order_relaxed);
    out->heads_pruned = atomic_load_explicit(&st_heads_pruned, memory_order_relaxed);
}

/* ---- shared scratch (prepare writes, forward reads) ---- */

typedef struct hdp_layout {
    size_t hsum;       /* int64 [n_seq][H] head importance sums (Ĥ, step 5, read by forward) */
    size_t bits;       /* uint64 bitmaps, per sequence [H][n_b][W] (W = ⌈n_b/64⌉ words) */
    size_t off;        /* uint64 [n_seq]: word offset of each sequence's bitmaps */
    size_t qi, ki;     /* approx: int16 [H][Nrun][dp] integer parts of q and k (else 0 bytes) */
    size_t qf, kf;     /* approx: int16 [H][Nrun][dp] fractions ·2^f */
    size_t nanq, nank; /* approx: uint8 [H][Nrun] rows holding a NaN */
    /* One slot per preparing thread from slot0, slot bytes apart; offsets within a slot: */
    size_t iq, ik;     /* int16 [nmax][dp] integer parts of one (sequence, head) */
    size_t kp;         /* int16 [dp/2][npad][2] k's integer parts, pairs of dims */
    size_t col;        /* int32 [2][npad] per key, |S| summed over a block row */
    size_t tail;       /* int16 [4][dp] the last query rows, zero-padded */
    size_t imp;        /* int32 [nb] one block row's importances */
    size_t qp;         /* int32 [4][dp/2] query pairs for the kernels' broadcasts */
    size_t slot0, slot;
    size_t total;      /* for nth slots */
} hdp_layout;

static size_t al64(size_t x)
{
    return (x + 63) & ~(size_t)63;
}

static int32_t words_of(int32_t n)
{
    int32_t nb = (n + 1) / 2;
    return (nb + 63) / 64;
}

static size_t seq_bits(int32_t n, int32_t H)
{
    return (size_t)H * (size_t)((n + 1) / 2) * (size_t)words_of(n);
}

static int32_t dpad(int32_t d)
{
    return (d + 15) & ~15;
}

/* Keys padded to the widest kernel's lanes. */
static int32_t npad_of(int32_t n)
{
    return (n + 15) & ~15;
}

/* The shared scratch for prepare_par with nth threads (forward reads only the part before
 * slot0, the same for every nth). */
static void hdp_layout_of(const hdp_params *p, const xf_attn_shape *sh, int nth, hdp_layout *L)
{
    size_t o = 0, nbits = 0, dp = (size_t)dpad(sh->d_head), H = (size_t)sh->n_head;
    int32_t nmax = 0;
    size_t nrun = sh->n_seq > 0 ? (size_t)(sh->cu_len[sh->n_seq] - sh->cu_len[0]) : 0;
    for (int32_t s = 0; s < sh->n_seq; s++) {
        int32_t n = sh->cu_len[s + 1] - sh->cu_len[s];
        nbits += seq_bits(n, sh->n_head);
        if (n > nmax)
            nmax = n;
    }
    memset(L, 0, sizeof(*L));
    if (hdp_nothing(p))
        return;
    L->hsum = o; o = al64(o + (size_t)sh->n_seq * H * 8);
    L->off = o; o = al64(o + (size_t)sh->n_seq * 8);
    L->bits = o; o = al64(o + nbits * 8);
    size_t xb = p->approx ? H * nrun * dp * 2 : 0, nb = p->approx ? H * nrun : 0;
    L->qi = o; o = al64(o + xb);
    L->ki = o; o = al64(o + xb);
    L->qf = o; o = al64(o + xb);
    L->kf = o; o = al64(o + xb);
    L->nanq = o; o = al64(o + nb);
    L->nank = o; o = al64(o + nb);
    L->slot0 = o;
    o = 0;
    L->iq = o; o = al64(o + (size_t)nmax * dp * 2);
    L->ik = o; o = al64(o + (size_t)nmax * dp * 2);
    L->kp = o; o = al64(o + (size_t)npad_of(nmax) * dp * 2);
    L->col = o; o = al64(o + 2 * (size_t)npad_of(nmax) * 4);
    L->tail = o; o = al64(o + 4 * dp * 2);
    L->imp = o; o = al64(o + ((size_t)nmax / 2 + 1) * 8);
    L->qp = o; o = al64(o + 2 * dp * 4);
    L->slot = o;
    L->total = L->slot0 + (size_t)(nth > 1 ? nth : 1) * L->slot + 64;   /* 64: to align */
}

/* What the pattern callbacks see as their params: the parameters and, at forward time, the
 * prepared pruning (NULL at plan time: every head kept, cost estimated dense). */
typedef struct hdp_run {
    const hdp_params *p;
    const unsigned char *ws;   /* aligned shared scratch, or NULL */
    hdp_layout L;
    int32_t cu0, nrun;
} hdp_run;

static unsigned char *align64(const void *ws)
{
    return (unsigned char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
}

/* ---- fixed point ---- */

/* X = sat(round(x·2^f)); NaN -> 0 (flagged separately). */
static int16_t fixed_of(double x, int32_t f)
{
    const double hi = (double)(HDP_IMAX << f) - 1.0, lo = -(double)(HDP_IMAX << f);
    if (isnan(x))
        return 0;
    double v = round(x * (double)(1 << f));
    if (v > hi)
        v = hi;
    if (v < lo)
        v = lo;
    return (int16_t)v;
}

static int16_t int_part(int16_t X, int32_t f, int sign)
{
    if (!sign)
        return (int16_t)(X >> f);   /* arithmetic shift: floor (gcc/clang on two's complement) */
    return X < 0 ? (int16_t)-((-X) >> f) : (int16_t)(X >> f);
}

/* ---- prepare ---- */

/* The integer scores of 4 query rows (q: [4][dp] int16; qp: [4][dp/2] int32 scratch) against
 * every key (kp: k's integer parts as [dp/2][npad][2], pairs of dimensions per key), reduced
 * to per-key sums of |S| over rows 0-1 (c0) and rows 2-3 (c1), j < npad. Exact in int32:
 * |I| <= 128 and d <= HDP_MAX_DHEAD. Integer arithmetic: every ISA gives the same bits. The
 * pre-pass kernels follow the engine's CPU selection (XF_CPU caps them). */
static void rows4_c(const int16_t *q, int32_t *qp, const int16_t *kp, int32_t npad, int32_t dp,
                    int32_t *c0, int32_t *c1)
{
    (void)qp;
    for (int32_t j0 = 0; j0 < npad; j0 += 16) {
        int32_t acc[4][16];
        memset(acc, 0, sizeof acc);
        for (int32_t cp = 0; cp < dp / 2; cp++) {
            const int16_t *kr = kp + ((size_t)cp * npad + j0) * 2;
            for (int32_t r = 0; r < 4; r++) {
                const int32_t a0 = q[(size_t)r * dp + 2 * cp], a1 = q[(size_t)r * dp + 2 * cp + 1];
                for (int32_t l = 0; l < 16; l++)
                    acc[r][l] += a0 * kr[2 * l] + a1 * kr[2 * l + 1];
            }
        }
        for (int32_t l = 0; l < 16; l++) {
            c0[j0 + l] = abs(acc[0][l]) + abs(acc[1][l]);
            c1[j0 + l] = abs(acc[2][l]) + abs(acc[3][l]);
        }
    }
}

#ifdef XF_HAVE_X86_64
#include <immintrin.h>

/* q's pair (2c, 2c+1) of row r as one int32 for a broadcast (qp: [4][dp/2]). */
static void qpairs(const int16_t *q, int32_t dp, int32_t *qp)
{
    for (int32_t r = 0; r < 4; r++)
        for (int32_t cp = 0; cp < dp / 2; cp++) {
            uint32_t lo = (uint16_t)q[(size_t)r * dp + 2 * cp];
            uint32_t hi = (uint16_t)q[(size_t)r * dp + 2 * cp + 1];
            qp[r * (dp / 2) + cp] = (int32_t)(lo | hi << 16);
        }
}

__attribute__((target("avx2"))) static void rows4_avx2(const int16_t *q, int32_t *qp,
                                                       const int16_t *kp, int32_t npad,
                                                       int32_t dp, int32_t *c0, int32_t *c1)
{
    const int32_t h = dp / 2;
    qpairs(q, dp, qp);
    for (int32_t j0 = 0; j0 < npad; j0 += 8) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t cp = 0; cp < dp / 2; cp++) {
            __m256i k = _mm256_loadu_si256((const __m256i *)(kp + ((size_t)cp * npad + j0) * 2));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_set1_epi32(qp[0 * h + cp]), k));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_set1_epi32(qp[1 * h + cp]), k));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_set1_epi32(qp[2 * h + cp]), k));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_set1_epi32(qp[3 * h + cp]), k));
        }
        _mm256_storeu_si256((__m256i *)(c0 + j0),
                            _mm256_add_epi32(_mm256_abs_epi32(a0), _mm256_abs_epi32(a1)));
        _mm256_storeu_si256((__m256i *)(c1 + j0),
                            _mm256_add_epi32(_mm256_abs_epi32(a2), _mm256_abs_epi32(a3)));
    }
}

__attribute__((target("avx512f,avx512bw"))) static void rows4_avx512(const int16_t *q,
                                                                     int32_t *qp,
                                                                     const int16_t *kp,
                                                                     int32_t npad, int32_t dp,
                                                                     int32_t *c0, int32_t *c1)
{
    const int32_t h = dp / 2;
    qpairs(q, dp, qp);
    for (int32_t j0 = 0; j0 < npad; j0 += 16) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t cp = 0; cp < dp / 2; cp++) {
            __m512i k = _mm512_loadu_si512((const void *)(kp + ((size_t)cp * npad + j0) * 2));
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_set1_epi32(qp[0 * h + cp]), k));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_set1_epi32(qp[1 * h + cp]), k));
            a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(_mm512_set1_epi32(qp[2 * h + cp]), k));
            a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(_mm512_set1_epi32(qp[3 * h + cp]), k));
        }
        _mm512_storeu_si512((void *)(c0 + j0),
                            _mm512_add_epi32(_mm512_abs_epi32(a0), _mm512_abs_epi32(a1)));
        _mm512_storeu_si512((void *)(c1 + j0),
                            _mm512_add_epi32(_mm512_abs_epi32(a2), _mm512_abs_epi32(a3)));
    }
}
#endif

typedef void (*rows4_fn)(const int16_t *, int32_t *, const int16_t *, int32_t, int32_t,
                         int32_t *, int32_t *);

/* The row-balanced threshold of one block row (ATTENTION.md §25 step 4) from its importances'
 * min lo, sum and max hi over nb blocks; clamped so that θ <= mean for ρ <= 1 (monotone
 * across ρ = 1 whatever the rounding) and θ <= hi (the row maximum is kept). */
static double threshold(int64_t lo, int64_t sum, int64_t hi, int32_t nb, double rho)
{
    const double mu = (double)sum / nb;
    double th;
    if (rho <= 1.0) {
        th = (double)lo + rho * (mu - (double)lo);
        if (th > mu)
            th = mu;
    } else {
        th = mu + (rho - 1.0) * ((double)hi - mu);
        if (th < mu)
            th = mu;
    }
    return th > (double)hi ? (double)hi : th;
}

/* One block row's importances from its per-key column sums (cs: [npad], zero past n, so
 * the last block of an odd n is clipped by itself): imp[c] = cs[2c] + cs[2c + 1], and their
 * min, max and sum. Compiled per ISA below (plain C the compiler vectorises). */
static inline __attribute__((always_inline)) void row_stats_body(const int32_t *cs, int32_t nb,
                                                                 int32_t *imp, int32_t *lo,
                                                                 int32_t *hi, int64_t *sum)
{
    int32_t l = INT32_MAX, h = INT32_MIN;
    int64_t sm = 0;
    for (int32_t c = 0; c < nb; c++) {
        int32_t v = cs[2 * c] + cs[2 * c + 1];
        imp[c] = v;
        l = v < l ? v : l;
        h = v > h ? v : h;
        sm += v;
    }
    *lo = l;
    *hi = h;
    *sum = sm;
}

static void row_stats_c(const int32_t *cs, int32_t nb, int32_t *imp, int32_t *lo, int32_t *hi,
                        int64_t *sum)
{
    row_stats_body(cs, nb, imp, lo, hi, sum);
}

#ifdef XF_HAVE_X86_64
__attribute__((target("avx2"))) static void row_stats_avx2(const int32_t *cs, int32_t nb,
                                                           int32_t *imp, int32_t *lo,
                                                           int32_t *hi, int64_t *sum)
{
    row_stats_body(cs, nb, imp, lo, hi, sum);
}

__attribute__((target("avx512f,avx512bw"))) static void row_stats_avx512(const int32_t *cs,
                                                                         int32_t nb,
                                                                         int32_t *imp,
                                                                         int32_t *lo,
                                                                         int32_t *hi,
                                                                         int64_t *sum)
{
    row_stats_body(cs, nb, imp, lo, hi, sum);
}
#endif

typedef void (*row_stats_fn)(const int32_t *, int32_t, int32_t *, int32_t *, int32_t *,
                             int64_t *);

/* Keep bits of one block row: Imp >= θ, i.e. Imp >= ⌈θ⌉ for integer importances. Returns the
 * blocks kept. */
static int32_t row_keep(const int32_t *imp, int32_t nb, int32_t lo, int32_t hi, int64_t sum,
                        double rho, uint64_t *bits)
{
    const int32_t T = (int32_t)ceil(threshold(lo, sum, hi, nb, rho));
    int32_t kept = 0;
    for (int32_t w = 0; w < (nb + 63) / 64; w++) {
        const int32_t c0 = w * 64, m = nb - c0 < 64 ? nb - c0 : 64;
        uint64_t v = 0;
        for (int32_t i = 0; i < m; i++)
            v |= (uint64_t)(imp[c0 + i] >= T) << i;
        bits[w] = v;
        kept += __builtin_popcountll(v);
    }
    return kept;
}

/* One (sequence, head): fixed point (stored for approx), integer parts, then every block
 * row's importances and keep bits (block rows two at a time: 4 query rows per key row).
 * Returns the head's importance sum; *kept counts kept blocks. */
static int64_t head_blocks(const hdp_params *p, const hdp_layout *L, unsigned char *base,
                           unsigned char *slot, const xf_attn_shape *sh, const xf_attn_io *io,
                           int32_t s, int32_t h, uint64_t *hb, uint64_t *kept)
{
    const int32_t d = sh->d_head, dp = dpad(d), f = p->frac_bits, N = sh->n_tokens;
    const int32_t cu0 = sh->cu_len[0], nrun = sh->cu_len[sh->n_seq] - cu0;
    const int32_t t0 = sh->cu_len[s], n = sh->cu_len[s + 1] - t0;
    const int32_t nb = (n + 1) / 2, W = words_of(n);
    const int sign = p->split == 1;
    (void)W;
    const float *Q = io->q + (size_t)h * N * d, *K = io->k + (size_t)h * N * d;
    const size_t row0 = (size_t)h * nrun + (size_t)(t0 - cu0);
    int16_t *iq = p->approx ? (int16_t *)(base + L->qi) + row0 * dp : (int16_t *)(slot + L->iq);
    int16_t *ik = p->approx ? (int16_t *)(base + L->ki) + row0 * dp : (int16_t *)(slot + L->ik);
    int16_t *fq = p->approx ? (int16_t *)(base + L->qf) + row0 * dp : NULL;
    int16_t *fk = p->approx ? (int16_t *)(base + L->kf) + row0 * dp : NULL;
    int16_t *tail = (int16_t *)(slot + L->tail), *kp = (int16_t *)(slot + L->kp);
    int32_t *col = (int32_t *)(slot + L->col), *qp = (int32_t *)(slot + L->qp);
    const int32_t npad = npad_of(n);
    rows4_fn rows4 = rows4_c;
    row_stats_fn row_stats = row_stats_c;
#ifdef XF_HAVE_X86_64
    const xf_cpu_t *cpu = xf_cpu();
    if (cpu->level >= XF_ISA_AVX512 && cpu->avx512f && cpu->avx512bw) {
        rows4 = rows4_avx512;
        row_stats = row_stats_avx512;
    } else if (cpu->level >= XF_ISA_AVX2 && cpu->avx2) {
        rows4 = rows4_avx2;
        row_stats = row_stats_avx2;
    }
#endif

    for (int32_t i = 0; i < n; i++) {
        const float *qr = Q + (size_t)(t0 + i) * d, *kr = K + (size_t)(t0 + i) * d;
        int nanq = 0, nank = 0;
        for (int32_t c = 0; c < dp; c++) {
            int16_t X = 0, Y = 0;
            if (c < d) {
                X = fixed_of((double)qr[c] / io->q_scale, f);
                Y = fixed_of((double)kr[c], f);
                nanq |= isnan(qr[c]);
                nank |= isnan(kr[c]);
            }
            const int16_t xi = int_part(X, f, sign), yi = int_part(Y, f, sign);
            iq[(size_t)i * dp + c] = xi;
            ik[(size_t)i * dp + c] = yi;
            if (fq) {
                fq[(size_t)i * dp + c] = (int16_t)(X - xi * (1 << f));
                fk[(size_t)i * dp + c] = (int16_t)(Y - yi * (1 << f));
            }
        }
        if (p->approx) {
            (base + L->nanq)[row0 + i] = (uint8_t)nanq;
            (base + L->nank)[row0 + i] = (uint8_t)nank;
        }
    }
    /* k's integer parts in pairs of dimensions per key (zero keys past n) */
    for (int32_t cp = 0; cp < dp / 2; cp++) {
        int16_t *dst = kp + (size_t)cp * npad * 2;
        for (int32_t j = 0; j < n; j++) {
            dst[2 * j] = ik[(size_t)j * dp + 2 * cp];
            dst[2 * j + 1] = ik[(size_t)j * dp + 2 * cp + 1];
        }
        memset(dst + 2 * (size_t)n, 0, sizeof(int16_t) * 2 * (size_t)(npad - n));
    }
    int64_t total = 0;
    int32_t *imp = (int32_t *)(slot + L->imp);
    for (int32_t a = 0; a < nb; a += 2) {
        const int32_t rows = n - 2 * a < 4 ? n - 2 * a : 4;
        const int16_t *qs = iq + (size_t)(2 * a) * dp;
        if (rows < 4) {   /* the last rows, zero-padded (a zero row scores 0) */
            memset(tail, 0, sizeof(int16_t) * 4 * (size_t)dp);
            memcpy(tail, qs, sizeof(int16_t) * (size_t)rows * dp);
            qs = tail;
        }
        int32_t *c0 = col, *c1 = col + npad;
        rows4(qs, qp, kp, npad, dp, c0, c1);
        for (int32_t r = 0; r < 2 && a + r < nb; r++) {
            int32_t lo, hi;
            int64_t sum;
            row_stats(r ? c1 : c0, nb, imp, &lo, &hi, &sum);
            total += sum;
            *kept += (uint64_t)row_keep(imp, nb, lo, hi, sum, p->rho_B, hb + (size_t)(a + r) * W);
        }
    }
    return total;
}

/* The pre-pass, split across the pool: (sequence, head) items in order, each thread a
 * contiguous share of about equal cost (n² per item). Every item is computed the same way by
 * whichever thread gets it and writes only its own bitmaps, its hsum entry and (approx) its
 * rows of the fixed-point copies, so ws_shared is bitwise the same for every nth. The heads
 * are decided in the forward, from hsum (it needs every head of a sequence). */
static int hdp_prepare_par(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                           const xf_attn_plan *pl, void *ws_shared, int ith, int nth)
{
    const hdp_params *p = params;
    int rc = xf_at_check_shape(sh);
    if (rc < 0)
        return rc;
    if (nth < 1 || ith < 0 || ith >= nth)
        return -EINVAL;
    const int32_t H = sh->n_head;
    uint64_t blocks = 0, bkept = 0;
    if (hdp_nothing(p) || sh->n_seq == 0) {
        if (ith == 0) {
            uint64_t heads = 0;
            for (int32_t s = 0; s < sh->n_seq; s++) {
                int64_t nb = (sh->cu_len[s + 1] - sh->cu_len[s] + 1) / 2;
                blocks += (uint64_t)(nb * nb) * (uint64_t)H;
                heads += nb ? (uint64_t)H : 0;
            }
            atomic_fetch_add_explicit(&st_blocks, blocks, memory_order_relaxed);
            atomic_fetch_add_explicit(&st_heads, heads, memory_order_relaxed);
        }
        return 0;
    }
    if (!io || !io->q || !io->k || !(io->q_scale != 0.0f) || !ws_shared || !pl)
        return -EINVAL;
    hdp_layout L;
    hdp_layout_of(p, sh, ith + 1, &L);   /* this thread's slot must fit */
    if (pl->ws_shared < L.total)
        return -EINVAL;
    unsigned char *base = align64(ws_shared), *slot = base + L.slot0 + (size_t)ith * L.slot;
    uint64_t *bits = (uint64_t *)(base + L.bits), *off = (uint64_t *)(base + L.off);
    int64_t *hsum = (int64_t *)(base + L.hsum);

    double total = 0;
    for (int32_t s = 0; s < sh->n_seq; s++) {
        const double n = (double)(sh->cu_len[s + 1] - sh->cu_len[s]);
        total += (double)H * (n * n + 1.0);
    }
    const double lo = total * ith / nth, hi = total * (ith + 1) / nth;
    double at = 0;   /* cost of the items before this one */
    for (int32_t s = 0; s < sh->n_seq; s++) {
        const int32_t n = sh->cu_len[s + 1] - sh->cu_len[s], nb = (n + 1) / 2;
        const size_t per_head = (size_t)nb * (size_t)words_of(n);
        const double cost = (double)n * (double)n + 1.0;
        if (ith == 0)
            off[s] = (uint64_t)(bits - (uint64_t *)(base + L.bits));
        for (int32_t h = 0; h < H; h++, at += cost) {
            if (at < lo || at >= hi)
                continue;
            uint64_t k = 0;
            hsum[(size_t)s * H + h] =
                n ? head_blocks(p, &L, base, slot, sh, io, s, h, bits + (size_t)h * per_head, &k)
                  : 0;
            blocks += (uint64_t)nb * (uint64_t)nb;
            bkept += k;
        }
        bits += (size_t)H * per_head;
    }
    atomic_fetch_add_explicit(&st_blocks, blocks, memory_order_relaxed);
    atomic_fetch_add_explicit(&st_blocks_pruned, blocks - bkept, memory_order_relaxed);
    return 0;
}

static int hdp_prepare(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                       const xf_attn_plan *pl, void *ws_shared)
{
    return hdp_prepare_par(params, sh, io, pl, ws_shared, 0, 1);
}

/* Head h of sequence s kept (step 5): Ĥ = H_h / max H (the mean's 1/nb² cancels) >= τ_H; none
 * pruned when the maximum is 0 (or the sequence is empty). */
static int head_keep(const hdp_params *p, const int64_t *hs, int32_t H, int32_t h)
{
    int64_t hmax = 0;
    for (int32_t g = 0; g < H; g++)
        hmax = hs[g] > hmax ? hs[g] : hmax;
    return hmax == 0 || !((double)hs[h] / (double)hmax < p->tau_H);
}

/* ---- the pattern (family T) ---- */

static const hdp_run *run_of(const xf_at_t_seq *c)
{
    return c->params;
}

/* This (sequence, head)'s bitmap [n_b][W], or NULL at plan time. */
static const uint64_t *head_bits(const xf_at_t_seq *c)
{
    const hdp_run *R = run_of(c);
    if (!R->ws)
        return NULL;
    const uint64_t *off = (const uint64_t *)(R->ws + R->L.off);
    return (const uint64_t *)(R->ws + R->L.bits) + off[c->s] +
           (size_t)c->head * (size_t)((c->n + 1) / 2) * (size_t)words_of(c->n);
}

static int head_kept(const xf_at_t_seq *c)
{
    const hdp_run *R = run_of(c);
    const int32_t H = c->sh->n_head;
    return !R->ws ||
           head_keep(R->p, (const int64_t *)(R->ws + R->L.hsum) + (size_t)c->s * H, H, c->head);
}

static int hdp_setup(xf_at_t_seq *c)
{
    c->dense = hdp_nothing(run_of(c)->p);
    return 0;
}

static int32_t hdp_n_tiles(const xf_at_t_seq *c)
{
    const int32_t T = run_of(c)->p->tile_rows;
    return head_kept(c) ? (c->n + T - 1) / T : 0;
}

/* Union (or) and intersection (and) of the tile's block rows' keep words. */
static void tile_words(const xf_at_t_seq *c, const uint64_t *hb, int32_t r0, int32_t nq,
                       int32_t w, uint64_t *or_w, uint64_t *and_w)
{
    const int32_t W = words_of(c->n);
    uint64_t o = 0, a = ~(uint64_t)0;
    for (int32_t br = r0 / 2; br <= (r0 + nq - 1) / 2; br++) {
        uint64_t v = hb[(size_t)br * W + w];
        o |= v;
        a &= v;
    }
    *or_w = o;
    *and_w = a;
}

static int32_t hdp_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                        int64_t *cost)
{
    const int32_t T = run_of(c)->p->tile_rows;
    int32_t nq = xf_at_t_seg_rows(c->n, T, T, t, rows);
    const uint64_t *hb = head_bits(c);
    int64_t keys = c->n;
    if (hb && nq > 0) {
        keys = 0;
        for (int32_t w = 0; w < words_of(c->n); w++) {
            uint64_t o, a;
            tile_words(c, hb, rows[0], nq, w, &o, &a);
            keys += 2 * __builtin_popcountll(o);
        }
    }
    *global = 0;
    *cost = (int64_t)nq * (keys > 0 ? keys : 1);
    return nq;
}

static void hdp_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)global;
    const uint64_t *hb = head_bits(c);
    if (!hb) {
        xf_at_t_keys_add(kb, c->n, 0, c->n, 1);
        return;
    }
    for (int32_t w = 0; w < words_of(c->n); w++) {
        uint64_t o, a;
        tile_words(c, hb, rows[0], nq, w, &o, &a);
        while (o) {   /* runs of kept blocks with the same "every row" flag */
            int b = __builtin_ctzll(o);
            int full = (int)((a >> b) & 1);
            uint64_t run = full ? a : (o & ~a);
            int e = b;
            while (e < 64 && ((run >> e) & 1))
                e++;
            int32_t blk = w * 64;
            xf_at_t_keys_add(kb, c->n, 2 * (blk + b), 2 * (blk + e), full);
            o &= e >= 64 ? 0 : ~(uint64_t)0 << e;
        }
    }
}

static int bit_at(const uint64_t *hb, int32_t W, int32_t i, int32_t j)
{
    const int32_t br = i / 2, bc = j / 2;
    return (int)((hb[(size_t)br * W + (bc >> 6)] >> (bc & 63)) & 1);
}

static int hdp_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    const uint64_t *hb = head_bits(c);
    return !hb || bit_at(hb, words_of(c->n), i, j);
}

/* b's 32 low bits, each doubled: bit i -> bits 2i and 2i + 1 (a block's two keys). */
static uint64_t twice_bits(uint32_t b)
{
    uint64_t x = b;
    x = (x | x << 16) & 0x0000FFFF0000FFFFull;
    x = (x | x << 8) & 0x00FF00FF00FF00FFull;
    x = (x | x << 4) & 0x0F0F0F0F0F0F0F0Full;
    x = (x | x << 2) & 0x3333333333333333ull;
    x = (x | x << 1) & 0x5555555555555555ull;
    return x | x << 1;
}

static void hdp_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                     const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    const uint64_t *hb = head_bits(c);
    const int32_t W = words_of(c->n);
    if (!hb || nk <= 0)
        return;
    /* A run of contiguous keys from an even one (every 64-key block the kernel reads in
     * place): each row's keep bits of the run's blocks, doubled, mark the kept keys. */
    if (keys[0] % 2 == 0 && keys[nk - 1] - keys[0] == nk - 1) {
        const int32_t b0 = keys[0] / 2, w = b0 >> 6, sh = b0 & 63;
        const uint64_t valid = nk == 64 ? ~(uint64_t)0 : ((uint64_t)1 << nk) - 1;
        for (int32_t r = 0; r < nq; r++) {
            const uint64_t *row = hb + (size_t)(rows[r] / 2) * W;
            uint64_t bits = row[w] >> sh;
            if (sh && w + 1 < W)
                bits |= row[w + 1] << (64 - sh);
            uint64_t drop = ~twice_bits((uint32_t)bits) & valid;
            float *sr = s + (size_t)r * XF_AT_T_BK;
            while (drop) {
                sr[__builtin_ctzll(drop)] = -INFINITY;
                drop &= drop - 1;
            }
        }
        return;
    }
    for (int32_t r = 0; r < nq; r++) {
        const uint64_t *row = hb + (size_t)(rows[r] / 2) * W;
        float *sr = s + (size_t)r * XF_AT_T_BK;
        for (int32_t jj = 0; jj < nk; jj++) {
            const int32_t bc = keys[jj] / 2;
            if (!full[jj] && !((row[bc >> 6] >> (bc & 63)) & 1))
                sr[jj] = -INFINITY;
        }
    }
}

/* approx logits: s·(q^I·k^I + q^I·k^F + q^F·k^I) = s·(A + B·2^−f) with the integer sums
 * A = Σ I_q I_k, B = Σ (I_q F_k + F_q I_k) (exact in int32: |I| <= 128, |F| < 2^8). */
static int hdp_logits(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                      int32_t nk, float *s, int32_t lds, float *hid, int first)
{
    (void)hid, (void)first;
    const hdp_run *R = run_of(c);
    const int32_t dp = dpad(c->sh->d_head);
    const size_t base = (size_t)c->head * R->nrun + (size_t)(c->t0 - R->cu0);
    const int16_t *qi = (const int16_t *)(R->ws + R->L.qi) + base * dp;
    const int16_t *ki = (const int16_t *)(R->ws + R->L.ki) + base * dp;
    const int16_t *qf = (const int16_t *)(R->ws + R->L.qf) + base * dp;
    const int16_t *kf = (const int16_t *)(R->ws + R->L.kf) + base * dp;
    const uint8_t *nanq = R->ws + R->L.nanq + base, *nank = R->ws + R->L.nank + base;
    const double sc = c->io->scale, inv = 1.0 / (double)(1 << R->p->frac_bits);
    for (int32_t r = 0; r < nq; r++) {
        const int16_t *aI = qi + (size_t)rows[r] * dp, *aF = qf + (size_t)rows[r] * dp;
        for (int32_t jj = 0; jj < nk; jj++) {
            const int16_t *bI = ki + (size_t)keys[jj] * dp, *bF = kf + (size_t)keys[jj] * dp;
            int32_t A = 0, B = 0;
            for (int32_t c0 = 0; c0 < dp; c0 += 16)
                for (int32_t x = 0; x < 16; x++) {
                    A += aI[c0 + x] * bI[c0 + x];
                    B += aI[c0 + x] * bF[c0 + x] + aF[c0 + x] * bI[c0 + x];
                }
            float v = (float)(sc * ((double)A + (double)B * inv));
            if (nanq[rows[r]] || nank[keys[jj]])
                v = NAN;
            s[(size_t)r * lds + jj] = v;
        }
    }
    return 0;
}

static const xf_at_t_variant hdp_pattern = {
    .setup = hdp_setup, .n_tiles = hdp_n_tiles, .tile = hdp_tile, .keys = hdp_keys,
    .member = hdp_member, .mask = hdp_mask,
};

static const xf_at_t_variant hdp_pattern_approx = {
    .setup = hdp_setup, .n_tiles = hdp_n_tiles, .tile = hdp_tile, .keys = hdp_keys,
    .member = hdp_member, .mask = hdp_mask, .logits = hdp_logits,
};

static const xf_at_t_variant *pattern_of(const hdp_params *p)
{
    return p->approx ? &hdp_pattern_approx : &hdp_pattern;
}

/* The integer sums stay exact in int32 up to this head width. */
#define HDP_MAX_DHEAD 8192

static int hdp_validate(const void *params, const xf_model_t *m, int layer, char *err,
                        size_t errlen)
{
    (void)params;
    const xf_model_info_t *mi = &m->info;
    int32_t d = mi->layers ? mi->layers[layer].d_head : 0;
    if (d > HDP_MAX_DHEAD)
        return xf_at_err(err, errlen, "hdp: head width %d of layer %d is over %d", d, layer,
                         HDP_MAX_DHEAD);
    return 0;
}

static int hdp_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    const hdp_params *p = params;
    hdp_run R = { .p = p };
    if (sh && sh->d_head > HDP_MAX_DHEAD)
        return XF_ESHAPE;
    int rc = xf_at_t_plan(pattern_of(p), &R, sh, nth, out);
    if (rc)
        return rc;
    hdp_layout L;
    hdp_layout_of(p, sh, nth, &L);
    out->ws_shared = L.total;
    return 0;
}

static int hdp_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                       const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                       int nth)
{
    const hdp_params *p = params;
    int rc = xf_at_check_shape(sh);
    if (rc < 0)
        return rc;
    if (!io || !pl || nth < 1 || ith < 0 || ith >= nth)
        return -EINVAL;
    hdp_run R = { .p = p };
    if (!hdp_nothing(p) && sh->n_seq > 0) {
        hdp_layout_of(p, sh, 1, &R.L);
        if (!ws_shared || pl->ws_shared < R.L.total || !io->out)
            return -EINVAL;
        R.ws = align64(ws_shared);
        R.cu0 = sh->cu_len[0];
        R.nrun = sh->cu_len[sh->n_seq] - R.cu0;
        /* Pruned heads: zero output rows (this thread's share of the run's tokens). The
         * heads are counted once, by thread 0. */
        const int32_t H = sh->n_head, d = sh->d_head;
        const int64_t *hsum = (const int64_t *)(R.ws + R.L.hsum);
        if (ith == 0) {
            uint64_t heads = 0, hkept = 0;
            for (int32_t s = 0; s < sh->n_seq; s++)
                if (sh->cu_len[s + 1] > sh->cu_len[s])
                    for (int32_t h = 0; h < H; h++) {
                        heads++;
                        hkept += (uint64_t)head_keep(p, hsum + (size_t)s * H, H, h);
                    }
            atomic_fetch_add_explicit(&st_heads, heads, memory_order_relaxed);
            atomic_fetch_add_explicit(&st_heads_pruned, heads - hkept, memory_order_relaxed);
        }
        const int64_t t_lo = R.cu0 + (int64_t)R.nrun * ith / nth;
        const int64_t t_hi = R.cu0 + (int64_t)R.nrun * (ith + 1) / nth;
        int32_t s = 0;
        for (int64_t t = t_lo; t < t_hi; t++) {
            while (sh->cu_len[s + 1] <= t)
                s++;
            for (int32_t h = 0; h < H; h++)
                if (!head_keep(p, hsum + (size_t)s * H, H, h))
                    memset(io->out + ((size_t)t * H + h) * d, 0, (size_t)d * sizeof(float));
        }
    }
    return xf_at_t_forward(pattern_of(p), &R, sh, io, pl, ws_thread, ith, nth);
}

const xf_attn_ops xf_at_hdp = {
    XF_AT_PARAMS(hdp_params, hdp_defaults, hdp_pkeys),
    .check = hdp_check,
    .validate = hdp_validate,
    .plan = hdp_plan,
    .prepare = hdp_prepare,
    .prepare_par = hdp_prepare_par,
    .forward = hdp_forward,
};
