/* Family M (Transformer-XL, Compressive; ATTENTION.md §22, §22.1, §23, §27): limit (no memory,
 * no position weights = dense), relative-position scores vs a double reference, TXL
 * segment-causal equivalence ([A; B] in two calls = one pass under the segment-causal mask),
 * eviction, Compressive vs an explicit reference and rate = 1 ≡ TXL, the session blob
 * (round trip, every header field corrupted once, payload CRC, smaller configured caps),
 * thread / packing independence, n = 1, huge logits, parse errors. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/helpers/xf_test.h"
#include "tests/ref/attn_ref_sfpm.h"

#define PM(x) ((const xf_at_m_params_t *)(const void *)(x))

static const int32_t odd_lens[] = { 1, 2, 3, 7, 63, 64, 65, 257, 1000 };
static const int32_t short_lens[] = { 3, 65, 1, 64, 7 };

/* weights for h heads of width d, d_model = h*d */
typedef struct wts {
    xf_attn_w_txl_t w;
    float *wr, *u, *v;
} wts_t;

static wts_t *wts_new(int32_t h, int32_t d, uint64_t seed)
{
    wts_t *t = calloc(1, sizeof(*t));
    size_t dm = (size_t)h * (size_t)d;

    t->wr = malloc(sizeof(float) * dm * dm);
    t->u = malloc(sizeof(float) * dm);
    t->v = malloc(sizeof(float) * dm);
    xf_test_fill(t->wr, dm * dm, seed, -0.5f, 0.5f);
    xf_test_fill(t->u, dm, seed + 1, -0.5f, 0.5f);
    xf_test_fill(t->v, dm, seed + 2, -0.5f, 0.5f);
    t->w.d_model = (int32_t)dm;
    t->w.n_head = h;
    t->w.d_head = d;
    t->w.w_r = t->wr;
    t->w.u = t->u;
    t->w.v = t->v;
    return t;
}

static void wts_free(wts_t *t)
{
    free(t->wr);
    free(t->u);
    free(t->v);
    free(t);
}

static void ref_txl_fn(XF_REF_FN_ARGS)
{
    const xf_at_m_params_t *pp = p;
    const xf_attn_w_txl_t *ww = w;
    int32_t dm = ww ? ww->d_model : 0;

    xf_ref_txl(0, n, d, q, k, v, s, pp->causal, pp->clamp_len, dm,
               ww ? ww->w_r + (size_t)head * (size_t)d * (size_t)dm : NULL,
               ww ? ww->u + (size_t)head * (size_t)d : NULL,
               ww ? ww->v + (size_t)head * (size_t)d : NULL, 0, out);
    (void)layer;
}

/* §22 limit: no memory, W_r = 0, u = v = 0 (weights NULL) ⇒ dense (bidirectional). */
static void test_txl_limit(void **state)
{
    (void)state;
    assert_true(xf_ref_check(&xf_attn_vt_txl, "{\"mem_len\":0,\"causal\":false}", xf_ref_dense, NULL, 9,
                             odd_lens, 3, 64, 2.0f, 0) <= 1e-5);
    assert_true(xf_ref_check(&xf_attn_vt_txl, "{\"mem_len\":0,\"causal\":false}", xf_ref_dense, NULL, 5,
                             short_lens, 12, 32, 2.0f, 0) <= 1e-5);
    /* causal without weights = the causal reference */
    assert_true(xf_ref_check(&xf_attn_vt_txl, "{\"mem_len\":0}", ref_txl_fn, NULL, 9, odd_lens, 3,
                             40, 2.0f, 0) <= 1e-5);
}

/* Relative-position scores on odd shapes (no memory) vs the double reference. fp32 r table
 * and fp32 dots vs double: 1e-5 (§0). */
static void test_txl_positions(void **state)
{
    static const int32_t ds[] = { 32, 64, 40 };
    static const int32_t lens[] = { 1, 2, 3, 7, 63, 64, 65, 257 };

    (void)state;
    for (int i = 0; i < 3; i++) {
        wts_t *t = wts_new(3, ds[i], 7 + (uint64_t)i);
        double e1 = xf_ref_check(&xf_attn_vt_txl, "{\"causal\":false}", ref_txl_fn, &t->w, 8, lens,
                                 3, ds[i], 1.0f, 0);
        double e2 = xf_ref_check(&xf_attn_vt_txl, "{\"clamp_len\":20}", ref_txl_fn, &t->w, 8, lens,
                                 3, ds[i], 1.0f, 0);
        print_message("# txl d=%d err %.3g (bidir) %.3g (causal, clamp 20)\n", ds[i], e1, e2);
        assert_true(e1 <= 1e-5 && e2 <= 1e-5);
        wts_free(t);
    }
    {
        wts_t *t = wts_new(12, 32, 3);
        assert_true(xf_ref_check(&xf_attn_vt_txl, "{\"causal\":false}", ref_txl_fn, &t->w, 5,
                                 short_lens, 12, 32, 1.0f, 0) <= 1e-5);
        wts_free(t);
    }
}

/* Run forward (nth threads, sequentially) then state_update on a batch with per-sequence
 * states. */
static void run_seg(const xf_attn_vtbl *vt, const void *params, xf_rbatch_t *b, const void *w,
                    void **states, int nth)
{
    xf_attn_shape sh = { .n_seq = b->n_seq, .cu_len = b->cu, .n_tokens = b->n_tok,
                         .n_head = b->n_head, .d_head = b->d, .layer = b->layer };
    xf_attn_io io = { .q = b->q, .k = b->k, .v = b->v, .q_scale = 1.0f, .weights = w,
                      .state = states, .scale = 1.0f / sqrtf((float)b->d), .out = b->out };

    assert_int_equal(xf_ref_run(vt, params, b, nth, w, states, NULL, NULL), 0);
    for (int ith = 0; ith < nth; ith++)
        assert_int_equal(vt->ops->state_update(params, &sh, &io, ith, nth), 0);
}

/* (seq s, head) rows of a batch plane into dst (n×d) */
static void take(const xf_rbatch_t *b, const float *plane, int32_t s, int32_t head, float *dst)
{
    int32_t n = b->cu[s + 1] - b->cu[s];
    memcpy(dst, plane + ((size_t)head * (size_t)b->n_tok + (size_t)b->cu[s]) * (size_t)b->d,
           sizeof(float) * (size_t)n * (size_t)b->d);
}

/* Segments seg[0..ns) of two sequences through a family-M variant, compared after each
 * segment with the reference over [last `mem` rows seen ; current] (compressed rows built
 * explicitly when cmem > 0: groups of `rate` evicted rows, mean). Also the segment-causal
 * one-pass form when all of A is remembered. */
static void segments(const xf_attn_vtbl *vt, const char *json, int32_t mem, int32_t cmem,
                     int32_t rate, int causal, int with_w, double tol)
{
    enum { H = 3, D = 32, NS = 3 };
    static const int32_t seg[2][NS] = { { 37, 29, 41 }, { 5, 64, 1 } };
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[128];
    wts_t *t = with_w ? wts_new(H, D, 5) : NULL;
    const xf_attn_w_txl_t *w = t ? &t->w : NULL;
    float *hk[2], *hv[2], *hq[2];       /* every row seen per sequence, [H][total][D] */
    int32_t tot[2] = { 0, 0 }, cap[2] = { 0, 0 };
    void *states[2];
    size_t ssz;
    xf_attn_plan pl;
    xf_attn_shape sh0 = { .n_head = H, .d_head = D };

    assert_int_equal(xf_ref_parse(vt, json, params, err, sizeof(err)), 0);
    ssz = xf_at_m_state_size(PM(params), H, D);
    assert_int_equal(xf_at_m_plan(PM(params), &sh0, &pl), 0);
    assert_int_equal(pl.state_per_seq, ssz);
    for (int s = 0; s < 2; s++) {
        states[s] = calloc(1, ssz);     /* all-zero = fresh */
        cap[s] = seg[s][0] + seg[s][1] + seg[s][2];
        hk[s] = malloc(sizeof(float) * H * (size_t)cap[s] * D);
        hv[s] = malloc(sizeof(float) * H * (size_t)cap[s] * D);
        hq[s] = malloc(sizeof(float) * H * (size_t)cap[s] * D);
    }
    for (int g = 0; g < NS; g++) {
        int32_t lens[2] = { seg[0][g], seg[1][g] };
        xf_rbatch_t *b = xf_rbatch_new(2, lens, H, D, 1.0f, 100 + (uint64_t)g);
        run_seg(vt, params, b, w, states, 2);
        for (int32_t s = 0; s < 2; s++) {
            int32_t n = lens[s];
            for (int32_t head = 0; head < H; head++) {
                float *kh = hk[s] + (size_t)head * (size_t)cap[s] * D;
                float *vh = hv[s] + (size_t)head * (size_t)cap[s] * D;
                float *qh = hq[s] + (size_t)head * (size_t)cap[s] * D;
                int32_t seen = tot[s], E = seen > mem ? seen - mem : 0;
                int32_t groups = cmem > 0 ? E / rate : 0, g0 = groups > cmem ? groups - cmem : 0;
                int32_t nc = groups - g0, nm = seen - E, L;
                float *kk, *vv;
                double *o = malloc(sizeof(double) * (size_t)n * D);
                take(b, b->k, s, head, kh + (size_t)seen * D);
                take(b, b->v, s, head, vh + (size_t)seen * D);
                take(b, b->q, s, head, qh + (size_t)seen * D);
                L = nc + nm + n;
                kk = malloc(sizeof(float) * (size_t)L * D);
                vv = malloc(sizeof(float) * (size_t)L * D);
                for (int32_t a = 0; a < nc; a++)        /* compressed: mean of each group */
                    for (int32_t c = 0; c < D; c++) {
                        double sk = 0, sv = 0;
                        for (int32_t r = 0; r < rate; r++) {
                            sk += kh[(size_t)((g0 + a) * rate + r) * D + (size_t)c];
                            sv += vh[(size_t)((g0 + a) * rate + r) * D + (size_t)c];
                        }
                        kk[(size_t)a * D + (size_t)c] = (float)(sk / rate);
                        vv[(size_t)a * D + (size_t)c] = (float)(sv / rate);
                    }
                memcpy(kk + (size_t)nc * D, kh + (size_t)E * D,
                       sizeof(float) * (size_t)(nm + n) * D);
                memcpy(vv + (size_t)nc * D, vh + (size_t)E * D,
                       sizeof(float) * (size_t)(nm + n) * D);
                xf_ref_txl(nc + nm, n, D, qh + (size_t)seen * D, kk, vv, 1.0 / sqrt((double)D),
                           causal, 1000, w ? w->d_model : 0,
                           w ? w->w_r + (size_t)head * D * (size_t)w->d_model : NULL,
                           w ? w->u + (size_t)head * D : NULL, w ? w->v + (size_t)head * D : NULL,
                           0, o);
                assert_true(xf_rbatch_err(b, s, head, o) <= tol);
                free(kk);
                free(vv);
                free(o);
            }
            tot[s] += n;
        }
        xf_rbatch_free(b);
    }
    for (int s = 0; s < 2; s++) {
        const xf_at_m_hdr_t *h = states[s];
        assert_int_equal(h->segments, NS);
        assert_int_equal(h->tokens, tot[s]);
        free(states[s]);
        free(hk[s]);
        free(hv[s]);
        free(hq[s]);
    }
    if (t)
        wts_free(t);
}

static void test_txl_segments(void **state)
{
    (void)state;
    /* memory holds everything: [A; B] in two calls equals one pass under the segment-causal
     * mask (the reference over [A ; B] with A's rows from A alone is exactly that) */
    segments(&xf_attn_vt_txl, "{\"mem_len\":200,\"causal\":false}", 200, 0, 1, 0, 1, 1e-5);
    segments(&xf_attn_vt_txl, "{\"mem_len\":200}", 200, 0, 1, 1, 1, 1e-5);
    /* eviction: a short memory keeps the newest rows */
    segments(&xf_attn_vt_txl, "{\"mem_len\":20,\"causal\":false}", 20, 0, 1, 0, 1, 1e-5);
    segments(&xf_attn_vt_txl, "{\"mem_len\":0,\"causal\":false}", 0, 0, 1, 0, 0, 1e-5);
    segments(&xf_attn_vt_compressive, "{\"mem_len\":20,\"cmem_len\":7,\"rate\":3,"
             "\"causal\":false}", 20, 7, 3, 0, 1, 1e-5);
    segments(&xf_attn_vt_compressive, "{\"mem_len\":10,\"cmem_len\":100,\"rate\":2}", 10, 100, 2,
             1, 1, 1e-5);
}

/* One-pass segment-causal form, explicitly: [A; B] as one sequence under the mask vs the two
 * calls. */
static void test_txl_segment_causal(void **state)
{
    enum { H = 2, D = 40, NA = 33, NB = 50 };
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[64];
    wts_t *t = wts_new(H, D, 9);
    int32_t la[1] = { NA }, lb[1] = { NB }, lab[1] = { NA + NB };
    xf_rbatch_t *a = xf_rbatch_new(1, la, H, D, 1.0f, 1), *b = xf_rbatch_new(1, lb, H, D, 1.0f, 2);
    xf_rbatch_t *ab = xf_rbatch_new(1, lab, H, D, 1.0f, 3);
    void *st[1];

    (void)state;
    assert_int_equal(xf_ref_parse(&xf_attn_vt_txl, "{\"causal\":false,\"mem_len\":64}", params, err,
                                  64), 0);
    st[0] = calloc(1, xf_at_m_state_size(PM(params), H, D));
    for (int32_t head = 0; head < H; head++) {       /* ab = [a ; b] per head */
        for (int pl = 0; pl < 3; pl++) {
            float *dst = (pl == 0 ? ab->q : pl == 1 ? ab->k : ab->v) + (size_t)head * (NA + NB) * D;
            const float *sa = (pl == 0 ? a->q : pl == 1 ? a->k : a->v) + (size_t)head * NA * D;
            const float *sb = (pl == 0 ? b->q : pl == 1 ? b->k : b->v) + (size_t)head * NB * D;
            memcpy(dst, sa, sizeof(float) * NA * D);
            memcpy(dst + (size_t)NA * D, sb, sizeof(float) * NB * D);
        }
    }
    run_seg(&xf_attn_vt_txl, params, a, &t->w, st, 1);
    run_seg(&xf_attn_vt_txl, params, b, &t->w, st, 3);
    for (int32_t head = 0; head < H; head++) {
        double *o = malloc(sizeof(double) * (NA + NB) * D);
        float *q = malloc(sizeof(float) * (NA + NB) * D),
              *k = malloc(sizeof(float) * (NA + NB) * D);
        float *v = malloc(sizeof(float) * (NA + NB) * D);
        double e = 0;
        xf_rbatch_slice(ab, 0, head, q, k, v);
        /* one pass over [A; B]: rows of A see only A (mask_from = NA), rows of B see all */
        xf_ref_txl(0, NA + NB, D, q, k, v, 1.0 / sqrt((double)D), 0, 1000, H * D,
                   t->w.w_r + (size_t)head * D * H * D, t->u + (size_t)head * D,
                   t->v + (size_t)head * D, NA, o);
        e = fmax(xf_rbatch_err(a, 0, head, o), xf_rbatch_err(b, 0, head, o + (size_t)NA * D));
        print_message("# segment-causal head %d err %.3g\n", head, e);
        assert_true(e <= 1e-5);
        free(o);
        free(q);
        free(k);
        free(v);
    }
    free(st[0]);
    xf_rbatch_free(a);
    xf_rbatch_free(b);
    xf_rbatch_free(ab);
    wts_free(t);
}

/* §23: rate = 1, mean ≡ TXL with mem_len = n_m + n_cm (bitwise: same keys in the same order). */
static void test_compressive_rate1(void **state)
{
    enum { H = 2, D = 32 };
    _Alignas(8) unsigned char pc[XF_ATTN_PARAMS_MAX];
    _Alignas(8) unsigned char pt[XF_ATTN_PARAMS_MAX];
    char err[64];
    wts_t *t = wts_new(H, D, 4);
    void *sc[1], *stx[1];
    static const int32_t seg[] = { 13, 40, 7, 30 };

    (void)state;
    assert_int_equal(xf_ref_parse(&xf_attn_vt_compressive, "{\"mem_len\":20,\"cmem_len\":30,"
                                  "\"rate\":1}", pc, err, 64), 0);
    assert_int_equal(xf_ref_parse(&xf_attn_vt_txl, "{\"mem_len\":50}", pt, err, 64), 0);
    sc[0] = calloc(1, xf_at_m_state_size(PM(pc), H, D));
    stx[0] = calloc(1, xf_at_m_state_size(PM(pt), H, D));
    for (int g = 0; g < 4; g++) {
        int32_t l[1] = { seg[g] };
        xf_rbatch_t *b1 = xf_rbatch_new(1, l, H, D, 1.0f, 50 + (uint64_t)g);
        xf_rbatch_t *b2 = xf_rbatch_new(1, l, H, D, 1.0f, 50 + (uint64_t)g);
        run_seg(&xf_attn_vt_compressive, pc, b1, &t->w, sc, 2);
        run_seg(&xf_attn_vt_txl, pt, b2, &t->w, stx, 2);
        assert_memory_equal(b1->out, b2->out, sizeof(float) * (size_t)seg[g] * H * D);
        xf_rbatch_free(b1);
        xf_rbatch_free(b2);
    }
    free(sc[0]);
    free(stx[0]);
    wts_free(t);
}

/* Session blob: round trip (write, read, write again: byte-equal), every header field corrupted
 * once ⇒ rejected, payload flip ⇒ rejected, smaller configured mem_len keeps the newest rows. */
static void test_blob(void **state)
{
    enum { H = 2, D = 8, NL = 3 };
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX], p2[XF_ATTN_PARAMS_MAX];
    char err[128];
    uint8_t hash[32], hash2[32];
    void *st[NL], *st2[NL];
    size_t ssz, len;
    unsigned char *blob, *blob2;
    static const struct { size_t off, len; } fields[] = {
        { 0, 4 }, { 4, 2 }, { 6, 2 }, { 8, 4 }, { 12, 4 }, { 16, 32 }, { 48, 4 }, { 52, 4 },
        { 56, 4 }, { 60, 4 }, { 64, 4 }, { 68, 4 }, { 72, 4 }, { 76, 4 }, { 80, 8 }, { 88, 8 },
        { 96, 8 }, { 104, 4 }, { 108, 20 } };

    (void)state;
    memset(hash, 0xA5, 32);
    memcpy(hash2, hash, 32);
    hash2[31] ^= 1;
    assert_int_equal(xf_ref_parse(&xf_attn_vt_compressive, "{\"mem_len\":6,\"cmem_len\":4,"
                                  "\"rate\":3}", params, err, 128), 0);
    ssz = xf_at_m_state_size(PM(params), H, D);
    for (int l = 0; l < NL; l++) {
        st[l] = calloc(1, ssz);
        st2[l] = calloc(1, ssz);
    }
    for (int g = 0; g < 3; g++) {                /* 3 segments of 7: 21 tokens */
        int32_t lens[1] = { 7 };
        for (int l = 0; l < NL; l++) {
            xf_rbatch_t *b = xf_rbatch_new(1, lens, H, D, 1.0f, (uint64_t)(g * 10 + l));
            void *one[1] = { st[l] };
            run_seg(&xf_attn_vt_compressive, params, b, NULL, one, 1);
            xf_rbatch_free(b);
        }
    }
    {
        const xf_at_m_hdr_t *h = st[0];
        /* 21 seen, memory 6, evicted 15 → 5 groups of 3, cmem keeps 4, pending 0 */
        assert_int_equal(h->mem_rows, 6);
        assert_int_equal(h->cmem_rows, 4);
        assert_int_equal(h->pend_rows, 0);
    }
    len = xf_at_m_blob_size(st, NL);
    blob = malloc(len);
    blob2 = malloc(len);
    assert_int_equal(xf_at_m_blob_write(st, NL, hash, blob, len), 0);
    assert_int_equal(xf_at_m_blob_read(blob, len, hash, PM(params), H, D, st2, NL, err, 128), 0);
    assert_int_equal(xf_at_m_blob_size(st2, NL), len);
    assert_int_equal(xf_at_m_blob_write(st2, NL, hash, blob2, len), 0);
    assert_memory_equal(blob, blob2, len);
    /* each header field corrupted once */
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        memcpy(blob2, blob, len);
        blob2[fields[f].off + fields[f].len - 1] ^= 0x40;
        err[0] = 0;
        assert_int_equal(xf_at_m_blob_read(blob2, len, hash, PM(params), H, D, st2, NL, err, 128),
                         XF_EFORMAT);
        print_message("# field @%zu: %s\n", fields[f].off, err);
    }
    memcpy(blob2, blob, len);
    blob2[len - 3] ^= 1;                          /* payload */
    assert_int_equal(xf_at_m_blob_read(blob2, len, hash, PM(params), H, D, st2, NL, err, 128),
                     XF_EFORMAT);
    assert_int_equal(xf_at_m_blob_read(blob, len - 1, hash, PM(params), H, D, st2, NL, err, 128),
                     XF_EFORMAT);
    assert_int_equal(xf_at_m_blob_read(blob, len, hash2, PM(params), H, D, st2, NL, err, 128),
                     XF_EFORMAT);
    assert_int_equal(xf_at_m_blob_read(blob, len, hash, PM(params), H, D + 1, st2, NL, err, 128),
                     XF_EFORMAT);
    assert_int_equal(xf_at_m_blob_read(blob, len, hash, PM(params), H, D, st2, NL - 1, err, 128),
                     XF_EFORMAT);
    assert_int_equal(xf_at_m_blob_read(blob, 40, hash, PM(params), H, D, st2, NL, err, 128),
                     XF_EFORMAT);
    /* smaller configured memory: the newest rows */
    assert_int_equal(xf_ref_parse(&xf_attn_vt_compressive, "{\"mem_len\":4,\"cmem_len\":4,"
                                  "\"rate\":3}", p2, err, 128), 0);
    for (int l = 0; l < NL; l++) {
        void *s2 = calloc(1, xf_at_m_state_size(PM(p2), H, D));
        void *one[1] = { s2 };
        assert_int_equal(xf_at_m_blob_read(blob, len, hash, PM(p2), H, D, one, 1, err, 128),
                         XF_EFORMAT);          /* layer count differs */
        free(s2);
    }
    for (int l = 0; l < NL; l++) {
        free(st2[l]);
        st2[l] = calloc(1, xf_at_m_state_size(PM(p2), H, D));
    }
    assert_int_equal(xf_at_m_blob_read(blob, len, hash, PM(p2), H, D, st2, NL, err, 128), 0);
    for (int l = 0; l < NL; l++) {
        const xf_at_m_hdr_t *h = st2[l];
        assert_int_equal(h->mem_rows, 4);
        for (int32_t hd = 0; hd < H; hd++)
            for (int kv = 0; kv < 2; kv++)
                assert_memory_equal(xf_at_m_rows(st2[l], 1, kv, hd),
                                    xf_at_m_rows(st[l], 1, kv, hd) + 2 * D,
                                    sizeof(float) * 4 * D);
    }
    for (int l = 0; l < NL; l++) {
        free(st[l]);
        free(st2[l]);
    }
    free(blob);
    free(blob2);
}

static void test_props(void **state)
{
    wts_t *t = wts_new(3, 40, 1);
    static const int32_t lens1[] = { 1, 0, 9 };
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[128];
    void *st[3];

    (void)state;
    xf_ref_independence(&t->w, &xf_attn_vt_txl, "{\"causal\":false}");
    xf_ref_independence(NULL, &xf_attn_vt_compressive, "{}");
    /* thread independence with memory present */
    assert_int_equal(xf_ref_parse(&xf_attn_vt_txl, "{\"mem_len\":30,\"causal\":false}", params,
                                  err, 128), 0);
    for (int s = 0; s < 3; s++)
        st[s] = calloc(1, xf_at_m_state_size(PM(params), 3, 40));
    {
        int32_t l0[3] = { 20, 3, 17 };
        xf_rbatch_t *b = xf_rbatch_new(3, l0, 3, 40, 1.0f, 8);
        run_seg(&xf_attn_vt_txl, params, b, &t->w, st, 2);
        xf_rbatch_free(b);
    }
    {
        xf_rbatch_t *b = xf_rbatch_new(3, lens1, 3, 40, 1.0f, 9);
        size_t cnt = (size_t)b->n_tok * 3 * 40;
        float *first = malloc(sizeof(float) * cnt);
        static const int nths[] = { 1, 2, 3, 8 };
        for (int k = 0; k < 4; k++) {
            assert_int_equal(xf_ref_run(&xf_attn_vt_txl, params, b, nths[k], &t->w, st, NULL, NULL),
                             0);
            if (k == 0)
                memcpy(first, b->out, sizeof(float) * cnt);
            else
                assert_memory_equal(first, b->out, sizeof(float) * cnt);
        }
        /* n = 1 with memory, and huge logits: finite */
        for (size_t i = 0; i < cnt; i++)
            b->q[i] *= 300.0f;
        assert_int_equal(xf_ref_run(&xf_attn_vt_txl, params, b, 2, &t->w, st, NULL, NULL), 0);
        for (size_t i = 0; i < cnt; i++)
            assert_true(isfinite(b->out[i]));
        /* a corrupted state header is an error, not a crash */
        ((xf_at_m_hdr_t *)st[2])->magic ^= 1;
        assert_int_equal(xf_ref_run(&xf_attn_vt_txl, params, b, 2, &t->w, st, NULL, NULL),
                         XF_EFORMAT);
        ((xf_at_m_hdr_t *)st[2])->magic ^= 1;
        ((xf_at_m_hdr_t *)st[2])->mem_rows = 31;
        assert_int_equal(xf_ref_run(&xf_attn_vt_txl, params, b, 2, &t->w, st, NULL, NULL),
                         XF_EFORMAT);
        free(first);
        xf_rbatch_free(b);
    }
    {   /* n = 1 without memory: v_0 */
        xf_rbatch_t *b = xf_rbatch_new(3, lens1, 3, 40, 1.0f, 9);
        assert_int_equal(xf_ref_parse(&xf_attn_vt_txl, "{\"mem_len\":0}", params, err, 128), 0);
        assert_int_equal(xf_ref_run(&xf_attn_vt_txl, params, b, 2, &t->w, NULL, NULL, NULL), 0);
        for (int32_t c = 0; c < 40; c++)
            assert_float_equal(b->out[c], b->v[c], 1e-6);
        xf_rbatch_free(b);
    }
    for (int s = 0; s < 3; s++)
        free(st[s]);
    wts_free(t);
}

static void test_parse(void **state)
{
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
    char err[256] = "";

    (void)state;
    xf_ref_expect_parse_err(&xf_attn_vt_txl, "{\"mem_len\":-1}", "mem_len");
    xf_ref_expect_parse_err(&xf_attn_vt_txl, "{\"clamp_len\":-2}", "clamp_len");
    xf_ref_expect_parse_err(&xf_attn_vt_txl, "{\"causal\":1}", "causal");
    xf_ref_expect_parse_err(&xf_attn_vt_txl, "{\"rate\":2}", "rate");
    xf_ref_expect_parse_err(&xf_attn_vt_compressive, "{\"rate\":0}", "rate");
    xf_ref_expect_parse_err(&xf_attn_vt_compressive, "{\"fn\":\"median\"}", "fn");
    assert_int_equal(xf_ref_parse(&xf_attn_vt_compressive, "{\"fn\":\"conv\"}", params, err, 256), 0);
    assert_int_equal(xf_at_validate(&xf_attn_vt_compressive, params, NULL, 0, err, sizeof(err)),
                     XF_EUNSUPPORTED);
    assert_non_null(strstr(err, "fn"));
}

XF_TEST_MAIN(cmocka_unit_test(test_parse), cmocka_unit_test(test_txl_limit),
             cmocka_unit_test(test_txl_positions), cmocka_unit_test(test_txl_segments),
             cmocka_unit_test(test_txl_segment_causal), cmocka_unit_test(test_compressive_rate1),
             cmocka_unit_test(test_blob), cmocka_unit_test(test_props))
