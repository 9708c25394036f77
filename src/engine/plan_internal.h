/* Engine-internal: the plan's layout — the op list of one forward pass, every intermediate
 * tensor with its size, lifetime [first op, last op] and arena offset, the attention runs and
 * their variant plans. Written by xf_plan_build() (plan.c), read by xf_forward() (forward.c)
 * and by tests. */
#ifndef XF_ENGINE_PLAN_INTERNAL_H
#define XF_ENGINE_PLAN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/plan.h>

#include "attention/registry.h"
#include "engine/kernels.h"

#define XF_PLAN_ALIGN 64
/* int8 models: FFN1 quantises its output for FFN2 itself (plan.c q8_quant) from this many
 * rows (tokens) per thread on. */
#define XF_Q8_FUSE_ROWS 64
/* int8 models with XF_Q8_FUSE_ROWS to XF_Q8_CHAIN_MAX_ROWS rows per thread: the layer's ops
 * from the output projection to its last op (FFN2 with its residual + LayerNorm) are one row
 * chain (plan.c q8_chain: every op but the last no_barrier, the enum's comment). Above, the
 * barriers it saves are a small part of the forward and its row-split GEMMs cost more than
 * they save (b=32 n=128 on 2 threads: int8/fp32 CPU 2.98-2.99× with the chain against
 * 3.06-3.11× without, in one interleaved run). An int8 op that owns rows takes them in blocks
 * of XF_PLAN_Q8_ROW_BLOCK rows (the int8 kernels' row group, qgemm.h XF_QGEMM_MALIGN: a
 * block's quantised rows start on a group). */
#define XF_PLAN_Q8_ROW_BLOCK 16
#define XF_Q8_CHAIN_MAX_ROWS 256
/* The output projection and FFN2 finish their rows' residual (+ LayerNorm) themselves — no
 * ADD/ADD_LN op, no barrier, no second pass over the rows — from this many rows (tokens) per
 * thread on, and always with one thread (xf_plan_t.fuse_rows: the default; each thread then
 * owns whole rows of the GEMM and reads all of its W). Measured on Zen 5 (AVX-512, 2
 * threads, BERT-base shape): the CPU of those GEMMs + LayerNorm per forward, row split
 * against column split, was +26 % at 8 rows per thread, +19 % at 16, level (-2..+2 %) at 32
 * and 64 (doc/architecture.md). */
#define XF_FUSE_ROWS 32

/* The ops of the forward graph, in execution order. Every op is one parallel step: the pool's
 * threads each take their share, no op waits inside for the others, and one pool barrier
 * follows every op (forward.c fwd_thread) — except an op with no_barrier set, whose next op
 * reads only the rows each thread itself wrote in it (or tensors finished before it). Both
 * ops then own rows (row_block: each thread the same rows in both), and every tensor an op
 * without a barrier uses stays live into the next op (plan.c extend_lifetimes: no other
 * thread's later op may take its memory meanwhile). Two plans set it: an fp32 fused plan's
 * [pre-LN's LN2 →] FF1 → FF2, and an int8 row chain (XF_Q8_CHAIN_MAX_ROWS), a layer's ops
 * from OPROJ to its last. A step that needs the whole result of the step before it is a
 * separate op. Shapes: N tokens, D = d_model, h heads of width d, d_attn = h·d, B
 * sequences. */
enum xf_op_kind {
    XF_OP_EMBED = 0,   /* ids -> out [N][D]: word + pos + type embeddings (+ LayerNorm) */
    XF_OP_LN,          /* out [N][D] = LayerNorm(in0) with the layer's ln1/ln2 (pre-LN) or final */
    XF_OP_QKV,         /* out [N][3·d_attn] = in0 · [Wq;Wk;Wv]ᵀ + b (three GEMMs) */
    XF_OP_SPLIT,       /* out [3][h][N][d] head planes from in0; Q scaled by 1/sqrt(d) */
    XF_OP_ATTN_STATE,  /* thread 0: aux [n_seq] = this layer's state pointers of the run's
                          sequences (stateful variants) */
    XF_OP_ATTN_PREP,   /* thread 0: the variant's prepare() fills the shared part of ws (every
                          thread: its prepare_par() share, when it has one) */
    XF_OP_ATTN,        /* out [N][d_attn] rows of one attention run (in0 planes, ws workspace;
                          which = 1: in0 is QKV's [N][3·d_attn] output, read with a row
                          stride: the layer has no SPLIT op) */
    XF_OP_ATTN_UPDATE, /* the variant's state_update() (stateful variants) */
    XF_OP_OPROJ,       /* out [N][D] = in0 · Woᵀ (bias added by the next op); which != 0:
                          fused with the residual op that would follow (ADD_LN, or ADD for
                          pre-LN models) with the LN weights `which`: in1 = the residual,
                          out = that op's output, aux as that op's (each thread owns whole
                          rows: row_block) */
    XF_OP_ADD_LN,      /* out = LayerNorm(in0 + bias + in1) (post-LN residual blocks) */
    XF_OP_ADD,         /* out = in0 + bias + in1 (pre-LN residual) */
    XF_OP_FF1,         /* out [N][d_ff] = act(in0 · W1ᵀ + b1) */
    XF_OP_FF2,         /* out [N][D] = in0 · W2ᵀ (bias added by the next op); which != 0:
                          fused with the residual op, as XF_OP_OPROJ */
    XF_OP_POOL,        /* from in0 (final hidden [N][D]): the non-finite check, the hidden
                          copy, ws = [CLS] rows [B][D], CLS/mean pooling */
    XF_OP_POOLER,      /* pooled [B][D] = pooler([CLS] rows) (pooling "pooler") */
    XF_OP_POOL_END,    /* tanh of the pooler; L2 normalisation of pooled rows */
    XF_OP_HEAD_DENSE,  /* ws tmp [B][D] = the classifier's dense layer of the [CLS] rows */
    XF_OP_HEAD_TANH,   /* tmp = tanh(tmp) (BERT/RoBERTa heads) */
    XF_OP_CLS,         /* logits [B][n_labels] = classifier(tmp) */
    XF_OP_Q8,          /* int8 models: out = in0's rows quantised per token (kernels/qgemm.h) for
                          the Linear op `which` (XF_OP_QKV/OPROJ/FF1/FF2), which reads out as
                          its ws */
    XF_OP_COUNT
};

/* Which weights an LN/ADD op uses. */
enum xf_op_which { XF_W_LN1 = 1, XF_W_LN2, XF_W_FINAL };

typedef struct xf_plan_tensor {
    size_t bytes;          /* rounded up to XF_PLAN_ALIGN */
    size_t offset;         /* in the arena */
    int32_t first, last;   /* ops that write it first and read it last */
    int32_t op_made;       /* the op that produces it (== first) */
    const char *what;      /* "qkv", "ffn1", ... (static string, for tests and inspect) */
    int32_t layer;         /* -1 for non-layer tensors */
} xf_plan_tensor_t;

/* One attention run: consecutive sequences [s0, s1) with the same variant, in one layer. */
typedef struct xf_plan_run {
    int32_t s0, s1;
    const xf_attn_t *attn;
    xf_attn_plan pl;
    size_t ws_offset_thread;   /* offset of thread 0's scratch inside the run's ws tensor */
} xf_plan_run_t;

typedef struct xf_plan_op {
    enum xf_op_kind kind;
    int32_t layer;             /* -1 outside layers */
    int32_t in0, in1, out, ws; /* tensor indices or -1 */
    int32_t aux;               /* XF_OP_ATTN* of a stateful variant: the run's [n_seq] array of
                                  this layer's state pointers (XF_OP_ATTN_STATE); XF_OP_EMBED,
                                  XF_OP_LN, XF_OP_ADD_LN, XF_OP_FF1, a fused XF_OP_OPROJ or
                                  XF_OP_FF2 of an int8 model: the q8_act
                                  buffer its rows are also quantised into (for the next
                                  Linear); else -1 */
    int32_t which;             /* enum xf_op_which for LN/ADD ops and fused OPROJ/FF2 */
    int32_t run;               /* XF_OP_ATTN*: index into runs */
    /* > 0: each thread takes whole rows of the op, xf_fuse_rows(N, row_block, ith, nth) (a
     * Linear op: all columns of them, run as a one-thread GEMM on them; every output element
     * is the same whatever the split): a fused OPROJ/FF2, and the ops around a no_barrier
     * one. 0: the op's own split (a Linear op: the kernel's, by ith/nth). */
    int32_t row_block;
    int32_t quant_in;          /* 1 (an int8 row chain's OPROJ): the op quantises its own rows
                                  of in0 into its ws before its GEMM, in place of an XF_OP_Q8
                                  op and its barrier */
    int32_t no_barrier;        /* 1: no barrier after this op (the comment above the enum) */
} xf_plan_op_t;

/* Per-model prepared weights (model->prep): built by the loader once the weights are in place
 * (xf_plan_prep_get under prep_lock, see doc/threads.md), read-only afterwards. */
typedef struct xf_prep_layer {
    xf_gemm_w_t q, k, v, o, ff1, ff2;
    /* Q, K and V stacked into one GEMM (n = 3·da) with its bias, when the kernels pack their
     * weights or (int8) the quantised weights were stacked at load, qkv.q8 then set (either
     * way q, k, v are not prepared); qkv.packed == qkv.q8 == NULL otherwise. */
    xf_gemm_w_t qkv;
    float *qkv_b;
} xf_prep_layer_t;

typedef struct xf_prep {
    int32_t n_layer;
    xf_prep_layer_t *layers;
    xf_gemm_w_t pool, head_dense, cls;   /* n == 0 when absent */
    float *zeros;              /* a zero bias as wide as the widest Linear (absent biases) */
} xf_prep_t;

struct xf_plan {
    const xf_model_t *m;
    const xf_prep_t *prep;

    /* The planned batch shape. */
    int built;
    int n_threads;
    /* OPROJ and FFN2 fuse their residual op from this many tokens per thread on, or with one
     * thread (0: never);
     * XF_FUSE_ROWS, or the environment's XF_FUSE_ROWS at xf_plan_create (A/B runs); tests
     * set it between xf_plan_create and xf_plan_build. */
    int32_t fuse_rows;
    int32_t n_seq, n_tokens, max_len;
    int32_t *cu_len;           /* [n_seq+1] */
    int32_t *pos_ids;          /* [N] position ids (restart per sequence, + offset) */
    int32_t *zero_types;       /* [N] zeros, for models with types when the batch has none */
    const xf_attn_t **seq_attn; /* [n_seq] resolved variant per sequence */
    int32_t cap_seq, cap_tok;

    xf_plan_tensor_t *t;
    int32_t n_t, cap_t;
    xf_plan_op_t *ops;
    int32_t n_ops, cap_ops;
    xf_plan_run_t *runs;
    int32_t n_runs, cap_runs;
    int32_t runs_per_layer;    /* layer l's runs are [l·runs_per_layer, (l+1)·runs_per_layer) */
    int32_t *order;            /* scratch for the offset assignment */
    int32_t cap_order;

    int32_t final_hidden;      /* tensor holding the last hidden states */
    int32_t heads_ws;          /* tensor of head temporaries [2][B][D]: [CLS] rows, tmp */
    int counting;              /* build pass that only counts tensors and ops */
    int overflow;              /* an add went past the counted capacity (a planner bug) */
    xf_plan_op_t spare;        /* what add_op hands out when counting or past the capacity */
    xf_plan_stats_t stats;
};

/* Build the model's prepared weights once (the loader calls it before returning the model;
 * a no-op when present). Thread-safe (prep_lock). Returns 0, XF_ESHAPE or -ENOMEM. */
int xf_plan_prep_build(xf_model_t *m);
/* The model's prepared weights (built at load; a hand-built model gets them at its first
 * plan, under prep_lock). Returns 0, XF_ESHAPE or -ENOMEM. */
int xf_plan_prep_get(const xf_model_t *m, const xf_prep_t **out);

/* Rows [*r0, *r1) of n_tokens that thread ith of nth owns in an op with row_block = block:
 * blocks of `block` rows split evenly (fp32: 1, any row count runs at full speed; int8:
 * XF_PLAN_Q8_ROW_BLOCK, since the int8 kernels may read activation rows in groups of
 * XF_QGEMM_MALIGN from the first). */
void xf_fuse_rows(int32_t n_tokens, int32_t block, int ith, int nth, int *r0, int *r1);

/* Two selections are the same variant with the same parameters. */
int xf_plan_attn_same(const xf_attn_t *a, const xf_attn_t *b);
/* The variant of sequence b of batch (NULL entries: the model's default). */
const xf_attn_t *xf_plan_seq_attn(const xf_model_t *m, const xf_batch_t *batch, int32_t b);

#endif
