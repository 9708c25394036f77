/* Cross-origin requests from browsers (CORS, the Fetch standard): which origins
 * http.cors_allow_origin lets read the answers (http.c adds the Access-Control-* headers and
 * answers the preflights). Off by default: without it a browser page on another origin cannot
 * read what xformd answers. */
#ifndef XF_SERVER_CORS_H
#define XF_SERVER_CORS_H

#include <stddef.h>

/* Checks an http.cors_allow_origin value: empty (off), "*" (any origin) or a comma-separated
 * list of origins "scheme://host[:port]" (http or https, no path). Returns 0, or -1 with the
 * reason in err. */
int xf_cors_check(const char *list, char *err, size_t errlen);

/* The Access-Control-Allow-Origin value for a request whose Origin header is origin: "*" when
 * the list is "*", origin itself when the list names it (ASCII case-insensitively), else NULL
 * (also when list is empty or origin NULL). */
const char *xf_cors_allow(const char *list, const char *origin);

/* Response headers a browser script may read besides the CORS-safelisted ones (the retry hint
 * and TEI's timing headers), request headers a preflight may ask for (the JSON body's type and
 * the API key), and how long a browser may cache a preflight's answer (s). */
#define XF_CORS_EXPOSE "Retry-After, x-compute-type, x-compute-time, x-total-time, " \
                       "x-compute-characters, x-compute-tokens, x-tokenization-time, " \
                       "x-queue-time, x-inference-time"
#define XF_CORS_HEADERS "Content-Type, Authorization"
#define XF_CORS_MAX_AGE "600"

#endif
