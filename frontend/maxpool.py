"""Opt-in replacement of MaxPool by AvgPool (``maxpool="avg"``).

Max pooling has no IF-spike equivalent without changing the network (a spike count's max is not
the max of rates), so conversion refuses it. On request each MaxPool is replaced, in the runnable
module AND in the ANN graph, by an AvgPool with the same window (zero padding counted, so the
lowering is exact). The ANN accuracy after replacement is that of the changed network; each
replacement is listed in ``AnnModel.replaced`` and in the converted network's meta.
"""
from __future__ import annotations

import copy

import torch.nn.functional as F

from .ann_graph import MaxPool, UnsupportedOpError
from .ann_model import AnnModel
from .normalise import normalise
from .probe import probe_input


def replace_maxpool(ann: AnnModel) -> AnnModel:
    """Return a new AnnModel whose MaxPools are AvgPools (see module docstring)."""
    pools = [n for n in ann.graph if isinstance(n, MaxPool)]
    if not pools:
        return ann
    gm = copy.deepcopy(ann.module)
    fx_nodes = {n.name: n for n in gm.graph.nodes}
    notes = list(ann.replaced)
    new_names: set[str] = set()
    for pool in pools:
        if pool.dilation != (1, 1):
            raise UnsupportedOpError(f"{ann.source}: node {pool.name!r}: MaxPool with dilation {pool.dilation} "
                                     "has no AvgPool equivalent")
        old = fx_nodes[pool.name]
        with gm.graph.inserting_after(old):
            new = gm.graph.call_function(F.avg_pool2d, (fx_nodes[pool.inputs[0]], list(pool.kernel), list(pool.stride),
                                                        list(pool.padding), pool.ceil_mode, True))
        old.replace_all_uses_with(new)
        gm.graph.erase_node(old)
        parent = old.args[0] if old.op == "call_function" and old.args and hasattr(old.args[0], "users") else None
        if parent is not None and parent.name != pool.inputs[0] and not parent.users:
            gm.graph.erase_node(parent)  # the tuple-returning max_pool2d_with_indices
        new_names.add(new.name)
        notes.append(f"MaxPool {pool.name!r} (kernel {pool.kernel}, stride {pool.stride}) replaced by AvgPool {new.name!r}")
    gm.graph.lint()
    gm.recompile()
    graph = normalise(gm, probe_input(ann.input_shape, ann.fixed_batch or 2).to(ann.device))
    for node in graph:
        if node.name in new_names:
            node.replaced = "MaxPool"
    return AnnModel(module=gm, graph=graph, input_shape=ann.input_shape, source=ann.source,
                    fixed_batch=ann.fixed_batch, replaced=notes)
