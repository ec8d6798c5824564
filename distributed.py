"""Sharded runs over processes with torch.distributed: ``torchrun --nproc-per-node N -m spikeport ...``.

A sharded run splits the work of the single-process run into the same pieces (simulation batches,
op-counting chunks) and deals them round-robin to the ranks; each rank computes its pieces, the
pieces travel to every rank (all-gather) and are merged in their original order by the same code a
single process uses. Integer counters are summed, which no order changes. So every reported number
and saved array equals the single-process run's, bit for bit; only rank 0 prints and writes files
(the CLI's job). Pieces travel as NPZ bytes plus a JSON skeleton (``allow_pickle=False``): nothing is
unpickled. Backends: gloo on CPU, nccl when the run's device is CUDA (each rank then uses
``cuda:LOCAL_RANK``). Outside torchrun (no ``WORLD_SIZE`` > 1) everything runs in this process.
"""
from __future__ import annotations

import atexit
import io
import json
import os
from contextlib import contextmanager
from typing import Callable, Iterable

import numpy as np

_state = {"local": 0, "backend": None}


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def setup(device=None):
    """Join the process group when launched by torchrun; returns the device this rank uses.

    ``device`` is the run's device (None or 'cpu': gloo; CUDA: nccl, one GPU per local rank)."""
    import torch
    if not launched():
        return device
    cuda = device is not None and torch.device(device).type == "cuda"
    dist = _dist()
    if dist is None:
        import torch.distributed as tdist
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group("nccl" if cuda else "gloo")
        _state["backend"] = "nccl" if cuda else "gloo"
        atexit.register(teardown)
    if cuda and torch.device(device).index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def teardown() -> None:
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()
        _state["backend"] = None


def world() -> tuple[int, int]:
    """(rank, size) of the sharded run; (0, 1) outside one or inside :func:`local`."""
    dist = _dist()
    if dist is None or _state["local"]:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_root() -> bool:
    dist = _dist()
    return dist is None or dist.get_rank() == 0


@contextmanager
def local():
    """Run the enclosed work entirely in this process (a piece of an already sharded loop)."""
    _state["local"] += 1
    try:
        yield
    finally:
        _state["local"] -= 1


def map_pieces(items: Iterable, fn: Callable, wrap: Callable | None = None) -> list:
    """``[fn(item) for item in items]``, the items dealt round-robin to the ranks and the results
    gathered on every rank in the items' order. ``wrap`` (e.g. a progress bar) wraps this rank's items.
    Results are nested dicts / lists of numpy arrays, numbers, strings and None."""
    items = list(items)
    rank, size = world()
    mine = items[rank::size]
    with local():
        done = [fn(item) for item in (wrap(mine) if wrap is not None and mine else mine)]
    if size == 1:
        return done
    parts = [unpack(b) for b in _all_gather_bytes(pack(done))]
    return [parts[i % size][i // size] for i in range(len(items))]


def sum_arrays(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Element-wise sum of integer arrays over the ranks (every rank gets the sums)."""
    rank, size = world()
    if size == 1:
        return arrays
    if any(a.dtype.kind not in "iub" for a in arrays):
        raise TypeError("sum_arrays sums integer counters only (an order-free sum)")
    every = [unpack(b) for b in _all_gather_bytes(pack(arrays))]
    return [np.sum([e[i] for e in every], axis=0, dtype=arrays[i].dtype) for i in range(len(arrays))]


# ------------------------------------------------------------------------------ transport
def pack(obj) -> bytes:
    """Nested dicts (str keys) / lists / tuples of numpy arrays, numpy scalars, int, float, str,
    bool and None as NPZ bytes (a JSON skeleton plus the arrays; no pickle)."""
    arrays: list[np.ndarray] = []

    def enc(o):
        if isinstance(o, np.ndarray):
            if o.dtype.kind not in "biufc":
                raise TypeError(f"pack: arrays of dtype {o.dtype} are not supported")
            arrays.append(o)
            return {"a": len(arrays) - 1}
        if isinstance(o, np.generic):
            arrays.append(np.asarray(o))
            return {"s": len(arrays) - 1}
        if isinstance(o, dict):
            if not all(isinstance(k, str) for k in o):
                raise TypeError("pack: dict keys must be strings")
            return {"d": [[k, enc(v)] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return {"l" if isinstance(o, list) else "t": [enc(v) for v in o]}
        if o is None or isinstance(o, (bool, int, float, str)):
            return {"v": o}
        raise TypeError(f"pack: cannot send a {type(o).__name__}")
    skeleton = json.dumps(enc(obj)).encode()
    buf = io.BytesIO()
    np.savez(buf, skeleton=np.frombuffer(skeleton, dtype=np.uint8), **{f"a{i}": a for i, a in enumerate(arrays)})
    return buf.getvalue()


def unpack(data: bytes):
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    arrays = [files[f"a{i}"] for i in range(len(files) - 1)]

    def dec(o):
        (kind, v), = o.items()
        if kind == "a":
            return arrays[v]
        if kind == "s":
            return arrays[v][()]
        if kind == "d":
            return {k: dec(x) for k, x in v}
        if kind == "l":
            return [dec(x) for x in v]
        if kind == "t":
            return tuple(dec(x) for x in v)
        return v
    return dec(json.loads(files["skeleton"].tobytes().decode()))


def _all_gather_bytes(data: bytes) -> list[bytes]:
    import torch
    dist = _dist()
    size = dist.get_world_size()
    dev = torch.device("cuda", torch.cuda.current_device()) if _state["backend"] == "nccl" else torch.device("cpu")
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    n = torch.tensor([t.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=dev)
    padded[:t.numel()] = t
    out = [torch.empty(longest, dtype=torch.uint8, device=dev) for _ in range(size)]
    dist.all_gather(out, padded)
    return [o[:int(s.item())].cpu().numpy().tobytes() for o, s in zip(out, sizes)]


__all__ = ["launched", "setup", "teardown", "world", "is_root", "local", "map_pieces", "sum_arrays", "pack", "unpack"]
