"""`curate report`: report.html of a real small run (ingest, filter, dedup, score, cluster on
data/sample_small, no Ray) plus synthetic mix/remix/evaluate files, checked in headless Chromium.

The browser test needs `chromium`, which `make test` installs (scripts/install_test_deps.sh); where it
could not (no root, no apt-get) the test skips with the one-line reason that script recorded, else
it FAILS with an instruction, unless CURATE_SKIP_BROWSER=1. CURATE_CHROMIUM names another binary.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import config, driver
from stages.report import build_report, write_report
from tests.conftest import small_config

# Cheap scorers (no benchmark-similarity embedding) and a small clustering: ~25 s on 2 cores.
EXTRA = {
    "dedup": {"method": ["exact", "fuzzy"]},
    "score": {"fasttext": {"train": {"preselect": {"lm_docs": 300, "pool_docs": 400}, "params": {"epoch": 3}}},
              "perplexity": {"backend": "numpy", "train": {"order": 2, "data": {"max_docs": 300}}},
              "decontam": {"action": "reject"},
              "quality": [{"column": "fasttext_score", "weight": 2}, {"column": "perplexity", "lower_is_better": True}],
              "select": [{"column": "fasttext_score", "min_quantile": 0.1},
                         {"column": "perplexity", "max_quantile": 0.95, "by": "lang", "min_group_docs": 20}]},
    "cluster": {"embed": {"max_tokens": 16}, "kmeans": {"k_init": 16}, "refine": {"k": 6}},
}
NASTY = '<script>alert("x")</script> & "quotes"'  # text from data must come out escaped


def build_run(tmp: Path) -> Path:
    cfg_path = small_config(tmp, extra=yaml.safe_dump(EXTRA))
    cfg = config.load(cfg_path)
    results = driver.run(cfg, driver.plan(cfg), use_ray=False, show_progress=False)
    assert all(r.ok for r in results), [r.failed for r in results]
    return Path(cfg.run.output)


def write_synthetic_stages(run: Path) -> None:
    """mix/weights.json + search.parquet, remix/_remix.json, evaluate/evaluate.json in the agreed
    schema, with the real run's cluster ids as domains."""
    cj = json.loads((run / "cluster" / "clusters.json").read_text())
    doms = [str(c["id"]) for c in cj["clusters"]]
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(len(doms)))
    tokens = {d: int(c["tokens"]) for d, c in zip(doms, cj["clusters"])}
    total = sum(tokens.values()) or 1
    (run / "mix").mkdir(exist_ok=True)
    weights = {"method": "climb", "domain_column": "cluster", "budget_tokens": 1_000_000, "max_epochs": 4.0, "predicted_loss": 3.2,
               "domains": [{"name": d, "weight": round(float(x), 4), "tokens": int(x * 1e6), "docs": int(x * 5000),
                            "epochs": round(float(x * 1e6 / max(tokens[d], 1)), 2)} for d, x in zip(doms, w)],
               "baselines": {"uniform": {d: round(1 / len(doms), 4) for d in doms},
                             "proportional": {d: round(tokens[d] / total, 4) for d in doms}}}
    (run / "mix" / "weights.json").write_text(json.dumps(weights, indent=1))
    rows = []
    for rnd in (1, 2, 3):
        for i in range(8):
            ww = rng.dirichlet(np.ones(len(doms)))
            loss = 3.0 + float(rng.random()) / rnd if (rnd, i) != (3, 0) else 2.5  # the best run's name is nasty
            rows.append({"round": rnd, "run": f"r{rnd}-{i:02d}" + (NASTY if (rnd, i) == (3, 0) else ""), "loss": loss,
                         "predicted": None if rnd == 1 else loss + float(rng.normal(0, 0.05)), "seconds": 1.5,
                         **{f"w_{d}": float(x) for d, x in zip(doms, ww)},
                         "loss_gsm8k": loss + 0.1, "loss_arc_challenge": loss - 0.1})
    pq.write_table(pa.Table.from_pylist(rows), run / "mix" / "search.parquet")
    (run / "remix").mkdir(exist_ok=True)
    shares = w + rng.normal(0, 0.005, len(w))
    (run / "remix" / "_remix.json").write_text(json.dumps({
        "budget_tokens": 1_000_000, "max_share_error": float(np.abs(shares - w).max()),
        "domains": [{"name": d, "weight": float(x), "tokens": int(s * 1e6), "share": float(s), "epochs": 1.2, "samples": 100 + i}
                    for i, (d, x, s) in enumerate(zip(doms, w, shares))]}))  # the remix stage's schema: a list
    (run / "evaluate").mkdir(exist_ok=True)
    targets = ["gsm8k", "arc_challenge", "humaneval"]
    arms = [{"arm": a, "loss": 4.1 - j * 0.2, "losses": {t: 4.1 - j * 0.2 + k * 0.05 for k, t in enumerate(targets)},
             "vs_raw": -j * 0.2, "seconds": 30.1} for j, a in enumerate(["raw", "curated", "remix"])]
    (run / "evaluate" / "evaluate.json").write_text(json.dumps({"tokens": 400_000, "targets": targets, "arms": arms}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    run = build_run(tmp)
    write_synthetic_stages(run)
    return run


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    return write_report(run_dir)


def _charts(text: str) -> list[str]:
    return re.findall(r'<img class="chart"[^>]*>', text)


# ---------------------------------------------------------------- content (no browser)


def test_report_sections_and_self_contained(run_dir, report):
    assert report == run_dir / "report.html"
    text = report.read_text()
    for anchor in ("summary", "funnel", "score", "clusters", "mixture", "evaluate"):
        assert f'<section id="{anchor}">' in text, anchor
    assert 'class="error"' not in text, re.findall(r'class="error">([^<]*)', text)
    # self-contained: no external URL, no script, every image inline
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "<script" not in text and "<link" not in text and "url(" not in text and "@import" not in text
    charts = _charts(text)
    # funnel, reasons x2 (filter, dedup), score hists, decontam, cluster sizes, cluster map, weights,
    # search trace, evaluate, remix
    assert len(charts) >= 11, len(charts)
    assert all('src="data:image/png;base64,' in c for c in charts)
    # escaped data text
    assert NASTY not in text and html.escape(NASTY) in text
    # the PCA map came from the embedding cache, not the centroid fallback
    assert "PCA of the embeddings of" in text
    # numbers from the run: filter's rejection reasons, the clusters' terms, the arms
    stats = json.loads((run_dir / "filter" / "_stats.json").read_text())
    assert all(html.escape(r) in text for r in list(stats["reasons"])[:5])
    cj = json.loads((run_dir / "cluster" / "clusters.json").read_text())
    assert any(c["top_terms"] and html.escape(c["top_terms"][0]) in text for c in cj["clusters"])
    assert "remix" in text and "4.1" in text


def test_deterministic_except_timestamp(run_dir, report):
    first = report.read_text()
    stamp = re.search(r"<td>generated</td><td>([^<]+)</td>", first).group(1)
    assert build_report(run_dir, generated=stamp) == first


def test_missing_and_corrupt_files_are_reported(run_dir, tmp_path):
    run = tmp_path / "broken"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("_work", "_models", "_scores", "report.html"))
    (run / "mix" / "weights.json").write_text("{not json")
    (run / "evaluate" / "evaluate.json").unlink()
    (run / "filter" / "_stats.json").write_text("")
    (run / "score" / "_score.json").write_text("[1, 2")
    shutil.rmtree(run / "cluster" / "_embeddings")
    man = json.loads((run / "cluster" / "_manifest.json").read_text())
    man["embeddings"].pop("cache_dir", None)  # else the map reads the original run's cache
    (run / "cluster" / "_manifest.json").write_text(json.dumps(man))
    out = write_report(run, tmp_path / "sub" / "r.html")
    text = out.read_text()
    assert out.exists()
    assert "mix/weights.json could not be read" in text
    assert "evaluate/evaluate.json is missing" in text
    assert "filter/_stats.json could not be read" in text
    assert "score/_score.json could not be read: not valid JSON" in text
    assert "The embedding cache is absent" in text  # centroid fallback
    assert len(_charts(text)) >= 8  # everything else is still drawn
    # a run dir with only one stage: only its sections
    only = tmp_path / "only"
    shutil.copytree(run_dir / "ingest", only / "ingest")
    text = write_report(only).read_text()
    assert '<section id="funnel">' in text and '<section id="clusters">' not in text and '<section id="mixture">' not in text
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope")


# ---------------------------------------------------------------- real headless Chromium

CHECK_JS = """
<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push('error: ' + (e.message || (e.target && (e.target.src || '').slice(0, 60)))); }, true);
(function () { var ce = console.error; console.error = function () { window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var charts = Array.prototype.slice.call(document.querySelectorAll('img.chart, svg.chart'));
  var bad = charts.filter(function (c) {
    var r = c.getBoundingClientRect();
    return r.width < 50 || r.height < 50 || (c.tagName === 'IMG' && !(c.complete && c.naturalWidth > 0 && c.naturalHeight > 0));
  }).map(function (c) { return c.getAttribute('alt'); });
  var out = document.createElement('pre');
  out.id = 'curate-check';
  out.textContent = 'CURATE_CHECK ' + JSON.stringify({charts: charts.length, bad: bad, errors: window.__errors,
                                                   sections: document.querySelectorAll('section').length});
  document.body.appendChild(out);
});
</script>
"""


def _recorded_skip(what: str) -> str | None:
    """The reason scripts/install_test_deps.sh (run by `make test`) recorded for not installing `what`."""
    p = Path(sys.prefix) / "test-skips.txt"
    lines = p.read_text().splitlines() if p.exists() else []
    return next((ln.split(": ", 1)[1] for ln in lines if ln.startswith(f"{what}: ")), None)


def chromium_bin() -> str | None:
    for b in (os.environ.get("CURATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if b and shutil.which(b):
            return shutil.which(b)
    return None


def chromium(binary: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    flags = ["--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--hide-scrollbars", "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
             # Chromium refuses to run as root with its sandbox, and containers often lack the user
             # namespaces it needs otherwise; the page is our own local file
             "--no-sandbox"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    """Chromium's stderr lines that are page console messages or uncaught exceptions. The page logs
    nothing by design, so any CONSOLE line counts."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def test_report_renders_in_headless_chromium(report, tmp_path):
    if os.environ.get("CURATE_SKIP_BROWSER") == "1":
        pytest.skip("CURATE_SKIP_BROWSER=1")
    binary = chromium_bin()
    if binary is None and (reason := _recorded_skip("browser")):
        pytest.skip(reason)  # make test could not install Chromium here and said why, in one line
    if binary is None:
        pytest.fail("headless Chromium is not installed: run scripts/install_chromium.sh (as root; apt-get install chromium), "
                    "or set CURATE_SKIP_BROWSER=1 to skip this test")
    text = report.read_text()
    n_charts = len(_charts(text))
    profile = tmp_path / "profile"

    # (a)+(b): the report with a checking script injected first in <head>, DOM dumped after load
    checked = tmp_path / "checked.html"
    checked.write_text(text.replace("<head>", "<head>" + CHECK_JS, 1))
    p = chromium(binary, f"--user-data-dir={profile}-1", "--window-size=1280,2000", "--dump-dom", checked.as_uri())
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"CURATE_CHECK (\{.*?\})</pre>", p.stdout)
    assert m, f"check script did not run; stdout tail: {p.stdout[-500:]!r}; stderr tail: {p.stderr[-2000:]}"
    res = json.loads(html.unescape(m.group(1)))
    assert res["errors"] == [], res["errors"]
    assert res["charts"] == n_charts and res["bad"] == [], res
    assert res["sections"] == 6
    assert console_errors(p.stderr) == [], console_errors(p.stderr)

    # (a)+(c): the unmodified report: no console messages, and a screenshot that is not blank
    shot = tmp_path / "shot.png"
    p = chromium(binary, f"--user-data-dir={profile}-2", "--window-size=1280,3000", f"--screenshot={shot}", report.as_uri())
    assert p.returncode == 0 and shot.exists(), p.stderr[-3000:]
    assert console_errors(p.stderr) == [], console_errors(p.stderr)
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert im.shape[0] >= 2000 and im.shape[1] >= 1200, im.shape
    assert im.std() > 20, im.std()  # a blank (all white) page has 0
    # several distinct colours in the plot area, not only the page background and text
    colours = np.unique((im[::4, ::4] // 32).reshape(-1, 3), axis=0)
    assert len(colours) > 30, len(colours)
