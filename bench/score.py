"""Quality scoring: our fastText scorer vs datatrove's FastTextClassifierFilter on the same documents,
plus perplexity (ours vs the kenlm module), decontamination throughput, and (optionally) our
Kneser-Ney trainer vs KenLM's lmplz. One process pinned to one core, BLAS/OMP threads 1.

    python bench/score.py [--n 5000] [--dims 32,100] [--repeat 3] [--lmplz PATH/TO/lmplz]

fastText: a classifier is trained the way the default config trains it (PreSelect labels from
data/sample, our default hyper-parameters; `--dims` adds models of other sizes), cached under
runs/bench_score/. datatrove is called as `filter(doc)` per document (its cheapest path: no
pipeline, no writer) with `newline_replacement=" "`; we call `FastTextScorer(texts)` per batch of
`--batch-size`, normalization included. Times are CPU seconds of this process (the VM is shared,
so wall time is noisy); the best of `--repeat` alternating runs is reported. Agreement: max
|P(pos) ours - datatrove| when datatrove is given our normalized text (same input, so the two must
agree up to float32 rounding), and the share of identical keep decisions at 0.5 on raw text.
Needs the `bench` extra (datatrove, fasteners).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.models.fasttext import load_model, normalize
from scorers.fasttext import FastTextScorer  # noqa: E402
from pipeline.models import train  # noqa: E402
from pipeline.config import FastTextParams, PreSelectConfig  # noqa: E402

CACHE = ROOT / "runs" / "bench_score"


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def corpus(n: int, skip: int = 0) -> list[str]:
    docs = train.sample_docs(train.iter_docs(ROOT / "data" / "sample", source_field="domain"), n, seed=1, skip=skip)
    return [d.text for d in docs]


def model_for(dim: int) -> Path:
    """A PreSelect-labelled classifier like the default config's (cached)."""
    out = CACHE / f"fasttext-dim{dim}"
    if (out / "model.json").exists():
        return out / "model.bin"
    src = CACHE / "sample_docs"
    if not src.exists():  # the sample as one JSONL dataset with `source`
        src.mkdir(parents=True)
        with open(src / "docs.jsonl", "w") as fh:
            for d in train.iter_docs(ROOT / "data" / "sample", source_field="domain"):
                fh.write(json.dumps({"id": d.id, "text": d.text, "source": d.source}) + "\n")
    pos, neg, info = train.preselect_labels(src, train.load_targets([]), PreSelectConfig(lm_docs=2000, pool_docs=3000), 0.2, 0.5, seed=0)
    train.train_fasttext(pos, neg, out, FastTextParams(dim=dim), seed=0, data_info=info)
    return out / "model.bin"


def cpu_time(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        res = fn()
        best = min(best, time.process_time() - t)
    return best, res


def bench_fasttext(texts: list[str], model: Path, batch_size: int, repeat: int) -> dict:
    import datatrove.pipeline.base as dt_base
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    # datatrove checks for the distribution `fasttext-numpy2-wheel`; we give it the same `fasttext`
    # module from fasttext-community (the one that trains and predicts under numpy 2 here).
    dt_base.check_required_dependencies = lambda *a, **k: None
    dt = FastTextClassifierFilter(str(model), keep_labels=("pos", 0.5), newline_replacement=" ")
    dt.model  # load (and copy into datatrove's cache) before timing
    ours = FastTextScorer(str(model))
    load_model(str(model))

    def run_ours():
        return np.concatenate([ours(texts[i:i + batch_size])["fasttext_score"] for i in range(0, len(texts), batch_size)])

    def run_dt(src):
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(src)]
        keep = [dt.filter(d) for d in docs]
        return np.array([d.metadata.get("__label__pos", np.nan) for d in docs]), np.array(keep)

    t_ours, t_dt = [], []
    for _ in range(repeat):  # alternate, so a noisy neighbour hits both sides alike
        t, p_ours = cpu_time(run_ours, 1)
        t_ours.append(t)
        t, (p_dt_raw, keep_dt) = cpu_time(lambda: run_dt(texts), 1)
        t_dt.append(t)
    p_dt_norm, _ = run_dt([normalize(t) for t in texts])
    words = sum(len(t.split()) for t in texts)
    return {"docs": len(texts), "words": words, "ours_s": min(t_ours), "datatrove_s": min(t_dt),
            "ours_docs_per_s": len(texts) / min(t_ours), "datatrove_docs_per_s": len(texts) / min(t_dt),
            "ratio": min(t_dt) / min(t_ours), "ratio_median": float(np.median(t_dt) / np.median(t_ours)),
            "max_abs_diff_same_input": float(np.nanmax(np.abs(p_ours - p_dt_norm))),
            "keep_agreement_raw_text": float(((p_ours >= 0.5) == keep_dt).mean()),
            "fast_path": bool(load_model(str(model)).linear)}


def bench_perplexity(texts: list[str], repeat: int) -> dict:
    from pipeline.models.lm import kenlm_available
    from scorers.perplexity import PerplexityScorer

    tmp = Path(tempfile.mkdtemp())
    try:
        docs = train.sample_docs(train.iter_docs(ROOT / "data" / "sample", source_field="domain"), 3000, seed=2)
        t0 = time.process_time()
        meta = train.train_lm(docs, tmp / "lm", order=3, arpa=kenlm_available())
        t_train = time.process_time() - t0
        out = {"train_docs": len(docs), "train_tokens": meta["tokens"], "ngrams": meta["ngrams"], "train_s": t_train}
        ours = PerplexityScorer(tmp / "lm", backend="numpy")
        ours(texts[:10])
        t, a = cpu_time(lambda: ours(texts)["perplexity"], repeat)
        out.update(ours_docs_per_s=len(texts) / t)
        if kenlm_available():
            ken = PerplexityScorer(tmp / "lm", backend="kenlm")
            ken(texts[:10])
            t, b = cpu_time(lambda: ken(texts)["perplexity"], repeat)
            ok = ~np.isnan(a)
            out.update(kenlm_docs_per_s=len(texts) / t, max_rel_diff_vs_kenlm=float(np.max(np.abs(a[ok] - b[ok]) / b[ok])))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_decontam(texts: list[str], repeat: int) -> dict:
    from scorers.decontam import DecontamScorer, NgramIndex

    tmp = Path(tempfile.mkdtemp())
    try:
        t0 = time.process_time()
        NgramIndex.build(train.load_targets([]), 13, 8).save(tmp / "i.npz")
        t_build = time.process_time() - t0
        sc = DecontamScorer(str(tmp / "i.npz"))
        sc(texts[:10])
        t, res = cpu_time(lambda: sc(texts), repeat)
        return {"index_build_s": t_build, "docs_per_s": len(texts) / t, "contaminated_docs": int(sum(1 for c in res["contaminated"] if c))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_lmplz(lmplz: str) -> dict:
    """Our trainer vs KenLM's lmplz on the same tokens: n-gram sets and probabilities."""
    from pipeline.models import ngram, ngram_train

    tmp = Path(tempfile.mkdtemp())
    try:
        docs = train.sample_docs(train.iter_docs(ROOT / "data" / "sample", source_field="domain"), 2000, seed=3)
        sents = [s for d in docs for s in ngram.tokenize(d.text)]
        (tmp / "text").write_text("\n".join(" ".join(s) for s in sents) + "\n")
        out = {}
        for order in (3, 5):
            t0 = time.perf_counter()
            with open(tmp / "text") as fin, open(tmp / "ref.arpa", "w") as fout:
                subprocess.run([lmplz, "-o", str(order), "-S", "20%", "-T", str(tmp), "--discount_fallback"], stdin=fin, stdout=fout,
                               stderr=subprocess.DEVNULL, check=True)
            t_lmplz = time.perf_counter() - t0
            t0 = time.perf_counter()
            lm = ngram_train.train(sents, order=order)
            t_ours = time.perf_counter() - t0
            lm.save(tmp / "ours")
            ref, ours = ngram.read_arpa(tmp / "ref.arpa"), ngram.read_arpa(tmp / "ours.arpa")
            worst_p = worst_bo = 0.0
            same = True
            for a, b in zip(ours.orders, ref.orders):
                ta = {tuple(ours.vocab[i] for i in r): (p, bo) for r, p, bo in zip(a.rows.tolist(), a.logp.tolist(), (a.bo if a.bo is not None else np.zeros(len(a.logp))).tolist())}
                tb = {tuple(ref.vocab[i] for i in r): (p, bo) for r, p, bo in zip(b.rows.tolist(), b.logp.tolist(), (b.bo if b.bo is not None else np.zeros(len(b.logp))).tolist())}
                same &= set(ta) == set(tb)
                for g in set(ta) & set(tb):
                    if g != ("<s>",):  # lmplz writes 0 for p(<s>), SRILM-style files -99; never used
                        worst_p = max(worst_p, abs(ta[g][0] - tb[g][0]))
                    worst_bo = max(worst_bo, abs(ta[g][1] - tb[g][1]))
            out[f"order{order}"] = {"tokens": sum(map(len, sents)), "ngrams": lm.meta["ngrams"], "same_ngram_set": same,
                                    "max_abs_dlog10p": worst_p, "max_abs_dlog10bo": worst_bo, "lmplz_s": t_lmplz, "ours_s": t_ours}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="documents scored (held apart from the classifier's training pool)")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--dims", default="32,100", help="fastText dims to benchmark (32 is the default config's)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lmplz", default=shutil.which("lmplz"), help="path to KenLM's lmplz for the trainer comparison")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: fasttext,perplexity,decontam,lmplz")
    args = ap.parse_args()
    cpu = pin_one_core()
    skip = set(filter(None, args.skip.split(",")))
    texts = corpus(args.n, skip=6000)  # PreSelect uses the first 5000 of the same order (seed 0 differs anyway)
    print(f"{len(texts)} documents of data/sample, {sum(len(t.split()) for t in texts):,} words, pinned to CPU {cpu}")
    res: dict = {}
    if "fasttext" not in skip:
        for dim in [int(x) for x in args.dims.split(",") if x]:
            model = model_for(dim)
            r = res[f"fasttext_dim{dim}"] = bench_fasttext(texts, model, args.batch_size, args.repeat)
            print(f"fastText dim {dim:>3}: ours {r['ours_docs_per_s']:8.0f} docs/s   datatrove {r['datatrove_docs_per_s']:8.0f} docs/s   "
                  f"ratio {r['ratio']:.2f}x (median {r['ratio_median']:.2f}x)   max|dP| same input {r['max_abs_diff_same_input']:.1e}   "
                  f"keep agreement raw {r['keep_agreement_raw_text']:.3f}")
    if "perplexity" not in skip:
        r = res["perplexity"] = bench_perplexity(texts[:2000], args.repeat)
        print(f"perplexity 3-gram ({r['ngrams']} n-grams, trained in {r['train_s']:.1f} s): ours {r['ours_docs_per_s']:.0f} docs/s"
              + (f"   kenlm {r['kenlm_docs_per_s']:.0f} docs/s   max rel diff {r['max_rel_diff_vs_kenlm']:.1e}" if "kenlm_docs_per_s" in r else ""))
    if "decontam" not in skip:
        r = res["decontam"] = bench_decontam(texts, args.repeat)
        print(f"decontamination 13-gram, 4 benchmarks: index {r['index_build_s']:.1f} s, {r['docs_per_s']:.0f} docs/s, "
              f"{r['contaminated_docs']} contaminated docs")
    if "lmplz" not in skip and args.lmplz:
        r = res["lmplz"] = bench_lmplz(args.lmplz)
        for k, v in r.items():
            print(f"KN trainer vs lmplz {k}: same n-grams {v['same_ngram_set']}, max |d log10 p| {v['max_abs_dlog10p']:.1e}, "
                  f"max |d log10 bo| {v['max_abs_dlog10bo']:.1e}; lmplz {v['lmplz_s']:.1f} s, ours {v['ours_s']:.1f} s wall")
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "results.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
