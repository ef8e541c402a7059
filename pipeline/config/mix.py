"""Config of the mixture stages: mix (proxy LMs, search, constraints), remix, evaluate."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Model
from pipeline.config.score import TargetSpec




class ProxyConfig(Model):
    n_layer: int = Field(2, ge=1, description="transformer blocks of the proxy LM")
    n_head: int = Field(4, ge=1, description="attention heads")
    d_model: int = Field(128, ge=8, description="width (parameters ~ 12*n_layer*d_model^2 + 2*vocab*d_model)")
    ctx: int = Field(64, ge=8, description="context length in tokens")
    sequences_per_step: int = Field(4, ge=1, description="sequences per optimizer step (small batches: more steps from a small token budget; on the bundled corpus ctx 64 x batch 4 at lr 2e-3 reached 0.25 nats lower target loss than 128 x 16 at 3e-3, same tokens)")
    lr: float = Field(2e-3, gt=0, description="peak AdamW learning rate (linear warmup, cosine decay)")
    train_tokens: int = Field(200_000, ge=1_000, description="training tokens per proxy run (the same for every mixture)")
    eval_tokens: int = Field(50_000, ge=128, description="at most this many tokens of each target set are evaluated")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="auto = cuda when present")
    threads: int | None = Field(1, ge=1, description="torch threads per proxy on CPU (1: Ray runs one proxy per core); null = torch default")


class MixConstraints(Model):
    min_weight: float = Field(0.0, ge=0, le=1, description="lowest weight of any domain")
    max_weight: float = Field(1.0, gt=0, le=1, description="highest weight of any domain")
    max_epochs: float = Field(4.0, gt=0, description="a domain may be repeated at most this many times within budget_tokens (repeating beyond ~4 epochs stops helping)")


class SearchConfig(Model):
    rounds: list[int] = Field([16, 8, 4], min_length=1, description="CLIMB: proxy runs per round (round 1 random, later rounds the predictor's best candidates)")
    runs: int = Field(24, ge=2, description="RegMix: proxy runs on Dirichlet-sampled mixtures")
    candidates: int = Field(100_000, ge=100, description="mixtures drawn and scored by the predictor per step")
    top_k: int = Field(128, ge=1, description="RegMix: the final mixture averages the top_k predicted; CLIMB: next round picks from the top max(n^2, top_k)")
    predictor: str = Field("auto", pattern="^(auto|lightgbm|linear)$", description="regressor from weights to target loss; auto = lightgbm (the papers' choice) from 64 proxy runs on, else ridge on weights and log-weights (steadier with few runs, bench/mixture.py)")
    concentration: list[float] = Field([0.1, 5.0], min_length=2, max_length=2, description="Dirichlet concentration range (log-spaced draws, times the prior)")
    verify_seeds: int = Field(3, ge=1, le=16, description="seeds of the verification runs (the pick, the two best search runs, uniform, proportional): the final mixture's loss is a mean with a 95 % interval vs uniform and proportional")
    robust_rho: float = Field(0.5, ge=-1, le=1, description="when the predictor's held-out Spearman rho is below this (or unknown), the final mixture is the verification candidate with the lowest seed-mean loss instead of the predictor's pick")


class CMRConfig(Model):
    domain: str | None = Field(None, description="method cmr: the value of mix.domain_column that is the domain corpus of the continual pretraining (required)")
    general: list[str] | None = Field(None, description="domains forming the general corpus, mixed by their token shares; null = every domain but `domain`")
    ratios: list[float] = Field([0.0, 0.1, 0.2, 0.4, 0.6, 0.8], description="domain shares of the proxy grid (each in [0, 1], 0 included: the general-only reference)")
    tokens: list[int] | None = Field(None, description="training tokens of the proxy grid (>= 2 distinct counts); null = proxy.train_tokens x [1/4, 1/2, 1]")
    tolerance: float = Field(0.02, description="largest allowed relative rise of the general-domain validation loss over the r = 0 run, in (0, 1)")
    base_tokens: int | None = Field(None, ge=0, description="continual pretraining: every grid run continues a proxy first trained on this many tokens of the general corpus alone (one base per seed); 0 = grid runs train from scratch; null = the largest grid count")
    at_tokens: int | None = Field(None, ge=1, description="training tokens at which the ratio is read off the fitted law; null = the largest grid count")
    seeds: int = Field(2, ge=1, le=8, description="proxy runs per grid point (seeds run.seed + 0..n-1); the interval resamples seeds (>= 2) or the fit's residuals (1)")
    bootstrap: int = Field(200, ge=20, le=10_000, description="bootstrap refits for the ratio's 95 % interval")

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, v):
        if not 0 < v < 1:
            raise ValueError(f"{v} is outside (0, 1); give the allowed relative rise of general loss, e.g. 0.02")
        return v

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v):
        if not v:
            raise ValueError("the grid is empty; give domain shares like [0, 0.1, 0.2, 0.4, 0.6, 0.8]")
        if any(not 0 <= r <= 1 for r in v) or len(set(v)) != len(v):
            raise ValueError(f"{v}: each share must be in [0, 1] and listed once")
        if 0 not in v or len(v) < 3:
            raise ValueError(f"{v}: give at least 3 shares including 0 (the general-only reference)")
        return sorted(v)

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v):
        if v is None:
            return v
        if len(set(v)) < 2 or any(t < 1_000 for t in v):
            raise ValueError(f"{v}: give at least 2 distinct token counts, each >= 1000 (or null for proxy.train_tokens x [1/4, 1/2, 1])")
        return sorted(set(v))


class SkillitConfig(Model):
    phases: int = Field(4, ge=1, le=64, description="Skill-it: training phases; the mixture is updated between phases (remix writes one phase per entry)")
    eta: float = Field(0.5, gt=0, description="Skill-it: step size of the exponentiated-gradient update w_{t+1,i} ∝ w_{t,i}·exp(eta·Σ_j A_ij·L_j,t)")
    eval: list[str] = Field([], description="Skill-it: the evaluation skills whose losses drive the update: names of mix targets and/or domains (a domain's held-out tail); empty = the mix targets")
    graph_tokens: int | None = Field(None, ge=1_000, description="Skill-it: training tokens of each single-domain proxy that measures the skills graph; null = proxy.train_tokens")
    val_tokens: int = Field(4_000, ge=128, description="Skill-it: tokens held out at the end of each domain's stream as its validation split (never trained on by the graph or schedule proxies)")


class MixConfig(Model):
    method: str = Field("climb", pattern="^(uniform|proportional|temperature|unimax|regmix|climb|cmr|skillit)$", description="optimizer, or a baseline; cmr = the critical mixture ratio of mix.cmr.domain for continual pretraining; skillit = a per-phase schedule from a skills graph (Skill-it)")
    domain_column: str = Field("cluster", description="column whose values are the domains (e.g. cluster, source)")
    targets: list[TargetSpec] = Field([], description="target sets the mixture should be good at; empty = the four bundled target benchmarks (ARC-Challenge, GSM8K, HumanEval, MBPP in data/benchmarks)")
    eval_fraction: float = Field(0.5, ge=0, lt=1, description="share of each target set held out for `evaluate` and never seen by the search")
    budget_tokens: int | None = Field(None, ge=1, description="training tokens the weights are for (epoch caps); null = all tokens available")
    temperature: float = Field(3.0, gt=0, description="temperature baseline: w ~ tokens^(1/temperature)")
    constraints: MixConstraints = MixConstraints()
    proxy: ProxyConfig = ProxyConfig()
    search: SearchConfig = SearchConfig()
    cmr: CMRConfig = CMRConfig()
    skillit: SkillitConfig = SkillitConfig()

    @model_validator(mode="after")
    def _cmr_domain(self):
        if self.method == "cmr" and not self.cmr.domain:
            raise ValueError("method cmr needs cmr.domain (the domain corpus: a value of mix.domain_column)")
        return self

    def cmr_tokens(self) -> list[int]:
        """The grid's token counts (mix.cmr.tokens, or proxy.train_tokens x [1/4, 1/2, 1])."""
        t = self.proxy.train_tokens
        return self.cmr.tokens or sorted({max(1_000, t // 4), max(1_000, t // 2), t})

    def cmr_base_tokens(self) -> int:
        """Tokens of the general-only base proxy the grid runs continue from (0: from scratch)."""
        return max(self.cmr_tokens()) if self.cmr.base_tokens is None else self.cmr.base_tokens


REMIX_FORMATS = ("parquet", "megatron", "mds", "hf")
# Domain names become file and folder names of the trainer outputs (megatron/<name>.bin,
# mds/<name>/): no path separators, no leading dot, no whitespace (Megatron's --data-path is
# space-separated), no "..".
SAFE_DOMAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


def unsafe_domain_name(name: str) -> bool:
    return not SAFE_DOMAIN_NAME.fullmatch(name) or ".." in name


class RemixPhase(Model):
    fraction: float = Field(..., gt=0, le=1, description="share of the token budget in this phase (phases sum to 1)")
    weights: Any = Field("mix", description="'mix' = the weights.json mixture, or {domain: weight} (unlisted domains get 0; normalized)")
    metadata_prefix: bool = Field(True, description="with remix.metadata_prefix: prefixes are added in this phase (false = a cooldown phase without them)")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        if v == "mix":
            return v
        if not isinstance(v, dict) or not v:
            raise ValueError("use 'mix' or a mapping {domain: weight}")
        out = {}
        for k, w in v.items():
            if unsafe_domain_name(str(k)):
                raise ValueError(f"domain name {str(k)!r} cannot name a file (use letters, digits, _ . = + -; no '/', '..' or spaces)")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 or w == float("inf"):
                raise ValueError(f"weight of {k!r} is {w!r}; use a finite number >= 0")
            out[str(k)] = float(w)
        if sum(out.values()) <= 0:
            raise ValueError("all weights are 0")
        return out


class MetadataPrefixConfig(Model):
    field: str = Field("source", description="column whose value is prepended (e.g. source, url), or meta.<key> for a key of the JSON `meta` column")
    fraction: float = Field(1.0, ge=0, le=1, description="share of the documents (in phases with metadata_prefix: true) that get the prefix, chosen by a seeded hash of the sample")
    template: str = Field("{value}\n\n", description="prefix text; {value} is the field's value")
    cooldown: float = Field(0.1, ge=0, lt=1, description="without remix.phases: the last share of the token budget forms a cooldown phase (same weights) without prefixes")

    @field_validator("template")
    @classmethod
    def _template(cls, v):
        if "{value}" not in v:
            raise ValueError("must contain {value}")
        return v


class RemixSelect(Model):
    column: str = Field(..., description="score column ranking the documents within each domain (e.g. quality, fasttext_score, bench_sim_max, betr)")
    keep: float = Field(1.0, gt=0, le=1, description="keep this top share of each domain's documents by the column (the rest is never sampled; epochs count on what is kept)")
    higher_is_better: bool = Field(True, description="false for columns like perplexity")
    order: str = Field("best_first", pattern="^(best_first|random)$", description="best_first: a pass that does not take the whole domain takes its best documents first (so a small budget gets the best); random: a seeded random subset")


class RemixOrder(Model):
    by: str = Field(..., description="score column whose value orders the documents within each phase (a quality curriculum: e.g. quality, fasttext_score)")
    direction: str = Field("ascending", pattern="^(ascending|descending)$", description="ascending: lowest score first, best data last (the curriculum of 'How Learning Rate Decay Wastes Your Best Data'); descending: best first")


class RemixConfig(Model):
    weights: Path | None = Field(None, description="weights.json; null = <run.output>/mix/weights.json")
    budget_tokens: int | None = Field(None, ge=1, description="token budget of the training shards; null = the weights' budget_tokens")
    max_epochs: float | None = Field(None, gt=0, description="repeat a domain at most this often (over all phases); null = the weights' max_epochs")
    tokenized: bool = Field(True, description="also write token-id shards (.npy uint16/uint32 + offsets index)")
    tokenizer: Path | None = Field(None, description="the trainer's `tokenizers` JSON for n_tokens and token shards when it is not the run's; null = the one next to weights.json (the mix stage's), else run.tokenizer.path")
    formats: list[str] | None = Field(None, description="trainer outputs besides the mixed Parquet stream: megatron (.bin/.idx per domain and mixed), mds (MosaicML Streaming per domain), hf (Arrow per domain + interleave recipe); null = [parquet, megatron] (megatron only when token ids are written)")
    phases: list[RemixPhase] | None = Field(None, description="training phases in order, e.g. [{fraction: 0.9, weights: mix}, {fraction: 0.1, weights: {code: 0.5, wiki: 0.5}}]; null = one phase with the mix weights")
    metadata_prefix: MetadataPrefixConfig | None = Field(None, description="prepend a source/URL line to documents (metadata conditioning), with a cooldown phase without it")
    select: RemixSelect | None = Field(None, description="within-domain selection by a score column, combined with the mix weights: e.g. {column: quality, keep: 0.5}")
    order: RemixOrder | None = Field(None, description="curriculum: within each phase write the documents sorted by a score column (ties in the seeded shuffle order, missing scores last) instead of shuffled, e.g. {by: quality, direction: ascending}; null = the seeded shuffle")

    @field_validator("formats")
    @classmethod
    def _formats(cls, v):
        if v is None:
            return v
        bad = [f for f in v if f not in REMIX_FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {bad}; choose from {list(REMIX_FORMATS)}")
        if len(set(v)) != len(v):
            raise ValueError("a format is listed twice")
        return v

    @field_validator("phases")
    @classmethod
    def _phases(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one phase, or leave phases out")
        total = sum(p.fraction for p in v)
        if abs(total - 1) > 1e-6:
            raise ValueError(f"phase fractions sum to {total:.6g}, not 1")
        return v


class EvaluateProxy(Model):
    lr_schedule: str = Field("cosine", pattern="^(cosine|moderate|constant)$", description="cosine: warmup, cosine to 0.1*lr (the mix stage's); moderate: cosine to 0.5*lr; constant: lr after warmup")
    average_last: int = Field(0, ge=0, le=64, description="evaluate the mean of the last k checkpoints (k spaced evenly over the last 20 % of steps, the last at the final step); 0 or 1 = the final weights")
    data_order: str = Field("random", pattern="^(random|sequential)$", description="random: windows drawn at random (the mix stage's); sequential: windows in stream order, evenly spaced over the whole stream (a curriculum remix is seen in its order)")
    lr: float | None = Field(None, gt=0, description="peak learning rate of every arm; null = the mix stage's proxy.lr")
    sequences_per_step: int | None = Field(None, ge=1, description="sequences per optimizer step; null = the mix stage's")
    ctx: int | None = Field(None, ge=8, description="context length; null = the mix stage's")
    d_model: int | None = Field(None, ge=8, description="width (a multiple of the mix stage's n_head); null = the mix stage's")
    eval_tokens: int | None = Field(None, ge=128, description="at most this many tokens of each target eval set are scored; null = the mix stage's")

    def spec_overrides(self) -> dict:
        """The ProxySpec fields this sets (spec names: sequences_per_step is batch_size); unset (null) fields are left out,
        so configs without them keep their proxy spec and hashes."""
        d = {k: v for k, v in self.model_dump().items() if v is not None}
        if "sequences_per_step" in d:
            d["batch_size"] = d.pop("sequences_per_step")
        return d


class EvaluateConfig(Model):
    train_tokens: int = Field(400_000, ge=1_000, description="training tokens of every arm (equal for all)")
    arms: list[str] = Field(["raw", "proportional", "uniform", "temperature", "unimax", "remix"], min_length=1,
                            description="raw = the ingested corpus as is; uniform/proportional/temperature/unimax = the curated domains with that baseline's weights; mix = the curated domains with the optimizer's weights; remix = the remix shards")
    seeds: int = Field(3, ge=1, le=16, description="proxy runs per arm (seeds 0..n-1 added to run.seed; seed s of every arm shares the init and data-order seed): mean, std and paired 95 % intervals vs raw and the best baseline")
    raw: Path | None = Field(None, description="dataset dir of the raw arm; null = <run.output>/ingest")
    mix: Path | None = Field(None, description="mix output dir (weights, tokenizer, domain streams, target splits); null = <run.output>/mix")
    remix: Path | None = Field(None, description="remix output dir; null = <run.output>/remix")
    remixes: dict[str, Path] = Field({}, description="more remix arms by name, each a remix output dir, e.g. {curriculum: run/remix-cur, shuffled: run/remix}; list the names in arms")
    proxy: EvaluateProxy | None = Field(None, description="proxy trainer overrides for every arm: {lr_schedule, average_last, data_order, lr, sequences_per_step, ctx, eval_tokens}; null = the mix stage's proxy as is")
    compare: list[list[str]] = Field([], description="pairs [arm, reference]: the paired relative loss difference over seeds with its 95 % interval (e.g. [[curriculum, shuffled]])")
