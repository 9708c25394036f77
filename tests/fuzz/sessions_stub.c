/* Stand-ins for the Transformer-XL session entry points that routes.c calls (sessions.c and
 * sessions_kserve.c need the libuv loop and hiredis, which the request fuzz target never
 * links): the target fuzzes the stateless routes as on a server without a session model, where
 * /v1/sessions/... is 404. */
#include "config.h"

#include "server/sessions.h"

enum xf_http_err xf_sessions_match(xf_req_t *req, const char *method, const char *url)
{
    (void)req, (void)method, (void)url;
    return XF_HE_NOT_FOUND;
}

enum MHD_Result xf_sessions_handle(xf_req_t *req)
{
    (void)req;
    return MHD_NO;
}

int xf_sessions_owns_model(const xf_server_t *s, const char *name)
{
    (void)s, (void)name;
    return 0;
}

enum MHD_Result xf_sessions_handle_kserve(xf_req_t *req)
{
    (void)req;
    return MHD_NO;
}

enum MHD_Result xf_sessions_respond(xf_req_t *req)
{
    (void)req;
    return MHD_NO;
}

const char *xf_sessions_model_name(const xf_server_t *s)
{
    (void)s;
    return NULL;
}

json_t *xf_sessions_model_meta(const xf_server_t *s)
{
    (void)s;
    return NULL;
}

int xf_sessions_encoder(const xf_server_t *s)
{
    (void)s;
    return 0;
}
