/* Test-only: the AMX tile instructions in software (amx_emu.c), so that the AMX int8 kernel
 * (src/engine/kernels/x86/qgemm_amx.c) runs and is checked on CPUs without AMX. The semantics
 * are those of the Intel SDM (vol. 2, LDTILECFG, TILELOADD, TILESTORED, TILEZERO, TDPB*D,
 * TILERELEASE) for palette 1 (8 tiles of at most 16 rows × 64 bytes; tmul_maxk 16, tmul_maxn
 * 64 bytes), with every fault the hardware raises (#GP for a bad configuration, #UD for an
 * unconfigured or invalid tile or mismatched shapes) reported loudly: by default a message on
 * stderr and abort(), so that a layout bug cannot pass. The tile state (configuration, start
 * row, 8 × 1 KB of data) is per thread, as on the hardware.
 *
 * With XF_AMX_EMULATE defined before this header (after <immintrin.h>), the tile intrinsics
 * become calls into the emulator and the kernel's exported functions get an _emu suffix: the
 * same source compiled a second time for the tests (mk/qgemm.am), never linked into the engine
 * and never in its int8 tables. No AMX instruction is emitted in that build. */
#ifndef XF_TESTS_AMX_EMU_H
#define XF_TESTS_AMX_EMU_H

#include <stdint.h>

#include "engine/kernels/qgemm.h"

/* A fault: insn (e.g. "TDPBUSD"), exc ("#GP" or "#UD") and why. The default handler prints and
 * aborts; a test may install its own (per thread) to check that a fault is raised: if it
 * returns, the faulting instruction has no effect (as a fault: nothing is written). Returns
 * the previous handler (NULL: the default). */
typedef void (*xf_amxemu_fault_fn)(const char *insn, const char *exc, const char *why);
xf_amxemu_fault_fn xf_amxemu_set_fault_handler(xf_amxemu_fault_fn fn);

/* The instructions; t, c, a, b are tile numbers (tmm0..tmm7), stride in bytes (signed, as the
 * index register). */
void xf_amxemu_ldtilecfg(const void *cfg64);
void xf_amxemu_sttilecfg(void *cfg64);
void xf_amxemu_tileloadd(int t, const void *base, long stride);
void xf_amxemu_tilestored(int t, void *base, long stride);
void xf_amxemu_tilezero(int t);
/* C[m][n] += Σ_k Σ_i A[m][4k+i]·B[k][4n+i] with A/B bytes unsigned (u) or signed (s) as in
 * the mnemonic TDPB<A><B>D; s32 accumulation that wraps around (no saturation). */
void xf_amxemu_tdpbssd(int c, int a, int b);
void xf_amxemu_tdpbsud(int c, int a, int b);
void xf_amxemu_tdpbusd(int c, int a, int b);
void xf_amxemu_tdpbuud(int c, int a, int b);
void xf_amxemu_tilerelease(void);
/* An AMX instruction this emulator does not model: always a fault. */
void xf_amxemu_unsupported(const char *insn);

/* Inspection (tests): this thread's TILES_CONFIGURED, and the TDPB*D count since the thread
 * started. */
int xf_amxemu_configured(void);
uint64_t xf_amxemu_dp_count(void);

#ifdef XF_AMX_EMULATE
#undef _tile_loadd
#undef _tile_stream_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbssd
#undef _tile_dpbsud
#undef _tile_dpbusd
#undef _tile_dpbuud
#undef _tile_dpbf16ps
#undef _tile_dpfp16ps
#undef _tile_loadconfig
#undef _tile_storeconfig
#undef _tile_release
/* (GCC declares the last three as inline functions: these macros hide them from here on.) */
#define _tile_loadconfig(cfg) xf_amxemu_ldtilecfg(cfg)
#define _tile_storeconfig(cfg) xf_amxemu_sttilecfg(cfg)
#define _tile_release() xf_amxemu_tilerelease()
#define _tile_loadd(t, base, stride) xf_amxemu_tileloadd((t), (base), (long)(stride))
#define _tile_stream_loadd(t, base, stride) xf_amxemu_tileloadd((t), (base), (long)(stride))
#define _tile_stored(t, base, stride) xf_amxemu_tilestored((t), (base), (long)(stride))
#define _tile_zero(t) xf_amxemu_tilezero(t)
#define _tile_dpbssd(c, a, b) xf_amxemu_tdpbssd((c), (a), (b))
#define _tile_dpbsud(c, a, b) xf_amxemu_tdpbsud((c), (a), (b))
#define _tile_dpbusd(c, a, b) xf_amxemu_tdpbusd((c), (a), (b))
#define _tile_dpbuud(c, a, b) xf_amxemu_tdpbuud((c), (a), (b))
#define _tile_dpbf16ps(c, a, b) xf_amxemu_unsupported("TDPBF16PS")
#define _tile_dpfp16ps(c, a, b) xf_amxemu_unsupported("TDPFP16PS")

/* The emulated kernel's names: never the engine's (qgemm.h) */
#define xf_qlinear_amx xf_qlinear_amx_emu
#define xf_qlinear_quant_amx xf_qlinear_quant_amx_emu
#define xf_qpeak_loop_amx xf_qpeak_loop_amx_emu
#endif

/* The emulated AMX int8 kernel (qgemm_amx.c built with XF_AMX_EMULATE; qgemm.h's signatures). */
void xf_qlinear_amx_emu(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                        const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                        int32_t ldy, int ith, int nth);
void xf_qlinear_quant_amx_emu(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                              const float *alpha, const float *bias, enum xf_epilogue epi,
                              float *y, int32_t ldy, const xf_qout_t *qo, int ith, int nth);
double xf_qpeak_loop_amx_emu(int64_t iters, int32_t *sink);

#endif
