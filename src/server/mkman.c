/* xformd-mkman: writes the xformd(1) man page generated from conf.def to stdout, at build
 * time (`make` turns it into xformd.1, `make install` installs it). Build tool only. */
#include "config.h"

#include <stdio.h>

#include "server/conf.h"

int main(void)
{
    if (xf_conf_write_man(stdout, PACKAGE_VERSION) != 0 || fflush(stdout) != 0) {
        fputs("xformd-mkman: write error\n", stderr);
        return 1;
    }
    return 0;
}
