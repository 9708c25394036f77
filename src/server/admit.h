/* Admission of an arriving job (loop thread; doc/admission.md): the compute bound of its
 * attention variant and size (request.max_compute_ms), then the batcher's deadline and
 * queue-wait checks. Decides the HTTP answer of a refusal and says why — tokens, predicted
 * milliseconds, the limit — in the reply and in a rate-limited warning log line. */
#ifndef XF_SERVER_ADMIT_H
#define XF_SERVER_ADMIT_H

#include <stdint.h>

#include "server/batcher.h"
#include "server/jobs.h"
#include "server/server.h"

/* Labels of xformd_rejected_total{reason}, indexed by enum xf_reject. */
enum xf_reject {
    XF_REJ_QUEUE_FULL,     /* 429: the queue is full */
    XF_REJ_TOO_LONG,       /* 413: more tokens than the queue admits */
    XF_REJ_DEADLINE,       /* 503: queued, then its predicted finish passed the deadline */
    XF_REJ_DRAINING,       /* 503: shutting down */
    XF_REJ_BUSY,           /* 429: the predicted queue wait leaves no time (on arrival) */
    XF_REJ_TOO_SLOW,       /* 413: not even an idle server finishes it in time */
    XF_REJ_COMPUTE_BOUND,  /* 400: an attention parameter exceeds request.max_compute_ms */
    XF_REJ_STOPPED,        /* 504: its batch was stopped past its deadline */
    XF_REJ_COUNT
};
const char *xf_reject_label(enum xf_reject r);

typedef struct xf_verdict {
    enum xf_http_err code;
    enum xf_reject reason;
    int retry_after_s;     /* 429/503, else 0 */
    char msg[256];
} xf_verdict_t;

/* Admit j into b (loop thread). Returns 0 when queued; else the refusal in *v (logged). */
int xf_admit_job(const xf_server_t *s, xf_batcher_t *b, const xf_load_t *load, xf_job_t *j,
                 uint64_t now_ns, xf_verdict_t *v);

/* The verdict for a queued job that expired (its predicted finish passed its deadline). */
void xf_admit_expired(const xf_server_t *s, xf_batcher_t *b, const xf_job_t *j,
                      uint64_t now_ns, xf_verdict_t *v);

/* A warning, at most one a second per reason (the rest are counted and reported with the
 * next one): refusals under overload come in floods. */
void xf_admit_log(enum xf_reject r, const char *msg, uint64_t now_ns);

#endif
