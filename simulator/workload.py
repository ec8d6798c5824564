"""How much work a run is, estimated before it starts, and the limit beyond which commands refuse.

    ops per step  S = sum over projections of the synapses evaluated per step (dense: rows x cols;
                  conv: C_out H_out W_out * C_in/groups kH kW; identity: neurons) + neuron updates
    work          W = sum over runs of N * (T + latency) * S      (latency: delays and t_start)
    time          W / SIM_OPS_PER_S for spikeport's simulator; N * (T + latency) * LAVA_S_PER_STEP for Lava

SIM_OPS_PER_S is deliberately below what benchmarks/simulator.py measures (4.4e9 synaptic events/s
for a float32 batch of 256 on one thread; integer paths and small batches are slower), so the
estimate errs towards "longer". A run estimated beyond LIMIT_S is refused unless the user says
``--yes``: such a run is almost always a wrong T, a wrong delay or the wrong data file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import WorkTooLargeError
from ..ir import Network

SIM_OPS_PER_S = 1.0e9          # synaptic ops + neuron updates per second, spikeport simulator (conservative)
LAVA_S_PER_STEP = 0.05         # seconds per sample-step in Lava's CPU simulation (benchmarks/lava_vs_spikeport.py)
LIMIT_S = 3600.0               # refuse runs estimated beyond one hour unless --yes
RECORD_BYTES_PER_NEURON_STEP = 17  # verify keeps int8 spikes + int64 voltages from both simulators


@dataclass
class Workload:
    """The estimate of one command's work: ``seconds`` against ``limit_s``."""

    what: str
    samples: int
    steps: list[int]             # T + latency of every run
    ops_per_step: int            # S (per sample)
    ops: float                   # W
    seconds: float
    memory_bytes: float = 0.0

    def __str__(self) -> str:
        steps = ", ".join(str(s) for s in self.steps)
        return (f"{self.what}: {self.samples} samples x steps ({steps}) x {self.ops_per_step:,} synaptic ops "
                f"and neuron updates per step = {self.ops:.3g} operations, about {_duration(self.seconds)} here")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.3g} days"


def ops_per_step(net: Network) -> int:
    """S: synapses evaluated per step (the ANN-equivalent MACs of the projections) + neurons updated."""
    from ..errors import UnsupportedError
    from .opcount import ann_equivalent_macs
    neurons = sum(int(np.prod(p.shape)) for p in net.populations())
    try:
        return int(ann_equivalent_macs(net)) + neurons
    except UnsupportedError:
        if not net.operators():
            raise
    # Transformer operator networks (until op counting covers them): every weight once per token,
    # and each operator element as one operation
    from ..ir.operators import TokenDense
    macs = 0
    for p in net.projections():
        w = int(np.size(p.weight))
        tokens = int(np.prod(net[p.target].shape[:-1])) if isinstance(p, TokenDense) else 1
        macs += w * tokens if not hasattr(p, "out_shape") else w * int(np.prod(net[p.target].shape[1:]))
    return macs + neurons + sum(int(np.prod(o.shape)) for o in net.operators())


def estimate(net: Network, samples: int, timesteps: list[int] | int, what: str = "simulation",
             engine: str = "simulator", record_all: bool = False) -> Workload:
    """Estimate the work of simulating ``samples`` samples once per entry of ``timesteps``."""
    ts = [timesteps] if isinstance(timesteps, int) else list(timesteps)
    latency = int(net.latency())
    steps = [int(t) + latency for t in ts]
    s = ops_per_step(net)
    ops = float(samples) * float(sum(steps)) * float(s)
    if engine == "lava":
        seconds = float(samples) * float(sum(steps)) * LAVA_S_PER_STEP
    else:
        seconds = ops / SIM_OPS_PER_S
    memory = 0.0
    if record_all:
        neurons = sum(int(np.prod(p.shape)) for p in net.populations())
        memory = float(samples) * float(max(steps)) * neurons * RECORD_BYTES_PER_NEURON_STEP
    return Workload(what, int(samples), steps, s, ops, seconds, memory)


def combine(*loads: Workload) -> Workload:
    """Several runs of one command (e.g. spikeport's simulator and Lava in `verify`)."""
    first = loads[0]
    return Workload(first.what, first.samples, [s for w in loads for s in w.steps], first.ops_per_step,
                    sum(w.ops for w in loads), sum(w.seconds for w in loads), max(w.memory_bytes for w in loads))


def _physical_memory() -> float:
    try:
        import os
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check(load: Workload, override: bool = False, limit_s: float = LIMIT_S) -> Workload:
    """Raise WorkTooLargeError when the estimate exceeds ``limit_s`` (or the machine's memory)."""
    if override:
        return load
    if load.seconds > limit_s:
        raise WorkTooLargeError(f"{load}; the limit is {_duration(limit_s)} (check T, the delays and the data "
                                f"file, or pass --yes to run it anyway)")
    mem = _physical_memory()
    if load.memory_bytes > mem:
        raise WorkTooLargeError(f"{load}; it would record {load.memory_bytes / 2**30:.3g} GiB of spikes and "
                                f"voltages, this machine has {mem / 2**30:.3g} GiB (use fewer samples or a smaller "
                                f"T, or pass --yes to try anyway)")
    return load


__all__ = ["LAVA_S_PER_STEP", "LIMIT_S", "SIM_OPS_PER_S", "Workload", "check", "combine", "estimate",
           "ops_per_step"]
