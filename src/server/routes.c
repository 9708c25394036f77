/* Routes (see routes.h): the route table and matching, the parsing and job helpers every route
 * uses (routes_internal.h), OpenAI embeddings and models, metrics and stats; TEI's routes are
 * in routes_tei.c, KServe v2's in routes_kserve.c. Runs on MHD threads: parse (strict types, duplicate keys
 * rejected, nesting bounded), validate, tokenise into one job per request, suspend; after
 * resume, write the reply in the route's API shape. Nothing here computes or blocks. */
#include "config.h"

#include "server/routes.h"
#include "server/routes_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/log.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/sessions.h"

#define MAX_JSON_DEPTH 32

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

enum MHD_Result xf_routes_reply_oom(xf_req_t *req)
{
    return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
}

/* The start of a TEI error message for a body that does not deserialise into the route's
 * request type: axum's Json extractor words its 422 that way (TEI sends it as plain text;
 * xformd in TEI's error JSON), followed by serde's reason. "" on the other APIs. */
static const char *deser(const xf_req_t *req)
{
    return req->api == XF_API_TEI ? "Failed to deserialize the JSON body into the target type: "
                                  : "";
}

enum MHD_Result xf_routes_reply_missing_field(xf_req_t *req, const char *key)
{
    req->err_param = key;
    return xf_http_reply_error(req, XF_HE_MISSING_FIELD, 0, "%sfield '%s' is required%s",
                               deser(req), key,
                               req->api == XF_API_TEI ? " (missing field)" : "");
}

enum MHD_Result xf_routes_reply_too_many_tokens(xf_req_t *req)
{
    return xf_http_reply_error(req, XF_HE_TOO_MANY_TOKENS, 0, "request has more than %d "
                               "tokens in total (request.max_tokens)", req->srv->o.max_tokens);
}

/* n texts (what: "texts" or "inputs") against request.max_texts: 1 replied, 0 within. */
step_t xf_routes_over_max_texts(xf_req_t *req, size_t n, const char *what, enum MHD_Result *ret)
{
    if (n <= (size_t)req->srv->o.max_texts)
        return STEP_OK;
    *ret = xf_http_reply_error(req, XF_HE_TOO_MANY_INPUTS, 0, "%zu %s in one request; the "
                               "limit is %d (request.max_texts)", n, what,
                               req->srv->o.max_texts);
    return STEP_REPLIED;
}

/* Parse req->body into req->root (an object). On error queues the reply, returns -1. */
step_t xf_routes_parse_body(xf_req_t *req, enum MHD_Result *ret)
{
    if (req->root)
        return STEP_OK;   /* already parsed (TEI's "/" looks at the body to pick a route) */
    if (req->body_len == 0) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "empty request body; expected a "
                                   "JSON object");
        return STEP_REPLIED;
    }
    if (!json_depth_ok(req->body, req->body_len)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "JSON nested deeper than %d levels",
                                   MAX_JSON_DEPTH);
        return STEP_REPLIED;
    }
    json_error_t err;
    /* "\u0000" is valid JSON and turns up in extracted text (PDFs): OpenAI and TEI embed it
     * (BERT's clean_text drops U+0000, as xf_tokenizer_encode does), so texts keep it — they
     * are read with json_string_length() — and xf_routes_get_str() refuses it in the other
     * string fields, which are compared as C strings. */
    json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                              &err);
    if (!root) {
        int utf8 = json_error_code(&err) == json_error_invalid_utf8;
        *ret = xf_http_reply_error(req, utf8 ? XF_HE_INVALID_UTF8 : XF_HE_BAD_JSON, 0,
                                   "invalid JSON at line %d column %d: %s", err.line,
                                   err.column, err.text);
        return STEP_REPLIED;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *ret = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "the request body must be a JSON "
                                   "object");
        return STEP_REPLIED;
    }
    req->root = root;
    free(req->body);   /* strings now live in root */
    req->body = NULL;
    req->body_len = req->body_cap = 0;
    return STEP_OK;
}

/* An optional field of obj: NULL when absent or null. */
json_t *xf_routes_opt_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

/* TEI deserialises its requests with serde: a field typed Option<T> takes null as absent,
 * a plain field with a default (normalize, raw_scores, return_text, truncation_direction,
 * add_special_tokens, skip_special_tokens) or a required one (query, source_sentence, ...)
 * refuses null, and axum answers 422 for a body that does not deserialise. TEI's Option fields
 * (router/src/http/types.rs), then xformd's own options, which take null as absent everywhere. */
static int tei_nullable(const char *key)
{
    static const char *const keys[] = { "truncate", "prompt_name", "dimensions", "model",
                                        "user", "parameters", "timeout_ms", "attention" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(key, keys[i]))
            return 1;
    return 0;
}

/* obj's key for a typed getter: NULL when absent, or null where null means absent (every API
 * but TEI, and TEI's Option fields); a null TEI does not take is refused here (TEI: 422
 * Validation, the message worded as serde's "invalid type: null, expected ..."). */
static step_t typed_field(xf_req_t *req, json_t *obj, const char *key, const char *expected,
                          json_t **out, enum MHD_Result *ret)
{
    json_t *v = json_object_get(obj, key);
    *out = v && !json_is_null(v) ? v : NULL;
    if (!v || !json_is_null(v) || req->api != XF_API_TEI || tei_nullable(key))
        return STEP_OK;
    req->err_param = key;
    *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%sfield '%s' must be %s, not null "
                               "(invalid type: null, expected %s)", deser(req), key, expected,
                               expected);
    return STEP_REPLIED;
}

/* Optional boolean field: 0 ok (writes *out when present), -1 replied. */
step_t xf_routes_get_bool(xf_req_t *req, json_t *obj, const char *key, int *out,
                          enum MHD_Result *ret)
{
    json_t *v;
    if (typed_field(req, obj, key, "a boolean", &v, ret) != STEP_OK)
        return STEP_REPLIED;
    if (!v)
        return STEP_OK;
    if (!json_is_boolean(v)) {
        req->err_param = key;
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%sfield '%s' must be a boolean",
                                   deser(req), key);
        return STEP_REPLIED;
    }
    *out = json_is_true(v);
    return STEP_OK;
}

step_t xf_routes_get_int(xf_req_t *req, json_t *obj, const char *key, long long lo, long long hi,
                         long long *out, enum MHD_Result *ret)
{
    json_t *v;
    if (typed_field(req, obj, key, "an integer", &v, ret) != STEP_OK)
        return STEP_REPLIED;
    if (!v)
        return STEP_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        req->err_param = key;
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0,
                                   "field '%s' must be an integer in [%lld, %lld]", key, lo, hi);
        return STEP_REPLIED;
    }
    *out = json_integer_value(v);
    return STEP_OK;
}

static step_t get_string(xf_req_t *req, json_t *obj, const char *key, int text,
                         const char **out, enum MHD_Result *ret)
{
    json_t *v;
    if (typed_field(req, obj, key, "a string", &v, ret) != STEP_OK)
        return STEP_REPLIED;
    if (!v)
        return STEP_OK;
    if (!json_is_string(v)) {
        req->err_param = key;
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%sfield '%s' must be a string",
                                   deser(req), key);
        return STEP_REPLIED;
    }
    if (!text && strlen(json_string_value(v)) != json_string_length(v)) {
        req->err_param = key;
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%sfield '%s' must not contain "
                                   "U+0000", deser(req), key);
        return STEP_REPLIED;
    }
    *out = json_string_value(v);
    return STEP_OK;
}

step_t xf_routes_get_str(xf_req_t *req, json_t *obj, const char *key, const char **out,
                         enum MHD_Result *ret)
{
    return get_string(req, obj, key, 0, out, ret);
}

step_t xf_routes_get_text(xf_req_t *req, json_t *obj, const char *key, const char **out,
                          enum MHD_Result *ret)
{
    return get_string(req, obj, key, 1, out, ret);
}

int xf_routes_texts_alloc(texts_t *t, size_t n)
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

step_t xf_routes_get_ropts(xf_req_t *req, json_t *obj, ropts_t *ro, enum MHD_Result *ret)
{
    const char *dir = NULL;
    /* TEI: "truncate" defaults to the server's --auto-truncate (TEI's Info.auto_truncate) */
    ro->truncate = req->api == XF_API_TEI ? req->srv->o.auto_truncate : 0;
    ro->truncate_left = 0;
    ro->timeout_ms = 0;
    ro->prompt = NULL;
    ro->prompt_n = 0;
    if (xf_routes_get_bool(req, obj, "truncate", &ro->truncate, ret) != STEP_OK)
        return STEP_REPLIED;
    /* A client may lengthen its deadline up to request.max_timeout_ms (the range in the
     * error message is that bound). */
    if (xf_routes_get_int(req, obj, "timeout_ms", 1, req->srv->o.max_timeout_ms, &ro->timeout_ms,
                          ret) != STEP_OK)
        return STEP_REPLIED;
    if (xf_routes_get_str(req, obj, "truncation_direction", &dir, ret) != STEP_OK)
        return STEP_REPLIED;
    if (dir && strcasecmp(dir, "left") != 0 && strcasecmp(dir, "right") != 0) {
        req->err_param = "truncation_direction";
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'truncation_direction' must "
                                   "be \"Left\" or \"Right\"");
        return STEP_REPLIED;
    }
    ro->truncate_left = dir && !strcasecmp(dir, "left");
    return STEP_OK;
}

/* TEI's prompt_name: a key of the "prompts" of the model's config_sentence_transformers.json,
 * whose text goes before every text of the request (sentence-transformers' prompts). A name
 * the model has no prompt for is an error (TEI: 422 Validation), never ignored. */
step_t xf_routes_get_prompt(xf_req_t *req, json_t *obj, ropts_t *ro, enum MHD_Result *ret)
{
    const char *name = NULL;
    if (xf_routes_get_str(req, obj, "prompt_name", &name, ret) != STEP_OK)
        return STEP_REPLIED;
    if (!name)
        return STEP_OK;
    json_t *prompts = req->srv->st_prompts;
    json_t *p = prompts ? json_object_get(prompts, name) : NULL;
    if (json_is_string(p)) {
        ro->prompt = json_string_value(p);
        ro->prompt_n = json_string_length(p);
        return STEP_OK;
    }
    req->err_param = "prompt_name";
    if (!prompts || json_object_size(prompts) == 0) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "prompt_name '%.100s': model '%s' "
                                   "has no prompts (no \"prompts\" in its "
                                   "config_sentence_transformers.json)", name,
                                   req->srv->model_name);
        return STEP_REPLIED;
    }
    xf_buf_t keys = { 0 };
    const char *k;
    json_t *v;
    json_object_foreach(prompts, k, v) {
        xf_buf_printf(&keys, "%s'%s'", keys.len ? ", " : "", k);
    }
    *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "prompt_name '%.100s' is not one of "
                               "the model's prompts: %.300s", name,
                               keys.p && !keys.oom ? keys.p : "?");
    xf_buf_free(&keys);
    return STEP_REPLIED;
}

/* Optional per-request attention selection under key "attention" of obj: a flat object
 * {"variant": "window", "window": 256} or a bare variant name. Parsed and checked here, on the
 * MHD thread: the variant must be selectable per request (no extra weights, no state) and fit
 * the model. 0 ok (*out new or NULL when absent; the caller hands it to the job or frees it),
 * -1 replied (400 invalid_attention, the message naming the key). */
step_t xf_routes_get_attention(xf_req_t *req, json_t *obj, xf_attn_t **out, enum MHD_Result *ret)
{
    *out = NULL;
    json_t *v = xf_routes_opt_field(obj, "attention");
    if (!v)
        return STEP_OK;
    req->err_param = "attention";   /* every error below is about this field */
    if (!json_is_object(v) && !json_is_string(v)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: must be an object "
                                   "{\"variant\": ...} or a variant name");
        return STEP_REPLIED;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        *ret = xf_routes_reply_oom(req);
        return STEP_REPLIED;
    }
    char err[256] = "";
    xf_attn_t *a = NULL;
    int rc = xf_attn_parse(text, strlen(text), &a, err, sizeof err);
    free(text);
    if (rc == -ENOMEM) {
        *ret = xf_routes_reply_oom(req);
        return STEP_REPLIED;
    }
    if (rc != 0 || !a) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: %s",
                                   err[0] ? err : xf_strerror(rc));
        return STEP_REPLIED;
    }
    uint32_t fl = xf_attn_flags(a);
    if (!(fl & XF_ATTN_PER_REQUEST)) {
        const char *why = (fl & XF_ATTN_NEEDS_WEIGHTS) ? "needs weights"
                          : (fl & XF_ATTN_STATEFUL)   ? "is stateful"
                                                      : "not allowed for this variant";
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: variant %s cannot "
                                   "be chosen per request (%s)", xf_attn_name(a), why);
        xf_attn_free(a);
        return STEP_REPLIED;
    }
    rc = xf_attn_check(a, req->srv->model, err, sizeof err);
    if (rc != 0) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_ATTENTION, 0, "attention: variant %s: %s",
                                   xf_attn_name(a), err[0] ? err : xf_strerror(rc));
        xf_attn_free(a);
        return STEP_REPLIED;
    }
    *out = a;
    req->err_param = NULL;
    return STEP_OK;
}

/* Suspend the connection and hand the job to the loop. */
static enum MHD_Result submit(xf_req_t *req, xf_job_t *j, const ropts_t *ro)
{
    xf_server_t *s = req->srv;
    uint64_t now = xf_now_ns();
    long long t = s->o.timeout_ms;
    if (ro && ro->timeout_ms > 0) {
        t = ro->timeout_ms;
        j->client_deadline = 1;
    }
    j->enqueue_ns = now;
    j->deadline_ns = now + (uint64_t)t * 1000000ull;
    /* The cost model's Σn² term for this job: its attention variant's work (admission bounds
     * it before it runs; doc/admission.md). */
    const xf_attn_t *a = j->attn ? j->attn : xf_model_attention(s->model);
    const xf_model_info_t *mi = s->info;
    j->cost_sq = xf_attn_cost(a, j->lens, (size_t)j->n_seq,
                              mi->n_layer > 0 && mi->layers ? mi->layers[0].d_head : 64);
    j->conn = req->conn;
    j->req = req;
    if (xf_job_alloc_outputs(j, s->info->d_model, s->info->n_labels) < 0) {
        xf_job_free(j);
        return xf_routes_reply_oom(req);
    }
    /* Draining or not, a request already read is queued: the drain finishes it (it waits
     * for srv->reading to reach 0 before refusing new jobs). */
    req->job = j;
    req->state = XF_REQ_SUSPENDED;
    /* Suspend before enqueue: the loop may resume as soon as the job is pushed. */
    MHD_suspend_connection(req->conn);
    xf_server_submit(s, j);
    return MHD_YES;
}

/* The end of every inference route: with no job (ret already queued) free attn and return
 * ret; otherwise give the job its attention selection and outputs and submit it. */
enum MHD_Result xf_routes_submit_job(xf_req_t *req, xf_job_t *j, xf_attn_t *attn, jobwant_t want,
                                     const ropts_t *ro, enum MHD_Result ret)
{
    if (!j) {
        xf_attn_free(attn);
        return ret;
    }
    j->attn = attn;
    /* Say so in the reply when the chosen variant runs dense for some of these lengths. */
    for (int32_t i = 0; attn && i < j->n_seq && !req->attn_fallback; i++)
        req->attn_fallback = xf_attn_falls_back(attn, req->srv->model, j->lens[i]) == 1;
    j->want_pooled = want.pooled;
    j->want_logits = want.logits;
    j->normalize = want.normalize;
    return submit(req, j, ro);
}

/* Input i's list of token ids: every element an id of the model's vocabulary, or an error
 * reply naming the first that is not (and -EINVAL). All are checked, also those a truncation
 * would drop. */
static int ids_check(xf_req_t *req, size_t i, json_t *a, enum MHD_Result *ret)
{
    int32_t vocab = req->srv->info->vocab_size;
    for (size_t q = 0; q < json_array_size(a); q++) {
        json_t *e = json_array_get(a, q);
        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
            json_integer_value(e) >= vocab) {
            *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "input %zu: element %zu must be "
                                       "a token id in [0, %d)", i, q, vocab);
            return -EINVAL;
        }
    }
    return 0;
}

/* A list of token ids (text_t.ids, checked by ids_check) into tok as given: no specials added
 * (as OpenAI and TEI take them); longer than the model's positions is XF_ETOOLONG unless
 * truncating (from the end, or from the start with truncate_left). */
static int ids_input(json_t *a, const xf_tok_opts_t *to, xf_tokens_t *tok, xf_diag_t *diag)
{
    size_t m = json_array_size(a), off = 0;
    tok->n = 0;
    if (m > (size_t)to->max_len) {
        if (!to->truncate) {
            snprintf(diag->msg, sizeof diag->msg, "input has %zu token ids, max_len is %d", m,
                     to->max_len);
            return XF_ETOOLONG;
        }
        off = to->truncate_left ? m - (size_t)to->max_len : 0;
        m = (size_t)to->max_len;
    }
    if (m > (size_t)tok->cap) {
        int32_t *p = realloc(tok->ids, m * sizeof *p), *q = NULL;
        if (p)
            tok->ids = p;
        q = p ? realloc(tok->type_ids, m * sizeof *q) : NULL;
        if (q)
            tok->type_ids = q;
        if (!p || !q)
            return -ENOMEM;
        tok->cap = (int32_t)m;
    }
    for (size_t q = 0; q < m; q++) {
        tok->ids[q] = (int32_t)json_integer_value(json_array_get(a, off + q));
        tok->type_ids[q] = 0;
    }
    tok->n = (int32_t)m;
    return 0;
}

/* Unicode code points in s[0..n) (valid UTF-8: the bytes that do not continue a character),
 * as TEI counts a text's characters (str::chars). */
static long long utf8_chars(const char *s, size_t n)
{
    long long c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* Tokenise every text into a new job. On error replies and returns NULL. */
xf_job_t *xf_routes_tokenise(xf_req_t *req, const texts_t *tx, const ropts_t *ro,
                          enum MHD_Result *ret)
{
    xf_server_t *s = req->srv;
    ivec_t ids = { 0 }, types = { 0 }, lens = { 0 };
    xf_tokens_t tok = { 0 };
    xf_job_t *j = NULL;
    char *prompted = NULL;     /* prompt + text, for the text being encoded */
    xf_tok_opts_t to = { .no_special = 0, .split_special = 0,
                         .max_len = s->info->max_input, .truncate = ro->truncate,
                         .truncate_left = ro->truncate_left };
    long long total = 0, chars = 0;
    uint64_t t0 = xf_now_ns();
    for (size_t i = 0; i < tx->n; i++) {
        xf_diag_t diag = { 0, "" };
        const char *text = tx->v[i].s;
        size_t text_n = tx->v[i].n;
        chars += tx->v[i].ids ? (long long)json_array_size(tx->v[i].ids)
                              : utf8_chars(text, text_n) + utf8_chars(tx->v[i].pair,
                                                                      tx->v[i].pair_n);
        const ropts_t *r = tx->v[i].ro ? tx->v[i].ro : ro;
        to.truncate = r->truncate;
        to.truncate_left = r->truncate_left;
        /* TEI refuses an empty text (a pair only when both sides are empty) as Empty, 400,
         * before the prompt is put in front; the OpenAI route checks its own way. */
        if (req->api == XF_API_TEI && !tx->v[i].ids && text_n == 0 && tx->v[i].pair_n == 0) {
            *ret = xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "input %zu is an empty "
                                       "string", i);
            goto fail;
        }
        /* An empty list of ids: TEI's Empty (before the prompt too), OpenAI's empty_input. */
        if (tx->v[i].ids && json_array_size(tx->v[i].ids) == 0) {
            *ret = xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "input %zu is an empty list "
                                       "of token ids", i);
            goto fail;
        }
        int rc;
        xf_buf_t dec = { 0 };
        if (tx->v[i].ids && ids_check(req, i, tx->v[i].ids, ret) < 0)
            goto fail;
        if (tx->v[i].ids && r->prompt && r->prompt_n > 0) {
            /* TEI with a prompt_name: the ids are decoded (special tokens skipped), the prompt
             * goes before that text, and the whole is encoded with the special tokens. */
            xf_routes_decode_ids(s->tok, tx->v[i].ids, 1, &dec);
            if (dec.oom) {
                xf_buf_free(&dec);
                *ret = xf_routes_reply_oom(req);
                goto fail;
            }
            text = dec.p ? dec.p : "";
            text_n = dec.len;
        }
        if (tx->v[i].ids && !(r->prompt && r->prompt_n > 0)) {
            rc = ids_input(tx->v[i].ids, &to, &tok, &diag);
        } else {
            if (r->prompt && r->prompt_n > 0) {
                free(prompted);
                prompted = malloc(r->prompt_n + text_n + 1);
                if (!prompted) {
                    *ret = xf_routes_reply_oom(req);
                    goto fail;
                }
                memcpy(prompted, r->prompt, r->prompt_n);
                memcpy(prompted + r->prompt_n, text, text_n);
                prompted[r->prompt_n + text_n] = '\0';
                text = prompted;
                text_n += r->prompt_n;
            }
            rc = xf_tokenizer_encode(s->tok, text, text_n, tx->v[i].pair, tx->v[i].pair_n,
                                     &to, &tok, &diag);
        }
        xf_buf_free(&dec);
        if (rc == XF_ETOOLONG) {
            *ret = xf_http_reply_error(req, XF_HE_INPUT_TOO_LONG, 0,
                                       "input %zu is longer than the model's limit of %d "
                                       "tokens; send \"truncate\": true to cut it (%s)", i,
                                       s->info->max_input, diag.msg);
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
            *ret = xf_routes_reply_too_many_tokens(req);
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
        *ret = xf_routes_reply_oom(req);
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
    req->chars = chars;
    req->tok_ns = xf_now_ns() - t0;
fail:
    free(prompted);
    xf_tokens_deinit(&tok);
    free(ids.p);
    free(types.p);
    free(lens.p);
    return j;
}

/* Parse the "attention" of obj (none when obj is NULL), tokenise tx into a job and submit it.
 * Frees tx->v. */
enum MHD_Result xf_routes_submit_texts(xf_req_t *req, json_t *obj, texts_t *tx, const ropts_t *ro,
                                       jobwant_t want)
{
    enum MHD_Result ret = MHD_NO;
    xf_attn_t *attn = NULL;
    if (obj && xf_routes_get_attention(req, obj, &attn, &ret) != STEP_OK) {
        free(tx->v);
        return ret;
    }
    xf_job_t *j = xf_routes_tokenise(req, tx, ro, &ret);
    free(tx->v);
    return xf_routes_submit_job(req, j, attn, want, ro, ret);
}

int xf_routes_is_token_array(json_t *v)
{
    return json_is_array(v) && json_array_size(v) > 0 &&
           json_is_integer(json_array_get(v, 0));
}

/* The texts under key (TEI inputs / OpenAI input): a string or a non-empty list of strings;
 * with allow_ids also a list of token ids (one input) and lists of token ids among the items,
 * as both APIs take them ([1, 2, 3], [[1, 2], [3]], TEI also ["a", [1, 2]]). */
step_t xf_routes_get_texts(xf_req_t *req, json_t *v, const char *key, int allow_ids, texts_t *tx,
                           enum MHD_Result *ret)
{
    req->err_param = key;   /* every error below is about this field */
    if (!v) {
        *ret = xf_routes_reply_missing_field(req, key);
        return STEP_REPLIED;
    }
    if (json_is_string(v) || (allow_ids && xf_routes_is_token_array(v))) {
        if (xf_routes_texts_alloc(tx, 1) < 0)
            goto oom;
        if (json_is_string(v)) {
            tx->v[0].s = json_string_value(v);
            tx->v[0].n = json_string_length(v);
        } else {
            tx->v[0].ids = v;
        }
        tx->n = 1;
        req->err_param = NULL;
        return STEP_OK;
    }
    const char *what = allow_ids ? "a string, a list of strings or token ids"
                                 : "a string or a list of strings";
    if (!json_is_array(v)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%sfield '%s' must be %s",
                                   deser(req), key, what);
        return STEP_REPLIED;
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        *ret = xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field '%s' is an empty list",
                                   key);
        return STEP_REPLIED;
    }
    if (xf_routes_over_max_texts(req, n, "texts", ret) != STEP_OK)
        return STEP_REPLIED;
    if (xf_routes_texts_alloc(tx, n) < 0)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (json_is_string(e)) {
            tx->v[i].s = json_string_value(e);
            tx->v[i].n = json_string_length(e);
        } else if (allow_ids && json_is_array(e)) {
            tx->v[i].ids = e;   /* checked id by id when tokenising */
        } else {
            *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%sfield '%s'[%zu] must be %s",
                                       deser(req), key, i,
                                       allow_ids ? "a string or a list of token ids"
                                                 : "a string");
            free(tx->v);
            tx->v = NULL;
            return STEP_REPLIED;
        }
    }
    tx->n = n;
    req->err_param = NULL;
    return STEP_OK;
oom:
    *ret = xf_routes_reply_oom(req);
    return STEP_REPLIED;
}

/* ["a", "b"]: a TEI text pair. */
int xf_routes_is_str_pair(json_t *v)
{
    return json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
           json_is_string(json_array_get(v, 1));
}

/* ---- route parsers ------------------------------------------------------------------- */

static enum MHD_Result h_embeddings(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    req->compute_headers = 1;   /* TEI sends its x-compute-* headers on this route too */
    json_t *root = req->root;
    const char *model = NULL, *fmt = NULL, *user = NULL;
    long long dims = 0;
    ropts_t ro;
    if (xf_routes_get_str(req, root, "model", &model, &ret) != STEP_OK ||
        xf_routes_get_str(req, root, "encoding_format", &fmt, &ret) != STEP_OK ||
        xf_routes_get_str(req, root, "user", &user, &ret) != STEP_OK ||
        xf_routes_get_int(req, root, "dimensions", -1000000, 1000000, &dims, &ret) != STEP_OK ||
        xf_routes_get_ropts(req, req->root, &ro, &ret) != STEP_OK)
        return ret;
    (void)user;
    if (model && strcmp(model, s->model_name) != 0) {
        req->err_param = "model";
        return xf_http_reply_error(req, XF_HE_MODEL_NOT_FOUND, 0, "The model '%.100s' does not "
                                   "exist; this server serves '%s'", model, s->model_name);
    }
    if (fmt && strcmp(fmt, "float") != 0 && strcmp(fmt, "base64") != 0) {
        req->err_param = "encoding_format";
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'encoding_format' must be "
                                   "\"float\" or \"base64\"");
    }
    req->base64 = fmt && !strcmp(fmt, "base64");
    if (xf_routes_opt_field(root, "dimensions") && (dims < 1 || dims > s->info->d_model)) {
        req->err_param = "dimensions";
        return xf_http_reply_error(req, XF_HE_BAD_DIMENSIONS, 0, "field 'dimensions' must be "
                                   "between 1 and the model's %d", s->info->d_model);
    }
    req->dimensions = (int)dims;
    json_t *in = json_object_get(root, "input");
    xf_attn_t *attn = NULL;
    if (xf_routes_get_attention(req, root, &attn, &ret) != STEP_OK)
        return ret;
    xf_job_t *j = NULL;
    texts_t tx = { 0 };
    if (xf_routes_get_texts(req, in, "input", 1, &tx, &ret) == STEP_OK) {
        req->err_param = "input";   /* too long, bad UTF-8, bad ids, too many tokens */
        /* OpenAI: "cannot be an empty string" (and no empty list of ids, checked below). */
        for (size_t i = 0; i < tx.n; i++) {
            if (!tx.v[i].ids && tx.v[i].n == 0) {
                free(tx.v);
                xf_attn_free(attn);
                return xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field 'input'[%zu] is an "
                                           "empty string", i);
            }
        }
        j = xf_routes_tokenise(req, &tx, &ro, &ret);
        free(tx.v);
        if (j)
            req->err_param = NULL;
    }
    return xf_routes_submit_job(req, j, attn, (jobwant_t){ 1, 0, s->o.normalize }, &ro, ret);
}

/* ---- replies ---------------------------------------------------------------------------- */

void xf_routes_put_floats(xf_buf_t *b, const float *v, size_t n)
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

/* Scale v to unit L2 norm (a zero vector stays zero). */
void xf_routes_unit_scale(float *v, size_t n)
{
    double ss = 0;
    for (size_t c = 0; c < n; c++)
        ss += (double)v[c] * v[c];
    float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (size_t c = 0; c < n; c++)
        v[c] *= inv;
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
            memcpy(tmp, row, dims * sizeof *tmp);
            xf_routes_unit_scale(tmp, dims);
            row = tmp;
        }
        xf_buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":",
                      i ? "," : "", (int)i);
        if (req->base64)
            put_base64(&b, row, dims);
        else
            xf_routes_put_floats(&b, row, dims);
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

/* ---- routes without a job ------------------------------------------------------------- */

static enum MHD_Result h_metrics(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    if (!s->o.metrics_enabled)
        return xf_http_reply_error(req, XF_HE_NOT_FOUND, 0, "metrics are disabled "
                                   "(metrics.enabled)");
    if (atomic_load(&s->ready) || atomic_load(&s->draining))   /* workers exist */
        xf_metric_set(XF_M_arena_bytes, "held", NULL,
                      (int64_t)xf_workers_arena_bytes(s->workers));
    char *text = NULL;
    size_t len = 0;
    if (xf_metrics_render(&text, &len) < 0)
        return xf_routes_reply_oom(req);
    xf_buf_t b = { .p = text, .len = len, .cap = len + 1 };
    return xf_http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

static enum MHD_Result h_stats(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    json_t *st = xf_metrics_stats_json();
    if (!st)
        return xf_routes_reply_oom(req);
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

/* ---- OpenAI models --------------------------------------------------------------------- */

/* OpenAI's model object for the served name; created is the server's start time (Unix
 * seconds). */
static json_t *openai_model(const xf_server_t *s, const char *name)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", name, "object", "model", "created",
                     (json_int_t)s->start_unix, "owned_by", "xformd");
}

/* The encoder, then the Transformer-XL session model when session.model is set. */
static enum MHD_Result h_openai_models(xf_req_t *req)
{
    const char *txl = xf_sessions_model_name(req->srv);
    json_t *o = json_pack("{s:s,s:[o]}", "object", "list", "data",
                          openai_model(req->srv, req->srv->model_name));
    if (o && txl)
        json_array_append_new(json_object_get(o, "data"), openai_model(req->srv, txl));
    return o ? xf_http_reply_json(req, 200, o) : xf_routes_reply_oom(req);
}

static enum MHD_Result h_openai_model(xf_req_t *req)
{
    const char *txl = xf_sessions_model_name(req->srv);
    if (strcmp(req->model, req->srv->model_name) != 0 && !(txl && !strcmp(req->model, txl))) {
        req->err_param = "model";
        return xf_http_reply_error(req, XF_HE_MODEL_NOT_FOUND, 0, "The model '%s' does not "
                                   "exist; this server serves '%s'%s%s%s", req->model,
                                   req->srv->model_name, txl ? " and '" : "", txl ? txl : "",
                                   txl ? "'" : "");
    }
    return xf_http_reply_json(req, 200, openai_model(req->srv, req->model));
}

/* ---- the route table (routes.def) ------------------------------------------------------ */

typedef enum MHD_Result (*route_fn)(xf_req_t *req);

typedef struct route {
    const char *method;        /* "GET" (HEAD too) or "POST" */
    const char *pattern;       /* "/v2/models/{m}[/versions/{v}]/infer" */
    enum xf_api api;
    int auth;                  /* 1: auth.api_key applies */
    int body;                  /* 1: a JSON body is read first */
    route_fn handle, reply;
} route_t;

#define RT_AUTH 1
#define RT_OPEN 0
#define RT_JSON 1
#define RT_NONE 0
#define NO_REPLY NULL

static const route_t routes[XF_R_COUNT] = {
    [XF_R_NONE] = { NULL, NULL, XF_API_OWN, 0, 0, NULL, NULL },
#define XF_ROUTE(id, method, path, api, auth, body, handler, reply)                           \
    [XF_R_##id] = { #method, path, XF_API_##api, RT_##auth, RT_##body, handler, reply },
#include "server/routes.def"
#undef XF_ROUTE
    /* matched by xf_sessions_match (routes.h); the rows give label, auth, body and replies */
    [XF_R_SESSION_SEGMENTS] = { "POST", "/v1/sessions/{id}/segments", XF_API_OWN, RT_AUTH,
                                RT_JSON, xf_sessions_handle, xf_sessions_respond },
    [XF_R_SESSION] = { "GET", "/v1/sessions/{id}", XF_API_OWN, RT_AUTH, RT_NONE,
                       xf_sessions_handle, xf_sessions_respond },
};

static const route_t *route_row(int route)
{
    return route > XF_R_NONE && route < XF_R_COUNT ? &routes[route] : NULL;
}

#define MAX_PATTERN 128

/* The pattern with its optional group kept (with = 1) or dropped, into buf. */
static void expand(const char *pat, int with, char *buf, size_t len)
{
    size_t k = 0;
    int in_group = 0;
    for (const char *p = pat; *p && k + 1 < len; p++) {
        if (*p == '[' || *p == ']') {
            in_group = *p == '[';
            continue;
        }
        if (!in_group || with)
            buf[k++] = *p;
    }
    buf[k] = '\0';
}

/* Route template used as a metrics label: the pattern without its optional group. */
static char labels[XF_R_COUNT][MAX_PATTERN];
static pthread_once_t labels_once = PTHREAD_ONCE_INIT;

static void labels_init(void)
{
    snprintf(labels[XF_R_NONE], sizeof labels[0], "other");
    for (int r = XF_R_NONE + 1; r < XF_R_COUNT; r++)
        expand(routes[r].pattern, 0, labels[r], sizeof labels[r]);
}

const char *xf_routes_label(int route)
{
    pthread_once(&labels_once, labels_init);
    return route > XF_R_NONE && route < XF_R_COUNT ? labels[route] : labels[XF_R_NONE];
}

/* Match url against a pattern without groups; "{m}"/"{v}" take one non-empty segment each,
 * copied into m/v (NUL-terminated; a segment that does not fit fails the match). */
static int match_plain(const char *pat, const char *url, char *m, size_t mcap, char *v,
                       size_t vcap)
{
    while (*pat) {
        if (pat[0] == '{' && pat[2] == '}' && (pat[1] == 'm' || pat[1] == 'v')) {
            size_t n = strcspn(url, "/");
            char *dst = pat[1] == 'm' ? m : v;
            size_t cap = pat[1] == 'm' ? mcap : vcap;
            if (n == 0 || n >= cap)
                return 0;
            memcpy(dst, url, n);
            dst[n] = '\0';
            url += n;
            pat += 3;
            continue;
        }
        if (*pat++ != *url++)
            return 0;
    }
    return *url == '\0';
}

static int path_matches(const route_t *r, const char *url, xf_req_t *req)
{
    char m[sizeof req->model] = "", v[sizeof req->version] = "";
    char buf[MAX_PATTERN];
    for (int with = 1; with >= 0; with--) {
        if (!with && !strchr(r->pattern, '['))
            break;
        expand(r->pattern, with, buf, sizeof buf);
        m[0] = v[0] = '\0';
        if (match_plain(buf, url, m, sizeof m, v, sizeof v)) {
            memcpy(req->model, m, sizeof m);
            memcpy(req->version, v, sizeof v);
            return 1;
        }
    }
    return 0;
}

static int method_matches(const route_t *r, const char *method)
{
    if (!strcmp(r->method, "GET"))
        return !strcmp(method, "GET") || !strcmp(method, "HEAD");
    return !strcmp(method, r->method);
}

/* The API an unknown path answers in: that of the route it most resembles (same first
 * segment, longest common prefix; the earlier row on a tie), else OWN. */
static enum xf_api resembling_api(const char *url)
{
    size_t seg = 1 + strcspn(url + 1, "/"), best = 0;
    enum xf_api api = XF_API_OWN;
    for (int r = XF_R_NONE + 1; r < XF_R_COUNT; r++) {
        const char *l = xf_routes_label(r);
        if (url[0] != '/' || strncmp(url, l, seg) != 0 || (l[seg] != '/' && l[seg] != '\0'))
            continue;
        size_t cp = 0;
        while (url[cp] && url[cp] == l[cp])
            cp++;
        if (cp > best) {
            best = cp;
            api = routes[r].api;
        }
    }
    return api;
}

enum xf_http_err xf_routes_match(xf_req_t *req, const char *method, const char *url)
{
    int path_row = XF_R_NONE;
    req->route = XF_R_NONE;
    req->model[0] = req->version[0] = '\0';
    if (strncmp(url, "/v1/sessions/", 13) == 0)   /* ids up to 128 bytes, DELETE: sessions.c */
        return xf_sessions_match(req, method, url);
    /* An OpenAI model id may hold '/' (a served name such as "BAAI/bge-small-en-v1.5", what
     * TEI serves by default; the SDKs send it %2F-escaped, which MHD unescapes): the rest of
     * the path is the id, as OpenAI's GET /v1/models/{model} reads it. */
    const char *id = strncmp(url, "/v1/models/", 11) == 0 ? url + 11 : NULL;
    if (id && strchr(id, '/') && strlen(id) < sizeof req->model) {
        memcpy(req->model, id, strlen(id) + 1);
        req->route = XF_R_OPENAI_MODEL;
        req->api = routes[XF_R_OPENAI_MODEL].api;
        return method_matches(&routes[XF_R_OPENAI_MODEL], method) ? XF_HE_NONE
                                                                  : XF_HE_METHOD_NOT_ALLOWED;
    }
    for (int r = XF_R_NONE + 1; r < XF_R_COUNT; r++) {
        if (!path_matches(&routes[r], url, req))
            continue;
        if (method_matches(&routes[r], method)) {
            req->route = r;
            req->api = routes[r].api;
            return XF_HE_NONE;
        }
        if (path_row == XF_R_NONE)
            path_row = r;
    }
    if (path_row != XF_R_NONE) {
        req->route = path_row;
        req->api = routes[path_row].api;
        return XF_HE_METHOD_NOT_ALLOWED;
    }
    req->api = resembling_api(url);
    return XF_HE_NOT_FOUND;
}

int xf_routes_has_body(int route)
{
    const route_t *r = route_row(route);
    return r && r->body;
}

int xf_routes_needs_auth(int route)
{
    const route_t *r = route_row(route);
    return !r || r->auth;
}

int xf_routes_while_draining(int route)
{
    const route_t *r = route_row(route);
    return r && !r->body;
}

const char *xf_routes_allow(int route)
{
    const route_t *row = route_row(route);
    if (!row)
        return "GET";
    int get = 0, post = 0;
    for (int r = XF_R_NONE + 1; r < XF_R_COUNT; r++) {
        if (strcmp(routes[r].pattern, row->pattern) != 0)
            continue;
        get |= !strcmp(routes[r].method, "GET");
        post |= !strcmp(routes[r].method, "POST");
    }
    return get && post ? "GET, POST" : post ? "POST" : "GET";
}

enum MHD_Result xf_routes_handle(xf_req_t *req)
{
    const route_t *r = route_row(req->route);
    if (!r)
        return xf_http_reply_error(req, XF_HE_NOT_FOUND, 0, "no such route");
    /* Start-up (bound, model loading or warming up): only the probes (OPEN rows) answer;
     * the model and workers may not exist yet. A draining server still answers its GETs. */
    if (r->auth && !atomic_load(&req->srv->ready) && !atomic_load(&req->srv->draining))
        return xf_http_reply_error(req, XF_HE_NOT_READY, 1, "the server is starting (loading "
                                   "the model or warming up); retry shortly");
    return r->handle(req);
}

enum MHD_Result xf_routes_respond(xf_req_t *req)
{
    xf_job_t *j = req->job;
    if (!j)
        return xf_http_reply_error(req, XF_HE_INTERNAL, 0, "resumed without a job");
    if (j->status != XF_HE_NONE)
        return xf_http_reply_error(req, j->status, j->retry_after_s, "%s", j->msg);
    if (j->sjob)   /* a Transformer-XL session operation (also KServe infer on its model) */
        return xf_sessions_respond(req);
    const route_t *r = route_row(req->route);
    if (!r || !r->reply)
        return xf_http_reply_error(req, XF_HE_INTERNAL, 0, "route has no reply");
    return r->reply(req);
}

void xf_routes_log_access(const xf_req_t *req, int status, double seconds)
{
    const xf_job_t *j = req->job;
    double queue_ms = 0, compute_ms = 0;
    if (j && j->end_ns >= j->start_ns && j->start_ns >= j->enqueue_ns && j->start_ns) {
        queue_ms = (double)(j->start_ns - j->enqueue_ns) * 1e-6;
        compute_ms = (double)(j->end_ns - j->start_ns) * 1e-6;
    }
    XF_LOGI("access: route=%s status=%d texts=%d tokens=%d queue_ms=%.1f compute_ms=%.1f "
            "total_ms=%.1f", xf_routes_label(req->route), status, req->n_inputs,
            req->usage_tokens, queue_ms, compute_ms, seconds * 1e3);
}
