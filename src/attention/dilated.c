/* "dilated" (ATTENTION.md §4): A(i) = {i + δt : |t| <= w}, δ per head. Query tiles walk the
 * residue classes mod δ, so each tile's keys are one class's sliding window. Params: window
 * (128), dilation (int or per-head list, 1). */
#include "config.h"

#include <math.h>

#include "attention/fam_t.h"
#include "attention/params.h"
#include "engine/model.h"

#define DIL_MAX 32

typedef struct dil_params {
    int32_t window;
    int32_t n_dil;
    int32_t dil[DIL_MAX];
} dil_params;

static const dil_params dil_defaults = { .window = 128, .n_dil = 1, .dil = { 1 } };

static const xf_at_key_t dil_pkeys[] = {
    XF_AT_KEY(dil_params, window, "window", XF_AT_K_INT, 1, 1 << 24, NULL),
    XF_AT_KEY_LIST(dil_params, dil, n_dil, "dilation", 1, 1 << 20),
};

static int dil_validate(const void *params, const xf_model_t *m, int layer, char *err,
                        size_t errlen)
{
    return xf_at_t_check_dilations(((const dil_params *)params)->n_dil, m, layer, err, errlen);
}

static int dil_setup(xf_at_t_seq *c)
{
    const dil_params *p = c->params;
    return xf_at_t_win_setup(c, p->window, p->n_dil, p->dil);
}

static int32_t dil_n_tiles(const xf_at_t_seq *c)
{
    return (c->n + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
}

static int32_t dil_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                        int64_t *cost)
{
    int32_t nq = xf_at_t_win_rows(c->n, c->g.win.dil, t, rows);
    int64_t k = 2 * (int64_t)c->g.win.w + nq;
    *global = 0;
    *cost = (int64_t)nq * (k < c->n ? k : c->n);
    return nq;
}

static void dil_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)global;
    xf_at_t_win_keys(c->n, c->g.win.w, c->g.win.dil, rows, nq, kb);
}

static int dil_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    return xf_at_t_win_member(c->g.win.w, c->g.win.dil, i, j);
}

static void dil_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                     const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    xf_at_t_win_mask(c, c->g.win.w, c->g.win.dil, rows, nq, keys, full, nk, s);
}

const xf_attn_ops xf_at_dilated = {
    XF_AT_PARAMS(dil_params, dil_defaults, dil_pkeys),
    .validate = dil_validate,
    .pattern = &(const xf_at_t_variant){ .setup = dil_setup, .n_tiles = dil_n_tiles,
        .tile = dil_tile, .keys = dil_keys, .member = dil_member, .mask = dil_mask },
};
