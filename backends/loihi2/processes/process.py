"""Lava Processes for IR parts that lava.proc cannot express exactly (simulation-only on Loihi 2:
a custom neuron needs microcode on the chip; see docs/loihi2.md)."""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.proc.conv import utils as conv_utils


class SpikeportNeuron(AbstractProcess):
    """IF family / multi-spike IF / Readout neuron with Loihi LIF arithmetic plus what LIF lacks.

    Per step ``t = (time_step - 1) % period``; active while ``t_start <= t < t_end``, frozen otherwise
    (no update, sends 0)::

        u = wrap24(decay_u(u) + (a_in << 6))             (du = 4095: u is this step's input)
        v = clip24(decay_v(v) + u + (bias_mant << bias_exp))
        s = +1 if v CMP (vth << 6)     (CMP '>=' when compare_ge else '>')
            -1 if signed and v < -neg_threshold
        reset: subtract (v -= vth << 6; v += neg_reset) or zero (v = 0 where s != 0)

    With ``multi_spike`` (PMSM's MultiSpikeIF) the spike rule and reset are instead
    ``s = clip(floor(v / (vth << 6)), -n_neg, n_pos); v -= s * (vth << 6)`` and the graded event
    sends the signed count s itself. Otherwise s = +1 sends ``pos_value`` and s = -1 sends
    ``-neg_value`` (graded when either is not 1). A Readout (``spiking=False``) never fires.
    When ``record`` is set, ``s_hist`` / ``v_hist`` hold every step's event code s and post-reset v.
    """

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray, bias_mant: np.ndarray,
                 bias_exp: np.ndarray, v_init: np.ndarray, dv: int = 0, du: int = 4095, neg_threshold: np.ndarray | None = None,
                 neg_reset: np.ndarray | None = None, reset_subtract: bool = True, compare_ge: bool = True,
                 spiking: bool = True, neg_value: int = 1, pos_value: int = 1, multi_spike: bool = False,
                 n_pos: int = 1, n_neg: int = 0, t_start: int = 0, t_end: int = 1, period: int = 1,
                 record: bool = True, name: str | None = None) -> None:
        signed = neg_threshold is not None
        super().__init__(shape=shape, reset_subtract=bool(reset_subtract), compare_ge=bool(compare_ge),
                         spiking=bool(spiking), signed=signed, neg_value=int(neg_value), pos_value=int(pos_value),
                         multi_spike=bool(multi_spike), n_pos=int(n_pos), n_neg=int(n_neg), t_start=int(t_start),
                         t_end=int(t_end), period=int(period), record=bool(record), name=name)
        zeros = np.zeros(shape, dtype=np.int64)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=np.broadcast_to(v_init, shape).copy())
        self.v_init = Var(shape=shape, init=np.broadcast_to(v_init, shape).copy())
        self.bias_mant = Var(shape=shape, init=np.broadcast_to(bias_mant, shape).copy())
        self.bias_exp = Var(shape=shape, init=np.broadcast_to(bias_exp, shape).copy())
        self.vth = Var(shape=shape, init=np.broadcast_to(vth, shape).copy())
        self.du = Var(shape=(1,), init=int(du))
        self.dv = Var(shape=(1,), init=int(dv))
        self.neg_threshold = Var(shape=shape, init=zeros if neg_threshold is None else np.broadcast_to(neg_threshold, shape).copy())
        self.neg_reset = Var(shape=shape, init=zeros if neg_reset is None else np.broadcast_to(neg_reset, shape).copy())
        hist = tuple(shape) + (int(period),) if record else (1,)
        self.s_hist = Var(shape=hist, init=0)
        self.v_hist = Var(shape=hist, init=0)


class ScaledConv(AbstractProcess):
    """lava.proc.conv's Conv with its ``weight_exp`` applied (Lava's Python Conv model ignores it).

    ``a = wrap24(conv(s, weight))`` as Lava's Conv computes it, then ``a << weight_exp`` (floor shift
    when negative); one step of latency like every Lava synapse. Same (X, Y, C) layouts as Conv.
    """

    def __init__(self, *, weight: np.ndarray, weight_exp: int, input_shape: tuple[int, int, int],
                 padding: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], groups: int,
                 num_message_bits: int = 0, name: str | None = None) -> None:
        super().__init__(weight_exp=int(weight_exp), num_message_bits=int(num_message_bits),
                         padding=tuple(padding), stride=tuple(stride), dilation=tuple(dilation), groups=int(groups),
                         name=name)
        out_shape = conv_utils.output_shape(input_shape, weight.shape[0], weight.shape[1:3], stride, padding, dilation)
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(out_shape)
        self.s_in = InPort(shape=tuple(input_shape))
        self.a_out = OutPort(shape=tuple(out_shape))
        self.weight = Var(shape=weight.shape, init=weight)
        self.a_buf = Var(shape=tuple(out_shape), init=0)
