/* The family-T kernel (fam_t.h): plan sizing, cost-balanced (seq, head, query tile) items,
 * per-tile key sets with union semantics and exact exclusion, online softmax in 64-key
 * chunks, the A(i) = ∅ fallback (output v_i), and the portable micro-kernels. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attention/fam_s.h"
#include "attention/fam_t.h"
#include "attention/params.h"
#include "engine/kernels.h"
#include "engine/model.h"

#define BQ XF_AT_T_BQ
#define BK XF_AT_T_BK

/* ---- portable micro-kernels ---- */

void xf_at_t_poison_row(int32_t r, int32_t nk, int32_t dp, float *s, float *m, float *l,
                        float *acc)
{
    m[r] = NAN;
    for (int32_t j = 0; j < nk; j++)
        s[(size_t)r * BK + j] = 0.0f;
    for (int32_t x = 0; x < XF_AT_T_LW; x++)
        l[(size_t)r * XF_AT_T_LW + x] = NAN;
    for (int32_t c = 0; c < dp; c++)
        acc[(size_t)r * dp + c] = NAN;
}

static void qk_c(int32_t nq, int32_t d, int32_t ldq, const float *qt, const float *kt,
                 float factor, float *s)
{
    for (int32_t r = 0; r < nq; r++) {
        float acc[BK];
        for (int32_t j = 0; j < BK; j++)
            acc[j] = 0.0f;
        for (int32_t c = 0; c < d; c++) {
            const float a = qt[(size_t)r * ldq + c];
            const float *kr = kt + (size_t)c * BK;
            for (int32_t j = 0; j < BK; j++)
                acc[j] += a * kr[j];
        }
        for (int32_t j = 0; j < BK; j++)
            s[(size_t)r * BK + j] = acc[j] * factor;
    }
}

static void softmax_c(int32_t nq, int32_t nk, int32_t dp, float *s, float *m, float *l,
                      float *acc)
{
    for (int32_t r = 0; r < nq; r++) {
        float *sr = s + (size_t)r * BK;
        float mx = -INFINITY;
        int nan = isnan(m[r]);
        for (int32_t j = 0; j < nk; j++) {
            if (sr[j] > mx)
                mx = sr[j];
            nan |= isnan(sr[j]);
        }
        if (nan) {   /* a NaN score poisons the row: m = NaN, the output NaN (see finish) */
            xf_at_t_poison_row(r, nk, dp, s, m, l, acc);
            continue;
        }
        float mn = m[r] > mx ? m[r] : mx;
        if (mn == -INFINITY) {
            for (int32_t j = 0; j < nk; j++)
                sr[j] = 0.0f;
            continue;
        }
        float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn);
        float sum = 0.0f;
        for (int32_t j = 0; j < nk; j++) {
            float p = sr[j] == -INFINITY ? 0.0f : expf(sr[j] - mn);
            sr[j] = p;
            sum += p;
        }
        l[(size_t)r * XF_AT_T_LW] = corr * l[(size_t)r * XF_AT_T_LW] + sum;
        m[r] = mn;
        if (corr != 1.0f)
            for (int32_t c = 0; c < dp; c++)
                acc[(size_t)r * dp + c] *= corr;
    }
}

static void pv_c(int32_t nq, int32_t nk, int32_t dp, const float *p, const float *const *vt,
                 float *acc)
{
    for (int32_t r = 0; r < nq; r++) {
        float *o = acc + (size_t)r * dp;
        for (int32_t j = 0; j < nk; j++) {
            const float pj = p[(size_t)r * BK + j];
            if (pj == 0.0f)
                continue;
            const float *vr = vt[j];
            for (int32_t c = 0; c < dp; c++)
                o[c] += pj * vr[c];
        }
    }
}

static void kt_c(int32_t nk, int32_t d, int32_t ldk, const float *K, const int32_t *rows,
                 float *kt)
{
    for (int32_t jj = 0; jj < nk; jj++) {
        const float *kr = K + (size_t)rows[jj] * ldk;
        for (int32_t x = 0; x < d; x++)
            kt[(size_t)x * BK + jj] = kr[x];
    }
    if (nk < BK)
        for (int32_t x = 0; x < d; x++)
            memset(kt + (size_t)x * BK + nk, 0, (size_t)(BK - nk) * sizeof(float));
}

static void mask_c(int32_t nq, int32_t nk, const int32_t *keys, const uint8_t *full,
                   const int32_t *lo, const int32_t *hi, const int32_t *kcls,
                   const int32_t *rcls, int and_mode, float *s)
{
    for (int32_t r = 0; r < nq; r++) {
        float *sr = s + (size_t)r * BK;
        for (int32_t jj = 0; jj < nk; jj++) {
            int in = keys[jj] >= lo[r] && keys[jj] < hi[r];
            int cl = kcls ? kcls[jj] == rcls[r] : and_mode;
            int member = and_mode ? in && cl : in || cl;
            if (!full[jj] && !member)
                sr[jj] = -INFINITY;
        }
    }
}

static void scale_c(int32_t d, const float *src, float f, float *dst)
{
    for (int32_t c = 0; c < d; c++)
        dst[c] = src[c] * f;
}

static const xf_at_kern kern_c = {
    .name = "c", .qk = qk_c, .softmax = softmax_c, .pv = pv_c, .scale = scale_c,
    .kt = kt_c, .mask = mask_c,
};

const xf_at_kern *xf_at_kern_c(void)
{
    return &kern_c;
}

const xf_at_kern *xf_at_kern_get(void)
{
    return xf_kernels()->attn;
}

/* ---- key sets ---- */

void xf_at_t_keys_add(xf_at_t_keys *kb, int32_t n, int32_t a, int32_t b, int full)
{
    if (a < 0)
        a = 0;
    if (b > n)
        b = n;
    if (a >= b)
        return;
    const uint8_t v = full ? 2 : 1;
    for (int32_t j = a; j < b; j++)
        if (kb->mark[j] < v)
            kb->mark[j] = v;
    if (a < kb->lo)
        kb->lo = a;
    if (b > kb->hi)
        kb->hi = b;
}

void xf_at_t_keys_add_step(xf_at_t_keys *kb, int32_t n, int32_t a, int32_t b, int32_t step,
                         int full)
{
    if (step <= 1) {
        xf_at_t_keys_add(kb, n, a, b, full);
        return;
    }
    if (b > n)
        b = n;
    if (a < 0)
        a += ((-a + step - 1) / step) * step;
    if (a >= b)
        return;
    const uint8_t v = full ? 2 : 1;
    int32_t last = a;
    for (int32_t j = a; j < b; j += step) {
        if (kb->mark[j] < v)
            kb->mark[j] = v;
        last = j;
    }
    if (a < kb->lo)
        kb->lo = a;
    if (last + 1 > kb->hi)
        kb->hi = last + 1;
}

static void keys_reset(xf_at_t_keys *kb)
{
    kb->count = 0;
    kb->lo = INT32_MAX;
    kb->hi = 0;
}

static void keys_collect(xf_at_t_keys *kb)
{
    int32_t c = 0;
    for (int32_t j = kb->lo; j < kb->hi; j++) {
        if (kb->mark[j]) {
            kb->key[c] = j;
            kb->full[c] = kb->mark[j] == 2;
            kb->mark[j] = 0;
            c++;
        }
    }
    kb->count = c;
}

/* ---- tiles ---- */

int32_t xf_at_t_seg_tiles(int32_t n, int32_t seg, int32_t height)
{
    if (n <= 0)
        return 0;
    if (seg > n)
        seg = n;
    int32_t per = (seg + height - 1) / height;
    return ((n + seg - 1) / seg) * per;
}

int32_t xf_at_t_seg_rows(int32_t n, int32_t seg, int32_t height, int32_t t, int32_t *rows)
{
    if (seg > n)
        seg = n;
    int32_t per = (seg + height - 1) / height;
    int32_t a = (t / per) * seg, sub = t % per;
    int32_t end = a + seg < n ? a + seg : n;
    int32_t r0 = a + sub * height, r1 = r0 + height < end ? r0 + height : end;
    int32_t nq = 0;
    for (int32_t i = r0; i < r1; i++)
        rows[nq++] = i;
    return nq;
}

int xf_at_t_check_dilations(int32_t n_dil, const xf_model_t *m, int layer, char *err,
                            size_t errlen)
{
    const xf_model_info_t *mi = &m->info;
    int32_t h = mi->layers ? mi->layers[layer].n_head : 0;
    if (n_dil > 1 && n_dil < h)
        return xf_at_err(err, errlen, "dilation: %d entries for %d heads (layer %d)", n_dil, h,
                         layer);
    return 0;
}

int32_t xf_at_t_isqrt_ceil(int32_t n)
{
    int32_t r = 0;
    while ((int64_t)r * r < n)
        r++;
    return r;
}

/* Class-major position p -> row (classes r < n mod δ have one more member). */
static int32_t win_row(int32_t n, int32_t dil, int32_t p)
{
    int32_t q = n / dil, rem = n % dil, r, k;
    if (p < rem * (q + 1)) {
        r = p / (q + 1);
        k = p % (q + 1);
    } else {
        int32_t pp = p - rem * (q + 1);
        r = rem + pp / q;
        k = pp % q;
    }
    return r + k * dil;
}

int32_t xf_at_t_win_rows(int32_t n, int32_t dil, int32_t t, int32_t *rows)
{
    return xf_at_t_class_rows(n, dil, BQ, t, rows);
}

int32_t xf_at_t_class_rows(int32_t n, int32_t dil, int32_t height, int32_t t, int32_t *rows)
{
    int32_t p0 = t * height, p1 = p0 + height < n ? p0 + height : n, nq = 0;
    if (dil <= 1) {
        for (int32_t p = p0; p < p1; p++)
            rows[nq++] = p;
        return nq;
    }
    for (int32_t p = p0; p < p1; p++)
        rows[nq++] = win_row(n, dil, p);
    return nq;
}

void xf_at_t_win_keys(int32_t n, int32_t w, int32_t dil, const int32_t *rows, int32_t nq,
                    xf_at_t_keys *kb)
{
    int64_t span = (int64_t)w * dil;
    int single = 1;
    for (int32_t r = 1; r < nq; r++)
        if (rows[r] % dil != rows[0] % dil)
            single = 0;
    for (int32_t r0 = 0; r0 < nq;) {
        int32_t r1 = r0 + 1;
        while (r1 < nq && rows[r1] % dil == rows[r0] % dil)
            r1++;
        int32_t lo = rows[r0], hi = rows[r0];
        for (int32_t r = r0; r < r1; r++) {
            if (rows[r] < lo)
                lo = rows[r];
            if (rows[r] > hi)
                hi = rows[r];
        }
        int64_t a = lo - span, b = (int64_t)hi + span + 1;
        if (a < lo % dil)
            a = lo % dil;   /* first member of the class */
        xf_at_t_keys_add_step(kb, n, (int32_t)a, (int32_t)(b > n ? n : b), dil, 0);
        if (single) {
            int64_t fa = hi - span, fb = (int64_t)lo + span + 1;
            if (fa < lo % dil)
                fa = lo % dil;
            if (fa < fb)
                xf_at_t_keys_add_step(kb, n, (int32_t)fa, (int32_t)(fb > n ? n : fb), dil, 1);
        }
        r0 = r1;
    }
}

int xf_at_t_win_setup(xf_at_t_seq *c, int32_t window, int32_t n_dil, const int32_t *dil)
{
    if (n_dil > 1 && n_dil < c->sh->n_head)
        return XF_EPARAM;   /* dilation: one entry per head needed */
    c->g.win.w = window;
    c->g.win.dil = n_dil == 1 ? dil[0] : dil[c->head];
    c->dense = c->g.win.dil == 1 && window >= c->n - 1;
    return 0;
}

void xf_at_t_key_classes(const int32_t *keys, int32_t nk, int32_t m, int32_t *cls)
{
    if (nk <= 0)
        return;
    int32_t prev = keys[0], rem = keys[0] % m;
    cls[0] = rem;
    for (int32_t jj = 1; jj < nk; jj++) {
        int32_t delta = keys[jj] - prev;
        if (delta >= m)
            rem = (rem + delta % m) % m;
        else if ((rem += delta) >= m)
            rem -= m;
        cls[jj] = rem;
        prev = keys[jj];
    }
}

void xf_at_t_win_mask(const xf_at_t_seq *c, int32_t w, int32_t dil, const int32_t *rows,
                    int32_t nq, const int32_t *keys, const uint8_t *full, int32_t nk, float *s)
{
    const int64_t span = (int64_t)w * dil;
    int32_t lo[BQ], hi[BQ], rc[BQ], kc[BK];
    for (int32_t r = 0; r < nq; r++) {
        int64_t a = rows[r] - span, b = rows[r] + span + 1;
        lo[r] = a < 0 ? 0 : (int32_t)a;
        hi[r] = b > INT32_MAX ? INT32_MAX : (int32_t)b;
        rc[r] = dil > 1 ? rows[r] % dil : 0;
    }
    if (dil > 1)
        xf_at_t_key_classes(keys, nk, dil, kc);
    c->kern->mask(nq, nk, keys, full, lo, hi, dil > 1 ? kc : NULL, rc, 1, s);
}

/* ---- workspace ---- */

/* One thread's scratch (64-byte aligned blocks): the tile's Qᵀ/Kᵀ/V copies, scores, running
 * state and rows; the per-sequence key list, scratch, globals and marks; the Kᵀ and V block
 * caches. */
typedef struct lay {
    float *qt, *kt, *vt, *s, *acc, *m, *l;
    int32_t *rows;
    float *hid;
    int32_t *key, *scratch, *glob;
    uint8_t *full, *mark, *isg;
    float *kc, *vc;
    uint8_t *kvalid;
} lay_t;

/* d, dp (d rounded up to 16), longest n + 1, scratch ints, logits() floats per row, 64-key
 * blocks of the longest n, d·64 and dp·64 times those; the tile sizes BQ, BK and LW */
enum { WD = XF_AT_DIM_USER, WDP, WNM, WSCR, WHID, WNB, WKC, WVC, WBQ, WBK, WLW };
static const xf_at_slot_t ws_slots[] = {
    XF_AT_SLOT(qt, WBQ, WDP, 0), XF_AT_SLOT(kt, WD, WBK, 0), XF_AT_SLOT(vt, WBK, WDP, 0),
    XF_AT_SLOT(s, WBQ, WBK, 0), XF_AT_SLOT(acc, WBQ, WDP, 0),
    XF_AT_SLOT(m, WBQ, 1, 0), XF_AT_SLOT(l, WBQ, WLW, 0),
    XF_AT_SLOT(rows, WBQ, 1, 0), XF_AT_SLOT(hid, WBQ, WHID, 0),
    XF_AT_SLOT(key, WNM, 1, 0),
    XF_AT_SLOT(scratch, WSCR, 1, 0), XF_AT_SLOT(glob, WNM, 1, 0),
    XF_AT_SLOT(full, WNM, 1, 0), XF_AT_SLOT(mark, WNM, 1, 0), XF_AT_SLOT(isg, WNM, 1, 0),
    XF_AT_SLOT(kc, WKC, 1, 0), XF_AT_SLOT(vc, WVC, 1, 0), XF_AT_SLOT(kvalid, WNB, 1, 1),
};

static int32_t nblk64(int32_t n)
{
    return (n + BK - 1) / BK;
}

/* Carve ws (64-byte aligned; NULL: sizes only) into L; returns the bytes taken plus 64 of
 * slack for the caller to align its pointer. */
static size_t layout(const xf_at_t_variant *fv, int32_t d, int32_t nmax, void *ws, lay_t *L)
{
    const size_t nb = (size_t)nblk64(nmax), dp = (size_t)((d + 15) & ~15);
    const size_t dim[] = { 0, 1, (size_t)d, dp, (size_t)nmax + 1,
                           (size_t)nmax + 1 + (size_t)fv->scratch_extra, fv->hid_floats, nb,
                           (size_t)d * nb * BK, dp * nb * BK, BQ, BK, XF_AT_T_LW };
    return xf_at_carve_table(ws, 64, L, ws_slots, sizeof(ws_slots) / sizeof(ws_slots[0]), dim) +
           64;
}

static void seq_init(xf_at_t_seq *c, const void *params, const xf_attn_shape *sh,
                     const xf_attn_io *io, int32_t s)
{
    memset(c, 0, sizeof(*c));
    c->params = params;
    c->sh = sh;
    c->io = io;
    c->s = s;
    c->t0 = sh->cu_len[s];
    c->n = sh->cu_len[s + 1] - sh->cu_len[s];
}

static int head_setup(const xf_at_t_variant *fv, xf_at_t_seq *c, int32_t head)
{
    c->head = head;
    c->dense = 0;
    memset(&c->g, 0, sizeof(c->g));
    c->factor = c->io ? c->io->scale / c->io->q_scale : 1.0f;
    return fv->setup ? fv->setup(c) : 0;
}

int xf_at_t_plan(const xf_at_t_variant *fv, const void *params, const xf_attn_shape *sh, int nth,
               xf_attn_plan *out)
{
    const int nmax = xf_at_check_shape(sh);
    int rc;
    if (nmax < 0)
        return nmax;
    if (nth < 1 || !out)
        return -EINVAL;
    xf_attn_plan p;
    memset(&p, 0, sizeof(p));
    int64_t items = 0;
    for (int32_t s = 0; s < sh->n_seq; s++) {
        xf_at_t_seq c;
        seq_init(&c, params, sh, NULL, s);
        if (c.n == 0)
            continue;
        int all_dense = 1;
        for (int32_t h = 0; h < sh->n_head; h++) {
            rc = head_setup(fv, &c, h);
            if (rc)
                return rc;
            all_dense &= c.dense;
            items += c.dense ? xf_at_t_seg_tiles(c.n, BQ, BQ) :
                     fv->n_tiles ? fv->n_tiles(&c) : xf_at_t_seg_tiles(c.n, BQ, BQ);
        }
        p.dense_fallbacks += all_dense;
    }
    p.ws_per_thread = layout(fv, sh->d_head, nmax, NULL, NULL);
    p.n_items = items > INT32_MAX ? INT32_MAX : (int32_t)items;
    *out = p;
    return 0;
}

/* ---- one tile ---- */

typedef struct ft_run {
    const xf_at_t_variant *fv;
    const xf_at_kern *kern;
    float *qt, *kt, *vt, *s, *acc, *m, *l, *hid;
    xf_at_t_keys kb;
    int32_t d, dp, N, H;
    size_t hs, rs;             /* Q/K/V head and row strides in floats (planes or io->ld) */
    /* Kᵀ and V caches of the current (seq, head, plane): 64-key blocks [d][64] and [64][dp]
     * (V rows contiguous, zero-padded to dp), built on first use */
    float *kc, *vc;
    uint8_t *kvalid;
    int32_t tag_t0, tag_n, tag_h;
    const float *tag_k;
} ft_run;

/* The cached Kᵀ block of keys [64·b, 64·b + 64) (zero past n); *vb: the cached V rows of
 * the same keys (dp floats apart). Both are built on the block's first use: V's rows are
 * copied contiguous (from planes or from the QKV output's strided rows). */
static const float *kblock(ft_run *R, const xf_at_t_seq *c, const float *K, const float *V,
                           int32_t b, const float **vb)
{
    if (R->tag_k != K || R->tag_t0 != c->t0 || R->tag_n != c->n || R->tag_h != c->head) {
        memset(R->kvalid, 0, (size_t)nblk64(c->n));
        R->tag_k = K;
        R->tag_t0 = c->t0;
        R->tag_n = c->n;
        R->tag_h = c->head;
    }
    const int32_t d = R->d, dp = R->dp;
    float *blk = R->kc + (size_t)b * d * BK, *vblk = R->vc + (size_t)b * dp * BK;
    if (!R->kvalid[b]) {
        int32_t j0 = b * BK, nk = c->n - j0 < BK ? c->n - j0 : BK;
        int32_t idx[BK];
        /* V's misses overlap with the transpose; the next head's K and V rows of these keys
         * (the thread's next (seq, head) item, as a rule) are brought to L2 meanwhile */
        const int next = c->head + 1 < R->H;
        for (int32_t jj = 0; jj < nk; jj++) {
            idx[jj] = c->t0 + j0 + jj;
            const char *vr = (const char *)(V + (size_t)idx[jj] * R->rs);
            const char *kr = (const char *)(K + (size_t)idx[jj] * R->rs);
            for (size_t x = 0; x < (size_t)d * sizeof(float); x += 64) {
                __builtin_prefetch(vr + x, 0, 3);
                if (next) {
                    __builtin_prefetch(kr + R->hs * sizeof(float) + x, 0, 2);
                    __builtin_prefetch(vr + R->hs * sizeof(float) + x, 0, 2);
                }
            }
        }
        R->kern->kt(nk, d, (int32_t)R->rs, K, idx, blk);
        for (int32_t jj = 0; jj < nk; jj++) {
            float *vr = vblk + (size_t)jj * dp;
            memcpy(vr, V + (size_t)idx[jj] * R->rs, (size_t)d * sizeof(float));
            for (int32_t x = d; x < dp; x++)
                vr[x] = 0.0f;
        }
        R->kvalid[b] = 1;
    }
    *vb = vblk;
    return blk;
}

/* Length of the whole 64-key block starting at list position p, or 0 if the list does not
 * hold that block entirely. */
static int32_t direct_len(const int32_t *key, int32_t count, int32_t p, int32_t n)
{
    int32_t j0 = key[p];
    if (j0 % BK)
        return 0;
    int32_t len = n - j0 < BK ? n - j0 : BK;
    if (p + len <= count && key[p + len - 1] == j0 + len - 1)
        return len;
    return 0;
}

static int run_tile(ft_run *R, const xf_at_t_seq *c, const int32_t *rows, int32_t nq, int global)
{
    const xf_attn_io *io = c->io;
    const int32_t d = R->d, dp = R->dp;
    const size_t plane = (size_t)c->head * R->hs, rs = R->rs;
    const float *Q = (global && io->qg ? io->qg : io->q) + plane;
    const float *K = (global && io->kg ? io->kg : io->k) + plane;
    const float *V = (global && io->vg ? io->vg : io->v) + plane;
    const xf_at_t_variant *fv = R->fv;
    int rc = 0;

    /* The qk kernels read columns [0, d) of qt's rows, ldq apart: when the rows are
     * consecutive (dense tiles), Q's rows are read in place. */
    const float *qt = R->qt;
    int32_t ldq = dp;
    int in_place = nq > 0;
    for (int32_t r = 1; r < nq && in_place; r++)
        in_place = rows[r] == rows[0] + r;
    if (in_place) {
        qt = Q + (size_t)(c->t0 + rows[0]) * rs;
        ldq = (int32_t)rs;
    }
    const int every = c->dense || fv->every_key;
    if (every && in_place) {
        /* the next tile's Q rows (this head's next rows, else the next head's first ones:
         * the thread's next item, as a rule), a tile of work ahead of their use */
        const int32_t nxt = rows[0] + nq;
        const float *qn = nxt < c->n ? Q + (size_t)(c->t0 + nxt) * rs
                          : c->head + 1 < R->H ? Q + R->hs + (size_t)c->t0 * rs : NULL;
        const int32_t cnt = nxt < c->n ? c->n - nxt : c->n;
        for (int32_t r = 0; qn && r < nq && r < cnt; r++)
            for (size_t x = 0; x < (size_t)d * sizeof(float); x += 64)
                __builtin_prefetch((const char *)(qn + (size_t)r * rs) + x, 0, 2);
    }
    for (int32_t r = 0; r < nq; r++) {
        /* the output rows are written at the end: ask for their lines now (and for the Q
         * rows read in place, which the hardware prefetcher misses when strided) */
        const char *orow = (const char *)(io->out + ((size_t)(c->t0 + rows[r]) * R->H +
                                                     c->head) * d);
        const char *qrow = (const char *)(Q + (size_t)(c->t0 + rows[r]) * rs);
        for (size_t x = 0; x < (size_t)d * sizeof(float); x += 64) {
            __builtin_prefetch(orow + x, 1, 3);
            if (in_place)
                __builtin_prefetch(qrow + x, 0, 3);
        }
        if (!in_place) {
            float *qr = R->qt + (size_t)r * dp;
            memcpy(qr, Q + (size_t)(c->t0 + rows[r]) * rs, (size_t)d * sizeof(float));
            for (int32_t x = d; x < dp; x++)
                qr[x] = 0.0f;
        }
        R->m[r] = -INFINITY;
    }
    memset(R->l, 0, (size_t)nq * XF_AT_T_LW * sizeof(float));
    memset(R->acc, 0, (size_t)nq * dp * sizeof(float));
    if (every) {
        /* every key, each 64-key block whole and full: the cached Kᵀ/V blocks in order (the
         * same chunks the key list below would give, without building it) */
        for (int32_t b = 0; b < nblk64(c->n); b++) {
            const int32_t nk = c->n - b * BK < BK ? c->n - b * BK : BK;
            const float *vb, *vt[BK];
            R->kern->qk(nq, d, ldq, qt, kblock(R, c, K, V, b, &vb), c->factor, R->s);
            for (int32_t jj = 0; jj < nk; jj++)
                vt[jj] = vb + (size_t)jj * dp;
            R->kern->softmax(nq, nk, dp, R->s, R->m, R->l, R->acc);
            R->kern->pv(nq, nk, dp, R->s, vt, R->acc);
        }
    } else {
        keys_reset(&R->kb);
        fv->keys(c, rows, nq, global, &R->kb);
        keys_collect(&R->kb);
    }

    const int32_t *key = R->kb.key;
    const uint8_t *full = R->kb.full;
    const int use_logits = fv->logits && !every;
    const int32_t count = every ? 0 : R->kb.count;
    for (int32_t k0 = 0, nk = 0; k0 < count; k0 += nk) {
        const float *vt[BK];
        int32_t dl = use_logits ? 0 : direct_len(key, count, k0, c->n);
        if (dl) {
            nk = dl;
        } else {
            nk = 1;
            while (k0 + nk < count && nk < BK &&
                   (use_logits || !direct_len(key, count, k0 + nk, c->n)))
                nk++;
        }
        if (use_logits) {
            rc = fv->logits(c, rows, nq, key + k0, nk, R->s, BK, R->hid, k0 == 0);
            if (rc)
                return rc;
        } else if (dl) {
            const float *vb;
            R->kern->qk(nq, d, ldq, qt, kblock(R, c, K, V, key[k0] / BK, &vb), c->factor, R->s);
            for (int32_t jj = 0; jj < nk; jj++)
                vt[jj] = vb + (size_t)jj * dp;
        } else {
            int32_t idx[BK];
            for (int32_t jj = 0; jj < nk; jj++)
                idx[jj] = c->t0 + key[k0 + jj];
            R->kern->kt(nk, d, (int32_t)rs, K, idx, R->kt);
            R->kern->qk(nq, d, ldq, qt, R->kt, c->factor, R->s);
        }
        if (dl) {
            /* vt: the V cache's rows (above) */
        } else if (d == dp) {   /* rows read in place */
            for (int32_t jj = 0; jj < nk; jj++)
                vt[jj] = V + (size_t)(c->t0 + key[k0 + jj]) * rs;
        } else {         /* padded copies: the kernel reads dp columns */
            for (int32_t jj = 0; jj < nk; jj++) {
                float *vr = R->vt + (size_t)jj * dp;
                memcpy(vr, V + (size_t)(c->t0 + key[k0 + jj]) * rs, (size_t)d * sizeof(float));
                for (int32_t x = d; x < dp; x++)
                    vr[x] = 0.0f;
                vt[jj] = vr;
            }
        }
        int all_full = 1;
        for (int32_t jj = 0; jj < nk && all_full; jj++)
            all_full = full[k0 + jj];
        if (!all_full && fv->mask) {
            fv->mask(c, rows, nq, key + k0, full + k0, nk, R->s, global);
        } else if (!all_full) {
            for (int32_t r = 0; r < nq; r++) {
                float *sr = R->s + (size_t)r * BK;
                for (int32_t jj = 0; jj < nk; jj++)
                    if (!full[k0 + jj] && !fv->member(c, rows[r], key[k0 + jj], global))
                        sr[jj] = -INFINITY;
            }
        }
        R->kern->softmax(nq, nk, dp, R->s, R->m, R->l, R->acc);
        R->kern->pv(nq, nk, dp, R->s, vt, R->acc);
    }

    for (int32_t r = 0; r < nq; r++) {
        float *o = io->out + ((size_t)(c->t0 + rows[r]) * R->H + c->head) * d;
        const float *ar = R->acc + (size_t)r * dp;
        float lr = 0.0f;
        for (int32_t x = 0; x < XF_AT_T_LW; x++)   /* fixed order: deterministic */
            lr += R->l[(size_t)r * XF_AT_T_LW + x];
        if (isnan(R->m[r]) || isnan(lr)) {
            /* A NaN score (a NaN weight or input): keep it visible to the forward's
             * finiteness check instead of taking the empty-set fallback below. */
            for (int32_t x = 0; x < d; x++)
                o[x] = NAN;
        } else if (lr > 0.0f) {
            R->kern->scale(d, ar, 1.0f / lr, o);
        } else {   /* A(i) = ∅: fall back to A(i) = {i} */
            memcpy(o, V + (size_t)(c->t0 + rows[r]) * rs, (size_t)d * sizeof(float));
        }
    }
    return 0;
}

int xf_at_t_forward(const xf_at_t_variant *fv, const void *params, const xf_attn_shape *sh,
                  const xf_attn_io *io, const xf_attn_plan *pl, void *ws, int ith, int nth)
{
    const int nmax = xf_at_check_shape(sh);
    int rc;
    if (nmax < 0)
        return nmax;
    if (!io || !pl || nth < 1 || ith < 0 || ith >= nth)
        return -EINVAL;
    if (sh->n_seq == 0)
        return 0;
    if (!io->q || !io->k || !io->v || !io->out || !(io->q_scale != 0.0f) || !ws)
        return -EINVAL;
    if (pl->ws_per_thread < layout(fv, sh->d_head, nmax, NULL, NULL))
        return -EINVAL;
    lay_t L;
    layout(fv, sh->d_head, nmax, (void *)(((uintptr_t)ws + 63) & ~(uintptr_t)63), &L);

    ft_run R;
    R.fv = fv;
    R.kern = xf_at_kern_get();
    R.qt = L.qt;
    R.kt = L.kt;
    R.vt = L.vt;
    R.s = L.s;
    R.acc = L.acc;
    R.m = L.m;
    R.l = L.l;
    R.hid = L.hid;
    R.kb.key = L.key;
    R.kb.full = L.full;
    R.kb.mark = L.mark;
    R.d = sh->d_head;
    R.dp = (sh->d_head + 15) & ~15;
    R.N = sh->n_tokens;
    R.H = sh->n_head;
    if (io->ld) {   /* rows of the QKV GEMM's output (xf_attn_io.ld) */
        if (!fv->strided || io->ld < sh->n_head * sh->d_head)
            return -EINVAL;
        R.hs = (size_t)sh->d_head;
        R.rs = (size_t)io->ld;
    } else {        /* [n_head][N][d_head] planes */
        R.hs = (size_t)sh->n_tokens * (size_t)sh->d_head;
        R.rs = (size_t)sh->d_head;
    }
    R.kc = L.kc;
    R.vc = L.vc;
    R.kvalid = L.kvalid;
    R.tag_k = NULL;
    R.tag_t0 = R.tag_n = R.tag_h = -1;
    int32_t *rows = L.rows;
    memset(R.kb.mark, 0, (size_t)nmax + 1);

    int64_t total = 0, prefix = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t s = 0; s < sh->n_seq; s++) {
            xf_at_t_seq c;
            seq_init(&c, params, sh, io, s);
            if (c.n == 0)
                continue;
            c.scratch = L.scratch;
            c.n_scratch = nmax + 1 + fv->scratch_extra;
            c.glob = L.glob;
            c.is_g = L.isg;
            c.kern = R.kern;
            if (fv->globals) {
                rc = fv->globals(&c);
                if (rc)
                    return rc;
            }
            for (int32_t h = 0; h < sh->n_head; h++) {
                rc = head_setup(fv, &c, h);
                if (rc)
                    return rc;
                int32_t nt = c.dense || !fv->n_tiles ? xf_at_t_seg_tiles(c.n, BQ, BQ)
                                                     : fv->n_tiles(&c);
                for (int32_t t = 0; t < nt; t++) {
                    int global = 0;
                    int64_t cost = 0;
                    int32_t nq;
                    if (c.dense || !fv->tile) {
                        nq = xf_at_t_seg_rows(c.n, BQ, BQ, t, rows);
                        cost = (int64_t)nq * c.n;
                    } else {
                        nq = fv->tile(&c, t, rows, &global, &cost);
                    }
                    if (nq <= 0)
                        continue;
                    if (cost < 1)
                        cost = 1;
                    if (pass == 0) {
                        total += cost;
                        continue;
                    }
                    int64_t owner = (prefix * nth) / total;
                    prefix += cost;
                    if (owner != ith)
                        continue;
                    rc = run_tile(&R, &c, rows, nq, global);
                    if (rc)
                        return rc;
                }
            }
        }
        if (total == 0)
            break;
    }
    return 0;
}
