/* Engine-internal: the compute context (ctx.c) — the thread pool and the activation arena a
 * forward pass runs in. forward.c reads these fields; only ctx.c writes them. */
#ifndef XF_ENGINE_CTX_H
#define XF_ENGINE_CTX_H

#include <stddef.h>

#include <xformd/forward.h>

#include "engine/pool.h"

struct xf_ctx {
    xf_pool_t *pool;
    int n_threads;
    size_t chunk_bytes;        /* the arena grows in multiples of this */
    void *arena;               /* 64-byte aligned, arena_bytes long */
    size_t arena_bytes;
    xf_progress_fn progress;   /* xf_ctx_set_progress, or NULL */
    void *progress_user;
};

#endif
