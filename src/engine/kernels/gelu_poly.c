/* The piecewise-polynomial GELU of every epilogue, fp32 and int8 (gelu_poly.h): the coefficient tables,
 * printed by scripts/gelu_poly_fit.c, and the scalar twin of the vector versions. */
#include "config.h"

#include <math.h>

#include "engine/kernels/gelu_poly.h"

const float xf_gelu_poly_erf[XF_GELU_POLY_DEG + 1][XF_GELU_POLY_N] = {
    { -1.208716016e-17, 2.881442308e-01, 4.452008307e-01, 4.918025434e-01, 4.993128479e-01, 4.999683201e-01, 4.999991953e-01, 5.000000000e-01 },
    { 3.191536963e-01, 2.317532897e-01, 8.873671293e-02, 1.791559719e-02, 1.907267724e-03, 1.070667713e-04, 3.169476031e-06, 4.948419630e-08 },
    { -1.486352505e-16, -7.413487136e-02, -5.680026487e-02, -1.720549539e-02, -2.439665142e-03, -1.705340110e-04, -6.004343049e-06, -1.075059402e-07 },
    { -3.403451294e-02, -8.902566507e-03, 1.476276293e-02, 9.098360315e-03, 1.880005584e-03, 1.711158693e-04, 7.418781479e-06, 1.585051592e-07 },
    { 3.462218849e-16, 9.053961374e-03, 1.427460462e-03, -2.462430391e-03, -9.603249491e-04, -1.269501954e-04, -7.350639862e-06, -2.020365031e-07 },
    { 3.176372498e-03, -3.056204587e-04, -1.726462971e-03, 7.747869677e-05, 3.000876750e-04, 6.156360178e-05, 4.612546491e-06, 1.523695516e-07 },
};
const float xf_gelu_poly_tanh[XF_GELU_POLY_DEG + 1][XF_GELU_POLY_N] = {
    { 4.013242104e-18, 2.880392373e-01, 4.450857341e-01, 4.919680655e-01, 4.994157553e-01, 4.999824166e-01, 4.999998212e-01, 5.000000000e-01 },
    { 3.191536963e-01, 2.315441668e-01, 8.900748938e-02, 1.803063601e-02, 1.769341179e-03, 7.053966692e-05, 9.212709529e-07, 3.170565366e-09 },
    { -2.856275566e-16, -7.411840558e-02, -5.657524616e-02, -1.746036112e-02, -2.420322970e-03, -1.311730011e-04, -2.213135986e-06, -8.865047363e-09 },
    { -3.420260549e-02, -8.683952503e-03, 1.457164530e-02, 9.113775566e-03, 1.945134136e-03, 1.514384057e-04, 3.551505188e-06, 1.998487242e-08 },
    { 6.376554554e-16, 9.093422443e-03, 1.336464658e-03, -2.369234106e-03, -9.982725605e-04, -1.271536894e-04, -4.746828836e-06, -4.395563025e-08 },
    { 3.246741602e-03, -3.815717937e-04, -1.662352122e-03, 5.130033242e-05, 2.986293985e-04, 6.652398588e-05, 3.605101256e-06, 4.390172492e-08 },
};

const float (*xf_gelu_poly_table(enum xf_epilogue epi))[XF_GELU_POLY_N]
{
    return epi == XF_EPI_BIAS_GELU        ? xf_gelu_poly_erf
           : epi == XF_EPI_BIAS_GELU_TANH ? xf_gelu_poly_tanh
                                          : NULL;
}

float xf_gelu_poly_ref(float x, const float (*c)[XF_GELU_POLY_N])
{
    float a = fabsf(x);
    float ac = a < XF_GELU_POLY_CLAMP ? a : XF_GELU_POLY_CLAMP;   /* NaN: the clamp; x stays NaN */
    float s = ac * XF_GELU_POLY_SCALE;
    float fi = rintf(s);
    int i = (int)fi;
    float t = s - fi;
    float q = c[XF_GELU_POLY_DEG][i];
    for (int k = XF_GELU_POLY_DEG - 1; k >= 0; k--)
        q = fmaf(q, t, c[k][i]);
    return fmaf(a, q, 0.5f * x);
}
