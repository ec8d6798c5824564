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

from dataclasses import dataclass

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


__all__ = ["GELU_ANN_FLOPS", "MBENeuronEnergy", "mbe_firing_rate", "mbe_neuron_energy"]
