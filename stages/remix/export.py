"""Pass 4 of remix: the trainer outputs, read from the finished mixed stream (Ray tasks).

Layout under the remix dir (`P` = `phase-<k>/` when there are several phases, else empty):

  part-*.parquet (+ .tokens.npy/.index.npy)   the mixed stream in phase order (the dataset contract)
  README.md                        HF dataset card: `load_dataset(dir)` reads part-*.parquet only
  megatron/mixed.{bin,idx}         the whole token stream in order, one document per sample (phases
                                   in order: document i is sample i of the stream)
  megatron/P<domain>.{bin,idx}     per phase and domain, for Megatron's own blending
  megatron/Pdata_path.txt          `--data-args-path` file: 'w1 prefix1 w2 prefix2 ...' (absolute)
  mds/P<domain>/                   MosaicML Streaming (MDS) per phase and domain
  hf/P<domain>/part.arrow          HF Arrow per phase and domain (`load_dataset("arrow", ...)`)
  megatron_data_path.txt, mosaic_streams.yaml, hf_interleave.json   the recipes, one entry per phase

Every format holds the same token ids: the tokenizer's ids of the text (with its metadata prefix,
if any) followed by one EOS id, per document. Per domain the token totals equal _remix.json's.
Readers skip these folders: Ray Data and pyarrow read only *.parquet outside `_` folders, HF reads
what the card names. Weights in the recipes are realised shares: Megatron blends by tokens (its
samples are fixed-length sequences), Mosaic and HF draw documents, so their proportions and
probabilities are each domain's share of the phase's documents (which gives its token share).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import yaml

from pipeline import io
from pipeline.formats import AtomicWriter
from pipeline.formats.mds import MDSWriter
from pipeline.formats.megatron import IndexedWriter
from pipeline.schema import ID, N_TOKENS, TEXT

FORMATS_WITH_TOKENS = ("megatron", "mds", "hf")
COLUMNS = [ID, TEXT, "domain", N_TOKENS]


def megatron_dtype(dtype: np.dtype) -> np.dtype:
    """Megatron's index has no uint32 code: vocabularies over 65,535 ids are stored as int32."""
    return np.dtype(np.uint16) if dtype == np.uint16 else np.dtype(np.int32)


def phase_dir(n_phases: int, p: int) -> str:
    return f"phase-{p}/" if n_phases > 1 else ""


def _shard_tokens(out: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.load(out / f"{key}.tokens.npy", mmap_mode="r"), np.load(out / f"{key}.index.npy", mmap_mode="r"))


def take_docs(tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documents `rows` of a (tokens, offsets) store, concatenated, with their new offsets."""
    lens = (offsets[1:] - offsets[:-1])[rows]
    new = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lens, out=new[1:])
    src = np.repeat(np.asarray(offsets[:-1])[rows] - new[:-1], lens) + np.arange(new[-1])
    return np.asarray(tokens)[src], new


class _ArrowWriter(AtomicWriter):
    """One Arrow IPC stream file (HF's `arrow` builder), written to a temp name and renamed on close."""

    def __init__(self, path: Path, schema: pa.Schema):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.writer = ipc.new_stream(str(self.tmp), schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> dict:
        self.writer.close()
        os.replace(self.tmp, self.path)
        self._done = True
        return {"samples": self.rows}

    def abort(self) -> None:
        if not self._done:
            self.writer.close()
            self.tmp.unlink(missing_ok=True)
            self._done = True


def export_phase(out: str, phase: int, n_phases: int, keys: list[str], names: list[str], formats: list[str],
                 dtype: str) -> dict:
    """Per-domain outputs of one phase: every shard of the phase read once, in order, each domain's
    documents appended to its writers (so each per-domain file keeps the stream's order)."""
    out, pdir, dt = Path(out), phase_dir(n_phases, phase), np.dtype(dtype)
    for fmt in [f for f in ("mds", "hf") if f in formats]:  # a retried task starts its folders afresh (MDS refuses a non-empty one)
        for name in names:
            shutil.rmtree(out / fmt / f"{pdir}{name}", ignore_errors=True)
    writers: dict[tuple[str, str], object] = {}

    def writer(fmt: str, name: str, make):
        if (fmt, name) not in writers:  # opened once: a second open of the same temp file would truncate it
            writers[(fmt, name)] = make()
        return writers[(fmt, name)]

    docs = np.zeros(len(names), np.int64)
    toks = np.zeros(len(names), np.int64)
    try:
        _export_shards(out, keys, names, formats, pdir, dt, writer, docs, toks)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    files = {f"{fmt}/{pdir}{name}": w.close() for (fmt, name), w in writers.items()}
    return {"rows_in": int(docs.sum()), "kept": int(docs.sum()), "rejected": 0, "quarantined": 0, "pass_output": True,
            "phase": phase, "domain_docs": docs.tolist(), "domain_tokens": toks.tolist(), "files": files}


def _export_shards(out: Path, keys: list[str], names: list[str], formats: list[str], pdir: str, dt: np.dtype,
                   writer, docs: np.ndarray, toks: np.ndarray) -> None:
    for key in keys:
        t = pq.read_table(out / f"{key}.parquet", columns=COLUMNS)
        tokens, offsets = _shard_tokens(out, key)
        dom = t.column("domain").to_numpy(zero_copy_only=False)
        for i, name in enumerate(names):
            rows = np.flatnonzero(dom == name)
            if not len(rows):
                continue
            ids, off = take_docs(tokens, offsets, rows)
            docs[i] += len(rows)
            toks[i] += len(ids)
            if "megatron" in formats:
                writer("megatron", name, lambda: IndexedWriter(out / "megatron" / f"{pdir}{name}", megatron_dtype(dt))).add_documents(ids, off)
            if "mds" not in formats and "hf" not in formats:
                continue  # the text columns are only for the MDS and HF copies
            sub = t.take(pa.array(rows))
            if "mds" in formats:
                w = writer("mds", name, lambda: MDSWriter(out / "mds" / f"{pdir}{name}", {
                    ID: "str", "domain": "str", TEXT: "str", N_TOKENS: "int64", "tokens": f"ndarray:{dt.name}"}))
                w.write_batch({ID: sub.column(ID).to_pylist(), "domain": sub.column("domain").to_pylist(),
                               TEXT: sub.column(TEXT).to_pylist(), N_TOKENS: sub.column(N_TOKENS).to_pylist(), "tokens": (ids, off)})
            if "hf" in formats:
                arr = pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(ids))
                tab = pa.table({ID: sub.column(ID), TEXT: sub.column(TEXT), "domain": sub.column("domain"),
                                N_TOKENS: sub.column(N_TOKENS), "input_ids": arr})
                writer("hf", name, lambda: _ArrowWriter(out / "hf" / f"{pdir}{name}" / "part.arrow", tab.schema)).write(tab)


def export_mixed(out: str, keys: list[str], dtype: str) -> dict:
    """megatron/mixed: the whole stream, every shard's token file appended in order."""
    out = Path(out)
    n = 0
    with IndexedWriter(out / "megatron" / "mixed", megatron_dtype(np.dtype(dtype))) as w:
        for key in keys:
            tokens, offsets = _shard_tokens(out, key)
            w.add_documents(np.asarray(tokens), np.asarray(offsets))
            n += len(offsets) - 1
    res = w.summary
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "pass_output": True, "files": {"megatron/mixed": res}}


# ---------------------------------------------------------------- recipes (driver)


def hf_card(n_phases: int, phases: list[dict], names: list[str], formats: list[str], shard_names: list[str],
            order: dict | None = None) -> str:
    """README.md whose `configs` make `load_dataset(dir)` read the kept shards only; one config per
    phase (when several) and, with the hf format, one per phase and domain."""
    configs = []
    if n_phases > 1:
        configs += [(f"phase-{ph['index']}", shard_names[ph["shards"][0]:ph["shards"][1]] or ["part-none.parquet"]) for ph in phases]
    if "hf" in formats:
        configs += [(f"hf-{phase_dir(n_phases, ph['index']).replace('/', '-')}{n}", [f"hf/{phase_dir(n_phases, ph['index'])}{n}/part.arrow"])
                    for ph in phases for n in names if ph["domain_samples"].get(n)]
    what = f"mixed stream, sorted by `{order['by']}` ({order['direction']}) within each phase," if order else "mixed, shuffled stream"
    return io.dataset_card("remix training shards", configs, body=(
        f"Written by `curate remix`. `datasets.load_dataset(<this dir>)` reads the {what}\n"
        "(`part-*.parquet`, phase order by file name); `_remix.json` has the weights, phases and token counts;\n"
        "megatron/, mds/ and hf/ hold the same documents per domain for trainers that mix themselves.\n"))


def recipes(out: Path, phases: list[dict], names: list[str], formats: list[str], seed: int, order: dict | None = None) -> dict:
    """megatron_data_path.txt, mosaic_streams.yaml, hf_interleave.json (absolute paths, one entry per
    phase, only domains with documents in the phase); returns what _remix.json records. With
    remix.order every per-domain file holds its documents in the stream's (sorted) order; the
    Mosaic recipe then says shuffle: false (a shuffling reader would undo the curriculum)."""
    n_ph, root = len(phases), out.resolve()
    rec: dict = {}
    if "megatron" in formats:
        lines = []
        for ph in phases:
            pd_ = phase_dir(n_ph, ph["index"])
            tot = sum(ph["domain_tokens"].values())
            line = " ".join(f"{ph['domain_tokens'][n] / tot:.8f} {root / 'megatron' / (pd_ + n)}" for n in names if ph["domain_tokens"].get(n))
            io.atomic_write(out / "megatron" / pd_ / "data_path.txt", lambda tmp, s=line: tmp.write_text(s + "\n"))
            lines.append(line)
        io.atomic_write(out / "megatron_data_path.txt", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        rec["megatron"] = {"mixed": str(root / "megatron" / "mixed"), "data_path": lines}
    if "mds" in formats:
        doc = {"phases": [{"index": ph["index"], "fraction": ph["fraction"], "streams": {
            n: {"local": str(root / "mds" / (phase_dir(n_ph, ph["index"]) + n)),
                "proportion": round(ph["domain_samples"][n] / max(1, sum(ph["domain_samples"].values())), 10)}
            for n in names if ph["domain_samples"].get(n)}} for ph in phases]}
        if n_ph == 1:
            doc["streams"] = doc["phases"][0]["streams"]
        if order:
            doc["shuffle"] = False
        io.atomic_write(out / "mosaic_streams.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(doc, sort_keys=False)))
        rec["mds"] = doc
    if "hf" in formats:
        doc = {"format": "arrow", "seed": int(seed), "stopping_strategy": "all_exhausted_without_replacement", "phases": [
            {"index": ph["index"], "fraction": ph["fraction"],
             "datasets": [{"name": n, "data_files": [str(root / "hf" / (phase_dir(n_ph, ph["index"]) + n) / "part.arrow")]}
                          for n in names if ph["domain_samples"].get(n)],
             "probabilities": [round(ph["domain_samples"][n] / max(1, sum(ph["domain_samples"].values())), 10)
                               for n in names if ph["domain_samples"].get(n)]} for ph in phases]}
        io.write_json(doc, out / "hf_interleave.json")
        rec["hf"] = {"recipe": "hf_interleave.json"}
    return rec
