/* Engine-internal: the compute thread pool (ith/nth partitioning, as ggml). The caller of
 * xf_pool_run() is thread 0; n-1 workers sleep on a condition variable between runs (they may
 * spin briefly first, never against another pool). No allocation after create. */
#ifndef XF_ENGINE_POOL_H
#define XF_ENGINE_POOL_H

typedef struct xf_pool xf_pool_t;
typedef void (*xf_pool_fn)(void *arg, int ith, int nth);

/* Ownership: *out is new, free with xf_pool_free(). n_threads >= 1. Returns 0 or -errno. */
int xf_pool_create(int n_threads, xf_pool_t **out);
void xf_pool_free(xf_pool_t *p);
int xf_pool_size(const xf_pool_t *p);

/* Run fn(arg, ith, nth) on every thread (the caller is ith 0) and return when all are done.
 * Not reentrant; one caller thread at a time. Each thread runs fn with its own GEMM scratch
 * of the pool installed (xf_gemm_scratch(), kernels.h); the caller's previous one comes back
 * after the run. */
void xf_pool_run(xf_pool_t *p, xf_pool_fn fn, void *arg);

/* From inside fn: wait until all nth threads reach the barrier. A waiter spins briefly, then
 * keeps spinning while the missing threads are on a CPU (for at most twice the measured
 * wake-up latency, capped by xf_pool_set_adaptive; not in a pool with more threads than
 * online CPUs), then sleeps. */
void xf_pool_barrier(xf_pool_t *p);
/* The same barrier; while this thread spins waiting for the others, it calls idle(arg)
 * instead of pausing until idle returns 0 (no work left) or the barrier opens; each call
 * counts as a few pauses of the spin before sleeping. idle must do a short bounded step of
 * work that needs nothing from the other threads (the forward prefetches the next GEMM's
 * weights, forward.c); it is not called on the last thread to arrive, nor with one thread. */
void xf_pool_barrier_idle(xf_pool_t *p, int (*idle)(void *), void *arg);

/* Cap on the adaptive part of a barrier wait in ns (default 2 ms); 0 turns it off (a waiter
 * then sleeps after the short fixed spin). Between runs only. */
void xf_pool_set_adaptive(xf_pool_t *p, long max_ns);

/* Barrier statistics since create: waits (threads that were not the last to arrive), waits
 * that reached the adaptive stage, waits that slept, and the wake-up latency estimate. */
typedef struct {
    long waits, adaptive, sleeps, wake_ns;
} xf_pool_stats_t;
void xf_pool_stats(const xf_pool_t *p, xf_pool_stats_t *st);

/* Static row split: [*r0, *r1) of nr rows for thread ith of nth. */
static inline void xf_split_rows(int nr, int ith, int nth, int *r0, int *r1)
{
    int dr = (nr + nth - 1) / nth;
    int a = dr * ith;
    int b = a + dr;
    *r0 = a < nr ? a : nr;
    *r1 = b < nr ? b : nr;
}

#endif
