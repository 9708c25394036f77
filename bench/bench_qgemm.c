/* int8 vs fp32 GEMM benchmark (make bench): the BERT-base Linear shapes (N×K = 768×768,
 * 3072×768 with GELU, 768×3072) at M = 16, 128, 1024 rows, the engine's selected int8 kernels
 * (quantising the activations per row + the int8 GEMM with its epilogue, both timed) against the
 * selected fp32 kernel, on the engine pool. Peaks are measured in the same run, per core and per
 * thread-CPU-second: the FMA peak (as bench_gemm) and the int8 peak (independent chains of the
 * int8 kernel's instruction: vpdpbusd, vpmaddubsw + vpmaddwd, TDPBUSD; 2 ops per multiply-add).
 * frac = achieved ops/s ÷ (threads × one core's peak); cpu_frac = ops per process CPU-second ÷
 * one core's peak (steadier on a shared machine). Prints key=value lines after a header line.
 * With a model directory the whole forward is timed too: the model loaded as fp32 and as int8
 * (model.quantize), b=1 n=128 and b=32 n=128, the two timed alternately in one run (`model`
 * lines: median ms, speedup = fp32 / int8 time, and the same ratio in process CPU time).
 * Usage: bench_qgemm [threads] [reps] [M list, comma separated] [model dir] [b list, default
 * 1,32] [fp32|int8: that forward only, e.g. under perf]; XF_CPU=avx2 caps the ISA. An M list
 * of 0 skips the GEMM lines. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xformd/xformd.h>

#include "bench_util.h"
#include "engine/cpu.h"
#include "engine/kernels.h"
#include "engine/kernels/qgemm.h"
#include "engine/pool.h"
#include "source_rev.h"
#ifdef XF_HAVE_X86_64
#include "engine/kernels/x86/x86.h"
#endif

/* One core's FMA peak per thread-CPU-second (GFLOP/s). */
static double fma_peak1(void)
{
#ifdef XF_HAVE_X86_64
    const xf_cpu_t *c = xf_cpu();
    float sink = 0;
    double best = 0;
    for (int r = 0; r < 5 && c->level >= XF_ISA_AVX2; r++) {
        double t0 = bench_clock_s(CLOCK_THREAD_CPUTIME_ID);
        double fl = c->level >= XF_ISA_AVX512 ? xf_fma_loop_avx512(1 << 22, &sink)
                                              : xf_fma_loop_avx2(1 << 22, &sink);
        double g = fl / (bench_clock_s(CLOCK_THREAD_CPUTIME_ID) - t0) * 1e-9;
        best = g > best ? g : best;
    }
    if (best > 0)
        return best + (sink == 12345.0f ? 1e-9 : 0);
#endif
    return xf_cpu_fma_peak_gflops(1, 100);
}

/* One core's int8 peak per thread-CPU-second (GOP/s) with the selected int8 kernels. */
static double int8_peak1(const xf_qkernels_t *q)
{
    int32_t sink = 0;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = bench_clock_s(CLOCK_THREAD_CPUTIME_ID);
        double ops = q->peak_loop(1 << 21, &sink);
        double g = ops / (bench_clock_s(CLOCK_THREAD_CPUTIME_ID) - t0) * 1e-9;
        best = g > best ? g : best;
    }
    return best + (sink == 12345 ? 1e-9 : 0);
}

struct job {
    int m, n, k;
    enum xf_epilogue epi;
    const float *x, *bias;
    float *y;
    const xf_gemm_w_t *w;      /* fp32 */
    const xf_qgemm_w_t *qw;    /* int8; NULL: run the fp32 path */
    uint8_t *act;
    const xf_kernels_t *K;
    const xf_qkernels_t *Q;
    xf_pool_t *pool;
};

static void job_fn(void *v, int ith, int nth)
{
    struct job *j = v;
    if (!j->qw) {
        j->K->linear(j->w, j->m, j->x, j->k, j->bias, j->epi, j->y, j->n, ith, nth);
        return;
    }
    int r0, r1, ldq = xf_qgemm_ldq(j->k);
    float *alpha = (float *)(j->act + xf_qgemm_alpha_offset(j->m, j->k));
    xf_split_rows(j->m, ith, nth, &r0, &r1);
    if (r0 < r1)
        j->Q->quant_rows(r0, r1, j->k, j->x, j->k, j->act, ldq, alpha);
    xf_pool_barrier(j->pool);
    j->Q->qlinear(j->qw, j->m, j->act, ldq, alpha, j->bias, j->epi, j->y, j->n, ith, nth);
}

/* Median wall and process-CPU seconds of reps runs after one warm-up. */
static double time_job(struct job *j, int reps, double *cpu)
{
    double t[64], c[64];
    reps = reps > 64 ? 64 : reps;
    for (int r = -1; r < reps; r++) {
        double t0 = bench_clock_s(CLOCK_MONOTONIC), c0 = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
        xf_pool_run(j->pool, job_fn, j);
        if (r >= 0) {
            t[r] = bench_clock_s(CLOCK_MONOTONIC) - t0;
            c[r] = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    qsort(t, (size_t)reps, sizeof t[0], bench_cmp_double);
    qsort(c, (size_t)reps, sizeof c[0], bench_cmp_double);
    *cpu = c[reps / 2];
    return t[reps / 2];
}

/* One forward of batch b: wall and process-CPU seconds. */
static double forward_once(xf_ctx_t *c, const xf_model_t *m, const xf_plan_t *p,
                           const xf_batch_t *b, float *pooled, double *cpu)
{
    xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 0, .pooled = pooled };
    double t0 = bench_clock_s(CLOCK_MONOTONIC), c0 = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
    if (xf_forward(c, m, p, b, &out, NULL) != 0)
        return -1;
    *cpu = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    return bench_clock_s(CLOCK_MONOTONIC) - t0;
}

/* fp32 vs int8 forward of the model in dir at b=1 and b=32, n=128, alternately; only is
 * "fp32" or "int8" to run one of them (for a profiler), else NULL. */
static int bench_model(const char *dir, int nth, int reps, const char *blist, const char *only)
{
    const int q0 = only && strcmp(only, "int8") == 0, q1 = only && strcmp(only, "fp32") == 0 ? 1 : 2;
    int bs[8], nb = 0;
    char bl[64];
    snprintf(bl, sizeof bl, "%s", blist);
    for (char *save = NULL, *tok = strtok_r(bl, ",", &save); tok && nb < 8;
         tok = strtok_r(NULL, ",", &save))
        if (atoi(tok) >= 1 && atoi(tok) <= 32)
            bs[nb++] = atoi(tok);
    xf_load_opts_t lf = { 0 }, lq = { 0 };
    xf_model_t *m[2] = { NULL, NULL };
    xf_diag_t diag = { 0 };
    lq.quantize = "int8";
    if ((q0 == 0 && xf_model_load(dir, &lf, &m[0], &diag)) ||
        (q1 == 2 && xf_model_load(dir, &lq, &m[1], &diag))) {
        fprintf(stderr, "bench_qgemm: %s: %s\n", dir, diag.msg);
        return 1;
    }
    xf_ctx_opts_t co = { .n_threads = nth };
    xf_ctx_t *c = NULL;
    if (xf_ctx_create(&co, &c))
        return 1;
    int32_t D = xf_model_info(m[q0])->d_model, V = xf_model_info(m[q0])->vocab_size;
    for (int k = 0; k < nb; k++) {
        int32_t B = bs[k], n = 128, cu[33];
        int32_t *ids = malloc((size_t)B * n * sizeof *ids);
        float *pooled = malloc((size_t)B * D * sizeof *pooled);
        if (!ids || !pooled)
            return 1;
        for (int32_t i = 0; i <= B; i++)
            cu[i] = i * n;
        for (int32_t i = 0; i < B * n; i++)
            ids[i] = 1000 + (int32_t)((unsigned)i * 2654435761u % (unsigned)(V - 1000));
        xf_batch_t b = { .n_seq = B, .cu_len = cu, .ids = ids };
        xf_plan_t *p[2] = { NULL, NULL };
        double t[2][64], cp[2][64];
        int r_n = reps > 64 ? 64 : reps;
        memset(t, 0, sizeof t);
        memset(cp, 0, sizeof cp);
        for (int q = q0; q < q1; q++)
            if (xf_plan_create(m[q], &p[q]) || xf_plan_build(p[q], &b, nth, NULL) ||
                xf_ctx_reserve(c, p[q]))
                return 1;
        for (int r = -1; r < r_n; r++) {
            for (int q = q0; q < q1; q++) {
                double cpu, w = forward_once(c, m[q], p[q], &b, pooled, &cpu);
                if (w < 0)
                    return 1;
                if (r >= 0) {
                    t[q][r] = w;
                    cp[q][r] = cpu;
                }
            }
        }
        for (int q = q0; q < q1; q++) {
            qsort(t[q], (size_t)r_n, sizeof t[q][0], bench_cmp_double);
            qsort(cp[q], (size_t)r_n, sizeof cp[q][0], bench_cmp_double);
        }
        if (only)
            printf("model b=%d n=%d %s_ms=%.2f %s_cpu_ms=%.2f\n", B, n, only,
                   t[q0][r_n / 2] * 1e3, only, cp[q0][r_n / 2] * 1e3);
        else
            printf("model b=%d n=%d fp32_ms=%.2f int8_ms=%.2f speedup=%.2f cpu_speedup=%.2f\n",
                   B, n, t[0][r_n / 2] * 1e3, t[1][r_n / 2] * 1e3, t[0][r_n / 2] / t[1][r_n / 2],
                   cp[0][r_n / 2] / cp[1][r_n / 2]);
        fflush(stdout);
        xf_plan_free(p[0]);
        xf_plan_free(p[1]);
        free(ids);
        free(pooled);
    }
    xf_ctx_free(c);
    xf_model_free(m[0]);
    xf_model_free(m[1]);
    return 0;
}

int main(int argc, char **argv)
{
    int nth = argc > 1 ? atoi(argv[1]) : 1;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    const char *ms = argc > 3 ? argv[3] : "16,128,1024";
    static const int shapes[3][3] = { { 768, 768, XF_EPI_BIAS },
                                      { 3072, 768, XF_EPI_BIAS_GELU },
                                      { 768, 3072, XF_EPI_BIAS } };
    if (nth < 1 || nth > 256 || reps < 1)
        return 2;
    xf_cpu_info_t ci;
    xf_cpu_get_info(&ci);
    const xf_kernels_t *K = xf_kernels();
    const xf_qkernels_t *Q = xf_qkernels();
    double fp1 = fma_peak1(), q1 = int8_peak1(Q);
    char rev[64];
    bench_source_rev(rev, sizeof rev);
    printf("# bench_qgemm cpu=\"%s\" isa=%s isa_max=%s fp32_path=%s int8_path=%s threads=%d "
           "reps=%d fma_peak1_gflops=%.1f int8_peak1_gops=%.1f peak_ratio=%.2f rev=%s\n",
           ci.brand, ci.isa, ci.isa_max, K->gemm_path, Q->name, nth, reps, fp1, q1, q1 / fp1,
           rev);
    fflush(stdout);
    xf_pool_t *pool = NULL;
    if (xf_pool_create(nth, &pool) != 0)
        return 1;
    char mlist[256];
    snprintf(mlist, sizeof mlist, "%s", ms);
    for (char *save = NULL, *tok = strtok_r(mlist, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int m = atoi(tok);
        if (m < 1 || m > 65536)
            continue;
        for (int s = 0; s < 3; s++) {
            int n = shapes[s][0], k = shapes[s][1];
            float *w = malloc((size_t)n * k * 4), *x = malloc((size_t)m * k * 4);
            float *bias = malloc((size_t)n * 4), *y = malloc((size_t)m * n * 4);
            uint8_t *act = aligned_alloc(64, xf_qgemm_act_bytes(m, k));
            if (!w || !x || !bias || !y || !act)
                return 1;
            unsigned st = 12345u + (unsigned)s;
            for (size_t i = 0; i < (size_t)n * k; i++) {
                st = st * 1103515245u + 12345u;
                w[i] = ((float)(st >> 8) / 16777216.0f - 0.5f) * 0.1f;
            }
            for (size_t i = 0; i < (size_t)m * k; i++) {
                st = st * 1103515245u + 12345u;
                x[i] = (float)(st >> 8) / 16777216.0f * 2.0f - 1.0f;
            }
            for (int i = 0; i < n; i++)
                bias[i] = 0.01f * (float)(i % 7);
            xf_gemm_w_t fw;
            xf_qgemm_w_t qw;
            if (xf_gemm_w_init(&fw, w, n, k) ||
                xf_qgemm_w_init(&qw, w, n, k, Q->wmax, Q->lane_max, Q->wgroup))
                return 1;
            struct job j = { m, n, k, (enum xf_epilogue)shapes[s][2], x, bias, y, &fw, NULL,
                             act, K, Q, pool };
            double cf, cq;
            double tf = time_job(&j, reps, &cf);
            j.qw = &qw;
            double tq = time_job(&j, reps, &cq);
            double ops = 2.0 * m * n * k;
            printf("qgemm m=%d n=%d k=%d fp32_ms=%.4f int8_ms=%.4f speedup=%.2f "
                   "fp32_gflops=%.1f int8_gops=%.1f fp32_frac=%.3f int8_frac=%.3f "
                   "fp32_cpu_frac=%.3f int8_cpu_frac=%.3f\n",
                   m, n, k, tf * 1e3, tq * 1e3, tf / tq, ops / tf * 1e-9, ops / tq * 1e-9,
                   ops / tf * 1e-9 / (nth * fp1), ops / tq * 1e-9 / (nth * q1),
                   ops / cf * 1e-9 / fp1, ops / cq * 1e-9 / q1);
            fflush(stdout);
            xf_gemm_w_deinit(&fw);
            xf_qgemm_w_deinit(&qw);
            free(w);
            free(x);
            free(bias);
            free(y);
            free(act);
        }
    }
    xf_pool_free(pool);
    const char *only = argc > 6 && (strcmp(argv[6], "fp32") == 0 || strcmp(argv[6], "int8") == 0)
                           ? argv[6] : NULL;
    return argc > 4 ? bench_model(argv[4], nth, reps, argc > 5 ? argv[5] : "1,32", only) : 0;
}
