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
    const char *pf = getenv("XF_PREFETCH_NEXT");
    c->lead_pf = !(pf && strcmp(pf, "0") == 0);
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
    free(c->prof);
    free(c->arena);
    free(c);
}

void xf_ctx_set_prefetch(xf_ctx_t *c, int on)
{
    c->lead_pf = on != 0;
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

int xf_ctx_profile(xf_ctx_t *c, int on)
{
    if (!c)
        return -EINVAL;
    if (!on) {
        c->prof_on = 0;
        return 0;
    }
    if (!c->prof) {
        void *mem = NULL;
        if (posix_memalign(&mem, 64, (size_t)c->n_threads * sizeof *c->prof) != 0)
            return -ENOMEM;
        c->prof = mem;
    }
    memset(c->prof, 0, (size_t)c->n_threads * sizeof *c->prof);
    c->prof_forwards = 0;
    c->prof_wall_s = 0;
    c->prof_on = 1;
    return 0;
}

int xf_ctx_profile_get(const xf_ctx_t *c, xf_prof_t *out)
{
    if (!c || !out || !c->prof)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->n_threads = c->n_threads < XF_PROF_MAX_THREADS ? c->n_threads : XF_PROF_MAX_THREADS;
    out->forwards = c->prof_forwards;
    out->wall_s = c->prof_wall_s;
    for (int t = 0; t < out->n_threads; t++) {
        const struct xf_prof_thread *pt = &c->prof[t];
        for (int k = 0; k < XF_PROF_COUNT; k++) {
            out->busy_s[k][t] = pt->busy[k];
            out->busy_cpu_s[k][t] = pt->busy_cpu[k];
            out->wait_s[k][t] = pt->wait[k];
            out->wait_cpu_s[k][t] = pt->wait_cpu[k];
            if (t == 0) {
                out->ops[k] = pt->ops[k];
                out->spread_cpu_s[k] = pt->spread[k];
            }
        }
        out->start_s[t] = pt->start;
    }
    return 0;
}

const char *xf_prof_class_name(int cls)
{
    static const char *const names[XF_PROF_COUNT] = {
        [XF_PROF_EMBED] = "embed", [XF_PROF_NORM] = "norm",   [XF_PROF_QKV] = "qkv",
        [XF_PROF_SPLIT] = "split", [XF_PROF_ATTN] = "attn",   [XF_PROF_OPROJ] = "oproj",
        [XF_PROF_FF1] = "ff1",     [XF_PROF_FF2] = "ff2",     [XF_PROF_HEADS] = "heads",
        [XF_PROF_Q8] = "q8",
    };
    return cls >= 0 && cls < XF_PROF_COUNT ? names[cls] : "?";
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
