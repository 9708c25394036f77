/* Reference kernels: scalar activations, bias + activation and row softmax
 * (the _ref twins of the fast versions in kernels/x86/). */
#include "config.h"

#include <math.h>

#include "engine/kernels/gelu_poly.h"
#include "engine/kernels/ref/ref.h"

/* GELU (erf or tanh form): the piecewise polynomial of gelu_poly.h, |error| ≤ 6e-7·max(1, |x|)
 * against the float64 GELU, bitwise the vector versions of every ISA. */
float xf_act_ref(enum xf_epilogue act, float v)
{
    const float (*tab)[XF_GELU_POLY_N] = xf_gelu_poly_table(act);
    if (tab)
        return xf_gelu_poly_ref(v, tab);
    return act == XF_EPI_BIAS_RELU ? (v > 0.0f ? v : 0.0f) : v;
}

/* y[i] = act(x[i] + bias[i mod d]), i in [i0, i1) */
void xf_bias_act_ref(size_t i0, size_t i1, int32_t d, const float *x, const float *bias,
                     enum xf_epilogue act, float *y)
{
    for (size_t i = i0; i < i1; i++) {
        float v = x[i] + (bias ? bias[i % (size_t)d] : 0.0f);
        y[i] = xf_act_ref(act, v);
    }
}

/* x[r][j] = e^(x[r][j] - max_j x[r]) / Σ_j e^(x[r][j] - max_j x[r]);
 * a row that is all -inf (fully masked) becomes all zeros. */
void xf_softmax_ref(int32_t r0, int32_t r1, int32_t n, float *x, int32_t ld)
{
    for (int32_t r = r0; r < r1; r++) {
        float *row = x + (size_t)r * (size_t)ld;
        float mx = -INFINITY;
        for (int32_t j = 0; j < n; j++)
            mx = row[j] > mx ? row[j] : mx;
        if (mx == -INFINITY) {
            for (int32_t j = 0; j < n; j++)
                row[j] = 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (int32_t j = 0; j < n; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int32_t j = 0; j < n; j++)
            row[j] *= inv;
    }
}
