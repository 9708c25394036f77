/* sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET (a path, or "@name" for an abstract
 * socket) in the systemd notify protocol (READY=1, STATUS=..., STOPPING=1, WATCHDOG=1).
 * Every function may be called from any thread; each call opens and closes its own socket. */
#ifndef XF_SERVER_NOTIFY_H
#define XF_SERVER_NOTIFY_H

#include <stdint.h>

#include <xformd/error.h>

/* Send `state` (one or more "KEY=value" lines) to $NOTIFY_SOCKET. Returns 1 when sent, 0 when
 * $NOTIFY_SOCKET is unset or empty (not run by systemd), or a negative errno (-EINVAL for a
 * malformed socket name, -ENAMETOOLONG, or the socket/sendmsg error). */
int xf_notify(const char *state);
/* "READY=1" (after model load, warm-up and listen). */
int xf_notify_ready(void);
/* "STATUS=<printf text>": a one-line human status shown by systemctl status. */
int xf_notify_status(const char *fmt, ...) XF_PRINTF(1, 2);
/* "STOPPING=1" (drain started). */
int xf_notify_stopping(void);
/* "WATCHDOG=1": send from a loop timer at half the interval, only while making progress. */
int xf_notify_watchdog(void);
/* The watchdog interval systemd asked for: $WATCHDOG_USEC when set, valid and (if
 * $WATCHDOG_PID is set) meant for this process. Returns 1 and *usec, or 0 (no watchdog,
 * *usec = 0). */
int xf_notify_watchdog_usec(uint64_t *usec);

#endif
