/* Route table and client-facing shapes: the in-process server runs the daemon's defaults
 * (conf.def), every routes.def row answers with its method/auth/API, unknown paths and methods
 * answer in the shape of the API they resemble; the routes real clients call (OpenAI
 * /v1/models, TEI /, /health, /info, /predict batches, truncation_direction), model and version
 * checks, OpenAI "param", the attention fallback header. Real daemon on 127.0.0.1 port 0. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xf_test.h"

#include "server/batcher.h"
#include "server/conf.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/routes.h"
#include "server_fixture.h"

enum { SRV_PLAIN = FX_PLAIN, SRV_CLS3 = FX_CLS3, SRV_CLS1 = FX_CLS1, SRV_N = FX_DEMO_N };

static fx_srv_t S[SRV_N];

static int D_MODEL;

/* Three servers on the daemon's defaults: plain (embeddings), cls3 (3 labels), cls1 (a
 * cross-encoder). */
static void need_servers(void)
{
    if (S[0].s)
        return;
    fx_demo_start(S, "rt", NULL);
    D_MODEL = xf_model_info(xf_server_model(S[0].s))->d_model;
}

/* One request; returns the response (caller hc_free's) after asserting the status. */
static hc_resp_t req(int port, const char *method, const char *path, const char *extra,
                     const char *body, int want)
{
    hc_resp_t r;
    assert_int_equal(hc_do(port, method, path, extra, body, &r), 0);
    if (r.status != want)
        print_message("# %s %s -> %d (want %d): %s\n", method, path, r.status, want, r.body);
    assert_int_equal(r.status, want);
    return r;
}

/* ---- issue 9: one table per fact ---------------------------------------------------- */

/* The in-process fixture runs what the daemon runs: xf_server_opts_init is conf.def's
 * defaults through the same mapping as xf_server_opts_from_conf, and so are the batcher's. */
static void test_defaults_from_table(void **state)
{
    (void)state;
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    xf_server_opts_t a, b;
    xf_server_opts_init(&a);
    xf_server_opts_from_conf(&c, &b);
    assert_int_equal(a.policy, c.batcher_policy);
    assert_int_equal(a.policy, XF_BATCH_TOKENS);   /* conf.def ships tokens */
    assert_int_equal(a.policy, b.policy);
    assert_int_equal(a.port, b.port);
    assert_int_equal(a.max_batch, b.max_batch);
    assert_int_equal(a.max_batch_tokens, b.max_batch_tokens);
    assert_int_equal(a.max_queue_delay_ms, b.max_queue_delay_ms);
    assert_int_equal(a.max_queued_tokens, b.max_queued_tokens);
    assert_int_equal(a.max_queue_jobs, b.max_queue_jobs);
    assert_int_equal(a.max_texts, b.max_texts);
    assert_int_equal(a.max_tokens, b.max_tokens);
    assert_int_equal(a.timeout_ms, b.timeout_ms);
    assert_int_equal(a.drain_timeout_ms, b.drain_timeout_ms);
    assert_int_equal(a.max_body_bytes, b.max_body_bytes);
    assert_int_equal(a.conn_timeout_s, b.conn_timeout_s);
    assert_int_equal(a.http_threads, b.http_threads);
    assert_string_equal(a.listen_addr, b.listen_addr);
    /* Only the process-level switches differ. */
    assert_int_equal(a.handle_signals, 0);
    assert_int_equal(b.handle_signals, 1);
    xf_batcher_opts_t bo;
    xf_batcher_opts_init(&bo);
    assert_int_equal(bo.policy, c.batcher_policy);
    assert_int_equal(bo.max_batch, c.batcher_max_batch);
    assert_int_equal(bo.max_batch_tokens, c.batcher_max_batch_tokens);
    assert_int_equal(bo.max_queue_delay_ns, (uint64_t)c.batcher_max_queue_delay_ms * 1000000u);
    assert_int_equal(bo.max_queued_tokens, c.batcher_max_queued_tokens);
    assert_int_equal(bo.max_queue_jobs, c.batcher_max_queue_jobs);
    xf_conf_deinit(&c);
}

/* Labels are the patterns without their optional group; "other" for none. */
static void test_route_labels(void **state)
{
    (void)state;
    assert_string_equal(xf_routes_label(XF_R_NONE), "other");
    assert_string_equal(xf_routes_label(XF_R_COUNT), "other");
    assert_string_equal(xf_routes_label(XF_R_INFER), "/v2/models/{m}/infer");
    assert_string_equal(xf_routes_label(XF_R_MODEL_META), "/v2/models/{m}");
    assert_string_equal(xf_routes_label(XF_R_EMBEDDINGS), "/v1/embeddings");
    assert_true(xf_routes_has_body(XF_R_EMBED));
    assert_false(xf_routes_has_body(XF_R_LIVE));
    assert_false(xf_routes_needs_auth(XF_R_READY));
    assert_true(xf_routes_needs_auth(XF_R_STATS));
    assert_true(xf_routes_while_draining(XF_R_STATS));
    assert_false(xf_routes_while_draining(XF_R_INFER));
    assert_string_equal(xf_routes_allow(XF_R_EMBED), "POST");
    assert_string_equal(xf_routes_allow(XF_R_LIVE), "GET");
}

/* Matching: the optional KServe version group, 405 with Allow, and unknown
 * paths answered in the API they resemble. */
static void test_route_match(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    hc_resp_t r = req(p, "GET", "/v2/models/xformd-demo/versions/1", NULL, NULL, 200);
    assert_non_null(strstr(r.body, "\"name\":\"xformd-demo\""));
    hc_free(&r);
    r = req(p, "GET", "/v2/models/xformd-demo/versions/1/ready", NULL, NULL, 200);
    hc_free(&r);
    r = req(p, "DELETE", "/embed", NULL, NULL, 405);
    char allow[64];
    assert_non_null(hc_header(&r, "Allow", allow, sizeof allow));
    assert_string_equal(allow, "POST");
    assert_non_null(strstr(r.body, "\"error_type\""));   /* TEI shape */
    hc_free(&r);
    /* Unknown: /v1/... is OpenAI's namespace, /v2/... KServe's, the rest ours. */
    r = req(p, "GET", "/v1/nope", NULL, NULL, 404);
    assert_non_null(strstr(r.body, "\"type\":\"invalid_request_error\""));
    hc_free(&r);
    r = req(p, "GET", "/v2/nope", NULL, NULL, 404);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_true(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    hc_free(&r);
    r = req(p, "GET", "/pancake", NULL, NULL, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));
    hc_free(&r);
    /* A model name longer than the buffer is no route, not a truncated match. */
    char longp[400] = "/v2/models/";
    memset(longp + 11, 'm', 300);
    longp[311] = '\0';
    r = req(p, "GET", longp, NULL, NULL, 404);
    hc_free(&r);
}

/* ---- issue 8: the routes real clients use ------------------------------------------- */

static json_t *body_json(const hc_resp_t *r)
{
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    assert_non_null(j);
    return j;
}

static json_t *jget(int port, const char *method, const char *path, const char *body, int want)
{
    hc_resp_t r = req(port, method, path, NULL, body, want);
    json_t *j = body_json(&r);
    hc_free(&r);
    return j;
}

/* OpenAI error object; param NULL means "param": null. */
static void check_openai_error(json_t *j, const char *code, const char *param)
{
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    json_t *pj = json_object_get(e, "param");
    assert_non_null(pj);   /* always present */
    if (param)
        assert_string_equal(json_string_value(pj), param);
    else
        assert_true(json_is_null(pj));
}

static void test_openai_models(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    json_t *j = jget(p, "GET", "/v1/models", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 1);
    assert_string_equal(json_string_value(json_object_get(m, "id")), "xformd-demo");
    assert_string_equal(json_string_value(json_object_get(m, "object")), "model");
    assert_true(json_integer_value(json_object_get(m, "created")) > 1600000000);
    assert_true(json_is_string(json_object_get(m, "owned_by")));
    json_decref(j);
    j = jget(p, "GET", "/v1/models/xformd-demo", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "xformd-demo");
    json_decref(j);
    j = jget(p, "GET", "/v1/models/nope", NULL, 404);
    check_openai_error(j, "model_not_found", "model");
    json_decref(j);
    /* An unknown model in an embeddings request is 404, as OpenAI answers. */
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":\"a\",\"model\":\"nope\"}", 404);
    check_openai_error(j, "model_not_found", "model");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                        "invalid_request_error");
    json_decref(j);
    /* "param" names the offending field, null when there is none. */
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":\"a\",\"dimensions\":0}", 400);
    check_openai_error(j, "invalid_dimensions", "dimensions");
    json_decref(j);
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":\"a\",\"encoding_format\":\"hex\"}", 400);
    check_openai_error(j, "invalid_field", "encoding_format");
    json_decref(j);
    j = jget(p, "POST", "/v1/embeddings", "{\"model\":\"xformd-demo\"}", 400);
    check_openai_error(j, "missing_field", "input");
    json_decref(j);
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":[\"a\",3]}", 400);
    check_openai_error(j, "invalid_field", "input");
    json_decref(j);
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":\"a\",\"truncate\":3}", 400);
    check_openai_error(j, "invalid_field", "truncate");
    json_decref(j);
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":", 400);
    check_openai_error(j, "invalid_json", NULL);
    json_decref(j);
    j = jget(p, "POST", "/v1/embeddings", "{\"input\":\"a\",\"attention\":{\"variant\":\"nope\"}}",
             400);
    check_openai_error(j, "invalid_attention", "attention");
    json_decref(j);
    {
        /* 600 words > 512 positions without truncate: input_too_long, about "input" */
        char body[8192];
        size_t k = (size_t)snprintf(body, sizeof body, "{\"input\":\"");
        for (int w = 0; w < 600; w++)
            k += (size_t)snprintf(body + k, sizeof body - k, "hello ");
        snprintf(body + k, sizeof body - k, "\"}");
        j = jget(p, "POST", "/v1/embeddings", body, 400);   /* as OpenAI answers */
        check_openai_error(j, "input_too_long", "input");
        json_decref(j);
    }
}

static void test_kserve_versions(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    const char *body = "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[1],"
                       "\"data\":[\"hello\"]}]}";
    json_t *j = jget(p, "POST", "/v2/models/xformd-demo/versions/1/infer", body, 200);
    assert_string_equal(json_string_value(json_object_get(j, "model_version")), "1");
    json_decref(j);
    j = jget(p, "POST", "/v2/models/xformd-demo/versions/7/infer", body, 404);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "version"));
    json_decref(j);
    j = jget(p, "GET", "/v2/models/xformd-demo/versions/7", NULL, 404);
    json_decref(j);
    j = jget(p, "GET", "/v2/models/xformd-demo/versions/7/ready", NULL, 404);
    json_decref(j);
}

static void test_tei_root_health_info(void **state)
{
    (void)state;
    need_servers();
    /* POST / embeds on an embedding model: the same answer as /embed. */
    json_t *a = jget(S[SRV_PLAIN].port, "POST", "/", "{\"inputs\":\"hello world\"}", 200);
    json_t *b = jget(S[SRV_PLAIN].port, "POST", "/embed", "{\"inputs\":\"hello world\"}", 200);
    assert_int_equal(json_array_size(a), 1);
    assert_int_equal(json_array_size(json_array_get(a, 0)), (size_t)D_MODEL);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    /* ... predicts on a classifier and reranks on a cross-encoder, like TEI. */
    a = jget(S[SRV_CLS3].port, "POST", "/", "{\"inputs\":\"I like it\"}", 200);
    assert_int_equal(json_array_size(a), 3);
    assert_true(json_is_string(json_object_get(json_array_get(a, 0), "label")));
    json_decref(a);
    a = jget(S[SRV_CLS1].port, "POST", "/", "{\"query\":\"q\",\"texts\":[\"a\",\"b c\"]}", 200);
    assert_int_equal(json_array_size(a), 2);
    assert_true(json_is_number(json_object_get(json_array_get(a, 0), "score")));
    json_decref(a);
    /* Health: GET /health and GET / (TEI's inference-API probe). */
    a = jget(S[SRV_PLAIN].port, "GET", "/health", NULL, 200);
    json_decref(a);
    a = jget(S[SRV_PLAIN].port, "GET", "/", NULL, 200);
    json_decref(a);
    a = jget(S[SRV_PLAIN].port, "GET", "/ping", NULL, 200);   /* TEI's third health route */
    json_decref(a);
    /* /info in TEI's field names. */
    json_t *i = jget(S[SRV_PLAIN].port, "GET", "/info", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(i, "model_id")), "xformd-demo");
    assert_string_equal(json_string_value(json_object_get(i, "served_model_name")),
                        "xformd-demo");   /* a field of TEI's Info */
    assert_string_equal(json_string_value(json_object_get(i, "model_dtype")), "float32");
    json_t *emb = json_object_get(json_object_get(i, "model_type"), "embedding");
    assert_true(json_is_string(json_object_get(emb, "pooling")));
    assert_int_equal(json_integer_value(json_object_get(i, "max_input_length")),
                     xf_model_info(xf_server_model(S[SRV_PLAIN].s))->max_positions);
    assert_int_equal(json_integer_value(json_object_get(i, "max_client_batch_size")), 2048);
    assert_true(json_integer_value(json_object_get(i, "max_batch_tokens")) > 0);
    assert_true(json_integer_value(json_object_get(i, "max_concurrent_requests")) > 0);
    assert_true(json_is_string(json_object_get(i, "version")));
    assert_true(json_is_boolean(json_object_get(i, "auto_truncate")));
    json_decref(i);
    i = jget(S[SRV_CLS3].port, "GET", "/info", NULL, 200);
    json_t *cl = json_object_get(json_object_get(i, "model_type"), "classifier");
    assert_int_equal(json_object_size(json_object_get(cl, "id2label")), 3);
    assert_int_equal(json_object_size(json_object_get(cl, "label2id")), 3);
    json_decref(i);
    i = jget(S[SRV_CLS1].port, "GET", "/info", NULL, 200);
    assert_non_null(json_object_get(json_object_get(i, "model_type"), "reranker"));
    json_decref(i);
}

/* /predict's batch of single texts [["a"], ["b"]] answers a list of lists, each equal to the
 * answer for that text alone. */
static void test_predict_batch(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_CLS3].port;
    json_t *bat = jget(p, "POST", "/predict", "{\"inputs\":[[\"I like it\"],[\"not at all\"]]}",
                       200);
    assert_int_equal(json_array_size(bat), 2);
    static const char *const one[2] = { "{\"inputs\":\"I like it\"}",
                                        "{\"inputs\":\"not at all\"}" };
    for (size_t k = 0; k < 2; k++) {
        json_t *single = jget(p, "POST", "/predict", one[k], 200);
        json_t *row = json_array_get(bat, k);
        assert_int_equal(json_array_size(row), 3);
        for (size_t q = 0; q < 3; q++) {
            json_t *x = json_array_get(row, q), *y = json_array_get(single, q);
            assert_string_equal(json_string_value(json_object_get(x, "label")),
                                json_string_value(json_object_get(y, "label")));
            /* alone vs batched: same model, packed rows; 1e-5 for a GEMM blocking that
             * differs with the row count (float reassociation), as test_http */
            assert_true(fabs(json_number_value(json_object_get(x, "score")) -
                             json_number_value(json_object_get(y, "score"))) < 1e-5);
        }
        json_decref(single);
    }
    json_decref(bat);
    /* a list inside the batch holding two texts is a pair; three is an error */
    json_t *j = jget(p, "POST", "/predict", "{\"inputs\":[[\"a\",\"b\"],[\"c\"]]}", 200);
    assert_int_equal(json_array_size(j), 2);
    json_decref(j);
    j = jget(p, "POST", "/predict", "{\"inputs\":[[\"a\",\"b\",\"c\"]]}", 422);   /* TEI */
    json_decref(j);
}

/* Largest difference between two embeddings (JSON arrays). */
static double maxdiff(json_t *a, json_t *b)
{
    double md = 0;
    assert_int_equal(json_array_size(a), json_array_size(b));
    for (size_t i = 0; i < json_array_size(a); i++)
        md = fmax(md, fabs(json_number_value(json_array_get(a, i)) -
                           json_number_value(json_array_get(b, i))));
    return md;
}

#define PREFIX5 "zebra quantum violet 7 ?"
#define PREFIX PREFIX5 " " PREFIX5 " " PREFIX5 " " PREFIX5 " " PREFIX5 " " PREFIX5 " " PREFIX5

/* truncation_direction "Left" keeps the tail: the embedding of prefix + tail cut from the
 * left equals that of the tail alone when the tail exactly fills the model; "Right" does not. */
static void test_truncation_direction(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    const xf_model_t *m = xf_server_model(S[SRV_PLAIN].s);
    const xf_tokenizer_t *tok = xf_model_tokenizer(m);
    int32_t budget = xf_model_info(m)->max_positions - 2;   /* [CLS] ... [SEP] */
    static const char *const words[] = { "river", "stone", "a", "light", "b", "x" };
    size_t cap = 64 * 1024;
    char *tail = calloc(1, cap);
    assert_non_null(tail);
    xf_tokens_t t = { 0 };
    xf_tok_opts_t raw = { .no_special = 1 };
    xf_diag_t d = { 0, "" };
    int32_t n = 0;
    for (size_t w = 0; n < budget; w++) {
        /* add words while they fit; single letters top it up exactly */
        for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
            size_t len = strlen(tail);
            snprintf(tail + len, cap - len, "%s%s", len ? " " : "", words[(w + k) % 6]);
            assert_int_equal(xf_tokenizer_encode(tok, tail, strlen(tail), NULL, 0, &raw, &t,
                                                 &d), 0);
            if (t.n <= budget) {
                n = t.n;
                break;
            }
            tail[len] = '\0';
        }
        assert_true(strlen(tail) + 64 < cap);
    }
    assert_int_equal(n, budget);
    char *body = malloc(cap + 256);
    assert_non_null(body);
    snprintf(body, cap + 256, "{\"inputs\":\"%s\"}", tail);
    json_t *ref = jget(p, "POST", "/embed", body, 200);
    snprintf(body, cap + 256, "{\"inputs\":\"%s %s\",\"truncate\":true,"
             "\"truncation_direction\":\"Left\"}", PREFIX, tail);
    json_t *left = jget(p, "POST", "/embed", body, 200);
    snprintf(body, cap + 256, "{\"inputs\":\"%s %s\",\"truncate\":true,"
             "\"truncation_direction\":\"Right\"}", PREFIX, tail);
    json_t *right = jget(p, "POST", "/embed", body, 200);

    /* a right cut keeps PREFIX and drops as many of the tail's last tokens: different tokens,
     * a difference far above rounding (2.9e-4 measured: the tiny random demo model's CLS
     * embedding of 510 tokens moves little, so the bound is 1e-5, not 1e-3) */
    double dl = maxdiff(json_array_get(ref, 0), json_array_get(left, 0));
    double dr = maxdiff(json_array_get(ref, 0), json_array_get(right, 0));
    print_message("# truncation: left %.3g right %.3g from the tail alone\n", dl, dr);
    /* same tokens, same single-sequence batch shape, sent one at a time: equal up to a
     * GEMM blocking change, 1e-6 */
    assert_true(dl < 1e-6);
    assert_true(dr > 1e-5);
    json_decref(ref);
    json_decref(left);
    json_decref(right);
    json_t *j = jget(p, "POST", "/embed", "{\"inputs\":\"a\",\"truncation_direction\":\"up\"}",
                     422);   /* TEI: Validation */
    assert_string_equal(json_string_value(json_object_get(j, "error_type")), "Validation");
    json_decref(j);
    xf_tokens_deinit(&t);
    free(body);
    free(tail);
}

/* request.max_texts defaults to 2048 (OpenAI's limit; LangChain sends 512): 600 texts pass. */
static void test_many_texts(void **state)
{
    (void)state;
    need_servers();
    size_t n = 600, cap = n * 8 + 64;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t k = (size_t)snprintf(body, cap, "{\"input\":[");
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(body + k, cap - k, "%s\"t%zu\"", i ? "," : "", i % 10);
    snprintf(body + k, cap - k, "]}");
    json_t *j = jget(S[SRV_PLAIN].port, "POST", "/v1/embeddings", body, 200);
    assert_int_equal(json_array_size(json_object_get(j, "data")), n);
    json_decref(j);
    free(body);
}

/* A per-request variant that runs dense for the input says so in a header. */
static void test_attention_fallback_header(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    char h[64];
    /* a window wider than the text: every head is dense */
    hc_resp_t r = req(p, "POST", "/embed", NULL, "{\"inputs\":\"hello world\",\"attention\":"
                      "{\"variant\":\"window\",\"window\":100000}}", 200);
    assert_non_null(hc_header(&r, "X-Xformd-Attention-Fallback", h, sizeof h));
    assert_string_equal(h, "dense");
    hc_free(&r);
    /* a window of 2 on a dozen tokens runs the window kernel: no header */
    r = req(p, "POST", "/embed", NULL, "{\"inputs\":\"one two three four five six seven eight "
            "nine ten\",\"attention\":{\"variant\":\"window\",\"window\":2}}", 200);
    assert_null(hc_header(&r, "X-Xformd-Attention-Fallback", h, sizeof h));
    hc_free(&r);
    /* no per-request variant: no header */
    r = req(p, "POST", "/embed", NULL, "{\"inputs\":\"hello world\"}", 200);
    assert_null(hc_header(&r, "X-Xformd-Attention-Fallback", h, sizeof h));
    hc_free(&r);
}

/* ---- issue 8 item 4: start-up and the access log ------------------------------------- */

/* The port is bound before anything else: a port in use fails at once with EADDRINUSE even
 * when the model directory does not exist (the load would have failed with ENOENT). */
static void test_bind_first(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    xf_server_opts_t o;
    fx_opts(&o, "/nonexistent/xformd-model");
    o.port = ntohs(a.sin_port);
    xf_server_t *s = NULL;
    xf_diag_t diag = { 0, "" };
    int rc = xf_server_start(&o, &s, &diag);
    print_message("# port %d in use: %s\n", o.port, diag.msg);
    assert_int_equal(rc, -EADDRINUSE);
    assert_null(s);
    close(fd);
    /* A bad model.attention names the option, before any model is read. */
    fx_opts(&o, "/nonexistent/xformd-model");
    o.attention = "{\"variant\":\"window\",\"blok\":3}";
    rc = xf_server_start(&o, &s, &diag);
    assert_true(rc < 0);
    assert_non_null(strstr(diag.msg, "model.attention"));
    assert_non_null(strstr(diag.msg, "blok"));
}

typedef struct starter {
    xf_server_opts_t o;
    xf_server_t *s;
    int rc;
    atomic_int done;
} starter_t;

static void *start_thread(void *arg)
{
    starter_t *st = arg;
    xf_diag_t diag = { 0, "" };
    st->rc = xf_server_start(&st->o, &st->s, &diag);
    atomic_store(&st->done, 1);
    return NULL;
}

/* While the model loads and warms up the port already answers: readiness 503, inference 503
 * not_ready, never a 200 from an unready server. */
static void test_ready_after_warmup(void **state)
{
    (void)state;
    need_servers();   /* metrics and log set up */
    char dir[1024];
    assert_int_equal(fx_write_model("rt_start", 0, dir, sizeof dir), 0);
    /* a free port: bind port 0, read it, release it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    starter_t st;
    memset(&st, 0, sizeof st);
    fx_opts(&st.o, dir);
    st.o.port = ntohs(a.sin_port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, start_thread, &st), 0);
    int ready503 = 0, ready200 = 0, embed503 = 0, other = 0;
    for (int i = 0; i < 20000 && !atomic_load(&st.done); i++) {
        hc_resp_t r;
        if (hc_do(st.o.port, "GET", "/v2/health/ready", NULL, NULL, &r) == 0) {
            ready503 += r.status == 503;
            ready200 += r.status == 200;
            other += r.status != 503 && r.status != 200;
            hc_free(&r);
        }
        if (hc_do(st.o.port, "POST", "/embed", NULL, "{\"inputs\":\"a\"}", &r) == 0) {
            if (r.status == 503)
                embed503 += strstr(r.body, "starting") != NULL;
            else
                other += r.status != 200;
            hc_free(&r);
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(st.rc, 0);
    print_message("# during start-up: ready 503 x%d, 200 x%d; /embed 503 not_ready x%d\n",
                  ready503, ready200, embed503);
    /* The tiny model's load and 12 warm-up batches take far longer than one loopback
     * request, so the poll sees the unready state. */
    assert_true(ready503 > 0);
    assert_int_equal(other, 0);
    json_t *j = jget(st.o.port, "GET", "/v2/health/ready", NULL, 200);
    json_decref(j);
    j = jget(st.o.port, "POST", "/embed", "{\"inputs\":\"a\"}", 200);
    json_decref(j);
    xf_server_stop(st.s);
    xf_test_rmtree(dir);
}

/* log.access: one line per request with route, status, texts, tokens, queue and compute ms. */
static void test_access_log(void **state)
{
    (void)state;
    need_servers();
    char dir[1024], logp[1200];
    assert_int_equal(fx_write_model("rt_access", 0, dir, sizeof dir), 0);
    snprintf(logp, sizeof logp, "%s/access.log", dir);
    xf_server_opts_t o;
    fx_opts(&o, dir);
    o.log_access = 1;
    o.warmup = 0;
    xf_server_t *s = fx_start_opts(&o);
    int p = xf_server_port(s);
    assert_int_equal(xf_log_open(XF_LOG_INFO, logp), 0);
    json_t *j = jget(p, "POST", "/embed", "{\"inputs\":[\"hello world\",\"b\"]}", 200);
    json_decref(j);
    j = jget(p, "GET", "/nowhere", NULL, 404);
    json_decref(j);
    /* the completed callback writes after the reply: wait for both lines */
    char *text = NULL;
    for (int i = 0; i < 200; i++) {
        free(text);
        size_t n = 0;
        text = xf_test_slurp(logp, &n);
        if (text && strstr(text, "route=other status=404") &&
            strstr(text, "route=/embed status=200"))   /* callbacks may finish in any order */
            break;
        usleep(10000);
    }
    xf_log_open(XF_LOG_WARN, NULL);
    assert_non_null(text);
    const char *l = strstr(text, "access: route=/embed status=200 texts=2 tokens=");
    assert_non_null(l);
    assert_non_null(strstr(l, "queue_ms="));
    assert_non_null(strstr(l, "compute_ms="));
    assert_non_null(strstr(text, "access: route=other status=404 texts=0 tokens=0"));
    free(text);
    xf_server_stop(s);
    xf_test_rmtree(dir);
}

/* An IPv6 listen address is logged as [::1]:port (RFC 3986), not ::1:port. */
static void test_ipv6_address_format(void **state)
{
    (void)state;
    need_servers();
    char dir[1024], logp[1200];
    assert_int_equal(fx_write_model("rt_v6", 0, dir, sizeof dir), 0);
    snprintf(logp, sizeof logp, "%s/v6.log", dir);
    xf_server_opts_t o;
    fx_opts(&o, dir);
    o.listen_addr = "::1";
    o.warmup = 0;
    assert_int_equal(xf_log_open(XF_LOG_INFO, logp), 0);
    xf_server_t *s = NULL;
    xf_diag_t diag = { 0, "" };
    int rc = xf_server_start(&o, &s, &diag);
    xf_log_open(XF_LOG_WARN, NULL);
    if (rc == -EADDRINUSE || rc == -EADDRNOTAVAIL) {
        xf_test_rmtree(dir);
        skip();   /* no IPv6 loopback on this machine */
    }
    assert_int_equal(rc, 0);
    char want[64];
    snprintf(want, sizeof want, "listening on http://[::1]:%d/", xf_server_port(s));
    char *text = xf_test_slurp(logp, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, want));
    free(text);
    xf_server_stop(s);
    xf_test_rmtree(dir);
}

/* TEI's error type and status for a reply: {"error": "...", "error_type": type}. */
static void tei_err(int port, const char *path, const char *body, int status, const char *type,
                    const char *needle)
{
    json_t *j = jget(port, "POST", path, body, status);
    assert_non_null(j);
    assert_true(json_is_string(json_object_get(j, "error")));
    assert_string_equal(json_string_value(json_object_get(j, "error_type")), type);
    if (needle && !strstr(json_string_value(json_object_get(j, "error")), needle))
        fail_msg("%s %s: '%s' not in %s", path, body, needle,
                 json_string_value(json_object_get(j, "error")));
    json_decref(j);
}

static double norm2(json_t *row)
{
    double ss = 0;
    for (size_t i = 0; i < json_array_size(row); i++)
        ss += json_number_value(json_array_get(row, i)) * json_number_value(json_array_get(row, i));
    return sqrt(ss);
}

/* What TEI (>= 1.9) and OpenAI answer, checked against their sources and API reference:
 * TEI statuses follow the error type (Validation 422, Empty 400, Backend 424); /embed takes
 * token ids (alone, in a batch, mixed with texts), dimensions (cut, then normalised) and
 * prompt_name (config_sentence_transformers.json prompts; an unknown name is 422); OpenAI
 * refuses an empty string and takes lists of token ids. */
static void test_tei_openai_conformance(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    /* Statuses by TEI error type. */
    char *big = malloc(40000);
    assert_non_null(big);
    strcpy(big, "{\"inputs\":\"");
    for (int i = 0; i < 3000; i++)
        strcat(big, "word ");
    strcat(big, "\",\"truncate\":false}");
    tei_err(p, "/embed", big, 422, "Validation", "longer than");
    free(big);
    tei_err(p, "/embed", "{\"inputs\":5}", 422, "Validation", "inputs");
    tei_err(p, "/embed", "{\"inputs\":[\"a\",{}]}", 422, "Validation", "inputs");
    tei_err(p, "/embed", "{\"inputs\":[]}", 400, "Empty", NULL);
    tei_err(p, "/embed", "{}", 422, "Validation", "inputs");
    tei_err(p, "/rerank", "{\"query\":\"q\",\"texts\":[\"a\"]}", 424, "Backend", "cross-encoder");
    tei_err(S[SRV_CLS1].port, "/rerank", "{\"query\":\"q\",\"texts\":[]}", 400, "Empty", NULL);
    tei_err(S[SRV_CLS1].port, "/rerank", "{\"texts\":[\"a\"]}", 422, "Validation", "query");
    /* An empty text is TEI's Empty (400) on every route that encodes one (tokenization.rs
     * checks before the prompt); a pair only when both sides are empty, so /rerank takes an
     * empty passage with a query. An empty id list in a /decode batch is Empty too. */
    tei_err(p, "/embed", "{\"inputs\":\"\"}", 400, "Empty", "input 0");
    tei_err(p, "/embed", "{\"inputs\":[\"a\",\"\"]}", 400, "Empty", "input 1");
    tei_err(p, "/embed_all", "{\"inputs\":\"\"}", 400, "Empty", "input 0");
    tei_err(p, "/", "{\"inputs\":\"\"}", 400, "Empty", "input 0");
    tei_err(p, "/tokenize", "{\"inputs\":[\"a\",\"\"]}", 400, "Empty", "input 1");
    tei_err(p, "/decode", "{\"ids\":[[1],[]]}", 400, "Empty", "'ids'[1]");
    tei_err(p, "/similarity", "{\"inputs\":{\"source_sentence\":\"\",\"sentences\":[\"b\"]}}",
            400, "Empty", "input 0");
    tei_err(S[SRV_CLS3].port, "/predict", "{\"inputs\":\"\"}", 400, "Empty", "input 0");
    tei_err(S[SRV_CLS1].port, "/rerank", "{\"query\":\"\",\"texts\":[\"\"]}", 400, "Empty",
            "input 0");
    json_t *rr = jget(S[SRV_CLS1].port, "POST", "/rerank", "{\"query\":\"q\",\"texts\":[\"\"]}",
                      200);
    assert_int_equal(json_array_size(rr), 1);
    json_decref(rr);
    /* Token ids: one input, a batch, mixed with texts; a text and its ids agree. */
    json_t *a = jget(p, "POST", "/embed", "{\"inputs\":[11,59,12]}", 200);
    assert_int_equal(json_array_size(a), 1);
    assert_int_equal(json_array_size(json_array_get(a, 0)), (size_t)D_MODEL);
    json_decref(a);
    a = jget(p, "POST", "/embed", "{\"inputs\":[[11,59,12],[11,12]]}", 200);
    assert_int_equal(json_array_size(a), 2);
    json_decref(a);
    a = jget(p, "POST", "/embed", "{\"inputs\":[\"hello world\",[11,12]]}", 200);
    json_t *b = jget(p, "POST", "/embed", "{\"inputs\":\"hello world\"}", 200);
    assert_int_equal(json_array_size(a), 2);
    assert_true(json_equal(json_array_get(a, 0), json_array_get(b, 0)));
    json_decref(a);
    json_decref(b);
    tei_err(p, "/embed", "{\"inputs\":[11,99999]}", 422, "Validation", "token id");
    /* dimensions: the first n values, unit norm by default; raw cut with normalize false. */
    a = jget(p, "POST", "/embed", "{\"inputs\":\"hello world\",\"dimensions\":8}", 200);
    assert_int_equal(json_array_size(json_array_get(a, 0)), 8);
    assert_true(fabs(norm2(json_array_get(a, 0)) - 1.0) < 1e-5);   /* float rounding */
    json_decref(a);
    a = jget(p, "POST", "/embed", "{\"inputs\":\"hello world\",\"dimensions\":8,"
                                  "\"normalize\":false}", 200);
    b = jget(p, "POST", "/embed", "{\"inputs\":\"hello world\",\"normalize\":false}", 200);
    for (size_t i = 0; i < 8; i++)
        assert_true(json_number_value(json_array_get(json_array_get(a, 0), i)) ==
                    json_number_value(json_array_get(json_array_get(b, 0), i)));
    json_decref(a);
    json_decref(b);
    tei_err(p, "/embed", "{\"inputs\":\"x\",\"dimensions\":0}", 422, "Validation", "dimensions");
    tei_err(p, "/embed", "{\"inputs\":\"x\",\"dimensions\":100000}", 422, "Validation",
            "dimensions");
    /* prompt_name: none configured here. */
    tei_err(p, "/embed", "{\"inputs\":\"x\",\"prompt_name\":\"query\"}", 422, "Validation",
            "no prompts");
    /* OpenAI: "" is refused; lists of token ids are inputs. */
    a = jget(p, "POST", "/v1/embeddings", "{\"input\":\"\"}", 400);
    check_openai_error(a, "empty_input", "input");
    json_decref(a);
    a = jget(p, "POST", "/v1/embeddings", "{\"input\":[\"a\",\"\"]}", 400);
    check_openai_error(a, "empty_input", "input");
    json_decref(a);
    a = jget(p, "POST", "/v1/embeddings", "{\"input\":[[11,59,12],[11,12]]}", 200);
    assert_int_equal(json_array_size(json_object_get(a, "data")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "usage"),
                                                        "prompt_tokens")), 5);
    json_decref(a);
    a = jget(p, "POST", "/v1/embeddings", "{\"input\":[11,99999]}", 400);
    check_openai_error(a, "invalid_field", "input");
    json_decref(a);

    /* prompt_name with a model that has prompts: the prompt's text goes first. */
    fx_srv_t ps = { 0 };
    xf_server_opts_t o;
    assert_int_equal(fx_write_model("rt_prompts", 0, ps.dir, sizeof ps.dir), 0);
    char path[1200];
    snprintf(path, sizeof path, "%s/config_sentence_transformers.json", ps.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"prompts\":{\"query\":\"query: \",\"passage\":\"passage: \"},"
          "\"default_prompt_name\":null}", f);
    fclose(f);
    fx_opts(&o, ps.dir);
    fx_launch(&ps, &o);
    a = jget(ps.port, "POST", "/embed", "{\"inputs\":[\"hello world\"],\"prompt_name\":\"query\"}",
             200);
    b = jget(ps.port, "POST", "/embed", "{\"inputs\":[\"query: hello world\"]}", 200);
    json_t *c = jget(ps.port, "POST", "/embed", "{\"inputs\":[\"hello world\"]}", 200);
    assert_true(json_equal(a, b));
    assert_false(json_equal(a, c));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    tei_err(ps.port, "/embed", "{\"inputs\":\"x\",\"prompt_name\":\"doc\"}", 422, "Validation",
            "'passage'");
    /* token ids with a prompt_name: as TEI, the ids are decoded (specials skipped), the prompt
     * goes before the text and the whole is encoded with [CLS]/[SEP]: the same as the
     * prompted text; an empty id list is still Empty */
    json_t *tk = jget(ps.port, "POST", "/tokenize", "{\"inputs\":\"hello world\"}", 200);
    json_t *idl = json_array();
    for (size_t i = 0; i < json_array_size(json_array_get(tk, 0)); i++)
        json_array_append(idl, json_object_get(json_array_get(json_array_get(tk, 0), i), "id"));
    json_t *rq = json_pack("{s:[o],s:s}", "inputs", idl, "prompt_name", "query");
    char *rqs = json_dumps(rq, JSON_COMPACT);
    a = jget(ps.port, "POST", "/embed", rqs, 200);
    b = jget(ps.port, "POST", "/embed", "{\"inputs\":[\"query: hello world\"]}", 200);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    free(rqs);
    json_decref(rq);
    json_decref(tk);
    tei_err(ps.port, "/embed", "{\"inputs\":[[5],[]],\"prompt_name\":\"query\"}", 400, "Empty",
            "input 1");
    fx_stop_all(&ps, 1);

    /* a Pooling config with include_prompt false (mean pooling): sentence-transformers would
     * leave the prompt's tokens out of the mean, so a prompt_name is refused, not pooled
     * differently; without a prompt the model serves as usual */
    fx_srv_t np = { 0 };
    assert_int_equal(fx_write_model("rt_noprompt", 0, np.dir, sizeof np.dir), 0);
    static const struct { const char *file, *text; } npf[] = {
        { "config_sentence_transformers.json", "{\"prompts\":{\"query\":\"query: \"}}" },
        { "modules.json", "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":"
                          "\"sentence_transformers.models.Transformer\"},{\"idx\":1,\"name\":"
                          "\"1\",\"path\":\"1_Pooling\",\"type\":"
                          "\"sentence_transformers.models.Pooling\"}]" },
        { "1_Pooling/config.json", "{\"pooling_mode\":\"mean\",\"include_prompt\":false}" },
    };
    snprintf(path, sizeof path, "%s/1_Pooling", np.dir);
    assert_int_equal(mkdir(path, 0755), 0);
    for (size_t i = 0; i < sizeof npf / sizeof *npf; i++) {
        snprintf(path, sizeof path, "%s/%s", np.dir, npf[i].file);
        assert_int_equal(xf_test_write_file(path, npf[i].text, strlen(npf[i].text)), 0);
    }
    fx_opts(&o, np.dir);
    fx_launch(&np, &o);
    tei_err(np.port, "/embed", "{\"inputs\":\"x\",\"prompt_name\":\"query\"}", 422,
            "Validation", "include_prompt");
    tei_err(np.port, "/similarity", "{\"inputs\":{\"source_sentence\":\"x\",\"sentences\":"
            "[\"y\"]},\"parameters\":{\"prompt_name\":\"query\"}}", 422, "Validation",
            "include_prompt");
    /* nothing pooled: the prompt is used */
    a = jget(np.port, "POST", "/tokenize", "{\"inputs\":\"x\",\"prompt_name\":\"query\"}",
             200);
    b = jget(np.port, "POST", "/tokenize", "{\"inputs\":\"query: x\"}", 200);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    a = jget(np.port, "POST", "/embed", "{\"inputs\":[\"query: x\"]}", 200);
    json_decref(a);
    a = jget(np.port, "GET", "/info", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(a,
                        "model_type"), "embedding"), "pooling")), "mean");
    json_decref(a);
    fx_stop_all(&np, 1);

    /* sentence-transformers' max_seq_length (sentence_bert_config.json) is the input limit,
     * as in sentence-transformers and TEI (/info max_input_length): cut by default on TEI's
     * routes, refused with "truncate": false and on the OpenAI route */
    fx_srv_t ms = { 0 };
    assert_int_equal(fx_write_model("rt_maxseq", 0, ms.dir, sizeof ms.dir), 0);
    snprintf(path, sizeof path, "%s/sentence_bert_config.json", ms.dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"max_seq_length\": 6, \"do_lower_case\": false}", f);
    fclose(f);
    fx_opts(&o, ms.dir);
    fx_launch(&ms, &o);
    a = jget(ms.port, "GET", "/info", NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(a, "max_input_length")), 6);
    json_decref(a);
    const char *longer = "{\"inputs\":\"a b c d e f g h i j\"}";
    hc_resp_t hr = req(ms.port, "POST", "/embed", NULL, longer, 200);
    char hv[32];
    assert_non_null(hc_header(&hr, "x-compute-tokens", hv, sizeof hv));
    assert_string_equal(hv, "6");
    hc_free(&hr);
    tei_err(ms.port, "/embed", "{\"inputs\":\"a b c d e f g h i j\",\"truncate\":false}", 422,
            "Validation", "limit of 6 tokens");
    a = jget(ms.port, "POST", "/v1/embeddings", "{\"input\":\"a b c d e f g h i j\"}", 400);
    check_openai_error(a, "input_too_long", "input");
    json_decref(a);
    a = jget(ms.port, "POST", "/v1/embeddings", "{\"input\":\"a b c d\"}", 200);
    json_decref(a);
    fx_stop_all(&ms, 1);

    /* TEI also serves the OpenAI route as POST /embeddings. */
    a = jget(p, "POST", "/embeddings", "{\"input\":[\"a\",\"b c\"]}", 200);
    b = jget(p, "POST", "/v1/embeddings", "{\"input\":[\"a\",\"b c\"]}", 200);
    assert_string_equal(json_string_value(json_object_get(a, "object")), "list");
    assert_true(json_equal(json_object_get(a, "data"), json_object_get(b, "data")));
    json_decref(a);
    json_decref(b);
    a = jget(p, "POST", "/embeddings", "{\"input\":\"\"}", 400);
    check_openai_error(a, "empty_input", "input");
    json_decref(a);
}

/* TEI's /decode, as Hugging Face's WordPiece decoder writes text (the Rust tokenizers TEI
 * runs: "##" pieces join, a space before every other token except one starting with
 * punctuation such as "." or ","; "' s" stays apart, its cleanup works token by token). */
static void test_tei_decode(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    const xf_tokenizer_t *tk = xf_model_tokenizer(xf_server_model(S[SRV_PLAIN].s));
    const char *text = "Hello world, it's done. Unbelievable!";
    xf_tokens_t t = { 0 };
    xf_tok_opts_t to = { 0 };
    xf_diag_t diag = { 0, "" };
    assert_int_equal(xf_tokenizer_encode(tk, text, strlen(text), NULL, 0, &to, &t, &diag), 0);
    int has_piece = 0;
    char ids[1024] = "";
    size_t o = 0;
    for (int32_t i = 0; i < t.n; i++) {
        o += (size_t)snprintf(ids + o, sizeof ids - o, "%s%d", i ? "," : "", t.ids[i]);
        has_piece |= !strncmp(xf_tokenizer_token(tk, t.ids[i]), "##", 2);
    }
    assert_true(has_piece);   /* the demo vocabulary splits "unbelievable" */
    char body[2048];
    snprintf(body, sizeof body, "{\"ids\":[%s]}", ids);
    json_t *a = jget(p, "POST", "/decode", body, 200);
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(json_string_value(json_array_get(a, 0)),
                        "hello world, it ' s done. unbelievable!");
    json_decref(a);
    snprintf(body, sizeof body, "{\"ids\":[[%s],[%s,99999]],\"skip_special_tokens\":false}", ids,
             ids);
    a = jget(p, "POST", "/decode", body, 200);
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(json_string_value(json_array_get(a, 0)),
                        "[CLS] hello world, it ' s done. unbelievable! [SEP]");
    /* an id outside the vocabulary is left out, as tokenizers' decode does */
    assert_string_equal(json_string_value(json_array_get(a, 1)),
                        json_string_value(json_array_get(a, 0)));
    json_decref(a);
    xf_tokens_deinit(&t);
    tei_err(p, "/decode", "{\"ids\":[]}", 400, "Empty", NULL);
    tei_err(p, "/decode", "{\"ids\":[1,-2]}", 422, "Validation", "ids");
    tei_err(p, "/decode", "{\"ids\":\"1 2\"}", 422, "Validation", "ids");
    tei_err(p, "/decode", "{}", 422, "Validation", "ids");
}

/* TEI's /similarity (cosines of the sentences with the source sentence, each the dot product
 * of /embed's unit vectors) and /embed_sparse (424: no SPLADE model here, as TEI answers for
 * any other model). */
static void test_tei_similarity(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    json_t *sim = jget(p, "POST", "/similarity", "{\"inputs\":{\"source_sentence\":\"hello world\","
                       "\"sentences\":[\"hello world\",\"a different text\"]}}", 200);
    json_t *e = jget(p, "POST", "/embed", "{\"inputs\":[\"hello world\",\"a different text\"]}",
                     200);
    assert_int_equal(json_array_size(sim), 2);
    for (size_t k = 0; k < 2; k++) {
        double dot = 0;
        json_t *a = json_array_get(e, 0), *b = json_array_get(e, k);
        for (size_t c = 0; c < json_array_size(a); c++)
            dot += json_number_value(json_array_get(a, c)) * json_number_value(json_array_get(b, c));
        /* 9-digit floats on the wire and float32 sums: 1e-5 */
        assert_true(fabs(json_number_value(json_array_get(sim, k)) - dot) < 1e-5);
    }
    assert_true(fabs(json_number_value(json_array_get(sim, 0)) - 1.0) < 1e-5);
    /* The tiny random model's CLS vectors are close: 0.99991 measured for these two. */
    assert_true(json_number_value(json_array_get(sim, 1)) < 1.0 - 1e-5);
    json_decref(sim);
    json_decref(e);
    sim = jget(p, "POST", "/similarity", "{\"inputs\":{\"source_sentence\":\"a\",\"sentences\":"
               "[\"b\"]},\"parameters\":{\"truncate\":true,\"truncation_direction\":\"left\"}}",
               200);
    assert_int_equal(json_array_size(sim), 1);
    json_decref(sim);
    tei_err(p, "/similarity", "{\"inputs\":{\"source_sentence\":\"a\",\"sentences\":[]}}", 400,
            "Empty", NULL);
    tei_err(p, "/similarity", "{\"inputs\":\"a\"}", 422, "Validation", "inputs");
    tei_err(p, "/similarity", "{\"inputs\":{\"sentences\":[\"b\"]}}", 422, "Validation",
            "source_sentence");
    tei_err(p, "/embed_sparse", "{\"inputs\":\"a\"}", 424, "Backend", "SPLADE");
}

/* One raw request (body of len bytes, may hold NULs); asserts the status, returns the JSON. */
static json_t *raw_json(int port, const char *path, const char *extra, const char *body,
                        size_t len, int want)
{
    int fd = hc_connect(port);
    assert_true(fd >= 0);
    hc_resp_t r;
    assert_int_equal(hc_request(fd, "POST", path, extra, body, len, &r), 0);
    close(fd);
    if (r.status != want)
        print_message("# %s -> %d (want %d): %s\n", path, r.status, want, r.body);
    assert_int_equal(r.status, want);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    hc_free(&r);
    return j;
}

/* Triton's binary tensor data extension, as tritonclient.http sends BYTES inputs by default:
 * a JSON header of Inference-Header-Content-Length bytes, then each element as a 4-byte
 * little-endian length and its bytes. The answer equals the all-JSON request's. */
static void test_kserve_binary_bytes(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    const char *path = "/v2/models/xformd-demo/infer";
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr, "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\","
                      "\"shape\":[2],\"parameters\":{\"binary_data_size\":%d}}],\"outputs\":"
                      "[{\"name\":\"embedding\",\"parameters\":{\"binary_data\":true}}]}",
                      4 + 11 + 4 + 5);
    char body[512];
    memcpy(body, hdr, (size_t)hl);
    size_t n = (size_t)hl;
    static const unsigned char l1[4] = { 11, 0, 0, 0 }, l2[4] = { 5, 0, 0, 0 };
    memcpy(body + n, l1, 4);
    memcpy(body + n + 4, "hello world", 11);
    memcpy(body + n + 15, l2, 4);
    memcpy(body + n + 19, "again", 5);
    n += 24;
    char extra[128];
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %d\r\n", hl);
    json_t *a = raw_json(p, path, extra, body, n, 200);
    json_t *b = jget(p, "POST", path, "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\","
                     "\"shape\":[2],\"data\":[\"hello world\",\"again\"]}]}", 200);
    assert_non_null(a);
    assert_true(json_equal(json_object_get(a, "outputs"), json_object_get(b, "outputs")));
    json_decref(a);
    json_decref(b);
    /* labelled application/octet-stream: the same */
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %d\r\nContent-Type: "
             "application/octet-stream\r\n", hl);
    a = raw_json(p, path, extra, body, n, 200);
    json_decref(a);
    /* a header length past the body, a size that is not the binary part, a cut element */
    a = raw_json(p, path, "Inference-Header-Content-Length: 99999\r\n", body, n, 400);
    assert_true(json_is_string(json_object_get(a, "error")));
    json_decref(a);
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %d\r\n", hl);
    a = raw_json(p, path, extra, body, n - 1, 400);
    assert_non_null(strstr(json_string_value(json_object_get(a, "error")), "binary"));
    json_decref(a);
    /* the server says it speaks the extension */
    a = jget(p, "GET", "/v2", NULL, 200);
    assert_string_equal(json_string_value(json_array_get(json_object_get(a, "extensions"), 0)),
                        "binary_tensor_data");
    json_decref(a);
}

/* Error bodies that echo a client's bytes stay UTF-8 JSON: a model name of bytes 0xff 0xfe
 * from the path, a cut 4-byte sequence, a surrogate and an overlong '/' each read back as
 * U+FFFD; well-formed characters pass through. (They were copied raw, and a JSON decoder
 * refused the body.) */
static void test_error_body_utf8(void **state)
{
    (void)state;
    need_servers();
    static const struct {
        const char *path, *want;
    } c[] = {
        { "/v2/models/%ff%fe/ready", "'\xef\xbf\xbd\xef\xbf\xbd'" },
        { "/v2/models/a%f0%9f%98/ready", "'a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd'" },
        { "/v2/models/%ed%a0%80/ready", "'\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd'" },
        { "/v2/models/%c0%af/ready", "'\xef\xbf\xbd\xef\xbf\xbd'" },
        { "/v2/models/%c3%a9%f0%9f%98%80/ready", "'\xc3\xa9\xf0\x9f\x98\x80'" },
        { "/v1/models/%ff", "'\xef\xbf\xbd'" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        hc_resp_t r = req(S[SRV_PLAIN].port, "GET", c[i].path, NULL, NULL, 404);
        json_error_t err;
        json_t *j = json_loadb(r.body, r.len, 0, &err);
        if (!j)
            fail_msg("%s: the body is not JSON (%s): %s", c[i].path, err.text, r.body);
        json_t *e = json_object_get(j, "error");
        const char *msg = json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                                            : json_string_value(e);
        assert_non_null(msg);
        if (!strstr(msg, c[i].want))
            fail_msg("%s: %s", c[i].path, msg);
        json_decref(j);
        hc_free(&r);
    }
}

/* KServe model metadata names the quantisation the model runs with (it said "none" always);
 * so do /metrics' xformd_model_info and /v1/stats (server.model and model). */
static void test_kserve_quantisation(void **state)
{
    (void)state;
    fx_srv_t q = { 0 };
    xf_server_opts_t o;
    assert_int_equal(fx_write_model("rt_int8", 0, q.dir, sizeof q.dir), 0);
    fx_opts(&o, q.dir);
    o.quantize = "int8";
    fx_launch(&q, &o);
    char path[256];
    snprintf(path, sizeof path, "/v2/models/%s", q.s->model_name);
    json_t *m = jget(q.port, "GET", path, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "parameters"),
                                                          "quantisation")), "int8");
    json_decref(m);
    hc_resp_t mr = req(q.port, "GET", "/metrics", NULL, NULL, 200);
    if (!strstr(mr.body, ",quantize=\"int8\"} 1\n"))
        fail_msg("/metrics has no xformd_model_info{...,quantize=\"int8\"}");
    hc_free(&mr);
    m = jget(q.port, "GET", "/v1/stats", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
                            m, "server"), "model"), "quantize")), "int8");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "model"),
                                                          "quantize")), "int8");
    json_decref(m);
    fx_stop_all(&q, 1);
    need_servers();
    snprintf(path, sizeof path, "/v2/models/%s", S[SRV_PLAIN].s->model_name);
    m = jget(S[SRV_PLAIN].port, "GET", path, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "parameters"),
                                                          "quantisation")), "none");
    json_decref(m);
}

/* A served name with '/' (TEI serves "BAAI/bge-small-en-v1.5" by default; model.name may be
 * set so): GET /v1/models/{id} finds it, %2F-escaped as the openai SDKs send it or not (it was
 * 404 "no route": MHD unescapes %2F and {m} is one segment), and embeddings name it. */
static void test_openai_model_id_with_slash(void **state)
{
    (void)state;
    fx_srv_t q = { 0 };
    xf_server_opts_t o;
    assert_int_equal(fx_write_model("rt_slash", 0, q.dir, sizeof q.dir), 0);
    fx_opts(&o, q.dir);
    o.model_name = "org/tiny-model";
    fx_launch(&q, &o);
    static const char *const paths[] = { "/v1/models/org%2Ftiny-model",
                                         "/v1/models/org/tiny-model" };
    for (int i = 0; i < 2; i++) {
        json_t *m = jget(q.port, "GET", paths[i], NULL, 200);
        assert_string_equal(json_string_value(json_object_get(m, "id")), "org/tiny-model");
        assert_string_equal(json_string_value(json_object_get(m, "object")), "model");
        json_decref(m);
    }
    json_t *j = jget(q.port, "GET", "/v1/models/org/other", NULL, 404);
    check_openai_error(j, "model_not_found", "model");
    json_decref(j);
    hc_resp_t r = req(q.port, "POST", "/v1/models/org/tiny-model", NULL, "{}", 405);
    hc_free(&r);
    j = jget(q.port, "POST", "/v1/embeddings", "{\"input\":\"a\",\"model\":\"org/tiny-model\"}",
             200);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "org/tiny-model");
    json_decref(j);
    fx_stop_all(&q, 1);
}

static void test_stop(void **state)
{
    (void)state;
    fx_stop_all(S, SRV_N);
}

XF_TEST_MAIN(cmocka_unit_test(test_defaults_from_table), cmocka_unit_test(test_route_labels),
             cmocka_unit_test(test_route_match), cmocka_unit_test(test_openai_models),
             cmocka_unit_test(test_kserve_versions), cmocka_unit_test(test_tei_root_health_info),
             cmocka_unit_test(test_predict_batch), cmocka_unit_test(test_truncation_direction),
             cmocka_unit_test(test_many_texts), cmocka_unit_test(test_attention_fallback_header),
             cmocka_unit_test(test_bind_first), cmocka_unit_test(test_ready_after_warmup),
             cmocka_unit_test(test_access_log), cmocka_unit_test(test_ipv6_address_format),
             cmocka_unit_test(test_tei_openai_conformance),
             cmocka_unit_test(test_kserve_quantisation), cmocka_unit_test(test_tei_decode),
             cmocka_unit_test(test_tei_similarity),
             cmocka_unit_test(test_kserve_binary_bytes), cmocka_unit_test(test_error_body_utf8),
             cmocka_unit_test(test_openai_model_id_with_slash), cmocka_unit_test(test_stop))
