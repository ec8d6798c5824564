"""NIR graphs (``.nir`` HDF5, NIR 1.0.x) -> spikeport IR, under an exporter's convention.

Neuron nodes (IF, LIF, CubaLIF, LI, CubaLI, I, Threshold) become populations; every chain of
linear nodes between two neuron nodes (Affine, Linear, Conv1d, Conv2d, Flatten, SumPool2d,
AvgPool2d, Scale, Delay) becomes one projection (Dense, Conv2d, Identity; several weighted nodes in
a row are composed into one dense matrix), its bias a neuron bias. The convention
(``ir/nir_conventions.py``) fixes dt, reset, comparison, spike multiplicity and the tau encoding; what
was assumed is recorded in ``net.meta["nir"]``.

Loading never executes code: the file is first walked with h5py and every node's ``type`` checked
against the NIR types above, then read with ``nir.read`` (h5py + dataclass constructors only).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..ir import IF, NEURON_TYPES as NEURON_REGISTRY, Conv2d, Dense, Identity, Input, Network, Population, Readout, SpikePayload
from ..ir.neurons_cuba import CubaLI, CubaLIF
from ..ir.neurons_extra import MultiSpikeIF
from .ann_graph import FrontendError
from ..ir.nir_conventions import CONVENTIONS, Convention

NEURON_TYPES = ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "I", "Threshold")
LINEAR_TYPES = ("Affine", "Linear", "Conv1d", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d", "Scale", "Delay")
KNOWN_TYPES = ("Input", "Output", "NIRGraph") + NEURON_TYPES + LINEAR_TYPES
MULTI_SPIKE_MAX = 127        # the simulators' event code is int8
DENSE_LIMIT = 1 << 25        # entries of a composed dense matrix


class NirImportError(FrontendError):
    """A NIR file cannot be imported; the message names the file, the node and its type."""


# ------------------------------------------------------------------------------------- reading
def _check_types(path: Path) -> None:
    """Walk the file with h5py: every node group must name a known NIR type (no code runs)."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NirImportError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        if "node" not in f:
            raise NirImportError(f"{path}: not a NIR file (no /node group)")

        def walk(group, where: str) -> None:
            t = group.get("type")
            tname = t[()].decode() if t is not None and isinstance(t[()], bytes) else (str(t[()]) if t is not None else None)
            if tname not in KNOWN_TYPES:
                raise NirImportError(f"{path}: node {where or '/'} has type {tname!r}; spikeport imports {', '.join(KNOWN_TYPES)}")
            if tname == "NIRGraph":
                if "nodes" not in group:
                    raise NirImportError(f"{path}: graph {where or '/'} has no nodes")
                for name, sub in group["nodes"].items():
                    walk(sub, f"{where}/{name}")
        walk(f["node"], "")


def read_nir(path: str | Path):
    """``nir.read`` after the type walk; errors name the file."""
    import nir
    path = Path(path)
    if not path.exists():
        raise NirImportError(f"{path}: no such file")
    _check_types(path)
    if not hasattr(nir, "read"):
        raise NirImportError(f"{path}: the module 'nir' found at {getattr(nir, '__file__', '?')} is not the NIR package "
                             "(a folder named 'nir' on the Python path shadows it)")
    try:
        return nir.read(path)
    except Exception as e:  # nir raises AssertionError/ValueError/KeyError on malformed nodes
        raise NirImportError(f"{path}: NIR reader rejected the file: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------------- helpers
def _arr(node, name: str, where: str) -> np.ndarray:
    v = getattr(node, name, None)
    if v is None:
        raise NirImportError(f"{where}: parameter {name} is missing")
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise NirImportError(f"{where}: parameter {name} contains NaN or infinity")
    return a


def _fit(a: np.ndarray, shape: tuple[int, ...], where: str, name: str) -> np.ndarray:
    """A neuron parameter as a scalar or the population shape (size-1 arrays are scalars)."""
    if a.size == 1:
        return np.array(float(a.reshape(-1)[0]))
    if a.size != int(np.prod(shape)):
        raise NirImportError(f"{where}: parameter {name} has shape {a.shape} ({a.size} values), but the node receives "
                             f"{int(np.prod(shape))} inputs (shape {shape})")
    a = a.reshape(shape)
    return np.array(float(a.flat[0])) if np.all(a == a.flat[0]) else a


def _pair(v, where: str, name: str) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    if a.size == 1:
        a = np.array([a[0], a[0]])
    if a.size != 2 or np.any(a != np.round(a)) or np.any(a < 0):
        raise NirImportError(f"{where}: {name} = {np.asarray(v).tolist()} must be one or two non-negative integers")
    return int(a[0]), int(a[1])


@dataclass
class _Op:
    """One linear NIR node applied to a tensor of shape ``shape_in``."""

    name: str
    kind: str
    node: object
    shape_in: tuple[int, ...]
    shape_out: tuple[int, ...]


@dataclass
class _Chain:
    source: str                   # IR source node (input or population)
    ops: list[_Op] = field(default_factory=list)
    delay: float = 0.0            # in seconds (NIR Delay)


# --------------------------------------------------------------------------------- linear ops
def _linear_op(name: str, node, tname: str, shape: tuple[int, ...]) -> _Op:
    where = f"node {name!r} ({tname})"
    if tname in ("Affine", "Linear"):
        w = _arr(node, "weight", where)
        if w.ndim != 2 or w.shape[1] != int(np.prod(shape)):
            raise NirImportError(f"{where}: weight shape {w.shape} does not fit an input of {int(np.prod(shape))} values "
                                 f"(shape {shape})")
        if tname == "Affine" and _arr(node, "bias", where).reshape(-1).shape[0] != w.shape[0]:
            raise NirImportError(f"{where}: bias has {np.asarray(node.bias).size} values for {w.shape[0]} outputs")
        return _Op(name, tname, node, shape, (w.shape[0],))
    if tname in ("Conv1d", "Conv2d"):
        w = _arr(node, "weight", where)
        nd = 1 if tname == "Conv1d" else 2
        if w.ndim != nd + 2:
            raise NirImportError(f"{where}: weight shape {w.shape} is not {nd + 2}-d")
        if len(shape) != nd + 1:
            raise NirImportError(f"{where}: input shape {shape} is not (C, {'L' if nd == 1 else 'H, W'})")
        groups = int(np.asarray(node.groups).reshape(-1)[0])
        if shape[0] != w.shape[1] * groups:
            raise NirImportError(f"{where}: weight {w.shape} with groups={groups} does not fit {shape[0]} input channels")
        if isinstance(node.padding, str):
            raise NirImportError(f"{where}: padding {node.padding!r} is not supported (give integers)")
        st, pd, dl = (np.asarray(getattr(node, k)).reshape(-1) for k in ("stride", "padding", "dilation"))
        st, pd, dl = (np.resize(a, nd).astype(int) for a in (st, pd, dl))
        out = [(shape[1 + i] + 2 * pd[i] - dl[i] * (w.shape[2 + i] - 1) - 1) // st[i] + 1 for i in range(nd)]
        if min(out) < 1:
            raise NirImportError(f"{where}: output size {out} from input {shape} is empty")
        return _Op(name, tname, node, shape, (w.shape[0], *out))
    if tname in ("SumPool2d", "AvgPool2d"):
        if len(shape) != 3:
            raise NirImportError(f"{where}: input shape {shape} is not (C, H, W)")
        k, s, p = (_pair(getattr(node, a), where, a) for a in ("kernel_size", "stride", "padding"))
        if min(k) < 1 or min(s) < 1:
            raise NirImportError(f"{where}: kernel_size {k} and stride {s} must be >= 1")
        out = [(shape[1 + i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)]
        return _Op(name, tname, node, shape, (shape[0], *out))
    if tname == "Flatten":
        start, end = int(node.start_dim), int(node.end_dim)
        n = len(shape)
        s0, e0 = start % n if n else 0, end % n if n else 0
        if s0 > e0:
            raise NirImportError(f"{where}: start_dim {start} > end_dim {end} for input shape {shape}")
        new = shape[:s0] + (int(np.prod(shape[s0:e0 + 1])),) + shape[e0 + 1:]
        return _Op(name, tname, node, shape, tuple(int(v) for v in new))
    if tname == "Scale":
        s = _arr(node, "scale", where)
        if s.size != 1 and s.size != int(np.prod(shape)) and not (s.ndim == 1 and s.shape[0] == shape[0]):
            raise NirImportError(f"{where}: scale shape {s.shape} does not fit input shape {shape}")
        return _Op(name, tname, node, shape, shape)
    if tname == "Delay":
        d = _arr(node, "delay", where)
        if np.any(d < 0) or not np.all(d == d.reshape(-1)[0]):
            raise NirImportError(f"{where}: delay must be one non-negative value for all neurons, got {np.unique(d)[:4]}")
        return _Op(name, tname, node, shape, shape)
    raise NirImportError(f"{where}: not a linear node")  # pragma: no cover - guarded by the caller


def _apply(ops: list[_Op], x):
    """Apply the chain to a float64 batch (B, *shape) with torch; returns (B, *shape_out)."""
    import torch
    import torch.nn.functional as F
    for op in ops:
        n, B = op.node, x.shape[0]
        if op.kind in ("Affine", "Linear"):
            w = torch.as_tensor(np.asarray(n.weight, np.float64))
            x = x.reshape(B, -1) @ w.T
            if op.kind == "Affine":
                x = x + torch.as_tensor(np.asarray(n.bias, np.float64).reshape(-1))
        elif op.kind in ("Conv1d", "Conv2d"):
            w = torch.as_tensor(np.asarray(n.weight, np.float64))
            nd = w.ndim - 2
            kw = dict(stride=tuple(np.resize(np.asarray(n.stride).reshape(-1), nd).astype(int)),
                      padding=tuple(np.resize(np.asarray(n.padding).reshape(-1), nd).astype(int)),
                      dilation=tuple(np.resize(np.asarray(n.dilation).reshape(-1), nd).astype(int)),
                      groups=int(np.asarray(n.groups).reshape(-1)[0]))
            b = torch.as_tensor(np.asarray(n.bias, np.float64).reshape(-1)) if getattr(n, "bias", None) is not None else None
            x = (F.conv1d if nd == 1 else F.conv2d)(x.reshape((B,) + op.shape_in), w, b, **kw)
        elif op.kind in ("SumPool2d", "AvgPool2d"):
            k, s, p = (tuple(_pair(getattr(n, a), op.name, a)) for a in ("kernel_size", "stride", "padding"))
            x = F.avg_pool2d(x.reshape((B,) + op.shape_in), k, s, p, count_include_pad=True)
            if op.kind == "SumPool2d":
                x = x * (k[0] * k[1])
        elif op.kind == "Scale":
            s = np.asarray(n.scale, np.float64)
            s = s.reshape(-1) if s.size == 1 else (s.reshape((op.shape_in[0],) + (1,) * (len(op.shape_in) - 1))
                                                   if s.ndim == 1 and s.shape[0] == op.shape_in[0] and s.size != int(np.prod(op.shape_in))
                                                   else s.reshape(op.shape_in))
            x = x.reshape((B,) + op.shape_in) * torch.as_tensor(s)
        x = x.reshape((B,) + op.shape_out)
    return x


# ------------------------------------------------------------------------------------- neurons
@dataclass
class _NeuronMap:
    """An IR neuron plus how incoming current and chain bias enter it."""

    neuron: object
    gain: np.ndarray               # multiplies every incoming current (scalar or population shape)
    bias_field: str                # where gain * chain bias goes: 'bias' or 'current_bias'
    payload: SpikePayload = field(default_factory=SpikePayload)
    notes: list[str] = field(default_factory=list)


def _decay(conv: Convention, tau: np.ndarray, dt: float, where: str, name: str) -> np.ndarray:
    """Fraction lost per step, a in (0, 1]: v <- (1 - a) v + ..."""
    if np.any(tau <= 0):
        raise NirImportError(f"{where}: {name} must be > 0, min {tau.min():.6g}")
    if conv.tau == "exp":
        a = 1.0 - np.exp(-1.0 / tau)
    elif conv.tau == "norse":
        a = dt * (dt / tau)
    else:
        a = dt / tau
    if np.any(a > 1) or np.any(a < 0):
        raise NirImportError(f"{where}: {name} = {tau.min():.6g} gives a decay of {a.max():.6g} per step with dt = {dt} "
                             f"under the {conv.name} convention (must lie in [0, 1]; check --dt / --convention)")
    return a


def _reset_fields(conv: Convention, reset: str | None, v_reset: np.ndarray, where: str) -> dict:
    mode = reset or conv.reset
    if np.any(v_reset != 0):
        raise NirImportError(f"{where}: v_reset = {np.unique(v_reset)[:4].tolist()} is not 0; spikeport's neurons reset to "
                             "zero or by subtraction")
    timing = conv.reset_timing if mode == conv.reset else "fire"
    return dict(reset=mode, compare=conv.compare), timing


def _neuron(name: str, node, tname: str, shape: tuple[int, ...], conv: Convention, dt: float | None,
            reset: str | None) -> _NeuronMap:
    where = f"node {name!r} ({tname})"
    P = lambda key: _fit(_arr(node, key, where), shape, where, key)  # noqa: E731

    def need_dt() -> float:
        if dt is None:
            raise NirImportError(f"{where}: the {conv.name} convention needs the step length: pass --dt")
        return dt

    if tname in ("IF", "I"):
        r = P("r")
        g = r * need_dt() if conv.if_dt else r
        if tname == "I":
            return _NeuronMap(Readout(), g, "bias")
        th = P("v_threshold")
        if np.any(th <= 0):
            raise NirImportError(f"{where}: v_threshold must be > 0, min {th.min():.6g}")
        rf, _ = _reset_fields(conv, reset, P("v_reset"), where)
        if conv.multi_spike and (reset or conv.reset) == "subtract":
            return _NeuronMap(MultiSpikeIF(threshold=th, v_init=np.array(0.0), n_pos=MULTI_SPIKE_MAX, n_neg=0), g, "bias",
                              SpikePayload(kind="graded", bits=8, min_level=0, max_level=MULTI_SPIKE_MAX),
                              [f"multi-spike: floor(v / threshold) events per step, capped at {MULTI_SPIKE_MAX}"])
        return _NeuronMap(IF(threshold=th, **rf), g, "bias")
    if tname == "Threshold":
        th = P("threshold")
        if np.any(th <= 0):
            raise NirImportError(f"{where}: threshold must be > 0, min {th.min():.6g}")
        return _NeuronMap(CubaLIF(threshold=th, du=1.0, dv=1.0, reset="zero", compare=conv.compare), np.array(1.0), "bias")
    if tname in ("LIF", "LI"):
        a = _decay(conv, P("tau"), need_dt() if conv.tau != "exp" else 1.0, where, "tau")
        a = np.array(float(a)) if a.ndim == 0 else a
        if np.unique(a).size > 1:
            raise NirImportError(f"{where}: tau varies across neurons; spikeport's decay is one value per population")
        a0 = float(a.reshape(-1)[0])
        r, vl = P("r"), P("v_leak")
        gain = a0 * r if conv.tau != "exp" else a0 * np.ones_like(r)      # sinabs LIF: (1 - alpha) * I
        if tname == "LI":
            return _NeuronMap(CubaLI(du=1.0, dv=a0, bias=np.asarray(a0 * vl)), gain, "bias")
        if conv.multi_spike:
            raise NirImportError(f"{where}: a leaky multi-spike neuron (sinabs LIF) has no spikeport model; "
                                 "import with --convention spec to treat it as a single-spike LIF")
        th = P("v_threshold")
        if np.any(th <= 0):
            raise NirImportError(f"{where}: v_threshold must be > 0, min {th.min():.6g}")
        rf, timing = _reset_fields(conv, reset, P("v_reset"), where)
        return _NeuronMap(CubaLIF(threshold=th, bias=np.asarray(a0 * vl), du=1.0, dv=a0, reset_timing=timing, **rf), gain, "bias")
    if tname in ("CubaLIF", "CubaLI"):
        t = need_dt() if conv.tau != "exp" else 1.0
        a = _decay(conv, P("tau_mem"), t, where, "tau_mem")
        b = _decay(conv, P("tau_syn"), t, where, "tau_syn")
        if np.unique(a).size > 1 or np.unique(b).size > 1:
            raise NirImportError(f"{where}: tau_mem / tau_syn vary across neurons; spikeport's decays are one value per population")
        a0, b0 = float(np.asarray(a).reshape(-1)[0]), float(np.asarray(b).reshape(-1)[0])
        r, vl, w_in = P("r"), P("v_leak"), P("w_in")
        gain = a0 * r * (b0 * w_in if conv.syn_gain else 1.0)
        if tname == "CubaLI":
            return _NeuronMap(CubaLI(du=b0, dv=a0, bias=np.asarray(a0 * vl)), gain, "current_bias" if b0 < 1 else "bias")
        th = P("v_threshold")
        if np.any(th <= 0):
            raise NirImportError(f"{where}: v_threshold must be > 0, min {th.min():.6g}")
        rf, timing = _reset_fields(conv, reset, P("v_reset"), where)
        return _NeuronMap(CubaLIF(threshold=th, bias=np.asarray(a0 * vl), du=b0, dv=a0, reset_timing=timing, **rf), gain,
                          "current_bias" if b0 < 1 else "bias")
    raise NirImportError(f"{where}: not a neuron node")  # pragma: no cover


# --------------------------------------------------------------------------------- projections
def _scaled(w: np.ndarray, gain: np.ndarray, rows: int) -> np.ndarray:
    """Multiply a Dense weight's rows by the target gain."""
    g = np.broadcast_to(np.asarray(gain, np.float64).reshape(-1) if np.ndim(gain) else gain, (rows,))
    return w * g.reshape(-1, 1)


def _uniform_per_channel(gain: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The gain as one value per channel (C,), or None when it varies inside a channel."""
    g = np.broadcast_to(np.asarray(gain, np.float64), shape).reshape(shape[0], -1)
    return g[:, 0].copy() if np.all(g == g[:, :1]) else None


def _projection(pname: str, chain: _Chain, src_shape, dst_name: str, dst_shape, gain, dt, where_dst: str):
    """(IR projection, chain bias over dst_shape) for one chain; delays in steps."""
    import torch
    delay = 0
    if chain.delay:
        if dt is None:
            raise NirImportError(f"{where_dst}: a Delay node on its input needs --dt to become steps")
        steps = chain.delay / dt
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise NirImportError(f"{where_dst}: delay {chain.delay} s is not a whole number of steps of dt = {dt}")
        delay = int(round(steps))
    weighted = [op for op in chain.ops if op.kind not in ("Flatten", "Delay")]
    n_out = int(np.prod(dst_shape))
    bias = _apply(chain.ops, torch.zeros((1,) + tuple(src_shape), dtype=torch.float64)).reshape(-1).numpy()
    bias = bias.reshape(dst_shape) if np.any(bias) else None
    common = dict(source=chain.source, target=dst_name, delay=delay)
    if not weighted:
        if tuple(src_shape) == tuple(dst_shape):
            return Identity(pname, weight=np.asarray(gain, np.float64).copy(), **common), bias
        return Dense(pname, weight=_scaled(np.eye(n_out), gain, n_out), **common), bias
    if len(weighted) == 1 and weighted[0].kind == "Scale" and tuple(src_shape) == tuple(dst_shape):
        sc = np.broadcast_to(np.asarray(weighted[0].node.scale, np.float64).reshape(-1) if np.size(weighted[0].node.scale) == 1
                             else np.asarray(weighted[0].node.scale, np.float64).reshape(dst_shape)
                             if np.size(weighted[0].node.scale) == n_out else
                             np.asarray(weighted[0].node.scale, np.float64).reshape((dst_shape[0],) + (1,) * (len(dst_shape) - 1)),
                             dst_shape) * np.broadcast_to(np.asarray(gain, np.float64), dst_shape)
        flat = sc.reshape(dst_shape[0], -1)
        w = (np.array(float(sc.flat[0])) if np.all(sc == sc.flat[0]) else
             flat[:, 0].copy() if np.all(flat == flat[:, :1]) else sc.copy())
        return Identity(pname, weight=w, **common), bias
    if len(weighted) == 1 and weighted[0].kind in ("Affine", "Linear"):
        w = np.asarray(weighted[0].node.weight, np.float64)
        return Dense(pname, weight=_scaled(w, gain, n_out), **common), bias
    if len(weighted) == 1 and weighted[0].kind in ("Conv2d", "SumPool2d", "AvgPool2d"):
        op = weighted[0]
        g = _uniform_per_channel(gain, tuple(dst_shape)) if len(dst_shape) >= 2 else None
        if g is not None and tuple(op.shape_out) == tuple(dst_shape) and tuple(op.shape_in) == tuple(src_shape):
            n = op.node
            if op.kind in ("Conv2d", "Conv1d"):
                w = np.asarray(n.weight, np.float64)
                nd = w.ndim - 2
                res = lambda k: tuple(np.resize(np.asarray(getattr(n, k)).reshape(-1), nd).astype(int))  # noqa: E731
                st, pd, dl = res("stride"), res("padding"), res("dilation")
                return Conv2d(pname, weight=w * g.reshape(-1, 1, 1, 1), stride=st, padding=pd, dilation=dl,
                              groups=int(np.asarray(n.groups).reshape(-1)[0]), **common), bias
            k, s, p = (_pair(getattr(n, a), op.name, a) for a in ("kernel_size", "stride", "padding"))
            C = op.shape_in[0]
            unit = 1.0 if op.kind == "SumPool2d" else 1.0 / (k[0] * k[1])
            w = np.full((C, 1) + k, unit) * g.reshape(-1, 1, 1, 1)
            return Conv2d(pname, weight=w, stride=s, padding=p, groups=C, **common), bias
    # several weighted nodes, or a Conv1d (IR convolutions are 2-d): one dense matrix by probing
    n_in = int(np.prod(src_shape))
    if n_in * n_out > DENSE_LIMIT:
        raise NirImportError(f"{where_dst}: the chain {' -> '.join(op.name for op in chain.ops)} composes into a "
                             f"{n_out} x {n_in} matrix, above the limit of {DENSE_LIMIT} entries; put a neuron between them")
    eye = torch.eye(n_in, dtype=torch.float64).reshape((n_in,) + tuple(src_shape))
    out = _apply(chain.ops, eye).reshape(n_in, -1).numpy()
    w = (out - (bias.reshape(1, -1) if bias is not None else 0.0)).T
    return Dense(pname, weight=_scaled(w, gain, n_out), **common), bias


# ------------------------------------------------------------------------------------- import
def _edges(graph) -> tuple[dict, dict]:
    preds: dict[str, list[str]] = {k: [] for k in graph.nodes}
    succs: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        for end in (a, b):
            if end not in graph.nodes:
                raise NirImportError(f"edge ({a!r}, {b!r}) names unknown node {end!r}")
        preds[b].append(a)
        succs[a].append(b)
    return preds, succs


def import_nir(path: str | Path, *, convention: str = "spec", dt: float | None = None, reset: str | None = None) -> Network:
    """Read ``path`` and return a float IR network (inputs carry spikes, coding C1).

    ``convention``: one of :data:`CONVENTIONS`; ``dt`` overrides its step length; ``reset`` ('zero' or
    'subtract') overrides its reset mode. Raises :class:`NirImportError` naming the node and its type.
    """
    import networkx as nx
    import nir
    path = Path(path)
    if convention not in CONVENTIONS:
        raise NirImportError(f"--convention {convention!r}: must be one of {', '.join(CONVENTIONS)}")
    if reset not in (None, "zero", "subtract"):
        raise NirImportError(f"--reset {reset!r}: must be 'zero' or 'subtract'")
    if dt is not None and not (math.isfinite(dt) and dt > 0):
        raise NirImportError(f"--dt {dt}: must be a positive number")
    conv = CONVENTIONS[convention]
    graph = read_nir(path)
    gmeta = {k: _text(v) for k, v in (getattr(graph, "metadata", None) or {}).items()}
    written = gmeta.get("spikeport_dt")
    step = dt if dt is not None else (float(written) if written is not None else conv.dt)
    try:
        return _build(graph, conv, step, reset, path, nx, nir, gmeta)
    except NirImportError as e:
        msg = str(e)
        raise NirImportError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def _build(graph, conv: Convention, step, reset, path: Path, nx, nir, gmeta: dict) -> Network:
    types = {k: type(v).__name__ for k, v in graph.nodes.items()}
    for k, t in types.items():
        if t == "NIRGraph":
            raise NirImportError(f"node {k!r} (NIRGraph): nested graphs (recurrent layers) are not supported")
        if t not in KNOWN_TYPES:
            raise NirImportError(f"node {k!r} has unsupported type {t}; spikeport imports {', '.join(KNOWN_TYPES)}")
    preds, succs = _edges(graph)
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from(graph.edges)
    if not nx.is_directed_acyclic_graph(g):
        cyc = [e[0] for e in nx.find_cycle(g)]
        raise NirImportError(f"the graph has a cycle through {cyc} (recurrent connections are not supported)")
    order = list(nx.lexicographical_topological_sort(g))
    net = Network(coding=str(gmeta.get("spikeport_coding", "C1")))
    own_inputs = json.loads(gmeta["spikeport_inputs"]) if "spikeport_inputs" in gmeta else {}
    ir_name = {k: k.replace("/", ".") or "node" for k in graph.nodes}
    shapes: dict[str, tuple[int, ...]] = {}
    chains: dict[str, list[_Chain]] = {}       # NIR node -> chains arriving at it (linear nodes, neurons, outputs)
    outputs, mapping, notes = [], {}, []
    n_proj = 0
    for k in order:
        node, t = graph.nodes[k], types[k]
        where = f"node {k!r} ({t})"
        if t == "Input":
            if preds[k]:
                raise NirImportError(f"{where}: an input has incoming edges {preds[k]}")
            shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
            if not shape or min(shape) < 1:
                raise NirImportError(f"{where}: shape {shape} must be non-empty and positive")
            spec = own_inputs.get(k)
            net.add(Input(ir_name[k], shape=shape, coding=spec["coding"] if spec else "spikes",
                          payload=_dataclass(SpikePayload, spec["payload"], where) if spec else SpikePayload()))
            shapes[k] = shape
            mapping[k] = {"type": t, "ir": ir_name[k]}
            for s in succs[k]:
                chains.setdefault(s, []).append(_Chain(ir_name[k]))
            continue
        incoming = chains.get(k, [])
        if not incoming:
            raise NirImportError(f"{where}: no input reaches this node")
        if t in LINEAR_TYPES:
            if len(incoming) > 1:
                raise NirImportError(f"{where}: a linear node with {len(incoming)} incoming edges {preds[k]} is not supported "
                                     "(sum them at a neuron instead)")
            ch = incoming[0]
            shape = _chain_shape(ch, net, shapes_ir := {n.name: tuple(n.shape) for n in net.nodes() if hasattr(n, "shape")})
            op = _linear_op(k, node, t, shape)
            new = _Chain(ch.source, ch.ops + [op], ch.delay)
            if t == "Delay":
                new.delay += float(np.asarray(node.delay).reshape(-1)[0])
            mapping[k] = {"type": t, "ir": "folded into the projection(s) into the next neuron"}
            for s in succs[k]:
                chains.setdefault(s, []).append(_Chain(new.source, list(new.ops), new.delay))
            if not succs[k]:
                raise NirImportError(f"{where}: leads nowhere")
            continue
        if t == "Output":
            for ch in incoming:
                if ch.ops:
                    raise NirImportError(f"{where}: fed by {ch.ops[-1].name!r} ({ch.ops[-1].kind}); spikeport's outputs are "
                                         "neuron populations (end the graph with a neuron node)")
                outputs.append(ch.source)
            mapping[k] = {"type": t, "ir": [ch.source for ch in incoming]}
            continue
        # a neuron node
        shapes_ir = {n.name: tuple(n.shape) for n in net.nodes() if hasattr(n, "shape")}
        out_shapes = {_chain_shape(ch, net, shapes_ir) for ch in incoming}
        if len({int(np.prod(s)) for s in out_shapes}) != 1:
            raise NirImportError(f"{where}: incoming edges deliver different sizes {sorted(out_shapes)}")
        shape = max(out_shapes, key=len)
        own = _spikeport_neuron(k, node, t, shape)
        nm = own[0] if own else _neuron(k, node, t, shape, conv, step, reset)
        pop = Population(ir_name[k], shape=shape, neuron=nm.neuron, payload=nm.payload, source=k, **(own[1] if own else {}))
        net.add(pop)
        total_bias = None
        for ch in incoming:
            n_proj += 1
            pname = f"{ir_name[k]}.in{n_proj}" if len(incoming) > 1 else f"{ir_name[k]}.in"
            src_shape = shapes_ir[ch.source]
            proj, bias = _projection(pname, ch, src_shape, ir_name[k], shape, nm.gain, step, where)
            net.add(proj)
            if bias is not None and not own:      # spikeport's own metadata already holds the exact biases
                b = bias.reshape(shape) * np.broadcast_to(np.asarray(nm.gain, np.float64), shape)
                total_bias = b if total_bias is None else total_bias + b
        if total_bias is not None:
            m = pop.neuron
            field_name = nm.bias_field if hasattr(m, nm.bias_field) else "bias"
            cur = np.broadcast_to(np.asarray(getattr(m, field_name), np.float64), shape) + total_bias
            setattr(m, field_name, np.array(float(cur.flat[0])) if np.all(cur == cur.flat[0]) else np.array(cur))
        if nm.notes:
            notes += [f"{k}: {n}" for n in nm.notes]
        mapping[k] = {"type": t, "ir": ir_name[k], "neuron": type(nm.neuron).__name__}
        for s in succs[k]:
            chains.setdefault(s, []).append(_Chain(ir_name[k]))
    if not outputs:
        sinks = [ir_name[k] for k in order if types[k] in NEURON_TYPES and not succs[k]]
        outputs = sinks
    if not outputs:
        raise NirImportError("no Output node fed by a neuron node")
    net.outputs = list(dict.fromkeys(outputs))
    if "spikeport_outputs" in gmeta:
        net.outputs = [o for o in json.loads(gmeta["spikeport_outputs"]) if o in net.outputs] or net.outputs
    net.meta["nir"] = {
        "file": str(path), "nir_version": str(getattr(nir, "version", "")), "convention": conv.name, "dt": step,
        "reset": reset or conv.reset, "reset_timing": conv.reset_timing if (reset or conv.reset) == conv.reset else "fire",
        "compare": conv.compare, "multi_spike": conv.multi_spike, "tau_encoding": conv.tau, "convention_note": conv.note,
        "nodes": mapping, "notes": notes, "written_by_spikeport": bool(gmeta),
    }
    net.meta["source_model"] = str(path)
    try:
        net.validate(str(path))
    except ValueError as e:
        raise NirImportError(f"the imported graph is invalid: {e}") from None
    return net


def _text(v):
    v = v[()] if hasattr(v, "shape") and getattr(v, "shape", None) == () else v
    return v.decode() if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v)


def _dataclass(cls, d: dict, where: str):
    """A dataclass from JSON written by spikeport's NIR export (known fields only; lists become arrays)."""
    names = {f.name for f in fields(cls)}
    bad = set(d) - names - {"type"}
    if bad:
        raise NirImportError(f"{where}: spikeport metadata names unknown {cls.__name__} fields {sorted(bad)}")
    kw = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) or (isinstance(v, (int, float)) and not isinstance(v, bool)
              and k in getattr(cls, "array_fields", ())) else v) for k, v in d.items() if k != "type"}
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise NirImportError(f"{where}: spikeport metadata does not fit {cls.__name__}: {e}") from None


def _spikeport_neuron(name: str, node, tname: str, shape):
    """The exact IR neuron spikeport's NIR export stored in the node's metadata, or None."""
    meta = getattr(node, "metadata", None) or {}
    if "spikeport_neuron" not in meta:
        return None
    where = f"node {name!r} ({tname})"
    try:
        d = json.loads(_text(meta["spikeport_neuron"]))
        p = json.loads(_text(meta.get("spikeport_population", "{}")))
    except (json.JSONDecodeError, TypeError) as e:
        raise NirImportError(f"{where}: unreadable spikeport metadata ({e})") from None
    cls = NEURON_REGISTRY.get(d.get("type"))
    if cls is None:
        raise NirImportError(f"{where}: spikeport metadata names neuron model {d.get('type')!r}; known {sorted(NEURON_REGISTRY)}")
    neuron = _dataclass(cls, d, where)
    try:
        neuron.validate(where, tuple(shape))
    except ValueError as e:
        raise NirImportError(str(e)) from None
    payload = _dataclass(SpikePayload, p["payload"], where) if "payload" in p else SpikePayload()
    extra = {k: (np.asarray(p[k], np.float64) if k.startswith("decode") else p[k]) for k in ("decode_scale", "decode_offset", "t_start")
             if k in p}
    return _NeuronMap(neuron, np.array(1.0), "bias", payload), extra


def _chain_shape(ch: _Chain, net: Network, shapes_ir: dict) -> tuple[int, ...]:
    return tuple(ch.ops[-1].shape_out) if ch.ops else tuple(shapes_ir[ch.source])


__all__ = ["NirImportError", "import_nir", "read_nir", "CONVENTIONS"]
