"""`curate report RUN_DIR`: one self-contained report.html over a run's stage dirs (registered as the
`curate.commands` entry point `report`; it reads files only and imports no stage)."""
from stages.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
