/* Linformer (ATTENTION.md §16), family S. Substitute "pooled": k contiguous segment means of K
 * and V with the ln(n_a) correction; "weights": trained E, F (io->weights, an
 * xf_attn_w_linformer_t) as K̃ = E[:, :n]K, Ṽ = F[:, :n]V. */
#include "config.h"

#include <math.h>
#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_s.h"

static const char *const src_names[] = { "pooled", "weights", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_linformer_params_t, k, "k", XF_AT_K_INT, 1, 1 << 20, NULL),
    XF_AT_KEY(xf_linformer_params_t, source, "source", XF_AT_K_ENUM, 0, 0, src_names),
};

static const xf_linformer_params_t lf_defaults = { .k = 256, .source = XF_LINFORMER_POOLED };

/* Per-thread scratch for the longest sequence nmax (before the tile scratch). */
static size_t lf_ws(const void *params, const xf_attn_shape *sh, int32_t nmax)
{
    const xf_linformer_params_t *p = params;
    int32_t m = (p->source == XF_LINFORMER_WEIGHTS || p->k < nmax) ? p->k : nmax;
    return sizeof(float) * ((size_t)m * (2u * (size_t)sh->d_head + 2u) + 1u);
}

static int lf_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    const xf_linformer_params_t *p = params;
    const xf_attn_w_linformer_t *w = io->weights;
    float alpha = io->scale / io->q_scale;
    void *tws = xf_at_tile_scratch(pl, ws_thread, sh->d_head);

    (void)ws_shared;
    if (p->source == XF_LINFORMER_WEIGHTS && (!w || !w->e || !w->f))
        return XF_EUNSUPPORTED;
    for (int32_t t = ith; t < pl->n_items; t += nth) {
        xf_at_item_t it;
        int32_t m, d;
        float *Ks, *Vs, *beta;

        xf_at_item(sh, io, t, &it);
        if (it.n == 0)
            continue;
        d = it.d;
        m = p->source == XF_LINFORMER_WEIGHTS ? w->k : (p->k < it.n ? p->k : it.n);
        if (p->source == XF_LINFORMER_WEIGHTS && it.n > w->n_max)
            return XF_ETOOLONG;
        if (p->source == XF_LINFORMER_WEIGHTS && w->k > p->k)
            return XF_EPARAM;
        Ks = ws_thread;
        Vs = Ks + (size_t)m * (size_t)d;
        beta = Vs + (size_t)m * (size_t)d;
        if (p->source == XF_LINFORMER_POOLED) {
            for (int32_t a = 0; a < m; a++) {
                int32_t r0 = xf_at_s_seg_start(it.n, m, a), r1 = xf_at_s_seg_start(it.n, m, a + 1);
                xf_at_s_mean_rows(it.k, d, r0, r1, Ks + (size_t)a * (size_t)d);
                xf_at_s_mean_rows(it.v, d, r0, r1, Vs + (size_t)a * (size_t)d);
                beta[a] = (float)log((double)(r1 - r0));
            }
            xf_at_s_attend_summaries(&it, alpha, Ks, Vs, beta, m, tws);
        } else {
            for (int32_t a = 0; a < m; a++) {
                const float *er = w->e + (size_t)a * (size_t)w->n_max;
                const float *fr = w->f + (size_t)a * (size_t)w->n_max;
                for (int32_t c = 0; c < d; c++) {
                    double sk = 0, sv = 0;
                    for (int32_t j = 0; j < it.n; j++) {
                        sk += (double)er[j] * (double)it.k[(size_t)j * (size_t)d + (size_t)c];
                        sv += (double)fr[j] * (double)it.v[(size_t)j * (size_t)d + (size_t)c];
                    }
                    Ks[(size_t)a * (size_t)d + (size_t)c] = (float)sk;
                    Vs[(size_t)a * (size_t)d + (size_t)c] = (float)sv;
                }
            }
            xf_at_s_attend_summaries(&it, alpha, Ks, Vs, NULL, m, tws);
        }
    }
    return 0;
}

const xf_attn_ops xf_at_linformer = {
    XF_AT_PARAMS(xf_linformer_params_t, lf_defaults, keys),
    .needs_weights = { "source", XF_LINFORMER_WEIGHTS, "trained Linformer E/F projections" },
    .item_ws = lf_ws, .forward = lf_forward,
};
