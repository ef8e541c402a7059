"""Typed run configuration (pydantic), loaded from YAML with `safe_load`.

Every model forbids unknown keys, so a typo fails before any work starts with a one-line error
naming the key path, e.g. `configs/x.yaml: filter.filters[1].params: unknown parameter 'min_wrods'`.
The sections live in `sections` (run and the data stages), `score` and `mix` (mix, remix,
evaluate); this module assembles them, loads and checks a config, and refuses renamed keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline import io
from pipeline.config.base import ConfigError, Model, absolute, inside, local_model
from pipeline.config.mix import (REMIX_FORMATS, CMRConfig, EvaluateConfig, EvaluateProxy, MixConfig, MixConstraints,  # noqa: F401
                                 ProxyConfig, RemixConfig, RemixOrder, RemixPhase, RemixSelect, SearchConfig,
                                 SkillitConfig, unsafe_domain_name)
from pipeline.config.rephrase import RephraseConfig, RephraseSelect  # noqa: F401
from pipeline.config.score import (BUNDLED_BENCHMARKS, BUNDLED_REFERENCE_LM, BUNDLED_TARGETS, BenchSimConfig,  # noqa: F401
                                   BetrConfig, DecontamConfig, FastTextParams, FastTextScoreConfig, FastTextTrainConfig,
                                   LabelSource, MatesConfig, PerplexityConfig, PreSelectConfig, ScoreConfig, TargetSpec,
                                   ToxicityConfig,
                                   bundled_benchmarks, bundled_targets, check_score)
from pipeline.config.sections import (ClusterConfig, DedupConfig, EmbedConfig, FilterConfig, FilterSpec,  # noqa: F401
                                      IngestConfig, InputConfig, RunConfig, TokenizerConfig)


class Config(Model):
    run: RunConfig
    ingest: IngestConfig | None = None
    filter: FilterConfig | None = None
    dedup: DedupConfig | None = None
    score: ScoreConfig | None = None
    rephrase: RephraseConfig | None = None
    cluster: ClusterConfig | None = None
    mix: MixConfig | None = None
    remix: RemixConfig | None = None
    evaluate: EvaluateConfig | None = None

    def stage_hash(self, stage: str, resolved: dict | None = None) -> str:
        """Hash of what determines a stage's output: its own section plus the shared knobs, plus
        `resolved`: what the stage's driver chose for this machine where the config says auto
        (precision, k-means backend ...), so output made with other choices is never resumed into."""
        part = {"stage": stage, "section": getattr(self, stage).model_dump(mode="json"),
                "seed": self.run.seed, "shard": self.run.shard.model_dump(), "tokenizer": self.run.tokenizer.model_dump(mode="json")}
        if resolved:
            part["resolved"] = resolved
        return io.content_hash(part)


STAGES = ("ingest", "filter", "dedup", "score", "rephrase", "cluster", "mix", "remix", "evaluate")  # canonical order (rephrase is optional: absent from a config, it does not run); `curate run` runs those present in the config


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _one_line(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    where, msg = _loc(e["loc"]), e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling"
    elif e["type"] == "missing":
        msg = "required key is missing"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {where}: {msg}{more}"


# Keys renamed so that a name says what it holds (one tokenizer section; batch sizes in their unit;
# token counts named by what they count). The old spelling is refused, naming the new key.
RENAMED = {
    "run.batch_size": "run.docs_per_batch",
    "run.tokens": "run.tokenizer (run.tokens.tokenizer is now run.tokenizer.path)",
    "mix.tokenizer": "run.tokenizer (one tokenizer per run: its path, vocab_size, train_docs, seed)",
    "cluster.embed.batch_size": "cluster.embed.docs_per_forward",
    "dedup.semantic.batch_size": "dedup.semantic.docs_per_forward",
    "score.bench_sim.batch_size": "score.bench_sim.docs_per_forward",
    "score.betr.batch_size": "score.betr.docs_per_forward",
    "mix.proxy.batch_size": "mix.proxy.sequences_per_step",
    "mix.proxy.tokens": "mix.proxy.train_tokens",
    "remix.tokens": "remix.budget_tokens",
    "evaluate.tokens": "evaluate.train_tokens",
}


def refuse_renamed(data: dict, path: str) -> None:
    """ConfigError (one line) for the first key of `data` spelled as before a rename."""
    for old, new in RENAMED.items():
        node: Any = data
        *head, last = old.split(".")
        for key in head:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            raise ConfigError(f"{path}: {old}: this key was renamed to {new}; rename it in the config")


def parse(data: Any, path: str = "<config>", base_dir: Path | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections (run, ingest, filter ...)")
    refuse_renamed(data, path)
    out = data.get("run", {}).get("output") if isinstance(data.get("run"), dict) else None
    from pipeline import storage

    if storage.is_url(out):  # an object store: stages run in a local staging mirror of it (pipeline/remote.py)
        from pipeline import remote

        try:
            storage.fs_and_path(out)
        except storage.StorageError as e:
            raise ConfigError(f"{path}: run.output: {e}") from None
        data = {**data, "run": {**data["run"], "output": str(remote.staging_for(out))}}
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(path, e)) from None
    base = base_dir or Path.cwd()
    cfg.run.output = absolute(cfg.run.output, base)
    if cfg.ingest:
        for i, inp in enumerate(cfg.ingest.inputs):
            if storage.is_url(inp.path):  # object store / fsspec: existence checked remotely, never overlaps a local run dir
                try:
                    found = storage.has_magic(inp.path) or storage.exists(inp.path)
                except storage.StorageError as e:
                    raise ConfigError(f"{path}: ingest.inputs[{i}].path: {e}") from None
                if not found:
                    raise ConfigError(f"{path}: ingest.inputs[{i}].path: {inp.path} does not exist; fix the URL")
                continue
            inp.path = str(absolute(Path(inp.path), base))
            if not any(ch in inp.path for ch in "*?[") and not Path(inp.path).exists():
                raise ConfigError(f"{path}: ingest.inputs[{i}].path: {inp.path} does not exist; fix the path")
            if inside(cfg.run.output, Path(inp.path)) or inside(Path(inp.path), cfg.run.output):
                raise ConfigError(f"{path}: run.output: {cfg.run.output} overlaps input {inp.path}; choose a separate output dir")
    from pipeline import registry

    for name in STAGES:  # the stages' own checks of their sections (e.g. filter parameters)
        if getattr(cfg, name) is not None and name in registry.names() and registry.stage(name).check is not None:
            registry.stage(name).check(cfg, path)
    if cfg.cluster:
        emb = cfg.cluster.embed
        if emb.cache_dir is not None:
            emb.cache_dir = absolute(emb.cache_dir, base)
        emb.model = local_model(emb.model, base, path, "cluster.embed.model")
    if cfg.dedup:
        cfg.dedup.semantic.model = local_model(cfg.dedup.semantic.model, base, path, "dedup.semantic.model")
        for i, prev in enumerate(cfg.dedup.against):
            prev = cfg.dedup.against[i] = absolute(prev, base)
            if not (prev / "_index" / "index.json").exists():
                raise ConfigError(f"{path}: dedup.against[{i}]: {prev} has no _index/index.json; point it at an earlier dedup output written with write_index: true")
    if cfg.score:
        check_score(cfg.score, path, base)
        b = cfg.score.betr
        if b is not None and cfg.mix is not None:  # rank data for the mix's targets, on the same search/eval split
            if not b.targets:
                b.targets = list(cfg.mix.targets)
            if b.eval_fraction is None:
                b.eval_fraction = cfg.mix.eval_fraction
        m = cfg.score.mates
        if m is not None and cfg.mix is not None:  # the same targets and split as BETR
            if not m.targets:
                m.targets = list(cfg.mix.targets)
            if m.eval_fraction is None:
                m.eval_fraction = cfg.mix.eval_fraction
    return cfg






def load(path: str | Path, overrides: dict | None = None) -> Config:
    """Load YAML with safe_load; relative paths are resolved against the current directory."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *head, last = dotted.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return parse(data, str(path))


def reference() -> str:
    """Markdown reference of every config key, generated from the models (README 'Config reference')."""
    from pydantic.fields import FieldInfo

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            f: FieldInfo
            key = f"{prefix}{name}"
            ann = f.annotation
            args = getattr(ann, "__args__", None) or (ann,)
            sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if sub is None:  # Optional[list[Model]]
                sub = next((a for t in args for a in (getattr(t, "__args__", None) or ()) if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if sub is not None and "list[" in str(ann):
                key += "[]"
            if sub is not None:
                walk(sub, key + ".")
                continue
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            tname = str(ann).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
            tname = tname.replace(" | ", " or ")
            lines.append(f"| `{key}` | {tname} | {default} | {f.description or ''} |")

    walk(Config, "")
    from pipeline import registry

    for name in STAGES:
        if name in registry.names() and registry.stage(name).reference is not None:
            lines += ["", registry.stage(name).reference()]
    return "\n".join(lines)
