/* bench_serve: open-loop HTTP load generator for xformd's serving benchmark (issue 4).
 * Poisson arrivals at each offered load, bodies with a fixed mixed-length distribution of
 * 8–256 tokens, latency measured from the scheduled send time (no coordinated omission); one
 * key=value line per (policy, load) with achieved QPS, p50/p90/p99, mean batch size and padding
 * waste (from /v1/stats deltas). Either against a running daemon (--url) or spawning one per
 * batcher policy (--xformd PATH). Single-threaded epoll client over loopback. Not a test. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_util.h"
#include "request_mix.h"

#define MAX_ARGS 32

typedef struct opts {
    char host[64];
    int port;
    const char *xformd;              /* spawn this binary per policy, or NULL */
    const char *xargs[MAX_ARGS];     /* extra daemon arguments */
    int n_xargs;
    char policies[128];
    char loads[256];
    double duration_s, warmup_s;
    const char *route;
    const char *api_key;
    int max_conns;
    uint64_t seed;
    double timeout_s;
    char clients[128];               /* closed-loop client counts, "" = open loop */
    double deadline_ms;              /* the server's deadline for these requests (late = an
                                        admitted request answered after it); 0: not counted */
} opts_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A request for n tokens: n - 2 single-token words ([CLS] and [SEP] make the rest) — these
 * words are whole tokens in BERT vocabularies and in the demo model's. */
static char *make_request(const opts_t *o, int n_tokens, size_t *len)
{
    static const char *const words[] = {"the", "of", "and", "to", "in", "is", "was", "he",
                                        "for", "it", "with", "as", "his", "on"};
    char body[4096];
    size_t bl = (size_t)snprintf(body, sizeof(body), "{\"input\": \"");
    for (int i = 0; i < n_tokens - 2; i++)
        bl += (size_t)snprintf(body + bl, sizeof(body) - bl, "%s%s", i ? " " : "",
                               words[mix_rng() % (sizeof(words) / sizeof(words[0]))]);
    bl += (size_t)snprintf(body + bl, sizeof(body) - bl, "\"}");
    char auth[300] = "";
    if (o->api_key)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", o->api_key);
    char *req = malloc(bl + 512);
    if (!req)
        return NULL;
    *len = (size_t)sprintf(req,
                           "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                           "%sContent-Length: %zu\r\n\r\n%s",
                           o->route, o->host, o->port, auth, bl, body);
    return req;
}

static int connect_to(const opts_t *o, int nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1) {
        close(fd);
        return -EINVAL;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Blocking GET; returns the HTTP status and the malloc'd body in *body (may be NULL). */
static int http_get(const opts_t *o, const char *path, char **body)
{
    if (body)
        *body = NULL;
    int fd = connect_to(o, 0);
    if (fd < 0)
        return fd;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char req[512];
    char auth[300] = "";
    if (o->api_key)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", o->api_key);
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n",
                     path, o->host, auth);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -EIO;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            close(fd);
            return -ENOMEM;
        }
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -EPROTO;
    }
    char *b = strstr(buf, "\r\n\r\n");
    if (body && b) {
        *body = strdup(b + 4);
    }
    free(buf);
    return status;
}

/* Counters from /v1/stats used for batch statistics. */
typedef struct snap {
    double batches, batch_size_sum, pad, tokens;
    char policy[32];
} snap_t;

static double jnum(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(json_object_get(o, a), b);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static int get_snap(const opts_t *o, snap_t *s)
{
    memset(s, 0, sizeof(*s));
    char *body = NULL;
    int st = http_get(o, "/v1/stats", &body);
    if (st != 200 || !body) {
        free(body);
        return -1;
    }
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    if (!j)
        return -1;
    s->batches = jnum(j, "batcher", "batches_total");
    s->pad = jnum(j, "batcher", "padding_waste_tokens_total");
    s->tokens = jnum(j, "batcher", "computed_tokens_total");
    json_t *bs = json_object_get(json_object_get(j, "batcher"), "batch_size");
    json_t *sum = json_object_get(bs, "sum");
    s->batch_size_sum = json_is_number(sum) ? json_number_value(sum) : 0;
    const char *p = json_string_value(json_object_get(json_object_get(j, "batcher"), "policy"));
    snprintf(s->policy, sizeof(s->policy), "%s", p ? p : "?");
    json_decref(j);
    return 0;
}

typedef struct conn {
    int fd;
    int busy;
    int connecting;
    char *req;           /* borrowed from the request table */
    size_t req_len, req_off;
    char buf[65536];     /* a BERT-base embedding as JSON is ~10 KB */
    size_t len;
    int64_t req_idx;
    uint32_t events;     /* the epoll events registered for fd */
} conn_t;

typedef struct run {
    size_t n;            /* requests scheduled */
    uint64_t *sched;     /* scheduled send time */
    char **body;
    size_t *body_len;
    double *lat_s;       /* NAN until answered */
    int *status;
} run_t;

/* Is a complete response in c->buf? Returns its total length and sets *status, else 0. */
static size_t response_done(conn_t *c, int *status)
{
    c->buf[c->len < sizeof(c->buf) ? c->len : sizeof(c->buf) - 1] = '\0';
    char *hend = strstr(c->buf, "\r\n\r\n");
    if (!hend)
        return 0;
    size_t hl = (size_t)(hend - c->buf) + 4;
    long cl = 0;
    for (char *p = c->buf; p < hend;) {
        char *eol = strstr(p, "\r\n");
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            cl = strtol(p + 15, NULL, 10);
        p = eol + 2;
    }
    if (cl < 0)
        cl = 0;
    if (c->len < hl + (size_t)cl)
        return 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", status) != 1)
        *status = 0;
    return hl + (size_t)cl;
}

/* A 429/503 answer's Retry-After in ms (delta-seconds form), or -1 when absent or in the
 * HTTP-date form (then the caller backs off on its own). Call after response_done. */
static long retry_after_ms(const conn_t *c)
{
    const char *hend = strstr(c->buf, "\r\n\r\n");
    for (const char *p = c->buf; hend && p < hend;) {
        const char *eol = strstr(p, "\r\n");
        if (strncasecmp(p, "Retry-After:", 12) == 0) {
            char *end;
            long v = strtol(p + 12, &end, 10);
            while (*end == ' ' || *end == '\t')
                end++;
            return end > p + 12 && end == eol && v >= 0 ? (v > 3600 ? 3600000 : v * 1000) : -1;
        }
        p = eol + 2;
    }
    return -1;
}

/* Closed-loop back-off after a refusal (429/503), so refused clients do not resend at once
 * and turn overload into a retry storm. Retry-After is honoured (capped at RETRY_CAP_MS) plus
 * up to 25% jitter; without it, "full jitter" exponential back-off: uniform in
 * [base/2, base] with base = min(RETRY_CAP_MS, RETRY_BASE_MS << attempt). A request refused
 * RETRY_MAX times is dropped (gave_up) and the client moves on to the next one. */
enum { RETRY_BASE_MS = 25, RETRY_CAP_MS = 2000, RETRY_MAX = 6 };

static uint64_t backoff_ns(long retry_after, int attempt, uint64_t *rng)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    double u = (double)(*rng >> 11) * (1.0 / 9007199254740992.0);   /* [0, 1) */
    double ms;
    if (retry_after >= 0) {
        ms = (double)(retry_after < RETRY_CAP_MS ? retry_after : RETRY_CAP_MS);
        ms += 0.25 * u * (ms > 0 ? ms : RETRY_BASE_MS);
    } else {
        double base = (double)RETRY_BASE_MS * (double)(1u << (attempt < 10 ? attempt : 10));
        if (base > RETRY_CAP_MS)
            base = RETRY_CAP_MS;
        ms = base * (0.5 + 0.5 * u);
    }
    return (uint64_t)(ms * 1e6);
}

static void conn_close(int ep, conn_t *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->busy = 0;
    c->len = 0;
}

/* Register fd for EPOLLOUT only while part of the request is unsent: epoll is level-triggered,
 * so a writable socket waiting for its reply (or an idle one) would return at once from every
 * epoll_wait and the loop would spin, taking a CPU from the server it measures. */
static void conn_watch(int ep, conn_t *c, uint32_t idx)
{
    uint32_t want = EPOLLIN | (c->busy && c->req_off < c->req_len ? EPOLLOUT : 0);
    if (c->fd < 0 || want == c->events)
        return;
    struct epoll_event ev = {.events = want, .data.u32 = idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = want;
}

static int conn_send(conn_t *c)
{
    while (c->req_off < c->req_len) {
        ssize_t w = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -errno;
        c->req_off += (size_t)w;
    }
    return 0;
}

/* Percentile q of the sorted latencies lat[0..nl) in ms (nearest rank). */
#define PCT(q) (nl ? lat[(size_t)((q) * (double)(nl - 1) + 0.5)] * 1e3 : NAN)

/* One offered load: Poisson arrivals at qps for duration, open loop. */
static void run_load(const opts_t *o, const char *policy, double qps)
{
    double total_s = o->warmup_s + o->duration_s;
    size_t cap = (size_t)(qps * total_s * 1.5) + 16;
    run_t r = {0};
    r.sched = calloc(cap, sizeof(*r.sched));
    r.body = calloc(cap, sizeof(*r.body));
    r.body_len = calloc(cap, sizeof(*r.body_len));
    r.lat_s = calloc(cap, sizeof(*r.lat_s));
    r.status = calloc(cap, sizeof(*r.status));
    conn_t *conns = calloc((size_t)o->max_conns, sizeof(*conns));
    if (!r.sched || !r.body || !r.body_len || !r.lat_s || !r.status || !conns) {
        fprintf(stderr, "bench_serve: out of memory\n");
        exit(1);
    }
    double t = 0;
    while (r.n < cap) {
        t += -log(mix_urand()) / qps;
        if (t >= total_s)
            break;
        r.sched[r.n] = (uint64_t)(t * 1e9);
        r.body[r.n] = make_request(o, mix_tokens(), &r.body_len[r.n]);
        r.lat_s[r.n] = NAN;
        r.n++;
    }
    for (int i = 0; i < o->max_conns; i++)
        conns[i].fd = -1;
    snap_t s0, s1;
    int have_stats = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    uint64_t t0 = now_ns(), warm_end = t0 + (uint64_t)(o->warmup_s * 1e9);
    size_t next = 0, done = 0;
    /* Backlog: requests due but without a free connection, in order. */
    size_t backlog_head = 0;
    uint64_t give_up = t0 + (uint64_t)((total_s + o->timeout_s) * 1e9);
    int errors = 0;
    while (done < r.n) {
        uint64_t now = now_ns();
        if (!have_stats && now >= warm_end) {
            have_stats = get_snap(o, &s0) == 0 ? 1 : -1;
        }
        if (now > give_up)
            break;
        while (next < r.n && t0 + r.sched[next] <= now)
            next++;
        /* Start due requests on free (or new) connections. */
        for (int i = 0; i < o->max_conns && backlog_head < next; i++) {
            conn_t *c = &conns[i];
            if (c->busy)
                continue;
            if (c->fd < 0) {
                c->fd = connect_to(o, 1);
                if (c->fd < 0) {
                    c->fd = -1;
                    break;
                }
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                c->events = ev.events;
            }
            c->busy = 1;
            c->req_idx = (int64_t)backlog_head;
            c->req = r.body[backlog_head];
            c->req_len = r.body_len[backlog_head];
            c->req_off = 0;
            c->len = 0;
            backlog_head++;
            if (conn_send(c) < 0) {
                r.status[c->req_idx] = -1;
                done++;
                errors++;
                conn_close(ep, c);
            } else {
                conn_watch(ep, c, (uint32_t)i);
            }
        }
        uint64_t wait_ns = next < r.n ? (t0 + r.sched[next] > now ? t0 + r.sched[next] - now : 0)
                                      : 50000000ull;
        if (backlog_head < next)
            wait_ns = wait_ns < 1000000ull ? wait_ns : 1000000ull;
        struct epoll_event evs[64];
        int ne = epoll_wait(ep, evs, 64, (int)((wait_ns + 999999) / 1000000));
        for (int e = 0; e < ne; e++) {
            conn_t *c = &conns[evs[e].data.u32];
            if (c->fd < 0)
                continue;
            if (!c->busy) {   /* idle and readable: the server closed it */
                conn_close(ep, c);
                continue;
            }
            if (evs[e].events & EPOLLOUT) {
                if (conn_send(c) < 0)
                    goto failed;
                conn_watch(ep, c, evs[e].data.u32);
            }
            if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t rd = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
                if (rd == 0 || (rd < 0 && errno != EAGAIN))
                    goto failed;
                if (rd > 0)
                    c->len += (size_t)rd;
                int st = 0;
                if (response_done(c, &st) > 0) {
                    uint64_t fin = now_ns();
                    r.lat_s[c->req_idx] = (double)(fin - (t0 + r.sched[c->req_idx])) * 1e-9;
                    r.status[c->req_idx] = st;
                    done++;
                    c->busy = 0;
                    c->len = 0;
                    conn_watch(ep, c, evs[e].data.u32);
                } else if (c->len >= sizeof(c->buf) - 1) {
                    goto failed;
                }
            }
            continue;
        failed:
            r.status[c->req_idx] = -1;
            done++;
            errors++;
            conn_close(ep, c);
        }
    }
    uint64_t t_end = now_ns();
    if (have_stats == 1 && get_snap(o, &s1) != 0)
        have_stats = 0;
    /* Measured window: requests scheduled after warm-up. */
    double *lat = malloc(r.n * sizeof(double));
    size_t nl = 0, sent = 0, ok = 0, non2xx = 0;
    for (size_t i = 0; i < r.n; i++) {
        if (r.sched[i] < (uint64_t)(o->warmup_s * 1e9))
            continue;
        sent++;
        if (r.status[i] == 200) {
            ok++;
            lat[nl++] = r.lat_s[i];
        } else if (r.status[i] > 0) {
            non2xx++;
        }
    }
    qsort(lat, nl, sizeof(double), bench_cmp_double);
    double span = (double)(t_end - warm_end) * 1e-9;
    double mean_batch = NAN, pad = NAN, pad_frac = NAN;
    if (have_stats == 1 && s1.batches > s0.batches) {
        mean_batch = (s1.batch_size_sum - s0.batch_size_sum) / (s1.batches - s0.batches);
        pad = s1.pad - s0.pad;
        pad_frac = s1.tokens > s0.tokens ? pad / (s1.tokens - s0.tokens) : NAN;
    }
    printf("policy=%s offered_qps=%.2f achieved_qps=%.2f sent=%zu ok=%zu rejected=%zu "
           "failed=%zu p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f mean_batch=%.2f "
           "padding_waste_tokens=%.0f padding_frac=%.3f\n",
           policy, qps, span > 0 ? (double)ok / span : 0, sent, ok, non2xx,
           sent - ok - non2xx, PCT(0.50), PCT(0.90), PCT(0.99), mean_batch, pad, pad_frac);
    fflush(stdout);
    (void)errors;
    free(lat);
    for (int i = 0; i < o->max_conns; i++)
        conn_close(ep, &conns[i]);
    close(ep);
    for (size_t i = 0; i < r.n; i++)
        free(r.body[i]);
    free(r.sched);
    free(r.body);
    free(r.body_len);
    free(r.lat_s);
    free(r.status);
    free(conns);
}

/* Closed-loop answers by what they mean for overload (--deadline-ms): refused on arrival (429,
 * or a 503 other than deadline_exceeded: buffers full, draining), or admitted — then served on
 * time, dropped on time (503 deadline_exceeded, 504, 408 answered before the deadline) or late
 * (any answer after the deadline, counted from the send). */
typedef struct ovl {
    size_t n429, n503, n504, n408, refused, admitted, served, dropped, late, late200;
    double late_max_ms, ra_max_s;
    double *lat_ref, *lat_drop, *lat_adm;   /* ms: refusals, early drops, every admitted */
    size_t n_ref, n_drop, n_adm, cap;
} ovl_t;

static void ovl_add(ovl_t *v, const conn_t *c, int st, double ms, double deadline_ms)
{
    const char *hend = strstr(c->buf, "\r\n\r\n");
    int deadline_body = hend && strstr(hend, "deadline_exceeded") != NULL;
    long ra = retry_after_ms(c);
    if (ra >= 0 && ra / 1000.0 > v->ra_max_s)
        v->ra_max_s = ra / 1000.0;
    v->n429 += st == 429;
    v->n503 += st == 503;
    v->n504 += st == 504;
    v->n408 += st == 408;
    if (st == 429 || (st == 503 && !deadline_body)) {
        v->refused++;
        if (v->n_ref < v->cap)
            v->lat_ref[v->n_ref++] = ms;
        return;
    }
    if (st != 200 && st != 503 && st != 504 && st != 408)
        return;   /* 4xx validation and the like: neither admitted nor refused for load */
    v->admitted++;
    if (v->n_adm < v->cap)
        v->lat_adm[v->n_adm++] = ms;
    if (ms > deadline_ms) {
        v->late++;
        v->late200 += st == 200;
        if (ms - deadline_ms > v->late_max_ms)
            v->late_max_ms = ms - deadline_ms;
    } else if (st == 200) {
        v->served++;
    } else {
        v->dropped++;
        if (v->n_drop < v->cap)
            v->lat_drop[v->n_drop++] = ms;
    }
}

/* Percentile q of x[0..n) (sorted here), NAN when empty. */
static double pct_of(double *x, size_t n, double q)
{
    if (n == 0)
        return NAN;
    qsort(x, n, sizeof(double), bench_cmp_double);
    return x[(size_t)(q * (double)(n - 1) + 0.5)];
}

/* Closed loop: `clients` connections, each sending its next request as soon as the previous
 * answer arrived (the llama-server comparison of issue 4 uses 16). Latency from send. */
static void run_closed(const opts_t *o, const char *policy, int clients)
{
    enum { POOL = 2048 };
    char **body = calloc(POOL, sizeof(*body));
    size_t *blen = calloc(POOL, sizeof(*blen));
    conn_t *conns = calloc((size_t)clients, sizeof(*conns));
    uint64_t *sent_at = calloc((size_t)clients, sizeof(*sent_at));
    uint64_t *next_at = calloc((size_t)clients, sizeof(*next_at));   /* back-off: not before */
    int *attempt = calloc((size_t)clients, sizeof(*attempt));         /* refusals of this request */
    size_t lcap = 1 << 16, nl = 0, non2xx = 0, failed = 0, sent = 0;
    size_t refused = 0, retried = 0, gave_up = 0;
    uint64_t rng = o->seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    double *lat = malloc(lcap * sizeof(double));
    ovl_t ov = {.cap = lcap};
    ov.lat_ref = malloc(lcap * sizeof(double));
    ov.lat_drop = malloc(lcap * sizeof(double));
    ov.lat_adm = malloc(lcap * sizeof(double));
    if (!body || !blen || !conns || !sent_at || !next_at || !attempt || !lat || !ov.lat_ref ||
        !ov.lat_drop || !ov.lat_adm) {
        fprintf(stderr, "bench_serve: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < POOL; i++) {
        body[i] = make_request(o, mix_tokens(), &blen[i]);
        if (!body[i])
            exit(1);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    uint64_t t0 = now_ns(), warm_end = t0 + (uint64_t)(o->warmup_s * 1e9);
    uint64_t stop = warm_end + (uint64_t)(o->duration_s * 1e9);
    uint64_t give_up = stop + (uint64_t)(o->timeout_s * 1e9);
    snap_t s0, s1;
    int have_stats = 0, active = 0;
    size_t next_body = 0;
    for (int i = 0; i < clients; i++)
        conns[i].fd = -1;
    for (;;) {
        uint64_t now = now_ns();
        if (!have_stats && now >= warm_end)
            have_stats = get_snap(o, &s0) == 0 ? 1 : -1;
        if (now >= give_up)
            break;
        for (int i = 0; i < clients && now < stop; i++) {
            conn_t *c = &conns[i];
            if (c->busy || now < next_at[i])
                continue;
            if (c->fd < 0) {
                c->fd = connect_to(o, 1);
                if (c->fd < 0) {
                    c->fd = -1;
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                c->events = ev.events;
            }
            c->busy = 1;
            if (attempt[i] == 0) {   /* else resend the refused request after its back-off */
                c->req = body[next_body % POOL];
                c->req_len = blen[next_body % POOL];
                next_body++;
            }
            c->req_off = 0;
            c->len = 0;
            sent_at[i] = now;
            active++;
            if (conn_send(c) < 0) {
                failed += now >= warm_end;
                active--;
                conn_close(ep, c);
            } else {
                conn_watch(ep, c, (uint32_t)i);
            }
        }
        if (now >= stop && active == 0)
            break;
        int wait_ms = 50;   /* wake up in time for the earliest back-off to end */
        for (int i = 0; i < clients && now < stop; i++)
            if (!conns[i].busy && next_at[i] > now && (next_at[i] - now) / 1000000 < (uint64_t)wait_ms)
                wait_ms = (int)((next_at[i] - now) / 1000000) + 1;
        struct epoll_event evs[64];
        int ne = epoll_wait(ep, evs, 64, wait_ms);
        for (int e = 0; e < ne; e++) {
            int i = (int)evs[e].data.u32;
            conn_t *c = &conns[i];
            if (c->fd < 0)
                continue;
            if (!c->busy) {   /* idle (backing off): the server closed it; reconnect later */
                conn_close(ep, c);
                continue;
            }
            int bad = 0;
            if ((evs[e].events & EPOLLOUT) && conn_send(c) < 0)
                bad = 1;
            if (!bad)
                conn_watch(ep, c, (uint32_t)i);
            if (!bad && (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                ssize_t rd = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
                if (rd == 0 || (rd < 0 && errno != EAGAIN))
                    bad = 1;
                else if (rd > 0)
                    c->len += (size_t)rd;
                int st = 0;
                if (!bad && response_done(c, &st) > 0) {
                    uint64_t fin = now_ns();
                    int refusal = st == 429 || st == 503;
                    if (sent_at[i] >= warm_end) {
                        sent++;
                        if (o->deadline_ms > 0)
                            ovl_add(&ov, c, st, (double)(fin - sent_at[i]) * 1e-6,
                                    o->deadline_ms);
                        if (st == 200 && nl < lcap)
                            lat[nl++] = (double)(fin - sent_at[i]) * 1e-9;
                        else if (refusal)
                            refused++;
                        else if (st != 200)
                            non2xx++;
                    }
                    if (refusal && attempt[i] + 1 < RETRY_MAX) {
                        next_at[i] = fin + backoff_ns(retry_after_ms(c), attempt[i], &rng);
                        attempt[i]++;
                        retried += sent_at[i] >= warm_end;
                    } else {
                        gave_up += refusal && sent_at[i] >= warm_end;
                        attempt[i] = 0;
                        next_at[i] = 0;
                    }
                    c->busy = 0;
                    c->len = 0;
                    conn_watch(ep, c, (uint32_t)i);   /* idle until the next send */
                    active--;
                } else if (!bad && c->len >= sizeof(c->buf) - 1) {
                    bad = 1;
                }
            }
            if (bad) {
                if (sent_at[i] >= warm_end) {
                    sent++;
                    failed++;
                }
                attempt[i] = 0;
                active--;
                conn_close(ep, c);
            }
        }
    }
    uint64_t t_end = now_ns();
    if (have_stats == 1 && get_snap(o, &s1) != 0)
        have_stats = 0;
    qsort(lat, nl, sizeof(double), bench_cmp_double);
    double span = (double)((t_end < stop ? t_end : stop) - warm_end) * 1e-9;
    double mean_batch = NAN, pad = NAN, pad_frac = NAN;
    if (have_stats == 1 && s1.batches > s0.batches) {
        mean_batch = (s1.batch_size_sum - s0.batch_size_sum) / (s1.batches - s0.batches);
        pad = s1.pad - s0.pad;
        pad_frac = s1.tokens > s0.tokens ? pad / (s1.tokens - s0.tokens) : NAN;
    }
    printf("policy=%s clients=%d achieved_qps=%.2f sent=%zu ok=%zu rejected=%zu failed=%zu "
           "p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f mean_batch=%.2f padding_waste_tokens=%.0f "
           "padding_frac=%.3f refused=%zu retried=%zu gave_up=%zu\n",
           policy, clients, span > 0 ? (double)nl / span : 0, sent, nl, non2xx, failed,
           PCT(0.50), PCT(0.90), PCT(0.99), mean_batch, pad, pad_frac, refused, retried,
           gave_up);
    if (o->deadline_ms > 0)
        printf("overload deadline_ms=%.0f admitted=%zu served=%zu dropped=%zu late=%zu "
               "late_200=%zu late_frac=%.4f late_max_ms=%.0f refused=%zu n429=%zu n503=%zu "
               "n504=%zu n408=%zu refuse_p50_ms=%.1f refuse_max_ms=%.1f drop_p50_ms=%.1f "
               "drop_max_ms=%.1f admitted_p50_ms=%.1f admitted_p99_ms=%.1f "
               "retry_after_max_s=%.0f\n",
               o->deadline_ms, ov.admitted, ov.served, ov.dropped, ov.late, ov.late200,
               ov.admitted ? (double)ov.late / (double)ov.admitted : 0, ov.late_max_ms,
               ov.refused, ov.n429, ov.n503, ov.n504, ov.n408, pct_of(ov.lat_ref, ov.n_ref, 0.5),
               pct_of(ov.lat_ref, ov.n_ref, 1), pct_of(ov.lat_drop, ov.n_drop, 0.5),
               pct_of(ov.lat_drop, ov.n_drop, 1), pct_of(ov.lat_adm, ov.n_adm, 0.5),
               pct_of(ov.lat_adm, ov.n_adm, 0.99), ov.ra_max_s);
    fflush(stdout);
    free(ov.lat_ref);
    free(ov.lat_drop);
    free(ov.lat_adm);
    for (int i = 0; i < clients; i++)
        conn_close(ep, &conns[i]);
    close(ep);
    for (int i = 0; i < POOL; i++)
        free(body[i]);
    free(body);
    free(blen);
    free(conns);
    free(sent_at);
    free(next_at);
    free(attempt);
    free(lat);
}

static pid_t spawn(const opts_t *o, const char *policy)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    const char *argv[MAX_ARGS + 8];
    int n = 0;
    argv[n++] = o->xformd;
    argv[n++] = "--http.port";
    argv[n++] = port;
    argv[n++] = "--batcher.policy";
    argv[n++] = policy;
    for (int i = 0; i < o->n_xargs; i++)
        argv[n++] = o->xargs[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execv(o->xformd, (char *const *)argv);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    /* Ready once the model is loaded and warmed up (BERT-base demo: up to minutes). */
    for (int i = 0; i < 6000; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "bench_serve: %s exited during start-up\n", o->xformd);
            return -1;
        }
        if (http_get(o, "/v2/health/ready", NULL) == 200)
            return pid;
        usleep(100000);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return -1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_serve [--host 127.0.0.1] [--port 8080] [--xformd PATH [--arg A]...]\n"
            "  [--policies none,fifo,dp,tokens] [--loads 2,4,8,16] [--duration 10]\n"
            "  [--warmup 2] [--route /v1/embeddings] [--api-key K] [--conns 256]\n"
            "  [--seed 1] [--timeout 30] [--clients 16,32] [--deadline-ms 10000]\n"
            "  [--lengths 8-32:0.6,33-128:0.3,129-256:0.1]  (token-count classes: lo-hi:p)\n"
            "Open loop (Poisson arrivals at each --loads rate) unless --clients gives closed-loop\n"
            "client counts. Without --xformd the server at host:port is used as is (its policy\n"
            "from /v1/stats, \"external\" when it has none, e.g. llama-server); with it, one\n"
            "daemon per policy is started on --port.\n"
            "Output: one key=value line per run. Closed loop: sent = answers + failures after\n"
            "warm-up, ok = 200s, refused = 429/503 answers, rejected = other non-200s, failed =\n"
            "connection errors; a refused request is resent after its Retry-After (capped at 2 s,\n"
            "+0-25%% jitter) or, without one, a jittered exponential back-off (25 ms doubling, cap\n"
            "2 s); retried = such resends, gave_up = requests dropped after 6 refusals.\n"
            "--deadline-ms D (closed loop; the server's request deadline, request.timeout_ms):\n"
            "a second line \"overload ...\": refused = 429s and 503s other than\n"
            "deadline_exceeded (refused on arrival); admitted = 200/503 deadline_exceeded/504/408;\n"
            "late = admitted answered more than D ms after the send, whatever the status;\n"
            "served = 200 within D; dropped = the other admitted answered within D; the p50/max\n"
            "time to a refusal and to a drop, p50/p99 of every admitted answer, the largest\n"
            "Retry-After.\n");
}

int main(int argc, char **argv)
{
    opts_t o = {.port = 8080, .duration_s = 10, .warmup_s = 2, .route = "/v1/embeddings",
                .max_conns = 256, .seed = 1, .timeout_s = 30};
    snprintf(o.host, sizeof(o.host), "127.0.0.1");
    snprintf(o.policies, sizeof(o.policies), "none,fifo,dp,tokens");
    snprintf(o.loads, sizeof(o.loads), "2,4,8,16");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v && strcmp(a, "--help") != 0) {
            usage();
            return 2;
        }
        if (strcmp(a, "--host") == 0)
            snprintf(o.host, sizeof(o.host), "%s", v);
        else if (strcmp(a, "--port") == 0)
            o.port = atoi(v);
        else if (strcmp(a, "--xformd") == 0)
            o.xformd = v;
        else if (strcmp(a, "--arg") == 0 && o.n_xargs < MAX_ARGS)
            o.xargs[o.n_xargs++] = v;
        else if (strcmp(a, "--policies") == 0)
            snprintf(o.policies, sizeof(o.policies), "%s", v);
        else if (strcmp(a, "--loads") == 0)
            snprintf(o.loads, sizeof(o.loads), "%s", v);
        else if (strcmp(a, "--duration") == 0)
            o.duration_s = atof(v);
        else if (strcmp(a, "--warmup") == 0)
            o.warmup_s = atof(v);
        else if (strcmp(a, "--route") == 0)
            o.route = v;
        else if (strcmp(a, "--api-key") == 0)
            o.api_key = v;
        else if (strcmp(a, "--conns") == 0)
            o.max_conns = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            o.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--timeout") == 0)
            o.timeout_s = atof(v);
        else if (strcmp(a, "--deadline-ms") == 0)
            o.deadline_ms = atof(v);
        else if (strcmp(a, "--clients") == 0)
            snprintf(o.clients, sizeof(o.clients), "%s", v);
        else if (strcmp(a, "--lengths") == 0) {
            if (mix_set_lengths(v) != 0) {
                fprintf(stderr, "bench_serve: --lengths %s: want lo-hi:p,... with 3 <= lo <= hi "
                                "<= 510 and the p summing to 1\n", v);
                return 2;
            }
        }
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (o.port < 1 || o.port > 65535 || o.duration_s <= 0 || o.warmup_s < 0 ||
        o.max_conns < 1) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char cpu[128] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(cpu, sizeof(cpu), "%s", c + 2);
                    cpu[strcspn(cpu, "\n")] = '\0';
                }
                break;
            }
        fclose(f);
    }
    printf("# bench_serve version=%s cpu=\"%s\" ncpu=%ld route=%s duration_s=%.0f warmup_s=%.0f "
           "lengths=%s seed=%llu\n",
           PACKAGE_VERSION, cpu, sysconf(_SC_NPROCESSORS_ONLN), o.route, o.duration_s,
           o.warmup_s, mix_lengths(), (unsigned long long)o.seed);
    char pol[128];
    snprintf(pol, sizeof(pol), "%s", o.policies);
    char *save = NULL;
    snap_t ext;   /* outlives the loop body: name may point into it */
    for (char *p = strtok_r(pol, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        pid_t pid = 0;
        const char *name = p;
        if (o.xformd) {
            pid = spawn(&o, p);
            if (pid < 0) {
                fprintf(stderr, "bench_serve: could not start %s for policy %s\n", o.xformd, p);
                return 1;
            }
        } else {
            if (get_snap(&o, &ext) == 0)
                name = ext.policy;   /* the running daemon's, whatever was asked */
            else
                name = "external";   /* another server: no batch statistics */
        }
        if (o.clients[0]) {
            char cl[128];
            snprintf(cl, sizeof(cl), "%s", o.clients);
            char *s3 = NULL;
            for (char *c = strtok_r(cl, ",", &s3); c; c = strtok_r(NULL, ",", &s3)) {
                if (atoi(c) < 1)
                    continue;
                mix_seed(o.seed);
                run_closed(&o, name, atoi(c));
            }
        }
        char loads[256];
        snprintf(loads, sizeof(loads), "%s", o.clients[0] ? "" : o.loads);
        char *s2 = NULL;
        for (char *l = strtok_r(loads, ",", &s2); l; l = strtok_r(NULL, ",", &s2)) {
            double qps = atof(l);
            if (qps <= 0)
                continue;
            mix_seed(o.seed);   /* the same request sequence for every policy */
            run_load(&o, name, qps);
        }
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        if (!o.xformd)
            break;
    }
    return 0;
}
