/* The serving benchmarks' request stream (see request_mix.h). */
#include "config.h"

#include "request_mix.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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

#define MAX_CLASSES 8
static int n_classes = 3;
static int32_t cls_lo[MAX_CLASSES] = { 8, 33, 129 }, cls_hi[MAX_CLASSES] = { 32, 128, 256 };
static double cls_p[MAX_CLASSES] = { 0.6, 0.3, 0.1 };
static char spec_in_force[256] = "8-32:0.6,33-128:0.3,129-256:0.1";

int32_t mix_tokens(void)
{
    double u = mix_urand(), acc = 0;
    int k = n_classes - 1;
    for (int i = 0; i < n_classes; i++) {
        acc += cls_p[i];
        if (u < acc) {
            k = i;
            break;
        }
    }
    return cls_lo[k] + (int32_t)(mix_rng() % (uint64_t)(cls_hi[k] - cls_lo[k] + 1));
}

int mix_set_lengths(const char *spec)
{
    char buf[256];
    int32_t lo_v[MAX_CLASSES], hi_v[MAX_CLASSES];
    double p_v[MAX_CLASSES], sum = 0;
    int n = 0;
    if (!spec || strlen(spec) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int lo, hi, used = 0;
        double p;
        if (n == MAX_CLASSES || sscanf(t, "%d-%d:%lf%n", &lo, &hi, &p, &used) != 3 ||
            t[used] != '\0' || lo < 3 || hi < lo || hi > 510 || !(p > 0))
            return -1;
        lo_v[n] = lo;
        hi_v[n] = hi;
        p_v[n] = p;
        sum += p;
        n++;
    }
    if (n == 0 || fabs(sum - 1.0) > 1e-6)
        return -1;
    memcpy(cls_lo, lo_v, sizeof(lo_v[0]) * (size_t)n);
    memcpy(cls_hi, hi_v, sizeof(hi_v[0]) * (size_t)n);
    memcpy(cls_p, p_v, sizeof(p_v[0]) * (size_t)n);
    n_classes = n;
    snprintf(spec_in_force, sizeof(spec_in_force), "%s", spec);
    return 0;
}

const char *mix_lengths(void)
{
    return spec_in_force;
}
