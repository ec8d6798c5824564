"""Float and bit-accurate kernels of the MBE neurons (``ir/neurons_mbe.py``), staged coding C3.

Both run the same per-step tables (V, R, D) of shape (B, N, T): the float kernel computes them in
float64 from the learned parameters (``MBE.tables``), the bit-accurate one reads the integer
tables of ``MBETable``. State: the collected input x (B, n), exposed as ``v`` for state/voltage
records, and the per-basis potentials u (batch, n, B, N) from the first active step on.

Collection: the engine calls :meth:`receive` with the current of every step outside the active
window. Before the window it is summed into x (bit-accurate: each step's current goes through the
Lava input rules of ``FixedIF`` and the sum saturates to the state range, docs/fixed_point.md);
any input after the first active step raises ``IRError`` (a scheduling error of the network), naming
the population and the step.

Events: every firing basis is one event (graded payload d or the integer intensity). The event code
recorded per neuron and step is (firing bases of branch 0) - (firing bases of branch 1), which fits
int8 for N <= 127; the emitted value is the sum of the firing bases' intensities.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir.graph import IRError
from ..ir.neurons_mbe import MBE, MBETable
from ..ir.nodes import Population
from .neurons import NeuronKernel, _current, _param, _saturate, _setup_fixed_common, register_kernel


class _MBEKernel(NeuronKernel):
    """Collection, the per-step basis dynamics, counting and decoding shared by both arithmetics."""

    integer = False

    @staticmethod
    def max_abs_value(pop: Population) -> float:
        _, _, D = pop.neuron.tables()
        return float(max(np.abs(D).sum(axis=(0, 1)).max(), 1.0))

    def _init_mbe(self) -> None:
        pop, m = self.pop, self.pop.neuron
        if m.bases > 127:
            raise ValueError(f"population {pop.name!r}: MBE with {m.bases} bases exceeds the simulator's int8 event "
                             "code (N <= 127)")
        dtype = torch.int64 if self.integer else torch.float64
        V, R, D = (torch.as_tensor(a, device=self.device).to(dtype) for a in m.tables())
        self.V, self.R, self.D = V, R, D                          # (B, N, T)
        self.T = int(V.shape[2])
        self.B = int(V.shape[0])
        self.bias = _param(pop, m.bias, dtype, self.device, "bias", self.integer)
        self.v = torch.zeros((self.batch, self.n), dtype=dtype, device=self.device)   # collected x
        self.u = None
        self.local = 0
        self.events = torch.zeros((self.batch, self.n), dtype=torch.int64, device=self.device)
        self.total = torch.zeros((self.batch, self.n), dtype=dtype, device=self.device)
        self._value = None

    def _input(self, current: torch.Tensor) -> torch.Tensor:
        return current

    def _add(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x + c

    def receive(self, current: torch.Tensor | None, local_t: int) -> None:
        """Input of a step outside the active window (local_t < 0 before it, >= T after it)."""
        if current is None:
            return
        if local_t >= 0:
            self._late(local_t)
        self.v = self._add(self.v, self._input(current))

    def _late(self, local_t: int) -> None:
        raise IRError(f"population {self.pop.name!r}: MBE (staged coding C3) received input at its local step "
                         f"{local_t}, after its first active step; in C3 the input enters once, so every source must "
                         f"finish before this stage starts (t_start = source's t_start + T, delay 0)")

    def step(self, current):
        j = self.local
        if j >= self.T:
            raise IRError(f"population {self.pop.name!r}: MBE tables hold {self.T} steps, the simulation runs more "
                             f"(simulate with timesteps = {self.T}, the T the neuron was fitted for)")
        self.local += 1
        if j == 0:
            x = self.v if current is None else self._add(self.v, self._input(current))
            self.v = self._add(x, self.bias)
            x = self.v
            zero = torch.zeros_like(x)
            parts = [torch.maximum(x, zero), torch.maximum(-x, zero)][: self.B]
            self.u = torch.stack(parts, dim=-1).unsqueeze(-1).expand(self.batch, self.n, self.B, self.V.shape[1]).clone()
        elif current is not None:
            self._late(j)
        s = (self.u >= self.V[:, :, j]).to(self.u.dtype)          # (batch, n, B, N)
        self.u = self.u - s * self.R[:, :, j]
        value = (s * self.D[:, :, j]).sum(dim=(-2, -1))
        self._value = value
        self.total += value
        fired = s.sum(dim=-1)                                      # (batch, n, B)
        self.events += fired.sum(dim=-1).to(torch.int64)
        code = fired[..., 0] - (fired[..., 1] if self.B == 2 else 0)
        return code.to(torch.int8)

    def value(self, spikes: torch.Tensor) -> torch.Tensor:
        return self._value

    def spike_counts(self) -> torch.Tensor:
        return self.events

    def decode(self, timesteps: int, coding: str, quantized: bool) -> np.ndarray:
        return self._decode_total(self.total, timesteps, coding)


class FloatMBE(_MBEKernel):
    """Float MBE: tables from the learned taus in float64 (ir ``MBE`` docstring)."""

    value_dtype = torch.float64

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        self._init_mbe()


class FixedMBE(_MBEKernel):
    """Bit-accurate MBE on integer tables: x = sat(sum of Lava input currents + bias), then compare/reset."""

    value_dtype = torch.int64
    integer = True

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        self._init_mbe()
        m: MBETable = pop.neuron
        pmax = int(max(np.abs(np.asarray(m.threshold)).max(), np.abs(np.asarray(m.reset)).max(),
                       np.abs(np.asarray(m.bias)).max()))
        if pmax > 2 ** (dp.state_bits - 1) - 1:
            raise ValueError(f"population {pop.name!r}: MBETable value {pmax} exceeds the {dp.state_bits}-bit state range")
        _setup_fixed_common(self, dp, in_bound, pmax)
        self.dtype = torch.int64        # u and x are int64 throughout (tables may need the full state range)

    def _input(self, current):
        return _current(self, current)

    def _add(self, x, c):
        return _saturate(self, x + c)


register_kernel(MBE, FloatMBE, None)
register_kernel(MBETable, FloatMBE, FixedMBE)

__all__ = ["FixedMBE", "FloatMBE"]
