/* GEMM benchmark (make bench): the BERT-base Linear shapes (N×K = 768×768, 3072×768,
 * 768×3072) at M = 16, 128, 512, 2106, 4096 rows for every GEMM path: the engine's own
 * kernels (per ISA table) on the engine pool, cblas_sgemm single-threaded per pool thread, and
 * cblas_sgemm on OpenBLAS' own threads; GFLOP/s (median of repeats) and the fraction of the
 * FMA peak measured in the same run. Prints key=value lines after a header line.
 * Usage: bench_gemm [threads] [reps] [M list, comma separated] */
#include "config.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cpu.h"
#include "engine/kernels.h"
#include "engine/kernels/ref/ref.h"
#include "engine/pool.h"

void openblas_set_num_threads(int num_threads);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct job {
    const xf_kernels_t *t;
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

enum path { P_TABLE, P_BLAS_OWN_THREADS };

static double run_case(xf_pool_t *pool, enum path path, struct job *j, int reps, int nth)
{
    double t[64];
    if (reps > 64)
        reps = 64;
    for (int r = -1; r < reps; r++) {
        double t0 = now_s();
        if (path == P_TABLE) {
            xf_pool_run(pool, job_fn, j);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, j->w->n, j->w->k, 1.0f,
                        j->x, j->w->k, j->w->w, j->w->k, 0.0f, j->y, j->w->n);
        }
        double dt = now_s() - t0;
        if (r >= 0)
            t[r] = dt;
    }
    (void)nth;
    qsort(t, (size_t)reps, sizeof t[0], cmp_d);
    return t[reps / 2];
}

int main(int argc, char **argv)
{
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    const char *ms = argc > 3 ? argv[3] : "16,128,512,2106,4096";
    if (nth < 1 || reps < 1)
        return 2;
    xf_cpu_info_t ci;
    xf_cpu_get_info(&ci);
    const xf_kernels_t *tabs[8];
    const char *names[8];
    int nt = xf_kernels_all(tabs, names, 8);
    double peak = xf_cpu_fma_peak_gflops(nth, 300);
    double peak1 = xf_cpu_fma_peak_gflops(1, 300);
    printf("# bench_gemm cpu=\"%s\" isa=%s isa_max=%s blas_core=%s gemm_path=%s threads=%d "
           "reps=%d peak_gflops=%.1f peak1_gflops=%.1f\n",
           ci.brand, ci.isa, ci.isa_max, ci.blas_core, ci.gemm_path, nth, reps, peak, peak1);
    xf_pool_t *pool = NULL;
    if (xf_pool_create(nth, &pool) != 0)
        return 1;
    static const int shapes[3][2] = { { 768, 768 }, { 3072, 768 }, { 768, 3072 } };
    char buf[256];
    snprintf(buf, sizeof buf, "%s", ms);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int m = atoi(tok);
        if (m < 1)
            continue;
        for (int s = 0; s < 3; s++) {
            int n = shapes[s][0], k = shapes[s][1];
            float *x = aligned_alloc(64, (size_t)m * (size_t)k * 4);
            float *wt = aligned_alloc(64, (size_t)n * (size_t)k * 4);
            float *bias = aligned_alloc(64, (size_t)n * 4);
            float *y = aligned_alloc(64, (size_t)m * (size_t)n * 4);
            float *y0 = aligned_alloc(64, (size_t)m * (size_t)n * 4);
            if (!x || !wt || !bias || !y || !y0)
                return 1;
            for (size_t i = 0; i < (size_t)m * (size_t)k; i++)
                x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
            for (size_t i = 0; i < (size_t)n * (size_t)k; i++)
                wt[i] = (float)((i * 40503u) % 997) / 997.0f - 0.5f;
            for (int i = 0; i < n; i++)
                bias[i] = 0.01f * (float)(i % 7);
            xf_gemm_w_t w;
            memset(&w, 0, sizeof w);
            w.n = n;
            w.k = k;
            w.w = wt;
            if (xf_gemm_w_pack(&w) != 0)
                return 1;
            double gflop = 2.0 * m * n * (double)k * 1e-9;
            int creps = gflop > 5 ? (reps + 1) / 2 : reps;
            struct job j = { NULL, &w, m, x, bias, y, XF_EPI_NONE };
            /* reference result for a quick sanity check */
            openblas_set_num_threads(nth);
            double tb = run_case(pool, P_BLAS_OWN_THREADS, &j, creps, nth);
            memcpy(y0, y, (size_t)m * (size_t)n * 4);
            openblas_set_num_threads(1);
            printf("m=%d n=%d k=%d path=openblas-%dt-own gflops=%.1f peak_frac=%.3f ms=%.3f\n",
                   m, n, k, nth, gflop / tb, gflop / tb / peak, tb * 1e3);
            for (int ti = 1; ti < nt; ti++) {
                j.t = tabs[ti];
                if (ti > 1 && strncmp(tabs[ti]->gemm_path, "own-", 4) != 0)
                    continue;
                memset(y, 0, (size_t)m * (size_t)n * 4);
                double tt = run_case(pool, P_TABLE, &j, creps, nth);
                double maxd = 0, maxv = 0;
                for (size_t i = 0; i < (size_t)m * (size_t)n; i++) {
                    double d = y[i] - y0[i];
                    maxd = d > maxd ? d : -d > maxd ? -d : maxd;
                    maxv = y0[i] > maxv ? y0[i] : -y0[i] > maxv ? -y0[i] : maxv;
                }
                printf("m=%d n=%d k=%d path=%s table=%s gflops=%.1f peak_frac=%.3f ms=%.3f "
                       "vs_blas=%.2f maxdiff_rel=%.1e\n",
                       m, n, k, tabs[ti]->gemm_path, names[ti], gflop / tt, gflop / tt / peak,
                       tt * 1e3, tb / tt, maxd / (maxv > 0 ? maxv : 1));
            }
            fflush(stdout);
            xf_gemm_w_deinit(&w);
            free(x);
            free(wt);
            free(bias);
            free(y);
            free(y0);
        }
    }
    xf_pool_free(pool);
    return 0;
}
