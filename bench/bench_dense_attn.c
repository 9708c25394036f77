/* bench_dense_attn: the dense (family-T) attention kernel alone, as the forward runs it: BERT-base
 * heads (12 × 64), Q/K/V rows read in place from one QKV GEMM-like output (ld = 3·768), one
 * or more sequences. Each thread's share of a forward (ith of nth) runs on this thread in
 * turn, timed with the thread's CPU clock, so the figures are per CPU-second and do not
 * depend on what else runs on the machine; the QKV rows are rewritten before every call
 * (another op wrote them in the forward). Prints one machine-readable line per shape: the
 * CPU time of each thread's share (median and min over reps), GFLOP/s of the useful FLOPs
 * (4·n²·d per head) and eff = that against one core's FMA peak measured in the same run.
 * XF_CPU=avx2|generic selects the narrower kernels as in the engine. Never run by make check. */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xformd/xformd.h>

#include "attention/fam_t.h"
#include "attention/registry.h"
#include "bench_util.h"
#include "engine/cpu.h"
#include "source_rev.h"

#define N_HEAD 12
#define D_HEAD 64
#define MAX_REPS 1000
#define MAX_NTH 8

static void *xmalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64)) {
        fprintf(stderr, "bench_dense_attn: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct copy_job {
    float *dst;
    const float *src;
    size_t cnt;
} copy_job;

static void *copy_fn(void *arg)
{
    copy_job *j = arg;
    memcpy(j->dst, j->src, j->cnt * sizeof(float));
    return NULL;
}

/* The QKV rows as another op left them: written by this thread (other = 0) or by another
 * thread (other = 1: in the forward the QKV GEMM's other thread wrote part of them). */
static void rewrite(float *dst, const float *src, size_t cnt, int other)
{
    copy_job j = { dst, src, cnt };
    pthread_t th;
    if (!other || pthread_create(&th, NULL, copy_fn, &j) != 0) {
        copy_fn(&j);
        return;
    }
    pthread_join(th, NULL);
}

/* One shape: b sequences of n tokens; returns 0 or an engine code. */
static int run_shape(int b, int n, int nth, int reps, int other, double peak1, const char *kname)
{
    const int32_t da = N_HEAD * D_HEAD, ld = 3 * da;
    const size_t ntok = (size_t)b * n, cnt = ntok * (size_t)ld;
    float *src = xmalloc(cnt * sizeof(float)), *qkv = xmalloc(cnt * sizeof(float));
    float *out = xmalloc(ntok * (size_t)da * sizeof(float));
    int32_t *cu = xmalloc((size_t)(b + 1) * sizeof(int32_t));
    const float sc = 1.0f / sqrtf((float)D_HEAD);
    uint64_t s = 12345;
    int rc;

    for (size_t i = 0; i < cnt; i++) {   /* uniform in [-2, 2): logits of a few units */
        s += 0x9E3779B97F4A7C15ull;
        src[i] = (float)((double)(mix64(s) >> 11) * 0x1p-53 * 4.0 - 2.0);
    }
    for (int i = 0; i <= b; i++)
        cu[i] = i * n;
    xf_attn_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.n_seq = b;
    sh.cu_len = cu;
    sh.n_tokens = (int32_t)ntok;
    sh.n_head = N_HEAD;
    sh.d_head = D_HEAD;
    xf_attn_io io;
    memset(&io, 0, sizeof io);
    io.q = qkv;
    io.k = qkv + da;
    io.v = qkv + 2 * da;
    io.ld = ld;
    io.q_scale = 1.0f;
    io.scale = sc;
    io.out = out;

    const xf_attn_vtbl *vt = xf_attn_find("dense");
    xf_attn_plan pl;
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    memcpy(params, vt->ops->defaults, vt->ops->params_size);
    rc = xf_at_plan(vt, params, &sh, nth, &pl);
    if (rc)
        return rc;
    char *ws = xmalloc(pl.ws_per_thread + 64);
    double *t = xmalloc((size_t)reps * nth * sizeof(double));
    uint64_t hash = 1469598103934665603ull;   /* FNV-1a of the output's bits: equal bits */

    for (int r = -2; r < reps && !rc; r++) {   /* two warm-ups */
        for (int ith = 0; ith < nth && !rc; ith++) {
            rewrite(qkv, src, cnt, other);
            double t0 = bench_clock_s(CLOCK_THREAD_CPUTIME_ID);
            rc = xf_at_forward(vt, params, &sh, &io, &pl, NULL, ws, ith, nth);
            double dt = bench_clock_s(CLOCK_THREAD_CPUTIME_ID) - t0;
            if (r >= 0)
                t[(size_t)ith * reps + r] = dt;
        }
    }
    for (size_t i = 0; i < ntok * (size_t)da; i++) {
        uint32_t u;
        memcpy(&u, &out[i], sizeof u);
        hash = (hash ^ u) * 1099511628211ull;
    }
    if (!rc) {
        const double flops = 4.0 * (double)n * n * D_HEAD * N_HEAD * b;
        double tot_med = 0, tot_min = 0, thr_med[MAX_NTH];
        for (int ith = 0; ith < nth; ith++) {
            double *v = t + (size_t)ith * reps;
            qsort(v, (size_t)reps, sizeof *v, bench_cmp_double);
            thr_med[ith] = v[reps / 2];
            tot_med += v[reps / 2];
            tot_min += v[0];
        }
        printf("dense_attn shape=b%dn%d kern=%s nth=%d writer=%s reps=%d cpu_us_med=%.1f "
               "cpu_us_min=%.1f gflops_cpu=%.2f eff=%.3f eff_min=%.3f", b, n, kname, nth,
               other ? "other" : "self", reps, tot_med * 1e6,
               tot_min * 1e6, flops * 1e-9 / tot_med, flops * 1e-9 / tot_med / peak1,
               flops * 1e-9 / tot_min / peak1);
        for (int ith = 0; ith < nth; ith++)
            printf(" thr%d_us=%.1f", ith, thr_med[ith] * 1e6);
        printf(" out_fnv=%016llx\n", (unsigned long long)hash);
    }
    free(t);
    free(ws);
    free(cu);
    free(out);
    free(qkv);
    free(src);
    return rc;
}

static void usage(void)
{
    printf("usage: bench_dense_attn [--shapes b1n128,b1n512,b8n128] [--threads N] [--reps N]\n"
           "        [--writer other|self]\n"
           "Dense family-T attention alone (12 heads x 64, strided QKV rows), each thread's\n"
           "share timed on its CPU clock; one `dense_attn` line per shape with eff against\n"
           "one core's FMA peak. --writer: which thread rewrites the QKV rows before each call\n"
           "(default other: a second thread, as the QKV GEMM's other thread in the forward).\n");
}

int main(int argc, char **argv)
{
    const char *shapes = "b1n128,b1n512,b8n128";
    int nth = 2, reps = 21, other = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--shapes") && v) {
            shapes = v;
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            nth = atoi(v);
            i++;
        } else if (!strcmp(a, "--writer") && v && (!strcmp(v, "self") || !strcmp(v, "other"))) {
            other = !strcmp(v, "other");
            i++;
        } else if (!strcmp(a, "--reps") && v) {
            reps = atoi(v);
            i++;
        } else {
            usage();
            return 2;
        }
    }
    if (nth < 1 || nth > MAX_NTH || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_dense_attn: threads 1..%d, reps 1..%d\n", MAX_NTH, MAX_REPS);
        return 2;
    }
    /* one core's FMA peak per CPU-second (as xformd-cli bench's per_cpu_second): the wall
     * figure scaled by the CPU share the measurement got, median of 3 */
    double pk[3];
    for (int i = 0; i < 3; i++) {
        double w0 = bench_clock_s(CLOCK_MONOTONIC), c0 = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
        double g = xf_cpu_fma_peak_gflops(1, 200);
        double used = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        pk[i] = used > 0 ? g * (bench_clock_s(CLOCK_MONOTONIC) - w0) / used : 0.0;
    }
    qsort(pk, 3, sizeof pk[0], bench_cmp_double);
    const double peak1 = pk[1];
    const xf_at_kern *k = xf_at_kern_get();
    char rev[64];
    bench_source_rev(rev, sizeof rev);
    printf("# bench_dense_attn cpu=\"%s\" isa=%s kern=%s rev=%s peak1_cpu_gflops=%.1f heads=%d "
           "d_head=%d\n", xf_cpu()->brand, xf_isa_name(xf_cpu()->level), k->name, rev, peak1,
           N_HEAD, D_HEAD);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", shapes);
    for (char *sv = NULL, *tok = strtok_r(buf, ",", &sv); tok; tok = strtok_r(NULL, ",", &sv)) {
        int b = 0, n = 0;
        if (sscanf(tok, "b%dn%d", &b, &n) != 2 || b < 1 || n < 1 || b > 64 || n > 4096) {
            fprintf(stderr, "bench_dense_attn: bad shape '%s' (bBnN)\n", tok);
            return 2;
        }
        int rc = run_shape(b, n, nth, reps, other, peak1, k->name);
        if (rc) {
            fprintf(stderr, "bench_dense_attn: %s: %s\n", tok, xf_strerror(rc));
            return 1;
        }
    }
    return 0;
}
