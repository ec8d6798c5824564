"""Simulators of IR networks: float (net.datapath None) and bit-accurate integer (quantised nets).

``simulate(net, x, T)`` runs T + net.latency() steps in batches on any torch device and returns a
:class:`SimResult`. docs/fixed_point.md states the integer rules and the Lava source each follows;
``simulator.reference`` is an independent plain numpy implementation used by the tests.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import distributed
from ..errors import UnsupportedError
from ..ir.graph import Network
from .engine import BatchRun, Plan, build_plan
from .neurons import FIXED_KERNELS, FLOAT_KERNELS, NeuronKernel, register_kernel
from .result import LayerStats, SimResult
from .synapses import PATHS, exact_float_context
from . import kernels_extra  # noqa: F401,E402  (kernels of MultiSpikeIF, GradedSignedIF)
from . import kernels_cuba  # noqa: F401,E402  (kernels of CubaLIF, CubaLI)
from . import kernels_mbe  # noqa: F401,E402  (kernels of MBE, MBETable; staged coding C3)
from .opcount import OpCounts, count_ops  # noqa: E402

__all__ = ["simulate", "Simulation", "SimResult", "LayerStats", "register_kernel", "NeuronKernel", "FLOAT_KERNELS",
           "FIXED_KERNELS", "PATHS", "OpCounts", "count_ops"]


def _as_inputs(net: Network, x) -> dict[str, torch.Tensor]:
    inputs = net.inputs()
    if isinstance(x, dict):
        names = {i.name for i in inputs}
        if set(x) != names:
            raise ValueError(f"simulate: input data given for {sorted(x)}, network inputs are {sorted(names)}")
        data = dict(x)
    else:
        if len(inputs) != 1:
            raise ValueError(f"simulate: the network has {len(inputs)} inputs {[i.name for i in inputs]}; pass a dict")
        data = {inputs[0].name: x}
    out = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in data.items()}
    sizes = {k: int(v.shape[0]) for k, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"simulate: inputs have different sample counts {sizes}")
    return out


def simulate(net: Network, x, timesteps: int, *, batch_size: int = 256, device=None, progress: bool = False,
             record_states: bool = False, record_spikes: bool = False, record_voltages: bool = False,
             path: str = "auto", run_class=BatchRun, event_driven: str = "auto",
             schedule: str = "auto", dtype: str = "float64") -> SimResult:
    """Run ``net`` on samples ``x`` for ``timesteps`` (T) presentation steps.

    x              (N, *input.shape) for analog/once coding, (N, T, *input.shape) for spike coding, or a
                   dict input name -> array for several inputs; numpy or torch.
    batch_size     samples per batch (results do not depend on it).
    device         torch device (default CPU); the bit-accurate path is exact on CUDA too.
    record_states  keep the final v of every population in ``SimResult.states``.
    record_spikes  keep (N, T + latency, *shape) int8 spike trains in ``SimResult.spikes``.
    record_voltages keep every population's membrane v after each step's reset, (N, T + latency,
                   *shape) (int64 when quantised), in ``SimResult.voltages`` (for per-step checks
                   against Lava; memory grows with steps x neurons).
    path           quantised nets: arithmetic path for every projection ('auto' picks the fastest
                   exact one; 'float32' / 'float64' force a float GEMM, exact only under the bound
                   in simulator/synapses.py; 'int64' CPU integer; 'chunked' float64 pieces).
    event_driven   quantised nets: 'auto' sums only the active sources' weight rows of a Dense
                   projection in the steps where the measured activity makes that faster than the
                   GEMM (identical results; simulator/event_driven.py), 'off' always dense, 'on'
                   always event-driven (for tests and benchmarks).
    schedule       quantised nets: 'auto' runs each population over a chunk of steps before the next
                   (one GEMM per projection and chunk; identical results; simulator/layer_major.py)
                   where allowed, else step by step; 'step' / 'layer' force one (for tests and benchmarks).
    dtype          float networks: 'float64' (default: the IR equations in double precision,
                   results independent of batch size and schedule) or 'float32' (the peers'
                   precision, about twice as fast; decoded outputs differ by float32 rounding, and
                   'auto' then also runs it layer-major). Quantised networks are exact either way.
    run_class      the per-batch runner, ``BatchRun`` or a subclass with the same constructor (the
                   SpiNNaker packet replay rebuilds every population's input from routed packets).
    """
    if batch_size < 1:
        raise ValueError(f"simulate: batch_size must be >= 1, got {batch_size}")
    if dtype != "float64" and net.operators():
        raise UnsupportedError(f"simulate: dtype {dtype!r} is not available for networks with operators yet "
                               "(they simulate in float64 / fixed point)")
    if net.operators() and net.coding == "C3":  # MBE Transformers: staged float / bit-accurate simulation
        from .transformer_mbe import simulate_mbe
        from .transformer_mbe_fixed import simulate_mbe_fixed
        if record_states or record_spikes or record_voltages:
            raise UnsupportedError("simulate: per-step records are not available for MBE operator networks (C3) yet")
        run = simulate_mbe_fixed if net.quantized else simulate_mbe
        return run(net, x, timesteps, batch_size=batch_size, device=device)[0]
    if net.operators():  # Transformer operators: C1 simulation in simulator/transformer.py (float)
        from .transformer import simulate_operators          # and simulator/transformer_fixed.py (bit-accurate)
        from .transformer_fixed import simulate_operators_fixed
        if record_states or record_voltages:
            raise UnsupportedError("simulate: states and voltages are not recorded for networks with operators yet")
        if isinstance(x, dict):        # one input by name (how count_ops passes its chunks)
            if len(x) != 1:
                raise UnsupportedError("simulate: networks with operators take one input")
            x = next(iter(x.values()))
        if net.coding == "C2":  # stbif / pmsm on a ViT: simulator/transformer_c2.py, transformer_c2_fixed.py
            from .transformer_c2 import simulate_c2
            from .transformer_c2_fixed import simulate_c2_fixed
            if record_spikes:
                raise UnsupportedError("simulate: per-step records are not available for C2 operator networks yet")
            run = simulate_c2_fixed if net.quantized else simulate_c2
            return run(net, x, timesteps, batch_size=batch_size, device=device)[0]
        run = simulate_operators_fixed if net.quantized else simulate_operators
        return run(net, x, timesteps, batch_size=batch_size, device=device, record_spikes=record_spikes)[0]
    return Simulation(net, timesteps, device=device, path=path, run_class=run_class, event_driven=event_driven,
                      schedule=schedule, dtype=dtype).run(
        x, batch_size=batch_size, progress=progress, record_states=record_states, record_spikes=record_spikes,
        record_voltages=record_voltages)


class Simulation:
    """A network prepared for simulation at ``timesteps``: the plan (projection kernels with their
    weights converted and laid out on the device, arithmetic paths chosen, neuron kernels built per
    batch size, kept buffers) is built once and reused by every :meth:`run`, as a converted peer
    model is (``simulate`` builds one per call: on ResNet-18 at batch 1 building costs more than
    simulating a sample). Results are those of ``simulate`` with the same arguments. Networks with
    Transformer operators are not prepared (``simulate`` runs them).

        sim = Simulation(qnet, 32)
        for xb in batches: res = sim.run(xb, batch_size=len(xb))
    """

    def __init__(self, net: Network, timesteps: int, *, device=None, path: str = "auto", run_class=BatchRun,
                 event_driven: str = "auto", schedule: str = "auto", dtype: str = "float64"):
        self.run_class = run_class
        self.plan = build_plan(net, int(timesteps), device, path, event_driven, schedule, dtype)

    def run(self, x, *, batch_size: int = 256, progress: bool = False, record_states: bool = False,
            record_spikes: bool = False, record_voltages: bool = False) -> SimResult:
        if batch_size < 1:
            raise ValueError(f"simulate: batch_size must be >= 1, got {batch_size}")
        plan, run_class = self.plan, self.run_class
        data = _as_inputs(plan.net, x)
        n = next(iter(data.values())).shape[0]
        wrap = None
        if progress and distributed.is_root():
            try:
                from rich.progress import track
                wrap = lambda starts: track(starts, description="simulating")  # noqa: E731
            except ImportError:  # rich is a dependency, but progress is cosmetic
                pass

        def one_batch(a: int) -> dict:
            xs = {k: v[a:a + batch_size].to(plan.device) for k, v in data.items()}
            run = run_class(plan, xs, record_spikes, record_voltages)
            run.run()
            return _collect(run, record_states)
        with torch.no_grad(), exact_float_context():   # under torchrun the batches are shared out (distributed.py)
            chunks = distributed.map_pieces(range(0, n, batch_size), one_batch, wrap)
        return _merge(plan, chunks, record_states, record_spikes, record_voltages)


_STAT_KEYS = ("saturation_events", "saturation_high", "wrap_events", "a_in_16bit_events", "int32_events")


def _collect(run: BatchRun, record_states: bool) -> dict:
    plan = run.plan
    net = plan.net
    out = {"decoded": {}, "counts": {}, "stats": {}, "states": {}, "spikes": {}, "voltages": {}, "acc_wrap": {}}
    for pop in plan.pops:
        k = run.kernels[pop.name]
        shape = (run.batch,) + tuple(pop.shape)
        out["decoded"][pop.name] = k.decode(plan.timesteps, net.coding, plan.quantized)
        counts = k.spike_counts()
        if counts is not None:
            out["counts"][pop.name] = counts.cpu().numpy().reshape(shape)
        counters = torch.stack([c.to(torch.int64).reshape(()) for c in
                                (k.saturation, k.saturation_high, k.wrap, k.a16, k.int32)]).tolist()   # one sync
        out["stats"][pop.name] = dict(zip(_STAT_KEYS, counters))
        if pop.name in run.acc_wrap:
            out["acc_wrap"][pop.name] = run.acc_wrap[pop.name].cpu().numpy()
        if record_states or (plan.quantized and pop.name in net.outputs):
            out["states"][pop.name] = k.v.cpu().numpy().reshape(shape)
        if run.voltages is not None:
            out["voltages"][pop.name] = (torch.stack(run.voltages[pop.name], dim=1).cpu().numpy()
                                         .reshape((run.batch, plan.steps) + tuple(pop.shape)))
        if run.records is not None and pop.name in run.records:
            out["spikes"][pop.name] = run.records[pop.name].cpu().numpy().reshape((run.batch, plan.steps) + tuple(pop.shape))
    return out


def _merge(plan: Plan, chunks: list[dict], record_states: bool, record_spikes: bool,
           record_voltages: bool = False) -> SimResult:
    net = plan.net
    def cat(key, name):      # one chunk: no copy (spike records can be large)
        return chunks[0][key][name] if len(chunks) == 1 else np.concatenate([c[key][name] for c in chunks], axis=0)
    all_outputs = {o: cat("decoded", o) for o in net.outputs}
    counts = {name: cat("counts", name) for name in chunks[0]["counts"]}
    n = all_outputs[net.outputs[0]].shape[0]
    layers = {}
    for pop in plan.pops:
        s = LayerStats(neurons=pop.size)
        for c in chunks:
            for key, val in c["stats"][pop.name].items():
                setattr(s, key, getattr(s, key) + val)
        steps = [c["acc_wrap"][pop.name] for c in chunks if pop.name in c["acc_wrap"]]
        if steps:
            per_step = np.sum(steps, axis=0)
            s.conv_wrap_events = int(per_step.sum())
            s.conv_wrap_per_step = [int(v) for v in per_step]
        if pop.name in counts:
            s.spikes = int(counts[pop.name].sum())
            s.rate = s.spikes / (n * pop.size * plan.timesteps)
        layers[pop.name] = s.as_dict()
    states = {name: cat("states", name) for name in chunks[0]["states"]}
    out = all_outputs[net.outputs[0]]
    return SimResult(
        outputs=out, all_outputs=all_outputs,
        predictions=out.reshape(n, -1).argmax(axis=1),
        spike_counts=counts, layers=layers, timesteps=plan.timesteps, steps_run=plan.steps,
        quantized=plan.quantized,
        states=states if record_states else None,
        output_states={o: states[o] for o in net.outputs if o in states} if plan.quantized else {},
        spikes={name: cat("spikes", name) for name in chunks[0]["spikes"]} if record_spikes else None,
        activations={name: cat("decoded", name) for name in chunks[0]["decoded"]},
        voltages={name: cat("voltages", name) for name in chunks[0]["voltages"]} if record_voltages else None,
    )
