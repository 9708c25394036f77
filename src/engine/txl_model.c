/* The Transformer-XL loader: reads a Hugging Face TransfoXL directory (config.json with
 * model_type "transfo-xl", model.safetensors, vocab.txt or tokenizer.json), maps the tensor
 * names of TransfoXLLMHeadModel onto struct xf_txl, resolves tied crit.* tensors (tie_word_embeddings,
 * tie_projs) that save_pretrained leaves out, checks every shape against the config, and
 * computes the model hash of the session blob. Owns xf_txl_free / xf_txl_info. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <jansson.h>

#include "engine/diag.h"
#include "engine/kernels.h"
#include "engine/safetensors.h"
#include "engine/sha256.h"
#include "engine/txl_model.h"

#define ST_NAME "model.safetensors"

typedef struct tl {
    xf_txl_t *m;
    xf_st_file_t *st;
    xf_diag_t *diag;
    int64_t n_params;
} tl_t;

/* Takes p: on failure frees it. */
static int own(xf_txl_t *m, void *p)
{
    return xf_owned_add(&m->owned, p);
}

/* ---- config ----------------------------------------------------------------------------- */

static int cfg_int(json_t *cfg, const char *key, int has_default, long long def, long long lo,
                   long long hi, int32_t *out, xf_diag_t *diag)
{
    json_t *v = json_object_get(cfg, key);
    long long x;

    if (!v || json_is_null(v)) {
        if (!has_default)
            return xf_diag_set(diag, XF_EFORMAT, "config.json: missing \"%s\"", key);
        x = def;
    } else if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else {
        return xf_diag_set(diag, XF_EFORMAT, "config.json: \"%s\" is not an integer", key);
    }
    if (x < lo || x > hi)
        return xf_diag_set(diag, XF_EFORMAT, "config.json: \"%s\" = %lld, want [%lld, %lld]",
                           key, x, lo, hi);
    *out = (int32_t)x;
    return 0;
}

static int cfg_bool(json_t *cfg, const char *key, int def, int *out, xf_diag_t *diag)
{
    json_t *v = json_object_get(cfg, key);

    if (!v || json_is_null(v))
        *out = def;
    else if (json_is_boolean(v))
        *out = json_is_true(v);
    else
        return xf_diag_set(diag, XF_EFORMAT, "config.json: \"%s\" is not a boolean", key);
    return 0;
}

static int read_file(const char *path, char **buf, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    long sz;
    char *b;

    if (!fp)
        return -errno;
    if (fseek(fp, 0, SEEK_END) != 0 || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0 ||
        sz > (64L << 20)) {
        fclose(fp);
        return XF_EFORMAT;
    }
    b = malloc((size_t)sz + 1);
    if (!b) {
        fclose(fp);
        return -ENOMEM;
    }
    if (sz && fread(b, 1, (size_t)sz, fp) != (size_t)sz) {
        free(b);
        fclose(fp);
        return -EIO;
    }
    fclose(fp);
    b[sz] = 0;
    *buf = b;
    *len = (size_t)sz;
    return 0;
}

int xf_txl_probe(const char *dir)
{
    char path[4096];
    json_error_t je;
    json_t *cfg, *mt;
    int r;

    snprintf(path, sizeof path, "%s/config.json", dir);
    cfg = json_load_file(path, 0, &je);
    if (!cfg)
        return XF_EFORMAT;
    mt = json_object_get(cfg, "model_type");
    r = json_is_string(mt) && !strcmp(json_string_value(mt), "transfo-xl");
    json_decref(cfg);
    return r;
}

static int parse_config(xf_txl_t *m, json_t *cfg, const xf_txl_opts_t *opts, int *tie_w,
                        int tie_p[XF_TXL_MAX_CLUSTERS + 1], xf_diag_t *diag)
{
    xf_txl_info_t *cf = &m->info;
    json_t *mt = json_object_get(cfg, "model_type"), *v, *cut;
    int32_t at = 0, ss = -1, ncut;
    int adaptive, share;
    int rc;

    if (!json_is_string(mt) || strcmp(json_string_value(mt), "transfo-xl"))
        return xf_diag_set(diag, XF_EFORMAT, "config.json: model_type is not \"transfo-xl\"");
    if ((rc = cfg_int(cfg, "n_layer", 0, 0, 1, 1024, &cf->n_layer, diag)) ||
        (rc = cfg_int(cfg, "d_model", 0, 0, 2, 1 << 16, &cf->d_model, diag)) ||
        (rc = cfg_int(cfg, "d_embed", 1, cf->d_model, 1, 1 << 16, &cf->d_embed, diag)) ||
        (rc = cfg_int(cfg, "n_head", 0, 0, 1, 1024, &cf->n_head, diag)) ||
        (rc = cfg_int(cfg, "d_head", 0, 0, 1, 4096, &cf->d_head, diag)) ||
        (rc = cfg_int(cfg, "d_inner", 0, 0, 1, 1 << 20, &cf->d_inner, diag)) ||
        (rc = cfg_int(cfg, "vocab_size", 0, 0, 1, 1 << 24, &cf->vocab_size, diag)) ||
        (rc = cfg_int(cfg, "div_val", 1, 1, 1, 1 << 10, &cf->div_val, diag)) ||
        (rc = cfg_int(cfg, "mem_len", 1, 0, 0, 1 << 16, &cf->mem_len, diag)) ||
        (rc = cfg_int(cfg, "clamp_len", 1, 0, -1, 1 << 24, &cf->clamp_len, diag)) ||
        (rc = cfg_int(cfg, "attn_type", 1, 0, 0, 3, &at, diag)) ||
        (rc = cfg_int(cfg, "sample_softmax", 1, -1, -1, 1 << 24, &ss, diag)) ||
        (rc = cfg_bool(cfg, "same_length", 0, &cf->same_length, diag)) ||
        (rc = cfg_bool(cfg, "pre_lnorm", 0, &cf->pre_lnorm, diag)) ||
        (rc = cfg_bool(cfg, "untie_r", 1, &cf->untie_r, diag)) ||
        (rc = cfg_bool(cfg, "adaptive", 1, &adaptive, diag)) ||
        (rc = cfg_bool(cfg, "tie_word_embeddings", 1, tie_w, diag)) ||
        (rc = cfg_bool(cfg, "proj_share_all_but_first", 1, &share, diag)))
        return rc;
    if (at != 0)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: attn_type %d (only 0, the "
                           "relative attention of the TXL paper)", at);
    if (ss > 0 || !adaptive)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: sample_softmax / non-adaptive "
                           "softmax is not supported");
    v = json_object_get(cfg, "layer_norm_epsilon");
    cf->ln_eps = json_is_number(v) ? (float)json_number_value(v) : 1e-5f;
    if (!(cf->ln_eps > 0))
        return xf_diag_set(diag, XF_EFORMAT, "config.json: layer_norm_epsilon must be > 0");
    cut = json_object_get(cfg, "cutoffs");
    if (cut && !json_is_array(cut))
        return xf_diag_set(diag, XF_EFORMAT, "config.json: \"cutoffs\" is not an array");
    ncut = cut ? (int32_t)json_array_size(cut) : 0;
    if (ncut > XF_TXL_MAX_CLUSTERS)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: %d cutoffs (at most %d)", ncut,
                           XF_TXL_MAX_CLUSTERS);
    cf->n_clusters = ncut;
    cf->cutoff_ends[0] = 0;
    for (int32_t i = 0; i < ncut; i++) {
        json_t *c = json_array_get(cut, (size_t)i);
        long long x = json_is_integer(c) ? json_integer_value(c) : -1;
        if (x <= cf->cutoff_ends[i] || x >= cf->vocab_size)
            return xf_diag_set(diag, XF_EFORMAT, "config.json: cutoffs[%d] must be increasing "
                               "and below vocab_size %d", i, cf->vocab_size);
        cf->cutoff_ends[i + 1] = (int32_t)x;
    }
    cf->cutoff_ends[ncut + 1] = cf->vocab_size;
    /* tie_projs: the config's list, else [false] + [proj_share_all_but_first] * len(cutoffs) */
    v = json_object_get(cfg, "tie_projs");
    for (int32_t i = 0; i <= ncut; i++)
        tie_p[i] = i > 0 && share;
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) > (size_t)ncut + 1)
            return xf_diag_set(diag, XF_EFORMAT, "config.json: \"tie_projs\" must be a list of "
                               "at most %d booleans", ncut + 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *b = json_array_get(v, i);
            if (!json_is_boolean(b))
                return xf_diag_set(diag, XF_EFORMAT, "config.json: tie_projs[%zu] is not a "
                                   "boolean", i);
            tie_p[i] = json_is_true(b);
        }
    }
    for (int32_t i = 0; i <= ncut; i++) {
        int32_t d = cf->d_embed;
        for (int32_t k = 0; k < i && cf->div_val > 1; k++)
            d /= cf->div_val;
        if (d < 1)
            return xf_diag_set(diag, XF_EFORMAT, "config.json: d_embed %d / div_val^%d is 0",
                               cf->d_embed, i);
        m->cl[i].lo = cf->cutoff_ends[i];
        m->cl[i].hi = cf->cutoff_ends[i + 1];
        m->cl[i].d = cf->div_val > 1 ? d : cf->d_embed;
    }
    if (opts && opts->mem_len >= 0)
        cf->mem_len = opts->mem_len;
    if (cf->same_length && cf->mem_len == 0)
        return xf_diag_set(diag, XF_EPARAM, "same_length with mem_len 0 masks every key");
    return 0;
}

/* ---- tensors ---------------------------------------------------------------------------- */

/* Tensor name as fp32 with the given shape (cols = 0: a vector of rows). NULL + 0 when absent
 * and optional. */
static int get(tl_t *L, const char *name, int64_t rows, int64_t cols, int optional,
               const float **out)
{
    const xf_st_tensor_t *t = xf_st_find(L->st, name);
    const float *d;
    float *owned = NULL;
    int rc;

    *out = NULL;
    if (!t) {
        if (optional)
            return 0;
        return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing tensor %s", name);
    }
    if (cols ? (t->rank != 2 || t->shape[0] != rows || t->shape[1] != cols)
             : (t->rank != 1 || t->shape[0] != rows)) {
        if (cols)
            return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: shape rank %d, want "
                               "[%lld,%lld]", name, t->rank, (long long)rows, (long long)cols);
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: want shape [%lld]", name,
                           (long long)rows);
    }
    rc = xf_st_read_f32(L->st, t, &d, &owned, L->diag);
    if (rc < 0)
        return rc;
    if (owned && (rc = own(L->m, owned)) < 0)
        return rc;
    L->n_params += (int64_t)t->numel;
    *out = d;
    return 0;
}

static int load_layers(tl_t *L)
{
    xf_txl_t *m = L->m;
    const xf_txl_info_t *cf = &m->info;
    int64_t D = cf->d_model, HD = (int64_t)cf->n_head * cf->d_head, F = cf->d_inner;
    const float *gu = NULL, *gv = NULL;
    char n[256];
    int rc;

    m->layers = calloc((size_t)cf->n_layer, sizeof *m->layers);
    if (!m->layers)
        return -ENOMEM;
    if (!cf->untie_r) {
        if ((rc = get(L, "transformer.r_w_bias", cf->n_head, cf->d_head, 0, &gu)) < 0 ||
            (rc = get(L, "transformer.r_r_bias", cf->n_head, cf->d_head, 0, &gv)) < 0)
            return rc;
    }
    for (int32_t l = 0; l < cf->n_layer; l++) {
        xf_txl_layer_t *y = &m->layers[l];
#define T(field, suffix, r, c)                                                                 \
    do {                                                                                       \
        snprintf(n, sizeof n, "transformer.layers.%d.%s", l, suffix);                          \
        if ((rc = get(L, n, r, c, 0, &y->field)) < 0)                                          \
            return rc;                                                                         \
    } while (0)
        T(qkv_w, "dec_attn.qkv_net.weight", 3 * HD, D);
        T(r_w, "dec_attn.r_net.weight", HD, D);
        T(o_w, "dec_attn.o_net.weight", D, HD);
        T(ln1_g, "dec_attn.layer_norm.weight", D, 0);
        T(ln1_b, "dec_attn.layer_norm.bias", D, 0);
        T(ff1_w, "pos_ff.CoreNet.0.weight", F, D);
        T(ff1_b, "pos_ff.CoreNet.0.bias", F, 0);
        T(ff2_w, "pos_ff.CoreNet.3.weight", D, F);
        T(ff2_b, "pos_ff.CoreNet.3.bias", D, 0);
        T(ln2_g, "pos_ff.layer_norm.weight", D, 0);
        T(ln2_b, "pos_ff.layer_norm.bias", D, 0);
        if (cf->untie_r) {
            T(u, "dec_attn.r_w_bias", cf->n_head, cf->d_head);
            T(v, "dec_attn.r_r_bias", cf->n_head, cf->d_head);
        } else {
            y->u = gu;
            y->v = gv;
        }
#undef T
    }
    return 0;
}

/* Adaptive input embedding and projected adaptive log-softmax (HF AdaptiveEmbedding,
 * ProjectedAdaptiveLogSoftmax). div_val 1: one embedding/out layer over the whole vocabulary,
 * sliced per cluster; projections exist only when d_model != d_embed. */
static int load_adaptive(tl_t *L, int tie_w, const int *tie_p)
{
    xf_txl_t *m = L->m;
    const xf_txl_info_t *cf = &m->info;
    int32_t nc = cf->n_clusters, D = cf->d_model;
    int dv1 = cf->div_val == 1, has_proj = !dv1 || cf->d_embed != D;
    const float *emb0 = NULL, *out0w = NULL, *out0b = NULL;
    char n[256];
    int rc;

    if (dv1) {
        if ((rc = get(L, "transformer.word_emb.emb_layers.0.weight", cf->vocab_size, cf->d_embed,
                      0, &emb0)) < 0 ||
            (rc = get(L, "crit.out_layers.0.weight", cf->vocab_size, cf->d_embed, tie_w,
                      &out0w)) < 0 ||
            (rc = get(L, "crit.out_layers.0.bias", cf->vocab_size, 0, 0, &out0b)) < 0)
            return rc;
        if (!out0w)
            out0w = emb0;
    }
    for (int32_t c = 0; c <= nc; c++) {
        xf_txl_cluster_t *k = &m->cl[c];
        int64_t rows = k->hi - k->lo;
        if (dv1) {
            k->emb = emb0 + (size_t)k->lo * (size_t)k->d;
            k->out_w = out0w + (size_t)k->lo * (size_t)k->d;
            k->out_b = out0b + k->lo;
        } else {
            snprintf(n, sizeof n, "transformer.word_emb.emb_layers.%d.weight", c);
            if ((rc = get(L, n, rows, k->d, 0, &k->emb)) < 0)
                return rc;
            snprintf(n, sizeof n, "crit.out_layers.%d.weight", c);
            if ((rc = get(L, n, rows, k->d, tie_w, &k->out_w)) < 0)
                return rc;
            if (!k->out_w)
                k->out_w = k->emb;
            snprintf(n, sizeof n, "crit.out_layers.%d.bias", c);
            if ((rc = get(L, n, rows, 0, 0, &k->out_b)) < 0)
                return rc;
        }
        if (!has_proj)
            continue;
        if (dv1) {
            if (c == 0 && (rc = get(L, "transformer.word_emb.emb_projs.0", D, k->d, 0,
                                    &k->emb_proj)) < 0)
                return rc;
            if (c > 0)
                k->emb_proj = m->cl[0].emb_proj;
        } else {
            snprintf(n, sizeof n, "transformer.word_emb.emb_projs.%d", c);
            if ((rc = get(L, n, D, k->d, 0, &k->emb_proj)) < 0)
                return rc;
        }
        snprintf(n, sizeof n, "crit.out_projs.%d", c);
        if ((rc = get(L, n, D, k->d, tie_p[c], &k->out_proj)) < 0)
            return rc;
        if (!k->out_proj)   /* tied: div_val 1 ties to emb_projs.0, else to emb_projs.c */
            k->out_proj = dv1 ? m->cl[0].emb_proj : k->emb_proj;
    }
    if (nc > 0) {
        if ((rc = get(L, "crit.cluster_weight", nc, cf->d_embed, 0, &m->cluster_w)) < 0 ||
            (rc = get(L, "crit.cluster_bias", nc, 0, 0, &m->cluster_b)) < 0)
            return rc;
        if (m->cl[0].d != cf->d_embed)
            return xf_diag_set(L->diag, XF_ESHAPE, "shortlist width %d != d_embed %d",
                               m->cl[0].d, cf->d_embed);
    }
    return 0;
}

static void hash_model(xf_txl_t *m, const char *cfg, size_t cfg_len)
{
    xf_sha256_t h;

    xf_sha256_init(&h);
    xf_sha256_update(&h, cfg, cfg_len);
    xf_sha256_update(&h, m->map, m->map_len);
    xf_sha256_final(&h, m->info.hash);
}

static const char *base_name(const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    while (n > 0 && dir[n - 1] != '/')
        n--;
    return dir + n;
}

int xf_txl_load(const char *dir, const xf_txl_opts_t *opts, xf_txl_t **out, xf_diag_t *diag)
{
    char path[4096], *cfg_text = NULL, *s;
    size_t cfg_len = 0;
    json_error_t je;
    json_t *cfg = NULL;
    int tie_w = 1, tie_p[XF_TXL_MAX_CLUSTERS + 1] = { 0 };
    tl_t L = { 0 };
    xf_txl_t *m;
    int rc;

    m = calloc(1, sizeof *m);
    if (!m)
        return xf_diag_set(diag, -ENOMEM, "out of memory");
    L.m = m;
    L.diag = diag;
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = read_file(path, &cfg_text, &cfg_len);
    if (rc < 0) {
        xf_diag_set(diag, rc, "%s: %s", path, rc == XF_EFORMAT ? "too large" : strerror(-rc));
        goto fail;
    }
    cfg = json_loadb(cfg_text, cfg_len, JSON_REJECT_DUPLICATES, &je);
    if (!cfg || !json_is_object(cfg)) {
        rc = xf_diag_set(diag, XF_EFORMAT, "config.json: line %d: %s", je.line,
                         cfg ? "not an object" : je.text);
        goto fail;
    }
    if ((rc = parse_config(m, cfg, opts, &tie_w, tie_p, diag)) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/" ST_NAME, dir);
    if ((rc = xf_st_open(path, &L.st, diag)) < 0)
        goto fail;
    if ((rc = load_layers(&L)) < 0 || (rc = load_adaptive(&L, tie_w, tie_p)) < 0)
        goto fail;
    xf_st_take_map(L.st, &m->map, &m->map_len);
    xf_st_close(L.st);
    L.st = NULL;
    hash_model(m, cfg_text, cfg_len);
    if ((rc = xf_txl_vocab_load(m, dir, diag)) < 0)
        goto fail;
    m->info.n_params = L.n_params;
    s = strdup(dir);
    if ((rc = own(m, s)) < 0)
        goto fail;
    m->info.dir = s;
    s = strdup(opts && opts->name ? opts->name : base_name(dir));
    if ((rc = own(m, s)) < 0)
        goto fail;
    m->info.name = s;
    json_decref(cfg);
    free(cfg_text);
    /* every Transformer-XL GEMM goes through cblas (txl_forward.c) */
    xf_kernels_warn_blas("transfo-xl", "this model's GEMMs run on it");
    *out = m;
    return 0;
fail:
    if (diag && !diag->code)
        xf_diag_set(diag, rc, "%s", xf_strerror(rc));
    xf_st_close(L.st);
    json_decref(cfg);
    free(cfg_text);
    xf_txl_free(m);
    return rc;
}

void xf_txl_free(xf_txl_t *m)
{
    if (!m)
        return;
    xf_txl_vocab_free(m);
    xf_owned_free(&m->owned);
    free(m->layers);
    if (m->map)
        munmap(m->map, m->map_len);
    free(m);
}

const xf_txl_info_t *xf_txl_info(const xf_txl_t *m)
{
    return &m->info;
}
