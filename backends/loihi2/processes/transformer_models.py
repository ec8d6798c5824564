"""Fixed-point (``fixed_pt``) CPU ProcessModels of the Transformer processes (transformer_process.py).

The MT neuron, relay/readout and synapse arithmetic is written here in numpy int64, independently
of the simulator's torch kernels (simulator/fixed_operators.py), from the rules in
docs/fixed_point.md. Operators call the plain integer reference (simulator/reference_operators.py),
which is itself independent of the simulator's kernels. Every model receives, computes and sends
within one Lava time step (no latency).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

# Absolute imports: Lava loads this file as a top-level module while it searches for models.
from spikeport.backends.loihi2.processes.transformer_process import (MTNeuron, Operator1, Operator2, Operator3,
                                                                     Operator4, RelayNeuron, TokenSynapse)
from spikeport.simulator import reference_operators as ref

_IN = LavaPyType(PyInPort.VEC_DENSE, np.int64)
_OUT = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
_VAR = LavaPyType(np.ndarray, np.int64)


def _sat(x: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << (bits - 1)) - 1
    return np.clip(x, -top, top)


def _step_index(model: PyLoihiProcessModel) -> int:
    return int(model.time_step) - 1


@implements(proc=MTNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMTNeuronFixed(PyLoihiProcessModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT
    theta1: np.ndarray = _VAR
    theta2: np.ndarray = _VAR
    v: np.ndarray = _VAR
    s_hist: np.ndarray = _VAR
    e_hist: np.ndarray = _VAR
    v_hist: np.ndarray = _VAR

    def run_spk(self) -> None:
        p = self.proc_params
        cur = self.a_in.recv().astype(np.int64)
        m = _sat(self.v + cur, p["state_bits"])
        s = np.zeros_like(m)
        undecided = np.ones(m.shape, dtype=bool)
        for lvl in range(p["levels"] - 1, -1, -1):            # largest level first
            hit = undecided & (2 * m >= ((1 << (lvl + 1)) - 1) * self.theta1)
            s[hit] = 1 << lvl
            undecided &= ~hit
        for lvl in range(p["levels"] - 1, -1, -1):
            k = ((1 << (lvl + 1)) - 1) * self.theta2
            hit = undecided & ((-2 * m > k) if p["strict"] else (-2 * m >= k))
            s[hit] = -(1 << lvl)
            undecided &= ~hit
        e = np.where(s > 0, s * self.theta1, s * self.theta2)
        self.v[:] = m - e
        self.s_out.send(e)
        t = _step_index(self)
        if t < self.s_hist.shape[0]:
            self.s_hist[t] = s
            self.e_hist[t] = e
            self.v_hist[t] = self.v


@implements(proc=RelayNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRelayNeuronFixed(PyLoihiProcessModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT
    bias: np.ndarray = _VAR
    v: np.ndarray = _VAR
    e_hist: np.ndarray = _VAR

    def run_spk(self) -> None:
        p = self.proc_params
        r = _sat(self.a_in.recv().astype(np.int64) + self.bias, p["payload_bits"])
        if p["readout"]:
            self.v[:] = self.v + r
        self.s_out.send(r)
        t = _step_index(self)
        if t < self.e_hist.shape[0]:
            self.e_hist[t] = r


def _conv_int(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """Exact int64 2-D convolution (cross-correlation, as torch) of (N, C, H, W) with (O, C/g, kh, kw)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=np.int64)
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow), dtype=np.int64)
    per = o // groups
    for g in range(groups):
        wg = w[g * per:(g + 1) * per]
        xg = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, g * per:(g + 1) * per] += np.einsum("oc,nchw->nohw", wg[:, :, i, j], patch)
    return out


@implements(proc=TokenSynapse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyTokenSynapseFixed(PyLoihiProcessModel):
    s_in: PyInPort = _IN
    a_out: PyOutPort = _OUT
    weight: np.ndarray = _VAR

    def run_spk(self) -> None:
        p = self.proc_params
        x = self.s_in.recv().astype(np.int64)
        w = self.weight
        kind = p["kind"]
        if kind == "token_dense":
            acc = x @ w.T                                   # (N, ..., C_in) @ (C_in, C_out): int64, exact
        elif kind == "dense":
            acc = (x.reshape(x.shape[0], -1) @ w.T).reshape(p["dst_shape"])
        elif kind == "identity":
            acc = x * w
        elif kind == "conv":
            acc = _conv_int(x, w, p["stride"], p["padding"], p["dilation"], p["groups"])
            b = p["conv_acc_bits"]
            if b:
                acc = np.mod(acc + (1 << (b - 1)), 1 << b) - (1 << (b - 1))
        else:
            raise ValueError(f"synapse kind {kind!r}")
        e = p["weight_exp"]
        self.a_out.send(np.left_shift(acc, e) if e >= 0 else np.right_shift(acc, -e))


class _OperatorModel(PyLoihiProcessModel):
    """Receives every input, steps the reference kernel of ``spec`` on the batch, sends, records."""

    s_out: PyOutPort = _OUT
    hist: np.ndarray = _VAR

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.state = ref._EC()

    def run_spk(self) -> None:
        p = self.proc_params
        op = p["spec"]
        ins = [getattr(self, f"in{k}").recv().astype(np.int64) for k in range(len(op.inputs))]
        for k, dec in enumerate(p["decode"]):       # a signed IF source: s * threshold + z (integers)
            if dec is not None:
                ins[k] = ins[k] * dec[0] + dec[1]
        y = ref._operator(op, ins, self.state, ins[0].shape[0], p["payload_bits"]).astype(np.int64)
        self.s_out.send(y)
        t = _step_index(self)
        if t < self.hist.shape[0]:
            self.hist[t] = y


@implements(proc=Operator1, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyOperator1Fixed(_OperatorModel):
    in0: PyInPort = _IN


@implements(proc=Operator2, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyOperator2Fixed(_OperatorModel):
    in0: PyInPort = _IN
    in1: PyInPort = _IN


@implements(proc=Operator3, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyOperator3Fixed(_OperatorModel):
    in0: PyInPort = _IN
    in1: PyInPort = _IN
    in2: PyInPort = _IN


@implements(proc=Operator4, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyOperator4Fixed(_OperatorModel):
    in0: PyInPort = _IN
    in1: PyInPort = _IN
    in2: PyInPort = _IN
    in3: PyInPort = _IN
