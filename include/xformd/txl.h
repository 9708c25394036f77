/* xformd public API: Transformer-XL language models (Hugging Face TransfoXL layout) and their
 * per-session segment memories (ATTENTION.md §22, §22.1). A loaded model is immutable and may be
 * shared by every thread; a memory object belongs to one session and is used by one thread at a
 * time (the caller serialises the segments of a session). */
#ifndef XFORMD_TXL_H
#define XFORMD_TXL_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xf_txl xf_txl_t;
typedef struct xf_txl_mem xf_txl_mem_t;

#define XF_TXL_MAX_CLUSTERS 8

/* A description of a loaded TXL model. Ownership: borrowed, valid until xf_txl_free(). */
typedef struct xf_txl_info {
    const char *name;          /* served name: load option, else the directory's basename */
    const char *dir;
    int32_t n_layer, d_model, d_embed, n_head, d_head, d_inner;
    int32_t vocab_size;        /* n_token of the config */
    int32_t n_symbols;         /* symbols in vocab.txt or idx2sym (<= vocab_size) */
    int32_t mem_len;           /* memory rows kept per layer (config, or the load option) */
    int32_t clamp_len;         /* distances clamped to clamp_len when > 0 (HF semantics) */
    int same_length, pre_lnorm, untie_r;
    int32_t div_val;
    int32_t n_clusters;        /* tail clusters (cutoffs minus one) */
    int32_t cutoff_ends[XF_TXL_MAX_CLUSTERS + 2]; /* [0, c0, c1, ..., vocab_size] */
    float ln_eps;
    int lower_case;            /* tokenizer lower-cases its input */
    int32_t eos_id, unk_id;    /* -1 when the vocabulary lacks them */
    uint8_t hash[32];          /* SHA-256 of config.json bytes + model.safetensors bytes */
    int64_t n_params;
} xf_txl_info_t;

typedef struct xf_txl_opts {
    const char *name;          /* served name; NULL: the directory's basename */
    int32_t mem_len;           /* < 0: the config's mem_len */
} xf_txl_opts_t;

/* 1 when dir/config.json says model_type "transfo-xl", 0 when it names another model type,
 * a negative code when config.json cannot be read or parsed. */
XF_API int xf_txl_probe(const char *dir);

/* Load config.json + model.safetensors + the symbol list (vocab.txt, or when it is absent the
 * "idx2sym" array of tokenizer.json) (+ tokenizer_config.json) from dir.
 * Tied crit.* tensors absent from the file are taken from transformer.word_emb.* as
 * tie_word_embeddings / tie_projs say. Every shape is checked against the config.
 * Returns 0, -ENOENT, XF_EFORMAT, XF_ESHAPE, XF_EUNSUPPORTED (attn_type != 0, sample_softmax,
 * non-adaptive), XF_EPARAM (same_length with mem_len 0), -ENOMEM; diag names file and tensor.
 * Ownership: *out is new, free with xf_txl_free(). */
XF_API int xf_txl_load(const char *dir, const xf_txl_opts_t *opts, xf_txl_t **out,
                       xf_diag_t *diag);
XF_API void xf_txl_free(xf_txl_t *m);
XF_API const xf_txl_info_t *xf_txl_info(const xf_txl_t *m);

/* Word-level tokenizer of TransfoXLTokenizer: strip, lower-case when the tokenizer config says
 * lower_case, split on whitespace, map unknown symbols to <unk> (XF_ENOTFOUND when the
 * vocabulary has none), append <eos> when add_eos. No Moses preprocessing: the text must be
 * tokenized as the corpus was (wt103 style). Invalid UTF-8 is XF_EFORMAT.
 * Ownership: *ids is new (free()), *n its length (may be 0, *ids then NULL). Thread-safe. */
XF_API int xf_txl_encode(const xf_txl_t *m, const char *text, size_t len, int add_eos,
                         int32_t **ids, int32_t *n, xf_diag_t *diag);
/* Symbol of an id, or NULL. Ownership: borrowed, valid until xf_txl_free(). */
XF_API const char *xf_txl_symbol(const xf_txl_t *m, int32_t id);

/* How a new session's memory starts (ATTENTION.md §22, trap "fresh sessions"). */
enum xf_txl_init {
    XF_TXL_INIT_EMPTY = 0,     /* no rows, as the original Transformer-XL code */
    XF_TXL_INIT_ZEROS = 1      /* mem_len rows of zeros per layer, as HF's init_mems */
};

/* A new memory for m. Returns 0 or -ENOMEM. Ownership: *out is new, free with
 * xf_txl_mem_free(); it must not outlive m. */
XF_API int xf_txl_mem_create(const xf_txl_t *m, enum xf_txl_init init, xf_txl_mem_t **out);
XF_API void xf_txl_mem_free(xf_txl_mem_t *mem);

typedef struct xf_txl_mem_stats {
    int32_t rows;              /* memory rows per layer */
    int64_t segments, tokens;  /* segments and tokens processed */
    int has_boundary;          /* the last segment's final hidden row is kept (scores the next
                                  segment's first token) */
    size_t bytes;              /* in-process size of the memory */
} xf_txl_mem_stats_t;
XF_API void xf_txl_mem_stats(const xf_txl_mem_t *mem, xf_txl_mem_stats_t *out);

enum {
    XF_TXL_OUT_LOGPROBS = 1u << 0,
    XF_TXL_OUT_HIDDEN = 1u << 1,
    XF_TXL_OUT_POOLED = 1u << 2
};

/* One segment's outputs. Zero-initialise; xf_txl_run() fills it; xf_txl_result_deinit()
 * releases the arrays. */
typedef struct xf_txl_result {
    int32_t n;                 /* tokens of the segment */
    float *logprobs;           /* [n] log p(ids[t] | everything before it), from the adaptive
                                  softmax of the previous row; logprobs[0] uses the previous
                                  segment's last row and is NaN when there is none */
    int32_t n_scored;          /* entries of logprobs that are not NaN */
    double sum;                /* sum of the scored logprobs */
    int32_t next_id;           /* argmax of the last row: predicted first token of the next
                                  segment */
    float next_logprob;        /* its log-probability */
    float *hidden;             /* [n][d_model] last hidden states, or NULL */
    float *pooled;             /* [d_model] mean of hidden over the segment, or NULL */
} xf_txl_result_t;
XF_API void xf_txl_result_deinit(xf_txl_result_t *r);

/* Run one segment of n >= 1 token ids through m with memory mem (HF TransfoXLLMHeadModel
 * semantics: causal relative attention over [memory ; segment], memory entry l = input of
 * layer l, keep the last min(mem_len, rows + n) rows). want: XF_TXL_OUT_* bits (logprobs, sum
 * and next are always computed). On success mem holds the new memory and *out the outputs; on
 * failure mem is unchanged. Returns 0, -EINVAL (id out of range, n < 1), -ENOMEM, XF_ENUMERIC.
 * Call from any thread; one call per mem at a time. */
XF_API int xf_txl_run(const xf_txl_t *m, xf_txl_mem_t *mem, const int32_t *ids, int32_t n,
                      unsigned want, xf_txl_result_t *out, xf_diag_t *diag);

/* Called before each layer with the layers done so far (0 .. n_layer-1) and n_layer; a non-zero
 * return stops the segment. It runs on the caller's thread, must be cheap and must not call
 * back into the model or the memory. */
typedef int (*xf_txl_progress_fn)(void *user, int32_t layers_done, int32_t n_layer);
/* xf_txl_run() that asks progress (NULL: never stops) before every layer: when it says stop,
 * returns XF_EDEADLINE with mem and *out untouched (the segment did not happen). This is how a
 * server stops a segment whose deadline passed while it was computing. */
XF_API int xf_txl_run_progress(const xf_txl_t *m, xf_txl_mem_t *mem, const int32_t *ids,
                               int32_t n, unsigned want, xf_txl_progress_fn progress,
                               void *user, xf_txl_result_t *out, xf_diag_t *diag);

/* ---- the session blob (ATTENTION.md §22.1) ---- */

enum xf_txl_dtype { XF_TXL_F32 = 1, XF_TXL_F16 = 2, XF_TXL_BF16 = 3 };

/* Bytes of mem serialised in dtype (128-byte header + payload). */
XF_API size_t xf_txl_mem_blob_size(const xf_txl_t *m, const xf_txl_mem_t *mem,
                                   enum xf_txl_dtype dtype);
/* Serialise mem into buf (len >= xf_txl_mem_blob_size()). Payload rows are converted to dtype
 * (f16/bf16 round to nearest even: lossy, ~1e-3 relative). The CRC-32C at offset 104 covers the
 * header's first 104 bytes and the payload, so any corrupted field is detected. Flag bit 1 means
 * one extra row (the boundary row) follows the memory rows. Returns 0, -EINVAL, -ENOBUFS,
 * -ERANGE (a value above the f16 range: use f32 or bf16). */
XF_API int xf_txl_mem_save(const xf_txl_t *m, const xf_txl_mem_t *mem, enum xf_txl_dtype dtype,
                           void *buf, size_t len);
/* Validate a blob against m and load it into mem (replacing its content). Rejected (XF_EFORMAT,
 * diag says which check failed, mem unchanged): wrong magic, version 0 or newer, unknown dtype,
 * header_size < 108, unknown flags, compressive sections, model hash / n_layers / d_model
 * mismatch, rows above caps, size != header_size + payload_bytes, CRC mismatch, non-zero
 * reserved bytes. A blob written with another mem_len keeps its newest min(rows, mem_len)
 * rows. Returns 0, XF_EFORMAT, -ENOMEM. */
XF_API int xf_txl_mem_load(const xf_txl_t *m, const void *buf, size_t len, xf_txl_mem_t *mem,
                           xf_diag_t *diag);

/* ---- the test model ---- */

typedef struct xf_txl_demo_opts {
    uint64_t seed;
    int32_t n_layer, d_model, d_embed, n_head, d_head, d_inner;
    int32_t vocab_size;        /* >= 64 */
    int32_t cutoffs[2];        /* two cutoffs, 0 < c0 < c1 < vocab_size */
    int32_t div_val;
    int32_t mem_len, clamp_len;
    int same_length, pre_lnorm, untie_r;
    int tie_weights;           /* 1: leave tied crit.* tensors out, as save_pretrained does */
} xf_txl_demo_opts_t;
/* Small defaults for tests: 2 layers, d_model 32, d_embed 32, 4 heads of 8, d_inner 64,
 * vocab 300, cutoffs 100/200, div_val 2, mem_len 16, clamp_len 1000, same_length 0, post-LN,
 * untie_r 1, tied. */
XF_API void xf_txl_demo_opts_init(xf_txl_demo_opts_t *o);
/* Write a random TXL model (config.json, model.safetensors, vocab.txt, tokenizer_config.json)
 * into dir. Returns 0 or a negative code. */
XF_API int xf_txl_demo_write(const char *dir, const xf_txl_demo_opts_t *o, xf_diag_t *diag);

#ifdef __cplusplus
}
#endif
#endif
