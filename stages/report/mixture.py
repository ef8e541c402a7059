"""The report's mixture and evaluation sections: final weights vs the baselines and the search trace
(mix/weights.json, mix/search.parquet); target loss per arm (evaluate/evaluate.json) and the remix's
realised token shares vs its weights (remix/_remix.json).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import intervals
from stages.report.charts import colors, figure, grouped_bars, img, style
from stages.report.context import RunContext
from stages.report.markup import fmt, note, number, problem, read_json, table


def mixture(ctx: RunContext) -> str:
    mix_dir = ctx.stage_dir("mix")
    out = []
    if (mix_dir / "weights.json").exists():
        try:
            out.append(weights(ctx, read_json(mix_dir / "weights.json")))
        except Exception as e:  # noqa: BLE001
            out.append(note(problem("mix/weights.json", e), "error"))
    else:
        out.append(note("mix/weights.json is missing: no mixture weights."))
    if (mix_dir / "search.parquet").exists():
        try:
            out.append(search_trace(mix_dir / "search.parquet"))
        except Exception as e:  # noqa: BLE001
            out.append(note(problem("mix/search.parquet", e), "error"))
    else:
        out.append(note("mix/search.parquet is missing: no search trace."))
    return "\n".join(out)


def weights(ctx: RunContext, weights_doc: dict) -> str:
    """The method's summary, then the weight per domain against every baseline (chart and table)."""
    column = weights_doc.get("domain_column")
    domains = weights_doc.get("domains", [])
    out = [table(["method", "domain column", "budget tokens", "max epochs", "predicted loss"],
                 [[str(weights_doc.get("method", "?")), str(column or "?"), weights_doc.get("budget_tokens"), weights_doc.get("max_epochs"),
                   weights_doc.get("predicted_loss")]],
                 numeric={2, 3, 4}, cls="kv")]
    if not domains:
        return "\n".join(out) + note("weights.json lists no domains.")
    names = [str(x.get("name")) for x in domains]
    baselines = weights_doc.get("baselines") or {}
    series = {"final": [float(x.get("weight", 0)) for x in domains]}
    for baseline, baseline_weights in sorted(baselines.items()):
        series[baseline] = [float((baseline_weights or {}).get(n, 0.0)) for n in names]
    out.append(grouped_bars([ctx.domain_label(n, column) for n in names], series, "mixture weights per domain vs baselines", "weight",
                            rotate=True))
    rows = [[ctx.domain_label(n, column), x.get("weight"), x.get("tokens"), x.get("docs"), x.get("epochs")]
            + [(baselines.get(b) or {}).get(n) for b in sorted(baselines)] for n, x in zip(names, domains)]
    out.append(table(["domain", "weight", "tokens", "docs", "epochs"] + [f"{b} weight" for b in sorted(baselines)], rows,
                     numeric=set(range(1, 5 + len(baselines)))))
    return "\n".join(out)


def search_trace(path: Path) -> str:
    """Loss per proxy run by round with the best so far, predicted vs actual loss, and the best runs."""
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    n = len(t.get("loss", []))
    if not n:
        return note("mix/search.parquet has no rows.")
    rnd = np.array([int(r) if r is not None else 0 for r in t.get("round", [0] * n)])
    loss = np.array([np.nan if v is None else float(v) for v in t["loss"]])
    pred = np.array([np.nan if v is None else float(v) for v in t.get("predicted", [None] * n)])
    rounds = sorted(set(rnd.tolist()))
    palette = colors(len(rounds))
    with style():
        fig, axs = figure(10, 3.6, 1, 2)
        ax = axs[0, 0]
        for i, r in enumerate(rounds):
            in_round = rnd == r
            ax.scatter(np.flatnonzero(in_round), loss[in_round], s=16, color=palette[i], label=f"round {r}")
        best = np.fmin.accumulate(np.where(np.isfinite(loss), loss, np.inf))
        ax.step(np.arange(n), np.where(np.isfinite(best), best, np.nan), where="post", color="#555555", linewidth=1, label="best so far")
        ax.set_xlabel("proxy run (in order)")
        ax.set_ylabel("loss")
        ax.set_title("search trace: loss per proxy run")
        ax.legend()
        ax = axs[0, 1]
        ok = np.isfinite(pred) & np.isfinite(loss)
        if ok.any():
            for i, r in enumerate(rounds):
                in_round = ok & (rnd == r)
                if in_round.any():
                    ax.scatter(pred[in_round], loss[in_round], s=16, color=palette[i], label=f"round {r}")
            lo, hi = float(min(pred[ok].min(), loss[ok].min())), float(max(pred[ok].max(), loss[ok].max()))
            ax.plot([lo, hi], [lo, hi], color="#999999", linestyle="--", linewidth=1, label="predicted = actual")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no predictions (round 1 only)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("predicted loss")
        ax.set_ylabel("actual loss")
        ax.set_title("predictor: predicted vs actual")
        out = [img(fig, "mixture search trace")]
    if ok.sum() >= 2:
        corr = float(np.corrcoef(pred[ok], loss[ok])[0, 1]) if np.std(pred[ok]) > 0 and np.std(loss[ok]) > 0 else float("nan")
        mae = float(np.mean(np.abs(pred[ok] - loss[ok])))
        out.append(note(f"{n} proxy runs in {len(rounds)} rounds; predictor on {int(ok.sum())} runs: mean |error| {fmt(mae)}, "
                        f"Pearson r {fmt(corr, 3)}.", "caption"))
    else:
        out.append(note(f"{n} proxy runs in {len(rounds)} rounds.", "caption"))
    targets = [c for c in t if c.startswith("loss_")]
    weight_cols = [c for c in t if c.startswith("w_")]
    order = sorted(range(n), key=lambda i: (np.inf if not np.isfinite(loss[i]) else loss[i], i))[:10]
    rows = [[str(t.get("run", [""] * n)[i]), int(rnd[i]), float(loss[i]), None if not np.isfinite(pred[i]) else float(pred[i])]
            + [t[c][i] for c in targets]
            + [", ".join(f"{c[2:]} {t[c][i]:.2f}" for c in sorted(weight_cols, key=lambda c: -(t[c][i] or 0))[:4] if t[c][i])]
            for i in order]
    out.append(f"<h3>best {len(order)} proxy runs</h3>")
    out.append(table(["run", "round", "loss", "predicted"] + [c[5:] for c in targets] + ["largest weights"], rows,
                     numeric=set(range(1, 4 + len(targets)))))
    return "\n".join(out)


def evaluation(ctx: RunContext) -> str:
    out = []
    if "evaluate" in ctx.stages:
        path = ctx.stage_dir("evaluate") / "evaluate.json"
        if path.exists():
            try:
                out.append(arms(read_json(path)))
            except Exception as e:  # noqa: BLE001
                out.append(note(problem("evaluate/evaluate.json", e), "error"))
        else:
            out.append(note("evaluate/evaluate.json is missing: no evaluation."))
    if "remix" in ctx.stages:
        out.append("<h3>remix: realised shares vs weights</h3>")
        path = ctx.stage_dir("remix") / "_remix.json"
        if path.exists():
            try:
                out.append(remix_shares(ctx, read_json(path)))
            except Exception as e:  # noqa: BLE001
                out.append(note(problem("remix/_remix.json", e), "error"))
        else:
            out.append(note("remix/_remix.json is missing: no realised shares."))
    return "\n".join(out)


def arms(evaluation_doc: dict) -> str:
    """Loss per arm and target, with the paired differences against raw and the best baseline."""
    entries = evaluation_doc.get("arms", [])
    if not entries:
        return note("evaluate.json lists no arms.")
    targets = list(evaluation_doc.get("targets") or sorted({t for a in entries for t in (a.get("losses") or {})}))
    out = [note(f"Proxy models trained on {fmt(evaluation_doc.get('tokens'))} tokens per arm; loss on each target set (lower is better).",
                "caption")]
    out.append(note(f"{evaluation_doc.get('seeds', 1)} seed(s) per arm; differences are paired by seed with a 95 % t interval "
                    "(n.s. = the interval crosses 0: not significant).", "caption"))
    rows = [[str(a.get("arm", "?")), a.get("loss"), a.get("std")] + [(a.get("losses") or {}).get(t) for t in targets]
            + [intervals.describe(a.get("vs_raw_paired")) if a.get("vs_raw_paired") else a.get("vs_raw"),
               (intervals.describe(a["vs_best_baseline"]) + f" ({a['vs_best_baseline']['baseline']})") if a.get("vs_best_baseline") else "-",
               a.get("seconds")] for a in entries]
    out.append(table(["arm", "mean loss", "seed std"] + targets + ["vs raw", "vs best baseline", "seconds"], rows,
                     numeric=set(range(1, 3 + len(targets)))))
    categories = targets + ["mean"]
    series = {str(a.get("arm", "?")): [number((a.get("losses") or {}).get(t)) for t in targets] + [number(a.get("loss"))] for a in entries}
    out.append(grouped_bars(categories, series, "target loss per arm (y axis does not start at 0)", "loss", zoom=True))
    return "\n".join(out)


def remix_shares(ctx: RunContext, remix_doc: dict) -> str:
    """Target weight vs realised token share per domain of the remix."""
    domains = remix_doc.get("domains") or {}
    if isinstance(domains, list):  # the remix stage writes a list of {"name": ..., ...}
        domains = {str(d.get("name")): d for d in domains if isinstance(d, dict)}
    if not domains:
        return note("_remix.json lists no domains.")
    names = sorted(domains, key=lambda n: (-float(domains[n].get("weight", 0) or 0), str(n)))
    column = None
    if (ctx.stage_dir("mix") / "weights.json").exists():
        try:
            column = read_json(ctx.stage_dir("mix") / "weights.json").get("domain_column")
        except Exception:  # noqa: BLE001 - reported in the mixture section
            pass
    labels = [ctx.domain_label(n, column) for n in names]
    out = [grouped_bars(labels, {"weight": [float(domains[n].get("weight", 0) or 0) for n in names],
                                 "realised share": [float(domains[n].get("share", 0) or 0) for n in names]},
                        "remix: target weight vs realised token share", "share", rotate=True)]
    out.append(note(f"budget {fmt(remix_doc.get('budget_tokens'))} tokens; max |share - weight| = {fmt(remix_doc.get('max_share_error'))}",
                    "caption"))
    rows = [[label, domains[n].get("weight"), domains[n].get("share"), domains[n].get("tokens"), domains[n].get("epochs"),
             domains[n].get("samples")] for n, label in zip(names, labels)]
    out.append(table(["domain", "weight", "realised share", "tokens", "epochs", "samples"], rows, numeric={1, 2, 3, 4, 5}))
    return "\n".join(out)
