"""PyTorch access to remix training shards: `TrainingShards` (an IterableDataset) and `packed`.

Global sample order: shards in name order, rows in order (the remix already shuffled them).
Sample i goes to the global worker `i % (world_size * num_workers)`, where the global worker of
DataLoader worker w on rank r is `r * num_workers + w`; so every sample is read exactly once per
pass over all ranks and workers, and no worker reads another's rows. `start` skips the first
samples (resume): whole shards before it are skipped from Parquet metadata, without reading them.

    ds = TrainingShards("run/remix", mode="tokens", start=state.get("start", 0))
    for x in packed(DataLoader(ds, batch_size=None, num_workers=2), seq_len=2048): ...

With `epoch_seed`, shard order and the rows inside each shard are permuted with that seed
(a cheap reshuffle for a second pass over the same shards); the assignment of samples to workers
and `start` refer to that permuted order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

MODES = ("text", "tokens")


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TrainingShards(IterableDataset):
    def __init__(self, path: str | Path, *, mode: str = "text", rank: int | None = None, world_size: int | None = None,
                 start: int = 0, epoch_seed: int | None = None, columns: Iterable[str] = ("id", "text", "domain", "n_tokens")):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {MODES}")
        self.path = Path(path)
        self.mode = mode
        self.shards = sorted(p for p in self.path.glob("part-*.parquet") if ".tmp-" not in p.name)
        if not self.shards:
            raise FileNotFoundError(f"{self.path}: no part-*.parquet training shards")
        if mode == "tokens":
            absent = [p.name for p in self.shards if not p.with_name(p.stem + ".tokens.npy").exists()]
            if absent:
                raise FileNotFoundError(f"{self.path}: no token files for {absent[:3]}; run remix with tokenized: true and a tokenizer")
        self.rows = [pq.ParquetFile(p).metadata.num_rows for p in self.shards]
        self.rank, self.world_size = rank, world_size
        self.start = int(start)
        if self.start < 0:
            raise ValueError("start must be >= 0")
        self.epoch_seed = epoch_seed
        names = pq.read_schema(self.shards[0]).names
        self.columns = [c for c in columns if c in names]

    # ------------------------------------------------------------ order

    @property
    def total(self) -> int:
        """Samples in the dataset (all ranks)."""
        return sum(self.rows)

    def _order(self) -> list[tuple[int, np.ndarray | None]]:
        """(shard index, row permutation or None) in global order."""
        idx = list(range(len(self.shards)))
        if self.epoch_seed is None:
            return [(s, None) for s in idx]
        rng = np.random.default_rng([int(self.epoch_seed) & 0xFFFFFFFF, 0x5EED])
        return [(int(s), np.random.default_rng([int(self.epoch_seed) & 0xFFFFFFFF, int(s)]).permutation(self.rows[s]))
                for s in rng.permutation(idx)]

    def _worker(self) -> tuple[int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            r, w = _dist()
            rank = r if rank is None else rank
            world = w if world is None else world
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} not in [0, {world})")
        info = get_worker_info()
        nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * nw + wid, world * nw

    def assignments(self, gid: int, n_global: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(shard index, first global sample of that shard, local rows) for global worker gid."""
        lo = 0
        for s, perm in self._order():
            n = self.rows[s]
            hi = lo + n
            first = max(lo, self.start)
            if first < hi:
                first += (gid - first) % n_global  # first i >= max(lo, start) with i % n_global == gid
                if first < hi:
                    local = np.arange(first - lo, n, n_global, dtype=np.int64)
                    yield s, lo, (perm[local] if perm is not None else local)
            lo = hi

    # ------------------------------------------------------------ iteration

    def __iter__(self):
        gid, n_global = self._worker()
        for s, _, rows in self.assignments(gid, n_global):
            if self.mode == "tokens":
                yield from self._tokens(s, rows)
            else:
                yield from self._texts(s, rows)

    def _tokens(self, s: int, rows: np.ndarray):
        p = self.shards[s]
        tok = np.load(p.with_name(p.stem + ".tokens.npy"), mmap_mode="r")
        index = np.load(p.with_name(p.stem + ".index.npy"), mmap_mode="r")
        for r in rows.tolist():
            yield torch.from_numpy(np.asarray(tok[index[r]:index[r + 1]], dtype=np.int64))

    def _texts(self, s: int, rows: np.ndarray):
        pf = pq.ParquetFile(self.shards[s])
        md = pf.metadata
        starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
        if rows.size > 1 and np.any(np.diff(rows) < 0):  # epoch_seed order: read the shard once
            t = pf.read(columns=self.columns)
            cols = {c: t.column(c).to_pylist() for c in self.columns}
            for r in rows.tolist():
                yield {c: cols[c][r] for c in self.columns}
            return
        rg = np.searchsorted(starts, rows, side="right") - 1
        for g in np.unique(rg).tolist():  # one row group at a time, only those holding our rows
            t = pf.read_row_group(g, columns=self.columns)
            cols = {c: t.column(c).to_pylist() for c in self.columns}
            for r in (rows[rg == g] - starts[g]).tolist():
                yield {c: cols[c][r] for c in self.columns}

    # ------------------------------------------------------------ resume

    def offset_after(self, samples_per_worker: int, num_workers: int = 1) -> int:
        """Global resume offset once every global worker (all ranks x `num_workers`) has yielded
        `samples_per_worker` samples since `start`: every sample before it was seen. (With a
        DataLoader of batch size B, after n batches per rank with n a multiple of num_workers,
        samples_per_worker = n // num_workers * B.)"""
        _, world = self._dist_world()
        g = world * max(1, num_workers)
        # worker gid's k-th sample is the k-th i >= start with i % g == gid: all i < start + k*g are covered
        return min(self.total, self.start + int(samples_per_worker) * g)

    def _dist_world(self) -> tuple[int, int]:
        r, w = _dist()
        return (self.rank if self.rank is not None else r), (self.world_size if self.world_size is not None else w)

    def state_dict(self, samples_per_worker: int = 0, num_workers: int = 1) -> dict:
        return {"start": self.offset_after(samples_per_worker, num_workers), "epoch_seed": self.epoch_seed}

    def load_state_dict(self, state: dict) -> None:
        self.start = int(state.get("start", 0))
        if "epoch_seed" in state:
            self.epoch_seed = state["epoch_seed"]


def packed(docs: Iterable[torch.Tensor], seq_len: int, drop_last: bool = True) -> Iterator[torch.Tensor]:
    """Concatenate token docs (each ending in EOS) and cut fixed `seq_len` sequences (LongTensor).
    The tail shorter than seq_len is dropped unless `drop_last` is False."""
    if seq_len < 1:
        raise ValueError("seq_len must be >= 1")
    buf: list[torch.Tensor] = []
    have = 0
    for d in docs:
        d = torch.as_tensor(d, dtype=torch.long).reshape(-1)
        buf.append(d)
        have += d.numel()
        if have >= seq_len:
            cat = torch.cat(buf)
            n = (cat.numel() // seq_len) * seq_len
            yield from cat[:n].view(-1, seq_len).unbind(0)
            rest = cat[n:]
            buf, have = ([rest] if rest.numel() else []), rest.numel()
    if not drop_last and have:
        yield torch.cat(buf)
