"""Tiny GPT proxy language model: train on a weighted mixture of token streams, report target losses.

Mixture search (RegMix, CLIMB) trains many small proxies, one per candidate mixture, each on the
same number of tokens, and ranks mixtures by the proxies' cross-entropy on held-out target sets.
This module is that proxy: pure torch + numpy, no other `pipeline` imports, so a Ray worker can
import it alone.

- Model: token embedding tied with the output head, learned positions, pre-LayerNorm blocks of
  causal self-attention (`scaled_dot_product_attention`) and a 4x GELU MLP, no dropout.
- Data: the whole run's (stream, offset) windows are drawn up front from the seed (`sample_plan`);
  each stream gets its share of sequences by largest remainder, so even a short run realizes the
  weights to within one sequence; windows start uniformly over the stream. Streams may be memmaps:
  only the sampled windows are read, and streams of weight 0 are never touched.
- Optimizer: AdamW (decay on matrices only), linear warmup then cosine decay to 10% of lr, clipping.
  `lr_schedule` constant (no decay after warmup) or moderate (cosine to 50% of lr) instead, and
  `average_last` k: the evaluated weights are the mean of the last k checkpoints, taken every
  `average_interval(steps, k)` steps (the last at the final step), as in "How Learning Rate Decay
  Wastes Your Best Data in Curriculum-Based LLM Pretraining" (constant LR + model averaging).
- `data_order` sequential: the windows are read in stream order, evenly spaced over each whole
  stream (a curriculum written in order is seen in order) instead of drawn at random.
- Device: "auto" = CUDA when present (bf16 autocast), else CPU (fp32, `threads` torch threads,
  bitwise reproducible for a given seed and thread count).
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProxySpec:
    """Shape and budget of one proxy run (same field names as `pipeline.config.ProxyConfig`)."""

    vocab_size: int
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    ctx: int = 64
    batch_size: int = 4
    lr: float = 2e-3
    tokens: int = 200_000
    eval_tokens: int = 50_000
    device: str = "auto"
    threads: int | None = 1
    warmup: float = 0.05  # fraction of steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    lr_schedule: str = "cosine"  # cosine: to 0.1*lr; moderate: cosine to 0.5*lr; constant: lr after warmup
    average_last: int = 0  # evaluate the mean of the last k checkpoints (0 or 1: the final weights)
    data_order: str = "random"  # random windows (sample_plan) or sequential (sequential_plan)

    SCHEDULES: ClassVar[dict[str, float]] = {"cosine": 0.1, "moderate": 0.5, "constant": 1.0}  # final lr / lr
    ORDERS: ClassVar[tuple[str, ...]] = ("random", "sequential")
    # fields added after weights.json files were written: left out of `as_dict` at their defaults
    NEW_FIELDS: ClassVar[dict[str, object]] = {"lr_schedule": "cosine", "average_last": 0, "data_order": "random"}

    # The config's names for two fields (ProxyConfig): what they hold, in the config's words.
    CONFIG_NAMES: ClassVar[dict[str, str]] = {"batch_size": "sequences_per_step", "tokens": "train_tokens"}

    @classmethod
    def from_config(cls, cfg_model, vocab_size: int) -> "ProxySpec":
        """A spec from a `ProxyConfig` (or any object with (some of) these attribute names)."""
        kw = {}
        for f in fields(cls):
            name = cls.CONFIG_NAMES.get(f.name, f.name)
            if f.name != "vocab_size" and hasattr(cfg_model, name):
                kw[f.name] = getattr(cfg_model, name)
        return cls(vocab_size=int(vocab_size), **kw)

    def as_dict(self) -> dict:
        """asdict(), without the fields of NEW_FIELDS that hold their default (so the specs, weights.json
        files and hashes written before these fields existed stay byte-identical)."""
        return {k: v for k, v in asdict(self).items() if not (k in self.NEW_FIELDS and v == self.NEW_FIELDS[k])}

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.vocab_size < 2 or self.ctx < 1 or self.batch_size < 1 or self.tokens < 1:
            raise ValueError(f"invalid proxy spec: {asdict(self)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.lr_schedule not in self.SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r}: use one of {', '.join(self.SCHEDULES)}")
        if not isinstance(self.average_last, int) or self.average_last < 0:
            raise ValueError(f"average_last {self.average_last!r}: use an integer >= 0 (checkpoints averaged)")
        if self.data_order not in self.ORDERS:
            raise ValueError(f"data_order {self.data_order!r}: use one of {', '.join(self.ORDERS)}")


# ----------------------------------------------------------------------------------------- model


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """GPT-2-shaped decoder; the output head is the token embedding (tied), logits in fp32 shape."""

    def __init__(self, spec: ProxySpec):
        super().__init__()
        self.tok = nn.Embedding(spec.vocab_size, spec.d_model)
        self.pos = nn.Embedding(spec.ctx, spec.d_model)
        self.blocks = nn.ModuleList(Block(spec.d_model, spec.n_head) for _ in range(spec.n_layer))
        self.ln_f = nn.LayerNorm(spec.d_model)
        self._init(spec.n_layer)

    def _init(self, n_layer: int) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 n_layer)."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "out.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x) @ self.tok.weight.t()


def n_params(spec: ProxySpec) -> int:
    """Parameters of the proxy for `spec` (tied head counted once); builds on the meta device."""
    with torch.device("meta"):
        model = TinyGPT(spec)
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------- sampling


def _check_mixture(lengths: Sequence[int], weights: Sequence[float], ctx: int) -> np.ndarray:
    """Normalized weights; one-line ValueError for mismatched, negative, all-zero or too short."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != len(lengths):
        raise ValueError(f"{len(lengths)} streams but {w.size} weights")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError("all mixture weights are zero")
    for i, (n, wi) in enumerate(zip(lengths, w)):
        if wi > 0 and n < ctx + 1:
            raise ValueError(f"stream {i} has {n} tokens, fewer than ctx+1 = {ctx + 1} needed for one window")
    return w / w.sum()


def _largest_remainder(w: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, each within 1 of w*n (ties go to the lower index); a weight
    of 0 always gets 0."""
    exact = w * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        frac = np.where(w > 0, exact - counts, -1.0)
        order = np.argsort(-frac, kind="stable")
        counts[order[:short]] += 1
    return counts


def sample_plan(lengths: Sequence[int], weights: Sequence[float], n_seqs: int, ctx: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The training windows of a run: (stream index, start offset) per sequence, in training order.

    Stream i gets round(w_i * n_seqs) sequences (largest remainder, exact to within one), shuffled
    over the run; each window of ctx+1 tokens starts uniformly in [0, len_i - ctx - 1].
    """
    lengths = np.asarray([int(n) for n in lengths], dtype=np.int64)
    w = _check_mixture(lengths, weights, ctx)
    counts = _largest_remainder(w, int(n_seqs))
    stream = rng.permutation(np.repeat(np.arange(len(w), dtype=np.int64), counts))
    offsets = rng.integers(0, np.maximum(lengths[stream] - ctx, 1))
    return stream, offsets.astype(np.int64)


def sequential_plan(lengths: Sequence[int], weights: Sequence[float], n_seqs: int, ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows in stream order (data_order: sequential): stream i gets the same counts c_i as in
    sample_plan; its j-th window starts at round(j * (len_i - ctx - 1) / (c_i - 1)) (evenly spaced
    from the first token to the last window, so the run sees the whole stream, in order, at any
    token budget; no overlap when c_i * ctx <= len_i). Streams are interleaved by progress
    (j + 0.5) / c_i, ties to the lower index, so all advance together. No randomness."""
    lengths = np.asarray([int(n) for n in lengths], dtype=np.int64)
    w = _check_mixture(lengths, weights, ctx)
    counts = _largest_remainder(w, int(n_seqs))
    stream, offsets, progress = [], [], []
    for i, c in enumerate(counts.tolist()):
        if not c:
            continue
        j = np.arange(c, dtype=np.int64)
        last = max(0, int(lengths[i]) - ctx - 1)
        offsets.append(np.rint(j * (last / max(1, c - 1))).astype(np.int64))
        stream.append(np.full(c, i, np.int64))
        progress.append((j + 0.5) / c)
    stream_a, off_a, prog = (np.concatenate(x) for x in (stream, offsets, progress))
    at = np.lexsort((stream_a, prog))
    return stream_a[at], off_a[at]


def _batch(streams: Sequence[np.ndarray], stream_idx: np.ndarray, offsets: np.ndarray,
           ctx: int, vocab_size: int) -> np.ndarray:
    """(B, ctx+1) int64 windows read from the (possibly memory-mapped) streams."""
    out = np.empty((len(stream_idx), ctx + 1), dtype=np.int64)
    for r, (s, o) in enumerate(zip(stream_idx, offsets)):
        out[r] = streams[s][o:o + ctx + 1]
    if out.max() >= vocab_size or out.min() < 0:
        raise ValueError(f"token id {int(out.max())} outside the vocabulary of {vocab_size}")
    return out


# -------------------------------------------------------------------------------------- training


def _device(name: str) -> torch.device:
    """auto -> cuda when torch sees one, else cpu; an explicit cuda without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def _lr_at(step: int, steps: int, spec: ProxySpec) -> float:
    """Linear warmup over warmup*steps, then cosine decay from lr to 0.1*lr at the last step
    (lr_schedule cosine); moderate: cosine to 0.5*lr; constant: lr after the warmup."""
    warm = max(1, round(spec.warmup * steps)) if spec.warmup > 0 else 0
    if step < warm:
        return spec.lr * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm - 1)
    if spec.lr_schedule == "cosine":  # the original expression, so the default's floats are unchanged
        return spec.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    floor = ProxySpec.SCHEDULES[spec.lr_schedule]
    return spec.lr * (floor + (1.0 - floor) / 2 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def average_interval(steps: int, k: int) -> int:
    """Steps between the averaged checkpoints: the k of them span the last 20 % of the run
    (interval max(1, floor(0.2 * steps / k)))."""
    return max(1, int(0.2 * steps / max(1, k)))


def averaged_steps(steps: int, k: int) -> list[int]:
    """The steps after which a checkpoint is taken for average_last k: the last step and the k-1
    before it at average_interval (never before step 0)."""
    if k <= 1:
        return [steps - 1]
    iv = average_interval(steps, k)
    return sorted({max(0, steps - 1 - j * iv) for j in range(k)})


def _optimizer(model: nn.Module, spec: ProxySpec, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (embeddings included), none on biases and norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.95), eps=1e-8,
                             fused=device.type == "cuda")


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context on CPU (fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def window_loss(model: nn.Module, xy: torch.Tensor, device: torch.device, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of (B, T+1) windows: predict xy[:, 1:] from xy[:, :-1] (fp32 loss)."""
    with _autocast(device):
        logits = model(xy[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), xy[:, 1:].flatten(), reduction=reduction)


def eval_windows(arr: np.ndarray, spec: ProxySpec) -> np.ndarray:
    """Non-overlapping (n, ctx+1) int64 windows from the start of `arr`, within eval_tokens (a
    remainder shorter than a window is dropped; a set shorter than one window is one short window)."""
    n = min(len(arr), spec.eval_tokens)
    w = spec.ctx + 1
    if n >= w:
        win = np.asarray(arr[: (n // w) * w], dtype=np.int64).reshape(-1, w)
    elif n >= 2:
        win = np.asarray(arr[:n], dtype=np.int64).reshape(1, n)
    else:
        raise ValueError(f"eval set has {len(arr)} tokens, at least 2 are needed")
    if win.max() >= spec.vocab_size or win.min() < 0:
        raise ValueError(f"eval token id {int(win.max())} outside the vocabulary of {spec.vocab_size}")
    return win


@torch.no_grad()
def evaluate(model: nn.Module, win: np.ndarray, device: torch.device, batch: int = 64) -> float:
    """Mean token cross-entropy (nats) over every predicted position of the windows `win`."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(win), batch):
        xy = torch.from_numpy(win[i:i + batch]).to(device)
        total += float(window_loss(model, xy, device, reduction="sum"))
        count += xy.shape[0] * (xy.shape[1] - 1)
    return total / count


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, streams: Sequence[np.ndarray], stream_idx: np.ndarray,
                 offsets: np.ndarray, first: int, steps: int, spec: ProxySpec, device: torch.device, after=None) -> None:
    """Optimizer steps first .. first+n-1 of a run of `steps` (n = len(stream_idx) // batch_size), the
    learning rate following the whole run's schedule; windows (stream_idx, offsets) in training order.
    `after(step, model)`, if given, is called after each optimizer step."""
    for j in range(len(stream_idx) // spec.batch_size):
        sl = slice(j * spec.batch_size, (j + 1) * spec.batch_size)
        xy = torch.from_numpy(_batch(streams, stream_idx[sl], offsets[sl], spec.ctx, spec.vocab_size)).to(device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(first + j, steps, spec)
        loss = window_loss(model, xy, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        if after is not None:
            after(first + j, model)


@contextmanager
def threads(n: int | None):
    """torch on `n` threads inside, the caller's count restored after (None: leave it as it is).
    One thread makes every reduction sum in a fixed order, so results are the same on any machine."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Averager:
    """The running sum of the checkpoints taken at `snap` steps (average_last); `load_mean` puts
    their mean into the model. With no snap steps it does nothing."""

    def __init__(self, snap: set[int]):
        self.snap, self.sum, self.n = snap, {}, 0

    def __call__(self, step: int, m: nn.Module) -> None:
        if step not in self.snap:
            return
        with torch.no_grad():
            for k, v in m.state_dict().items():
                cur = v.detach().float()
                self.sum[k] = cur.clone() if k not in self.sum else self.sum[k] + cur
        self.n += 1

    def load_mean(self, model: nn.Module) -> None:
        if self.n:
            model.load_state_dict({k: v / self.n for k, v in self.sum.items()})


def _snap_steps(steps: int, spec: "ProxySpec") -> set[int]:
    return set(averaged_steps(steps, spec.average_last)) if spec.average_last > 1 else set()


def train_proxy(streams: Sequence[np.ndarray], weights: Sequence[float], evals: dict[str, np.ndarray],
                spec: ProxySpec, seed: int, init_state: str | None = None, save_state: str | None = None,
                on_step=None) -> dict:
    """Train one proxy on the mixture `weights` of `streams` for spec.tokens tokens; return
    {"loss": mean over targets, "losses": {target: CE nats}, "tokens", "steps", "seconds"
    (training only), "eval_seconds", "tokens_per_s", "params", "device"}. No evals: loss is nan.
    init_state: a state_dict file (from save_state) to continue from (continual pretraining: new
    optimizer and schedule, the weights of the earlier run); save_state: write the trained weights
    there (CPU tensors, written to a temporary name and moved into place).
    `on_step(step, model)`, if given, is called after every optimizer step (checks, logging)."""
    device = _device(spec.device)
    steps = math.ceil(spec.tokens / (spec.batch_size * spec.ctx))
    rng = np.random.Generator(np.random.PCG64(seed))
    if spec.data_order == "sequential":
        stream_idx, offsets = sequential_plan([len(s) for s in streams], weights, steps * spec.batch_size, spec.ctx)
    else:
        stream_idx, offsets = sample_plan([len(s) for s in streams], weights, steps * spec.batch_size, spec.ctx, rng)
    snap = _snap_steps(steps, spec)
    windows = {name: eval_windows(arr, spec) for name, arr in evals.items()}  # fail before training
    with threads(spec.threads):
        torch.manual_seed(seed)
        model = TinyGPT(spec).to(device)
        if init_state is not None:
            model.load_state_dict(torch.load(init_state, map_location=device, weights_only=True))
        opt = _optimizer(model, spec, device)
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        avg = _Averager(snap)

        def after(step: int, m: nn.Module) -> None:
            avg(step, m)
            if on_step is not None:
                on_step(step, m)

        _train_steps(model, opt, streams, stream_idx, offsets, 0, steps, spec, device, after)
        avg.load_mean(model)  # evaluate the mean of the checkpoints (average_last)
        _sync(device)
        seconds = time.perf_counter() - t0
        losses = {name: evaluate(model, win, device) for name, win in windows.items()}
        eval_seconds = time.perf_counter() - t0 - seconds
        if save_state is not None:
            tmp = f"{save_state}.tmp-{os.getpid()}"
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
            os.replace(tmp, save_state)
    tokens = steps * spec.batch_size * spec.ctx
    extra = {"averaged_steps": sorted(snap)} if snap else {}
    return {**extra,
        "loss": float(np.mean(list(losses.values()))) if losses else float("nan"),
        "losses": losses,
        "tokens": tokens,
        "steps": steps,
        "seconds": seconds,
        "eval_seconds": eval_seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else float("inf"),
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
    }


def initial_losses(evals: dict[str, np.ndarray], spec: ProxySpec, seed: int) -> dict[str, float]:
    """Target losses of the untrained proxy of `seed` (the initialization every run of that seed
    starts from): the reference a skills graph measures loss drops against."""
    device = _device(spec.device)
    windows = {name: eval_windows(arr, spec) for name, arr in evals.items()}
    with threads(spec.threads):
        torch.manual_seed(seed)
        model = TinyGPT(spec).to(device)
        return {name: evaluate(model, win, device) for name, win in windows.items()}


def train_phased(streams: Sequence[np.ndarray], fractions: Sequence[float], weights: Sequence[Sequence[float]],
                 evals: dict[str, np.ndarray], spec: ProxySpec, seed: int, update=None) -> dict:
    """Train one proxy through phases in order: phase p takes its share `fractions[p]` of the run's
    steps (largest remainder) from the mixture weights[p], windows shuffled within the phase; one
    learning-rate schedule and one optimizer over the whole run. The `evals` losses are measured at
    the end of the run, and with `update` at the end of every phase (else None there). With
    `update`, phase p+1's weights are update(p, weights_p, losses_p) (an online schedule such as
    Skill-it's) and only weights[0] is read. `data_order` sequential reads each phase's windows in
    stream order; `average_last` k evaluates the mean of the run's last k checkpoints at the end
    (the per-phase losses `update` sees are of the current weights). With one phase this is
    `train_proxy` (same windows, same steps, same bytes). Returns train_proxy's keys plus "phases":
    [{"weights", "steps", "losses"}] in order."""
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or not len(fr) or not np.isfinite(fr).all() or (fr <= 0).any():
        raise ValueError(f"phase fractions must be positive, got {list(fractions)}")
    if update is None and len(weights) != len(fr):
        raise ValueError(f"{len(fr)} phases but {len(weights)} weight vectors")
    device = _device(spec.device)
    steps = math.ceil(spec.tokens / (spec.batch_size * spec.ctx))
    per = _largest_remainder(fr / fr.sum(), steps)
    rng = np.random.Generator(np.random.PCG64(seed))
    lengths = [len(s) for s in streams]
    _check_mixture(lengths, weights[0], spec.ctx)
    windows = {name: eval_windows(arr, spec) for name, arr in evals.items()}  # fail before training
    avg = _Averager(_snap_steps(steps, spec))
    record, seconds, eval_seconds = [], 0.0, 0.0
    with threads(spec.threads):
        torch.manual_seed(seed)
        model = TinyGPT(spec).to(device)
        opt = _optimizer(model, spec, device)
        w, first = list(weights[0]), 0
        for p, n in enumerate(per.tolist()):
            if p > 0:
                w = list(update(p - 1, w, record[-1]["losses"]) if update is not None else weights[p])
            if spec.data_order == "sequential":
                stream_idx, offsets = sequential_plan(lengths, w, n * spec.batch_size, spec.ctx)
            else:
                stream_idx, offsets = sample_plan(lengths, w, n * spec.batch_size, spec.ctx, rng)
            model.train()
            _sync(device)
            t0 = time.perf_counter()
            _train_steps(model, opt, streams, stream_idx, offsets, first, steps, spec, device, avg)
            last = p == len(per) - 1
            if last:
                avg.load_mean(model)  # the run's result is the mean of its last checkpoints (average_last)
            _sync(device)
            t1 = time.perf_counter()
            losses = {name: evaluate(model, win, device) for name, win in windows.items()} if last or update is not None else None
            seconds, eval_seconds = seconds + t1 - t0, eval_seconds + time.perf_counter() - t1
            record.append({"weights": [float(x) for x in _check_mixture(lengths, w, spec.ctx)], "steps": int(n), "losses": losses})
            first += n
    tokens = steps * spec.batch_size * spec.ctx
    losses = record[-1]["losses"]
    extra = {"averaged_steps": sorted(avg.snap)} if avg.snap else {}
    return {**extra,
        "loss": float(np.mean(list(losses.values()))) if losses else float("nan"),
        "losses": losses, "phases": record, "tokens": tokens, "steps": steps, "seconds": seconds,
        "eval_seconds": eval_seconds, "tokens_per_s": tokens / seconds if seconds > 0 else float("inf"),
        "params": sum(p.numel() for p in model.parameters()), "device": str(device),
    }
