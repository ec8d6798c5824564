"""Per-step kernels of the typed IR operators and the multi-threshold neuron (float simulation).

Each kernel holds the operator's state across steps explicitly (running sums, t) and follows the
equation in the operator's docstring (ir/operators.py). The matrix-product EC and the EC update
use only ``+ - * / @``, so the closed-form tests can run them on exact rationals (numpy object
arrays of ``fractions.Fraction``) as well as on torch tensors on any device.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..ir import operators as O
from ..ir import operators_c2 as C2


# ---------------------------------------------------------------------- expectation compensation
class ECState:
    """``O(t) = t F(S(t)/t) - (t-1) F(S(t-1)/(t-1))`` with state S, P = (t-1) F(S(t-1)/(t-1)), t."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn
        self.S: Any = None
        self.P: Any = None
        self.t = 0

    def step(self, x):
        self.t += 1
        self.S = x if self.S is None else self.S + x
        cur = self.fn(self.S / self.t) * self.t
        out = cur if self.P is None else cur - self.P
        self.P = cur
        return out


class MatMulECState:
    """Matrix-product EC: S_K(t) = S_K(t-1) + A B + A S_B(t-1) + S_A(t-1) B;
    O(t) = scale * (S_K(t)/t - S_K(t-1)/(t-1)); state S_A, S_B, S_K, t."""

    def __init__(self, scale=1.0):
        self.scale = scale
        self.S_A = self.S_B = self.S_K = None
        self.t = 0
        self.prev_mean = None  # S_K(t-1) / (t-1)

    def step(self, a, b):
        self.t += 1
        k = a @ b
        if self.S_K is None:
            self.S_K, self.S_A, self.S_B = k, a, b
        else:
            self.S_K = self.S_K + k + a @ self.S_B + self.S_A @ b
            self.S_A = self.S_A + a
            self.S_B = self.S_B + b
        mean = self.S_K / self.t
        out = mean if self.prev_mean is None else mean - self.prev_mean
        self.prev_mean = mean
        return out * self.scale


def module_function(op: O.TypedOperator, device, dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ANN module F that an EC (C1) or C2 operator wraps, acting on (batch, *shape) tensors: the
    function is the same whatever the coding around it."""
    if isinstance(op, (O.LayerNormEC, C2.LayerNormC2)):
        w = torch.as_tensor(op.weight, device=device, dtype=dtype)
        b = torch.as_tensor(op.bias, device=device, dtype=dtype)
        return lambda x: F.layer_norm(x, (x.shape[-1],), w, b, op.eps)
    if isinstance(op, (O.GELUEC, C2.GELUC2)):
        return lambda x: F.gelu(x, approximate=op.approximate)
    if isinstance(op, (O.SoftmaxEC, C2.SoftmaxC2)):
        axis = op.axis % len(op.shape) + 1
        return lambda x: torch.softmax(x * op.scale, dim=axis)
    raise TypeError(f"operator {op.name!r}: {type(op).__name__} wraps no elementwise/LayerNorm/softmax module")


class OperatorKernel:
    """Runs one typed operator on a batch, step by step."""

    def __init__(self, op: O.TypedOperator, batch: int, device, dtype):
        self.op = op
        self.batch = batch
        self.dtype = dtype
        self.device = device
        if isinstance(op, O.ECOperator):
            self.state = ECState(module_function(op, device, dtype))
        elif isinstance(op, O.MatMulEC):
            self.state = MatMulECState(op.scale)
        else:
            self.state = None
        if isinstance(op, O.Rearrange):
            self.index = torch.as_tensor(op.index, device=device).reshape(-1)
        if isinstance(op, O.Concat) and op.prefix is not None:
            p = torch.as_tensor(op.prefix, device=device, dtype=dtype)
            self.prefix = p.unsqueeze(0).expand((batch,) + tuple(p.shape))
        else:
            self.prefix = None

    def step(self, ins: list[torch.Tensor]) -> torch.Tensor:
        op = self.op
        if isinstance(op, O.ECOperator):
            return self.state.step(ins[0])
        if isinstance(op, O.MatMulEC):
            return self.state.step(ins[0], ins[1])
        if isinstance(op, O.Rearrange):
            return ins[0].reshape(self.batch, -1)[:, self.index].reshape((self.batch,) + tuple(op.shape))
        if isinstance(op, O.Concat):
            parts = ([self.prefix] if self.prefix is not None else []) + list(ins)
            return torch.cat(parts, dim=op.axis % len(op.shape) + 1)
        if isinstance(op, O.Mean):
            return ins[0].mean(dim=tuple(a + 1 for a in op.axes))
        raise TypeError(f"operator {op.name!r}: no simulation kernel for {type(op).__name__}")


# ---------------------------------------------------------------------- multi-threshold neuron
def mt_fire(m: torch.Tensor, theta1: torch.Tensor, theta2: torch.Tensor, levels: int, neg_compare: str = "<"
            ) -> torch.Tensor:
    """Signed level s in {0, +-1, +-2, ..., +-2^(levels-1)} of the MT neuron for membrane ``m``
    (the largest level whose threshold is crossed; methods.md section 5).

    The level is guessed with log2 and then settled with the defining comparisons (one step down,
    one step up), so the result equals the level-by-level scan exactly (tested on a grid)."""
    top = float(2 ** (levels - 1))
    pos = _largest_level(m, theta1, top, lambda a, th: a >= th)
    neg = _largest_level(-m, theta2, top, (lambda a, th: a > th) if neg_compare == "<" else (lambda a, th: a >= th))
    return torch.where(pos > 0, pos, -neg)


def _largest_level(a: torch.Tensor, theta: torch.Tensor, top: float, crosses) -> torch.Tensor:
    """Largest mag in {1, 2, 4, ..., top} with ``crosses(a, (mag - 1/2) theta)``, else 0."""
    ratio = torch.clamp(a / theta + 0.5, min=1.0)
    mag = torch.clamp(torch.exp2(torch.floor(torch.log2(ratio))), max=top)
    for _ in range(2):  # settle rounding of the guess with the exact comparisons
        mag = torch.where(~crosses(a, (mag - 0.5) * theta) & (mag > 1), mag / 2, mag)
        up = torch.clamp(mag * 2, max=top)
        mag = torch.where(crosses(a, (up - 0.5) * theta), up, mag)
    return torch.where(crosses(a, 0.5 * theta), mag, torch.zeros_like(mag))


class MTKernel:
    """State v of a MultiThreshold population; ``step(I)`` returns the signed level per neuron."""

    def __init__(self, model, shape: tuple[int, ...], batch: int, device, dtype):
        from ..ir.nodes import expand_channel

        def arr(v):
            return torch.as_tensor(expand_channel(v, shape), device=device, dtype=dtype)
        self.model = model
        self.theta1, self.theta2 = arr(model.theta1), arr(model.theta2)
        self.v = arr(model.v_init).unsqueeze(0).repeat((batch,) + (1,) * len(shape))

    def step(self, current: torch.Tensor) -> torch.Tensor:
        m = self.v + current
        s = mt_fire(m, self.theta1, self.theta2, int(self.model.levels), self.model.neg_compare)
        self.v = m - torch.where(s > 0, s * self.theta1, s * self.theta2)
        return s
