"""Cause by ablation: which layer, and which fixed-point setting in it, costs the accuracy.

Like per-layer sensitivity analysis in quantisation toolkits (quantise one layer at a time, restore
one layer at a time to float), but on the spiking network and down to the datapath setting. All runs
use the quantised network's timing and are mixed runs (:mod:`spikeport.simulator.mixed`): only the
changed population and what lies downstream of it are simulated, everything upstream is replayed
from the recorded float run F or fixed run Q. With L_1..L_n the populations in topological order:

    own error of L        L fixed, fed the float network's spikes (run A_L); error of L's decoded
                          activation against F. What L's own quantisation does.
    inherited error of L  L float, fed the fixed network's spikes (run B_L); error against F. What
                          reaches L from upstream.
    drop alone            acc(F) - acc(A_L)     (only L quantised)
    gain restored         acc(B_L) - acc(Q)     (only L back to float)
    share                 the mean of two telescoping orders: restoring layers to float from the
                          input side (C_k = L_1..L_k float, the rest fixed: acc(C_k) - acc(C_{k-1}))
                          and from the output side (acc with L_k..L_n float minus acc with
                          L_{k+1}..L_n float): a two-permutation Shapley estimate. Each order adds
                          up to acc(F) - acc(Q) exactly, so the shares account for the whole loss
                          (tolerance 1e-9: floating-point addition only); ``interaction`` = loss -
                          sum(drop alone) says how far single-layer views are from additive.
    setting recovery      acc(D_{L,S}) - acc(Q): L re-quantised with setting S relaxed (the rest as
                          Q), for S in :data:`RELAXATIONS`; the network-wide recovery relaxes S in
                          every layer (run G_S). A relaxation that leaves L's integers unchanged and
                          whose overflow counter was zero in Q recovers exactly 0 and is not run;
                          a layer whose quantisation alone costs nothing and whose restoration
                          alone gains nothing (drop alone <= 0, gain restored <= 0) is not
                          searched for settings (recorded in ``skipped``).

The error metric is the same as the fidelity table's: mean |a - a_F| / max |a_F| over samples and
neurons of the layer's decoded activation.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import networkx as nx
import numpy as np

from ..ir import Input, Network

# setting -> (Datapath fields relaxed, overflow counters that must be zero in Q to skip the run)
RELAXATIONS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "weight bits/exponent": (dict(weight_bits=24, weight_step=1, weight_exp_min=-24, weight_exp_max=24), ()),
    "threshold bits": (dict(threshold_bits=31), ()),
    "state width/saturation": (dict(state_bits=48), ("saturation_events",)),
    "current wrap": (dict(current_bits=48, conv_acc_bits=0), ("wrap_events", "conv_wrap_events", "int32_events")),
    "bias": (dict(bias_bits=32, bias_exp_max=24), ()),
    "input bits": (dict(input_bits=16), ()),
}
SHARE_TOLERANCE = 1e-9
_KERNEL_FIELDS = ("state_bits", "state_overflow", "current_bits", "current_overflow", "act_shift", "decay_bits",
                  "conv_acc_bits")


@dataclass
class LayerAblation:
    layer: str
    neuron: str
    output: bool
    error_total: float             # Q vs F, decoded activation
    error_own: float               # A_L vs F
    error_inherited: float         # B_L vs F
    drop_alone: float
    gain_restored: float
    share: float
    recovery: dict[str, float | None] = field(default_factory=dict)   # None: relaxation not quantisable
    skipped: list[str] = field(default_factory=list)                   # relaxations proven to change nothing
    cause: str = ""


@dataclass
class Ablation:
    timesteps: int
    samples: int
    acc_float: float
    acc_fixed: float
    loss: float
    layers: list[LayerAblation]
    network_recovery: dict[str, float | None]
    blame_layer: str | None
    blame_setting: str | None
    hurt_most: dict[str, list[str]]
    unexplained: float             # loss - sum(share): 0 up to SHARE_TOLERANCE
    interaction: float             # loss - sum(drop_alone)
    runs: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    denom = float(np.max(np.abs(ref))) or 1.0
    return float(np.mean(np.abs(np.asarray(a, np.float64) - ref)) / denom)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(np.asarray(a), np.asarray(b))


def _layer_unchanged(q: Network, r: Network, name: str, counters: tuple[str, ...], events: dict) -> bool:
    """True when population ``name`` computes exactly the same in ``r`` as in ``q`` on the same inputs."""
    pq, pr = q[name], r[name]
    if type(pq.neuron) is not type(pr.neuron):
        return False
    for f in pq.neuron.__dataclass_fields__:
        if not _same(getattr(pq.neuron, f), getattr(pr.neuron, f)):
            return False
    for a, b in zip(q.incoming(name), r.incoming(name)):
        if not (_same(a.weight, b.weight) and a.weight_exp == b.weight_exp):
            return False
        src_q, src_r = q[a.source], r[a.source]
        if isinstance(src_q, Input) and (src_q.scale != src_r.scale or src_q.payload != src_r.payload):
            return False
    if any(getattr(q.datapath, f) != getattr(r.datapath, f) for f in _KERNEL_FIELDS):
        return all(events.get(name, {}).get(c, 0) == 0 for c in counters)
    return True


def _quant_options(qnet: Network) -> dict:
    opts = dict(qnet.meta.get("quantization", {}).get("options", {}))
    keep = ("max_timesteps", "headroom_bits", "weight_percentile", "compensate_floor", "neg_value_rtol")
    return {k: opts[k] for k in keep if k in opts}


class _Runner:
    """Mixed runs on ``qnet``'s timing, replaying whatever a change cannot reach, batched: the float
    and fixed runs share one time loop, then each phase's ablation runs are stacked along the batch
    axis (``chunk`` variants per loop)."""

    def __init__(self, net: Network, qnet: Network, x, y, T: int, batch_size: int, device, run_variants,
                 chunk: int = 8):
        from ..simulator.mixed import Variant
        self.Variant = Variant
        self.net, self.qnet, self.x, self.y, self.T = net, qnet, x, y, T
        self.kw = dict(batch_size=batch_size, device=device)
        self.run_variants, self.chunk = run_variants, chunk
        self.pops = [p.name for p in qnet.populations()]
        self.out = qnet.outputs[0]
        self.desc = {p: set(nx.descendants(qnet.graph, p)) & set(self.pops) for p in self.pops}
        self.runs = 2
        self.F, self.Q = run_variants(qnet, [Variant({p: net for p in self.pops}), Variant({})], x, T, record=True,
                                      **self.kw)

    def accuracy(self, act: np.ndarray) -> float:
        pred = act.reshape(act.shape[0], -1).argmax(axis=1)
        return float(np.mean(pred == np.asarray(self.y).reshape(-1)))

    def spec(self, base_run, base_net: Network, changed: dict[str, Network], default: Network):
        """Populations in ``changed`` from their network, their descendants from ``default``, all
        others replayed from ``base_run`` (a full run of ``base_net``)."""
        computed = set(changed)
        for p in changed:
            computed |= self.desc[p]
        source, replay = {}, {}
        for p in self.pops:
            if p in changed:
                source[p] = changed[p]
            elif p in computed:
                source[p] = default
            elif p in base_run.spikes:
                replay[p] = base_run.spikes[p]
            else:  # a non-spiking population upstream of nothing changed: recompute as in the base run
                source[p] = base_net
        return base_run, self.Variant(source, replay)

    def run(self, specs: dict) -> dict:
        """key -> (base run, Variant)  =>  key -> activations of every population."""
        keys = list(specs)
        out = {}
        for a in range(0, len(keys), self.chunk):
            part = keys[a:a + self.chunk]
            results = self.run_variants(self.qnet, [specs[k][1] for k in part], self.x, self.T, **self.kw)
            for k, res in zip(part, results):
                acts = dict(specs[k][0].activations)
                acts.update(res.activations)
                out[k] = acts
        self.runs += len(keys)
        return out


def ablate(net: Network, qnet: Network, x, y, timesteps: int, *, run_variants, quantize, template_profile,
           relaxations: dict | None = None, batch_size: int = 256, device=None, runner=None) -> Ablation:
    """Attribute the float -> fixed accuracy loss at ``timesteps`` to layers and settings (module doc).

    ``run_variants`` is :func:`spikeport.simulator.mixed.run_variants`, ``quantize`` is
    :func:`spikeport.compiler.quantize` and ``template_profile`` any :class:`Profile` (its datapath is
    replaced by relaxed copies of ``qnet.datapath``): passed in so reports stay decoupled.
    """
    if y is None:
        raise ValueError("ablation needs labels y: accuracy loss is what it attributes")
    t0 = time.perf_counter()
    relax = RELAXATIONS if relaxations is None else relaxations
    r = runner or _Runner(net, qnet, x, y, int(timesteps), batch_size, device, run_variants)
    acc_f, acc_q = r.accuracy(r.F.activations[r.out]), r.accuracy(r.Q.activations[r.out])
    loss = acc_f - acc_q
    events = r.Q.events

    relaxed: dict[str, Network | None] = {}
    opts = _quant_options(qnet)
    for s, (fields, _) in relax.items():
        dp = replace(qnet.datapath, **fields)
        prof = replace(template_profile, name=f"{qnet.datapath.profile} ({s} relaxed)", datapath=dp)
        kw = dict(opts)
        if "input_bits" in fields:
            kw["input_bits"] = fields["input_bits"]
        else:
            kw["input_bits"] = qnet.meta.get("quantization", {}).get("options", {}).get("input_bits")
        try:
            relaxed[s], _ = quantize(net, prof, **kw)
        except ValueError:
            relaxed[s] = None

    # phase 1: each layer alone fixed (A), alone float (B), and both telescoping orders
    n = len(r.pops)
    specs = {}
    for k, name in enumerate(r.pops):
        specs[("A", k)] = r.spec(r.F, net, {name: qnet}, net)
        specs[("B", k)] = r.spec(r.Q, qnet, {name: net}, qnet)
        if k + 1 < n:    # input side: L_1..L_{k+1} float, the rest fixed
            specs[("C", k)] = r.spec(r.F, net, {p: qnet for p in r.pops[k + 1:]}, qnet)
        if 0 < k < n - 1:  # output side: L_{k+1}..L_n float (k = n - 1 is B of the last layer)
            specs[("S", k)] = r.spec(r.Q, qnet, {p: net for p in r.pops[k:]}, net)
    acts = r.run(specs)
    acc = {key: r.accuracy(a[r.out]) for key, a in acts.items()}
    suffix_acc = {n: acc_q, 0: acc_f, n - 1: acc[("B", n - 1)]} if n > 1 else {1: acc_q, 0: acc_f}
    suffix_acc.update({k: acc[("S", k)] for k in range(1, n - 1)})

    layers = []
    cum_acc = acc_q
    for k, name in enumerate(r.pops):
        c_acc = acc_f if k + 1 == n else acc[("C", k)]
        row = LayerAblation(
            layer=name, neuron=type(qnet[name].neuron).__name__, output=name in qnet.outputs,
            error_total=_rel_err(r.Q.activations[name], r.F.activations[name]),
            error_own=_rel_err(acts[("A", k)][name], r.F.activations[name]),
            error_inherited=_rel_err(acts[("B", k)][name], r.F.activations[name]),
            drop_alone=acc_f - acc[("A", k)], gain_restored=acc[("B", k)] - acc_q,
            share=0.5 * ((c_acc - cum_acc) + (suffix_acc[k] - suffix_acc[k + 1])))
        cum_acc = c_acc
        layers.append(row)

    # phase 2: settings relaxed one layer at a time (D), and in every layer at once (G)
    specs = {}
    for row in layers:
        quiet = row.drop_alone <= 0 and row.gain_restored <= 0
        for s, rq in relaxed.items():
            if quiet:
                row.recovery[s] = 0.0
                row.skipped.append(s)
            elif rq is None:
                row.recovery[s] = None
            elif _layer_unchanged(qnet, rq, row.layer, relax[s][1], events):
                row.recovery[s] = 0.0
                row.skipped.append(s)
            else:
                specs[("D", row.layer, s)] = r.spec(r.Q, qnet, {row.layer: rq}, qnet)
    network_recovery: dict[str, float | None] = {}
    for s, rq in relaxed.items():
        if rq is None:
            network_recovery[s] = None
        elif all(s in row.skipped for row in layers):
            network_recovery[s] = 0.0
        else:
            specs[("G", s)] = r.spec(r.Q, qnet, {p: rq for p in r.pops}, rq)
    acts = r.run(specs)
    for key, a in acts.items():
        if key[0] == "D":
            next(row for row in layers if row.layer == key[1]).recovery[key[2]] = r.accuracy(a[r.out]) - acc_q
        else:
            network_recovery[key[1]] = r.accuracy(a[r.out]) - acc_q
    for row in layers:
        row.recovery = {s: row.recovery[s] for s in relax}
        row.cause = _layer_cause(row)
    network_recovery = {s: network_recovery[s] for s in relax}

    hurt = {}
    for s in relax:
        ranked = sorted((row for row in layers if (row.recovery.get(s) or 0) > 0), key=lambda row: -row.recovery[s])
        hurt[s] = [row.layer for row in ranked]
    blame_layer = max(layers, key=lambda row: row.share).layer if layers and loss > 0 else None
    rec = {s: v for s, v in network_recovery.items() if v is not None and v > 0}
    blame_setting = max(rec, key=rec.get) if rec and loss > 0 else None
    return Ablation(timesteps=int(timesteps), samples=int(len(r.y)), acc_float=acc_f, acc_fixed=acc_q, loss=loss,
                    layers=layers, network_recovery=network_recovery, blame_layer=blame_layer,
                    blame_setting=blame_setting, hurt_most=hurt,
                    unexplained=loss - sum(row.share for row in layers),
                    interaction=loss - sum(row.drop_alone for row in layers),
                    runs=r.runs, seconds=time.perf_counter() - t0)


def _layer_cause(row: LayerAblation) -> str:
    """The relaxed setting that recovers the most accuracy; else whether the error is own or inherited."""
    rec = {s: v for s, v in row.recovery.items() if v is not None and v > 0}
    if rec:
        return max(rec, key=rec.get)
    if row.error_total == 0:
        return "identical"
    if row.error_inherited > row.error_own:
        return "inherited from upstream"
    return "rounding (no single setting recovers accuracy)"
