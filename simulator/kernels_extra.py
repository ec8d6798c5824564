"""Float and bit-accurate kernels of the extra IR neuron models (``ir/neurons_extra.py``).

``MultiSpikeIF`` (PMSM): one signed multi-spike count per step. The fixed-point kernel follows the
same Lava LIF order as ``FixedIF`` (u = wrap_once(wrap32(a_in << act_shift)), v = sat(v + u + bias))
and then ``n = clip(floor(v / threshold), -n_neg, n_pos)`` with ``torch.div(..., rounding_mode="floor")``
on integers: exact, rounding toward minus infinity for negative v (Python's ``//``). The float kernel
computes ``floor(v / threshold)`` in float64.

``GradedSignedIF``: signed IF dynamics (``FixedIF`` / ``FloatIF``) with events that deliver the
payload's ``max_level`` (+1) and ``min_level`` (-1).

Event counting: a nonzero count is ONE event (graded payload), as methods.md section 4 and 7 fix for
energy accounting; ``payload_sum`` keeps sum |n| for the other convention.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir.neurons_extra import GradedSignedIF, LavaLIF, MultiSpikeIF
from ..ir.nodes import Population
from .neurons import (FixedIF, FloatIF, NeuronKernel, _current, _saturate, _setup_fixed_common,
                      register_kernel)


# ------------------------------------------------------------------------------ MultiSpikeIF
class _MultiSpikeBase(NeuronKernel):
    """Counting and decoding shared by the float and fixed multi-spike kernels."""

    @staticmethod
    def max_abs_value(pop: Population) -> float:
        return float(max(int(pop.neuron.n_pos), int(pop.neuron.n_neg), 1))

    def _init_counts(self) -> None:
        self.events = torch.zeros((self.batch, self.n), dtype=torch.int64, device=self.device)
        self.total = torch.zeros((self.batch, self.n), dtype=torch.int64, device=self.device)
        self.payload_sum = torch.zeros((self.batch, self.n), dtype=torch.int64, device=self.device)
        self.lo, self.hi = -int(self.pop.neuron.n_neg), int(self.pop.neuron.n_pos)
        if max(-self.lo, self.hi) > 127:
            raise ValueError(f"population {self.pop.name!r}: MultiSpikeIF levels [{self.lo}, {self.hi}] exceed the "
                             "simulator's int8 event code (|n| <= 127)")

    def _emit(self, n: torch.Tensor) -> torch.Tensor:
        """Count events, return the int8 event code (the signed count itself)."""
        n64 = n.to(torch.int64)
        self.events += (n64 != 0).to(torch.int64)
        self.total += n64
        self.payload_sum += n64.abs()
        return n64.to(torch.int8)

    def value(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes.to(self.value_dtype)

    def spike_counts(self) -> torch.Tensor:
        return self.events

    def decode(self, timesteps: int, coding: str, quantized: bool) -> np.ndarray:
        return self._decode_total(self.total, timesteps, coding)


class FloatMultiSpikeIF(_MultiSpikeBase):
    """Float MultiSpikeIF: v_tmp = v + I + bias; n = clip(floor(v_tmp/theta)); v = v_tmp - n*theta."""

    value_dtype = torch.float64

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        self._load_state(integer=False)
        self._init_counts()

    def step(self, current):
        v = self.v if current is None else self.v + current
        v = v + self.bias
        n = torch.floor(v / self.theta).clamp(self.lo, self.hi)
        self.v = v - n * self.theta
        return self._emit(n)


class FixedMultiSpikeIF(_MultiSpikeBase):
    """Bit-accurate MultiSpikeIF: v = sat(v + bias + u); n = clip(v // theta); v -= n * theta."""

    value_dtype = torch.int64

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        m: MultiSpikeIF = pop.neuron
        self._load_state(integer=True)
        span = max(int(m.n_pos), int(m.n_neg)) + 1
        pmax = int(max(self.theta.abs().max().item() * span, self.bias.abs().max().item(), self.v.abs().max().item()))
        _setup_fixed_common(self, dp, in_bound, pmax)
        self.theta, self.bias, self.v = (t.to(self.dtype) for t in (self.theta, self.bias, self.v))
        self.has_bias = bool(self.bias.any())
        self._init_counts()

    def step(self, current):
        v = self.v + self.bias if self.has_bias else self.v
        if current is not None:
            v = v + _current(self, current)
        v = _saturate(self, v)
        n = torch.div(v, self.theta, rounding_mode="floor").clamp(self.lo, self.hi)
        self.v = v - n * self.theta
        return self._emit(n)


# ---------------------------------------------------------------------------- GradedSignedIF
class _GradedValues:
    """Mixin: +1 events deliver payload.max_level, -1 events payload.min_level."""

    @staticmethod
    def max_abs_value(pop: Population) -> float:
        return float(max(abs(pop.payload.max_level), abs(pop.payload.min_level), 1))

    def _levels(self) -> None:
        pl = self.pop.payload
        if pl.min_level >= 0 or pl.max_level <= 0:
            raise ValueError(f"population {self.pop.name!r}: GradedSignedIF needs payload levels min_level < 0 < "
                             f"max_level, got [{pl.min_level}, {pl.max_level}]")
        self.pos_level, self.neg_level = int(pl.max_level), int(pl.min_level)
        self.signed = True
        self.neg_value = 1

    def value(self, spikes: torch.Tensor) -> torch.Tensor:
        s = spikes.to(self.value_dtype)
        return (s > 0).to(self.value_dtype) * self.pos_level + (s < 0).to(self.value_dtype) * self.neg_level

    def decode(self, timesteps: int, coding: str, quantized: bool) -> np.ndarray:
        total = self.pos.double() * self.pos_level + self.neg.double() * self.neg_level
        return self._decode_total(total, timesteps, coding)


class FloatGradedSignedIF(_GradedValues, FloatIF):
    """Float GradedSignedIF (used to check a quantised graph's event values in float)."""

    def __init__(self, pop, batch, device, dp, in_bound):
        FloatIF.__init__(self, pop, batch, device, dp, in_bound)
        self._levels()


class FixedGradedSignedIF(_GradedValues, FixedIF):
    """Bit-accurate GradedSignedIF: FixedIF's dynamics, graded event values."""

    def __init__(self, pop, batch, device, dp, in_bound):
        FixedIF.__init__(self, pop, batch, device, dp, in_bound)
        self._levels()


register_kernel(MultiSpikeIF, FloatMultiSpikeIF, FixedMultiSpikeIF)
register_kernel(GradedSignedIF, FloatGradedSignedIF, FixedGradedSignedIF)
register_kernel(LavaLIF, FloatIF, FixedIF)   # IF arithmetic; the engine runs it at every step (always_active)

__all__ = ["FixedGradedSignedIF", "FixedMultiSpikeIF", "FloatGradedSignedIF", "FloatMultiSpikeIF"]
