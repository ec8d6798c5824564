"""Typed operators of MBE Transformers (paper 001, methods.md sections 0 and 3), staged coding C3.

``--method mbe`` builds a ViT from MBE neurons (``ir.MBE`` populations for GELU, 2^f, 1/M and
1/sqrt(M)) and the operators here: the identity-MBE product form for products of two dynamic
tensors, and the exponent/mantissa steps of softmax and LayerNorm, which are integer work on
floating-point numbers (max, floor, frexp, shifts) and not neurons (hardware.md section 7).

In C3 an operator works on the values its inputs forward at the end of their stage (the input
enters once; nothing is averaged over steps). The exponent/mantissa operators take no steps of
their own; an MBE product runs its operands' identity MBE neurons for one stage of T steps.
Simulated by ``simulator/transformer_mbe.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .neurons_mbe import MBE, _branches
from .nodes import ArrayLike
from .operators import TypedOperator, check_axis, check_matmul_shapes, register_operator


@dataclass
class _IdentityPair(TypedOperator):
    """Shared parts of the MBE product operators: one identity MBE per operand (the shared fit,
    alpha scaled to the operand's power-of-two range ``scale_a`` / ``scale_b``)."""

    tau_d: ArrayLike = field(default_factory=lambda: np.ones((2, 1)))
    tau_r: ArrayLike = field(default_factory=lambda: np.ones((2, 1)))
    tau_V: ArrayLike = field(default_factory=lambda: np.ones((2, 1)))
    dt: ArrayLike = field(default_factory=lambda: np.ones((2, 1)))
    w: ArrayLike = field(default_factory=lambda: np.ones((2, 1)))
    alpha: ArrayLike = field(default_factory=lambda: np.ones(2))
    timesteps: int = 16
    scale_a: float = 1.0
    scale_b: float = 1.0
    scale: float = 1.0

    n_inputs: ClassVar[int] = 2
    stage_steps: ClassVar[bool] = True   # runs one stage of T steps (its identity MBE neurons)

    def identity(self, which: str) -> MBE:
        """The identity MBE neuron of operand ``which`` ('a' or 'b'): alpha times the operand scale."""
        s = self.scale_a if which == "a" else self.scale_b
        return MBE(tau_d=self.tau_d, tau_r=self.tau_r, tau_V=self.tau_V, dt=self.dt, w=self.w,
                   alpha=np.asarray(self.alpha, dtype=np.float64) * s, timesteps=self.timesteps, function="identity")

    def validate(self) -> None:
        super().validate()
        where = f"operator {self.name!r} ({type(self).__name__})"
        w = _branches(self.w, "w", where, 2)
        if w.shape[0] != 2:
            raise ValueError(f"{where}: the identity MBE of a product needs 2 branches (signed operands), has {w.shape[0]}")
        self.identity("a").validate(where, (1,))
        for name in ("scale_a", "scale_b"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{where}: {name} {v} must be a finite number > 0 (the operand's range)")
        if not np.isfinite(float(self.scale)):
            raise ValueError(f"{where}: scale {self.scale} must be finite")


@register_operator
@dataclass
class MBEMatMul(_IdentityPair):
    """``scale * A @ B`` by the product form of paper 001 (Eq. 12), operands through identity MBEs::

        A[i,j] ~ sum_p a_p s_A[i,j,p],   B[j,k] ~ sum_q a'_q s_B[j,k,q]    (p, q over branch, basis, step)
        C[i,k] = scale * sum_j sum_pq D_pq s_A[i,j,p] s_B[j,k,q],   D = a (x) a' precomputed, s binary

    which equals ``scale * MBE_Id(A) @ MBE_Id(B)`` exactly (sum of products = product of sums).
    Inputs (A, B) of shapes (..., n, k) and (..., k, m); output (..., n, m). The identity neurons run
    one stage of T steps. Each coinciding spike pair s_A s_B = 1 is one accumulate of D_pq (the
    paper's count): a static-weight synapse fires on one presynaptic spike, not on a pair, so the
    pairing runs beside the neuro cores (``embedded``), with the neurons on neuro cores.
    """

    op: str = "MBEMatMul"

    def validate_inputs(self, shapes) -> None:
        check_matmul_shapes(self, shapes)


@register_operator
@dataclass
class MBEProduct(_IdentityPair):
    """Elementwise ``scale * x1 * x2`` by the product form (Eq. 12)::

        y = scale * sum_pq D_pq s_1[p] s_2[q],   D = a (x) a'   (= scale * MBE_Id(x1) * MBE_Id(x2) exactly)

    x1 has the operator's shape, x2 that shape or one broadcast along an axis (LayerNorm's d*d and
    d*invstd, softmax's e * 1/M with one 1/M per row)."""

    op: str = "MBEProduct"

    def validate_inputs(self, shapes) -> None:
        try:
            out = np.broadcast_shapes(*(tuple(s) for s in shapes))
        except ValueError:
            out = None
        if out != tuple(self.shape) or tuple(shapes[0]) != tuple(self.shape):
            raise ValueError(f"operator {self.name!r}: inputs {[tuple(s) for s in shapes]} do not broadcast to its "
                             f"shape {tuple(self.shape)} (the first must have it)")


@register_operator
@dataclass
class Exp2Split(TypedOperator):
    """Exponent split of softmax's ``e^(scale x)`` into ``2^I * 2^f`` (paper 001, methods.md section 3)::

        y = scale * log2(e) * (x - max_axis(x))        (the row max subtracted first: y <= 0)
        I = floor(y)  (part "int"),   f = y - I in [0, 1)  (part "frac")

    f feeds the MBE neuron of 2^f; I is an integer exponent (a shift). Stateless, one comparison
    tree (the max), one multiply and a floor per element: integer/fixed work on an ``embedded`` core.
    """

    op: str = "Exp2Split"
    axis: int = -1
    scale: float = 1.0
    part: str = "frac"

    def validate(self) -> None:
        super().validate()
        if self.part not in ("int", "frac"):
            raise ValueError(f"operator {self.name!r}: part {self.part!r} must be 'int' or 'frac'")
        check_axis(self)
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"operator {self.name!r}: scale {self.scale} must be > 0")


@register_operator
@dataclass
class MantExp(TypedOperator):
    """Mantissa/exponent normalisation of a sum along ``axis`` (softmax's denominator, LayerNorm's
    variance)::

        v = scale * sum_axis(x) + eps                       (the axis kept with size 1: one per row)
        v = M * 2^E,  M in [0.5, 1)                         (frexp; our mantissa convention)
        even: if E is odd, M <- 2 M, E <- E - 1             (M in [0.5, 2), E even, for 1/sqrt)
        output M (part "mantissa") or E (part "exponent")

    Stateless; a sum, an add and a leading-one detection per row: ``embedded``.
    """

    op: str = "MantExp"
    axis: int = -1
    scale: float = 1.0
    eps: float = 0.0
    even: bool = False
    part: str = "mantissa"

    def validate(self) -> None:
        super().validate()
        if self.part not in ("mantissa", "exponent"):
            raise ValueError(f"operator {self.name!r}: part {self.part!r} must be 'mantissa' or 'exponent'")
        check_axis(self)
        if not (np.isfinite(self.scale) and self.scale > 0 and np.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"operator {self.name!r}: scale {self.scale} must be > 0 and eps {self.eps} >= 0")
        if int(self.shape[self.axis]) != 1:
            raise ValueError(f"operator {self.name!r}: shape {tuple(self.shape)} must have size 1 along axis {self.axis}")

    def validate_inputs(self, shapes) -> None:
        src = list(shapes[0])
        if len(src) != len(self.shape) or src[:self.axis % len(src)] + [1] + src[self.axis % len(src) + 1:] != list(self.shape):
            raise ValueError(f"operator {self.name!r}: input {tuple(src)} reduced along axis {self.axis} is not its "
                             f"shape {tuple(self.shape)}")


@register_operator
@dataclass
class Ldexp(TypedOperator):
    """Exponent shift ``y = x * 2^(k E)`` with an integer ``k E`` (k = ``exponent_scale``: 1 for
    2^I e^f, -1 for the softmax division, -1/2 for LayerNorm's even exponent). Inputs (x, E): x of
    the operator's shape, E that shape or one per row (broadcast). An exponent add in floating
    point, a shift in fixed point: ``embedded``."""

    op: str = "Ldexp"
    exponent_scale: float = 1.0

    n_inputs: ClassVar[int] = 2

    def validate(self) -> None:
        super().validate()
        if self.exponent_scale not in (1.0, -1.0, 0.5, -0.5):
            raise ValueError(f"operator {self.name!r}: exponent_scale {self.exponent_scale} must be +-1 or +-1/2")

    validate_inputs = MBEProduct.validate_inputs


MBE_OPERATOR_TYPES = {c.__name__: c for c in (MBEMatMul, MBEProduct, Exp2Split, MantExp, Ldexp)}

__all__ = ["Exp2Split", "Ldexp", "MBEMatMul", "MBEProduct", "MBE_OPERATOR_TYPES", "MantExp"]
