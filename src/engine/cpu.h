/* Engine-internal: CPU features read once (cpuid + xgetbv, AMX via arch_prctl) and capped by
 * XF_CPU=generic|avx2|avx512|amx. The only place besides per-ISA kernel files that may use
 * intrinsics. */
#ifndef XF_ENGINE_CPU_H
#define XF_ENGINE_CPU_H

#include <stdint.h>

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

/* The CPUID and XCR0 values the AMX decision reads, apart so that tests can feed other CPUs'
 * (the Intel SDM's leaves; Linux's Documentation/arch/x86/xstate.rst for XCR0). */
typedef struct xf_cpu_amx_regs {
    uint32_t max_leaf;    /* CPUID.0.EAX */
    uint32_t l7_edx;      /* CPUID.(7,0).EDX: bit 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8 */
    uint64_t xcr0;        /* XGETBV(0): bit 17 XTILECFG, bit 18 XTILEDATA (enabled by the OS) */
    uint32_t l1d0_eax;    /* CPUID.(1DH,0).EAX: the highest palette */
    uint32_t l1d1_ebx;    /* CPUID.(1DH,1).EBX: palette 1's max_names [31:16], bytes_per_row
                           * [15:0] */
    uint32_t l1d1_ecx;    /* CPUID.(1DH,1).ECX: palette 1's max_rows [15:0] */
    uint32_t l1e0_ebx;    /* CPUID.(1EH,0).EBX: TMUL's tmul_maxn [23:8] (bytes), tmul_maxk [7:0] */
} xf_cpu_amx_regs_t;

enum { XF_CPU_AMX_TILE = 1, XF_CPU_AMX_INT8 = 2, XF_CPU_AMX_BF16 = 4 };

/* The AMX features (XF_AMX_* bits) the CPU has and the OS enables, counting a CPU only when
 * palette 1 and the TMUL unit are at least what the AMX kernel configures (8 tiles of 16 rows ×
 * 64 bytes, K up to 16, N up to 64 bytes: anything less faults in LDTILECFG/TDPBUSD). 0 with
 * *why (static text) saying what is missing. The tile data permission is the next step. */
int xf_cpu_amx_features(const xf_cpu_amx_regs_t *in, const char **why);
/* Linux hands out the AMX tile data state on request only (xstate.rst): checks that the kernel
 * supports it (ARCH_GET_XCOMP_SUPP has XTILECFG and XTILEDATA), and unless the process already
 * has it (ARCH_GET_XCOMP_PERM; inherited on fork), asks for it (ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA = 18). Process-wide: every thread, also those started before. Returns 0,
 * or -errno (-EOPNOTSUPP: the kernel does not support it; -EINVAL before Linux 5.16; the
 * kernel's refusal, e.g. an installed sigaltstack too small for the larger signal frame).
 * Without it the first tile instruction is killed by SIGILL, so detection then reports no AMX
 * and the int8 layers run on the AVX-512 VNNI kernel. */
int xf_cpu_amx_permission(void);

/* Detected on first call (thread-safe, pthread_once). Ownership: borrowed, static. */
const xf_cpu_t *xf_cpu(void);
/* Whether an OpenBLAS core name is one of its AVX-512 cores (SkylakeX, Cooperlake,
 * SapphireRapids; Zen4/5 builds may say so too). NULL or "unknown": 0. */
int xf_blas_core_avx512(const char *core);
const char *xf_isa_name(enum xf_isa isa);
/* FMA peak measurement for benches: GFLOP/s of independent FMAs at the best vector width,
 * run on n_threads threads for about ms milliseconds. */
double xf_cpu_fma_peak_gflops(int n_threads, int ms);

#endif
