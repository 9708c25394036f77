/* Routes (see routes.h): KServe v2, OpenAI embeddings, TEI embed/rerank/predict, metrics and
 * stats. Runs on MHD threads: parse (strict types, duplicate keys rejected, nesting bounded),
 * validate, tokenise into one job per request, suspend; after resume, write the reply in the
 * route's API shape. Nothing here computes or blocks. */
#include "config.h"

#include "server/routes.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/server.h"

#define MAX_JSON_DEPTH 32

static const char *const route_labels[XF_R_COUNT] = {
    [XF_R_NONE] = "other",
    [XF_R_LIVE] = "/v2/health/live",
    [XF_R_READY] = "/v2/health/ready",
    [XF_R_MODEL_META] = "/v2/models/{m}",
    [XF_R_MODEL_READY] = "/v2/models/{m}/ready",
    [XF_R_INFER] = "/v2/models/{m}/infer",
    [XF_R_EMBEDDINGS] = "/v1/embeddings",
    [XF_R_EMBED] = "/embed",
    [XF_R_RERANK] = "/rerank",
    [XF_R_PREDICT] = "/predict",
    [XF_R_METRICS] = "/metrics",
    [XF_R_STATS] = "/v1/stats",
    [XF_R_SERVER_META] = "/v2",
};

const char *xf_routes_label(int route)
{
    return route > 0 && route < XF_R_COUNT ? route_labels[route] : "other";
}

int xf_routes_has_body(int route)
{
    return route == XF_R_INFER || route == XF_R_EMBEDDINGS || route == XF_R_EMBED ||
           route == XF_R_RERANK || route == XF_R_PREDICT;
}

int xf_routes_needs_auth(int route)
{
    return !(route == XF_R_LIVE || route == XF_R_READY || route == XF_R_METRICS);
}

int xf_routes_while_draining(int route)
{
    return route == XF_R_LIVE || route == XF_R_READY || route == XF_R_METRICS ||
           route == XF_R_STATS || route == XF_R_MODEL_READY || route == XF_R_MODEL_META ||
           route == XF_R_SERVER_META;
}

static int method_is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

int xf_routes_match(xf_req_t *req, const char *method, const char *url)
{
    static const struct { const char *path; int route; enum xf_api api; } fixed[] = {
        { "/v2/health/live", XF_R_LIVE, XF_API_KSERVE },
        { "/v2/health/ready", XF_R_READY, XF_API_KSERVE },
        { "/v1/embeddings", XF_R_EMBEDDINGS, XF_API_OPENAI },
        { "/embed", XF_R_EMBED, XF_API_TEI },
        { "/rerank", XF_R_RERANK, XF_API_TEI },
        { "/predict", XF_R_PREDICT, XF_API_TEI },
        { "/metrics", XF_R_METRICS, XF_API_OWN },
        { "/v1/stats", XF_R_STATS, XF_API_OWN },
        { "/v2", XF_R_SERVER_META, XF_API_KSERVE },
    };
    req->route = XF_R_NONE;
    req->api = XF_API_OWN;
    if (strncmp(url, "/v1/embeddings", 14) == 0)
        req->api = XF_API_OPENAI;
    else if (strncmp(url, "/v2/", 4) == 0 || strcmp(url, "/v2") == 0)
        req->api = XF_API_KSERVE;
    else if (!strcmp(url, "/embed") || !strcmp(url, "/rerank") || !strcmp(url, "/predict"))
        req->api = XF_API_TEI;
    int found = XF_R_NONE;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (strcmp(url, fixed[i].path) == 0) {
            found = fixed[i].route;
            req->api = fixed[i].api;
            break;
        }
    }
    if (found == XF_R_NONE && strncmp(url, "/v2/models/", 11) == 0) {
        const char *m = url + 11;
        const char *slash = strchr(m, '/');
        size_t mlen = slash ? (size_t)(slash - m) : strlen(m);
        if (mlen > 0 && mlen < sizeof req->model) {
            memcpy(req->model, m, mlen);
            req->model[mlen] = '\0';
            const char *rest = slash ? slash : "";
            /* KServe allows /versions/{v} between the model and the verb. */
            if (strncmp(rest, "/versions/", 10) == 0) {
                const char *v = rest + 10;
                const char *s2 = strchr(v, '/');
                rest = s2 ? s2 : "";
            }
            if (!strcmp(rest, ""))
                found = XF_R_MODEL_META;
            else if (!strcmp(rest, "/ready"))
                found = XF_R_MODEL_READY;
            else if (!strcmp(rest, "/infer"))
                found = XF_R_INFER;
        }
    }
    if (found == XF_R_NONE)
        return XF_HE_NOT_FOUND + 1;
    req->route = found;
    int want_post = xf_routes_has_body(found);
    if (want_post ? !method_is(method, "POST")
                  : !(method_is(method, "GET") || method_is(method, "HEAD")))
        return XF_HE_METHOD_NOT_ALLOWED + 1;
    return 0;
}

/* ---- request parsing helpers ---------------------------------------------------------- */

/* Reject nesting deeper than MAX_JSON_DEPTH before jansson recurses into it. */
static int json_depth_ok(const char *p, size_t n)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > MAX_JSON_DEPTH)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

/* ---- error replies shared by several routes ------------------------------------------- */

static enum MHD_Result reply_oom(xf_req_t *req)
{
    return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
}

static enum MHD_Result reply_missing_field(xf_req_t *req, const char *key)
{
    return xf_http_reply_error(req, XF_HE_MISSING_FIELD, 0, "field '%s' is required", key);
}

static enum MHD_Result reply_unknown_model(xf_req_t *req)
{
    return xf_http_reply_error(req, XF_HE_MODEL_NOT_FOUND, 0, "unknown model '%s'; this server "
                               "serves '%s'", req->model, req->srv->model_name);
}

static enum MHD_Result reply_too_many_tokens(xf_req_t *req)
{
    return xf_http_reply_error(req, XF_HE_TOO_MANY_TOKENS, 0, "request has more than %d "
                               "tokens in total (request.max_tokens)", req->srv->o.max_tokens);
}

/* n texts (what: "texts" or "inputs") against request.max_texts: 1 replied, 0 within. */
static int over_max_texts(xf_req_t *req, size_t n, const char *what, enum MHD_Result *ret)
{
    if (n <= (size_t)req->srv->o.max_texts)
        return 0;
    *ret = xf_http_reply_error(req, XF_HE_TOO_MANY_INPUTS, 0, "%zu %s in one request; the "
                               "limit is %d (request.max_texts)", n, what,
                               req->srv->o.max_texts);
    return 1;
}

/* Parse req->body into req->root (an object). On error queues the reply, returns -1. */
static int parse_body(xf_req_t *req, enum MHD_Result *ret)
{
    if (req->body_len == 0) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "empty request body; expected a "
                                   "JSON object");
        return -1;
    }
    if (!json_depth_ok(req->body, req->body_len)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "JSON nested deeper than %d levels",
                                   MAX_JSON_DEPTH);
        return -1;
    }
    json_error_t err;
    json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        int utf8 = json_error_code(&err) == json_error_invalid_utf8;
        *ret = xf_http_reply_error(req, utf8 ? XF_HE_INVALID_UTF8 : XF_HE_BAD_JSON, 0,
                                   "invalid JSON at line %d column %d: %s", err.line,
                                   err.column, err.text);
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *ret = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "the request body must be a JSON "
                                   "object");
        return -1;
    }
    req->root = root;
    free(req->body);   /* strings now live in root */
    req->body = NULL;
    req->body_len = req->body_cap = 0;
    return 0;
}

/* An optional field of obj: NULL when absent or null. */
static json_t *opt_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

/* Optional boolean field: 0 ok (writes *out when present), -1 replied. */
static int get_bool(xf_req_t *req, json_t *obj, const char *key, int *out,
                    enum MHD_Result *ret)
{
    json_t *v = opt_field(obj, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field '%s' must be a boolean",
                                   key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_int(xf_req_t *req, json_t *obj, const char *key, long long lo, long long hi,
                   long long *out, enum MHD_Result *ret)
{
    json_t *v = opt_field(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0,
                                   "field '%s' must be an integer in [%lld, %lld]", key, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_str(xf_req_t *req, json_t *obj, const char *key, const char **out,
                   enum MHD_Result *ret)
{
    json_t *v = opt_field(obj, key);
    if (!v)
        return 0;
    if (!json_is_string(v)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field '%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* One text (or text pair) to tokenise, borrowed from req->root. */
typedef struct text {
    const char *s;
    size_t n;
    const char *pair;
    size_t pair_n;
} text_t;

typedef struct texts {
    text_t *v;
    size_t n;
} texts_t;

static int texts_alloc(texts_t *t, size_t n)
{
    t->v = calloc(n ? n : 1, sizeof *t->v);
    t->n = 0;
    return t->v ? 0 : -ENOMEM;
}

/* A growable int32 array. */
typedef struct ivec {
    int32_t *p;
    size_t n, cap;
} ivec_t;

static int ivec_push(ivec_t *v, const int32_t *x, size_t n)
{
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 256;
        while (cap < v->n + n)
            cap *= 2;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        v->p = p;
        v->cap = cap;
    }
    memcpy(v->p + v->n, x, n * sizeof *x);
    v->n += n;
    return 0;
}

/* Common request options (top level, or KServe "parameters"). */
typedef struct ropts {
    int truncate;
    long long timeout_ms;
} ropts_t;

static int get_ropts(xf_req_t *req, json_t *obj, ropts_t *ro, enum MHD_Result *ret)
{
    ro->truncate = 0;
    ro->timeout_ms = 0;
    if (get_bool(req, obj, "truncate", &ro->truncate, ret) < 0)
        return -1;
    if (get_int(req, obj, "timeout_ms", 1, 600000, &ro->timeout_ms, ret) < 0)
        return -1;
    return 0;
}

/* Optional per-request attention selection under key "attention" of obj: a flat object
 * {"variant": "window", "window": 256} or a bare variant name. Parsed and checked here, on the
 * MHD thread: the variant must be selectable per request (no extra weights, no state) and fit
 * the model. 0 ok (*out new or NULL when absent; the caller hands it to the job or frees it),
 * -1 replied (400 invalid_attention, the message naming the key). */
static int get_attention(xf_req_t *req, json_t *obj, xf_attn_t **out, enum MHD_Result *ret)
{
    *out = NULL;
    json_t *v = opt_field(obj, "attention");
    if (!v)
        return 0;
    if (!json_is_object(v) && !json_is_string(v)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: must be an object "
                                   "{\"variant\": ...} or a variant name");
        return -1;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        *ret = reply_oom(req);
        return -1;
    }
    char err[256] = "";
    xf_attn_t *a = NULL;
    int rc = xf_attn_parse(text, strlen(text), &a, err, sizeof err);
    free(text);
    if (rc == -ENOMEM) {
        *ret = reply_oom(req);
        return -1;
    }
    if (rc != 0 || !a) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: %s",
                                   err[0] ? err : xf_strerror(rc));
        return -1;
    }
    uint32_t fl = xf_attn_flags(a);
    if (!(fl & XF_ATTN_PER_REQUEST)) {
        const char *why = (fl & XF_ATTN_NEEDS_WEIGHTS) ? "needs weights"
                          : (fl & XF_ATTN_STATEFUL)   ? "is stateful"
                                                      : "not allowed for this variant";
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: variant %s cannot "
                                   "be chosen per request (%s)", xf_attn_name(a), why);
        xf_attn_free(a);
        return -1;
    }
    rc = xf_attn_check(a, req->srv->model, err, sizeof err);
    if (rc != 0) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: variant %s: %s",
                                   xf_attn_name(a), err[0] ? err : xf_strerror(rc));
        xf_attn_free(a);
        return -1;
    }
    *out = a;
    return 0;
}

/* Suspend the connection and hand the job to the loop. */
static enum MHD_Result submit(xf_req_t *req, xf_job_t *j, const ropts_t *ro)
{
    xf_server_t *s = req->srv;
    uint64_t now = xf_now_ns();
    long long t = s->o.timeout_ms;
    if (ro && ro->timeout_ms > 0 && ro->timeout_ms < t)
        t = ro->timeout_ms;
    j->enqueue_ns = now;
    j->deadline_ns = now + (uint64_t)t * 1000000ull;
    j->conn = req->conn;
    j->req = req;
    if (xf_job_alloc_outputs(j, s->info->d_model, s->info->n_labels) < 0) {
        xf_job_free(j);
        return reply_oom(req);
    }
    if (atomic_load(&s->draining)) {
        xf_job_free(j);
        return xf_http_reply_error(req, XF_HE_DRAINING, 1, "server is shutting down");
    }
    req->job = j;
    req->state = XF_REQ_SUSPENDED;
    /* Suspend before enqueue: the loop may resume as soon as the job is pushed. */
    MHD_suspend_connection(req->conn);
    xf_server_submit(s, j);
    return MHD_YES;
}

/* What a route's job computes; normalize -1 keeps the model's default (see jobs.h). */
typedef struct jobwant {
    int pooled, logits, normalize;
} jobwant_t;

/* The end of every inference route: with no job (ret already queued) free attn and return
 * ret; otherwise give the job its attention selection and outputs and submit it. */
static enum MHD_Result submit_job(xf_req_t *req, xf_job_t *j, xf_attn_t *attn, jobwant_t want,
                                  const ropts_t *ro, enum MHD_Result ret)
{
    if (!j) {
        xf_attn_free(attn);
        return ret;
    }
    j->attn = attn;
    j->want_pooled = want.pooled;
    j->want_logits = want.logits;
    j->normalize = want.normalize;
    return submit(req, j, ro);
}

/* Tokenise every text into a new job. On error replies and returns NULL. */
static xf_job_t *tokenise(xf_req_t *req, const texts_t *tx, const ropts_t *ro,
                          enum MHD_Result *ret)
{
    xf_server_t *s = req->srv;
    ivec_t ids = { 0 }, types = { 0 }, lens = { 0 };
    xf_tokens_t tok = { 0 };
    xf_job_t *j = NULL;
    xf_tok_opts_t to = { .no_special = 0, .split_special = 0,
                         .max_len = s->info->max_positions, .truncate = ro->truncate };
    long long total = 0;
    for (size_t i = 0; i < tx->n; i++) {
        xf_diag_t diag = { 0, "" };
        int rc = xf_tokenizer_encode(s->tok, tx->v[i].s, tx->v[i].n, tx->v[i].pair,
                                     tx->v[i].pair_n, &to, &tok, &diag);
        if (rc == XF_ETOOLONG) {
            *ret = xf_http_reply_error(req, XF_HE_INPUT_TOO_LONG, 0,
                                       "input %zu is longer than the model's limit of %d "
                                       "tokens; send \"truncate\": true to cut it (%s)", i,
                                       s->info->max_positions, diag.msg);
            goto fail;
        }
        if (rc == XF_EFORMAT) {
            *ret = xf_http_reply_error(req, XF_HE_INVALID_UTF8, 0, "input %zu: %s", i,
                                       diag.msg[0] ? diag.msg : "invalid UTF-8");
            goto fail;
        }
        if (rc < 0) {
            *ret = xf_http_reply_error(req, rc == -ENOMEM ? XF_HE_OUT_OF_MEMORY
                                                          : XF_HE_INTERNAL, 1,
                                       "tokenizer: %s", xf_strerror(rc));
            goto fail;
        }
        total += tok.n;
        if (total > s->o.max_tokens) {
            *ret = reply_too_many_tokens(req);
            goto fail;
        }
        int32_t len = tok.n;
        if (len < 1 || ivec_push(&ids, tok.ids, (size_t)tok.n) < 0 ||
            ivec_push(&types, tok.type_ids, (size_t)tok.n) < 0 || ivec_push(&lens, &len, 1) < 0) {
            *ret = xf_http_reply_error(req, len < 1 ? XF_HE_EMPTY_INPUT : XF_HE_OUT_OF_MEMORY,
                                       1, len < 1 ? "input %zu has no tokens" : "out of memory",
                                       i);
            goto fail;
        }
    }
    if (xf_job_create((int32_t)tx->n, (int32_t)ids.n, &j) < 0) {
        *ret = reply_oom(req);
        goto fail;
    }
    memcpy(j->ids, ids.p, ids.n * sizeof(int32_t));
    memcpy(j->type_ids, types.p, types.n * sizeof(int32_t));
    memcpy(j->lens, lens.p, lens.n * sizeof(int32_t));
    for (size_t i = 0; i < lens.n; i++)
        if (lens.p[i] > j->max_len)
            j->max_len = lens.p[i];
    req->usage_tokens = (int)ids.n;
    req->n_inputs = (int)tx->n;
fail:
    xf_tokens_deinit(&tok);
    free(ids.p);
    free(types.p);
    free(lens.p);
    return j;
}

/* Parse the "attention" of obj (none when obj is NULL), tokenise tx into a job and submit it.
 * Frees tx->v. */
static enum MHD_Result submit_texts(xf_req_t *req, json_t *obj, texts_t *tx, const ropts_t *ro,
                                    jobwant_t want)
{
    enum MHD_Result ret = MHD_NO;
    xf_attn_t *attn = NULL;
    if (obj && get_attention(req, obj, &attn, &ret) < 0) {
        free(tx->v);
        return ret;
    }
    xf_job_t *j = tokenise(req, tx, ro, &ret);
    free(tx->v);
    return submit_job(req, j, attn, want, ro, ret);
}

/* A string or a non-empty list of strings under key (TEI inputs / OpenAI input). */
static int get_texts(xf_req_t *req, json_t *v, const char *key, texts_t *tx,
                     enum MHD_Result *ret)
{
    if (!v) {
        *ret = reply_missing_field(req, key);
        return -1;
    }
    if (json_is_string(v)) {
        if (texts_alloc(tx, 1) < 0)
            goto oom;
        tx->v[0].s = json_string_value(v);
        tx->v[0].n = json_string_length(v);
        tx->n = 1;
        return 0;
    }
    if (!json_is_array(v)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0,
                                   "field '%s' must be a string or a list of strings", key);
        return -1;
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        *ret = xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field '%s' is an empty list",
                                   key);
        return -1;
    }
    if (over_max_texts(req, n, "texts", ret))
        return -1;
    if (texts_alloc(tx, n) < 0)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0,
                                       "field '%s'[%zu] must be a string", key, i);
            free(tx->v);
            tx->v = NULL;
            return -1;
        }
        tx->v[i].s = json_string_value(e);
        tx->v[i].n = json_string_length(e);
    }
    tx->n = n;
    return 0;
oom:
    *ret = reply_oom(req);
    return -1;
}

/* ["a", "b"]: a TEI text pair. */
static int is_str_pair(json_t *v)
{
    return json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
           json_is_string(json_array_get(v, 1));
}

static int is_token_array(json_t *v)
{
    return json_is_array(v) && json_array_size(v) > 0 &&
           json_is_integer(json_array_get(v, 0));
}

/* OpenAI token-id input: [ids] or [[ids], ...]. Builds the job directly (ids as given). */
static xf_job_t *token_input(xf_req_t *req, json_t *v, enum MHD_Result *ret)
{
    xf_server_t *s = req->srv;
    int nested = !is_token_array(v);
    size_t n = nested ? json_array_size(v) : 1;
    if (over_max_texts(req, n, "inputs", ret))
        return NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *a = nested ? json_array_get(v, i) : v;
        if (!json_is_array(a) || json_array_size(a) == 0) {
            *ret = xf_http_reply_error(req, json_is_array(a) ? XF_HE_EMPTY_INPUT
                                                             : XF_HE_BAD_FIELD, 0,
                                       "field 'input'[%zu] must be a non-empty list of token "
                                       "ids", i);
            return NULL;
        }
        size_t m = json_array_size(a);
        if (m > (size_t)s->info->max_positions) {
            *ret = xf_http_reply_error(req, XF_HE_INPUT_TOO_LONG, 0, "input %zu has %zu tokens, "
                                       "more than the model's limit of %d", i, m,
                                       s->info->max_positions);
            return NULL;
        }
        total += m;
    }
    if (total > (size_t)s->o.max_tokens) {
        *ret = reply_too_many_tokens(req);
        return NULL;
    }
    xf_job_t *j = NULL;
    if (xf_job_create((int32_t)n, (int32_t)total, &j) < 0) {
        *ret = reply_oom(req);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *a = nested ? json_array_get(v, i) : v;
        size_t m = json_array_size(a);
        for (size_t q = 0; q < m; q++) {
            json_t *e = json_array_get(a, q);
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) >= s->info->vocab_size) {
                xf_job_free(j);
                *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'input'[%zu][%zu] "
                                           "must be a token id in [0, %d)", i, q,
                                           s->info->vocab_size);
                return NULL;
            }
            j->ids[k++] = (int32_t)json_integer_value(e);
        }
        j->lens[i] = (int32_t)m;
        if ((int32_t)m > j->max_len)
            j->max_len = (int32_t)m;
    }
    req->usage_tokens = (int)total;
    req->n_inputs = (int)n;
    return j;
}

/* ---- route parsers ------------------------------------------------------------------- */

static enum MHD_Result h_embeddings(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (parse_body(req, &ret) < 0)
        return ret;
    json_t *root = req->root;
    const char *model = NULL, *fmt = NULL, *user = NULL;
    long long dims = 0;
    ropts_t ro;
    if (get_str(req, root, "model", &model, &ret) < 0 ||
        get_str(req, root, "encoding_format", &fmt, &ret) < 0 ||
        get_str(req, root, "user", &user, &ret) < 0 ||
        get_int(req, root, "dimensions", -1000000, 1000000, &dims, &ret) < 0 ||
        get_ropts(req, req->root, &ro, &ret) < 0)
        return ret;
    (void)user;
    if (model && strcmp(model, s->model_name) != 0)
        XF_LOGD("/v1/embeddings: model '%.100s' requested, serving '%s'", model, s->model_name);
    if (fmt && strcmp(fmt, "float") != 0 && strcmp(fmt, "base64") != 0)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'encoding_format' must be "
                                   "\"float\" or \"base64\"");
    req->base64 = fmt && !strcmp(fmt, "base64");
    if (json_object_get(root, "dimensions") && (dims < 1 || dims > s->info->d_model))
        return xf_http_reply_error(req, XF_HE_BAD_DIMENSIONS, 0, "field 'dimensions' must be "
                                   "between 1 and the model's %d", s->info->d_model);
    req->dimensions = (int)dims;
    json_t *in = json_object_get(root, "input");
    xf_attn_t *attn = NULL;
    if (get_attention(req, root, &attn, &ret) < 0)
        return ret;
    xf_job_t *j = NULL;
    if (in && json_is_array(in) && json_array_size(in) > 0 &&
        (is_token_array(in) || is_token_array(json_array_get(in, 0)))) {
        j = token_input(req, in, &ret);
    } else {
        texts_t tx = { 0 };
        if (get_texts(req, in, "input", &tx, &ret) == 0) {
            j = tokenise(req, &tx, &ro, &ret);
            free(tx.v);
        }
    }
    return submit_job(req, j, attn, (jobwant_t){ 1, 0, s->o.normalize }, &ro, ret);
}

static enum MHD_Result h_embed(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (parse_body(req, &ret) < 0)
        return ret;
    int normalize = 1;
    ropts_t ro;
    if (get_bool(req, req->root, "normalize", &normalize, &ret) < 0 ||
        get_ropts(req, req->root, &ro, &ret) < 0)
        return ret;
    (void)s;
    xf_attn_t *attn = NULL;
    if (get_attention(req, req->root, &attn, &ret) < 0)
        return ret;
    texts_t tx = { 0 };
    if (get_texts(req, json_object_get(req->root, "inputs"), "inputs", &tx, &ret) < 0) {
        xf_attn_free(attn);
        return ret;
    }
    xf_job_t *j = tokenise(req, &tx, &ro, &ret);
    free(tx.v);
    return submit_job(req, j, attn, (jobwant_t){ 1, 0, normalize }, &ro, ret);
}

static enum MHD_Result h_rerank(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (s->info->n_labels != 1)
        return xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0,
                                   "/rerank needs a cross-encoder (a classifier head with 1 "
                                   "label); model '%s' has %d labels", s->model_name,
                                   s->info->n_labels);
    if (parse_body(req, &ret) < 0)
        return ret;
    const char *query = NULL;
    ropts_t ro;
    if (get_str(req, req->root, "query", &query, &ret) < 0 ||
        get_bool(req, req->root, "raw_scores", &req->raw_scores, &ret) < 0 ||
        get_bool(req, req->root, "return_text", &req->return_text, &ret) < 0 ||
        get_ropts(req, req->root, &ro, &ret) < 0)
        return ret;
    if (!query)
        return reply_missing_field(req, "query");
    json_t *texts = json_object_get(req->root, "texts");
    if (texts && !json_is_array(texts))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'texts' must be a list "
                                   "of strings");
    texts_t tx = { 0 };
    if (get_texts(req, texts, "texts", &tx, &ret) < 0)
        return ret;
    size_t qn = json_string_length(json_object_get(req->root, "query"));
    for (size_t i = 0; i < tx.n; i++) {
        tx.v[i].pair = tx.v[i].s;
        tx.v[i].pair_n = tx.v[i].n;
        tx.v[i].s = query;
        tx.v[i].n = qn;
    }
    return submit_texts(req, req->root, &tx, &ro, (jobwant_t){ 0, 1, -1 });
}

static enum MHD_Result h_predict(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (s->info->n_labels < 1)
        return xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0,
                                   "/predict needs a classifier head; model '%s' has none",
                                   s->model_name);
    if (parse_body(req, &ret) < 0)
        return ret;
    ropts_t ro;
    if (get_bool(req, req->root, "raw_scores", &req->raw_scores, &ret) < 0 ||
        get_ropts(req, req->root, &ro, &ret) < 0)
        return ret;
    json_t *in = json_object_get(req->root, "inputs");
    if (!in)
        return reply_missing_field(req, "inputs");
    /* TEI: "a" | ["a","b"] (one pair) | [seq, ...] where seq is "a" or ["a","b"]. */
    texts_t tx = { 0 };
    size_t n = 1;
    int single = json_is_string(in) || is_str_pair(in);
    if (!single) {
        if (!json_is_array(in))
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'inputs' must be a "
                                       "string, a pair of strings or a list of them");
        n = json_array_size(in);
        if (n == 0)
            return xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field 'inputs' is an empty "
                                       "list");
        if (over_max_texts(req, n, "inputs", &ret))
            return ret;
    }
    if (texts_alloc(&tx, n) < 0)
        return reply_oom(req);
    for (size_t i = 0; i < n; i++) {
        json_t *e = single ? in : json_array_get(in, i);
        text_t *t = &tx.v[i];
        if (json_is_string(e)) {
            t->s = json_string_value(e);
            t->n = json_string_length(e);
        } else if (is_str_pair(e)) {
            t->s = json_string_value(json_array_get(e, 0));
            t->n = json_string_length(json_array_get(e, 0));
            t->pair = json_string_value(json_array_get(e, 1));
            t->pair_n = json_string_length(json_array_get(e, 1));
        } else {
            free(tx.v);
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'inputs'[%zu] must be a "
                                       "string or a pair of strings", i);
        }
    }
    tx.n = n;
    req->batch_form = !single;
    return submit_texts(req, req->root, &tx, &ro, (jobwant_t){ 0, 1, -1 });
}

static int model_matches(const xf_req_t *req)
{
    return strcmp(req->model, req->srv->model_name) == 0;
}

static enum MHD_Result h_infer(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (!model_matches(req))
        return reply_unknown_model(req);
    if (parse_body(req, &ret) < 0)
        return ret;
    json_t *root = req->root;
    const char *id = NULL;
    if (get_str(req, root, "id", &id, &ret) < 0)
        return ret;
    ropts_t ro = { 0, 0 };
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'parameters' must be an "
                                   "object");
    if (params && get_ropts(req, params, &ro, &ret) < 0)
        return ret;
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1)
        return xf_http_reply_error(req, inputs ? XF_HE_BAD_FIELD : XF_HE_MISSING_FIELD, 0,
                                   "field 'inputs' must be a list with one BYTES tensor "
                                   "(the texts)");
    json_t *t = json_array_get(inputs, 0);
    const char *dt = NULL;
    if (!json_is_object(t))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0] must be an object");
    if (get_str(req, t, "datatype", &dt, &ret) < 0)
        return ret;
    if (!dt || strcmp(dt, "BYTES") != 0)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].datatype must be "
                                   "\"BYTES\"");
    json_t *shape = json_object_get(t, "shape");
    json_t *data = json_object_get(t, "data");
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 2)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].shape must be [n] or "
                                   "[n, 1]");
    long long count = 1;
    for (size_t i = 0; i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            json_integer_value(d) > 1000000)
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].shape must hold "
                                       "non-negative integers");
        count *= json_integer_value(d);
    }
    if (!json_is_array(data))
        return xf_http_reply_error(req, data ? XF_HE_BAD_FIELD : XF_HE_MISSING_FIELD, 0,
                                   "inputs[0].data must be a list of strings");
    /* Flatten one level of nesting ([[s],[s]] for shape [n,1]). */
    size_t n = json_array_size(data);
    int nested = n > 0 && json_is_array(json_array_get(data, 0));
    if (nested) {
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(data, i);
            if (!json_is_array(e) || json_array_size(e) != 1)
                return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].data[%zu] must "
                                           "be a string or a list of one string", i);
        }
    }
    if (n == 0)
        return xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "inputs[0].data is empty");
    if ((long long)n != count)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].shape says %lld "
                                   "elements, data has %zu", count, n);
    if (over_max_texts(req, n, "texts", &ret))
        return ret;
    texts_t tx = { 0 };
    if (texts_alloc(&tx, n) < 0)
        return reply_oom(req);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(data, i);
        if (nested)
            e = json_array_get(e, 0);
        if (!json_is_string(e)) {
            free(tx.v);
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].data[%zu] must be a "
                                       "string", i);
        }
        tx.v[i].s = json_string_value(e);
        tx.v[i].n = json_string_length(e);
    }
    tx.n = n;
    /* Requested outputs: embedding (default) and/or logits. */
    req->want_embed_out = 1;
    req->want_logits_out = 0;
    json_t *outs = json_object_get(root, "outputs");
    if (outs) {
        if (!json_is_array(outs)) {
            free(tx.v);
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'outputs' must be a "
                                       "list");
        }
        if (json_array_size(outs) > 0)
            req->want_embed_out = 0;
        for (size_t i = 0; i < json_array_size(outs); i++) {
            const char *name = json_string_value(json_object_get(json_array_get(outs, i),
                                                                 "name"));
            if (name && !strcmp(name, "embedding")) {
                req->want_embed_out = 1;
            } else if (name && !strcmp(name, "logits") && s->info->n_labels > 0) {
                req->want_logits_out = 1;
            } else {
                free(tx.v);
                return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "outputs[%zu]: unknown "
                                           "output (this model has: embedding%s)", i,
                                           s->info->n_labels > 0 ? ", logits" : "");
            }
        }
    }
    /* KServe v2 puts extra request fields under "parameters". */
    return submit_texts(req, params, &tx, &ro,
                        (jobwant_t){ req->want_embed_out, req->want_logits_out,
                                     s->o.normalize });
}

static json_t *model_meta(const xf_server_t *s)
{
    const xf_model_info_t *mi = s->info;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->model_name));
    json_object_set_new(o, "versions", json_pack("[s]", "1"));
    json_object_set_new(o, "platform", json_string("xformd"));
    json_object_set_new(o, "inputs", json_pack("[{s:s,s:s,s:[i]}]", "name", "text",
                                               "datatype", "BYTES", "shape", -1));
    json_t *outs = json_pack("[{s:s,s:s,s:[i,i]}]", "name", "embedding", "datatype", "FP32",
                             "shape", -1, mi->d_model);
    if (mi->n_labels > 0)
        json_array_append_new(outs, json_pack("{s:s,s:s,s:[i,i]}", "name", "logits",
                                              "datatype", "FP32", "shape", -1, mi->n_labels));
    json_object_set_new(o, "outputs", outs);
    const xf_attn_t *a = xf_model_attention(s->model);
    json_t *p = json_object();
    json_object_set_new(p, "architecture", json_string(mi->arch_name ? mi->arch_name : ""));
    json_object_set_new(p, "n_layer", json_integer(mi->n_layer));
    json_object_set_new(p, "d_model", json_integer(mi->d_model));
    json_object_set_new(p, "vocab_size", json_integer(mi->vocab_size));
    json_object_set_new(p, "max_positions", json_integer(mi->max_positions));
    json_object_set_new(p, "n_params", json_integer(mi->n_params));
    json_object_set_new(p, "n_labels", json_integer(mi->n_labels));
    json_object_set_new(p, "dtype", json_string(mi->file_dtype ? mi->file_dtype : "F32"));
    /* KServe v2 parameter values are scalars: the canonical selection as JSON text, its
     * variant name, and the variants a request may choose, comma-separated. */
    if (!a)
        a = xf_attn_dense();
    char ajson[1024];
    int an = xf_attn_to_json(a, ajson, sizeof ajson);
    json_object_set_new(p, "attention", json_string(an >= 0 && (size_t)an < sizeof ajson
                                                    ? ajson : xf_attn_name(a)));
    json_object_set_new(p, "attention_variant", json_string(xf_attn_name(a)));
    xf_buf_t pr = { 0 };
    for (int i = 0, k = 0; i < xf_attn_variant_count(); i++) {
        xf_attn_variant_info_t vi;
        if (xf_attn_variant_get(i, &vi) == 0 && (vi.flags & XF_ATTN_PER_REQUEST)) {
            xf_buf_printf(&pr, "%s%s", k++ ? "," : "", vi.name);
        }
    }
    json_object_set_new(p, "attention_per_request", json_stringn(pr.p ? pr.p : "",
                                                                 pr.oom ? 0 : pr.len));
    xf_buf_free(&pr);
    json_object_set_new(p, "quantisation", json_string("none"));
    json_object_set_new(p, "demo", json_boolean(mi->is_demo));
    if (mi->is_demo)
        json_object_set_new(p, "warning", json_string("random-weight demo model: embeddings "
                                                      "carry no meaning; start xformd with "
                                                      "--model DIR"));
    json_object_set_new(o, "parameters", p);
    return o;
}

/* ---- replies ---------------------------------------------------------------------------- */

static void put_floats(xf_buf_t *b, const float *v, size_t n)
{
    xf_buf_putn(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            xf_buf_putn(b, ",", 1);
        xf_buf_float(b, v[i]);
    }
    xf_buf_putn(b, "]", 1);
}

static void put_base64(xf_buf_t *b, const float *v, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)v;   /* little-endian float32 bytes */
    size_t len = n * sizeof(float);
    xf_buf_putn(b, "\"", 1);
    for (size_t i = 0; i < len; i += 3) {
        unsigned x = (unsigned)p[i] << 16;
        if (i + 1 < len)
            x |= (unsigned)p[i + 1] << 8;
        if (i + 2 < len)
            x |= p[i + 2];
        char q[4] = { tab[(x >> 18) & 63], tab[(x >> 12) & 63],
                      i + 1 < len ? tab[(x >> 6) & 63] : '=', i + 2 < len ? tab[x & 63] : '=' };
        xf_buf_putn(b, q, 4);
    }
    xf_buf_putn(b, "\"", 1);
}

static enum MHD_Result r_embeddings(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    xf_job_t *j = req->job;
    size_t d = (size_t)s->info->d_model;
    size_t dims = req->dimensions > 0 ? (size_t)req->dimensions : d;
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    float *tmp = dims < d ? malloc(dims * sizeof *tmp) : NULL;
    for (int32_t i = 0; i < j->n_seq; i++) {
        const float *row = j->pooled + (size_t)i * d;
        if (dims < d && tmp) {
            /* Matryoshka-style: keep the first dims and renormalise them. */
            double ss = 0;
            for (size_t c = 0; c < dims; c++)
                ss += (double)row[c] * row[c];
            float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
            for (size_t c = 0; c < dims; c++)
                tmp[c] = row[c] * inv;
            row = tmp;
        }
        xf_buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":",
                      i ? "," : "", (int)i);
        if (req->base64)
            put_base64(&b, row, dims);
        else
            put_floats(&b, row, dims);
        xf_buf_puts(&b, "}");
    }
    if (dims < d && !tmp)
        b.oom = 1;
    free(tmp);
    xf_buf_puts(&b, "],\"model\":");
    xf_buf_json_str(&b, s->model_name, strlen(s->model_name));
    xf_buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}",
                  req->usage_tokens, req->usage_tokens);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

static enum MHD_Result r_embed(xf_req_t *req)
{
    xf_job_t *j = req->job;
    size_t d = (size_t)req->srv->info->d_model;
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "[");
    for (int32_t i = 0; i < j->n_seq; i++) {
        if (i)
            xf_buf_puts(&b, ",");
        put_floats(&b, j->pooled + (size_t)i * d, d);
    }
    xf_buf_puts(&b, "]");
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

static float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

typedef struct scored {
    float score;
    int index;
} scored_t;

static int cmp_scored(const void *a, const void *b)
{
    const scored_t *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->index - y->index;
}

static enum MHD_Result r_rerank(xf_req_t *req)
{
    xf_job_t *j = req->job;
    scored_t *sc = calloc((size_t)j->n_seq, sizeof *sc);
    if (!sc)
        return reply_oom(req);
    for (int32_t i = 0; i < j->n_seq; i++) {
        sc[i].index = i;
        sc[i].score = req->raw_scores ? j->logits[i] : sigmoidf(j->logits[i]);
    }
    qsort(sc, (size_t)j->n_seq, sizeof *sc, cmp_scored);
    json_t *texts = json_object_get(req->root, "texts");
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "[");
    for (int32_t i = 0; i < j->n_seq; i++) {
        xf_buf_printf(&b, "%s{\"index\":%d,\"score\":", i ? "," : "", sc[i].index);
        xf_buf_float(&b, sc[i].score);
        if (req->return_text) {
            json_t *t = json_array_get(texts, (size_t)sc[i].index);
            xf_buf_puts(&b, ",\"text\":");
            xf_buf_json_str(&b, json_string_value(t), json_string_length(t));
        }
        xf_buf_puts(&b, "}");
    }
    xf_buf_puts(&b, "]");
    free(sc);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

static void label_name(const xf_model_info_t *mi, int k, char *buf, size_t len)
{
    if (mi->labels && mi->labels[k])
        snprintf(buf, len, "%s", mi->labels[k]);
    else
        snprintf(buf, len, "LABEL_%d", k);
}

static enum MHD_Result r_predict(xf_req_t *req)
{
    const xf_model_info_t *mi = req->srv->info;
    xf_job_t *j = req->job;
    int nl = mi->n_labels;
    scored_t *sc = calloc((size_t)nl, sizeof *sc);
    if (!sc)
        return reply_oom(req);
    xf_buf_t b = { 0 };
    if (req->batch_form)
        xf_buf_puts(&b, "[");
    for (int32_t i = 0; i < j->n_seq; i++) {
        const float *lg = j->logits + (size_t)i * (size_t)nl;
        float mx = lg[0];
        for (int k = 1; k < nl; k++)
            mx = lg[k] > mx ? lg[k] : mx;
        double z = 0;
        for (int k = 0; k < nl; k++)
            z += exp((double)(lg[k] - mx));
        for (int k = 0; k < nl; k++) {
            sc[k].index = k;
            if (req->raw_scores)
                sc[k].score = lg[k];
            else if (nl == 1)
                sc[k].score = sigmoidf(lg[k]);
            else
                sc[k].score = (float)(exp((double)(lg[k] - mx)) / z);
        }
        qsort(sc, (size_t)nl, sizeof *sc, cmp_scored);
        xf_buf_puts(&b, i ? ",[" : "[");
        for (int k = 0; k < nl; k++) {
            char name[128];
            label_name(mi, sc[k].index, name, sizeof name);
            xf_buf_puts(&b, k ? ",{\"score\":" : "{\"score\":");
            xf_buf_float(&b, sc[k].score);
            xf_buf_puts(&b, ",\"label\":");
            xf_buf_json_str(&b, name, strlen(name));
            xf_buf_puts(&b, "}");
        }
        xf_buf_puts(&b, "]");
    }
    if (req->batch_form)
        xf_buf_puts(&b, "]");
    free(sc);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

static enum MHD_Result r_infer(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    xf_job_t *j = req->job;
    size_t d = (size_t)s->info->d_model, nl = (size_t)s->info->n_labels;
    const char *id = json_string_value(json_object_get(req->root, "id"));
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "{\"model_name\":");
    xf_buf_json_str(&b, s->model_name, strlen(s->model_name));
    xf_buf_puts(&b, ",\"model_version\":\"1\"");
    if (id) {
        xf_buf_puts(&b, ",\"id\":");
        xf_buf_json_str(&b, id, strlen(id));
    }
    xf_buf_puts(&b, ",\"outputs\":[");
    int first = 1;
    if (req->want_embed_out) {
        xf_buf_printf(&b, "{\"name\":\"embedding\",\"datatype\":\"FP32\",\"shape\":[%d,%zu],"
                      "\"data\":", (int)j->n_seq, d);
        put_floats(&b, j->pooled, (size_t)j->n_seq * d);
        xf_buf_puts(&b, "}");
        first = 0;
    }
    if (req->want_logits_out) {
        xf_buf_printf(&b, "%s{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[%d,%zu],"
                      "\"data\":", first ? "" : ",", (int)j->n_seq, nl);
        put_floats(&b, j->logits, (size_t)j->n_seq * nl);
        xf_buf_puts(&b, "}");
    }
    xf_buf_puts(&b, "]}");
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* ---- dispatch --------------------------------------------------------------------------- */

/* The inference routes: the handler that turns a request into a job, and the reply written
 * once the job has run. */
typedef struct job_route {
    enum MHD_Result (*handle)(xf_req_t *req);
    enum MHD_Result (*respond)(xf_req_t *req);
} job_route_t;

static const job_route_t job_routes[XF_R_COUNT] = {
    [XF_R_EMBEDDINGS] = { h_embeddings, r_embeddings },
    [XF_R_EMBED] = { h_embed, r_embed },
    [XF_R_RERANK] = { h_rerank, r_rerank },
    [XF_R_PREDICT] = { h_predict, r_predict },
    [XF_R_INFER] = { h_infer, r_infer },
};

/* The entry of route, or NULL when it runs no job. */
static const job_route_t *job_route(int route)
{
    if (route <= 0 || route >= XF_R_COUNT || !job_routes[route].handle)
        return NULL;
    return &job_routes[route];
}

enum MHD_Result xf_routes_handle(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    int ready = atomic_load(&s->ready);
    switch (req->route) {
    case XF_R_LIVE:
        return xf_http_reply_json(req, 200, json_pack("{s:b}", "live", 1));
    case XF_R_SERVER_META:
        return xf_http_reply_json(req, 200, json_pack("{s:s,s:s,s:[]}", "name", "xformd",
                                                      "version", xf_version(), "extensions"));
    case XF_R_READY:
        return xf_http_reply_json(req, ready ? 200 : 503, json_pack("{s:b}", "ready", ready));
    case XF_R_MODEL_META:
        if (!model_matches(req))
            return reply_unknown_model(req);
        return xf_http_reply_json(req, 200, model_meta(s));
    case XF_R_MODEL_READY:
        if (!model_matches(req))
            return reply_unknown_model(req);
        return xf_http_reply_json(req, ready ? 200 : 503,
                                  json_pack("{s:s,s:b}", "name", s->model_name, "ready",
                                            ready));
    case XF_R_METRICS: {
        if (!s->o.metrics_enabled)
            return xf_http_reply_error(req, XF_HE_NOT_FOUND, 0, "metrics are disabled "
                                       "(metrics.enabled)");
        xf_metric_set(XF_M_arena_bytes, "held", NULL,
                      (int64_t)xf_workers_arena_bytes(s->workers));
        char *text = NULL;
        size_t len = 0;
        if (xf_metrics_render(&text, &len) < 0)
            return reply_oom(req);
        xf_buf_t b = { .p = text, .len = len, .cap = len + 1 };
        return xf_http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    case XF_R_STATS: {
        json_t *st = xf_metrics_stats_json();
        if (!st)
            return reply_oom(req);
        json_t *m = json_pack("{s:s,s:s,s:I,s:b,s:s,s:s,s:s,s:I}", "name", s->model_name,
                              "dir", s->info->dir ? s->info->dir : "", "n_params",
                              (json_int_t)s->info->n_params, "demo", s->info->is_demo,
                              "quantize", s->info->quantize ? s->info->quantize : "none",
                              "policy", xf_loop_policy_name(s), "cpu", s->cpu_desc,
                              "uptime_ms", (json_int_t)((xf_now_ns() - s->start_ns) / 1000000));
        if (m)
            json_object_set_new(st, "model", m);
        return xf_http_reply_json(req, 200, st);
    }
    default: {
        const job_route_t *jr = job_route(req->route);
        if (jr)
            return jr->handle(req);
        return xf_http_reply_error(req, XF_HE_NOT_FOUND, 0, "no such route");
    }
    }
}

enum MHD_Result xf_routes_respond(xf_req_t *req)
{
    xf_job_t *j = req->job;
    if (!j)
        return xf_http_reply_error(req, XF_HE_INTERNAL, 0, "resumed without a job");
    if (j->status)
        return xf_http_reply_error(req, (enum xf_http_err)(j->status - 1), j->retry_after_s,
                                   "%s", j->msg);
    const job_route_t *jr = job_route(req->route);
    if (!jr)
        return xf_http_reply_error(req, XF_HE_INTERNAL, 0, "route has no reply");
    return jr->respond(req);
}
