/* The compute context (xf_ctx_*): a thread pool (pool.h) and one activation arena that grows in
 * chunk steps in xf_ctx_reserve() — the only place that allocates for a batch. */
#include "config.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/ctx.h"
#include "engine/plan_internal.h"

#define XF_CTX_DEFAULT_CHUNK ((size_t)4 << 20)

int xf_ctx_create(const xf_ctx_opts_t *opts, xf_ctx_t **out)
{
    xf_ctx_t *c;
    int n = opts ? opts->n_threads : 0;
    int rc;

    if (!out)
        return -EINVAL;
    if (n <= 0) {
        long on = sysconf(_SC_NPROCESSORS_ONLN);
        n = on > 0 ? (int)on : 1;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->n_threads = n;
    c->chunk_bytes = opts && opts->arena_chunk_bytes ? opts->arena_chunk_bytes
                                                     : XF_CTX_DEFAULT_CHUNK;
    rc = xf_pool_create(n, &c->pool);
    if (rc) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void xf_ctx_free(xf_ctx_t *c)
{
    if (!c)
        return;
    xf_pool_free(c->pool);
    free(c->arena);
    free(c);
}

void xf_ctx_set_progress(xf_ctx_t *c, xf_progress_fn fn, void *user)
{
    if (!c)
        return;
    c->progress = fn;
    c->progress_user = user;
}

void xf_ctx_set_ffn_tap(xf_ctx_t *c, xf_ffn_tap_fn fn, void *user)
{
    if (!c)
        return;
    c->ffn_tap = fn;
    c->ffn_tap_user = user;
}

int xf_ctx_threads(const xf_ctx_t *c)
{
    return c ? c->n_threads : 0;
}

size_t xf_ctx_arena_bytes(const xf_ctx_t *c)
{
    return c ? c->arena_bytes : 0;
}

int xf_ctx_reserve(xf_ctx_t *c, const xf_plan_t *p)
{
    size_t need, size;
    void *mem = NULL;

    if (!c || !p)
        return -EINVAL;
    need = p->stats.arena_bytes;
    if (need <= c->arena_bytes)
        return 0;
    size = (need + c->chunk_bytes - 1) / c->chunk_bytes * c->chunk_bytes;
    if (size < need || posix_memalign(&mem, XF_PLAN_ALIGN, size) != 0)
        return -ENOMEM;
    free(c->arena);
    c->arena = mem;
    c->arena_bytes = size;
    return 0;
}

void xf_ctx_shrink(xf_ctx_t *c)
{
    if (!c || !c->arena)
        return;
    free(c->arena);
    c->arena = NULL;
    c->arena_bytes = 0;
#ifdef __GLIBC__
    /* An arena below glibc's (dynamic) mmap threshold lives on the heap; give the pages back
     * to the system, not only to malloc's free lists. */
    malloc_trim(0);
#endif
}
