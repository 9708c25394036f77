/* xformd public API: error codes, diagnostics, logging and the export macro.
 * Every function that can fail returns 0 or a negative code: negated errno (-EINVAL, -ENOMEM,
 * -EIO, ...) or one of the XF_E* codes below, which sit under the errno range.
 * Thread-safety: everything here may be called from any thread. */
#ifndef XFORMD_ERROR_H
#define XFORMD_ERROR_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define XF_API __attribute__((visibility("default")))
#define XF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define XF_API
#define XF_PRINTF(f, a)
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum xf_error {
    XF_EFORMAT = -10000,   /* a file or request is malformed */
    XF_ESHAPE,             /* a tensor or batch has the wrong shape */
    XF_ETOOLONG,           /* an input is longer than the model allows */
    XF_EDEADLINE,          /* a deadline passed before the work finished */
    XF_EREDIS,             /* the Redis session store failed */
    XF_EUNSUPPORTED,       /* valid, but not supported by this build or model */
    XF_EPARAM,             /* an option or parameter is out of range or unknown */
    XF_ENOTFOUND,          /* a named thing (file, tensor, variant, token) does not exist */
    XF_ENUMERIC,           /* a result is not finite (NaN/Inf) */
    XF_ERROR_MIN = XF_EFORMAT
};

/* Name of a code: "model file is malformed", or strerror() text for -errno.
 * Ownership: borrowed, static storage. */
XF_API const char *xf_strerror(int code);

/* A diagnostic filled by functions that read files or requests: the message names the file,
 * tensor, field or byte offset ("model.safetensors: encoder.layer.3.attention.self.query.weight:
 * shape [768,767], want [768,768]"). Callers own the storage; a NULL diag is allowed. */
typedef struct xf_diag {
    int code;              /* the code the function returned, 0 when none */
    char msg[512];         /* NUL-terminated, "" when none */
} xf_diag_t;

/* Log levels, most severe first. */
enum xf_log_level { XF_LOG_ERROR = 0, XF_LOG_WARN, XF_LOG_INFO, XF_LOG_DEBUG };

/* The engine never prints; it logs through this callback (default: none).
 * The callback may be called from any engine thread and must be thread-safe. */
typedef void (*xf_log_fn)(enum xf_log_level level, const char *msg, void *user);
XF_API void xf_log_set(xf_log_fn fn, void *user);

#ifdef __cplusplus
}
#endif
#endif
