/* The model loader: reads a Hugging Face directory (config.json, model.safetensors, the
 * tokenizer files, sentence-transformers pooling files), maps BERT / RoBERTa / DistilBERT
 * tensor names (with or without "bert."/"roberta."/"distilbert."/"model." prefixes) onto
 * struct xf_model, validates every shape against the config, infers per-layer head counts and
 * FFN widths (pruned models), and owns xf_model_free / xf_model_info & co. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <xformd/attention.h>
#include <xformd/model.h>

#include "attention/registry.h"
#include "engine/diag.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/plan_internal.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/tokenizer_internal.h"

#define ST_NAME "model.safetensors"

typedef struct ld {
    xf_model_t *m;
    xf_st_file_t *st;
    const char *pre;           /* detected tensor-name prefix of the encoder */
    xf_diag_t *diag;
    int64_t n_params;
    int is_distil;
    int dry;                   /* 1: check names, shapes and dtypes only; read nothing */
    int guessed;               /* 1: model_type/architectures unknown, loaded as BERT */
    unsigned char *used;       /* [st->n]: 1 for each tensor the model reads */
} ld_t;

/* Stands in for tensor data during the dry pass (never dereferenced). */
static const float dry_data[1];

/* ---- ownership -------------------------------------------------------------------------- */

/* Takes p: on failure frees it. */
static int own(xf_model_t *m, void *p)
{
    return xf_owned_add(&m->owned, p);
}

static const char *own_str(xf_model_t *m, const char *s)
{
    char *d = strdup(s);
    if (own(m, d) != 0)
        return NULL;
    return d;
}

void xf_model_free(xf_model_t *m)
{
    if (!m)
        return;
    if (m->prep && m->prep_free)
        m->prep_free(m->prep);
    xf_quant_free(m->q8);
    xf_tokenizer_free(m->tok);
    xf_attn_free(m->attn);
    xf_owned_free(&m->owned);
    if (m->map)
        munmap(m->map, m->map_len);
    free(m->layers);
    free(m->layer_info);
    free(m);
}

const xf_model_info_t *xf_model_info(const xf_model_t *m)
{
    return m ? &m->info : NULL;
}

const xf_tokenizer_t *xf_model_tokenizer(const xf_model_t *m)
{
    return m ? m->tok : NULL;
}

const xf_attn_t *xf_model_attention(const xf_model_t *m)
{
    return m && m->attn ? m->attn : xf_attn_dense();
}

/* ---- config.json ------------------------------------------------------------------------ */

static int cfg_int(const json_t *cfg, const char *key, int64_t def, int64_t lo, int64_t hi,
                   int32_t *out, xf_diag_t *diag)
{
    const json_t *v = json_object_get(cfg, key);
    int64_t x;

    if (!v || json_is_null(v)) {
        *out = (int32_t)def;
        return 0;
    }
    if (!json_is_integer(v))
        return xf_diag_set(diag, XF_EFORMAT, "config.json: %s: not an integer", key);
    x = json_integer_value(v);
    if (x < lo || x > hi)
        return xf_diag_set(diag, XF_EFORMAT, "config.json: %s: %lld out of range [%lld, %lld]",
                           key, (long long)x, (long long)lo, (long long)hi);
    *out = (int32_t)x;
    return 0;
}

static const char *cfg_str(const json_t *cfg, const char *key)
{
    const json_t *v = json_object_get(cfg, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int cfg_true(const json_t *cfg, const char *key)
{
    return json_is_true(json_object_get(cfg, key));
}

static int parse_act(const char *s, enum xf_act *out)
{
    static const struct { const char *name; enum xf_act act; } acts[] = {
        { "gelu", XF_ACT_GELU }, { "gelu_python", XF_ACT_GELU },
        { "gelu_new", XF_ACT_GELU_TANH }, { "gelu_pytorch_tanh", XF_ACT_GELU_TANH },
        { "gelu_fast", XF_ACT_GELU_TANH }, { "gelu_accurate", XF_ACT_GELU_TANH },
        { "relu", XF_ACT_RELU },
    };
    for (size_t i = 0; i < sizeof acts / sizeof *acts; i++)
        if (!strcmp(s, acts[i].name)) {
            *out = acts[i].act;
            return 0;
        }
    return -1;
}

static int detect_arch(const json_t *cfg, enum xf_arch *arch, int *guessed, xf_diag_t *diag)
{
    static const char *const roberta[] = { "roberta", "xlm-roberta", "camembert" };
    const char *mt = cfg_str(cfg, "model_type");
    const json_t *archs = json_object_get(cfg, "architectures");
    const char *a0 = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;

    *guessed = 0;
    if (mt) {
        if (!strcmp(mt, "bert")) {
            *arch = XF_ARCH_BERT;
            return 0;
        }
        for (size_t i = 0; i < sizeof roberta / sizeof *roberta; i++)
            if (!strcmp(mt, roberta[i])) {
                *arch = XF_ARCH_ROBERTA;
                return 0;
            }
        if (!strcmp(mt, "distilbert")) {
            *arch = XF_ARCH_DISTILBERT;
            return 0;
        }
    }
    if (a0) {
        if (!strncmp(a0, "Roberta", 7) || !strncmp(a0, "XLMRoberta", 10) ||
            !strncmp(a0, "Camembert", 9)) {
            *arch = XF_ARCH_ROBERTA;
            return 0;
        }
        if (!strncmp(a0, "DistilBert", 10)) {
            *arch = XF_ARCH_DISTILBERT;
            return 0;
        }
        if (!strncmp(a0, "Bert", 4)) {
            *arch = XF_ARCH_BERT;
            return 0;
        }
    }
    if (!mt && !a0)
        return xf_diag_set(diag, XF_EFORMAT, "config.json: neither model_type nor "
                           "architectures says what the model is");
    /* Anything else is tried as BERT-shaped (MiniLM-style exports with their own
     * model_type); a non-BERT model then fails on its first missing tensor, or on a tensor of
     * its encoder that BERT would leave unread (check_unused). */
    xf_log(XF_LOG_WARN, "config.json: model_type %s: loading as BERT", mt ? mt : a0);
    *arch = XF_ARCH_BERT;
    *guessed = 1;
    return 0;
}

/* ---- tensors ---------------------------------------------------------------------------- */

static const xf_st_tensor_t *find(ld_t *L, int prefixed, const char *name)
{
    char full[512];
    if (!prefixed)
        return xf_st_find(L->st, name);
    snprintf(full, sizeof full, "%s%s", L->pre, name);
    return xf_st_find(L->st, full);
}

static void shape_str(char *buf, size_t len, const xf_st_tensor_t *t)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int32_t i = 0; i < t->rank && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* Load tensor name (prefixed with L->pre when prefixed) into out with shape [rows] (cols == 0)
 * or [rows, cols]. Missing: an error when required, else an empty out. */
static int get_w(ld_t *L, xf_w_t *out, int required, int prefixed, int64_t rows, int64_t cols,
                 const char *name)
{
    const xf_st_tensor_t *t = find(L, prefixed, name);
    const float *data;
    float *owned;
    int rc;

    memset(out, 0, sizeof *out);
    if (!t) {
        if (!required)
            return 0;
        return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %s%s", prefixed ? L->pre : "",
                           name);
    }
    if ((cols == 0 && (t->rank != 1 || t->shape[0] != rows)) ||
        (cols > 0 && (t->rank != 2 || t->shape[0] != rows || t->shape[1] != cols))) {
        char got[128];
        shape_str(got, sizeof got, t);
        if (cols == 0)
            return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: shape %s, want [%lld]",
                               t->name, got, (long long)rows);
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: shape %s, want [%lld,%lld]",
                           t->name, got, (long long)rows, (long long)cols);
    }
    if (t->dtype != XF_ST_F32 && t->dtype != XF_ST_F16 && t->dtype != XF_ST_BF16)
        return xf_diag_set(L->diag, XF_EUNSUPPORTED, ST_NAME ": %s: dtype %s cannot be used "
                           "as weights", t->name, xf_st_dtype_name(t->dtype));
    if (L->used)
        L->used[t - L->st->t] = 1;
    if (L->dry) {
        data = dry_data;
        owned = NULL;
        rc = 0;
    } else {
        rc = xf_st_read_f32(L->st, t, &data, &owned, L->diag);
    }
    if (rc)
        return rc;
    if (owned && own(L->m, owned) != 0)
        return xf_diag_set(L->diag, -ENOMEM, ST_NAME ": %s: out of memory", t->name);
    out->data = data;
    out->rows = (int32_t)rows;
    out->cols = cols > 0 ? (int32_t)cols : (int32_t)rows;
    if (cols == 0)
        out->rows = 1;
    L->n_params += (int64_t)t->numel;
    return 0;
}

/* LayerNorm pair base.weight/base.bias, or the old base.gamma/base.beta names. */
static int get_ln(ld_t *L, xf_w_t *g, xf_w_t *b, int required, int64_t d, const char *base)
{
    char wn[512], bn[512];
    int rc;

    snprintf(wn, sizeof wn, "%s.weight", base);
    snprintf(bn, sizeof bn, "%s.bias", base);
    if (!find(L, 1, wn)) {
        char gn[512];
        snprintf(gn, sizeof gn, "%s.gamma", base);
        if (find(L, 1, gn)) {
            snprintf(wn, sizeof wn, "%s.gamma", base);
            snprintf(bn, sizeof bn, "%s.beta", base);
        }
    }
    rc = get_w(L, g, required, 1, d, 0, wn);
    if (rc)
        return rc;
    if (!g->data)
        return 0;
    return get_w(L, b, 1, 1, d, 0, bn);
}

/* Linear layer base.weight [rows, cols] + base.bias [rows]. */
static int get_lin(ld_t *L, xf_w_t *w, xf_w_t *b, int required, int prefixed, int64_t rows,
                   int64_t cols, const char *base)
{
    char wn[512], bn[512];
    int rc;

    snprintf(wn, sizeof wn, "%s.weight", base);
    snprintf(bn, sizeof bn, "%s.bias", base);
    rc = get_w(L, w, required, prefixed, rows, cols, wn);
    if (rc || !w->data)
        return rc;
    return get_w(L, b, 1, prefixed, rows, 0, bn);
}

static int detect_prefix(ld_t *L, enum xf_arch arch)
{
    static const char *const cands[] = { "", "bert.", "roberta.", "distilbert.", "model.",
                                         "model.bert.", "model.roberta.", "xlm-roberta.",
                                         "camembert.", "model.distilbert." };
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        L->pre = cands[i];
        if (find(L, 1, "embeddings.word_embeddings.weight"))
            return 0;
    }
    L->pre = "";
    return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %sembeddings.word_embeddings."
                       "weight (also tried the prefixes bert., roberta., distilbert., model.)",
                       arch == XF_ARCH_ROBERTA ? "roberta." : arch == XF_ARCH_DISTILBERT
                                                                  ? "distilbert." : "");
}

/* Per-layer list from config (num_attention_heads_per_layer, ...) or NULL. */
static int cfg_layer_list(const json_t *cfg, const char *key, int32_t n_layer,
                          const json_t **out, xf_diag_t *diag)
{
    const json_t *v = json_object_get(cfg, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) != (size_t)n_layer)
        return xf_diag_set(diag, XF_EFORMAT, "config.json: %s: want an array of %d integers",
                           key, n_layer);
    for (size_t i = 0; i < json_array_size(v); i++)
        if (!json_is_integer(json_array_get(v, i)))
            return xf_diag_set(diag, XF_EFORMAT, "config.json: %s[%zu]: not an integer", key, i);
    *out = v;
    return 0;
}

typedef struct hp {
    int32_t d_model, n_layer, n_head, d_ff, vocab, max_pos, n_types, pad_id;
} hp_t;

static int load_layer(ld_t *L, const json_t *cfg, const hp_t *h, int32_t l,
                      const json_t *heads_list, const json_t *ffn_list)
{
    xf_layer_t *ly = &L->m->layers[l];
    const int32_t d = h->d_model, dh = h->d_model / h->n_head;
    char qn[256], fn[256], base[256];
    const xf_st_tensor_t *q, *f;
    int64_t nh, dff;
    int rc;

    if (L->is_distil) {
        snprintf(qn, sizeof qn, "transformer.layer.%d.attention.q_lin.weight", l);
        snprintf(fn, sizeof fn, "transformer.layer.%d.ffn.lin1.weight", l);
    } else {
        snprintf(qn, sizeof qn, "encoder.layer.%d.attention.self.query.weight", l);
        snprintf(fn, sizeof fn, "encoder.layer.%d.intermediate.dense.weight", l);
    }
    q = find(L, 1, qn);
    if (!q)
        return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %s%s", L->pre, qn);
    if (q->rank != 2 || q->shape[1] != d) {
        char got[128];
        shape_str(got, sizeof got, q);
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: shape %s, want [%d,%d]", q->name,
                           got, h->n_head * dh, d);
    }
    if (q->shape[0] % dh != 0)
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: %lld rows is not a multiple of "
                           "the head width %d", q->name, (long long)q->shape[0], dh);
    nh = q->shape[0] / dh;
    if (nh == 0 || nh > h->n_head)
        return xf_diag_set(L->diag, nh == 0 ? XF_EUNSUPPORTED : XF_ESHAPE, ST_NAME ": %s: "
                           "%lld heads (config: %d)", q->name, (long long)nh, h->n_head);
    f = find(L, 1, fn);
    if (!f)
        return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %s%s", L->pre, fn);
    if (f->rank != 2 || f->shape[1] != d || f->shape[0] < 1 || f->shape[0] > (1 << 20)) {
        char got[128];
        shape_str(got, sizeof got, f);
        return xf_diag_set(L->diag, f->rank == 2 && f->shape[0] == 0 ? XF_EUNSUPPORTED
                                                                     : XF_ESHAPE,
                           ST_NAME ": %s: shape %s, want [%d,%d]", f->name, got, h->d_ff, d);
    }
    dff = f->shape[0];
    if (dff > h->d_ff)          /* pruning only narrows a layer */
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: width %lld exceeds config.json "
                           "%s %d", f->name, (long long)dff,
                           L->is_distil ? "hidden_dim" : "intermediate_size", h->d_ff);
    if (heads_list && json_integer_value(json_array_get(heads_list, (size_t)l)) != nh)
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: %lld heads, config.json "
                           "num_attention_heads_per_layer[%d] says %lld", q->name,
                           (long long)nh, l,
                           (long long)json_integer_value(json_array_get(heads_list, (size_t)l)));
    if (ffn_list && json_integer_value(json_array_get(ffn_list, (size_t)l)) != dff)
        return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: width %lld, config.json "
                           "intermediate_size_per_layer[%d] says %lld", f->name,
                           (long long)dff, l,
                           (long long)json_integer_value(json_array_get(ffn_list, (size_t)l)));
    {
        /* HF pruning record: {"layer": [head, ...]} */
        const json_t *pr = json_object_get(cfg, "pruned_heads");
        char key[16];
        snprintf(key, sizeof key, "%d", l);
        const json_t *pl = json_is_object(pr) ? json_object_get(pr, key) : NULL;
        if (json_is_array(pl)) {
            /* a set of head indices, as transformers reads it (set(heads)): a repeated index
             * prunes one head; one outside [0, num_attention_heads) names no head */
            uint64_t seen[65536 / 64] = { 0 };   /* one bit per head: cfg_int caps n_head */
            int64_t n_pruned = 0;
            for (size_t i = 0; i < json_array_size(pl); i++) {
                const json_t *e = json_array_get(pl, i);
                json_int_t hi = json_integer_value(e);
                if (!json_is_integer(e) || hi < 0 || hi >= h->n_head)
                    return xf_diag_set(L->diag, XF_EFORMAT, "config.json: pruned_heads[%d][%zu]: "
                                       "not a head index in [0, %d)", l, i, h->n_head);
                if (seen[hi >> 6] & (1ull << (hi & 63)))
                    continue;
                seen[hi >> 6] |= 1ull << (hi & 63);
                n_pruned++;
            }
            if ((int64_t)h->n_head - n_pruned != nh)
                return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: %lld heads, config.json "
                                   "pruned_heads[%d] leaves %lld", q->name, (long long)nh, l,
                                   (long long)h->n_head - (long long)n_pruned);
        }
    }
    ly->n_head = (int32_t)nh;
    ly->d_head = dh;
    ly->d_ff = (int32_t)dff;
    L->m->layer_info[l] = (xf_layer_info_t){ .n_head = (int32_t)nh, .d_head = dh,
                                              .d_ff = (int32_t)dff };
    const int64_t da = nh * dh;
    /* the layer's tensors under the BERT or the DistilBERT names (same shapes) */
    static const char *const layer_names[2][9] = {
        { "encoder.layer.", "attention.self.query", "attention.self.key", "attention.self.value",
          "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
          "output.dense", "output.LayerNorm" },
        { "transformer.layer.", "attention.q_lin", "attention.k_lin", "attention.v_lin",
          "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm" },
    };
    const char *const *names = layer_names[L->is_distil ? 1 : 0];
#define B(i) (snprintf(base, sizeof base, "%s%d.%s", names[0], l, names[i]), base)
    if ((rc = get_lin(L, &ly->q_w, &ly->q_b, 1, 1, da, d, B(1))) ||
        (rc = get_lin(L, &ly->k_w, &ly->k_b, 1, 1, da, d, B(2))) ||
        (rc = get_lin(L, &ly->v_w, &ly->v_b, 1, 1, da, d, B(3))) ||
        (rc = get_lin(L, &ly->o_w, &ly->o_b, 1, 1, d, da, B(4))) ||
        (rc = get_ln(L, &ly->ln1_g, &ly->ln1_b, 1, d, B(5))) ||
        (rc = get_lin(L, &ly->ff1_w, &ly->ff1_b, 1, 1, dff, d, B(6))) ||
        (rc = get_lin(L, &ly->ff2_w, &ly->ff2_b, 1, 1, d, dff, B(7))) ||
        (rc = get_ln(L, &ly->ln2_g, &ly->ln2_b, 1, d, B(8))))
        return rc;
#undef B
    return 0;
}

/* ---- heads ------------------------------------------------------------------------------ */

/* Finds a head tensor at the top level or under the encoder prefix; returns prefixed flag. */
static int head_where(ld_t *L, const char *name)
{
    if (xf_st_find(L->st, name))
        return 0;
    if (*L->pre && find(L, 1, name))
        return 1;
    return -1;
}

static int load_head(ld_t *L, const json_t *cfg, const hp_t *h)
{
    xf_model_t *m = L->m;
    xf_model_info_t *in = &m->info;
    const int32_t d = h->d_model;
    const xf_st_tensor_t *ct = NULL;
    const char *cls_name;
    int where, rc;

    {
        /* per-token heads store classifier.weight too: not a sequence classifier */
        const char *a0 = json_string_value(json_array_get(json_object_get(cfg,
                                                                          "architectures"), 0));
        if (a0 && strstr(a0, "ForTokenClassification") && head_where(L, "classifier.weight") >= 0)
            return xf_diag_set(L->diag, XF_EUNSUPPORTED, "config.json: %s: token "
                               "classification (a label per token) is not supported", a0);
    }
    if ((where = head_where(L, "classifier.out_proj.weight")) >= 0) {
        in->head = XF_HEAD_ROBERTA;
        cls_name = "classifier.out_proj";
    } else if ((where = head_where(L, "pre_classifier.weight")) >= 0) {
        in->head = XF_HEAD_DISTILBERT;
        cls_name = "classifier";
    } else if ((where = head_where(L, "classifier.weight")) >= 0) {
        in->head = XF_HEAD_BERT;
        cls_name = "classifier";
    } else {
        const char *a0 = json_string_value(json_array_get(json_object_get(cfg,
                                                                          "architectures"), 0));
        if (a0 && strstr(a0, "ForSequenceClassification"))
            return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %s (config.json says "
                               "%s)", L->is_distil ? "pre_classifier.weight"
                               : in->arch == XF_ARCH_ROBERTA ? "classifier.out_proj.weight"
                                                             : "classifier.weight", a0);
        in->head = XF_HEAD_NONE;
        return 0;
    }
    {
        char wn[128];
        snprintf(wn, sizeof wn, "%s.weight", cls_name);
        ct = find(L, where, wn);
        if (!ct)
            return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %s%s",
                               where ? L->pre : "", wn);
        if (ct->rank != 2 || ct->shape[1] != d || ct->shape[0] < 1 || ct->shape[0] > 1000000) {
            char got[128];
            shape_str(got, sizeof got, ct);
            return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: shape %s, want [n_labels,%d]",
                               ct->name, got, d);
        }
    }
    in->n_labels = (int32_t)ct->shape[0];
    {
        const json_t *i2l = json_object_get(cfg, "id2label");
        const json_t *nl = json_object_get(cfg, "num_labels");
        if (json_is_integer(nl) && json_integer_value(nl) != in->n_labels)
            return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: %d labels, config.json "
                               "num_labels says %lld", ct->name, in->n_labels,
                               (long long)json_integer_value(nl));
        if (json_is_object(i2l) && json_object_size(i2l) != (size_t)in->n_labels)
            return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s: %d labels, config.json "
                               "id2label has %zu", ct->name, in->n_labels,
                               json_object_size(i2l));
        if (json_is_object(i2l) && !L->dry) {
            const char **labels = calloc((size_t)in->n_labels, sizeof *labels);
            int ok = 1;
            if (own(m, labels) != 0)
                return xf_diag_set(L->diag, -ENOMEM, "config.json: out of memory");
            for (int32_t i = 0; i < in->n_labels && ok; i++) {
                char key[16];
                snprintf(key, sizeof key, "%d", i);
                const char *s = json_string_value(json_object_get(i2l, key));
                if (!s) {
                    ok = 0;
                    break;
                }
                if (!(labels[i] = own_str(m, s)))
                    return xf_diag_set(L->diag, -ENOMEM, "config.json: out of memory");
            }
            in->labels = ok ? labels : NULL;
        }
    }
    switch (in->head) {
    case XF_HEAD_ROBERTA:
        if ((rc = get_lin(L, &m->head_dense_w, &m->head_dense_b, 1, where, d, d,
                          "classifier.dense")) ||
            (rc = get_lin(L, &m->cls_w, &m->cls_b, 1, where, in->n_labels, d,
                          "classifier.out_proj")))
            return rc;
        break;
    case XF_HEAD_DISTILBERT:
        if ((rc = get_lin(L, &m->head_dense_w, &m->head_dense_b, 1, where, d, d,
                          "pre_classifier")) ||
            (rc = get_lin(L, &m->cls_w, &m->cls_b, 1, where, in->n_labels, d, "classifier")))
            return rc;
        break;
    default:
        if (!m->pool_w.data)
            return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %spooler.dense.weight "
                               "(the BERT classifier reads the pooler)", L->pre);
        if ((rc = get_lin(L, &m->cls_w, &m->cls_b, 1, where, in->n_labels, d, "classifier")))
            return rc;
        break;
    }
    return 0;
}

/* ---- sentence-transformers pooling ------------------------------------------------------ */

/* dir/name parsed into *out, or *out = NULL when the file does not exist (an optional
 * file); 0, or XF_EFORMAT naming the file when it does not parse. */
static int load_dir_json(const char *dir, const char *name, json_t **out, xf_diag_t *diag)
{
    char path[4096];
    json_error_t jerr;

    *out = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK) != 0)
        return 0;
    if (!(*out = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)))
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s (line %d)", name, jerr.text, jerr.line);
    return 0;
}

/* The modes of sentence-transformers' Pooling config, read as Pooling(**config) reads them:
 * pooling_mode_mean_tokens defaults to true (a file without it means mean, and with
 * pooling_mode_cls_token also true the two are concatenated), a "pooling_mode" string
 * ("cls", "mean", ...) overrides the booleans, include_prompt defaults to true. xformd runs
 * exactly one of cls and mean; anything else is refused, never approximated. */
static int parse_pool_modes(const json_t *pc, const char *pool_path, xf_model_info_t *in,
                            xf_diag_t *diag)
{
    static const char *const keys[] = { "pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                        "pooling_mode_max_tokens",
                                        "pooling_mode_mean_sqrt_len_tokens",
                                        "pooling_mode_weightedmean_tokens",
                                        "pooling_mode_lasttoken" };
    static const char *const modes[] = { "cls", "mean", "max", "mean_sqrt_len_tokens",
                                         "weightedmean", "lasttoken" };
    enum { N_MODES = sizeof keys / sizeof *keys };
    int on[N_MODES] = { 0, 1, 0, 0, 0, 0 };    /* Pooling.__init__'s defaults */
    const json_t *pm = json_object_get(pc, "pooling_mode");
    const json_t *ip = json_object_get(pc, "include_prompt");
    int n_on = 0, first = -1;

    if (!json_is_object(pc))
        return xf_diag_set(diag, XF_EFORMAT, "%s/config.json: not a JSON object", pool_path);
    for (int i = 0; i < N_MODES; i++) {
        const json_t *v = json_object_get(pc, keys[i]);
        if (!v)
            continue;
        if (!json_is_boolean(v) && !json_is_null(v))
            return xf_diag_set(diag, XF_EFORMAT, "%s/config.json: %s: not a boolean",
                               pool_path, keys[i]);
        on[i] = json_is_true(v);
    }
    if (pm && !json_is_null(pm)) {
        const char *s = json_string_value(pm);
        int k = -1;
        for (int i = 0; s && i < N_MODES; i++)
            if (!strcasecmp(s, modes[i]))
                k = i;
        if (k < 0)
            return xf_diag_set(diag, XF_EFORMAT, "%s/config.json: pooling_mode: want one of "
                               "cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken",
                               pool_path);
        for (int i = 0; i < N_MODES; i++)
            on[i] = i == k;
    }
    for (int i = 0; i < N_MODES; i++)
        if (on[i]) {
            n_on++;
            if (first < 0)
                first = i;
        }
    if (n_on == 0)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s/config.json: every pooling mode is "
                           "off", pool_path);
    if (n_on > 1) {
        char list[256];
        size_t o = 0;
        list[0] = 0;
        for (int i = 0; i < N_MODES; i++)
            if (on[i])
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "",
                                      keys[i]);
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s/config.json: %s are on (a missing "
                           "pooling_mode_mean_tokens means true); sentence-transformers "
                           "concatenates them, xformd runs one: cls or mean", pool_path, list);
    }
    if (first > 1)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s/config.json: %s not supported (cls or "
                           "mean)", pool_path, keys[first]);
    if (ip && !json_is_null(ip) && !json_is_boolean(ip))
        return xf_diag_set(diag, XF_EFORMAT, "%s/config.json: include_prompt: not a boolean",
                           pool_path);
    in->pooling = first == 0 ? XF_POOL_CLS : XF_POOL_MEAN;
    /* include_prompt false: sentence-transformers masks a prompt's tokens ([CLS] included)
     * out of mean pooling; the [CLS] row is the same either way. */
    in->pool_skip_prompt = json_is_false(ip) && in->pooling == XF_POOL_MEAN;
    return 0;
}

static int load_pooling(const char *dir, xf_model_info_t *in, xf_diag_t *diag)
{
    char path[4096];
    json_t *mods, *pc = NULL;
    json_error_t jerr;
    const char *pool_path = NULL;
    int rc = 0;

    in->pooling = XF_POOL_CLS;
    in->normalize = 0;
    in->pool_skip_prompt = 0;
    if ((rc = load_dir_json(dir, "modules.json", &mods, diag)) || !mods)
        return rc;
    if (!json_is_array(mods)) {
        rc = xf_diag_set(diag, XF_EFORMAT, "modules.json: not an array");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(mods); i++) {
        const json_t *e = json_array_get(mods, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        if (!type)
            continue;
        if (!strcmp(type, "sentence_transformers.models.Pooling")) {
            pool_path = json_string_value(json_object_get(e, "path"));
            if (!pool_path || !*pool_path || pool_path[0] == '/' || strstr(pool_path, "..") ||
                strlen(pool_path) > 200) {
                rc = xf_diag_set(diag, XF_EFORMAT, "modules.json: module %zu: bad path", i);
                goto out;
            }
        } else if (!strcmp(type, "sentence_transformers.models.Normalize")) {
            in->normalize = 1;
        } else if (strcmp(type, "sentence_transformers.models.Transformer") != 0) {
            rc = xf_diag_set(diag, XF_EUNSUPPORTED, "modules.json: module %zu: %s not "
                             "supported (only Transformer, Pooling, Normalize)", i, type);
            goto out;
        }
    }
    if (!pool_path)
        goto out;
    snprintf(path, sizeof path, "%s/%s/config.json", dir, pool_path);
    pc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!pc) {
        rc = xf_diag_set(diag, access(path, F_OK) == 0 ? XF_EFORMAT : -ENOENT,
                         "%s/config.json: %s", pool_path, jerr.text);
        goto out;
    }
    if ((rc = parse_pool_modes(pc, pool_path, in, diag)))
        goto out;
out:
    json_decref(pc);
    json_decref(mods);
    return rc;
}

/* sentence-transformers' max_seq_length: the length it (and TEI, whose /info reports it as
 * max_input_length) cuts inputs to, e.g. 256 for all-MiniLM-L6-v2 whose positions go to 512.
 * The first of these files that exists is read, in TEI's order (core/src/download.rs). Its
 * do_lower_case (*lower) says sentence-transformers lowercases every text before tokenizing. */
static int load_max_seq(const char *dir, xf_model_info_t *in, int *lower, xf_diag_t *diag)
{
    static const char *const names[] = {
        "sentence_bert_config.json", "sentence_roberta_config.json",
        "sentence_distilbert_config.json", "sentence_camembert_config.json",
        "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
        "sentence_xlnet_config.json"
    };
    in->max_input = in->max_positions;
    *lower = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        json_t *c;
        int rc = load_dir_json(dir, names[i], &c, diag);
        if (rc)
            return rc;
        if (!c)
            continue;
        const json_t *v = json_object_get(c, "max_seq_length");
        if (v && !json_is_null(v)) {
            if (!json_is_integer(v) || json_integer_value(v) < 1)
                rc = xf_diag_set(diag, XF_EFORMAT, "%s: max_seq_length must be a positive "
                                 "integer", names[i]);
            else if (json_integer_value(v) < in->max_positions)
                in->max_input = (int32_t)json_integer_value(v);
        }
        v = json_object_get(c, "do_lower_case");
        if (!rc && v && !json_is_null(v) && !json_is_boolean(v))
            rc = xf_diag_set(diag, XF_EFORMAT, "%s: do_lower_case must be a boolean", names[i]);
        *lower = json_is_true(v);
        json_decref(c);
        return rc;
    }
    return 0;
}

/* ---- the model -------------------------------------------------------------------------- */

static const char *dir_basename(xf_model_t *m, const char *dir)
{
    char buf[4096];
    size_t len = strlen(dir);
    const char *s;

    if (len >= sizeof buf)
        len = sizeof buf - 1;
    memcpy(buf, dir, len);
    buf[len] = 0;
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = 0;
    s = strrchr(buf, '/');
    s = s && s[1] ? s + 1 : buf;
    if (!strcmp(s, ".") || !strcmp(s, "..")) {
        char *rp = realpath(dir, NULL);
        if (rp) {
            const char *b = strrchr(rp, '/');
            const char *r = own_str(m, b && b[1] ? b + 1 : rp);
            free(rp);
            return r;
        }
    }
    return own_str(m, s);
}

static int load_config(const char *dir, json_t **out, xf_diag_t *diag)
{
    char path[4096];
    json_error_t jerr;
    json_t *cfg;

    snprintf(path, sizeof path, "%s/config.json", dir);
    if (access(path, R_OK) != 0) {
        int rc = -errno;
        return xf_diag_set(diag, rc, "%s: %s", path, strerror(-rc));
    }
    cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!cfg)
        return xf_diag_set(diag, XF_EFORMAT, "config.json: %s (line %d, column %d)", jerr.text,
                           jerr.line, jerr.column);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return xf_diag_set(diag, XF_EFORMAT, "config.json: not a JSON object");
    }
    *out = cfg;
    return 0;
}

static int read_hparams(const json_t *cfg, enum xf_arch arch, hp_t *h, xf_model_info_t *in,
                        xf_diag_t *diag)
{
    const char *act;
    int rc;

    if (arch == XF_ARCH_DISTILBERT) {
        if ((rc = cfg_int(cfg, "dim", 768, 1, 65536, &h->d_model, diag)) ||
            (rc = cfg_int(cfg, "n_layers", 6, 1, 1024, &h->n_layer, diag)) ||
            (rc = cfg_int(cfg, "n_heads", 12, 1, 65536, &h->n_head, diag)) ||
            (rc = cfg_int(cfg, "hidden_dim", 4 * 768, 1, 1 << 20, &h->d_ff, diag)))
            return rc;
        act = cfg_str(cfg, "activation");
        h->n_types = 0;
        in->ln_eps = 1e-12f;
    } else {
        const json_t *eps;
        if ((rc = cfg_int(cfg, "hidden_size", 768, 1, 65536, &h->d_model, diag)) ||
            (rc = cfg_int(cfg, "num_hidden_layers", 12, 1, 1024, &h->n_layer, diag)) ||
            (rc = cfg_int(cfg, "num_attention_heads", 12, 1, 65536, &h->n_head, diag)) ||
            (rc = cfg_int(cfg, "intermediate_size", 3072, 1, 1 << 20, &h->d_ff, diag)) ||
            (rc = cfg_int(cfg, "type_vocab_size", 2, 0, 1 << 20, &h->n_types, diag)))
            return rc;
        act = cfg_str(cfg, "hidden_act");
        if (json_object_get(cfg, "hidden_act") && !act)
            return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: hidden_act: not a string");
        eps = json_object_get(cfg, "layer_norm_eps");
        in->ln_eps = 1e-12f;
        if (eps && !json_is_null(eps)) {
            double e = json_number_value(eps);
            if (!json_is_number(eps) || !(e > 0 && e < 1))
                return xf_diag_set(diag, XF_EFORMAT, "config.json: layer_norm_eps: want a "
                                   "number in (0, 1)");
            in->ln_eps = (float)e;
        }
        {
            const char *pet = cfg_str(cfg, "position_embedding_type");
            if (pet && strcmp(pet, "absolute") != 0)
                return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: "
                                   "position_embedding_type %s not supported", pet);
        }
    }
    if (!act)
        act = "gelu";
    if (parse_act(act, &in->act) != 0)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: activation %s not supported "
                           "(gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_fast, "
                           "gelu_accurate, relu)", act);
    if ((rc = cfg_int(cfg, "vocab_size", 30522, 1, 10000000, &h->vocab, diag)) ||
        (rc = cfg_int(cfg, "max_position_embeddings", 512, 1, 1 << 20, &h->max_pos, diag)) ||
        (rc = cfg_int(cfg, "pad_token_id", arch == XF_ARCH_ROBERTA ? 1 : 0, 0, 10000000,
                      &h->pad_id, diag)))
        return rc;
    if (h->d_model % h->n_head != 0)
        return xf_diag_set(diag, XF_EFORMAT, "config.json: hidden size %d is not a multiple "
                           "of the head count %d", h->d_model, h->n_head);
    in->d_model = h->d_model;
    in->n_layer = h->n_layer;
    in->vocab_size = h->vocab;
    in->type_vocab_size = h->n_types;
    if (arch == XF_ARCH_ROBERTA) {
        in->position_offset = h->pad_id + 1;
        in->max_positions = h->max_pos - h->pad_id - 1;
        if (in->max_positions < 1)
            return xf_diag_set(diag, XF_EFORMAT, "config.json: max_position_embeddings %d "
                               "leaves no positions after pad_token_id %d + 1", h->max_pos,
                               h->pad_id);
    } else {
        in->position_offset = 0;
        in->max_positions = h->max_pos;
    }
    /* transformers' BertModel/RobertaModel with is_decoder attend causally (each token to the
     * ones before it); xformd's encoder attends both ways */
    if (cfg_true(cfg, "is_decoder"))
        return xf_diag_set(diag, XF_EUNSUPPORTED, "config.json: is_decoder true (causal "
                           "attention) is not supported");
    in->pre_ln = cfg_true(cfg, "pre_layer_norm") || cfg_true(cfg, "normalize_before");
    in->is_demo = cfg_true(cfg, "xformd_demo");
    return 0;
}

/* Tensors of the encoder (its embeddings./encoder./transformer. names) that the model did not
 * read. transformers' own class for the model_type would read them (ERNIE's
 * task_type_embeddings, LayoutLM's 2-D positions, ...), so a model loaded as BERT only because
 * its model_type is unknown is refused on the first one rather than run without it; for a
 * known model_type they are ignored with a warning, as transformers ignores weights its
 * class does not have. The position_ids/token_type_ids buffers of older checkpoints are no
 * weights. */
static int check_unused(ld_t *L, const char *model_type)
{
    static const char *const ns[] = { "embeddings.", "encoder.", "transformer." };
    static const char *const buffers[] = { "embeddings.position_ids",
                                           "embeddings.token_type_ids" };
    size_t pl = strlen(L->pre);
    int n_unused = 0;
    const char *first = NULL;

    for (int32_t i = 0; i < L->st->n; i++) {
        const char *name = L->st->t[i].name, *rest = name + pl;
        int in_ns = 0;
        if (L->used[i] || strncmp(name, L->pre, pl) != 0)
            continue;
        for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
            in_ns |= !strncmp(rest, ns[k], strlen(ns[k]));
        for (size_t k = 0; k < sizeof buffers / sizeof *buffers; k++)
            in_ns &= strcmp(rest, buffers[k]) != 0;
        if (!in_ns)
            continue;
        if (L->guessed)
            return xf_diag_set(L->diag, XF_EUNSUPPORTED, ST_NAME ": %s is not part of a BERT "
                               "encoder: config.json model_type %s is not one xformd runs "
                               "(bert, roberta, xlm-roberta, camembert, distilbert)", name,
                               model_type ? model_type : "(none)");
        if (!first)
            first = name;
        n_unused++;
    }
    if (n_unused)
        xf_log(XF_LOG_WARN, ST_NAME ": %d encoder tensor%s not used (%s%s)", n_unused,
               n_unused > 1 ? "s" : "", first, n_unused > 1 ? ", ..." : "");
    return 0;
}

static int load_weights(ld_t *L, const json_t *cfg, const hp_t *h)
{
    xf_model_t *m = L->m;
    const json_t *heads_list, *ffn_list;
    int rc;

    if ((rc = get_w(L, &m->word_emb, 1, 1, h->vocab, h->d_model,
                    "embeddings.word_embeddings.weight")) ||
        (rc = get_w(L, &m->pos_emb, 1, 1, h->max_pos, h->d_model,
                    "embeddings.position_embeddings.weight")))
        return rc;
    if (h->n_types > 0 &&
        (rc = get_w(L, &m->type_emb, 1, 1, h->n_types, h->d_model,
                    "embeddings.token_type_embeddings.weight")))
        return rc;
    if ((rc = get_ln(L, &m->emb_ln_g, &m->emb_ln_b, !m->info.pre_ln, h->d_model,
                     "embeddings.LayerNorm")))
        return rc;
    if ((rc = cfg_layer_list(cfg, "num_attention_heads_per_layer", h->n_layer, &heads_list,
                             L->diag)) ||
        (rc = cfg_layer_list(cfg, "intermediate_size_per_layer", h->n_layer, &ffn_list,
                             L->diag)))
        return rc;
    for (int32_t l = 0; l < h->n_layer; l++)
        if ((rc = load_layer(L, cfg, h, l, heads_list, ffn_list)))
            return rc;
    /* A layer beyond n_layer means the config lies about the depth. */
    {
        char nn[128];
        snprintf(nn, sizeof nn, L->is_distil ? "transformer.layer.%d.attention.q_lin.weight"
                                             : "encoder.layer.%d.attention.self.query.weight",
                 h->n_layer);
        if (find(L, 1, nn))
            return xf_diag_set(L->diag, XF_ESHAPE, ST_NAME ": %s%s exists but config.json "
                               "says %d layers", L->pre, nn, h->n_layer);
    }
    if (m->info.pre_ln) {
        static const char *const fin[] = { "encoder.LayerNorm", "encoder.ln",
                                           "encoder.final_layer_norm", "final_layer_norm",
                                           "LayerNorm" };
        for (size_t i = 0; i < sizeof fin / sizeof *fin && !m->final_ln_g.data; i++)
            if ((rc = get_ln(L, &m->final_ln_g, &m->final_ln_b, 0, h->d_model, fin[i])))
                return rc;
        if (!m->final_ln_g.data)
            return xf_diag_set(L->diag, XF_EFORMAT, ST_NAME ": missing %sencoder.LayerNorm."
                               "weight (pre-LN models need a final LayerNorm)", L->pre);
    }
    if (!L->is_distil &&
        (rc = get_lin(L, &m->pool_w, &m->pool_b, 0, 1, h->d_model, h->d_model, "pooler.dense")))
        return rc;
    m->info.has_pooler = m->pool_w.data != NULL;
    return load_head(L, cfg, h);
}

static void clear_weights(xf_model_t *m, int32_t n_layer)
{
    xf_w_t *const w[] = { &m->word_emb, &m->pos_emb, &m->type_emb, &m->emb_ln_g, &m->emb_ln_b,
                          &m->final_ln_g, &m->final_ln_b, &m->pool_w, &m->pool_b,
                          &m->head_dense_w, &m->head_dense_b, &m->cls_w, &m->cls_b };
    for (size_t i = 0; i < sizeof w / sizeof *w; i++)
        memset(w[i], 0, sizeof *w[i]);
    memset(m->layers, 0, (size_t)n_layer * sizeof *m->layers);
}

int xf_model_load(const char *dir, const xf_load_opts_t *opts, xf_model_t **out,
                  xf_diag_t *diag)
{
    xf_load_opts_t none = { 0 };
    xf_model_t *m = NULL;
    json_t *cfg = NULL;
    ld_t L = { 0 };
    hp_t h = { 0 };
    char path[4096];
    enum xf_quant_mode qmode = XF_QUANT_NONE;
    int rc;

    if (!dir || !*dir || !out)
        return xf_diag_set(diag, -EINVAL, "xf_model_load: no directory");
    if (!opts)
        opts = &none;
    if (strlen(dir) > 3000)
        return xf_diag_set(diag, -ENAMETOOLONG, "%.100s...: path too long", dir);
    {
        struct stat st;
        if (stat(dir, &st) != 0) {
            rc = -errno;
            return xf_diag_set(diag, rc, "%s: %s", dir, strerror(-rc));
        }
        if (!S_ISDIR(st.st_mode))
            return xf_diag_set(diag, -ENOTDIR, "%s: not a model directory", dir);
    }
    m = calloc(1, sizeof *m);
    if (!m)
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", dir);
    L.m = m;
    L.diag = diag;
    if ((rc = xf_quant_parse(opts->quantize, &qmode, diag)))
        goto fail;
    if (qmode == XF_QUANT_BF16 && !(xf_kernels()->bf16_w && xf_kernels()->packs_w)) {
        xf_log(XF_LOG_WARN, "quantize bf16: the %s GEMM has no bf16 weights (they need the "
               "AVX-512 kernels); the model runs in fp32", xf_kernels()->gemm_path);
        qmode = XF_QUANT_NONE;
    }
    m->info.quantize = xf_quant_name(qmode);

    if ((rc = load_config(dir, &cfg, diag)))
        goto fail;
    if ((rc = detect_arch(cfg, &m->info.arch, &L.guessed, diag)) ||
        (rc = read_hparams(cfg, m->info.arch, &h, &m->info, diag)))
        goto fail;
    L.is_distil = m->info.arch == XF_ARCH_DISTILBERT;

    snprintf(path, sizeof path, "%s/" ST_NAME, dir);
    if (access(path, F_OK) != 0) {
        char alt[4096];
        snprintf(alt, sizeof alt, "%s/model.safetensors.index.json", dir);
        if (access(alt, F_OK) == 0) {
            rc = xf_diag_set(diag, XF_EUNSUPPORTED, "%s: sharded checkpoints are not "
                             "supported (merge into one " ST_NAME ")", alt);
            goto fail;
        }
        snprintf(alt, sizeof alt, "%s/pytorch_model.bin", dir);
        rc = -ENOENT;
        xf_diag_set(diag, rc, "%s: %s%s", path, strerror(ENOENT),
                    access(alt, F_OK) == 0 ? " (pytorch_model.bin is not read: convert it to "
                                             "safetensors)" : "");
        goto fail;
    }
    if ((rc = xf_st_open(path, &L.st, diag)))
        goto fail;
    if (!(L.used = calloc(L.st->n ? (size_t)L.st->n : 1, 1))) {
        rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    m->layers = calloc((size_t)h.n_layer, sizeof *m->layers);
    m->layer_info = calloc((size_t)h.n_layer, sizeof *m->layer_info);
    if (!m->layers || !m->layer_info) {
        rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    m->info.layers = m->layer_info;
    /* Two passes: every name, shape and dtype is checked before any tensor byte is read or
     * converted; the second pass reads. */
    if ((rc = detect_prefix(&L, m->info.arch)))
        goto fail;
    L.dry = 1;
    if ((rc = load_weights(&L, cfg, &h)) || (rc = check_unused(&L, cfg_str(cfg, "model_type"))))
        goto fail;
    clear_weights(m, h.n_layer);
    L.dry = 0;
    L.n_params = 0;
    if ((rc = load_weights(&L, cfg, &h)))
        goto fail;
    {
        const xf_st_tensor_t *we = find(&L, 1, "embeddings.word_embeddings.weight");
        m->info.file_dtype = xf_st_dtype_name(we->dtype);
    }
    m->info.n_params = L.n_params;
    if (qmode == XF_QUANT_INT8 && (rc = xf_quant_build(m, &m->q8, diag)))
        goto fail;
    xf_st_take_map(L.st, &m->map, &m->map_len);
    madvise(m->map, m->map_len, MADV_WILLNEED);   /* read ahead the in-place weights */
    xf_st_close(L.st);
    L.st = NULL;
    free(L.used);
    L.used = NULL;

    /* names */
    {
        const char *a0 = json_string_value(json_array_get(json_object_get(cfg,
                                                                          "architectures"), 0));
        char an[64];
        if (!a0) {
            static const char *const base[] = { "", "Bert", "Roberta", "DistilBert" };
            snprintf(an, sizeof an, "%s%s", base[m->info.arch],
                     m->info.head ? "ForSequenceClassification" : "Model");
            a0 = an;
        }
        if (!(m->info.arch_name = own_str(m, a0)) || !(m->info.dir = own_str(m, dir)) ||
            !(m->info.name = opts->name && *opts->name ? own_str(m, opts->name)
                                                       : dir_basename(m, dir))) {
            rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", dir);
            goto fail;
        }
    }

    int st_lower;
    if ((rc = load_pooling(dir, &m->info, diag)) ||
        (rc = load_max_seq(dir, &m->info, &st_lower, diag)))
        goto fail;

    rc = xf_tokenizer_load(dir, opts->tokenizer, &m->tok, diag);
    if (rc)
        goto fail;
    /* an explicit cased option (xf_tokenizer_opts_t.lowercase 2) wins over the file */
    if (st_lower && !(opts->tokenizer && opts->tokenizer->lowercase == 2))
        xf_tokenizer_lower_input(m->tok);
    if (xf_tokenizer_vocab_size(m->tok) > h.vocab) {
        rc = xf_diag_set(diag, XF_ESHAPE, "%s: the vocabulary has %d tokens, the model %d word "
                         "embeddings", dir, xf_tokenizer_vocab_size(m->tok), h.vocab);
        goto fail;
    }

    /* default attention: load option, else the config's attention settings, else dense */
    {
        char err[256] = "";
        if (opts->attention) {
            rc = xf_attn_parse(opts->attention, strlen(opts->attention), &m->attn, err,
                               sizeof err);
            if (rc) {
                xf_diag_set(diag, rc, "attention: %s", err);
                goto fail;
            }
        } else {
            rc = xf_attn_from_hf_config(cfg, &m->attn, err, sizeof err);
            if (rc) {
                xf_diag_set(diag, rc, "%s", err[0] ? err : "config.json: attention settings");
                goto fail;
            }
        }
        if (m->attn && (rc = xf_attn_check(m->attn, m, err, sizeof err)) != 0) {
            xf_diag_set(diag, rc, "attention %s: %s", xf_attn_name(m->attn), err);
            goto fail;
        }
    }

    /* The packed weights, once, here: the model is immutable from now on (plan.c). */
    if (m->word_emb.data && (rc = xf_plan_prep_build(m)) != 0) {
        xf_diag_set(diag, rc, "cannot prepare the weights: %s", xf_strerror(rc));
        goto fail;
    }
    json_decref(cfg);
    if (diag) {
        diag->code = 0;
        diag->msg[0] = 0;
    }
    char qinfo[128] = "";
    if (m->q8)
        snprintf(qinfo, sizeof qinfo, ", quantize int8: Q/K/V/O/FFN Linear layers on %s "
                 "kernels, %.1f MB of int8 weights", xf_qkernels()->name, m->q8->bytes / 1e6);
    else if (qmode == XF_QUANT_BF16)
        snprintf(qinfo, sizeof qinfo, ", quantize bf16: Q/K/V/O/FFN weights in bf16, fp32 "
                 "arithmetic");
    xf_log(XF_LOG_INFO, "loaded %s (%s, %d layers, d_model %d, %lld parameters, %s%s)%s",
           m->info.name, m->info.arch_name, m->info.n_layer, m->info.d_model,
           (long long)m->info.n_params, m->info.file_dtype, qinfo,
           m->info.is_demo ? " — DEMO MODEL with random weights" : "");
    *out = m;
    return 0;

fail:
    xf_st_close(L.st);
    free(L.used);
    json_decref(cfg);
    xf_model_free(m);
    return rc;
}
