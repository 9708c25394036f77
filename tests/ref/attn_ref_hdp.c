/* The "hdp" reference (attn_ref_hdp.h). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_ref_hdp.h"
#include "ref/attn_ref_t.h"

/* Fixed point X = round(x·2^f), saturated to the int8 integer range [−128·2^f, 128·2^f − 1];
 * NaN -> 0. Integer part: floor(X / 2^f) (two's-complement split) or trunc (sign-magnitude);
 * fraction: x − integer part (in units of 1, a multiple of 2^−f). */
static void split(double x, int f, int sign, double *ip, double *fp)
{
    const double one = ldexp(1.0, f);
    double X = isnan(x) ? 0.0 : round(x * one);
    if (X > 128.0 * one - 1.0)
        X = 128.0 * one - 1.0;
    if (X < -128.0 * one)
        X = -128.0 * one;
    double I = sign ? trunc(X / one) : floor(X / one);
    *ip = I;
    *fp = X / one - I;
}

void xf_ref_hdp(const xf_ref_hdp_params *p, int32_t n, int32_t H, int32_t d, const float *q,
                const float *k, const float *v, size_t plane, double q_scale, double scale,
                uint8_t *keep_head, uint8_t *keep_block, float *out)
{
    const int32_t nb = (n + 1) / 2;
    const size_t nn = (size_t)n * n;
    const size_t nd = (size_t)n * d;
    double *qi = malloc(sizeof(double) * nd), *qf = malloc(sizeof(double) * nd);
    double *ki = malloc(sizeof(double) * nd), *kf = malloc(sizeof(double) * nd);
    double *S = malloc(sizeof(double) * nn), *imp = malloc(sizeof(double) * (size_t)nb * nb);
    double *bias = malloc(sizeof(double) * nn), *hm = malloc(sizeof(double) * (size_t)H);
    uint8_t *blk = calloc((size_t)H * nb * nb, 1), *A = malloc(nn), *kh = malloc((size_t)H);

    for (int32_t h = 0; h < H; h++) {
        const float *Q = q + (size_t)h * plane, *K = k + (size_t)h * plane;
        for (size_t x = 0; x < (size_t)n * d; x++) {
            split((double)Q[x] / q_scale, p->frac_bits, p->sign_split, &qi[x], &qf[x]);
            split((double)K[x], p->frac_bits, p->sign_split, &ki[x], &kf[x]);
        }
        for (int32_t i = 0; i < n; i++)   /* integer scores */
            for (int32_t j = 0; j < n; j++) {
                double s = 0;
                for (int32_t c = 0; c < d; c++)
                    s += qi[(size_t)i * d + c] * ki[(size_t)j * d + c];
                S[(size_t)i * n + j] = s;
            }
        double mean_imp = 0;
        for (int32_t a = 0; a < nb; a++)   /* 2×2 block importance, clipped to n */
            for (int32_t c = 0; c < nb; c++) {
                double s = 0;
                for (int32_t i = 2 * a; i < 2 * a + 2 && i < n; i++)
                    for (int32_t j = 2 * c; j < 2 * c + 2 && j < n; j++)
                        s += fabs(S[(size_t)i * n + j]);
                imp[(size_t)a * nb + c] = s;
                mean_imp += s;
            }
        hm[h] = mean_imp / ((double)nb * nb);
        for (int32_t a = 0; a < nb; a++) {   /* row-balanced threshold */
            const double *row = imp + (size_t)a * nb;
            double lo = row[0], hi = row[0], sum = 0;
            for (int32_t c = 0; c < nb; c++) {
                lo = fmin(lo, row[c]);
                hi = fmax(hi, row[c]);
                sum += row[c];
            }
            double mu = sum / nb, th;
            if (p->rho_B <= 1.0)
                th = fmin(lo + p->rho_B * (mu - lo), mu);
            else
                th = fmax(mu + (p->rho_B - 1.0) * (hi - mu), mu);
            th = fmin(th, hi);
            for (int32_t c = 0; c < nb; c++)
                blk[((size_t)h * nb + a) * nb + c] = row[c] >= th;
        }
    }
    double hmax = 0;
    for (int32_t h = 0; h < H; h++)
        hmax = fmax(hmax, hm[h]);
    for (int32_t h = 0; h < H; h++)
        kh[h] = hmax == 0 || !(hm[h] / hmax < p->tau_H);

    for (int32_t h = 0; h < H; h++) {
        const float *Q = q + (size_t)h * plane, *K = k + (size_t)h * plane;
        if (!kh[h]) {
            for (int32_t i = 0; i < n; i++)
                memset(out + ((size_t)i * H + h) * d, 0, sizeof(float) * (size_t)d);
            continue;
        }
        for (int32_t i = 0; i < n; i++)
            for (int32_t j = 0; j < n; j++)
                A[(size_t)i * n + j] = blk[((size_t)h * nb + i / 2) * nb + j / 2];
        if (p->approx) {   /* s·(q^I·k^I + q^I·k^F + q^F·k^I) */
            for (size_t x = 0; x < (size_t)n * d; x++) {
                split((double)Q[x] / q_scale, p->frac_bits, p->sign_split, &qi[x], &qf[x]);
                split((double)K[x], p->frac_bits, p->sign_split, &ki[x], &kf[x]);
            }
            for (int32_t i = 0; i < n; i++)
                for (int32_t j = 0; j < n; j++) {
                    double s = 0;
                    int nan = 0;
                    for (int32_t c = 0; c < d; c++) {
                        size_t a = (size_t)i * d + c, b = (size_t)j * d + c;
                        s += qi[a] * ki[b] + qi[a] * kf[b] + qf[a] * ki[b];
                        nan |= isnan(Q[a]) || isnan(K[b]);
                    }
                    bias[(size_t)i * n + j] = nan ? NAN : scale * s;
                }
        }
        xf_ref_attend(n, d, Q, K, v + (size_t)h * plane, d, p->approx ? 0.0 : scale / q_scale, A,
                      p->approx ? bias : NULL, NULL, out + (size_t)h * d, H * d);
    }
    if (keep_head)
        memcpy(keep_head, kh, (size_t)H);
    if (keep_block)
        memcpy(keep_block, blk, (size_t)H * nb * nb);
    free(qi), free(qf), free(ki), free(kf), free(S), free(imp), free(bias), free(hm);
    free(blk), free(A), free(kh);
}
