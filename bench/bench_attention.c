/* bench_attention: the attention-variant benchmark of issue 5 / ATTENTION.md §27. For every
 * variant that runs without extra weights, at n in {512, 1024, 2048, 4096} (BERT-base heads,
 * one sequence, the engine pool): attention time through the vtable (plan, prepare, forward),
 * the plan's workspace, speedup and relative Frobenius error vs dense on the same Q, K, V; then
 * the whole-model time on a demo model and the cosine of mean-pooled embeddings vs dense.
 * Every measurement runs in a forked child, so a crash or hang is reported, not fatal. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xformd/xformd.h>

#include "attention/registry.h"
#include "engine/pool.h"
#include "source_rev.h"

#define D_MODEL 768
#define N_HEAD 12
#define D_HEAD 64
#define MAX_NS 8
#define MAX_VARIANTS 64

/* The variants and the parameters used for long inputs (ATTENTION.md §26.3 names). */
typedef struct vspec {
    const char *name;
    const char *json;
} vspec;

static const vspec g_specs[] = {
    { "dense", "{\"variant\":\"dense\"}" },
    { "blockwise", "{\"variant\":\"blockwise\",\"block\":128}" },
    { "local1d", "{\"variant\":\"local1d\",\"block\":128,\"halo\":64}" },
    { "window", "{\"variant\":\"window\",\"window\":128}" },
    { "dilated", "{\"variant\":\"dilated\",\"window\":128,"
                 "\"dilation\":[1,1,1,1,1,1,1,1,2,2,4,4]}" },
    { "strided", "{\"variant\":\"strided\"}" },
    { "fixed", "{\"variant\":\"fixed\",\"block\":128,\"summary\":8}" },
    { "axial", "{\"variant\":\"axial\"}" },
    { "longformer", "{\"variant\":\"longformer\",\"window\":128,\"global\":\"cls\"}" },
    { "etc", "{\"variant\":\"etc\",\"radius\":128}" },
    { "bigbird", "{\"variant\":\"bigbird\"}" },
    { "reformer", "{\"variant\":\"reformer\",\"n_hashes\":4,\"chunk\":64}" },
    { "routing", "{\"variant\":\"routing\"}" },
    { "sinkhorn", "{\"variant\":\"sinkhorn\",\"block\":64}" },
    { "isab", "{\"variant\":\"isab\",\"m\":64}" },
    { "memcomp", "{\"variant\":\"memcomp\",\"rate\":16}" },
    { "linformer", "{\"variant\":\"linformer\",\"k\":256}" },
    { "nystrom", "{\"variant\":\"nystrom\",\"landmarks\":64}" },
    { "linear", "{\"variant\":\"linear\"}" },
    { "performer", "{\"variant\":\"performer\",\"features\":256}" },
    { "rfa", "{\"variant\":\"rfa\",\"features\":128}" },
    /* HDP (§25): the block threshold swept, head pruning, the approximation. */
    { "hdp_rho0", "{\"variant\":\"hdp\",\"rho_B\":0}" },
    { "hdp_rho0.5", "{\"variant\":\"hdp\",\"rho_B\":0.5}" },
    { "hdp", "{\"variant\":\"hdp\",\"rho_B\":1}" },
    { "hdp_rho1.5", "{\"variant\":\"hdp\",\"rho_B\":1.5}" },
    { "hdp_rho1.5_t2", "{\"variant\":\"hdp\",\"rho_B\":1.5,\"tile_rows\":2}" },
    { "hdp_rho2", "{\"variant\":\"hdp\",\"rho_B\":2}" },
    { "hdp_rho2_t2", "{\"variant\":\"hdp\",\"rho_B\":2,\"tile_rows\":2}" },
    { "hdp_rho1_tau0.5", "{\"variant\":\"hdp\",\"rho_B\":1,\"tau_H\":0.5}" },
    { "hdp_rho1_approx", "{\"variant\":\"hdp\",\"rho_B\":1,\"approx\":true}" },
    /* Calibration, not a variant: every token attends only itself (output = v_i). A variant
     * whose error is near this one's keeps no more context than no attention at all. */
    { "self_only", "{\"variant\":\"blockwise\",\"block\":1}" },
};
#define N_SPECS ((int)(sizeof g_specs / sizeof g_specs[0]))

typedef struct opts {
    int nth, reps, layers, model_on, timeout_s;
    int ns[MAX_NS], n_ns, maxn;
    double budget_ms, logit_std, qk_corr, pos, corr_len;
    uint64_t seed;
    const char *model_dir, *tsv, *only;
} opts;

/* One measurement's result, in shared memory written by the child. */
typedef struct result {
    int rc;                    /* 0 ok, else an engine code */
    int reps;
    double ms;                 /* median wall time */
    double cpu_ms;             /* median process CPU time (all threads), attention only */
    double pair_ms, pair_cpu_ms;   /* dense timed alternately with the variant (0: none) */
    double rel_err;            /* attention: vs dense, input set 0 ("spread") */
    double rel_err2;           /* attention: vs dense, input set 1 ("local") */
    double cos;                /* model: pooled cosine vs dense */
    size_t ws_bytes;
    int32_t n_items, fallbacks;
    long nonfinite;
    double block_sp, head_sp;  /* pruned fractions of the warm-up run (hdp), -1: none */
    char msg[256];
} result;

/* Inputs for the largest n (prefixes give the smaller ones), token-major [t][h][d]. */
typedef struct inputs {
    int maxn;
    float *q, *k, *v;
} inputs;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* CPU time of this process, all threads: the work done, whatever else runs on the machine. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
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

/* SplitMix64 and Box–Muller normals (bench inputs only). */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rnd_normal(uint64_t *s)
{
    double u1, u2;
    *s += 0x9E3779B97F4A7C15ull;
    u1 = (double)(mix64(*s) >> 11) * 0x1p-53;
    *s += 0x9E3779B97F4A7C15ull;
    u2 = (double)(mix64(*s) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

static void *xmalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64)) {
        fprintf(stderr, "bench_attention: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Token vectors, two sets. "spread" (kind 0): x_t = (u_t + pos·p_t)/sqrt(1+pos²), u_t a random
 * unit-ish Gaussian vector, p_t a unit sinusoidal position code (BERT-like word + position
 * embedding). "local" (kind 1): x_t an AR(1) walk, x_t = φ·x_{t-1} + sqrt(1-φ²)·u_t with
 * φ = exp(-1/corr_len) (neighbouring tokens share a topic). Per head Q = x·Wq, K = x·Wk,
 * V = x·Wv with Gaussian W and Wk = ρ·Wq + sqrt(1-ρ²)·W' (queries and keys of the same token
 * correlate, as in trained heads); Q is rescaled so the logits s·q·k have standard deviation
 * logit_std over random (i, j) pairs. */
static void make_inputs(const opts *o, int kind, inputs *in)
{
    size_t n = (size_t)o->maxn, da = (size_t)N_HEAD * D_HEAD;
    float *x = xmalloc(n * D_MODEL * sizeof *x);
    float *w = xmalloc((size_t)D_MODEL * da * sizeof *w);
    float *wk = xmalloc((size_t)D_MODEL * da * sizeof *wk);
    double c = 1.0 / sqrt(1.0 + o->pos * o->pos), rho = o->qk_corr, acc = 0, acc2 = 0;
    uint64_t s = o->seed * 0x9E3779B97F4A7C15ull + 12345 + (uint64_t)kind * 777;
    double phi = exp(-1.0 / o->corr_len);
    const double sc = 1.0 / sqrt((double)D_HEAD);
    int samples = 0;

    in->maxn = o->maxn;
    in->q = xmalloc(n * da * sizeof(float));
    in->k = xmalloc(n * da * sizeof(float));
    in->v = xmalloc(n * da * sizeof(float));
    for (size_t t = 0; t < n; t++)
        for (int i = 0; i < D_MODEL; i++) {
            double ang = (double)t / pow(10000.0, (double)(i & ~1) / D_MODEL);
            double p = ((i & 1) ? cos(ang) : sin(ang)) / sqrt(D_MODEL / 2.0);
            double u = rnd_normal(&s) / sqrt((double)D_MODEL);
            if (kind == 0)
                x[t * D_MODEL + (size_t)i] = (float)((u + o->pos * p) * c);
            else if (t == 0)
                x[(size_t)i] = (float)u;
            else
                x[t * D_MODEL + (size_t)i] = (float)(phi * x[(t - 1) * D_MODEL + (size_t)i] +
                                                     sqrt(1 - phi * phi) * u);
        }
    /* Wq with unit entries, Wk correlated, Wv scaled so V entries are ~N(0,1). */
    for (size_t i = 0; i < (size_t)D_MODEL * da; i++) {
        double a = rnd_normal(&s), b = rnd_normal(&s);
        w[i] = (float)a;
        wk[i] = (float)(rho * a + sqrt(1.0 - rho * rho) * b);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)da, D_MODEL, 1.0f, x,
                D_MODEL, w, (int)da, 0.0f, in->q, (int)da);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)da, D_MODEL, 1.0f, x,
                D_MODEL, wk, (int)da, 0.0f, in->k, (int)da);
    for (size_t i = 0; i < (size_t)D_MODEL * da; i++)
        w[i] = (float)rnd_normal(&s);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)da, D_MODEL, 1.0f, x,
                D_MODEL, w, (int)da, 0.0f, in->v, (int)da);
    /* Logit standard deviation over random pairs (every head). */
    for (int r = 0; r < 20000; r++) {
        size_t i, j;
        int h;
        double l = 0;
        s += 0x9E3779B97F4A7C15ull;
        i = mix64(s) % n;
        j = mix64(s ^ 0x5555) % n;
        h = (int)(mix64(s ^ 0xAAAA) % N_HEAD);
        for (int e = 0; e < D_HEAD; e++)
            l += (double)in->q[i * da + (size_t)h * D_HEAD + (size_t)e] *
                 in->k[j * da + (size_t)h * D_HEAD + (size_t)e];
        l *= sc;
        acc += l;
        acc2 += l * l;
        samples++;
    }
    {
        double mean = acc / samples, sd = sqrt(acc2 / samples - mean * mean);
        float f = (float)(o->logit_std / sd);
        for (size_t i = 0; i < n * da; i++)
            in->q[i] *= f;
    }
    {   /* V rms 1 */
        double ss = 0;
        float f;
        for (size_t i = 0; i < n * da; i++)
            ss += (double)in->v[i] * in->v[i];
        f = (float)(1.0 / sqrt(ss / (double)(n * da)));
        for (size_t i = 0; i < n * da; i++)
            in->v[i] *= f;
    }
    free(x);
    free(w);
    free(wk);
}

/* Dense attention statistics on a sample of queries at length n (double, two-pass softmax):
 * attention mass within ±128 positions, on [CLS] (key 0), on the query itself, and the
 * effective number of keys exp(entropy). Describes the inputs next to the errors. */
static void input_stats(const inputs *in, int n, double st[4])
{
    size_t da = (size_t)N_HEAD * D_HEAD;
    double *l = xmalloc((size_t)n * sizeof *l);
    int cnt = 0;

    memset(st, 0, 4 * sizeof *st);
    for (int h = 0; h < N_HEAD; h++)
        for (int qi = 0; qi < 16; qi++) {
            int i = (int)(((uint64_t)qi * 2654435761u + (uint64_t)h * 97) % (uint64_t)n);
            double mx = -INFINITY, sum = 0, ent = 0, loc = 0;
            for (int j = 0; j < n; j++) {
                double a = 0;
                for (int e = 0; e < D_HEAD; e++)
                    a += (double)in->q[(size_t)i * da + (size_t)h * D_HEAD + (size_t)e] *
                         in->k[(size_t)j * da + (size_t)h * D_HEAD + (size_t)e];
                l[j] = a / sqrt((double)D_HEAD);
                if (l[j] > mx)
                    mx = l[j];
            }
            for (int j = 0; j < n; j++)
                sum += (l[j] = exp(l[j] - mx));
            for (int j = 0; j < n; j++) {
                double p = l[j] / sum;
                if (p > 0)
                    ent -= p * log(p);
                if (abs(i - j) <= 128)
                    loc += p;
            }
            st[0] += loc;
            st[1] += l[0] / sum;
            st[2] += l[i] / sum;
            st[3] += exp(ent);
            cnt++;
        }
    for (int t = 0; t < 4; t++)
        st[t] /= cnt;
    free(l);
}

/* ---- attention through the vtable, on the engine pool ---- */

typedef struct attn_job {
    const xf_attn_t *a;
    const xf_attn_shape *sh;
    const xf_attn_io *io;
    const xf_attn_plan *pl;
    char *ws_shared, *ws_thr;
    size_t per;
    xf_pool_t *pool;
    int rc[64];
} attn_job;

static void attn_fn(void *arg, int ith, int nth)
{
    attn_job *j = arg;
    const xf_attn_vtbl *vt = j->a->vt;
    int rc = 0;

    if (vt->ops->prepare) {   /* as the engine: thread 0 (or all) prepares, everyone waits */
        if (vt->ops->prepare_par)
            rc = vt->ops->prepare_par(j->a->params, j->sh, j->io, j->pl, j->ws_shared, ith, nth);
        else if (ith == 0)
            rc = vt->ops->prepare(j->a->params, j->sh, j->io, j->pl, j->ws_shared);
        xf_pool_barrier(j->pool);
    }
    if (!rc)
        rc = xf_at_forward(vt, j->a->params, j->sh, j->io, j->pl, j->ws_shared,
                         j->ws_thr ? j->ws_thr + (size_t)ith * j->per : NULL, ith, nth);
    if (ith < 64)
        j->rc[ith] = rc;
}

/* Head-major planes of the first n tokens, the scale folded into q as the engine's QKV split
 * does. */
static void fill_planes(const inputs *in, int n, float sc, float *q, float *k, float *v)
{
    size_t da = (size_t)N_HEAD * D_HEAD, plane = (size_t)n * D_HEAD;
    for (int h = 0; h < N_HEAD; h++)
        for (int i = 0; i < n; i++)
            for (int e = 0; e < D_HEAD; e++) {
                size_t src = (size_t)i * da + (size_t)h * D_HEAD + (size_t)e;
                size_t dst = (size_t)h * plane + (size_t)i * D_HEAD + (size_t)e;
                q[dst] = in->q[src] * sc;
                k[dst] = in->k[src];
                v[dst] = in->v[src];
            }
}

/* Relative Frobenius error of out against ref (when given) over cnt values; counts
 * non-finite outputs. */
static double out_error(const float *out, const float *ref, size_t cnt, long *bad)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (!isfinite(out[i])) {
            (*bad)++;
            continue;
        }
        if (ref) {
            double dlt = (double)out[i] - ref[i];
            num += dlt * dlt;
            den += (double)ref[i] * ref[i];
        }
    }
    return ref && den > 0 ? sqrt(num / den) : 0;
}

/* Plan a selection for the shape and set up its job (workspace allocated here). */
static int setup_job(const opts *o, const xf_attn_t *a, const xf_attn_shape *sh,
                     const xf_attn_io *io, xf_attn_plan *pl, xf_pool_t *pool, attn_job *job)
{
    size_t per, total;
    char *ws = NULL;
    int rc;

    memset(pl, 0, sizeof *pl);
    rc = xf_at_plan(a->vt, a->params, sh, o->nth, pl);
    if (rc)
        return rc;
    per = (pl->ws_per_thread + 63) / 64 * 64;
    total = (pl->ws_shared + 63) / 64 * 64 + (size_t)o->nth * per;
    if (total)
        ws = xmalloc(total);
    memset(job, 0, sizeof *job);
    job->a = a;
    job->sh = sh;
    job->io = io;
    job->pl = pl;
    job->ws_shared = ws;
    job->ws_thr = ws ? ws + (pl->ws_shared + 63) / 64 * 64 : NULL;
    job->per = per;
    job->pool = pool;
    return 0;
}

static int job_rc(const opts *o, const attn_job *job)
{
    for (int i = 0; i < o->nth && i < 64; i++)
        if (job->rc[i])
            return job->rc[i];
    return 0;
}

/* One timed run: wall and CPU milliseconds. */
static int timed_run(const opts *o, xf_pool_t *pool, attn_job *job, double *wall, double *cpu)
{
    double c0 = cpu_ms(), t0 = now_ms();
    xf_pool_run(pool, attn_fn, job);
    *wall = now_ms() - t0;
    *cpu = cpu_ms() - c0;
    return job_rc(o, job);
}

/* Child: time one variant at length n on input set 0 and write its output to out
 * ([n][h][d]); then one untimed forward on input set 1 into out2. With references, the
 * relative Frobenius errors against them. With pair (dense), every timed run of the variant
 * follows a timed run of pair on the same inputs, so the ratio compares runs made seconds
 * apart, not minutes apart on a machine whose load drifts. */
static void run_attn(const opts *o, const inputs *ins, const xf_attn_t *a, const xf_attn_t *pair,
                     int n, float *out, float *out2, const float *ref, const float *ref2,
                     result *r)
{
    size_t da = (size_t)N_HEAD * D_HEAD, plane = (size_t)n * D_HEAD;
    float *q = xmalloc(3 * (size_t)N_HEAD * plane * sizeof *q);
    float *k = q + (size_t)N_HEAD * plane, *v = k + (size_t)N_HEAD * plane;
    int32_t cu[2] = { 0, n };
    const float sc = 1.0f / sqrtf((float)D_HEAD);
    xf_attn_shape sh;
    xf_attn_io io;
    xf_attn_io io2;
    xf_attn_plan pl, pl2;
    attn_job job, job2;
    xf_pool_t *pool = NULL;
    double t[64], tc[64], t2[64], tc2[64], warm, cwarm, w2 = 0, c2;
    float *outp = NULL;
    int rc, reps, first;

    fill_planes(&ins[0], n, sc, q, k, v);
    memset(&sh, 0, sizeof sh);
    sh.n_seq = 1;
    sh.cu_len = cu;
    sh.n_tokens = n;
    sh.n_head = N_HEAD;
    sh.d_head = D_HEAD;
    memset(&io, 0, sizeof io);
    io.q = q;
    io.k = k;
    io.v = v;
    io.q_scale = sc;
    io.scale = sc;
    io.out = out;
    io2 = io;
    if ((rc = xf_pool_create(o->nth, &pool)) < 0) {
        r->rc = rc;
        snprintf(r->msg, sizeof r->msg, "pool: %s", xf_strerror(rc));
        return;
    }
    memset(&job2, 0, sizeof job2);
    rc = setup_job(o, a, &sh, &io, &pl, pool, &job);
    if (!rc && pair) {
        outp = xmalloc((size_t)n * da * sizeof *outp);
        io2.out = outp;
        rc = setup_job(o, pair, &sh, &io2, &pl2, pool, &job2);
        if (!rc)
            rc = timed_run(o, pool, &job2, &w2, &c2);   /* the pair's warm-up */
    }
    if (rc) {
        r->rc = rc;
        snprintf(r->msg, sizeof r->msg, "plan: %s", xf_strerror(rc));
        xf_pool_free(pool);
        free(job.ws_shared);
        free(job2.ws_shared);
        free(outp);
        free(q);
        return;
    }
    r->ws_bytes = pl.ws_shared + (size_t)o->nth * pl.ws_per_thread;
    r->n_items = pl.n_items;
    r->fallbacks = pl.dense_fallbacks;
    memset(out, 0xff, (size_t)n * da * sizeof *out);   /* NaN: unwritten outputs show */
    xf_attn_prune_stats_t ps0, ps1;
    xf_attn_prune_stats(&ps0);
    rc = timed_run(o, pool, &job, &warm, &cwarm);      /* warm-up */
    xf_attn_prune_stats(&ps1);
    r->block_sp = r->head_sp = -1;
    if (ps1.blocks > ps0.blocks && ps1.heads > ps0.heads) {
        r->block_sp = (double)(ps1.blocks_pruned - ps0.blocks_pruned) /
                      (double)(ps1.blocks - ps0.blocks);
        r->head_sp = (double)(ps1.heads_pruned - ps0.heads_pruned) /
                     (double)(ps1.heads - ps0.heads);
    }
    /* Median of >= 3 runs after the warm-up; a run longer than the budget is its own
     * warm-up (page faults and cache misses are noise at that size): median of 2 then. */
    reps = warm > 0 ? (int)(o->budget_ms / (warm + (pair ? w2 : 0))) : o->reps;
    reps = reps < 3 ? 3 : reps > o->reps ? o->reps : reps;
    first = 0;
    if (warm > o->budget_ms) {
        t[0] = warm;
        tc[0] = cwarm;
        first = 1;
        reps = 2;
    }
    for (int i = 0; !rc && i < reps; i++) {
        if (pair)
            rc = timed_run(o, pool, &job2, &t2[i], &tc2[i]);
        if (!rc && i >= first)
            rc = timed_run(o, pool, &job, &t[i], &tc[i]);
    }
    if (!rc) {
        r->reps = reps;
        r->ms = median(t, reps);
        r->cpu_ms = median(tc, reps);
        if (pair) {
            r->pair_ms = median(t2, reps);
            r->pair_cpu_ms = median(tc2, reps);
        }
        r->rel_err = out_error(out, ref, (size_t)n * da, &r->nonfinite);
        /* The second input set: same plan and workspace, one untimed run. */
        fill_planes(&ins[1], n, sc, q, k, v);
        io.out = out2;
        memset(out2, 0xff, (size_t)n * da * sizeof *out2);
        xf_pool_run(pool, attn_fn, &job);
        rc = job_rc(o, &job);
        if (!rc)
            r->rel_err2 = out_error(out2, ref2, (size_t)n * da, &r->nonfinite);
    }
    xf_pool_free(pool);
    free(job.ws_shared);
    free(job2.ws_shared);
    free(outp);
    free(q);
    if (rc) {
        r->rc = rc;
        snprintf(r->msg, sizeof r->msg, "forward: %s", xf_strerror(rc));
    }
}

/* ---- the whole model through the public API ---- */

/* One model with its default attention from JSON (opts.attention), planned for the batch. */
typedef struct model_run {
    xf_model_t *m;
    xf_plan_t *plan;
} model_run;

static int model_open(const opts *o, const char *json, xf_ctx_t *ctx, const xf_batch_t *batch,
                      model_run *mr, xf_diag_t *diag)
{
    xf_load_opts_t lo = { 0 };
    int rc;

    lo.attention = json;
    rc = xf_model_load(o->model_dir, &lo, &mr->m, diag);
    if (rc == 0)
        rc = xf_plan_create(mr->m, &mr->plan);
    if (rc == 0)
        rc = xf_plan_build(mr->plan, batch, o->nth, diag);
    if (rc == 0)
        rc = xf_ctx_reserve(ctx, mr->plan);
    return rc;
}

static void model_close(model_run *mr)
{
    xf_plan_free(mr->plan);
    xf_model_free(mr->m);
}

static int model_timed(xf_ctx_t *ctx, const model_run *mr, const xf_batch_t *batch,
                       const xf_output_t *out, double *ms, xf_diag_t *diag)
{
    double t0 = now_ms();
    int rc = xf_forward(ctx, mr->m, mr->plan, batch, out, diag);
    *ms = now_ms() - t0;
    return rc;
}

/* Child: the whole demo model with attention json (pooled and hidden outputs kept). With
 * pair_json (dense), every timed run follows a timed run of the pair model, as run_attn. */
static void run_model(const opts *o, const char *json, const char *pair_json, int n,
                      float *pooled, float *hidden, result *r)
{
    model_run mv = { 0 }, md = { 0 };
    xf_ctx_t *ctx = NULL;
    xf_ctx_opts_t co = { 0 };
    xf_diag_t diag = { 0 };
    xf_batch_t batch = { 0 };
    xf_output_t out = { 0 }, outd = { 0 };
    int32_t cu[2] = { 0, n }, *ids = xmalloc((size_t)n * sizeof *ids);
    float *pd = xmalloc(D_MODEL * sizeof *pd);
    double t[64], t2[64], warm = 0, w2 = 0;
    int rc, reps, first;

    /* Token ids as cmd_bench: a fixed pseudo-random walk over the demo vocabulary. */
    for (int32_t i = 0; i < n; i++)
        ids[i] = 1000 + (int32_t)((uint32_t)i * 7919u % (uint32_t)(30522 - 1000));
    batch.n_seq = 1;
    batch.cu_len = cu;
    batch.ids = ids;
    out.pooling = XF_POOL_MEAN;
    out.normalize = 0;
    out.pooled = pooled;
    out.hidden = hidden;
    outd.pooling = XF_POOL_MEAN;
    outd.normalize = 0;
    outd.pooled = pd;
    co.n_threads = o->nth;
    rc = xf_ctx_create(&co, &ctx);
    if (rc == 0)
        rc = model_open(o, json, ctx, &batch, &mv, &diag);
    if (rc == 0 && pair_json)
        rc = model_open(o, pair_json, ctx, &batch, &md, &diag);
    if (rc == 0 && pair_json)
        rc = model_timed(ctx, &md, &batch, &outd, &w2, &diag);   /* warm-ups */
    if (rc == 0)
        rc = model_timed(ctx, &mv, &batch, &out, &warm, &diag);
    /* Whole-model runs get twice the budget; a run longer than that is the only sample. */
    reps = warm > 0 ? (int)(2 * o->budget_ms / (warm + w2)) : o->reps;
    reps = reps < 1 ? 1 : reps > o->reps ? o->reps : reps;
    first = 0;
    if (warm > 2 * o->budget_ms) {
        t[0] = warm;
        first = 1;
        reps = 1;
    }
    for (int i = 0; rc == 0 && i < reps; i++) {
        if (pair_json)
            rc = model_timed(ctx, &md, &batch, &outd, &t2[i], &diag);
        if (rc == 0 && i >= first)
            rc = model_timed(ctx, &mv, &batch, &out, &t[i], &diag);
    }
    if (rc) {
        r->rc = rc;
        snprintf(r->msg, sizeof r->msg, "model: %.240s",
                 diag.msg[0] ? diag.msg : xf_strerror(rc));
    } else {
        r->reps = reps;
        r->ms = median(t, reps);
        if (pair_json)
            r->pair_ms = median(t2, reps);
    }
    model_close(&mv);
    if (pair_json)
        model_close(&md);
    xf_ctx_free(ctx);
    free(pd);
    free(ids);
}

/* ---- fork wrapper ---- */

enum { JOB_ATTN, JOB_MODEL };

typedef struct job {
    int kind, n;
    const xf_attn_t *a;        /* JOB_ATTN */
    const xf_attn_t *pair;     /* JOB_ATTN: timed alternately with a, or NULL */
    const char *json;          /* JOB_MODEL */
    const char *pair_json;     /* JOB_MODEL: timed alternately with json, or NULL */
    float *out;                /* shared: attention output (set 0) or pooled */
    float *out2;               /* shared: attention output (set 1) */
    const float *ref2;         /* shared: dense output (set 1) */
    float *hid;                /* shared: last hidden states (JOB_MODEL) */
    const float *ref;          /* shared: dense output (JOB_ATTN) or NULL */
} job;

static void run_job(const opts *o, const inputs *in, const job *jb, result *r)
{
    pid_t pid;
    int st = 0;

    memset(r, 0, sizeof *r);
    r->rc = -ECHILD;
    snprintf(r->msg, sizeof r->msg, "no result");
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        r->rc = -errno;
        snprintf(r->msg, sizeof r->msg, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the bench */
#endif
        memset(r, 0, sizeof *r);
        alarm((unsigned)o->timeout_s);
        if (jb->kind == JOB_ATTN)
            run_attn(o, in, jb->a, jb->pair, jb->n, jb->out, jb->out2, jb->ref, jb->ref2, r);
        else
            run_model(o, jb->json, jb->pair_json, jb->n, jb->out, jb->hid, r);
        _exit(0);
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(st)) {
        r->rc = -EFAULT;
        snprintf(r->msg, sizeof r->msg, "%s (signal %d)",
                 WTERMSIG(st) == SIGALRM ? "timeout" : "crashed", WTERMSIG(st));
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        r->rc = -EFAULT;
        snprintf(r->msg, sizeof r->msg, "child exit status %d", WEXITSTATUS(st));
    }
}

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "bench_attention: mmap %zu: %s\n", n, strerror(errno));
        exit(1);
    }
    return p;
}

static double rel_err(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : 0;
}

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

/* The canonical JSON without its "variant" key: {"window":128}. */
static void params_json(const xf_attn_t *a, char *buf, size_t len)
{
    char tmp[1024];
    const char *p = tmp;
    if (xf_attn_to_json(a, tmp, sizeof tmp) < 0) {
        snprintf(buf, len, "{}");
        return;
    }
    if (!strncmp(tmp, "{\"variant\":\"", 12)) {
        p = strchr(tmp + 12, '"');
        p = p ? p + 1 : tmp;
        if (*p == ',')
            p++;
        snprintf(buf, len, "{%.500s", p);
    } else {
        snprintf(buf, len, "%.500s", tmp);
    }
}

/* The demo model: BERT-base shape, o->layers layers, max(4096, maxn) positions; (re)written
 * when missing or too small. */
static int ensure_model(const opts *o)
{
    char path[1024];
    struct stat sb;
    xf_demo_opts_t d;
    xf_diag_t diag = { 0 };
    int rc, pos = o->maxn > 4096 ? o->maxn : 4096;

    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    if (stat(path, &sb) == 0) {
        xf_model_t *m = NULL;
        if (xf_model_load(o->model_dir, NULL, &m, &diag) == 0) {
            const xf_model_info_t *mi = xf_model_info(m);
            int fits = mi->max_positions >= o->maxn && mi->n_layer == o->layers;
            xf_model_free(m);
            if (fits)
                return 0;
        }
    }
    xf_demo_opts_init(&d);
    d.n_layer = o->layers;
    d.max_positions = pos;
    fprintf(stderr, "bench_attention: writing demo model (%d layers, %d positions) to %s\n",
            d.n_layer, d.max_positions, o->model_dir);
    rc = xf_demo_write(o->model_dir, &d, &diag);
    if (rc)
        fprintf(stderr, "bench_attention: demo model: %s\n",
                diag.msg[0] ? diag.msg : xf_strerror(rc));
    return rc;
}

static int parse_ns(const char *s, opts *o)
{
    o->n_ns = 0;
    o->maxn = 0;
    while (*s && o->n_ns < MAX_NS) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 65536)
            return -1;
        o->ns[o->n_ns++] = (int)v;
        if (v > o->maxn)
            o->maxn = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return o->n_ns ? 0 : -1;
}

static int wanted(const opts *o, const char *name)
{
    const char *p = o->only;
    size_t l = strlen(name);
    if (!p || !strcmp(name, "dense"))
        return 1;
    while ((p = strstr(p, name))) {
        if ((p == o->only || p[-1] == ',') && (p[l] == ',' || p[l] == '\0'))
            return 1;
        p += l;
    }
    return 0;
}

static void usage(void)
{
    printf("usage: bench_attention [--threads N] [--n 512,1024,2048,4096] [--variants a,b,..]\n"
           "        [--reps N] [--budget-ms MS] [--layers L] [--model-dir DIR] [--no-model]\n"
           "        [--tsv FILE] [--seed S] [--logit-std X] [--qk-corr R] [--pos P]"
           " [--corr-len L]\n        [--timeout S]\n"
           "Attention variants vs dense at BERT-base heads (12 x 64), one sequence: median time\n"
           "through the variant vtable on the engine pool, plan workspace, relative Frobenius\n"
           "error vs dense; then the whole demo model (mean-pooled cosine vs dense).\n");
}

int main(int argc, char **argv)
{
    opts o = { .nth = 2, .reps = 5, .layers = 2, .model_on = 1, .timeout_s = 300,
               .budget_ms = 2500, .logit_std = 2.0, .qk_corr = 0.5, .pos = 1.0,
               .corr_len = 64, .seed = 1,
               .model_dir = NULL, .tsv = NULL, .only = NULL };
    xf_attn_t *sel[N_SPECS];
    const char *label[N_SPECS];
    int n_sel = 0;
    inputs in[2];
    xf_cpu_info_t ci;
    char rev[64], host_load[64] = "?";
    FILE *tsv = NULL;
    result *res;
    float *dense_out, *dense_out2, *var_out, *dense_pooled, *var_pooled, *dense_hid, *var_hid;
    char model_dir[512];
    double st[4], t_all = now_ms();

    parse_ns("512,1024,2048,4096", &o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int take = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--no-model")) {
            o.model_on = 0;
            take = 0;
        } else if (!v) {
            fprintf(stderr, "bench_attention: %s needs a value (or unknown option)\n", a);
            return 2;
        } else if (!strcmp(a, "--threads"))
            o.nth = atoi(v);
        else if (!strcmp(a, "--n")) {
            if (parse_ns(v, &o)) {
                fprintf(stderr, "bench_attention: --n: bad list '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--variants"))
            o.only = v;
        else if (!strcmp(a, "--reps"))
            o.reps = atoi(v);
        else if (!strcmp(a, "--budget-ms"))
            o.budget_ms = atof(v);
        else if (!strcmp(a, "--layers"))
            o.layers = atoi(v);
        else if (!strcmp(a, "--model-dir"))
            o.model_dir = v;
        else if (!strcmp(a, "--tsv"))
            o.tsv = v;
        else if (!strcmp(a, "--seed"))
            o.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--logit-std"))
            o.logit_std = atof(v);
        else if (!strcmp(a, "--qk-corr"))
            o.qk_corr = atof(v);
        else if (!strcmp(a, "--pos"))
            o.pos = atof(v);
        else if (!strcmp(a, "--corr-len"))
            o.corr_len = atof(v);
        else if (!strcmp(a, "--timeout"))
            o.timeout_s = atoi(v);
        else {
            fprintf(stderr, "bench_attention: unknown option '%s'\n", a);
            return 2;
        }
        i += take;
    }
    if (o.nth < 1 || o.nth > 64 || o.reps < 1 || o.reps > 64 || o.layers < 1 ||
        o.qk_corr < 0 || o.qk_corr > 1 || o.logit_std <= 0 || o.timeout_s < 1 ||
        o.corr_len <= 0) {
        fprintf(stderr, "bench_attention: option out of range\n");
        return 2;
    }
    for (int s = 0; s < N_SPECS; s++) {
        char err[256] = "";
        if (!wanted(&o, g_specs[s].name))
            continue;
        label[n_sel] = g_specs[s].name;
        if (xf_attn_parse(g_specs[s].json, strlen(g_specs[s].json), &sel[n_sel], err,
                          sizeof err)) {
            fprintf(stderr, "bench_attention: %s: %s\n", g_specs[s].json, err);
            return 1;
        }
        n_sel++;
    }

    xf_cpu_get_info(&ci);
    bench_source_rev(rev, sizeof rev);
    {
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (fgets(host_load, sizeof host_load, f))
                host_load[strcspn(host_load, " ")] = '\0';
            fclose(f);
        }
    }
    printf("# xformd-bench-attention cpu=\"%s\" isa=%s isa_max=%s gemm_path=%s threads=%d "
           "rev=%s cores=%d load1=%s heads=%d d_head=%d model_layers=%d\n", ci.brand, ci.isa,
           ci.isa_max, ci.gemm_path, o.nth, rev, ci.n_cores, host_load, N_HEAD, D_HEAD,
           o.model_on ? o.layers : 0);
    make_inputs(&o, 0, &in[0]);
    make_inputs(&o, 1, &in[1]);
    printf("# inputs Q=x*Wq K=x*Wk V=x*Wv per head, Wq,Wv~N(0,1) Wk=%.2g*Wq+%.2g*W', q rescaled "
           "to logit_std=%.2g, seed=%llu\n", o.qk_corr, sqrt(1 - o.qk_corr * o.qk_corr),
           o.logit_std, (unsigned long long)o.seed);
    for (int k = 0; k < 2; k++) {
        input_stats(&in[k], o.maxn, st);
        if (k == 0)
            printf("# inputs set=spread (rel_err) x=(u+%.2g*p_sin)/|.| u~N(0,I/768)", o.pos);
        else
            printf("# inputs set=local (rel_err_local) x_t=phi*x_(t-1)+sqrt(1-phi^2)*u "
                   "phi=exp(-1/%.3g)", o.corr_len);
        printf(" | dense at n=%d: mass_within_128=%.3f mass_cls=%.4f mass_self=%.3f "
               "eff_keys=%.0f\n", o.maxn, st[0], st[1], st[2], st[3]);
    }
    fflush(stdout);
    if (!o.model_dir) {
        snprintf(model_dir, sizeof model_dir, "bench-attn-model-L%d", o.layers);
        o.model_dir = model_dir;
    }
    if (o.model_on && ensure_model(&o))
        return 1;
    if (o.tsv) {
        tsv = fopen(o.tsv, "w");
        if (!tsv) {
            fprintf(stderr, "bench_attention: %s: %s\n", o.tsv, strerror(errno));
            return 1;
        }
        fprintf(tsv, "variant\tn\tparams\tattn_ms\tdense_ms\tspeedup\tws_bytes\trel_err\t"
                     "rel_err_local\tmodel_ms\tmodel_dense_ms\tmodel_speedup\temb_cos\t"
                     "hid_rel_err\tstatus\tattn_cpu_ms\tspeedup_cpu\n");
    }

    res = shared_alloc(sizeof(result) * 4);
    dense_out = shared_alloc((size_t)o.maxn * N_HEAD * D_HEAD * sizeof(float));
    dense_out2 = shared_alloc((size_t)o.maxn * N_HEAD * D_HEAD * sizeof(float));
    var_out = shared_alloc((size_t)o.maxn * N_HEAD * D_HEAD * sizeof(float));
    dense_pooled = shared_alloc(D_MODEL * sizeof(float));
    var_pooled = shared_alloc(D_MODEL * sizeof(float));
    dense_hid = shared_alloc((size_t)o.maxn * D_MODEL * sizeof(float));
    var_hid = shared_alloc((size_t)o.maxn * D_MODEL * sizeof(float));

    for (int ni = 0; ni < o.n_ns; ni++) {
        int n = o.ns[ni];
        result *rd = &res[0], *rdm = &res[1], *rv = &res[2], *rvm = &res[3];
        job jb;
        double t_start = now_ms();

        memset(&jb, 0, sizeof jb);
        jb.kind = JOB_ATTN;
        jb.n = n;
        jb.a = xf_attn_dense();
        jb.out = dense_out;
        jb.out2 = dense_out2;
        run_job(&o, in, &jb, rd);
        if (o.model_on) {
            jb.kind = JOB_MODEL;
            jb.json = "{\"variant\":\"dense\"}";
            jb.out = dense_pooled;
            jb.hid = dense_hid;
            run_job(&o, in, &jb, rdm);
        }
        for (int s = 0; s < n_sel; s++) {
            const xf_attn_t *a = sel[s];
            const char *name = label[s];
            char pj[512], json[640], status[300];
            int is_dense = !strcmp(name, "dense");
            double mspeed = 0, cosv = 0, mms = 0, herr = 0, dms, dcpu, mdms = 0;

            params_json(a, pj, sizeof pj);
            if (xf_attn_to_json(a, json, sizeof json) < 0)
                snprintf(json, sizeof json, "{\"variant\":\"%s\"}", xf_attn_name(a));
            if (is_dense) {
                *rv = *rd;
                rv->rel_err = 0;
                rv->rel_err2 = 0;
            } else {
                memset(&jb, 0, sizeof jb);
                jb.kind = JOB_ATTN;
                jb.n = n;
                jb.a = a;
                jb.out = var_out;
                jb.out2 = var_out;
                jb.ref = rd->rc == 0 ? dense_out : NULL;
                jb.ref2 = rd->rc == 0 ? dense_out2 : NULL;
                jb.pair = xf_attn_dense();
                run_job(&o, in, &jb, rv);
            }
            memset(rvm, 0, sizeof *rvm);
            if (o.model_on) {
                if (is_dense) {
                    *rvm = *rdm;
                    memcpy(var_pooled, dense_pooled, D_MODEL * sizeof(float));
                    memcpy(var_hid, dense_hid, (size_t)n * D_MODEL * sizeof(float));
                } else {
                    memset(&jb, 0, sizeof jb);
                    jb.kind = JOB_MODEL;
                    jb.n = n;
                    jb.json = json;
                    jb.out = var_pooled;
                    jb.hid = var_hid;
                    jb.pair_json = "{\"variant\":\"dense\"}";
                    run_job(&o, in, &jb, rvm);
                }
                if (rvm->rc == 0 && rdm->rc == 0) {
                    mms = rvm->ms;
                    mdms = rvm->pair_ms > 0 ? rvm->pair_ms : rdm->ms;
                    mspeed = mdms / rvm->ms;
                    cosv = cosine(var_pooled, dense_pooled, D_MODEL);
                    herr = rel_err(var_hid, dense_hid, (size_t)n * D_MODEL);
                }
            }
            if (rv->rc)
                snprintf(status, sizeof status, "error:%s", rv->msg);
            else if (rv->nonfinite)
                snprintf(status, sizeof status, "nonfinite:%ld", rv->nonfinite);
            else if (o.model_on && rvm->rc)
                snprintf(status, sizeof status, "model_error:%s", rvm->msg);
            else
                snprintf(status, sizeof status, "ok");
            for (char *c = status; *c; c++)
                if (*c == ' ' || *c == '\t')
                    *c = '_';
            dms = rv->pair_ms > 0 ? rv->pair_ms : rd->ms;
            dcpu = rv->pair_cpu_ms > 0 ? rv->pair_cpu_ms : rd->cpu_ms;
            printf("attn variant=%s n=%d params=%s attn_ms=%.3f dense_ms=%.3f speedup=%.2f "
                   "attn_cpu_ms=%.3f speedup_cpu=%.2f ws_bytes=%zu rel_err=%.4g "
                   "rel_err_local=%.4g", name, n, pj, rv->rc ? 0.0 : rv->ms, dms,
                   rv->rc || rv->ms <= 0 ? 0.0 : dms / rv->ms, rv->rc ? 0.0 : rv->cpu_ms,
                   rv->rc || rv->cpu_ms <= 0 ? 0.0 : dcpu / rv->cpu_ms, rv->ws_bytes,
                   rv->rel_err, rv->rel_err2);
            if (o.model_on)
                printf(" model_ms=%.2f model_dense_ms=%.2f model_speedup=%.2f emb_cos=%.7f "
                       "hid_rel_err=%.4g", mms, mdms, mspeed, cosv, herr);
            if (!is_dense && rv->rc == 0 && rv->block_sp >= 0)
                printf(" block_sparsity=%.4f head_sparsity=%.4f", rv->block_sp, rv->head_sp);
            printf(" items=%d fallbacks=%d reps=%d status=%s\n", rv->n_items, rv->fallbacks,
                   rv->reps, status);
            fflush(stdout);
            if (tsv) {
                fprintf(tsv, "%s\t%d\t%s\t%.4f\t%.4f\t%.4f\t%zu\t%.6g\t%.6g\t%.3f\t%.3f\t"
                        "%.4f\t%.7f\t%.6g\t%s\t%.4f\t%.4f\n", name, n, pj,
                        rv->rc ? 0.0 : rv->ms, dms,
                        rv->rc || rv->ms <= 0 ? 0.0 : dms / rv->ms, rv->ws_bytes,
                        rv->rel_err, rv->rel_err2, mms, mdms, mspeed, cosv, herr, status,
                        rv->rc ? 0.0 : rv->cpu_ms,
                        rv->rc || rv->cpu_ms <= 0 ? 0.0 : dcpu / rv->cpu_ms);
                fflush(tsv);
            }
        }
        fprintf(stderr, "bench_attention: n=%d done in %.1f s\n", n,
                (now_ms() - t_start) * 1e-3);
    }
    {
        FILE *f = fopen("/proc/loadavg", "r");
        snprintf(host_load, sizeof host_load, "?");
        if (f) {
            if (fgets(host_load, sizeof host_load, f))
                host_load[strcspn(host_load, " ")] = '\0';
            fclose(f);
        }
        printf("# done load1=%s elapsed_s=%.0f\n", host_load, (now_ms() - t_all) * 1e-3);
    }
    if (tsv)
        fclose(tsv);
    for (int s = 0; s < n_sel; s++)
        xf_attn_free(sel[s]);
    for (int k = 0; k < 2; k++) {
        free(in[k].q);
        free(in[k].k);
        free(in[k].v);
    }
    return 0;
}
