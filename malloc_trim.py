"""Give freed heap memory back to the operating system (glibc ``malloc_trim``), where available.

glibc keeps memory that large temporary tensors and arrays occupied (the ONNX protobuf, a probe
batch's values) in its heap after they are freed; later allocations of other sizes then grow the
process instead of reusing it. Calling this after such a phase keeps the resident size, and the peak
of the phases after it, close to what is alive. ``large_blocks_returned`` keeps large blocks out of
that heap in the first place while ``frontend.load_model`` probes the model. Elsewhere
(macOS, musl, Windows) both do nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

_LIBC = None


_M_MMAP_THRESHOLD = -3          # mallopt parameter (malloc.h)
LARGE_BLOCK = 1 << 20           # while returning large blocks: blocks of 1 MiB or more get their own mapping
AFTER = 32 << 20                # afterwards: glibc's ceiling for its dynamic threshold (64-bit)


def _libc_call(name: str, *args) -> bool:
    """glibc's ``name(*args)`` != 0; False off Linux, without a loadable C library or the symbol."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:   # no loadable C library (static or non-glibc builds)
        return False
    fn = getattr(_LIBC, name, None)
    return bool(fn(*args)) if fn is not None else False


def _mallopt_threshold(value: int) -> bool:
    return _libc_call("mallopt", _M_MMAP_THRESHOLD, value)


@contextlib.contextmanager
def large_blocks_returned():
    """While active, ``mallopt(M_MMAP_THRESHOLD, 1 MiB)``: every block of at least 1 MiB gets its own
    mapping, returned to the system when freed. For phases that free many 1-10 MB tensors in another
    order than they made them (the typed-graph probe of ``frontend.load_model``): from glibc's heap,
    the holes they leave stay resident (~300 MB on a ViT-B). Not for whole pipelines: a fresh mapping
    costs page faults on every allocation (calibration and quantisation in float64 ran ~15 % slower).
    On exit the threshold is 32 MiB, the ceiling glibc's own adjustment reaches (setting it once turns
    that adjustment off for the process). Does nothing off glibc."""
    _mallopt_threshold(LARGE_BLOCK)
    try:
        yield
    finally:
        _mallopt_threshold(AFTER)


def release_free_memory() -> bool:
    """``malloc_trim(0)``; True if glibc returned memory, False if it did not or is not there."""
    return _libc_call("malloc_trim", 0)


__all__ = ["LARGE_BLOCK", "large_blocks_returned", "release_free_memory"]
