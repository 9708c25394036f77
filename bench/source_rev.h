/* The source revision every benchmark header line names (STYLE.md §9). */
#ifndef XF_BENCH_SOURCE_REV_H
#define XF_BENCH_SOURCE_REV_H

#include <stddef.h>

/* $XF_GIT_REV when set (a build from an exported snapshot), else `git rev-parse --short HEAD`
 * in the source tree (-DXF_SRCDIR=...), else "unknown"; written into buf. */
void bench_source_rev(char *buf, size_t len);

#endif
