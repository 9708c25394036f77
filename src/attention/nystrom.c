/* Nyströmformer (ATTENTION.md §20), family S, one (sequence, head) per item. x = √s·q,
 * y = √s·k; m landmarks = contiguous segment means (§16); F = softmax(X Ỹᵀ), A = softmax(X̃ Ỹᵀ),
 * Bm = softmax(X̃ Yᵀ); O = F · pinv(A) · (Bm V), right to left. pinv by pinv_iters Newton–Schulz
 * steps from Z0 = Aᵀ/(‖A‖₁‖A‖∞); everything in double (fp32 iterations can diverge, §20).
 * landmarks >= n runs dense for that sequence (counted in dense_fallbacks) unless
 * dense_fallback is false. A non-finite result falls back to dense for that item. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "attention/params.h"
#include "attention/fam_s.h"

static const xf_at_key_t keys[] = {
    XF_AT_KEY(xf_nystrom_params_t, landmarks, "landmarks", XF_AT_K_INT, 1, 4096, NULL),
    XF_AT_KEY(xf_nystrom_params_t, pinv_iters, "pinv_iters", XF_AT_K_INT, 1, 100, NULL),
    XF_AT_KEY(xf_nystrom_params_t, dense_fallback, "dense_fallback", XF_AT_K_BOOL, 0, 1, NULL),
};

static const xf_nystrom_params_t ny_defaults = {
    .landmarks = 64, .pinv_iters = 6, .dense_fallback = 1,
};

typedef struct lay {
    double *xl, *yl, *A, *Z, *AZ, *T1, *T2, *BV, *W, *row, *q;
    float *scr;
} lay_t;

enum { YN = XF_AT_DIM_USER, YD, YM, YNM };   /* n, d, m, max(n, m) */
static const xf_at_slot_t slots[] = {
    XF_AT_SLOT(xl, YM, YD, 0), XF_AT_SLOT(yl, YM, YD, 0),
    XF_AT_SLOT(A, YM, YM, 0), XF_AT_SLOT(Z, YM, YM, 0), XF_AT_SLOT(AZ, YM, YM, 0),
    XF_AT_SLOT(T1, YM, YM, 0), XF_AT_SLOT(T2, YM, YM, 0),
    XF_AT_SLOT(BV, YM, YD, 0), XF_AT_SLOT(W, YM, YD, 0),
    XF_AT_SLOT(row, YNM, 1, 1), XF_AT_SLOT(q, YD, 1, 0), XF_AT_SLOT(scr, YN, 1, 1),
};

static size_t layout(int32_t n, int32_t d, int32_t m, void *ws, lay_t *l)
{
    const size_t dim[] = { 0, 1, (size_t)n, (size_t)d, (size_t)m, (size_t)(n > m ? n : m) };
    return XF_AT_CARVE(ws, l, slots, dim);
}

static int uses_dense(const xf_nystrom_params_t *p, int32_t n)
{
    return p->dense_fallback && p->landmarks >= n;
}

static int ny_plan(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out)
{
    const xf_nystrom_params_t *p = params;
    int nmax = xf_at_check_shape(sh);

    (void)nth;
    if (nmax < 0)
        return nmax;
    xf_at_plan_items(sh, layout(nmax, sh->d_head, p->landmarks < nmax ? p->landmarks : nmax,
                                  NULL, NULL) + xf_at_tile_ws(sh->d_head), 0, out);
    for (int32_t b = 0; b < sh->n_seq; b++) {
        int32_t n = sh->cu_len[b + 1] - sh->cu_len[b];
        out->dense_fallbacks += n > 0 && uses_dense(p, n);
    }
    return 0;
}

static double ddot(const double *a, const double *b, int32_t d)
{
    double s = 0;
    for (int32_t c = 0; c < d; c++)
        s += a[c] * b[c];
    return s;
}

/* row[0..cnt) = softmax(row) in place */
static void dsoftmax(double *row, int32_t cnt)
{
    double mx = -INFINITY, l = 0;
    for (int32_t j = 0; j < cnt; j++)
        mx = row[j] > mx ? row[j] : mx;
    for (int32_t j = 0; j < cnt; j++) {
        row[j] = exp(row[j] - mx);
        l += row[j];
    }
    for (int32_t j = 0; j < cnt; j++)
        row[j] /= l;
}

/* C = A·B, m×m */
static void mm(const double *a, const double *b, int32_t m, double *c)
{
    memset(c, 0, sizeof(double) * (size_t)m * (size_t)m);
    for (int32_t i = 0; i < m; i++)
        for (int32_t k = 0; k < m; k++) {
            double x = a[(size_t)i * (size_t)m + (size_t)k];
            for (int32_t j = 0; j < m; j++)
                c[(size_t)i * (size_t)m + (size_t)j] += x * b[(size_t)k * (size_t)m + (size_t)j];
        }
}

/* T = cI − T (in place) */
static void cminus(double *t, int32_t m, double cval)
{
    for (size_t i = 0; i < (size_t)m * (size_t)m; i++)
        t[i] = -t[i];
    for (int32_t i = 0; i < m; i++)
        t[(size_t)i * (size_t)m + (size_t)i] += cval;
}

static void item(const void *params, const xf_attn_shape *sh, const xf_at_item_t *it,
                 float q_scale, float scale, void *ws, void *tws)
{
    const xf_nystrom_params_t *p = params;
    int32_t n = it->n, d = it->d, m = p->landmarks < n ? p->landmarks : n;
    double rs = sqrt((double)scale), n1 = 0, ninf = 0;
    int finite = 1;
    lay_t l;

    (void)sh;
    if (uses_dense(p, n))
        goto dense;
    layout(n, d, m, ws, &l);
    /* landmarks: segment means of x and y */
    for (int32_t a = 0; a < m; a++) {
        int32_t r0 = xf_at_s_seg_start(n, m, a), r1 = xf_at_s_seg_start(n, m, a + 1);
        for (int32_t c = 0; c < d; c++) {
            double sx = 0, sy = 0;
            for (int32_t j = r0; j < r1; j++) {
                sx += (double)it->q[(size_t)j * (size_t)d + (size_t)c];
                sy += (double)it->k[(size_t)j * (size_t)d + (size_t)c];
            }
            l.xl[(size_t)a * (size_t)d + (size_t)c] = sx / (r1 - r0) * rs / (double)q_scale;
            l.yl[(size_t)a * (size_t)d + (size_t)c] = sy / (r1 - r0) * rs;
        }
    }
    /* A = softmax(X̃ Ỹᵀ); Bm V row by row */
    for (int32_t a = 0; a < m; a++) {
        double *ar = l.A + (size_t)a * (size_t)m;
        for (int32_t b = 0; b < m; b++)
            ar[b] = ddot(l.xl + (size_t)a * (size_t)d, l.yl + (size_t)b * (size_t)d, d);
        dsoftmax(ar, m);
        for (int32_t j = 0; j < n; j++) {
            double s = 0;
            for (int32_t c = 0; c < d; c++)
                s += l.xl[(size_t)a * (size_t)d + (size_t)c] *
                     ((double)it->k[(size_t)j * (size_t)d + (size_t)c] * rs);
            l.row[j] = s;
        }
        dsoftmax(l.row, n);
        for (int32_t c = 0; c < d; c++) {
            double s = 0;
            for (int32_t j = 0; j < n; j++)
                s += l.row[j] * (double)it->v[(size_t)j * (size_t)d + (size_t)c];
            l.BV[(size_t)a * (size_t)d + (size_t)c] = s;
        }
    }
    /* Z0 = Aᵀ / (max column sum · max row sum) of this A */
    for (int32_t i = 0; i < m; i++) {
        double rsum = 0, csum = 0;
        for (int32_t j = 0; j < m; j++) {
            rsum += fabs(l.A[(size_t)i * (size_t)m + (size_t)j]);
            csum += fabs(l.A[(size_t)j * (size_t)m + (size_t)i]);
        }
        ninf = rsum > ninf ? rsum : ninf;
        n1 = csum > n1 ? csum : n1;
    }
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < m; j++)
            l.Z[(size_t)i * (size_t)m + (size_t)j] = l.A[(size_t)j * (size_t)m + (size_t)i] /
                                                     (n1 * ninf);
    for (int32_t t = 0; t < p->pinv_iters; t++) {
        /* Z ← ¼ Z (13I − AZ(15I − AZ(7I − AZ))) */
        mm(l.A, l.Z, m, l.AZ);
        memcpy(l.T1, l.AZ, sizeof(double) * (size_t)m * (size_t)m);
        cminus(l.T1, m, 7.0);
        mm(l.AZ, l.T1, m, l.T2);
        cminus(l.T2, m, 15.0);
        mm(l.AZ, l.T2, m, l.T1);
        cminus(l.T1, m, 13.0);
        mm(l.Z, l.T1, m, l.T2);
        for (size_t i = 0; i < (size_t)m * (size_t)m; i++)
            l.Z[i] = 0.25 * l.T2[i];
    }
    /* W = Z · (Bm V) */
    for (int32_t a = 0; a < m; a++)
        for (int32_t c = 0; c < d; c++) {
            double s = 0;
            for (int32_t b = 0; b < m; b++)
                s += l.Z[(size_t)a * (size_t)m + (size_t)b] *
                     l.BV[(size_t)b * (size_t)d + (size_t)c];
            l.W[(size_t)a * (size_t)d + (size_t)c] = s;
            finite &= isfinite(s);
        }
    if (!finite)
        goto dense;
    for (int32_t i = 0; i < n; i++) {
        float *oi = it->out + (size_t)i * (size_t)it->ldo;
        for (int32_t c = 0; c < d; c++)
            l.q[c] = (double)it->q[(size_t)i * (size_t)d + (size_t)c] * rs / (double)q_scale;
        for (int32_t a = 0; a < m; a++)
            l.row[a] = ddot(l.q, l.yl + (size_t)a * (size_t)d, d);
        dsoftmax(l.row, m);
        for (int32_t c = 0; c < d; c++) {
            double s = 0;
            for (int32_t a = 0; a < m; a++)
                s += l.row[a] * l.W[(size_t)a * (size_t)d + (size_t)c];
            oi[c] = (float)s;
        }
    }
    return;
dense:
    xf_at_s_attend_summaries(it, scale / q_scale, it->k, it->v, NULL, n, tws);
}

const xf_attn_ops xf_at_nystrom = {
    XF_AT_PARAMS(xf_nystrom_params_t, ny_defaults, keys),
    .plan = ny_plan, .item = item,
};
