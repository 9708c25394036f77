/* Sparse Transformer patterns, bidirectional (ATTENTION.md §5). "strided" (stride l):
 * A1 = {|i − j| < l}, A2 = {(i − j) mod l = 0}; "fixed" (block l, summary c):
 * A1 = same block, A2 = {j mod l ∈ [l − c(1 + h mod v), l − c·(h mod v))}. combine "union"
 * (one softmax over A1 ∪ A2) or "heads" (even heads A1, odd heads A2). Params: strided
 * stride (0 = ⌈√n⌉ per sequence), combine; fixed block 128, summary 8, combine,
 * heads_per_pattern 1. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "attention/fam_t.h"
#include "attention/params.h"

static const char *const combine_names[] = { "union", "heads", NULL };

/* ---- strided ---- */

typedef struct str_params {
    int32_t stride;            /* 0: ⌈√n⌉ per sequence */
    int32_t combine;           /* 0 union, 1 heads */
} str_params;

static const str_params str_defaults = { .stride = 0, .combine = 0 };

static const xf_at_key_t str_pkeys[] = {
    XF_AT_KEY(str_params, stride, "stride", XF_AT_K_AUTO, 1, 1 << 24, NULL),
    XF_AT_KEY(str_params, combine, "combine", XF_AT_K_ENUM, 0, 0, combine_names),
};

static int str_setup(xf_at_t_seq *c)
{
    const str_params *p = c->params;
    int32_t l = p->stride ? p->stride : xf_at_t_isqrt_ceil(c->n);
    c->g.sp.l = l;
    c->g.sp.part = xf_at_t_part(p->combine, c->head);
    if (c->g.sp.part == XF_AT_T_BOTH)
        c->dense = l >= c->n || l == 1;
    else if (c->g.sp.part == XF_AT_T_FIRST)
        c->dense = l >= c->n;
    else
        c->dense = l == 1;
    return 0;
}

/* Union tiles: 8 rows of one stride class (class-major order), so the tile shares its class's
 * keys (full) and one contiguous band run (masked). */
#define STR_UNION_ROWS 8

static int32_t str_n_tiles(const xf_at_t_seq *c)
{
    if (c->g.sp.part == XF_AT_T_BOTH)
        return (c->n + STR_UNION_ROWS - 1) / STR_UNION_ROWS;
    return (c->n + XF_AT_T_BQ - 1) / XF_AT_T_BQ;
}

static int32_t str_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                        int64_t *cost)
{
    /* A2-only heads walk the residue classes (one class's keys per tile) */
    const int32_t l = c->g.sp.l, part = c->g.sp.part;
    int32_t nq = part == XF_AT_T_BOTH ? xf_at_t_class_rows(c->n, l, STR_UNION_ROWS, t, rows)
               : xf_at_t_win_rows(c->n, part == XF_AT_T_SECOND ? l : 1, t, rows);
    int64_t k = part == XF_AT_T_BOTH ? ((int64_t)nq + 1) * l + c->n / l : 2 * (int64_t)l + c->n / l;
    *global = 0;
    *cost = (int64_t)nq * (k < c->n ? k : c->n);
    return nq;
}

static void str_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)global;
    const int32_t l = c->g.sp.l, n = c->n;
    if (c->g.sp.part == XF_AT_T_BOTH) {   /* class-major rows: each class run's bands, merged */
        for (int32_t r0 = 0; r0 < nq;) {
            int32_t r1 = r0 + 1;
            while (r1 < nq && rows[r1] % l == rows[r0] % l)
                r1++;
            xf_at_t_keys_add(kb, n, rows[r0] - l + 1, rows[r1 - 1] + l, 0);
            r0 = r1;
        }
    } else if (c->g.sp.part == XF_AT_T_FIRST) {   /* A1: a window of l − 1 on each side */
        xf_at_t_win_keys(n, l - 1, 1, rows, nq, kb);
    }
    if (c->g.sp.part != XF_AT_T_FIRST) {
        int single = 1;
        for (int32_t r = 1; r < nq; r++)
            if (rows[r] % l != rows[0] % l)
                single = 0;
        if (single) {
            xf_at_t_keys_add_step(kb, n, rows[0] % l, n, l, 1);
        } else if (nq >= l) {
            xf_at_t_keys_add(kb, n, 0, n, 0);
        } else {
            for (int32_t r = 0; r < nq; r++)
                xf_at_t_keys_add_step(kb, n, rows[r] % l, n, l, 0);
        }
    }
}

static int str_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    const int32_t l = c->g.sp.l, part = c->g.sp.part, dd = i > j ? i - j : j - i;
    return (part != XF_AT_T_SECOND && dd < l) || (part != XF_AT_T_FIRST && dd % l == 0);
}

static void str_mask(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, const int32_t *keys,
                     const uint8_t *full, int32_t nk, float *s, int global)
{
    (void)global;
    const int32_t l = c->g.sp.l;
    int32_t lo[XF_AT_T_BQ], hi[XF_AT_T_BQ], rc[XF_AT_T_BQ], kc[XF_AT_T_BK];
    for (int32_t r = 0; r < nq; r++) {   /* A1: |i − j| < l; A2: j ≡ i (mod l) */
        lo[r] = c->g.sp.part != XF_AT_T_SECOND ? rows[r] - l + 1 : 0;
        hi[r] = c->g.sp.part != XF_AT_T_SECOND ? rows[r] + l : 0;
        rc[r] = rows[r] % l;
    }
    if (c->g.sp.part != XF_AT_T_FIRST)
        xf_at_t_key_classes(keys, nk, l, kc);
    c->kern->mask(nq, nk, keys, full, lo, hi, c->g.sp.part != XF_AT_T_FIRST ? kc : NULL, rc, 0, s);
}

const xf_attn_ops xf_at_strided = {
    XF_AT_PARAMS(str_params, str_defaults, str_pkeys),
    .pattern = &(const xf_at_t_variant){ .setup = str_setup, .n_tiles = str_n_tiles,
        .tile = str_tile, .keys = str_keys, .member = str_member, .mask = str_mask },
};

/* ---- fixed ---- */

typedef struct fix_params {
    int32_t block, summary, combine, per;
} fix_params;

static const fix_params fix_defaults = { .block = 128, .summary = 8, .combine = 0, .per = 1 };

static const xf_at_key_t fix_pkeys[] = {
    XF_AT_KEY(fix_params, block, "block", XF_AT_K_INT, 1, 1 << 24, NULL),
    XF_AT_KEY(fix_params, summary, "summary", XF_AT_K_INT, 1, 1 << 24, NULL),
    XF_AT_KEY(fix_params, combine, "combine", XF_AT_K_ENUM, 0, 0, combine_names),
    XF_AT_KEY(fix_params, per, "heads_per_pattern", XF_AT_K_INT, 1, 1024, NULL),
};

static int fix_check(const void *params, char *err, size_t errlen)
{
    const fix_params *p = params;
    if (p->summary > p->block)
        return xf_at_err(err, errlen, "summary: must be <= block (%d)", p->block);
    if ((int64_t)p->summary * p->per > p->block)
        return xf_at_err(err, errlen, "heads_per_pattern: summary * heads_per_pattern must be "
                         "<= block (%d)", p->block);
    return 0;
}

static int fix_setup(xf_at_t_seq *c)
{
    const fix_params *p = c->params;
    const int32_t l = p->block, hm = c->head % p->per;
    c->g.sp.l = l;
    c->g.sp.part = xf_at_t_part(p->combine, c->head);
    c->g.sp.c0 = l - p->summary * (1 + hm);
    c->g.sp.c1 = l - p->summary * hm;
    int a2_all = c->g.sp.c0 == 0 && c->g.sp.c1 == l;
    if (c->g.sp.part == XF_AT_T_BOTH)
        c->dense = l >= c->n || a2_all;
    else if (c->g.sp.part == XF_AT_T_FIRST)
        c->dense = l >= c->n;
    else
        c->dense = a2_all;
    return 0;
}

static int32_t fix_n_tiles(const xf_at_t_seq *c)
{
    return xf_at_t_seg_tiles(c->n, c->g.sp.l, XF_AT_T_BQ);
}

static int32_t fix_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                        int64_t *cost)
{
    int32_t nq = xf_at_t_seg_rows(c->n, c->g.sp.l, XF_AT_T_BQ, t, rows);
    const int32_t l = c->g.sp.l;
    int64_t k = (int64_t)l + (int64_t)(c->g.sp.c1 - c->g.sp.c0) * ((c->n + l - 1) / l);
    *global = 0;
    *cost = (int64_t)nq * (k < c->n ? k : c->n);
    return nq;
}

static void fix_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)nq, (void)global;
    const int32_t l = c->g.sp.l, n = c->n;
    if (c->g.sp.part != XF_AT_T_SECOND) {
        int32_t b0 = rows[0] / l * l;
        xf_at_t_keys_add(kb, n, b0, b0 + l, 1);
    }
    if (c->g.sp.part != XF_AT_T_FIRST)
        for (int64_t b0 = 0; b0 < n; b0 += l)
            xf_at_t_keys_add(kb, n, (int32_t)(b0 + c->g.sp.c0), (int32_t)(b0 + c->g.sp.c1), 1);
}

static int fix_member(const xf_at_t_seq *c, int32_t i, int32_t j, int global)
{
    (void)global;
    const int32_t l = c->g.sp.l, part = c->g.sp.part;
    return (part != XF_AT_T_SECOND && i / l == j / l) ||
           (part != XF_AT_T_FIRST && j % l >= c->g.sp.c0 && j % l < c->g.sp.c1);
}

const xf_attn_ops xf_at_fixed = {
    XF_AT_PARAMS(fix_params, fix_defaults, fix_pkeys),
    .check = fix_check,
    .pattern = &(const xf_at_t_variant){ .setup = fix_setup, .n_tiles = fix_n_tiles,
        .tile = fix_tile, .keys = fix_keys, .member = fix_member },
};
