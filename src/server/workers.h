/* Engine workers: each thread owns one xf_ctx_t (with its own compute pool) and one xf_plan_t,
 * and runs whole batches: pack → xf_plan_build → xf_ctx_reserve → xf_forward → copy each
 * job's rows out. Workers only compute: no JSON, no HTTP, no libuv. The loop submits batches
 * (loop thread only) and hears back through the done callback, called on the worker thread
 * with no lock held. pool lock: rank 6, a leaf (see doc/threads.md). */
#ifndef XF_SERVER_WORKERS_H
#define XF_SERVER_WORKERS_H

#include "server/jobs.h"

typedef struct xf_workers xf_workers_t;

/* What one batch cost, for metrics and the cost model. */
typedef struct xf_batch_report {
    int32_t n_jobs, n_seq, n_tokens, max_len;
    double sum_sq;             /* Σ n_i² over sequences */
    double seconds;            /* plan + forward wall time */
    double frac;               /* share of the layers computed: 1, less when stopped */
    size_t arena_bytes, naive_bytes, lower_bound_bytes;
    int worker;
} xf_batch_report_t;

/* Called on the worker thread after every job of the batch has its outputs (or status). The
 * jobs array is borrowed for the call only; the jobs themselves now belong to the callee. */
typedef void (*xf_workers_done_fn)(xf_job_t **jobs, int n, const xf_batch_report_t *r,
                                   void *user);

/* Start n_workers threads, each with a context of n_threads compute threads; embeddings are
 * pooled with `pooling` (XF_POOL_DEFAULT: the model's).
 * Ownership: *out is new, free with xf_workers_free(). Returns 0 or a negative code. */
int xf_workers_create(const xf_model_t *m, int n_workers, int n_threads,
                      enum xf_pooling pooling, xf_workers_done_fn done, void *user,
                      xf_workers_t **out,
                      xf_diag_t *diag);
/* Stop and join every worker (waits for a running batch to finish). */
void xf_workers_free(xf_workers_t *w);

/* Arena bounds (any thread): a batch whose plan needs more than max_arena_bytes (0: no cap) is
 * split in halves (by requests, then by a request's texts), and a single text that still does
 * not fit is failed with 413 too_many_tokens; an arena idle for arena_idle_ms
 * (0: never) is freed with the packing buffers (xf_ctx_shrink). */
void xf_workers_set_arena_limits(xf_workers_t *w, size_t max_arena_bytes, int arena_idle_ms);

/* Test hook: every batch lasts at least 1 ms + tokens × s_per_token of wall time, spread evenly
 * over its layers (the progress callback waits), so that admission and deadline tests see an
 * engine of known speed however loaded the machine is. 0: off. Call before the first submit
 * (after the warm-up). */
void xf_workers_set_fake_time(xf_workers_t *w, double s_per_token);

/* Number of workers waiting for a batch (loop thread). */
int xf_workers_idle(xf_workers_t *w);
/* Hand a batch of n jobs to an idle worker (loop thread). The array is copied.
 * Returns the index of the worker that runs it (≥ 0), or -EBUSY when every worker is busy. */
int xf_workers_submit(xf_workers_t *w, xf_job_t *const *jobs, int n);

/* Run one synthetic batch (sequence lengths lens[n_seq], token ids cycling through the
 * vocabulary) on worker 0's context from the calling thread, before any submit: warm-up and
 * cost-model fitting at start-up. Fills r. Returns 0 or a negative engine code. */
int xf_workers_warmup(xf_workers_t *w, const int32_t *lens, int n_seq, xf_batch_report_t *r,
                      xf_diag_t *diag);

/* Layers finished by every worker since start (any thread): the watchdog's progress
 * counter, which moves while a long batch runs. */
uint64_t xf_workers_progress(xf_workers_t *w);

/* How far the batch of worker i has got (any thread): *done layers of *n_layer finished by
 * the forward now running (0 before its first layer; n_layer is the model's until the first
 * layer ends). Admission re-estimates a running batch's remaining time from it. */
void xf_workers_layers(xf_workers_t *w, int i, int *done, int *n_layer);

/* Bytes held by every worker's arena (any thread; approximate while a reserve runs). */
size_t xf_workers_arena_bytes(xf_workers_t *w);
/* Multi-instance layout (engine.workers × engine.threads, FastFormers' several single-thread
 * instances): the number of workers, the compute threads of worker i's own context, and the
 * bytes its own arena holds (any thread; 0 for i out of range). */
int xf_workers_count(const xf_workers_t *w);
int xf_workers_threads(const xf_workers_t *w, int i);
size_t xf_workers_worker_arena_bytes(xf_workers_t *w, int i);

#endif
