/* The seeded random streams of ATTENTION.md §0 (SplitMix64 keyed by mix64 chaining). */
#include "config.h"

#include <math.h>

#include "attention/rng.h"

uint64_t xf_rng_mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void xf_rng_init(xf_rng_t *r, uint64_t seed, uint64_t layer, uint64_t head, uint64_t purpose,
                 uint64_t index)
{
    const uint64_t w[5] = { seed, layer, head, purpose, index };
    uint64_t h = 0x243F6A8885A308D3ull;

    for (int i = 0; i < 5; i++)
        h = xf_rng_mix64(h ^ w[i]);
    r->state = h;
}

uint64_t xf_rng_next(xf_rng_t *r)
{
    r->state += 0x9E3779B97F4A7C15ull;
    return xf_rng_mix64(r->state);
}

double xf_rng_uniform(xf_rng_t *r)
{
    return (double)(xf_rng_next(r) >> 11) * 0x1.0p-53;
}

double xf_rng_normal(xf_rng_t *r)
{
    double u1 = xf_rng_uniform(r);
    double u2 = xf_rng_uniform(r);

    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

void xf_rng_partial_shuffle(xf_rng_t *r, int32_t *idx, int32_t m, int32_t count)
{
    if (count > m)
        count = m;
    for (int32_t t = 0; t < count; t++) {
        int32_t j = t + (int32_t)(xf_rng_uniform(r) * (double)(m - t));
        int32_t tmp;
        if (j >= m)
            j = m - 1;
        tmp = idx[t];
        idx[t] = idx[j];
        idx[j] = tmp;
    }
}
