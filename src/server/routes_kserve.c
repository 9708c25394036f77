/* KServe v2 / Open Inference Protocol routes (DESIGN.md §6): server and model health and
 * metadata, and /v2/models/{m}/infer with one BYTES input (the texts), Triton's binary tensor
 * data extension and sequence parameters (handed to sessions_kserve.c). MHD threads only; the
 * table naming these handlers is routes.def, the helpers are in routes.c. */
#include "config.h"

#include "server/routes_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"
#include "server/sessions.h"

static enum MHD_Result reply_unknown_model(xf_req_t *req)
{
    const char *txl = xf_sessions_model_name(req->srv);
    req->err_param = "model";
    if (!strcmp(req->model, req->srv->model_name) || (txl && !strcmp(req->model, txl)))
        return xf_http_reply_error(req, XF_HE_MODEL_NOT_FOUND, 0, "model '%s' has no version "
                                   "'%s'; its only version is '1'", req->model, req->version);
    return xf_http_reply_error(req, XF_HE_MODEL_NOT_FOUND, 0, "unknown model '%s'; this server "
                               "serves '%s'%s%s%s", req->model, req->srv->model_name,
                               txl ? " and '" : "", txl ? txl : "", txl ? "'" : "");
}

static int model_matches(const xf_req_t *req)
{
    return strcmp(req->model, req->srv->model_name) == 0 &&
           (!req->version[0] || !strcmp(req->version, "1"));
}

/* {m} names the Transformer-XL session model (session.model) and {v} its only version. */
static int txl_matches(const xf_req_t *req)
{
    return xf_sessions_owns_model(req->srv, req->model) &&
           (!req->version[0] || !strcmp(req->version, "1"));
}

/* The binary part of a request under Triton's binary tensor data extension. */
typedef struct binpart {
    char *p;
    size_t n;
} binpart_t;

/* With an Inference-Header-Content-Length header, keep the body's JSON part in req->body and
 * move the bytes after it into bin (new). Without the header: nothing to do. */
static step_t split_binary(xf_req_t *req, binpart_t *bin, enum MHD_Result *ret)
{
    const char *h = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                "Inference-Header-Content-Length");
    if (!h)
        return STEP_OK;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(h, &end, 10);
    if (errno || end == h || *end || h[0] == '-' || v > req->body_len) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_REQUEST, 0, "Inference-Header-Content-Length "
                                   "'%.40s' is not a length within the body's %zu bytes", h,
                                   req->body_len);
        return STEP_REPLIED;
    }
    bin->n = req->body_len - (size_t)v;
    if (bin->n) {
        bin->p = malloc(bin->n);
        if (!bin->p) {
            *ret = xf_routes_reply_oom(req);
            return STEP_REPLIED;
        }
        memcpy(bin->p, req->body + v, bin->n);
    }
    req->body_len = (size_t)v;
    return STEP_OK;
}

/* A BYTES input sent as binary data (its "parameters": {"binary_data_size": n}): n bytes of
 * the binary part, each element a 4-byte little-endian length and that many bytes. They become
 * the input's "data" (strings, so they must be UTF-8), and the JSON path goes on as usual. */
static step_t binary_bytes_input(xf_req_t *req, json_t *t, const binpart_t *bin,
                                 enum MHD_Result *ret)
{
    json_t *size = json_object_get(json_object_get(t, "parameters"), "binary_data_size");
    if (!size)
        return STEP_OK;
    const char *why = NULL;
    if (!json_is_integer(size) || json_integer_value(size) < 0 ||
        (unsigned long long)json_integer_value(size) != bin->n)
        why = "must be the length of the binary part after the JSON header (one input)";
    else if (json_object_get(t, "data"))
        why = "and \"data\" cannot both be given";
    if (why) {
        *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].parameters."
                                   "binary_data_size %s", why);
        return STEP_REPLIED;
    }
    json_t *data = json_array();
    if (!data) {
        *ret = xf_routes_reply_oom(req);
        return STEP_REPLIED;
    }
    const unsigned char *p = (const unsigned char *)bin->p;
    size_t off = 0;
    while (off < bin->n) {
        uint32_t len = 0;
        if (bin->n - off < 4 ||
            (len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
                   (uint32_t)p[off + 3] << 24) > bin->n - off - 4) {
            json_decref(data);
            *ret = xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0]: binary BYTES data "
                                       "is cut short at byte %zu", off);
            return STEP_REPLIED;
        }
        json_t *str = json_stringn((const char *)p + off + 4, len);
        if (!str || json_array_append_new(data, str) < 0) {
            json_decref(data);
            *ret = xf_http_reply_error(req, XF_HE_INVALID_UTF8, 0, "inputs[0]: element %zu of "
                                       "the binary BYTES data is not UTF-8 text",
                                       json_array_size(data));
            return STEP_REPLIED;
        }
        off += 4 + (size_t)len;
    }
    if (json_object_set_new(t, "data", data) < 0) {
        *ret = xf_routes_reply_oom(req);
        return STEP_REPLIED;
    }
    return STEP_OK;
}

enum MHD_Result xf_routes_kserve_infer(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    enum MHD_Result ret = MHD_NO;
    if (xf_sessions_owns_model(s, req->model))   /* Transformer-XL: sequence parameters */
        return txl_matches(req) ? xf_sessions_handle_kserve(req) : reply_unknown_model(req);
    if (!model_matches(req))
        return reply_unknown_model(req);
    /* Triton's binary tensor data extension (tritonclient.http sends it by default): a JSON
     * header of Inference-Header-Content-Length bytes, then the raw tensors. */
    binpart_t bin = { 0 };
    if (split_binary(req, &bin, &ret) != STEP_OK)
        return ret;
    if (xf_routes_parse_body(req, &ret) != STEP_OK) {
        free(bin.p);
        return ret;
    }
    json_t *root = req->root;
    json_t *in0 = json_array_get(json_object_get(root, "inputs"), 0);
    step_t bst = binary_bytes_input(req, in0, &bin, &ret);
    free(bin.p);
    if (bst != STEP_OK)
        return ret;
    const char *id = NULL;
    if (xf_routes_get_str(req, root, "id", &id, &ret) != STEP_OK)
        return ret;
    ropts_t ro = { .truncate = 0 };
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "field 'parameters' must be an "
                                   "object");
    /* Triton's sequence parameters: a session of the encoder when its attention keeps state */
    if (params && json_object_get(params, "sequence_id")) {
        if (xf_sessions_encoder(s))
            return xf_sessions_handle_kserve(req);
        return xf_http_reply_error(req, XF_HE_UNSUPPORTED_MODEL, 0, "parameters.sequence_id: "
                                   "model %s's attention (%s) keeps no state between segments, "
                                   "so it has no sequences (serve it with model.attention txl "
                                   "or compressive)", s->model_name,
                                   xf_attn_name(xf_model_attention(s->model)));
    }
    if (params && xf_routes_get_ropts(req, params, &ro, &ret) != STEP_OK)
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
    if (xf_routes_get_str(req, t, "datatype", &dt, &ret) != STEP_OK)
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
    if (xf_routes_over_max_texts(req, n, "texts", &ret) != STEP_OK)
        return ret;
    texts_t tx = { 0 };
    if (xf_routes_texts_alloc(&tx, n) < 0)
        return xf_routes_reply_oom(req);
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
            json_t *nv = json_object_get(json_array_get(outs, i), "name");
            const char *name = json_string_value(nv);
            if (name && strlen(name) != json_string_length(nv))
                name = NULL;   /* a U+0000 inside: no output has that name */
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
    return xf_routes_submit_texts(req, params, &tx, &ro,
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
    json_t *p = json_pack("{s:s, s:i, s:i, s:i, s:i, s:I, s:i, s:s}",
                          "architecture", mi->arch_name ? mi->arch_name : "",
                          "n_layer", mi->n_layer, "d_model", mi->d_model,
                          "vocab_size", mi->vocab_size, "max_positions", mi->max_positions,
                          "n_params", (json_int_t)mi->n_params, "n_labels", mi->n_labels,
                          "dtype", mi->file_dtype ? mi->file_dtype : "F32");
    /* KServe v2 parameter values are scalars: the canonical selection as JSON text, its
     * variant name, and the variants a request may choose, comma-separated. */
    if (!a)
        a = xf_attn_dense();
    char ajson[1024];
    int an = xf_attn_to_json(a, ajson, sizeof ajson);
    json_object_set_new(p, "attention", json_string(an >= 0 && (size_t)an < sizeof ajson
                                                    ? ajson : xf_attn_name(a)));
    json_object_set_new(p, "attention_variant", json_string(xf_attn_name(a)));
    /* a stateful model attention: infer with Triton's sequence parameters continues a
     * session (sessions_kserve.c, doc/transfo-xl.md "Encoder sessions") */
    json_object_set_new(p, "sequence_batching", json_boolean(xf_sessions_encoder(s)));
    if (xf_sessions_encoder(s))
        json_object_set_new(p, "sequence_parameters",
                            json_string("sequence_id,sequence_start,sequence_end"));
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
    json_object_set_new(p, "quantisation", json_string(mi->quantize ? mi->quantize : "none"));
    json_object_set_new(p, "demo", json_boolean(mi->is_demo));
    if (mi->is_demo)
        json_object_set_new(p, "warning", json_string("random-weight demo model: embeddings "
                                                      "carry no meaning; start xformd with "
                                                      "--model DIR"));
    json_object_set_new(o, "parameters", p);
    return o;
}

enum MHD_Result xf_routes_kserve_infer_reply(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    xf_job_t *j = req->job;
    size_t d = (size_t)s->info->d_model, nl = (size_t)s->info->n_labels;
    json_t *idv = json_object_get(req->root, "id");
    const char *id = json_string_value(idv);
    xf_buf_t b = { 0 };
    xf_buf_puts(&b, "{\"model_name\":");
    xf_buf_json_str(&b, s->model_name, strlen(s->model_name));
    xf_buf_puts(&b, ",\"model_version\":\"1\"");
    if (id) {
        xf_buf_puts(&b, ",\"id\":");
        xf_buf_json_str(&b, id, json_string_length(idv));
    }
    xf_buf_puts(&b, ",\"outputs\":[");
    int first = 1;
    if (req->want_embed_out) {
        xf_buf_printf(&b, "{\"name\":\"embedding\",\"datatype\":\"FP32\",\"shape\":[%d,%zu],"
                      "\"data\":", (int)j->n_seq, d);
        xf_routes_put_floats(&b, j->pooled, (size_t)j->n_seq * d);
        xf_buf_puts(&b, "}");
        first = 0;
    }
    if (req->want_logits_out) {
        xf_buf_printf(&b, "%s{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[%d,%zu],"
                      "\"data\":", first ? "" : ",", (int)j->n_seq, nl);
        xf_routes_put_floats(&b, j->logits, (size_t)j->n_seq * nl);
        xf_buf_puts(&b, "}");
    }
    xf_buf_puts(&b, "]}");
    return xf_http_reply_buf(req, 200, "application/json", &b);
}

/* ---- routes without a job ------------------------------------------------------------- */

enum MHD_Result xf_routes_kserve_live(xf_req_t *req)
{
    return xf_http_reply_json(req, 200, json_pack("{s:b}", "live", 1));
}

enum MHD_Result xf_routes_kserve_ready(xf_req_t *req)
{
    int ready = atomic_load(&req->srv->ready);
    return xf_http_reply_json(req, ready ? 200 : 503, json_pack("{s:b}", "ready", ready));
}

enum MHD_Result xf_routes_kserve_server_meta(xf_req_t *req)
{
    /* binary_tensor_data: binary BYTES inputs are read (outputs are always JSON "data", which
     * Triton's clients read as well). */
    return xf_http_reply_json(req, 200, json_pack("{s:s,s:s,s:[s]}", "name", "xformd", "version",
                                                  xf_version(), "extensions",
                                                  "binary_tensor_data"));
}

enum MHD_Result xf_routes_kserve_model_meta(xf_req_t *req)
{
    if (txl_matches(req)) {
        json_t *m = xf_sessions_model_meta(req->srv);
        return m ? xf_http_reply_json(req, 200, m) : xf_routes_reply_oom(req);
    }
    if (!model_matches(req))
        return reply_unknown_model(req);
    return xf_http_reply_json(req, 200, model_meta(req->srv));
}

/* The session model is loaded before the server listens, so it is ready with the server; a
 * Redis outage degrades sessions (503 on their routes) but is not an outage of the model. */
enum MHD_Result xf_routes_kserve_model_ready(xf_req_t *req)
{
    xf_server_t *s = req->srv;
    int txl = txl_matches(req);
    if (!txl && !model_matches(req))
        return reply_unknown_model(req);
    int ready = atomic_load(&s->ready);
    return xf_http_reply_json(req, ready ? 200 : 503,
                              json_pack("{s:s,s:b}", "name", txl ? xf_sessions_model_name(s)
                                                                 : s->model_name,
                                        "ready", ready));
}
