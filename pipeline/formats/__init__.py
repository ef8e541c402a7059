"""Trainer-side formats: writers of Megatron-core indexed datasets (`megatron`) and MosaicML
Streaming MDS datasets (`mds`), and the HF `datasets` mixture loader (`hf`).

The writers use numpy only and are byte-compatible with the real writers, checked against the real
readers in tests: the trainers' packages pull torch CUDA builds / torchvision that CPU curation
clusters cannot import (OFFLINE.md, "Trainer-side readers"), so product code must not need them.
Nothing heavy is imported here (only the writers' shared context-manager base): import the submodules directly.
"""


class AtomicWriter:
    """`with Writer(...) as w:` closes (publishes) on success and aborts (removes what it wrote) on
    an exception. Subclasses set `_done` and define `close()` and `abort()`."""

    _done = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.close()

