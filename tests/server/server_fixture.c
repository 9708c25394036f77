/* Server test fixture (see server_fixture.h). */
#include "config.h"

#include "server_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xf_test.h"

#include "server/metrics.h"

int fx_write_model(const char *tag, int n_labels, char *dir, size_t len)
{
    if (!xf_test_tmpdir(dir, len, tag))
        return -1;
    xf_demo_opts_t d;
    xf_demo_opts_init_tiny(&d);
    d.n_labels = n_labels;
    xf_diag_t diag = { 0, "" };
    int rc = xf_demo_write(dir, &d, &diag);
    if (rc < 0)
        fprintf(stderr, "# xf_demo_write: %s\n", diag.msg);
    return rc;
}

void fx_opts(xf_server_opts_t *o, const char *dir)
{
    xf_server_opts_init(o);
    o->port = 0;
    o->model_dir = dir;
    o->model_name = "xformd-demo";
    o->engine_threads = 1;
    o->engine_workers = 1;
    o->http_threads = 2;
    o->handle_signals = 0;
    o->notify = 0;
    o->warmup = 1;
}

xf_server_t *fx_start_opts(const xf_server_opts_t *o)
{
    xf_server_t *s = NULL;
    xf_diag_t diag = { 0, "" };
    int rc = xf_server_start(o, &s, &diag);
    if (rc < 0)
        print_message("# xf_server_start: %s %s\n", xf_strerror(rc), diag.msg);
    assert_int_equal(rc, 0);
    return s;
}

void fx_launch(fx_srv_t *srv, const xf_server_opts_t *o)
{
    srv->s = fx_start_opts(o);
    srv->port = xf_server_port(srv->s);
    assert_true(srv->port > 0);
}

xf_server_t *fx_start(const char *tag, xf_server_opts_t *o, enum xf_log_level level, char *dir,
                      size_t len)
{
    xf_metrics_init(NULL);
    xf_log_open(level, NULL);
    assert_int_equal(fx_write_model(tag, 0, dir, len), 0);
    o->model_dir = dir;
    return fx_start_opts(o);
}

void fx_stop(xf_server_t *s, const char *dir)
{
    xf_server_drain(s);
    assert_int_equal(xf_server_wait(s), 0);
    xf_server_free(s);
    xf_test_rmtree(dir);
}

void fx_demo_start(fx_srv_t S[FX_DEMO_N], const char *prefix, fx_tweak_fn *tweak)
{
    static const int labels[FX_DEMO_N] = { 0, 3, 1 };
    static const char *const names[FX_DEMO_N] = { "plain", "cls3", "cls1" };
    xf_metrics_init(NULL);
    xf_log_open(XF_LOG_WARN, NULL);   /* keep the TAP output readable */
    for (int i = 0; i < FX_DEMO_N; i++) {
        char tag[64];
        snprintf(tag, sizeof tag, "%s_%s", prefix, names[i]);
        assert_int_equal(fx_write_model(tag, labels[i], S[i].dir, sizeof S[i].dir), 0);
        xf_server_opts_t o;
        fx_opts(&o, S[i].dir);
        if (tweak)
            tweak(i, &o);
        fx_launch(&S[i], &o);
    }
}

void fx_stop_all(fx_srv_t *S, int n)
{
    for (int i = 0; i < n; i++) {
        if (!S[i].s)
            continue;
        xf_server_drain(S[i].s);
        assert_int_equal(xf_server_wait(S[i].s), 0);
        xf_server_free(S[i].s);
        S[i].s = NULL;
        if (S[i].dir[0])
            xf_test_rmtree(S[i].dir);
    }
}

json_t *fx_json(int port, const char *method, const char *path, const char *extra,
                const char *body, int want_status)
{
    hc_resp_t r;
    int rc = hc_do(port, method, path, extra, body, &r);
    assert_int_equal(rc, 0);
    if (r.status != want_status)
        print_message("# %s %s -> %d (want %d): %s\n", method, path, r.status, want_status,
                      r.body);
    assert_int_equal(r.status, want_status);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    hc_free(&r);
    return j;
}

long long fx_metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;
    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtoll(p + n + 1, NULL, 10);
        p += n;
    }
    return -1;
}
