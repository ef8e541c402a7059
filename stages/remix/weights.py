"""The remix's inputs that are not documents: the mix weights, the budget, the phases.

Everything here runs in the driver before any task, so a bad weights file, an unsafe domain name or
a phase naming an unknown domain stops the run with one line (exit 2) before any work.
"""
from __future__ import annotations

import math
from pathlib import Path

from pipeline import io
from pipeline.config import ConfigError, unsafe_domain_name


def check_domain_name(name: str, where: str) -> None:
    if unsafe_domain_name(name):
        raise ConfigError(f"{where}: domain name {name!r} cannot name a file (use letters, digits, _ . = + -; "
                          "no '/', '..' or spaces); rename the domain")


def load_weights(path: Path) -> dict:
    """weights.json of the mix stage, checked; raises ConfigError with one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"remix.weights: {path} not found; run the mix stage first or set remix.weights")
    try:
        w = io.read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"remix.weights: {path}: not valid JSON ({str(e).splitlines()[0]})") from None
    doms = w.get("domains") if isinstance(w, dict) else None
    if not isinstance(doms, list) or not doms:
        raise ConfigError(f"remix.weights: {path}: needs a non-empty 'domains' list of {{name, weight}}")
    names = []
    for i, d in enumerate(doms):
        weight = d.get("weight") if isinstance(d, dict) else None
        if not isinstance(d, dict) or "name" not in d or not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"remix.weights: {path}: domains[{i}] needs 'name' and a numeric 'weight'")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"remix.weights: {path}: domains[{i}] ({d['name']}): weight {weight} must be finite and >= 0")
        check_domain_name(str(d["name"]), f"remix.weights: {path}: domains[{i}]")
        names.append(str(d["name"]))
    if len(set(names)) != len(names):
        raise ConfigError(f"remix.weights: {path}: duplicate domain names")
    if sum(float(d["weight"]) for d in doms) <= 0:
        raise ConfigError(f"remix.weights: {path}: all weights are 0")
    if not isinstance(w.get("domain_column", "cluster"), str):
        raise ConfigError(f"remix.weights: {path}: 'domain_column' must be a string")
    if w.get("phases") is not None:
        _check_phases(w["phases"], names, path)
    return w


def _check_phases(phases, names: list[str], path: Path) -> None:
    """A schedule in weights.json (mix.method skillit): [{fraction, weights: {domain: weight}}], fractions summing to 1."""
    if not isinstance(phases, list) or not phases:
        raise ConfigError(f"remix.weights: {path}: 'phases' must be a non-empty list of {{fraction, weights}}")
    for i, p in enumerate(phases):
        ok = isinstance(p, dict) and isinstance(p.get("fraction"), (int, float)) and isinstance(p.get("weights"), dict)
        if not ok or not 0 < p["fraction"] <= 1:
            raise ConfigError(f"remix.weights: {path}: phases[{i}] needs a fraction in (0, 1] and a weights mapping")
        unknown = sorted(set(p["weights"]) - set(names))
        if unknown:
            raise ConfigError(f"remix.weights: {path}: phases[{i}].weights: unknown domain(s) {unknown}; the file's domains are {names}")
        vals = list(p["weights"].values())
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0 for x in vals) or sum(vals) <= 0:
            raise ConfigError(f"remix.weights: {path}: phases[{i}].weights must be finite numbers >= 0, not all 0")
    total = sum(p["fraction"] for p in phases)
    if abs(total - 1) > 1e-6:
        raise ConfigError(f"remix.weights: {path}: phase fractions sum to {total:.6g}, not 1")


def resolve(weights_path: Path, weights: dict, tokens: int | None, max_epochs: float | None,
            tokenizer: str | Path | None, run_tokenizer: str | None) -> tuple[int, float, Path | None]:
    """Budget, epoch cap and tokenizer: explicit values, else the weights', else defaults."""
    budget = tokens if tokens is not None else weights.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"remix.budget_tokens: no token budget (weights {weights_path} has budget_tokens={budget!r}); set remix.budget_tokens")
    cap = max_epochs if max_epochs is not None else weights.get("max_epochs", 4.0)
    if not isinstance(cap, (int, float)) or not cap > 0:
        raise ConfigError(f"remix.max_epochs: {cap!r} must be > 0")
    tok, where = None, ""
    if tokenizer is not None:
        tok, where = Path(tokenizer), "remix.tokenizer"
    elif weights.get("tokenizer"):
        tok, where = Path(weights_path).parent / weights["tokenizer"], f"tokenizer of {weights_path}"
    elif run_tokenizer:
        tok, where = Path(run_tokenizer), "run.tokenizer.path"
    if tok is not None and not tok.is_file():
        raise ConfigError(f"{where}: {tok} not found; fix the path")
    return int(budget), float(cap), tok


def resolve_phases(phases: list | None, weights: dict, prefix) -> list[dict]:
    """[{fraction, weights: [w per domain of the weights file, normalized], metadata_prefix}] in
    training order. No phases: the weights file's own phases (a Skill-it schedule of the mix stage),
    else one phase with the mix weights, or, with a metadata prefix and a cooldown, two (the
    cooldown without prefixes)."""
    names = [str(d["name"]) for d in weights["domains"]]
    mix = [float(d["weight"]) for d in weights["domains"]]
    if not phases and weights.get("phases"):
        spec = [{"fraction": float(p["fraction"]), "weights": dict(p["weights"]), "metadata_prefix": True} for p in weights["phases"]]
    elif not phases:
        cool = prefix.cooldown if prefix is not None else 0.0
        spec = [{"fraction": 1.0 - cool, "weights": "mix", "metadata_prefix": True}]
        if cool > 0:
            spec.append({"fraction": cool, "weights": "mix", "metadata_prefix": False})
    else:
        spec = [p if isinstance(p, dict) else p.model_dump() for p in phases]
    out = []
    for i, p in enumerate(spec):
        if p["weights"] == "mix":
            w = list(mix)
        else:
            unknown = sorted(set(p["weights"]) - set(names))
            if unknown:
                raise ConfigError(f"remix.phases[{i}].weights: unknown domain(s) {unknown}; the weights file has {names}")
            w = [float(p["weights"].get(n, 0.0)) for n in names]
        total = sum(w)
        out.append({"index": i, "fraction": float(p["fraction"]), "weights": [x / total for x in w],
                    "metadata_prefix": bool(prefix is not None and p.get("metadata_prefix", True))})
    return out
