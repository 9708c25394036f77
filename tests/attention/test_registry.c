/* Tests for the attention registry and public selection API (include/xformd/attention.h):
 * listing, parsing (bare names, defaults, errors naming the key), to_json round trips for
 * every registered variant, dup/free, model checks, and the HF config mapping (hfmap.c). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "engine/model.h"
#include "helpers/xf_test.h"

static int parse(const char *js, xf_attn_t **a, char *err, size_t errlen)
{
    return xf_attn_parse(js, strlen(js), a, err, errlen);
}

static void test_listing(void **state)
{
    (void)state;
    static const char *const mine[] = { "dense", "blockwise", "local1d", "window", "dilated",
                                        "strided", "fixed", "axial", "longformer", "etc",
                                        "bigbird", "synthesizer" };
    int n = xf_attn_variant_count();
    assert_true(n >= 12);
    assert_int_equal(n, xf_attn_registry_count());
    for (int i = 0; i < n; i++) {
        xf_attn_variant_info_t info;
        assert_int_equal(xf_attn_variant_get(i, &info), 0);
        assert_non_null(info.name);
        assert_ptr_equal(xf_attn_find(info.name), xf_attn_registry_get(i));
        assert_int_equal(strlen(info.family), 1);
        for (int j = 0; j < i; j++)   /* names are unique */
            assert_string_not_equal(xf_attn_registry_get(j)->name, info.name);
    }
    xf_attn_variant_info_t info;
    assert_int_equal(xf_attn_variant_get(n, &info), -ERANGE);
    assert_int_equal(xf_attn_variant_get(-1, &info), -ERANGE);
    assert_null(xf_attn_find("no-such-variant"));
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
        const xf_attn_vtbl *vt = xf_attn_find(mine[i]);
        assert_non_null(vt);
        assert_int_equal(vt->family, XF_FAM_T);
    }
}

static void test_parse_defaults(void **state)
{
    (void)state;
    xf_attn_t *a = NULL, *b = NULL;
    char err[200], buf[300];
    assert_int_equal(parse("\"window\"", &a, err, sizeof(err)), 0);
    assert_string_equal(xf_attn_name(a), "window");
    assert_true(xf_attn_flags(a) & XF_ATTN_PER_REQUEST);
    int len = xf_attn_to_json(a, buf, sizeof(buf));
    assert_int_equal(len, (int)strlen(buf));
    assert_string_equal(buf, "{\"variant\":\"window\",\"window\":256}");
    assert_int_equal(parse(" {\"variant\": \"window\"} ", &b, err, sizeof(err)), 0);
    assert_memory_equal(a, b, sizeof(*a));
    xf_attn_free(b);
    /* not NUL-terminated input: only len bytes are read */
    assert_int_equal(xf_attn_parse("\"dense\"XYZ", 7, &b, err, sizeof(err)), 0);
    assert_string_equal(xf_attn_name(b), "dense");
    xf_attn_free(b);
    b = xf_attn_dup(a);
    assert_non_null(b);
    assert_memory_equal(a, b, sizeof(*a));
    xf_attn_free(b);
    xf_attn_free(a);
    xf_attn_free(NULL);
    assert_string_equal(xf_attn_name(xf_attn_dense()), "dense");
    len = xf_attn_to_json(xf_attn_dense(), buf, sizeof(buf));
    assert_int_equal(len, (int)strlen(buf));
    assert_string_equal(buf, "{\"variant\":\"dense\",\"scale\":null}");
    /* snprintf semantics: the needed length, truncated but terminated */
    char small[8];
    int need = xf_attn_to_json(xf_attn_dense(), small, sizeof(small));
    assert_int_equal(need, (int)strlen(buf));
    assert_int_equal(strlen(small), 7);
    assert_int_equal(xf_attn_to_json(xf_attn_dense(), NULL, 0), need);
}

typedef struct bad {
    const char *json;
    int rc;
    const char *needle;        /* must appear in the message */
} bad;

static void test_parse_errors(void **state)
{
    (void)state;
    static const bad cases[] = {
        { "{\"variant\":\"window\",\"windw\":3}", XF_EPARAM, "windw" },
        { "{\"variant\":\"window\",\"window\":0}", XF_EPARAM, "window: must be >= 1" },
        { "{\"variant\":\"window\",\"window\":\"3\"}", XF_EPARAM, "window: must be an integer" },
        { "{\"variant\":\"window\",\"window\":2.5}", XF_EPARAM, "window: must be an integer" },
        { "{\"variant\":\"window\",\"window\":1e12}", XF_EPARAM, "window: must be <=" },
        { "{\"variant\":\"nope\"}", XF_ENOTFOUND, "nope" },
        { "\"nope\"", XF_ENOTFOUND, "nope" },
        { "{\"variant\":\"window\"", XF_EFORMAT, "JSON" },
        { "{\"variant\":\"window\",\"window\":3,\"window\":4}", XF_EFORMAT, "window" },
        { "{\"window\":3}", XF_EPARAM, "variant" },
        { "{\"variant\":3}", XF_EPARAM, "variant" },
        { "42", XF_EFORMAT, "attention" },
        { "{\"variant\":\"dense\",\"scale\":-1}", XF_EPARAM, "scale" },
        { "{\"variant\":\"blockwise\",\"halo\":-1}", XF_EPARAM, "halo: must be >= 0" },
        { "{\"variant\":\"dilated\",\"dilation\":[1,0]}", XF_EPARAM, "dilation[1]: must be >= 1" },
        { "{\"variant\":\"dilated\",\"dilation\":[]}", XF_EPARAM, "dilation" },
        { "{\"variant\":\"strided\",\"combine\":\"both\"}", XF_EPARAM, "combine: must be one of" },
        { "{\"variant\":\"strided\",\"stride\":\"often\"}", XF_EPARAM, "stride" },
        { "{\"variant\":\"fixed\",\"block\":8,\"summary\":9}", XF_EPARAM, "summary" },
        { "{\"variant\":\"fixed\",\"block\":8,\"summary\":4,\"heads_per_pattern\":3}", XF_EPARAM,
          "heads_per_pattern" },
        { "{\"variant\":\"axial\",\"mode\":1}", XF_EPARAM, "mode" },
        { "{\"variant\":\"longformer\",\"global\":\"everyone\"}", XF_EPARAM, "global" },
        { "{\"variant\":\"longformer\",\"global\":[-1]}", XF_EPARAM, "global[0]" },
        { "{\"variant\":\"etc\",\"segment_restrict\":true}", XF_EPARAM, "segment_restrict" },
        { "{\"variant\":\"etc\",\"segment_restrict\":1}", XF_EPARAM, "segment_restrict" },
        { "{\"variant\":\"bigbird\",\"seed\":-1}", XF_EPARAM, "seed: must be >= 0" },
        { "{\"variant\":\"bigbird\",\"random_per_head\":\"yes\"}", XF_EPARAM, "random_per_head" },
        { "{\"variant\":\"bigbird\",\"block\":0}", XF_EPARAM, "block: must be >= 1" },
        { "{\"variant\":\"synthesizer\",\"kind\":\"random\"}", XF_EPARAM, "kind" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        xf_attn_t *a = (xf_attn_t *)&a;   /* must stay untouched on failure */
        xf_attn_t *const before = a;
        char err[200] = "";
        int rc = parse(cases[i].json, &a, err, sizeof(err));
        if (rc != cases[i].rc || !strstr(err, cases[i].needle))
            print_message("%s -> %d \"%s\"\n", cases[i].json, rc, err);
        assert_int_equal(rc, cases[i].rc);
        assert_non_null(strstr(err, cases[i].needle));
        assert_ptr_equal(a, before);
    }
}

/* parse → to_json → parse → to_json is a fixed point, for every variant (defaults) and for
 * non-default settings of the family-T ones. */
static void roundtrip(const char *js)
{
    xf_attn_t *a = NULL, *b = NULL;
    char err[200], j1[1024], j2[1024];
    int rc = parse(js, &a, err, sizeof(err));
    if (rc)
        print_message("%s: %s\n", js, err);
    assert_int_equal(rc, 0);
    assert_true(xf_attn_to_json(a, j1, sizeof(j1)) > 0);
    assert_int_equal(parse(j1, &b, err, sizeof(err)), 0);
    assert_true(xf_attn_to_json(b, j2, sizeof(j2)) > 0);
    assert_string_equal(j1, j2);
    assert_memory_equal(a->params, b->params, a->vt->ops->params_size);
    xf_attn_free(a);
    xf_attn_free(b);
}

static void test_roundtrip(void **state)
{
    (void)state;
    char js[128];
    for (int i = 0; i < xf_attn_registry_count(); i++) {
        snprintf(js, sizeof(js), "{\"variant\":\"%s\"}", xf_attn_registry_get(i)->name);
        roundtrip(js);
    }
    roundtrip("{\"variant\":\"dense\",\"scale\":0.1}");
    roundtrip("{\"variant\":\"local1d\",\"block\":7,\"halo\":3}");
    roundtrip("{\"variant\":\"dilated\",\"window\":9,\"dilation\":[1,2,4,8]}");
    roundtrip("{\"variant\":\"strided\",\"stride\":11,\"combine\":\"heads\"}");
    roundtrip("{\"variant\":\"fixed\",\"block\":64,\"summary\":16,\"heads_per_pattern\":4}");
    roundtrip("{\"variant\":\"axial\",\"cols\":12,\"mode\":\"heads\"}");
    roundtrip("{\"variant\":\"longformer\",\"window\":3,\"dilation\":[1,2],\"global\":[0,4]}");
    roundtrip("{\"variant\":\"longformer\",\"global\":\"segment_a\"}");
    roundtrip("{\"variant\":\"etc\",\"radius\":5,\"global\":\"mask\"}");
    roundtrip("{\"variant\":\"bigbird\",\"block\":32,\"random_blocks\":0,\"seed\":"
              "9007199254740993,\"random_per_head\":false}");
}

static void test_check(void **state)
{
    (void)state;
    struct xf_model m;
    xf_layer_info_t li[2] = { { 12, 64, 3072 }, { 12, 64, 3072 } };
    memset(&m, 0, sizeof(m));
    m.info.n_layer = 2;
    m.info.layers = li;
    char err[200] = "x";
    assert_int_equal(xf_attn_check(xf_attn_dense(), &m, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    xf_attn_t *a = NULL;
    assert_int_equal(parse("\"synthesizer\"", &a, err, sizeof(err)), 0);
    assert_int_equal(xf_attn_check(a, &m, err, sizeof(err)), XF_EUNSUPPORTED);
    assert_non_null(strstr(err, "synthesizer"));
    xf_attn_free(a);
    /* a per-head dilation list must cover the layer's heads */
    assert_int_equal(parse("{\"variant\":\"dilated\",\"dilation\":[1,2,3]}", &a, err,
                           sizeof(err)), 0);
    assert_int_equal(xf_attn_check(a, &m, err, sizeof(err)), XF_EPARAM);
    assert_non_null(strstr(err, "dilation: 3 entries for 12 heads"));
    xf_attn_free(a);
    assert_int_equal(parse("{\"variant\":\"longformer\",\"dilation\":[1,2]}", &a, err,
                           sizeof(err)), 0);
    assert_int_equal(xf_attn_check(a, &m, err, sizeof(err)), XF_EPARAM);
    assert_non_null(strstr(err, "dilation"));
    xf_attn_free(a);
}

static int hf(const char *cfg, xf_attn_t **out, char *err, size_t errlen)
{
    json_t *j = json_loads(cfg, 0, NULL);
    assert_non_null(j);
    int rc = xf_attn_from_hf_config(j, out, err, errlen);
    json_decref(j);
    return rc;
}

static void test_hfmap(void **state)
{
    (void)state;
    xf_attn_t *a = NULL;
    char err[200], buf[400];
    assert_int_equal(hf("{\"model_type\":\"bert\",\"hidden_size\":768}", &a, err, 200), 0);
    assert_null(a);
    assert_int_equal(hf("{\"attention_type\":\"original_full\"}", &a, err, 200), 0);
    assert_null(a);
    assert_int_equal(hf("{\"attention_type\":\"block_sparse\",\"block_size\":32,"
                        "\"num_random_blocks\":2}", &a, err, 200), 0);
    assert_non_null(a);
    xf_attn_to_json(a, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"variant\":\"bigbird\",\"block\":32,\"random_blocks\":2"));
    xf_attn_free(a);
    a = NULL;
    assert_int_equal(hf("{\"attention_type\":\"block_sparse\",\"block_size\":0}", &a, err, 200),
                     XF_EPARAM);
    assert_non_null(strstr(err, "block_size"));
    assert_int_equal(hf("{\"attention_type\":\"sparse\"}", &a, err, 200), XF_EPARAM);
    assert_int_equal(hf("{\"attention_window\":[512,512,512]}", &a, err, 200), 0);
    xf_attn_to_json(a, buf, sizeof(buf));
    assert_string_equal(buf, "{\"variant\":\"longformer\",\"window\":256,\"dilation\":1,"
                             "\"global\":\"cls\"}");
    xf_attn_free(a);
    a = NULL;
    assert_int_equal(hf("{\"attention_window\":128}", &a, err, 200), 0);
    xf_attn_to_json(a, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"window\":64"));
    xf_attn_free(a);
    a = NULL;
    assert_int_equal(hf("{\"attention_window\":[512,256]}", &a, err, 200), XF_EUNSUPPORTED);
    assert_int_equal(hf("{\"attention_window\":511}", &a, err, 200), XF_EPARAM);
    assert_non_null(strstr(err, "attention_window"));
    assert_null(a);
    /* Nyström and TXL come from the other attention families: mapped when built in */
    int rc = hf("{\"num_landmarks\":32}", &a, err, 200);
    if (xf_attn_find("nystrom")) {
        assert_int_equal(rc, 0);
        xf_attn_free(a);
        a = NULL;
    } else {
        assert_int_equal(rc, XF_EUNSUPPORTED);
        assert_non_null(strstr(err, "nystrom"));
    }
    rc = hf("{\"mem_len\":256,\"clamp_len\":-1}", &a, err, 200);
    if (xf_attn_find("txl")) {
        assert_int_equal(rc, 0);
        xf_attn_free(a);
        a = NULL;
    } else {
        assert_int_equal(rc, XF_EUNSUPPORTED);
        assert_non_null(strstr(err, "txl"));
    }
    assert_int_equal(hf("{\"mem_len\":-3}", &a, err, 200), XF_EPARAM);
}

static xf_attn_t *parse_or_fail(const char *json)
{
    xf_attn_t *a = NULL;
    char err[256] = "";
    if (xf_attn_parse(json, strlen(json), &a, err, sizeof err) != 0)
        fail_msg("%s: %s", json, err);
    return a;
}

/* xf_attn_cost: dense is n² per sequence; cost grows with iterations and shrinks with
 * blocks; every registered variant gets a finite, positive estimate; xf_attn_cost_bound
 * names the parameter and a bound that fits the budget (issue 12 item 1). */
static void test_cost(void **state)
{
    (void)state;
    const int32_t lens[3] = {510, 7, 64};
    double d = xf_attn_cost(NULL, lens, 3, 16);
    assert_true(d == 510.0 * 510 + 49 + 64 * 64);
    assert_true(xf_attn_cost(xf_attn_dense(), lens, 3, 16) == d);
    xf_attn_t *cheap = parse_or_fail("{\"variant\":\"sinkhorn\",\"block\":1,\"mode\":\"soft\","
                                     "\"iters\":8}");
    xf_attn_t *attack = parse_or_fail("{\"variant\":\"sinkhorn\",\"block\":1,\"mode\":"
                                      "\"soft\",\"iters\":1000}");
    xf_attn_t *blocks = parse_or_fail("{\"variant\":\"sinkhorn\",\"block\":64,\"mode\":"
                                      "\"soft\",\"iters\":1000}");
    double c8 = xf_attn_cost(cheap, lens, 1, 16), c1000 = xf_attn_cost(attack, lens, 1, 16);
    assert_true(c1000 > 50 * c8);
    assert_true(c1000 > 100 * 510.0 * 510);   /* the attack: >100x dense */
    assert_true(xf_attn_cost(blocks, lens, 1, 16) < c1000 / 100);
    char key[64];
    long long val = 0, bound = 0;
    double budget = 10 * 510.0 * 510;
    assert_int_equal(xf_attn_cost_bound(attack, lens, 1, 16, budget, key, sizeof key, &val,
                                        &bound), 0);
    assert_string_equal(key, "iters");
    assert_int_equal(val, 1000);
    assert_true(bound >= 0 && bound < 1000);
    char js[160];
    snprintf(js, sizeof js, "{\"variant\":\"sinkhorn\",\"block\":1,\"mode\":\"soft\","
             "\"iters\":%lld}", bound);
    xf_attn_t *fixed = parse_or_fail(js);
    assert_true(xf_attn_cost(fixed, lens, 1, 16) <= budget);
    /* Parameters beyond the sequence cost what the sequence allows: bigbird with blocks of
     * 2^20 tokens is at most dense twice over (all rows local and all rows global). */
    xf_attn_t *huge = parse_or_fail("{\"variant\":\"bigbird\",\"block\":1048576,"
                                    "\"random_blocks\":1048576}");
    double ch = xf_attn_cost(huge, lens, 3, 16);
    if (!(ch >= d && ch <= 2 * d))
        fail_msg("bigbird block 2^20: cost %g, dense %g", ch, d);
    xf_attn_free(huge);
    /* Every variant: a finite estimate of at least linear work. */
    for (int i = 0; i < xf_attn_registry_count(); i++) {
        xf_attn_t *a = NULL;
        char j2[96], err[256];
        snprintf(j2, sizeof j2, "{\"variant\":\"%s\"}", xf_attn_registry_get(i)->name);
        if (xf_attn_parse(j2, strlen(j2), &a, err, sizeof err) != 0)
            continue;   /* needs parameters or weights to parse */
        double c = xf_attn_cost(a, lens, 3, 16);
        if (!(c > 0 && c < 1e15))
            fail_msg("%s: cost %g", xf_attn_registry_get(i)->name, c);
        xf_attn_free(a);
    }
    xf_attn_free(fixed);
    xf_attn_free(blocks);
    xf_attn_free(attack);
    xf_attn_free(cheap);
}

XF_TEST_MAIN(cmocka_unit_test(test_listing), cmocka_unit_test(test_parse_defaults),
             cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_roundtrip),
             cmocka_unit_test(test_check), cmocka_unit_test(test_hfmap),
             cmocka_unit_test(test_cost))
