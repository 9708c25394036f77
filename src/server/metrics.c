/* Metrics storage and output, generated from metrics.def: relaxed-atomic series keyed by label
 * value pointers (claimed lock-free on first use), Prometheus text 0.0.4 and the /v1/stats JSON.
 * Updates from any thread; the QPS ring is advanced by the loop thread; rendering from any
 * thread. Only model_info's copied strings sit behind a mutex (leaf, rank 8). */
#include "config.h"

#include "server/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum mkind { MK_COUNTER, MK_GAUGE, MK_HISTOGRAM };
enum bset { B_NONE, B_LATENCY, B_BATCH, B_TOKENS, B_COUNT };

typedef struct mdesc {
    const char *name, *labels, *help, *section;
    enum mkind kind;
    enum bset buckets;
} mdesc_t;

static const mdesc_t mdesc[XF_M_COUNT] = {
#define XF_COUNTER(sec, n, l, h) {#n, l, h, #sec, MK_COUNTER, B_NONE},
#define XF_GAUGE(sec, n, l, h) {#n, l, h, #sec, MK_GAUGE, B_NONE},
#define XF_HISTOGRAM(sec, n, l, b, h) {#n, l, h, #sec, MK_HISTOGRAM, B_##b},
#include "server/metrics.def"
#undef XF_COUNTER
#undef XF_GAUGE
#undef XF_HISTOGRAM
};

/* Series per metric: counters/gauges have closed label sets of at most a few hundred
 * combinations (routes × statuses); histograms are labelled by stage only. */
#define XF_SERIES_MAX 512
#define XF_HSERIES_MAX 8
#define XF_NB_MAX 96   /* finite bucket bounds per set, +Inf is implicit */

typedef struct series {
    _Atomic int state;             /* 0 free, 1 being claimed, 2 ready (labels readable) */
    const char *l[2];
    _Atomic int64_t v;             /* counter/gauge value, histogram count */
    _Atomic uint64_t sum_bits;     /* histogram sum (double bits, CAS-added) */
} series_t;

static series_t series[XF_M_COUNT][XF_SERIES_MAX];
static _Atomic uint64_t hbuckets[XF_M_COUNT][XF_HSERIES_MAX][XF_NB_MAX + 1];
static _Atomic uint64_t dropped_updates;

static double bounds[B_COUNT][XF_NB_MAX];
#define XF_INT_FIRST_BOUND 0.999
static int n_bounds[B_COUNT];
static pthread_once_t bounds_once = PTHREAD_ONCE_INIT;

/* Log-spaced with 4 buckets per doubling (STYLE §8): latency 100 µs · 2^(k/4) up to ~100 s;
 * batch sizes and token counts as integers 2^(k/4) rounded up, duplicates dropped. */
static void bounds_init(void)
{
    for (int k = 0; k < XF_NB_MAX; k++) {
        double v = 1e-4 * pow(2.0, k / 4.0);
        bounds[B_LATENCY][k] = v;
        n_bounds[B_LATENCY] = k + 1;
        if (v > 100)
            break;
    }
    const double top[B_COUNT] = {0, 0, 4096, 1048576};
    for (int b = B_BATCH; b <= B_TOKENS; b++) {
        /* Counts are integers ≥ 1. A first, always empty, bucket just below 1 gives the le="1"
         * bucket a lower edge next to it: Prometheus' histogram_quantile takes 0 as the lower
         * edge of the first bucket, which made the median of all-ones 0.5 (now 0.9995). */
        int n = 0;
        bounds[b][n++] = XF_INT_FIRST_BOUND;
        for (int k = 0; n < XF_NB_MAX; k++) {
            double v = ceil(pow(2.0, k / 4.0) - 1e-9);
            if (n > 0 && v <= bounds[b][n - 1])
                continue;
            bounds[b][n++] = v;
            if (v >= top[b])
                break;
        }
        n_bounds[b] = n;
    }
}

static const char *model_info_l[4];   /* model, arch, variant, quantize */
static char model_info_buf[4][128];
/* Protects model_info_l/model_info_buf only (series are claimed lock-free); rank 8, leaf. */
static pthread_mutex_t info_lock = PTHREAD_MUTEX_INITIALIZER;

static _Atomic uint64_t cost_bits[4];
static _Atomic uint64_t cost_n_fit, cost_n_obs;

/* QPS ring: per-second completed-request counts, written by xf_metrics_tick (loop thread). */
#define XF_QPS_RING 60
static _Atomic uint64_t qps_ring[XF_QPS_RING];
static _Atomic uint64_t qps_filled;        /* seconds recorded, saturating at the ring size */
static _Atomic uint64_t qps_head;          /* index of the newest slot */
static uint64_t qps_last_sec, qps_last_total;
static bool qps_started;

static double start_unix_s;
static uint64_t start_mono_ns;
static const xf_conf_t *stats_conf;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void xf_metrics_init(const xf_conf_t *cfg)
{
    pthread_once(&bounds_once, bounds_init);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    start_unix_s = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    start_mono_ns = mono_ns();
    stats_conf = cfg;
}

void xf_metrics_reset(void)
{
    pthread_once(&bounds_once, bounds_init);
    memset(series, 0, sizeof(series));
    memset(hbuckets, 0, sizeof(hbuckets));
    atomic_store(&dropped_updates, 0);
    memset(qps_ring, 0, sizeof(qps_ring));
    atomic_store(&qps_filled, 0);
    atomic_store(&qps_head, 0);
    qps_started = false;
    for (int k = 0; k < 4; k++)
        atomic_store(&cost_bits[k], 0);
    atomic_store(&cost_n_fit, 0);
    atomic_store(&cost_n_obs, 0);
    pthread_mutex_lock(&info_lock);
    for (int k = 0; k < 4; k++)
        model_info_l[k] = NULL;
    pthread_mutex_unlock(&info_lock);
}

static int nlabels(enum xf_metric m)
{
    const char *l = mdesc[m].labels;
    if (!l[0])
        return 0;
    return strchr(l, ',') ? 2 : 1;
}

/* Label name k of metric m into buf. */
static void label_name(enum xf_metric m, int k, char *buf, size_t len)
{
    const char *l = mdesc[m].labels, *comma = strchr(l, ',');
    if (k == 0)
        snprintf(buf, len, "%.*s", (int)(comma ? (size_t)(comma - l) : strlen(l)), l);
    else
        snprintf(buf, len, "%s", comma ? comma + 1 : "");
}

static bool lbl_eq(const char *a, const char *b)
{
    if (!a)
        a = "";
    if (!b)
        b = "";
    return a == b || strcmp(a, b) == 0;
}

/* The series of m for (l1, l2), claimed on first use; NULL when the table is full. */
static series_t *find_series(enum xf_metric m, const char *l1, const char *l2, bool create)
{
    if ((unsigned)m >= XF_M_COUNT)
        return NULL;
    int nl = nlabels(m);
    if (nl < 2)
        l2 = NULL;
    if (nl < 1)
        l1 = NULL;
    int cap = mdesc[m].kind == MK_HISTOGRAM ? XF_HSERIES_MAX : XF_SERIES_MAX;
    for (int i = 0; i < cap; i++) {
        series_t *s = &series[m][i];
        int st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == 0) {
            if (!create)
                return NULL;
            int expect = 0;
            if (atomic_compare_exchange_strong_explicit(&s->state, &expect, 1,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire)) {
                s->l[0] = l1;
                s->l[1] = l2;
                atomic_store_explicit(&s->state, 2, memory_order_release);
                return s;
            }
            st = expect;
        }
        /* Another thread is writing this slot's labels: they are two stores away. */
        while (st == 1)
            st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (lbl_eq(s->l[0], l1) && lbl_eq(s->l[1], l2))
            return s;
    }
    if (create)
        atomic_fetch_add_explicit(&dropped_updates, 1, memory_order_relaxed);
    return NULL;
}

void xf_metric_add(enum xf_metric m, const char *l1, const char *l2, uint64_t n)
{
    series_t *s = find_series(m, l1, l2, true);
    if (s)
        atomic_fetch_add_explicit(&s->v, (int64_t)n, memory_order_relaxed);
}

void xf_metric_set(enum xf_metric m, const char *l1, const char *l2, int64_t v)
{
    series_t *s = find_series(m, l1, l2, true);
    if (s)
        atomic_store_explicit(&s->v, v, memory_order_relaxed);
}

void xf_metric_gauge_add(enum xf_metric m, const char *l1, const char *l2, int64_t delta)
{
    series_t *s = find_series(m, l1, l2, true);
    if (s)
        atomic_fetch_add_explicit(&s->v, delta, memory_order_relaxed);
}

static double bits_d(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static uint64_t d_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

void xf_metric_observe(enum xf_metric m, const char *l1, const char *l2, double v)
{
    if ((unsigned)m >= XF_M_COUNT || mdesc[m].kind != MK_HISTOGRAM || !isfinite(v))
        return;
    pthread_once(&bounds_once, bounds_init);
    series_t *s = find_series(m, l1, l2, true);
    if (!s)
        return;
    int idx = (int)(s - series[m]);
    enum bset b = mdesc[m].buckets;
    int nb = n_bounds[b], lo = 0, hi = nb;   /* first bound ≥ v, nb for +Inf */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bounds[b][mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&hbuckets[m][idx][lo], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&s->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&s->sum_bits, &old, d_bits(bits_d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&s->v, 1, memory_order_relaxed);
}

int64_t xf_metric_value(enum xf_metric m, const char *l1, const char *l2)
{
    series_t *s = find_series(m, l1, l2, false);
    return s ? atomic_load_explicit(&s->v, memory_order_relaxed) : 0;
}

int64_t xf_metric_sum(enum xf_metric m)
{
    if ((unsigned)m >= XF_M_COUNT)
        return 0;
    int64_t t = 0;
    for (int i = 0; i < XF_SERIES_MAX; i++)
        if (atomic_load_explicit(&series[m][i].state, memory_order_acquire) == 2)
            t += atomic_load_explicit(&series[m][i].v, memory_order_relaxed);
    return t;
}

double xf_metric_hist_sum(enum xf_metric m, const char *l1, const char *l2)
{
    series_t *s = find_series(m, l1, l2, false);
    return s ? bits_d(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)) : 0;
}

/* Quantile from a bucket snapshot (counts per bucket, not cumulative). Integer-valued sets
 * (integral: batch sizes, token counts, all ≥ 1) interpolate between the smallest and the
 * largest integer a bucket can hold — the bucket (8, 10] holds 9 and 10 — so that no
 * quantile falls below the smallest possible value (all-ones batches: median 1, not 0.5). */
static double quantile_of(const double *bd, int nb, const uint64_t *cnt, double q,
                          bool integral)
{
    uint64_t total = 0;
    for (int i = 0; i <= nb; i++)
        total += cnt[i];
    if (total == 0 || !(q >= 0 && q <= 1))
        return NAN;
    double rank = q * (double)total;
    uint64_t cum = 0;
    for (int i = 0; i <= nb; i++) {
        if (cnt[i] == 0)
            continue;
        if ((double)(cum + cnt[i]) >= rank) {
            if (i == nb)   /* +Inf bucket: the highest finite bound, as histogram_quantile */
                return bd[nb - 1];
            double lo = i > 0 ? bd[i - 1] : 0, hi = bd[i];
            double frac = (rank - (double)cum) / (double)cnt[i];
            if (frac < 0)
                frac = 0;
            if (integral) {
                lo = floor(lo) + 1;
                if (lo > hi)
                    lo = hi;
            }
            return lo + (hi - lo) * frac;
        }
        cum += cnt[i];
    }
    return bd[nb - 1];
}

static int snapshot_buckets(enum xf_metric m, const series_t *s, uint64_t *cnt)
{
    int idx = (int)(s - series[m]);
    int nb = n_bounds[mdesc[m].buckets];
    for (int i = 0; i <= nb; i++)
        cnt[i] = atomic_load_explicit(&hbuckets[m][idx][i], memory_order_relaxed);
    return nb;
}

double xf_metric_quantile(enum xf_metric m, const char *l1, const char *l2, double q)
{
    if ((unsigned)m >= XF_M_COUNT || mdesc[m].kind != MK_HISTOGRAM)
        return NAN;
    pthread_once(&bounds_once, bounds_init);
    series_t *s = find_series(m, l1, l2, false);
    if (!s)
        return NAN;
    uint64_t cnt[XF_NB_MAX + 1];
    int nb = snapshot_buckets(m, s, cnt);
    return quantile_of(bounds[mdesc[m].buckets], nb, cnt, q, mdesc[m].buckets != B_LATENCY);
}

/* The longest prefix of s's first n bytes (s holds more) that ends on a UTF-8 character
 * boundary: n less the lead and continuation bytes of a character that byte n is inside. */
static size_t utf8_cut(const char *s, size_t n)
{
    size_t k = n;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80 && n - k < 3)
        k--;
    return ((unsigned char)s[k] & 0xc0) == 0x80 ? n : k;
}

const char *xf_metrics_status_label(int status)
{
    /* 499 (nginx's "client closed request"): the client went away before the reply. */
    /* 414, 431 and 505 only come from libmicrohttpd's own replies (request line or header
     * too large, unsupported HTTP version). */
    /* 422 and 424: TEI's routes (Validation, and Backend for a head the model lacks). */
    static const int codes[] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 411, 413,
                                414, 415, 422, 424, 429, 431, 499, 500, 501, 503, 504, 505};
    static const char *const names[] = {"200", "201", "204", "400", "401", "403", "404",
                                        "405", "408", "409", "411", "413", "414", "415",
                                        "422", "424", "429", "431", "499", "500", "501",
                                        "503", "504", "505"};
    _Static_assert(sizeof(codes) / sizeof(codes[0]) == sizeof(names) / sizeof(names[0]),
                   "status tables differ");
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i] == status)
            return names[i];
    return "other";
}

void xf_metrics_set_model_info(const char *model, const char *arch, const char *variant,
                               const char *quantize)
{
    const char *v[4] = {model, arch, variant, quantize && *quantize ? quantize : "none"};
    pthread_mutex_lock(&info_lock);
    for (int k = 0; k < 4; k++) {
        const char *x = v[k] ? v[k] : "";
        size_t n = strlen(x);
        if (n >= sizeof(model_info_buf[k]))   /* cut on a character boundary (see esc) */
            n = utf8_cut(x, sizeof(model_info_buf[k]) - 1);
        memcpy(model_info_buf[k], x, n);
        model_info_buf[k][n] = '\0';
        model_info_l[k] = model_info_buf[k];
    }
    pthread_mutex_unlock(&info_lock);
}

void xf_metrics_set_cost(const double c[4], uint64_t n_fit, uint64_t n_obs)
{
    for (int k = 0; k < 4; k++)
        atomic_store_explicit(&cost_bits[k], d_bits(c[k]), memory_order_relaxed);
    atomic_store_explicit(&cost_n_fit, n_fit, memory_order_relaxed);
    atomic_store_explicit(&cost_n_obs, n_obs, memory_order_relaxed);
}

void xf_metrics_tick(uint64_t now_ns)
{
    uint64_t sec = now_ns / 1000000000u;
    uint64_t total = (uint64_t)xf_metric_value(XF_M_request_duration_seconds, "total", NULL);
    if (!qps_started) {
        qps_started = true;
        qps_last_sec = sec;
        qps_last_total = total;
        return;
    }
    if (sec <= qps_last_sec)
        return;
    uint64_t gap = sec - qps_last_sec;
    uint64_t head = atomic_load_explicit(&qps_head, memory_order_relaxed);
    uint64_t filled = atomic_load_explicit(&qps_filled, memory_order_relaxed);
    /* The whole delta goes to the newest second; seconds the loop missed count zero. */
    for (uint64_t g = 0; g < gap && g < XF_QPS_RING; g++) {
        head = (head + 1) % XF_QPS_RING;
        uint64_t v = g + 1 == gap || g + 1 == XF_QPS_RING ? total - qps_last_total : 0;
        atomic_store_explicit(&qps_ring[head], v, memory_order_relaxed);
        if (filled < XF_QPS_RING)
            filled++;
    }
    atomic_store_explicit(&qps_head, head, memory_order_relaxed);
    atomic_store_explicit(&qps_filled, filled, memory_order_relaxed);
    qps_last_sec = sec;
    qps_last_total = total;
}

double xf_metrics_qps(unsigned window_s)
{
    if (window_s < 1)
        window_s = 1;
    if (window_s > XF_QPS_RING)
        window_s = XF_QPS_RING;
    uint64_t filled = atomic_load_explicit(&qps_filled, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&qps_head, memory_order_relaxed);
    uint64_t w = window_s < filled ? window_s : filled;
    if (w == 0)
        return 0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < w; i++)
        sum += atomic_load_explicit(&qps_ring[(head + XF_QPS_RING - i) % XF_QPS_RING],
                                    memory_order_relaxed);
    return (double)sum / (double)w;
}

/* ---- Prometheus text ------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int err;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) XF_PRINTF(2, 3);
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    if (b->err)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = -EIO;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n + 1;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->err = -ENOMEM;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* Label value with Prometheus escapes (\\, \", \n), truncated to keep lines sane; a cut never
 * splits a UTF-8 character (the text format is UTF-8, and scrapers refuse a broken one). */
static void esc(char *dst, size_t len, const char *s)
{
    size_t o = 0;
    const char *s0 = s;
    for (; s && *s && o + 3 < len; s++) {
        if (*s == '\\' || *s == '"') {
            dst[o++] = '\\';
            dst[o++] = *s;
        } else if (*s == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *s;
        }
    }
    if (s && *s)   /* cut: drop a character's leading bytes (none of them is escaped) */
        o -= (size_t)(s - s0) - utf8_cut(s0, (size_t)(s - s0));
    dst[o] = '\0';
}

/* A bucket bound as an le label: the fewest digits (6 at least) that read back as exactly the
 * bound, as Prometheus' own clients write floats ("%.6g" alone wrote 1048576 as 1.04858e+06). */
static void fmt_bound(char *buf, size_t len, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* "{route=\"/x\",status=\"200\"" without the closing brace, or "" for no labels. */
static void fmt_labels(enum xf_metric m, const series_t *s, char *buf, size_t len, bool open)
{
    int nl = nlabels(m);
    size_t o = 0;
    buf[0] = '\0';
    for (int k = 0; k < nl; k++) {
        char name[32], val[200];
        label_name(m, k, name, sizeof(name));
        esc(val, sizeof(val), s->l[k]);
        int n = snprintf(buf + o, len - o, "%s%s=\"%s\"", k == 0 ? "{" : ",", name, val);
        if (n < 0 || (size_t)n >= len - o)
            break;
        o += (size_t)n;
    }
    if (!open && o > 0 && o + 1 < len) {
        buf[o++] = '}';
        buf[o] = '\0';
    }
}

static void render_metric(sbuf_t *b, enum xf_metric m)
{
    const mdesc_t *d = &mdesc[m];
    static const char *const tname[] = {"counter", "gauge", "histogram"};
    sb_printf(b, "# HELP xformd_%s %s.\n# TYPE xformd_%s %s\n", d->name, d->help, d->name,
              tname[d->kind]);
    int cap = d->kind == MK_HISTOGRAM ? XF_HSERIES_MAX : XF_SERIES_MAX;
    bool any = false;
    for (int i = 0; i < cap; i++) {
        const series_t *s = &series[m][i];
        if (atomic_load_explicit(&s->state, memory_order_acquire) != 2)
            continue;
        any = true;
        char lb[512];
        if (d->kind != MK_HISTOGRAM) {
            fmt_labels(m, s, lb, sizeof(lb), false);
            sb_printf(b, "xformd_%s%s %" PRId64 "\n", d->name, lb,
                      atomic_load_explicit(&s->v, memory_order_relaxed));
            continue;
        }
        fmt_labels(m, s, lb, sizeof(lb), true);
        uint64_t cnt[XF_NB_MAX + 1], cum = 0;
        int nb = snapshot_buckets(m, s, cnt);
        const double *bd = bounds[d->buckets];
        for (int k = 0; k <= nb; k++) {
            cum += cnt[k];
            char le[32];
            if (k == nb)
                snprintf(le, sizeof(le), "+Inf");
            else
                fmt_bound(le, sizeof(le), bd[k]);
            sb_printf(b, "xformd_%s_bucket%s%sle=\"%s\"} %" PRIu64 "\n", d->name, lb,
                      lb[0] ? "," : "{", le, cum);
        }
        const char *close = lb[0] ? "}" : "";
        /* _count is the bucket total, so the rendering is self-consistent under updates. */
        sb_printf(b, "xformd_%s_sum%s%s %.9g\n", d->name, lb, close,
                  bits_d(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)));
        sb_printf(b, "xformd_%s_count%s%s %" PRIu64 "\n", d->name, lb, close, cum);
    }
    if (!any && d->labels[0] == '\0') {
        /* An unlabelled metric exists from the start: show its zero. */
        if (d->kind != MK_HISTOGRAM) {
            sb_printf(b, "xformd_%s 0\n", d->name);
        } else {
            sb_printf(b, "xformd_%s_bucket{le=\"+Inf\"} 0\nxformd_%s_sum 0\n"
                         "xformd_%s_count 0\n", d->name, d->name, d->name);
        }
    }
}

static double uptime_s(void)
{
    return start_mono_ns ? (double)(mono_ns() - start_mono_ns) * 1e-9 : 0;
}

static double frac(uint64_t part, uint64_t whole)
{
    return whole ? (double)part / (double)whole : 0.0;
}

/* The engine's pruning counts (hdp attention): blocks, pruned blocks, heads, pruned heads,
 * process-wide since start, as the workers last saw them (xf_metrics_set_prune). */
static _Atomic uint64_t prune_v[4];

void xf_metrics_set_prune(uint64_t blocks, uint64_t blocks_pruned, uint64_t heads,
                          uint64_t heads_pruned)
{
    const uint64_t v[4] = { blocks, blocks_pruned, heads, heads_pruned };
    for (int k = 0; k < 4; k++) {   /* raise only: workers may report out of order */
        uint64_t cur = atomic_load_explicit(&prune_v[k], memory_order_relaxed);
        while (v[k] > cur &&
               !atomic_compare_exchange_weak_explicit(&prune_v[k], &cur, v[k],
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
            ;
    }
}

typedef struct prune_stats {
    uint64_t blocks, blocks_pruned, heads, heads_pruned;
} prune_stats;

static void prune_get(prune_stats *st)
{
    st->blocks = atomic_load_explicit(&prune_v[0], memory_order_relaxed);
    st->blocks_pruned = atomic_load_explicit(&prune_v[1], memory_order_relaxed);
    st->heads = atomic_load_explicit(&prune_v[2], memory_order_relaxed);
    st->heads_pruned = atomic_load_explicit(&prune_v[3], memory_order_relaxed);
}

static void hdp_render(sbuf_t *b)
{
    prune_stats st;
    prune_get(&st);
    uint64_t bp = st.blocks_pruned < st.blocks ? st.blocks_pruned : st.blocks;
    uint64_t hp = st.heads_pruned < st.heads ? st.heads_pruned : st.heads;
    sb_printf(b, "# HELP xformd_attention_hdp_blocks_total 2x2 attention score blocks decided "
                 "by the hdp variant (every head), kept or pruned by the block threshold.\n"
                 "# TYPE xformd_attention_hdp_blocks_total counter\n"
                 "xformd_attention_hdp_blocks_total{state=\"kept\"} %" PRIu64 "\n"
                 "xformd_attention_hdp_blocks_total{state=\"pruned\"} %" PRIu64 "\n",
              st.blocks - bp, bp);
    sb_printf(b, "# HELP xformd_attention_hdp_heads_total (sequence, layer, head) triples of the "
                 "hdp variant, kept or pruned by the head threshold.\n"
                 "# TYPE xformd_attention_hdp_heads_total counter\n"
                 "xformd_attention_hdp_heads_total{state=\"kept\"} %" PRIu64 "\n"
                 "xformd_attention_hdp_heads_total{state=\"pruned\"} %" PRIu64 "\n",
              st.heads - hp, hp);
    sb_printf(b, "# HELP xformd_attention_hdp_block_sparsity Fraction of hdp blocks pruned "
                 "since start.\n# TYPE xformd_attention_hdp_block_sparsity gauge\n"
                 "xformd_attention_hdp_block_sparsity %.6f\n"
                 "# HELP xformd_attention_hdp_head_sparsity Fraction of hdp heads pruned since "
                 "start.\n# TYPE xformd_attention_hdp_head_sparsity gauge\n"
                 "xformd_attention_hdp_head_sparsity %.6f\n",
              frac(bp, st.blocks), frac(hp, st.heads));
}

static json_t *hdp_json(void)
{
    prune_stats st;
    prune_get(&st);
    return json_pack("{s:I, s:I, s:f, s:I, s:I, s:f}", "blocks", (json_int_t)st.blocks,
                     "blocks_pruned", (json_int_t)st.blocks_pruned, "block_sparsity",
                     frac(st.blocks_pruned, st.blocks), "heads", (json_int_t)st.heads,
                     "heads_pruned", (json_int_t)st.heads_pruned, "head_sparsity",
                     frac(st.heads_pruned, st.heads));
}

int xf_metrics_render(char **out, size_t *len)
{
    pthread_once(&bounds_once, bounds_init);
    sbuf_t b = {.cap = 16384};
    b.p = malloc(b.cap);
    if (!b.p)
        return -ENOMEM;
    b.p[0] = '\0';
    for (int m = 0; m < XF_M_COUNT; m++)
        render_metric(&b, (enum xf_metric)m);

    char v[4][260];
    pthread_mutex_lock(&info_lock);
    bool have_info = model_info_l[0] != NULL;
    for (int k = 0; k < 4 && have_info; k++)
        esc(v[k], sizeof(v[k]), model_info_l[k]);
    pthread_mutex_unlock(&info_lock);
    if (have_info)
        sb_printf(&b, "# HELP xformd_model_info The served model (labels from config and the "
                      "loaded model).\n# TYPE xformd_model_info gauge\n"
                      "xformd_model_info{model=\"%s\",arch=\"%s\",variant=\"%s\","
                      "quantize=\"%s\"} 1\n",
                  v[0], v[1], v[2], v[3]);
    static const char *const term[4] = {"c0", "c1", "c2", "c3"};
    sb_printf(&b, "# HELP xformd_cost_model_coefficient Batch cost model t = c0 + c1*tokens + "
                  "c2*sum(n^2) + c3*padding_tokens, seconds per unit.\n"
                  "# TYPE xformd_cost_model_coefficient gauge\n");
    for (int k = 0; k < 4; k++)
        sb_printf(&b, "xformd_cost_model_coefficient{term=\"%s\"} %.9g\n", term[k],
                  bits_d(atomic_load_explicit(&cost_bits[k], memory_order_relaxed)));
    hdp_render(&b);
    sb_printf(&b, "# HELP xformd_process_start_time_seconds Start time of the process since "
                  "the Unix epoch.\n# TYPE xformd_process_start_time_seconds gauge\n"
                  "xformd_process_start_time_seconds %.3f\n", start_unix_s);
    sb_printf(&b, "# HELP xformd_uptime_seconds Seconds since the process started.\n"
                  "# TYPE xformd_uptime_seconds gauge\nxformd_uptime_seconds %.3f\n",
              uptime_s());
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- /v1/stats -------------------------------------------------------------------------- */

static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *hist_json(enum xf_metric m, const series_t *s)
{
    uint64_t cnt[XF_NB_MAX + 1], total = 0;
    int nb = snapshot_buckets(m, s, cnt);
    for (int i = 0; i <= nb; i++)
        total += cnt[i];
    const double *bd = bounds[mdesc[m].buckets];
    bool integral = mdesc[m].buckets != B_LATENCY;
    double sum = bits_d(atomic_load_explicit(&s->sum_bits, memory_order_relaxed));
    return json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "count", (json_int_t)total, "sum",
                     jnum(sum), "mean", total ? jnum(sum / (double)total) : json_null(), "p50",
                     jnum(quantile_of(bd, nb, cnt, 0.50, integral)), "p90",
                     jnum(quantile_of(bd, nb, cnt, 0.90, integral)), "p99",
                     jnum(quantile_of(bd, nb, cnt, 0.99, integral)));
}

/* One metric's JSON value: a number, a histogram object, or objects keyed by label values. */
static json_t *metric_json(enum xf_metric m)
{
    const mdesc_t *d = &mdesc[m];
    int nl = nlabels(m);
    int cap = d->kind == MK_HISTOGRAM ? XF_HSERIES_MAX : XF_SERIES_MAX;
    if (nl == 0) {
        const series_t *s = find_series(m, NULL, NULL, false);
        if (d->kind == MK_HISTOGRAM) {
            if (s)
                return hist_json(m, s);
            return json_pack("{s:i, s:f, s:n, s:n, s:n, s:n}", "count", 0, "sum", 0.0, "mean",
                             "p50", "p90", "p99");
        }
        return json_integer(s ? atomic_load_explicit(&s->v, memory_order_relaxed) : 0);
    }
    json_t *o = json_object();
    for (int i = 0; o && i < cap; i++) {
        const series_t *s = &series[m][i];
        if (atomic_load_explicit(&s->state, memory_order_acquire) != 2)
            continue;
        json_t *v = d->kind == MK_HISTOGRAM
                        ? hist_json(m, s)
                        : json_integer(atomic_load_explicit(&s->v, memory_order_relaxed));
        const char *k1 = s->l[0] ? s->l[0] : "";
        if (nl == 1) {
            json_object_set_new(o, k1, v);
        } else {
            json_t *inner = json_object_get(o, k1);
            if (!inner) {
                inner = json_object();
                json_object_set_new(o, k1, inner);
            }
            json_object_set_new(inner, s->l[1] ? s->l[1] : "", v);
        }
    }
    return o;
}

json_t *xf_metrics_stats_json(void)
{
    pthread_once(&bounds_once, bounds_init);
    static const char *const secs[] = {"server", "http", "batcher", "engine", "arena", "redis"};
    json_t *root = json_object();
    if (!root)
        return NULL;
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++)
        json_object_set_new(root, secs[i], json_object());
    for (int m = 0; m < XF_M_COUNT; m++) {
        json_t *sec = json_object_get(root, mdesc[m].section);
        if (!sec) {
            sec = json_object();
            json_object_set_new(root, mdesc[m].section, sec);
        }
        json_object_set_new(sec, mdesc[m].name, metric_json((enum xf_metric)m));
    }
    json_t *server = json_object_get(root, "server");
    json_object_set_new(server, "version", json_string(PACKAGE_VERSION));
    json_object_set_new(server, "start_time_seconds", json_real(start_unix_s));
    json_object_set_new(server, "uptime_seconds", json_real(uptime_s()));
    json_object_set_new(server, "qps", json_pack("{s:f, s:f, s:f}", "1s", xf_metrics_qps(1),
                                                 "10s", xf_metrics_qps(10), "60s",
                                                 xf_metrics_qps(60)));
    pthread_mutex_lock(&info_lock);
    if (model_info_l[0])
        json_object_set_new(server, "model", json_pack("{s:s, s:s, s:s, s:s}", "name",
                                                       model_info_l[0], "arch",
                                                       model_info_l[1], "variant",
                                                       model_info_l[2], "quantize",
                                                       model_info_l[3]));
    pthread_mutex_unlock(&info_lock);
    json_object_set_new(server, "dropped_metric_updates",
                        json_integer((json_int_t)atomic_load(&dropped_updates)));

    json_object_set_new(json_object_get(root, "engine"), "attention_hdp", hdp_json());

    json_t *batcher = json_object_get(root, "batcher");
    double c[4];
    for (int k = 0; k < 4; k++)
        c[k] = bits_d(atomic_load_explicit(&cost_bits[k], memory_order_relaxed));
    json_object_set_new(batcher, "cost_model",
                        json_pack("{s:s, s:f, s:f, s:f, s:f, s:I, s:I}", "formula",
                                  "t = c0 + c1*tokens + c2*sum(n^2) + c3*padding_tokens",
                                  "c0_s", c[0], "c1_s_per_token", c[1],
                                  "c2_s_per_token2", c[2], "c3_s_per_pad_token", c[3], "n_fit",
                                  (json_int_t)atomic_load(&cost_n_fit), "n_obs",
                                  (json_int_t)atomic_load(&cost_n_obs)));
    int64_t nbat = xf_metric_value(XF_M_batches_total, NULL, NULL);
    json_object_set_new(batcher, "mean_batch_size",
                        nbat ? jnum(xf_metric_hist_sum(XF_M_batch_size, NULL, NULL) /
                                    (double)nbat)
                             : json_null());
    if (stats_conf) {
        json_object_set_new(batcher, "policy",
                            json_string(xf_conf_enum_name(XF_OPTID_batcher_policy,
                                                          stats_conf->batcher_policy)));
        json_object_set_new(root, "config", xf_conf_to_json(stats_conf));
    }
    return root;
}
