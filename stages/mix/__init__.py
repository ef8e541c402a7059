"""mix: mixture weights over domains (stage.py: proxy runs, search, baselines, weights.json).

The optimizers are a pure library (numpy + LightGBM; no torch, no Ray, IO only in `formats`):

- `constraints`  Bounds, caps, floors, project (ratio-preserving clip-and-redistribute), feasible
- `baselines`    uniform, proportional, temperature, unimax; `baseline(name, …)` projected
- `predictor`    Predictor("lightgbm" | "linear"): weights -> loss, Spearman rho on held-out runs
- `search`       sample_mixtures (RegMix sampler), regmix, climb -> SearchResult
- `formats`      weights.json (write_outputs, read_weights); trainer recipes come from `remix`
- `cmr`          critical mixture ratio (continual pretraining): the loss law, leave-one-out
                 error, bootstrap interval; `cmr_run` holds its passes (validation split, proxy grid)

Facts and settings: /work/shared/MIXTURE.md (CLIMB, RegMix, UniMax).
"""
from stages.mix.baselines import BASELINES, baseline, proportional, temperature, uniform, unimax
from stages.mix.constraints import Bounds, caps, check_feasible, feasible, floors, project
from stages.mix.formats import FILES, WeightsFormatError, read_weights, write_outputs
from stages.mix.predictor import Predictor, spearman
from stages.mix.search import Evaluator, SearchResult, climb, regmix, sample_mixtures
from stages.mix.stage import SPEC, STAGE, run

__all__ = ["SPEC", "STAGE", "run", "BASELINES", "Bounds", "Evaluator", "FILES", "Predictor", "SearchResult", "WeightsFormatError",
           "baseline", "caps", "check_feasible", "climb", "feasible", "floors", "project", "proportional", "read_weights", "regmix", "sample_mixtures",
           "spearman", "temperature", "uniform", "unimax", "write_outputs"]
