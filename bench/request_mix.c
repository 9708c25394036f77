/* The serving benchmarks' request stream (see request_mix.h). */
#include "config.h"

#include "request_mix.h"

static uint64_t rng_s;

void mix_seed(uint64_t seed)
{
    rng_s = seed;
}

uint64_t mix_rng(void)
{
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double mix_urand(void)
{
    return ((double)(mix_rng() >> 11) + 0.5) / 9007199254740992.0;
}

int32_t mix_tokens(void)
{
    double u = mix_urand();
    int32_t lo = u < 0.6 ? 8 : u < 0.9 ? 33 : 129, hi = u < 0.6 ? 32 : u < 0.9 ? 128 : 256;
    return lo + (int32_t)(mix_rng() % (uint64_t)(hi - lo + 1));
}
