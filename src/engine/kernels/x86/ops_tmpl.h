/* Engine-internal: the non-GEMM fast kernels written once over a vector abstraction and
 * instantiated per ISA by ops_avx512.c and ops_avx2.c (which define the V* macros and XF_FN
 * before including this file). Each function matches its _ref twin in kernels/ref/ within the
 * bounds stated in tests/engine/test_kernels.c. Not a normal header: include only there. */

/* Required: V (vector type), VW (lanes), VLOAD, VSTORE, VLOADN(p, n) (first n lanes, rest 0),
 * VSTOREN(p, n, v), VSET1, VZERO, VADD, VSUB, VMUL, VFMA(a, b, c) = a·b + c, VMAX, VHSUM,
 * VHMAX, VEXP, VACT(act, v), VKEEPN(v, n) (lanes from n on set to 0), XF_FN(name). */

/* Vector partial sums for every op: sums run over lanes then across lanes, so they differ from
 * the in-order _ref sums by rounding only. */

static void XF_FN(layernorm_row)(int32_t d, float *o, const float *g, const float *b, float eps,
                                 V vsum)
{
    int32_t c;
    float mean = VHSUM(vsum) / (float)d;
    V vm = VSET1(mean), vs = VZERO();
    for (c = 0; c + VW <= d; c += VW) {
        V t = VSUB(VLOAD(o + c), vm);
        vs = VFMA(t, t, vs);
    }
    if (c < d) {
        int32_t n = d - c;
        V t = VKEEPN(VSUB(VLOADN(o + c, n), vm), n);
        vs = VFMA(t, t, vs);
    }
    float var = VHSUM(vs) / (float)d;
    V rs = VSET1(1.0f / sqrtf(var + eps));
    for (c = 0; c + VW <= d; c += VW) {
        V t = VMUL(VSUB(VLOAD(o + c), vm), rs);
        VSTORE(o + c, VFMA(t, VLOAD(g + c), VLOAD(b + c)));
    }
    if (c < d) {
        int32_t n = d - c;
        V t = VMUL(VSUB(VLOADN(o + c, n), vm), rs);
        VSTOREN(o + c, n, VFMA(t, VLOADN(g + c, n), VLOADN(b + c, n)));
    }
}

/* out[r] = LayerNorm(x[r] + bias + res[r])·g + b; pass 1 writes t = x + bias + res into out
 * (safe when out aliases x or res: element c is read before it is written). */
static void XF_FN(add_layernorm)(int32_t r0, int32_t r1, int32_t d, const float *x,
                                 int32_t ldx, const float *bias, const float *res, int32_t ldr,
                                 const float *g, const float *b, float eps, float *out,
                                 int32_t ldo)
{
    for (int32_t r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * (size_t)ldx;
        const float *rr = res ? res + (size_t)r * (size_t)ldr : NULL;
        float *o = out + (size_t)r * (size_t)ldo;
        V vsum = VZERO();
        int32_t c;
        for (c = 0; c + VW <= d; c += VW) {
            V t = VLOAD(xr + c);
            if (bias)
                t = VADD(t, VLOAD(bias + c));
            if (rr)
                t = VADD(t, VLOAD(rr + c));
            VSTORE(o + c, t);
            vsum = VADD(vsum, t);
        }
        if (c < d) {
            int32_t n = d - c;
            V t = VLOADN(xr + c, n);
            if (bias)
                t = VADD(t, VLOADN(bias + c, n));
            if (rr)
                t = VADD(t, VLOADN(rr + c, n));
            VSTOREN(o + c, n, t);
            vsum = VADD(vsum, t);
        }
        XF_FN(layernorm_row)(d, o, g, b, eps, vsum);
    }
}

/* y[i] = act(x[i] + bias[i mod d]) over [i0, i1), one row segment at a time. */
static void XF_FN(bias_act)(size_t i0, size_t i1, int32_t d, const float *x, const float *bias,
                            enum xf_epilogue act, float *y)
{
    size_t i = i0;
    while (i < i1) {
        size_t c0 = i % (size_t)d;
        size_t end = i - c0 + (size_t)d;
        if (end > i1)
            end = i1;
        const float *bb = bias ? bias + c0 : NULL;
        size_t n = end - i, j;
        for (j = 0; j + VW <= n; j += VW) {
            V v = VLOAD(x + i + j);
            if (bb)
                v = VADD(v, VLOAD(bb + j));
            VSTORE(y + i + j, VACT(act, v));
        }
        if (j < n) {
            int r = (int)(n - j);
            V v = VLOADN(x + i + j, r);
            if (bb)
                v = VADD(v, VLOADN(bb + j, r));
            VSTOREN(y + i + j, r, VACT(act, v));
        }
        i = end;
    }
}

/* Row softmax with the max subtracted; an all -inf row becomes zeros (as _ref). */
static void XF_FN(softmax)(int32_t r0, int32_t r1, int32_t n, float *x, int32_t ld)
{
    for (int32_t r = r0; r < r1; r++) {
        float *row = x + (size_t)r * (size_t)ld;
        V vm = VSET1(-INFINITY);
        int32_t j;
        for (j = 0; j + VW <= n; j += VW)
            vm = VMAX(vm, VLOAD(row + j));
        float mx = VHMAX(vm);
        for (; j < n; j++)
            mx = row[j] > mx ? row[j] : mx;
        if (mx == -INFINITY) {
            for (j = 0; j < n; j++)
                row[j] = 0.0f;
            continue;
        }
        V m = VSET1(mx), vs = VZERO();
        for (j = 0; j + VW <= n; j += VW) {
            V e = VEXP(VSUB(VLOAD(row + j), m));
            VSTORE(row + j, e);
            vs = VADD(vs, e);
        }
        if (j < n) {
            int32_t t = n - j;
            /* lanes past the row load as 0 and give e^(0 - max): keep them out of the sum */
            V e = VKEEPN(VEXP(VSUB(VLOADN(row + j, t), m)), t);
            VSTOREN(row + j, t, e);
            vs = VADD(vs, e);
        }
        V inv = VSET1(1.0f / VHSUM(vs));
        for (j = 0; j + VW <= n; j += VW)
            VSTORE(row + j, VMUL(VLOAD(row + j), inv));
        if (j < n)
            VSTOREN(row + j, n - j, VMUL(VLOADN(row + j, n - j), inv));
    }
}

static inline void XF_FN(scale_copy)(int32_t d, const float *src, float s, float *dst)
{
    int32_t j;
    V vs = VSET1(s);
    for (j = 0; j + VW <= d; j += VW)
        VSTORE(dst + j, VMUL(VLOAD(src + j), vs));
    if (j < d)
        VSTOREN(dst + j, d - j, VMUL(VLOADN(src + j, d - j), vs));
}

static inline void XF_FN(copy)(int32_t d, const float *src, float *dst)
{
    int32_t j;
    for (j = 0; j + VW <= d; j += VW)
        VSTORE(dst + j, VLOAD(src + j));
    if (j < d)
        VSTOREN(dst + j, d - j, VLOADN(src + j, d - j));
}

static void XF_FN(qkv_split)(int32_t t0, int32_t t1, int32_t n_tok, int32_t h, int32_t d,
                             const float *q, const float *k, const float *v, int32_t ld,
                             float q_scale, float *Q, float *K, float *Vv)
{
    for (int32_t t = t0; t < t1; t++) {
        for (int32_t hh = 0; hh < h; hh++) {
            size_t src = (size_t)t * (size_t)ld + (size_t)hh * (size_t)d;
            size_t dst = ((size_t)hh * (size_t)n_tok + (size_t)t) * (size_t)d;
            XF_FN(scale_copy)(d, q + src, q_scale, Q + dst);
            XF_FN(copy)(d, k + src, K + dst);
            XF_FN(copy)(d, v + src, Vv + dst);
        }
    }
}

static void XF_FN(embed)(int32_t t0, int32_t t1, int32_t d, const int32_t *ids,
                         const int32_t *pos_ids, const int32_t *types, const float *word,
                         const float *pos, const float *type, const float *g, const float *b,
                         float eps, float *out)
{
    for (int32_t t = t0; t < t1; t++) {
        const float *we = word + (size_t)ids[t] * (size_t)d;
        const float *pe = pos + (size_t)(pos_ids ? pos_ids[t] : t) * (size_t)d;
        const float *te = type ? type + (size_t)(types ? types[t] : 0) * (size_t)d : NULL;
        float *o = out + (size_t)t * (size_t)d;
        V vsum = VZERO();
        int32_t c;
        for (c = 0; c + VW <= d; c += VW) {
            V s = VADD(VLOAD(we + c), VLOAD(pe + c));
            if (te)
                s = VADD(s, VLOAD(te + c));
            VSTORE(o + c, s);
            vsum = VADD(vsum, s);
        }
        if (c < d) {
            int32_t n = d - c;
            V s = VADD(VLOADN(we + c, n), VLOADN(pe + c, n));
            if (te)
                s = VADD(s, VLOADN(te + c, n));
            VSTOREN(o + c, n, s);
            vsum = VADD(vsum, s);
        }
        if (g)
            XF_FN(layernorm_row)(d, o, g, b, eps, vsum);
    }
}

/* FMA peak loop: 12 independent chains (enough to cover FMA latency × ports), distinct
 * starting values so that the compiler cannot merge them. Returns the flops done. */
static double XF_FN(fma_loop)(int64_t iters, float *sink)
{
    V a0 = VSET1(1.0f), a1 = VSET1(1.1f), a2 = VSET1(1.2f), a3 = VSET1(1.3f);
    V a4 = VSET1(1.4f), a5 = VSET1(1.5f), a6 = VSET1(1.6f), a7 = VSET1(1.7f);
    V a8 = VSET1(1.8f), a9 = VSET1(1.9f), a10 = VSET1(2.0f), a11 = VSET1(2.1f);
    const V m = VSET1(0.999999f), b = VSET1(1e-7f);
    for (int64_t i = 0; i < iters; i++) {
        a0 = VFMA(a0, m, b);
        a1 = VFMA(a1, m, b);
        a2 = VFMA(a2, m, b);
        a3 = VFMA(a3, m, b);
        a4 = VFMA(a4, m, b);
        a5 = VFMA(a5, m, b);
        a6 = VFMA(a6, m, b);
        a7 = VFMA(a7, m, b);
        a8 = VFMA(a8, m, b);
        a9 = VFMA(a9, m, b);
        a10 = VFMA(a10, m, b);
        a11 = VFMA(a11, m, b);
    }
    V s = VADD(VADD(VADD(a0, a1), VADD(a2, a3)), VADD(VADD(a4, a5), VADD(a6, a7)));
    s = VADD(s, VADD(VADD(a8, a9), VADD(a10, a11)));
    *sink += VHSUM(s);
    return 12.0 * 2.0 * VW * (double)iters;
}

static void XF_FN(fill_ops)(xf_kernels_t *t)
{
    t->add_layernorm = XF_FN(add_layernorm);
    t->bias_act = XF_FN(bias_act);
    t->softmax = XF_FN(softmax);
    t->qkv_split = XF_FN(qkv_split);
    t->embed = XF_FN(embed);
}
