/* Engine-internal: the loaded model's weights and the view the forward pass reads.
 * Written once by the loader (loader.c), read-only afterwards by every thread.
 * Linear weights keep the Hugging Face layout: W[out][in] row-major, y = x·Wᵀ + b. */
#ifndef XF_ENGINE_MODEL_H
#define XF_ENGINE_MODEL_H

#include <xformd/model.h>
#include <xformd/tokenizer.h>
#include <xformd/attention.h>

#include "engine/owned.h"

/* One weight tensor as fp32: mmap'd in place (F32 files) or converted once at load. */
typedef struct xf_w {
    const float *data;      /* NULL when the model lacks the tensor */
    int32_t rows, cols;     /* Linear: rows = out features, cols = in features; vectors: 1 × n */
} xf_w_t;

typedef struct xf_layer {
    int32_t n_head, d_head, d_ff;          /* d_attn = n_head * d_head */
    xf_w_t q_w, q_b, k_w, k_b, v_w, v_b;   /* [d_attn][d_model], [d_attn] */
    xf_w_t o_w, o_b;                       /* [d_model][d_attn], [d_model] */
    xf_w_t ln1_g, ln1_b;                   /* attention-output LayerNorm [d_model] */
    xf_w_t ff1_w, ff1_b;                   /* [d_ff][d_model], [d_ff] */
    xf_w_t ff2_w, ff2_b;                   /* [d_model][d_ff], [d_model] */
    xf_w_t ln2_g, ln2_b;                   /* FFN-output LayerNorm [d_model] */
} xf_layer_t;

struct xf_model {
    xf_model_info_t info;                  /* the public view; strings point into owned storage */
    xf_layer_info_t *layer_info;           /* [n_layer], info.layers points here */
    xf_layer_t *layers;                    /* [n_layer] */
    xf_w_t word_emb;                       /* [vocab][d_model] */
    xf_w_t pos_emb;                        /* [positions][d_model] (incl. the offset rows) */
    xf_w_t type_emb;                       /* [type_vocab][d_model] or empty */
    xf_w_t emb_ln_g, emb_ln_b;             /* [d_model]; empty for pre-LN models without it */
    xf_w_t final_ln_g, final_ln_b;         /* pre-LN models only */
    xf_w_t pool_w, pool_b;                 /* BERT pooler [d_model][d_model] */
    xf_w_t head_dense_w, head_dense_b;     /* RoBERTa classifier.dense / DistilBERT pre_classifier */
    xf_w_t cls_w, cls_b;                   /* [n_labels][d_model] */
    xf_tokenizer_t *tok;                   /* owned */
    xf_attn_t *attn;                       /* owned default attention selection */

    /* Storage the loader owns. */
    void *map;                             /* mmap of model.safetensors */
    size_t map_len;
    xf_owned_t owned;                      /* converted tensors, strings, ... */

    /* int8 Linear weights (load option quantize = "int8", quant.h) or NULL; owned. */
    struct xf_quant *q8;

    /* The forward pass's prepared weights (packed GEMM panels, ...): built once by the loader
     * (xf_plan_prep_build, plan.c), or at the first plan of a model assembled by hand; under
     * prep_lock; read-only afterwards; freed by prep_free. */
    void *prep;
    void (*prep_free)(void *prep);
};

#endif
