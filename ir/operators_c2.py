"""C2 (sum / differential) coding for Transformers: the ST-BIF neuron and the C2 operators.

C2 (methods.md section 0): the input, biases, the class token and the position embedding enter
once, at t = 1; a network's output is decoded as ``sum_t out(t)``. A non-linear module F becomes

    S(t) = S(t-1) + x(t)
    O(t) = F(S(t)) - F(S(t-1))          (O(1) = F(S(1)); so sum_{i<=t} O(i) = F(S(t)))

and a product of two tensors the difference form
``O(t) = A(t) B(t) + A(t) S_B(t-1) + S_A(t-1) B(t)`` (``sum_{i<=t} O(i) = S_A(t) S_B(t)``). Once every
neuron's summed output equals its QANN level, every operator's summed output equals the QANN value.
Used by SpikeZIP-TF's ST-BIF (``--method stbif``) and PMSM on ViT (``--method pmsm``, with the
``MultiSpikeIF`` neuron of ``neurons_extra.py``). Relay / Readout biases and a Concat ``prefix`` are
added at t = 1 only in a C2 network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .nodes import ArrayLike, NeuronModel, check_array_fields, register_neuron
from .operators import (OPERATOR_TYPES, TypedOperator, check_axis, check_gelu_params, check_layernorm_params,
                        check_matmul_shapes, register_operator)


@register_neuron
@dataclass
class STBIF(NeuronModel):
    """SpikeZIP-TF's spike-tracer bipolar IF neuron (methods.md section 1), in threshold units::

        q(0) = 0.5 ;  A(0) = 0                       (A: the tracer, the sum of emitted spikes)
        q   += I(t) / step
        out  = +1  if q >= 1 and A < n_max
               -1  if q <  0 and A > n_min
                0  otherwise                         (at most one signed spike per step)
        A   += out ;  q -= out ;  value out * step   (outgoing weights carry ``step``)

    Once its summed input stops changing, A settles at ``clamp(floor(sum I / step + 1/2), n_min,
    n_max)``: the QANN's symmetric quantiser level (n_min = -L/2, n_max = L/2 - 1).
    """

    step: ArrayLike = field(default_factory=lambda: np.array(1.0))
    n_min: int = -8
    n_max: int = 7

    array_fields: ClassVar[tuple[str, ...]] = ("step",)

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        check_array_fields(self, where, shape)
        if np.any(np.asarray(self.step) <= 0):
            raise ValueError(f"{where}: step must be > 0 (min {np.min(self.step)})")
        if not int(self.n_min) <= 0 <= int(self.n_max) or self.n_min == self.n_max:
            raise ValueError(f"{where}: levels [{self.n_min}, {self.n_max}] must contain 0 and more than one level")


@dataclass
class C2Operator(TypedOperator):
    """Differential form of a non-linear module F (C2)::

        S(t) = S(t-1) + x(t);   O(t) = F(S(t)) - F(S(t-1))   (the second term is absent at t = 1)

    State: S and F(S(t-1)). ``sum_{i<=t} O(i) = F(S(t))`` (up to float rounding of the sum).
    """

    state: ClassVar[tuple[str, ...]] = ("S", "P")


@register_operator
@dataclass
class LayerNormC2(C2Operator):
    """C2 of ``F(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` over the last axis."""

    op: str = "LayerNormC2"
    fn: ClassVar[str] = "layernorm"
    weight: ArrayLike = field(default_factory=lambda: np.ones(1))
    bias: ArrayLike = field(default_factory=lambda: np.zeros(1))
    eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_layernorm_params(self)


@register_operator
@dataclass
class GELUC2(C2Operator):
    """C2 of ``F(x) = x * Phi(x)`` (``approximate="none"``) or its tanh approximation."""

    op: str = "GELUC2"
    fn: ClassVar[str] = "gelu"
    approximate: str = "none"

    def validate(self) -> None:
        super().validate()
        check_gelu_params(self)


@register_operator
@dataclass
class SoftmaxC2(C2Operator):
    """C2 of ``F(x) = softmax(scale * x)`` along ``axis`` (the attention scale folded in)."""

    op: str = "SoftmaxC2"
    fn: ClassVar[str] = "softmax"
    axis: int = -1
    scale: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_axis(self)


@register_operator
@dataclass
class MatMulC2(TypedOperator):
    """Difference form of the product ``A @ B`` (C2)::

        O(t) = scale * (A(t) B(t) + A(t) S_B(t-1) + S_A(t-1) B(t))
        S_A(t) = S_A(t-1) + A(t),  S_B(t) = S_B(t-1) + B(t)

    so ``sum_{i<=t} O(i) = scale * S_A(t) S_B(t)``. Inputs (..., n, k) and (..., k, m). State S_A, S_B.
    """

    op: str = "MatMulC2"
    scale: float = 1.0

    n_inputs: ClassVar[int] = 2
    state: ClassVar[tuple[str, ...]] = ("S_A", "S_B")

    def validate_inputs(self, shapes) -> None:
        check_matmul_shapes(self, shapes)


C2_OPERATOR_TYPES = {c.__name__: c for c in (LayerNormC2, GELUC2, SoftmaxC2, MatMulC2)}
OPERATOR_TYPES.update(C2_OPERATOR_TYPES)

__all__ = ["C2Operator", "C2_OPERATOR_TYPES", "GELUC2", "LayerNormC2", "MatMulC2", "STBIF", "SoftmaxC2"]
