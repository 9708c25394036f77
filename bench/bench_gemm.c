/* GEMM benchmark (make bench): the BERT-base Linear shapes (N×K = 768×768, 3072×768,
 * 768×3072) at M = 16, 128, 512, 2106, 4096 rows for every GEMM path: the engine's own
 * kernels (per ISA table) on the engine pool, cblas_sgemm single-threaded per pool thread, and
 * cblas_sgemm on OpenBLAS' own threads; GFLOP/s (median of repeats) and the fraction of the
 * FMA peak measured in the same run: peak_frac against the best whole-run peak, local_frac
 * against the peak measured just before and after the case, cpu_frac = GFLOP per process
 * CPU-second against one core's peak per CPU-second (the steadiest number on a shared
 * machine; spinning threads count as used). Prints key=value lines after a header line.
 * Usage: bench_gemm [threads] [reps] [M list, comma separated] */
#include "config.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "engine/cpu.h"
#include "engine/kernels.h"
#include "engine/kernels/ref/ref.h"
#include "engine/pool.h"
#include "source_rev.h"
#ifdef XF_HAVE_X86_64
#include "engine/kernels/x86/x86.h"
#endif

void openblas_set_num_threads(int num_threads);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FMA peak of one core per CPU-second (thread CPU time, so that time slices taken by other
 * processes on a shared machine do not count). */
static double peak_per_cpu_s(void)
{
#ifdef XF_HAVE_X86_64
    const xf_cpu_t *c = xf_cpu();
    float sink = 0;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID), fl;
        if (c->level >= XF_ISA_AVX512)
            fl = xf_fma_loop_avx512(1 << 22, &sink);
        else if (c->level >= XF_ISA_AVX2)
            fl = xf_fma_loop_avx2(1 << 22, &sink);
        else
            return xf_cpu_fma_peak_gflops(1, 100);
        double g = fl / (cpu_s(CLOCK_THREAD_CPUTIME_ID) - t0) * 1e-9;
        best = g > best ? g : best;
    }
    return best + (sink == 12345.0f ? 1e-9 : 0);
#else
    return xf_cpu_fma_peak_gflops(1, 100);
#endif
}

/* The six Linear GEMMs of a BERT-base layer: Q, K, V, O (768×768), FFN1 (3072×768, GELU),
 * FFN2 (768×3072). */
static const int shapes[6][3] = { { 768, 768, XF_EPI_BIAS }, { 768, 768, XF_EPI_BIAS },
                                  { 768, 768, XF_EPI_BIAS }, { 768, 768, XF_EPI_BIAS },
                                  { 3072, 768, XF_EPI_BIAS_GELU }, { 768, 3072, XF_EPI_BIAS } };

struct job {
    const xf_kernels_t *t;     /* NULL: cblas_sgemm on OpenBLAS' own threads, from thread 0 */
    const xf_gemm_w_t *w;
    int m;
    const float *x, *bias;
    float *y;
    enum xf_epilogue epi;
};

static void job_fn(void *v, int ith, int nth)
{
    struct job *j = v;
    j->t->linear(j->w, j->m, j->x, j->w->k, j->bias, j->epi, j->y, j->w->n, ith, nth);
}

static void run_job(xf_pool_t *pool, struct job *j)
{
    if (j->t) {
        xf_pool_run(pool, job_fn, j);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, j->w->n, j->w->k, 1.0f, j->x,
                j->w->k, j->w->w, j->w->k, 0.0f, j->y, j->w->n);
}

/* Median seconds of reps runs of the jobs (after one warm-up run); *cpu gets the median
 * process CPU seconds (all threads, spinning included). */
static double time_jobs(xf_pool_t *pool, struct job *jobs, int nj, int reps, double *cpu)
{
    double t[64], c[64];
    if (reps > 64)
        reps = 64;
    for (int r = -1; r < reps; r++) {
        double t0 = now_s(), c0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < nj; i++)
            run_job(pool, &jobs[i]);
        if (r >= 0) {
            t[r] = now_s() - t0;
            c[r] = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    qsort(t, (size_t)reps, sizeof t[0], bench_cmp_double);
    qsort(c, (size_t)reps, sizeof c[0], bench_cmp_double);
    *cpu = c[reps / 2];
    return t[reps / 2];
}

/* OpenBLAS picks its kernel when it loads; on CPUs it does not know it may fall back to an
 * old core (this Xeon: "Prescott", SSE3). Compare against its AVX-512 kernel instead: re-exec
 * once with OPENBLAS_CORETYPE=SkylakeX unless the caller set the variable. */
static void maybe_reexec(char **argv)
{
    const xf_cpu_t *c = xf_cpu();
    const char *core = openblas_get_corename();
    if (getenv("OPENBLAS_CORETYPE") || c->level_max < XF_ISA_AVX512 || !core)
        return;
    if (strstr(core, "kylake") || strstr(core, "ooperlake") || strstr(core, "apphire"))
        return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    fprintf(stderr, "# OpenBLAS core %s on an AVX-512 CPU: re-exec with "
                    "OPENBLAS_CORETYPE=SkylakeX\n", core);
    execv("/proc/self/exe", argv);
}

#define N_PATHS 4

int main(int argc, char **argv)
{
    maybe_reexec(argv);
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    const char *ms = argc > 3 ? argv[3] : "16,128,512,2106,4096";
    if (nth < 1 || nth > 256 || reps < 1)
        return 2;
    xf_cpu_info_t ci;
    xf_cpu_get_info(&ci);
    const xf_kernels_t *tabs[8];
    const char *names[8];
    int nt = xf_kernels_all(tabs, names, 8);
    /* paths: OpenBLAS threads, OpenBLAS 1 thread per pool thread, own kernels per ISA */
    const xf_kernels_t *ptab[N_PATHS] = { NULL };
    const char *pname[N_PATHS] = { "openblas-own-threads" };
    int np = 1;
    for (int i = 1; i < nt && np < N_PATHS; i++) {
        if (i == 1 || strncmp(tabs[i]->gemm_path, "own-", 4) == 0) {
            ptab[np] = tabs[i];
            pname[np++] = tabs[i]->gemm_path;
        }
    }
    double peak = 0;
    for (int r = 0; r < 3; r++) {
        double p = xf_cpu_fma_peak_gflops(nth, 200);
        peak = p > peak ? p : peak;
    }
    double peak1 = peak_per_cpu_s();
    char rev[64];
    bench_source_rev(rev, sizeof rev);
    printf("# bench_gemm cpu=\"%s\" isa=%s isa_max=%s blas_core=%s gemm_path=%s threads=%d "
           "reps=%d peak_gflops=%.1f peak1_per_cpu_s=%.1f rev=%s\n",
           ci.brand, ci.isa, ci.isa_max, ci.blas_core, ci.gemm_path, nth, reps, peak, peak1, rev);
    fflush(stdout);
    xf_pool_t *pool = NULL;
    if (xf_pool_create(nth, &pool) != 0)
        return 1;
    /* weights and biases for the six shapes (distinct buffers, as in a model) */
    xf_gemm_w_t w[6];
    float *wt[6], *bias[6];
    for (int s = 0; s < 6; s++) {
        int n = shapes[s][0], k = shapes[s][1];
        wt[s] = aligned_alloc(64, (size_t)n * k * 4);
        bias[s] = aligned_alloc(64, (size_t)n * 4);
        if (!wt[s] || !bias[s])
            return 1;
        for (size_t i = 0; i < (size_t)n * k; i++)
            wt[s][i] = (float)((i * 40503u + (unsigned)s) % 997) / 997.0f - 0.5f;
        for (int i = 0; i < n; i++)
            bias[s][i] = 0.01f * (float)(i % 7);
        memset(&w[s], 0, sizeof w[s]);
        w[s].n = n;
        w[s].k = k;
        w[s].w = wt[s];
        if (xf_gemm_w_pack(&w[s]) != 0)
            return 1;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", ms);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int m = atoi(tok);
        if (m < 1 || m > 65536)
            continue;
        float *x = aligned_alloc(64, (size_t)m * 3072 * 4);
        float *y = aligned_alloc(64, (size_t)m * 3072 * 4);
        float *y0 = aligned_alloc(64, (size_t)m * 3072 * 4);
        if (!x || !y || !y0)
            return 1;
        for (size_t i = 0; i < (size_t)m * 3072; i++)
            x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        double layer_s[N_PATHS] = { 0 }, layer_c[N_PATHS] = { 0 };
        double layer_gflop = 0;
        /* per shape: Q (same as K, V, O), FFN1, FFN2 */
        static const int show[3] = { 0, 4, 5 };
        for (int si = 0; si < 3; si++) {
            int s = show[si], n = shapes[s][0], k = shapes[s][1];
            double gflop = 2.0 * m * n * (double)k * 1e-9;
            int creps = gflop > 5 ? (reps + 1) / 2 : reps;
            double tp[N_PATHS], cp[N_PATHS];
            for (int p = 0; p < np; p++) {
                struct job j = { ptab[p], &w[s], m, x, bias[s], y,
                                 ptab[p] ? (enum xf_epilogue)shapes[s][2] : XF_EPI_NONE };
                openblas_set_num_threads(ptab[p] ? 1 : nth);
                /* the peak right before and after: the machine may be shared, so the ratio
                 * to the local peak is the steadier number */
                double pk0 = xf_cpu_fma_peak_gflops(nth, 60);
                double cpu;
                tp[p] = time_jobs(pool, &j, 1, creps, &cpu);
                cp[p] = cpu;
                double pk = 0.5 * (pk0 + xf_cpu_fma_peak_gflops(nth, 60));
                if (p == 0) {
                    /* reference for a sanity check: bias + epilogue on the cblas result */
                    for (int i = 0; i < m; i++)
                        tabs[0]->bias_act(0, (size_t)n, n, y + (size_t)i * n, bias[s],
                                          (enum xf_epilogue)shapes[s][2], y0 + (size_t)i * n);
                }
                double maxd = 0, maxv = 0;
                if (p > 0) {
                    for (size_t i = 0; i < (size_t)m * n; i++) {
                        double d = fabs((double)y[i] - y0[i]);
                        maxd = d > maxd ? d : maxd;
                        maxv = fabs(y0[i]) > maxv ? fabs(y0[i]) : maxv;
                    }
                }
                printf("m=%d n=%d k=%d path=%s gflops=%.1f peak_frac=%.3f local_peak=%.1f "
                       "local_frac=%.3f cpu_frac=%.3f ms=%.3f vs_openblas=%.2f "
                       "maxdiff_rel=%.1e\n",
                       m, n, k, pname[p], gflop / tp[p], gflop / tp[p] / peak, pk,
                       gflop / tp[p] / pk, gflop / cp[p] / peak1, tp[p] * 1e3, tp[0] / tp[p],
                       maxd / (maxv > 0 ? maxv : 1));
                fflush(stdout);
            }
            /* the layer: Q, K, V, O count four times the first shape */
            int times = s == 0 ? 4 : 1;
            layer_gflop += times * gflop;
            for (int p = 0; p < np; p++) {
                layer_s[p] += times * tp[p];
                layer_c[p] += times * cp[p];
            }
        }
        for (int p = 0; p < np; p++)
            printf("layer m=%d path=%s gflops=%.1f peak_frac=%.3f cpu_frac=%.3f ms=%.3f "
                   "vs_openblas=%.2f\n", m, pname[p], layer_gflop / layer_s[p],
                   layer_gflop / layer_s[p] / peak, layer_gflop / layer_c[p] / peak1,
                   layer_s[p] * 1e3, layer_s[0] / layer_s[p]);
        fflush(stdout);
        free(x);
        free(y);
        free(y0);
    }
    openblas_set_num_threads(1);
    for (int s = 0; s < 6; s++) {
        xf_gemm_w_deinit(&w[s]);
        free(wt[s]);
        free(bias[s]);
    }
    xf_pool_free(pool);
    return 0;
}
