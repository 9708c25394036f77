/* "longformer" (ATTENTION.md §7) and the shared window+global pattern used by "etc" (§8):
 * local rows i ∉ G attend (W(i) \ G) ∪ G with the local q/k/v (W = §3/§4 window), global rows
 * attend every key with qg/kg/vg (NULL: the local planes, i.e. BERT weights copied). Union:
 * a global key inside the window is counted once. Params: window (256), dilation (1, int or
 * per-head list), global: "cls" (default) | "none" | "segment_a" (token type 0) | "mask"
 * (io.is_global) | a list of positions (positions >= n are ignored for that sequence). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "attention/fam_t.h"
#include "attention/params.h"
#include "engine/model.h"

static int lf_globals(xf_at_t_seq *c)
{
    const xf_at_lf_params *p = c->params;
    const xf_attn_io *io = c->io;
    const int32_t n = c->n, t0 = c->t0;
    memset(c->is_g, 0, (size_t)n);
    switch (p->gmode) {
    case XF_AT_LF_CLS:
        c->is_g[0] = 1;
        break;
    case XF_AT_LF_NONE:
        break;
    case XF_AT_LF_SEGMENT_A:
        for (int32_t i = 0; i < n; i++)
            c->is_g[i] = !io->type_ids || io->type_ids[t0 + i] == 0;
        break;
    case XF_AT_LF_MASK:
        if (io->is_global)
            for (int32_t i = 0; i < n; i++)
                c->is_g[i] = io->is_global[t0 + i] != 0;
        break;
    case XF_AT_LF_LIST:
        for (int32_t k = 0; k < p->n_pos; k++)
            if (p->pos[k] < n)
                c->is_g[p->pos[k]] = 1;
        break;
    case XF_AT_LF_CLS_SEP:
        if (io->is_global) {
            for (int32_t i = 0; i < n; i++)
                c->is_g[i] = io->is_global[t0 + i] != 0;
        } else {
            /* [CLS] A [SEP] (B [SEP]): position 0, the last token, and each last token of a
             * token-type run */
            c->is_g[0] = 1;
            c->is_g[n - 1] = 1;
            if (io->type_ids)
                for (int32_t i = 0; i + 1 < n; i++)
                    if (io->type_ids[t0 + i] != io->type_ids[t0 + i + 1])
                        c->is_g[i] = 1;
        }
        break;
    default:
        return XF_EPARAM;
    }
    c->n_glob = 0;
    for (int32_t i = 0; i < n; i++)
        if (c->is_g[i])
            c->glob[c->n_glob++] = i;
    return 0;
}

/* c->a = w, c->b = δ, c->c = local tiles */
static int lf_setup(xf_at_t_seq *c)
{
    const xf_at_lf_params *p = c->params;
    if (p->n_dil > 1 && p->n_dil < c->sh->n_head)
        return XF_EPARAM;   /* dilation: one entry per head needed */
    c->a = p->window;
    c->b = p->n_dil == 1 ? p->dil[0] : p->dil[c->head];
    c->c = (c->n + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
    const xf_attn_io *io = c->io;
    int same_planes = p->shared || !io || (!io->qg && !io->kg && !io->vg);
    int covers = (c->b == 1 && p->window >= c->n - 1) || (io && c->n_glob == c->n);
    c->dense = same_planes && covers;
    return 0;
}

static int32_t lf_n_tiles(const xf_at_t_seq *c)
{
    return c->c + (c->n_glob + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
}

static int32_t lf_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                       int64_t *cost)
{
    const xf_at_lf_params *p = c->params;
    int32_t nq = 0;
    if (t < c->c) {
        int32_t all = xf_at_t_win_rows(c->n, c->b, t, rows);
        for (int32_t r = 0; r < all; r++)
            if (!c->is_g || !c->is_g[rows[r]])
                rows[nq++] = rows[r];
        int64_t k = 2 * (int64_t)c->a + 1 + c->n_glob;
        *global = 0;
        *cost = (int64_t)nq * (k < c->n ? k : c->n);
        return nq;
    }
    int32_t g0 = (t - c->c) * XF_AT_T_BQ;
    for (int32_t g = g0; g < c->n_glob && g < g0 + XF_AT_T_BQ; g++)
        rows[nq++] = c->glob[g];
    *global = !p->shared;
    *cost = (int64_t)nq * c->n;
    return nq;
}

static void lf_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                    xf_at_t_keys *kb)
{
    (void)global;
    if (c->is_g[rows[0]]) {   /* a tile of global rows: every key */
        xf_at_t_keys_add(kb, c->n, 0, c->n, 1);
        return;
    }
    xf_at_t_win_keys(c->n, c->a, c->b, rows, nq, kb);
    for (int32_t g = 0; g < c->n_glob; g++)
        xf_at_t_keys_add(kb, c->n, c->glob[g], c->glob[g] + 1, 1);
}

static int lf_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    return c->is_g[j] || c->is_g[i] || xf_at_t_win_member(c->a, c->b, i, j);
}

static void lf_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                    const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    /* local tiles hold no global rows, and global keys are always full */
    xf_at_t_win_mask(c, c->a, c->b, rows, nq, keys, full, nk, s);
}

const xf_at_t_variant xf_at_t_longformer = {
    .setup = lf_setup, .globals = lf_globals, .n_tiles = lf_n_tiles, .tile = lf_tile,
    .keys = lf_keys, .member = lf_member,
    .mask = lf_mask,
};

XF_AT_T_WRAP(lf, xf_at_t_longformer)

int xf_at_lf_validate(const void *params, const xf_model_t *m, int layer, char *err,
                   size_t errlen)
{
    const xf_at_lf_params *p = params;
    const xf_model_info_t *mi = &m->info;
    int32_t h = mi && mi->layers ? mi->layers[layer].n_head : 0;
    if (p->n_dil > 1 && p->n_dil < h)
        return xf_at_err(err, errlen, "dilation: %d entries for %d heads (layer %d)", p->n_dil,
                          h, layer);
    return 0;
}

static const char *const lf_gnames[] = { "cls", "none", "segment_a", "mask", NULL };

static int lf_parse(void *params, const json_t *obj, char *err, size_t errlen)
{
    static const char *const keys[] = { "window", "dilation", "global", NULL };
    xf_at_lf_params *p = params;
    memset(p, 0, sizeof(*p));
    p->window = 256;
    p->n_dil = 1;
    p->dil[0] = 1;
    p->gmode = XF_AT_LF_CLS;
    int rc = xf_at_keys(obj, keys, err, errlen);
    if (!rc)
        rc = xf_at_int(obj, "window", 1, 1 << 24, &p->window, err, errlen);
    if (!rc)
        rc = xf_at_int_list(obj, "dilation", 1, 1 << 20, p->dil, XF_AT_LF_MAX_DIL, &p->n_dil,
                             err, errlen);
    const json_t *g = json_object_get(obj, "global");
    if (!rc && g) {
        if (json_is_array(g)) {
            p->gmode = XF_AT_LF_LIST;
            rc = xf_at_int_list(obj, "global", 0, 1 << 24, p->pos, XF_AT_LF_MAX_POS, &p->n_pos,
                                 err, errlen);
        } else {
            int m = 0;
            rc = xf_at_enum(obj, "global", lf_gnames, &m, err, errlen);
            p->gmode = m;   /* lf_gnames follows XF_AT_LF_CLS.. XF_AT_LF_MASK */
        }
    }
    return rc;
}

int xf_at_lf_global_json(const xf_at_lf_params *p, json_t *obj)
{
    static const char *const names[] = { "cls", "none", "segment_a", "mask", "", "cls+sep" };
    if (p->gmode == XF_AT_LF_LIST)
        return xf_at_set_int_list(obj, "global", p->pos, p->n_pos);
    return xf_at_set(obj, "global", json_string(names[p->gmode]));
}

static int lf_to_json(const void *params, json_t *obj)
{
    const xf_at_lf_params *p = params;
    int rc = xf_at_set(obj, "window", json_integer(p->window));
    if (!rc)
        rc = p->n_dil == 1 ? xf_at_set(obj, "dilation", json_integer(p->dil[0]))
                           : xf_at_set_int_list(obj, "dilation", p->dil, p->n_dil);
    return rc ? rc : xf_at_lf_global_json(p, obj);
}

const xf_attn_vtbl xf_attn_longformer_vt = {
    .name = "longformer",
    .family = XF_FAM_T,
    .flags = XF_ATTN_PER_REQUEST,
    .summary = "Longformer: sliding window plus global tokens (global rows see everything)",
    .params_doc = "window=256 dilation=1 global=cls",
    .params_size = sizeof(xf_at_lf_params),
    .parse = lf_parse,
    .to_json = lf_to_json,
    .validate = xf_at_lf_validate,
    .plan = lf_plan,
    .forward = lf_forward,
};
