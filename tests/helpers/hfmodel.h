/* Test helper: write a small Hugging Face model directory (config.json, model.safetensors,
 * vocab.txt, tokenizer_config.json, optional sentence-transformers pooling files) with a chosen
 * architecture, tensor-name prefix, dtype, per-layer head counts / FFN widths and classifier
 * head. Weights are a pure function of the seed. */
#ifndef XF_TEST_HFMODEL_H
#define XF_TEST_HFMODEL_H

#include <stdint.h>

#define XF_TEST_HF_MAX_LAYERS 16

typedef struct xf_test_hfmodel_opts {
    const char *arch;       /* "bert" (default), "roberta", "distilbert" */
    int n_layer;            /* default 2, <= XF_TEST_HF_MAX_LAYERS */
    int d_model;            /* default 32 */
    int d_head;             /* default 8; config num_attention_heads = d_model / d_head */
    int heads[XF_TEST_HF_MAX_LAYERS];  /* per layer, <= d_model / d_head; 0 = d_model / d_head */
    int ffn[XF_TEST_HF_MAX_LAYERS];    /* per layer; 0 = d_ff */
    int d_ff;               /* default 64; config intermediate_size = max(d_ff, ffn[]) */
    int vocab;              /* default 256 (>= 128): generated vocab.txt, same embedding rows */
    int max_pos;            /* usable positions, default 64 (RoBERTa stores pad_token_id+1 more) */
    int n_labels;           /* > 0: classifier head of the arch's style */
    const char *dtype;      /* "F32" (default), "F16", "BF16" */
    int prefix;             /* 1: "bert." / "roberta." / "distilbert." before encoder names */
    uint64_t seed;          /* default 1 */
    const char *pooling;    /* NULL: no sentence-transformers files; "cls" or "mean" */
    int normalize;          /* with pooling: add a Normalize module */
    const char *act;        /* hidden_act / activation, default "gelu" */
    int pre_ln;             /* 1: config pre_layer_norm true + encoder.LayerNorm final LN */
    int per_layer_config;   /* 1: write num_attention_heads_per_layer/intermediate_size_per_layer */
    int no_pooler;          /* 1: BERT without pooler.dense */
    float scale;            /* weights U(-scale, scale), default 0.1; LayerNorm 1±scale, ±scale */
    /* Ablation in the weights (pruning tests): per layer, a bit mask of heads whose columns of
     * the attention output projection are zero, and NULL or [d_ff] flags of FFN units whose
     * FFN2 columns are zero. */
    uint32_t zero_heads[XF_TEST_HF_MAX_LAYERS];
    const unsigned char *zero_ffn[XF_TEST_HF_MAX_LAYERS];
} xf_test_hfmodel_opts;

/* Defaults listed above. */
void xf_test_hfmodel_opts_init(xf_test_hfmodel_opts *o);

/* Write the model directory into dir (created if missing). Returns 0 or a negative code (and
 * prints why on stderr). */
int xf_test_hfmodel_write(const char *dir, const xf_test_hfmodel_opts *o);

#endif
