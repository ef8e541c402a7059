"""The registry of stages and commands: how the engine finds code it never imports by name.

A stage module declares a `Stage` (its name and its functions) and the package declares it as an
entry point of group `curate.stages` (pyproject.toml), so the engine (driver, CLI, estimate) reads
the registry and never imports `stages`. Another installed package can add a stage the same way.
Commands that read a run dir (`curate report`) are entry points of group `curate.commands`.

A stage is either one pass of per-shard tasks, `tasks(cfg, inp, out) -> (tasks, input_fingerprint)`
with an optional global `finalize(out, markers)`, or multi-pass, `run(cfg, inp, out, phase) ->
StageResult`, where `phase(...)` runs one pass of tasks with the run's Ray, retry and resume settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

STAGE_GROUP = "curate.stages"
COMMAND_GROUP = "curate.commands"


@dataclass(frozen=True)
class Stage:
    name: str
    tasks: Callable | None = None
    finalize: Callable | None = None
    run: Callable | None = None
    # An artifact stage (mix, remix, evaluate) reads the last dataset stage's dir; later stages do
    # not read its output.
    artifact: bool = False
    # Every output depends on the whole input (trained models, corpus-wide thresholds, weights): when
    # its input gained shards (and lost or changed none) a scheduled re-run recomputes it.
    recompute_on_growth: bool = False
    # check(cfg, path): cheap checks of the stage's config section when a config loads, beyond its
    # pydantic model (e.g. filter parameters); raises ConfigError naming the key.
    check: Callable | None = None
    # reference() -> markdown appended to the config reference (e.g. the table of filters).
    reference: Callable | None = None

    def __post_init__(self) -> None:
        if (self.tasks is None) == (self.run is None):
            raise TypeError(f"stage {self.name!r}: give exactly one of tasks= (one pass) or run= (multi-pass)")


_loaded: dict[str, dict] = {}


def _load(group: str, name: str):
    """The object entry point `name` of `group` names, imported on first use (only that one)."""
    found = _loaded.setdefault(group, {})
    if name not in found:
        eps = {ep.name: ep for ep in entry_points(group=group)}
        if name not in eps:
            raise KeyError(f"no {group} entry point {name!r} is registered (known: {sorted(eps)}); reinstall the project "
                           "(pip install -e .) so its entry points are current")
        obj = eps[name].load()
        if getattr(obj, "name", name) != name:
            raise RuntimeError(f"entry point {group}:{name} -> {eps[name].value} is named {obj.name!r}; make the two names agree")
        found[name] = obj
    return found[name]


def names(group: str = STAGE_GROUP) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def stages() -> dict[str, Stage]:
    """Every registered stage by name (imports them all)."""
    return {name: stage(name) for name in names()}


def stage(name: str) -> Stage:
    return _load(STAGE_GROUP, name)


def command(name: str) -> Callable:
    return _load(COMMAND_GROUP, name)
