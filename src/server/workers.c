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
    atomic_size_t arena_bytes;
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
};

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
    int want_logits = 0;
    for (int i = 0; i < n; i++) {
        n_seq += (size_t)jobs[i]->n_seq;
        n_tok += (size_t)jobs[i]->n_tokens;
        want_logits |= jobs[i]->want_logits;
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
    };
    uint64_t t0 = xf_now_ns();
    rc = xf_plan_build(wk->plan, &b, xf_ctx_threads(wk->ctx), diag);
    if (rc == 0)
        rc = xf_ctx_reserve(wk->ctx, wk->plan);
    xf_output_t out = {
        .pooling = wk->pool->pooling, .normalize = 0, .pooled = wk->pooled,
        .logits = want_logits ? wk->logits : NULL,
    };
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
    memset(r, 0, sizeof *r);
    r->n_jobs = n;
    r->n_seq = (int32_t)n_seq;
    r->n_tokens = (int32_t)n_tok;
    r->max_len = max_len;
    r->sum_sq = sum_sq;
    r->seconds = (double)(t1 - t0) * 1e-9;
    r->arena_bytes = ps.arena_bytes;
    r->naive_bytes = ps.naive_bytes;
    r->lower_bound_bytes = ps.lower_bound_bytes;
    r->worker = wk->index;
    if (rc < 0)
        return rc;

    s = 0;
    for (int i = 0; i < n; i++) {
        xf_job_t *j = jobs[i];
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

static void *worker_main(void *arg)
{
    worker_t *wk = arg;
    struct xf_workers *pool = wk->pool;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->stop && wk->jobs == NULL)
            pthread_cond_wait(&wk->cond, &pool->lock);
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
        xf_diag_t diag = { 0, "" };
        int rc = run_batch(wk, jobs, n, &r, &diag);
        if (rc < 0) {
            enum xf_http_err he = rc == -ENOMEM ? XF_HE_OUT_OF_MEMORY : XF_HE_INTERNAL;
            char msg[300];
            snprintf(msg, sizeof msg, "inference failed: %s%s%.200s", xf_strerror(rc),
                     diag.msg[0] ? ": " : "", diag.msg);
            for (int i = 0; i < n; i++)
                xf_job_fail(jobs[i], he, he == XF_HE_OUT_OF_MEMORY ? 1 : 0, msg);
        }
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
        pthread_cond_init(&wk->cond, NULL);
        p->n = i + 1;
        xf_ctx_opts_t co = { .n_threads = n_threads, .arena_chunk_bytes = 0 };
        if ((rc = xf_ctx_create(&co, &wk->ctx)) < 0) {
            if (diag)
                snprintf(diag->msg, sizeof diag->msg, "xf_ctx_create: %s", xf_strerror(rc));
            goto fail;
        }
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
            free(wk->cu);
            free(wk->ids);
            free(wk->types);
            free(wk->attn);
            free(wk->pooled);
            free(wk->logits);
            free(wk->jobs);
            pthread_cond_destroy(&wk->cond);
        }
        pthread_mutex_destroy(&p->lock);
        free(p->w);
    }
    free(p);
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
            pthread_cond_signal(&wk->cond);
            rc = 0;
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

size_t xf_workers_arena_bytes(xf_workers_t *p)
{
    size_t s = 0;
    for (int i = 0; i < p->n; i++)
        s += atomic_load_explicit(&p->w[i].arena_bytes, memory_order_relaxed);
    return s;
}
