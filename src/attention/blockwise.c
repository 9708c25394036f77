/* "blockwise" and "local1d" (ATTENTION.md §2): blocks of size b; a query attends the keys of
 * its block widened by a halo h on both sides (blockwise: h = 0). Params: block (128), halo
 * (0 / 64). Tiles follow the blocks, so every key of a tile is full (no masking). */
#include "config.h"

#include "attention/fam_t.h"
#include "attention/params.h"

typedef struct blk_params {
    int32_t block, halo;
} blk_params;

static const blk_params blockwise_defaults = { .block = 128, .halo = 0 };
static const blk_params local1d_defaults = { .block = 128, .halo = 64 };

static const xf_at_key_t blk_pkeys[] = {
    XF_AT_KEY(blk_params, block, "block", XF_AT_K_INT, 1, 1 << 24, NULL),
    XF_AT_KEY(blk_params, halo, "halo", XF_AT_K_INT, 0, 1 << 24, NULL),
};

static int blk_setup(xf_at_t_seq *c)
{
    const blk_params *p = c->params;
    c->g.blk.block = p->block < c->n ? p->block : c->n;
    c->g.blk.halo = p->halo;
    /* one block, or a halo that reaches every key from every block */
    c->dense = p->block >= c->n || p->halo >= c->n - 1;
    return 0;
}

static int32_t blk_n_tiles(const xf_at_t_seq *c)
{
    return xf_at_t_seg_tiles(c->n, c->g.blk.block, XF_AT_T_BQ);
}

static int32_t blk_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                        int64_t *cost)
{
    int32_t nq = xf_at_t_seg_rows(c->n, c->g.blk.block, XF_AT_T_BQ, t, rows);
    *global = 0;
    *cost = (int64_t)nq * (c->g.blk.block + 2 * (int64_t)c->g.blk.halo);
    return nq;
}

static void blk_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                     xf_at_t_keys *kb)
{
    (void)nq, (void)global;
    const int32_t block = c->g.blk.block, halo = c->g.blk.halo;
    int32_t t = rows[0] / block;
    int64_t lo = (int64_t)t * block - halo;
    int64_t end = (int64_t)(t + 1) * block < c->n ? (int64_t)(t + 1) * block : c->n;
    int64_t hi = end + halo;
    xf_at_t_keys_add(kb, c->n, lo < 0 ? 0 : (int32_t)lo, hi > c->n ? c->n : (int32_t)hi, 1);
}

static const xf_at_t_variant blk_ft = {
    .setup = blk_setup, .n_tiles = blk_n_tiles, .tile = blk_tile, .keys = blk_keys,
};

const xf_attn_ops xf_at_blockwise = {
    XF_AT_PARAMS(blk_params, blockwise_defaults, blk_pkeys),
    .pattern = &blk_ft,
};

const xf_attn_ops xf_at_local1d = {
    XF_AT_PARAMS(blk_params, local1d_defaults, blk_pkeys),
    .pattern = &blk_ft,
};
