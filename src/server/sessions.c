/* Transformer-XL sessions (sessions.h): lifecycle, REST routes (/v1/sessions/...) and the loop
 * side (KServe v2 sequences: sessions_kserve.c; shared types: sessions_internal.h). MHD threads
 * parse, the loop keeps a FIFO of operations per session key (one at a time, in order; sessions
 * in parallel), libuv's pool loads/runs/serialises the blob, the loop stores it by compare-
 * and-set; a blob failing a check is reset. Encoder segments run in the batcher as one-sequence
 * jobs carrying the loaded xf_state_t. */
#include "config.h"

#include "server/sessions.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <microhttpd.h>
#include <xformd/state.h>
#include <xformd/txl.h>

#include "server/log.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/routes.h"
#include "server/session_store.h"
#include "server/sessions_internal.h"

struct squeue {                 /* operations waiting on one session key (loop thread) */
    squeue_t *next;
    char key[XF_SESSION_KEY_MAX];
    xf_job_t *head, *tail;      /* linked through job->next */
    int busy;
};

const char *const xf_sessions_dtype_names[] = { "?", "f32", "f16", "bf16" };

/* ---- lifecycle ------------------------------------------------------------------------- */

int xf_sessions_create(xf_server_t *s, uv_loop_t *loop, xf_diag_t *diag)
{
    const xf_server_opts_t *o = &s->o;
    xf_sessions_t *S;
    xf_txl_opts_t lo = { NULL, -1 };
    char err[256] = "";
    int rc;

    int has_txl = o->session_model && o->session_model[0];
    int has_enc = s->model && xf_state_supported(s->model, NULL);

    if (!has_txl && !has_enc)
        return 0;
    S = calloc(1, sizeof *S);
    if (!S)
        return -ENOMEM;
    rc = has_txl ? xf_txl_load(o->session_model, &lo, &S->model, diag) : 0;
    if (rc < 0) {
        char m[512];
        snprintf(m, sizeof m, "session.model: %s: %.400s", xf_strerror(rc), diag->msg);
        snprintf(diag->msg, sizeof diag->msg, "%s", m);
        free(S);
        return rc;
    }
    /* the served encoder keeps state between segments: it has sessions too */
    rc = has_enc ? xf_state_def_create(s->model, NULL, &S->enc, diag) : 0;
    if (rc < 0) {
        char m[512];
        snprintf(m, sizeof m, "encoder sessions: %s: %.400s", xf_strerror(rc), diag->msg);
        snprintf(diag->msg, sizeof diag->msg, "%s", m);
        xf_txl_free(S->model);
        free(S);
        return rc;
    }
    S->dtype = o->session_dtype == 1 ? XF_TXL_F16 : o->session_dtype == 2 ? XF_TXL_BF16
                                                                           : XF_TXL_F32;
    if (o->api_key && o->api_key[0]) {
        /* sessions are scoped to the API key: FNV-1a of the key, never the key itself */
        uint64_t h = 1469598103934665603ull;
        for (const char *p = o->api_key; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
        snprintf(S->keyscope, sizeof S->keyscope, "k%016llx:", (unsigned long long)h);
    }
    if (o->redis_url && o->redis_url[0])
        rc = xf_sstore_redis_create(loop, o->redis_url, o->session_timeout_ms, &S->store, err,
                                    sizeof err);
    else
        rc = xf_sstore_local_create((size_t)o->session_max_sessions,
                                    (size_t)o->session_store_max_bytes, &S->store);
    if (rc < 0) {
        snprintf(diag->msg, sizeof diag->msg, "session store: %s", err[0] ? err
                                                                           : xf_strerror(rc));
        xf_txl_free(S->model);
        xf_state_def_free(S->enc);
        free(S);
        return rc;
    }
    S->gauge_queues = !strcmp(S->store->vt->name, "redis");
    s->sessions = S;
    if (S->model)
        XF_LOGI("sessions: transfo-xl model %s (%d layers, d_model %d, mem_len %d), store %s, "
                "payload %s", xf_txl_info(S->model)->name, xf_txl_info(S->model)->n_layer,
                xf_txl_info(S->model)->d_model, xf_txl_info(S->model)->mem_len,
                S->store->vt->name, xf_sessions_dtype_names[S->dtype]);
    if (S->enc)
        XF_LOGI("sessions: encoder %s with attention %s (%zu state bytes per session in "
                "process), store %s, payload %s", s->model_name,
                xf_attn_name(xf_state_def_attn(S->enc)), xf_state_def_bytes(S->enc),
                S->store->vt->name, xf_sessions_dtype_names[S->dtype]);
    return 0;
}

void xf_sessions_stop(xf_server_t *s)
{
    xf_sessions_t *S = s->sessions;

    if (S && S->store) {
        S->store->vt->free(S->store);
        S->store = NULL;
    }
}

void xf_sessions_free(xf_server_t *s)
{
    xf_sessions_t *S = s->sessions;

    if (!S)
        return;
    if (S->store)
        S->store->vt->free(S->store);
    xf_txl_free(S->model);
    xf_state_def_free(S->enc);
    free(S);
    s->sessions = NULL;
}

int xf_sessions_idle(const xf_server_t *s)
{
    return !s->sessions || (s->sessions->n_running == 0 && !s->sessions->queues);
}

/* ---- MHD side -------------------------------------------------------------------------- */

int xf_sessions_valid_id(const char *id, size_t n)
{
    if (n < 1 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

enum xf_http_err xf_sessions_match(xf_req_t *req, const char *method, const char *url)
{
    const char *id = url + 13, *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : strlen(id);

    req->api = XF_API_OWN;
    if (slash && strcmp(slash, "/segments"))
        return XF_HE_NOT_FOUND;
    req->route = slash ? XF_R_SESSION_SEGMENTS : XF_R_SESSION;
    if (slash ? strcmp(method, "POST")
              : strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "DELETE"))
        return XF_HE_METHOD_NOT_ALLOWED;
    if (!xf_sessions_valid_id(id, n))
        return XF_HE_BAD_SESSION_ID;
    memcpy(req->session, id, n);
    req->session[n] = '\0';
    req->session_delete = !strcmp(method, "DELETE");
    return XF_HE_NONE;
}

static void sjob_free(void *p)
{
    sjob_t *sj = p;

    free(sj->ids);
    free(sj->blob_in);
    free(sj->blob_out);
    xf_txl_result_deinit(&sj->res);
    xf_state_free(sj->state);
    xf_job_free(sj->cj);
    free(sj);
}

/* Token ids from a JSON list (where names it in errors): each an integer in [0, vocab_size),
 * at most request.max_tokens of them. Fills sj->ids / sj->n, or replies. */
enum MHD_Result xf_sessions_parse_ids(xf_req_t *req, int32_t vocab_size, json_t *list,
                                      const char *where, sjob_t *sj)
{
    size_t n = json_array_size(list), i;
    json_t *v;

    if (n > (size_t)req->srv->o.max_tokens)
        return xf_http_reply_error(req, XF_HE_TOO_MANY_TOKENS, 0, "%s: %zu tokens, "
                                   "request.max_tokens is %d", where, n, req->srv->o.max_tokens);
    sj->ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!sj->ids)
        return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    json_array_foreach(list, i, v) {
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x >= vocab_size)
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%s[%zu]: want a token id in "
                                       "[0, %d)", where, i, vocab_size);
        sj->ids[i] = (int32_t)x;
    }
    sj->n = (int32_t)n;
    return MHD_YES;
}

/* Record a requested output (logprobs, hidden, pooled) in sj; 0 when w names none of them. */
int xf_sessions_want_output(sjob_t *sj, const char *w)
{
    if (w && !strcmp(w, "logprobs"))
        sj->return_logprobs = 1;
    else if (w && !strcmp(w, "hidden"))
        sj->want |= XF_TXL_OUT_HIDDEN;
    else if (w && !strcmp(w, "pooled"))
        sj->want |= XF_TXL_OUT_POOLED;
    else
        return 0;
    return 1;
}

/* The body as a JSON object (kept in req->root), or NULL after replying 400 (*r). */
json_t *xf_sessions_parse_object(xf_req_t *req, enum MHD_Result *r)
{
    json_error_t je;
    json_t *root;

    if (req->root && json_is_object(req->root))   /* parsed by the KServe route already */
        return req->root;
    root = json_loadb(req->body ? req->body : "", req->body_len,
                              JSON_REJECT_DUPLICATES, &je);

    if (!root || !json_is_object(root)) {
        json_decref(root);
        *r = xf_http_reply_error(req, XF_HE_BAD_JSON, 0, "body: %s", root ? "not an object"
                                                                           : je.text);
        return NULL;
    }
    req->root = root;
    return root;
}

/* A segment has 1 .. request.max_tokens tokens (text is counted after tokenising). */
enum MHD_Result xf_sessions_check_n(xf_req_t *req, const sjob_t *sj, const char *where)
{
    if (sj->n == 0)
        return xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "%s: no tokens", where);
    if (sj->n > req->srv->o.max_tokens)
        return xf_http_reply_error(req, XF_HE_TOO_MANY_TOKENS, 0, "%s: %d tokens, "
                                   "request.max_tokens is %d", where, sj->n,
                                   req->srv->o.max_tokens);
    if (sj->enc && sj->n > req->srv->info->max_positions)
        return xf_http_reply_error(req, XF_HE_INPUT_TOO_LONG, 0, "%s: %d tokens, the encoder's "
                                   "positions end at %d: send the text as more segments",
                                   where, sj->n, req->srv->info->max_positions);
    return MHD_YES;
}

/* 400: a model whose attention keeps nothing between segments has no sessions. */
static enum MHD_Result reply_stateless(xf_req_t *req, const char *where)
{
    xf_server_t *s = req->srv;
    return xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0, "%s%s: its attention (%s) keeps "
                               "no state between segments, so it has no sessions (serve it "
                               "with model.attention txl or compressive)", where,
                               s->model_name, xf_attn_name(xf_model_attention(s->model)));
}

/* Which model a session request is for: name (the body's "model", the ?model= argument, the
 * KServe URL's model) or NULL for the default (the Transformer-XL model when session.model
 * is set, else the encoder). Sets sj->enc, or replies: 404 for a name not served here, 400
 * for the encoder when its attention keeps no state. */
enum MHD_Result xf_sessions_pick_model(xf_req_t *req, const char *name, sjob_t *sj)
{
    xf_server_t *s = req->srv;
    xf_sessions_t *S = s->sessions;

    if (!name) {
        sj->enc = !S->model;
        return MHD_YES;
    }
    if (S->model && !strcmp(name, xf_txl_info(S->model)->name)) {
        sj->enc = 0;
        return MHD_YES;
    }
    if (!strcmp(name, s->model_name)) {
        if (!S->enc)
            return reply_stateless(req, "model ");
        sj->enc = 1;
        return MHD_YES;
    }
    return xf_http_reply_error(req, XF_HE_MODEL_NOT_FOUND, 0, "model %s is not served here",
                               name);
}

/* Encoder text: the served tokenizer with its specials ([CLS] ... [SEP]), as /embed. */
enum MHD_Result xf_sessions_enc_text(xf_req_t *req, const char *text, size_t len,
                                     const char *where, sjob_t *sj)
{
    xf_server_t *s = req->srv;
    xf_tokens_t tok = { 0 };
    xf_tok_opts_t to = { .max_len = s->info->max_positions };
    xf_diag_t diag = { 0, "" };
    int rc = xf_tokenizer_encode(s->tok, text, len, NULL, 0, &to, &tok, &diag);
    enum MHD_Result r = MHD_YES;

    if (rc == XF_ETOOLONG)
        r = xf_http_reply_error(req, XF_HE_INPUT_TOO_LONG, 0, "%s: longer than the encoder's "
                                "%d positions: send the text as more segments", where,
                                s->info->max_positions);
    else if (rc == XF_EFORMAT)
        r = xf_http_reply_error(req, XF_HE_INVALID_UTF8, 0, "%s: %s", where,
                                diag.msg[0] ? diag.msg : "invalid UTF-8");
    else if (rc < 0)
        r = xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "%s: tokenizer: %s", where,
                                xf_strerror(rc));
    else if (!(sj->ids = malloc(sizeof(int32_t) * (size_t)(tok.n ? tok.n : 1))))
        r = xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    else {
        memcpy(sj->ids, tok.ids, sizeof(int32_t) * (size_t)tok.n);
        sj->n = tok.n;
    }
    xf_tokens_deinit(&tok);
    return r;
}

/* An encoder has no language-model head: logprobs (and next_token) are refused. */
enum MHD_Result xf_sessions_enc_no_logprobs(xf_req_t *req, const sjob_t *sj, const char *where)
{
    if (sj->enc && sj->return_logprobs)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "%s: model %s is an encoder (no "
                                   "language-model head): ask for \"hidden\" or \"pooled\"",
                                   where, req->srv->model_name);
    return MHD_YES;
}

/* The client's timeout_ms (optional, in obj): 1 .. request.max_timeout_ms, as on the other
 * routes. */
enum MHD_Result xf_sessions_parse_timeout(xf_req_t *req, json_t *obj, sjob_t *sj)
{
    json_t *v = obj ? json_object_get(obj, "timeout_ms") : NULL;

    if (!v)
        return MHD_YES;
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > req->srv->o.max_timeout_ms)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "timeout_ms: want an integer in "
                                   "[1, %lld] (request.max_timeout_ms)",
                                   (long long)req->srv->o.max_timeout_ms);
    sj->timeout_ms = json_integer_value(v);
    return MHD_YES;
}

/* Body of POST .../segments: {"input": text | [ids], "return": [...], "add_eos": bool,
 * "timeout_ms": int}. */
static enum MHD_Result parse_segment(xf_req_t *req, xf_sessions_t *S, sjob_t *sj)
{
    enum MHD_Result r;
    json_t *root, *in, *ret, *eos, *mo;
    int add_eos = 0;
    xf_diag_t diag = { 0 };

    if (!(root = xf_sessions_parse_object(req, &r)))
        return r;
    mo = json_object_get(root, "model");
    if (mo && !json_is_string(mo))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "model: want a served model's name");
    r = xf_sessions_pick_model(req, json_string_value(mo), sj);
    if (req->state == XF_REQ_REPLIED)
        return r;
    r = xf_sessions_parse_timeout(req, root, sj);
    if (req->state == XF_REQ_REPLIED)
        return r;
    sj->return_logprobs = !sj->enc;
    if (sj->enc)
        sj->want = XF_TXL_OUT_POOLED;   /* the encoder's default output */
    ret = json_object_get(root, "return");
    if (ret) {
        size_t i;
        json_t *v;
        if (!json_is_array(ret))
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "return: want a list of "
                                       "\"logprobs\", \"hidden\", \"pooled\"");
        sj->return_logprobs = 0;
        sj->want = 0;
        json_array_foreach(ret, i, v) {
            if (!xf_sessions_want_output(sj, json_string_value(v)))
                return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "return[%zu]: want "
                                           "\"logprobs\", \"hidden\" or \"pooled\"", i);
        }
        r = xf_sessions_enc_no_logprobs(req, sj, "return");
        if (req->state == XF_REQ_REPLIED)
            return r;
    }
    eos = json_object_get(root, "add_eos");
    if (eos && !json_is_boolean(eos))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "add_eos: want true or false");
    add_eos = eos && json_is_true(eos);
    in = json_object_get(root, "input");
    if (!in)
        return xf_http_reply_error(req, XF_HE_MISSING_FIELD, 0, "input: missing (text or a "
                                   "list of token ids)");
    if (sj->enc && add_eos)
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "add_eos: only for the "
                                   "Transformer-XL model (the encoder adds its own specials)");
    if (json_is_string(in) && sj->enc) {
        r = xf_sessions_enc_text(req, json_string_value(in), json_string_length(in), "input", sj);
        if (req->state == XF_REQ_REPLIED)
            return r;
    } else if (json_is_string(in)) {
        int rc = xf_txl_encode(S->model, json_string_value(in), json_string_length(in),
                               add_eos, &sj->ids, &sj->n, &diag);
        if (rc == XF_EFORMAT)
            return xf_http_reply_error(req, XF_HE_INVALID_UTF8, 0, "input: %s", diag.msg);
        if (rc < 0)
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "input: %s", diag.msg);
    } else if (json_is_array(in)) {
        r = xf_sessions_parse_ids(req, sj->enc ? req->srv->info->vocab_size
                                               : xf_txl_info(S->model)->vocab_size, in,
                                  "input", sj);
        if (req->state == XF_REQ_REPLIED)
            return r;
        if (add_eos)
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "add_eos: only with text input");
    } else {
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "input: want text or a list of "
                                   "token ids");
    }
    return xf_sessions_check_n(req, sj, "input");
}

/* Suspend the connection and hand the session job to the loop. The deadline covers the wait
 * behind the session's earlier operations and the compute (stopped between layers). */
enum MHD_Result xf_sessions_submit_sjob(xf_req_t *req, xf_job_t *j)
{
    xf_server_t *s = req->srv;
    xf_sessions_t *S = s->sessions;
    sjob_t *sj = j->sjob;
    int64_t t = sj->timeout_ms > 0 ? sj->timeout_ms : s->o.timeout_ms;
    int kl;

    /* xformd:{model}:{session} (ATTENTION.md §22.1), scoped to the API key when auth is on */
    kl = snprintf(sj->key, sizeof sj->key, "xformd:%s:%s%s",
                  sj->enc ? s->model_name : xf_txl_info(S->model)->name, S->keyscope,
                  req->session);
    if (kl < 0 || (size_t)kl >= sizeof sj->key) {
        xf_job_free(j);
        return xf_http_reply_error(req, XF_HE_INTERNAL, 0, "the session key (model name and "
                                   "id) is longer than %d bytes", XF_SESSION_KEY_MAX - 1);
    }

    j->enqueue_ns = xf_now_ns();
    j->deadline_ns = j->enqueue_ns + (uint64_t)t * 1000000ull;
    j->conn = req->conn;
    j->req = req;
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

/* A new session job for req (key from req->session), or NULL after replying 503. */
xf_job_t *xf_sessions_new_sjob(xf_req_t *req)
{
    xf_sessions_t *S = req->srv->sessions;
    xf_job_t *j = NULL;
    sjob_t *sj = calloc(1, sizeof *sj);

    if (!sj || xf_job_create(0, 0, &j) < 0) {
        free(sj);
        xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
        return NULL;
    }
    j->sjob = sj;
    j->sjob_free = sjob_free;
    sj->srv = req->srv;
    sj->job = j;
    sj->enc = !S->model;
    return j;
}

enum MHD_Result xf_sessions_handle(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    xf_sessions_t *S = s->sessions;
    xf_job_t *j = NULL;
    sjob_t *sj;
    enum MHD_Result r;

    if (!S)
        return xf_http_reply_error(req, XF_HE_SESSIONS_DISABLED, 0, "sessions are disabled: "
                                   "the attention of model %s (%s) keeps no state between "
                                   "segments (serve it with model.attention txl or compressive, "
                                   "or set session.model to a transfo-xl model directory)",
                                   s->model_name, xf_attn_name(xf_model_attention(s->model)));
    if (!(j = xf_sessions_new_sjob(req)))
        return MHD_YES;
    sj = j->sjob;
    if (req->route == XF_R_SESSION_SEGMENTS) {
        sj->op = SOP_SEGMENT;
        r = parse_segment(req, S, sj);
    } else {
        /* GET / DELETE name the model with ?model= (default as for segments) */
        sj->op = req->session_delete ? SOP_DELETE : SOP_GET;
        r = xf_sessions_pick_model(req, MHD_lookup_connection_value(req->conn,
                                                                    MHD_GET_ARGUMENT_KIND,
                                                                    "model"), sj);
    }
    if (req->state == XF_REQ_REPLIED) {
        xf_job_free(j);
        return r;
    }
    return xf_sessions_submit_sjob(req, j);
}

json_t *xf_sessions_float_array(const float *x, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, isnan(x[i]) ? json_null() : json_real(x[i]));
    return a;
}

/* GET /v1/sessions/{id}, TXL or encoder: the head o plus the stored blob's size, TTL, validity. */
static enum MHD_Result reply_get(xf_req_t *req, const sjob_t *sj, json_t *o)
{
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)sj->blob_in_len));
    json_object_set_new(o, "ttl_s", json_integer(sj->ttl_ms < 0 ? -1
                                                                 : (sj->ttl_ms + 999) / 1000));
    json_object_set_new(o, "valid", json_boolean(!sj->reset));
    return xf_http_reply_json(req, 200, o);
}

/* A segment reply's fields after the head, for both kinds: reset, created, n_tokens. */
static void add_segment_head(json_t *o, const sjob_t *sj, int32_t n)
{
    json_object_set_new(o, "reset", json_boolean(sj->reset));
    json_object_set_new(o, "created", json_boolean(sj->created));
    json_object_set_new(o, "n_tokens", json_integer(n));
}

/* A segment reply's tail for both kinds: hidden [n][d] and pooled [d] when asked for, the
 * stored blob's size; then the reply is sent. */
static enum MHD_Result reply_segment(xf_req_t *req, const sjob_t *sj, json_t *o,
                                     const float *hidden, const float *pooled, int32_t n,
                                     size_t d)
{
    if (hidden) {
        json_t *h = json_array();
        for (int32_t t = 0; h && t < n; t++)
            json_array_append_new(h, xf_sessions_float_array(hidden + (size_t)t * d, d));
        json_object_set_new(o, "hidden", h);
    }
    if (pooled)
        json_object_set_new(o, "pooled", xf_sessions_float_array(pooled, d));
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)sj->blob_out_len));
    return xf_http_reply_json(req, 200, o);
}

static enum MHD_Result respond_enc(xf_req_t *req, sjob_t *sj);

enum MHD_Result xf_sessions_respond(xf_req_t *req)
{
    sjob_t *sj = req->job->sjob;
    xf_sessions_t *S = req->srv->sessions;
    const xf_txl_info_t *ti;
    json_t *o;

    if (sj->op == SOP_DELETE)
        return xf_http_reply_json(req, 200, json_pack("{s:s,s:b}", "session", req->session,
                                                      "deleted", 1));
    if (sj->enc)
        return respond_enc(req, sj);
    ti = xf_txl_info(S->model);
    if (sj->kserve)
        return xf_sessions_respond_kserve(req, sj, ti);
    o = json_pack("{s:s,s:s,s:I,s:I,s:i,s:s}", "session", req->session, "model", ti->name,
                  "segments", (json_int_t)sj->st.segments, "tokens_seen",
                  (json_int_t)sj->st.tokens, "memory_rows", sj->st.rows, "dtype",
                  xf_sessions_dtype_names[S->dtype]);
    if (!o)
        return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    if (sj->op == SOP_GET)
        return reply_get(req, sj, o);
    add_segment_head(o, sj, sj->res.n);
    if (sj->return_logprobs)
        json_object_set_new(o, "logprobs",
                            xf_sessions_float_array(sj->res.logprobs, (size_t)sj->res.n));
    json_object_set_new(o, "sum", json_real(sj->res.sum));
    json_object_set_new(o, "n_scored", json_integer(sj->res.n_scored));
    {
        const char *sym = xf_txl_symbol(S->model, sj->res.next_id);
        json_object_set_new(o, "next", json_pack("{s:i,s:s,s:f}", "id", sj->res.next_id,
                                                 "token", sym ? sym : "", "logprob",
                                                 (double)sj->res.next_logprob));
    }
    return reply_segment(req, sj, o, sj->res.hidden, sj->res.pooled, sj->res.n,
                         (size_t)ti->d_model);
}

/* An encoder session's reply: REST (session fields, pooled, hidden) or KServe v2 (outputs
 * pooled [1, d], hidden [n, d]; the session fields in parameters). */
static enum MHD_Result respond_enc(xf_req_t *req, sjob_t *sj)
{
    xf_server_t *s = req->srv;
    int32_t d = s->info->d_model;
    const float *pooled = sj->cj && (sj->want & XF_TXL_OUT_POOLED) ? sj->cj->pooled : NULL;
    const float *hidden = sj->cj && (sj->want & XF_TXL_OUT_HIDDEN) ? sj->cj->hidden : NULL;
    json_t *o, *outs;

    if (sj->kserve && sj->op == SOP_SEGMENT) {
        outs = json_array();
        if (pooled)
            json_array_append_new(outs, xf_sessions_kserve_tensor(
                                            "pooled", "FP32", json_pack("[i,i]", 1, d),
                                            xf_sessions_float_array(pooled, (size_t)d)));
        if (hidden)
            json_array_append_new(outs, xf_sessions_kserve_tensor(
                                            "hidden", "FP32", json_pack("[i,i]", sj->n, d),
                                            xf_sessions_float_array(hidden, (size_t)sj->n *
                                                                                (size_t)d)));
        o = json_pack("{s:s,s:s,s:o,s:{s:s,s:I,s:I,s:i,s:i,s:b,s:b}}", "model_name",
                      s->model_name, "model_version", "1", "outputs", outs, "parameters",
                      "sequence_id", req->session, "segments", (json_int_t)sj->est.segments,
                      "tokens_seen", (json_int_t)sj->est.tokens, "memory_rows",
                      sj->est.mem_rows, "compressed_rows", sj->est.cmem_rows, "reset",
                      sj->reset, "sequence_end", sj->seq_end);
        if (o) {
            const char *id = json_string_value(json_object_get(req->root, "id"));
            if (id)
                json_object_set_new(o, "id", json_string(id));
        }
        return o ? xf_http_reply_json(req, 200, o)
                 : xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    }
    o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:i,s:i,s:s}", "session", req->session, "model",
                  s->model_name, "attention", xf_attn_name(xf_model_attention(s->model)),
                  "segments", (json_int_t)sj->est.segments, "tokens_seen",
                  (json_int_t)sj->est.tokens, "memory_rows", sj->est.mem_rows,
                  "compressed_rows", sj->est.cmem_rows, "pending_rows", sj->est.pend_rows,
                  "dtype", xf_sessions_dtype_names[s->sessions->dtype]);
    if (!o)
        return xf_http_reply_error(req, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
    if (sj->op == SOP_GET)
        return reply_get(req, sj, o);
    add_segment_head(o, sj, sj->n);
    return reply_segment(req, sj, o, hidden, pooled, sj->n, (size_t)d);
}

/* ---- loop side ------------------------------------------------------------------------- */

static void start(xf_server_t *s, squeue_t *q);

/* Answer sj's job and start the next operation of its session. */
static void finish(sjob_t *sj, enum xf_http_err code, int retry_after_s, const char *fmt, ...)
    XF_PRINTF(4, 5);

static void finish(sjob_t *sj, enum xf_http_err code, int retry_after_s, const char *fmt, ...)
{
    xf_server_t *s = sj->srv;
    xf_sessions_t *S = s->sessions;
    squeue_t *q = sj->q, **pp;
    xf_job_t *j = sj->job;

    if (fmt) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        xf_job_fail(j, code, retry_after_s, msg);
    }
    if (sj->op == SOP_SEGMENT && !fmt)
        xf_metric_observe(XF_M_session_segment_seconds, "total", NULL,
                          (double)(xf_now_ns() - sj->t0) * 1e-9);
    S->n_running--;
    q->head = j->next;
    if (!q->head)
        q->tail = NULL;
    j->next = NULL;
    q->busy = 0;
    MHD_resume_connection(j->conn);   /* the job belongs to its request again */
    if (q->head) {
        start(s, q);
        return;
    }
    for (pp = &S->queues; *pp && *pp != q; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = q->next;
    free(q);
    S->n_queues--;
    if (S->gauge_queues)
        xf_metric_set(XF_M_sessions_active, NULL, NULL, S->n_queues);
}

static void on_put(void *user, int rc)
{
    sjob_t *sj = user;

    xf_metric_observe(XF_M_session_segment_seconds, "write", NULL,
                      (double)(xf_now_ns() - sj->t_comp) * 1e-9);
    if (rc == -EAGAIN) {
        xf_metric_add(XF_M_session_conflicts_total, NULL, NULL, 1);
        finish(sj, XF_HE_SESSION_CONFLICT, 0, "session %s was advanced by another request, "
               "or its TTL ran out, while this segment was computed; retry it",
               strrchr(sj->key, ':') + 1);
    } else if (rc == XF_EREDIS) {
        finish(sj, XF_HE_REDIS_UNAVAILABLE, 1, "session store unavailable; the segment was not "
               "stored, retry it");
    } else if (rc == -ETIMEDOUT) {
        /* the write may have landed: a blind retry would apply the segment twice */
        finish(sj, XF_HE_REDIS_UNAVAILABLE, 1, "session store did not confirm the write; the "
               "segment may have been stored: GET /v1/sessions/%s and compare segments (%lld "
               "if it was) before retrying", strrchr(sj->key, ':') + 1,
               (long long)(sj->enc ? sj->est.segments : sj->st.segments));
    } else if (rc == -ENOSPC) {
        finish(sj, XF_HE_TOO_MANY_TOKENS, 0, "session memory of %zu bytes exceeds "
               "session.store_max_bytes; the segment was not stored", sj->blob_out_len);
    } else if (rc < 0) {
        finish(sj, XF_HE_OUT_OF_MEMORY, 1, "session store: %s", xf_strerror(rc));
    } else {
        xf_metric_set(XF_M_session_blob_bytes, NULL, NULL, (int64_t)sj->blob_out_len);
        finish(sj, 0, 0, NULL);
    }
}

static void on_del_end(void *user, int rc)
{
    sjob_t *sj = user;

    if (rc == XF_EREDIS)
        finish(sj, XF_HE_REDIS_UNAVAILABLE, 1, "session store unavailable; the sequence end "
               "was not recorded, retry it");
    else
        finish(sj, 0, 0, NULL);
}

/* Thread pool, before each layer: stop a segment whose deadline has passed (job->deadline_ns
 * is written once, before the job reaches the loop). */
static int past_deadline(void *user, int32_t layers_done, int32_t n_layer)
{
    const sjob_t *sj = user;

    (void)layers_done, (void)n_layer;
    return xf_now_ns() > sj->job->deadline_ns;
}

/* The new blob's buffer, len bytes, into sj->blob_out (thread pool): 0, or sj->rc (-EFBIG
 * past session.max_bytes, with the message; -ENOMEM); 1 for a sequence_end segment, whose
 * memory is released, not stored: no blob, so neither session.max_bytes nor session.dtype's
 * range can refuse it (memory_bytes still reports len). */
static int blob_out_alloc(sjob_t *sj, size_t len)
{
    const xf_server_t *s = sj->srv;
    if (sj->seq_end) {
        sj->blob_out_len = len;
        return 1;
    }
    if ((int64_t)len > s->o.session_max_bytes) {
        sj->rc = -EFBIG;
        snprintf(sj->msg, sizeof sj->msg, "session memory of %zu bytes exceeds "
                 "session.max_bytes (%lld)", len, (long long)s->o.session_max_bytes);
        return sj->rc;
    }
    if (!(sj->blob_out = malloc(len)))
        return sj->rc = -ENOMEM;
    sj->blob_out_len = len;
    return 0;
}

/* The save into sj->blob_out returned rc (xf_state_save or xf_txl_mem_save: -ERANGE when a
 * value does not fit f16). */
static void blob_out_saved(sjob_t *sj, int rc)
{
    sj->rc = rc;
    if (rc == -ERANGE)
        snprintf(sj->msg, sizeof sj->msg, "a memory value does not fit session.dtype f16");
}

/* Thread pool, encoder sessions: before the compute, the state from the stored blob (a blob
 * that fails a check is discarded: reset); after it, the new blob. */
static void enc_work(sjob_t *sj)
{
    xf_server_t *s = sj->srv;
    xf_sessions_t *S = s->sessions;
    xf_diag_t diag = { 0 };
    size_t len;

    if (!sj->cj) {
        if ((sj->rc = xf_state_create(S->enc, &sj->state)) < 0)
            return;
        if (sj->blob_in && xf_state_load(sj->state, sj->blob_in, sj->blob_in_len, &diag)) {
            snprintf(sj->msg, sizeof sj->msg, "%.200s", diag.msg);
            sj->reset = 1;   /* discarded, never trusted: the loop logs and counts it */
        }
        xf_state_stats(sj->state, &sj->est);
        return;
    }
    xf_state_stats(sj->state, &sj->est);
    len = xf_state_blob_size(sj->state, (enum xf_state_dtype)S->dtype);
    if (blob_out_alloc(sj, len) == 0)
        blob_out_saved(sj, xf_state_save(sj->state, (enum xf_state_dtype)S->dtype, sj->blob_out,
                                         len));
}

/* Thread pool: load the memory (or start one), run the segment, serialise the new memory. */
static void work_cb(uv_work_t *w)
{
    sjob_t *sj = w->data;
    xf_server_t *s = sj->srv;
    xf_sessions_t *S = s->sessions;
    xf_txl_mem_t *mem = NULL;
    xf_diag_t diag = { 0 };
    size_t len;

    if (sj->enc) {
        enc_work(sj);
        return;
    }
    sj->rc = xf_txl_mem_create(S->model, s->o.session_init ? XF_TXL_INIT_ZEROS
                                                           : XF_TXL_INIT_EMPTY, &mem);
    if (sj->rc < 0)
        return;
    if (sj->blob_in && xf_txl_mem_load(S->model, sj->blob_in, sj->blob_in_len, mem, &diag)) {
        snprintf(sj->msg, sizeof sj->msg, "%.200s", diag.msg);
        sj->reset = 1;   /* discarded, never trusted: the loop logs and counts it */
    }
    if (sj->op == SOP_GET) {
        xf_txl_mem_stats(mem, &sj->st);
        xf_txl_mem_free(mem);
        return;
    }
    sj->rc = xf_txl_run_progress(S->model, mem, sj->ids, sj->n, sj->want, past_deadline, sj,
                                 &sj->res, &diag);
    if (sj->rc < 0) {
        snprintf(sj->msg, sizeof sj->msg, "%.200s", diag.msg);
        xf_txl_mem_free(mem);
        return;
    }
    xf_txl_mem_stats(mem, &sj->st);
    len = xf_txl_mem_blob_size(S->model, mem, S->dtype);
    if (blob_out_alloc(sj, len) == 0)
        blob_out_saved(sj, xf_txl_mem_save(S->model, mem, S->dtype, sj->blob_out, len));
    xf_txl_mem_free(mem);
}

static void enc_submit(sjob_t *sj);

static void after_work(uv_work_t *w, int status)
{
    sjob_t *sj = w->data;
    xf_sessions_t *S = sj->srv->sessions;

    sj->t_comp = xf_now_ns();
    /* once (an encoder segment comes back here after compute); a GET only reports the blob
     * invalid (valid: false) and leaves it stored: the segment that replaces it counts */
    if (sj->reset && !sj->cj && sj->op == SOP_SEGMENT) {
        XF_LOGW("session %s: stored memory discarded (%s); starting it again", sj->key,
                sj->msg);
        xf_metric_add(XF_M_session_resets_total, NULL, NULL, 1);
    } else if (sj->reset && sj->op == SOP_GET) {
        XF_LOGD("session %s: stored memory fails a check (%s)", sj->key, sj->msg);
    }
    if (status < 0 || !S->store) {
        finish(sj, XF_HE_DRAINING, 1, "server is shutting down");
        return;
    }
    if (sj->op == SOP_GET) {
        finish(sj, 0, 0, NULL);
        return;
    }
    if (sj->enc && !sj->cj) {
        if (sj->rc < 0)
            finish(sj, XF_HE_OUT_OF_MEMORY, 1, "out of memory loading the session");
        else
            enc_submit(sj);   /* computes in the batcher with the other requests */
        return;
    }
    xf_metric_observe(XF_M_session_segment_seconds, "compute", NULL,
                      (double)(sj->t_comp - sj->t_read) * 1e-9);
    if (sj->rc == XF_EDEADLINE) {
        /* nothing is written: the session stays as it was before this segment */
        xf_metric_add(XF_M_rejected_total, "stopped", NULL, 1);
        finish(sj, XF_HE_COMPUTE_TIMEOUT, 0, "segment %s (deadline passed while computing; "
               "the session was not advanced)", sj->msg);
    } else if (sj->rc == -EFBIG) {
        finish(sj, XF_HE_TOO_MANY_TOKENS, 0, "%s", sj->msg);
    } else if (sj->rc == -ENOMEM) {
        finish(sj, XF_HE_OUT_OF_MEMORY, 1, "out of memory computing the segment");
    } else if (sj->rc < 0) {
        finish(sj, XF_HE_INTERNAL, 0, "segment failed: %s", sj->msg[0] ? sj->msg
                                                                       : xf_strerror(sj->rc));
    } else if (sj->seq_end) {
        /* Triton's sequence_end: the sequence is over, its memory is released */
        S->store->vt->del(S->store, sj->key, on_del_end, sj);
    } else {
        /* write-after-compute, compare-and-set on what was read */
        S->store->vt->put(S->store, sj->key, sj->blob_out, sj->blob_out_len, sj->tag,
                          sj->tag_len, sj->srv->o.session_ttl_s, on_put, sj);
    }
}

/* Loop thread: the encoder segment's batch stopped at a layer boundary for another request's
 * deadline and the segment is queued again: the layers that ran updated the state, so it is
 * loaded again from the blob read (or emptied: a new or reset session). */
static int enc_restore(xf_job_t *cj)
{
    sjob_t *sj = cj->done_user;
    xf_diag_t diag = { 0 };

    xf_state_reset(sj->state);
    if (sj->blob_in && !sj->reset && xf_state_load(sj->state, sj->blob_in, sj->blob_in_len,
                                                   &diag) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "session state: %.200s", diag.msg);
        xf_job_fail(cj, XF_HE_INTERNAL, 0, msg);
        return -1;
    }
    return 0;
}

/* Loop thread: the encoder segment's compute job came back (answered or failed). */
static void enc_done(xf_job_t *cj)
{
    sjob_t *sj = cj->done_user;
    xf_server_t *s = sj->srv;

    if (cj->status != XF_HE_NONE) {
        /* nothing is written: the session stays as it was before this segment */
        finish(sj, cj->status, cj->retry_after_s, "%s (the session was not advanced)",
               cj->msg);
        return;
    }
    sj->work.data = sj;
    if (uv_queue_work(xf_loop_uv(s), &sj->work, work_cb, after_work) != 0)
        finish(sj, XF_HE_INTERNAL, 0, "cannot queue the session write");
}

/* Loop thread: the encoder segment as a job of one sequence carrying the session's state into
 * the batcher (admission, batching with other requests, deadline) and the workers. */
static void enc_submit(sjob_t *sj)
{
    xf_server_t *s = sj->srv;
    const xf_model_info_t *mi = s->info;
    int want_hidden = (sj->want & XF_TXL_OUT_HIDDEN) != 0;
    xf_job_t *cj = NULL;

    if (xf_job_create(1, sj->n, &cj) == 0)
        cj->want_pooled = 1;
    if (!cj || xf_job_alloc_outputs(cj, mi->d_model, mi->n_labels) < 0 ||
        (want_hidden && !(cj->hidden = malloc(sizeof(float) * (size_t)sj->n *
                                              (size_t)mi->d_model)))) {
        xf_job_free(cj);
        finish(sj, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
        return;
    }
    memcpy(cj->ids, sj->ids, sizeof(int32_t) * (size_t)sj->n);   /* type ids stay 0 */
    cj->lens[0] = sj->n;
    cj->max_len = sj->n;
    cj->want_hidden = want_hidden;
    cj->normalize = -1;
    cj->attn_state = xf_state_layers(sj->state);
    cj->enqueue_ns = xf_now_ns();
    cj->deadline_ns = sj->job->deadline_ns;
    cj->client_deadline = sj->timeout_ms > 0;
    cj->cost_sq = xf_attn_cost(xf_model_attention(s->model), cj->lens, 1,
                               mi->n_layer > 0 && mi->layers ? mi->layers[0].d_head : 64);
    cj->done_fn = enc_done;
    cj->restore_fn = enc_restore;
    cj->done_user = sj;
    sj->cj = cj;
    xf_server_submit(s, cj);
}

static void on_get(void *user, int rc, const uint8_t *blob, size_t len, const char *tag,
                   size_t tag_len, int64_t ttl_ms)
{
    sjob_t *sj = user;
    xf_server_t *s = sj->srv;

    sj->t_read = xf_now_ns();
    xf_metric_observe(XF_M_session_segment_seconds, "read", NULL,
                      (double)(sj->t_read - sj->t0) * 1e-9);
    if (rc == XF_EREDIS) {
        finish(sj, XF_HE_REDIS_UNAVAILABLE, 1, "session store unavailable; retry later");
        return;
    }
    xf_metric_add(rc == 0 ? XF_M_redis_hits_total : XF_M_redis_misses_total, NULL, NULL, 1);
    if (rc == XF_ENOTFOUND && sj->op == SOP_GET) {
        finish(sj, XF_HE_SESSION_NOT_FOUND, 0, "no session %s", strrchr(sj->key, ':') + 1);
        return;
    }
    sj->created = rc == XF_ENOTFOUND || sj->seq_start;
    sj->ttl_ms = ttl_ms;
    if (rc == 0) {
        /* the tag is kept for the compare-and-set even when sequence_start ignores the blob */
        if (tag_len > sizeof sj->tag)
            tag_len = sizeof sj->tag;
        memcpy(sj->tag, tag, tag_len);
        sj->tag_len = tag_len;
    }
    if (rc == 0 && !sj->seq_start) {
        sj->blob_in = malloc(len ? len : 1);
        if (!sj->blob_in) {
            finish(sj, XF_HE_OUT_OF_MEMORY, 1, "out of memory reading the session");
            return;
        }
        memcpy(sj->blob_in, blob, len);
        sj->blob_in_len = len;
    }
    sj->work.data = sj;
    if (uv_queue_work(xf_loop_uv(s), &sj->work, work_cb, after_work) != 0)
        finish(sj, XF_HE_INTERNAL, 0, "cannot queue the segment");
}

static void on_del(void *user, int rc)
{
    sjob_t *sj = user;

    if (rc == XF_EREDIS)
        finish(sj, XF_HE_REDIS_UNAVAILABLE, 1, "session store unavailable; retry later");
    else if (rc == XF_ENOTFOUND)
        finish(sj, XF_HE_SESSION_NOT_FOUND, 0, "no session %s", strrchr(sj->key, ':') + 1);
    else
        finish(sj, 0, 0, NULL);
}

static void start(xf_server_t *s, squeue_t *q)
{
    xf_sessions_t *S = s->sessions;
    sjob_t *sj = q->head->sjob;

    q->busy = 1;
    S->n_running++;
    sj->q = q;
    sj->t0 = xf_now_ns();
    if (!S->store) {
        finish(sj, XF_HE_DRAINING, 1, "server is shutting down");
        return;
    }
    if (sj->t0 > q->head->deadline_ns) {   /* waited behind its session's earlier requests */
        finish(sj, XF_HE_DEADLINE, 1, "the request waited for its session longer than "
               "request.timeout_ms");
        return;
    }
    if (!S->store->vt->up(S->store)) {
        finish(sj, XF_HE_REDIS_UNAVAILABLE, 1, "session store unavailable; retry later");
        return;
    }
    if (sj->op == SOP_DELETE)
        S->store->vt->del(S->store, sj->key, on_del, sj);
    else
        S->store->vt->get(S->store, sj->key, on_get, sj);
}

void xf_sessions_push(xf_server_t *s, xf_job_t *j)
{
    xf_sessions_t *S = s->sessions;
    sjob_t *sj = j->sjob;
    squeue_t *q;

    for (q = S->queues; q && strcmp(q->key, sj->key); q = q->next)
        ;
    if (!q) {
        q = calloc(1, sizeof *q);
        if (!q) {
            xf_job_fail(j, XF_HE_OUT_OF_MEMORY, 1, "out of memory");
            MHD_resume_connection(j->conn);
            return;
        }
        snprintf(q->key, sizeof q->key, "%s", sj->key);
        q->next = S->queues;
        S->queues = q;
        S->n_queues++;
        if (S->gauge_queues)
            xf_metric_set(XF_M_sessions_active, NULL, NULL, S->n_queues);
    }
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    if (!q->busy)
        start(s, q);
}
