"""Scheduling pass: projection delays and population start steps from the per-synapse latency.

Every projection of a chip adds ``synapse_delay`` steps (Lava's Dense sends last step's sum). A
population starts when its earliest complete input arrives, ``t_start = max over incoming
projections of (t_start(source) + synapse_delay)``, and each projection's ``delay`` is set to
``t_start(target) - t_start(source)`` so that shorter paths (residual skips) are padded and all
inputs of a population arrive aligned. Spike trains are then shifted copies of the zero-latency
ones. Inputs start at 0; a non-spiking operator starts with its latest input (no latency of its own).
"""
from __future__ import annotations

from ..ir import Input, Network, Operator, Population, Projection


def path_latencies(net: Network, synapse_delay: int) -> dict[str, int]:
    """Start step of every input, population and operator for a given per-projection latency."""
    if synapse_delay < 0:
        raise ValueError(f"synapse_delay {synapse_delay} must be >= 0")
    start: dict[str, int] = {}
    for node in net.nodes():
        if isinstance(node, Input):
            start[node.name] = 0
        elif isinstance(node, Operator):
            start[node.name] = max((start[i] for i in node.inputs), default=0)
        elif isinstance(node, Population):
            incoming = net.incoming(node.name)
            start[node.name] = max((start[p.source] + synapse_delay for p in incoming), default=0)
    return start


def schedule(net: Network, synapse_delay: int) -> Network:
    """Return a copy of ``net`` with delays and ``t_start`` set for ``synapse_delay`` (0: all zero).

    Existing delays and start steps are replaced: the pass computes them from the graph alone.
    """
    out = net.copy()
    start = path_latencies(out, synapse_delay)
    for node in out.nodes():
        if isinstance(node, Population):
            node.t_start = start[node.name]
        elif isinstance(node, Projection):
            node.delay = start[node.target] - start[node.source]
    return out
