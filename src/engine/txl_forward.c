/* The Transformer-XL forward pass of one segment (HF TransfoXLLMHeadModel semantics,
 * ATTENTION.md §22): adaptive input embedding × sqrt(d_model), per layer relative multi-head
 * attention over [memory ; segment] with BD computed by index (never the rel-shift trick),
 * causal and same_length masks, post-LN (or pre-LN) blocks, memory update (inputs of each
 * layer, last min(mem_len, rows + n) rows), projected adaptive log-softmax. fp32 with cblas for
 * the matrix products, double for sums of exponentials. Allocates its scratch per call. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/diag.h"
#include "engine/txl_model.h"

/* y[n][o] = x[n][i] · W[o][i]ᵀ (+ b) */
static void linear(const float *x, int32_t n, int32_t in, const float *W, int32_t o,
                   const float *b, float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, in, 1.0f, x, in, W, in, 0.0f, y,
                o);
    if (b)
        for (int32_t r = 0; r < n; r++)
            for (int32_t c = 0; c < o; c++)
                y[(size_t)r * (size_t)o + (size_t)c] += b[c];
}

static void layer_norm(const float *x, int32_t n, int32_t D, const float *g, const float *b,
                       float eps, float *y)
{
    for (int32_t r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * (size_t)D;
        float *yr = y + (size_t)r * (size_t)D;
        double mu = 0, var = 0;
        for (int32_t c = 0; c < D; c++)
            mu += xr[c];
        mu /= D;
        for (int32_t c = 0; c < D; c++)
            var += ((double)xr[c] - mu) * ((double)xr[c] - mu);
        var /= D;
        double inv = 1.0 / sqrt(var + (double)eps);
        for (int32_t c = 0; c < D; c++)
            yr[c] = (float)(((double)xr[c] - mu) * inv) * g[c] + b[c];
    }
}

/* A sublayer's residual connection: ao += x, then x = LN(ao) (post-norm), or x = ao with
 * pre_lnorm (the next sublayer normalizes its own input). */
static void residual(float *ao, float *x, int32_t n, int32_t D, int pre_lnorm, const float *g,
                     const float *b, float eps)
{
    for (size_t i = 0; i < (size_t)n * (size_t)D; i++)
        ao[i] += x[i];
    if (pre_lnorm)
        memcpy(x, ao, sizeof(float) * (size_t)n * (size_t)D);
    else
        layer_norm(ao, n, D, g, b, eps, x);
}

static int32_t cluster_of(const xf_txl_t *m, int32_t id)
{
    int32_t c = 0;
    while (c < m->info.n_clusters && id >= m->cl[c].hi)
        c++;
    return c;
}

/* Adaptive input embedding: x = P_c · E_c[id − lo_c] · sqrt(d_model). */
static void embed(const xf_txl_t *m, const int32_t *ids, int32_t n, float *x)
{
    int32_t D = m->info.d_model;
    float s = sqrtf((float)D);

    for (int32_t t = 0; t < n; t++) {
        const xf_txl_cluster_t *k = &m->cl[cluster_of(m, ids[t])];
        const float *e = k->emb + (size_t)(ids[t] - k->lo) * (size_t)k->d;
        float *xr = x + (size_t)t * (size_t)D;
        if (k->emb_proj)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, D, k->d, 1.0f, k->emb_proj, k->d, e, 1,
                        0.0f, xr, 1);
        else
            memcpy(xr, e, sizeof(float) * (size_t)D);
        for (int32_t c = 0; c < D; c++)
            xr[c] *= s;
    }
}

/* Logits of cluster c for the hidden row x: W_c · (xᵀ P_c) + b_c; the head (c = 0) also gets
 * the n_clusters cluster logits after its shortlist. tmp: [d_c]. */
static void cluster_logits(const xf_txl_t *m, int32_t c, const float *x, float *tmp,
                           float *logits)
{
    const xf_txl_cluster_t *k = &m->cl[c];
    int32_t D = m->info.d_model, rows = k->hi - k->lo;
    const float *h = x;

    if (k->out_proj) {
        cblas_sgemv(CblasRowMajor, CblasTrans, D, k->d, 1.0f, k->out_proj, k->d, x, 1, 0.0f,
                    tmp, 1);
        h = tmp;
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, k->d, 1.0f, k->out_w, k->d, h, 1, 0.0f,
                logits, 1);
    for (int32_t i = 0; i < rows; i++)
        logits[i] += k->out_b[i];
    if (c == 0 && m->info.n_clusters > 0) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, m->info.n_clusters, k->d, 1.0f, m->cluster_w,
                    k->d, h, 1, 0.0f, logits + rows, 1);
        for (int32_t i = 0; i < m->info.n_clusters; i++)
            logits[rows + i] += m->cluster_b[i];
    }
}

/* In place: logits[0..n) → log_softmax. */
static void log_softmax(float *z, int32_t n)
{
    double mx = -INFINITY, s = 0;
    for (int32_t i = 0; i < n; i++)
        mx = z[i] > mx ? z[i] : mx;
    for (int32_t i = 0; i < n; i++)
        s += exp((double)z[i] - mx);
    double lse = mx + log(s);
    for (int32_t i = 0; i < n; i++)
        z[i] = (float)((double)z[i] - lse);
}

typedef struct lsm {
    float *head;    /* [shortlist + n_clusters] */
    float *tail;    /* [largest cluster] */
    float *tmp;     /* [d_embed] */
} lsm_t;

/* log p(y | x) from the projected adaptive log-softmax. HF (and the original code) add the head
 * log-prob of column −c for tail cluster c, i.e. shortlist + n_clusters − c. */
static float token_logprob(const xf_txl_t *m, const float *x, int32_t y, lsm_t *w)
{
    int32_t c = cluster_of(m, y), sl = m->cl[0].hi;

    cluster_logits(m, 0, x, w->tmp, w->head);
    log_softmax(w->head, sl + m->info.n_clusters);
    if (c == 0)
        return w->head[y];
    cluster_logits(m, c, x, w->tmp, w->tail);
    log_softmax(w->tail, m->cl[c].hi - m->cl[c].lo);
    return w->head[sl + m->info.n_clusters - c] + w->tail[y - m->cl[c].lo];
}

static void argmax_next(const xf_txl_t *m, const float *x, lsm_t *w, int32_t *id, float *lp)
{
    int32_t sl = m->cl[0].hi, best = 0;
    float bv = -INFINITY;

    cluster_logits(m, 0, x, w->tmp, w->head);
    log_softmax(w->head, sl + m->info.n_clusters);
    for (int32_t i = 0; i < sl; i++)
        if (w->head[i] > bv) {
            bv = w->head[i];
            best = i;
        }
    for (int32_t c = 1; c <= m->info.n_clusters; c++) {
        float hc = w->head[sl + m->info.n_clusters - c];
        cluster_logits(m, c, x, w->tmp, w->tail);
        log_softmax(w->tail, m->cl[c].hi - m->cl[c].lo);
        for (int32_t i = 0; i < m->cl[c].hi - m->cl[c].lo; i++)
            if (hc + w->tail[i] > bv) {
                bv = hc + w->tail[i];
                best = m->cl[c].lo + i;
            }
    }
    *id = best;
    *lp = bv;
}

/* Sinusoid rows R_t = [sin(t·f) ; cos(t·f)], f_p = 10000^(−2p/D), for t = 0..K−1, t clamped to
 * clamp_len when clamp_len > 0 (HF clamps only then). Row t is the distance i' − j. */
static void sinusoids(int32_t K, int32_t D, int32_t clamp_len, float *R)
{
    for (int32_t t = 0; t < K; t++) {
        double tt = (clamp_len > 0 && t > clamp_len) ? clamp_len : t;
        for (int32_t p = 0; p < D / 2; p++) {
            double f = pow(10000.0, -2.0 * p / (double)D);
            R[(size_t)t * (size_t)D + (size_t)p] = (float)sin(tt * f);
            R[(size_t)t * (size_t)D + (size_t)(D / 2 + p)] = (float)cos(tt * f);
        }
    }
}

typedef struct ws {
    float *x, *hin, *cat, *catn, *q, *kv, *R, *r, *ac, *bd, *qu, *qv, *vec, *ao, *ff, *p;
    float *newmem;
} ws_t;

static void ws_free(ws_t *w)
{
    float **f = (float **)w;
    for (size_t i = 0; i < sizeof *w / sizeof(float *); i++)
        free(f[i]);
}

static float *fa(size_t n)
{
    return malloc((n ? n : 1) * sizeof(float));
}

int xf_txl_run(const xf_txl_t *m, xf_txl_mem_t *mem, const int32_t *ids, int32_t n,
               unsigned want, xf_txl_result_t *out, xf_diag_t *diag)
{
    return xf_txl_run_progress(m, mem, ids, n, want, NULL, NULL, out, diag);
}

int xf_txl_run_progress(const xf_txl_t *m, xf_txl_mem_t *mem, const int32_t *ids, int32_t n,
                        unsigned want, xf_txl_progress_fn progress, void *user,
                        xf_txl_result_t *out, xf_diag_t *diag)
{
    const xf_txl_info_t *cf = &m->info;
    int32_t D = cf->d_model, L = cf->n_layer, H = cf->n_head, dh = cf->d_head, HD = H * dh;
    int32_t M = mem->rows, K, F = cf->d_inner, maxc = 0, sshift;
    float scale = 1.0f / sqrtf((float)dh);
    ws_t w = { 0 };
    lsm_t ls = { 0 };
    xf_txl_result_t res = { 0 };
    int rc = 0;

    if (n < 1 || !ids)
        return xf_diag_set(diag, -EINVAL, "a segment needs at least one token");
    if (mem->n_layer != L || mem->d_model != D || mem->cap != cf->mem_len)
        return xf_diag_set(diag, -EINVAL, "memory was made for another model");
    for (int32_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= cf->vocab_size)
            return xf_diag_set(diag, -EINVAL, "token %d: id %d outside [0, %d)", t, ids[t],
                               cf->vocab_size);
    K = M + n;
    /* same_length (HF): query i sees keys j with i − j < sshift, so every query sees mem_len
     * keys once enough exist; mask_len = klen − mem_len. */
    sshift = (K > cf->mem_len) ? n - (K - cf->mem_len) : n;
    for (int32_t c = 0; c <= cf->n_clusters; c++)
        if (m->cl[c].hi - m->cl[c].lo + cf->n_clusters > maxc)
            maxc = m->cl[c].hi - m->cl[c].lo + cf->n_clusters;
    w.x = fa((size_t)n * D);
    w.hin = fa((size_t)L * n * D);
    w.cat = fa((size_t)K * D);
    w.catn = fa((size_t)K * D);
    w.q = fa((size_t)n * HD);
    w.kv = fa((size_t)K * 2 * HD);
    w.R = fa((size_t)K * D);
    w.r = fa((size_t)K * HD);
    w.ac = fa((size_t)n * K);
    w.bd = fa((size_t)n * K);
    w.qu = fa((size_t)n * dh);
    w.qv = fa((size_t)n * dh);
    w.vec = fa((size_t)n * HD);
    w.ao = fa((size_t)n * D);
    w.ff = fa((size_t)n * F);
    w.p = fa((size_t)K);
    w.newmem = fa((size_t)L * cf->mem_len * D);
    ls.head = fa((size_t)maxc);
    ls.tail = fa((size_t)maxc);
    ls.tmp = fa((size_t)(cf->d_embed > D ? cf->d_embed : D));
    res.logprobs = fa((size_t)n);
    if ((want & XF_TXL_OUT_HIDDEN) && !(res.hidden = fa((size_t)n * D)))
        rc = -ENOMEM;
    if ((want & XF_TXL_OUT_POOLED) && !(res.pooled = fa((size_t)D)))
        rc = -ENOMEM;
    {
        float **f = (float **)&w;
        for (size_t i = 0; i < sizeof w / sizeof(float *); i++)
            if (!f[i])
                rc = -ENOMEM;
    }
    if (rc || !ls.head || !ls.tail || !ls.tmp || !res.logprobs) {
        rc = xf_diag_set(diag, -ENOMEM, "out of memory");
        goto done;
    }

    embed(m, ids, n, w.x);
    sinusoids(K, D, cf->clamp_len, w.R);
    for (int32_t l = 0; l < L; l++) {
        const xf_txl_layer_t *y = &m->layers[l];
        const float *meml = mem->data + (size_t)l * (size_t)mem->cap * (size_t)D;
        const float *src;
        /* between layers (and before the first): the memory is updated only at the end, so a
         * stop leaves it as it was */
        if (progress && progress(user, l, L)) {
            rc = xf_diag_set(diag, XF_EDEADLINE, "stopped before layer %d of %d", l, L);
            goto done;
        }

        memcpy(w.hin + (size_t)l * n * D, w.x, sizeof(float) * (size_t)n * D);
        memcpy(w.cat, meml, sizeof(float) * (size_t)M * D);
        memcpy(w.cat + (size_t)M * D, w.x, sizeof(float) * (size_t)n * D);
        src = w.cat;
        if (cf->pre_lnorm) {
            layer_norm(w.cat, K, D, y->ln1_g, y->ln1_b, cf->ln_eps, w.catn);
            src = w.catn;
        }
        /* q for the segment rows only; k, v for memory + segment */
        linear(src + (size_t)M * D, n, D, y->qkv_w, HD, NULL, w.q);
        linear(src, K, D, y->qkv_w + (size_t)HD * D, 2 * HD, NULL, w.kv);
        linear(w.R, K, D, y->r_w, HD, NULL, w.r);
        for (int32_t h = 0; h < H; h++) {
            for (int32_t i = 0; i < n; i++)
                for (int32_t c = 0; c < dh; c++) {
                    float q = w.q[(size_t)i * HD + (size_t)h * dh + (size_t)c];
                    w.qu[(size_t)i * dh + c] = q + y->u[(size_t)h * dh + c];
                    w.qv[(size_t)i * dh + c] = q + y->v[(size_t)h * dh + c];
                }
            /* AC[i][j] = (q_i + u)·k_j ; BD[i][t] = (q_i + v)·r_t, read at t = M + i − j */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, dh, 1.0f, w.qu, dh,
                        w.kv + (size_t)h * dh, 2 * HD, 0.0f, w.ac, K);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, dh, 1.0f, w.qv, dh,
                        w.r + (size_t)h * dh, HD, 0.0f, w.bd, K);
            for (int32_t i = 0; i < n; i++) {
                int32_t jhi = M + i, jlo = cf->same_length ? i - sshift + 1 : 0;
                float *o = w.vec + (size_t)i * HD + (size_t)h * dh;
                double mx = -INFINITY, s = 0;
                if (jlo < 0)
                    jlo = 0;
                for (int32_t j = jlo; j <= jhi; j++) {
                    float sc = scale * (w.ac[(size_t)i * K + j] + w.bd[(size_t)i * K + (jhi - j)]);
                    w.p[j] = sc;
                    mx = sc > mx ? sc : mx;
                }
                for (int32_t j = jlo; j <= jhi; j++) {
                    double e = exp((double)w.p[j] - mx);
                    w.p[j] = (float)e;
                    s += e;
                }
                for (int32_t c = 0; c < dh; c++)
                    o[c] = 0;
                for (int32_t j = jlo; j <= jhi; j++) {
                    const float *v = w.kv + (size_t)j * 2 * HD + HD + (size_t)h * dh;
                    float pj = (float)(w.p[j] / s);
                    for (int32_t c = 0; c < dh; c++)
                        o[c] += pj * v[c];
                }
            }
        }
        linear(w.vec, n, HD, y->o_w, D, NULL, w.ao);
        residual(w.ao, w.x, n, D, cf->pre_lnorm, y->ln1_g, y->ln1_b, cf->ln_eps);
        /* position-wise FF: relu(x W1ᵀ + b1) W2ᵀ + b2 */
        src = w.x;
        if (cf->pre_lnorm) {
            layer_norm(w.x, n, D, y->ln2_g, y->ln2_b, cf->ln_eps, w.catn);
            src = w.catn;
        }
        linear(src, n, D, y->ff1_w, F, y->ff1_b, w.ff);
        for (size_t i = 0; i < (size_t)n * F; i++)
            w.ff[i] = w.ff[i] > 0 ? w.ff[i] : 0;
        linear(w.ff, n, F, y->ff2_w, D, y->ff2_b, w.ao);
        residual(w.ao, w.x, n, D, cf->pre_lnorm, y->ln2_g, y->ln2_b, cf->ln_eps);
    }
    for (size_t i = 0; i < (size_t)n * D; i++)
        if (!isfinite(w.x[i])) {
            rc = xf_diag_set(diag, XF_ENUMERIC, "hidden state is not finite");
            goto done;
        }

    /* log p(ids[t] | before): row t−1, or the previous segment's last row for t = 0 */
    res.n = n;
    res.sum = 0;
    for (int32_t t = 0; t < n; t++) {
        const float *x = t ? w.x + (size_t)(t - 1) * D : (mem->has_boundary ? mem->boundary
                                                                             : NULL);
        if (!x) {
            res.logprobs[t] = NAN;
            continue;
        }
        res.logprobs[t] = token_logprob(m, x, ids[t], &ls);
        res.sum += res.logprobs[t];
        res.n_scored++;
    }
    argmax_next(m, w.x + (size_t)(n - 1) * D, &ls, &res.next_id, &res.next_logprob);
    if (res.hidden)
        memcpy(res.hidden, w.x, sizeof(float) * (size_t)n * D);
    if (res.pooled)
        for (int32_t c = 0; c < D; c++) {
            double s = 0;
            for (int32_t t = 0; t < n; t++)
                s += w.x[(size_t)t * D + c];
            res.pooled[c] = (float)(s / n);
        }

    /* memory update: per layer the last min(mem_len, M + n) rows of [mem_l ; input of l] */
    {
        int32_t keep = K < cf->mem_len ? K : cf->mem_len;
        for (int32_t l = 0; l < L; l++) {
            const float *meml = mem->data + (size_t)l * (size_t)mem->cap * (size_t)D;
            float *dst = w.newmem + (size_t)l * (size_t)mem->cap * (size_t)D;
            for (int32_t r = 0; r < keep; r++) {
                int32_t g = K - keep + r;   /* row of [mem ; segment] */
                const float *s = g < M ? meml + (size_t)g * D
                                       : w.hin + ((size_t)l * n + (size_t)(g - M)) * D;
                memcpy(dst + (size_t)r * D, s, sizeof(float) * (size_t)D);
            }
        }
        float *t = mem->data;
        mem->data = w.newmem;
        w.newmem = t;
        mem->rows = keep;
        memcpy(mem->boundary, w.x + (size_t)(n - 1) * D, sizeof(float) * (size_t)D);
        mem->has_boundary = 1;
        /* the counts come from a session blob too: saturate, never overflow */
        if (mem->segments < INT64_MAX)
            mem->segments++;
        mem->tokens = mem->tokens > INT64_MAX - n ? INT64_MAX : mem->tokens + n;
    }
    *out = res;
    memset(&res, 0, sizeof res);
done:
    xf_txl_result_deinit(&res);
    ws_free(&w);
    free(ls.head);
    free(ls.tail);
    free(ls.tmp);
    return rc;
}

void xf_txl_result_deinit(xf_txl_result_t *r)
{
    if (!r)
        return;
    free(r->logprobs);
    free(r->hidden);
    free(r->pooled);
    memset(r, 0, sizeof *r);
}
