/* Test references for the family-T variants (ATTENTION.md §27): double precision, explicit
 * A(i) membership matrices built straight from each section's formula, the textbook two-pass
 * softmax, one (sequence, head) at a time; plus a runner that drives a selection through its
 * vtable with nth simulated threads. */
#ifndef XF_TESTS_ATTN_REF_T_H
#define XF_TESTS_ATTN_REF_T_H

#include <stddef.h>
#include <stdint.h>

#include "attention/registry.h"

/* out_i = Σ_{j∈A(i)} e^{f·q_i·k_j} v_j / Σ e^{…} for rows with rows_mask[i] != 0 (NULL: all);
 * A is [n][n] (A[i*n+j] != 0: j ∈ A(i)); an empty A(i) gives v_i. q/k/v rows are ld floats
 * apart, out rows ldo apart. bias (NULL or [n][n]) is added to the logits. */
void xf_ref_attend(int32_t n, int32_t d, const float *q, const float *k, const float *v,
                   int32_t ld, double factor, const uint8_t *A, const double *bias,
                   const uint8_t *rows_mask, float *out, int32_t ldo);

/* Pattern builders: A [n][n] zeroed and filled from the formula. */
void xf_ref_set_dense(int32_t n, uint8_t *A);
void xf_ref_set_blockwise(int32_t n, int32_t block, int32_t halo, uint8_t *A);
void xf_ref_set_window(int32_t n, int32_t w, int32_t dil, uint8_t *A);
void xf_ref_set_strided(int32_t n, int32_t l, int part, uint8_t *A);   /* part 0 union, 1, 2 */
void xf_ref_set_fixed(int32_t n, int32_t l, int32_t c, int32_t head, int32_t v, int part,
                      uint8_t *A);
void xf_ref_set_axial(int32_t n, int32_t cols, int part, uint8_t *A);
/* Longformer/ETC local rows: window (dilated) ∪ G; glob [n] flags. Global rows: all keys. */
void xf_ref_set_longformer(int32_t n, int32_t w, int32_t dil, const uint8_t *glob, uint8_t *A);
/* BigBird ITC (§9), blocks drawn with the §0 streams. */
void xf_ref_set_bigbird(int32_t n, int32_t b, int32_t r, int32_t w, int32_t gf, int32_t gl,
                        uint64_t seed, int32_t layer, int32_t head, uint8_t *A);

/* Run a selection through plan/prepare/forward with nth simulated threads (forward called for
 * ith = 0..nth-1 in turn, each with its own scratch). Returns the first error. */
int xf_ref_run(const xf_attn_t *a, const xf_attn_shape *sh, const xf_attn_io *io, int nth,
               xf_attn_plan *plan_out);

/* A packed test batch: planes [h][N][d] filled uniform in [-1, 1) from seed (q times qmul),
 * io.scale = 1/sqrt(d), io.q_scale = 1. */
typedef struct xf_ref_case {
    xf_attn_shape sh;
    xf_attn_io io;
    int32_t *cu;
    float *q, *k, *v, *out;
    size_t plane;              /* floats per [h][N][d] buffer */
} xf_ref_case;
int xf_ref_case_init(xf_ref_case *c, const int32_t *lens, int32_t n_seq, int32_t h, int32_t d,
                     uint64_t seed, float qmul);
void xf_ref_case_free(xf_ref_case *c);
/* Pattern of one (sequence, head): fill A [n][n]. */
typedef void (*xf_ref_build_fn)(void *ctx, int32_t s, int32_t n, int32_t head, uint8_t *A);
/* Reference output [N][h][d] for the whole batch. */
void xf_ref_case_reference(const xf_ref_case *c, xf_ref_build_fn build, void *ctx, float *out);
/* Max |a - b| over n floats (NaN counts as infinite). */
double xf_ref_maxdiff(const float *a, const float *b, size_t n);

#endif
