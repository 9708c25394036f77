/* The "dense" variant (ATTENTION.md §1): softmax(s·QKᵀ)V through the family-T kernel with
 * one full key range per query tile. Params: scale (default: the model's, 1/√d). */
#include "config.h"

#include "attention/fam_t.h"
#include "attention/params.h"

typedef struct dense_params {
    float scale;               /* 0: the model's scale (io.scale) */
} dense_params;

static int dense_parse(void *params, const json_t *obj, char *err, size_t errlen)
{
    static const char *const keys[] = { "scale", NULL };
    dense_params *p = params;

    p->scale = 0.0f;
    int rc = xf_at_keys(obj, keys, err, errlen);
    if (!rc)
        rc = xf_at_float(obj, "scale", 0.0, 1, 1e6, &p->scale, err, errlen);
    return rc;
}

static int dense_to_json(const void *params, json_t *obj)
{
    const dense_params *p = params;
    return xf_at_set(obj, "scale", p->scale > 0.0f ? json_real(p->scale) : json_null());
}

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

static const xf_at_t_variant dense_ft = {
    .setup = dense_setup, .keys = dense_keys,
};

static int dense_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    return xf_at_t_plan(&dense_ft, params, sh, nth, out);
}

static int dense_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                         const xf_attn_plan *pl, const void *ws_shared, void *ws_thread,
                         int ith, int nth)
{
    (void)ws_shared;
    return xf_at_t_forward(&dense_ft, params, sh, io, pl, ws_thread, ith, nth);
}

const xf_attn_vtbl xf_attn_dense_vt = {
    .name = "dense",
    .family = XF_FAM_T,
    .flags = XF_ATTN_PER_REQUEST,
    .summary = "full softmax attention (online softmax in 32x64 tiles)",
    .params_doc = "scale=1/sqrt(d)",
    .params_size = sizeof(dense_params),
    .parse = dense_parse,
    .to_json = dense_to_json,
    .plan = dense_plan,
    .forward = dense_forward,
};
