/* Metrics tests: the Prometheus text parsed back (counters, labels, cumulative buckets, _sum,
 * _count, HELP/TYPE once per family), percentiles from buckets against exact quantiles, QPS
 * windows from the tick ring, concurrent updates from threads, /v1/stats JSON and reset. */
#include "config.h"

#include "../helpers/xf_test.h"
#include "server/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Value of the sample line that starts with `prefix` followed by a space; NAN when absent. */
static double sample(const char *text, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, pl) == 0 && p[pl] == ' ')
            return strtod(p + pl + 1, NULL);
    }
    return NAN;
}

static int count_str(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static char *render(void)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(xf_metrics_render(&out, &len), 0);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_counters_render(void **state)
{
    (void)state;
    xf_metrics_reset();
    xf_metric_add(XF_M_requests_total, "/v1/embeddings", "200", 3);
    xf_metric_add(XF_M_requests_total, "/v1/embeddings", xf_metrics_status_label(413), 1);
    XF_METRIC_INC(requests_total, "/embed", "200");
    xf_metric_add(XF_M_padding_waste_tokens_total, NULL, NULL, 40);
    xf_metric_set(XF_M_queue_depth, NULL, NULL, 7);
    xf_metric_gauge_add(XF_M_queue_depth, NULL, NULL, -2);
    xf_metric_set(XF_M_arena_bytes, "planned", NULL, 1000);
    xf_metric_set(XF_M_arena_bytes, "naive", NULL, 5000);
    xf_metrics_set_model_info("bge \"small\"", "bert", "dense", "int8");
    char *t = render();
    assert_true(sample(t, "xformd_requests_total{route=\"/v1/embeddings\",status=\"200\"}") == 3);
    assert_true(sample(t, "xformd_requests_total{route=\"/v1/embeddings\",status=\"413\"}") == 1);
    assert_true(sample(t, "xformd_requests_total{route=\"/embed\",status=\"200\"}") == 1);
    assert_true(sample(t, "xformd_padding_waste_tokens_total") == 40);
    assert_true(sample(t, "xformd_queue_depth") == 5);
    assert_true(sample(t, "xformd_arena_bytes{kind=\"planned\"}") == 1000);
    assert_true(sample(t, "xformd_arena_bytes{kind=\"naive\"}") == 5000);
    /* Untouched unlabelled metrics exist at zero. */
    assert_true(sample(t, "xformd_batches_total") == 0);
    /* Label values are escaped. */
    assert_true(sample(t, "xformd_model_info{model=\"bge \\\"small\\\"\",arch=\"bert\","
                          "variant=\"dense\",quantize=\"int8\"}") == 1);
    /* HELP and TYPE exactly once per family, counters end in _total. */
    assert_int_equal(count_str(t, "# TYPE xformd_requests_total counter\n"), 1);
    assert_int_equal(count_str(t, "# HELP xformd_requests_total "), 1);
    assert_int_equal(count_str(t, "# TYPE xformd_request_duration_seconds histogram\n"), 1);
    assert_int_equal(count_str(t, "# TYPE xformd_queue_depth gauge\n"), 1);
    for (const char *p = strstr(t, " counter\n"); p; p = strstr(p + 1, " counter\n")) {
        const char *line = p;
        while (line > t && line[-1] != '\n')
            line--;
        assert_true(p - line > 6 && strncmp(p - 6, "_total", 6) == 0);
    }
    assert_true(xf_metric_value(XF_M_requests_total, "/v1/embeddings", "200") == 3);
    assert_true(xf_metric_sum(XF_M_requests_total) == 5);
    assert_string_equal(xf_metrics_status_label(299), "other");
    free(t);
}

static void test_histogram_render(void **state)
{
    (void)state;
    xf_metrics_reset();
    const double v[] = {0.0002, 0.003, 0.003, 0.05, 1.5, 1000.0};
    double sum = 0;
    for (size_t i = 0; i < 6; i++) {
        xf_metric_observe(XF_M_request_duration_seconds, "total", NULL, v[i]);
        sum += v[i];
    }
    xf_metric_observe(XF_M_request_duration_seconds, "queue", NULL, 0.001);
    xf_metric_observe(XF_M_request_duration_seconds, "queue", NULL, NAN);   /* ignored */
    char *t = render();
    /* Walk the total series' buckets: cumulative, increasing bounds, ends at +Inf. */
    const char *pre = "xformd_request_duration_seconds_bucket{stage=\"total\",le=\"";
    double prev_le = -1, prev_cnt = 0;
    int nb = 0, inf_seen = 0;
    for (const char *p = strstr(t, pre); p; p = strstr(p + 1, pre)) {
        const char *le = p + strlen(pre);
        double cnt = strtod(strstr(le, "} ") + 2, NULL);
        assert_true(cnt >= prev_cnt);
        if (strncmp(le, "+Inf", 4) == 0) {
            inf_seen = 1;
            assert_true(cnt == 6);
        } else {
            double b = strtod(le, NULL);
            assert_true(b > prev_le);
            /* Count of observations ≤ b, recomputed from the raw values. */
            int want = 0;
            for (size_t i = 0; i < 6; i++)
                want += v[i] <= b * (1 + 1e-6);   /* le printed with 6 digits */
            assert_true(cnt == want);
            prev_le = b;
        }
        prev_cnt = cnt;
        nb++;
    }
    assert_true(inf_seen);
    /* ≥ 4 buckets per doubling from 100 µs to 100 s: ~80 bounds. */
    assert_true(nb >= 4 * 19);
    assert_true(fabs(sample(t, "xformd_request_duration_seconds_sum{stage=\"total\"}") - sum) <
                1e-6 * sum);
    assert_true(sample(t, "xformd_request_duration_seconds_count{stage=\"total\"}") == 6);
    assert_true(sample(t, "xformd_request_duration_seconds_count{stage=\"queue\"}") == 1);
    /* Unlabelled histogram without observations still shows its zero count. */
    assert_true(sample(t, "xformd_batch_size_count") == 0);
    free(t);
    /* Batch-size buckets are integers: 1, 2, 3, ... each its own bucket. */
    xf_metric_observe(XF_M_batch_size, NULL, NULL, 3);
    t = render();
    assert_true(sample(t, "xformd_batch_size_bucket{le=\"2\"}") == 0);
    assert_true(sample(t, "xformd_batch_size_bucket{le=\"3\"}") == 1);
    free(t);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_percentiles(void **state)
{
    (void)state;
    xf_metrics_reset();
    assert_true(isnan(xf_metric_quantile(XF_M_request_duration_seconds, "total", NULL, 0.5)));
    /* Log-uniform latencies between 1 ms and 1 s, deterministic. */
    enum { N = 20000 };
    static double v[N];
    uint64_t s = 99;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0;
        v[i] = 1e-3 * pow(1000.0, u);
        xf_metric_observe(XF_M_request_duration_seconds, "total", NULL, v[i]);
    }
    qsort(v, N, sizeof(v[0]), cmp_d);
    const double qs[] = {0.5, 0.9, 0.99};
    for (int k = 0; k < 3; k++) {
        double exact = v[(int)(qs[k] * N) - 1];
        double est = xf_metric_quantile(XF_M_request_duration_seconds, "total", NULL, qs[k]);
        /* Buckets are 2^(1/4) wide (19%); interpolation inside one keeps the estimate within
         * a bucket of the exact quantile, and for smooth data much closer: allow 5%. */
        if (fabs(est / exact - 1) > 0.05)
            fail_msg("q%.2f: %.6g vs exact %.6g", qs[k], est, exact);
    }
    /* A single value: every quantile lies inside its bucket. */
    xf_metrics_reset();
    xf_metric_observe(XF_M_batch_tokens, NULL, NULL, 100);
    double q = xf_metric_quantile(XF_M_batch_tokens, NULL, NULL, 0.99);
    assert_true(q > 100 / 1.19 && q <= 100 * 1.19);
    assert_true(xf_metric_hist_sum(XF_M_batch_tokens, NULL, NULL) == 100);
}

/* Prometheus' histogram_quantile on rendered cumulative buckets (le, count) pairs: linear
 * interpolation inside the bucket, lower edge 0 for the first bucket when its bound is > 0. */
static double prom_quantile(const char *text, const char *name, double q)
{
    double le[128], cum[128];
    int n = 0;
    char key[128];
    snprintf(key, sizeof key, "xformd_%s_bucket{le=\"", name);
    for (const char *p = strstr(text, key); p && n < 128; p = strstr(p + 1, key)) {
        p += strlen(key);
        le[n] = strncmp(p, "+Inf", 4) == 0 ? INFINITY : strtod(p, NULL);
        const char *sp = strchr(p, ' ');
        assert_non_null(sp);
        cum[n++] = strtod(sp + 1, NULL);
    }
    assert_true(n >= 2);
    double rank = q * cum[n - 1];
    int b = 0;
    while (b < n - 1 && cum[b] < rank)
        b++;
    if (isinf(le[b]))
        return le[n - 2];
    double lo = b == 0 ? (le[0] > 0 ? 0 : le[0]) : le[b - 1];
    double below = b == 0 ? 0 : cum[b - 1];
    if (b == 0 && le[0] <= 0)
        return le[0];
    return lo + (le[b] - lo) * (rank - below) / (cum[b] - below);
}

/* Issue 8 item 5: when every batch held one request the batch-size median read 0.5 (the
 * first bucket's lower edge was taken as 0), in /v1/stats and in PromQL. */
static void test_integer_quantiles(void **state)
{
    (void)state;
    xf_metrics_reset();
    for (int i = 0; i < 50; i++)
        xf_metric_observe(XF_M_batch_size, NULL, NULL, 1);
    const double qs[] = {0.01, 0.5, 0.9, 0.99, 1.0};
    for (int k = 0; k < 5; k++) {
        double v = xf_metric_quantile(XF_M_batch_size, NULL, NULL, qs[k]);
        if (v != 1.0)
            fail_msg("all-ones batch sizes: q%.2f = %.9g, want 1", qs[k], v);
    }
    char *t = NULL;
    size_t len = 0;
    assert_int_equal(xf_metrics_render(&t, &len), 0);
    assert_non_null(strstr(t, "xformd_batch_size_bucket{le=\"1\"} 50\n"));
    double pq = prom_quantile(t, "batch_size", 0.5);
    if (!(pq > 0.99 && pq <= 1.0))
        fail_msg("histogram_quantile(0.5) of all-ones batch sizes = %.9g", pq);
    free(t);
    /* /v1/stats: the same through the JSON. */
    json_t *st = xf_metrics_stats_json();
    assert_non_null(st);
    json_t *bs = json_object_get(json_object_get(st, "batcher"), "batch_size");
    assert_non_null(bs);
    assert_true(json_real_value(json_object_get(bs, "p50")) == 1.0);
    json_decref(st);

    /* Every quantile stays within [min, max] of what was observed, for small integers. */
    xf_metrics_reset();
    for (int v = 1; v <= 12; v++)
        for (int r = 0; r < v; r++)
            xf_metric_observe(XF_M_batch_size, NULL, NULL, v);
    for (double q = 0.0; q <= 1.0; q += 0.05) {
        double v = xf_metric_quantile(XF_M_batch_size, NULL, NULL, q);
        if (!(v >= 1 && v <= 12))
            fail_msg("q%.2f = %.9g outside [1, 12]", q, v);
    }
    /* All twos: 2. */
    xf_metrics_reset();
    for (int i = 0; i < 7; i++)
        xf_metric_observe(XF_M_batch_sequences, NULL, NULL, 2);
    assert_true(xf_metric_quantile(XF_M_batch_sequences, NULL, NULL, 0.5) == 2.0);
    /* A client that went away before its reply: 499, not "other". */
    assert_string_equal(xf_metrics_status_label(499), "499");
}

static void test_qps(void **state)
{
    (void)state;
    xf_metrics_reset();
    const uint64_t S = 1000000000ull;
    uint64_t t = 5000 * S;
    xf_metrics_tick(t);   /* first tick only starts the ring */
    assert_true(xf_metrics_qps(1) == 0);
    /* Seconds 1..20: i completions in second i. */
    for (int i = 1; i <= 20; i++) {
        for (int k = 0; k < i; k++)
            xf_metric_observe(XF_M_request_duration_seconds, "total", NULL, 0.01);
        xf_metrics_tick(t + (uint64_t)i * S + S / 3);   /* ticks need not be on the second */
    }
    assert_true(xf_metrics_qps(1) == 20);
    assert_true(fabs(xf_metrics_qps(10) - (11 + 20) / 2.0) < 1e-12);   /* mean of 11..20 */
    assert_true(fabs(xf_metrics_qps(60) - 210 / 20.0) < 1e-12);        /* 20 seconds so far */
    /* A tick twice in the same second adds nothing new. */
    xf_metrics_tick(t + 20 * S + S / 2);
    assert_true(xf_metrics_qps(1) == 20);
    /* The loop stalls 3 s; 9 completions land in the newest second, the missed ones are 0. */
    for (int k = 0; k < 9; k++)
        xf_metric_observe(XF_M_request_duration_seconds, "total", NULL, 0.01);
    xf_metrics_tick(t + 23 * S);
    assert_true(xf_metrics_qps(1) == 9);
    assert_true(fabs(xf_metrics_qps(3) - 3) < 1e-12);
    /* Queue-stage observations are not completions. */
    xf_metric_observe(XF_M_request_duration_seconds, "queue", NULL, 0.01);
    xf_metrics_tick(t + 24 * S);
    assert_true(xf_metrics_qps(1) == 0);
}

static void *hammer(void *arg)
{
    const char *route = arg;
    for (int i = 0; i < 20000; i++) {
        xf_metric_add(XF_M_requests_total, route, xf_metrics_status_label(200 + (i % 2) * 300),
                      1);
        xf_metric_observe(XF_M_request_duration_seconds, "compute", NULL, 0.001);
        xf_metric_gauge_add(XF_M_queued_tokens, NULL, NULL, i % 2 ? -3 : 3);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    xf_metrics_reset();
    /* Four threads racing to create the same and different series: no update lost, no series
     * duplicated. */
    static const char *const routes[4] = {"/a", "/b", "/a", "/b"};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, (void *)routes[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_true(xf_metric_value(XF_M_requests_total, "/a", "200") == 20000);
    assert_true(xf_metric_value(XF_M_requests_total, "/a", "500") == 20000);
    assert_true(xf_metric_value(XF_M_requests_total, "/b", "500") == 20000);
    assert_true(xf_metric_sum(XF_M_requests_total) == 80000);
    assert_true(xf_metric_value(XF_M_request_duration_seconds, "compute", NULL) == 80000);
    assert_true(fabs(xf_metric_hist_sum(XF_M_request_duration_seconds, "compute", NULL) - 80.0) <
                1e-6);
    assert_true(xf_metric_value(XF_M_queued_tokens, NULL, NULL) == 0);
    char *t = render();
    assert_int_equal(count_str(t, "xformd_requests_total{route=\"/a\",status=\"200\"} "), 1);
    free(t);
}

static void test_stats_json(void **state)
{
    (void)state;
    xf_metrics_reset();
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    assert_int_equal(xf_conf_set(&c, "auth.api_key", "secret", NULL, NULL), 0);
    xf_metrics_init(&c);
    xf_metric_add(XF_M_requests_total, "/embed", "200", 2);
    xf_metric_add(XF_M_batches_total, NULL, NULL, 2);
    xf_metric_observe(XF_M_batch_size, NULL, NULL, 3);
    xf_metric_observe(XF_M_batch_size, NULL, NULL, 5);
    xf_metric_set(XF_M_arena_bytes, "planned", NULL, 123);
    const double cost[4] = {1e-3, 2e-4, 3e-7, 0};
    xf_metrics_set_cost(cost, 24, 100);
    json_t *j = xf_metrics_stats_json();
    assert_non_null(j);
    const char *secs[] = {"server", "http", "batcher", "engine", "arena", "redis", "config"};
    for (int i = 0; i < 7; i++)
        assert_true(json_is_object(json_object_get(j, secs[i])));
    json_t *http = json_object_get(j, "http");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(http, "requests_total"), "/embed"),
                         "200")),
                     2);
    json_t *b = json_object_get(j, "batcher");
    assert_true(json_real_value(json_object_get(b, "mean_batch_size")) == 4.0);
    json_t *bs = json_object_get(b, "batch_size");
    assert_int_equal(json_integer_value(json_object_get(bs, "count")), 2);
    assert_true(json_is_real(json_object_get(bs, "p50")));
    json_t *cm = json_object_get(b, "cost_model");
    assert_true(json_real_value(json_object_get(cm, "c1_s_per_token")) == 2e-4);
    assert_int_equal(json_integer_value(json_object_get(cm, "n_obs")), 100);
    assert_string_equal(json_string_value(json_object_get(b, "policy")), "tokens");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(
                         json_object_get(j, "arena"), "arena_bytes"), "planned")),
                     123);
    json_t *srv = json_object_get(j, "server");
    assert_true(json_is_object(json_object_get(srv, "qps")));
    assert_true(json_real_value(json_object_get(srv, "uptime_seconds")) >= 0);
    assert_true(json_real_value(json_object_get(srv, "start_time_seconds")) > 1.6e9);
    /* An empty histogram has null percentiles, not made-up numbers. */
    json_t *lat = json_object_get(json_object_get(j, "redis"), "redis_command_duration_seconds");
    assert_true(json_is_null(json_object_get(lat, "p99")));
    char *s = json_dumps(j, 0);
    assert_null(strstr(s, "secret"));
    free(s);
    json_decref(j);
    xf_metrics_init(NULL);
    xf_conf_deinit(&c);
}

static void test_reset(void **state)
{
    (void)state;
    xf_metric_add(XF_M_requests_total, "/x", "200", 1);
    xf_metric_observe(XF_M_batch_tokens, NULL, NULL, 10);
    xf_metrics_reset();
    assert_true(xf_metric_sum(XF_M_requests_total) == 0);
    assert_true(xf_metric_value(XF_M_batch_tokens, NULL, NULL) == 0);
    char *t = render();
    assert_null(strstr(t, "route=\"/x\""));
    assert_null(strstr(t, "xformd_model_info{"));
    free(t);
}

/* The engine's pruning counts: rendered as counters and sparsity gauges, in /v1/stats, and
 * never lowered by a worker reporting an older reading. */
static void test_prune(void **state)
{
    (void)state;
    xf_metrics_set_prune(1000, 400, 20, 5);
    xf_metrics_set_prune(900, 300, 10, 2);   /* older reading: ignored */
    char *t = render();
    assert_non_null(strstr(t, "xformd_attention_hdp_blocks_total{state=\"kept\"} 600\n"));
    assert_non_null(strstr(t, "xformd_attention_hdp_blocks_total{state=\"pruned\"} 400\n"));
    assert_non_null(strstr(t, "xformd_attention_hdp_heads_total{state=\"kept\"} 15\n"));
    assert_non_null(strstr(t, "xformd_attention_hdp_heads_total{state=\"pruned\"} 5\n"));
    assert_non_null(strstr(t, "xformd_attention_hdp_block_sparsity 0.400000\n"));
    assert_non_null(strstr(t, "xformd_attention_hdp_head_sparsity 0.250000\n"));
    assert_int_equal(count_str(t, "# TYPE xformd_attention_hdp_blocks_total counter"), 1);
    free(t);
    json_t *j = xf_metrics_stats_json();
    json_t *h = json_object_get(json_object_get(j, "engine"), "attention_hdp");
    assert_int_equal(json_integer_value(json_object_get(h, "blocks")), 1000);
    assert_int_equal(json_integer_value(json_object_get(h, "heads_pruned")), 5);
    assert_true(json_real_value(json_object_get(h, "head_sparsity")) == 0.25);
    json_decref(j);
}

/* What a strict exposition parser (OpenMetrics, prometheus_client's text parser) derives from
 * the text: a counter's family is its name without "_total", a histogram's its name. Two
 * families may not share a name (the counter xformd_batch_tokens_total collided with the
 * histogram xformd_batch_tokens), and every le label must read back as the exact bound
 * ("%.6g" wrote 1048576 as 1.04858e+06). */
static void test_exposition_strict(void **state)
{
    (void)state;
    xf_metrics_reset();
    xf_metric_observe(XF_M_batch_tokens, NULL, NULL, 1048576);
    xf_metric_observe(XF_M_batch_tokens, NULL, NULL, 3);
    char *t = render();
    char fam[256][96];
    int nf = 0;
    for (const char *p = strstr(t, "# TYPE "); p; p = strstr(p + 1, "# TYPE ")) {
        char name[96], type[32];
        assert_int_equal(sscanf(p, "# TYPE %95s %31s", name, type), 2);
        size_t n = strlen(name);
        if (!strcmp(type, "counter") && n > 6 && !strcmp(name + n - 6, "_total"))
            name[n - 6] = '\0';
        for (int k = 0; k < nf; k++)
            if (!strcmp(fam[k], name))
                fail_msg("two metric families named %s", name);
        assert_true(nf < 256);
        snprintf(fam[nf++], sizeof fam[0], "%s", name);
    }
    assert_true(nf > 10);
    /* le values: digits only as many as needed, but exact. */
    int les = 0;
    for (const char *p = strstr(t, "le=\""); p; p = strstr(p + 1, "le=\"")) {
        p += 4;
        if (!strncmp(p, "+Inf", 4))
            continue;
        char *end = NULL;
        double v = strtod(p, &end);
        assert_true(end && *end == '"');
        if (v >= 1 && v == floor(v) && strchr(p, 'e') && strchr(p, 'e') < end)
            fail_msg("integer bound written in exponent form: %.*s", (int)(end - p), p);
        les++;
    }
    assert_true(les > 20);
    assert_true(sample(t, "xformd_batch_tokens_bucket{le=\"1048576\"}") == 2);
    free(t);
}

/* ---- a strict reader of the text exposition format 0.0.4 ------------------------------- */

/* What Prometheus' text parser (and prometheus_client's) accepts, checked line by line:
 * every line ends in \n; "# HELP name text" (escapes \\ and \n only) and "# TYPE name type" at
 * most once per family, TYPE before the family's first sample; a sample is name, optional
 * {label="value",...} (label names [a-zA-Z_][a-zA-Z0-9_]*, not "__"-reserved, no repeats;
 * values valid UTF-8 with escapes \\, \" and \n only), one space, a float, +Inf, -Inf or NaN;
 * a family's samples are contiguous and no series appears twice; a counter is never negative;
 * each histogram series has buckets of increasing le, cumulative counts, a last le="+Inf",
 * then _sum and a _count equal to the +Inf bucket. fail_msg names the line at fault. */
#define EXP_MAX_FAM 256
#define EXP_MAX_SERIES 8192

typedef struct exp_fam {
    char name[96], type[16];
    int help, typed, closed;
} exp_fam_t;

static int is_name_char(char c, int first, int colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (colon && c == ':') || (!first && c >= '0' && c <= '9');
}

/* Length of the valid UTF-8 sequence at p (1..4), 0 when invalid. */
static size_t utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    size_t n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || (p[0] & 0xf8) == 0xf8)
        return 0;
    for (size_t k = 1; k < n; k++)
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    return n;
}

static int exp_value(const char *p, const char **end, double *v)
{
    if (!strncmp(p, "+Inf", 4) || !strncmp(p, "-Inf", 4) || !strncmp(p, "NaN", 3)) {
        *v = p[0] == 'N' ? NAN : p[0] == '-' ? -INFINITY : INFINITY;
        *end = p + (p[0] == 'N' ? 3 : 4);
        return 0;
    }
    if (!(*p == '-' || *p == '+' || *p == '.' || (*p >= '0' && *p <= '9')))
        return -1;
    char *e = NULL;
    *v = strtod(p, &e);
    *end = e;
    return e == p || isinf(*v) || isnan(*v) ? -1 : 0;
}

static exp_fam_t *exp_family(exp_fam_t *f, int *nf, const char *name)
{
    for (int k = 0; k < *nf; k++)
        if (!strcmp(f[k].name, name))
            return &f[k];
    assert_true(*nf < EXP_MAX_FAM);
    exp_fam_t *x = &f[(*nf)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    return x;
}

static char exp_msg[1200];

#define BAD(...)                                                                               \
    do {                                                                                       \
        snprintf(exp_msg, sizeof exp_msg, __VA_ARGS__);                                        \
        goto out;                                                                              \
    } while (0)

/* NULL when t is valid, else what is wrong and where. */
static const char *check_exposition(const char *t)
{
    const char *ret = exp_msg;
    exp_fam_t *fam = calloc(EXP_MAX_FAM, sizeof *fam);
    char (*seen)[320] = calloc(EXP_MAX_SERIES, sizeof *seen);
    assert_non_null(fam);
    assert_non_null(seen);
    int nf = 0, ns = 0, lineno = 0;
    exp_fam_t *cur = NULL;
    /* the histogram series being walked: its labels without le, last le and count */
    char h_series[320] = "";
    double h_le = -INFINITY, h_cum = -1, h_inf = -1;
    int h_open = 0, h_sum = 0, h_count = 0;
    size_t tl = strlen(t);
    if (tl == 0 || t[tl - 1] != '\n')
        BAD("the text does not end in a newline");
    for (const char *line = t; *line; line = strchr(line, '\n') + 1) {
        lineno++;
        const char *eol = strchr(line, '\n');
        size_t ll = (size_t)(eol - line);
        char l[1024];
        if (ll >= sizeof l)
            BAD("line %d: %zu bytes", lineno, ll);
        memcpy(l, line, ll);
        l[ll] = '\0';
        for (const unsigned char *u = (const unsigned char *)l; *u;) {
            size_t n = utf8_len(u);
            if (!n)
                BAD("line %d: invalid UTF-8: %s", lineno, l);
            u += n;
        }
        if (l[0] == '#') {
            char kw[8], name[96];
            int off = 0;
            if (sscanf(l, "# %7s %95s %n", kw, name, &off) < 2 ||
                (strcmp(kw, "HELP") && strcmp(kw, "TYPE")))
                continue;   /* another comment */
            for (const char *c = name; *c; c++)
                if (!is_name_char(*c, c == name, 1))
                    BAD("line %d: bad metric name %s", lineno, name);
            exp_fam_t *f = exp_family(fam, &nf, name);
            if (f->closed)
                BAD("line %d: %s after the family's samples", lineno, kw);
            if (f != cur && h_open && !(h_sum && h_count))
                BAD("line %d: the last histogram series has no _sum or _count", lineno);
            if (f != cur)
                h_open = 0;
            const char *rest = l + off;
            if (!strcmp(kw, "HELP")) {
                if (f->help++)
                    BAD("line %d: second HELP for %s", lineno, name);
                for (const char *c = rest; *c; c++)
                    if (*c == '\\' && c[1] != '\\' && c[1] != 'n')
                        BAD("line %d: bad escape in HELP: %s", lineno, l);
                    else if (*c == '\\')
                        c++;
            } else {
                if (f->typed++)
                    BAD("line %d: second TYPE for %s", lineno, name);
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") &&
                    strcmp(rest, "histogram") && strcmp(rest, "summary") &&
                    strcmp(rest, "untyped"))
                    BAD("line %d: unknown type '%s'", lineno, rest);
                snprintf(f->type, sizeof f->type, "%s", rest);
            }
            if (cur && cur != f)
                cur->closed = 1;
            cur = f;
            continue;
        }
        /* a sample: name */
        const char *p = l;
        while (is_name_char(*p, p == l, 1))
            p++;
        if (p == l)
            BAD("line %d: no metric name: %s", lineno, l);
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)(p - l), l);
        /* labels, normalised (le taken out) into lab */
        char lab[320] = "", le[64] = "", names[8][64];
        int nlab = 0, has_le = 0;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                const char *n0 = p;
                while (is_name_char(*p, p == n0, 0))
                    p++;
                if (p == n0 || p - n0 >= 64 || (p - n0 >= 2 && n0[0] == '_' && n0[1] == '_'))
                    BAD("line %d: bad label name: %s", lineno, l);
                if (nlab == 8)
                    BAD("line %d: more than 8 labels", lineno);
                snprintf(names[nlab], 64, "%.*s", (int)(p - n0), n0);
                for (int k = 0; k < nlab; k++)
                    if (!strcmp(names[k], names[nlab]))
                        BAD("line %d: label %s twice", lineno, names[nlab]);
                nlab++;
                if (p[0] != '=' || p[1] != '"')
                    BAD("line %d: label without =\"value\": %s", lineno, l);
                p += 2;
                const char *v0 = p;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                        BAD("line %d: bad escape in a label value: %s", lineno, l);
                    p += *p == '\\' ? 2 : 1;
                }
                if (*p != '"')
                    BAD("line %d: unterminated label value: %s", lineno, l);
                int is_le = !strcmp(names[nlab - 1], "le");
                if (is_le) {
                    has_le = 1;
                    snprintf(le, sizeof le, "%.*s", (int)(p - v0), v0);
                } else {
                    size_t o = strlen(lab);
                    int w = snprintf(lab + o, sizeof lab - o, "%s=%.*s,", names[nlab - 1],
                                     (int)(p - v0), v0);
                    if (w < 0 || (size_t)w >= sizeof lab - o)
                        BAD("line %d: labels too long for this reader", lineno);
                }
                p++;
                if (*p == ',')
                    p++;
                else if (*p != '}')
                    BAD("line %d: expected , or } after a label: %s", lineno, l);
            }
            p++;
        }
        if (*p != ' ')
            BAD("line %d: expected one space before the value: %s", lineno, l);
        double v;
        const char *end;
        if (exp_value(p + 1, &end, &v) < 0 || (*end && *end != ' '))
            BAD("line %d: bad value: %s", lineno, l);
        /* which family, and is it the current one */
        size_t n = strlen(name);
        const char *suffix = "";
        exp_fam_t *f = NULL;
        for (int k = 0; k < nf && !f; k++) {
            size_t fl = strlen(fam[k].name);
            if (!strcmp(fam[k].name, name)) {
                f = &fam[k];
            } else if (!strcmp(fam[k].type, "histogram") && n > fl &&
                       !strncmp(name, fam[k].name, fl) &&
                       (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
                        !strcmp(name + fl, "_count"))) {
                f = &fam[k];
                suffix = name + fl;
            }
        }
        if (!f || !f->typed)
            BAD("line %d: sample before its family's TYPE: %s", lineno, l);
        if (f != cur)
            BAD("line %d: family %s's samples are not together: %s", lineno, f->name, l);
        /* no series twice */
        char key[320];
        snprintf(key, sizeof key, "%s{%s%s%s}", name, lab, has_le ? "le=" : "", le);
        for (int k = 0; k < ns; k++)
            if (!strcmp(seen[k], key))
                BAD("line %d: series %s twice", lineno, key);
        assert_true(ns < EXP_MAX_SERIES);
        snprintf(seen[ns++], sizeof seen[0], "%s", key);
        if (!strcmp(f->type, "counter") && !(v >= 0))
            BAD("line %d: counter below zero or NaN: %s", lineno, l);
        if (strcmp(f->type, "histogram"))
            continue;
        if (!strcmp(suffix, "_bucket")) {
            if (!has_le)
                BAD("line %d: bucket without le: %s", lineno, l);
            if (!h_open || strcmp(h_series, lab) != 0) {   /* a new series */
                if (h_open && !(h_sum && h_count))
                    BAD("line %d: the previous series has no _sum or _count", lineno);
                snprintf(h_series, sizeof h_series, "%s", lab);
                h_open = 1;
                h_le = -INFINITY;
                h_cum = -1;
                h_inf = -1;
                h_sum = h_count = 0;
            }
            double b;
            const char *e2;
            if (exp_value(le, &e2, &b) < 0 || *e2 || isnan(b))
                BAD("line %d: le \"%s\" is not a number", lineno, le);
            if (!(b > h_le) || h_inf >= 0 || h_sum || h_count)
                BAD("line %d: le does not increase: %s", lineno, l);
            if (v < h_cum)
                BAD("line %d: buckets not cumulative: %s", lineno, l);
            h_le = b;
            h_cum = v;
            if (isinf(b))
                h_inf = v;
        } else {
            if (has_le)
                BAD("line %d: le on %s: %s", lineno, suffix, l);
            if (!h_open || strcmp(h_series, lab) != 0 || h_inf < 0)
                BAD("line %d: %s before the series' +Inf bucket: %s", lineno, suffix, l);
            if (!strcmp(suffix, "_sum"))
                h_sum = 1;
            else if (!h_sum || v != h_inf)
                BAD("line %d: _count %g, want the +Inf bucket %g after _sum: %s", lineno, v,
                    h_inf, l);
            else
                h_count = 1;
        }
    }
    if (h_open && !(h_sum && h_count))
        BAD("the last histogram series has no _sum or _count");
    for (int k = 0; k < nf; k++)
        if (!fam[k].typed)
            BAD("family %s has HELP but no TYPE", fam[k].name);
    ret = NULL;
out:
    free(fam);
    free(seen);
    return ret;
}

/* The whole /metrics text, with every family holding series, passes the strict reader above,
 * including a model label with a quote, a backslash, a newline and 300 two-byte characters
 * (cut to fit, never inside a character). */
static void test_exposition_reader(void **state)
{
    (void)state;
    xf_metrics_reset();
    for (int st = 100; st < 600; st++)
        xf_metric_add(XF_M_requests_total, "/embed", xf_metrics_status_label(st), 1);
    xf_metric_observe(XF_M_request_duration_seconds, "queue", NULL, 0.002);
    xf_metric_observe(XF_M_request_duration_seconds, "total", NULL, 0.5);
    xf_metric_observe(XF_M_request_duration_seconds, "total", NULL, 1e9);
    xf_metric_observe(XF_M_batch_size, NULL, NULL, 3);
    xf_metric_observe(XF_M_batch_tokens, NULL, NULL, 1048576);
    xf_metric_set(XF_M_queue_depth, NULL, NULL, -3);
    char *t = NULL;
    for (int shift = 0; shift < 2; shift++) {   /* the cut falls at either byte of an é */
        char name[700] = "a\"b\\c\nd";
        size_t i = strlen(name) + (size_t)shift;
        if (shift)
            name[i - 1] = 'e';
        for (; i + 2 < sizeof name - 1; i += 2)
            memcpy(name + i, "\xc3\xa9", 2);   /* é */
        xf_metrics_set_model_info(name, "bert", "dense", NULL);
        free(t);
        t = render();
        const char *why = check_exposition(t);
        if (why)
            fail_msg("model name shifted by %d: %s", shift, why);
        assert_non_null(strstr(t, shift ? "model=\"a\\\"b\\\\c\\nde\xc3\xa9"
                                        : "model=\"a\\\"b\\\\c\\nd\xc3\xa9"));
    }
    assert_non_null(strstr(t, "variant=\"dense\",quantize=\"none\"} 1\n"));   /* NULL */
    /* Every status TEI's routes answer has its own label (424: /rerank without a head). */
    assert_true(sample(t, "xformd_requests_total{route=\"/embed\",status=\"424\"}") == 1);
    assert_true(sample(t, "xformd_requests_total{route=\"/embed\",status=\"422\"}") == 1);
    free(t);
}

/* The reader refuses what a scrape would: each text breaks one rule. */
static void test_exposition_reader_refuses(void **state)
{
    (void)state;
    const char *good = "# HELP x_total A counter.\n# TYPE x_total counter\n"
                       "x_total{a=\"q\\\"\\n\"} 3\n"
                       "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                       "h_sum 4.5\nh_count 2\n";
    const char *why = check_exposition(good);
    if (why)
        fail_msg("%s", why);
    static const char *const bad[] = {
        "# TYPE x counter\nx 1",                                   /* no final newline */
        "x 1\n",                                                   /* no TYPE */
        "# TYPE x counter\n# TYPE x counter\nx 1\n",                /* TYPE twice */
        "# TYPE x counter\nx -1\n",                                /* negative counter */
        "# TYPE x gauge\nx 1x\n",                                  /* bad value */
        "# TYPE x gauge\nx  1\n",                                  /* two spaces */
        "# TYPE x gauge\nx{a=\"\\t\"} 1\n",                        /* bad escape */
        "# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n",                   /* label twice */
        "# TYPE x gauge\nx{__a=\"1\"} 1\n",                        /* reserved name */
        "# TYPE x gauge\nx{a=\"\xc3\"} 1\n",                        /* cut UTF-8 */
        "# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",             /* series twice */
        "# TYPE x gauge\n# TYPE y gauge\ny 1\nx 1\n",              /* family split */
        "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n",         /* family split */
        "# TYPE x summaryy\nx 1\n",                                /* unknown type */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",   /* no +Inf */
        "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",             /* le decreases */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 1\n",                                    /* not cumulative */
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",   /* count */
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n",              /* no _count */
        "# TYPE h histogram\nh_bucket{le=\"a\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n"
        "h_count 2\n",                                              /* le not a number */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!check_exposition(bad[i]))
            fail_msg("bad text %zu accepted: %s", i, bad[i]);
}

XF_TEST_MAIN(cmocka_unit_test(test_counters_render), cmocka_unit_test(test_histogram_render),
             cmocka_unit_test(test_percentiles), cmocka_unit_test(test_integer_quantiles),
             cmocka_unit_test(test_qps),
             cmocka_unit_test(test_concurrent), cmocka_unit_test(test_stats_json),
             cmocka_unit_test(test_reset), cmocka_unit_test(test_prune),
             cmocka_unit_test(test_exposition_strict),
             cmocka_unit_test(test_exposition_reader),
             cmocka_unit_test(test_exposition_reader_refuses))
