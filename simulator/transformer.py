"""Float simulation of networks with typed operators (converted Transformers, C1 coding).

Every step, nodes run in topological order: the input presents its analog sample; a population
sums its incoming projections (all delay 0) and updates its neuron (MultiThreshold, Relay,
Readout); an operator steps its kernel (simulator/operators.py) on its inputs' values. A
population's value as seen by a projection is its emission (MT: the signed level with the
payload's ``neg_value`` applied; the outgoing weights carry ``theta1``); an operator reading a
population sees the decoded per-step value ``emission * decode_scale + decode_offset``. Network
dynamics do not depend on T, so one run yields the decoded outputs at several T (``checkpoints``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..ir import operators as O
from ..ir.graph import Network
from ..ir.nodes import IF, Conv2d, Dense, Identity, Input, Operator, Population, Readout, expand_channel
from .neurons import FloatIF
from .operators import MTKernel, OperatorKernel
from .result import LayerStats, SimResult

SUPPORTED = "Input (analog), MultiThreshold / IF (AIF's signed IF) / Relay / Readout populations, Dense / Conv2d / Identity / TokenDense, typed operators"


def has_operators(net: Network) -> bool:
    return bool(net.operators())


def _project(proj, src: torch.Tensor, batch: int, dst_shape: tuple[int, ...], w: torch.Tensor) -> torch.Tensor:
    if isinstance(proj, O.TokenDense):
        return src @ w.T
    if isinstance(proj, Dense):
        return (src.reshape(batch, -1) @ w.T).reshape((batch,) + dst_shape)
    if isinstance(proj, Conv2d):
        return F.conv2d(src, w, None, proj.stride, proj.padding, proj.dilation, proj.groups)
    if isinstance(proj, Identity):
        return src * w
    raise UnsupportedError(f"projection {proj.name!r}: {type(proj).__name__} is not simulated with operators ({SUPPORTED})")


def simulate_operators(net: Network, x, timesteps: int, *, checkpoints: tuple[int, ...] = (), batch_size: int = 64,
                       device=None, dtype: torch.dtype = torch.float32, record_spikes: bool = False,
                       checkpoint_events: dict | None = None
                       ) -> tuple[SimResult, dict[int, np.ndarray]]:
    """Float simulation of ``net`` for ``timesteps``; returns the result and, for each t in
    ``checkpoints`` (<= timesteps), the decoded output of ``net.outputs[0]`` after t steps.
    ``dtype`` float32 (default) or float64 for every value and state. ``record_spikes``: keep
    every MT population's signed levels per step, (N, T, *shape) int32, in ``SimResult.spikes``. A dict passed as
    ``checkpoint_events`` receives, for each checkpoint t, the events per sample (N,) of all spiking
    populations during the first t steps."""
    if net.quantized:
        raise UnsupportedError("bit-accurate simulation of networks with Transformer operators is not implemented "
                                  "yet; simulate the float network")
    if net.coding != "C1":
        raise UnsupportedError(f"operator networks are simulated in C1 coding only, this one is {net.coding}")
    net.validate("simulate")
    T = int(timesteps)
    if T < 1 or any(not 1 <= c <= T for c in checkpoints):
        raise ValueError(f"simulate: timesteps {T} must be >= 1 and checkpoints {checkpoints} within 1..T")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    order = list(net.nodes())
    for op in net.operators():
        if not isinstance(op, O.TypedOperator):
            raise UnsupportedError(f"operator {op.name!r} (op {op.op!r}): untyped operators are not simulated; "
                                      f"typed ones: {sorted(O.OPERATOR_TYPES)}")
    for node in order:
        if isinstance(node, Input) and node.coding != "analog":
            raise UnsupportedError(f"input {node.name!r}: coding {node.coding!r} (operator networks take analog input)")
        if isinstance(node, Population) and not isinstance(node.neuron, (O.MultiThreshold, IF, O.Relay, Readout)):
            raise UnsupportedError(f"population {node.name!r}: neuron {type(node.neuron).__name__} is not simulated "
                                      f"with operators ({SUPPORTED})")
        if getattr(node, "delay", 0) or getattr(node, "t_start", 0):
            raise UnsupportedError(f"{node.name!r}: delays and t_start are not simulated with operators")
    xs = torch.as_tensor(np.asarray(x))
    n = xs.shape[0]
    weights = {p.name: torch.as_tensor(np.asarray(p.weight), device=dev, dtype=dtype) for p in net.projections()}
    outs, checks = [], {c: [] for c in checkpoints}
    counts = {p.name: [] for p in net.populations() if isinstance(p.neuron, (O.MultiThreshold, IF))}
    decoded = {n.name: [] for n in list(net.populations()) + list(net.operators())}
    trains = {name: [] for name in counts} if record_spikes else None
    with torch.no_grad():
        for a in range(0, n, batch_size):
            xb = xs[a:a + batch_size].to(dev, dtype)
            res = _run_batch(net, order, weights, xb, T, set(checkpoints), dev, dtype, record_spikes)
            for name in trains or ():
                trains[name].append(res["trains"][name])
            for c in checkpoints:
                checks[c].append(res["checks"][c])
                if checkpoint_events is not None:
                    checkpoint_events.setdefault(c, []).append(res["events"][c])
            for name in counts:
                counts[name].append(res["counts"][name])
            for name in decoded:
                decoded[name].append(res["decoded"][name])
    activations = {k: np.concatenate(v) for k, v in decoded.items()}
    spike_counts = {k: np.concatenate(v) for k, v in counts.items()}
    out = activations[net.outputs[0]]
    layers = {pop.name: LayerStats.counted(pop.size, np.sum(spike_counts[pop.name]) if pop.name in spike_counts else None, n, T).as_dict()
              for pop in net.populations()}
    result = SimResult(outputs=out, all_outputs={o: activations[o] for o in net.outputs},
                       predictions=out.reshape(n, -1).argmax(axis=1), spike_counts=spike_counts, layers=layers,
                       timesteps=T, steps_run=T, quantized=False, activations=activations,
                       spikes={k: np.concatenate(v) for k, v in trains.items()} if trains is not None else None)
    if checkpoint_events is not None:
        checkpoint_events.update({c: np.concatenate(checkpoint_events[c]) for c in checkpoints})
    return result, {c: np.concatenate(v) for c, v in checks.items()}


def _run_batch(net, order, weights, xb, T, checkpoints, dev, dtype, record_spikes=False) -> dict:
    batch = xb.shape[0]
    kernels: dict[str, object] = {}
    biases: dict[str, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {}
    events: dict[str, torch.Tensor] = {}
    emit_scale: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for node in order:
        if isinstance(node, Population):
            shape = tuple(node.shape)
            if isinstance(node.neuron, O.MultiThreshold):
                kernels[node.name] = MTKernel(node.neuron, shape, batch, dev, dtype)
                events[node.name] = torch.zeros((batch,) + shape, device=dev, dtype=torch.int64)
            elif isinstance(node.neuron, IF):  # AIF / layer-wise signed IF: the float kernel of simulator/neurons.py
                kernels[node.name] = FloatIF(node, batch, dev, None, None)
                events[node.name] = torch.zeros((batch,) + shape, device=dev, dtype=torch.int64)
            else:
                biases[node.name] = torch.as_tensor(expand_channel(node.neuron.bias, shape), device=dev, dtype=dtype)
            sums[node.name] = torch.zeros((batch,) + shape, device=dev, dtype=dtype)
            emit_scale[node.name] = (torch.as_tensor(expand_channel(node.decode_scale, shape), device=dev, dtype=dtype),
                                     torch.as_tensor(expand_channel(node.decode_offset, shape), device=dev, dtype=dtype),
                                     float(node.payload.neg_value))
        elif isinstance(node, Operator):
            kernels[node.name] = OperatorKernel(node, batch, dev, dtype)
    incoming = {p.name: net.incoming(p.name) for p in net.populations()}
    trains = {k: torch.zeros((batch, T) + tuple(net[k].shape), dtype=torch.int32, device=dev)
              for k in events} if record_spikes else {}
    checks, ev = {}, {}
    out_name = net.outputs[0]
    for t in range(1, T + 1):
        emit: dict[str, torch.Tensor] = {}    # what projections see
        value: dict[str, torch.Tensor] = {}   # what operators see
        for node in order:
            name = node.name
            if isinstance(node, Input):
                emit[name] = value[name] = xb
            elif isinstance(node, Population):
                shape = tuple(node.shape)
                cur = torch.zeros((batch,) + shape, device=dev, dtype=dtype)
                for p in incoming[name]:
                    cur = cur + _project(p, emit[p.source], batch, shape, weights[p.name])
                scale, offset, neg = emit_scale[name]
                if isinstance(node.neuron, O.MultiThreshold):
                    s = kernels[name].step(cur)
                    events[name] += (s != 0).to(torch.int64)
                    if name in trains:
                        trains[name][:, t - 1] = s.to(torch.int32)
                    e = torch.where(s < 0, s * neg, s)
                    emit[name] = e
                    value[name] = e * scale + offset
                    sums[name] += value[name]
                elif isinstance(node.neuron, IF):  # state in float64; events +-1 (neg_value applied)
                    k = kernels[name]
                    s = k.step(cur.reshape(batch, -1).to(torch.float64))
                    events[name] += (s != 0).reshape((batch,) + shape).to(torch.int64)
                    if name in trains:
                        trains[name][:, t - 1] = s.reshape((batch,) + shape).to(torch.int32)
                    e = k.value(s).reshape((batch,) + shape).to(dtype)
                    emit[name] = e
                    value[name] = e * scale + offset
                    sums[name] += value[name]
                elif isinstance(node.neuron, O.Relay):
                    e = cur + biases[name]
                    emit[name] = e
                    value[name] = e * scale + offset
                    sums[name] += value[name]
                else:  # Readout: accumulates; decoded v(t)/t
                    sums[name] += cur + biases[name]
                    emit[name] = value[name] = cur + biases[name]
            elif isinstance(node, Operator):
                v = kernels[name].step([value[i] for i in node.inputs])
                emit[name] = value[name] = v
                sums[name] = v if name not in sums else sums[name] + v
        if t in checkpoints:
            checks[t] = _decode(net[out_name], sums[out_name], t).cpu().numpy()
            ev[t] = sum((e.reshape(batch, -1).sum(1) for e in events.values()),
                        torch.zeros(batch, dtype=torch.int64, device=dev)).cpu().numpy()
    decoded = {p.name: _decode(p, sums[p.name], T).cpu().numpy() for p in net.populations()}
    for op in net.operators():   # mean per-step output of every operator (fidelity compares them)
        decoded[op.name] = (sums[op.name] / T).cpu().numpy()
    return {"checks": checks, "events": ev, "decoded": decoded, "counts": {k: v.cpu().numpy() for k, v in events.items()},
            "trains": {k: v.cpu().numpy() for k, v in trains.items()}}


def _decode(pop: Population, total: torch.Tensor, t: int) -> torch.Tensor:
    """Mean per-step value; a Readout's decoded output also applies its decode scale and offset."""
    mean = total / t
    if isinstance(pop.neuron, Readout):
        scale = torch.as_tensor(expand_channel(pop.decode_scale, tuple(pop.shape)), device=total.device, dtype=total.dtype)
        offset = torch.as_tensor(expand_channel(pop.decode_offset, tuple(pop.shape)), device=total.device, dtype=total.dtype)
        return mean * scale + offset
    return mean
