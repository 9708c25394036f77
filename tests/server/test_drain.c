/* Integration tests of shutdown and deadlines: the real daemon in process (fifo batching with a
 * queue delay longer than any run, so that requests are provably queued, whatever the speed of
 * the kernels or the load of the machine), drained the way SIGTERM drains it (xf_server_drain
 * is what the signal handler calls): no request is lost — each gets its answer or a 503 with
 * Retry-After — and the loop closes cleanly (xf_server_wait returns 0). */
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

/* Longer than any run of this program (10 min), slow kernels and sanitizers included: a fifo
 * batch that waits this long, or a deadline this far, never ends on its own during a test. */
#define FOREVER_MS 600000
/* drain.timeout_ms of a drain the test itself ends: never reached when the test passes, it
 * bounds the teardown of one that failed halfway (its queued jobs then get 503s). */
#define GUARD_MS 60000

static xf_server_t *start(char *dir, size_t len, const char *tag, int delay_ms,
                          int drain_timeout_ms, int max_batch)
{
    xf_server_opts_t o;
    fx_opts(&o, NULL);
    o.policy = XF_BATCH_FIFO;
    o.max_batch = max_batch;
    o.max_queue_delay_ms = delay_ms;
    o.drain_timeout_ms = drain_timeout_ms;
    if (delay_ms >= FOREVER_MS)   /* queued jobs must not expire while they wait either */
        o.timeout_ms = o.max_timeout_ms = FOREVER_MS;
    return fx_start(tag, &o, XF_LOG_WARN, dir, len);
}

/* Poll every 10 ms until cond holds. The bound (60 s) only stops a broken server from hanging
 * make check; it is not a timing assertion: cond holds as soon as the server gets there. */
#define WAIT_UNTIL(cond)                                                                   \
    do {                                                                                   \
        for (int w_ = 0; w_ < 6000 && !(cond); w_++)                                       \
            usleep(10000);                                                                 \
        assert_true(cond);                                                                 \
    } while (0)

static void wait_inflight(xf_server_t *s, long n)
{
    WAIT_UNTIL(xf_server_inflight(s) >= n);
}

/* The loop has admitted n jobs into the batcher (its queue_depth gauge, set after each
 * admission). */
static void wait_queued(long n)
{
    WAIT_UNTIL(xf_metric_value(XF_M_queue_depth, NULL, NULL) == n);
}

/* A request the drain must finish although its body is still arriving: send the header of a
 * POST /embed of body and its first 5 bytes on fd ... */
static void send_partial(int fd, const char *body)
{
    char head[256];
    snprintf(head, sizeof head, "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
             "application/json\r\nContent-Length: %zu\r\n\r\n", strlen(body));
    assert_int_equal(hc_send(fd, head, strlen(head)), 0);
    assert_int_equal(hc_send(fd, body, 5), 0);
}

/* ... and later the rest: its answer is a 200. */
static void finish_partial(int fd, const char *body)
{
    hc_resp_t r;
    assert_int_equal(hc_send(fd, body + 5, strlen(body) - 5), 0);
    assert_int_equal(hc_read(fd, &r), 0);
    if (r.status != 200)
        print_message("# partial request: %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    hc_free(&r);
}

enum { NC = 8 };

/* What a test that runs client threads holds, owned by the cmocka fixture rather than the
 * test's stack: a failed assertion longjmps out of the test, and teardown() then stops the
 * server (which answers or closes every client's connection) and joins the clients, so none
 * is left writing into a dead stack frame or a server left running into the next test. */
typedef struct drain_fx {
    xf_server_t *s;
    char dir[1024];
    pthread_t th[NC];
    client_t c[NC];
    int n_threads;   /* started and not yet joined */
    int fd[3];       /* the test's own connections, -1 when closed */
} drain_fx_t;

static int setup(void **state)
{
    drain_fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    for (int i = 0; i < 3; i++)
        f->fd[i] = -1;
    *state = f;
    return 0;
}

static void close_fds(drain_fx_t *f)
{
    for (int i = 0; i < 3; i++)
        if (f->fd[i] >= 0) {
            close(f->fd[i]);
            f->fd[i] = -1;
        }
}

static int teardown(void **state)
{
    drain_fx_t *f = *state;
    close_fds(f);           /* a half-sent request ends: the drain no longer waits for it */
    xf_server_stop(f->s);   /* drains and waits if the test did not get that far */
    for (int i = 0; i < f->n_threads; i++)
        pthread_join(f->th[i], NULL);
    if (f->dir[0])
        xf_test_rmtree(f->dir);
    free(f);
    return 0;
}

/* n client threads, each POSTing one /embed to port into f->c[i]. */
static void start_clients(drain_fx_t *f, int port, int n)
{
    assert_true(n <= NC);
    for (int i = 0; i < n; i++) {
        f->c[i] = (client_t){ .port = port, .idx = i };
        assert_int_equal(pthread_create(&f->th[i], NULL, client_main, &f->c[i]), 0);
        f->n_threads = i + 1;
    }
}

static void join_clients(drain_fx_t *f)
{
    for (int i = 0; i < f->n_threads; i++)
        pthread_join(f->th[i], NULL);
    f->n_threads = 0;
}

/* xf_server_wait, asserted clean; the fixture frees the server. */
static void wait_stopped(drain_fx_t *f)
{
    assert_int_equal(xf_server_wait(f->s), 0);
}

/* Requests queued when the drain starts all finish with 200; health says not ready, and new
 * inference requests get 503 + Retry-After. No step depends on timing: before the drain the
 * fifo batch waits for a ninth job (max_batch NC + 1, a delay longer than the run), so the
 * eight are provably queued when it starts; the drain runs them at once
 * (test_drain_runs_queued_at_once). The ninth is a request whose body is still arriving when
 * the drain starts. The drain waits for it (test_drain_finishes_reading), so the port and the
 * keep-alive connections stay open for the checks below until the test sends the rest of that
 * body; then it runs too. */
static void test_drain_finishes_in_flight(void **state)
{
    drain_fx_t *f = *state;
    f->s = start(f->dir, sizeof f->dir, "drain1", FOREVER_MS, GUARD_MS, NC + 1);
    int port = xf_server_port(f->s);
    /* Keep-alive connections opened before the drain, to see the draining answers (each
     * draining answer says Connection: close, so one per check); fd3 sends the ninth job. */
    for (int i = 0; i < 3; i++)
        assert_true((f->fd[i] = hc_connect(port)) >= 0);
    int fd = f->fd[0], fd2 = f->fd[1], fd3 = f->fd[2];
    hc_resp_t r;
    char v[32];
    assert_int_equal(hc_request(fd, "GET", "/v2/health/ready", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    assert_int_equal(hc_request(fd2, "GET", "/v2/health/live", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);

    /* The ninth job: header and the first bytes of its body. */
    const char *body = "{\"inputs\":\"the ninth, read while draining\"}";
    send_partial(fd3, body);
    wait_inflight(f->s, 1);
    start_clients(f, port, NC);
    wait_queued(NC);   /* all eight admitted; the batch waits for the ninth */

    xf_server_drain(f->s);
    WAIT_UNTIL(atomic_load(&f->s->draining));   /* the loop began the drain: ready is 0 */
    assert_int_equal(hc_request(fd, "GET", "/v2/health/ready", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(hc_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    hc_free(&r);
    assert_int_equal(hc_request(fd2, "POST", "/embed", NULL, "{\"inputs\":\"late\"}", 17, &r),
                     0);
    assert_int_equal(r.status, 503);
    assert_non_null(hc_header(&r, "Retry-After", v, sizeof v));
    assert_non_null(strstr(r.body, "Overloaded"));
    hc_free(&r);
    /* The eight are answered while the drain still waits for the ninth ... */
    join_clients(f);
    for (int i = 0; i < NC; i++) {
        if (f->c[i].status != 200)
            print_message("# client %d: %d %s\n", i, f->c[i].status, f->c[i].body);
        assert_int_equal(f->c[i].status, 200);
        assert_true(f->c[i].body[0] == '[');   /* a TEI embedding list */
    }
    /* ... which keeps new connections served: ready still answers 503. */
    assert_int_equal(hc_do(port, "GET", "/v2/health/ready", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    hc_free(&r);

    finish_partial(fd3, body);
    close_fds(f);
    wait_stopped(f);
    /* Stopped: the port no longer accepts. */
    assert_true(hc_connect(port) < 0);
}

/* SIGTERM while a request's body is still arriving: it is finished (200), not refused; during
 * the drain a new connection is accepted and /v2/health/ready answers 503 on it. */
static void test_drain_finishes_reading(void **state)
{
    drain_fx_t *f = *state;
    f->s = start(f->dir, sizeof f->dir, "drain7", 300, GUARD_MS, 64);
    xf_server_t *s = f->s;
    int port = xf_server_port(s);
    const char *body = "{\"inputs\":\"read while draining\"}";
    int fd = f->fd[0] = hc_connect(port);
    assert_true(fd >= 0);
    send_partial(fd, body);
    wait_inflight(s, 1);
    xf_server_drain(s);
    /* The port stays open while the drain waits for this request: ready says 503. */
    hc_resp_t r;
    WAIT_UNTIL(atomic_load(&s->draining));   /* the loop began the drain: ready is 0 */
    assert_int_equal(hc_do(port, "GET", "/v2/health/ready", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    hc_free(&r);
    finish_partial(fd, body);
    close_fds(f);
    wait_stopped(f);
}

/* A drain does not wait out the batching delay: nothing more will arrive to batch the queued
 * jobs with. Eight requests wait in a fifo batch that would wait 10 min for a ninth job; the
 * drain, whose drain.timeout_ms is far shorter than that delay, runs them at once as one batch
 * (before its own clock starts, so no step depends on timing): eight 200s, exactly one more
 * batch, nothing failed by the drain. (Before, they waited until the drain timed out and got
 * 503.) */
static void test_drain_runs_queued_at_once(void **state)
{
    drain_fx_t *f = *state;
    f->s = start(f->dir, sizeof f->dir, "drain8", FOREVER_MS, 1000, NC + 1);
    start_clients(f, xf_server_port(f->s), NC);
    wait_queued(NC);
    int64_t batches = xf_metric_value(XF_M_batches_total, NULL, NULL);
    int64_t refused = xf_metric_value(XF_M_rejected_total, "draining", NULL);
    xf_server_drain(f->s);
    join_clients(f);
    for (int i = 0; i < NC; i++) {
        if (f->c[i].status != 200)
            print_message("# client %d: %d %s\n", i, f->c[i].status, f->c[i].body);
        assert_int_equal(f->c[i].status, 200);
    }
    assert_int_equal(xf_metric_value(XF_M_batches_total, NULL, NULL), batches + 1);
    assert_int_equal(xf_metric_value(XF_M_rejected_total, "draining", NULL), refused);
    wait_stopped(f);
}

/* Requests whose bodies complete after the drain's last check, just before MHD stops: each
 * is answered 503 draining (or its connection closed), never left suspended — libmicrohttpd
 * aborts the process when MHD_stop_daemon finds a suspended connection. The test hook runs on
 * the loop thread between the drain's end and MHD_stop_daemon: at stage 0 it completes A's
 * body and waits until A's job is in the job queue (the loop fails it when it closes the
 * queue); at stage 1 (queue closed) it completes B's body and reads B's answer (the submit is
 * refused and answered on MHD's thread). drain.timeout_ms 0: the drain stops waiting for the
 * two bodies at once and then waits out its 2 s for the replies in flight. */
typedef struct late {
    int fd[2];
    const char *body;
    int queued;            /* stage 0: A's job reached the job queue */
    int b_status;          /* stage 1: B's answer */
    char b_body[256];
} late_t;

static void late_hook(xf_server_t *s, int stage, void *arg)
{
    late_t *l = arg;
    if (hc_send(l->fd[stage], l->body + 5, strlen(l->body) - 5) < 0)
        return;
    if (stage == 0) {
        for (int i = 0; i < 6000 && xf_jobq_count(&s->jobq) == 0; i++)
            usleep(10000);
        l->queued = (int)xf_jobq_count(&s->jobq);
        return;
    }
    hc_resp_t r;
    if (hc_read(l->fd[1], &r) == 0) {
        l->b_status = r.status;
        snprintf(l->b_body, sizeof l->b_body, "%s", r.body ? r.body : "");
    }
    hc_free(&r);
}

static void test_drain_answers_late_jobs(void **state)
{
    drain_fx_t *f = *state;
    static const char body[] = "{\"inputs\":\"completed as the server stops\"}";
    late_t l = { .fd = { -1, -1 }, .body = body };
    xf_server_opts_t o;
    fx_opts(&o, NULL);
    o.drain_timeout_ms = 0;
    o.test_before_stop = late_hook;
    o.test_before_stop_arg = &l;
    f->s = fx_start("drain9", &o, XF_LOG_WARN, f->dir, sizeof f->dir);
    int port = xf_server_port(f->s);
    for (int i = 0; i < 2; i++) {
        assert_true((l.fd[i] = f->fd[i] = hc_connect(port)) >= 0);
        send_partial(l.fd[i], body);
    }
    wait_inflight(f->s, 2);
    int64_t refused = xf_metric_value(XF_M_rejected_total, "draining", NULL);
    xf_server_drain(f->s);
    wait_stopped(f);
    assert_int_equal(l.queued, 1);
    if (l.b_status != 503)
        print_message("# B: %d %s\n", l.b_status, l.b_body);
    assert_int_equal(l.b_status, 503);
    assert_non_null(strstr(l.b_body, "shutting down"));
    assert_int_equal(xf_metric_value(XF_M_rejected_total, "draining", NULL), refused + 2);
    /* A was answered before MHD stopped, or its connection closed: never left hanging. */
    hc_resp_t r;
    int rc = hc_read(l.fd[0], &r);
    assert_true(rc < 0 || r.status == 503);
    hc_free(&r);
}

/* With drain.timeout_ms = 0, queued requests are answered 503 + Retry-After at once. */
static void test_drain_timeout_fails_queued(void **state)
{
    drain_fx_t *f = *state;
    f->s = start(f->dir, sizeof f->dir, "drain2", FOREVER_MS, 0, 64);
    start_clients(f, xf_server_port(f->s), NC);
    wait_queued(NC);
    xf_server_drain(f->s);
    join_clients(f);
    for (int i = 0; i < NC; i++) {
        assert_int_equal(f->c[i].status, 503);
        assert_true(atoi(f->c[i].retry_after) >= 1);
        assert_non_null(strstr(f->c[i].body, "shutting down"));
    }
    wait_stopped(f);
}

/* A request whose own timeout_ms passes while queued gets 408 request_timeout (the client's
 * choice, not a server fault: no Retry-After); one that misses the server's default deadline
 * gets 503 + Retry-After. Never silence. */
static void test_deadline(void **state)
{
    drain_fx_t *f = *state;
    f->s = start(f->dir, sizeof f->dir, "drain3", 3000, 10000, 64);
    int port = xf_server_port(f->s);
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
    xf_server_drain(f->s);
    wait_stopped(f);
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
    drain_fx_t *f = *state;
    xf_server_opts_t o;
    fx_opts(&o, NULL);
    o.policy = XF_BATCH_FIFO;
    o.max_batch = 64;
    /* The two queued requests wait this long for their batch, so that the queue is full when
     * the next two arrive. Those are sent (and refused on arrival) right after the two are
     * queued: a few milliseconds against 3 s, on any kernels. */
    o.max_queue_delay_ms = 3000;
    o.max_queue_jobs = 2;
    o.max_queued_tokens = 64;
    f->s = fx_start("drain5", &o, XF_LOG_WARN, f->dir, sizeof f->dir);
    int port = xf_server_port(f->s);
    enum { N = 4 };
    start_clients(f, port, 2);
    wait_queued(2);
    for (int i = 2; i < N; i++) {   /* on this thread */
        f->c[i] = (client_t){ .port = port, .idx = i };
        client_main(&f->c[i]);
    }
    join_clients(f);
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        client_t *c = &f->c[i];
        if (c->status == 200) {
            ok++;
        } else {
            assert_int_equal(c->status, 429);
            assert_true(atoi(c->retry_after) >= 1);
            assert_non_null(strstr(c->body, "Overloaded"));
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
    xf_server_drain(f->s);
    wait_stopped(f);
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

#define FX_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
XF_TEST_MAIN(cmocka_unit_test(test_start_errors), cmocka_unit_test(test_signals),
             FX_TEST(test_overload), FX_TEST(test_drain_finishes_in_flight),
             FX_TEST(test_drain_finishes_reading), FX_TEST(test_drain_timeout_fails_queued),
             FX_TEST(test_drain_runs_queued_at_once), FX_TEST(test_drain_answers_late_jobs),
             FX_TEST(test_deadline))
