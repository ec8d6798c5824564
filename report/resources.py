"""Core and chip estimate of a network on a profile: a thin report over ``compiler.partition``."""
from __future__ import annotations

import os
from dataclasses import dataclass

from rich.table import Table

from ..compiler.partition import Placement, partition
from ..hw_profiles import load_profile


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
            t.add_row(lp.name, f"{lp.neurons:,}", str(lp.n_cores), str(lp.neurons_per_core), lp.binding,
                      pct("memory_per_core_bytes"), pct(pool), pct("fan_in_per_core"), pct("fan_out_per_core"),
                      f"{sum(c.synapses for c in lp.cores):,}")
        return t

    def tables(self) -> list[Table]:
        return [self.table()]


def resources_report(net, profile) -> ResourceReport:
    """Partition ``net`` on ``profile`` (a Profile or its name); raises ResourceError if a layer cannot map."""
    prof = load_profile(profile) if isinstance(profile, (str, os.PathLike)) else profile
    placement = partition(net, prof)
    limits = {k: v for k, v in prof.limits.__dict__.items() if v is not None}
    return ResourceReport(placement, limits, list(prof.assumptions) + placement.notes)
