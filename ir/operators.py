"""Transformer IR nodes: token projections, multi-threshold and relay neurons, typed operators.

Token tensors are populations with a shape such as ``(tokens, channels)`` or ``(heads, tokens,
head_dim)``; a per-token Linear is one :class:`TokenDense` projection whose single weight is shared
by every token. Operators are the parts of a Transformer that are neither synapses nor neurons
(hardware.md section 7): each is a typed dataclass with its per-step equation, the state it carries
across steps, where it runs (``runs_on``: ``neuro`` core, ``embedded`` core, ``host``) and in which
arithmetic. Time coding is C1 (methods.md section 0): ``S(t) = sum_{i<=t} x(i)`` and the running
mean of an operator's outputs follows the ANN module applied to the running mean of its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .nodes import (NODE_TYPES, ArrayLike, NeuronModel, Operator, Projection, check_array_fields, register_neuron,
                    register_projection)

RUNS_ON = ("neuro", "embedded", "host")
ARITHMETIC = ("none", "float32", "fixed")


# --------------------------------------------------------------------------------------------------
# Neurons
# --------------------------------------------------------------------------------------------------
@register_neuron
@dataclass
class MultiThreshold(NeuronModel):
    """ECMT multi-threshold neuron (paper 003, methods.md section 5), per step while active::

        m = v + I(t)
        levels  lambda_p = 2^(p-1) * theta1  and  -2^(p-1) * theta2,  p = 1..n
        s = +2^(p-1)  for the largest p with  m >= lambda_p - theta1/2
            -2^(p-1)  for the largest p with  m <  -(2^(p-1) - 1/2) * theta2   (``neg_compare`` '<';
                       the reference code's '<=' is the option)
             0        otherwise            (at most one event per step)
        v = m - value(s),  value(s) = s * theta1 (s > 0),  s * theta2 (s < 0);   v(0) = v_init

    The population emits the signed level ``s`` as one graded event; its payload's ``neg_value`` is
    ``theta2 / theta1`` and outgoing weights carry ``theta1`` (parallel parameter normalisation).
    """

    theta1: ArrayLike = field(default_factory=lambda: np.array(1.0))
    theta2: ArrayLike = field(default_factory=lambda: np.array(1.0))
    levels: int = 8
    neg_compare: str = "<"
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.0))

    array_fields: ClassVar[tuple[str, ...]] = ("theta1", "theta2", "v_init")

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        check_array_fields(self, where, shape)
        if not 1 <= int(self.levels) <= 30:
            raise ValueError(f"{where}: levels {self.levels} outside 1..30")
        if self.neg_compare not in ("<", "<="):
            raise ValueError(f"{where}: neg_compare {self.neg_compare!r} must be '<' or '<='")
        for name in ("theta1", "theta2"):
            if np.any(np.asarray(getattr(self, name)) <= 0):
                raise ValueError(f"{where}: {name} must be > 0 (min {np.min(getattr(self, name))})")


@register_neuron
@dataclass
class Relay(NeuronModel):
    """Non-spiking pass-through (a compartment whose value is read every step)::

        out(t) = I(t) + bias

    Carries per-step analog values between projections and operators: a Linear's output feeding an
    EC module, the residual stream (several Identity projections sum into it; the position
    embedding is its C1 bias). Decoded value = mean_t out(t).
    """

    spiking: ClassVar[bool] = False
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))

    array_fields: ClassVar[tuple[str, ...]] = ("bias",)

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        check_array_fields(self, where, shape)


# --------------------------------------------------------------------------------------------------
# Projections
# --------------------------------------------------------------------------------------------------
@register_projection
@dataclass
class TokenDense(Projection):
    """Per-token Linear with one shared weight: ``I[..., o] += sum_i weight[o, i] * x[..., i]``.

    weight (C_out, C_in); source shape (..., C_in), target (..., C_out) with equal leading axes
    (tokens, or heads x tokens). Fan-in C_in per target neuron; weights stored once.
    """

    connectivity: ClassVar[str] = "token_dense"

    def fan_in(self) -> int:
        return int(np.asarray(self.weight).shape[1])

    def validate_shapes(self, src_shape, dst_shape) -> None:
        w = np.asarray(self.weight)
        if w.ndim != 2 or tuple(src_shape[:-1]) != tuple(dst_shape[:-1]) or w.shape != (dst_shape[-1], src_shape[-1]):
            raise ValueError(f"{self._where()}: weight {w.shape} does not map {tuple(src_shape)} to {tuple(dst_shape)} "
                             "(expects (C_out, C_in) and equal leading axes)")


# --------------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------------
def register_operator(cls: type[Operator]) -> type[Operator]:
    """Class decorator: make a typed operator known to the HDF5 loader."""
    NODE_TYPES[cls.__name__] = cls
    return cls


@dataclass
class TypedOperator(Operator):
    """Base of typed operators: ``runs_on`` in :data:`RUNS_ON`, ``arithmetic`` in :data:`ARITHMETIC`."""

    runs_on: str = "embedded"
    arithmetic: str = "float32"

    n_inputs: ClassVar[int] = 1

    def validate(self) -> None:
        where = f"operator {self.name!r} ({type(self).__name__})"
        if self.runs_on not in RUNS_ON:
            raise ValueError(f"{where}: runs_on {self.runs_on!r} must be one of {RUNS_ON}")
        if self.arithmetic not in ARITHMETIC:
            raise ValueError(f"{where}: arithmetic {self.arithmetic!r} must be one of {ARITHMETIC}")
        if (len(self.inputs) != self.n_inputs) if self.n_inputs >= 0 else not self.inputs:
            raise ValueError(f"{where}: {len(self.inputs)} inputs, expects {self.n_inputs if self.n_inputs >= 0 else 'at least 1'}")
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise ValueError(f"{where}: shape {self.shape} must be non-empty and positive")

    def validate_inputs(self, shapes: list[tuple[int, ...]]) -> None:
        """Check the input shapes (called by the network validator)."""
        if any(tuple(s) != tuple(self.shape) for s in shapes):
            raise ValueError(f"operator {self.name!r}: input shapes {shapes} differ from its shape {self.shape}")


# Parameter checks shared by every coding of the same function (EC here, C2 in operators_c2.py,
# MBE in operators_mbe.py): one rule per function, whatever the coding around it.
def check_layernorm_params(op) -> None:
    c = int(op.shape[-1])
    if np.shape(op.weight) != (c,) or np.shape(op.bias) != (c,):
        raise ValueError(f"operator {op.name!r}: weight {np.shape(op.weight)} / bias {np.shape(op.bias)} "
                         f"must be ({c},)")
    if not op.eps > 0:
        raise ValueError(f"operator {op.name!r}: eps {op.eps} must be > 0")


def check_gelu_params(op) -> None:
    if op.approximate not in ("none", "tanh"):
        raise ValueError(f"operator {op.name!r}: approximate {op.approximate!r} must be 'none' or 'tanh'")


def check_axis(op) -> None:
    if not -len(op.shape) <= op.axis < len(op.shape):
        raise ValueError(f"operator {op.name!r}: axis {op.axis} outside shape {op.shape}")


def check_matmul_shapes(op, shapes) -> None:
    """``A @ B`` over the last two axes, batch axes equal, gives the operator's shape."""
    a, b = (tuple(s) for s in shapes)
    if len(a) < 2 or a[:-2] != b[:-2] or a[-1] != b[-2] or tuple(op.shape) != a[:-1] + (b[-1],):
        raise ValueError(f"operator {op.name!r}: {a} @ {b} does not give its shape {tuple(op.shape)}")


@dataclass
class ECOperator(TypedOperator):
    """Expectation compensation of a non-linear module F (methods.md section 0, C1)::

        S(t) = S(t-1) + x(t)
        O(t) = t * F(S(t) / t) - (t - 1) * F(S(t-1) / (t-1))        (the second term is 0 at t = 1)

    State across steps: ``S`` and ``t`` (and ``P = (t-1) F(S(t-1)/(t-1))`` kept to avoid
    recomputing it). ``sum_{i<=t} O(i) = t F(S(t)/t)``: the running mean of the output is F of the
    running mean of the input at every step (Thm 4.1 of paper 003).
    """

    state: ClassVar[tuple[str, ...]] = ("S", "P", "t")


@register_operator
@dataclass
class LayerNormEC(ECOperator):
    """EC of ``F(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` over the last axis."""

    op: str = "LayerNormEC"
    fn: ClassVar[str] = "layernorm"   # the function F (shared with other codings' fixed-point kernels)
    weight: ArrayLike = field(default_factory=lambda: np.ones(1))
    bias: ArrayLike = field(default_factory=lambda: np.zeros(1))
    eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_layernorm_params(self)


@register_operator
@dataclass
class GELUEC(ECOperator):
    """EC of ``F(x) = x * Phi(x)`` (``approximate="none"``) or its tanh approximation."""

    op: str = "GELUEC"
    fn: ClassVar[str] = "gelu"
    approximate: str = "none"

    def validate(self) -> None:
        super().validate()
        check_gelu_params(self)


@register_operator
@dataclass
class SoftmaxEC(ECOperator):
    """EC of ``F(x) = softmax(scale * x)`` along ``axis`` (the attention scale folded in)."""

    op: str = "SoftmaxEC"
    fn: ClassVar[str] = "softmax"
    axis: int = -1
    scale: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_axis(self)


@register_operator
@dataclass
class MatMulEC(TypedOperator):
    """Matrix-product expectation compensation (paper 003, methods.md section 5) of ``A @ B``::

        S_A(t) = S_A(t-1) + A(t),   S_B(t) = S_B(t-1) + B(t)
        S_K(t) = S_K(t-1) + A(t) B(t) + A(t) S_B(t-1) + S_A(t-1) B(t)      (= S_A(t) S_B(t))
        O(t)   = scale * (S_K(t) / t - S_K(t-1) / (t-1))                   (O(1) = scale * A(1) B(1))

    ``sum_{t<=T} O(t) = scale * S_A(T) S_B(T) / T`` (Thm 4.2). Inputs ``(A, B)`` of shapes
    (..., n, k) and (..., k, m); output (..., n, m). State: S_A, S_B, S_K, t.
    """

    op: str = "MatMulEC"
    scale: float = 1.0

    n_inputs: ClassVar[int] = 2
    state: ClassVar[tuple[str, ...]] = ("S_A", "S_B", "S_K", "t")

    def validate_inputs(self, shapes) -> None:
        check_matmul_shapes(self, shapes)


@register_operator
@dataclass
class Rearrange(TypedOperator):
    """Re-indexing, linear and stateless: ``y.flat[i] = x.flat[index[i]]`` every step (head split,
    transposes, class-token select). On hardware it is wiring (which neuron feeds which synapse)."""

    op: str = "Rearrange"
    index: ArrayLike = field(default_factory=lambda: np.zeros(1, np.int64))
    runs_on: str = "neuro"
    arithmetic: str = "none"

    def validate(self) -> None:
        super().validate()
        if tuple(np.shape(self.index)) != tuple(self.shape):
            raise ValueError(f"operator {self.name!r}: index shape {np.shape(self.index)} differs from shape {self.shape}")

    def validate_inputs(self, shapes) -> None:
        n = int(np.prod(shapes[0]))
        idx = np.asarray(self.index)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"operator {self.name!r}: index outside its input of {n} elements")


@register_operator
@dataclass
class Concat(TypedOperator):
    """Stateless concatenation along ``axis`` of its inputs and, first, the C1 constant ``prefix``
    (the class token, presented every step like the input)."""

    op: str = "Concat"
    axis: int = 0
    prefix: ArrayLike | None = None
    runs_on: str = "neuro"
    arithmetic: str = "none"

    n_inputs: ClassVar[int] = -1  # any number >= 1

    def validate_inputs(self, shapes) -> None:
        parts = ([tuple(np.shape(self.prefix))] if self.prefix is not None else []) + [tuple(s) for s in shapes]
        ax = self.axis
        total = sum(p[ax] for p in parts)
        want = parts[0][:ax] + (total,) + parts[0][ax + 1:]
        if any(p[:ax] + p[ax + 1:] != parts[0][:ax] + parts[0][ax + 1:] for p in parts) or want != tuple(self.shape):
            raise ValueError(f"operator {self.name!r}: parts {parts} along axis {ax} do not give {tuple(self.shape)}")


@register_operator
@dataclass
class Mean(TypedOperator):
    """Stateless mean over ``axes`` of one step's value (token pooling); linear, so C1-exact."""

    op: str = "Mean"
    axes: tuple[int, ...] = (0,)

    def validate_inputs(self, shapes) -> None:
        src = tuple(shapes[0])
        want = tuple(s for i, s in enumerate(src) if i not in self.axes)
        if want != tuple(self.shape):
            raise ValueError(f"operator {self.name!r}: mean over {self.axes} of {src} is {want}, not {tuple(self.shape)}")


OPERATOR_TYPES = {c.__name__: c for c in (LayerNormEC, GELUEC, SoftmaxEC, MatMulEC, Rearrange, Concat, Mean)}
