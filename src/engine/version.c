/* xf_version(): the library's version string, from configure (PACKAGE_VERSION). */
#include "config.h"

#include <xformd/forward.h>

const char *xf_version(void)
{
    return PACKAGE_VERSION;
}
