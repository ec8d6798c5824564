"""Routing keys and payloads (layout in docs/spinnaker.md).

Every sending core slice gets one base key and one mask; a neuron sends ``base | index`` where
``index`` is its position in the slice (neuron = slice.start + index):

    key[31 : b]  slice number (0, 1, ... over the sending slices, layer by layer)
    key[b-1 : 0] neuron index in the slice,  b = ceil(log2(largest sending slice))
    mask         0xFFFFFFFF << b (32 bits)

so two slices never overlap (different slice numbers under the same mask) and a slice's keys are
exactly the keys its mask matches with an index below its size.

Payload: a source whose events are binary (payload kind ``binary``: every event is +1) sends 40-bit
packets without payload. Every other source (signed IF +-1 with neg_value, MultiSpikeIF counts,
GradedSignedIF levels, graded/analog inputs) sends 72-bit packets whose 32-bit payload is the
event's integer value v (what the target's synapses multiply) in two's complement: v >= 0 as is,
v < 0 as 2^32 + v; multi-level values are the level itself (e.g. a count of -2 is 0xFFFFFFFE).
Silent neurons (v = 0) send nothing. A value outside [-2^31, 2^31 - 1] cannot be sent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import Input, Network
from .errors import SpinnakerError
from .placement import MachinePlacement

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass
class SourceKeys:
    """Keys of one sending layer: per slice base key, one mask, payload use and value range."""

    layer: str
    slice_ids: list[int]
    base: np.ndarray                # (n_slices,) uint32 base keys
    mask: int
    payload: bool
    value_range: tuple[int, int]    # smallest and largest event value


@dataclass
class KeyMap:
    index_bits: int
    mask: int
    sources: dict[str, SourceKeys]
    slice_key: dict[int, int]       # slice id -> base key

    def neuron_keys(self, placement: MachinePlacement, layer: str) -> np.ndarray:
        """uint64 key of every neuron of a sending layer, in neuron order."""
        out = []
        for s in placement.by_layer[layer]:
            out.append(self.slice_key[s.id] + np.arange(s.neurons, dtype=np.uint64))
        return np.concatenate(out).astype(np.uint64)

    def to_json(self) -> dict:
        return {"index_bits": self.index_bits, "mask": f"0x{self.mask:08X}",
                "layout": f"key[31:{self.index_bits}] = slice number, key[{self.index_bits - 1}:0] = neuron index "
                          "in the slice" if self.index_bits else "key[31:0] = slice number (one neuron per slice)",
                "sources": {k: {"payload": v.payload, "value_range": list(v.value_range),
                                "slices": [{"slice": i, "key": f"0x{int(b):08X}"} for i, b in zip(v.slice_ids, v.base)]}
                            for k, v in self.sources.items()}}


def value_range(net: Network, name: str) -> tuple[int, int, bool]:
    """(min, max, payload needed) of the integer event values a source can send."""
    node = net[name]
    pl = node.payload
    if isinstance(node, Input):
        if node.coding == "spikes" and pl.kind == "binary":
            return 0, 1, False
        lo = int(np.floor(min(pl.min_level * float(pl.neg_value), pl.min_level)))
        return lo, int(pl.max_level), True
    from ...simulator.neurons import kernel_class
    from ... import simulator  # noqa: F401  (registers the extra kernels)
    top = kernel_class(node, True).max_abs_value(node)
    if pl.kind == "binary" and getattr(node.neuron, "neg_threshold", None) is None and top <= 1:
        return 0, 1, False
    lo = -int(np.ceil(top)) if pl.min_level < 0 or getattr(node.neuron, "neg_threshold", None) is not None else 0
    return lo, int(np.ceil(top)), True


def assign_keys(net: Network, placement: MachinePlacement) -> KeyMap:
    """One base key + mask per sending slice; payload use per sending layer (module docstring)."""
    senders = [name for name in placement.by_layer if net.outgoing(name)]
    sizes = [s.neurons for name in senders for s in placement.by_layer[name]]
    bits = int(np.ceil(np.log2(max(sizes)))) if sizes and max(sizes) > 1 else 0
    n_slices = len(sizes)
    if n_slices > (1 << (32 - bits)):
        raise SpinnakerError(f"keys: {n_slices} sending core slices with {bits} neuron-index bits need "
                             f"{bits + int(np.ceil(np.log2(n_slices)))} key bits, limit 32")
    mask = (0xFFFFFFFF << bits) & 0xFFFFFFFF
    sources, slice_key = {}, {}
    k = 0
    for name in senders:
        lo, hi, payload = value_range(net, name)
        if lo < INT32_MIN or hi > INT32_MAX:
            bad = lo if lo < INT32_MIN else hi
            raise SpinnakerError(f"layer {name!r}: event value {bad} does not fit the 32-bit packet payload "
                                 f"(two's complement range [{INT32_MIN}, {INT32_MAX}])")
        ids, base = [], []
        for s in placement.by_layer[name]:
            slice_key[s.id] = k << bits
            ids.append(s.id)
            base.append(k << bits)
            k += 1
        sources[name] = SourceKeys(name, ids, np.array(base, dtype=np.uint64), mask, payload, (lo, hi))
    return KeyMap(bits, mask, sources, slice_key)
