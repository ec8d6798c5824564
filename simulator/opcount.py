"""Operation counts of a simulated SNN, per layer and per timestep (definitions: docs/energy.md).

Counted from the spike trains the simulator records, so counts are exact for the run, not estimates:

* a spike (any non-zero event) of source neuron j delivered through a projection costs one
  synaptic operation per synapse of j in that projection (its true fan-out: conv padding and
  stride are taken into account exactly). Binary and signed events are accumulates (ACs); a graded
  event is one event and, by spikeport's convention, also ACs (``graded_as="ac"``); NeuroBench
  counts graded payloads as MACs (``graded_as="mac"``).
* an analog source (an input with ``analog``/``once`` coding, i.e. the C1 first layer, a
  non-spiking ``Operator`` or a ``Relay`` population) costs one MAC per synapse of the projection
  for every step it delivers (true fan-in of every target neuron, zero padding excluded); through
  an Identity of weight +-1 it is one addition into the target's accumulator, counted as an AC.
* a typed Transformer operator costs, every step of [0, T), the arithmetic of
  ``simulator.operator_work`` by kind (ac, mac, add, mul, div, exp, sqrt); a matrix-product EC
  with spiking operands is event-driven there (its accumulates follow the recorded events).
* every neuron of a population updates once per step of its active window; an update is *active*
  when the neuron received at least one synaptic operation that step.
* memory: one synapse-word read and one read-modify-write of the target's input accumulator per
  synaptic operation, one state read and one state write per neuron update.
* events: non-zero emissions of a population or a spike input, one per neuron and step whatever the
  payload; ``payload_bits`` adds ``SpikePayload.bits`` per signed/graded event (0 for binary ones).

Operations are counted at the step they happen: synaptic operations at delivery (emission step +
delay, only while the target is active, as the simulator does), events at emission.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import UnsupportedError
from ..ir.graph import Network
from ..ir.conv_counts import conv_fan_in, conv_fan_out
from ..ir.nodes import Conv2d, Dense, Identity, Input, Operator, Population, Projection, expand_channel
from ..ir.operators import MultiThreshold, Relay, TokenDense, TypedOperator
from .operator_work import OP_KINDS, ann_work, step_work

GRADED_AS = ("ac", "mac")
LAYER_FIELDS = ("acs", "macs", "neuron_updates", "active_updates", "events", "payload_bits")


# ------------------------------------------------------------------------------ connectivity
def synapse_mask(proj: Projection, dst_shape: tuple[int, ...], count_zero_weights: bool = True) -> np.ndarray:
    """Weight-shaped 0/1 array of the synapses that exist (all stored ones, or only non-zero weights)."""
    w = np.asarray(proj.weight, dtype=np.float64)
    if isinstance(proj, Identity):
        w = expand_channel(w, tuple(dst_shape)).reshape(-1)
    elif not isinstance(proj, (Dense, Conv2d, TokenDense)):
        raise UnsupportedError(f"projection {proj.name!r}: no operation-count rule for {type(proj).__name__}")
    return np.ones_like(w) if count_zero_weights else (w != 0).astype(np.float64)


def fan_out(proj: Projection, src_shape: tuple[int, ...], dst_shape: tuple[int, ...],
            count_zero_weights: bool = True) -> np.ndarray:
    """Synapses of every source neuron in ``proj`` (flattened source order), int64.

    Conv: border neurons (padding) and neurons skipped by the stride get their true, smaller
    fan-out. With every stored synapse counted this is the closed form of ``ir.conv_counts`` (per
    axis counts, no per-synapse array); with zero weights skipped, a transposed convolution of an
    all-ones target map with the non-zero mask.
    """
    if count_zero_weights and isinstance(proj, Conv2d):
        return conv_fan_out(proj, src_shape, dst_shape)
    if count_zero_weights and isinstance(proj, Dense):
        return np.full(int(np.prod(src_shape)), int(np.prod(dst_shape)), dtype=np.int64)
    if isinstance(proj, TokenDense):   # every token's channel i reaches the C_out synapses of its own token
        per = np.asarray(proj.weight).shape[0] if count_zero_weights else synapse_mask(proj, dst_shape, False).sum(axis=0)
        return np.broadcast_to(np.asarray(per, dtype=np.int64), (int(np.prod(src_shape[:-1])), src_shape[-1])).reshape(-1).copy()
    mask = synapse_mask(proj, dst_shape, count_zero_weights)
    if isinstance(proj, Dense):
        return mask.sum(axis=0).astype(np.int64)
    if isinstance(proj, Identity):
        return mask.astype(np.int64)
    c, h, w = src_shape
    co, ho, wo = dst_shape
    kh, kw = mask.shape[2:]
    pad = []
    for size, out, k, s, p, d in ((h, ho, kh, proj.stride[0], proj.padding[0], proj.dilation[0]),
                                  (w, wo, kw, proj.stride[1], proj.padding[1], proj.dilation[1])):
        pad.append(size - ((out - 1) * s - 2 * p + d * (k - 1) + 1))
    ones = torch.ones((1, co, ho, wo), dtype=torch.float64)
    fo = F.conv_transpose2d(ones, torch.as_tensor(mask), stride=proj.stride, padding=proj.padding,
                            output_padding=tuple(pad), groups=proj.groups, dilation=proj.dilation)
    return fo.reshape(-1).round().long().numpy()


def fan_in(proj: Projection, src_shape: tuple[int, ...], dst_shape: tuple[int, ...],
           count_zero_weights: bool = True) -> np.ndarray:
    """Synapses onto every target neuron (flattened target order), int64; conv excludes padding."""
    if count_zero_weights and isinstance(proj, Conv2d):
        return conv_fan_in(proj, src_shape, dst_shape)
    if count_zero_weights and isinstance(proj, Dense):
        return np.full(int(np.prod(dst_shape)), int(np.prod(src_shape)), dtype=np.int64)
    if isinstance(proj, TokenDense):
        per = np.asarray(proj.weight).shape[1] if count_zero_weights else synapse_mask(proj, dst_shape, False).sum(axis=1)
        return np.broadcast_to(np.asarray(per, dtype=np.int64), (int(np.prod(dst_shape[:-1])), dst_shape[-1])).reshape(-1).copy()
    mask = synapse_mask(proj, dst_shape, count_zero_weights)
    if isinstance(proj, Dense):
        return mask.sum(axis=1).astype(np.int64)
    if isinstance(proj, Identity):
        return mask.astype(np.int64)
    ones = torch.ones((1,) + tuple(src_shape), dtype=torch.float64)
    fi = F.conv2d(ones, torch.as_tensor(mask), stride=proj.stride, padding=proj.padding,
                  dilation=proj.dilation, groups=proj.groups)
    return fi.reshape(-1).round().long().numpy()


class _Reach:
    """Which targets receive at least one synaptic op from a (rows, n_src) bool event matrix.

    With every stored synapse counted, the answer does not depend on the weights: a dense target is
    reached when any source fired, an identity target when its own source fired, a conv target when
    any source of its group fired inside its receptive field, found by reducing each group's
    channels first and convolving the (rows, G, H, W) map with a ones kernel per group (C_in x
    C_out times less work than the synapse mask). With zero weights skipped, the non-zero mask is
    convolved as before.
    """

    def __init__(self, proj: Projection, src_shape, dst_shape, count_zero_weights: bool):
        self.proj, self.src_shape, self.dst_shape = proj, tuple(src_shape), tuple(dst_shape)
        self.structural = count_zero_weights
        self.mask = None
        if isinstance(proj, Identity):
            self.mask = torch.as_tensor(synapse_mask(proj, dst_shape, count_zero_weights) != 0)
        elif not count_zero_weights:
            self.mask = torch.as_tensor(synapse_mask(proj, dst_shape, False), dtype=torch.float32)
        elif isinstance(proj, Conv2d):
            kh, kw = np.asarray(proj.weight).shape[2:]
            self.ones = torch.ones((proj.groups, 1, int(kh), int(kw)), dtype=torch.float32)

    def __call__(self, events: torch.Tensor) -> torch.Tensor:
        proj, rows = self.proj, events.shape[0]
        if isinstance(proj, Identity):
            return events & self.mask.reshape(1, -1)
        if isinstance(proj, TokenDense):   # per token: any channel of the token fired
            tok = events.reshape(rows, -1, self.src_shape[-1])
            c_out = self.dst_shape[-1]
            if self.structural:
                return tok.any(dim=2, keepdim=True).expand(rows, tok.shape[1], c_out).reshape(rows, -1)
            return ((tok.to(self.mask.dtype) @ self.mask.T) > 0).reshape(rows, -1)
        if isinstance(proj, Dense):
            if self.structural:
                return events.any(dim=1, keepdim=True).expand(rows, int(np.prod(self.dst_shape)))
            return (events.to(self.mask.dtype) @ self.mask.T) > 0
        if not self.structural:
            out = F.conv2d(events.to(self.mask.dtype).reshape((-1,) + self.src_shape), self.mask, stride=proj.stride,
                           padding=proj.padding, dilation=proj.dilation, groups=proj.groups)
            return out.reshape(rows, -1) > 0
        g = proj.groups
        cin, h, w = self.src_shape
        co = self.dst_shape[0]
        per_group = events.reshape(rows, g, cin // g, h, w).any(dim=2).to(torch.float32)
        out = F.conv2d(per_group, self.ones, stride=proj.stride, padding=proj.padding, dilation=proj.dilation,
                       groups=g) > 0
        return out.repeat_interleave(co // g, dim=1).reshape(rows, -1)


# ------------------------------------------------------------------------------ results
@dataclass
class LayerOps:
    """Counts of one input or population, each an int64 array over the steps run (summed over samples).

    acs / macs          synaptic operations of the projections *into* this layer
    neuron_updates      neuron-steps of the active window; active_updates: those that received input
    events              non-zero emissions of this layer; payload_bits: payload bits they carried
    """

    name: str
    kind: str                 # "input" | "population"
    neurons: int
    payload: str
    bits_per_event: int
    acs: np.ndarray
    macs: np.ndarray
    neuron_updates: np.ndarray
    active_updates: np.ndarray
    events: np.ndarray
    payload_bits: np.ndarray

    def total(self, name: str) -> int:
        """Sum over steps of one counter, including the derived memory counters."""
        return int(np.sum(getattr(self, name)))

    @property
    def synops(self) -> np.ndarray:
        return self.acs + self.macs

    # memory accesses (docs/energy.md): derived so they can never disagree with the op counts
    @property
    def weight_reads(self) -> np.ndarray:
        return self.synops

    @property
    def accumulator_rmw(self) -> np.ndarray:
        return self.synops

    @property
    def state_reads(self) -> np.ndarray:
        return self.neuron_updates

    @property
    def state_writes(self) -> np.ndarray:
        return self.neuron_updates

    def to_json(self, samples: int) -> dict:
        keys = LAYER_FIELDS + ("weight_reads", "accumulator_rmw", "state_reads", "state_writes")
        return {"name": self.name, "kind": self.kind, "neurons": self.neurons, "payload": self.payload,
                "bits_per_event": self.bits_per_event,
                "total": {k: self.total(k) for k in keys},
                "per_sample": {k: self.total(k) / samples for k in keys},
                "per_step": {k: np.asarray(getattr(self, k)).tolist() for k in LAYER_FIELDS}}


@dataclass
class ProjectionOps:
    """Synaptic operations of one projection per step (summed over samples); ``op`` is 'ac' or 'mac'."""

    name: str
    source: str
    target: str
    connectivity: str
    op: str
    synapses: int
    synops: np.ndarray

    def to_json(self, samples: int) -> dict:
        total = int(self.synops.sum())
        return {"name": self.name, "source": self.source, "target": self.target, "connectivity": self.connectivity,
                "op": self.op, "synapses": self.synapses, "total": total, "per_sample": total / samples}


@dataclass
class OperatorOps:
    """Arithmetic of one typed operator per step (summed over samples), one int64 array per kind
    of ``simulator.operator_work.OP_KINDS``; ``ann`` is the ANN module's work per sample."""

    name: str
    op: str
    runs_on: str
    arithmetic: str
    work: dict[str, np.ndarray]
    ann: dict[str, int]

    def total(self, kind: str) -> int:
        return int(np.sum(self.work[kind]))

    def to_json(self, samples: int) -> dict:
        return {"name": self.name, "op": self.op, "runs_on": self.runs_on, "arithmetic": self.arithmetic,
                "total": {k: self.total(k) for k in OP_KINDS},
                "per_sample": {k: self.total(k) / samples for k in OP_KINDS},
                "per_step": {k: np.asarray(v).tolist() for k, v in self.work.items()},
                "ann_per_sample": dict(self.ann)}


@dataclass
class OpCounts:
    """Operation counts of one simulation of ``samples`` samples for ``timesteps`` steps."""

    samples: int
    timesteps: int
    steps_run: int
    graded_as: str
    count_zero_weights: bool
    layers: dict[str, LayerOps] = field(default_factory=dict)
    projections: dict[str, ProjectionOps] = field(default_factory=dict)
    operators: dict[str, OperatorOps] = field(default_factory=dict)

    def total(self, name: str) -> int:
        """Network total (all samples) of a LayerOps counter, e.g. ``total("acs")``."""
        return sum(layer.total(name) for layer in self.layers.values())

    def operator_total(self, kind: str) -> int:
        """Network total (all samples) of one operator work kind, e.g. ``operator_total("exp")``."""
        return sum(op.total(kind) for op in self.operators.values())

    def per_sample(self, name: str) -> float:
        return self.total(name) / self.samples

    def to_json(self) -> dict:
        keys = LAYER_FIELDS + ("weight_reads", "accumulator_rmw", "state_reads", "state_writes")
        return {"samples": self.samples, "timesteps": self.timesteps, "steps_run": self.steps_run,
                "conventions": {"graded_as": self.graded_as, "count_zero_weights": self.count_zero_weights,
                                "mac_flops": "1 MAC = 2 FLOPs; counts are MACs and ACs, not FLOPs"},
                "total": {k: self.total(k) for k in keys},
                "per_sample": {k: self.per_sample(k) for k in keys},
                "layers": [layer.to_json(self.samples) for layer in self.layers.values()],
                "projections": [p.to_json(self.samples) for p in self.projections.values()],
                **({"operators": [op.to_json(self.samples) for op in self.operators.values()],
                    "operator_total": {k: self.operator_total(k) for k in OP_KINDS},
                    "operator_per_sample": {k: self.operator_total(k) / self.samples for k in OP_KINDS}}
                   if self.operators else {})}


# ------------------------------------------------------------------------------ counting
def _input_dict(net: Network, x) -> dict[str, np.ndarray]:
    names = [i.name for i in net.inputs()]
    if isinstance(x, dict):
        if set(x) != set(names):
            raise ValueError(f"count_ops: input data given for {sorted(x)}, network inputs are {sorted(names)}")
        return {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in x.items()}
    if len(names) != 1:
        raise ValueError(f"count_ops: the network has {len(names)} inputs {names}; pass a dict")
    return {names[0]: x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)}


@dataclass
class _Source:
    """What one source emits in a chunk: spike-like events (B, steps, n) or analog delivery steps."""

    analog: bool
    graded: bool = False
    nonzero: torch.Tensor | None = None      # bool (B, steps, n)
    steps: np.ndarray | None = None          # bool (steps,) analog: steps with a value


def _input_source(node: Input, data: np.ndarray, T: int, steps: int, quantized: bool) -> _Source:
    if node.coding == "spikes":
        nz = torch.zeros((data.shape[0], steps, int(np.prod(node.shape))), dtype=torch.bool)
        nz[:, :T] = torch.as_tensor(data.reshape(data.shape[0], T, -1) != 0)
        return _Source(analog=False, graded=node.payload.kind == "graded", nonzero=nz)
    on = np.zeros(steps, dtype=bool)
    on[:T if node.coding == "analog" else 1] = True
    b, n = data.shape[0], int(np.prod(node.shape))
    flat = torch.as_tensor(data.reshape(b, n), dtype=torch.float64)
    if quantized:   # the simulator's rounding: an integer level of 0 sends nothing
        flat = torch.floor(flat / float(node.scale) + 0.5).clamp(node.payload.min_level, node.payload.max_level)
    nz = torch.zeros((b, steps, n), dtype=torch.bool)
    nz[:, torch.as_tensor(on)] = (flat != 0).unsqueeze(1)
    return _Source(analog=True, nonzero=nz, steps=on)


def _active(t_start: int, T: int, steps: int) -> np.ndarray:
    act = np.zeros(steps, dtype=bool)
    act[t_start:t_start + T] = True
    return act


def _per_step(mask: torch.Tensor) -> np.ndarray:
    """Events per step of a bool (B, steps, n) mask, int64 (steps,): one whole-tensor count per step
    (torch's reductions of bool tensors along dims ran ~20x slower than this on CPU)."""
    return np.array([int(torch.count_nonzero(mask[:, t])) for t in range(mask.shape[1])], dtype=np.int64)


def _over_batch(mask: torch.Tensor) -> torch.Tensor:
    """Events per (step, neuron) of a bool (B, steps, n) mask summed over the batch, int32 (steps, n):
    per-sample adds (a bool sum along dim 0 ran ~7x slower)."""
    acc = mask[0].to(torch.int32)
    for b in range(1, mask.shape[0]):
        acc += mask[b]
    return acc


def _shift(arr: np.ndarray, delay: int) -> np.ndarray:
    out = np.zeros_like(arr)
    if delay < len(arr):
        out[delay:] = arr[:len(arr) - delay]
    return out


class _Counter:
    """Accumulates counts over chunks of samples."""

    def __init__(self, net: Network, T: int, steps: int, graded_as: str, count_zero_weights: bool):
        self.net, self.T, self.steps = net, T, steps
        self.graded_as, self.czw = graded_as, count_zero_weights
        z = lambda: np.zeros(steps, dtype=np.int64)  # noqa: E731
        self.layers: dict[str, LayerOps] = {}
        for node in net.nodes():
            if isinstance(node, (Input, Population)):
                pl = node.payload
                bits = 0 if pl.kind == "binary" else int(pl.bits)
                self.layers[node.name] = LayerOps(node.name, "input" if isinstance(node, Input) else "population",
                                                  int(np.prod(node.shape)), pl.kind, bits, z(), z(), z(), z(), z(), z())
        self.projections: dict[str, ProjectionOps] = {}
        self.static: dict[str, tuple] = {}
        for proj in net.projections():
            src_shape, dst_shape = net.shape_of(proj.source), net.shape_of(proj.target)
            fo = fan_out(proj, src_shape, dst_shape, count_zero_weights)
            fi = fan_in(proj, src_shape, dst_shape, count_zero_weights)
            reach = _Reach(proj, src_shape, dst_shape, count_zero_weights)
            self.static[proj.name] = (fo, fi, reach, src_shape, dst_shape)
            self.projections[proj.name] = ProjectionOps(proj.name, proj.source, proj.target, proj.connectivity,
                                                        self._op_kind(proj), int(fo.sum()), z())
        self.operators: dict[str, OperatorOps] = {}
        for op in net.operators():
            if not isinstance(op, TypedOperator):
                raise UnsupportedError(f"operator {op.name!r} (op {op.op!r}): untyped operators have no "
                                       "operation-count rule")
            shapes = [tuple(net.shape_of(i)) for i in op.inputs]
            self.operators[op.name] = OperatorOps(op.name, type(op).__name__, op.runs_on, op.arithmetic,
                                                  {k: z() for k in OP_KINDS}, ann_work(op, shapes))

    def _analog(self, name: str) -> bool:
        """A source that sends a real value every step: an operator, a Relay or a non-spike input."""
        node = self.net[name]
        return (isinstance(node, Operator) or (isinstance(node, Population) and isinstance(node.neuron, Relay))
                or (isinstance(node, Input) and node.coding != "spikes"))

    def _op_kind(self, proj: Projection) -> str:
        src = self.net[proj.source]
        if self._analog(proj.source):
            unit = isinstance(proj, Identity) and bool(np.all(np.abs(np.asarray(proj.weight)) == 1))
            return "ac" if unit else "mac"
        kind = src.payload.kind
        if kind == "analog" or (kind == "graded" and self.graded_as == "mac"):
            return "mac"
        return "ac"

    def add_chunk(self, inputs: dict[str, np.ndarray], spikes: dict[str, np.ndarray]) -> None:
        net, T, steps = self.net, self.T, self.steps
        batch = next(iter(inputs.values())).shape[0]
        sources: dict[str, _Source] = {}
        for node in net.nodes():
            if isinstance(node, Input):
                src = _input_source(node, inputs[node.name], T, steps, net.quantized)
            elif isinstance(node, Population) and node.neuron.spiking:
                s = spikes[node.name].reshape(batch, steps, -1)
                src = _Source(analog=False, graded=node.payload.kind == "graded", nonzero=torch.as_tensor(s != 0))
            else:
                continue
            sources[node.name] = src
            layer = self.layers[node.name]
            ev = _per_step(src.nonzero)
            layer.events += ev
            layer.payload_bits += ev * layer.bits_per_event
        for pop in net.populations():
            layer = self.layers[pop.name]
            act = _active(pop.t_start, T, steps)
            layer.neuron_updates += act.astype(np.int64) * batch * pop.size
            reached = torch.zeros((batch, steps, pop.size), dtype=torch.bool)
            for proj in net.incoming(pop.name):
                ops = self._deliver(proj, sources.get(proj.source), batch, act, reached)
                self.projections[proj.name].synops += ops
                target = layer.macs if self.projections[proj.name].op == "mac" else layer.acs
                target += ops
            layer.active_updates += _per_step(reached & torch.as_tensor(act)[None, :, None])
        for op in net.operators():
            self._operator(op, sources, batch)

    def _operator(self, op: TypedOperator, sources: dict[str, _Source], batch: int) -> None:
        """Every step of [0, T): the operator's arithmetic; event-driven terms from its spiking inputs."""
        rec = self.operators[op.name]
        shapes = [tuple(self.net.shape_of(i)) for i in op.inputs]
        spiking = [sources.get(i) if i in sources and not sources[i].analog else None for i in op.inputs]
        per_step = [_per_step(src.nonzero) if src is not None else None for src in spiking]
        for t in range(min(self.T, self.steps)):
            events = [None if ev is None else int(ev[t]) for ev in per_step]
            for kind, v in step_work(op, shapes, t + 1, events, batch).items():
                rec.work[kind][t] += v

    def _deliver(self, proj: Projection, src: _Source | None, batch: int, act: np.ndarray,
                 reached: torch.Tensor) -> np.ndarray:
        """Synaptic ops per delivery step; marks the targets reached in ``reached`` (B, steps, n_dst)."""
        fo, fi, reach, src_shape, dst_shape = self.static[proj.name]
        steps, d = self.steps, int(proj.delay)
        n_dst = int(np.prod(dst_shape))
        if src is None and not self._analog(proj.source):
            return np.zeros(steps, dtype=np.int64)          # a non-spiking population emits nothing
        if src is None or src.analog:      # operator, relay or analog input: every synapse, every delivered step
            on = np.ones(steps, dtype=bool) if src is None else _shift(src.steps, d)
            on &= act
            reached[:, torch.as_tensor(on)] |= torch.as_tensor(fi > 0)
            return on.astype(np.int64) * batch * int(fi.sum())
        nz = src.nonzero
        per_emit = (_over_batch(nz).to(torch.float64) @ torch.as_tensor(fo, dtype=torch.float64)).round().long().numpy()
        ops = _shift(per_emit, d) * act
        if d < steps:
            hit = reach(nz[:, :steps - d].reshape(-1, nz.shape[-1]))
            reached[:, d:] |= hit.reshape(batch, steps - d, n_dst)
        return ops.astype(np.int64)

    def reduce(self, sum_arrays) -> None:
        """Replace every counter by ``sum_arrays`` of it (the sum over the ranks of a sharded run)."""
        arrays = [getattr(layer, k) for layer in self.layers.values() for k in LAYER_FIELDS]
        arrays += [p.synops for p in self.projections.values()]
        summed = iter(sum_arrays([np.asarray(a, dtype=np.int64) for a in arrays]))
        for layer in self.layers.values():
            for k in LAYER_FIELDS:
                setattr(layer, k, next(summed))
        for p in self.projections.values():
            p.synops = next(summed)

    def result(self, samples: int) -> OpCounts:
        return OpCounts(samples, self.T, self.steps, self.graded_as, self.czw, self.layers, self.projections,
                        self.operators)


def count_ops(net: Network, x, timesteps: int, *, result=None, graded_as: str = "ac",
              count_zero_weights: bool = True, batch_size: int = 256, device=None) -> OpCounts:
    """Simulate ``net`` on ``x`` for ``timesteps`` and count its operations (module docstring rules).

    result              a ``SimResult`` of the same net, x and T recorded with ``record_spikes=True``
                        (skips the simulation); otherwise the net is simulated in chunks of at
                        most ``batch_size`` samples on ``device``, fewer when the chunk's event
                        records would exceed ``RECORD_BUDGET_BYTES`` (counts do not depend on it).
    graded_as           'ac' (spikeport: a graded event is one event, ACs per synapse) or 'mac'
                        (NeuroBench: graded payloads are multiply-accumulates).
    count_zero_weights  True: every stored synapse costs an op (dense hardware); False: synapses of
                        weight 0 are skipped (NeuroBench's effective synaptic operations).
    """
    from . import Simulation, simulate
    if net.coding == "C2" and net.operators():   # stbif / pmsm ViTs: event-driven C2 counting
        from .opcount_c2 import count_ops_c2
        return count_ops_c2(net, x, timesteps, graded_as=graded_as, count_zero_weights=count_zero_weights,
                            batch_size=batch_size, device=device)
    if graded_as not in GRADED_AS:
        raise ValueError(f"count_ops: graded_as {graded_as!r} must be one of {GRADED_AS}")
    if batch_size < 1:
        raise ValueError(f"count_ops: batch_size must be >= 1, got {batch_size}")
    data = _input_dict(net, x)
    n = next(iter(data.values())).shape[0]
    if result is not None:
        if result.spikes is None:
            raise ValueError("count_ops: the SimResult has no spike trains; simulate with record_spikes=True")
        if result.timesteps != timesteps or len(result.predictions) != n:
            raise ValueError(f"count_ops: the SimResult is for T={result.timesteps} and {len(result.predictions)} "
                             f"samples, asked for T={timesteps} and {n}")
        counter = _Counter(net, timesteps, result.steps_run, graded_as, count_zero_weights)
        step = chunk_samples(net, result.steps_run, n)
        for a in range(0, n, step):
            counter.add_chunk({k: v[a:a + step] for k, v in data.items()},
                              {k: v[a:a + step] for k, v in result.spikes.items()})
        return counter.result(n)
    if n == 0:
        raise ValueError("count_ops: no samples given")
    steps = int(timesteps) + net.latency()
    step = chunk_samples(net, steps, batch_size)
    counter = _Counter(net, timesteps, steps, graded_as, count_zero_weights)
    # under torchrun each rank counts its share of the chunks; the integer counters are then summed
    rank, size = distributed.world()
    # one plan for every chunk (building it per chunk cost ~0.25 s each on ResNet-18); operator
    # networks go through simulate, which runs them in their own loops
    sim = None if net.operators() else Simulation(net, timesteps, device=device)
    with distributed.local():
        for a in list(range(0, n, step))[rank::size]:
            chunk = {k: v[a:a + step] for k, v in data.items()}
            res = (sim.run(chunk, batch_size=step, record_spikes=True) if sim is not None
                   else simulate(net, chunk, timesteps, batch_size=step, device=device, record_spikes=True))
            counter.add_chunk(chunk, res.spikes)
    if size > 1:
        counter.reduce(distributed.sum_arrays)
    return counter.result(n)


#: bytes of one copy of the per-step event records a counting chunk may hold (int8 per neuron and
#: step); counting keeps a few such copies (records, their non-zero masks, targets reached), so
#: peak memory stays a small multiple of this whatever the network and sample count.
RECORD_BUDGET_BYTES = 96 * 2 ** 20


def chunk_samples(net: Network, steps: int, batch_size: int) -> int:
    """Samples per counting chunk: at most ``batch_size`` and within ``RECORD_BUDGET_BYTES``.

    Counts are sums over samples, so they do not depend on the chunk size.
    """
    neurons = sum(int(np.prod(node.shape)) for node in net.nodes() if isinstance(node, (Input, Population)))
    return max(1, min(int(batch_size), RECORD_BUDGET_BYTES // max(1, neurons * int(steps))))


def ann_equivalent_macs(net: Network) -> int:
    """MACs per sample of the ANN the IR's projections stand for (used when no ANN file is given).

    Dense: the weight matrix size; token dense: tokens x the weight size; conv: ``C_out * H_out *
    W_out * C_in/groups * kH * kW`` (zero padding included, the usual ANN convention); identity
    (residual add): one per neuron, none into an ECMT MultiThreshold population (a neuron placed
    on an ANN value is no ANN operation). Pooling lowered to projections is included as those
    projections. Operators: a matrix product's ``B n k m`` MACs; the other operators' arithmetic
    (LayerNorm, softmax, GELU) is not MACs and is reported by kind (``OpCounts.operators[..].ann``).
    """
    total = 0
    for op in net.operators():
        if isinstance(op, TypedOperator):
            total += ann_work(op, [tuple(net.shape_of(i)) for i in op.inputs])["mac"]
    for proj in net.projections():
        w = np.asarray(proj.weight)
        if isinstance(proj, TokenDense):
            total += int(np.prod(net.shape_of(proj.target)[:-1], dtype=np.int64)) * int(w.size)
        elif isinstance(proj, Dense):
            total += int(w.size)
        elif isinstance(proj, Conv2d):
            total += int(np.prod(net.shape_of(proj.target))) * proj.fan_in()
        elif isinstance(proj, Identity):
            if not isinstance(getattr(net[proj.target], "neuron", None), MultiThreshold):  # ECMT's neuron on an ANN value
                total += int(np.prod(net.shape_of(proj.target)))
        else:
            raise UnsupportedError(f"projection {proj.name!r}: no MAC rule for {type(proj).__name__}")
    return total
