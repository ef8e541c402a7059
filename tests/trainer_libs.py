"""The trainers' own readers/writers (megatron-core, mosaicml-streaming), imported the one way that
works on this CPU-only setup. Tests import from here; product code never imports these libraries.

Both are installed with `pip --no-deps` by scripts/install_test_deps.sh (with their dependencies pip
would swap torch for a CUDA build). See OFFLINE.md, "Trainer-side readers".
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import sys
import tempfile
import types
import warnings
from multiprocessing import shared_memory
from pathlib import Path


def import_streaming():
    """`streaming`, with empty `streaming.vision`/`streaming.multimodal` when torchvision cannot import.

    `import streaming` imports streaming.vision -> torchvision, which has no CPU build that loads
    against the CPU torch (`operator torchvision::nms does not exist`); streaming.base (MDSWriter,
    StreamingDataset, Stream) does not need it.
    """
    if "streaming" not in sys.modules:
        try:
            importlib.import_module("torchvision")
        except Exception:  # noqa: BLE001 - not installed (ImportError) or built for another torch (RuntimeError)
            for name in ("streaming.vision", "streaming.multimodal"):
                sys.modules.setdefault(name, types.ModuleType(name))
    return importlib.import_module("streaming")


def import_megatron_indexed():
    """megatron.core.datasets.indexed_dataset, without its Apex/Transformer-Engine fallback warnings.

    Remember: IndexedDataset.sequence_lengths/document_indices are views of the object's mmap; keep
    the IndexedDataset alive while using them (reading them after it is collected segfaults).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = importlib.import_module("megatron.core.datasets.indexed_dataset")
    logging.getLogger("megatron").setLevel(logging.WARNING)
    return mod


@contextlib.contextmanager
def streaming_dataset(tmp_dir: str | Path, **kwargs):
    """`streaming.StreamingDataset(**kwargs)` that leaves nothing behind on this shared machine.

    Its lock files (written to tempfile.gettempdir() and never removed; a leftover one makes every
    later dataset skip that shared-memory prefix) go to tmp_dir. Its shared memory (/dev/shm
    "NNNNNN_*", machine-wide, only freed at process exit) is unlinked on exit for ITS prefix only:
    streaming.base.util.clean_stale_shared_memory() unlinks every prefix from 0 up, which would pull
    the segments from under another process's live dataset (another test run on the machine).
    """
    streaming = import_streaming()
    from streaming.base.constant import SHM_TO_CLEAN
    from streaming.base.shared.prefix import _get_path

    saved, tempfile.tempdir = tempfile.tempdir, str(tmp_dir)
    ds = None
    try:
        ds = streaming.StreamingDataset(**kwargs)
        yield ds
    finally:
        tempfile.tempdir = saved
        prefix = getattr(ds, "_shm_prefix_int", None)
        del ds
        gc.collect()
        for name in SHM_TO_CLEAN if prefix is not None else ():
            try:
                shm = shared_memory.SharedMemory(_get_path(prefix, name))
            except FileNotFoundError:
                continue
            shm.close()
            shm.unlink()
