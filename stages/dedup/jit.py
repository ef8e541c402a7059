"""The one way dedup compiles its hot loops: `numba.njit` with an on-disk cache, no GIL.

Every kernel compiled here does integer arithmetic only (wrapping uint32/uint64 multiply-add,
shifts, xor, min), so its results are the same on every CPU and with every instruction set numba
picks; the compiled code is cached next to the module (`__pycache__`, or numba's user cache dir
where that is read-only) per CPU model, so a Ray worker loads it instead of compiling (~1-2 s).

A kernel calls only compiled functions of its own module: numba's cache is invalidated by changes
to the kernel's own file, not to functions it inlined from another one.

Vector width: LLVM uses 256-bit vectors on AVX-512 CPUs unless told otherwise. The MinHash kernel
is bound by vector multiplies (one 32-bit multiply per shingle x permutation), and 512-bit vectors
make it ~1.25x faster, so on a CPU with AVX-512 the `prefer-256-bit` tuning is turned off for this
process's numba target, unless the user set NUMBA_CPU_FEATURES / NUMBA_CPU_NAME themselves. It has
to happen before numba compiles its first function in the process; if something compiled earlier,
numba keeps its 256-bit choice (same results, slower). It changes speed only, never results.
"""
from __future__ import annotations

import functools

import numba
from numba.core import config


def _prefer_wide_vectors() -> None:
    if config.CPU_FEATURES is not None or config.CPU_NAME is not None:
        return
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        config.CPU_FEATURES = features + ",-prefer-256-bit"


_prefer_wide_vectors()

njit = functools.partial(numba.njit, cache=True, nogil=True)
"""`@njit` for every dedup kernel: compiled on first call, then cached on disk."""
vectorize = numba.vectorize
"""`@vectorize([signature], cache=True)`: a compiled ufunc (callable on arrays and inside kernels)."""
