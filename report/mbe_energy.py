"""Per-neuron energy of MBE neurons as paper 001 computes it, from a measured firing rate.

Paper 001 (Energy Estimation): one MBE neuron costs ``T * N * eta * E_AC`` (every spike of a basis
is one synaptic accumulate), against the ANN operation's FLOPs at ``E_MAC`` per MAC with one MAC =
two FLOPs (GELU: 70 FLOPs = 35 MACs, the figure the paper cites from Jiang et al. 2024; with
eta = 38.22 %, N = 4, T = 16 this gives 16 * 4 * 0.3822 * 0.9 pJ = 22.0 pJ, 13.7 % of 161 pJ).
E_AC and E_MAC come from the generic45nm profile (Horowitz ISSCC 2014, methods.md section 7).

The rate eta is per basis and step of the branch the input drives: with the relu(x)/relu(-x)
split at most one branch fires for a given x, so eta = spikes / (samples * neurons * N * T) and
T * N * eta is the per-neuron spike count. This is the neuron alone: the synapses downstream of a
spike (fan-out) and the operators around MBE neurons (exponent split, normalisation) are not in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .energy import horowitz

GELU_ANN_FLOPS = 70   # paper 001 citing Jiang et al. 2024 (STA)


@dataclass
class MBENeuronEnergy:
    """Energy (pJ) of one MBE neuron per sample, the ANN operation it replaces, and their ratio."""

    timesteps: int
    bases: int
    rate: float
    e_ac_pj: float
    spikes: float              # T * N * rate
    energy_pj: float           # spikes * E_AC
    ann_flops: float | None
    ann_pj: float | None       # ann_flops / 2 * E_MAC
    ratio: float | None        # energy_pj / ann_pj

    def to_json(self) -> dict:
        return dict(self.__dict__)


def mbe_neuron_energy(rate: float, timesteps: int, bases: int, ann_flops: float | None = GELU_ANN_FLOPS,
                      convention: str = "fp32") -> MBENeuronEnergy:
    """``T * N * rate * E_AC`` and, given the ANN operation's FLOPs, the ratio to ``FLOPs / 2 * E_MAC``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"MBE energy: firing rate {rate} must be in [0, 1] (spikes per basis and step)")
    if timesteps < 1 or bases < 1:
        raise ValueError(f"MBE energy: timesteps {timesteps} and bases {bases} must be >= 1")
    h = horowitz(convention)
    spikes = timesteps * bases * rate
    energy = spikes * h.e_ac
    ann = None if ann_flops is None else ann_flops / 2 * h.e_mac
    return MBENeuronEnergy(timesteps, bases, float(rate), h.e_ac, spikes, energy, ann_flops, ann,
                           None if not ann else energy / ann)


def mbe_firing_rate(result, population: str, bases: int) -> float:
    """eta of an MBE population from a ``SimResult``: spikes / (samples * neurons * N * T)."""
    layer = result.layers.get(population)
    if layer is None or "spikes" not in layer:
        raise ValueError(f"MBE energy: the simulation has no spike count for population {population!r}")
    samples = int(result.outputs.shape[0])
    return layer["spikes"] / (samples * layer["neurons"] * bases * result.timesteps)


# --------------------------------------------------------------------------- the honest total
# Arithmetic per element of the exponent/mantissa operators (ir/operators_mbe.py), as (adds, mults):
# Exp2Split: a compare of the row max, the subtraction, the multiply by scale*log2(e), the floor
#   (a subtraction of the fraction); MantExp: one add per summed element, then per row the scale
#   multiply and the eps add (frexp is a leading-one detection, counted as one add); Ldexp: one
#   exponent add per element. Adds cost E_AC, multiplies E_MAC (fp32, the papers' convention).
OPERATOR_ARITHMETIC = {"Exp2Split": (3, 1), "Ldexp": (1, 0)}
MANTEXP_PER_ELEMENT = (1, 0)
MANTEXP_PER_ROW = (2, 1)


@dataclass
class MBENetworkEnergy:
    """Per-sample counts and energy (pJ) of an MBE network (C3), every part named.

    neuron_spikes      events of the MBE populations (GELU, 2^f, 1/M, 1/sqrt M): one AC each
                       (paper 001 counts exactly these: T * N * eta * E_AC per neuron)
    identity_spikes    spikes of the identity MBE neurons of the product operators: one AC each
    product_pairs      coinciding spike pairs of the product form: one accumulate (AC) of D_pq each
    synapse_acs        projections fed by MBE spikes: every event times the fan-out (one AC each)
    synapse_macs       projections fed by analog values (relays, operator outputs, the input): MACs
    operator_adds / operator_mults   the exponent/mantissa operators (OPERATOR_ARITHMETIC)
    paper_pj           what the paper's convention counts: neuron_spikes * E_AC
    total_pj           everything above: ACs * E_AC + MACs * E_MAC
    product_macs       the products as the fixed-point datapath computes them (compiler/quantize_mbe_vit.py):
                       the two operands' integer sums multiplied, one MAC per product term (B n k m for a
                       matrix product), instead of one accumulate per coinciding spike pair
    total_sum_form_pj  total_pj with product_macs * E_MAC in place of the pairs
    """

    neuron_spikes: float
    identity_spikes: float
    product_pairs: float
    synapse_acs: float
    synapse_macs: float
    operator_adds: float
    operator_mults: float
    e_ac_pj: float
    e_mac_pj: float
    paper_pj: float
    total_pj: float
    parts_pj: dict = field(default_factory=dict)
    gelu: dict = field(default_factory=dict)   # per GELU population: rate eta and per-neuron energy
    product_macs: float = 0.0                  # the products as the fixed-point datapath forms them
    total_sum_form_pj: float = 0.0             # total with product_macs * E_MAC in place of the pairs

    def to_json(self) -> dict:
        return dict(self.__dict__)


def mbe_network_energy(net, counts, convention: str = "fp32") -> MBENetworkEnergy:
    """The honest per-sample total of an MBE Transformer from the counts of
    ``simulator.transformer_mbe.simulate_mbe`` (neurons, product form, synapses, operators), next to
    the paper's neuron-only figure. Per GELU population also eta and T * N * eta * E_AC."""
    from ..ir import operators as O
    from ..ir import operators_mbe as OM
    from ..ir.neurons_mbe import MBE_MODELS as MBE
    from ..ir.nodes import Conv2d, Dense, Identity, Input, Operator, Population

    h = horowitz(convention)
    n = max(int(counts.samples), 1)
    T = int(counts.timesteps)
    neuron_spikes = sum(counts.population_events.values()) / n
    identity_spikes = sum(counts.product_spikes.values()) / n
    pairs = sum(counts.product_pairs.values()) / n
    acs = macs = 0.0
    for p in net.projections():
        src = net[p.source]
        dst = net[p.target]
        w = np.asarray(p.weight)
        if isinstance(p, O.TokenDense):
            fan_out, per_target = int(w.shape[0]), int(w.shape[1])
        elif isinstance(p, Dense):
            fan_out, per_target = int(w.shape[0]), int(w.shape[1])
        elif isinstance(p, Conv2d):
            fan_out, per_target = None, int(np.prod(w.shape[1:]))
        elif isinstance(p, Identity):
            fan_out, per_target = 1, 1
        else:
            raise ValueError(f"MBE energy: projection {p.name!r} ({type(p).__name__}) has no counting rule")
        if isinstance(src, Population) and isinstance(src.neuron, MBE) and fan_out is not None:
            acs += counts.population_events.get(src.name, 0) / n * fan_out
        elif isinstance(src, (Population, Operator, Input)):
            macs += int(np.prod(dst.shape)) * per_target
    adds = mults = 0.0
    product_macs = 0.0        # the fixed-point form: the product of the two integer sums (one MAC per term)
    for op in net.operators():
        if isinstance(op, OM._IdentityPair):
            k = int(net.shape_of(op.inputs[0])[-1]) if isinstance(op, OM.MBEMatMul) else 1
            product_macs += counts.product_outputs.get(op.name, 0) / n * k
        k = type(op).__name__
        el = counts.operator_elements.get(op.name, 0) / n
        if k in OPERATOR_ARITHMETIC:
            a, m = OPERATOR_ARITHMETIC[k]
            adds += a * el
            mults += m * el
        elif isinstance(op, OM.MantExp):
            src_el = int(np.prod(net[op.inputs[0]].shape)) if op.inputs[0] in net else 0
            rows = counts.operator_rows.get(op.name, 0) / n
            adds += MANTEXP_PER_ELEMENT[0] * src_el + MANTEXP_PER_ROW[0] * rows
            mults += MANTEXP_PER_ROW[1] * rows
    parts = {"MBE neurons (paper's count)": neuron_spikes * h.e_ac,
             "identity neurons of products": identity_spikes * h.e_ac,
             "product-form pairs": pairs * h.e_ac,
             "synapses fed by spikes (AC)": acs * h.e_ac,
             "synapses fed by analog values (MAC)": macs * h.e_mac,
             "exponent/mantissa operators": adds * h.e_ac + mults * h.e_mac}
    gelu = {}
    for pop in net.populations():
        if isinstance(pop.neuron, MBE) and pop.neuron.function == "gelu" and counts.population_inputs.get(pop.name):
            N = pop.neuron.bases
            eta = counts.population_events[pop.name] / (counts.population_inputs[pop.name] * N * T)
            gelu[pop.name] = mbe_neuron_energy(min(eta, 1.0), T, N).to_json()
    total = float(sum(parts.values()))
    return MBENetworkEnergy(neuron_spikes, identity_spikes, pairs, acs, macs, adds, mults, h.e_ac, h.e_mac,
                            neuron_spikes * h.e_ac, total, parts, gelu, product_macs,
                            total - pairs * h.e_ac + product_macs * h.e_mac)


@dataclass
class MBEEnergyReport:
    """What ``spikeport energy`` prints and writes for an MBE Transformer (C3), float or fixed."""

    profile: str
    timesteps: int
    steps_run: int
    samples: int
    quantized: bool
    convention: str
    energy: MBENetworkEnergy
    ann_macs: int | None
    ann_pj: float | None
    accuracy: float | None
    assumptions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        e = self.energy
        return {"profile": self.profile, "coding": "C3", "timesteps": self.timesteps, "steps_run": self.steps_run,
                "samples": self.samples, "quantized": self.quantized, "convention": self.convention,
                "units": "pJ per sample", "accuracy": self.accuracy, "mbe": e.to_json(),
                "paper_pj": e.paper_pj, "total_pj": e.total_pj, "total_sum_form_pj": e.total_sum_form_pj,
                "ann": {"macs": self.ann_macs, "compute_only_pj": self.ann_pj},
                "ratio_snn_over_ann": {k: (v / self.ann_pj if self.ann_pj else None) for k, v in
                                       (("paper", e.paper_pj), ("total", e.total_pj), ("total_sum_form", e.total_sum_form_pj))},
                "assumptions": list(self.assumptions)}

    def tables(self) -> list:
        from rich.table import Table
        e = self.energy
        t = Table(title=f"MBE network energy per sample ({'fixed point' if self.quantized else 'float'}, T={self.timesteps} "
                        f"per stage, {self.steps_run} steps; {self.convention}: E_AC {e.e_ac_pj} pJ, E_MAC {e.e_mac_pj} pJ)")
        for c in ("part", "energy per sample"):
            t.add_column(c, justify="left" if c == "part" else "right")
        for k, v in e.parts_pj.items():
            t.add_row(k, _fmt(v))
        t.add_row("paper's count (MBE neuron spikes only)", _fmt(e.paper_pj), style="bold")
        t.add_row("total, product form as pairs (paper's Eq. 12 count)", _fmt(e.total_pj), style="bold")
        t.add_row(f"total, products as the fixed-point sums' product ({e.product_macs:,.0f} MACs)",
                  _fmt(e.total_sum_form_pj), style="bold")
        if self.ann_pj is not None:
            t.add_row(f"ANN compute-only ({self.ann_macs:,} MACs)", _fmt(self.ann_pj))
        g = Table(title="GELU MBE neurons: measured rate eta and T * N * eta * E_AC per neuron (paper 001's figure)")
        for c in ("population", "eta", "energy per neuron", "vs ANN GELU (35 MACs)"):
            g.add_column(c, justify="left" if c == "population" else "right")
        for name, r in e.gelu.items():
            g.add_row(name, f"{100 * r['rate']:.2f} %", f"{r['energy_pj']:.1f} pJ",
                      "-" if r["ratio"] is None else f"{100 * r['ratio']:.1f} %")
        return [t, g]


def _fmt(v: float) -> str:
    for unit, scale in (("uJ", 1e6), ("nJ", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:,.3f} {unit}"
    return f"{v:,.1f} pJ"


def mbe_energy_report(net, x, timesteps: int | None, profile, *, y=None, ann_macs=None, convention: str = "fp32",
                      batch_size: int = 64, device=None) -> MBEEnergyReport:
    """Simulate the C3 network (float, or bit-accurate when quantised) on ``x`` and price its
    measured counts (:func:`mbe_network_energy`); ``ann_macs`` a MAC count or ``MacCount`` baseline."""
    from ..hw_profiles import load_profile
    from ..simulator.transformer_mbe import simulate_mbe
    from ..simulator.transformer_mbe_fixed import simulate_mbe_fixed

    prof = profile if hasattr(profile, "energy") else load_profile(profile)
    run = simulate_mbe_fixed if net.quantized else simulate_mbe
    res, counts = run(net, x, timesteps, batch_size=batch_size, device=device)
    e = mbe_network_energy(net, counts, convention)
    macs = None if ann_macs is None else int(ann_macs if isinstance(ann_macs, (int, float)) else ann_macs.total_macs)
    notes = ["MBE (C3) networks are priced from the staged simulation's counts (report/mbe_energy.py): the paper's "
             "count is the MBE neurons' spikes (one AC each); the totals add the product operators' identity neurons "
             "and pairing, the synapses (spike-fed ACs, analog-fed MACs) and the exponent/mantissa operators.",
             "The chip profile's own per-event figures are not applied to MBE networks (their neurons need microcode; "
             f"no published per-operation energy of {prof.name}'s embedded cores is used)."]
    return MBEEnergyReport(prof.name, counts.timesteps, res.steps_run, counts.samples, bool(net.quantized), convention, e,
                           macs, None if macs is None else macs * e.e_mac_pj,
                           None if y is None else res.accuracy(y), notes)


__all__ = ["GELU_ANN_FLOPS", "MBEEnergyReport", "MBENetworkEnergy", "MBENeuronEnergy", "mbe_energy_report",
           "mbe_firing_rate", "mbe_network_energy", "mbe_neuron_energy"]
