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
/* Token count of one request, drawn from the length classes: by default 60% short queries
 * (8–32), 30% sentences (33–128), 10% passages (129–256). */
int32_t mix_tokens(void);
/* Replace the classes with spec "lo-hi:p,..." (3 <= lo <= hi <= 510 so a body fits, p > 0,
 * the p summing to 1, at most 8 classes): 0, or -1 with the classes unchanged. */
int mix_set_lengths(const char *spec);
/* The classes in force, in the spec's format (for the benchmark's header line). */
const char *mix_lengths(void);

#endif
