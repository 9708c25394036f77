#!/bin/sh
# Structured pruning bench (issue 13): speed and cosine to the unpruned model against sparsity
# on the BERT-base-shape demo model (RANDOM weights: the cosines only indicate how much the
# output moves, not task accuracy). Prunes to heads/FFN 12/3072 (reference), 8/2048, 6/1024,
# 4/600 with `xformd-cli prune` on a generated calibration file, then times every model with
# `xformd-cli bench --quick` in interleaved rounds (the machine may be shared: ratios come from
# the same round) and embeds a separate evaluation file with each for the cosine.
#   bench/prune.sh [BUILDDIR] [OUTDIR]      (defaults: build/test, bench/results)
# Prints machine-readable `prune` lines; writes OUTDIR/prune-<cpu>.md and, when gnuplot is
# installed, OUTDIR/prune-<cpu>.png. Never run by make check.
set -eu
b=${1:-build/test}
res=${2:-bench/results}
cli="$b/xformd-cli"
rounds=${XF_PRUNE_ROUNDS:-3}
threads=${XF_PRUNE_THREADS:-2}
[ -x "$cli" ] || { echo "prune.sh: $cli not built" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-prune.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

base="$tmp/base"
"$cli" mkmodel --out "$base" 2>/dev/null
# Texts from the demo vocabulary's whole words, fixed seeds: 8 calibration lines, 32 others.
words() { # seed lines words_per_line
    awk -v seed="$1" -v n="$2" -v w="$3" '
        NR > 104 && $0 !~ /^##/ && length($0) > 2 { v[k++] = $0 }
        END { srand(seed); for (i = 0; i < n; i++) { s = "";
              for (j = 0; j < w; j++) s = s (j ? " " : "") v[int(rand() * k)]; print s } }' \
        "$base/vocab.txt"
}
words 11 8 16 > "$tmp/calib.txt"
words 23 32 24 > "$tmp/eval.txt"

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
configs="12:3072 8:2048 6:1024 4:600"
for c in $configs; do
    h=${c%%:*} f=${c##*:}
    [ "$h" = 12 ] && [ "$f" = 3072 ] && continue
    t0=$(date +%s)
    # The first prune calibrates (1 + 144 forwards) and saves the scores; the others reuse them.
    if [ -s "$tmp/scores.txt" ]; then src="--scores $tmp/scores.txt"
    else src="--calib $tmp/calib.txt --save-scores $tmp/scores.txt"; fi
    "$cli" prune --model "$base" $src --heads "$h" --ffn "$f" \
        --threads "$threads" --out "$tmp/p$h-$f" > "$tmp/p$h-$f.log" 2>&1
    echo "prune_time heads=$h ffn=$f seconds=$(( $(date +%s) - t0 ))" | tee -a "$tmp/ptime.txt"
done
model_dir() { if [ "$1" = 12 ] && [ "$2" = 3072 ]; then echo "$base"; else echo "$tmp/p$1-$2"; fi; }

"$cli" embed --model "$base" --pooling mean --no-normalize < "$tmp/eval.txt" > "$tmp/e-base.txt" 2>/dev/null
for r in $(seq 1 "$rounds"); do
    for c in $configs; do
        h=${c%%:*} f=${c##*:}
        "$cli" bench --model "$(model_dir "$h" "$f")" --quick --no-floor --no-reexec \
            --threads "$threads" > "$tmp/bench.txt" 2>/dev/null
        [ -s "$tmp/hdr.txt" ] || grep '^# xformd-bench' "$tmp/bench.txt" > "$tmp/hdr.txt" || true
        awk -v r="$r" -v h="$h" -v f="$f" '/^xformd b=/ {
                for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                bn = $2 $3; gsub(/ /, "", bn)
                print r, h, f, $2 $3, $4 $5, v["median_ms"] }' "$tmp/bench.txt" >> "$tmp/times.txt"
    done
done
la=$(cut -d' ' -f1-3 /proc/loadavg)

# One `prune` line per configuration: medians over rounds; speed-up = base/pruned per round.
{
    echo "# xformd prune bench cpu=\"$cpu\" threads=$threads rounds=$rounds loadavg=\"$la\" rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    for c in $configs; do
        h=${c%%:*} f=${c##*:}
        d=$(model_dir "$h" "$f")
        "$cli" embed --model "$d" --pooling mean --no-normalize < "$tmp/eval.txt" > "$tmp/e.txt" 2>/dev/null
        cos=$(paste -d '\n' "$tmp/e-base.txt" "$tmp/e.txt" | awk '
            NR % 2 { n = split($0, a); next }
            { s = 0; x = 0; y = 0; for (i = 1; i <= n; i++) { s += a[i] * $i; x += a[i] * a[i]; y += $i * $i }
              c = s / sqrt(x * y); t += c; m = (NR == 2 || c < m) ? c : m; k++ }
            END { printf "cos_mean=%.4f cos_min=%.4f", t / k, m }')
        params=$("$cli" inspect --model "$d" 2>/dev/null | awk '/^parameters/ { print $2 }')
        for shape in "b=1 n=128" "b=8 n=128"; do
            set -- $shape
            awk -v h="$h" -v f="$f" -v want="$1 $2" -v cs="$cos" -v params="$params" '
                function med(x, n,   i, j, t) { for (i = 1; i < n; i++) for (j = i + 1; j <= n; j++)
                    if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                    return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2 }
                { shape = $4 " " $5; sub(/b= */, "b=", shape); sub(/n= */, "n=", shape) }
                shape != want { next }
                $2 == 12 && $3 == 3072 { base[$1] = $6 }
                $2 == h && $3 == f { mine[$1] = $6 }
                END { n = 0; for (r in mine) { n++; ms[n] = mine[r]; sp[n] = base[r] / mine[r] }
                      printf "prune heads=%d ffn=%d %s params=%s median_ms=%.2f speedup=%.2f %s\n",
                             h, f, want, params, med(ms, n), med(sp, n), cs }' "$tmp/times.txt"
        done
    done
} > "$tmp/out.txt"
cat "$tmp/out.txt"

tag=$(echo "$cpu" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//' | cut -c1-40)
md="$res/prune-$tag.md"
{
    echo "# Structured pruning: speed and cosine vs sparsity"
    echo
    echo "CPU: $cpu; engine ISA $(sed -n 's/.* isa=\([a-z0-9]*\) .*/\1/p' "$tmp/hdr.txt"), \`$(cat "$tmp/hdr.txt")\`"
    echo "\`bench/prune.sh\`, BERT-base-shape demo model (12 layers, 768 wide, RANDOM weights),"
    echo "$threads threads, $rounds interleaved rounds of \`xformd-cli bench --quick\` per model; load"
    echo "average at the end: $la (shared machine: the speed-up is the median of per-round ratios)."
    echo "Cosine: mean-pooled embeddings of 32 generated texts against the unpruned model. With"
    echo "random weights the cosines only indicate how far the output moves — not task accuracy,"
    echo "which needs a trained model (and FastFormers fine-tunes after pruning)."
    echo
    echo "| heads | FFN | params | shape | median ms | speed-up | cos mean | cos min |"
    echo "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    grep '^prune ' "$tmp/out.txt" | awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "| %s | %s | %s | b=%s n=%s | %s | %s× | %s | %s |\n", v["heads"], v["ffn"],
               v["params"], v["b"], v["n"], v["median_ms"], v["speedup"], v["cos_mean"], v["cos_min"] }'
    echo
    echo '```'
    cat "$tmp/out.txt"
    cat "$tmp/ptime.txt"
    echo '```'
} > "$md"
echo "wrote $md"
if command -v gnuplot >/dev/null 2>&1; then
    grep '^prune ' "$tmp/out.txt" | awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        print v["heads"] "/" v["ffn"], v["b"], v["speedup"], v["cos_mean"] }' > "$tmp/plot.dat"
    awk '$2 == 1' "$tmp/plot.dat" > "$tmp/b1.dat"
    awk '$2 == 8' "$tmp/plot.dat" > "$tmp/b8.dat"
    gnuplot <<GP
set terminal pngcairo size 900,480
set output "$res/prune-$tag.png"
set title "Structured pruning, BERT-base shape (random weights), $threads threads — $cpu"
set xlabel "heads / FFN units kept per layer"
set ylabel "speed-up over 12/3072"
set y2label "cosine to unpruned (mean)"
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:1.05]
set key left top
set style data linespoints
plot "$tmp/b1.dat" using 0:3:xtic(1) title "speed-up b=1 n=128", \
     "$tmp/b8.dat" using 0:3:xtic(1) title "speed-up b=8 n=128", \
     "$tmp/b1.dat" using 0:4 axes x1y2 title "cosine" dashtype 2
GP
    echo "wrote $res/prune-$tag.png"
fi
