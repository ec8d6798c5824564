"""Float vs fixed-point fidelity: where, per layer, a quantised SNN departs from its float SNN and why.

For every T it compares three things on the same samples: the ANN, the float SNN (the converted
IR) and the fixed-point SNN (the quantised IR run bit-accurately). Per population it reports the
fraction of neurons whose spike counts differ, the decoded-activation error against the float SNN
(quantisation error) and against the ANN (conversion error), saturation/wrap events, and the
quantiser's own findings for that layer (clipped weights, weights rounded to zero, threshold
rounding), then names the most likely cause.
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
    count_mismatch: float          # fraction of (sample, neuron) spike counts that differ float vs fixed
    decode_error_fixed: float      # mean |a_fixed - a_float| / (max |a_float| or 1)
    decode_error_ann: float | None  # mean |a_float - a_ann| / (max |a_ann| or 1), when the ANN node is known
    rate_float: float
    rate_fixed: float
    saturation_events: int         # neuron-steps clipped at the top of the state range (lost charge)
    floor_events: int              # neuron-steps clipped at the bottom (bounds negative v; mostly benign)
    wrap_events: int
    clipped_weights: int
    zeroed_weights: int
    threshold_error: float
    cause: str


@dataclass
class FidelityPoint:
    timesteps: int
    acc_float: float | None
    acc_fixed: float | None
    agreement: float               # fraction of samples whose float and fixed predictions agree
    layers: list[LayerFidelity] = field(default_factory=list)


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
    if lf["count_mismatch"] == 0 and lf["decode_error_fixed"] == 0:
        return "identical"
    if lf["saturation_events"] > 1e-3 * lf["neuron_steps"]:
        return "saturation"
    if lf["wrap_events"] > 1e-3 * lf["neuron_steps"]:
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
    """Per-population comparison of one float and one fixed-point simulation result."""
    qrows = _quant_rows_by_layer(qnet)
    layers = []
    for pop in net.populations():
        if pop.name not in qnet or not pop.neuron.spiking:
            continue
        cf = np.asarray(float_res.spike_counts[pop.name], dtype=np.float64)   # events per neuron
        cq = np.asarray(fixed_res.spike_counts[pop.name], dtype=np.float64)
        af = np.asarray(float_res.activations[pop.name], dtype=np.float64)
        aq = np.asarray(fixed_res.activations[pop.name], dtype=np.float64)
        ann = None
        if ann_acts is not None and pop.source in ann_acts:
            ref = ann_acts[pop.source].reshape(af.shape)
            ann = _rel_err(af, ref)
        stats_q = fixed_res.layers.get(pop.name, {})
        qrow = qrows.get(pop.name, {})
        n_weights = sum(p.get("n_weights", 0) for p in qrow.get("projections", []))
        row = dict(
            layer=pop.name, source=pop.source, neurons=pop.size,
            count_mismatch=float(np.mean(cf != cq)),
            decode_error_fixed=_rel_err(aq, af), decode_error_ann=ann,
            rate_float=float(np.mean(np.abs(cf))) / timesteps,
            rate_fixed=float(np.mean(np.abs(cq))) / timesteps,
            saturation_events=int(stats_q.get("saturation_high", 0)),
            floor_events=int(stats_q.get("saturation_events", 0)) - int(stats_q.get("saturation_high", 0)),
            wrap_events=int(stats_q.get("wrap_events", 0)),
            clipped_weights=int(sum(p.get("clipped", 0) for p in qrow.get("projections", []))),
            zeroed_weights=int(sum(p.get("zeroed", 0) for p in qrow.get("projections", []))),
            threshold_error=float(qrow.get("threshold_rel_err", 0.0) or 0.0),
        )
        row["cause"] = _cause({**row, "weights": n_weights, "neuron_steps": cf.size * timesteps})
        layers.append(LayerFidelity(**row))
    return layers


def fidelity(net: Network, qnet: Network, x: np.ndarray, y: np.ndarray | None, timesteps: list[int], *,
             simulate: Callable, ann_accuracy: float | None = None,
             ann_acts: dict[str, np.ndarray] | None = None, batch_size: int = 256,
             device: str | None = None, progress: bool = False) -> FidelityReport:
    """Run float and fixed simulations at every T and compare them layer by layer.

    ``simulate`` is :func:`spikeport.simulator.simulate` (passed in so reports stay independent of
    the simulator's internals); ``ann_acts`` maps ANN node names to their activations on ``x``.
    """
    points = []
    for T in timesteps:
        rf = simulate(net, x, T, batch_size=batch_size, device=device, progress=progress)
        rq = simulate(qnet, x, T, batch_size=batch_size, device=device, progress=progress)
        acc_f = rf.accuracy(y) if y is not None else None
        acc_q = rq.accuracy(y) if y is not None else None
        agree = float(np.mean(np.asarray(rf.predictions) == np.asarray(rq.predictions)))
        points.append(FidelityPoint(T, acc_f, acc_q, agree, compare_runs(net, qnet, rf, rq, T, ann_acts)))
    profile = qnet.datapath.profile if qnet.datapath is not None else "float"
    return FidelityReport(acc_ann=ann_accuracy, samples=int(len(x)), points=points, profile=profile)
