"""Rephrasing throughput: the rephrase stage's batched, left-padded greedy generation
(pipeline/models/rephraser.py) vs plain transformers `generate` one document at a time (the naive
peer), same model (SmolLM2-135M-Instruct Q4_1 GGUF), same documents, same max_new_tokens.

    python bench/rephrase.py [--docs 32] [--max-new-tokens 32] [--docs-per-forward 16] [--threads 2]

Prints docs/s and output tokens/s of each side and the ratio. Device: cuda when present.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.models.rephraser import Rephraser  # noqa: E402


def docs(n: int) -> list[str]:
    rows = []
    for p in sorted((ROOT / "data" / "sample_small").glob("*.jsonl.zst")):
        with zstandard.open(p, "rt") as f:
            rows += [orjson.loads(line)["text"] for line in f]
    return [t[:600] for t in rows if len(t) > 100][:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--docs-per-forward", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    texts = docs(a.docs)
    m = Rephraser(None, threads=a.threads)
    print(f"device={m.device} docs={len(texts)} max_new_tokens={a.max_new_tokens} docs_per_forward={a.docs_per_forward}")
    m.generate(texts[:2], "wikipedia", 4, 2)  # warm-up

    t = time.perf_counter()
    _, tok_b = m.generate(texts, "wikipedia", a.max_new_tokens, a.docs_per_forward)
    tb = time.perf_counter() - t

    # peer: plain transformers generate, one document per call (no padding, no batching)
    t = time.perf_counter()
    tok_n = 0
    for p in m.prompts(texts, "wikipedia", 2000):
        enc = m.tok(p, return_tensors="pt").to(m.device)
        with m.torch.inference_mode():
            ids = m.model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=m.tok.pad_token_id)
        tok_n += int(ids.shape[1] - enc["input_ids"].shape[1])
    tn = time.perf_counter() - t

    print(f"rephrase (batched): {len(texts) / tb:8.2f} docs/s {tok_b / tb:8.1f} out tok/s ({tb:.1f} s)")
    print(f"naive one-by-one:   {len(texts) / tn:8.2f} docs/s {tok_n / tn:8.1f} out tok/s ({tn:.1f} s)")
    print(f"ratio (batched / naive, docs/s): {tn / tb:.2f}x")


if __name__ == "__main__":
    main()
