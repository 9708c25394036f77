/* Loopback HTTP/1.1 test client (see http_client.h). */
#include "config.h"

#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int hc_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { .tv_sec = 30, .tv_usec = 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int hc_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int hc_read(int fd, hc_resp_t *r)
{
    memset(r, 0, sizeof *r);
    size_t h = 0;
    /* Byte by byte up to the blank line: simple, and never reads past this response. */
    while (h + 1 < sizeof r->head) {
        ssize_t n = recv(fd, r->head + h, 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        h++;
        if (h >= 4 && memcmp(r->head + h - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    r->head[h] = '\0';
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    char v[64];
    size_t len = 0;
    if (hc_header(r, "Content-Length", v, sizeof v))
        len = (size_t)strtoull(v, NULL, 10);
    r->body = malloc(len + 1);
    if (!r->body)
        return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, r->body + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    r->body[len] = '\0';
    r->len = len;
    return 0;
}

int hc_request(int fd, const char *method, const char *path, const char *extra,
               const char *body, size_t len, hc_resp_t *r)
{
    char head[4096];
    int ct = extra && strcasestr(extra, "Content-Type:") != NULL;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s", method, path,
                     extra ? extra : "",
                     body && !ct ? "Content-Type: application/json\r\n" : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    if (hc_send(fd, head, (size_t)n) < 0)
        return -1;
    if (body && len && hc_send(fd, body, len) < 0)
        return -1;
    return hc_read(fd, r);
}

int hc_do(int port, const char *method, const char *path, const char *extra, const char *body,
          hc_resp_t *r)
{
    memset(r, 0, sizeof *r);
    int fd = hc_connect(port);
    if (fd < 0)
        return -1;
    int rc = hc_request(fd, method, path, extra, body, body ? strlen(body) : 0, r);
    close(fd);
    return rc;
}

const char *hc_header(const hc_resp_t *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r' && p[2] != '\0') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            if (vl >= len)
                vl = len - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

void hc_free(hc_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}
