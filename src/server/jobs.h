/* Jobs: one inference request (one or more token sequences) travelling MHD thread → loop →
 * worker → loop → MHD thread, and the two lock-protected queues that carry them.
 * A job is created and tokenised on an MHD thread, read-only while queued or computing, its
 * outputs written by exactly one worker, and freed with its request in MHD's completed
 * callback. Queue locks are leaves (rank 5, see doc/threads.md). */
#ifndef XF_SERVER_JOBS_H
#define XF_SERVER_JOBS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <xformd/xformd.h>

#include "server/batcher.h"

/* HTTP error classes, one per row of http_errors.def; XF_HE_NONE (0) means "no error" where a
 * job or request stores the class it is to answer with. */
enum xf_http_err {
    XF_HE_NONE = 0,
#define X(code, status, name) XF_HE_##code,
#include "server/http_errors.def"
#undef X
    XF_HE_COUNT
};

typedef struct xf_job {
    struct xf_job *next;       /* queue link (owned by whichever queue holds the job) */
    /* Input: written by the MHD thread before the push, read-only afterwards. */
    int32_t n_seq;
    int32_t n_tokens;
    int32_t max_len;           /* longest sequence */
    int32_t *lens;             /* [n_seq] */
    int32_t *ids;              /* [n_tokens], sequences concatenated */
    int32_t *type_ids;         /* [n_tokens] */
    enum xf_pooling pooling;   /* for pooled outputs */
    int normalize;             /* -1 model default, 0, 1 */
    int want_pooled;
    int want_logits;
    int want_hidden;           /* per-token last hidden states into hidden */
    void *const *attn_state;   /* n_seq == 1 only: the sequence's attention state for a stateful
                                  model attention (xf_state_layers of a session), read and
                                  updated in place by the forward; NULL: none (fresh memory) */
    xf_attn_t *attn;           /* per-request attention selection for every sequence of the job,
                                  or NULL for the model's default; owned, freed with the job */
    uint64_t enqueue_ns;       /* monotonic */
    uint64_t deadline_ns;      /* monotonic; the loop answers 503 past it while queued, the
                                   worker stops the batch (504) past it while running */
    int client_deadline;       /* deadline_ns came from the request's own timeout_ms: missing
                                  it is the client's choice, answered 408, not 503/504 */
    double cost_sq;            /* the cost model's Σn² of the job, weighted by its attention
                                  variant's cost (xf_attn_cost); 0: plain Σ n_i² */
    uint64_t pred_end_ns;      /* loop: predicted end of the batch running it */
    /* Output: written by one worker (or the loop when failing the job) before the done push. */
    float *pooled;             /* [n_seq][d_model] when want_pooled */
    float *logits;             /* [n_seq][n_labels] when want_logits */
    float *hidden;             /* [n_tokens][d_model] when want_hidden (caller-allocated) */
    enum xf_http_err status;   /* XF_HE_NONE, or the error class to answer with */
    int requeue;               /* the batch stopped for another job's deadline before this
                                  one's: the loop queues it again (status XF_HE_NONE) */
    int retry_after_s;         /* for 429/503 */
    char msg[256];
    uint64_t start_ns, end_ns; /* compute start/end (monotonic) */
    int32_t batch_seqs;        /* sequences in the batch that computed it */
    /* Owner: the suspended connection and its request. */
    void *conn;                /* struct MHD_Connection * */
    void *req;                 /* xf_req_t * */
    xf_bjob_t bj;              /* the batcher's view while queued there (loop thread only) */
    void *sjob;                /* a Transformer-XL session operation (sessions.c) instead of a
                                  batch job, or NULL; freed with the job by sjob_free */
    void (*sjob_free)(void *sjob);
    /* A job with no connection (an encoder session's compute, sessions.c): the loop calls
     * done_fn(j) instead of resuming a connection when it is answered or fails. */
    void (*done_fn)(struct xf_job *j);
    void *done_user;
    /* A job with an attn_state whose batch stopped for another job's deadline (requeue): the
     * layers that ran updated the state, so the loop calls restore_fn(j) (put the state back
     * as before the batch; 0, or < 0 with the job failed) before queueing it again. A job
     * with an attn_state and no restore_fn is failed instead of requeued. */
    int (*restore_fn)(struct xf_job *j);
    int has_report;            /* the first job of a batch carries the batch's report */
    double rep_seconds, rep_tokens, rep_sum_sq;
    double rep_frac;           /* share of the layers the batch computed (1: all) */
    int rep_worker;            /* the worker that ran the batch */
    int32_t rep_n_seq;
} xf_job_t;

/* Allocate a job for n_seq sequences, n_tokens tokens in total (arrays zeroed).
 * Ownership: *out is new, free with xf_job_free(). Returns 0 or -ENOMEM. */
int xf_job_create(int32_t n_seq, int32_t n_tokens, xf_job_t **out);
/* Allocate the output buffers. Returns 0 or -ENOMEM. */
int xf_job_alloc_outputs(xf_job_t *j, int32_t d_model, int32_t n_labels);
void xf_job_free(xf_job_t *j);
/* Mark a job failed with an HTTP error class and message (any thread owning the job). */
void xf_job_fail(xf_job_t *j, enum xf_http_err code, int retry_after_s, const char *msg);

/* A FIFO of jobs. lock is a leaf (rank 5): nothing else is locked or called while held. */
typedef struct xf_jobq {
    pthread_mutex_t lock;      /* protects head, tail, n, closed */
    xf_job_t *head, *tail;
    size_t n;
    int closed;                /* xf_jobq_close: every later push is refused */
} xf_jobq_t;

int xf_jobq_init(xf_jobq_t *q);
void xf_jobq_deinit(xf_jobq_t *q);
/* Push at the tail. Returns 1 when the queue was empty (the caller then uv_async_send()s),
 * 0 otherwise, -EPIPE when the queue is closed (j is not queued: it is still the caller's). */
int xf_jobq_push(xf_jobq_t *q, xf_job_t *j);
/* Take every queued job, in order (a NULL-terminated list through next). */
xf_job_t *xf_jobq_take_all(xf_jobq_t *q);
/* Close the queue and take every queued job (as xf_jobq_take_all): no push succeeds after it. */
xf_job_t *xf_jobq_close(xf_jobq_t *q);
/* Jobs queued now (a snapshot, for tests and gauges). */
size_t xf_jobq_count(xf_jobq_t *q);

/* Monotonic clock in nanoseconds. */
uint64_t xf_now_ns(void);

#endif
