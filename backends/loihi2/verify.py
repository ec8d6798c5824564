"""Compare Lava's fixed_pt run with spikeport's bit-accurate simulator, spike for spike."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir import Network
from .runner import LavaResult, run_lava


@dataclass
class Divergence:
    """The first place where the two runs differ."""

    sample: int
    layer: str
    quantity: str          # "spikes" | "v" (per step) | "v_final"
    step: int | None       # None for v_final
    neuron: tuple[int, ...]
    spikeport: int
    lava: int

    def __str__(self) -> str:
        at = f"step {self.step}" if self.step is not None else "end of run"
        return (f"sample {self.sample}, layer {self.layer!r}, {self.quantity} of neuron {self.neuron} at {at}: "
                f"spikeport {self.spikeport}, Lava {self.lava}")


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`. ``identical`` is True when no compared value differs."""

    identical: bool
    first_divergence: Divergence | None
    compared: dict[str, list[str]]          # layer -> quantities compared
    mismatches: dict[str, int]              # layer -> number of differing values
    predictions_equal: bool
    lava: LavaResult | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.identical:
            return f"identical: {sum(len(v) for v in self.compared.values())} record sets over {len(self.compared)} layers"
        return f"DIVERGED: {self.first_divergence}; mismatches per layer {self.mismatches}"


def _first(a: np.ndarray, b: np.ndarray, lead: int):
    idx = np.argwhere(a != b)
    return None if idx.size == 0 else tuple(int(i) for i in idx[0])


def verify(qnet: Network, x, timesteps: int, native: bool = True, sim_result=None,
           progress: bool = False) -> VerifyReport:
    """Run ``spikeport.simulator.simulate`` and Lava on the same inputs; compare per layer.

    Compared: the spike code of every neuron at every step (both record it), the final v of every
    population, and v of every neuron at every step where Lava records it (spikeport's own
    processes; Lava's LIF/TernaryLIF expose only the final v).
    """
    from ...simulator import simulate
    if qnet.operators():  # Transformer operator networks: every node's payload at every step
        from .transformer import verify_operators
        return verify_operators(qnet, x, timesteps)
    sim = sim_result or simulate(qnet, x, timesteps, record_spikes=True, record_states=True, record_voltages=True)
    lava = run_lava(qnet, x, timesteps, native=native, progress=progress)
    order = [p.name for p in qnet.populations()]
    checks: list[tuple[str, str, np.ndarray, np.ndarray, bool]] = []
    for name in order:
        if name in sim.spikes:  # the simulator records no spikes for non-spiking readouts
            checks.append((name, "spikes", np.asarray(sim.spikes[name]).astype(np.int64),
                           lava.spikes[name].astype(np.int64), True))
        if sim.voltages is not None and name in lava.v:   # Lava's LIF/TernaryLIF record only the final v
            checks.append((name, "v", np.asarray(sim.voltages[name]).astype(np.int64), lava.v[name], True))
        checks.append((name, "v_final", np.asarray(sim.states[name]).astype(np.int64), lava.states[name], False))
    compared: dict[str, list[str]] = {}
    mismatches: dict[str, int] = {}
    first: Divergence | None = None
    best_key = None
    for name, qty, a, b, timed in checks:
        compared.setdefault(name, []).append(qty)
        if a.shape != b.shape:
            raise ValueError(f"layer {name!r}: {qty} shapes differ: spikeport {a.shape}, Lava {b.shape}")
        n_bad = int((a != b).sum())
        mismatches[name] = mismatches.get(name, 0) + n_bad
        where = _first(a, b, 2 if timed else 1)
        if where is None:
            continue
        sample, step = where[0], (where[1] if timed else None)
        neuron = where[2:] if timed else where[1:]
        key = (sample, step if step is not None else 10 ** 9, order.index(name))
        if best_key is None or key < best_key:
            best_key = key
            first = Divergence(sample, name, qty, step, neuron, int(a[where]), int(b[where]))
    preds = bool(np.array_equal(np.asarray(sim.predictions), lava.predictions))
    return VerifyReport(first is None, first, compared, {k: v for k, v in mismatches.items()}, preds, lava)
