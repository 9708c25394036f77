#!/bin/sh
# Layout rule (STYLE.md §1): the engine never includes HTTP/loop/Redis headers, and the server
# and CLI see the engine only through <xformd/...>. Prints TAP.
src=${XF_SRCDIR:-$(dirname "$0")/..}
n=0; fail=0
check() { # description, grep pattern, files...
    desc=$1; pat=$2; shift 2
    n=$((n + 1))
    hits=$(grep -nE "$pat" "$@" 2>/dev/null)
    if [ -n "$hits" ]; then
        echo "not ok $n - $desc"; echo "$hits" | sed 's/^/# /'; fail=1
    else
        echo "ok $n - $desc"
    fi
}
echo "1..3"
check "engine and attention include no MHD, libuv or hiredis" \
    '#include *[<"](microhttpd|uv|hiredis|adapters/)' $(find "$src/src/engine" "$src/src/attention" -name '*.[ch]')
check "server and cli include no engine-internal headers" \
    '#include *"(\.\./)*(engine|attention)/' $(find "$src/src/server" "$src/src/cli" -name '*.[ch]' 2>/dev/null) /dev/null
check "engine never prints (no printf/fprintf/puts to stdio)" \
    '(^|[^a-z_])(printf|puts|fputs|perror) *\(|fprintf *\( *std(out|err)' $(find "$src/src/engine" "$src/src/attention" -name '*.c')
exit 0
