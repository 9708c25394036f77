/* Real reference data (../shared/testdata) against the forward pass and the test-side reference:
 * torch_encoder_layer (PyTorch post-LN TransformerEncoderLayer, 11 cases) through the engine's
 * forward where a key padding mask is a suffix (= a shorter packed sequence) and through the
 * reference layer with explicit masks everywhere; ort_contrib Attention / EmbedLayerNormalization
 * and onnx_node test_attention_* against the reference attention, and the dense variant (via
 * the vtable) against that reference on the inputs it can express. Skips when data is absent. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../helpers/testdata.h"
#include "../helpers/xf_test.h"
#include "../ref/encoder_ref.h"

#include <xformd/forward.h>

#include "attention/registry.h"
#include "engine/model.h"

/* ---- shared helpers --------------------------------------------------------------------- */

/* A hand-filled model whose tensors point into caller storage. */
typedef struct mini_model {
    xf_model_t m;
    xf_layer_t layer;
    xf_layer_info_t info;
} mini_model_t;

static void mini_free(mini_model_t *mm)
{
    if (mm->m.prep_free)
        mm->m.prep_free(mm->m.prep);
    mm->m.prep = NULL;
    mm->m.prep_free = NULL;
}

static xf_w_t wv(const float *d, int32_t rows, int32_t cols)
{
    xf_w_t w = { d, rows, cols };
    return w;
}

/* Plan + reserve + forward, hidden states only. */
static int engine_hidden(const xf_model_t *m, int32_t B, const int32_t *cu, const int32_t *ids,
                         const int32_t *types, float *hidden)
{
    xf_ctx_opts_t co = { .n_threads = 2 };
    xf_ctx_t *c = NULL;
    xf_plan_t *p = NULL;
    xf_batch_t b = { .n_seq = B, .cu_len = cu, .ids = ids, .type_ids = types };
    xf_output_t out = { .pooling = XF_POOL_CLS, .normalize = 0, .hidden = hidden };
    xf_diag_t diag = { 0 };
    int rc;

    assert_int_equal(xf_ctx_create(&co, &c), 0);
    assert_int_equal(xf_plan_create(m, &p), 0);
    rc = xf_plan_build(p, &b, 2, &diag);
    if (!rc)
        rc = xf_ctx_reserve(c, p);
    if (!rc)
        rc = xf_forward(c, m, p, &b, &out, &diag);
    if (rc)
        print_message("# engine: %d %s\n", rc, diag.msg);
    xf_plan_free(p);
    xf_ctx_free(c);
    return rc;
}

/* The engine's attention path: the dense variant through its vtable over a packed batch.
 * Planes [h][N][d], out [N][h][d]; q is not pre-scaled (q_scale 1). */
static int engine_attention(int32_t B, const int32_t *cu, int32_t h, int32_t d, const float *Q,
                            const float *K, const float *V, float scale, float *out)
{
    const xf_attn_t *a = xf_attn_dense();
    const xf_attn_vtbl *vt = a->vt;
    enum { NTH = 2 };
    xf_attn_shape sh = { .n_seq = B, .cu_len = cu, .n_tokens = cu[B], .n_head = h,
                         .d_head = d, .layer = 0, .mem_rows = NULL };
    xf_attn_io io;
    xf_attn_plan pl;
    void *shared = NULL, *thr[NTH] = { NULL };
    int rc;

    memset(&io, 0, sizeof io);
    io.q = Q;
    io.k = K;
    io.v = V;
    io.q_scale = 1.0f;
    io.scale = scale;
    io.out = out;
    rc = xf_at_plan(vt, a->params, &sh, NTH, &pl);
    if (rc)
        return rc;
    assert_int_equal(posix_memalign(&shared, 64, pl.ws_shared + 64), 0);
    for (int t = 0; t < NTH; t++)
        assert_int_equal(posix_memalign(&thr[t], 64, pl.ws_per_thread + 64), 0);
    if (vt->ops->prepare)
        rc = vt->ops->prepare(a->params, &sh, &io, &pl, shared);
    /* Both threads' shares, one after the other: items are independent. */
    for (int t = 0; t < NTH && !rc; t++)
        rc = xf_at_forward(vt, a->params, &sh, &io, &pl, shared, thr[t], t, NTH);
    free(shared);
    for (int t = 0; t < NTH; t++)
        free(thr[t]);
    return rc;
}

/* |got - exp| <= atol + rtol·|exp| elementwise, NaN == NaN. */
static int close_enough(const float *got, const float *exp, size_t n, double rtol, double atol,
                        double *maxd)
{
    return xf_test_allclose(got, exp, n, rtol, atol, maxd);
}

/* ---- torch_encoder_layer ---------------------------------------------------------------- */

typedef struct torch_case {
    char name[64];
    int gelu;
    int S, N, E;
    float src[64], exp[64];
    int mask[16];
    int has_mask;
} torch_case_t;

static int read_floats(char *s, float *out, int cap)
{
    int n = 0;
    for (char *tok = strtok(s, " \t"); tok; tok = strtok(NULL, " \t")) {
        if (n == cap)
            return -1;
        out[n++] = strcmp(tok, "nan") ? strtof(tok, NULL) : NAN;
    }
    return n;
}

static int load_torch_cases(const char *path, torch_case_t *cs, int cap)
{
    char line[8192];
    FILE *f = fopen(path, "r");
    int n = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || !line[0])
            continue;
        if (!strncmp(line, "case ", 5)) {
            if (++n == cap)
                break;
            memset(&cs[n], 0, sizeof cs[n]);
            snprintf(cs[n].name, sizeof cs[n].name, "%.63s", line + 5);
        } else if (n < 0) {
            continue;
        } else if (!strncmp(line, "activation ", 11)) {
            cs[n].gelu = !strcmp(line + 11, "gelu");
        } else if (!strncmp(line, "shape ", 6)) {
            sscanf(line + 6, "%d %d %d", &cs[n].S, &cs[n].N, &cs[n].E);
        } else if (!strncmp(line, "src ", 4)) {
            assert_int_equal(read_floats(line + 4, cs[n].src, 64), cs[n].S * cs[n].N * cs[n].E);
        } else if (!strncmp(line, "expected ", 9)) {
            assert_int_equal(read_floats(line + 9, cs[n].exp, 64), cs[n].S * cs[n].N * cs[n].E);
        } else if (!strncmp(line, "key_padding_mask ", 17)) {
            float mk[16];
            if (strcmp(line + 17, "none")) {
                int k = read_floats(line + 17, mk, 16);
                assert_int_equal(k, cs[n].N * cs[n].S);
                cs[n].has_mask = 1;
                for (int i = 0; i < k; i++)
                    cs[n].mask[i] = mk[i] != 0;
            }
        }
    }
    fclose(f);
    return n + (n < cap);
}

typedef struct torch_params {
    float *in_w, *in_b, *out_w, *out_b, *l1_w, *l1_b, *l2_w, *l2_b, *n1_w, *n1_b, *n2_w, *n2_b;
} torch_params_t;

static float *load_param(const char *dir, const char *name, size_t numel)
{
    char path[1200];
    size_t len = 0;
    char *d;

    snprintf(path, sizeof path, "%s/params/%s.f32", dir, name);
    d = xf_test_slurp(path, &len);
    assert_non_null(d);
    assert_int_equal(len, numel * sizeof(float));   /* sizes checked before use */
    return (float *)d;
}

/* The test-side layer: PyTorch's post-LN TransformerEncoderLayer for batch element n, with the
 * key padding mask as an explicit additive −inf bias; out is [S][N][E]. */
static void torch_ref_layer(const torch_case_t *c, const torch_params_t *P, int n, float *out)
{
    int S = c->S, N = c->N, E = c->E, H = 2, dh = E / H, F = 16;
    double x[16][4], q[16][4], k[16][4], v[16][4], a[16][4], t[4], h1[4], f[16];
    double bias[16 * 16];

    for (int s = 0; s < S; s++)
        for (int e = 0; e < E; e++)
            x[s][e] = c->src[(s * N + n) * E + e];
    for (int s = 0; s < S; s++)
        for (int o = 0; o < E; o++) {
            double aq = P->in_b[o], ak = P->in_b[E + o], av = P->in_b[2 * E + o];
            for (int i = 0; i < E; i++) {
                aq += x[s][i] * P->in_w[o * E + i];
                ak += x[s][i] * P->in_w[(E + o) * E + i];
                av += x[s][i] * P->in_w[(2 * E + o) * E + i];
            }
            q[s][o] = aq, k[s][o] = ak, v[s][o] = av;
        }
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            bias[i * S + j] = c->has_mask && c->mask[n * S + j] ? -INFINITY : 0.0;
    for (int hh = 0; hh < H; hh++)
        xf_ref_attention(S, S, dh, dh, &q[0][hh * dh], 4, &k[0][hh * dh], 4, &v[0][hh * dh], 4,
                         1.0 / sqrt((double)dh), bias, &a[0][hh * dh], 4);
    for (int s = 0; s < S; s++) {
        for (int o = 0; o < E; o++) {
            double acc = P->out_b[o];
            for (int i = 0; i < E; i++)
                acc += a[s][i] * P->out_w[o * E + i];
            t[o] = x[s][o] + acc;
        }
        xf_ref_layernorm(t, E, P->n1_w, P->n1_b, 1e-5, h1);
        for (int o = 0; o < F; o++) {
            double acc = P->l1_b[o];
            for (int i = 0; i < E; i++)
                acc += h1[i] * P->l1_w[o * E + i];
            f[o] = xf_ref_act(c->gelu ? XF_ACT_GELU : XF_ACT_RELU, acc);
        }
        for (int o = 0; o < E; o++) {
            double acc = P->l2_b[o];
            for (int i = 0; i < F; i++)
                acc += f[i] * P->l2_w[o * F + i];
            t[o] = h1[o] + acc;
        }
        xf_ref_layernorm(t, E, P->n2_w, P->n2_b, 1e-5, x[s]);
        for (int e = 0; e < E; e++)
            out[(s * N + n) * E + e] = (float)x[s][e];
    }
}

/* Length of batch element n when its mask is "no mask" or a suffix of padded keys; 0 when the
 * mask cannot be expressed by packing (a padded key before a real one, or everything padded). */
static int suffix_len(const torch_case_t *c, int n)
{
    int len = c->S;

    if (!c->has_mask)
        return len;
    while (len > 0 && c->mask[n * c->S + len - 1])
        len--;
    for (int j = 0; j < len; j++)
        if (c->mask[n * c->S + j])
            return 0;
    return len;
}

static void test_torch_encoder_layer(void **state)
{
    char dir[1024], path[1200];
    torch_case_t cs[16];
    torch_params_t P;
    int n_cases, ref_pass = 0, eng_cases = 0, eng_seqs = 0, eng_pass = 0;
    /* Tolerance of the source test: torch::allclose(rtol=1e-7, atol=1e-5, equal_nan). */
    const double rtol = 1e-7, atol = 1e-5;
    (void)state;

    XF_TESTDATA_OR_SKIP(dir, "torch_encoder_layer");
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    n_cases = load_torch_cases(path, cs, 16);
    assert_int_equal(n_cases, 11);
    P.in_w = load_param(dir, "self_attn.in_proj_weight", 48);
    P.in_b = load_param(dir, "self_attn.in_proj_bias", 12);
    P.out_w = load_param(dir, "self_attn.out_proj.weight", 16);
    P.out_b = load_param(dir, "self_attn.out_proj.bias", 4);
    P.l1_w = load_param(dir, "linear1.weight", 64);
    P.l1_b = load_param(dir, "linear1.bias", 16);
    P.l2_w = load_param(dir, "linear2.weight", 64);
    P.l2_b = load_param(dir, "linear2.bias", 4);
    P.n1_w = load_param(dir, "norm1.weight", 4);
    P.n1_b = load_param(dir, "norm1.bias", 4);
    P.n2_w = load_param(dir, "norm2.weight", 4);
    P.n2_b = load_param(dir, "norm2.bias", 4);

    for (int ci = 0; ci < n_cases; ci++) {
        const torch_case_t *c = &cs[ci];
        int S = c->S, N = c->N, E = c->E, B = 0, ok;
        float got[64];
        double md = 0;

        assert_int_equal(E, 4);
        /* Reference layer with explicit masks: every batch element. */
        for (int n = 0; n < N; n++)
            torch_ref_layer(c, &P, n, got);
        ok = close_enough(got, c->exp, (size_t)S * N * E, rtol, atol, &md);
        print_message("# torch %-18s reference max|d| %.2g %s\n", c->name, md,
                      ok ? "ok" : "FAIL");
        ref_pass += ok;

        /* The engine: one packed batch of the expressible batch elements. The model is one
         * layer whose word embedding table holds the source rows (ids = row index), with zero
         * position embeddings and no embedding LayerNorm, so the layer input is src itself. */
        int32_t cu[17] = { 0 }, ids[64], which[16];
        float word[64 * 4], zeros[16 * 4] = { 0 }, hid[64 * 4];
        for (int n = 0; n < N; n++) {
            int len = suffix_len(c, n);
            if (!len)
                continue;
            for (int s = 0; s < len; s++) {
                int t = cu[B] + s;
                memcpy(word + t * E, c->src + (s * N + n) * E, (size_t)E * sizeof(float));
                ids[t] = t;
            }
            which[B] = n;
            cu[B + 1] = cu[B] + len;
            B++;
        }
        if (!B)
            continue;
        mini_model_t mm;
        memset(&mm, 0, sizeof mm);
        mm.m.info.n_layer = 1;
        mm.m.info.d_model = E;
        mm.m.info.vocab_size = cu[B];
        mm.m.info.max_positions = S;
        mm.m.info.act = c->gelu ? XF_ACT_GELU : XF_ACT_RELU;
        mm.m.info.ln_eps = 1e-5f;
        mm.m.info.layers = &mm.info;
        mm.m.layers = &mm.layer;
        mm.m.layer_info = &mm.info;
        mm.info.n_head = mm.layer.n_head = 2;
        mm.info.d_head = mm.layer.d_head = 2;
        mm.info.d_ff = mm.layer.d_ff = 16;
        mm.m.word_emb = wv(word, cu[B], E);
        mm.m.pos_emb = wv(zeros, S, E);
        mm.layer.q_w = wv(P.in_w, 4, 4);
        mm.layer.k_w = wv(P.in_w + 16, 4, 4);
        mm.layer.v_w = wv(P.in_w + 32, 4, 4);
        mm.layer.q_b = wv(P.in_b, 1, 4);
        mm.layer.k_b = wv(P.in_b + 4, 1, 4);
        mm.layer.v_b = wv(P.in_b + 8, 1, 4);
        mm.layer.o_w = wv(P.out_w, 4, 4);
        mm.layer.o_b = wv(P.out_b, 1, 4);
        mm.layer.ln1_g = wv(P.n1_w, 1, 4);
        mm.layer.ln1_b = wv(P.n1_b, 1, 4);
        mm.layer.ff1_w = wv(P.l1_w, 16, 4);
        mm.layer.ff1_b = wv(P.l1_b, 1, 16);
        mm.layer.ff2_w = wv(P.l2_w, 4, 16);
        mm.layer.ff2_b = wv(P.l2_b, 1, 4);
        mm.layer.ln2_g = wv(P.n2_w, 1, 4);
        mm.layer.ln2_b = wv(P.n2_b, 1, 4);
        assert_int_equal(engine_hidden(&mm.m, B, cu, ids, NULL, hid), 0);
        mini_free(&mm);
        ok = 1;
        md = 0;
        for (int b = 0; b < B; b++) {
            int n = which[b];
            for (int s = 0; s < cu[b + 1] - cu[b]; s++) {
                double d1 = 0;
                /* Only unpadded positions: padded queries do not exist in a packed batch. */
                ok &= close_enough(hid + (cu[b] + s) * E, c->exp + (s * N + n) * E, (size_t)E,
                                   rtol, atol, &d1);
                md = d1 > md ? d1 : md;
            }
        }
        print_message("# torch %-18s engine (%d of %d sequences packed) max|d| %.2g %s\n",
                      c->name, B, N, md, ok ? "ok" : "FAIL");
        eng_cases++;
        eng_seqs += B;
        eng_pass += ok;
    }
    print_message("# torch_encoder_layer: reference %d/%d cases pass; engine %d/%d cases "
                  "(%d sequences) pass\n", ref_pass, n_cases, eng_pass, eng_cases, eng_seqs);
    assert_int_equal(ref_pass, n_cases);
    assert_int_equal(eng_pass, eng_cases);
    /* Every case but the two with an unexpressible mask on every element has engine runs. */
    assert_int_equal(eng_cases, 9);
    free(P.in_w), free(P.in_b), free(P.out_w), free(P.out_b), free(P.l1_w), free(P.l1_b);
    free(P.l2_w), free(P.l2_b), free(P.n1_w), free(P.n1_b), free(P.n2_w), free(P.n2_b);
}

/* ---- ort_contrib ------------------------------------------------------------------------ */

/* com.microsoft.Attention: QKV = input·weight + bias, masked keys get −10000 added. */
static void ort_attention_case(const xf_case *c, int *ref_ok, int *eng_ok, int *eng_tried)
{
    const xf_case_tensor *in = xf_case_get(c, "input"), *w = xf_case_get(c, "weight");
    const xf_case_tensor *bi = xf_case_get(c, "bias"), *mi = xf_case_get(c, "mask_index");
    const xf_case_tensor *ex = xf_case_get(c, "output");
    const char *mt = xf_case_extra(c, "mask_type");
    int B, S, In, H3, H, nh, hs;
    double scale, md = 0;
    int ok;

    assert_non_null(in), assert_non_null(w), assert_non_null(bi), assert_non_null(ex);
    assert_non_null(xf_case_attr(c, "num_heads"));
    B = (int)in->dims[0], S = (int)in->dims[1], In = (int)in->dims[2];
    H3 = (int)w->dims[1], H = H3 / 3, nh = atoi(xf_case_attr(c, "num_heads")), hs = H / nh;
    assert_int_equal(w->dims[0], In);
    assert_int_equal((size_t)B * S * H, ex->numel);
    scale = xf_case_attr(c, "scale") ? atof(xf_case_attr(c, "scale")) : 1.0 / sqrt(hs);

    double *qkv = calloc((size_t)B * S * H3, sizeof *qkv);
    double *bias = calloc((size_t)S * S, sizeof *bias), *o = calloc((size_t)B * S * H, 8);
    float *got = calloc((size_t)B * S * H, sizeof *got);
    int *len = calloc((size_t)B, sizeof *len);
    for (int r = 0; r < B * S; r++)
        for (int j = 0; j < H3; j++) {
            double a = bi->data[j];
            for (int i = 0; i < In; i++)
                a += (double)in->data[(size_t)r * In + i] * w->data[(size_t)i * H3 + j];
            qkv[(size_t)r * H3 + j] = a;
        }
    for (int b = 0; b < B; b++) {
        int last_kept = -1, first_masked = S;
        for (int j = 0; j < S; j++) {
            int masked = 0;
            if (mi && mt && !strcmp(mt, "MASK_1D_KEY_SEQ_LEN"))
                masked = j >= (int)mi->data[b];
            else if (mi)
                masked = mi->data[(size_t)b * S + j] == 0;
            for (int i = 0; i < S; i++)
                bias[i * S + j] = masked ? -10000.0 : 0.0;   /* ORT's mask_filter_value */
            if (masked && j < first_masked)
                first_masked = j;
            if (!masked)
                last_kept = j;
        }
        /* Expressible by packing: the masked keys are a suffix and some key is kept. */
        len[b] = last_kept >= 0 && last_kept < first_masked ? first_masked : 0;
        for (int h = 0; h < nh; h++)
            xf_ref_attention(S, S, hs, hs, qkv + (size_t)b * S * H3 + h * hs, H3,
                             qkv + (size_t)b * S * H3 + H + h * hs, H3,
                             qkv + (size_t)b * S * H3 + 2 * H + h * hs, H3, scale, bias,
                             o + (size_t)b * S * H + h * hs, H);
    }
    for (size_t i = 0; i < (size_t)B * S * H; i++)
        got[i] = (float)o[i];
    ok = close_enough(got, ex->data, ex->numel, c->rtol, c->atol, &md);
    print_message("# ort %-30s reference max|d| %.2g %s\n", strrchr(c->dir, '/') + 1, md,
                  ok ? "ok" : "FAIL");
    *ref_ok += ok;

    /* The dense variant on the expressible batch elements, packed, against the reference. */
    {
        int32_t cu[9] = { 0 }, nb = 0, which[8];
        for (int b = 0; b < B && b < 8; b++)
            if (len[b]) {
                which[nb] = b;
                cu[nb + 1] = cu[nb] + len[b];
                nb++;
            }
        if (nb) {
            int32_t N = cu[nb];
            float *Q = calloc((size_t)3 * nh * N * hs, sizeof *Q), *out = calloc((size_t)N * H, 4);
            float *K = Q + (size_t)nh * N * hs, *V = K + (size_t)nh * N * hs;
            int eok = 1;
            double emd = 0;
            for (int k2 = 0; k2 < nb; k2++)
                for (int s = 0; s < len[which[k2]]; s++)
                    for (int h = 0; h < nh; h++)
                        for (int d = 0; d < hs; d++) {
                            const double *row = qkv + ((size_t)which[k2] * S + s) * H3;
                            size_t at = ((size_t)h * N + cu[k2] + s) * hs + d;
                            Q[at] = (float)row[h * hs + d];
                            K[at] = (float)row[H + h * hs + d];
                            V[at] = (float)row[2 * H + h * hs + d];
                        }
            assert_int_equal(engine_attention(nb, cu, nh, hs, Q, K, V, (float)scale, out), 0);
            for (int k2 = 0; k2 < nb; k2++)
                for (int s = 0; s < len[which[k2]]; s++) {
                    double d1 = 0;
                    eok &= close_enough(out + (size_t)(cu[k2] + s) * H,
                                        got + ((size_t)which[k2] * S + s) * H, (size_t)H,
                                        c->rtol, c->atol, &d1);
                    emd = d1 > emd ? d1 : emd;
                }
            print_message("# ort %-30s dense variant (%d of %d sequences) max|d| %.2g %s\n",
                          strrchr(c->dir, '/') + 1, (int)nb, B, emd, eok ? "ok" : "FAIL");
            *eng_ok += eok;
            (*eng_tried)++;
            free(Q);
            free(out);
        }
    }
    free(qkv);
    free(bias);
    free(o);
    free(got);
    free(len);
}

/* com.microsoft.EmbedLayerNormalization: the reference, and the engine's forward with no
 * layers (embeddings + LayerNorm are then the hidden states). */
static void ort_embed_case(const xf_case *c, int *ref_ok, int *eng_ok, int *eng_tried)
{
    const xf_case_tensor *ids = xf_case_get(c, "input_ids"), *seg = xf_case_get(c, "segment_ids");
    const xf_case_tensor *we = xf_case_get(c, "word_embedding");
    const xf_case_tensor *pe = xf_case_get(c, "position_embedding");
    const xf_case_tensor *se = xf_case_get(c, "segment_embedding");
    const xf_case_tensor *g = xf_case_get(c, "gamma"), *bt = xf_case_get(c, "beta");
    const xf_case_tensor *mask = xf_case_get(c, "mask"), *ex = xf_case_get(c, "output");
    const xf_case_tensor *mx = xf_case_get(c, "mask_index");
    double eps = atof(xf_case_attr(c, "epsilon")), md = 0;
    int B = (int)ids->dims[0], S = (int)ids->dims[1], D = (int)we->dims[1], ok;
    float *got = calloc((size_t)B * S * D, sizeof *got), *hid = calloc((size_t)B * S * D, 4);
    int32_t *iid = calloc((size_t)B * S, 4), *sid = calloc((size_t)B * S, 4);
    int32_t cu[9];

    for (int b = 0; b < B; b++) {
        int cnt = 0;
        for (int s = 0; s < S; s++) {
            double x[64], y[64];
            int t = b * S + s;
            iid[t] = (int32_t)ids->data[t];
            sid[t] = seg ? (int32_t)seg->data[t] : 0;
            for (int d = 0; d < D; d++)
                x[d] = (double)we->data[(size_t)iid[t] * D + d] + pe->data[(size_t)s * D + d] +
                       (se ? se->data[(size_t)sid[t] * D + d] : 0.0);
            xf_ref_layernorm(x, D, g->data, bt->data, eps, y);
            for (int d = 0; d < D; d++)
                got[(size_t)t * D + d] = (float)y[d];
            cnt += mask->data[t] != 0;
        }
        assert_true(mx->data[b] == (float)cnt);   /* mask_index = number of ones */
        cu[b] = b * S;
    }
    cu[B] = B * S;
    ok = close_enough(got, ex->data, ex->numel, c->rtol, c->atol, &md);
    print_message("# ort %-30s reference max|d| %.2g %s\n", strrchr(c->dir, '/') + 1, md,
                  ok ? "ok" : "FAIL");
    *ref_ok += ok;

    /* The engine: a model with no layers and these tables. Every sequence is the full S
     * tokens (the mask affects only mask_index). */
    mini_model_t mm;
    memset(&mm, 0, sizeof mm);
    mm.m.info.n_layer = 0;
    mm.m.info.d_model = D;
    mm.m.info.vocab_size = (int32_t)we->dims[0];
    mm.m.info.max_positions = (int32_t)pe->dims[0];
    mm.m.info.type_vocab_size = se ? (int32_t)se->dims[0] : 0;
    mm.m.info.ln_eps = (float)eps;
    mm.m.info.act = XF_ACT_GELU;
    mm.m.layers = &mm.layer;
    mm.m.layer_info = &mm.info;
    mm.m.info.layers = &mm.info;
    mm.m.word_emb = wv(we->data, (int32_t)we->dims[0], D);
    mm.m.pos_emb = wv(pe->data, (int32_t)pe->dims[0], D);
    if (se)
        mm.m.type_emb = wv(se->data, (int32_t)se->dims[0], D);
    mm.m.emb_ln_g = wv(g->data, 1, D);
    mm.m.emb_ln_b = wv(bt->data, 1, D);
    assert_int_equal(engine_hidden(&mm.m, B, cu, iid, seg ? sid : NULL, hid), 0);
    mini_free(&mm);
    md = 0;
    ok = close_enough(hid, ex->data, ex->numel, c->rtol, c->atol, &md);
    print_message("# ort %-30s engine embeddings max|d| %.2g %s\n", strrchr(c->dir, '/') + 1,
                  md, ok ? "ok" : "FAIL");
    *eng_ok += ok;
    (*eng_tried)++;
    free(got);
    free(hid);
    free(iid);
    free(sid);
}

static int list_cases(const char *dir, const char *prefix, char names[][128], int cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) && n < cap)
        if (e->d_name[0] != '.' && !strncmp(e->d_name, prefix, strlen(prefix)) &&
            strcmp(e->d_name, "README.md") && !strchr(e->d_name, '.'))
            snprintf(names[n++], 128, "%.127s", e->d_name);
    closedir(d);
    return n;
}

static void test_ort_contrib(void **state)
{
    char dir[1024], sub[1200], err[512], names[16][128];
    int n, ref_ok = 0, eng_ok = 0, eng_tried = 0;
    (void)state;

    XF_TESTDATA_OR_SKIP(dir, "ort_contrib");
    n = list_cases(dir, "", names, 16);
    assert_int_equal(n, 7);
    for (int i = 0; i < n; i++) {
        xf_case c;
        snprintf(sub, sizeof sub, "%.1023s/%.127s", dir, names[i]);
        if (xf_case_load(sub, &c, err, sizeof err))
            fail_msg("%s", err);
        if (!strcmp(c.op, "com.microsoft.Attention"))
            ort_attention_case(&c, &ref_ok, &eng_ok, &eng_tried);
        else if (!strcmp(c.op, "com.microsoft.EmbedLayerNormalization"))
            ort_embed_case(&c, &ref_ok, &eng_ok, &eng_tried);
        else
            fail_msg("%s: unexpected op %s", names[i], c.op);
        xf_case_free(&c);
    }
    print_message("# ort_contrib: reference %d/%d cases pass; engine %d/%d expressible cases "
                  "pass\n", ref_ok, n, eng_ok, eng_tried);
    assert_int_equal(ref_ok, n);
    assert_int_equal(eng_ok, eng_tried);
    /* Attention: Batch1, Batch2AttentionMask (element 1), PrunedModel; 3 embedding cases. */
    assert_int_equal(eng_tried, 6);
}

/* ---- onnx_node test_attention_* --------------------------------------------------------- */

typedef struct onnx_layout {
    int rank, B, H, S, d;      /* logical [B][H][S][d] */
} onnx_layout_t;

static onnx_layout_t onnx_layout(const xf_case_tensor *t, int heads)
{
    onnx_layout_t l;
    l.rank = t->rank;
    l.B = (int)t->dims[0];
    if (t->rank == 4) {
        l.H = (int)t->dims[1], l.S = (int)t->dims[2], l.d = (int)t->dims[3];
    } else {
        l.H = heads, l.S = (int)t->dims[1], l.d = (int)t->dims[2] / heads;
    }
    return l;
}

/* Element (b, h, s, c) of a 3-D [B][S][H·d] or 4-D [B][H][S][d] tensor. */
static size_t onnx_at(const onnx_layout_t *l, int b, int h, int s, int c)
{
    if (l->rank == 4)
        return (((size_t)b * l->H + h) * l->S + s) * l->d + c;
    return ((size_t)b * l->S + s) * ((size_t)l->H * l->d) + (size_t)h * l->d + c;
}

static void test_onnx_attention(void **state)
{
    char dir[1024], sub[1200], err[512], names[32][128];
    int n, ref_ok = 0, eng_ok = 0, eng_tried = 0;
    (void)state;

    XF_TESTDATA_OR_SKIP(dir, "onnx_node");
    n = list_cases(dir, "test_attention", names, 32);
    assert_int_equal(n, 14);
    for (int ci = 0; ci < n; ci++) {
        xf_case c;
        snprintf(sub, sizeof sub, "%.1023s/%.127s", dir, names[ci]);
        if (xf_case_load(sub, &c, err, sizeof err))
            fail_msg("%s", err);
        const xf_case_tensor *q = xf_case_get(&c, "Q"), *k = xf_case_get(&c, "K");
        const xf_case_tensor *v = xf_case_get(&c, "V"), *y = xf_case_get(&c, "Y");
        const xf_case_tensor *mask = xf_case_get(&c, "attn_mask");
        const xf_case_tensor *nonpad = xf_case_get(&c, "nonpad_kv_seqlen");
        const char *a;
        int qh = (a = xf_case_attr(&c, "q_num_heads")) ? atoi(a) : 0;
        int kh = (a = xf_case_attr(&c, "kv_num_heads")) ? atoi(a) : 0;
        int causal = (a = xf_case_attr(&c, "is_causal")) ? atoi(a) : 0;
        double softcap = (a = xf_case_attr(&c, "softcap")) ? atof(a) : 0;
        onnx_layout_t lq = onnx_layout(q, qh), lk = onnx_layout(k, kh), lv = onnx_layout(v, kh);
        onnx_layout_t ly = onnx_layout(y, qh);
        double scale = (a = xf_case_attr(&c, "scale")) ? atof(a) : 1.0 / sqrt(lq.d), md = 0;
        int B = lq.B, H = lq.H, Sq = lq.S, Skv = lk.S, dq = lq.d, dv = lv.d, ok;
        size_t ny = y->numel;
        float *got = calloc(ny, sizeof *got);
        double *qd = calloc((size_t)Sq * dq, 8), *kd = calloc((size_t)Skv * dq, 8);
        double *vd = calloc((size_t)Skv * dv, 8), *od = calloc((size_t)Sq * dv, 8);
        double *bias = calloc((size_t)Sq * Skv, 8);

        assert_true(softcap == 0);
        assert_int_equal(ly.d, dv);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int hk = h / (H / lk.H);   /* grouped-query heads share K/V */
                for (int i = 0; i < Sq; i++)
                    for (int cc = 0; cc < dq; cc++)
                        qd[(size_t)i * dq + cc] = q->data[onnx_at(&lq, b, h, i, cc)];
                for (int j = 0; j < Skv; j++) {
                    for (int cc = 0; cc < dq; cc++)
                        kd[(size_t)j * dq + cc] = k->data[onnx_at(&lk, b, hk, j, cc)];
                    for (int cc = 0; cc < dv; cc++)
                        vd[(size_t)j * dv + cc] = v->data[onnx_at(&lv, b, hk, j, cc)];
                }
                for (int i = 0; i < Sq; i++)
                    for (int j = 0; j < Skv; j++) {
                        double bb = 0;
                        if (mask) {
                            /* Right-aligned broadcast to [B][H][Sq][Skv]; keys past the
                             * mask's last dimension are padding (−inf). */
                            int r = mask->rank, mj = (int)mask->dims[r - 1];
                            int64_t idx[4] = { b, h, i, j };
                            size_t off = 0;
                            if (j >= mj) {
                                bb = -INFINITY;
                            } else {
                                for (int ax = 0; ax < r; ax++) {
                                    int64_t dim = mask->dims[ax];
                                    int64_t coord = idx[4 - r + ax];
                                    off = off * (size_t)dim + (size_t)(dim == 1 ? 0 : coord);
                                }
                                float mv = mask->data[off];
                                if (!strcmp(mask->dtype, "bool"))
                                    bb = mv != 0 ? 0 : -INFINITY;
                                else
                                    bb = mv;
                            }
                        }
                        if (causal && j > i)
                            bb = -INFINITY;
                        if (nonpad && j >= (int)nonpad->data[b])
                            bb = -INFINITY;
                        bias[(size_t)i * Skv + j] = bb;
                    }
                xf_ref_attention(Sq, Skv, dq, dv, qd, dq, kd, dq, vd, dv, scale, bias, od, dv);
                for (int i = 0; i < Sq; i++)
                    for (int cc = 0; cc < dv; cc++)
                        got[onnx_at(&ly, b, h, i, cc)] = (float)od[(size_t)i * dv + cc];
            }
        ok = close_enough(got, y->data, ny, c.rtol, c.atol, &md);
        print_message("# onnx %-44s reference max|d| %.2g %s\n", names[ci], md,
                      ok ? "ok" : "FAIL");
        ref_ok += ok;

        /* The dense variant where the case is plain packed attention: no mask, no causal
         * flag, q_len == kv_len, one head width, as many K/V heads as Q heads. */
        if (!mask && !causal && !nonpad && Sq == Skv && dq == dv && lk.H == H) {
            int32_t cu[9] = { 0 }, N = B * Sq;
            float *P = calloc((size_t)3 * H * N * dq, 4), *out = calloc((size_t)N * H * dq, 4);
            float *Kp = P + (size_t)H * N * dq, *Vp = Kp + (size_t)H * N * dq;
            double emd = 0;
            for (int b = 0; b < B; b++)
                cu[b + 1] = cu[b] + Sq;
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                    for (int s = 0; s < Sq; s++)
                        for (int cc = 0; cc < dq; cc++) {
                            size_t at = ((size_t)h * N + b * Sq + s) * dq + cc;
                            P[at] = q->data[onnx_at(&lq, b, h, s, cc)];
                            Kp[at] = k->data[onnx_at(&lk, b, h, s, cc)];
                            Vp[at] = v->data[onnx_at(&lv, b, h, s, cc)];
                        }
            assert_int_equal(engine_attention(B, cu, H, dq, P, Kp, Vp, (float)scale, out), 0);
            float *eng = calloc(ny, sizeof *eng);
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                    for (int s = 0; s < Sq; s++)
                        for (int cc = 0; cc < dq; cc++)
                            eng[onnx_at(&ly, b, h, s, cc)] =
                                out[((size_t)(b * Sq + s) * H + h) * dq + cc];
            int eok = close_enough(eng, got, ny, c.rtol, c.atol, &emd);
            free(eng);
            print_message("# onnx %-44s dense variant max|d| %.2g %s\n", names[ci], emd,
                          eok ? "ok" : "FAIL");
            eng_ok += eok;
            eng_tried++;
            free(P);
            free(out);
        }
        free(got);
        free(qd);
        free(kd);
        free(vd);
        free(od);
        free(bias);
        xf_case_free(&c);
    }
    print_message("# onnx_node test_attention_*: reference %d/%d cases pass; dense variant "
                  "%d/%d expressible cases pass\n", ref_ok, n, eng_ok, eng_tried);
    assert_int_equal(ref_ok, n);
    assert_int_equal(eng_ok, eng_tried);
    assert_true(eng_tried >= 1);
}

XF_TEST_MAIN(cmocka_unit_test(test_torch_encoder_layer), cmocka_unit_test(test_ort_contrib),
             cmocka_unit_test(test_onnx_attention))
