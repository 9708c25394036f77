/* Integration tests of shutdown and deadlines: the real daemon in process (fifo batching with a
 * long queue delay so that requests are provably in flight), drained the way SIGTERM drains it
 * (xf_server_drain is what the signal handler calls): no request is lost — each gets its answer
 * or a 503 with Retry-After — and the loop closes cleanly (xf_server_wait returns 0). */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xf_test.h"

#include "server/batcher.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server_fixture.h"

typedef struct client {
    int port;
    int idx;
    int status;
    char retry_after[32];
    char body[512];
} client_t;

static void *client_main(void *p)
{
    client_t *c = p;
    char body[256];
    snprintf(body, sizeof body, "{\"inputs\":\"request number %d in flight\"}", c->idx);
    hc_resp_t r;
    if (hc_do(c->port, "POST", "/embed", NULL, body, &r) == 0) {
        c->status = r.status;
        if (!hc_header(&r, "Retry-After", c->retry_after, sizeof c->retry_after))
            c->retry_after[0] = '\0';
        snprintf(c->body, sizeof c->body, "%s", r.body ? r.body : "");
    }
    hc_free(&r);
    return NULL;
}

static xf_server_t *start(char *dir, size_t len, const char *tag, int delay_ms,
                          int drain_timeout_ms)
{
    xf_server_opts_t o;
    fx_opts(&o, NULL);
    o.policy = XF_BATCH_FIFO;
    o.max_batch = 64;
    o.max_queue_delay_ms = delay_ms;
    o.drain_timeout_ms = drain_timeout_ms;
    return fx_start(tag, &o, XF_LOG_WARN, dir, len);
}

static void wait_inflight(xf_server_t *s, long n)
{
    for (int i = 0; i < 500 && xf_server_inflight(s) < n; i++)
        usleep(10000);
    assert_true(xf_server_inflight(s) >= n);
}

enum { NC = 8 };

/* Requests queued when the drain starts all finish with 200; health says not ready. */
static void test_drain_finishes_in_flight(void **state)
{
    (void)state;
    char dir[1024];
    xf_server_t *s = start(dir, sizeof dir, "drain1", 1000, 10000);
    int port = xf_server_port(s);
    /* Keep-alive connections opened before the drain, to see the draining answers (each
     * draining answer says Connection: close, so one per check). */
    int fd = hc_connect(port), fd2 = hc_connect(port);
    assert_true(fd >= 0 && fd2 >= 0);
    hc_resp_t r;
    assert_int_equal(hc_request(fd, "GET", "/v2/health/ready", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    assert_int_equal(hc_request(fd2, "GET", "/v2/health/live", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);

    pthread_t th[NC];
    client_t c[NC];
    for (int i = 0; i < NC; i++) {
        c[i] = (client_t){ .port = port, .idx = i };
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &c[i]), 0);
    }
    wait_inflight(s, NC);   /* all suspended, waiting for the fifo batch (1 s) */
    xf_server_drain(s);
    /* While draining: not ready (503), and new inference requests get 503 + Retry-After. */
    int st = 200;
    for (int i = 0; i < 100 && st == 200; i++) {
        assert_int_equal(hc_request(fd, "GET", "/v2/health/ready", NULL, NULL, 0, &r), 0);
        st = r.status;
        hc_free(&r);
        if (st == 200)
            usleep(5000);
    }
    assert_int_equal(st, 503);
    assert_int_equal(hc_request(fd2, "POST", "/embed", NULL, "{\"inputs\":\"late\"}", 17, &r),
                     0);
    assert_int_equal(r.status, 503);
    char ra[32];
    assert_non_null(hc_header(&r, "Retry-After", ra, sizeof ra));
    assert_non_null(strstr(r.body, "Overloaded"));
    hc_free(&r);
    close(fd);
    close(fd2);

    for (int i = 0; i < NC; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NC; i++) {
        if (c[i].status != 200)
            print_message("# client %d: %d %s\n", i, c[i].status, c[i].body);
        assert_int_equal(c[i].status, 200);
        assert_true(c[i].body[0] == '[');   /* a TEI embedding list */
    }
    assert_int_equal(xf_server_wait(s), 0);
    /* Stopped: the port no longer accepts. */
    assert_true(hc_connect(port) < 0);
    xf_server_free(s);
    xf_test_rmtree(dir);
}

/* SIGTERM while a request's body is still arriving: it is finished (200), not refused; during
 * the drain a new connection is accepted and /v2/health/ready answers 503 on it. */
static void test_drain_finishes_reading(void **state)
{
    (void)state;
    char dir[1024];
    xf_server_t *s = start(dir, sizeof dir, "drain7", 300, 10000);
    int port = xf_server_port(s);
    const char *body = "{\"inputs\":\"read while draining\"}";
    char head[256];
    snprintf(head, sizeof head, "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
             "application/json\r\nContent-Length: %zu\r\n\r\n", strlen(body));
    int fd = hc_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(hc_send(fd, head, strlen(head)), 0);
    assert_int_equal(hc_send(fd, body, 5), 0);
    wait_inflight(s, 1);
    xf_server_drain(s);
    /* The port stays open while the drain waits for this request: ready says 503. */
    hc_resp_t r;
    int st = 0;
    for (int i = 0; i < 100 && st != 503; i++) {
        if (hc_do(port, "GET", "/v2/health/ready", NULL, NULL, &r) == 0) {
            st = r.status;
            hc_free(&r);
        }
        if (st != 503)
            usleep(5000);
    }
    assert_int_equal(st, 503);
    assert_int_equal(hc_send(fd, body + 5, strlen(body) - 5), 0);
    assert_int_equal(hc_read(fd, &r), 0);
    if (r.status != 200)
        print_message("# %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    close(fd);
    assert_int_equal(xf_server_wait(s), 0);
    xf_server_free(s);
    xf_test_rmtree(dir);
}

/* With drain.timeout_ms = 0, queued requests are answered 503 + Retry-After at once. */
static void test_drain_timeout_fails_queued(void **state)
{
    (void)state;
    char dir[1024];
    xf_server_t *s = start(dir, sizeof dir, "drain2", 5000, 0);
    int port = xf_server_port(s);
    pthread_t th[NC];
    client_t c[NC];
    for (int i = 0; i < NC; i++) {
        c[i] = (client_t){ .port = port, .idx = i };
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &c[i]), 0);
    }
    wait_inflight(s, NC);
    xf_server_drain(s);
    for (int i = 0; i < NC; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NC; i++) {
        assert_int_equal(c[i].status, 503);
        assert_true(atoi(c[i].retry_after) >= 1);
        assert_non_null(strstr(c[i].body, "shutting down"));
    }
    assert_int_equal(xf_server_wait(s), 0);
    xf_server_free(s);
    xf_test_rmtree(dir);
}

/* A request whose own timeout_ms passes while queued gets 408 request_timeout (the client's
 * choice, not a server fault: no Retry-After); one that misses the server's default deadline
 * gets 503 + Retry-After. Never silence. */
static void test_deadline(void **state)
{
    (void)state;
    char dir[1024];
    xf_server_t *s = start(dir, sizeof dir, "drain3", 3000, 10000);
    int port = xf_server_port(s);
    int64_t before = xf_metric_value(XF_M_rejected_total, "deadline", NULL);
    hc_resp_t r;
    assert_int_equal(hc_do(port, "POST", "/v1/embeddings", NULL,
                           "{\"input\":\"hurry\",\"timeout_ms\":50}", &r), 0);
    assert_int_equal(r.status, 408);
    assert_non_null(strstr(r.body, "request_timeout"));
    hc_free(&r);
    assert_int_equal(xf_metric_value(XF_M_rejected_total, "deadline", NULL), before + 1);
    /* "timeout_ms": 1 is the client's problem too: 408 (or 200 if it made it), never 503. */
    assert_int_equal(hc_do(port, "POST", "/v1/embeddings", NULL,
                           "{\"input\":\"hurry\",\"timeout_ms\":1}", &r), 0);
    assert_int_equal(r.status, 408);
    hc_free(&r);
    /* A bad timeout is a 400, not a silent default. */
    assert_int_equal(hc_do(port, "POST", "/v1/embeddings", NULL,
                           "{\"input\":\"x\",\"timeout_ms\":0}", &r), 0);
    assert_int_equal(r.status, 400);
    hc_free(&r);
    fx_stop(s, dir);
}

/* Real signals, as systemd sends them: SIGHUP reopens the log file (after logrotate moved
 * it), SIGTERM drains and the loop exits cleanly. */
static void test_signals(void **state)
{
    (void)state;
    char dir[1024], logp[1100], moved[1100];
    xf_metrics_init(NULL);
    assert_int_equal(fx_write_model("drain4", 0, dir, sizeof dir), 0);
    snprintf(logp, sizeof logp, "%s/xformd.log", dir);
    snprintf(moved, sizeof moved, "%s/xformd.log.1", dir);
    assert_int_equal(xf_log_open(XF_LOG_INFO, logp), 0);
    xf_server_opts_t o;
    fx_opts(&o, dir);
    o.handle_signals = 1;
    xf_server_t *s = NULL;
    assert_int_equal(xf_server_start(&o, &s, NULL), 0);
    assert_int_equal(rename(logp, moved), 0);
    assert_int_equal(kill(getpid(), SIGHUP), 0);
    size_t len = 0;
    char *text = NULL;
    for (int i = 0; i < 200; i++) {   /* the loop thread handles the signal asynchronously */
        free(text);
        text = xf_test_slurp(logp, &len);
        if (text && strstr(text, "log reopened"))
            break;
        usleep(10000);
    }
    assert_non_null(text);
    assert_non_null(strstr(text, "log reopened"));
    free(text);
    text = xf_test_slurp(moved, &len);   /* the start-up lines stayed in the old file */
    assert_non_null(text);
    assert_non_null(strstr(text, "listening on"));
    free(text);
    json_t *j = fx_json(xf_server_port(s), "POST", "/embed", NULL, "{\"inputs\":\"a\"}", 200);
    json_decref(j);
    assert_int_equal(kill(getpid(), SIGTERM), 0);
    assert_int_equal(xf_server_wait(s), 0);
    xf_server_free(s);
    text = xf_test_slurp(logp, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "SIGTERM: draining"));
    assert_non_null(strstr(text, "drained and stopped"));
    free(text);
    xf_log_open(XF_LOG_WARN, NULL);
    xf_log_close();
    xf_test_rmtree(dir);
}

/* Admission control: a full queue answers 429 + Retry-After at once; a request bigger than the
 * whole queue may ever hold is a 413 naming the limit. */
static void test_overload(void **state)
{
    (void)state;
    char dir[1024];
    xf_server_opts_t o;
    fx_opts(&o, NULL);
    o.policy = XF_BATCH_FIFO;
    o.max_batch = 64;
    o.max_queue_delay_ms = 1500;   /* the queue fills while the batch waits */
    o.max_queue_jobs = 2;
    o.max_queued_tokens = 64;
    xf_server_t *s = fx_start("drain5", &o, XF_LOG_WARN, dir, sizeof dir);
    int port = xf_server_port(s);
    enum { N = 4 };
    pthread_t th[N];
    client_t c[N];
    for (int i = 0; i < N; i++) {
        c[i] = (client_t){ .port = port, .idx = i };
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &c[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        if (c[i].status == 200) {
            ok++;
        } else {
            assert_int_equal(c[i].status, 429);
            assert_true(atoi(c[i].retry_after) >= 1);
            assert_non_null(strstr(c[i].body, "Overloaded"));
            busy++;
        }
    }
    assert_int_equal(ok, 2);     /* max_queue_jobs */
    assert_int_equal(busy, 2);
    /* About 100 tokens against a 64-token queue: can never be admitted. */
    char body[1024];
    char *q = body + sprintf(body, "{\"inputs\":\"");
    for (int i = 0; i < 100; i++)
        q += sprintf(q, "a ");
    strcpy(q, "\"}");
    json_t *j = fx_json(port, "POST", "/embed", NULL, body, 422);   /* TEI: Validation */
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")),
                           "max_queued_tokens"));
    json_decref(j);
    fx_stop(s, dir);
}

/* Start-up failures are clear errors that release everything: a port in use, a model
 * directory that does not exist. */
static void test_start_errors(void **state)
{
    (void)state;
    char dir[1024];
    xf_metrics_init(NULL);
    assert_int_equal(fx_write_model("drain6", 0, dir, sizeof dir), 0);
    xf_server_opts_t o;
    fx_opts(&o, dir);
    o.warmup = 0;
    xf_server_t *a = NULL, *b = NULL;
    assert_int_equal(xf_server_start(&o, &a, NULL), 0);
    o.port = xf_server_port(a);
    xf_diag_t diag = { 0, "" };
    assert_true(xf_server_start(&o, &b, &diag) < 0);
    assert_null(b);
    assert_non_null(strstr(diag.msg, "cannot listen"));
    o.port = 0;
    o.model_dir = "/nonexistent/model";
    assert_true(xf_server_start(&o, &b, &diag) < 0);
    assert_non_null(strstr(diag.msg, "model"));
    xf_server_stop(a);
    xf_test_rmtree(dir);
}

XF_TEST_MAIN(cmocka_unit_test(test_start_errors), cmocka_unit_test(test_signals), cmocka_unit_test(test_overload),
             cmocka_unit_test(test_drain_finishes_in_flight),
             cmocka_unit_test(test_drain_finishes_reading),
             cmocka_unit_test(test_drain_timeout_fails_queued), cmocka_unit_test(test_deadline))
