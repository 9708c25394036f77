/* Attention family S (ATTENTION.md §26.1): shortened K/V — build m summary keys/values with
 * optional per-summary log-count biases, then dense attention of the n queries over them.
 * Also holds the small helpers every S/F/P/M variant file shares: a table-driven flat-JSON
 * parameter parser, the (sequence, head) plan and item walk, workspace carving and the
 * attend-over-a-set kernel. */
#ifndef XF_ATTENTION_FAM_S_H
#define XF_ATTENTION_FAM_S_H

#include <stddef.h>
#include <stdint.h>

#include "attention/registry.h"

/* ---- items and shapes ---- */

/* Checks the shape (cu_len non-decreasing inside [0, n_tokens], heads and width >= 1, the
 * q/k/v planes n_tokens·n_head·d_head <= 16·INT32_MAX floats) and returns the longest sequence
 * (>= 0), or XF_ESHAPE. Every variant's plan and forward start with it. */
int xf_at_check_shape(const xf_attn_shape *sh);

/* One (sequence, head) item: pointers to its rows. */
typedef struct xf_at_item {
    int32_t b, head, n, d, t0;
    const float *q, *k, *v;      /* n rows, stride d */
    float *out;                  /* n rows, stride n_head*d */
    int32_t ldo;
} xf_at_item_t;

void xf_at_item(const xf_attn_shape *sh, const xf_attn_io *io, int32_t it,
                  xf_at_item_t *o);

/* Plan of a variant with one item per (sequence, head): the given scratch sizes, no
 * per-sequence state, no dense fallbacks. */
void xf_at_plan_items(const xf_attn_shape *sh, size_t ws_per_thread, size_t ws_shared,
                        xf_attn_plan *out);

/* One item of a variant whose forward is a plain item walk: ws is the thread's scratch, tws its
 * tile scratch (xf_at_tile_scratch). */
typedef void (*xf_at_item_fn)(const void *params, const xf_attn_shape *sh,
                                const xf_at_item_t *it, float q_scale, float scale, void *ws,
                                void *tws);
/* Thread ith of nth runs fn on the non-empty items ith, ith + nth, ... of pl. */
void xf_at_walk(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                  const xf_attn_plan *pl, void *ws_thread, int ith, int nth, xf_at_item_fn fn);

/* Workspace carving: consecutive blocks from base, each aligned to align bytes (0: 16; a
 * power of two; base must be aligned to it) (NULL base: sizes only, the blocks are NULL). off
 * ends as the bytes taken. */
typedef struct xf_at_carve {
    unsigned char *base;
    size_t off;
    size_t align;
} xf_at_carve_t;
/* Next block of cnt elements of elem bytes. */
void *xf_at_take(xf_at_carve_t *c, size_t elem, size_t cnt);

/* A variant's scratch as a table: a struct of pointers named lay_t in the variant's file,
 * filled in table order by xf_at_carve_table. A slot's count is dim[a]·dim[b] + dim[c] over
 * the variant's dimension array, whose first two entries are 0 and 1 (so the indices 0 and 1
 * stand for themselves) and whose own dimensions start at XF_AT_DIM_USER. */
typedef struct xf_at_slot {
    size_t off;                  /* offsetof the pointer in lay_t */
    size_t elem;                 /* bytes per element */
    uint8_t a, b, c;             /* count = dim[a]·dim[b] + dim[c] */
} xf_at_slot_t;
enum { XF_AT_DIM_USER = 2 };
#define XF_AT_SLOT(f, a, b, c) { offsetof(lay_t, f), sizeof(*((lay_t *)0)->f), a, b, c }
/* Carve slots[0..n) from ws with alignment align (as xf_at_carve_t; ws NULL: sizes only, lay
 * untouched and may be NULL) into the pointers of lay. Returns the bytes taken. */
size_t xf_at_carve_table(void *ws, size_t align, void *lay, const xf_at_slot_t *slots, size_t n,
                         const size_t *dim);
#define XF_AT_CARVE(ws, lay, slots, dim)                                                     \
    xf_at_carve_table(ws, 0, lay, slots, sizeof(slots) / sizeof((slots)[0]), dim)

/* ---- kernels ---- */

/* out = Σ_a exp(x_a − max) V_a / Σ_a exp(x_a − max), x_a = alpha·q·K_a (+ beta_a).
 * K, V rows ldk apart; beta may be NULL; idx (may be NULL = 0..m-1) picks rows.
 * logit: scratch of m floats. Double accumulation. m must be >= 1. */
void xf_at_attend(const float *q, int32_t d, float alpha, const float *K, const float *V,
                    int32_t ldk, const float *beta, const int32_t *idx, int32_t m, float *logit,
                    float *out);
float xf_at_dot(const float *a, const float *b, int32_t d);

/* Tiled attention on the family-T micro-kernels (fam_t.h, online softmax in fp32):
 * out_r = softmax_a(alpha·q_r·K_a + beta_a) V over the m keys idx[0..m) (NULL = 0..m−1) for
 * nq <= XF_AT_TQ query rows q[r] (pointers; d floats each) into out[r]. K and V rows are d
 * apart. tws: xf_at_tile_ws(d) bytes. m must be >= 1. */
#define XF_AT_TQ 32
size_t xf_at_tile_ws(int32_t d);
void xf_at_attend_tile(const float *const *q, int32_t nq, int32_t d, float alpha,
                         const float *K, const float *V, const float *beta, const int32_t *idx,
                         int32_t m, void *tws, float *const *out);
/* The tile scratch of a thread: the last xf_at_tile_ws(d) bytes of its ws_per_thread. */
void *xf_at_tile_scratch(const xf_attn_plan *pl, void *ws_thread, int32_t d);

/* ---- family S ---- */

/* Contiguous segments of §16: k segments of [0, n), sizes ceil(n/k) for the first n mod k.
 * Start of segment a. */
int32_t xf_at_s_seg_start(int32_t n, int32_t k, int32_t a);

/* Mean of rows [r0, r1) of x (stride d) into out (d). */
void xf_at_s_mean_rows(const float *x, int32_t d, int32_t r0, int32_t r1, float *out);

/* Summary attention for one item: the n queries of it over m summaries (Ks, Vs: m rows of d,
 * beta: m or NULL), logits alpha·q·Ks + beta, in tiles of XF_AT_TQ queries. tws: the tile
 * scratch (xf_at_tile_ws). */
void xf_at_s_attend_summaries(const xf_at_item_t *it, float alpha, const float *Ks,
                              const float *Vs, const float *beta, int32_t m, void *tws);

/* Variant parameters (POD, copied per selection). */
enum { XF_LINFORMER_POOLED = 0, XF_LINFORMER_WEIGHTS = 1 };
typedef struct xf_linformer_params {
    int32_t k;                   /* summaries, clamped to n when pooled */
    int32_t source;              /* XF_LINFORMER_* */
} xf_linformer_params_t;

enum { XF_MEMCOMP_MEAN = 0, XF_MEMCOMP_CONV = 1 };
typedef struct xf_memcomp_params {
    int32_t rate;                /* stride = kernel c */
    int32_t pool;                /* XF_MEMCOMP_* */
} xf_memcomp_params_t;

enum { XF_ISAB_KMEANS = 0, XF_ISAB_SEGMENTS = 1 };
enum { XF_ISAB_HARD = 0, XF_ISAB_SOFT = 1 };
typedef struct xf_isab_params {
    uint64_t seed;
    int32_t m, init, iters, mode;
} xf_isab_params_t;

typedef struct xf_perceiver_params {
    int32_t latents;             /* 0 = from the weights */
} xf_perceiver_params_t;

typedef struct xf_nystrom_params {
    int32_t landmarks, pinv_iters;
    int32_t dense_fallback;      /* landmarks >= n: run dense (§0) */
} xf_nystrom_params_t;


/* Attention pooling: for each of the m rows U_a (stride d), P_a = softmax(alpha·U_a·Kᵀ) over
 * the item's n keys, Ks_a = P_a K, Vs_a = P_a V (double accumulation). logit: n floats. */
void xf_at_s_attnpool(const xf_at_item_t *it, const float *U, int32_t m, float alpha,
                      float *Ks, float *Vs, float *logit);

/* Trained tensors a variant of this family may read from io->weights (NULL when absent). */
typedef struct xf_attn_w_linformer {
    int32_t k, n_max;            /* E, F: [k][n_max], shared by heads */
    const float *e, *f;
} xf_attn_w_linformer_t;

typedef struct xf_attn_w_perceiver {
    int32_t latents, n_head, d_head;
    const float *qz;             /* [n_head][latents][d_head] latent queries */
} xf_attn_w_perceiver_t;

/* Spherical k-means of §11 on unit rows pts[np][d] (double, already normalised) into
 * mu[k][d]: init = k distinct points by a partial Fisher–Yates (stream seed, layer, head,
 * KMEANS, 0), iters Lloyd steps (assign, mu = normalize(sum of members)), ties to the lowest
 * centroid, empty clusters keep their centroid. Scratch: idx np int32, acc k*d doubles,
 * amx xf_at_s_argmax_ws(k, d) bytes. */
void xf_at_s_kmeans(const double *pts, int32_t np, int32_t d, int32_t k, int32_t iters,
                    uint64_t seed, int32_t layer, int32_t head, double *mu, int32_t *idx,
                    double *acc, void *amx);
/* Unit-vector margin for xf_at_s_argmax: far above the fp32 score error (~1e-6). */
#define XF_AT_S_UNIT_MARGIN 1e-4
/* out[p] = argmax over the k centers (and, with sym, their negatives at indices k..2k−1) of
 * center·pts_p, exactly the double result of sequential sums with ties to the lowest index:
 * fp32 kernel scores pick the winner, and points whose top two scores are within margin are
 * recomputed in double. Center a's component c is ctr[a·cs_a + c·cs_c]. scratch:
 * xf_at_s_argmax_ws(k, d) bytes. */
size_t xf_at_s_argmax_ws(int32_t k, int32_t d);
void xf_at_s_argmax(const double *pts, int32_t np, int32_t d, const double *ctr, int32_t k,
                    size_t cs_a, size_t cs_c, int sym, double margin, void *scratch,
                    int32_t *out);
/* argmax_a mu_a·x (ties to the lowest a), sequential double sums. */
int32_t xf_at_s_nearest(const double *mu, int32_t k, int32_t d, const double *x);
/* y = x / ‖x‖ in double, sequential sum (a zero vector stays zero). */
void xf_at_s_unit(const float *x, int32_t d, double *y);

#endif
