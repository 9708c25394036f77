/* "etc" (ATTENTION.md §8) simulated on BERT weights: ETC's global-local attention with shared
 * projections = the Longformer pattern (longformer.c) with radius r and [CLS]/[SEP] as the
 * global tokens. "cls+sep" uses io.is_global when the engine marks the special tokens there;
 * without it: position 0, the last token, and the last token of each token-type run (the
 * [SEP] of "[CLS] A [SEP] B [SEP]"). Params: radius (128), global ("cls+sep" | "cls" |
 * "none" | "mask" | positions), segment_restrict (false; true is not supported). */
#include "config.h"

#include <string.h>

#include "attention/fam_t.h"
#include "attention/params.h"

XF_AT_T_WRAP(etc, xf_at_t_longformer)

static const char *const etc_gnames[] = { "cls+sep", "cls", "none", "mask", NULL };
static const int32_t etc_gmode[] = { XF_AT_LF_CLS_SEP, XF_AT_LF_CLS, XF_AT_LF_NONE, XF_AT_LF_MASK };

static int etc_parse(void *params, const json_t *obj, char *err, size_t errlen)
{
    static const char *const keys[] = { "radius", "global", "segment_restrict", NULL };
    xf_at_lf_params *p = params;
    memset(p, 0, sizeof(*p));
    p->window = 128;
    p->n_dil = 1;
    p->dil[0] = 1;
    p->gmode = XF_AT_LF_CLS_SEP;
    p->shared = 1;
    int rc = xf_at_keys(obj, keys, err, errlen);
    if (!rc)
        rc = xf_at_int(obj, "radius", 1, 1 << 24, &p->window, err, errlen);
    const json_t *g = json_object_get(obj, "global");
    if (!rc && g) {
        if (json_is_array(g)) {
            p->gmode = XF_AT_LF_LIST;
            rc = xf_at_int_list(obj, "global", 0, 1 << 24, p->pos, XF_AT_LF_MAX_POS, &p->n_pos,
                                 err, errlen);
        } else {
            int m = 0;
            rc = xf_at_enum(obj, "global", etc_gnames, &m, err, errlen);
            p->gmode = etc_gmode[m];
        }
    }
    if (!rc)
        rc = xf_at_bool(obj, "segment_restrict", &p->segment_restrict, err, errlen);
    if (!rc && p->segment_restrict)
        rc = xf_at_err(err, errlen, "segment_restrict: true is not supported");
    return rc;
}

static int etc_to_json(const void *params, json_t *obj)
{
    const xf_at_lf_params *p = params;
    int rc = xf_at_set(obj, "radius", json_integer(p->window));
    if (!rc)
        rc = xf_at_lf_global_json(p, obj);
    return rc ? rc : xf_at_set(obj, "segment_restrict", json_false());
}

const xf_attn_vtbl xf_attn_etc_vt = {
    .name = "etc",
    .family = XF_FAM_T,
    .flags = XF_ATTN_PER_REQUEST,
    .summary = "ETC simulated on BERT weights: local radius plus [CLS]/[SEP] as global tokens",
    .params_doc = "radius=128 global=cls+sep segment_restrict=false",
    .params_size = sizeof(xf_at_lf_params),
    .parse = etc_parse,
    .to_json = etc_to_json,
    .plan = etc_plan,
    .forward = etc_forward,
};
