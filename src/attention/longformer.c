/* "longformer" (ATTENTION.md §7) and the shared window+global pattern used by "etc" (§8):
 * local rows i ∉ G attend (W(i) \ G) ∪ G with the local q/k/v (W = §3/§4 window), global rows
 * attend every key with qg/kg/vg (NULL: the local planes, i.e. BERT weights copied). Union:
 * a global key inside the window is counted once. Params: window (256), dilation (1, int or
 * per-head list), global: "cls" (default) | "none" | "segment_a" (token type 0) | "mask"
 * (io.is_global) | a list of positions (positions >= n are ignored for that sequence).
 * "etc" (§8) simulated on BERT weights: ETC's global-local attention with shared projections =
 * this pattern with radius r and [CLS]/[SEP] as the global tokens. "cls+sep" uses io.is_global
 * when the engine marks the special tokens there; without it: position 0, the last token, and
 * the last token of each token-type run (the [SEP] of "[CLS] A [SEP] B [SEP]"). Params: radius
 * (128), global ("cls+sep" | "cls" | "none" | "mask" | positions), segment_restrict (false;
 * true is not supported). */
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

static int lf_setup(xf_at_t_seq *c)
{
    const xf_at_lf_params *p = c->params;
    int rc = xf_at_t_win_setup(c, p->window, p->n_dil, p->dil);
    if (rc)
        return rc;
    c->g.win.n_local = (c->n + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
    const xf_attn_io *io = c->io;
    int same_planes = p->shared || !io || (!io->qg && !io->kg && !io->vg);
    int covers = c->dense || (io && c->n_glob == c->n);
    c->dense = same_planes && covers;
    return 0;
}

static int32_t lf_n_tiles(const xf_at_t_seq *c)
{
    return c->g.win.n_local + (c->n_glob + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
}

static int32_t lf_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                       int64_t *cost)
{
    const xf_at_lf_params *p = c->params;
    int32_t nq = 0;
    if (t < c->g.win.n_local) {
        int32_t all = xf_at_t_win_rows(c->n, c->g.win.dil, t, rows);
        for (int32_t r = 0; r < all; r++)
            if (!c->is_g || !c->is_g[rows[r]])
                rows[nq++] = rows[r];
        int64_t k = 2 * (int64_t)c->g.win.w + 1 + c->n_glob;
        *global = 0;
        *cost = (int64_t)nq * (k < c->n ? k : c->n);
        return nq;
    }
    int32_t g0 = (t - c->g.win.n_local) * XF_AT_T_BQ;
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
    xf_at_t_win_keys(c->n, c->g.win.w, c->g.win.dil, rows, nq, kb);
    for (int32_t g = 0; g < c->n_glob; g++)
        xf_at_t_keys_add(kb, c->n, c->glob[g], c->glob[g] + 1, 1);
}

static int lf_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    return c->is_g[j] || c->is_g[i] || xf_at_t_win_member(c->g.win.w, c->g.win.dil, i, j);
}

static void lf_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                    const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    /* local tiles hold no global rows, and global keys are always full */
    xf_at_t_win_mask(c, c->g.win.w, c->g.win.dil, rows, nq, keys, full, nk, s);
}

static const xf_at_t_variant lf_ft = {
    .setup = lf_setup, .globals = lf_globals, .n_tiles = lf_n_tiles, .tile = lf_tile,
    .keys = lf_keys, .member = lf_member,
    .mask = lf_mask,
};

static int lf_validate(const void *params, const xf_model_t *m, int layer, char *err,
                        size_t errlen)
{
    return xf_at_t_check_dilations(((const xf_at_lf_params *)params)->n_dil, m, layer, err, errlen);
}

static const char *const lf_gnames[] = { "cls", "none", "segment_a", "mask", NULL };
static const char *const etc_gnames[] = { "cls+sep", "cls", "none", "mask", NULL };
/* gmode of each name of k->names (lf_gnames follows XF_AT_LF_CLS..XF_AT_LF_MASK) */
static int32_t gmode_of(const char *const *names, int m)
{
    static const int32_t etc_gmode[] = { XF_AT_LF_CLS_SEP, XF_AT_LF_CLS, XF_AT_LF_NONE,
                                         XF_AT_LF_MASK };
    return names == etc_gnames ? etc_gmode[m] : m;
}

/* "global": one of k->names or a list of positions. */
static int global_read(const xf_at_key_t *k, void *params, const json_t *obj, char *err,
                       size_t errlen)
{
    xf_at_lf_params *p = params;
    if (json_is_array(json_object_get(obj, k->key))) {
        p->gmode = XF_AT_LF_LIST;
        return xf_at_int_list(obj, k->key, 0, 1 << 24, p->pos, XF_AT_LF_MAX_POS, &p->n_pos, err,
                              errlen);
    }
    int m = 0;
    int rc = xf_at_enum(obj, k->key, k->names, &m, err, errlen);
    p->gmode = gmode_of(k->names, m);
    return rc;
}

static int global_write(const xf_at_key_t *k, const void *params, json_t *obj)
{
    static const char *const names[] = { "cls", "none", "segment_a", "mask", "", "cls+sep" };
    const xf_at_lf_params *p = params;
    if (p->gmode == XF_AT_LF_LIST)
        return xf_at_set_int_list(obj, k->key, p->pos, p->n_pos);
    return xf_at_set(obj, k->key, json_string(names[p->gmode]));
}

static const xf_at_lf_params lf_defaults = {
    .window = 256, .n_dil = 1, .dil = { 1 }, .gmode = XF_AT_LF_CLS,
};

static const xf_at_key_t lf_pkeys[] = {
    XF_AT_KEY(xf_at_lf_params, window, "window", XF_AT_K_INT, 1, 1 << 24, NULL),
    XF_AT_KEY_LIST(xf_at_lf_params, dil, n_dil, "dilation", 1, 1 << 20),
    XF_AT_KEY_CUSTOM("global", lf_gnames, global_read, global_write),
};

const xf_attn_ops xf_at_longformer = {
    XF_AT_PARAMS(xf_at_lf_params, lf_defaults, lf_pkeys),
    .validate = lf_validate, .pattern = &lf_ft,
};

/* ETC (this file's header): the same pattern with radius r, [CLS]/[SEP] global and shared
 * projections. */
static const xf_at_lf_params etc_defaults = {
    .window = 128, .n_dil = 1, .dil = { 1 }, .gmode = XF_AT_LF_CLS_SEP, .shared = 1,
};

static const xf_at_key_t etc_pkeys[] = {
    XF_AT_KEY(xf_at_lf_params, window, "radius", XF_AT_K_INT, 1, 1 << 24, NULL),
    XF_AT_KEY_CUSTOM("global", etc_gnames, global_read, global_write),
    XF_AT_KEY(xf_at_lf_params, segment_restrict, "segment_restrict", XF_AT_K_BOOL, 0, 1, NULL),
};

static int etc_check(const void *params, char *err, size_t errlen)
{
    const xf_at_lf_params *p = params;
    if (p->segment_restrict)
        return xf_at_err(err, errlen, "segment_restrict: true is not supported");
    return 0;
}

const xf_attn_ops xf_at_etc = {
    XF_AT_PARAMS(xf_at_lf_params, etc_defaults, etc_pkeys),
    .check = etc_check, .pattern = &lf_ft,
};
