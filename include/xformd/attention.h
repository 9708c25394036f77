/* xformd public API: attention variants (../shared/ATTENTION.md). A variant selection is the
 * variant plus its parsed parameters, given as one flat JSON object everywhere — config, request
 * field, CLI --attention: {"variant": "window", "window": 256}. A selection is immutable after
 * parsing and may be shared across threads. The vtable behind it is engine-internal
 * (src/attention/registry.h). */
#ifndef XFORMD_ATTENTION_H
#define XFORMD_ATTENTION_H

#include <xformd/error.h>
#include <xformd/model.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    XF_ATTN_PER_REQUEST = 1u << 0,   /* may be chosen per request (no extra weights) */
    XF_ATTN_NEEDS_WEIGHTS = 1u << 1, /* needs tensors the model must provide */
    XF_ATTN_STATEFUL = 1u << 2,      /* reads/writes per-sequence state (family M) */
    XF_ATTN_RANDOM = 1u << 3         /* uses the seeded streams of ATTENTION.md §0 */
};

/* Parse a flat JSON object (len bytes, need not be NUL-terminated). Unknown keys, wrong types
 * and out-of-range values are XF_EPARAM with err naming the key ("window: must be >= 1");
 * bad JSON is XF_EFORMAT; an unknown variant is XF_ENOTFOUND.
 * Ownership: *out is new, free with xf_attn_free(). */
XF_API int xf_attn_parse(const char *json, size_t len, xf_attn_t **out, char *err, size_t errlen);
XF_API void xf_attn_free(xf_attn_t *a);
XF_API xf_attn_t *xf_attn_dup(const xf_attn_t *a);   /* new; NULL on ENOMEM */
/* The dense selection (never NULL). Ownership: borrowed, static. */
XF_API const xf_attn_t *xf_attn_dense(void);

XF_API const char *xf_attn_name(const xf_attn_t *a);   /* borrowed, static */
XF_API uint32_t xf_attn_flags(const xf_attn_t *a);
/* The canonical JSON (every parameter, defaults included) into buf; returns the length it
 * needs (like snprintf) or a negative code. */
XF_API int xf_attn_to_json(const xf_attn_t *a, char *buf, size_t len);
/* Check the selection against a model (extra weights present, head width limits, ...).
 * Returns 0 or XF_EPARAM / XF_EUNSUPPORTED with err saying why. */
XF_API int xf_attn_check(const xf_attn_t *a, const xf_model_t *m, char *err, size_t errlen);

/* Admission control: the work of the selection a (NULL: dense) on sequences lens[n_seq] for
 * one head of width d_head in one layer, from its parameters (iterations, blocks, features,
 * hashes, clusters, ...), in dense-equivalent units: dense attention on n tokens is n², so a
 * server's cost model term for Σ n² prices any variant. An estimate for bounding work before
 * it runs, not a timing. Never negative. */
XF_API double xf_attn_cost(const xf_attn_t *a, const int32_t *lens, size_t n_seq,
                           int32_t d_head);
/* The parameter of a that drives its cost over budget (units of xf_attn_cost) and its bound:
 * writes the key, its value and the largest (or, for block sizes and rates, the smallest)
 * value that keeps xf_attn_cost within budget, other parameters unchanged. Returns 0,
 * -ENOENT (no single parameter brings it within budget), -EINVAL, -ENOMEM. */
XF_API int xf_attn_cost_bound(const xf_attn_t *a, const int32_t *lens, size_t n_seq,
                              int32_t d_head, double budget, char *key, size_t keylen,
                              long long *value, long long *bound);
/* 1 when the selection computes a sequence of n_tokens tokens with plain dense attention on
 * model m (ATTENTION.md §0: e.g. a window or landmark count that covers the whole sequence),
 * 0 when it runs its own kernel, a negative code on error. Pure; any thread. */
XF_API int xf_attn_falls_back(const xf_attn_t *a, const xf_model_t *m, int32_t n_tokens);

/* Pruning counts of the content-dependent variants (hdp, ATTENTION.md §25), summed over every
 * forward of the process since start (all contexts): 2×2 score blocks decided and those
 * pruned by the block threshold (over every head), (sequence, layer, head) triples and those
 * pruned by the head threshold. Any thread; the four loads are not one snapshot. */
typedef struct xf_attn_prune_stats {
    uint64_t blocks, blocks_pruned;
    uint64_t heads, heads_pruned;
} xf_attn_prune_stats_t;
XF_API void xf_attn_prune_stats(xf_attn_prune_stats_t *out);

/* The registry, for listings (`xformd-cli variants`). */
typedef struct xf_attn_variant_info {
    const char *name;          /* "bigbird" */
    const char *family;        /* "T", "S", "F", "P", "M" */
    uint32_t flags;
    const char *summary;       /* one line */
    const char *params;        /* "block=64 random_blocks=3 window_blocks=1 ..." (defaults) */
} xf_attn_variant_info_t;
XF_API int xf_attn_variant_count(void);
XF_API int xf_attn_variant_get(int i, xf_attn_variant_info_t *out);   /* 0 or -ERANGE */

#ifdef __cplusplus
}
#endif
#endif
