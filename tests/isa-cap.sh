#!/bin/sh
# LOG_COMPILER for tests/isa/*.cap: each file holds one line "CAP PROGRAM" (PROGRAM a path
# under the build directory). Runs PROGRAM with XF_CPU=CAP, so that the AVX2 and portable
# paths are exercised on machines whose best ISA is higher (make check also runs every program
# once at the CPU's best ISA). Caps only go down: on a CPU without AVX2 and FMA the avx2 runs
# are skipped with a TAP "1..0 # SKIP".
# Usage: isa-cap.sh FILE
read -r cap bin < "$1" || { echo "Bail out! isa-cap.sh: cannot read $1"; exit 99; }
here=$(dirname "$0")
if [ "$cap" = avx2 ] && ! { grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; }; then
    echo "1..0 # SKIP XF_CPU=avx2: this CPU has no AVX2 + FMA"
    exit 0
fi
prog="${XF_BUILDDIR:-.}/$bin"
if [ ! -x "$prog" ]; then
    echo "Bail out! isa-cap.sh: $prog is not built"
    exit 99
fi
echo "# XF_CPU=$cap $bin"
XF_CPU=$cap
export XF_CPU
exec "$here/tap-skip.sh" "$prog"
