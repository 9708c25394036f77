/* Attention-internal: the seeded random streams of ATTENTION.md §0. Every random quantity is a
 * pure function of (seed, layer, head, purpose, index): SplitMix64 keyed by mix64 chaining.
 * Pure functions, any thread. */
#ifndef XF_ATTENTION_RNG_H
#define XF_ATTENTION_RNG_H

#include <stdint.h>

enum xf_rng_purpose {
    XF_RNG_BIGBIRD = 1, XF_RNG_FAVOR = 2, XF_RNG_FAVOR_NORM = 3, XF_RNG_RFA = 4,
    XF_RNG_LSH = 5, XF_RNG_KMEANS = 6
};

typedef struct xf_rng { uint64_t state; } xf_rng_t;

uint64_t xf_rng_mix64(uint64_t z);
/* Start the stream for (seed, layer, head, purpose, index). */
void xf_rng_init(xf_rng_t *r, uint64_t seed, uint64_t layer, uint64_t head, uint64_t purpose,
                 uint64_t index);
uint64_t xf_rng_next(xf_rng_t *r);
/* Uniform in [0, 1): (out >> 11) * 2^-53. */
double xf_rng_uniform(xf_rng_t *r);
/* Standard normal, Box–Muller cosine branch from two consecutive uniforms, in double. */
double xf_rng_normal(xf_rng_t *r);
/* Partial Fisher–Yates: the first r entries of idx[0..m) become a uniform sample without
 * replacement (for t < r: j = t + floor(u·(m−t)), swap). */
void xf_rng_partial_shuffle(xf_rng_t *r, int32_t *idx, int32_t m, int32_t count);

#endif
