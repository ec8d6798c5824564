"""Leaky current-based neuron models: ``CubaLIF`` (Lava's LIF) and the non-spiking ``CubaLI``.

These carry a synaptic current ``u`` besides the membrane ``v``, as Lava's LIF process and NIR's
CubaLIF / LIF / LI nodes do, plus the conventions peers disagree on (reset timing, comparison, a
bias into the current). Both register with :func:`register_neuron` so ``ir.load`` knows them;
simulator kernels live in ``simulator/kernels_cuba.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .nodes import ArrayLike, NeuronModel, check_array_fields, register_neuron

RESET_TIMINGS = ("fire", "next_step")


def _check_decays(model, where: str, quantized_hint: str = "") -> None:
    for name in ("du", "dv"):
        d = float(getattr(model, name))
        if not np.isfinite(d) or d < 0:
            raise ValueError(f"{where}: {name} = {d} must be a finite number >= 0")


@register_neuron
@dataclass
class CubaLIF(NeuronModel):
    """Current-based leaky integrate-and-fire neuron, per step t while active::

        u <- u * (1 - du) + I(t) + current_bias                  (synaptic current)
        v <- v * (1 - dv) + u + bias  [- threshold * s(t-1)  if reset 'subtract', timing 'next_step']
        s  = 1  if v CMP threshold  (CMP '>' or '>=', ``compare``)   else 0
        reset 'zero': v = 0 where s;  'subtract' with timing 'fire': v -= threshold where s

    ``u(0) = u_init``, ``v(0) = v_init``. ``du = 1`` makes u this step's input (a plain LIF), ``dv = 0``
    no voltage leak. ``reset_timing = 'next_step'`` is snnTorch's delayed subtraction (the threshold
    is subtracted after the next step's decay, not before it); for a zero reset both timings agree.

    Quantised graphs (Lava's ``PyLifModelBitAcc``, hardware.md section 1): every value is an integer
    in state units; ``du`` and ``dv`` are Lava's 12-bit registers, the current decays as
    ``u * (4096 - (du + 1)) >> 12`` (Lava's ds_offset = 1; du = 4095 keeps no current) and the
    voltage as ``v * (4096 - dv) >> 12`` (both round toward zero); u = wrap24(decay(u) + (a_in << 6)),
    v = sat24(decay(v) + u + bias). Lava's LIF has no current bias, so ``current_bias`` is then 0.
    """

    threshold: ArrayLike = field(default_factory=lambda: np.array(1.0))
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    current_bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.0))
    u_init: ArrayLike = field(default_factory=lambda: np.array(0.0))
    du: float = 1.0
    dv: float = 0.0
    reset: str = "zero"
    compare: str = ">"
    reset_timing: str = "fire"

    array_fields: ClassVar[tuple[str, ...]] = ("threshold", "bias", "current_bias", "v_init", "u_init")
    # quantiser hooks (compiler/quantize.py)
    state_fields: ClassVar[tuple[str, ...]] = ("v_init", "u_init")
    state_span: ClassVar[int] = 1

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"{where}: reset {self.reset!r} must be 'subtract' or 'zero'")
        if self.compare not in (">=", ">"):
            raise ValueError(f"{where}: compare {self.compare!r} must be '>=' or '>'")
        if self.reset_timing not in RESET_TIMINGS:
            raise ValueError(f"{where}: reset_timing {self.reset_timing!r} must be one of {RESET_TIMINGS}")
        _check_decays(self, where)
        check_array_fields(self, where, shape)


@register_neuron
@dataclass
class CubaLI(NeuronModel):
    """Current-based leaky integrator (never fires), per step t while active::

        u <- u * (1 - du) + I(t) + current_bias
        v <- v * (1 - dv) + u + bias           decoded output = v(T) / T (C1) or v(T) (C2)

    NIR's LI node (du = 1) and CubaLI. Float graphs only: the quantiser has no rule for it.
    """

    spiking: ClassVar[bool] = False
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    current_bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.0))
    u_init: ArrayLike = field(default_factory=lambda: np.array(0.0))
    du: float = 1.0
    dv: float = 0.0

    array_fields: ClassVar[tuple[str, ...]] = ("bias", "current_bias", "v_init", "u_init")

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        _check_decays(self, where)
        check_array_fields(self, where, shape)


@register_neuron
@dataclass
class LavaCubaLIF(CubaLIF):
    """Lava's LIF process as it runs on the chip and in lava-dl netx: the ``CubaLIF`` update above at
    EVERY step ``0 .. T + latency`` of the run, not only in the population's window.

    netx blocks and Lava's native LIF have no t_start gating. ``compiler.ungate`` turns a gated
    ``CubaLIF`` into this model where that changes no window (no bias, no initial state, aligned
    delays): before its window nothing reaches it and it stays at rest; after its window it may keep
    firing from the current it still holds, which reaches no downstream window. Its events are then
    what netx and Lava compute at every step.
    """

    always_active: ClassVar[bool] = True


__all__ = ["CubaLI", "CubaLIF", "LavaCubaLIF"]
