/* Performer FAVOR+ (ATTENTION.md §18), family F: positive orthogonal random features, seeded per
 * (seed, layer, head); redraw "never" (the projections are a pure function of the seed).
 * prepare() builds every head's W into the shared scratch; forward runs one (seq, head) item. */
#include "config.h"

#include <math.h>
#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_f.h"

static const char *const norm_names[] = { "chi", "sqrt_d", NULL };
static const char *const redraw_names[] = { "never", NULL };

static const xf_at_key_t keys[] = {
    /* Capped at 4096 (16x the d ln d default at d = 64): random features are drawn per head
     * and layer on every call, so a request could otherwise buy seconds of work. */
    XF_AT_KEY(xf_performer_params_t, features, "features", XF_AT_K_AUTO, 1, 4096, NULL),
    XF_AT_KEY(xf_performer_params_t, orthogonal, "orthogonal", XF_AT_K_BOOL, 0, 1, NULL),
    XF_AT_KEY(xf_performer_params_t, row_norm, "row_norm", XF_AT_K_ENUM, 0, 0, norm_names),
    XF_AT_KEY(xf_performer_params_t, redraw, "redraw", XF_AT_K_ENUM, 0, 0, redraw_names),
    XF_AT_KEY(xf_performer_params_t, seed, "seed", XF_AT_K_SEED, 0, 0, NULL),
};

int32_t xf_performer_features(const xf_performer_params_t *p, int32_t d)
{
    int32_t m;

    if (p->features > 0)
        return p->features;
    m = (int32_t)floor((double)d * log((double)d));
    return m > 1 ? m : 1;
}

static const xf_performer_params_t pf_defaults = { .orthogonal = 1, .row_norm = XF_ROWNORM_CHI };

static int pf_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    const xf_performer_params_t *p = params;
    xf_at_f_map_t mp;
    int nmax = xf_at_check_shape(sh);
    int32_t m = xf_performer_features(p, sh->d_head), d = sh->d_head;

    (void)nth;
    if (nmax < 0)
        return nmax;
    xf_at_f_rand_map(&mp, XF_AT_F_FAVOR, m, NULL, NULL);
    /* every head's W, then (m + d)·d doubles of generator scratch */
    xf_at_plan_items(sh, xf_at_f_ws(&mp, nmax, sh->d_head),
                       xf_at_f_shared_size(sh->n_head, m, d, ((size_t)m + (size_t)d) * (size_t)d),
                       out);
    return 0;
}

static int pf_prepare(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, void *ws_shared)
{
    const xf_performer_params_t *p = params;
    int32_t m = xf_performer_features(p, sh->d_head), d = sh->d_head;
    double *tmp = xf_at_f_shared_tmp(ws_shared, sh->n_head, m, d);

    (void)io;
    (void)pl;
    for (int32_t h = 0; h < sh->n_head; h++) {
        xf_at_f_favor_w(p->seed, sh->layer, h, m, d, p->orthogonal, p->row_norm, tmp);
        xf_at_f_store_w(ws_shared, h, m, d, tmp);
    }
    return 0;
}

static int pf_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    const xf_performer_params_t *p = params;
    int32_t m = xf_performer_features(p, sh->d_head);
    xf_at_f_map_t mp;

    xf_at_f_rand_map(&mp, XF_AT_F_FAVOR, m, ws_shared, io);
    xf_at_f_walk(&mp, (size_t)m * (size_t)sh->d_head, sh, io, pl, ws_thread, ith, nth);
    return 0;
}

const xf_attn_ops xf_at_performer = {
    XF_AT_PARAMS(xf_performer_params_t, pf_defaults, keys),
    .plan = pf_plan, .prepare = pf_prepare, .forward = pf_forward,
};
