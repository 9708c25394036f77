/* Attention family F (ATTENTION.md §26.1): feature-map linear attention. Φ_K, S = Φ_KᵀV,
 * z = Φ_Kᵀ1, O = Φ_Q S ⊘ Φ_Q z, one (sequence, head) per item, pluggable maps: elu+1 (Linear
 * Transformer, §17), FAVOR+ positive features (Performer, §18), trigonometric features (RFA,
 * §19). Also the item walk and shared-projection layout of those variants, and the random
 * projection generators shared with the test references. */
#ifndef XF_ATTENTION_FAM_F_H
#define XF_ATTENTION_FAM_F_H

#include <stddef.h>
#include <stdint.h>

#include "attention/fam_s.h"

enum xf_at_f_kind { XF_AT_F_LINEAR = 1, XF_AT_F_FAVOR, XF_AT_F_TRIG, XF_AT_F_TRIGNORM };

typedef struct xf_at_f_map {
    enum xf_at_f_kind kind;
    int32_t r;                   /* projection rows (LINEAR: d) */
    const float *w;              /* [r][d] projections of this head, NULL for LINEAR */
    float qmul, kmul;            /* raw inputs are multiplied by these before the map */
    double eps;                  /* LINEAR: added to the denominator */
} xf_at_f_map_t;

/* Feature count of a map (r, or 2r for the trigonometric maps). */
int32_t xf_at_f_features(const xf_at_f_map_t *mp);
/* Scratch bytes one item needs for sequences up to nmax tokens. */
size_t xf_at_f_ws(const xf_at_f_map_t *mp, int32_t nmax, int32_t d);
/* Run one item. ws: xf_at_f_ws bytes, 8-byte aligned. */
void xf_at_f_item(const xf_at_f_map_t *mp, const xf_at_item_t *it, void *ws);
/* Forward of a family-F variant: thread ith of nth runs the non-empty items of pl with map mp
 * (ws_thread: xf_at_f_ws bytes). w_head > 0: the item of head h uses mp->w + h·w_head (the
 * per-head projections in the shared scratch), else mp->w. */
void xf_at_f_walk(const xf_at_f_map_t *mp, size_t w_head, const xf_attn_shape *sh,
                  const xf_attn_io *io, const xf_attn_plan *pl, void *ws_thread, int ith,
                  int nth);

/* The map of a random-feature variant (performer, rfa): kind, r projection rows w (NULL at
 * plan time), inputs scaled by √scale (q also by 1/q_scale: x·y = s·q·k) when io is given,
 * else 1. */
void xf_at_f_rand_map(xf_at_f_map_t *mp, enum xf_at_f_kind kind, int32_t r, const float *w,
                      const xf_attn_io *io);
/* Shared scratch of the random-feature variants: every head's W [r][d] as floats, then (8-byte
 * aligned) tmp doubles of generator scratch. Bytes of it: */
size_t xf_at_f_shared_size(int32_t n_head, int32_t r, int32_t d, size_t tmp);
/* The generator scratch inside ws_shared. */
double *xf_at_f_shared_tmp(void *ws_shared, int32_t n_head, int32_t r, int32_t d);
/* Store head h's projections w (r×d doubles) as floats into ws_shared. */
void xf_at_f_store_w(void *ws_shared, int32_t h, int32_t r, int32_t d, const double *w);

/* FAVOR+ projections W [m][d] for (seed, layer, head), §18: stacked orthogonal blocks
 * (Gram–Schmidt of a Gaussian d×d block = QR with the sign fix; directions = columns of Q)
 * scaled by chi norms (stream FAVOR_NORM, row) or √d; orthogonal = 0: Gaussian rows.
 * w: (m + d)·d doubles, the last d·d are scratch. */
enum { XF_ROWNORM_CHI = 0, XF_ROWNORM_SQRT_D = 1 };
void xf_at_f_favor_w(uint64_t seed, int32_t layer, int32_t head, int32_t m, int32_t d,
                     int orthogonal, int row_norm, double *w);
/* RFA projections W [D][d]: row r = N(0, I) from stream (seed, layer, head, RFA, r), / √tau. */
void xf_at_f_rfa_w(uint64_t seed, int32_t layer, int32_t head, int32_t D, int32_t d, double tau,
                   double *w);

/* ---- variants ---- */

typedef struct xf_linear_params {
    double eps;
} xf_linear_params_t;

typedef struct xf_performer_params {
    uint64_t seed;
    int32_t features;            /* 0 = auto: floor(d ln d) */
    int32_t orthogonal;
    int32_t row_norm;            /* XF_ROWNORM_* */
    int32_t redraw;              /* 0 = "never" (only value at inference) */
} xf_performer_params_t;

enum { XF_RFA_TRIG = 0, XF_RFA_NORM = 1 };
typedef struct xf_rfa_params {
    uint64_t seed;
    double tau;
    int32_t features;            /* D */
    int32_t mode;                /* XF_RFA_* */
    int32_t gate, causal;        /* both rejected for a bidirectional encoder */
} xf_rfa_params_t;

int32_t xf_performer_features(const xf_performer_params_t *p, int32_t d);


#endif
