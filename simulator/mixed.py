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
makes per-layer ablations over whole test sets cheap. :func:`run_variants` batches several such
runs: the variants are stacked along the batch axis (variant-major rows), each population runs one
kernel per group of variants that share its network (or replays their codes), so V ablation runs
cost one time loop instead of V.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import distributed
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


@dataclass(frozen=True)
class Variant:
    """One mixed run: population -> network (default ``base``), population -> replayed codes."""

    source: dict
    replay: dict = field(default_factory=dict)


class _Group:
    """The rows (variants x samples) of one population that one kernel / one replay source serves."""

    def __init__(self, key, net: Network | None, variants: list[int]):
        self.key, self.net, self.variants = key, net, variants
        self.rows = None            # LongTensor of batch rows, set per batch
        self.kernel = None
        self.incoming: list = []    # (ProjectionKernel, source name, delay)
        self.in_bound = None


def _groups(base: Network, variants: list[Variant], device) -> dict[str, list[_Group]]:
    groups: dict[str, list[_Group]] = {}
    for p in base.populations():
        by_key: dict = {}
        for v, var in enumerate(variants):
            if p.name in var.replay:
                key = ("replay", id(var.replay[p.name]))
                net = None
            else:
                net = var.source.get(p.name, base)
                key = ("net", id(net))
            if key not in by_key:
                by_key[key] = _Group(key, net, [])
            by_key[key].variants.append(v)
        for g in by_key.values():
            if g.net is None:
                continue
            total = 0
            for proj in g.net.incoming(p.name):
                net = g.net
                pk = ProjectionKernel(proj, net.shape_of(proj.source), net.shape_of(p.name),
                                      source_max_abs(net, proj.source), net.quantized, device,
                                      acc_bits=net.datapath.conv_acc_bits if net.quantized else 0)
                g.incoming.append((pk, proj.source, int(base[proj.name].delay)))
                total += pk.acc_bound if net.quantized else 0
            if g.net.quantized:
                for pk, _, _ in g.incoming:
                    pk.use_int32_if(total)
            g.in_bound = total if g.net.quantized else None
        groups[p.name] = list(by_key.values())
    return groups


def run_mixed(base: Network, source: dict[str, Network], x, timesteps: int, *,
              replay: dict[str, np.ndarray] | None = None, record: bool = False, batch_size: int = 256,
              device=None) -> MixedResult:
    """Run ``base``'s graph with per-population networks (``source``) and replayed codes (``replay``).

    x        (N, *input.shape) analog/once data (one input) or a dict input name -> array
    source   population -> network supplying its neuron and incoming projections (default ``base``)
    replay   population -> recorded codes (N, T + latency, *shape) from an earlier run on ``base``'s
             timing (:attr:`MixedResult.spikes` of a run with ``record=True``)
    """
    return run_variants(base, [Variant(source, replay or {})], x, timesteps, record=record,
                        batch_size=batch_size, device=device)[0]


def run_variants(base: Network, variants: list[Variant], x, timesteps: int, *, record: bool = False,
                 batch_size: int = 256, device=None) -> list[MixedResult]:
    """Several mixed runs in one time loop, stacked along the batch axis; one result per variant.

    ``batch_size`` counts samples; a batch holds ``len(variants) * batch_size`` rows."""
    if not variants:
        return []
    device = torch.device(device) if device is not None else torch.device("cpu")
    T = int(timesteps)
    groups = _groups(base, variants, device)
    data = x if isinstance(x, dict) else {base.inputs()[0].name: x}
    data = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items()}
    n = int(next(iter(data.values())).shape[0])
    def one_batch(a: int) -> list[dict]:
        xs = {k: v[a:a + batch_size].to(device) for k, v in data.items()}
        return _run_batch(base, variants, groups, T, xs, a, device, record)
    with torch.no_grad(), exact_float_context():   # under torchrun the batches are shared out (distributed.py)
        chunks = distributed.map_pieces(range(0, n, batch_size), one_batch)
    results = []
    for v in range(len(variants)):
        out = MixedResult()
        for key in ("activations", "spike_counts", "spikes"):
            names = chunks[0][v][key].keys()
            setattr(out, key, {p: np.concatenate([c[v][key][p] for c in chunks], axis=0) for p in names})
        for p in chunks[0][v]["events"]:
            out.events[p] = {k: int(sum(c[v]["events"][p][k] for c in chunks)) for k in chunks[0][v]["events"][p]}
        results.append(out)
    return results


def _run_batch(base: Network, variants: list[Variant], groups: dict, T: int, xs: dict, start: int, device,
               record: bool) -> list[dict]:
    batch = int(next(iter(xs.values())).shape[0])
    V = len(variants)
    steps = T + base.latency()
    order = [nd.name for nd in base.nodes() if isinstance(nd, (Input, Population))]
    pops = [p.name for p in base.populations()]
    rows_of = lambda vs: torch.cat([torch.arange(v * batch, (v + 1) * batch, device=device) for v in vs])  # noqa: E731
    kernels_all = []
    for p in pops:
        for g in groups[p]:
            g.rows = rows_of(g.variants)
            if g.net is not None:
                g.kernel = kernel_class(g.net[p], g.net.quantized)(g.net[p], len(g.variants) * batch, device,
                                                                   g.net.datapath, g.in_bound)
                g.conv_wraps = torch.zeros(len(g.variants), dtype=torch.int64, device=device)
                kernels_all.append((p, g))
            else:  # replayed codes of these variants, stacked (rows, steps, n)
                arrs = [np.asarray(variants[v].replay[p][start:start + batch]) for v in g.variants]
                g.codes = torch.as_tensor(np.concatenate(arrs, axis=0)).reshape(len(g.variants) * batch, steps, -1).to(device)
    ring_len = {name: 1 for name in order}
    for p in pops:
        for g in groups[p]:
            for _, src, delay in g.incoming:
                ring_len[src] = max(ring_len[src], delay + 1)
    ring = {name: [None] * ring_len[name] for name in order}
    records = ({(p, id(g)): torch.zeros((len(g.variants) * batch, steps, base[p].size), dtype=torch.int8, device=device)
                for p, g in kernels_all if g.kernel.spiking} if record else {})
    value_kernels: dict = {}
    encoded: dict = {}
    input_em: dict = {}

    def emission(src: str, t_emit: int, g: _Group) -> Emission | None:
        node, net = base[src], g.net
        if isinstance(node, Input):
            if t_emit >= T or (node.coding == "once" and t_emit != 0):
                return None
            key = (src, id(net))
            if key not in encoded:
                enc = encode_input(net[src], xs[src], net.quantized, T)
                encoded[key] = enc.repeat(*((V,) + (1,) * (enc.dim() - 1))) if node.coding != "spikes" else \
                    enc.repeat(1, V, *((1,) * (enc.dim() - 2)))
            vals = encoded[key]
            ekey = (src, id(net), id(g))
            if node.coding == "analog":
                if ekey not in input_em:
                    input_em[ekey] = Emission(vals.index_select(0, g.rows))
                return input_em[ekey]
            if node.coding == "once":
                return Emission(vals.index_select(0, g.rows))
            return Emission(vals[t_emit].index_select(0, g.rows))
        codes = ring[src][t_emit % len(ring[src])]
        if codes is None:
            return None
        sub = codes.index_select(0, g.rows)
        if not sub.any():
            return None
        vk_key = (src, id(net))
        vk = value_kernels.get(vk_key)
        if vk is None:
            vk = kernel_class(net[src], net.quantized)(net[src], 1, device, net.datapath, None)
            value_kernels[vk_key] = vk
        return Emission(vk.value(sub if net.quantized else sub.to(torch.float64)), sub)

    for t in range(steps):
        for name in order:
            node = base[name]
            if isinstance(node, Input):
                continue
            if not (always_active(node) or node.t_start <= t < node.t_start + T):
                ring[name][t % len(ring[name])] = None
                continue
            codes = None
            for g in groups[name]:
                if g.net is None:
                    part = g.codes[:, t]
                else:
                    current = None
                    for pk, src, delay in g.incoming:
                        if t - delay < 0:
                            continue
                        em = emission(src, t - delay, g)
                        if em is None:
                            continue
                        c = pk(em)
                        if pk.acc_bits:
                            g.conv_wraps += pk.last_wrap_rows.reshape(len(g.variants), -1).sum(dim=1)
                        current = c if current is None else current + c
                    s = g.kernel.step(current)
                    if s is None:
                        continue
                    part = s.to(torch.int8)
                    if record:
                        records[(name, id(g))][:, t] = part
                if len(groups[name]) == 1:
                    codes = part
                else:
                    if codes is None:
                        codes = torch.zeros((V * batch, node.size), dtype=torch.int8, device=device)
                    codes.index_copy_(0, g.rows, part)
            ring[name][t % len(ring[name])] = codes
    outs = [{"activations": {}, "spike_counts": {}, "spikes": {}, "events": {}} for _ in range(V)]
    for p, g in kernels_all:
        net = g.net
        act = g.kernel.decode(T, base.coding, net.quantized)
        counts = g.kernel.spike_counts()
        counts = None if counts is None else counts.cpu().numpy().reshape((-1,) + tuple(base[p].shape))
        rec = records.get((p, id(g)))
        rec = None if rec is None else rec.cpu().numpy().reshape((-1, steps) + tuple(base[p].shape))
        for i, v in enumerate(g.variants):
            sl = slice(i * batch, (i + 1) * batch)
            outs[v]["activations"][p] = act[sl]
            if counts is not None:
                outs[v]["spike_counts"][p] = counts[sl]
            if rec is not None:
                outs[v]["spikes"][p] = rec[sl]
            if net.quantized and len(g.variants) == 1:
                # the neuron kernels count events per kernel, so only a kernel serving one variant
                # has that variant's counts (the ablation reads them from its single-variant F and Q runs)
                outs[v]["events"][p] = {"saturation_high": int(g.kernel.saturation_high.item()),
                                        "wrap_events": int(g.kernel.wrap.item()),
                                        "conv_wrap_events": int(g.conv_wraps[i].item()),
                                        "int32_events": int(g.kernel.int32.item()),
                                        "saturation_events": int(g.kernel.saturation.item())}
    return outs
