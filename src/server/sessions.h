/* Transformer-XL sessions over HTTP (issue 11): POST /v1/sessions/{id}/segments,
 * GET /v1/sessions/{id}, DELETE /v1/sessions/{id}. Owns the session model, the store (in process
 * or Redis), the per-session FIFO (two operations on one session never run at once and never
 * reorder) and the compute of segments on libuv's thread pool. MHD threads: match, handle,
 * respond; everything else runs on the loop thread. */
#ifndef XF_SERVER_SESSIONS_H
#define XF_SERVER_SESSIONS_H

#include <jansson.h>
#include <uv.h>

#include "server/http.h"
#include "server/server.h"

typedef struct xf_sessions xf_sessions_t;

/* Load o->session_model and create the store on loop (before the loop thread runs). No-op
 * (s->sessions stays NULL) when session_model is empty. Returns 0 or a negative code with
 * diag filled. */
int xf_sessions_create(xf_server_t *s, uv_loop_t *loop, xf_diag_t *diag);
/* Loop thread, before the loop closes its handles: release the store (Redis connection). */
void xf_sessions_stop(xf_server_t *s);
/* After the loop closed: free the model and the rest. NULL sessions is a no-op. */
void xf_sessions_free(xf_server_t *s);

/* MHD thread: url starts with /v1/sessions/. Sets req->route and req->session. Returns
 * XF_HE_NONE, or the error to answer (NOT_FOUND, METHOD_NOT_ALLOWED, BAD_SESSION_ID). */
enum xf_http_err xf_sessions_match(xf_req_t *req, const char *method, const char *url);
/* MHD thread, final call: parse, tokenise, suspend and hand a job to the loop. */
enum MHD_Result xf_sessions_handle(xf_req_t *req);
/* MHD thread: 1 when name is the session model's served name (KServe infer goes to sessions). */
int xf_sessions_owns_model(const xf_server_t *s, const char *name);
/* Any thread: 1 when the served encoder's model attention keeps state (txl, compressive), so
 * it has sessions too (KServe infer with parameters.sequence_id comes here). */
int xf_sessions_encoder(const xf_server_t *s);
/* Any thread: the session model's served name, or NULL when sessions are off. Ownership:
 * borrowed, valid while the server lives. */
const char *xf_sessions_model_name(const xf_server_t *s);
/* MHD thread: the KServe v2 model metadata of the session model (name, versions, platform,
 * inputs, outputs, parameters), or NULL when sessions are off or out of memory.
 * Ownership: new (json_decref). */
json_t *xf_sessions_model_meta(const xf_server_t *s);
/* MHD thread, final call of POST /v2/models/{txl}/infer, or of the stateful encoder's infer
 * with parameters.sequence_id: Triton's sequence_id / sequence_start / sequence_end parameters
 * name the session; the reply is a KServe v2 infer response (TXL: outputs logprobs,
 * next_token, optional hidden, pooled; encoder: pooled, optional hidden). */
enum MHD_Result xf_sessions_handle_kserve(xf_req_t *req);
/* MHD thread, after resume: the reply. */
enum MHD_Result xf_sessions_respond(xf_req_t *req);

/* Loop thread: a session job arrived through the job queue. */
void xf_sessions_push(xf_server_t *s, xf_job_t *j);
/* Loop thread: 1 when no session operation is queued or running (drain). */
int xf_sessions_idle(const xf_server_t *s);

#endif
