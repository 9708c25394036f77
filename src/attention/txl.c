/* Transformer-XL segment recurrence with relative positions (ATTENTION.md §22), family M:
 * keys/values [memory ; current], score s·[(q+u)·k_j + (q+v)·r_{i'−j}], memory = the projected
 * keys/values of the last mem_len tokens. Without weights (W_r, u, v) the position terms are 0. */
#include "config.h"

#include <stddef.h>

#include "attention/params.h"
#include "attention/fam_m.h"

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_at_m_params_t, mem_len, "mem_len", XF_AT_K_INT, 0, 1 << 16, NULL),
    XF_AT_KEY(xf_at_m_params_t, clamp_len, "clamp_len", XF_AT_K_INT, -1, 1 << 20, NULL),
    XF_AT_KEY(xf_at_m_params_t, causal, "causal", XF_AT_K_BOOL, 0, 1, NULL),
};

static const xf_at_m_params_t tx_defaults = {
    .mem_len = 512, .rate = 1, .fn = XF_CMEM_MEAN, .clamp_len = 1000, .causal = 1,
};

const xf_attn_ops xf_at_txl = {
    XF_AT_PARAMS(xf_at_m_params_t, tx_defaults, keys),
    .plan = xf_at_m_plan_vt, .prepare = xf_at_m_prepare, .forward = xf_at_m_forward,
    .state_update = xf_at_m_state_update,
};
