"""Fixed-point (``fixed_pt``) CPU ProcessModels of spikeport's Lava Processes.

The neuron model keeps the operation order, widths and rounding of Lava 0.10.0's
``PyLifModelBitAcc`` (lava/proc/lif/models.py): int64 decay products rounded toward zero, the
activation left-shifted by 6 in int32, one conditional 24-bit wrap of u, v clipped to
[-(2^23) + 1, 2^23 - 1]. Only the spike rule (one threshold crossing, or PMSM's floor-division
count), reset, event values and time gating differ.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv import utils as conv_utils

# Absolute import: Lava loads this file as a top-level module while it searches for models.
from spikeport.backends.loihi2.processes.process import ScaledConv, SpikeportNeuron

_DECAY_SHIFT = 12
_DECAY_UNITY = 1 << _DECAY_SHIFT
_ACT_SHIFT = 6
_VTH_SHIFT = 6
_UV_MAX = 1 << 23


def _decay(x: np.ndarray, decay: int) -> np.ndarray:
    """x * (4096 - decay) >> 12, rounded toward zero, as Lava's LIF does."""
    prod = np.asarray(x).astype(np.int64) * (_DECAY_UNITY - decay)
    return (np.sign(prod) * np.right_shift(np.abs(prod), _DECAY_SHIFT)).astype(np.int32)


@implements(proc=SpikeportNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeportNeuronFixed(PyLoihiProcessModel):
    """Bit-accurate (to Lava's LIF datapath) IF / signed IF / multi-spike IF / Readout with t_start gating."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    du: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    neg_threshold: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    neg_reset: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    s_hist: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_hist: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.reset_subtract = p["reset_subtract"]
        self.compare_ge = p["compare_ge"]
        self.spiking = p["spiking"]
        self.signed = p["signed"]
        self.neg_value = p["neg_value"]
        self.pos_value = p.get("pos_value", 1)
        self.multi_spike = p.get("multi_spike", False)
        self.n_pos, self.n_neg = p.get("n_pos", 1), p.get("n_neg", 0)
        self.t_start, self.t_end, self.period = p["t_start"], p["t_end"], p["period"]
        self.record = p["record"]

    def _update(self, a_in: np.ndarray) -> np.ndarray:
        """One active step; returns the event code s (in {-1, 0, 1}, or the multi-spike count)."""
        curr = _decay(self.u, int(self.du[0]) + 1)            # Lava's ds_offset = 1
        curr += np.left_shift(a_in.astype(np.int32), _ACT_SHIFT)  # int32, wraps like Lava
        curr = np.where(curr > _UV_MAX, curr - 2 * _UV_MAX, curr)
        curr = np.where(curr <= -_UV_MAX, curr + 2 * _UV_MAX, curr)
        self.u[:] = curr
        bias = np.where(self.bias_exp >= 0, np.left_shift(self.bias_mant, np.maximum(self.bias_exp, 0)),
                        np.right_shift(self.bias_mant, np.maximum(-self.bias_exp, 0)))
        volt = _decay(self.v, int(self.dv[0])) + self.u + bias
        self.v[:] = np.clip(volt, -_UV_MAX + 1, _UV_MAX - 1)
        if not self.spiking:
            return np.zeros(self.v.shape, dtype=np.int32)
        vth = np.left_shift(self.vth, _VTH_SHIFT)
        if self.multi_spike:
            return self._multi_spike(vth)
        pos = self.v >= vth if self.compare_ge else self.v > vth
        neg = (self.v < -self.neg_threshold) & ~pos if self.signed else np.zeros_like(pos)
        if self.reset_subtract:
            self.v[pos] -= vth[pos]
            self.v[neg] += self.neg_reset[neg]
        else:
            self.v[pos | neg] = 0
        return pos.astype(np.int32) - neg.astype(np.int32)

    def _multi_spike(self, vth: np.ndarray) -> np.ndarray:
        """PMSM: n = clip(floor(v / theta), -n_neg, n_pos) (floor also for negative v); v -= n * theta.

        |n * theta| <= |v| + theta < 2^24 before the clip shrinks it, so int32 holds every product."""
        n = np.clip(np.floor_divide(self.v, vth), -self.n_neg, self.n_pos).astype(np.int32)
        self.v[:] = self.v - n * vth
        return n

    def _event_values(self, s: np.ndarray) -> np.ndarray:
        """What s_out carries: the count itself (multi-spike) or pos_value / -neg_value per event."""
        if self.multi_spike:
            return s.astype(np.int32)
        return np.where(s > 0, self.pos_value, np.where(s < 0, -self.neg_value, 0)).astype(np.int32)

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        t = (self.time_step - 1) % self.period
        if self.t_start <= t < self.t_end:
            s = self._update(a_in)
        else:
            s = np.zeros(self.v.shape, dtype=np.int32)
        self.s_out.send(self._event_values(s))
        if self.record:
            self.s_hist[..., t] = s
            self.v_hist[..., t] = self.v


@implements(proc=ScaledConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyScaledConvFixed(PyLoihiProcessModel):
    """Lava Conv's fixed-point arithmetic followed by the weight exponent shift."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def run_spk(self) -> None:
        p = self.proc_params
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if p["num_message_bits"] == 0:
            s_in = s_in.astype(bool)
        acc = conv_utils.conv(s_in, self.weight, self.weight.shape[1:3], p["stride"], p["padding"],
                              p["dilation"], p["groups"])
        acc = conv_utils.signed_clamp(acc, bits=24).astype(np.int64)
        exp = p["weight_exp"]
        self.a_buf[:] = np.left_shift(acc, exp) if exp >= 0 else np.right_shift(acc, -exp)
