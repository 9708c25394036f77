/* Plain float64 reference of Hugging Face's TransfoXLLMHeadModel (transformers
 * models/deprecated/transfo_xl), written from the paper and the HF definitions for the tests:
 * AdaptiveEmbedding, RelPartialLearnableMultiHeadAttn with the rel-shift of the original code
 * (correct for the causal cells, the only ones a causal model reads), PositionwiseFF,
 * _update_mems, ProjectedAdaptiveLogSoftmax over the whole vocabulary. Reads the model
 * directory itself (config.json via jansson, tensors via the safetensors reader as plain
 * arrays); shares no code with src/engine/txl_*.c. */
#ifndef XF_TESTS_TXL_REF_H
#define XF_TESTS_TXL_REF_H

#include <stdint.h>

typedef struct txl_ref txl_ref_t;

/* mem_len < 0: the config's. Returns 0 or a negative code. */
int txl_ref_load(const char *dir, int mem_len, txl_ref_t **out);
void txl_ref_free(txl_ref_t *r);
int txl_ref_d_model(const txl_ref_t *r);
int txl_ref_n_layer(const txl_ref_t *r);
int txl_ref_vocab(const txl_ref_t *r);
int txl_ref_mem_len(const txl_ref_t *r);

/* One segment. mems: [n_layer][mlen][d_model] or NULL with mlen 0 (HF mems=None). Writes
 * logp [n][vocab] (row t = log p(next token | tokens ≤ t)), hidden [n][d_model], and the new
 * memories into *new_mems (malloc'd [n_layer][*new_mlen][d_model]; NULL when mem_len is 0). */
int txl_ref_forward(const txl_ref_t *r, const double *mems, int mlen, const int32_t *ids, int n,
                    double *logp, double *hidden, double **new_mems, int *new_mlen);

#endif
