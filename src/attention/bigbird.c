/* "bigbird" (ATTENTION.md §9, ITC form): blocks of b tokens; a query block a ∉ G attends the
 * blocks G ∪ W(a) ∪ R(a) (union, each key once), a ∈ G attends every block. G = first
 * global_first and last global_last blocks, W(a) = a ± window_blocks, R(a) = random_blocks
 * distinct blocks drawn from the rest by a partial Fisher–Yates with the §0 stream
 * (seed, layer, head, BIGBIRD, a) — never block 0 again (the HF eval-mode trap), never a
 * sticky switch to full attention (the per-sequence dense fallback is decided from n).
 * Params: block 64, random_blocks 3, window_blocks 1, global_first 1, global_last 1,
 * seed 0, random_per_head true (false: every head uses head 0's draw). */
#include "config.h"

#include "attention/fam_t.h"
#include "attention/params.h"
#include "attention/rng.h"

typedef struct bb_params {
    int32_t block, random, window, gfirst, glast, per_head;
    int64_t seed;
} bb_params;

static const bb_params bb_defaults = {
    .block = 64, .random = 3, .window = 1, .gfirst = 1, .glast = 1, .per_head = 1, .seed = 0,
};

static const xf_at_key_t bb_pkeys[] = {
    XF_AT_KEY(bb_params, block, "block", XF_AT_K_INT, 1, 1 << 20, NULL),
    XF_AT_KEY(bb_params, random, "random_blocks", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(bb_params, window, "window_blocks", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(bb_params, gfirst, "global_first", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(bb_params, glast, "global_last", XF_AT_K_INT, 0, 1 << 20, NULL),
    XF_AT_KEY(bb_params, seed, "seed", XF_AT_K_SEED, 0, 0, NULL),
    XF_AT_KEY(bb_params, per_head, "random_per_head", XF_AT_K_BOOL, 0, 1, NULL),
};

static int bb_setup(xf_at_t_seq *c)
{
    const bb_params *p = c->params;
    c->g.bb.block = p->block;
    c->g.bb.nb = (int32_t)(((int64_t)c->n + p->block - 1) / p->block);
    c->dense = (int64_t)p->gfirst + p->glast >= c->g.bb.nb || p->window >= c->g.bb.nb - 1;
    return 0;
}

static int32_t bb_n_tiles(const xf_at_t_seq *c)
{
    return xf_at_t_seg_tiles(c->n, c->g.bb.block, XF_AT_T_BQ);
}

static int32_t bb_tile(const xf_at_t_seq *c, int32_t t, int32_t *rows, int *global,
                       int64_t *cost)
{
    const bb_params *p = c->params;
    int32_t nq = xf_at_t_seg_rows(c->n, c->g.bb.block, XF_AT_T_BQ, t, rows);
    int64_t k = ((int64_t)p->gfirst + p->glast + 2 * (int64_t)p->window + 1 + p->random) *
                c->g.bb.block;
    int32_t blk = rows[0] / c->g.bb.block;
    if (blk < p->gfirst || blk >= c->g.bb.nb - p->glast)
        k = c->n;
    *global = 0;
    *cost = (int64_t)nq * (k < c->n ? k : c->n);
    return nq;
}

static void add_block(const xf_at_t_seq *c, xf_at_t_keys *kb, int32_t x)
{
    int64_t a = (int64_t)x * c->g.bb.block, b = a + c->g.bb.block;
    xf_at_t_keys_add(kb, c->n, (int32_t)a, b > c->n ? c->n : (int32_t)b, 1);
}

static void bb_keys(const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global,
                    xf_at_t_keys *kb)
{
    (void)nq, (void)global;
    const bb_params *p = c->params;
    const int32_t nb = c->g.bb.nb, a = rows[0] / c->g.bb.block;
    if (a < p->gfirst || a >= nb - p->glast) {
        xf_at_t_keys_add(kb, c->n, 0, c->n, 1);
        return;
    }
    int32_t m = 0;
    for (int32_t x = 0; x < nb; x++) {
        int g = x < p->gfirst || x >= nb - p->glast;
        int w = x >= a - p->window && x <= a + p->window;
        if (g || w)
            add_block(c, kb, x);
        else
            c->scratch[m++] = x;
    }
    xf_rng_t rng;
    xf_rng_init(&rng, (uint64_t)p->seed, (uint64_t)c->sh->layer,
                (uint64_t)(p->per_head ? c->head : 0), XF_RNG_BIGBIRD, (uint64_t)a);
    int32_t cnt = p->random < m ? p->random : m;
    xf_rng_partial_shuffle(&rng, c->scratch, m, cnt);
    for (int32_t t = 0; t < cnt; t++)
        add_block(c, kb, c->scratch[t]);
}

const xf_attn_ops xf_at_bigbird = {
    XF_AT_PARAMS(bb_params, bb_defaults, bb_pkeys),
    .pattern = &(const xf_at_t_variant){ .setup = bb_setup, .n_tiles = bb_n_tiles, .tile = bb_tile,
        .keys = bb_keys },
};
