"""PyTorch access to remix training shards: `TrainingShards` (an IterableDataset) and `packed`.

Global sample order: shards in name order, rows in order (the remix shuffled them within each
phase). `_remix.json`'s `phases` cut it into contiguous phases at shard boundaries (no file or no
`phases`: one phase). Each phase is split into G = world_size * num_workers contiguous ranges of
near-equal size (sizes differ by <= 1), one per global worker gid = rank * num_workers + worker id,
and a worker yields its phase-0 range, then its phase-1 range, ... So a worker decodes at most the
row groups that overlap its ranges, one range per phase (tokens mode: maps only the shards they lie
in): about 1/G of the data plus the row groups cut by range ends, not every row group of the remix.

Positions. Worker gid's k-th sample has the position t = k * G + gid. A phase's remainder
(n_p mod G samples) goes to the workers that are behind, so worker gid's samples of the phases
before p are exactly its positions t < N_p (N_p = samples of those phases). Hence:
  * Phase order: position t holds a phase-p sample iff N_p <= t < N_{p+1}. A DataLoader with
    batch_size=None takes its workers round-robin (positions r*nw .. r*nw+nw-1, then + G, ...), so
    from start 0, or any `start` that is a multiple of G (what `offset_after` gives from one), each
    rank's stream is exactly in phase order: every phase-p sample before any of phase p+1. From
    another start some workers skipped one sample more and run one round ahead: phases p and p+1
    may then mix within one round of num_workers samples. With batch_size B each batch is B
    consecutive samples of one worker; only the one round of num_workers batches at a boundary can
    mix phases p and p+1. Per phase, ranks get numbers of samples that differ by <= num_workers.
  * Resume: `start` = positions consumed = samples all ranks got together (steps x global batch
    when the batches per rank are a multiple of num_workers; see `offset_after`). Worker gid skips
    its positions < start; row groups and shards skipped entirely are never opened. The map from
    positions to samples depends on G: resume with the same world_size x num_workers (a state from
    `state_dict` records G, and iteration refuses another).

Shuffle. The remix is already shuffled within each phase, so by default there is no extra shuffle.
`shuffle_buffer=B` permutes each worker's range within consecutive blocks of B samples (from the
range's start), seeded by (shuffle_seed, epoch_seed, phase, block), index math only; text mode holds
the row groups one block touches. `epoch_seed` (a cheap reshuffle for another pass) also takes the
shards inside each phase in a seeded order (the ranges are cut from that order) and block-shuffles
with B = shuffle_buffer or EPOCH_BUFFER. Nothing ever crosses a phase boundary.

Ordered remixes. When `_remix.json` states an `order` (remix.order, a curriculum sorted by a score
column), the written order is the training order: worker gid then takes the phase's samples at the
positions t = gid (mod G) (strided, not a contiguous range), so position t holds sample t exactly and
a DataLoader's round-robin over the workers yields the stream in the written order, whatever G. The
phase, resume and remainder rules above hold unchanged (the same positions per worker). `epoch_seed`
then keeps the shards in order (only its block shuffle applies), and `shuffle_buffer=B` permutes only
within blocks of B of a worker's samples (B*G consecutive positions). Cost: in text mode every worker
decodes every row group of a phase (tokens mode reads only its documents from the maps).

    ds = TrainingShards("run/remix", mode="tokens", state=ckpt.get("data"))   # None: from the start
    for i, doc in enumerate(DataLoader(ds, batch_size=None, num_workers=2), 1): ...
        # a checkpoint after i docs on each rank, i a multiple of num_workers:
        ckpt["data"] = ds.state_dict(samples_per_worker=i // 2, num_workers=2)
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.formats.hf import hf_mixture  # noqa: F401  (the HF-side loader: one place, re-exported here)

MODES = ("text", "tokens")
REMIX_JSON = "_remix.json"
EPOCH_BUFFER = 4096  # block size of epoch_seed's shuffle when shuffle_buffer is 0
CHUNK = 8192  # samples mapped and read per step when there is no shuffle
M32 = 0xFFFFFFFF


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _count(x, g, n_global: int) -> np.ndarray:
    """Positions t < x with t % n_global == g (x >= 0; numpy-broadcast)."""
    return (np.asarray(x, np.int64) - g + n_global - 1) // n_global


class TrainingShards(IterableDataset):
    def __init__(self, path: str | Path, *, mode: str = "text", rank: int | None = None, world_size: int | None = None,
                 start: int = 0, epoch_seed: int | None = None, shuffle_buffer: int = 0, shuffle_seed: int = 0,
                 state: dict | None = None, columns: Iterable[str] = ("id", "text", "domain", "n_tokens")):
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
        mds = [pq.read_metadata(p) for p in self.shards]
        self.rows = np.array([m.num_rows for m in mds], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.rows)])  # first sample of each shard
        n_rg = [m.num_row_groups for m in mds]
        self.rg_first = np.concatenate([[0], np.cumsum(n_rg)])  # first global row group of each shard
        self.rg_shard = np.repeat(np.arange(len(mds)), n_rg)
        rg_rows = [m.row_group(g).num_rows for m in mds for g in range(m.num_row_groups)]
        self.rg_starts = np.concatenate([[0], np.cumsum(rg_rows, dtype=np.int64)])  # first sample of each row group
        self.rg_bytes = np.array([m.row_group(g).total_byte_size for m in mds for g in range(m.num_row_groups)], np.int64)
        self.bounds, self.phase_shards, self.ordered = self._phases()
        self.rank, self.world_size = rank, world_size
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer {shuffle_buffer}: use 0 (no shuffle) or a block size >= 1")
        self.start, self.epoch_seed, self.n_global = int(start), epoch_seed, None
        self.shuffle_buffer, self.shuffle_seed = int(shuffle_buffer), int(shuffle_seed)
        if state is not None:
            self.load_state_dict(state)
        if self.start < 0:
            raise ValueError("start must be >= 0")
        names = mds[0].schema.to_arrow_schema().names
        self.columns = [c for c in columns if c in names]

    # ------------------------------------------------------------ plan

    @property
    def total(self) -> int:
        """Samples in the dataset (all ranks)."""
        return int(self.starts[-1])

    def _phases(self) -> tuple[np.ndarray, list[tuple[int, int]], bool]:
        """Sample bounds [0, N_1, ..., total], (first, end) shards of each phase, checked, and whether
        the remix states an `order` (a curriculum: strided workers)."""
        f, n_sh = self.path / REMIX_JSON, len(self.shards)
        doc = {}
        if f.exists():
            try:
                doc = json.loads(f.read_text())
            except ValueError as e:
                raise ValueError(f"{f}: not valid JSON ({e}); re-run remix") from None
        phases = doc.get("phases") if isinstance(doc, dict) else None
        ordered = bool(isinstance(doc, dict) and doc.get("order"))
        if phases is None:
            return np.array([0, self.total], np.int64), [(0, n_sh)], ordered
        if not isinstance(phases, list) or not phases:
            raise ValueError(f"{f}: `phases` must be a non-empty list of {{samples, shards}}; re-run remix")
        bounds, spans = [0], []
        for i, p in enumerate(phases):
            where = f"{f}: phases[{i}]"
            try:
                (lo, hi), (a, z) = [int(v) for v in p["samples"]], [int(v) for v in p["shards"]]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{where} needs samples [lo, hi] and shards [first, end] (ints); re-run remix") from None
            prev = spans[-1][1] if spans else 0
            if p.get("index", i) != i or (a, lo) != (prev, bounds[-1]):
                raise ValueError(f"{where} (index {p.get('index')}) starts at shard {a}, sample {lo}, not where the phases "
                                 f"before it end (shard {prev}, sample {bounds[-1]}); phases must be contiguous, in order")
            if not a <= z <= n_sh:
                raise ValueError(f"{where} shards [{a}, {z}) are not within the {n_sh} part-*.parquet shards; re-run remix")
            if (lo, hi) != (self.starts[a], self.starts[z]):
                raise ValueError(f"{where} samples [{lo}, {hi}) do not match the rows of its shards [{a}, {z}), "
                                 f"[{self.starts[a]}, {self.starts[z]}); re-run remix")
            bounds.append(hi)
            spans.append((a, z))
        if spans[-1][1] != n_sh:
            raise ValueError(f"{f}: phases end at shard {spans[-1][1]} of {n_sh} part-*.parquet shards; they must cover all")
        return np.array(bounds, np.int64), spans, ordered

    def _rng(self, *parts: int) -> np.random.Generator:
        e = self.epoch_seed
        return np.random.default_rng([self.shuffle_seed & M32, 0 if e is None else 1, 0 if e is None else int(e) & M32,
                                      *parts])

    def _phase_map(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """(shards of phase p in read order, first phase position of each, + end)."""
        a, z = self.phase_shards[p]
        order = np.arange(a, z)
        if self.epoch_seed is not None and not self.ordered:
            order = a + np.random.default_rng([int(self.epoch_seed) & M32, 0x5EED, p]).permutation(z - a)
        return order, np.concatenate([[0], np.cumsum(self.rows[order])])

    def _blocks(self, gid: int, n_global: int, skip: int = 0) -> Iterator[np.ndarray]:
        """Global sample indices worker gid yields, in order, block by block, after its first `skip`."""
        buf = self.shuffle_buffer or (EPOCH_BUFFER if self.epoch_seed is not None else 0)
        step, workers = buf or CHUNK, np.arange(n_global)
        for p in range(len(self.bounds) - 1):
            counts = _count(self.bounds[p + 1], workers, n_global) - _count(self.bounds[p], workers, n_global)
            lo, n = int(counts[:gid].sum()), int(counts[gid])  # our range [lo, lo + n) of phase positions
            u0 = (gid - int(self.bounds[p])) % n_global  # ordered: our positions u0, u0 + G, ... of the phase
            done = min(skip, n)
            skip -= done
            if done == n:
                continue
            order, first = self._phase_map(p)
            for b in range(done // step * step, n, step):
                q = u0 + n_global * np.arange(b, min(b + step, n)) if self.ordered else np.arange(lo + b, lo + min(b + step, n))
                if buf:
                    q = self._rng(p, lo + b).permutation(q)
                q = q[max(0, done - b):]
                k = np.searchsorted(first, q, side="right") - 1
                yield self.starts[order[k]] + q - first[k]

    def order(self, n_global: int) -> np.ndarray:
        """Global sample index at each position 0..total-1 (all of them, for checks: O(total) memory)."""
        out = np.empty(self.total, np.int64)
        for g in range(n_global):
            out[g::n_global] = np.concatenate([np.zeros(0, np.int64), *self._blocks(g, n_global)])
        return out

    def row_groups(self, gid: int, n_global: int) -> np.ndarray:
        """Global row-group indices (into rg_bytes, rg_shard) that worker gid decodes in text mode."""
        seen = [np.unique(np.searchsorted(self.rg_starts, x, side="right") - 1)
                for x in self._blocks(gid, n_global, int(_count(self.start, gid, n_global)))]
        return np.unique(np.concatenate([np.zeros(0, np.int64), *seen]))

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

    # ------------------------------------------------------------ iteration

    def __iter__(self):
        return self.samples(*self._worker())

    def samples(self, gid: int, n_global: int) -> Iterator:
        """What global worker gid of n_global yields (what each DataLoader worker runs)."""
        if self.n_global is not None and self.n_global != n_global:
            raise ValueError(f"{self.path}: the resume state was saved with world_size x num_workers = {self.n_global}, "
                             f"this run has {n_global}; resume with the same numbers (the sample order depends on them)")
        blocks = self._blocks(gid, n_global, int(_count(self.start, gid, n_global)))
        return self._tokens(blocks) if self.mode == "tokens" else self._texts(blocks)

    def _tokens(self, blocks: Iterator[np.ndarray]):
        maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for x in blocks:
            s = np.searchsorted(self.starts, x, side="right") - 1
            r = x - self.starts[s]
            for si in np.unique(s).tolist():
                if si not in maps:
                    p = self.shards[si]
                    maps[si] = tuple(np.asarray(np.load(p.with_name(p.stem + f".{k}.npy"), mmap_mode="r"))
                                     for k in ("tokens", "index"))  # plain views of the maps: slicing a memmap is slow
            maps = {si: maps[si] for si in np.unique(s).tolist()}  # drop the maps of shards left behind
            lo, hi = np.empty_like(r), np.empty_like(r)
            for si, (_, index) in maps.items():
                m = s == si
                lo[m], hi[m] = index[r[m]], index[r[m] + 1]
            for si, a, b in zip(s.tolist(), lo.tolist(), hi.tolist()):
                yield torch.from_numpy(maps[si][0][a:b].astype(np.int64))

    def _texts(self, blocks: Iterator[np.ndarray]):
        files: dict[int, pq.ParquetFile] = {}
        cache: dict[int, object] = {}  # decoded row groups of the current block (kept for the next)
        for x in blocks:
            rg = np.searchsorted(self.rg_starts, x, side="right") - 1
            need = np.unique(rg).tolist()
            for g in need:
                if g not in cache:
                    s = int(self.rg_shard[g])
                    if s not in files:
                        files[s] = pq.ParquetFile(self.shards[s])
                    cache[g] = files[s].read_row_group(g - int(self.rg_first[s]), columns=self.columns)
            cache = {g: cache[g] for g in need}
            files = {s: f for s, f in files.items() if s in set(self.rg_shard[need].tolist())}
            out: list[dict | None] = [None] * len(x)
            for g in need:
                sel = np.flatnonzero(rg == g)
                t = cache[g].take(x[sel] - self.rg_starts[g])
                vals = [t.column(c).to_pylist() for c in self.columns]
                for j, row in zip(sel.tolist(), zip(*vals)):
                    out[j] = dict(zip(self.columns, row))
            yield from out

    # ------------------------------------------------------------ resume

    def offset_after(self, samples_per_worker: int, num_workers: int = 1) -> int:
        """`start` once every global worker (all ranks x `num_workers`) has yielded
        `samples_per_worker` samples since `start`: worker gid's k-th sample is its k-th position
        >= start, so all positions < start + k*G are consumed (a worker whose range is shorter
        simply ran out). With a DataLoader of batch size B, after n batches per rank with n a
        multiple of num_workers, samples_per_worker = n // num_workers * B."""
        return min(self.total, self.start + int(samples_per_worker) * self._world() * max(1, num_workers))

    def _world(self) -> int:
        return self.world_size if self.world_size is not None else _dist()[1]

    def state_dict(self, samples_per_worker: int = 0, num_workers: int = 1) -> dict:
        """{start, n_global (G), total (samples, checked on load), epoch_seed, shuffle_buffer, shuffle_seed}."""
        return {"start": self.offset_after(samples_per_worker, num_workers), "n_global": self._world() * max(1, num_workers),
                "total": self.total, "epoch_seed": self.epoch_seed, "shuffle_buffer": self.shuffle_buffer,
                "shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("total", self.total) != self.total:
            raise ValueError(f"{self.path}: the resume state is for {state['total']} samples, the dir has {self.total}; "
                             "resume on the remix the state came from")
        self.start = int(state.get("start", 0))
        self.n_global = state.get("n_global")
        for k in ("epoch_seed", "shuffle_buffer", "shuffle_seed"):
            if k in state:
                setattr(self, k, state[k])


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
