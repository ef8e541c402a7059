"""Mixture outputs in the formats training stacks read (MIXTURE.md "Output formats").

- `weights.json`            the canonical record (read back by `remix` via `read_weights`)
- `megatron_data_path.txt`  Megatron-LM `--data-path w1 prefix1 w2 prefix2 …`
- `hf_interleave.json`      arguments of HF `datasets.interleave_datasets`
- `mosaic_streams.yaml`     MosaicML Streaming `Stream(local=…, proportion=…)` per domain

Megatron repeats small sources silently with no epoch cap, so the weights written here must
already be projected (`constraints.project`). Zero-weight domains are left out of the three
training-stack files: Megatron and Mosaic gain nothing from them, and HF's "all_exhausted"
strategy would never finish waiting for a dataset it never samples. Every file is written to a
temporary name and moved into place with os.replace, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import yaml

from pipeline.mixture.constraints import Bounds

FILES = {"weights": "weights.json", "megatron": "megatron_data_path.txt",
         "hf": "hf_interleave.json", "mosaic": "mosaic_streams.yaml"}


class WeightsFormatError(ValueError):
    """A weights.json that does not have the expected shape; the message names the file."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def megatron_data_path(names, weights, prefix: str = "remix/domains") -> str:
    """'w1 PREFIX/name1 w2 PREFIX/name2 …' with 6-decimal weights; zero (after rounding) omitted."""
    parts = []
    for name, w in zip(names, weights):
        s = f"{float(w):.6f}"
        if float(s) > 0:
            parts += [s, f"{prefix}/{name}"]
    return " ".join(parts)


def parse_megatron_data_path(text: str) -> list[tuple[float, str]]:
    """Inverse of `megatron_data_path`: [(weight, prefix), …]."""
    tok = text.split()
    if len(tok) % 2:
        raise ValueError(f"Megatron data path has an odd number of fields ({len(tok)}): expected 'w1 prefix1 w2 prefix2 …'")
    return [(float(tok[i]), tok[i + 1]) for i in range(0, len(tok), 2)]


def write_outputs(out_dir: Path, names: list[str], weights, tokens, docs, budget: int, bounds: Bounds,
                  method: str, extra: dict | None = None, *, prefix: str = "remix/domains", seed: int = 0) -> dict:
    """Write the four files into `out_dir`; returns {"weights"|"megatron"|"hf"|"mosaic": Path}."""
    names = [str(n) for n in names]
    w = np.asarray(weights, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    docs = np.asarray(docs)
    k = len(names)
    if not (w.shape == tokens.shape == docs.shape == (k,)):
        raise ValueError(f"names, weights, tokens, docs must have one entry per domain; got {k}, {w.shape}, {tokens.shape}, {docs.shape}")
    if len(set(names)) != k or any(not n or any(c.isspace() for c in n) for n in names):
        raise ValueError("domain names must be unique, non-empty and without whitespace (Megatron's --data-path is space-separated)")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1) > 1e-6:
        raise ValueError(f"weights must be finite, >= 0 and sum to 1 (sum is {w.sum():.8g})")
    if np.any((w > 0) & (tokens <= 0)):
        raise ValueError(f"domain {names[int(np.argmax((w > 0) & (tokens <= 0)))]!r} has weight > 0 but no tokens")
    extra = dict(extra or {})
    clash = set(extra) & {"method", "budget_tokens", "max_epochs", "domains"}
    if clash:
        raise ValueError(f"extra must not override {sorted(clash)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    domains = [{"name": n, "weight": float(w[i]), "tokens": int(tokens[i]), "docs": int(docs[i]),
                "epochs": float(w[i] * budget / tokens[i]) if tokens[i] > 0 else 0.0}
               for i, n in enumerate(names)]
    doc = {"method": method, "budget_tokens": int(budget), "max_epochs": float(bounds.max_epochs), "domains": domains, **extra}
    nz = [i for i in range(k) if w[i] > 0]
    paths = {key: out_dir / fname for key, fname in FILES.items()}
    _atomic_write(paths["weights"], json.dumps(doc, indent=2) + "\n")
    _atomic_write(paths["megatron"], megatron_data_path(names, w, prefix) + "\n")
    _atomic_write(paths["hf"], json.dumps({"datasets": [names[i] for i in nz], "probabilities": [float(w[i]) for i in nz],
                                           "seed": int(seed), "stopping_strategy": "all_exhausted"}, indent=2) + "\n")
    _atomic_write(paths["mosaic"], yaml.safe_dump(
        {"streams": {names[i]: {"local": f"{prefix}/{names[i]}", "proportion": float(w[i])} for i in nz}}, sort_keys=False))
    return paths


def read_weights(path) -> dict:
    """Load and validate a weights.json; any problem is a one-line WeightsFormatError naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsFormatError(f"{path}: cannot read weights: {str(e).splitlines()[0]}") from None

    def bad(msg: str):
        raise WeightsFormatError(f"{path}: {msg}")

    if not isinstance(doc, dict):
        bad("expected a JSON object")
    for key, typ in (("method", str), ("budget_tokens", int), ("max_epochs", (int, float)), ("domains", list)):
        if key not in doc:
            bad(f"missing key {key!r}")
        if not isinstance(doc[key], typ) or isinstance(doc[key], bool):
            bad(f"{key!r} has type {type(doc[key]).__name__}")
    if not doc["domains"]:
        bad("'domains' is empty")
    seen = set()
    for i, d in enumerate(doc["domains"]):
        if not isinstance(d, dict):
            bad(f"domains[{i}] is not an object")
        for key, typ in (("name", str), ("weight", (int, float)), ("tokens", int), ("docs", int), ("epochs", (int, float))):
            if key not in d:
                bad(f"domains[{i}] is missing {key!r}")
            if not isinstance(d[key], typ) or isinstance(d[key], bool):
                bad(f"domains[{i}].{key} has type {type(d[key]).__name__}")
        if d["name"] in seen:
            bad(f"domain name {d['name']!r} appears twice")
        seen.add(d["name"])
        if not (math.isfinite(d["weight"]) and d["weight"] >= 0):
            bad(f"domains[{i}].weight = {d['weight']} (must be >= 0)")
    total = sum(d["weight"] for d in doc["domains"])
    if abs(total - 1) > 1e-6:
        bad(f"weights sum to {total:.8g}, not 1")
    return doc
