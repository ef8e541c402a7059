"""The base of every config model (unknown keys are errors) and the path helpers of config checks."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the file and the key."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def absolute(p: Path, base: Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else (base / p)


def inside(child: Path, parent: Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False

def local_model(model: str | None, base: Path, path: str, key: str) -> str | None:
    """An embedding model given by name must be a local directory (absolute from here on): models
    load offline only, a hub name fails here, before any work, naming the key."""
    if model is None:
        return None
    p = absolute(Path(model), base)
    if not p.is_dir():
        raise ConfigError(f"{path}: {key}: {model!r} is not a local directory; models load offline only: give a local "
                          "sentence-transformers dir or leave it unset for the bundled all-MiniLM-L6-v2")
    return str(p)
