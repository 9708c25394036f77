/* The kernel dispatcher, the one CPU selection of the engine and the attention: the reference
 * table, the per-ISA tables (attention tile kernels included), xf_kernels() (the best table
 * the CPU runs, after the XF_CPU cap), the weight packing shared by the own GEMM kernels
 * and the cblas_sgemm Linear path. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_t.h"
#include "engine/cpu.h"
#include "engine/diag.h"
#include "engine/kernels.h"
#include "engine/kernels/ref/ref.h"
#include "engine/pool.h"

#ifdef XF_HAVE_X86_64
#include "engine/kernels/x86/x86.h"
#endif

void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);

/* ---- tables ---- */

/* GEMM path choice (bench/bench_gemm, Xeon with AVX-512/AMX, 2 cores, 2026-11-29; the
 * machine was shared, so ratios within one run): the engine's AVX-512 kernel ("own-avx512")
 * is the default wherever AVX-512 exists. One core's FMA peak is 166-169 GFLOP/s (zmm); the
 * own kernel runs at 0.78-0.80 of it on one thread (M = 16 and 512, N = K = 768; its
 * micro-kernel alone 0.93-0.96). On the BERT layer GEMMs with 2 threads its speed relative
 * to OpenBLAS 0.3.21 (SkylakeX kernel, its own 2 threads) was 1.12-1.16x at M = 128 and
 * 0.92-1.14x at M = 2106 in a quiet run; in loaded runs 3.8-4.7x at M = 16, 2.4-3.9x at 128,
 * 1.3-1.4x at 512, 1.2-1.4x at 2106 and 0.7-1.0x at 4096 (OpenBLAS' spinning threads lose
 * most when the cores are shared). Per CPU-second it was the most efficient path up to
 * M = 2106 (0.56-0.63 of peak loaded vs 0.42-0.55 for OpenBLAS) and level at 4096.
 * It is also bitwise identical for any thread count, fuses bias/GELU/ReLU, and does not
 * depend on the core OpenBLAS picks (this VM's OpenBLAS loads "Prescott", SSE3, unless
 * OPENBLAS_CORETYPE is set). The AVX2 kernel is for CPUs without AVX-512; the cblas path
 * ("openblas-1t-per-thread", one OpenBLAS thread per pool thread on column slices) is the
 * generic fallback. No AMX path: a bf16x3 split keeps ~16 bits of the mantissa (errors
 * ~1e-5), short of fp32; bf16x6 needs six tile products and did not fit. */

static const xf_kernels_t table_ref = {
    .gemm_path = "ref",
    .nth_exact = 1,
    .linear = xf_linear_ref,
    .add_layernorm = xf_add_layernorm_ref,
    .bias_act = xf_bias_act_ref,
    .softmax = xf_softmax_ref,
    .qkv_split = xf_qkv_split_ref,
    .embed = xf_embed_ref,
};

/* Any CPU: reference kernels with the GEMM through OpenBLAS. */
static const xf_kernels_t table_generic = {
    .gemm_path = "openblas-1t-per-thread",
    .linear = xf_linear_cblas,
    .add_layernorm = xf_add_layernorm_ref,
    .bias_act = xf_bias_act_ref,
    .softmax = xf_softmax_ref,
    .qkv_split = xf_qkv_split_ref,
    .embed = xf_embed_ref,
};

enum { T_REF, T_GENERIC, T_AVX2, T_AVX512, T_COUNT };

static xf_kernels_t tables[T_COUNT];
static const char *const table_names[T_COUNT] = { "ref", "generic", "avx2", "avx512" };
_Static_assert(T_COUNT == 4, "update table_names");
static int table_ok[T_COUNT];
static int table_best;
static xf_kernels_t table_override;    /* the best table with XF_GEMM applied */
static const xf_kernels_t *selected;   /* what xf_kernels() returns */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
/* The bias/activation kernel the cblas path uses for its epilogue (the best available). */
static void (*cblas_epi)(size_t, size_t, int32_t, const float *, const float *,
                         enum xf_epilogue, float *) = xf_bias_act_ref;

/* When OpenBLAS runs a core below the CPU's AVX-512 (OPENBLAS_CORETYPE forces an older one,
 * or an unrecognised CPU model gets its SSE3 core), log at lvl "who: OpenBLAS runs its CORE
 * kernel ...; consequence". */
static void note_blas(const xf_cpu_t *cpu, enum xf_log_level lvl, const char *who,
                      const char *consequence)
{
    const char *c = openblas_get_corename();
    if (cpu->level_max >= XF_ISA_AVX512 && c && *c && !xf_blas_core_avx512(c))
        xf_log(lvl, "%s: OpenBLAS runs its %s kernel on an AVX-512 CPU (set "
               "OPENBLAS_CORETYPE=SkylakeX to use its AVX-512 one); %s", who, c, consequence);
}

static int table_complete(const xf_kernels_t *t)
{
    return t->gemm_path && t->linear && t->add_layernorm && t->bias_act && t->softmax &&
           t->qkv_split && t->embed && t->attn;
}

#ifdef XF_HAVE_X86_64
/* On a CPU that has isa: tables[t] = tables[from] with fill's kernels and attn's attention
 * tiles; the best table when complete and within the XF_CPU cap. Called in ISA order. */
static void table_upgrade(const xf_cpu_t *cpu, int t, int from, enum xf_isa isa,
                          void (*fill)(xf_kernels_t *), const xf_at_kern *(*attn)(void))
{
    if (cpu->level_max < isa)
        return;
    tables[t] = tables[from];
    fill(&tables[t]);
    tables[t].attn = attn();
    table_ok[t] = table_complete(&tables[t]);
    if (table_ok[t] && cpu->level >= isa)
        table_best = t;
}
#endif

static void tables_init(void)
{
    const xf_cpu_t *cpu = xf_cpu();
    tables[T_REF] = table_ref;
    tables[T_GENERIC] = table_generic;
    tables[T_REF].attn = tables[T_GENERIC].attn = xf_at_kern_c();
    table_ok[T_REF] = table_ok[T_GENERIC] = 1;
    table_best = T_GENERIC;
#ifdef XF_HAVE_X86_64
    /* every table the CPU runs is built (tests use them all); xf_kernels() picks the best
     * one within the XF_CPU cap */
    table_upgrade(cpu, T_AVX2, T_GENERIC, XF_ISA_AVX2, xf_kernels_fill_avx2, xf_at_kern_avx2);
    table_upgrade(cpu, T_AVX512, T_AVX2, XF_ISA_AVX512, xf_kernels_fill_avx512,
                  xf_at_kern_avx512);
#else
    (void)cpu;
#endif
    /* XF_GEMM=openblas: the best table with the cblas Linear (to measure the whole forward
     * on either path); XF_GEMM=own or unset: as detected. */
    const char *gemm = getenv("XF_GEMM");
    selected = &tables[table_best];
    if (gemm && (strcmp(gemm, "openblas") == 0 || strcmp(gemm, "cblas") == 0)) {
        table_override = tables[table_best];
        table_override.linear = xf_linear_cblas;
        table_override.linear_lead = NULL;
        table_override.gemm_path = table_generic.gemm_path;
        table_override.packs_w = table_generic.packs_w;
        table_override.nth_exact = table_generic.nth_exact;
        table_override.bf16_w = table_generic.bf16_w;
        selected = &table_override;
    } else if (gemm && *gemm && strcmp(gemm, "own") != 0) {
        xf_log(XF_LOG_WARN, "XF_GEMM=%s is not one of own, openblas; ignored", gemm);
    }
    cblas_epi = selected->bias_act;
    /* OpenBLAS' core matters only where it runs the engine's GEMMs: the cblas Linear
     * (XF_CPU=generic, XF_GEMM=openblas, no AVX2). The own kernels pack every Linear weight
     * (xf_gemm_w_init) and never reach cblas, so there a slow core is a debug note, not a
     * warning on every xformd-cli run; the Transformer-XL forward (always cblas) warns at
     * its own load. */
    const int on_path = selected->linear == xf_linear_cblas;
    char why[96];
    snprintf(why, sizeof why, "the engine's GEMM is %s%s", selected->gemm_path,
             on_path ? "" : ", OpenBLAS is not on its path");
    note_blas(cpu, on_path ? XF_LOG_WARN : XF_LOG_DEBUG, "kernels", why);
    const char *core = openblas_get_corename();
    xf_log(XF_LOG_INFO, "kernels: cpu %s, isa %s (max %s), table %s, gemm %s, blas core %s",
           cpu->brand, xf_isa_name(cpu->level), xf_isa_name(cpu->level_max),
           table_names[table_best], selected->gemm_path, core && *core ? core : "unknown");
}

void xf_kernels_warn_blas(const char *who, const char *consequence)
{
    pthread_once(&tables_once, tables_init);
    note_blas(xf_cpu(), XF_LOG_WARN, who, consequence);
}

const xf_kernels_t *xf_kernels(void)
{
    pthread_once(&tables_once, tables_init);
    return selected;
}

const xf_kernels_t *xf_kernels_ref(void)
{
    pthread_once(&tables_once, tables_init);
    return &tables[T_REF];
}

int xf_kernels_all(const xf_kernels_t **out, const char **names, int cap)
{
    pthread_once(&tables_once, tables_init);
    int n = 0;
    for (int i = 0; i < T_COUNT; i++) {
        if (!table_ok[i])
            continue;
        if (n < cap) {
            if (out)
                out[n] = &tables[i];
            if (names)
                names[n] = table_names[i];
        }
        n++;
    }
    return n < cap ? n : cap;
}

/* ---- packed weights ---- */

/* Pack rows taken from nparts stacked [rows[i]][k] matrices (row r of the whole is row
 * r - Σ_{j<i} rows[j] of part i), in the layout of ref.h. */
static int pack_parts(xf_gemm_w_t *pw, const float *const *parts, const int32_t *rows,
                      int nparts, int group)
{
    const size_t G = (size_t)group;
    const size_t K = (size_t)pw->k, P = XF_GEMM_PANEL;
    const size_t npad = xf_gemm_npad(pw);
    size_t bytes = npad * K * sizeof(float);
    size_t alloc = (bytes + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, alloc ? alloc : 64);
    if (!p)
        return -ENOMEM;
    for (size_t k0 = 0; k0 < K; k0 += XF_GEMM_KC) {
        size_t kc = K - k0 < XF_GEMM_KC ? K - k0 : XF_GEMM_KC;
        float *blk = p + k0 * npad;
        int part = 0;
        size_t part0 = 0;      /* first row of `part` in the whole */
        for (size_t row = 0; row < npad; row++) {
            size_t gw;
            float *dst = blk + xf_gemm_group_at(row / P * P, npad, kc, G, &gw) + row % P;
            while (part < nparts && row >= part0 + (size_t)rows[part])
                part0 += (size_t)rows[part++];
            const float *src = part < nparts ? parts[part] + (row - part0) * K + k0 : NULL;
            for (size_t kk = 0; kk < kc; kk++)
                dst[kk * gw] = src ? src[kk] : 0.0f;
        }
    }
    pw->packed = p;
    pw->packed_bytes = bytes;
    pw->group = group;
    return 0;
}

/* The group width the table in use streams best (48 where it says none). */
static int table_group(void)
{
    int g = xf_kernels()->w_group;
    return g == 16 || g == XF_GEMM_GROUP ? g : XF_GEMM_GROUP;
}

int xf_gemm_w_pack_group(xf_gemm_w_t *pw, int group)
{
    if (group != XF_GEMM_PANEL && group != XF_GEMM_GROUP)
        return -EINVAL;
    return pack_parts(pw, &pw->w, &pw->n, 1, group);
}

int xf_gemm_w_pack(xf_gemm_w_t *pw)
{
    return xf_gemm_w_pack_group(pw, table_group());
}

int xf_gemm_w_init_stacked(xf_gemm_w_t *pw, const float *const *parts, const int32_t *rows,
                           int nparts, int32_t k)
{
    int64_t n = 0;
    memset(pw, 0, sizeof *pw);
    for (int i = 0; i < nparts; i++) {
        if (!parts[i] || rows[i] <= 0)
            return -EINVAL;
        n += rows[i];
    }
    if (nparts <= 0 || k <= 0 || n > INT32_MAX)
        return -EINVAL;
    if (!xf_kernels()->packs_w)
        return -ENOTSUP;
    pw->n = (int32_t)n;
    pw->k = k;
    return pack_parts(pw, parts, rows, nparts, table_group());
}

int xf_gemm_w_init(xf_gemm_w_t *pw, const float *w, int32_t n, int32_t k)
{
    memset(pw, 0, sizeof *pw);
    if (!w || n <= 0 || k <= 0)
        return -EINVAL;
    pw->n = n;
    pw->k = k;
    pw->w = w;
    if (xf_kernels()->packs_w)
        return xf_gemm_w_pack(pw);
    return 0;
}

void xf_gemm_w_deinit(xf_gemm_w_t *pw)
{
    if (!pw)
        return;
    free(pw->packed);
    pw->packed = NULL;
    pw->packed_bytes = 0;
    free(pw->packed_bf16);
    pw->packed_bf16 = NULL;
    pw->packed_bf16_bytes = 0;
}

int xf_gemm_w_add_bf16(xf_gemm_w_t *pw)
{
    if (!pw->packed || !xf_kernels()->bf16_w)
        return -ENOTSUP;
    if (pw->packed_bf16)
        return 0;
    const size_t K = (size_t)pw->k, P = XF_GEMM_PANEL;
    const size_t npad = xf_gemm_npad(pw);
    const size_t k2 = (K / XF_GEMM_KC) * XF_GEMM_KC + ((K % XF_GEMM_KC) + 1) / 2 * 2;
    const size_t G = (size_t)pw->group;
    size_t bytes = npad * k2 * sizeof(uint16_t);
    uint16_t *h = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!h)
        return -ENOMEM;
    for (size_t k0 = 0; k0 < K; k0 += XF_GEMM_KC) {
        size_t kc = K - k0 < XF_GEMM_KC ? K - k0 : XF_GEMM_KC, kc2 = (kc + 1) / 2 * 2;
        const float *src = pw->packed + k0 * npad;
        uint16_t *dst = h + k0 * npad;
        for (size_t c = 0; c < npad; c += P) {
            size_t gw;
            const float *s = src + xf_gemm_group_at(c, npad, kc, G, &gw);
            uint16_t *d = dst + 2 * xf_gemm_group_at(c, npad, kc2 / 2, G, &gw);
            for (size_t kk = 0; kk < kc2; kk++)
                for (size_t cc = 0; cc < P; cc++)
                    d[2 * (kk / 2 * gw + cc) + kk % 2] =
                        kk < kc ? xf_bf16_bits(s[kk * gw + cc]) : 0;
        }
    }
    pw->packed_bf16 = h;
    pw->packed_bf16_bytes = bytes;
    free(pw->packed);
    pw->packed = NULL;
    pw->packed_bytes = 0;
    return 0;
}

/* ---- per-thread GEMM scratch (kernels.h) ---- */

static _Thread_local void *tl_gemm_scratch;

void *xf_gemm_scratch_swap(void *buf)
{
    void *prev = tl_gemm_scratch;
    tl_gemm_scratch = buf;
    return prev;
}

void *xf_gemm_scratch(void)
{
    return tl_gemm_scratch;
}

/* ---- thread split of the own GEMM kernels ---- */

int xf_gemm_share(int32_t m, int32_t n, int mr, int nr, int ith, int nth, int32_t *r0,
                  int32_t *r1, int32_t *c0, int32_t *c1)
{
    int tiles = (n + nr - 1) / nr;
    *r0 = 0;
    *r1 = m;
    *c0 = 0;
    *c1 = n;
    if (tiles >= 2 * nth || m < 4 * mr * nth) {
        int panels = (n + XF_GEMM_PANEL - 1) / XF_GEMM_PANEL, p0, p1;
        xf_split_rows(panels, ith, nth, &p0, &p1);
        *c0 = p0 * XF_GEMM_PANEL;
        *c1 = p1 * XF_GEMM_PANEL < n ? p1 * XF_GEMM_PANEL : n;
    } else {
        int blocks = (m + mr - 1) / mr, b0, b1;
        xf_split_rows(blocks, ith, nth, &b0, &b1);
        *r0 = b0 * mr;
        *r1 = b1 * mr < m ? b1 * mr : m;
    }
    return *r1 > *r0 && *c1 > *c0;
}

/* ---- cblas Linear ---- */

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_one_thread(void)
{
    openblas_set_num_threads(1);
}

/* y = epi(x·Wᵀ + b) on a slice of columns (multiples of 64, all rows, so that OpenBLAS picks
 * the same row kernels whatever nth is). OpenBLAS runs single-threaded inside each pool
 * thread. */
void xf_linear_cblas(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                     const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                     int ith, int nth)
{
    pthread_once(&blas_once, blas_one_thread);
    int r0 = 0, r1 = m, c0, c1;
    int units = (w->n + 63) / 64;
    xf_split_rows(units, ith, nth, &c0, &c1);
    c0 *= 64;
    c1 = c1 * 64 < w->n ? c1 * 64 : w->n;
    if (r1 <= r0 || c1 <= c0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, c1 - c0, w->k, 1.0f,
                x + (size_t)r0 * (size_t)ldx, ldx, w->w + (size_t)c0 * (size_t)w->k, w->k,
                0.0f, y + (size_t)r0 * (size_t)ldy + c0, ldy);
    if (epi == XF_EPI_NONE)
        return;
    for (int i = r0; i < r1; i++) {
        float *yi = y + (size_t)i * (size_t)ldy + c0;
        cblas_epi(0, (size_t)(c1 - c0), c1 - c0, yi, bias + c0, epi, yi);
    }
}
