"""MATES-style data-influence scorer, trained once per input, targets and settings (score.mates).

  1. two disjoint seeded samples of the input: `sample_docs` documents to probe, `warmup_docs` to
     warm the proxy up on; a byte-level BPE of `vocab_size` trained on both (pipeline/models/bpe.py);
  2. the proxy LM trained on the warm-up sample for `warmup_tokens` tokens;
  3. the influence of each probed document on the target batch (each target set's search part, as
     BETR and the mix stage split it: the eval part is never used to choose data), see
     pipeline/models/influence.py;
  4. distilled into a fastText classifier (top `top` share of the non-held-out sample positive,
     bottom `bottom` negative: pipeline.models.train.distil_fasttext, shared with BETR), which the
     score stage applies to every document (column = P(high influence)).

Written to out_dir: model.bin, model.json (meta: fastText validation, held-out Spearman rho of the
classifier vs the influences, the influence run's info), tokenizer.json, influences.parquet (id,
influence of every probed document, held_out flag).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import io
from pipeline.models import betr, bpe, influence, train
from pipeline.models import proxy_lm as P

HELD_OUT = 0.2  # share of the probed sample kept out of the labels, for the agreement check


def probe_sample(inp, targets: dict[str, list[tuple[str, str]]], out_dir: Path, s, seed: int) -> tuple[list, np.ndarray, dict]:
    """(probed documents in their seeded order, their influences, info): steps 1-3. `s`: MatesConfig."""
    search = betr.search_part(targets, s.eval_fraction)
    empty = [n for n, v in search.items() if not v]
    if empty:
        raise ValueError(f"score.mates: target set(s) {empty} have no search examples (eval_fraction {s.eval_fraction})")
    docs = train.sample_docs(train.iter_docs(inp), s.sample_docs, seed)
    warm = train.sample_docs(train.iter_docs(inp), s.warmup_docs, seed, skip=s.sample_docs)
    if len(docs) < 20 or not warm:
        raise ValueError(f"score.mates: {inp} has {len(docs) + len(warm)} documents; need more than sample_docs "
                         f"({s.sample_docs}, at least 20) to probe plus some to warm the proxy up on: lower score.mates.sample_docs")
    tok_path = bpe.train_bpe([d.text for d in docs + warm], s.vocab_size, out_dir / "tokenizer.json")
    tok = bpe.load(tok_path)
    spec = P.ProxySpec(vocab_size=tok.get_vocab_size(with_added_tokens=True), n_layer=s.n_layer, n_head=s.n_head,
                       d_model=s.d_model, ctx=s.ctx, batch_size=s.sequences_per_step, lr=s.lr, tokens=s.warmup_tokens,
                       eval_tokens=s.target_tokens, device="cpu", threads=1)
    stream, _ = bpe.encode_docs(tok, [d.text for d in warm])
    if len(stream) < s.ctx + 1:
        raise ValueError(f"score.mates: the warm-up sample has {len(stream)} tokens, fewer than ctx+1 = {s.ctx + 1}")
    model, proxy_info = influence.warm_proxy(stream, spec, seed)
    tgt = {n: P.eval_windows(bpe.encode_docs(tok, v)[0], spec) for n, v in search.items()}
    ids, lens = bpe.encode_docs(tok, [d.text for d in docs], eos=False)
    wins = influence.doc_windows(ids, lens, s.doc_tokens, s.ctx)
    infl = influence.Influence(model, tgt, s.target_weighting)
    vals, info = influence.influences(infl, wins, s.method, s.probe_lr, s.check_docs)
    info.update(target_weighting=s.target_weighting, target_weights={n: round(float(w), 4) for n, w in zip(tgt, infl.weights)},
                proxy=proxy_info, vocab_size=spec.vocab_size, warmup_docs=len(warm), probed_docs=len(docs),
                targets={n: len(v) for n, v in search.items()}, target_tokens={n: int(w.size) for n, w in tgt.items()})
    return docs, vals, info


def train_mates(inp, targets: dict[str, list[tuple[str, str]]], out_dir: str | Path, s, seed: int = 0) -> dict:
    """Train the MATES scorer into out_dir (see the module doc); returns its meta. `s`: MatesConfig
    with eval_fraction resolved."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs, vals, info = probe_sample(inp, targets, out_dir, s, seed)
    n_hold = int(len(docs) * HELD_OUT)
    io.write_parquet(pa.table({"id": [d.id for d in docs], "influence": pa.array(vals, pa.float64()),
                               "held_out": np.arange(len(docs)) < n_hold}), out_dir / "influences.parquet")
    meta = train.distil_fasttext(docs, vals, out_dir, s.params, top=s.top, bottom=s.bottom, seed=seed, held_out=HELD_OUT,
                                 agreement_key="spearman_vs_influence_held_out", data_info={
        "method": "mates", "input": str(inp), "sample_docs": len(docs), "top": s.top, "bottom": s.bottom,
        "eval_fraction": s.eval_fraction, "targets": info["targets"]})
    meta["influence"] = info
    io.write_json(meta, out_dir / "model.json")
    return meta
