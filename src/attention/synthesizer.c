/* "synthesizer" (ATTENTION.md §21): attention weights from trained tensors instead of q·k —
 * random (R[h][i][j]), factorized (R1·R2ᵀ) or dense (W2·relu(W1·x_i + b1) + b2) logits over
 * the first n of n_max positions, then softmax·V through the family-T kernel's logit
 * provider. The weights arrive in io.weights as xf_synth_weights (fam_t.h); no BERT checkpoint
 * has them, so validate() refuses every model the loader can produce (needs training). */
#include "config.h"

#include <stdio.h>

#include "attention/fam_t.h"
#include "attention/params.h"

typedef struct syn_params {
    int32_t unused;
} syn_params;

static int syn_validate(const void *params, const xf_model_t *m, int layer, char *err,
                        size_t errlen)
{
    (void)params, (void)m, (void)layer;
    if (err && errlen)
        snprintf(err, errlen, "synthesizer: the model has no synthesizer weights (random or "
                 "dense synthesizer logits need trained tensors)");
    return XF_EUNSUPPORTED;
}

static int syn_setup(xf_at_t_seq *c)
{
    if (!c->io)
        return 0;
    const xf_synth_weights *w = c->io->weights;
    if (!w)
        return XF_EPARAM;
    if (w->n_head != c->sh->n_head || c->n > w->n_max)
        return XF_ESHAPE;
    switch (w->kind) {
    case XF_SYNTH_RANDOM:
        return w->r ? 0 : XF_EPARAM;
    case XF_SYNTH_FACTORIZED:
        return w->r1 && w->r2 && w->k > 0 ? 0 : XF_EPARAM;
    case XF_SYNTH_DENSE:
        if (!w->w1 || !w->w2 || !c->io->x || w->d_hidden < 1 ||
            w->d_hidden > XF_SYNTH_MAX_HIDDEN || w->d_model < 1)
            return XF_EPARAM;
        return 0;
    default:
        return XF_EPARAM;
    }
}

static void syn_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)rows, (void)nq, (void)global;
    xf_at_t_keys_add(kb, c->n, 0, c->n, 1);
}

static int syn_logits(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                      int32_t nk, float *s, int32_t lds, float *hid, int first)
{
    const xf_synth_weights *w = c->io->weights;
    const size_t h = (size_t)c->head, nm = (size_t)w->n_max;
    if (w->kind == XF_SYNTH_RANDOM) {
        const float *R = w->r + h * nm * nm;
        for (int32_t r = 0; r < nq; r++)
            for (int32_t jj = 0; jj < nk; jj++)
                s[(size_t)r * lds + jj] = R[(size_t)rows[r] * nm + keys[jj]];
        return 0;
    }
    if (w->kind == XF_SYNTH_FACTORIZED) {
        const size_t k = (size_t)w->k;
        const float *R1 = w->r1 + h * nm * k, *R2 = w->r2 + h * nm * k;
        for (int32_t r = 0; r < nq; r++)
            for (int32_t jj = 0; jj < nk; jj++) {
                const float *a = R1 + (size_t)rows[r] * k, *b = R2 + (size_t)keys[jj] * k;
                float acc = 0.0f;
                for (size_t x = 0; x < k; x++)
                    acc += a[x] * b[x];
                s[(size_t)r * lds + jj] = acc;
            }
        return 0;
    }
    const size_t dh = (size_t)w->d_hidden, dm = (size_t)w->d_model;
    const float *W1 = w->w1 + h * dh * dm, *B1 = w->b1 ? w->b1 + h * dh : NULL;
    const float *W2 = w->w2 + h * nm * dh, *B2 = w->b2 ? w->b2 + h * nm : NULL;
    if (first)
        for (int32_t r = 0; r < nq; r++) {
            const float *x = c->io->x + (size_t)(c->t0 + rows[r]) * dm;
            for (size_t u = 0; u < dh; u++) {
                float acc = B1 ? B1[u] : 0.0f;
                for (size_t t = 0; t < dm; t++)
                    acc += W1[u * dm + t] * x[t];
                hid[(size_t)r * dh + u] = acc > 0.0f ? acc : 0.0f;
            }
        }
    for (int32_t r = 0; r < nq; r++)
        for (int32_t jj = 0; jj < nk; jj++) {
            const float *w2 = W2 + (size_t)keys[jj] * dh, *hr = hid + (size_t)r * dh;
            float acc = B2 ? B2[keys[jj]] : 0.0f;
            for (size_t u = 0; u < dh; u++)
                acc += w2[u] * hr[u];
            s[(size_t)r * lds + jj] = acc;
        }
    return 0;
}

const xf_attn_ops xf_at_synthesizer = {
    .params_size = sizeof(syn_params),
    .validate = syn_validate,
    .pattern = &(const xf_at_t_variant){ .setup = syn_setup, .keys = syn_keys,
        .logits = syn_logits, .hid_floats = XF_SYNTH_MAX_HIDDEN },
};
