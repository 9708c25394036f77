/* Transformer-XL segment recurrence with relative positions (ATTENTION.md §22), family M:
 * keys/values [memory ; current], score s·[(q+u)·k_j + (q+v)·r_{i'−j}], memory = the projected
 * keys/values of the last mem_len tokens. Without weights (W_r, u, v) the position terms are 0. */
#include "config.h"

#include <stddef.h>

#include "attention/fam_m.h"

static const xf_at_key_t keys[] = {
    { "mem_len", XF_AT_K_INT, offsetof(xf_at_m_params_t, mem_len), 0, 1 << 16, NULL },
    { "clamp_len", XF_AT_K_INT, offsetof(xf_at_m_params_t, clamp_len), -1, 1 << 20, NULL },
    { "causal", XF_AT_K_BOOL, offsetof(xf_at_m_params_t, causal), 0, 1, NULL },
};

static int tx_parse(void *params, const json_t *obj, char *err, size_t errlen)
{
    xf_at_m_params_t *p = params;

    p->mem_len = 512;
    p->cmem_len = 0;
    p->rate = 1;
    p->fn = XF_CMEM_MEAN;
    p->clamp_len = 1000;
    p->causal = 1;
    return xf_at_parse(keys, XF_AT_NKEYS(keys), p, obj, err, errlen);
}

XF_AT_TO_JSON(tx_to_json, keys)

const xf_attn_vtbl xf_attn_txl = {
    .name = "txl",
    .family = XF_FAM_M,
    .flags = XF_ATTN_STATEFUL,
    .summary = "Transformer-XL: segment memory with relative positions (u/v biases)",
    .params_doc = "mem_len=512 clamp_len=1000 causal=true",
    .params_size = sizeof(xf_at_m_params_t),
    .parse = tx_parse,
    .to_json = tx_to_json,
    .plan = xf_at_m_plan_vt,
    .prepare = xf_at_m_prepare,
    .forward = xf_at_m_forward,
    .state_update = xf_at_m_state_update,
};
