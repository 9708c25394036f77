/* The Transformer-XL test model: a small random TransfoXLLMHeadModel in the Hugging Face layout
 * (config.json, model.safetensors, vocab.txt, tokenizer_config.json) with an adaptive input
 * and softmax (div_val > 1, two cutoffs), tied crit.* tensors left out as save_pretrained does.
 * Weights are pure functions of (seed, tensor name). Files go through temporary names. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "engine/demo.h"
#include "engine/diag.h"
#include "engine/safetensors.h"
#include "engine/txl_model.h"

void xf_txl_demo_opts_init(xf_txl_demo_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 11;
    o->n_layer = 2;
    o->d_model = 32;
    o->d_embed = 32;
    o->n_head = 4;
    o->d_head = 8;
    o->d_inner = 64;
    o->vocab_size = 300;
    o->cutoffs[0] = 100;
    o->cutoffs[1] = 200;
    o->div_val = 2;
    o->mem_len = 16;
    o->clamp_len = 1000;
    o->untie_r = 1;
    o->tie_weights = 1;
}

typedef struct gen {
    uint64_t seed;
    float base, amp;     /* values base + U[-amp, amp) */
} gen_t;

static void fill(void *ctx, const xf_st_wtensor_t *t, float *buf, size_t numel)
{
    const gen_t *g = ctx;
    xf_demo_uniform(buf, numel, xf_demo_stream(g->seed, t->name), g->amp);
    for (size_t i = 0; i < numel; i++)
        buf[i] += g->base;
}

typedef struct tlist {
    xf_st_wtensor_t t[512];
    char names[512][96];
    int n;
} tlist_t;

static int add(tlist_t *L, const gen_t *g, int64_t r, int64_t c, const char *fmt, ...)
    XF_PRINTF(5, 6);

static int add(tlist_t *L, const gen_t *g, int64_t r, int64_t c, const char *fmt, ...)
{
    va_list ap;
    xf_st_wtensor_t *t;

    if (L->n >= 512)
        return XF_EPARAM;
    t = &L->t[L->n];
    va_start(ap, fmt);
    vsnprintf(L->names[L->n], sizeof L->names[0], fmt, ap);
    va_end(ap);
    memset(t, 0, sizeof *t);
    t->name = L->names[L->n];
    t->dtype = "F32";
    t->rank = c ? 2 : 1;
    t->shape[0] = r;
    t->shape[1] = c;
    t->gen = fill;
    t->gen_ctx = (void *)g;
    L->n++;
    return 0;
}

static int write_json(const char *dir, const char *name, json_t *j, xf_diag_t *diag)
{
    char path[4096], *s;
    int rc;

    if (!j)
        return xf_diag_set(diag, -ENOMEM, "out of memory");
    s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s)
        return xf_diag_set(diag, -ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rc = xf_demo_write_file(path, s, strlen(s), diag);
    free(s);
    return rc;
}

static int check(const xf_txl_demo_opts_t *o, xf_diag_t *diag)
{
    int32_t d2 = o->d_embed / (o->div_val * o->div_val);

    if (o->n_layer < 1 || o->d_model < 2 || o->d_model % 2 || o->n_head < 1 || o->d_head < 1 ||
        o->d_inner < 1 || o->vocab_size < 64 || o->cutoffs[0] < 1 ||
        o->cutoffs[1] <= o->cutoffs[0] || o->cutoffs[1] >= o->vocab_size || o->div_val < 1 ||
        d2 < 1 || o->mem_len < 0 || o->n_layer > 32)
        return xf_diag_set(diag, XF_EPARAM, "transfo-xl demo: shape out of range (even "
                           "d_model, cutoffs 0 < c0 < c1 < vocab >= 64, d_embed/div_val^2 >= 1)");
    return 0;
}

int xf_txl_demo_write(const char *dir, const xf_txl_demo_opts_t *o, xf_diag_t *diag)
{
    static tlist_t L;   /* large; one writer at a time (the CLI and tests) */
    gen_t gw = { o->seed, 0.0f, 0.15f }, gb = { o->seed, 0.0f, 0.1f },
          gln = { o->seed, 1.0f, 0.1f };
    int64_t D = o->d_model, HD = (int64_t)o->n_head * o->d_head;
    int32_t ends[4] = { 0, o->cutoffs[0], o->cutoffs[1], o->vocab_size };
    char path[4096];
    json_t *cfg;
    int rc;

    if ((rc = check(o, diag)) < 0)
        return rc;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return xf_diag_set(diag, -errno, "%s: mkdir: %s", dir, strerror(errno));
    L.n = 0;
    for (int c = 0; c < 3; c++) {
        int64_t d = o->d_embed, rows = ends[c + 1] - ends[c];
        for (int k = 0; k < c; k++)
            d /= o->div_val;
        if (o->div_val == 1 && c > 0)
            break;
        if (o->div_val == 1)
            rows = o->vocab_size;
        rc = add(&L, &gw, rows, d, "transformer.word_emb.emb_layers.%d.weight", c);
        if (!rc && (o->div_val > 1 || o->d_embed != o->d_model))
            rc = add(&L, &gw, D, d, "transformer.word_emb.emb_projs.%d", c);
        if (!rc)
            rc = add(&L, &gb, rows, 0, "crit.out_layers.%d.bias", c);
        if (!rc && !o->tie_weights)
            rc = add(&L, &gw, rows, d, "crit.out_layers.%d.weight", c);
        if (rc)
            return xf_diag_set(diag, rc, "too many tensors");
    }
    /* out_projs: tie_projs = [false, true, true]; 0 is always stored */
    for (int c = 0; c < 3 && (o->div_val > 1 || o->d_embed != o->d_model); c++) {
        int64_t d = o->d_embed;
        for (int k = 0; k < c && o->div_val > 1; k++)
            d /= o->div_val;
        if (c == 0 || !o->tie_weights)
            add(&L, &gw, D, d, "crit.out_projs.%d", c);
    }
    add(&L, &gw, 2, o->d_embed, "crit.cluster_weight");
    add(&L, &gb, 2, 0, "crit.cluster_bias");
    if (!o->untie_r) {
        add(&L, &gb, o->n_head, o->d_head, "transformer.r_w_bias");
        add(&L, &gb, o->n_head, o->d_head, "transformer.r_r_bias");
    }
    for (int l = 0; l < o->n_layer; l++) {
        const char *p = "transformer.layers";
        add(&L, &gw, 3 * HD, D, "%s.%d.dec_attn.qkv_net.weight", p, l);
        add(&L, &gw, HD, D, "%s.%d.dec_attn.r_net.weight", p, l);
        add(&L, &gw, D, HD, "%s.%d.dec_attn.o_net.weight", p, l);
        add(&L, &gln, D, 0, "%s.%d.dec_attn.layer_norm.weight", p, l);
        add(&L, &gb, D, 0, "%s.%d.dec_attn.layer_norm.bias", p, l);
        if (o->untie_r) {
            add(&L, &gb, o->n_head, o->d_head, "%s.%d.dec_attn.r_w_bias", p, l);
            add(&L, &gb, o->n_head, o->d_head, "%s.%d.dec_attn.r_r_bias", p, l);
        }
        add(&L, &gw, o->d_inner, D, "%s.%d.pos_ff.CoreNet.0.weight", p, l);
        add(&L, &gb, o->d_inner, 0, "%s.%d.pos_ff.CoreNet.0.bias", p, l);
        add(&L, &gw, D, o->d_inner, "%s.%d.pos_ff.CoreNet.3.weight", p, l);
        add(&L, &gb, D, 0, "%s.%d.pos_ff.CoreNet.3.bias", p, l);
        add(&L, &gln, D, 0, "%s.%d.pos_ff.layer_norm.weight", p, l);
        add(&L, &gb, D, 0, "%s.%d.pos_ff.layer_norm.bias", p, l);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = xf_st_write(path, L.t, L.n, "{\"format\":\"pt\",\"xformd\":\"demo\"}", diag)) < 0)
        return rc;

    /* HF TransfoXL config.json in one pack (a NULL on out-of-memory reaches write_json, which
     * reports it); the key order is the file's, kept by JSON_PRESERVE_ORDER */
    cfg = json_pack("{s:[s], s:s, s:i, s:[i,i], s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:i, s:i, "
                    "s:i, s:b, s:b, s:i, s:b, s:i, s:[b,b,b], s:b, s:f, s:i}",
                    "architectures", "TransfoXLLMHeadModel", "model_type", "transfo-xl",
                    "vocab_size", o->vocab_size, "cutoffs", o->cutoffs[0], o->cutoffs[1],
                    "d_model", o->d_model, "d_embed", o->d_embed, "n_head", o->n_head,
                    "d_head", o->d_head, "d_inner", o->d_inner, "div_val", o->div_val,
                    "pre_lnorm", o->pre_lnorm, "n_layer", o->n_layer, "mem_len", o->mem_len,
                    "clamp_len", o->clamp_len, "same_length", o->same_length,
                    "untie_r", o->untie_r, "attn_type", 0, "adaptive", 1,
                    "sample_softmax", -1, "tie_projs", 0, 1, 1,
                    "tie_word_embeddings", o->tie_weights, "layer_norm_epsilon", 1e-5,
                    "eos_token_id", 0);
    if ((rc = write_json(dir, "config.json", cfg, diag)) < 0)
        return rc;
    if ((rc = write_json(dir, "tokenizer_config.json",
                         json_pack("{s:b,s:s,s:s}", "lower_case", 1, "eos_token", "<eos>",
                                   "unk_token", "<unk>"), diag)) < 0)
        return rc;
    {
        /* <eos> = 0, <unk> = 1, then "the", "of", ... and w<N> words up to vocab_size */
        static const char *const words[] = { "the", "of", "and", "to", "in", "a", "is", "was",
                                             "he", "for", "it", "with", "as", "his", "on", "be",
                                             ".", ",", "@-@", "=" };
        size_t cap = (size_t)o->vocab_size * 16 + 64, len = 0;
        char *buf = malloc(cap);
        if (!buf)
            return xf_diag_set(diag, -ENOMEM, "out of memory");
        len += (size_t)sprintf(buf + len, "<eos>\n<unk>\n");
        for (int32_t i = 2; i < o->vocab_size; i++) {
            size_t nw = sizeof words / sizeof words[0];
            if ((size_t)(i - 2) < nw)
                len += (size_t)sprintf(buf + len, "%s\n", words[i - 2]);
            else
                len += (size_t)sprintf(buf + len, "w%d\n", i);
        }
        snprintf(path, sizeof path, "%s/vocab.txt", dir);
        rc = xf_demo_write_file(path, buf, len, diag);
        free(buf);
    }
    return rc;
}
