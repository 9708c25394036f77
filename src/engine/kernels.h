/* Engine-internal: the kernel table. Every op has a plain _ref implementation
 * (kernels/ref/, the formula in its comment) and may have faster ones (kernels/x86/...); the
 * dispatcher xf_kernels() fills the table once from the portable entries and upgrades them to
 * what the CPU supports (cpu.h). Kernels never allocate, lock, log or make syscalls; the
 * ith/nth arguments split work statically across the pool's threads.
 * Shapes are written (rows, cols), row-major, with leading dimensions in elements. */
#ifndef XF_ENGINE_KERNELS_H
#define XF_ENGINE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

struct xf_at_kern;

enum xf_epilogue {
    XF_EPI_NONE = 0,       /* y = x·Wᵀ */
    XF_EPI_BIAS,           /* y = x·Wᵀ + b */
    XF_EPI_BIAS_GELU,      /* y = gelu_erf(x·Wᵀ + b) */
    XF_EPI_BIAS_GELU_TANH, /* y = gelu_tanh(x·Wᵀ + b) */
    XF_EPI_BIAS_RELU,      /* y = max(0, x·Wᵀ + b) */
    XF_EPI_COUNT
};

/* A Linear weight W[n][k] (HF layout) prepared for the GEMM path in use (packed panels for the
 * engine's own micro-kernel, or the original pointer for cblas). */
typedef struct xf_gemm_w {
    int32_t n, k;          /* out features, in features */
    const float *w;        /* the original [n][k]; NULL only for a stacked weight (below) */
    float *packed;         /* owned packed copy or NULL; free with xf_gemm_w_deinit() */
    size_t packed_bytes;
    int32_t group;         /* column group width of packed / packed_bf16 (ref.h): 16 or 48 */
    /* owned bf16 panels (ref.h) or NULL; made by xf_gemm_w_add_bf16() from packed, which it
     * then frees: only a table with bf16_w runs such a weight */
    uint16_t *packed_bf16;
    size_t packed_bf16_bytes;
    /* int8 Linear (model.quantize = int8, kernels/qgemm.h): the quantised weight, borrowed
     * from the model; the forward pass runs it with the int8 kernels. NULL: fp32. */
    const struct xf_qgemm_w *q8;
} xf_gemm_w_t;

/* Prepare w for the fastest GEMM path (may pack a copy). Returns 0 or -ENOMEM. */
int xf_gemm_w_init(xf_gemm_w_t *pw, const float *w, int32_t n, int32_t k);
void xf_gemm_w_deinit(xf_gemm_w_t *pw);
/* Replace the packed fp32 panels by bf16 ones (model option quantize=bf16): at small M the
 * GEMM is bound by weight bandwidth, and half the bytes per weight gives up to twice the
 * speed; the products and sums stay fp32 (x is not rounded), only the weights lose mantissa
 * (8 bits). Used for every M, so a row's result does not depend on its batch. Returns 0,
 * -ENOTSUP (the table in use has no bf16 kernel, or pw is not packed: fp32 stays in use) or
 * -ENOMEM (fp32 stays in use). */
int xf_gemm_w_add_bf16(xf_gemm_w_t *pw);
/* One Linear from nparts weights [rows[i]][k] stacked along n (the fused Q/K/V projection:
 * one GEMM with n = Σ rows), packed for the kernels of the table in use; w stays NULL, so only
 * a table with packs_w may run it. Returns 0, -ENOTSUP (the table does not pack: use the
 * parts), -EINVAL or -ENOMEM. */
int xf_gemm_w_init_stacked(xf_gemm_w_t *pw, const float *const *parts, const int32_t *rows,
                           int nparts, int32_t k);

/* The share of thread ith of nth in an m×n GEMM whose micro-tiles are mr rows × nr columns
 * (one policy for the own fp32 and int8 kernels): while there are at least two nr-column
 * tiles per thread, or too few rows for each thread to get four mr-row blocks, the columns are
 * split in 16-column panels (XF_GEMM_PANEL; any nth gets an even share); otherwise the rows,
 * in blocks of mr. Sets rows [*r0, *r1) and columns [*c0, *c1); returns 0 when the share is
 * empty (nothing to do), 1 otherwise. */
int xf_gemm_share(int32_t m, int32_t n, int mr, int nr, int ith, int nth, int32_t *r0,
                  int32_t *r1, int32_t *c0, int32_t *c1);

/* Per-thread GEMM scratch: the own GEMMs pack blocks of x into a buffer of XF_GEMM_SCRATCH
 * bytes (64-byte aligned) that the thread pool owns, one per pool thread, and installs for the
 * thread running its share (pool.c). A kernel called on a thread without one (a direct call,
 * as the tests make) takes a path that needs only its stack: the same bits, slower at large
 * M. Static thread-local buffers did this before; glibc sets those up and zeroes them for
 * every thread of a process linked against the library (516 kB of RSS per idle thread). */
#define XF_GEMM_SCRATCH ((size_t)256 * 1024)
/* Install buf (XF_GEMM_SCRATCH bytes, 64-byte aligned, or NULL) as the calling thread's
 * scratch; returns the previous one. Ownership: borrowed, the caller keeps buf alive while
 * it is installed. */
void *xf_gemm_scratch_swap(void *buf);
/* The calling thread's scratch, or NULL. */
void *xf_gemm_scratch(void);

typedef struct xf_kernels {
    const char *gemm_path;     /* e.g. "own-avx512", "openblas-1t" */
    /* 1: linear reads the packed panels of xf_gemm_w_t (xf_gemm_w_init packs them). */
    uint8_t packs_w;
    /* Column group width (ref.h) xf_gemm_w_init packs for when this table is in use: the
     * width its micro-kernel tile streams as one run (48: AVX-512; 16: AVX2). Its linear
     * reads either width (same bits), only slower in the other. */
    uint8_t w_group;
    /* 1: linear gives bitwise identical results for every nth (the engine's own and the
     * reference kernels: each output element is one dot product summed in a fixed order).
     * 0: the cblas path. OpenBLAS's edge kernels (its Haswell and Zen cores, which it runs on
     * AMD CPUs) sum a column slice in another order than the whole, so results for different
     * nth agree only within the GEMM rounding bound (tests/engine/test_kernels.c). */
    uint8_t nth_exact;
    /* 1: linear runs a weight with packed_bf16 (the result is then xf_linear_bf16_ref's,
     * within the GEMM tolerance); xf_gemm_w_add_bf16 makes them only for such a table */
    uint8_t bf16_w;

    /* y[m][n] = epi(x[m][k] · W[n][k]ᵀ + bias[n]) for this thread's share of the work
     * (ith/nth; the split is the kernel's choice; identical results for any nth where
     * nth_exact says so).
     * bias may be NULL only with XF_EPI_NONE. */
    void (*linear)(const xf_gemm_w_t *w, int32_t m, const float *x, int32_t ldx,
                   const float *bias, enum xf_epilogue epi, float *y, int32_t ldy,
                   int ith, int nth);
    /* Where this thread's share of linear(w, m, .., ith, nth) starts reading its weights:
     * sets *p and returns the bytes [*p, *p + bytes) of packed weights it streams first
     * (its first K×column block, which the kernel sized to fit in L2), so that the forward
     * can prefetch them into L2 while it waits before the GEMM (forward.c). Reads no weight
     * and changes no result. NULL in a table, or 0 returned (e.g. at an M where the weights
     * are not what the GEMM waits for): no such hint. */
    size_t (*linear_lead)(const xf_gemm_w_t *w, int32_t m, int ith, int nth, const void **p);

    /* out[r] = LayerNorm(x[r] + bias + res[r]) · g + b over d columns, rows [r0, r1).
     * bias and res may be NULL. out may alias x or res. Two-pass mean/variance in fp32. */
    void (*add_layernorm)(int32_t r0, int32_t r1, int32_t d, const float *x, int32_t ldx,
                          const float *bias, const float *res, int32_t ldr, const float *g,
                          const float *b, float eps, float *out, int32_t ldo);

    /* y[i] = act(x[i] + bias[i % d]) for i in [i0, i1) of a [rows][d] block (bias may be NULL);
     * act: XF_EPI_BIAS (identity), _GELU, _GELU_TANH, _RELU. y may alias x. */
    void (*bias_act)(size_t i0, size_t i1, int32_t d, const float *x, const float *bias,
                     enum xf_epilogue act, float *y);

    /* Row softmax, in place, rows [r0, r1) of a [rows][n] matrix with leading dim ld. */
    void (*softmax)(int32_t r0, int32_t r1, int32_t n, float *x, int32_t ld);

    /* QKV split: from per-token rows q/k/v (each [N][h*d] with leading dims) to head-major
     * planes Q, K, V [h][N][d], Q multiplied by q_scale. Rows [t0, t1). */
    void (*qkv_split)(int32_t t0, int32_t t1, int32_t n_tok, int32_t h, int32_t d,
                      const float *q, const float *k, const float *v, int32_t ld, float q_scale,
                      float *Q, float *K, float *V);

    /* Embeddings for tokens [t0, t1): out[t] = word[ids[t]] + pos[pos_ids[t]] + type[types[t]]
     * (type may be NULL), then LayerNorm(g, b, eps) when g != NULL. */
    void (*embed)(int32_t t0, int32_t t1, int32_t d, const int32_t *ids, const int32_t *pos_ids,
                  const int32_t *types, const float *word, const float *pos, const float *type,
                  const float *g, const float *b, float eps, float *out);

    /* The family-T attention tile micro-kernels (src/attention/fam_t.h: qk, online softmax,
     * pv, kt, mask, scale) for this ISA: the portable ones in the ref and generic tables, the
     * AVX2+FMA ones (fam_t_avx2.c) in the avx2 table, the AVX-512 ones in the avx512 table
     * (filled in tables_init). */
    const struct xf_at_kern *attn;
} xf_kernels_t;

/* The table for this CPU (after the XF_CPU cap). Ownership: borrowed, static. Thread-safe. */
const xf_kernels_t *xf_kernels(void);
/* The plain reference table (tests compare every implementation against it). */
const xf_kernels_t *xf_kernels_ref(void);
/* Warn "who: OpenBLAS runs its CORE kernel on an AVX-512 CPU (set OPENBLAS_CORETYPE=...);
 * consequence" when OpenBLAS runs a core below the CPU's AVX-512 (OPENBLAS_CORETYPE forces an
 * older one, or an unrecognised CPU model gets its SSE3 core); else nothing. For callers whose
 * GEMMs run through cblas (the Transformer-XL forward; the cblas Linear table warns the same
 * way when it is selected). */
void xf_kernels_warn_blas(const char *who, const char *consequence);
/* Every table this CPU can run, reference first, for tests: returns the count, fills names. */
int xf_kernels_all(const xf_kernels_t **tables, const char **names, int cap);

#endif
