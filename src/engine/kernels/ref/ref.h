/* Engine-internal: the plain reference kernels (kernels/ref/) and the scalar helpers they share
 * with the dispatcher: one function per slot of xf_kernels_t, the formula in each comment,
 * plain loops and no intrinsics. They are the fallback and what every fast kernel is tested
 * against (tests/engine/test_kernels.c). */
#ifndef XF_ENGINE_KERNELS_REF_H
#define XF_ENGINE_KERNELS_REF_H

#include <string.h>

#include "engine/kernels.h"

/* act(v) for an epilogue (XF_EPI_NONE and XF_EPI_BIAS: identity; GELU, erf form
 * 0.5·x·(1 + erf(x/√2)) or tanh form 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): the piecewise
 * polynomial of gelu_poly.h, for fp32 and int8 alike). */
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
 * a contiguous n_pad × kc array (n_pad = n rounded up to XF_GEMM_PANEL = 16, kc = the block's
 * length), its columns in groups of G = pw->group columns (48, the AVX-512 tile width, or 16,
 * the AVX2 one: the table's w_group; the last group gw = min(G, n_pad − Gg) wide), each group
 * k-major: for k = k0 + kk in the block starting at k0 and column c = Gg + cc,
 *   packed[k0·n_pad + Gg·kc + kk·gw + cc] = W[c][k]   (0 for c >= n).
 * So with G = 48 the 48 columns of one k step are 192 consecutive bytes, and a 48-column
 * tile streams its block's weights as one sequential run (three 16-column panels side by
 * side would be three streams 16 KB apart); with G = 16 a 16-column micro-panel is one
 * contiguous 16 KB run that stays in L1 (reading 16 columns of a 48-wide group row instead
 * cost the AVX2 kernel 5-15 %). A kernel reads either width (xf_gemm_group_at). 64-byte
 * aligned. xf_gemm_w_pack packs pw->w into a new pw->packed for the table in use
 * (xf_kernels()->w_group, 48 if it has none); xf_gemm_w_pack_group with group 16 or 48.
 * Return 0 or -ENOMEM. */
#define XF_GEMM_PANEL 16
#define XF_GEMM_GROUP 48
#define XF_GEMM_KC 256
int xf_gemm_w_pack(xf_gemm_w_t *pw);
int xf_gemm_w_pack_group(xf_gemm_w_t *pw, int group);

/* n_pad of the layout above: pw->n rounded up to XF_GEMM_PANEL columns. */
static inline size_t xf_gemm_npad(const xf_gemm_w_t *pw)
{
    return ((size_t)pw->n + XF_GEMM_PANEL - 1) / XF_GEMM_PANEL * XF_GEMM_PANEL;
}

/* Where column c (a multiple of 16) of a block packed in groups of G columns, n_pad columns
 * and ks steps starts, in 32-bit units from the block's start, and the width gw of its group
 * (32-bit units per step): column c's 16 values of step s are at [start + s·gw, +16). A step
 * is one k (fp32, ks = kc) or one k pair of the bf16 copy (ks = kc2/2; each 32-bit unit holds
 * a column's two bf16 of the pair). */
static inline size_t xf_gemm_group_at(size_t c, size_t npad, size_t ks, size_t G, size_t *gw)
{
    size_t g0 = c / G * G;
    *gw = npad - g0 < G ? npad - g0 : G;
    return g0 * ks + (c - g0);
}

/* The bf16 copy (xf_gemm_w_add_bf16) has the same blocks and groups, each block's k padded
 * to an even kc2 and stored in k pairs (the vdpbf16ps layout), a block starting at
 * k0·n_pad/2 32-bit units: for kk < kc,
 *   packed_bf16[k0·n_pad + 2·(Gg·kc2/2 + (kk/2)·gw + cc) + kk%2] = bf16(W[c][k])
 * (the pad k of an odd kc is 0). */

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
