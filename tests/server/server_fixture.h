/* Shared by the server integration tests: write a tiny demo model into a scratch directory and
 * start the real daemon in process on 127.0.0.1, port 0. */
#ifndef XF_TEST_SERVER_FIXTURE_H
#define XF_TEST_SERVER_FIXTURE_H

#include <jansson.h>

#include "server/log.h"
#include "server/server.h"
#include "http_client.h"

/* Write the tiny demo model (n_labels classifier outputs, 0 for none) into tmp/<tag>. */
int fx_write_model(const char *tag, int n_labels, char *dir, size_t len);
/* Options for a test server on port 0 serving dir (1 worker, 1 compute thread). */
void fx_opts(xf_server_opts_t *o, const char *dir);
/* A test server held by a test program: the server, its port and its model directory (empty
 * when the program owns the directory itself). */
typedef struct fx_srv {
    xf_server_t *s;
    int port;
    char dir[1024];
} fx_srv_t;

/* Start a server with o (o->model_dir set); asserts success (printing the error and the diag
 * when it fails) and returns it. */
xf_server_t *fx_start_opts(const xf_server_opts_t *o);
/* fx_start_opts() into srv, with its port (asserted > 0). */
void fx_launch(fx_srv_t *srv, const xf_server_opts_t *o);
/* Drain, wait (asserts a clean exit) and free every started server of S[0..n); removes each
 * one's dir when set. Servers never started are passed over. */
void fx_stop_all(fx_srv_t *S, int n);
/* The three demo servers the HTTP tests share: plain (embeddings only), cls3 (3 labels) and
 * cls1 (1 label: a cross-encoder). */
enum fx_demo { FX_PLAIN, FX_CLS3, FX_CLS1, FX_DEMO_N };
/* Per-server option changes for fx_demo_start(): i is an enum fx_demo. */
typedef void fx_tweak_fn(int i, xf_server_opts_t *o);
/* Reset the metrics, log warnings only, and start the three demo servers into S, their
 * models in tmp/<prefix>_plain, _cls3, _cls1; tweak (or NULL: the daemon's defaults) adjusts
 * each one's options. Stop them with fx_stop_all(S, FX_DEMO_N). */
void fx_demo_start(fx_srv_t S[FX_DEMO_N], const char *prefix, fx_tweak_fn *tweak);
/* Reset the metrics, open the log at level (stderr), write the tiny demo model into tmp/<tag>
 * (dir), point o->model_dir at it and start the server; asserts success (printing the diag when
 * it fails). Stop with fx_stop(). */
xf_server_t *fx_start(const char *tag, xf_server_opts_t *o, enum xf_log_level level, char *dir,
                      size_t len);
/* Drain, wait (asserts a clean exit), free the server and remove dir. */
void fx_stop(xf_server_t *s, const char *dir);
/* GET/POST and parse the JSON reply; asserts the status. Returns a new reference or NULL
 * when the body is not JSON. */
json_t *fx_json(int port, const char *method, const char *path, const char *extra,
                const char *body, int want_status);
/* Value of the counter line `<series> <value>` in a /metrics text, or -1 when absent. */
long long fx_metric(const char *text, const char *series);

#endif
