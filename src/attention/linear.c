/* Linear Transformer (ATTENTION.md §17), family F: φ(x) = elu(x) + 1 on the raw q, k (no 1/√d),
 * O_i = φ(q_i)ᵀS / (φ(q_i)·z + eps). Needs a checkpoint trained with it (not a softmax
 * approximation), but runs on any model. */
#include "config.h"

#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_f.h"

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_linear_params_t, eps, "eps", XF_AT_K_REAL, 0.0, 1.0, NULL),
};

static const xf_linear_params_t li_defaults = { .eps = 1e-6 };

static void li_map(const xf_linear_params_t *p, int32_t d, float q_scale, xf_at_f_map_t *mp)
{
    mp->kind = XF_AT_F_LINEAR;
    mp->r = d;
    mp->w = NULL;
    mp->qmul = 1.0f / q_scale;
    mp->kmul = 1.0f;
    mp->eps = p->eps;
}

static int li_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    xf_at_f_map_t mp;
    int nmax = xf_at_check_shape(sh);

    (void)nth;
    if (nmax < 0)
        return nmax;
    li_map(params, sh->d_head, 1.0f, &mp);
    xf_at_plan_items(sh, xf_at_f_ws(&mp, nmax, sh->d_head), 0, out);
    return 0;
}

static int li_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    xf_at_f_map_t mp;

    (void)ws_shared;
    li_map(params, sh->d_head, io->q_scale, &mp);
    xf_at_f_walk(&mp, 0, sh, io, pl, ws_thread, ith, nth);
    return 0;
}

const xf_attn_ops xf_at_linear = {
    XF_AT_PARAMS(xf_linear_params_t, li_defaults, keys),
    .plan = li_plan, .forward = li_forward,
};
