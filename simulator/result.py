"""The outcome of one simulation: decoded outputs, spike statistics and optional records."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerStats:
    """Per-population counters summed over samples, neurons and the population's active window.

    spikes              events emitted (|s| > 0), all samples
    rate                spikes / (samples * neurons * T)  (events per neuron per step)
    saturation_events   neuron-steps where v was clipped to the state range (quantised only)
    saturation_high     of those, clipped at the top (lost positive charge: changes spike counts);
                        clipping at the bottom only bounds how negative v gets
    wrap_events         neuron-steps where the current u wrapped (quantised only)
    a_in_16bit_events   neuron-steps where the summed synaptic input a_in left int16 (Lava's a_in
                        port declares int16 precision 16 but its Python model never truncates)
    int32_events        neuron-steps where a_in << act_shift left int32 (Lava's Python model wraps
                        it modulo 2^32 there; we do the same)
    conv_wrap_events    incoming Conv2d sums wrapped to the datapath's conv_acc_bits (Lava's Conv
                        wraps to signed 24 bits), one per (sample, projection, neuron, step)
    conv_wrap_per_step  the same per simulation step (empty when no sum can wrap)
    """

    spikes: int = 0
    rate: float = 0.0
    saturation_events: int = 0
    saturation_high: int = 0
    wrap_events: int = 0
    a_in_16bit_events: int = 0
    int32_events: int = 0
    conv_wrap_events: int = 0
    conv_wrap_per_step: list = field(default_factory=list)
    neurons: int = 0

    @classmethod
    def counted(cls, neurons: int, spikes, samples: int, timesteps: int) -> "LayerStats":
        """Stats of a population whose counter is its events (``spikes`` None: it emits none, e.g. a relay)."""
        s = cls(neurons=neurons)
        if spikes is not None:
            s.spikes = int(spikes)
            s.rate = s.spikes / (samples * neurons * timesteps)
        return s
    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


@dataclass
class SimResult:
    """What :func:`spikeport.simulator.simulate` returns (numpy arrays, batch axis first).

    outputs        decoded values of ``net.outputs[0]``, float64 (N, *shape)
    all_outputs    decoded values of every output population
    activations    decoded activation of every population (N, *shape): the mean event value times
                   decode_scale plus decode_offset, i.e. what the SNN computes in place of the ANN
    predictions    argmax of the flattened ``outputs`` per sample (N,)
    spike_counts   events per neuron over the active window, int64 (N, *shape), spiking pops only
    layers         per population: ``LayerStats.as_dict()``
    timesteps      T;  steps_run: T + latency
    states         final v per population (float64 in float nets, int64 in quantised nets) when
                   ``record_states``; ``output_states`` holds the final integer v of the outputs
                   of a quantised net (always)
    spikes         per-step spike trains int8 (N, steps_run, *shape) when ``record_spikes``
    voltages       per-step membrane v after reset (N, steps_run, *shape) when ``record_voltages``
    """

    outputs: np.ndarray
    all_outputs: dict[str, np.ndarray]
    predictions: np.ndarray
    spike_counts: dict[str, np.ndarray]
    layers: dict[str, dict]
    timesteps: int
    steps_run: int
    quantized: bool
    states: dict[str, np.ndarray] | None = None
    output_states: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, np.ndarray] | None = None
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    voltages: dict[str, np.ndarray] | None = None

    def accuracy(self, y) -> float:
        """Fraction of samples whose prediction equals the label ``y`` (N,)."""
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != self.predictions.shape[0]:
            raise ValueError(f"accuracy: {y.shape[0]} labels for {self.predictions.shape[0]} samples")
        return float(np.mean(self.predictions == y))

    @property
    def total_spikes(self) -> int:
        return int(sum(layer["spikes"] for layer in self.layers.values()))
