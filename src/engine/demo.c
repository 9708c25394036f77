/* The demo model: a deterministic BERT in the Hugging Face layout (config.json,
 * model.safetensors, vocab.txt, tokenizer_config.json) with weights drawn from per-tensor
 * SplitMix64 streams of a seed, uniform with BERT's init std 0.02, LayerNorm 1/0, and a
 * generated WordPiece vocabulary. Every file goes through a temporary name + rename(). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <xformd/model.h>

#include "engine/demo.h"
#include "engine/diag.h"
#include "engine/safetensors.h"

/* ---- random streams --------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t xf_demo_stream(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    uint64_t s = seed ^ h;
    return splitmix64(&s);
}

void xf_demo_uniform(float *x, size_t n, uint64_t s, float a)
{
    const float k = 2.0f * a / 16777216.0f;   /* 24-bit uniform integers -> [-a, a) */
    size_t i = 0;

    for (; i + 1 < n; i += 2) {
        uint64_t r = splitmix64(&s);
        x[i] = (float)(r >> 40) * k - a;
        x[i + 1] = (float)((r >> 8) & 0xffffffu) * k - a;
    }
    if (i < n)
        x[i] = (float)(splitmix64(&s) >> 40) * k - a;
}

/* ---- files ------------------------------------------------------------------------------ */

int xf_demo_write_file(const char *path, const void *data, size_t len, xf_diag_t *diag)
{
    char *tmp = malloc(strlen(path) + 32);
    FILE *fp;
    int rc = 0;

    if (!tmp)
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    fp = fopen(tmp, "wb");
    if (!fp) {
        rc = -errno;
        xf_diag_set(diag, rc, "%s: %s", tmp, strerror(-rc));
        free(tmp);
        return rc;
    }
    if ((len && fwrite(data, 1, len, fp) != len) || fflush(fp) != 0 || fsync(fileno(fp)) != 0)
        rc = xf_diag_set(diag, -EIO, "%s: write failed", tmp);
    if (fclose(fp) != 0 && !rc)
        rc = xf_diag_set(diag, -EIO, "%s: close failed", tmp);
    if (!rc && rename(tmp, path) != 0) {
        rc = -errno;
        xf_diag_set(diag, rc, "%s: rename: %s", path, strerror(-rc));
    }
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

static int mkdir_p(const char *dir, xf_diag_t *diag)
{
    char buf[4096];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof buf)
        return xf_diag_set(diag, -EINVAL, "bad directory name");
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                int rc = -errno;
                return xf_diag_set(diag, rc, "%s: mkdir: %s", buf, strerror(-rc));
            }
            buf[i] = c;
        }
    }
    return 0;
}

static int write_json(const char *dir, const char *name, json_t *j, xf_diag_t *diag)
{
    char path[4096];
    char *s;
    int rc;

    if (!j)
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", name);
    s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!s)
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    {
        size_t len = strlen(s);
        char *t = realloc(s, len + 2);
        if (!t) {
            free(s);
            return xf_diag_set(diag, -ENOMEM, "%s: out of memory", name);
        }
        s = t;
        s[len] = '\n';
        s[len + 1] = 0;
    }
    rc = xf_demo_write_file(path, s, strlen(s), diag);
    free(s);
    return rc;
}

/* ---- the model -------------------------------------------------------------------------- */

void xf_demo_opts_init(xf_demo_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 42;
    o->n_layer = 12;
    o->d_model = 768;
    o->n_head = 12;
    o->d_ff = 3072;
    o->vocab_size = 30522;
    o->max_positions = 512;
    o->type_vocab_size = 2;
    o->n_labels = 0;
    o->dtype = "F32";
}

void xf_demo_opts_init_tiny(xf_demo_opts_t *o)
{
    xf_demo_opts_init(o);
    o->n_layer = 2;
    o->d_model = 64;
    o->n_head = 4;
    o->d_ff = 128;
    o->vocab_size = 1000;
}

enum { W_NORMAL, W_ONE, W_ZERO };

typedef struct demo_gen {
    uint64_t seed;
} demo_gen;

static void demo_fill(void *ctx, const xf_st_wtensor_t *t, float *buf, size_t n)
{
    const demo_gen *g = ctx;
    const char *name = t->name;
    size_t len = strlen(name);

    /* LayerNorm gamma 1, beta 0; biases 0 (as BERT's init); everything else uniform with the
     * init std 0.02: U(-a, a) has std a/sqrt(3). */
    if (len > 16 && !strcmp(name + len - 16, "LayerNorm.weight")) {
        for (size_t i = 0; i < n; i++)
            buf[i] = 1.0f;
    } else if (len > 5 && !strcmp(name + len - 5, ".bias")) {
        memset(buf, 0, n * sizeof *buf);
    } else {
        xf_demo_uniform(buf, n, xf_demo_stream(g->seed, name), 0.02f * 1.7320508f);
    }
}

#define DEMO_MAX_LAYERS 256

int xf_demo_write(const char *dir, const xf_demo_opts_t *opts, xf_diag_t *diag)
{
    xf_demo_opts_t o;
    xf_st_wtensor_t *t = NULL;
    char (*names)[96] = NULL;
    demo_gen g;
    json_t *cfg;
    char path[4096];
    const char *pre;
    int n = 0, rc, max_t;

    if (!dir || !*dir)
        return xf_diag_set(diag, -EINVAL, "xf_demo_write: no directory");
    if (opts)
        o = *opts;
    else
        xf_demo_opts_init(&o);
    if (!o.dtype)
        o.dtype = "F32";
    if (strcmp(o.dtype, "F32") && strcmp(o.dtype, "F16") && strcmp(o.dtype, "BF16"))
        return xf_diag_set(diag, XF_EPARAM, "dtype %s: want F32, F16 or BF16", o.dtype);
    if (o.n_layer < 1 || o.n_layer > DEMO_MAX_LAYERS || o.d_model < 1 || o.d_model > 16384 ||
        o.n_head < 1 || o.d_model % o.n_head != 0 || o.d_ff < 1 || o.d_ff > 65536 ||
        o.max_positions < 1 || o.max_positions > 65536 || o.type_vocab_size < 0 ||
        o.type_vocab_size > 1024 || o.n_labels < 0 || o.n_labels > 100000)
        return xf_diag_set(diag, XF_EPARAM, "demo shape out of range (layers %d, d_model %d, "
                           "heads %d, d_ff %d, positions %d, types %d, labels %d)", o.n_layer,
                           o.d_model, o.n_head, o.d_ff, o.max_positions, o.type_vocab_size,
                           o.n_labels);
    if (o.vocab_size < 1000 || o.vocab_size > 1000000)
        return xf_diag_set(diag, XF_EPARAM, "vocab_size %d: want 1000..1000000", o.vocab_size);
    if (snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path)
        return xf_diag_set(diag, -ENAMETOOLONG, "%s: path too long", dir);
    rc = mkdir_p(dir, diag);
    if (rc)
        return rc;

    /* config.json */
    cfg = json_object();
    if (cfg) {
        json_t *arch = json_array();
        json_array_append_new(arch, json_string(o.n_labels > 0 ? "BertForSequenceClassification"
                                                               : "BertModel"));
        json_object_set_new(cfg, "architectures", arch);
        json_object_set_new(cfg, "model_type", json_string("bert"));
        json_object_set_new(cfg, "hidden_size", json_integer(o.d_model));
        json_object_set_new(cfg, "num_hidden_layers", json_integer(o.n_layer));
        json_object_set_new(cfg, "num_attention_heads", json_integer(o.n_head));
        json_object_set_new(cfg, "intermediate_size", json_integer(o.d_ff));
        json_object_set_new(cfg, "hidden_act", json_string("gelu"));
        json_object_set_new(cfg, "hidden_dropout_prob", json_real(0.1));
        json_object_set_new(cfg, "attention_probs_dropout_prob", json_real(0.1));
        json_object_set_new(cfg, "initializer_range", json_real(0.02));
        json_object_set_new(cfg, "layer_norm_eps", json_real(1e-12));
        json_object_set_new(cfg, "max_position_embeddings", json_integer(o.max_positions));
        json_object_set_new(cfg, "type_vocab_size", json_integer(o.type_vocab_size));
        json_object_set_new(cfg, "vocab_size", json_integer(o.vocab_size));
        json_object_set_new(cfg, "pad_token_id", json_integer(0));
        json_object_set_new(cfg, "position_embedding_type", json_string("absolute"));
        json_object_set_new(cfg, "torch_dtype", json_string(
            !strcmp(o.dtype, "F32") ? "float32" : !strcmp(o.dtype, "F16") ? "float16"
                                                                          : "bfloat16"));
        if (o.n_labels > 0) {
            json_t *i2l = json_object(), *l2i = json_object();
            for (int i = 0; i < o.n_labels; i++) {
                char k[32], lab[32];
                snprintf(k, sizeof k, "%d", i);
                snprintf(lab, sizeof lab, "LABEL_%d", i);
                json_object_set_new(i2l, k, json_string(lab));
                json_object_set_new(l2i, lab, json_integer(i));
            }
            json_object_set_new(cfg, "id2label", i2l);
            json_object_set_new(cfg, "label2id", l2i);
        }
        json_object_set_new(cfg, "xformd_demo", json_true());
        json_object_set_new(cfg, "xformd_demo_version", json_integer(XF_DEMO_VERSION));
        {
            char sd[32];
            snprintf(sd, sizeof sd, "%llu", (unsigned long long)o.seed);
            json_object_set_new(cfg, "xformd_demo_seed", json_string(sd));
        }
    }
    rc = write_json(dir, "config.json", cfg, diag);
    if (rc)
        return rc;

    /* vocab.txt + tokenizer_config.json */
    {
        char vp[4096];
        snprintf(vp, sizeof vp, "%s/vocab.txt", dir);
        rc = xf_demo_vocab_write(vp, o.vocab_size, diag);
        if (rc)
            return rc;
    }
    cfg = json_pack("{s:b, s:i, s:s, s:s, s:s, s:s, s:s, s:s}", "do_lower_case", 1,
                    "model_max_length", (json_int_t)o.max_positions, "tokenizer_class",
                    "BertTokenizer", "unk_token", "[UNK]", "sep_token", "[SEP]", "pad_token",
                    "[PAD]", "cls_token", "[CLS]", "mask_token", "[MASK]");
    rc = write_json(dir, "tokenizer_config.json", cfg, diag);
    if (rc)
        return rc;

    /* model.safetensors */
    max_t = 5 + 16 * o.n_layer + 4;
    t = calloc((size_t)max_t, sizeof *t);
    names = calloc((size_t)max_t, sizeof *names);
    if (!t || !names) {
        rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    pre = o.n_labels > 0 ? "bert." : "";
#define T2(r, c, ...)                                                                      \
    do {                                                                                   \
        snprintf(names[n], sizeof names[n], __VA_ARGS__);                                  \
        t[n].name = names[n];                                                              \
        t[n].rank = (c) > 0 ? 2 : 1;                                                       \
        t[n].shape[0] = (r);                                                               \
        t[n].shape[1] = (c);                                                               \
        n++;                                                                               \
    } while (0)
    T2(o.vocab_size, o.d_model, "%sembeddings.word_embeddings.weight", pre);
    T2(o.max_positions, o.d_model, "%sembeddings.position_embeddings.weight", pre);
    if (o.type_vocab_size > 0)
        T2(o.type_vocab_size, o.d_model, "%sembeddings.token_type_embeddings.weight", pre);
    T2(o.d_model, 0, "%sembeddings.LayerNorm.weight", pre);
    T2(o.d_model, 0, "%sembeddings.LayerNorm.bias", pre);
    for (int l = 0; l < o.n_layer; l++) {
        static const char *const qkv[3] = { "query", "key", "value" };
        for (int k = 0; k < 3; k++) {
            T2(o.d_model, o.d_model, "%sencoder.layer.%d.attention.self.%s.weight", pre, l,
               qkv[k]);
            T2(o.d_model, 0, "%sencoder.layer.%d.attention.self.%s.bias", pre, l, qkv[k]);
        }
        T2(o.d_model, o.d_model, "%sencoder.layer.%d.attention.output.dense.weight", pre, l);
        T2(o.d_model, 0, "%sencoder.layer.%d.attention.output.dense.bias", pre, l);
        T2(o.d_model, 0, "%sencoder.layer.%d.attention.output.LayerNorm.weight", pre, l);
        T2(o.d_model, 0, "%sencoder.layer.%d.attention.output.LayerNorm.bias", pre, l);
        T2(o.d_ff, o.d_model, "%sencoder.layer.%d.intermediate.dense.weight", pre, l);
        T2(o.d_ff, 0, "%sencoder.layer.%d.intermediate.dense.bias", pre, l);
        T2(o.d_model, o.d_ff, "%sencoder.layer.%d.output.dense.weight", pre, l);
        T2(o.d_model, 0, "%sencoder.layer.%d.output.dense.bias", pre, l);
        T2(o.d_model, 0, "%sencoder.layer.%d.output.LayerNorm.weight", pre, l);
        T2(o.d_model, 0, "%sencoder.layer.%d.output.LayerNorm.bias", pre, l);
    }
    T2(o.d_model, o.d_model, "%spooler.dense.weight", pre);
    T2(o.d_model, 0, "%spooler.dense.bias", pre);
    if (o.n_labels > 0) {
        T2(o.n_labels, o.d_model, "classifier.weight");
        T2(o.n_labels, 0, "classifier.bias");
    }
#undef T2
    g.seed = o.seed;
    for (int i = 0; i < n; i++) {
        t[i].dtype = o.dtype;
        t[i].gen = demo_fill;
        t[i].gen_ctx = &g;
    }
    rc = xf_st_write(path, t, n, "{\"format\":\"pt\",\"xformd\":\"demo\"}", diag);
out:
    free(t);
    free(names);
    return rc;
}

int xf_demo_current(const char *dir)
{
    char path[4200];
    if (!dir || snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path ||
        access(path, R_OK) != 0)
        return 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = json_load_file(path, 0, NULL);
    if (!cfg)
        return 0;
    json_t *v = json_object_get(cfg, "xformd_demo_version");
    int ok = json_is_true(json_object_get(cfg, "xformd_demo")) && json_is_integer(v) &&
             json_integer_value(v) == XF_DEMO_VERSION;
    json_decref(cfg);
    return ok;
}
