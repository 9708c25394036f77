/* The in-process session store: a hash map of key → blob with an LRU list, at most
 * max_sessions entries and max_bytes blob bytes (session.store_max_bytes), a lifetime per
 * entry (expired entries read as absent), and a version counter per entry as the
 * compare-and-set tag. Loop thread only; callbacks run before the
 * call returns. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/error.h>

#include "server/jobs.h"
#include "server/metrics.h"
#include "server/session_store.h"

typedef struct ent {
    struct ent *hnext;                 /* hash chain */
    struct ent *prev, *next;           /* LRU list, most recent first */
    char *key;
    uint8_t *blob;
    size_t len;
    uint64_t version;                  /* bumped by every put: the CAS tag */
    uint64_t expires_ns;               /* 0: never */
} ent_t;

typedef struct local {
    xf_sstore_t base;
    ent_t **tab;
    size_t nbuckets, n, max;
    size_t bytes, max_bytes;           /* blob bytes held; bound (0: none) */
    ent_t *head, *tail;
    uint64_t next_version;
} local_t;

static size_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

static ent_t **slot(local_t *L, const char *key)
{
    ent_t **p = &L->tab[hash(key) % L->nbuckets];
    while (*p && strcmp((*p)->key, key))
        p = &(*p)->hnext;
    return p;
}

static void lru_unlink(local_t *L, ent_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        L->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        L->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(local_t *L, ent_t *e)
{
    e->next = L->head;
    e->prev = NULL;
    if (L->head)
        L->head->prev = e;
    L->head = e;
    if (!L->tail)
        L->tail = e;
}

static void drop(local_t *L, ent_t *e)
{
    ent_t **p = slot(L, e->key);
    *p = e->hnext;
    lru_unlink(L, e);
    L->bytes -= e->len;
    free(e->key);
    free(e->blob);
    free(e);
    L->n--;
    xf_metric_set(XF_M_sessions_active, NULL, NULL, (int64_t)L->n);
    xf_metric_set(XF_M_session_store_bytes, NULL, NULL, (int64_t)L->bytes);
}

/* The live entry for key, or NULL (expired entries are dropped here). */
static ent_t *find(local_t *L, const char *key)
{
    ent_t *e = *slot(L, key);
    if (e && e->expires_ns && xf_now_ns() >= e->expires_ns) {
        drop(L, e);
        return NULL;
    }
    return e;
}

static void l_get(xf_sstore_t *st, const char *key, xf_sstore_get_cb cb, void *user)
{
    local_t *L = (local_t *)st;
    ent_t *e = find(L, key);
    char tag[8];
    int64_t ttl = -1;

    if (!e) {
        cb(user, XF_ENOTFOUND, NULL, 0, "", 0, -1);
        return;
    }
    lru_unlink(L, e);
    lru_front(L, e);
    memcpy(tag, &e->version, 8);
    if (e->expires_ns) {
        uint64_t now = xf_now_ns();
        ttl = e->expires_ns > now ? (int64_t)((e->expires_ns - now) / 1000000u) : 0;
    }
    cb(user, 0, e->blob, e->len, tag, 8, ttl);
}

static void l_put(xf_sstore_t *st, const char *key, const uint8_t *blob, size_t len,
                  const char *tag, size_t tag_len, int ttl_s, xf_sstore_put_cb cb, void *user)
{
    local_t *L = (local_t *)st;
    ent_t *e = find(L, key);
    uint8_t *copy;

    /* compare-and-set: absent expects an empty tag, present its current version */
    if (e ? (tag_len != 8 || memcmp(tag, &e->version, 8)) : tag_len != 0) {
        cb(user, -EAGAIN);
        return;
    }
    if (L->max_bytes && len > L->max_bytes) {
        cb(user, -ENOSPC);
        return;
    }
    copy = malloc(len ? len : 1);
    if (!copy) {
        cb(user, -ENOMEM);
        return;
    }
    memcpy(copy, blob, len);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(key))) {
            free(e);
            free(copy);
            cb(user, -ENOMEM);
            return;
        }
        *slot(L, key) = e;
        L->n++;
        lru_front(L, e);
    } else {
        lru_unlink(L, e);
        lru_front(L, e);
    }
    L->bytes += len - e->len;
    free(e->blob);
    e->blob = copy;
    e->len = len;
    /* e is at the front: only older entries go */
    while ((L->n > L->max || (L->max_bytes && L->bytes > L->max_bytes)) && L->tail != e)
        drop(L, L->tail);
    xf_metric_set(XF_M_sessions_active, NULL, NULL, (int64_t)L->n);
    xf_metric_set(XF_M_session_store_bytes, NULL, NULL, (int64_t)L->bytes);
    e->version = ++L->next_version;
    e->expires_ns = ttl_s > 0 ? xf_now_ns() + (uint64_t)ttl_s * 1000000000ull : 0;
    cb(user, 0);
}

static void l_del(xf_sstore_t *st, const char *key, xf_sstore_del_cb cb, void *user)
{
    local_t *L = (local_t *)st;
    ent_t *e = find(L, key);

    if (!e) {
        cb(user, XF_ENOTFOUND);
        return;
    }
    drop(L, e);
    cb(user, 0);
}

static int l_up(const xf_sstore_t *st)
{
    (void)st;
    return 1;
}

static void l_free(xf_sstore_t *st)
{
    local_t *L = (local_t *)st;
    while (L->head)
        drop(L, L->head);
    free(L->tab);
    free(L);
}

static const xf_sstore_vt_t local_vt = {
    .name = "memory", .get = l_get, .put = l_put, .del = l_del, .up = l_up, .free = l_free,
};

int xf_sstore_local_create(size_t max_sessions, size_t max_bytes, xf_sstore_t **out)
{
    local_t *L = calloc(1, sizeof *L);

    if (!L)
        return -ENOMEM;
    L->max = max_sessions ? max_sessions : 1;
    L->max_bytes = max_bytes;
    L->nbuckets = 1024;
    while (L->nbuckets < L->max && L->nbuckets < (1u << 22))
        L->nbuckets *= 2;
    L->tab = calloc(L->nbuckets, sizeof *L->tab);
    if (!L->tab) {
        free(L);
        return -ENOMEM;
    }
    L->base.vt = &local_vt;
    *out = &L->base;
    return 0;
}
