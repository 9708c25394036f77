/* AMX int8 Linear (qgemm.h): TDPBUSD on 16×64-byte tiles — A = 16 quantised rows × 64 k (u8
 * x^u = x^q + 128, loaded straight from the activation rows), B = 16 k-groups × 16 channels × 4
 * (the packed panel layout IS the VNNI B tile), C = 16×16 s32. Blocks of 2×2 C tiles (32 rows ×
 * 32 channels) in tmm0-3, A in tmm4-5, B in tmm6-7; full K per block, then the C tiles go to a
 * stack buffer and the AVX-512 epilogue subtracts 128·c_o, dequantises, adds bias and applies the
 * activation. Runs only where cpu.c found AMX-INT8 and Linux granted the tile state
 * (arch_prctl(ARCH_REQ_XCOMP_PERM) at detection); the tile configuration is per thread, loaded
 * at entry and released at exit. Compiled with the AMX + AVX-512 flags only. */
#include "config.h"

#include <immintrin.h>
#include <string.h>

#include "engine/kernels/qgemm.h"
#include "engine/kernels/x86/vmath_avx512.h"

#ifdef XF_AMX_EMULATE
/* Tests only (mk/qgemm.am): this file built a second time with the tile instructions run by
 * the software emulator tests/engine/amx_emu.c, under other names (xf_qlinear_amx_emu, ...). */
#include "amx_emu.h"
#endif

struct tilecfg {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};
_Static_assert(sizeof(struct tilecfg) == 64, "LDTILECFG takes 64 bytes");

static void config_tiles(void)
{
    struct tilecfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* GCC's _tile_loadconfig names its operand as one pointer-sized object ("m" of a void *),
     * so the compiler need not keep the other 56 bytes' stores: this empty asm reads all 64. */
    __asm__ volatile("" : : "m"(cfg));
    _tile_loadconfig(&cfg);
}

/* rows × ncol of y from one C tile cb[16][16]: (acc − 128·c_o)·(α_t·σ_o) (+ b_o, act). */
static void epilogue(const int32_t *cb, int rows, int ncol, const float *alpha,
                     const float *sigma, const int32_t *colsum, const float *bias,
                     enum xf_epilogue epi, float *y, size_t ldy)
{
    __mmask16 msk = ncol >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << ncol) - 1);
    __m512 gc[XF_GELU_POLY_DEG + 1];
    const float (*gtab)[XF_GELU_POLY_N] = xf_gelu_poly_table(epi);
    if (gtab)
        xf_gelu_poly_load512(gc, gtab);
    __m512i comp = _mm512_slli_epi32(_mm512_loadu_si512((const void *)colsum), 7);
    __m512 sg = _mm512_loadu_ps(sigma);
    __m512 bb = epi != XF_EPI_NONE ? _mm512_maskz_loadu_ps(msk, bias) : _mm512_setzero_ps();
    for (int i = 0; i < rows; i++) {
        __m512i acc = _mm512_load_si512((const void *)(cb + 16 * i));
        __m512 s = _mm512_mul_ps(_mm512_set1_ps(alpha[i]), sg);
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, comp)), s);
        if (epi != XF_EPI_NONE)
            v = xf_act_tab512(epi, _mm512_add_ps(v, bb), gc);
        _mm512_mask_storeu_ps(y + (size_t)i * ldy, msk, v);
    }
}

/* With qo (xf_qlinear_quant_amx): whole rows per thread (blocks of 32), chunks of
 * xf_qout_chunk_rows, each quantised once complete (as xf_qgemm_drive). */
static void qlinear_amx(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                        const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                        int32_t ldy, const xf_qout_t *qo, int ith, int nth)
{
    /* tiles of 16 rows × 32 columns (two C tiles side by side) */
    int32_t r0, r1, c0, c1;
    int mc;
    if (!xf_qgemm_share(w, m, 32, 16, 32, qo != NULL, ith, nth, &r0, &r1, &c0, &c1, &mc))
        return;
    int32_t cbuf[4][256] __attribute__((aligned(64)));
    const size_t bstride = (size_t)w->k_pad * 16, lda = (size_t)ldq;
    const int nkb = w->k_pad / 64;
    config_tiles();
    for (int ic = r0; ic < r1; ic += mc) {
        int ic1 = ic + mc < r1 ? ic + mc : r1;
        for (int jr = c0; jr < c1; jr += 32) {
            int ncol = c1 - jr < 32 ? c1 - jr : 32;
            int two_c = ncol > 16;
            const int8_t *b0 = w->wq + (size_t)(jr / 16) * bstride, *b1 = b0 + bstride;
            for (int ir = ic; ir < ic1; ir += 32) {
                int nrow = ic1 - ir < 32 ? ic1 - ir : 32;
                int two_r = nrow > 16;
                const uint8_t *a0 = xq + (size_t)ir * lda, *a1 = a0 + 16 * lda;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int kb = 0; kb < nkb; kb++) {
                    _tile_loadd(4, a0 + 64 * (size_t)kb, lda);
                    _tile_loadd(6, b0 + 1024 * (size_t)kb, 64);
                    _tile_dpbusd(0, 4, 6);
                    if (two_c) {
                        _tile_loadd(7, b1 + 1024 * (size_t)kb, 64);
                        _tile_dpbusd(1, 4, 7);
                    }
                    if (two_r) {
                        _tile_loadd(5, a1 + 64 * (size_t)kb, lda);
                        _tile_dpbusd(2, 5, 6);
                        if (two_c)
                            _tile_dpbusd(3, 5, 7);
                    }
                }
                _tile_stored(0, cbuf[0], 64);
                _tile_stored(1, cbuf[1], 64);
                _tile_stored(2, cbuf[2], 64);
                _tile_stored(3, cbuf[3], 64);
                for (int t = 0; t < 4; t++) {
                    int rr = t >= 2, cc = t & 1;
                    int rows = nrow - 16 * rr, cols = ncol - 16 * cc;
                    if (rows <= 0 || cols <= 0)
                        continue;
                    rows = rows < 16 ? rows : 16;
                    int o = jr + 16 * cc, row = ir + 16 * rr;
                    epilogue(cbuf[t], rows, cols, alpha + row, w->sigma + o, w->colsum + o,
                             bias ? bias + o : NULL, epi, y + (size_t)row * (size_t)ldy + o,
                             (size_t)ldy);
                }
            }
        }
        if (qo)   /* these rows are complete: quantise them while they are in cache */
            xf_quant_rows_avx512(ic, ic1, w->n, y, ldy, qo->xq, qo->ldq, qo->alpha);
    }
    _tile_release();
}

void xf_qlinear_amx(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth)
{
    qlinear_amx(w, m, xq, ldq, alpha, bias, epi, y, ldy, NULL, ith, nth);
}

void xf_qlinear_quant_amx(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                          const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                          int32_t ldy, const xf_qout_t *qo, int ith, int nth)
{
    qlinear_amx(w, m, xq, ldq, alpha, bias, epi, y, ldy, qo, ith, nth);
}

/* 4 independent TDPBUSD chains (tmm0-3) on fixed A and B tiles: 4 × 16·16·64 multiply-adds
 * per round. */
double xf_qpeak_loop_amx(int64_t iters, int32_t *sink)
{
    uint8_t a[16 * 64] __attribute__((aligned(64)));
    int8_t b[16 * 64] __attribute__((aligned(64)));
    int32_t c[256] __attribute__((aligned(64)));
    memset(a, 3, sizeof a);
    memset(b, 1, sizeof b);
    __asm__ volatile("" : : "m"(a), "m"(b));   /* _tile_loadd's asm reads them unseen */
    config_tiles();
    _tile_loadd(4, a, 64);
    _tile_loadd(6, b, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 6);
        _tile_dpbusd(2, 4, 6);
        _tile_dpbusd(3, 4, 6);
    }
    _tile_stored(0, c, 64);
    _tile_release();
    *sink ^= c[0] & 0x7fffffff;
    return 4.0 * 16.0 * 16.0 * 64.0 * 2.0 * (double)iters;
}
