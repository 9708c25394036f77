/* Transformer-XL sessions over HTTP (issue 11) on the real daemon in process: segments through
 * a session equal the engine run in process with one memory (the in-process store and a Redis
 * store), GET/DELETE, id validation, bad bodies, session.max_bytes (413, nothing stored),
 * per-session ordering under concurrent requests, TTL expiry, a corrupted stored blob → reset,
 * Redis killed and restarted mid-session
 * (503 + Retry-After only, then recovery), a refused AUTH/SELECT (down, not up) and an ACL
 * user, a key of another Redis type (reset), a write not answered in time (reported as maybe
 * stored), a long model name (keys never cut), two servers racing on one session through Redis
 * (409, no lost or duplicated segment), isolation between API keys, and two replicas behind
 * nginx round robin. The Redis tests start redis-server (and nginx) themselves on free loopback
 * ports and skip when they are not installed. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xformd/state.h>
#include <xformd/txl.h>
#include <xformd/xformd.h>

#include "server/metrics.h"
#include "server/server.h"
#include "server/workers.h"
#include "server/session_store.h"
#include "server/session_store.h"
#include "server_fixture.h"
#include "xf_test.h"

static char g_bert[4096], g_txl[4096];

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    xf_txl_demo_opts_t o;
    xf_diag_t diag = { 0 };

    (void)state;
    if (fx_write_model("sess-bert", 0, g_bert, sizeof g_bert) < 0)
        return -1;
    if (!xf_test_tmpdir(g_txl, sizeof g_txl, "sess-txl"))
        return -1;
    xf_txl_demo_opts_init(&o);
    return xf_txl_demo_write(g_txl, &o, &diag);
}

static int teardown(void **state)
{
    (void)state;
    xf_test_rmtree(g_bert);
    xf_test_rmtree(g_txl);
    return 0;
}

static xf_server_t *start_server_model(const char *txl, const char *redis_url,
                                       const char *api_key, int ttl_s)
{
    xf_server_opts_t o;

    fx_opts(&o, g_bert);
    o.warmup = 0;
    o.session_model = txl;
    o.redis_url = redis_url;
    o.api_key = api_key;
    o.session_timeout_ms = 300;
    if (ttl_s)
        o.session_ttl_s = ttl_s;
    return fx_start_opts(&o);
}

static xf_server_t *start_server(const char *redis_url, const char *api_key, int ttl_s)
{
    return start_server_model(g_txl, redis_url, api_key, ttl_s);
}

/* The in-process store with byte limits: session.store_max_bytes (store_max) and
 * session.max_bytes (one blob, max); 0 leaves a limit at its default. */
static xf_server_t *start_server_bytes(int64_t store_max, int64_t max)
{
    xf_server_opts_t o;

    fx_opts(&o, g_bert);
    o.warmup = 0;
    o.session_model = g_txl;
    if (store_max)
        o.session_store_max_bytes = store_max;
    if (max)
        o.session_max_bytes = max;
    return fx_start_opts(&o);
}

static const int32_t SEGS[3][9] = { { 3, 150, 7, 250, 0, 12, 199 },
                                    { 201, 2, 99, 100, 45, 299, 0, 1, 160 },
                                    { 17, 230, 5, 120, 8 } };
static const int SEGN[3] = { 7, 9, 5 };

/* The body of segment k into buf (thread-safe form). */
static char *ids_body_r(int k, const char *extra, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "{\"input\":[");
    for (int i = 0; i < SEGN[k]; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%d" : "%d", SEGS[k][i]);
    snprintf(buf + n, cap - n, "]%s}", extra ? extra : "");
    return buf;
}

static char *ids_body(int k, const char *extra)
{
    static char buf[512];
    return ids_body_r(k, extra, buf, sizeof buf);
}

/* The engine in process over the same segments (the reference of the server path). */
typedef struct ref {
    xf_txl_t *m;
    xf_txl_mem_t *mem;
} ref_t;

static void ref_open(ref_t *r)
{
    xf_diag_t diag = { 0 };
    assert_int_equal(xf_txl_load(g_txl, NULL, &r->m, &diag), 0);
    assert_int_equal(xf_txl_mem_create(r->m, XF_TXL_INIT_EMPTY, &r->mem), 0);
}

static void ref_close(ref_t *r)
{
    xf_txl_mem_free(r->mem);
    xf_txl_free(r->m);
}

/* POST segment k to session id; compare with the engine's next segment on r. */
static void post_and_check(int port, const char *id, const char *extra_hdr, int k, ref_t *r,
                           int want_segments)
{
    char path[256];
    json_t *j, *lp;
    xf_txl_result_t res = { 0 };
    double maxerr = 0;

    snprintf(path, sizeof path, "/v1/sessions/%s/segments", id);
    j = fx_json(port, "POST", path, extra_hdr, ids_body(k, ",\"return\":[\"logprobs\","
                                                          "\"pooled\"]"), 200);
    assert_non_null(j);
    assert_int_equal(xf_txl_run(r->m, r->mem, SEGS[k], SEGN[k], XF_TXL_OUT_POOLED, &res, NULL),
                     0);
    lp = json_object_get(j, "logprobs");
    assert_int_equal(json_array_size(lp), SEGN[k]);
    for (int t = 0; t < SEGN[k]; t++) {
        json_t *v = json_array_get(lp, (size_t)t);
        if (isnan(res.logprobs[t]))
            assert_true(json_is_null(v));
        else
            maxerr = fmax(maxerr, fabs(json_number_value(v) - res.logprobs[t]));
    }
    for (int c = 0; c < 32; c++)
        maxerr = fmax(maxerr, fabs(json_number_value(json_array_get(json_object_get(j, "pooled"),
                                                                    (size_t)c)) -
                                   res.pooled[c]));
    /* f32 blobs round-trip exactly and the server runs the same engine: equal up to the
     * JSON float printing (%.9g of a float is exact) */
    assert_true(maxerr <= 1e-6);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), want_segments);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "next"), "id")),
                     res.next_id);
    {
        xf_txl_mem_stats_t st;
        xf_txl_mem_stats(r->mem, &st);
        assert_int_equal(json_integer_value(json_object_get(j, "memory_rows")), st.rows);
        assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")), st.tokens);
    }
    assert_true(json_is_false(json_object_get(j, "reset")));
    assert_true(json_is_boolean(json_object_get(j, "created")));
    json_decref(j);
    xf_txl_result_deinit(&res);
}

static void run_stream(int port, const char *id, const char *hdr)
{
    ref_t r;
    ref_open(&r);
    for (int k = 0; k < 3; k++)
        post_and_check(port, id, hdr, k, &r, k + 1);
    ref_close(&r);
}

/* ---- in-process store ------------------------------------------------------------------ */

static void test_local_stream(void **state)
{
    xf_server_t *s = start_server(NULL, NULL, 0);
    int port = xf_server_port(s);
    json_t *j;
    ref_t a, b;

    (void)state;
    run_stream(port, "s1", NULL);
    /* two sessions interleaved = each alone */
    ref_open(&a);
    ref_open(&b);
    for (int k = 0; k < 3; k++) {
        post_and_check(port, "x.A-1:z", NULL, k, &a, k + 1);
        post_and_check(port, "x.A-2_z", NULL, 2 - k, &b, k + 1);
    }
    ref_close(&a);
    ref_close(&b);
    j = fx_json(port, "GET", "/v1/sessions/s1", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")), 21);
    assert_int_equal(json_integer_value(json_object_get(j, "memory_rows")), 16);
    assert_string_equal(json_string_value(json_object_get(j, "dtype")), "f32");
    assert_true(json_integer_value(json_object_get(j, "ttl_s")) > 0);
    json_decref(j);
    json_decref(fx_json(port, "DELETE", "/v1/sessions/s1", NULL, NULL, 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/s1", NULL, NULL, 404));
    json_decref(fx_json(port, "DELETE", "/v1/sessions/s1", NULL, NULL, 404));
    /* after DELETE the session starts again */
    run_stream(port, "s1", NULL);
    /* text input, with <eos> */
    j = fx_json(port, "POST", "/v1/sessions/t/segments", NULL,
                "{\"input\":\"The of zzz\",\"add_eos\":true,\"return\":[\"hidden\"]}", 200);
    assert_int_equal(json_integer_value(json_object_get(j, "n_tokens")), 4);
    assert_null(json_object_get(j, "logprobs"));
    assert_int_equal(json_array_size(json_object_get(j, "hidden")), 4);
    assert_true(json_is_true(json_object_get(j, "created")));
    json_decref(j);
    {
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(xf_metrics_render(&text, &len), 0);
        assert_true(fx_metric(text, "xformd_redis_hits_total") >= 8);
        assert_true(fx_metric(text, "xformd_redis_misses_total") >= 4);
        free(text);
    }
    xf_server_stop(s);
}

static void test_local_bad_requests(void **state)
{
    xf_server_t *s = start_server(NULL, NULL, 0);
    int port = xf_server_port(s);
    char path[512];
    hc_resp_t r;

    (void)state;
    memset(path, 0, sizeof path);
    strcpy(path, "/v1/sessions/");
    memset(path + 13, 'a', 129);
    strcat(path, "/segments");
    json_decref(fx_json(port, "POST", path, NULL, ids_body(0, NULL), 400));
    path[13 + 128] = '\0';          /* 128 bytes is fine */
    strcat(path, "/segments");
    json_decref(fx_json(port, "POST", path, NULL, ids_body(0, NULL), 200));
    json_decref(fx_json(port, "POST", "/v1/sessions//segments", NULL, ids_body(0, NULL), 400));
    /* the error names the id's rule, not a method (it once said "method POST not allowed") */
    assert_int_equal(hc_do(port, "POST", "/v1/sessions/a%20b/segments", NULL,
                           ids_body(0, NULL), &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"invalid_session_id\""));
    assert_non_null(strstr(r.body, "1-128 bytes of [A-Za-z0-9._:-]"));
    hc_free(&r);
    json_decref(fx_json(port, "POST", "/v1/sessions/a%2Fb/segments", NULL, ids_body(0, NULL),
                        404));
    json_decref(fx_json(port, "POST", "/v1/sessions/a$b/segments", NULL, ids_body(0, NULL),
                        400));
    json_decref(fx_json(port, "GET", "/v1/sessions/a/segments", NULL, NULL, 405));
    json_decref(fx_json(port, "POST", "/v1/sessions/a", NULL, "{}", 405));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/other", NULL, "{}", 404));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL, "{}", 400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL, "{\"input\":[]}", 400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL, "{\"input\":[1,300]}",
                        400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL, "{\"input\":[1,-1]}",
                        400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL, "{\"input\":7}", 400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL,
                        "{\"input\":[1],\"return\":[\"bogus\"]}", 400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL, "{\"input\":", 400));
    json_decref(fx_json(port, "POST", "/v1/sessions/a/segments", NULL,
                        "{\"input\":\"a\\u0000b\"}", 400));
    /* none of these created the session */
    json_decref(fx_json(port, "GET", "/v1/sessions/a", NULL, NULL, 404));
    /* stateless routes are untouched */
    assert_int_equal(hc_do(port, "POST", "/embed", NULL, "{\"inputs\":\"hello\"}", &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    xf_server_stop(s);
}

typedef struct racer {
    int port;
    const char *id;
    int k;
    int status;
    long long segments;
} racer_t;

static void *race(void *p)
{
    racer_t *rc = p;
    char path[128], body[512];
    hc_resp_t r;

    snprintf(path, sizeof path, "/v1/sessions/%s/segments", rc->id);
    if (hc_do(rc->port, "POST", path, NULL, ids_body_r(rc->k, NULL, body, sizeof body),
              &r) == 0) {
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        rc->status = r.status;
        rc->segments = j ? json_integer_value(json_object_get(j, "segments")) : -1;
        json_decref(j);
        hc_free(&r);
    }
    return NULL;
}

/* n concurrent segments on one session: every one is answered, each sees a distinct segment
 * number (one at a time, none lost or duplicated). ports: one or two servers. */
static int run_race(const int *ports, int nports, const char *id, int n, int *n409)
{
    pthread_t th[16];
    racer_t rc[16];
    int seen[17] = { 0 }, ok = 0;

    for (int i = 0; i < n; i++) {
        rc[i] = (racer_t){ ports[i % nports], id, i % 3, 0, -1 };
        pthread_create(&th[i], NULL, race, &rc[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    *n409 = 0;
    for (int i = 0; i < n; i++) {
        if (rc[i].status == 409) {
            (*n409)++;
            continue;
        }
        assert_int_equal(rc[i].status, 200);
        assert_true(rc[i].segments >= 1 && rc[i].segments <= n);
        assert_int_equal(seen[rc[i].segments], 0);
        seen[rc[i].segments] = 1;
        ok++;
    }
    return ok;
}

static void test_local_ordering_and_ttl(void **state)
{
    xf_server_t *s = start_server(NULL, NULL, 1);
    int port = xf_server_port(s), n409, ok;
    json_t *j;

    (void)state;
    ok = run_race(&port, 1, "race", 12, &n409);
    assert_int_equal(n409, 0);     /* one process: the per-session FIFO serialises them */
    assert_int_equal(ok, 12);
    j = fx_json(port, "GET", "/v1/sessions/race", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 12);
    json_decref(j);
    /* session.ttl_s = 1: gone after it (bounded wait, no timing asserted) */
    for (int i = 0; i < 40; i++) {
        hc_resp_t r;
        sleep_ms(100);
        assert_int_equal(hc_do(port, "GET", "/v1/sessions/race", NULL, NULL, &r), 0);
        hc_free(&r);
        if (r.status == 404)
            break;
        assert_int_equal(r.status, 200);
        assert_true(i < 39);
    }
    xf_server_stop(s);
}

/* A session model whose name (its directory's basename) is 240 bytes: the key
 * xformd:{model}:{id} of a 128-byte id was cut at 319 bytes, so two ids differing in their last
 * bytes were one session (the second saw the first's segments). */
static void test_local_long_model_name(void **state)
{
    char dir[8192], id_a[160], id_b[160], path[9000];
    xf_txl_demo_opts_t o;
    xf_diag_t diag = { 0 };
    xf_server_t *s;
    json_t *j;
    size_t n;
    int port;

    (void)state;
    snprintf(dir, sizeof dir, "%s/", g_txl);
    n = strlen(dir);
    memset(dir + n, 'm', 240);
    dir[n + 240] = '\0';
    assert_int_equal(mkdir(dir, 0700), 0);
    xf_txl_demo_opts_init(&o);
    assert_int_equal(xf_txl_demo_write(dir, &o, &diag), 0);
    memset(id_a, 'i', 127);
    id_a[127] = 'A';
    id_a[128] = '\0';
    memcpy(id_b, id_a, sizeof id_a);
    id_b[127] = 'B';
    s = start_server_model(dir, NULL, NULL, 0);
    port = xf_server_port(s);
    snprintf(path, sizeof path, "/v1/sessions/%s/segments", id_a);
    j = fx_json(port, "POST", path, NULL, ids_body(0, NULL), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    json_decref(j);
    snprintf(path, sizeof path, "/v1/sessions/%s", id_b);
    j = fx_json(port, "GET", path, NULL, NULL, 404);   /* another session: none yet */
    json_decref(j);
    snprintf(path, sizeof path, "/v1/sessions/%s/segments", id_b);
    j = fx_json(port, "POST", path, NULL, ids_body(0, NULL), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    assert_true(json_is_true(json_object_get(j, "created")));
    json_decref(j);
    xf_server_stop(s);
    xf_test_rmtree(dir);
}

static char *kserve_body(int k, const char *params)
{
    static char buf[768];
    size_t n = (size_t)snprintf(buf, sizeof buf, "{\"id\":\"r%d\",\"inputs\":[{\"name\":"
                                "\"input_ids\",\"datatype\":\"INT64\",\"shape\":[%d],"
                                "\"data\":[", k, SEGN[k]);
    for (int i = 0; i < SEGN[k]; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, i ? ",%d" : "%d", SEGS[k][i]);
    snprintf(buf + n, sizeof buf - n, "]}],\"parameters\":{%s}}", params);
    return buf;
}

/* KServe v2 infer on the Transformer-XL model with Triton's sequence parameters. */
static void test_local_kserve(void **state)
{
    xf_server_t *s = start_server(NULL, NULL, 0);
    int port = xf_server_port(s);
    char path[256];
    ref_t ref;
    json_t *j;

    (void)state;
    snprintf(path, sizeof path, "/v2/models/%s/infer", strrchr(g_txl, '/') + 1);
    ref_open(&ref);
    for (int k = 0; k < 3; k++) {
        xf_txl_result_t res = { 0 };
        json_t *out, *par;
        double err = 0;
        j = fx_json(port, "POST", path, NULL,
                    kserve_body(k, k == 0 ? "\"sequence_id\":42,\"sequence_start\":true"
                                          : "\"sequence_id\":42"), 200);
        assert_int_equal(xf_txl_run(ref.m, ref.mem, SEGS[k], SEGN[k], 0, &res, NULL), 0);
        out = json_array_get(json_object_get(j, "outputs"), 0);
        assert_string_equal(json_string_value(json_object_get(out, "name")), "logprobs");
        for (int t = 0; t < SEGN[k]; t++)
            if (!isnan(res.logprobs[t]))
                err = fmax(err, fabs(json_number_value(json_array_get(
                                         json_object_get(out, "data"), (size_t)t)) -
                                     res.logprobs[t]));
        assert_true(err <= 1e-6);
        par = json_object_get(j, "parameters");
        assert_int_equal(json_integer_value(json_object_get(par, "segments")), k + 1);
        assert_true(json_is_boolean(json_object_get(par, "first_token_scored")));
        assert_int_equal(json_is_true(json_object_get(par, "first_token_scored")), k > 0);
        assert_string_equal(json_string_value(json_object_get(j, "id")), k == 0 ? "r0"
                                                                        : k == 1 ? "r1" : "r2");
        json_decref(j);
        xf_txl_result_deinit(&res);
    }
    ref_close(&ref);
    /* the same session through the REST route */
    j = fx_json(port, "GET", "/v1/sessions/42", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 3);
    json_decref(j);
    /* sequence_start restarts it; sequence_end releases it */
    j = fx_json(port, "POST", path, NULL,
                kserve_body(0, "\"sequence_id\":42,\"sequence_start\":true"), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "parameters"),
                                                        "segments")), 1);
    json_decref(j);
    json_decref(fx_json(port, "POST", path, NULL,
                        kserve_body(1, "\"sequence_id\":42,\"sequence_end\":true"), 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/42", NULL, NULL, 404));
    /* errors in KServe shape */
    j = fx_json(port, "POST", path, NULL, kserve_body(0, ""), 400);
    assert_true(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    json_decref(fx_json(port, "POST", path, NULL, kserve_body(0, "\"sequence_id\":\"a b\""),
                        400));
    json_decref(fx_json(port, "POST", path, NULL, kserve_body(0, "\"sequence_id\":-3"), 400));
    /* 0 is Triton's "no sequence" id: refused, as Triton refuses it for a sequence model */
    json_decref(fx_json(port, "POST", path, NULL, kserve_body(0, "\"sequence_id\":0"), 400));
    json_decref(fx_json(port, "POST", path, NULL, kserve_body(0, "\"sequence_id\":\"\""), 400));
    /* the encoder is still served under its own name */
    json_decref(fx_json(port, "POST", "/v2/models/xformd-demo/infer", NULL,
                        "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\","
                        "\"shape\":[1],\"data\":[\"hello\"]}]}", 200));
    xf_server_stop(s);
}

/* A segment still computing when its deadline passes is stopped between layers: 504
 * compute_deadline_exceeded, nothing stored (the session keeps its segments, tokens and
 * memory: the next segment equals the engine run without the stopped one). A 6-layer model and
 * a 4,000-token segment (~0.3-1 s per layer of O(n²) attention here) against timeout_ms 300:
 * even a fast machine passes the deadline before the last layer, and the stop check runs
 * before every layer, so the request ends about one layer after its deadline. */
static void test_local_compute_deadline(void **state)
{
    xf_txl_demo_opts_t o;
    xf_diag_t diag = { 0 };
    char dir[4096], *big;
    xf_server_t *s;
    int port;
    hc_resp_t r;
    size_t len = 0, cap = 64 + 4000 * 5;
    ref_t ref;
    xf_txl_result_t res = { 0 };
    json_t *j, *lp;
    double err = 0;

    (void)state;
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "sess-txl6"));
    xf_txl_demo_opts_init(&o);
    o.n_layer = 6;
    assert_int_equal(xf_txl_demo_write(dir, &o, &diag), 0);
    s = start_server_model(dir, NULL, NULL, 0);
    port = xf_server_port(s);
    json_decref(fx_json(port, "POST", "/v1/sessions/dl/segments", NULL, ids_body(0, NULL), 200));
    big = malloc(cap);
    assert_non_null(big);
    len += (size_t)snprintf(big, cap, "{\"timeout_ms\":300,\"input\":[");
    for (int i = 0; i < 4000; i++)
        len += (size_t)snprintf(big + len, cap - len, i ? ",%d" : "%d", (i * 7) % 300);
    snprintf(big + len, cap - len, "]}");
    assert_int_equal(hc_do(port, "POST", "/v1/sessions/dl/segments", NULL, big, &r), 0);
    if (r.status != 504)
        print_message("# %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 504);
    assert_non_null(strstr(r.body, "compute_deadline_exceeded"));
    assert_non_null(strstr(r.body, "not advanced"));
    hc_free(&r);
    assert_true(xf_metric_value(XF_M_rejected_total, "stopped", NULL) >= 1);
    j = fx_json(port, "GET", "/v1/sessions/dl", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")), SEGN[0]);
    json_decref(j);
    /* the next segment continues from segment 0's memory */
    j = fx_json(port, "POST", "/v1/sessions/dl/segments", NULL, ids_body(1, NULL), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 2);
    assert_int_equal(xf_txl_load(dir, NULL, &ref.m, &diag), 0);
    assert_int_equal(xf_txl_mem_create(ref.m, XF_TXL_INIT_EMPTY, &ref.mem), 0);
    assert_int_equal(xf_txl_run(ref.m, ref.mem, SEGS[0], SEGN[0], 0, &res, NULL), 0);
    xf_txl_result_deinit(&res);
    assert_int_equal(xf_txl_run(ref.m, ref.mem, SEGS[1], SEGN[1], 0, &res, NULL), 0);
    lp = json_object_get(j, "logprobs");
    for (int t = 0; t < SEGN[1]; t++)
        err = fmax(err, fabs(json_number_value(json_array_get(lp, (size_t)t)) -
                             res.logprobs[t]));
    assert_true(err <= 1e-6);   /* the same f32 computation, printed with %.9g */
    xf_txl_result_deinit(&res);
    ref_close(&ref);
    json_decref(j);
    /* timeout_ms out of range is a 400 naming the bound */
    j = fx_json(port, "POST", "/v1/sessions/dl/segments", NULL,
                "{\"input\":[1,2],\"timeout_ms\":0}", 400);
    json_decref(j);
    free(big);
    xf_server_stop(s);
    xf_test_rmtree(dir);
}

/* ---- the in-process store bounded by bytes ---------------------------------------------- */

typedef struct sres {
    int rc;
    size_t len;
    uint8_t first;
    char tag[XF_SSTORE_TAG_MAX];
    size_t tag_len;
} sres_t;

static void s_get_cb(void *user, int rc, const uint8_t *blob, size_t len, const char *tag,
                     size_t tag_len, int64_t ttl_ms)
{
    sres_t *r = user;
    (void)ttl_ms;
    r->rc = rc;
    r->len = len;
    r->first = blob && len ? blob[0] : 0;
    r->tag_len = tag_len < sizeof r->tag ? tag_len : sizeof r->tag;
    memcpy(r->tag, tag, r->tag_len);
}

static void s_put_cb(void *user, int rc)
{
    ((sres_t *)user)->rc = rc;
}

static sres_t s_get(xf_sstore_t *st, const char *key)
{
    sres_t r = { .rc = 99 };
    st->vt->get(st, key, s_get_cb, &r);   /* in process: the callback runs before return */
    return r;
}

/* Read key's tag, then write len bytes of value v with it (as a segment does). */
static int s_put(xf_sstore_t *st, const char *key, size_t len, uint8_t v)
{
    sres_t g = s_get(st, key), r = { .rc = 99 };
    uint8_t *b = malloc(len);

    assert_non_null(b);
    memset(b, v, len);
    st->vt->put(st, key, b, len, g.tag, g.rc == 0 ? g.tag_len : 0, 0, s_put_cb, &r);
    free(b);
    return r.rc;
}

/* session.store_max_bytes: a put that takes the total over the bound drops the least recently
 * used other entries (a read counts as a use); a blob larger than the bound alone is refused
 * (-ENOSPC) and the stored one kept; replacing an entry accounts its new size. */
static void test_local_store_bytes(void **state)
{
    xf_sstore_t *st = NULL;

    (void)state;
    assert_int_equal(xf_sstore_local_create(100, 10000, &st), 0);
    assert_int_equal(s_put(st, "a", 4000, 'a'), 0);
    assert_int_equal(s_put(st, "b", 4000, 'b'), 0);
    assert_int_equal(xf_metric_value(XF_M_session_store_bytes, NULL, NULL), 8000);
    assert_int_equal(s_get(st, "a").rc, 0);          /* a is now more recent than b */
    assert_int_equal(s_put(st, "c", 4000, 'c'), 0);  /* 12000 > 10000: b goes */
    assert_int_equal(s_get(st, "b").rc, XF_ENOTFOUND);
    assert_int_equal(s_get(st, "a").len, 4000);
    assert_int_equal(s_get(st, "c").first, 'c');
    assert_int_equal(xf_metric_value(XF_M_session_store_bytes, NULL, NULL), 8000);
    assert_int_equal(s_put(st, "d", 10001, 'd'), -ENOSPC);
    assert_int_equal(s_get(st, "d").rc, XF_ENOTFOUND);
    assert_int_equal(s_put(st, "a", 10001, 'x'), -ENOSPC);   /* a keeps its blob */
    assert_int_equal(s_get(st, "a").first, 'a');
    assert_int_equal(s_get(st, "a").len, 4000);
    /* growing c to 9000 pushes a (the older one) out; shrinking it makes room again */
    assert_int_equal(s_put(st, "c", 9000, 'C'), 0);
    assert_int_equal(s_get(st, "a").rc, XF_ENOTFOUND);
    assert_int_equal(xf_metric_value(XF_M_session_store_bytes, NULL, NULL), 9000);
    assert_int_equal(s_put(st, "c", 100, 'c'), 0);
    assert_int_equal(s_put(st, "e", 9900, 'e'), 0);
    assert_int_equal(s_get(st, "c").len, 100);
    assert_int_equal(xf_metric_value(XF_M_session_store_bytes, NULL, NULL), 10000);
    st->vt->free(st);
    assert_int_equal(xf_metric_value(XF_M_session_store_bytes, NULL, NULL), 0);
    /* the count bound still holds with a large byte bound */
    assert_int_equal(xf_sstore_local_create(2, 1u << 30, &st), 0);
    assert_int_equal(s_put(st, "a", 10, 'a'), 0);
    assert_int_equal(s_put(st, "b", 10, 'b'), 0);
    assert_int_equal(s_put(st, "c", 10, 'c'), 0);
    assert_int_equal(s_get(st, "a").rc, XF_ENOTFOUND);
    assert_int_equal(s_get(st, "b").rc, 0);
    st->vt->free(st);
}

/* Through the server: with room for two of the test model's blobs, a third session evicts the
 * least recently used one (its GET is 404, a new segment starts it again), and a segment whose
 * blob alone exceeds the bound is 413 with the session left as it was. */
static void test_local_store_bytes_server(void **state)
{
    xf_server_t *s;
    int port;
    json_t *j;
    int64_t b1;

    (void)state;
    /* after segment 0 (7 tokens): (2 layers x 7 rows + boundary) x 32 x 4 + 128 = 2048 bytes;
     * after segment 1 (16 rows): 4352 bytes. 4096 holds two first segments, not three. */
    s = start_server_bytes(4096, 0);
    port = xf_server_port(s);
    j = fx_json(port, "POST", "/v1/sessions/s1/segments", NULL, ids_body(0, NULL), 200);
    b1 = json_integer_value(json_object_get(j, "memory_bytes"));
    assert_int_equal(b1, 2048);
    json_decref(j);
    json_decref(fx_json(port, "POST", "/v1/sessions/s2/segments", NULL, ids_body(0, NULL), 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/s1", NULL, NULL, 200));   /* s1 recent */
    json_decref(fx_json(port, "POST", "/v1/sessions/s3/segments", NULL, ids_body(0, NULL), 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/s2", NULL, NULL, 404));
    json_decref(fx_json(port, "GET", "/v1/sessions/s1", NULL, NULL, 200));
    assert_int_equal(xf_metric_value(XF_M_session_store_bytes, NULL, NULL), 4096);
    /* s1's second segment would need 4352 bytes: 413, s1 unchanged */
    j = fx_json(port, "POST", "/v1/sessions/s1/segments", NULL, ids_body(1, NULL), 413);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
                                                             "message")),
                           "session.store_max_bytes"));
    json_decref(j);
    j = fx_json(port, "GET", "/v1/sessions/s1", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    json_decref(j);
    xf_server_stop(s);
}

/* session.max_bytes: a segment whose new memory blob would exceed it is 413 too_many_tokens
 * naming the option, and nothing is stored: the session keeps the memory of the segment before
 * (a later, smaller segment continues from it exactly as the engine in process does), on the
 * session routes and through KServe infer with sequence_id; a sequence_end segment stores
 * nothing, so the limit does not refuse it. */
static void test_local_session_max_bytes(void **state)
{
    xf_server_t *s;
    const char *name = strrchr(g_txl, '/') + 1;
    char path[512];
    int port;
    json_t *j, *e;
    ref_t r;

    (void)state;
    /* blob = (2 layers x rows + boundary) x 32 x 4 + 128 bytes (test_local_store_bytes_server):
     * segment 0 (7 rows) 2048, then segment 1 (16 rows) 4352, or segment 2 (12 rows) 3328.
     * 4096 takes 0 then 2, not 0 then 1. */
    s = start_server_bytes(0, 4096);
    port = xf_server_port(s);
    ref_open(&r);
    post_and_check(port, "m1", NULL, 0, &r, 1);
    j = fx_json(port, "POST", "/v1/sessions/m1/segments", NULL, ids_body(1, NULL), 413);
    e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "too_many_tokens");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")),
                           "4352 bytes exceeds session.max_bytes (4096)"));
    json_decref(j);
    j = fx_json(port, "GET", "/v1/sessions/m1", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")), 7);
    assert_int_equal(json_integer_value(json_object_get(j, "memory_bytes")), 2048);
    json_decref(j);
    /* the refused segment left no trace: segment 2 continues from segment 0's memory */
    post_and_check(port, "m1", NULL, 2, &r, 2);
    ref_close(&r);
    /* KServe infer with sequence_id: the same limit, KServe's error shape */
    json_decref(fx_json(port, "POST", "/v1/sessions/m2/segments", NULL, ids_body(0, NULL), 200));
    snprintf(path, sizeof path, "/v2/models/%s/infer", name);
    j = fx_json(port, "POST", path, NULL, kserve_body(1, "\"sequence_id\":\"m2\""), 413);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "session.max_bytes"));
    json_decref(j);
    j = fx_json(port, "GET", "/v1/sessions/m2", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    json_decref(j);
    /* sequence_end releases the memory instead of storing it: the limit does not apply */
    j = fx_json(port, "POST", path, NULL, kserve_body(1, "\"sequence_id\":\"m2\","
                                                         "\"sequence_end\":true"), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "parameters"),
                                                        "segments")), 2);
    json_decref(j);
    json_decref(fx_json(port, "GET", "/v1/sessions/m2", NULL, NULL, 404));
    xf_server_stop(s);
}

/* The session model is a KServe v2 / OpenAI model like the encoder: metadata, ready (also by
 * version), the /v1/models listing; other versions and names are 404. */
static void test_local_model_metadata(void **state)
{
    xf_server_t *s = start_server(NULL, NULL, 0);
    int port = xf_server_port(s);
    const char *name = strrchr(g_txl, '/') + 1;
    char path[512];
    json_t *j, *p, *outs, *data;
    int seen = 0;

    (void)state;
    snprintf(path, sizeof path, "/v2/models/%s", name);
    j = fx_json(port, "GET", path, NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "name")), name);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "versions"), 0)),
                        "1");
    outs = json_object_get(j, "outputs");
    assert_int_equal(json_array_size(outs), 4);
    for (size_t i = 0; i < json_array_size(outs); i++) {
        const char *o = json_string_value(json_object_get(json_array_get(outs, i), "name"));
        static const char *const want[] = { "logprobs", "next_token", "pooled", "hidden" };
        for (int k = 0; k < 4; k++)
            if (!strcmp(o, want[k]))
                seen |= 1 << k;
    }
    assert_int_equal(seen, 15);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(json_array_get(outs, 2),
                                                                       "shape"), 1)), 32);
    p = json_object_get(j, "parameters");
    assert_string_equal(json_string_value(json_object_get(p, "architecture")), "transfo-xl");
    assert_int_equal(json_integer_value(json_object_get(p, "mem_len")), 16);
    assert_int_equal(json_integer_value(json_object_get(p, "d_model")), 32);
    assert_int_equal(json_integer_value(json_object_get(p, "vocab_size")), 300);
    assert_string_equal(json_string_value(json_object_get(p, "session_store")), "memory");
    assert_true(json_is_true(json_object_get(p, "sequence_batching")));
    json_decref(j);
    snprintf(path, sizeof path, "/v2/models/%s/versions/1", name);
    json_decref(fx_json(port, "GET", path, NULL, NULL, 200));
    snprintf(path, sizeof path, "/v2/models/%s/ready", name);
    j = fx_json(port, "GET", path, NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "name")), name);
    assert_true(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    snprintf(path, sizeof path, "/v2/models/%s/versions/1/ready", name);
    json_decref(fx_json(port, "GET", path, NULL, NULL, 200));
    snprintf(path, sizeof path, "/v2/models/%s/versions/2/ready", name);
    j = fx_json(port, "GET", path, NULL, NULL, 404);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "only version"));
    json_decref(j);
    snprintf(path, sizeof path, "/v2/models/%s/versions/2/infer", name);
    json_decref(fx_json(port, "POST", path, NULL, "{}", 404));
    /* an unknown name lists both served models */
    j = fx_json(port, "GET", "/v2/models/nope/ready", NULL, NULL, 404);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), name));
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "xformd-demo"));
    json_decref(j);
    /* the encoder's metadata is unchanged */
    j = fx_json(port, "GET", "/v2/models/xformd-demo", NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
                            json_object_get(j, "outputs"), 0), "name")), "embedding");
    json_decref(j);
    /* OpenAI: listed after the encoder, and retrievable */
    j = fx_json(port, "GET", "/v1/models", NULL, NULL, 200);
    data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(data, 0), "id")),
                        "xformd-demo");
    assert_string_equal(json_string_value(json_object_get(json_array_get(data, 1), "id")), name);
    json_decref(j);
    snprintf(path, sizeof path, "/v1/models/%s", name);
    j = fx_json(port, "GET", path, NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "id")), name);
    json_decref(j);
    json_decref(fx_json(port, "GET", "/v1/models/nope", NULL, NULL, 404));
    xf_server_stop(s);
}

/* ---- encoders whose model attention keeps state (txl, compressive) --------------------- */

#define ENC_TXL "{\"variant\":\"txl\",\"mem_len\":8}"
#define ENC_CMP "{\"variant\":\"compressive\",\"mem_len\":4,\"cmem_len\":4,\"rate\":3}"

/* A server for the encoder g_bert with model attention attn (NULL: dense) and, when txl is
 * set, the Transformer-XL session model too; dtype 0 f32, 1 f16, 2 bf16. */
static xf_server_t *start_enc(const char *attn, const char *txl, const char *redis_url,
                              int dtype)
{
    xf_server_opts_t o;

    fx_opts(&o, g_bert);
    o.warmup = 0;
    o.attention = attn;
    o.session_model = txl;
    o.redis_url = redis_url;
    o.session_timeout_ms = 300;
    o.session_dtype = dtype;
    return fx_start_opts(&o);
}

/* The engine in process: the same model and attention, one state kept across segments. */
typedef struct eref {
    xf_model_t *m;
    xf_state_def_t *d;
    xf_state_t *st;
    xf_ctx_t *c;
} eref_t;

static void eref_open(eref_t *r, const char *attn)
{
    xf_load_opts_t lo = { .attention = attn };
    xf_ctx_opts_t co = { .n_threads = 1 };
    xf_diag_t diag = { 0 };
    assert_int_equal(xf_model_load(g_bert, &lo, &r->m, &diag), 0);
    assert_int_equal(xf_state_def_create(r->m, NULL, &r->d, &diag), 0);
    assert_int_equal(xf_state_create(r->d, &r->st), 0);
    assert_int_equal(xf_ctx_create(&co, &r->c), 0);
}

static void eref_close(eref_t *r)
{
    xf_state_free(r->st);
    xf_state_def_free(r->d);
    xf_ctx_free(r->c);
    xf_model_free(r->m);
}

/* Segment k through the reference: pooled [64] and hidden [n][64] (the tiny demo model). */
static void eref_seg(eref_t *r, int k, float *pooled, float *hidden)
{
    int32_t cu[2] = { 0, SEGN[k] };
    void *st[1] = { (void *)xf_state_layers(r->st) };
    xf_batch_t b = { .n_seq = 1, .cu_len = cu, .ids = SEGS[k], .attn_state = st };
    xf_output_t out = { .pooling = XF_POOL_DEFAULT, .normalize = -1, .pooled = pooled,
                        .hidden = hidden };
    assert_int_equal(xf_run(r->c, r->m, &b, &out, NULL), 0);
}

static double json_maxdiff(json_t *a, const float *x, size_t n)
{
    double e = 0;
    assert_int_equal(json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        e = fmax(e, fabs(json_number_value(json_array_get(a, i)) - x[i]));
    return e;
}

/* POST segment k (pooled + hidden) to an encoder session; compare with the reference's next
 * segment; returns the max abs difference. */
static double enc_post_and_check(int port, const char *id, const char *extra, int k, eref_t *r,
                                 int want_segments, int want_reset)
{
    char path[256], more[256];
    float pooled[64], hidden[9 * 64];
    double e = 0;
    json_t *j, *h;
    xf_state_stats_t st;

    snprintf(path, sizeof path, "/v1/sessions/%s/segments", id);
    snprintf(more, sizeof more, ",\"return\":[\"pooled\",\"hidden\"]%s", extra ? extra : "");
    j = fx_json(port, "POST", path, NULL, ids_body(k, more), 200);
    assert_non_null(j);
    eref_seg(r, k, pooled, hidden);
    xf_state_stats(r->st, &st);
    e = json_maxdiff(json_object_get(j, "pooled"), pooled, 64);
    h = json_object_get(j, "hidden");
    assert_int_equal(json_array_size(h), SEGN[k]);
    for (int t = 0; t < SEGN[k]; t++)
        e = fmax(e, json_maxdiff(json_array_get(h, (size_t)t), hidden + t * 64, 64));
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), want_segments);
    assert_int_equal(json_integer_value(json_object_get(j, "memory_rows")), st.mem_rows);
    assert_int_equal(json_integer_value(json_object_get(j, "compressed_rows")), st.cmem_rows);
    if (!want_reset)
        assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")), st.tokens);
    assert_int_equal(json_integer_value(json_object_get(j, "n_tokens")), SEGN[k]);
    assert_true(json_is_boolean(json_object_get(j, "reset")));
    assert_int_equal(json_is_true(json_object_get(j, "reset")), want_reset);
    assert_null(json_object_get(j, "logprobs"));
    assert_true(json_integer_value(json_object_get(j, "memory_bytes")) > 128);
    json_decref(j);
    return e;
}

/* Segments A B C through a session = the engine over A B C with the state kept in process. */
static void enc_stream(int port, const char *id, const char *attn, double tol)
{
    eref_t r;
    double e = 0;
    eref_open(&r, attn);
    for (int k = 0; k < 3; k++)
        e = fmax(e, enc_post_and_check(port, id, NULL, k, &r, k + 1, 0));
    print_message("# encoder %s session %s: max |server - engine| %.3g\n", attn, id, e);
    assert_true(e <= tol);
    eref_close(&r);
}

static void test_enc_local(void **state)
{
    xf_server_t *s = start_enc(ENC_TXL, NULL, NULL, 0);
    int port = xf_server_port(s), n409, ok;
    json_t *j;
    hc_resp_t r;

    (void)state;
    enc_stream(port, "e1", ENC_TXL, 1e-5);
    j = fx_json(port, "GET", "/v1/sessions/e1", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")), 21);
    assert_int_equal(json_integer_value(json_object_get(j, "memory_rows")), 8);
    assert_string_equal(json_string_value(json_object_get(j, "dtype")), "f32");
    assert_string_equal(json_string_value(json_object_get(j, "attention")), "txl");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "xformd-demo");
    assert_true(json_is_true(json_object_get(j, "valid")));
    assert_true(json_integer_value(json_object_get(j, "ttl_s")) > 0);
    json_decref(j);
    json_decref(fx_json(port, "GET", "/v1/sessions/e1?model=xformd-demo", NULL, NULL, 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/e1?model=nope", NULL, NULL, 404));
    /* no language-model head: logprobs is a clear 400; add_eos is the TXL tokenizer's */
    assert_int_equal(hc_do(port, "POST", "/v1/sessions/e1/segments", NULL,
                           ids_body(0, ",\"return\":[\"logprobs\"]"), &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "no language-model head"));
    hc_free(&r);
    json_decref(fx_json(port, "POST", "/v1/sessions/e1/segments", NULL,
                        "{\"input\":\"hello\",\"add_eos\":true}", 400));
    json_decref(fx_json(port, "POST", "/v1/sessions/e1/segments", NULL,
                        ids_body(0, ",\"model\":\"other\""), 404));
    json_decref(fx_json(port, "POST", "/v1/sessions/e1/segments", NULL,
                        "{\"input\":[0,99999]}", 400));
    /* the failed requests left the session as it was */
    j = fx_json(port, "GET", "/v1/sessions/e1", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 3);
    json_decref(j);
    /* text: the encoder's tokenizer with its specials; pooled by default */
    j = fx_json(port, "POST", "/v1/sessions/t/segments", NULL, "{\"input\":\"hello world\"}",
                200);
    assert_true(json_integer_value(json_object_get(j, "n_tokens")) >= 3);
    assert_int_equal(json_array_size(json_object_get(j, "pooled")), 64);
    assert_null(json_object_get(j, "hidden"));
    assert_true(json_is_true(json_object_get(j, "created")));
    json_decref(j);
    /* stateless routes on the same model still answer (a fresh memory per request) */
    json_decref(fx_json(port, "POST", "/embed", NULL, "{\"inputs\":\"hello\"}", 200));
    /* per-session ordering: 12 concurrent segments get 12 distinct numbers */
    ok = run_race(&port, 1, "race", 12, &n409);
    assert_int_equal(n409, 0);
    assert_int_equal(ok, 12);
    json_decref(fx_json(port, "DELETE", "/v1/sessions/e1", NULL, NULL, 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/e1", NULL, NULL, 404));
    enc_stream(port, "e1", ENC_TXL, 1e-5);   /* starts again after DELETE */
    xf_server_stop(s);
}

/* KServe v2 infer on the encoder with Triton's sequence parameters. */
static void test_enc_kserve(void **state)
{
    xf_server_t *s = start_enc(ENC_TXL, NULL, NULL, 0);
    int port = xf_server_port(s);
    eref_t r;
    float pooled[64];
    double e = 0;
    json_t *j, *o;

    (void)state;
    eref_open(&r, ENC_TXL);
    for (int k = 0; k < 2; k++) {
        char *b = kserve_body(k, k == 0 ? "\"sequence_id\":7,\"sequence_start\":true"
                                        : "\"sequence_id\":7");
        j = fx_json(port, "POST", "/v2/models/xformd-demo/infer", NULL, b, 200);
        eref_seg(&r, k, pooled, NULL);
        o = json_array_get(json_object_get(j, "outputs"), 0);
        assert_string_equal(json_string_value(json_object_get(o, "name")), "pooled");
        e = fmax(e, json_maxdiff(json_object_get(o, "data"), pooled, 64));
        assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "parameters"),
                                                            "segments")), k + 1);
        json_decref(j);
    }
    assert_true(e <= 1e-5);
    /* the same session through the REST route */
    j = fx_json(port, "GET", "/v1/sessions/7", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 2);
    json_decref(j);
    json_decref(fx_json(port, "POST", "/v2/models/xformd-demo/infer", NULL,
                        "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"INT64\",\"shape\":[2],"
                        "\"data\":[5,6]}],\"outputs\":[{\"name\":\"logprobs\"}],"
                        "\"parameters\":{\"sequence_id\":7}}", 400));
    /* sequence_end: computed, answered, then released */
    json_decref(fx_json(port, "POST", "/v2/models/xformd-demo/infer", NULL,
                        kserve_body(2, "\"sequence_id\":7,\"sequence_end\":true"), 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/7", NULL, NULL, 404));
    j = fx_json(port, "GET", "/v2/models/xformd-demo", NULL, NULL, 200);
    assert_true(json_is_true(json_object_get(json_object_get(j, "parameters"),
                                             "sequence_batching")));
    json_decref(j);
        /* without sequence_id the encoder's infer is stateless, as before */
    json_decref(fx_json(port, "POST", "/v2/models/xformd-demo/infer", NULL,
                        "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[1],"
                        "\"data\":[\"hello\"]}]}", 200));
    eref_close(&r);
    xf_server_stop(s);
}

/* Compressive attention, f16 payload: the stream matches within the payload's rounding; the
 * compressed memory travels in the blob. */
static void test_enc_compressive_f16(void **state)
{
    xf_server_t *s = start_enc(ENC_CMP, NULL, NULL, 1);
    int port = xf_server_port(s);
    json_t *j;

    (void)state;
    enc_stream(port, "c1", ENC_CMP, 1e-3);
    j = fx_json(port, "GET", "/v1/sessions/c1", NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "dtype")), "f16");
    assert_string_equal(json_string_value(json_object_get(j, "attention")), "compressive");
    assert_int_equal(json_integer_value(json_object_get(j, "memory_rows")), 4);
    assert_true(json_integer_value(json_object_get(j, "compressed_rows")) > 0);
    json_decref(j);
    xf_server_stop(s);
}

/* A segment whose deadline passes while its batch computes: 504 and nothing stored (the layers
 * that ran had updated the in-process state; it is dropped). The engine's time is the test hook
 * (every batch lasts 1 ms + 50 ms per token, spread over the layers) and the cost model was
 * warmed up believing 1 ns per token, so the segment is admitted and stopped after layer 1. */
static void test_enc_compute_deadline(void **state)
{
    xf_server_opts_t o;
    xf_server_t *s = NULL;
    eref_t r;
    int port;
    hc_resp_t resp;

    (void)state;
    fx_opts(&o, g_bert);
    o.attention = ENC_TXL;
    o.warmup = 1;
    o.warmup_fake_s_per_token = 1e-9;
    o.engine_fake_s_per_token = 0.05;
    s = fx_start_opts(&o);
    port = xf_server_port(s);
    assert_int_equal(hc_do(port, "POST", "/v1/sessions/d/segments", NULL,
                           ids_body(1, ",\"timeout_ms\":150"), &resp), 0);
    if (resp.status != 504)
        print_message("# %d %s\n", resp.status, resp.body);
    assert_int_equal(resp.status, 504);
    assert_non_null(strstr(resp.body, "not advanced"));
    hc_free(&resp);
    json_decref(fx_json(port, "GET", "/v1/sessions/d", NULL, NULL, 404));
    /* the session then equals the engine without the stopped segment */
    eref_open(&r, ENC_TXL);
    assert_true(enc_post_and_check(port, "d", NULL, 0, &r, 1, 0) <= 1e-5);
    assert_true(enc_post_and_check(port, "d", NULL, 2, &r, 2, 0) <= 1e-5);
    eref_close(&r);
    xf_server_stop(s);
}

/* Issue 11: an encoder segment whose batch is stopped at a layer boundary for *another*
 * request's deadline. The layers that ran had updated the segment's state; the server reloads
 * it from the blob it read and queues the segment again. The two requests are put into one batch
 * as in test_admission's re-queue test: fifo with two jobs per batch and a long queue delay, so
 * the segment waits in the queue until the short-deadline request arrives and both leave
 * together. The engine's time is the test hook, turned on only for that batch (every batch
 * then lasts 1 ms + 100 ms per token, spread over the 2 layers; the cost model was warmed up
 * believing 1 ms per token and the prior segment ran at the real, tiny speed, so both are
 * admitted): the batch of 9 + 20 tokens reaches layer 1's end ~1.45 s after it starts, past the
 * 1000 ms deadline, so it is stopped there (the only timing this needs: the short request is
 * parsed and queued within its 1 s). Asserted: the short request 504 "stopped after layer 1 of
 * 2", the segment 200 with pooled and hidden equal to the engine in process over the same two
 * segments (<= 1e-5), the session's segment count 2 (advanced exactly once), and through the
 * metrics that the path was taken: one stopped batch, then the segment alone (2 batches).
 * Run for txl and for compressive (memory, compressed memory and pending rows). */
typedef struct rq_cli {
    int port;
    const char *path, *body;
    int status;
    char *reply;
} rq_cli_t;

static void *rq_cli_main(void *p)
{
    rq_cli_t *c = p;
    hc_resp_t r;
    c->status = hc_do(c->port, "POST", c->path, NULL, c->body, &r) == 0 ? r.status : -1;
    c->reply = c->status > 0 && r.body ? strdup(r.body) : NULL;
    hc_free(&r);
    return NULL;
}

static void requeue_case(const char *attn)
{
    xf_server_opts_t o;
    xf_server_t *s = NULL;
    static char seg_body[512];
    static rq_cli_t a, b;
    pthread_t ta, tb;
    float pooled[64], hidden[9 * 64];
    eref_t r;
    int port;
    json_t *j, *h;
    double e;

    fx_opts(&o, g_bert);
    o.attention = attn;
    o.warmup = 1;
    o.warmup_fake_s_per_token = 1e-3;
    o.policy = 1;   /* fifo */
    o.max_batch = 2;
    o.max_queue_delay_ms = 1500;
    o.session_timeout_ms = 300;
    s = fx_start_opts(&o);
    port = xf_server_port(s);
    /* the prior segment, alone (it waits the queue delay for a partner that does not come) */
    json_decref(fx_json(port, "POST", "/v1/sessions/rq/segments", NULL, ids_body(0, NULL), 200));
    xf_workers_set_fake_time(s->workers, 0.1);
    int64_t batches0 = xf_metric_value(XF_M_batches_total, NULL, NULL);
    int64_t stopped0 = xf_metric_value(XF_M_rejected_total, "stopped", NULL);
    ids_body_r(1, ",\"return\":[\"pooled\",\"hidden\"]", seg_body, sizeof seg_body);
    a = (rq_cli_t){ .port = port, .path = "/v1/sessions/rq/segments", .body = seg_body };
    b = (rq_cli_t){ .port = port, .path = "/v1/embeddings",
                    .body = "{\"input\":\"a b c d e f g h i j k l m n o p q r\","
                            "\"timeout_ms\":1000}" };
    assert_int_equal(pthread_create(&ta, NULL, rq_cli_main, &a), 0);
    /* the segment waits in the queue for a batch partner (the fifo delay); then B comes */
    for (int i = 0; i < 1000 && xf_metric_value(XF_M_queue_depth, NULL, NULL) < 1; i++)
        sleep_ms(2);
    assert_int_equal(xf_metric_value(XF_M_queue_depth, NULL, NULL), 1);
    assert_int_equal(pthread_create(&tb, NULL, rq_cli_main, &b), 0);
    pthread_join(tb, NULL);
    pthread_join(ta, NULL);
    if (b.status != 504 || a.status != 200)
        print_message("# segment %d %s\n# short %d %s\n", a.status, a.reply ? a.reply : "",
                      b.status, b.reply ? b.reply : "");
    assert_int_equal(b.status, 504);
    assert_non_null(strstr(b.reply, "stopped after layer 1 of 2"));
    assert_int_equal(a.status, 200);
    /* the stopped batch (segment + short request), then the segment alone */
    assert_int_equal(xf_metric_value(XF_M_rejected_total, "stopped", NULL) - stopped0, 1);
    assert_int_equal(xf_metric_value(XF_M_batches_total, NULL, NULL) - batches0, 2);
    /* the rerun started from the state before the batch: = the engine over segments 0 and 1 */
    eref_open(&r, attn);
    eref_seg(&r, 0, pooled, hidden);
    eref_seg(&r, 1, pooled, hidden);
    j = json_loads(a.reply, 0, NULL);
    assert_non_null(j);
    e = json_maxdiff(json_object_get(j, "pooled"), pooled, 64);
    h = json_object_get(j, "hidden");
    assert_int_equal(json_array_size(h), SEGN[1]);
    for (int t = 0; t < SEGN[1]; t++)
        e = fmax(e, json_maxdiff(json_array_get(h, (size_t)t), hidden + t * 64, 64));
    print_message("# requeued %s segment: max |server - engine| %.3g\n", attn, e);
    assert_true(e <= 1e-5);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "tokens_seen")),
                     SEGN[0] + SEGN[1]);
    json_decref(j);
    j = fx_json(port, "GET", "/v1/sessions/rq", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 2);
    json_decref(j);
    eref_close(&r);
    free(a.reply);
    free(b.reply);
    xf_server_stop(s);
}

static void test_enc_requeue_restores_state(void **state)
{
    (void)state;
    requeue_case(ENC_TXL);
    requeue_case(ENC_CMP);   /* memory, compressed memory and pending rows restored */
}

/* A model whose attention keeps no state: no session routes (404 sessions_disabled when no
 * model here has sessions; 400 model_not_supported when a request names it). */
static void test_enc_stateless(void **state)
{
    xf_server_t *s = start_enc(NULL, NULL, NULL, 0);
    int port = xf_server_port(s);
    hc_resp_t r;

    (void)state;
    assert_int_equal(hc_do(port, "POST", "/v1/sessions/a/segments", NULL, ids_body(0, NULL),
                           &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "sessions_disabled"));
    assert_non_null(strstr(r.body, "keeps no state"));
    hc_free(&r);
    json_decref(fx_json(port, "GET", "/v1/sessions/a", NULL, NULL, 404));
    assert_int_equal(hc_do(port, "POST", "/v2/models/xformd-demo/infer", NULL,
                           kserve_body(0, "\"sequence_id\":1"), &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "keeps no state"));   /* KServe errors: {"error": msg} */
    hc_free(&r);
    {
        json_t *j = fx_json(port, "GET", "/v2/models/xformd-demo", NULL, NULL, 200);
        assert_true(json_is_false(json_object_get(json_object_get(j, "parameters"),
                                                  "sequence_batching")));
        json_decref(j);
    }
    xf_server_stop(s);
    /* with a Transformer-XL session model beside the stateless encoder */
    s = start_enc(NULL, g_txl, NULL, 0);
    port = xf_server_port(s);
    assert_int_equal(hc_do(port, "POST", "/v1/sessions/a/segments", NULL,
                           ids_body(0, ",\"model\":\"xformd-demo\""), &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "keeps no state"));
    hc_free(&r);
    json_decref(fx_json(port, "GET", "/v1/sessions/a?model=xformd-demo", NULL, NULL, 400));
    xf_server_stop(s);
}

/* Both kinds on one server: the Transformer-XL model by default, the encoder by name; one
 * session id under each model is two sessions. */
static void test_enc_and_txl(void **state)
{
    xf_server_t *s = start_enc(ENC_TXL, g_txl, NULL, 0);
    int port = xf_server_port(s);
    ref_t tr;
    eref_t er;

    (void)state;
    ref_open(&tr);
    eref_open(&er, ENC_TXL);
    for (int k = 0; k < 3; k++) {
        post_and_check(port, "both", NULL, k, &tr, k + 1);
        assert_true(enc_post_and_check(port, "both", ",\"model\":\"xformd-demo\"", 2 - k, &er,
                                       k + 1, 0) <= 1e-5);
    }
    {
        json_t *j = fx_json(port, "GET", "/v1/sessions/both?model=xformd-demo", NULL, NULL, 200);
        assert_string_equal(json_string_value(json_object_get(j, "attention")), "txl");
        json_decref(j);
    }
    json_decref(fx_json(port, "DELETE", "/v1/sessions/both?model=xformd-demo", NULL, NULL, 200));
    json_decref(fx_json(port, "GET", "/v1/sessions/both?model=xformd-demo", NULL, NULL, 404));
    json_decref(fx_json(port, "GET", "/v1/sessions/both", NULL, NULL, 200));   /* the TXL one */
    eref_close(&er);
    ref_close(&tr);
    xf_server_stop(s);
}

/* ---- Redis ----------------------------------------------------------------------------- */

static pid_t g_redis;
static int g_redis_port;

static int free_port(void)
{
    struct sockaddr_in a = { 0 };
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* A raw Redis command over RESP (test side only); returns the first reply line. */
static int redis_raw(const char *const *argv, const size_t *lens, int argc, char *out,
                     size_t outlen)
{
    int fd = hc_connect(g_redis_port);
    char head[64];
    ssize_t n;

    if (fd < 0)
        return -1;
    snprintf(head, sizeof head, "*%d\r\n", argc);
    hc_send(fd, head, strlen(head));
    for (int i = 0; i < argc; i++) {
        snprintf(head, sizeof head, "$%zu\r\n", lens[i]);
        hc_send(fd, head, strlen(head));
        hc_send(fd, argv[i], lens[i]);
        hc_send(fd, "\r\n", 2);
    }
    n = recv(fd, out, outlen - 1, 0);
    close(fd);
    if (n <= 0)
        return -1;
    out[n] = '\0';
    return 0;
}

static void redis_kill(void)
{
    if (g_redis > 0) {
        kill(g_redis, SIGKILL);
        waitpid(g_redis, NULL, 0);
        g_redis = 0;
    }
}

/* pass: "" or a password redis-server requires (--requirepass) */
static int redis_start_pass(const char *pass)
{
    char port[16], out[64];
    const char *ping[1] = { "PING" };
    size_t pl[1] = { 4 };

    if (access("/usr/bin/redis-server", X_OK) != 0)
        return -1;
    redis_kill();   /* one left by a test that failed before stopping it */
    if (!g_redis_port && (g_redis_port = free_port()) < 0)
        return -1;
    snprintf(port, sizeof port, "%d", g_redis_port);
    g_redis = fork();
    if (g_redis == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);   /* never hold the test's output pipe open */
        dup2(dn, 2);
        if (pass[0])
            execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--protected-mode", "no", "--requirepass",
                  pass, (char *)NULL);
        else
            execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--protected-mode", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {   /* up to 5 s for it to listen */
        sleep_ms(50);
        /* with a password PING answers -NOAUTH: listening is enough */
        if (redis_raw(ping, pl, 1, out, sizeof out) == 0 &&
            (strstr(out, "PONG") || (pass[0] && strstr(out, "NOAUTH"))))
            return 0;
    }
    return -1;
}

static int redis_start(void)
{
    return redis_start_pass("");
}

#define REDIS_OR_SKIP()                                                                        \
    do {                                                                                       \
        if (redis_start() < 0) {                                                               \
            print_message("# SKIP: redis-server not found or did not start (scripts/setup "   \
                          "installs it)\n");                                                   \
            skip();                                                                            \
        }                                                                                      \
    } while (0)

static char *redis_url(void)
{
    static char u[64];
    snprintf(u, sizeof u, "redis://127.0.0.1:%d/0", g_redis_port);
    return u;
}

/* POST until the store answers (reconnect), bounded: returns the last status. */
/* Poll until the server's session store answers (not 503); hdr: extra headers (the API key
 * of a server with auth) or NULL. */
static int wait_up_auth(int port, const char *hdr)
{
    hc_resp_t r;
    int st = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(hc_do(port, "GET", "/v1/sessions/probe", hdr, NULL, &r), 0);
        st = r.status;
        hc_free(&r);
        if (st != 503)
            break;
        sleep_ms(100);
    }
    return st;
}

static int wait_up(int port)
{
    return wait_up_auth(port, NULL);
}

static void test_redis_stream_and_faults(void **state)
{
    xf_server_t *s;
    int port;
    hc_resp_t r;
    char ra[16];
    ref_t ref;

    (void)state;
    REDIS_OR_SKIP();
    s = start_server(redis_url(), NULL, 0);
    port = xf_server_port(s);
    assert_int_equal(wait_up(port), 404);
    run_stream(port, "r1", NULL);
    {
        /* SET .. EX session.ttl_s (3600) on every segment: PTTL is read back */
        json_t *j = fx_json(port, "GET", "/v1/sessions/r1", NULL, NULL, 200);
        json_int_t ttl = json_integer_value(json_object_get(j, "ttl_s"));
        assert_true(ttl > 3000 && ttl <= 3600);
        assert_int_equal(json_integer_value(json_object_get(j, "segments")), 3);
        assert_true(json_is_true(json_object_get(j, "valid")));
        json_decref(j);
    }
    /* Redis killed mid-session: session routes 503 + Retry-After, stateless routes fine */
    redis_kill();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(hc_do(port, "POST", "/v1/sessions/r1/segments", NULL,
                               ids_body(0, NULL), &r), 0);
        assert_int_equal(r.status, 503);
        assert_non_null(hc_header(&r, "Retry-After", ra, sizeof ra));
        assert_non_null(strstr(r.body, "redis_unavailable"));
        hc_free(&r);
    }
    assert_int_equal(hc_do(port, "POST", "/embed", NULL, "{\"inputs\":\"hello\"}", &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    assert_int_equal(hc_do(port, "GET", "/v2/health/ready", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    /* restarted (empty): recovery, the session starts again and matches a fresh engine run */
    assert_int_equal(redis_start(), 0);
    assert_int_equal(wait_up(port), 404);
    ref_open(&ref);
    post_and_check(port, "r1", NULL, 1, &ref, 1);
    post_and_check(port, "r1", NULL, 2, &ref, 2);
    ref_close(&ref);
    /* a corrupted stored blob is discarded: the reply says reset */
    {
        char key[160], out[64];
        json_t *j;
        /* the session model's served name is its directory's basename */
        snprintf(key, sizeof key, "xformd:%s:r1", strrchr(g_txl, '/') + 1);
        {
            const char *a4[4] = { "SETRANGE", key, "200", "\x7f" };
            size_t l4[4] = { 8, strlen(key), 3, 1 };
            assert_int_equal(redis_raw(a4, l4, 4, out, sizeof out), 0);
            assert_int_equal(out[0], ':');
        }
        j = fx_json(port, "POST", "/v1/sessions/r1/segments", NULL, ids_body(0, NULL), 200);
        assert_true(json_is_true(json_object_get(j, "reset")));
        assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
        json_decref(j);
    }
    xf_server_stop(s);
    redis_kill();
}

/* A wrong password or database: AUTH / SELECT refused. The store must not read as up (it did:
 * redis_up 1 and every command failing -NOAUTH); it stays down, retries with the backoff and
 * counts the refusals; with the right password the same Redis serves. */
static void test_redis_auth(void **state)
{
    static const char *const bad[2] = { ":wrong@", ":s3cret@" };
    static const char *const db[2] = { "0", "100000" };
    xf_server_t *s;
    char url[128];
    hc_resp_t r;
    int port;

    (void)state;
    if (redis_start_pass("s3cret") < 0) {
        print_message("# SKIP: redis-server not found or did not start\n");
        skip();
    }
    for (int k = 0; k < 2; k++) {   /* wrong password; right password, no such database */
        int64_t e0 = xf_metric_value(XF_M_redis_errors_total, NULL, NULL);
        snprintf(url, sizeof url, "redis://%s127.0.0.1:%d/%s", bad[k], g_redis_port, db[k]);
        s = start_server(url, NULL, 0);
        port = xf_server_port(s);
        sleep_ms(600);   /* connect, refusal, reconnects (100, 200 ms backoff) */
        assert_int_equal(hc_do(port, "POST", "/v1/sessions/p/segments", NULL, ids_body(0, NULL),
                               &r), 0);
        assert_int_equal(r.status, 503);
        assert_non_null(strstr(r.body, "redis_unavailable"));
        hc_free(&r);
        assert_int_equal(xf_metric_value(XF_M_redis_up, NULL, NULL), 0);
        assert_true(xf_metric_value(XF_M_redis_errors_total, NULL, NULL) >= e0 + 2);
        xf_server_stop(s);
    }
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/2", g_redis_port);
    s = start_server(url, NULL, 0);
    port = xf_server_port(s);
    assert_int_equal(wait_up(port), 404);
    assert_int_equal(xf_metric_value(XF_M_redis_up, NULL, NULL), 1);
    {
        json_t *j = fx_json(port, "POST", "/v1/sessions/p/segments", NULL, ids_body(0, NULL),
                            200);
        assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
        json_decref(j);
    }
    xf_server_stop(s);
    redis_kill();
    /* an ACL user (Redis 6+): redis://user:password@ sends AUTH user password (the user was
     * dropped: AUTH password, refused since the default user has no password) */
    REDIS_OR_SKIP();
    {
        const char *a[6] = { "ACL", "SETUSER", "app", "on", ">pw2", "allcommands" };
        size_t l[6] = { 3, 7, 3, 2, 4, 11 };
        char out[64];
        assert_int_equal(redis_raw(a, l, 6, out, sizeof out), 0);
        assert_non_null(strstr(out, "+OK"));
        {
            const char *k[4] = { "ACL", "SETUSER", "app", "allkeys" };
            size_t kl[4] = { 3, 7, 3, 7 };
            assert_int_equal(redis_raw(k, kl, 4, out, sizeof out), 0);
            assert_non_null(strstr(out, "+OK"));
        }
    }
    snprintf(url, sizeof url, "redis://app:pw2@127.0.0.1:%d/0", g_redis_port);
    s = start_server(url, NULL, 0);
    port = xf_server_port(s);
    assert_int_equal(wait_up(port), 404);
    assert_int_equal(xf_metric_value(XF_M_redis_up, NULL, NULL), 1);
    xf_server_stop(s);
    redis_kill();
}

/* A session key holding another Redis type (a hash) is no blob: the segment resets it (it
 * answered 503 redis_unavailable, WRONGTYPE, for as long as the key lived). GET reports it
 * invalid without counting a reset (each GET counted one and logged "starting it again"). */
static void test_redis_wrong_type(void **state)
{
    xf_server_t *s;
    char key[160], out[64];
    int64_t resets0;
    json_t *j;
    int port;

    (void)state;
    REDIS_OR_SKIP();
    s = start_server(redis_url(), NULL, 0);
    port = xf_server_port(s);
    assert_int_equal(wait_up(port), 404);
    snprintf(key, sizeof key, "xformd:%s:wt", strrchr(g_txl, '/') + 1);
    {
        const char *a[4] = { "HSET", key, "f", "v" };
        size_t l[4] = { 4, strlen(key), 1, 1 };
        assert_int_equal(redis_raw(a, l, 4, out, sizeof out), 0);
        assert_int_equal(out[0], ':');
    }
    resets0 = xf_metric_value(XF_M_session_resets_total, NULL, NULL);
    for (int i = 0; i < 3; i++) {   /* GET reports it and discards nothing: no reset counted */
        j = fx_json(port, "GET", "/v1/sessions/wt", NULL, NULL, 200);
        assert_true(json_is_false(json_object_get(j, "valid")));
        json_decref(j);
    }
    assert_int_equal(xf_metric_value(XF_M_session_resets_total, NULL, NULL), resets0);
    j = fx_json(port, "POST", "/v1/sessions/wt/segments", NULL, ids_body(0, NULL), 200);
    assert_int_equal(xf_metric_value(XF_M_session_resets_total, NULL, NULL), resets0 + 1);
    assert_true(json_is_true(json_object_get(j, "reset")));
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 1);
    json_decref(j);
    j = fx_json(port, "POST", "/v1/sessions/wt/segments", NULL, ids_body(1, NULL), 200);
    assert_true(json_is_false(json_object_get(j, "reset")));
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 2);
    json_decref(j);
    {
        const char *a[2] = { "TYPE", key };
        size_t l[2] = { 4, strlen(key) };
        assert_int_equal(redis_raw(a, l, 2, out, sizeof out), 0);
        assert_non_null(strstr(out, "+string"));
    }
    xf_server_stop(s);
    redis_kill();
}

static void r_put_cb(void *user, int rc)
{
    *(int *)user = rc;
}

/* Keep Redis busy for 600 ms in a Lua loop (as a slow Redis: DEBUG SLEEP is disabled by
 * default since Redis 7). */
static void *redis_busy(void *p)
{
    static const char lua[] =
        "local t = redis.call('TIME') local e = t[1] * 1000000 + t[2] + 600000 "
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= e return 1";
    const char *a[3] = { "EVAL", lua, "0" };
    size_t l[3] = { 4, sizeof lua - 1, 1 };
    char out[64];

    (void)p;
    redis_raw(a, l, 3, out, sizeof out);
    return NULL;
}

/* Run loop until *flag leaves 99 (bounded: 5 s). */
static void run_until(uv_loop_t *loop, const int *flag)
{
    for (int i = 0; i < 500 && *flag == 99; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        sleep_ms(10);
    }
}

/* A write Redis receives but does not answer within session.timeout_ms may still be applied
 * (here: Redis busy in a script, then it runs the write). The store must say "maybe" (-ETIMEDOUT), not "not stored"
 * (XF_EREDIS): the segment route told the client "the segment was not stored, retry it", and the
 * retry applied the segment a second time. */
static void test_redis_put_timeout_unsure(void **state)
{
    uv_loop_t loop;
    xf_sstore_t *st = NULL;
    char err[128], out[64];
    uint8_t blob[200];
    int rc = 99, up = 99;
    pthread_t busy;

    (void)state;
    REDIS_OR_SKIP();
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(xf_sstore_redis_create(&loop, redis_url(), 150, &st, err, sizeof err), 0);
    for (int i = 0; i < 500 && !st->vt->up(st); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        sleep_ms(10);
    }
    assert_true(st->vt->up(st));
    assert_int_equal(pthread_create(&busy, NULL, redis_busy, NULL), 0);
    sleep_ms(100);   /* the script runs: Redis reads nothing until it ends */
    memset(blob, 7, sizeof blob);
    st->vt->put(st, "xformd:t:unsure", blob, sizeof blob, "", 0, 60, r_put_cb, &rc);
    run_until(&loop, &rc);
    assert_int_equal(rc, -ETIMEDOUT);
    pthread_join(busy, NULL);   /* then it reads and runs the write (and sees the close) */
    {
        const char *a[2] = { "STRLEN", "xformd:t:unsure" };
        size_t l[2] = { 6, 15 };
        assert_int_equal(redis_raw(a, l, 2, out, sizeof out), 0);
        assert_string_equal(out, ":200\r\n");   /* it was stored */
    }
    /* a refused write (error reply) is a sure "not stored": XF_EREDIS */
    for (int i = 0; i < 500 && !st->vt->up(st); i++) {   /* reconnects after the timeout */
        uv_run(&loop, UV_RUN_NOWAIT);
        sleep_ms(10);
    }
    {   /* maxmemory-policy is noeviction by default: writes get -OOM */
        const char *a[4] = { "CONFIG", "SET", "maxmemory", "1" };
        size_t l[4] = { 6, 3, 9, 1 };
        assert_int_equal(redis_raw(a, l, 4, out, sizeof out), 0);
        assert_non_null(strstr(out, "+OK"));
    }
    st->vt->put(st, "xformd:t:oom", blob, sizeof blob, "", 0, 60, r_put_cb, &up);
    run_until(&loop, &up);
    assert_int_equal(up, XF_EREDIS);
    {
        const char *a[4] = { "CONFIG", "SET", "maxmemory", "0" };
        size_t l[4] = { 6, 3, 9, 1 };
        assert_int_equal(redis_raw(a, l, 4, out, sizeof out), 0);
    }
    st->vt->free(st);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    redis_kill();
}

static void test_redis_race_and_keys(void **state)
{
    xf_server_t *a, *b, *k2;
    int ports[2], n409, ok;
    json_t *j;

    (void)state;
    REDIS_OR_SKIP();
    a = start_server(redis_url(), NULL, 0);
    b = start_server(redis_url(), NULL, 0);
    ports[0] = xf_server_port(a);
    ports[1] = xf_server_port(b);
    assert_int_equal(wait_up(ports[0]), 404);
    assert_int_equal(wait_up(ports[1]), 404);
    /* alternating replicas, one at a time = the in-process reference */
    {
        ref_t ref;
        ref_open(&ref);
        for (int k = 0; k < 3; k++)
            post_and_check(ports[k % 2], "alt", NULL, k, &ref, k + 1);
        ref_close(&ref);
    }
    /* two replicas racing: losers get 409, winners are numbered 1..ok without gaps */
    ok = run_race(ports, 2, "race", 12, &n409);
    assert_int_equal(ok + n409, 12);
    j = fx_json(ports[0], "GET", "/v1/sessions/race", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), ok);
    json_decref(j);
    print_message("# race over two replicas: %d stored, %d got 409\n", ok, n409);
    xf_server_stop(b);
    /* API keys: a session written under one key is invisible under another */
    k2 = start_server(redis_url(), "key-two", 0);
    {
        int p2 = xf_server_port(k2);
        /* k2's own Redis connection must be up before its answers mean anything */
        assert_int_equal(wait_up_auth(p2, "Authorization: Bearer key-two\r\n"), 404);
        json_decref(fx_json(p2, "GET", "/v1/sessions/alt", "Authorization: Bearer key-two\r\n",
                            NULL, 404));
        json_decref(fx_json(p2, "GET", "/v1/sessions/alt", NULL, NULL, 401));
    }
    xf_server_stop(k2);
    xf_server_stop(a);
    redis_kill();
}

/* Encoder sessions in Redis: the stream equals the engine in process, a corrupted stored blob
 * is reported as a reset, two replicas racing on one session lose nothing (409s). */
static void test_redis_enc(void **state)
{
    xf_server_t *a, *b;
    int ports[2], n409, ok;
    eref_t r;
    json_t *j;

    (void)state;
    REDIS_OR_SKIP();
    a = start_enc(ENC_TXL, NULL, redis_url(), 0);
    b = start_enc(ENC_TXL, NULL, redis_url(), 0);
    ports[0] = xf_server_port(a);
    ports[1] = xf_server_port(b);
    assert_int_equal(wait_up(ports[0]), 404);
    assert_int_equal(wait_up(ports[1]), 404);
    /* alternating replicas = one process holding the state */
    eref_open(&r, ENC_TXL);
    {
        double e = 0;
        for (int k = 0; k < 3; k++)
            e = fmax(e, enc_post_and_check(ports[k % 2], "er", NULL, k, &r, k + 1, 0));
        assert_true(e <= 1e-5);
    }
    eref_close(&r);
    j = fx_json(ports[1], "GET", "/v1/sessions/er", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), 3);
    assert_true(json_integer_value(json_object_get(j, "ttl_s")) > 3000);
    json_decref(j);
    /* a corrupted stored blob: discarded, the reply says reset, the session starts again */
    {
        const char *key = "xformd:xformd-demo:er";
        const char *a4[4] = { "SETRANGE", key, "300", "\x7f" };
        size_t l4[4] = { 8, strlen(key), 3, 1 };
        char out[64];
        eref_t fresh;
        assert_int_equal(redis_raw(a4, l4, 4, out, sizeof out), 0);
        assert_int_equal(out[0], ':');
        j = fx_json(ports[0], "GET", "/v1/sessions/er", NULL, NULL, 200);
        assert_true(json_is_false(json_object_get(j, "valid")));
        json_decref(j);
        eref_open(&fresh, ENC_TXL);
        assert_true(enc_post_and_check(ports[0], "er", NULL, 1, &fresh, 1, 1) <= 1e-5);
        eref_close(&fresh);
    }
    ok = run_race(ports, 2, "erace", 12, &n409);
    assert_int_equal(ok + n409, 12);
    j = fx_json(ports[0], "GET", "/v1/sessions/erace", NULL, NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "segments")), ok);
    json_decref(j);
    print_message("# encoder race over two replicas: %d stored, %d got 409\n", ok, n409);
    xf_server_stop(b);
    xf_server_stop(a);
    redis_kill();
}

/* The scale-out topology: two replicas sharing Redis behind nginx round robin; one session's
 * segments alternate between them and equal the in-process reference. */
static void test_nginx_two_replicas(void **state)
{
    static const char *const nginx_bins[] = { "/usr/sbin/nginx", "/usr/local/sbin/nginx" };
    const char *nginx = NULL;
    xf_server_t *a, *b;
    char tmp[4096], conf[4200], logp[4200], buf[8192];
    int pn, up = 0;
    pid_t pid;
    FILE *f;
    ref_t ref;

    (void)state;
    for (size_t i = 0; i < sizeof nginx_bins / sizeof nginx_bins[0]; i++)
        if (access(nginx_bins[i], X_OK) == 0)
            nginx = nginx_bins[i];
    if (!nginx) {
        print_message("# SKIP: nginx not installed (scripts/setup installs nginx-light)\n");
        skip();
    }
    REDIS_OR_SKIP();
    a = start_server(redis_url(), NULL, 0);
    b = start_server(redis_url(), NULL, 0);
    assert_int_equal(wait_up(xf_server_port(a)), 404);
    assert_int_equal(wait_up(xf_server_port(b)), 404);
    xf_test_tmpdir(tmp, sizeof tmp, "nginx");
    pn = free_port();
    snprintf(conf, sizeof conf, "%s/nginx.conf", tmp);
    snprintf(logp, sizeof logp, "%s/upstream.log", tmp);
    f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "worker_processes 1;\ndaemon off;\nuser root;\npid %s/nginx.pid;\n"
            "error_log %s/error.log;\nevents { worker_connections 64; }\n"
            "http {\n  log_format up '$upstream_addr';\n  access_log %s up;\n"
            "  client_body_temp_path %s; proxy_temp_path %s;\n"
            "  fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;\n"
            "  upstream xf { server 127.0.0.1:%d; server 127.0.0.1:%d; }\n"
            "  server { listen 127.0.0.1:%d;\n"
            "    location / { proxy_pass http://xf; proxy_http_version 1.1;\n"
            "                 proxy_set_header Connection \"\"; } }\n}\n",
            tmp, tmp, logp, tmp, tmp, tmp, tmp, tmp, xf_server_port(a), xf_server_port(b), pn);
    fclose(f);
    pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);
        dup2(dn, 2);
        execl(nginx, "nginx", "-p", tmp, "-e", "stderr", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && !up; i++) {   /* up to 5 s for it to listen */
        int fd = hc_connect(pn);
        sleep_ms(50);
        if (fd >= 0) {
            close(fd);
            up = 1;
        }
    }
    if (!up) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("nginx did not start (%s)", conf);
    }
    ref_open(&ref);
    for (int k = 0; k < 6; k++)
        post_and_check(pn, "lb", NULL, k % 3, &ref, k + 1);
    ref_close(&ref);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    /* both replicas served segments (nginx logged each upstream address) */
    f = fopen(logp, "r");
    assert_non_null(f);
    {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        char pa[32], pb[32];
        buf[n] = '\0';
        snprintf(pa, sizeof pa, ":%d", xf_server_port(a));
        snprintf(pb, sizeof pb, ":%d", xf_server_port(b));
        assert_non_null(strstr(buf, pa));
        assert_non_null(strstr(buf, pb));
    }
    fclose(f);
    xf_test_rmtree(tmp);
    xf_server_stop(a);
    xf_server_stop(b);
    redis_kill();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_stream),
        cmocka_unit_test(test_local_bad_requests),
        cmocka_unit_test(test_local_ordering_and_ttl),
        cmocka_unit_test(test_local_long_model_name),
        cmocka_unit_test(test_local_kserve),
        cmocka_unit_test(test_local_model_metadata),
        cmocka_unit_test(test_local_store_bytes),
        cmocka_unit_test(test_local_store_bytes_server),
        cmocka_unit_test(test_local_session_max_bytes),
        cmocka_unit_test(test_local_compute_deadline),
        cmocka_unit_test(test_enc_local),
        cmocka_unit_test(test_enc_kserve),
        cmocka_unit_test(test_enc_compressive_f16),
        cmocka_unit_test(test_enc_compute_deadline),
        cmocka_unit_test(test_enc_requeue_restores_state),
        cmocka_unit_test(test_enc_stateless),
        cmocka_unit_test(test_enc_and_txl),
        cmocka_unit_test(test_redis_stream_and_faults),
        cmocka_unit_test(test_redis_race_and_keys),
        cmocka_unit_test(test_redis_auth),
        cmocka_unit_test(test_redis_wrong_type),
        cmocka_unit_test(test_redis_put_timeout_unsure),
        cmocka_unit_test(test_redis_enc),
        cmocka_unit_test(test_nginx_two_replicas),
    };
    int rc;

    cmocka_set_message_output(CM_OUTPUT_TAP);
    signal(SIGPIPE, SIG_IGN);
    rc = cmocka_run_group_tests(tests, setup, teardown);
    redis_kill();
    return rc;
}
