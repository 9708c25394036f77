/* xformd public API: the attention state of encoders whose attention variant is stateful
 * (family M: txl, compressive; ATTENTION.md §22, §23) — what one sequence remembers between
 * segments, and its session blob (ATTENTION.md §22.1, CRC-32C, every check on read). A state
 * definition belongs to one (model, attention selection) pair and is immutable (any thread); a
 * state belongs to one sequence and is used by one thread at a time (the caller serialises the
 * segments of a session). The engine reads and updates a state during xf_forward() through
 * xf_batch_t.attn_state[b] = xf_state_layers(st). */
#ifndef XFORMD_STATE_H
#define XFORMD_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/attention.h>
#include <xformd/error.h>
#include <xformd/model.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xf_state_def xf_state_def_t;
typedef struct xf_state xf_state_t;

/* Payload dtype of the blob (ATTENTION.md §22.1 field dtype). */
enum xf_state_dtype { XF_STATE_F32 = 1, XF_STATE_F16 = 2, XF_STATE_BF16 = 3 };

/* 1 when selection a (NULL: the model's default) keeps state between segments, else 0. */
XF_API int xf_state_supported(const xf_model_t *m, const xf_attn_t *a);

/* The state layout of m under a (NULL: the model's default), and the model hash of the blob:
 * SHA-256 of m's config.json bytes then its model.safetensors bytes (read once, here).
 * Returns 0, XF_EUNSUPPORTED (the variant keeps no state, or the layers differ in head count or
 * width: the blob holds one row width), -ENOENT / -EIO (config.json unreadable), -ENOMEM; diag
 * says which. Ownership: *out is new, free with xf_state_def_free(); it must not outlive m. */
XF_API int xf_state_def_create(const xf_model_t *m, const xf_attn_t *a, xf_state_def_t **out,
                               xf_diag_t *diag);
XF_API void xf_state_def_free(xf_state_def_t *d);
/* The selection this definition was made for. Ownership: borrowed, valid with d. */
XF_API const xf_attn_t *xf_state_def_attn(const xf_state_def_t *d);
/* The model hash written into blobs (32 bytes). Ownership: borrowed, valid with d. */
XF_API const uint8_t *xf_state_def_hash(const xf_state_def_t *d);
/* In-process bytes of one sequence's state (every layer at full capacity). */
XF_API size_t xf_state_def_bytes(const xf_state_def_t *d);

/* A new, empty state (no rows: a fresh session). Returns 0 or -ENOMEM.
 * Ownership: *out is new, free with xf_state_free(); it must not outlive d. */
XF_API int xf_state_create(const xf_state_def_t *d, xf_state_t **out);
XF_API void xf_state_free(xf_state_t *st);
/* Forget everything (an empty state again). */
XF_API void xf_state_reset(xf_state_t *st);
/* The value for xf_batch_t.attn_state[b]: n_layer per-layer state pointers. The sequence must
 * run with the selection of the definition (batch.attn[b] NULL when that is the model's
 * default). Ownership: borrowed, valid with st. */
XF_API void *const *xf_state_layers(xf_state_t *st);

typedef struct xf_state_stats {
    int32_t mem_rows;          /* memory rows per layer */
    int32_t cmem_rows;         /* compressed rows per layer (compressive) */
    int32_t pend_rows;         /* rows waiting for a full compression group */
    int32_t mem_cap, cmem_cap; /* configured capacities */
    int64_t segments, tokens;  /* forwards that updated the state, and their tokens */
    size_t bytes;              /* in-process size */
} xf_state_stats_t;
XF_API void xf_state_stats(const xf_state_t *st, xf_state_stats_t *out);

/* Bytes of st serialised in dtype (128-byte header + payload); 0 for an unknown dtype. */
XF_API size_t xf_state_blob_size(const xf_state_t *st, enum xf_state_dtype dtype);
/* Serialise st into buf (len >= xf_state_blob_size()). Rows are the projected K and V of every
 * head (row width 2·n_head·d_head in the d_model field), converted to dtype (f16/bf16 round to
 * nearest even: lossy). The CRC-32C at offset 104 covers the header's first 104 bytes and the
 * payload. Returns 0, -EINVAL (bad dtype, short buffer), -ERANGE (a value above the f16 range:
 * use f32 or bf16). */
XF_API int xf_state_save(const xf_state_t *st, enum xf_state_dtype dtype, void *buf, size_t len);
/* Validate a blob against st's definition and load it (replacing st's content). Rejected
 * (XF_EFORMAT, diag says which check failed, st unchanged): wrong magic, version 0 or newer,
 * unknown dtype, header_size, flags, model hash / n_layers / row width mismatch, rows above
 * caps, a compression rate other than the configured one, size != header_size +
 * payload_bytes, CRC mismatch, non-zero reserved bytes. A blob written with other capacities
 * keeps its newest min(rows, cap) rows. Returns 0 or XF_EFORMAT. */
XF_API int xf_state_load(xf_state_t *st, const void *buf, size_t len, xf_diag_t *diag);

#ifdef __cplusplus
}
#endif
#endif
