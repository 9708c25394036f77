/* Engine-internal: the plain reference kernels (kernels/ref/) and the scalar helpers they share
 * with the dispatcher: one function per slot of xf_kernels_t, the formula in each comment,
 * plain loops and no intrinsics. They are the fallback and what every fast kernel is tested
 * against (tests/engine/test_kernels.c). */
#ifndef XF_ENGINE_KERNELS_REF_H
#define XF_ENGINE_KERNELS_REF_H

#include <string.h>

#include "engine/kernels.h"

/* Scalar activations: gelu_erf(x) = 0.5·x·(1 + erf(x/√2)), written as 0.5·x·erfc(-x/√2)
 * (same value, no cancellation for x < 0); gelu_tanh(x) = 0.5·x·(1 + tanh(u)),
 * u = √(2/π)·(x + 0.044715·x³), written as x / (1 + exp(-2u)) for the same reason. */
float xf_gelu_erf_ref(float x);
float xf_gelu_tanh_ref(float x);
/* act(v) for an epilogue (XF_EPI_NONE and XF_EPI_BIAS: identity). */
float xf_act_ref(enum xf_epilogue act, float v);

void xf_linear_ref(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                   const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                   int ith, int nth);
void xf_add_layernorm_ref(int32_t r0, int32_t r1, int32_t d, const float *x, int32_t ldx,
                          const float *bias, const float *res, int32_t ldr, const float *g,
                          const float *b, float eps, float *out, int32_t ldo);
void xf_bias_act_ref(size_t i0, size_t i1, int32_t d, const float *x, const float *bias,
                     enum xf_epilogue act, float *y);
void xf_softmax_ref(int32_t r0, int32_t r1, int32_t n, float *x, int32_t ld);
void xf_qkv_split_ref(int32_t t0, int32_t t1, int32_t n_tok, int32_t h, int32_t d,
                      const float *q, const float *k, const float *v, int32_t ld, float q_scale,
                      float *Q, float *K, float *V);
void xf_embed_ref(int32_t t0, int32_t t1, int32_t d, const int32_t *ids, const int32_t *pos_ids,
                  const int32_t *types, const float *word, const float *pos, const float *type,
                  const float *g, const float *b, float eps, float *out);

/* Portable GEMM through cblas_sgemm (single-threaded OpenBLAS per pool thread, on a slice of
 * rows or columns); uses w->w. Lives in kernels.c. */
void xf_linear_cblas(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                     const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                     int ith, int nth);

/* Packed weight layout shared by every own GEMM kernel: K in blocks of XF_GEMM_KC, each block
 * a contiguous [n_pad/16][kc][16] array (n_pad = n rounded up to 16, kc = the block's length):
 * for k = k0 + kk in the block starting at k0,
 *   packed[k0·n_pad + (p·kc + kk)·16 + c] = W[16p + c][k]   (0 for 16p + c >= n).
 * 64-byte aligned. A kernel tile reads one block of consecutive panels: no cache aliasing
 * between panels whatever k is. Packs pw->w into a new pw->packed. Returns 0 or -ENOMEM. */
#define XF_GEMM_PANEL 16
#define XF_GEMM_KC 256
int xf_gemm_w_pack(xf_gemm_w_t *pw);

/* The bf16 copy (xf_gemm_w_add_bf16) has the same blocks and panels, each block's k padded to
 * an even kc2 and stored in k pairs (the vdpbf16ps layout):
 *   packed_bf16[k0·n_pad + (p·kc2 + 2·(kk/2))·16 + 2c + kk%2] = bf16(W[16p + c][k]). */

/* fp32 → bf16 bits, rounded to nearest even (NaN stays a quiet NaN). */
static inline uint16_t xf_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float xf_bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The reference twin of the bf16 weight path: y = epi(x·bf16(W)ᵀ + b), W rounded to bf16
 * element by element, k summed in order in fp32, rows split by ith/nth. */
void xf_linear_bf16_ref(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                        const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                        int ith, int nth);

#endif
