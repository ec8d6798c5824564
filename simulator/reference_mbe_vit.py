"""Plain integer reference of quantised MBE Transformers (staged coding C3; docs/fixed_point.md,
"MBE Transformer networks"), written independently of the torch kernels: numpy int64 arrays for
projections, Python integers and scalar loops for the MBE neurons (every basis, every step), the
mantissa/exponent split by ``int.bit_length`` and the shifts by Python's exact integer shifts.
One sample at a time. Slow; for tests.

``run_reference(net, x)`` returns ``{node: (N, *shape) int64}`` (every node's forwarded integer),
``{pop: (N, *shape)}`` firing bases per MBE neuron and ``{stage: (N, T, *shape) int8}`` event codes
(MBE populations, and the identity neurons of products as ``op:a`` / ``op:b``).
"""
from __future__ import annotations

import numpy as np

from ..ir import operators as O
from ..ir import operators_mbe as OM
from ..ir.neurons_mbe import MBETable
from ..ir.nodes import Input, Operator, Population, Readout, expand_channel
from .reference_operators import _operator as _wiring
from .reference_operators import _project


def _sat(v: int, bits: int) -> int:
    top = (1 << (bits - 1)) - 1
    return max(-top, min(top, v))


def _rshift(a: int, s: int) -> int:
    """Round half up by 2^s (s > 0), exact left shift (s <= 0)."""
    return (a + (1 << (s - 1))) >> s if s > 0 else a << -s


def _neuron(x: int, th, rs, it) -> tuple[int, int, list[int]]:
    """One MBE neuron from state x: (sum of intensities, firing bases, per-step codes)."""
    B, N, T = th.shape
    u = [[max(x, 0)] * N] + ([[max(-x, 0)] * N] if B == 2 else [])
    total = fired = 0
    codes = []
    for t in range(T):
        code = 0
        for b in range(B):
            for n in range(N):
                if u[b][n] >= int(th[b, n, t]):
                    u[b][n] -= int(rs[b, n, t])
                    total += int(it[b, n, t])
                    fired += 1
                    code += 1 if b == 0 else -1
        codes.append(code)
    return total, fired, codes


def _stage(values: np.ndarray, th, rs, it):
    flat = [_neuron(int(v), th, rs, it) for v in values.reshape(-1)]
    T = th.shape[2]
    total = np.array([f[0] for f in flat], dtype=np.int64).reshape(values.shape)
    fired = np.array([f[1] for f in flat], dtype=np.int64).reshape(values.shape)
    codes = np.array([f[2] for f in flat], dtype=np.int8).T.reshape((T,) + values.shape)
    return total, fired, codes


def run_reference(net, x) -> tuple[dict, dict, dict]:
    dp = net.datapath
    P, S = int(dp.payload_bits), int(dp.state_bits)
    x = np.asarray(x, dtype=np.float64)
    vals: dict[str, list] = {}
    fired_all: dict[str, list] = {}
    codes_all: dict[str, list] = {}
    for k in range(x.shape[0]):
        val: dict[str, np.ndarray] = {}
        stages: dict = {}
        for node in net.nodes():
            name = node.name
            if isinstance(node, Input):
                pl = node.payload
                q = np.floor(x[k:k + 1] / float(node.scale) + 0.5)
                val[name] = np.clip(q, pl.min_level, pl.max_level).astype(np.int64).reshape((1,) + tuple(node.shape))
            elif isinstance(node, Population):
                shape = tuple(node.shape)
                cur = np.zeros((1,) + shape, dtype=np.int64)
                for p in net.incoming(name):
                    cur = cur + _project(p, val[p.source], shape, dp)
                m = node.neuron
                bias = np.broadcast_to(expand_channel(np.asarray(m.bias, dtype=np.int64), shape), cur.shape)
                if isinstance(m, MBETable):
                    xs = np.vectorize(lambda v: _sat(int(v), S), otypes=[np.int64])(cur + bias)
                    tabs = [np.asarray(a, dtype=np.int64) for a in (m.threshold, m.reset, m.intensity)]
                    total, fired, codes = _stage(xs, *tabs)
                    c = float(np.asarray(node.decode_scale, dtype=np.float64).reshape(-1)[0])
                    off = int(np.floor(float(np.asarray(node.decode_offset, dtype=np.float64).reshape(-1)[0]) / c + 0.5))
                    val[name] = total + off
                    fired_all.setdefault(name, []).append(fired)
                    codes_all.setdefault(name, []).append(np.moveaxis(codes, 0, 1))
                else:
                    val[name] = np.vectorize(lambda v: _sat(int(v), P), otypes=[np.int64])(cur + bias)
            elif isinstance(node, Operator):
                val[name] = _operator(node, [val[i] for i in node.inputs], P, S, stages, codes_all)
            if name in val:
                vals.setdefault(name, []).append(val[name])
    cat = lambda d: {n: np.concatenate(v) for n, v in d.items()}  # noqa: E731
    return cat(vals), cat(fired_all), cat(codes_all)


def _operator(op, ins, P: int, S: int, stages: dict, codes_all: dict) -> np.ndarray:
    pr = op.params
    if isinstance(op, (O.Rearrange, O.Concat, O.Mean)):
        return _wiring(op, ins, None, 1, P)
    if isinstance(op, OM._IdentityPair):
        sums = []
        for w, x, src in zip("ab", ins, op.inputs):
            tabs = tuple(np.asarray(pr[f"{t}_{w}"], dtype=np.int64) for t in ("threshold", "reset", "intensity"))
            key = (src, int(pr[f"in_mult_{w}"]), int(pr[f"in_shift_{w}"])) + tuple(int(t.sum()) for t in tabs)
            if key not in stages:
                xs = np.vectorize(lambda v: _sat(_rshift(int(v) * int(pr[f"in_mult_{w}"]), int(pr[f"in_shift_{w}"])), S),
                                  otypes=[np.int64])(x)
                stages[key] = _stage(xs, *tabs)
            total, _, codes = stages[key]
            codes_all.setdefault(f"{op.name}:{w}", []).append(np.moveaxis(codes, 0, 1))
            sums.append(total)
        a, b = sums
        raw = a @ b if isinstance(op, OM.MBEMatMul) else a * b
        sh = int(pr["shift"])
        return np.vectorize(lambda v: _sat(_rshift(int(v), sh), P), otypes=[np.int64])(raw)
    x = ins[0]
    if isinstance(op, OM.Exp2Split):
        ax = op.axis % len(op.shape) + 1
        F, mult, sh = int(pr["frac_bits"]), int(pr["mult"]), int(pr["shift"])
        d = x.max(axis=ax, keepdims=True) - x
        out = np.zeros_like(d)
        for i, v in np.ndenumerate(d):
            yq = _rshift(int(v) * mult, sh)
            whole = (-yq) // (1 << F)             # floor(y), y = -yq / 2^F
            out[i] = _sat(whole, P) if op.part == "int" else -yq - whole * (1 << F)
        return out
    if isinstance(op, OM.MantExp):
        ax = op.axis % len(op.shape) + 1
        F = int(pr["frac_bits"])
        s = x.sum(axis=ax, keepdims=True)
        out = np.zeros_like(s)
        for i, v in np.ndenumerate(s):
            q = max(int(v) * int(pr["mult"]) + int(pr["eps_q"]), 1)
            L = q.bit_length()
            E = L + int(pr["exp_base"])
            M = _rshift(q, L - F)
            if M == 1 << F:
                M, E = 1 << (F - 1), E + 1
            if op.even and E % 2:
                M, E = 2 * M, E - 1
            out[i] = M if op.part == "mantissa" else _sat(E, P)
        return out
    if isinstance(op, OM.Ldexp):
        e = np.broadcast_to(ins[1], x.shape)
        k2, sh = int(pr["exponent_twice"]), int(pr["shift"])
        top = (1 << (P - 1)) - 1
        out = np.zeros_like(x)
        for i, v in np.ndenumerate(x):
            s = sh - (k2 * int(e[i])) // 2
            y = _rshift(int(v), s) if s > 0 else int(v) << min(-s, 2 * P)   # Python integers: no overflow
            out[i] = max(-top, min(top, y))
        return out
    raise TypeError(type(op).__name__)


__all__ = ["run_reference"]
