/* bench_batcher: discrete-event simulation of the batcher policies (none, fifo, dp, tokens)
 * with one engine worker whose batch time follows a given cost model (± noise). The same
 * Poisson arrivals and 8–256-token length mix as bench_serve; the batcher fits its model from
 * the warm-up plan and refines it online, exactly as the daemon does. Deterministic and cheap:
 * it ranks the policies without loading the machine. One key=value line per (policy, load).
 * Not a test. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "request_mix.h"
#include "server/batcher.h"

typedef struct simjob {
    xf_bjob_t b;
    int32_t len;
    double arrival;
} simjob_t;

static double truth_s(const double c[4], const xf_batch_info_t *in, double noise)
{
    double t = c[0] + c[1] * (double)in->n_tokens + c[2] * (double)in->sum_sq;
    return t * (1 + noise * (2 * mix_urand() - 1));
}

static double aging_ms = -1;   /* < 0: the batcher's default */

static void simulate(enum xf_batch_policy pol, double qps, const double c[4], double dur_s,
                     double timeout_s, int32_t max_batch, int64_t max_tok, double delay_ms,
                     uint64_t seed)
{
    mix_seed(seed);
    size_t cap = (size_t)(qps * dur_s * 1.5) + 16, n = 0;
    simjob_t *jobs = calloc(cap, sizeof(*jobs));
    double *lat = calloc(cap, sizeof(double));
    xf_bjob_t **out = calloc((size_t)max_batch + 64, sizeof(*out));
    if (!jobs || !lat || !out)
        exit(1);
    double t = 0;
    while (n < cap) {
        t += -log(mix_urand()) / qps;
        if (t >= dur_s)
            break;
        jobs[n].len = mix_tokens();
        jobs[n].arrival = t;
        n++;
    }
    xf_batcher_opts_t o;
    xf_batcher_opts_init(&o);
    o.policy = pol;
    o.max_batch = max_batch;
    o.max_batch_tokens = max_tok;
    o.max_queue_delay_ns = (uint64_t)(delay_ms * 1e6);
    if (aging_ms >= 0)
        o.dp_aging_ns = (uint64_t)(aging_ms * 1e6);
    xf_batcher_t *b;
    if (xf_batcher_create(&o, &b) != 0)
        exit(1);
    /* Warm-up fit from the plan the daemon uses, timed by the truth with noise. */
    xf_cost_sample_t samples[64];
    size_t ns = 0;
    int32_t lens[64];
    size_t k;
    for (size_t i = 0; (k = xf_cost_warmup_batch(i, 512, lens, 64)) > 0 && ns < 64; i++) {
        xf_cost_features(lens, k, false, &samples[ns]);
        xf_batch_info_t in = {.n_tokens = (int64_t)samples[ns].tokens,
                              .sum_sq = (int64_t)samples[ns].sum_sq};
        samples[ns].seconds = truth_s(c, &in, 0.05);
        ns++;
    }
    xf_cost_fit(xf_batcher_cost(b), samples, ns);

    size_t next = 0, done = 0, rejected = 0, nl = 0, batches = 0, jobs_in_batches = 0;
    double now = 0, busy_until = -1, busy_time = 0, pad = 0, tokens = 0;
    size_t cur_n = 0;
    xf_bjob_t **cur = calloc((size_t)max_batch + 64, sizeof(*cur));
    const double NS = 1e9;
    while (done + rejected < n) {
        /* Arrivals up to now. */
        while (next < n && jobs[next].arrival <= now) {
            simjob_t *j = &jobs[next++];
            j->b.n_seqs = 1;
            j->b.n_tokens = j->len;
            j->b.lens = &j->len;
            j->b.enqueue_ns = (uint64_t)(j->arrival * NS);
            j->b.deadline_ns = (uint64_t)((j->arrival + timeout_s) * NS);
            j->b.user = j;
            if (xf_batcher_push(b, &j->b, (uint64_t)(now * NS)) != 0)
                rejected++;
        }
        /* Completion. */
        if (busy_until >= 0 && busy_until <= now) {
            for (size_t i = 0; i < cur_n; i++) {
                simjob_t *j = cur[i]->user;
                lat[nl++] = busy_until - j->arrival;
                done++;
            }
            busy_until = -1;
        }
        rejected += xf_batcher_expire(b, (uint64_t)(now * NS), out, (size_t)max_batch + 64);
        uint64_t wake = UINT64_MAX;
        if (busy_until < 0) {
            size_t got = 0;
            xf_batch_info_t in;
            xf_batcher_next(b, (uint64_t)(now * NS), out, (size_t)max_batch + 64, &got, &in,
                            &wake);
            if (got > 0) {
                double dt = truth_s(c, &in, 0.05);
                xf_batcher_observe_jobs(b, out, got, dt);
                memcpy(cur, out, got * sizeof(*out));
                cur_n = got;
                busy_until = now + dt;
                busy_time += dt;
                batches++;
                jobs_in_batches += got;
                pad += (double)in.pad_tokens;
                tokens += (double)in.n_tokens;
                continue;
            }
        }
        /* Advance to the next event. */
        double tn = INFINITY;
        if (next < n)
            tn = jobs[next].arrival;
        if (busy_until >= 0 && busy_until < tn)
            tn = busy_until;
        if (busy_until < 0 && wake != UINT64_MAX && (double)wake / NS < tn)
            tn = (double)wake / NS;
        uint64_t ex = xf_batcher_expiry_ns(b);
        if (ex != UINT64_MAX && (double)ex / NS + 1e-9 < tn)
            tn = (double)ex / NS + 1e-9;
        if (tn == INFINITY)
            break;
        now = tn > now ? tn : now + 1e-9;
    }
    qsort(lat, nl, sizeof(double), bench_cmp_double);
#define PCT(q) (nl ? lat[(size_t)((q) * (double)(nl - 1) + 0.5)] * 1e3 : NAN)
    printf("policy=%s offered_qps=%.2f achieved_qps=%.2f completed=%zu rejected=%zu "
           "p50_ms=%.0f p90_ms=%.0f p99_ms=%.0f mean_batch=%.2f padding_frac=%.3f "
           "utilisation=%.2f\n",
           xf_batch_policy_name(pol), qps, (double)done / (now > dur_s ? now : dur_s), done,
           rejected, PCT(0.5), PCT(0.9), PCT(0.99),
           batches ? (double)jobs_in_batches / (double)batches : 0, tokens > 0 ? pad / tokens : 0,
           busy_time / (now > 0 ? now : 1));
    xf_batcher_free(b);
    free(jobs);
    free(lat);
    free(out);
    free(cur);
}

int main(int argc, char **argv)
{
    /* Defaults: BERT-base demo model fitted by xformd on a loaded 2-core VM. */
    double c[4] = {0.072, 0.00545, 1.79e-6, 0};
    double dur = 600, timeout = 10, delay_ms = 5;
    int32_t max_batch = 32;
    int64_t max_tok = 8192;
    char loads[256] = "0.5,1,1.5,2,2.5,3,4";
    char pols[64] = "none,fifo,dp,tokens";
    uint64_t seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--c0"))
            c[0] = atof(v);
        else if (!strcmp(a, "--c1"))
            c[1] = atof(v);
        else if (!strcmp(a, "--c2"))
            c[2] = atof(v);
        else if (!strcmp(a, "--duration"))
            dur = atof(v);
        else if (!strcmp(a, "--timeout"))
            timeout = atof(v);
        else if (!strcmp(a, "--delay-ms"))
            delay_ms = atof(v);
        else if (!strcmp(a, "--max-batch"))
            max_batch = atoi(v);
        else if (!strcmp(a, "--max-batch-tokens"))
            max_tok = atoll(v);
        else if (!strcmp(a, "--loads"))
            snprintf(loads, sizeof(loads), "%s", v);
        else if (!strcmp(a, "--policies"))
            snprintf(pols, sizeof(pols), "%s", v);
        else if (!strcmp(a, "--aging-ms"))
            aging_ms = atof(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "usage: bench_batcher [--c0 S --c1 S --c2 S] [--loads L,...] "
                            "[--policies P,...] [--duration S] [--timeout S] [--delay-ms MS] "
                            "[--max-batch N] [--max-batch-tokens N] [--aging-ms MS] [--seed N]\n");
            return 2;
        }
    }
    if (max_batch < 1 || max_tok < 1 || dur <= 0 || timeout <= 0)
        return 2;
    printf("# bench_batcher simulated 1 worker c0=%.4g c1=%.4g c2=%.4g duration_s=%.0f "
           "timeout_s=%.0f max_batch=%d max_batch_tokens=%lld noise=5%% "
           "lengths=8-32:0.6,33-128:0.3,129-256:0.1 seed=%llu\n",
           c[0], c[1], c[2], dur, timeout, max_batch, (long long)max_tok,
           (unsigned long long)seed);
    char *s1 = NULL;
    for (char *p = strtok_r(pols, ",", &s1); p; p = strtok_r(NULL, ",", &s1)) {
        enum xf_batch_policy pol = XF_BATCH_POLICY_COUNT;
        for (int k = 0; k < XF_BATCH_POLICY_COUNT; k++)
            if (!strcmp(p, xf_batch_policy_name((enum xf_batch_policy)k)))
                pol = (enum xf_batch_policy)k;
        if (pol == XF_BATCH_POLICY_COUNT) {
            fprintf(stderr, "bench_batcher: unknown policy %s\n", p);
            return 2;
        }
        char l2[256];
        snprintf(l2, sizeof(l2), "%s", loads);
        char *s2 = NULL;
        for (char *l = strtok_r(l2, ",", &s2); l; l = strtok_r(NULL, ",", &s2))
            if (atof(l) > 0)
                simulate(pol, atof(l), c, dur, timeout, max_batch, max_tok, delay_ms, seed);
    }
    return 0;
}
