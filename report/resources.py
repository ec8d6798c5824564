"""Core and chip estimate of a network on a profile: a thin report over ``compiler.partition``
(operators: where they run, their state and work, the embedded cores; ``compiler.operator_placement``)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from rich.table import Table

from ..compiler.partition import Placement, partition
from ..hw_profiles import load_profile
from ..ir.operators import RUNS_ON
from ..simulator.operator_work import OP_KINDS


@dataclass
class ResourceReport:
    """What :func:`resources_report` returns: the placement plus the profile's limits and assumptions."""

    placement: Placement
    limits: dict
    assumptions: list[str]

    @property
    def cores(self) -> int:
        return self.placement.cores

    @property
    def chips(self) -> int:
        return self.placement.chips

    def to_json(self) -> dict:
        return {**self.placement.to_json(), "limits": self.limits, "assumptions": list(self.assumptions)}

    def table(self) -> Table:
        """Per-layer cores, neurons per core, binding limit and the largest per-core utilisations."""
        p = self.placement
        t = Table(title=f"resources on {p.profile}: {p.cores} cores, {p.chips} chip(s) (chips bound by {p.chip_binding})")
        for c in ("layer", "neurons", "cores", "neurons/core", "binding limit", "memory %", "synapse pool %",
                  "fan-in %", "fan-out %", "synapses"):
            t.add_column(c, justify="left" if c in ("layer", "binding limit") else "right")
        for lp in p.layers.values():
            u = lp.utilisation()
            pct = lambda k: "-" if u.get(k) is None else f"{100 * u[k]:.1f}"  # noqa: E731
            pool = "synapse_memory_per_core_bytes" if "synapse_memory_per_core_bytes" in u else "sdram_per_chip_bytes"
            many = f" x {lp.states} compartments" if lp.states > 1 else ""      # MBE: one per branch and basis
            t.add_row(lp.name, f"{lp.neurons:,}{many}", str(lp.n_cores), str(lp.neurons_per_core), lp.binding,
                      pct("memory_per_core_bytes"), pct(pool), pct("fan_in_per_core"), pct("fan_out_per_core"),
                      f"{sum(c.synapses for c in lp.cores):,}")
        return t

    def operator_table(self) -> Table | None:
        """Operators per place: how many, their state, worst-case arithmetic per step, embedded cores."""
        ops = self.placement.operators
        if ops is None:
            return None
        cores = (f"{ops.embedded_cores} embedded core(s) in use, {ops.embedded_cores_per_chip} per chip"
                 + (" (taken from the neuro cores)" if ops.on_neuro_cores else ""))
        t = Table(title=f"operators on {ops.profile}: {cores}; worst case per step and sample (every input neuron emits)")
        for c in ("runs on", "operators", "state bytes") + tuple(OP_KINDS):
            t.add_column(c, justify="left" if c == "runs on" else "right")
        for place in RUNS_ON:
            if ops.count(place):
                w = ops.work_per_step(place)
                t.add_row(place, str(ops.count(place)), f"{ops.state_bytes(place):,}", *(f"{w[k]:,}" for k in OP_KINDS))
        return t

    def tables(self) -> list[Table]:
        op = self.operator_table()
        return [self.table()] + ([op] if op is not None else [])


def resources_report(net, profile) -> ResourceReport:
    """Partition ``net`` on ``profile`` (a Profile or its name); raises ResourceError if a layer cannot map."""
    prof = load_profile(profile) if isinstance(profile, (str, os.PathLike)) else profile
    placement = partition(net, prof)
    limits = {k: v for k, v in prof.limits.__dict__.items() if v is not None}
    return ResourceReport(placement, limits, list(prof.assumptions) + placement.notes)
