"""The time loop shared by the float and the bit-accurate simulator.

A :class:`Plan` is built once per ``simulate`` call (projection kernels with their weights on the
device and their arithmetic path chosen); :func:`run_batch` then steps one batch of samples through
``T + latency`` steps. Sources (inputs, populations) are visited in topological order each step, so
a delay-0 projection sees its source's emission of the same step; each source keeps a ring of its
last ``max delay + 1`` emissions (None = nothing emitted).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from ..ir.graph import Network
from ..ir.neurons_extra import LavaLIF
from ..ir.nodes import IF, Input, Operator, Population
from .emission import Emission
from .event_driven import MODES as EVENT_MODES
from .layer_major import SCHEDULES, chunk_steps, run_layer_major
from .neurons import FloatIF, NeuronKernel, kernel_class
from .synapses import ProjectionKernel


INPUT_F32_BYTES = 256 * 2 ** 20
FLOAT_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class Plan:
    """Static, batch-independent part of a simulation."""

    net: Network
    timesteps: int
    steps: int
    device: torch.device
    order: list[str]
    incoming: dict[str, list[tuple[ProjectionKernel, str, int]]]
    ring: dict[str, int]
    in_bound: dict[str, int | None] = field(default_factory=dict)
    float_state: set[str] = field(default_factory=set)   # populations held as exact float32 (neurons.py)
    schedule: str = "auto"                                # "step" / "layer" / "auto" (layer_major.py)
    pool: dict = field(default_factory=dict)              # large per-batch buffers, reused by the next batch
    pops: list = field(default_factory=list)              # populations in topological order
    protos: dict = field(default_factory=dict)            # (population, batch) -> unstepped kernel to copy
    chunks: dict = field(default_factory=dict)            # batch -> layer-major chunk (layer_major.chunk_steps)
    out_delays: dict = field(default_factory=dict)        # layer-major skews and tails (layer_major.skews)
    float_dtype: torch.dtype = torch.float64              # float networks: float64 (the IR's equations) or float32

    @property
    def quantized(self) -> bool:
        return self.net.datapath is not None

    def buffer(self, key, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor kept for the next batch: large fresh allocations cost a page fault
        per 4 KiB on first touch, more than the arithmetic that fills them."""
        t = self.pool.get(key)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            self.pool[key] = None
            t = self.pool[key] = torch.empty(shape, dtype=dtype, device=self.device)
        return t


def always_active(pop: Population) -> bool:
    """Neuron models that update at every step of the run (Lava's LIF semantics, ``LavaLIF``), not
    only during their window ``[t_start, t_start + T)``."""
    return bool(getattr(type(pop.neuron), "always_active", False))


def source_max_abs(net: Network, name: str) -> float:
    """Largest |value| a source can emit in one step (bounds for the exact-arithmetic proofs)."""
    node = net[name]
    if isinstance(node, Input):
        if net.quantized:
            return float(max(abs(node.payload.min_level), abs(node.payload.max_level) * 1.0,
                             abs(node.payload.min_level) * abs(node.payload.neg_value)))
        return float("inf")
    return kernel_class(node, net.quantized).max_abs_value(node)


def binary_source(net: Network, name: str) -> bool:
    """Whether a source only ever emits 0 or 1 (event-driven sums then need no event values)."""
    node = net[name]
    if isinstance(node, Input):
        return node.payload.min_level >= 0 and node.payload.max_level <= 1
    return type(node.neuron) in (IF, LavaLIF) and node.neuron.neg_threshold is None


def build_plan(net: Network, timesteps: int, device, path: str = "auto", event_driven: str = "auto",
               schedule: str = "auto", dtype: str = "float64") -> Plan:
    for op in net.operators():
        raise NotImplementedError(f"operator node {op.name!r} (op {op.op!r}): the simulators do not run "
                                  "Operator nodes yet")
    net.validate("simulate")
    if event_driven not in EVENT_MODES:
        raise ValueError(f"simulate: event_driven must be one of {EVENT_MODES}, got {event_driven!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"simulate: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"simulate: dtype must be one of {tuple(FLOAT_DTYPES)}, got {dtype!r}")
    float_dtype = FLOAT_DTYPES[dtype]
    if timesteps < 1:
        raise ValueError(f"simulate: timesteps must be >= 1, got {timesteps}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    order = [n.name for n in net.nodes() if isinstance(n, (Input, Population))]
    incoming: dict[str, list] = {}
    ring = {name: 1 for name in order}
    in_bound: dict[str, int | None] = {}
    float_state: set[str] = set()
    for pop in net.populations():
        entries = []
        total = 0
        for proj in net.incoming(pop.name):
            src = net[proj.source]
            if isinstance(src, Operator):
                raise NotImplementedError(f"projection {proj.name!r} reads operator {src.name!r} (op {src.op!r}); "
                                          "Operator nodes are not simulated yet")
            pk = ProjectionKernel(proj, net.shape_of(proj.source), tuple(pop.shape),
                                  source_max_abs(net, proj.source), net.quantized, device, path,
                                  acc_bits=net.datapath.conv_acc_bits if net.quantized else 0,
                                  float_dtype=float_dtype)
            pk.enable_events(event_driven, binary_source(net, proj.source))
            entries.append((pk, proj.source, int(proj.delay)))
            ring[proj.source] = max(ring[proj.source], int(proj.delay) + 1)
            if net.quantized:
                total += pk.acc_bound
        incoming[pop.name] = entries
        in_bound[pop.name] = total if net.quantized else None
        if net.quantized:
            for pk, _, _ in entries:
                pk.use_int32_if(total)
            if _float_state_ok(pop, net, entries, total, path) and timesteps + net.latency() < 2 ** 24:
                # (float32 spike counts stay exact below 2^24 steps)
                float_state.add(pop.name)
                for pk, _, _ in entries:
                    pk.emit_u(net.datapath.act_shift)
    return Plan(net, timesteps, timesteps + net.latency(), device, order, incoming, ring, in_bound, float_state,
                schedule, pops=net.populations(), float_dtype=float_dtype)


def _float_state_ok(pop: Population, net: Network, entries: list, total: int, path: str) -> bool:
    """The exact float32 fast path: a kernel that supports it, bounds that prove it, float32 inputs."""
    ok = getattr(kernel_class(pop, True), "float_state_ok", None)
    return (path == "auto" and ok is not None and bool(entries)
            and all(pk.path == "float32" and not pk.acc_bits for pk, _, _ in entries)
            and ok(pop, net.datapath, total))


def encode_input(node: Input, x: torch.Tensor, quantized: bool, timesteps: int,
                 stage: torch.dtype | str | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample input values, flattened: (B, n) for analog/once, (T, B, n) for spikes.

    Spike data are checked (integers in quantised nets, within the payload levels) and kept in the
    narrowest integer dtype, so per-step conversions for the first projection stay cheap; with
    ``stage`` (quantised, levels used as they are) they are laid out once, contiguous, in that dtype
    (into ``out`` when given: a (T, B, n) buffer of that dtype); ``stage="as-is"`` returns the
    checked data as given (a (T, B, n) view; the layer-major schedule converts it per chunk).
    """
    batch = x.shape[0]
    pl = node.payload
    if node.coding == "spikes":
        want = (batch, timesteps) + tuple(node.shape)
        if tuple(x.shape) != want:
            raise ValueError(f"input {node.name!r}: spike data has shape {tuple(x.shape)}, expected (N, T, *shape) = {want}")
        flat = x.reshape(batch, timesteps, -1).transpose(0, 1)
        if flat.is_floating_point() and (quantized or pl.kind != "analog"):
            if not torch.equal(flat, torch.round(flat)):     # also rejects NaN
                raise ValueError(f"input {node.name!r}: spike data must be integers (payload {pl.kind})")
        elif flat.is_floating_point() and not torch.isfinite(flat).all():
            raise ValueError(f"input {node.name!r}: data contains NaN or infinity")
        if quantized or pl.kind != "analog":
            lo, hi = (float(v) for v in torch.aminmax(flat))
            if lo < pl.min_level or hi > pl.max_level:
                raise ValueError(f"input {node.name!r}: spike values span [{lo}, {hi}], payload allows "
                                 f"[{pl.min_level}, {pl.max_level}]")
            if quantized and stage == "as-is" and pl.neg_value == 1:    # checked; the caller converts it
                return flat
            if quantized and stage is not None and pl.neg_value == 1:    # one pass: layout and dtype
                return (out if out is not None else torch.empty(flat.shape, dtype=stage, device=flat.device)).copy_(flat)
            top = max(abs(pl.min_level) * abs(pl.neg_value), abs(pl.max_level))
            dtype = torch.int8 if top < 2 ** 7 else torch.int32 if top < 2 ** 31 else torch.int64
            flat = flat.to(dtype)
            if pl.neg_value != 1:
                if not quantized:
                    flat = flat.to(torch.float64)
                elif pl.neg_value != round(pl.neg_value):
                    raise ValueError(f"input {node.name!r}: quantised payload neg_value must be an integer, got {pl.neg_value}")
                flat = flat + (flat < 0).to(flat.dtype) * (flat * (pl.neg_value - 1)).to(flat.dtype)
        return flat if quantized else flat.to(torch.float64).contiguous()   # BatchRun lays quantised data out
    want = (batch,) + tuple(node.shape)
    if tuple(x.shape) != want:
        raise ValueError(f"input {node.name!r}: data has shape {tuple(x.shape)}, expected (N, *shape) = {want}")
    flat = x.reshape(batch, -1).to(torch.float64)
    if not torch.isfinite(flat).all():
        raise ValueError(f"input {node.name!r}: data contains NaN or infinity")
    if not quantized:
        return flat
    # x_int = clip(floor(x / scale + 1/2), min_level, max_level): round half up, see docs/fixed_point.md
    q = torch.floor(flat / float(node.scale) + 0.5)
    return q.clamp(pl.min_level, pl.max_level).to(torch.int64)


def _to_float_dtype(kernel: NeuronKernel, dtype: torch.dtype) -> None:
    """A float kernel's float64 state and parameters (and its event value dtype) in ``dtype``."""
    for k, v in vars(kernel).items():
        if isinstance(v, torch.Tensor) and v.dtype == torch.float64:
            setattr(kernel, k, v.to(dtype))
    if getattr(kernel, "value_dtype", None) == torch.float64:
        kernel.value_dtype = dtype


class BatchRun:
    """Mutable per-batch state: neuron kernels, emission rings, optional spike records."""

    def __init__(self, plan: Plan, xs: dict[str, torch.Tensor], record_spikes: bool, record_voltages: bool = False):
        self.plan = plan
        net = plan.net
        self.batch = int(next(iter(xs.values())).shape[0])
        self.kernels: dict[str, NeuronKernel] = {}
        for pop in plan.pops:
            self.kernels[pop.name] = self._new_kernel(pop)
        # layer-major (layer_major.py) unless a subclass rebuilds the inputs step by step (replay)
        self.chunk = 0
        if type(self)._gather_current is BatchRun._gather_current:
            if self.batch not in plan.chunks:
                plan.chunks[self.batch] = chunk_steps(self)
            self.chunk = plan.chunks[self.batch]
        self.inputs = {}
        for name, x in xs.items():
            node = net[name]
            stage = self._stage_dtype(name, x)
            buf = None
            if stage is not None and self.chunk:
                stage = "as-is"             # converted chunk by chunk into a kept buffer instead
            elif stage is not None and tuple(x.shape) == (x.shape[0], plan.timesteps) + tuple(node.shape):
                buf = plan.buffer(("input", name), (plan.timesteps, x.shape[0], math.prod(node.shape)), stage)
            enc = encode_input(node, x, plan.quantized, plan.timesteps, stage, buf)
            if not plan.quantized and enc.dtype != plan.float_dtype:
                enc = enc.to(plan.float_dtype)
            self.inputs[name] = enc if stage == "as-is" else self._staged(name, enc)
        self.rings = {name: [None] * plan.ring[name] for name in plan.order}
        self.constant = {name: Emission(v) for name, v in self.inputs.items() if net[name].coding == "analog"}
        self.records = None
        if record_spikes:
            self.records = {p.name: torch.zeros((self.batch, plan.steps, p.size), dtype=torch.int8, device=plan.device)
                            for p in plan.pops if self.kernels[p.name].spiking}
        # per population and step: Conv sums wrapped to conv_acc_bits (only where a sum can wrap)
        self.acc_wrap = {name: torch.zeros(plan.steps, dtype=torch.int64, device=plan.device)
                         for name, entries in plan.incoming.items() if any(pk.acc_bits for pk, _, _ in entries)}
        self.voltages = None
        if record_voltages:  # v after the step's reset, every step (frozen outside the active window)
            self.voltages = {p.name: [] for p in plan.pops}

    def _new_kernel(self, pop: Population) -> NeuronKernel:
        """The population's kernel in its initial state: built once per plan and batch size, then
        copied (building converts and checks every parameter, which costs more than a batch-1 run)."""
        plan, net = self.plan, self.plan.net
        key = (pop.name, self.batch)
        proto = plan.protos.get(key)
        if proto is None:
            proto = kernel_class(pop, plan.quantized)(pop, self.batch, plan.device, net.datapath,
                                                      plan.in_bound.get(pop.name))
            if pop.name in plan.float_state:
                proto.use_float_state()
            if not plan.quantized and plan.float_dtype != torch.float64:
                _to_float_dtype(proto, plan.float_dtype)
            if not plan.quantized and type(proto) is FloatIF and not proto.signed and plan.steps < 2 ** 24:
                proto.use_inplace()
            plan.protos[key] = proto
        kernel = copy.copy(proto)           # kernels hold tensors and scalars (no mutable containers)
        shared = getattr(kernel, "scratch", ())  # scratch written and read within one call: shared
        for k, v in vars(kernel).items():
            if isinstance(v, torch.Tensor) and k not in shared:
                setattr(kernel, k, v.clone())
        return kernel

    def _stage_dtype(self, name: str, x: torch.Tensor) -> torch.dtype | None:
        """float32 for quantised spike input whose consumers all compute in float32 (exact: payload
        levels are small integers), converted once rather than per step, when the copy stays under
        INPUT_F32_BYTES."""
        plan = self.plan
        if not plan.quantized or plan.net[name].coding != "spikes":
            return None
        users = [pk for entries in plan.incoming.values() for pk, src, _ in entries if src == name]
        if users and all(pk.path == "float32" for pk in users) and x.numel() * 4 <= INPUT_F32_BYTES:
            return torch.float32
        return None

    def _staged(self, name: str, enc: torch.Tensor) -> torch.Tensor:
        """Quantised spike input laid out contiguous, as float32 where ``_stage_dtype`` says so."""
        plan = self.plan
        if not plan.quantized or plan.net[name].coding != "spikes" or enc.is_floating_point():
            return enc
        if self._stage_dtype(name, enc) is not None:
            return torch.empty(enc.shape, dtype=torch.float32, device=enc.device).copy_(enc)
        return enc.contiguous()

    def input_emission(self, node: Input, t: int) -> Emission | None:
        T = self.plan.timesteps
        if node.coding == "analog":
            return self.constant[node.name] if t < T else None
        if node.coding == "once":
            return Emission(self.inputs[node.name]) if t == 0 else None
        return Emission(self.inputs[node.name][t]) if t < T else None

    def run(self) -> None:
        """Step the batch through the run: layer-major (layer_major.py) where that is allowed and a
        chunk fits, else step-major (every population once per step)."""
        if self.chunk:
            run_layer_major(self, self.chunk)
            return
        plan, net = self.plan, self.plan.net
        T = plan.timesteps
        nodes = [net[name] for name in plan.order]
        always = {p.name for p in net.populations() if always_active(p)}
        for t in range(plan.steps):
            for node in nodes:
                name = node.name
                if isinstance(node, Input):
                    em = self.input_emission(node, t)
                elif name in always or node.t_start <= t < node.t_start + T:
                    em = self._step_population(node, t)
                else:
                    em = None
                    if hasattr(self.kernels[name], "receive"):   # kernels that take input outside their window (C3)
                        self._step_population(node, t, idle=True)
                ring = self.rings[name]
                ring[t % len(ring)] = em
            if self.voltages is not None:
                for name, trace in self.voltages.items():
                    trace.append(self.kernels[name].v.clone())

    def _step_population(self, pop: Population, t: int, idle: bool = False) -> Emission | None:
        """One population at step t: gather its input current, then update its neurons (or, outside
        its window, hand the input to a kernel that collects it, see C3)."""
        current = self._gather_current(pop, t)
        kernel = self.kernels[pop.name]
        if idle:
            kernel.receive(current, t - pop.t_start)
            return None
        spikes = kernel.step(current)
        if spikes is None:
            return None
        if self.records is not None:
            self.records[pop.name][:, t] = spikes
        return Emission(kernel.value(spikes), spikes)

    def _gather_current(self, pop: Population, t: int):
        """The summed current of every projection into ``pop`` delivered at step t (None: nothing).

        Float32-state targets also get a bound on this step's |u| (``kernel.u_hint``, from the
        projections' event counts) so their overflow checks can be skipped without a pass."""
        current = None
        hint = 0.0
        for pk, src, delay in self.plan.incoming[pop.name]:
            if t - delay < 0:
                continue
            ring = self.rings[src]
            em = ring[(t - delay) % len(ring)]
            if em is None:
                continue
            c = pk(em)
            if pk.acc_bits:
                self.acc_wrap[pop.name][t] += pk.last_wrap
            if hint is not None:
                hint = hint + pk.last_bound if pk.u_shift is not None else None
            current = c if current is None else current + c
        self.kernels[pop.name].u_hint = hint
        return current
