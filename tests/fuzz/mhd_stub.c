/* Stand-ins for the libmicrohttpd calls that the request parsers and reply helpers make, so the
 * request fuzz target runs routes.c and http.c without a daemon, sockets or threads. Replies are
 * kept (status and body) for the target's invariants; nothing else is emulated. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "fuzz_common.h"
#include "mhd_stub.h"

struct MHD_Response {
    char *data;
    size_t len;
};

unsigned fz_last_status;
char fz_last_body[512];

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (mode == MHD_RESPMEM_MUST_FREE) {
        r->data = buffer;
    } else {
        r->data = malloc(size + 1);
        if (!r->data) {
            free(r);
            return NULL;
        }
        memcpy(r->data, buffer, size);
    }
    r->len = size;
    return r;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *r, const char *h, const char *v)
{
    (void)r;
    if (!h || !v || strpbrk(v, "\r\n"))
        fz_fail("a response header value with CR/LF");
    return MHD_YES;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *c, unsigned int status,
                                   struct MHD_Response *r)
{
    (void)c;
    if (fz_last_status)
        fz_fail("two responses queued for one request");
    fz_last_status = status;
    size_t n = r->len < sizeof fz_last_body - 1 ? r->len : sizeof fz_last_body - 1;
    memcpy(fz_last_body, r->data, n);
    fz_last_body[n] = '\0';
    return MHD_YES;
}

void MHD_destroy_response(struct MHD_Response *r)
{
    if (!r)
        return;
    free(r->data);
    free(r);
}

void MHD_suspend_connection(struct MHD_Connection *c)
{
    (void)c;
}

const char *MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind k,
                                        const char *key)
{
    (void)c;
    (void)k;
    (void)key;
    return NULL;
}

int MHD_get_connection_values(struct MHD_Connection *c, enum MHD_ValueKind k,
                              MHD_KeyValueIterator it, void *cls)
{
    (void)c;
    (void)k;
    (void)it;
    (void)cls;
    return 0;
}

const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *c,
                                                        enum MHD_ConnectionInfoType t, ...)
{
    (void)c;
    (void)t;
    return NULL;
}

/* The daemon calls of http.c are never reached by the target. */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls,
                                    ...)
{
    (void)flags;
    (void)port;
    (void)apc;
    (void)apc_cls;
    (void)dh;
    (void)dh_cls;
    return NULL;
}

void MHD_stop_daemon(struct MHD_Daemon *d)
{
    (void)d;
}

const union MHD_DaemonInfo *MHD_get_daemon_info(struct MHD_Daemon *d,
                                                enum MHD_DaemonInfoType t, ...)
{
    (void)d;
    (void)t;
    return NULL;
}
