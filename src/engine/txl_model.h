/* Engine-internal: the loaded Transformer-XL model (HF TransfoXLLMHeadModel layout), its
 * word-level vocabulary and the per-session memory. Written once by txl_model.c, read-only
 * afterwards; a memory is owned by one session. Linear weights keep the HF layout W[out][in]. */
#ifndef XF_ENGINE_TXL_MODEL_H
#define XF_ENGINE_TXL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/txl.h>

#include "engine/owned.h"

typedef struct xf_txl_layer {
    const float *qkv_w;        /* [3·h·d][d_model]: rows q, then k, then v (head-major) */
    const float *r_w;          /* [h·d][d_model] r_net */
    const float *o_w;          /* [d_model][h·d] */
    const float *ln1_g, *ln1_b;/* dec_attn.layer_norm [d_model] */
    const float *u, *v;        /* r_w_bias, r_r_bias [h][d] (per layer or shared) */
    const float *ff1_w, *ff1_b;/* CoreNet.0 [d_inner][d_model], [d_inner] */
    const float *ff2_w, *ff2_b;/* CoreNet.3 [d_model][d_inner], [d_model] */
    const float *ln2_g, *ln2_b;/* pos_ff.layer_norm [d_model] */
} xf_txl_layer_t;

/* One cluster of the adaptive input / output: tokens [lo, hi), width d. */
typedef struct xf_txl_cluster {
    int32_t lo, hi, d;
    const float *emb;          /* [hi-lo][d] word_emb.emb_layers.c (div_val 1: rows of layer 0) */
    const float *emb_proj;     /* [d_model][d] or NULL (identity) */
    const float *out_w;        /* [hi-lo][d] crit weight (tied: = emb) */
    const float *out_b;        /* [hi-lo] */
    const float *out_proj;     /* [d_model][d] or NULL (identity) */
} xf_txl_cluster_t;

struct xf_txl {
    xf_txl_info_t info;
    xf_txl_layer_t *layers;                 /* [n_layer] */
    xf_txl_cluster_t cl[XF_TXL_MAX_CLUSTERS + 1];   /* [n_clusters + 1], 0 = shortlist */
    const float *cluster_w;                 /* [n_clusters][d_embed] crit.cluster_weight */
    const float *cluster_b;                 /* [n_clusters] */

    /* vocabulary */
    char **sym;                             /* [n_symbols] */
    int32_t *slot;                          /* open addressing: id + 1, 0 empty */
    uint32_t slot_mask;

    void *map;                              /* mmap of model.safetensors */
    size_t map_len;
    xf_owned_t owned;                       /* converted tensors, strings, ... */
};

struct xf_txl_mem {
    int32_t n_layer, d_model, cap;          /* cap = the model's mem_len */
    int32_t rows;
    int64_t segments, tokens;
    int has_boundary;
    float *data;                            /* [n_layer][cap][d_model], rows oldest first */
    float *boundary;                        /* [d_model] */
};

/* Index of symbol s (len bytes), or -1. */
int32_t xf_txl_vocab_find(const xf_txl_t *m, const char *s, size_t len);
/* Load vocab.txt (first whitespace field of each line; duplicates ignored, as the original
 * Vocab.add_symbol) and tokenizer_config.json's lower_case. */
int xf_txl_vocab_load(xf_txl_t *m, const char *dir, xf_diag_t *diag);
void xf_txl_vocab_free(xf_txl_t *m);

#endif
