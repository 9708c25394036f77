/* Server test fixture (see server_fixture.h). */
#include "config.h"

#include "server_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xf_test.h"

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
