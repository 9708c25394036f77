/* Smart batcher: admission, deadlines, the four policies and the cost model (DESIGN.md §5).
 * Pure logic on the loop thread: time comes in as arguments, all storage is allocated in
 * xf_batcher_create. The dp policy is TurboTransformers' scheduler (Fang et al., PPoPP 2021,
 * §4.3): sort the waiting jobs by cost, pick batch boundaries by dynamic programming. */
#include "config.h"

#include "server/batcher.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/conf.h"

/* ---- Cost model ------------------------------------------------------------------------ */

/* Features are scaled so that typical values are O(1) (256 tokens, 256² squared tokens):
 * least squares and RLS then work on a well-conditioned matrix. z_k = x_k·S_k, c_k = w_k·S_k. */
static const double cost_scale[XF_COST_NF] = {1.0, 1.0 / 256, 1.0 / 65536, 1.0 / 256};
/* RLS: cap on each diagonal element of P. Forgetting inflates P by 1/λ per step in every
 * direction, also in those no batch excites (padding when nothing runs padded): without a cap
 * they wind up without bound. Capping per direction (P ← D·P·D) keeps forgetting — and so
 * tracking — alive in the excited ones. Also the ridge added when P is rebuilt after a fit. */
#define XF_RLS_PKK_MAX 1e2
#define XF_FIT_RIDGE 1e-3
/* dp: weight of expected future arrivals in the objective. Tuned with bench/bench_batcher
 * (BERT-base-like costs, 8–256-token mix): 4 keeps the median of pure shortest-first within
 * ~30% while cutting p99 by about 2× near saturation; 0.5–1 leaves dp near saturation. */
#define XF_DP_FUTURE 4.0

/* Scale correction: the step towards log(observed/predicted) per observation, and the
 * clamp of one ratio (one wild timing moves the scale by at most 8^α ≈ 2.8×). */
#define XF_COST_ALPHA 0.5
#define XF_COST_RATIO_MAX 8.0
/* Observations within this factor of the prediction also refine the shape (RLS). */
#define XF_COST_SHAPE_BAND 1.5

static void cost_sync_c(xf_cost_t *cm)
{
    double sc = cm->scale > 0 ? cm->scale : 1.0;
    for (int k = 0; k < XF_COST_NF; k++)
        cm->c[k] = (cm->w[k] > 0 ? cm->w[k] : 0) * cost_scale[k] * sc;
    if (cm->c[2] < cm->sq_per_token * cm->c[1])
        cm->c[2] = cm->sq_per_token * cm->c[1];
}

void xf_cost_set_sq_floor(xf_cost_t *cm, double sq_per_token)
{
    cm->sq_per_token = sq_per_token > 0 && isfinite(sq_per_token) ? sq_per_token : 0;
    cost_sync_c(cm);
}

void xf_cost_init(xf_cost_t *cm, double lambda)
{
    memset(cm, 0, sizeof(*cm));
    /* BERT-base fp32 on 2 cores: ~170 MFLOP per token at ~200 GFLOP/s ≈ 1 ms/token; attention
     * 4·n²·d·L = 37k FLOP per n² ≈ 2e-7 s; a fixed ~1 ms of per-batch overhead. */
    const double c0[XF_COST_NF] = {1e-3, 1e-3, 2e-7, 1e-3};
    for (int k = 0; k < XF_COST_NF; k++) {
        cm->w[k] = c0[k] / cost_scale[k];
        cm->P[k][k] = 1.0;
    }
    cm->lambda = lambda > 0 && lambda <= 1 ? lambda : 0.98;
    cm->scale = 1.0;
    cost_sync_c(cm);
}

void xf_cost_features(const int32_t *lens, size_t n, bool padded, xf_cost_sample_t *out)
{
    double t = 0, sq = 0;
    int32_t mx = 0;
    for (size_t i = 0; i < n; i++) {
        t += lens[i];
        sq += (double)lens[i] * lens[i];
        if (lens[i] > mx)
            mx = lens[i];
    }
    out->tokens = t;
    out->sum_sq = sq;
    out->pad_tokens = padded ? (double)mx * (double)n - t : 0;
    out->seconds = 0;
}

static void sample_z(const xf_cost_sample_t *s, double z[XF_COST_NF])
{
    z[0] = cost_scale[0];
    z[1] = s->tokens * cost_scale[1];
    z[2] = s->sum_sq * cost_scale[2];
    z[3] = s->pad_tokens * cost_scale[3];
}

/* Relative weighting: timing noise is roughly proportional to the batch time (a 2 s batch
 * jitters by tens of ms, a 3 ms batch by tens of µs), and predictions matter in relative terms
 * across four orders of magnitude. Dividing row and target by the observed time turns least
 * squares into least relative squares, which keeps c0 identifiable next to big batches. */
static void sample_zw(const xf_cost_sample_t *s, double z[XF_COST_NF], double *y)
{
    double wgt = 1.0 / (s->seconds > 1e-6 ? s->seconds : 1e-6);
    sample_z(s, z);
    for (int k = 0; k < XF_COST_NF; k++)
        z[k] *= wgt;
    *y = s->seconds * wgt;
}

double xf_cost_predict(const xf_cost_t *cm, const xf_cost_sample_t *s)
{
    double t = cm->c[0] + cm->c[1] * s->tokens + cm->c[2] * s->sum_sq +
               cm->c[3] * s->pad_tokens;
    return t > 0 ? t : 0;
}

/* Solve A x = b (n ≤ 4) by Gaussian elimination with partial pivoting; -1 when singular. */
static int solve(int n, double A[XF_COST_NF][XF_COST_NF], double b[XF_COST_NF],
                 double x[XF_COST_NF])
{
    double scale = 0;
    for (int i = 0; i < n; i++)
        scale = fmax(scale, fabs(A[i][i]));
    if (scale == 0)
        return -1;
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r][c]) > fabs(A[p][c]))
                p = r;
        if (fabs(A[p][c]) <= 1e-12 * scale)
            return -1;
        if (p != c) {
            for (int k = 0; k < n; k++) {
                double t = A[c][k];
                A[c][k] = A[p][k];
                A[p][k] = t;
            }
            double t = b[c];
            b[c] = b[p];
            b[p] = t;
        }
        for (int r = c + 1; r < n; r++) {
            double f = A[r][c] / A[c][c];
            for (int k = c; k < n; k++)
                A[r][k] -= f * A[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double s = b[r];
        for (int k = r + 1; k < n; k++)
            s -= A[r][k] * x[k];
        x[r] = s / A[r][r];
    }
    return 0;
}

static int sample_ok(const xf_cost_sample_t *s)
{
    return isfinite(s->tokens) && isfinite(s->sum_sq) && isfinite(s->pad_tokens) &&
           isfinite(s->seconds) && s->tokens >= 0 && s->sum_sq >= 0 && s->pad_tokens >= 0 &&
           s->seconds >= 0;
}

int xf_cost_fit(xf_cost_t *cm, const xf_cost_sample_t *samples, size_t n)
{
    if (n == 0)
        return -EINVAL;
    double G[XF_COST_NF][XF_COST_NF] = {{0}}, g[XF_COST_NF] = {0}, yy = 0;
    for (size_t i = 0; i < n; i++) {
        if (!sample_ok(&samples[i]))
            return -EINVAL;
        double z[XF_COST_NF], y;
        sample_zw(&samples[i], z, &y);
        for (int a = 0; a < XF_COST_NF; a++) {
            for (int b = 0; b < XF_COST_NF; b++)
                G[a][b] += z[a] * z[b];
            g[a] += z[a] * y;
        }
        yy += y * y;
    }
    /* Exact NNLS for 4 unknowns: the best unconstrained least-squares solution over every
     * subset of features whose coefficients all come out non-negative. SSE from the normal
     * equations: yy - 2 w·g + wᵀGw. */
    double best_w[XF_COST_NF] = {0}, best_sse = yy;
    for (unsigned mask = 1; mask < (1u << XF_COST_NF); mask++) {
        int idx[XF_COST_NF], m = 0;
        for (int k = 0; k < XF_COST_NF; k++)
            if (mask & (1u << k))
                idx[m++] = k;
        if ((size_t)m > n)
            continue;
        double A[XF_COST_NF][XF_COST_NF], b[XF_COST_NF], x[XF_COST_NF];
        for (int r = 0; r < m; r++) {
            for (int c = 0; c < m; c++)
                A[r][c] = G[idx[r]][idx[c]];
            b[r] = g[idx[r]];
        }
        if (solve(m, A, b, x) != 0)
            continue;
        double w[XF_COST_NF] = {0};
        int neg = 0;
        for (int r = 0; r < m; r++) {
            if (x[r] < 0)
                neg = 1;
            w[idx[r]] = x[r];
        }
        if (neg)
            continue;
        double sse = yy;
        for (int a = 0; a < XF_COST_NF; a++) {
            sse -= 2 * w[a] * g[a];
            for (int b2 = 0; b2 < XF_COST_NF; b2++)
                sse += w[a] * G[a][b2] * w[b2];
        }
        if (sse < best_sse - 1e-15 * (yy + 1e-300)) {
            best_sse = sse;
            memcpy(best_w, w, sizeof(best_w));
        }
    }
    /* P ≈ (ZᵀZ + ridge·I)⁻¹: confident where the warm-up excited a feature, open elsewhere.
     * The ridge grows with G: relative weighting divides by the batch time, so sub-ms
     * batches (a tiny model) give entries of 1e8 and more, next to which a fixed ridge looks
     * singular to the solver and the whole fit was dropped. */
    double gmax = 0;
    for (int a = 0; a < XF_COST_NF; a++)
        gmax = fmax(gmax, G[a][a]);
    double ridge = XF_FIT_RIDGE + 1e-9 * gmax;
    double Pn[XF_COST_NF][XF_COST_NF];
    for (int c = 0; c < XF_COST_NF; c++) {
        double A[XF_COST_NF][XF_COST_NF], e[XF_COST_NF] = {0}, x[XF_COST_NF];
        for (int a = 0; a < XF_COST_NF; a++)
            for (int b2 = 0; b2 < XF_COST_NF; b2++)
                A[a][b2] = G[a][b2] + (a == b2 ? ridge : 0);
        e[c] = 1;
        if (solve(XF_COST_NF, A, e, x) != 0)
            return -EINVAL;
        for (int r = 0; r < XF_COST_NF; r++)
            Pn[r][c] = x[r];
    }
    memcpy(cm->w, best_w, sizeof(best_w));
    memcpy(cm->P, Pn, sizeof(Pn));
    cm->n_fit = n;
    cm->n_obs = 0;
    cm->last_err_s = 0;
    cm->scale = 1.0;
    cost_sync_c(cm);
    return 0;
}

int xf_cost_observe(xf_cost_t *cm, const xf_cost_sample_t *obs)
{
    if (!sample_ok(obs))
        return -EINVAL;
    double predicted = xf_cost_predict(cm, obs);
    cm->last_err_s = fabs(predicted - obs->seconds);
    if (cm->scale <= 0)
        cm->scale = 1.0;
    int shape_ok = 1;
    if (predicted > 0 && obs->seconds > 0) {
        double r = obs->seconds / predicted;
        /* Far off: a global error (contention at warm-up, a busier or quieter machine now),
         * corrected by the scale alone. Feeding it to the RLS as well would bend the shape
         * (the per-token term takes the blame for a per-batch error) and spoil predictions
         * for the sizes not being served. */
        shape_ok = r > 1 / XF_COST_SHAPE_BAND && r < XF_COST_SHAPE_BAND;
        r = r > XF_COST_RATIO_MAX ? XF_COST_RATIO_MAX
            : r < 1 / XF_COST_RATIO_MAX ? 1 / XF_COST_RATIO_MAX : r;
        cm->scale *= pow(r, XF_COST_ALPHA);
        if (cm->scale < 1e-3)
            cm->scale = 1e-3;
        if (cm->scale > 1e3)
            cm->scale = 1e3;
    }
    if (!shape_ok) {
        cm->n_obs++;
        cost_sync_c(cm);
        return 0;
    }
    /* The RLS learns the unscaled shape: its target is the observation over the scale. */
    xf_cost_sample_t sv = *obs;
    sv.seconds = obs->seconds / cm->scale;
    const xf_cost_sample_t *s = &sv;
    double z[XF_COST_NF], Pz[XF_COST_NF], denom = cm->lambda, pred = 0, y;
    sample_zw(s, z, &y);
    for (int a = 0; a < XF_COST_NF; a++) {
        Pz[a] = 0;
        for (int b = 0; b < XF_COST_NF; b++)
            Pz[a] += cm->P[a][b] * z[b];
        denom += z[a] * Pz[a];
        pred += cm->w[a] * z[a];
    }
    double e = y - pred;
    for (int a = 0; a < XF_COST_NF; a++) {
        double k = Pz[a] / denom;
        cm->w[a] += k * e;
    }
    /* P ← (P − Pz·Pzᵀ/denom)/λ, kept symmetric, then each direction capped. */
    for (int a = 0; a < XF_COST_NF; a++)
        for (int b = 0; b < XF_COST_NF; b++)
            cm->P[a][b] -= Pz[a] * Pz[b] / denom;
    for (int a = 0; a < XF_COST_NF; a++)
        for (int b = a; b < XF_COST_NF; b++) {
            double v = 0.5 * (cm->P[a][b] + cm->P[b][a]) / cm->lambda;
            cm->P[a][b] = cm->P[b][a] = v;
        }
    for (int a = 0; a < XF_COST_NF; a++) {
        if (cm->P[a][a] > XF_RLS_PKK_MAX) {
            double f = sqrt(XF_RLS_PKK_MAX / cm->P[a][a]);
            for (int b = 0; b < XF_COST_NF; b++) {
                cm->P[a][b] *= f;
                cm->P[b][a] *= f;
            }
        }
    }
    cm->n_obs++;
    cost_sync_c(cm);
    return 0;
}

size_t xf_cost_warmup_batch(size_t i, int32_t max_len, int32_t *lens, size_t cap)
{
    /* (sequences, lengths as 1/64ths of max_len): singles across the whole range so c1 and c2
     * separate, mixed batches so c0 separates from the per-token terms. */
    static const struct { int n; int16_t len[16]; } plan[] = {
        {1, {1}},   {1, {4}},  {1, {8}},  {1, {16}}, {1, {32}}, {1, {48}}, {1, {64}},
        {4, {2, 2, 2, 2}},
        {4, {1, 8, 16, 4}},
        {8, {2, 3, 4, 6, 8, 12, 16, 25}},
        {2, {32, 32}},
        {16, {1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20}},
        {8, {16, 16, 16, 16, 16, 16, 16, 16}},
        {2, {64, 24}},
    };
    if (i >= sizeof(plan) / sizeof(plan[0]) || max_len < 1)
        return 0;
    size_t n = 0;
    for (int k = 0; k < plan[i].n && n < cap; k++) {
        int64_t l = (int64_t)plan[i].len[k] * max_len / 64;
        lens[n++] = l < 1 ? 1 : l > max_len ? max_len : (int32_t)l;
    }
    return n;
}

size_t xf_cost_holdout_batch(int32_t max_len, int32_t *lens, size_t cap)
{
    if (max_len < 1 || cap < 3)
        return 0;
    lens[0] = lens[1] = max_len;
    lens[2] = max_len / 2 > 0 ? max_len / 2 : 1;
    return 3;
}

/* ---- Batcher --------------------------------------------------------------------------- */

struct xf_batcher {
    xf_batcher_opts_t o;
    xf_cost_t cost;
    xf_bjob_t **q;             /* [o.max_queue_jobs], arrival order */
    size_t n;
    int64_t tokens;            /* Σ n_tokens of queued jobs */
    double sum_sq;             /* Σ n_i² of queued jobs */
    uint64_t seq;
    /* The engine's pace right now against the cost model (≥ 1) and the seconds until a worker
     * is free (0: one is idle), from the caller's live estimate (xf_batcher_set_pace): expiry
     * and batch formation go by cost × pace, so that a job is answered as soon as it can no
     * longer make its deadline at the pace the engine shows, before the deadline. */
    double pace;
    double free_in_s;
    /* Arrival rate for dp: a count that decays with time constant XF_RATE_TAU_S, so it
     * reads "arrivals in about the last second" and a burst cannot make it explode. */
    double arr_cnt;
    uint64_t arr_last_ns;
    xf_bjob_t **scratch;       /* [o.max_queue_jobs] */
    unsigned char *mark;       /* [o.max_queue_jobs] */
    int draining;              /* xf_batcher_drain: no more arrivals, no waiting */
};

const char *xf_batch_policy_name(enum xf_batch_policy p)
{
    static const char *const names[] = {"none", "fifo", "dp", "tokens"};
    _Static_assert(XF_BATCH_POLICY_COUNT == 4, "update xf_batch_policy_name");
    return (int)p >= 0 && p < XF_BATCH_POLICY_COUNT ? names[p] : "?";
}

void xf_batcher_opts_init(xf_batcher_opts_t *o)
{
    /* The defaults of conf.def (the batcher.* rows); only the dp tuning is the batcher's own. */
    const xf_conf_t *c = xf_conf_defaults();
    memset(o, 0, sizeof(*o));
    o->policy = (enum xf_batch_policy)c->batcher_policy;
    o->max_batch = (int32_t)c->batcher_max_batch;
    o->max_batch_tokens = c->batcher_max_batch_tokens;
    o->max_queue_delay_ns = (uint64_t)c->batcher_max_queue_delay_ms * 1000000ull;
    o->max_queued_tokens = c->batcher_max_queued_tokens;
    o->max_queue_jobs = (int32_t)c->batcher_max_queue_jobs;
    o->dp_window = 48;
    o->dp_aging_ns = 1000000000ull;
}

int xf_batcher_create(const xf_batcher_opts_t *opts, xf_batcher_t **out)
{
    if (!opts || (int)opts->policy < 0 || opts->policy >= XF_BATCH_POLICY_COUNT ||
        opts->max_batch < 1 || opts->max_batch_tokens < 1 || opts->max_queued_tokens < 1 ||
        opts->max_queue_jobs < 1 || opts->dp_window < 0)
        return -EINVAL;
    xf_batcher_t *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->o = *opts;
    if (b->o.dp_window == 0)
        b->o.dp_window = 48;
    if (b->o.dp_window > XF_DP_MAX)
        b->o.dp_window = XF_DP_MAX;
    size_t cap = (size_t)opts->max_queue_jobs;
    b->q = calloc(cap, sizeof(*b->q));
    b->scratch = calloc(cap, sizeof(*b->scratch));
    b->mark = calloc(cap, 1);
    if (!b->q || !b->scratch || !b->mark) {
        xf_batcher_free(b);
        return -ENOMEM;
    }
    xf_cost_init(&b->cost, 0);
    b->pace = 1;
    *out = b;
    return 0;
}

void xf_batcher_free(xf_batcher_t *b)
{
    if (!b)
        return;
    free(b->q);
    free(b->scratch);
    free(b->mark);
    free(b);
}

static double job_sum_sq(const xf_bjob_t *j)
{
    if (j->sum_sq > 0)
        return j->sum_sq;
    double s = 0;
    for (int32_t i = 0; i < j->n_seqs; i++)
        s += (double)j->lens[i] * j->lens[i];
    return s;
}

/* Predicted seconds for the job alone (packed). */
static double job_alone_s(const xf_cost_t *cm, const xf_bjob_t *j)
{
    xf_cost_sample_t s = {.tokens = j->n_tokens, .sum_sq = job_sum_sq(j)};
    return xf_cost_predict(cm, &s);
}

/* The part of a job's cost that grows with the job: c1·tokens + c2·Σn². */
static double job_additive_s(const xf_cost_t *cm, const xf_bjob_t *j)
{
    return cm->c[1] * j->n_tokens + cm->c[2] * job_sum_sq(j);
}

static uint64_t add_s(uint64_t t_ns, double s)
{
    double ns = s * 1e9;
    if (!(ns < 1.8e19))
        return UINT64_MAX;
    uint64_t d = (uint64_t)ns;
    return t_ns > UINT64_MAX - d ? UINT64_MAX : t_ns + d;
}

/* Latest start that still meets the deadline if the job runs alone: by the prediction at the
 * current pace, or by the lower bound for a job admitted onto an idle engine (must_run_: the
 * model may be too pessimistic; it is expired only when even the lower bound no longer fits,
 * e.g. when a fifo delay outlasts its deadline). */
static uint64_t job_latest_start(const xf_batcher_t *b, const xf_bjob_t *j)
{
    double ns = job_alone_s(&b->cost, j) * (j->must_run_ ? XF_COST_LOWER : b->pace) * 1e9;
    uint64_t d = ns < 1.8e19 ? (uint64_t)ns : UINT64_MAX;
    return j->deadline_ns > d ? j->deadline_ns - d : 0;
}

/* Share of the time to its earliest deadline that a batch may take at the current pace: the
 * pace swings (2x within seconds on a shared 2-core machine), and a batch that ends past a
 * deadline is stopped and its work lost, while a smaller one costs little on a CPU (c0 is
 * small). */
#define XF_BATCH_SLACK 0.75

/* The cost model for deadline checks when a batch is formed: every coefficient × pace, over
 * XF_BATCH_SLACK. */
static void paced_cost(const xf_batcher_t *b, xf_cost_t *out)
{
    *out = b->cost;
    for (int k = 0; k < XF_COST_NF; k++)
        out->c[k] *= b->pace / XF_BATCH_SLACK;
}

void xf_batcher_set_pace(xf_batcher_t *b, double pace, double free_in_s)
{
    b->pace = pace > 1 && isfinite(pace) ? (pace < 1000 ? pace : 1000) : 1;
    b->free_in_s = free_in_s > 0 && isfinite(free_in_s) ? free_in_s : 0;
}

double xf_batcher_pace(const xf_batcher_t *b)
{
    return b->pace;
}

#define XF_RATE_TAU_S 1.0

/* The decayed arrival count at now. */
static double arrival_count(const xf_batcher_t *b, uint64_t now_ns)
{
    if (b->arr_cnt == 0 || now_ns <= b->arr_last_ns)
        return b->arr_cnt;
    return b->arr_cnt * exp(-(double)(now_ns - b->arr_last_ns) * 1e-9 / XF_RATE_TAU_S);
}

double xf_batcher_backlog_s(const xf_batcher_t *b)
{
    if (b->n == 0)
        return 0;
    double batches = ceil((double)b->n / (double)b->o.max_batch);
    return b->cost.c[0] * batches + b->cost.c[1] * (double)b->tokens + b->cost.c[2] * b->sum_sq;
}

static void enqueue(xf_batcher_t *b, xf_bjob_t *job)
{
    job->seq_ = b->seq++;
    b->q[b->n++] = job;
    b->tokens += job->n_tokens;
    b->sum_sq += job_sum_sq(job);
}

/* Seconds → whole seconds for Retry-After: rounded up, at least 1, at most cap_s rounded down
 * (the request's timeout: a client told to wait longer than its own deadline is told nothing
 * useful), but at least 1. */
static int retry_s(double s, double cap_s)
{
    double c = floor(cap_s + 1e-6);
    if (!(c >= 1))
        c = 1;
    double r = ceil(s);
    if (!(r >= 1))
        r = 1;
    if (r > c)
        r = c;
    return r > 3600 ? 3600 : (int)r;
}

/* Share of the time to its deadline that a queued job's predicted wait plus run may take: the
 * wait prediction lags behind a load that grows (the loop's and HTTP threads' own CPU, the
 * scale correction learning from finished batches only), and an admitted job that then misses
 * its deadline costs more than one refused on arrival. Half: on a 2-core machine shared with
 * other work the engine's pace swings 2× within seconds; with 0.8 a 200-client loopback
 * overload (BERT-base demo, 10 s deadline, load ~21) ended 42-53 % of the admitted requests
 * late, with 0.5 0-23 % (doc/admission.md), and served as many or more. */
#define XF_ADMIT_MARGIN 0.5

int xf_batcher_admit(xf_batcher_t *b, xf_bjob_t *job, uint64_t now_ns, const xf_load_t *load,
                     xf_admit_t *out)
{
    xf_admit_t a = {0, 0, 0, 1};
    if (out)
        *out = a;
    if (!job || job->n_seqs < 1 || !job->lens)
        return -EINVAL;
    int64_t sum = 0;
    int32_t mx = 0;
    for (int32_t i = 0; i < job->n_seqs; i++) {
        if (job->lens[i] < 1)
            return -EINVAL;
        sum += job->lens[i];
        if (job->lens[i] > mx)
            mx = job->lens[i];
    }
    if (sum != job->n_tokens || !(job->sum_sq >= 0))
        return -EINVAL;
    /* The offered rate counts refused jobs too: they are load the plan competes with. */
    b->arr_cnt = arrival_count(b, now_ns) + 1;
    if (now_ns > b->arr_last_ns)
        b->arr_last_ns = now_ns;
    job->max_len_ = mx;
    job->must_run_ = 0;
    a.alone_s = job_alone_s(&b->cost, job);
    a.lower_s = a.alone_s * XF_COST_LOWER;
    double left_s = job->deadline_ns > now_ns ? (double)(job->deadline_ns - now_ns) * 1e-9 : 0;
    double timeout_s = job->deadline_ns > job->enqueue_ns
                           ? (double)(job->deadline_ns - job->enqueue_ns) * 1e-9 : left_s;
    int nw = load && load->n_workers > 0 ? load->n_workers : 1;
    /* The running batches' progress says how far off the model is right now (a machine busier
     * than at warm-up): the queue ahead and the job itself will go as slowly. */
    double slow = load && load->slow > 1 ? load->slow : 1;
    a.wait_s = ((load && load->running_s > 0 ? load->running_s : 0) +
                xf_batcher_backlog_s(b) * slow) / nw;
    a.retry_after_s = retry_s(a.wait_s, timeout_s);
    if (out)
        *out = a;
    if (job->n_tokens > b->o.max_queued_tokens)
        return XF_ETOOLONG;
    if (a.lower_s > left_s)
        return XF_EDEADLINE;
    if (b->n >= (size_t)b->o.max_queue_jobs ||
        b->tokens + job->n_tokens > b->o.max_queued_tokens)
        return -EAGAIN;
    int idle = !load || (load->idle_workers > 0 && b->n == 0);
    if (idle) {
        /* Nothing ahead of it: it starts now. Whatever the model predicts, the lower bound
         * fits: run it (the model learns from the run; a batch past its deadline stops). */
        job->must_run_ = load != NULL;
    } else if (a.wait_s + a.alone_s * slow > XF_ADMIT_MARGIN * left_s) {
        if (load->unmeasured) {
            /* Judged at the start-up pace (slow); one layer later the measured one decides. */
            a.retry_after_s = 1;
            if (out)
                *out = a;
        }
        return -EBUSY;
    }
    enqueue(b, job);
    return 0;
}

int xf_batcher_push(xf_batcher_t *b, xf_bjob_t *job, uint64_t now_ns)
{
    return xf_batcher_admit(b, job, now_ns, NULL, NULL);
}

int xf_batcher_requeue(xf_batcher_t *b, xf_bjob_t *job)
{
    if (b->n >= (size_t)b->o.max_queue_jobs)
        return -EAGAIN;
    job->must_run_ = 0;
    enqueue(b, job);
    return 0;
}

/* Remove the marked queue entries (b->mark[i]) keeping arrival order. */
static void remove_marked(xf_batcher_t *b)
{
    size_t w = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->mark[i]) {
            b->tokens -= b->q[i]->n_tokens;
            b->sum_sq -= job_sum_sq(b->q[i]);
            b->mark[i] = 0;
        } else {
            b->q[w++] = b->q[i];
        }
    }
    b->n = w;
    if (b->n == 0)
        b->sum_sq = 0;   /* no drift from floating-point subtraction */
}

size_t xf_batcher_expire(xf_batcher_t *b, uint64_t now_ns, xf_bjob_t **out, size_t cap)
{
    /* The earliest it could start: when a worker is free. */
    uint64_t start = add_s(now_ns, b->free_in_s);
    size_t k = 0;
    for (size_t i = 0; i < b->n && k < cap; i++) {
        if (job_latest_start(b, b->q[i]) < start) {
            b->mark[i] = 1;
            out[k++] = b->q[i];
        }
    }
    if (k)
        remove_marked(b);
    return k;
}

uint64_t xf_batcher_expiry_ns(const xf_batcher_t *b)
{
    uint64_t t = UINT64_MAX, f = add_s(0, b->free_in_s);
    for (size_t i = 0; i < b->n; i++) {
        uint64_t s = job_latest_start(b, b->q[i]);
        s = s > f ? s - f : 0;
        if (s < t)
            t = s;
    }
    return t;
}

size_t xf_batcher_take_all(xf_batcher_t *b, xf_bjob_t **out, size_t cap)
{
    size_t k = b->n < cap ? b->n : cap;
    for (size_t i = 0; i < k; i++) {
        out[i] = b->q[i];
        b->mark[i] = 1;
    }
    remove_marked(b);
    return k;
}

void xf_batcher_drain(xf_batcher_t *b)
{
    b->draining = 1;
}

/* Weight of a job in the dp objective: 1 + age/aging (1 without aging). */
static double job_weight(const xf_bjob_t *j, uint64_t now_ns, uint64_t aging_ns)
{
    if (aging_ns == 0 || now_ns <= j->enqueue_ns)
        return 1.0;
    return 1.0 + (double)(now_ns - j->enqueue_ns) / (double)aging_ns;
}

int xf_batcher_dp_split(const xf_cost_t *cm, xf_bjob_t *const *jobs, size_t n,
                        int32_t max_batch, int64_t max_batch_tokens, uint64_t now_ns,
                        uint64_t aging_ns, double future_w, size_t *ends, size_t *n_batches,
                        double *total_s)
{
    if (n == 0 || n > XF_DP_MAX || max_batch < 1 || max_batch_tokens < 1)
        return -EINVAL;
    /* A[i]: additive seconds of jobs [0, i); tok[i]: their tokens. The k-th batch (1-based)
     * ending at job i finishes at k·c0 + A[i] after now, and delays the i−j jobs it holds. */
    double A[XF_DP_MAX + 1], W[XF_DP_MAX + 1];   /* W[i]: Σ weights of jobs [0, i) */
    int64_t tok[XF_DP_MAX + 1];
    A[0] = 0;
    W[0] = 0;
    tok[0] = 0;
    for (size_t i = 0; i < n; i++) {
        A[i + 1] = A[i] + job_additive_s(cm, jobs[i]);
        W[i + 1] = W[i] + job_weight(jobs[i], now_ns, aging_ns);
        tok[i + 1] = tok[i] + jobs[i]->n_tokens;
    }
    const double c0 = cm->c[0];
    /* F[k][i]: least Σ weight·finish time of jobs [0, i) in exactly k batches; par: the j it
     * came from. Two passes: with deadlines, then (if infeasible) without. */
    double F[XF_DP_MAX + 1][XF_DP_MAX + 1];         /* 34 KB of stack, loop thread */
    unsigned char par[XF_DP_MAX + 1][XF_DP_MAX + 1];
    int rc = 0;
    for (int pass = 0; pass < 2; pass++) {
        const int use_deadlines = pass == 0;
        for (size_t k = 0; k <= n; k++)
            for (size_t i = 0; i <= n; i++)
                F[k][i] = INFINITY;
        F[0][0] = 0;
        for (size_t k = 1; k <= n; k++) {
            for (size_t i = k; i <= n; i++) {
                double fin = (double)k * c0 + A[i];
                uint64_t fin_ns = add_s(now_ns, fin);
                uint64_t min_dl = UINT64_MAX;
                /* j walks down from i-1: batch (j, i] grows one job at a time. */
                for (size_t j = i; j-- > k - 1;) {
                    size_t cnt = i - j;
                    if (jobs[j]->deadline_ns < min_dl)
                        min_dl = jobs[j]->deadline_ns;
                    if (cnt > 1 && (cnt > (size_t)max_batch ||
                                    tok[i] - tok[j] > max_batch_tokens))
                        break;
                    if (use_deadlines && fin_ns > min_dl)
                        break;   /* adding earlier jobs only lowers min_dl */
                    if (F[k - 1][j] == INFINITY)
                        continue;
                    double v = F[k - 1][j] + (W[i] - W[j]) * fin;
                    if (v < F[k][i]) {
                        F[k][i] = v;
                        par[k][i] = (unsigned char)j;
                    }
                }
            }
        }
        /* Jobs that arrive while the plan runs wait for all of it: weight future_w on the
         * plan's end, k·c0 + A[n] — a per-batch price that grows with the arrival rate. */
        size_t best_k = 0;
        double best = INFINITY;
        for (size_t k = 1; k <= n; k++) {
            double v = F[k][n] + future_w * ((double)k * c0 + A[n]);
            if (v < best) {
                best = v;
                best_k = k;
            }
        }
        if (best_k == 0) {
            rc = -ENOENT;
            continue;
        }
        size_t i = n;
        for (size_t k = best_k; k >= 1; k--) {
            ends[k - 1] = i;
            i = par[k][i];
        }
        *n_batches = best_k;
        *total_s = best;
        return rc;
    }
    return -EINVAL;   /* unreachable: without deadlines one job per batch is always feasible */
}

/* Order the dp window by Smith's ratio: additive cost over weight, ascending (shortest
 * first without aging; aging moves old jobs forward). Insertion sort: w ≤ XF_DP_MAX. */
static void sort_wspt(const xf_cost_t *cm, xf_bjob_t **jobs, size_t n, uint64_t now_ns,
                      uint64_t aging_ns)
{
    double key[XF_DP_MAX];
    for (size_t i = 0; i < n; i++)
        key[i] = job_additive_s(cm, jobs[i]) / job_weight(jobs[i], now_ns, aging_ns);
    for (size_t i = 1; i < n; i++) {
        xf_bjob_t *j = jobs[i];
        double kj = key[i];
        size_t p = i;
        while (p > 0 && (key[p - 1] > kj || (key[p - 1] == kj && jobs[p - 1]->seq_ > j->seq_))) {
            key[p] = key[p - 1];
            jobs[p] = jobs[p - 1];
            p--;
        }
        key[p] = kj;
        jobs[p] = j;
    }
}

static int cmp_deadline(const void *a, const void *b)
{
    const xf_bjob_t *x = *(xf_bjob_t *const *)a, *y = *(xf_bjob_t *const *)b;
    if (x->deadline_ns != y->deadline_ns)
        return x->deadline_ns < y->deadline_ns ? -1 : 1;
    return x->seq_ < y->seq_ ? -1 : x->seq_ > y->seq_;
}

static void fill_info(const xf_cost_t *cm, xf_bjob_t *const *jobs, size_t n,
                      xf_batch_info_t *info)
{
    memset(info, 0, sizeof(*info));
    info->n_jobs = n;
    for (size_t i = 0; i < n; i++) {
        const xf_bjob_t *j = jobs[i];
        info->n_seqs += j->n_seqs;
        info->n_tokens += j->n_tokens;
        for (int32_t s = 0; s < j->n_seqs; s++) {
            info->sum_sq += (int64_t)j->lens[s] * j->lens[s];
            if (j->lens[s] > info->max_len)
                info->max_len = j->lens[s];
        }
    }
    info->pad_tokens = info->n_seqs * (int64_t)info->max_len - info->n_tokens;
    xf_cost_sample_t s = {.tokens = (double)info->n_tokens};
    for (size_t i = 0; i < n; i++)
        s.sum_sq += job_sum_sq(jobs[i]);
    info->predicted_s = xf_cost_predict(cm, &s);
}

/* When no plan meets every deadline, the first batch may hold jobs it would finish too late:
 * computing them wastes the worker. Move such jobs to the end of jobs[0..k) (so they stay
 * queued; expiry answers them) until every job left meets its deadline with the smaller
 * batch. Returns the new k, at least 1. */
static size_t drop_late(const xf_cost_t *cm, xf_bjob_t **jobs, size_t k, uint64_t now_ns)
{
    for (;;) {
        xf_cost_sample_t f = {0};
        for (size_t i = 0; i < k; i++) {
            f.tokens += jobs[i]->n_tokens;
            f.sum_sq += job_sum_sq(jobs[i]);
        }
        uint64_t fin = add_s(now_ns, xf_cost_predict(cm, &f));
        size_t w = 0, dropped = 0;
        for (size_t i = 0; i < k; i++) {
            if (jobs[i]->deadline_ns < fin && k - dropped > 1) {
                dropped++;
                continue;
            }
            jobs[w++] = jobs[i];
        }
        if (dropped == 0)
            return k;
        k = w;   /* the batch shrank, so its finish moved earlier: check again */
    }
}

/* Take the jobs of b->scratch[0..k) out of the queue into out[]. */
static void dispatch(xf_batcher_t *b, size_t k, xf_bjob_t **out)
{
    for (size_t i = 0; i < k; i++) {
        out[i] = b->scratch[i];
        for (size_t q = 0; q < b->n; q++)
            if (b->q[q] == out[i]) {
                b->mark[q] = 1;
                break;
            }
    }
    remove_marked(b);
}

int xf_batcher_next(xf_batcher_t *b, uint64_t now_ns, xf_bjob_t **out, size_t cap,
                    size_t *n_out, xf_batch_info_t *info, uint64_t *wake_ns)
{
    if (cap == 0)
        return -EINVAL;
    *n_out = 0;
    *wake_ns = UINT64_MAX;
    if (b->n == 0) {
        if (info)
            memset(info, 0, sizeof(*info));
        return 0;
    }
    size_t limit = (size_t)b->o.max_batch < cap ? (size_t)b->o.max_batch : cap;
    size_t k = 0;
    /* Deadlines are checked at the pace the engine shows now (xf_batcher_set_pace), with
     * XF_BATCH_SLACK to spare. */
    xf_cost_t pc;
    paced_cost(b, &pc);
    switch (b->o.policy) {
    case XF_BATCH_NONE:
        b->scratch[k++] = b->q[0];
        break;
    case XF_BATCH_FIFO: {
        uint64_t due = b->q[0]->enqueue_ns + b->o.max_queue_delay_ns;
        if (due < b->q[0]->enqueue_ns)
            due = UINT64_MAX;
        if (!b->draining && b->n < limit && b->tokens < b->o.max_batch_tokens &&
            now_ns < due) {
            *wake_ns = due;
            break;
        }
        int64_t t = 0;
        for (size_t i = 0; i < b->n && k < limit; i++) {
            if (k > 0 && t + b->q[i]->n_tokens > b->o.max_batch_tokens)
                break;   /* length-blind but in order: stop at the first job that overflows */
            t += b->q[i]->n_tokens;
            b->scratch[k++] = b->q[i];
        }
        /* Not a job the batch would finish past its deadline (it stays queued: expiry). */
        k = drop_late(&pc, b->scratch, k, now_ns);
        break;
    }
    case XF_BATCH_TOKENS: {
        memcpy(b->scratch, b->q, b->n * sizeof(*b->q));
        qsort(b->scratch, b->n, sizeof(*b->scratch), cmp_deadline);
        /* EDF order, packed to the token budget; a job joins only if the grown batch still
         * ends before the earliest deadline in it (the first job's, by EDF), so batching
         * never makes an admitted job late. */
        xf_cost_sample_t f = {0};
        uint64_t first_dl = b->scratch[0]->deadline_ns;
        for (size_t i = 0; i < b->n && k < limit; i++) {
            xf_bjob_t *j = b->scratch[i];
            xf_cost_sample_t g = f;
            g.tokens += j->n_tokens;
            g.sum_sq += job_sum_sq(j);
            if (k > 0 && (g.tokens > (double)b->o.max_batch_tokens ||
                          add_s(now_ns, xf_cost_predict(&pc, &g)) > first_dl))
                continue;   /* a smaller job further on may still fit */
            f = g;
            b->scratch[k++] = j;
        }
        break;
    }
    case XF_BATCH_DP: {
        size_t w = b->n;
        memcpy(b->scratch, b->q, b->n * sizeof(*b->q));
        if (w > (size_t)b->o.dp_window) {
            /* Most urgent jobs first so that nothing starves behind a stream of short ones. */
            qsort(b->scratch, b->n, sizeof(*b->scratch), cmp_deadline);
            w = (size_t)b->o.dp_window;
        }
        sort_wspt(&b->cost, b->scratch, w, now_ns, b->o.dp_aging_ns);
        /* Jobs expected to arrive while the plan runs (rate × the plan's length as one
         * batch), weighted by XF_DP_FUTURE: the queue alone makes the DP myopic — it splits
         * to finish today's short jobs early and pays c0 again and again, which costs
         * throughput under load. */
        double plan_s = b->cost.c[0], future_w = 0;
        for (size_t i = 0; i < w; i++)
            plan_s += job_additive_s(&b->cost, b->scratch[i]);
        if (!b->draining)
            future_w = XF_DP_FUTURE * plan_s * arrival_count(b, now_ns) / XF_RATE_TAU_S;
        size_t ends[XF_DP_MAX], nb;
        double tot;
        int rc = xf_batcher_dp_split(&pc, b->scratch, w, b->o.max_batch,
                                     b->o.max_batch_tokens, now_ns, b->o.dp_aging_ns,
                                     future_w, ends, &nb, &tot);
        if (rc == -ENOENT) {
            /* Shortest-first cannot meet every deadline: a long urgent job sits at the end.
             * Split the earliest-deadline-first order instead (its own fallback, when even
             * that fails, still serves the most urgent first; expiry answers the rest). */
            qsort(b->scratch, w, sizeof(*b->scratch), cmp_deadline);
            rc = xf_batcher_dp_split(&pc, b->scratch, w, b->o.max_batch,
                                     b->o.max_batch_tokens, now_ns, b->o.dp_aging_ns,
                                     future_w, ends, &nb, &tot);
        }
        if (rc != 0 && rc != -ENOENT)
            return rc;
        k = ends[0] < limit ? ends[0] : limit;
        if (rc == -ENOENT)
            k = drop_late(&pc, b->scratch, k, now_ns);
        break;
    }
    default:
        return -EINVAL;
    }
    if (k == 0) {
        if (info)
            memset(info, 0, sizeof(*info));
        return 0;
    }
    dispatch(b, k, out);
    *n_out = k;
    if (info)
        fill_info(&b->cost, out, k, info);
    return 0;
}

void xf_batcher_observe(xf_batcher_t *b, const int32_t *lens, size_t n, double seconds)
{
    if (n == 0)
        return;
    xf_cost_sample_t s;
    xf_cost_features(lens, n, false, &s);
    s.seconds = seconds;
    (void)xf_cost_observe(&b->cost, &s);
}

void xf_batcher_observe_jobs(xf_batcher_t *b, xf_bjob_t *const *jobs, size_t n_jobs,
                             double seconds)
{
    xf_cost_sample_t s = {0};
    for (size_t i = 0; i < n_jobs; i++) {
        s.tokens += jobs[i]->n_tokens;
        s.sum_sq += job_sum_sq(jobs[i]);
    }
    if (n_jobs == 0)
        return;
    s.seconds = seconds;
    (void)xf_cost_observe(&b->cost, &s);
}

xf_cost_t *xf_batcher_cost(xf_batcher_t *b)
{
    return &b->cost;
}

const xf_batcher_opts_t *xf_batcher_opts(const xf_batcher_t *b)
{
    return &b->o;
}

size_t xf_batcher_queued_jobs(const xf_batcher_t *b)
{
    return b->n;
}

int64_t xf_batcher_queued_tokens(const xf_batcher_t *b)
{
    return b->tokens;
}

int xf_batcher_retry_after_s(const xf_batcher_t *b)
{
    double r = ceil(xf_batcher_backlog_s(b));
    if (!(r >= 1))
        return 1;
    return r > 3600 ? 3600 : (int)r;
}
