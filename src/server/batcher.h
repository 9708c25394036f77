/* Smart batcher (DESIGN.md §5): a queue of jobs, admission control, deadlines, and the policy
 * that picks the next batch (none, fifo, dp, tokens) under a cost model
 *   t(batch) ≈ c0 + c1·tokens + c2·Σ n_i² + c3·padding_tokens   (seconds)
 * fitted from warm-up timings and refined online. Pure logic: no clock reads, no libuv, no
 * allocation after xf_batcher_create. Single-threaded: owned by the loop thread. */
#ifndef XF_SERVER_BATCHER_H
#define XF_SERVER_BATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xformd/error.h>

/* Order matches the batcher.policy choices in conf.def ("none|fifo|dp|tokens"). */
enum xf_batch_policy {
    XF_BATCH_NONE = 0,     /* one job per batch, oldest first */
    XF_BATCH_FIFO,         /* Triton-style: wait ≤ max_queue_delay or until max_batch jobs */
    XF_BATCH_DP,           /* TurboTransformers' DP split of the length-sorted queue (with
                              aging weights and deadlines) */
    XF_BATCH_TOKENS,       /* token budget per batch, earliest deadline first, no job made
                              late by the batch it joins */
    XF_BATCH_POLICY_COUNT
};
/* "none", "fifo", "dp", "tokens"; "?" out of range. Static storage. */
const char *xf_batch_policy_name(enum xf_batch_policy p);

/* ---- Cost model -------------------------------------------------------------------------- */

#define XF_COST_NF 4       /* features: 1, tokens, Σn², padding tokens */

typedef struct xf_cost {
    double c[XF_COST_NF];  /* coefficients in seconds per feature unit (c0 s, c1 s/token, ...) */
    /* Exponentially weighted recursive least squares state, in scaled feature space. */
    double w[XF_COST_NF];            /* scaled coefficients (may go negative; c[] is clamped) */
    double P[XF_COST_NF][XF_COST_NF];
    double lambda;                   /* forgetting factor, (0, 1] */
    uint64_t n_fit;                  /* samples in the last xf_cost_fit */
    uint64_t n_obs;                  /* online observations since */
    double last_err_s;               /* |predicted - observed| of the last observation */
    /* Fast correction: c[] = max(w, 0)·S·scale. Each observation moves scale by a fraction
     * XF_COST_ALPHA of log(observed / predicted) (the RLS then learns the shape against
     * observed / scale), so a fit that is several times off — a warm-up timed under
     * contention — is corrected within a few served batches, upwards and downwards. */
    double scale;
    /* Floor of c[2] as a multiple of c[1]: the FLOP ratio of attention per n² to the linear
     * layers per token for the model (set by the server; 0: none). A fit on a model whose
     * attention is too cheap to show at warm-up lengths still prices long or costly
     * attention variants. */
    double sq_per_token;
} xf_cost_t;

/* One timed batch: its features and the measured wall time. */
typedef struct xf_cost_sample {
    double tokens;         /* Σ n_i */
    double sum_sq;         /* Σ n_i² */
    double pad_tokens;     /* Σ (max_len - n_i) if the batch ran padded, else 0 */
    double seconds;
} xf_cost_sample_t;

/* Defaults for BERT-base on 2 cores (c0 1 ms, c1 1 ms/token, c2 2e-7 s/token², c3 = c1) and
 * forgetting factor lambda (0 → 0.98). */
void xf_cost_init(xf_cost_t *cm, double lambda);
/* Features of a batch of n sequences with lengths lens[] (padded: count padding tokens). */
void xf_cost_features(const int32_t *lens, size_t n, bool padded, xf_cost_sample_t *out);
/* Predicted seconds for features s (s->seconds ignored). Never negative. */
double xf_cost_predict(const xf_cost_t *cm, const xf_cost_sample_t *s);
/* Least-squares fit with non-negative coefficients (exact NNLS over the 2^4 feature subsets)
 * to n ≥ 1 samples; resets the RLS state around the fit. Features that never vary are left at
 * 0 (padding when nothing ran padded). Returns 0, -EINVAL (n == 0, a non-finite or negative
 * value). On error *cm is unchanged. */
int xf_cost_fit(xf_cost_t *cm, const xf_cost_sample_t *samples, size_t n);
/* One online observation (exponentially weighted RLS plus the scale correction).
 * Non-finite or negative timings are ignored (-EINVAL). Returns 0. */
int xf_cost_observe(xf_cost_t *cm, const xf_cost_sample_t *s);
/* Set the c[2] floor (see sq_per_token) and recompute c[]. */
void xf_cost_set_sq_floor(xf_cost_t *cm, double sq_per_token);
/* Admission assumes the model may be this many times too pessimistic (a warm-up under
 * contention): "can never finish" decisions use predicted × XF_COST_LOWER. */
#define XF_COST_LOWER 0.25
/* The i-th warm-up batch shape for xf_cost_fit: writes up to cap lengths (each ≤ max_len) into
 * lens and returns how many, 0 when i is past the plan. The plan spans the whole length range
 * up to max_len (the model's positions): single sequences of max_len/64 .. max_len tokens and
 * batches of 2..16 sequences of mixed lengths. */
size_t xf_cost_warmup_batch(size_t i, int32_t max_len, int32_t *lens, size_t cap);
/* The held-out check batch (not fitted): two sequences of max_len and one of max_len/2. */
size_t xf_cost_holdout_batch(int32_t max_len, int32_t *lens, size_t cap);

/* ---- Jobs and the batcher ---------------------------------------------------------------- */

/* A job as the batcher sees it. The caller owns the storage (e.g. embedded in or allocated
 * with its request) and keeps it and lens valid and unchanged from xf_batcher_push until the
 * batcher hands the job back (xf_batcher_next, _expire or _take_all). A job is never split. */
typedef struct xf_bjob {
    int32_t n_seqs;        /* ≥ 1 sequences (an embeddings request may carry several texts) */
    int32_t n_tokens;      /* Σ lens */
    const int32_t *lens;   /* [n_seqs], each ≥ 1 */
    uint64_t enqueue_ns;   /* monotonic */
    uint64_t deadline_ns;  /* monotonic; the answer is useless after it */
    double sum_sq;         /* the cost model's Σn² term: Σ n_i² weighted by the attention
                              variant's cost (xf_attn_cost); 0 → Σ n_i² from lens */
    void *user;            /* the caller's job */
    /* Batcher-private. */
    int32_t max_len_;
    int must_run_;         /* admitted onto an idle engine: expired from the queue only when
                              even its lower bound misses the deadline */
    uint64_t seq_;
} xf_bjob_t;

typedef struct xf_batcher_opts {
    enum xf_batch_policy policy;
    int32_t max_batch;           /* jobs per batch, ≥ 1 */
    int64_t max_batch_tokens;    /* tokens per batch (a bigger job runs alone), ≥ 1 */
    uint64_t max_queue_delay_ns; /* fifo: longest wait of the oldest job */
    int64_t max_queued_tokens;   /* admission bound, ≥ 1 */
    int32_t max_queue_jobs;      /* admission bound and queue capacity, ≥ 1 */
    int32_t dp_window;           /* dp: jobs considered per decision, the earliest deadlines
                                    (0 → 48, at most XF_DP_MAX) */
    uint64_t dp_aging_ns;        /* dp: a job waiting this long counts twice in the objective
                                    (weight 1 + age/aging), which bounds the tail that
                                    shortest-first creates; 0 = no aging */
} xf_batcher_opts_t;

/* What a dispatched batch holds (for metrics, the cost model and logs). */
typedef struct xf_batch_info {
    size_t n_jobs;
    int64_t n_seqs;
    int64_t n_tokens;
    int64_t sum_sq;              /* Σ n_i² */
    int32_t max_len;
    int64_t pad_tokens;          /* Σ (max_len - n_i): what a padded engine would waste */
    double predicted_s;          /* cost model's prediction for the packed batch */
} xf_batch_info_t;

typedef struct xf_batcher xf_batcher_t;

/* Defaults from conf.def's batcher.* rows (xf_conf_defaults()); dp_window 48, dp_aging 1 s. */
void xf_batcher_opts_init(xf_batcher_opts_t *o);
/* Ownership: *out is new, free with xf_batcher_free(). Returns 0, -EINVAL (bad opts), -ENOMEM.
 * The cost model starts at xf_cost_init defaults. */
int xf_batcher_create(const xf_batcher_opts_t *opts, xf_batcher_t **out);
/* Jobs still queued are forgotten (take them first). NULL is a no-op. */
void xf_batcher_free(xf_batcher_t *b);

/* What the caller knows of the engine when a job arrives (xf_batcher_admit). */
typedef struct xf_load {
    int idle_workers;      /* workers waiting for a batch */
    int n_workers;         /* ≥ 1 */
    double running_s;      /* Σ seconds still to run of the batches running now, as
                              re-estimated from their layer progress */
    double slow;           /* how many times slower than the cost model the engine goes now
                              (the running batches' layer progress, else the last batch's;
                              pessimistic before anything is measured; ≥ 1, 0 or 1: as
                              predicted): the queue ahead and the job's own time are scaled by
                              it before the wait check */
    int unmeasured;        /* a batch is running and no layer has ended since start-up: slow
                              is the pessimistic start-up pace, and a job that does not fit
                              even so is refused with Retry-After 1 s (one layer later the
                              measured pace decides) */
} xf_load_t;

/* The numbers behind an admission decision (for the reply and the log). */
typedef struct xf_admit {
    double alone_s;        /* predicted seconds of the job alone on an idle worker */
    double lower_s;        /* alone_s × XF_COST_LOWER: the least it could take */
    double wait_s;         /* predicted wait before it can start ((running + backlog × slow)
                              / workers) */
    int retry_after_s;     /* -EBUSY/-EAGAIN: the predicted drain time, ≥ 1, ≤ the job's
                              time to its deadline (rounded up) */
} xf_admit_t;

/* Admission at arrival (borrowed until handed back), against the predicted queue wait:
 *   - an idle engine with an empty queue takes any job that could finish by its deadline
 *     under the lower bound (lower_s): it runs at once, and while queued (a fifo delay) it
 *     expires only when the lower bound no longer fits (a running batch is stopped at its
 *     deadline instead, see workers.h);
 *   - otherwise the job is queued only if wait_s + alone_s × slow fits in half the time to
 *     its deadline (a margin for a wait prediction that lags a growing load), where wait_s =
 *     (running_s + backlog × slow) / workers.
 * Returns 0 (queued); -EINVAL (as xf_batcher_push); XF_ETOOLONG (more tokens than
 * max_queued_tokens: never admissible → 413); XF_EDEADLINE (lower_s exceeds the time to the
 * deadline: even an idle server cannot finish it → 413); -EBUSY (it would wait too long:
 * 429 + Retry-After); -EAGAIN (queue full: 429 + Retry-After). out may be NULL. */
int xf_batcher_admit(xf_batcher_t *b, xf_bjob_t *job, uint64_t now_ns, const xf_load_t *load,
                     xf_admit_t *out);
/* Put back a job that was handed out (a batch stopped before its deadline for another job's
 * sake): no admission check. Returns 0, or -EAGAIN when the queue is full. */
int xf_batcher_requeue(xf_batcher_t *b, xf_bjob_t *job);
/* Predicted seconds to run everything queued (batches of max_batch, the cost model). */
double xf_batcher_backlog_s(const xf_batcher_t *b);

/* Admit a job (borrowed until handed back) with no queue-wait check (an idle engine as far as
 * the batcher knows). now_ns is the current monotonic time.
 * Returns 0; -EINVAL (n_seqs < 1, a length < 1, n_tokens != Σ lens);
 * XF_ETOOLONG (the job alone exceeds max_queued_tokens: it can never be admitted → 413);
 * XF_EDEADLINE (the job cannot finish by its deadline even if run alone now, under the lower
 * bound predicted × XF_COST_LOWER → 413);
 * -EAGAIN (queue full by jobs or tokens; retry later → 503 + Retry-After). */
int xf_batcher_push(xf_batcher_t *b, xf_bjob_t *job, uint64_t now_ns);

/* The next batch to run, called when a worker is free (call xf_batcher_expire first: next
 * does not drop late jobs; it leaves queued those the batch would finish past their deadline
 * at the current pace, with a quarter of the time left to spare, except its first). Writes up to cap (normally ≥ max_batch; a smaller cap just caps
 * the batch) jobs
 * into out[], *n_out their count, and *info (may be NULL). With *n_out == 0 nothing is ready:
 * *wake_ns is when to call again (a fifo wait ending or the earliest job that will have to be
 * expired), UINT64_MAX when the queue is empty. Jobs come back in the order they should be
 * laid out in the batch. Returns 0 or -EINVAL (cap 0). */
int xf_batcher_next(xf_batcher_t *b, uint64_t now_ns, xf_bjob_t **out, size_t cap,
                    size_t *n_out, xf_batch_info_t *info, uint64_t *wake_ns);

/* The engine's pace as the caller sees it now: how many times slower than the cost model it
 * goes (≥ 1; less is taken as 1, capped at 1000) and the seconds until a worker is free for
 * the next batch (0: one is idle). Expiry and batch formation use the model × pace, so a job
 * that can no longer make its deadline at that pace is answered before its deadline rather
 * than run late. The defaults (1, 0) are the plain model on an idle engine. Call it whenever
 * the estimate changes (the loop: before each expiry and dispatch). */
void xf_batcher_set_pace(xf_batcher_t *b, double pace, double free_in_s);
double xf_batcher_pace(const xf_batcher_t *b);

/* Remove and hand back (up to cap) jobs that can no longer meet their deadline: those with
 * now + free_in + predicted time of running alone × pace > deadline (xf_batcher_set_pace;
 * a job admitted onto an idle engine: its lower bound, without the pace). The caller answers
 * them at once (503 + Retry-After). Returns the number written to out. */
size_t xf_batcher_expire(xf_batcher_t *b, uint64_t now_ns, xf_bjob_t **out, size_t cap);

/* The earliest time at which a queued job will have to be expired (its deadline minus its
 * predicted time alone at the pace, minus free_in), UINT64_MAX when the queue is empty. The loop arms its timer at
 * min(this, the wake time of xf_batcher_next) so that expiry happens while workers are busy. */
uint64_t xf_batcher_expiry_ns(const xf_batcher_t *b);

/* Remove and hand back up to cap queued jobs (drain/shutdown), oldest first. */
size_t xf_batcher_take_all(xf_batcher_t *b, xf_bjob_t **out, size_t cap);
/* The drain: nothing more will arrive to batch the queued jobs with. From now on fifo hands
 * out what is queued without waiting for max_queue_delay or a full batch, and dp plans for no
 * future arrivals. Cannot be undone. */
void xf_batcher_drain(xf_batcher_t *b);

/* Refine the cost model with a measured batch: n sequence lengths and wall seconds. */
void xf_batcher_observe(xf_batcher_t *b, const int32_t *lens, size_t n, double seconds);
/* Same from the jobs of a batch as handed out by xf_batcher_next. */
void xf_batcher_observe_jobs(xf_batcher_t *b, xf_bjob_t *const *jobs, size_t n_jobs,
                             double seconds);

/* The cost model (mutable: fit it with xf_cost_fit after warm-up). Borrowed. */
xf_cost_t *xf_batcher_cost(xf_batcher_t *b);
const xf_batcher_opts_t *xf_batcher_opts(const xf_batcher_t *b);
size_t xf_batcher_queued_jobs(const xf_batcher_t *b);
int64_t xf_batcher_queued_tokens(const xf_batcher_t *b);
/* Seconds a rejected client should wait (Retry-After): the predicted time to run what is
 * queued, rounded up, at least 1. */
int xf_batcher_retry_after_s(const xf_batcher_t *b);

/* dp internals exposed for tests: choose the split of n jobs (already in the order given,
 * normally shortest first) into consecutive batches minimising the weighted completion time
 *   Σ_jobs w_j·finish_j + future_w·finish_last
 * (w_j = 1 + age_j/aging_ns, 1 when aging_ns is 0; future_w stands for the jobs expected to
 * arrive while the plan runs), where a batch's time is the cost model's prediction for its
 * packed sequences, subject to max_batch, max_batch_tokens and deadlines (start_ns = now; a
 * job must finish by its deadline). Batches are packed (no padding term), so the k-th batch
 * ending at job i finishes at k·c0 + the additive costs of jobs [0, i), which makes the DP
 * over (jobs, batches) exact. Writes the batch ends into ends[] (ends[k] = index one past
 * the last job of batch k), the count into *n_batches and the objective (job-seconds, from
 * now) into *total_s. Returns 0, -ENOENT when no split meets every deadline (then the split
 * without deadlines is returned), -EINVAL. ends must hold n entries; n ≤ XF_DP_MAX. */
#define XF_DP_MAX 64
int xf_batcher_dp_split(const xf_cost_t *cm, xf_bjob_t *const *jobs, size_t n,
                        int32_t max_batch, int64_t max_batch_tokens, uint64_t now_ns,
                        uint64_t aging_ns, double future_w, size_t *ends, size_t *n_batches,
                        double *total_s);

#endif
