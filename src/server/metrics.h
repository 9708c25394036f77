/* Metrics: storage generated from metrics.def (relaxed atomics, no lock on the request path),
 * the Prometheus text format 0.0.4 of GET /metrics, the /v1/stats JSON (QPS windows,
 * percentiles from the histogram buckets, cost model, config) and a reset for tests.
 * Updates may come from any thread. Label values must come from closed sets and outlive the
 * process (string literals, static tables, xf_metrics_status_label()): series are keyed by them
 * on first use and never freed. */
#ifndef XF_SERVER_METRICS_H
#define XF_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "server/conf.h"

enum xf_metric {
#define XF_COUNTER(sec, name, labels, help) XF_M_##name,
#define XF_GAUGE(sec, name, labels, help) XF_M_##name,
#define XF_HISTOGRAM(sec, name, labels, buckets, help) XF_M_##name,
#include "server/metrics.def"
#undef XF_COUNTER
#undef XF_GAUGE
#undef XF_HISTOGRAM
    XF_M_COUNT
};

/* Record the process start time (CLOCK_REALTIME and monotonic) and the config shown by
 * /v1/stats (borrowed: must stay valid and unchanged; NULL for none). Call once from main
 * before any thread updates metrics. Idempotent except that it re-records the start time. */
void xf_metrics_init(const xf_conf_t *cfg);
/* Zero every series, the QPS ring, the cost model and model info (tests). Not concurrent with
 * updates. */
void xf_metrics_reset(void);

/* Counters: add n to the series with labels (l1, l2) (NULL when the metric has fewer labels). */
void xf_metric_add(enum xf_metric m, const char *l1, const char *l2, uint64_t n);
/* Gauges: set, or add a (possibly negative) delta. */
void xf_metric_set(enum xf_metric m, const char *l1, const char *l2, int64_t v);
void xf_metric_gauge_add(enum xf_metric m, const char *l1, const char *l2, int64_t delta);
/* Histograms: one observation in base units (seconds, requests, tokens). Non-finite values
 * are ignored. */
void xf_metric_observe(enum xf_metric m, const char *l1, const char *l2, double v);

#define XF_METRIC_INC(name, l1, l2) xf_metric_add(XF_M_##name, (l1), (l2), 1)

/* Read back (tests, stats): counter or gauge value; for histograms the observation count.
 * 0 for a series never touched. */
int64_t xf_metric_value(enum xf_metric m, const char *l1, const char *l2);
/* Sum of a counter or gauge over all its series (e.g. all requests_total). */
int64_t xf_metric_sum(enum xf_metric m);
/* Quantile q in [0, 1] of a histogram series, interpolated linearly inside the bucket that
 * holds it (as Prometheus' histogram_quantile); NaN when the series is empty. */
double xf_metric_quantile(enum xf_metric m, const char *l1, const char *l2, double q);
/* Histogram series sum of observations. */
double xf_metric_hist_sum(enum xf_metric m, const char *l1, const char *l2);

/* Static label text for an HTTP status code ("200", "503"; "other" for codes outside the
 * table). Ownership: static storage. */
const char *xf_metrics_status_label(int status);

/* model_info{model,arch,variant,quantize} 1 (values are copied; from config and the loaded
 * model, never from requests; quantize NULL or "" is "none"). */
void xf_metrics_set_model_info(const char *model, const char *arch, const char *variant,
                               const char *quantize);
/* Publish the batcher's cost model (loop thread, after each observe): coefficients c0..c3 in
 * seconds per unit and how many samples/observations refined it. */
void xf_metrics_set_cost(const double c[4], uint64_t n_fit, uint64_t n_obs);
/* Publish the engine's attention pruning counts (workers, after a forward; the engine's
 * xf_attn_prune_stats, process-wide and monotone): each value only ever rises here. Rendered
 * as xformd_attention_hdp_{blocks,heads}_total{state} and the *_sparsity gauges, and in
 * /v1/stats engine.attention_hdp. */
void xf_metrics_set_prune(uint64_t blocks, uint64_t blocks_pruned, uint64_t heads,
                          uint64_t heads_pruned);

/* Advance the per-second QPS ring (loop thread, about once a second; now is monotonic ns).
 * Completed inference requests are those observed in request_duration_seconds{stage="total"}.
 * Missed seconds are filled with zero counts. */
void xf_metrics_tick(uint64_t now_ns);
/* Mean completed requests per second over the last window_s (1..60) whole ticked seconds. */
double xf_metrics_qps(unsigned window_s);

/* The Prometheus text format 0.0.4 of every metric. Ownership: *out is new (free()), NUL
 * terminated, *len its length without the NUL. Returns 0 or -ENOMEM. */
int xf_metrics_render(char **out, size_t *len);

/* The /v1/stats object: {"server":{...}, "http":{...}, "batcher":{..., "cost_model":{...}},
 * "engine":{...}, "arena":{...}, "redis":{...}, "config":{...}}. Counters and gauges by their
 * names (labelled ones as objects keyed by label values), histograms as {count, sum, mean,
 * p50, p90, p99}. Ownership: new reference, NULL on ENOMEM. */
json_t *xf_metrics_stats_json(void);

#endif
