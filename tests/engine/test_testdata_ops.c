/* ONNX node cases from ../shared/testdata/onnx_node (LayerNormalization, Gelu, Softmax) run
 * through every kernel table this CPU has (xf_kernels_all), checked with each case's own
 * tolerance (|got - want| <= atol + rtol·|want|). LayerNormalization normalises over the
 * flattened axes [axis, rank) (rows × d for add_layernorm); Softmax (opset >= 13) over one
 * axis: the last axis maps to rows × n directly, other axes are transposed here first. */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../helpers/testdata.h"
#include "../helpers/xf_test.h"
#include "engine/kernels.h"

static int attr_int(const xf_case *c, const char *name, int dflt)
{
    const char *v = xf_case_attr(c, name);
    return v ? atoi(v) : dflt;
}

/* Names of case folders under onnx_node starting with prefix, sorted; returns the count. */
static int list_cases(const char *root, const char *prefix, char names[][128], int cap)
{
    DIR *d = opendir(root);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strlen(e->d_name) < 128)
            snprintf(names[n++], 128, "%s", e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, 128, (int (*)(const void *, const void *))strcmp);
    return n;
}

static int load(const char *root, const char *name, xf_case *c)
{
    char dir[1024 + 4096 + 2], err[256];   /* root, "/", name */
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    int rc = xf_case_load(dir, c, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", name, err);
    return rc;
}

static void check(const char *what, const char *table, const xf_case *c, const float *got,
                  const xf_case_tensor *want)
{
    double maxd = 0;
    /* the case's own tolerance, from the ONNX backend test */
    if (!xf_test_allclose(got, want->data, want->numel, c->rtol, c->atol, &maxd))
        fail_msg("%s (%s): outside rtol %g atol %g (max |diff| %g)", what, table, c->rtol,
                 c->atol, maxd);
}

#define MAX_CASES 32

/* Runs one case (named name, input X) through one kernel table k into out (X->numel floats;
 * scratch: as many, zeroed before the first table and never written by layer norm). */
typedef void run_fn(const char *name, const xf_case *c, const xf_case_tensor *X,
                    const xf_kernels_t *k, float *scratch, float *out);

/* Every case folder under onnx_node starting with prefix (a SKIP naming them when there are
 * none), through every kernel table this CPU has, against its output y within the case's own
 * tolerance; a case that does not load fails naming it. */
static void run_cases(const char *prefix, const char *x, const char *y, run_fn *run)
{
    char root[1024];
    XF_TESTDATA_OR_SKIP(root, "onnx_node");
    static char names[MAX_CASES][128];
    int n = list_cases(root, prefix, names, MAX_CASES);
    if (n == 0) {
        print_message("# SKIP: no %s* cases in %s\n", prefix, root);
        skip();
    }
    const xf_kernels_t *tabs[8];
    const char *tnames[8];
    int nt = xf_kernels_all(tabs, tnames, 8);
    int ran = 0;
    for (int i = 0; i < n; i++) {
        xf_case c;
        if (load(root, names[i], &c) != 0)
            continue;
        const xf_case_tensor *X = xf_case_get(&c, x), *Y = xf_case_get(&c, y);
        assert_non_null(X);
        assert_non_null(Y);
        assert_int_equal(X->numel, Y->numel);
        float *scratch = calloc(X->numel, sizeof(float)), *out = malloc(X->numel * sizeof(float));
        assert_non_null(scratch);
        assert_non_null(out);
        for (int t = 0; t < nt; t++) {
            memset(out, 0, X->numel * sizeof(float));
            run(names[i], &c, X, tabs[t], scratch, out);
            check(names[i], tnames[t], &c, out, Y);
        }
        ran++;
        free(scratch);
        free(out);
        xf_case_free(&c);
    }
    assert_int_equal(ran, n);
}

/* LayerNormalization over the flattened axes [axis, rank): rows × d; no B is a zero bias. */
static void run_layernorm(const char *name, const xf_case *c, const xf_case_tensor *X,
                          const xf_kernels_t *k, float *zeros, float *out)
{
    (void)name;
    const xf_case_tensor *W = xf_case_get(c, "W"), *B = xf_case_get(c, "B");
    assert_non_null(W);
    int axis = attr_int(c, "axis", -1);
    if (axis < 0)
        axis += X->rank;
    assert_true(axis >= 0 && axis < X->rank);
    const char *eps_s = xf_case_attr(c, "epsilon");
    float eps = eps_s ? strtof(eps_s, NULL) : 1e-5f;
    size_t rows = 1, d = 1;
    for (int a = 0; a < X->rank; a++)
        *(a < axis ? &rows : &d) *= (size_t)X->dims[a];
    assert_int_equal(W->numel, d);
    if (B)
        assert_int_equal(B->numel, d);
    k->add_layernorm(0, (int32_t)rows, (int32_t)d, X->data, (int32_t)d, NULL, NULL, 0, W->data,
                     B ? B->data : zeros, eps, out, (int32_t)d);
}

/* Gelu, exact (approximate="none") or tanh. */
static void run_gelu(const char *name, const xf_case *c, const xf_case_tensor *X,
                     const xf_kernels_t *k, float *scratch, float *out)
{
    (void)scratch;
    const char *ap = xf_case_attr(c, "approximate");
    enum xf_epilogue act = XF_EPI_BIAS_GELU;
    if (ap && strcmp(ap, "tanh") == 0)
        act = XF_EPI_BIAS_GELU_TANH;
    else if (ap && strcmp(ap, "none") != 0)
        fail_msg("%s: unknown approximate=%s", name, ap);
    k->bias_act(0, X->numel, (int32_t)X->numel, X->data, NULL, act, out);
}

/* Softmax: opset >= 13 over one axis, shape (outer, n, inner), gathered into rows of n and
 * scattered back; before 13, flattened to 2-D at axis. */
static void run_softmax(const char *name, const xf_case *c, const xf_case_tensor *X,
                        const xf_kernels_t *k, float *buf, float *out)
{
    (void)name;
    const char *ops = xf_case_extra(c, "opset");
    int opset = ops ? atoi(ops) : 13;
    int axis = attr_int(c, "axis", opset >= 13 ? -1 : 1);
    if (axis < 0)
        axis += X->rank;
    assert_true(axis >= 0 && axis < X->rank);
    size_t outer = 1, nn = 1, inner = 1;
    for (int a = 0; a < X->rank; a++) {
        if (a < axis)
            outer *= (size_t)X->dims[a];
        else if (a == axis || opset < 13)
            nn *= (size_t)X->dims[a];
        else
            inner *= (size_t)X->dims[a];
    }
    size_t rows = outer * inner;
    /* gather: row (o, i) holds x[o][0..n)[i] */
    for (size_t o = 0; o < outer; o++)
        for (size_t in = 0; in < inner; in++)
            for (size_t j = 0; j < nn; j++)
                buf[(o * inner + in) * nn + j] = X->data[(o * nn + j) * inner + in];
    k->softmax(0, (int32_t)rows, (int32_t)nn, buf, (int32_t)nn);
    for (size_t o = 0; o < outer; o++)
        for (size_t in = 0; in < inner; in++)
            for (size_t j = 0; j < nn; j++)
                out[(o * nn + j) * inner + in] = buf[(o * inner + in) * nn + j];
}

static void test_layernorm_cases(void **state)
{
    (void)state;
    run_cases("test_layer_normalization_", "X", "Y", run_layernorm);
}

static void test_gelu_cases(void **state)
{
    (void)state;
    run_cases("test_gelu_", "x", "y", run_gelu);
}

static void test_softmax_cases(void **state)
{
    (void)state;
    run_cases("test_softmax_", "x", "y", run_softmax);
}

XF_TEST_MAIN(cmocka_unit_test(test_layernorm_cases), cmocka_unit_test(test_gelu_cases),
             cmocka_unit_test(test_softmax_cases))
