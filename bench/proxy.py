"""Proxy LM training throughput: our TinyGPT vs the same model built from torch.nn.TransformerEncoder.

    python bench/proxy.py [--device auto|cpu|cuda] [--threads 1,2] [--tokens 50000]

For each spec (the default proxy: vocab 4096, 2 layers, d 128, ctx 128, batch 16; and a ~5M-param
one: 5 layers, d 256) and each thread count (CPU), both models run the same training step
(bf16 autocast on CUDA, fp32 on CPU; AdamW, grad clipping) on the same random batches; tokens/s is
the best of two interleaved measurements (the VM is shared, so the best is the least disturbed).
Then `train_proxy` end to end (sampling, schedule, eval) on `--tokens` tokens of the default spec.
Results also go to runs/bench_proxy/results.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.models import proxy_lm as P  # noqa: E402

SPECS = {
    "default": dict(vocab_size=4096, n_layer=2, n_head=4, d_model=128, ctx=128, batch_size=16),
    "5M": dict(vocab_size=4096, n_layer=5, n_head=8, d_model=256, ctx=128, batch_size=16),
}


class PeerGPT(nn.Module):
    """The peer: same shapes (tied embedding head, learned positions, pre-LN, 4x GELU MLP, final LN)
    from torch.nn.TransformerEncoder with a causal mask."""

    def __init__(self, spec: P.ProxySpec):
        super().__init__()
        d = spec.d_model
        self.tok = nn.Embedding(spec.vocab_size, d)
        self.pos = nn.Embedding(spec.ctx, d)
        layer = nn.TransformerEncoderLayer(d, spec.n_head, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, spec.n_layer, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        nn.init.normal_(self.tok.weight, 0, 0.02)
        nn.init.normal_(self.pos.weight, 0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=idx.device)
        x = self.enc(x, mask=mask, is_causal=True)
        return x @ self.tok.weight.t()


def _step(model, opt, xy, device) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(xy[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), xy[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def tokens_per_s(model, spec, device, min_seconds: float, min_steps: int = 2) -> tuple[float, float]:
    """Training tokens per wall second and per process CPU second of `model` after one warm-up
    step, running until min_seconds and min_steps. On a shared VM the CPU-second figure of a
    one-thread run is the load-independent one (waiting for a core costs wall time, not CPU)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, spec.vocab_size, (spec.batch_size, spec.ctx + 1), generator=g).to(device)
               for _ in range(4)]
    _step(model, opt, batches[0], device)
    _sync(device)
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    while n < min_steps or time.perf_counter() - t0 < min_seconds:
        _step(model, opt, batches[n % 4], device)
        n += 1
        if device.type == "cuda" and n % 10 == 0:
            _sync(device)
    _sync(device)
    tokens = n * spec.batch_size * spec.ctx
    return tokens / (time.perf_counter() - t0), tokens / (time.process_time() - c0)


def bench_models(device: torch.device, threads: list[int], min_seconds: float) -> list[dict]:
    rows = []
    for name, kw in SPECS.items():
        spec = P.ProxySpec(**kw)
        torch.manual_seed(0)
        ours, peer = P.TinyGPT(spec).to(device), PeerGPT(spec).to(device)
        n_ours, n_peer = (sum(p.numel() for p in m.parameters()) for m in (ours, peer))
        for th in threads if device.type == "cpu" else [None]:
            if th:
                torch.set_num_threads(th)
            best = {k: np.zeros(2) for k in ("ours", "peer")}  # (wall, cpu) tokens/s
            for _ in range(2):  # interleaved, best of two
                for k, m in (("ours", ours), ("peer", peer)):
                    best[k] = np.maximum(best[k], tokens_per_s(m, spec, device, min_seconds))
            row = dict(spec=name, params=n_ours, peer_params=n_peer, threads=th, device=str(device),
                       ours_tok_s=round(best["ours"][0]), peer_tok_s=round(best["peer"][0]),
                       ratio=round(best["ours"][0] / best["peer"][0], 3),
                       ours_tok_cpu_s=round(best["ours"][1]), peer_tok_cpu_s=round(best["peer"][1]),
                       ratio_cpu=round(best["ours"][1] / best["peer"][1], 3), load=round(os.getloadavg()[0], 1))
            print(f"{name:8s} params {n_ours / 1e6:5.2f}M (peer {n_peer / 1e6:5.2f}M)  threads {th}  "
                  f"tok/s ours {row['ours_tok_s']:>7,} peer {row['peer_tok_s']:>7,} = {row['ratio']:.2f}x  |  "
                  f"tok/CPU-s ours {row['ours_tok_cpu_s']:>7,} peer {row['peer_tok_cpu_s']:>7,} = {row['ratio_cpu']:.2f}x  "
                  f"(load {row['load']})", flush=True)
            rows.append(row)
    return rows


def bench_end_to_end(device: str, tokens: int, threads: int) -> dict:
    """`train_proxy` on a 3-stream mixture of random tokens, default spec, `tokens` tokens."""
    rng = np.random.default_rng(0)
    streams = [rng.integers(1, 4096, 300_000).astype(np.uint16) for _ in range(3)]
    spec = P.ProxySpec(**SPECS["default"], tokens=tokens, eval_tokens=20_000, device=device, threads=threads)
    c0 = time.process_time()
    r = P.train_proxy(streams, [0.6, 0.3, 0.1], {"t": streams[0][-20_000:]}, spec, seed=0)
    per_200k = math.ceil(200_000 / (spec.batch_size * spec.ctx)) * spec.batch_size * spec.ctx / r["tokens_per_s"]
    out = dict(tokens=r["tokens"], steps=r["steps"], seconds=round(r["seconds"], 2),
               eval_seconds=round(r["eval_seconds"], 2), tokens_per_s=round(r["tokens_per_s"]),
               device=r["device"], threads=threads, est_seconds_200k=round(per_200k, 1),
               cpu_seconds=round(time.process_time() - c0, 2))
    print(f"train_proxy default spec: {out['tokens']:,} tokens in {out['seconds']} s "
          f"({out['tokens_per_s']:,} tok/s, eval {out['eval_seconds']} s, CPU {out['cpu_seconds']} s) -> ~{out['est_seconds_200k']} s "
          f"per 200k-token proxy", flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", default="1,2", help="comma list of torch CPU thread counts")
    ap.add_argument("--tokens", type=int, default=30_000, help="tokens of the end-to-end train_proxy run")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="per measurement")
    a = ap.parse_args(argv)
    device = P._device(a.device)
    threads = [int(t) for t in a.threads.split(",") if t]
    print(f"torch {torch.__version__}, device {device}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    old = torch.get_num_threads()
    rows = bench_models(device, threads, a.min_seconds)
    torch.set_num_threads(old)
    e2e = bench_end_to_end(str(device), a.tokens, threads[0] if device.type == "cpu" else None)
    print(f"total {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.2f}")
    out = Path("runs/bench_proxy")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"models": rows, "train_proxy": e2e,
                                                  "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
