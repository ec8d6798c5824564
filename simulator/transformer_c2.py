"""Float simulation of C2 (sum-coded) Transformer networks: ``--method stbif`` / ``pmsm`` on a ViT.

Same node walk as the C1 loop (simulator/transformer.py), with C2 semantics (ir/operators_c2.py):
the analog input, Relay / Readout biases and a Concat prefix are presented at t = 1 only; operators
are the C2 differential forms; a Readout's decoded output is ``sum_t out(t)`` (times its decode
scale, plus its offset). Neurons: ``STBIF`` (ST-BIF, one signed spike per step) and ``MultiSpikeIF``
(PMSM, one signed graded count per step).

Running sums, not telescoped differences. Every node keeps the running sum of what it has emitted
as the value that sum stands for, computed from its inputs' running sums: a Relay / Readout
``R(t) = sum_p W_p E_p(t) + b``, an operator ``F(S(t))`` (a product ``scale * S_A(t) S_B(t)``), a
neuron its integer level ``A(t) = sum_i n(i)``. Its emission at step t is ``R(t) - R(t-1)``. This is
the C2 network in exact arithmetic (``sum_{i<=t} O(i) = F(S(t))`` is an identity); in float it keeps
the rounding of telescoped sums out, so once every neuron's level equals its quantiser's level,
every running sum IS the float QANN's value bit for bit (:func:`float_qann`: the same network once,
each neuron replaced by its quantiser). Neurons read their running input in threshold units,
``y(t) = R_in(t) / theta + 1/2`` (ST-BIF's q(0) = 1/2; PMSM's v(0) / theta), and compare with integers:

    ST-BIF:  n = +1 if y >= A + 1 and A < n_max;  -1 if y < A and A > n_min;  else 0
    PMSM:    n = clamp(floor(y) - A, -n_neg, n_pos)

the incremental equations ``q += I/theta; q -= n`` with ``q = y - A`` (exact: A is an integer).

Counts per population: ``events`` (steps with a non-zero output: one graded event each) and
``spikes`` (sum of |n|: the paper's count of a graded output n as |n| spikes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UnsupportedError
from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.graph import Network
from ..ir.neurons_extra import MultiSpikeIF
from ..ir.nodes import Input, Operator, Population, Readout, expand_channel
from .operators import module_function
from .result import LayerStats, SimResult
from .transformer import _project

SUPPORTED_C2 = ("Input (analog), STBIF / MultiSpikeIF / Relay / Readout populations, TokenDense / Dense / Conv2d / "
                "Identity projections, C2 operators (LayerNormC2, GELUC2, SoftmaxC2, MatMulC2), Rearrange, Concat, Mean")


@dataclass
class C2Counts:
    """Per-population totals over the samples: events (non-zero outputs) and spikes (sum |n|)."""

    events: dict[str, int]
    spikes: dict[str, int]
    samples: int
    timesteps: int

    @property
    def total_events(self) -> int:
        return int(sum(self.events.values()))

    @property
    def total_spikes(self) -> int:
        return int(sum(self.spikes.values()))


class C2Neuron:
    """One ST-BIF or PMSM population on a batch: its level ``A`` (the sum of its outputs) and the
    threshold-unit reading ``y = R_in / theta + v0 / theta`` of its running input (module docstring)."""

    def __init__(self, model, shape, batch, device, dtype):
        self.stbif = isinstance(model, C2.STBIF)
        th = model.step if self.stbif else model.threshold
        self.theta = torch.as_tensor(expand_channel(th, shape), device=device, dtype=dtype)
        v0 = 0.5 if self.stbif else torch.as_tensor(expand_channel(model.v_init, shape), device=device, dtype=dtype) / self.theta
        self.v0 = v0
        self.bias = None if self.stbif else torch.as_tensor(expand_channel(model.bias, shape), device=device, dtype=dtype)
        self.lo, self.hi = ((float(model.n_min), float(model.n_max)) if self.stbif
                            else (-float(model.n_neg), float(model.n_pos)))
        self.A = torch.zeros((batch,) + tuple(shape), device=device, dtype=dtype)

    def reading(self, r_in: torch.Tensor) -> torch.Tensor:
        """y: the running input in threshold units plus the initial membrane (PMSM: plus its bias, given at t = 1)."""
        if self.bias is not None:
            r_in = r_in + self.bias
        return r_in / self.theta + self.v0

    def quantiser(self, r_in: torch.Tensor) -> torch.Tensor:
        """The QANN level this neuron stands for: clamp(floor(y), lo, hi)."""
        return torch.clamp(torch.floor(self.reading(r_in)), self.lo, self.hi)

    def step(self, r_in: torch.Tensor) -> torch.Tensor:
        y, A = self.reading(r_in), self.A
        if self.stbif:
            out = ((y >= A + 1) & (A < self.hi)).to(A.dtype) - ((y < A) & (A > self.lo)).to(A.dtype)
        else:
            out = torch.clamp(torch.floor(y) - A, self.lo, self.hi)
        self.A = A + out
        return out


class RunningOperator:
    """One operator's running output from its inputs' running sums: F(S), scale * S_A S_B, or the
    linear plumbing (Rearrange, Concat with its prefix, Mean)."""

    def __init__(self, op, batch: int, device, dtype):
        self.op, self.batch = op, batch
        self.fn = module_function(op, device, dtype) if isinstance(op, C2.C2Operator) else None
        if isinstance(op, O.Rearrange):
            self.index = torch.as_tensor(op.index, device=device).reshape(-1)
        self.prefix = None
        if isinstance(op, O.Concat) and op.prefix is not None:
            p = torch.as_tensor(op.prefix, device=device, dtype=dtype)
            self.prefix = p.unsqueeze(0).expand((batch,) + tuple(p.shape))

    def __call__(self, ins: list[torch.Tensor]) -> torch.Tensor:
        op = self.op
        if isinstance(op, C2.C2Operator):
            return self.fn(ins[0])
        if isinstance(op, C2.MatMulC2):
            return (ins[0] @ ins[1]) * op.scale
        if isinstance(op, O.Rearrange):
            return ins[0].reshape(self.batch, -1)[:, self.index].reshape((self.batch,) + tuple(op.shape))
        if isinstance(op, O.Concat):
            prefix = [] if self.prefix is None else [self.prefix]
            return torch.cat(prefix + list(ins), dim=op.axis % len(op.shape) + 1)
        if isinstance(op, O.Mean):
            return ins[0].mean(dim=tuple(a + 1 for a in op.axes))
        raise UnsupportedError(f"operator {op.name!r}: {type(op).__name__} is not simulated in C2 coding "
                               f"({SUPPORTED_C2})")


def _check(net: Network) -> None:
    if net.quantized:
        raise UnsupportedError("simulate_c2 runs float C2 networks; quantised ones run in "
                               "simulator/transformer_c2_fixed.py (simulate_c2_fixed)")
    if net.coding != "C2":
        raise UnsupportedError(f"simulate_c2 runs C2 networks; this one is {net.coding}")
    for node in net.nodes():
        if isinstance(node, Input) and node.coding != "analog":
            raise UnsupportedError(f"input {node.name!r}: coding {node.coding!r} (C2 operator networks take analog input)")
        if isinstance(node, Population) and not isinstance(node.neuron, (C2.STBIF, MultiSpikeIF, O.Relay, Readout)):
            raise UnsupportedError(f"population {node.name!r}: neuron {type(node.neuron).__name__} is not simulated in "
                                   f"C2 coding ({SUPPORTED_C2})")
        if isinstance(node, Operator) and not isinstance(node, (C2.C2Operator, C2.MatMulC2, O.Rearrange, O.Concat, O.Mean)):
            raise UnsupportedError(f"operator {node.name!r} ({type(node).__name__}) is not simulated in C2 coding "
                                   f"({SUPPORTED_C2})")
        if getattr(node, "delay", 0) or getattr(node, "t_start", 0):
            raise UnsupportedError(f"{node.name!r}: delays and t_start are not simulated in C2 coding")


class _Batch:
    """The network's running sums on one batch: ``sent[name]`` (what projections read: a neuron's
    level, else its value) and ``value[name]`` (what operators read: a level times its step)."""

    def __init__(self, net: Network, xb: torch.Tensor, weights: dict, dev, dtype):
        self.net, self.xb, self.weights, self.dev, self.dtype = net, xb, weights, dev, dtype
        self.batch = xb.shape[0]
        self.neurons, self.ops, self.biases, self.scales = {}, {}, {}, {}
        self.incoming = {p.name: net.incoming(p.name) for p in net.populations()}
        for node in net.nodes():
            shape = tuple(getattr(node, "shape", ()))
            if isinstance(node, Population):
                if isinstance(node.neuron, (C2.STBIF, MultiSpikeIF)):
                    self.neurons[node.name] = C2Neuron(node.neuron, shape, self.batch, dev, dtype)
                    ds = node.decode_scale
                    self.scales[node.name] = float(np.asarray(ds)) if np.ndim(ds) == 0 else \
                        torch.as_tensor(expand_channel(ds, shape), device=dev, dtype=dtype)
                else:
                    self.biases[node.name] = torch.as_tensor(expand_channel(node.neuron.bias, shape), device=dev,
                                                             dtype=dtype)
            elif isinstance(node, Operator):
                self.ops[node.name] = RunningOperator(node, self.batch, dev, dtype)
        self.sent: dict[str, torch.Tensor] = {}
        self.value: dict[str, torch.Tensor] = {}

    def sent_shape(self, name: str) -> tuple[int, ...]:
        return (self.batch,) + tuple(self.net[name].shape)

    def decoded(self) -> dict[str, torch.Tensor]:
        """Every population's decoded running sum (real units) and every operator's running value."""
        out = {p.name: _decode(p, self.sent[p.name]) for p in self.net.populations()}
        out.update({o.name: self.value[o.name] for o in self.net.operators()})
        return out

    def running_input(self, pop: Population) -> torch.Tensor:
        cur = torch.zeros((self.batch,) + tuple(pop.shape), device=self.dev, dtype=self.dtype)
        for p in self.incoming[pop.name]:
            cur = cur + _project(p, self.sent[p.source], self.batch, tuple(pop.shape), self.weights[p.name])
        return cur

    def sweep(self, neuron_rule) -> None:
        """One pass over the nodes in order; ``neuron_rule(neuron, running input) -> level``."""
        for node in self.net.nodes():
            name = node.name
            if isinstance(node, Input):
                self.sent[name] = self.value[name] = self.xb
            elif isinstance(node, Population):
                r = self.running_input(node)
                if name in self.neurons:
                    self.sent[name] = neuron_rule(self.neurons[name], r)
                    self.value[name] = self.sent[name] * self.scales[name]
                else:
                    self.sent[name] = self.value[name] = r + self.biases[name]
            elif isinstance(node, Operator):
                self.value[name] = self.sent[name] = self.ops[name]([self.value[i] for i in node.inputs])


def _step_rule(neuron: C2Neuron, r: torch.Tensor) -> torch.Tensor:
    neuron.step(r)
    return neuron.A


def simulate_c2(net: Network, x, timesteps: int, *, checkpoints: tuple[int, ...] = (), batch_size: int = 64,
                device=None, dtype: torch.dtype = torch.float64, keep_levels: bool = False,
                trace: dict | None = None) -> tuple[SimResult, dict[int, np.ndarray], C2Counts]:
    """Run ``net`` (C2) for ``timesteps``; returns the result (outputs = sum over steps), the summed
    output after each t in ``checkpoints`` and the event / spike counts. With ``keep_levels`` the
    result's ``activations`` hold each spiking population's summed output level (sum_t n(t)); without
    it, every population's and operator's decoded sum in real units (as ``simulate_c2_fixed``).
    ``spike_counts``: each spiking population's events per neuron (N, *shape).
    ``trace``: a dict that receives every node's per-step emission, (T, N, *shape) (operation
    counting, simulator/opcount_c2.py)."""
    _check(net)
    net.validate("simulate")
    T = int(timesteps)
    if T < 1 or any(not 1 <= c <= T for c in checkpoints):
        raise ValueError(f"simulate: timesteps {T} must be >= 1 and checkpoints {checkpoints} within 1..T")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    xs = torch.as_tensor(np.asarray(x))
    n = xs.shape[0]
    weights = {p.name: torch.as_tensor(np.asarray(p.weight), device=dev, dtype=dtype) for p in net.projections()}
    spiking = [p.name for p in net.populations() if isinstance(p.neuron, (C2.STBIF, MultiSpikeIF))]
    events = {k: 0 for k in spiking}
    spikes = {k: 0 for k in spiking}
    levels: dict[str, list] = {}
    per_neuron = {k: [] for k in spiking}
    outs, checks = [], {c: [] for c in checkpoints}
    traced: dict[str, list] = {}
    out_pop = net[net.outputs[0]]
    emitting = [node.name for node in net.nodes() if isinstance(node, (Input, Population, Operator))]
    with torch.no_grad():
        for a in range(0, n, batch_size):
            b = _Batch(net, xs[a:a + batch_size].to(dev, dtype), weights, dev, dtype)
            prev: dict[str, torch.Tensor] = {}
            steps: dict[str, list] = {}
            nz_counts = {k: torch.zeros(b.sent_shape(k), dtype=torch.int64, device=dev) for k in spiking}
            for t in range(1, T + 1):
                b.sweep(_step_rule)
                for k in spiking:
                    s = b.sent[k] - prev[k] if k in prev else b.sent[k]
                    nz_counts[k] += (s != 0).to(torch.int64)
                    spikes[k] += int(s.abs().sum())
                if trace is not None:
                    for k in emitting:
                        e = b.sent[k] - prev[k] if k in prev else b.sent[k]
                        steps.setdefault(k, []).append(e.cpu().numpy())
                prev = dict(b.sent)
                if t in checkpoints:
                    checks[t].append(_decode(out_pop, b.sent[out_pop.name]).cpu().numpy())
            outs.append(_decode(out_pop, b.sent[out_pop.name]).cpu().numpy())
            for k, v in steps.items():
                traced.setdefault(k, []).append(np.stack(v))
            for k in spiking:
                events[k] += int(nz_counts[k].sum())
                per_neuron[k].append(nz_counts[k].cpu().numpy())
            kept = {k: b.sent[k] for k in spiking} if keep_levels else b.decoded()
            for k, v in kept.items():
                levels.setdefault(k, []).append(v.cpu().numpy())
    out = np.concatenate(outs)
    if trace is not None:
        trace.update({k: np.concatenate(v, axis=1) for k, v in traced.items()})
    layers = {pop.name: LayerStats.counted(pop.size, np.sum(events[pop.name]) if pop.name in events else None, n, T).as_dict()
              for pop in net.populations()}
    acts = {k: np.concatenate(v) for k, v in levels.items()}
    result = SimResult(outputs=out, all_outputs={net.outputs[0]: out}, predictions=out.reshape(n, -1).argmax(axis=1),
                       spike_counts={k: np.concatenate(v) for k, v in per_neuron.items()}, layers=layers, timesteps=T,
                       steps_run=T, quantized=False, activations=acts)
    return result, {c: np.concatenate(v) for c, v in checks.items()}, C2Counts(events, spikes, int(n), T)


def float_qann(net: Network, x, *, batch_size: int = 256, device=None,
               dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The float QANN the C2 network stands for: the network once, all input at once, every ST-BIF /
    PMSM neuron replaced by its quantiser ``clamp(floor(R_in / theta + 1/2), lo, hi)`` (PMSM: plus its
    bias). Returns the decoded output (N, *shape) and each neuron population's level (N, *shape).
    The float analogue of ``reference_c2.integer_qann``: what :func:`simulate_c2`'s sums reach,
    PMSM at T = 1 and ST-BIF once settled, bit for bit."""
    _check(net)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    xs = torch.as_tensor(np.asarray(x))
    weights = {p.name: torch.as_tensor(np.asarray(p.weight), device=dev, dtype=dtype) for p in net.projections()}
    out_pop = net[net.outputs[0]]
    outs, levels = [], {}
    with torch.no_grad():
        for a in range(0, xs.shape[0], batch_size):
            b = _Batch(net, xs[a:a + batch_size].to(dev, dtype), weights, dev, dtype)
            b.sweep(lambda neuron, r: neuron.quantiser(r))
            outs.append(_decode(out_pop, b.sent[out_pop.name]).cpu().numpy())
            for k in b.neurons:
                levels.setdefault(k, []).append(b.sent[k].cpu().numpy())
    return np.concatenate(outs), {k: np.concatenate(v) for k, v in levels.items()}


def _decode(pop: Population, total: torch.Tensor) -> torch.Tensor:
    """C2 decode: the sum over steps (a Readout also applies its decode scale and offset)."""
    scale = torch.as_tensor(expand_channel(pop.decode_scale, tuple(pop.shape)), device=total.device, dtype=total.dtype)
    offset = torch.as_tensor(expand_channel(pop.decode_offset, tuple(pop.shape)), device=total.device, dtype=total.dtype)
    return total * scale + offset


__all__ = ["C2Counts", "C2Neuron", "RunningOperator", "float_qann", "simulate_c2"]
