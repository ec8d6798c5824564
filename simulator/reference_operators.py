"""Plain integer reference of quantised operator networks (docs/fixed_point.md, "Transformer
operator networks"), written independently of the torch kernels: numpy int64 arrays, scalar
loops where the rule is a scan (MT levels), Python's ``math.isqrt``. Slow; for tests.

``run_reference(net, x, T)`` returns ``{node: (T, N, *shape) int64}`` (every node's per-step
payload; a Readout's entry is its per-step value, an IF population's its +1 / -1 codes) and the
final Readout sums. IF populations (AIF) follow the CNN reference's Lava LIF rules
(simulator/reference.py: ``lava_current``, ``lava_state``, ``_fire_if``), one sample at a time;
operators read them as ``e * threshold + round(decode_offset / state_scale)``.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import operators as O
from ..ir.nodes import IF, Conv2d, Dense, Identity, Input, Operator, Population, Readout, expand_channel
from .reference import _fire_if, lava_current, lava_state


def _rdiv(a, b):
    a = np.asarray(a, dtype=np.int64)
    return np.floor_divide(a + np.floor_divide(b, 2), b)


def _rshift(a, sh: int):
    return _rdiv(a, 1 << sh) if sh > 0 else np.left_shift(np.asarray(a, dtype=np.int64), -sh)


def _sat(x, bits: int):
    top = (1 << (bits - 1)) - 1
    return np.clip(x, -top, top)


def _conv(x: np.ndarray, w: np.ndarray, p: Conv2d) -> np.ndarray:
    """Direct integer convolution (N, C, H, W) * (O, C/g, kh, kw)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw), g = p.stride, p.padding, p.dilation, p.groups
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=np.int64)
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow), dtype=np.int64)
    per = o // g
    for oc in range(o):
        grp = oc // per
        for ic in range(cg):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, grp * cg + ic, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
                    out[:, oc] += int(w[oc, ic, i, j]) * patch
    return out


def _project(p, x: np.ndarray, dst_shape, dp) -> np.ndarray:
    w = np.asarray(p.weight, dtype=np.int64)
    n = x.shape[0]
    if isinstance(p, O.TokenDense):
        acc = np.einsum("...i,oi->...o", x, w)
    elif isinstance(p, Dense):
        acc = (x.reshape(n, -1) @ w.T).reshape((n,) + tuple(dst_shape))
    elif isinstance(p, Conv2d):
        acc = _conv(x, w, p)
        b = int(dp.conv_acc_bits)
        if b:
            acc = np.mod(acc + (1 << (b - 1)), 1 << b) - (1 << (b - 1))
    elif isinstance(p, Identity):
        acc = x * expand_channel(w, tuple(dst_shape))
    else:
        raise TypeError(type(p).__name__)
    e = int(p.weight_exp)
    return np.left_shift(acc, e) if e >= 0 else np.right_shift(acc, -e)


def _mt_level(m: int, t1: int, t2: int, n: int, strict: bool) -> int:
    for p in range(n - 1, -1, -1):
        if 2 * m >= ((1 << (p + 1)) - 1) * t1:
            return 1 << p
    for p in range(n - 1, -1, -1):
        k = ((1 << (p + 1)) - 1) * t2
        if (-2 * m > k) if strict else (-2 * m >= k):
            return -(1 << p)
    return 0


class _EC:
    def __init__(self):
        self.S = None
        self.P = 0
        self.t = 0


def f_int(op, pr, xq: np.ndarray) -> np.ndarray:
    """F_int of an EC or C2 operator (``op.fn``) on the integer input xq (docs/fixed_point.md)."""
    fn = getattr(op, "fn", None)
    if fn == "gelu":
        half = int(pr["lut_half"])
        lut = np.asarray(pr["lut"], dtype=np.int64)
        out = np.empty_like(xq)
        for i, v in np.ndenumerate(xq):
            v = int(v)
            if v > half:
                out[i] = (v * int(pr["hi_mult"]) + ((1 << int(pr["hi_shift"])) >> 1)) >> int(pr["hi_shift"]) \
                    if int(pr["hi_shift"]) > 0 else v * int(pr["hi_mult"])
            else:
                out[i] = lut[max(v, -half) + half]
        return out
    if fn == "softmax":
        ax = op.axis % len(op.shape) + 1
        lut = np.asarray(pr["lut"], dtype=np.int64)
        x = np.moveaxis(xq, ax, -1)
        e = lut[np.minimum(x.max(axis=-1, keepdims=True) - x, len(lut) - 1)]
        y = _rdiv(np.left_shift(e, int(pr["out_frac"])), e.sum(axis=-1, keepdims=True))
        return np.moveaxis(y, -1, ax)
    if fn == "layernorm":
        c = xq.shape[-1]
        d = c * xq - xq.sum(axis=-1, keepdims=True)
        q = np.floor_divide((d * d).sum(axis=-1, keepdims=True), c) + int(pr["eps_q"])
        r = np.vectorize(lambda v: math.isqrt(int(v)), otypes=[np.int64])(q)
        nrm = _rdiv(np.left_shift(d, int(pr["norm_frac"])), r)
        return _rshift(nrm * np.asarray(pr["gamma_q"], dtype=np.int64), int(pr["gamma_shift"])) \
            + np.asarray(pr["beta_q"], dtype=np.int64)
    raise TypeError(type(op).__name__)


def run_reference(net, x, timesteps: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    dp = net.datapath
    P = int(dp.payload_bits)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    order = list(net.nodes())
    state, ec, trace = {}, {}, {}
    readout = {}
    for node in order:
        if isinstance(node, Population):
            shape = tuple(node.shape)
            if type(node.neuron) is IF:
                state[node.name] = np.broadcast_to(expand_channel(np.asarray(node.neuron.v_init, dtype=np.int64), shape),
                                                   (n,) + shape).reshape(n, -1).copy()
            if isinstance(node.neuron, O.MultiThreshold):
                state[node.name] = np.broadcast_to(expand_channel(np.asarray(node.neuron.v_init, dtype=np.int64), shape),
                                                   (n,) + shape).copy()
            if isinstance(node.neuron, Readout):
                readout[node.name] = np.broadcast_to(expand_channel(np.asarray(node.neuron.v_init, dtype=np.int64), shape),
                                                     (n,) + shape).copy()
        if isinstance(node, (Input, Population, Operator)):
            trace[node.name] = []
            ec[node.name] = _EC()
    for t in range(1, int(timesteps) + 1):
        val, seen = {}, {}     # seen: what operators read (IF: the decoded integers)
        for node in order:
            name = node.name
            if isinstance(node, Input):
                pl = node.payload
                q = np.floor(x / float(node.scale) + 0.5)
                val[name] = np.clip(q, pl.min_level, pl.max_level).astype(np.int64).reshape((n,) + tuple(node.shape))
            elif isinstance(node, Population):
                shape = tuple(node.shape)
                cur = np.zeros((n,) + shape, dtype=np.int64)
                for p in net.incoming(name):
                    cur = cur + _project(p, val[p.source], shape, dp)
                m = node.neuron
                if isinstance(m, O.MultiThreshold):
                    mm = _sat(state[name] + cur, dp.state_bits)
                    t1 = np.broadcast_to(expand_channel(np.asarray(m.theta1, dtype=np.int64), shape), mm.shape)
                    t2 = np.broadcast_to(expand_channel(np.asarray(m.theta2, dtype=np.int64), shape), mm.shape)
                    e = np.zeros_like(mm)
                    for i, v in np.ndenumerate(mm):
                        s = _mt_level(int(v), int(t1[i]), int(t2[i]), int(m.levels), m.neg_compare == "<")
                        e[i] = s * int(t1[i]) if s > 0 else s * int(t2[i])
                    state[name] = mm - e
                    val[name] = e
                elif type(m) is IF:
                    codes = np.zeros((n, node.size), dtype=np.int64)
                    for k in range(n):        # one sample at a time, as the CNN reference
                        xs = np.left_shift(cur[k].reshape(-1), dp.act_shift) if dp.act_shift >= 0 \
                            else np.right_shift(cur[k].reshape(-1), -dp.act_shift)
                        xs = (xs + 2 ** 31) % 2 ** 32 - 2 ** 31          # Lava's int32 a_in << 6
                        vv = lava_state(state[name][k] + lava_current(xs, dp)
                                        + expand_channel(np.asarray(m.bias, dtype=np.int64), shape).reshape(-1), dp)
                        state[name][k], codes[k] = _fire_if(m, node, vv)
                    val[name] = codes.reshape((n,) + shape)
                    unit = float(np.asarray(node.state_scale, dtype=np.float64).reshape(-1)[0])
                    th = expand_channel(np.asarray(m.threshold, dtype=np.int64), shape)
                    off = np.rint(expand_channel(np.asarray(node.decode_offset, dtype=np.float64), shape) / unit)
                    seen[name] = val[name] * th + off.astype(np.int64)
                else:
                    bias = expand_channel(np.asarray(m.bias, dtype=np.int64), shape)
                    val[name] = _sat(cur + bias, P)
                    if isinstance(m, Readout):
                        readout[name] = readout[name] + val[name]
            elif isinstance(node, Operator):
                ins = [seen.get(i, val[i]) for i in node.inputs]
                val[name] = _operator(node, ins, ec[name], n, P)
            if name in trace:
                trace[name].append(val[name])
    return {k: np.stack(v) for k, v in trace.items()}, readout


def _operator(op, ins, st: _EC, n: int, P: int) -> np.ndarray:
    pr = op.params
    if isinstance(op, O.Rearrange):
        return ins[0].reshape(n, -1)[:, np.asarray(op.index, dtype=np.int64).reshape(-1)].reshape((n,) + tuple(op.shape))
    if isinstance(op, O.Concat):
        parts = [_rshift(x * int(m), int(s)) for x, m, s in zip(ins, pr["in_mult"], pr["in_shift"])]
        if op.prefix is not None:
            pre = np.asarray(op.prefix, dtype=np.int64)
            parts = [np.broadcast_to(pre, (n,) + pre.shape)] + parts
        return np.concatenate(parts, axis=op.axis % len(op.shape) + 1)
    if isinstance(op, O.Mean):
        return _sat(ins[0].sum(axis=tuple(a + 1 for a in op.axes)), P)
    st.t += 1
    t = st.t
    if isinstance(op, O.MatMulEC):
        a, b = ins
        if st.S is None:
            st.S = [np.zeros_like(a), np.zeros_like(b), np.zeros(a.shape[:-1] + b.shape[-1:], dtype=np.int64)]
        sa, sb, sk = st.S
        sk = sk + a @ b + a @ sb + sa @ b      # the recurrence of the docstring
        st.S = [sa + a, sb + b, sk]
        m = int(pr["shift"])
        cur = _rdiv(sk, t << m) if m >= 0 else _rdiv(np.left_shift(sk, -m), t)
    else:
        st.S = ins[0].copy() if st.S is None else st.S + ins[0]
        top = (1 << (int(pr["in_bits"]) - 1)) - 1
        xq = np.clip(_rdiv(st.S * int(pr["in_mult"]), t << int(pr["in_shift"])), -top, top)
        cur = t * f_int(op, pr, xq)
    out = cur - st.P
    st.P = cur
    return _sat(out, P)
