#!/bin/sh
# Plot bench_serve (or bench_batcher) output: achieved QPS and p99 latency against offered
# load, one curve per policy, into a PNG with gnuplot.
#   bench/plot_serve.sh results.txt bench/results/serve.png ["title"]
set -eu
in=${1:?usage: plot_serve.sh RESULTS.txt OUT.png [TITLE]}
out=${2:?usage: plot_serve.sh RESULTS.txt OUT.png [TITLE]}
title=${3:-xformd serving benchmark}
command -v gnuplot >/dev/null 2>&1 || { echo "plot_serve.sh: gnuplot not installed" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# One data file per policy: offered achieved p99_ms.
awk -v dir="$tmp" '
  /^policy=/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    f = dir "/" v["policy"] ".dat"
    print v["offered_qps"], v["achieved_qps"], v["p99_ms"] >> f
    if (!(v["policy"] in seen)) { seen[v["policy"]] = 1; order = order " " v["policy"] }
  }
  END { print order > (dir "/policies") }' "$in"
policies=$(cat "$tmp/policies")
[ -n "$policies" ] || { echo "plot_serve.sh: no policy= lines in $in" >&2; exit 1; }
qps="" p99=""
for p in $policies; do
  qps="$qps${qps:+, }'$tmp/$p.dat' using 1:2 with linespoints title '$p'"
  p99="$p99${p99:+, }'$tmp/$p.dat' using 1:3 with linespoints title '$p'"
done
term=png
gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 && term=pngcairo
gnuplot <<GP
set terminal $term size 1200,500 noenhanced
set output '$out'
set multiplot layout 1,2 title '$title'
set grid
set key top left
set xlabel 'offered load (requests/s)'
set ylabel 'achieved throughput (requests/s)'
plot $qps
set ylabel 'p99 latency (ms)'
set logscale y
plot $p99
unset multiplot
GP
echo "wrote $out"
