"""Plain integer reference of quantised C2 networks (docs/fixed_point.md, "C2 operator networks"),
written independently of the torch kernels: numpy int64 arrays, Python-integer loops for the
neurons, the shared ``F_int`` of ``reference_operators`` for LayerNorm / GELU / softmax. Slow; for
tests.

``run_reference(net, x, T)``: every node's per-step payload ``{node: (T, N, *shape) int64}``.
``integer_qann(net, x)``: the same quantised network evaluated once with every C2 neuron replaced
by the quantiser it stands for, in integers: ``clamp(floor((I + theta/2) / theta), lo, hi)`` on its
whole input ``I`` (the integer QANN). Its values are what the C2 network's sums reach: PMSM at
T = 1, ST-BIF once every neuron has settled.
"""
from __future__ import annotations

import numpy as np

from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.neurons_extra import MultiSpikeIF
from ..ir.nodes import Input, Operator, Population, Readout, expand_channel
from .reference_operators import _project, _rdiv, _rshift, _sat, f_int


def _input(node: Input, x: np.ndarray) -> np.ndarray:
    pl = node.payload
    q = np.floor(np.asarray(x, dtype=np.float64) / float(node.scale) + 0.5)
    return np.clip(q, pl.min_level, pl.max_level).astype(np.int64).reshape((x.shape[0],) + tuple(node.shape))


def _theta(m) -> int:
    return int(np.asarray(m.step if isinstance(m, C2.STBIF) else m.threshold).reshape(-1)[0])


class _Op:
    """State of one operator: the running sum(s) and the previous value."""

    def __init__(self):
        self.S = self.SA = self.SB = None
        self.P = 0


def _function(op, x: np.ndarray) -> np.ndarray:
    pr = op.params
    top = (1 << (int(pr["in_bits"]) - 1)) - 1
    xq = np.clip(_rdiv(x * int(pr["in_mult"]), 1 << int(pr["in_shift"])), -top, top)
    return f_int(op, pr, xq)


def _stateless(op, ins: list[np.ndarray], n: int, P: int, first: bool) -> np.ndarray:
    pr = op.params
    if isinstance(op, O.Rearrange):
        return ins[0].reshape(n, -1)[:, np.asarray(op.index, dtype=np.int64).reshape(-1)].reshape((n,) + tuple(op.shape))
    if isinstance(op, O.Concat):
        parts = [_rshift(x * int(m), int(s)) for x, m, s in zip(ins, pr["in_mult"], pr["in_shift"])]
        if op.prefix is not None:
            pre = np.asarray(op.prefix, dtype=np.int64) * (1 if first else 0)
            parts = [np.broadcast_to(pre, (n,) + pre.shape)] + parts
        return np.concatenate(parts, axis=op.axis % len(op.shape) + 1)
    if isinstance(op, O.Mean):
        return _sat(ins[0].sum(axis=tuple(a + 1 for a in op.axes)), P)
    raise TypeError(type(op).__name__)


def run_reference(net, x, timesteps: int) -> dict[str, np.ndarray]:
    """Every node's payload at every step, (T, N, *shape) int64 (a Readout: its per-step value)."""
    dp = net.datapath
    P, B = int(dp.payload_bits), int(dp.state_bits)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    order = list(net.nodes())
    state, ops, trace = {}, {}, {}
    for node in order:
        if isinstance(node, Population) and isinstance(node.neuron, (C2.STBIF, MultiSpikeIF)):
            shape, m = tuple(node.shape), node.neuron
            th = _theta(m)
            v0 = th // 2 if isinstance(m, C2.STBIF) else expand_channel(np.asarray(m.v_init, dtype=np.int64), shape)
            state[node.name] = [np.broadcast_to(v0, (n,) + shape).astype(np.int64).copy(),
                                np.zeros((n,) + shape, dtype=np.int64)]
        if isinstance(node, Operator):
            ops[node.name] = _Op()
        if isinstance(node, (Input, Population, Operator)):
            trace[node.name] = []
    for t in range(1, int(timesteps) + 1):
        val = {}
        for node in order:
            name = node.name
            if isinstance(node, Input):
                q = _input(node, x)
                val[name] = q if t == 1 else np.zeros_like(q)
            elif isinstance(node, Population):
                shape, m = tuple(node.shape), node.neuron
                cur = np.zeros((n,) + shape, dtype=np.int64)
                for p in net.incoming(name):
                    cur = cur + _project(p, val[p.source], shape, dp)
                if isinstance(m, C2.STBIF):
                    val[name] = _stbif_step(state[name], cur, _theta(m), int(m.n_min), int(m.n_max), B)
                elif isinstance(m, MultiSpikeIF):
                    bias = expand_channel(np.asarray(m.bias, dtype=np.int64), shape) if t == 1 else 0
                    v = _sat(state[name][0] + cur + bias, B)
                    th = _theta(m)
                    k = np.clip(np.floor_divide(v, th), -int(m.n_neg), int(m.n_pos))
                    state[name][0] = v - k * th
                    val[name] = k
                else:
                    bias = expand_channel(np.asarray(m.bias, dtype=np.int64), shape) if t == 1 else 0
                    val[name] = cur + bias if isinstance(m, Readout) else _sat(cur + bias, P)
            elif isinstance(node, Operator):
                ins = [val[i] for i in node.inputs]
                st = ops[name]
                if isinstance(node, C2.MatMulC2):
                    st.SA = ins[0] if st.SA is None else st.SA + ins[0]
                    st.SB = ins[1] if st.SB is None else st.SB + ins[1]
                    cur = np.matmul(st.SA, st.SB)
                elif isinstance(node, C2.C2Operator):
                    st.S = ins[0].copy() if st.S is None else st.S + ins[0]
                    cur = _function(node, st.S)
                else:
                    val[name] = _stateless(node, ins, n, P, t == 1)
                    trace[name].append(val[name])
                    continue
                val[name] = _sat(cur - st.P, P)
                st.P = cur
            if name in trace:
                trace[name].append(val[name])
    return {k: np.stack(v) for k, v in trace.items()}


def _stbif_step(st: list, cur: np.ndarray, th: int, lo: int, hi: int, bits: int) -> np.ndarray:
    """One ST-BIF step, element by element in Python integers (q, A in ``st``)."""
    q, A = st
    q[...] = _sat(q + cur, bits)
    out = np.zeros_like(q)
    for i, v in np.ndenumerate(q):
        a = int(A[i])
        if v >= th and a < hi:
            out[i] = 1
        elif v < 0 and a > lo:
            out[i] = -1
    A += out
    q -= out * th
    return out


def integer_qann(net, x) -> dict[str, np.ndarray]:
    """The integer QANN: every node's value with all input at once and each C2 neuron replaced by
    its quantiser ``clamp(floor((I + theta/2) / theta), lo, hi)`` (PMSM: plus its bias); operators
    F_int of their whole input; products exact. ``{node: (N, *shape) int64}`` (a Readout: I + bias)."""
    dp = net.datapath
    P = int(dp.payload_bits)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    val = {}
    for node in net.nodes():
        name = node.name
        if isinstance(node, Input):
            val[name] = _input(node, x)
        elif isinstance(node, Population):
            shape, m = tuple(node.shape), node.neuron
            cur = np.zeros((n,) + shape, dtype=np.int64)
            for p in net.incoming(name):
                cur = cur + _project(p, val[p.source], shape, dp)
            if isinstance(m, (C2.STBIF, MultiSpikeIF)):
                th = _theta(m)
                lo, hi = (int(m.n_min), int(m.n_max)) if isinstance(m, C2.STBIF) else (-int(m.n_neg), int(m.n_pos))
                if isinstance(m, MultiSpikeIF):
                    cur = cur + expand_channel(np.asarray(m.bias, dtype=np.int64), shape)
                val[name] = np.clip(np.floor_divide(cur + th // 2, th), lo, hi)
            else:
                v = cur + expand_channel(np.asarray(m.bias, dtype=np.int64), shape)
                val[name] = v if isinstance(m, Readout) else _sat(v, P)
        elif isinstance(node, Operator):
            ins = [val[i] for i in node.inputs]
            if isinstance(node, C2.MatMulC2):
                val[name] = np.matmul(ins[0], ins[1])
            elif isinstance(node, C2.C2Operator):
                val[name] = _function(node, ins[0])
            else:
                val[name] = _stateless(node, ins, n, P, True)
    return val


__all__ = ["integer_qann", "run_reference"]
