/* Float64 reference of HF TransfoXLLMHeadModel (see txl_ref.h). Written for obviousness: full
 * [qlen][klen] score matrices, HF's boolean masks built as HF builds them (triu/tril), the
 * original _rel_shift on a zero-padded matrix, and the adaptive log-softmax over every token. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine/safetensors.h"
#include "txl_ref.h"

typedef struct rlayer {
    double *qkv, *r, *o, *ln1g, *ln1b, *u, *v, *f1w, *f1b, *f2w, *f2b, *ln2g, *ln2b;
} rlayer_t;

struct txl_ref {
    int L, D, de, H, dh, F, V, div_val, nc, mem_len, clamp_len, same_length, pre_lnorm;
    int ends[12], d[11];
    double eps;
    double *emb[11], *emb_proj[11], *out_w[11], *out_b[11], *out_proj[11], *cw, *cb;
    rlayer_t *ly;
    double **all;
    int n_all;
};

static double *keep(txl_ref_t *r, double *p)
{
    r->all[r->n_all++] = p;
    return p;
}

/* The tensor as doubles, or NULL when absent. */
static double *tensor(txl_ref_t *r, xf_st_file_t *f, const char *name)
{
    const xf_st_tensor_t *t = xf_st_find(f, name);
    const float *d;
    float *owned = NULL;
    double *out;

    if (!t || xf_st_read_f32(f, t, &d, &owned, NULL) < 0)
        return NULL;
    out = malloc(sizeof(double) * (size_t)t->numel);
    for (uint64_t i = 0; i < t->numel; i++)
        out[i] = d[i];
    free(owned);
    return keep(r, out);
}

static int geti(json_t *c, const char *k, int def)
{
    json_t *v = json_object_get(c, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

static int getb(json_t *c, const char *k, int def)
{
    json_t *v = json_object_get(c, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

int txl_ref_load(const char *dir, int mem_len, txl_ref_t **out)
{
    char path[4096], n[256];
    json_error_t je;
    json_t *c, *cut, *tp;
    xf_st_file_t *f = NULL;
    txl_ref_t *r = calloc(1, sizeof *r);
    int tie_w, tie_p[11];

    snprintf(path, sizeof path, "%s/config.json", dir);
    c = json_load_file(path, 0, &je);
    if (!c || !r)
        return -EINVAL;
    r->all = calloc(4096, sizeof *r->all);
    r->L = geti(c, "n_layer", 0);
    r->D = geti(c, "d_model", 0);
    r->de = geti(c, "d_embed", r->D);
    r->H = geti(c, "n_head", 0);
    r->dh = geti(c, "d_head", 0);
    r->F = geti(c, "d_inner", 0);
    r->V = geti(c, "vocab_size", 0);
    r->div_val = geti(c, "div_val", 1);
    r->mem_len = mem_len >= 0 ? mem_len : geti(c, "mem_len", 0);
    r->clamp_len = geti(c, "clamp_len", 0);
    r->same_length = getb(c, "same_length", 0);
    r->pre_lnorm = getb(c, "pre_lnorm", 0);
    tie_w = getb(c, "tie_word_embeddings", 1);
    r->eps = json_is_number(json_object_get(c, "layer_norm_epsilon"))
                 ? json_number_value(json_object_get(c, "layer_norm_epsilon"))
                 : 1e-5;
    cut = json_object_get(c, "cutoffs");
    r->nc = (int)json_array_size(cut);
    r->ends[0] = 0;
    for (int i = 0; i < r->nc; i++)
        r->ends[i + 1] = (int)json_integer_value(json_array_get(cut, (size_t)i));
    r->ends[r->nc + 1] = r->V;
    tp = json_object_get(c, "tie_projs");
    for (int i = 0; i <= r->nc; i++)
        tie_p[i] = tp ? json_is_true(json_array_get(tp, (size_t)i)) : i > 0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (xf_st_open(path, &f, NULL) < 0) {
        json_decref(c);
        txl_ref_free(r);
        return -EIO;
    }
    /* AdaptiveEmbedding / ProjectedAdaptiveLogSoftmax parameters, tied as tie_weights() */
    for (int i = 0; i <= r->nc; i++) {
        int di = r->de;
        for (int k = 0; k < i; k++)
            di /= r->div_val;
        r->d[i] = r->div_val == 1 ? r->de : di;
        if (r->div_val == 1 && i > 0)
            continue;
        snprintf(n, sizeof n, "transformer.word_emb.emb_layers.%d.weight", i);
        r->emb[i] = tensor(r, f, n);
        snprintf(n, sizeof n, "transformer.word_emb.emb_projs.%d", i);
        r->emb_proj[i] = tensor(r, f, n);
        snprintf(n, sizeof n, "crit.out_layers.%d.weight", i);
        r->out_w[i] = tensor(r, f, n);
        if (!r->out_w[i] && tie_w)
            r->out_w[i] = r->emb[i];
        snprintf(n, sizeof n, "crit.out_layers.%d.bias", i);
        r->out_b[i] = tensor(r, f, n);
    }
    for (int i = 0; i <= r->nc; i++) {
        snprintf(n, sizeof n, "crit.out_projs.%d", i);
        r->out_proj[i] = tensor(r, f, n);
        if (!r->out_proj[i] && tie_p[i])
            r->out_proj[i] = r->div_val == 1 ? r->emb_proj[0] : r->emb_proj[i];
    }
    r->cw = tensor(r, f, "crit.cluster_weight");
    r->cb = tensor(r, f, "crit.cluster_bias");
    r->ly = calloc((size_t)r->L, sizeof *r->ly);
    for (int l = 0; l < r->L; l++) {
        rlayer_t *y = &r->ly[l];
#define T(field, suffix)                                                                       \
    (snprintf(n, sizeof n, "transformer.layers.%d.%s", l, suffix), y->field = tensor(r, f, n))
        T(qkv, "dec_attn.qkv_net.weight");
        T(r, "dec_attn.r_net.weight");
        T(o, "dec_attn.o_net.weight");
        T(ln1g, "dec_attn.layer_norm.weight");
        T(ln1b, "dec_attn.layer_norm.bias");
        T(u, "dec_attn.r_w_bias");
        T(v, "dec_attn.r_r_bias");
        T(f1w, "pos_ff.CoreNet.0.weight");
        T(f1b, "pos_ff.CoreNet.0.bias");
        T(f2w, "pos_ff.CoreNet.3.weight");
        T(f2b, "pos_ff.CoreNet.3.bias");
        T(ln2g, "pos_ff.layer_norm.weight");
        T(ln2b, "pos_ff.layer_norm.bias");
#undef T
        if (!y->u) {
            y->u = tensor(r, f, "transformer.r_w_bias");
            y->v = tensor(r, f, "transformer.r_r_bias");
        }
    }
    xf_st_close(f);
    json_decref(c);
    *out = r;
    return 0;
}

void txl_ref_free(txl_ref_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_all; i++)
        free(r->all[i]);
    free(r->all);
    free(r->ly);
    free(r);
}

int txl_ref_d_model(const txl_ref_t *r) { return r->D; }
int txl_ref_n_layer(const txl_ref_t *r) { return r->L; }
int txl_ref_vocab(const txl_ref_t *r) { return r->V; }
int txl_ref_mem_len(const txl_ref_t *r) { return r->mem_len; }

/* nn.functional.linear: y[n][o] = x[n][i] · W[o][i]ᵀ + b */
static void lin(const double *x, int n, int in, const double *W, int o, const double *b,
                double *y)
{
    for (int r = 0; r < n; r++)
        for (int c = 0; c < o; c++) {
            double s = b ? b[c] : 0;
            for (int k = 0; k < in; k++)
                s += x[(size_t)r * in + k] * W[(size_t)c * in + k];
            y[(size_t)r * o + c] = s;
        }
}

static void ln(const double *x, int n, int D, const double *g, const double *b, double eps,
               double *y)
{
    for (int r = 0; r < n; r++) {
        double mu = 0, var = 0;
        for (int c = 0; c < D; c++)
            mu += x[(size_t)r * D + c];
        mu /= D;
        for (int c = 0; c < D; c++)
            var += (x[(size_t)r * D + c] - mu) * (x[(size_t)r * D + c] - mu);
        var /= D;
        for (int c = 0; c < D; c++)
            y[(size_t)r * D + c] = (x[(size_t)r * D + c] - mu) / sqrt(var + eps) * g[c] + b[c];
    }
}

static void log_softmax(double *z, int n)
{
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < n; i++)
        mx = fmax(mx, z[i]);
    for (int i = 0; i < n; i++)
        s += exp(z[i] - mx);
    for (int i = 0; i < n; i++)
        z[i] -= mx + log(s);
}

/* _compute_logit: proj_hid = hidden · proj (F.linear with proj.t()), then the Linear. */
static void logit(const txl_ref_t *r, const double *h, const double *W, const double *b,
                  int rows, const double *proj, int d, double *out)
{
    double *ph = malloc(sizeof(double) * (size_t)d);
    for (int e = 0; e < d; e++) {
        double s = 0;
        if (!proj)
            s = h[e];
        else
            for (int k = 0; k < r->D; k++)
                s += h[k] * proj[(size_t)k * d + e];
        ph[e] = s;
    }
    lin(ph, 1, d, W, rows, b, out);
    free(ph);
}

static void adaptive_logprob(const txl_ref_t *r, const double *h, double *out)
{
    int sl = r->ends[1], hs = sl + r->nc;
    double *W0 = malloc(sizeof(double) * (size_t)hs * r->d[0]);
    double *b0 = malloc(sizeof(double) * (size_t)hs);
    double *head = malloc(sizeof(double) * (size_t)hs);

    /* weights[0] = cat(out_layers[0] rows [0, c0), cluster_weight) */
    memcpy(W0, r->out_w[0], sizeof(double) * (size_t)sl * r->d[0]);
    memcpy(b0, r->out_b[0], sizeof(double) * (size_t)sl);
    if (r->nc) {
        memcpy(W0 + (size_t)sl * r->d[0], r->cw, sizeof(double) * (size_t)r->nc * r->d[0]);
        memcpy(b0 + sl, r->cb, sizeof(double) * (size_t)r->nc);
    }
    logit(r, h, W0, b0, hs, r->out_proj[0], r->d[0], head);
    log_softmax(head, hs);
    for (int t = 0; t < sl; t++)
        out[t] = head[t];
    for (int i = 1; i <= r->nc; i++) {
        int lo = r->ends[i], hi = r->ends[i + 1];
        const double *W, *b;
        double *tail = malloc(sizeof(double) * (size_t)(hi - lo));
        if (r->div_val == 1) {
            W = r->out_w[0] + (size_t)lo * r->d[0];
            b = r->out_b[0] + lo;
        } else {
            W = r->out_w[i];
            b = r->out_b[i];
        }
        logit(r, h, W, b, hi - lo, r->out_proj[i], r->d[i], tail);
        log_softmax(tail, hi - lo);
        for (int t = lo; t < hi; t++)
            out[t] = head[hs - i] + tail[t - lo];   /* head_logprob[:, -i] */
        free(tail);
    }
    free(W0);
    free(b0);
    free(head);
}

int txl_ref_forward(const txl_ref_t *r, const double *mems, int mlen, const int32_t *ids, int n,
                    double *logp, double *hidden, double **new_mems, int *new_mlen)
{
    int D = r->D, H = r->H, dh = r->dh, HD = H * dh, klen = mlen + n;
    double *x = calloc((size_t)n * D, sizeof(double));
    double *hids = calloc((size_t)r->L * n * D, sizeof(double));
    double *pos = calloc((size_t)klen * D, sizeof(double));
    unsigned char *mask = calloc((size_t)n * klen, 1);
    double scale = 1.0 / sqrt((double)dh);

    /* word_emb */
    for (int t = 0; t < n; t++) {
        int i = 0;
        while (i < r->nc && ids[t] >= r->ends[i + 1])
            i++;
        int di = r->d[i];
        const double *E = r->div_val == 1 ? r->emb[0] + (size_t)ids[t] * di
                                          : r->emb[i] + (size_t)(ids[t] - r->ends[i]) * di;
        const double *P = r->div_val == 1 ? r->emb_proj[0] : r->emb_proj[i];
        for (int k = 0; k < D; k++) {
            double s = 0;
            if (P)
                for (int e = 0; e < di; e++)
                    s += P[(size_t)k * di + e] * E[e];
            else
                s = E[k];
            x[(size_t)t * D + k] = s * sqrt((double)D);
        }
    }
    /* dec_attn_mask (1 = masked), as TransfoXLModel.forward builds it */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < klen; j++) {
            int m = j - i >= 1 + mlen;                       /* triu(ones, 1 + mlen) */
            if (r->same_length) {
                int mask_len = klen - r->mem_len;
                int shift = mask_len > 0 ? n - mask_len : n;
                m = m || (j - i <= -shift);                   /* tril(ones, -shift) */
            }
            mask[(size_t)i * klen + j] = (unsigned char)m;
        }
    /* pos_seq = klen-1 .. 0, clamped; PositionalEmbedding = [sin ; cos] */
    for (int k = 0; k < klen; k++) {
        double p = klen - 1 - k;
        if (r->clamp_len > 0 && p > r->clamp_len)
            p = r->clamp_len;
        for (int e = 0; e < D / 2; e++) {
            double inv = 1.0 / pow(10000.0, (2.0 * e) / D);
            pos[(size_t)k * D + e] = sin(p * inv);
            pos[(size_t)k * D + D / 2 + e] = cos(p * inv);
        }
    }
    for (int l = 0; l < r->L; l++) {
        const rlayer_t *y = &r->ly[l];
        double *cat = calloc((size_t)klen * D, sizeof(double));
        double *heads = calloc((size_t)klen * 3 * HD, sizeof(double));
        double *rk = calloc((size_t)klen * HD, sizeof(double));
        double *vec = calloc((size_t)n * HD, sizeof(double));
        double *ao = calloc((size_t)n * D, sizeof(double));
        double *ff = calloc((size_t)n * r->F, sizeof(double));
        double *tmp = calloc((size_t)n * D, sizeof(double));
        double *bdraw = calloc((size_t)n * klen, sizeof(double));
        double *pad = calloc((size_t)n * (klen + 1), sizeof(double));
        double *sc = calloc((size_t)klen, sizeof(double));

        memcpy(hids + (size_t)l * n * D, x, sizeof(double) * (size_t)n * D);
        if (mlen)
            memcpy(cat, mems + (size_t)l * mlen * D, sizeof(double) * (size_t)mlen * D);
        memcpy(cat + (size_t)mlen * D, x, sizeof(double) * (size_t)n * D);
        if (r->pre_lnorm)
            ln(cat, klen, D, y->ln1g, y->ln1b, r->eps, cat);
        lin(cat, klen, D, y->qkv, 3 * HD, NULL, heads);
        lin(pos, klen, D, y->r, HD, NULL, rk);
        for (int h = 0; h < H; h++) {
            /* BD before the shift: [qlen][rlen] */
            for (int i = 0; i < n; i++)
                for (int k = 0; k < klen; k++) {
                    double s = 0;
                    for (int e = 0; e < dh; e++)
                        s += (heads[(size_t)(mlen + i) * 3 * HD + h * dh + e] + y->v[h * dh + e]) *
                             rk[(size_t)k * HD + h * dh + e];
                    bdraw[(size_t)i * klen + k] = s;
                }
            /* _rel_shift: pad a zero column left, view [klen+1][qlen], drop row 0, view back */
            for (int i = 0; i < n; i++) {
                pad[(size_t)i * (klen + 1)] = 0;
                for (int k = 0; k < klen; k++)
                    pad[(size_t)i * (klen + 1) + 1 + k] = bdraw[(size_t)i * klen + k];
            }
            for (int i = 0; i < n; i++) {
                double mx = -INFINITY, z = 0;
                for (int j = 0; j < klen; j++) {
                    double ac = 0, bd = pad[(size_t)n + (size_t)i * klen + j];
                    for (int e = 0; e < dh; e++)
                        ac += (heads[(size_t)(mlen + i) * 3 * HD + h * dh + e] + y->u[h * dh + e]) *
                              heads[(size_t)j * 3 * HD + HD + h * dh + e];
                    sc[j] = mask[(size_t)i * klen + j] ? -INFINITY : (ac + bd) * scale;
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j < klen; j++) {
                    sc[j] = mask[(size_t)i * klen + j] ? 0 : exp(sc[j] - mx);
                    z += sc[j];
                }
                for (int e = 0; e < dh; e++) {
                    double s = 0;
                    for (int j = 0; j < klen; j++)
                        s += sc[j] / z * heads[(size_t)j * 3 * HD + 2 * HD + h * dh + e];
                    vec[(size_t)i * HD + h * dh + e] = s;
                }
            }
        }
        lin(vec, n, HD, y->o, D, NULL, ao);
        for (size_t i = 0; i < (size_t)n * D; i++)
            ao[i] += x[i];
        if (r->pre_lnorm)
            memcpy(x, ao, sizeof(double) * (size_t)n * D);
        else
            ln(ao, n, D, y->ln1g, y->ln1b, r->eps, x);
        if (r->pre_lnorm)
            ln(x, n, D, y->ln2g, y->ln2b, r->eps, tmp);
        else
            memcpy(tmp, x, sizeof(double) * (size_t)n * D);
        lin(tmp, n, D, y->f1w, r->F, y->f1b, ff);
        for (size_t i = 0; i < (size_t)n * r->F; i++)
            ff[i] = ff[i] > 0 ? ff[i] : 0;
        lin(ff, n, r->F, y->f2w, D, y->f2b, ao);
        for (size_t i = 0; i < (size_t)n * D; i++)
            ao[i] += x[i];
        if (r->pre_lnorm)
            memcpy(x, ao, sizeof(double) * (size_t)n * D);
        else
            ln(ao, n, D, y->ln2g, y->ln2b, r->eps, x);
        free(cat);
        free(heads);
        free(rk);
        free(vec);
        free(ao);
        free(ff);
        free(tmp);
        free(bdraw);
        free(pad);
        free(sc);
    }
    memcpy(hidden, x, sizeof(double) * (size_t)n * D);
    for (int t = 0; t < n; t++)
        adaptive_logprob(r, x + (size_t)t * D, logp + (size_t)t * r->V);
    /* _update_mems: cat([mems, hids])[beg:end], end = mlen + qlen, beg = end − mem_len */
    *new_mems = NULL;
    *new_mlen = 0;
    if (r->mem_len > 0) {
        int end = mlen + n, beg = end - r->mem_len > 0 ? end - r->mem_len : 0;
        double *nm = calloc((size_t)r->L * (end - beg) * D + 1, sizeof(double));
        for (int l = 0; l < r->L; l++)
            for (int g = beg; g < end; g++) {
                const double *s = g < mlen ? mems + ((size_t)l * mlen + g) * D
                                           : hids + ((size_t)l * n + (g - mlen)) * D;
                memcpy(nm + ((size_t)l * (end - beg) + (g - beg)) * D, s, sizeof(double) * D);
            }
        *new_mems = nm;
        *new_mlen = end - beg;
    }
    free(x);
    free(hids);
    free(pos);
    free(mask);
    return 0;
}
