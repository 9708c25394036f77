/* CPU feature detection (cpuid + xgetbv, AMX permission via arch_prctl), the XF_CPU cap,
 * xf_cpu_get_info() and the FMA peak measurement used by the benches. Detection runs once
 * (pthread_once); everything here is read-only afterwards. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/cpu.h"
#include "engine/diag.h"
#include "engine/kernels.h"

#ifdef XF_HAVE_X86_64
#include <cpuid.h>
#include <sys/syscall.h>
#include "engine/kernels/x86/x86.h"
#endif

/* OpenBLAS' core name; declared here because some cblas.h variants lack it. */
char *openblas_get_corename(void);

static xf_cpu_t cpu_info;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static const char *const isa_names[XF_ISA_COUNT] = { "generic", "avx2", "avx512", "amx" };
_Static_assert(XF_ISA_COUNT == 4, "update isa_names");

const char *xf_isa_name(enum xf_isa isa)
{
    return (unsigned)isa < XF_ISA_COUNT ? isa_names[isa] : "unknown";
}

int xf_cpu_amx_features(const xf_cpu_amx_regs_t *in, const char **why)
{
    const char *no = NULL;
    if (!((in->l7_edx >> 24) & 1))
        no = "no AMX-TILE in CPUID";
    else if ((in->xcr0 & 0x60000) != 0x60000)
        no = "the OS does not enable the tile state (XCR0 bits 17 XTILECFG, 18 XTILEDATA)";
    else if (in->max_leaf < 0x1e || in->l1d0_eax < 1)
        no = "no tile palette 1 (CPUID leaves 1DH, 1EH)";
    else if ((in->l1d1_ebx >> 16) < 8 || (in->l1d1_ebx & 0xffff) < 64 ||
             (in->l1d1_ecx & 0xffff) < 16)
        no = "palette 1 has less than 8 tiles of 16 rows x 64 bytes";
    else if ((in->l1e0_ebx & 0xff) < 16 || ((in->l1e0_ebx >> 8) & 0xffff) < 64)
        no = "the TMUL unit takes less than K = 16 rows and N = 64 bytes";
    if (why)
        *why = no;
    if (no)
        return 0;
    return XF_CPU_AMX_TILE | ((in->l7_edx >> 25) & 1 ? XF_CPU_AMX_INT8 : 0) |
           ((in->l7_edx >> 22) & 1 ? XF_CPU_AMX_BF16 : 0);
}

static int online_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

#ifdef XF_HAVE_X86_64
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* arch_prctl(2) codes and XSTATE component numbers (Linux asm/prctl.h, xstate.rst) */
#define XF_ARCH_GET_XCOMP_SUPP 0x1021
#define XF_ARCH_GET_XCOMP_PERM 0x1022
#define XF_ARCH_REQ_XCOMP_PERM 0x1023
#define XF_XFEATURE_XTILECFG 17
#define XF_XFEATURE_XTILEDATA 18
#define XF_XTILE_MASK ((1ull << XF_XFEATURE_XTILECFG) | (1ull << XF_XFEATURE_XTILEDATA))

int xf_cpu_amx_permission(void)
{
    uint64_t supp = 0, perm = 0;
    if (syscall(SYS_arch_prctl, XF_ARCH_GET_XCOMP_SUPP, &supp) != 0)
        return -errno;
    if ((supp & XF_XTILE_MASK) != XF_XTILE_MASK)
        return -EOPNOTSUPP;
    if (syscall(SYS_arch_prctl, XF_ARCH_GET_XCOMP_PERM, &perm) == 0 &&
        (perm & (1ull << XF_XFEATURE_XTILEDATA)))
        return 0;
    if (syscall(SYS_arch_prctl, XF_ARCH_REQ_XCOMP_PERM, XF_XFEATURE_XTILEDATA) != 0)
        return -errno;
    return 0;
}

static void detect_x86(xf_cpu_t *c)
{
    unsigned a, b, cx, d;
    if (!__get_cpuid(0, &a, &b, &cx, &d))
        return;
    unsigned max_leaf = a;
    __cpuid(1, a, b, cx, d);
    int osxsave = (cx >> 27) & 1, avx = (cx >> 28) & 1;
    int fma = (cx >> 12) & 1, f16c = (cx >> 29) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6;
    int os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;
    xf_cpu_amx_regs_t amx_in = { .max_leaf = max_leaf, .xcr0 = xcr0 };
    if (avx && os_ymm) {
        c->fma = fma;
        c->f16c = f16c;
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, cx, d);
        unsigned max_sub = a;
        if (avx && os_ymm)
            c->avx2 = (b >> 5) & 1;
        if (os_zmm) {
            c->avx512f = (b >> 16) & 1;
            c->avx512dq = (b >> 17) & 1;
            c->avx512bw = (b >> 30) & 1;
            c->avx512vl = (b >> 31) & 1;
            c->avx512vnni = (cx >> 11) & 1;
            c->avx512fp16 = (d >> 23) & 1;
        }
        amx_in.l7_edx = d;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, cx, d);
            if (avx && os_ymm)
                c->avxvnni = (a >> 4) & 1;
            if (os_zmm)
                c->avx512bf16 = (a >> 5) & 1;
        }
    }
    if (max_leaf >= 0x1e) {
        __cpuid_count(0x1d, 0, a, b, cx, d);
        amx_in.l1d0_eax = a;
        __cpuid_count(0x1d, 1, a, b, cx, d);
        amx_in.l1d1_ebx = b;
        amx_in.l1d1_ecx = cx;
        __cpuid_count(0x1e, 0, a, b, cx, d);
        amx_in.l1e0_ebx = b;
    }
    const char *why = NULL;
    int amx = xf_cpu_amx_features(&amx_in, &why);
    if (amx) {
        int rc = xf_cpu_amx_permission();
        if (rc != 0) {
            xf_log(XF_LOG_INFO, "cpu: AMX present, but Linux did not grant the tile data state "
                   "(arch_prctl ARCH_REQ_XCOMP_PERM: %s): int8 layers use AVX-512 VNNI",
                   strerror(-rc));
            amx = 0;
        }
    } else if ((amx_in.l7_edx >> 24) & 1) {
        xf_log(XF_LOG_INFO, "cpu: AMX-TILE in CPUID but not usable: %s", why);
    }
    c->amx_tile = (amx & XF_CPU_AMX_TILE) != 0;
    c->amx_int8 = (amx & XF_CPU_AMX_INT8) != 0;
    c->amx_bf16 = (amx & XF_CPU_AMX_BF16) != 0;
    __cpuid(0x80000000, a, b, cx, d);
    if (a >= 0x80000004) {
        unsigned r[12];
        for (unsigned i = 0; i < 3; i++)
            __cpuid(0x80000002 + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
        memcpy(c->brand, r, 48);
        c->brand[48] = '\0';
    }
}
#else
int xf_cpu_amx_permission(void)
{
    return -EOPNOTSUPP;
}
#endif

static void trim_brand(char *s)
{
    size_t i = 0;
    while (s[i] == ' ')
        i++;
    memmove(s, s + i, strlen(s + i) + 1);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

static void cpu_detect(void)
{
    xf_cpu_t *c = &cpu_info;
    memset(c, 0, sizeof *c);
    strcpy(c->brand, "unknown");
#ifdef XF_HAVE_X86_64
    detect_x86(c);
#endif
    trim_brand(c->brand);
    c->n_cores = online_cores();
    c->level_max = XF_ISA_GENERIC;
    if (c->avx2 && c->fma)
        c->level_max = XF_ISA_AVX2;
    if (c->level_max == XF_ISA_AVX2 && c->avx512f && c->avx512bw && c->avx512vl && c->avx512dq)
        c->level_max = XF_ISA_AVX512;
    /* the one AMX kernel is the int8 one (kernels/qgemm.c) */
    if (c->level_max == XF_ISA_AVX512 && c->amx_tile && c->amx_int8)
        c->level_max = XF_ISA_AMX;
    c->level = c->level_max;
    const char *cap = getenv("XF_CPU");
    if (cap && *cap) {
        int found = 0;
        for (int i = 0; i < XF_ISA_COUNT; i++) {
            if (strcmp(cap, isa_names[i]) == 0) {
                found = 1;
                if ((enum xf_isa)i < c->level)
                    c->level = (enum xf_isa)i;
            }
        }
        if (!found)
            xf_log(XF_LOG_WARN, "XF_CPU=%s is not one of generic, avx2, avx512, amx; ignored",
                   cap);
    }
}

int xf_blas_core_avx512(const char *core)
{
    return core && (strstr(core, "kylakeX") || strstr(core, "ooperlake") ||
                    strstr(core, "apphireRapids") || strstr(core, "Zen4") || strstr(core, "Zen5"));
}

const xf_cpu_t *xf_cpu(void)
{
    pthread_once(&cpu_once, cpu_detect);
    return &cpu_info;
}

void xf_cpu_get_info(xf_cpu_info_t *out)
{
    const xf_cpu_t *c = xf_cpu();
    memset(out, 0, sizeof *out);
    snprintf(out->brand, sizeof out->brand, "%s", c->brand);
    out->isa = xf_isa_name(c->level);
    out->isa_max = xf_isa_name(c->level_max);
    const char *core = openblas_get_corename();
    out->blas_core = core && *core ? core : "unknown";
    out->blas_core_avx512 = xf_blas_core_avx512(out->blas_core);
    out->gemm_path = xf_kernels()->gemm_path;
    out->has_avx2 = c->avx2;
    out->has_fma = c->fma;
    out->has_avx512f = c->avx512f;
    out->has_avx512bw = c->avx512bw;
    out->has_avx512vl = c->avx512vl;
    out->has_avx512vnni = c->avx512vnni;
    out->has_avx512bf16 = c->avx512bf16;
    out->has_amx_tile = c->amx_tile;
    out->has_amx_int8 = c->amx_int8;
    out->has_amx_bf16 = c->amx_bf16;
    out->n_cores = c->n_cores;
}

/* ---- FMA peak ---- */

struct peak_arg {
    int ms;
    double flops;
    double secs;
    atomic_int *go;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs `iters` rounds of independent FMAs; returns the flops done (sink keeps them alive). */
static double peak_chunk(int64_t iters, float *sink)
{
#ifdef XF_HAVE_X86_64
    const xf_cpu_t *c = xf_cpu();
    if (c->level >= XF_ISA_AVX512)
        return xf_fma_loop_avx512(iters, sink);
    if (c->level >= XF_ISA_AVX2)
        return xf_fma_loop_avx2(iters, sink);
#endif
    /* Portable: 8 independent scalar chains. */
    float a[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
    const float m = 0.999999f, b = 1e-7f;
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++)
            a[j] = a[j] * m + b;
    float s = 0;
    for (int j = 0; j < 8; j++)
        s += a[j];
    *sink += s;
    return 16.0 * (double)iters;
}

static void *peak_thread(void *p)
{
    struct peak_arg *a = p;
    float sink = 0;
    peak_chunk(1 << 16, &sink); /* warm the vector units up */
    while (!atomic_load(a->go))
        sched_yield();
    double t0 = now_s(), t = t0, flops = 0;
    while (t - t0 < a->ms * 1e-3) {
        flops += peak_chunk(1 << 18, &sink);
        t = now_s();
    }
    a->flops = flops + (sink == 12345.0f ? 1 : 0);
    a->secs = t - t0;
    return NULL;
}

double xf_cpu_fma_peak_gflops(int n_threads, int ms)
{
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > 256)
        n_threads = 256;
    if (ms < 1)
        ms = 1;
    struct peak_arg *args = calloc((size_t)n_threads, sizeof *args);
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    atomic_int go = 0;
    if (!args || !th) {
        free(args);
        free(th);
        return 0.0;
    }
    int started = 1;
    for (int i = 0; i < n_threads; i++) {
        args[i].ms = ms;
        args[i].go = &go;
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&th[i], NULL, peak_thread, &args[i]) != 0)
            break;
        started++;
    }
    atomic_store(&go, 1);
    peak_thread(&args[0]);
    double flops = 0, secs = 0;
    for (int i = 1; i < started; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < started; i++) {
        flops += args[i].flops;
        secs = args[i].secs > secs ? args[i].secs : secs;
    }
    free(args);
    free(th);
    return secs > 0 ? flops / secs * 1e-9 : 0.0;
}
