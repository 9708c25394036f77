/* Engine-internal: the compute context (ctx.c) — the thread pool and the activation arena a
 * forward pass runs in. forward.c reads these fields; only ctx.c writes them. */
#ifndef XF_ENGINE_CTX_H
#define XF_ENGINE_CTX_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/forward.h>

#include "engine/pool.h"

typedef void (*xf_ffn_tap_fn)(void *user, int32_t layer, const float *act, int32_t n_tokens,
                              int32_t d_ff);

struct xf_ctx {
    xf_pool_t *pool;
    int n_threads;
    size_t chunk_bytes;        /* the arena grows in multiples of this */
    void *arena;               /* 64-byte aligned, arena_bytes long */
    size_t arena_bytes;
    xf_progress_fn progress;   /* xf_ctx_set_progress, or NULL */
    void *progress_user;
    /* Engine-internal observation hook for the pruning scores (prune.c), NULL normally: called
     * on thread 0 after every FF1 op with that layer's FFN intermediate (after the activation,
     * [n_tokens][d_ff] row-major), before any later op may overwrite it. */
    xf_ffn_tap_fn ffn_tap;
    void *ffn_tap_user;
    /* xf_ctx_profile: one padded record per thread (each thread writes only its own), NULL
     * until first switched on; prof_on says whether forwards record now. */
    /* Prefetch of the next GEMM's first weight block while a thread waits at a barrier
     * (forward.c): on unless XF_PREFETCH_NEXT=0 was set when the context was created;
     * xf_ctx_set_prefetch changes it (tests, measurements). The results do not depend on it. */
    int lead_pf;
    struct xf_prof_thread *prof;
    int prof_on;
    int64_t prof_forwards;
    double prof_wall_s;
};

/* One thread's profile counters (ctx.h prof), on its own cache lines. */
struct xf_prof_thread {
    double busy[XF_PROF_COUNT], busy_cpu[XF_PROF_COUNT];
    double wait[XF_PROF_COUNT], wait_cpu[XF_PROF_COUNT];
    int64_t ops[XF_PROF_COUNT];
    double start;
    double spread[XF_PROF_COUNT];   /* thread 0 only: sum over ops of max - min op CPU */
    double op_cpu[2];               /* this thread's CPU between the last op barriers (by
                                       barrier parity; ops without a barrier between them
                                       count as one) */
} __attribute__((aligned(64)));

/* Switch the next-GEMM weight prefetch (lead_pf) on or off. Thread: the context's owner,
 * between forwards. */
void xf_ctx_set_prefetch(xf_ctx_t *c, int on);

/* Set or clear (fn NULL) the FFN tap. Thread: the context's owner, between forwards. */
void xf_ctx_set_ffn_tap(xf_ctx_t *c, xf_ffn_tap_fn fn, void *user);

#endif
