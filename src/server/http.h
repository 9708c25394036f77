/* HTTP front end on libmicrohttpd: the daemon (epoll internal thread + pool, suspend/resume),
 * per-request state, body accumulation with limits, and every reply helper. MHD threads run
 * the access handler: body, routing, auth, then routes.c parses, validates, tokenises and
 * suspends. The only sender of error bodies is xf_http_reply_error(). */
#ifndef XF_SERVER_HTTP_H
#define XF_SERVER_HTTP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "server/jobs.h"

struct xf_server;

/* Error body shapes, one per API family. */
enum xf_api {
    XF_API_OWN = 0,    /* {"error":{"code","message"}} */
    XF_API_OPENAI,     /* {"error":{"message","type","param","code"}} */
    XF_API_TEI,        /* {"error","error_type"} */
    XF_API_KSERVE      /* {"error":"..."} */
};

enum xf_req_state {
    XF_REQ_NEW = 0,
    XF_REQ_BODY,       /* accumulating the body */
    XF_REQ_SUSPENDED,  /* job queued, connection suspended */
    XF_REQ_REPLIED     /* a response is queued */
};

/* A growable byte buffer for response bodies. */
typedef struct xf_buf {
    char *p;
    size_t len, cap;
    int oom;           /* an append failed: the content is incomplete */
} xf_buf_t;
void xf_buf_putn(xf_buf_t *b, const char *s, size_t n);
void xf_buf_puts(xf_buf_t *b, const char *s);
void xf_buf_printf(xf_buf_t *b, const char *fmt, ...) XF_PRINTF(2, 3);
/* A JSON string literal with escapes. */
void xf_buf_json_str(xf_buf_t *b, const char *s, size_t n);
/* A float as a JSON number (non-finite values become 0, which the engine never returns). */
void xf_buf_float(xf_buf_t *b, float v);
void xf_buf_free(xf_buf_t *b);

/* Per-request state: allocated on the first access-handler call into *req_cls, freed in the
 * completed callback. Owned by the MHD thread handling the connection, except `job` while the
 * connection is suspended (then the loop and a worker own the job). */
typedef struct xf_req {
    struct xf_server *srv;
    struct MHD_Connection *conn;
    enum xf_req_state state;
    int route;             /* enum xf_route_id (routes.h) */
    enum xf_api api;
    char model[128];       /* {m} of the route's pattern, NUL-terminated ("" when none) */
    char version[32];      /* {v} of the route's pattern ("" when none) */
    char *body;
    size_t body_len, body_cap;
    enum xf_http_err pending_err; /* to answer on the final call, or XF_HE_NONE */
    int close;             /* reply with Connection: close (framing errors, buffer budget) */
    int preflight;         /* a CORS preflight (OPTIONS) on a route: answered 204 (cors.h) */
    int reading;           /* counted in srv->reading: header in, job not yet queued */
    size_t reserved;       /* bytes of http.max_buffered_bytes held; released once the body is
                              parsed or dropped */
    char pending_msg[320];   /* the message of pending_err */
    const char *err_param; /* OpenAI errors: the offending request field ("dimensions"), set by
                              routes.c before replying; NULL gives "param": null. Static or
                              borrowed from req->root. */
    int status;            /* HTTP status of the queued response (metrics) */
    uint64_t start_ns;
    xf_job_t *job;
    json_t *root;          /* the parsed request, kept until completion (texts for replies) */
    /* what the reply needs, filled by the route's parser */
    int n_inputs;
    int usage_tokens;
    int base64;
    int dimensions;        /* OpenAI, TEI /embed: truncate to this many dims (0: all) */
    int normalize;         /* TEI /embed: normalise (after the dimensions cut) */
    int raw_scores;
    int return_text;
    int batch_form;        /* TEI /predict: the request was a batch */
    int want_logits_out;   /* KServe: logits output requested */
    int want_embed_out;
    int attn_fallback;     /* the request's attention variant ran dense for some input: the
                              reply says so (X-Xformd-Attention-Fallback: dense) */
    int compute_headers;   /* a 200 reply carries TEI's x-compute-* / x-*-time headers (the
                              routes TEI sends them on: /embed, /embed_all, /predict, /rerank,
                              /similarity, POST /, OpenAI embeddings) */
    uint64_t tok_ns;       /* time spent tokenising the request's texts */
    long long chars;       /* characters (code points) of its texts, token ids counted one each,
                              as TEI's x-compute-characters */
    char session[132];     /* {id} of /v1/sessions/{id}, validated (sessions.c) */
    int session_delete;    /* DELETE /v1/sessions/{id} */
} xf_req_t;

typedef struct xf_http xf_http_t;

/* Start the MHD daemon on o->listen_addr:o->port for server s. Returns 0 or a negative code.
 * Ownership: *out is new, free with xf_http_stop(). */
int xf_http_start(struct xf_server *s, xf_http_t **out, char *err, size_t errlen);
/* The port bound (after port 0). */
int xf_http_port(const xf_http_t *h);
/* Stop serving new connections (the drain, once every job is answered): from now on each new
 * connection is closed as soon as MHD accepts it, without a reply (counted as
 * connections_closed_total{reason="draining"}); connections already open keep being served.
 * The listening socket stays open until xf_http_stop(). Never calls MHD_quiesce_daemon() (see
 * http.c). Any thread. NULL is a no-op. */
void xf_http_refuse_connections(xf_http_t *h);
/* Close (shutdown) every connection past its header or body deadline (http.header_timeout_ms,
 * http.body_timeout_ms, counted from the phase's start, never reset by a byte), and every one
 * whose client sent a FIN before its body was complete. Loop thread, from a timer. Returns how
 * many were closed; *n_header / *n_body / *n_fin (may be NULL) split them. NULL is a no-op. */
int xf_http_expire(xf_http_t *h, uint64_t now_ns, int *n_header, int *n_body, int *n_fin);
/* Stop the daemon: closes every connection; joins MHD's threads. NULL is a no-op. */
void xf_http_stop(xf_http_t *h);

/* Reply helpers (MHD thread, inside the access handler). They set req->status and
 * req->state; each returns the MHD_queue_response result. */
enum MHD_Result xf_http_reply_error(xf_req_t *req, enum xf_http_err code, int retry_after_s,
                                    const char *fmt, ...) XF_PRINTF(4, 5);
/* Takes ownership of body (a json_t reference). */
enum MHD_Result xf_http_reply_json(xf_req_t *req, unsigned status, json_t *body);
/* Takes ownership of buf's storage. */
enum MHD_Result xf_http_reply_buf(xf_req_t *req, unsigned status, const char *content_type,
                                  xf_buf_t *buf);

/* Status and name of an error class. */
unsigned xf_http_err_status(enum xf_http_err code);
const char *xf_http_err_name(enum xf_http_err code);

#endif
