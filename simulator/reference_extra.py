"""Plain integer reference for networks that use the extra neuron models (``ir/neurons_extra.py``).

Like ``simulator/reference.py`` (whose numpy input and projection rules it reuses: they share no
code with the torch simulator): one sample and one step at a time, Python integers and numpy int64,
every rule written out. It runs IF, Readout, MultiSpikeIF and GradedSignedIF populations, so the
property tests can compare the bit-accurate torch kernels of ``simulator/kernels_extra.py`` with it
for exact equality. Slow: small networks only.

MultiSpikeIF: ``n = clip(v // threshold, -n_neg, n_pos)`` with Python's floor division (toward minus
infinity), one neuron at a time. GradedSignedIF: signed IF rules; +1 delivers payload.max_level,
-1 delivers payload.min_level.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Network
from ..ir.neurons_extra import GradedSignedIF, MultiSpikeIF
from ..ir.nodes import IF, Input, Population, Readout
from .reference import ReferenceResult, _full, _input_values, _projection


def _current(a_in: np.ndarray, dp) -> tuple[np.ndarray, int]:
    """u from a_in: << act_shift in Lava's int32, then one wrap (or saturation) into current_bits."""
    half = 2 ** (dp.current_bits - 1)
    out = np.zeros_like(a_in)
    changed = 0
    for i, a in enumerate(a_in.tolist()):
        x = a << dp.act_shift if dp.act_shift >= 0 else a >> -dp.act_shift
        x = (x + 2 ** 31) % 2 ** 32 - 2 ** 31
        if dp.current_overflow == "wrap":
            u = x - 2 * half if x > half else (x + 2 * half if x <= -half else x)
        else:
            u = min(max(x, -half + 1), half - 1)
        changed += int(u != x)
        out[i] = u
    return out, changed


def _saturate(v: np.ndarray, dp) -> tuple[np.ndarray, int]:
    vmax = 2 ** (dp.state_bits - 1) - 1
    if dp.state_overflow == "saturate":
        out = np.clip(v, -vmax, vmax)
    else:
        out = (v + vmax + 1) % (2 * vmax + 2) - (vmax + 1)
    return out, int(np.sum(out != v))


def _signed_if_step(m, nd: Population, vv: np.ndarray, dp) -> tuple[np.ndarray, np.ndarray]:
    """Fire and reset of IF / GradedSignedIF on the integrated state; returns (v, event codes)."""
    th = _full(nd, m.threshold)
    s = np.where((vv > th) if m.compare == ">" else (vv >= th), 1, 0).astype(np.int64)
    if m.neg_threshold is not None:
        s = np.where((vv < -_full(nd, m.neg_threshold)) & (s == 0), -1, s)
    if m.reset == "zero":
        return np.where(s != 0, 0, vv), s
    vv = vv - th * (s == 1)
    if m.neg_threshold is not None:
        vv = vv + _full(nd, m.neg_reset) * (s == -1)
    return vv, s


def _multispike_step(m: MultiSpikeIF, nd: Population, vv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    th = _full(nd, m.threshold)
    n = np.array([min(max(int(v) // int(t), -int(m.n_neg)), int(m.n_pos)) for v, t in zip(vv.tolist(), th.tolist())],
                 dtype=np.int64)
    return vv - n * th, n


def _event_value(nd: Population, s: np.ndarray) -> np.ndarray:
    m, pl = nd.neuron, nd.payload
    if isinstance(m, GradedSignedIF):
        return np.where(s > 0, int(pl.max_level), np.where(s < 0, int(pl.min_level), 0)).astype(np.int64)
    if isinstance(m, MultiSpikeIF):
        return s
    return np.where(s < 0, s * int(pl.neg_value), s)


def reference_simulate_extra(net: Network, x, timesteps: int) -> ReferenceResult:
    """Run a quantised ``net`` (IF, Readout, MultiSpikeIF, GradedSignedIF) on integer arithmetic.

    ``spikes`` holds the event codes: +-1 for the IF family, the signed count n for MultiSpikeIF.
    """
    dp = net.datapath
    if dp is None:
        raise ValueError("reference_simulate_extra: the network is not quantised (datapath is None)")
    known = (IF, Readout, MultiSpikeIF, GradedSignedIF)
    for p in net.populations():
        if not isinstance(p.neuron, known):
            raise NotImplementedError(f"reference_simulate_extra: population {p.name!r} has neuron model "
                                      f"{type(p.neuron).__name__}; known: {[k.__name__ for k in known]}")
    T = timesteps
    steps = T + net.latency()
    x = x if isinstance(x, dict) else {net.inputs()[0].name: x}
    n = len(next(iter(x.values())))
    nodes = [nd for nd in net.nodes() if isinstance(nd, (Input, Population))]
    pops = [nd for nd in nodes if isinstance(nd, Population)]
    spikes = {p.name: np.zeros((n, steps) + tuple(p.shape), np.int8) for p in pops if not isinstance(p.neuron, Readout)}
    finals = {p.name: np.zeros((n,) + tuple(p.shape), np.int64) for p in pops}
    sat = {p.name: 0 for p in pops}
    wrap = {p.name: 0 for p in pops}
    for k in range(n):
        v = {p.name: _full(p, p.neuron.v_init).copy() for p in pops}
        emitted: dict[str, list] = {nd.name: [] for nd in nodes}
        for t in range(steps):
            for nd in nodes:
                if isinstance(nd, Input):
                    emitted[nd.name].append(_input_values(nd, np.asarray(x[nd.name][k]), t, T))
                    continue
                if not nd.t_start <= t < nd.t_start + T:
                    emitted[nd.name].append(None)
                    continue
                a_in = np.zeros(nd.size, np.int64)
                for p in net.incoming(nd.name):
                    if t - p.delay >= 0 and emitted[p.source][t - p.delay] is not None:
                        a_in = a_in + _projection(net, p, emitted[p.source][t - p.delay])
                u, wrapped = _current(a_in, dp)
                wrap[nd.name] += wrapped
                m = nd.neuron
                vv = v[nd.name]
                leak = int(getattr(m, "leak", 0))
                if leak:
                    y = vv * (2 ** dp.decay_bits - leak)
                    vv = np.sign(y) * (np.abs(y) >> dp.decay_bits)
                vv, clipped = _saturate(vv + u + _full(nd, m.bias), dp)
                sat[nd.name] += clipped
                if isinstance(m, Readout):
                    v[nd.name] = vv
                    emitted[nd.name].append(None)
                    continue
                if isinstance(m, MultiSpikeIF):
                    vv, s = _multispike_step(m, nd, vv)
                else:
                    vv, s = _signed_if_step(m, nd, vv, dp)
                v[nd.name] = vv
                spikes[nd.name][k, t] = s.reshape(nd.shape)
                emitted[nd.name].append(_event_value(nd, s))
        for p in pops:
            finals[p.name][k] = v[p.name].reshape(p.shape)
    return ReferenceResult(spikes, finals, sat, wrap)


__all__ = ["reference_simulate_extra"]
