/* Test reference for "hdp" (ATTENTION.md §25, RECONSTRUCTED), written for obviousness: double
 * precision, full n×n integer score and importance matrices, per-row thresholds and head
 * importances straight from the section's formulas, then the explicit-set softmax of
 * attn_ref_t.h. One sequence, all heads (head pruning compares the heads). */
#ifndef XF_TESTS_ATTN_REF_HDP_H
#define XF_TESTS_ATTN_REF_HDP_H

#include <stddef.h>
#include <stdint.h>

typedef struct xf_ref_hdp_params {
    double rho_B, tau_H;
    int frac_bits, approx, sign_split;
} xf_ref_hdp_params;

/* One sequence of n tokens: q/k/v plane rows of head h at q + h·plane + i·d (q holds
 * q_scale·q_raw), out rows [n][H][d]. keep_head [H] and keep_block [H][nb][nb] (nb = ⌈n/2⌉)
 * receive the decisions (may be NULL). Pruned heads' rows are zero. */
void xf_ref_hdp(const xf_ref_hdp_params *p, int32_t n, int32_t H, int32_t d, const float *q,
                const float *k, const float *v, size_t plane, double q_scale, double scale,
                uint8_t *keep_head, uint8_t *keep_block, float *out);

#endif
