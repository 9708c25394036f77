/* Routes of DESIGN.md §6 (all but sessions): the route table, request parsing and validation,
 * tokenising into a job, and the replies in each API's shape. MHD threads only. */
#ifndef XF_SERVER_ROUTES_H
#define XF_SERVER_ROUTES_H

#include "server/http.h"

enum xf_route_id {
    XF_R_NONE = 0,
    XF_R_LIVE,         /* GET /v2/health/live */
    XF_R_READY,        /* GET /v2/health/ready */
    XF_R_MODEL_META,   /* GET /v2/models/{m} */
    XF_R_MODEL_READY,  /* GET /v2/models/{m}/ready */
    XF_R_INFER,        /* POST /v2/models/{m}/infer */
    XF_R_EMBEDDINGS,   /* POST /v1/embeddings */
    XF_R_EMBED,        /* POST /embed */
    XF_R_RERANK,       /* POST /rerank */
    XF_R_PREDICT,      /* POST /predict */
    XF_R_METRICS,      /* GET /metrics */
    XF_R_STATS,        /* GET /v1/stats */
    XF_R_SERVER_META,  /* GET /v2 (KServe server metadata) */
    XF_R_SESSION_SEGMENTS, /* POST /v1/sessions/{id}/segments (sessions.c) */
    XF_R_SESSION,      /* GET, DELETE /v1/sessions/{id} (sessions.c) */
    XF_R_COUNT
};

/* Route template used as a metrics label ("/v2/models/{m}/infer"; "other" for none). */
const char *xf_routes_label(int route);

/* Find the route of (method, url): sets req->route, req->api and req->model. Returns 0, or
 * the error class to answer (NOT_FOUND, METHOD_NOT_ALLOWED) + 1. */
int xf_routes_match(xf_req_t *req, const char *method, const char *url);
int xf_routes_has_body(int route);     /* POST routes */
int xf_routes_needs_auth(int route);   /* all but health and metrics */
int xf_routes_while_draining(int route); /* health, metrics, stats keep answering */

/* The final access-handler call with the whole body: answer at once or suspend with a job. */
enum MHD_Result xf_routes_handle(xf_req_t *req);
/* After the job's completion resumed the connection: build and queue the reply. */
enum MHD_Result xf_routes_respond(xf_req_t *req);

#endif
