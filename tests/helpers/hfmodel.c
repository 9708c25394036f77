/* Test helper: writes small Hugging Face model directories (BERT / RoBERTa / DistilBERT, with
 * or without prefix, F32/F16/BF16, heterogeneous layers, classifier heads, sentence-transformers
 * pooling files) through the engine's safetensors writer and demo vocabulary. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "engine/demo.h"
#include "engine/safetensors.h"
#include "hfmodel.h"

void xf_test_hfmodel_opts_init(xf_test_hfmodel_opts *o)
{
    memset(o, 0, sizeof *o);
    o->arch = "bert";
    o->n_layer = 2;
    o->d_model = 32;
    o->d_head = 8;
    o->d_ff = 64;
    o->vocab = 256;
    o->max_pos = 64;
    o->dtype = "F32";
    o->seed = 1;
    o->act = "gelu";
    o->scale = 0.1f;
}

typedef struct hf_gen {
    uint64_t seed;
    float scale;
    const char *pre;        /* stripped before seeding: prefixed models get the same weights */
    const xf_test_hfmodel_opts *o;   /* zero_heads / zero_ffn */
} hf_gen;

/* 1 when name is exactly fmt with its one %d (the layer) filled in (n: scratch int). */
#define NAME_IS(name, fmt, l) \
    (n = 0, sscanf((name), fmt "%n", (l), &n) == 1 && n > 0 && (name)[n] == '\0')

/* Zero the columns of an output projection / FFN2 weight the options ablate. */
static void hf_ablate(const hf_gen *g, const char *name, const xf_st_wtensor_t *t, float *buf)
{
    int l = -1, n, heads;
    const int64_t rows = t->shape[0], cols = t->rank == 2 ? t->shape[1] : 0;

    if (NAME_IS(name, "encoder.layer.%d.attention.output.dense.weight", &l) ||
        NAME_IS(name, "transformer.layer.%d.attention.out_lin.weight", &l))
        heads = 1;
    else if (NAME_IS(name, "encoder.layer.%d.output.dense.weight", &l) ||
             NAME_IS(name, "transformer.layer.%d.ffn.lin2.weight", &l))
        heads = 0;
    else
        return;
    if (l < 0 || l >= XF_TEST_HF_MAX_LAYERS || cols <= 0)
        return;
    for (int64_t c = 0; c < cols; c++) {
        int zero = heads ? (g->o->zero_heads[l] >> (c / g->o->d_head)) & 1u
                         : g->o->zero_ffn[l] != NULL && g->o->zero_ffn[l][c];
        if (zero)
            for (int64_t r = 0; r < rows; r++)
                buf[r * cols + c] = 0.0f;
    }
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int is_ln(const char *name)
{
    return strstr(name, "LayerNorm.") || strstr(name, "layer_norm.");
}

static void hf_fill(void *ctx, const xf_st_wtensor_t *t, float *buf, size_t n)
{
    const hf_gen *g = ctx;
    const char *name = t->name;
    size_t pl = strlen(g->pre);
    if (pl && !strncmp(name, g->pre, pl))
        name += pl;
    xf_demo_uniform(buf, n, xf_demo_stream(g->seed, name), g->scale);
    hf_ablate(g, name, t, buf);
    if (is_ln(t->name) && ends_with(t->name, ".weight"))
        for (size_t i = 0; i < n; i++)
            buf[i] += 1.0f;
}

static int write_json(const char *dir, const char *name, json_t *j)
{
    char path[4096];
    int rc;
    if (!j)
        return -ENOMEM;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? 0 : -EIO;
    json_decref(j);
    if (rc)
        fprintf(stderr, "hfmodel: cannot write %s\n", path);
    return rc;
}

#define MAX_T (16 + 20 * XF_TEST_HF_MAX_LAYERS)

typedef struct tlist {
    xf_st_wtensor_t t[MAX_T];
    char names[MAX_T][128];
    int n;
} tlist;

static void add(tlist *l, int64_t r, int64_t c, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add(tlist *l, int64_t r, int64_t c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->names[l->n], sizeof l->names[l->n], fmt, ap);
    va_end(ap);
    l->t[l->n].name = l->names[l->n];
    l->t[l->n].rank = c > 0 ? 2 : 1;
    l->t[l->n].shape[0] = r;
    l->t[l->n].shape[1] = c;
    l->n++;
}

int xf_test_hfmodel_write(const char *dir, const xf_test_hfmodel_opts *op)
{
    xf_test_hfmodel_opts o;
    tlist *l;
    hf_gen g;
    json_t *cfg;
    char path[4096];
    const char *pre;
    int arch, rc, heads[XF_TEST_HF_MAX_LAYERS], ffn[XF_TEST_HF_MAX_LAYERS];
    int n_head0, pos_rows, n_types, pad_id;

    if (op)
        o = *op;
    else
        xf_test_hfmodel_opts_init(&o);
    if (!o.arch)
        o.arch = "bert";
    if (!o.dtype)
        o.dtype = "F32";
    if (!o.act)
        o.act = "gelu";
    if (o.scale == 0)
        o.scale = 0.1f;
    arch = !strcmp(o.arch, "bert") ? 0 : !strcmp(o.arch, "roberta") ? 1
         : !strcmp(o.arch, "distilbert") ? 2 : -1;
    if (arch < 0 || o.n_layer < 1 || o.n_layer > XF_TEST_HF_MAX_LAYERS || o.d_head < 1 ||
        o.d_model < 1 || o.d_model % o.d_head != 0 || o.vocab < XF_DEMO_VOCAB_MIN ||
        o.max_pos < 1 || o.d_ff < 1) {
        fprintf(stderr, "hfmodel: bad options\n");
        return -EINVAL;
    }
    n_head0 = o.d_model / o.d_head;
    for (int i = 0; i < o.n_layer; i++) {
        heads[i] = o.heads[i] > 0 ? o.heads[i] : n_head0;
        ffn[i] = o.ffn[i] > 0 ? o.ffn[i] : o.d_ff;
        if (heads[i] > n_head0) {
            fprintf(stderr, "hfmodel: layer %d: %d heads > d_model / d_head\n", i, heads[i]);
            return -EINVAL;
        }
        if (ffn[i] > o.d_ff)
            o.d_ff = ffn[i];    /* the config's intermediate_size is the widest layer */
    }
    pad_id = arch == 1 ? 1 : 0;
    pos_rows = arch == 1 ? o.max_pos + pad_id + 1 : o.max_pos;
    n_types = arch == 0 ? 2 : arch == 1 ? 1 : 0;
    mkdir(dir, 0755);

    /* config.json */
    cfg = json_object();
    if (!cfg)
        return -ENOMEM;
    {
        static const char *const base[3] = { "Bert", "Roberta", "DistilBert" };
        static const char *const mt[3] = { "bert", "roberta", "distilbert" };
        char an[64];
        snprintf(an, sizeof an, "%s%s", base[arch],
                 o.n_labels > 0 ? "ForSequenceClassification" : "Model");
        json_object_set_new(cfg, "architectures", json_pack("[s]", an));
        json_object_set_new(cfg, "model_type", json_string(mt[arch]));
    }
    if (arch == 2) {
        json_object_set_new(cfg, "dim", json_integer(o.d_model));
        json_object_set_new(cfg, "n_layers", json_integer(o.n_layer));
        json_object_set_new(cfg, "n_heads", json_integer(n_head0));
        json_object_set_new(cfg, "hidden_dim", json_integer(o.d_ff));
        json_object_set_new(cfg, "activation", json_string(o.act));
        json_object_set_new(cfg, "sinusoidal_pos_embds", json_false());
    } else {
        json_object_set_new(cfg, "hidden_size", json_integer(o.d_model));
        json_object_set_new(cfg, "num_hidden_layers", json_integer(o.n_layer));
        json_object_set_new(cfg, "num_attention_heads", json_integer(n_head0));
        json_object_set_new(cfg, "intermediate_size", json_integer(o.d_ff));
        json_object_set_new(cfg, "hidden_act", json_string(o.act));
        json_object_set_new(cfg, "layer_norm_eps", json_real(arch == 1 ? 1e-5 : 1e-12));
        json_object_set_new(cfg, "type_vocab_size", json_integer(n_types));
    }
    json_object_set_new(cfg, "max_position_embeddings", json_integer(pos_rows));
    json_object_set_new(cfg, "vocab_size", json_integer(o.vocab));
    json_object_set_new(cfg, "pad_token_id", json_integer(pad_id));
    if (o.pre_ln)
        json_object_set_new(cfg, "pre_layer_norm", json_true());
    if (o.per_layer_config) {
        json_t *h = json_array(), *f = json_array();
        for (int i = 0; i < o.n_layer; i++) {
            json_array_append_new(h, json_integer(heads[i]));
            json_array_append_new(f, json_integer(ffn[i]));
        }
        json_object_set_new(cfg, "num_attention_heads_per_layer", h);
        json_object_set_new(cfg, "intermediate_size_per_layer", f);
    }
    if (o.n_labels > 0) {
        json_t *i2l = json_object(), *l2i = json_object();
        for (int i = 0; i < o.n_labels; i++) {
            char k[16], lab[32];
            snprintf(k, sizeof k, "%d", i);
            snprintf(lab, sizeof lab, "label_%d", i);
            json_object_set_new(i2l, k, json_string(lab));
            json_object_set_new(l2i, lab, json_integer(i));
        }
        json_object_set_new(cfg, "id2label", i2l);
        json_object_set_new(cfg, "label2id", l2i);
    }
    rc = write_json(dir, "config.json", cfg);
    if (rc)
        return rc;
    rc = write_json(dir, "tokenizer_config.json", json_pack("{s:b}", "do_lower_case", 1));
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    rc = xf_demo_vocab_write(path, o.vocab, NULL);
    if (rc) {
        fprintf(stderr, "hfmodel: cannot write %s\n", path);
        return rc;
    }

    /* sentence-transformers pooling */
    if (o.pooling) {
        json_t *mods = json_pack("[{s:i,s:s,s:s,s:s},{s:i,s:s,s:s,s:s}]",
                                 "idx", 0, "name", "0", "path", "", "type",
                                 "sentence_transformers.models.Transformer",
                                 "idx", 1, "name", "1", "path", "1_Pooling", "type",
                                 "sentence_transformers.models.Pooling");
        if (mods && o.normalize)
            json_array_append_new(mods, json_pack("{s:i,s:s,s:s,s:s}", "idx", 2, "name", "2",
                                                  "path", "2_Normalize", "type",
                                                  "sentence_transformers.models.Normalize"));
        rc = write_json(dir, "modules.json", mods);
        if (rc)
            return rc;
        snprintf(path, sizeof path, "%s/1_Pooling", dir);
        mkdir(path, 0755);
        rc = write_json(path, "config.json",
                        json_pack("{s:i,s:b,s:b,s:b,s:b}", "word_embedding_dimension",
                                  o.d_model, "pooling_mode_cls_token",
                                  !strcmp(o.pooling, "cls"), "pooling_mode_mean_tokens",
                                  !strcmp(o.pooling, "mean"), "pooling_mode_max_tokens", 0,
                                  "pooling_mode_mean_sqrt_len_tokens", 0));
        if (rc)
            return rc;
    }

    /* tensors */
    l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    pre = !o.prefix ? "" : arch == 0 ? "bert." : arch == 1 ? "roberta." : "distilbert.";
    add(l, o.vocab, o.d_model, "%sembeddings.word_embeddings.weight", pre);
    add(l, pos_rows, o.d_model, "%sembeddings.position_embeddings.weight", pre);
    if (n_types > 0)
        add(l, n_types, o.d_model, "%sembeddings.token_type_embeddings.weight", pre);
    add(l, o.d_model, 0, "%sembeddings.LayerNorm.weight", pre);
    add(l, o.d_model, 0, "%sembeddings.LayerNorm.bias", pre);
    for (int i = 0; i < o.n_layer; i++) {
        int da = heads[i] * o.d_head, f = ffn[i];
        if (arch == 2) {
            static const char *const qkv[3] = { "q_lin", "k_lin", "v_lin" };
            for (int k = 0; k < 3; k++) {
                add(l, da, o.d_model, "%stransformer.layer.%d.attention.%s.weight", pre, i,
                    qkv[k]);
                add(l, da, 0, "%stransformer.layer.%d.attention.%s.bias", pre, i, qkv[k]);
            }
            add(l, o.d_model, da, "%stransformer.layer.%d.attention.out_lin.weight", pre, i);
            add(l, o.d_model, 0, "%stransformer.layer.%d.attention.out_lin.bias", pre, i);
            add(l, o.d_model, 0, "%stransformer.layer.%d.sa_layer_norm.weight", pre, i);
            add(l, o.d_model, 0, "%stransformer.layer.%d.sa_layer_norm.bias", pre, i);
            add(l, f, o.d_model, "%stransformer.layer.%d.ffn.lin1.weight", pre, i);
            add(l, f, 0, "%stransformer.layer.%d.ffn.lin1.bias", pre, i);
            add(l, o.d_model, f, "%stransformer.layer.%d.ffn.lin2.weight", pre, i);
            add(l, o.d_model, 0, "%stransformer.layer.%d.ffn.lin2.bias", pre, i);
            add(l, o.d_model, 0, "%stransformer.layer.%d.output_layer_norm.weight", pre, i);
            add(l, o.d_model, 0, "%stransformer.layer.%d.output_layer_norm.bias", pre, i);
        } else {
            static const char *const qkv[3] = { "query", "key", "value" };
            for (int k = 0; k < 3; k++) {
                add(l, da, o.d_model, "%sencoder.layer.%d.attention.self.%s.weight", pre, i,
                    qkv[k]);
                add(l, da, 0, "%sencoder.layer.%d.attention.self.%s.bias", pre, i, qkv[k]);
            }
            add(l, o.d_model, da, "%sencoder.layer.%d.attention.output.dense.weight", pre, i);
            add(l, o.d_model, 0, "%sencoder.layer.%d.attention.output.dense.bias", pre, i);
            add(l, o.d_model, 0, "%sencoder.layer.%d.attention.output.LayerNorm.weight", pre, i);
            add(l, o.d_model, 0, "%sencoder.layer.%d.attention.output.LayerNorm.bias", pre, i);
            add(l, f, o.d_model, "%sencoder.layer.%d.intermediate.dense.weight", pre, i);
            add(l, f, 0, "%sencoder.layer.%d.intermediate.dense.bias", pre, i);
            add(l, o.d_model, f, "%sencoder.layer.%d.output.dense.weight", pre, i);
            add(l, o.d_model, 0, "%sencoder.layer.%d.output.dense.bias", pre, i);
            add(l, o.d_model, 0, "%sencoder.layer.%d.output.LayerNorm.weight", pre, i);
            add(l, o.d_model, 0, "%sencoder.layer.%d.output.LayerNorm.bias", pre, i);
        }
    }
    if (o.pre_ln && arch != 2) {
        add(l, o.d_model, 0, "%sencoder.LayerNorm.weight", pre);
        add(l, o.d_model, 0, "%sencoder.LayerNorm.bias", pre);
    }
    if (arch == 0 && !o.no_pooler) {
        add(l, o.d_model, o.d_model, "%spooler.dense.weight", pre);
        add(l, o.d_model, 0, "%spooler.dense.bias", pre);
    }
    if (o.n_labels > 0) {
        if (arch == 0) {
            add(l, o.n_labels, o.d_model, "classifier.weight");
            add(l, o.n_labels, 0, "classifier.bias");
        } else if (arch == 1) {
            add(l, o.d_model, o.d_model, "classifier.dense.weight");
            add(l, o.d_model, 0, "classifier.dense.bias");
            add(l, o.n_labels, o.d_model, "classifier.out_proj.weight");
            add(l, o.n_labels, 0, "classifier.out_proj.bias");
        } else {
            add(l, o.d_model, o.d_model, "pre_classifier.weight");
            add(l, o.d_model, 0, "pre_classifier.bias");
            add(l, o.n_labels, o.d_model, "classifier.weight");
            add(l, o.n_labels, 0, "classifier.bias");
        }
    }
    g.seed = o.seed;
    g.scale = o.scale;
    g.pre = pre;
    g.o = &o;
    for (int i = 0; i < l->n; i++) {
        l->t[i].dtype = o.dtype;
        l->t[i].gen = hf_fill;
        l->t[i].gen_ctx = &g;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    {
        xf_diag_t d = { 0 };
        rc = xf_st_write(path, l->t, l->n, "{\"format\":\"pt\"}", &d);
        if (rc)
            fprintf(stderr, "hfmodel: %s\n", d.msg);
    }
    free(l);
    return rc;
}
