#!/bin/sh
# Multi-instance serving (issue 13; FastFormers runs several single-thread instances instead of
# one multi-thread one): engine.workers × engine.threads = 1×2 against 2×1 on a 2-core machine,
# fp32 and int8, on a mixed workload (70% short texts of 8–32 tokens, 30% passages of
# 129–256), closed loop with C clients through bench_serve, the daemon's default batcher
# policy (tokens). Runs interleave (round → quantisation → layout) and log the load average, so
# the 2×1 / 1×2 ratios come from neighbouring runs on a shared machine.
#   bench/serve_multi.sh [BUILDDIR] [MODELDIR]   (defaults: build/test, a fresh BERT-base demo)
#   XF_MULTI_ROUNDS (2) XF_MULTI_CLIENTS (4) XF_MULTI_DURATION (15 s) XF_MULTI_PORT (18941)
# Prints `multi ...` lines (bench_serve's key=value line with round, quantize, layout and
# loadavg in front), then `ratio` lines. Never run by make check.
set -eu
b=${1:-build/test}
model=${2:-}
rounds=${XF_MULTI_ROUNDS:-2}
clients=${XF_MULTI_CLIENTS:-4}
dur=${XF_MULTI_DURATION:-15}
port=${XF_MULTI_PORT:-18941}
mix="8-32:0.7,129-256:0.3"
[ -x "$b/bench/bench_serve" ] || { echo "serve_multi.sh: make bench first ($b/bench/bench_serve)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-multi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ -z "$model" ]; then
    model="$tmp/base"
    "$b/xformd-cli" mkmodel --out "$model" 2>/dev/null
fi
echo "# serve_multi cpu=\"$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')\" ncpu=$(nproc) clients=$clients duration_s=$dur lengths=$mix rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
for r in $(seq 1 "$rounds"); do
    for q in none int8; do
        for l in 1x2 2x1; do
            w=${l%x*} t=${l#*x}
            la=$(cut -d' ' -f1 /proc/loadavg)
            "$b/bench/bench_serve" --xformd "$b/xformd" --port "$port" --policies tokens \
                --clients "$clients" --duration "$dur" --warmup 3 --lengths "$mix" \
                --arg --model --arg "$model" --arg --engine.workers --arg "$w" \
                --arg --engine.threads --arg "$t" --arg --model.quantize --arg "$q" \
                --arg --log.level --arg warn 2>/dev/null |
                grep '^policy=' | sed "s/^/multi round=$r quantize=$q layout=$l loadavg=$la /" |
                tee -a "$tmp/runs.txt"
        done
    done
done
# 2×1 over 1×2 per round and quantisation (throughput up, latency down is better), medians.
awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       k = v["round"] " " v["quantize"]
       qps[k, v["layout"]] = v["achieved_qps"]; p50[k, v["layout"]] = v["p50_ms"]
       p99[k, v["layout"]] = v["p99_ms"]; keys[k] = 1 }
     END { for (k in keys) if ((k, "1x2") in qps && (k, "2x1") in qps && qps[k, "1x2"] > 0) {
             split(k, a, " ")
             printf "ratio round=%s quantize=%s qps_2x1/1x2=%.2f p50_2x1/1x2=%.2f p99_2x1/1x2=%.2f\n",
                    a[1], a[2], qps[k, "2x1"] / qps[k, "1x2"],
                    p50[k, "1x2"] > 0 ? p50[k, "2x1"] / p50[k, "1x2"] : 0,
                    p99[k, "1x2"] > 0 ? p99[k, "2x1"] / p99[k, "1x2"] : 0 } }' "$tmp/runs.txt" |
    sort
