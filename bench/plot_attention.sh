#!/bin/sh
# bench/plot_attention.sh — plots bench_attention's TSV: attention time vs n (log-log), one curve
# per variant, coloured by family (T blue, S green, F orange, P purple), dense thick black,
# with O(n) and O(n²) guides through dense's first point. Needs gnuplot (gnuplot-nox).
# usage: bench/plot_attention.sh [bench/results/attention.tsv [bench/results/attention.png]]
set -eu

tsv=${1:-bench/results/attention.tsv}
png=${2:-${tsv%.tsv}.png}
command -v gnuplot >/dev/null 2>&1 || { echo "plot_attention.sh: gnuplot not found" >&2; exit 1; }
[ -r "$tsv" ] || { echo "plot_attention.sh: cannot read $tsv" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# Columns: variant n params attn_ms dense_ms speedup ws_bytes rel_err rel_err_local model_ms
# model_dense_ms model_speedup emb_cos hid_rel_err status. Rows that did not run (status != ok) are skipped.
awk -F'\t' -v dir="$tmp" 'NR > 1 && $15 == "ok" && $4 > 0 && $1 != "self_only" {
    f = dir "/" $1 ".dat"; print $2, $4 >> f
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
} END { for (i = 1; i <= k; i++) print order[i] > (dir "/variants") }' "$tsv"
[ -s "$tmp/dense.dat" ] || { echo "plot_attention.sh: no dense rows in $tsv" >&2; exit 1; }
read -r n0 t0 < "$tmp/dense.dat"
title=$(awk 'NR == 1 { print FILENAME }' "$tsv")
hdr=$(sed -n 's/^# *xformd-bench-attention //p' "${tsv%.tsv}.txt" 2>/dev/null | head -n 1 |
      sed 's/cpu="\([^"]*\)".*threads=\([0-9]*\).*rev=\([^ ]*\).*/\1, \2 threads, rev \3/')

family() {
    case $1 in
    linformer|nystrom|isab|memcomp|perceiver) echo S ;;
    linear|performer|rfa) echo F ;;
    reformer|routing|sinkhorn) echo P ;;
    *) echo T ;;
    esac
}

plots=""
iT=0; iS=0; iF=0; iP=0
while read -r v; do
    f="$tmp/$v.dat"
    if [ "$v" = dense ]; then
        plots="$plots, '$f' using 1:2 with linespoints lw 4 pt 7 ps 1.3 lc rgb '#000000' title 'dense'"
        continue
    fi
    fam=$(family "$v")
    case $fam in
    T) iT=$((iT + 1)); i=$iT; pal="#08306b #08519c #2171b5 #4292c6 #6baed6 #1f78b4 #3182bd #5f9ed1 #0b559f #9ecae1" ;;
    S) iS=$((iS + 1)); i=$iS; pal="#00441b #238b45 #41ab5d #74c476 #006d2c" ;;
    F) iF=$((iF + 1)); i=$iF; pal="#a63603 #e6550d #fd8d3c" ;;
    P) iP=$((iP + 1)); i=$iP; pal="#3f007d #6a51a3 #9e9ac8" ;;
    esac
    col=$(echo "$pal" | tr ' ' '\n' | sed -n "$(( (i - 1) % $(echo "$pal" | wc -w) + 1 ))p")
    dt=$(( (i - 1) % 5 + 1 ))
    pt=$(( (i - 1) % 12 + 1 ))
    plots="$plots, '$f' using 1:2 with linespoints lw 1.6 dt $dt pt $pt lc rgb '$col' title '$v ($fam)'"
done < "$tmp/variants"

gnuplot <<EOF
set terminal pngcairo size 1280,860 noenhanced font ',11'
set output '$png'
set title "Attention time vs sequence length (BERT-base heads 12x64, one sequence)\n${hdr:-$title}"
set logscale xy 2
set xlabel 'n (tokens)'
set ylabel 'attention time per layer (ms, median)'
set xtics (512, 1024, 2048, 4096)
set format y '%g'
set grid xtics ytics mytics
set key outside right top spacing 1.05
set xrange [450:4700]
f1(x) = $t0 * x / $n0
f2(x) = $t0 * (x / $n0)**2
plot f2(x) with lines dt 3 lw 1 lc rgb '#999999' title 'O(n^2) from dense', \
     f1(x) with lines dt 2 lw 1 lc rgb '#bbbbbb' title 'O(n) from dense'$plots
EOF
echo "plot_attention.sh: wrote $png"
