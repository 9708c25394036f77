/* The source revision for benchmark headers (see source_rev.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source_rev.h"

#define XF_STR2(x) #x
#define XF_STR(x) XF_STR2(x)
#ifdef XF_SRCDIR
#define XF_SRCDIR_STR XF_STR(XF_SRCDIR)
#else
#define XF_SRCDIR_STR "."
#endif

void bench_source_rev(char *buf, size_t len)
{
    const char *env = getenv("XF_GIT_REV");
    if (env) {
        snprintf(buf, len, "%s", env);
        return;
    }
    snprintf(buf, len, "unknown");
    FILE *p = popen("git -C '" XF_SRCDIR_STR "' rev-parse --short HEAD 2>/dev/null", "r");
    if (p) {
        if (fgets(buf, (int)len, p))
            buf[strcspn(buf, "\n")] = '\0';
        pclose(p);
    }
}
