/* Internal to the route handlers (routes.c, routes_tei.c, routes_kserve.c): the request-parsing
 * steps, the tokenising and submitting of a job, and the reply helpers they share. MHD threads
 * only. routes.c holds the table (routes.def), matching, OpenAI and xformd's own routes;
 * routes_tei.c the text-embeddings-inference routes; routes_kserve.c KServe v2's. */
#ifndef XF_SERVER_ROUTES_INTERNAL_H
#define XF_SERVER_ROUTES_INTERNAL_H

#include <stddef.h>

#include <jansson.h>

#include "server/http.h"
#include "server/jobs.h"

/* What a parsing step did. Helpers that may answer the request themselves return it; on
 * STEP_REPLIED the error reply is already queued in *ret and the handler returns *ret. */
typedef enum step {
    STEP_OK = 0,       /* go on */
    STEP_REPLIED       /* an error reply is queued */
} step_t;

/* Common request options (top level, or KServe "parameters"). */
typedef struct ropts {
    int truncate;
    int truncate_left;         /* TEI truncation_direction "Left": keep each text's tail */
    long long timeout_ms;
    const char *prompt;        /* TEI prompt_name's text, put before every text, or NULL */
    size_t prompt_n;
} ropts_t;

/* One text (or text pair) to tokenise, or one list of token ids used as given (OpenAI and
 * TEI accept both), borrowed from req->root. */
typedef struct text {
    const char *s;
    size_t n;
    const char *pair;
    size_t pair_n;
    json_t *ids;               /* non-NULL: a JSON list of token ids; s is unused */
    const ropts_t *ro;         /* its own truncation and prompt (TEI /vertex instances), or NULL
                                  for the request's */
} text_t;

typedef struct texts {
    text_t *v;
    size_t n;
} texts_t;

/* What a route's job computes; normalize -1 keeps the model's default (see jobs.h). */
typedef struct jobwant {
    int pooled, logits, normalize;
} jobwant_t;

/* ---- helpers every route uses (routes.c, each documented at its definition) ----------- */
/* Parsing: the body into req->root, optional typed fields, the request options, the texts.
 * On STEP_REPLIED (or a NULL job) the error reply is already queued in *ret. Jobs: tokenise
 * texts into a job and submit it. Replies: JSON float arrays, unit L2 scaling. */
enum MHD_Result xf_routes_reply_oom(xf_req_t *req);
enum MHD_Result xf_routes_reply_missing_field(xf_req_t *req, const char *key);
enum MHD_Result xf_routes_reply_too_many_tokens(xf_req_t *req);
step_t xf_routes_over_max_texts(xf_req_t *req, size_t n, const char *what, enum MHD_Result *ret);
step_t xf_routes_parse_body(xf_req_t *req, enum MHD_Result *ret);
json_t *xf_routes_opt_field(json_t *obj, const char *key);
step_t xf_routes_get_bool(xf_req_t *req, json_t *obj, const char *key, int *out,
                          enum MHD_Result *ret);
step_t xf_routes_get_int(xf_req_t *req, json_t *obj, const char *key, long long lo, long long hi,
                         long long *out, enum MHD_Result *ret);
/* A string field: _str for names and options (U+0000 inside is refused: they are compared
 * as C strings), _text for a text to embed (may hold U+0000: read its json_string_length()). */
step_t xf_routes_get_str(xf_req_t *req, json_t *obj, const char *key, const char **out,
                         enum MHD_Result *ret);
step_t xf_routes_get_text(xf_req_t *req, json_t *obj, const char *key, const char **out,
                          enum MHD_Result *ret);
int xf_routes_texts_alloc(texts_t *t, size_t n);
step_t xf_routes_get_ropts(xf_req_t *req, json_t *obj, ropts_t *ro, enum MHD_Result *ret);
step_t xf_routes_get_prompt(xf_req_t *req, json_t *obj, ropts_t *ro, enum MHD_Result *ret);
step_t xf_routes_get_attention(xf_req_t *req, json_t *obj, xf_attn_t **out, enum MHD_Result *ret);
enum MHD_Result xf_routes_submit_job(xf_req_t *req, xf_job_t *j, xf_attn_t *attn, jobwant_t want,
                                     const ropts_t *ro, enum MHD_Result ret);
xf_job_t *xf_routes_tokenise(xf_req_t *req, const texts_t *tx, const ropts_t *ro,
                             enum MHD_Result *ret);
enum MHD_Result xf_routes_submit_texts(xf_req_t *req, json_t *obj, texts_t *tx, const ropts_t *ro,
                                       jobwant_t want);
int xf_routes_is_token_array(json_t *v);
step_t xf_routes_get_texts(xf_req_t *req, json_t *v, const char *key, int allow_ids, texts_t *tx,
                           enum MHD_Result *ret);
int xf_routes_is_str_pair(json_t *v);
void xf_routes_put_floats(xf_buf_t *b, const float *v, size_t n);
void xf_routes_decode_ids(const xf_tokenizer_t *tk, json_t *a, int skip, xf_buf_t *b);
void xf_routes_unit_scale(float *v, size_t n);

/* ---- TEI's routes (routes_tei.c): handlers and replies named by routes.def -------------- */
enum MHD_Result xf_routes_tei_embed(xf_req_t *req);
enum MHD_Result xf_routes_tei_embed_all(xf_req_t *req);
enum MHD_Result xf_routes_tei_similarity(xf_req_t *req);
enum MHD_Result xf_routes_tei_rerank(xf_req_t *req);
enum MHD_Result xf_routes_tei_predict(xf_req_t *req);
enum MHD_Result xf_routes_tei_embed_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_embed_all_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_similarity_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_embed_sparse(xf_req_t *req);
enum MHD_Result xf_routes_tei_rerank_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_predict_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_root(xf_req_t *req);
enum MHD_Result xf_routes_tei_root_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_health(xf_req_t *req);
enum MHD_Result xf_routes_tei_decode(xf_req_t *req);
enum MHD_Result xf_routes_tei_tokenize(xf_req_t *req);
enum MHD_Result xf_routes_tei_vertex(xf_req_t *req);
enum MHD_Result xf_routes_tei_vertex_reply(xf_req_t *req);
enum MHD_Result xf_routes_tei_info(xf_req_t *req);

/* ---- KServe v2's routes (routes_kserve.c): handlers and replies named by routes.def ----- */
enum MHD_Result xf_routes_kserve_live(xf_req_t *req);
enum MHD_Result xf_routes_kserve_ready(xf_req_t *req);
enum MHD_Result xf_routes_kserve_server_meta(xf_req_t *req);
enum MHD_Result xf_routes_kserve_model_meta(xf_req_t *req);
enum MHD_Result xf_routes_kserve_model_ready(xf_req_t *req);
enum MHD_Result xf_routes_kserve_infer(xf_req_t *req);
enum MHD_Result xf_routes_kserve_infer_reply(xf_req_t *req);

#endif
