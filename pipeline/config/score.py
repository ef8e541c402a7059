"""Config of the score stage: its scorers, their training data and targets, thresholds, quality."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import ConfigError, Model, absolute, local_model


# ---------------------------------------------------------------- score (quality scoring)

BUNDLED_BENCHMARKS = Path(__file__).resolve().parents[2] / "data" / "benchmarks"
BUNDLED_REFERENCE_LM = Path(__file__).resolve().parents[2] / "data" / "reference_lm" / "en"  # English, see its README
DEFAULT_MAX_DOCS = 100_000  # training samples (fastText labels, n-gram LMs): held in memory, so always finite


class LabelSource(Model):
    path: Path | None = Field(None, description="dataset dir, Parquet or JSONL file (or dir of them); null = the score stage's input")
    sources: list[str] | None = Field(None, description="only documents of these sources")
    text_field: str = Field("text", description="text field of raw JSONL/Parquet files")
    source_field: str = Field("source", description="field holding the source (e.g. `domain` in the raw sample JSONL)")
    max_docs: int = Field(DEFAULT_MAX_DOCS, ge=1, description="a deterministic sample of at most this many documents (run.seed); memory is O(max_docs), never O(corpus)")


class TargetSpec(Model):
    name: str = Field(..., pattern=r"^[a-z0-9_]+$", description="target set name; becomes column bench_sim_<name> and reason contaminated:<name>")
    path: Path = Field(..., description="JSONL/Parquet file or dataset dir of examples")
    text_field: str = Field("text", description="field holding the example text")
    id_field: str | None = Field("id", description="field holding the example id (null = line number)")


class FastTextParams(Model):
    dim: int = Field(32, ge=1, le=1024, description="fastText embedding size")
    epoch: int = Field(10, ge=1, description="training epochs")
    lr: float = Field(0.2, gt=0, description="learning rate")
    wordNgrams: int = Field(2, ge=1, le=5, description="word n-grams (DCLM: 2)")
    minCount: int = Field(2, ge=1, description="minimum word count")
    bucket: int = Field(200_000, ge=1, description="hash buckets of word n-grams (model size = (words + bucket) x dim x 4 bytes)")


class ColumnLabels(Model):
    column: str = Field(..., description="score column whose top/bottom quantiles become positives/negatives")
    path: Path | None = Field(None, description="dataset dir holding the column; null = the score stage's input")


class PreSelectConfig(Model):
    targets: list[TargetSpec] = Field([], description="target set(s) the LMs are ranked on; empty = the four bundled target benchmarks (ARC-Challenge, GSM8K, HumanEval, MBPP in data/benchmarks)")
    lm_docs: int = Field(3_000, ge=10, description="documents of the input the n-gram LMs are trained on")
    pool_docs: int = Field(3_000, ge=10, description="other documents of the input that get PreSelect scores and labels")
    models: list[tuple[int, float]] = Field([(1, 1.0), (2, 0.1), (2, 1.0), (3, 0.1), (3, 0.3), (3, 1.0)],
                                            description="LMs of different strength: (n-gram order, fraction of lm_docs) each; at least 3")

    @field_validator("models")
    @classmethod
    def _models(cls, v: list) -> list:
        if len(v) < 3 or len(set(v)) != len(v):
            raise ValueError("PreSelect needs at least 3 distinct (order, fraction) models")
        for order, frac in v:
            if not (1 <= order <= 6 and 0 < frac <= 1):
                raise ValueError(f"model ({order}, {frac}): order must be 1..6 and fraction in (0, 1]")
        return v


class FastTextTrainConfig(Model):
    positive: list[LabelSource] = Field([], description="positive documents (with negative:)")
    negative: list[LabelSource] = Field([], description="negative documents")
    from_column: ColumnLabels | None = Field(None, description="labels from the top/bottom quantiles of another score column")
    preselect: PreSelectConfig | None = Field(None, description="PreSelect labels: documents whose losses rank n-gram LMs like the target set does")
    top: float = Field(0.2, gt=0, lt=1, description="from_column/preselect: this top fraction are positives")
    bottom: float = Field(0.5, gt=0, lt=1, description="from_column/preselect: this bottom fraction are negatives")
    max_per_class: int = Field(20_000, ge=2, description="balanced classes: at most this many documents each")
    val_fraction: float = Field(0.1, ge=0, lt=0.9, description="held out for the validation precision/recall in the metadata")
    params: FastTextParams = FastTextParams()

    @model_validator(mode="after")
    def _one_mode(self) -> "FastTextTrainConfig":
        modes = [bool(self.positive or self.negative), self.from_column is not None, self.preselect is not None]
        if sum(modes) != 1:
            raise ValueError("give exactly one of positive+negative, from_column or preselect")
        if modes[0] and not (self.positive and self.negative):
            raise ValueError("positive and negative go together")
        if self.top + self.bottom > 1:
            raise ValueError(f"top ({self.top}) + bottom ({self.bottom}) must not exceed 1")
        return self


class FastTextScoreConfig(Model):
    model: Path | None = Field(None, description="fastText .bin; null = train one (train:) on this run's data, cached by hash")
    train: FastTextTrainConfig | None = Field(None, description="how to train the classifier (also used by `curate train-fasttext`)")
    positive_label: str = Field("pos", description="label whose probability is the score")
    column: str = Field("fasttext_score", pattern=r"^[A-Za-z0-9_]+$", description="output column")

    @model_validator(mode="after")
    def _model_or_train(self) -> "FastTextScoreConfig":
        if (self.model is None) == (self.train is None):
            raise ValueError("give exactly one of model (a trained .bin) or train (train it in the run)")
        return self


class LMTrainConfig(Model):
    data: LabelSource = Field(LabelSource(), description="reference documents (CCNet: Wikipedia); default: the score stage's input")
    order: int = Field(3, ge=2, le=6, description="n-gram order (KenLM loads order >= 2)")
    min_count: int = Field(1, ge=1, description="rarer words become <unk> (lmplz keeps all: 1)")


class PerplexityConfig(Model):
    reference: str = Field("bundled", description="the LM documents are scored against (CCNet: Wikipedia): bundled = English prose "
                           "(data/reference_lm), a path (.npz/.arpa/.bin or their stem), or none = only the LM of train:")
    reference_lang: str | None = Field("en", description="the reference LM's language: documents whose `lang` differs go to the "
                                       "LM of train: when there is one; null = every document gets the reference")
    model: Path | None = Field(None, description="same as reference: <path> (the older spelling)")
    train: LMTrainConfig | None = Field(None, description="an LM trained in the run (on the input unless data.path), cached by hash: "
                                        "for the other languages, or for everything with reference: none")
    backend: str = Field("auto", pattern="^(auto|numpy|kenlm)$", description="auto = kenlm when it imports, else our numpy scorer (same numbers)")
    buckets: list[float] = Field([1 / 3, 2 / 3], description="perplexity quantiles splitting head / middle / tail (CCNet)")
    group_by: str | None = Field("lang", description="bucket quantiles per value of this column (CCNet: per language); null = global")
    min_group_docs: int = Field(50, ge=1, description="smaller groups use the global quantiles")

    @model_validator(mode="after")
    def _model_or_train(self) -> "PerplexityConfig":
        if self.model is not None:
            if "reference" in self.model_fields_set:
                raise ValueError("give reference (or its older spelling model), not both")
            self.reference = str(self.model)  # one spelling from here on
            self.model = None
        if self.reference == "none" and self.train is None:
            raise ValueError("reference: none needs train: (an LM trained in the run), or use reference: bundled | <path>")
        if self.reference == "bundled" and self.reference_lang not in ("en", None):
            raise ValueError(f"reference_lang: the bundled reference LM is English (en), not {self.reference_lang!r}")
        if len(self.buckets) != 2 or not 0 < self.buckets[0] < self.buckets[1] < 1:
            raise ValueError("buckets: two increasing quantiles in (0, 1), e.g. [0.333, 0.667]")
        return self


class BenchSimConfig(Model):
    targets: list[TargetSpec] = Field([], description="target sets; empty = the four bundled target benchmarks (ARC-Challenge, GSM8K, HumanEval, MBPP in data/benchmarks)")
    k: int = Field(5, ge=1, description="score = mean cosine of the k most similar examples")
    model: str | None = Field(None, description="local sentence-transformers dir; null = all-MiniLM-L6-v2 (offline package)")
    max_tokens: int = Field(128, ge=8, le=512, description="tokens of each document the embedder reads")
    docs_per_forward: int = Field(256, ge=1, description="documents per forward pass")


class BetrConfig(Model):
    targets: list[TargetSpec] = Field([], description="target sets; empty = the mix stage's targets when the config has a mix section, else the four bundled target benchmarks")
    eval_fraction: float | None = Field(None, ge=0, lt=1, description="held-out share of each target set, never used to rank data; null = mix.eval_fraction (0.5): the same split, so `evaluate` stays honest")
    sample_docs: int = Field(3000, ge=20, description="documents embedded to label the ranker (the rest of the corpus is scored by fastText only)")
    top: float = Field(0.2, gt=0, lt=1, description="share of the sample labelled positive (most similar to the targets)")
    bottom: float = Field(0.5, gt=0, lt=1, description="share of the sample labelled negative (least similar)")
    k: int = Field(5, ge=1, description="similarity = mean cosine of the k most similar target examples, averaged over target sets")
    model: str | None = Field(None, description="local sentence-transformers dir; null = all-MiniLM-L6-v2 (offline package)")
    max_tokens: int = Field(64, ge=8, le=512, description="tokens of each document/example the embedder reads")
    docs_per_forward: int = Field(256, ge=1, description="documents per forward pass")
    params: dict = Field({"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 64, "minCount": 2}, description="fastText train_supervised parameters (a few hundred labelled documents per class need ~25 epochs)")
    column: str = Field("betr", pattern=r"^[A-Za-z0-9_]+$", description="output column (P(similar to the targets))")


class MatesConfig(Model):
    targets: list[TargetSpec] = Field([], description="target sets; empty = the mix stage's targets when the config has a mix section, else the four bundled target benchmarks")
    eval_fraction: float | None = Field(None, ge=0, lt=1, description="held-out share of each target set, never used to choose data; null = mix.eval_fraction (0.5), the split BETR and evaluate use")
    sample_docs: int = Field(1000, ge=20, description="documents whose influence is probed on the proxy (the rest of the corpus is scored by fastText only)")
    warmup_docs: int = Field(1000, ge=1, description="other documents the proxy LM is warmed up on before probing")
    vocab_size: int = Field(2048, ge=512, le=65535, description="byte-level BPE trained on the two samples")
    n_layer: int = Field(2, ge=1, le=24, description="proxy LM layers")
    n_head: int = Field(4, ge=1, description="proxy LM attention heads")
    d_model: int = Field(128, ge=8, description="proxy LM width (a multiple of n_head)")
    ctx: int = Field(64, ge=8, le=2048, description="proxy LM context (tokens per window)")
    sequences_per_step: int = Field(8, ge=1, description="warm-up batch size")
    lr: float = Field(2e-3, gt=0, description="warm-up peak learning rate (AdamW)")
    warmup_tokens: int = Field(100_000, ge=1_000, description="tokens the proxy trains on before probing")
    doc_tokens: int = Field(256, ge=2, description="each document's first this many tokens are probed")
    target_tokens: int = Field(4096, ge=16, description="tokens of each target set's search part in the target batch")
    target_weighting: str = Field("balanced", pattern="^(mean|balanced)$", description="target loss = mean of the sets' losses, or balanced: each set weighted by 1 / the norm of its loss gradient (so no set's gradient dominates the influence)")
    method: str = Field("gradient", pattern="^(gradient|probe)$", description="gradient = first-order influence g_doc . g_target; probe = the target loss change after one SGD step (a forward of the whole target batch per document: slower)")
    probe_lr: float = Field(0.05, gt=0, le=10, description="SGD step of the probe (method probe, and the check)")
    check_docs: int = Field(50, ge=0, description="documents on which the first-order estimate is checked against the probe (Spearman in the model meta); 0 = no check")
    top: float = Field(0.3, gt=0, lt=1, description="share of the probed sample labelled positive (highest influence)")
    bottom: float = Field(0.3, gt=0, lt=1, description="share labelled negative (lowest influence)")
    params: dict = Field({"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 64, "minCount": 2}, description="fastText train_supervised parameters")
    column: str = Field("mates_influence", pattern=r"^[A-Za-z0-9_]+$", description="output column (P(high influence on the targets))")

    @model_validator(mode="after")
    def _shape(self) -> "MatesConfig":
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
        if self.top + self.bottom > 1:
            raise ValueError(f"top ({self.top}) + bottom ({self.bottom}) must not exceed 1")
        return self


class DecontamConfig(Model):
    targets: list[TargetSpec] = Field([], description="benchmarks; empty = every bundled one (data/benchmarks/*.jsonl: 24 evaluation sets)")
    ngram: int = Field(13, ge=3, le=64, description="word n-gram size (GPT-3 / OLMo: 13)")
    min_ngram: int = Field(8, ge=3, description="examples shorter than ngram words but at least this long count as one n-gram")
    min_matches: int = Field(1, ge=1, description="matching n-gram windows needed to call a document contaminated")
    action: str = Field("reject", pattern="^(reject|flag)$", description="reject (reason contaminated:<benchmark>) or only flag (column `contaminated`)")


class InfiniGramConfig(Model):
    index: Path = Field(..., description="∞-gram index dir of a reference dataset (curate ngram build REF -o DIR --tokenizer TOK)")
    column: str = Field("infini_gram", pattern=r"^[a-z0-9_]+$", description="column prefix: <column>_logprob, <column>_zero, <column>_ctx (scorers/infini_gram.py)")
    max_tokens: int | None = Field(1024, ge=1, description="score each document's first this many tokens (cost grows with tokens); null = all")


class ToxicityConfig(Model):
    model: Path | None = Field(None, description="dir with vectorizer.joblib + model.joblib (scikit-learn TF-IDF + calibrated linear SVM, the alt-profanity-check layout; a pickle: only files you trust); null = the model alt-profanity-check ships (MIT)")
    column: str = Field("toxicity", pattern=r"^[A-Za-z0-9_]+$", description="output column: P(offensive) in [0, 1]")
    unit: str = Field("document", pattern="^(document|line)$", description="document = the classifier on the whole text; line = the most offensive non-blank line (finds a few offensive lines in a long document, which the whole-text score dilutes; more false positives on short lines)")
    threshold: float | None = Field(None, ge=0, le=1, description="reject documents scoring above this (reason `toxicity`, in the select pass: changing it never re-scores); null = score only")


class SelectRule(Model):
    column: str = Field(..., description="score (or any numeric) column")
    min: float | None = Field(None, description="reject values below")
    max: float | None = Field(None, description="reject values above")
    min_quantile: float | None = Field(None, ge=0, le=1, description="reject values below this corpus quantile")
    max_quantile: float | None = Field(None, ge=0, le=1, description="reject values above this corpus quantile")
    by: str | None = Field(None, description="quantiles per value of this column (e.g. lang, source)")
    min_group_docs: int = Field(50, ge=1, description="with by: smaller groups use the corpus-wide quantile")
    sources: list[str] | None = Field(None, description="apply only to these sources")
    exclude_sources: list[str] = Field([], description="never apply to these sources")

    @model_validator(mode="after")
    def _bounds(self) -> "SelectRule":
        if all(v is None for v in (self.min, self.max, self.min_quantile, self.max_quantile)):
            raise ValueError(f"select rule on {self.column!r}: give min, max, min_quantile or max_quantile")
        return self


class QualityTerm(Model):
    column: str = Field(..., description="score column")
    weight: float = Field(1.0, gt=0, description="weight in the average of percentile ranks")
    lower_is_better: bool = Field(False, description="e.g. perplexity")


class ScoreConfig(Model):
    fasttext: FastTextScoreConfig | None = Field(None, description="fastText quality classifier -> fasttext_score")
    perplexity: PerplexityConfig | None = Field(None, description="n-gram LM perplexity -> perplexity, ppl_bucket")
    bench_sim: BenchSimConfig | None = Field(None, description="embedding similarity to benchmarks -> bench_sim_<name>, bench_sim_max")
    decontam: DecontamConfig | None = Field(None, description="n-gram overlap with benchmarks -> contaminated")
    betr: BetrConfig | None = Field(None, description="benchmark-targeted ranking (BETR): embedding similarity of a sample to the targets' search examples, distilled into fastText -> betr")
    infini_gram: InfiniGramConfig | None = Field(None, description="∞-gram log-probability against a reference index -> infini_gram_logprob, _zero, _ctx")
    toxicity: ToxicityConfig | None = Field(None, description="offensive-language classifier (alt-profanity-check) -> toxicity; threshold: rejects above it")
    mates: MatesConfig | None = Field(None, description="data influence (MATES): first-order influence of a sample on the targets under a proxy LM, distilled into fastText -> mates_influence")
    quality: list[QualityTerm] = Field([], description="combine scores into `quality` = weighted mean of corpus percentile ranks")
    select: list[SelectRule] = Field([], description="thresholds applied after scoring (re-thresholding never re-scores)")

    @model_validator(mode="after")
    def _something(self) -> "ScoreConfig":
        if not any((self.fasttext, self.perplexity, self.bench_sim, self.decontam, self.betr, self.infini_gram, self.toxicity, self.mates)):
            raise ValueError("nothing to score: add fasttext, perplexity, bench_sim, decontam, betr, infini_gram, toxicity or mates")
        return self


# The default search/eval targets (mix, PreSelect, bench_sim, BETR): the four original sets, so adding
# benchmarks to data/benchmarks does not change the default run. Decontamination uses all of them.
BUNDLED_TARGETS = ("arc_challenge", "gsm8k", "humaneval", "mbpp")


def bundled_targets() -> list[TargetSpec]:
    return [TargetSpec(name=n, path=BUNDLED_BENCHMARKS / f"{n}.jsonl") for n in BUNDLED_TARGETS]


def bundled_benchmarks() -> list[TargetSpec]:
    """Every bundled benchmark (data/benchmarks/*.jsonl): the default of score.decontam.targets."""
    return [TargetSpec(name=p.stem, path=p) for p in sorted(BUNDLED_BENCHMARKS.glob("*.jsonl"))]


def check_score(score: ScoreConfig, path: str, base: Path) -> None:
    """Resolve relative paths and check that every file the score stage needs exists."""
    def need(p: Path | None, key: str, what: str) -> Path | None:
        if p is None:
            return None
        p = absolute(p, base)
        if not p.exists():
            raise ConfigError(f"{path}: score.{key}: {p} does not exist; {what}")
        return p

    def targets(ts: list[TargetSpec], key: str) -> None:
        names = [t.name for t in ts]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: score.{key}: duplicate target names {names}")
        for i, t in enumerate(ts):
            t.path = need(t.path, f"{key}[{i}].path", "give a JSONL/Parquet file or dataset dir of examples")

    def sources(ls: list[LabelSource], key: str) -> None:
        for i, s in enumerate(ls):
            s.path = need(s.path, f"{key}[{i}].path", "give a dataset dir or a JSONL/Parquet file")

    ft = score.fasttext
    if ft:
        if ft.model is not None:
            ft.model = need(ft.model, "fasttext.model", "train one with `curate train-fasttext` or use fasttext.train")
        else:
            sources(ft.train.positive, "fasttext.train.positive")
            sources(ft.train.negative, "fasttext.train.negative")
            if ft.train.from_column is not None:
                ft.train.from_column.path = need(ft.train.from_column.path, "fasttext.train.from_column.path", "give a dataset dir")
            if ft.train.preselect is not None:
                targets(ft.train.preselect.targets, "fasttext.train.preselect.targets")
    pp = score.perplexity
    if pp:
        if pp.reference not in ("bundled", "none"):
            from pipeline.models.lm import model_files

            pp.reference = str(absolute(Path(pp.reference), base))
            if not model_files(pp.reference):
                raise ConfigError(f"{path}: score.perplexity.reference: no .npz/.arpa/.bin model at {pp.reference}; "
                                  "train one with `curate train-lm`, or use reference: bundled")
        if pp.train is not None:
            pp.train.data.path = need(pp.train.data.path, "perplexity.train.data.path", "give a dataset dir or a JSONL/Parquet file")
    if score.betr:
        targets(score.betr.targets, "betr.targets")
        score.betr.model = local_model(score.betr.model, base, path, "score.betr.model")
    if score.mates:
        targets(score.mates.targets, "mates.targets")
    if score.bench_sim:
        targets(score.bench_sim.targets, "bench_sim.targets")
        score.bench_sim.model = local_model(score.bench_sim.model, base, path, "score.bench_sim.model")
    if score.infini_gram:
        ix = need(score.infini_gram.index, "infini_gram.index", "build it with curate ngram build REF_DIR -o DIR --tokenizer TOK.json")
        if not (ix / "index.json").exists():
            raise ConfigError(f"{path}: score.infini_gram.index: {ix} is not a finished ∞-gram index (no index.json); build or resume it with curate ngram build")
        score.infini_gram.index = ix
    if score.toxicity and score.toxicity.model is not None:
        score.toxicity.model = need(score.toxicity.model, "toxicity.model", "give a dir with vectorizer.joblib and model.joblib, or null for the model alt-profanity-check ships")
    if score.decontam:
        targets(score.decontam.targets, "decontam.targets")
        if score.decontam.min_ngram > score.decontam.ngram:
            raise ConfigError(f"{path}: score.decontam.min_ngram: must not exceed ngram ({score.decontam.ngram})")
