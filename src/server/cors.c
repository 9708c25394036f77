/* CORS: checking http.cors_allow_origin and matching a request's Origin (see cors.h). */
#include "config.h"

#include "server/cors.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The next entry of a comma-separated list at *p: [*q, *q + *n), trimmed of blanks; *p moves
 * past it (NULL after the last one). Returns 0 once the list is done. */
static int next_entry(const char **p, const char **q, size_t *n)
{
    if (!*p)
        return 0;
    const char *e = strchr(*p, ',');
    *q = *p;
    *n = e ? (size_t)(e - *p) : strlen(*p);
    *p = e ? e + 1 : NULL;
    while (*n > 0 && (**q == ' ' || **q == '\t')) {
        (*q)++;
        (*n)--;
    }
    while (*n > 0 && ((*q)[*n - 1] == ' ' || (*q)[*n - 1] == '\t'))
        (*n)--;
    return 1;
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
    const char *p = list, *q;
    size_t n;
    while (next_entry(&p, &q, &n)) {
        if (!valid_origin(q, n)) {
            snprintf(err, errlen, "http.cors_allow_origin: '%.*s' is not an origin "
                     "(scheme://host[:port], http or https, no path; or '*' alone)",
                     (int)(n > 100 ? 100 : n), q);
            return -1;
        }
    }
    return 0;
}

const char *xf_cors_allow(const char *list, const char *origin)
{
    if (!list || !list[0] || !origin || !origin[0])
        return NULL;
    if (!strcmp(list, "*"))
        return "*";
    size_t on = strlen(origin);
    const char *p = list, *q;
    size_t n;
    while (next_entry(&p, &q, &n))
        if (n == on && !strncasecmp(q, origin, n))
            return origin;
    return NULL;
}
