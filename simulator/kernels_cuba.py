"""Float and bit-accurate kernels of the current-based models (``ir/neurons_cuba.py``).

Fixed point follows Lava 0.10.0 ``AbstractPyLifModelFixed.subthr_dynamics`` line by line:
``u = int32(sign(y) * (|y| >> 12))`` with ``y = int64(u) * (4096 - (du + 1))``; ``a_in << 6`` in
int32 (wraps); their int32 sum (wraps); one asymmetric wrap into 24 bits (u > 2^23 -> u - 2^24,
u <= -2^23 -> u + 2^24); ``v = clip(decay_v(v) + u + bias, -(2^23) + 1, 2^23 - 1)``; fire; reset.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir.neurons_cuba import CubaLI, CubaLIF, LavaCubaLIF
from ..ir.nodes import Population
from .neurons import INT16_MAX, INT16_MIN, INT32_HALF, NeuronKernel, _decay, _out_of, _param, _saturate, _setup_fixed_common, register_kernel


def _wrap32(x: torch.Tensor) -> torch.Tensor:
    return ((x + INT32_HALF) & (2 * INT32_HALF - 1)) - INT32_HALF


class _CubaBase(NeuronKernel):
    """State loading shared by the float and fixed kernels."""

    def _load(self, integer: bool, spiking: bool) -> None:
        pop, m = self.pop, self.pop.neuron
        dtype = torch.int64 if integer else torch.float64
        p = lambda name: _param(pop, getattr(m, name), dtype, self.device, name, integer)  # noqa: E731
        self.bias, self.cbias = p("bias"), p("current_bias")
        self.v = p("v_init").expand(self.batch, self.n).clone()
        self.u = p("u_init").expand(self.batch, self.n).clone()
        if spiking:
            self.theta = p("threshold")
            self.strict = m.compare == ">"
            self.zero_reset = m.reset == "zero"
            self.delayed = m.reset == "subtract" and m.reset_timing == "next_step"
            self.prev = None
            self.pos = torch.zeros((self.batch, self.n), dtype=torch.int32, device=self.device)
        self.has_cbias = bool(self.cbias.any())
        self.has_bias = bool(self.bias.any())

    def spike_counts(self) -> torch.Tensor:
        return self.pos.long()

    def decode(self, timesteps: int, coding: str, quantized: bool) -> np.ndarray:
        return self._decode_total(self.pos, timesteps, coding)

    def _fire(self, v: torch.Tensor) -> torch.Tensor:
        s = (v > self.theta if self.strict else v >= self.theta).to(v.dtype)
        if self.zero_reset:
            self.v = v * (1 - s)
        elif self.delayed:
            self.v, self.prev = v, s
        else:
            self.v = v - s * self.theta
        self.pos += s.to(torch.int32)
        return s.to(torch.int8)


class FloatCubaLIF(_CubaBase):
    """Float CubaLIF (IR docstring): u = u(1-du) + I + cb; v = v(1-dv) + u + b [- theta s(t-1)]; fire."""

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        m = pop.neuron
        self._load(integer=False, spiking=m.spiking)
        self.keep_u, self.keep_v = 1.0 - float(m.du), 1.0 - float(m.dv)

    def _dynamics(self, current):
        u = self.u * self.keep_u if self.keep_u != 1.0 else self.u
        if current is not None:
            u = u + current
        if self.has_cbias:
            u = u + self.cbias
        self.u = u
        v = self.v * self.keep_v if self.keep_v != 1.0 else self.v
        v = v + u
        if self.has_bias:
            v = v + self.bias
        return v

    def step(self, current):
        v = self._dynamics(current)
        if self.prev is not None:
            v = v - self.prev * self.theta
        return self._fire(v)


class FloatCubaLI(FloatCubaLIF):
    """Float CubaLI: the CubaLIF dynamics without firing (a leaky readout)."""

    spiking = False

    def step(self, current):
        self.v = self._dynamics(current)
        return None

    def spike_counts(self):
        return None

    def decode(self, timesteps, coding, quantized):
        out = self.v.cpu().numpy().astype(np.float64)
        if coding == "C1":
            out = out / timesteps
        return out.reshape((self.batch,) + tuple(self.pop.shape))


class FixedCubaLIF(_CubaBase):
    """Bit-accurate CubaLIF on the integer datapath (Lava LIF order, module docstring)."""

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        m: CubaLIF = pop.neuron
        self._load(integer=True, spiking=True)
        unity = 2 ** dp.decay_bits
        for name in ("du", "dv"):
            d = float(getattr(m, name))
            if d != round(d) or not 0 <= d <= unity - 1:
                raise ValueError(f"population {pop.name!r}: quantised {name} must be an integer register in "
                                 f"[0, {unity - 1}], got {d}")
        self.keep_u = unity - (int(m.du) + 1)        # Lava ds_offset = 1
        self.keep_v = unity - int(m.dv)
        self.shift = dp.decay_bits
        params = [self.theta, self.bias, self.cbias, self.v, self.u]
        _setup_fixed_common(self, dp, in_bound, int(max(p.abs().max().item() for p in params)))
        # u carries over steps: the static bound on one step's input says nothing about u, so the
        # state stays int64 and every overflow check runs.
        self.dtype = torch.int64
        self.check_int32 = self.check_cur = True

    def _current_u(self, a: torch.Tensor | None) -> torch.Tensor:
        u = _decay(self.u, self.keep_u, self.shift) if self.keep_u != 2 ** self.shift else self.u
        if a is not None:
            a = a.to(torch.int64)
            if self.check_a16 and _out_of(self, a, INT16_MIN, INT16_MAX):
                self.a16 += ((a < INT16_MIN) | (a > INT16_MAX)).sum()
            x = a << self.act_shift if self.act_shift >= 0 else a >> -self.act_shift
            x32 = _wrap32(x)
            self.int32 += (x32 != x).sum()
            u = _wrap32(u + x32)        # Lava adds two int32 arrays
        if self.has_cbias:
            u = u + self.cbias
        h = self.cur_half
        if self.cur_wrap:
            hi, lo = (u > h).to(u.dtype), (u <= -h).to(u.dtype)
            self.wrap += (hi + lo).sum()
            return u - hi * (2 * h) + lo * (2 * h)
        y = u.clamp(-h + 1, h - 1)
        self.wrap += (y != u).sum()
        return y

    def step(self, current):
        self.u = self._current_u(current)
        v = _decay(self.v, self.keep_v, self.shift) + self.u
        if self.has_bias:
            v = v + self.bias
        if self.prev is not None:
            v = v - self.prev * self.theta
        return self._fire(_saturate(self, v))


register_kernel(CubaLIF, FloatCubaLIF, FixedCubaLIF)
register_kernel(LavaCubaLIF, FloatCubaLIF, FixedCubaLIF)   # the engine runs it at every step (always_active)
register_kernel(CubaLI, FloatCubaLI, None)

__all__ = ["FixedCubaLIF", "FloatCubaLI", "FloatCubaLIF"]
