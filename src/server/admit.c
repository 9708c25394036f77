/* Admission of arriving jobs (see admit.h): compute bound first (a variant's parameters, the
 * request's size), then the batcher's deadline and queue-wait checks, each refusal with its
 * reason in numbers. Loop thread only: the cost model belongs to it. */
#include "config.h"

#include "server/admit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <xformd/attention.h>

#include "server/log.h"

const char *xf_reject_label(enum xf_reject r)
{
    static const char *const names[] = {"queue_full", "too_long", "deadline", "draining",
                                        "busy", "too_slow", "compute_bound", "stopped"};
    _Static_assert(sizeof names / sizeof names[0] == XF_REJ_COUNT, "update xf_reject_label");
    return (unsigned)r < XF_REJ_COUNT ? names[r] : "?";
}

static int32_t first_d_head(const xf_server_t *s)
{
    const xf_model_info_t *mi = s->info;
    return mi->n_layer > 0 && mi->layers ? mi->layers[0].d_head : 64;
}

static double dense_sq(const xf_job_t *j)
{
    double q = 0;
    for (int32_t i = 0; i < j->n_seq; i++)
        q += (double)j->lens[i] * j->lens[i];
    return q;
}

static double predict(const xf_cost_t *cm, double tokens, double sq)
{
    xf_cost_sample_t x = {.tokens = tokens, .sum_sq = sq};
    return xf_cost_predict(cm, &x);
}

static void set(xf_verdict_t *v, enum xf_http_err code, enum xf_reject r, int retry,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set(xf_verdict_t *v, enum xf_http_err code, enum xf_reject r, int retry,
                const char *fmt, ...)
{
    va_list ap;
    v->code = code;
    v->reason = r;
    v->retry_after_s = retry;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof v->msg, fmt, ap);
    va_end(ap);
}

void xf_admit_log(enum xf_reject r, const char *msg, uint64_t now_ns)
{
    static uint64_t last_ns[XF_REJ_COUNT];
    static unsigned long quiet[XF_REJ_COUNT];
    if ((unsigned)r >= XF_REJ_COUNT)
        return;
    if (last_ns[r] && now_ns - last_ns[r] < 1000000000ull) {
        quiet[r]++;
        return;
    }
    if (quiet[r])
        XF_LOGW("refused (%s): %s [and %lu more like it in the last second]",
                xf_reject_label(r), msg, quiet[r]);
    else
        XF_LOGW("refused (%s): %s", xf_reject_label(r), msg);
    last_ns[r] = now_ns;
    quiet[r] = 0;
}

/* request.max_compute_ms: the lower bound of the job's engine time must fit. When the job's
 * attention variant is what pushes it over (dense would fit), 400 naming the parameter and
 * its bound; otherwise 413 (too many tokens for one request). */
static int compute_bound(const xf_server_t *s, const xf_cost_t *cm, const xf_job_t *j,
                         xf_verdict_t *v)
{
    double max_s = (double)s->o.max_compute_ms * 1e-3;
    double dq = dense_sq(j), q = j->cost_sq > 0 ? j->cost_sq : dq;
    double alone = predict(cm, j->n_tokens, q), lower = alone * XF_COST_LOWER;
    if (lower <= max_s)
        return 0;
    const xf_attn_t *a = j->attn ? j->attn : xf_model_attention(s->model);
    if (a && q > dq && predict(cm, j->n_tokens, dq) * XF_COST_LOWER <= max_s && cm->c[2] > 0) {
        double budget = (max_s / XF_COST_LOWER - cm->c[0] - cm->c[1] * j->n_tokens) / cm->c[2];
        char key[64];
        long long val = 0, bound = 0;
        int rc = xf_attn_cost_bound(a, j->lens, (size_t)j->n_seq, first_d_head(s), budget, key,
                                    sizeof key, &val, &bound);
        if (rc == 0)
            set(v, XF_HE_BAD_ATTENTION, XF_REJ_COMPUTE_BOUND, 0,
                "attention: %s %s=%lld is predicted to take at least %.0f ms on %d tokens, "
                "above request.max_compute_ms (%d ms); %s %s=%lld here", xf_attn_name(a), key,
                val, lower * 1e3, (int)j->n_tokens, s->o.max_compute_ms,
                bound < val ? "at most" : "at least", key, bound);
        else
            set(v, XF_HE_BAD_ATTENTION, XF_REJ_COMPUTE_BOUND, 0,
                "attention: %s with these parameters is predicted to take at least %.0f ms on "
                "%d tokens, above request.max_compute_ms (%d ms); choose cheaper parameters",
                xf_attn_name(a), lower * 1e3, (int)j->n_tokens, s->o.max_compute_ms);
        return -1;
    }
    set(v, XF_HE_TOO_SLOW, XF_REJ_TOO_SLOW, 0,
        "request of %d tokens is predicted to take %.0f ms of engine time (at least %.0f ms), "
        "above request.max_compute_ms (%d ms); send fewer tokens per request",
        (int)j->n_tokens, alone * 1e3, lower * 1e3, s->o.max_compute_ms);
    return -1;
}

int xf_admit_job(const xf_server_t *s, xf_batcher_t *b, const xf_load_t *load, xf_job_t *j,
                 uint64_t now_ns, xf_verdict_t *v)
{
    memset(v, 0, sizeof *v);
    const xf_cost_t *cm = xf_batcher_cost(b);
    if (compute_bound(s, cm, j, v) < 0) {
        xf_admit_log(v->reason, v->msg, now_ns);
        return -1;
    }
    j->bj.n_seqs = j->n_seq;
    j->bj.n_tokens = j->n_tokens;
    j->bj.lens = j->lens;
    j->bj.enqueue_ns = j->enqueue_ns;
    j->bj.deadline_ns = j->deadline_ns;
    j->bj.sum_sq = j->cost_sq;
    j->bj.user = j;
    xf_admit_t a;
    int rc = xf_batcher_admit(b, &j->bj, now_ns, load, &a);
    if (rc == 0)
        return 0;
    int dl_ms = j->deadline_ns > j->enqueue_ns
                    ? (int)((j->deadline_ns - j->enqueue_ns + 999999) / 1000000) : 0;
    if (rc == XF_ETOOLONG) {
        set(v, XF_HE_TOO_MANY_TOKENS, XF_REJ_TOO_LONG, 0,
            "request has %d tokens, more than the queue admits (batcher.max_queued_tokens)",
            (int)j->n_tokens);
    } else if (rc == XF_EDEADLINE && a.lower_s * 1e3 <= (double)dl_ms) {
        /* It would fit its whole deadline, but the time since it arrived (a slow body, a
         * loaded machine) used it up before it could be queued: expired, not too slow. */
        xf_admit_expired(s, b, j, now_ns, v);
        return -1;
    } else if (rc == XF_EDEADLINE) {
        int can_ask = a.lower_s * 1e3 <= (double)s->o.max_timeout_ms;
        /* The client's own timeout_ms is what makes it impossible: 408, its choice (the same
         * rule as a client deadline missed in the queue); otherwise 413. */
        set(v, j->client_deadline && can_ask ? XF_HE_REQUEST_TIMEOUT : XF_HE_TOO_SLOW,
            XF_REJ_TOO_SLOW, 0,
            "request of %d tokens is predicted to take %.0f ms (at least %.0f ms) even on an "
            "idle server, more than its deadline of %d ms%s%d ms)", (int)j->n_tokens,
            a.alone_s * 1e3, a.lower_s * 1e3, dl_ms,
            can_ask ? "; ask for a longer one with timeout_ms (request.max_timeout_ms = "
                    : "; not even request.max_timeout_ms (", s->o.max_timeout_ms);
    } else if (rc == -EBUSY) {
        int cold = load && load->unmeasured;
        set(v, XF_HE_OVERLOADED, XF_REJ_BUSY, a.retry_after_s,
            "server busy: %spredicted queue wait %.0f ms plus %.0f ms of compute for %d tokens "
            "%sexceeds the deadline of %d ms; retry after %d s",
            cold ? "the engine's pace is not measured yet (the first batch after start-up is in "
                   "its first layer): " : "",
            a.wait_s * 1e3, a.alone_s * (load && load->slow > 1 ? load->slow : 1) * 1e3,
            (int)j->n_tokens, cold ? "at the start-up pace " : "", dl_ms, a.retry_after_s);
    } else if (rc == -EAGAIN) {
        set(v, XF_HE_OVERLOADED, XF_REJ_QUEUE_FULL, a.retry_after_s,
            "server overloaded: the queue is full (%zu requests, %lld tokens); retry after %d s",
            xf_batcher_queued_jobs(b), (long long)xf_batcher_queued_tokens(b),
            a.retry_after_s);
    } else {
        set(v, XF_HE_INTERNAL, XF_REJ_COUNT, 0, "batcher refused the job: %s",
            xf_strerror(rc));
    }
    xf_admit_log(v->reason, v->msg, now_ns);
    return -1;
}

void xf_admit_expired(const xf_server_t *s, xf_batcher_t *b, const xf_job_t *j,
                      uint64_t now_ns, xf_verdict_t *v)
{
    (void)s;
    const xf_cost_t *cm = xf_batcher_cost(b);
    double q = j->cost_sq > 0 ? j->cost_sq : dense_sq(j);
    double alone = predict(cm, j->n_tokens, q);
    double waited = now_ns > j->enqueue_ns ? (double)(now_ns - j->enqueue_ns) * 1e-9 : 0;
    int dl_ms = j->deadline_ns > j->enqueue_ns
                    ? (int)((j->deadline_ns - j->enqueue_ns + 999999) / 1000000) : 0;
    double pace = xf_batcher_pace(b);
    int ra = xf_batcher_retry_after_s(b);
    if (ra > dl_ms / 1000 && dl_ms >= 1000)
        ra = dl_ms / 1000;
    /* Answered before its deadline: at the engine's current pace (the running batches' layer
     * progress) its compute, after the running batch, would end past it. */
    set(v, XF_HE_DEADLINE, XF_REJ_DEADLINE, ra,
        "the request (%d tokens) waited %.0f ms since it arrived; its predicted %.0f ms of compute "
        "(the engine runs %.1fx the cost model now) no longer fits before its deadline of %d ms; "
        "retry later", (int)j->n_tokens, waited * 1e3, alone * pace * 1e3, pace, dl_ms);
    xf_admit_log(v->reason, v->msg, now_ns);
}
