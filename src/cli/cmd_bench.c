/* xformd-cli bench: the engine benchmark of DESIGN.md §10. In one run it measures the FMA peak,
 * the engine on the BERT-base shapes (b,n) = (1,16) (1,128) (1,512) (8,128) (32,128) and the
 * 16-sequence mixed-length batch, and the `floor`: cblas_sgemm alone on the same GEMMs.
 * Prints one machine-readable line per case after a header naming CPU, paths and threads
 * (peak_frac: against the FMA peak on as many threads; cpu_frac: GFLOP per process
 * CPU-second against one core's FMA peak per CPU-second, steadier on a shared machine);
 * --compare FILE adds, under each shape, the lines a peer printed for it (the same line format:
 * ../shared/peers/), with the peer's fraction of this run's FMA peak and its time over ours. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#ifndef XF_SRCDIR
#define XF_SRCDIR "."
#endif

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* CPU seconds used by the whole process (every thread). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void git_rev(char *buf, size_t len)
{
    FILE *p = popen("git -C '" XF_SRCDIR "' rev-parse --short HEAD 2>/dev/null", "r");
    snprintf(buf, len, "unknown");
    if (p) {
        if (fgets(buf, (int)len, p))
            buf[strcspn(buf, "\n")] = '\0';
        pclose(p);
    }
}


/* One peer line: "<engine> b=  1 n= 128 median_ms= ..." or
 * "<engine> varlen b=16 tokens=2106 maxlen=224 median_ms= ..." (spaces after '=' allowed). */
typedef struct peer_line {
    char engine[32];
    int varlen;
    long b, n, tokens;
    double ms;
} peer_line;

#define MAX_PEER_LINES 256

/* The value after " key=" in line (spaces after '=' skipped); NULL when absent. */
static const char *kv(const char *line, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p += kl) {
        if ((p == line || p[-1] == ' ') && p[kl] == '=') {
            p += kl + 1;
            while (*p == ' ')
                p++;
            return p;
        }
    }
    return NULL;
}

static int kv_long(const char *line, const char *key, long *out)
{
    const char *v = kv(line, key);
    char *end;
    if (!v)
        return 0;
    *out = strtol(v, &end, 10);
    return end != v && *out >= 0;
}

/* Read the peer lines of path; lines of another format (comments, fma_peak, cmp, floor and
 * our own xformd lines) are skipped. Returns the count or -1 (message on stderr). */
static int read_peers(const char *path, peer_line *pl, int cap)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;
    if (!f) {
        fprintf(stderr, "xformd-cli bench: --compare %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        peer_line p = { 0 };
        const char *ms = kv(line, "median_ms");
        char *end;
        int len = (int)strcspn(line, " \t\n");
        if (!ms || len == 0 || len >= (int)sizeof p.engine || line[0] == '#')
            continue;
        memcpy(p.engine, line, (size_t)len);
        if (!strcmp(p.engine, "xformd") || !strcmp(p.engine, "floor") ||
            !strcmp(p.engine, "compare"))
            continue;
        p.ms = strtod(ms, &end);
        if (end == ms || !(p.ms > 0) || !isfinite(p.ms))
            continue;
        p.varlen = !strncmp(line + len, " varlen ", 8);
        if (!kv_long(line, "b", &p.b) ||
            !(p.varlen ? kv_long(line, "tokens", &p.tokens) : kv_long(line, "n", &p.n)))
            continue;
        if (n == cap) {
            fprintf(stderr, "xformd-cli bench: --compare %s: more than %d lines; the rest are "
                            "ignored\n", path, cap);
            break;
        }
        pl[n++] = p;
    }
    fclose(f);
    return n;
}

/* The peer lines for one shape, beside our median. */
static void print_peers(const peer_line *pl, int np, int varlen, long b, long n, long tokens,
                        double our_ms, double flops, double peak)
{
    for (int i = 0; i < np; i++) {
        const peer_line *p = &pl[i];
        if (p->varlen != varlen || p->b != b || (varlen ? p->tokens != tokens : p->n != n))
            continue;
        if (varlen)
            printf("compare %s varlen b=%ld tokens=%ld median_ms=%.2f useful_GFLOP/s=%.1f "
                   "peak_frac=%.3f xformd_ms=%.2f peer/xformd_time=%.3f\n", p->engine, b,
                   tokens, p->ms, flops / p->ms * 1e-6, flops / p->ms * 1e-6 / peak, our_ms,
                   p->ms / our_ms);
        else
            printf("compare %s b=%3ld n=%4ld median_ms=%.2f GFLOP/s=%.1f peak_frac=%.3f "
                   "xformd_ms=%.2f peer/xformd_time=%.3f\n", p->engine, b, n, p->ms,
                   flops / p->ms * 1e-6, flops / p->ms * 1e-6 / peak, our_ms, p->ms / our_ms);
    }
}

typedef struct bench_case {
    const char *label;      /* NULL: uniform b×n */
    int32_t b, n;
} bench_case;

/* --profile: reps more forwards with the context's profiler on (xf_ctx_profile), then one
 * `profile` line per op class. Shares are of the threads' summed CPU time (thread-CPU clocks,
 * steady on a loaded machine): cpu = running the class's ops, wait_cpu = spinning at the
 * barriers after them, imbalance = per op the slowest minus the fastest thread's CPU, summed
 * (what the other threads would wait on an otherwise idle machine; exact for 2 threads);
 * eff = the class's useful FLOPs per op CPU-second against one core's FMA peak per CPU-second
 * (GEMM classes and dense attention; 0 for the others).
 * wall_busy/wall_wait are the same split of wall time (loaded: mostly preemption). A
 * `profile_total` line gives the sums, the pool wake-up share of wall time and the wall ms. */
static void profile_engine(xf_ctx_t *ctx, const xf_model_t *m, xf_plan_t *plan,
                           const xf_batch_t *batch, const xf_output_t *out, int reps,
                           const char *tag, const double *class_flops, double peak_cpu)
{
    xf_prof_t *pr = malloc(sizeof *pr);
    xf_diag_t diag = { 0 };
    int rc = pr ? xf_ctx_profile(ctx, 1) : -ENOMEM;

    for (int r = 0; rc == 0 && r < reps; r++)
        rc = xf_forward(ctx, m, plan, batch, out, &diag);
    xf_ctx_profile(ctx, 0);
    if (rc == 0)
        rc = xf_ctx_profile_get(ctx, pr);
    if (rc != 0 || pr->forwards == 0 || !(pr->wall_s > 0)) {
        fprintf(stderr, "xformd-cli bench: --profile: %s\n", xf_strerror(rc));
        free(pr);
        return;
    }
    double tw = pr->wall_s * pr->n_threads, tc = 0, s_cpu = 0, s_wait = 0, s_imb = 0;
    double s_wb = 0, s_ww = 0, start = 0, nf = (double)pr->forwards;
    for (int k = 0; k < XF_PROF_COUNT; k++)
        for (int t = 0; t < pr->n_threads; t++)
            tc += pr->busy_cpu_s[k][t] + pr->wait_cpu_s[k][t];
    if (!(tc > 0))
        tc = 1;
    for (int k = 0; k < XF_PROF_COUNT; k++) {
        double b = 0, bc = 0, w = 0, wc = 0, imb = pr->spread_cpu_s[k] * (pr->n_threads - 1);
        if (!pr->ops[k])
            continue;
        for (int t = 0; t < pr->n_threads; t++) {
            b += pr->busy_s[k][t];
            bc += pr->busy_cpu_s[k][t];
            w += pr->wait_s[k][t];
            wc += pr->wait_cpu_s[k][t];
        }
        s_cpu += bc;
        s_wait += wc;
        s_imb += imb;
        s_wb += b;
        s_ww += w;
        printf("profile %s class=%-5s ops/fwd=%3.0f cpu=%.3f wait_cpu=%.3f imbalance=%.3f "
               "eff=%.3f wall_busy=%.3f wall_wait=%.3f\n", tag, xf_prof_class_name(k),
               (double)pr->ops[k] / nf, bc / tc, wc / tc, imb / tc,
               bc > 0 && peak_cpu > 0 ? class_flops[k] * nf * 1e-9 / bc / peak_cpu : 0.0,
               b / tw, w / tw);
    }
    for (int t = 0; t < pr->n_threads; t++)
        start += pr->start_s[t];
    printf("profile_total %s threads=%d forwards=%lld wall_ms=%.2f cpu_ms=%.2f cpu=%.3f "
           "wait_cpu=%.3f imbalance=%.3f wall_busy=%.3f wall_wait=%.3f wakeup=%.4f\n", tag,
           pr->n_threads, (long long)pr->forwards, pr->wall_s * 1e3 / nf, tc * 1e3 / nf,
           s_cpu / tc, s_wait / tc, s_imb / tc, s_wb / tw, s_ww / tw, start / tw);
    free(pr);
}

/* Useful FLOPs of one forward per profile class (Linear layers and dense attention). */
static void class_flops(const xf_model_info_t *mi, const int32_t *lens, int32_t b,
                        double *f)
{
    double tokens = 0, sq = 0;
    for (int k = 0; k < XF_PROF_COUNT; k++)
        f[k] = 0;
    for (int32_t i = 0; i < b; i++) {
        tokens += lens[i];
        sq += (double)lens[i] * lens[i];
    }
    for (int l = 0; l < mi->n_layer; l++) {
        double da = (double)mi->layers[l].n_head * mi->layers[l].d_head;
        double d = mi->d_model, ff = mi->layers[l].d_ff;
        f[XF_PROF_QKV] += tokens * 2.0 * 3.0 * d * da;
        f[XF_PROF_OPROJ] += tokens * 2.0 * da * d;
        f[XF_PROF_FF1] += tokens * 2.0 * d * ff;
        f[XF_PROF_FF2] += tokens * 2.0 * d * ff;
        f[XF_PROF_ATTN] += sq * 4.0 * da;
    }
}

/* Useful FLOPs of one forward, as the issue defines them (Linear layers + dense attention
 * scores and weighted sums): the sum of the per-class figures above. */
static double model_flops(const xf_model_info_t *mi, const int32_t *lens, int32_t b)
{
    double f[XF_PROF_COUNT], sum = 0;
    class_flops(mi, lens, b, f);
    for (int k = 0; k < XF_PROF_COUNT; k++)
        sum += f[k];
    return sum;
}

/* Median wall ms of reps forwards; *cpu_per_run: process CPU seconds per forward (mean). */
static double time_engine(xf_ctx_t *ctx, const xf_model_t *m, xf_plan_t *plan,
                          const int32_t *lens, int32_t b, int reps, float *pooled, int *ok,
                          double *cpu_per_run, const char *profile_tag, double peak_cpu)
{
    const xf_model_info_t *mi = xf_model_info(m);
    int32_t *cu = malloc(((size_t)b + 1) * sizeof *cu);
    int32_t *ids;
    double *t = malloc((size_t)reps * sizeof *t), med = -1;
    xf_batch_t batch = { 0 };
    xf_output_t out = { 0 };
    xf_diag_t diag = { 0 };
    int rc;

    *ok = 0;
    cu[0] = 0;
    for (int32_t i = 0; i < b; i++)
        cu[i + 1] = cu[i] + lens[i];
    ids = malloc((size_t)cu[b] * sizeof *ids);
    /* ids above the special tokens (from 1000 when the vocabulary is that large) */
    int32_t lo = mi->vocab_size > 2000 ? 1000 : 0;
    for (int32_t i = 0; i < cu[b]; i++)
        ids[i] = lo + (int32_t)((uint32_t)i * 7919u % (uint32_t)(mi->vocab_size - lo));
    batch.n_seq = b;
    batch.cu_len = cu;
    batch.ids = ids;
    out.pooled = pooled;
    out.pooling = XF_POOL_CLS;
    rc = xf_plan_build(plan, &batch, xf_ctx_threads(ctx), &diag);
    if (rc == 0)
        rc = xf_ctx_reserve(ctx, plan);
    if (rc == 0)
        rc = xf_forward(ctx, m, plan, &batch, &out, &diag);   /* warm-up */
    double c0 = cpu_s();
    for (int r = 0; rc == 0 && r < reps; r++) {
        double t0 = now_ms();
        rc = xf_forward(ctx, m, plan, &batch, &out, &diag);
        t[r] = now_ms() - t0;
    }
    *cpu_per_run = (cpu_s() - c0) / reps;
    if (rc == 0 && profile_tag) {
        double cf[XF_PROF_COUNT];
        class_flops(mi, lens, b, cf);
        profile_engine(ctx, m, plan, &batch, &out, reps, profile_tag, cf, peak_cpu);
    }
    if (rc < 0)
        fprintf(stderr, "xformd-cli bench: %s\n", diag.msg[0] ? diag.msg : xf_strerror(rc));
    else {
        med = median(t, reps);
        *ok = 1;
    }
    free(t);
    free(ids);
    free(cu);
    return med;
}

/* cblas_sgemm alone on every Linear GEMM of one forward at M = tokens. */
static double time_floor(const xf_model_info_t *mi, int32_t tokens, int reps, float *x, float *y,
                         const float *w)
{
    double *t = malloc((size_t)reps * sizeof *t), med;
    const int d = mi->d_model;

    for (int r = -1; r < reps; r++) {
        double t0 = now_ms();
        for (int l = 0; l < mi->n_layer; l++) {
            int da = mi->layers[l].n_head * mi->layers[l].d_head, ff = mi->layers[l].d_ff;
            for (int g = 0; g < 3; g++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, da, d, 1.0f, x, d, w,
                            d, 0.0f, y, da);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, d, da, 1.0f, x, da, w,
                        da, 0.0f, y, d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, ff, d, 1.0f, x, d, w, d,
                        0.0f, y, ff);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, d, ff, 1.0f, y, ff, w,
                        ff, 0.0f, x, d);
        }
        if (r >= 0)
            t[r] = now_ms() - t0;
    }
    med = median(t, reps);
    free(t);
    return med;
}

/* name is one of list's comma-separated items. */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, name, n))
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static double gemm_flops(const xf_model_info_t *mi, double tokens)
{
    double f = 0;
    for (int l = 0; l < mi->n_layer; l++) {
        double da = (double)mi->layers[l].n_head * mi->layers[l].d_head;
        f += tokens * 2.0 * (4.0 * mi->d_model * da + 2.0 * mi->d_model * mi->layers[l].d_ff);
    }
    return f;
}

int cmd_bench(int argc, char **argv)
{
    static const int32_t varlen[16] = { 42, 153, 224, 213, 203, 24, 73, 38,
                                        134, 202, 123, 128, 174, 105, 209, 61 };
    static const bench_case cases[] = { { NULL, 1, 16 },  { NULL, 1, 128 }, { NULL, 1, 512 },
                                        { NULL, 8, 128 }, { NULL, 32, 128 },
                                        { "varlen", 16, 0 } };
    cli_common c = { 0 };
    int reps = 5, floor_on = 1, reexec = 1, quick = 0, n_peer = 0, profile = 0;
    const char *compare = NULL, *only = NULL;
    peer_line *peers = NULL;
    xf_cpu_info_t ci;
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    char rev[64];
    double peak, peak_cpu, pk[3];
    xf_model_t *m;
    const xf_model_info_t *mi;
    xf_ctx_t *ctx = NULL;
    xf_ctx_opts_t co = { 0 };
    xf_plan_t *plan = NULL;
    float *pooled, *fx = NULL, *fy = NULL, *fw = NULL;
    int rc;

    c.threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (cli_common_opt(argc, argv, &i, &c))
            continue;
        if ((v = cli_opt(argc, argv, &i, "--reps")))
            reps = (int)cli_int("--reps", v, 1, 1000);
        else if ((v = cli_opt(argc, argv, &i, "--compare")))
            compare = v;
        else if (!strcmp(argv[i], "--no-floor"))
            floor_on = 0;
        else if (!strcmp(argv[i], "--no-reexec"))
            reexec = 0;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--profile"))
            profile = 1;
        else if ((v = cli_opt(argc, argv, &i, "--only")))
            only = v;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: xformd-cli bench [--model DIR] [--threads N] [--reps N] [--quick] "
                   "[--no-floor] [--no-reexec] [--compare FILE] [--quantize int8|bf16]\n"
                   "       [--only b1n16,b1n512,varlen,...] [--profile]\n"
                   "Engine benchmark on the BERT-base shape (default: the demo model), 2 threads."
                   "\nPrints fma_peak, one `xformd` line per shape and `floor` lines (cblas_sgemm"
                   " alone\non the same GEMMs). When OPENBLAS_CORETYPE forces a kernel below the "
                   "CPU's best ISA,\nthe bench re-executes itself without it (--no-reexec keeps "
                   "it). --compare FILE prints, under\neach shape, a `compare` line for every "
                   "peer line of FILE for that shape (the\nformat of ../shared/peers/: "
                   "\"<engine> b=.. n=.. median_ms=..\" and \"<engine> varlen b=..\n"
                   "tokens=.. maxlen=.. median_ms=..\"), with its fraction of this run's "
                   "fma_peak.\n"
                   "--only runs only the listed shapes; --profile prints, per shape, the share of"
                   " the\nthreads' time per op class (busy, waiting at barriers, imbalance).\n");
            return 0;
        } else {
            fprintf(stderr, "xformd-cli bench: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (compare) {
        peers = malloc(MAX_PEER_LINES * sizeof *peers);
        if (!peers || (n_peer = read_peers(compare, peers, MAX_PEER_LINES)) < 0) {
            free(peers);
            return 2;
        }
        if (n_peer == 0)
            fprintf(stderr, "xformd-cli bench: --compare %s: no peer lines in it\n", compare);
    }
    xf_cpu_get_info(&ci);
    /* OpenBLAS picks its kernel when it loads: from OPENBLAS_CORETYPE, else from cpuid — and an
     * unrecognised CPU model (common in VMs) falls back to an SSE3 core ("Prescott"). When the
     * core it runs is below the CPU's AVX-512, re-execute once with its AVX-512 core named, so
     * the floor lines compare against the fastest correct BLAS path. */
    if (reexec && ci.has_avx512f && !ci.blas_core_avx512 &&
        !getenv("XF_BENCH_REEXEC")) {
        const char *want = ci.has_avx512bf16 ? "Cooperlake" : "SkylakeX";
        fprintf(stderr, "xformd-cli bench: OpenBLAS runs its %s kernel (OPENBLAS_CORETYPE=%s) on "
                        "an AVX-512 CPU; re-executing with OPENBLAS_CORETYPE=%s\n",
                ci.blas_core, coretype ? coretype : "unset", want);
        setenv("XF_BENCH_REEXEC", "1", 1);
        setenv("OPENBLAS_CORETYPE", want, 1);
        unsetenv("OPENBLAS_L2_SIZE");
        execv("/proc/self/exe", argv - 1);
        fprintf(stderr, "xformd-cli bench: re-exec failed; continuing\n");
    }
    git_rev(rev, sizeof rev);
    printf("# xformd-bench cpu=\"%s\" isa=%s isa_max=%s blas_core=%s gemm_path=%s threads=%d "
           "rev=%s openblas_coretype=%s cores=%d quantize=%s\n", ci.brand, ci.isa, ci.isa_max,
           ci.blas_core, ci.gemm_path, c.threads, rev,
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset", ci.n_cores,
           c.quantize ? c.quantize : "none");
    if (c.threads > 0 && c.threads != ci.n_cores)
        fprintf(stderr, "xformd-cli bench: note: %d threads on %d cores\n", c.threads,
                ci.n_cores);
    for (int i = 0; i < 3; i++)
        pk[i] = xf_cpu_fma_peak(c.threads, 200);
    peak = median(pk, 3);
    /* one core's peak per CPU-second: the steadiest yardstick on a shared machine, where
     * the wall-clock peak and the engine get different shares of the cores */
    for (int i = 0; i < 3; i++) {
        double w0 = now_ms(), c0 = cpu_s(), g = xf_cpu_fma_peak(1, 200);
        double used = cpu_s() - c0;
        pk[i] = used > 0 ? g * (now_ms() - w0) * 1e-3 / used : 0.0;
    }
    peak_cpu = median(pk, 3);
    printf("fma_peak GFLOP/s=%.1f threads=%d per_cpu_second=%.1f\n", peak, c.threads, peak_cpu);
    fflush(stdout);

    m = cli_open_model(&c);
    mi = xf_model_info(m);
    co.n_threads = c.threads;
    if ((rc = xf_ctx_create(&co, &ctx)) < 0 || (rc = xf_plan_create(m, &plan)) < 0) {
        fprintf(stderr, "xformd-cli bench: %s\n", xf_strerror(rc));
        return 1;
    }
    pooled = malloc(64 * (size_t)mi->d_model * sizeof *pooled);
    if (floor_on) {
        size_t big = 4096 * (size_t)4 * (size_t)mi->d_model;
        fx = calloc(big, sizeof *fx);
        fy = calloc(big, sizeof *fy);
        fw = calloc(16 * (size_t)mi->d_model * (size_t)mi->d_model, sizeof *fw);
        for (size_t i = 0; i < big; i++)
            fx[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < 16 * (size_t)mi->d_model * (size_t)mi->d_model; i++)
            fw[i] = (float)((i * 40503u) % 1000) * 1e-4f - 0.05f;
        openblas_set_num_threads(c.threads > 0 ? c.threads : ci.n_cores);
    }
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bench_case *bc = &cases[k];
        int32_t lens[64];
        int32_t b = bc->b, tokens = 0, maxlen = 0;
        double ms, fl, cpu_run = 0;
        int ok, r = quick ? 2 : reps;

        for (int32_t i = 0; i < b; i++) {
            lens[i] = bc->label ? varlen[i] : bc->n;
            if (lens[i] > mi->max_positions)
                lens[i] = mi->max_positions;
            tokens += lens[i];
            maxlen = lens[i] > maxlen ? lens[i] : maxlen;
        }
        if (quick && tokens > 2048)
            continue;
        char tag[32];
        if (bc->label)
            snprintf(tag, sizeof tag, "%s", bc->label);
        else
            snprintf(tag, sizeof tag, "b%dn%d", (int)b, (int)bc->n);
        if (only && !in_list(only, tag))
            continue;
        ms = time_engine(ctx, m, plan, lens, b, r, pooled, &ok, &cpu_run,
                         profile ? tag : NULL, peak_cpu);
        if (!ok)
            continue;
        fl = model_flops(mi, lens, b);
        if (bc->label)
            printf("xformd %s b=%d tokens=%d maxlen=%d median_ms=%.2f tok/s=%.0f GFLOP/s=%.1f "
                   "peak_frac=%.3f cpu_frac=%.3f\n", bc->label, b, tokens, maxlen, ms,
                   tokens / ms * 1e3, fl / ms * 1e-6, fl / ms * 1e-6 / peak,
                   cpu_run > 0 ? fl * 1e-9 / cpu_run / peak_cpu : 0.0);
        else
            printf("xformd b=%3d n=%4d median_ms=%.2f tok/s=%.0f GFLOP/s=%.1f peak_frac=%.3f "
                   "cpu_frac=%.3f\n", b, bc->n, ms, tokens / ms * 1e3, fl / ms * 1e-6,
                   fl / ms * 1e-6 / peak, cpu_run > 0 ? fl * 1e-9 / cpu_run / peak_cpu : 0.0);
        print_peers(peers, n_peer, bc->label != NULL, b, bc->n, tokens, ms, fl, peak);
        fflush(stdout);
        if (floor_on) {
            double fms = time_floor(mi, tokens, r, fx, fy, fw);
            double gf = gemm_flops(mi, tokens);
            if (bc->label)
                printf("floor %s tokens=%d cblas_ms=%.2f GFLOP/s=%.1f peak_frac=%.3f "
                       "engine/cblas_gemm_time=%.3f\n", bc->label, tokens, fms, gf / fms * 1e-6,
                       gf / fms * 1e-6 / peak, ms / fms);
            else
                printf("floor b=%3d n=%4d cblas_ms=%.2f GFLOP/s=%.1f peak_frac=%.3f "
                       "engine/cblas_gemm_time=%.3f\n", b, bc->n, fms, gf / fms * 1e-6,
                       gf / fms * 1e-6 / peak, ms / fms);
            fflush(stdout);
        }
    }
    free(fx);
    free(fy);
    free(fw);
    free(peers);
    free(pooled);
    xf_plan_free(plan);
    xf_ctx_free(ctx);
    xf_model_free(m);
    return 0;
}
