/* Reference int8 kernels (qgemm.h): per-row activation quantisation, the int8 Linear with its
 * dequantising epilogue, and a scalar multiply-add loop for the peak measurement. Plain loops,
 * the formulas of ATTENTION.md §24; every fast int8 kernel is tested against these. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "engine/kernels/gelu_poly.h"
#include "engine/kernels/qgemm.h"
#include "engine/kernels/ref/ref.h"
#include "engine/pool.h"

/* α_t = max|x_t|/127; xq = clamp(rint(x·(127/max)), −127, 127) + 128; padding 128. */
void xf_quant_rows_ref(int32_t r0, int32_t r1, int32_t k, const float *x, int32_t ldx,
                       uint8_t *xq, int32_t ldq, float *alpha)
{
    for (int32_t t = r0; t < r1; t++) {
        const float *xt = x + (size_t)t * (size_t)ldx;
        uint8_t *qt = xq + (size_t)t * (size_t)ldq;
        float amax = 0.0f;
        int bad = 0;
        for (int32_t i = 0; i < k; i++) {
            float a = fabsf(xt[i]);
            if (!(a <= FLT_MAX))
                bad = 1;   /* NaN or inf */
            else if (a > amax)
                amax = a;
        }
        memset(qt, 128, (size_t)ldq);
        if (bad) {
            alpha[t] = NAN;
            continue;
        }
        alpha[t] = amax / 127.0f;
        if (amax == 0.0f)
            continue;
        float inv = 127.0f / amax;
        for (int32_t i = 0; i < k; i++) {
            float v = rintf(xt[i] * inv);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            qt[i] = (uint8_t)((int)v + 128);
        }
    }
}

/* y[t][o] = epi((float)acc · (α_t·σ_o) + b_o), acc = Σ_k (xq[t][k] − 128)·W^q[o][k] exactly in
 * s32 (|acc| ≤ 127·127·k < 2³¹ for k < 133,000); rows split by ith/nth. */
void xf_qlinear_ref(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth)
{
    int r0, r1;
    xf_split_rows(m, ith, nth, &r0, &r1);
    for (int t = r0; t < r1; t++) {
        const uint8_t *xt = xq + (size_t)t * (size_t)ldq;
        for (int32_t o = 0; o < w->n; o++) {
            int32_t acc = 0;
            for (int32_t kk = 0; kk < w->k; kk++)
                acc += ((int32_t)xt[kk] - 128) * (int32_t)xf_qgemm_w_at(w, o, kk);
            float v = (float)acc * (alpha[t] * w->sigma[o]);
            if (epi != XF_EPI_NONE)
                v = xf_act_ref(epi, v + bias[o]);
            y[(size_t)t * (size_t)ldy + (size_t)o] = v;
        }
    }
}

/* xf_qlinear_ref (rows split by ith/nth: whole rows already), then this thread's rows
 * quantised with xf_quant_rows_ref. */
void xf_qlinear_quant_ref(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth)
{
    int r0, r1;
    xf_qlinear_ref(w, m, xq, ldq, alpha, bias, epi, y, ldy, ith, nth);
    xf_split_rows(m, ith, nth, &r0, &r1);
    if (r0 < r1)
        xf_quant_rows_ref(r0, r1, w->n, y, ldy, qo->xq, qo->ldq, qo->alpha);
}

/* 8 independent scalar multiply-add chains (the portable int8 "peak"). */
double xf_qpeak_loop_ref(int64_t iters, int32_t *sink)
{
    uint32_t a[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++)
            a[j] = a[j] * 3u + 1u;
    uint32_t s = 0;
    for (int j = 0; j < 8; j++)
        s ^= a[j];
    *sink ^= (int32_t)(s & 0x7fffffff);
    return 16.0 * (double)iters;
}
