/* Test-side reference encoder: builds small random-weight models by filling struct xf_model
 * directly, and computes a plain padded BERT forward (double accumulation, explicit padding
 * mask) plus a reference attention with explicit additive masks. Written for obviousness,
 * not speed; nothing here shares code with the engine. */
#ifndef XF_TESTS_ENCODER_REF_H
#define XF_TESTS_ENCODER_REF_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"

#define XF_REF_MAX_LAYERS 12

typedef struct xf_ref_model_opts {
    uint64_t seed;
    enum xf_arch arch;
    int32_t n_layer, d_model, vocab_size, max_positions, type_vocab_size, position_offset;
    int32_t n_head[XF_REF_MAX_LAYERS], d_head[XF_REF_MAX_LAYERS], d_ff[XF_REF_MAX_LAYERS];
    enum xf_act act;
    float ln_eps;
    int pre_ln;                /* pre-LN blocks + final LayerNorm (no embedding LayerNorm) */
    enum xf_head head;
    int32_t n_labels;
    int has_pooler;
    enum xf_pooling pooling;
    int normalize;
    float w_scale;             /* weights uniform in [-w_scale, w_scale] (default 0.08) */
} xf_ref_model_opts_t;

/* A tiny BERT: 2 layers, d_model 32, 4 heads of 8, d_ff 64, vocab 100, 64 positions, 2 types. */
void xf_ref_model_opts_init(xf_ref_model_opts_t *o);

/* Ownership: *out is new, free with xf_ref_model_free(). Returns 0 or -ENOMEM. */
int xf_ref_model_create(const xf_ref_model_opts_t *o, xf_model_t **out);
void xf_ref_model_free(xf_model_t *m);

/* Reference forward of a packed batch, computed padded: each sequence is padded to the longest
 * with explicit key masks. Outputs (NULL = not wanted) as xf_output: hidden [N][D] (unpadded
 * rows only), pooled [B][D] with the given pooling/normalisation, logits [B][n_labels].
 * Returns 0 or -ENOMEM. */
int xf_ref_forward(const xf_model_t *m, int32_t n_seq, const int32_t *cu_len,
                   const int32_t *ids, const int32_t *type_ids, enum xf_pooling pooling,
                   int normalize, float *hidden, float *pooled, float *logits);

/* One head of attention, in double: out[i] = Σ_j softmax_j(scale·q_i·k_j + bias[i][j]) v_j.
 * bias is [nq][nk] additive (−INFINITY excludes a key) or NULL; a row whose every logit is
 * −inf gives NaN (as PyTorch/numpy). Strides in elements. */
void xf_ref_attention(int32_t nq, int32_t nk, int32_t dqk, int32_t dv, const double *q,
                      int32_t ldq, const double *k, int32_t ldk, const double *v, int32_t ldv,
                      double scale, const double *bias, double *out, int32_t ldo);

/* Plain reference of the kernels' math, in double (for data-driven tests). */
void xf_ref_layernorm(const double *x, int32_t d, const float *g, const float *b, double eps,
                      double *y);
double xf_ref_act(enum xf_act a, double x);

#endif
