/* Perceiver-style latent bottleneck (ATTENTION.md §15), family S: trained latent queries Q_Z
 * per head (io->weights, an xf_attn_w_perceiver_t): P = softmax(s·Q_Z Kᵀ), K̃ = PK, Ṽ = PV,
 * O = softmax(s·Q K̃ᵀ)Ṽ. Models without the latents are refused by validate(); the
 * parameter-free stand-in is isab with mode "soft". */
#include "config.h"

#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_s.h"

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_perceiver_params_t, latents, "latents", XF_AT_K_AUTO, 1, 1 << 16, NULL),
};

static const xf_perceiver_params_t pc_defaults = {  };

static int pc_validate(const void *params, const xf_model_t *m, int layer, char *err,
                       size_t errlen)
{
    (void)params;
    (void)m;
    (void)layer;
    return xf_at_refuse(err, errlen, "variant", "perceiver needs trained latent queries (Q_Z "
                          "per head), which this model does not have; the parameter-free "
                          "stand-in is {\"variant\":\"isab\",\"mode\":\"soft\"}");
}

static int32_t latents_of(const xf_perceiver_params_t *p)
{
    return p->latents > 0 ? p->latents : 64;
}

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t pc_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    size_t m = (size_t)latents_of(params);
    return sizeof(float) * (2u * m * (size_t)sh->d_head + m + (size_t)nmax + 1u);
}

static int pc_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    const xf_perceiver_params_t *p = params;
    const xf_attn_w_perceiver_t *w = io->weights;
    int32_t m;

    (void)ws_shared;
    if (!w || !w->qz)
        return XF_EUNSUPPORTED;
    m = w->latents;
    if (w->n_head != sh->n_head || w->d_head != sh->d_head || m < 1 || m > latents_of(p))
        return XF_ESHAPE;
    for (int32_t t = ith; t < pl->n_items; t += nth) {
        xf_at_item_t it;
        float *Ks = ws_thread, *Vs, *scr;

        xf_at_item(sh, io, t, &it);
        if (it.n == 0)
            continue;
        Vs = Ks + (size_t)m * (size_t)it.d;
        scr = Vs + (size_t)m * (size_t)it.d;
        xf_at_s_attnpool(&it, w->qz + (size_t)it.head * (size_t)m * (size_t)it.d, m, io->scale,
                         Ks, Vs, scr);
        xf_at_s_attend_summaries(&it, io->scale / io->q_scale, Ks, Vs, NULL, m,
                                 xf_at_tile_scratch(pl, ws_thread, it.d));
    }
    return 0;
}

const xf_attn_ops xf_at_perceiver = {
    XF_AT_PARAMS(xf_perceiver_params_t, pc_defaults, keys),
    .validate = pc_validate, .item_ws = pc_ws, .forward = pc_forward,
};
