/* Attention family F (ATTENTION.md §17–§19): the shared feature-map linear-attention kernel and
 * the seeded projection generators (FAVOR+ orthogonal blocks, RFA Gaussian rows). Keys are
 * mapped with one per-(sequence, head) shift so exponentials stay in range; every accumulation
 * (S, z) is in double. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attention/fam_f.h"
#include "attention/fam_t.h"
#include "attention/rng.h"

int32_t xf_at_f_features(const xf_at_f_map_t *mp)
{
    return (mp->kind == XF_AT_F_TRIG || mp->kind == XF_AT_F_TRIGNORM) ? 2 * mp->r : mp->r;
}

/* Scratch of one item, every piece 64-byte aligned (the T micro-kernels' layout): see item(). */
typedef struct lay {
    float *pre, *wt, *x, *s, *phit, *acc, *vbuf, *sf;
    double *g, *S, *z, *za, *phi, *num, *den, *flo, *vmean;
} lay_t;

static int32_t dpad(int32_t d)
{
    return (d + 15) & ~15;
}

/* n, r, 64-feature chunks of r, dp·64 (one chunk of Wᵀ), XF_AT_TQ, dp (d rounded up to 16),
 * 64 keys, max(F, 64), F + 64, F and d */
enum { FN = XF_AT_DIM_USER, FR, FRC, FCHUNK, FTQ, FDP, FBK, FPHI, FSF, FF, FD };
static const xf_at_slot_t slots[] = {
    XF_AT_SLOT(pre, FN, FR, 0),         /* projections of the keys */
    XF_AT_SLOT(wt, FRC, FCHUNK, 0),     /* Wᵀ in chunks of 64 features */
    XF_AT_SLOT(x, FTQ, FDP, 0),         /* mapped inputs of a block */
    XF_AT_SLOT(s, FTQ, FBK, 0),
    XF_AT_SLOT(phit, FPHI, FBK, 0),     /* φ blocks, transposed */
    XF_AT_SLOT(acc, FTQ, FDP, 0),
    XF_AT_SLOT(vbuf, FBK, FDP, 0),
    XF_AT_SLOT(sf, FSF, FDP, 0),        /* fp32 S, rows padded to dp */
    XF_AT_SLOT(g, FN, 1, 0),
    XF_AT_SLOT(S, FF, FD, 0),
    XF_AT_SLOT(z, FF, 1, 0),
    XF_AT_SLOT(za, FF, 1, 0),
    XF_AT_SLOT(phi, FF, 1, 0),
    XF_AT_SLOT(num, FTQ, FD, 0),
    XF_AT_SLOT(den, FTQ, 1, 0),
    XF_AT_SLOT(flo, FTQ, 1, 0),
    XF_AT_SLOT(vmean, FD, 1, 0),
};

/* Carve ws (any alignment; NULL: sizes only) into l from its first 64-byte boundary; returns
 * the bytes taken plus 64 of slack for that alignment. */
static size_t flayout(const xf_at_f_map_t *mp, int32_t n, int32_t d, void *ws, lay_t *l)
{
    size_t F = (size_t)xf_at_f_features(mp), r = (size_t)mp->r, dp = (size_t)dpad(d);
    const size_t dim[] = { 0, 1, (size_t)n, r, (r + XF_AT_T_BK - 1) / XF_AT_T_BK,
                           dp * XF_AT_T_BK, XF_AT_TQ, dp, XF_AT_T_BK,
                           F > XF_AT_T_BK ? F : XF_AT_T_BK, F + XF_AT_T_BK, F, (size_t)d };
    _Static_assert(sizeof dim / sizeof dim[0] == FD + 1, "one dimension per enum entry");
    void *b = ws ? (void *)(((uintptr_t)ws + 63u) & ~(uintptr_t)63u) : NULL;
    return xf_at_carve_table(b, 64, l, slots, sizeof slots / sizeof slots[0], dim) + 64u;
}

size_t xf_at_f_ws(const xf_at_f_map_t *mp, int32_t nmax, int32_t d)
{
    return flayout(mp, nmax, d, NULL, NULL);
}

static inline float elu1(float x)
{
    return x > 0 ? x + 1.0f : expf(x);
}

/* x = mul·raw (or the unit vector for TRIGNORM); returns ‖x‖²/2. */
static double map_input(const xf_at_f_map_t *mp, const float *raw, int32_t d, float mul, float *x)
{
    double nn = 0;

    if (mp->kind == XF_AT_F_TRIGNORM) {
        double s = 0;
        for (int32_t c = 0; c < d; c++)
            s += (double)raw[c] * (double)raw[c];
        s = sqrt(s);
        for (int32_t c = 0; c < d; c++)
            x[c] = s > 0 ? (float)((double)raw[c] / s) : 0.0f;
        return 0.5;
    }
    for (int32_t c = 0; c < d; c++) {
        x[c] = raw[c] * mul;
        nn += (double)x[c] * (double)x[c];
    }
    return 0.5 * nn;
}

/* Features of one row from its projection: phi[F]. g = log weight (already shifted). */
static void expand(const xf_at_f_map_t *mp, const float *pre, double g, double *phi)
{
    int32_t r = mp->r;

    switch (mp->kind) {
    case XF_AT_F_LINEAR:
        for (int32_t c = 0; c < r; c++)
            phi[c] = (double)elu1(pre[c]);
        break;
    case XF_AT_F_FAVOR:
        /* fp32 exponentials (the features are rounded to fp32 for the kernels anyway); the
         * argument is formed in double so the shift is exact */
        for (int32_t c = 0; c < r; c++)
            phi[c] = (double)expf((float)((double)pre[c] + g));
        break;
    case XF_AT_F_TRIG:
    case XF_AT_F_TRIGNORM: {
        double e = exp(g);
        for (int32_t c = 0; c < r; c++) {
            phi[c] = e * (double)sinf(pre[c]);
            phi[r + c] = e * (double)cosf(pre[c]);
        }
        break;
    }
    }
}

/* Projections pre[row][0..r) of nq mapped rows (x, [nq][dp]) by the transposed W chunks
 * (LINEAR: the rows themselves). */
static void project_block(const xf_at_kern *kn, const xf_at_f_map_t *mp, const lay_t *l,
                          int32_t nq, int32_t d, float *pre, int32_t ldp)
{
    int32_t dp = dpad(d), r = mp->r;

    if (mp->kind == XF_AT_F_LINEAR) {
        for (int32_t q = 0; q < nq; q++)
            memcpy(pre + (size_t)q * (size_t)ldp, l->x + (size_t)q * (size_t)dp,
                   sizeof(float) * (size_t)d);
        return;
    }
    for (int32_t f0 = 0, ch = 0; f0 < r; f0 += XF_AT_T_BK, ch++) {
        int32_t nf = r - f0 < XF_AT_T_BK ? r - f0 : XF_AT_T_BK;
        kn->qk(nq, d, dp, l->x, l->wt + (size_t)ch * (size_t)dp * XF_AT_T_BK, 1.0f, l->s);
        for (int32_t q = 0; q < nq; q++)
            memcpy(pre + (size_t)q * (size_t)ldp + f0, l->s + (size_t)q * XF_AT_T_BK,
                   sizeof(float) * (size_t)nf);
    }
}

/* x rows of a block: mapped inputs, zero-padded to dp; returns ‖x‖²/2 per row into h. */
static void map_block(const xf_at_f_map_t *mp, const float *raw, int32_t nq, int32_t d,
                      float mul, const lay_t *l, double *h)
{
    int32_t dp = dpad(d);

    memset(l->x, 0, sizeof(float) * (size_t)nq * (size_t)dp);
    for (int32_t q = 0; q < nq; q++)
        h[q] = map_input(mp, raw + (size_t)q * (size_t)d, d, mul, l->x + (size_t)q * (size_t)dp);
}

void xf_at_f_walk(const xf_at_f_map_t *mp, size_t w_head, const xf_attn_shape *sh,
                  const xf_attn_io *io, const xf_attn_plan *pl, void *ws_thread, int ith,
                  int nth)
{
    xf_at_f_map_t m = *mp;

    for (int32_t t = ith; t < pl->n_items; t += nth) {
        xf_at_item_t it;

        xf_at_item(sh, io, t, &it);
        if (it.n == 0)
            continue;
        if (w_head > 0)
            m.w = mp->w + (size_t)it.head * w_head;
        xf_at_f_item(&m, &it, ws_thread);
    }
}

static size_t shared_w_bytes(int32_t n_head, int32_t r, int32_t d)
{
    return (sizeof(float) * (size_t)n_head * (size_t)r * (size_t)d + 7u) & ~(size_t)7u;
}

void xf_at_f_rand_map(xf_at_f_map_t *mp, enum xf_at_f_kind kind, int32_t r, const float *w,
                      const xf_attn_io *io)
{
    mp->kind = kind;
    mp->r = r;
    mp->w = w;
    mp->eps = 0;
    mp->qmul = mp->kmul = 1.0f;
    if (io) {
        float rs = sqrtf(io->scale);      /* x·y = s·q·k */
        mp->qmul = rs / io->q_scale;
        mp->kmul = rs;
    }
}

size_t xf_at_f_shared_size(int32_t n_head, int32_t r, int32_t d, size_t tmp)
{
    return shared_w_bytes(n_head, r, d) + sizeof(double) * tmp;
}

double *xf_at_f_shared_tmp(void *ws_shared, int32_t n_head, int32_t r, int32_t d)
{
    return (double *)(void *)((unsigned char *)ws_shared + shared_w_bytes(n_head, r, d));
}

void xf_at_f_store_w(void *ws_shared, int32_t h, int32_t r, int32_t d, const double *w)
{
    size_t rd = (size_t)r * (size_t)d;
    float *wh = (float *)ws_shared + (size_t)h * rd;

    for (size_t i = 0; i < rd; i++)
        wh[i] = (float)w[i];
}

void xf_at_f_item(const xf_at_f_map_t *mp, const xf_at_item_t *it, void *ws)
{
    const xf_at_kern *kn = xf_at_kern_get();
    int32_t n = it->n, d = it->d, dp = dpad(d), r = mp->r, F = xf_at_f_features(mp);
    int trig = mp->kind == XF_AT_F_TRIG || mp->kind == XF_AT_F_TRIGNORM;
    double G = -INFINITY, h[XF_AT_TQ];
    const float *vt[XF_AT_T_BK];
    int32_t rows[XF_AT_T_BK];
    lay_t l;

    flayout(mp, n, d, ws, &l);
    /* Wᵀ chunks for the kernel's qk: wt[ch][x][ff] = W[64·ch + ff][x] */
    for (int32_t f0 = 0, ch = 0; mp->w && f0 < r; f0 += XF_AT_T_BK, ch++) {
        int32_t nf = r - f0 < XF_AT_T_BK ? r - f0 : XF_AT_T_BK;
        float *w = l.wt + (size_t)ch * (size_t)dp * XF_AT_T_BK;
        for (int32_t ff = 0; ff < nf; ff++)
            rows[ff] = f0 + ff;
        kn->kt(nf, d, d, mp->w, rows, w);
        for (int32_t x = d; x < dp; x++)
            memset(w + (size_t)x * XF_AT_T_BK, 0, sizeof(float) * XF_AT_T_BK);
    }

    /* Keys: projections and log weights, then one shift G for this (sequence, head). */
    for (int32_t j0 = 0; j0 < n; j0 += XF_AT_TQ) {
        int32_t nq = n - j0 < XF_AT_TQ ? n - j0 : XF_AT_TQ;
        map_block(mp, it->k + (size_t)j0 * (size_t)d, nq, d, mp->kmul, &l, h);
        project_block(kn, mp, &l, nq, d, l.pre + (size_t)j0 * (size_t)r, r);
        for (int32_t q = 0; q < nq; q++) {
            const float *pj = l.pre + (size_t)(j0 + q) * (size_t)r;
            int32_t j = j0 + q;
            if (mp->kind == XF_AT_F_FAVOR) {
                float mx = -INFINITY;
                for (int32_t c = 0; c < r; c++)
                    mx = pj[c] > mx ? pj[c] : mx;
                l.g[j] = -h[q];
                if ((double)mx - h[q] > G)
                    G = (double)mx - h[q];
            } else if (mp->kind == XF_AT_F_TRIG) {
                l.g[j] = h[q];
                if (h[q] > G)
                    G = h[q];
            } else {
                l.g[j] = 0;
                G = 0;
            }
        }
    }

    /* S = Σ_j φ_j v_jᵀ over chunks of 64 keys: φ transposed (features × keys) times the V rows
     * on the kernel's pv, 32 features at a time; each chunk's fp32 sums are added into the
     * double S. z, Σ|φ|, the mean of V in double. */
    memset(l.S, 0, sizeof(double) * (size_t)F * (size_t)d);
    memset(l.z, 0, sizeof(double) * (size_t)F);
    memset(l.za, 0, sizeof(double) * (size_t)F);
    memset(l.vmean, 0, sizeof(double) * (size_t)d);
    for (int32_t j0 = 0; j0 < n; j0 += XF_AT_T_BK) {
        int32_t nk = n - j0 < XF_AT_T_BK ? n - j0 : XF_AT_T_BK;
        for (int32_t jj = 0; jj < nk; jj++) {
            int32_t j = j0 + jj;
            const float *vj = it->v + (size_t)j * (size_t)d;
            expand(mp, l.pre + (size_t)j * (size_t)r, l.g[j] - G, l.phi);
            for (int32_t f = 0; f < F; f++) {
                l.z[f] += l.phi[f];
                l.za[f] += fabs(l.phi[f]);
                l.phit[(size_t)f * XF_AT_T_BK + (size_t)jj] = (float)l.phi[f];
            }
            for (int32_t c = 0; c < d; c++)
                l.vmean[c] += (double)vj[c];
            if (d == dp) {
                vt[jj] = vj;
            } else {
                float *pr = l.vbuf + (size_t)jj * (size_t)dp;
                memcpy(pr, vj, sizeof(float) * (size_t)d);
                memset(pr + d, 0, sizeof(float) * (size_t)(dp - d));
                vt[jj] = pr;
            }
        }
        for (int32_t f0 = 0; f0 < F; f0 += XF_AT_TQ) {
            int32_t nf = F - f0 < XF_AT_TQ ? F - f0 : XF_AT_TQ;
            memset(l.acc, 0, sizeof(float) * (size_t)nf * (size_t)dp);
            kn->pv(nf, nk, dp, l.phit + (size_t)f0 * XF_AT_T_BK, vt, l.acc);
            for (int32_t f = 0; f < nf; f++)
                for (int32_t c = 0; c < d; c++)
                    l.S[(size_t)(f0 + f) * (size_t)d + (size_t)c] +=
                        (double)l.acc[(size_t)f * (size_t)dp + (size_t)c];
        }
    }
    for (int32_t c = 0; c < d; c++)
        l.vmean[c] /= (double)n;
    memset(l.sf, 0, sizeof(float) * ((size_t)F + XF_AT_T_BK) * (size_t)dp);
    for (int32_t f = 0; f < F; f++)                 /* fp32 S, rows padded for pv */
        for (int32_t c = 0; c < d; c++)
            l.sf[(size_t)f * (size_t)dp + (size_t)c] = (float)l.S[(size_t)f * (size_t)d + (size_t)c];

    /* Queries in blocks of 32: projections on qk, features in double (den, floor), the
     * numerator Φ_Q S on pv over chunks of 64 features, each chunk added in double. */
    for (int32_t i0 = 0; i0 < n; i0 += XF_AT_TQ) {
        int32_t nq = n - i0 < XF_AT_TQ ? n - i0 : XF_AT_TQ;
        float *qpre = l.pre;                         /* the key projections are no longer used */
        map_block(mp, it->q + (size_t)i0 * (size_t)d, nq, d, mp->qmul, &l, h);
        project_block(kn, mp, &l, nq, d, qpre, r);
        memset(l.num, 0, sizeof(double) * (size_t)nq * (size_t)d);
        for (int32_t q = 0; q < nq; q++) {
            const float *pq = qpre + (size_t)q * (size_t)r;
            double gq = 0, den = 0, flo = 0;
            if (mp->kind == XF_AT_F_FAVOR) {
                float mx = -INFINITY;
                for (int32_t c = 0; c < r; c++)
                    mx = pq[c] > mx ? pq[c] : mx;
                gq = -(double)mx;
            }
            expand(mp, pq, gq, l.phi);
            for (int32_t f = 0; f < F; f++) {
                den += l.phi[f] * l.z[f];
                flo += fabs(l.phi[f]) * l.za[f];
            }
            l.den[q] = den;
            l.flo[q] = flo;
            /* φ of this query, chunked: phit[ch][q][ff] */
            for (int32_t f = 0; f < F; f++)
                l.phit[((size_t)(f / XF_AT_T_BK) * XF_AT_TQ + (size_t)q) * XF_AT_T_BK +
                       (size_t)(f % XF_AT_T_BK)] = (float)l.phi[f];
        }
        for (int32_t f0 = 0, ch = 0; f0 < F; f0 += XF_AT_T_BK, ch++) {
            int32_t nf = F - f0 < XF_AT_T_BK ? F - f0 : XF_AT_T_BK;
            for (int32_t ff = 0; ff < nf; ff++)
                vt[ff] = l.sf + (size_t)(f0 + ff) * (size_t)dp;
            memset(l.acc, 0, sizeof(float) * (size_t)nq * (size_t)dp);
            kn->pv(nq, nf, dp, l.phit + (size_t)ch * XF_AT_TQ * XF_AT_T_BK, vt, l.acc);
            for (int32_t q = 0; q < nq; q++)
                for (int32_t c = 0; c < d; c++)
                    l.num[(size_t)q * (size_t)d + (size_t)c] +=
                        (double)l.acc[(size_t)q * (size_t)dp + (size_t)c];
        }
        for (int32_t q = 0; q < nq; q++) {
            float *oi = it->out + (size_t)(i0 + q) * (size_t)it->ldo;
            double den = l.den[q];
            if (mp->kind == XF_AT_F_LINEAR)
                den += mp->eps;
            if (trig && den < 1e-6 * l.flo[q])
                den = 1e-6 * l.flo[q];           /* §19: the trig estimator is not positive */
            if (!(den > 0) || !isfinite(den)) {
                for (int32_t c = 0; c < d; c++)  /* nothing usable: the uniform average */
                    oi[c] = (float)l.vmean[c];
                continue;
            }
            for (int32_t c = 0; c < d; c++)
                oi[c] = (float)(l.num[(size_t)q * (size_t)d + (size_t)c] / den);
        }
    }
}

void xf_at_f_favor_w(uint64_t seed, int32_t layer, int32_t head, int32_t m, int32_t d,
                     int orthogonal, int row_norm, double *w)
{
    for (int32_t b = 0; b * d < m; b++) {
        xf_rng_t rng;
        int32_t rows = m - b * d < d ? m - b * d : d;
        double *blk = w + (size_t)b * (size_t)d * (size_t)d;  /* rows of this block */

        /* The Gaussian block G (row-major) is generated into blk's space when it fits; for the
         * truncated last block generate row by row and keep what fits. */
        xf_rng_init(&rng, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_FAVOR, (uint64_t)b);
        if (!orthogonal) {
            for (int32_t r = 0; r < rows; r++)
                for (int32_t c = 0; c < d; c++)
                    blk[(size_t)r * (size_t)d + (size_t)c] = xf_rng_normal(&rng);
        } else {
            /* Modified Gram–Schmidt on the columns of G gives Q with diag(R) > 0 (= QR with the
             * sign fix). Direction r = column r of Q. Work column-wise in a transposed copy. */
            double *qt = w + (size_t)m * (size_t)d;    /* scratch d*d after w (caller sized) */
            for (int32_t r = 0; r < d; r++)
                for (int32_t c = 0; c < d; c++)
                    qt[(size_t)c * (size_t)d + (size_t)r] = xf_rng_normal(&rng); /* G[r][c] */
            for (int32_t c = 0; c < d; c++) {
                double *qc = qt + (size_t)c * (size_t)d, nn = 0;
                for (int32_t p = 0; p < c; p++) {
                    const double *qp = qt + (size_t)p * (size_t)d;
                    double dot = 0;
                    for (int32_t t = 0; t < d; t++)
                        dot += qp[t] * qc[t];
                    for (int32_t t = 0; t < d; t++)
                        qc[t] -= dot * qp[t];
                }
                for (int32_t t = 0; t < d; t++)
                    nn += qc[t] * qc[t];
                nn = sqrt(nn);
                for (int32_t t = 0; t < d; t++)
                    qc[t] = nn > 0 ? qc[t] / nn : 0.0;
            }
            memcpy(blk, qt, sizeof(double) * (size_t)rows * (size_t)d);
        }
        for (int32_t r = 0; r < rows; r++) {
            double *wr = blk + (size_t)r * (size_t)d, nn = 0, target;
            int32_t row = b * d + r;
            for (int32_t c = 0; c < d; c++)
                nn += wr[c] * wr[c];
            nn = sqrt(nn);
            if (row_norm == XF_ROWNORM_SQRT_D) {
                target = sqrt((double)d);
            } else if (orthogonal) {
                xf_rng_t rn;
                double s = 0;
                xf_rng_init(&rn, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_FAVOR_NORM,
                            (uint64_t)row);
                for (int32_t c = 0; c < d; c++) {
                    double u = xf_rng_normal(&rn);
                    s += u * u;
                }
                target = sqrt(s);
            } else {
                target = nn;                    /* Gaussian rows already have chi norms */
            }
            for (int32_t c = 0; c < d; c++)
                wr[c] = nn > 0 ? wr[c] * (target / nn) : 0.0;
        }
    }
}

void xf_at_f_rfa_w(uint64_t seed, int32_t layer, int32_t head, int32_t D, int32_t d, double tau,
                   double *w)
{
    double sc = 1.0 / sqrt(tau);

    for (int32_t r = 0; r < D; r++) {
        xf_rng_t rng;
        xf_rng_init(&rng, seed, (uint64_t)layer, (uint64_t)head, XF_RNG_RFA, (uint64_t)r);
        for (int32_t c = 0; c < d; c++)
            w[(size_t)r * (size_t)d + (size_t)c] = xf_rng_normal(&rng) * sc;
    }
}
