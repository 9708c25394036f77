/* sd_notify without libsystemd: one AF_UNIX datagram per call to $NOTIFY_SOCKET, a filesystem
 * path or "@name" for the abstract namespace (the protocol of systemd's
 * man/notify-selfcontained-example.c). Any thread; nothing is cached between calls. */
#include "config.h"

#include "server/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int xf_notify(const char *state)
{
    if (!state || !*state)
        return -EINVAL;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    /* Only absolute paths and abstract names are valid notify sockets. */
    if (path[0] != '/' && path[0] != '@')
        return -EINVAL;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len < 2 || len > sizeof(sa.sun_path) - (path[0] == '/' ? 1 : 0))
        return len < 2 ? -EINVAL : -ENAMETOOLONG;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';   /* abstract: leading NUL, length counts exactly the name */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                  (path[0] == '/' ? 1 : 0));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    size_t n = strlen(state);
    ssize_t w;
    do {
        w = sendto(fd, state, n, MSG_NOSIGNAL, (const struct sockaddr *)&sa, salen);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        rc = -errno;
    else if ((size_t)w != n)
        rc = -EPROTO;
    else
        rc = 1;
    close(fd);
    return rc;
}

int xf_notify_ready(void)
{
    return xf_notify("READY=1");
}

int xf_notify_stopping(void)
{
    return xf_notify("STOPPING=1");
}

int xf_notify_watchdog(void)
{
    return xf_notify("WATCHDOG=1");
}

int xf_notify_status(const char *fmt, ...)
{
    char buf[512];
    int off = snprintf(buf, sizeof(buf), "STATUS=");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + off, sizeof(buf) - (size_t)off, fmt, ap);
    va_end(ap);
    /* STATUS is one line: a newline would start a new assignment. */
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return xf_notify(buf);
}

int xf_notify_watchdog_usec(uint64_t *usec)
{
    *usec = 0;
    const char *pid = getenv("WATCHDOG_PID");
    if (pid && *pid) {
        char *end;
        errno = 0;
        unsigned long long p = strtoull(pid, &end, 10);
        if (errno || *end || p != (unsigned long long)getpid())
            return 0;
    }
    const char *us = getenv("WATCHDOG_USEC");
    if (!us || !*us)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(us, &end, 10);
    if (errno || *end || v == 0 || us[0] == '-')
        return 0;
    *usec = v;
    return 1;
}
