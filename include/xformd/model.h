/* xformd public API: models — load a Hugging Face model directory, describe it, write the demo
 * model. A loaded model is immutable: it may be shared by every thread. */
#ifndef XFORMD_MODEL_H
#define XFORMD_MODEL_H

#include <xformd/error.h>
#include <xformd/tokenizer.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xf_model xf_model_t;
typedef struct xf_attn xf_attn_t;   /* see <xformd/attention.h> */

enum xf_arch {
    XF_ARCH_BERT = 1,      /* BertModel, BertForSequenceClassification (MiniLM, BGE, E5, GTE) */
    XF_ARCH_ROBERTA,       /* RoBERTa / XLM-R: positions start at pad_token_id + 1 */
    XF_ARCH_DISTILBERT,    /* DistilBERT: own tensor names, no token types, no pooler */
    XF_ARCH_COUNT
};

enum xf_act { XF_ACT_GELU = 1 /* exact erf */, XF_ACT_GELU_TANH, XF_ACT_RELU };

enum xf_pooling {
    XF_POOL_DEFAULT = 0,   /* the model's default (sentence-transformers config, else CLS) */
    XF_POOL_CLS,           /* hidden state of the first token */
    XF_POOL_MEAN,          /* mean over the sequence's tokens (no padding exists) */
    XF_POOL_POOLER,        /* BERT pooler: tanh(W·h_cls + b); needs pooler weights */
    XF_POOL_NONE,          /* no pooling: per-token hidden states */
    XF_POOL_COUNT
};

/* Classifier head styles, from the architecture. */
enum xf_head {
    XF_HEAD_NONE = 0,      /* encoder only */
    XF_HEAD_BERT,          /* logits = W·pooler(h_cls) + b */
    XF_HEAD_ROBERTA,       /* logits = out_proj(tanh(dense(h_cls))) */
    XF_HEAD_DISTILBERT     /* logits = classifier(relu(pre_classifier(h_cls))) */
};

typedef struct xf_layer_info {
    int32_t n_head;        /* heads of this layer (pruned models differ per layer) */
    int32_t d_head;        /* head width */
    int32_t d_ff;          /* FFN width of this layer */
} xf_layer_info_t;

/* A description of a loaded model. Ownership: borrowed, valid until xf_model_free(). */
typedef struct xf_model_info {
    const char *name;          /* served name: load option, else the directory's basename */
    const char *dir;           /* the directory it was loaded from */
    enum xf_arch arch;
    const char *arch_name;     /* "BertModel", "RobertaForSequenceClassification", ... */
    int32_t n_layer;
    int32_t d_model;
    int32_t vocab_size;
    int32_t max_positions;     /* usable sequence length (positions minus any offset) */
    int32_t type_vocab_size;   /* 0 when the model has no token types */
    int32_t position_offset;   /* first position id (RoBERTa: pad_token_id + 1) */
    const xf_layer_info_t *layers; /* [n_layer] */
    enum xf_act act;
    float ln_eps;
    int pre_ln;                /* 1: pre-LN blocks plus a final LayerNorm; 0: post-LN (BERT) */
    enum xf_head head;
    int32_t n_labels;          /* classifier outputs, 0 without a classifier */
    const char *const *labels; /* [n_labels] id2label names, or NULL */
    int has_pooler;
    enum xf_pooling pooling;   /* default pooling (sentence-transformers config, else CLS) */
    int normalize;             /* default L2 normalisation of pooled embeddings */
    int64_t n_params;          /* parameters actually used */
    const char *file_dtype;    /* "F32", "F16", "BF16" (as stored) */
    int is_demo;               /* random-weight demo model made by xf_demo_write() */
    const char *quantize;      /* "none", or "int8": Q/K/V, attention output, FFN1, FFN2 run as
                                  int8 Linear layers (per-channel weights, per-token
                                  activations; ATTENTION.md §24), or "bf16": the same layers
                                  with bf16 weights and fp32 arithmetic */
    int32_t max_input;         /* longest encoded input, specials included, that requests are
                                  cut to or refused at: sentence-transformers' max_seq_length
                                  (sentence_bert_config.json or a sibling, as
                                  sentence-transformers and TEI read it) when below
                                  max_positions, else max_positions */
    int pool_skip_prompt;      /* 1: sentence-transformers' Pooling says include_prompt false
                                  with mean pooling, i.e. a prompt's tokens ([CLS] included)
                                  are left out of the mean. xformd does not do that: callers
                                  must not put a prompt before a text they pool (the server
                                  refuses prompt_name on its pooling routes) */
} xf_model_info_t;

typedef struct xf_load_opts {
    const char *name;          /* served name; NULL: the directory's basename */
    const xf_tokenizer_opts_t *tokenizer;   /* NULL: as the files say */
    const char *attention;     /* default attention variant as JSON ({"variant":"window",...});
                                  NULL: from config.json's attention settings, else dense */
    const char *quantize;      /* NULL or "none": fp32; "int8": quantise the six Linear weights
                                  of every layer at load (from F32, F16 or BF16) and run them
                                  as int8 GEMMs; "bf16": keep those weights in bf16 (half the
                                  bytes; fp32 arithmetic; AVX-512 kernels only, elsewhere
                                  fp32 with a warning and info.quantize "none"); anything
                                  else is -EINVAL */
} xf_load_opts_t;

/* Load config.json + model.safetensors + vocab.txt/tokenizer.json from dir. Weights are
 * memory-mapped (F32 used in place; F16/BF16 converted once). Every offset, dtype and shape is
 * validated before any data is read. Returns 0, -ENOENT, -EACCES, XF_EFORMAT, XF_ESHAPE,
 * XF_EUNSUPPORTED, -ENOMEM; diag names the file and tensor.
 * Ownership: *out is new, free with xf_model_free(). Call from any one thread. */
XF_API int xf_model_load(const char *dir, const xf_load_opts_t *opts, xf_model_t **out,
                         xf_diag_t *diag);
XF_API void xf_model_free(xf_model_t *m);

/* Ownership: borrowed, valid until xf_model_free(). */
XF_API const xf_model_info_t *xf_model_info(const xf_model_t *m);
XF_API const xf_tokenizer_t *xf_model_tokenizer(const xf_model_t *m);
/* The model's default attention variant. Ownership: borrowed. */
XF_API const xf_attn_t *xf_model_attention(const xf_model_t *m);

/* Shape of a demo model. xf_demo_opts_init() fills the BERT-base shape. */
typedef struct xf_demo_opts {
    uint64_t seed;             /* weights are a pure function of the seed */
    int32_t n_layer, d_model, n_head, d_ff;
    int32_t vocab_size;        /* generated vocabulary size (>= 1000) */
    int32_t max_positions;
    int32_t type_vocab_size;
    int32_t n_labels;          /* > 0 adds a classifier head (BertForSequenceClassification) */
    const char *dtype;         /* "F32" (default), "F16" or "BF16" */
} xf_demo_opts_t;
XF_API void xf_demo_opts_init(xf_demo_opts_t *o);        /* BERT-base: 12/768/12/3072 */
XF_API void xf_demo_opts_init_tiny(xf_demo_opts_t *o);   /* tests: 2/64/4/128, 512 positions */

/* Write a deterministic demo model (config.json, model.safetensors, vocab.txt,
 * tokenizer_config.json) into dir, creating it. Files are written under temporary names and
 * renamed, so a crash never leaves a half model. Returns 0 or a negative code. */
XF_API int xf_demo_write(const char *dir, const xf_demo_opts_t *opts, xf_diag_t *diag);

/* Version of what xf_demo_write() writes, stamped into config.json ("xformd_demo_version");
 * raised whenever its vocabulary, weights or config change (2: the English-like vocabulary).
 * A cached demo model without the current stamp is stale: write it again. */
#define XF_DEMO_VERSION 2
/* 1 when dir holds a demo model (config.json and model.safetensors) stamped with
 * XF_DEMO_VERSION, else 0 (missing, unreadable, not a demo, or from another version). */
XF_API int xf_demo_current(const char *dir);

#ifdef __cplusplus
}
#endif
#endif
