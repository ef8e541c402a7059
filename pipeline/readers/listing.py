"""Finding the inputs: `list_inputs` (a file, a directory walked recursively, a glob; local or
fsspec URL), `input_files` (every file of the ingest inputs, with its path relative to its root)
and `detect_format` (by extension, or a saved HF dataset directory by its markers).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from typing import Any

from pipeline import storage

_JSONL_EXTS = tuple(e + c for e in (".jsonl", ".json", ".ndjson") for c in ("", ".gz", ".zst", ".zstd"))
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class UnknownFormat(ValueError):
    """The input format cannot be told from the path."""


def _is_hf_dir(path: str) -> bool:
    if storage.is_url(path):
        return storage.isdir(path) and any(storage.isfile(storage.join(path, m)) for m in _HF_MARKERS)
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, m)) for m in _HF_MARKERS)


def detect_format(path: str) -> str:
    """Format of `path` by its extension (or, for a directory, datasets.save_to_disk markers)."""
    if storage.isdir(path):
        if _is_hf_dir(path):
            return "hf"
        raise UnknownFormat(f"{path}: unknown input format (directory without dataset_info.json/state.json); "
                            "point the input at files or at a datasets.save_to_disk directory")
    name = storage.basename(path).lower()
    if name.endswith(_JSONL_EXTS):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith((".html", ".htm")):
        return "html"
    ext = os.path.splitext(name)[1]
    what = f"extension '{ext}'" if ext else "no extension"
    raise UnknownFormat(f"{path}: unknown input format ({what}); set `format:` for this input or rename the file")


def input_files(inputs: list) -> list[tuple[Any, str, str]]:
    """(input spec, file path, path relative to the input root) for every file of the ingest
    inputs (`ingest.inputs`: specs with `path` and `pattern`), in a stable order."""
    files = []
    for spec in inputs:
        root = str(spec.path)
        for f in list_inputs(root, spec.pattern):
            rel = storage.relpath(f, root) if storage.isdir(root) and f != root else storage.basename(f)
            files.append((spec, f, rel))
    return files


def list_inputs(path: str, pattern: str | None = None) -> list[str]:
    """Input files under `path` (a file, a directory searched recursively, or a glob), sorted.

    Hidden and underscore-prefixed files/dirs below `path` are skipped (`_SUCCESS`, `.crc`,
    `_quarantine/`); a saved HF dataset directory is one input. `pattern` (fnmatch) filters by
    file name or by path relative to `path`. A missing non-glob path raises FileNotFoundError.
    A URL `path` gives URLs (see `pipeline.storage`).
    """
    if storage.is_url(path):
        return _list_url_inputs(path, pattern)
    if glob.has_magic(path):
        out = []
        for p in sorted(glob.glob(path, recursive=True)):
            if os.path.isdir(p):
                out.extend(list_inputs(p, pattern))
            elif pattern is None or fnmatch.fnmatch(os.path.basename(p), pattern):
                out.append(p)
        return sorted(set(out))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: input path does not exist")
    if not os.path.isdir(path) or _is_hf_dir(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for d in [d for d in dirs if _is_hf_dir(os.path.join(root, d))]:
            dirs.remove(d)
            files.append(d)  # an HF dataset dir is one input
        for name in files:
            full = os.path.join(root, name)
            if name.startswith((".", "_")):
                continue
            rel = os.path.relpath(full, path)
            if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
                out.append(full)
    return sorted(out)


def _list_url_inputs(url: str, pattern: str | None) -> list[str]:
    if storage.has_magic(url):
        out = []
        for p in storage.glob(url):
            if storage.isdir(p) and not _is_hf_dir(p):
                out.extend(_list_url_inputs(p, pattern))
            elif pattern is None or fnmatch.fnmatch(storage.basename(p), pattern):
                out.append(p)
        return sorted(set(out))
    if not storage.exists(url):
        raise FileNotFoundError(f"{url}: input path does not exist")
    if not storage.isdir(url) or _is_hf_dir(url):
        return [url]
    out = []
    for full in storage.walk_files(url, skip_dir=lambda d: d.startswith((".", "_")), dir_is_file=_is_hf_dir):
        name = storage.basename(full)
        if name.startswith((".", "_")):
            continue
        rel = storage.relpath(full, url)
        if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
            out.append(full)
    return sorted(out)
