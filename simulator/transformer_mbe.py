"""Float simulation of MBE Transformers in staged coding C3 (methods.md sections 0 and 3).

In C3 the input enters once; every MBE stage (a population of ``ir.MBE`` neurons, or the identity
MBE neurons of an MBE product operator) runs T steps on the complete value its inputs forwarded
and forwards its own result after those T steps. Nothing else in such a network depends on the
step: Relay / Readout populations pass their summed input plus their bias once, the exponent /
mantissa operators act on forwarded values. So the network is simulated stage by stage, in
topological order: each MBE stage runs its T steps explicitly (threshold, reset, the emitted
intensities, counted per basis), every other node is evaluated once on its inputs' values. The
stage of a node is the number of MBE stages on its longest input path; a network of depth D
takes D*T steps (``SimResult.steps_run``); ``pipeline=True`` runs batches through the stages as a
pipeline (batch k+1 in stage 1 while batch k is in stage 2; simulator/pipeline_mbe.py), which
changes no value.

Counts (``MBECounts``): events of every MBE population (every firing basis is one event), spikes
of the identity neurons of each product operator and the coinciding spike pairs of its product
form (one accumulate of D_pq each, paper 001's count), element counts of the exponent/mantissa
operators: what ``report.mbe_energy`` turns into energy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..ir import operators as O
from ..ir import operators_mbe as OM
from ..ir.graph import Network
from ..ir.neurons_mbe import MBE, MBE_MODELS, MBETable
from ..ir.nodes import Conv2d, Dense, Identity, Input, Operator, Population, Readout, expand_channel
from .operators import OperatorKernel
from .result import LayerStats, SimResult

LOG2E = 1.0 / float(np.log(2.0))
STATELESS = (O.Rearrange, O.Concat, O.Mean)
SUPPORTED = ("Input ('once' or 'analog'), MBE / Relay / Readout populations, Dense / Conv2d / Identity / TokenDense, "
             "operators " + ", ".join(sorted(OM.MBE_OPERATOR_TYPES) + [c.__name__ for c in STATELESS]))


@dataclass
class MBECounts:
    """Events and operator work of a C3 MBE network, summed over the samples simulated.

    population_events  firing bases per MBE population (one event each)
    population_inputs  neurons x samples per MBE population (for the rate eta)
    product_spikes     identity-neuron spikes per product operator (both operands; neurons shared by
                       two products, LayerNorm's d, are counted once, at the first)
    product_pairs      coinciding spike pairs per product operator (accumulates of D_pq)
    product_outputs    output elements x samples per product operator
    operator_elements  output elements x samples per exponent/mantissa operator (by name)
    operator_rows      rows reduced x samples (max / sum over ``axis``) per Exp2Split / MantExp
    samples, timesteps, depth
    schedule           pipelined runs only: steps with and without the pipeline (pipeline_mbe.py)
    """

    population_events: dict[str, int] = field(default_factory=dict)
    population_inputs: dict[str, int] = field(default_factory=dict)
    product_spikes: dict[str, int] = field(default_factory=dict)
    product_pairs: dict[str, int] = field(default_factory=dict)
    product_outputs: dict[str, int] = field(default_factory=dict)
    operator_elements: dict[str, int] = field(default_factory=dict)
    operator_rows: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    timesteps: int = 0
    depth: int = 0
    schedule: dict = field(default_factory=dict)   # pipelined runs: simulator.pipeline_mbe.PipelineSchedule

    def add(self, key: str, name: str, v: int) -> None:
        d = getattr(self, key)
        d[name] = d.get(name, 0) + int(v)


def mbe_tables(neuron: MBE, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.as_tensor(a, device=device, dtype=dtype) for a in neuron.tables())


def run_mbe(x: torch.Tensor, tables) -> tuple[torch.Tensor, torch.Tensor]:
    """T steps of MBE neurons started from x (any shape): (f_hat without offset, firing bases per
    element), following ``ir.MBE``: u[0] = relu(+-x), s = [u >= V[t]], u -= s R[t], emit s D[t].

    A mirrored pair of branches (branch 1 = branch 0 with D negated: identity, tanh) runs branch 0
    on |x| and applies the sign, which is the same arithmetic: the branch an input does not drive
    never fires (relu of it is 0 < V)."""
    V, R, D = tables
    B, N, T = V.shape
    if B == 2 and torch.equal(V[0], V[1]) and torch.equal(R[0], R[1]) and torch.equal(D[0], -D[1]):
        out, fired = run_mbe(x.abs(), (V[:1], R[:1], D[:1]))
        return torch.where(x < 0, -out, out), fired
    parts = [torch.relu(x), torch.relu(-x)][:B]
    u = torch.stack(parts, dim=-1)[..., None].expand(*x.shape, B, N).clone()
    acc = torch.zeros_like(u)
    cnt = torch.zeros_like(u)
    for t in range(T):
        s = (u >= V[:, :, t]).to(u.dtype)
        u -= s * R[:, :, t]
        acc += s * D[:, :, t]
        cnt += s
    out = acc.sum(dim=(-2, -1))
    fired = cnt.sum(dim=(-2, -1)).to(torch.int64)
    return out, fired


def _project(proj, src: torch.Tensor, batch: int, dst_shape, w: torch.Tensor) -> torch.Tensor:
    if isinstance(proj, O.TokenDense):
        return src @ w.T
    if isinstance(proj, Dense):
        return (src.reshape(batch, -1) @ w.T).reshape((batch,) + tuple(dst_shape))
    if isinstance(proj, Conv2d):
        return F.conv2d(src, w, None, proj.stride, proj.padding, proj.dilation, proj.groups)
    if isinstance(proj, Identity):
        return src * w
    raise UnsupportedError(f"projection {proj.name!r}: {type(proj).__name__} is not simulated in C3 ({SUPPORTED})")


def check_mbe_network(net: Network, timesteps: int | None = None, quantized: bool = False) -> int:
    """Refuse what the C3 simulators cannot run (naming the node and why); returns T of the MBE stages.

    One check for both: the float simulator here (MBE neurons) and the bit-accurate one
    (``transformer_mbe_fixed.py``, ``quantized=True``: MBETable neurons, fixed-point operators)."""
    who = "simulate_mbe_fixed" if quantized else "simulate_mbe"
    if net.quantized and not quantized:
        raise UnsupportedError("simulate_mbe: the network is quantised (simulate_mbe_fixed runs it bit-accurately)")
    if quantized and not net.quantized:
        raise UnsupportedError("simulate_mbe_fixed: the network is not quantised (simulate_mbe runs float ones)")
    if net.coding != "C3":
        raise UnsupportedError(f"{who}: networks in staged coding C3 only, this one is {net.coding}")
    net.validate("simulate")
    neurons = (MBETable if quantized else MBE, O.Relay, Readout)
    Ts = set()
    for node in net.nodes():
        if isinstance(node, Input) and node.coding not in ("once", "analog"):
            raise UnsupportedError(f"input {node.name!r}: coding {node.coding!r} (C3 operator networks take the input once)")
        if isinstance(node, Population):
            if not isinstance(node.neuron, neurons):
                raise UnsupportedError(f"population {node.name!r}: neuron {type(node.neuron).__name__} is not simulated in "
                                       f"{'quantised ' if quantized else ''}C3 operator networks "
                                       f"({', '.join(c.__name__ for c in neurons)})")
            if isinstance(node.neuron, neurons[0]):
                Ts.add(int(node.neuron.timesteps))
        if isinstance(node, Operator):
            if not isinstance(node, tuple(OM.MBE_OPERATOR_TYPES.values()) + STATELESS):
                raise UnsupportedError(f"operator {node.name!r} ({type(node).__name__}): not simulated in C3 ({SUPPORTED})")
            if quantized and node.arithmetic not in ("fixed", "none"):
                raise UnsupportedError(f"operator {node.name!r}: arithmetic {node.arithmetic!r} in a quantised network")
            if isinstance(node, OM._IdentityPair):
                Ts.add(int(np.asarray(node.params["threshold_a"]).shape[2]) if quantized else int(node.timesteps))
        if getattr(node, "delay", 0):
            raise UnsupportedError(f"projection {node.name!r}: delay {node.delay} (C3 operator networks use delay 0)")
    if len(Ts) > 1:
        raise UnsupportedError(f"{who}: MBE stages with different T {sorted(Ts)}")
    T = Ts.pop() if Ts else int(timesteps or 1)
    if timesteps is not None and int(timesteps) != T:
        held = f"MBE tables of this network hold T = {T} steps" if quantized else \
            f"MBE neurons of this network were fitted for T = {T}"
        raise UnsupportedError(f"simulate: timesteps {timesteps}, but the {held} (each stage runs T steps; "
                               f"simulate with timesteps {T})")
    return T


def simulate_mbe(net: Network, x, timesteps: int | None = None, *, batch_size: int = 64, device=None,
                 dtype: torch.dtype = torch.float64, pipeline: bool = False) -> tuple[SimResult, MBECounts]:
    """Float C3 simulation of ``net`` (module docstring); returns the result and the counts.
    ``pipeline``: batches of ``batch_size`` samples flow through the stages as a pipeline
    (simulator/pipeline_mbe.py; identical results, ``counts.schedule`` gives the step counts)."""
    T = check_mbe_network(net, timesteps)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    order = list(net.nodes())
    depth = _stages(net, order)
    D = max(depth[o] for o in net.outputs)
    xs = torch.as_tensor(np.asarray(x))
    n = int(xs.shape[0])
    weights = {p.name: torch.as_tensor(np.asarray(p.weight), device=dev, dtype=dtype) for p in net.projections()}
    tables = {}
    for node in order:
        if isinstance(node, Population) and isinstance(node.neuron, MBE):
            tables[node.name] = mbe_tables(node.neuron, dev, dtype)
        elif isinstance(node, OM._IdentityPair):
            tables[node.name] = (mbe_tables(node.identity("a"), dev, dtype), mbe_tables(node.identity("b"), dev, dtype))
    counts = MBECounts(samples=n, timesteps=T, depth=D)
    decoded = {p.name: [] for p in net.populations()}
    events = {p.name: [] for p in net.populations() if isinstance(p.neuron, MBE)}
    starts = list(range(0, n, batch_size))

    def one(i, nodes=None, state=None):
        return _run_batch(net, order if nodes is None else nodes, weights, tables, xs[starts[i]:starts[i] + batch_size]
                          .to(dev, dtype), counts, dev, dtype, state)
    with torch.no_grad():
        if pipeline:
            from .pipeline_mbe import run_pipelined, stage_groups
            runs, sched = run_pipelined(one, len(starts), stage_groups(order, depth), T)
            counts.schedule = sched.to_json()
        else:
            runs = (one(i) for i in range(len(starts)))
        for vals, ev, _ in runs:
            for k in decoded:
                decoded[k].append(vals[k].cpu().numpy())
            for k in events:
                events[k].append(ev[k].cpu().numpy())
    activations = {k: np.concatenate(v) for k, v in decoded.items()}
    spike_counts = {k: np.concatenate(v) for k, v in events.items()}
    layers = {pop.name: LayerStats.counted(pop.size, np.sum(spike_counts[pop.name]) if pop.name in spike_counts else None, n, T).as_dict()
              for pop in net.populations()}
    out = activations[net.outputs[0]]
    result = SimResult(outputs=out, all_outputs={o: activations[o] for o in net.outputs},
                       predictions=out.reshape(n, -1).argmax(axis=1), spike_counts=spike_counts, layers=layers,
                       timesteps=T, steps_run=D * T, quantized=False, activations=activations)
    return result, counts


def _stages(net: Network, order) -> dict[str, int]:
    """Number of MBE stages on the longest path into (and including) each node."""
    depth: dict[str, int] = {}
    for node in order:
        if isinstance(node, Input):
            depth[node.name] = 0
        elif isinstance(node, Population):
            d = max((depth[p.source] for p in net.incoming(node.name)), default=0)
            depth[node.name] = d + (1 if isinstance(node.neuron, MBE_MODELS) else 0)   # float or integer tables
        elif isinstance(node, Operator):
            d = max((depth[i] for i in node.inputs), default=0)
            depth[node.name] = d + (1 if isinstance(node, OM._IdentityPair) else 0)
    return depth


def _run_batch(net, order, weights, tables, xb, counts: MBECounts, dev, dtype, state=None):
    """Evaluate the nodes ``order`` on one batch, continuing ``state`` (value, events, cache) of
    the earlier stages when given (the pipeline); returns the state."""
    batch = xb.shape[0]
    value, events, cache = state if state is not None else ({}, {}, {})
    for node in order:
        name = node.name
        if isinstance(node, Input):
            value[name] = xb
        elif isinstance(node, Population):
            shape = tuple(node.shape)
            cur = torch.zeros((batch,) + shape, device=dev, dtype=dtype)
            for p in net.incoming(name):
                cur = cur + _project(p, value[p.source], batch, shape, weights[p.name])
            bias = torch.as_tensor(expand_channel(node.neuron.bias, shape), device=dev, dtype=dtype)
            scale = torch.as_tensor(expand_channel(node.decode_scale, shape), device=dev, dtype=dtype)
            offset = torch.as_tensor(expand_channel(node.decode_offset, shape), device=dev, dtype=dtype)
            if isinstance(node.neuron, MBE):
                out, fired = run_mbe(cur + bias, tables[name])
                events[name] = fired
                counts.add("population_events", name, int(fired.sum()))
                counts.add("population_inputs", name, fired.numel())
                value[name] = out * scale + offset
            else:  # Relay / Readout: the input once plus the bias once (C3)
                value[name] = (cur + bias) * scale + offset if isinstance(node.neuron, Readout) else cur + bias
        elif isinstance(node, Operator):
            value[name] = _operator(node, [value[i] for i in node.inputs], tables.get(name), counts, batch, dev, dtype,
                                    cache)
    return value, events, cache


def _identity(src: str, scale: float, x: torch.Tensor, tabs, cache: dict):
    """The identity MBE neurons of operand ``src`` at range ``scale``: run once per batch and shared
    by the products reading the same value at the same range (LayerNorm's d in d*d and d*invstd)."""
    key = (src, float(scale))
    fresh = key not in cache
    if fresh:
        cache[key] = run_mbe(x, tabs)
    return cache[key] + (fresh,)


def _operator(op, ins, tabs, counts: MBECounts, batch, dev, dtype, cache: dict) -> torch.Tensor:
    if isinstance(op, STATELESS):
        return OperatorKernel(op, batch, dev, dtype).step(ins)
    name = op.name
    if isinstance(op, OM._IdentityPair):
        a, na, fresh_a = _identity(op.inputs[0], op.scale_a, ins[0], tabs[0], cache)
        b, nb, fresh_b = _identity(op.inputs[1], op.scale_b, ins[1], tabs[1], cache)
        counts.add("product_spikes", name, int(na.sum()) * fresh_a + int(nb.sum()) * fresh_b)
        if isinstance(op, OM.MBEMatMul):
            pairs = na.to(dtype) @ nb.to(dtype)
            out = (a @ b) * op.scale      # = sum_j sum_pq D_pq s_A s_B (sum of products = product of sums)
        else:
            pairs = na.to(dtype) * nb.to(dtype)
            out = a * b * op.scale
        counts.add("product_pairs", name, int(round(float(pairs.sum()))))
        counts.add("product_outputs", name, out.numel())
        return out
    counts.add("operator_elements", name, batch * int(np.prod(op.shape)))
    if isinstance(op, OM.Exp2Split):
        ax = op.axis % len(op.shape) + 1
        counts.add("operator_rows", name, batch * int(np.prod(op.shape)) // int(op.shape[op.axis]))
        y = (ins[0] - ins[0].amax(dim=ax, keepdim=True)) * (op.scale * LOG2E)
        whole = torch.floor(y)
        return whole if op.part == "int" else y - whole
    if isinstance(op, OM.MantExp):
        ax = op.axis % len(op.shape) + 1
        counts.add("operator_rows", name, batch * int(np.prod(op.shape)) // int(op.shape[op.axis]))
        v = ins[0].sum(dim=ax, keepdim=True) * op.scale + op.eps
        mant, expo = torch.frexp(v)
        if op.even:
            odd = (expo % 2) != 0
            mant = torch.where(odd, mant * 2, mant)
            expo = torch.where(odd, expo - 1, expo)
        out = mant if op.part == "mantissa" else expo.to(dtype)
        return out
    if isinstance(op, OM.Ldexp):
        k = op.exponent_scale * ins[1]
        return torch.ldexp(ins[0], k.to(dtype))
    raise UnsupportedError(f"operator {name!r}: no C3 kernel for {type(op).__name__}")


__all__ = ["MBECounts", "check_mbe_network", "run_mbe", "simulate_mbe"]
