"""Float vs fixed-point fidelity: where, per layer, a quantised SNN departs from its float SNN and why.

For every T it compares three things on the same samples: the ANN, the float SNN (the converted
IR) and the fixed-point SNN (the quantised IR run bit-accurately). Every population is reported,
the output (Readout) layer included: the decoded-activation error against the float SNN
(quantisation error) and against the ANN (conversion error), whether its outputs became constant,
saturation / current-wrap / conv-wrap events, and the quantiser's findings (clipped weights, weights
rounded to zero, threshold rounding). At one T (the largest by default) the cause is found by
ablation (:mod:`spikeport.report.ablation`): own vs inherited error per layer, each layer's share
of the accuracy lost, and the datapath setting whose relaxation recovers it. Without ablation the
cause column is a heuristic ranking of the event counts (``cause_source`` says which).

C2 networks (``stbif`` / ``pmsm`` on a ViT) read the same way: a population's decoded activation is
its summed output (a neuron's level times its step), the count mismatch compares events per neuron,
and the ANN is the QANN the network was converted from (its quantisers' values).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..ir import Network


@dataclass
class LayerFidelity:
    """One population at one T."""

    layer: str
    source: str
    neurons: int
    neuron: str                    # IR neuron model (Readout for the output layer)
    output: bool                   # one of the network's outputs
    count_mismatch: float | None   # fraction of (sample, neuron) spike counts that differ (None: non-spiking)
    decode_error_fixed: float      # mean |a_fixed - a_float| / (max |a_float| or 1)
    decode_error_ann: float | None  # mean |a_float - a_ann| / (max |a_ann| or 1), when the ANN node is known
    rate_float: float
    rate_fixed: float
    saturation_events: int         # neuron-steps clipped at the top of the state range (lost charge)
    floor_events: int              # neuron-steps clipped at the bottom (bounds negative v; mostly benign)
    wrap_events: int
    conv_wrap_events: int          # incoming Conv sums wrapped to the datapath's conv_acc_bits
    clipped_weights: int
    zeroed_weights: int
    threshold_error: float
    constant_output: bool          # fixed-point activation identical for every sample while the float one varies
    cause: str
    error_own: float | None = None         # ablation: this layer fixed, fed the float network's spikes
    error_inherited: float | None = None   # ablation: this layer float, fed the fixed network's spikes
    share: float | None = None             # ablation: share of the accuracy lost
    cause_source: str = "heuristic"        # "ablation" when ``cause`` names a relaxed setting

@dataclass
class FidelityPoint:
    timesteps: int
    acc_float: float | None
    acc_fixed: float | None
    agreement: float               # fraction of samples whose float and fixed predictions agree
    layers: list[LayerFidelity] = field(default_factory=list)
    ablation: dict | None = None   # report.ablation.Ablation.to_json() at this T


@dataclass
class FidelityReport:
    acc_ann: float | None
    samples: int
    points: list[FidelityPoint]
    profile: str

    def to_json(self) -> dict:
        return {
            "acc_ann": self.acc_ann,
            "samples": self.samples,
            "profile": self.profile,
            "timesteps": [p.timesteps for p in self.points],
            "points": [asdict(p) for p in self.points],
        }


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    denom = float(np.max(np.abs(ref))) or 1.0
    return float(np.mean(np.abs(a - ref)) / denom)


def _quant_rows_by_layer(qnet: Network) -> dict[str, dict]:
    rows = qnet.meta.get("quantization", {}).get("layers", [])
    return {r.get("name"): r for r in rows if isinstance(r, dict)}


def _cause(lf: dict) -> str:
    """Name the largest contributor to a layer's divergence, in the order a user would check.

    Event counts matter only above 0.1% of neuron-steps, zeroed weights above 5% of the layer's
    weights; otherwise the difference is plain rounding of weights, biases and inputs."""
    if not lf["count_mismatch"] and lf["decode_error_fixed"] == 0:
        return "identical"
    if lf["constant_output"]:
        return "constant output"
    if lf["saturation_events"] > 1e-3 * lf["neuron_steps"]:
        return "saturation"
    if lf["wrap_events"] + lf["conv_wrap_events"] > 1e-3 * lf["neuron_steps"]:
        return "current wrap"
    if lf["clipped_weights"] > 0:
        return "weight clipping"
    if lf["zeroed_weights"] > 0.05 * lf["weights"]:
        return "weights zeroed"
    if lf["threshold_error"] > 1e-3:
        return "vth rounding"
    return "rounding"


def compare_runs(net: Network, qnet: Network, float_res, fixed_res, timesteps: int,
                 ann_acts: dict[str, np.ndarray] | None = None) -> list[LayerFidelity]:
    """Per-population comparison (every population, output included) of a float and a fixed run."""
    qrows = _quant_rows_by_layer(qnet)
    layers = []
    for pop in net.populations():
        if pop.name not in qnet:
            continue
        af = np.asarray(float_res.activations[pop.name], dtype=np.float64)
        aq = np.asarray(fixed_res.activations[pop.name], dtype=np.float64)
        spiking = pop.name in float_res.spike_counts and pop.name in fixed_res.spike_counts
        if spiking:
            cf = np.asarray(float_res.spike_counts[pop.name], dtype=np.float64)   # events per neuron
            cq = np.asarray(fixed_res.spike_counts[pop.name], dtype=np.float64)
        ann = None
        if ann_acts is not None and pop.source in ann_acts and np.size(ann_acts[pop.source]) == af.size:
            ref = ann_acts[pop.source].reshape(af.shape)
            ann = _rel_err(af, ref)
        stats_q = fixed_res.layers.get(pop.name, {})
        qrow = qrows.get(pop.name, {})
        n_weights = sum(p.get("n_weights", 0) for p in qrow.get("projections", []))
        flat_q, flat_f = aq.reshape(aq.shape[0], -1), af.reshape(af.shape[0], -1)
        constant = bool(len(aq) > 1 and np.all(np.ptp(flat_q, axis=0) == 0) and np.any(np.ptp(flat_f, axis=0) > 0))
        row = dict(
            layer=pop.name, source=pop.source, neurons=pop.size, neuron=type(pop.neuron).__name__,
            output=pop.name in qnet.outputs,
            count_mismatch=float(np.mean(cf != cq)) if spiking else None,
            decode_error_fixed=_rel_err(aq, af), decode_error_ann=ann,
            rate_float=float(np.mean(np.abs(cf))) / timesteps if spiking else 0.0,
            rate_fixed=float(np.mean(np.abs(cq))) / timesteps if spiking else 0.0,
            saturation_events=int(stats_q.get("saturation_high", 0)),
            floor_events=int(stats_q.get("saturation_events", 0)) - int(stats_q.get("saturation_high", 0)),
            wrap_events=int(stats_q.get("wrap_events", 0)),
            conv_wrap_events=int(stats_q.get("conv_wrap_events", 0)),
            clipped_weights=int(sum(p.get("clipped", 0) for p in qrow.get("projections", []))),
            zeroed_weights=int(sum(p.get("zeroed", 0) for p in qrow.get("projections", []))),
            threshold_error=float(qrow.get("threshold_rel_err", 0.0) or 0.0),
            constant_output=constant,
        )
        row["cause"] = _cause({**row, "weights": n_weights, "neuron_steps": af.size * timesteps})
        layers.append(LayerFidelity(**row))
    layers.extend(_operator_rows(net, qnet, float_res, fixed_res, ann_acts))
    return layers


def _operator_rows(net: Network, qnet: Network, float_res, fixed_res, ann_acts) -> list[LayerFidelity]:
    """Typed operators (Transformer networks): decoded mean output, fixed vs float (and vs the ANN
    node of the same name when known); ``neuron`` says where it runs and in which arithmetic."""
    rows = []
    qops = {o.name: o for o in qnet.operators()}
    for op in net.operators():
        if op.name not in float_res.activations or op.name not in fixed_res.activations or op.name not in qops:
            continue
        af = np.asarray(float_res.activations[op.name], dtype=np.float64)
        aq = np.asarray(fixed_res.activations[op.name], dtype=np.float64)
        ann = None
        if ann_acts is not None and op.name in ann_acts and ann_acts[op.name].size == af.size:
            ann = _rel_err(af, ann_acts[op.name].reshape(af.shape))
        q = qops[op.name]
        sat = int(fixed_res.layers.get(op.name, {}).get("saturation_events", 0))
        err = _rel_err(aq, af)
        flat_q, flat_f = aq.reshape(aq.shape[0], -1), af.reshape(af.shape[0], -1)
        constant = bool(len(aq) > 1 and np.all(np.ptp(flat_q, axis=0) == 0) and np.any(np.ptp(flat_f, axis=0) > 0))
        cause = ("identical" if err == 0 else "constant output" if constant else "saturation" if sat
                 else f"{q.arithmetic} arithmetic" if q.arithmetic != "none" else "inherited")
        rows.append(LayerFidelity(
            layer=op.name, source=op.name, neurons=int(np.prod(op.shape)),
            neuron=f"{type(op).__name__} ({q.runs_on}, {q.arithmetic})", output=False, count_mismatch=None,
            decode_error_fixed=err, decode_error_ann=ann, rate_float=0.0, rate_fixed=0.0, saturation_events=sat,
            floor_events=0, wrap_events=0, conv_wrap_events=0, clipped_weights=0, zeroed_weights=0, threshold_error=0.0,
            constant_output=constant, cause=cause))
    return rows


@dataclass
class _RunView:
    """A mixed run (simulator.mixed) seen through the attributes compare_runs reads."""

    activations: dict
    spike_counts: dict
    layers: dict
    predictions: np.ndarray

    @classmethod
    def of(cls, mixed, out: str) -> "_RunView":
        act = mixed.activations[out]
        return cls(mixed.activations, mixed.spike_counts, mixed.events, act.reshape(act.shape[0], -1).argmax(axis=1))

    def accuracy(self, y) -> float:
        return float(np.mean(self.predictions == np.asarray(y).reshape(-1)))


def fidelity(net: Network, qnet: Network, x: np.ndarray, y: np.ndarray | None, timesteps: list[int], *,
             simulate: Callable, ann_accuracy: float | None = None,
             ann_acts: dict[str, np.ndarray] | None = None, batch_size: int = 256,
             device: str | None = None, progress: bool = False, ablation_at: int | None = -1,
             run_variants: Callable | None = None, quantize: Callable | None = None,
             template_profile=None) -> FidelityReport:
    """Run float and fixed simulations at every T and compare them layer by layer.

    ``simulate`` is :func:`spikeport.simulator.simulate` (passed in so reports stay independent of
    the simulator's internals); ``ann_acts`` maps ANN node names to their activations on ``x``.
    ``ablation_at``: the T at which to attribute the loss by ablation (-1: the largest T; None: no
    ablation); it needs labels and ``run_variants`` / ``quantize`` / ``template_profile`` (see
    :func:`spikeport.report.ablation.ablate`). The ablation's float and fixed runs are the ones
    reported at that T (they equal ``simulate``'s exactly), so nothing is simulated twice.
    """
    from .ablation import _Runner, ablate

    if ablation_at == -1:
        ablation_at = max(timesteps)
    if qnet.operators():   # the mixed float/fixed runs of the ablation do not run operator networks yet
        ablation_at = None
    if ablation_at is not None and (y is None or run_variants is None or quantize is None or template_profile is None):
        ablation_at = None
    points = []
    for T in timesteps:
        ab = None
        if T == ablation_at:
            runner = _Runner(net, qnet, x, y, T, batch_size, device, run_variants)
            out = qnet.outputs[0]
            rf, rq = _RunView.of(runner.F, out), _RunView.of(runner.Q, out)
            ab = ablate(net, qnet, x, y, T, run_variants=run_variants, quantize=quantize, template_profile=template_profile,
                        batch_size=batch_size, device=device, runner=runner)
        else:
            rf = simulate(net, x, T, batch_size=batch_size, device=device, progress=progress)
            rq = simulate(qnet, x, T, batch_size=batch_size, device=device, progress=progress)
        acc_f = rf.accuracy(y) if y is not None else None
        acc_q = rq.accuracy(y) if y is not None else None
        agree = float(np.mean(np.asarray(rf.predictions) == np.asarray(rq.predictions)))
        rows = compare_runs(net, qnet, rf, rq, T, ann_acts)
        if ab is not None:
            by_name = {row.layer: row for row in ab.layers}
            for lf in rows:
                a = by_name.get(lf.layer)
                if a is None:
                    continue
                lf.error_own, lf.error_inherited, lf.share = a.error_own, a.error_inherited, a.share
                if a.cause.startswith("rounding") and lf.cause not in ("identical", "rounding", "vth rounding"):
                    # no relaxation changes the accuracy, but the counters show what happens in the layer
                    lf.cause = f"{lf.cause} (no accuracy effect)"
                else:
                    lf.cause, lf.cause_source = a.cause, "ablation"
        points.append(FidelityPoint(T, acc_f, acc_q, agree, rows, ab.to_json() if ab is not None else None))
    profile = qnet.datapath.profile if qnet.datapath is not None else "float"
    return FidelityReport(acc_ann=ann_accuracy, samples=int(len(x)), points=points, profile=profile)
