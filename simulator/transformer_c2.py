"""Float simulation of C2 (sum-coded) Transformer networks: ``--method stbif`` / ``pmsm`` on a ViT.

Same node walk as the C1 loop (simulator/transformer.py), with C2 semantics (ir/operators_c2.py):
the analog input, Relay / Readout biases and a Concat prefix are presented at t = 1 only; operators
are the C2 differential forms; a Readout's decoded output is ``sum_t out(t)`` (times its decode
scale, plus its offset). Neurons: ``STBIF`` (ST-BIF, one signed spike per step) and ``MultiSpikeIF``
(PMSM, one signed graded count per step). Both kernels run in threshold units (``u = v / theta``,
``u += I / theta``), the same equations as the IR docstrings, so that PMSM's first step is
``floor(I/theta + 1/2)`` computed exactly as the QANN's quantiser computes it.

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


class C2Kernel:
    """One operator of a C2 network on a batch, with its state (S, F(S(t-1)) or S_A, S_B)."""

    def __init__(self, op, batch: int, device, dtype):
        self.op, self.batch = op, batch
        self.S = self.P = self.SA = self.SB = None
        self.fn = module_function(op, device, dtype) if isinstance(op, C2.C2Operator) else None
        if isinstance(op, O.Rearrange):
            self.index = torch.as_tensor(op.index, device=device).reshape(-1)
        self.prefix = None
        if isinstance(op, O.Concat) and op.prefix is not None:
            p = torch.as_tensor(op.prefix, device=device, dtype=dtype)
            self.prefix = p.unsqueeze(0).expand((batch,) + tuple(p.shape))

    def step(self, ins: list[torch.Tensor], t: int) -> torch.Tensor:
        op = self.op
        if isinstance(op, C2.C2Operator):
            self.S = ins[0] if self.S is None else self.S + ins[0]
            cur = self.fn(self.S)
            out = cur if self.P is None else cur - self.P
            self.P = cur
            return out
        if isinstance(op, C2.MatMulC2):
            a, b = ins
            out = a @ b
            if self.SA is not None:
                out = out + a @ self.SB + self.SA @ b
                self.SA, self.SB = self.SA + a, self.SB + b
            else:
                self.SA, self.SB = a, b
            return out * op.scale
        if isinstance(op, O.Rearrange):
            return ins[0].reshape(self.batch, -1)[:, self.index].reshape((self.batch,) + tuple(op.shape))
        if isinstance(op, O.Concat):
            prefix = [] if self.prefix is None else [self.prefix if t == 1 else torch.zeros_like(self.prefix)]
            return torch.cat(prefix + list(ins), dim=op.axis % len(op.shape) + 1)
        if isinstance(op, O.Mean):
            return ins[0].mean(dim=tuple(a + 1 for a in op.axes))
        raise UnsupportedError(f"operator {op.name!r}: {type(op).__name__} is not simulated in C2 coding "
                               f"({SUPPORTED_C2})")


class STBIFKernel:
    """ST-BIF in threshold units: q(0) = 0.5, A(0) = 0; q += I/step; out = +1 if q >= 1 and A < n_max,
    -1 if q < 0 and A > n_min; A += out; q -= out."""

    def __init__(self, model: C2.STBIF, shape, batch, device, dtype):
        self.step_ = torch.as_tensor(expand_channel(model.step, shape), device=device, dtype=dtype)
        self.q = torch.full((batch,) + tuple(shape), 0.5, device=device, dtype=dtype)
        self.A = torch.zeros_like(self.q)
        self.lo, self.hi = float(model.n_min), float(model.n_max)

    def step(self, cur: torch.Tensor) -> torch.Tensor:
        self.q = self.q + cur / self.step_
        pos = (self.q >= 1) & (self.A < self.hi)
        neg = (self.q < 0) & (self.A > self.lo)
        out = pos.to(self.q.dtype) - neg.to(self.q.dtype)
        self.A = self.A + out
        self.q = self.q - out
        return out


class PMSMKernel:
    """PMSM's MultiSpikeIF in threshold units: u(0) = v_init/theta; u += I/theta;
    n = clamp(floor(u), -n_neg, n_pos); u -= n."""

    def __init__(self, model: MultiSpikeIF, shape, batch, device, dtype):
        self.theta = torch.as_tensor(expand_channel(model.threshold, shape), device=device, dtype=dtype)
        v0 = torch.as_tensor(expand_channel(model.v_init, shape), device=device, dtype=dtype) / self.theta
        self.u = v0.unsqueeze(0).repeat((batch,) + (1,) * len(shape))
        self.bias = torch.as_tensor(expand_channel(model.bias, shape), device=device, dtype=dtype)
        self.lo, self.hi = -float(model.n_neg), float(model.n_pos)

    def step(self, cur: torch.Tensor) -> torch.Tensor:
        self.u = self.u + cur / self.theta
        n = torch.clamp(torch.floor(self.u), self.lo, self.hi)
        self.u = self.u - n
        return n


def _check(net: Network) -> None:
    if net.quantized:
        raise UnsupportedError("bit-accurate simulation of C2 Transformer networks (stbif / pmsm on a ViT) is not "
                               "implemented yet; simulate the float network")
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


def simulate_c2(net: Network, x, timesteps: int, *, checkpoints: tuple[int, ...] = (), batch_size: int = 64,
                device=None, dtype: torch.dtype = torch.float64, keep_levels: bool = False,
                trace: dict | None = None) -> tuple[SimResult, dict[int, np.ndarray], C2Counts]:
    """Run ``net`` (C2) for ``timesteps``; returns the result (outputs = sum over steps), the summed
    output after each t in ``checkpoints`` and the event / spike counts. With ``keep_levels`` the
    result's ``activations`` hold each spiking population's summed output level (sum_t n(t)).
    ``trace``: a dict that receives every node's per-step emission, (T, N, *shape) (operation
    counting, simulator/opcount_c2.py)."""
    _check(net)
    net.validate("simulate")
    T = int(timesteps)
    if T < 1 or any(not 1 <= c <= T for c in checkpoints):
        raise ValueError(f"simulate: timesteps {T} must be >= 1 and checkpoints {checkpoints} within 1..T")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    order = list(net.nodes())
    xs = torch.as_tensor(np.asarray(x))
    n = xs.shape[0]
    weights = {p.name: torch.as_tensor(np.asarray(p.weight), device=dev, dtype=dtype) for p in net.projections()}
    spiking = [p.name for p in net.populations() if isinstance(p.neuron, (C2.STBIF, MultiSpikeIF))]
    events = {k: 0 for k in spiking}
    spikes = {k: 0 for k in spiking}
    levels = {k: [] for k in spiking}
    outs, checks = [], {c: [] for c in checkpoints}
    traced: dict[str, list] = {}
    incoming = {p.name: net.incoming(p.name) for p in net.populations()}
    out_pop = net[net.outputs[0]]
    with torch.no_grad():
        for a in range(0, n, batch_size):
            xb = xs[a:a + batch_size].to(dev, dtype)
            batch = xb.shape[0]
            kernels, biases, totals = {}, {}, {}
            for node in order:
                shape = tuple(getattr(node, "shape", ()))
                if isinstance(node, Population):
                    if isinstance(node.neuron, C2.STBIF):
                        kernels[node.name] = STBIFKernel(node.neuron, shape, batch, dev, dtype)
                    elif isinstance(node.neuron, MultiSpikeIF):
                        kernels[node.name] = PMSMKernel(node.neuron, shape, batch, dev, dtype)
                    else:
                        biases[node.name] = torch.as_tensor(expand_channel(node.neuron.bias, shape), device=dev, dtype=dtype)
                    totals[node.name] = torch.zeros((batch,) + shape, device=dev, dtype=dtype)
                elif isinstance(node, Operator):
                    kernels[node.name] = C2Kernel(node, batch, dev, dtype)
            steps: dict[str, list] = {}
            for t in range(1, T + 1):
                emit: dict[str, torch.Tensor] = {}
                value: dict[str, torch.Tensor] = {}
                for node in order:
                    name = node.name
                    if isinstance(node, Input):
                        emit[name] = value[name] = xb if t == 1 else torch.zeros_like(xb)
                    elif isinstance(node, Population):
                        shape = tuple(node.shape)
                        cur = torch.zeros((batch,) + shape, device=dev, dtype=dtype)
                        for p in incoming[name]:
                            cur = cur + _project(p, emit[p.source], batch, shape, weights[p.name])
                        if name in kernels:
                            if isinstance(node.neuron, MultiSpikeIF) and t == 1:
                                cur = cur + kernels[name].bias
                            s = kernels[name].step(cur)
                            nz = s != 0
                            events[name] += int(nz.sum())
                            spikes[name] += int(s.abs().sum())
                            emit[name] = s
                            value[name] = s * float(np.asarray(node.decode_scale)) if np.ndim(node.decode_scale) == 0 \
                                else s * torch.as_tensor(expand_channel(node.decode_scale, shape), device=dev, dtype=dtype)
                            totals[name] += s
                        else:
                            e = cur + biases[name] if t == 1 else cur
                            emit[name] = value[name] = e
                            totals[name] += e
                    elif isinstance(node, Operator):
                        emit[node.name] = value[node.name] = kernels[node.name].step([value[i] for i in node.inputs], t)
                    if trace is not None and node.name in emit:
                        steps.setdefault(node.name, []).append(emit[node.name].cpu().numpy())
                if t in checkpoints:
                    checks[t].append(_decode(out_pop, totals[out_pop.name]).cpu().numpy())
            outs.append(_decode(out_pop, totals[out_pop.name]).cpu().numpy())
            for k, v in steps.items():
                traced.setdefault(k, []).append(np.stack(v))
            if keep_levels:
                for k in spiking:
                    levels[k].append(totals[k].cpu().numpy())
    out = np.concatenate(outs)
    if trace is not None:
        trace.update({k: np.concatenate(v, axis=1) for k, v in traced.items()})
    layers = {pop.name: LayerStats.counted(pop.size, np.sum(events[pop.name]) if pop.name in events else None, n, T).as_dict()
              for pop in net.populations()}
    acts = {k: np.concatenate(v) for k, v in levels.items()} if keep_levels else {}
    result = SimResult(outputs=out, all_outputs={net.outputs[0]: out}, predictions=out.reshape(n, -1).argmax(axis=1),
                       spike_counts={k: np.asarray(v) for k, v in events.items()}, layers=layers, timesteps=T,
                       steps_run=T, quantized=False, activations=acts)
    return result, {c: np.concatenate(v) for c, v in checks.items()}, C2Counts(events, spikes, int(n), T)


def _decode(pop: Population, total: torch.Tensor) -> torch.Tensor:
    """C2 decode: the sum over steps (a Readout also applies its decode scale and offset)."""
    scale = torch.as_tensor(expand_channel(pop.decode_scale, tuple(pop.shape)), device=total.device, dtype=total.dtype)
    offset = torch.as_tensor(expand_channel(pop.decode_offset, tuple(pop.shape)), device=total.device, dtype=total.dtype)
    return total * scale + offset


__all__ = ["C2Counts", "C2Kernel", "PMSMKernel", "STBIFKernel", "simulate_c2"]
