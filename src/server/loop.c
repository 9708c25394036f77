/* The loop thread (see loop.h). Every uv handle lives in struct xf_loop and is touched only
 * here. Drain order (STYLE.md §5): not ready → STOPPING=1 → finish queued jobs and requests
 * already being read within drain.timeout_ms (new requests get 503 draining, the port stays
 * open so /v2/health/ready answers 503), fail the rest with 503 → refuse new connections
 * (xf_http_refuse_connections; never MHD_quiesce_daemon, see http.c) → resume every
 * suspended connection → wait for the replies to go out → MHD_stop_daemon → stop workers →
 * close handles → uv_loop_close. */
#include "config.h"

#include "server/loop.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>
#include <uv.h>

#include "server/admit.h"
#include "server/batcher.h"
#include "server/http.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/notify.h"
#include "server/routes.h"
#include "server/sessions.h"

/* The loop's drain, in order; each phase only moves forward (drain_check, begin_drain).
 *   DRAIN_NONE       serving
 *   DRAIN_FINISHING  the port stays open (new requests 503 draining, ready 503); queued jobs
 *                    and requests already being read still run until drain.timeout_ms, then
 *                    the rest fail with 503
 *   DRAIN_WAITING    every job answered; new jobs fail at once; waiting (≤ 2 s) for the
 *                    replies to be written (inflight reaches 0)
 *   DRAIN_DONE       uv_stop called; xf_loop_run tears down */
enum drain_phase {
    DRAIN_NONE = 0,
    DRAIN_FINISHING,
    DRAIN_WAITING,
    DRAIN_DONE,
    DRAIN_PHASE_COUNT
};
_Static_assert(DRAIN_PHASE_COUNT == 4, "update the drain phase comment and drain_check");

/* Rejections are counted by enum xf_reject (admit.h); a failure that is not one: */
#define REJECT_NONE XF_REJ_COUNT

struct xf_loop {
    uv_loop_t uv;
    uv_async_t job_async;      /* new jobs in s->jobq */
    uv_async_t done_async;     /* finished jobs in s->doneq */
    uv_async_t ctl_async;      /* drain requested from another thread */
    uv_timer_t batch_timer;    /* batcher wake-up (fifo delay, deadlines) */
    uv_timer_t tick_timer;     /* metrics tick, 1 s */
    uv_timer_t drain_timer;    /* drain progress checks */
    uv_timer_t watchdog_timer;
    uv_timer_t conn_timer;     /* header/body deadlines of connections (xf_http_expire) */
    uv_signal_t sig_term, sig_int, sig_hup;
    int have_signals, have_watchdog;
    xf_batcher_t *batcher;
    xf_bjob_t **scratch;       /* [cap] batch or expired jobs */
    size_t cap;
    int busy_workers;
    int n_workers;
    atomic_int drain_req;
    enum drain_phase phase;    /* where the drain is (s->draining is the MHD-visible flag) */
    uint64_t drain_deadline_ns;
    uint64_t drain_phase2_ns;
    uint64_t last_progress_ns;
    uint64_t wd_progress;      /* the workers' layer counter at the last watchdog check */
    uint64_t watchdog_usec;
    uint64_t *run_end;         /* [n_workers] predicted end of the batch worker i runs (0:
                                  free) */
    uint64_t *run_start;       /* [n_workers] when it started */
    double resid_slow;         /* observed / predicted time of the last finished batch under
                                  the model as corrected by it (≥ 1): how far off the next
                                  batch's prediction still is before its first layer ends */
    uint64_t measured_ns;      /* when the engine's pace was last seen (a batch finished, or a
                                  running batch had a layer done); 0: never since start-up */
    int exit_status;
    int ticks_metrics;         /* this loop owns the process-wide metrics tick */
    int closed;                /* uv_loop_close done */
};

/* Metrics are process-wide and xf_metrics_tick() wants one caller: with several servers in one
 * process (tests), the first loop ticks. */
static atomic_int metrics_tick_claimed;

#define DEADLINE_TICK_NS 10000000ull   /* 10 ms */

const char *xf_loop_policy_name(const xf_server_t *s)
{
    return xf_batch_policy_name((enum xf_batch_policy)s->o.policy);
}

/* ---- completion --------------------------------------------------------------------- */

/* Hand a finished (or failed) job back to its connection. The job now belongs to the request
 * again: after MHD_resume_connection the loop never touches it. */
static void finish_job(xf_server_t *s, xf_job_t *j)
{
    (void)s;
    /* Late: answered after its deadline, whatever the answer (doc/admission.md). */
    if (j->deadline_ns && xf_now_ns() > j->deadline_ns)
        xf_metric_add(XF_M_late_replies_total,
                      j->status == XF_HE_NONE
                          ? "200" : xf_metrics_status_label((int)xf_http_err_status(j->status)),
                      NULL, 1);
    if (j->done_fn) {   /* no connection: an encoder session's compute (sessions.c) */
        j->done_fn(j);
        return;
    }
    struct MHD_Connection *c = j->conn;
    MHD_resume_connection(c);
}

/* Answer a job that will not run. A missed deadline the client chose itself (timeout_ms) is
 * 408 request_timeout without Retry-After: the client's choice, not a server fault. */
static void reject_job(xf_server_t *s, xf_job_t *j, enum xf_http_err code, int ra,
                       enum xf_reject reason, const char *msg)
{
    if (code == XF_HE_DEADLINE && j->client_deadline) {
        code = XF_HE_REQUEST_TIMEOUT;
        ra = 0;
    }
    xf_job_fail(j, code, ra, msg);
    if (reason < XF_REJ_COUNT)
        xf_metric_add(XF_M_rejected_total, xf_reject_label(reason), NULL, 1);
    finish_job(s, j);
}

static void fail_job(xf_server_t *s, xf_job_t *j, enum xf_http_err code,
                     enum xf_reject reason, const char *msg)
{
    xf_loop_t *L = s->loop;
    int ra = L->batcher ? xf_batcher_retry_after_s(L->batcher) : 1;
    if (code == XF_HE_DEADLINE && j->client_deadline)
        msg = "the request cannot finish within its timeout_ms";
    reject_job(s, j, code, ra, reason, msg);
}

static void fail_verdict(xf_server_t *s, xf_job_t *j, const xf_verdict_t *v)
{
    reject_job(s, j, v->code, v->retry_after_s, v->reason, v->msg);
}

/* A running batch's total time re-estimated from its layer progress (doc/admission.md):
 * after d of n layers in e seconds, e·n/d; before its first layer ends, at least the
 * prediction times the pace last seen (base) and at least e·n (its first layer alone has
 * taken e). */
static double running_total_s(double pred_s, double e_s, int d, int n, double base)
{
    if (d >= 1)
        return e_s * n / d;
    double t = pred_s * (base > 1 ? base : 1);
    return e_s * n > t ? e_s * n : t;
}

/* When no pace has been seen for XF_PACE_STALE_NS (start-up, or an engine idle that long),
 * nothing tells how fast the engine goes until the first layer of the next batch ends; until
 * then the running batch's rest, the queue ahead and each job's own time are judged as if the
 * engine went XF_COLD_PACE times slower than the cost model (the mirror of XF_COST_LOWER; after
 * an idle spell XF_IDLE_PACE: on these shared VMs the pace swings about 2x within seconds). A
 * batch running in its first layer since start-up is judged at XF_START_PACE: a real start
 * under 200 clients ran its first layers 10-40x the warm-up's prediction (load.unmeasured then
 * names the refusal). One layer later the measured pace replaces them. A burst after an idle
 * spell or at start-up is thus queued when it fits even at that pace, not refused wholesale
 * (it was: 7 of 8 concurrent one-text requests after 3 s idle got 429). */
#define XF_COLD_PACE 4.0
#define XF_IDLE_PACE 2.0
#define XF_START_PACE 40.0
#define XF_PACE_STALE_NS 2000000000ull

/* What admission, expiry and batch formation need of the engine: idle workers, the rest of
 * the running batches, how many times slower than the cost model the engine goes now (slow:
 * the running batches' layer progress; before their first layer, the last finished batch's
 * residual, or XF_COLD_PACE when nothing was measured lately, and then unmeasured) and the
 * seconds until a worker is free (*free_in, 0 when one is idle). */
static void current_load(const xf_server_t *s, xf_loop_t *L, uint64_t now, xf_load_t *ld,
                         double *free_in)
{
    ld->n_workers = L->n_workers;
    ld->idle_workers = L->n_workers - L->busy_workers;
    ld->running_s = 0;
    int fresh = L->measured_ns != 0 && now - L->measured_ns <= XF_PACE_STALE_NS;
    for (int i = 0; i < L->n_workers && !fresh; i++) {
        int d, n;
        xf_workers_layers(s->workers, i, &d, &n);
        fresh = L->run_end[i] != 0 && d >= 1;
    }
    int never = L->measured_ns == 0;   /* no layer has ended since start-up */
    double cold = never ? XF_COLD_PACE : XF_IDLE_PACE;
    double base = L->resid_slow > 1 ? L->resid_slow : 1;
    if (!fresh && base < cold)
        base = cold;
    ld->slow = 0;
    ld->unmeasured = 0;
    double first_free = ld->idle_workers > 0 ? 0 : -1;
    for (int i = 0; i < L->n_workers; i++) {
        if (L->run_end[i] == 0)
            continue;
        int d, n;
        xf_workers_layers(s->workers, i, &d, &n);
        int first = !fresh && never && d < 1;   /* its first layer, nothing measured yet */
        if (d >= 1)
            L->measured_ns = now;
        ld->unmeasured |= first;
        double pred = (double)(L->run_end[i] - L->run_start[i]) * 1e-9;
        double e = now > L->run_start[i] ? (double)(now - L->run_start[i]) * 1e-9 : 0;
        double pace = first && base < XF_START_PACE ? XF_START_PACE : base;
        double total = d >= n ? e : running_total_s(pred, e, d, n, pace);
        double rest = total > e ? total - e : 0;
        ld->running_s += rest;
        if (first_free < 0 || rest < first_free)
            first_free = rest;
        if (pred > 0 && total / pred > ld->slow)
            ld->slow = total / pred;
    }
    if (ld->slow == 0)      /* nothing running: the pace last seen */
        ld->slow = base;
    if (ld->slow < 1)
        ld->slow = 1;
    if (ld->slow > 1000)
        ld->slow = 1000;
    *free_in = first_free > 0 ? first_free : 0;
}

void xf_loop_jobs_done(xf_job_t **jobs, int n, const xf_batch_report_t *r, void *user)
{
    xf_server_t *s = user;
    if (n <= 0)
        return;
    jobs[0]->has_report = 1;
    jobs[0]->rep_seconds = r->seconds;
    jobs[0]->rep_tokens = r->n_tokens;
    jobs[0]->rep_sum_sq = r->sum_sq;
    jobs[0]->rep_n_seq = r->n_seq;
    jobs[0]->rep_frac = r->frac;
    jobs[0]->rep_worker = r->worker;
    if (r->arena_bytes) {
        xf_metric_set(XF_M_arena_bytes, "planned", NULL, (int64_t)r->arena_bytes);
        xf_metric_set(XF_M_arena_bytes, "naive", NULL, (int64_t)r->naive_bytes);
        xf_metric_set(XF_M_arena_bytes, "lower_bound", NULL, (int64_t)r->lower_bound_bytes);
    }
    int wake = 0;
    for (int i = 0; i < n; i++)
        wake |= xf_jobq_push(&s->doneq, jobs[i]);
    if (wake)
        uv_async_send(&s->loop->done_async);
}

void xf_loop_request_done(xf_server_t *s, int route, int status, double seconds)
{
    (void)s;
    xf_metric_add(XF_M_requests_total, xf_routes_label(route), xf_metrics_status_label(status),
                  1);
    (void)seconds;
}

/* ---- scheduling --------------------------------------------------------------------- */

static void schedule(xf_server_t *s);

static void on_batch_timer(uv_timer_t *t)
{
    schedule(t->data);
}

static void expire_jobs(xf_server_t *s, uint64_t now)
{
    xf_loop_t *L = s->loop;
    for (;;) {
        size_t n = xf_batcher_expire(L->batcher, now, L->scratch, L->cap);
        for (size_t i = 0; i < n; i++) {
            xf_verdict_t v;
            xf_admit_expired(s, L->batcher, L->scratch[i]->user, now, &v);
            fail_verdict(s, L->scratch[i]->user, &v);
        }
        if (n < L->cap)
            break;
    }
}

static void update_gauges(xf_server_t *s)
{
    xf_loop_t *L = s->loop;
    xf_metric_set(XF_M_queue_depth, NULL, NULL, (int64_t)xf_batcher_queued_jobs(L->batcher));
    xf_metric_set(XF_M_queued_tokens, NULL, NULL, xf_batcher_queued_tokens(L->batcher));
    xf_metric_set(XF_M_busy_workers, NULL, NULL, L->busy_workers);
}

static void schedule(xf_server_t *s)
{
    xf_loop_t *L = s->loop;
    uint64_t now = xf_now_ns();
    {
        /* Queued jobs are judged at the pace the engine shows now (re-read from the layer
         * counters on every call, at least every DEADLINE_TICK_NS while jobs wait). */
        xf_load_t ld;
        double free_in;
        current_load(s, L, now, &ld, &free_in);
        xf_batcher_set_pace(L->batcher, ld.slow, free_in);
    }
    expire_jobs(s, now);
    uint64_t wake = UINT64_MAX;
    /* Past the drain's deadline (drain.timeout_ms, or a second SIGTERM) nothing queued starts:
     * drain_check fails it. */
    int overdue = L->phase == DRAIN_FINISHING && now >= L->drain_deadline_ns;
    while (!overdue && L->busy_workers < L->n_workers) {
        size_t n = 0;
        xf_batch_info_t info;
        if (xf_batcher_next(L->batcher, now, L->scratch, L->cap, &n, &info, &wake) < 0)
            break;
        if (n == 0)
            break;
        xf_job_t *jobs_stack[64];
        xf_job_t **jobs = n <= 64 ? jobs_stack : malloc(n * sizeof *jobs);
        if (!jobs) {
            for (size_t i = 0; i < n; i++)
                fail_job(s, L->scratch[i]->user, XF_HE_OUT_OF_MEMORY, REJECT_NONE,
                         "out of memory");
            continue;
        }
        for (size_t i = 0; i < n; i++)
            jobs[i] = L->scratch[i]->user;
        int rc = xf_workers_submit(s->workers, jobs, (int)n);
        if (rc >= L->n_workers)
            rc = -EBUSY;   /* cannot happen: the pool has n_workers workers */
        if (rc < 0) {
            for (size_t i = 0; i < n; i++)
                fail_job(s, jobs[i], rc == -EBUSY ? XF_HE_INTERNAL : XF_HE_OUT_OF_MEMORY,
                         REJECT_NONE, "could not start the batch");
        } else {
            L->busy_workers++;
            uint64_t end = now + (uint64_t)(info.predicted_s * 1e9);
            if (end <= now)
                end = now + 1;
            /* Slot of the worker that runs it: its layer counter tells the batch's progress.
             * (A worker whose previous report the loop has not read yet may be handed the
             * batch; that report then finds its slot taken and leaves it.) */
            L->run_end[rc] = end;
            L->run_start[rc] = now;
            for (size_t i = 0; i < n; i++)
                jobs[i]->pred_end_ns = end;
            xf_metric_observe(XF_M_batch_size, NULL, NULL, (double)info.n_jobs);
            xf_metric_observe(XF_M_batch_sequences, NULL, NULL, (double)info.n_seqs);
            xf_metric_observe(XF_M_batch_tokens, NULL, NULL, (double)info.n_tokens);
            xf_metric_add(XF_M_batches_total, NULL, NULL, 1);
            xf_metric_add(XF_M_computed_tokens_total, NULL, NULL, (uint64_t)info.n_tokens);
            /* What a padded engine would have spent on this batch, for every policy, so the
             * policies compare on one metric (the packed engine itself pads nothing). */
            xf_metric_add(XF_M_padding_waste_tokens_total, NULL, NULL,
                          (uint64_t)info.pad_tokens);
            for (size_t i = 0; i < n; i++)
                xf_metric_observe(XF_M_request_duration_seconds, "queue", NULL,
                                  (double)(now - jobs[i]->enqueue_ns) * 1e-9);
        }
        if (jobs != jobs_stack)
            free(jobs);
        wake = UINT64_MAX;
    }
    update_gauges(s);
    /* The batcher's wake time covers its own waits (fifo delay); deadlines of queued jobs are
     * checked at least every DEADLINE_TICK_NS as well, so an expiring job is answered within
     * that much of the moment it can no longer finish. */
    if (xf_batcher_queued_jobs(L->batcher) > 0) {
        uint64_t expiry = xf_batcher_expiry_ns(L->batcher);
        if (expiry < wake)
            wake = expiry;
        if (wake > now + DEADLINE_TICK_NS)
            wake = now + DEADLINE_TICK_NS;
    }
    if (wake != UINT64_MAX) {
        uint64_t ms = wake > now ? (wake - now + 999999) / 1000000 : 0;
        uv_timer_start(&L->batch_timer, on_batch_timer, ms, 0);
    } else {
        uv_timer_stop(&L->batch_timer);
    }
}

static void on_jobs(uv_async_t *a)
{
    xf_server_t *s = a->data;
    xf_loop_t *L = s->loop;
    xf_job_t *j = xf_jobq_take_all(&s->jobq);
    uint64_t now = xf_now_ns();
    while (j) {
        xf_job_t *next = j->next;
        j->next = NULL;
        if (L->phase >= DRAIN_WAITING) {
            fail_job(s, j, XF_HE_DRAINING, XF_REJ_DRAINING, "server is shutting down");
            j = next;
            continue;
        }
        if (j->sjob) {   /* a session operation: its own per-session FIFO (sessions.c) */
            xf_sessions_push(s, j);
            j = next;
            continue;
        }
        /* Each admitted job changes the load the next one sees (an idle worker is taken). */
        xf_load_t ld;
        double free_in;
        current_load(s, L, now, &ld, &free_in);
        xf_verdict_t v;
        if (xf_admit_job(s, L->batcher, &ld, j, now, &v) < 0)
            fail_verdict(s, j, &v);
        else if (ld.idle_workers > 0 && xf_batcher_queued_jobs(L->batcher) == 1)
            schedule(s);   /* start it now, so the next arrival sees the worker busy */
        j = next;
    }
    schedule(s);
}

static void on_done(uv_async_t *a)
{
    xf_server_t *s = a->data;
    xf_loop_t *L = s->loop;
    xf_job_t *j = xf_jobq_take_all(&s->doneq);
    uint64_t now = xf_now_ns();
    while (j) {
        xf_job_t *next = j->next;
        j->next = NULL;
        if (j->has_report) {
            L->busy_workers--;
            L->last_progress_ns = now;
            L->measured_ns = now;
            int w = j->rep_worker;
            if (w >= 0 && w < L->n_workers && L->run_end[w] == j->pred_end_ns)
                L->run_end[w] = 0;
            /* A batch stopped at a layer boundary still teaches the model: its time scaled
             * to all layers (the model must be able to learn that it was too optimistic). */
            double frac = j->rep_frac;
            xf_cost_sample_t cs = { .tokens = j->rep_tokens, .sum_sq = j->rep_sum_sq,
                                    .pad_tokens = 0,
                                    .seconds = frac > 0 ? j->rep_seconds / frac : 0 };
            if (frac > 0 && (j->status == XF_HE_NONE || frac < 1)) {
                xf_cost_t *cm = xf_batcher_cost(L->batcher);
                xf_cost_observe(cm, &cs);
                xf_metrics_set_cost(cm->c, cm->n_fit, cm->n_obs);
                /* What the corrected model still misses of this batch (the scale moves only
                 * part of the way per batch): the next batch is assumed that much slower until
                 * its own first layer shows its pace. */
                double p = xf_cost_predict(cm, &cs);
                L->resid_slow = p > 0 && cs.seconds > p ? cs.seconds / p : 1;
            } else {
                xf_metric_add(XF_M_forward_errors_total, NULL, NULL, 1);
            }
        }
        if (j->requeue) {
            /* Its batch stopped for another job's deadline: queue it again. The report was
             * read above: the job must not carry it into its next batch. A job with an
             * attention state gets it back as before the batch first (the layers that ran
             * updated it). */
            j->requeue = 0;
            j->has_report = 0;
            int restored = !j->attn_state ? 0 : j->restore_fn ? j->restore_fn(j) : -1;
            if (restored < 0 && j->status == XF_HE_NONE)
                xf_job_fail(j, XF_HE_INTERNAL, 0, "the batch stopped for another request and "
                            "this sequence's attention state cannot be restored");
            if (restored == 0 && xf_batcher_requeue(L->batcher, &j->bj) == 0) {
                j = next;
                continue;
            }
            if (restored == 0)
                xf_job_fail(j, XF_HE_OVERLOADED, xf_batcher_retry_after_s(L->batcher),
                            "server overloaded: the queue is full; retry later");
        }
        if (j->status == XF_HE_COMPUTE_TIMEOUT)
            xf_metric_add(XF_M_rejected_total, xf_reject_label(XF_REJ_STOPPED), NULL, 1);
        if (j->status == XF_HE_NONE) {
            xf_metric_observe(XF_M_request_duration_seconds, "compute", NULL,
                              (double)(j->end_ns - j->start_ns) * 1e-9);
            xf_metric_observe(XF_M_request_duration_seconds, "total", NULL,
                              (double)(now - j->enqueue_ns) * 1e-9);
        }
        finish_job(s, j);
        j = next;
    }
    schedule(s);
}

/* ---- drain -------------------------------------------------------------------------- */

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void drain_check(uv_timer_t *t)
{
    xf_server_t *s = t->data;
    xf_loop_t *L = s->loop;
    uint64_t now = xf_now_ns();
    if (L->phase == DRAIN_FINISHING) {
        /* Jobs pushed just before the drain began are still in the job queue: admit them. */
        on_jobs(&L->job_async);
        /* Requests whose header arrived before the drain are still being read or parsed:
         * they are finished too (their jobs arrive through the job queue). */
        int empty = xf_batcher_queued_jobs(L->batcher) == 0 && L->busy_workers == 0 &&
                    atomic_load(&s->reading) == 0;
        if (!empty && now >= L->drain_deadline_ns) {
            for (;;) {
                size_t n = xf_batcher_take_all(L->batcher, L->scratch, L->cap);
                for (size_t i = 0; i < n; i++)
                    fail_job(s, L->scratch[i]->user, XF_HE_DRAINING, XF_REJ_DRAINING,
                             "server is shutting down (drain timeout)");
                if (n < L->cap)
                    break;
            }
        }
        if (xf_batcher_queued_jobs(L->batcher) == 0 && L->busy_workers == 0 &&
            (atomic_load(&s->reading) == 0 || now >= L->drain_deadline_ns) &&
            xf_sessions_idle(s)) {
            L->phase = DRAIN_WAITING;
            /* Until now new connections were served so that health checks see 503 rather
             * than a refused connection; nothing more will be admitted. (Not
             * MHD_quiesce_daemon: it races MHD's own threads, see http.c.) */
            xf_http_refuse_connections(s->http);
            L->drain_phase2_ns = now;
            /* New jobs from here on are failed at once (on_jobs). */
            on_jobs(&L->job_async);
        }
    }
    if (L->phase == DRAIN_WAITING) {
        on_jobs(&L->job_async);
        /* Every job is answered; wait (bounded) for the replies to be written. */
        if (atomic_load(&s->inflight) == 0 || now - L->drain_phase2_ns > 2000000000ull) {
            L->phase = DRAIN_DONE;
            uv_stop(&L->uv);
        }
    }
}

static void begin_drain(xf_server_t *s)
{
    xf_loop_t *L = s->loop;
    if (L->phase != DRAIN_NONE)
        return;
    L->phase = DRAIN_FINISHING;
    atomic_store(&s->ready, 0);
    atomic_store(&s->draining, 1);
    if (s->o.notify) {
        xf_notify_stopping();
        xf_notify_status("draining");
    }
    XF_LOGI("drain: stop accepting, finishing %zu queued request(s) within %d ms",
            xf_batcher_queued_jobs(L->batcher), s->o.drain_timeout_ms);
    /* Nothing more will arrive to batch the queued jobs with: the batcher stops waiting (fifo
     * delay), and what the idle workers can take starts now, before the drain's clock starts,
     * so that a drain.timeout_ms shorter than the batching delay does not fail it. With
     * drain.timeout_ms = 0 nothing queued starts (drain_check fails it at once). */
    xf_batcher_drain(L->batcher);
    L->drain_deadline_ns = UINT64_MAX;
    if (s->o.drain_timeout_ms > 0)
        schedule(s);
    L->drain_deadline_ns = xf_now_ns() + (uint64_t)s->o.drain_timeout_ms * 1000000ull;
    uv_timer_start(&L->drain_timer, drain_check, 0, 5);
}

static void on_ctl(uv_async_t *a)
{
    xf_server_t *s = a->data;
    if (atomic_load(&s->loop->drain_req))
        begin_drain(s);
}

void xf_loop_request_drain(xf_server_t *s)
{
    if (!s->loop)
        return;
    atomic_store(&s->loop->drain_req, 1);
    uv_async_send(&s->loop->ctl_async);
}

static void on_signal(uv_signal_t *h, int signum)
{
    xf_server_t *s = h->data;
    if (signum == SIGHUP) {
        int rc = xf_log_reopen();
        XF_LOGI("SIGHUP: log reopened%s%s", rc < 0 ? ": " : "", rc < 0 ? xf_strerror(rc) : "");
        return;
    }
    if (s->loop->phase == DRAIN_FINISHING) {
        /* A second SIGTERM/SIGINT: stop waiting for queued work (running batches finish). */
        XF_LOGW("%s again: failing queued requests now", signum == SIGTERM ? "SIGTERM"
                                                                          : "SIGINT");
        s->loop->drain_deadline_ns = 0;
        return;
    }
    XF_LOGI("%s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    begin_drain(s);
}

static void on_tick(uv_timer_t *t)
{
    xf_server_t *s = t->data;
    if (s->loop->ticks_metrics)
        xf_metrics_tick(xf_now_ns());
    xf_metric_set(XF_M_arena_bytes, "held", NULL, (int64_t)xf_workers_arena_bytes(s->workers));
    xf_metric_set(XF_M_buffered_bytes, NULL, NULL, (int64_t)atomic_load(&s->buffered_bytes));
    update_gauges(s);
}

static void on_conn_timer(uv_timer_t *t)
{
    xf_server_t *s = t->data;
    int nh = 0, nb = 0, nf = 0;
    if (xf_http_expire(s->http, xf_now_ns(), &nh, &nb, &nf) > 0) {
        if (nh)
            xf_metric_add(XF_M_connections_closed_total, "header_timeout", NULL, (uint64_t)nh);
        if (nb)
            xf_metric_add(XF_M_connections_closed_total, "body_timeout", NULL, (uint64_t)nb);
        if (nf)
            xf_metric_add(XF_M_connections_closed_total, "client_fin", NULL, (uint64_t)nf);
    }
}

static void on_watchdog(uv_timer_t *t)
{
    xf_server_t *s = t->data;
    xf_loop_t *L = s->loop;
    uint64_t now = xf_now_ns();
    /* Progress: the loop runs (this timer fired) and the workers make progress — a layer
     * finished (the workers' layer counter moved) or a batch completed within the last
     * watchdog interval. A long batch keeps the service alive as long as its layers advance;
     * a worker stuck inside one layer for a whole interval lets systemd restart it. */
    uint64_t prog = xf_workers_progress(s->workers);
    if (prog != L->wd_progress) {
        L->wd_progress = prog;
        L->last_progress_ns = now;
    }
    if (L->busy_workers > 0 && now - L->last_progress_ns > L->watchdog_usec * 1000ull)
        return;
    xf_notify_watchdog();
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int xf_loop_create(xf_server_t *s, char *err, size_t errlen)
{
    xf_loop_t *L = calloc(1, sizeof *L);
    if (!L)
        return -ENOMEM;
    xf_batcher_opts_t bo;
    xf_batcher_opts_init(&bo);
    bo.policy = (enum xf_batch_policy)s->o.policy;
    bo.max_batch = s->o.max_batch;
    bo.max_batch_tokens = s->o.max_batch_tokens;
    bo.max_queue_delay_ns = (uint64_t)s->o.max_queue_delay_ms * 1000000ull;
    bo.max_queued_tokens = s->o.max_queued_tokens;
    bo.max_queue_jobs = s->o.max_queue_jobs;
    int rc = xf_batcher_create(&bo, &L->batcher);
    if (rc < 0) {
        snprintf(err, errlen, "batcher: %s", xf_strerror(rc));
        free(L);
        return rc;
    }
    L->cap = (size_t)(s->o.max_batch > 64 ? s->o.max_batch : 64);
    L->scratch = calloc(L->cap, sizeof *L->scratch);
    int nw = s->o.engine_workers > 0 ? s->o.engine_workers : 1;
    L->run_end = calloc((size_t)nw, sizeof *L->run_end);
    L->run_start = calloc((size_t)nw, sizeof *L->run_start);
    if (!L->scratch || !L->run_end || !L->run_start || uv_loop_init(&L->uv) != 0) {
        xf_batcher_free(L->batcher);
        free(L->scratch);
        free(L->run_end);
        free(L->run_start);
        free(L);
        snprintf(err, errlen, "event loop: out of memory");
        return -ENOMEM;
    }
    L->n_workers = s->o.engine_workers > 0 ? s->o.engine_workers : 1;
    L->ticks_metrics = atomic_exchange(&metrics_tick_claimed, 1) == 0;
    s->loop = L;
    uv_async_init(&L->uv, &L->job_async, on_jobs);
    uv_async_init(&L->uv, &L->done_async, on_done);
    uv_async_init(&L->uv, &L->ctl_async, on_ctl);
    uv_timer_init(&L->uv, &L->batch_timer);
    uv_timer_init(&L->uv, &L->tick_timer);
    uv_timer_init(&L->uv, &L->drain_timer);
    uv_timer_init(&L->uv, &L->watchdog_timer);
    uv_timer_init(&L->uv, &L->conn_timer);
    L->conn_timer.data = s;
    {
        /* A quarter of the shorter deadline, within [20 ms, 1 s]: a connection is closed at
         * most that late. */
        int t = s->o.header_timeout_ms < s->o.body_timeout_ms ? s->o.header_timeout_ms
                                                              : s->o.body_timeout_ms;
        uint64_t p = t > 0 ? (uint64_t)t / 4 : 1000;
        p = p < 20 ? 20 : p > 1000 ? 1000 : p;
        if (t > 0)
            uv_timer_start(&L->conn_timer, on_conn_timer, p, p);
    }
    L->job_async.data = L->done_async.data = L->ctl_async.data = s;
    L->batch_timer.data = L->tick_timer.data = L->drain_timer.data = s;
    L->watchdog_timer.data = s;
    uv_timer_start(&L->tick_timer, on_tick, 1000, 1000);
    if (s->o.handle_signals) {
        uv_signal_init(&L->uv, &L->sig_term);
        uv_signal_init(&L->uv, &L->sig_int);
        uv_signal_init(&L->uv, &L->sig_hup);
        L->sig_term.data = L->sig_int.data = L->sig_hup.data = s;
        uv_signal_start(&L->sig_term, on_signal, SIGTERM);
        uv_signal_start(&L->sig_int, on_signal, SIGINT);
        uv_signal_start(&L->sig_hup, on_signal, SIGHUP);
        L->have_signals = 1;
    }
    if (s->o.notify && xf_notify_watchdog_usec(&L->watchdog_usec) == 1 && L->watchdog_usec) {
        uint64_t half_ms = L->watchdog_usec / 2000;
        uv_timer_start(&L->watchdog_timer, on_watchdog, half_ms ? half_ms : 1,
                       half_ms ? half_ms : 1);
        L->have_watchdog = 1;
    }
    return 0;
}

void xf_loop_fit_cost(xf_server_t *s, const xf_cost_sample_t *samples, size_t n,
                      double sq_per_token)
{
    xf_cost_t *cm = xf_batcher_cost(s->loop->batcher);
    xf_cost_set_sq_floor(cm, sq_per_token);
    if (n > 0)
        (void)xf_cost_fit(cm, samples, n);
    xf_metrics_set_cost(cm->c, cm->n_fit, cm->n_obs);
}

xf_cost_t *xf_loop_cost(xf_server_t *s)
{
    return xf_batcher_cost(s->loop->batcher);
}

int xf_loop_run(xf_server_t *s)
{
    xf_loop_t *L = s->loop;
    L->last_progress_ns = xf_now_ns();
    /* A drain requested before the loop ran. */
    if (atomic_load(&L->drain_req))
        uv_async_send(&L->ctl_async);
    uv_run(&L->uv, UV_RUN_DEFAULT);
    if (s->o.test_before_stop)
        s->o.test_before_stop(s, 0, s->o.test_before_stop_arg);
    /* Drained: every job answered. A request whose body completed since the last check may
     * still have pushed a job, its connection suspended; MHD_stop_daemon aborts the process
     * on a suspended connection ("called while we have suspended connections", libmicrohttpd
     * 0.9.75 close_all_connections). So the job queue closes first — a request completed from
     * now on is failed and resumed on its own thread by xf_server_submit — and what is in it
     * is failed and resumed here. Then stop MHD (closes the remaining connections) and the
     * workers, then close every handle and the loop. */
    for (xf_job_t *j = xf_jobq_close(&s->jobq), *next; j; j = next) {
        next = j->next;
        j->next = NULL;
        fail_job(s, j, XF_HE_DRAINING, XF_REJ_DRAINING, "server is shutting down");
    }
    if (s->o.test_before_stop)
        s->o.test_before_stop(s, 1, s->o.test_before_stop_arg);
    xf_http_stop(s->http);
    s->http = NULL;
    xf_workers_free(s->workers);
    s->workers = NULL;
    xf_sessions_stop(s);
    uv_walk(&L->uv, close_walk_cb, NULL);
    uv_run(&L->uv, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&L->uv);
    L->closed = 1;
    if (rc != 0)
        XF_LOGW("event loop did not close cleanly: %s", uv_strerror(rc));
    XF_LOGI("drained and stopped");
    return rc == 0 ? 0 : 1;
}

void xf_loop_free(xf_server_t *s)
{
    xf_loop_t *L = s->loop;
    if (!L)
        return;
    if (!L->closed) {   /* start-up failed before the loop thread ran */
        xf_sessions_stop(s);
        uv_walk(&L->uv, close_walk_cb, NULL);
        uv_run(&L->uv, UV_RUN_DEFAULT);
        uv_loop_close(&L->uv);
    }
    if (L->ticks_metrics)
        atomic_store(&metrics_tick_claimed, 0);
    xf_batcher_free(L->batcher);
    free(L->scratch);
    free(L->run_end);
    free(L->run_start);
    free(L);
    s->loop = NULL;
}

uv_loop_t *xf_loop_uv(xf_server_t *s)
{
    return &s->loop->uv;
}

/* The MHD side of the job queue (MHD thread, after MHD_suspend_connection). */
void xf_server_submit(xf_server_t *s, xf_job_t *j)
{
    int rc = xf_jobq_push(&s->jobq, j);
    if (rc > 0) {
        uv_async_send(&s->loop->job_async);
    } else if (rc < 0) {
        /* The loop has stopped (xf_loop_run closed the queue before MHD_stop_daemon): answer
         * now, on this thread, so that no connection stays suspended. */
        xf_job_fail(j, XF_HE_DRAINING, 1, "server is shutting down");
        xf_metric_add(XF_M_rejected_total, xf_reject_label(XF_REJ_DRAINING), NULL, 1);
        finish_job(s, j);
    }
}
