/* Attention-internal: the family-T kernel (ATTENTION.md §0, §26.1): block-sparse query tiles
 * with online softmax. A variant describes its pattern through xf_at_t_variant callbacks: the
 * query tiles of one (sequence, head) (row lists), the key set of a tile (sorted, unique: union
 * semantics) with a per-key "full" flag, and a membership predicate for the rest (exclusion is
 * exact: non-members never enter the softmax). The driver balances (seq, head, tile) items by
 * cost across threads; output is bitwise identical for any nth. */
#ifndef XF_ATTENTION_FAM_T_H
#define XF_ATTENTION_FAM_T_H

#include <stddef.h>
#include <stdint.h>

#include "attention/registry.h"

#define XF_AT_T_BQ 32            /* max query rows per tile */
#define XF_AT_T_BK 64            /* keys per chunk */
#define XF_AT_T_LW 16            /* lanes of each row's running sum l (summed at the end) */

struct xf_at_kern;

/* Which part of a two-part pattern a head attends (strided, fixed, axial: combine/mode
 * "heads" gives even heads the first part and odd heads the second; "union" both). */
enum { XF_AT_T_BOTH = 0, XF_AT_T_FIRST = 1, XF_AT_T_SECOND = 2 };
static inline int32_t xf_at_t_part(int32_t by_heads, int32_t head)
{
    return !by_heads ? XF_AT_T_BOTH : head % 2 == 0 ? XF_AT_T_FIRST : XF_AT_T_SECOND;
}

/* The per-(sequence, head) geometry a variant's setup() chooses from n, the head and its
 * parameters; each variant reads only its own member (a new variant adds one). */
typedef union xf_at_t_geom {
    struct {                   /* blockwise, local1d (§2) */
        int32_t block;         /* block size, clamped to n */
        int32_t halo;          /* keys added on each side of the block */
    } blk;
    struct {                   /* window, dilated, longformer, etc (§3, §4, §7, §8) */
        int32_t w;             /* one-sided window */
        int32_t dil;           /* dilation δ of this head (1: plain window) */
        int32_t n_local;       /* longformer/etc: tiles of local rows (global tiles follow) */
    } win;
    struct {                   /* strided, fixed (§5) */
        int32_t l;             /* stride (strided) or block (fixed) */
        int32_t part;          /* XF_AT_T_BOTH / _FIRST (A1 only) / _SECOND (A2 only) */
        int32_t c0, c1;        /* fixed: this head's summary cells [c0, c1) of each block */
    } sp;
    struct {                   /* axial (§6) */
        int32_t cols;          /* grid columns */
        int32_t part;          /* XF_AT_T_BOTH / _FIRST (grid row) / _SECOND (column) */
    } ax;
    struct {                   /* bigbird (§9) */
        int32_t block;         /* block size */
        int32_t nb;            /* blocks in the sequence */
    } bb;
} xf_at_t_geom;

/* One (sequence, head) as a variant sees it. */
typedef struct xf_at_t_seq {
    const struct xf_at_kern *kern; /* micro-kernels in use (forward only) */
    const void *params;
    const xf_attn_shape *sh;
    const xf_attn_io *io;      /* NULL at plan time */
    int32_t s;                 /* sequence index in sh */
    int32_t t0, n;             /* first token (absolute plane row) and length */
    int32_t head;
    int dense;                 /* set by setup: the whole (seq, head) is dense */
    float factor;              /* logit factor applied to Q·K (io scale / q_scale) */
    xf_at_t_geom g;            /* per-(seq, head) geometry chosen by setup (zeroed before) */
    int32_t n_glob;            /* global positions (Longformer/ETC), sorted */
    int32_t *glob;             /* [n_glob] */
    uint8_t *is_g;             /* [n]: 1 = global */
    int32_t *scratch;          /* per-thread ints, n_scratch entries */
    int32_t n_scratch;
} xf_at_t_seq;

/* Key-set builder for one tile: add ranges; the result is sorted and unique. */
typedef struct xf_at_t_keys {
    int32_t *key;              /* [count] sorted, unique */
    uint8_t *full;             /* [count] 1: every row of the tile attends the key */
    uint8_t *mark;             /* [n] 0 none, 1 some rows, 2 every row (zero between tiles) */
    int32_t count, lo, hi;
} xf_at_t_keys;

/* Add keys [a, b) (clipped to [0, n)); full = every row of the tile has them. */
void xf_at_t_keys_add(xf_at_t_keys *kb, int32_t n, int32_t a, int32_t b, int full);
/* Add keys a, a+step, ... < b. */
void xf_at_t_keys_add_step(xf_at_t_keys *kb, int32_t n, int32_t a, int32_t b, int32_t step,
                         int full);

typedef struct xf_at_t_variant {
    /* Per (seq, head), from n and params only (io may be NULL at plan time): set dense, g,
     * factor. NULL: nothing. Returns 0 or XF_EPARAM/XF_ESHAPE. */
    int (*setup)(xf_at_t_seq *c);
    /* Per sequence, forward only: fill glob/n_glob/is_g (Longformer/ETC); NULL: none. */
    int (*globals)(xf_at_t_seq *c);
    /* Query tiles of one (seq, head) (not called when dense). */
    int32_t (*n_tiles)(const xf_at_t_seq *c);
    /* Rows of tile t (<= XF_AT_T_BQ, relative to the sequence); *global: use qg/kg/vg;
     * *cost: estimated keys·rows. Returns the row count (0: empty tile). */
    int32_t (*tile)(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global, int64_t *cost);
    /* The tile's key set. */
    void (*keys)(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                 xf_at_t_keys *kb);
    /* j ∈ A(i)? asked only for keys not flagged full. */
    int (*member)(const xf_at_t_seq *c, int32_t i, int32_t j, int global);
    /* Optional faster form of member() for one chunk: set s[r][jj] = −inf for every row r and
     * non-full key jj with keys[jj] ∉ A(rows[r]) (s rows XF_AT_T_BK apart). */
    void (*mask)(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                 const uint8_t *full, int32_t nk, float *s, int global);
    /* Optional logit provider (Synthesizer): s[r][jj] for rows[r], keys[jj] (replaces
     * factor·q·k); hid is XF_AT_T_BQ·hid_floats of scratch. Returns 0 or a code. */
    int (*logits)(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                  int32_t nk, float *s, int32_t lds, float *hid, int first);
    size_t hid_floats;         /* per-row scratch floats for logits() */
    int strided;               /* the variant reads Q/K/V only through this driver, which
                                  honours xf_attn_io.ld (the forward then skips the split) */
    int every_key;             /* every tile attends every key of its sequence (no mask,
                                  logits or globals): the driver walks the cached 64-key
                                  blocks, as for a dense (seq, head), without key lists */
    int32_t scratch_extra;     /* extra scratch ints beyond max n */
} xf_at_t_variant;

/* plan()/forward() for a family-T variant. */
int xf_at_t_plan(const xf_at_t_variant *fv, const void *params, const xf_attn_shape *sh, int nth,
               xf_attn_plan *out);
int xf_at_t_forward(const xf_at_t_variant *fv, const void *params, const xf_attn_shape *sh,
                  const xf_attn_io *io, const xf_attn_plan *pl, void *ws, int ith, int nth);

/* Standard tiles: the sequence cut into segments of seg rows, each into tiles of <= height
 * rows (height <= XF_AT_T_BQ). */
int32_t xf_at_t_seg_tiles(int32_t n, int32_t seg, int32_t height);
int32_t xf_at_t_seg_rows(int32_t n, int32_t seg, int32_t height, int32_t t, int32_t *rows);

/* Dilated-window helpers (§3, §4; δ = 1 is the plain window). Tiles walk the residue classes
 * mod δ in order (class-major), <= XF_AT_T_BQ rows each: ceil(n / XF_AT_T_BQ) tiles. */
int32_t xf_at_t_win_rows(int32_t n, int32_t dil, int32_t t, int32_t *rows);
/* The same walk with tiles of height rows (ceil(n / height) tiles). */
int32_t xf_at_t_class_rows(int32_t n, int32_t dil, int32_t height, int32_t t, int32_t *rows);
/* Keys {i + δt : |t| <= w} of the rows (full where every row has them). */
void xf_at_t_win_keys(int32_t n, int32_t w, int32_t dil, const int32_t *rows, int32_t nq,
                    xf_at_t_keys *kb);
static inline int xf_at_t_win_member(int32_t w, int32_t dil, int32_t i, int32_t j)
{
    int64_t dd = (int64_t)j - i;
    if (dd % dil)
        return 0;
    dd /= dil;
    return dd >= -w && dd <= w;
}
/* setup() of a dilated window (dilated, longformer, etc): g.win.w = window, g.win.dil = this
 * head's δ (n_dil == 1: dil[0] for every head); dense when δ = 1 and the window covers n.
 * XF_EPARAM when 1 < n_dil < heads. */
int xf_at_t_win_setup(xf_at_t_seq *c, int32_t window, int32_t n_dil, const int32_t *dil);
/* mask() for a dilated window: −inf where |j − i| > δw or δ ∤ (j − i). */
void xf_at_t_win_mask(const xf_at_t_seq *c, int32_t w, int32_t dil, const int32_t *rows,
                    int32_t nq, const int32_t *keys, const uint8_t *full, int32_t nk, float *s);
/* cls[jj] = keys[jj] mod m for sorted keys (incremental, no division per key). */
void xf_at_t_key_classes(const int32_t *keys, int32_t nk, int32_t m, int32_t *cls);
/* validate() of a per-head dilation list (dilated, longformer): n_dil > 1 must cover every
 * head of the layer. */
int xf_at_t_check_dilations(int32_t n_dil, const xf_model_t *m, int layer, char *err,
                            size_t errlen);
/* ⌈√n⌉ */
int32_t xf_at_t_isqrt_ceil(int32_t n);

/* Longformer (§7) and ETC (§8) share one pattern and parameter block. */
enum { XF_AT_LF_CLS = 0, XF_AT_LF_NONE, XF_AT_LF_SEGMENT_A, XF_AT_LF_MASK, XF_AT_LF_LIST, XF_AT_LF_CLS_SEP };
#define XF_AT_LF_MAX_DIL 32
#define XF_AT_LF_MAX_POS 16
typedef struct xf_at_lf_params {
    int32_t window;            /* one-sided w (ETC: radius) */
    int32_t n_dil;             /* 1: dil[0] for every head; else one per head */
    int32_t dil[XF_AT_LF_MAX_DIL];
    int32_t gmode;             /* XF_AT_LF_* */
    int32_t n_pos;
    int32_t pos[XF_AT_LF_MAX_POS];
    int32_t shared;            /* 1: global rows use q/k/v (ETC simulation) */
    int32_t segment_restrict;  /* ETC; only false is supported */
} xf_at_lf_params;

/* Synthesizer (§21) weights, handed over in xf_attn_io.weights for one layer. */
enum { XF_SYNTH_RANDOM = 1, XF_SYNTH_FACTORIZED, XF_SYNTH_DENSE };
typedef struct xf_synth_weights {
    int32_t kind;              /* XF_SYNTH_* */
    int32_t n_head, n_max;     /* heads (must match the layer), longest sequence */
    int32_t k;                 /* factorized rank */
    int32_t d_model, d_hidden; /* dense: layer input width, hidden width (<= 1024) */
    const float *r;            /* random: [h][n_max][n_max] logits */
    const float *r1, *r2;      /* factorized: [h][n_max][k] each; logits R1·R2ᵀ */
    const float *w1, *b1;      /* dense: [h][d_hidden][d_model], [h][d_hidden] */
    const float *w2, *b2;      /* dense: [h][n_max][d_hidden], [h][n_max] */
} xf_synth_weights;
#define XF_SYNTH_MAX_HIDDEN 1024

/* Micro-kernels on one tile (exposed for the per-ISA files and tests).
 * qt [nq][dp] (only columns < d are read), kt [d][XF_AT_T_BK], s/p [nq][XF_AT_T_BK], vt: row
 * pointers, acc [nq][dp], m [nq], l [nq][XF_AT_T_LW] (partial sums, zero-initialised; the
 * row's sum is their total in lane order). dp is d rounded up to 16. */
typedef struct xf_at_kern {
    const char *name;
    /* s[r][j] = factor · Σ_c qt[r][c]·kt[c][j] for all j < XF_AT_T_BK; qt's rows are ldq
     * floats apart (dp for the tile copy; any stride >= d when rows are read in place) */
    void (*qk)(int32_t nq, int32_t d, int32_t ldq, const float *qt, const float *kt,
               float factor, float *s);
    /* Online-softmax update over s[r][0..nk) (−inf = excluded): new max, p = exp(s − m')
     * written back into s, l and acc rescaled. */
    void (*softmax)(int32_t nq, int32_t nk, int32_t dp, float *s, float *m, float *l,
                    float *acc);
    /* acc[r][c] += Σ_{j<nk} p[r][j]·vt[j][c] (vt[j]: row j, dp readable floats) */
    void (*pv)(int32_t nq, int32_t nk, int32_t dp, const float *p, const float *const *vt,
               float *acc);
    /* kt[x][jj] = K[rows[jj]][x] for jj < nk, x < d (K rows ldk floats apart); zero for
     * jj >= nk */
    void (*kt)(int32_t nk, int32_t d, int32_t ldk, const float *K, const int32_t *rows,
               float *kt);
    /* s[r][jj] = −inf unless full[jj] or member: in = lo[r] <= keys[jj] < hi[r],
     * cl = kcls[jj] == rcls[r] (kcls NULL: cl = and_mode); member = and_mode ? in && cl
     * : in || cl. r < nq, jj < nk, s rows XF_AT_T_BK apart. */
    void (*mask)(int32_t nq, int32_t nk, const int32_t *keys, const uint8_t *full,
                 const int32_t *lo, const int32_t *hi, const int32_t *kcls,
                 const int32_t *rcls, int and_mode, float *s);
    /* dst[c] = src[c]·f, c < d */
    void (*scale)(int32_t d, const float *src, float f, float *dst);
} xf_at_kern;

/* softmax() of a row r with a NaN score: m, l and acc become NaN (the row's output NaN), its
 * weights s[r][0..nk) 0. For every kernel. */
void xf_at_t_poison_row(int32_t r, int32_t nk, int32_t dp, float *s, float *m, float *l,
                        float *acc);

const xf_at_kern *xf_at_kern_c(void);
#ifdef XF_HAVE_X86_64
const xf_at_kern *xf_at_kern_avx512(void);
const xf_at_kern *xf_at_kern_avx2(void);
#endif
/* The kernel in use: the engine's kernel table's (engine/kernels.h xf_kernels()->attn, one CPU
 * selection for the engine and the attention; tests reach the others through XF_CPU caps or
 * by calling the per-ISA tables' functions directly). */
const xf_at_kern *xf_at_kern_get(void);

#endif
