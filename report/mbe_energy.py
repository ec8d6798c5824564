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

    def to_json(self) -> dict:
        return dict(self.__dict__)


def mbe_network_energy(net, counts, convention: str = "fp32") -> MBENetworkEnergy:
    """The honest per-sample total of an MBE Transformer from the counts of
    ``simulator.transformer_mbe.simulate_mbe`` (neurons, product form, synapses, operators), next to
    the paper's neuron-only figure. Per GELU population also eta and T * N * eta * E_AC."""
    from ..ir import operators as O
    from ..ir import operators_mbe as OM
    from ..ir.neurons_mbe import MBE
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
    for op in net.operators():
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
    return MBENetworkEnergy(neuron_spikes, identity_spikes, pairs, acs, macs, adds, mults, h.e_ac, h.e_mac,
                            neuron_spikes * h.e_ac, float(sum(parts.values())), parts, gelu)


__all__ = ["GELU_ANN_FLOPS", "MBENetworkEnergy", "MBENeuronEnergy", "mbe_firing_rate", "mbe_network_energy",
           "mbe_neuron_energy"]
