/* Attention family M (ATTENTION.md §22, §23, §26.1): stateful memory. Keys/values are
 * [compressed memory ; memory ; current], relative-position terms by index (r_t = R_t W_r with
 * u/v biases), state read at the start and written by state_update() at the end. Variants:
 * Transformer-XL (txl) and Compressive. Also the per-sequence state layout and the session blob
 * of §22.1 (header, CRC-32C, validation on read). */
/* State = one layer of one sequence: a 64-byte header, then for each region in the order
 * compressed memory, memory, pending (compressive rows waiting for a full group): K as
 * [n_head][cap][d_head] floats, then V the same. Rows are the *projected* keys/values of the
 * remembered tokens (equivalent to caching the layer inputs for txl and mean compression,
 * since the K/V projections are affine). An all-zero state is a fresh, empty memory. */
#ifndef XF_ATTENTION_FAM_M_H
#define XF_ATTENTION_FAM_M_H

#include <stddef.h>
#include <stdint.h>

#include "attention/fam_s.h"

enum { XF_CMEM_MEAN = 0, XF_CMEM_MAX = 1, XF_CMEM_CONV = 2 };
typedef struct xf_at_m_params {
    int32_t mem_len;             /* memory rows kept (M) */
    int32_t cmem_len;            /* compressed rows kept (0 for txl) */
    int32_t rate;                /* compression rate c (1 for txl) */
    int32_t fn;                  /* XF_CMEM_* */
    int32_t clamp_len;           /* -1 = none */
    int32_t causal;
} xf_at_m_params_t;

/* This layer's trained tensors (io->weights), NULL = W_r = 0, u = v = 0. */
typedef struct xf_attn_w_txl {
    int32_t d_model, n_head, d_head;
    const float *w_r;            /* [n_head*d_head][d_model], r_t = W_r · R_t (no bias) */
    const float *u, *v;          /* [n_head][d_head] r_w_bias, r_r_bias (may be NULL) */
} xf_attn_w_txl_t;

#define XF_AT_M_MAGIC 0x534D4658u   /* "XFMS" little-endian */
#define XF_AT_M_VERSION 1

typedef struct xf_at_m_hdr {
    uint32_t magic;
    uint16_t version, dtype;     /* dtype 1 = f32 */
    int32_t n_head, d_head;
    int32_t mem_cap, mem_rows, cmem_cap, cmem_rows, pend_cap, pend_rows, rate;
    int32_t reserved;
    int64_t segments, tokens;
} xf_at_m_hdr_t;
_Static_assert(sizeof(xf_at_m_hdr_t) == 64, "state header is 64 bytes");

size_t xf_at_m_state_size(const xf_at_m_params_t *p, int32_t n_head, int32_t d_head);
/* Write an empty state (header with zero rows). */
void xf_at_m_state_init(const xf_at_m_params_t *p, int32_t n_head, int32_t d_head, void *state);
/* Pointers into a state: region 0 = compressed, 1 = memory, 2 = pending; kv 0 = K, 1 = V. */
float *xf_at_m_rows(void *state, int32_t region, int32_t kv, int32_t head);

/* The family kernel behind txl and compressive, in the vtable shapes of registry.h (params: an
 * xf_at_m_params_t) so both vtables point at them. forward: one (sequence, head) per item, reads
 * io->state[b] (NULL or all-zero = empty memory) and io->weights (xf_attn_w_txl_t or NULL);
 * state_update: one sequence per item, must run after every forward item of the layer has
 * finished. xf_at_m_plan is the typed form of xf_at_m_plan_vt. */
int xf_at_m_plan(const xf_at_m_params_t *p, const xf_attn_shape *sh, xf_attn_plan *out);
int xf_at_m_plan_vt(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out);
int xf_at_m_prepare(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                    const xf_attn_plan *pl, void *ws_shared);
int xf_at_m_forward(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                    const xf_attn_plan *pl, const void *ws_shared, void *ws_thread, int ith,
                    int nth);
int xf_at_m_state_update(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                         int ith, int nth);

/* Session blob (§22.1) over n_layer states of equal shape. Row width stored in the d_model
 * field is 2·n_head·d_head (K and V of one token). The CRC-32C at offset 104 covers the
 * header's first 104 bytes and the payload. */
size_t xf_at_m_blob_size(void *const *states, int32_t n_layer);
int xf_at_m_blob_write(void *const *states, int32_t n_layer, const uint8_t hash[32], void *buf,
                       size_t len);
/* The same in a payload dtype: 1 f32, 2 f16, 3 bf16 (round to nearest even; lossy). Size 0 /
 * -EINVAL for another dtype; write returns -ERANGE when a value does not fit f16. The reader
 * accepts the three. */
size_t xf_at_m_blob_size_dt(void *const *states, int32_t n_layer, int dtype);
int xf_at_m_blob_write_dt(void *const *states, int32_t n_layer, int dtype, const uint8_t hash[32],
                          void *buf, size_t len);
/* Validate and load; states are (re)initialised from p, n_head, d_head; when the configured
 * caps are smaller the newest rows are kept. Returns 0, or XF_EFORMAT with err saying why
 * (the caller then discards the blob). */
int xf_at_m_blob_read(const void *buf, size_t len, const uint8_t hash[32],
                      const xf_at_m_params_t *p, int32_t n_head, int32_t d_head,
                      void *const *states, int32_t n_layer, char *err, size_t errlen);
uint32_t xf_at_m_crc32c(const void *data, size_t len);
/* Continue a CRC-32C: crc(a ‖ b) from crc(a) (crc of nothing = 0). */
uint32_t xf_at_m_crc32c_more(uint32_t crc, const void *data, size_t len);


#endif
