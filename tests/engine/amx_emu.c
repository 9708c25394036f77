/* Test-only AMX emulator (amx_emu.h): palette 1 of the Intel SDM, per-thread tile state, every
 * hardware fault of the instructions below reported through the fault handler (default: print
 * and abort). Plain C, no ISA flags: it runs on any x86-64 (the emulated kernel that calls it
 * needs AVX-512 for its epilogue, not this file). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amx_emu.h"

/* Palette 1 (CPUID.(EAX=1DH,ECX=1) on Sapphire Rapids and later): 8 tile names, 16 rows of at
 * most 64 bytes; TMUL (CPUID.(EAX=1EH,ECX=0).EBX): tmul_maxk 16 rows, tmul_maxn 64 bytes. */
#define MAX_NAMES 8
#define MAX_ROWS 16
#define BYTES_PER_ROW 64
#define TMUL_MAXK 16
#define TMUL_MAXN 64

struct amx_state {
    int configured;                 /* TILES_CONFIGURED */
    uint8_t palette, start_row;
    uint8_t rows[MAX_NAMES];
    uint16_t colsb[MAX_NAMES];
    uint8_t data[MAX_NAMES][MAX_ROWS][BYTES_PER_ROW];
};

static _Thread_local struct amx_state st;
static _Thread_local xf_amxemu_fault_fn on_fault;
static _Thread_local uint64_t dp_count;

static void default_fault(const char *insn, const char *exc, const char *why)
{
    fprintf(stderr, "amx_emu: %s raises %s: %s (the AMX hardware would fault here)\n", insn,
            exc, why);
    fflush(stderr);
    abort();
}

xf_amxemu_fault_fn xf_amxemu_set_fault_handler(xf_amxemu_fault_fn fn)
{
    xf_amxemu_fault_fn old = on_fault;
    on_fault = fn;
    return old;
}

/* Reports a fault (why: fmt with up to three ints); returns 0 (callers bail out). */
static int fault(const char *insn, const char *exc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fault(const char *insn, const char *exc, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    (on_fault ? on_fault : default_fault)(insn, exc, why);
    return 0;
}

int xf_amxemu_configured(void)
{
    return st.configured;
}

uint64_t xf_amxemu_dp_count(void)
{
    return dp_count;
}

void xf_amxemu_unsupported(const char *insn)
{
    fault(insn, "#UD", "not emulated (amx_emu.c models palette 1's int8 instructions only)");
}

/* TILERELEASE, and LDTILECFG with palette 0: the init state (no configuration, zero tiles). */
static void init_state(void)
{
    memset(&st, 0, sizeof st);
}

void xf_amxemu_tilerelease(void)
{
    init_state();
}

/* LDTILECFG m512: byte 0 palette, byte 1 start_row, bytes 2..15 reserved (0), bytes 16 + 2t
 * colsb of tile t, byte 48 + t its rows; the entries of tiles 8..15 (bytes 32..47, 56..63)
 * reserved for palette 1. #GP (nothing changes) for a palette above 1, a reserved byte set,
 * colsb > 64, rows > 16, or a tile with exactly one of rows and colsb zero. Success zeroes
 * every tile. */
void xf_amxemu_ldtilecfg(const void *cfg64)
{
    uint8_t m[64];
    memcpy(m, cfg64, sizeof m);
    const char *I = "LDTILECFG";
    if (m[0] == 0) {
        init_state();
        return;
    }
    if (m[0] > 1) {
        fault(I, "#GP", "palette %d (this CPU has palette 1 only)", m[0]);
        return;
    }
    for (int i = 2; i < 64; i++) {
        int reserved = i < 16 || (i >= 32 && i < 48) || i >= 56;
        if (reserved && m[i]) {
            fault(I, "#GP", "reserved byte %d is %d (must be 0)", i, m[i]);
            return;
        }
    }
    uint8_t rows[MAX_NAMES];
    uint16_t colsb[MAX_NAMES];
    for (int t = 0; t < MAX_NAMES; t++) {
        colsb[t] = (uint16_t)(m[16 + 2 * t] | m[17 + 2 * t] << 8);
        rows[t] = m[48 + t];
        if (colsb[t] > BYTES_PER_ROW) {
            fault(I, "#GP", "tmm%d colsb %d > 64", t, colsb[t]);
            return;
        }
        if (rows[t] > MAX_ROWS) {
            fault(I, "#GP", "tmm%d rows %d > 16", t, rows[t]);
            return;
        }
        if ((rows[t] == 0) != (colsb[t] == 0)) {
            fault(I, "#GP", "tmm%d has rows %d and colsb %d: both or neither must be 0", t,
                  rows[t], colsb[t]);
            return;
        }
    }
    init_state();
    st.configured = 1;
    st.palette = 1;
    st.start_row = m[1];
    memcpy(st.rows, rows, sizeof rows);
    memcpy(st.colsb, colsb, sizeof colsb);
}

/* STTILECFG m512: the configuration as loaded (all zero when not configured). */
void xf_amxemu_sttilecfg(void *cfg64)
{
    uint8_t m[64];
    memset(m, 0, sizeof m);
    if (st.configured) {
        m[0] = st.palette;
        m[1] = st.start_row;
        for (int t = 0; t < MAX_NAMES; t++) {
            m[16 + 2 * t] = (uint8_t)(st.colsb[t] & 0xff);
            m[17 + 2 * t] = (uint8_t)(st.colsb[t] >> 8);
            m[48 + t] = st.rows[t];
        }
    }
    memcpy(cfg64, m, sizeof m);
}

/* #UD unless the tiles are configured and t names a valid (configured, non-empty) tile. */
static int tile_ok(const char *insn, int t)
{
    if (!st.configured)
        return fault(insn, "#UD", "tiles not configured (no LDTILECFG in this thread, or "
                     "after TILERELEASE) using tmm%d", t);
    if (t < 0 || t >= MAX_NAMES)
        return fault(insn, "#UD", "tmm%d does not exist (palette 1 has tmm0..tmm7)", t);
    if (st.rows[t] == 0)
        return fault(insn, "#UD", "tmm%d is not configured (rows = colsb = 0)", t);
    return 1;
}

/* The checks TILELOADD and TILESTORED share: a valid tile, colsb a multiple of 4, start_row
 * inside the tile. */
static int move_ok(const char *insn, int t)
{
    if (!tile_ok(insn, t))
        return 0;
    if (st.colsb[t] % 4)
        return fault(insn, "#UD", "tmm%d colsb %d is not a multiple of 4", t, st.colsb[t]);
    if (st.start_row >= st.rows[t])
        return fault(insn, "#UD", "start_row %d >= tmm%d rows %d", st.start_row, t, st.rows[t]);
    return 1;
}

/* TILELOADD tmm, [base + stride·row]: rows start_row..rows−1 get colsb bytes from memory and
 * zeros past them; rows past the configured ones become zero; start_row returns to 0. Reads
 * exactly the bytes the hardware reads (so ASan sees an overrun the hardware would make). */
void xf_amxemu_tileloadd(int t, const void *base, long stride)
{
    if (!move_ok("TILELOADD", t))
        return;
    for (int r = st.start_row; r < MAX_ROWS; r++) {
        memset(st.data[t][r], 0, BYTES_PER_ROW);
        if (r < st.rows[t])
            memcpy(st.data[t][r], (const char *)base + (long)r * stride, st.colsb[t]);
    }
    st.start_row = 0;
}

/* TILESTORED [base + stride·row], tmm: colsb bytes of rows start_row..rows−1, nothing else. */
void xf_amxemu_tilestored(int t, void *base, long stride)
{
    if (!move_ok("TILESTORED", t))
        return;
    for (int r = st.start_row; r < st.rows[t]; r++)
        memcpy((char *)base + (long)r * stride, st.data[t][r], st.colsb[t]);
    st.start_row = 0;
}

/* TILEZERO tmm: the whole tile (all 16 rows × 64 bytes). */
void xf_amxemu_tilezero(int t)
{
    if (!tile_ok("TILEZERO", t))
        return;
    memset(st.data[t], 0, sizeof st.data[t]);
    st.start_row = 0;
}

/* TDPB[SU][SU]D tmm_c, tmm_a, tmm_b with C = M×N dwords, A = M×K dwords (groups of 4 bytes),
 * B = K×N dwords: #UD unless the three tiles are valid and distinct, every colsb a multiple of
 * 4, C.colsb = B.colsb (N), C.rows = A.rows (M), A.colsb/4 = B.rows (K), K ≤ tmul_maxk and
 * C.colsb ≤ tmul_maxn. C's bytes past N dwords and rows past M become zero. */
static inline __attribute__((always_inline)) void tdpb(const char *insn, int c, int a, int b,
                                                       int a_signed, int b_signed)
{
    if (!tile_ok(insn, c) || !tile_ok(insn, a) || !tile_ok(insn, b))
        return;
    if (c == a || c == b || a == b) {
        fault(insn, "#UD", "the three tiles must differ (tmm%d, tmm%d, tmm%d)", c, a, b);
        return;
    }
    for (int i = 0; i < 3; i++) {
        int t = i == 0 ? c : i == 1 ? a : b;
        if (st.colsb[t] % 4) {
            fault(insn, "#UD", "tmm%d colsb %d is not a multiple of 4", t, st.colsb[t]);
            return;
        }
    }
    int M = st.rows[c], N = st.colsb[c] / 4, K = st.rows[b];
    if (st.colsb[b] != st.colsb[c]) {
        fault(insn, "#UD", "dst colsb %d != src2 colsb %d (N)", st.colsb[c], st.colsb[b]);
        return;
    }
    if (st.rows[a] != M) {
        fault(insn, "#UD", "dst rows %d != src1 rows %d (M)", M, st.rows[a]);
        return;
    }
    if (st.colsb[a] / 4 != K) {
        fault(insn, "#UD", "src1 colsb/4 = %d != src2 rows %d (K)", st.colsb[a] / 4, K);
        return;
    }
    if (K > TMUL_MAXK || st.colsb[c] > TMUL_MAXN) {
        fault(insn, "#UD", "K %d > tmul_maxk 16 or N bytes %d > tmul_maxn 64", K, st.colsb[c]);
        return;
    }
    /* B's bytes as ints, byte i of dword n of row k at bv[k][i][n] (a plain copy that lets the
     * compiler vectorise the loop over n) */
    int32_t bv[TMUL_MAXK][4][16];
    for (int k = 0; k < K; k++)
        for (int n = 0; n < 16; n++)
            for (int i = 0; i < 4; i++) {
                uint8_t v = st.data[b][k][4 * n + i];
                bv[k][i][n] = b_signed ? (int8_t)v : v;
            }
    for (int m = 0; m < M; m++) {
        uint32_t acc[16];
        memcpy(acc, st.data[c][m], sizeof acc);
        const uint8_t *ar = st.data[a][m];
        for (int k = 0; k < K; k++) {
            int32_t x[4];
            for (int i = 0; i < 4; i++)
                x[i] = a_signed ? (int8_t)ar[4 * k + i] : ar[4 * k + i];
            /* four products: |Σ| ≤ 4·255·255, exact in int32; the dword sum wraps around, as
             * the hardware (unsigned arithmetic) */
            for (int n = 0; n < 16; n++)
                acc[n] += (uint32_t)(x[0] * bv[k][0][n] + x[1] * bv[k][1][n] +
                                     x[2] * bv[k][2][n] + x[3] * bv[k][3][n]);
        }
        for (int n = N; n < 16; n++)
            acc[n] = 0;
        memcpy(st.data[c][m], acc, sizeof acc);
    }
    for (int m = M; m < MAX_ROWS; m++)
        memset(st.data[c][m], 0, BYTES_PER_ROW);
    st.start_row = 0;
    dp_count++;
}

/* The dot products touch only the emulator's own tile state (the memory reads and writes of
 * TILELOADD/TILESTORED stay instrumented): no sanitizer checks in them, which would make the
 * sanitizer builds' test_qgemm several seconds slower for nothing. */
#define NO_SAN __attribute__((no_sanitize("address", "undefined")))

NO_SAN void xf_amxemu_tdpbssd(int c, int a, int b)
{
    tdpb("TDPBSSD", c, a, b, 1, 1);
}

NO_SAN void xf_amxemu_tdpbsud(int c, int a, int b)
{
    tdpb("TDPBSUD", c, a, b, 1, 0);
}

NO_SAN void xf_amxemu_tdpbusd(int c, int a, int b)
{
    tdpb("TDPBUSD", c, a, b, 0, 1);
}

NO_SAN void xf_amxemu_tdpbuud(int c, int a, int b)
{
    tdpb("TDPBUUD", c, a, b, 0, 0);
}
