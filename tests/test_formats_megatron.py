"""pipeline.formats.megatron against megatron-core itself: its IndexedDataset reads what we write,
and its IndexedDatasetBuilder writes the same bytes for the same documents."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.formats.megatron import IndexedWriter, read_index
from tests.trainer_libs import import_megatron_indexed

mi = import_megatron_indexed()


def _docs(rng, n: int, hi: int) -> list[np.ndarray]:
    lens = rng.integers(1, 300, n)
    lens[[0, 3]] = 1
    lens[5] = 0  # megatron allows empty documents (a length-0 sequence)
    lens[7] = 20_000
    lens[-1] = 0  # empty last document: its pointer is the end of .bin
    return [rng.integers(0, hi, k) for k in lens]


def _flat(docs):
    return np.concatenate(docs), np.concatenate([[0], np.cumsum([d.size for d in docs])])


def _read_all(prefix) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    ds = mi.IndexedDataset(str(prefix))  # keep alive while its mmap views are used
    seqs = [np.array(ds[i]) for i in range(len(ds))]
    out = seqs, np.array(ds.sequence_lengths), np.array(ds.document_indices)
    del ds
    return out


@pytest.mark.parametrize("dtype,hi,src", [(np.uint16, 65_500, np.uint32), (np.int32, 200_000, np.uint32), (np.int32, 2**31 - 1, np.int64)])
def test_megatron_reads_and_builder_agrees(tmp_path, dtype, hi, src):
    rng = np.random.default_rng(int(hi))
    docs = [d.astype(src) for d in _docs(rng, 60, hi)]
    prefix = tmp_path / "ours"
    with IndexedWriter(prefix, dtype) as w:
        for lo, up in [(0, 10), (10, 11), (11, 11), (11, 60)]:  # several calls, one of them empty
            w.add_documents(*_flat(docs[lo:up]) if up > lo else (np.zeros(0, src), np.zeros(1, np.int64)))
    assert w.summary == {"documents": 60, "tokens": sum(d.size for d in docs), "dtype": np.dtype(dtype).name}
    seqs, lengths, doc_idx = _read_all(prefix)
    assert len(seqs) == 60 and all(s.dtype == dtype and np.array_equal(s, d) for s, d in zip(seqs, docs))  # dtype from the .idx code
    assert lengths.sum() == w.summary["tokens"] and np.array_equal(lengths, [d.size for d in docs])
    assert np.array_equal(doc_idx, np.arange(61))
    ours_len, ours_doc = read_index(prefix)
    assert np.array_equal(ours_len, lengths) and np.array_equal(ours_doc, doc_idx)

    builder = mi.IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype)
    for d in docs:
        builder.add_document(d, [d.size])  # numpy works where megatron's tools pass a tensor
    builder.finalize(str(tmp_path / "ref.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"ref.{ext}").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.bin", "ours.idx", "ref.bin", "ref.idx"]


@pytest.mark.parametrize("docs", [[], [np.zeros(0, np.uint16)] * 3])
def test_no_tokens_still_opens(tmp_path, docs):
    """megatron cannot mmap a 0-byte .bin: the writer pads it with one unreferenced token."""
    w = IndexedWriter(tmp_path / "e", np.uint16)
    if docs:
        w.add_documents(np.zeros(0, np.uint16), np.zeros(len(docs) + 1, np.int64))
    assert w.close() == {"documents": len(docs), "tokens": 0, "dtype": "uint16"}
    seqs, lengths, doc_idx = _read_all(tmp_path / "e")
    assert len(seqs) == len(docs) and all(s.size == 0 for s in seqs)
    assert lengths.sum() == 0 and np.array_equal(doc_idx, np.arange(len(docs) + 1))


def test_exception_leaves_no_files_and_overwrite(tmp_path):
    prefix = tmp_path / "d"
    with pytest.raises(RuntimeError, match="boom"), IndexedWriter(prefix, np.uint16) as w:
        w.add_documents(np.arange(10), np.array([0, 4, 10]))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    for n in (3, 2):  # a second write replaces the pair
        with IndexedWriter(prefix, np.uint16) as w:
            w.add_documents(np.arange(n), np.arange(n + 1))
        assert _read_all(prefix)[1].tolist() == [1] * n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]


def test_one_line_errors(tmp_path):
    for bad in (np.uint32, np.float32, np.int64, "nonsense"):
        with pytest.raises(ValueError, match="uint16 or int32"):
            IndexedWriter(tmp_path / "x", bad)
    with IndexedWriter(tmp_path / "x", np.uint16) as w:
        with pytest.raises(ValueError, match="do not fit uint16"):
            w.add_documents(np.array([1, 70_000]), np.array([0, 2]))
        with pytest.raises(ValueError, match="non-decreasing"):
            w.add_documents(np.arange(5), np.array([0, 3, 2]))
        with pytest.raises(ValueError, match="non-decreasing"):
            w.add_documents(np.arange(5), np.array([0, 6]))
        with pytest.raises(ValueError, match="integer"):
            w.add_documents(np.ones(3), np.array([0, 3]))
    assert read_index(tmp_path / "x")[0].size == 0
    (tmp_path / "bad.idx").write_bytes(b"nope" * 10)
    with pytest.raises(ValueError, match="not a megatron"):
        read_index(tmp_path / "bad")
