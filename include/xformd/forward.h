/* xformd public API: compute. A context owns a thread pool and the activation arena; one caller
 * thread uses a context at a time (one context per engine worker). xf_forward() never calls
 * malloc: memory grows only in xf_ctx_reserve(). */
#ifndef XFORMD_FORWARD_H
#define XFORMD_FORWARD_H

#include <xformd/error.h>
#include <xformd/model.h>
#include <xformd/plan.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xf_ctx xf_ctx_t;

typedef struct xf_ctx_opts {
    int n_threads;             /* compute threads including the caller; <= 0: online cores */
    size_t arena_chunk_bytes;  /* the arena grows in multiples of this; 0: 4 MiB */
} xf_ctx_opts_t;

/* Ownership: *out is new, free with xf_ctx_free() (joins the pool's threads). */
XF_API int xf_ctx_create(const xf_ctx_opts_t *opts, xf_ctx_t **out);
XF_API void xf_ctx_free(xf_ctx_t *c);
XF_API int xf_ctx_threads(const xf_ctx_t *c);
/* Bytes the arena holds now (for metrics). */
XF_API size_t xf_ctx_arena_bytes(const xf_ctx_t *c);

/* Progress and cancellation: xf_forward calls fn(user, layers_done, n_layer) on one of the
 * context's threads each time every thread has finished a layer's last op (layers_done =
 * 1..n_layer), while the other threads wait at the layer boundary. A non-zero return stops the
 * forward there: the remaining layers are skipped, the outputs are left unspecified and
 * xf_forward returns XF_EDEADLINE. fn must be cheap and thread-safe with respect to the
 * caller's own data (it runs on a pool thread); it must not call back into the context.
 * NULL fn: no callback (the default). Thread: the context's owner, between forwards. */
typedef int (*xf_progress_fn)(void *user, int32_t layers_done, int32_t n_layer);
XF_API void xf_ctx_set_progress(xf_ctx_t *c, xf_progress_fn fn, void *user);

/* Forward profiling (xformd-cli bench --profile). While on, every xf_forward on c adds, per op
 * class and pool thread, the time spent running the class's ops (busy) and waiting at the
 * barrier that follows each of them (wait; none after an op the forward runs without one
 * after it: profiling changes no barrier), both as wall and as thread-CPU seconds (wall minus
 * CPU is time the thread was not running: preempted on a loaded machine, or asleep in the
 * barrier), and per thread the wall time from the forward's start until the thread began
 * (pool wake-up). Costs four clock reads per op and thread. */
enum xf_prof_class {
    XF_PROF_EMBED = 0, XF_PROF_NORM, XF_PROF_QKV, XF_PROF_SPLIT, XF_PROF_ATTN, XF_PROF_OPROJ,
    XF_PROF_FF1, XF_PROF_FF2, XF_PROF_HEADS, XF_PROF_Q8, XF_PROF_COUNT
};
#define XF_PROF_MAX_THREADS 16
typedef struct xf_prof {
    int n_threads;             /* threads recorded: min(context threads, XF_PROF_MAX_THREADS) */
    int64_t forwards;          /* forwards profiled */
    double wall_s;             /* their summed wall time, pool start to return */
    int64_t ops[XF_PROF_COUNT];  /* ops run per class */
    double busy_s[XF_PROF_COUNT][XF_PROF_MAX_THREADS];
    double busy_cpu_s[XF_PROF_COUNT][XF_PROF_MAX_THREADS];
    double wait_s[XF_PROF_COUNT][XF_PROF_MAX_THREADS];
    double wait_cpu_s[XF_PROF_COUNT][XF_PROF_MAX_THREADS];
    double start_s[XF_PROF_MAX_THREADS];   /* pool wake-up: forward start to thread start */
    /* per class, summed over its ops followed by a barrier: the slowest minus the fastest
     * thread's CPU since the barrier before (what the others would wait at this one on an
     * otherwise idle machine; ops without a barrier after them count under the next op) */
    double spread_cpu_s[XF_PROF_COUNT];
} xf_prof_t;
/* on != 0: clear the counters and start; 0: stop (the counters stay readable). Returns 0 or
 * -ENOMEM. Thread: the context's owner, between forwards. */
XF_API int xf_ctx_profile(xf_ctx_t *c, int on);
/* Copy the counters; -EINVAL when profiling was never switched on. */
XF_API int xf_ctx_profile_get(const xf_ctx_t *c, xf_prof_t *out);
/* "embed", "norm", "qkv", ... ("?" out of range). */
XF_API const char *xf_prof_class_name(int cls);

/* Grow the arena so that it can run plan p (the only engine call that allocates for a batch).
 * Returns 0 or -ENOMEM (the arena is unchanged then). */
XF_API int xf_ctx_reserve(xf_ctx_t *c, const xf_plan_t *p);

/* Free the arena (after a burst, when the context is idle); the next xf_ctx_reserve() grows it
 * again. Thread: the context's owner thread, never during xf_forward(). NULL is a no-op. */
XF_API void xf_ctx_shrink(xf_ctx_t *c);

/* What to compute. Buffers are caller-owned; NULL means "not wanted". */
typedef struct xf_output {
    enum xf_pooling pooling;   /* XF_POOL_DEFAULT: the model's */
    int normalize;             /* -1: the model's default; 0 no; 1 L2-normalise pooled rows */
    float *pooled;             /* [B][d_model] pooled embeddings */
    float *hidden;             /* [N][d_model] last hidden states */
    float *logits;             /* [B][n_labels] classifier logits (needs a classifier head) */
} xf_output_t;

/* Run the batch planned by p (built from this batch's shape; the context must have been
 * reserved for it). Returns 0, -EINVAL (batch differs from the plan, token id or type id out of
 * range: diag says which), XF_EUNSUPPORTED (logits without a head), XF_ENUMERIC, XF_EDEADLINE
 * (the progress callback asked to stop).
 * Thread: the context's owner thread. */
XF_API int xf_forward(xf_ctx_t *c, const xf_model_t *m, const xf_plan_t *p,
                      const xf_batch_t *batch, const xf_output_t *out, xf_diag_t *diag);

/* L2-normalise rows [0, rows) of x ([rows][d]) in place as torch.nn.functional.normalize:
 * x / max(‖x‖₂, 1e-12), the sum of squares in double (a zero row stays zero). This is what
 * xf_output_t.normalize applies; callers that normalise pooled rows later use it too. */
XF_API void xf_l2_normalize_rows(float *x, int32_t rows, int32_t d);

/* Convenience: plan + reserve + forward in one call (allocates; for tools and tests). */
XF_API int xf_run(xf_ctx_t *c, const xf_model_t *m, const xf_batch_t *batch,
                  const xf_output_t *out, xf_diag_t *diag);

/* What the engine runs on, detected at run time (never at build time). */
typedef struct xf_cpu_info {
    char brand[64];            /* CPU model string */
    const char *isa;           /* best level in use: "generic", "avx2", "avx512", "amx" */
    const char *isa_max;       /* best level the CPU has */
    const char *blas_core;     /* OpenBLAS core type it loaded ("SkylakeX"), or "unknown" */
    const char *gemm_path;     /* GEMM implementation the engine uses, e.g. "own-avx512",
                                  "openblas-1t-per-thread" */
    int has_avx2, has_fma, has_avx512f, has_avx512bw, has_avx512vl, has_avx512vnni,
        has_avx512bf16, has_amx_tile, has_amx_int8, has_amx_bf16;
    int n_cores;               /* online cores */
    int blas_core_avx512;      /* blas_core is one of OpenBLAS' AVX-512 cores */
} xf_cpu_info_t;
XF_API void xf_cpu_get_info(xf_cpu_info_t *out);

/* The machine's fp32 FMA peak: GFLOP/s of a loop of independent FMAs at the widest vector
 * width the CPU has, on n_threads threads for about ms milliseconds (for benchmarks). */
XF_API double xf_cpu_fma_peak(int n_threads, int ms);

/* Library version string "0.1.0". Ownership: borrowed, static. */
XF_API const char *xf_version(void);

#ifdef __cplusplus
}
#endif
#endif
