/* Engine-internal: CPU features read once (cpuid + xgetbv, AMX via arch_prctl) and capped by
 * XF_CPU=generic|avx2|avx512|amx. The only place besides per-ISA kernel files that may use
 * intrinsics. */
#ifndef XF_ENGINE_CPU_H
#define XF_ENGINE_CPU_H

#include <xformd/forward.h>

enum xf_isa { XF_ISA_GENERIC = 0, XF_ISA_AVX2, XF_ISA_AVX512, XF_ISA_AMX, XF_ISA_COUNT };

typedef struct xf_cpu {
    enum xf_isa level;        /* in use (after the XF_CPU cap) */
    enum xf_isa level_max;    /* the CPU's best */
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16,
        avx512fp16, avxvnni, amx_tile, amx_int8, amx_bf16;
    int n_cores;
    char brand[64];
} xf_cpu_t;

/* Detected on first call (thread-safe, pthread_once). Ownership: borrowed, static. */
const xf_cpu_t *xf_cpu(void);
const char *xf_isa_name(enum xf_isa isa);
/* FMA peak measurement for benches: GFLOP/s of independent FMAs at the best vector width,
 * run on n_threads threads for about ms milliseconds. */
double xf_cpu_fma_peak_gflops(int n_threads, int ms);

#endif
