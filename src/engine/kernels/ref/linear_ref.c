/* Reference kernels: the Linear GEMM with its epilogues, the QKV split and the attention
 * score tile. */
#include "config.h"

#include "engine/kernels/ref/ref.h"
#include "engine/pool.h"

/* y[i][j] = act(Σ_k x[i][k]·W[j][k] + bias[j]), k summed in order in fp32, each weight first
 * rounded to bf16 when bf16 is set; rows split by ith/nth (each element's sum is the same for
 * any split). */
static void linear_rows(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                        const float *bias, enum xf_epilogue epi, float *y, int32_t ldy, int ith,
                        int nth, int bf16)
{
    int r0, r1;
    xf_split_rows(m, ith, nth, &r0, &r1);
    for (int i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * (size_t)ldx;
        for (int32_t j = 0; j < w->n; j++) {
            const float *wj = w->w + (size_t)j * (size_t)w->k;
            float acc = 0.0f;
            for (int32_t kk = 0; kk < w->k; kk++)
                acc += xi[kk] * (bf16 ? xf_bf16_float(xf_bf16_bits(wj[kk])) : wj[kk]);
            if (epi != XF_EPI_NONE)
                acc = xf_act_ref(epi, acc + bias[j]);
            y[(size_t)i * (size_t)ldy + (size_t)j] = acc;
        }
    }
}

void xf_linear_ref(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                   const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                   int ith, int nth)
{
    linear_rows(w, m, x, ldx, bias, epi, y, ldy, ith, nth, 0);
}

void xf_linear_bf16_ref(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                        const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                        int ith, int nth)
{
    linear_rows(w, m, x, ldx, bias, epi, y, ldy, ith, nth, 1);
}

/* Q[hh][t][j] = q_scale·q[t][hh·d + j], K[hh][t][j] = k[t][hh·d + j], V likewise, for
 * t in [t0, t1); planes are [h][n_tok][d]. */
void xf_qkv_split_ref(int32_t t0, int32_t t1, int32_t n_tok, int32_t h, int32_t d,
                      const float *q, const float *k, const float *v, int32_t ld, float q_scale,
                      float *Q, float *K, float *V)
{
    for (int32_t t = t0; t < t1; t++) {
        for (int32_t hh = 0; hh < h; hh++) {
            size_t src = (size_t)t * (size_t)ld + (size_t)hh * (size_t)d;
            size_t dst = ((size_t)hh * (size_t)n_tok + (size_t)t) * (size_t)d;
            for (int32_t j = 0; j < d; j++) {
                Q[dst + j] = q[src + j] * q_scale;
                K[dst + j] = k[src + j];
                V[dst + j] = v[src + j];
            }
        }
    }
}
