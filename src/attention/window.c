/* "window" (ATTENTION.md §3): each token attends its w neighbours on each side,
 * A(i) = {j : |i − j| <= w}. Params: window (one-sided w, 256). */
#include "config.h"

#include <math.h>

#include "attention/fam_t.h"
#include "attention/params.h"

typedef struct win_params {
    int32_t window;
} win_params;

static const win_params win_defaults = { .window = 256 };

static const xf_at_key_t win_pkeys[] = {
    XF_AT_KEY(win_params, window, "window", XF_AT_K_INT, 1, 1 << 24, NULL),
};

static int win_setup(xf_at_t_seq *c)
{
    const win_params *p = c->params;
    c->g.win.w = p->window;
    c->dense = p->window >= c->n - 1;
    return 0;
}

static int32_t win_n_tiles(const xf_at_t_seq *c)
{
    return (c->n + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
}

static int32_t win_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                        int64_t *cost)
{
    int32_t nq = xf_at_t_win_rows(c->n, 1, t, rows);
    int64_t k = 2 * (int64_t)c->g.win.w + nq;
    *global = 0;
    *cost = (int64_t)nq * (k < c->n ? k : c->n);
    return nq;
}

static void win_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)global;
    xf_at_t_win_keys(c->n, c->g.win.w, 1, rows, nq, kb);
}

static int win_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    return xf_at_t_win_member(c->g.win.w, 1, i, j);
}

static void win_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                     const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    xf_at_t_win_mask(c, c->g.win.w, 1, rows, nq, keys, full, nk, s);
}

const xf_attn_ops xf_at_window = {
    XF_AT_PARAMS(win_params, win_defaults, win_pkeys),
    .pattern = &(const xf_at_t_variant){ .setup = win_setup, .n_tiles = win_n_tiles,
        .tile = win_tile, .keys = win_keys, .member = win_member, .mask = win_mask },
};
