/* The int8 kernel dispatcher (qgemm.h): the reference, AVX2, AVX-512 VNNI and AMX tables, the
 * choice for this CPU under the XF_CPU cap, the per-channel weight quantisation and packing done
 * once at load, and the activation-buffer geometry the planner sizes. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu.h"
#include "engine/diag.h"
#include "engine/kernels/qgemm.h"
#include "engine/pool.h"

static const xf_qkernels_t qtable_ref = {
    .name = "ref",
    .wmax = 127,
    .quant_rows = xf_quant_rows_ref,
    .qlinear = xf_qlinear_ref,
    .qlinear_quant = xf_qlinear_quant_ref,
    .peak_loop = xf_qpeak_loop_ref,
};

#ifdef XF_HAVE_X86_64
static const xf_qkernels_t qtable_avx2 = {
    .name = "avx2",
    .wmax = 127,
    .quant_rows = xf_quant_rows_avx2,
    .qlinear = xf_qlinear_avx2,
    .qlinear_quant = xf_qlinear_quant_avx2,
    .peak_loop = xf_qpeak_loop_avx2,
};

/* 7-bit weights, u8 activations + 128 straight into vpmaddubsw (no vpsignb/abs/XOR). The
 * AVX2 default: bench_qgemm (Zen 5 capped to AVX2, 1 thread, M = 16 and 128, BERT-base shapes,
 * two runs, bench/results/qgemm_zen5.txt) gave 0.45-0.69 of the vpmaddubsw peak per
 * CPU-second against 0.37-0.53 for the 8-bit sign-trick "avx2" (1.2-1.5x faster); the extra
 * weight rounding moved the int8-vs-fp32 GEMM error from 0.0283 to 0.0291 (test_qgemm) and no
 * test_quant cosine. XF_QGEMM=avx2 keeps the 8-bit path (integer sums identical to
 * VNNI/AMX/ref on the same weights). */
static const xf_qkernels_t qtable_avx2_w7 = {
    .name = "avx2-w7",
    .wmax = 63,
    .quant_rows = xf_quant_rows_avx2,
    .qlinear = xf_qlinear_avx2_w7,
    .qlinear_quant = xf_qlinear_quant_avx2_w7,
    .peak_loop = xf_qpeak_loop_avx2,
};

/* 8-bit weights bounded per s16 lane (lane_max 128, qgemm.h), u8 activations + 128 into
 * vpmaddubsw, and the products of two k-steps summed in s16 before one vpmaddwd: 5 vector
 * instructions per 64 multiply-adds instead of 6 (avx2-w7), 3 of them multiplies instead of 4.
 * The AVX2 default; measured against avx2-w7 in bench/results/qgemm_zen5.txt. */
static const xf_qkernels_t qtable_avx2_s16 = {
    .name = "avx2-s16",
    .wmax = 127,
    .lane_max = 128,
    .wgroup = 1,
    .quant_rows = xf_quant_rows_avx2,
    .qlinear = xf_qlinear_avx2_s16,
    .qlinear_quant = xf_qlinear_quant_avx2_s16,
    .peak_loop = xf_qpeak_loop_avx2,
};

static const xf_qkernels_t qtable_vnni = {
    .name = "vnni",
    .wmax = 127,
    .wgroup = 3,   /* 8 × 48 tiles: a tile's weights one run (qgemm.h) */
    .quant_rows = xf_quant_rows_avx512,
    .qlinear = xf_qlinear_vnni,
    .qlinear_quant = xf_qlinear_quant_vnni,
    .peak_loop = xf_qpeak_loop_vnni,
};

#ifdef XF_HAVE_AMX
static const xf_qkernels_t qtable_amx = {
    .name = "amx",
    .wmax = 127,
    .quant_rows = xf_quant_rows_avx512,
    .qlinear = xf_qlinear_amx,
    .qlinear_quant = xf_qlinear_quant_amx,
    .peak_loop = xf_qpeak_loop_amx,
};
#endif
#endif

#define QT_MAX 6
static const xf_qkernels_t *qtables[QT_MAX];
static int n_qtables;
static const xf_qkernels_t *qselected;
static pthread_once_t qonce = PTHREAD_ONCE_INIT;

static void qtables_init(void)
{
    const xf_cpu_t *c = xf_cpu();
    qtables[n_qtables++] = &qtable_ref;
    qselected = &qtable_ref;
#ifdef XF_HAVE_X86_64
    if (c->level_max >= XF_ISA_AVX2) {
        qtables[n_qtables++] = &qtable_avx2;
        qtables[n_qtables++] = &qtable_avx2_w7;
        qtables[n_qtables++] = &qtable_avx2_s16;
        if (c->level >= XF_ISA_AVX2)
            qselected = &qtable_avx2_s16;
    }
    if (c->level_max >= XF_ISA_AVX512 && c->avx512vnni) {
        qtables[n_qtables++] = &qtable_vnni;
        if (c->level >= XF_ISA_AVX512)
            qselected = &qtable_vnni;
    }
#ifdef XF_HAVE_AMX
    if (c->level_max >= XF_ISA_AMX && c->amx_int8) {
        qtables[n_qtables++] = &qtable_amx;
        if (c->level >= XF_ISA_AMX)
            qselected = &qtable_amx;
    }
#endif
#endif
    /* XF_QGEMM=name picks one of the tables this CPU runs (benchmarks: avx2 vs avx2-w7) */
    const char *want = getenv("XF_QGEMM");
    if (want && *want) {
        int found = 0;
        for (int i = 0; i < n_qtables; i++)
            if (strcmp(qtables[i]->name, want) == 0) {
                qselected = qtables[i];
                found = 1;
            }
        if (!found)
            xf_log(XF_LOG_WARN, "XF_QGEMM=%s is not an int8 table this CPU runs; ignored", want);
    }
    xf_log(XF_LOG_DEBUG, "qgemm: int8 kernels %s (cpu %s, isa %s)", qselected->name, c->brand,
           xf_isa_name(c->level));
}

const xf_qkernels_t *xf_qkernels(void)
{
    pthread_once(&qonce, qtables_init);
    return qselected;
}

const xf_qkernels_t *xf_qkernels_ref(void)
{
    return &qtable_ref;
}

int xf_qkernels_all(const xf_qkernels_t **out, int cap)
{
    pthread_once(&qonce, qtables_init);
    int n = n_qtables < cap ? n_qtables : cap;
    for (int i = 0; i < n; i++)
        out[i] = qtables[i];
    return n;
}

/* ---- the shared tile loops ---- */

#define A_CHUNK_BYTES (256 * 1024)   /* activations of one row chunk (half of a 512 KB L2) */

int xf_qout_chunk_rows(int32_t rows, int32_t n, int mr)
{
    const size_t row_bytes = (size_t)n * sizeof(float);
    if ((size_t)rows * row_bytes <= XF_QOUT_WHOLE_BYTES)
        return (rows + mr - 1) / mr * mr;
    int mc = (int)(XF_QOUT_CHUNK_BYTES / row_bytes) / mr * mr;
    return mc < mr ? mr : mc;
}

int xf_qgemm_share(const xf_qgemm_w_t *w, int32_t m, int rb, int mr, int nr, int qo, int ith,
                   int nth, int32_t *r0, int32_t *r1, int32_t *c0, int32_t *c1, int *mc)
{
    int chunk = A_CHUNK_BYTES / w->k_pad / rb * rb;
    if (qo) {   /* whole rows per thread, chunks whose y rows stay in L2 */
        int b0, b1;
        xf_split_rows((m + rb - 1) / rb, ith, nth, &b0, &b1);
        *r0 = b0 * rb;
        *r1 = b1 * rb < m ? b1 * rb : m;
        *c0 = 0;
        *c1 = w->n;
        if (*r0 >= *r1)
            return 0;
        int mcy = xf_qout_chunk_rows(*r1 - *r0, w->n, rb);
        chunk = mcy < chunk ? mcy : chunk;
    } else if (!xf_gemm_share(m, w->n, mr, nr, ith, nth, r0, r1, c0, c1)) {
        return 0;   /* the own GEMMs' one split policy (kernels.h) */
    }
    *mc = chunk < rb ? rb : chunk;
    return 1;
}

void xf_qgemm_drive(const xf_qgemm_w_t *w, int32_t m, const uint8_t *xq, int32_t ldq,
                    const float *alpha, const float *bias, enum xf_epilogue epi, float *y,
                    int32_t ldy, int ith, int nth, int mr, int nr, xf_qtile_fn tile,
                    const void *ctx, const xf_qout_t *qo, xf_quant_rows_fn quant)
{
    int32_t r0, r1, c0, c1;
    int mc;
    if (!xf_qgemm_share(w, m, mr, mr, nr, qo != NULL, ith, nth, &r0, &r1, &c0, &c1, &mc))
        return;
    for (int ic = r0; ic < r1; ic += mc) {
        int ic1 = ic + mc < r1 ? ic + mc : r1;
        for (int jr = c0; jr < c1;) {
            int end = (jr / nr + 1) * nr;   /* tiles at multiples of nr: within a panel group */
            int ncol = (c1 < end ? c1 : end) - jr;
            for (int ir = ic; ir < ic1; ir += mr)
                tile(ctx, w, ic1 - ir < mr ? ic1 - ir : mr, jr, ncol,
                     xq + (size_t)ir * (size_t)ldq, (size_t)ldq, alpha + ir,
                     bias ? bias + jr : NULL, epi, y + (size_t)ir * (size_t)ldy + jr,
                     (size_t)ldy, ir == ic);
            jr += ncol;
        }
        if (qo)   /* these rows are complete: quantise them while they are in cache */
            quant(ic, ic1, w->n, y, ldy, qo->xq, qo->ldq, qo->alpha);
    }
}

/* ---- geometry ---- */

static size_t up64(size_t x)
{
    return (x + 63) & ~(size_t)63;
}

int32_t xf_qgemm_ldq(int32_t k)
{
    return (k + XF_QGEMM_KALIGN - 1) / XF_QGEMM_KALIGN * XF_QGEMM_KALIGN;
}

size_t xf_qgemm_alpha_offset(int32_t m, int32_t k)
{
    size_t rows = ((size_t)m + XF_QGEMM_MALIGN - 1) / XF_QGEMM_MALIGN * XF_QGEMM_MALIGN;
    return up64(rows * (size_t)xf_qgemm_ldq(k));
}

size_t xf_qgemm_act_bytes(int32_t m, int32_t k)
{
    return xf_qgemm_alpha_offset(m, k) + up64((size_t)m * sizeof(float));
}

/* ---- weights ---- */

/* The four k of s16 lane h of 8-block j: 8j + 2h + lane_k[i] (qgemm.h). */
static const int lane_k[4] = { 0, 1, 4, 5 };

/* max over the lanes of Σ|w| of one channel's fp32 weights wo[k] */
static float lane_amax(const float *wo, int32_t k)
{
    float best = 0.0f;
    for (int32_t j = 0; 8 * j < k; j++)
        for (int h = 0; h < 2; h++) {
            float s = 0.0f;
            for (int i = 0; i < 4; i++) {
                int32_t kk = 8 * j + 2 * h + lane_k[i];
                s += kk < k ? fabsf(wo[kk]) : 0.0f;
            }
            best = s > best ? s : best;
        }
    return best;
}

int32_t xf_qgemm_w_lane_sum(const xf_qgemm_w_t *qw, int32_t o)
{
    int32_t best = 0;
    for (int32_t j = 0; 8 * j < qw->k_pad; j++)
        for (int h = 0; h < 2; h++) {
            int32_t s = 0;
            for (int i = 0; i < 4; i++)
                s += abs(xf_qgemm_w_at(qw, o, 8 * j + 2 * h + lane_k[i]));
            best = s > best ? s : best;
        }
    return best;
}

int xf_qgemm_w_init(xf_qgemm_w_t *qw, const float *w, int32_t n, int32_t k, int32_t wmax,
                    int32_t lane_max, int32_t group)
{
    memset(qw, 0, sizeof *qw);
    if (!w || n <= 0 || k <= 0 || k > (1 << 20) || (wmax != 127 && wmax != 63) ||
        (lane_max && (wmax != 127 || lane_max < 8 || lane_max > 128)) || group < 0 || group > 3)
        return -EINVAL;
    const float fmax = (float)wmax;
    for (size_t i = 0; i < (size_t)n * (size_t)k; i++)
        if (!isfinite(w[i]))
            return -EINVAL;
    const int32_t n_pad = (n + XF_QGEMM_PANEL - 1) / XF_QGEMM_PANEL * XF_QGEMM_PANEL;
    const int32_t k_pad = xf_qgemm_ldq(k);
    const size_t wbytes = (size_t)n_pad * (size_t)k_pad;
    /* Straight into qw (zeroed above), so that xf_qgemm_w_deinit is the one cleanup. */
    int8_t *wq = qw->wq = aligned_alloc(64, up64(wbytes));
    float *sigma = qw->sigma = calloc((size_t)n_pad, sizeof *sigma);
    int32_t *colsum = qw->colsum = calloc((size_t)n_pad, sizeof *colsum);
    if (!wq || !sigma || !colsum) {
        xf_qgemm_w_deinit(qw);
        return -ENOMEM;
    }
    memset(wq, 0, wbytes);
    qw->n_pad = n_pad;   /* the geometry first: xf_qgemm_w_panel_off reads it */
    qw->k_pad = k_pad;
    qw->group = group > 1 && k_pad <= XF_QGEMM_GROUP_KMAX ? group : 1;
    for (int32_t o = 0; o < n; o++) {
        const float *wo = w + (size_t)o * (size_t)k;
        float amax = 0.0f;
        for (int32_t i = 0; i < k; i++)
            amax = fabsf(wo[i]) > amax ? fabsf(wo[i]) : amax;
        if (amax == 0.0f)
            continue;   /* σ = 0, W^q = 0 */
        sigma[o] = amax / fmax;
        float inv = fmax / amax;
        if (lane_max) {
            /* Σ_lane |W·inv| ≤ L − 2 (to a few ulp), and 4 roundings add at most 2 more: the
             * integer sum is ≤ L − 2 + 2 + (a few ulp), so ≤ L. The largest lane holds the
             * largest weight and L − 2 < 127, so this bound is always the tighter one (and
             * |W^q| ≤ 126). */
            const float lmax = lane_amax(wo, k), room = (float)(lane_max - 2);
            sigma[o] = lmax / room;
            inv = room / lmax;
        }
        int32_t cs = 0;
        size_t po = xf_qgemm_w_panel_off(qw, o / 16), gs = xf_qgemm_w_gstride(qw, o / 16);
        size_t c = (size_t)o % 16;
        for (int32_t i = 0; i < k; i++) {
            float v = rintf(wo[i] * inv);
            v = v > fmax ? fmax : v < -fmax ? -fmax : v;
            int8_t q = (int8_t)v;
            wq[po + (size_t)i / 4 * gs + c * 4 + (size_t)i % 4] = q;
            cs += q;
        }
        colsum[o] = cs;
    }
    qw->n = n;
    qw->k = k;
    qw->wmax = wmax;
    qw->lane_max = lane_max;
    qw->bytes = wbytes + (size_t)n_pad * (sizeof *sigma + sizeof *colsum);
    return 0;
}

int xf_qgemm_w_stack(xf_qgemm_w_t *out, const xf_qgemm_w_t *parts, int n_parts)
{
    memset(out, 0, sizeof *out);
    if (!parts || n_parts < 1)
        return -EINVAL;
    int32_t n = 0, n_pad = 0;
    for (int i = 0; i < n_parts; i++) {
        const xf_qgemm_w_t *p = &parts[i];
        if (!p->wq || p->k != parts[0].k || p->wmax != parts[0].wmax ||
            p->lane_max != parts[0].lane_max || p->group != parts[0].group)
            return -EINVAL;
        if (i + 1 < n_parts && p->n % XF_QGEMM_PANEL)
            return -ENOTSUP;
        n += p->n;
        n_pad += p->n_pad;
    }
    const int32_t k_pad = parts[0].k_pad;
    const size_t wbytes = (size_t)n_pad * (size_t)k_pad;
    int8_t *wq = aligned_alloc(64, up64(wbytes));
    float *sigma = malloc((size_t)n_pad * sizeof *sigma);
    int32_t *colsum = malloc((size_t)n_pad * sizeof *colsum);
    if (!wq || !sigma || !colsum) {
        free(wq);
        free(sigma);
        free(colsum);
        return -ENOMEM;
    }
    out->n_pad = n_pad;   /* the geometry xf_qgemm_w_panel_off reads */
    out->k_pad = k_pad;
    out->group = parts[0].group;
    const size_t kg = (size_t)k_pad / 4;
    int32_t at = 0;   /* first panel of part i in the stack */
    for (int i = 0; i < n_parts; i++) {
        const xf_qgemm_w_t *p = &parts[i];
        for (int32_t q = 0; q < p->n_pad / 16; q++) {   /* panel by panel, k-group by k-group */
            const int8_t *src = p->wq + xf_qgemm_w_panel_off(p, q);
            int8_t *dst = wq + xf_qgemm_w_panel_off(out, at + q);
            size_t ss = xf_qgemm_w_gstride(p, q), ds = xf_qgemm_w_gstride(out, at + q);
            for (size_t g = 0; g < kg; g++)
                memcpy(dst + g * ds, src + g * ss, 64);
        }
        memcpy(sigma + 16 * at, p->sigma, (size_t)p->n_pad * sizeof *sigma);
        memcpy(colsum + 16 * at, p->colsum, (size_t)p->n_pad * sizeof *colsum);
        at += p->n_pad / 16;
    }
    out->n = n;
    out->k = parts[0].k;
    out->wmax = parts[0].wmax;
    out->lane_max = parts[0].lane_max;
    out->wq = wq;
    out->sigma = sigma;
    out->colsum = colsum;
    out->bytes = wbytes + (size_t)n_pad * (sizeof *sigma + sizeof *colsum);
    return 0;
}

void xf_qgemm_w_deinit(xf_qgemm_w_t *qw)
{
    if (!qw)
        return;
    free(qw->wq);
    free(qw->sigma);
    free(qw->colsum);
    memset(qw, 0, sizeof *qw);
}
