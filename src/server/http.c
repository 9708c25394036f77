/* HTTP front end (see http.h). The access handler runs on MHD's threads: it allocates the
 * request state, refuses ambiguous framing (RFC 9112 §6.3: conflicting Content-Length, both
 * Content-Length and Transfer-Encoding, unknown codings, whitespace in header names, %00 in the
 * path), routes, checks auth and content type, accumulates the body within the limit and the
 * global buffer budget (413/503 on Content-Length before reading, or as a chunked body grows)
 * and hands the complete request to routes.c. Per-connection deadlines for the whole header and
 * the whole body are kept here and enforced by xf_http_expire() from the loop's timer. Nothing
 * here blocks on inference. */
#include "config.h"

#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/cors.h"
#include "server/log.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/routes.h"
#include "server/server.h"

/* What a connection is waiting for, for its deadline. */
enum conn_phase {
    CONN_HEADER = 0,   /* a request's header (from the start or the previous request's end) */
    CONN_BODY,         /* the body of a request whose header arrived */
    CONN_BUSY          /* request complete: suspended, computing or replying (no deadline) */
};

/* Per-connection state, from MHD_CONNECTION_NOTIFY_STARTED to _CLOSED (socket_context). */
typedef struct xf_conn {
    struct xf_conn *prev, *next;   /* h->conns (h->lock) */
    MHD_socket fd;
    enum conn_phase phase;         /* h->lock */
    uint64_t phase_ns;             /* when the phase began (h->lock) */
    int reaped;                    /* shut down by xf_http_expire (h->lock) */
    unsigned uri_seen, completed;  /* request lines parsed / completed callbacks (MHD thread) */
    size_t uri_len;                /* bytes of the last request target (MHD thread) */
} xf_conn_t;

struct xf_http {
    struct MHD_Daemon *d;
    struct xf_server *srv;
    int port;
    atomic_int refuse;             /* 1: new connections are closed at once (accept_cb) */
    pthread_mutex_t lock;          /* protects conns and every xf_conn_t's phase fields;
                                      rank 7, a leaf (doc/threads.md) */
    xf_conn_t *conns;
};

/* Returned by the URI log callback as the initial *req_cls of a request whose raw target has
 * "%00": MHD unescapes it into a NUL that would silently cut the path. No memory is attached,
 * so a request MHD drops before the access handler leaks nothing. */
static char nul_in_uri_marker;

/* Indexed by enum xf_http_err; XF_HE_NONE is not an error and answers as internal_error. */
static const unsigned err_status[XF_HE_COUNT] = {
    [XF_HE_NONE] = 500,
#define X(code, status, name) [XF_HE_##code] = status,
#include "server/http_errors.def"
#undef X
};
static const char *const err_names[XF_HE_COUNT] = {
    [XF_HE_NONE] = "internal_error",
#define X(code, status, name) [XF_HE_##code] = name,
#include "server/http_errors.def"
#undef X
};

unsigned xf_http_err_status(enum xf_http_err code)
{
    return (unsigned)code < XF_HE_COUNT ? err_status[code] : 500;
}

const char *xf_http_err_name(enum xf_http_err code)
{
    return (unsigned)code < XF_HE_COUNT ? err_names[code] : "internal_error";
}

/* ---- buffers ----------------------------------------------------------------------- */

static int buf_reserve(xf_buf_t *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t n = b->cap ? b->cap : 256;
    while (n < b->len + extra + 1)
        n *= 2;
    char *p = realloc(b->p, n);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = n;
    return 0;
}

void xf_buf_putn(xf_buf_t *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void xf_buf_puts(xf_buf_t *b, const char *s)
{
    xf_buf_putn(b, s, strlen(s));
}

void xf_buf_printf(xf_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        xf_buf_putn(b, tmp, (size_t)n);
        return;
    }
    if (buf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left): 1 to 4, or 0 (RFC 3629 §4:
 * no overlong forms, no surrogates, nothing past U+10FFFF, no cut sequence). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* A JSON string is UTF-8 (RFC 8259 §8.1), and what is written here may echo bytes a client
 * sent (a model name from the path, a message cut at 512 bytes): each byte that starts no
 * well-formed sequence becomes U+FFFD, as a decoder that replaces errors would read it. */
void xf_buf_json_str(xf_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, n + 2) < 0)
        return;
    xf_buf_putn(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t len = utf8_seq((const unsigned char *)s + i, n - i);
            if (len) {
                i += len - 1;
                continue;
            }
            xf_buf_putn(b, s + run, i - run);
            run = i + 1;
            xf_buf_putn(b, "\\ufffd", 6);
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        xf_buf_putn(b, s + run, i - run);
        run = i + 1;
        char esc[7] = { '\\', 0 };
        switch (c) {
        case '"': esc[1] = '"'; xf_buf_putn(b, esc, 2); break;
        case '\\': esc[1] = '\\'; xf_buf_putn(b, esc, 2); break;
        case '\n': esc[1] = 'n'; xf_buf_putn(b, esc, 2); break;
        case '\r': esc[1] = 'r'; xf_buf_putn(b, esc, 2); break;
        case '\t': esc[1] = 't'; xf_buf_putn(b, esc, 2); break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            xf_buf_putn(b, esc, 6);
        }
    }
    xf_buf_putn(b, s + run, n - run);
    xf_buf_putn(b, "\"", 1);
}

void xf_buf_float(xf_buf_t *b, float v)
{
    if (!isfinite(v))
        v = 0.0f;
    /* 9 significant digits round-trip any float exactly. */
    xf_buf_printf(b, "%.9g", (double)v);
}

void xf_buf_free(xf_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- replies ------------------------------------------------------------------------ */

/* TEI's response metadata headers (router/src/lib.rs, ResponseMetadata into HeaderMap), on
 * the routes TEI sends them on and only with a 200: x-compute-type, x-compute-characters,
 * x-compute-tokens, and x-compute-time, x-total-time, x-tokenization-time, x-queue-time,
 * x-inference-time in whole milliseconds (truncated, as Duration::as_millis). Values are
 * xformd's own timing of the request: total from its first byte to this reply, tokenisation
 * on the MHD thread, queue from the job's submit to its batch's start, inference the batch's
 * compute. x-compute-type is "cpu" (TEI writes a fixed "gpu+optimized"). */
static void add_compute_headers(struct MHD_Response *r, const xf_req_t *req)
{
    const xf_job_t *j = req->job;
    uint64_t now = xf_now_ns();
    uint64_t total = now > req->start_ns ? now - req->start_ns : 0;
    uint64_t q = j->start_ns > j->enqueue_ns ? j->start_ns - j->enqueue_ns : 0;
    uint64_t inf = j->end_ns > j->start_ns ? j->end_ns - j->start_ns : 0;
    char v[32];
    MHD_add_response_header(r, "x-compute-type", "cpu");
    snprintf(v, sizeof v, "%llu", (unsigned long long)(total / 1000000u));
    MHD_add_response_header(r, "x-compute-time", v);
    MHD_add_response_header(r, "x-total-time", v);
    snprintf(v, sizeof v, "%lld", req->chars);
    MHD_add_response_header(r, "x-compute-characters", v);
    snprintf(v, sizeof v, "%d", req->usage_tokens);
    MHD_add_response_header(r, "x-compute-tokens", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)(req->tok_ns / 1000000u));
    MHD_add_response_header(r, "x-tokenization-time", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)(q / 1000000u));
    MHD_add_response_header(r, "x-queue-time", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)(inf / 1000000u));
    MHD_add_response_header(r, "x-inference-time", v);
}

/* The Access-Control-* headers for an answer to conn when its Origin is allowed by list
 * (cors.h); a preflight also gets the route's methods (allow), the headers a request may
 * carry and how long to cache it. Vary: Origin whenever the answer depends on it (a list). */
static void add_cors_headers(struct MHD_Response *r, const char *list,
                             struct MHD_Connection *conn, int preflight, const char *allow)
{
    if (!list || !list[0])
        return;
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const char *v = xf_cors_allow(list, origin);
    if (strcmp(list, "*") != 0)
        MHD_add_response_header(r, "Vary", "Origin");
    if (!v)
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", v);
    if (!preflight) {
        MHD_add_response_header(r, "Access-Control-Expose-Headers", XF_CORS_EXPOSE);
        return;
    }
    MHD_add_response_header(r, "Access-Control-Allow-Methods", allow);
    MHD_add_response_header(r, "Access-Control-Allow-Headers", XF_CORS_HEADERS);
    MHD_add_response_header(r, "Access-Control-Max-Age", XF_CORS_MAX_AGE);
}

static enum MHD_Result queue(xf_req_t *req, unsigned status, const char *ctype, char *data,
                             size_t len, int retry_after_s)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (req->attn_fallback && status == MHD_HTTP_OK)
        MHD_add_response_header(r, "X-Xformd-Attention-Fallback", "dense");
    if (req->compute_headers && req->job && status == MHD_HTTP_OK)
        add_compute_headers(r, req);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED || req->preflight)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, xf_routes_allow(req->route));
    if (req->srv)
        add_cors_headers(r, req->srv->o.cors_allow_origin, req->conn, req->preflight,
                         xf_routes_allow(req->route));
    if (req->close || (req->srv && atomic_load(&req->srv->draining)))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(req->conn, status, r);
    MHD_destroy_response(r);
    req->status = (int)status;
    req->state = XF_REQ_REPLIED;
    return rc;
}

enum MHD_Result xf_http_reply_buf(xf_req_t *req, unsigned status, const char *content_type,
                                  xf_buf_t *buf)
{
    if (buf->oom) {
        xf_buf_free(buf);
        return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    }
    if (!buf->p)
        xf_buf_puts(buf, "");
    char *p = buf->p;
    size_t n = buf->len;
    memset(buf, 0, sizeof *buf);
    return queue(req, status, content_type, p, n, 0);
}

enum MHD_Result xf_http_reply_json(xf_req_t *req, unsigned status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    if (!s)
        return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    return queue(req, status, "application/json", s, strlen(s), 0);
}

static const char *tei_type(enum xf_http_err code)
{
    switch (code) {
    case XF_HE_INVALID_UTF8:
        return "Tokenizer";
    case XF_HE_EMPTY_INPUT:
        return "Empty";
    case XF_HE_OVERLOADED:
    case XF_HE_DEADLINE:
    case XF_HE_COMPUTE_TIMEOUT:
    case XF_HE_DRAINING:
        return "Overloaded";
    case XF_HE_NOT_READY:
        return "Unhealthy";
    case XF_HE_INTERNAL:
    case XF_HE_OUT_OF_MEMORY:
    case XF_HE_UNSUPPORTED_MODEL:
        return "Backend";
    case XF_HE_UNAUTHORIZED:
        return "Unauthorized";
    default:
        return "Validation";
    }
}

/* The status a TEI route answers with. TEI (>= 1.9) derives it from the error type:
 * Validation and Tokenizer 422, Empty 400, Overloaded 429, Backend 424 (a route the model
 * cannot serve, e.g. /rerank without a cross-encoder), Unhealthy 503. xformd keeps its own
 * status where the HTTP layer answers before any TEI validation would (401, 404, 405, 408,
 * 411, 413 body_too_large, 415, malformed JSON 400) and for its deadline, drain and memory
 * refusals (5xx with Retry-After), which TEI does not have. */
static unsigned tei_status(enum xf_http_err code, unsigned status)
{
    switch (code) {
    case XF_HE_BAD_FIELD:
    case XF_HE_MISSING_FIELD:
    case XF_HE_BAD_DIMENSIONS:
    case XF_HE_BAD_ATTENTION:
    case XF_HE_TOO_MANY_INPUTS:
    case XF_HE_INPUT_TOO_LONG:
    case XF_HE_TOO_MANY_TOKENS:
    case XF_HE_TOO_SLOW:
        return 422;
    case XF_HE_UNSUPPORTED_MODEL:
        return 424;
    default:
        return status;
    }
}

/* The status the OpenAI route answers with: OpenAI refuses an input over the model's context
 * length, too many inputs and too many tokens in one request with 400 invalid_request_error
 * (the SDKs raise BadRequestError), where xformd's own routes say 413. */
static unsigned openai_status(enum xf_http_err code, unsigned status)
{
    switch (code) {
    case XF_HE_TOO_MANY_INPUTS:
    case XF_HE_INPUT_TOO_LONG:
    case XF_HE_TOO_MANY_TOKENS:
        return 400;
    default:
        return status;
    }
}

/* OpenAI's error type; a wrong or missing key is its invalid_request_error with code
 * invalid_api_key (what api.openai.com answers; the SDKs raise AuthenticationError on the 401). */
static const char *openai_type(enum xf_http_err code)
{
    unsigned st = xf_http_err_status(code);
    if (st == 401)
        return "invalid_request_error";
    if (st == 429)
        return "rate_limit_error";
    if (st >= 500)
        return "server_error";
    return "invalid_request_error";
}

/* OpenAI's error code: xformd's own name, but invalid_api_key for a missing or wrong key. */
static const char *openai_code(enum xf_http_err code)
{
    return xf_http_err_status(code) == 401 ? "invalid_api_key" : xf_http_err_name(code);
}

enum MHD_Result xf_http_reply_error(xf_req_t *req, enum xf_http_err code, int retry_after_s,
                                    const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    unsigned status = xf_http_err_status(code);
    if (req->api == XF_API_TEI)
        status = tei_status(code, status);
    else if (req->api == XF_API_OPENAI)
        status = openai_status(code, status);
    if ((status == 429 || status == 503) && retry_after_s <= 0)
        retry_after_s = 1;
    xf_buf_t b = { 0 };
    const char *name = xf_http_err_name(code);
    switch (req->api) {
    case XF_API_OPENAI:
        xf_buf_puts(&b, "{\"error\":{\"message\":");
        xf_buf_json_str(&b, msg, strlen(msg));
        xf_buf_printf(&b, ",\"type\":\"%s\",\"param\":", openai_type(code));
        if (req->err_param)
            xf_buf_json_str(&b, req->err_param, strlen(req->err_param));
        else
            xf_buf_puts(&b, "null");
        xf_buf_printf(&b, ",\"code\":\"%s\"}}", openai_code(code));
        break;
    case XF_API_TEI:
        xf_buf_puts(&b, "{\"error\":");
        xf_buf_json_str(&b, msg, strlen(msg));
        xf_buf_printf(&b, ",\"error_type\":\"%s\"}", tei_type(code));
        break;
    case XF_API_KSERVE:
        xf_buf_puts(&b, "{\"error\":");
        xf_buf_json_str(&b, msg, strlen(msg));
        xf_buf_puts(&b, "}");
        break;
    default:
        xf_buf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", name);
        xf_buf_json_str(&b, msg, strlen(msg));
        xf_buf_puts(&b, "}}");
    }
    if (b.oom) {
        xf_buf_free(&b);
        return MHD_NO;
    }
    if (status >= 500)
        XF_LOGW("%u %s: %s", status, name, msg);
    else
        XF_LOGD("%u %s: %s", status, name, msg);
    return queue(req, status, "application/json", b.p, b.len, retry_after_s);
}

/* ---- the access handler ------------------------------------------------------------- */

static int json_content_type(const char *ct)
{
    if (!ct)
        return 1;   /* lenient: a missing Content-Type is read as JSON */
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static int auth_ok(const xf_server_t *s, struct MHD_Connection *c)
{
    const char *key = s->o.api_key;
    if (!key || !key[0])
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t hl = strlen(h), kl = strlen(key);
    /* Constant time in the key's length: no early exit on the first mismatch. */
    unsigned diff = (unsigned)(hl != kl);
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < hl ? h[i] : 0);
    return diff == 0;
}

/* Reserve bytes of the global buffer budget (http.max_buffered_bytes) for req: 0, or -1 when
 * the budget is spent (nothing reserved then). Any MHD thread. */
static int budget_take(xf_req_t *req, size_t bytes)
{
    xf_server_t *s = req->srv;
    long long b = (long long)bytes;
    long long now = atomic_fetch_add(&s->buffered_bytes, b) + b;
    if ((unsigned long long)now > s->o.max_buffered_bytes) {
        atomic_fetch_sub(&s->buffered_bytes, b);
        return -1;
    }
    req->reserved += bytes;
    return 0;
}

static void budget_release(xf_req_t *req)
{
    if (req->reserved)
        atomic_fetch_sub(&req->srv->buffered_bytes, (long long)req->reserved);
    req->reserved = 0;
}

static int body_append(xf_req_t *req, const char *data, size_t n, size_t limit)
{
    if (req->body_len + n > limit)
        return -1;
    if (req->body_len + n > req->reserved && budget_take(req, req->body_len + n -
                                                         req->reserved) < 0)
        return -3;
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + n + 1)
            cap *= 2;
        if (cap > limit + 1)
            cap = limit + 1;
        char *p = realloc(req->body, cap);
        if (!p)
            return -2;
        req->body = p;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return 0;
}

/* What the framing headers of a request say (RFC 9112 §6.3). */
typedef struct framing {
    int n_cl, cl_conflict, n_te, ws_name;
    const char *cl, *te;
    size_t header_bytes;   /* "name: value\r\n" of every field */
} framing_t;

static enum MHD_Result framing_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    framing_t *f = cls;
    (void)kind;
    if (!key)
        return MHD_YES;
    f->header_bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    if (strpbrk(key, " \t"))
        f->ws_name = 1;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->n_cl++ > 0 && (!value || !f->cl || strcmp(value, f->cl) != 0))
            f->cl_conflict = 1;
        if (!f->cl)
            f->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->n_te++;
        f->te = value;
    }
    return MHD_YES;
}

/* Refuse what a proxy in front could frame differently from us: 0 fine, else the reply is
 * queued (400, Connection: close) and *ret holds it. */
static int framing_refused(xf_req_t *req, enum MHD_Result *ret)
{
    framing_t f;
    memset(&f, 0, sizeof f);
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, framing_cb, &f);
    const xf_server_opts_t *o = &req->srv->o;
    if (o->max_header_bytes && f.header_bytes > o->max_header_bytes) {
        req->close = 1;
        *ret = xf_http_reply_error(req, XF_HE_HEADERS_TOO_LARGE, 0,
                                   "request header fields of %zu bytes exceed the limit of %zu "
                                   "bytes (http.max_header_bytes)", f.header_bytes,
                                   o->max_header_bytes);
        return 1;
    }
    const char *why = NULL;
    if (f.ws_name)
        why = "whitespace in a header name (RFC 9112 §5.1)";
    else if (f.cl_conflict)
        why = "conflicting Content-Length headers (RFC 9112 §6.3)";
    else if (f.n_te && f.n_cl)
        why = "both Content-Length and Transfer-Encoding (RFC 9112 §6.3)";
    else if (f.n_te > 1 || (f.n_te && (!f.te || strcasecmp(f.te, "chunked") != 0)))
        why = "unsupported Transfer-Encoding; only a single \"chunked\" is accepted";
    if (!why)
        return 0;
    req->close = 1;
    *ret = xf_http_reply_error(req, XF_HE_BAD_REQUEST, 0, "%s", why);
    return 1;
}

static xf_conn_t *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void conn_phase(xf_server_t *s, struct MHD_Connection *c, enum conn_phase ph)
{
    xf_conn_t *k = conn_of(c);
    struct xf_http *h = s->http_cb;
    if (!k || !h)
        return;
    pthread_mutex_lock(&h->lock);
    if (k->phase != ph || ph == CONN_HEADER) {
        k->phase = ph;
        k->phase_ns = xf_now_ns();
    }
    pthread_mutex_unlock(&h->lock);
}

static void set_pending(xf_req_t *req, enum xf_http_err code, const char *msg)
{
    if (req->pending_err != XF_HE_NONE)
        return;
    req->pending_err = code;
    snprintf(req->pending_msg, sizeof req->pending_msg, "%s", msg);
}

static void reading_done(xf_req_t *req)
{
    if (req->reading) {
        req->reading = 0;
        atomic_fetch_sub(&req->srv->reading, 1);
    }
}

/* Most body bytes dropped before answering a request refused on its header (beyond them the
 * answer goes at once and the connection closes); http.max_body_bytes when that is larger. */
#define XF_HTTP_DISCARD_BYTES (64u << 20)

/* 1 when the answer to a request refused on its header alone should wait until its body has
 * been read and dropped. A client that sends its whole body before reading (Python's
 * http.client, Node's fetch, hence the openai SDKs) gets EPIPE/ECONNRESET instead of the
 * answer when MHD closes a connection with unread bytes (it must: a reply queued before the
 * body makes it stop reading), and the kernel's reset may also discard the answer in flight
 * (RFC 9112 §9.6). Not when the client waits for "100 Continue" (it sends nothing more and
 * reads the answer at once) or the body has no length we can skip in bounded time. */
static int refusal_waits_for_body(const xf_server_t *s, struct MHD_Connection *conn)
{
    const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if (ex && strcasecmp(ex, "100-continue") == 0)
        return 0;
    /* framing_refused() passed: at most one Content-Length, or a single "chunked". */
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return 1;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(cl, &end, 10);
    size_t cap = s->o.max_body_bytes > XF_HTTP_DISCARD_BYTES ? s->o.max_body_bytes
                                                             : XF_HTTP_DISCARD_BYTES;
    return errno == 0 && end != cl && v > 0 && v <= cap;
}

/* Refuse a request on its header: at once, or (wait_body) after its body has been read and
 * dropped, from the final access-handler call (the body deadline and FIN check apply). It will
 * never queue a job, so a drain does not wait for it (reading_done): the drain's stop closes
 * the connection if the body is still coming. */
static enum MHD_Result refuse(xf_req_t *req, int wait_body, enum xf_http_err code,
                              int retry_after_s, const char *fmt, ...) XF_PRINTF(5, 6);
static enum MHD_Result refuse(xf_req_t *req, int wait_body, enum xf_http_err code,
                              int retry_after_s, const char *fmt, ...)
{
    char msg[sizeof req->pending_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!wait_body)
        return xf_http_reply_error(req, code, retry_after_s, "%s", msg);
    set_pending(req, code, msg);
    req->state = XF_REQ_BODY;
    reading_done(req);
    conn_phase(req->srv, req->conn, CONN_BODY);
    return MHD_YES;
}

/* The first access-handler call of a request: the header is complete. Refuses what is refused
 * on the header alone (at once, or after dropping a body on its way: refuse()); otherwise
 * moves to XF_REQ_BODY. */
static enum MHD_Result first_call(xf_server_t *s, xf_req_t *req, struct MHD_Connection *conn,
                                  const char *url, const char *method, int nul_in_uri)
{
    enum MHD_Result fr;
    /* Over our limits but within libmicrohttpd's buffer: a JSON 414/431 (counted) instead of
     * the library's HTML page, which it sends only past the connection memory. */
    const xf_conn_t *k = conn_of(conn);
    if (k && s->o.max_uri_bytes && k->uri_len > s->o.max_uri_bytes) {
        req->close = 1;
        return xf_http_reply_error(req, XF_HE_URI_TOO_LONG, 0,
                                   "request target of %zu bytes exceeds the limit of %zu bytes "
                                   "(http.max_uri_bytes)", k->uri_len, s->o.max_uri_bytes);
    }
    if (framing_refused(req, &fr))
        return fr;
    int wb = refusal_waits_for_body(s, conn);
    if (nul_in_uri)
        return refuse(req, wb, XF_HE_BAD_REQUEST, 0, "%%00 (a NUL byte) in the request target");
    enum xf_http_err e = xf_routes_match(req, method, url);
    if (e == XF_HE_BAD_SESSION_ID)
        return refuse(req, wb, e, 0, "the session id in %.200s must be 1-128 bytes of "
                      "[A-Za-z0-9._:-]", url);
    /* A browser's CORS preflight on a route: answered 204 on the final call (before auth: it
     * carries no credentials) when http.cors_allow_origin is set. */
    if (e == XF_HE_METHOD_NOT_ALLOWED && !strcmp(method, "OPTIONS") &&
        s->o.cors_allow_origin && s->o.cors_allow_origin[0]) {
        req->preflight = 1;
        req->state = XF_REQ_BODY;
        return MHD_YES;
    }
    if (e != XF_HE_NONE)
        return refuse(req, wb, e, 0,
                      e == XF_HE_NOT_FOUND ? "no route %s %.200s"
                                           : "method %s not allowed on %.200s", method, url);
    /* A draining server answers at once: the drain does not wait for bodies it refuses. */
    if (atomic_load(&s->draining) && !xf_routes_while_draining(req->route))
        return xf_http_reply_error(req, XF_HE_DRAINING, 1, "server is shutting down");
    if (xf_routes_needs_auth(req->route) && !auth_ok(s, conn))
        return refuse(req, wb, XF_HE_UNAUTHORIZED, 0,
                      "missing or wrong API key (Authorization: Bearer ...)");
    if (!xf_routes_has_body(req->route)) {
        /* GET: answer on the final call; a reply queued on the first call makes MHD
         * close the connection instead of keeping it alive. */
        req->state = XF_REQ_BODY;
        return MHD_YES;
    }
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    /* Triton's binary tensor extension: a JSON header plus raw bytes, which a client may
     * label application/octet-stream (routes.c splits it at Inference-Header-Content-Length). */
    int binary = req->api == XF_API_KSERVE && ct &&
                 !strncasecmp(ct, "application/octet-stream", 24) &&
                 MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                             "Inference-Header-Content-Length");
    if (!json_content_type(ct) && !binary)
        return refuse(req, wb, XF_HE_UNSUPPORTED_MEDIA, 0,
                      "Content-Type must be application/json, not %.100s", ct);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        /* Refused before any of it is buffered (dropped as it comes when wb). */
        if (errno == 0 && end != cl && v > s->o.max_body_bytes)
            return refuse(req, wb, XF_HE_BODY_TOO_LARGE, 0, "request body of %llu bytes "
                          "exceeds the limit of %zu bytes (http.max_body_bytes)", v,
                          s->o.max_body_bytes);
        /* The whole body's share of the buffer budget, before reading any of it. Answered
         * at once, body unread: shedding load comes first, and a client that sees a reset
         * instead of this 503 retries all the same. */
        if (errno == 0 && end != cl && v > 0 && budget_take(req, (size_t)v) < 0) {
            req->close = 1;
            return xf_http_reply_error(req, XF_HE_BUFFERS_FULL, 1,
                                       "too many request bytes buffered "
                                       "(http.max_buffered_bytes); retry later");
        }
    }
    req->state = XF_REQ_BODY;
    conn_phase(s, conn, CONN_BODY);
    return MHD_YES;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    xf_server_t *s = cls;
    xf_req_t *req = *req_cls;
    (void)version;
    if (!req || req == (void *)&nul_in_uri_marker) {
        int nul_in_uri = req != NULL;
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->srv = s;
        req->conn = conn;
        req->start_ns = xf_now_ns();
        *req_cls = req;
        atomic_fetch_add(&s->inflight, 1);
        /* Counted before the draining check (both seq_cst): a drain that sees no request
         * being read cannot miss one that then passes the check. */
        req->reading = 1;
        atomic_fetch_add(&s->reading, 1);
        enum MHD_Result ret = first_call(s, req, conn, url, method, nul_in_uri);
        if (req->state != XF_REQ_BODY)
            reading_done(req);
        return ret;
    }

    if (*upload_data_size > 0) {
        if (req->state == XF_REQ_BODY && req->pending_err == XF_HE_NONE) {
            int rc = body_append(req, upload_data, *upload_data_size, s->o.max_body_bytes);
            if (rc == -1) {
                char m[160];
                snprintf(m, sizeof m, "request body exceeds the limit of %zu bytes "
                         "(http.max_body_bytes)", s->o.max_body_bytes);
                set_pending(req, XF_HE_BODY_TOO_LARGE, m);
            } else if (rc == -2) {
                set_pending(req, XF_HE_OUT_OF_MEMORY, "out of memory reading the body");
            } else if (rc == -3) {
                req->close = 1;
                set_pending(req, XF_HE_BUFFERS_FULL, "too many request bytes buffered "
                            "(http.max_buffered_bytes); retry later");
            }
        }
        *upload_data_size = 0;   /* consumed (or discarded after an overflow) */
        return MHD_YES;
    }

    if (req->state == XF_REQ_BODY)
        conn_phase(s, conn, CONN_BUSY);
    enum MHD_Result ret;
    switch (req->state) {
    case XF_REQ_BODY:
        if (req->pending_err != XF_HE_NONE) {
            free(req->body);
            req->body = NULL;
            req->body_len = req->body_cap = 0;
            ret = xf_http_reply_error(req, req->pending_err, 0, "%s", req->pending_msg);
        } else if (req->preflight) {
            ret = queue(req, MHD_HTTP_NO_CONTENT, NULL, NULL, 0, 0);
        } else {
            ret = xf_routes_handle(req);
        }
        /* Queued or answered: the drain no longer waits for this request to be read, and its
         * body is parsed or dropped, so its share of http.max_buffered_bytes comes back now,
         * not when MHD reports completion after the reply (a client that sends its next
         * request on seeing the reply would otherwise race the release). */
        reading_done(req);
        budget_release(req);
        return ret;
    case XF_REQ_SUSPENDED:
        return xf_routes_respond(req);
    case XF_REQ_REPLIED:
        return MHD_YES;
    default:
        return xf_http_reply_error(req, XF_HE_INTERNAL, 0, "unexpected request state");
    }
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    xf_server_t *s = cls;
    xf_req_t *req = *req_cls;
    xf_conn_t *k = conn_of(conn);
    if (k)
        k->completed++;
    conn_phase(s, conn, CONN_HEADER);   /* the next request's header deadline starts now */
    if (!req || req == (void *)&nul_in_uri_marker) {
        /* libmicrohttpd answered this request itself (malformed, header too large). */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
        int st = ci && ci->http_status ? (int)ci->http_status : 400;
        xf_loop_request_done(s, 0, st, 0);
        *req_cls = NULL;
        return;
    }
    *req_cls = NULL;
    int status = req->status ? req->status : 499;   /* 499: client went away, no reply */
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->status == 0)
        status = 499;
    double seconds = (double)(xf_now_ns() - req->start_ns) * 1e-9;
    xf_loop_request_done(s, req->route, status, seconds);
    if (s->o.log_access)
        xf_routes_log_access(req, status, seconds);
    reading_done(req);
    budget_release(req);
    xf_job_free(req->job);
    json_decref(req->root);
    free(req->body);
    free(req);
    atomic_fetch_sub(&s->inflight, 1);
}

/* The raw request target, before MHD unescapes it: mark a %00 (see nul_in_uri_marker). */
static void *uri_log_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    xf_conn_t *k = conn_of(conn);
    if (k) {
        k->uri_seen++;
        k->uri_len = uri ? strlen(uri) : 0;
    }
    if (uri && strstr(uri, "%00"))
        return &nul_in_uri_marker;
    return NULL;
}

static void conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe)
{
    xf_server_t *s = cls;
    struct xf_http *h = s->http_cb;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        xf_conn_t *k = calloc(1, sizeof *k);
        *socket_context = k;
        if (!k)
            return;   /* no deadlines for this one: MHD's idle timeout still applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : MHD_INVALID_SOCKET;
        k->phase = CONN_HEADER;
        k->phase_ns = xf_now_ns();
        pthread_mutex_lock(&h->lock);
        k->next = h->conns;
        if (h->conns)
            h->conns->prev = k;
        h->conns = k;
        pthread_mutex_unlock(&h->lock);
        return;
    }
    xf_conn_t *k = *socket_context;
    if (!k)
        return;
    *socket_context = NULL;
    pthread_mutex_lock(&h->lock);
    if (k->prev)
        k->prev->next = k->next;
    else
        h->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&h->lock);
    /* A request line MHD parsed but no completed callback followed: counted as "other".
     * (A request line MHD refuses before the URI callback — 414, 505 — leaves no trace the
     * application can see in 0.9.75: not counted.) */
    if (k->uri_seen > k->completed)
        xf_loop_request_done(s, 0, k->reaped ? 408 : 400, 0);
    free(k);
}

int xf_http_expire(xf_http_t *h, uint64_t now_ns, int *n_header, int *n_body, int *n_fin)
{
    int nh = 0, nb = 0, nf = 0;
    if (!h)
        return 0;
    const xf_server_opts_t *o = &h->srv->o;
    uint64_t th = (uint64_t)o->header_timeout_ms * 1000000ull;
    uint64_t tb = (uint64_t)o->body_timeout_ms * 1000000ull;
    pthread_mutex_lock(&h->lock);
    for (xf_conn_t *k = h->conns; k; k = k->next) {
        if (k->reaped || k->fd == MHD_INVALID_SOCKET || k->phase == CONN_BUSY)
            continue;
        uint64_t limit = k->phase == CONN_HEADER ? th : tb;
        int expired = limit > 0 && now_ns > k->phase_ns && now_ns - k->phase_ns > limit;
        /* A FIN in the middle of a body: the request can never complete (MHD itself closes
         * on a FIN while reading a header). Peeking leaves any pending bytes to MHD. */
        char c;
        int fin = !expired && k->phase == CONN_BODY &&
                  recv(k->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
        if (!expired && !fin)
            continue;
        /* shutdown(), never close(): MHD owns the descriptor and sees end-of-stream on its
         * thread; k stays listed until MHD reports the close, so the fd cannot be reused
         * while we hold it (the close notification takes h->lock first). */
        shutdown(k->fd, SHUT_RDWR);
        k->reaped = 1;
        if (fin)
            nf++;
        else if (k->phase == CONN_HEADER)
            nh++;
        else
            nb++;
    }
    pthread_mutex_unlock(&h->lock);
    if (n_header)
        *n_header = nh;
    if (n_body)
        *n_body = nb;
    if (n_fin)
        *n_fin = nf;
    return nh + nb + nf;
}

/* MHD's accept policy (MHD threads): once the drain stops serving new connections, each one
 * is closed as soon as it is accepted. */
static enum MHD_Result accept_cb(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct xf_http *h = cls;
    (void)addr;
    (void)addrlen;
    if (!atomic_load(&h->refuse))
        return MHD_YES;
    xf_metric_add(XF_M_connections_closed_total, "draining", NULL, 1);
    return MHD_NO;
}

/* libmicrohttpd's printf-style messages (format(printf, 2, 0): fmt is a format whose
 * arguments come as a va_list, so -Wformat-nonliteral has nothing to say). */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    XF_LOGD("libmicrohttpd: %s", msg);
}

int xf_http_start(struct xf_server *s, xf_http_t **out, char *err, size_t errlen)
{
    struct xf_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->srv = s;
    if (xf_cors_check(s->o.cors_allow_origin, err, errlen) < 0) {
        free(h);
        return XF_EPARAM;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    const char *addr = s->o.listen_addr && s->o.listen_addr[0] ? s->o.listen_addr : "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)s->o.port);
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)s->o.port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "http.listen: '%s' is not an IPv4 or IPv6 address", addr);
        free(h);
        return XF_EPARAM;
    }
    unsigned pool = s->o.http_threads > 0 ? (unsigned)s->o.http_threads : 1;
    struct MHD_OptionItem opts[] = {
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
        { MHD_OPTION_SOCK_ADDR, 0, &ss },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed_cb, s },
        { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)conn_cb, s },
        { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_log_cb, s },
        /* 1: refuse spaces in the request target and HTTP/1.1 without Host. */
        { MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL },
        { MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->o.max_conn_per_ip, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT,
          (intptr_t)(s->o.conn_memory_bytes ? s->o.conn_memory_bytes : 64 * 1024), NULL },
        { MHD_OPTION_CONNECTION_LIMIT, s->o.conn_limit > 0 ? s->o.conn_limit : 1024, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, s->o.conn_timeout_s > 0 ? s->o.conn_timeout_s : 30,
          NULL },
        { MHD_OPTION_THREAD_POOL_SIZE, pool > 1 ? (intptr_t)pool : 0, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    if (pool <= 1)
        opts[10].option = MHD_OPTION_END;
    pthread_mutex_init(&h->lock, NULL);
    s->http_cb = h;   /* conn_cb runs before MHD_start_daemon returns h */
    h->d = MHD_start_daemon(flags, 0, accept_cb, h, access_cb, s, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not permitted)", addr,
                 s->o.port);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : s->o.port;
    *out = h;
    return 0;
}

int xf_http_port(const xf_http_t *h)
{
    return h ? h->port : 0;
}

/* Why not MHD_quiesce_daemon(): in libmicrohttpd 0.9.75 (and up to 1.0.1) it removes the
 * listening socket from each worker's epoll set on the caller's thread, with no lock, while
 * the workers themselves remove it whenever they reach their connection limit or see the
 * quiesce flag it has just set, and put it back when a connection closes. Whichever removal
 * comes second fails with ENOENT, and in the thread-pool branch (http.threads > 1, the
 * default) that is MHD_PANIC: "Failed to remove listen FD from epoll set." (daemon.c:5531),
 * the process aborts and every reply in flight is lost. Closing the returned socket at once,
 * as this function did, adds a second abort (a worker's late removal fails with EBADF,
 * daemon.c:4940). Nor can a socket of our own be stopped under MHD: shutdown() leaves it
 * readable forever (accept() fails with EINVAL, which MHD ignores, so every worker spins until
 * MHD_stop_daemon) and close() breaks the same epoll bookkeeping. The accept policy callback
 * touches nothing of MHD's: its threads keep polling the socket as before, and MHD_stop_daemon
 * (xf_http_stop, from the loop once the replies are out) closes it safely. The cost: for the
 * drain's last moments (≤ 2 s) a new connection is accepted and closed, not refused. */
void xf_http_refuse_connections(xf_http_t *h)
{
    if (h)
        atomic_store(&h->refuse, 1);
}

void xf_http_stop(xf_http_t *h)
{
    if (!h)
        return;
    if (h->d)
        MHD_stop_daemon(h->d);
    h->srv->http_cb = NULL;
    pthread_mutex_destroy(&h->lock);
    free(h);
}
