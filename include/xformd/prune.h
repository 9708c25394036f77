/* xformd public API: structured pruning (FastFormers, ATTENTION.md §24) — importance scores of
 * every attention head and FFN unit from a calibration set, the per-layer selection of the top
 * ones, and writing the pruned model as a Hugging Face directory. An inference engine has no
 * backward pass, so the scores are not FastFormers' gradient scores:
 *  - head (l, h): output-change ablation — the mean over the calibration tokens of
 *    ‖H'_t − H_t‖₂, where H are the final hidden states and H' those of a copy of the weights
 *    whose attention output projection has head h's columns set to zero (head mask ξ_{l,h} = 0);
 *  - FFN unit (l, u): first-order contribution — mean_t |a_{t,u}| · ‖W2[:, u]‖₂, the norm of the
 *    unit's rank-1 contribution to the FFN output (a = the intermediate after the activation);
 * each then L2-normalised per layer (Michel et al. 2019, as FastFormers). Calls allocate; use
 * from one thread (tools, not the serving path). */
#ifndef XFORMD_PRUNE_H
#define XFORMD_PRUNE_H

#include <xformd/error.h>
#include <xformd/model.h>
#include <xformd/tokenizer.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Scores per layer, L2-normalised per layer (a layer whose scores are all 0 stays 0).
 * Ownership: new, free with xf_prune_scores_free(). */
typedef struct xf_prune_scores {
    int32_t n_layer;
    int32_t *n_head;           /* [n_layer] heads of each layer */
    int32_t *d_ff;             /* [n_layer] FFN width of each layer */
    float **head;              /* [n_layer][n_head[l]] */
    float **ffn;               /* [n_layer][d_ff[l]] */
    int64_t n_tokens;          /* calibration tokens the scores were averaged over */
} xf_prune_scores_t;

/* Score every head and FFN unit of m on the calibration sequences seqs[0..n_seq) (token ids
 * with specials, each 1..max_positions long), run in fp32 on n_threads threads (<= 0: online
 * cores) in batches of up to 16 sequences. Costs (1 + Σ_l n_head_l) forwards over the set.
 * Returns 0, -EINVAL (no sequences, bad lengths or ids: diag says which), -ENOMEM, or a
 * forward's error. Ownership: *out is new. */
XF_API int xf_prune_score(const xf_model_t *m, const xf_tokens_t *seqs, int32_t n_seq,
                          int n_threads, xf_prune_scores_t **out, xf_diag_t *diag);
XF_API void xf_prune_scores_free(xf_prune_scores_t *s);

/* What each layer keeps: indices into the layer's current heads / FFN units, ascending.
 * Ownership: new, free with xf_prune_keep_free(). */
typedef struct xf_prune_keep {
    int32_t n_layer;
    int32_t *n_head;           /* [n_layer] heads kept */
    int32_t **head;            /* [n_layer][n_head[l]] */
    int32_t *n_ffn;            /* [n_layer] FFN units kept */
    int32_t **ffn;             /* [n_layer][n_ffn[l]] */
} xf_prune_keep_t;

/* Keep the heads[l] highest-scoring heads and ffn[l] highest-scoring FFN units of every layer
 * (ties: the lower index). Returns 0, or -EINVAL when a target is < 1 or above the layer's
 * count (diag names the layer). Ownership: *out is new. */
XF_API int xf_prune_select(const xf_prune_scores_t *s, const int32_t *heads, const int32_t *ffn,
                           xf_prune_keep_t **out, xf_diag_t *diag);
XF_API void xf_prune_keep_free(xf_prune_keep_t *k);

/* Write the pruned model to out_dir as a Hugging Face directory: model.safetensors (every
 * tensor F32; rows of Q/K/V weights and biases per kept head, the matching columns of the
 * attention output projection, rows of FFN1 weight and bias and columns of FFN2 per kept unit),
 * config.json from the model's with pruned_heads (layer index string → original head indices,
 * merged with any earlier record, as transformers writes it) and intermediate_size (hidden_dim
 * for DistilBERT) set to the widest kept FFN — with widths differing per layer also
 * intermediate_size_per_layer, which transformers cannot represent (xformd reads widths from
 * the tensor shapes) — and the tokenizer and sentence-transformers files copied. m must have
 * been loaded from a directory holding model.safetensors. Everything is written into a
 * temporary directory beside out_dir and renamed at the end: on failure nothing is left.
 * Returns 0, -EEXIST (out_dir exists and is not empty), -EINVAL (keep does not fit m),
 * XF_EFORMAT (a tensor the loader used is missing from the file), -errno, -ENOMEM. */
XF_API int xf_prune_write(const xf_model_t *m, const xf_prune_keep_t *k, const char *out_dir,
                          xf_diag_t *diag);

#ifdef __cplusplus
}
#endif
#endif
