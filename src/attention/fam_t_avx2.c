/* Family-T micro-kernels for AVX2+FMA (compiled with -mavx2 -mfma): the same xf_at_kern
 * interface as fam_t_avx512.c for CPUs without AVX-512 (or under XF_CPU=avx2). Tile logits
 * S = factor·Q·Kᵀ (6 rows × 16 keys register block: 12 ymm accumulators), the online-softmax
 * update with xf_exp256's steps on [−87, 0] (exact 0 for excluded keys; NaN and +inf logits
 * propagate to the row's output as NaN), O += P·V (6 rows × 16 columns), the K-chunk transpose
 * in 8×8 blocks and the membership mask with integer compares. Selected at run time by
 * xf_at_kern_get(). */
#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attention/fam_t.h"
#include "engine/kernels/x86/vmath_avx2.h"

#define BK XF_AT_T_BK
#define XF_INLINE static inline __attribute__((always_inline))

/* Lanes [0, n) set (n clamped to 0..8), for maskload/maskstore. */
XF_INLINE __m256i lanes(int32_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* s rows [0, mr) × keys [0, 16) of one 16-key column: 2 ymm per row, mr <= 6 (12 accumulators,
 * the two Kᵀ vectors and a broadcast: 15 of the 16 ymm registers). */
XF_INLINE void qk_block(const int mr, int32_t d, int32_t ldq, const float *qt, const float *kt,
                        __m256 f, float *s)
{
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int32_t c = 0; c < d; c++) {
        const float *kr = kt + (size_t)c * BK;
        __m256 k0 = _mm256_load_ps(kr), k1 = _mm256_load_ps(kr + 8);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 b = _mm256_broadcast_ss(qt + (size_t)i * ldq + c);
            acc[i][0] = _mm256_fmadd_ps(b, k0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(b, k1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        float *sr = s + (size_t)i * BK;
        _mm256_store_ps(sr, _mm256_mul_ps(acc[i][0], f));
        _mm256_store_ps(sr + 8, _mm256_mul_ps(acc[i][1], f));
    }
}

/* The 64 keys of rows [0, mr), mr in 1..6 (a constant mr for each block). */
XF_INLINE void qk_rows(int32_t mr, int32_t d, int32_t ldq, const float *qt, const float *kt,
                       __m256 f, float *s)
{
    for (int32_t j0 = 0; j0 < BK; j0 += 16) {
        switch (mr) {
        case 6: qk_block(6, d, ldq, qt, kt + j0, f, s + j0); break;
        case 5: qk_block(5, d, ldq, qt, kt + j0, f, s + j0); break;
        case 4: qk_block(4, d, ldq, qt, kt + j0, f, s + j0); break;
        case 3: qk_block(3, d, ldq, qt, kt + j0, f, s + j0); break;
        case 2: qk_block(2, d, ldq, qt, kt + j0, f, s + j0); break;
        default: qk_block(1, d, ldq, qt, kt + j0, f, s + j0); break;
        }
    }
}

static void qk_avx2(int32_t nq, int32_t d, int32_t ldq, const float *qt, const float *kt,
                    float factor, float *s)
{
    const __m256 f = _mm256_set1_ps(factor);
    for (int32_t r = 0; r < nq; r += 6)
        qk_rows(nq - r < 6 ? nq - r : 6, d, ldq, qt + (size_t)r * ldq, kt, f, s + (size_t)r * BK);
}

/* exp(x) for x <= 0 (x = logit − running max, or a difference of maxima) as the online
 * softmax needs it: lanes below −87 (and −inf) exactly 0 (excluded keys never enter the sums),
 * NaN lanes NaN. Kept lanes are in [−87, 0], where xf_exp256's range clamps and its +inf and
 * two-step 2^n cases do nothing: its steps without them (the same bits for those lanes; about
 * 16 operations instead of 27). */
XF_INLINE __m256 exp_neg(__m256 x)
{
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);   /* false for NaN */
    __m256 n, p = xf_exp_core256(x, &n);
    /* n in [−126, 0] on kept lanes: 2^n is a normal float (one product, rounded once, as
     * xf_exp256's two exact steps) */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* Lane i = the maximum of v[i]'s 8 lanes, for 8 vectors at once (21 operations where 8
 * separate reductions take 40). NaN lanes give any value (the callers track NaN apart). */
XF_INLINE __m256 hmax8(const __m256 *v)
{
    __m256 x[4], z[2];
    for (int k = 0; k < 4; k++)   /* row k in the low 128 bits, row k + 4 in the high */
        x[k] = _mm256_max_ps(_mm256_permute2f128_ps(v[k], v[k + 4], 0x20),
                             _mm256_permute2f128_ps(v[k], v[k + 4], 0x31));
    for (int k = 0; k < 2; k++)   /* per half: x[2k]'s row at elements 0, 2; x[2k+1]'s at 1, 3 */
        z[k] = _mm256_max_ps(_mm256_unpacklo_ps(x[2 * k], x[2 * k + 1]),
                             _mm256_unpackhi_ps(x[2 * k], x[2 * k + 1]));
    __m256d a = _mm256_castps_pd(z[0]), b = _mm256_castps_pd(z[1]);
    return _mm256_max_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)),
                         _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
}

static void softmax_avx2(int32_t nq, int32_t nk, int32_t dp, float *s, float *m, float *l,
                         float *acc)
{
    const int32_t nv = (nk + 7) / 8;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    _Alignas(32) float pm[XF_AT_T_BQ][8], mn[XF_AT_T_BQ], corr[XF_AT_T_BQ];
    _Alignas(32) int32_t nanr[XF_AT_T_BQ];

    /* each row's 8-lane partial maximum (whole 64-key chunks without masks) */
    for (int32_t r = 0; r < nq; r++) {
        const float *sr = s + (size_t)r * BK;
        __m256 mx = ninf, nan = _mm256_setzero_ps();
        if (nk == BK) {
            __m256 x[8];
            for (int v = 0; v < 8; v++)
                x[v] = _mm256_load_ps(sr + 8 * v);
            for (int v = 0; v < 8; v += 2)
                nan = _mm256_or_ps(nan, _mm256_cmp_ps(x[v], x[v + 1], _CMP_UNORD_Q));
            mx = _mm256_max_ps(_mm256_max_ps(_mm256_max_ps(x[0], x[1]),
                                             _mm256_max_ps(x[2], x[3])),
                               _mm256_max_ps(_mm256_max_ps(x[4], x[5]),
                                             _mm256_max_ps(x[6], x[7])));
        } else {
            for (int32_t v = 0; v < nv; v++) {
                __m256 x = _mm256_maskload_ps(sr + 8 * v, lanes(nk - 8 * v));
                x = _mm256_blendv_ps(ninf, x, _mm256_castsi256_ps(lanes(nk - 8 * v)));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
                mx = _mm256_max_ps(mx, x);
            }
        }
        _mm256_store_ps(pm[r], mx);
        nanr[r] = _mm256_movemask_ps(nan) ? -1 : 0;
    }
    /* new maxima and corrections, 8 rows at a time */
    for (int32_t r0 = 0; r0 < nq; r0 += 8) {
        const __m256i mk = lanes(nq - r0);
        __m256 v[8];
        for (int i = 0; i < 8; i++)
            v[i] = r0 + i < nq ? _mm256_load_ps(pm[r0 + i]) : ninf;
        const __m256 mo = _mm256_maskload_ps(m + r0, mk);
        /* max_ps returns its second operand when either is NaN: a NaN m stays NaN; a NaN
         * score makes the row's max NaN */
        __m256 mnew = _mm256_max_ps(hmax8(v), mo);
        mnew = _mm256_blendv_ps(mnew, _mm256_set1_ps(NAN),
                                _mm256_castsi256_ps(_mm256_maskload_epi32(nanr + r0, mk)));
        /* m = −inf (nothing seen yet) gives corr = exp(−inf) = 0 */
        __m256 live = _mm256_cmp_ps(mnew, ninf, _CMP_NEQ_UQ);
        __m256 diff = _mm256_and_ps(live, _mm256_sub_ps(mo, mnew));
        _mm256_maskstore_ps(mn + r0, mk, mnew);
        _mm256_maskstore_ps(corr + r0, mk, exp_neg(diff));
    }
    for (int32_t r = 0; r < nq; r++) {
        float *sr = s + (size_t)r * BK;
        /* a NaN max makes every weight, l and acc of the row NaN (exp(NaN) = NaN) */
        if (mn[r] == -INFINITY) {   /* every key so far excluded */
            for (int32_t j = 0; j < nk; j++)
                sr[j] = 0.0f;
            continue;
        }
        const __m256 mm = _mm256_set1_ps(mn[r]);
        __m256 sum0 = _mm256_setzero_ps(), sum1 = sum0;
        if (nk == BK) {
            for (int32_t v = 0; v < 8; v += 2) {
                __m256 p0 = exp_neg(_mm256_sub_ps(_mm256_load_ps(sr + 8 * v), mm));
                __m256 p1 = exp_neg(_mm256_sub_ps(_mm256_load_ps(sr + 8 * v + 8), mm));
                _mm256_store_ps(sr + 8 * v, p0);
                _mm256_store_ps(sr + 8 * v + 8, p1);
                sum0 = _mm256_add_ps(sum0, p0);
                sum1 = _mm256_add_ps(sum1, p1);
            }
        } else {
            for (int32_t v = 0; v < nv; v++) {
                __m256i mk = lanes(nk - 8 * v);
                __m256 x = _mm256_maskload_ps(sr + 8 * v, mk);
                __m256 p = _mm256_and_ps(exp_neg(_mm256_sub_ps(x, mm)),
                                         _mm256_castsi256_ps(mk));
                _mm256_maskstore_ps(sr + 8 * v, mk, p);
                if (v & 1)
                    sum1 = _mm256_add_ps(sum1, p);
                else
                    sum0 = _mm256_add_ps(sum0, p);
            }
        }
        const float cr = corr[r];
        const __m256 cv = _mm256_set1_ps(cr);
        float *lr = l + (size_t)r * XF_AT_T_LW;
        _mm256_store_ps(lr, _mm256_fmadd_ps(cv, _mm256_load_ps(lr), sum0));
        _mm256_store_ps(lr + 8, _mm256_fmadd_ps(cv, _mm256_load_ps(lr + 8), sum1));
        /* m = −inf before: acc holds only 0·v terms, which a factor of 0 leaves as they are */
        const int first = m[r] == -INFINITY;
        m[r] = mn[r];
        if (cr != 1.0f && !first) {
            float *ar = acc + (size_t)r * dp;
            for (int32_t c = 0; c < dp; c += 8)
                _mm256_store_ps(ar + c, _mm256_mul_ps(_mm256_load_ps(ar + c), cv));
        }
    }
}

/* acc rows [0, mr) × columns [c, c+16) += Σ_j p[r][j]·vt[j][c], mr <= 6 (12 accumulators). */
XF_INLINE void pv_block(const int mr, int32_t nk, int32_t dp, const float *p,
                        const float *const *vt, int32_t c, float *o)
{
    __m256 a[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        a[i][0] = _mm256_load_ps(o + (size_t)i * dp);
        a[i][1] = _mm256_load_ps(o + (size_t)i * dp + 8);
    }
    for (int32_t j = 0; j < nk; j++) {
        const float *vr = vt[j] + c;
        __m256 w0 = _mm256_loadu_ps(vr), w1 = _mm256_loadu_ps(vr + 8);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 b = _mm256_broadcast_ss(p + (size_t)i * BK + j);
            a[i][0] = _mm256_fmadd_ps(b, w0, a[i][0]);
            a[i][1] = _mm256_fmadd_ps(b, w1, a[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        _mm256_store_ps(o + (size_t)i * dp, a[i][0]);
        _mm256_store_ps(o + (size_t)i * dp + 8, a[i][1]);
    }
}

/* pv_block over every 16-column block of mr (1..6) rows, a constant mr for each. */
XF_INLINE void pv_rows(int32_t mr, int32_t nk, int32_t dp, const float *p,
                       const float *const *vt, float *o)
{
    for (int32_t c = 0; c < dp; c += 16) {   /* dp is a multiple of 16 */
        switch (mr) {
        case 6: pv_block(6, nk, dp, p, vt, c, o + c); break;
        case 5: pv_block(5, nk, dp, p, vt, c, o + c); break;
        case 4: pv_block(4, nk, dp, p, vt, c, o + c); break;
        case 3: pv_block(3, nk, dp, p, vt, c, o + c); break;
        case 2: pv_block(2, nk, dp, p, vt, c, o + c); break;
        default: pv_block(1, nk, dp, p, vt, c, o + c); break;
        }
    }
}

static void pv_avx2(int32_t nq, int32_t nk, int32_t dp, const float *p,
                    const float *const *vt, float *acc)
{
    for (int32_t r = 0; r < nq; r += 6)
        pv_rows(nq - r < 6 ? nq - r : 6, nk, dp, p + (size_t)r * BK, vt, acc + (size_t)r * dp);
}

static void kt_avx2(int32_t nk, int32_t d, int32_t ldk, const float *K, const int32_t *rows,
                    float *kt)
{
    /* as kt_avx512: all the rows' lines requested first, so that their misses overlap */
    for (int32_t j = 0; j < nk && j < BK; j++)
        for (int32_t x0 = 0; x0 < d; x0 += 16)
            _mm_prefetch((const char *)(K + (size_t)rows[j] * ldk + x0), _MM_HINT_T0);
    for (int32_t j0 = 0; j0 < BK; j0 += 8) {
        for (int32_t x0 = 0; x0 < d; x0 += 8) {
            const int32_t nx = d - x0 < 8 ? d - x0 : 8;
            if (j0 >= nk) {
                for (int32_t i = 0; i < nx; i++)
                    _mm256_store_ps(kt + (size_t)(x0 + i) * BK + j0, _mm256_setzero_ps());
                continue;
            }
            const __m256i mx = lanes(nx);
            __m256 r[8];
            for (int32_t i = 0; i < 8; i++)
                r[i] = j0 + i < nk ? _mm256_maskload_ps(K + (size_t)rows[j0 + i] * ldk + x0, mx)
                                   : _mm256_setzero_ps();
            xf_tr8x8_256(r);
            for (int32_t i = 0; i < nx; i++)
                _mm256_store_ps(kt + (size_t)(x0 + i) * BK + j0, r[i]);
        }
    }
}

static void mask_avx2(int32_t nq, int32_t nk, const int32_t *keys, const uint8_t *full,
                      const int32_t *lo, const int32_t *hi, const int32_t *kcls,
                      const int32_t *rcls, int and_mode, float *s)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256i ones = _mm256_set1_epi32(-1);
    for (int32_t v = 0; v < nk; v += 8) {
        const int32_t nv = nk - v < 8 ? nk - v : 8;
        const __m256i mk = lanes(nv);
        uint8_t fb[8] = { 0 };
        memcpy(fb, full + v, (size_t)nv);
        __m256i kv = _mm256_maskload_epi32(keys + v, mk);
        __m256i fv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)fb));
        __m256i fm = _mm256_xor_si256(_mm256_cmpeq_epi32(fv, _mm256_setzero_si256()), ones);
        __m256i cv = kcls ? _mm256_maskload_epi32(kcls + v, mk) : _mm256_setzero_si256();
        for (int32_t r = 0; r < nq; r++) {
            /* lo <= key < hi */
            __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(lo[r]), kv),
                                             _mm256_cmpgt_epi32(_mm256_set1_epi32(hi[r]), kv));
            __m256i cl = kcls ? _mm256_cmpeq_epi32(cv, _mm256_set1_epi32(rcls[r]))
                              : (and_mode ? ones : _mm256_setzero_si256());
            __m256i keep = _mm256_or_si256(and_mode ? _mm256_and_si256(in, cl)
                                                    : _mm256_or_si256(in, cl), fm);
            _mm256_maskstore_ps(s + (size_t)r * BK + v, _mm256_andnot_si256(keep, mk), ninf);
        }
    }
}

static void scale_avx2(int32_t d, const float *src, float f, float *dst)
{
    const __m256 fv = _mm256_set1_ps(f);
    for (int32_t c = 0; c < d; c += 8) {
        __m256i mk = lanes(d - c);
        _mm256_maskstore_ps(dst + c, mk, _mm256_mul_ps(_mm256_maskload_ps(src + c, mk), fv));
    }
}

static const xf_at_kern kern_avx2 = {
    .name = "avx2", .qk = qk_avx2, .softmax = softmax_avx2, .pv = pv_avx2,
    .scale = scale_avx2, .kt = kt_avx2, .mask = mask_avx2,
};

const xf_at_kern *xf_at_kern_avx2(void)
{
    return &kern_avx2;
}
