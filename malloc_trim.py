"""Give freed heap memory back to the operating system (glibc ``malloc_trim``), where available.

glibc keeps memory that large temporary tensors and arrays occupied (the ONNX protobuf, a probe
batch's values) in its heap after they are freed; later allocations of other sizes then grow the
process instead of reusing it. Calling this after such a phase keeps the resident size, and the peak
of the phases after it, close to what is alive. Elsewhere (macOS, musl, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_LIBC = None


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


__all__ = ["release_free_memory"]
