/* Error bounds shared by the kernel tests (see kernel_tol.h). */
#include "config.h"

#include <math.h>

#include "kernel_tol.h"

/* Identity/ReLU are one add: exact. GELU (erf): the fast kernels use an erfc with relative
 * error < 1.2e-7 (Numerical Recipes' erfcc) and a vector exp of ~2 ulp; libm's erfcf is ~1 ulp:
 * 1e-6 relative, plus the conditioning of erfc(z) for large z (a 1-ulp change of z = x/√2 moves
 * it by 2z²·u relative). GELU (tanh): x / (1 + e^(-2u)) with a ~2 ulp exp: 1e-6 relative, plus
 * 2|u|·u for a 1-ulp change of u (the vector code may round u differently). 1e-30 absolute for
 * results that underflow (x ≪ 0) differently. */
double xf_test_act_tol(enum xf_epilogue act, float v, float ref)
{
    double z = v / sqrt(2.0);
    double u = 0.7978845608028654 * (v + 0.044715 * (double)v * v * v);
    if (act == XF_EPI_BIAS_GELU)
        return (1e-6 + 4.0 * z * z * XF_TEST_EPS32) * fabs(ref) + 1e-30;
    if (act == XF_EPI_BIAS_GELU_TANH)
        return (1e-6 + 8.0 * fabs(u) * XF_TEST_EPS32) * fabs(ref) + 1e-30;
    return 0.0;
}
