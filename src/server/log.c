/* Server logging (see log.h). Lines are formatted outside the lock and written with one
 * fputs under it, so lines from different threads never interleave. */
#include "config.h"

#include "server/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* log_lock protects log_fp and log_path; rank 9 (a leaf: nothing is called while held). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_fp;            /* NULL: stderr */
static char *log_path;
static atomic_int log_level = XF_LOG_INFO;   /* relaxed: a level change may lag a line */

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int xf_log_parse_level(const char *s, enum xf_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (s && strcasecmp(s, level_names[i]) == 0) {
            *out = (enum xf_log_level)i;
            return 0;
        }
    }
    if (s && strcasecmp(s, "warning") == 0) {
        *out = XF_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

void xf_log_set_level(enum xf_log_level level)
{
    log_level = level;
}

static int open_path(const char *path, FILE **out)
{
    FILE *fp = fopen(path, "ae");
    if (!fp)
        return -errno;
    setvbuf(fp, NULL, _IOLBF, 0);
    *out = fp;
    return 0;
}

/* Takes fp (NULL: stderr) and, when set_path, path: swaps them in under the lock, then closes
 * and frees what they replace outside it. */
static void install(FILE *fp, int set_path, char *path)
{
    char *oldp = NULL;
    pthread_mutex_lock(&log_lock);
    FILE *old = log_fp;
    log_fp = fp;
    if (set_path) {
        oldp = log_path;
        log_path = path;
    }
    pthread_mutex_unlock(&log_lock);
    if (old)
        fclose(old);
    free(oldp);
}

int xf_log_open(enum xf_log_level level, const char *path)
{
    log_level = level;
    if (!path || !path[0] || strcmp(path, "-") == 0)
        return 0;
    FILE *fp = NULL;
    int rc = open_path(path, &fp);
    if (rc < 0)
        return rc;
    char *dup = strdup(path);
    if (!dup) {
        fclose(fp);
        return -ENOMEM;
    }
    install(fp, 1, dup);
    return 0;
}

int xf_log_reopen(void)
{
    char path[4096];
    pthread_mutex_lock(&log_lock);
    if (!log_path) {
        pthread_mutex_unlock(&log_lock);
        return 0;
    }
    snprintf(path, sizeof path, "%s", log_path);
    pthread_mutex_unlock(&log_lock);
    FILE *fp = NULL;
    int rc = open_path(path, &fp);
    if (rc < 0)
        return rc;
    install(fp, 0, NULL);
    return 0;
}

void xf_log_close(void)
{
    install(NULL, 1, NULL);
}

void xf_log_msg(enum xf_log_level level, const char *fmt, ...)
{
    if ((int)level > log_level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L,
                     level_names[(unsigned)level < 4 ? level : 3]);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    line[len] = '\0';
    pthread_mutex_lock(&log_lock);
    FILE *fp = log_fp ? log_fp : stderr;
    fputs(line, fp);
    fflush(fp);
    pthread_mutex_unlock(&log_lock);
}
