/* Conformance with the real projects on what their clients meet at the edges, checked against
 * text-embeddings-inference's router (0d124dc: router/src/http/types.rs, server.rs, lib.rs)
 * and OpenAI's API:
 *   nulls: TEI's Option<T> fields (truncate, prompt_name, dimensions, similarity's parameters)
 *     take null as absent; its plain fields with a serde default (normalize, raw_scores,
 *     return_text, truncation_direction, add_special_tokens, skip_special_tokens) and its
 *     required ones refuse it with 422 on every TEI route; OpenAI's optional parameters take
 *     null as not given;
 *   TEI's response headers (x-compute-type, -time, -characters, -tokens, x-total-time,
 *     x-tokenization-time, x-queue-time, x-inference-time) on the routes TEI sends them on,
 *     with xformd's own timing; not on /tokenize, /decode, /vertex or errors;
 *   token-id inputs: the model tokenizer's ids as given, with 4xx for ids outside the
 *     vocabulary, empty lists, too many tokens and wrong element types; OpenAI's statuses for
 *     over-long input and too many inputs or tokens (400, what the SDKs raise
 *     BadRequestError for);
 *   a live /metrics scrape through Prometheus's promtool (when installed).
 * Real daemon on 127.0.0.1, port 0. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xf_test.h"

#include "server/server.h"
#include "server_fixture.h"

static fx_srv_t S[FX_DEMO_N];
static int VOCAB, MAX_POS;

static void need_servers(void)
{
    if (S[0].s)
        return;
    fx_demo_start(S, "cf", NULL);
    const xf_model_info_t *mi = xf_model_info(xf_server_model(S[0].s));
    VOCAB = mi->vocab_size;
    MAX_POS = mi->max_positions;
}

/* POST body, assert the status, return the reply (caller hc_free's). */
static hc_resp_t post(int port, const char *path, const char *body, int want)
{
    hc_resp_t r;
    assert_int_equal(hc_do(port, "POST", path, NULL, body, &r), 0);
    if (r.status != want)
        print_message("# POST %s %s -> %d (want %d): %s\n", path, body, r.status, want, r.body);
    assert_int_equal(r.status, want);
    return r;
}

static void post_ok(int port, const char *path, const char *body)
{
    hc_resp_t r = post(port, path, body, 200);
    hc_free(&r);
}

/* A TEI error: status, {"error": ..., "error_type": type}, the message naming needle. */
static void tei_err(int port, const char *path, const char *body, int status, const char *type,
                    const char *needle)
{
    hc_resp_t r = post(port, path, body, status);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_non_null(j);
    const char *e = json_string_value(json_object_get(j, "error"));
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(j, "error_type")), type);
    if (needle && !strstr(e, needle))
        fail_msg("%s %s: '%s' not in '%s'", path, body, needle, e);
    json_decref(j);
    hc_free(&r);
}

/* An OpenAI error: status, {"error": {"message", "type", "param", "code"}}. */
static void openai_err(int port, const char *body, int status, const char *code,
                       const char *param)
{
    hc_resp_t r = post(port, "/v1/embeddings", body, status);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_string_equal(json_string_value(json_object_get(e, "type")),
                        status == 429 ? "rate_limit_error" : "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    if (param)
        assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    json_decref(j);
    hc_free(&r);
}

/* Every TEI route, every typed field: null where TEI's type is Option<T> is the default; null
 * where it is a plain (defaulted) or required field is 422 Validation naming the field. */
static void test_tei_nulls(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port, c1 = S[FX_CLS1].port, c3 = S[FX_CLS3].port;
    static const char *const embed_ok[] = {
        "{\"inputs\":\"a b\",\"truncate\":null}",
        "{\"inputs\":\"a b\",\"prompt_name\":null}",
        "{\"inputs\":\"a b\",\"dimensions\":null}",
        "{\"inputs\":\"a b\",\"truncate\":null,\"prompt_name\":null,\"dimensions\":null,"
        "\"timeout_ms\":null,\"attention\":null}",
    };
    for (size_t i = 0; i < sizeof embed_ok / sizeof embed_ok[0]; i++) {
        post_ok(p, "/embed", embed_ok[i]);
        post_ok(p, "/", embed_ok[i]);
    }
    /* null is the default: the same vector as without the field */
    hc_resp_t a = post(p, "/embed", "{\"inputs\":\"a b\",\"dimensions\":null,\"truncate\":null}",
                       200);
    hc_resp_t b = post(p, "/embed", "{\"inputs\":\"a b\"}", 200);
    assert_string_equal(a.body, b.body);
    hc_free(&a);
    hc_free(&b);
    tei_err(p, "/embed", "{\"inputs\":\"a\",\"normalize\":null}", 422, "Validation",
            "'normalize'");
    tei_err(p, "/", "{\"inputs\":\"a\",\"normalize\":null}", 422, "Validation", "'normalize'");
    /* worded as axum's 422 for a body that does not deserialise (TEI sends it as plain text) */
    tei_err(p, "/embed", "{\"inputs\":\"a\",\"normalize\":null}", 422, "Validation",
            "Failed to deserialize the JSON body into the target type: ");
    tei_err(p, "/embed", "{\"inputs\":\"a\",\"normalize\":\"yes\"}", 422, "Validation",
            "Failed to deserialize the JSON body into the target type: ");
    tei_err(p, "/embed", "{}", 422, "Validation",
            "Failed to deserialize the JSON body into the target type: ");
    /* inputs of a type TEI's Input enum has no variant for */
    tei_err(p, "/embed", "{\"inputs\":5}", 422, "Validation",
            "Failed to deserialize the JSON body into the target type: field 'inputs' must be");
    tei_err(p, "/embed", "{\"inputs\":[\"a\",{}]}", 422, "Validation",
            "Failed to deserialize the JSON body into the target type: field 'inputs'[1]");
    tei_err(p, "/embed", "{\"inputs\":\"a\",\"truncation_direction\":null}", 422, "Validation",
            "'truncation_direction'");
    tei_err(p, "/embed", "{\"inputs\":null}", 422, "Validation", "inputs");
    /* /embed_all: truncate and prompt_name optional, truncation_direction not */
    post_ok(p, "/embed_all", "{\"inputs\":\"a\",\"truncate\":null,\"prompt_name\":null}");
    tei_err(p, "/embed_all", "{\"inputs\":\"a\",\"truncation_direction\":null}", 422,
            "Validation", "'truncation_direction'");
    /* /tokenize, /decode */
    post_ok(p, "/tokenize", "{\"inputs\":\"a\",\"prompt_name\":null}");
    tei_err(p, "/tokenize", "{\"inputs\":\"a\",\"add_special_tokens\":null}", 422, "Validation",
            "'add_special_tokens'");
    tei_err(p, "/decode", "{\"ids\":[5],\"skip_special_tokens\":null}", 422, "Validation",
            "'skip_special_tokens'");
    tei_err(p, "/decode", "{\"ids\":null}", 422, "Validation", "ids");
    /* /similarity: parameters is Option<SimilarityParameters>; inside it as /embed */
#define SIM(params) "{\"inputs\":{\"source_sentence\":\"a\",\"sentences\":[\"b\"]}," \
                    "\"parameters\":" params "}"
    post_ok(p, "/similarity", SIM("null"));
    post_ok(p, "/similarity", SIM("{\"truncate\":null,\"prompt_name\":null}"));
    tei_err(p, "/similarity", SIM("{\"truncation_direction\":null}"), 422, "Validation",
            "'truncation_direction'");
#undef SIM
    tei_err(p, "/similarity", "{\"inputs\":{\"source_sentence\":null,\"sentences\":[\"b\"]}}", 422,
            "Validation", "source_sentence");
    tei_err(p, "/similarity", "{\"inputs\":{\"source_sentence\":\"a\",\"sentences\":null}}", 422,
            "Validation", "sentences");
    /* /rerank (a cross-encoder) */
    post_ok(c1, "/rerank", "{\"query\":\"q\",\"texts\":[\"a\"],\"truncate\":null}");
    tei_err(c1, "/rerank", "{\"query\":\"q\",\"texts\":[\"a\"],\"raw_scores\":null}", 422,
            "Validation", "'raw_scores'");
    tei_err(c1, "/rerank", "{\"query\":\"q\",\"texts\":[\"a\"],\"return_text\":null}", 422,
            "Validation", "'return_text'");
    tei_err(c1, "/rerank", "{\"query\":null,\"texts\":[\"a\"]}", 422, "Validation", "query");
    tei_err(c1, "/rerank", "{\"query\":\"q\",\"texts\":null}", 422, "Validation", "texts");
    /* /predict (3 labels) */
    post_ok(c3, "/predict", "{\"inputs\":\"a\",\"truncate\":null}");
    tei_err(c3, "/predict", "{\"inputs\":\"a\",\"raw_scores\":null}", 422, "Validation",
            "'raw_scores'");
    tei_err(c3, "/predict", "{\"inputs\":null}", 422, "Validation", "inputs");
    /* /vertex: each instance is deserialised as its route's request (TEI: a serde error is
     * Validation, 422, in TEI's error JSON) */
    post_ok(p, "/vertex", "{\"instances\":[{\"inputs\":\"a\",\"dimensions\":null}]}");
    tei_err(p, "/vertex", "{\"instances\":[{\"inputs\":\"a\",\"normalize\":null}]}", 422,
            "Validation", "'normalize'");
    tei_err(p, "/vertex", "{\"instances\":null}", 422, "Validation", "instances");
    /* OpenAI: an optional parameter given as null is not given (what openai-python sends for
     * a None); input and a null in it are errors */
    post_ok(p, "/v1/embeddings", "{\"input\":\"a\",\"model\":null,\"encoding_format\":null,"
                                 "\"dimensions\":null,\"user\":null}");
    post_ok(p, "/embeddings", "{\"input\":\"a\",\"encoding_format\":null}");
    openai_err(p, "{\"input\":null}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[\"a\",null]}", 400, "invalid_field", "input");
}

/* A header as an unsigned integer, asserting it is one (digits only). */
static long long header_int(const hc_resp_t *r, const char *name)
{
    char v[64];
    if (!hc_header(r, name, v, sizeof v))
        fail_msg("no %s header in:\n%s", name, r->head);
    const char *s = v;
    while (*s == ' ')
        s++;
    assert_true(*s >= '0' && *s <= '9');
    char *end;
    long long x = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\r' || *end == '\n')
        end++;
    assert_true(*end == '\0');
    return x;
}

/* The tokens TEI's /tokenize counts for inputs (specials included) */
static long long tokens_of(int port, const char *inputs)
{
    char body[512];
    snprintf(body, sizeof body, "{\"inputs\":%s}", inputs);
    json_t *t = fx_json(port, "POST", "/tokenize", NULL, body, 200);
    long long n = 0;
    for (size_t i = 0; i < json_array_size(t); i++)
        n += (long long)json_array_size(json_array_get(t, i));
    json_decref(t);
    return n;
}

static const char *const TIME_HEADERS[] = { "x-compute-time", "x-total-time",
                                            "x-tokenization-time", "x-queue-time",
                                            "x-inference-time" };

/* TEI's headers on a 200: every one present, integers, the type "cpu", characters and tokens
 * as counted, the times consistent (the parts of the request are disjoint spans within its
 * total; each value is truncated to whole ms, so the sum of the parts cannot exceed it). */
static void check_compute_headers(const hc_resp_t *r, long long chars, long long tokens)
{
    char v[64];
    assert_non_null(hc_header(r, "x-compute-type", v, sizeof v));
    assert_non_null(strstr(v, "cpu"));
    assert_int_equal(header_int(r, "x-compute-characters"), chars);
    assert_int_equal(header_int(r, "x-compute-tokens"), tokens);
    long long t[5];
    for (int i = 0; i < 5; i++)
        t[i] = header_int(r, TIME_HEADERS[i]);
    assert_int_equal(t[0], t[1]);   /* TEI: both are the time since the request started */
    assert_true(t[2] + t[3] + t[4] <= t[1]);
}

static void no_compute_headers(const hc_resp_t *r)
{
    char v[64];
    assert_null(hc_header(r, "x-compute-type", v, sizeof v));
    assert_null(hc_header(r, "x-total-time", v, sizeof v));
    assert_null(hc_header(r, "x-inference-time", v, sizeof v));
}

static void test_tei_compute_headers(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port, c1 = S[FX_CLS1].port, c3 = S[FX_CLS3].port;
    /* characters are code points ("héllo" is 5), token ids count one each */
    const char *in = "[\"hello world\",\"h\\u00e9llo\"]";
    long long ntok = tokens_of(p, in);
    char body[512];
    snprintf(body, sizeof body, "{\"inputs\":%s}", in);
    static const char *const routes[] = { "/embed", "/embed_all", "/" };
    for (size_t i = 0; i < 3; i++) {
        hc_resp_t r = post(p, routes[i], body, 200);
        check_compute_headers(&r, 16, ntok);
        hc_free(&r);
    }
    hc_resp_t r = post(p, "/v1/embeddings", "{\"input\":[\"hello world\",[5,6,7]]}", 200);
    check_compute_headers(&r, 11 + 3, tokens_of(p, "\"hello world\"") + 3);
    hc_free(&r);
    r = post(p, "/embed", "{\"inputs\":[[5,6,7,8]]}", 200);
    check_compute_headers(&r, 4, 4);
    hc_free(&r);
    r = post(p, "/similarity", "{\"inputs\":{\"source_sentence\":\"hello world\","
                               "\"sentences\":[\"h\\u00e9llo\"]}}", 200);
    check_compute_headers(&r, 16, ntok);
    hc_free(&r);
    /* /rerank: query and text of every pair, as TEI counts a pair's characters */
    r = post(c1, "/rerank", "{\"query\":\"hello\",\"texts\":[\"world\",\"h\\u00e9llo\"]}", 200);
    assert_int_equal(header_int(&r, "x-compute-characters"), 5 + 5 + 5 + 5);
    check_compute_headers(&r, 20, header_int(&r, "x-compute-tokens"));
    assert_true(header_int(&r, "x-compute-tokens") >= 2 * 5);   /* [CLS] q [SEP] t [SEP] each */
    hc_free(&r);
    r = post(c3, "/predict", "{\"inputs\":\"hello world\"}", 200);
    check_compute_headers(&r, 11, tokens_of(p, "\"hello world\""));
    hc_free(&r);
    /* not on the routes TEI answers without them, nor on errors */
    static const struct {
        const char *path, *body;
        int status;
    } bare[] = {
        { "/tokenize", "{\"inputs\":\"a\"}", 200 },
        { "/decode", "{\"ids\":[5]}", 200 },
        { "/vertex", "{\"instances\":[{\"inputs\":\"a\"}]}", 200 },
        { "/embed", "{\"inputs\":[]}", 400 },
        { "/v1/embeddings", "{\"input\":\"\"}", 400 },
    };
    for (size_t i = 0; i < sizeof bare / sizeof bare[0]; i++) {
        r = post(p, bare[i].path, bare[i].body, bare[i].status);
        no_compute_headers(&r);
        hc_free(&r);
    }
}

/* x-inference-time is the batch's compute: with the engine's fake-time hook every batch lasts
 * at least 1 ms + 20 ms per token, so a 12-token request's header says >= 240 ms (241 less
 * the hook's float rounding) however fast the machine: a lower bound the hook guarantees, not
 * a measurement of speed. The queue and tokenisation are not in it; the total holds all. */
static void test_tei_inference_time_header(void **state)
{
    (void)state;
    fx_srv_t f = { 0 };
    xf_server_opts_t o;
    assert_int_equal(fx_write_model("cf_fake", 0, f.dir, sizeof f.dir), 0);
    fx_opts(&o, f.dir);
    o.engine_fake_s_per_token = 0.02;
    fx_launch(&f, &o);
    hc_resp_t r = post(f.port, "/embed", "{\"inputs\":[[5,6,7,8,9,10,11,12,13,14,15,16]]}", 200);
    assert_int_equal(header_int(&r, "x-compute-tokens"), 12);
    assert_true(header_int(&r, "x-inference-time") >= 240);
    assert_true(header_int(&r, "x-total-time") >= header_int(&r, "x-inference-time") +
                                                      header_int(&r, "x-queue-time"));
    hc_free(&r);
    fx_stop_all(&f, 1);
}

/* A body of n token-id lists of len ids each (ids cycling 5 .. 104), under key. */
static char *ids_body(const char *key, int n, int len, const char *extra)
{
    size_t cap = (size_t)n * (size_t)len * 5 + 256;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t k = (size_t)snprintf(b, cap, "{\"%s\":[", key);
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(b + k, cap - k, "%s[", i ? "," : "");
        for (int q = 0; q < len; q++)
            k += (size_t)snprintf(b + k, cap - k, "%s%d", q ? "," : "", 5 + q % 100);
        k += (size_t)snprintf(b + k, cap - k, "]");
    }
    snprintf(b + k, cap - k, "]%s}", extra ? extra : "");
    return b;
}

/* Token ids (what LangChain's OpenAIEmbeddings sends by default, tiktoken's): taken as the
 * model tokenizer's ids, as TEI takes them; every malformed list is a clear 4xx naming the
 * input, never a 5xx or a silent embedding. */
static void test_token_ids(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    char body[256];
    /* outside the vocabulary: OpenAI 400 invalid_field (param input), TEI 422 */
    snprintf(body, sizeof body, "{\"input\":[[5,6],[7,%d]]}", VOCAB);
    openai_err(p, body, 400, "invalid_field", "input");
    snprintf(body, sizeof body, "{\"inputs\":[[5,6],[7,%d]]}", VOCAB);
    tei_err(p, "/embed", body, 422, "Validation", "input 1: element 1");
    snprintf(body, sizeof body, "{\"input\":[%d]}", VOCAB - 1);
    post_ok(p, "/v1/embeddings", body);   /* the last id is in */
    openai_err(p, "{\"input\":[5,-1]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[5,4294967296]}", 400, "invalid_field", "input");
    /* empty: the list, one id list, an id list in a batch */
    openai_err(p, "{\"input\":[]}", 400, "empty_input", "input");
    openai_err(p, "{\"input\":[[]]}", 400, "empty_input", "input");
    openai_err(p, "{\"input\":[[5],[]]}", 400, "empty_input", "input");
    tei_err(p, "/embed", "{\"inputs\":[[5],[]]}", 400, "Empty", "input 1");
    /* wrong element types and mixtures OpenAI and TEI do not take */
    openai_err(p, "{\"input\":[5,\"a\"]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[\"a\",5]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[5.0,6]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[[5,6.5]]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[[5,true]]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[[5,[6]]]}", 400, "invalid_field", "input");
    openai_err(p, "{\"input\":[true]}", 400, "invalid_field", "input");
    tei_err(p, "/embed", "{\"inputs\":[5,\"a\"]}", 422, "Validation", "input");
    /* texts and id lists in one batch: TEI's Input takes them (Vec<InputType>), so does the
     * OpenAI route (TEI's too); an empty text among them is still refused */
    post_ok(p, "/v1/embeddings", "{\"input\":[[5,6],\"a b\"]}");
    openai_err(p, "{\"input\":[[5,6],\"\"]}", 400, "empty_input", "input");
    /* longer than the model's positions: OpenAI 400 (what OpenAI answers past the context
     * length; the SDK's BadRequestError), TEI cuts by default (auto-truncate) or 422 */
    char *big = ids_body("input", 1, MAX_POS + 1, NULL);
    openai_err(p, big, 400, "input_too_long", "input");
    free(big);
    big = ids_body("inputs", 1, MAX_POS + 1, ",\"truncate\":false");
    tei_err(p, "/embed", big, 422, "Validation", "longer than");
    free(big);
    big = ids_body("inputs", 1, MAX_POS + 1, NULL);
    post_ok(p, "/embed", big);
    free(big);
    /* too many tokens in one request (request.max_tokens, 8192): OpenAI 400, TEI 422 */
    big = ids_body("input", 17, MAX_POS, NULL);
    openai_err(p, big, 400, "too_many_tokens", NULL);
    free(big);
    big = ids_body("inputs", 17, MAX_POS, NULL);
    tei_err(p, "/embed", big, 422, "Validation", "max_tokens");
    free(big);
    /* the ids of a text (as /tokenize gives them, [CLS] and [SEP] included) embed as the text */
    json_t *t = fx_json(p, "POST", "/tokenize", NULL, "{\"inputs\":\"hello world\"}", 200);
    json_t *ids = json_array();
    for (size_t i = 0; i < json_array_size(json_array_get(t, 0)); i++)
        json_array_append(ids, json_object_get(json_array_get(json_array_get(t, 0), i), "id"));
    json_t *rq = json_pack("{s:o}", "input", ids);
    char *s = json_dumps(rq, JSON_COMPACT);
    json_t *x = fx_json(p, "POST", "/v1/embeddings", NULL, s, 200);
    json_t *y = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":\"hello world\"}", 200);
    assert_true(json_equal(json_object_get(x, "data"), json_object_get(y, "data")));
    json_decref(x);
    json_decref(y);
    free(s);
    json_decref(rq);
    json_decref(t);
}

/* What an OpenAI SDK raises follows the status: an over-long text and too many inputs are 400
 * (BadRequestError), as OpenAI answers, not 413 (a bare APIError). */
static void test_openai_statuses(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    size_t cap = (size_t)MAX_POS * 6 + 64;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t k = (size_t)snprintf(b, cap, "{\"input\":\"");
    for (int i = 0; i < MAX_POS; i++)
        k += (size_t)snprintf(b + k, cap - k, "word ");
    snprintf(b + k, cap - k, "\"}");
    openai_err(p, b, 400, "input_too_long", "input");
    free(b);
    /* request.max_texts (2048) + 1 inputs */
    b = malloc(2049 * 4 + 64);
    assert_non_null(b);
    k = (size_t)sprintf(b, "{\"input\":[");
    for (int i = 0; i < 2049; i++)
        k += (size_t)sprintf(b + k, "%s\"a\"", i ? "," : "");
    strcpy(b + k, "]}");
    openai_err(p, b, 400, "too_many_inputs", "input");
    free(b);
    openai_err(p, "{\"input\":\"a\",\"model\":\"text-embedding-3-small\"}", 404,
               "model_not_found", "model");
}

/* Prometheus's own parser and linter on a live scrape, after every kind of reply above (2xx,
 * 4xx of each API, 404): `promtool check metrics` reads the text exposition format as the
 * Prometheus server does and reports any parse error or lint problem (exit status != 0).
 * Skipped where promtool (Debian's prometheus package) is not installed. */
static void test_promtool_scrape(void **state)
{
    (void)state;
    need_servers();
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        print_message("# skipped: no promtool on PATH (Debian package prometheus)\n");
        skip();
    }
    hc_resp_t r;
    assert_int_equal(hc_do(S[FX_PLAIN].port, "GET", "/nope", NULL, NULL, &r), 0);
    hc_free(&r);
    assert_int_equal(hc_do(S[FX_PLAIN].port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "xformd_requests_total"));
    char path[] = "/tmp/xf_conform_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(r.body, 1, r.len, f), r.len);
    fclose(f);
    hc_free(&r);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);
}

static void test_stop(void **state)
{
    (void)state;
    fx_stop_all(S, FX_DEMO_N);
}

XF_TEST_MAIN(cmocka_unit_test(test_tei_nulls), cmocka_unit_test(test_tei_compute_headers),
             cmocka_unit_test(test_tei_inference_time_header), cmocka_unit_test(test_token_ids),
             cmocka_unit_test(test_openai_statuses), cmocka_unit_test(test_promtool_scrape),
             cmocka_unit_test(test_stop))
