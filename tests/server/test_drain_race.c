/* The drain and libmicrohttpd's own threads. libmicrohttpd 0.9.75 (epoll, thread pool) takes
 * its listening socket out of a worker's epoll set when that worker reaches its connection
 * limit or sees the quiesce flag, and puts it back when a connection closes; all of it without
 * a lock. MHD_quiesce_daemon(), called from another thread, removes the same socket from the
 * same sets; when a worker removed it in between, the second removal fails and MHD aborts the
 * process ("Failed to remove listen FD from epoll set.", daemon.c:5531). The drain must never
 * take that path (src/server/http.c, xf_http_refuse_connections).
 *
 * This program defines epoll_ctl() itself (libmicrohttpd's calls resolve to it; it forwards
 * every call to the kernel) so that the race can be forced rather than waited for: a removal
 * of the listening socket from a thread that is not one of libmicrohttpd's is held until a
 * libmicrohttpd thread has removed it from the same set — the interleaving that aborts. With
 * MHD_quiesce_daemon in the drain, test_drain_never_removes_listen_socket aborts on every
 * run; test_drain_while_listen_socket_toggles shows the same abort without any help, in about
 * one drain in 200 on a loaded 2-core machine (more rounds: XF_TEST_CHURN_ROUNDS=N). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "xf_test.h"

#include "server/http.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server_fixture.h"

/* ---- the epoll_ctl hook ------------------------------------------------------------------ */

static atomic_int hook_armed;        /* hold outside removals of the listening socket */
static atomic_int outside_removals;  /* removals of a listening socket by a non-MHD thread */
static atomic_int mhd_removed_epfd;  /* the epoll set an MHD thread last removed it from */

/* libmicrohttpd names its threads "MHD-worker", "MHD-single", ... */
static int on_mhd_thread(void)
{
    char name[16] = "";
    return pthread_getname_np(pthread_self(), name, sizeof name) == 0 &&
           strncmp(name, "MHD-", 4) == 0;
}

static int is_listening(int fd)
{
    int v = 0;
    socklen_t len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

/* A connection to the listening socket fd: every worker whose epoll set holds fd wakes. */
static int poke(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    int c = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c >= 0 && connect(c, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) {
        close(c);
        c = -1;
    }
    return c;
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int hold = op == EPOLL_CTL_DEL && atomic_load(&hook_armed) && is_listening(fd);
    int mhd = hold && on_mhd_thread();
    if (hold && !mhd) {
        /* Someone else is taking MHD's listening socket out of MHD's epoll set (what
         * MHD_quiesce_daemon does): wake MHD's workers and hold this removal until one of
         * them has removed the socket from this set (bounded: 5 s). */
        atomic_fetch_add(&outside_removals, 1);
        int c = poke(fd);
        for (int i = 0; i < 5000 && atomic_load(&mhd_removed_epfd) != epfd; i++)
            usleep(1000);
        if (c >= 0)
            close(c);
    }
    int rc = (int)syscall(SYS_epoll_ctl, epfd, op, fd, ev);
    if (mhd && rc == 0)
        atomic_store(&mhd_removed_epfd, epfd);
    return rc;
}

/* ---- tests --------------------------------------------------------------------------------- */

static xf_server_t *start(const char *dir, int http_threads, int conn_limit)
{
    xf_server_opts_t o;
    fx_opts(&o, dir);
    o.warmup = 0;
    o.http_threads = http_threads;
    if (conn_limit > 0)
        o.conn_limit = conn_limit;
    return fx_start_opts(&o);
}

/* A drain of an idle server, with the hook armed: on the old drain (MHD_quiesce_daemon) the
 * process aborts here; now nothing outside MHD's threads touches the listening socket, the
 * drain is clean and the port closes. Thread pool (the default http.threads = 2) and a single
 * MHD thread. */
static void test_drain_never_removes_listen_socket(void **state)
{
    (void)state;
    char dir[1024];
    xf_metrics_init(NULL);
    xf_log_open(XF_LOG_WARN, NULL);
    assert_int_equal(fx_write_model("race1", 0, dir, sizeof dir), 0);
    static const int threads[] = { 2, 1, 4 };
    for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
        xf_server_t *s = start(dir, threads[k], 0);
        int port = xf_server_port(s);
        json_t *j = fx_json(port, "GET", "/v2/health/ready", NULL, NULL, 200);
        json_decref(j);
        atomic_store(&outside_removals, 0);
        atomic_store(&hook_armed, 1);
        xf_server_drain(s);
        int rc = xf_server_wait(s);
        atomic_store(&hook_armed, 0);
        assert_int_equal(rc, 0);
        assert_int_equal(atomic_load(&outside_removals), 0);
        int fd = hc_connect(port);   /* stopped: the port no longer accepts */
        if (fd >= 0)
            close(fd);
        assert_true(fd < 0);
        xf_server_free(s);
    }
    xf_log_close();
    xf_test_rmtree(dir);
}

/* Poll every 10 ms until cond holds; the bound (60 s) only stops a broken server from hanging
 * make check. */
#define WAIT_UNTIL(cond)                                                                   \
    do {                                                                                   \
        for (int w_ = 0; w_ < 6000 && !(cond); w_++)                                       \
            usleep(10000);                                                                 \
        assert_true(cond);                                                                 \
    } while (0)

enum { CHURN_CLIENTS = 4, CHURN_THREADS = 4 };

typedef struct churn {
    int port;
    atomic_int *stop;
    int served;    /* a reply read */
    int closed;    /* connected, closed without a reply (after the drain stopped serving) */
    int refused;   /* connect() failed (the server stopped) */
    int bad;       /* a reply that is not 200 */
} churn_t;

static void *churn_main(void *p)
{
    churn_t *c = p;
    /* Bounded: the server stops within seconds, and the loop ends at the stop flag. */
    for (int i = 0; i < 200000 && !atomic_load(c->stop); i++) {
        int fd = hc_connect(c->port);
        if (fd < 0) {
            c->refused++;
            usleep(1000);
            continue;
        }
        hc_resp_t r;
        memset(&r, 0, sizeof r);
        if (hc_request(fd, "GET", "/v2/health/live", "Connection: close\r\n", NULL, 0,
                       &r) == 0) {
            c->served++;
            if (r.status != 200)
                c->bad++;
        } else {
            c->closed++;
        }
        hc_free(&r);
        close(fd);
    }
    return NULL;
}

static int churn_rounds(void)
{
    const char *e = getenv("XF_TEST_CHURN_ROUNDS");
    int n = e ? atoi(e) : 0;
    return n > 0 && n <= 10000 ? n : 12;
}

/* No hook: drains while the clients reconnect as fast as they can to workers that hold one
 * connection each, so that every worker keeps taking the listening socket out of its epoll
 * set and putting it back. Every drain is clean, every reply a 200. */
static void test_drain_while_listen_socket_toggles(void **state)
{
    (void)state;
    char dir[1024];
    xf_metrics_init(NULL);
    xf_log_open(XF_LOG_ERROR, NULL);
    assert_int_equal(fx_write_model("race2", 0, dir, sizeof dir), 0);
    int rounds = churn_rounds();
    int verbose = getenv("XF_TEST_CHURN_ROUNDS") != NULL;
    long served = 0, closed = 0;
    for (int round = 0; round < rounds; round++) {
        xf_server_t *s = start(dir, CHURN_THREADS, CHURN_THREADS);   /* one per worker */
        int port = xf_server_port(s);
        if (verbose)
            fprintf(stderr, "# round %d\n", round);
        atomic_int stop = 0;
        churn_t c[CHURN_CLIENTS];
        pthread_t th[CHURN_CLIENTS];
        for (int i = 0; i < CHURN_CLIENTS; i++) {
            c[i] = (churn_t){ .port = port, .stop = &stop };
            assert_int_equal(pthread_create(&th[i], NULL, churn_main, &c[i]), 0);
        }
        /* Every client served once: the workers are busy toggling. */
        for (int i = 0; i < CHURN_CLIENTS; i++)
            WAIT_UNTIL(c[i].served > 0);
        xf_server_drain(s);
        int rc = xf_server_wait(s);
        atomic_store(&stop, 1);
        for (int i = 0; i < CHURN_CLIENTS; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(c[i].bad, 0);
            served += c[i].served;
            closed += c[i].closed;
        }
        assert_int_equal(rc, 0);
        int fd = hc_connect(port);
        if (fd >= 0)
            close(fd);
        assert_true(fd < 0);
        xf_server_free(s);
    }
    print_message("# %d rounds: %ld served, %ld closed unanswered\n", rounds, served, closed);
    xf_log_close();
    xf_test_rmtree(dir);
}

/* What the drain does instead of quiescing (xf_http_refuse_connections, called here directly
 * so that no step depends on how long the drain's last phase lasts): a new connection is
 * closed without a reply and counted; a connection already open is still served. */
static void test_refused_connections(void **state)
{
    (void)state;
    char dir[1024];
    xf_metrics_init(NULL);
    xf_log_open(XF_LOG_WARN, NULL);
    assert_int_equal(fx_write_model("race3", 0, dir, sizeof dir), 0);
    xf_server_t *s = start(dir, 2, 0);
    int port = xf_server_port(s);
    int old = hc_connect(port);
    assert_true(old >= 0);
    hc_resp_t r;
    assert_int_equal(hc_request(old, "GET", "/v2/health/ready", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    int64_t before = xf_metric_value(XF_M_connections_closed_total, "draining", NULL);

    xf_http_refuse_connections(s->http);
    for (int i = 0; i < 3; i++) {
        int fd = hc_connect(port);   /* the kernel completes the handshake ... */
        assert_true(fd >= 0);
        memset(&r, 0, sizeof r);
        /* ... and MHD closes it unanswered (the send may already fail on the reset). */
        assert_int_equal(hc_request(fd, "GET", "/v2/health/live", NULL, NULL, 0, &r), -1);
        assert_int_equal(r.status, 0);
        hc_free(&r);
        close(fd);
    }
    WAIT_UNTIL(xf_metric_value(XF_M_connections_closed_total, "draining", NULL) == before + 3);
    assert_int_equal(hc_request(old, "GET", "/v2/health/live", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    close(old);
    fx_stop(s, dir);
    xf_log_close();
}

XF_TEST_MAIN(cmocka_unit_test(test_drain_never_removes_listen_socket),
             cmocka_unit_test(test_drain_while_listen_socket_toggles),
             cmocka_unit_test(test_refused_connections))
