"""PyTorch reference for `atod bench model`: the same Qwen2-style model, shapes and three measurements.

The model is written out here (RMSNorm, rotary positions in the rotate-half layout, grouped-query attention
through F.scaled_dot_product_attention, SwiGLU, tied embeddings), with the same presets as
atod-models/src/model.rs, and measured exactly as atod-models/src/bench.rs measures ours:

- train: forward, next-token NLL over every position, backward and an AdamW step over batch x seq tokens;
- prefill: one forward over batch x seq prompt tokens that fills a KV cache;
- decode: greedy KV-cached decoding of `decode_tokens` tokens for `batch` rows after a 16-token prompt.

Run it beside the Rust figures, on the same machine and thread count:

    benches/pytorch/setup.sh    # once: creates benches/.venv (downloads PyTorch)
    benches/.venv/bin/python benches/pytorch/bench_model.py --preset probe --vocab 256 --json

With `--config FILE` (a Hugging Face config.json, as `atod bench model --config FILE`) the model is transformers'
own implementation of that architecture (Qwen3ForCausalLM for benches/models/qwen3-0.6b.json) with random
weights, measured the same way:

    benches/.venv/bin/python benches/pytorch/bench_model.py --config benches/models/qwen3-0.6b.json \
        --batch 1 --seq 32 --steps 1 --decode-tokens 4 --json
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F
from torch import nn

PRESETS = {
    # name: (hidden, layers, heads, kv_heads, mlp)
    "student-s": (64, 2, 4, 2, 176),
    "student-m": (128, 2, 4, 2, 344),
    "student-l": (192, 4, 6, 2, 448),
    "teacher": (256, 6, 8, 4, 704),
    "probe": (128, 2, 4, 4, 512),
}


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, d, heads, kv_heads, mlp):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.q_proj = nn.Linear(d, d, bias=True)
        self.k_proj = nn.Linear(d, kv_heads * self.hd, bias=True)
        self.v_proj = nn.Linear(d, kv_heads * self.hd, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.gate_proj = nn.Linear(d, mlp, bias=False)
        self.up_proj = nn.Linear(d, mlp, bias=False)
        self.down_proj = nn.Linear(mlp, d, bias=False)
        self.input_layernorm = RMSNorm(d)
        self.post_attention_layernorm = RMSNorm(d)

    def forward(self, x, cos, sin, cache=None):
        b, t, d = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache.get("k") is not None:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        rep = self.heads // self.kv_heads
        kk = k.repeat_interleave(rep, dim=1) if rep > 1 else k
        vv = v.repeat_interleave(rep, dim=1) if rep > 1 else v
        out = F.scaled_dot_product_attention(q, kk, vv, is_causal=(t > 1))
        x = x + self.o_proj(out.transpose(1, 2).reshape(b, t, d))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Model(nn.Module):
    def __init__(self, vocab, d, layers, heads, kv_heads, mlp, theta=10000.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, heads, kv_heads, mlp) for _ in range(layers))
        self.norm = RMSNorm(d)
        hd = d // heads
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def rope(self, positions):
        freqs = positions[:, None].float() * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def forward(self, ids, start=0, caches=None):
        cos, sin = self.rope(torch.arange(start, start + ids.shape[1]))
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i])
        return self.norm(x) @ self.embed_tokens.weight.T


class HfModel(nn.Module):
    """transformers' model for a config.json behind this script's interface: logits of ids, with a KV cache."""

    def __init__(self, path):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        with open(path) as f:
            raw = json.load(f)
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
        self.hf = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32, attn_implementation="sdpa")
        # One cache slot: transformers keeps every layer's keys and values in one cache object.
        self.layers = [None]

    def forward(self, ids, start=0, caches=None):
        if caches is None:
            return self.hf(ids, use_cache=False).logits
        out = self.hf(ids, past_key_values=caches[0].get("past"), use_cache=True)
        caches[0]["past"] = out.past_key_values
        return out.logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="student-s", choices=sorted(PRESETS))
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--decode-tokens", type=int, default=112)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", help="a Hugging Face config.json, measured with transformers' own model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    if args.config:
        model = HfModel(args.config)
        args.vocab = model.hf.config.vocab_size
        args.preset = f"config:{args.config}"
    else:
        model = Model(args.vocab, *PRESETS[args.preset])
    # Tied embeddings are one tensor: count it once, as atod does.
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, t = args.batch, args.seq
    data = torch.randint(0, args.vocab, (b, t + 1))

    def train_step():
        logits = model(data[:, :-1])
        loss = -F.log_softmax(logits, -1).gather(-1, data[:, 1:, None]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    train_step()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    train = args.steps * b * t / (time.perf_counter() - start)

    model.eval()
    prompts = torch.randint(0, args.vocab, (b, t))
    with torch.inference_mode():
        def prefill():
            caches = [dict() for _ in model.layers]
            return model(prompts, 0, caches)[:, -1].sum().item()

        prefill()
        start = time.perf_counter()
        for _ in range(args.steps):
            prefill()
        prefill_rate = args.steps * b * t / (time.perf_counter() - start)

        short = torch.randint(0, args.vocab, (b, 16))

        def decode(n):
            caches = [dict() for _ in model.layers]
            logits = model(short, 0, caches)[:, -1]
            pos = short.shape[1]
            for _ in range(n):
                nxt = logits.argmax(-1, keepdim=True)
                logits = model(nxt, pos, caches)[:, -1]
                # The behaviour log-prob of the chosen token, as atod's generation computes it.
                F.log_softmax(logits, -1).gather(-1, nxt)
                pos += 1
            return logits.sum().item()

        decode(4)
        start = time.perf_counter()
        decode(0)
        prefill_time = time.perf_counter() - start
        start = time.perf_counter()
        decode(args.decode_tokens)
        decode_rate = b * args.decode_tokens / (time.perf_counter() - start - prefill_time)

    report = {
        "preset": args.preset,
        "framework": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "params": params,
        "train_tokens_per_s": train,
        "prefill_tokens_per_s": prefill_rate,
        "decode_tokens_per_s": decode_rate,
        # The process's peak resident memory (ru_maxrss is in KiB on Linux), as `atod bench model` reports it.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:22} {v:.0f}" if isinstance(v, float) else f"{k:22} {v}")


if __name__ == "__main__":
    main()
