/* Engine worker threads (see workers.h). Each worker: wait for a batch on its condition
 * variable, run it, copy rows out, report. The only engine calls on the request path are
 * here, and they run outside every server lock. Per-request attention selections travel in
 * the batch's per-sequence attn array; dense fallbacks are counted in the metrics (lock-free
 * atomics, safe from any thread). */
#include "config.h"

#include "server/workers.h"

#include "server/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct worker {
    struct xf_workers *pool;
    int index;
    pthread_t thread;
    int started;
    pthread_cond_t cond;       /* signalled when jobs are handed over or on stop */
    xf_job_t **jobs;           /* the handed-over batch (pool->lock); the worker takes it */
    int n_jobs;
    int busy;                  /* a batch is handed over or running (pool->lock) */
    /* Owned by the worker thread alone. */
    xf_ctx_t *ctx;
    xf_plan_t *plan;
    int32_t *cu, *ids, *types;
    size_t cap_seq, cap_tok, cap_types;
    const xf_attn_t **attn;    /* [n_seq] per-sequence selection (NULL: model default) */
    size_t cap_attn;
    float *pooled, *logits;
    size_t cap_pooled, cap_logits;
    void **states;             /* [n_seq] per-sequence attention state (jobs' attn_state) */
    size_t cap_states;
    float *hidden;             /* [n_tokens][d_model] when a job wants hidden states */
    size_t cap_hidden;
    atomic_size_t arena_bytes;
    size_t need_arena;         /* what the last over-cap plan wanted (worker thread) */
    /* The running batch's stop time (its earliest deadline; 0: never) and how far it got,
     * written by the forward's progress callback (a pool thread). */
    uint64_t stop_ns;
    uint64_t fwd_t0;           /* when the forward of the running batch began */
    atomic_int layers_done, n_layer;
    uint64_t fake_t0, fake_ns;  /* test hook: the running batch's start and its fake length */
} worker_t;

struct xf_workers {
    const xf_model_t *model;
    const xf_model_info_t *info;
    int n;
    worker_t *w;
    pthread_mutex_t lock;      /* protects every worker's jobs/n_jobs and stop; rank 6, leaf */
    int stop;
    xf_workers_done_fn done;
    void *user;
    enum xf_pooling pooling;
    size_t max_arena_bytes;    /* 0: no cap (set before the first submit) */
    int arena_idle_ms;         /* 0: never shrink (pool->lock) */
    atomic_uint_fast64_t progress;   /* layers finished by every worker (the watchdog's) */
    double fake_s_per_token;   /* test hook (xf_workers_set_fake_time); 0: off */
};

/* run_batch: the plan needs more arena than engine.max_arena_bytes (nothing ran). */
#define ARENA_OVER_CAP (-E2BIG)

/* Called by xf_forward after each layer: count progress for the watchdog, stop the batch
 * once its earliest deadline has passed (the forward returns XF_EDEADLINE), or as soon as the
 * pace of its layers so far says it would end past it, unless only the pooling is left. */
static int on_layer(void *user, int32_t done, int32_t n_layer)
{
    worker_t *wk = user;
    if (wk->fake_ns && n_layer > 0) {
        /* test hook: this layer ends no earlier than its share of the batch's fake length */
        uint64_t until = wk->fake_t0 + wk->fake_ns / (uint64_t)n_layer * (uint64_t)done;
        struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
    }
    atomic_fetch_add_explicit(&wk->pool->progress, 1, memory_order_relaxed);
    atomic_store_explicit(&wk->layers_done, done, memory_order_relaxed);
    atomic_store_explicit(&wk->n_layer, n_layer, memory_order_relaxed);
    /* After the last layer only pooling is left: finishing costs less than the wasted run. */
    if (done >= n_layer || wk->stop_ns == 0)
        return 0;
    uint64_t now = xf_now_ns();
    if (now > wk->stop_ns)
        return 1;
    /* Projected end at the mean layer time so far past the earliest deadline: stop before
     * it rather than answer late. No deadline has passed, so every job goes back to the
     * queue (fail_stopped), where the loop, at the pace this batch showed, answers those that
     * can no longer make it (503, before their deadline) and batches the others smaller. */
    if (done >= 1 && now > wk->fwd_t0) {
        double per_layer = (double)(now - wk->fwd_t0) / done;
        if ((double)now + per_layer * (double)(n_layer - done) > (double)wk->stop_ns)
            return 1;
    }
    return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* The variant label of a batch that fell back to dense: the one variant other than dense in
 * it (dense itself never falls back, so the attribution is exact), or "mixed" when several
 * variants could have. Static strings: registry names or a literal (a closed set). */
static const char *fallback_label(const xf_model_t *m, const xf_batch_t *b)
{
    const xf_attn_t *def = xf_model_attention(m);
    const char *dense = xf_attn_name(xf_attn_dense());
    const char *one = NULL;
    for (int32_t i = 0; i < b->n_seq; i++) {
        const xf_attn_t *a = b->attn && b->attn[i] ? b->attn[i] : def;
        const char *name = a ? xf_attn_name(a) : dense;
        if (!name || !strcmp(name, dense))
            continue;
        if (one && strcmp(one, name) != 0)
            return "mixed";
        one = name;
    }
    return one ? one : dense;
}

/* Pack the jobs into one batch and run it. On failure every job gets the status. */
static int run_batch(worker_t *wk, xf_job_t *const *jobs, int n, xf_batch_report_t *r,
                     xf_diag_t *diag)
{
    const xf_model_info_t *mi = wk->pool->info;
    size_t n_seq = 0, n_tok = 0;
    int want_logits = 0, want_hidden = 0, any_state = 0;
    for (int i = 0; i < n; i++) {
        n_seq += (size_t)jobs[i]->n_seq;
        n_tok += (size_t)jobs[i]->n_tokens;
        want_logits |= jobs[i]->want_logits;
        want_hidden |= jobs[i]->want_hidden && jobs[i]->hidden;
        any_state |= jobs[i]->attn_state != NULL;
    }
    if (mi->n_labels <= 0)
        want_logits = 0;
    size_t d = (size_t)mi->d_model, nl = (size_t)(mi->n_labels > 0 ? mi->n_labels : 1);
    int rc = 0;
    if ((rc = grow((void **)&wk->cu, &wk->cap_seq, n_seq + 1, sizeof(int32_t))) < 0 ||
        (rc = grow((void **)&wk->ids, &wk->cap_tok, n_tok + 1, sizeof(int32_t))) < 0)
        return rc;
    if ((rc = grow((void **)&wk->types, &wk->cap_types, n_tok + 1, sizeof(int32_t))) < 0)
        return rc;
    if ((rc = grow((void **)&wk->attn, &wk->cap_attn, n_seq + 1, sizeof(*wk->attn))) < 0)
        return rc;
    size_t cp = wk->cap_pooled, cl = wk->cap_logits;
    if ((rc = grow((void **)&wk->pooled, &cp, n_seq * d + 1, sizeof(float))) < 0)
        return rc;
    wk->cap_pooled = cp;
    if ((rc = grow((void **)&wk->logits, &cl, n_seq * nl + 1, sizeof(float))) < 0)
        return rc;
    wk->cap_logits = cl;
    if ((rc = grow((void **)&wk->states, &wk->cap_states, n_seq + 1, sizeof(void *))) < 0)
        return rc;
    if (want_hidden &&
        (rc = grow((void **)&wk->hidden, &wk->cap_hidden, n_tok * d + 1, sizeof(float))) < 0)
        return rc;

    size_t s = 0, k = 0;
    int32_t max_len = 0;
    double sum_sq = 0;
    int any_attn = 0;
    wk->cu[0] = 0;
    for (int i = 0; i < n; i++) {
        const xf_job_t *j = jobs[i];
        memcpy(wk->ids + k, j->ids, (size_t)j->n_tokens * sizeof(int32_t));
        memcpy(wk->types + k, j->type_ids, (size_t)j->n_tokens * sizeof(int32_t));
        k += (size_t)j->n_tokens;
        any_attn |= j->attn != NULL;
        for (int32_t q = 0; q < j->n_seq; q++) {
            int32_t len = j->lens[q];
            wk->attn[s] = j->attn;
            /* a session's sequence carries its own state in and out of the forward */
            wk->states[s] = j->n_seq == 1 ? (void *)j->attn_state : NULL;
            wk->cu[s + 1] = wk->cu[s] + len;
            s++;
            if (len > max_len)
                max_len = len;
            sum_sq += (double)len * (double)len;
        }
    }
    xf_batch_t b = {
        .n_seq = (int32_t)n_seq, .cu_len = wk->cu, .ids = wk->ids,
        .type_ids = mi->type_vocab_size > 0 ? wk->types : NULL,
        .attn = any_attn ? wk->attn : NULL,
        .attn_state = any_state ? (void *const *)wk->states : NULL,
    };
    uint64_t stop = 0;
    for (int i = 0; i < n; i++)
        if (jobs[i]->deadline_ns && (stop == 0 || jobs[i]->deadline_ns < stop))
            stop = jobs[i]->deadline_ns;
    wk->stop_ns = stop;
    atomic_store_explicit(&wk->layers_done, 0, memory_order_relaxed);
    uint64_t t0 = xf_now_ns();
    wk->fake_t0 = t0;
    wk->fake_ns = wk->pool->fake_s_per_token > 0
                      ? (uint64_t)((1e-3 + (double)n_tok * wk->pool->fake_s_per_token) * 1e9)
                      : 0;
    rc = xf_plan_build(wk->plan, &b, xf_ctx_threads(wk->ctx), diag);
    if (rc == 0 && wk->pool->max_arena_bytes) {
        xf_plan_stats_t need;
        xf_plan_get_stats(wk->plan, &need);
        if (need.arena_bytes > wk->pool->max_arena_bytes) {
            wk->need_arena = need.arena_bytes;
            return ARENA_OVER_CAP;
        }
    }
    if (rc == 0)
        rc = xf_ctx_reserve(wk->ctx, wk->plan);
    xf_output_t out = {
        .pooling = wk->pool->pooling, .normalize = 0, .pooled = wk->pooled,
        .logits = want_logits ? wk->logits : NULL,
        .hidden = want_hidden ? wk->hidden : NULL,
    };
    wk->fwd_t0 = xf_now_ns();
    if (rc == 0)
        rc = xf_forward(wk->ctx, wk->pool->model, wk->plan, &b, &out, diag);
    uint64_t t1 = xf_now_ns();
    atomic_store_explicit(&wk->arena_bytes, xf_ctx_arena_bytes(wk->ctx), memory_order_relaxed);

    xf_plan_stats_t ps;
    memset(&ps, 0, sizeof ps);
    if (rc == 0)
        xf_plan_get_stats(wk->plan, &ps);
    if (rc == 0 && ps.dense_fallbacks > 0)
        xf_metric_add(XF_M_attention_dense_fallback_total,
                      fallback_label(wk->pool->model, &b), NULL, 1);
    if (rc == 0) {
        xf_attn_prune_stats_t pst;
        xf_attn_prune_stats(&pst);
        xf_metrics_set_prune(pst.blocks, pst.blocks_pruned, pst.heads, pst.heads_pruned);
    }
    memset(r, 0, sizeof *r);
    r->n_jobs = n;
    r->n_seq = (int32_t)n_seq;
    r->n_tokens = (int32_t)n_tok;
    r->max_len = max_len;
    r->sum_sq = sum_sq;
    r->seconds = (double)(t1 - t0) * 1e-9;
    r->frac = 1.0;
    if (rc == XF_EDEADLINE) {
        int nlay = atomic_load_explicit(&wk->n_layer, memory_order_relaxed);
        int ld = atomic_load_explicit(&wk->layers_done, memory_order_relaxed);
        r->frac = nlay > 0 ? (double)ld / nlay : 0;
    } else if (rc < 0) {
        r->frac = 0;
    }
    r->arena_bytes = ps.arena_bytes;
    r->naive_bytes = ps.naive_bytes;
    r->lower_bound_bytes = ps.lower_bound_bytes;
    r->worker = wk->index;
    if (rc < 0)
        return rc;

    s = 0;
    k = 0;
    for (int i = 0; i < n; i++) {
        xf_job_t *j = jobs[i];
        if (want_hidden && j->want_hidden && j->hidden)
            memcpy(j->hidden, wk->hidden + k * d, (size_t)j->n_tokens * d * sizeof(float));
        k += (size_t)j->n_tokens;
        j->start_ns = t0;
        j->end_ns = t1;
        j->batch_seqs = (int32_t)n_seq;
        if (j->want_pooled && j->pooled) {
            memcpy(j->pooled, wk->pooled + s * d, (size_t)j->n_seq * d * sizeof(float));
            int norm = j->normalize < 0 ? mi->normalize : j->normalize;
            if (norm)
                xf_l2_normalize_rows(j->pooled, j->n_seq, (int32_t)d);
        }
        if (j->want_logits && j->logits && want_logits)
            memcpy(j->logits, wk->logits + s * nl, (size_t)j->n_seq * nl * sizeof(float));
        s += (size_t)j->n_seq;
    }
    return 0;
}

static void fail_all(xf_job_t *const *jobs, int n, int rc, const xf_diag_t *diag)
{
    enum xf_http_err he = rc == -ENOMEM ? XF_HE_OUT_OF_MEMORY : XF_HE_INTERNAL;
    char msg[300];
    snprintf(msg, sizeof msg, "inference failed: %s%s%.200s", xf_strerror(rc),
             diag->msg[0] ? ": " : "", diag->msg);
    for (int i = 0; i < n; i++)
        xf_job_fail(jobs[i], he, he == XF_HE_OUT_OF_MEMORY ? 1 : 0, msg);
}

static void report_add(xf_batch_report_t *r, const xf_batch_report_t *x)
{
    r->n_jobs += x->n_jobs;
    r->n_seq += x->n_seq;
    r->n_tokens += x->n_tokens;
    if (x->max_len > r->max_len)
        r->max_len = x->max_len;
    r->sum_sq += x->sum_sq;
    r->seconds += x->seconds;
    if (x->arena_bytes > r->arena_bytes) {
        r->arena_bytes = x->arena_bytes;
        r->naive_bytes = x->naive_bytes;
        r->lower_bound_bytes = x->lower_bound_bytes;
    }
}

static void fail_over_cap(worker_t *wk, xf_job_t *j)
{
    char msg[300];
    snprintf(msg, sizeof msg, "one text of the request needs %zu bytes of activation memory; "
             "the limit is %zu bytes (engine.max_arena_bytes): send shorter texts",
             wk->need_arena, wk->pool->max_arena_bytes);
    xf_job_fail(j, XF_HE_TOO_MANY_TOKENS, 0, msg);
}

/* A batch stopped at a layer boundary past its earliest deadline, or projected to end past it
 * (XF_EDEADLINE): the jobs whose deadline has passed get 504, whoever set the deadline (the
 * request was received in time; its compute was cut); the others go back to the queue. */
static void fail_stopped(worker_t *wk, xf_job_t *const *jobs, int n, const xf_batch_report_t *r)
{
    uint64_t now = xf_now_ns();
    for (int i = 0; i < n; i++) {
        xf_job_t *j = jobs[i];
        if (j->deadline_ns > now) {
            j->requeue = 1;
            continue;
        }
        char msg[256];
        snprintf(msg, sizeof msg, "the deadline (%d ms) passed while computing: the batch of %d "
                 "sequence(s) was stopped after layer %d of %d (%.0f ms in the engine)",
                 (int)((j->deadline_ns - j->enqueue_ns) / 1000000), (int)r->n_seq,
                 atomic_load(&wk->layers_done), atomic_load(&wk->n_layer), r->seconds * 1e3);
        xf_job_fail(j, XF_HE_COMPUTE_TIMEOUT, 0, msg);
    }
}

/* Answer the jobs of a batch (or part) that run_fit could not finish. */
static void fail_batch(worker_t *wk, xf_job_t *const *jobs, int n, int rc,
                       const xf_batch_report_t *r, const xf_diag_t *diag)
{
    if (rc == ARENA_OVER_CAP)
        fail_over_cap(wk, jobs[0]);
    else if (rc == XF_EDEADLINE)
        fail_stopped(wk, jobs, n, r);
    else
        fail_all(jobs, n, rc, diag);
}

static int run_fit(worker_t *wk, xf_job_t *const *jobs, int n, xf_batch_report_t *r,
                   xf_diag_t *diag);

/* One request whose texts do not fit together: run its sequences in two halves through views
 * of the job (the same buffers at offsets; run_batch reads ids, types, lens and writes pooled
 * and logits rows only through these pointers). */
static int run_job_halves(worker_t *wk, xf_job_t *j, xf_batch_report_t *r, xf_diag_t *diag)
{
    const xf_model_info_t *mi = wk->pool->info;
    int32_t h = j->n_seq / 2, tok_a = 0;
    for (int32_t q = 0; q < h; q++)
        tok_a += j->lens[q];
    xf_job_t va = *j, vb = *j;
    va.n_seq = h;
    va.n_tokens = tok_a;
    vb.n_seq = j->n_seq - h;
    vb.n_tokens = j->n_tokens - tok_a;
    vb.lens = j->lens + h;
    vb.ids = j->ids + tok_a;
    vb.type_ids = j->type_ids + tok_a;
    vb.pooled = j->pooled ? j->pooled + (size_t)h * (size_t)mi->d_model : NULL;
    vb.logits = j->logits && mi->n_labels > 0 ? j->logits + (size_t)h * (size_t)mi->n_labels
                                               : NULL;
    xf_job_t *v[2] = { &va, &vb };
    for (int part = 0; part < 2; part++) {
        xf_batch_report_t pr;
        memset(&pr, 0, sizeof pr);
        int rc = run_fit(wk, &v[part], 1, &pr, diag);
        if (rc < 0)
            return rc;   /* the caller answers the whole request */
        report_add(r, &pr);
    }
    j->start_ns = va.start_ns;
    j->end_ns = vb.end_ns;
    j->batch_seqs = va.batch_seqs > vb.batch_seqs ? va.batch_seqs : vb.batch_seqs;
    return 0;
}

/* Run the jobs within engine.max_arena_bytes: a batch whose plan needs more is split in halves
 * (requests first, then one request's texts), each part run in turn. Returns 0, ARENA_OVER_CAP
 * when a single text cannot fit (n == 1: the caller answers 413), or run_batch's error; parts
 * of a split batch that fail are answered here. */
static int run_fit(worker_t *wk, xf_job_t *const *jobs, int n, xf_batch_report_t *r,
                   xf_diag_t *diag)
{
    int rc = run_batch(wk, jobs, n, r, diag);
    if (rc != ARENA_OVER_CAP)
        return rc;
    memset(r, 0, sizeof *r);
    r->worker = wk->index;
    if (n == 1)
        return jobs[0]->n_seq > 1 ? run_job_halves(wk, jobs[0], r, diag) : ARENA_OVER_CAP;
    int h = n / 2;
    for (int part = 0; part < 2; part++) {
        xf_job_t *const *pj = part ? jobs + h : jobs;
        int pn = part ? n - h : h;
        xf_batch_report_t pr;
        memset(&pr, 0, sizeof pr);
        xf_diag_t pd = { 0, "" };
        int prc = run_fit(wk, pj, pn, &pr, &pd);
        if (prc < 0)
            fail_batch(wk, pj, pn, prc, &pr, &pd);
        report_add(r, &pr);
    }
    return 0;
}

/* Free the worker's batch buffers (worker thread, or after it was joined): one list for the
 * idle shrink and xf_workers_free, so that a buffer added to worker_t is freed by both. */
static void free_buffers(worker_t *wk)
{
    free(wk->cu);
    free(wk->ids);
    free(wk->types);
    free(wk->attn);
    free(wk->states);
    free(wk->hidden);
    free(wk->pooled);
    free(wk->logits);
    wk->cu = wk->ids = wk->types = NULL;
    wk->attn = NULL;
    wk->states = NULL;
    wk->hidden = NULL;
    wk->pooled = wk->logits = NULL;
    wk->cap_seq = wk->cap_tok = wk->cap_types = wk->cap_attn = 0;
    wk->cap_pooled = wk->cap_logits = wk->cap_states = wk->cap_hidden = 0;
}

/* Wait for a batch or stop (pool->lock held). After engine.arena_idle_ms without a batch, free
 * the arena and the packing buffers once (outside the lock: no lock across an engine call). */
static void wait_for_jobs(worker_t *wk)
{
    struct xf_workers *pool = wk->pool;
    while (!pool->stop && wk->jobs == NULL) {
        if (pool->arena_idle_ms <= 0 || atomic_load(&wk->arena_bytes) == 0) {
            pthread_cond_wait(&wk->cond, &pool->lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)pool->arena_idle_ms * 1000000ull;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        int rc = pthread_cond_timedwait(&wk->cond, &pool->lock, &ts);
        if (rc != ETIMEDOUT || pool->stop || wk->jobs != NULL)
            continue;
        pthread_mutex_unlock(&pool->lock);
        xf_ctx_shrink(wk->ctx);
        free_buffers(wk);
        atomic_store(&wk->arena_bytes, 0);
        xf_metric_add(XF_M_arena_shrinks_total, NULL, NULL, 1);
        pthread_mutex_lock(&pool->lock);
    }
}

static void *worker_main(void *arg)
{
    worker_t *wk = arg;
    struct xf_workers *pool = wk->pool;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        wait_for_jobs(wk);
        if (wk->jobs == NULL) {    /* stop with nothing to do */
            pthread_mutex_unlock(&pool->lock);
            break;
        }
        xf_job_t **jobs = wk->jobs;    /* the worker owns the array from here */
        int n = wk->n_jobs;
        wk->jobs = NULL;
        wk->n_jobs = 0;
        pthread_mutex_unlock(&pool->lock);

        xf_batch_report_t r;
        memset(&r, 0, sizeof r);   /* run_batch's early -ENOMEM returns leave it unset */
        r.worker = wk->index;
        xf_diag_t diag = { 0, "" };
        int rc = run_fit(wk, jobs, n, &r, &diag);
        if (rc < 0)
            fail_batch(wk, jobs, n, rc, &r, &diag);
        /* Idle before reporting, so the loop can hand over the next batch from the report. */
        pthread_mutex_lock(&pool->lock);
        wk->busy = 0;
        pthread_mutex_unlock(&pool->lock);
        pool->done(jobs, n, &r, pool->user);
        free(jobs);
    }
    return NULL;
}

int xf_workers_create(const xf_model_t *m, int n_workers, int n_threads,
                      enum xf_pooling pooling, xf_workers_done_fn done, void *user,
                      xf_workers_t **out, xf_diag_t *diag)
{
    if (n_workers < 1 || !done)
        return -EINVAL;
    struct xf_workers *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->model = m;
    p->info = xf_model_info(m);
    p->done = done;
    p->user = user;
    p->pooling = pooling == XF_POOL_NONE ? XF_POOL_DEFAULT : pooling;
    p->w = calloc((size_t)n_workers, sizeof *p->w);
    int rc = -ENOMEM;
    if (!p->w)
        goto fail;
    pthread_mutex_init(&p->lock, NULL);
    for (int i = 0; i < n_workers; i++) {
        worker_t *wk = &p->w[i];
        wk->pool = p;
        wk->index = i;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* the idle timeout's clock */
        pthread_cond_init(&wk->cond, &ca);
        pthread_condattr_destroy(&ca);
        p->n = i + 1;
        xf_ctx_opts_t co = { .n_threads = n_threads, .arena_chunk_bytes = 0 };
        if ((rc = xf_ctx_create(&co, &wk->ctx)) < 0) {
            if (diag)
                snprintf(diag->msg, sizeof diag->msg, "xf_ctx_create: %s", xf_strerror(rc));
            goto fail;
        }
        xf_ctx_set_progress(wk->ctx, on_layer, wk);
        if ((rc = xf_plan_create(m, &wk->plan)) < 0) {
            if (diag)
                snprintf(diag->msg, sizeof diag->msg, "xf_plan_create: %s", xf_strerror(rc));
            goto fail;
        }
    }
    for (int i = 0; i < n_workers; i++) {
        rc = -pthread_create(&p->w[i].thread, NULL, worker_main, &p->w[i]);
        if (rc < 0)
            goto fail;
        p->w[i].started = 1;
    }
    *out = p;
    return 0;
fail:
    xf_workers_free(p);
    return rc;
}

void xf_workers_free(xf_workers_t *p)
{
    if (!p)
        return;
    if (p->w) {
        pthread_mutex_lock(&p->lock);
        p->stop = 1;
        for (int i = 0; i < p->n; i++)
            pthread_cond_signal(&p->w[i].cond);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->n; i++) {
            worker_t *wk = &p->w[i];
            if (wk->started)
                pthread_join(wk->thread, NULL);
            xf_plan_free(wk->plan);
            xf_ctx_free(wk->ctx);
            free_buffers(wk);
            free(wk->jobs);
            pthread_cond_destroy(&wk->cond);
        }
        pthread_mutex_destroy(&p->lock);
        free(p->w);
    }
    free(p);
}

void xf_workers_set_arena_limits(xf_workers_t *p, size_t max_arena_bytes, int arena_idle_ms)
{
    pthread_mutex_lock(&p->lock);
    p->max_arena_bytes = max_arena_bytes;
    p->arena_idle_ms = arena_idle_ms;
    for (int i = 0; i < p->n; i++)
        pthread_cond_signal(&p->w[i].cond);   /* re-arm idle waits with the new timeout */
    pthread_mutex_unlock(&p->lock);
}

void xf_workers_set_fake_time(xf_workers_t *p, double s_per_token)
{
    pthread_mutex_lock(&p->lock);
    p->fake_s_per_token = s_per_token > 0 ? s_per_token : 0;
    pthread_mutex_unlock(&p->lock);
}

int xf_workers_idle(xf_workers_t *p)
{
    int idle = 0;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->n; i++)
        idle += !p->w[i].busy;
    pthread_mutex_unlock(&p->lock);
    return idle;
}

int xf_workers_submit(xf_workers_t *p, xf_job_t *const *jobs, int n)
{
    if (n <= 0)
        return -EINVAL;
    xf_job_t **copy = malloc((size_t)n * sizeof *copy);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, jobs, (size_t)n * sizeof *copy);
    int rc = -EBUSY;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->n; i++) {
        worker_t *wk = &p->w[i];
        if (!wk->busy) {
            wk->jobs = copy;
            wk->n_jobs = n;
            wk->busy = 1;
            /* no layer of this batch is done (the previous batch's count would read as done) */
            atomic_store_explicit(&wk->layers_done, 0, memory_order_relaxed);
            pthread_cond_signal(&wk->cond);
            rc = i;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (rc < 0)
        free(copy);
    return rc;
}

int xf_workers_warmup(xf_workers_t *p, const int32_t *lens, int n_seq, xf_batch_report_t *r,
                      xf_diag_t *diag)
{
    int32_t total = 0;
    for (int i = 0; i < n_seq; i++)
        total += lens[i];
    xf_job_t *j = NULL;
    int rc = xf_job_create(n_seq, total, &j);
    if (rc < 0)
        return rc;
    int32_t vocab = p->info->vocab_size > 1000 ? 1000 : p->info->vocab_size;
    for (int32_t i = 0; i < total; i++)
        j->ids[i] = vocab > 0 ? i % vocab : 0;
    memcpy(j->lens, lens, (size_t)n_seq * sizeof *lens);
    j->want_pooled = 1;
    rc = xf_job_alloc_outputs(j, p->info->d_model, p->info->n_labels);
    if (rc == 0)
        rc = run_batch(&p->w[0], &j, 1, r, diag);
    xf_job_free(j);
    return rc;
}

void xf_workers_layers(xf_workers_t *p, int i, int *done, int *n_layer)
{
    *done = 0;
    *n_layer = p->info->n_layer > 0 ? p->info->n_layer : 1;
    if (i < 0 || i >= p->n)
        return;
    int nl = atomic_load_explicit(&p->w[i].n_layer, memory_order_relaxed);
    *done = atomic_load_explicit(&p->w[i].layers_done, memory_order_relaxed);
    if (nl > 0)
        *n_layer = nl;
}

uint64_t xf_workers_progress(xf_workers_t *p)
{
    return p ? (uint64_t)atomic_load_explicit(&p->progress, memory_order_relaxed) : 0;
}

size_t xf_workers_arena_bytes(xf_workers_t *p)
{
    size_t s = 0;
    for (int i = 0; i < p->n; i++)
        s += atomic_load_explicit(&p->w[i].arena_bytes, memory_order_relaxed);
    return s;
}

int xf_workers_count(const xf_workers_t *p)
{
    return p ? p->n : 0;
}

int xf_workers_threads(const xf_workers_t *p, int i)
{
    return p && i >= 0 && i < p->n ? xf_ctx_threads(p->w[i].ctx) : 0;
}

size_t xf_workers_worker_arena_bytes(xf_workers_t *p, int i)
{
    return p && i >= 0 && i < p->n
               ? atomic_load_explicit(&p->w[i].arena_bytes, memory_order_relaxed) : 0;
}
