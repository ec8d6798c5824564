"""The whole SpiNNaker mapping of a network: machine, placement, keys, routing tables, checks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import Network
from .errors import SpinnakerError
from .keys import KeyMap, assign_keys
from .machine import MachineModel, make_machine
from .placement import MachinePlacement, place
from .routing import Routing, build_routing, check_tables

DEFAULT_MACHINE = "48-chip"


@dataclass
class Description:
    net: Network
    profile: object
    machine: MachineModel
    placement: MachinePlacement
    keys: KeyMap
    routing: Routing
    check: dict

    def sender_keys(self, layer: str) -> np.ndarray:
        return self.keys.neuron_keys(self.placement, layer)

    def layer_summary(self) -> list[dict]:
        """Per layer: cores, chips, keys, routing entries of its slices (compressed tables hold merged
        entries, so those are counted per chip in ``chips``), payload use."""
        rows = []
        per_slice_entries: dict[int, int] = {}
        for entries in self.routing.uncompressed.values():
            for e in entries:
                per_slice_entries[e.key] = per_slice_entries.get(e.key, 0) + 1
        for name, slices in self.placement.by_layer.items():
            src = self.keys.sources.get(name)
            lp = self.placement.partition.layers[name]
            rows.append({
                "layer": name, "neurons": lp.neurons, "cores": len(slices), "neurons_per_core": lp.neurons_per_core,
                "binding": lp.binding, "chips": sorted({int(s.chip) for s in slices}),
                "keys": int(sum(s.neurons for s in slices)) if src else 0,
                "key_ranges": len(slices) if src else 0,
                "payload": (src.payload if src else None),
                "entries_uncompressed": int(sum(per_slice_entries.get(self.keys.slice_key[s.id], 0) for s in slices))
                if src else 0,
                "target_cores": int(sum(len(self.routing.targets.get(s.id, [])) for s in slices)),
            })
        return rows


def describe(net: Network, profile, machine: str | MachineModel = DEFAULT_MACHINE, compress: bool = True) -> Description:
    """Place, key and route ``net`` (quantised) on a SpiNNaker ``machine`` under ``profile``; the
    compressed tables are checked by walking every key (routing.check_tables)."""
    if not net.quantized:
        raise SpinnakerError("the SpiNNaker backend needs a quantised network (spikeport compile ... --profile "
                             "spinnaker1 first)")
    for op in net.operators():
        raise SpinnakerError(f"operator {op.name!r} (op {op.op!r}): no SpiNNaker mapping for non-spiking operators yet")
    from ...hw_profiles import load_profile
    prof = load_profile(profile) if isinstance(profile, str) else profile
    m = machine if isinstance(machine, MachineModel) else make_machine(machine, prof)
    placement = place(net, prof, m)
    keys = assign_keys(net, placement)
    routing = build_routing(net, placement, keys, m, compress=compress)
    check = check_tables(m, placement, keys, routing)
    return Description(net, prof, m, placement, keys, routing, check)
