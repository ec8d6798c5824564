"""Integer per-step kernels of a quantised Transformer network (docs/fixed_point.md, "Transformer
operator networks"): the multi-threshold neuron, relays, readouts, projections and typed operators.

Every value is an int64 tensor; every rule is integer arithmetic (products, sums, floor shifts,
round-half-up division, exact integer square root, table look-ups), so results are identical on
every device and equal the plain integer reference ``simulator/reference_operators.py``. An
operator's fixed-point constants live in ``op.params`` (written by
``compiler.quantize_operators``; keys in docs/ir.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import operators as O
from ..ir.nodes import Conv2d, Dense, Identity, expand_channel

_EXACT_F64 = 2 ** 53


# ---------------------------------------------------------------------- integer helpers
def rdiv(a: torch.Tensor, b) -> torch.Tensor:
    """Round-half-up integer division for b > 0: ``floor((a + floor(b / 2)) / b)``."""
    return torch.div(a + b // 2, b, rounding_mode="floor")


def rshift(a: torch.Tensor, sh: int) -> torch.Tensor:
    """``rdiv(a, 2^sh)`` for sh > 0, ``a << -sh`` otherwise (round half up, then arithmetic shift)."""
    if sh > 0:
        return (a + (1 << (sh - 1))) >> sh
    return a << (-sh) if sh < 0 else a


def floor_shift(a: torch.Tensor, e: int) -> torch.Tensor:
    """Projection exponent: ``a << e`` for e >= 0, ``a >> -e`` (floor) for e < 0."""
    return a << e if e >= 0 else a >> (-e)


def isqrt(q: torch.Tensor) -> torch.Tensor:
    """Exact floor square root of non-negative int64 values below 2^62 (float guess, integer fix-up)."""
    r = torch.sqrt(q.to(torch.float64)).floor().to(torch.int64)
    for _ in range(2):
        r = torch.where(r * r > q, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= q, r + 1, r)
    return r


def saturate(x: torch.Tensor, bits: int, counter: list) -> torch.Tensor:
    """Clip to ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` and add the clipped count to ``counter[0]``."""
    top = (1 << (bits - 1)) - 1
    out = x.clamp(-top, top)
    counter[0] += int((out != x).sum())
    return out


def exact_matmul(a: torch.Tensor, b: torch.Tensor, bound: int) -> torch.Tensor:
    """``a @ b`` of int64 tensors, exactly: a float64 GEMM when ``bound`` (a bound on every partial
    sum) is below 2^53, else int64 (CPU) or an elementwise product summed in int64 (any device)."""
    if bound < _EXACT_F64:
        return torch.matmul(a.to(torch.float64), b.to(torch.float64)).to(torch.int64)
    if a.device.type == "cpu":
        return torch.matmul(a, b)
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(dim=-2)


# ---------------------------------------------------------------------- projections
class FixedProjection:
    """``acc = sum_j w[i, j] * p[j]`` exactly (Conv2d sums wrapped to ``conv_acc_bits``), then
    ``a = acc << weight_exp`` (floor ``>>`` for a negative exponent)."""

    def __init__(self, proj, src_max: int, dst_shape: tuple[int, ...], dp, device):
        self.proj = proj
        self.dst_shape = tuple(dst_shape)
        self.e = int(proj.weight_exp)
        w = np.asarray(proj.weight, dtype=np.int64)
        self.w = torch.as_tensor(w, device=device)
        if isinstance(proj, (O.TokenDense, Dense)):
            l1 = int(np.abs(w).sum(axis=1).max(initial=0))
        elif isinstance(proj, Conv2d):
            l1 = int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0))
        else:
            l1 = int(np.abs(w).max(initial=0))
        self.bound = l1 * int(src_max)
        self.wT = self.w.T.contiguous() if isinstance(proj, (O.TokenDense, Dense)) else None
        self.conv_bits = int(dp.conv_acc_bits) if isinstance(proj, Conv2d) else 0
        self.wrap_events = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p, batch = self.proj, x.shape[0]
        if isinstance(p, O.TokenDense):
            acc = exact_matmul(x, self.wT, self.bound)
        elif isinstance(p, Dense):
            acc = exact_matmul(x.reshape(batch, -1), self.wT, self.bound).reshape((batch,) + self.dst_shape)
        elif isinstance(p, Conv2d):
            if self.bound >= _EXACT_F64:
                raise ValueError(f"projection {p.name!r}: conv sum bound {self.bound} is not exact in float64")
            acc = F.conv2d(x.to(torch.float64), self.w.to(torch.float64), None, p.stride, p.padding, p.dilation,
                           p.groups).to(torch.int64)
            b = self.conv_bits
            if b and self.bound >= (1 << (b - 1)):
                wrapped = torch.remainder(acc + (1 << (b - 1)), 1 << b) - (1 << (b - 1))
                self.wrap_events += int((wrapped != acc).sum())
                acc = wrapped
        elif isinstance(p, Identity):
            acc = x * torch.as_tensor(expand_channel(np.asarray(p.weight, dtype=np.int64), self.dst_shape),
                                      device=x.device)
        else:
            raise TypeError(f"projection {p.name!r}: {type(p).__name__} has no fixed-point kernel")
        return floor_shift(acc, self.e)


# ---------------------------------------------------------------------- neurons
class FixedMT:
    """Quantised multi-threshold neuron (integers in state units), per step::

        m = sat_state(v + I)
        s = +2^p for the largest p < n with 2m >= (2^(p+1) - 1) theta1     (m >= (2^p - 1/2) theta1)
            -2^p for the largest p < n with -2m > (2^(p+1) - 1) theta2     ('<'; '<=' uses >=)
            0 otherwise
        e = s * theta1 (s > 0),  s * theta2 (s < 0)      one graded event carrying e (the payload)
        v = m - e
    """

    def __init__(self, pop, batch: int, state_bits: int, device):
        m, shape = pop.neuron, tuple(pop.shape)

        def arr(v):
            return torch.as_tensor(expand_channel(np.asarray(v, dtype=np.int64), shape), device=device)
        self.th1, self.th2 = arr(m.theta1), arr(m.theta2)
        self.levels, self.strict = int(m.levels), m.neg_compare == "<"
        self.v = arr(m.v_init).unsqueeze(0).repeat((batch,) + (1,) * len(shape))
        self.bits = state_bits
        self.sat = [0]

    def step(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = saturate(self.v + current, self.bits, self.sat)
        m2 = 2 * m
        s = torch.zeros_like(m)
        for p in range(self.levels):     # ascending: the largest crossed level wins
            k = (1 << (p + 1)) - 1
            s = torch.where(m2 >= k * self.th1, 1 << p, s)
        neg = torch.zeros_like(m)
        for p in range(self.levels):
            k = (1 << (p + 1)) - 1
            crossed = (-m2 > k * self.th2) if self.strict else (-m2 >= k * self.th2)
            neg = torch.where(crossed, 1 << p, neg)
        s = torch.where(s > 0, s, -neg)
        e = torch.where(s > 0, s * self.th1, s * self.th2)
        self.v = m - e
        return s, e


# ---------------------------------------------------------------------- operators
class FixedOperator:
    """One typed operator on int64 tensors (rules in docs/fixed_point.md); EC state S, P, t."""

    def __init__(self, op: O.TypedOperator, batch: int, out_bits: int, device):
        self.op, self.batch, self.device = op, batch, device
        pr = op.params
        self.pr = pr
        self.out_bits = out_bits
        self.sat = [0]
        self.t = 0
        self.S = self.P = self.SA = self.SB = None

        def t64(v):
            return torch.as_tensor(np.asarray(v, dtype=np.int64), device=device)
        if isinstance(op, O.Rearrange):
            self.index = torch.as_tensor(np.asarray(op.index, dtype=np.int64), device=device).reshape(-1)
        if isinstance(op, O.Concat):
            self.prefix = None if op.prefix is None else t64(op.prefix).unsqueeze(0).expand((batch,) + np.shape(op.prefix))
        self.fn = getattr(op, "fn", None)   # the function F of an EC (or C2) operator
        if self.fn in ("gelu", "softmax"):
            self.lut = t64(pr["lut"])
        if self.fn == "layernorm":
            self.gamma, self.beta = t64(pr["gamma_q"]), t64(pr["beta_q"])
        if isinstance(op, O.MatMulEC):
            self.bound = int(pr["sk_bound_per_t2"])

    def step(self, ins: list[torch.Tensor]) -> torch.Tensor:
        op, pr = self.op, self.pr
        if isinstance(op, O.Rearrange):
            return ins[0].reshape(self.batch, -1)[:, self.index].reshape((self.batch,) + tuple(op.shape))
        if isinstance(op, O.Concat):
            parts = [rshift(x * int(m), int(sh)) for x, m, sh in zip(ins, pr["in_mult"], pr["in_shift"])]
            parts = ([self.prefix] if self.prefix is not None else []) + parts
            return torch.cat(parts, dim=op.axis % len(op.shape) + 1)
        if isinstance(op, O.Mean):
            return saturate(ins[0].sum(dim=tuple(a + 1 for a in op.axes)), self.out_bits, self.sat)
        self.t += 1
        t = self.t
        if isinstance(op, O.MatMulEC):
            a, b = ins
            self.SA = a if self.SA is None else self.SA + a
            self.SB = b if self.SB is None else self.SB + b
            sk = exact_matmul(self.SA, self.SB, self.bound * t * t)     # S_K(t) = S_A(t) S_B(t)
            m = int(pr["shift"])
            cur = rdiv(sk, t << m) if m >= 0 else rdiv(sk << (-m), t)
        else:
            self.S = ins[0] if self.S is None else self.S + ins[0]
            xq = rdiv(self.S * int(pr["in_mult"]), t << int(pr["in_shift"]))
            top = (1 << (int(pr["in_bits"]) - 1)) - 1
            xq = xq.clamp(-top, top)
            cur = t * self.function(xq)
        out = cur if self.P is None else cur - self.P
        self.P = cur
        return saturate(out, self.out_bits, self.sat)

    def function(self, xq: torch.Tensor) -> torch.Tensor:
        """y = F_int(xq) in output units from the input xq in input-resolution units (the EC form
        passes the input mean, the C2 form the input sum; simulator/transformer_c2_fixed.py)."""
        op, pr = self.op, self.pr
        if self.fn == "gelu":
            half = int(pr["lut_half"])
            idx = xq.clamp(-half, half) + half
            y = self.lut[idx]
            hi = rshift(xq * int(pr["hi_mult"]), int(pr["hi_shift"]))
            return torch.where(xq > half, hi, y)
        if self.fn == "softmax":
            axis = op.axis % len(op.shape) + 1
            d = xq.amax(dim=axis, keepdim=True) - xq
            k = self.lut.shape[0] - 1
            e = self.lut[d.clamp(max=k)]
            total = e.sum(dim=axis, keepdim=True)
            return rdiv(e << int(pr["out_frac"]), total)
        if self.fn == "layernorm":
            c = xq.shape[-1]
            d = c * xq - xq.sum(dim=-1, keepdim=True)
            q = torch.div((d * d).sum(dim=-1, keepdim=True), c, rounding_mode="floor") + int(pr["eps_q"])
            r = isqrt(q)
            n = rdiv(d << int(pr["norm_frac"]), r)
            return rshift(n * self.gamma, int(pr["gamma_shift"])) + self.beta
        raise TypeError(f"operator {op.name!r}: {type(op).__name__} has no fixed-point kernel")
