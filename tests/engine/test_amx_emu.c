/* Tests for the test-only AMX emulator (tests/engine/amx_emu.c) that runs the AMX int8 kernel in
 * test_qgemm on CPUs without AMX: the instructions against a plain int64 computation of the
 * Intel SDM's definitions (TDPB*D with wrap-around, partial tiles, row strides, start_row),
 * every fault the hardware raises (each reported, the instruction without effect; the default
 * handler aborts the process) and the per-thread tile state. Plain C: runs on any x86-64. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../helpers/xf_test.h"
#include "amx_emu.h"

/* ---- the recording fault handler (per thread, as the emulator's state) ---- */

static _Thread_local int n_faults;
static _Thread_local char last_exc[8], last_insn[16];

static void record_fault(const char *insn, const char *exc, const char *why)
{
    (void)why;
    n_faults++;
    snprintf(last_exc, sizeof last_exc, "%s", exc);
    snprintf(last_insn, sizeof last_insn, "%s", insn);
}

/* One instruction that must fault with exc. */
#define EXPECT_FAULT(insn_call, exc)                                                          \
    do {                                                                                      \
        int before_ = n_faults;                                                               \
        insn_call;                                                                            \
        if (n_faults != before_ + 1 || strcmp(last_exc, (exc)) != 0)                          \
            fail_msg("%s: expected one %s fault, got %d (last %s)", #insn_call, (exc),        \
                     n_faults - before_, last_exc);                                           \
    } while (0)

#define EXPECT_NO_FAULT(insn_call)                                                            \
    do {                                                                                      \
        int before_ = n_faults;                                                               \
        insn_call;                                                                            \
        if (n_faults != before_)                                                              \
            fail_msg("%s: unexpected %s fault in %s", #insn_call, last_exc, last_insn);       \
    } while (0)

/* A palette-1 configuration: tiles t with rows[t] × colsb[t] (0 × 0: unused). */
struct cfg {
    uint8_t b[64];
};

static void cfg_init(struct cfg *c, int start_row)
{
    memset(c, 0, sizeof *c);
    c->b[0] = 1;
    c->b[1] = (uint8_t)start_row;
}

static void cfg_tile(struct cfg *c, int t, int rows, int colsb)
{
    c->b[16 + 2 * t] = (uint8_t)(colsb & 0xff);
    c->b[17 + 2 * t] = (uint8_t)(colsb >> 8);
    c->b[48 + t] = (uint8_t)rows;
}

static uint64_t rng_state;

static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* TDPB<A><B>D on random tiles of every shape class (M, K, N from 1 to 16, row strides longer
 * than the rows, C starting near ±2^31 so that the sums wrap), against int64 sums taken
 * modulo 2^32; TILESTORED writes colsb bytes per row and nothing past them. */
static void test_dot_products(void **state)
{
    (void)state;
    xf_amxemu_set_fault_handler(NULL);
    static void (*const fns[4])(int, int, int) = { xf_amxemu_tdpbssd, xf_amxemu_tdpbsud,
                                                   xf_amxemu_tdpbusd, xf_amxemu_tdpbuud };
    static const int sgn_a[4] = { 1, 1, 0, 0 }, sgn_b[4] = { 1, 0, 1, 0 };
    static const int dims[][3] = { { 16, 16, 16 }, { 1, 1, 1 }, { 3, 16, 5 }, { 16, 1, 16 },
                                   { 7, 9, 13 },   { 16, 16, 1 }, { 1, 16, 16 }, { 11, 4, 16 } };
    rng_state = 12345;
    uint8_t a[16 * 80], b[16 * 80];
    uint8_t cmem[16 * 72];
    int32_t c0[16][16];
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        int M = dims[d][0], K = dims[d][1], N = dims[d][2];
        long sa = 4 * K + 16, sb = 4 * N + 12, sc = 4 * N + 8;
        for (int f = 0; f < 4; f++) {
            for (size_t i = 0; i < sizeof a; i++) {
                a[i] = (uint8_t)rnd();
                b[i] = (uint8_t)rnd();
            }
            if (d == 0)   /* extremes: every product at its largest magnitude */
                for (size_t i = 0; i < sizeof a; i++) {
                    a[i] = sgn_a[f] ? 0x80 : 0xff;
                    b[i] = sgn_b[f] ? 0x80 : 0xff;
                }
            memset(cmem, 0xEE, sizeof cmem);
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    c0[m][n] = (int32_t)(rnd() | (m & 1 ? 0x7ff00000u : 0x80000000u));
                    memcpy(cmem + m * sc + 4 * n, &c0[m][n], 4);
                }
            struct cfg cf;
            cfg_init(&cf, 0);
            cfg_tile(&cf, 0, M, 4 * N);   /* C */
            cfg_tile(&cf, 5, M, 4 * K);   /* A */
            cfg_tile(&cf, 7, K, 4 * N);   /* B */
            xf_amxemu_ldtilecfg(&cf);
            xf_amxemu_tileloadd(5, a, sa);
            xf_amxemu_tileloadd(7, b, sb);
            xf_amxemu_tileloadd(0, cmem, sc);
            fns[f](0, 5, 7);
            fns[f](0, 5, 7);   /* twice: accumulates */
            xf_amxemu_tilestored(0, cmem, sc);
            xf_amxemu_tilerelease();
            for (int m = 0; m < M; m++) {
                for (int n = 0; n < N; n++) {
                    int64_t s = c0[m][n];
                    for (int k = 0; k < 4 * K; k++) {
                        int x = sgn_a[f] ? (int8_t)a[m * sa + k] : a[m * sa + k];
                        int w = sgn_b[f] ? (int8_t)b[(k / 4) * sb + 4 * n + k % 4]
                                         : b[(k / 4) * sb + 4 * n + k % 4];
                        s += 2 * (int64_t)x * w;
                    }
                    uint32_t want = (uint32_t)(uint64_t)s, got;
                    memcpy(&got, cmem + m * sc + 4 * n, 4);
                    if (got != want)
                        fail_msg("fn %d M %d K %d N %d: C[%d][%d] = %u, want %u", f, M, K, N, m,
                                 n, got, want);
                }
                for (long i = 4 * N; i < sc; i++)   /* past colsb: untouched */
                    assert_int_equal(cmem[m * sc + i], 0xEE);
            }
            for (long i = M * sc; i < (long)sizeof cmem; i++)   /* past the rows: untouched */
                assert_int_equal(cmem[i], 0xEE);
        }
    }
}

/* Wrap-around: C = 2^31 − 1 plus 16·4·255·127 in TDPBUSD wraps to a negative dword. */
static void test_wrap(void **state)
{
    (void)state;
    xf_amxemu_set_fault_handler(NULL);
    uint8_t a[16 * 64], b[16 * 64];
    int32_t c[16 * 16];
    memset(a, 255, sizeof a);
    memset(b, 127, sizeof b);
    for (int i = 0; i < 256; i++)
        c[i] = INT32_MAX;
    struct cfg cf;
    cfg_init(&cf, 0);
    for (int t = 0; t < 3; t++)
        cfg_tile(&cf, t, 16, 64);
    xf_amxemu_ldtilecfg(&cf);
    xf_amxemu_tileloadd(0, c, 64);
    xf_amxemu_tileloadd(1, a, 64);
    xf_amxemu_tileloadd(2, b, 64);
    xf_amxemu_tdpbusd(0, 1, 2);
    xf_amxemu_tilestored(0, c, 64);
    xf_amxemu_tilerelease();
    int64_t want = (int64_t)INT32_MAX + 64 * 255 * 127 - 4294967296LL;
    for (int i = 0; i < 256; i++)
        assert_int_equal(c[i], want);
    assert_true(c[0] < 0);
}

/* LDTILECFG zeroes every tile; start_row: TILELOADD/TILESTORED begin at that row (a restart
 * after an interrupt) and set it back to 0; TILEZERO clears a whole tile; STTILECFG gives the
 * configuration back; TILERELEASE and palette 0 return to the unconfigured state. */
static void test_config_and_rows(void **state)
{
    (void)state;
    xf_amxemu_set_fault_handler(record_fault);
    uint8_t src[16 * 64], dst[16 * 64], back[64];
    for (int i = 0; i < 16 * 64; i++)
        src[i] = (uint8_t)(i * 7 + 1);
    struct cfg cf;
    cfg_init(&cf, 3);
    cfg_tile(&cf, 2, 8, 64);
    cfg_tile(&cf, 3, 8, 64);
    EXPECT_NO_FAULT(xf_amxemu_ldtilecfg(&cf));
    assert_int_equal(xf_amxemu_configured(), 1);
    xf_amxemu_sttilecfg(back);
    assert_memory_equal(back, cf.b, 64);
    EXPECT_NO_FAULT(xf_amxemu_tileloadd(2, src, 64));   /* rows 3..7 only */
    memset(dst, 0x55, sizeof dst);
    EXPECT_NO_FAULT(xf_amxemu_tilestored(2, dst, 64));   /* start_row is 0 again */
    for (int r = 0; r < 8; r++)
        for (int i = 0; i < 64; i++)
            assert_int_equal(dst[r * 64 + i], r < 3 ? 0 : src[r * 64 + i]);
    for (int i = 8 * 64; i < 16 * 64; i++)
        assert_int_equal(dst[i], 0x55);
    xf_amxemu_sttilecfg(back);
    assert_int_equal(back[1], 0);
    /* a negative stride (the index register is signed): row r from src row 7 − r */
    EXPECT_NO_FAULT(xf_amxemu_tileloadd(3, src + 7 * 64, -64));
    EXPECT_NO_FAULT(xf_amxemu_tilestored(3, dst, 64));
    for (int r = 0; r < 8; r++)
        assert_memory_equal(dst + r * 64, src + (7 - r) * 64, 64);
    EXPECT_NO_FAULT(xf_amxemu_tilezero(2));
    EXPECT_NO_FAULT(xf_amxemu_tilestored(2, dst, 64));
    for (int i = 0; i < 8 * 64; i++)
        assert_int_equal(dst[i], 0);
    xf_amxemu_tilerelease();
    assert_int_equal(xf_amxemu_configured(), 0);
    xf_amxemu_sttilecfg(back);
    for (int i = 0; i < 64; i++)
        assert_int_equal(back[i], 0);
    EXPECT_NO_FAULT(xf_amxemu_ldtilecfg(&cf));
    struct cfg zero;
    memset(&zero, 0, sizeof zero);
    EXPECT_NO_FAULT(xf_amxemu_ldtilecfg(&zero));   /* palette 0: release */
    assert_int_equal(xf_amxemu_configured(), 0);
    xf_amxemu_set_fault_handler(NULL);
}

/* Every fault the kernel could hit through a layout bug, each reported once and without
 * effect: #GP from LDTILECFG (palette, reserved bytes, colsb > 64, rows > 16, one of rows and
 * colsb zero), #UD from the others (no configuration, tile out of range or unconfigured, colsb
 * not a multiple of 4, start_row past the rows, TDP operands not distinct or of mismatched M, K
 * or N). */
static void test_faults(void **state)
{
    (void)state;
    xf_amxemu_set_fault_handler(record_fault);
    uint8_t mem[16 * 64];
    memset(mem, 1, sizeof mem);
    xf_amxemu_tilerelease();
    EXPECT_FAULT(xf_amxemu_tilezero(0), "#UD");
    EXPECT_FAULT(xf_amxemu_tileloadd(0, mem, 64), "#UD");
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 1, 2), "#UD");
    struct cfg cf;
    cfg_init(&cf, 0);
    cf.b[0] = 2;
    EXPECT_FAULT(xf_amxemu_ldtilecfg(&cf), "#GP");
    assert_int_equal(xf_amxemu_configured(), 0);
    static const int reserved[] = { 2, 9, 15, 32, 40, 47, 56, 63 };
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        cfg_init(&cf, 0);
        cfg_tile(&cf, 0, 16, 64);
        cf.b[reserved[i]] = 1;
        EXPECT_FAULT(xf_amxemu_ldtilecfg(&cf), "#GP");
    }
    cfg_init(&cf, 0);
    cfg_tile(&cf, 1, 16, 65);
    EXPECT_FAULT(xf_amxemu_ldtilecfg(&cf), "#GP");
    cfg_init(&cf, 0);
    cfg_tile(&cf, 1, 17, 64);
    EXPECT_FAULT(xf_amxemu_ldtilecfg(&cf), "#GP");
    cfg_init(&cf, 0);
    cfg_tile(&cf, 1, 4, 0);
    EXPECT_FAULT(xf_amxemu_ldtilecfg(&cf), "#GP");
    cfg_init(&cf, 0);
    cfg_tile(&cf, 1, 0, 4);
    EXPECT_FAULT(xf_amxemu_ldtilecfg(&cf), "#GP");
    assert_int_equal(xf_amxemu_configured(), 0);   /* none of them took effect */

    /* tmm0 C 16×64, tmm1 A 16×64, tmm2 B 16×64, tmm3 8 rows, tmm4 colsb 32, tmm5 colsb 6,
     * tmm6 unconfigured, tmm7 A with 8 rows */
    cfg_init(&cf, 0);
    cfg_tile(&cf, 0, 16, 64);
    cfg_tile(&cf, 1, 16, 64);
    cfg_tile(&cf, 2, 16, 64);
    cfg_tile(&cf, 3, 8, 64);
    cfg_tile(&cf, 4, 16, 32);
    cfg_tile(&cf, 5, 16, 6);
    cfg_tile(&cf, 7, 8, 64);
    EXPECT_NO_FAULT(xf_amxemu_ldtilecfg(&cf));
    EXPECT_FAULT(xf_amxemu_tileloadd(6, mem, 64), "#UD");
    EXPECT_FAULT(xf_amxemu_tilezero(6), "#UD");
    EXPECT_FAULT(xf_amxemu_tileloadd(8, mem, 64), "#UD");
    EXPECT_FAULT(xf_amxemu_tilestored(-1, mem, 64), "#UD");
    EXPECT_FAULT(xf_amxemu_tileloadd(5, mem, 64), "#UD");
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 0, 2), "#UD");
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 1, 1), "#UD");
    EXPECT_FAULT(xf_amxemu_tdpbusd(2, 1, 2), "#UD");
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 1, 3), "#UD");   /* K: A colsb/4 16 != B rows 8 */
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 7, 2), "#UD");   /* M: C rows 16 != A rows 8 */
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 1, 4), "#UD");   /* N: C colsb 64 != B colsb 32 */
    EXPECT_FAULT(xf_amxemu_tdpbusd(4, 1, 2), "#UD");   /* N the other way */
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 1, 5), "#UD");   /* colsb 6 */
    EXPECT_FAULT(xf_amxemu_unsupported("TDPBF16PS"), "#UD");
    /* a faulting instruction changes nothing: C stays as loaded */
    int32_t c[256], out[256];
    for (int i = 0; i < 256; i++)
        c[i] = i;
    EXPECT_NO_FAULT(xf_amxemu_tileloadd(0, c, 64));
    EXPECT_NO_FAULT(xf_amxemu_tileloadd(1, mem, 64));
    EXPECT_FAULT(xf_amxemu_tdpbusd(0, 1, 3), "#UD");
    EXPECT_NO_FAULT(xf_amxemu_tilestored(0, out, 64));
    assert_memory_equal(out, c, sizeof c);
    /* start_row past a tile's rows */
    cfg_init(&cf, 8);
    cfg_tile(&cf, 0, 8, 64);
    EXPECT_NO_FAULT(xf_amxemu_ldtilecfg(&cf));
    EXPECT_FAULT(xf_amxemu_tileloadd(0, mem, 64), "#UD");
    EXPECT_FAULT(xf_amxemu_tilestored(0, mem, 64), "#UD");
    xf_amxemu_tilerelease();
    EXPECT_FAULT(xf_amxemu_tilestored(0, mem, 64), "#UD");   /* released */
    xf_amxemu_set_fault_handler(NULL);
}

/* Without a handler a fault aborts the process (in a child here), with a message. */
static void test_default_aborts(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        xf_amxemu_set_fault_handler(NULL);
        xf_amxemu_tilerelease();
        xf_amxemu_tdpbusd(0, 1, 2);   /* unconfigured: must not return */
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
}

/* The tile state is per thread: a new thread starts unconfigured (its first tile instruction
 * faults), and its configuration does not change the other thread's. */
static void *other_thread(void *arg)
{
    int *res = arg;
    xf_amxemu_set_fault_handler(record_fault);
    res[0] = xf_amxemu_configured();
    int before = n_faults;
    xf_amxemu_tilezero(0);
    res[1] = n_faults - before;
    struct cfg cf;
    cfg_init(&cf, 0);
    cfg_tile(&cf, 0, 2, 8);
    xf_amxemu_ldtilecfg(&cf);
    res[2] = xf_amxemu_configured();
    return NULL;
}

static void test_per_thread(void **state)
{
    (void)state;
    xf_amxemu_set_fault_handler(NULL);
    struct cfg cf;
    uint8_t back[64];
    cfg_init(&cf, 0);
    cfg_tile(&cf, 0, 16, 64);
    xf_amxemu_ldtilecfg(&cf);
    int res[3] = { -1, -1, -1 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, other_thread, res), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(res[0], 0);   /* the new thread was not configured */
    assert_int_equal(res[1], 1);   /* and faulted */
    assert_int_equal(res[2], 1);
    xf_amxemu_sttilecfg(back);     /* this thread's configuration is its own */
    assert_memory_equal(back, cf.b, 64);
    xf_amxemu_tilerelease();
}

XF_TEST_MAIN(cmocka_unit_test(test_dot_products), cmocka_unit_test(test_wrap),
             cmocka_unit_test(test_config_and_rows), cmocka_unit_test(test_faults),
             cmocka_unit_test(test_default_aborts), cmocka_unit_test(test_per_thread))
