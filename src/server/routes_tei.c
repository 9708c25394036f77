/* Text Embeddings Inference's routes (DESIGN.md §6): /embed, /embed_all, /embed_sparse,
 * /rerank, /predict, /similarity, /tokenize, /decode, /vertex, POST / and /invocations, GET /,
 * /health, /ping and /info; their field parsers and reply writers (shared with /vertex). MHD
 * threads only; the table naming these handlers is routes.def, the helpers are in routes.c. */
#include "config.h"

#include "server/routes_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

/* ---- TEI /embed, /embed_all, /similarity, /rerank, /predict: parsers and handlers ------- */

/* A prompt for a pooled embedding of a model whose sentence-transformers Pooling leaves the
 * prompt's tokens out of the mean (include_prompt false): refused, not pooled over the prompt
 * (xformd does not mask them). /tokenize and /embed_all pool nothing and keep the prompt. */
static step_t check_prompt_pooling(xf_req_t *req, const ropts_t *ro, enum MHD_Result *ret)
{
    const xf_server_t *s = req->srv;
    enum xf_pooling p = s->o.pooling != XF_POOL_DEFAULT ? s->o.pooling : s->info->pooling;
    if (!ro->prompt || !s->info->pool_skip_prompt || p != XF_POOL_MEAN)
        return STEP_OK;
    req->err_param = "prompt_name";
    *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "prompt_name: model '%s' pools without "
                               "its prompt (include_prompt false in its sentence-transformers "
                               "Pooling config), which xformd does not support", s->model_name);
    return STEP_REPLIED;
}

/* TEI /embed's fields of obj (the request, or a /vertex instance): its texts (or token ids)
 * into tx, truncation and prompt into ro, normalize (default true) and dimensions (0: all). */
static step_t parse_embed(xf_req_t *req, json_t *obj, texts_t *tx, ropts_t *ro, int *normalize,
                          int *dims, enum MHD_Result *ret)
{
    xf_server_t *s = req->srv;
    long long d = 0;
    *normalize = 1;
    if (xf_routes_get_bool(req, obj, "normalize", normalize, ret) != STEP_OK ||
        xf_routes_get_int(req, obj, "dimensions", 0, 1000000, &d, ret) != STEP_OK ||
        xf_routes_get_ropts(req, obj, ro, ret) != STEP_OK ||
        xf_routes_get_prompt(req, obj, ro, ret) != STEP_OK ||
        check_prompt_pooling(req, ro, ret) != STEP_OK)
        return STEP_REPLIED;
    /* TEI's Matryoshka dimensions: the first dims values, normalised after the cut. */
    if (xf_routes_opt_field(obj, "dimensions") && (d < 1 || d > s->info->d_model)) {
        req->err_param = "dimensions";
        *ret = xf_http_reply_error(req, XF_HE_BAD_DIMENSIONS, 0, "field 'dimensions' must be "
                                   "between 1 and the model's %d", s->info->d_model);
        return STEP_REPLIED;
    }
    *dims = (int)d;
    return xf_routes_get_texts(req, json_object_get(obj, "inputs"), "inputs", 1, tx, ret);
}

enum MHD_Result xf_routes_tei_embed(xf_req_t *req)
{
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    req->compute_headers = 1;
    texts_t tx = { 0 };
    ropts_t ro;
    if (parse_embed(req, req->root, &tx, &ro, &req->normalize, &req->dimensions, &ret) !=
        STEP_OK)
        return ret;
    return xf_routes_submit_texts(req, req->root, &tx, &ro, (jobwant_t){ 1, 0, req->normalize });
}

/* TEI's /embed_all: the same request as /embed (without normalize and dimensions) -> for
 * every input the last hidden state of every token, [CLS] and [SEP] included, as computed
 * (not normalised): [[[f, ...] per token] per input]. */
enum MHD_Result xf_routes_tei_embed_all(xf_req_t *req)
{
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    req->compute_headers = 1;
    texts_t tx = { 0 };
    ropts_t ro;
    if (xf_routes_get_ropts(req, req->root, &ro, &ret) != STEP_OK ||
        xf_routes_get_prompt(req, req->root, &ro, &ret) != STEP_OK ||
        xf_routes_get_texts(req, json_object_get(req->root, "inputs"), "inputs", 1, &tx,
                            &ret) != STEP_OK)
        return ret;
    xf_attn_t *attn = NULL;
    if (xf_routes_get_attention(req, req->root, &attn, &ret) != STEP_OK) {
        free(tx.v);
        return ret;
    }
    xf_job_t *j = xf_routes_tokenise(req, &tx, &ro, &ret);
    free(tx.v);
    if (j) {
        j->want_hidden = 1;
        j->hidden = calloc((size_t)j->n_tokens * (size_t)req->srv->info->d_model + 1,
                           sizeof(float));
        if (!j->hidden) {
            xf_job_free(j);
            xf_attn_free(attn);
            return xf_routes_reply_oom(req);
        }
    }
    return xf_routes_submit_job(req, j, attn, (jobwant_t){ 0, 0, -1 }, &ro, ret);
}

/* TEI's /similarity: {"inputs": {"source_sentence": s, "sentences": [...]}, "parameters":
 * {truncate, truncation_direction, prompt_name}} -> the cosine of each sentence's embedding with
 * the source's. One job embeds the source first, then the sentences, normalised. */
enum MHD_Result xf_routes_tei_similarity(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (s->info->n_labels > 0)
        return xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0, "/similarity needs an "
                                   "embedding model; model '%s' is a classifier", s->model_name);
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    req->compute_headers = 1;
    json_t *in = json_object_get(req->root, "inputs");
    if (!in)
        return xf_routes_reply_missing_field(req, "inputs");
    if (!json_is_object(in))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'inputs' must be an object "
                                   "{\"source_sentence\": ..., \"sentences\": [...]}");
    const char *src = NULL;
    if (xf_routes_get_text(req, in, "source_sentence", &src, &ret) != STEP_OK)
        return ret;
    if (!src)
        return xf_routes_reply_missing_field(req, "inputs.source_sentence");
    json_t *sents = json_object_get(in, "sentences");
    if (!json_is_array(sents))
        return xf_http_reply_error(req, sents ? XF_HE_BAD_FIELD : XF_HE_MISSING_FIELD, 0,
                                   "field 'inputs.sentences' must be a list of strings");
    ropts_t ro;
    json_t *params = json_object_get(req->root, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'parameters' must be an "
                                   "object");
    json_t *po = json_is_object(params) ? params : json_object();   /* no options: defaults */
    step_t st = xf_routes_get_ropts(req, po, &ro, &ret);
    if (st == STEP_OK)
        st = xf_routes_get_prompt(req, po, &ro, &ret);
    if (st == STEP_OK)
        st = check_prompt_pooling(req, &ro, &ret);
    if (po != params)
        json_decref(po);
    if (st != STEP_OK)
        return ret;
    texts_t tx = { 0 };
    if (xf_routes_get_texts(req, sents, "sentences", 0, &tx, &ret) != STEP_OK)
        return ret;
    texts_t all = { 0 };
    if (xf_routes_over_max_texts(req, tx.n + 1, "texts", &ret) != STEP_OK) {
        free(tx.v);
        return ret;
    }
    if (xf_routes_texts_alloc(&all, tx.n + 1) < 0) {
        free(tx.v);
        return xf_routes_reply_oom(req);
    }
    all.v[0].s = src;
    all.v[0].n = json_string_length(json_object_get(in, "source_sentence"));
    memcpy(all.v + 1, tx.v, tx.n * sizeof *tx.v);
    all.n = tx.n + 1;
    free(tx.v);
    xf_job_t *j = xf_routes_tokenise(req, &all, &ro, &ret);
    free(all.v);
    return xf_routes_submit_job(req, j, NULL, (jobwant_t){ 1, 0, 1 }, &ro, ret);
}

/* TEI /rerank's fields of obj (the request, or a /vertex instance): query and texts into tx
 * as (query, text) pairs, raw_scores and return_text (default false). In TEI's order: the
 * fields (422), an empty texts (400), then the model (424). */
static step_t parse_rerank(xf_req_t *req, json_t *obj, texts_t *tx, ropts_t *ro, int *raw,
                           int *ret_text, enum MHD_Result *ret)
{
    xf_server_t *s = req->srv;
    const char *query = NULL;
    *raw = *ret_text = 0;
    if (xf_routes_get_text(req, obj, "query", &query, ret) != STEP_OK ||
        xf_routes_get_bool(req, obj, "raw_scores", raw, ret) != STEP_OK ||
        xf_routes_get_bool(req, obj, "return_text", ret_text, ret) != STEP_OK ||
        xf_routes_get_ropts(req, obj, ro, ret) != STEP_OK)
        return STEP_REPLIED;
    if (!query) {
        *ret = xf_routes_reply_missing_field(req, "query");
        return STEP_REPLIED;
    }
    json_t *texts = json_object_get(obj, "texts");
    if (texts && !json_is_array(texts)) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'texts' must be a list "
                                   "of strings");
        return STEP_REPLIED;
    }
    if (xf_routes_get_texts(req, texts, "texts", 0, tx, ret) != STEP_OK)
        return STEP_REPLIED;
    if (s->info->n_labels != 1) {
        free(tx->v);
        tx->v = NULL;
        *ret = xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0, "/rerank needs a "
                                   "cross-encoder (a classifier head with 1 label); model '%s' "
                                   "has %d labels", s->model_name, s->info->n_labels);
        return STEP_REPLIED;
    }
    size_t qn = json_string_length(json_object_get(obj, "query"));
    for (size_t i = 0; i < tx->n; i++) {
        tx->v[i].pair = tx->v[i].s;
        tx->v[i].pair_n = tx->v[i].n;
        tx->v[i].s = query;
        tx->v[i].n = qn;
    }
    return STEP_OK;
}

/* The scoring routes' handler: parse_rerank or parse_predict over the body (setting *flag0 and
 * *flag1, fields of req), then one job of the texts that wants the logits. */
typedef step_t (*score_parse_fn)(xf_req_t *req, json_t *obj, texts_t *tx, ropts_t *ro,
                                 int *flag0, int *flag1, enum MHD_Result *ret);

static enum MHD_Result score_route(xf_req_t *req, score_parse_fn parse, int *flag0,
                                   int *flag1)
{
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    req->compute_headers = 1;
    texts_t tx = { 0 };
    ropts_t ro;
    if (parse(req, req->root, &tx, &ro, flag0, flag1, &ret) != STEP_OK)
        return ret;
    return xf_routes_submit_texts(req, req->root, &tx, &ro, (jobwant_t){ 0, 1, -1 });
}

enum MHD_Result xf_routes_tei_rerank(xf_req_t *req)
{
    return score_route(req, parse_rerank, &req->raw_scores, &req->return_text);
}

/* TEI /predict's fields of obj (the request, or a /vertex instance): inputs into tx,
 * raw_scores, and whether inputs was a batch. */
static step_t parse_predict(xf_req_t *req, json_t *obj, texts_t *tx, ropts_t *ro, int *raw,
                            int *batch, enum MHD_Result *ret)
{
    xf_server_t *s = req->srv;
    if (s->info->n_labels < 1) {
        *ret = xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0, "/predict needs a "
                                   "classifier head; model '%s' has none", s->model_name);
        return STEP_REPLIED;
    }
    *raw = 0;
    if (xf_routes_get_bool(req, obj, "raw_scores", raw, ret) != STEP_OK ||
        xf_routes_get_ropts(req, obj, ro, ret) != STEP_OK)
        return STEP_REPLIED;
    json_t *in = json_object_get(obj, "inputs");
    if (!in) {
        *ret = xf_routes_reply_missing_field(req, "inputs");
        return STEP_REPLIED;
    }
    /* TEI: "a" | ["a","b"] (one pair) | [seq, ...] where seq is ["a"] or ["a","b"]. */
    size_t n = 1;
    int single = json_is_string(in) || xf_routes_is_str_pair(in);
    if (!single) {
        if (!json_is_array(in)) {
            *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'inputs' must be a "
                                       "string, a pair of strings or a list of them");
            return STEP_REPLIED;
        }
        n = json_array_size(in);
        if (n == 0) {
            *ret = xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field 'inputs' is an empty "
                                       "list");
            return STEP_REPLIED;
        }
        if (xf_routes_over_max_texts(req, n, "inputs", ret) != STEP_OK)
            return STEP_REPLIED;
    }
    if (xf_routes_texts_alloc(tx, n) < 0) {
        *ret = xf_routes_reply_oom(req);
        return STEP_REPLIED;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = single ? in : json_array_get(in, i);
        text_t *t = &tx->v[i];
        if (json_is_string(e)) {
            t->s = json_string_value(e);
            t->n = json_string_length(e);
        } else if (!single && json_is_array(e) && json_array_size(e) == 1 &&
                   json_is_string(json_array_get(e, 0))) {
            /* TEI's batch of single texts: [["a"], ["b"]] */
            t->s = json_string_value(json_array_get(e, 0));
            t->n = json_string_length(json_array_get(e, 0));
        } else if (xf_routes_is_str_pair(e)) {
            t->s = json_string_value(json_array_get(e, 0));
            t->n = json_string_length(json_array_get(e, 0));
            t->pair = json_string_value(json_array_get(e, 1));
            t->pair_n = json_string_length(json_array_get(e, 1));
        } else {
            free(tx->v);
            tx->v = NULL;
            *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'inputs'[%zu] must be a "
                                       "string, [string] or a pair of strings", i);
            return STEP_REPLIED;
        }
    }
    tx->n = n;
    *batch = !single;
    return STEP_OK;
}

enum MHD_Result xf_routes_tei_predict(xf_req_t *req)
{
    return score_route(req, parse_predict, &req->raw_scores, &req->batch_form);
}

/* {m} names the served model and {v}, when given, its only version "1". */

/* ---- TEI replies ------------------------------------------------------------------------ */

/* TEI's EmbedResponse for n pooled rows: [[f, ...], ...], each cut to dims (0: all) and, with
 * unit, scaled to unit norm after the cut. */
static void put_embed(xf_buf_t *b, const float *rows, size_t n, size_t d, size_t dims, int unit)
{
    dims = dims > 0 && dims < d ? dims : d;
    float *tmp = unit ? malloc(dims * sizeof *tmp) : NULL;
    if (unit && !tmp) {
        b->oom = 1;
        return;
    }
    xf_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        const float *row = rows + i * d;
        if (tmp) {
            memcpy(tmp, row, dims * sizeof *tmp);
            xf_routes_unit_scale(tmp, dims);
            row = tmp;
        }
        if (i)
            xf_buf_puts(b, ",");
        xf_routes_put_floats(b, row, dims);
    }
    xf_buf_puts(b, "]");
    free(tmp);
}

enum MHD_Result xf_routes_tei_embed_reply(xf_req_t *req)
{
    xf_job_t *j = req->job;
    size_t d = (size_t)req->srv->info->d_model;
    size_t dims = req->dimensions > 0 ? (size_t)req->dimensions : d;
    xf_buf_t b = { 0 };
    /* TEI cuts, then normalises when asked (the pooled row is already normalised then, so
     * renormalising the cut equals normalising the raw cut). */
    put_embed(&b, j->pooled, (size_t)j->n_seq, d, dims, req->normalize && dims < d);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

enum MHD_Result xf_routes_tei_embed_all_reply(xf_req_t *req)
{
    xf_job_t *j = req->job;
    size_t d = (size_t)req->srv->info->d_model, t = 0;
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "[");
    for (int32_t i = 0; i < j->n_seq; i++) {
        xf_buf_puts(&b, i ? ",[" : "[");
        for (int32_t k = 0; k < j->lens[i]; k++, t++) {
            if (k)
                xf_buf_puts(&b, ",");
            xf_routes_put_floats(&b, j->hidden + t * d, d);
        }
        xf_buf_puts(&b, "]");
    }
    xf_buf_puts(&b, "]");
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* The sentences' cosines with the source (rows are unit vectors: a dot product). */
enum MHD_Result xf_routes_tei_similarity_reply(xf_req_t *req)
{
    xf_job_t *j = req->job;
    size_t d = (size_t)req->srv->info->d_model;
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "[");
    for (int32_t i = 1; i < j->n_seq; i++) {
        double dot = 0;
        for (size_t c = 0; c < d; c++)
            dot += (double)j->pooled[c] * j->pooled[(size_t)i * d + c];
        if (i > 1)
            xf_buf_puts(&b, ",");
        xf_buf_float(&b, (float)dot);
    }
    xf_buf_puts(&b, "]");
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* TEI's /embed_sparse serves only SPLADE models and answers 424 for any other (xformd has
 * no SPLADE pooling). */
enum MHD_Result xf_routes_tei_embed_sparse(xf_req_t *req)
{
    return xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0, "/embed_sparse needs an "
                               "embedding model with SPLADE pooling; model '%s' is not one",
                               req->srv->model_name);
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

/* TEI's RerankResponse for n logits of (query, texts[i]) pairs: [{index, text?, score}, ...],
 * best first; the sigmoid of each logit unless raw. */
static void put_rerank(xf_buf_t *b, const float *logits, size_t n, int raw, json_t *texts)
{
    scored_t *sc = calloc(n ? n : 1, sizeof *sc);
    if (!sc) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sc[i].index = (int)i;
        sc[i].score = raw ? logits[i] : sigmoidf(logits[i]);
    }
    qsort(sc, n, sizeof *sc, cmp_scored);
    xf_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        xf_buf_printf(b, "%s{\"index\":%d", i ? "," : "", sc[i].index);
        if (texts) {
            json_t *t = json_array_get(texts, (size_t)sc[i].index);
            xf_buf_puts(b, ",\"text\":");
            xf_buf_json_str(b, json_string_value(t), json_string_length(t));
        }
        xf_buf_puts(b, ",\"score\":");
        xf_buf_float(b, sc[i].score);
        xf_buf_puts(b, "}");
    }
    xf_buf_puts(b, "]");
    free(sc);
}

enum MHD_Result xf_routes_tei_rerank_reply(xf_req_t *req)
{
    xf_job_t *j = req->job;
    xf_buf_t b = { 0 };
    put_rerank(&b, j->logits, (size_t)j->n_seq, req->raw_scores,
               req->return_text ? json_object_get(req->root, "texts") : NULL);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

static void label_name(const xf_model_info_t *mi, int k, char *buf, size_t len)
{
    if (mi->labels && mi->labels[k])
        snprintf(buf, len, "%s", mi->labels[k]);
    else
        snprintf(buf, len, "LABEL_%d", k);
}

/* TEI's PredictResponse for n rows of logits: each row [{score, label}, ...] best first
 * (softmax, or the sigmoid for one label, unless raw); a batch is a list of rows. */
static void put_predict(xf_buf_t *b, const xf_model_info_t *mi, const float *logits, size_t n,
                        int raw, int batch)
{
    int nl = mi->n_labels;
    scored_t *sc = calloc((size_t)nl, sizeof *sc);
    if (!sc) {
        b->oom = 1;
        return;
    }
    if (batch)
        xf_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        const float *lg = logits + i * (size_t)nl;
        float mx = lg[0];
        for (int k = 1; k < nl; k++)
            mx = lg[k] > mx ? lg[k] : mx;
        double z = 0;
        for (int k = 0; k < nl; k++)
            z += exp((double)(lg[k] - mx));
        for (int k = 0; k < nl; k++) {
            sc[k].index = k;
            if (raw)
                sc[k].score = lg[k];
            else if (nl == 1)
                sc[k].score = sigmoidf(lg[k]);
            else
                sc[k].score = (float)(exp((double)(lg[k] - mx)) / z);
        }
        qsort(sc, (size_t)nl, sizeof *sc, cmp_scored);
        xf_buf_puts(b, i ? ",[" : "[");
        for (int k = 0; k < nl; k++) {
            char name[128];
            label_name(mi, sc[k].index, name, sizeof name);
            xf_buf_puts(b, k ? ",{\"score\":" : "{\"score\":");
            xf_buf_float(b, sc[k].score);
            xf_buf_puts(b, ",\"label\":");
            xf_buf_json_str(b, name, strlen(name));
            xf_buf_puts(b, "}");
        }
        xf_buf_puts(b, "]");
    }
    if (batch)
        xf_buf_puts(b, "]");
    free(sc);
}

enum MHD_Result xf_routes_tei_predict_reply(xf_req_t *req)
{
    xf_job_t *j = req->job;
    xf_buf_t b = { 0 };
    put_predict(&b, req->srv->info, j->logits, (size_t)j->n_seq, req->raw_scores,
                req->batch_form);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* ---- TEI's root, health, /decode, /tokenize -------------------------------------------- */

/* TEI serves one route at "/" by model type: a classifier predicts, a 1-label classifier
 * (cross-encoder) reranks, anything else embeds. */
/* huggingface_hub's InferenceClient.sentence_similarity posts {"inputs": {"source_sentence":
 * ..., "sentences": [...]}} to the base URL: on an embedding model "/" answers that shape as
 * /similarity (TEI does so only when started with TASK=sentence-similarity). */
static int root_similarity(const xf_req_t *req)
{
    return req->srv->info->n_labels == 0 &&
           json_is_object(json_object_get(req->root, "inputs"));
}

enum MHD_Result xf_routes_tei_root(xf_req_t *req)
{
    int nl = req->srv->info->n_labels;
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    if (root_similarity(req))
        return xf_routes_tei_similarity(req);
    return nl == 1  ? xf_routes_tei_rerank(req)
           : nl > 1 ? xf_routes_tei_predict(req)
                    : xf_routes_tei_embed(req);
}

enum MHD_Result xf_routes_tei_root_reply(xf_req_t *req)
{
    int nl = req->srv->info->n_labels;
    if (root_similarity(req))
        return xf_routes_tei_similarity_reply(req);
    return nl == 1  ? xf_routes_tei_rerank_reply(req)
           : nl > 1 ? xf_routes_tei_predict_reply(req)
                    : xf_routes_tei_embed_reply(req);
}

enum MHD_Result xf_routes_tei_health(xf_req_t *req)
{
    int ready = atomic_load(&req->srv->ready);
    return xf_http_reply_json(req, ready ? 200 : 503,
                              json_pack("{s:s}", "status", ready ? "ok" : "unhealthy"));
}

/* One token of a WordPiece decode, as Hugging Face's WordPiece decoder writes it: a "##"
 * piece after the first token joins the previous one, any other token after the first gets a
 * space; then its cleanup, token by token, takes the space back before a token that starts
 * with ".", "?", "!", ",", "n't", "'m", "'s", "'ve" or "'re". */
static void decode_piece(xf_buf_t *b, const char *tok, int first)
{
    static const char *const tight[] = { ".", "?", "!", ",", "n't", "'m", "'s", "'ve", "'re" };
    if (!first && !strncmp(tok, "##", 2)) {
        xf_buf_puts(b, tok + 2);
        return;
    }
    int space = !first;
    for (size_t k = 0; space && k < sizeof tight / sizeof tight[0]; k++)
        space = strncmp(tok, tight[k], strlen(tight[k])) != 0;
    if (space)
        xf_buf_puts(b, " ");
    xf_buf_puts(b, tok);
}

/* The text of the token ids of a (JSON integers, checked by the caller; ids outside the
 * vocabulary are left out, as Hugging Face's decode leaves them) appended to b, as TEI's
 * tokenizer decodes them; with skip, [CLS], [SEP], [PAD], [UNK] and [MASK] are left out too.
 * /decode writes its strings with it, and ids sent with a prompt_name are decoded with it
 * (xf_routes_tokenise). */
void xf_routes_decode_ids(const xf_tokenizer_t *tk, json_t *a, int skip, xf_buf_t *b)
{
    xf_special_ids_t sp;
    xf_tokenizer_specials(tk, &sp);
    int32_t vocab = xf_tokenizer_vocab_size(tk);
    int first = 1;
    for (size_t q = 0; q < json_array_size(a); q++) {
        json_int_t id = json_integer_value(json_array_get(a, q));
        if (id < 0 || id >= vocab)
            continue;
        if (skip && (id == sp.cls || id == sp.sep || id == sp.pad || id == sp.unk ||
                     id == sp.mask))
            continue;
        const char *tok = xf_tokenizer_token(tk, (int32_t)id);
        if (!tok)
            continue;
        decode_piece(b, tok, first);
        first = 0;
    }
}

/* TEI's /decode: {"ids": [ids] | [[ids], ...], "skip_special_tokens": true} -> a list of
 * strings. Ids outside the vocabulary are left out (as Hugging Face's tokenizers decode
 * does); with skip_special_tokens (the default) so are [CLS], [SEP], [PAD], [UNK], [MASK].
 * Runs here on the MHD thread: no model work. */
enum MHD_Result xf_routes_tei_decode(xf_req_t *req)
{
    const xf_tokenizer_t *tk = req->srv->tok;
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    int skip = 1;
    if (xf_routes_get_bool(req, req->root, "skip_special_tokens", &skip, &ret) != STEP_OK)
        return ret;
    json_t *ids = json_object_get(req->root, "ids");
    if (!ids)
        return xf_routes_reply_missing_field(req, "ids");
    if (!json_is_array(ids))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'ids' must be a list of "
                                   "token ids or a list of such lists");
    int batch = json_array_size(ids) > 0 && json_is_array(json_array_get(ids, 0));
    size_t n = batch ? json_array_size(ids) : 1;
    if (batch && xf_routes_over_max_texts(req, n, "inputs", &ret) != STEP_OK)
        return ret;
    if (json_array_size(ids) == 0)
        return xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field 'ids' is an empty list");
    xf_buf_t b = { 0 }, one = { 0 };
    xf_buf_puts(&b, "[");
    for (size_t i = 0; i < n; i++) {
        json_t *a = batch ? json_array_get(ids, i) : ids;
        if (!json_is_array(a)) {
            xf_buf_free(&b);
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'ids'[%zu] must be a "
                                       "list of token ids", i);
        }
        if (json_array_size(a) == 0) {   /* as TEI: Empty */
            xf_buf_free(&b);
            xf_buf_free(&one);
            return xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "field 'ids'[%zu] is an empty "
                                       "list", i);
        }
        one.len = 0;
        for (size_t q = 0; q < json_array_size(a); q++) {
            json_t *e = json_array_get(a, q);
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) > 4294967295LL) {
                xf_buf_free(&b);
                xf_buf_free(&one);
                return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'ids': element "
                                           "%zu of input %zu must be a non-negative integer "
                                           "(a token id)", q, i);
            }
        }
        xf_routes_decode_ids(tk, a, skip, &one);
        xf_buf_puts(&b, i ? "," : "");
        xf_buf_json_str(&b, one.p ? one.p : "", one.p ? one.len : 0);
    }
    xf_buf_puts(&b, "]");
    if (one.oom)
        b.oom = 1;
    xf_buf_free(&one);
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* TEI's /tokenize: {"inputs": "a" | ["a", ...], "add_special_tokens": true, "prompt_name": n}
 * -> for every input its tokens [{"id", "text", "special", "start", "stop"}, ...]: a special
 * token's text is its vocabulary string and start/stop are null; any other's text is the bytes
 * [start, stop) of the input (after the prompt is put before it, as TEI). No length limit on
 * the model's positions (TEI tokenises the whole text here); request.max_tokens bounds the
 * reply. Runs here on the MHD thread: no model work. */
enum MHD_Result xf_routes_tei_tokenize(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    int add = 1;
    ropts_t ro;
    if (xf_routes_get_bool(req, req->root, "add_special_tokens", &add, &ret) != STEP_OK ||
        xf_routes_get_ropts(req, req->root, &ro, &ret) != STEP_OK ||
        xf_routes_get_prompt(req, req->root, &ro, &ret) != STEP_OK)
        return ret;
    texts_t tx = { 0 };
    if (xf_routes_get_texts(req, json_object_get(req->root, "inputs"), "inputs", 0, &tx, &ret) !=
        STEP_OK)
        return ret;
    xf_tok_opts_t to = { .no_special = !add, .offsets = 1 };
    xf_tokens_t tok = { 0 };
    xf_buf_t b = { 0 }, text = { 0 };
    long long total = 0;
    xf_buf_puts(&b, "[");
    for (size_t i = 0; i < tx.n; i++) {
        xf_diag_t diag = { 0, "" };
        text.len = 0;
        if (tx.v[i].n == 0) {   /* as TEI: Empty, before the prompt */
            req->err_param = "inputs";
            ret = xf_http_reply_error(req, XF_HE_EMPTY_INPUT, 0, "input %zu is an empty "
                                      "string", i);
            goto out;
        }
        if (ro.prompt)
            xf_buf_putn(&text, ro.prompt, ro.prompt_n);
        xf_buf_putn(&text, tx.v[i].s, tx.v[i].n);
        if (text.oom)
            break;
        int rc = xf_tokenizer_encode(s->tok, text.p ? text.p : "", text.len, NULL, 0, &to, &tok,
                                     &diag);
        if (rc == 0 && (total += tok.n) > s->o.max_tokens) {
            ret = xf_routes_reply_too_many_tokens(req);
            goto out;
        }
        if (rc != 0) {
            req->err_param = "inputs";
            ret = xf_http_reply_error(req, rc == XF_EFORMAT ? XF_HE_INVALID_UTF8
                                      : rc == -ENOMEM ? XF_HE_OUT_OF_MEMORY : XF_HE_INTERNAL,
                                      rc == -ENOMEM, "input %zu: %s", i,
                                      diag.msg[0] ? diag.msg : xf_strerror(rc));
            goto out;
        }
        xf_buf_puts(&b, i ? ",[" : "[");
        for (int32_t k = 0; k < tok.n; k++) {
            int32_t beg = tok.offsets[2 * k], end = tok.offsets[2 * k + 1];
            xf_buf_printf(&b, "%s{\"id\":%d,\"text\":", k ? "," : "", (int)tok.ids[k]);
            if (beg < 0) {
                const char *name = xf_tokenizer_token(s->tok, tok.ids[k]);
                name = name ? name : "";
                xf_buf_json_str(&b, name, strlen(name));
                xf_buf_puts(&b, ",\"special\":true,\"start\":null,\"stop\":null}");
            } else {
                xf_buf_json_str(&b, text.p + beg, (size_t)(end - beg));
                xf_buf_printf(&b, ",\"special\":false,\"start\":%d,\"stop\":%d}", (int)beg,
                              (int)end);
            }
        }
        xf_buf_puts(&b, "]");
    }
    xf_buf_puts(&b, "]");
    if (text.oom)
        b.oom = 1;
    ret = xf_http_reply_buf(req, 200, "application/json", &b);
out:
    free(tx.v);
    xf_buf_free(&text);
    xf_buf_free(&b);
    xf_tokens_deinit(&tok);
    return ret;
}

/* ---- TEI /vertex ---------------------------------------------------------------------- */

/* What a /vertex instance asks for, as TEI tells them apart: an instance that reads as a
 * /rerank request (query and texts) reranks; any other predicts on a classifier and embeds on
 * an embedding model. */
typedef enum vx_kind { VX_EMBED, VX_PREDICT, VX_RERANK } vx_kind_t;

static vx_kind_t vx_kind(const xf_req_t *req, json_t *inst)
{
    if (json_is_string(json_object_get(inst, "query")) &&
        json_is_array(json_object_get(inst, "texts")))
        return VX_RERANK;
    return req->srv->info->n_labels > 0 ? VX_PREDICT : VX_EMBED;
}

/* {"instances": [request, ...]}: every instance is a whole /embed, /predict or /rerank request
 * body; all their sequences go into one job (each keeps its own truncation and prompt), and
 * the reply is {"predictions": [that route's reply per instance]}. An instance that does not
 * parse fails the whole request with that route's error (TEI: Validation 422). */
enum MHD_Result xf_routes_tei_vertex(xf_req_t *req)
{
    enum MHD_Result ret = MHD_NO;
    if (xf_routes_parse_body(req, &ret) != STEP_OK)
        return ret;
    json_t *inst = json_object_get(req->root, "instances");
    if (!inst)
        return xf_routes_reply_missing_field(req, "instances");
    if (!json_is_array(inst))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'instances' must be a list "
                                   "of request objects");
    size_t n = json_array_size(inst);
    if (n == 0)
        return xf_http_reply_json(req, 200, json_pack("{s:[]}", "predictions"));
    if (xf_routes_over_max_texts(req, n, "instances", &ret) != STEP_OK)
        return ret;
    ropts_t *ros = calloc(n, sizeof *ros);
    texts_t all = { 0 };
    if (!ros)
        return xf_routes_reply_oom(req);
    int want_pooled = 0, want_logits = 0;
    step_t st = STEP_OK;
    for (size_t i = 0; i < n && st == STEP_OK; i++) {
        json_t *o = json_array_get(inst, i);
        if (!json_is_object(o)) {
            ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "instances[%zu] must be a "
                                      "request object", i);
            st = STEP_REPLIED;
            break;
        }
        texts_t tx = { 0 };
        int a = 0, c = 0;
        switch (vx_kind(req, o)) {
        case VX_RERANK:
            st = parse_rerank(req, o, &tx, &ros[i], &a, &c, &ret);
            want_logits = 1;
            break;
        case VX_PREDICT:
            st = parse_predict(req, o, &tx, &ros[i], &a, &c, &ret);
            want_logits = 1;
            break;
        default:
            st = parse_embed(req, o, &tx, &ros[i], &a, &c, &ret);
            want_pooled = 1;
            break;
        }
        if (st != STEP_OK)
            break;
        if (xf_routes_over_max_texts(req, all.n + tx.n, "texts", &ret) != STEP_OK) {
            free(tx.v);
            st = STEP_REPLIED;
            break;
        }
        text_t *v = realloc(all.v, (all.n + tx.n) * sizeof *v);
        if (!v) {
            free(tx.v);
            ret = xf_routes_reply_oom(req);
            st = STEP_REPLIED;
            break;
        }
        all.v = v;
        for (size_t k = 0; k < tx.n; k++) {
            all.v[all.n + k] = tx.v[k];
            all.v[all.n + k].ro = &ros[i];
        }
        all.n += tx.n;
        free(tx.v);
    }
    if (st != STEP_OK) {
        free(all.v);
        free(ros);
        return ret;
    }
    ropts_t top = ros[0];   /* the job's deadline: the first instance's timeout_ms */
    xf_job_t *j = xf_routes_tokenise(req, &all, &top, &ret);
    free(all.v);
    free(ros);
    /* pooled rows raw: each embed instance normalises its own (its "normalize") */
    return xf_routes_submit_job(req, j, NULL, (jobwant_t){ want_pooled, want_logits, 0 }, &top,
                                ret);
}

enum MHD_Result xf_routes_tei_vertex_reply(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    xf_job_t *j = req->job;
    size_t d = (size_t)s->info->d_model, nl = (size_t)s->info->n_labels, at = 0;
    json_t *inst = json_object_get(req->root, "instances");
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "{\"predictions\":[");
    for (size_t i = 0; i < json_array_size(inst); i++) {
        json_t *o = json_array_get(inst, i), *in = json_object_get(o, "inputs");
        int raw = json_is_true(json_object_get(o, "raw_scores"));
        if (i)
            xf_buf_puts(&b, ",");
        switch (vx_kind(req, o)) {
        case VX_RERANK: {
            json_t *texts = json_object_get(o, "texts");
            size_t m = json_array_size(texts);
            put_rerank(&b, j->logits + at, m, raw,
                       json_is_true(json_object_get(o, "return_text")) ? texts : NULL);
            at += m;
            break;
        }
        case VX_PREDICT: {
            int single = json_is_string(in) || xf_routes_is_str_pair(in);
            size_t m = single ? 1 : json_array_size(in);
            put_predict(&b, s->info, j->logits + at * nl, m, raw, !single);
            at += m;
            break;
        }
        default: {
            size_t m = json_is_string(in) || xf_routes_is_token_array(in) ? 1 : json_array_size(in);
            json_t *dm = json_object_get(o, "dimensions");
            put_embed(&b, j->pooled + at * d, m, d,
                      json_is_integer(dm) ? (size_t)json_integer_value(dm) : d,
                      !json_is_false(json_object_get(o, "normalize")));
            at += m;
            break;
        }
        }
    }
    xf_buf_puts(&b, "]}");
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* id2label / label2id of a classifier, as TEI's ClassifierModel. */
static json_t *tei_labels(const xf_model_info_t *mi)
{
    json_t *id2 = json_object(), *l2 = json_object();
    for (int k = 0; k < mi->n_labels; k++) {
        char name[128], key[16];
        label_name(mi, k, name, sizeof name);
        snprintf(key, sizeof key, "%d", k);
        json_object_set_new(id2, key, json_string(name));
        json_object_set_new(l2, name, json_integer(k));
    }
    return json_pack("{s:o,s:o}", "id2label", id2, "label2id", l2);
}

static const char *pooling_name(enum xf_pooling p)
{
    switch (p) {
    case XF_POOL_MEAN: return "mean";
    case XF_POOL_POOLER: return "pooler";
    case XF_POOL_NONE: return "none";
    default: return "cls";
    }
}

static const char *tei_dtype(const char *file_dtype)
{
    if (file_dtype && !strcmp(file_dtype, "F16"))
        return "float16";
    if (file_dtype && !strcmp(file_dtype, "BF16"))
        return "bfloat16";
    return "float32";
}

/* TEI's /info document (its Info struct's field names). Weights other than F32 are converted
 * to F32 at load, so model_dtype says what is stored. */
enum MHD_Result xf_routes_tei_info(xf_req_t *req)
{
    const xf_server_t *s = req->srv;
    const xf_model_info_t *mi = s->info;
    json_t *type;
    if (mi->n_labels == 1)
        type = json_pack("{s:o}", "reranker", tei_labels(mi));
    else if (mi->n_labels > 1)
        type = json_pack("{s:o}", "classifier", tei_labels(mi));
    else
        type = json_pack("{s:{s:s}}", "embedding", "pooling",
                         pooling_name(s->o.pooling != XF_POOL_DEFAULT ? s->o.pooling
                                                                     : mi->pooling));
    json_t *o = json_pack("{s:s,s:n,s:s,s:s,s:o,s:i,s:i,s:i,s:i,s:i,s:b,s:i,s:s,s:n,s:n}",
                          "model_id", s->model_name, "model_sha", "model_dtype",
                          tei_dtype(mi->file_dtype), "served_model_name", s->model_name,
                          "model_type", type,
                          "max_concurrent_requests", s->o.max_queue_jobs,
                          "max_input_length", mi->max_input,
                          "max_batch_tokens", s->o.max_batch_tokens,
                          "max_batch_requests", s->o.max_batch,
                          "max_client_batch_size", s->o.max_texts,
                          "auto_truncate", s->o.auto_truncate,
                          "tokenization_workers", s->o.http_threads,
                          "version", xf_version(), "sha", "docker_label");
    return xf_http_reply_json(req, 200, o);
}
