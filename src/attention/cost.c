/* Cost estimates of attention variants for admission control (xf_attn_cost,
 * xf_attn_cost_bound): how much work one head of one layer does on a sequence of n tokens,
 * from the variant's parameters (iterations, blocks, features, hashes, clusters, ...), in
 * dense-equivalent units (dense attention on n tokens is n²). The formulas count the
 * multiply-adds and the exp/log evaluations of each variant's method (ATTENTION.md), with an
 * exp or log worth XF_COST_EXP multiply-adds: they are estimates for bounding a request's
 * work before it runs, not timings. Parameters are read by name from the canonical JSON
 * (xf_attn_to_json), so this file needs no variant's private parameter struct. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "attention/registry.h"

/* One exp/log (scalar, double: Sinkhorn's log-sum-exp, k-means distances) in FMA units of
 * the vectorised kernels: ~14 ns against ~0.13 ns per FMA of the dense tiles, estimated from
 * issue 12's report (sinkhorn iters=1000 block=1, 510 tokens: ~30 s on a 2-layer d=64 model
 * whose dense forward takes 0.04 s); a rough figure, not a measurement here. */
#define XF_COST_EXP 96.0
/* Softmax exp per score of the tiled kernels (vectorised polynomial), in FMA units. */
#define XF_COST_SOFTMAX 8.0

static double num(const json_t *o, const char *key, double dflt)
{
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return (double)json_integer_value(v);
    if (json_is_real(v))
        return json_real_value(v);
    return dflt;   /* absent, "auto", or a string choice */
}

static int is_str(const json_t *o, const char *key, const char *val)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) && strcmp(json_string_value(v), val) == 0;
}

static double dmin(double a, double b)
{
    return a < b ? a : b;
}

static double dmax(double a, double b)
{
    return a > b ? a : b;
}

/* n queries attending k keys each (QKᵀ and PV, d multiply-adds each, plus the softmax). */
static double attend(double n, double k, double d)
{
    return n * dmin(dmax(k, 1), n) * (2 * d + XF_COST_SOFTMAX);
}

/* Work in multiply-adds of one head of one layer on one sequence of n tokens. */
static double work(const char *v, const json_t *p, double n, double d)
{
    if (!strcmp(v, "blockwise") || !strcmp(v, "local1d"))
        return attend(n, num(p, "block", 128) + 2 * num(p, "halo", 0), d);
    if (!strcmp(v, "window") || !strcmp(v, "dilated"))
        return attend(n, 2 * num(p, "window", 128) + 1, d);
    if (!strcmp(v, "longformer"))
        return attend(n, 2 * num(p, "window", 256) + 3, d) + 2 * attend(1, n, d);
    if (!strcmp(v, "etc"))
        return attend(n, 2 * num(p, "radius", 128) + 3, d) + 2 * attend(1, n, d);
    if (!strcmp(v, "strided")) {
        double s = num(p, "stride", ceil(sqrt(n)));
        return attend(n, 2 * s + n / dmax(s, 1), d);
    }
    if (!strcmp(v, "fixed")) {
        double b = dmax(num(p, "block", 128), 1);
        return attend(n, b + num(p, "summary", 8) * ceil(n / b), d);
    }
    if (!strcmp(v, "axial")) {
        double c = dmax(num(p, "cols", ceil(sqrt(n))), 1);
        return attend(n, c + ceil(n / c), d);
    }
    if (!strcmp(v, "bigbird")) {
        double b = num(p, "block", 64);
        double g = num(p, "global_first", 1) + num(p, "global_last", 1);
        double keys = b * (2 * num(p, "window_blocks", 1) + 1 + num(p, "random_blocks", 3) + g);
        /* The global blocks' rows (at most the sequence's n) each attend to all n keys. A block
         * longer than the sequence is cut to it: counting g·b rows priced a 1M-token block on
         * 69 tokens at ~20 s where it runs in milliseconds. */
        return attend(n, keys, d) + dmin(g * b, n) * n * (2 * d + XF_COST_SOFTMAX);
    }
    if (!strcmp(v, "reformer")) {
        double h = num(p, "n_hashes", 4), c = num(p, "chunk", 64);
        double nb = num(p, "n_buckets", dmax(2, ceil(n / dmax(c, 1))));
        double keys = c * (1 + num(p, "chunks_before", 1) + num(p, "chunks_after", 0));
        return h * (n * d * nb / 2 + n * log2(dmax(n, 2)) * 4 + attend(n, keys, d));
    }
    if (!strcmp(v, "routing")) {
        double k = dmax(num(p, "clusters", ceil(sqrt(n))), 1);
        return num(p, "iters", 10) * n * k * (d + 2) + n * k * d + attend(n, 2 * ceil(n / k), d);
    }
    if (!strcmp(v, "sinkhorn")) {
        double b = dmax(num(p, "block", 64), 1), nb = ceil(n / b), it = num(p, "iters", 8);
        double w = nb * nb * d + 2 * n * d;   /* block means and block similarities */
        if (is_str(p, "mode", "soft") && nb > 1)
            return w + it * 2 * nb * nb * XF_COST_EXP + nb * nb * XF_COST_EXP +
                   2 * n * nb * d + attend(n, 2 * b, d);
        return w + attend(n, b * (1 + num(p, "k_s", 1)), d);
    }
    if (!strcmp(v, "isab")) {
        double m = num(p, "m", 64);
        return num(p, "iters", 10) * n * m * (d + 2) + 2 * attend(n, m, d);
    }
    if (!strcmp(v, "memcomp"))
        return n * d + attend(n, ceil(n / dmax(num(p, "rate", 3), 1)), d);
    if (!strcmp(v, "perceiver"))
        return 2 * attend(n, 64, d);
    if (!strcmp(v, "linformer"))
        return 2 * n * d + attend(n, num(p, "k", 256), d);
    if (!strcmp(v, "nystrom")) {
        double m = num(p, "landmarks", 64);
        return 2 * n * d + 3 * attend(n, m, d) + num(p, "pinv_iters", 6) * 6 * m * m * m;
    }
    if (!strcmp(v, "linear"))
        return n * d * (2 * d + XF_COST_EXP / 4);
    if (!strcmp(v, "performer") || !strcmp(v, "rfa")) {
        double m = num(p, "features", floor(d * log(dmax(d, 2))));
        return 2 * n * m * (d + XF_COST_EXP / 4) + 2 * n * m * d;
    }
    if (!strcmp(v, "hdp")) {   /* content-dependent: bounded by dense, plus the integer pre-pass
                                  (n²d) and, with approx, the integer logits (2n²d) */
        const json_t *ap = json_object_get(p, "approx");
        int approx = json_is_true(ap);
        if (num(p, "rho_B", 1) == 0 && num(p, "tau_H", 0) == 0 && !approx)
            return attend(n, n, d);   /* nothing can be pruned: dense, no pre-pass */
        return attend(n, n, d) + n * n * d * (approx ? 3 : 1);
    }
    if (!strcmp(v, "txl"))
        return attend(n, n + num(p, "mem_len", 512), d) * 2;
    if (!strcmp(v, "compressive"))
        return attend(n, n + num(p, "mem_len", 512) + num(p, "cmem_len", 512), d) * 2;
    return attend(n, n, d);   /* dense, synthesizer, anything new: quadratic */
}

static json_t *params_of(const xf_attn_t *a)
{
    char buf[1024];
    int len = xf_attn_to_json(a, buf, sizeof buf);
    if (len < 0 || (size_t)len >= sizeof buf)
        return NULL;
    return json_loads(buf, 0, NULL);
}

static double units(const char *v, const json_t *p, const int32_t *lens, size_t n_seq,
                    int32_t d_head)
{
    double d = d_head > 0 ? d_head : 64, u = 0;
    for (size_t i = 0; i < n_seq; i++) {
        double n = lens[i] > 0 ? lens[i] : 1;
        u += work(v, p, n, d) / (2 * d + XF_COST_SOFTMAX);
    }
    return u;
}

double xf_attn_cost(const xf_attn_t *a, const int32_t *lens, size_t n_seq, int32_t d_head)
{
    const char *v = a ? xf_attn_name(a) : "dense";
    json_t *p = a ? params_of(a) : NULL;
    double u = units(v ? v : "dense", p, lens, n_seq, d_head);
    json_decref(p);
    return u;
}

/* The parameters that drive each variant's cost: +1 when more costs more, -1 when less. */
static const struct knob {
    const char *variant, *key;
    int dir;
} knobs[] = {
    {"sinkhorn", "iters", 1},      {"sinkhorn", "block", -1},     {"sinkhorn", "k_s", 1},
    {"routing", "iters", 1},       {"routing", "clusters", 1},    {"reformer", "n_hashes", 1},
    {"reformer", "chunk", 1},      {"reformer", "chunks_before", 1},
    {"reformer", "chunks_after", 1}, {"reformer", "n_buckets", 1}, {"isab", "iters", 1},
    {"isab", "m", 1},              {"nystrom", "pinv_iters", 1},  {"nystrom", "landmarks", 1},
    {"performer", "features", 1},  {"rfa", "features", 1},        {"linformer", "k", 1},
    {"bigbird", "random_blocks", 1}, {"bigbird", "window_blocks", 1}, {"bigbird", "block", 1},
    {"window", "window", 1},       {"dilated", "window", 1},      {"longformer", "window", 1},
    {"etc", "radius", 1},          {"blockwise", "block", 1},     {"blockwise", "halo", 1},
    {"local1d", "block", 1},       {"local1d", "halo", 1},        {"fixed", "summary", 1},
    {"memcomp", "rate", -1},
};

int xf_attn_cost_bound(const xf_attn_t *a, const int32_t *lens, size_t n_seq, int32_t d_head,
                       double budget, char *key, size_t keylen, long long *value,
                       long long *bound)
{
    const char *v = a ? xf_attn_name(a) : NULL;
    if (!v || !key || !keylen || !value || !bound)
        return -EINVAL;
    json_t *p = params_of(a);
    if (!p)
        return -ENOMEM;
    int32_t nmax = 1;
    for (size_t i = 0; i < n_seq; i++)
        if (lens[i] > nmax)
            nmax = lens[i];
    int found = -ENOENT;
    for (size_t k = 0; k < sizeof knobs / sizeof knobs[0] && found < 0; k++) {
        if (strcmp(knobs[k].variant, v) != 0)
            continue;
        json_t *cur = json_object_get(p, knobs[k].key);
        if (!json_is_integer(cur))
            continue;   /* "auto": sized from n, not the client's choice */
        long long c = json_integer_value(cur), lo, hi, best = -1;
        if (knobs[k].dir > 0) {
            lo = strstr(knobs[k].key, "iters") ? 0 : 1;   /* iterations may be 0 */
            hi = c;
        } else {
            lo = c;
            hi = nmax > c ? nmax : c;
        }
        /* Binary search of the largest (dir > 0) or smallest (dir < 0) value that fits
         * (block sizes are not quite monotone: the value found is checked, not optimal). */
        while (lo <= hi) {
            long long mid = lo + (hi - lo) / 2;
            json_object_set_new(p, knobs[k].key, json_integer(mid));
            int fits = units(v, p, lens, n_seq, d_head) <= budget;
            if (fits)
                best = mid;
            if (fits == (knobs[k].dir > 0))
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        json_object_set_new(p, knobs[k].key, json_integer(c));
        if (best >= 0 && best != c) {
            snprintf(key, keylen, "%s", knobs[k].key);
            *value = c;
            *bound = best;
            found = 0;
        }
    }
    json_decref(p);
    return found;
}
