/* Tests for the kernel tables (src/engine/kernels.c, kernels/ref, kernels/x86): every table
 * this CPU runs (xf_kernels_all) against the reference kernels on odd shapes, unaligned
 * starts, leading dimensions > n, every epilogue, special values, and thread splits nth = 1, 2,
 * 3, 5 (slices run one after the other) that must give bitwise identical results. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../helpers/xf_test.h"
#include "engine/cpu.h"
#include "engine/kernels.h"
#include "engine/kernels/ref/ref.h"

#define EPS32 5.96e-8 /* 2^-24, unit roundoff of fp32 */

static const int sizes[] = { 1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 383, 769 };
#define N_SIZES ((int)(sizeof sizes / sizeof sizes[0]))
/* Thread counts the kernels are split by. The Linear checks run all five entries: the last
 * is nth 1 on a thread without GEMM scratch (kernels.h; the kernels' stack-only paths must
 * give the same bits); the other checks run the first four. */
static const int nths[] = { 1, 2, 3, 5, 1 };
#define N_NTH_LINEAR 5

static const xf_kernels_t *tabs[8];
static const char *names[8];
static int n_tabs;

static void load_tables(void)
{
    n_tabs = xf_kernels_all(tabs, names, 8);
    assert_true(n_tabs >= 2);
    assert_ptr_equal(tabs[0], xf_kernels_ref());
    assert_string_equal(names[0], "ref");
}

/* n floats starting one float past a 64-byte boundary (unaligned on purpose); free with
 * free_u(). */
static float *alloc_u(size_t n)
{
    float *p = aligned_alloc(64, ((n + 1) * sizeof(float) + 63) / 64 * 64);
    assert_non_null(p);
    return p + 1;
}

static void free_u(float *p)
{
    if (p)
        free(p - 1);
}

/* XF_CPU caps the level xf_kernels() uses. The detection runs once per process, so each cap
 * is checked in a forked child before this process initialises anything (this test runs
 * first); the child's exit status is the verdict. */
static int cap_child(const char *cap)
{
    setenv("XF_CPU", cap, 1);
    unsetenv("XF_GEMM");
    const xf_cpu_t *c = xf_cpu();
    const char *path = xf_kernels()->gemm_path;
    if (strcmp(cap, "generic") == 0)
        return c->level == XF_ISA_GENERIC && !xf_kernels()->packs_w ? 0 : 1;
    if (strcmp(cap, "avx2") == 0) {
        if (c->level_max < XF_ISA_AVX2)
            return c->level == c->level_max ? 0 : 2;
        return c->level == XF_ISA_AVX2 && strcmp(path, "own-avx2") == 0 ? 0 : 3;
    }
    /* an unknown value is ignored */
    return c->level == c->level_max ? 0 : 4;
}

static void test_cpu_cap(void **state)
{
    (void)state;
    static const char *const caps[] = { "generic", "avx2", "bogus" };
    for (int i = 0; i < 3; i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(cap_child(caps[i]));
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        if (WEXITSTATUS(st) != 0)
            fail_msg("XF_CPU=%s: child check %d failed", caps[i], WEXITSTATUS(st));
    }
}

static void test_tables(void **state)
{
    (void)state;
    load_tables();
    const xf_cpu_t *cpu = xf_cpu();
    print_message("# cpu %s isa %s (max %s), %d tables, xf_kernels: %s\n", cpu->brand,
                  xf_isa_name(cpu->level), xf_isa_name(cpu->level_max), n_tabs,
                  xf_kernels()->gemm_path);
    for (int t = 0; t < n_tabs; t++) {
        const xf_kernels_t *k = tabs[t];
        assert_non_null(k->gemm_path);
        assert_non_null(k->linear);
        assert_non_null(k->add_layernorm);
        assert_non_null(k->bias_act);
        assert_non_null(k->softmax);
        assert_non_null(k->qkv_split);
        assert_non_null(k->embed);
        assert_non_null(k->attn);
        /* the own kernels promise thread independence and read packed panels; ref and the
         * cblas table do neither (cblas: see nth_exact in kernels.h) */
        int own = strncmp(k->gemm_path, "own-", 4) == 0;
        assert_int_equal(k->packs_w, own);
        assert_int_equal(k->nth_exact, own || t == 0);
    }
    /* xf_kernels() is one of the listed tables (unless XF_GEMM swaps its Linear) */
    int found = 0;
    for (int t = 0; t < n_tabs; t++)
        found |= tabs[t] == xf_kernels();
    const char *gemm = getenv("XF_GEMM");
    assert_true(found || (gemm && *gemm));
    xf_cpu_info_t ci;
    xf_cpu_get_info(&ci);
    assert_string_equal(ci.gemm_path, xf_kernels()->gemm_path);
    assert_true(ci.n_cores >= 1);
    assert_non_null(ci.blas_core);
}

/* The AMX decision (cpu.c) on other CPUs' CPUID/XCR0 values: Sapphire Rapids' (palette 1:
 * 8 tiles of 16 rows x 64 bytes; TMUL K 16, N 64 bytes) is usable; without the OS's XCR0 bits
 * 17/18, AMX-TILE, the palette leaves, or with a palette or TMUL smaller than the kernel's tiles,
 * it is not, with a reason. On this machine: AMX is reported only with the tile data
 * permission Linux gives (no permission: no AMX, and the int8 table is VNNI or lower). */
static void test_amx_detect(void **state)
{
    (void)state;
    const xf_cpu_amx_regs_t spr = {
        .max_leaf = 0x20, .l7_edx = (1u << 22) | (1u << 24) | (1u << 25), .xcr0 = 0x602e7,
        .l1d0_eax = 1, .l1d1_ebx = (8u << 16) | 64, .l1d1_ecx = 16, .l1e0_ebx = (64u << 8) | 16,
    };
    const char *why = "unset";
    const int all = XF_CPU_AMX_TILE | XF_CPU_AMX_INT8 | XF_CPU_AMX_BF16;
    assert_int_equal(xf_cpu_amx_features(&spr, &why), all);
    assert_null(why);
    struct { const char *name; xf_cpu_amx_regs_t in; int want; } cases[12];
    int n = 0;
    for (int i = 0; i < 12; i++)
        cases[i].in = spr;
    cases[n].name = "no AMX-INT8";
    cases[n].in.l7_edx &= ~(1u << 25);
    cases[n++].want = XF_CPU_AMX_TILE | XF_CPU_AMX_BF16;
    cases[n].name = "no AMX-TILE";
    cases[n].in.l7_edx &= ~(1u << 24);
    cases[n++].want = 0;
    cases[n].name = "XCR0 without XTILEDATA";
    cases[n].in.xcr0 &= ~(1ull << 18);
    cases[n++].want = 0;
    cases[n].name = "XCR0 without XTILECFG";
    cases[n].in.xcr0 &= ~(1ull << 17);
    cases[n++].want = 0;
    cases[n].name = "no leaf 1EH";
    cases[n].in.max_leaf = 0x1d;
    cases[n++].want = 0;
    cases[n].name = "no palette 1";
    cases[n].in.l1d0_eax = 0;
    cases[n++].want = 0;
    cases[n].name = "4 tile names";
    cases[n].in.l1d1_ebx = (4u << 16) | 64;
    cases[n++].want = 0;
    cases[n].name = "32 bytes per row";
    cases[n].in.l1d1_ebx = (8u << 16) | 32;
    cases[n++].want = 0;
    cases[n].name = "8 rows";
    cases[n].in.l1d1_ecx = 8;
    cases[n++].want = 0;
    cases[n].name = "tmul_maxk 8";
    cases[n].in.l1e0_ebx = (64u << 8) | 8;
    cases[n++].want = 0;
    cases[n].name = "tmul_maxn 32";
    cases[n].in.l1e0_ebx = (32u << 8) | 16;
    cases[n++].want = 0;
    cases[n].name = "a bigger palette";
    cases[n].in.l1d1_ebx = (16u << 16) | 128;
    cases[n].in.l1d1_ecx = 32;
    cases[n++].want = all;
    for (int i = 0; i < n; i++) {
        why = NULL;
        int got = xf_cpu_amx_features(&cases[i].in, &why);
        XF_CHECK_INT(cases[i].name, got, cases[i].want);
        XF_CHECK(cases[i].name, (got == 0) == (why != NULL));
    }
    xf_cases_end();
    /* this machine */
    const xf_cpu_t *c = xf_cpu();
    int perm = xf_cpu_amx_permission();
    print_message("# amx: cpu %s, amx-tile %d amx-int8 %d, tile data permission: %s\n",
                  c->brand, c->amx_tile, c->amx_int8, perm ? strerror(-perm) : "granted");
    if (c->amx_tile || c->amx_int8)
        assert_int_equal(perm, 0);   /* AMX is reported only with the permission */
    if (perm != 0)
        assert_true(c->level_max < XF_ISA_AMX);
    assert_true(c->level_max < XF_ISA_AMX || (c->amx_tile && c->amx_int8));
}

/* ---- Linear ---- */

/* All nth shares in turn on this thread, with a GEMM scratch installed (as the pool does) or,
 * for ni == N_NTH_LINEAR - 1, without one. */
static void run_linear_ni(const xf_kernels_t *k, int ni, const xf_gemm_w_t *w, int m,
                          const float *x, int ldx, const float *bias, enum xf_epilogue epi,
                          float *y, int ldy)
{
    static void *scratch;   /* kept until exit */
    if (!scratch)
        assert_non_null(scratch = aligned_alloc(64, XF_GEMM_SCRATCH));
    void *prev = xf_gemm_scratch_swap(ni == N_NTH_LINEAR - 1 ? NULL : scratch);
    for (int ith = 0; ith < nths[ni]; ith++)
        k->linear(w, m, x, ldx, bias, epi, y, ldy, ith, nths[ni]);
    xf_gemm_scratch_swap(prev);
}

static void run_linear(const xf_kernels_t *k, int nth, const xf_gemm_w_t *w, int m,
                       const float *x, int ldx, const float *bias, enum xf_epilogue epi,
                       float *y, int ldy)
{
    int ni = 0;
    while (nths[ni] != nth)
        ni++;
    run_linear_ni(k, ni, w, m, x, ldx, bias, epi, y, ldy);
}

/* One GEMM shape through every table, epilogue and nth. Bound per element: the reference
 * sums k in order in fp32, the fast kernels in order with FMA or in blocks (OpenBLAS); both
 * are within ~√k·u·Σ|x·w| of the exact sum (random rounding), so allow 8·√(k+1)·u·S with
 * S = Σ_k |x_k·w_k| + |b|; the activation's slope (≤ 1.13) scales the sum error, and the GELU
 * (the same polynomial on both sides, gelu_poly.h) may land on the other side of a piece
 * boundary, where its pieces meet to within 1.2e-6·max(1, |v|) (|v| < 6 there). */
/* linear_lead (the weight bytes a thread's share reads first, for the forward's prefetch):
 * NULL and 0 for an empty share; otherwise whole 64-byte lines inside the packed (or bf16)
 * panels, thread 0's starting at the first panel, later threads' not before earlier ones'
 * (a column split gives each thread its own panels; a row split the same first block). */
static void check_lead(const xf_gemm_w_t *w, int m)
{
    for (int t = 1; t < n_tabs; t++) {
        if (!tabs[t]->linear_lead)
            continue;
        const char *base = w->packed_bf16 ? (const char *)w->packed_bf16 : (const char *)w->packed;
        size_t bytes = w->packed_bf16 ? w->packed_bf16_bytes : w->packed_bytes;
        for (int ni = 0; ni < 4; ni++) {
            int nth = nths[ni];
            const char *prev = base;
            for (int ith = 0; ith < nth; ith++) {
                const void *p = (const void *)1;
                size_t len = tabs[t]->linear_lead(w, m, ith, nth, &p);
                if (len == 0) {
                    assert_null(p);
                    continue;
                }
                const char *c = p;
                if (c < prev || c + len > base + bytes || (size_t)(c - base) % 64 ||
                    len % 64 || (ith == 0 && c != base))
                    fail_msg("linear_lead %s m=%d n=%d k=%d ith=%d/%d: [%td, +%zu) of %zu",
                             names[t], m, w->n, w->k, ith, nth, c - base, len, bytes);
                prev = c;
            }
        }
    }
}

static void check_linear_group(int m, int n, int kk, int seed, int group)
{
    int ldx = kk + 3, ldy = n + 5;
    float *x = alloc_u((size_t)m * ldx), *wt = alloc_u((size_t)n * kk), *b = alloc_u(n);
    float *yr = alloc_u((size_t)m * ldy), *y = alloc_u((size_t)m * ldy);
    float *y1 = alloc_u((size_t)m * ldy);
    double *s = malloc((size_t)m * n * sizeof(double));
    assert_non_null(s);
    xf_test_fill(x, (size_t)m * ldx, seed, -1.0f, 1.0f);
    xf_test_fill(wt, (size_t)n * kk, seed + 1, -0.5f, 0.5f);
    xf_test_fill(b, n, seed + 2, -2.0f, 2.0f);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double a = fabs(b[j]);
            for (int c = 0; c < kk; c++)
                a += fabs((double)x[(size_t)i * ldx + c] * wt[(size_t)j * kk + c]);
            s[(size_t)i * n + j] = a;
        }
    xf_gemm_w_t w;
    assert_int_equal(xf_gemm_w_init(&w, wt, n, kk), 0);
    xf_gemm_w_deinit(&w);
    assert_int_equal(xf_gemm_w_pack_group(&w, group), 0);
    check_lead(&w, m);
    const float sentinel = -12345.5f;
    for (int epi = 0; epi < XF_EPI_COUNT; epi++) {
        for (size_t i = 0; i < (size_t)m * ldy; i++)
            yr[i] = sentinel;
        run_linear(tabs[0], 1, &w, m, x, ldx, b, (enum xf_epilogue)epi, yr, ldy);
        for (int t = 1; t < n_tabs; t++) {
            for (int ni = 0; ni < N_NTH_LINEAR; ni++) {
                int nth = nths[ni];
                for (size_t i = 0; i < (size_t)m * ldy; i++)
                    y[i] = sentinel;
                run_linear_ni(tabs[t], ni, &w, m, x, ldx, b, (enum xf_epilogue)epi, y, ldy);
                /* The own kernels promise bitwise thread independence; the cblas path only
                 * the rounding bound below, checked for every nth (OpenBLAS's Haswell and
                 * Zen cores sum a column slice differently from the whole). */
                if (ni == 0)
                    memcpy(y1, y, (size_t)m * ldy * sizeof(float));
                else if (tabs[t]->nth_exact &&
                         memcmp(y1, y, (size_t)m * ldy * sizeof(float)) != 0)
                    fail_msg("linear %s m=%d n=%d k=%d epi=%d group=%d: nth=%d%s differs "
                             "from nth=1", names[t], m, n, kk, epi, w.group, nth,
                             ni == N_NTH_LINEAR - 1 ? " without scratch" : "");
                if (ni > 0 && tabs[t]->nth_exact)
                    continue;
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < ldy; j++) {
                        size_t o = (size_t)i * ldy + j;
                        if (j >= n) { /* padding past n is never written */
                            if (y[o] != sentinel)
                                fail_msg("linear %s wrote past n at (%d,%d)", names[t], i, j);
                            continue;
                        }
                        double tol = 8.0 * sqrt(kk + 1.0) * EPS32 * s[(size_t)i * n + j] * 1.2 +
                                     1e-6 * fabs(yr[o]) + 1e-30;
                        if (epi == XF_EPI_BIAS_GELU || epi == XF_EPI_BIAS_GELU_TANH)
                            tol += 7.2e-6;
                        if (!(fabs((double)y[o] - yr[o]) <= tol))
                            fail_msg("linear %s m=%d n=%d k=%d epi=%d nth=%d group=%d (%d,%d): "
                                     "%.9g vs ref %.9g (tol %.3g)", names[t], m, n, kk, epi,
                                     nth, w.group, i, j, y[o], yr[o], tol);
                    }
                }
            }
        }
    }
    xf_gemm_w_deinit(&w);
    free(s);
    free_u(x);
    free_u(wt);
    free_u(b);
    free_u(yr);
    free_u(y);
    free_u(y1);
}

/* Weights packed in 48-column groups (the AVX-512 layout) and in 16-column ones (AVX2's):
 * every own kernel reads both. */
static void check_linear_shape(int m, int n, int kk, int seed)
{
    check_linear_group(m, n, kk, seed, XF_GEMM_GROUP);
    check_linear_group(m, n, kk, seed, XF_GEMM_PANEL);
}

static void test_linear(void **state)
{
    (void)state;
    load_tables();
    for (int i = 0; i < N_SIZES; i++) {
        int m = sizes[i], n = sizes[(i + 5) % N_SIZES], kk = sizes[(i + 9) % N_SIZES];
        if ((double)m * n * kk > 3e6)
            m = 3;
        check_linear_shape(m, n, kk, 100 + i);
    }
    /* M = 1; K not a multiple of the unroll or of the K block; N not a multiple of the panel
     * width (16/48) and below it; more rows than the row split threshold */
    check_linear_shape(1, 769, 383, 7);
    check_linear_shape(1, 5, 769, 8);
    check_linear_shape(17, 97, 513, 9);
    check_linear_shape(65, 49, 257, 10);
    check_linear_shape(129, 33, 65, 11);
    check_linear_shape(200, 17, 31, 12);
    check_linear_shape(9, 145, 1, 13);
    /* row panels of equal height below MR (20 rows: 7, 7, 6 for the 8-row AVX-512 tile, x
     * packed through partial transposes); N cut into several column blocks of equal width;
     * a last K block of 8 */
    check_linear_shape(20, 1000, 40, 14);
    check_linear_shape(46, 530, 264, 15);
    /* more rows than the small-M bound (9 row panels) with two column blocks and a last K
     * block of 14: each tile's share of the next W block's prefetch is below one line a k
     * step in the first K step and several lines a step in the last */
    check_linear_shape(70, 600, 270, 16);
    /* 9..16 rows (every nth gives each thread all of them: the AVX-512 kernel's one-pass
     * 16-column tiles, gemm_avx512.c gemm_small): several K blocks with a short last one, N
     * not a multiple of 16 or 48 and below one group, shares starting inside a group (nth 3
     * and 5), odd K, K below the unroll */
    check_linear_shape(16, 1000, 600, 17);
    check_linear_shape(9, 97, 271, 18);
    check_linear_shape(12, 145, 270, 19);
    check_linear_shape(16, 33, 513, 20);
    check_linear_shape(13, 5, 40, 21);
    check_linear_shape(15, 700, 257, 22);
    check_linear_shape(11, 250, 3, 23);
    /* 2,048 rows or more in a share (the AVX-512 kernel's large-M path, gemm_avx512.c
     * gemm_big: A blocks of 32 row panels, the last partial, K in halves of 128 steps): nth
     * 1 and 2 take it (2 splits the columns, its second share starting inside a group), 3
     * and 5 split the rows and take gemm_block, as does nth 1 without GEMM scratch, so the
     * bitwise nth check compares the two paths; K = 270 is two halves and a 14-step block.
     * Then two column blocks of W (more than 3,072 columns) with one short K block. */
    check_linear_shape(2100, 200, 270, 24);
    check_linear_shape(2050, 3100, 12, 25);
}

/* xf_gemm_w_init rejects bad shapes; M = 0 writes nothing. */
static void test_linear_edges(void **state)
{
    (void)state;
    load_tables();
    float wt[6] = { 1, 2, 3, 4, 5, 6 }, b[2] = { 0.5f, -0.5f }, x[3] = { 1, 1, 1 };
    xf_gemm_w_t w;
    assert_int_equal(xf_gemm_w_init(&w, NULL, 2, 3), -EINVAL);
    assert_int_equal(xf_gemm_w_init(&w, wt, 0, 3), -EINVAL);
    assert_int_equal(xf_gemm_w_init(&w, wt, 2, -1), -EINVAL);
    assert_int_equal(xf_gemm_w_init(&w, wt, 2, 3), 0);
    if (!w.packed)
        assert_int_equal(xf_gemm_w_pack(&w), 0);
    assert_true(w.packed_bytes >= 2 * 3 * sizeof(float));
    for (int t = 0; t < n_tabs; t++) {
        float y[2] = { 7.0f, 7.0f };
        for (int ith = 0; ith < 2; ith++)
            tabs[t]->linear(&w, 0, x, 3, b, XF_EPI_BIAS, y, 2, ith, 2);
        assert_true(y[0] == 7.0f && y[1] == 7.0f);
        for (int ith = 0; ith < 3; ith++)
            tabs[t]->linear(&w, 1, x, 3, b, XF_EPI_BIAS, y, 2, ith, 3);
        /* exact small integers: 1+2+3 + 0.5, 4+5+6 - 0.5 */
        assert_true(y[0] == 6.5f && y[1] == 14.5f);
    }
    xf_gemm_w_deinit(&w);
    assert_null(w.packed);
    xf_gemm_w_deinit(&w);
    xf_gemm_w_deinit(NULL);
}

/* xf_gemm_share: for every nth the shares cover the m×n output exactly once, column
 * splits fall on 16-column panel edges and row splits on mr-row block edges, and both
 * branches of the policy are taken (few rows: columns; many rows, few columns: rows). */
static void test_gemm_share(void **state)
{
    (void)state;
    static const int ms[] = { 1, 7, 16, 63, 64, 65, 200, 1024 };
    static const int ns[] = { 1, 15, 17, 48, 95, 768, 2304 };
    static const int tiles[][2] = { { 8, 48 }, { 6, 16 }, { 4, 16 }, { 16, 32 } };
    int by_rows = 0, by_cols = 0;
    for (size_t t = 0; t < sizeof tiles / sizeof tiles[0]; t++)
        for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
            for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
                for (int nth = 1; nth <= 5; nth++) {
                    int m = ms[a], n = ns[b], mr = tiles[t][0], nr = tiles[t][1];
                    unsigned char *hit = calloc((size_t)m * (size_t)n, 1);
                    assert_non_null(hit);
                    for (int ith = 0; ith < nth; ith++) {
                        int32_t r0, r1, c0, c1;
                        int any = xf_gemm_share(m, n, mr, nr, ith, nth, &r0, &r1, &c0, &c1);
                        if (!any)
                            continue;
                        assert_true(0 <= r0 && r0 < r1 && r1 <= m);
                        assert_true(0 <= c0 && c0 < c1 && c1 <= n);
                        assert_true(c0 % XF_GEMM_PANEL == 0 && r0 % mr == 0);
                        if (r1 - r0 < m)
                            by_rows++;
                        if (c1 - c0 < n)
                            by_cols++;
                        for (int i = r0; i < r1; i++)
                            for (int j = c0; j < c1; j++)
                                hit[(size_t)i * (size_t)n + (size_t)j]++;
                    }
                    for (size_t e = 0; e < (size_t)m * (size_t)n; e++)
                        assert_int_equal(hit[e], 1);
                    free(hit);
                }
    assert_true(by_rows > 0 && by_cols > 0);
}

/* bf16 rounding: nearest, ties to even; NaN stays NaN, infinities stay. */
static void test_bf16_bits(void **state)
{
    (void)state;
    const uint32_t in[] = { 0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u,
                            0x7f800000u, 0xff800000u, 0x7f7fffffu, 0x00000001u, 0x80000000u };
    const uint16_t want[] = { 0x3f80, 0x3f80, 0x3f82, 0x3f80, 0x3f81,
                              0x7f80, 0xff80, 0x7f80, 0x0000, 0x8000 };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        float f;
        memcpy(&f, &in[i], sizeof f);
        assert_int_equal(xf_bf16_bits(f), want[i]);
    }
    assert_true(isnan(xf_bf16_float(xf_bf16_bits(NAN))));
    assert_true(xf_bf16_float(0x3f80) == 1.0f);
}

/* The bf16 weights: a table with bf16_w gives xf_linear_bf16_ref's result (within the fp32
 * GEMM bound), bitwise the same for any nth, visibly not the fp32 result. K = 513 ends in a
 * one-k block (odd pair), 31 is odd in one block; m = 129 takes the row split. Without a bf16
 * kernel in the table in use (XF_CPU=avx2, generic), xf_gemm_w_add_bf16 says -ENOTSUP and
 * keeps the fp32 panels. */
static void check_bf16_shape(int m, int n, int kk, unsigned seed, int group)
{
    float *x = alloc_u((size_t)m * kk), *wt = alloc_u((size_t)n * kk), *b = alloc_u(n);
    float *yr = alloc_u((size_t)m * n), *yf = alloc_u((size_t)m * n), *y = alloc_u((size_t)m * n);
    float *y1 = alloc_u((size_t)m * n);
    xf_test_fill(x, (size_t)m * kk, seed, -1.0f, 1.0f);
    xf_test_fill(wt, (size_t)n * kk, seed + 1, -0.5f, 0.5f);
    xf_test_fill(b, n, seed + 2, -2.0f, 2.0f);
    xf_gemm_w_t w;
    assert_int_equal(xf_gemm_w_init(&w, wt, n, kk), 0);
    if (group && w.packed) {   /* the other group width than the table's */
        xf_gemm_w_deinit(&w);
        assert_int_equal(xf_gemm_w_pack_group(&w, group), 0);
    }
    int rc = xf_gemm_w_add_bf16(&w);
    if (!xf_kernels()->bf16_w || !xf_kernels()->packs_w) {
        assert_int_equal(rc, -ENOTSUP);
        assert_null(w.packed_bf16);
        assert_true(w.packed || !xf_kernels()->packs_w);
    } else {
        assert_int_equal(rc, 0);
        assert_non_null(w.packed_bf16);
        assert_null(w.packed);   /* replaced */
        check_lead(&w, m);
    }
    xf_linear_bf16_ref(&w, m, x, kk, b, XF_EPI_BIAS, yr, n, 0, 1);
    xf_linear_ref(&w, m, x, kk, b, XF_EPI_BIAS, yf, n, 0, 1);
    for (int t = 1; t < n_tabs && w.packed_bf16; t++) {
        if (!tabs[t]->bf16_w)
            continue;
        for (int ni = 0; ni < N_NTH_LINEAR; ni++) {
            run_linear_ni(tabs[t], ni, &w, m, x, kk, b, XF_EPI_BIAS, y, n);
            if (ni == 0)
                memcpy(y1, y, (size_t)m * n * sizeof(float));
            else if (memcmp(y1, y, (size_t)m * n * sizeof(float)) != 0)
                fail_msg("bf16 %s m=%d n=%d k=%d: nth=%d%s differs from nth=1", names[t], m,
                         n, kk, nths[ni], ni == N_NTH_LINEAR - 1 ? " without scratch" : "");
        }
        int off_fp32 = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double a = fabs(b[j]);
                for (int c = 0; c < kk; c++)
                    a += fabs((double)x[(size_t)i * kk + c] * wt[(size_t)j * kk + c]);
                double tol = 8.0 * sqrt(kk + 1.0) * EPS32 * a * 1.2 + 1e-30;
                size_t o = (size_t)i * n + j;
                if (!(fabs((double)y1[o] - yr[o]) <= tol))
                    fail_msg("bf16 %s m=%d n=%d k=%d (%d,%d): %.9g vs ref %.9g (tol %.3g)",
                             names[t], m, n, kk, i, j, y1[o], yr[o], tol);
                off_fp32 += fabs((double)y1[o] - yf[o]) > tol;
            }
        assert_true(off_fp32 > 0);   /* the copy was read */
    }
    xf_gemm_w_deinit(&w);
    assert_null(w.packed_bf16);
    free_u(x);
    free_u(wt);
    free_u(b);
    free_u(yr);
    free_u(yf);
    free_u(y);
    free_u(y1);
}

static void test_linear_bf16(void **state)
{
    (void)state;
    load_tables();
    check_bf16_shape(1, 769, 383, 21, 0);
    check_bf16_shape(7, 97, 513, 22, 0);
    check_bf16_shape(17, 145, 31, 23, 0);
    check_bf16_shape(64, 48, 256, 24, 0);
    check_bf16_shape(3, 5, 1, 25, 0);
    check_bf16_shape(129, 33, 65, 26, 0);
    /* several column blocks and K blocks, splits off the 48-column groups for nth 3 and 5 */
    check_bf16_shape(20, 1000, 600, 27, 0);
    check_bf16_shape(70, 600, 271, 31, 0);   /* as check_linear_shape(70, 600, 270): odd kc */
    /* bf16 panels made from 16-column groups */
    check_bf16_shape(20, 1000, 600, 28, XF_GEMM_PANEL);
    check_bf16_shape(7, 97, 513, 29, XF_GEMM_PANEL);
    /* 9..16 rows: bf16 panels keep the two-panel path (gemm_avx512.c) */
    check_bf16_shape(16, 300, 271, 32, 0);
    check_bf16_shape(10, 61, 600, 33, 0);
    /* the large-M path (nth 1 and 2) against gemm_block (3 and 5, and nth 1
     * without GEMM scratch), odd last K block */
    check_bf16_shape(2100, 200, 271, 34, 0);
}

/* The packed layout of ref.h, element by element, written out here independently of the
 * packer: K blocks of 256, groups of G = 48 or 16 columns (the last one narrower), k-major
 * inside a group, zero columns past n; the bf16 copy in k pairs with a zero pad k for an odd
 * block. */
static void check_pack(int n, int K, int G)
{
    const int npad = (n + 15) / 16 * 16;
    float *wt = alloc_u((size_t)n * K);
    xf_test_fill(wt, (size_t)n * K, 7 + n + K, -1.0f, 1.0f);
    xf_gemm_w_t w;
    assert_int_equal(xf_gemm_w_init(&w, wt, n, K), 0);
    xf_gemm_w_deinit(&w);
    assert_int_equal(xf_gemm_w_pack_group(&w, G), 0);
    assert_int_equal(w.group, G);
    assert_int_equal(w.packed_bytes, (size_t)npad * K * sizeof(float));
    assert_int_equal((uintptr_t)w.packed % 64, 0);
    for (int k0 = 0; k0 < K; k0 += 256) {
        const int kc = K - k0 < 256 ? K - k0 : 256;
        for (int c = 0; c < npad; c++) {
            const int g = c / G, gw = npad - G * g < G ? npad - G * g : G;
            for (int kk = 0; kk < kc; kk++) {
                size_t o = (size_t)k0 * npad + (size_t)G * g * kc + (size_t)kk * gw +
                           (size_t)(c - G * g);
                float want = c < n ? wt[(size_t)c * K + k0 + kk] : 0.0f;
                if (memcmp(&w.packed[o], &want, sizeof want) != 0)
                    fail_msg("pack G=%d n=%d k=%d: W[%d][%d] at %zu is %g, want %g", G, n, K, c,
                             k0 + kk, o, w.packed[o], want);
            }
        }
    }
    if (xf_gemm_w_add_bf16(&w) == 0) {
        const uint16_t *h = w.packed_bf16;
        assert_non_null(h);
        assert_int_equal((uintptr_t)h % 64, 0);
        for (int k0 = 0; k0 < K; k0 += 256) {
            const int kc = K - k0 < 256 ? K - k0 : 256, kc2 = (kc + 1) / 2 * 2;
            for (int c = 0; c < npad; c++) {
                const int g = c / G, gw = npad - G * g < G ? npad - G * g : G;
                for (int kk = 0; kk < kc2; kk++) {
                    size_t o = (size_t)k0 * npad +
                               2 * ((size_t)G * g * kc2 / 2 + (size_t)(kk / 2) * gw +
                                    (size_t)(c - G * g)) + (size_t)(kk % 2);
                    uint16_t want = c < n && kk < kc ? xf_bf16_bits(wt[(size_t)c * K + k0 + kk])
                                                     : 0;
                    if (o >= w.packed_bf16_bytes / 2 || h[o] != want)
                        fail_msg("bf16 pack G=%d n=%d k=%d: W[%d][%d] at %zu", G, n, K, c,
                                 k0 + kk, o);
                }
            }
        }
    }
    xf_gemm_w_deinit(&w);
    free_u(wt);
}

/* check_pack for N below, at and across the group widths (1, 5, 16, 17, 33, 47, 48, 49, 95,
 * 97, 130), K within one block, odd, and across blocks (1, 3, 256, 300, 513). xf_gemm_w_init
 * packs for the table in use (its w_group); other widths are refused. */
static void test_pack_layout(void **state)
{
    (void)state;
    static const int ns[] = { 1, 5, 16, 17, 33, 47, 48, 49, 95, 97, 130 };
    static const int ks[] = { 1, 3, 256, 300, 513 };
    float wt[6] = { 1, 2, 3, 4, 5, 6 };
    xf_gemm_w_t w;
    assert_int_equal(xf_gemm_w_init(&w, wt, 2, 3), 0);
    if (xf_kernels()->packs_w)
        assert_int_equal(w.group, xf_kernels()->w_group);
    xf_gemm_w_deinit(&w);
    assert_int_equal(xf_gemm_w_pack_group(&w, 32), -EINVAL);
    assert_null(w.packed);
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            check_pack(ns[a], ks[b], XF_GEMM_GROUP);
            check_pack(ns[a], ks[b], XF_GEMM_PANEL);
        }
}

/* A stacked weight (the fused Q/K/V GEMM: parts of 5, 17 and 9 rows, K across two K blocks)
 * gives, bitwise, what the three parts give one by one, in every table that packs weights and
 * for any nth; a table that does not pack gets -ENOTSUP. */
static void test_linear_stacked(void **state)
{
    (void)state;
    load_tables();
    enum { M = 13, K = 300, N = 31, LDY = N + 2 };
    const int32_t rows[3] = { 5, 17, 9 };
    float *x = alloc_u((size_t)M * K), *wt = alloc_u((size_t)N * K), *b = alloc_u(N);
    float *ys = alloc_u((size_t)M * LDY), *yp = alloc_u((size_t)M * LDY);
    xf_test_fill(x, (size_t)M * K, 41, -1.0f, 1.0f);
    xf_test_fill(wt, (size_t)N * K, 42, -0.5f, 0.5f);
    xf_test_fill(b, N, 43, -2.0f, 2.0f);
    const float *parts[3] = { wt, wt + (size_t)5 * K, wt + (size_t)22 * K };
    xf_gemm_w_t st, pw[3];
    int32_t bad = 0;
    assert_int_equal(xf_gemm_w_init_stacked(&st, parts, &bad, 1, K), -EINVAL);
    int rc = xf_gemm_w_init_stacked(&st, parts, rows, 3, K);
    if (!xf_kernels()->packs_w) {
        assert_int_equal(rc, -ENOTSUP);
    } else {
        assert_int_equal(rc, 0);
        assert_int_equal(st.n, N);
        assert_null(st.w);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(xf_gemm_w_init(&pw[i], parts[i], rows[i], K), 0);
            if (!pw[i].packed)
                assert_int_equal(xf_gemm_w_pack(&pw[i]), 0);
        }
        for (int t = 0; t < n_tabs; t++) {
            if (!tabs[t]->packs_w)
                continue;
            for (int ni = 0; ni < 3; ni++) {
                memset(ys, 0, (size_t)M * LDY * sizeof(float));
                memset(yp, 0, (size_t)M * LDY * sizeof(float));
                run_linear(tabs[t], nths[ni], &st, M, x, K, b, XF_EPI_BIAS, ys, LDY);
                for (int i = 0, c0 = 0; i < 3; c0 += rows[i++])
                    run_linear(tabs[t], nths[ni], &pw[i], M, x, K, b + c0, XF_EPI_BIAS,
                               yp + c0, LDY);
                if (memcmp(ys, yp, (size_t)M * LDY * sizeof(float)) != 0)
                    fail_msg("stacked linear %s nth=%d differs from its parts", names[t],
                             nths[ni]);
            }
        }
        for (int i = 0; i < 3; i++)
            xf_gemm_w_deinit(&pw[i]);
        xf_gemm_w_deinit(&st);
    }
    free_u(x);
    free_u(wt);
    free_u(b);
    free_u(ys);
    free_u(yp);
}

/* ---- add_layernorm, embed ---- */

/* Bound: mean and variance summed in vector lanes vs in order (both fp32): relative error of
 * each ≲ √d·u; the normalised value then is within ~1e-5 of the reference for |ref| ~ 1;
 * allow 2e-5·(1 + |ref|). */
static int ln_close(float got, float ref)
{
    return fabs((double)got - ref) <= 2e-5 * (1.0 + fabs(ref));
}

static void test_add_layernorm(void **state)
{
    (void)state;
    load_tables();
    const int rows = 11;
    for (int si = 0; si < N_SIZES; si++) {
        int d = sizes[si], ld = d + 7;
        size_t nel = (size_t)rows * ld;
        float *x = alloc_u(nel), *res = alloc_u(nel), *bias = alloc_u(d), *g = alloc_u(d);
        float *b = alloc_u(d), *ref = alloc_u(nel), *out = alloc_u(nel), *tmp = alloc_u(nel);
        xf_test_fill(x, nel, si + 1, -3.0f, 5.0f);
        xf_test_fill(res, nel, si + 2, -1.0f, 1.0f);
        xf_test_fill(bias, d, si + 3, -0.5f, 0.5f);
        xf_test_fill(g, d, si + 4, 0.5f, 1.5f);
        xf_test_fill(b, d, si + 5, -0.2f, 0.2f);
        for (int variant = 0; variant < 4; variant++) {
            const float *bi = (variant & 1) ? bias : NULL;
            const float *rs = (variant & 2) ? res : NULL;
            xf_add_layernorm_ref(0, rows, d, x, ld, bi, rs, ld, g, b, 1e-5f, ref, ld);
            for (int t = 1; t < n_tabs; t++) {
                for (int ni = 0; ni < 4; ni++) {
                    int nth = nths[ni];
                    /* out aliases x in one case, res in another, separate otherwise */
                    int alias = ni % 3;
                    float *dst = out;
                    const float *xs = x, *rr = rs;
                    memcpy(tmp, alias == 2 && rs ? res : x, nel * sizeof(float));
                    if (alias == 1) {
                        dst = tmp;
                        xs = tmp;
                    } else if (alias == 2 && rs) {
                        dst = tmp;
                        rr = tmp;
                    }
                    for (int ith = 0; ith < nth; ith++) {
                        int r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
                        tabs[t]->add_layernorm(r0, r1, d, xs, ld, bi, rr, ld, g, b, 1e-5f, dst,
                                               ld);
                    }
                    for (int r = 0; r < rows; r++)
                        for (int c = 0; c < d; c++) {
                            size_t o = (size_t)r * ld + c;
                            if (!ln_close(dst[o], ref[o]))
                                fail_msg("add_layernorm %s d=%d v=%d alias=%d (%d,%d): %.9g vs "
                                         "%.9g", names[t], d, variant, alias, r, c, dst[o],
                                         ref[o]);
                        }
                }
            }
        }
        free_u(x);
        free_u(res);
        free_u(bias);
        free_u(g);
        free_u(b);
        free_u(ref);
        free_u(out);
        free_u(tmp);
    }
}

static void test_embed(void **state)
{
    (void)state;
    load_tables();
    const int vocab = 50, npos = 40, ntok = 23;
    int32_t ids[23], pos[23], types[23];
    for (int t = 0; t < ntok; t++) {
        ids[t] = (t * 7 + 3) % vocab;
        pos[t] = t % npos;
        types[t] = t % 2;
    }
    for (int si = 0; si < N_SIZES; si++) {
        int d = sizes[si];
        float *we = alloc_u((size_t)vocab * d), *pe = alloc_u((size_t)npos * d);
        float *te = alloc_u((size_t)2 * d), *g = alloc_u(d), *b = alloc_u(d);
        float *ref = alloc_u((size_t)ntok * d), *out = alloc_u((size_t)ntok * d);
        xf_test_fill(we, (size_t)vocab * d, si + 11, -1.0f, 1.0f);
        xf_test_fill(pe, (size_t)npos * d, si + 12, -0.3f, 0.3f);
        xf_test_fill(te, (size_t)2 * d, si + 13, -0.1f, 0.1f);
        xf_test_fill(g, d, si + 14, 0.8f, 1.2f);
        xf_test_fill(b, d, si + 15, -0.1f, 0.1f);
        for (int variant = 0; variant < 3; variant++) {
            const float *tt = variant == 2 ? NULL : te;
            const float *gg = variant == 0 ? NULL : g;
            xf_embed_ref(0, ntok, d, ids, pos, types, we, pe, tt, gg, b, 1e-12f, ref);
            for (int t = 1; t < n_tabs; t++) {
                for (int ni = 0; ni < 4; ni++) {
                    int nth = nths[ni];
                    memset(out, 0, (size_t)ntok * d * sizeof(float));
                    for (int ith = 0; ith < nth; ith++) {
                        int t0 = ntok * ith / nth, t1 = ntok * (ith + 1) / nth;
                        tabs[t]->embed(t0, t1, d, ids, pos, types, we, pe, tt, gg, b, 1e-12f,
                                       out);
                    }
                    for (size_t i = 0; i < (size_t)ntok * d; i++) {
                        /* without LayerNorm the sums are the same adds in the same order:
                         * exact; with it, the LayerNorm bound */
                        int ok = gg ? ln_close(out[i], ref[i]) : out[i] == ref[i];
                        if (!ok)
                            fail_msg("embed %s d=%d v=%d at %zu: %.9g vs %.9g", names[t], d,
                                     variant, i, out[i], ref[i]);
                    }
                }
            }
        }
        free_u(we);
        free_u(pe);
        free_u(te);
        free_u(g);
        free_u(b);
        free_u(ref);
        free_u(out);
    }
}

/* ---- bias_act ---- */

static void test_bias_act(void **state)
{
    (void)state;
    load_tables();
    static const float special[] = { 0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, -1e-7f, 0.5f, -0.5f,
                                     3.0f, -3.0f, 5.5f, -5.5f, 9.0f, -9.0f, 10.0f, -10.0f,
                                     13.0f, -13.0f, 20.0f, -20.0f, 50.0f, -50.0f, 100.0f,
                                     -100.0f, 1e4f, -1e4f, 3e38f, -3e38f };
    const int nsp = (int)(sizeof special / sizeof special[0]);
    for (int si = 0; si < N_SIZES; si++) {
        int d = sizes[si], rows = 5;
        size_t n = (size_t)rows * d;
        float *x = alloc_u(n), *bias = alloc_u(d), *ref = alloc_u(n), *y = alloc_u(n);
        xf_test_fill(x, n, si + 21, -8.0f, 8.0f);
        for (size_t i = 0; i < n; i += 3)
            x[i] = special[(i / 3) % (size_t)nsp];
        xf_test_fill(bias, d, si + 22, -0.5f, 0.5f);
        for (int act = XF_EPI_BIAS; act < XF_EPI_COUNT; act++) {
            for (int wb = 0; wb < 2; wb++) {
                const float *bb = wb ? bias : NULL;
                xf_bias_act_ref(0, n, d, x, bb, (enum xf_epilogue)act, ref);
                for (int t = 1; t < n_tabs; t++) {
                    for (int ni = 0; ni < 4; ni++) {
                        int nth = nths[ni];
                        int inplace = ni == 1;
                        float *dst = y;
                        if (inplace)
                            memcpy(y, x, n * sizeof(float));
                        for (int ith = 0; ith < nth; ith++) {
                            size_t i0 = n * ith / nth, i1 = n * (ith + 1) / nth;
                            tabs[t]->bias_act(i0, i1, d, inplace ? y : x, bb,
                                              (enum xf_epilogue)act, dst);
                        }
                        /* the same fp32 operations as the reference (the GELUs are
                         * gelu_poly.h's polynomial on every ISA): equal (up to the sign
                         * of a zero: the reference adds a 0 bias where the kernels add none) */
                        for (size_t i = 0; i < n; i++) {
                            if (!(dst[i] == ref[i]))
                                fail_msg("bias_act %s act=%d bias=%d d=%d x=%.9g: %.9g vs ref "
                                         "%.9g", names[t], act, wb, d, x[i], dst[i], ref[i]);
                        }
                    }
                }
            }
        }
        free_u(x);
        free_u(bias);
        free_u(ref);
        free_u(y);
    }
}

/* The reference GELU itself (the piecewise polynomial of gelu_poly.h, shared by fp32 and int8)
 * against a double-precision evaluation of both forms: |error| ≤ 6e-7·max(1, |x|). */
static void test_gelu_ref(void **state)
{
    (void)state;
    double worst_e = 0.0, worst_t = 0.0;
    for (int i = -4000; i <= 4000; i++) {
        float x = (float)i * 0.005f;
        double e = 0.5 * x * erfc(-x / sqrt(2.0)); /* = 0.5x(1 + erf(x/√2)) */
        double u = sqrt(2.0 / M_PI) * (x + 0.044715 * (double)x * x * x);
        double tt = x / (1.0 + exp(-2.0 * u)); /* = 0.5x(1 + tanh(u)) */
        double tol = 6e-7 * fmax(1.0, fabs(x));
        double de = fabs(xf_act_ref(XF_EPI_BIAS_GELU, x) - e) / tol;
        double dt = fabs(xf_act_ref(XF_EPI_BIAS_GELU_TANH, x) - tt) / tol;
        if (!(de <= 1.0))
            fail_msg("gelu(%.9g) = %.9g, want %.9g", x, xf_act_ref(XF_EPI_BIAS_GELU, x), e);
        if (!(dt <= 1.0))
            fail_msg("gelu_tanh(%.9g) = %.9g, want %.9g", x,
                     xf_act_ref(XF_EPI_BIAS_GELU_TANH, x), tt);
        worst_e = fmax(worst_e, de);
        worst_t = fmax(worst_t, dt);
    }
    /* a bound that holds with room to spare would not notice a worse table */
    assert_true(worst_e > 0.1 && worst_t > 0.1);
    assert_true(xf_act_ref(XF_EPI_BIAS_GELU, 0.0f) == 0.0f);
    assert_true(fabsf(xf_act_ref(XF_EPI_BIAS_GELU, 1.0f) - 0.8413447f) < 1e-6f);
    assert_true(xf_act_ref(XF_EPI_BIAS_GELU, 40.0f) == 40.0f);
    assert_true(isnan(xf_act_ref(XF_EPI_BIAS_GELU, NAN)));
    assert_true(xf_act_ref(XF_EPI_BIAS_GELU, INFINITY) == INFINITY);
}

/* ---- softmax ---- */

/* Bound: exp within ~2 ulp, and the fp32 sums (in lanes vs in order; the in-order one alone
 * is off by ~√n·u typically): 1e-6 + 8·√n·u relative. */
static void test_softmax(void **state)
{
    (void)state;
    load_tables();
    for (int si = 0; si < N_SIZES; si++) {
        int n = sizes[si], ld = n + 3, rows = 9;
        size_t nel = (size_t)rows * ld;
        float *x = alloc_u(nel), *ref = alloc_u(nel), *y = alloc_u(nel);
        xf_test_fill(x, nel, si + 31, -10.0f, 10.0f);
        /* row 1: large values; row 2: -inf entries (masked); row 3: all -inf; row 4: huge
         * spread; row 5: -1e4 mask values */
        for (int j = 0; j < n; j++) {
            x[1 * ld + j] = 80.0f + (float)(j % 5);
            if (j % 3 == 1)
                x[2 * ld + j] = -INFINITY;
            x[3 * ld + j] = -INFINITY;
            x[4 * ld + j] = (j % 2) ? 1e4f : -1e4f;
            if (j % 2)
                x[5 * ld + j] = -1e4f;
        }
        memcpy(ref, x, nel * sizeof(float));
        xf_softmax_ref(0, rows, n, ref, ld);
        for (int t = 1; t < n_tabs; t++) {
            for (int ni = 0; ni < 4; ni++) {
                int nth = nths[ni];
                memcpy(y, x, nel * sizeof(float));
                for (int ith = 0; ith < nth; ith++)
                    tabs[t]->softmax(rows * ith / nth, rows * (ith + 1) / nth, n, y, ld);
                for (int r = 0; r < rows; r++) {
                    double sum = 0;
                    for (int j = 0; j < ld; j++) {
                        size_t o = (size_t)r * ld + j;
                        if (j >= n) {
                            assert_true(memcmp(&y[o], &x[o], sizeof(float)) == 0);
                            continue;
                        }
                        double tol = (1e-6 + 8.0 * sqrt((double)n) * EPS32) * ref[o] + 1e-38;
                        if (isnan(y[o]) || !(fabs((double)y[o] - ref[o]) <= tol))
                            fail_msg("softmax %s n=%d (%d,%d): %.9g vs %.9g", names[t], n, r, j,
                                     y[o], ref[o]);
                        sum += y[o];
                    }
                    /* rows sum to 1 (all -inf row: 0) within rounding of n terms */
                    double want = r == 3 ? 0.0 : 1.0;
                    assert_true(fabs(sum - want) <= 1e-5);
                }
            }
        }
        free_u(x);
        free_u(ref);
        free_u(y);
    }
}

/* ---- qkv_split ---- */

static void test_qkv_split(void **state)
{
    (void)state;
    load_tables();
    static const int hd[][2] = { { 1, 1 }, { 3, 7 }, { 2, 16 }, { 5, 17 }, { 12, 64 },
                                 { 4, 33 }, { 1, 65 } };
    for (size_t c = 0; c < sizeof hd / sizeof hd[0]; c++) {
        int h = hd[c][0], d = hd[c][1], ntok = 13, ld = h * d + 5;
        size_t nin = (size_t)ntok * ld, nout = (size_t)h * ntok * d;
        float *q = alloc_u(nin), *k = alloc_u(nin), *v = alloc_u(nin);
        float *Q0 = alloc_u(nout), *K0 = alloc_u(nout), *V0 = alloc_u(nout);
        float *Q = alloc_u(nout), *K = alloc_u(nout), *V = alloc_u(nout);
        xf_test_fill(q, nin, c + 41, -2.0f, 2.0f);
        xf_test_fill(k, nin, c + 42, -2.0f, 2.0f);
        xf_test_fill(v, nin, c + 43, -2.0f, 2.0f);
        float sc = 1.0f / sqrtf((float)d);
        xf_qkv_split_ref(0, ntok, ntok, h, d, q, k, v, ld, sc, Q0, K0, V0);
        for (int t = 1; t < n_tabs; t++) {
            for (int ni = 0; ni < 4; ni++) {
                int nth = nths[ni];
                memset(Q, 0, nout * 4);
                memset(K, 0, nout * 4);
                memset(V, 0, nout * 4);
                for (int ith = 0; ith < nth; ith++)
                    tabs[t]->qkv_split(ntok * ith / nth, ntok * (ith + 1) / nth, ntok, h, d, q,
                                       k, v, ld, sc, Q, K, V);
                /* copies and one multiply per element: bitwise equal */
                assert_memory_equal(Q, Q0, nout * sizeof(float));
                assert_memory_equal(K, K0, nout * sizeof(float));
                assert_memory_equal(V, V0, nout * sizeof(float));
            }
        }
        free_u(q);
        free_u(k);
        free_u(v);
        free_u(Q0);
        free_u(K0);
        free_u(V0);
        free_u(Q);
        free_u(K);
        free_u(V);
    }
}

XF_TEST_MAIN(cmocka_unit_test(test_cpu_cap), cmocka_unit_test(test_tables),
             cmocka_unit_test(test_amx_detect),
             cmocka_unit_test(test_linear), cmocka_unit_test(test_linear_edges),
             cmocka_unit_test(test_linear_stacked), cmocka_unit_test(test_pack_layout),
             cmocka_unit_test(test_gemm_share),
             cmocka_unit_test(test_bf16_bits), cmocka_unit_test(test_linear_bf16),
             cmocka_unit_test(test_add_layernorm), cmocka_unit_test(test_embed),
             cmocka_unit_test(test_bias_act), cmocka_unit_test(test_gelu_ref),
             cmocka_unit_test(test_softmax), cmocka_unit_test(test_qkv_split))
