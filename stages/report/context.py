"""What every section of the report reads: the run dir, which stages it holds, and the cluster
labels (from clusters.json, read once) that the cluster, mixture and remix sections share.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import io
from stages.report.markup import read_json

SEED = 0  # of every sample the report draws: same run dir, same bytes


class RunContext:
    """A run dir: `stages` present (in pipeline order) and `manifest_stages`, those with a manifest."""

    def __init__(self, run_dir: Path):
        from pipeline.config import STAGES

        self.run = Path(run_dir)
        self.stages = [s for s in STAGES if (self.run / s).is_dir()]
        self.manifest_stages = [s for s in self.stages if (self.run / s / io.MANIFEST).exists()]
        self._clusters_json: dict | None = None

    def stage_dir(self, stage: str) -> Path:
        return self.run / stage

    def clusters_json(self) -> dict:
        if self._clusters_json is None:
            self._clusters_json = read_json(self.stage_dir("cluster") / "clusters.json")
        return self._clusters_json

    def cluster_label(self, cluster_id: Any, n_terms: int = 3) -> str:
        """"<id>: <top terms>" of a cluster, or its id alone when clusters.json cannot tell."""
        try:
            cluster = {str(c["id"]): c for c in self.clusters_json().get("clusters", [])}.get(str(cluster_id))
        except Exception:  # noqa: BLE001
            cluster = None
        terms = ", ".join((cluster or {}).get("top_terms", [])[:n_terms])
        return f"{cluster_id}: {terms}" if terms else str(cluster_id)

    def domain_label(self, name: str, column: str | None) -> str:
        """A mixture domain's label: the cluster label when the domains are clusters."""
        if column == "cluster" and (self.stage_dir("cluster") / "clusters.json").exists():
            return self.cluster_label(name, 2)
        return str(name)
