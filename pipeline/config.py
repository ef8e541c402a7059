"""Typed run configuration (pydantic), loaded from YAML with `safe_load`.

Every model forbids unknown keys, so a typo fails before any work starts with a one-line error
naming the key path, e.g. `configs/x.yaml: filter.filters[1].params: unknown parameter 'min_wrods'`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the file and the key."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RayConfig(Model):
    address: str | None = Field(None, description="Ray cluster address (auto, ray://host:10001); null = embedded local Ray, or RAY_ADDRESS if set")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for the embedded Ray (default: all)")
    max_retries: int = Field(2, ge=0, description="retries of a failed task (worker crash or exception)")
    cpus_per_task: float = Field(1.0, gt=0, description="CPUs Ray reserves per task")


class ShardConfig(Model):
    target_rows: int = Field(50_000, ge=1, description="roll over to a new output shard after this many rows")
    target_bytes: int = Field(256 << 20, ge=1 << 10, description="... or this many in-memory bytes")


class TokensConfig(Model):
    tokenizer: str | None = Field(None, description="path to a `tokenizers` JSON file; null = GPT-2-style pre-tokenizer count (approximation)")


class RunConfig(Model):
    name: str = Field("curate", description="run name (shown in plans and summaries)")
    output: Path = Field(..., description="run directory; each stage writes <output>/<stage>")
    seed: int = Field(0, description="seed for every random choice; same input+config+seed -> byte-identical output")
    batch_size: int = Field(2_000, ge=1, description="documents per in-memory batch")
    ray: RayConfig = RayConfig()
    shard: ShardConfig = ShardConfig()
    tokens: TokensConfig = TokensConfig()


class InputConfig(Model):
    path: Path = Field(..., description="file, directory or glob of input files")
    pattern: str | None = Field(None, description="glob inside a directory, e.g. '*.jsonl.zst'")
    format: str | None = Field(None, description="jsonl|parquet|hf|warc|html; null = by extension")
    text_field: str = Field("text", description="field (JSONL key / column) holding the document text")
    id_field: str | None = Field("id", description="field holding a document id; null or missing = derived stable id")
    source: str | None = Field(None, description="source name for every document of this input")
    source_field: str | None = Field(None, description="field holding the source name per document")

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        from pipeline.readers import FORMATS

        if v is not None and v not in FORMATS:
            raise ValueError(f"unknown format {v!r}; use one of {list(FORMATS)}")
        return v


class IngestConfig(Model):
    inputs: list[InputConfig] = Field(..., min_length=1)
    max_text_bytes: int | None = Field(None, ge=1, description="quarantine documents larger than this")


class FilterSpec(Model):
    type: str = Field(..., description="registered filter name, see the filters table")
    params: dict[str, Any] = Field({}, description="overrides of the filter's default parameters")
    sources: list[str] | None = Field(None, description="apply only to these sources")
    exclude_sources: list[str] = Field([], description="never apply to these sources")
    languages: list[str] | None = Field(None, description="apply only to documents whose `lang` is one of these (needs a langid filter earlier in the list)")


def _web_chain() -> list[FilterSpec]:
    """The standard web-text chain (datatrove/FineWeb order) used when no filters are listed."""
    return [FilterSpec(type=t) for t in ("length", "langid", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality")]


class FilterConfig(Model):
    filters: list[FilterSpec] = Field(default_factory=_web_chain, min_length=1,
                                      description="filters in order; default: length, langid, gopher_repetition, gopher_quality, c4, fineweb_quality")


class Config(Model):
    run: RunConfig
    ingest: IngestConfig | None = None
    filter: FilterConfig | None = None

    def stage_hash(self, stage: str) -> str:
        """Hash of what determines a stage's output: its own section plus the shared knobs."""
        part = {"stage": stage, "section": getattr(self, stage).model_dump(mode="json"),
                "seed": self.run.seed, "shard": self.run.shard.model_dump(), "tokens": self.run.tokens.model_dump()}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


STAGES = ("ingest", "filter")  # canonical order; `curate run` runs those present in the config


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


def parse(data: Any, path: str = "<config>", base_dir: Path | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections (run, ingest, filter ...)")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(path, e)) from None
    base = base_dir or Path.cwd()
    cfg.run.output = _abs(cfg.run.output, base)
    if cfg.ingest:
        for i, inp in enumerate(cfg.ingest.inputs):
            inp.path = _abs(inp.path, base)
            if not any(ch in str(inp.path) for ch in "*?[") and not inp.path.exists():
                raise ConfigError(f"{path}: ingest.inputs[{i}].path: {inp.path} does not exist; fix the path")
            if _inside(cfg.run.output, inp.path) or _inside(inp.path, cfg.run.output):
                raise ConfigError(f"{path}: run.output: {cfg.run.output} overlaps input {inp.path}; choose a separate output dir")
    if cfg.filter:
        import filters

        for i, spec in enumerate(cfg.filter.filters):
            try:
                filters.build(spec.type, spec.params)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{path}: filter.filters[{i}]: {e}") from None
            if spec.languages is not None and not any(s.type == "langid" for s in cfg.filter.filters[:i]):
                raise ConfigError(f"{path}: filter.filters[{i}].languages: needs a langid filter before it in the list")
    return cfg


def _abs(p: Path, base: Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else (base / p)


def _inside(child: Path, parent: Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


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
    import filters

    lines += ["", "Filters (`filter.filters[].type`, parameters with their defaults):", "",
              "| type | parameters |", "|---|---|"]
    for name, cls in sorted(filters.REGISTRY.items()):
        params = ", ".join(f"`{k}`={v!r}" for k, v in cls.params.items() if k != "stop_words")
        lines.append(f"| `{name}` | {params.replace('|', '/')} |")
    return "\n".join(lines)
