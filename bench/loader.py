"""Training-shard loader throughput: TrainingShards vs plain pyarrow/numpy reading vs MosaicML
StreamingDataset on an MDS copy of the same samples; and bytes decoded per worker, new vs old.

    python bench/loader.py [--docs 5000] [--target-rows 500] [--workdir runs/bench_loader] [--repeats 2]

Builds once (reused while --docs/--target-rows are unchanged) a synthetic corpus (Zipf words, 3
domains), a BPE tokenizer, and a two-phase remix (0.9 / 0.1, `stages.remix`, local runner, token
shards), then an MDS copy of the remix's samples in the same order with the real
`streaming.MDSWriter` (text columns; and the token ids as ndarray:uint16). Each reader makes one full
pass; tokens/s = the remix's token ids (EOS included, the same number for every reader) / wall
seconds, best of --repeats, process start-up included for every multi-process reader. Every reader's
sample count is checked. Results also go to <workdir>/results.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import config, io, runner
from pipeline.loader import TrainingShards

COLUMNS = ["id", "text", "domain", "n_tokens"]


# ---------------------------------------------------------------- data

def build(work: Path, docs: int, target_rows: int) -> Path:
    """Synthetic corpus -> BPE tokenizer -> two-phase remix with token shards (reused when present)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from stages import remix as R

    out, key = work / "remix", {"docs": docs, "target_rows": target_rows}
    if (out / "_remix.json").exists() and json.loads((work / "key.json").read_text()) == key:
        return out
    shutil.rmtree(work, ignore_errors=True)  # another size: start over (remix refuses other output)
    rng = np.random.default_rng(0)
    vocab = np.array(["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), int(k))) for k in rng.integers(2, 10, 5000)])
    p = 1.0 / np.arange(1, len(vocab) + 1)
    lens = np.clip(rng.lognormal(4.3, 0.6, docs).astype(int), 5, 800)  # ~85 words a doc
    inp = work / "inp"
    inp.mkdir(parents=True, exist_ok=True)
    texts = [" ".join(vocab[rng.choice(len(vocab), n, p=p / p.sum())]) for n in lens]
    dom = rng.integers(0, 3, docs)
    for s in range(4):
        sl = slice(s * docs // 4, (s + 1) * docs // 4)
        pq.write_table(pa.table({"id": [f"doc{i}" for i in range(sl.start, sl.stop)], "text": pa.array(texts[sl], pa.large_string()),
                                 "source": ["synthetic"] * (sl.stop - sl.start), "cluster": pa.array(dom[sl], pa.int32())}),
                       inp / f"part-{s:05d}.parquet")
    mix = work / "mix"
    mix.mkdir(exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts[:4000], trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"], show_progress=False,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(mix / "tokenizer.json"))
    n_tok = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    (mix / "weights.json").write_text(json.dumps({"method": "climb", "domain_column": "cluster", "budget_tokens": int(n_tok * 0.95),
                                                  "max_epochs": 2.0, "tokenizer": "tokenizer.json",
                                                  "domains": [{"name": str(d), "weight": w} for d, w in enumerate([0.5, 0.2, 0.3])]}))
    cfg = config.parse({"run": {"output": str(work / "run"), "seed": 0, "shard": {"target_rows": target_rows}},
                        "remix": {"weights": str(mix / "weights.json"), "tokenized": True, "formats": ["parquet"],
                                  "phases": [{"fraction": 0.9}, {"fraction": 0.1, "weights": {"0": 1, "2": 1}}]}})
    assert R.run(cfg, inp, out, partial(runner.run_stage, use_ray=False, show_progress=False, max_retries=0)).ok
    (work / "key.json").write_text(json.dumps(key))
    return out


def import_streaming():
    try:
        from tests.trainer_libs import import_streaming as imp
        from tests.trainer_libs import streaming_dataset
        return imp(), streaming_dataset
    except ImportError:  # OFFLINE.md, trainer-side readers: streaming.base needs no torchvision
        import types
        for name in ("streaming.vision", "streaming.multimodal"):
            sys.modules.setdefault(name, types.ModuleType(name))
        import streaming

        @contextlib.contextmanager
        def streaming_dataset(tmp_dir, **kw):  # shared memory is freed at process exit
            yield streaming.StreamingDataset(**kw)
        return streaming, streaming_dataset


def write_mds(remix: Path, work: Path) -> tuple[Path, Path]:
    """The remix's samples in its global order, as MDS (text columns) and MDS (token ids)."""
    streaming, _ = import_streaming()
    text_dir, tok_dir = work / "mds_text", work / "mds_tokens"
    if (text_dir / "index.json").exists() and (tok_dir / "index.json").exists() and \
            (work / "mds.stamp").read_text() == (remix / "_remix.json").read_text():
        return text_dir, tok_dir
    for d in (text_dir, tok_dir):
        shutil.rmtree(d, ignore_errors=True)
    cols = {"id": "str", "text": "str", "domain": "str", "n_tokens": "int64"}
    with streaming.MDSWriter(out=str(text_dir), columns=cols, size_limit="16mb") as wt, \
            streaming.MDSWriter(out=str(tok_dir), columns={"tokens": "ndarray:uint16"}, size_limit="16mb") as wk:
        for p in io.shard_files(remix):
            for row in pq.read_table(p, columns=COLUMNS).to_pylist():
                wt.write(row)
            tok, index = np.load(p.with_name(p.stem + ".tokens.npy")), np.load(p.with_name(p.stem + ".index.npy"))
            assert tok.dtype == np.uint16
            for a, b in zip(index[:-1].tolist(), index[1:].tolist()):
                wk.write({"tokens": tok[a:b]})
    (work / "mds.stamp").write_text((remix / "_remix.json").read_text())
    return text_dir, tok_dir


# ---------------------------------------------------------------- readers (each returns samples seen)

def _ours_part(remix: str, mode: str, gid: int, n_global: int, passes: int) -> int:
    ds = TrainingShards(remix, mode=mode)
    return sum(1 for _ in range(passes) for _ in ds.samples(gid, n_global))


def ours(remix: Path, mode: str, procs: int, passes: int) -> int:
    """`passes` passes in this process; or in `procs` processes, process g yielding global worker
    g's share (samples are counted where they are read: no IPC)."""
    if procs == 1:
        return _ours_part(str(remix), mode, 0, 1, passes)
    with mp.get_context("fork").Pool(procs) as pool:
        return sum(pool.starmap(_ours_part, [(str(remix), mode, g, procs, passes) for g in range(procs)]))


def ours_loader(remix: Path, mode: str, workers: int) -> int:
    return sum(1 for _ in DataLoader(TrainingShards(remix, mode=mode, rank=0, world_size=1), batch_size=None, num_workers=workers))


def _arrow_part(paths: list[str], passes: int) -> int:
    return sum(len(pq.read_table(p, columns=COLUMNS).to_pylist()) for _ in range(passes) for p in paths)


def _numpy_part(paths: list[str], passes: int) -> int:
    n = 0
    for p in [Path(q) for _ in range(passes) for q in paths]:
        tok = np.asarray(np.load(p.with_name(p.stem + ".tokens.npy"), mmap_mode="r"))  # a plain view: slicing a memmap is slow
        index = np.load(p.with_name(p.stem + ".index.npy"))
        for a, b in zip(index[:-1].tolist(), index[1:].tolist()):
            torch.from_numpy(tok[a:b].astype(np.int64))
            n += 1
    return n


def plain(remix: Path, mode: str, procs: int, passes: int) -> int:
    """One process reads every shard (tokens: slices of the memory-mapped token file -> LongTensor; text: pyarrow
    read_table -> row dicts); or `procs` processes read shards s % procs == w each (no IPC)."""
    fn = _numpy_part if mode == "tokens" else _arrow_part
    paths = [str(p) for p in io.shard_files(remix)]
    if procs == 1:
        return fn(paths, passes)
    with mp.get_context("fork").Pool(procs) as pool:
        return sum(pool.starmap(fn, [(paths[w::procs], passes) for w in range(procs)]))


def mosaic(mds: Path, workers: int, tmp: str) -> int:
    _, streaming_dataset = import_streaming()
    with streaming_dataset(tmp, local=str(mds), shuffle=False, batch_size=1) as ds:
        return sum(1 for _ in DataLoader(ds, batch_size=None, num_workers=workers))


def timed(fns, repeats: int, want: int) -> list[tuple[float, float]]:
    """(best wall seconds, best CPU seconds of this process) per function, measured interleaved."""
    best = [(float("inf"), float("inf"))] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t, c = time.perf_counter(), time.process_time()
            n = fn()
            best[i] = (min(best[i][0], time.perf_counter() - t), min(best[i][1], time.process_time() - c))
            assert n == want, f"{fn}: {n} samples, the remix has {want}"
    return best


def bytes_decoded(remix: Path, n_global: int) -> tuple[list[int], int]:
    """Uncompressed bytes of the row groups each of n_global workers decodes (the loader's plan)
    and what every worker of the old round-robin loader decoded (all row groups)."""
    ds = TrainingShards(remix)
    return [int(ds.rg_bytes[ds.row_groups(g, n_global)].sum()) for g in range(n_global)], int(ds.rg_bytes.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=5_000)
    ap.add_argument("--target-rows", type=int, default=500)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench_loader"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--passes", type=int, default=20, help="passes per measurement of the no-IPC readers (one pass takes ~20 ms)")
    a = ap.parse_args()
    P = a.passes
    warnings.filterwarnings("ignore")  # 4 workers on 2 cores; streaming's non-writable ndarray -> tensor
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    remix = build(work, a.docs, a.target_rows)
    text_mds, tok_mds = write_mds(remix, work)
    ds = TrainingShards(remix)
    n, tokens = ds.total, int(sum(np.load(p.with_name(p.stem + ".index.npy"))[-1] for p in ds.shards))
    print(f"remix: {n} samples, {tokens} token ids (with EOS), {len(ds.shards)} shards, {len(ds.rg_bytes)} row groups, "
          f"phases at {ds.bounds.tolist()}; built in {time.perf_counter() - t0:.1f}s; load avg {os.getloadavg()[0]:.1f}")
    small = work / "remix_rg100"  # the same shards with 100-row row groups (remix writes one per shard)
    small.mkdir(exist_ok=True)
    for p in ds.shards:
        if not (small / p.name).exists():
            pq.write_table(pq.read_table(p), small / p.name, row_group_size=100)
    (small / "_remix.json").write_text((remix / "_remix.json").read_text())
    rows, res = [], {"samples": n, "tokens": tokens, "shards": len(ds.shards), "load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, mds, plain_name in (("tokens", tok_mds, "numpy mmap"), ("text", text_mds, "pyarrow read_table")):
            for setting, mine, peer_name, peer in (
                    (f"1 process, {P} passes", partial(ours, remix, mode, 1, P), f"plain {plain_name}", partial(plain, remix, mode, 1, P)),
                    (f"4 processes, {P} passes", partial(ours, remix, mode, 4, P), f"plain {plain_name}", partial(plain, remix, mode, 4, P)),
                    ("DataLoader 1 worker", partial(ours_loader, remix, mode, 1), "StreamingDataset", partial(mosaic, mds, 1, tmp)),
                    ("DataLoader 4 workers", partial(ours_loader, remix, mode, 4), "StreamingDataset", partial(mosaic, mds, 4, tmp)),
                    *[(f"4 procs, {P} passes, rg100", partial(ours, small, mode, 4, P), f"plain {plain_name}",
                       partial(plain, small, mode, 4, P))] * (mode == "text")):
                k = P if "passes" in setting else 1
                (w_ours, c_ours), (w_peer, c_peer) = timed([mine, peer], a.repeats, k * n)
                r = {"mode": mode, "setting": setting, "peer": peer_name, "ours": k * tokens / w_ours, "peer_tok_s": k * tokens / w_peer}
                cpu = ""
                if setting.startswith("1 process"):  # all the work is in this process: CPU time is load-independent
                    r["ours_tok_cpu_s"], r["peer_tok_cpu_s"] = k * tokens / c_ours, k * tokens / c_peer
                    cpu = f" (per CPU-s {c_peer / c_ours:.2f}x)"
                rows.append(r)
                print(f"{mode:6s} {setting:26s} ours {r['ours']:>12,.0f} tok/s | {peer_name:28s} {r['peer_tok_s']:>12,.0f} tok/s "
                      f"| ours/peer {r['ours'] / r['peer_tok_s']:.2f}x{cpu}", flush=True)
    res["rows"], res["load_end"] = rows, os.getloadavg()[0]
    for name, d in (("remix", remix), ("rg100", small)):
        for g in (4, 8):
            per, old = bytes_decoded(d, g)
            res[f"bytes_{name}_G{g}"] = {"new": per, "old_each": old}
            print(f"bytes decoded per worker ({name}), G={g}: new {[round(b / 1e6, 2) for b in per]} MB (max {max(per) / 1e6:.2f}), "
                  f"old round-robin {old / 1e6:.2f} MB each -> {old / max(per):.1f}x less")
    (work / "results.json").write_text(json.dumps(res, indent=1))
    print(f"total {time.perf_counter() - t0:.0f}s; load avg {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
