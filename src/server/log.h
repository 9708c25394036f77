/* Server logging: levelled, timestamped lines to stderr or to a log file that SIGHUP reopens.
 * Any thread may log; one mutex (a leaf, rank 9: held only around one fwrite) serialises lines.
 * The engine's xf_log_set() callback is routed here too. */
#ifndef XF_SERVER_LOG_H
#define XF_SERVER_LOG_H

#include <xformd/error.h>

/* Open the log: level is the most verbose level written; path NULL or "" or "-" means stderr.
 * Returns 0 or a negative errno (the file could not be opened: logging stays on stderr). */
int xf_log_open(enum xf_log_level level, const char *path);
/* Reopen the log file (after logrotate moved it). No-op for stderr. Returns 0 or -errno. */
int xf_log_reopen(void);
void xf_log_close(void);
void xf_log_set_level(enum xf_log_level level);
/* Parse "error"|"warn"|"info"|"debug"; returns 0 or -EINVAL. */
int xf_log_parse_level(const char *s, enum xf_log_level *out);

/* Write one line "2026-01-01T00:00:00.123Z info  msg". */
void xf_log_msg(enum xf_log_level level, const char *fmt, ...) XF_PRINTF(2, 3);

#define XF_LOGE(...) xf_log_msg(XF_LOG_ERROR, __VA_ARGS__)
#define XF_LOGW(...) xf_log_msg(XF_LOG_WARN, __VA_ARGS__)
#define XF_LOGI(...) xf_log_msg(XF_LOG_INFO, __VA_ARGS__)
#define XF_LOGD(...) xf_log_msg(XF_LOG_DEBUG, __VA_ARGS__)

#endif
