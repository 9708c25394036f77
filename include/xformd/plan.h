/* xformd public API: batches and plans. A plan is computed from a batch's shape alone (token
 * count, per-sequence lengths, attention variants): every intermediate tensor's size and
 * lifetime from the layer graph, and their offsets in one arena. Compute is xf_forward(). */
#ifndef XFORMD_PLAN_H
#define XFORMD_PLAN_H

#include <xformd/error.h>
#include <xformd/model.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A packed batch: sequences concatenated, never padded. N = cu_len[n_seq]. */
typedef struct xf_batch {
    int32_t n_seq;                    /* B >= 0 */
    const int32_t *cu_len;            /* [B+1], cu_len[0] == 0, non-decreasing */
    const int32_t *ids;               /* [N] token ids (specials included) */
    const int32_t *type_ids;          /* [N] token type ids, or NULL for all 0 */
    const xf_attn_t *const *attn;     /* [B] attention variant per sequence; NULL array or NULL
                                         entries: the model's default */
    void *const *attn_state;          /* [B] per-sequence state for stateful variants, or NULL:
                                         attn_state[b] points to an array of n_layer per-layer
                                         state pointers (void *const[n_layer]), each of the
                                         variant's state_per_seq bytes */
} xf_batch_t;

typedef struct xf_plan xf_plan_t;

typedef struct xf_plan_stats {
    size_t arena_bytes;        /* bytes of the arena this plan needs */
    size_t naive_bytes;        /* sum of all intermediate tensors (no reuse) */
    size_t lower_bound_bytes;  /* largest sum of tensors alive at one time */
    int32_t n_tensors;         /* intermediate tensors planned */
    int32_t n_seq, n_tokens, max_len;
    double flops;              /* useful FLOPs of one forward of this batch */
    int32_t dense_fallbacks;   /* sequences whose variant fell back to dense (ATTENTION.md §0) */
} xf_plan_stats_t;

/* Ownership: *out is new, free with xf_plan_free(). A plan belongs to one model. */
XF_API int xf_plan_create(const xf_model_t *m, xf_plan_t **out);
XF_API void xf_plan_free(xf_plan_t *p);

/* Plan the batch's shape (ids are not read). n_threads is the number of threads that will run
 * it (workspace per thread). Returns 0, -EINVAL (bad cu_len), XF_ETOOLONG (a sequence longer
 * than the model's positions), XF_EPARAM (a variant rejects its parameters for this model),
 * -ENOMEM. Reuses the plan's storage; allocates only when a bigger batch needs more. */
XF_API int xf_plan_build(xf_plan_t *p, const xf_batch_t *shape, int n_threads, xf_diag_t *diag);
XF_API void xf_plan_get_stats(const xf_plan_t *p, xf_plan_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
