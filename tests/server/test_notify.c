/* sd_notify tests: a real AF_UNIX datagram socket (a path in a scratch directory, and an
 * abstract name) receives READY=1, STATUS=, STOPPING=1, WATCHDOG=1; unset, malformed and
 * dead sockets give 0 or a negative errno; $WATCHDOG_USEC/$WATCHDOG_PID are honoured. */
#include "config.h"

#include "../helpers/xf_test.h"
#include "server/notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Bind a datagram socket at path ("@name" = abstract) with a receive timeout. */
static int bind_dgram(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    assert_true(len < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, len);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    else
        salen++;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, salen), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void expect_msg(int fd, const char *want)
{
    char buf[600];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void run_protocol(const char *sock)
{
    int fd = bind_dgram(sock);
    assert_int_equal(setenv("NOTIFY_SOCKET", sock, 1), 0);
    assert_int_equal(xf_notify_ready(), 1);
    expect_msg(fd, "READY=1");
    assert_int_equal(xf_notify_status("loading %s\n(%d layers)", "model", 12), 1);
    expect_msg(fd, "STATUS=loading model (12 layers)");   /* one line: newline replaced */
    assert_int_equal(xf_notify_stopping(), 1);
    expect_msg(fd, "STOPPING=1");
    assert_int_equal(xf_notify_watchdog(), 1);
    expect_msg(fd, "WATCHDOG=1");
    assert_int_equal(xf_notify("READY=1\nSTATUS=serving"), 1);
    expect_msg(fd, "READY=1\nSTATUS=serving");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_path_socket(void **state)
{
    (void)state;
    char dir[512], path[700];
    assert_non_null(xf_test_tmpdir(dir, sizeof(dir), "notify"));
    snprintf(path, sizeof(path), "%s/notify.sock", dir);
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        /* The scratch dir is too deep for a socket path: use /tmp. */
        snprintf(path, sizeof(path), "/tmp/xf-notify-%d.sock", (int)getpid());
    }
    unlink(path);
    run_protocol(path);
    unlink(path);
    /* Nobody listening any more: a negative errno, not a crash. */
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    int rc = xf_notify_ready();
    assert_true(rc == -ENOENT || rc == -ECONNREFUSED);
    unsetenv("NOTIFY_SOCKET");
    xf_test_rmtree(dir);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof(name), "@xformd-test-notify-%d", (int)getpid());
    run_protocol(name);
}

static void test_unset_and_bad(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(xf_notify_ready(), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
    assert_int_equal(xf_notify_ready(), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", "relative/sock", 1), 0);
    assert_int_equal(xf_notify_ready(), -EINVAL);
    assert_int_equal(setenv("NOTIFY_SOCKET", "@", 1), 0);
    assert_int_equal(xf_notify_ready(), -EINVAL);
    char longp[300];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(setenv("NOTIFY_SOCKET", longp, 1), 0);
    assert_int_equal(xf_notify_ready(), -ENAMETOOLONG);
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(xf_notify(""), -EINVAL);
    assert_int_equal(xf_notify(NULL), -EINVAL);
}

static void test_watchdog_env(void **state)
{
    (void)state;
    uint64_t us = 99;
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(xf_notify_watchdog_usec(&us), 0);
    assert_true(us == 0);
    assert_int_equal(setenv("WATCHDOG_USEC", "30000000", 1), 0);
    assert_int_equal(xf_notify_watchdog_usec(&us), 1);
    assert_true(us == 30000000);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    assert_int_equal(xf_notify_watchdog_usec(&us), 1);
    snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    assert_int_equal(xf_notify_watchdog_usec(&us), 0);   /* meant for another process */
    unsetenv("WATCHDOG_PID");
    const char *bad[] = {"", "0", "-5", "12x", "99999999999999999999999"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(setenv("WATCHDOG_USEC", bad[i], 1), 0);
        us = 1;
        assert_int_equal(xf_notify_watchdog_usec(&us), 0);
        assert_true(us == 0);
    }
    unsetenv("WATCHDOG_USEC");
}

XF_TEST_MAIN(cmocka_unit_test(test_path_socket), cmocka_unit_test(test_abstract_socket),
             cmocka_unit_test(test_unset_and_bad), cmocka_unit_test(test_watchdog_env))
