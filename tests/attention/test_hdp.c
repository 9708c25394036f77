/* Tests for "hdp" (ATTENTION.md §25, §27): parameters (defaults, canonical JSON, errors naming
 * the key and its bound); ρ_B = 0, τ_H = 0 equals dense bitwise on every micro-kernel this CPU
 * runs (and the pruning path with every block kept, too); kernel vs the double reference on
 * odd shapes and mixed batches, decisions counted exactly; sparsity non-decreasing in ρ_B and
 * τ_H (kept sets nested); every block row keeps a block and every (sequence, layer) a head;
 * pruned heads write zeros; packing and thread independence; huge, zero and NaN inputs. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_t.h"
#include "attention/registry.h"
#include "engine/cpu.h"
#include "helpers/xf_test.h"
#include "ref/attn_ref_hdp.h"
#include "ref/attn_ref_t.h"

/* The kernel the selected table runs: make check reruns this program under XF_CPU=avx2 and
 * XF_CPU=generic (tests/isa/test_hdp-*.cap) for the AVX2 and the portable kernels. */
static int n_kerns(const xf_at_kern **k)
{
    k[0] = xf_at_kern_get();
    print_message("# attention kernel: %s\n", k[0]->name);
    return 1;
}

static xf_attn_t *parse_ok(const char *js)
{
    xf_attn_t *a = NULL;
    char err[200] = "";
    int rc = xf_attn_parse(js, strlen(js), &a, err, sizeof(err));
    if (rc)
        print_message("parse %s: %d %s\n", js, rc, err);
    assert_int_equal(rc, 0);
    return a;
}

static int g_tile = 32;   /* tile_rows of parse_hdp */

static xf_attn_t *parse_hdp(double rho, double tau, int approx, int fbits, int sign)
{
    char js[240];
    snprintf(js, sizeof js, "{\"variant\":\"hdp\",\"rho_B\":%.17g,\"tau_H\":%.17g,"
             "\"approx\":%s,\"frac_bits\":%d,\"split\":\"%s\",\"tile_rows\":%d}", rho, tau,
             approx ? "true" : "false", fbits, sign ? "sign" : "floor", g_tile);
    return parse_ok(js);
}

/* A case with k also scaled (kmul) so integer parts are not all 0/−1. */
static void case_init(xf_ref_case *c, const int32_t *lens, int32_t B, int32_t h, int32_t d,
                      uint64_t seed, float qmul, float kmul)
{
    assert_int_equal(xf_ref_case_init(c, lens, B, h, d, seed, qmul), 0);
    for (size_t i = 0; i < c->plane; i++)
        c->k[i] *= kmul;
}

/* Counts of one run (delta of the process-wide counters). */
typedef struct counts {
    uint64_t blocks, bpruned, heads, hpruned;
} counts;

static counts run(const xf_attn_t *a, xf_ref_case *c, int nth)
{
    xf_attn_prune_stats_t s0, s1;
    xf_attn_prune_stats(&s0);
    memset(c->out, 0xff, c->plane * sizeof(float));   /* NaN: every element must be written */
    assert_int_equal(xf_ref_run(a, &c->sh, &c->io, nth, NULL), 0);
    xf_attn_prune_stats(&s1);
    counts r = { s1.blocks - s0.blocks, s1.blocks_pruned - s0.blocks_pruned,
                 s1.heads - s0.heads, s1.heads_pruned - s0.heads_pruned };
    return r;
}

/* The reference over the batch; returns its counts. */
static counts reference(const xf_ref_hdp_params *p, const xf_ref_case *c, float *out,
                        uint8_t *kb_all, size_t *kb_len)
{
    const int32_t H = c->sh.n_head, d = c->sh.d_head, N = c->sh.n_tokens;
    counts r = { 0, 0, 0, 0 };
    size_t pos = 0;
    for (int32_t s = 0; s < c->sh.n_seq; s++) {
        const int32_t t0 = c->cu[s], n = c->cu[s + 1] - t0, nb = (n + 1) / 2;
        if (n == 0)
            continue;
        uint8_t *kh = malloc((size_t)H), *kb = malloc((size_t)H * nb * nb);
        size_t off = (size_t)t0 * d;
        xf_ref_hdp(p, n, H, d, c->q + off, c->k + off, c->v + off, (size_t)N * d,
                   c->io.q_scale, c->io.scale, kh, kb, out + (size_t)t0 * H * d);
        for (int32_t h = 0; h < H; h++) {
            r.heads++;
            r.hpruned += !kh[h];
            int32_t kept_head_rows = 0;
            for (int32_t a = 0; a < nb; a++) {
                int32_t row = 0;
                for (int32_t cc = 0; cc < nb; cc++)
                    row += kb[((size_t)h * nb + a) * nb + cc];
                assert_true(row >= 1);   /* every block row keeps a block */
                kept_head_rows += row;
            }
            r.blocks += (uint64_t)nb * nb;
            r.bpruned += (uint64_t)nb * nb - (uint64_t)kept_head_rows;
        }
        int any = 0;
        for (int32_t h = 0; h < H; h++)
            any |= kh[h];
        assert_true(any);   /* every (sequence, layer) keeps a head */
        if (kb_all) {
            memcpy(kb_all + pos, kb, (size_t)H * nb * nb);
            memcpy(kb_all + pos + (size_t)H * nb * nb, kh, (size_t)H);
        }
        pos += (size_t)H * nb * nb + (size_t)H;
        free(kh);
        free(kb);
    }
    if (kb_len)
        *kb_len = pos;
    return r;
}

static void test_params(void **state)
{
    (void)state;
    xf_attn_t *a = parse_ok("{\"variant\":\"hdp\"}");
    char buf[512];
    assert_true(xf_attn_to_json(a, buf, sizeof buf) > 0);
    assert_string_equal(buf, "{\"variant\":\"hdp\",\"rho_B\":1.0,\"tau_H\":0.0,\"frac_bits\":3,"
                        "\"approx\":false,\"split\":\"floor\",\"tile_rows\":32}");
    xf_attn_free(a);
    a = parse_ok("{\"variant\":\"hdp\",\"rho_B\":1.5,\"tau_H\":0.25,\"approx\":true,"
                 "\"frac_bits\":0,\"split\":\"sign\",\"tile_rows\":4}");
    assert_true(xf_attn_to_json(a, buf, sizeof buf) > 0);
    assert_string_equal(buf, "{\"variant\":\"hdp\",\"rho_B\":1.5,\"tau_H\":0.25,\"frac_bits\":0,"
                        "\"approx\":true,\"split\":\"sign\",\"tile_rows\":4}");
    xf_attn_free(a);
    static const struct {
        const char *js, *key, *bound;
    } bad[] = {
        { "{\"variant\":\"hdp\",\"rho_B\":2.5}", "rho_B", "2" },
        { "{\"variant\":\"hdp\",\"rho_B\":-0.1}", "rho_B", "0" },
        { "{\"variant\":\"hdp\",\"tau_H\":1.01}", "tau_H", "1" },
        { "{\"variant\":\"hdp\",\"tau_H\":-1}", "tau_H", "0" },
        { "{\"variant\":\"hdp\",\"frac_bits\":9}", "frac_bits", "8" },
        { "{\"variant\":\"hdp\",\"approx\":1}", "approx", "" },
        { "{\"variant\":\"hdp\",\"split\":\"round\"}", "split", "floor" },
        { "{\"variant\":\"hdp\",\"rho\":1}", "rho", "" },
        { "{\"variant\":\"hdp\",\"tile_rows\":64}", "tile_rows", "32" },
        { "{\"variant\":\"hdp\",\"tile_rows\":1}", "tile_rows", "2" },
        { "{\"variant\":\"hdp\",\"tile_rows\":6,\"x\":1}", "x", "" },
        { "{\"variant\":\"hdp\",\"tile_rows\":7}", "tile_rows", "even" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[200] = "";
        a = NULL;
        int rc = xf_attn_parse(bad[i].js, strlen(bad[i].js), &a, err, sizeof err);
        print_message("# %s -> %s\n", bad[i].js, err);
        assert_int_equal(rc, XF_EPARAM);
        assert_null(a);
        assert_non_null(strstr(err, bad[i].key));
        assert_non_null(strstr(err, bad[i].bound));
    }
}

/* ρ_B = 0, τ_H = 0, approx = false is dense, bitwise, on every kernel; so is the pruning path
 * when every block is kept (sign split of inputs in (−1, 1): all integer parts 0). */
static void test_equals_dense(void **state)
{
    (void)state;
    static const int32_t lens[] = { 1, 2, 3, 7, 63, 64, 65, 257 };
    static const int32_t ds[] = { 32, 40, 64 };
    const xf_at_kern *ks[4];
    int nk = n_kerns(ks);
    xf_attn_t *dense = parse_ok("{\"variant\":\"dense\"}");
    xf_attn_t *h0 = parse_hdp(0.0, 0.0, 0, 3, 0);
    xf_attn_t *hall = parse_hdp(1.5, 0.9, 0, 3, 1);
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        xf_ref_case c;
        case_init(&c, lens, 8, 3, ds[di], 77 + di, 0.9f, 0.9f);   /* |x| < 0.9: I = 0 */
        float *want = malloc(c.plane * sizeof(float));
        for (int k = 0; k < nk; k++) {
            run(dense, &c, 2);
            memcpy(want, c.out, c.plane * sizeof(float));
            counts n0 = run(h0, &c, 2);
            assert_memory_equal(c.out, want, c.plane * sizeof(float));
            assert_int_equal(n0.bpruned, 0);
            assert_int_equal(n0.hpruned, 0);
            counts n1 = run(hall, &c, 3);
            assert_int_equal(n1.bpruned, 0);
            assert_int_equal(n1.hpruned, 0);
            assert_true(n1.blocks > 0);
            assert_memory_equal(c.out, want, c.plane * sizeof(float));
        }
        free(want);
        xf_ref_case_free(&c);
    }
    xf_attn_free(dense);
    xf_attn_free(h0);
    xf_attn_free(hall);
}

/* Kernel vs reference on odd shapes: outputs within 1e-5 and the same pruning counts. */
static void test_vs_reference(void **state)
{
    (void)state;
    static const struct {
        double rho, tau;
        int approx, fbits, sign;
    } ps[] = {
        { 1.0, 0.0, 0, 3, 0 }, { 0.5, 0.3, 0, 3, 0 }, { 1.5, 0.6, 0, 3, 1 }, { 2.0, 0.0, 0, 0, 0 },
        { 1.0, 0.5, 1, 3, 0 }, { 0.0, 0.0, 1, 8, 1 }, { 1.7, 0.95, 1, 2, 0 },
    };
    static const int32_t lens[] = { 7, 1, 65, 0, 3, 130, 2 };
    static const struct {
        int32_t h, d;
    } shapes[] = { { 3, 40 }, { 1, 64 }, { 4, 32 } };
    const xf_at_kern *ks[4];
    int nk = n_kerns(ks);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        xf_ref_case c;
        g_tile = si == 0 ? 32 : si == 1 ? 2 : 6;   /* dense tiles, one block row, three */
        case_init(&c, lens, 7, shapes[si].h, shapes[si].d, 11 + si, 3.0f, 2.5f);
        /* heads of different strength so that τ_H prunes some */
        for (int32_t h = 0; h < shapes[si].h; h++)
            for (size_t x = 0; x < (size_t)c.sh.n_tokens * shapes[si].d; x++)
                c.q[(size_t)h * c.sh.n_tokens * shapes[si].d + x] *= 1.0f / (1.0f + (float)h);
        float *ref = malloc(c.plane * sizeof(float));
        for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++) {
            xf_ref_hdp_params rp = { ps[pi].rho, ps[pi].tau, ps[pi].fbits, ps[pi].approx,
                                     ps[pi].sign };
            xf_attn_t *a = parse_hdp(ps[pi].rho, ps[pi].tau, ps[pi].approx, ps[pi].fbits,
                                     ps[pi].sign);
            counts want = reference(&rp, &c, ref, NULL, NULL);
            for (int k = 0; k < nk; k++) {
                counts got = run(a, &c, 2);
                double e = xf_ref_maxdiff(c.out, ref, c.plane);
                if (e > 1e-5 || got.bpruned != want.bpruned || got.hpruned != want.hpruned)
                    print_message("# shape %zu params %zu kern %s: err %g blocks %llu/%llu "
                                  "heads %llu/%llu (ref %llu/%llu, %llu/%llu)\n", si, pi,
                                  ks[k]->name, e, (unsigned long long)got.bpruned,
                                  (unsigned long long)got.blocks,
                                  (unsigned long long)got.hpruned,
                                  (unsigned long long)got.heads,
                                  (unsigned long long)want.bpruned,
                                  (unsigned long long)want.blocks,
                                  (unsigned long long)want.hpruned,
                                  (unsigned long long)want.heads);
                assert_true(e <= 1e-5);
                assert_int_equal(got.blocks, want.blocks);
                assert_int_equal(got.bpruned, want.bpruned);
                assert_int_equal(got.heads, want.heads);
                assert_int_equal(got.hpruned, want.hpruned);
            }
            if (ps[pi].rho > 0.9)   /* the cases above must prune something */
                assert_true(want.bpruned > 0);
            xf_attn_free(a);
        }
        free(ref);
        xf_ref_case_free(&c);
    }
    g_tile = 32;
}

/* Sparsity non-decreasing in ρ_B and in τ_H: the reference's kept sets are nested, the
 * kernel's pruned counts never decrease; several seeds, odd shapes. */
static void test_monotone(void **state)
{
    (void)state;
    static const double rhos[] = { 0.0, 0.1, 0.5, 0.99, 1.0, 1.01, 1.3, 1.8, 2.0 };
    static const double taus[] = { 0.0, 0.2, 0.5, 0.8, 0.95, 1.0 };
    static const int32_t lens[] = { 37, 5, 90 };
    for (uint64_t seed = 1; seed <= 4; seed++) {
        xf_ref_case c;
        case_init(&c, lens, 3, 5, 24 + 8 * (int32_t)seed % 3, seed, 2.0f + (float)seed,
                  2.0f);
        for (int32_t h = 0; h < 5; h++)
            for (size_t x = 0; x < (size_t)c.sh.n_tokens * c.sh.d_head; x++)
                c.k[(size_t)h * c.sh.n_tokens * c.sh.d_head + x] *= 0.4f + 0.3f * (float)h;
        float *ref = malloc(c.plane * sizeof(float));
        size_t len = 0;
        reference(&(xf_ref_hdp_params){ 0, 0, 3, 0, 0 }, &c, ref, NULL, &len);
        uint8_t *prev = malloc(len), *cur = malloc(len);
        for (int axis = 0; axis < 2; axis++) {
            uint64_t last_b = 0, last_h = 0;
            size_t steps = axis == 0 ? sizeof rhos / sizeof rhos[0] : sizeof taus / sizeof taus[0];
            for (size_t i = 0; i < steps; i++) {
                double rho = axis == 0 ? rhos[i] : 1.0, tau = axis == 0 ? 0.3 : taus[i];
                xf_ref_hdp_params rp = { rho, tau, 3, 0, 0 };
                counts want = reference(&rp, &c, ref, cur, NULL);
                if (i > 0)
                    for (size_t x = 0; x < len; x++)
                        assert_true(cur[x] <= prev[x]);   /* kept now => kept before */
                memcpy(prev, cur, len);
                xf_attn_t *a = parse_hdp(rho, tau, 0, 3, 0);
                counts got = run(a, &c, 3);
                assert_int_equal(got.bpruned, want.bpruned);
                assert_int_equal(got.hpruned, want.hpruned);
                assert_true(got.bpruned >= last_b);
                assert_true(got.hpruned >= last_h);
                assert_true(got.hpruned <= got.heads - 3);   /* one head per sequence */
                last_b = got.bpruned;
                last_h = got.hpruned;
                xf_attn_free(a);
            }
            assert_true(last_b > 0);
            if (axis == 1)
                assert_true(last_h > 0);
        }
        free(prev);
        free(cur);
        free(ref);
        xf_ref_case_free(&c);
    }
}

/* Pruned heads write zeros; the strongest head survives τ_H = 1. */
static void test_head_zero(void **state)
{
    (void)state;
    static const int32_t lens[] = { 9, 20 };
    xf_ref_case c;
    case_init(&c, lens, 2, 3, 16, 5, 4.0f, 4.0f);
    size_t hp = (size_t)c.sh.n_tokens * 16;
    for (size_t x = 0; x < hp; x++) {
        c.q[x] *= 3.0f;          /* head 0 strongest */
        c.q[2 * hp + x] *= 0.1f; /* head 2 weak */
    }
    xf_attn_t *a = parse_hdp(1.0, 1.0, 0, 3, 0);
    counts got = run(a, &c, 2);
    assert_int_equal(got.heads, 6);
    assert_int_equal(got.hpruned, 4);
    for (int32_t t = 0; t < c.sh.n_tokens; t++)
        for (int32_t h = 0; h < 3; h++)
            for (int32_t x = 0; x < 16; x++) {
                float v = c.out[((size_t)t * 3 + h) * 16 + x];
                if (h == 0)
                    assert_true(isfinite(v) && v != 0.0f);
                else
                    assert_true(v == 0.0f);
            }
    xf_attn_free(a);
    xf_ref_case_free(&c);
}

/* Packing and thread independence (bitwise), for exact and approx logits. */
static void test_packing_threads(void **state)
{
    (void)state;
    static const int32_t lens[] = { 33, 64, 1, 100, 17 };
    for (int approx = 0; approx < 2; approx++) {
        g_tile = approx ? 4 : 32;
        xf_attn_t *a = parse_hdp(1.2, 0.4, approx, 3, 0);
        g_tile = 32;
        xf_ref_case c;
        case_init(&c, lens, 5, 3, 40, 99, 3.0f, 3.0f);
        counts k1 = run(a, &c, 1);
        assert_true(k1.bpruned > 0 && k1.bpruned < k1.blocks);
        float *one = malloc(c.plane * sizeof(float));
        memcpy(one, c.out, c.plane * sizeof(float));
        /* the pre-pass is split across the threads too (prepare_par, 15 (sequence, head)
         * items): more threads than items (17) included; output and counts the same */
        static const int more[] = { 2, 5, 8, 17 };
        for (int t = 0; t < 4; t++) {
            counts kn = run(a, &c, more[t]);
            assert_memory_equal(c.out, one, c.plane * sizeof(float));
            assert_true(kn.blocks == k1.blocks && kn.bpruned == k1.bpruned &&
                        kn.heads == k1.heads && kn.hpruned == k1.hpruned);
        }
        /* sequence 3 alone */
        xf_ref_case s;
        case_init(&s, &lens[3], 1, 3, 40, 1, 1.0f, 1.0f);
        for (int32_t h = 0; h < 3; h++) {
            size_t from = ((size_t)h * c.sh.n_tokens + c.cu[3]) * 40, to = (size_t)h * 100 * 40;
            memcpy(s.q + to, c.q + from, 100 * 40 * sizeof(float));
            memcpy(s.k + to, c.k + from, 100 * 40 * sizeof(float));
            memcpy(s.v + to, c.v + from, 100 * 40 * sizeof(float));
        }
        run(a, &s, 2);
        assert_memory_equal(s.out, one + (size_t)c.cu[3] * 3 * 40, 100 * 3 * 40 * sizeof(float));
        free(one);
        xf_ref_case_free(&s);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
}

/* Huge logits, zero inputs (every block kept, no head pruned), n = 1, NaN kept visible. */
static void test_degenerate(void **state)
{
    (void)state;
    static const int32_t lens[] = { 1, 50 };
    for (int approx = 0; approx < 2; approx++) {
        xf_attn_t *a = parse_hdp(1.5, 0.5, approx, 3, 0);
        xf_ref_case c;
        case_init(&c, lens, 2, 2, 32, 3, 300.0f, 1.0f);   /* logits to ~1e3..1e4 */
        run(a, &c, 2);
        for (size_t i = 0; i < c.plane; i++)
            assert_true(isfinite(c.out[i]));
        for (int32_t x = 0; x < 32; x++)   /* n = 1: output = v_0 for the kept head */
            if (c.out[x] != 0.0f)
                assert_true(c.out[x] == c.v[x]);
        memset(c.q, 0, c.plane * sizeof(float));
        memset(c.k, 0, c.plane * sizeof(float));
        counts z = run(a, &c, 2);
        assert_int_equal(z.bpruned, 0);
        assert_int_equal(z.hpruned, 0);
        for (size_t i = 0; i < c.plane; i++)
            assert_true(isfinite(c.out[i]));
        c.q[5] = NAN;   /* head 0, token 0 (the n = 1 sequence) */
        run(a, &c, 1);
        int nan = 0;
        for (int32_t x = 0; x < 32; x++)
            nan |= isnan(c.out[x]);
        assert_true(nan);
        xf_ref_case_free(&c);
        xf_attn_free(a);
    }
}

/* Admission cost: bounded by dense plus the integer pre-pass; dense when nothing can prune. */
static void test_cost(void **state)
{
    (void)state;
    static const int32_t lens[] = { 300, 17 };
    xf_attn_t *dense = parse_ok("\"dense\"");
    xf_attn_t *h0 = parse_hdp(0.0, 0.0, 0, 3, 0), *h1 = parse_hdp(1.0, 0.0, 0, 3, 0);
    xf_attn_t *ha = parse_hdp(1.0, 0.0, 1, 3, 0);
    double cd = xf_attn_cost(dense, lens, 2, 64);
    assert_true(xf_attn_cost(h0, lens, 2, 64) == cd);
    assert_true(xf_attn_cost(h1, lens, 2, 64) > cd);
    assert_true(xf_attn_cost(ha, lens, 2, 64) > xf_attn_cost(h1, lens, 2, 64));
    assert_true(xf_attn_cost(ha, lens, 2, 64) < 3 * cd);
    xf_attn_free(dense);
    xf_attn_free(h0);
    xf_attn_free(h1);
    xf_attn_free(ha);
}

XF_TEST_MAIN(cmocka_unit_test(test_params), cmocka_unit_test(test_cost),
             cmocka_unit_test(test_equals_dense),
             cmocka_unit_test(test_vs_reference), cmocka_unit_test(test_monotone),
             cmocka_unit_test(test_head_zero), cmocka_unit_test(test_packing_threads),
             cmocka_unit_test(test_degenerate))
