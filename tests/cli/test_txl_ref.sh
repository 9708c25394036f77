#!/bin/sh
# Transformer-XL against a reference that is not ours: tests/ref/txl_ref.py, a float64 numpy
# forward of HF TransfoXLLMHeadModel written from the paper and the HF definitions (adaptive
# embedding, relative attention with HF's rel-shift, adaptive log-softmax, mems), run on
# `xformd-cli mkmodel --arch transfo-xl` models. `xformd-cli score --pooled` streams segments
# A, B, C... with the memory kept in process; every per-token log-prob, sum, next-token log-prob
# and pooled value must be within 1e-4 of the reference (the engine computes in float32 over a
# few hundred terms per dot product: errors seen are ~1e-6, so 1e-4 leaves room for other BLAS
# kernels and XF_CPU caps without hiding a wrong mask, shift or tie, which moves log-probs by
# > 1e-2). mem_len 0 must equal independent segments. Skips when python3 with numpy is absent
# (Debian: python3-numpy, in scripts/setup). Prints TAP.
b=${XF_BUILDDIR:-.}
cli="$b/xformd-cli"
src=${XF_SRCDIR:-$(dirname "$0")/../..}
ref="$src/tests/ref/txl_ref.py"
py=""
for p in ${XF_PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import numpy' >/dev/null 2>&1; then
        py=$p
        break
    fi
done
if [ -z "$py" ]; then
    echo "1..0 # SKIP python3 with numpy not found (install python3-numpy; set XF_PYTHON)"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-txlref.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; [ -n "$2" ] && echo "$2" | sed 's/^/# /'; }
N=13
echo "1..$N"
if [ ! -x "$cli" ]; then
    for i in $(seq 1 $N); do echo "not ok $i - xformd-cli not built at $cli"; done
    exit 1
fi

# same_as_ref DESC MODEL INPUT SCORE-OPTIONS: score INPUT, then compare with the reference
same_as_ref() {
    desc=$1; model=$2; input=$3; shift 3
    if ! "$cli" score --model "$model" --pooled "$@" < "$input" > "$tmp/got" 2> "$tmp/err"; then
        nok "$desc" "$(cat "$tmp/err")"
        return
    fi
    if out=$("$py" "$ref" --model "$model" --against "$tmp/got" --tol 1e-4 "$@" < "$input" 2>&1)
    then
        ok "$desc ($out)"
    else
        nok "$desc" "$out"
    fi
}

# Segments of 7, 11, 9 and 5 ids touching the shortlist and both tail clusters of a 300-symbol
# vocabulary (cutoffs 100/200): A leaves 7 memory rows, B fills mem_len 16, C and D slide it.
printf '5 17 150 220 3 9 299\n1 2 3 4 5 6 7 8 9 250 101\n100 199 200 0 12 77 150 151 298\n' \
    > "$tmp/ids"
printf '42 43 210 11 0\n' >> "$tmp/ids"

m="$tmp/post"
"$cli" mkmodel --arch transfo-xl --seed 3 --out "$m" 2> /dev/null
same_as_ref "post-LN, tied crit, empty start: A B C D with memory" "$m" "$tmp/ids" --ids
same_as_ref "post-LN, zeros start (HF init_mems)" "$m" "$tmp/ids" --ids --init zeros
same_as_ref "mem_len 4, shorter than a segment" "$m" "$tmp/ids" --ids --mem-len 4
same_as_ref "mem_len 0" "$m" "$tmp/ids" --ids --mem-len 0

# mem_len 0: segment k of the stream equals segment k scored alone (its token 0 is still
# scored by the previous segment's last row, which is not memory: compare from token 1 on and
# the pooled hidden states)
"$cli" score --model "$m" --ids --pooled --mem-len 0 < "$tmp/ids" > "$tmp/stream"
: > "$tmp/alone"
while IFS= read -r line; do
    printf '%s\n' "$line" | "$cli" score --model "$m" --ids --pooled --mem-len 0 >> "$tmp/alone"
done < "$tmp/ids"
strip() { sed -e 's/"segment":[0-9]*,//' -e 's/"logprobs":\[[^,]*,/"logprobs":[/' \
              -e 's/"sum":[^,]*,"n_scored":[0-9]*,//' -e 's/"tokens_seen":[0-9]*//' "$1"; }
if [ "$(wc -l < "$tmp/stream")" -eq 4 ] && [ "$(strip "$tmp/stream")" = "$(strip "$tmp/alone")" ]
then
    ok "mem_len 0: each segment of the stream equals the segment alone"
else
    nok "mem_len 0: each segment of the stream equals the segment alone" \
        "$(diff "$tmp/stream" "$tmp/alone" | head -5)"
fi
"$cli" score --model "$m" --ids --pooled < "$tmp/ids" > "$tmp/mem"
if [ -s "$tmp/mem" ] && [ "$(strip "$tmp/mem")" != "$(strip "$tmp/stream")" ]; then
    ok "with memory the outputs differ from mem_len 0 (the memory is used)"
else
    nok "with memory the outputs differ from mem_len 0 (the memory is used)"
fi

# pre-LN, same_length, and clamp_len 3 (below the distances of a 16-row memory + 11 tokens)
m2="$tmp/pre"
"$cli" mkmodel --arch transfo-xl --seed 5 --pre-lnorm --same-length --layers 3 --out "$m2" \
    2> /dev/null
sed 's/"clamp_len": *[0-9]*/"clamp_len": 3/' "$m2/config.json" > "$tmp/c.json" &&
    mv "$tmp/c.json" "$m2/config.json"
if grep -q '"clamp_len": 3' "$m2/config.json"; then
    ok "the pre-LN model's config says clamp_len 3"
else
    nok "the pre-LN model's config says clamp_len 3" "$(cat "$m2/config.json")"
fi
same_as_ref "pre-LN, same_length, clamp_len 3, 3 layers" "$m2" "$tmp/ids" --ids
same_as_ref "pre-LN, same_length, zeros start" "$m2" "$tmp/ids" --ids --init zeros

# text through the word tokenizer (lower-case, <unk>, <eos>) on the reference's own tokenizer
printf 'The of AND zzz_unknown the\nof of the\n' > "$tmp/text"
same_as_ref "text segments: lower_case, <unk>, <eos> appended" "$m" "$tmp/text"
same_as_ref "text segments with --no-eos" "$m" "$tmp/text" --no-eos
# the same model with tokenizer.json's idx2sym in place of vocab.txt
m3="$tmp/json"
mkdir -p "$m3" && cp "$m/config.json" "$m/model.safetensors" "$m/tokenizer_config.json" "$m3/" &&
    awk 'BEGIN { printf "{\"idx2sym\": [" } { printf "%s\"%s\"", (NR > 1 ? ", " : ""), $1 }
         END { print "]}" }' "$m/vocab.txt" > "$m3/tokenizer.json"
same_as_ref "text segments with tokenizer.json idx2sym instead of vocab.txt" "$m3" "$tmp/text"

# the reference is not blind: a wrong memory length on one side is caught
"$cli" score --model "$m" --ids --pooled --mem-len 3 < "$tmp/ids" > "$tmp/wrong"
if out=$("$py" "$ref" --model "$m" --ids --mem-len 4 --against "$tmp/wrong" < "$tmp/ids" 2>&1)
then
    nok "the comparison fails when the engine runs another mem_len" "$out"
else
    ok "the comparison fails when the engine runs another mem_len"
fi
[ "$n" -eq "$N" ] || { echo "not ok - planned $N tests, ran $n"; failed=1; }
exit $failed
