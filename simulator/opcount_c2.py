"""Operation counts of C2 (sum-coded) Transformer networks, ``stbif`` / ``pmsm`` on a ViT, float or
fixed point (docs/energy.md, "C2 networks").

The rules of simulator/opcount.py with C2's event-driven reading, from every node's recorded
per-step emission (``simulate_c2`` / ``simulate_c2_fixed`` traces):

* every node sends only what changed: an element whose emission is 0 at a step sends nothing. A
  spiking population's non-zero output (ST-BIF +-1, a PMSM count) is one event, ACs per synapse
  (``graded_as="mac"``: MACs for graded PMSM counts); a Relay's, an operator's or the input's non-zero
  value is one graded message, a MAC per synapse (an add through an Identity of weight +-1). The
  input and biases arrive at t = 1 only, so they cost once.
* an operator does work only on what changed: LayerNorm / softmax recompute F on the rows (of the
  normalised axis) with a non-zero input element that step, GELU on the changed elements; ``S += x``
  one add per non-zero input element; ``O = F(S) - P`` one add per element of a recomputed row. The
  product's difference form ``A(t) S_B(t) + S_A(t-1) B(t)`` costs one ``ac`` per running-sum
  element each event meets and one add per event; Mean one add per non-zero input element.
* neuron updates, active updates and memory as simulator/opcount.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.graph import Network
from ..ir.neurons_extra import MultiSpikeIF
from ..ir.nodes import Input, Operator, Population
from .opcount import GRADED_AS, OpCounts, _Counter, _Source, _input_dict, chunk_samples
from .operator_work import OP_KINDS, add_work, gelu_work, layernorm_work, matmul_c2_work, softmax_work, work


def _rows(op, nz: np.ndarray) -> np.ndarray:
    """Per step, the rows of ``op`` (summed over samples) with a non-zero input element; nz (T, B, *shape)."""
    if op.fn == "gelu":
        return nz.reshape(nz.shape[0], -1).sum(axis=1)
    ax = (op.axis if op.fn == "softmax" else -1) % len(op.shape) + 2
    return nz.any(axis=ax).reshape(nz.shape[0], -1).sum(axis=1)


@dataclass
class C2OpCounts(OpCounts):
    """``OpCounts`` plus, per ST-BIF / PMSM population (all samples), its output events (one per
    non-zero output n) and spikes (sum |n|, the paper's count of a graded n as |n| spikes): the two
    counts PMSM's power figure is given for (report/pmsm_power.py)."""

    neuron_events: dict[str, int] = field(default_factory=dict)
    neuron_spikes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**super().to_json(), "neuron_events": dict(self.neuron_events), "neuron_spikes": dict(self.neuron_spikes)}


class _C2Counter(_Counter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.neuron_events: dict[str, int] = {}
        self.neuron_spikes: dict[str, int] = {}

    def add_chunk_c2(self, trace: dict[str, np.ndarray]) -> None:
        """Count one chunk from its trace {node: (T, B, *shape)}."""
        net, T, steps = self.net, self.T, self.steps
        batch = next(iter(trace.values())).shape[1]
        for pop in net.populations():
            if isinstance(pop.neuron, (C2.STBIF, MultiSpikeIF)):
                n = trace[pop.name]
                self.neuron_events[pop.name] = self.neuron_events.get(pop.name, 0) + int(np.count_nonzero(n))
                self.neuron_spikes[pop.name] = self.neuron_spikes.get(pop.name, 0) + int(np.abs(n).sum())
        sources: dict[str, _Source] = {}
        for node in net.nodes():
            if not isinstance(node, (Input, Population, Operator)) or node.name not in trace:
                continue
            nz = torch.as_tensor(trace[node.name] != 0).reshape(T, batch, -1).transpose(0, 1)
            graded = isinstance(node, Operator) or node.payload.kind in ("graded", "analog")
            sources[node.name] = _Source(analog=False, graded=graded, nonzero=nz)
            if node.name in self.layers:
                layer = self.layers[node.name]
                ev = nz.sum(dim=(0, 2)).numpy().astype(np.int64)
                layer.events += ev
                layer.payload_bits += ev * layer.bits_per_event
        for pop in net.populations():
            layer = self.layers[pop.name]
            act = np.ones(steps, dtype=bool)
            layer.neuron_updates += act.astype(np.int64) * batch * pop.size
            reached = torch.zeros((batch, steps, pop.size), dtype=torch.bool)
            for proj in net.incoming(pop.name):
                ops = self._deliver(proj, sources[proj.source], batch, act, reached)
                self.projections[proj.name].synops += ops
                target = layer.macs if self.projections[proj.name].op == "mac" else layer.acs
                target += ops
            layer.active_updates += reached.sum(dim=(0, 2)).numpy()
        for op in net.operators():
            rec = self.operators[op.name]
            nzs = [trace[i] != 0 for i in op.inputs]
            per_step = self._op_work(op, nzs, batch)
            for kind in OP_KINDS:
                rec.work[kind] += per_step[kind]

    def result(self, samples: int) -> C2OpCounts:
        base = super().result(samples)
        return C2OpCounts(**base.__dict__, neuron_events=dict(self.neuron_events), neuron_spikes=dict(self.neuron_spikes))

    def _op_work(self, op, nzs: list[np.ndarray], batch: int) -> dict[str, np.ndarray]:
        out = {k: np.zeros(self.steps, dtype=np.int64) for k in OP_KINDS}
        if isinstance(op, (O.Rearrange, O.Concat)):
            return out
        shapes = [tuple(self.net.shape_of(i)) for i in op.inputs]
        ev = [n.reshape(n.shape[0], -1).sum(axis=1) for n in nzs]
        for t in range(self.T):
            if isinstance(op, C2.MatMulC2):
                b, n, k, m = int(np.prod(shapes[0][:-2], dtype=np.int64)), shapes[0][-2], shapes[0][-1], shapes[1][-1]
                w = matmul_c2_work(b, n, k, m, int(ev[0][t]), int(ev[1][t]))
            elif isinstance(op, O.Mean):
                w = work(add=int(ev[0][t]))
            elif isinstance(op, C2.C2Operator):
                rows = int(_rows(op, nzs[0][t:t + 1])[0])
                length = 1 if op.fn == "gelu" else int(op.shape[(op.axis if op.fn == "softmax" else -1) % len(op.shape)])
                f = (gelu_work(rows, op.approximate) if op.fn == "gelu" else
                     layernorm_work(rows, length) if op.fn == "layernorm" else softmax_work(rows, length))
                w = add_work(f, work(add=int(ev[0][t]) + rows * length))
            else:
                raise TypeError(type(op).__name__)
            for kind in OP_KINDS:
                out[kind][t] += w[kind]
        return out


def count_ops_c2(net: Network, x, timesteps: int, *, graded_as: str = "ac", count_zero_weights: bool = True,
                 batch_size: int = 256, device=None) -> C2OpCounts:
    """Simulate the C2 network ``net`` (float or quantised) for ``timesteps`` and count its
    operations (module docstring)."""
    from .transformer_c2 import simulate_c2
    from .transformer_c2_fixed import simulate_c2_fixed

    if graded_as not in GRADED_AS:
        raise ValueError(f"count_ops: graded_as {graded_as!r} must be one of {GRADED_AS}")
    data = next(iter(_input_dict(net, x).values()))
    n = data.shape[0]
    if n == 0:
        raise ValueError("count_ops: no samples given")
    T = int(timesteps)
    counter = _C2Counter(net, T, T, graded_as, count_zero_weights)
    step = chunk_samples(net, T, batch_size)
    run = simulate_c2_fixed if net.quantized else simulate_c2
    for a in range(0, n, step):
        trace: dict = {}
        run(net, data[a:a + step], T, batch_size=step, device=device, trace=trace)
        counter.add_chunk_c2(trace)
    return counter.result(n)


__all__ = ["C2OpCounts", "count_ops_c2"]
