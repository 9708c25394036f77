#!/bin/sh
# xformd-cli end to end on a tiny demo model: line discipline (one output line per input line,
# empty lines are inputs), --ids, --truncate and too-long errors, pooling/normalize, mkmodel
# determinism and --force, classify (softmax; sigmoid on 1 label), inspect, variants, bad
# options, the man page, bench --compare; xformd's --help and option-value checks;
# Transformer-XL mkmodel and score. Prints TAP.
b=${XF_BUILDDIR:-.}
cli="$b/xformd-cli"
srv="$b/xformd"
src=${XF_SRCDIR:-$(dirname "$0")/../..}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; [ -n "$2" ] && echo "$2" | sed 's/^/# /'; }
check() { # description, command (eval'd); success = exit 0
    if out=$(eval "$2" 2>&1); then ok "$1"; else nok "$1" "$out"; fi
}
# same_vecs A B: the two vector files are equal — bitwise on the engine's own GEMM kernels; with
# XF_CPU=generic the OpenBLAS Linear is batch- and thread-dependent in the last bits
# (src/engine/kernels.h, nth_exact), so there within 1e-5 of the largest value.
same_vecs() {
    if [ "${XF_CPU:-}" != generic ]; then cmp -s "$1" "$2"; return; fi
    [ "$(wc -l < "$1")" -eq "$(wc -l < "$2")" ] &&
        paste -d '\n' "$1" "$2" | awk 'NR % 2 { n = split($0, a); next }
            { if (NF != n) exit 1; for (i = 1; i <= NF; i++) { d = $i - a[i]; if (d < 0) d = -d;
              m = a[i] < 0 ? -a[i] : a[i]; if (m < 1) m = 1; if (d > 1e-5 * m) exit 1 } }'
}
N=45
echo "1..$N"
if [ ! -x "$cli" ]; then
    for i in $(seq 1 $N); do echo "not ok $i - xformd-cli not built at $cli"; done
    exit 1
fi
m="$tmp/tiny"
check "mkmodel --tiny writes a model" "'$cli' mkmodel --tiny --seed 7 --out '$m'"
check "mkmodel is deterministic (same seed, same bytes)" \
    "'$cli' mkmodel --tiny --seed 7 --out '$tmp/tiny2' && cmp '$m/model.safetensors' '$tmp/tiny2/model.safetensors' && cmp '$m/vocab.txt' '$tmp/tiny2/vocab.txt'"
check "a different seed gives different weights" \
    "'$cli' mkmodel --tiny --seed 8 --out '$tmp/tiny3' && ! cmp -s '$m/model.safetensors' '$tmp/tiny3/model.safetensors'"
printf 'hello world\n\n   \nthe end' > "$tmp/in.txt"
check "tokenize: one output line per input line, empty lines included" \
    "[ \$('$cli' tokenize --model '$m' < '$tmp/in.txt' | wc -l) -eq 4 ]"
check "tokenize: an empty line is [CLS] [SEP]" \
    "'$cli' tokenize --model '$m' < '$tmp/in.txt' | sed -n 2p | grep -qx '101 102'"
check "tokenize --no-special on an empty line prints an empty line" \
    "[ -z \"\$(printf '\n' | '$cli' tokenize --model '$m' --no-special)\" ]"
check "embed: one vector line per input line, d_model floats each" \
    "'$cli' embed --model '$m' < '$tmp/in.txt' > '$tmp/e.txt' && [ \$(wc -l < '$tmp/e.txt') -eq 4 ] && [ \$(awk '{print NF}' '$tmp/e.txt' | sort -u) = 64 ]"
check "embed --normalize gives unit vectors" \
    "'$cli' embed --model '$m' --normalize < '$tmp/in.txt' | awk '{s=0; for(i=1;i<=NF;i++) s+=\$i*\$i; if (s<0.9999||s>1.0001) exit 1}'"
check "embed: a line's vector does not depend on its batch neighbours" \
    "sed -n 1p '$tmp/e.txt' > '$tmp/e1.txt' && printf 'hello world\n' | '$cli' embed --model '$m' > '$tmp/e2.txt' && same_vecs '$tmp/e1.txt' '$tmp/e2.txt'"
check "embed --batch 1 equals the batched run" \
    "'$cli' embed --model '$m' --batch 1 < '$tmp/in.txt' > '$tmp/eb.txt' && same_vecs '$tmp/eb.txt' '$tmp/e.txt'"
check "embed --format raw writes 4*64 float32" \
    "[ \$('$cli' embed --model '$m' --format raw < '$tmp/in.txt' | wc -c) -eq 1024 ]"
check "embed --pooling none prints n_tokens*d_model floats" \
    "[ \$(printf 'hello\n' | '$cli' embed --model '$m' --pooling none | awk '{print NF}') -eq \$(( \$(printf 'hello\n' | '$cli' tokenize --model '$m' | awk '{print NF}') * 64 )) ]"
check "embed --ids takes the ids as the whole input" \
    "[ \"\$(printf '101 102\n' | '$cli' embed --model '$m' --ids)\" = \"\$(printf '\n' | '$cli' embed --model '$m')\" ]"
check "embed --ids rejects an id outside the vocabulary, naming the line" \
    "! printf '101 102\n5 99999999\n' | '$cli' embed --model '$m' --ids 2> '$tmp/err' && grep -q 'line 2' '$tmp/err'"
awk 'BEGIN { for (i = 0; i < 700; i++) printf "word "; printf "\n" }' > "$tmp/long.txt"
check "a too-long line is an error naming the line" \
    "! '$cli' embed --model '$m' < '$tmp/long.txt' 2> '$tmp/err' && grep -q 'line 1' '$tmp/err'"
check "--truncate embeds a too-long line" \
    "[ \$('$cli' embed --model '$m' --truncate < '$tmp/long.txt' | wc -l) -eq 1 ]"
check "classify without a classifier head is a clear error" \
    "! printf 'x\n' | '$cli' classify --model '$m' 2> '$tmp/err' && grep -q 'classifier' '$tmp/err'"
check "classify on a 3-label model prints probabilities summing to 1" \
    "'$cli' mkmodel --tiny --labels 3 --out '$tmp/cls' && printf 'a\nb c\n' | '$cli' classify --model '$tmp/cls' | awk 'NF!=3{exit 1} {s=\$1+\$2+\$3; if (s<0.9999||s>1.0001) exit 1} END{if (NR!=2) exit 1}'"
check "inspect prints the shapes and the memory plan" \
    "'$cli' inspect --model '$m' | grep -q 'arena_bytes=' && '$cli' inspect --model '$m' | grep -q '^layers *2'"
check "unknown options and a missing model fail with exit 2 / 1" \
    "'$cli' embed --bogus </dev/null; [ \$? -eq 2 ] && ! '$cli' embed --model '$tmp/nope' </dev/null 2>/dev/null"
check "mkmodel refuses an existing model without --force and leaves it alone" \
    "cp '$m/model.safetensors' '$tmp/keep' && ! '$cli' mkmodel --tiny --seed 9 --out '$m' 2> '$tmp/err' && grep -q -- '--force' '$tmp/err' && cmp -s '$m/model.safetensors' '$tmp/keep'"
check "mkmodel --force overwrites" \
    "'$cli' mkmodel --tiny --seed 9 --force --out '$tmp/tiny3' && ! cmp -s '$tmp/tiny3/model.safetensors' '$tmp/tiny2/model.safetensors' && '$cli' mkmodel --tiny --seed 7 --force --out '$tmp/tiny3' && cmp -s '$tmp/tiny3/model.safetensors' '$tmp/tiny2/model.safetensors'"
check "classify on a 1-label model prints the sigmoid of the logit, not 1" \
    "'$cli' mkmodel --tiny --labels 1 --out '$tmp/ce' && printf 'a\\tb\\nq\\td e\\n' > '$tmp/p.txt' && '$cli' classify --model '$tmp/ce' --pairs < '$tmp/p.txt' > '$tmp/pr' && '$cli' classify --model '$tmp/ce' --pairs --raw-logits < '$tmp/p.txt' > '$tmp/lg' && paste '$tmp/pr' '$tmp/lg' | awk 'NF!=2{exit 1} {s=1/(1+exp(-\$2)); d=\$1-s; if (d<0) d=-d; if (d>1e-6 || \$1>=1 || \$1<=0) exit 1} END{if (NR!=2) exit 1}'"
check "embed --ids with an empty line names the line" \
    "! printf '101 102\\n\\n' | '$cli' embed --model '$m' --ids 2> '$tmp/err' && grep -q 'line 2: empty' '$tmp/err'"
bad_attn='{"variant":"window","blok":3}'
check "a bad --attention names the option, not the model load" \
    "printf 'x\\n' | '$cli' embed --model '$m' --attention '$bad_attn' 2> '$tmp/err'; [ \$? -eq 2 ] && grep -q -- '--attention: blok' '$tmp/err' && ! grep -q 'cannot load model' '$tmp/err'"
check "the xformd-cli man page documents every command" \
    "for c in tokenize embed classify inspect mkmodel variants bench prune; do grep -q \"^\\\\.B \$c\" '$src/doc/xformd-cli.1' || exit 1; done"
check "xformd: --help names the program, shows no C names; --api-key --check-config is an error" \
    "'$srv' --help | head -1 | grep -q '^Usage: xformd ' && ! '$srv' --help | grep -q 'enum ' && '$srv' --api-key --check-config 2> '$tmp/err'; [ \$? -eq 2 ] && grep -q -- '--api-key: missing value' '$tmp/err'"
check "xformd.pc (pkg-config) names libxformd and the version xformd reports" \
    "command -v pkg-config >/dev/null || exit 0; PKG_CONFIG_PATH='$b' pkg-config --libs xformd | grep -q -- '-lxformd' && [ \"\$('$srv' --version)\" = \"xformd \$(PKG_CONFIG_PATH='$b' pkg-config --modversion xformd)\" ]"
x="$tmp/txl"
tail_lp() { sed 's/.*"logprobs":\[[^,]*,\([^]]*\)\].*/\1/'; }   # log-probs after token 0
check "mkmodel --arch transfo-xl writes the HF TransfoXL layout, deterministically" \
    "'$cli' mkmodel --arch transfo-xl --out '$x' && '$cli' mkmodel --arch transfo-xl --out '$tmp/txl2' && cmp '$x/model.safetensors' '$tmp/txl2/model.safetensors' && grep -q '\"transfo-xl\"' '$x/config.json'"
printf 'the of w250 w40\nzzz and , the\n\n' > "$tmp/txl.txt"
check "score: one JSON line per segment; token 0 of the stream is unscored, later ones are" \
    "'$cli' score --model '$x' < '$tmp/txl.txt' > '$tmp/s.txt' && [ \$(wc -l < '$tmp/s.txt') -eq 3 ] && sed -n 1p '$tmp/s.txt' | grep -q '\"logprobs\":\[null,' && sed -n 2p '$tmp/s.txt' | grep -q '\"logprobs\":\[-' && sed -n 3p '$tmp/s.txt' | grep -q '\"memory_rows\":11,'"
check "score --mem-len 0: a segment's in-segment log-probs do not depend on the one before" \
    "[ \"\$(printf '5 6 7\n8 9 10\n' | '$cli' score --model '$x' --ids --mem-len 0 | sed -n 2p | tail_lp)\" = \"\$(printf '8 9 10\n' | '$cli' score --model '$x' --ids --mem-len 0 | tail_lp)\" ]"
check "score: with memory they do, and --init zeros differs from empty" \
    "[ \"\$(printf '5 6 7\n8 9 10\n' | '$cli' score --model '$x' --ids | sed -n 2p | tail_lp)\" != \"\$(printf '8 9 10\n' | '$cli' score --model '$x' --ids | tail_lp)\" ] && [ \"\$(printf '5 6 7\n' | '$cli' score --model '$x' --ids | tail_lp)\" != \"\$(printf '5 6 7\n' | '$cli' score --model '$x' --ids --init zeros | tail_lp)\" ]"
check "score --ids rejects an id outside the vocabulary, naming the line; a BERT dir is refused" \
    "! printf '1 2\n1 300\n' | '$cli' score --model '$x' --ids 2> '$tmp/err' && grep -q 'line 2' '$tmp/err' && ! '$cli' score --model '$m' </dev/null 2>/dev/null"
printf '# peers\nfma_peak GFLOP/s=100.0\nort b=  1 n=  16 median_ms=   4.00 tok/s= 4000 GFLOP/s= 1.0\nort b=  8 n= 128 median_ms= 9.0\nort varlen b=16 tokens=2106 maxlen=224 median_ms= 50.0 useful_GFLOP/s= 1.0\n' > "$tmp/peer.txt"
check "bench --compare puts the peer's line for a shape under ours, with its peak_frac" \
    "'$cli' bench --model '$m' --quick --no-floor --reps 1 --threads 1 --compare '$tmp/peer.txt' > '$tmp/bench.txt' && grep -q '^fma_peak ' '$tmp/bench.txt' && grep -q '^xformd b=  1 n=  16 .*peak_frac=' '$tmp/bench.txt' && [ \$(grep -c '^compare ort b=  1 n=  16 median_ms=4.00 .*peak_frac=.*xformd_ms=' '$tmp/bench.txt') -eq 1 ] && [ \$(grep -c '^compare ort b=  8 n= 128 ' '$tmp/bench.txt') -eq 1 ] && [ \$(grep -c '^compare' '$tmp/bench.txt') -eq 2 ]"
check "bench --compare with a missing file fails with exit 2 before timing" \
    "'$cli' bench --model '$m' --compare '$tmp/nope.txt' > /dev/null 2> '$tmp/err'; [ \$? -eq 2 ] && grep -q 'nope.txt' '$tmp/err'"
printf 'hello world\n\nthe end of it\nsome more words here\n' > "$tmp/calib.txt"
pr_bad() { # args...: must exit 2 and leave no output directory (nor a temporary one)
    "$cli" prune "$@" --out "$tmp/prbad" > /dev/null 2> "$tmp/err"; rc=$?
    [ $rc -eq 2 ] && [ -s "$tmp/err" ] && [ ! -e "$tmp/prbad" ] && ! ls "$tmp" | grep -q 'prbad.tmp'
}
check "prune keeps H heads / F units per layer, records pruned_heads, and the result embeds" \
    "'$cli' prune --model '$m' --calib '$tmp/calib.txt' --heads 2 --ffn 100 --out '$tmp/pr1' > '$tmp/pr.out' 2>/dev/null && grep -q '\"pruned_heads\"' '$tmp/pr1/config.json' && grep -q '\"intermediate_size\": 100' '$tmp/pr1/config.json' && '$cli' inspect --model '$tmp/pr1' 2>/dev/null | grep -Eq '^ +1 +2 +16 +100\$' && [ \$('$cli' embed --model '$tmp/pr1' < '$tmp/in.txt' 2>/dev/null | wc -l) -eq 4 ]"
check "prune --save-scores then --scores gives the same model without calibrating; a foreign scores file is exit 2" \
    "'$cli' prune --model '$m' --calib '$tmp/calib.txt' --heads 3 --ffn 50 --out '$tmp/pr3' --save-scores '$tmp/sc.txt' > /dev/null 2>&1 && '$cli' prune --model '$m' --scores '$tmp/sc.txt' --heads 3 --ffn 50 --out '$tmp/pr4' > /dev/null 2>&1 && cmp '$tmp/pr3/model.safetensors' '$tmp/pr4/model.safetensors' && cmp '$tmp/pr3/config.json' '$tmp/pr4/config.json' && pr_bad --model '$m' --scores '$tmp/calib.txt' --heads 2 --ffn 10"
check "prune with per-layer lists gives per-layer shapes" \
    "'$cli' prune --model '$m' --calib '$tmp/calib.txt' --heads 4,1 --ffn 128,7 --out '$tmp/pr2' > /dev/null 2>&1 && '$cli' inspect --model '$tmp/pr2' 2>/dev/null | grep -Eq '^ +0 +4 +16 +128\$' && '$cli' inspect --model '$tmp/pr2' 2>/dev/null | grep -Eq '^ +1 +1 +16 +7\$'"
printf '\n  \n' > "$tmp/empty.txt"
check "prune: missing calib file, missing model, empty calib → exit 2, nothing written" \
    "pr_bad --model '$m' --calib '$tmp/nope.txt' --heads 2 --ffn 10 && pr_bad --model '$tmp/nope' --calib '$tmp/calib.txt' --heads 2 --ffn 10 && pr_bad --model '$m' --calib '$tmp/empty.txt' --heads 2 --ffn 10 && grep -q 'no text' '$tmp/err'"
check "prune: H above the heads, F = 0, a wrong-length list → exit 2 naming the problem" \
    "pr_bad --model '$m' --calib '$tmp/calib.txt' --heads 5 --ffn 10 && grep -q 'layer 0 has 4 heads' '$tmp/err' && pr_bad --model '$m' --calib '$tmp/calib.txt' --heads 2 --ffn 0 && grep -q -- '--ffn' '$tmp/err' && pr_bad --model '$m' --calib '$tmp/calib.txt' --heads 2 --ffn 99999999999 && grep -q -- \"--ffn: '99999999999' is not a count in \\[1, 1048576\\]\" '$tmp/err' && pr_bad --model '$m' --calib '$tmp/calib.txt' --heads 2,2,2 --ffn 10 && grep -q '2 layers' '$tmp/err'"
touch "$tmp/afile"
check "prune: --out in a missing directory, under a file or empty, --calib or --scores a directory → exit 2 at once, nothing written" \
    "for o in '$tmp/nodir/x' '$tmp/afile/x' ''; do '$cli' prune --model '$m' --calib '$tmp/calib.txt' --heads 2 --ffn 10 --out \"\$o\" > /dev/null 2> '$tmp/err'; [ \$? -eq 2 ] && grep -q -- '--out' '$tmp/err' && ! grep -q scoring '$tmp/err' || exit 1; done; [ ! -e '$tmp/nodir' ] && pr_bad --model '$m' --calib '$tmp' --heads 2 --ffn 10 && grep -q 'Is a directory' '$tmp/err' && pr_bad --model '$m' --scores '$tmp' --heads 2 --ffn 10 && grep -q 'scores.*Is a directory' '$tmp/err'"
check "--quantize with a bad value is a usage error (exit 2) before a model loads or bench measures" \
    "for c in embed classify inspect bench; do '$cli' \$c --model '$m' --quantize INT4 < /dev/null > '$tmp/out' 2> '$tmp/err'; [ \$? -eq 2 ] && grep -q -- \"--quantize: 'INT4'\" '$tmp/err' && [ ! -s '$tmp/out' ] || exit 1; done"
check "--quantize takes its value in any case, as the daemon's model.quantize does (INT8 is int8)" \
    "'$cli' inspect --model '$m' --quantize INT8 2>/dev/null | grep -Eq '^quantize +int8\$' && '$cli' embed --model '$m' --quantize Int8 < '$tmp/in.txt' > '$tmp/q1.txt' 2>/dev/null && '$cli' embed --model '$m' --quantize int8 < '$tmp/in.txt' > '$tmp/q2.txt' 2>/dev/null && same_vecs '$tmp/q1.txt' '$tmp/q2.txt' && ! cmp -s '$tmp/q1.txt' '$tmp/e.txt'"
check "prune refuses a non-empty --out and leaves it alone" \
    "'$cli' prune --model '$m' --calib '$tmp/calib.txt' --heads 2 --ffn 10 --out '$tmp/pr1' > /dev/null 2> '$tmp/err'; [ \$? -eq 2 ] && grep -q 'not an empty directory' '$tmp/err' && grep -q '\"intermediate_size\": 100' '$tmp/pr1/config.json'"
# ob_warn: OpenBLAS' core warning (OPENBLAS_CORETYPE=Haswell, as this project's machines set it)
# only where OpenBLAS runs the GEMMs. The engine's own kernels (gemm own-*): no warning, a debug
# note under -v; the cblas Linear (gemm openblas-*: XF_GEMM=openblas, XF_CPU=generic) and a
# Transformer-XL model: a warning. Whether a warning is due (an AVX-512 CPU whose OpenBLAS core
# is not an AVX-512 one) is read from the -v info line, so this holds on AVX2-only CPUs, under
# any XF_CPU cap and with an OpenBLAS that ignores OPENBLAS_CORETYPE.
ob_warn() {
    for g in "" openblas; do
        OPENBLAS_CORETYPE=Haswell XF_GEMM=$g "$cli" inspect --model "$m" > /dev/null 2> "$tmp/ob" || return 1
        OPENBLAS_CORETYPE=Haswell XF_GEMM=$g "$cli" inspect -v --model "$m" > /dev/null 2> "$tmp/obv" || return 1
        line=$(grep 'info: kernels: cpu ' "$tmp/obv") || { echo "no kernels line"; return 1; }
        gemm=$(echo "$line" | sed -n 's/.*, gemm \([^,]*\), blas core .*/\1/p')
        core=$(echo "$line" | sed -n 's/.*, blas core \(.*\)$/\1/p')
        slow=0
        case "$line" in
        *"(max avx512)"*|*"(max amx)"*)
            case "$core" in *kylakeX*|*ooperlake*|*apphireRapids*|*Zen4*|*Zen5*|unknown) ;; *) slow=1 ;; esac ;;
        esac
        echo "XF_GEMM=$g: gemm $gemm, core $core, warning due $slow"
        case "$gemm" in
        own-*)
            ! grep -q 'OpenBLAS runs its' "$tmp/ob" || return 1
            [ $slow -eq 0 ] || grep -q "debug: kernels: OpenBLAS runs its $core kernel" "$tmp/obv" || return 1 ;;
        openblas-*)
            if [ $slow -eq 1 ]; then grep -q "warn: kernels: OpenBLAS runs its $core kernel" "$tmp/ob" || return 1
            else ! grep -q 'OpenBLAS runs its' "$tmp/ob" || return 1; fi ;;
        *) return 1 ;;
        esac
        [ -z "$g" ] || [ "${gemm#openblas-}" != "$gemm" ] || return 1
    done
    printf 'the of\n' | OPENBLAS_CORETYPE=Haswell "$cli" score --model "$x" > /dev/null 2> "$tmp/ob" || return 1
    if [ $slow -eq 1 ]; then grep -q "warn: transfo-xl: OpenBLAS runs its $core kernel" "$tmp/ob"
    else ! grep -q 'OpenBLAS runs its' "$tmp/ob"; fi
}
check "OpenBLAS' core warning only where OpenBLAS runs the GEMMs (own-*: a -v debug note; openblas-*, transfo-xl: a warning)" ob_warn
exit $failed
