"""`curate report RUN_DIR`: one self-contained report.html over a run's stage dirs (registered as the
`curate.commands` entry point `report`; it reads files only and imports no stage).

- `build`     the entry points `build_report` / `write_report`, the page and its sections in order
- `context`   RunContext: the run dir, the stages it holds, cluster labels
- `funnel`    summary; docs and tokens per stage, rejections per reason and source
- `scores`    score histograms with thresholds, models, decontamination
- `clusters`  cluster sizes and terms, the 2-D PCA map
- `mixture`   mixture weights and search trace; evaluation arms and remix shares
- `charts`    matplotlib (Agg) figures as inline PNGs
- `markup`    escaping, number formats, tables, notes, JSON reading that names the file
"""
from stages.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
