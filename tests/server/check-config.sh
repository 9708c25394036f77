#!/bin/sh
# xformd --check-config on broken inputs (issue 12 item 7): a truncated safetensors file and an
# unknown model.attention variant fail with exit 2 naming the option and the file; start-up with
# an unknown variant is exit 2 too; a good model passes. Prints TAP.
b=${XF_BUILDDIR:-.}
xd="$b/xformd"
cli="$b/xformd-cli"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-cc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; [ -n "$2" ] && echo "$2" | sed 's/^/# /'; }
echo "1..6"
if [ ! -x "$xd" ] || [ ! -x "$cli" ]; then
    for i in 1 2 3 4 5 6; do echo "not ok $i - xformd or xformd-cli not built in $b"; done
    exit 1
fi
m="$tmp/tiny"
"$cli" mkmodel --tiny --seed 3 --out "$m" >/dev/null 2>&1
out=$("$xd" --check-config --model.dir "$m" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "a good model passes"; else nok "a good model passes" "rc $rc: $out"; fi

cp -r "$m" "$tmp/trunc"
size=$(wc -c < "$m/model.safetensors")
head -c $((size / 2)) "$m/model.safetensors" > "$tmp/trunc/model.safetensors"
out=$("$xd" --check-config --model.dir "$tmp/trunc" 2>&1); rc=$?
if [ $rc -eq 2 ] && echo "$out" | grep -q "model.dir" && echo "$out" | grep -q "safetensors"
then ok "truncated safetensors: exit 2 naming model.dir and the file"
else nok "truncated safetensors: exit 2 naming model.dir and the file" "rc $rc: $out"; fi

out=$("$xd" --check-config --model.dir "$m" --model.attention '{"variant":"nosuch"}' 2>&1)
rc=$?
if [ $rc -eq 2 ] && echo "$out" | grep -q "model.attention"
then ok "unknown attention variant: exit 2 naming model.attention"
else nok "unknown attention variant: exit 2 naming model.attention" "rc $rc: $out"; fi

out=$("$xd" --check-config --model.attention '{"variant":"window","window":-3}' 2>&1); rc=$?
if [ $rc -eq 2 ] && echo "$out" | grep -q "model.attention"
then ok "bad attention parameter: exit 2 naming model.attention"
else nok "bad attention parameter: exit 2 naming model.attention" "rc $rc: $out"; fi

out=$("$xd" --http.port 0 --model.dir "$m" --model.attention '{"variant":"nosuch"}' 2>&1)
rc=$?
if [ $rc -eq 2 ] && echo "$out" | grep -q "model.attention"
then ok "start-up with an unknown variant: exit 2 naming model.attention"
else nok "start-up with an unknown variant: exit 2 naming model.attention" "rc $rc: $out"; fi

# a model directory that does not exist: start-up fails naming it, the fault said once
out=$("$xd" --http.port 0 --model.dir "$tmp/none" 2>&1); rc=$?
k=$(echo "$out" | grep -o "No such file or directory" | wc -l)
if [ $rc -eq 1 ] && echo "$out" | grep -q "model: $tmp/none" && [ "$k" -eq 1 ]
then ok "start-up with a missing model directory: exit 1 naming it once"
else nok "start-up with a missing model directory: exit 1 naming it once" "rc $rc: $out"; fi
exit $failed
