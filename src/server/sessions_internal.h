/* Internal to the session files: sessions.c (lifecycle, the REST routes, the loop side) and
 * sessions_kserve.c (KServe v2 infer with Triton's sequence parameters, the session model's
 * metadata). A session operation (sjob_t), the sessions' state and the MHD-side helpers both
 * request shapes parse and reply with. */
#ifndef XF_SERVER_SESSIONS_INTERNAL_H
#define XF_SERVER_SESSIONS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>
#include <xformd/state.h>
#include <xformd/txl.h>

#include "server/http.h"
#include "server/jobs.h"
#include "server/server.h"
#include "server/session_store.h"
#include "server/sessions.h"


enum sop { SOP_SEGMENT = 1, SOP_GET, SOP_DELETE };

/* xformd:{model}:{scope}{id}: a model name up to 255 bytes (a directory's basename), the
 * API-key scope (23 + ':'), an id up to 128 bytes, NUL. A key that does not fit is refused,
 * never cut: two ids cut to one key would share a session. */
#define XF_SESSION_KEY_MAX 448

typedef struct squeue squeue_t;

typedef struct sjob {
    enum sop op;
    char key[XF_SESSION_KEY_MAX];
    int32_t *ids, n;
    unsigned want;
    int return_logprobs;
    int kserve, seq_start, seq_end;   /* KServe v2 infer with Triton sequence parameters */
    int64_t timeout_ms;               /* the client's timeout_ms, 0: request.timeout_ms */
    xf_server_t *srv;
    xf_job_t *job;
    squeue_t *q;
    /* read */
    uint8_t *blob_in;
    size_t blob_in_len;
    char tag[XF_SSTORE_TAG_MAX];
    size_t tag_len;
    int64_t ttl_ms;
    /* compute (thread pool) */
    uv_work_t work;
    int rc;
    char msg[256];
    int reset, created;
    xf_txl_result_t res;
    xf_txl_mem_stats_t st;
    /* an encoder whose model attention keeps state (txl, compressive): the segment computes
     * in the batcher as a job of its own (cj) carrying the session's state */
    int enc;
    xf_state_t *state;
    xf_state_stats_t est;
    xf_job_t *cj;
    uint8_t *blob_out;
    size_t blob_out_len;
    uint64_t t0, t_read, t_comp;
} sjob_t;

struct xf_sessions {
    xf_txl_t *model;            /* the Transformer-XL LM (session.model), or NULL */
    xf_state_def_t *enc;        /* the served encoder's attention state when its model
                                   attention is stateful, or NULL */
    xf_sstore_t *store;
    squeue_t *queues;           /* keys with work queued or running */
    int n_running;              /* operations started and not answered */
    int n_queues;               /* keys in queues */
    int gauge_queues;           /* sessions_active counts keys with work (Redis store) */
    enum xf_txl_dtype dtype;
    char keyscope[24];          /* "" or a hash of the API key + ':' */
};

/* The session dtypes' names, indexed by enum xf_txl_dtype (sessions.c). */
extern const char *const xf_sessions_dtype_names[];

/* ---- MHD side, sessions.c (documented at their definitions unless said here) ----------- */
/* 1 when id[0..n) is a session id: 1-128 bytes of [A-Za-z0-9._:-]. */
int xf_sessions_valid_id(const char *id, size_t n);
enum MHD_Result xf_sessions_parse_ids(xf_req_t *req, int32_t vocab_size, json_t *list,
                                      const char *where, sjob_t *sj);
int xf_sessions_want_output(sjob_t *sj, const char *w);
json_t *xf_sessions_parse_object(xf_req_t *req, enum MHD_Result *r);
enum MHD_Result xf_sessions_check_n(xf_req_t *req, const sjob_t *sj, const char *where);
enum MHD_Result xf_sessions_pick_model(xf_req_t *req, const char *name, sjob_t *sj);
enum MHD_Result xf_sessions_enc_text(xf_req_t *req, const char *text, size_t len,
                                     const char *where, sjob_t *sj);
enum MHD_Result xf_sessions_enc_no_logprobs(xf_req_t *req, const sjob_t *sj, const char *where);
enum MHD_Result xf_sessions_parse_timeout(xf_req_t *req, json_t *obj, sjob_t *sj);
enum MHD_Result xf_sessions_submit_sjob(xf_req_t *req, xf_job_t *j);
xf_job_t *xf_sessions_new_sjob(xf_req_t *req);
/* A JSON array of x[0..n), NaN as null. Ownership: new (json_decref), NULL when out of
 * memory. */
json_t *xf_sessions_float_array(const float *x, size_t n);

/* ---- sessions_kserve.c -------------------------------------------------------------------- */
/* A KServe v2 output tensor {name, datatype, shape, data}; takes shape and data. Ownership:
 * new (json_decref). */
json_t *xf_sessions_kserve_tensor(const char *name, const char *dt, json_t *shape, json_t *data);
/* MHD thread, after resume: the KServe v2 infer reply of a Transformer-XL segment. */
enum MHD_Result xf_sessions_respond_kserve(xf_req_t *req, sjob_t *sj, const xf_txl_info_t *ti);

#endif
