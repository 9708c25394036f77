/* Generator of the coefficient tables in src/engine/kernels/gelu_poly.c (the piecewise
 * polynomial GELU of the int8 epilogue). Not built with the project; run it by hand:
 *   cc -O2 -o /tmp/gelu_poly_fit scripts/gelu_poly_fit.c -lm && /tmp/gelu_poly_fit
 * GELU(x) = 0.5·x + |x|·q(|x|) with q(a) = 0.5·erf(a/√2) (erf GELU) or
 * q(a) = 0.5·tanh(√(2/π)·(a + 0.044715·a³)) (tanh GELU). q is cut into XF_GELU_POLY_N pieces of
 * width 1/XF_GELU_POLY_SCALE centred on the integers of s = a·SCALE; on piece i, with
 * t = s − i ∈ [−½, ½], q ≈ c0 + c1·t + … + c5·t⁵, the polynomial that interpolates q at the six
 * Chebyshev nodes of [−½, ½] (solved in double, rounded to float). The tables are printed as
 * c[k][i] (coefficient k of piece i). tests/engine/test_qgemm.c checks the bound that results. */
#include <math.h>
#include <stdio.h>

#define DEG 5
#define NPIECE 8
#define SCALE 1.25

static double q_erf(double a)
{
    return 0.5 * erf(a / sqrt(2.0));
}

static double q_tanh(double a)
{
    return 0.5 * tanh(0.7978845608028654 * (a + 0.044715 * a * a * a));
}

static void fit(const char *name, double (*q)(double))
{
    float c[DEG + 1][NPIECE];
    for (int i = 0; i < NPIECE; i++) {
        const int n = DEG + 1;
        double A[DEG + 1][DEG + 2];
        for (int r = 0; r < n; r++) {
            double t = 0.5 * cos(M_PI * (r + 0.5) / n), p = 1.0;
            for (int k = 0; k < n; k++, p *= t)
                A[r][k] = p;
            A[r][n] = q((i + t) / SCALE);
        }
        for (int k = 0; k < n; k++) {   /* Gauss-Jordan with partial pivoting */
            int piv = k;
            for (int r = k + 1; r < n; r++)
                if (fabs(A[r][k]) > fabs(A[piv][k]))
                    piv = r;
            for (int j = 0; j <= n; j++) {
                double tmp = A[k][j];
                A[k][j] = A[piv][j];
                A[piv][j] = tmp;
            }
            for (int r = 0; r < n; r++)
                if (r != k) {
                    double f = A[r][k] / A[k][k];
                    for (int j = k; j <= n; j++)
                        A[r][j] -= f * A[k][j];
                }
        }
        for (int k = 0; k < n; k++)
            c[k][i] = (float)(A[k][n] / A[k][k]);
    }
    printf("const float %s[XF_GELU_POLY_DEG + 1][XF_GELU_POLY_N] = {\n", name);
    for (int k = 0; k <= DEG; k++) {
        printf("    {");
        for (int i = 0; i < NPIECE; i++)
            printf("%s%.9e", i ? ", " : " ", (double)c[k][i]);
        printf(" },\n");
    }
    printf("};\n");
}

int main(void)
{
    fit("xf_gelu_poly_erf", q_erf);
    fit("xf_gelu_poly_tanh", q_tanh);
    return 0;
}
