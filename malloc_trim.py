"""Give freed heap memory back to the operating system (glibc ``malloc_trim``), where available.

glibc keeps memory that large temporary tensors and arrays occupied (the ONNX protobuf, a probe
batch's values) in its heap after they are freed; later allocations of other sizes then grow the
process instead of reusing it. Calling this after such a phase keeps the resident size, and the peak
of the phases after it, close to what is alive. ``return_large_blocks`` keeps large blocks out of
that heap in the first place; the loaders (``frontend.load_model``, ``ir.load``) call it. Elsewhere
(macOS, musl, Windows) both do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_LIBC = None


_M_MMAP_THRESHOLD = -3          # mallopt parameter (malloc.h)
LARGE_BLOCK = 1 << 20           # allocations of at least 1 MiB are mapped on their own and unmapped on free
_large_blocks_set = False


def return_large_blocks() -> bool:
    """``mallopt(M_MMAP_THRESHOLD, 1 MiB)``, once per process: every block of at least 1 MiB (a tensor
    of a probe or calibration batch, one layer's float64 temporary) gets its own mapping, returned to
    the system when freed. glibc otherwise raises that threshold to the size of each freed block (up
    to 32 MiB), so such blocks come from the heap, where freeing them in a different order than they
    were made leaves holes the process keeps: on a ViT-B's typed-graph probe that was ~300 MB of
    resident memory nothing used. Fixing the threshold also turns glibc's adjustment off, for the whole
    process. True if set (glibc), False elsewhere."""
    global _LIBC, _large_blocks_set
    if _large_blocks_set:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = getattr(_LIBC, "mallopt", None)
        _large_blocks_set = bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)) if mallopt is not None else False
    except OSError:   # no loadable C library (static or non-glibc builds)
        return False
    return _large_blocks_set


def release_free_memory() -> bool:
    """``malloc_trim(0)``; True if glibc returned memory, False if it did not or is not there."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = getattr(_LIBC, "malloc_trim", None)
        return bool(trim(0)) if trim is not None else False
    except OSError:   # no loadable C library (static or non-glibc builds)
        return False


__all__ = ["LARGE_BLOCK", "release_free_memory", "return_large_blocks"]
