/* Tests for structured pruning (src/engine/prune.c, prune_write.c; ATTENTION.md §24) on small
 * Hugging Face layout models built here (tests/helpers/hfmodel.c): keeping everything
 * reproduces the model's outputs; a head whose output-projection columns are zero, and FFN
 * units whose FFN2 columns are zero, score 0 and go first; the written directory reloads and
 * equals the original with the pruned heads/units ablated in its weights (BERT with prefix,
 * DistilBERT, RoBERTa, per-layer targets, a model pruned twice); config.json's pruned_heads in
 * transformers' form; the error cases leave nothing behind. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <xformd/xformd.h>

#include "../helpers/hfmodel.h"
#include "../helpers/xf_test.h"

#define N_SEQ 3
static const int32_t seq_len[N_SEQ] = { 7, 13, 22 };

/* Deterministic calibration / evaluation sequences: [CLS] words... [SEP]. */
static void make_seqs(xf_tokens_t *t, int32_t vocab, uint64_t seed)
{
    uint64_t s = seed;
    for (int i = 0; i < N_SEQ; i++) {
        int32_t n = seq_len[i];
        memset(&t[i], 0, sizeof t[i]);   /* as tokenizer.h asks: fields it does not set stay 0 */
        t[i].ids = malloc((size_t)n * sizeof *t[i].ids);
        t[i].type_ids = calloc((size_t)n, sizeof *t[i].type_ids);
        assert_non_null(t[i].ids);
        assert_non_null(t[i].type_ids);
        t[i].n = t[i].cap = n;
        for (int32_t j = 0; j < n; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            t[i].ids[j] = 104 + (int32_t)((s >> 33) % (uint64_t)(vocab - 104));
        }
        t[i].ids[0] = 101;
        t[i].ids[n - 1] = 102;
    }
}

static void free_seqs(xf_tokens_t *t)
{
    for (int i = 0; i < N_SEQ; i++)
        xf_tokens_deinit(&t[i]);
}

static xf_model_t *load(const char *dir)
{
    xf_model_t *m = NULL;
    xf_diag_t d = { 0 };
    int rc = xf_model_load(dir, NULL, &m, &d);
    if (rc)
        print_message("load %s: %s\n", dir, d.msg);
    assert_int_equal(rc, 0);
    return m;
}

/* The final hidden states of the sequences, one batch: [Σ n][d_model], malloc'd. */
static float *hidden(const xf_model_t *m, const xf_tokens_t *t)
{
    const int32_t D = xf_model_info(m)->d_model;
    int32_t cu[N_SEQ + 1] = { 0 }, *ids;
    xf_batch_t b = { 0 };
    xf_output_t o = { 0 };
    xf_ctx_opts_t co = { .n_threads = 2 };
    xf_ctx_t *c = NULL;
    xf_diag_t d = { 0 };
    float *h;

    for (int i = 0; i < N_SEQ; i++)
        cu[i + 1] = cu[i] + t[i].n;
    ids = malloc((size_t)cu[N_SEQ] * sizeof *ids);
    h = malloc((size_t)cu[N_SEQ] * (size_t)D * sizeof *h);
    assert_non_null(ids);
    assert_non_null(h);
    for (int i = 0; i < N_SEQ; i++)
        memcpy(ids + cu[i], t[i].ids, (size_t)t[i].n * sizeof *ids);
    b.n_seq = N_SEQ;
    b.cu_len = cu;
    b.ids = ids;
    o.pooling = XF_POOL_NONE;
    o.normalize = 0;
    o.hidden = h;
    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_run(c, m, &b, &o, &d), 0);
    xf_ctx_free(c);
    free(ids);
    return h;
}

static size_t n_tokens(void)
{
    size_t n = 0;
    for (int i = 0; i < N_SEQ; i++)
        n += (size_t)seq_len[i];
    return n;
}

/* Score m on the test sequences, keep heads/ffn per layer, write out. */
static xf_prune_keep_t *prune(const xf_model_t *m, const int32_t *heads, const int32_t *ffn,
                              const char *out, xf_prune_scores_t **scores)
{
    xf_tokens_t cal[N_SEQ];
    xf_prune_scores_t *s = NULL;
    xf_prune_keep_t *k = NULL;
    xf_diag_t d = { 0 };
    int rc;

    make_seqs(cal, xf_model_info(m)->vocab_size, 99);
    rc = xf_prune_score(m, cal, N_SEQ, 2, &s, &d);
    if (rc == 0)
        rc = xf_prune_select(s, heads, ffn, &k, &d);
    if (rc == 0)
        rc = xf_prune_write(m, k, out, &d);
    if (rc)
        print_message("prune: %s\n", d.msg);
    assert_int_equal(rc, 0);
    free_seqs(cal);
    if (scores)
        *scores = s;
    else
        xf_prune_scores_free(s);
    return k;
}

static json_t *config_of(const char *dir)
{
    char p[4400];
    json_error_t e;
    json_t *j;
    snprintf(p, sizeof p, "%s/config.json", dir);
    j = json_load_file(p, 0, &e);
    assert_non_null(j);
    return j;
}

/* Keeping every head and unit writes the same model: outputs equal (bitwise: same weights,
 * same kernels, same batch), pruned_heads empty, the tokenizer files copied. */
static void test_keep_all(void **state)
{
    char dir[4096], src[4200], out[4200], p[4300];
    xf_test_hfmodel_opts o;
    int32_t heads[2] = { 4, 4 }, ffn[2] = { 64, 64 };
    xf_tokens_t ev[N_SEQ];
    xf_model_t *m, *q;
    float *h0, *h1;
    double maxd;
    json_t *cfg;
    (void)state;

    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "prune_all"));
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    xf_test_hfmodel_opts_init(&o);
    o.pooling = "mean";
    o.n_labels = 3;
    assert_int_equal(xf_test_hfmodel_write(src, &o), 0);
    m = load(src);
    xf_prune_keep_free(prune(m, heads, ffn, out, NULL));
    q = load(out);
    make_seqs(ev, 256, 5);
    h0 = hidden(m, ev);
    h1 = hidden(q, ev);
    /* 1e-6: the same weights in the same order — expected bitwise, the bound is the brief's */
    assert_true(xf_test_allclose(h1, h0, n_tokens() * 32, 0, 1e-6, &maxd));
    assert_int_equal(xf_model_info(q)->n_labels, 3);
    assert_int_equal(xf_model_info(q)->pooling, XF_POOL_MEAN);
    cfg = config_of(out);
    assert_true(json_is_object(json_object_get(cfg, "pruned_heads")));
    assert_int_equal(json_object_size(json_object_get(cfg, "pruned_heads")), 0);
    assert_int_equal(json_integer_value(json_object_get(cfg, "intermediate_size")), 64);
    json_decref(cfg);
    snprintf(p, sizeof p, "%s/vocab.txt", out);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/1_Pooling/config.json", out);
    assert_int_equal(access(p, R_OK), 0);
    free(h0);
    free(h1);
    free_seqs(ev);
    xf_model_free(q);
    xf_model_free(m);
    xf_test_rmtree(dir);
}

/* A head whose output-projection columns are zero changes nothing when ablated: score 0, the
 * first pruned; likewise FFN units with zero FFN2 columns. pruned_heads names them. */
static void test_zero_head_first(void **state)
{
    char dir[4096], src[4200], out[4200];
    xf_test_hfmodel_opts o;
    unsigned char zf0[64] = { 0 }, zf1[64] = { 0 };
    int32_t heads[2] = { 3, 3 }, ffn[2] = { 61, 62 };
    xf_prune_scores_t *s;
    xf_prune_keep_t *k;
    xf_model_t *m;
    json_t *cfg, *ph;
    (void)state;

    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "prune_zero"));
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    xf_test_hfmodel_opts_init(&o);
    o.zero_heads[0] = 1u << 2;
    o.zero_heads[1] = 1u << 0;
    zf0[5] = zf0[40] = zf0[63] = 1;
    zf1[0] = zf1[17] = 1;
    o.zero_ffn[0] = zf0;
    o.zero_ffn[1] = zf1;
    assert_int_equal(xf_test_hfmodel_write(src, &o), 0);
    m = load(src);
    k = prune(m, heads, ffn, out, &s);
    assert_true(s->head[0][2] == 0.0f);
    assert_true(s->head[1][0] == 0.0f);
    for (int h = 0; h < 4; h++) {
        if (h != 2)
            assert_true(s->head[0][h] > 0.0f);
        if (h != 0)
            assert_true(s->head[1][h] > 0.0f);
    }
    assert_int_equal(k->head[0][0], 0);
    assert_int_equal(k->head[0][1], 1);
    assert_int_equal(k->head[0][2], 3);
    assert_int_equal(k->head[1][0], 1);
    for (int i = 0; i < 61; i++)
        assert_false(zf0[k->ffn[0][i]]);
    for (int i = 0; i < 62; i++)
        assert_false(zf1[k->ffn[1][i]]);
    assert_true(s->ffn[0][40] == 0.0f && s->ffn[1][17] == 0.0f && s->ffn[0][6] > 0.0f);
    cfg = config_of(out);
    ph = json_object_get(cfg, "pruned_heads");
    assert_int_equal(json_array_size(json_object_get(ph, "0")), 1);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(ph, "0"), 0)), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(ph, "1"), 0)), 0);
    /* uniform widths are not uniform here: intermediate_size is the widest kept layer */
    assert_int_equal(json_integer_value(json_object_get(cfg, "intermediate_size")), 62);
    assert_int_equal(json_array_size(json_object_get(cfg, "intermediate_size_per_layer")), 2);
    json_decref(cfg);
    xf_prune_keep_free(k);
    xf_prune_scores_free(s);
    xf_model_free(m);
    xf_test_rmtree(dir);
}

/* Prune src with the targets, then compare the reloaded result with src's weights ablated
 * (zero output-projection columns of the pruned heads, zero FFN2 columns of the pruned units). */
static void check_masked(const char *dir, const xf_test_hfmodel_opts *base, const int32_t *heads,
                         const int32_t *ffn, const char *tag)
{
    char src[4200], out[4200], msk[4200], out2[4200];
    xf_test_hfmodel_opts o = *base;
    unsigned char *zf[XF_TEST_HF_MAX_LAYERS] = { 0 };
    xf_tokens_t ev[N_SEQ];
    xf_prune_keep_t *k;
    xf_model_t *m, *p, *a;
    float *hp, *ha;
    double maxd;

    snprintf(src, sizeof src, "%s/%s-src", dir, tag);
    snprintf(out, sizeof out, "%s/%s-out", dir, tag);
    snprintf(msk, sizeof msk, "%s/%s-masked", dir, tag);
    snprintf(out2, sizeof out2, "%s/%s-twice", dir, tag);
    assert_int_equal(xf_test_hfmodel_write(src, &o), 0);
    m = load(src);
    k = prune(m, heads, ffn, out, NULL);
    for (int l = 0; l < o.n_layer; l++) {
        const xf_layer_info_t *li = &xf_model_info(m)->layers[l];
        o.zero_heads[l] = (1u << li->n_head) - 1u;
        for (int i = 0; i < k->n_head[l]; i++)
            o.zero_heads[l] &= ~(1u << k->head[l][i]);
        zf[l] = malloc((size_t)li->d_ff);
        assert_non_null(zf[l]);
        memset(zf[l], 1, (size_t)li->d_ff);
        for (int i = 0; i < k->n_ffn[l]; i++)
            zf[l][k->ffn[l][i]] = 0;
        o.zero_ffn[l] = zf[l];
    }
    assert_int_equal(xf_test_hfmodel_write(msk, &o), 0);
    p = load(out);
    a = load(msk);
    for (int l = 0; l < o.n_layer; l++) {
        assert_int_equal(xf_model_info(p)->layers[l].n_head, heads[l]);
        assert_int_equal(xf_model_info(p)->layers[l].d_ff, ffn[l]);
    }
    make_seqs(ev, xf_model_info(m)->vocab_size, 7);
    hp = hidden(p, ev);
    ha = hidden(a, ev);
    /* 1e-5: the same sums over the kept heads/units, the zero terms dropped, so only the
     * summation order differs (values O(1) after LayerNorm) */
    assert_true(xf_test_allclose(hp, ha, n_tokens() * (size_t)o.d_model, 0, 1e-5, &maxd));
    print_message("# %s: pruned vs ablated max |d| = %.3g\n", tag, maxd);

    /* Pruning the pruned model again: pruned_heads merges both rounds in original indices. */
    {
        int32_t one[XF_TEST_HF_MAX_LAYERS], f2[XF_TEST_HF_MAX_LAYERS];
        xf_prune_keep_t *k2;
        xf_model_t *t;
        json_t *cfg;
        for (int l = 0; l < o.n_layer; l++) {
            one[l] = 1;
            f2[l] = ffn[l] > 1 ? ffn[l] - 1 : 1;
        }
        k2 = prune(p, one, f2, out2, NULL);
        t = load(out2);
        cfg = config_of(out2);
        for (int l = 0; l < o.n_layer; l++) {
            char key[16];
            const json_t *lst;
            int32_t kept_orig = k->head[l][k2->head[l][0]];
            snprintf(key, sizeof key, "%d", l);
            lst = json_object_get(json_object_get(cfg, "pruned_heads"), key);
            assert_int_equal(json_array_size(lst), o.d_model / o.d_head - 1);
            for (size_t i = 0; i < json_array_size(lst); i++)
                assert_int_not_equal(json_integer_value(json_array_get(lst, i)), kept_orig);
            assert_int_equal(xf_model_info(t)->layers[l].n_head, 1);
        }
        json_decref(cfg);
        xf_model_free(t);
        xf_prune_keep_free(k2);
    }
    for (int l = 0; l < o.n_layer; l++)
        free(zf[l]);
    free(hp);
    free(ha);
    free_seqs(ev);
    xf_prune_keep_free(k);
    xf_model_free(a);
    xf_model_free(p);
    xf_model_free(m);
}

static void test_reload_equals_masked(void **state)
{
    char dir[4096];
    xf_test_hfmodel_opts o;
    (void)state;

    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "prune_mask"));
    {
        int32_t h[3] = { 2, 2, 2 }, f[3] = { 40, 40, 40 };
        xf_test_hfmodel_opts_init(&o);
        o.n_layer = 3;
        o.prefix = 1;
        o.n_labels = 2;
        check_masked(dir, &o, h, f, "bert");
    }
    {
        int32_t h[2] = { 3, 1 }, f[2] = { 17, 50 };     /* per-layer targets */
        xf_test_hfmodel_opts_init(&o);
        o.arch = "distilbert";
        check_masked(dir, &o, h, f, "distil");
    }
    {
        int32_t h[2] = { 2, 1 }, f[2] = { 30, 9 };
        xf_test_hfmodel_opts_init(&o);
        o.arch = "roberta";
        o.heads[1] = 3;          /* already narrower: a pruned source */
        o.ffn[0] = 48;
        o.per_layer_config = 1;
        check_masked(dir, &o, h, f, "roberta");
    }
    xf_test_rmtree(dir);
}

/* Count entries of dir whose name contains ".tmp." (left-over temporary directories). */
static int tmp_left(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void test_errors(void **state)
{
    char dir[4096], src[4200], out[4200], p[4300];
    xf_test_hfmodel_opts o;
    xf_tokens_t cal[N_SEQ];
    xf_prune_scores_t *s = NULL;
    xf_prune_keep_t *k = NULL;
    xf_diag_t d = { 0 };
    xf_model_t *m;
    int32_t ok_h[2] = { 2, 2 }, ok_f[2] = { 8, 8 }, bad[2] = { 2, 5 }, zero[2] = { 0, 8 };
    int32_t wide[2] = { 8, 65 };
    (void)state;

    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "prune_err"));
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    xf_test_hfmodel_opts_init(&o);
    assert_int_equal(xf_test_hfmodel_write(src, &o), 0);
    m = load(src);
    make_seqs(cal, 256, 3);

    assert_int_equal(xf_prune_score(m, cal, 0, 1, &s, &d), -EINVAL);
    assert_non_null(strstr(d.msg, "no calibration"));
    cal[1].ids[2] = 100000;
    assert_int_equal(xf_prune_score(m, cal, N_SEQ, 1, &s, &d), -EINVAL);
    assert_non_null(strstr(d.msg, "out of range"));
    cal[1].ids[2] = 104;
    assert_int_equal(xf_prune_score(m, cal, N_SEQ, 1, &s, &d), 0);

    assert_int_equal(xf_prune_select(s, bad, ok_f, &k, &d), -EINVAL);      /* 5 > 4 heads */
    assert_non_null(strstr(d.msg, "layer 1"));
    assert_int_equal(xf_prune_select(s, zero, ok_f, &k, &d), -EINVAL);     /* 0 heads */
    assert_int_equal(xf_prune_select(s, ok_h, zero, &k, &d), -EINVAL);     /* F = 0 */
    assert_int_equal(xf_prune_select(s, ok_h, wide, &k, &d), -EINVAL);     /* 65 > 64 */
    assert_null(k);
    assert_int_equal(xf_prune_select(s, ok_h, ok_f, &k, &d), 0);

    /* A non-empty target is refused and left as it was; nothing temporary remains. */
    assert_int_equal(mkdir(out, 0755), 0);
    snprintf(p, sizeof p, "%s/keep.txt", out);
    assert_int_equal(xf_test_write_file(p, "x", 1), 0);
    assert_int_equal(xf_prune_write(m, k, out, &d), -EEXIST);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/config.json", out);
    assert_int_not_equal(access(p, F_OK), 0);
    assert_int_equal(tmp_left(dir), 0);

    /* A missing tensor in the source fails the write and leaves no directory behind. */
    snprintf(p, sizeof p, "%s/fresh", dir);
    {
        char st[4300], saved[4300];
        snprintf(st, sizeof st, "%s/model.safetensors", src);
        snprintf(saved, sizeof saved, "%s/saved.safetensors", dir);
        assert_int_equal(rename(st, saved), 0);
        assert_int_not_equal(xf_prune_write(m, k, p, &d), 0);
        assert_non_null(strstr(d.msg, "model.safetensors"));
        assert_int_not_equal(access(p, F_OK), 0);
        assert_int_equal(tmp_left(dir), 0);
        assert_int_equal(rename(saved, st), 0);
    }
    /* An empty existing directory is fine (replaced by the complete one). */
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(xf_prune_write(m, k, p, &d), 0);
    assert_int_equal(tmp_left(dir), 0);

    free_seqs(cal);
    xf_prune_keep_free(k);
    xf_prune_scores_free(s);
    xf_model_free(m);
    xf_test_rmtree(dir);
}

XF_TEST_MAIN(cmocka_unit_test(test_keep_all), cmocka_unit_test(test_zero_head_first),
             cmocka_unit_test(test_reload_equals_masked), cmocka_unit_test(test_errors))
