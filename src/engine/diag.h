/* Engine-internal: filling xf_diag_t and logging through the embedder's callback.
 * Safe from any thread; never prints by itself. */
#ifndef XF_ENGINE_DIAG_H
#define XF_ENGINE_DIAG_H

#include <xformd/error.h>

/* Set diag (if non-NULL) to code and a formatted message; returns code so callers can write
 * `return xf_diag_set(diag, XF_EFORMAT, "%s: ...", file);`. */
int xf_diag_set(xf_diag_t *diag, int code, const char *fmt, ...) XF_PRINTF(3, 4);

/* Log through the callback set by xf_log_set(); no-op when none is set. */
void xf_log(enum xf_log_level level, const char *fmt, ...) XF_PRINTF(2, 3);

#endif
