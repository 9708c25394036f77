/* A small blocking HTTP/1.1 client over loopback for the server integration tests: one
 * request per call on a given or fresh connection, Content-Length bodies (what xformd sends),
 * receive timeout so a hung server fails the test instead of hanging it. */
#ifndef XF_TEST_HTTP_CLIENT_H
#define XF_TEST_HTTP_CLIENT_H

#include <stddef.h>

typedef struct hc_resp {
    int status;            /* 0 when no response could be read */
    char head[8192];       /* status line and headers, NUL-terminated */
    char *body;            /* NUL-terminated, malloc'd */
    size_t len;
} hc_resp_t;

/* Connect to 127.0.0.1:port; returns the fd or -1. */
int hc_connect(int port);
/* Send raw bytes. Returns 0 or -1. */
int hc_send(int fd, const void *p, size_t n);
/* Read one response from fd. Returns 0 or -1 (closed, timeout, malformed). */
int hc_read(int fd, hc_resp_t *r);
/* One request on fd (keep-alive). extra: additional header lines each ending in \r\n, or NULL.
 * body may be NULL. Adds Content-Type: application/json when a body is given and extra has
 * no Content-Type. Returns 0 or -1. */
int hc_request(int fd, const char *method, const char *path, const char *extra,
               const char *body, size_t len, hc_resp_t *r);
/* Connect, request, close. */
int hc_do(int port, const char *method, const char *path, const char *extra, const char *body,
          hc_resp_t *r);
/* Value of a response header (case-insensitive name) copied into buf, or NULL. */
const char *hc_header(const hc_resp_t *r, const char *name, char *buf, size_t len);
void hc_free(hc_resp_t *r);

#endif
