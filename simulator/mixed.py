"""Mixed runs for ablations: every population from its own network, or replayed from a recorded run.

All networks passed in share the node names of ``base`` (a quantised network) and run on its
timing (delays, ``t_start``, latency). Population ``p`` takes its neuron and its incoming
projections from ``source[p]`` -- the float network (float kernels), ``base`` or a re-quantised
variant (bit-accurate kernels on that network's datapath) -- or, when listed in ``replay``, simply
re-emits the event codes recorded in an earlier run. Populations exchange event *codes* (+1/-1,
multi-spike counts), which mean the same in every variant; each consumer turns codes into payload
values with its own network's payload (``neg_value``, graded levels), and each input is encoded per
network (float values, or that network's integer levels). Because scheduling makes every spike train
a shifted copy of the zero-latency one, a run with every population from the float network
reproduces the float SNN exactly (tests/test_ablation.py checks it).

Only populations downstream of a changed one need computing; the rest are replayed, which is what
makes per-layer ablations over whole test sets cheap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..ir.graph import Network
from ..ir.nodes import Input, Population
from .emission import Emission
from .engine import always_active, encode_input, source_max_abs
from .neurons import kernel_class
from .synapses import ProjectionKernel, exact_float_context


@dataclass
class MixedResult:
    """Outcome of :func:`run_mixed` for the computed populations (replayed ones are not repeated).

    activations   decoded activation (N, *shape) per computed population
    spike_counts  events per neuron (N, *shape), computed spiking populations
    spikes        recorded codes (N, steps, *shape) int8 when ``record``
    events        per computed fixed-point population: saturation_high, wrap_events, conv_wrap_events,
                  int32_events (summed over samples)
    """

    activations: dict[str, np.ndarray] = field(default_factory=dict)
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    events: dict[str, dict] = field(default_factory=dict)


class _Plan:
    def __init__(self, base: Network, source: dict[str, Network], replay: dict, T: int, device):
        self.base, self.T, self.device = base, T, device
        self.steps = T + base.latency()
        self.order = [n.name for n in base.nodes() if isinstance(n, (Input, Population))]
        self.pops = [p.name for p in base.populations()]
        self.replay = replay
        self.source = {p: source.get(p, base) for p in self.pops}
        self.incoming: dict[str, list] = {}
        self.in_bound: dict[str, int | None] = {}
        ring = {name: 1 for name in self.order}
        for p in self.pops:
            if p in replay:
                continue
            net = self.source[p]
            entries, total = [], 0
            for proj in net.incoming(p):
                delay = int(base[proj.name].delay)
                pk = ProjectionKernel(proj, net.shape_of(proj.source), net.shape_of(p), source_max_abs(net, proj.source),
                                      net.quantized, device, acc_bits=net.datapath.conv_acc_bits if net.quantized else 0)
                entries.append((pk, proj.source, delay))
                ring[proj.source] = max(ring[proj.source], delay + 1)
                total += pk.acc_bound if net.quantized else 0
            if net.quantized:
                for pk, _, _ in entries:
                    pk.use_int32_if(total)
            self.incoming[p] = entries
            self.in_bound[p] = total if net.quantized else None
        self.ring = ring


def run_mixed(base: Network, source: dict[str, Network], x, timesteps: int, *,
              replay: dict[str, np.ndarray] | None = None, record: bool = False, batch_size: int = 256,
              device=None) -> MixedResult:
    """Run ``base``'s graph with per-population networks (``source``) and replayed codes (``replay``).

    x        (N, *input.shape) analog/once data (one input) or a dict input name -> array
    source   population -> network supplying its neuron and incoming projections (default ``base``)
    replay   population -> recorded codes (N, T + latency, *shape) from an earlier run on ``base``'s
             timing (:attr:`MixedResult.spikes` of a run with ``record=True``)
    """
    replay = replay or {}
    device = torch.device(device) if device is not None else torch.device("cpu")
    plan = _Plan(base, source, replay, int(timesteps), device)
    data = x if isinstance(x, dict) else {base.inputs()[0].name: x}
    data = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items()}
    n = int(next(iter(data.values())).shape[0])
    chunks = []
    with torch.no_grad(), exact_float_context():
        for a in range(0, n, batch_size):
            xs = {k: v[a:a + batch_size].to(device) for k, v in data.items()}
            rs = {p: torch.as_tensor(np.asarray(r[a:a + batch_size])).to(device) for p, r in replay.items()}
            chunks.append(_run_batch(plan, xs, rs, record))
    out = MixedResult()
    for key in ("activations", "spike_counts", "spikes"):
        names = chunks[0][key].keys()
        setattr(out, key, {p: np.concatenate([c[key][p] for c in chunks], axis=0) for p in names})
    for p in chunks[0]["events"]:
        out.events[p] = {k: int(sum(c["events"][p][k] for c in chunks)) for k in chunks[0]["events"][p]}
    return out


def _run_batch(plan: _Plan, xs: dict, replay: dict, record: bool) -> dict:
    base, T = plan.base, plan.T
    batch = int(next(iter(xs.values())).shape[0])
    kernels = {}
    for p in plan.pops:
        if p in plan.replay:
            continue
        net = plan.source[p]
        kernels[p] = kernel_class(net[p], net.quantized)(net[p], batch, plan.device, net.datapath, plan.in_bound[p])
    value_kernels: dict = {}
    encoded: dict = {}
    constant: dict = {}
    ring = {name: [None] * plan.ring[name] for name in plan.order}
    conv_wraps = {p: torch.zeros((), dtype=torch.int64, device=plan.device) for p in kernels}
    records = ({p: torch.zeros((batch, plan.steps, base[p].size), dtype=torch.int8, device=plan.device)
                for p, k in kernels.items() if k.spiking} if record else {})

    def emission(src: str, t_emit: int, net: Network) -> Emission | None:
        node = base[src]
        if isinstance(node, Input):
            key = (src, id(net))
            if key not in encoded:
                encoded[key] = encode_input(net[src], xs[src], net.quantized, T)
            vals = encoded[key]
            if node.coding == "analog":
                if t_emit >= T:
                    return None
                if key not in constant:
                    constant[key] = Emission(vals)
                return constant[key]
            if node.coding == "once":
                return Emission(vals) if t_emit == 0 else None
            return Emission(vals[t_emit]) if t_emit < T else None
        slot = ring[src][t_emit % len(ring[src])]
        if slot is None:
            return None
        codes, cache = slot
        em = cache.get(id(net))
        if em is None:
            vk_key = (src, id(net))
            vk = value_kernels.get(vk_key)
            if vk is None:
                vk = kernel_class(net[src], net.quantized)(net[src], 1, plan.device, net.datapath, None)
                value_kernels[vk_key] = vk
            em = Emission(vk.value(codes if net.quantized else codes.to(torch.float64)), codes)
            cache[id(net)] = em
        return em

    for t in range(plan.steps):
        for name in plan.order:
            node = base[name]
            if isinstance(node, Input):
                ring[name][t % len(ring[name])] = ("input", {})   # inputs are read through emission()
                continue
            active = always_active(node) or node.t_start <= t < node.t_start + T
            codes = None
            if active and name in plan.replay:
                codes = replay[name][:, t].reshape(batch, -1)
                if not codes.any():
                    codes = None
            elif active:
                net = plan.source[name]
                current = None
                for pk, src, delay in plan.incoming[name]:
                    if t - delay < 0:
                        continue
                    em = emission(src, t - delay, net)
                    if em is None:
                        continue
                    c = pk(em)
                    if pk.acc_bits:
                        conv_wraps[name] += pk.last_wrap
                    current = c if current is None else current + c
                k = kernels[name]
                s = k.step(current)
                if s is not None:
                    if record:
                        records[name][:, t] = s
                    codes = s.to(torch.int8)
            ring[name][t % len(ring[name])] = None if codes is None else (codes, {})
    out = {"activations": {}, "spike_counts": {}, "spikes": {}, "events": {}}
    for p, k in kernels.items():
        net = plan.source[p]
        shape = (batch,) + tuple(base[p].shape)
        out["activations"][p] = k.decode(T, base.coding, net.quantized)
        counts = k.spike_counts()
        if counts is not None:
            out["spike_counts"][p] = counts.cpu().numpy().reshape(shape)
        if net.quantized:
            out["events"][p] = {"saturation_high": int(k.saturation_high.item()), "wrap_events": int(k.wrap.item()),
                                "conv_wrap_events": int(conv_wraps[p].item()), "int32_events": int(k.int32.item()),
                                "saturation_events": int(k.saturation.item())}
    for p, r in records.items():
        out["spikes"][p] = r.cpu().numpy().reshape((batch, plan.steps) + tuple(base[p].shape))
    return out
