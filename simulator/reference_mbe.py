"""Plain integer reference of quantised staged-coding (C3) networks of MBE neurons (numpy, no torch).

Kept apart from ``reference.py`` (IF family, C1/C2) because C3 changes when a population takes its
input. One sample at a time, one step at a time, every rule of docs/fixed_point.md ("MBE") written
out directly for ``Input`` (coding once), ``Dense`` / ``Identity`` projections, ``MBETable`` and
``Readout`` populations. It shares no code with the torch kernels, so tests compare them for equality.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Network
from ..ir.neurons_mbe import MBETable
from ..ir.nodes import Dense, Identity, Input, Population, Readout, expand_channel
from .reference import lava_current, lava_state


@dataclass
class StagedReference:
    """spikes: event codes (N, steps, *shape) int8 per MBE population; values: emitted payload per
    step (N, steps, *shape) int64; x: collected input (MBE) or final v (Readout), (N, *shape)."""

    spikes: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    x: dict[str, np.ndarray]


def _u(a_in: np.ndarray, dp) -> np.ndarray:
    """Lava input rule: a_in << act_shift in int32, then ``reference.lava_current``'s wrap (or clip)."""
    xs = a_in << dp.act_shift if dp.act_shift >= 0 else a_in >> -dp.act_shift
    return lava_current((xs + 2 ** 31) % 2 ** 32 - 2 ** 31, dp)


_sat = lava_state   # the state range: saturate or two's-complement wrap


def reference_staged(net: Network, x, timesteps: int) -> StagedReference:
    dp = net.datapath
    if dp is None or net.coding != "C3":
        raise ValueError("reference_staged: needs a quantised network with coding C3")
    T = timesteps
    steps = T + net.latency()
    nodes = [nd for nd in net.nodes() if isinstance(nd, (Input, Population))]
    for nd in nodes:
        if isinstance(nd, Input) and nd.coding != "once":
            raise ValueError(f"reference_staged: input {nd.name!r} has coding {nd.coding!r}; C3 inputs enter once")
        if isinstance(nd, Population) and not isinstance(nd.neuron, (MBETable, Readout)):
            raise ValueError(f"reference_staged: population {nd.name!r} is {type(nd.neuron).__name__}")
    for p in net.projections():
        if not isinstance(p, (Dense, Identity)):
            raise ValueError(f"reference_staged: projection {p.name!r} is {type(p).__name__} (Dense/Identity only)")
    mbes = [nd for nd in nodes if isinstance(nd, Population) and isinstance(nd.neuron, MBETable)]
    pops = [nd for nd in nodes if isinstance(nd, Population)]
    n = len(x)
    spikes = {p.name: np.zeros((n, steps) + tuple(p.shape), np.int8) for p in mbes}
    values = {p.name: np.zeros((n, steps) + tuple(p.shape), np.int64) for p in mbes}
    xs_out = {p.name: np.zeros((n,) + tuple(p.shape), np.int64) for p in pops}
    for k in range(n):
        emitted = {nd.name: [None] * steps for nd in nodes}
        acc = {p.name: (expand_channel(np.asarray(p.neuron.v_init), tuple(p.shape)).reshape(-1).astype(np.int64)
                        if isinstance(p.neuron, Readout) else np.zeros(p.size, np.int64)) for p in pops}
        ubasis: dict[str, np.ndarray] = {}
        for t in range(steps):
            for nd in nodes:
                if isinstance(nd, Input):
                    if t == 0:
                        q = np.floor(np.asarray(x[k], dtype=np.float64).reshape(-1) / nd.scale + 0.5)
                        emitted[nd.name][t] = np.clip(q, nd.payload.min_level, nd.payload.max_level).astype(np.int64)
                    continue
                a_in, arrived = np.zeros(nd.size, np.int64), False
                for p in net.incoming(nd.name):
                    e = emitted[p.source][t - p.delay] if t - p.delay >= 0 else None
                    if e is None:
                        continue
                    arrived = True
                    if isinstance(p, Dense):
                        a = np.asarray(p.weight).astype(np.int64) @ e
                    else:
                        a = expand_channel(np.asarray(p.weight), tuple(nd.shape)).reshape(-1).astype(np.int64) * e
                    ex = int(p.weight_exp)
                    a_in = a_in + (a << ex if ex >= 0 else a >> -ex)
                local = t - nd.t_start
                m = nd.neuron
                if isinstance(m, Readout):
                    if 0 <= local < T:
                        bias = expand_channel(np.asarray(m.bias), tuple(nd.shape)).reshape(-1).astype(np.int64)
                        acc[nd.name] = _sat(acc[nd.name] + (_u(a_in, dp) if arrived else 0) + bias, dp)
                    continue
                if local < 0:                         # collecting while earlier stages run
                    if arrived:
                        acc[nd.name] = _sat(acc[nd.name] + _u(a_in, dp), dp)
                    continue
                if arrived and local > 0:
                    raise ValueError(f"reference_staged: {nd.name!r} got input at local step {local}")
                if local >= T:
                    continue
                th, rs, it = (np.asarray(a).astype(np.int64) for a in (m.threshold, m.reset, m.intensity))
                B, N = th.shape[0], th.shape[1]
                if local == 0:
                    if arrived:
                        acc[nd.name] = _sat(acc[nd.name] + _u(a_in, dp), dp)
                    bias = expand_channel(np.asarray(m.bias), tuple(nd.shape)).reshape(-1).astype(np.int64)
                    acc[nd.name] = _sat(acc[nd.name] + bias, dp)
                    xv = acc[nd.name]
                    ub = np.zeros((nd.size, B, N), np.int64)
                    ub[:, 0, :] = np.maximum(xv, 0)[:, None]
                    if B == 2:
                        ub[:, 1, :] = np.maximum(-xv, 0)[:, None]
                    ubasis[nd.name] = ub
                ub = ubasis[nd.name]
                code = np.zeros(nd.size, np.int64)
                val = np.zeros(nd.size, np.int64)
                for i in range(nd.size):
                    for b in range(B):
                        for j in range(N):
                            if ub[i, b, j] >= th[b, j, local]:
                                ub[i, b, j] -= rs[b, j, local]
                                val[i] += it[b, j, local]
                                code[i] += 1 if b == 0 else -1
                spikes[nd.name][k, t] = code.reshape(nd.shape)
                values[nd.name][k, t] = val.reshape(nd.shape)
                emitted[nd.name][t] = val
        for p in pops:
            xs_out[p.name][k] = acc[p.name].reshape(p.shape)
    return StagedReference(spikes, values, xs_out)


__all__ = ["StagedReference", "reference_staged"]
