#!/usr/bin/env python3
"""Float64 numpy reference of Hugging Face's TransfoXLLMHeadModel (transformers
models/deprecated/transfo_xl), written from the paper (Dai et al. 2019, §3.3 and appendix B) and
the HF definitions, for checking `xformd-cli score` independently of the C engine and of
tests/ref/txl_ref.c. No torch: the safetensors header is parsed with json and the tensors read
with numpy.

Usage: txl_ref.py --model DIR [--mem-len N] [--init empty|zeros] [--ids] [--no-eos]
                  [--against FILE] [--tol X]  < segments
Reads one segment per line (text, or token ids with --ids) and prints one JSON line per segment
in the layout of `xformd-cli score --pooled`. With --against FILE (that program's output for
the same input) it compares instead, prints the largest absolute difference and exits 1 when it
exceeds --tol (default 1e-4).

Semantics followed (HF, not the engine):
  * AdaptiveEmbedding: cluster i of [cutoff_ends[i], cutoff_ends[i+1]) looks up emb_layers[i]
    (d_embed // div_val**i wide) and projects with F.linear(emb, emb_projs[i]); the result is
    multiplied by emb_scale = d_proj ** 0.5 (d_proj = d_model).
  * the mask: triu(ones(qlen, klen), 1 + mlen) (1 = masked), plus tril(ones, -shift) with
    same_length; pos_seq = klen-1 .. 0 clamped to clamp_len when clamp_len > 0;
    PositionalEmbedding = cat(sin(pos * inv_freq), cos(pos * inv_freq)).
  * RelPartialLearnableMultiHeadAttn: AC = (q + r_w_bias) k^T, BD = _rel_shift((q + r_r_bias)
    r^T), the original zero-pad-and-view shift; masked_fill -1e30; softmax over keys; post-LN
    (or pre-LN with the layer norm on [mems ; w] before qkv_net).
  * PositionwiseFF: Linear, ReLU, Linear, residual, LayerNorm (or pre-LN).
  * mems: memory entry l is the input of layer l; _update_mems keeps cat([mems, hids])[beg:end],
    end = mlen + qlen, beg = max(0, end - mem_len); mem_len 0 keeps nothing.
  * ProjectedAdaptiveLogSoftmax without labels: head = log_softmax over the shortlist plus one
    logit per tail cluster; tail token = head_logprob[:, -i] + log_softmax(tail_i); tied
    tensors absent from the file (save_pretrained leaves them out) come from word_emb as
    tie_word_embeddings (default true) and tie_projs say.
  * row t of the output predicts token t+1, so a segment's token 0 is scored by the previous
    segment's last row (null for the stream's first segment), as xformd-cli score prints it.
"""
import json
import math
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # the caller (tests/cli/test_txl_ref.sh) skips before this
    sys.stderr.write("txl_ref.py: numpy is not installed (Debian: python3-numpy)\n")
    sys.exit(77)


def read_safetensors(path):
    """{name: float64 array} from a safetensors file (8-byte little-endian header length, JSON
    header of {dtype, shape, data_offsets}, then the raw little-endian data)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        beg, end = t["data_offsets"]
        buf = raw[base + beg:base + end]
        if t["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif t["dtype"] == "F64":
            a = np.frombuffer(buf, dtype="<f8").astype(np.float64)
        elif t["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float64)
        elif t["dtype"] == "BF16":
            u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32).astype(np.float64)
        else:
            raise ValueError("%s: dtype %s not handled by the reference" % (name, t["dtype"]))
        out[name] = a.reshape(t["shape"])
    return out


def layer_norm(x, g, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def rel_shift(x):
    """HF _rel_shift on [qlen, klen] (one head): pad a zero column on the left, view as
    [klen + 1, qlen], drop the first row, view back as [qlen, klen]."""
    q, k = x.shape
    padded = np.concatenate([np.zeros((q, 1)), x], axis=1)
    return padded.reshape(k + 1, q)[1:].reshape(q, k)


class TransfoXL:
    def __init__(self, d, mem_len=None):
        with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
            c = json.load(f)
        self.c = c
        self.V = c["vocab_size"]
        self.D = c["d_model"]
        self.de = c.get("d_embed", self.D)
        self.H = c["n_head"]
        self.dh = c["d_head"]
        self.L = c["n_layer"]
        self.div_val = c.get("div_val", 1)
        self.mem_len = c.get("mem_len", 0) if mem_len is None else mem_len
        self.clamp_len = c.get("clamp_len", 0)
        self.same_length = c.get("same_length", False)
        self.pre_lnorm = c.get("pre_lnorm", False)
        self.eps = c.get("layer_norm_epsilon", 1e-5)
        self.cutoffs = list(c.get("cutoffs", [])) + [self.V]
        self.ends = [0] + self.cutoffs
        nc = len(self.cutoffs)
        w = read_safetensors(os.path.join(d, "model.safetensors"))
        self.w = w

        # AdaptiveEmbedding
        self.emb, self.emb_proj = [], []
        for i in range(nc if self.div_val > 1 else 1):
            self.emb.append(w["transformer.word_emb.emb_layers.%d.weight" % i])
            self.emb_proj.append(w.get("transformer.word_emb.emb_projs.%d" % i))
        # ProjectedAdaptiveLogSoftmax + tie_weights()
        tie_w = c.get("tie_word_embeddings", True)
        tie_p = c.get("tie_projs", [False] + [True] * (nc - 1))
        self.out_w, self.out_b, self.out_proj = [], [], []
        for i in range(len(self.emb)):
            wi = w.get("crit.out_layers.%d.weight" % i)
            if wi is None and tie_w:
                wi = self.emb[i]
            self.out_w.append(wi)
            self.out_b.append(w["crit.out_layers.%d.bias" % i])
        for i in range(nc):
            p = w.get("crit.out_projs.%d" % i)
            if p is None and i < len(tie_p) and tie_p[i]:
                if self.div_val == 1 and self.D != self.de:
                    p = self.emb_proj[0]
                elif self.div_val != 1:
                    p = self.emb_proj[i]
            self.out_proj.append(p)
        self.cw = w.get("crit.cluster_weight")
        self.cb = w.get("crit.cluster_bias")

    def embed(self, ids):
        out = np.zeros((len(ids), self.D))
        for t, tok in enumerate(ids):
            if self.div_val == 1:
                e = self.emb[0][tok]
                p = self.emb_proj[0]
            else:
                i = max(k for k in range(len(self.cutoffs)) if tok >= self.ends[k])
                e = self.emb[i][tok - self.ends[i]]
                p = self.emb_proj[i]
            out[t] = e if p is None else p @ e  # F.linear(emb, proj) = emb @ proj^T
        return out * math.sqrt(self.D)

    def layer_param(self, l, name):
        return self.w["transformer.layers.%d.%s" % (l, name)]

    def attn(self, l, w, r, mask, mems):
        """RelPartialLearnableMultiHeadAttn.forward for one sequence (batch size 1)."""
        P = lambda n: self.layer_param(l, "dec_attn." + n)  # noqa: E731
        qlen, H, dh = w.shape[0], self.H, self.dh
        cat = np.concatenate([mems, w], axis=0)
        if self.pre_lnorm:
            cat = layer_norm(cat, P("layer_norm.weight"), P("layer_norm.bias"), self.eps)
        heads = cat @ P("qkv_net.weight").T
        r_k = (r @ P("r_net.weight").T).reshape(-1, H, dh)
        klen = cat.shape[0]
        q, k, v = np.split(heads, 3, axis=-1)
        q = q[-qlen:].reshape(qlen, H, dh)
        k = k.reshape(klen, H, dh)
        v = v.reshape(klen, H, dh)
        key = "transformer.layers.%d.dec_attn.r_w_bias" % l
        if key in self.w:
            rwb, rrb = self.w[key], self.w["transformer.layers.%d.dec_attn.r_r_bias" % l]
        else:
            rwb, rrb = self.w["transformer.r_w_bias"], self.w["transformer.r_r_bias"]
        vec = np.zeros((qlen, H, dh))
        for h in range(H):
            ac = (q[:, h] + rwb[h]) @ k[:, h].T
            bd = rel_shift((q[:, h] + rrb[h]) @ r_k[:, h].T)
            s = (ac + bd) / math.sqrt(dh)
            s = np.where(mask, -1e30, s)
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            vec[:, h] = p @ v[:, h]
        out = vec.reshape(qlen, H * dh) @ P("o_net.weight").T
        if self.pre_lnorm:
            return w + out
        return layer_norm(w + out, P("layer_norm.weight"), P("layer_norm.bias"), self.eps)

    def ff(self, l, x):
        P = lambda n: self.layer_param(l, "pos_ff." + n)  # noqa: E731
        inp = x
        if self.pre_lnorm:
            x = layer_norm(x, P("layer_norm.weight"), P("layer_norm.bias"), self.eps)
        core = np.maximum(x @ P("CoreNet.0.weight").T + P("CoreNet.0.bias"), 0)
        core = core @ P("CoreNet.3.weight").T + P("CoreNet.3.bias")
        if self.pre_lnorm:
            return inp + core
        return layer_norm(inp + core, P("layer_norm.weight"), P("layer_norm.bias"), self.eps)

    def logprobs(self, hid):
        """ProjectedAdaptiveLogSoftmax.forward(hidden, labels=None): [n, V] log-probabilities."""
        def logit(x, W, b, proj):
            if proj is not None:
                x = x @ proj  # F.linear(hidden, proj.t())
            return x @ W.T + b

        nc = len(self.cutoffs)
        ws, bs = [], []
        for i in range(nc):
            if self.div_val == 1:
                lo, hi = self.ends[i], self.ends[i + 1]
                wi, bi = self.out_w[0][lo:hi], self.out_b[0][lo:hi]
            else:
                wi, bi = self.out_w[i], self.out_b[i]
            if i == 0 and nc > 1:
                wi = np.concatenate([wi, self.cw], axis=0)
                bi = np.concatenate([bi, self.cb], axis=0)
            ws.append(wi)
            bs.append(bi)
        head = log_softmax(logit(hid, ws[0], bs[0], self.out_proj[0]))
        if nc == 1:
            return head
        out = np.zeros((hid.shape[0], self.V))
        out[:, :self.cutoffs[0]] = head[:, :self.cutoffs[0]]
        for i in range(1, nc):
            tail = log_softmax(logit(hid, ws[i], bs[i], self.out_proj[i]))
            out[:, self.ends[i]:self.ends[i + 1]] = head[:, -i][:, None] + tail
        return out

    def init_mems(self, init):
        rows = self.mem_len if init == "zeros" and self.mem_len > 0 else 0
        return [np.zeros((rows, self.D)) for _ in range(self.L)]

    def forward(self, ids, mems):
        """One segment: (hidden [n, D], log-probs [n, V], new mems)."""
        qlen = len(ids)
        mlen = mems[0].shape[0]
        klen = mlen + qlen
        word = self.embed(ids)
        i = np.arange(qlen)[:, None]
        j = np.arange(klen)[None, :]
        mask = j - i >= 1 + mlen                        # triu(ones, diagonal=1 + mlen)
        if self.same_length:
            mask_len = klen - self.mem_len
            shift = qlen - mask_len if mask_len > 0 else qlen
            mask = mask | (j - i <= -shift)             # tril(ones, -shift)
        pos = np.arange(klen - 1, -1, -1.0)
        if self.clamp_len > 0:
            pos = np.minimum(pos, self.clamp_len)
        inv_freq = 1.0 / (10000 ** (np.arange(0.0, self.D, 2.0) / self.D))
        sinus = np.outer(pos, inv_freq)
        r = np.concatenate([np.sin(sinus), np.cos(sinus)], axis=-1)
        hids = []
        x = word
        for l in range(self.L):
            hids.append(x)
            x = self.ff(l, self.attn(l, x, r, mask, mems[l]))
        new = []
        if self.mem_len > 0:
            end = mlen + qlen
            beg = max(0, end - self.mem_len)
            new = [np.concatenate([m, h], axis=0)[beg:end] for m, h in zip(mems, hids)]
        else:
            new = [np.zeros((0, self.D)) for _ in range(self.L)]
        return x, self.logprobs(x), new


def load_vocab(d):
    """TransfoXLTokenizer's symbol list: vocab.txt (first field per line, first id wins), else
    tokenizer.json's idx2sym."""
    syms = []
    p = os.path.join(d, "vocab.txt")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            for line in f:           # Vocab._build_from_file + add_symbol: first one wins
                fields = line.strip().split()
                if fields and fields[0] not in syms:
                    syms.append(fields[0])
    else:
        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            syms = list(json.load(f)["idx2sym"])
    ids = {s: k for k, s in enumerate(syms)}
    lower = False
    p = os.path.join(d, "tokenizer_config.json")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            lower = bool(json.load(f).get("lower_case", False))
    return syms, ids, lower


def encode(text, vocab, add_eos):
    _, ids, lower = vocab
    line = text.strip()
    if lower:
        line = line.lower()
    unk = ids.get("<unk>", ids.get("<UNK>"))
    out = [ids.get(w, unk) for w in line.split()]
    if add_eos:
        out.append(ids["<eos>"])
    return out


def main(argv):
    args = {"--mem-len": None, "--init": "empty", "--model": None, "--against": None,
            "--tol": "1e-4"}
    flags = set()
    k = 1
    while k < len(argv):
        a = argv[k]
        if a in ("--ids", "--no-eos"):
            flags.add(a)
        elif a in args and k + 1 < len(argv):
            args[a] = argv[k + 1]
            k += 1
        else:
            sys.stderr.write("txl_ref.py: unknown option %s\n" % a)
            return 2
        k += 1
    if not args["--model"]:
        sys.stderr.write("txl_ref.py: --model DIR is required\n")
        return 2
    mem_len = None if args["--mem-len"] is None else int(args["--mem-len"])
    m = TransfoXL(args["--model"], mem_len)
    vocab = load_vocab(args["--model"])
    mems = m.init_mems(args["--init"])
    prev = None  # log-probs of the previous segment's last row
    outs = []
    tokens = 0
    for seg, line in enumerate(sys.stdin.read().split("\n")[:-1], 1):
        ids = ([int(t) for t in line.split()] if "--ids" in flags
               else encode(line, vocab, "--no-eos" not in flags))
        hid, lp, mems = m.forward(ids, mems)
        tokens += len(ids)
        scored = [None if prev is None else float(prev[ids[0]])]
        scored += [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
        nxt = int(np.argmax(lp[-1]))
        outs.append({"segment": seg, "n": len(ids), "logprobs": scored,
                     "sum": float(sum(s for s in scored if s is not None)),
                     "n_scored": sum(s is not None for s in scored),
                     "next": {"id": nxt, "token": vocab[0][nxt] if nxt < len(vocab[0]) else "",
                              "logprob": float(lp[-1, nxt])},
                     "memory_rows": int(mems[0].shape[0]), "tokens_seen": tokens,
                     "pooled": [float(v) for v in hid.mean(axis=0)]})
        prev = lp[-1]
    if args["--against"] is None:
        for o in outs:
            print(json.dumps(o))
        return 0
    return compare(outs, args["--against"], float(args["--tol"]))


def compare(ref, path, tol):
    with open(path, encoding="utf-8") as f:
        got = [json.loads(line) for line in f if line.strip()]
    if len(got) != len(ref):
        print("segments: %d from the engine, %d from the reference" % (len(got), len(ref)))
        return 1
    worst = 0.0
    for r, g in zip(ref, got):
        for key in ("n", "n_scored", "memory_rows", "tokens_seen", "segment"):
            if r[key] != g[key]:
                print("segment %d: %s %s, reference %s" % (r["segment"], key, g[key], r[key]))
                return 1
        pairs = list(zip(r["logprobs"], g["logprobs"])) + [(r["sum"], g["sum"]),
                                                           (r["next"]["logprob"],
                                                            g["next"]["logprob"])]
        if "pooled" in g:
            pairs += list(zip(r["pooled"], g["pooled"]))
            if len(g["pooled"]) != len(r["pooled"]):
                print("segment %d: pooled has %d values, want %d"
                      % (r["segment"], len(g["pooled"]), len(r["pooled"])))
                return 1
        else:
            print("segment %d: no pooled vector in the engine's output" % r["segment"])
            return 1
        for a, b in pairs:
            if (a is None) != (b is None):
                print("segment %d: null mismatch in logprobs" % r["segment"])
                return 1
            if a is not None:
                worst = max(worst, abs(a - b))
        if r["next"]["id"] != g["next"]["id"]:
            # a near tie may pick another argmax in float32; accept only a real tie
            alt = r["next"]["logprob"] - g["next"]["logprob"]
            if abs(alt) > tol:
                print("segment %d: next id %d, reference %d"
                      % (r["segment"], g["next"]["id"], r["next"]["id"]))
                return 1
    print("max_abs_err=%.3g tol=%g segments=%d" % (worst, tol, len(ref)))
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
