#!/bin/sh
# Closed-loop serving beside llama.cpp's llama-server (issue 10): 16 clients on /v1/embeddings,
# 70% short queries of 8–32 tokens and 30% passages of 129–256, one text each; xformd with the
# batcher policies none and tokens against llama-server on the same weights
# (../shared/peers/llama_server/README.md builds it and converts the HF directory to GGUF).
# Rounds interleave the servers; each is started on 127.0.0.1, waited for, driven by
# bench_serve --clients for a fixed time and stopped by its pid. Besides bench_serve's line it
# prints the server's own CPU seconds over the run (/proc/PID/stat) and requests per CPU-second,
# the figure to compare on a loaded machine, where wall-clock rates measure the scheduler.
#   bench/serve_peer.sh BUILDDIR HF_MODEL_DIR [GGUF LLAMA_BIN_DIR]
#   XF_PEER_SERVERS ("none tokens llama") XF_PEER_ROUNDS (2) XF_PEER_CLIENTS (16) XF_PEER_DURATION (20 s) XF_PEER_PORT (18950; llama-server
#   uses the next port: right after an xformd run the port may still be held)
#   XF_PEER_TIMEOUT_MS (60000: xformd's request.timeout_ms, so that admission does not refuse
#   what llama-server, which has none, would queue) XF_PEER_OMP_WAIT (PASSIVE: llama-server's
#   OMP_WAIT_POLICY; its OpenMP threads spin at barriers otherwise, which on a shared machine
#   wastes most of its CPU; empty = the default) XF_PEER_XFORMD_ARGS (more xformd options, e.g.
#   "--engine.workers 2 --engine.threads 1")
# Never run by make check.
set -eu
b=${1:?usage: serve_peer.sh BUILDDIR HF_MODEL_DIR [GGUF LLAMA_BIN_DIR]}
model=${2:?usage: serve_peer.sh BUILDDIR HF_MODEL_DIR [GGUF LLAMA_BIN_DIR]}
gguf=${3:-}
lbin=${4:-}
servers=${XF_PEER_SERVERS:-none tokens llama}
rounds=${XF_PEER_ROUNDS:-2}
clients=${XF_PEER_CLIENTS:-16}
dur=${XF_PEER_DURATION:-20}
port=${XF_PEER_PORT:-18950}
lport=$((port + 1))
tmo=${XF_PEER_TIMEOUT_MS:-60000}
omp=${XF_PEER_OMP_WAIT-PASSIVE}
xargs=${XF_PEER_XFORMD_ARGS:-}
mix="8-32:0.7,129-256:0.3"
[ -x "$b/bench/bench_serve" ] || { echo "serve_peer.sh: make bench first ($b/bench/bench_serve)" >&2; exit 1; }
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Wait (at most 20 min: a BERT-base warm-up on a loaded machine) for URL to answer 200.
wait_ready() {
    i=0
    while [ $i -lt 2400 ]; do
        kill -0 "$1" 2>/dev/null || return 1
        c=$(curl -s -o /dev/null -w '%{http_code}' "$2" 2>/dev/null || true)
        [ "$c" = 200 ] && return 0
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}
run_one() {   # kind pid port
    c0=$(cpu_ticks "$2")
    la=$(cut -d' ' -f1 /proc/loadavg)
    line=$("$b/bench/bench_serve" --port "$3" --clients "$clients" --lengths "$mix" \
        --duration "$dur" --warmup 0 --timeout 30 | grep '^policy=' || true)
    c1=$(cpu_ticks "$2")
    ok=$(echo "$line" | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
    echo "peer round=$r server=$1 loadavg=$la $line" |
        awk -v c="$((c1 - c0))" -v t="$tck" -v ok="${ok:-0}" \
            '{ s = c / t; printf "%s server_cpu_s=%.2f req_per_cpu_s=%.2f\n", $0, s, (s > 0 ? ok / s : 0) }'
}
echo "# serve_peer cpu=\"$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')\" ncpu=$(nproc) clients=$clients duration_s=$dur lengths=$mix rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for r in $(seq 1 "$rounds"); do
    for s in $servers; do
        if [ "$s" = llama ]; then
            [ -n "$gguf" ] && [ -x "$lbin/llama-server" ] || continue
            if [ -n "$omp" ]; then export OMP_WAIT_POLICY="$omp"; fi
            "$lbin/llama-server" -m "$gguf" --embedding --pooling mean -t 2 -tb 2 -np 1 -c 512 \
                -b 2048 -ub 2048 --host 127.0.0.1 --port "$lport" >/dev/null 2>&1 &
            pid=$!
            unset OMP_WAIT_POLICY
            wait_ready "$pid" "http://127.0.0.1:$lport/health" || { echo "# llama-server did not start" >&2; kill "$pid" 2>/dev/null || true; pid=; continue; }
            # Page the mmap'd weights in first (xformd's warm-up does the same).
            curl -s -o /dev/null -H 'Content-Type: application/json' \
                -d '{"input": "the of and to in is was he"}' "http://127.0.0.1:$lport/v1/embeddings" || true
        else
            "$b/xformd" --model.dir "$model" --http.port "$port" --batcher.policy "$s" \
                --request.timeout_ms "$tmo" --log.level warn $xargs >/dev/null 2>&1 &
            pid=$!
            wait_ready "$pid" "http://127.0.0.1:$port/v2/health/ready" || { echo "# xformd did not start" >&2; kill "$pid" 2>/dev/null || true; pid=; continue; }
            # One request first, as for llama-server: the run then starts within 2 s of a
            # measured layer, so xformd's cold-start rule (nothing queued behind the first
            # batch until its first layer is timed: 429 + Retry-After 1) does not idle 15 of
            # the 16 clients for the first second of the run.
            curl -s -o /dev/null -H 'Content-Type: application/json' \
                -d '{"input": "the of and to in is was he"}' "http://127.0.0.1:$port/v1/embeddings" || true
        fi
        if [ "$s" = llama ]; then run_one "$s" "$pid" "$lport"; else run_one "$s" "$pid" "$port"; fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    done
done
