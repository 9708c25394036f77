/* CORS: checking http.cors_allow_origin and matching a request's Origin (see cors.h). */
#include "config.h"

#include "server/cors.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* One entry of the list, [p, p + n), trimmed of blanks. */
static void trim(const char **p, size_t *n)
{
    while (*n > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

static int valid_origin(const char *p, size_t n)
{
    size_t s = n >= 8 && !strncasecmp(p, "https://", 8) ? 8
             : n >= 7 && !strncasecmp(p, "http://", 7) ? 7 : 0;
    if (!s || s == n)
        return 0;
    for (size_t i = s; i < n; i++) {
        char c = p[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_';
        if (!ok)
            return 0;
    }
    return 1;
}

int xf_cors_check(const char *list, char *err, size_t errlen)
{
    if (!list || !list[0] || !strcmp(list, "*"))
        return 0;
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *q = p;
        trim(&q, &n);
        if (!valid_origin(q, n)) {
            snprintf(err, errlen, "http.cors_allow_origin: '%.*s' is not an origin "
                     "(scheme://host[:port], http or https, no path; or '*' alone)",
                     (int)(n > 100 ? 100 : n), q);
            return -1;
        }
        if (!e)
            return 0;
        p = e + 1;
    }
}

const char *xf_cors_allow(const char *list, const char *origin)
{
    if (!list || !list[0] || !origin || !origin[0])
        return NULL;
    if (!strcmp(list, "*"))
        return "*";
    size_t on = strlen(origin);
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *q = p;
        trim(&q, &n);
        if (n == on && !strncasecmp(q, origin, n))
            return origin;
        if (!e)
            return NULL;
        p = e + 1;
    }
}
