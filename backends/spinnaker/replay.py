"""Packet-level replay of a SpiNNaker description, and step-by-step verification against the simulator.

The replay runs the bit-accurate simulator's own neuron kernels and projection arithmetic
(``simulator.engine.BatchRun``), but no population ever reads another population's output directly:

1. every step, each sending source's nonzero event values become multicast packets (key of the
   neuron's slice | neuron index, 32-bit two's-complement payload where the source uses one, control
   byte with parity and payload flag; packets.encode);
2. every packet is routed hop by hop through the compressed routing tables on the machine
   (routing.walk: first match, default routing, drops reported) - all packets of a step at once;
3. each target core takes only the packets delivered to it, checks the control byte, looks the key
   up in its own subscription table (which source slices it expects; a packet it does not expect is
   an error) and rebuilds its input vector from key and payload; the projection kernel then
   computes the current of the core's neurons from that vector (cores that rebuilt the same vector
   share one computation).

Dropped or misdelivered packets fail the run loudly. Traffic statistics (packets per step, per link
and per router per step, payload bits, energy from the profile's per-hop figures) are gathered on
the way; ``--trace`` writes the packets as EIEIO data messages.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...ir import Input
from ...simulator import simulate
from ...simulator.emission import Emission
from ...simulator.engine import BatchRun
from . import packets as pk_
from .description import Description
from .errors import SpinnakerError
from .routing import N_LINKS, flatten, walk


@dataclass
class Divergence:
    sample: int
    step: int
    layer: str
    neuron: int
    key: int
    chip: str
    what: str
    expected: int
    got: int

    def __str__(self) -> str:
        return (f"first divergence: sample {self.sample}, step {self.step}, layer {self.layer!r}, neuron {self.neuron}, "
                f"key 0x{self.key:08X}, chip {self.chip}: {self.what} expected {self.expected}, got {self.got}")


@dataclass
class Traffic:
    """Packet statistics of a replay (per-step figures are per sample: one sample = one run)."""

    samples: int = 0
    steps: int = 0
    packets: int = 0
    payload_packets: int = 0
    router_visits: int = 0
    router_visits_payload: int = 0
    link_hops: int = 0
    deliveries: int = 0
    dropped: int = 0
    max_packets_per_step: int = 0
    link_max: dict = field(default_factory=dict)      # (chip, link) -> most packets in one step
    router_max: dict = field(default_factory=dict)    # chip -> most packets in one step
    per_layer: dict = field(default_factory=dict)     # layer -> packets

    @property
    def payload_bits(self) -> int:
        return 32 * self.payload_packets

    def to_json(self, desc: Description, timestep_s: float) -> dict:
        m, lim, en = desc.machine, desc.profile.limits, desc.profile.energy
        per_hop = _hop_energy_pj(en)
        energy = None
        if per_hop is not None:
            plain = self.router_visits - self.router_visits_payload
            energy = (plain * per_hop[0] + self.router_visits_payload * per_hop[1]) * 1e-12
        rcap = lim.router_packets_per_s * timestep_s if lim.router_packets_per_s else None
        lcap = lim.link_packets_per_s * timestep_s if lim.link_packets_per_s else None
        top_link = max(self.link_max.items(), key=lambda kv: kv[1], default=(None, 0))
        top_router = max(self.router_max.items(), key=lambda kv: kv[1], default=(None, 0))
        n = max(self.samples, 1)
        return {
            "samples": self.samples, "steps": self.steps, "packets": self.packets,
            "packets_per_sample": self.packets / n, "packets_per_step": self.packets / max(n * self.steps, 1),
            "max_packets_per_step": self.max_packets_per_step, "payload_packets": self.payload_packets,
            "payload_bits": self.payload_bits, "wire_bits": 40 * (self.packets - self.payload_packets) + 72 * self.payload_packets,
            "router_visits": self.router_visits, "link_hops": self.link_hops, "deliveries": self.deliveries,
            "dropped": self.dropped,
            "max_link_packets_per_step": int(top_link[1]),
            "busiest_link": None if top_link[0] is None else f"chip {m.chip_name(top_link[0][0])} link {top_link[0][1]}",
            "link_capacity_per_step": lcap,
            "max_router_packets_per_step": int(top_router[1]),
            "busiest_router": None if top_router[0] is None else f"chip {m.chip_name(top_router[0])}",
            "router_capacity_per_step": rcap, "timestep_s": timestep_s,
            "routing_energy_j": energy, "routing_energy_j_per_sample": None if energy is None else energy / n,
            "energy_per_hop_pj": None if per_hop is None else {"40-bit": per_hop[0], "72-bit": per_hop[1]},
            "per_layer_packets": dict(self.per_layer),
        }


def _hop_energy_pj(en) -> tuple[float, float] | None:
    """Energy of one packet through one router, 40-bit and 72-bit: the profile's per-packet figures,
    else bits x bit_routed_pj, else spike_pj scaled by bits / 40."""
    if en.packet_pj is not None:
        return float(en.packet_pj), float(en.packet_payload_pj if en.packet_payload_pj is not None else en.packet_pj * 72 / 40)
    if en.bit_routed_pj is not None:
        return 40 * float(en.bit_routed_pj), 72 * float(en.bit_routed_pj)
    if en.spike_pj is not None:
        return float(en.spike_pj), float(en.spike_pj) * 72 / 40
    return None


class _Context:
    """State shared by the batches of one replay: description tables, statistics, trace, reference."""

    def __init__(self, desc: Description, trace=None, reference=None):
        self.desc = desc
        self.traffic = Traffic()
        self.trace = trace
        self.reference = reference          # SimResult with spikes (verify) or None
        self.divergence: Divergence | None = None
        self.compared = 0
        self.offset = 0
        net, pl, keys = desc.net, desc.placement, desc.keys
        n_slices = len(pl.slices)
        self.keys = {name: keys.neuron_keys(pl, name) for name in keys.sources}
        self.chip_of = {name: np.concatenate([np.full(s.neurons, s.chip) for s in pl.by_layer[name]])
                        for name in keys.sources}
        self.slice_of_neuron = {name: np.concatenate([np.full(s.neurons, s.id) for s in pl.by_layer[name]])
                                for name in keys.sources}
        max_core = max(max((c for c in cores), default=0) for cores in desc.machine.cores) + 1
        self.core_slice = np.full((desc.machine.n_chips, max_core), -1, dtype=np.int64)
        for s in pl.slices:
            self.core_slice[s.chip, s.core] = s.id
        self.slice_layer = [s.layer for s in pl.slices]
        self.layer_id = {name: k for k, name in enumerate(pl.by_layer)}
        self.slice_layer_id = np.array([self.layer_id[s.layer] for s in pl.slices], dtype=np.int64)
        self.value_dtype = {name: (torch.int8 if not src.payload else
                                   torch.int32 if max(-src.value_range[0], src.value_range[1]) < 2 ** 31 else torch.int64)
                            for name, src in keys.sources.items()}
        self.slice_start = np.array([s.start for s in pl.slices], dtype=np.int64)
        self.slice_stop = np.array([s.stop for s in pl.slices], dtype=np.int64)
        self.sender_of_number = np.full(max(len(keys.slice_key), 1), -1, dtype=np.int64)
        for sid, base in keys.slice_key.items():
            self.sender_of_number[base >> keys.index_bits] = sid
        self.expects = np.zeros((n_slices, n_slices), dtype=bool)      # [target slice, sender slice]
        for sid, tids in desc.routing.targets.items():
            self.expects[tids, sid] = True
        self.flat = flatten(desc.routing.tables, desc.machine.n_chips)     # the tables as the replay sees them
        self.receivers = {name: sorted({p.target for p in net.outgoing(name)}) for name in keys.sources}

    def new_run(self, plan, xs, record_spikes, record_voltages=False):
        run = ReplayRun(plan, xs, record_spikes or self.reference is not None, record_voltages, self, self.offset)
        self.offset += run.batch
        return run

    def diverge(self, d: Divergence) -> None:
        if self.divergence is None or (d.sample, d.step) < (self.divergence.sample, self.divergence.step):
            self.divergence = d


class ReplayRun(BatchRun):
    """One batch of the replay: the engine's kernels fed only from delivered packets."""

    def __init__(self, plan, xs, record_spikes, record_voltages, ctx: _Context, offset: int):
        super().__init__(plan, xs, record_spikes, record_voltages)
        self.ctx, self.offset = ctx, offset
        self.inbox: dict[tuple[str, str, int], tuple] = {}    # (target layer, source, step) -> packets
        self.keep = max(plan.ring.values())

    def run(self) -> None:
        plan, net, ctx = self.plan, self.plan.net, self.ctx
        T = plan.timesteps
        nodes = [net[name] for name in plan.order]
        senders = ctx.keys
        nc = ctx.desc.machine.n_chips
        for t in range(plan.steps):
            step_packets = np.zeros(self.batch, dtype=np.int64)
            self.step_links = np.zeros((self.batch, nc * N_LINKS), dtype=np.int64)
            self.step_routers = np.zeros((self.batch, nc), dtype=np.int64)
            for node in nodes:
                name = node.name
                if isinstance(node, Input):
                    em = self.input_emission(node, t)
                elif node.t_start <= t < node.t_start + T:
                    em = self._step_population(node, t)
                else:
                    em = None
                if ctx.reference is not None and not isinstance(node, Input) and self.records is not None \
                        and name in self.records:
                    self._check_spikes(node, t)
                if em is not None and name in senders:
                    step_packets += self._send(name, em, t)
            for key in [k for k in self.inbox if k[2] <= t - self.keep]:
                del self.inbox[key]
            tr = ctx.traffic
            tr.max_packets_per_step = max(tr.max_packets_per_step, int(step_packets.max(initial=0)))
            per_link, per_router = self.step_links.max(axis=0), self.step_routers.max(axis=0)
            for g in np.nonzero(per_link)[0]:
                key = (int(g) // N_LINKS, int(g) % N_LINKS)
                tr.link_max[key] = max(tr.link_max.get(key, 0), int(per_link[g]))
            for c in np.nonzero(per_router)[0]:
                tr.router_max[int(c)] = max(tr.router_max.get(int(c), 0), int(per_router[c]))
            if self.voltages is not None:
                for name, trace in self.voltages.items():
                    trace.append(self.kernels[name].v.clone())
        ctx.traffic.samples += self.batch
        ctx.traffic.steps = plan.steps

    # ---------------------------------------------------------------------------------- sending
    def _send(self, name: str, em: Emission, t: int) -> np.ndarray:
        ctx = self.ctx
        desc, tr = ctx.desc, ctx.traffic
        src = desc.keys.sources[name]
        values = em.base.detach().cpu().numpy().reshape(self.batch, -1)
        b, i = np.nonzero(values)
        vals = values[b, i].astype(np.int64)
        if src.payload:
            lo, hi = int(vals.min(initial=0)), int(vals.max(initial=0))
            if lo < -(1 << 31) or hi > (1 << 31) - 1:
                bad = lo if lo < -(1 << 31) else hi
                raise SpinnakerError(f"layer {name!r}: event value {bad} at step {t} does not fit the 32-bit packet "
                                     f"payload (limit [{-(1 << 31)}, {(1 << 31) - 1}])")
        elif len(vals) and (vals != 1).any():
            bad = int(vals[vals != 1][0])
            raise SpinnakerError(f"layer {name!r}: event value {bad} at step {t} on a source without payload "
                                 "(binary events must be 1)")
        keys = ctx.keys[name][i]
        head, pay = pk_.encode(keys, vals if src.payload else None, t)
        w = walk(desc.machine, ctx.flat, keys, ctx.chip_of[name][i])
        n = len(keys)
        tr.packets += n
        tr.per_layer[name] = tr.per_layer.get(name, 0) + n
        tr.payload_packets += n if src.payload else 0
        tr.router_visits += len(w.router_packet)
        tr.router_visits_payload += len(w.router_packet) if src.payload else 0
        tr.link_hops += len(w.link_packet)
        if w.dropped:
            tr.dropped += len(w.dropped)
            p, chip, why = w.dropped[0]
            raise SpinnakerError(f"replay: {len(w.dropped)} packets dropped at step {t}; first: layer {name!r}, neuron "
                                 f"{int(i[p])}, key 0x{int(keys[p]):08X}, chip {desc.machine.chip_name(chip)} ({why})")
        nl, nc = desc.machine.n_chips * N_LINKS, desc.machine.n_chips
        if len(w.link_packet):
            lk = w.link_chip * N_LINKS + w.link_id
            self.step_links += np.bincount(b[w.link_packet] * nl + lk, minlength=self.batch * nl).reshape(self.batch, nl)
        if len(w.router_packet):
            self.step_routers += np.bincount(b[w.router_packet] * nc + w.router_chip,
                                             minlength=self.batch * nc).reshape(self.batch, nc)
        if ctx.trace is not None and n:
            ctx.trace.write(b + self.offset, t, keys, vals if src.payload else None)
        self._deliver(name, t, w, head, pay, src.payload, b)
        if ctx.reference is not None:
            self._check_delivery(name, t)
        return np.bincount(b, minlength=self.batch)

    def _deliver(self, name: str, t: int, w, head, pay, payload: bool, b: np.ndarray) -> None:
        """Target cores: decode delivered packets, check them against their subscriptions, file them."""
        ctx = self.ctx
        keys = ctx.desc.keys
        self.ctx.traffic.deliveries += len(w.delivered_packet)
        p = w.delivered_packet
        target = ctx.core_slice[w.delivered_chip, w.delivered_core]
        if (target < 0).any():
            q = int(np.argmax(target < 0))
            raise SpinnakerError(f"replay: packet delivered to core {int(w.delivered_core[q])} of chip "
                                 f"{ctx.desc.machine.chip_name(int(w.delivered_chip[q]))}, which holds no slice")
        k, v = pk_.decode(head[p], pay[p], payload, f"layer {name!r} step {t}")
        sender = ctx.sender_of_number[(k >> np.uint64(keys.index_bits)).astype(np.int64)]
        ok = (sender >= 0) & ctx.expects[target, np.maximum(sender, 0)]
        if not ok.all():
            q = int(np.argmin(ok))
            raise SpinnakerError(f"replay: core slice {int(target[q])} ({ctx.slice_layer[int(target[q])]}) received key "
                                 f"0x{int(k[q]):08X} it does not subscribe to (step {t})")
        neuron = ctx.slice_start[sender] + (k & np.uint64(~keys.mask & 0xFFFFFFFF)).astype(np.int64)
        sample = b[p]
        if not payload:
            v = np.ones(len(k), dtype=np.int64)
        target_layer = ctx.slice_layer_id[target]
        for layer in ctx.receivers[name]:
            sel = target_layer == ctx.layer_id[layer]
            self.inbox[(layer, name, t)] = (target[sel], sample[sel], neuron[sel], v[sel])

    # ---------------------------------------------------------------------------------- receiving
    def _gather_current(self, pop, t: int):
        """Like the simulator's, but only from the packets delivered to each core of ``pop``."""
        current = None
        for pk, src, delay in self.plan.incoming[pop.name]:
            if t - delay < 0:
                continue
            got = self.inbox.get((pop.name, src, t - delay))
            if got is None or not len(got[0]):
                continue
            c = self._rebuild(pop, pk, src, got)
            current = c if current is None else current + c
        return current

    def _rebuild(self, pop, pk, src: str, got) -> torch.Tensor:
        """Current of every core slice of ``pop`` from the packets delivered to that core only."""
        target, sample, neuron, value = got
        n_src = int(np.prod(self.plan.net.shape_of(src)))
        out = None
        prev_v, prev_c = None, None
        for s in self.ctx.desc.placement.by_layer[pop.name]:
            sel = target == s.id
            dtype = self.ctx.value_dtype[src]
            v = torch.zeros((self.batch, n_src), dtype=dtype)
            if sel.any():
                v[torch.as_tensor(sample[sel]), torch.as_tensor(neuron[sel])] = torch.as_tensor(value[sel]).to(dtype)
            v = v.to(self.plan.device)
            if prev_v is not None and torch.equal(v, prev_v):
                c = prev_c
            else:
                c = pk(Emission(v))
                prev_v, prev_c = v, c
            if out is None:
                out = torch.zeros_like(c)
            out[:, s.start:s.stop] = c[:, s.start:s.stop]
        return out

    # ---------------------------------------------------------------------------------- verify
    def _reference_values(self, name: str, t: int) -> np.ndarray:
        node = self.plan.net[name]
        if isinstance(node, Input):
            em = self.input_emission(node, t)
            return em.base.detach().cpu().numpy().reshape(self.batch, -1).astype(np.int64)
        codes = self.ctx.reference.spikes[name][self.offset:self.offset + self.batch, t].reshape(self.batch, -1)
        return self.kernels[name].value(torch.as_tensor(codes).to(self.plan.device)).cpu().numpy().astype(np.int64)

    def _check_spikes(self, pop, t: int) -> None:
        ctx = self.ctx
        ref = ctx.reference.spikes[pop.name][self.offset:self.offset + self.batch, t].reshape(self.batch, -1)
        got = self.records[pop.name][:, t].cpu().numpy().reshape(self.batch, -1)
        ctx.compared += ref.size
        diff = np.nonzero(ref != got)
        if len(diff[0]):
            b, i = int(diff[0][0]), int(diff[1][0])
            key, chip = self._key_chip(pop.name, i)
            ctx.diverge(Divergence(self.offset + b, t, pop.name, i, key, chip, "spike code", int(ref[b, i]), int(got[b, i])))

    def _key_chip(self, layer: str, i: int) -> tuple[int, str]:
        ctx = self.ctx
        sid = next(s for s in ctx.desc.placement.by_layer[layer] if s.start <= i < s.stop)
        key = int(ctx.desc.keys.slice_key.get(sid.id, -1)) + (i - sid.start) if sid.id in ctx.desc.keys.slice_key else -1
        return key, ctx.desc.machine.chip_name(sid.chip)

    def _check_delivery(self, name: str, t: int) -> None:
        """Every target core received exactly the reference's nonzero events of the slices it subscribes to."""
        ctx = self.ctx
        ref = self._reference_values(name, t)
        for layer in ctx.receivers[name]:
            target, sample, neuron, value = self.inbox.get((layer, name, t), (np.zeros(0, np.int64),) * 4)
            for s in ctx.desc.placement.by_layer[layer]:
                want = np.zeros_like(ref)
                for sid in np.nonzero(ctx.expects[s.id])[0]:
                    if ctx.slice_layer[sid] == name:
                        a, z = ctx.slice_start[sid], ctx.slice_stop[sid]
                        want[:, a:z] = ref[:, a:z]
                got = np.zeros_like(ref)
                sel = target == s.id
                np.add.at(got, (sample[sel], neuron[sel]), value[sel])
                ctx.compared += got.size
                diff = np.nonzero(want != got)
                if len(diff[0]):
                    b, i = int(diff[0][0]), int(diff[1][0])
                    key, _ = self._key_chip(name, i)
                    ctx.diverge(Divergence(self.offset + b, t, name, i, key, ctx.desc.machine.chip_name(s.chip),
                                           f"value delivered to core {s.core} ({layer})", int(want[b, i]), int(got[b, i])))


# -------------------------------------------------------------------------------------- API
@dataclass
class ReplayResult:
    result: object                  # simulator.SimResult of the replay
    traffic: Traffic
    trace_messages: int = 0


def replay(desc: Description, x, timesteps: int, *, batch_size: int = 256, trace_path=None,
           record_spikes: bool = False, device=None) -> ReplayResult:
    """Packet-level replay of ``desc`` on samples ``x`` (module docstring); ``trace_path`` receives the
    packets as EIEIO data messages (packets.py), written to a temporary file renamed on success."""
    ctx = _Context(desc)
    if trace_path is None:
        res = simulate(desc.net, x, timesteps, batch_size=batch_size, record_spikes=record_spikes, device=device,
                       run_class=ctx.new_run)
        return ReplayResult(res, ctx.traffic, 0)
    trace_path = Path(trace_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{trace_path.name}.", suffix=".tmp", dir=trace_path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            ctx.trace = pk_.TraceWriter(fh)
            res = simulate(desc.net, x, timesteps, batch_size=batch_size, record_spikes=record_spikes,
                           device=device, run_class=ctx.new_run)
        os.replace(tmp, trace_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ReplayResult(res, ctx.traffic, ctx.trace.messages if ctx.trace is not None else 0)


@dataclass
class VerifyReport:
    identical: bool
    compared: int
    divergence: Divergence | None
    outputs_equal: bool
    predictions_equal: bool
    traffic: Traffic

    def __str__(self) -> str:
        if self.identical:
            return (f"identical: {self.compared} spike codes and delivered values compared step by step, outputs and "
                    f"predictions equal ({self.traffic.packets} packets routed, {self.traffic.dropped} dropped)")
        head = "NOT identical: "
        if self.divergence is not None:
            return head + str(self.divergence)
        return head + f"outputs equal: {self.outputs_equal}, predictions equal: {self.predictions_equal}"


def verify(desc: Description, x, timesteps: int, *, batch_size: int = 256, device=None) -> VerifyReport:
    """Replay and bit-accurate simulator on the same inputs, compared step by step (module docstring)."""
    ref = simulate(desc.net, x, timesteps, batch_size=batch_size, record_spikes=True, device=device)
    ctx = _Context(desc, reference=ref)
    res = simulate(desc.net, x, timesteps, batch_size=batch_size, record_spikes=True, device=device,
                   run_class=ctx.new_run)
    outputs_equal = bool(np.array_equal(res.outputs, ref.outputs)) and all(
        np.array_equal(res.output_states[k], ref.output_states[k]) for k in ref.output_states)
    preds = bool(np.array_equal(res.predictions, ref.predictions))
    identical = ctx.divergence is None and outputs_equal and preds
    return VerifyReport(identical, ctx.compared, ctx.divergence, outputs_equal, preds, ctx.traffic)
