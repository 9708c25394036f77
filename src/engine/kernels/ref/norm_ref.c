/* Reference kernels: bias + residual + LayerNorm, and the embedding sum + LayerNorm. */
#include "config.h"

#include <math.h>

#include "engine/kernels/ref/ref.h"

/* t = x[r] + bias + res[r]; out[r] = (t - mean(t)) / √(var(t) + eps) · g + b,
 * mean and (biased) variance over d columns, two passes in fp32. out may alias x or res:
 * every pass reads element c before the last pass writes element c. */
void xf_add_layernorm_ref(int32_t r0, int32_t r1, int32_t d, const float *x, int32_t ldx,
                          const float *bias, const float *res, int32_t ldr, const float *g,
                          const float *b, float eps, float *out, int32_t ldo)
{
    for (int32_t r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * (size_t)ldx;
        const float *rr = res ? res + (size_t)r * (size_t)ldr : NULL;
        float *o = out + (size_t)r * (size_t)ldo;
        float sum = 0.0f;
        for (int32_t c = 0; c < d; c++)
            sum += xr[c] + (bias ? bias[c] : 0.0f) + (rr ? rr[c] : 0.0f);
        float mean = sum / (float)d;
        float sq = 0.0f;
        for (int32_t c = 0; c < d; c++) {
            float t = xr[c] + (bias ? bias[c] : 0.0f) + (rr ? rr[c] : 0.0f) - mean;
            sq += t * t;
        }
        float rstd = 1.0f / sqrtf(sq / (float)d + eps);
        for (int32_t c = 0; c < d; c++) {
            float t = xr[c] + (bias ? bias[c] : 0.0f) + (rr ? rr[c] : 0.0f) - mean;
            o[c] = t * rstd * g[c] + b[c];
        }
    }
}

/* out[t] = word[ids[t]] + pos[pos_ids[t]] + type[types[t]] (type row 0 when types is NULL,
 * no type term when type is NULL; position t when pos_ids is NULL), then, when g != NULL,
 * out[t] = LayerNorm(out[t])·g + b as above. Rows of out are d apart. */
void xf_embed_ref(int32_t t0, int32_t t1, int32_t d, const int32_t *ids, const int32_t *pos_ids,
                  const int32_t *types, const float *word, const float *pos, const float *type,
                  const float *g, const float *b, float eps, float *out)
{
    for (int32_t t = t0; t < t1; t++) {
        const float *we = word + (size_t)ids[t] * (size_t)d;
        const float *pe = pos + (size_t)(pos_ids ? pos_ids[t] : t) * (size_t)d;
        const float *te = type ? type + (size_t)(types ? types[t] : 0) * (size_t)d : NULL;
        float *o = out + (size_t)t * (size_t)d;
        for (int32_t c = 0; c < d; c++)
            o[c] = we[c] + pe[c] + (te ? te[c] : 0.0f);
        if (g)
            xf_add_layernorm_ref(0, 1, d, o, d, NULL, NULL, 0, g, b, eps, o, d);
    }
}
