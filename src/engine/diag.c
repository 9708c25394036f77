/* Engine diagnostics: xf_strerror, xf_diag_set and the log callback. No I/O of its own. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/diag.h"

static xf_log_fn log_fn;
static void *log_user;

static const char *const xf_error_names[] = {
    [0] = "malformed file or request",              /* XF_EFORMAT */
    [1] = "wrong tensor or batch shape",            /* XF_ESHAPE */
    [2] = "input longer than the model allows",     /* XF_ETOOLONG */
    [3] = "deadline exceeded",                      /* XF_EDEADLINE */
    [4] = "session store (Redis) failed",           /* XF_EREDIS */
    [5] = "not supported",                          /* XF_EUNSUPPORTED */
    [6] = "invalid parameter",                      /* XF_EPARAM */
    [7] = "not found",                              /* XF_ENOTFOUND */
    [8] = "result is not finite",                   /* XF_ENUMERIC */
};
_Static_assert(sizeof xf_error_names / sizeof xf_error_names[0] == XF_ENUMERIC - XF_EFORMAT + 1,
               "update xf_error_names");

const char *xf_strerror(int code)
{
    if (code == 0)
        return "success";
    if (code >= XF_EFORMAT && code <= XF_ENUMERIC)
        return xf_error_names[code - XF_EFORMAT];
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

int xf_diag_set(xf_diag_t *diag, int code, const char *fmt, ...)
{
    if (diag) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(diag->msg, sizeof diag->msg, fmt, ap);
        va_end(ap);
        diag->code = code;
    }
    return code;
}

void xf_log_set(xf_log_fn fn, void *user)
{
    log_fn = fn;
    log_user = user;
}

void xf_log(enum xf_log_level level, const char *fmt, ...)
{
    xf_log_fn fn = log_fn;
    char buf[1024];
    va_list ap;

    if (!fn)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fn(level, buf, log_user);
}
