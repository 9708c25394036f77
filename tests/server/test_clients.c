/* The requests real clients send, replayed byte for byte as their sources build them, and the
 * replies read the way those clients read them (the clients themselves are not run here):
 *   openai-python Embeddings.create: {"input", "model", "encoding_format": "base64"} when the
 *     caller gives no format (the SDK then decodes each embedding from base64 as little-endian
 *     float32); "float", "dimensions" and "user" when given.
 *   LangChain OpenAIEmbeddings: the SDK call above with "input" as lists of token ids (its
 *     default check_embedding_ctx_length splits texts with tiktoken) or as strings.
 *   huggingface_hub InferenceClient (and LangChain's HuggingFaceEndpointEmbeddings on it)
 *     given the server's URL: POST / {"inputs": ..., "parameters": {...}} for
 *     feature_extraction (read as a float32 array), sentence_similarity (a list of floats)
 *     and text_classification (a list of {label, score}).
 *   TEI's own routes: /tokenize, /embed_all, /vertex, /invocations, /rerank, with TEI's
 *     statuses and {"error", "error_type"} bodies.
 * Real daemon on 127.0.0.1, port 0. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xf_test.h"

#include "server/server.h"
#include "server_fixture.h"

static fx_srv_t S[FX_DEMO_N];
static int D_MODEL;
static char MODEL[256];

static void need_servers(void)
{
    if (S[0].s)
        return;
    fx_demo_start(S, "cl", NULL);
    D_MODEL = xf_model_info(xf_server_model(S[0].s))->d_model;
    /* the model name a client learns from GET /v1/models */
    json_t *m = fx_json(S[FX_PLAIN].port, "GET", "/v1/models", NULL, NULL, 200);
    const char *id = json_string_value(json_object_get(json_array_get(json_object_get(m, "data"),
                                                                      0), "id"));
    assert_non_null(id);
    snprintf(MODEL, sizeof MODEL, "%s", id);
    json_decref(m);
}

/* POST a JSON value (stolen) and parse the reply, asserting the status. */
static json_t *post(int port, const char *path, json_t *body, int want)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_non_null(text);
    json_t *j = fx_json(port, "POST", path, NULL, text, want);
    free(text);
    assert_non_null(j);
    return j;
}

/* TEI's error body: {"error": string, "error_type": type}. */
static void tei_error(json_t *j, const char *type)
{
    assert_true(json_is_string(json_object_get(j, "error")));
    assert_string_equal(json_string_value(json_object_get(j, "error_type")), type);
    json_decref(j);
}

/* Base64 (standard alphabet, padded) of little-endian float32 values, as the OpenAI SDK reads
 * it: returns the number of floats, or -1 when the text is not whole base64 of float32s. */
static int b64_floats(const char *s, float *out, int cap)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s), nb = 0;
    if (n % 4)
        return -1;
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char *p = s[i + k] == '=' ? NULL : strchr(tab, s[i + k]);
            if (s[i + k] == '=')
                pad++;
            else if (!p || !s[i + k] || pad)
                return free(buf), -1;
            v = v << 6 | (unsigned)(p ? p - tab : 0);
        }
        unsigned char q[3] = { (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                               (unsigned char)v };
        memcpy(buf + nb, q, (size_t)(3 - pad));
        nb += (size_t)(3 - pad);
    }
    int m = (int)(nb / 4);
    if (nb % 4 || m > cap)
        return free(buf), -1;
    for (int i = 0; i < m; i++) {
        uint32_t u = (uint32_t)buf[4 * i] | (uint32_t)buf[4 * i + 1] << 8 |
                     (uint32_t)buf[4 * i + 2] << 16 | (uint32_t)buf[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }
    free(buf);
    return m;
}

/* The fields of CreateEmbeddingResponse the SDK's model requires, with their types. */
static void check_openai_shape(json_t *r, size_t n)
{
    assert_string_equal(json_string_value(json_object_get(r, "object")), "list");
    assert_true(json_is_string(json_object_get(r, "model")));
    json_t *u = json_object_get(r, "usage");
    assert_true(json_is_integer(json_object_get(u, "prompt_tokens")));
    assert_true(json_is_integer(json_object_get(u, "total_tokens")));
    json_t *data = json_object_get(r, "data");
    assert_int_equal(json_array_size(data), n);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(data, i);
        assert_string_equal(json_string_value(json_object_get(e, "object")), "embedding");
        assert_int_equal(json_integer_value(json_object_get(e, "index")), (json_int_t)i);
    }
}

static json_t *emb(json_t *r, size_t i)
{
    return json_object_get(json_array_get(json_object_get(r, "data"), i), "embedding");
}

/* openai-python: the default call asks for base64; decoded as little-endian float32 the
 * vectors are the "float" reply's exactly (the float text reads back to the same float32). */
static void test_openai_sdk(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    json_t *b64 = post(p, "/v1/embeddings",
                       json_pack("{s:[s,s],s:s,s:s}", "input", "hello world", "a second text",
                                 "model", MODEL, "encoding_format", "base64"), 200);
    json_t *flt = post(p, "/v1/embeddings",
                       json_pack("{s:[s,s],s:s,s:s}", "input", "hello world", "a second text",
                                 "model", MODEL, "encoding_format", "float"), 200);
    check_openai_shape(b64, 2);
    check_openai_shape(flt, 2);
    float *v = malloc((size_t)D_MODEL * 2 * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < 2; i++) {
        assert_true(json_is_string(emb(b64, i)));
        assert_int_equal(b64_floats(json_string_value(emb(b64, i)), v, 2 * D_MODEL), D_MODEL);
        json_t *f = emb(flt, i);
        assert_int_equal(json_array_size(f), (size_t)D_MODEL);
        for (int c = 0; c < D_MODEL; c++)
            if (v[c] != (float)json_number_value(json_array_get(f, (size_t)c)))
                fail_msg("input %zu [%d]: base64 %.9g, float %.9g", i, c, v[c],
                         json_number_value(json_array_get(f, (size_t)c)));
    }
    json_decref(b64);
    json_decref(flt);
    /* dimensions and user, one string input */
    json_t *r = post(p, "/v1/embeddings",
                     json_pack("{s:s,s:s,s:i,s:s,s:s}", "input", "hello", "model", MODEL,
                               "dimensions", 8, "user", "user-1", "encoding_format", "base64"),
                     200);
    check_openai_shape(r, 1);
    assert_int_equal(b64_floats(json_string_value(emb(r, 0)), v, 2 * D_MODEL), 8);
    double ss = 0;
    for (int c = 0; c < 8; c++)
        ss += (double)v[c] * v[c];
    assert_true(fabs(ss - 1.0) < 1e-5);   /* cut, then unit norm */
    json_decref(r);
    free(v);
}

/* LangChain OpenAIEmbeddings: with check_embedding_ctx_length (its default) "input" is lists
 * of token ids, taken as given (no [CLS]/[SEP] added, as OpenAI and TEI); ids outside the
 * model's vocabulary (tiktoken's) are a clear 400 on "input". */
static void test_langchain_openai(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    json_t *r = post(p, "/v1/embeddings",
                     json_pack("{s:[[i,i,i],[i,i]],s:s,s:s}", "input", 11, 59, 12, 30, 31,
                               "model", MODEL, "encoding_format", "base64"), 200);
    check_openai_shape(r, 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "usage"),
                                                        "prompt_tokens")), 5);
    json_t *tei = post(p, "/embed", json_pack("{s:[[i,i,i],[i,i]]}", "inputs", 11, 59, 12, 30,
                                              31), 200);
    float *v = malloc((size_t)D_MODEL * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(b64_floats(json_string_value(emb(r, i)), v, D_MODEL), D_MODEL);
        json_t *row = json_array_get(tei, i);
        for (int c = 0; c < D_MODEL; c++)
            assert_true(fabsf(v[c] - (float)json_number_value(json_array_get(row, (size_t)c))) <
                        1e-6f);
    }
    free(v);
    json_decref(r);
    json_decref(tei);
    /* check_embedding_ctx_length=False: the texts themselves */
    r = post(p, "/v1/embeddings", json_pack("{s:[s,s],s:s,s:s}", "input", "doc one", "doc two",
                                            "model", MODEL, "encoding_format", "base64"), 200);
    check_openai_shape(r, 2);
    json_decref(r);
    /* tiktoken's cl100k ids are not this vocabulary's */
    r = post(p, "/v1/embeddings", json_pack("{s:[[i,i]],s:s,s:s}", "input", 15339, 100257,
                                            "model", MODEL, "encoding_format", "base64"), 400);
    json_t *e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "param")), "input");
    assert_true(strstr(json_string_value(json_object_get(e, "message")), "token id") != NULL);
    json_decref(r);
}

static double maxdiff(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return fabs(json_number_value(a) - json_number_value(b));
    if (json_is_object(a) && json_is_object(b)) {
        /* the same keys; numbers within the returned distance, anything else equal */
        if (json_object_size(a) != json_object_size(b))
            return INFINITY;
        double m = 0;
        const char *k;
        json_t *va;
        json_object_foreach(a, k, va) {
            json_t *vb = json_object_get(b, k);
            double d = json_is_number(va) || json_is_array(va) || json_is_object(va)
                           ? maxdiff(va, vb)
                           : json_equal(va, vb) ? 0 : INFINITY;
            m = d > m ? d : m;
        }
        return m;
    }
    if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) != json_array_size(b))
        return INFINITY;
    double m = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        double d = maxdiff(json_array_get(a, i), json_array_get(b, i));
        m = d > m ? d : m;
    }
    return m;
}

/* huggingface_hub InferenceClient(model=<server URL>): every task posts {"inputs",
 * "parameters"} to the URL itself. feature_extraction reads [[f, ...]] (TEI's /embed; TEI
 * reads no "parameters" there), sentence_similarity a list of floats, text_classification
 * a list whose items have "label" and "score". */
static void test_hf_inference_client(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    json_t *fe = post(p, "/", json_pack("{s:s,s:{}}", "inputs", "hello world", "parameters"),
                      200);
    json_t *ref = post(p, "/embed", json_pack("{s:s}", "inputs", "hello world"), 200);
    assert_int_equal(json_array_size(fe), 1);
    assert_int_equal(json_array_size(json_array_get(fe, 0)), (size_t)D_MODEL);
    assert_true(json_equal(fe, ref));
    json_decref(fe);
    fe = post(p, "/", json_pack("{s:[s,s],s:{s:b,s:b,s:s}}", "inputs", "hello world", "b",
                                "parameters", "normalize", 0, "truncate", 1,
                                "truncation_direction", "left"), 200);
    assert_int_equal(json_array_size(fe), 2);
    assert_true(json_equal(json_array_get(fe, 0), json_array_get(ref, 0)));
    json_decref(fe);
    json_decref(ref);
    /* sentence_similarity */
    json_t *ss = post(p, "/", json_pack("{s:{s:s,s:[s,s]},s:{}}", "inputs", "source_sentence",
                                        "hello world", "sentences", "hello world", "other words",
                                        "parameters"), 200);
    json_t *sim = post(p, "/similarity", json_pack("{s:{s:s,s:[s,s]}}", "inputs",
                                                   "source_sentence", "hello world", "sentences",
                                                   "hello world", "other words"), 200);
    assert_int_equal(json_array_size(ss), 2);
    assert_true(json_is_number(json_array_get(ss, 0)));
    assert_true(fabs(json_number_value(json_array_get(ss, 0)) - 1.0) < 1e-5);
    assert_true(json_equal(ss, sim));
    json_decref(ss);
    json_decref(sim);
    /* text_classification on a classifier */
    json_t *tc = post(S[FX_CLS3].port, "/", json_pack("{s:s,s:{}}", "inputs", "hello world",
                                                      "parameters"), 200);
    assert_int_equal(json_array_size(tc), 3);
    double sum = 0, prev = 2;
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(tc, i);
        assert_true(json_is_string(json_object_get(e, "label")));
        double sc = json_number_value(json_object_get(e, "score"));
        assert_true(sc <= prev);
        prev = sc;
        sum += sc;
    }
    assert_true(fabs(sum - 1.0) < 1e-5);
    json_decref(tc);
}

/* TEI /tokenize: [[{"id", "text", "special", "start", "stop"}]] per input; the text of an
 * ordinary token is its bytes of the input, a special one's is its name with null offsets. */
static void test_tei_tokenize(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    const char *in = "Hello, world";
    json_t *t = post(p, "/tokenize", json_pack("{s:s}", "inputs", in), 200);
    assert_int_equal(json_array_size(t), 1);
    json_t *toks = json_array_get(t, 0);
    size_t n = json_array_size(toks);
    assert_true(n >= 4);
    for (size_t k = 0; k < n; k++) {
        json_t *e = json_array_get(toks, k);
        assert_true(json_is_integer(json_object_get(e, "id")));
        int special = json_is_true(json_object_get(e, "special"));
        assert_int_equal(special, k == 0 || k == n - 1);
        const char *text = json_string_value(json_object_get(e, "text"));
        assert_non_null(text);
        if (special) {
            assert_string_equal(text, k == 0 ? "[CLS]" : "[SEP]");
            assert_true(json_is_null(json_object_get(e, "start")));
            assert_true(json_is_null(json_object_get(e, "stop")));
            continue;
        }
        json_int_t b = json_integer_value(json_object_get(e, "start"));
        json_int_t s = json_integer_value(json_object_get(e, "stop"));
        assert_true(b >= 0 && s > b && s <= (json_int_t)strlen(in));
        assert_int_equal(strlen(text), (size_t)(s - b));
        assert_memory_equal(text, in + b, (size_t)(s - b));
    }
    /* the ids are what /embed computes on: the same ids as token ids give the same vector */
    json_t *ids = json_array();
    for (size_t k = 0; k < n; k++)
        json_array_append(ids, json_object_get(json_array_get(toks, k), "id"));
    json_t *a = post(p, "/embed", json_pack("{s:[o]}", "inputs", ids), 200);
    json_t *b = post(p, "/embed", json_pack("{s:s}", "inputs", in), 200);
    assert_true(maxdiff(a, b) == 0);
    json_decref(a);
    json_decref(b);
    /* no special tokens, a batch */
    json_t *t2 = post(p, "/tokenize", json_pack("{s:[s,s],s:b}", "inputs", in, "b",
                                                "add_special_tokens", 0), 200);
    assert_int_equal(json_array_size(t2), 2);
    assert_int_equal(json_array_size(json_array_get(t2, 0)), n - 2);
    assert_true(json_equal(json_array_get(json_array_get(t2, 0), 0), json_array_get(toks, 1)));
    json_decref(t2);
    json_decref(t);
    /* TEI's errors */
    tei_error(post(p, "/tokenize", json_pack("{s:[]}", "inputs"), 400), "Empty");
    tei_error(post(p, "/tokenize", json_pack("{s:[i]}", "inputs", 5), 422), "Validation");
    tei_error(post(p, "/tokenize", json_pack("{s:s,s:s}", "inputs", "x", "prompt_name", "q"),
                   422), "Validation");
    json_t *many = json_array();
    for (int i = 0; i < 2049; i++)   /* request.max_texts (TEI: max_client_batch_size) */
        json_array_append_new(many, json_string("a"));
    tei_error(post(p, "/tokenize", json_pack("{s:o}", "inputs", many), 422), "Validation");

    /* prompt_name: the prompt goes first and the offsets are in the prompted text, as TEI */
    fx_srv_t ps = { 0 };
    xf_server_opts_t o;
    assert_int_equal(fx_write_model("cl_prompts", 0, ps.dir, sizeof ps.dir), 0);
    char path[1200];
    snprintf(path, sizeof path, "%s/config_sentence_transformers.json", ps.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"prompts\":{\"query\":\"query: \"}}", f);
    fclose(f);
    fx_opts(&o, ps.dir);
    fx_launch(&ps, &o);
    t = post(ps.port, "/tokenize", json_pack("{s:s,s:s,s:b}", "inputs", "b", "prompt_name",
                                             "query", "add_special_tokens", 0), 200);
    json_t *pt = post(ps.port, "/tokenize", json_pack("{s:s,s:b}", "inputs", "query: b",
                                                      "add_special_tokens", 0), 200);
    assert_true(json_equal(t, pt));
    toks = json_array_get(t, 0);
    json_t *last = json_array_get(toks, json_array_size(toks) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "text")), "b");
    assert_int_equal(json_integer_value(json_object_get(last, "start")), 7);
    json_decref(t);
    json_decref(pt);
    fx_stop_all(&ps, 1);
}

/* TEI /embed_all: the last hidden state of every token ([CLS] and [SEP] too), as many rows as
 * /tokenize has tokens; pooling them as the model does gives /embed's vector. */
static void test_tei_embed_all(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    json_t *all = post(p, "/embed_all", json_pack("{s:[s,s]}", "inputs", "hello world",
                                                  "a b c d"), 200);
    json_t *tok = post(p, "/tokenize", json_pack("{s:[s,s]}", "inputs", "hello world",
                                                 "a b c d"), 200);
    json_t *info = fx_json(p, "GET", "/info", NULL, NULL, 200);
    const char *pool = json_string_value(json_object_get(json_object_get(
        json_object_get(info, "model_type"), "embedding"), "pooling"));
    assert_non_null(pool);
    json_t *emb = post(p, "/embed", json_pack("{s:[s,s],s:b}", "inputs", "hello world",
                                              "a b c d", "normalize", 0), 200);
    assert_int_equal(json_array_size(all), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *rows = json_array_get(all, i);
        size_t n = json_array_size(rows);
        assert_int_equal(n, json_array_size(json_array_get(tok, i)));
        json_t *pooled = json_array();
        for (int c = 0; c < D_MODEL; c++) {
            double s = 0;
            for (size_t k = 0; k < n; k++) {
                json_t *row = json_array_get(rows, k);
                assert_int_equal(json_array_size(row), (size_t)D_MODEL);
                s += json_number_value(json_array_get(row, (size_t)c));
            }
            double v = !strcmp(pool, "mean") ? s / (double)n
                       : json_number_value(json_array_get(json_array_get(rows, 0), (size_t)c));
            json_array_append_new(pooled, json_real(v));
        }
        /* the demo models pool by mean or [CLS] */
        assert_true(!strcmp(pool, "mean") || !strcmp(pool, "cls"));
        double d = maxdiff(pooled, json_array_get(emb, i));
        print_message("# /embed_all input %zu: %zu tokens, %s pooling differs from /embed by "
                      "%g\n", i, n, pool, d);
        if (d > 1e-5)
            fail_msg("input %zu: pooled rows differ from /embed by %g (%s)", i, d, pool);
        json_decref(pooled);
    }
    json_decref(all);
    json_decref(tok);
    json_decref(info);
    json_decref(emb);
    tei_error(post(p, "/embed_all", json_pack("{s:[]}", "inputs"), 400), "Empty");
}

/* TEI /vertex: {"instances": [request, ...]} -> {"predictions": [that route's reply, ...]}; a
 * rerank-shaped instance reranks, any other embeds (or predicts on a classifier); each
 * instance keeps its own options. */
static void test_tei_vertex(void **state)
{
    (void)state;
    need_servers();
    int p = S[FX_PLAIN].port;
    json_t *v = post(p, "/vertex", json_pack("{s:[{s:s},{s:[s,s],s:b,s:i},{s:[i,i]}]}",
                                             "instances", "inputs", "hello world", "inputs",
                                             "a", "b c", "normalize", 0, "dimensions", 4,
                                             "inputs", 11, 12), 200);
    json_t *pr = json_object_get(v, "predictions");
    assert_int_equal(json_array_size(pr), 3);
    json_t *e0 = post(p, "/embed", json_pack("{s:s}", "inputs", "hello world"), 200);
    json_t *e1 = post(p, "/embed", json_pack("{s:[s,s],s:b,s:i}", "inputs", "a", "b c",
                                             "normalize", 0, "dimensions", 4), 200);
    json_t *e2 = post(p, "/embed", json_pack("{s:[i,i]}", "inputs", 11, 12), 200);
    assert_true(maxdiff(json_array_get(pr, 0), e0) < 1e-6);
    assert_true(maxdiff(json_array_get(pr, 1), e1) < 1e-6);
    assert_true(maxdiff(json_array_get(pr, 2), e2) < 1e-6);
    json_decref(e0);
    json_decref(e1);
    json_decref(e2);
    json_decref(v);
    /* a cross-encoder: rerank and predict instances */
    int q = S[FX_CLS1].port;
    v = post(q, "/vertex", json_pack("{s:[{s:s,s:[s,s],s:b},{s:s,s:b}]}", "instances", "query",
                                     "what", "texts", "a b", "c", "return_text", 1, "inputs",
                                     "x y", "raw_scores", 1), 200);
    pr = json_object_get(v, "predictions");
    json_t *rr = post(q, "/rerank", json_pack("{s:s,s:[s,s],s:b}", "query", "what", "texts",
                                              "a b", "c", "return_text", 1), 200);
    json_t *pp = post(q, "/predict", json_pack("{s:s,s:b}", "inputs", "x y", "raw_scores", 1),
                      200);
    json_t *r0 = json_array_get(json_array_get(pr, 0), 0);
    assert_true(json_is_integer(json_object_get(r0, "index")));
    assert_true(json_is_string(json_object_get(r0, "text")));
    /* Scores within 1e-6, as the embeddings above: the instances run as one batch, and a
     * GEMM over more rows may round differently (OpenBLAS under XF_CPU=generic). */
    assert_true(maxdiff(json_array_get(pr, 0), rr) < 1e-6);
    assert_true(maxdiff(json_array_get(pr, 1), pp) < 1e-6);
    json_decref(rr);
    json_decref(pp);
    json_decref(v);
    /* empty, not objects, a rerank on an embedding model */
    v = post(p, "/vertex", json_pack("{s:[]}", "instances"), 200);
    assert_int_equal(json_array_size(json_object_get(v, "predictions")), 0);
    json_decref(v);
    tei_error(post(p, "/vertex", json_pack("{s:[i]}", "instances", 5), 422), "Validation");
    tei_error(post(p, "/vertex", json_pack("{}"), 422), "Validation");
    tei_error(post(p, "/vertex", json_pack("{s:[{s:s,s:[s]}]}", "instances", "query", "q",
                                           "texts", "a"), 424), "Backend");
    tei_error(post(p, "/vertex", json_pack("{s:[{s:[]}]}", "instances", "inputs"), 400),
              "Empty");
}

/* SageMaker's POST /invocations answers as POST /; /rerank's Rank objects carry "text" only
 * with return_text. */
static void test_tei_invocations_rerank(void **state)
{
    (void)state;
    need_servers();
    json_t *a = post(S[FX_PLAIN].port, "/invocations", json_pack("{s:s}", "inputs", "hi"), 200);
    json_t *b = post(S[FX_PLAIN].port, "/", json_pack("{s:s}", "inputs", "hi"), 200);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    a = post(S[FX_CLS1].port, "/invocations", json_pack("{s:s,s:[s,s]}", "query", "q", "texts",
                                                        "a", "b"), 200);
    assert_int_equal(json_array_size(a), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(a, i);
        assert_true(json_is_integer(json_object_get(r, "index")));
        assert_true(json_is_number(json_object_get(r, "score")));
        assert_null(json_object_get(r, "text"));
    }
    json_decref(a);
}

static void test_stop(void **state)
{
    (void)state;
    fx_stop_all(S, FX_DEMO_N);
}

XF_TEST_MAIN(cmocka_unit_test(test_openai_sdk), cmocka_unit_test(test_langchain_openai),
             cmocka_unit_test(test_hf_inference_client), cmocka_unit_test(test_tei_tokenize),
             cmocka_unit_test(test_tei_embed_all), cmocka_unit_test(test_tei_vertex),
             cmocka_unit_test(test_tei_invocations_rerank), cmocka_unit_test(test_stop))
