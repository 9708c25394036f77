#!/bin/sh
# LOG_COMPILER for every test: runs the test and rewrites cmocka 1.1's TAP line for a skipped
# test, "not ok N # SKIP name", into the valid TAP "ok N # SKIP name" (Automake's tap-driver
# counts a "not ok" as a failure whatever its directive). Keeps the test's exit status, except
# that a test whose only "failures" were skips exits 0 (cmocka 1.1 counts skips as failures).
status_file=$(mktemp "${TMPDIR:-/tmp}/xf-tap.XXXXXX") || exit 99
out_file=$(mktemp "${TMPDIR:-/tmp}/xf-tap.XXXXXX") || exit 99
{ "$@"; echo $? > "$status_file"; } | tee "$out_file" |
    sed -e 's/^not ok \([0-9][0-9]*\) # SKIP/ok \1 # SKIP/'
st=$(cat "$status_file")
if [ "$st" != 0 ] && ! grep -q '^not ok [0-9]*\( -\| [^#]\|$\)' "$out_file" &&
   ! grep -q '^not ok [0-9]* #[^S]' "$out_file" && grep -q '^not ok [0-9]* # SKIP' "$out_file"; then
    st=0
fi
rm -f "$status_file" "$out_file"
exit "$st"
