/* Random Feature Attention (ATTENTION.md §19), family F: trigonometric random features.
 * mode "trig" (default here: the softmax estimator that runs on BERT weights) uses
 * φ(x) = exp(‖x‖²/2)[sin Wx; cos Wx], x = √s·q, w_r ~ N(0, I); mode "norm" (the paper form)
 * uses unit q̂, k̂ and w_r ~ N(0, I/τ). Denominators are clamped to 1e-6·Σ|φ_q|·Σ_j|φ_k|.
 * Gating is causal-only and is rejected for this bidirectional encoder. */
#include "config.h"

#include <math.h>
#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_f.h"

static const char *const mode_names[] = { "trig", "norm", NULL };

static const xf_at_key_t keys[] = {
    /* Capped at 4096: features are drawn per call (see performer.c). */
    XF_AT_KEY(xf_rfa_params_t, features, "features", XF_AT_K_INT, 1, 4096, NULL),
    XF_AT_KEY(xf_rfa_params_t, mode, "mode", XF_AT_K_ENUM, 0, 0, mode_names),
    XF_AT_KEY(xf_rfa_params_t, tau, "tau", XF_AT_K_REAL, 1e-6, 1e6, NULL),
    XF_AT_KEY(xf_rfa_params_t, seed, "seed", XF_AT_K_SEED, 0, 0, NULL),
    XF_AT_KEY(xf_rfa_params_t, gate, "gate", XF_AT_K_BOOL, 0, 1, NULL),
    XF_AT_KEY(xf_rfa_params_t, causal, "causal", XF_AT_K_BOOL, 0, 1, NULL),
};

static const xf_rfa_params_t rf_defaults = { .tau = 1.0, .features = 128, .mode = XF_RFA_TRIG };

static int rf_check(const void *params, char *err, size_t errlen)
{
    const xf_rfa_params_t *p = params;

    if (p->causal)
        return xf_at_key_err(err, errlen, "causal", "not supported by a bidirectional encoder");
    if (p->gate)
        return xf_at_key_err(err, errlen, "gate", "needs causal: true (meaningless for a "
                           "bidirectional encoder)");
    return 0;
}

static enum xf_at_f_kind rf_kind(const xf_rfa_params_t *p)
{
    return p->mode == XF_RFA_NORM ? XF_AT_F_TRIGNORM : XF_AT_F_TRIG;
}

static int rf_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    const xf_rfa_params_t *p = params;
    xf_at_f_map_t mp;
    int nmax = xf_at_check_shape(sh);

    (void)nth;
    if (nmax < 0)
        return nmax;
    xf_at_f_rand_map(&mp, rf_kind(p), p->features, NULL, NULL);
    /* every head's W, then D·d doubles of generator scratch */
    xf_at_plan_items(sh, xf_at_f_ws(&mp, nmax, sh->d_head),
                       xf_at_f_shared_size(sh->n_head, p->features, sh->d_head,
                                           (size_t)p->features * (size_t)sh->d_head),
                       out);
    return 0;
}

static int rf_prepare(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, void *ws_shared)
{
    const xf_rfa_params_t *p = params;
    double *tmp = xf_at_f_shared_tmp(ws_shared, sh->n_head, p->features, sh->d_head);

    (void)io;
    (void)pl;
    for (int32_t h = 0; h < sh->n_head; h++) {
        xf_at_f_rfa_w(p->seed, sh->layer, h, p->features, sh->d_head,
                      p->mode == XF_RFA_NORM ? p->tau : 1.0, tmp);
        xf_at_f_store_w(ws_shared, h, p->features, sh->d_head, tmp);
    }
    return 0;
}

static int rf_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    const xf_rfa_params_t *p = params;
    xf_at_f_map_t mp;

    xf_at_f_rand_map(&mp, rf_kind(p), p->features, ws_shared, io);
    xf_at_f_walk(&mp, (size_t)p->features * (size_t)sh->d_head, sh, io, pl, ws_thread, ith,
                 nth);
    return 0;
}

const xf_attn_ops xf_at_rfa = {
    XF_AT_PARAMS(xf_rfa_params_t, rf_defaults, keys),
    .check = rf_check, .plan = rf_plan, .prepare = rf_prepare, .forward = rf_forward,
};
