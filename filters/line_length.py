"""Line-length bounds (StarCoder/The Stack: drop files with a line over 1,000 characters or a mean
line over 100): minified code, base64 blobs and serialized data, which no other filter catches."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from filters import register
from filters.base import Batch, Filter, FilterResult, check_number, first_failing


@register
class LineLengthFilter(Filter):
    """Reasons: line_length:max_line_chars, line_length:mean_line_chars. Empty documents pass."""

    name: ClassVar[str] = "line_length"
    params: ClassVar[dict[str, Any]] = {"max_line_chars": 1000, "mean_line_chars": 100}

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        for key, value in self.cfg.items():
            check_number(key, value)

    def apply(self, batch: Batch) -> FilterResult:
        stats = {"max_line_chars": np.array([max(map(len, lines), default=0) for lines in batch.lines]),
                 "mean_line_chars": np.array([sum(map(len, lines)) / max(len(lines), 1) for lines in batch.lines])}
        return FilterResult(first_failing(len(batch), [(f"line_length:{k}", stats[k] > v) for k, v in self.cfg.items() if v is not None]))
