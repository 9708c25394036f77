/* "axial" (ATTENTION.md §6): the sequence as a grid of c = ⌈√n⌉ (or fixed) columns, last row
 * ragged; R(i) = same grid row, C(i) = same column (j ≡ i mod c). mode "union" (one softmax
 * over R ∪ C) or "heads" (even heads R, odd heads C). Params: cols (auto), mode (union). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "attention/fam_t.h"
#include "attention/params.h"

static const char *const mode_names[] = { "union", "heads", NULL };

typedef struct ax_params {
    int32_t cols;              /* 0: ⌈√n⌉ per sequence */
    int32_t mode;
} ax_params;

static const ax_params ax_defaults = { .cols = 0, .mode = 0 };

static const xf_at_key_t ax_pkeys[] = {
    XF_AT_KEY(ax_params, cols, "cols", XF_AT_K_AUTO, 1, 1 << 24, NULL),
    XF_AT_KEY(ax_params, mode, "mode", XF_AT_K_ENUM, 0, 0, mode_names),
};

static int ax_setup(xf_at_t_seq *c)
{
    const ax_params *p = c->params;
    c->g.ax.cols = p->cols ? p->cols : xf_at_t_isqrt_ceil(c->n);
    c->g.ax.part = xf_at_t_part(p->mode, c->head);
    c->dense = c->g.ax.part != XF_AT_T_SECOND ? c->g.ax.cols >= c->n : c->g.ax.cols == 1;
    return 0;
}

/* Union tiles: 8 rows of one column (consecutive grid rows), so the tile shares its column's
 * keys (full) and a contiguous run of grid rows (masked). */
#define AX_UNION_ROWS 8

static int32_t ax_n_tiles(const xf_at_t_seq *c)
{
    if (c->g.ax.part == XF_AT_T_SECOND)
        return (c->n + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
    if (c->g.ax.part == XF_AT_T_BOTH)
        return (c->n + AX_UNION_ROWS - 1) / AX_UNION_ROWS;
    return xf_at_t_seg_tiles(c->n, c->g.ax.cols, XF_AT_T_BQ);
}

static int32_t ax_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                       int64_t *cost)
{
    const int32_t cols = c->g.ax.cols, part = c->g.ax.part;
    int32_t nq = part == XF_AT_T_SECOND ? xf_at_t_win_rows(c->n, cols, t, rows)
               : part == XF_AT_T_BOTH ? xf_at_t_class_rows(c->n, cols, AX_UNION_ROWS, t, rows)
                                      : xf_at_t_seg_rows(c->n, cols, XF_AT_T_BQ, t, rows);
    int64_t k = (int64_t)(part == XF_AT_T_BOTH ? nq : 1) * cols + (c->n + cols - 1) / cols;
    *global = 0;
    *cost = (int64_t)nq * (k < c->n ? k : c->n);
    return nq;
}

static void ax_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                    xf_at_t_keys *kb)
{
    (void)global;
    const int32_t cols = c->g.ax.cols, part = c->g.ax.part, n = c->n;
    if (part == XF_AT_T_FIRST) {   /* row tiles never straddle grid rows */
        int32_t r0 = rows[0] / cols * cols;
        xf_at_t_keys_add(kb, n, r0, r0 + cols, 1);
    } else if (part == XF_AT_T_BOTH) {   /* column-major rows: the grid rows of each column run */
        for (int32_t q0 = 0; q0 < nq;) {
            int32_t q1 = q0 + 1;
            while (q1 < nq && rows[q1] % cols == rows[q0] % cols)
                q1++;
            xf_at_t_keys_add(kb, n, rows[q0] / cols * cols, (rows[q1 - 1] / cols + 1) * cols, 0);
            q0 = q1;
        }
    }
    if (part != XF_AT_T_FIRST) {
        int single = 1;
        for (int32_t r = 1; r < nq; r++)
            if (rows[r] % cols != rows[0] % cols)
                single = 0;
        for (int32_t r = 0; r < nq; r++)
            if (r == 0 || rows[r] % cols != rows[r - 1] % cols)
                xf_at_t_keys_add_step(kb, n, rows[r] % cols, n, cols, single);
    }
}

static int ax_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    const int32_t cols = c->g.ax.cols, part = c->g.ax.part;
    return (part != XF_AT_T_SECOND && i / cols == j / cols) ||
           (part != XF_AT_T_FIRST && i % cols == j % cols);
}

static void ax_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                    const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    const int32_t cols = c->g.ax.cols, part = c->g.ax.part;
    int32_t lo[XF_AT_T_BQ], hi[XF_AT_T_BQ], rc[XF_AT_T_BQ], kc[XF_AT_T_BK];
    for (int32_t r = 0; r < nq; r++) {   /* R: the grid row's range; C: same column */
        int32_t g = rows[r] / cols * cols;
        lo[r] = part != XF_AT_T_SECOND ? g : 0;
        hi[r] = part != XF_AT_T_SECOND ? (g > INT32_MAX - cols ? INT32_MAX : g + cols) : 0;
        rc[r] = rows[r] - g;
    }
    if (part != XF_AT_T_FIRST)
        xf_at_t_key_classes(keys, nk, cols, kc);
    c->kern->mask(nq, nk, keys, full, lo, hi, part != XF_AT_T_FIRST ? kc : NULL, rc, 0, s);
}

const xf_attn_ops xf_at_axial = {
    XF_AT_PARAMS(ax_params, ax_defaults, ax_pkeys),
    .pattern = &(const xf_at_t_variant){ .setup = ax_setup, .n_tiles = ax_n_tiles, .tile = ax_tile,
        .keys = ax_keys, .member = ax_member, .mask = ax_mask },
};
