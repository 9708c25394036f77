/* Family-T micro-kernels for AVX-512 (compiled with -mavx512f -mavx512bw -mavx512vl
 * -mavx512dq -mfma): tile logits S = factor·Q·Kᵀ (4 rows × 64 keys register block), the
 * online-softmax update with a polynomial exp (exact 0 for excluded keys), and O += P·V
 * (4 rows × 64 columns). Selected at run time by xf_at_kern_get(). */
#include "config.h"

#include <immintrin.h>
#include <math.h>

#include "attention/fam_t.h"
#include "engine/kernels/x86/vmath_avx512.h"

#define BK XF_AT_T_BK

/* One step of a 4-row × 64-column register block: row i's accumulators a<i>0..a<i>3 +=
 * x_i · w0..w3 (x_i broadcast), rows 0..3 in order. */
#define FMA_ROW(acc, x, w0, w1, w2, w3)                                                      \
    do {                                                                                     \
        __m512 b_ = _mm512_set1_ps(x);                                                       \
        acc##0 = _mm512_fmadd_ps(b_, w0, acc##0); acc##1 = _mm512_fmadd_ps(b_, w1, acc##1);  \
        acc##2 = _mm512_fmadd_ps(b_, w2, acc##2); acc##3 = _mm512_fmadd_ps(b_, w3, acc##3);  \
    } while (0)
#define FMA_4X4(x0, x1, x2, x3, w0, w1, w2, w3)                                              \
    do {                                                                                     \
        FMA_ROW(a0, x0, w0, w1, w2, w3); FMA_ROW(a1, x1, w0, w1, w2, w3);                    \
        FMA_ROW(a2, x2, w0, w1, w2, w3); FMA_ROW(a3, x3, w0, w1, w2, w3);                    \
    } while (0)

static void qk_avx512(int32_t nq, int32_t d, int32_t ldq, const float *qt, const float *kt,
                      float factor, float *s)
{
    const __m512 f = _mm512_set1_ps(factor);
    int32_t r = 0;

    for (; r + 4 <= nq; r += 4) {
        __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
        __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
        __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        const float *q0 = qt + (size_t)r * ldq, *q1 = q0 + ldq, *q2 = q1 + ldq, *q3 = q2 + ldq;
        for (int32_t c = 0; c < d; c++) {
            const float *kr = kt + (size_t)c * BK;
            __m512 k0 = _mm512_load_ps(kr), k1 = _mm512_load_ps(kr + 16);
            __m512 k2 = _mm512_load_ps(kr + 32), k3 = _mm512_load_ps(kr + 48);
            FMA_4X4(q0[c], q1[c], q2[c], q3[c], k0, k1, k2, k3);
        }
        float *s0 = s + (size_t)r * BK;
        _mm512_store_ps(s0, _mm512_mul_ps(a00, f));
        _mm512_store_ps(s0 + 16, _mm512_mul_ps(a01, f));
        _mm512_store_ps(s0 + 32, _mm512_mul_ps(a02, f));
        _mm512_store_ps(s0 + 48, _mm512_mul_ps(a03, f));
        _mm512_store_ps(s0 + BK, _mm512_mul_ps(a10, f));
        _mm512_store_ps(s0 + BK + 16, _mm512_mul_ps(a11, f));
        _mm512_store_ps(s0 + BK + 32, _mm512_mul_ps(a12, f));
        _mm512_store_ps(s0 + BK + 48, _mm512_mul_ps(a13, f));
        _mm512_store_ps(s0 + 2 * BK, _mm512_mul_ps(a20, f));
        _mm512_store_ps(s0 + 2 * BK + 16, _mm512_mul_ps(a21, f));
        _mm512_store_ps(s0 + 2 * BK + 32, _mm512_mul_ps(a22, f));
        _mm512_store_ps(s0 + 2 * BK + 48, _mm512_mul_ps(a23, f));
        _mm512_store_ps(s0 + 3 * BK, _mm512_mul_ps(a30, f));
        _mm512_store_ps(s0 + 3 * BK + 16, _mm512_mul_ps(a31, f));
        _mm512_store_ps(s0 + 3 * BK + 32, _mm512_mul_ps(a32, f));
        _mm512_store_ps(s0 + 3 * BK + 48, _mm512_mul_ps(a33, f));
    }
    for (; r < nq; r++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *q0 = qt + (size_t)r * ldq;
        for (int32_t c = 0; c < d; c++) {
            const float *kr = kt + (size_t)c * BK;
            __m512 b = _mm512_set1_ps(q0[c]);
            a0 = _mm512_fmadd_ps(b, _mm512_load_ps(kr), a0);
            a1 = _mm512_fmadd_ps(b, _mm512_load_ps(kr + 16), a1);
            a2 = _mm512_fmadd_ps(b, _mm512_load_ps(kr + 32), a2);
            a3 = _mm512_fmadd_ps(b, _mm512_load_ps(kr + 48), a3);
        }
        float *s0 = s + (size_t)r * BK;
        _mm512_store_ps(s0, _mm512_mul_ps(a0, f));
        _mm512_store_ps(s0 + 16, _mm512_mul_ps(a1, f));
        _mm512_store_ps(s0 + 32, _mm512_mul_ps(a2, f));
        _mm512_store_ps(s0 + 48, _mm512_mul_ps(a3, f));
    }
}

/* exp(x) for x <= 0 (x = logit − running max): the engine's vector exp (vmath_avx512.h);
 * lanes below −87 (and −inf, NaN) give exactly 0, so excluded keys never enter the sums. The
 * lanes kept are in [−87, 0], where the exp's range clamps change nothing: skipped. */
static inline __m512 exp_neg(__m512 x)
{
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
    return _mm512_maskz_mov_ps(keep, xf_exp512_inrange(x));
}

/* Lane i = the maximum of v[i]'s 16 lanes, for 16 vectors at once (a reduction tree of 128-bit
 * lane shuffles and in-lane unpacks: 46 operations where 16 separate reductions take 128). NaN
 * lanes give any value (the callers track NaN apart). */
static inline __m512 hmax16(const __m512 *v)
{
    __m512 x[8], y[4], z[2];
    for (int k = 0; k < 8; k++)   /* row k in 128-bit lanes 0, 1; row k + 8 in 2, 3 */
        x[k] = _mm512_max_ps(_mm512_shuffle_f32x4(v[k], v[k + 8], 0x44),
                             _mm512_shuffle_f32x4(v[k], v[k + 8], 0xEE));
    for (int k = 0; k < 4; k++)   /* one lane each: rows k, k + 8, k + 4, k + 12 */
        y[k] = _mm512_max_ps(_mm512_shuffle_f32x4(x[k], x[k + 4], 0x88),
                             _mm512_shuffle_f32x4(x[k], x[k + 4], 0xDD));
    for (int k = 0; k < 2; k++)   /* per lane: y[2k]'s row at elements 0, 2; y[2k+1]'s at 1, 3 */
        z[k] = _mm512_max_ps(_mm512_unpacklo_ps(y[2 * k], y[2 * k + 1]),
                             _mm512_unpackhi_ps(y[2 * k], y[2 * k + 1]));
    __m512d a = _mm512_castps_pd(z[0]), b = _mm512_castps_pd(z[1]);
    __m512 w = _mm512_max_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    /* lanes hold rows 0-3, 8-11, 4-7, 12-15 */
    return _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(3, 1, 2, 0));
}

static void softmax_avx512(int32_t nq, int32_t nk, int32_t dp, float *s, float *m, float *l,
                           float *acc)
{
    const int32_t nv = (nk + 15) / 16;
    _Alignas(64) float pm[XF_AT_T_BQ][16], mn[XF_AT_T_BQ], corr[XF_AT_T_BQ];
    uint32_t nanrows = 0;      /* bit r: row r has a NaN score */

    /* each row's 16-lane partial maximum (whole 64-key chunks without masks) */
    for (int32_t r = 0; r < nq; r++) {
        const float *sr = s + (size_t)r * BK;
        __m512 mx;
        __mmask16 nan;
        if (nk == BK) {
            __m512 x0 = _mm512_load_ps(sr), x1 = _mm512_load_ps(sr + 16);
            __m512 x2 = _mm512_load_ps(sr + 32), x3 = _mm512_load_ps(sr + 48);
            mx = _mm512_max_ps(_mm512_max_ps(x0, x1), _mm512_max_ps(x2, x3));
            nan = _mm512_cmp_ps_mask(x0, x1, _CMP_UNORD_Q) |
                  _mm512_cmp_ps_mask(x2, x3, _CMP_UNORD_Q);
        } else {
            mx = _mm512_set1_ps(-INFINITY);
            nan = 0;
            for (int32_t v = 0; v < nv; v++) {
                int32_t rem = nk - 16 * v;
                __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
                __m512 x = _mm512_maskz_loadu_ps(mk, sr + 16 * v);
                mx = _mm512_mask_max_ps(mx, mk, mx, x);
                nan |= _mm512_mask_cmp_ps_mask(mk, x, x, _CMP_UNORD_Q);
            }
        }
        _mm512_store_ps(pm[r], mx);
        nanrows |= (uint32_t)(nan != 0) << r;
    }
    /* new maxima and corrections, 16 rows at a time */
    for (int32_t r0 = 0; r0 < nq; r0 += 16) {
        const int32_t rem = nq - r0;
        const __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
        __m512 v[16];
        for (int i = 0; i < 16; i++)
            v[i] = i < rem ? _mm512_load_ps(pm[r0 + i]) : _mm512_set1_ps(-INFINITY);
        const __m512 mo = _mm512_maskz_loadu_ps(mk, m + r0);
        /* max_ps returns its second operand when either is NaN: a NaN m stays NaN; a NaN
         * score (or an earlier one in m) poisons the row */
        __m512 mnew = _mm512_max_ps(hmax16(v), mo);
        mnew = _mm512_mask_mov_ps(mnew, (__mmask16)(nanrows >> r0), _mm512_set1_ps(NAN));
        /* m = −inf (nothing seen yet) gives corr = exp(−inf) = 0 */
        __mmask16 live = _mm512_cmp_ps_mask(mnew, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
        __m512 diff = _mm512_maskz_sub_ps(live, mo, mnew);
        _mm512_mask_storeu_ps(mn + r0, mk, mnew);
        _mm512_mask_storeu_ps(corr + r0, mk, exp_neg(diff));
    }
    for (int32_t r = 0; r < nq; r++) {
        float *sr = s + (size_t)r * BK;
        if (isnan(mn[r])) {   /* see above: the output of the row becomes NaN */
            xf_at_t_poison_row(r, nk, dp, s, m, l, acc);
            continue;
        }
        if (mn[r] == -INFINITY) {   /* every key so far excluded */
            for (int32_t j = 0; j < nk; j++)
                sr[j] = 0.0f;
            continue;
        }
        __m512 mm = _mm512_set1_ps(mn[r]);
        __m512 sum = _mm512_setzero_ps();
        if (nk == BK) {
            for (int32_t v = 0; v < 4; v++) {
                __m512 p = exp_neg(_mm512_sub_ps(_mm512_load_ps(sr + 16 * v), mm));
                _mm512_store_ps(sr + 16 * v, p);
                sum = _mm512_add_ps(sum, p);
            }
        } else {
            for (int32_t v = 0; v < nv; v++) {
                int32_t rem = nk - 16 * v;
                __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
                __m512 x = _mm512_maskz_loadu_ps(mk, sr + 16 * v);
                __m512 p = _mm512_maskz_mov_ps(mk, exp_neg(_mm512_sub_ps(x, mm)));
                _mm512_mask_storeu_ps(sr + 16 * v, mk, p);
                sum = _mm512_add_ps(sum, p);
            }
        }
        const float cr = corr[r];
        float *lr = l + (size_t)r * XF_AT_T_LW;
        _mm512_store_ps(lr, _mm512_fmadd_ps(_mm512_set1_ps(cr), _mm512_load_ps(lr), sum));
        /* m = −inf before: acc holds only 0·v terms, which a factor of 0 leaves as they are */
        const int first = m[r] == -INFINITY;
        m[r] = mn[r];
        if (cr != 1.0f && !first) {
            __m512 cv = _mm512_set1_ps(cr);
            float *ar = acc + (size_t)r * dp;
            for (int32_t c = 0; c < dp; c += 16)
                _mm512_store_ps(ar + c, _mm512_mul_ps(_mm512_load_ps(ar + c), cv));
        }
    }
}

/* In-register 16×16 transpose: r[i][j] -> r[j][i]. */
static inline void tr16(__m512 *r)
{
    __m512 t[16];
    for (int p = 0; p < 8; p++) {
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    __m512 u[16];
    for (int q = 0; q < 4; q++) {
        __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 2]);
        __m512d c = _mm512_castps_pd(t[4 * q + 1]), e = _mm512_castps_pd(t[4 * q + 3]);
        u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e));
        u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e));
    }
    /* u[4q + m], 128-bit lane L: column 4L + m of rows 4q..4q+3 */
    for (int m = 0; m < 4; m++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
        r[m] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + m] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

static void kt_avx512(int32_t nk, int32_t d, int32_t ldk, const float *K, const int32_t *rows,
                      float *kt)
{
    /* The rows are usually outside L1/L2 (another op wrote them): ask for all of their lines
     * first, so that the misses overlap instead of 16 rows at a time. */
    for (int32_t j = 0; j < nk && j < BK; j++)
        for (int32_t x0 = 0; x0 < d; x0 += 16)
            _mm_prefetch((const char *)(K + (size_t)rows[j] * ldk + x0), _MM_HINT_T0);
    for (int32_t j0 = 0; j0 < BK; j0 += 16) {
        for (int32_t x0 = 0; x0 < d; x0 += 16) {
            int32_t rem = d - x0, nx = rem < 16 ? rem : 16;
            __mmask16 mx = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
            __m512 r[16];
            if (j0 >= nk) {
                for (int32_t i = 0; i < nx; i++)
                    _mm512_store_ps(kt + (size_t)(x0 + i) * BK + j0, _mm512_setzero_ps());
                continue;
            }
            for (int32_t i = 0; i < 16; i++)
                r[i] = j0 + i < nk ? _mm512_maskz_loadu_ps(mx, K + (size_t)rows[j0 + i] * ldk + x0)
                                   : _mm512_setzero_ps();
            tr16(r);
            for (int32_t i = 0; i < nx; i++)
                _mm512_store_ps(kt + (size_t)(x0 + i) * BK + j0, r[i]);
        }
    }
}

static void mask_avx512(int32_t nq, int32_t nk, const int32_t *keys, const uint8_t *full,
                        const int32_t *lo, const int32_t *hi, const int32_t *kcls,
                        const int32_t *rcls, int and_mode, float *s)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int32_t v = 0; v < nk; v += 16) {
        int32_t rem = nk - v;
        __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
        __m512i kv = _mm512_maskz_loadu_epi32(mk, keys + v);
        __m512i fv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, full + v));
        __mmask16 fm = _mm512_test_epi32_mask(fv, fv);
        __m512i cv = kcls ? _mm512_maskz_loadu_epi32(mk, kcls + v) : _mm512_setzero_si512();
        for (int32_t r = 0; r < nq; r++) {
            __mmask16 in = _mm512_cmpge_epi32_mask(kv, _mm512_set1_epi32(lo[r])) &
                           _mm512_cmplt_epi32_mask(kv, _mm512_set1_epi32(hi[r]));
            __mmask16 cl = kcls ? _mm512_cmpeq_epi32_mask(cv, _mm512_set1_epi32(rcls[r]))
                                : (and_mode ? (__mmask16)0xFFFF : (__mmask16)0);
            __mmask16 keep = (__mmask16)((and_mode ? (in & cl) : (in | cl)) | fm);
            float *sr = s + (size_t)r * BK + v;
            _mm512_mask_storeu_ps(sr, (__mmask16)(mk & ~keep), ninf);
        }
    }
}

static void scale_avx512(int32_t d, const float *src, float f, float *dst)
{
    const __m512 fv = _mm512_set1_ps(f);
    for (int32_t c = 0; c < d; c += 16) {
        int32_t rem = d - c;
        __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
        _mm512_mask_storeu_ps(dst + c, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, src + c), fv));
    }
}

static void pv_avx512(int32_t nq, int32_t nk, int32_t dp, const float *p,
                      const float *const *vt, float *acc)
{
    int32_t r = 0;

    for (; r + 4 <= nq; r += 4) {
        const float *p0 = p + (size_t)r * BK, *p1 = p0 + BK, *p2 = p1 + BK, *p3 = p2 + BK;
        float *o0 = acc + (size_t)r * dp, *o1 = o0 + dp, *o2 = o1 + dp, *o3 = o2 + dp;
        int32_t c = 0;
        for (; c + 64 <= dp; c += 64) {
            __m512 a00 = _mm512_load_ps(o0 + c), a01 = _mm512_load_ps(o0 + c + 16);
            __m512 a02 = _mm512_load_ps(o0 + c + 32), a03 = _mm512_load_ps(o0 + c + 48);
            __m512 a10 = _mm512_load_ps(o1 + c), a11 = _mm512_load_ps(o1 + c + 16);
            __m512 a12 = _mm512_load_ps(o1 + c + 32), a13 = _mm512_load_ps(o1 + c + 48);
            __m512 a20 = _mm512_load_ps(o2 + c), a21 = _mm512_load_ps(o2 + c + 16);
            __m512 a22 = _mm512_load_ps(o2 + c + 32), a23 = _mm512_load_ps(o2 + c + 48);
            __m512 a30 = _mm512_load_ps(o3 + c), a31 = _mm512_load_ps(o3 + c + 16);
            __m512 a32 = _mm512_load_ps(o3 + c + 32), a33 = _mm512_load_ps(o3 + c + 48);
            for (int32_t j = 0; j < nk; j++) {
                const float *vr = vt[j] + c;
                __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16);
                __m512 v2 = _mm512_loadu_ps(vr + 32), v3 = _mm512_loadu_ps(vr + 48);
                FMA_4X4(p0[j], p1[j], p2[j], p3[j], v0, v1, v2, v3);
            }
            _mm512_store_ps(o0 + c, a00); _mm512_store_ps(o0 + c + 16, a01);
            _mm512_store_ps(o0 + c + 32, a02); _mm512_store_ps(o0 + c + 48, a03);
            _mm512_store_ps(o1 + c, a10); _mm512_store_ps(o1 + c + 16, a11);
            _mm512_store_ps(o1 + c + 32, a12); _mm512_store_ps(o1 + c + 48, a13);
            _mm512_store_ps(o2 + c, a20); _mm512_store_ps(o2 + c + 16, a21);
            _mm512_store_ps(o2 + c + 32, a22); _mm512_store_ps(o2 + c + 48, a23);
            _mm512_store_ps(o3 + c, a30); _mm512_store_ps(o3 + c + 16, a31);
            _mm512_store_ps(o3 + c + 32, a32); _mm512_store_ps(o3 + c + 48, a33);
        }
        for (; c < dp; c += 16) {
            __m512 a0 = _mm512_load_ps(o0 + c), a1 = _mm512_load_ps(o1 + c);
            __m512 a2 = _mm512_load_ps(o2 + c), a3 = _mm512_load_ps(o3 + c);
            for (int32_t j = 0; j < nk; j++) {
                __m512 v = _mm512_loadu_ps(vt[j] + c);
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(p0[j]), v, a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(p1[j]), v, a1);
                a2 = _mm512_fmadd_ps(_mm512_set1_ps(p2[j]), v, a2);
                a3 = _mm512_fmadd_ps(_mm512_set1_ps(p3[j]), v, a3);
            }
            _mm512_store_ps(o0 + c, a0); _mm512_store_ps(o1 + c, a1);
            _mm512_store_ps(o2 + c, a2); _mm512_store_ps(o3 + c, a3);
        }
    }
    for (; r < nq; r++) {
        const float *p0 = p + (size_t)r * BK;
        float *o0 = acc + (size_t)r * dp;
        for (int32_t c = 0; c < dp; c += 16) {
            __m512 a0 = _mm512_load_ps(o0 + c);
            for (int32_t j = 0; j < nk; j++)
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(p0[j]),
                                     _mm512_loadu_ps(vt[j] + c), a0);
            _mm512_store_ps(o0 + c, a0);
        }
    }
}

static const xf_at_kern kern_avx512 = {
    .name = "avx512", .qk = qk_avx512, .softmax = softmax_avx512, .pv = pv_avx512,
    .scale = scale_avx512, .kt = kt_avx512,
    .mask = mask_avx512,
};

const xf_at_kern *xf_at_kern_avx512(void)
{
    return &kern_avx512;
}
