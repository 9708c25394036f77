/* attn_dump: the bitwise checker of refactors (issue 9). Runs every registered attention
 * variant at its defaults, at every bench parameter set and at the edges of each integer
 * parameter (each integer key set to 0, 1, 2, 3, 7 and 1 << 20 in turn), and writes for each
 * case one text line (variant, input JSON, return code, error or canonical to_json) to
 * PREFIX.txt and the output floats to PREFIX.bin:
 *   1. through the vtable on an odd shape (3 sequences of 1, 45 and 131 tokens starting at
 *      token 3 of a 180-token plane, 3 heads of width 24; nth = 1 and 3);
 *   2. through the engine on the tiny demo model (written to DIR/model): a batch of 3
 *      sequences (1, 37 and 130 tokens), mean-pooled + L2-normalised rows and hidden states,
 *      on a 2-thread context.
 * Compare two runs with cmp(1): a refactor that claims to be behaviour-preserving must leave
 * both files byte-identical (run it before and after, under each XF_CPU cap you care about).
 * Usage: attn_dump DIR PREFIX. Not run by make check. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/xformd.h>

#include "attention/registry.h"

#define N_HEAD 3
#define D_HEAD 24
#define MAX_CASES 64

static FILE *g_txt, *g_bin;

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s ? s : 1);
    if (!p) {
        fprintf(stderr, "attn_dump: out of memory\n");
        exit(2);
    }
    return p;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static float rnd(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

/* ---- cases: defaults, bench sets and integer edges ---- */

typedef struct cases {
    char json[MAX_CASES][512];
    int n;
} cases;

static void add_case(cases *c, const char *json)
{
    if (c->n < MAX_CASES)
        snprintf(c->json[c->n++], sizeof c->json[0], "%s", json);
}

static const char *const g_extra[] = {
    "{\"variant\":\"blockwise\",\"block\":128}",
    "{\"variant\":\"blockwise\",\"block\":1}",
    "{\"variant\":\"local1d\",\"block\":16,\"halo\":5}",
    "{\"variant\":\"window\",\"window\":9}",
    "{\"variant\":\"dilated\",\"window\":4,\"dilation\":[1,2,3]}",
    "{\"variant\":\"dilated\",\"window\":4,\"dilation\":2}",
    "{\"variant\":\"fixed\",\"block\":16,\"summary\":3}",
    "{\"variant\":\"longformer\",\"window\":8,\"global\":\"cls\"}",
    "{\"variant\":\"longformer\",\"window\":8,\"global\":[0,5,40]}",
    "{\"variant\":\"longformer\",\"window\":8,\"global\":\"none\"}",
    "{\"variant\":\"longformer\",\"window\":3,\"dilation\":[1,2,4]}",
    "{\"variant\":\"etc\",\"radius\":6}",
    "{\"variant\":\"bigbird\",\"block\":8,\"random_blocks\":2}",
    "{\"variant\":\"reformer\",\"n_hashes\":4,\"chunk\":16}",
    "{\"variant\":\"sinkhorn\",\"block\":8}",
    "{\"variant\":\"isab\",\"m\":8,\"init\":\"segments\"}",
    "{\"variant\":\"isab\",\"m\":8,\"mode\":\"soft\"}",
    "{\"variant\":\"memcomp\",\"rate\":4,\"pool\":\"conv\"}",
    "{\"variant\":\"linformer\",\"k\":16}",
    "{\"variant\":\"linformer\",\"k\":16,\"source\":\"weights\"}",
    "{\"variant\":\"nystrom\",\"landmarks\":8}",
    "{\"variant\":\"performer\",\"features\":32}",
    "{\"variant\":\"rfa\",\"features\":16}",
    "{\"variant\":\"dense\",\"scale\":0.3}",
    "{\"variant\":\"dense\",\"scale\":0}",
    "{\"variant\":\"window\",\"window\":0}",
    "{\"variant\":\"window\",\"bogus\":1}",
    "\"window\"",
};

static void make_cases(const xf_attn_vtbl *vt, cases *c)
{
    static const long edges[] = { 0, 1, 2, 3, 7, 1L << 20 };
    char def[512], buf[512], err[256];
    xf_attn_t *a = NULL;

    c->n = 0;
    snprintf(def, sizeof def, "{\"variant\":\"%s\"}", vt->name);
    add_case(c, def);
    for (size_t i = 0; i < sizeof g_extra / sizeof g_extra[0]; i++) {
        char pat[96];
        snprintf(pat, sizeof pat, "\"variant\":\"%s\"", vt->name);
        if (strstr(g_extra[i], pat) ||
            (g_extra[i][0] == '"' && !strncmp(g_extra[i] + 1, vt->name, strlen(vt->name)) &&
             g_extra[i][1 + strlen(vt->name)] == '"'))
            add_case(c, g_extra[i]);
    }
    if (xf_attn_parse(def, strlen(def), &a, err, sizeof err))
        return;
    int len = xf_attn_to_json(a, buf, sizeof buf);
    xf_attn_free(a);
    if (len < 0 || (size_t)len >= sizeof buf)
        return;
    json_error_t je;
    json_t *obj = json_loads(buf, 0, &je);
    if (!obj)
        return;
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_integer(val))
            continue;
        for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++) {
            char j[512];
            snprintf(j, sizeof j, "{\"variant\":\"%s\",\"%s\":%ld}", vt->name, key, edges[e]);
            add_case(c, j);
        }
    }
    json_decref(obj);
}

/* ---- 1: through the vtable ---- */

static void run_vtable(const char *json, int nth)
{
    static const int32_t lens[3] = { 1, 45, 131 };
    int32_t cu[4] = { 3, 0, 0, 0 };
    char err[256] = "", canon[512] = "";
    xf_attn_t *a = NULL;
    int rc;

    for (int s = 0; s < 3; s++)
        cu[s + 1] = cu[s] + lens[s];
    const int32_t N = cu[3] + 2;
    rc = xf_attn_parse(json, strlen(json), &a, err, sizeof err);
    if (!rc)
        xf_attn_to_json(a, canon, sizeof canon);
    fprintf(g_txt, "vt nth=%d %s parse=%d %s %s", nth, json, rc, err, canon);
    if (rc) {
        fputc('\n', g_txt);
        return;
    }
    xf_attn_shape sh = { .n_seq = 3, .cu_len = cu, .n_tokens = N, .n_head = N_HEAD,
                         .d_head = D_HEAD, .layer = 1 };
    xf_attn_plan pl;
    memset(&pl, 0, sizeof pl);
    rc = xf_at_plan(a->vt, a->params, &sh, nth, &pl);
    fprintf(g_txt, " plan=%d items=%d fallbacks=%d", rc, (int)pl.n_items, (int)pl.dense_fallbacks);
    if (!rc) {
        size_t plane = (size_t)N_HEAD * N * D_HEAD;
        float *q = xcalloc(plane * 3, sizeof(float)), *out = xcalloc(plane, sizeof(float));
        float sc = 1.0f / sqrtf((float)D_HEAD);
        g_rng = 12345;
        for (size_t i = 0; i < plane * 3; i++)
            q[i] = rnd();
        for (size_t i = 0; i < plane; i++)
            q[i] *= sc;
        memset(out, 0x7f, plane * sizeof(float));
        size_t per = (pl.ws_per_thread + 63) / 64 * 64;
        size_t shb = (pl.ws_shared + 63) / 64 * 64;
        char *ws = xcalloc(shb + (size_t)nth * per + 64, 1);
        xf_attn_io io;
        memset(&io, 0, sizeof io);
        io.q = q;
        io.k = q + plane;
        io.v = q + 2 * plane;
        io.q_scale = sc;
        io.scale = sc;
        io.out = out;
        if (a->vt->ops->prepare)
            rc = a->vt->ops->prepare(a->params, &sh, &io, &pl, ws);
        fprintf(g_txt, " prepare=%d", rc);
        for (int t = 0; t < nth && !rc; t++)
            rc = xf_at_forward(a->vt, a->params, &sh, &io, &pl, ws, ws + shb + (size_t)t * per, t,
                                nth);
        fprintf(g_txt, " forward=%d", rc);
        fwrite(out, sizeof(float), plane, g_bin);
        free(ws);
        free(q);
        free(out);
    }
    fputc('\n', g_txt);
    xf_attn_free(a);
}

/* ---- 2: the demo model ---- */

static void run_model(const char *dir, const char *json, xf_ctx_t *ctx)
{
    static const int32_t lens[3] = { 1, 37, 130 };
    int32_t cu[4] = { 0, 0, 0, 0 }, *ids;
    xf_load_opts_t lo = { 0 };
    xf_model_t *m = NULL;
    xf_diag_t diag = { 0 };
    int rc;

    for (int s = 0; s < 3; s++)
        cu[s + 1] = cu[s] + lens[s];
    lo.attention = json;
    rc = xf_model_load(dir, &lo, &m, &diag);
    fprintf(g_txt, "model %s load=%d %s", json, rc, rc ? diag.msg : "");
    if (!rc) {
        const int32_t D = xf_model_info(m)->d_model;
        ids = xcalloc((size_t)cu[3], sizeof *ids);
        for (int32_t i = 0; i < cu[3]; i++)
            ids[i] = 104 + (int32_t)((uint32_t)i * 7919u % 900u);
        xf_batch_t b = { .n_seq = 3, .cu_len = cu, .ids = ids };
        float *pooled = xcalloc((size_t)3 * D, sizeof(float));
        float *hidden = xcalloc((size_t)cu[3] * D, sizeof(float));
        xf_output_t out = { .pooling = XF_POOL_MEAN, .normalize = 1, .pooled = pooled,
                            .hidden = hidden };
        memset(&diag, 0, sizeof diag);
        rc = xf_run(ctx, m, &b, &out, &diag);
        fprintf(g_txt, " run=%d %s", rc, rc ? diag.msg : "");
        fwrite(pooled, sizeof(float), (size_t)3 * D, g_bin);
        fwrite(hidden, sizeof(float), (size_t)cu[3] * D, g_bin);
        free(pooled);
        free(hidden);
        free(ids);
        xf_model_free(m);
    }
    fputc('\n', g_txt);
}

int main(int argc, char **argv)
{
    char path[4096], model[4096];
    xf_demo_opts_t d;
    xf_diag_t diag = { 0 };
    xf_ctx_t *ctx = NULL;
    xf_ctx_opts_t co = { .n_threads = 2 };
    static cases cs;

    if (argc != 3) {
        fprintf(stderr, "usage: attn_dump DIR PREFIX\n");
        return 2;
    }
    snprintf(model, sizeof model, "%s/model", argv[1]);
    xf_demo_opts_init_tiny(&d);
    if (xf_demo_write(model, &d, &diag) || xf_ctx_create(&co, &ctx)) {
        fprintf(stderr, "attn_dump: cannot set up: %s\n", diag.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s.txt", argv[2]);
    g_txt = fopen(path, "w");
    snprintf(path, sizeof path, "%s.bin", argv[2]);
    g_bin = fopen(path, "wb");
    if (!g_txt || !g_bin)
        return 1;
    for (int i = 0; i < xf_attn_variant_count(); i++) {
        xf_attn_variant_info_t info;
        xf_attn_variant_get(i, &info);
        fprintf(g_txt, "info %s %s %u %s | %s\n", info.name, info.family, info.flags,
                info.summary, info.params);
        make_cases(xf_attn_registry_get(i), &cs);
        for (int c = 0; c < cs.n; c++) {
            run_vtable(cs.json[c], 1);
            run_vtable(cs.json[c], 3);
            run_model(model, cs.json[c], ctx);
        }
    }
    xf_ctx_free(ctx);
    fclose(g_txt);
    fclose(g_bin);
    return 0;
}
