/* Session stores: where Transformer-XL session blobs (ATTENTION.md §22.1) live between segments.
 * One interface, two backends: in process (LRU, session.max_sessions) and Redis (hiredis async
 * on the loop). Every call and every callback runs on the loop thread; a callback may run
 * before the call returns (in-process) or later (Redis). Blobs passed to callbacks are valid
 * only inside them. The write is a compare-and-set on the tag read with the blob, so two
 * writers that read the same state cannot both advance it. */
#ifndef XF_SERVER_SESSION_STORE_H
#define XF_SERVER_SESSION_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define XF_SSTORE_TAG_MAX 16

/* rc: 0 found, XF_ENOTFOUND absent, XF_EREDIS store unavailable or timed out.
 * tag: what the compare-and-set of the next put expects (empty when absent).
 * ttl_ms: remaining lifetime, -1 when none. */
typedef void (*xf_sstore_get_cb)(void *user, int rc, const uint8_t *blob, size_t len,
                                 const char *tag, size_t tag_len, int64_t ttl_ms);
/* rc: 0 written, -EAGAIN the stored tag is no longer the expected one (lost race), XF_EREDIS
 * (not written: store down or an error reply), -ETIMEDOUT (Redis: sent, but no reply within the
 * timeout or the connection went: it may have been written), -ENOSPC the blob alone exceeds
 * the store's byte bound (in process), -ENOMEM. */
typedef void (*xf_sstore_put_cb)(void *user, int rc);
/* rc: 0 deleted, XF_ENOTFOUND absent, XF_EREDIS. */
typedef void (*xf_sstore_del_cb)(void *user, int rc);

typedef struct xf_sstore xf_sstore_t;
typedef struct xf_sstore_vt {
    const char *name;                        /* "memory", "redis" */
    void (*get)(xf_sstore_t *st, const char *key, xf_sstore_get_cb cb, void *user);
    /* blob is copied; ttl_s > 0 (re)sets the lifetime */
    void (*put)(xf_sstore_t *st, const char *key, const uint8_t *blob, size_t len,
                const char *tag, size_t tag_len, int ttl_s, xf_sstore_put_cb cb, void *user);
    void (*del)(xf_sstore_t *st, const char *key, xf_sstore_del_cb cb, void *user);
    int (*up)(const xf_sstore_t *st);        /* 1 when commands can succeed now */
    /* Release everything; pending callbacks are called with XF_EREDIS first. Handles are
     * closed; the loop must run once more before it can close. */
    void (*free)(xf_sstore_t *st);
} xf_sstore_vt_t;

struct xf_sstore {
    const xf_sstore_vt_t *vt;
};

/* In-process LRU store of at most max_sessions blobs holding at most max_bytes blob bytes in
 * all (0: no byte bound): after a put the least recently used other entries are dropped until
 * both hold; a single blob above max_bytes is refused (put rc -ENOSPC, the stored entry kept).
 * Ownership: *out is new, free with st->vt->free(). Returns 0 or -ENOMEM. */
int xf_sstore_local_create(size_t max_sessions, size_t max_bytes, xf_sstore_t **out);

/* Redis store on loop: url redis://[[user]:password@]host[:port][/db] (user: AUTH user password,
 * a Redis 6 ACL user) or unix:///path; commands time out after timeout_ms (own uv timers: hiredis 0.14 has no command timeout, and a refused
 * connect may never report); reconnects with backoff 100 ms doubling to 5 s, jittered.
 * Ownership: *out is new. Returns 0, XF_EPARAM (bad URL, err says why), -ENOMEM. */
int xf_sstore_redis_create(uv_loop_t *loop, const char *url, int timeout_ms, xf_sstore_t **out,
                           char *err, size_t errlen);

#endif
