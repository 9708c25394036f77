/* Shared by the server integration tests: write a tiny demo model into a scratch directory and
 * start the real daemon in process on 127.0.0.1, port 0. */
#ifndef XF_TEST_SERVER_FIXTURE_H
#define XF_TEST_SERVER_FIXTURE_H

#include <jansson.h>

#include "server/server.h"
#include "http_client.h"

/* Write the tiny demo model (n_labels classifier outputs, 0 for none) into tmp/<tag>. */
int fx_write_model(const char *tag, int n_labels, char *dir, size_t len);
/* Options for a test server on port 0 serving dir (1 worker, 1 compute thread). */
void fx_opts(xf_server_opts_t *o, const char *dir);
/* GET/POST and parse the JSON reply; asserts the status. Returns a new reference or NULL
 * when the body is not JSON. */
json_t *fx_json(int port, const char *method, const char *path, const char *extra,
                const char *body, int want_status);
/* Value of the counter line `<series> <value>` in a /metrics text, or -1 when absent. */
long long fx_metric(const char *text, const char *series);

#endif
