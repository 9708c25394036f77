/* Attention family P (ATTENTION.md §26.1): permute-then-chunk. Per (sequence, head) item a
 * grouping of keys and queries (LSH buckets over rounds, k-means clusters, block sort) gives each
 * query an explicit key set; rounds merge by union (each key once) into one softmax. Variants:
 * Reformer (§10), Routing / clustered (§11), Sinkhorn (§12). */
#ifndef XF_ATTENTION_FAM_P_H
#define XF_ATTENTION_FAM_P_H

#include <stddef.h>
#include <stdint.h>

#include "attention/fam_s.h"

enum { XF_REFORMER_SUBSTITUTE = 0, XF_REFORMER_SHARED = 1 };
typedef struct xf_reformer_params {
    uint64_t seed;
    int32_t n_hashes;
    int32_t n_buckets;           /* 0 = auto: 2^floor(log2(2n/chunk)), >= 2, per sequence */
    int32_t chunk, chunks_before, chunks_after;
    int32_t mode;                /* XF_REFORMER_* */
    int32_t max_bucket;          /* 0 = off */
} xf_reformer_params_t;

enum { XF_ROUTING_ROUTED = 0, XF_ROUTING_CLUSTERED = 1 };
typedef struct xf_routing_params {
    uint64_t seed;
    int32_t mode;                /* XF_ROUTING_* */
    int32_t clusters;            /* 0 = auto: ceil(sqrt(n)) routed, 25 clustered */
    int32_t iters;
} xf_routing_params_t;

enum { XF_SINKHORN_HARD = 0, XF_SINKHORN_SOFT = 1 };
enum { XF_SINKHORN_QK = 0, XF_SINKHORN_KK = 1 };
typedef struct xf_sinkhorn_params {
    double tau;
    int32_t block, mode, k_s, iters, sim;
} xf_sinkhorn_params_t;

/* Buckets per sequence of length n (resolves auto). */
int32_t xf_reformer_buckets(const xf_reformer_params_t *p, int32_t n);
/* Clusters per sequence of length n (resolves auto, clamps to n). */
int32_t xf_routing_clusters(const xf_routing_params_t *p, int32_t n);

/* LSH rotation of round rho (0-based) for nb buckets: R [d][nb/2] from stream
 * (seed, layer, head, LSH, rho), row-major, into r (double). */
void xf_at_p_rotation(uint64_t seed, int32_t layer, int32_t head, int32_t rho, int32_t d,
                      int32_t nb, double *r);
/* bucket(x̂) = argmax([x̂R ; −x̂R]) for a unit vector x̂ (double), ties to the lowest index;
 * nb == 1 gives 0. acc: nb/2 doubles of scratch. */
int32_t xf_at_p_hash(const double *xhat, int32_t d, const double *r, int32_t nb, double *acc);


#endif
