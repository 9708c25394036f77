/* Routes of DESIGN.md §6 (all but sessions): the route table, request parsing and validation,
 * tokenising into a job, and the replies in each API's shape (routes.c; TEI's routes in
 * routes_tei.c, KServe v2's in routes_kserve.c). MHD threads only. */
#ifndef XF_SERVER_ROUTES_H
#define XF_SERVER_ROUTES_H

#include "server/http.h"

/* One id per row of routes.def, in its order; XF_R_NONE is "no route" (label "other"). */
enum xf_route_id {
    XF_R_NONE = 0,
#define XF_ROUTE(id, method, path, api, auth, body, handler, reply) XF_R_##id,
#include "server/routes.def"
#undef XF_ROUTE
    /* Transformer-XL sessions: matched by sessions.c before the table (ids up to 128 bytes,
     * DELETE), their rows appended to the table in routes.c */
    XF_R_SESSION_SEGMENTS, /* POST /v1/sessions/{id}/segments */
    XF_R_SESSION,          /* GET, DELETE /v1/sessions/{id} */
    XF_R_COUNT
};

/* Route template used as a metrics label ("/v2/models/{m}/infer"; "other" for none). Static
 * storage. Any thread. */
const char *xf_routes_label(int route);

/* Find the row of (method, url): sets req->route, req->api, req->model and req->version.
 * Returns XF_HE_NONE, or the error class to answer: XF_HE_NOT_FOUND (req->api is then the API
 * of the route the path most resembles) or XF_HE_METHOD_NOT_ALLOWED (req->route is the row
 * whose path matched). MHD thread. */
enum xf_http_err xf_routes_match(xf_req_t *req, const char *method, const char *url);
int xf_routes_has_body(int route);       /* BODY JSON: a body is read before the handler */
int xf_routes_needs_auth(int route);     /* AUTH: the API key applies */
int xf_routes_while_draining(int route); /* routes without a body keep answering */
/* The methods a 405 names in Allow for route's path ("GET", "POST" or "GET, POST"). */
const char *xf_routes_allow(int route);

/* The access-log line of a finished request (log.access): route template, status, texts,
 * tokens, queue and compute milliseconds (0 when no job ran), total milliseconds. MHD thread,
 * in the completed callback. */
void xf_routes_log_access(const xf_req_t *req, int status, double seconds);

/* The final access-handler call with the whole body: answer at once or suspend with a job. */
enum MHD_Result xf_routes_handle(xf_req_t *req);
/* After the job's completion resumed the connection: build and queue the reply. */
enum MHD_Result xf_routes_respond(xf_req_t *req);

#endif
