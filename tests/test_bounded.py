"""pipeline.bounded.Smallest: a streamed, memory-bounded selection of the smallest keys up to a
token cap gives what a sort of all rows and a cut at the cap gives."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.bounded import Smallest


def reference(keys: np.ndarray, tokens: np.ndarray, cap: float) -> np.ndarray:
    """Positions of the fewest rows, smallest keys first, whose tokens reach cap (all when never)."""
    at = np.argsort(keys, kind="stable")
    if cap <= 0:
        return at[:0]
    cs = np.cumsum(tokens[at])
    n = int(np.argmax(cs >= cap)) + 1 if len(cs) and cs[-1] >= cap else len(at)
    return at[:n]


def chunks(n: int, r: np.random.Generator) -> list[slice]:
    cuts = np.sort(r.choice(np.arange(1, n), size=min(n - 1, int(r.integers(0, 40))), replace=False)) if n > 1 else []
    b = [0, *cuts.tolist(), n] if n else [0, 0]
    return [slice(lo, hi) for lo, hi in zip(b[:-1], b[1:])]


def run(keys, tokens, cap, parts, floor=64):
    s = Smallest(cap, floor=floor)
    held = []
    for sl in parts:
        s.add(keys[sl], tokens=tokens[sl], row=np.arange(len(keys))[sl])
        held.append(s.held)
    k, cols = s.final()
    return k, cols, held, s


@pytest.mark.parametrize("seed", range(12))
def test_same_as_sort_and_cut_whatever_the_order_and_chunking(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(0, 20_000))
    keys = r.permutation(np.arange(n, dtype=np.uint64) * np.uint64(7919))  # distinct keys
    tokens = r.integers(0, 300, n)
    cap = float(r.choice([0, 1, 500, tokens.sum() / 3, tokens.sum(), tokens.sum() + 1, 10 * tokens.sum() + 5]))
    want = reference(keys, tokens, cap)
    for trial in range(3):  # rows in another order, cut into other chunks
        p = r.permutation(n) if trial else np.arange(n)
        k, cols, _, _ = run(keys[p], tokens[p], cap, chunks(n, r))
        if not n:
            assert len(k) == 0 and cols == {}
            continue
        assert np.array_equal(k, keys[want]) and np.array_equal(p[cols["row"]], want) and np.array_equal(cols["tokens"], tokens[want])


def test_ties_give_the_same_keys_and_token_total():
    """Equal keys: which of the tied rows at the cut are kept depends on the arrival order, but the
    largest kept key (a threshold, as tokenstreams uses it) and every row below it do not."""
    r = np.random.default_rng(1)
    keys = r.integers(0, 50, 5000).astype(np.uint64)
    tokens = r.integers(1, 40, 5000)
    want = reference(keys, tokens, 30_000)
    for _ in range(4):
        p = r.permutation(5000)
        k, cols, _, _ = run(keys[p], tokens[p], 30_000, chunks(5000, r))
        last = keys[want][-1]
        assert k[-1] == last and np.array_equal(k[k < last], keys[want][keys[want] < last]) and cols["tokens"].sum() >= 30_000


def test_memory_is_bounded_by_the_cap_not_the_stream():
    """200k rows of 50 tokens in chunks of 1000 under a cap of 5000 tokens (100 rows): never more
    than max(2 x 100, floor) + one chunk rows are held, whatever the stream's length."""
    r = np.random.default_rng(2)
    n, chunk, floor = 200_000, 1000, 64
    keys, tokens = r.random(n), np.full(n, 50)
    k, _, held, _ = run(keys, tokens, 5000, [slice(lo, lo + chunk) for lo in range(0, n, chunk)], floor=floor)
    assert max(held) <= max(2 * 100, floor) + chunk
    assert np.array_equal(k, np.sort(keys)[:100])


def test_bad_input_is_one_line():
    s = Smallest(10)
    with pytest.raises(ValueError, match="no 'tokens' column"):
        s.add(np.zeros(2), n=np.ones(2))
    with pytest.raises(ValueError, match="rows"):
        s.add(np.zeros(2), tokens=np.ones(3))
