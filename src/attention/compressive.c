/* Compressive Transformer (ATTENTION.md §23), family M: Transformer-XL plus a compressed memory.
 * Rows evicted from the memory (oldest first) wait in a pending buffer (kept in the state and
 * the blob) until `rate` of them compress to one row (mean or max pool of the projected K/V);
 * the compressed memory keeps its newest cmem_len rows. Positions are slot indices of
 * [compressed ; memory ; current]. "conv" needs trained weights: validate() refuses it. */
#include "config.h"

#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_m.h"

static const char *const fn_names[] = { "mean", "max", "conv", NULL };

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_at_m_params_t, mem_len, "mem_len", XF_AT_K_INT, 0, 1 << 16, NULL),
    XF_AT_KEY(xf_at_m_params_t, cmem_len, "cmem_len", XF_AT_K_INT, 0, 1 << 16, NULL),
    XF_AT_KEY(xf_at_m_params_t, rate, "rate", XF_AT_K_INT, 1, 1024, NULL),
    XF_AT_KEY(xf_at_m_params_t, fn, "fn", XF_AT_K_ENUM, 0, 0, fn_names),
    XF_AT_KEY(xf_at_m_params_t, clamp_len, "clamp_len", XF_AT_K_INT, -1, 1 << 20, NULL),
    XF_AT_KEY(xf_at_m_params_t, causal, "causal", XF_AT_K_BOOL, 0, 1, NULL),
};

static const xf_at_m_params_t cm_defaults = {
    .mem_len = 512, .cmem_len = 512, .rate = 3, .fn = XF_CMEM_MEAN, .clamp_len = 1000, .causal = 1,
};

static int cm_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                      const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                      int nth)
{
    const xf_at_m_params_t *p = params;

    if (p->fn == XF_CMEM_CONV)
        return XF_EUNSUPPORTED;
    return xf_at_m_forward(p, sh, io, pl, ws_shared, ws_thread, ith, nth);
}

const xf_attn_ops xf_at_compressive = {
    XF_AT_PARAMS(xf_at_m_params_t, cm_defaults, keys),
    .needs_weights = { "fn", XF_CMEM_CONV, "a trained compression convolution" },
    .plan = xf_at_m_plan_vt, .prepare = xf_at_m_prepare,
    .forward = cm_forward, .state_update = xf_at_m_state_update,
};
