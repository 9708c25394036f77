/* The Redis session store: one hiredis async connection on the loop (redisLibuvAttach),
 * commands pipelined on it. hiredis 0.14 has no command timeout and a refused connect may
 * never reach the connect callback, so every command and the connect carry their own uv timer
 * (session.timeout_ms). Disconnects arm a reconnect timer (100 ms doubling to 5 s, jittered,
 * reset on success). Reads: EVAL returning {GET, PTTL}. Writes: a Lua compare-and-set on the
 * blob's segment count and CRC (bytes 80..87 and 104..107, read with GETRANGE) against what
 * the writer read, then SET EX. Loop thread only. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>
#include <xformd/error.h>

#include "server/jobs.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/session_store.h"

enum { ST_DOWN = 0, ST_CONNECTING, ST_UP };

typedef struct rstore {
    xf_sstore_t base;
    uv_loop_t *loop;
    redisAsyncContext *ac;     /* NULL while down; hiredis frees it after its callbacks */
    int state;
    char host[256], path[256], password[256], user[256];   /* user: Redis 6 ACL */
    int port, db, timeout_ms;
    uint64_t backoff_ms;
    uv_timer_t reconnect_timer, connect_timer;
    int closing;
    int setup_left;            /* AUTH / SELECT replies awaited before the connection is up */
    int setup_failed_logged;   /* the setup error was logged at warn (repeats go to debug) */
    int handles_open;          /* timers not yet closed */
    int freed;                 /* free() called: release when handles are closed */
    uint64_t rng;
} rstore_t;

/* One command in flight: two owners (the hiredis callback and the timeout timer). */
typedef struct rcmd {
    rstore_t *r;
    uv_timer_t timer;
    int refs;
    int done;                  /* the user callback ran (reply, error or timeout) */
    int kind;                  /* 0 get, 1 put, 2 del */
    xf_sstore_get_cb get_cb;
    xf_sstore_put_cb put_cb;
    xf_sstore_del_cb del_cb;
    void *user;
    uint64_t t0;
} rcmd_t;

/* A key of another type (a hash, a list, ...) is no blob: it reads as an empty one, which fails
 * the blob checks (the session is reset), instead of a WRONGTYPE error that would answer 503
 * for that session for as long as the key lives. */
static const char GET_LUA[] =
    "local ty = redis.call('TYPE', KEYS[1]).ok "
    "if ty ~= 'string' and ty ~= 'none' then return {'', redis.call('PTTL', KEYS[1])} end "
    "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}";
/* The tag of a key of another type is '1', what GET_LUA's empty blob gives. */
static const char CAS_LUA[] =
    "local t = '' "
    "local ty = redis.call('TYPE', KEYS[1]).ok "
    "if ty == 'string' then "
    "  t = '1' .. redis.call('GETRANGE', KEYS[1], 80, 87) .. "
    "  redis.call('GETRANGE', KEYS[1], 104, 107) "
    "elseif ty ~= 'none' then t = '1' end "
    "if t ~= ARGV[1] then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) "
    "return 1";

static void connect_now(rstore_t *r);

static void on_reconnect(uv_timer_t *t)
{
    connect_now(t->data);
}

static void handle_closed(uv_handle_t *h)
{
    rstore_t *r = h->data;
    if (--r->handles_open == 0 && r->freed)
        free(r);
}

static void set_down(rstore_t *r, const char *why)
{
    uint64_t jitter;

    if (r->state == ST_UP)
        XF_LOGW("redis: connection lost (%s); sessions answer 503 until it is back", why);
    r->state = ST_DOWN;
    r->ac = NULL;
    xf_metric_set(XF_M_redis_up, NULL, NULL, 0);
    uv_timer_stop(&r->connect_timer);
    if (r->closing)
        return;
    r->rng = r->rng * 6364136223846793005ull + 1442695040888963407ull;
    jitter = (r->rng >> 33) % (r->backoff_ms / 4 + 1);
    uv_timer_start(&r->reconnect_timer, on_reconnect, r->backoff_ms + jitter, 0);
    r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
}

static void set_up(rstore_t *r)
{
    uv_timer_stop(&r->connect_timer);
    r->state = ST_UP;
    r->backoff_ms = 100;
    r->setup_failed_logged = 0;
    xf_metric_set(XF_M_redis_up, NULL, NULL, 1);
    XF_LOGI("redis: connected");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rstore_t *r = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback */
        uv_timer_stop(&r->connect_timer);
        if (r->state != ST_DOWN)
            XF_LOGD("redis: connect failed: %s", ac->errstr);
        set_down(r, ac->errstr);
        return;
    }
    /* With AUTH / SELECT queued the connection is up only when they have succeeded (the
     * connect timer keeps running until then): a wrong password must not read as up. */
    if (r->setup_left == 0)
        set_up(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rstore_t *r = ac->data;
    (void)status;
    if (r->ac == ac)
        set_down(r, status == REDIS_OK ? "closed" : ac->errstr);
}

static void on_connect_timeout(uv_timer_t *t)
{
    rstore_t *r = t->data;
    redisAsyncContext *ac = r->ac;

    if (r->state != ST_CONNECTING || !ac)
        return;
    /* Not inside a hiredis callback: freeing here is allowed. A context that never
     * connected gets no disconnect callback. */
    r->ac = NULL;
    redisAsyncFree(ac);
    set_down(r, "connect timed out");
}

static void cmd_release(rcmd_t *c)
{
    if (--c->refs == 0)
        free(c);
}

static void timer_closed(uv_handle_t *h)
{
    cmd_release(h->data);
}

/* Deliver a failure once (timeout, disconnect, error reply). unsure: the command was sent and
 * no reply came (timeout, connection lost), so Redis may still have run it: a put says so
 * (-ETIMEDOUT), since a client told "not stored" would retry and apply its segment twice. */
static void cmd_fail(rcmd_t *c, int unsure)
{
    if (c->done)
        return;
    c->done = 1;
    xf_metric_add(XF_M_redis_errors_total, NULL, NULL, 1);
    if (c->kind == 0)
        c->get_cb(c->user, XF_EREDIS, NULL, 0, "", 0, -1);
    else if (c->kind == 1)
        c->put_cb(c->user, unsure ? -ETIMEDOUT : XF_EREDIS);
    else
        c->del_cb(c->user, XF_EREDIS);
}

/* A command timed out: fail it, and drop the connection (a Redis that does not answer within
 * the timeout is treated as down; freeing the context fails every pending command at once,
 * this one's reply callback included, and the reconnect timer takes over). */
static void on_cmd_timeout(uv_timer_t *t)
{
    rcmd_t *c = t->data;
    rstore_t *r = c->r;
    redisAsyncContext *ac = r->ac;

    cmd_fail(c, 1);
    if (r->state == ST_UP && ac) {
        set_down(r, "command timed out");
        redisAsyncFree(ac);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rcmd_t *c = priv;
    redisReply *rp = reply;
    (void)ac;

    uv_timer_stop(&c->timer);
    if (!c->done) {
        xf_metric_observe(XF_M_redis_command_duration_seconds, NULL, NULL,
                          (double)(xf_now_ns() - c->t0) * 1e-9);
        if (!rp || rp->type == REDIS_REPLY_ERROR) {
            if (rp)
                XF_LOGW("redis: %s", rp->str);
            cmd_fail(c, !rp);   /* no reply: the connection went with the command sent */
        } else if (c->kind == 0) {
            redisReply *v = rp->type == REDIS_REPLY_ARRAY && rp->elements == 2 ? rp->element[0]
                                                                               : NULL;
            redisReply *ttl = v ? rp->element[1] : NULL;
            c->done = 1;
            if (!v || ttl->type != REDIS_REPLY_INTEGER) {
                c->done = 0;
                cmd_fail(c, 0);
            } else if (v->type != REDIS_REPLY_STRING) {
                c->get_cb(c->user, XF_ENOTFOUND, NULL, 0, "", 0, -1);
            } else {
                /* the tag the CAS script computes: '1' + bytes 80..87 + bytes 104..107 */
                char tag[XF_SSTORE_TAG_MAX];
                size_t n = 1, len = v->len;
                tag[0] = '1';
                for (size_t i = 80; i < 88 && i < len; i++)
                    tag[n++] = v->str[i];
                for (size_t i = 104; i < 108 && i < len; i++)
                    tag[n++] = v->str[i];
                c->get_cb(c->user, 0, (const uint8_t *)v->str, len, tag, n,
                          ttl->integer >= 0 ? ttl->integer : -1);
            }
        } else if (c->kind == 1) {
            c->done = 1;
            c->put_cb(c->user, rp->type == REDIS_REPLY_INTEGER && rp->integer == 1 ? 0 : -EAGAIN);
        } else {
            c->done = 1;
            c->del_cb(c->user, rp->type == REDIS_REPLY_INTEGER && rp->integer > 0 ? 0
                                                                                  : XF_ENOTFOUND);
        }
    }
    uv_close((uv_handle_t *)&c->timer, timer_closed);
    cmd_release(c);
}

/* Send argv; on failure the callback runs with XF_EREDIS before this returns. */
static void send_cmd(rstore_t *r, rcmd_t *c, int argc, const char **argv, const size_t *lens)
{
    c->r = r;
    c->refs = 1;
    c->t0 = xf_now_ns();
    if (r->state != ST_UP || !r->ac) {
        cmd_fail(c, 0);
        free(c);
        return;
    }
    uv_timer_init(r->loop, &c->timer);
    c->timer.data = c;
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) != REDIS_OK) {
        cmd_fail(c, 0);
        uv_close((uv_handle_t *)&c->timer, timer_closed);
        return;
    }
    c->refs = 2;   /* the reply callback and the timer */
    uv_timer_start(&c->timer, on_cmd_timeout, (uint64_t)r->timeout_ms, 0);
}

static void r_get(xf_sstore_t *st, const char *key, xf_sstore_get_cb cb, void *user)
{
    rstore_t *r = (rstore_t *)st;
    rcmd_t *c = calloc(1, sizeof *c);
    const char *argv[4] = { "EVAL", GET_LUA, "1", key };
    size_t lens[4] = { 4, sizeof GET_LUA - 1, 1, strlen(key) };

    if (!c) {
        cb(user, -ENOMEM, NULL, 0, "", 0, -1);
        return;
    }
    c->kind = 0;
    c->get_cb = cb;
    c->user = user;
    send_cmd(r, c, 4, argv, lens);
}

static void r_put(xf_sstore_t *st, const char *key, const uint8_t *blob, size_t len,
                  const char *tag, size_t tag_len, int ttl_s, xf_sstore_put_cb cb, void *user)
{
    rstore_t *r = (rstore_t *)st;
    rcmd_t *c = calloc(1, sizeof *c);
    char ttl[24];
    const char *argv[7];
    size_t lens[7];

    if (!c) {
        cb(user, -ENOMEM);
        return;
    }
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : 1);
    argv[0] = "EVAL", lens[0] = 4;
    argv[1] = CAS_LUA, lens[1] = sizeof CAS_LUA - 1;
    argv[2] = "1", lens[2] = 1;
    argv[3] = key, lens[3] = strlen(key);
    argv[4] = tag, lens[4] = tag_len;
    argv[5] = (const char *)blob, lens[5] = len;
    argv[6] = ttl, lens[6] = strlen(ttl);
    c->kind = 1;
    c->put_cb = cb;
    c->user = user;
    send_cmd(r, c, 7, argv, lens);   /* hiredis copies the arguments into its buffer */
}

static void r_del(xf_sstore_t *st, const char *key, xf_sstore_del_cb cb, void *user)
{
    rstore_t *r = (rstore_t *)st;
    rcmd_t *c = calloc(1, sizeof *c);
    const char *argv[2] = { "DEL", key };
    size_t lens[2] = { 3, strlen(key) };

    if (!c) {
        cb(user, -ENOMEM);
        return;
    }
    c->kind = 2;
    c->del_cb = cb;
    c->user = user;
    send_cmd(r, c, 2, argv, lens);
}

static int r_up(const xf_sstore_t *st)
{
    return ((const rstore_t *)st)->state == ST_UP;
}

/* AUTH / SELECT go first on a new connection. The connection counts as up after the last of
 * their replies; an error reply (wrong password, no such database) drops it and retries with
 * the backoff, so xformd_redis_up stays 0 and the session routes answer 503 meanwhile. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rstore_t *r = ac->data;
    redisReply *rp = reply;
    (void)priv;

    if (!rp || r->ac != ac)   /* the context is being freed, or was already given up */
        return;
    if (rp->type == REDIS_REPLY_ERROR) {
        if (!r->setup_failed_logged)
            XF_LOGW("redis: %s (%s); retrying with backoff", rp->str,
                    (const char *)priv);
        else
            XF_LOGD("redis: %s (%s)", rp->str, (const char *)priv);
        r->setup_failed_logged = 1;
        xf_metric_add(XF_M_redis_errors_total, NULL, NULL, 1);
        uv_timer_stop(&r->connect_timer);
        set_down(r, "setup command refused");
        redisAsyncDisconnect(ac);   /* inside a callback: hiredis closes it afterwards */
        return;
    }
    if (--r->setup_left == 0 && r->state == ST_CONNECTING &&
        (ac->c.flags & REDIS_CONNECTED))
        set_up(r);
}

static char setup_auth[] = "AUTH", setup_select[] = "SELECT";   /* names for the log */

static void connect_now(rstore_t *r)
{
    redisAsyncContext *ac;

    if (r->closing || r->state != ST_DOWN)
        return;
    ac = r->path[0] ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        set_down(r, "connect failed");
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        set_down(r, "libuv attach failed");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = ST_CONNECTING;
    r->setup_left = 0;
    if (r->user[0] && redisAsyncCommand(ac, on_setup_reply, setup_auth, "AUTH %s %s", r->user,
                                        r->password) == REDIS_OK)
        r->setup_left++;
    else if (!r->user[0] && r->password[0] &&
             redisAsyncCommand(ac, on_setup_reply, setup_auth, "AUTH %s", r->password) == REDIS_OK)
        r->setup_left++;
    if (r->db &&
        redisAsyncCommand(ac, on_setup_reply, setup_select, "SELECT %d", r->db) == REDIS_OK)
        r->setup_left++;
    uv_timer_start(&r->connect_timer, on_connect_timeout, (uint64_t)r->timeout_ms, 0);
}

static void r_free(xf_sstore_t *st)
{
    rstore_t *r = (rstore_t *)st;
    redisAsyncContext *ac = r->ac;

    r->closing = 1;
    r->ac = NULL;
    r->state = ST_DOWN;
    uv_timer_stop(&r->reconnect_timer);
    uv_timer_stop(&r->connect_timer);
    if (ac)
        redisAsyncFree(ac);   /* pending callbacks run with a NULL reply: they fail */
    r->freed = 1;
    uv_close((uv_handle_t *)&r->reconnect_timer, handle_closed);
    uv_close((uv_handle_t *)&r->connect_timer, handle_closed);
}

static const xf_sstore_vt_t redis_vt = {
    .name = "redis", .get = r_get, .put = r_put, .del = r_del, .up = r_up, .free = r_free,
};

/* redis://[[user]:password@]host[:port][/db] or unix:///path */
static int parse_url(rstore_t *r, const char *url, char *err, size_t errlen)
{
    const char *p, *at, *slash, *colon;
    size_t hl;

    r->port = 6379;
    if (!strncmp(url, "unix://", 7)) {
        if (strlen(url + 7) >= sizeof r->path || url[7] != '/') {
            snprintf(err, errlen, "redis.url: unix:///absolute/path wanted");
            return XF_EPARAM;
        }
        snprintf(r->path, sizeof r->path, "%s", url + 7);
        return 0;
    }
    if (strncmp(url, "redis://", 8)) {
        snprintf(err, errlen,
                 "redis.url: want redis://[[user]:password@]host:port/db or unix:///path");
        return XF_EPARAM;
    }
    p = url + 8;
    at = strrchr(p, '@');
    if (at) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        /* user:password (an ACL user, AUTH user password) or :password (AUTH password) */
        if (pw && pw > p) {
            if ((size_t)(pw - p) >= sizeof r->user) {
                snprintf(err, errlen, "redis.url: user name too long");
                return XF_EPARAM;
            }
            memcpy(r->user, p, (size_t)(pw - p));
            r->user[pw - p] = '\0';
        }
        pw = pw ? pw + 1 : p;
        if ((size_t)(at - pw) >= sizeof r->password) {
            snprintf(err, errlen, "redis.url: password too long");
            return XF_EPARAM;
        }
        memcpy(r->password, pw, (size_t)(at - pw));
        r->password[at - pw] = '\0';
        p = at + 1;
    }
    slash = strchr(p, '/');
    colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
    hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof r->host) {
        snprintf(err, errlen, "redis.url: missing or too long host");
        return XF_EPARAM;
    }
    memcpy(r->host, p, hl);
    r->host[hl] = '\0';
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || v < 1 || v > 65535 || (*end && *end != '/')) {
            snprintf(err, errlen, "redis.url: bad port");
            return XF_EPARAM;
        }
        r->port = (int)v;
    }
    if (slash && slash[1]) {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (*end || v < 0 || v > 1000000) {
            snprintf(err, errlen, "redis.url: bad database number");
            return XF_EPARAM;
        }
        r->db = (int)v;
    }
    return 0;
}

int xf_sstore_redis_create(uv_loop_t *loop, const char *url, int timeout_ms, xf_sstore_t **out,
                           char *err, size_t errlen)
{
    rstore_t *r = calloc(1, sizeof *r);
    int rc;

    if (!r)
        return -ENOMEM;
    if ((rc = parse_url(r, url, err, errlen)) < 0) {
        free(r);
        return rc;
    }
    r->loop = loop;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
    r->backoff_ms = 100;
    r->rng = xf_now_ns() | 1;
    uv_timer_init(loop, &r->reconnect_timer);
    uv_timer_init(loop, &r->connect_timer);
    r->reconnect_timer.data = r->connect_timer.data = r;
    r->handles_open = 2;
    r->base.vt = &redis_vt;
    xf_metric_set(XF_M_redis_up, NULL, NULL, 0);
    connect_now(r);
    *out = &r->base;
    return 0;
}
