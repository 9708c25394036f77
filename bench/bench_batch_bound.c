/* bench_batch_bound: how much any batcher can gain over `none` on a request mix, measured on
 * the engine alone (issue 10's serving goal: `tokens` ≥ 1.5× `none`). It draws R requests from
 * the serving benchmarks' length mix (request_mix.h; default the closed-loop mix of
 * bench/serve_peer.sh: 70% of 8–32 tokens, 30% of 129–256) and runs them, in one process on one
 * engine context, two ways, alternately for a few rounds:
 *   alone   — each request as its own forward (b = 1), as `none` serves them;
 *   batched — the requests in arrival order, packed into batches of at most max_batch
 *             sequences and max_tokens tokens (padding-free), as an ideal batcher would if
 *             every batch were full: serve_peer.sh's 16 closed-loop clients allow at most 16.
 * Plans are built and the arena reserved before timing; only xf_forward is timed (wall and
 * process CPU). bound = alone time ÷ batched time is the most the batcher can add to the
 * engine-bound throughput (HTTP, tokenisation and queueing cost the same per request either
 * way). The per-class lines give each length class's alone time per token beside the batched
 * time per token, which says where the gain comes from. Key=value lines; never run by make
 * check.
 *   bench_batch_bound MODEL_DIR [threads 2] [requests 48] [mix SPEC] [max_batch 16]
 *                     [max_tokens 8192] [rounds 3] [fp32|int8] */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xformd/xformd.h>

#include "bench_util.h"
#include "request_mix.h"
#include "source_rev.h"

#define MAX_REQ 512
#define MAX_CLASS 8

/* One batch of requests [first, first + n): its plan and its token layout. */
typedef struct run {
    int32_t first, n, tokens;
    int32_t *cu;
    xf_plan_t *plan;
    double wall[16], cpu[16];
} run_t;

static int run_init(run_t *r, const xf_model_t *m, xf_ctx_t *c, const int32_t *len,
                    const int32_t *ids, int nth, int32_t first, int32_t n)
{
    r->first = first;
    r->n = n;
    r->cu = malloc((size_t)(n + 1) * sizeof *r->cu);
    if (!r->cu)
        return -1;
    r->cu[0] = 0;
    for (int32_t i = 0; i < n; i++)
        r->cu[i + 1] = r->cu[i] + len[first + i];
    r->tokens = r->cu[n];
    (void)ids;
    xf_batch_t b = { .n_seq = n, .cu_len = r->cu };
    xf_diag_t d = { 0 };
    if (xf_plan_create(m, &r->plan) || xf_plan_build(r->plan, &b, nth, &d) ||
        xf_ctx_reserve(c, r->plan)) {
        fprintf(stderr, "bench_batch_bound: plan for %d sequences: %s\n", (int)n, d.msg);
        return -1;
    }
    return 0;
}

/* Forward of one run; its ids start at the first request's offset in ids. */
static int run_forward(run_t *r, xf_ctx_t *c, const xf_model_t *m, const int32_t *ids,
                       const int32_t *off, float *pooled, int round)
{
    xf_batch_t b = { .n_seq = r->n, .cu_len = r->cu, .ids = ids + off[r->first] };
    xf_output_t out = { .pooling = XF_POOL_CLS, .pooled = pooled };
    double t0 = bench_clock_s(CLOCK_MONOTONIC), c0 = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
    if (xf_forward(c, m, r->plan, &b, &out, NULL) != 0)
        return -1;
    if (round >= 0) {
        r->cpu[round] = bench_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        r->wall[round] = bench_clock_s(CLOCK_MONOTONIC) - t0;
    }
    return 0;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static long arg_l(int argc, char **argv, int i, long dflt, long lo, long hi)
{
    if (argc <= i)
        return dflt;
    char *end;
    long v = strtol(argv[i], &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "bench_batch_bound: argument %d (%s): want %ld..%ld\n", i, argv[i], lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_batch_bound MODEL_DIR [threads 2] [requests 48] [mix SPEC] "
                        "[max_batch 16] [max_tokens 8192] [rounds 3] [fp32|int8]\n");
        return 2;
    }
    const char *dir = argv[1];
    int nth = (int)arg_l(argc, argv, 2, 2, 1, 64);
    int32_t R = (int32_t)arg_l(argc, argv, 3, 48, 1, MAX_REQ);
    const char *spec = argc > 4 ? argv[4] : "8-32:0.7,129-256:0.3";
    int32_t max_batch = (int32_t)arg_l(argc, argv, 5, 16, 1, MAX_REQ);
    int32_t max_tok = (int32_t)arg_l(argc, argv, 6, 8192, 16, 1 << 20);
    int rounds = (int)arg_l(argc, argv, 7, 3, 1, 16);
    const char *quant = argc > 8 ? argv[8] : "fp32";
    if (strcmp(quant, "fp32") != 0 && strcmp(quant, "int8") != 0) {
        fprintf(stderr, "bench_batch_bound: %s: want fp32 or int8\n", quant);
        return 2;
    }
    if (mix_set_lengths(spec) != 0) {
        fprintf(stderr, "bench_batch_bound: bad mix %s\n", spec);
        return 2;
    }
    xf_load_opts_t lo = { .quantize = strcmp(quant, "int8") == 0 ? "int8" : NULL };
    xf_model_t *m = NULL;
    xf_diag_t diag = { 0 };
    if (xf_model_load(dir, &lo, &m, &diag)) {
        fprintf(stderr, "bench_batch_bound: %s: %s\n", dir, diag.msg);
        return 1;
    }
    const xf_model_info_t *mi = xf_model_info(m);
    int32_t V = mi->vocab_size, D = mi->d_model;

    /* Requests: lengths from the mix (cut at the model's positions), random ids. */
    static int32_t len[MAX_REQ], off[MAX_REQ + 1];
    mix_seed(42);
    off[0] = 0;
    for (int32_t i = 0; i < R; i++) {
        len[i] = mix_tokens();
        if (len[i] > mi->max_positions)
            len[i] = mi->max_positions;
        off[i + 1] = off[i] + len[i];
    }
    int32_t *ids = malloc((size_t)off[R] * sizeof *ids);
    float *pooled = malloc((size_t)R * (size_t)D * sizeof *pooled);
    run_t *alone = calloc((size_t)R, sizeof *alone), *batch = calloc((size_t)R, sizeof *batch);
    xf_ctx_opts_t co = { .n_threads = nth };
    xf_ctx_t *c = NULL;
    if (!ids || !pooled || !alone || !batch || xf_ctx_create(&co, &c))
        return 1;
    for (int32_t i = 0; i < off[R]; i++)
        ids[i] = (V > 1000 ? 1000 : 0) +
                 (int32_t)(mix_rng() % (uint64_t)(V > 1000 ? V - 1000 : V));

    int32_t nb = 0;
    for (int32_t i = 0; i < R; i++)
        if (run_init(&alone[i], m, c, len, ids, nth, i, 1))
            return 1;
    for (int32_t i = 0; i < R;) {
        int32_t n = 0, tok = 0;
        while (i + n < R && n < max_batch && (n == 0 || tok + len[i + n] <= max_tok))
            tok += len[i + n++];
        if (run_init(&batch[nb++], m, c, len, ids, nth, i, n))
            return 1;
        i += n;
    }

    char rev[64];
    bench_source_rev(rev, sizeof rev);
    printf("# bench_batch_bound rev=%s model=%s quantize=%s threads=%d requests=%d tokens=%d "
           "mix=%s max_batch=%d max_tokens=%d batches=%d rounds=%d\n",
           rev, mi->name, quant, nth, (int)R, (int)off[R], mix_lengths(),
           (int)max_batch, (int)max_tok, (int)nb, rounds);
    /* Warm-up (round −1), then alternate the two ways. */
    double aw[16], ac[16], bw[16], bc[16];
    for (int r = -1; r < rounds; r++) {
        double sa = 0, sac = 0, sb = 0, sbc = 0;
        for (int32_t i = 0; i < R; i++)
            if (run_forward(&alone[i], c, m, ids, off, pooled, r))
                return 1;
        for (int32_t k = 0; k < nb; k++)
            if (run_forward(&batch[k], c, m, ids, off, pooled, r))
                return 1;
        if (r < 0)
            continue;
        for (int32_t i = 0; i < R; i++) {
            sa += alone[i].wall[r];
            sac += alone[i].cpu[r];
        }
        for (int32_t k = 0; k < nb; k++) {
            sb += batch[k].wall[r];
            sbc += batch[k].cpu[r];
        }
        aw[r] = sa, ac[r] = sac, bw[r] = sb, bc[r] = sbc;
        printf("batch_bound round=%d alone_ms=%.1f batched_ms=%.1f bound=%.3f alone_cpu_ms=%.1f "
               "batched_cpu_ms=%.1f cpu_bound=%.3f\n",
               r + 1, sa * 1e3, sb * 1e3, sa / sb, sac * 1e3, sbc * 1e3, sac / sbc);
        fflush(stdout);
    }

    /* Per length class: median (over rounds) alone time per token of its requests, and its
     * share of the mean alone time. */
    int ncls = 0;
    int32_t clo[MAX_CLASS], chi[MAX_CLASS];
    const char *s = mix_lengths();
    while (ncls < MAX_CLASS && sscanf(s, "%d-%d", &clo[ncls], &chi[ncls]) == 2) {
        ncls++;
        s = strchr(s, ',');
        if (!s)
            break;
        s++;
    }
    double bt = 0, at = 0;
    for (int r = 0; r < rounds; r++)
        bt += bw[r], at += aw[r];
    bt /= rounds;
    at /= rounds;
    for (int k = 0; k < ncls; k++) {
        double t = 0;
        int32_t nreq = 0, ntok = 0;
        for (int32_t i = 0; i < R; i++)
            if (len[i] >= clo[k] && len[i] <= chi[k]) {
                double w[16];
                for (int r = 0; r < rounds; r++)
                    w[r] = alone[i].wall[r];
                t += median(w, rounds);
                nreq++;
                ntok += len[i];
            }
        if (nreq)
            printf("batch_bound class=%d-%d requests=%d tokens=%d alone_us_per_token=%.1f "
                   "share_of_alone_time=%.3f\n",
                   (int)clo[k], (int)chi[k], (int)nreq, (int)ntok, t * 1e6 / ntok,
                   t / at);
    }
    printf("batch_bound batched_us_per_token=%.1f\n", bt * 1e6 / off[R]);
    printf("batch_bound summary bound=%.3f cpu_bound=%.3f (median of %d rounds)\n",
           median(aw, rounds) / median(bw, rounds), median(ac, rounds) / median(bc, rounds),
           rounds);

    for (int32_t i = 0; i < R; i++) {
        xf_plan_free(alone[i].plan);
        free(alone[i].cu);
    }
    for (int32_t k = 0; k < nb; k++) {
        xf_plan_free(batch[k].plan);
        free(batch[k].cu);
    }
    free(alone);
    free(batch);
    free(ids);
    free(pooled);
    xf_ctx_free(c);
    xf_model_free(m);
    return 0;
}
