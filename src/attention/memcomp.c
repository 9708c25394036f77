/* Memory-compressed attention (ATTENTION.md §14), family S: K and V mean-pooled with
 * kernel = stride = rate into ceil(n/rate) slots, bias ln(slot size) (matters only for the
 * ragged last slot). The trained strided convolution ("conv") needs weights this engine's
 * models do not carry: validate() refuses it. */
#include "config.h"

#include <math.h>
#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_s.h"

static const char *const pool_names[] = { "mean", "conv", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_memcomp_params_t, rate, "rate", XF_AT_K_INT, 1, 1 << 20, NULL),
    XF_AT_KEY(xf_memcomp_params_t, pool, "pool", XF_AT_K_ENUM, 0, 0, pool_names),
};

static const xf_memcomp_params_t mc_defaults = { .rate = 3, .pool = XF_MEMCOMP_MEAN };

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t mc_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    const xf_memcomp_params_t *p = params;
    size_t m = ((size_t)nmax + (size_t)p->rate - 1) / (size_t)p->rate;
    return sizeof(float) * (m * (2u * (size_t)sh->d_head + 2u) + 1u);
}

static int mc_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    const xf_memcomp_params_t *p = params;
    float alpha = io->scale / io->q_scale;

    (void)ws_shared;
    if (p->pool != XF_MEMCOMP_MEAN)
        return XF_EUNSUPPORTED;
    for (int32_t t = ith; t < pl->n_items; t += nth) {
        xf_at_item_t it;
        int32_t m, d, c = p->rate;
        float *Ks, *Vs, *beta;

        xf_at_item(sh, io, t, &it);
        if (it.n == 0)
            continue;
        d = it.d;
        m = (it.n + c - 1) / c;
        Ks = ws_thread;
        Vs = Ks + (size_t)m * (size_t)d;
        beta = Vs + (size_t)m * (size_t)d;
        for (int32_t a = 0; a < m; a++) {
            int32_t r0 = a * c, r1 = r0 + c < it.n ? r0 + c : it.n;
            xf_at_s_mean_rows(it.k, d, r0, r1, Ks + (size_t)a * (size_t)d);
            xf_at_s_mean_rows(it.v, d, r0, r1, Vs + (size_t)a * (size_t)d);
            beta[a] = (float)log((double)(r1 - r0));
        }
        xf_at_s_attend_summaries(&it, alpha, Ks, Vs, beta, m,
                                 xf_at_tile_scratch(pl, ws_thread, d));
    }
    return 0;
}

const xf_attn_ops xf_at_memcomp = {
    XF_AT_PARAMS(xf_memcomp_params_t, mc_defaults, keys),
    .needs_weights = { "pool", XF_MEMCOMP_CONV, "a trained compression convolution" },
    .item_ws = mc_ws, .forward = mc_forward,
};
