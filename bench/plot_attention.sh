#!/bin/sh
# bench/plot_attention.sh — plots bench_attention's TSV: attention time vs n (log-log), one curve
# per variant, coloured by family (T blue, S green, F orange, P purple), dense thick black,
# with O(n) and O(n²) guides through dense's first point. Needs gnuplot (gnuplot-nox).
# usage: bench/plot_attention.sh [bench/results/attention.tsv [bench/results/attention.png]]
#        bench/plot_attention.sh --table [bench/results/attention.tsv]   (README tables)
set -eu

# --table: print the README tables (Markdown) from the TSV instead of plotting.
if [ "${1:-}" = --table ]; then
    tsv=${2:-bench/results/attention.tsv}
    awk -F'\t' '
    # Parameters without the keys that only restate defaults irrelevant to speed here.
    function short(p,    a, i, m, o, kv, q, c, depth) {
        gsub(/[{}"]/, "", p)
        q = ""; depth = 0
        for (i = 1; i <= length(p); i++) {     # commas inside [lists] become "/"
            c = substr(p, i, 1)
            if (c == "[") depth++
            if (c == "]") depth--
            q = q ((c == "," && depth) ? "/" : c)
        }
        p = q
        m = split(p, a, ",")
        o = ""
        for (i = 1; i <= m; i++) {
            split(a[i], kv, ":")
            if (kv[1] ~ /^(seed|random_per_head|redraw|gate|causal|segment_restrict)$/ ||
                kv[1] ~ /^(heads_per_pattern|max_bucket|source|pool|row_norm|orthogonal)$/ ||
                kv[1] ~ /^(dense_fallback|scale|tau|sim|combine|chunks_after)$/)
                continue
            if (kv[2] ~ /^[0-9.]+e-?[0-9]+$/) kv[2] = sprintf("%g", kv[2])
            o = o (o == "" ? "" : " ") kv[1] "=" kv[2]
        }
        return o
    }
    function fmt(x) { return x < 0.995 ? sprintf("%.2f", x) : sprintf("%.1f", x) }
    NR == 1 { next }
    {
        v = $1; n = $2
        if (!(v in seen)) { seen[v] = 1; order[++nv] = v; par[v] = $3 }
        if (!(n in seenn)) { seenn[n] = 1; ns[++nn] = n }
        ok = $15 == "ok"
        sp[v, n] = ok ? fmt($6) : "—"
        spc[v, n] = ok ? fmt($17) : "—"
        er[v, n] = ok ? sprintf("%.2f / %.2f", $8, $9) : $15
        ws[v, n] = $7
        ms[v, n] = $4
        msp[v, n] = $12 > 0 ? sprintf("%.2f", $12) : "—"
        cs[v, n] = $13 > 0 ? sprintf("%.6f", $13) : "—"
        he[v, n] = $13 > 0 ? sprintf("%.3f", $14) : "—"
    }
    END {
        big = ns[nn]
        printf "Attention alone: speedup vs dense, wall (CPU-time ratio in brackets)\n\n"
        printf "| variant | params |"; for (i = 1; i <= nn; i++) printf " n=%s |", ns[i]
        printf " ms @%s | workspace @%s |\n|---|---|", big, big
        for (i = 1; i <= nn + 2; i++) printf "---|"; printf "\n"
        for (k = 1; k <= nv; k++) {
            v = order[k]; p = short(par[v])
            printf "| %s | %s |", v, p
            for (i = 1; i <= nn; i++) printf " %s× (%s) |", sp[v, ns[i]], spc[v, ns[i]]
            printf " %.1f | %.2f MiB |\n", ms[v, big], ws[v, big] / 1048576
        }
        printf "\nError vs dense: relative Frobenius error of the attention output, "
        printf "spread / local inputs\n\n"
        printf "| variant |"; for (i = 1; i <= nn; i++) printf " n=%s |", ns[i]
        printf "\n|---|"; for (i = 1; i <= nn; i++) printf "---|"; printf "\n"
        for (k = 1; k <= nv; k++) {
            v = order[k]; printf "| %s |", v
            for (i = 1; i <= nn; i++) printf " %s |", er[v, ns[i]]
            printf "\n"
        }
        printf "\nWhole model (demo model): speedup vs dense / hidden-state rel. error / "
        printf "pooled cosine\n\n"
        printf "| variant |"; for (i = 1; i <= nn; i++) printf " n=%s |", ns[i]
        printf "\n|---|"; for (i = 1; i <= nn; i++) printf "---|"; printf "\n"
        for (k = 1; k <= nv; k++) {
            v = order[k]; printf "| %s |", v
            for (i = 1; i <= nn; i++)
                printf " %s× / %s / %s |", msp[v, ns[i]], he[v, ns[i]], cs[v, ns[i]]
            printf "\n"
        }
    }' "$tsv"
    exit 0
fi

tsv=${1:-bench/results/attention.tsv}
png=${2:-${tsv%.tsv}.png}
command -v gnuplot >/dev/null 2>&1 || { echo "plot_attention.sh: gnuplot not found" >&2; exit 1; }
[ -r "$tsv" ] || { echo "plot_attention.sh: cannot read $tsv" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# Columns: variant n params attn_ms dense_ms speedup ws_bytes rel_err rel_err_local model_ms
# model_dense_ms model_speedup emb_cos hid_rel_err status attn_cpu_ms speedup_cpu. Rows that did
# not run (status != ok) are skipped.
# ATTN_PLOT_TIME=cpu plots the median process CPU time instead of wall time.
col=4; what='wall'
[ "${ATTN_PLOT_TIME:-wall}" = cpu ] && { col=16; what='CPU (both threads)'; }
awk -F'\t' -v dir="$tmp" -v col="$col" 'NR > 1 && $15 == "ok" && $col > 0 && $1 != "self_only" {
    f = dir "/" $1 ".dat"; print $2, $col >> f
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
        plots="$plots, '$f' using 1:2 with linespoints lw 4 pt 7 ps 1.3 lc rgb '#000000'"
        plots="$plots title 'dense'"
        continue
    fi
    fam=$(family "$v")
    case $fam in
    T) iT=$((iT + 1)); i=$iT
       pal="#08306b #08519c #2171b5 #4292c6 #6baed6 #1f78b4 #3182bd #5f9ed1 #0b559f #9ecae1" ;;
    S) iS=$((iS + 1)); i=$iS; pal="#00441b #238b45 #41ab5d #74c476 #006d2c" ;;
    F) iF=$((iF + 1)); i=$iF; pal="#a63603 #e6550d #fd8d3c" ;;
    P) iP=$((iP + 1)); i=$iP; pal="#3f007d #6a51a3 #9e9ac8" ;;
    esac
    col=$(echo "$pal" | tr ' ' '\n' | sed -n "$(( (i - 1) % $(echo "$pal" | wc -w) + 1 ))p")
    dt=$(( (i - 1) % 5 + 1 ))
    pt=$(( (i - 1) % 12 + 1 ))
    plots="$plots, '$f' using 1:2 with linespoints lw 1.6 dt $dt pt $pt lc rgb '$col'"
    plots="$plots title '$v ($fam)'"
done < "$tmp/variants"

gnuplot <<EOF
set terminal pngcairo size 1280,860 noenhanced font ',11'
set output '$png'
set title "Attention time vs sequence length (BERT-base heads 12x64, one sequence)\n${hdr:-$title}"
set logscale xy 2
set xlabel 'n (tokens)'
set ylabel 'attention time per layer (ms, median, $what)'
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
