/* Double-precision references for the attention families S, F, P, M (ATTENTION.md §27): explicit
 * key sets / full matrices, textbook two-pass softmax, quadratic forms for family F, an exact SVD
 * pseudo-inverse for Nyström; plus the small harness the family tests share (random packed
 * batches, running a variant through its vtable with nth simulated threads). One (sequence,
 * head) at a time; inputs are contiguous n×d rows, raw q (no folded scale). */
#ifndef XF_TESTS_ATTN_REF_SFPM_H
#define XF_TESTS_ATTN_REF_SFPM_H

#include <stddef.h>
#include <stdint.h>

#include "attention/fam_f.h"
#include "attention/fam_m.h"
#include "attention/fam_p.h"
#include "attention/fam_s.h"

/* ---- harness ---- */

typedef struct xf_rbatch {
    int32_t n_seq, n_head, d, n_tok, layer;
    int32_t *cu;                 /* [n_seq+1] */
    float *q, *k, *v;            /* [h][N][d] */
    float *out;                  /* [N][h][d] */
} xf_rbatch_t;

/* Random batch, entries uniform in [-amp, amp) (v in [-1, 1)). Ownership: free with
 * xf_rbatch_free(). */
xf_rbatch_t *xf_rbatch_new(int32_t n_seq, const int32_t *lens, int32_t h, int32_t d, float amp,
                           uint64_t seed);
void xf_rbatch_free(xf_rbatch_t *b);
/* Copy one (seq, head) slice into contiguous n×d buffers (caller sized). */
void xf_rbatch_slice(const xf_rbatch_t *b, int32_t s, int32_t head, float *q, float *k,
                     float *v);
/* Max |out(seq s, head) − ref| where ref is n×d double. */
double xf_rbatch_err(const xf_rbatch_t *b, int32_t s, int32_t head, const double *ref);

/* Parse JSON text into params (params_size bytes). Returns the parse code; err filled. */
int xf_ref_parse(const xf_attn_vtbl *vt, const char *json, void *params, char *err,
                 size_t errlen);
/* q_scale handed to the variants by xf_ref_run (default 1; the batch's q must already carry
 * it). */
extern float xf_ref_q_scale;

/* plan + prepare + forward for ith = 0..nth-1 (sequentially), io from the batch
 * (scale 1/sqrt(d) unless scale > 0, q_scale 1), weights/state as given. Returns the first
 * nonzero code. */
int xf_ref_run(const xf_attn_vtbl *vt, const void *params, xf_rbatch_t *b, int nth,
               const void *weights, void *const *state, const int32_t *mem_rows,
               xf_attn_plan *plan_out);

/* A reference for one (sequence, head): params, weights as given to the variant. */
typedef void (*xf_ref_fn)(const void *params, const void *weights, int32_t n, int32_t d,
                          const float *q, const float *k, const float *v, double s,
                          int32_t layer, int32_t head, double *out);
#define XF_REF_FN_ARGS const void *p, const void *w, int32_t n, int32_t d, const float *q, \
    const float *k, const float *v, double s, int32_t layer, int32_t head, double *out
/* Run vt (nth 2) on a random batch and return the worst error of any checked (seq, head)
 * slice vs ref, relative to max(1, max|ref|). Sequences longer than 300 check head 0 only. */
double xf_ref_check(const xf_attn_vtbl *vt, const char *json, xf_ref_fn ref, const void *weights,
                    int32_t n_seq, const int32_t *lens, int32_t h, int32_t d, float amp,
                    int32_t layer);
/* cmocka asserts: nth 1, 2, 3, 8 bitwise equal; a sequence alone / first in another batch
 * bitwise equal to its slice of a packed batch (h = 3, d = 40). */
void xf_ref_independence(const void *weights, const xf_attn_vtbl *vt, const char *json);
/* cmocka asserts: vt agrees with ref within tol on the odd shapes of ATTENTION.md §27 — every
 * odd length (1..1000) packed in one batch with h = 3 and d = 32, 64, 40, then short batches
 * with h = 12 (d = 64) and h = 1 (d = 40). */
void xf_ref_odd_shapes(const xf_attn_vtbl *vt, const char *json, xf_ref_fn ref,
                       const void *weights, double tol);
/* cmocka asserts, on 3 sequences of 1, 0 and 9 tokens (h = 2, d = 64): with n = 1 the output
 * is the only key's value; huge logits (q × 300) and all-zero q and k stay finite. */
void xf_ref_edges(const xf_attn_vtbl *vt, const char *json, const void *weights);
/* The dense reference (softmax over every key), for variants whose limit is dense. */
void xf_ref_dense(XF_REF_FN_ARGS);
/* cmocka asserts: parsing json fails with XF_EPARAM and a message naming key. */
void xf_ref_expect_parse_err(const xf_attn_vtbl *vt, const char *json, const char *key);

/* ---- references ---- */

/* Set attention: O_i = Σ_{j: mask[i*nk+j]} exp(s q_i·k_j + beta_ij) v_j / Σ ... ;
 * mask NULL = all keys, beta NULL = 0. q: nq rows, k, v: nk rows. Empty row -> zeros. */
void xf_ref_attend(int32_t nq, int32_t nk, int32_t d, const float *q, const float *k,
                   const float *v, double s, const uint8_t *mask, const double *beta,
                   double *out);
/* The same with double inputs. */
void xf_ref_attend_d(int32_t nq, int32_t nk, int32_t d, const double *q, const double *k,
                     const double *v, double s, const uint8_t *mask, const double *beta,
                     double *out);

void xf_ref_linformer(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                      double s, int32_t kk, double *out);
void xf_ref_memcomp(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                    double s, int32_t rate, double *out);

/* Family F: the quadratic form (Φ_Q Φ_Kᵀ ⊘ rowsum) V with independently computed features. */
void xf_ref_performer(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                      double s, const xf_performer_params_t *p, int32_t layer, int32_t head,
                      double *out);
void xf_ref_linear(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                   double eps, double *out);
void xf_ref_rfa(int32_t n, int32_t d, const float *q, const float *k, const float *v, double s,
                const xf_rfa_params_t *p, int32_t layer, int32_t head, double *out);

/* Reformer: the key-set mask (n×n) from explicit per-round buckets; then xf_ref_attend. */
void xf_ref_reformer(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                     double s, const xf_reformer_params_t *p, int32_t layer, int32_t head,
                     double *out);
void xf_ref_routing(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                    double s, const xf_routing_params_t *p, int32_t layer, int32_t head,
                    double *out);
void xf_ref_sinkhorn(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                     double s, const xf_sinkhorn_params_t *p, double *out);
void xf_ref_isab(int32_t n, int32_t d, const float *q, const float *k, const float *v, double s,
                 const xf_isab_params_t *p, int32_t layer, int32_t head, double *out);
void xf_ref_perceiver(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                      double s, int32_t m, const float *qz, double *out);
/* Nyström with pinv by `iters` Newton–Schulz steps (iters > 0) or exact SVD (iters == 0). */
void xf_ref_nystrom(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                    double s, int32_t landmarks, int32_t iters, double *out);
/* Moore–Penrose pseudo-inverse of an m×m matrix by one-sided Jacobi SVD (double). */
void xf_ref_pinv(int32_t m, const double *a, double *ainv);

/* TXL one pass over keys [mem; cur] (nm memory rows, n current): queries are the n current
 * rows; score = s[(q+u)·k_j + (q+v)·r_{i'-j}] with r_t = R_t W_r (R_t sinusoid of width dm,
 * t clamped to ±clamp when clamp >= 0), causal excludes j > i'. w_r [d][dm] (this head's rows),
 * u, v [d] (may be NULL = 0). kk, vv: nm+n rows. */
void xf_ref_txl(int32_t nm, int32_t n, int32_t d, const float *q, const float *kk,
                const float *vv, double s, int causal, int32_t clamp, int32_t dm,
                const float *w_r, const float *u, const float *vb, int32_t mask_from,
                double *out);

#endif
