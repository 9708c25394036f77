/* Engine-internal: a loaded model's int8 Linear weights (model.quantize = "int8", ATTENTION.md
 * §24): Q, K, V, attention output, FFN1 and FFN2 of every layer quantised per output channel
 * once at load (from the fp32 view the loader made of F32/F16/BF16 tensors). Embeddings,
 * LayerNorm, softmax, GELU, pooling and the heads stay fp32. Read-only after load. */
#ifndef XF_ENGINE_QUANT_H
#define XF_ENGINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/error.h>
#include <xformd/model.h>

#include "engine/kernels/qgemm.h"

/* BF16: the same Linear layers with bf16 weights and fp32 arithmetic (kernels.h,
 * xf_gemm_w_add_bf16); prepared with the plan, nothing is built here. */
enum xf_quant_mode { XF_QUANT_NONE = 0, XF_QUANT_INT8, XF_QUANT_BF16 };

typedef struct xf_quant_layer {
    /* Q, K and V stacked into qkv (one GEMM, n = 3·da) when da is a whole number of panels
     * (da % 16 == 0: every BERT-like model); q, k, v are then empty. */
    xf_qgemm_w_t q, k, v, o, ff1, ff2, qkv;
} xf_quant_layer_t;

typedef struct xf_quant {
    int32_t n_layer;
    xf_quant_layer_t *layers;   /* [n_layer] */
    size_t bytes;               /* quantised weights, column sums and scales */
} xf_quant_t;

/* "none" (or NULL / empty), "int8" and "bf16"; anything else is -EINVAL with diag naming the
 * value. */
int xf_quant_parse(const char *s, enum xf_quant_mode *out, xf_diag_t *diag);
/* The name of a mode: "none", "int8", "bf16". */
const char *xf_quant_name(enum xf_quant_mode mode);

/* Quantise the model's six Linear weights of every layer. Ownership: *out is new, free with
 * xf_quant_free(). Returns 0, -ENOMEM or -EINVAL (a non-finite weight; diag names it). */
int xf_quant_build(const xf_model_t *m, xf_quant_t **out, xf_diag_t *diag);
void xf_quant_free(xf_quant_t *q);

#endif
