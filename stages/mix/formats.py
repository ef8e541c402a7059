"""The mix stage's record: `weights.json` (read back by `remix` via `read_weights`).

The files trainers read (Megatron `--data-path`, MosaicML streams, the HF interleave recipe) are
written by `remix` next to the data they name (stages/remix/export.py), with paths that exist and
weights realised by the plan; the mix stage only knows the weights, not where the data will be.
Megatron repeats small sources silently with no epoch cap, so the weights written here must
already be projected (`constraints.project`). The file is written to a temporary name and moved
into place, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import unsafe_domain_name

from stages.mix.constraints import Bounds

FILES = {"weights": "weights.json"}


class WeightsFormatError(ValueError):
    """A weights.json that does not have the expected shape; the message names the file."""


def write_outputs(out_dir: Path, names: list[str], weights, tokens, docs, budget: int, bounds: Bounds,
                  method: str, extra: dict | None = None) -> dict:
    """Write weights.json into `out_dir`; returns {"weights": Path}."""
    names = [str(n) for n in names]
    w = np.asarray(weights, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    docs = np.asarray(docs)
    k = len(names)
    if not (w.shape == tokens.shape == docs.shape == (k,)):
        raise ValueError(f"names, weights, tokens, docs must have one entry per domain; got {k}, {w.shape}, {tokens.shape}, {docs.shape}")
    if len(set(names)) != k or any(unsafe_domain_name(n) for n in names):
        raise ValueError("domain names must be unique and name files (letters, digits, _ . = + -; no '/', '..' or spaces)")
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
    paths = {key: out_dir / fname for key, fname in FILES.items()}
    text = json.dumps(doc, indent=2) + "\n"
    io.atomic_write(paths["weights"], lambda tmp: tmp.write_text(text, encoding="utf-8"))
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
