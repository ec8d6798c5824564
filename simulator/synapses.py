"""Projection kernels: the current a projection delivers, float or exact integer.

For quantised networks every projection computes ``acc = sum_j w[i, j] * p[j]`` exactly and then
``a = acc << weight_exp`` (floor ``>>`` for negative exponents), as Lava's ``PyDenseModelBitAcc``.
The arithmetic path is chosen once per projection from a static bound on every partial sum,
``B = max_i sum_j |w[i, j]| * max|p|`` (the row L1 norm bound; it implies the brief's
fan_in * max|w| * max|p| bound and is tighter):

    float32   B < 2^24   float GEMM/conv; every product and partial sum is an exactly representable
                         integer whatever the summation order, so the result is exact
    float64   B < 2^53   same with doubles
    int64     CPU only   torch integer matmul / conv2d
    chunked   any device float64 pieces: fan-in split into chunks and weights into base-2^L limbs so
                         each piece's bound is < 2^53, pieces summed in int64

A Conv2d on a datapath with ``conv_acc_bits = b > 0`` then wraps the exact sum modulo 2^b into
``[-2^(b-1), 2^(b-1))`` before the weight_exp shift, as Lava's ``PyConvModelFixed`` does
(``utils.signed_clamp(acc, bits=24)``; docs/fixed_point.md); ``last_wrap`` counts the wrapped sums
of the last call (skipped when the static bound proves no sum can wrap).

TF32 is switched off while simulating (see :func:`exact_float_context`), otherwise float32 on
Ampere+ GPUs would round operands to 10-bit mantissas.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..ir.nodes import Conv2d, Dense, Identity, Projection, expand_channel
from .emission import Emission
from .event_driven import EventDriven

PATHS = ("auto", "float32", "float64", "int64", "chunked")
_EXACT_LIMIT = {"float32": 2 ** 24, "float64": 2 ** 53}
_DTYPE = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}
_NP_DTYPE = {"float32": np.float32, "float64": np.float64, "int64": np.int64}   # exact: |w| below the path's bound


@contextlib.contextmanager
def exact_float_context():
    """Disable TF32 in cuBLAS and cuDNN for the duration (restored afterwards)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class ProjectionKernel:
    """Computes one projection's contribution to its target, (batch, n_src) -> (batch, n_dst).

    The last (emission, result) pair is memoised: a C1 analog input re-emits the same
    :class:`Emission` object every step, so its first-layer current is computed once.
    """

    def __init__(self, proj: Projection, src_shape: tuple[int, ...], dst_shape: tuple[int, ...],
                 src_max_abs: float, quantized: bool, device, path: str = "auto", acc_bits: int = 0,
                 float_dtype: torch.dtype = torch.float64):
        if path not in PATHS:
            raise ValueError(f"projection {proj.name!r}: arithmetic path {path!r} is not one of {PATHS}")
        self.proj = proj
        self.src_shape = tuple(src_shape)
        self.dst_shape = tuple(dst_shape)
        self.quantized = quantized
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.weight_exp = int(proj.weight_exp)
        w = np.asarray(proj.weight, dtype=np.float64)
        if isinstance(proj, Identity):
            w = expand_channel(w, self.dst_shape).reshape(-1)
        elif not isinstance(proj, (Dense, Conv2d)):
            raise NotImplementedError(f"projection {proj.name!r}: the simulator has no kernel for "
                                      f"{type(proj).__name__} connectivity")
        self.w_np = w
        self.int_dtype = torch.int64   # set to int32 by the plan when the target's input sum fits
        self.u_shift = None              # set by emit_u: deliver u = a << u_shift as exact float32
        self.events = None               # set by enable_events: event-driven Dense sums (event_driven.py)
        self._last: tuple[Emission | None, torch.Tensor | None] = (None, None)
        self.acc_bits = 0                # > 0: this kernel wraps its sums (set below when they can wrap)
        self.last_wrap = None            # wrapped sums of the last call (int64 scalar tensor)
        self.float_dtype = float_dtype   # float networks: the simulation's float dtype
        if not quantized:
            self.path = "float32" if float_dtype == torch.float32 else "float64"
            self.bound = None
            self._w = torch.as_tensor(self._layout(w), dtype=float_dtype, device=self.device)
            return
        if np.any(np.abs(w) >= 2 ** 62):
            raise ValueError(f"projection {proj.name!r}: weight magnitude {np.abs(w).max():.0f} exceeds 2^62")
        self.w_int = w.astype(np.int64)
        self.p_max = float(math.ceil(src_max_abs))
        self.bound = self._partial_sum_bound(src_max_abs)
        if self.bound >= 2 ** 62:
            raise ValueError(f"projection {proj.name!r}: accumulator bound {self.bound} reaches 2^62; "
                             "the exact integer simulator needs it below 2^62")
        self.path = self._choose_path(path)
        if acc_bits and isinstance(proj, Conv2d) and self.bound >= 2 ** (acc_bits - 1):
            self.acc_bits = int(acc_bits)
        if self.path in _DTYPE:             # convert first, then lay out (a narrower copy to transpose)
            w = torch.as_tensor(self.w_int.astype(_NP_DTYPE[self.path]))
            self._w = (w.T.contiguous() if isinstance(proj, Dense) else w).to(self.device)
        else:
            self._pieces = self._make_pieces(src_max_abs)

    # ------------------------------------------------------------------ static analysis
    def _partial_sum_bound(self, src_max_abs: float) -> int:
        """max over outputs of sum |w| times max|payload|: bounds every partial sum and |acc|."""
        a = np.abs(self.w_int)
        self.w_abs_max = int(a.max(initial=0))
        if isinstance(self.proj, Dense):
            row = a.sum(axis=1).max(initial=0)
        elif isinstance(self.proj, Conv2d):
            row = a.reshape(a.shape[0], -1).sum(axis=1).max(initial=0)
        else:
            row = a.max(initial=0)
        return int(row) * int(math.ceil(src_max_abs))

    def _choose_path(self, path: str) -> str:
        cuda = self.device.type == "cuda"
        if path == "auto":
            if self.bound < _EXACT_LIMIT["float32"]:
                return "float32"
            if self.bound < _EXACT_LIMIT["float64"]:
                return "float64"
            return "chunked" if cuda else "int64"
        if path == "int64" and cuda:
            raise ValueError(f"projection {self.proj.name!r}: the int64 path is CPU-only (torch has no CUDA "
                             "integer matmul); use 'chunked' or 'auto'")
        return path

    def _layout(self, w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w.T) if isinstance(self.proj, Dense) else w

    def use_int32_if(self, sum_bound: int) -> None:
        """Compute in int32 when this projection's acc, its shifted value and the target's sum fit."""
        if max(self.bound, self.acc_bound, sum_bound) < 2 ** 31 and not self.acc_bits:
            self.int_dtype = torch.int32

    def enable_events(self, mode: str, binary: bool) -> None:
        """Let this Dense projection sum only the active sources' weight rows when that is faster
        (exact float paths only; ``event_driven.py``)."""
        if mode == "off" or not self.quantized or not isinstance(self.proj, Dense) \
                or self.path not in ("float32", "float64"):
            return
        n_out, n_in = self.w_np.shape
        self.events = EventDriven(mode, binary, n_in, n_out, self.device)

    def emit_u(self, act_shift: int) -> None:
        """Deliver the target's input current u = a * 2^act_shift as float32 instead of integer a.

        Only on the float32 path without a Conv wrap, for a target whose state is float32
        (``neurons._float_bound_ok``). Scaling by a power of two is exact in binary floating point,
        so weights pre-multiplied by 2^(weight_exp + act_shift) (weight_exp >= 0) give partial sums
        that are the integer ones times that power: exact under the same bound B < 2^24. A negative
        weight_exp keeps its floor shift: floor(acc * 2^weight_exp), then * 2^act_shift.
        """
        if self.path != "float32" or self.acc_bits or act_shift < 0:
            raise ValueError(f"projection {self.proj.name!r}: float32 current needs the float32 path without wrap")
        self.u_shift = int(act_shift)
        s = self.weight_exp + act_shift if self.weight_exp >= 0 else act_shift
        if self.weight_exp >= 0 and s:      # in place: after this only the u path reads the weights
            self._w.mul_(2.0 ** s)
        self._wu = self._w
        self.u_bound = float(_shift_int(self.acc_bound, act_shift))        # static bound on |u|
        # per counted event, |u| grows by at most max|w| * max|payload| * 2^(weight_exp + act_shift)
        self.u_per_event = (float(self.w_abs_max) * self.p_max * 2.0 ** s
                            if self.weight_exp >= 0 else None)
        self.last_bound = self.u_bound

    @property
    def acc_bound(self) -> int:
        """Bound on |a| after the weight_exp shift (floor shift keeps |a| <= ceil)."""
        e = self.weight_exp
        b = min(self.bound, 2 ** (self.acc_bits - 1)) if self.acc_bits else self.bound
        return b << e if e >= 0 else -((-b) >> -e)

    # ------------------------------------------------------------------ compute
    def _apply(self, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        p = self.proj
        if isinstance(p, Dense):
            if self.events is not None:
                return self.events.apply(x, w, out)
            return x @ w if out is None else torch.matmul(x, w, out=out)
        if isinstance(p, Conv2d):
            x4 = x.reshape((x.shape[0],) + self.src_shape)
            y = F.conv2d(x4, w, None, tuple(p.stride), tuple(p.padding), tuple(p.dilation), int(p.groups))
            return y.reshape(x.shape[0], -1)
        return x * w

    def __call__(self, em: Emission, out: torch.Tensor | None = None) -> torch.Tensor:
        """The projection's current for one emission; ``out``: a float32 buffer a Dense float32 sum
        delivering u may be written into (reused between chunks, layer_major.py), or None."""
        if em is self._last[0]:
            return self._last[1]
        res = self._compute(em, out)
        self._last = (em, res)
        return res

    def _compute(self, em: Emission, out: torch.Tensor | None = None) -> torch.Tensor:
        if not self.quantized:
            return self._apply(em.as_dtype(self.float_dtype), self._w)
        if self.u_shift is not None:
            dst = out if self.weight_exp >= 0 else None
            if self.events is not None:      # (the events path reads raw integer input as it is)
                u = self.events.apply(em, self._wu, dst)
            else:
                u = self._apply(em.as_dtype(torch.float32), self._wu, dst)
            ev = self.events
            if ev is not None and ev.last_nnz is not None and self.u_per_event is not None:
                self.last_bound = min(self.u_bound, ev.last_nnz * self.u_per_event)
            else:
                self.last_bound = self.u_bound
            if self.weight_exp < 0:      # floor shift of the exact sum, then the (exact) act_shift
                u.mul_(2.0 ** self.weight_exp).floor_()        # (in place: u is this call's own GEMM output)
                if self.u_shift:
                    u.mul_(2.0 ** self.u_shift)
            return u
        if self.path in _DTYPE:
            acc = self._apply(em.as_dtype(_DTYPE[self.path]), self._w)
        else:
            acc = self._compute_pieces(em.as_dtype(torch.float64))
        if self.acc_bits:
            acc = acc.to(torch.int64)
            half = 2 ** (self.acc_bits - 1)
            wrapped = ((acc + half) & (2 * half - 1)) - half    # Lava signed_clamp: (x + h) % 2h - h
            self.last_wrap_rows = (wrapped != acc).sum(dim=1)   # per sample (batch row)
            self.last_wrap = self.last_wrap_rows.sum()
            acc = wrapped
        acc = acc.to(self.int_dtype)
        e = self.weight_exp
        if e > 0:
            return acc << e
        if e < 0:
            return acc >> -e
        return acc

    # ------------------------------------------------------------------ chunked exact path
    def _make_pieces(self, src_max_abs: float) -> list[tuple[torch.Tensor | None, torch.Tensor, int]]:
        """Split fan-in (columns / input channels) and weights (base-2^L limbs) into exact pieces."""
        p_max = max(1, int(math.ceil(src_max_abs)))
        if p_max >= 2 ** 51:
            raise ValueError(f"projection {self.proj.name!r}: payload bound {p_max} too large for exact float64 pieces")
        w = self.w_int
        unit = int(np.prod(w.shape[2:])) if isinstance(self.proj, Conv2d) else 1
        w_bits = int(np.abs(w).max(initial=0)).bit_length() or 1
        limb_bits = min(w_bits, int(math.floor(math.log2((2 ** 53 - 1) / (unit * p_max)))))
        if limb_bits < 1:
            raise ValueError(f"projection {self.proj.name!r}: kernel of {unit} taps with payload {p_max} cannot be split exactly")
        per_chunk = max(1, (2 ** 53 - 1) // (unit * ((1 << limb_bits) - 1) * p_max))
        sign, mag = np.sign(w), np.abs(w)
        limbs = []
        shift = 0
        while shift == 0 or (mag >> shift).any():
            limbs.append((sign * ((mag >> shift) & ((1 << limb_bits) - 1)), shift))
            shift += limb_bits
        pieces = []
        if isinstance(self.proj, Dense):
            n_in = w.shape[1]
            for a in range(0, n_in, per_chunk):
                idx = torch.arange(a, min(n_in, a + per_chunk), device=self.device)
                for limb, s in limbs:
                    wt = torch.as_tensor(np.ascontiguousarray(limb[:, a:a + per_chunk].T), dtype=torch.float64, device=self.device)
                    pieces.append((idx, wt, s))
        elif isinstance(self.proj, Conv2d):
            groups, cpg = int(self.proj.groups), w.shape[1]
            for a in range(0, cpg, per_chunk):
                b = min(cpg, a + per_chunk)
                idx = torch.as_tensor(np.concatenate([g * cpg + np.arange(a, b) for g in range(groups)]), device=self.device)
                for limb, s in limbs:
                    wt = torch.as_tensor(np.ascontiguousarray(limb[:, a:b]), dtype=torch.float64, device=self.device)
                    pieces.append((idx, wt, s))
        else:
            for limb, s in limbs:
                pieces.append((None, torch.as_tensor(limb, dtype=torch.float64, device=self.device), s))
        return pieces

    def _compute_pieces(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        conv = isinstance(self.proj, Conv2d)
        for idx, wt, s in self._pieces:
            if idx is None:
                xs = x
            elif conv:
                xs = x.reshape((x.shape[0],) + self.src_shape)[:, idx].reshape(x.shape[0], -1)
            else:
                xs = x[:, idx]
            part = self._apply_piece(xs, wt, idx).to(torch.int64)
            if s:
                part = part << s
            total = part if total is None else total + part
        return total

    def _apply_piece(self, xs: torch.Tensor, wt: torch.Tensor, idx) -> torch.Tensor:
        p = self.proj
        if isinstance(p, Conv2d):
            x4 = xs.reshape((xs.shape[0], len(idx)) + self.src_shape[1:])
            y = F.conv2d(x4, wt, None, tuple(p.stride), tuple(p.padding), tuple(p.dilation), int(p.groups))
            return y.reshape(xs.shape[0], -1)
        if isinstance(p, Dense):
            return xs @ wt
        return xs * wt


def _shift_int(x: int, s: int) -> int:
    return x << s if s >= 0 else x >> -s
