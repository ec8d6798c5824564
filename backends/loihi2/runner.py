"""Run a quantised IR network in Lava's bit-accurate CPU simulation (``fixed_pt`` models)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...ir import Network
from .plan import InputPlan, LavaPlan, event_values, plan_network


@dataclass
class LavaResult:
    """What :func:`run_lava` returns (numpy, batch axis first), mirroring the simulator's SimResult.

    outputs       decoded values of ``plan.outputs[0]`` (N, *shape)
    predictions   argmax of the flattened outputs (N,)
    spike_counts  per population: events (|s| > 0) per neuron in its active window (N, *shape)
    spikes        per population: event codes (N, steps_run, *shape) int8, s in {-1, 0, 1} (IF family,
                  GradedSignedIF: the value sent is the payload level) or the signed count (MultiSpikeIF)
    states        per population: final v (N, *shape) int64
    v             per population simulated by spikeport's own Process: v after reset each step
                  (N, steps_run, *shape); Lava's LIF/TernaryLIF give only the final v here
    """

    outputs: np.ndarray
    all_outputs: dict[str, np.ndarray]
    predictions: np.ndarray
    spike_counts: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray]
    states: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    timesteps: int
    steps_run: int
    layers: list[dict] = field(default_factory=list)


def input_integers(inp: InputPlan, x: np.ndarray) -> np.ndarray:
    """The integer payload of one input, the rule spikeport's simulator uses (docs/fixed_point.md):
    ``clip(floor(x / scale + 1/2), min_level, max_level)`` (round half up)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"input {inp.name!r}: data contains NaN or infinity")
    return np.clip(np.floor(x / inp.scale + 0.5), inp.min_level, inp.max_level).astype(np.int64)


def input_frames(inp: InputPlan, x_int: np.ndarray, timesteps: int, steps_run: int) -> np.ndarray:
    """Per-step input (steps_run, *shape): every step of [0, T) (analog, spikes) or step 0 only (once)."""
    frames = np.zeros((steps_run,) + tuple(inp.shape), dtype=np.int64)
    if inp.coding == "spikes":           # x_int is the spike train (T, *shape)
        frames[:timesteps] = x_int
    elif inp.coding == "analog":
        frames[:timesteps] = x_int
    else:
        frames[0] = x_int
    return frames


def _as_batches(plan: LavaPlan, x) -> dict[str, np.ndarray]:
    ins = plan.inputs
    if len(ins) != 1 and not isinstance(x, dict):
        raise ValueError(f"network has {len(ins)} inputs: pass x as a dict name -> array")
    data = x if isinstance(x, dict) else {ins[0].name: x}
    out = {}
    for inp in ins:
        arr = np.asarray(data[inp.name])
        lead = 2 if inp.coding == "spikes" else 1      # spike trains are (N, T, *shape)
        if arr.shape[lead:] != tuple(inp.shape) or (lead == 2 and arr.shape[1] != plan.timesteps):
            want = "(N, T, *" if lead == 2 else "(N, *"
            raise ValueError(f"input {inp.name!r}: data shape {arr.shape} does not match {want}{tuple(inp.shape)})")
        out[inp.name] = arr
    return out


def decode(plan: LavaPlan, name: str, spikes: np.ndarray, v_final: np.ndarray) -> np.ndarray:
    """Decoded activation of one population (batch first), following the IR's Population docstring:
    the sum of the event values (what the neuron process sends) times decode_scale, plus decode_offset."""
    scale, offset, state_scale = plan.decode[name]
    neuron = next(n for n in plan.neurons if n.name == name)
    shape = neuron.shape
    from ...ir import expand_channel
    scale, offset, state_scale = (expand_channel(a, shape) for a in (scale, offset, state_scale))
    if neuron.params.get("spiking", True) is False:
        value = v_final * state_scale
        return value / plan.timesteps if plan.coding == "C1" else value
    total = event_values(neuron.params, spikes).astype(np.float64).sum(axis=1)
    mean = total / plan.timesteps if plan.coding == "C1" else total
    return mean * scale + offset


def run_lava(qnet: Network | str | Path, x, timesteps: int | None = None, native: bool = True,
             progress: bool = False) -> LavaResult:
    """Run every sample of ``x`` (N, *input shape) through Lava's fixed_pt models, one by one.

    ``qnet`` is a quantised network (then ``timesteps`` is required) or a folder written by
    :func:`export`. The Lava network is compiled once; between samples its state (u, v, synaptic
    buffers, input data) is reset through Lava's Var interface. Lava's runtime is always stopped.
    ``progress`` shows a bar over the samples (Lava takes seconds per sample).
    """
    from .build import build_from_plan
    from .export import load_plan
    from . import transformer
    if isinstance(qnet, (str, Path)) and transformer.is_operator_export(qnet):
        folder = qnet
        qnet, exported_t = transformer.load_operator_export(folder)
        if timesteps not in (None, exported_t):
            raise ValueError(f"{folder}: exported for {exported_t} steps, asked for {timesteps}")
        timesteps = exported_t
    if isinstance(qnet, Network) and qnet.operators():   # one Lava run for the whole batch
        if timesteps is None:
            raise ValueError("run_lava(qnet, x, timesteps): timesteps is required for a network")
        return transformer.run_operators_lava(qnet, x, timesteps)[0]
    if isinstance(qnet, (str, Path)):
        plan = load_plan(qnet)
        if timesteps not in (None, plan.timesteps):
            raise ValueError(f"{qnet}: exported for {plan.timesteps} steps, asked for {timesteps}")
    else:
        if timesteps is None:
            raise ValueError("run_lava(qnet, x, timesteps): timesteps is required for a network")
        plan = plan_network(qnet, timesteps, native=native)
    T = plan.timesteps
    batches = _as_batches(plan, x)
    n = next(iter(batches.values())).shape[0]
    rec: dict[str, dict[str, list]] = {p.name: {"spikes": [], "v_final": [], "v": []} for p in plan.neurons}
    samples = range(n)
    if progress:
        from rich.progress import track
        samples = track(samples, description="Lava", total=n)
    with build_from_plan(plan) as lnet:
        for i in samples:
            data = {inp.name: input_frames(inp, input_integers(inp, batches[inp.name][i]), T, plan.steps_run)
                    for inp in plan.inputs}
            for name, r in lnet.run_sample(data).items():
                for key in rec[name]:
                    if key in r:
                        rec[name][key].append(r[key])
    spikes = {k: np.stack(r["spikes"]) for k, r in rec.items()}
    states = {k: np.stack(r["v_final"]) for k, r in rec.items()}
    v = {k: np.stack(r["v"]) for k, r in rec.items() if r["v"]}
    pops = {p.name: p for p in plan.neurons}
    window = {k: slice(0, plan.steps_run) if p.always_active else slice(p.t_start, p.t_start + T) for k, p in pops.items()}
    counts = {k: (spikes[k][:, window[k]] != 0).sum(axis=1).astype(np.int64) for k in pops}
    all_outputs = {o: decode(plan, o, spikes[o][:, pops[o].t_start:pops[o].t_start + T], states[o])
                   for o in plan.outputs}
    outputs = all_outputs[plan.outputs[0]]
    preds = outputs.reshape(n, -1).argmax(axis=1)
    return LavaResult(outputs, all_outputs, preds, counts, spikes, states, v, T, plan.steps_run, plan.report())
