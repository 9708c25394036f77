/* Route table and client-facing shapes: the in-process server runs the daemon's defaults
 * (conf.def), every routes.def row answers with its method/auth/API, unknown paths and methods
 * answer in the shape of the API they resemble; the routes real clients call (OpenAI
 * /v1/models, TEI /, /health, /info, /predict batches, truncation_direction), model and version
 * checks, OpenAI "param", the attention fallback header. Real daemon on 127.0.0.1 port 0. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xf_test.h"

#include "server/batcher.h"
#include "server/conf.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/routes.h"
#include "server_fixture.h"

enum { SRV_PLAIN, SRV_CLS3, SRV_CLS1, SRV_N };

static struct {
    xf_server_t *s;
    int port;
    char dir[1024];
} S[SRV_N];

static int D_MODEL;

/* Three servers on the daemon's defaults: plain (embeddings), cls3 (3 labels), cls1 (a
 * cross-encoder). */
static void need_servers(void)
{
    if (S[0].s)
        return;
    xf_metrics_init(NULL);
    xf_log_open(XF_LOG_WARN, NULL);
    static const int labels[SRV_N] = { 0, 3, 1 };
    static const char *const tags[SRV_N] = { "rt_plain", "rt_cls3", "rt_cls1" };
    for (int i = 0; i < SRV_N; i++) {
        assert_int_equal(fx_write_model(tags[i], labels[i], S[i].dir, sizeof S[i].dir), 0);
        xf_server_opts_t o;
        fx_opts(&o, S[i].dir);
        xf_diag_t diag = { 0, "" };
        int rc = xf_server_start(&o, &S[i].s, &diag);
        if (rc < 0)
            print_message("# xf_server_start: %s %s\n", xf_strerror(rc), diag.msg);
        assert_int_equal(rc, 0);
        S[i].port = xf_server_port(S[i].s);
    }
    D_MODEL = xf_model_info(xf_server_model(S[0].s))->d_model;
}

/* One request; returns the response (caller hc_free's) after asserting the status. */
static hc_resp_t req(int port, const char *method, const char *path, const char *extra,
                     const char *body, int want)
{
    hc_resp_t r;
    assert_int_equal(hc_do(port, method, path, extra, body, &r), 0);
    if (r.status != want)
        print_message("# %s %s -> %d (want %d): %s\n", method, path, r.status, want, r.body);
    assert_int_equal(r.status, want);
    return r;
}

/* ---- issue 9: one table per fact ---------------------------------------------------- */

/* The in-process fixture runs what the daemon runs: xf_server_opts_init is conf.def's
 * defaults through the same mapping as xf_server_opts_from_conf, and so are the batcher's. */
static void test_defaults_from_table(void **state)
{
    (void)state;
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    xf_server_opts_t a, b;
    xf_server_opts_init(&a);
    xf_server_opts_from_conf(&c, &b);
    assert_int_equal(a.policy, c.batcher_policy);
    assert_int_equal(a.policy, XF_BATCH_TOKENS);   /* conf.def ships tokens */
    assert_int_equal(a.policy, b.policy);
    assert_int_equal(a.port, b.port);
    assert_int_equal(a.max_batch, b.max_batch);
    assert_int_equal(a.max_batch_tokens, b.max_batch_tokens);
    assert_int_equal(a.max_queue_delay_ms, b.max_queue_delay_ms);
    assert_int_equal(a.max_queued_tokens, b.max_queued_tokens);
    assert_int_equal(a.max_queue_jobs, b.max_queue_jobs);
    assert_int_equal(a.max_texts, b.max_texts);
    assert_int_equal(a.max_tokens, b.max_tokens);
    assert_int_equal(a.timeout_ms, b.timeout_ms);
    assert_int_equal(a.drain_timeout_ms, b.drain_timeout_ms);
    assert_int_equal(a.max_body_bytes, b.max_body_bytes);
    assert_int_equal(a.conn_timeout_s, b.conn_timeout_s);
    assert_int_equal(a.http_threads, b.http_threads);
    assert_string_equal(a.listen_addr, b.listen_addr);
    /* Only the process-level switches differ. */
    assert_int_equal(a.handle_signals, 0);
    assert_int_equal(b.handle_signals, 1);
    xf_batcher_opts_t bo;
    xf_batcher_opts_init(&bo);
    assert_int_equal(bo.policy, c.batcher_policy);
    assert_int_equal(bo.max_batch, c.batcher_max_batch);
    assert_int_equal(bo.max_batch_tokens, c.batcher_max_batch_tokens);
    assert_int_equal(bo.max_queue_delay_ns, (uint64_t)c.batcher_max_queue_delay_ms * 1000000u);
    assert_int_equal(bo.max_queued_tokens, c.batcher_max_queued_tokens);
    assert_int_equal(bo.max_queue_jobs, c.batcher_max_queue_jobs);
    xf_conf_deinit(&c);
}

/* Labels are the patterns without their optional group; "other" for none. */
static void test_route_labels(void **state)
{
    (void)state;
    assert_string_equal(xf_routes_label(XF_R_NONE), "other");
    assert_string_equal(xf_routes_label(XF_R_COUNT), "other");
    assert_string_equal(xf_routes_label(XF_R_INFER), "/v2/models/{m}/infer");
    assert_string_equal(xf_routes_label(XF_R_MODEL_META), "/v2/models/{m}");
    assert_string_equal(xf_routes_label(XF_R_EMBEDDINGS), "/v1/embeddings");
    assert_true(xf_routes_has_body(XF_R_EMBED));
    assert_false(xf_routes_has_body(XF_R_LIVE));
    assert_false(xf_routes_needs_auth(XF_R_READY));
    assert_true(xf_routes_needs_auth(XF_R_STATS));
    assert_true(xf_routes_while_draining(XF_R_STATS));
    assert_false(xf_routes_while_draining(XF_R_INFER));
    assert_string_equal(xf_routes_allow(XF_R_EMBED), "POST");
    assert_string_equal(xf_routes_allow(XF_R_LIVE), "GET");
}

/* Matching: the optional KServe version group, 405 with Allow, and unknown
 * paths answered in the API they resemble. */
static void test_route_match(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    hc_resp_t r = req(p, "GET", "/v2/models/xformd-demo/versions/1", NULL, NULL, 200);
    assert_non_null(strstr(r.body, "\"name\":\"xformd-demo\""));
    hc_free(&r);
    r = req(p, "GET", "/v2/models/xformd-demo/versions/1/ready", NULL, NULL, 200);
    hc_free(&r);
    r = req(p, "DELETE", "/embed", NULL, NULL, 405);
    char allow[64];
    assert_non_null(hc_header(&r, "Allow", allow, sizeof allow));
    assert_string_equal(allow, "POST");
    assert_non_null(strstr(r.body, "\"error_type\""));   /* TEI shape */
    hc_free(&r);
    /* Unknown: /v1/... is OpenAI's namespace, /v2/... KServe's, the rest ours. */
    r = req(p, "GET", "/v1/nope", NULL, NULL, 404);
    assert_non_null(strstr(r.body, "\"type\":\"invalid_request_error\""));
    hc_free(&r);
    r = req(p, "GET", "/v2/nope", NULL, NULL, 404);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_true(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    hc_free(&r);
    r = req(p, "GET", "/pancake", NULL, NULL, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));
    hc_free(&r);
    /* A model name longer than the buffer is no route, not a truncated match. */
    char longp[400] = "/v2/models/";
    memset(longp + 11, 'm', 300);
    longp[311] = '\0';
    r = req(p, "GET", longp, NULL, NULL, 404);
    hc_free(&r);
}

static void test_stop(void **state)
{
    (void)state;
    for (int i = 0; i < SRV_N; i++) {
        if (!S[i].s)
            continue;
        xf_server_drain(S[i].s);
        assert_int_equal(xf_server_wait(S[i].s), 0);
        xf_server_free(S[i].s);
        S[i].s = NULL;
        xf_test_rmtree(S[i].dir);
    }
}

XF_TEST_MAIN(cmocka_unit_test(test_defaults_from_table), cmocka_unit_test(test_route_labels),
             cmocka_unit_test(test_route_match), cmocka_unit_test(test_stop))
