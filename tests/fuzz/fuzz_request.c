/* libFuzzer target: request JSON parsing and validation of every inference API, through the same
 * code the daemon runs on its MHD threads (routes.c parse → validate → tokenise → job; after a
 * simulated completion, the reply writer), with libmicrohttpd stubbed (mhd_stub.c) and no loop,
 * workers or sockets. The first byte picks the route and the model (with 1 or 3 labels); the
 * rest is the body. Invariants: exactly one reply per request, a 2xx only with a job (or, for
 * /decode and /tokenize, which reply at once, a JSON array or string), every error body is JSON. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mhd_stub.h"
#include "server/http.h"
#include "server/loop.h"
#include "server/routes.h"
#include "server/server.h"
#include "server/workers.h"

/* What routes.c and http.c call outside themselves, in the daemon supplied by loop.c and
 * workers.c (not linked here). */
void xf_server_submit(xf_server_t *s, xf_job_t *j)
{
    (void)s;
    (void)j;
}

const char *xf_loop_policy_name(const xf_server_t *s)
{
    (void)s;
    return "tokens";
}

void xf_loop_request_done(xf_server_t *s, int route, int status, double seconds)
{
    (void)s;
    (void)route;
    (void)status;
    (void)seconds;
}

size_t xf_workers_arena_bytes(xf_workers_t *w)
{
    (void)w;
    return 0;
}

static xf_server_t *server(int n_labels)
{
    static xf_server_t *srv[2];
    int k = n_labels == 3;
    if (srv[k])
        return srv[k];
    xf_server_t *s = calloc(1, sizeof *s);
    if (!s)
        fz_fail("out of memory");
    /* The defaults of etc/xformd.conf, with smaller limits so the fuzzer reaches them. */
    s->o.max_body_bytes = 1 << 20;
    s->o.max_texts = 16;
    s->o.max_tokens = 2048;
    s->o.timeout_ms = 10000;
    s->o.normalize = 1;
    s->o.max_buffered_bytes = (size_t)1 << 30;
    s->model = (xf_model_t *)fz_tiny_model(n_labels);
    s->info = xf_model_info(s->model);
    s->tok = xf_model_tokenizer(s->model);
    strcpy(s->model_name, "xformd-demo");
    atomic_store(&s->ready, 1);
    srv[k] = s;
    return s;
}

static const char *const paths[] = { "/v1/embeddings", "/embed", "/rerank", "/predict",
                                     "/v2/models/xformd-demo/infer",
                                     "/v2/models/other/infer", "/decode", "/similarity",
                                     "/tokenize", "/embed_all", "/vertex", "/" };

/* Routes that do no model work and reply on the MHD thread (routes_tei.c). */
static int sync_route(const char *path)
{
    return strcmp(path, "/decode") == 0 || strcmp(path, "/tokenize") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *path = paths[(data[0] & 0x7f) % (sizeof paths / sizeof paths[0])];
    xf_server_t *s = server(data[0] & 0x80 ? 3 : 1);
    data++;
    size--;
    static char conn_token;
    xf_req_t *req = calloc(1, sizeof *req);
    if (!req)
        return 0;
    req->srv = s;
    req->conn = (struct MHD_Connection *)&conn_token;
    if (xf_routes_match(req, "POST", path) != XF_HE_NONE) {
        free(req);   /* a route-level refusal (unknown model): nothing to parse */
        return 0;
    }
    req->body = malloc(size + 1);
    if (!req->body) {
        free(req);
        return 0;
    }
    memcpy(req->body, data, size);
    req->body[size] = '\0';
    req->body_len = size;
    req->body_cap = size + 1;
    req->state = XF_REQ_BODY;
    fz_last_status = 0;
    xf_routes_handle(req);
    if (req->state == XF_REQ_SUSPENDED) {
        if (fz_last_status)
            fz_fail("a reply queued for a suspended request");
        if (!req->job)
            fz_fail("suspended without a job");
        /* Simulate the engine: outputs stay as allocated (zeros), status 0. */
        xf_routes_respond(req);
        if (fz_last_status != 200)
            fz_fail("a completed job did not answer 200");
    } else if (fz_last_status == 200 && sync_route(path)) {
        /* /decode and /tokenize answer on the MHD thread: no job, a JSON array or string. */
        if (fz_last_body[0] != '[' && fz_last_body[0] != '"')
            fz_fail("a synchronous reply that is not a JSON array or string");
    } else {
        if (fz_last_status < 400)
            fz_fail("a request neither suspended nor refused");
        if (fz_last_body[0] != '{')
            fz_fail("an error body that is not a JSON object");
    }
    xf_job_free(req->job);
    json_decref(req->root);
    free(req->body);
    free(req);
    return 0;
}
