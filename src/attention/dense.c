/* The "dense" variant (ATTENTION.md §1): softmax(s·QKᵀ)V through the family-T kernel with
 * one full key range per query tile. Params: scale (default: the model's, 1/√d). */
#include "config.h"

#include "attention/fam_t.h"
#include "attention/params.h"

typedef struct dense_params {
    float scale;               /* 0: the model's scale (io.scale) */
} dense_params;

static const dense_params dense_defaults = { .scale = 0.0f };

static const xf_at_key_t dense_pkeys[] = {
    XF_AT_KEY(dense_params, scale, "scale", XF_AT_K_SCALE, 0.0, 1e6, NULL),
};

static int dense_setup(xf_at_t_seq *c)
{
    const dense_params *p = c->params;
    if (p->scale > 0.0f && c->io)
        c->factor = p->scale / c->io->q_scale;
    return 0;
}

static void dense_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                       xf_at_t_keys *kb)
{
    (void)rows, (void)nq, (void)global;
    xf_at_t_keys_add(kb, c->n, 0, c->n, 1);
}

const xf_attn_ops xf_at_dense = {
    XF_AT_PARAMS(dense_params, dense_defaults, dense_pkeys),
    .pattern = &(const xf_at_t_variant){ .setup = dense_setup, .keys = dense_keys,
                                         .strided = 1, .every_key = 1 },
};
