/* Tests for the int8 Linear kernels (src/engine/kernels/qgemm.c, kernels/ref/qlinear_ref.c,
 * kernels/x86/qgemm_*.c): every int8 table this CPU runs against the reference on odd shapes —
 * the quantiser, the integer dot products and the dequantised epilogue bit-exact — for thread
 * splits nth = 1, 2, 3, 5 (bitwise identical), plus the weight quantiser's invariants, the
 * int8 result against fp32 on random data, and the epilogue's polynomial GELU against the
 * float64 GELU (its stated bound). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../helpers/xf_test.h"
#include "engine/cpu.h"
#include "engine/kernels/gelu_poly.h"
#include "engine/kernels/qgemm.h"
#include "engine/kernels/ref/ref.h"
#ifdef XF_HAVE_X86_64
#include "amx_emu.h"
#endif

#define EPS32 5.96e-8 /* 2^-24, unit roundoff of fp32 */

static const int sizes[] = { 1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 383, 769 };
#define N_SIZES ((int)(sizeof sizes / sizeof sizes[0]))
static const int nths[] = { 1, 2, 3, 5 };

static const xf_qkernels_t *tabs[8];
static int n_tabs;

#ifdef XF_HAVE_X86_64
/* The AMX kernel (qgemm_amx.c) built again with its tile instructions run by the emulator
 * (tests/engine/amx_emu.c, mk/qgemm.am): the engine's "amx" table on any CPU whose (capped)
 * ISA is AVX-512, for its AVX-512 epilogue. Test-only; the engine never lists it. */
static const xf_qkernels_t qtable_amx_emu = {
    .name = "amx-emu",
    .wmax = 127,
    .quant_rows = xf_quant_rows_avx512,
    .qlinear = xf_qlinear_amx_emu,
    .qlinear_quant = xf_qlinear_quant_amx_emu,
    .peak_loop = xf_qpeak_loop_amx_emu,
};
#endif

/* Whether the emulated AMX table runs here: AVX-512 (F, BW, VL, DQ) and no XF_CPU cap below. */
static int amx_emu_runs(void)
{
#ifdef XF_HAVE_X86_64
    return xf_cpu()->level >= XF_ISA_AVX512;
#else
    return 0;
#endif
}

/* The engine's int8 tables for this CPU, and the emulated AMX table where it runs. */
static void load_tables(void)
{
    n_tabs = xf_qkernels_all(tabs, 7);
    assert_true(n_tabs >= 1);
    assert_ptr_equal(tabs[0], xf_qkernels_ref());
    assert_string_equal(tabs[0]->name, "ref");
    /* the selected table is one of them */
    int found = 0;
    for (int t = 0; t < n_tabs; t++)
        found |= tabs[t] == xf_qkernels();
    assert_true(found);
#ifdef XF_HAVE_X86_64
    if (amx_emu_runs())
        tabs[n_tabs++] = &qtable_amx_emu;
#endif
}

/* XF_CPU caps the emulated AMX table like the engine's, and XF_QGEMM cannot select it: each cap
 * is checked in a forked child before this process detects its CPU (this test runs first); the
 * exit status is the verdict. */
static int amx_emu_cap_child(const char *cap)
{
    if (cap)
        setenv("XF_CPU", cap, 1);
    else
        unsetenv("XF_CPU");
    setenv("XF_QGEMM", "amx-emu", 1);   /* not an engine table: ignored (with a warning) */
    load_tables();
    if (strcmp(xf_qkernels()->name, "amx-emu") == 0)
        return 2;
    int listed = 0;
    for (int t = 0; t < n_tabs; t++)
        listed |= strcmp(tabs[t]->name, "amx-emu") == 0;
    const xf_cpu_t *c = xf_cpu();
    int want = cap && strcmp(cap, "avx512") != 0 && strcmp(cap, "amx") != 0
                   ? 0 : c->level_max >= XF_ISA_AVX512;
#ifndef XF_HAVE_X86_64
    want = 0;
#endif
    return listed == want ? 0 : 1;
}

static void test_amx_emu_cap(void **state)
{
    (void)state;
    static const char *const caps[] = { NULL, "generic", "avx2", "avx512", "amx" };
    for (int i = 0; i < 5; i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(amx_emu_cap_child(caps[i]));
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        if (WEXITSTATUS(st) == 2)
            fail_msg("XF_QGEMM=amx-emu selected the emulated table in the engine");
        if (WEXITSTATUS(st) != 0)
            fail_msg("XF_CPU=%s: the amx-emu table is listed where it should not be, or the "
                     "other way round", caps[i] ? caps[i] : "(unset)");
    }
}

/* The activation buffer for m rows of k: garbage everywhere first (0xA5), as the arena. */
static uint8_t *alloc_act(int m, int k)
{
    size_t bytes = xf_qgemm_act_bytes(m, k);
    uint8_t *p = aligned_alloc(64, bytes);
    assert_non_null(p);
    memset(p, 0xA5, bytes);
    return p;
}

static void test_weights(void **state)
{
    (void)state;
    static const int ns[] = { 1, 15, 17, 33 }, ks[] = { 1, 3, 63, 65, 129 };
    for (int a = 0; a < 12; a++) {
        for (int b = 0; b < 5; b++) {
            /* 8-bit, 7-bit, and 8-bit with the s16 lane bound 128 */
            int n = ns[a % 4], k = ks[b], wmax = a >= 4 && a < 8 ? 63 : 127;
            int lane_max = a >= 8 ? 128 : 0;
            float *w = malloc((size_t)n * k * sizeof *w);
            assert_non_null(w);
            xf_test_fill(w, (size_t)n * k, (uint64_t)(n * 100 + k), -2.0f, 2.0f);
            for (int i = 0; i < k; i++)
                w[i] = 0.0f;   /* channel 0 all zeros: σ = 0 */
            if (lane_max && b == 4 && n >= 2)
                for (int i = 0; i < k; i++)   /* channel 1: one outlier sets σ, not a lane */
                    w[k + i] = i == 5 ? 50.0f : w[k + i] * 0.01f;
            xf_qgemm_w_t qw;
            assert_int_equal(xf_qgemm_w_init(&qw, w, n, k, wmax, lane_max), 0);
            assert_int_equal(qw.n_pad % 16, 0);
            assert_true(qw.n_pad >= n && qw.n_pad < n + 16);
            assert_int_equal(qw.k_pad % XF_QGEMM_KALIGN, 0);
            assert_int_equal(qw.wmax, wmax);
            assert_int_equal(qw.lane_max, lane_max);
            for (int o = 0; o < qw.n_pad; o++) {
                int32_t cs = 0, amax = 0;
                for (int i = 0; i < qw.k_pad; i++) {
                    int8_t q = xf_qgemm_w_at(&qw, o, i);
                    assert_true(q >= -wmax && q <= wmax);   /* never −128 */
                    if (o >= n || i >= k) {
                        assert_int_equal(q, 0);   /* padding contributes nothing */
                        continue;
                    }
                    cs += q;
                    amax = abs(q) > amax ? abs(q) : amax;
                    /* |W − σ·W^q| ≤ σ/2 (round to nearest), plus the rounding of w/σ */
                    double err = fabs((double)w[(size_t)o * k + i] - qw.sigma[o] * (double)q);
                    assert_true(err <= 0.5 * qw.sigma[o] * (1.0 + 1e-5) + 1e-30);
                }
                assert_int_equal(cs, qw.colsum[o]);
                int32_t lane = xf_qgemm_w_lane_sum(&qw, o);
                if (o == 0 || o >= n) {
                    assert_true(qw.sigma[o] == 0.0f);
                } else if (!lane_max) {
                    assert_int_equal(amax, wmax);   /* the largest weight maps to ±wmax */
                } else {
                    /* the s16 lanes never exceed the bound, and σ is as small as it allows:
                     * the fullest lane ≥ L − 2 − 2 */
                    assert_true(lane <= lane_max);
                    assert_true(lane >= lane_max - 4);
                    if (o == 1 && b == 4)
                        assert_int_equal(amax, 126);   /* the outlier keeps nearly 8 bits */
                }
            }
            xf_qgemm_w_deinit(&qw);
            xf_qgemm_w_deinit(&qw);   /* an empty one is fine */
            /* a non-finite weight is refused, leaving qw empty */
            w[(size_t)(n - 1) * k] = NAN;
            assert_int_equal(xf_qgemm_w_init(&qw, w, n, k, wmax, lane_max), -EINVAL);
            assert_null(qw.wq);
            free(w);
        }
    }
    xf_qgemm_w_t qw;
    assert_int_equal(xf_qgemm_w_init(&qw, NULL, 3, 3, 127, 0), -EINVAL);
    float one = 1.0f;
    assert_int_equal(xf_qgemm_w_init(&qw, &one, 1, 1, 100, 0), -EINVAL);   /* 127 or 63 only */
    assert_int_equal(xf_qgemm_w_init(&qw, &one, 1, 1, 63, 128), -EINVAL);  /* lanes: 8-bit */
    assert_int_equal(xf_qgemm_w_init(&qw, &one, 1, 1, 127, 129), -EINVAL); /* s16 would wrap */
    assert_int_equal(xf_qgemm_w_init(&qw, &one, 1, 1, 127, 7), -EINVAL);
    xf_qgemm_w_deinit(NULL);
}

/* Every quantiser against the reference, bitwise, including zero rows, non-finite rows,
 * values on rounding ties and huge/tiny magnitudes. */
static void test_quant_rows(void **state)
{
    (void)state;
    load_tables();
    for (int si = 0; si < N_SIZES; si++) {
        int k = sizes[si], m = 9, ldx = k + 5, ldq = xf_qgemm_ldq(k);
        float *x = malloc((size_t)m * ldx * sizeof *x);
        assert_non_null(x);
        xf_test_fill(x, (size_t)m * ldx, (uint64_t)k, -3.0f, 3.0f);
        for (int i = 0; i < k; i++) {
            x[(size_t)1 * ldx + i] = 0.0f;                          /* zero row */
            x[(size_t)4 * ldx + i] *= 1e30f;                        /* huge */
            x[(size_t)5 * ldx + i] *= 1e-30f;                       /* tiny */
            x[(size_t)6 * ldx + i] = (float)(i % 255 - 127) * 0.5f; /* ties at .5 */
        }
        x[(size_t)2 * ldx + k / 2] = NAN;
        x[(size_t)3 * ldx + k - 1] = -INFINITY;
        x[(size_t)6 * ldx] = 63.5f;   /* max 63.5: x·(127/63.5) hits exact halves */
        uint8_t *ref = alloc_act(m, k), *got = alloc_act(m, k);
        float *aref = (float *)(ref + xf_qgemm_alpha_offset(m, k));
        float *agot = (float *)(got + xf_qgemm_alpha_offset(m, k));
        tabs[0]->quant_rows(0, m, k, x, ldx, ref, ldq, aref);
        assert_true(isnan(aref[2]) && isnan(aref[3]));
        assert_true(aref[1] == 0.0f);
        for (int t = 0; t < m; t++)
            for (int i = k; i < ldq; i++)
                assert_int_equal(ref[(size_t)t * ldq + i], 128);
        for (int tb = 1; tb < n_tabs; tb++) {
            /* in two slices, as threads would */
            tabs[tb]->quant_rows(0, 4, k, x, ldx, got, ldq, agot);
            tabs[tb]->quant_rows(4, m, k, x, ldx, got, ldq, agot);
            for (int t = 0; t < m; t++) {
                if (memcmp(ref + (size_t)t * ldq, got + (size_t)t * ldq, (size_t)ldq) != 0 ||
                    memcmp(&aref[t], &agot[t], sizeof(float)) != 0)
                    fail_msg("quant_rows %s: k %d row %d differs from ref", tabs[tb]->name, k,
                             t);
            }
        }
        free(x);
        free(ref);
        free(got);
    }
}

struct qcase {
    int m, n, k;
    xf_qgemm_w_t qw, qw7, qwl;   /* 8-bit, 7-bit (wmax 63) and lane-bounded weights */
    uint8_t *act;     /* quantised rows + α */
    int ldq;
    float *alpha;
    float *bias;
};

static void qcase_init(struct qcase *c, int m, int n, int k, uint64_t seed)
{
    c->m = m;
    c->n = n;
    c->k = k;
    float *w = malloc((size_t)n * k * sizeof *w), *x = malloc((size_t)m * k * sizeof *x);
    assert_non_null(w);
    assert_non_null(x);
    xf_test_fill(w, (size_t)n * k, seed, -0.1f, 0.1f);
    xf_test_fill(x, (size_t)m * k, seed + 1, -4.0f, 4.0f);
    assert_int_equal(xf_qgemm_w_init(&c->qw, w, n, k, 127, 0), 0);
    assert_int_equal(xf_qgemm_w_init(&c->qw7, w, n, k, 63, 0), 0);
    assert_int_equal(xf_qgemm_w_init(&c->qwl, w, n, k, 127, 128), 0);
    c->ldq = xf_qgemm_ldq(k);
    c->act = alloc_act(m, k);
    c->alpha = (float *)(c->act + xf_qgemm_alpha_offset(m, k));
    xf_quant_rows_ref(0, m, k, x, k, c->act, c->ldq, c->alpha);
    c->bias = malloc((size_t)n * sizeof *c->bias);
    assert_non_null(c->bias);
    xf_test_fill(c->bias, (size_t)n, seed + 2, -2.0f, 2.0f);
    free(w);
    free(x);
}

static void qcase_free(struct qcase *c)
{
    xf_qgemm_w_deinit(&c->qw);
    xf_qgemm_w_deinit(&c->qw7);
    xf_qgemm_w_deinit(&c->qwl);
    free(c->act);
    free(c->bias);
}

/* The shapes: each size as m, n and k in turn, plus the BERT-sized K. */
static int shape_list(int (*shapes)[3], int cap)
{
    int ns = 0;
    for (int i = 0; i < N_SIZES && ns < cap; i++) {
        int m = sizes[i] > 129 ? sizes[i] / 6 : sizes[i];
        shapes[ns][0] = m;
        shapes[ns][1] = sizes[(i + 5) % N_SIZES];
        shapes[ns][2] = sizes[(i + 9) % N_SIZES];
        ns++;
    }
    /* BERT widths, and a pruned layer (6 heads of 64 in, an FFN of 600 units out) */
    static const int extra[][3] = { { 5, 49, 768 }, { 33, 17, 3072 }, { 2, 97, 4 },
                                    { 19, 600, 384 } };
    for (int i = 0; i < 4 && ns < cap; i++) {
        memcpy(shapes[ns], extra[i], sizeof extra[i]);
        ns++;
    }
    return ns;
}

/* y rows ldy = n + 3 apart, starting one float past a 64-byte boundary. */
static float *alloc_y(int m, int n, int *ldy)
{
    *ldy = n + 3;
    float *p = aligned_alloc(64, (((size_t)m * *ldy + 1) * sizeof(float) + 63) / 64 * 64);
    assert_non_null(p);
    return p + 1;
}

/* The case's weights a table takes (its wmax and lane bound). */
static const xf_qgemm_w_t *weights_for(const xf_qkernels_t *t, const struct qcase *c)
{
    return t->lane_max ? &c->qwl : t->wmax == 63 ? &c->qw7 : &c->qw;
}

/* t's kernel on W, all nth slices one after the other. */
static void run_split(const xf_qkernels_t *t, const xf_qgemm_w_t *W, const struct qcase *c,
                      const float *bias, enum xf_epilogue epi, float *y, int ldy, int nth)
{
    for (int ith = 0; ith < nth; ith++)
        t->qlinear(W, c->m, c->act, c->ldq, c->alpha, bias, epi, y, ldy, ith, nth);
}

/* The integer part, bit-exact: with α = σ = 1 and no epilogue y is (float)acc, exact for
 * |acc| ≤ 127·127·k < 2^24 (k ≤ 1040). Checked against an int64 sum computed here from the
 * quantised values, for every table and thread split. */
static void test_integer_exact(void **state)
{
    (void)state;
    load_tables();
    int shapes[24][3];
    int ns = shape_list(shapes, 24);
    for (int s = 0; s < ns; s++) {
        struct qcase c;
        qcase_init(&c, shapes[s][0], shapes[s][1], shapes[s][2], (uint64_t)(s + 7));
        if (c.k > 1040) {   /* (float)acc would round */
            qcase_free(&c);
            continue;
        }
        for (int t = 0; t < c.m; t++)
            c.alpha[t] = 1.0f;
        for (int o = 0; o < c.qw.n_pad; o++)
            c.qw.sigma[o] = c.qw7.sigma[o] = c.qwl.sigma[o] = 1.0f;
        double *exact = malloc((size_t)c.m * c.n * sizeof *exact);
        assert_non_null(exact);
        int ldy;
        float *y = alloc_y(c.m, c.n, &ldy);
        for (int tb = 0; tb < n_tabs; tb++) {
            const xf_qgemm_w_t *W = weights_for(tabs[tb], &c);
            for (int t = 0; t < c.m; t++)
                for (int o = 0; o < c.n; o++) {
                    int64_t acc = 0;
                    for (int i = 0; i < c.k; i++)
                        acc += (int64_t)((int)c.act[(size_t)t * c.ldq + i] - 128) *
                               xf_qgemm_w_at(W, o, i);
                    exact[(size_t)t * c.n + o] = (double)acc;
                }
            for (int a = 0; a < 4; a++) {
                for (size_t i = 0; i < (size_t)c.m * ldy; i++)
                    y[i] = -12345.0f;
                run_split(tabs[tb], W, &c, NULL, XF_EPI_NONE, y, ldy, nths[a]);
                for (int t = 0; t < c.m; t++) {
                    for (int o = 0; o < c.n; o++)
                        if ((double)y[(size_t)t * ldy + o] != exact[(size_t)t * c.n + o])
                            fail_msg("%s %dx%dx%d nth %d: y[%d][%d] = %.1f, exact %.1f",
                                     tabs[tb]->name, c.m, c.n, c.k, nths[a], t, o,
                                     y[(size_t)t * ldy + o], exact[(size_t)t * c.n + o]);
                    for (int o = c.n; o < ldy; o++)   /* nothing past n is written */
                        assert_true(y[(size_t)t * ldy + o] == -12345.0f);
                }
            }
        }
        free(y - 1);
        free(exact);
        qcase_free(&c);
    }
}

/* The dequantising epilogue with real scales, every epilogue, every table and split, bitwise
 * the reference: the pre-activation value (float)acc·(α·σ) + b is rounded in the same order
 * everywhere, and the activation is the same fp32 operations (gelu_poly.h for the GELUs). */
static void test_epilogues(void **state)
{
    (void)state;
    load_tables();
    int shapes[24][3];
    int ns = shape_list(shapes, 24);
    for (int s = 0; s < ns; s++) {
        struct qcase c;
        qcase_init(&c, shapes[s][0], shapes[s][1], shapes[s][2], (uint64_t)(s + 100));
        int ldy;
        float *yr = alloc_y(c.m, c.n, &ldy), *y = alloc_y(c.m, c.n, &ldy);
        for (int epi = 0; epi < XF_EPI_COUNT; epi++) {
            const float *bias = epi == XF_EPI_NONE ? NULL : c.bias;
            for (int tb = 1; tb < n_tabs; tb++) {
                const xf_qgemm_w_t *W = weights_for(tabs[tb], &c);
                run_split(tabs[0], W, &c, bias, (enum xf_epilogue)epi, yr, ldy, 1);
                for (int a = 0; a < 4; a++) {
                    run_split(tabs[tb], W, &c, bias, (enum xf_epilogue)epi, y, ldy, nths[a]);
                    /* bitwise: the same roundings and the same GELU (gelu_poly.h) */
                    for (int t = 0; t < c.m; t++)
                        for (int o = 0; o < c.n; o++) {
                            size_t i = (size_t)t * ldy + o;
                            if (memcmp(&y[i], &yr[i], sizeof *y) != 0)
                                fail_msg("%s %dx%dx%d epi %d nth %d: y[%d][%d] = %.9g, ref "
                                         "%.9g", tabs[tb]->name, c.m, c.n, c.k, epi, nths[a], t,
                                         o, y[i], yr[i]);
                        }
                    if (a > 0)
                        continue;
                    /* every split is bitwise the nth = 1 result */
                    float *y1 = alloc_y(c.m, c.n, &ldy);
                    memcpy(y1, y, (size_t)c.m * ldy * sizeof *y);
                    for (int b = 1; b < 4; b++) {
                        run_split(tabs[tb], W, &c, bias, (enum xf_epilogue)epi, y, ldy,
                                  nths[b]);
                        for (int t = 0; t < c.m; t++)
                            if (memcmp(y + (size_t)t * ldy, y1 + (size_t)t * ldy,
                                       (size_t)c.n * sizeof *y) != 0)
                                fail_msg("%s epi %d: nth %d differs from nth 1 in row %d",
                                         tabs[tb]->name, epi, nths[b], t);
                    }
                    free(y1 - 1);
                }
            }
        }
        free(yr - 1);
        free(y - 1);
        qcase_free(&c);
    }
}

/* qlinear_quant (the GEMM that also quantises its output for the next Linear) against the
 * table's qlinear followed by the reference quantiser: y, the quantised rows (with their
 * padding) and the row scales bitwise, for every table and split; shapes with several row
 * chunks, a NaN row (α = NaN) and a zero row (α = 0). */
static void test_qlinear_quant(void **state)
{
    (void)state;
    load_tables();
    int shapes[27][3];
    int ns = shape_list(shapes, 24);
    /* The chunk policy (xf_qout_chunk_rows): a thread's rows are one chunk while their y fits
     * XF_QOUT_WHOLE_BYTES, else XF_QOUT_CHUNK_BYTES chunks (a multiple of the row tile). The
     * shapes below take both paths: 300×1100 (1.3 MB) chunked at nth 1, whole at nth ≥ 2;
     * 45×3072 whole; 500×2100 chunked at nth 1–3 (odd k), whole at nth 5. */
    assert_int_equal(xf_qout_chunk_rows(64, 3072, 8), 64);
    assert_int_equal(xf_qout_chunk_rows(45, 3072, 8), 48);
    assert_int_equal(xf_qout_chunk_rows(512, 3072, 8), 8);
    assert_int_equal(xf_qout_chunk_rows(300, 1100, 8), 24);
    assert_int_equal(xf_qout_chunk_rows(300, 1100, 32), 32);
    assert_int_equal(xf_qout_chunk_rows(2, 1 << 20, 8), 8);
    static const int more[][3] = { { 300, 1100, 64 }, { 45, 3072, 100 }, { 500, 2100, 20 } };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        memcpy(shapes[ns++], more[i], sizeof more[i]);
    for (int s = 0; s < ns; s++) {
        struct qcase c;
        qcase_init(&c, shapes[s][0], shapes[s][1], shapes[s][2], (uint64_t)(s + 300));
        if (c.m >= 3) {
            c.alpha[1] = NAN;
            c.alpha[2] = 0.0f;
        }
        int ldy, ldq2 = xf_qgemm_ldq(c.n);
        float *yr = alloc_y(c.m, c.n, &ldy), *y = alloc_y(c.m, c.n, &ldy);
        uint8_t *qr = alloc_act(c.m, c.n), *q = alloc_act(c.m, c.n);
        float *ar = (float *)(qr + xf_qgemm_alpha_offset(c.m, c.n));
        float *ag = (float *)(q + xf_qgemm_alpha_offset(c.m, c.n));
        xf_qout_t qo = { q, ldq2, ag };
        for (int tb = 0; tb < n_tabs; tb++) {
            const xf_qgemm_w_t *W = weights_for(tabs[tb], &c);
            for (int e = 0; e < 2; e++) {
                enum xf_epilogue epi = e ? XF_EPI_BIAS_GELU : XF_EPI_NONE;
                const float *bias = e ? c.bias : NULL;
                run_split(tabs[tb], W, &c, bias, epi, yr, ldy, 1);
                xf_quant_rows_ref(0, c.m, c.n, yr, ldy, qr, ldq2, ar);
                for (int a = 0; a < 4; a++) {
                    memset(q, 0xA5, xf_qgemm_act_bytes(c.m, c.n));
                    for (size_t i = 0; i < (size_t)c.m * ldy; i++)
                        y[i] = -12345.0f;
                    for (int ith = 0; ith < nths[a]; ith++)
                        tabs[tb]->qlinear_quant(W, c.m, c.act, c.ldq, c.alpha, bias, epi, y, ldy,
                                                &qo, ith, nths[a]);
                    for (int t = 0; t < c.m; t++) {
                        if (memcmp(y + (size_t)t * ldy, yr + (size_t)t * ldy,
                                   (size_t)c.n * sizeof *y) != 0)
                            fail_msg("%s %dx%dx%d epi %d nth %d: y row %d differs", tabs[tb]->name,
                                     c.m, c.n, c.k, epi, nths[a], t);
                        if (memcmp(q + (size_t)t * ldq2, qr + (size_t)t * ldq2, (size_t)ldq2) != 0 ||
                            memcmp(&ag[t], &ar[t], sizeof *ag) != 0)
                            fail_msg("%s %dx%dx%d epi %d nth %d: quantised row %d differs",
                                     tabs[tb]->name, c.m, c.n, c.k, epi, nths[a], t);
                    }
                    if (c.m >= 3) {
                        assert_true(isnan(ag[1]));
                        assert_true(e || ag[2] == 0.0f);
                    }
                }
            }
        }
        free(yr - 1);
        free(y - 1);
        free(qr);
        free(q);
        qcase_free(&c);
    }
}

/* int8 against fp32 on random data (BERT-like sizes): per element the rigorous bound
 * |y8 − y| ≤ Σ_k (|x_k|·σ_o/2 + α_t/2·|W_ok| + α_t·σ_o/4) (each factor off by at most half a
 * step) plus fp32 rounding; overall the relative Frobenius error below 0.045 (the expected
 * value here is ~0.03: the outlier 8 sets the activation step 8/127, noise 0.018 against a
 * signal std of 0.577; the weights add 0.004; 1.5× that is allowed). */
static void test_vs_fp32(void **state)
{
    (void)state;
    load_tables();
    const int m = 37, n = 67, k = 768;
    float *w = malloc((size_t)n * k * sizeof *w), *x = malloc((size_t)m * k * sizeof *x);
    float *yf = malloc((size_t)m * n * sizeof *yf), *yq = malloc((size_t)m * n * sizeof *yq);
    assert_true(w && x && yf && yq);
    xf_test_fill(w, (size_t)n * k, 11, -0.05f, 0.05f);
    xf_test_fill(x, (size_t)m * k, 12, -1.0f, 1.0f);
    for (int t = 0; t < m; t++)
        x[(size_t)t * k + (t * 7) % k] = 8.0f;   /* an outlier per row widens α */
    uint8_t *act = alloc_act(m, k);
    float *alpha = (float *)(act + xf_qgemm_alpha_offset(m, k));
    for (int tb = 0; tb < n_tabs; tb++) {
        const xf_qkernels_t *T = tabs[tb];
        xf_qgemm_w_t qw;
        assert_int_equal(xf_qgemm_w_init(&qw, w, n, k, T->wmax, T->lane_max), 0);
        T->quant_rows(0, m, k, x, k, act, xf_qgemm_ldq(k), alpha);
        T->qlinear(&qw, m, act, xf_qgemm_ldq(k), alpha, NULL, XF_EPI_NONE, yq, n, 0, 1);
        double num = 0, den = 0;
        for (int t = 0; t < m; t++)
            for (int o = 0; o < n; o++) {
                double exact = 0, bound = 0;
                for (int i = 0; i < k; i++) {
                    double xv = x[(size_t)t * k + i], wv = w[(size_t)o * k + i];
                    exact += xv * wv;
                    bound += fabs(xv) * qw.sigma[o] / 2 + alpha[t] / 2 * fabs(wv) +
                             alpha[t] * qw.sigma[o] / 4;
                }
                double got = yq[(size_t)t * n + o];
                /* plus fp32 rounding of the dequantisation (3 roundings) and the scales */
                bound = bound * (1.0 + 1e-5) + 8 * EPS32 * fabs(exact) + 1e-30;
                if (!(fabs(got - exact) <= bound))
                    fail_msg("%s: y[%d][%d] = %.7g, fp64 %.7g, bound %.3g", T->name, t, o, got,
                             exact, bound);
                num += (got - exact) * (got - exact);
                den += exact * exact;
                yf[(size_t)t * n + o] = (float)exact;
            }
        double rel = sqrt(num / den);
        print_message("# %s: int8 vs fp32 relative error %.4f\n", T->name, rel);
        assert_true(rel < 0.045);
        assert_true(rel > 0.0);   /* quantisation does change the result */
        xf_qgemm_w_deinit(&qw);
    }
    free(act);
    free(w);
    free(x);
    free(yf);
    free(yq);
}

/* Each row's result depends only on that row: a row's output is bitwise the same when the
 * other rows change (per-row scales: an outlier in one token does not move another). */
static void test_row_independent(void **state)
{
    (void)state;
    load_tables();
    const int m = 24, n = 40, k = 200;
    float *w = malloc((size_t)n * k * sizeof *w), *x = malloc((size_t)m * k * sizeof *x);
    float *y1 = malloc((size_t)m * n * sizeof *y1), *y2 = malloc((size_t)m * n * sizeof *y2);
    float *bias = calloc((size_t)n, sizeof *bias);
    assert_true(w && x && y1 && y2 && bias);
    xf_test_fill(w, (size_t)n * k, 21, -1.0f, 1.0f);
    xf_test_fill(x, (size_t)m * k, 22, -1.0f, 1.0f);
    uint8_t *act = alloc_act(m, k);
    float *alpha = (float *)(act + xf_qgemm_alpha_offset(m, k));
    int ldq = xf_qgemm_ldq(k);
    for (int tb = 0; tb < n_tabs; tb++) {
        const xf_qkernels_t *T = tabs[tb];
        xf_qgemm_w_t qw;
        assert_int_equal(xf_qgemm_w_init(&qw, w, n, k, T->wmax, T->lane_max), 0);
        T->quant_rows(0, m, k, x, k, act, ldq, alpha);
        T->qlinear(&qw, m, act, ldq, alpha, bias, XF_EPI_BIAS_GELU, y1, n, 0, 1);
        float keep = x[(size_t)5 * k + 3];
        x[(size_t)5 * k + 3] = 1000.0f;   /* an outlier in row 5 only */
        T->quant_rows(0, m, k, x, k, act, ldq, alpha);
        T->qlinear(&qw, m, act, ldq, alpha, bias, XF_EPI_BIAS_GELU, y2, n, 0, 1);
        x[(size_t)5 * k + 3] = keep;
        for (int t = 0; t < m; t++) {
            int same = memcmp(y1 + (size_t)t * n, y2 + (size_t)t * n, (size_t)n * 4) == 0;
            if (t == 5)
                assert_false(same);
            else if (!same)
                fail_msg("%s: row %d changed with row 5's outlier", T->name, t);
        }
        xf_qgemm_w_deinit(&qw);
    }
    free(act);
    free(w);
    free(x);
    free(y1);
    free(y2);
    free(bias);
}

/* Stacked weights (Q, K, V as one GEMM): every table gives bitwise the outputs of the separate
 * GEMMs, on 1 and 3 threads (parts of 32, 16 and an odd last 23 channels); a part before the
 * last that is not a whole number of panels is refused, and so is a k mismatch. */
static void test_stacked(void **state)
{
    (void)state;
    load_tables();
    const int m = 19, k = 77, ns[3] = { 32, 16, 23 }, n = 32 + 16 + 23;
    float *w = malloc((size_t)n * k * sizeof *w), *x = malloc((size_t)m * k * sizeof *x);
    float *y1 = malloc((size_t)m * n * sizeof *y1), *y2 = malloc((size_t)m * n * sizeof *y2);
    float *bias = malloc((size_t)n * sizeof *bias);
    assert_true(w && x && y1 && y2 && bias);
    xf_test_fill(w, (size_t)n * k, 31, -1.0f, 1.0f);
    xf_test_fill(x, (size_t)m * k, 32, -2.0f, 2.0f);
    xf_test_fill(bias, (size_t)n, 33, -0.5f, 0.5f);
    uint8_t *act = alloc_act(m, k);
    float *alpha = (float *)(act + xf_qgemm_alpha_offset(m, k));
    int ldq = xf_qgemm_ldq(k);
    for (int tb = 0; tb < n_tabs; tb++) {
        const xf_qkernels_t *T = tabs[tb];
        xf_qgemm_w_t parts[3], st, bad[2];
        for (int i = 0, o = 0; i < 3; o += ns[i], i++)
            assert_int_equal(xf_qgemm_w_init(&parts[i], w + (size_t)o * k, ns[i], k, T->wmax,
                                             T->lane_max), 0);
        assert_int_equal(xf_qgemm_w_stack(&st, parts, 3), 0);
        assert_int_equal(st.n, n);
        T->quant_rows(0, m, k, x, k, act, ldq, alpha);
        for (int nth = 1; nth <= 3; nth += 2) {
            memset(y1, 0xff, (size_t)m * n * 4);
            memset(y2, 0xff, (size_t)m * n * 4);
            for (int ith = 0; ith < nth; ith++) {
                T->qlinear(&st, m, act, ldq, alpha, bias, XF_EPI_BIAS_GELU, y1, n, ith, nth);
                for (int i = 0, o = 0; i < 3; o += ns[i], i++)
                    T->qlinear(&parts[i], m, act, ldq, alpha, bias + o, XF_EPI_BIAS_GELU,
                               y2 + o, n, ith, nth);
            }
            if (memcmp(y1, y2, (size_t)m * n * 4) != 0)
                fail_msg("%s: stacked GEMM differs from the separate ones (nth %d)", T->name,
                         nth);
        }
        xf_qgemm_w_deinit(&st);
        bad[0] = parts[2];   /* 23 channels, then more: not a whole panel */
        bad[1] = parts[0];
        assert_int_equal(xf_qgemm_w_stack(&st, bad, 2), -ENOTSUP);
        assert_null(st.wq);
        xf_qgemm_w_t other;
        assert_int_equal(xf_qgemm_w_init(&other, w, 16, k - 1, T->wmax, T->lane_max), 0);
        bad[0] = parts[0];
        bad[1] = other;
        assert_int_equal(xf_qgemm_w_stack(&st, bad, 2), -EINVAL);
        xf_qgemm_w_deinit(&other);
        for (int i = 0; i < 3; i++)
            xf_qgemm_w_deinit(&parts[i]);
    }
    free(act);
    free(w);
    free(x);
    free(y1);
    free(y2);
    free(bias);
}

/* Lane-bounded weights at the bound: every table is exact on them with the activations at the
 * ends of their range (x^u = 255 and 1), where the s16 sums of the "avx2-s16" kernel reach
 * ±255·L. Channels: all +1 and all −1 (every lane Σ|W^q| = 128), a 16-periodic pattern whose
 * lanes hold 126 but whose groups paired the wrong way ((1, 2) instead of (0, 1)) would hold
 * 252 and wrap, its negation, and random weights. */
static void test_lane_bound(void **state)
{
    (void)state;
    load_tables();
    static const float pat[16] = { 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0 };
    const int m = 5, n = 37, k = 1040;   /* |acc| ≤ 255·128·k/4 < 2^24: y = (float)acc exact */
    float *w = malloc((size_t)n * k * sizeof *w), *x = malloc((size_t)m * k * sizeof *x);
    assert_true(w && x);
    xf_test_fill(w, (size_t)n * k, 41, -1.0f, 1.0f);
    xf_test_fill(x, (size_t)m * k, 42, -1.0f, 1.0f);
    for (int i = 0; i < k; i++) {
        w[i] = 1.0f;
        w[(size_t)k + i] = -1.0f;
        w[(size_t)2 * k + i] = pat[i % 16];
        w[(size_t)3 * k + i] = -pat[i % 16];
        x[i] = 1.0f;                          /* x^u = 255 */
        x[(size_t)k + i] = -1.0f;             /* x^u = 1 */
        x[(size_t)2 * k + i] = i % 2 ? 1.0f : -1.0f;
    }
    xf_qgemm_w_t qw;
    assert_int_equal(xf_qgemm_w_init(&qw, w, n, k, 127, 128), 0);
    assert_int_equal(xf_qgemm_w_lane_sum(&qw, 0), 128);
    assert_int_equal(xf_qgemm_w_lane_sum(&qw, 1), 128);
    assert_int_equal(xf_qgemm_w_lane_sum(&qw, 2), 126);
    assert_int_equal(xf_qgemm_w_at(&qw, 2, 4), 63);
    for (int o = 0; o < n; o++)
        qw.sigma[o] = 1.0f;
    int ldq = xf_qgemm_ldq(k);
    uint8_t *act = alloc_act(m, k);
    float *alpha = (float *)(act + xf_qgemm_alpha_offset(m, k));
    float *y = malloc((size_t)m * n * sizeof *y);
    assert_non_null(y);
    xf_quant_rows_ref(0, m, k, x, k, act, ldq, alpha);
    assert_int_equal(act[0], 255);
    assert_int_equal(act[ldq], 1);
    for (int t = 0; t < m; t++)
        alpha[t] = 1.0f;
    for (int tb = 0; tb < n_tabs; tb++)
        for (int nth = 1; nth <= 2; nth++) {
            memset(y, 0, (size_t)m * n * sizeof *y);
            for (int ith = 0; ith < nth; ith++)
                tabs[tb]->qlinear(&qw, m, act, ldq, alpha, NULL, XF_EPI_NONE, y, n, ith, nth);
            for (int t = 0; t < m; t++)
                for (int o = 0; o < n; o++) {
                    int64_t acc = 0;
                    for (int i = 0; i < k; i++)
                        acc += (int64_t)((int)act[(size_t)t * ldq + i] - 128) *
                               xf_qgemm_w_at(&qw, o, i);
                    if ((double)y[(size_t)t * n + o] != (double)acc)
                        fail_msg("%s nth %d: y[%d][%d] = %.1f, exact %lld", tabs[tb]->name, nth,
                                 t, o, y[(size_t)t * n + o], (long long)acc);
                }
        }
    xf_qgemm_w_deinit(&qw);
    free(act);
    free(w);
    free(x);
    free(y);
}

/* The int8 epilogue's polynomial GELU (gelu_poly.h, scalar twin; the vector versions are
 * bitwise equal to it: test_vmath, and the epilogues above) against the float64 GELU, erf and
 * tanh forms: |g − GELU(x)| ≤ 6e-7·max(1, |x|) on every 1021st float of [−10, 10] (both signs,
 * all binades down to 1e-6) and on large values; NaN stays NaN, +inf → +inf, −inf → NaN. */
static void test_gelu_poly_bound(void **state)
{
    (void)state;
    for (int e = 0; e < 2; e++) {
        enum xf_epilogue epi = e ? XF_EPI_BIAS_GELU_TANH : XF_EPI_BIAS_GELU;
        const float (*tab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
        assert_non_null(tab);
        double worst = 0.0, worst_x = 0.0;
        long count = 0;
        for (int sign = -1; sign <= 1; sign += 2) {
            for (float a = 1e-6f; a <= 1e4f;) {
                float x = (float)sign * a;
                double xd = x, ref;
                if (e)
                    ref = 0.5 * xd * (1.0 + tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd)));
                else
                    ref = 0.5 * xd * erfc(-xd / sqrt(2.0));
                double err = fabs((double)xf_gelu_poly_ref(x, tab) - ref) / fmax(1.0, fabs(xd));
                if (err > worst) {
                    worst = err;
                    worst_x = xd;
                }
                count++;
                union { float f; uint32_t u; } b = { a };
                b.u += a < 10.0f ? 1021u : 1u << 16;   /* sparser past 10 (q = ½ there) */
                a = b.f;
            }
        }
        print_message("# gelu_poly %s: %ld points, max |g - GELU|/max(1,|x|) = %.3g at x = %.7g\n",
                      e ? "tanh" : "erf", count, worst, worst_x);
        assert_true(count > 300000);
        assert_true(worst <= 6e-7);
        assert_true(xf_gelu_poly_ref(0.0f, tab) == 0.0f);
        assert_true(isnan(xf_gelu_poly_ref(NAN, tab)));
        assert_true(isnan(xf_gelu_poly_ref(-INFINITY, tab)));
        assert_true(xf_gelu_poly_ref(INFINITY, tab) == INFINITY);
        assert_true(xf_gelu_poly_ref(3e38f, tab) == 3e38f);
        assert_true(fabsf(xf_gelu_poly_ref(-3e38f, tab)) <= 3e38f * 6e-7f);
        /* the int8 reference epilogue uses it */
        assert_true(xf_act_ref(epi, 1.25f) == xf_gelu_poly_ref(1.25f, tab));
    }
    assert_null(xf_gelu_poly_table(XF_EPI_BIAS_RELU));
    assert_true(xf_act_ref(XF_EPI_BIAS_RELU, -2.0f) == 0.0f);
    assert_true(xf_act_ref(XF_EPI_BIAS, -2.0f) == -2.0f);
}

/* The peak loops count operations and run (a positive, finite op count per round). */
static void test_peak_loops(void **state)
{
    (void)state;
    load_tables();
    for (int tb = 0; tb < n_tabs; tb++) {
        int32_t sink = 0;
        double ops = tabs[tb]->peak_loop(1000, &sink);
        assert_true(ops >= 16.0 * 1000 && isfinite(ops));
    }
}

/* One thread's share of a qlinear / qlinear_quant call, on a thread of its own. */
struct th_job {
    const xf_qkernels_t *t;
    const xf_qgemm_w_t *W;
    const struct qcase *c;
    const float *bias;
    float *y;
    int ldy;
    const xf_qout_t *qo;
    int ith, nth;
    int tiles_left;   /* the emulated AMX tiles still configured after the call */
};

static void *th_run(void *p)
{
    struct th_job *j = p;
    if (j->qo)
        j->t->qlinear_quant(j->W, j->c->m, j->c->act, j->c->ldq, j->c->alpha, j->bias,
                            XF_EPI_BIAS_GELU, j->y, j->ldy, j->qo, j->ith, j->nth);
    else
        j->t->qlinear(j->W, j->c->m, j->c->act, j->c->ldq, j->c->alpha, j->bias,
                      XF_EPI_BIAS_GELU, j->y, j->ldy, j->ith, j->nth);
#ifdef XF_HAVE_X86_64
    j->tiles_left = xf_amxemu_configured();
#endif
    return NULL;
}

/* Real threads, as the pool runs the kernels: 2 and 3 threads at once, each with its own
 * state (the AMX tile configuration is per thread: a kernel must load it in every thread and
 * release it before returning), give bitwise the one-thread result, for qlinear and
 * qlinear_quant, with a column split (few rows) and a row split (many rows). */
static void test_threads(void **state)
{
    (void)state;
    load_tables();
    static const int shapes[][3] = { { 21, 200, 130 }, { 200, 40, 70 } };
    for (int s = 0; s < 2; s++) {
        struct qcase c;
        qcase_init(&c, shapes[s][0], shapes[s][1], shapes[s][2], (uint64_t)(s + 500));
        int ldy, ldq2 = xf_qgemm_ldq(c.n);
        float *y1 = alloc_y(c.m, c.n, &ldy), *y = alloc_y(c.m, c.n, &ldy);
        uint8_t *q1 = alloc_act(c.m, c.n), *q = alloc_act(c.m, c.n);
        xf_qout_t qo1 = { q1, ldq2, (float *)(q1 + xf_qgemm_alpha_offset(c.m, c.n)) };
        xf_qout_t qo = { q, ldq2, (float *)(q + xf_qgemm_alpha_offset(c.m, c.n)) };
        for (int tb = 0; tb < n_tabs; tb++) {
            const xf_qgemm_w_t *W = weights_for(tabs[tb], &c);
            for (int wq = 0; wq < 2; wq++) {
                struct th_job one = { tabs[tb], W, &c, c.bias, y1, ldy, wq ? &qo1 : NULL,
                                      0, 1, 0 };
                th_run(&one);
                for (int nth = 2; nth <= 3; nth++) {
                    struct th_job jobs[3];
                    pthread_t th[3];
                    memset(y, 0xff, (size_t)c.m * ldy * sizeof *y);
                    memset(q, 0xA5, xf_qgemm_act_bytes(c.m, c.n));
                    for (int i = 0; i < nth; i++) {
                        jobs[i] = one;
                        jobs[i].y = y;
                        jobs[i].qo = wq ? &qo : NULL;
                        jobs[i].ith = i;
                        jobs[i].nth = nth;
                        jobs[i].tiles_left = -1;
                        assert_int_equal(pthread_create(&th[i], NULL, th_run, &jobs[i]), 0);
                    }
                    for (int i = 0; i < nth; i++) {
                        assert_int_equal(pthread_join(th[i], NULL), 0);
                        assert_int_equal(jobs[i].tiles_left, 0);
                    }
                    for (int t = 0; t < c.m; t++)
                        if (memcmp(y + (size_t)t * ldy, y1 + (size_t)t * ldy,
                                   (size_t)c.n * sizeof *y) != 0)
                            fail_msg("%s %dx%dx%d %s on %d threads: row %d differs from one "
                                     "thread", tabs[tb]->name, c.m, c.n, c.k,
                                     wq ? "qlinear_quant" : "qlinear", nth, t);
                    if (wq && (memcmp(q, q1, (size_t)c.m * ldq2) != 0 ||
                               memcmp(qo.alpha, qo1.alpha, (size_t)c.m * sizeof(float)) != 0))
                        fail_msg("%s %dx%dx%d on %d threads: quantised output differs",
                                 tabs[tb]->name, c.m, c.n, c.k, nth);
                }
            }
        }
        free(y1 - 1);
        free(y - 1);
        free(q1);
        free(q);
        qcase_free(&c);
    }
}

/* The emulated AMX table ("amx-emu"): where it runs it is in every test above (against the
 * reference, bitwise, on every shape, epilogue and split, NaN and zero rows, real threads);
 * here its peak loop's exact sums, the tiles released after each call, and that the engine
 * never lists it. It needs AVX-512 (its epilogue): elsewhere, or under XF_CPU=avx2|generic,
 * this says so and skips. */
static void test_amx_emu(void **state)
{
    (void)state;
    load_tables();
    const xf_cpu_t *c = xf_cpu();
    const xf_qkernels_t *eng[8];
    int ne = xf_qkernels_all(eng, 8);
    for (int i = 0; i < ne; i++)
        assert_string_not_equal(eng[i]->name, "amx-emu");
    if (!amx_emu_runs()) {
        print_message("# SKIP amx-emu: the AMX kernel under the tile emulator needs AVX-512 "
                      "(F, BW, VL, DQ) for its epilogue; this CPU (%s) runs isa %s (best %s%s)"
                      "\n", c->brand, xf_isa_name(c->level), xf_isa_name(c->level_max),
                      c->level < c->level_max ? ", capped by XF_CPU" : "");
        skip();
    }
#ifdef XF_HAVE_X86_64
    assert_ptr_equal(tabs[n_tabs - 1], &qtable_amx_emu);
    uint64_t d0 = xf_amxemu_dp_count();
    int32_t sink = 0;
    double ops = qtable_amx_emu.peak_loop(10, &sink);
    assert_true(ops == 4.0 * 16 * 16 * 64 * 2 * 10);
    assert_int_equal(xf_amxemu_dp_count() - d0, 40);
    assert_int_equal(sink, 10 * 64 * 3 * 1);   /* c[0] = Σ over 10 rounds of 64 products 3·1 */
    assert_int_equal(xf_amxemu_configured(), 0);
    print_message("# amx-emu: the AMX int8 kernel ran under the tile emulator against the "
                  "reference (%llu TDPBUSD on this thread)\n",
                  (unsigned long long)xf_amxemu_dp_count());
#endif
}

/* The AMX (TDPBUSD) table: built when the compiler knows the tile intrinsics, listed (and so
 * checked against the reference by every test above) only where cpu.c finds AMX-INT8 and the
 * kernel got the tile permission. Elsewhere this says why it did not run and skips (the same
 * kernel runs under the tile emulator: test_amx_emu). */
static void test_amx_table(void **state)
{
    (void)state;
    load_tables();
    const xf_cpu_t *c = xf_cpu();
    int listed = 0;
    for (int t = 0; t < n_tabs; t++)
        listed |= strcmp(tabs[t]->name, "amx") == 0;
#ifdef XF_HAVE_AMX
    assert_int_equal(listed, c->amx_int8 && c->amx_tile);
    if (!listed) {
        print_message("# SKIP amx: the AMX int8 kernel is compiled, but this CPU (%s) has no "
                      "AMX-INT8 (or no tile permission): it runs on Intel Xeon (Sapphire Rapids "
                      "and later), not here\n", c->brand);
        skip();
    }
    print_message("# amx: AMX int8 kernel checked against the reference on %s\n", c->brand);
#else
    assert_false(listed);
    print_message("# SKIP amx: the AMX int8 kernel is not compiled (configure found no AMX "
                  "intrinsics in the compiler)%s\n",
                  c->amx_int8 ? "; this CPU has AMX-INT8, the VNNI kernel serves it" : "");
    skip();
#endif
}

XF_TEST_MAIN(cmocka_unit_test(test_amx_emu_cap), cmocka_unit_test(test_weights),
             cmocka_unit_test(test_quant_rows), cmocka_unit_test(test_integer_exact),
             cmocka_unit_test(test_epilogues), cmocka_unit_test(test_qlinear_quant),
             cmocka_unit_test(test_vs_fp32), cmocka_unit_test(test_row_independent),
             cmocka_unit_test(test_peak_loops), cmocka_unit_test(test_stacked),
             cmocka_unit_test(test_lane_bound), cmocka_unit_test(test_gelu_poly_bound),
             cmocka_unit_test(test_threads), cmocka_unit_test(test_amx_table),
             cmocka_unit_test(test_amx_emu))
