/* Attention family M (ATTENTION.md §22, §22.1, §23): the per-sequence memory state, the shared
 * forward over [compressed ; memory ; current] keys with relative-position terms by index, the
 * state update (eviction, pending groups, compression), and the session blob with its checks. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "attention/fam_m.h"
#include "attention/fam_t.h"
#include "engine/safetensors.h"

#define XF_AT_M_DMAX 16384          /* widest d_model the position table supports */

static int32_t pend_cap(const xf_at_m_params_t *p)
{
    return (p->cmem_len > 0 && p->rate > 1) ? p->rate - 1 : 0;
}

size_t xf_at_m_state_size(const xf_at_m_params_t *p, int32_t n_head, int32_t d_head)
{
    size_t rows = (size_t)p->cmem_len + (size_t)p->mem_len + (size_t)pend_cap(p);

    return sizeof(xf_at_m_hdr_t) + sizeof(float) * 2u * (size_t)n_head * (size_t)d_head * rows;
}

void xf_at_m_state_init(const xf_at_m_params_t *p, int32_t n_head, int32_t d_head, void *state)
{
    xf_at_m_hdr_t h;

    memset(&h, 0, sizeof(h));
    h.magic = XF_AT_M_MAGIC;
    h.version = XF_AT_M_VERSION;
    h.dtype = 1;
    h.n_head = n_head;
    h.d_head = d_head;
    h.mem_cap = p->mem_len;
    h.cmem_cap = p->cmem_len;
    h.pend_cap = pend_cap(p);
    h.rate = p->rate;
    memcpy(state, &h, sizeof(h));
}

float *xf_at_m_rows(void *state, int32_t region, int32_t kv, int32_t head)
{
    const xf_at_m_hdr_t *h = state;
    size_t hd = (size_t)h->n_head * (size_t)h->d_head, off = 0;
    int32_t caps[3] = { h->cmem_cap, h->mem_cap, h->pend_cap };

    for (int32_t r = 0; r < region; r++)
        off += 2u * hd * (size_t)caps[r];
    off += (size_t)kv * hd * (size_t)caps[region];
    off += (size_t)head * (size_t)h->d_head * (size_t)caps[region];
    return (float *)((unsigned char *)state + sizeof(xf_at_m_hdr_t)) + off;
}

/* 0: valid for p (or fresh: *fresh = 1); XF_EFORMAT otherwise. */
static int check_state(const xf_at_m_params_t *p, int32_t n_head, int32_t d_head,
                       const void *state, int *fresh)
{
    xf_at_m_hdr_t h;

    memcpy(&h, state, sizeof(h));
    *fresh = 0;
    if (h.magic == 0) {
        *fresh = 1;
        return 0;
    }
    if (h.magic != XF_AT_M_MAGIC || h.version != XF_AT_M_VERSION || h.dtype != 1 ||
        h.n_head != n_head || h.d_head != d_head || h.mem_cap != p->mem_len ||
        h.cmem_cap != p->cmem_len || h.pend_cap != pend_cap(p) || h.rate != p->rate ||
        h.mem_rows < 0 || h.mem_rows > h.mem_cap || h.cmem_rows < 0 ||
        h.cmem_rows > h.cmem_cap || h.pend_rows < 0 || h.pend_rows > h.pend_cap)
        return XF_EFORMAT;
    return 0;
}

/* ---- plan / prepare / forward ---- */

/* Smallest distance t = i' − j a tile reads: −(n − 1) bidirectional; causal tiles also read
 * (then mask) pairs up to 31 (= query tile height − 1) above the diagonal. */
static int32_t tmin_of(const xf_at_m_params_t *p, int32_t nmax)
{
    int32_t lo = nmax > 0 ? nmax - 1 : 0;
    return p->causal ? -(lo < 31 ? lo : 31) : -lo;
}

static int32_t trows_of(const xf_at_m_params_t *p, int32_t nmax)
{
    int32_t tmax = p->cmem_len + p->mem_len + (nmax > 0 ? nmax - 1 : 0);
    return tmax - tmin_of(p, nmax) + 1;
}

int xf_at_m_prepare(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                    const xf_attn_plan *pl, void *ws_shared)
{
    const xf_at_m_params_t *p = params;
    const xf_attn_w_txl_t *w = io->weights;
    int nmax = xf_at_check_shape(sh);
    int32_t T, t0, D, hd = sh->n_head * sh->d_head;
    double *R = ws_shared;
    float *r = (float *)(R + XF_AT_M_DMAX);

    (void)pl;
    if (nmax < 0)
        return nmax;
    if (!w || !w->w_r)
        return 0;
    if (w->n_head != sh->n_head || w->d_head != sh->d_head || w->d_model < 2 ||
        w->d_model % 2 || w->d_model > XF_AT_M_DMAX)
        return XF_ESHAPE;
    D = w->d_model;
    T = trows_of(p, nmax);
    t0 = tmin_of(p, nmax);
    for (int32_t ti = 0; ti < T; ti++) {
        double t = (double)(t0 + ti);
        if (p->clamp_len >= 0 && t > p->clamp_len)
            t = p->clamp_len;
        if (p->clamp_len >= 0 && t < -p->clamp_len)
            t = -p->clamp_len;
        for (int32_t e = 0; e < D / 2; e++) {
            double f = pow(10000.0, -2.0 * (double)e / (double)D);
            R[e] = sin(t * f);
            R[D / 2 + e] = cos(t * f);
        }
        for (int32_t o = 0; o < hd; o++) {
            const float *wr = w->w_r + (size_t)o * (size_t)D;
            double s = 0;
            for (int32_t e = 0; e < D; e++)
                s += (double)wr[e] * R[e];
            /* r[head][ti][c] with o = head*d + c */
            r[((size_t)(o / sh->d_head) * (size_t)T + (size_t)ti) * (size_t)sh->d_head +
              (size_t)(o % sh->d_head)] = (float)s;
        }
    }
    return 0;
}

#define TQ 32                       /* query rows per tile */
#define BK XF_AT_T_BK                 /* keys per chunk */

/* Tile scratch (64-byte aligned pieces): qu, qv [TQ][dp]; kt [dp][BK]; s [TQ][BK];
 * pt [TQ][2·BK] (position logits); m [TQ]; l [TQ][LW]; acc [TQ][dp]; vbuf [BK][dp]. */
static int32_t dpad(int32_t d)
{
    return (d + 15) & ~15;
}

static size_t al64(size_t x)
{
    return (x + 63u) & ~(size_t)63u;
}

static size_t tile_ws(int32_t d)
{
    size_t dp = (size_t)dpad(d), F = sizeof(float);
    return 64u + 2u * al64(F * TQ * dp) + al64(F * dp * BK) + al64(F * TQ * BK) +
           al64(F * TQ * 2u * BK) + al64(F * TQ) + al64(F * TQ * XF_AT_T_LW) + al64(F * TQ * dp) +
           al64(F * BK * dp);
}

typedef struct tile {
    float *qu, *qv, *kt, *s, *pt, *m, *l, *acc, *vbuf;
} tile_t;

static void tile_layout(void *ws, int32_t d, tile_t *t)
{
    size_t dp = (size_t)dpad(d), F = sizeof(float);
    unsigned char *b = (unsigned char *)(((uintptr_t)ws + 63u) & ~(uintptr_t)63u);
#define TAKE(ptr, bytes) (t->ptr = (float *)(void *)b, b += al64(bytes))
    TAKE(qu, F * TQ * dp);
    TAKE(qv, F * TQ * dp);
    TAKE(kt, F * dp * BK);
    TAKE(s, F * TQ * BK);
    TAKE(pt, F * TQ * 2u * BK);
    TAKE(m, F * TQ);
    TAKE(l, F * TQ * XF_AT_T_LW);
    TAKE(acc, F * TQ * dp);
    TAKE(vbuf, F * BK * dp);
#undef TAKE
}

int xf_at_m_plan(const xf_at_m_params_t *p, const xf_attn_shape *sh, xf_attn_plan *out)
{
    int nmax = xf_at_check_shape(sh);

    if (nmax < 0)
        return nmax;
    out->ws_per_thread = tile_ws(sh->d_head);
    out->ws_shared = sizeof(double) * XF_AT_M_DMAX +
                     sizeof(float) * (size_t)sh->n_head * (size_t)trows_of(p, nmax) *
                         (size_t)sh->d_head;
    out->state_per_seq = xf_at_m_state_size(p, sh->n_head, sh->d_head);
    out->n_items = sh->n_seq * sh->n_head;
    out->dense_fallbacks = 0;
    return 0;
}

int xf_at_m_plan_vt(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    (void)nth;
    return xf_at_m_plan(params, sh, out);
}

/* Key/value row j of [compressed ; memory ; current] (regions given by base pointers). */
static inline const float *row_of(const float *const *base, const int32_t *cnt, int32_t j,
                                  int32_t d)
{
    if (j < cnt[0])
        return base[0] + (size_t)j * (size_t)d;
    j -= cnt[0];
    if (j < cnt[1])
        return base[1] + (size_t)j * (size_t)d;
    return base[2] + (size_t)(j - cnt[1]) * (size_t)d;
}

/* kt[x][jj] = rows[jj][x] (zero past nk), for the kernel's qk */
static void transpose(const float *const *rows, int32_t nk, int32_t d, float *kt)
{
    for (int32_t x = 0; x < d; x++) {
        float *kx = kt + (size_t)x * BK;
        for (int32_t jj = 0; jj < nk; jj++)
            kx[jj] = rows[jj][x];
        for (int32_t jj = nk; jj < BK; jj++)
            kx[jj] = 0.0f;
    }
}

/* One tile of nq query rows [i0, i0 + nq) of an item: online softmax over the keys in chunks
 * of BK on the family-T micro-kernels; the position term (q + v)·r_{i'−j} comes from a second
 * qk over the r rows the chunk needs (t = i' − j spans nq + nk − 1 <= 2·BK values). */
static void txl_tile(const xf_at_m_params_t *p, const xf_at_item_t *it, const float *const *kb,
                     const float *const *vb, const int32_t *cnt, int32_t i0, int32_t nq,
                     const float *u, const float *v, const float *rh, int32_t t0, float scale,
                     float q_scale, tile_t *T)
{
    const xf_at_kern *kn = xf_at_kern_get();
    int32_t d = it->d, dp = dpad(d), base = cnt[0] + cnt[1], L = base + it->n;
    int32_t jmax = p->causal ? base + i0 + nq : L;
    const float *rows[BK];
    const float *vt[BK];

    memset(T->qu, 0, sizeof(float) * (size_t)nq * (size_t)dp);
    memset(T->qv, 0, sizeof(float) * (size_t)nq * (size_t)dp);
    memset(T->acc, 0, sizeof(float) * (size_t)nq * (size_t)dp);
    memset(T->l, 0, sizeof(float) * (size_t)nq * XF_AT_T_LW);
    for (int32_t r = 0; r < nq; r++) {
        const float *qi = it->q + (size_t)(i0 + r) * (size_t)d;
        for (int32_t c = 0; c < d; c++) {
            float q = qi[c] / q_scale;
            T->qu[(size_t)r * (size_t)dp + (size_t)c] = q + (u ? u[c] : 0.0f);
            T->qv[(size_t)r * (size_t)dp + (size_t)c] = q + (v ? v[c] : 0.0f);
        }
        T->m[r] = -INFINITY;
    }
    for (int32_t j0 = 0; j0 < jmax; j0 += BK) {
        int32_t nk = jmax - j0 < BK ? jmax - j0 : BK;
        /* t = i' − j over this tile and chunk: [tlo, tlo + nq + nk − 1) */
        int32_t tlo = base + i0 - (j0 + nk - 1), nt = nq + nk - 1;
        if (rh) {
            for (int32_t h0 = 0; h0 < nt; h0 += BK) {   /* pt[r][tt] = s·qv_r·r_{tlo+tt} */
                int32_t nh = nt - h0 < BK ? nt - h0 : BK;
                for (int32_t hh = 0; hh < nh; hh++)
                    rows[hh] = rh + (size_t)(tlo + h0 + hh - t0) * (size_t)d;
                transpose(rows, nh, d, T->kt);
                kn->qk(nq, d, dp, T->qv, T->kt, scale, T->s);
                for (int32_t r = 0; r < nq; r++)
                    memcpy(T->pt + (size_t)r * 2u * BK + (size_t)h0, T->s + (size_t)r * BK,
                           sizeof(float) * (size_t)nh);
            }
        }
        for (int32_t jj = 0; jj < nk; jj++)
            rows[jj] = row_of(kb, cnt, j0 + jj, d);
        transpose(rows, nk, d, T->kt);
        kn->qk(nq, d, dp, T->qu, T->kt, scale, T->s);
        if (rh)
            for (int32_t r = 0; r < nq; r++)
                for (int32_t jj = 0; jj < nk; jj++)
                    T->s[(size_t)r * BK + (size_t)jj] +=
                        T->pt[(size_t)r * 2u * BK + (size_t)(base + i0 + r - (j0 + jj) - tlo)];
        if (p->causal)
            for (int32_t r = 0; r < nq; r++)
                for (int32_t jj = 0; jj < nk; jj++)
                    if (j0 + jj > base + i0 + r)
                        T->s[(size_t)r * BK + (size_t)jj] = -INFINITY;
        for (int32_t jj = 0; jj < nk; jj++) {
            const float *vr = row_of(vb, cnt, j0 + jj, d);
            if (d == dp) {
                vt[jj] = vr;
            } else {
                float *pr = T->vbuf + (size_t)jj * (size_t)dp;
                memcpy(pr, vr, sizeof(float) * (size_t)d);
                memset(pr + d, 0, sizeof(float) * (size_t)(dp - d));
                vt[jj] = pr;
            }
        }
        kn->softmax(nq, nk, dp, T->s, T->m, T->l, T->acc);
        kn->pv(nq, nk, dp, T->s, vt, T->acc);
    }
    for (int32_t r = 0; r < nq; r++) {
        float *oi = it->out + (size_t)(i0 + r) * (size_t)it->ldo;
        float lr = 0.0f;
        for (int32_t x = 0; x < XF_AT_T_LW; x++)      /* fixed lane order: deterministic */
            lr += T->l[(size_t)r * XF_AT_T_LW + (size_t)x];
        for (int32_t c = 0; c < d; c++)
            oi[c] = T->acc[(size_t)r * (size_t)dp + (size_t)c] / lr;
    }
}

int xf_at_m_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                    const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                    int nth)
{
    const xf_at_m_params_t *p = params;
    const xf_attn_w_txl_t *w = io->weights;
    int nmax = xf_at_check_shape(sh);
    int32_t Tn = trows_of(p, nmax), t0 = tmin_of(p, nmax), d = sh->d_head;
    const float *rtab = (const float *)((const double *)ws_shared + XF_AT_M_DMAX);
    int pos = w && w->w_r;
    tile_t T;

    if (nmax < 0)
        return nmax;
    tile_layout(ws_thread, d, &T);
    for (int32_t t = ith; t < pl->n_items; t += nth) {
        xf_at_item_t it;
        void *st = NULL;
        int32_t cnt[2] = { 0, 0 };
        const float *kb[3], *vb[3];
        int fresh = 1, rc;

        xf_at_item(sh, io, t, &it);
        if (it.n == 0)
            continue;
        if (io->state && io->state[it.b]) {
            st = io->state[it.b];
            if ((rc = check_state(p, sh->n_head, d, st, &fresh)) != 0)
                return rc;
            if (!fresh) {
                const xf_at_m_hdr_t *h = st;
                cnt[0] = h->cmem_rows;
                cnt[1] = h->mem_rows;
            }
        }
        kb[0] = cnt[0] ? xf_at_m_rows(st, 0, 0, it.head) : NULL;
        vb[0] = cnt[0] ? xf_at_m_rows(st, 0, 1, it.head) : NULL;
        kb[1] = cnt[1] ? xf_at_m_rows(st, 1, 0, it.head) : NULL;
        vb[1] = cnt[1] ? xf_at_m_rows(st, 1, 1, it.head) : NULL;
        kb[2] = it.k;
        vb[2] = it.v;
        for (int32_t i0 = 0; i0 < it.n; i0 += TQ)
            txl_tile(p, &it, kb, vb, cnt, i0, it.n - i0 < TQ ? it.n - i0 : TQ,
                     w && w->u ? w->u + (size_t)it.head * (size_t)d : NULL,
                     w && w->v ? w->v + (size_t)it.head * (size_t)d : NULL,
                     pos ? rtab + (size_t)it.head * (size_t)Tn * (size_t)d : NULL, t0,
                     io->scale, io->q_scale, &T);
    }
    return 0;
}

/* ---- state update ---- */

static void compress(int32_t fn, const float *const *rows, int32_t cnt, int32_t d, float *out)
{
    for (int32_t c = 0; c < d; c++) {
        double a = fn == XF_CMEM_MAX ? -INFINITY : 0.0;
        for (int32_t t = 0; t < cnt; t++) {
            double x = rows[t][c];
            a = fn == XF_CMEM_MAX ? (x > a ? x : a) : a + x;
        }
        out[c] = (float)(fn == XF_CMEM_MAX ? a : a / cnt);
    }
}

/* One plane (K or V of one head): C, M, P as in the header h (counts before the update), the
 * segment's n rows H. Writes the new rows; counts come out identical for every plane. */
static void update_plane(const xf_at_m_params_t *p, const xf_at_m_hdr_t *h, float *C, float *M,
                         float *P, const float *H, int32_t n, int32_t d, int32_t *nc_out,
                         int32_t *nm_out, int32_t *np_out)
{
    int32_t nm = h->mem_rows, nc = h->cmem_rows, np = h->pend_rows, total = nm + n;
    int32_t E = total > p->mem_len ? total - p->mem_len : 0;
    size_t rb = sizeof(float) * (size_t)d;
    const float *grp[1024];

    if (p->cmem_len > 0) {
        for (int32_t e = 0; e < E; e++) {
            const float *row =
                e < nm ? M + (size_t)e * (size_t)d : H + (size_t)(e - nm) * (size_t)d;
            if (np + 1 < p->rate) {
                memcpy(P + (size_t)np * (size_t)d, row, rb);
                np++;
                continue;
            }
            /* a full group: pending rows + this one → one compressed row */
            for (int32_t t = 0; t < np; t++)
                grp[t] = P + (size_t)t * (size_t)d;
            grp[np] = row;
            if (nc == p->cmem_len) {
                memmove(C, C + d, rb * (size_t)(nc - 1));
                nc--;
            }
            compress(p->fn, grp, np + 1, d, C + (size_t)nc * (size_t)d);
            nc++;
            np = 0;
        }
    }
    if (E <= nm) {
        memmove(M, M + (size_t)E * (size_t)d, rb * (size_t)(nm - E));
        memcpy(M + (size_t)(nm - E) * (size_t)d, H, rb * (size_t)n);
    } else if (total - E > 0) {
        memcpy(M, H + (size_t)(E - nm) * (size_t)d, rb * (size_t)(total - E));
    }
    *nc_out = nc;
    *nm_out = total - E;
    *np_out = np;
}

int xf_at_m_state_update(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                         int ith, int nth)
{
    const xf_at_m_params_t *p = params;
    int nmax = xf_at_check_shape(sh);

    if (nmax < 0)
        return nmax;
    if (!io->state)
        return 0;
    if (p->fn == XF_CMEM_CONV || p->rate > 1024)
        return XF_EUNSUPPORTED;
    for (int32_t b = ith; b < sh->n_seq; b += nth) {
        void *st = io->state[b];
        xf_at_m_hdr_t h;
        int fresh, rc;
        int32_t n = sh->cu_len[b + 1] - sh->cu_len[b], nc = 0, nm = 0, np = 0;

        if (!st)
            continue;
        if ((rc = check_state(p, sh->n_head, sh->d_head, st, &fresh)) != 0)
            return rc;
        if (fresh)
            xf_at_m_state_init(p, sh->n_head, sh->d_head, st);
        memcpy(&h, st, sizeof(h));
        for (int32_t hd = 0; hd < sh->n_head; hd++)
            for (int kv = 0; kv < 2; kv++) {
                const float *plane = kv ? io->v : io->k;
                const float *H = plane + ((size_t)hd * (size_t)sh->n_tokens +
                                          (size_t)sh->cu_len[b]) * (size_t)sh->d_head;
                update_plane(p, &h, xf_at_m_rows(st, 0, kv, hd), xf_at_m_rows(st, 1, kv, hd),
                             xf_at_m_rows(st, 2, kv, hd), H, n, sh->d_head, &nc, &nm, &np);
            }
        h.cmem_rows = nc;
        h.mem_rows = nm;
        h.pend_rows = np;
        /* the counts come from a session blob too: saturate, never overflow */
        if (h.segments < INT64_MAX)
            h.segments++;
        h.tokens = h.tokens > INT64_MAX - n ? INT64_MAX : h.tokens + n;
        memcpy(st, &h, sizeof(h));
    }
    return 0;
}

/* ---- session blob (§22.1) ---- */

uint32_t xf_at_m_crc32c_more(uint32_t crc, const void *data, size_t len)
{
    /* continue a CRC-32C: crc(a ‖ b) from crc(a); crc(empty) = 0 */
    uint32_t tab[256], c0 = crc ^ 0xFFFFFFFFu;
    const unsigned char *b = data;

    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        tab[i] = c;
    }
    for (size_t i = 0; i < len; i++)
        c0 = tab[(c0 ^ b[i]) & 0xFFu] ^ (c0 >> 8);
    return c0 ^ 0xFFFFFFFFu;
}

uint32_t xf_at_m_crc32c(const void *data, size_t len)
{
    return xf_at_m_crc32c_more(0, data, len);
}

static void put16(unsigned char *b, uint16_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *b)
{
    return (uint16_t)(b[0] | (b[1] << 8));
}

static uint32_t get32(const unsigned char *b)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)b[i] << (8 * i);
    return v;
}

static uint64_t get64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

#define BLOB_HDR 128u
#define BLOB_CRC_AT 104u

static size_t dt_size(int dtype)
{
    return dtype == 1 ? 4u : (dtype == 2 || dtype == 3) ? 2u : 0u;
}

size_t xf_at_m_blob_size_dt(void *const *states, int32_t n_layer, int dtype)
{
    size_t rows = 0;

    if (!dt_size(dtype))
        return 0;
    for (int32_t l = 0; l < n_layer; l++) {
        const xf_at_m_hdr_t *h = states[l];
        rows += (size_t)h->mem_rows + (size_t)h->cmem_rows + (size_t)h->pend_rows;
    }
    if (n_layer < 1)
        return BLOB_HDR;
    {
        const xf_at_m_hdr_t *h0 = states[0];
        return BLOB_HDR + rows * 2u * (size_t)h0->n_head * (size_t)h0->d_head * dt_size(dtype);
    }
}

size_t xf_at_m_blob_size(void *const *states, int32_t n_layer)
{
    return xf_at_m_blob_size_dt(states, n_layer, 1);
}

/* One plane row of d floats to/from the blob in dtype (1 f32, 2 f16, 3 bf16; little-endian).
 * Returns -ERANGE when a finite value does not fit f16 (it would come back as inf). */
static int enc_plane(const float *x, size_t d, int dtype, unsigned char *out)
{
    for (size_t i = 0; i < d; i++) {
        if (dtype == 1) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            put32(out + 4 * i, u);
        } else {
            if (dtype == 2 && fabsf(x[i]) > 65504.0f)
                return -ERANGE;
            put16(out + 2 * i, dtype == 2 ? xf_float_to_half(x[i]) : xf_float_to_bf16(x[i]));
        }
    }
    return 0;
}

static void dec_plane(const unsigned char *in, size_t d, int dtype, float *x)
{
    for (size_t i = 0; i < d; i++) {
        if (dtype == 1) {
            uint32_t u = get32(in + 4 * i);
            memcpy(&x[i], &u, 4);
        } else {
            uint16_t h = get16(in + 2 * i);
            x[i] = dtype == 2 ? xf_half_to_float(h) : xf_bf16_to_float(h);
        }
    }
}

/* Copy rows [r0, r1) of region `region` of a state to/from token-major blob rows
 * (K of every head, then V of every head) in dtype. */
static int rows_io(void *st, int32_t region, int32_t r0, int32_t r1, unsigned char *blob,
                   int to_blob, int dtype)
{
    const xf_at_m_hdr_t *h = st;
    size_t d = (size_t)h->d_head, es = dt_size(dtype);
    size_t rowb = 2u * (size_t)h->n_head * d * es;

    for (int32_t r = r0; r < r1; r++) {
        unsigned char *dst = blob + (size_t)(r - r0) * rowb;
        for (int kv = 0; kv < 2; kv++)
            for (int32_t hd = 0; hd < h->n_head; hd++) {
                float *plane = xf_at_m_rows(st, region, kv, hd) + (size_t)r * d;
                unsigned char *at = dst + ((size_t)kv * (size_t)h->n_head + (size_t)hd) * d * es;
                if (!to_blob)
                    dec_plane(at, d, dtype, plane);
                else if (enc_plane(plane, d, dtype, at) < 0)
                    return -ERANGE;
            }
    }
    return 0;
}

int xf_at_m_blob_write(void *const *states, int32_t n_layer, const uint8_t hash[32], void *buf,
                       size_t len)
{
    return xf_at_m_blob_write_dt(states, n_layer, 1, hash, buf, len);
}

int xf_at_m_blob_write_dt(void *const *states, int32_t n_layer, int dtype, const uint8_t hash[32],
                          void *buf, size_t len)
{
    unsigned char *b = buf, *at;
    const xf_at_m_hdr_t *h0;
    size_t need = xf_at_m_blob_size_dt(states, n_layer, dtype), rowb;
    uint32_t crc;
    int rc = 0;

    if (n_layer < 1 || !need || len < need)
        return -EINVAL;
    h0 = states[0];
    if (h0->magic != XF_AT_M_MAGIC)
        return -EINVAL;
    for (int32_t l = 1; l < n_layer; l++) {
        const xf_at_m_hdr_t *h = states[l];
        if (h->magic != XF_AT_M_MAGIC || h->n_head != h0->n_head || h->d_head != h0->d_head ||
            h->mem_rows != h0->mem_rows || h->cmem_rows != h0->cmem_rows ||
            h->pend_rows != h0->pend_rows || h->mem_cap != h0->mem_cap ||
            h->cmem_cap != h0->cmem_cap || h->rate != h0->rate)
            return -EINVAL;
    }
    rowb = 2u * (size_t)h0->n_head * (size_t)h0->d_head * dt_size(dtype);
    memset(b, 0, BLOB_HDR);
    memcpy(b, "XFMM", 4);
    put16(b + 4, 1);
    put16(b + 6, (uint16_t)dtype);
    put32(b + 8, BLOB_HDR);
    put32(b + 12, h0->cmem_cap > 0 ? 1u : 0u);
    memcpy(b + 16, hash, 32);
    put32(b + 48, (uint32_t)n_layer);
    put32(b + 52, (uint32_t)(2 * h0->n_head * h0->d_head));
    put32(b + 56, (uint32_t)h0->mem_cap);
    put32(b + 60, (uint32_t)h0->mem_rows);
    put32(b + 64, (uint32_t)h0->cmem_cap);
    put32(b + 68, (uint32_t)h0->cmem_rows);
    put32(b + 72, (uint32_t)h0->pend_rows);
    put32(b + 76, (uint32_t)h0->rate);
    put64(b + 80, (uint64_t)h0->segments);
    put64(b + 88, (uint64_t)h0->tokens);
    put64(b + 96, (uint64_t)(need - BLOB_HDR));
    at = b + BLOB_HDR;
    for (int32_t l = 0; l < n_layer; l++, at += (size_t)h0->mem_rows * rowb)
        rc |= rows_io(states[l], 1, 0, h0->mem_rows, at, 1, dtype);
    for (int32_t l = 0; l < n_layer; l++, at += (size_t)h0->cmem_rows * rowb)
        rc |= rows_io(states[l], 0, 0, h0->cmem_rows, at, 1, dtype);
    for (int32_t l = 0; l < n_layer; l++, at += (size_t)h0->pend_rows * rowb)
        rc |= rows_io(states[l], 2, 0, h0->pend_rows, at, 1, dtype);
    if (rc)
        return -ERANGE;
    /* CRC-32C over the header's first 104 bytes and the payload: a corrupted header field is
     * caught too (§27 corrupts every field once). */
    crc = xf_at_m_crc32c(b, BLOB_CRC_AT);
    crc = xf_at_m_crc32c_more(crc, b + BLOB_HDR, need - BLOB_HDR);
    put32(b + BLOB_CRC_AT, crc);
    return 0;
}

static int bad(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "session memory: %s", what);
    return XF_EFORMAT;
}

int xf_at_m_blob_read(const void *buf, size_t len, const uint8_t hash[32],
                      const xf_at_m_params_t *p, int32_t n_head, int32_t d_head,
                      void *const *states, int32_t n_layer, char *err, size_t errlen)
{
    const unsigned char *b = buf, *at;
    uint32_t hsize, width, mem_cap, mem_rows, cmem_cap, cmem_rows, pend_rows, rate, flags;
    uint64_t payload, rows;
    size_t rowb;
    int32_t keep_m, keep_c;
    uint32_t crc;
    int dtype;

    if (!buf || len < 108)
        return bad(err, errlen, "shorter than its header");
    if (memcmp(b, "XFMM", 4) != 0)
        return bad(err, errlen, "wrong magic");
    if (get16(b + 4) != 1)
        return bad(err, errlen, get16(b + 4) > 1 ? "newer version" : "bad version");
    dtype = get16(b + 6);
    if (!dt_size(dtype))
        return bad(err, errlen, "unknown dtype");
    rowb = 2u * (size_t)n_head * (size_t)d_head * dt_size(dtype);
    hsize = get32(b + 8);
    if (hsize < 108 || hsize > len || hsize < BLOB_HDR)
        return bad(err, errlen, "bad header size");
    flags = get32(b + 12);
    if (memcmp(b + 16, hash, 32) != 0)
        return bad(err, errlen, "written by a different model (hash mismatch)");
    if (get32(b + 48) != (uint32_t)n_layer)
        return bad(err, errlen, "layer count mismatch");
    width = get32(b + 52);
    if (width != (uint32_t)(2 * n_head * d_head))
        return bad(err, errlen, "row width (d_model) mismatch");
    mem_cap = get32(b + 56);
    mem_rows = get32(b + 60);
    cmem_cap = get32(b + 64);
    cmem_rows = get32(b + 68);
    pend_rows = get32(b + 72);
    rate = get32(b + 76);
    if (mem_rows > mem_cap || cmem_rows > cmem_cap || mem_cap > (1u << 24) ||
        cmem_cap > (1u << 24))
        return bad(err, errlen, "rows above caps");
    if ((flags & ~1u) != 0 || ((flags & 1u) != 0) != (cmem_cap > 0))
        return bad(err, errlen, "bad flags");
    if (rate < 1 || (pend_rows > 0 && pend_rows >= rate) || (cmem_cap == 0 && pend_rows > 0))
        return bad(err, errlen, "bad pending rows / rate");
    if ((cmem_rows > 0 || pend_rows > 0) && (int32_t)rate != p->rate)
        return bad(err, errlen, "compression rate differs from the configuration");
    for (size_t i = 108; i < hsize; i++)
        if (b[i] != 0)
            return bad(err, errlen, "reserved bytes not zero");
    payload = get64(b + 96);
    rows = (uint64_t)n_layer * ((uint64_t)mem_rows + cmem_rows + pend_rows);
    if (payload != rows * rowb || (uint64_t)len != (uint64_t)hsize + payload)
        return bad(err, errlen, "size mismatch");
    crc = xf_at_m_crc32c(b, BLOB_CRC_AT);
    crc = xf_at_m_crc32c_more(crc, b + hsize, (size_t)payload);
    if (crc != get32(b + BLOB_CRC_AT))
        return bad(err, errlen, "CRC mismatch");
    if (p->cmem_len == 0 && (cmem_rows > 0 || pend_rows > 0))
        cmem_rows = pend_rows = 0;              /* configured without compressed memory */
    keep_m = (int32_t)mem_rows < p->mem_len ? (int32_t)mem_rows : p->mem_len;
    keep_c = (int32_t)cmem_rows < p->cmem_len ? (int32_t)cmem_rows : p->cmem_len;
    if ((int32_t)pend_rows > pend_cap(p))
        return bad(err, errlen, "pending rows above capacity");
    at = b + hsize;
    for (int32_t l = 0; l < n_layer; l++) {
        xf_at_m_hdr_t h;
        xf_at_m_state_init(p, n_head, d_head, states[l]);
        memcpy(&h, states[l], sizeof(h));
        h.mem_rows = keep_m;
        h.cmem_rows = keep_c;
        h.pend_rows = (int32_t)pend_rows;
        h.segments = (int64_t)get64(b + 80);
        h.tokens = (int64_t)get64(b + 88);
        memcpy(states[l], &h, sizeof(h));
    }
    /* newest rows: skip the oldest (rows − keep) of each layer */
    for (int32_t l = 0; l < n_layer; l++, at += (size_t)mem_rows * rowb)
        rows_io(states[l], 1, 0, keep_m,
                (unsigned char *)at + (size_t)(mem_rows - (uint32_t)keep_m) * rowb, 0, dtype);
    for (int32_t l = 0; l < n_layer; l++, at += (size_t)get32(b + 68) * rowb)
        rows_io(states[l], 0, 0, keep_c,
                (unsigned char *)at + (size_t)(get32(b + 68) - (uint32_t)keep_c) * rowb, 0,
                dtype);
    for (int32_t l = 0; l < n_layer; l++, at += (size_t)pend_rows * rowb)
        rows_io(states[l], 2, 0, (int32_t)pend_rows, (unsigned char *)at, 0, dtype);
    return 0;
}
