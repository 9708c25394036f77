/* Attention-internal: the variant vtable of ../shared/ATTENTION.md §26.2 and the static
 * registry. Changes from §26.2: parameters arrive as one flat JSON object (jansson) that also
 * holds "variant"; there is an optional prepare() step that fills shared scratch; shapes carry
 * n_tokens (the plane stride) so the engine can hand a variant a run of a batch's sequences.
 * Called from the engine's forward (plan on the caller, forward on every pool thread). */
#ifndef XF_ATTENTION_REGISTRY_H
#define XF_ATTENTION_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <xformd/attention.h>
#include <xformd/model.h>

enum xf_attn_family { XF_FAM_T = 1, XF_FAM_S, XF_FAM_F, XF_FAM_P, XF_FAM_M };

/* One layer, a run of sequences of one packed batch. */
typedef struct xf_attn_shape {
    int32_t n_seq;                 /* sequences in this call */
    const int32_t *cu_len;         /* [n_seq+1] absolute token offsets into the planes
                                      (cu_len[0] need not be 0 for a run inside a batch) */
    int32_t n_tokens;              /* N: rows of each head plane (the whole batch) */
    int32_t n_head, d_head, layer; /* this layer's head count (heterogeneous layers) */
    const int32_t *mem_rows;       /* [n_seq] rows of memory per sequence (family M), else NULL */
} xf_attn_shape;

typedef struct xf_attn_io {
    const float *q, *k, *v;        /* [n_head][N][d_head] planes (ld == 0) */
    float q_scale;                 /* factor already folded into q by the QKV split (1 or scale) */
    int32_t ld;                    /* 0: planes as above; else q/k/v (and qg/kg/vg) rows are ld
                                      floats apart with head h's d_head columns at h·d_head,
                                      as the QKV GEMM writes them (no split op): only for a
                                      variant whose xf_at_reads_strided() is true */
    const float *qg, *kg, *vg;     /* global projections (Longformer) or NULL */
    const uint8_t *is_global;      /* [N] or NULL */
    const int32_t *type_ids;       /* [N] token types or NULL (ETC/Longformer segment_a) */
    const float *x;                /* [N][d_model] layer input, for variants that need it, or NULL */
    const void *weights;           /* this layer's extra tensors, or NULL */
    void *const *state;            /* [n_seq] per-sequence state (family M) or NULL */
    float scale;                   /* usually 1/sqrt(d_head) */
    float *out;                    /* [N][n_head][d_head] */
} xf_attn_io;

typedef struct xf_attn_plan {
    size_t ws_per_thread;          /* scratch each thread may use */
    size_t ws_shared;              /* scratch shared by all threads (filled by prepare) */
    size_t state_per_seq;          /* bytes of per-sequence state (family M) */
    int32_t n_items;               /* work items: (seq, head) or (seq, head, query tile) */
    int32_t dense_fallbacks;       /* sequences that took the dense path (§0) */
} xf_attn_plan;

struct xf_at_key;
struct xf_at_t_variant;
struct xf_at_item;

/* One variant's implementation: its parameter block and entry points. Defined in the variant's
 * file as `const xf_attn_ops xf_at_<sym>` for its variants.def row. */
typedef struct xf_attn_ops {
    size_t params_size;            /* POD params blob, <= XF_ATTN_PARAMS_MAX */
    const void *defaults;          /* params_size bytes: the parameters of {"variant": name} */
    const struct xf_at_key *keys;  /* the parameter table (params.h): parsing and to_json */
    int32_t n_keys;
    /* Rules between keys, after every key is read (e.g. summary <= block); may be NULL.
     * Returns 0 or XF_EPARAM with err naming the key. */
    int (*check)(const void *params, char *err, size_t errlen);
    /* A setting that needs trained tensors no loaded model has: the enum parameter key equal
     * to value is refused (XF_EUNSUPPORTED) with "key: "value" needs what, which this model
     * does not have; use "other"" (the key's other names). key NULL: none. */
    struct {
        const char *key;
        int32_t value;
        const char *what;
    } needs_weights;
    /* Other model-side checks (weights present, d_head limits); may be NULL. */
    int (*validate)(const void *params, const xf_model_t *m, int layer, char *err, size_t errlen);
    /* Family T: the sparsity pattern, run by the family-T kernel (fam_t.h); plan and forward
     * are then NULL. Otherwise plan or item_ws, and forward or item. */
    const struct xf_at_t_variant *pattern;
    /* Pure: sizes depend only on params, shape and nth. */
    int (*plan)(const void *params, const xf_attn_shape *sh, int nth, xf_attn_plan *out);
    /* Instead of plan, for one item per (sequence, head) and no shared scratch: the per-thread
     * scratch bytes for the longest sequence nmax (the tile scratch is added). */
    size_t (*item_ws)(const void *params, const xf_attn_shape *sh, int32_t nmax);
    /* Optional, single thread, before forward: fill ws_shared (item lists, random features). */
    int (*prepare)(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                   const xf_attn_plan *pl, void *ws_shared);
    /* Optional, with prepare: the same work split across the pool. Every thread calls it with
     * its ith/nth (the nth the plan was made for, or fewer), writes only its share of
     * ws_shared, no allocation, no barrier; calling it for ith = 0..nth−1 (in any order, or
     * at once) leaves ws_shared as prepare() does, for any nth. The engine calls this instead
     * of prepare() when it is set. */
    int (*prepare_par)(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                       const xf_attn_plan *pl, void *ws_shared, int ith, int nth);
    /* Every pool thread: its share of the items. ws_shared is read-only here; ws_thread is this
     * thread's private scratch (ws_per_thread bytes). No allocation, no barrier; bitwise
     * identical output for any nth. */
    int (*forward)(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                   const xf_attn_plan *pl, const void *ws_shared, void *ws_thread,
                   int ith, int nth);
    /* Instead of forward, for variants that are a plain walk over (sequence, head) items
     * (fam_s.h xf_at_walk): one item, ws the thread's scratch, tws its tile scratch. */
    void (*item)(const void *params, const xf_attn_shape *sh, const struct xf_at_item *it,
                 float q_scale, float scale, void *ws, void *tws);
    /* NULL unless XF_ATTN_STATEFUL. */
    int (*state_update)(const void *params, const xf_attn_shape *sh, const xf_attn_io *io,
                        int ith, int nth);
} xf_attn_ops;

/* The parameter block of an xf_attn_ops: the params type, its defaults object and key table. */
#define XF_AT_PARAMS(T, dflt, keytab)                                                         \
    .params_size = sizeof(T), .defaults = &(dflt), .keys = (keytab),                         \
    .n_keys = (int32_t)(sizeof(keytab) / sizeof((keytab)[0]))

/* A registered variant: its variants.def row and its implementation. */
typedef struct xf_attn_vtbl {
    const char *name;              /* "bigbird", matches the JSON "variant" */
    enum xf_attn_family family;
    uint32_t flags;                /* XF_ATTN_* */
    const char *summary;           /* one line for listings */
    const char *params_doc;        /* "window=256 dilation=1" — defaults, for listings */
    const xf_attn_ops *ops;
} xf_attn_vtbl;

/* The variants, one `const xf_attn_vtbl xf_attn_vt_<sym>` per variants.def row. */
#define XF_ATTN_VARIANT(sym, name, fam, flags, summary, doc) extern const xf_attn_vtbl xf_attn_vt_##sym;
#include "attention/variants.def"
#undef XF_ATTN_VARIANT

/* The call layer (registry.c): every caller goes through these, whatever the family. */
/* Defaults, then obj's keys (all but "variant") through the variant's table, then its check().
 * Unknown keys, wrong types and out-of-range values are XF_EPARAM with err naming the key. */
int xf_at_parse_params(const xf_attn_vtbl *vt, void *params, const json_t *obj, char *err,
                       size_t errlen);
/* Add every parameter (defaults included) to obj. Returns 0 or -ENOMEM. */
int xf_at_params_json(const xf_attn_vtbl *vt, const void *params, json_t *obj);
/* The model-side checks of a selection for one layer: needs_weights, then validate(). Returns 0,
 * XF_EPARAM or XF_EUNSUPPORTED with err saying why. */
int xf_at_validate(const xf_attn_vtbl *vt, const void *params, const xf_model_t *m, int layer,
                   char *err, size_t errlen);
/* The variant has a plan and a forward (a pattern, or plan with forward or item). */
int xf_at_runnable(const xf_attn_vtbl *vt);
/* The variant's forward (no prepare, no state update) reads Q/K/V rows with xf_attn_io.ld's
 * stride straight from the QKV GEMM's output: the forward needs no head split for it. */
int xf_at_reads_strided(const xf_attn_vtbl *vt);
int xf_at_plan(const xf_attn_vtbl *vt, const void *params, const xf_attn_shape *sh, int nth,
               xf_attn_plan *out);
int xf_at_forward(const xf_attn_vtbl *vt, const void *params, const xf_attn_shape *sh,
                  const xf_attn_io *io, const xf_attn_plan *pl, const void *ws_shared,
                  void *ws_thread, int ith, int nth);

#define XF_ATTN_PARAMS_MAX 256

/* A parsed selection (the public xf_attn_t). */
struct xf_attn {
    const xf_attn_vtbl *vt;
    _Alignas(8) unsigned char params[XF_ATTN_PARAMS_MAX];
};

/* The registry, in variants.def order. */
const xf_attn_vtbl *xf_attn_find(const char *name);
int xf_attn_registry_count(void);
const xf_attn_vtbl *xf_attn_registry_get(int i);

/* Map a Hugging Face config.json's attention settings (BigBird attention_type/block_size/
 * num_random_blocks, Longformer attention_window, Nyströmformer num_landmarks, TransfoXL
 * mem_len/clamp_len) to a selection. Returns 0 with *out = NULL when the config names none;
 * XF_EPARAM with err on values out of range. Ownership: *out is new. */
int xf_attn_from_hf_config(const json_t *config, xf_attn_t **out, char *err, size_t errlen);

#endif
