"""Placement: per-core slices (compiler.partition under the profile's limits) on chips of a machine.

Slices come from ``compiler.partition(net, profile, sources=True)`` (neurons per core, DTCM / SDRAM for
synapse rows, fan-in; input nodes become spike-source cores). Its chip packing (cores_per_chip,
neurons and SDRAM per chip, in layer order) numbers chips 0, 1, ...; chip k goes to the k-th chip of
the machine in :class:`MachineModel` order (nearest (0, 0) first) and a slice's core is the next free
application core of that chip (core 0 is the monitor).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compiler.partition import ResourceError, partition
from ...ir import Network
from .errors import SpinnakerError
from .machine import MachineModel


@dataclass
class Slice:
    """One core: neurons [start, stop) of ``layer`` on core ``core`` of chip index ``chip``."""

    id: int
    layer: str
    start: int
    stop: int
    chip: int
    core: int

    @property
    def neurons(self) -> int:
        return self.stop - self.start


@dataclass
class MachinePlacement:
    slices: list[Slice]
    by_layer: dict[str, list[Slice]]
    partition: object               # compiler.partition.Placement (per-layer usage and binding)

    def layer_bounds(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.by_layer[layer]
        return np.array([c.start for c in s], dtype=np.int64), np.array([c.stop for c in s], dtype=np.int64)


def place(net: Network, profile, machine: MachineModel) -> MachinePlacement:
    """Cut every population (and input) into core slices and put them on chips of ``machine``."""
    try:
        part = partition(net, profile, sources=True)
    except ResourceError as e:
        raise SpinnakerError(str(e)) from e
    if part.chips > machine.n_chips:
        first = next(lp for lp in part.layers.values() if any(c.chip >= machine.n_chips for c in lp.cores))
        raise SpinnakerError(f"layer {first.name!r} does not fit machine {machine.spec!r}: the network needs "
                             f"{part.chips} chips ({part.cores} cores, chips closed by {part.chip_binding}), "
                             f"the machine has {machine.n_chips}")
    next_core = [0] * machine.n_chips
    slices: list[Slice] = []
    by_layer: dict[str, list[Slice]] = {}
    for name, lp in part.layers.items():
        for core in lp.cores:
            k = core.chip
            if next_core[k] >= len(machine.cores[k]):
                raise SpinnakerError(f"layer {name!r}: chip {machine.chip_name(k)} has {len(machine.cores[k])} "
                                     f"application cores, placement needs more (cores_per_chip "
                                     f"{profile.limits.cores_per_chip})")
            s = Slice(len(slices), name, core.start, core.stop, k, machine.cores[k][next_core[k]])
            next_core[k] += 1
            slices.append(s)
            by_layer.setdefault(name, []).append(s)
    return MachinePlacement(slices, by_layer, part)
