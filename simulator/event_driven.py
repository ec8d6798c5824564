"""Event-driven Dense projections: add up the weight rows of the active sources only.

A Dense projection's dense GEMM costs the same at 1 % activity as at 100 %. When few sources are
active, ``F.embedding_bag`` sums only their weight rows (rows of ``W^T``), per sample
(``offsets``), times the event value where events are graded. On the exact paths this is the same
sum without its zero terms: every partial sum is an integer under the projection's static bound
(``synapses.py``), so the result is identical to the dense one in any order (tested with equality).
Float (non-quantised) networks keep the dense GEMM, whose rounding would differ.

Choice per projection and step from the measured activity: a cost model
``t_sparse(nnz) = a + c * nnz`` against ``t_dense``, calibrated once per shape, batch, dtype,
device and thread count on this machine (a few timed runs of each at two activities; cached for
the process), gives the largest event count ``nnz*`` at which the event-driven sum is predicted at
most 0.85 of the dense time (a margin for timing noise: the choice never changes results, only
speed, and a wrong "sparse" costs more than a missed one). Each step counts the events
(``count_nonzero``, one pass; after a sparse step the event list itself, which the sparse sum needs
anyway) and takes the sparse sum only below ``nnz*``; when activity is above it, the count is
refreshed every 8th step only, so a dense network pays almost nothing for the check (near the
crossover a count every step cost up to 5 %). A Dense projection from a spike input reads the
input's raw integer levels for counting and the event list, and converts them to float only for a
dense sum. The run also times its own calls: a sparse step slower than the fastest dense step seen
lowers the threshold below that event count (a run that chose sparse from the start times one
dense step after ``PROBE`` sparse ones, so the comparison always
has a dense time from this run). Only on CPU (on GPUs the count and the timing would synchronise).

With the layer-major schedule (layer_major.py) a call covers a chunk of steps: the rows are
steps x batch, the calibration is per row count, and "step" above means one such call.
"""
from __future__ import annotations

import time

import torch

from .emission import Emission

MODES = ("auto", "off", "on")
MIN_WORK = 2 ** 16          # batch * n_in * n_out below which the dense GEMM is never worth replacing
RECHECK = 8                 # steps between activity counts while above the threshold
PROBE = 4                   # sparse steps after which one dense step is timed, if none was yet
MARGIN = 0.85               # take the sparse sum only where predicted at most 0.85 of the dense time:
                            # calibration is noisy, and a wrong "sparse" costs more (the measured
                            # events/dense ratio at 10 % input, 0.83-0.92, was predicted as 0.81)
_CALIBRATION: dict[tuple, tuple[float, float, float]] = {}   # key -> (t_dense, a, c) in seconds


def _events(x: torch.Tensor, binary: bool, dtype: torch.dtype | None = None):
    """(indices, offsets, per-sample weights or None) of the nonzero entries of x (B, n); x may be
    raw integer levels (uint8 input spikes: ``nonzero`` runs 1.6x faster on them than on float32),
    the weights are then converted to ``dtype`` (exact: small integers)."""
    if x.shape[0] == 1:
        j = x[0].nonzero().squeeze(1)
        psw = None if binary else x[0, j]
        offsets = torch.zeros(1, dtype=torch.long, device=x.device)
    else:
        b, j = x.nonzero().unbind(1)
        counts = torch.bincount(b, minlength=x.shape[0])
        offsets = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        torch.cumsum(counts[:-1], 0, out=offsets[1:])
        psw = None if binary else x[b, j]
    if psw is not None and dtype is not None and psw.dtype != dtype:
        psw = psw.to(dtype)
    return j, offsets, psw


def sparse_sum(x: torch.Tensor, w_rows: torch.Tensor, binary: bool) -> torch.Tensor:
    """x @ w_rows over the nonzero entries of x only (w_rows: (n_in, n_out))."""
    j, offsets, psw = _events(x, binary, w_rows.dtype)
    return _bag(j, w_rows, offsets, psw)


def _bag(j, w_rows, offsets, psw):
    # the aten op itself (mode 0 = sum): F.embedding_bag's argument checks cost more than the sum at batch 1
    return torch.embedding_bag(w_rows, j, offsets, False, 0, False, psw, False)[0]


def _dense(x, w_rows, out):
    return x @ w_rows if out is None else torch.matmul(x, w_rows, out=out)


def _best(f, reps: int) -> float:
    f()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def calibrate(batch: int, w_rows: torch.Tensor, binary: bool) -> tuple[float, float, float]:
    """(t_dense, a, c): dense GEMM time and the sparse cost line a + c * nnz for this shape."""
    n_in, n_out = w_rows.shape
    key = (batch, n_in, n_out, w_rows.dtype, w_rows.device.type, torch.get_num_threads(), binary)
    got = _CALIBRATION.get(key)
    if got is not None:
        return got
    g = torch.Generator(device="cpu").manual_seed(0)
    reps = 3 if batch * n_in * n_out > 2 ** 24 else 7
    def sample(rate):
        return (torch.rand((batch, n_in), generator=g) < rate).to(w_rows.dtype).to(w_rows.device)
    x = sample(0.1)
    t_dense = _best(lambda: x @ w_rows, reps)
    pts = []
    for rate in (0.01, 0.1):
        xs = sample(rate)
        pts.append((float(xs.count_nonzero()), _best(lambda: sparse_sum(xs, w_rows, binary), reps)))
    (n1, t1), (n2, t2) = pts
    c = max((t2 - t1) / max(n2 - n1, 1.0), 1e-12)
    got = (t_dense, t1 - c * n1, c)
    _CALIBRATION[key] = got
    return got


class EventDriven:
    """Per-projection chooser between the dense GEMM and the event-driven row sum."""

    def __init__(self, mode: str, binary: bool, n_in: int, n_out: int, device: torch.device):
        if mode not in MODES:
            raise ValueError(f"event_driven must be one of {MODES}, got {mode!r}")
        self.mode = mode if device.type == "cpu" or mode == "on" else "off"
        self.binary = binary
        self.n_in, self.n_out = n_in, n_out
        self.threshold: dict[int, float] = {}    # batch -> largest event count where sparse wins
        self.t_dense: dict[int, float] = {}      # batch -> fastest dense call measured in this run
        self.wait = 0
        self.was_sparse: dict[int, bool] = {}    # batch -> the last counted call took the sparse sum
        self.last_nnz = None                     # events counted in the last call (None: not counted)
        self.sparse_steps = 0                    # steps that took the event-driven sum (reported)
        self.dense_steps = 0

    def _limit(self, batch: int, w_rows: torch.Tensor) -> float:
        lim = self.threshold.get(batch)
        if lim is None:
            if batch * self.n_in * self.n_out < MIN_WORK:
                lim = -1.0
            else:
                t_dense, a, c = calibrate(batch, w_rows, self.binary)
                lim = (MARGIN * t_dense - a) / c
            self.threshold[batch] = lim
        return lim

    def apply(self, x: torch.Tensor | Emission, w_rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x @ w_rows, dense or event-driven; ``out``: a buffer the dense GEMM may write into.

        ``x`` may be an :class:`Emission` whose ``base`` holds the rows in another dtype (the raw
        integer levels of spike input): counting and the event list read them as they are, and
        only a dense sum converts them (``Emission.as_dtype``)."""
        em = x if isinstance(x, Emission) else None
        if em is not None:
            x = em.base
        self.last_nnz = None
        if self.mode == "on":
            self.sparse_steps += 1
            j, offsets, psw = _events(x, self.binary, w_rows.dtype)
            self.last_nnz = int(j.shape[0])
            return _bag(j, w_rows, offsets, psw)
        if self.mode == "auto":
            batch = x.shape[0]
            lim = self._limit(batch, w_rows)
            if lim > 0:
                if self.wait > 0:
                    self.wait -= 1
                else:
                    t0 = time.perf_counter()
                    events = batch == 1 or self.was_sparse.get(batch, False)
                    if events:              # the event list is the count: no separate counting pass
                        j, offsets, psw = _events(x, self.binary, w_rows.dtype)
                        nnz = int(j.shape[0])
                    else:
                        nnz = int(x.count_nonzero())
                    self.last_nnz = nnz
                    probe = batch not in self.t_dense and self.sparse_steps >= PROBE
                    self.was_sparse[batch] = sparse = nnz <= lim and not probe
                    if sparse:
                        self.sparse_steps += 1
                        res = _bag(j, w_rows, offsets, psw) if events else sparse_sum(x, w_rows, self.binary)
                        self._feedback(batch, nnz, time.perf_counter() - t0)
                        return res
                    if nnz > lim:               # dense by count: activity drifts slowly, so the next
                        self.wait = RECHECK - 1     # RECHECK - 1 calls skip the counting pass
            t0 = time.perf_counter()
            res = _dense(x if em is None else em.as_dtype(w_rows.dtype), w_rows, out)
            t = time.perf_counter() - t0
            self.t_dense[batch] = min(self.t_dense.get(batch, t), t)
            self.dense_steps += 1
            return res
        self.dense_steps += 1
        return _dense(x if em is None else em.as_dtype(w_rows.dtype), w_rows, out)

    def _feedback(self, batch: int, nnz: int, t: float) -> None:
        """Measured on this run: a sparse step slower than the fastest dense one seen lowers the
        threshold below its event count, so the choice corrects itself (never raised again)."""
        t_dense = self.t_dense.get(batch)
        if t_dense is not None and t > t_dense:
            self.threshold[batch] = min(self.threshold[batch], 0.9 * nnz)
