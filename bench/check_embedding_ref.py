#!/usr/bin/python3
"""Cross-check xformd's BERT embeddings (and optionally llama.cpp's) against an independent
float64 numpy forward of the same Hugging Face directory, on the same token ids.

The reference: post-LN BERT, exact-erf GELU, token type 0, mean pooling over all tokens incl.
[CLS]/[SEP], no normalisation, every product in float64 from the F32 safetensors weights.
Token ids come from the offline WordPiece tokenizer stand-in (HF BertTokenizerFast semantics) in
SHARED/peers/llama_server/offline_shims, read at run time only (nothing here is built from it).

xformd: `xformd-cli tokenize` (ids compared with the reference ids) and `xformd-cli embed
--pooling mean --no-normalize`. llama.cpp (optional, --llama-bin and --gguf): `llama-embedding`
once per text (mean pooling, --embd-normalize -1, -c/-b/-ub 512).

Output, one key=value line per (impl, text) and a summary line per impl:
  ref impl=xformd text=3 tokens=509 ids_match=1 max_abs=1.2e-06 cosine=0.9999999
  summary impl=xformd texts=8 ids_match_all=1 max_abs=... min_cosine=...
Exit 1 when an impl's ids differ from the reference or its min cosine < --min-cos (0.9999).

Usage: bench/check_embedding_ref.py --cli build/release/src/xformd-cli
         --model /tmp/peers/bert-base-random-hf [--shared ../shared]
         [--llama-bin /tmp/peers/llama.cpp/build/bin --gguf /tmp/peers/bert-base-random-hf-f32.gguf]
"""
import argparse, json, math, os, re, struct, subprocess, sys
import numpy as np

SHORT = ['hello world',
         'The quick brown fox jumps over the lazy dog.',
         'model server batch token attention layer memory request latency throughput session query ' * 4,
         'Embedding servers answer many short queries and a few long passages; batching them well matters.',
         "Café naïve résumé — Ünïcode, CJK 中文字 and punctuation: (a), [b]; {c}! don't stop... 3.14 $5",
         'UPPER lower MiXeD unaffable 2026-12-06 x@y.z']
LONG_WORDS = ('transformer encoders answer embedding requests on modest CPUs while the batcher packs '
              'sequences of unequal length, and tokenization splits unfamiliar words like '
              'hyperparameterization or electroencephalography into several wordpieces; ').split()


def load_st(path):
    with open(path, 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        h = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    h.pop('__metadata__', None)
    out = {}
    for k, v in h.items():
        if v['dtype'] != 'F32':
            sys.exit(f'{k}: dtype {v["dtype"]}, this check wants an F32 model')
        a, b = v['data_offsets']
        k = k[5:] if k.startswith('bert.') else k
        out[k] = mm[a:b].view('<f4').reshape(v['shape']).astype(np.float64)
    return out


try:
    from scipy.special import erf as _erf
except ImportError:
    _erf = np.vectorize(math.erf)


def forward(W, cfg, ids):
    eps, nh = cfg['layer_norm_eps'], cfg['num_attention_heads']

    def ln(x, p):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * W[p + '.weight'] + W[p + '.bias']

    def lin(x, p):
        return x @ W[p + '.weight'].T + W[p + '.bias']

    n = len(ids)
    x = (W['embeddings.word_embeddings.weight'][ids] + W['embeddings.position_embeddings.weight'][:n]
         + W['embeddings.token_type_embeddings.weight'][0])
    x = ln(x, 'embeddings.LayerNorm')
    for i in range(cfg['num_hidden_layers']):
        p = f'encoder.layer.{i}.'
        q, k, v = (lin(x, p + 'attention.self.' + t).reshape(n, nh, -1).transpose(1, 0, 2)
                   for t in ('query', 'key', 'value'))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, -1)
        x = ln(x + lin(a, p + 'attention.output.dense'), p + 'attention.output.LayerNorm')
        h = lin(x, p + 'intermediate.dense')
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
        x = ln(x + lin(h, p + 'output.dense'), p + 'output.LayerNorm')
    return x.mean(0)


def long_text(tok, target):
    """A text of `target` tokens or a little under (incl. [CLS]/[SEP])."""
    words, i = [], 0
    while len(tok.encode(' '.join(words + [LONG_WORDS[i % len(LONG_WORDS)]]))) <= target:
        words.append(LONG_WORDS[i % len(LONG_WORDS)])
        i += 1
    return ' '.join(words)


def run(cmd, stdin=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        sys.exit(f'{cmd[0]} failed ({r.returncode}): {r.stderr[-2000:]}')
    return r.stdout


def xformd_side(cli, model, texts):
    inp = ''.join(t + '\n' for t in texts)
    ids = [[int(x) for x in l.split()] for l in run([cli, 'tokenize', '--model', model], inp).splitlines()]
    emb = [np.array([float(x) for x in l.split()]) for l in
           run([cli, 'embed', '--model', model, '--pooling', 'mean', '--no-normalize'], inp).splitlines()]
    return ids, emb


def llama_side(bindir, gguf, texts):
    ids, emb = [], []
    for t in texts:
        out = run([os.path.join(bindir, 'llama-embedding'), '-m', gguf, '-t', '2', '--pooling', 'mean',
                   '--embd-normalize', '-1', '--embd-output-format', 'json', '--verbose-prompt',
                   '-b', '512', '-ub', '512', '-c', '512', '-p', t])
        j = re.search(r'^\{', out, re.M).start()   # the JSON starts a line; a text may hold '{'
        head, js = out[:j], out[j:]
        ids.append([int(l.split('->')[0]) for l in head.splitlines() if '->' in l and l.split('->')[0].strip().isdigit()])
        emb.append(np.array(json.loads(js)['data'][0]['embedding'], dtype=np.float64))
    return ids, emb


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cli', help='xformd-cli (omit to check only llama.cpp)')
    ap.add_argument('--model', required=True)
    ap.add_argument('--shared', default=os.path.join(here, '..', '..', 'shared'))
    ap.add_argument('--llama-bin')
    ap.add_argument('--gguf')
    ap.add_argument('--min-cos', type=float, default=0.9999)
    a = ap.parse_args()
    shims = os.path.join(a.shared, 'peers', 'llama_server', 'offline_shims')
    if not os.path.isdir(shims):
        sys.exit(f'{shims}: absent (the reference tokenizer lives there); give --shared')
    sys.path.insert(0, shims)
    from transformers import AutoTokenizer  # the offline WordPiece stand-in, at run time
    tok = AutoTokenizer.from_pretrained(a.model)
    cfg = json.load(open(os.path.join(a.model, 'config.json')))
    W = load_st(os.path.join(a.model, 'model.safetensors'))
    texts = SHORT + [long_text(tok, 200), long_text(tok, 510), long_text(tok, 512)]
    ref_ids = [tok.encode(t) for t in texts]
    refs = [forward(W, cfg, ids) for ids in ref_ids]
    impls = [('xformd', xformd_side(a.cli, a.model, texts))] if a.cli else []
    if a.llama_bin and a.gguf:
        impls.append(('llama.cpp', llama_side(a.llama_bin, a.gguf, texts)))
    ok = True
    for name, (ids, emb) in impls:
        worst, min_cos, all_ids = 0.0, 1.0, True
        for i, ref in enumerate(refs):
            same = i < len(ids) and ids[i] == ref_ids[i]
            e = emb[i] if i < len(emb) else np.full_like(ref, np.nan)
            d = float(np.abs(e - ref).max()) if e.shape == ref.shape else float('inf')
            cos = float(e @ ref / np.linalg.norm(e) / np.linalg.norm(ref)) if e.shape == ref.shape else -1.0
            if not np.isfinite(cos):
                cos = -1.0
            print(f'ref impl={name} text={i} tokens={len(ref_ids[i])} ids_match={int(same)} '
                  f'ref_norm={np.linalg.norm(ref):.4f} max_abs={d:.2e} cosine={cos:.9f}')
            worst, min_cos, all_ids = max(worst, d), min(min_cos, cos), all_ids and same
        print(f'summary impl={name} texts={len(refs)} ids_match_all={int(all_ids)} '
              f'max_abs={worst:.2e} min_cosine={min_cos:.9f}')
        ok &= all_ids and min_cos >= a.min_cos
    sys.stdout.flush()
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
