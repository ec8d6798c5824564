"""A deliberately plain integer reference of the bit-accurate simulator (numpy int64, no torch).

One sample at a time, one step at a time, every rule of docs/fixed_point.md written out directly;
convolution by its definition with explicit loops. It shares no code with the torch simulator
(only the IR), so the tests can compare the two for exact equality. Slow: small networks only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Network
from ..ir.neurons_cuba import CubaLIF
from ..ir.neurons_extra import GradedSignedIF, MultiSpikeIF
from ..ir.nodes import IF, Conv2d, Dense, Identity, Input, Population, Readout, expand_channel


@dataclass
class ReferenceResult:
    """spikes: (N, steps, *shape) int8 per spiking population; v: final state (N, *shape) int64;
    saturation / wrap: event totals per population; conv_wrap: Conv2d sums wrapped to conv_acc_bits,
    per population and step (steps,)."""

    spikes: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    saturation: dict[str, int]
    wrap: dict[str, int]
    conv_wrap: dict[str, np.ndarray]


def _full(pop: Population, value) -> np.ndarray:
    return expand_channel(np.asarray(value), tuple(pop.shape)).reshape(-1).astype(np.int64)


def _input_values(node: Input, sample: np.ndarray, t: int, T: int) -> np.ndarray | None:
    """Integer payload an input emits at step t, or None."""
    pl = node.payload
    if node.coding == "spikes":
        if t >= T:
            return None
        s = np.asarray(sample[t], dtype=np.int64).reshape(-1)
        return np.where(s < 0, s * int(pl.neg_value), s)
    if node.coding == "once" and t != 0:
        return None
    if t >= T:
        return None
    q = np.floor(np.asarray(sample, dtype=np.float64).reshape(-1) / node.scale + 0.5)
    return np.clip(q, pl.min_level, pl.max_level).astype(np.int64)


def _conv_direct(p: Conv2d, x: np.ndarray, src_shape, dst_shape) -> np.ndarray:
    w = np.asarray(p.weight).astype(np.int64)
    c_in, h, wd = src_shape
    c_out, ho, wo = dst_shape
    x = x.reshape(src_shape)
    cpg, opg = c_in // p.groups, c_out // p.groups
    kh, kw = w.shape[2], w.shape[3]
    out = np.zeros(dst_shape, dtype=np.int64)
    for o in range(c_out):
        g = o // opg
        for yo in range(ho):
            for xo in range(wo):
                acc = 0
                for i in range(kh):
                    yi = yo * p.stride[0] - p.padding[0] + i * p.dilation[0]
                    if not 0 <= yi < h:
                        continue
                    for j in range(kw):
                        xi = xo * p.stride[1] - p.padding[1] + j * p.dilation[1]
                        if not 0 <= xi < wd:
                            continue
                        for c in range(cpg):
                            acc += int(w[o, c, i, j]) * int(x[g * cpg + c, yi, xi])
                out[o, yo, xo] = acc
    return out.reshape(-1)


def _projection(net: Network, p, x: np.ndarray) -> tuple[np.ndarray, int]:
    """(a, number of Conv sums wrapped) of one projection for one sample and step."""
    src_shape, dst_shape = net.shape_of(p.source), net.shape_of(p.target)
    wrapped = 0
    if isinstance(p, Dense):
        acc = np.asarray(p.weight).astype(np.int64).dot(x)
    elif isinstance(p, Conv2d):
        acc = _conv_direct(p, x, src_shape, dst_shape)
        bits = net.datapath.conv_acc_bits
        if bits:  # Lava PyConvModelFixed: signed_clamp(acc, 24) = (acc + 2^23) mod 2^24 - 2^23
            modulus = 2 ** bits
            kept = np.mod(acc + modulus // 2, modulus) - modulus // 2
            wrapped = int(np.count_nonzero(kept != acc))
            acc = kept
    elif isinstance(p, Identity):
        acc = expand_channel(np.asarray(p.weight), tuple(dst_shape)).reshape(-1).astype(np.int64) * x
    else:
        raise NotImplementedError(type(p).__name__)
    e = int(p.weight_exp)
    return (acc << e if e >= 0 else acc >> (-e)), wrapped


def _fire_if(m, nd: Population, vv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IF / GradedSignedIF: compare, fire +-1, reset; returns (v, event codes)."""
    th = _full(nd, m.threshold)
    s = np.zeros(nd.size, np.int64)
    s[(vv > th) if m.compare == ">" else (vv >= th)] = 1
    if m.neg_threshold is not None:
        s[(vv < -_full(nd, m.neg_threshold)) & (s == 0)] = -1
    if m.reset == "zero":
        return np.where(s != 0, 0, vv), s
    vv = vv - th * (s == 1)
    if m.neg_threshold is not None:
        vv = vv + _full(nd, m.neg_reset) * (s == -1)
    return vv, s


def lava_current(xs: np.ndarray, dp) -> np.ndarray:
    """u from ``xs`` (a_in << act_shift, already wrapped to int32): one wrap into the current range
    (Lava: u > 2^23 -> u - 2^24, u <= -2^23 -> u + 2^24) or the clip."""
    half_u = 2 ** (dp.current_bits - 1)
    if dp.current_overflow == "wrap":
        u = np.where(xs > half_u, xs - 2 * half_u, xs)
        return np.where(u <= -half_u, xs + 2 * half_u, u)
    return np.clip(xs, -half_u + 1, half_u - 1)


def lava_state(vv: np.ndarray, dp) -> np.ndarray:
    """v to the state range: clip to +-(2^(b-1) - 1) (saturate) or two's-complement wrap."""
    vmax = 2 ** (dp.state_bits - 1) - 1
    if dp.state_overflow == "saturate":
        return np.clip(vv, -vmax, vmax)
    return (vv + vmax + 1) % (2 * vmax + 2) - (vmax + 1)


def _fire_multispike(m: MultiSpikeIF, nd: Population, vv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MultiSpikeIF: n = clip(v // theta, -n_neg, n_pos) with Python floor division, one neuron at a time."""
    th = _full(nd, m.threshold)
    n = np.array([min(max(int(v) // int(t), -int(m.n_neg)), int(m.n_pos)) for v, t in zip(vv.tolist(), th.tolist())],
                 dtype=np.int64)
    return vv - n * th, n


def _event_value(nd: Population, s: np.ndarray) -> np.ndarray:
    """Payload delivered downstream for event codes ``s``."""
    m, pl = nd.neuron, nd.payload
    if isinstance(m, GradedSignedIF):
        return np.where(s > 0, int(pl.max_level), np.where(s < 0, int(pl.min_level), 0)).astype(np.int64)
    if isinstance(m, MultiSpikeIF):
        return s
    return np.where(s < 0, s * int(pl.neg_value), s)


def _fire_cuba(m: CubaLIF, nd: Population, vv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CubaLIF: compare, fire +1, reset to zero or subtract now ('fire'); 'next_step' subtracts later."""
    th = _full(nd, m.threshold)
    s = ((vv > th) if m.compare == ">" else (vv >= th)).astype(np.int64)
    if m.reset == "zero":
        return np.where(s != 0, 0, vv), s
    if m.reset_timing == "fire":
        return vv - th * s, s
    return vv, s


# Fire-and-reset rule per neuron model. Readout never fires.
_FIRE = {MultiSpikeIF: _fire_multispike, GradedSignedIF: _fire_if, IF: _fire_if, CubaLIF: _fire_cuba}


def _fire(m, nd: Population, vv: np.ndarray):
    for cls, fn in _FIRE.items():
        if isinstance(m, cls):
            return fn(m, nd, vv)
    raise NotImplementedError(f"reference_simulate: population {nd.name!r} has neuron model {type(m).__name__}; "
                              f"known: {[c.__name__ for c in (*_FIRE, Readout)]}")


def reference_simulate(net: Network, x, timesteps: int) -> ReferenceResult:
    """Run a quantised ``net`` on integer arithmetic, sample by sample.

    ``spikes`` holds the event codes: +-1 for the IF family, the signed count n for MultiSpikeIF.
    """
    dp = net.datapath
    if dp is None:
        raise ValueError("reference_simulate: the network is not quantised (datapath is None)")
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
    conv_wrap = {p.name: np.zeros(steps, np.int64) for p in pops}
    for k in range(n):
        v = {p.name: _full(p, p.neuron.v_init).copy() for p in pops}
        cur = {p.name: _full(p, getattr(p.neuron, "u_init", 0)).copy() for p in pops}   # CubaLIF's u
        last = {p.name: np.zeros(p.size, np.int64) for p in pops}                         # s(t-1)
        emitted: dict[str, list] = {nd.name: [] for nd in nodes}
        for t in range(steps):
            for nd in nodes:
                if isinstance(nd, Input):
                    emitted[nd.name].append(_input_values(nd, np.asarray(x[nd.name][k]), t, T))
                    continue
                # LavaLIF (always_active) updates at every step, like Lava's ungated LIF process
                if not (getattr(type(nd.neuron), "always_active", False) or nd.t_start <= t < nd.t_start + T):
                    emitted[nd.name].append(None)
                    continue
                a_in = np.zeros(nd.size, np.int64)
                for p in net.incoming(nd.name):
                    if t - p.delay >= 0 and emitted[p.source][t - p.delay] is not None:
                        a, wrapped = _projection(net, p, emitted[p.source][t - p.delay])
                        a_in = a_in + a
                        conv_wrap[nd.name][t] += wrapped
                # u: a_in << act_shift in Lava's int32, then one wrap into the current range
                xs = a_in << dp.act_shift
                xs = (xs + 2 ** 31) % 2 ** 32 - 2 ** 31
                m = nd.neuron
                if isinstance(m, CubaLIF):
                    # u decays by (4096 - (du + 1)) >> 12 toward zero; int32 sum with the input
                    y = cur[nd.name] * (2 ** dp.decay_bits - (int(m.du) + 1))
                    xs = np.sign(y) * (np.abs(y) >> dp.decay_bits) + xs
                    xs = (xs + 2 ** 31) % 2 ** 32 - 2 ** 31 + _full(nd, m.current_bias)
                u = lava_current(xs, dp)
                wrap[nd.name] += int(np.sum(u != xs))
                cur[nd.name] = u
                vv = v[nd.name]
                leak = int(m.dv if isinstance(m, CubaLIF) else getattr(m, "leak", 0))
                if leak:
                    y = vv * (2 ** dp.decay_bits - leak)
                    vv = np.sign(y) * (np.abs(y) >> dp.decay_bits)
                vv = vv + u + _full(nd, m.bias)
                if isinstance(m, CubaLIF) and m.reset == "subtract" and m.reset_timing == "next_step":
                    vv = vv - _full(nd, m.threshold) * last[nd.name]
                clipped = lava_state(vv, dp)
                sat[nd.name] += int(np.sum(clipped != vv))
                vv = clipped
                if isinstance(m, Readout):
                    v[nd.name] = vv
                    emitted[nd.name].append(None)
                    continue
                vv, s = _fire(m, nd, vv)
                v[nd.name] = vv
                last[nd.name] = s
                spikes[nd.name][k, t] = s.reshape(nd.shape)
                emitted[nd.name].append(_event_value(nd, s))
        for p in pops:
            finals[p.name][k] = v[p.name].reshape(p.shape)
    return ReferenceResult(spikes, finals, sat, wrap, conv_wrap)
