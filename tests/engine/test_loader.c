/* Tests for the model loader (src/engine/loader.c) and the demo model (src/engine/demo.c):
 * BERT / RoBERTa / DistilBERT directories with and without prefixes, F16/BF16 against F32,
 * heterogeneous layers, classifier heads, sentence-transformers pooling, missing files, configs
 * that lie about sizes, renamed/missing/reshaped tensors, and the deterministic demo model. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <xformd/attention.h>
#include <xformd/model.h>
#include <xformd/tokenizer.h>

#include "engine/demo.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "../helpers/hfmodel.h"
#include "../helpers/xf_test.h"


static xf_model_t *load_ok(const char *dir, const xf_load_opts_t *o)
{
    xf_model_t *m = NULL;
    xf_diag_t d = { 0 };
    int rc = xf_model_load(dir, o, &m, &d);
    if (rc != 0)
        fail_msg("load %s: %d %s", dir, rc, d.msg);
    assert_non_null(m);
    return m;
}

/* Load dir expecting code; the message must contain s1 (and s2). Checks named name (see
 * XF_CHECK): every failing case of a table is reported. */
static void check_load_fails(const char *name, const char *dir, int code, const char *s1,
                             const char *s2)
{
    xf_model_t *m = NULL;
    xf_diag_t d = { 0 };
    int rc = xf_model_load(dir, NULL, &m, &d);
    if (!XF_CHECK_INT(name, rc, code))
        print_message("# load %s: %s\n", dir, d.msg);
    XF_CHECK(name, m == NULL);
    xf_model_free(m);
    XF_CHECK_INT(name, d.code, code);
    if (s1 && !XF_CHECK(name, strstr(d.msg, s1) != NULL))
        print_message("# message \"%s\" lacks \"%s\"\n", d.msg, s1);
    if (s2 && !XF_CHECK(name, strstr(d.msg, s2) != NULL))
        print_message("# message \"%s\" lacks \"%s\"\n", d.msg, s2);
}

/* The same for one load, asserted at once (named by its directory). */
static void load_fail(const char *dir, int code, const char *s1, const char *s2)
{
    check_load_fails(dir, dir, code, s1, s2);
    xf_cases_end();
}

static void hf(const char *dir, const xf_test_hfmodel_opts *o)
{
    assert_int_equal(xf_test_hfmodel_write(dir, o), 0);
}

static void edit_config(const char *dir, const char *key, json_t *val)
{
    char path[1200];
    json_t *c;
    snprintf(path, sizeof path, "%s/config.json", dir);
    c = json_load_file(path, 0, NULL);
    assert_non_null(c);
    if (val)
        json_object_set_new(c, key, val);
    else
        json_object_del(c, key);
    assert_int_equal(json_dump_file(c, path, JSON_INDENT(1)), 0);
    json_decref(c);
}

/* Rewrite model.safetensors: drop tensor `drop`, rename `from` to `to`, or give tensor `from`
 * the 2-D shape [r, c] (data cut or zero-padded); add `extra` (an I64 [1,4] tensor) if set. */
typedef struct rw {
    const char *drop, *from, *to, *extra, *extra_dtype;
    const char *add_prefix;     /* put before every name but the classifier's */
    int64_t r, c;
} rw_t;

static void rewrite(const char *dir, const rw_t *w)
{
    char path[1200];
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    xf_st_wtensor_t *t;
    void **bufs;
    int n = 0;
    static const int64_t ids[4] = { 0, 1, 2, 3 };

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(xf_st_open(path, &f, &d), 0);
    t = calloc((size_t)f->n + 1, sizeof *t);
    bufs = calloc((size_t)f->n + 1, sizeof *bufs);
    for (int32_t i = 0; i < f->n; i++) {
        const xf_st_tensor_t *s = &f->t[i];
        size_t bytes = (size_t)(s->end - s->begin);
        if (w->drop && !strcmp(s->name, w->drop))
            continue;
        t[n].name = s->name;
        if (w->add_prefix && strncmp(s->name, "classifier", 10) != 0) {
            bufs[n] = malloc(strlen(w->add_prefix) + strlen(s->name) + 1);
            sprintf(bufs[n], "%s%s", w->add_prefix, s->name);
            t[n].name = bufs[n];
        }
        t[n].dtype = xf_st_dtype_name(s->dtype);
        t[n].rank = s->rank;
        memcpy(t[n].shape, s->shape, sizeof s->shape);
        if (w->from && !strcmp(s->name, w->from)) {
            if (w->to) {
                t[n].name = w->to;
            } else {
                size_t nb = (size_t)(w->r * w->c) * (size_t)xf_st_dtype_size(s->dtype);
                t[n].rank = 2;
                t[n].shape[0] = w->r;
                t[n].shape[1] = w->c;
                bytes = nb < bytes ? nb : bytes;
                free(bufs[n]);
                bufs[n] = calloc(1, nb + 1);
                memcpy(bufs[n], f->data + s->begin, bytes);
                t[n].raw = bufs[n];
                t[n].raw_len = nb;
                n++;
                continue;
            }
        }
        t[n].raw = f->data + s->begin;
        t[n].raw_len = bytes;
        if (!bytes)
            t[n].raw = "";
        n++;
    }
    if (w->extra) {
        t[n].name = w->extra;
        t[n].dtype = w->extra_dtype ? w->extra_dtype : "I64";
        t[n].rank = 2;
        t[n].shape[0] = 1;
        t[n].shape[1] = 4;
        t[n].raw = ids;
        t[n].raw_len = sizeof ids;
        n++;
    }
    /* path is still mapped by f: xf_st_write goes through a temporary file + rename */
    if (xf_st_write(path, t, n, NULL, &d) != 0)
        fail_msg("rewrite: %s", d.msg);
    for (int i = 0; i <= f->n; i++)
        free(bufs[i]);
    free(bufs);
    free(t);
    xf_st_close(f);
}

static int64_t bert_params(int v, int p, int ty, int d, int L, const int *heads, int dh,
                           const int *ffn, int pooler)
{
    int64_t n = (int64_t)v * d + (int64_t)p * d + (int64_t)ty * d + 2 * d;
    for (int l = 0; l < L; l++) {
        int64_t da = (int64_t)heads[l] * dh, f = ffn[l];
        n += 3 * (da * d + da) + (d * da + d) + 2 * d + (f * d + f) + (d * f + d) + 2 * d;
    }
    if (pooler)
        n += (int64_t)d * d + d;
    return n;
}

static void w_equal(const xf_w_t *a, const xf_w_t *b)
{
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    if (!a->data || !b->data) {
        assert_true(a->data == b->data);
        return;
    }
    assert_memory_equal(a->data, b->data, (size_t)a->rows * (size_t)a->cols * sizeof(float));
}

/* |a - b| <= rel·|a| + atol elementwise (the dtype's rounding error). */
static void w_close(const xf_w_t *a, const xf_w_t *b, double rel, double atol)
{
    size_t n = (size_t)a->rows * (size_t)a->cols;
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_true((a->data == NULL) == (b->data == NULL));
    for (size_t i = 0; a->data && i < n; i++)
        if (fabs((double)a->data[i] - b->data[i]) > rel * fabs((double)a->data[i]) + atol)
            fail_msg("element %zu: %.9g vs %.9g", i, (double)a->data[i], (double)b->data[i]);
}

static void models_close(const xf_model_t *a, const xf_model_t *b, double rel, double atol)
{
    assert_int_equal(a->info.n_layer, b->info.n_layer);
    w_close(&a->word_emb, &b->word_emb, rel, atol);
    w_close(&a->pos_emb, &b->pos_emb, rel, atol);
    w_close(&a->type_emb, &b->type_emb, rel, atol);
    w_close(&a->emb_ln_g, &b->emb_ln_g, rel, atol);
    w_close(&a->emb_ln_b, &b->emb_ln_b, rel, atol);
    w_close(&a->pool_w, &b->pool_w, rel, atol);
    w_close(&a->cls_w, &b->cls_w, rel, atol);
    w_close(&a->head_dense_w, &b->head_dense_w, rel, atol);
    for (int l = 0; l < a->info.n_layer; l++) {
        const xf_layer_t *x = &a->layers[l], *y = &b->layers[l];
        w_close(&x->q_w, &y->q_w, rel, atol);
        w_close(&x->k_b, &y->k_b, rel, atol);
        w_close(&x->v_w, &y->v_w, rel, atol);
        w_close(&x->o_w, &y->o_w, rel, atol);
        w_close(&x->ln1_g, &y->ln1_g, rel, atol);
        w_close(&x->ff1_w, &y->ff1_w, rel, atol);
        w_close(&x->ff2_b, &y->ff2_b, rel, atol);
        w_close(&x->ln2_b, &y->ln2_b, rel, atol);
    }
}

static void check_layer_tensors(const xf_model_t *m)
{
    const int32_t d = m->info.d_model;
    for (int l = 0; l < m->info.n_layer; l++) {
        const xf_layer_t *y = &m->layers[l];
        const int32_t da = y->n_head * y->d_head;
        assert_int_equal(y->n_head, m->info.layers[l].n_head);
        assert_int_equal(y->d_ff, m->info.layers[l].d_ff);
        assert_non_null(y->q_w.data);
        assert_int_equal(y->q_w.rows, da);
        assert_int_equal(y->q_w.cols, d);
        assert_int_equal(y->q_b.cols, da);
        assert_int_equal(y->k_w.rows, da);
        assert_int_equal(y->v_w.rows, da);
        assert_int_equal(y->o_w.rows, d);
        assert_int_equal(y->o_w.cols, da);
        assert_int_equal(y->o_b.cols, d);
        assert_int_equal(y->ln1_g.cols, d);
        assert_int_equal(y->ln1_b.cols, d);
        assert_int_equal(y->ff1_w.rows, y->d_ff);
        assert_int_equal(y->ff1_w.cols, d);
        assert_int_equal(y->ff1_b.cols, y->d_ff);
        assert_int_equal(y->ff2_w.rows, d);
        assert_int_equal(y->ff2_w.cols, y->d_ff);
        assert_int_equal(y->ln2_g.cols, d);
        assert_non_null(y->ln2_b.data);
    }
}

/* ---- demo ------------------------------------------------------------------------------- */

/* The demo model's version stamp: a fresh demo is current; the same directory with the stamp
 * removed (a demo written before stamps), with another version, or not a demo, is not; a
 * missing directory or config is not. The CLI and the server rewrite a cache that is not. */
static void test_demo_version(void **state)
{
    char dir[1200], cfgp[1300];
    xf_demo_opts_t o;
    xf_diag_t d = { 0 };
    (void)state;
    xf_demo_opts_init_tiny(&o);
    xf_test_path(dir, sizeof dir, "demo_v/");
    assert_int_equal(xf_demo_current(dir), 0);
    assert_int_equal(xf_demo_current(NULL), 0);
    assert_int_equal(xf_demo_write(dir, &o, &d), 0);
    assert_int_equal(xf_demo_current(dir), 1);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    json_t *cfg = json_load_file(cfgp, 0, NULL);
    assert_non_null(cfg);
    assert_int_equal(json_integer_value(json_object_get(cfg, "xformd_demo_version")),
                     XF_DEMO_VERSION);
    json_object_set_new(cfg, "xformd_demo_version", json_integer(XF_DEMO_VERSION - 1));
    assert_int_equal(json_dump_file(cfg, cfgp, 0), 0);
    assert_int_equal(xf_demo_current(dir), 0);
    json_object_del(cfg, "xformd_demo_version");
    assert_int_equal(json_dump_file(cfg, cfgp, 0), 0);
    assert_int_equal(xf_demo_current(dir), 0);
    json_object_set_new(cfg, "xformd_demo_version", json_integer(XF_DEMO_VERSION));
    json_object_set_new(cfg, "xformd_demo", json_false());
    assert_int_equal(json_dump_file(cfg, cfgp, 0), 0);
    assert_int_equal(xf_demo_current(dir), 0);
    json_decref(cfg);
    assert_int_equal(xf_demo_write(dir, &o, &d), 0);   /* rewritten over the stale one */
    assert_int_equal(xf_demo_current(dir), 1);
    assert_int_equal(unlink(cfgp), 0);
    assert_int_equal(xf_demo_current(dir), 0);
}

static void test_demo_tiny(void **state)
{
    char dir[1200], dir2[1200], dir3[1200], p1[1300], p2[1300];
    xf_demo_opts_t o;
    xf_diag_t d = { 0 };
    xf_model_t *m;
    const xf_model_info_t *in;
    size_t n1, n2;
    char *a, *b;
    int heads[2] = { 4, 4 }, ffn[2] = { 128, 128 };
    (void)state;

    xf_demo_opts_init_tiny(&o);
    xf_test_path(dir, sizeof dir, "demo_a/");
    assert_int_equal(xf_demo_write(dir, &o, &d), 0);
    m = load_ok(dir, NULL);
    in = xf_model_info(m);
    assert_string_equal(in->name, "demo_a");
    assert_int_equal(in->arch, XF_ARCH_BERT);
    assert_string_equal(in->arch_name, "BertModel");
    assert_int_equal(in->n_layer, 2);
    assert_int_equal(in->d_model, 64);
    assert_int_equal(in->vocab_size, 1000);
    assert_int_equal(in->max_positions, 512);
    assert_int_equal(in->position_offset, 0);
    assert_int_equal(in->type_vocab_size, 2);
    for (int l = 0; l < 2; l++) {
        assert_int_equal(in->layers[l].n_head, 4);
        assert_int_equal(in->layers[l].d_head, 16);
        assert_int_equal(in->layers[l].d_ff, 128);
    }
    assert_int_equal(in->act, XF_ACT_GELU);
    assert_true(in->ln_eps == 1e-12f);
    assert_int_equal(in->pre_ln, 0);
    assert_int_equal(in->head, XF_HEAD_NONE);
    assert_int_equal(in->n_labels, 0);
    assert_int_equal(in->has_pooler, 1);
    assert_int_equal(in->pooling, XF_POOL_CLS);
    assert_int_equal(in->normalize, 0);
    assert_int_equal(in->is_demo, 1);
    assert_string_equal(in->file_dtype, "F32");
    assert_int_equal(in->n_params, bert_params(1000, 512, 2, 64, 2, heads, 16, ffn, 1));
    check_layer_tensors(m);
    /* LayerNorm gamma 1, beta 0; weights within U(-0.02·√3, 0.02·√3) with std ≈ 0.02 */
    for (int i = 0; i < 64; i++) {
        assert_true(m->emb_ln_g.data[i] == 1.0f);
        assert_true(m->emb_ln_b.data[i] == 0.0f);
    }
    {
        double s = 0, s2 = 0;
        size_t n = 1000 * 64;
        for (size_t i = 0; i < n; i++) {
            double x = m->word_emb.data[i];
            assert_true(fabs(x) <= 0.0346411);
            s += x;
            s2 += x * x;
        }
        /* 64k samples: the std estimate is within ~1% of 0.02; allow 5% */
        assert_true(fabs(sqrt(s2 / n - (s / n) * (s / n)) - 0.02) < 0.001);
    }
    /* the vocabulary: BERT's special ids, found by the tokenizer */
    {
        const xf_tokenizer_t *tok = xf_model_tokenizer(m);
        xf_special_ids_t sp;
        assert_non_null(tok);
        xf_tokenizer_specials(tok, &sp);
        assert_int_equal(sp.pad, 0);
        assert_int_equal(sp.unk, 100);
        assert_int_equal(sp.cls, 101);
        assert_int_equal(sp.sep, 102);
        assert_int_equal(sp.mask, 103);
        assert_int_equal(xf_tokenizer_vocab_size(tok), 1000);
        assert_true(xf_tokenizer_id(tok, "hello") > 103);
        assert_true(xf_tokenizer_id(tok, "##s") > 103);
        /* common words and punctuation tokenise without [UNK]; unknown words split into
         * generated pieces or characters */
        xf_tokens_t tk = { 0 };
        const char *text = "Hello, world! The model answers 42 questions: zyxwvq.";
        assert_int_equal(xf_tokenizer_encode(tok, text, strlen(text), NULL, 0, NULL, &tk, &d),
                         0);
        assert_true(tk.n >= 12);
        assert_int_equal(tk.ids[0], 101);
        assert_int_equal(tk.ids[1], xf_tokenizer_id(tok, "hello"));
        assert_int_equal(tk.ids[2], xf_tokenizer_id(tok, ","));
        assert_int_equal(tk.ids[tk.n - 1], 102);
        for (int32_t i = 0; i < tk.n; i++)
            assert_int_not_equal(tk.ids[i], 100);
        xf_tokens_deinit(&tk);
    }
    assert_non_null(xf_model_attention(m));
    assert_string_equal(xf_attn_name(xf_model_attention(m)), "dense");
    xf_model_free(m);

    /* deterministic: same seed -> byte-identical weights; another seed -> different */
    xf_test_path(dir2, sizeof dir2, "demo_b");
    assert_int_equal(xf_demo_write(dir2, &o, &d), 0);
    snprintf(p1, sizeof p1, "%s/model.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model.safetensors", dir2);
    a = xf_test_slurp(p1, &n1);
    b = xf_test_slurp(p2, &n2);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(b);
    snprintf(p1, sizeof p1, "%s/vocab.txt", dir);
    snprintf(p2, sizeof p2, "%s/vocab.txt", dir2);
    {
        char *va = xf_test_slurp(p1, &n1), *vb = xf_test_slurp(p2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(va, vb, n1);
        free(va);
        free(vb);
    }
    o.seed = 43;
    xf_test_path(dir3, sizeof dir3, "demo_c");
    assert_int_equal(xf_demo_write(dir3, &o, &d), 0);
    snprintf(p2, sizeof p2, "%s/model.safetensors", dir3);
    b = xf_test_slurp(p2, &n2);
    assert_int_equal(n1 > 0, 1);
    assert_true(memcmp(a, b, n2 < 4096 ? n2 : 4096) != 0 || memcmp(a, b, n2) != 0);
    free(a);
    free(b);
    /* no temporary files left behind */
    snprintf(p1, sizeof p1, "%s/model.safetensors.tmp.%ld", dir, (long)getpid());
    assert_int_not_equal(access(p1, F_OK), 0);
}

/* The default demo vocabulary (30,522 tokens, as bert-base-uncased) splits English about as
 * finely as bert-base-uncased: on the SQuAD sample of ../shared/testdata (each text with the
 * ids bert-base-uncased gives it), the demo's token count is at most 1.25× the real one (the
 * earlier syllable vocabulary gave 2.3×), fewer than 0.5% of its tokens are [UNK], and the
 * most common words are single tokens. */
static void test_demo_vocab_english(void **state)
{
    char cases[1024], vp[1200];
    xf_tokenizer_t *tok = NULL;
    xf_tokens_t out = { 0 };
    xf_diag_t d = { 0 };
    const xf_tok_opts_t eo = { .no_special = 1 };
    long n_real = 0, n_demo = 0, n_unk = 0;
    size_t len;
    (void)state;

    XF_TESTDATA_OR_SKIP(cases, "tokenizer/swift_squad_sample/cases.tsv");
    xf_test_path(vp, sizeof vp, "vocab_en.txt");
    assert_int_equal(xf_demo_vocab_write(vp, 30522, &d), 0);
    assert_int_equal(xf_tokenizer_load(vp, NULL, &tok, &d), 0);
    assert_int_equal(xf_tokenizer_vocab_size(tok), 30522);
    static const char *const single[] = { "the", "people", "government", "president",
                                          "children", "played", "running", "countries",
                                          "university", "important", "quickly", "water" };
    for (size_t i = 0; i < sizeof single / sizeof *single; i++) {
        assert_int_equal(xf_tokenizer_encode(tok, single[i], strlen(single[i]), NULL, 0, &eo,
                                             &out, &d), 0);
        if (out.n != 1)
            print_message("# '%s' is %d tokens\n", single[i], out.n);
        assert_int_equal(out.n, 1);
    }

    char *data = xf_test_slurp(cases, &len);
    assert_non_null(data);
    for (char *line = data; line < data + len;) {
        char *eol = memchr(line, '\n', (size_t)(data + len - line));
        eol = eol ? eol : data + len;
        char *tab = memchr(line, '\t', (size_t)(eol - line));
        assert_non_null(tab);
        /* the SQuAD texts hold no TSV escapes (tokenizer/README.md): the text is verbatim */
        assert_null(memchr(line, '\\', (size_t)(tab - line)));
        for (char *p = tab + 1; p < eol;) {
            char *end;
            (void)strtol(p, &end, 10);
            assert_true(end > p);
            n_real++;
            p = end + strspn(end, " ");
        }
        assert_int_equal(xf_tokenizer_encode(tok, line, (size_t)(tab - line), NULL, 0, &eo,
                                             &out, &d), 0);
        n_demo += out.n;
        for (int32_t i = 0; i < out.n; i++)
            n_unk += out.ids[i] == 100;
        line = eol + 1;
    }
    print_message("# SQuAD sample: bert-base-uncased %ld tokens, demo vocabulary %ld (%.3fx), "
                  "%ld [UNK]\n", n_real, n_demo, (double)n_demo / (double)n_real, n_unk);
    assert_true(n_real > 10000);
    assert_true(n_demo <= n_real * 5 / 4);
    assert_true(n_unk * 200 < n_demo);
    free(data);
    xf_tokens_deinit(&out);
    xf_tokenizer_free(tok);
}

static void test_demo_classifier_dtypes(void **state)
{
    char d32[1200], d16[1200], db16[1200];
    xf_demo_opts_t o;
    xf_diag_t d = { 0 };
    xf_model_t *m32, *m16, *mb;
    (void)state;

    xf_demo_opts_init_tiny(&o);
    o.n_labels = 3;
    xf_test_path(d32, sizeof d32, "democ32");
    xf_test_path(d16, sizeof d16, "democ16");
    xf_test_path(db16, sizeof db16, "democbf16");
    assert_int_equal(xf_demo_write(d32, &o, &d), 0);
    o.dtype = "F16";
    assert_int_equal(xf_demo_write(d16, &o, &d), 0);
    o.dtype = "BF16";
    assert_int_equal(xf_demo_write(db16, &o, &d), 0);
    m32 = load_ok(d32, NULL);
    m16 = load_ok(d16, NULL);
    mb = load_ok(db16, NULL);
    assert_int_equal(m32->info.head, XF_HEAD_BERT);
    assert_string_equal(m32->info.arch_name, "BertForSequenceClassification");
    assert_int_equal(m32->info.n_labels, 3);
    assert_non_null(m32->info.labels);
    assert_string_equal(m32->info.labels[2], "LABEL_2");
    assert_int_equal(m32->cls_w.rows, 3);
    assert_int_equal(m32->cls_w.cols, 64);
    assert_string_equal(m16->info.file_dtype, "F16");
    assert_string_equal(mb->info.file_dtype, "BF16");
    assert_int_equal(m16->info.n_params, m32->info.n_params);
    /* Round to nearest: relative error <= 2^-11 for normal halves, absolute <= 2^-25 (half
     * the subnormal step) below 2^-14; bf16 keeps f32's exponent range: relative 2^-8. */
    models_close(m32, m16, 1.0 / 2048, ldexp(1.0, -25));
    models_close(m32, mb, 1.0 / 256, 0);
    xf_model_free(m32);
    xf_model_free(m16);
    xf_model_free(mb);
}

static void test_demo_bad_opts(void **state)
{
    char dir[1200];
    xf_demo_opts_t o;
    xf_diag_t d = { 0 };
    (void)state;
    xf_test_path(dir, sizeof dir, "demobad");
    xf_demo_opts_init_tiny(&o);
    o.n_head = 5;                              /* 64 % 5 != 0 */
    assert_int_equal(xf_demo_write(dir, &o, &d), XF_EPARAM);
    xf_demo_opts_init_tiny(&o);
    o.vocab_size = 500;
    assert_int_equal(xf_demo_write(dir, &o, &d), XF_EPARAM);
    xf_demo_opts_init_tiny(&o);
    o.dtype = "I8";
    assert_int_equal(xf_demo_write(dir, &o, &d), XF_EPARAM);
}

/* ---- architectures ---------------------------------------------------------------------- */

static void test_bert_prefix_dtypes(void **state)
{
    char a[1200], b[1200], c[1200], e[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *ma, *mb, *mc, *me;
    int heads[2] = { 4, 4 }, ffn[2] = { 64, 64 };
    xf_load_opts_t lo = { .name = "served" };
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(a, sizeof a, "bert_plain"), &o);
    o.prefix = 1;
    hf(xf_test_path(b, sizeof b, "bert_prefix"), &o);
    o.dtype = "F16";
    hf(xf_test_path(c, sizeof c, "bert_f16"), &o);
    o.dtype = "BF16";
    o.prefix = 0;
    hf(xf_test_path(e, sizeof e, "bert_bf16"), &o);
    ma = load_ok(a, NULL);
    mb = load_ok(b, &lo);
    mc = load_ok(c, NULL);
    me = load_ok(e, NULL);
    assert_string_equal(ma->info.name, "bert_plain");
    assert_string_equal(mb->info.name, "served");
    assert_string_equal(ma->info.dir, a);
    assert_int_equal(ma->info.is_demo, 0);
    assert_int_equal(ma->info.n_params, bert_params(256, 64, 2, 32, 2, heads, 8, ffn, 1));
    check_layer_tensors(ma);
    /* the prefix changes nothing: identical weights */
    assert_int_equal(ma->info.n_params, mb->info.n_params);
    w_equal(&ma->word_emb, &mb->word_emb);
    w_equal(&ma->type_emb, &mb->type_emb);
    w_equal(&ma->pool_w, &mb->pool_w);
    for (int l = 0; l < 2; l++) {
        w_equal(&ma->layers[l].q_w, &mb->layers[l].q_w);
        w_equal(&ma->layers[l].ff2_w, &mb->layers[l].ff2_w);
        w_equal(&ma->layers[l].ln2_g, &mb->layers[l].ln2_g);
    }
    /* F32 data is used in place: the pointer lies inside the mapping */
    assert_true((const char *)ma->word_emb.data >= (const char *)ma->map &&
                (const char *)ma->word_emb.data < (const char *)ma->map + ma->map_len);
    /* f16 / bf16 round to nearest: relative 2^-11 (half; absolute 2^-25 in its subnormal
     * range) and relative 2^-8 (bf16) */
    models_close(ma, mc, 1.0 / 2048, ldexp(1.0, -25));
    models_close(ma, me, 1.0 / 256, 0);
    assert_string_equal(mc->info.file_dtype, "F16");
    xf_model_free(ma);
    xf_model_free(mb);
    xf_model_free(mc);
    xf_model_free(me);
}

static void test_roberta(void **state)
{
    char a[1200], b[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.arch = "roberta";
    o.prefix = 1;
    hf(xf_test_path(a, sizeof a, "roberta"), &o);
    m = load_ok(a, NULL);
    assert_int_equal(m->info.arch, XF_ARCH_ROBERTA);
    assert_string_equal(m->info.arch_name, "RobertaModel");
    assert_int_equal(m->info.position_offset, 2);         /* pad_token_id 1 + 1 */
    assert_int_equal(m->info.max_positions, 64);
    assert_int_equal(m->pos_emb.rows, 66);
    assert_int_equal(m->info.type_vocab_size, 1);
    assert_int_equal(m->type_emb.rows, 1);
    assert_true(fabsf(m->info.ln_eps - 1e-5f) < 1e-12f);
    assert_int_equal(m->info.head, XF_HEAD_NONE);
    assert_int_equal(m->info.has_pooler, 0);
    check_layer_tensors(m);
    xf_model_free(m);

    o.n_labels = 3;
    o.prefix = 0;
    hf(xf_test_path(b, sizeof b, "roberta_cls"), &o);
    m = load_ok(b, NULL);
    assert_int_equal(m->info.head, XF_HEAD_ROBERTA);
    assert_string_equal(m->info.arch_name, "RobertaForSequenceClassification");
    assert_int_equal(m->info.n_labels, 3);
    assert_string_equal(m->info.labels[1], "label_1");
    assert_int_equal(m->head_dense_w.rows, 32);
    assert_int_equal(m->head_dense_w.cols, 32);
    assert_int_equal(m->head_dense_b.cols, 32);
    assert_int_equal(m->cls_w.rows, 3);
    assert_int_equal(m->cls_b.cols, 3);
    xf_model_free(m);
}

static void test_distilbert(void **state)
{
    char a[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.arch = "distilbert";
    o.prefix = 1;
    o.n_labels = 2;
    o.act = "relu";
    o.n_layer = 3;
    hf(xf_test_path(a, sizeof a, "distil"), &o);
    m = load_ok(a, NULL);
    assert_int_equal(m->info.arch, XF_ARCH_DISTILBERT);
    assert_int_equal(m->info.n_layer, 3);
    assert_int_equal(m->info.type_vocab_size, 0);
    assert_null(m->type_emb.data);
    assert_int_equal(m->info.has_pooler, 0);
    assert_null(m->pool_w.data);
    assert_int_equal(m->info.act, XF_ACT_RELU);
    assert_true(m->info.ln_eps == 1e-12f);
    assert_int_equal(m->info.head, XF_HEAD_DISTILBERT);
    assert_int_equal(m->head_dense_w.rows, 32);
    assert_int_equal(m->cls_w.rows, 2);
    assert_int_equal(m->info.max_positions, 64);
    check_layer_tensors(m);
    {
        /* n_params: embeddings (no types) + 3 layers + pre_classifier + classifier */
        int heads[3] = { 4, 4, 4 }, ffn[3] = { 64, 64, 64 };
        int64_t want = bert_params(256, 64, 0, 32, 3, heads, 8, ffn, 0) + 32 * 32 + 32 +
                       2 * 32 + 2;
        assert_int_equal(m->info.n_params, want);
    }
    xf_model_free(m);
}

static void test_heterogeneous(void **state)
{
    char a[1200], b[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    static const int heads[3] = { 4, 2, 1 }, ffn[3] = { 64, 40, 8 };
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.n_layer = 3;
    memcpy(o.heads, heads, sizeof heads);
    memcpy(o.ffn, ffn, sizeof ffn);
    hf(xf_test_path(a, sizeof a, "hetero"), &o);
    m = load_ok(a, NULL);
    for (int l = 0; l < 3; l++) {
        assert_int_equal(m->info.layers[l].n_head, heads[l]);
        assert_int_equal(m->info.layers[l].d_head, 8);
        assert_int_equal(m->info.layers[l].d_ff, ffn[l]);
    }
    check_layer_tensors(m);
    assert_int_equal(m->info.n_params, bert_params(256, 64, 2, 32, 3, heads, 8, ffn, 1));
    xf_model_free(m);

    /* per-layer lists in the config: consistent loads, inconsistent names the tensor */
    o.per_layer_config = 1;
    hf(xf_test_path(b, sizeof b, "hetero_cfg"), &o);
    m = load_ok(b, NULL);
    xf_model_free(m);
    edit_config(b, "num_attention_heads_per_layer", json_pack("[i,i,i]", 4, 3, 1));
    load_fail(b, XF_ESHAPE, "encoder.layer.1.attention.self.query.weight", "2 heads");
    edit_config(b, "num_attention_heads_per_layer", json_pack("[i,i,i]", 4, 2, 1));
    edit_config(b, "intermediate_size_per_layer", json_pack("[i,i,i]", 64, 40, 9));
    load_fail(b, XF_ESHAPE, "encoder.layer.2.intermediate.dense.weight", "width 8");
    edit_config(b, "intermediate_size_per_layer", json_pack("[i,i]", 64, 40));
    load_fail(b, XF_EFORMAT, "intermediate_size_per_layer", NULL);
    edit_config(b, "intermediate_size_per_layer", NULL);
    /* as transformers' save_pretrained writes it after prune_heads: a layer pruned of
     * nothing may be recorded as an empty list */
    edit_config(b, "pruned_heads", json_pack("{s:[],s:[i,i],s:[i,i,i]}", "0", "1", 3, 0, "2",
                                             2, 0, 1));
    m = load_ok(b, NULL);
    xf_model_free(m);
    /* a repeated index prunes one head (transformers reads the list as a set) */
    edit_config(b, "pruned_heads", json_pack("{s:[i,i,i],s:[i,i,i,i]}", "1", 0, 3, 0, "2", 0, 1,
                                             2, 1));
    m = load_ok(b, NULL);
    xf_model_free(m);
    edit_config(b, "pruned_heads", json_pack("{s:[i]}", "1", 0));
    load_fail(b, XF_ESHAPE, "encoder.layer.1.attention.self.query.weight", "pruned_heads");
    edit_config(b, "pruned_heads", json_pack("{s:[i,i],s:[i,i,i]}", "1", 0, 4, "2", 0, 1, 2));
    load_fail(b, XF_EFORMAT, "pruned_heads[1][1]", "[0, 4)");
    edit_config(b, "pruned_heads", json_pack("{s:[i,s],s:[i,i,i]}", "1", 0, "3", "2", 0, 1, 2));
    load_fail(b, XF_EFORMAT, "pruned_heads[1][1]", NULL);
    edit_config(b, "pruned_heads", NULL);
    /* head width 16 from the config: layer 2's 8 query rows are not a multiple */
    edit_config(b, "num_attention_heads_per_layer", NULL);
    edit_config(b, "num_attention_heads", json_integer(2));
    load_fail(b, XF_ESHAPE, "encoder.layer.2.attention.self.query.weight", "multiple");
}

/* A sentence-transformers file the loader must refuse, and what it must say. */
typedef struct st_file {
    const char *name, *file, *text;
    int code;
    const char *s1;
} st_file_t;

static const st_file_t st_files[] = {
    { "max-token pooling", "1_Pooling/config.json", "{\"pooling_mode_max_tokens\": true}",
      XF_EUNSUPPORTED, "pooling_mode_max_tokens" },
    /* Pooling(**config): a missing pooling_mode_mean_tokens is true, so this is CLS and mean
     * concatenated (2 x d_model) in sentence-transformers, not CLS */
    { "cls without mean_tokens", "1_Pooling/config.json",
      "{\"word_embedding_dimension\": 32, \"pooling_mode_cls_token\": true}", XF_EUNSUPPORTED,
      "pooling_mode_mean_tokens" },
    { "cls and mean", "1_Pooling/config.json",
      "{\"pooling_mode_cls_token\": true, \"pooling_mode_mean_tokens\": true}",
      XF_EUNSUPPORTED, "concatenates" },
    { "every mode off", "1_Pooling/config.json", "{\"pooling_mode_mean_tokens\": false}",
      XF_EUNSUPPORTED, "off" },
    { "pooling_mode lasttoken", "1_Pooling/config.json", "{\"pooling_mode\": \"lasttoken\"}",
      XF_EUNSUPPORTED, "pooling_mode_lasttoken" },
    { "pooling_mode unknown", "1_Pooling/config.json", "{\"pooling_mode\": \"median\"}",
      XF_EFORMAT, "pooling_mode" },
    { "mode not a boolean", "1_Pooling/config.json", "{\"pooling_mode_cls_token\": \"yes\"}",
      XF_EFORMAT, "pooling_mode_cls_token" },
    { "include_prompt not a boolean", "1_Pooling/config.json", "{\"include_prompt\": 0}",
      XF_EFORMAT, "include_prompt" },
    { "module path out of the model", "modules.json",
      "[{\"type\":\"sentence_transformers.models.Pooling\",\"path\":\"../../etc\"}]",
      XF_EFORMAT, "modules.json" },
    { "Dense module", "modules.json",
      "[{\"type\":\"sentence_transformers.models.Dense\",\"path\":\"2_Dense\"}]",
      XF_EUNSUPPORTED, "Dense" },
    { "modules.json not JSON", "modules.json", "{not json", XF_EFORMAT, "modules.json" },
};

static void test_pooling(void **state)
{
    char a[1200], b[1200], c[1200], p[1300];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.pooling = "mean";
    o.normalize = 1;
    hf(xf_test_path(a, sizeof a, "st_mean"), &o);
    m = load_ok(a, NULL);
    assert_int_equal(m->info.pooling, XF_POOL_MEAN);
    assert_int_equal(m->info.normalize, 1);
    xf_model_free(m);

    o.pooling = "cls";
    o.normalize = 0;
    hf(xf_test_path(b, sizeof b, "st_cls"), &o);
    m = load_ok(b, NULL);
    assert_int_equal(m->info.pooling, XF_POOL_CLS);
    assert_int_equal(m->info.normalize, 0);
    xf_model_free(m);

    /* the Pooling config as sentence-transformers reads it (Pooling(**config)): defaults,
     * the pooling_mode string, include_prompt */
    {
        static const struct { const char *text; enum xf_pooling pool; int skip; } pc[] = {
            { "{\"word_embedding_dimension\": 32}", XF_POOL_MEAN, 0 },
            { "{\"pooling_mode\": \"cls\"}", XF_POOL_CLS, 0 },
            { "{\"pooling_mode\": \"CLS\", \"pooling_mode_mean_tokens\": true}", XF_POOL_CLS, 0 },
            { "{\"pooling_mode\": \"mean\", \"include_prompt\": false}", XF_POOL_MEAN, 1 },
            { "{\"pooling_mode_cls_token\": true, \"pooling_mode_mean_tokens\": false, "
              "\"include_prompt\": false}", XF_POOL_CLS, 0 },
            { "{\"pooling_mode_mean_tokens\": true, \"include_prompt\": true}", XF_POOL_MEAN, 0 },
        };
        for (size_t i = 0; i < sizeof pc / sizeof *pc; i++) {
            snprintf(p, sizeof p, "%s/1_Pooling/config.json", b);
            assert_int_equal(xf_test_write_file(p, pc[i].text, strlen(pc[i].text)), 0);
            m = load_ok(b, NULL);
            if (m->info.pooling != pc[i].pool || m->info.pool_skip_prompt != pc[i].skip)
                fail_msg("%s: pooling %d skip %d, want %d %d", pc[i].text, m->info.pooling,
                         m->info.pool_skip_prompt, pc[i].pool, pc[i].skip);
            xf_model_free(m);
        }
    }

    /* unsupported pooling modes, modules and hostile paths are errors, not guesses (written
     * in turn, each over the last) */
    for (size_t i = 0; i < sizeof st_files / sizeof st_files[0]; i++) {
        const st_file_t *f = &st_files[i];
        snprintf(p, sizeof p, "%s/%s", b, f->file);
        assert_int_equal(xf_test_write_file(p, f->text, strlen(f->text)), 0);
        check_load_fails(f->name, b, f->code, f->s1, NULL);
    }
    xf_cases_end();

    /* no sentence-transformers files: CLS, no normalisation */
    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(c, sizeof c, "st_none"), &o);
    m = load_ok(c, NULL);
    assert_int_equal(m->info.pooling, XF_POOL_CLS);
    assert_int_equal(m->info.normalize, 0);
    assert_true(m->info.max_positions > 5);
    assert_int_equal(m->info.max_input, m->info.max_positions);
    int32_t maxpos = m->info.max_positions;
    xf_model_free(m);

    /* sentence-transformers' max_seq_length (the first sentence_*_config.json, as TEI reads
     * them) bounds the input below the positions; above them the positions win */
    snprintf(p, sizeof p, "%s/sentence_roberta_config.json", c);
    assert_int_equal(xf_test_write_file(p, "{\"max_seq_length\": 7}", 21), 0);
    m = load_ok(c, NULL);
    assert_int_equal(m->info.max_input, 7);
    assert_int_equal(m->info.max_positions, maxpos);
    xf_model_free(m);
    snprintf(p, sizeof p, "%s/sentence_bert_config.json", c);
    const char *big = "{\"max_seq_length\": 100000, \"do_lower_case\": false}";
    assert_int_equal(xf_test_write_file(p, big, strlen(big)), 0);
    m = load_ok(c, NULL);
    assert_int_equal(m->info.max_input, maxpos);
    xf_model_free(m);
    const char *bad = "{\"max_seq_length\": \"256\"}";
    assert_int_equal(xf_test_write_file(p, bad, strlen(bad)), 0);
    check_load_fails("max_seq_length a string", c, XF_EFORMAT, "sentence_bert_config.json",
                     NULL);
    assert_int_equal(xf_test_write_file(p, "{not json", 9), 0);
    check_load_fails("sentence_bert_config.json not JSON", c, XF_EFORMAT,
                     "sentence_bert_config.json", NULL);
    xf_cases_end();
}

/* Token ids of text (with [CLS]/[SEP]) under m's tokenizer, as a space-separated string. */
static void ids_of(const xf_model_t *m, const char *text, char *buf, size_t len)
{
    xf_tokens_t t = { 0 };
    xf_tok_opts_t to = { 0 };
    xf_diag_t d = { 0 };
    size_t o = 0;
    assert_int_equal(xf_tokenizer_encode(xf_model_tokenizer(m), text, strlen(text), NULL, 0,
                                         &to, &t, &d), 0);
    buf[0] = 0;
    for (int32_t i = 0; i < t.n && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%d", i ? " " : "", (int)t.ids[i]);
    xf_tokens_deinit(&t);
}

/* sentence_bert_config.json's do_lower_case: sentence-transformers lowercases every text
 * (str.lower()) before a tokenizer that may itself be cased; the cased tokenizer still keeps
 * the accents. */
static void test_st_lower_case(void **state)
{
    static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nHello\n"
                                "\xc3\xa9t\xc3\xa9\nete\nworld\n";
    char a[1200], p[1300], got[128];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    xf_tokenizer_opts_t cased = { .lowercase = 2 };
    xf_load_opts_t lo = { .tokenizer = &cased };
    const char *text = "Hello \xc3\x89t\xc3\xa9 WORLD";   /* "Hello Été WORLD" */
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(a, sizeof a, "st_lower"), &o);
    snprintf(p, sizeof p, "%s/vocab.txt", a);
    assert_int_equal(xf_test_write_file(p, vocab, strlen(vocab)), 0);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", a);
    assert_int_equal(xf_test_write_file(p, "{\"do_lower_case\": false}", 24), 0);
    m = load_ok(a, NULL);                       /* cased: Hello, [UNK], [UNK] */
    ids_of(m, text, got, sizeof got);
    assert_string_equal(got, "2 6 1 1 3");
    xf_model_free(m);

    snprintf(p, sizeof p, "%s/sentence_bert_config.json", a);
    const char *st = "{\"max_seq_length\": 16, \"do_lower_case\": true}";
    assert_int_equal(xf_test_write_file(p, st, strlen(st)), 0);
    m = load_ok(a, NULL);                       /* "hello été world": accents kept */
    ids_of(m, text, got, sizeof got);
    assert_string_equal(got, "2 5 7 9 3");
    assert_int_equal(m->info.max_input, 16);
    xf_model_free(m);
    m = load_ok(a, &lo);                        /* an explicit cased option wins */
    ids_of(m, text, got, sizeof got);
    assert_string_equal(got, "2 6 1 1 3");
    xf_model_free(m);

    st = "{\"max_seq_length\": 16, \"do_lower_case\": false}";
    assert_int_equal(xf_test_write_file(p, st, strlen(st)), 0);
    m = load_ok(a, NULL);
    ids_of(m, text, got, sizeof got);
    assert_string_equal(got, "2 6 1 1 3");
    xf_model_free(m);
    st = "{\"max_seq_length\": 16, \"do_lower_case\": \"yes\"}";
    assert_int_equal(xf_test_write_file(p, st, strlen(st)), 0);
    load_fail(a, XF_EFORMAT, "sentence_bert_config.json", "do_lower_case");
}

static void test_pre_ln(void **state)
{
    char a[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    (void)state;
    xf_test_hfmodel_opts_init(&o);
    o.pre_ln = 1;
    o.act = "gelu_new";
    hf(xf_test_path(a, sizeof a, "preln"), &o);
    m = load_ok(a, NULL);
    assert_int_equal(m->info.pre_ln, 1);
    assert_int_equal(m->info.act, XF_ACT_GELU_TANH);
    assert_non_null(m->final_ln_g.data);
    assert_non_null(m->final_ln_b.data);
    assert_int_equal(m->final_ln_g.cols, 32);
    xf_model_free(m);
    {
        rw_t w = { .drop = "encoder.LayerNorm.weight" };
        rewrite(a, &w);
        load_fail(a, XF_EFORMAT, "encoder.LayerNorm.weight", NULL);
    }
}

/* ---- errors ----------------------------------------------------------------------------- */

static void test_missing_files(void **state)
{
    char a[1200], p[1300];
    xf_test_hfmodel_opts o;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(a, sizeof a, "missing"), &o);
    load_fail("/nonexistent/model/dir", -ENOENT, "/nonexistent/model/dir", NULL);
    snprintf(p, sizeof p, "%s/vocab.txt", a);
    assert_int_equal(unlink(p), 0);
    load_fail(a, -ENOENT, "vocab.txt", "tokenizer.json");
    snprintf(p, sizeof p, "%s/model.safetensors", a);
    assert_int_equal(unlink(p), 0);
    load_fail(a, -ENOENT, "model.safetensors", NULL);
    /* what transformers would read instead is named, with what to do */
    {
        char q[1300];
        snprintf(q, sizeof q, "%s/pytorch_model.bin", a);
        assert_int_equal(xf_test_write_file(q, "PK", 2), 0);
        load_fail(a, -ENOENT, "model.safetensors", "convert it to safetensors");
        snprintf(q, sizeof q, "%s/model.safetensors.index.json", a);
        assert_int_equal(xf_test_write_file(q, "{}", 2), 0);
        load_fail(a, XF_EUNSUPPORTED, "sharded", "model.safetensors.index.json");
        assert_int_equal(unlink(q), 0);
    }
    assert_int_equal(xf_test_write_file(p, "", 0), 0);
    load_fail(a, XF_EFORMAT, "model.safetensors", NULL);
    snprintf(p, sizeof p, "%s/config.json", a);
    assert_int_equal(unlink(p), 0);
    load_fail(a, -ENOENT, "config.json", NULL);
    assert_int_equal(xf_test_write_file(p, "{\"hidden_size\": 32,", 19), 0);
    load_fail(a, XF_EFORMAT, "config.json", NULL);
    assert_int_equal(xf_test_write_file(p, "[]", 2), 0);
    load_fail(a, XF_EFORMAT, "config.json", NULL);
    assert_int_equal(xf_test_write_file(p, "{\"a\":1,\"a\":2}", 13), 0);
    load_fail(a, XF_EFORMAT, "config.json", NULL);
    load_fail(p, -ENOTDIR, "not a model directory", NULL);
}

/* One lie in config.json (key set to value, JSON text; NULL deletes it; key2/value2 a second
 * edit) and what loading must say. Each case starts from the honest config and restores it. */
typedef struct lie {
    const char *name;
    const char *key, *value, *key2, *value2;
    int code;
    const char *s1, *s2;
} lie_t;

static const lie_t lies[] = {
    { "hidden_size 48", "hidden_size", "48", NULL, NULL, XF_ESHAPE,
      "model.safetensors: embeddings.word_embeddings.weight", "shape [256,32], want [256,48]" },
    { "vocab_size 300", "vocab_size", "300", NULL, NULL, XF_ESHAPE,
      "embeddings.word_embeddings.weight", "want [300,32]" },
    { "max_position_embeddings 512", "max_position_embeddings", "512", NULL, NULL, XF_ESHAPE,
      "embeddings.position_embeddings.weight", "want [512,32]" },
    { "type_vocab_size 3", "type_vocab_size", "3", NULL, NULL, XF_ESHAPE,
      "embeddings.token_type_embeddings.weight", "want [3,32]" },
    { "num_hidden_layers 1", "num_hidden_layers", "1", NULL, NULL, XF_ESHAPE,
      "encoder.layer.1.attention.self.query.weight", "1 layers" },
    { "num_hidden_layers 3", "num_hidden_layers", "3", NULL, NULL, XF_EFORMAT,
      "model.safetensors: missing encoder.layer.2.attention.self.query.weight", NULL },
    { "num_attention_heads 5", "num_attention_heads", "5", NULL, NULL, XF_EFORMAT,
      "config.json", "multiple" },
    { "intermediate_size 48", "intermediate_size", "48", NULL, NULL, XF_ESHAPE,
      "encoder.layer.0.intermediate.dense.weight", "width 64" },
    { "num_labels 3", "num_labels", "3", NULL, NULL, XF_ESHAPE, "classifier.weight",
      "num_labels" },
    { "id2label of 1 label", "num_labels", NULL, "id2label", "{\"0\":\"x\"}", XF_ESHAPE,
      "classifier.weight", "id2label" },
    { "hidden_act swish", "hidden_act", "\"swish\"", NULL, NULL, XF_EUNSUPPORTED, "swish",
      NULL },
    { "is_decoder true", "is_decoder", "true", NULL, NULL, XF_EUNSUPPORTED, "is_decoder",
      NULL },
    { "hidden_act quick_gelu", "hidden_act", "\"quick_gelu\"", NULL, NULL, XF_EUNSUPPORTED,
      "quick_gelu", NULL },
    /* a per-token head also stores classifier.weight [n_labels, d] (with a pooler here) */
    { "BertForTokenClassification", "architectures", "[\"BertForTokenClassification\"]", NULL,
      NULL, XF_EUNSUPPORTED, "token classification", NULL },
    { "hidden_size a string", "hidden_size", "\"32\"", NULL, NULL, XF_EFORMAT, "hidden_size",
      NULL },
    { "hidden_size -32", "hidden_size", "-32", NULL, NULL, XF_EFORMAT, "hidden_size", NULL },
    { "layer_norm_eps -1", "layer_norm_eps", "-1.0", NULL, NULL, XF_EFORMAT, "layer_norm_eps",
      NULL },
    { "position_embedding_type relative_key", "position_embedding_type", "\"relative_key\"",
      NULL, NULL, XF_EUNSUPPORTED, "relative_key", NULL },
    { "no model_type, no architectures", "model_type", NULL, "architectures", NULL, XF_EFORMAT,
      "model_type", NULL },
};

/* Set key to value (JSON text, NULL deletes) in c; returns the old value (new reference, or
 * NULL when absent) so that it can be put back. */
static json_t *swap_key(json_t *c, const char *key, const char *value)
{
    json_t *old = json_incref(json_object_get(c, key));
    if (value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        json_object_set_new(c, key, v);
    } else {
        json_object_del(c, key);
    }
    return old;
}

static void put_back(json_t *c, const char *key, json_t *old)
{
    if (old)
        json_object_set_new(c, key, old);
    else
        json_object_del(c, key);
}

static void run_lie(const char *dir, const lie_t *l)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *c = json_load_file(path, 0, NULL);
    assert_non_null(c);
    json_t *old = swap_key(c, l->key, l->value);
    json_t *old2 = l->key2 ? swap_key(c, l->key2, l->value2) : NULL;
    assert_int_equal(json_dump_file(c, path, JSON_INDENT(1)), 0);
    check_load_fails(l->name, dir, l->code, l->s1, l->s2);
    if (l->key2)
        put_back(c, l->key2, old2);
    put_back(c, l->key, old);
    assert_int_equal(json_dump_file(c, path, JSON_INDENT(1)), 0);
    json_decref(c);
}

static void test_config_lies(void **state)
{
    char a[1200];
    xf_test_hfmodel_opts o;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.n_labels = 2;
    hf(xf_test_path(a, sizeof a, "lies"), &o);
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++)
        run_lie(a, &lies[i]);
    xf_cases_end();
    /* gelu_accurate is transformers' tanh form, as gelu_new */
    edit_config(a, "hidden_act", json_string("gelu_accurate"));
    xf_model_t *m = load_ok(a, NULL);
    assert_int_equal(m->info.act, XF_ACT_GELU_TANH);
    xf_model_free(m);
    edit_config(a, "hidden_act", json_string("gelu"));
    /* Not a lie: 2 heads of 16 are as good as the honest 4 of 8. */
    edit_config(a, "num_attention_heads", json_integer(2));
    m = load_ok(a, NULL);
    assert_int_equal(m->info.layers[0].n_head, 2);
    assert_int_equal(m->info.layers[0].d_head, 16);
    xf_model_free(m);
}

/* One tensor taken out or broken in a whole BERT classifier (BertForSequenceClassification,
 * no prefix) and what loading must say. */
typedef struct broken {
    const char *name;
    rw_t w;
    int code;
    const char *s1, *s2;
} broken_t;

static const broken_t broken[] = {
    { "no final LayerNorm bias", { .drop = "encoder.layer.1.output.LayerNorm.bias" }, XF_EFORMAT,
      "model.safetensors: missing encoder.layer.1.output.LayerNorm.bias", NULL },
    { "no query weight", { .drop = "encoder.layer.0.attention.self.query.weight" }, XF_EFORMAT,
      "model.safetensors: missing encoder.layer.0.attention.self.query.weight", NULL },
    { "no classifier", { .drop = "classifier.weight" }, XF_EFORMAT, "classifier.weight",
      "BertForSequenceClassification" },
    { "no pooler", { .drop = "pooler.dense.weight" }, XF_EFORMAT, "pooler.dense.weight", NULL },
    /* a needed tensor in an integer dtype: [1,4], so the shape is named first */
    { "LayerNorm bias as I64", { .drop = "embeddings.LayerNorm.bias",
                                 .extra = "embeddings.LayerNorm.bias", .extra_dtype = "I64" },
      XF_ESHAPE, "embeddings.LayerNorm.bias", NULL },
    { "no word embeddings", { .drop = "embeddings.word_embeddings.weight" }, XF_EFORMAT,
      "embeddings.word_embeddings.weight", NULL },
};

static void test_tensor_edits(void **state)
{
    char a[1200], b[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.prefix = 1;
    o.n_labels = 2;
    hf(xf_test_path(a, sizeof a, "edits"), &o);
    {
        /* position_ids buffer in I64: present but unused */
        rw_t w = { .extra = "bert.embeddings.position_ids" };
        rewrite(a, &w);
        m = load_ok(a, NULL);
        xf_model_free(m);
    }
    {
        /* old LayerNorm names */
        rw_t w = { .from = "bert.embeddings.LayerNorm.weight",
                   .to = "bert.embeddings.LayerNorm.gamma" };
        rewrite(a, &w);
        w.from = "bert.embeddings.LayerNorm.bias";
        w.to = "bert.embeddings.LayerNorm.beta";
        rewrite(a, &w);
        m = load_ok(a, NULL);
        assert_non_null(m->emb_ln_b.data);
        xf_model_free(m);
    }
    {
        rw_t w = { .from = "bert.encoder.layer.1.attention.output.dense.weight", .r = 32,
                   .c = 31 };
        rewrite(a, &w);
        load_fail(a, XF_ESHAPE, "bert.encoder.layer.1.attention.output.dense.weight",
                  "shape [32,31], want [32,32]");
    }
    xf_test_hfmodel_opts_init(&o);
    o.n_labels = 2;
    xf_test_path(b, sizeof b, "edits2");
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        hf(b, &o);   /* each case starts from the whole model */
        rewrite(b, &broken[i].w);
        check_load_fails(broken[i].name, b, broken[i].code, broken[i].s1, broken[i].s2);
    }
    xf_cases_end();
    /* a truncated weights file */
    hf(b, &o);
    {
        char p[1300];
        size_t n;
        char *buf;
        snprintf(p, sizeof p, "%s/model.safetensors", b);
        buf = xf_test_slurp(p, &n);
        assert_int_equal(xf_test_write_file(p, buf, n - 1), 0);
        free(buf);
        load_fail(b, XF_EFORMAT, "model.safetensors", NULL);
    }
}

static void test_names_and_types(void **state)
{
    char a[1200], b[1200], p[1300];
    xf_test_hfmodel_opts o;
    xf_model_t *m;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.arch = "roberta";
    o.n_labels = 2;
    hf(xf_test_path(a, sizeof a, "xlmr"), &o);
    {
        /* an exporter's "model." prefix on every encoder tensor */
        rw_t w = { .add_prefix = "model." };
        rewrite(a, &w);
    }
    edit_config(a, "model_type", json_string("xlm-roberta"));
    edit_config(a, "architectures", json_pack("[s]", "XLMRobertaForSequenceClassification"));
    m = load_ok(a, NULL);
    assert_int_equal(m->info.arch, XF_ARCH_ROBERTA);
    assert_int_equal(m->info.head, XF_HEAD_ROBERTA);
    assert_string_equal(m->info.arch_name, "XLMRobertaForSequenceClassification");
    xf_model_free(m);
    edit_config(a, "model_type", json_string("camembert"));
    m = load_ok(a, NULL);
    assert_int_equal(m->info.arch, XF_ARCH_ROBERTA);
    xf_model_free(m);
    /* unknown model_type: the architectures name decides, else BERT-shaped */
    edit_config(a, "model_type", json_string("mystery"));
    m = load_ok(a, NULL);
    assert_int_equal(m->info.arch, XF_ARCH_ROBERTA);
    xf_model_free(m);

    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(b, sizeof b, "mystery"), &o);
    edit_config(b, "model_type", json_string("mystery"));
    edit_config(b, "architectures", json_pack("[s]", "MysteryModel"));
    m = load_ok(b, NULL);
    assert_int_equal(m->info.arch, XF_ARCH_BERT);
    assert_string_equal(m->info.arch_name, "MysteryModel");
    xf_model_free(m);
    /* Loaded as BERT only because its type is unknown: a tensor of its encoder that BERT does
     * not read means the real class computes something else (ERNIE's task-type embeddings
     * here), so it is refused; buffers and tensors outside the encoder (heads) are not. */
    {
        rw_t w = { .extra = "embeddings.position_ids" };
        rewrite(b, &w);
        m = load_ok(b, NULL);
        xf_model_free(m);
        w.extra = "cls.predictions.bias";
        rewrite(b, &w);
        m = load_ok(b, NULL);
        xf_model_free(m);
        w.extra = "embeddings.task_type_embeddings.weight";
        rewrite(b, &w);
        load_fail(b, XF_EUNSUPPORTED, "embeddings.task_type_embeddings.weight", "mystery");
        edit_config(b, "model_type", json_string("ernie"));
        load_fail(b, XF_EUNSUPPORTED, "embeddings.task_type_embeddings.weight", "ernie");
        /* model_type bert: ignored (with a warning), as transformers' BertModel ignores it */
        edit_config(b, "model_type", json_string("bert"));
        m = load_ok(b, NULL);
        assert_int_equal(m->info.arch, XF_ARCH_BERT);
        xf_model_free(m);
    }
    /* a vocabulary larger than the embedding table would index past it */
    snprintf(p, sizeof p, "%s/vocab.txt", b);
    assert_int_equal(xf_demo_vocab_write(p, 300, NULL), 0);
    load_fail(b, XF_ESHAPE, "vocabulary has 300 tokens", "256");
}

static int load_code_ok(int rc)
{
    return rc == 0 || rc == -ENOENT || rc == -EACCES || rc == XF_EFORMAT || rc == XF_ESHAPE ||
           rc == XF_EUNSUPPORTED || rc == XF_EPARAM || rc == XF_ENOTFOUND;
}

/* Byte-level corruption of config.json and of the safetensors header: every load returns a
 * documented code with a message, or a valid model; never a crash (run under ASan too). */
static void test_corrupt_files(void **state)
{
    char a[1200], p[1300];
    xf_test_hfmodel_opts o;
    size_t n;
    char *orig;
    int n_ok = 0;
    (void)state;

    xf_test_hfmodel_opts_init(&o);
    o.n_layer = 1;
    o.n_labels = 2;
    o.pooling = "mean";
    hf(xf_test_path(a, sizeof a, "corrupt"), &o);

    snprintf(p, sizeof p, "%s/config.json", a);
    orig = xf_test_slurp(p, &n);
    assert_non_null(orig);
    for (size_t i = 0; i < n; i++) {
        static const char repl[] = { '9', '"', '-', 'x' };
        for (size_t k = 0; k < sizeof repl; k++) {
            xf_model_t *m = NULL;
            xf_diag_t d = { 0 };
            char save = orig[i];
            int rc;
            orig[i] = repl[k];
            assert_int_equal(xf_test_write_file(p, orig, n), 0);
            orig[i] = save;
            rc = xf_model_load(a, NULL, &m, &d);
            if (!load_code_ok(rc))
                fail_msg("config byte %zu -> '%c': rc %d (%s)", i, repl[k], rc, d.msg);
            if (rc == 0) {
                n_ok++;
                xf_model_free(m);
            } else {
                assert_null(m);
                assert_true(d.msg[0] != 0);
            }
        }
    }
    assert_int_equal(xf_test_write_file(p, orig, n), 0);
    free(orig);

    snprintf(p, sizeof p, "%s/model.safetensors", a);
    orig = xf_test_slurp(p, &n);
    assert_non_null(orig);
    {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = (hl << 8) | (uint8_t)orig[i];
        for (size_t i = 0; i < 8 + hl && i < n; i++) {
            xf_model_t *m = NULL;
            xf_diag_t d = { 0 };
            char save = orig[i];
            int rc;
            orig[i] = (char)(save ^ (i < 8 ? 0x10 : 0x04));   /* digits stay digits, mostly */
            assert_int_equal(xf_test_write_file(p, orig, n), 0);
            orig[i] = save;
            rc = xf_model_load(a, NULL, &m, &d);
            if (!load_code_ok(rc))
                fail_msg("header byte %zu: rc %d (%s)", i, rc, d.msg);
            if (rc == 0)
                xf_model_free(m);
        }
    }
    free(orig);
    print_message("# %d corrupted configs still loaded\n", n_ok);
}

static void test_integer_weights(void **state)
{
    char a[1200], p[1300];
    static const int32_t v[32];
    xf_test_hfmodel_opts o;
    xf_diag_t d = { 0 };
    xf_st_file_t *f = NULL;
    xf_st_wtensor_t *tt;
    rw_t w = { .drop = "embeddings.LayerNorm.bias" };
    int32_t n;
    (void)state;

    /* embeddings.LayerNorm.bias stored as I32 [32]: right shape, wrong dtype */
    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(a, sizeof a, "intw"), &o);
    rewrite(a, &w);
    snprintf(p, sizeof p, "%s/model.safetensors", a);
    assert_int_equal(xf_st_open(p, &f, &d), 0);
    n = f->n;
    tt = calloc((size_t)n + 1, sizeof *tt);
    assert_non_null(tt);
    for (int32_t i = 0; i < n; i++) {
        tt[i].name = f->t[i].name;
        tt[i].dtype = xf_st_dtype_name(f->t[i].dtype);
        tt[i].rank = f->t[i].rank;
        memcpy(tt[i].shape, f->t[i].shape, sizeof tt[i].shape);
        tt[i].raw = f->data + f->t[i].begin;
        tt[i].raw_len = (size_t)(f->t[i].end - f->t[i].begin);
    }
    tt[n] = (xf_st_wtensor_t){ .name = "embeddings.LayerNorm.bias", .dtype = "I32", .rank = 1,
                               .shape = { 32 }, .raw = v, .raw_len = sizeof v };
    assert_int_equal(xf_st_write(p, tt, n + 1, NULL, &d), 0);
    free(tt);
    xf_st_close(f);
    load_fail(a, XF_EUNSUPPORTED, "embeddings.LayerNorm.bias", "I32");
}

static void test_attention_option(void **state)
{
    char a[1200];
    xf_test_hfmodel_opts o;
    xf_model_t *m = NULL;
    xf_diag_t d = { 0 };
    xf_load_opts_t lo = { .attention = "{\"variant\":\"dense\"}" };
    (void)state;
    xf_test_hfmodel_opts_init(&o);
    hf(xf_test_path(a, sizeof a, "attn"), &o);
    m = load_ok(a, &lo);
    assert_string_equal(xf_attn_name(xf_model_attention(m)), "dense");
    xf_model_free(m);
    m = NULL;
    lo.attention = "{\"variant\":\"no-such-variant\"}";
    assert_int_equal(xf_model_load(a, &lo, &m, &d), XF_ENOTFOUND);
    assert_null(m);
    lo.attention = "{bad json";
    assert_int_equal(xf_model_load(a, &lo, &m, &d), XF_EFORMAT);
    assert_null(m);
    /* no option: the config's attention settings (Longformer's full window 8 -> 4 a side) */
    edit_config(a, "attention_window", json_integer(8));
    m = load_ok(a, NULL);
    assert_string_equal(xf_attn_name(xf_model_attention(m)), "longformer");
    xf_model_free(m);
    m = NULL;
    edit_config(a, "attention_window", json_integer(7));
    assert_int_equal(xf_model_load(a, NULL, &m, &d), XF_EPARAM);
    assert_non_null(strstr(d.msg, "attention_window"));
    assert_null(m);
    /* the load option wins over the config */
    lo.attention = "{\"variant\":\"dense\"}";
    m = load_ok(a, &lo);
    assert_string_equal(xf_attn_name(xf_model_attention(m)), "dense");
    xf_model_free(m);
}

XF_TEST_MAIN(XF_TEST_WITH_DIR(test_demo_tiny),
             XF_TEST_WITH_DIR(test_demo_version),
             XF_TEST_WITH_DIR(test_demo_vocab_english),
             XF_TEST_WITH_DIR(test_demo_classifier_dtypes),
             XF_TEST_WITH_DIR(test_demo_bad_opts),
             XF_TEST_WITH_DIR(test_bert_prefix_dtypes),
             XF_TEST_WITH_DIR(test_roberta),
             XF_TEST_WITH_DIR(test_distilbert),
             XF_TEST_WITH_DIR(test_heterogeneous),
             XF_TEST_WITH_DIR(test_pooling),
             XF_TEST_WITH_DIR(test_st_lower_case),
             XF_TEST_WITH_DIR(test_pre_ln),
             XF_TEST_WITH_DIR(test_missing_files),
             XF_TEST_WITH_DIR(test_config_lies),
             XF_TEST_WITH_DIR(test_tensor_edits),
             XF_TEST_WITH_DIR(test_names_and_types),
             XF_TEST_WITH_DIR(test_integer_weights),
             XF_TEST_WITH_DIR(test_corrupt_files),
             XF_TEST_WITH_DIR(test_attention_option))
