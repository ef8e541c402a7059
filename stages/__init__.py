"""The stages, one module (or package) each. Each declares a `SPEC` (pipeline.registry.Stage) that
pyproject.toml registers as a `curate.stages` entry point; the engine finds them there. Stages import
`pipeline`, `filters` and `scorers`, never each other."""
