/* Integration tests of the HTTP core: the real daemon (real MHD, real libuv loop, real engine
 * on the tiny demo model) in process on 127.0.0.1 port 0, driven over loopback by a small
 * HTTP/1.1 client: every route, every error class, API keys, concurrent clients, answers under
 * load equal to answers alone, and /metrics counters matching what was sent. */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xf_test.h"

#include "server/cors.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server_fixture.h"

#define KEY "sekret-key-123"
#define AUTH "Authorization: Bearer " KEY "\r\n"

enum { SRV_PLAIN = FX_PLAIN, SRV_CLS3 = FX_CLS3, SRV_CLS1 = FX_CLS1, SRV_N = FX_DEMO_N };

static fx_srv_t S[SRV_N];

static int D_MODEL;

/* plain gets small limits and no CORS, cls3 an API key and two CORS origins, cls1 CORS for
 * any origin. */
static void tweak(int i, xf_server_opts_t *o)
{
    if (i == SRV_CLS3)
        o->cors_allow_origin = "https://app.example.com, http://localhost:3000";
    if (i == SRV_CLS1)
        o->cors_allow_origin = "*";
    if (i == SRV_PLAIN) {
        o->max_body_bytes = 65536;
        o->max_texts = 16;
        o->max_tokens = 4096;
    }
    if (i == SRV_CLS3)
        o->api_key = KEY;
}

/* Start the three demo servers once (server_fixture.h). */
static void need_servers(void)
{
    if (S[0].s)
        return;
    fx_demo_start(S, "srv", tweak);
    D_MODEL = xf_model_info(xf_server_model(S[0].s))->d_model;
}

static double norm(json_t *arr)
{
    double ss = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        double v = json_number_value(json_array_get(arr, i));
        ss += v * v;
    }
    return sqrt(ss);
}

/* How an error reply must look: each API has its own shape (checked by check_shape). */
enum err_shape { SHAPE_ANY, SHAPE_OPENAI, SHAPE_TEI, SHAPE_KSERVE, SHAPE_OWN };

/* The error reply j has its API's shape; code is the OpenAI/own error code or the TEI
 * error_type. Checks named n (see XF_CHECK). */
static void check_shape(const char *n, enum err_shape shape, const char *code, json_t *j)
{
    json_t *e = json_object_get(j, "error");
    switch (shape) {
    case SHAPE_ANY:
        break;
    case SHAPE_OPENAI:
        if (XF_CHECK(n, json_is_object(e))) {
            XF_CHECK(n, json_is_string(json_object_get(e, "message")));
            XF_CHECK(n, json_is_string(json_object_get(e, "type")));
            XF_CHECK_STR(n, json_string_value(json_object_get(e, "code")), code);
        }
        break;
    case SHAPE_TEI:
        XF_CHECK(n, json_is_string(e));
        XF_CHECK_STR(n, json_string_value(json_object_get(j, "error_type")), code);
        break;
    case SHAPE_KSERVE:
        XF_CHECK(n, json_is_string(e));
        break;
    case SHAPE_OWN:
        if (XF_CHECK(n, json_is_object(e))) {
            XF_CHECK_STR(n, json_string_value(json_object_get(e, "code")), code);
            XF_CHECK(n, json_is_string(json_object_get(e, "message")));
        }
        break;
    }
}

/* The same, asserted at once for a single reply (named by the caller's line). */
#define CHECK_SHAPE(j, shape, code) expect_shape((j), (shape), (code), __LINE__)

static void expect_shape(json_t *j, enum err_shape shape, const char *code, int line)
{
    char name[48];
    snprintf(name, sizeof name, "reply checked at test_http.c:%d", line);
    check_shape(name, shape, code, j);
    xf_cases_end();
}

/* ---- health and KServe ---------------------------------------------------------------- */

static void test_health(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    json_t *j = fx_json(p, "GET", "/v2/health/live", NULL, NULL, 200);
    assert_true(json_is_true(json_object_get(j, "live")));
    json_decref(j);
    j = fx_json(p, "GET", "/v2/health/ready", NULL, NULL, 200);
    assert_true(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    /* Health needs no key even where one is configured. */
    j = fx_json(S[SRV_CLS3].port, "GET", "/v2/health/ready", NULL, NULL, 200);
    json_decref(j);
}

static void test_kserve(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    json_t *j = fx_json(p, "GET", "/v2", NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "xformd");
    json_decref(j);
    j = fx_json(p, "GET", "/v2/models/xformd-demo", NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "xformd-demo");
    json_t *out0 = json_array_get(json_object_get(j, "outputs"), 0);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(out0, "shape"), 1)),
                     D_MODEL);
    assert_true(json_is_string(json_object_get(json_object_get(j, "parameters"), "attention")));
    json_decref(j);
    j = fx_json(p, "GET", "/v2/models/xformd-demo/ready", NULL, NULL, 200);
    assert_true(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    j = fx_json(p, "GET", "/v2/models/nope", NULL, NULL, 404);
    CHECK_SHAPE(j, SHAPE_KSERVE, NULL);
    json_decref(j);
    j = fx_json(p, "POST", "/v2/models/nope/infer", NULL, "{}", 404);
    CHECK_SHAPE(j, SHAPE_KSERVE, NULL);
    json_decref(j);

    const char *body = "{\"id\":\"r1\",\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\","
                       "\"shape\":[2],\"data\":[\"hello world\",\"the quick brown fox\"]}]}";
    j = fx_json(p, "POST", "/v2/models/xformd-demo/infer", NULL, body, 200);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "r1");
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "embedding");
    assert_string_equal(json_string_value(json_object_get(o, "datatype")), "FP32");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(o, "shape"), 0)), 2);
    json_t *data = json_object_get(o, "data");
    assert_int_equal(json_array_size(data), 2 * (size_t)D_MODEL);
    /* Same numbers as the OpenAI route for the same text (same model, same normalisation). */
    json_t *e = fx_json(p, "POST", "/v1/embeddings", NULL,
                        "{\"input\":\"the quick brown fox\"}", 200);
    json_t *emb = json_object_get(json_array_get(json_object_get(e, "data"), 0), "embedding");
    double md = 0;
    for (int i = 0; i < D_MODEL; i++) {
        double a = json_number_value(json_array_get(data, (size_t)(D_MODEL + i)));
        double b = json_number_value(json_array_get(emb, (size_t)i));
        md = fmax(md, fabs(a - b));
    }
    /* Batched with another text vs alone: packed rows compute the same dot products; 1e-5
     * allows for a GEMM blocking that differs with the row count (float reassociation). */
    assert_true(md < 1e-5);
    json_decref(e);
    json_decref(j);

    /* Wrong datatype, shape mismatch, empty data, unknown output. */
    j = fx_json(p, "POST", "/v2/models/xformd-demo/infer", NULL,
                "{\"inputs\":[{\"name\":\"t\",\"datatype\":\"FP32\",\"shape\":[1],"
                "\"data\":[1.0]}]}", 400);
    CHECK_SHAPE(j, SHAPE_KSERVE, NULL);
    json_decref(j);
    j = fx_json(p, "POST", "/v2/models/xformd-demo/infer", NULL,
                "{\"inputs\":[{\"name\":\"t\",\"datatype\":\"BYTES\",\"shape\":[3],"
                "\"data\":[\"a\"]}]}", 400);
    json_decref(j);
    j = fx_json(p, "POST", "/v2/models/xformd-demo/infer", NULL,
                "{\"inputs\":[{\"name\":\"t\",\"datatype\":\"BYTES\",\"shape\":[0],"
                "\"data\":[]}]}", 400);
    json_decref(j);
    j = fx_json(p, "POST", "/v2/models/xformd-demo/infer", NULL,
                "{\"inputs\":[{\"name\":\"t\",\"datatype\":\"BYTES\",\"shape\":[1],"
                "\"data\":[\"a\"]}],\"outputs\":[{\"name\":\"logits\"}]}", 400);
    json_decref(j);
    /* logits on the classifier model */
    j = fx_json(S[SRV_CLS1].port, "POST", "/v2/models/xformd-demo/infer", NULL,
                "{\"inputs\":[{\"name\":\"t\",\"datatype\":\"BYTES\",\"shape\":[2,1],"
                "\"data\":[[\"a\"],[\"b c\"]]}],\"outputs\":[{\"name\":\"logits\"}]}", 200);
    o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "logits");
    assert_int_equal(json_array_size(json_object_get(o, "data")), 2);
    json_decref(j);
}

/* ---- OpenAI ------------------------------------------------------------------------- */

static void test_openai_embeddings(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    json_t *j = fx_json(p, "POST", "/v1/embeddings", NULL,
                        "{\"input\":\"hello world\",\"model\":\"xformd-demo\",\"user\":\"u1\"}",
                        200);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "xformd-demo");
    json_t *d0 = json_array_get(json_object_get(j, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "object")), "embedding");
    json_t *emb = json_object_get(d0, "embedding");
    assert_int_equal(json_array_size(emb), (size_t)D_MODEL);
    /* model.normalize defaults on: unit length up to float rounding over 64 terms. */
    assert_true(fabs(norm(emb) - 1.0) < 1e-4);
    json_t *usage = json_object_get(j, "usage");
    long long pt = json_integer_value(json_object_get(usage, "prompt_tokens"));
    assert_true(pt >= 3);   /* [CLS] + at least one word piece + [SEP] */
    assert_int_equal(pt, json_integer_value(json_object_get(usage, "total_tokens")));
    json_t *ref = json_deep_copy(emb);
    json_decref(j);

    /* A list: one item per text, in order; the first equals the single-text answer. */
    j = fx_json(p, "POST", "/v1/embeddings", NULL,
                "{\"input\":[\"hello world\",\"a b c\",\"zz\"],\"model\":\"xformd-demo\"}", 200);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(data, i), "index")),
                         (long long)i);
    emb = json_object_get(json_array_get(data, 0), "embedding");
    for (int i = 0; i < D_MODEL; i++)   /* see test_kserve for the tolerance */
        assert_true(fabs(json_number_value(json_array_get(emb, (size_t)i)) -
                         json_number_value(json_array_get(ref, (size_t)i))) < 1e-5);
    json_decref(j);

    /* base64: little-endian float32 of the same vector. */
    j = fx_json(p, "POST", "/v1/embeddings", NULL,
                "{\"input\":\"hello world\",\"encoding_format\":\"base64\"}", 200);
    const char *b64 = json_string_value(json_object_get(json_array_get(json_object_get(j,
                                                                                       "data"),
                                                                       0), "embedding"));
    assert_non_null(b64);
    assert_int_equal(strlen(b64), ((size_t)D_MODEL * 4 + 2) / 3 * 4);
    {
        static const char tab[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        unsigned char bytes[4096];
        size_t nb = 0;
        unsigned acc = 0;
        int bits = 0;
        for (const char *c = b64; *c && *c != '='; c++) {
            acc = (acc << 6) | (unsigned)(strchr(tab, *c) - tab);
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                bytes[nb++] = (unsigned char)(acc >> bits);
            }
        }
        assert_int_equal(nb, (size_t)D_MODEL * 4);
        float v[1024];
        memcpy(v, bytes, nb);
        for (int i = 0; i < D_MODEL; i++)   /* float text printed with 9 digits: exact */
            assert_true(fabs(v[i] - json_number_value(json_array_get(ref, (size_t)i))) < 1e-6);
    }
    json_decref(j);

    /* dimensions: truncated and renormalised. */
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":\"hello world\",\"dimensions\":8}",
                200);
    emb = json_object_get(json_array_get(json_object_get(j, "data"), 0), "embedding");
    assert_int_equal(json_array_size(emb), 8);
    assert_true(fabs(norm(emb) - 1.0) < 1e-5);
    json_decref(j);
    /* null means absent, like every other optional field: all dimensions. */
    j = fx_json(p, "POST", "/v1/embeddings", NULL,
                "{\"input\":\"x\",\"dimensions\":null}", 200);
    emb = json_object_get(json_array_get(json_object_get(j, "data"), 0), "embedding");
    assert_int_equal(json_array_size(emb), D_MODEL);
    json_decref(j);
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":\"x\",\"dimensions\":0}", 400);
    CHECK_SHAPE(j, SHAPE_OPENAI, "invalid_dimensions");
    json_decref(j);
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":\"x\",\"dimensions\":100000}",
                400);
    CHECK_SHAPE(j, SHAPE_OPENAI, "invalid_dimensions");
    json_decref(j);
    j = fx_json(p, "POST", "/v1/embeddings", NULL,
                "{\"input\":\"x\",\"encoding_format\":\"int8\"}", 400);
    CHECK_SHAPE(j, SHAPE_OPENAI, "invalid_field");
    json_decref(j);

    /* Token ids: one array and a list of arrays; out-of-range ids are a 400. */
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":[2,10,11,3]}", 200);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")), 4);
    json_decref(j);
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":[[2,10,3],[2,11,12,3]]}", 200);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")), 7);
    json_decref(j);
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":[2,99999999,3]}", 400);
    CHECK_SHAPE(j, SHAPE_OPENAI, "invalid_field");
    json_decref(j);
    j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":[[2,3],[]]}", 400);
    json_decref(j);
    json_decref(ref);
}

/* ---- TEI ---------------------------------------------------------------------------- */


/* CORS (http.cors_allow_origin): a browser's preflight on a route is answered 204 with the
 * route's methods and the headers a request may carry (Authorization included, and no API
 * key needed for the preflight itself); the answers carry Access-Control-Allow-Origin for an
 * allowed Origin only (the origin itself from a list, with Vary: Origin; "*" for any); without
 * the option OPTIONS stays 405 and no answer carries CORS headers. */
static void test_cors(void **state)
{
    (void)state;
    need_servers();
    char v[256];
    hc_resp_t r;
    const char *pre = "Origin: http://localhost:3000\r\n"
                      "Access-Control-Request-Method: POST\r\n"
                      "Access-Control-Request-Headers: authorization, content-type\r\n";
    /* cls3: a list, and an API key. */
    int p = S[SRV_CLS3].port;
    assert_int_equal(hc_do(p, "OPTIONS", "/v1/embeddings", pre, NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v),
                        "http://localhost:3000");
    assert_non_null(strstr(hc_header(&r, "Access-Control-Allow-Methods", v, sizeof v), "POST"));
    assert_non_null(strstr(hc_header(&r, "Access-Control-Allow-Headers", v, sizeof v),
                           "Authorization"));
    assert_string_equal(hc_header(&r, "Vary", v, sizeof v), "Origin");
    hc_free(&r);
    /* An origin not in the list: no Allow-Origin (the browser then refuses), still 204. */
    assert_int_equal(hc_do(p, "OPTIONS", "/embed", "Origin: https://evil.example\r\n"
                           "Access-Control-Request-Method: POST\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_null(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    hc_free(&r);
    /* The request itself: allowed origin gets the header, on errors too (a browser script
     * must be able to read a 401 or 429). */
    char extra[256];
    snprintf(extra, sizeof extra, "Origin: https://APP.example.com\r\nAuthorization: Bearer "
             "%s\r\n", KEY);
    assert_int_equal(hc_do(p, "POST", "/v1/embeddings", extra, "{\"input\":\"hi\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v),
                        "https://APP.example.com");
    assert_non_null(strstr(hc_header(&r, "Access-Control-Expose-Headers", v, sizeof v),
                           "Retry-After"));
    hc_free(&r);
    assert_int_equal(hc_do(p, "POST", "/v1/embeddings", "Origin: http://localhost:3000\r\n",
                           "{\"input\":\"hi\"}", &r), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v),
                        "http://localhost:3000");
    hc_free(&r);
    /* OPTIONS on no route: 404 as before. */
    assert_int_equal(hc_do(p, "OPTIONS", "/nope", pre, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    hc_free(&r);
    /* cls1: any origin. */
    p = S[SRV_CLS1].port;
    assert_int_equal(hc_do(p, "OPTIONS", "/health", "Origin: https://x.example\r\n"
                           "Access-Control-Request-Method: GET\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v), "*");
    assert_null(hc_header(&r, "Vary", v, sizeof v));
    hc_free(&r);
    assert_int_equal(hc_do(p, "GET", "/health", "Origin: https://x.example\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v), "*");
    hc_free(&r);
    /* plain: no CORS at all. */
    p = S[SRV_PLAIN].port;
    assert_int_equal(hc_do(p, "OPTIONS", "/v1/embeddings", pre, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_null(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    hc_free(&r);
    assert_int_equal(hc_do(p, "GET", "/health", "Origin: http://localhost:3000\r\n", NULL, &r),
                     0);
    assert_null(hc_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    hc_free(&r);
}

/* http.cors_allow_origin must be '*' or origins: anything else stops the start-up. */
static void test_cors_option_checked(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(xf_cors_check("", err, sizeof err), 0);
    assert_int_equal(xf_cors_check("*", err, sizeof err), 0);
    assert_int_equal(xf_cors_check("https://a.example:8443, http://[::1]:3000", err,
                                   sizeof err), 0);
    static const char *const bad[] = { "a.example", "https://a.example/path", "*,https://a.b",
                                       "https://", "ftp://a.example", "https://a.example,,",
                                       "https://a b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (xf_cors_check(bad[i], err, sizeof err) != -1)
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err, "http.cors_allow_origin"));
    }
    assert_null(xf_cors_allow("https://a.example", "https://a.example.evil"));
    assert_null(xf_cors_allow("https://a.example", NULL));
    assert_null(xf_cors_allow("", "https://a.example"));
    assert_string_equal(xf_cors_allow("http://b, https://a.example", "https://a.example"),
                        "https://a.example");
}

/* "\u0000" in a text (it turns up in text extracted from PDFs; LangChain sends such documents
 * as they are): OpenAI and TEI embed it, and BERT's clean_text drops U+0000, so "a\u0000b" is
 * embedded as "ab" — not refused (it was 400 invalid_json) and not cut at the NUL ("a"). In a
 * name or option field it is refused: those are compared as C strings. */
static void test_nul_in_text(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    static const char *const route[] = { "/v1/embeddings", "/embed" };
    static const char *const key[] = { "input", "inputs" };
    static const char *const text[] = { "alpha\\u0000beta gamma", "alphabeta gamma", "alpha" };
    for (int r = 0; r < 2; r++) {
        char body[3][96];
        for (int k = 0; k < 3; k++)
            snprintf(body[k], sizeof body[k], "{\"%s\":\"%s\",\"dimensions\":8}", key[r],
                     text[k]);
        json_t *v[3];
        for (int k = 0; k < 3; k++) {
            json_t *j = fx_json(p, "POST", route[r], NULL, body[k], 200);
            json_t *e = r == 0 ? json_object_get(json_array_get(json_object_get(j, "data"), 0),
                                                 "embedding")
                               : json_array_get(j, 0);
            v[k] = json_deep_copy(e);
            json_decref(j);
            assert_int_equal(json_array_size(v[k]), 8);
        }
        /* Same tokens, same batch shape: equal up to float rounding (see test_kserve). */
        double d_same = 0, d_cut = 0;
        for (size_t i = 0; i < 8; i++) {
            double a = json_number_value(json_array_get(v[0], i));
            d_same = fmax(d_same, fabs(a - json_number_value(json_array_get(v[1], i))));
            d_cut = fmax(d_cut, fabs(a - json_number_value(json_array_get(v[2], i))));
        }
        assert_true(d_same < 1e-5);
        assert_true(d_cut > 1e-3);   /* a different text: not the one cut at the NUL */
        for (int k = 0; k < 3; k++)
            json_decref(v[k]);
    }
    json_t *j = fx_json(p, "POST", "/v1/embeddings", NULL,
                        "{\"input\":\"a\",\"model\":\"xformd-demo\\u0000x\"}", 400);
    CHECK_SHAPE(j, SHAPE_OPENAI, "invalid_field");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "param")),
                        "model");
    json_decref(j);
}

static void test_tei_embed(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    json_t *j = fx_json(p, "POST", "/embed", NULL, "{\"inputs\":\"hello world\"}", 200);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 1);
    assert_int_equal(json_array_size(json_array_get(j, 0)), (size_t)D_MODEL);
    assert_true(fabs(norm(json_array_get(j, 0)) - 1.0) < 1e-4);
    json_decref(j);
    j = fx_json(p, "POST", "/embed", NULL,
                "{\"inputs\":[\"hello world\",\"second\"],\"normalize\":false}", 200);
    assert_int_equal(json_array_size(j), 2);
    /* Unnormalised pooled vectors of a random model are not unit length. */
    assert_true(fabs(norm(json_array_get(j, 0)) - 1.0) > 1e-3);
    json_decref(j);
}

static void test_tei_rerank(void **state)
{
    (void)state;
    need_servers();
    json_t *j = fx_json(S[SRV_PLAIN].port, "POST", "/rerank", NULL,
                        "{\"query\":\"q\",\"texts\":[\"a\"]}", 424);
    CHECK_SHAPE(j, SHAPE_TEI, "Backend");   /* TEI: 424 when the model is no reranker */
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "cross-encoder"));
    json_decref(j);

    int p = S[SRV_CLS1].port;
    j = fx_json(p, "POST", "/rerank", NULL,
                "{\"query\":\"what is a fox\",\"texts\":[\"a fox is an animal\",\"paris\","
                "\"blue sky\"],\"return_text\":true}", 200);
    assert_int_equal(json_array_size(j), 3);
    int seen[3] = { 0, 0, 0 };
    double prev = 2.0;
    for (size_t i = 0; i < 3; i++) {
        json_t *r = json_array_get(j, i);
        long long idx = json_integer_value(json_object_get(r, "index"));
        assert_true(idx >= 0 && idx < 3);
        seen[idx]++;
        double sc = json_number_value(json_object_get(r, "score"));
        assert_true(sc > 0.0 && sc < 1.0);   /* sigmoid of the logit */
        assert_true(sc <= prev);             /* sorted by score, best first */
        prev = sc;
        assert_true(json_is_string(json_object_get(r, "text")));
    }
    assert_int_equal(seen[0] + seen[1] + seen[2], 3);
    assert_true(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
    json_decref(j);
    j = fx_json(p, "POST", "/rerank", NULL, "{\"query\":\"q\",\"texts\":[]}", 400);
    CHECK_SHAPE(j, SHAPE_TEI, "Empty");
    json_decref(j);
    j = fx_json(p, "POST", "/rerank", NULL, "{\"texts\":[\"a\"]}", 422);   /* TEI */
    CHECK_SHAPE(j, SHAPE_TEI, "Validation");
    json_decref(j);
}

static void test_tei_predict(void **state)
{
    (void)state;
    need_servers();
    json_t *j = fx_json(S[SRV_PLAIN].port, "POST", "/predict", NULL, "{\"inputs\":\"x\"}", 424);
    CHECK_SHAPE(j, SHAPE_TEI, "Backend");   /* TEI: 424 when the model is no classifier */
    json_decref(j);
    int p = S[SRV_CLS3].port;
    j = fx_json(p, "POST", "/predict", AUTH, "{\"inputs\":\"i love it\"}", 200);
    assert_int_equal(json_array_size(j), 3);
    double sum = 0, prev = 2.0;
    for (size_t i = 0; i < 3; i++) {
        json_t *r = json_array_get(j, i);
        double sc = json_number_value(json_object_get(r, "score"));
        assert_true(sc <= prev);
        prev = sc;
        sum += sc;
        assert_true(json_is_string(json_object_get(r, "label")));
    }
    assert_true(fabs(sum - 1.0) < 1e-5);   /* softmax over 3 labels, float rounding */
    json_decref(j);
    /* A pair, then a batch of a single text and a pair. */
    j = fx_json(p, "POST", "/predict", AUTH, "{\"inputs\":[\"premise\",\"hypothesis\"]}", 200);
    assert_int_equal(json_array_size(j), 3);
    assert_true(json_is_object(json_array_get(j, 0)));
    json_decref(j);
    j = fx_json(p, "POST", "/predict", AUTH,
                "{\"inputs\":[\"one\",[\"two\",\"three\"],\"four\"],\"raw_scores\":true}", 200);
    assert_int_equal(json_array_size(j), 3);
    assert_int_equal(json_array_size(json_array_get(j, 1)), 3);
    json_decref(j);
    j = fx_json(p, "POST", "/predict", AUTH, "{\"inputs\":[1,2,3]}", 422);   /* TEI */
    CHECK_SHAPE(j, SHAPE_TEI, "Validation");
    json_decref(j);
}

/* ---- errors ------------------------------------------------------------------------- */

typedef struct err_case {
    const char *name;
    const char *method, *path, *extra, *body;
    int status;
    enum err_shape shape;
    const char *code;   /* OpenAI/own error code, TEI error_type; NULL for SHAPE_ANY/KSERVE */
} err_case_t;

#define CT_TEXT "Content-Type: text/plain\r\n"
#define CT_JSON_UTF8 "Content-Type: application/json; charset=utf-8\r\n"

static const err_case_t err_cases[] = {
    /* Bad JSON in each API's shape. */
    { "openai bad json", "POST", "/v1/embeddings", NULL, "{\"input\": ", 400, SHAPE_OPENAI,
      "invalid_json" },
    { "tei bad json", "POST", "/embed", NULL, "[1,2", 400, SHAPE_TEI, "Validation" },
    { "kserve bad json", "POST", "/v2/models/xformd-demo/infer", NULL, "nope", 400,
      SHAPE_KSERVE, NULL },
    { "empty body", "POST", "/embed", NULL, "", 400, SHAPE_ANY, NULL },
    { "array, not object", "POST", "/embed", NULL, "[\"not an object\"]", 400, SHAPE_ANY, NULL },
    /* Duplicate keys (deep nesting is a generated case in test_errors). */
    { "duplicate key", "POST", "/embed", NULL, "{\"inputs\":\"a\",\"inputs\":\"b\"}", 400,
      SHAPE_ANY, NULL },
    /* Wrong field types. */
    { "input is a number", "POST", "/v1/embeddings", NULL, "{\"input\":5}", 400, SHAPE_OPENAI,
      "invalid_field" },
    { "input list holds a number", "POST", "/v1/embeddings", NULL, "{\"input\":[\"a\",7]}",
      400, SHAPE_OPENAI, "invalid_field" },
    { "model is a number", "POST", "/v1/embeddings", NULL, "{\"input\":\"a\",\"model\":3}",
      400, SHAPE_ANY, NULL },
    { "normalize is a string", "POST", "/embed", NULL,
      "{\"inputs\":\"a\",\"normalize\":\"yes\"}", 422, SHAPE_TEI, "Validation" },
    { "truncate is a number", "POST", "/embed", NULL, "{\"inputs\":\"a\",\"truncate\":1}",
      422, SHAPE_TEI, "Validation" },
    { "input missing", "POST", "/v1/embeddings", NULL, "{\"nothing\":1}", 400, SHAPE_OPENAI,
      "missing_field" },
    /* Empty input list (too many texts is a generated case in test_errors). */
    { "empty input list", "POST", "/v1/embeddings", NULL, "{\"input\":[]}", 400, SHAPE_OPENAI,
      "empty_input" },
    /* Content type: text/plain is refused, JSON with a charset is fine. */
    { "text/plain body", "POST", "/embed", CT_TEXT, "{\"inputs\":\"a\"}", 415, SHAPE_TEI,
      "Validation" },
    { "json with charset", "POST", "/embed", CT_JSON_UTF8, "{\"inputs\":\"a\"}", 200,
      SHAPE_ANY, NULL },
    /* Unknown route, wrong method. */
    { "unknown route", "GET", "/nope", NULL, NULL, 404, SHAPE_OWN, "not_found" },
    { "GET on a POST route", "GET", "/v1/embeddings", NULL, NULL, 405, SHAPE_OPENAI,
      "method_not_allowed" },
    { "POST on a GET route", "POST", "/v2/health/live", NULL, "{}", 405, SHAPE_ANY, NULL },
    /* Invalid UTF-8 inside a JSON string. */
    { "tei invalid utf-8", "POST", "/embed", NULL, "{\"inputs\":\"ab\xff\xfe cd\"}", 400,
      SHAPE_TEI, "Tokenizer" },
    { "openai invalid utf-8", "POST", "/v1/embeddings", NULL, "{\"input\":\"\xc3\x28\"}", 400,
      SHAPE_OPENAI, "invalid_utf8" },
};

/* Send c to port: the status, then the shape of the reply. */
static void run_err_case(int port, const err_case_t *c)
{
    hc_resp_t r;
    if (!XF_CHECK(c->name, hc_do(port, c->method, c->path, c->extra, c->body, &r) == 0))
        return;
    if (!XF_CHECK_INT(c->name, r.status, c->status))
        print_message("# %s %s: %s\n", c->method, c->path, r.body);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    hc_free(&r);
    if (c->shape != SHAPE_ANY && XF_CHECK(c->name, j != NULL))
        check_shape(c->name, c->shape, c->code, j);
    json_decref(j);
}

static void test_errors(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++)
        run_err_case(p, &err_cases[i]);

    /* Deep nesting: 1000 levels of arrays. */
    char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"inputs\":");
    for (int i = 0; i < 1000; i++)
        deep[n++] = '[';
    for (int i = 0; i < 1000; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    run_err_case(p, &(err_case_t){ "1000 nested arrays", "POST", "/embed", NULL, deep, 400,
                                   SHAPE_TEI, "Validation" });

    /* Too many texts (request.max_texts = 16 on this server). */
    char body[1024] = "{\"input\":[";
    for (int i = 0; i < 17; i++)
        strcat(body, i ? ",\"t\"" : "\"t\"");
    strcat(body, "]}");
    run_err_case(p, &(err_case_t){ "17 texts, max 16", "POST", "/v1/embeddings", NULL, body, 400,
                                   SHAPE_OPENAI, "too_many_inputs" });
    xf_cases_end();
}

static void test_limits(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    hc_resp_t r;
    /* 413 on Content-Length before the body is sent: only the headers go out. */
    int fd = hc_connect(p);
    assert_true(fd >= 0);
    const char *head = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: 100000000\r\n\r\n";
    assert_int_equal(hc_send(fd, head, strlen(head)), 0);
    assert_int_equal(hc_read(fd, &r), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "max_body_bytes"));
    hc_free(&r);
    close(fd);

    /* A chunked body counted as it arrives: 70 KiB of chunks against a 64 KiB limit. */
    fd = hc_connect(p);
    assert_true(fd >= 0);
    head = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(hc_send(fd, head, strlen(head)), 0);
    char chunk[1024 + 16];
    memset(chunk, ' ', sizeof chunk);
    int hl = snprintf(chunk, sizeof chunk, "400\r\n");
    chunk[hl - 1] = '\n';
    memcpy(chunk + hl + 1024, "\r\n", 2);
    chunk[hl] = ' ';
    for (int i = 0; i < 70; i++)
        assert_int_equal(hc_send(fd, chunk, (size_t)hl + 1024 + 2), 0);
    assert_int_equal(hc_send(fd, "0\r\n\r\n", 5), 0);
    assert_int_equal(hc_read(fd, &r), 0);
    assert_int_equal(r.status, 413);
    hc_free(&r);
    close(fd);

    /* A text longer than the model's 512 positions: with "truncate": false TEI's 422
     * Validation naming the limit (400 on OpenAI's, 413 on the others); truncated when asked, and when the
     * request does not say (request.auto_truncate, as TEI's --auto-truncate). */
    size_t cap = 8 * 700 + 64;
    char *body = malloc(cap);
    char *q = body + sprintf(body, "{\"inputs\":\"");
    for (int i = 0; i < 700; i++)
        q += sprintf(q, "word%d ", i % 10);
    strcpy(q, "\",\"truncate\":false}");
    json_t *j = fx_json(p, "POST", "/embed", NULL, body, 422);
    CHECK_SHAPE(j, SHAPE_TEI, "Validation");
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "512"));
    json_decref(j);
    strcpy(q, "\",\"truncate\":true}");
    j = fx_json(p, "POST", "/embed", NULL, body, 200);
    assert_int_equal(json_array_size(json_array_get(j, 0)), (size_t)D_MODEL);
    json_t *cut = j;
    strcpy(q, "\"}");
    j = fx_json(p, "POST", "/embed", NULL, body, 200);
    assert_true(json_equal(j, cut));
    json_decref(j);
    json_decref(cut);
    free(body);

    /* Too many tokens in one request (request.max_tokens = 4096 here): 16 × ~500 tokens. */
    body = malloc(16 * (8 * 250 + 8) + 64);
    q = body + sprintf(body, "{\"input\":[");
    for (int t = 0; t < 16; t++) {
        q += sprintf(q, "%s\"", t ? "," : "");
        for (int i = 0; i < 150; i++)   /* 300-450 tokens: under 512, 16 of them > 4096 */
            q += sprintf(q, "w%d x ", i % 10);
        q += sprintf(q, "\"");
    }
    strcpy(q, "]}");
    j = fx_json(p, "POST", "/v1/embeddings", NULL, body, 400);   /* OpenAI's status for it */
    CHECK_SHAPE(j, SHAPE_OPENAI, "too_many_tokens");
    json_decref(j);
    free(body);
}

static void test_api_key(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_CLS3].port;
    hc_resp_t r;
    json_t *j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":\"a\"}", 401);
    CHECK_SHAPE(j, SHAPE_OPENAI, "invalid_api_key");   /* as api.openai.com answers */
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                        "invalid_request_error");
    json_decref(j);
    assert_int_equal(hc_do(p, "POST", "/embed", "Authorization: Bearer wrong\r\n",
                           "{\"inputs\":\"a\"}", &r), 0);
    assert_int_equal(r.status, 401);
    char v[64];
    assert_non_null(hc_header(&r, "WWW-Authenticate", v, sizeof v));
    hc_free(&r);
    j = fx_json(p, "POST", "/embed", "Authorization: Bearer " KEY "x\r\n", "{\"inputs\":\"a\"}",
                401);
    json_decref(j);
    j = fx_json(p, "GET", "/v1/stats", NULL, NULL, 401);
    CHECK_SHAPE(j, SHAPE_OWN, "unauthorized");
    json_decref(j);
    j = fx_json(p, "GET", "/v2/models/xformd-demo", NULL, NULL, 401);
    json_decref(j);
    j = fx_json(p, "POST", "/embed", AUTH, "{\"inputs\":\"a\"}", 200);
    json_decref(j);
    j = fx_json(p, "GET", "/v1/stats", AUTH, NULL, 200);
    assert_true(json_is_object(j));
    json_decref(j);
    /* Health and metrics stay open. */
    assert_int_equal(hc_do(p, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    j = fx_json(p, "GET", "/v2/health/live", NULL, NULL, 200);
    json_decref(j);
}

/* A request refused on its header (413 on Content-Length, 401, 415) by a client that sends the
 * whole body before reading, as Python's http.client and Node's fetch (the openai SDKs) do: the
 * body is read and dropped, then the answer comes and the connection stays usable. Closing with
 * the body unread made the client's send fail (EPIPE/ECONNRESET: "Connection error." in the
 * openai SDK) instead of showing the answer. 32 MiB is well past loopback's socket buffers, and
 * under the 64 MiB that is dropped before answering. With Expect: 100-continue the answer
 * still comes at once, before any body byte is sent. */
#define BIG_BODY (32u << 20)
static void send_refused_body(int port, const char *path, const char *extra, int want,
                              const char *body, const char *code, enum err_shape shape)
{
    int fd = hc_connect(port);
    assert_true(fd >= 0);
    char head[512];
    int n = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: x\r\n%s"
                     "Content-Length: %u\r\n\r\n", path, extra, BIG_BODY);
    assert_int_equal(hc_send(fd, head, (size_t)n), 0);
    assert_int_equal(hc_send(fd, body, BIG_BODY), 0);   /* the whole body goes through */
    hc_resp_t r;
    assert_int_equal(hc_read(fd, &r), 0);
    assert_int_equal(r.status, want);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECK_SHAPE(j, shape, code);
    json_decref(j);
    hc_free(&r);
    /* Framing intact: the next request on the connection is answered. */
    assert_int_equal(hc_request(fd, "GET", "/v2/health/live", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hc_free(&r);
    close(fd);
}

static void test_refused_body(void **state)
{
    (void)state;
    need_servers();
    char *body = malloc(BIG_BODY);
    assert_non_null(body);
    memset(body, ' ', BIG_BODY);
    send_refused_body(S[SRV_PLAIN].port, "/v1/embeddings", "Content-Type: application/json\r\n",
                      413, body, "body_too_large", SHAPE_OPENAI);
    send_refused_body(S[SRV_PLAIN].port, "/embed", "Content-Type: text/plain\r\n", 415, body,
                      "Validation", SHAPE_TEI);
    send_refused_body(S[SRV_CLS3].port, "/v1/embeddings",
                      "Content-Type: application/json\r\nAuthorization: Bearer wrong\r\n", 401,
                      body, "invalid_api_key", SHAPE_OPENAI);
    free(body);

    /* Expect: 100-continue: answered at once, no interim 100, nothing of the body sent. */
    int fd = hc_connect(S[SRV_PLAIN].port);
    assert_true(fd >= 0);
    const char *head = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Expect: 100-continue\r\nContent-Length: 1000000\r\n\r\n";
    assert_int_equal(hc_send(fd, head, strlen(head)), 0);
    hc_resp_t r;
    assert_int_equal(hc_read(fd, &r), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "max_body_bytes"));
    hc_free(&r);
    close(fd);
}

/* ---- load --------------------------------------------------------------------------- */

#define N_TEXTS 6
static const char *const texts[N_TEXTS] = {
    "short", "a slightly longer sentence with more words in it",
    "the quick brown fox jumps over the lazy dog again and again and again",
    "x y", "serving embeddings on the cpu with a smart batcher",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
};
static float alone[N_TEXTS][256];

typedef struct client_arg {
    int port;
    int idx;
    int n_ok;
    int n_match;
} client_arg_t;

static void *client_main(void *p)
{
    client_arg_t *a = p;
    int fd = hc_connect(a->port);   /* one keep-alive connection per client */
    for (int k = 0; k < 20; k++) {
        int t = (a->idx + k) % N_TEXTS;
        char body[512];
        snprintf(body, sizeof body, "{\"input\":\"%s\"}", texts[t]);
        hc_resp_t r;
        if (fd < 0 || hc_request(fd, "POST", "/v1/embeddings", NULL, body, strlen(body),
                                 &r) < 0) {
            hc_free(&r);
            if (fd >= 0)
                close(fd);
            fd = hc_connect(a->port);
            continue;
        }
        if (r.status == 200) {
            a->n_ok++;
            json_t *j = json_loadb(r.body, r.len, 0, NULL);
            json_t *e = json_object_get(json_array_get(json_object_get(j, "data"), 0),
                                        "embedding");
            double md = 0;
            for (int i = 0; i < D_MODEL; i++)
                md = fmax(md, fabs(json_number_value(json_array_get(e, (size_t)i)) -
                                   alone[t][i]));
            /* see test_kserve for the tolerance */
            if (json_array_size(e) == (size_t)D_MODEL && md < 1e-5)
                a->n_match++;
            json_decref(j);
        }
        hc_free(&r);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_PLAIN].port;
    for (int t = 0; t < N_TEXTS; t++) {
        char body[512];
        snprintf(body, sizeof body, "{\"input\":\"%s\"}", texts[t]);
        json_t *j = fx_json(p, "POST", "/v1/embeddings", NULL, body, 200);
        json_t *e = json_object_get(json_array_get(json_object_get(j, "data"), 0), "embedding");
        for (int i = 0; i < D_MODEL; i++)
            alone[t][i] = (float)json_number_value(json_array_get(e, (size_t)i));
        json_decref(j);
    }
    enum { NC = 6 };
    pthread_t th[NC];
    client_arg_t args[NC];
    for (int c = 0; c < NC; c++) {
        args[c] = (client_arg_t){ .port = p, .idx = c };
        assert_int_equal(pthread_create(&th[c], NULL, client_main, &args[c]), 0);
    }
    int ok = 0, match = 0;
    for (int c = 0; c < NC; c++) {
        pthread_join(th[c], NULL);
        ok += args[c].n_ok;
        match += args[c].n_match;
    }
    assert_int_equal(ok, NC * 20);
    assert_int_equal(match, NC * 20);
}

/* ---- metrics ------------------------------------------------------------------------ */

static char *get_metrics(int port)
{
    hc_resp_t r;
    assert_int_equal(hc_do(port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_non_null(hc_header(&r, "Content-Type", ct, sizeof ct));
    assert_non_null(strstr(ct, "text/plain"));
    return r.body;
}

#define M_EMBED "xformd_requests_total{route=\"/embed\",status=\"200\"}"
#define M_404 "xformd_requests_total{route=\"other\",status=\"404\"}"
#define M_400 "xformd_requests_total{route=\"/v1/embeddings\",status=\"400\"}"
#define M_BATCHES "xformd_batches_total"
#define M_BSEQ "xformd_batch_sequences_count"
#define M_TOTAL "xformd_request_duration_seconds_count{stage=\"total\"}"

static long long m0(const char *text, const char *series)
{
    long long v = fx_metric(text, series);
    return v < 0 ? 0 : v;   /* a series never touched is absent */
}

static void test_metrics(void **state)
{
    (void)state;
    need_servers();
    int p = S[SRV_CLS1].port;
    /* Metrics are process-wide and the loops keep updating them: compare before and after,
     * once every earlier request's completion has landed. */
    for (int i = 0; i < 200 && (xf_server_inflight(S[0].s) || xf_server_inflight(S[1].s) ||
                                xf_server_inflight(S[2].s)); i++)
        usleep(10000);
    char *t0 = get_metrics(p);
    for (int i = 0; i < 5; i++) {
        json_t *j = fx_json(p, "POST", "/embed", NULL, "{\"inputs\":[\"a b\",\"c\"]}", 200);
        json_decref(j);
    }
    for (int i = 0; i < 3; i++) {
        json_t *j = fx_json(p, "GET", "/missing", NULL, NULL, 404);
        json_decref(j);
    }
    json_t *j = fx_json(p, "POST", "/v1/embeddings", NULL, "{\"input\":[]}", 400);
    json_decref(j);
    /* The completed callback counts a request after its reply is written: poll briefly.
     * The /metrics scrapes themselves count under route "/metrics" only. */
    long long embed = -1, nf = -1, bad = -1;
    char *text = NULL;
    for (int tries = 0; tries < 100; tries++) {
        free(text);
        text = get_metrics(p);
        embed = m0(text, M_EMBED) - m0(t0, M_EMBED);
        nf = m0(text, M_404) - m0(t0, M_404);
        bad = m0(text, M_400) - m0(t0, M_400);
        if (embed == 5 && nf == 3 && bad == 1)
            break;
        usleep(10000);
    }
    assert_int_equal(embed, 5);
    assert_int_equal(nf, 3);
    assert_int_equal(bad, 1);
    long long batches = m0(text, M_BATCHES) - m0(t0, M_BATCHES);
    assert_true(batches >= 1 && batches <= 5);   /* 5 sequential requests: ≤ 5 batches */
    assert_int_equal(m0(text, M_BSEQ) - m0(t0, M_BSEQ), batches);
    assert_int_equal(m0(text, M_TOTAL) - m0(t0, M_TOTAL), 5);
    free(text);
    free(t0);

    j = fx_json(p, "GET", "/v1/stats", NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "model"), "name")),
                        "xformd-demo");
    assert_true(json_is_object(json_object_get(j, "batcher")));
    json_decref(j);
}

/* Hostile input: mutated request bodies on every POST route (flipped and random bytes, cuts,
 * wrong types, huge numbers), garbage request lines and headers. Every answer is a 2xx or a
 * 4xx — never a 5xx — and the server keeps answering. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void test_hostile(void **state)
{
    (void)state;
    need_servers();
    static const struct { const char *path; const char *body; } seeds[] = {
        { "/v1/embeddings", "{\"input\":[\"hello world\",\"x\"],\"encoding_format\":\"base64\","
                            "\"dimensions\":8,\"model\":\"m\",\"user\":\"u\"}" },
        { "/v1/embeddings", "{\"input\":[[2,10,11,3],[2,12,3]]}" },
        { "/embed", "{\"inputs\":[\"a b c\",\"d\"],\"normalize\":false,\"truncate\":true}" },
        { "/rerank", "{\"query\":\"q\",\"texts\":[\"a\",\"b\"],\"raw_scores\":true,"
                     "\"return_text\":true}" },
        { "/predict", "{\"inputs\":[\"one\",[\"two\",\"three\"]],\"raw_scores\":false}" },
        { "/v2/models/xformd-demo/infer", "{\"id\":\"x\",\"inputs\":[{\"name\":\"t\","
                                          "\"datatype\":\"BYTES\",\"shape\":[2],"
                                          "\"data\":[\"a\",\"b\"]}],"
                                          "\"outputs\":[{\"name\":\"embedding\"}]}" },
    };
    static const char junk[] = "{}[]\",:0123456789-eE.\\u\xff\xc3\x80 tfn\x01\x7f";
    int n_ok = 0, n_4xx = 0;
    for (int it = 0; it < 600; it++) {
        int srv = (int)(rnd() % SRV_N);
        int sd = (int)(rnd() % (sizeof seeds / sizeof seeds[0]));
        char body[1024];
        size_t n = strlen(seeds[sd].body);
        memcpy(body, seeds[sd].body, n);
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = n ? rnd() % n : 0;
            switch (rnd() % 4) {
            case 0:   /* replace a byte */
                body[at] = junk[rnd() % (sizeof junk - 1)];
                break;
            case 1:   /* cut */
                n = at;
                break;
            case 2:   /* insert a byte */
                if (n + 1 < sizeof body) {
                    memmove(body + at + 1, body + at, n - at);
                    body[at] = junk[rnd() % (sizeof junk - 1)];
                    n++;
                }
                break;
            default:  /* a huge number */
                if (n + 24 < sizeof body) {
                    memmove(body + at + 20, body + at, n - at);
                    memcpy(body + at, "99999999999999999999", 20);
                    n += 20;
                }
            }
        }
        body[n] = '\0';
        hc_resp_t r;
        int fd = hc_connect(S[srv].port);
        assert_true(fd >= 0);
        int rc = hc_request(fd, "POST", seeds[sd].path, srv == SRV_CLS3 ? AUTH : NULL, body, n,
                            &r);
        close(fd);
        assert_int_equal(rc, 0);
        if (r.status >= 500)
            print_message("# %s %s -> %d %s\n", seeds[sd].path, body, r.status, r.body);
        assert_true(r.status >= 200 && r.status < 500);
        if (r.status < 300)
            n_ok++;
        else
            n_4xx++;
        hc_free(&r);
    }
    assert_true(n_4xx > 0);   /* the mutations did hit the error paths */
    /* Garbage request lines and headers: MHD answers 4xx or closes; never a crash. */
    static const char *const raw[] = {
        "GARBAGE\r\n\r\n",
        "GET /v2/health/live HTTP/9.9\r\n\r\n",
        "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v2/models/%00/ready HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        int fd = hc_connect(S[SRV_PLAIN].port);
        assert_true(fd >= 0);
        assert_int_equal(hc_send(fd, raw[i], strlen(raw[i])), 0);
        shutdown(fd, SHUT_WR);
        hc_resp_t r;
        /* 505 is MHD's answer to an unknown HTTP version: a client error too. */
        if (hc_read(fd, &r) == 0) {
            if (!(r.status >= 400 && r.status < 500) && r.status != 505)
                print_message("# raw %zu -> %d\n", i, r.status);
            assert_true((r.status >= 400 && r.status < 500) || r.status == 505);
        }
        hc_free(&r);
        close(fd);
    }
    for (int i = 0; i < SRV_N; i++) {
        json_t *j = fx_json(S[i].port, "GET", "/v2/health/ready", NULL, NULL, 200);
        json_decref(j);
    }
    print_message("# hostile: %d answered 2xx, %d 4xx\n", n_ok, n_4xx);
}

static void test_stop(void **state)
{
    (void)state;
    fx_stop_all(S, SRV_N);
}

XF_TEST_MAIN(cmocka_unit_test(test_health), cmocka_unit_test(test_kserve),
             cmocka_unit_test(test_openai_embeddings), cmocka_unit_test(test_nul_in_text),
             cmocka_unit_test(test_tei_embed),
             cmocka_unit_test(test_tei_rerank), cmocka_unit_test(test_tei_predict),
             cmocka_unit_test(test_errors), cmocka_unit_test(test_limits),
             cmocka_unit_test(test_api_key), cmocka_unit_test(test_refused_body),
             cmocka_unit_test(test_cors), cmocka_unit_test(test_cors_option_checked),
             cmocka_unit_test(test_concurrent),
             cmocka_unit_test(test_metrics), cmocka_unit_test(test_hostile),
             cmocka_unit_test(test_stop))
