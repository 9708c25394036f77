/* KServe v2 infer on a session (see sessions.h): POST /v2/models/{m}/infer for the
 * Transformer-XL model, or for the stateful encoder with parameters.sequence_id — Triton's
 * sequence_id / sequence_start / sequence_end parameters name the session and the request
 * becomes a segment that sessions.c queues, runs and stores as it does a REST one; the KServe
 * infer reply and the session model's metadata. MHD threads only (the model queries: any
 * thread); no loop, pool or store calls. */
#include "config.h"

#include "server/sessions_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <microhttpd.h>
#include <xformd/txl.h>

int xf_sessions_owns_model(const xf_server_t *s, const char *name)
{
    return s->sessions && s->sessions->model &&
           !strcmp(name, xf_txl_info(s->sessions->model)->name);
}

const char *xf_sessions_model_name(const xf_server_t *s)
{
    return s->sessions && s->sessions->model ? xf_txl_info(s->sessions->model)->name : NULL;
}

int xf_sessions_encoder(const xf_server_t *s)
{
    return s->sessions && s->sessions->enc;
}

/* The infer request below takes one input tensor of token ids or one text; KServe metadata
 * has one datatype per tensor, so the alternatives are listed in parameters. */
json_t *xf_sessions_model_meta(const xf_server_t *s)
{
    const xf_txl_info_t *ti;
    json_t *o, *p;

    if (!s->sessions || !s->sessions->model)
        return NULL;
    ti = xf_txl_info(s->sessions->model);
    o = json_pack("{s:s,s:[s],s:s,s:[{s:s,s:s,s:[i]}]}", "name", ti->name, "versions", "1",
                  "platform", "xformd", "inputs", "name", "input", "datatype", "INT64",
                  "shape", -1);
    p = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:b,s:b,s:s,s:s,s:s,s:s,s:s}",
                  "architecture", "transfo-xl", "n_layer", ti->n_layer, "d_model", ti->d_model,
                  "n_head", ti->n_head, "vocab_size", ti->vocab_size, "mem_len", ti->mem_len,
                  "clamp_len", ti->clamp_len, "n_params", (json_int_t)ti->n_params,
                  "same_length", ti->same_length, "sequence_batching", 1,
                  "sequence_parameters", "sequence_id,sequence_start,sequence_end",
                  "input_datatypes", "INT32,INT64,BYTES", "session_init",
                  s->o.session_init ? "zeros" : "empty", "session_dtype",
                  xf_sessions_dtype_names[s->sessions->dtype], "session_store",
                  s->sessions->store ? s->sessions->store->vt->name : "");
    if (!o || !p) {
        json_decref(o);
        json_decref(p);
        return NULL;
    }
    json_object_set_new(o, "outputs",
                        json_pack("[{s:s,s:s,s:[i]},{s:s,s:s,s:[i]},{s:s,s:s,s:[i,i]},"
                                  "{s:s,s:s,s:[i,i]}]",
                                  "name", "logprobs", "datatype", "FP32", "shape", -1,
                                  "name", "next_token", "datatype", "INT64", "shape", 1,
                                  "name", "pooled", "datatype", "FP32", "shape", 1, ti->d_model,
                                  "name", "hidden", "datatype", "FP32", "shape", -1,
                                  ti->d_model));
    json_object_set_new(o, "parameters", p);
    return o;
}

/* {"inputs":[{"name":..,"datatype":"INT32"|"INT64"|"BYTES","shape":[n]|[1,n],"data":[..]}],
 *  "outputs":[{"name":"logprobs"|"hidden"|"pooled"|"next_token"}],
 *  "parameters":{"sequence_id":N|"id","sequence_start":bool,"sequence_end":bool,
 *                "add_eos":bool}} */
static enum MHD_Result parse_kserve(xf_req_t *req, xf_sessions_t *S, sjob_t *sj)
{
    enum MHD_Result r;
    json_t *root, *par, *sid, *in, *t, *data, *outs, *v;
    const char *dt;
    int add_eos = 0;
    size_t i;

    if (!(root = xf_sessions_parse_object(req, &r)))
        return r;
    r = xf_sessions_pick_model(req, req->model, sj);
    if (req->state == XF_REQ_REPLIED)
        return r;
    par = json_object_get(root, "parameters");
    sid = par ? json_object_get(par, "sequence_id") : NULL;
    if (!json_is_object(par) || !sid)
        return xf_http_reply_error(req, XF_HE_MISSING_FIELD, 0, "parameters.sequence_id: "
                                   "this Transformer-XL model keeps a memory per sequence");
    if (sj->enc && json_object_get(par, "add_eos"))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "parameters.add_eos: only for the "
                                   "Transformer-XL model");
    /* Triton's correlation ids: 0 (and "") mean "not in a sequence", refused where the model
     * keeps one. */
    if (json_is_integer(sid) && json_integer_value(sid) > 0) {
        snprintf(req->session, sizeof req->session, "%lld",
                 (long long)json_integer_value(sid));
    } else if (json_is_string(sid) &&
               xf_sessions_valid_id(json_string_value(sid), json_string_length(sid))) {
        snprintf(req->session, sizeof req->session, "%s", json_string_value(sid));
    } else {
        return xf_http_reply_error(req, XF_HE_BAD_SESSION_ID, 0, "parameters.sequence_id: want "
                                   "an integer > 0 or 1-128 bytes of [A-Za-z0-9._:-] (0 and \"\" "
                                   "mean no sequence in Triton)");
    }
    v = json_object_get(par, "sequence_start");
    if (v && !json_is_boolean(v))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "parameters.sequence_start: want "
                                   "true or false");
    sj->seq_start = v && json_is_true(v);
    v = json_object_get(par, "sequence_end");
    if (v && !json_is_boolean(v))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "parameters.sequence_end: want "
                                   "true or false");
    sj->seq_end = v && json_is_true(v);
    v = json_object_get(par, "add_eos");
    add_eos = v && json_is_true(v);
    r = xf_sessions_parse_timeout(req, par, sj);
    if (req->state == XF_REQ_REPLIED)
        return r;
    in = json_object_get(root, "inputs");
    if (!json_is_array(in) || json_array_size(in) != 1 || !json_is_object(json_array_get(in, 0)))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs: want one tensor (INT32/INT64 "
                                   "token ids or one BYTES text)");
    t = json_array_get(in, 0);
    dt = json_string_value(json_object_get(t, "datatype"));
    data = json_object_get(t, "data");
    while (json_is_array(data) && json_array_size(data) == 1 &&
           json_is_array(json_array_get(data, 0)))
        data = json_array_get(data, 0);   /* shape [1, n] written nested */
    if (!dt || !json_is_array(data))
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0]: want datatype and a "
                                   "data list");
    if (!strcmp(dt, "BYTES")) {
        xf_diag_t diag = { 0 };
        json_t *s0 = json_array_get(data, 0);
        int rc;
        if (json_array_size(data) != 1 || !json_is_string(s0))
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].data: want one "
                                       "string");
        if (sj->enc) {
            r = xf_sessions_enc_text(req, json_string_value(s0), json_string_length(s0),
                                     "inputs[0].data[0]", sj);
            if (req->state == XF_REQ_REPLIED)
                return r;
        } else if ((rc = xf_txl_encode(S->model, json_string_value(s0), json_string_length(s0),
                                       add_eos, &sj->ids, &sj->n, &diag)) < 0) {
            return xf_http_reply_error(req, rc == XF_EFORMAT ? XF_HE_INVALID_UTF8
                                                             : XF_HE_BAD_FIELD, 0,
                                       "inputs[0].data[0]: %s", diag.msg);
        }
    } else if (!strcmp(dt, "INT32") || !strcmp(dt, "INT64")) {
        r = xf_sessions_parse_ids(req, sj->enc ? req->srv->info->vocab_size
                                               : xf_txl_info(S->model)->vocab_size, data,
                                  "inputs[0].data", sj);
        if (req->state == XF_REQ_REPLIED)
            return r;
    } else {
        return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "inputs[0].datatype: want INT32, "
                                   "INT64 or BYTES");
    }
    r = xf_sessions_check_n(req, sj, "inputs[0]");
    if (req->state == XF_REQ_REPLIED)
        return r;
    sj->return_logprobs = !sj->enc;
    outs = json_object_get(root, "outputs");
    if (outs) {
        if (!json_is_array(outs))
            return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "outputs: want a list");
        sj->return_logprobs = !sj->enc && json_array_size(outs) == 0;
        json_array_foreach(outs, i, v) {
            const char *w = json_string_value(json_object_get(v, "name"));
            if (sj->enc && w && !strcmp(w, "next_token"))
                sj->return_logprobs = 1;   /* refused below, as logprobs */
            else if (!xf_sessions_want_output(sj, w) &&
                     (!w || strcmp(w, "next_token")))   /* always sent */
                return xf_http_reply_error(req, XF_HE_BAD_FIELD, 0, "outputs[%zu]: want logprobs, "
                                           "next_token, hidden or pooled", i);
        }
        r = xf_sessions_enc_no_logprobs(req, sj, "outputs");
        if (req->state == XF_REQ_REPLIED)
            return r;
    }
    if (sj->enc && !sj->want)
        sj->want = XF_TXL_OUT_POOLED;   /* the encoder's default output */
    return MHD_YES;
}

enum MHD_Result xf_sessions_handle_kserve(xf_req_t *req)
{
    xf_sessions_t *S = req->srv->sessions;
    xf_job_t *j;
    sjob_t *sj;
    enum MHD_Result r;
    sjob_t tmp;

    /* the id comes from the body: parse into a scratch job first */
    memset(&tmp, 0, sizeof tmp);
    r = parse_kserve(req, S, &tmp);
    if (req->state == XF_REQ_REPLIED) {
        free(tmp.ids);
        return r;
    }
    if (!(j = xf_sessions_new_sjob(req))) {
        free(tmp.ids);
        return MHD_YES;
    }
    sj = j->sjob;
    sj->op = SOP_SEGMENT;
    sj->kserve = 1;
    sj->enc = tmp.enc;
    sj->ids = tmp.ids;
    sj->n = tmp.n;
    sj->want = tmp.want;
    sj->return_logprobs = tmp.return_logprobs;
    sj->seq_start = tmp.seq_start;
    sj->seq_end = tmp.seq_end;
    sj->timeout_ms = tmp.timeout_ms;
    return xf_sessions_submit_sjob(req, j);
}

json_t *xf_sessions_kserve_tensor(const char *name, const char *dt, json_t *shape, json_t *data)
{
    return json_pack("{s:s,s:s,s:o,s:o}", "name", name, "datatype", dt, "shape", shape, "data",
                     data);
}

enum MHD_Result xf_sessions_respond_kserve(xf_req_t *req, sjob_t *sj, const xf_txl_info_t *ti)
{
    json_t *o = json_object(), *outs = json_array(), *lp = json_array(), *p;

    if (sj->return_logprobs) {
        /* FP32 data cannot hold NaN: an unscored first token is 0 and first_token_scored
         * says so */
        for (int32_t t = 0; t < sj->res.n; t++)
            json_array_append_new(lp, json_real(isnan(sj->res.logprobs[t])
                                                    ? 0.0 : sj->res.logprobs[t]));
        json_array_append_new(outs, xf_sessions_kserve_tensor("logprobs", "FP32",
                                                              json_pack("[i]", sj->res.n), lp));
    } else {
        json_decref(lp);
    }
    json_array_append_new(outs, xf_sessions_kserve_tensor("next_token", "INT64",
                                                          json_pack("[i]", 1),
                                                          json_pack("[i]", sj->res.next_id)));
    if (sj->res.pooled)
        json_array_append_new(outs, xf_sessions_kserve_tensor(
                                        "pooled", "FP32", json_pack("[i,i]", 1, ti->d_model),
                                        xf_sessions_float_array(sj->res.pooled,
                                                                (size_t)ti->d_model)));
    if (sj->res.hidden)
        json_array_append_new(outs, xf_sessions_kserve_tensor(
                                        "hidden", "FP32",
                                        json_pack("[i,i]", sj->res.n, ti->d_model),
                                        xf_sessions_float_array(sj->res.hidden,
                                                                (size_t)sj->res.n *
                                                                    (size_t)ti->d_model)));
    p = json_pack("{s:s,s:I,s:I,s:i,s:i,s:f,s:b,s:b,s:b}", "sequence_id", req->session,
                  "segments", (json_int_t)sj->st.segments, "tokens_seen",
                  (json_int_t)sj->st.tokens, "memory_rows", sj->st.rows, "n_scored",
                  sj->res.n_scored, "sum", sj->res.sum, "first_token_scored",
                  !isnan(sj->res.logprobs[0]), "reset", sj->reset, "sequence_end",
                  sj->seq_end);
    json_object_set_new(o, "model_name", json_string(ti->name));
    json_object_set_new(o, "model_version", json_string("1"));
    {
        const char *id = json_string_value(json_object_get(req->root, "id"));
        if (id)
            json_object_set_new(o, "id", json_string(id));
    }
    json_object_set_new(o, "outputs", outs);
    json_object_set_new(o, "parameters", p);
    return xf_http_reply_json(req, 200, o);
}
