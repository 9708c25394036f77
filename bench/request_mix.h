/* The serving benchmarks' request stream, shared by bench_serve (real HTTP) and bench_batcher
 * (simulated): one seeded generator (SplitMix64) and one token-length mix, so that both rank
 * the batcher policies on the same load. Not thread-safe: the driving thread only. */
#ifndef XF_BENCH_REQUEST_MIX_H
#define XF_BENCH_REQUEST_MIX_H

#include <stdint.h>

/* Restart the sequence: the same seed gives the same requests. */
void mix_seed(uint64_t seed);
uint64_t mix_rng(void);
/* Uniform in (0, 1): never 0, so -log(mix_urand()) is finite (Poisson gaps). */
double mix_urand(void);
/* Token count of one request: 60% short queries (8–32), 30% sentences (33–128), 10% passages
 * (129–256). */
int32_t mix_tokens(void);

#endif
