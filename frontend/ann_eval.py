"""Evaluate the typed ANN graph directly, op by op, in torch.

This is the meaning of every :mod:`ann_graph` op written once. It proves that normalisation kept
the model (tests compare it with the fx module, ONNX Runtime and the original ``nn.Module``) and
gives conversion methods the value of every typed node, including nodes that have no fx node of
their own (the pieces of a fused ``scaled_dot_product_attention``). Device-agnostic.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import ann_graph as G


def _t(a: np.ndarray | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(a, dtype=like.dtype, device=like.device)


def eval_node(node: G.AnnNode, ins: list[torch.Tensor], batch: int, like: torch.Tensor) -> torch.Tensor:
    """Output (batch, *node.shape) of one typed op from its input values (each (batch, *shape))."""
    x = ins[0] if ins else None
    if isinstance(node, G.Constant):
        v = _t(node.value, like)
        return v.unsqueeze(0).expand((batch,) + tuple(v.shape))
    if isinstance(node, (G.Identity, G.Output)):
        return x
    if isinstance(node, G.Conv2d):
        return F.conv2d(x, _t(node.weight, x), _t(node.bias, x), node.stride, node.padding, node.dilation, node.groups)
    if isinstance(node, G.Linear):
        # C order: a shared F-ordered weight (ONNX MatMul) must give the bits of a C-ordered one
        return F.linear(x, _t(node.weight, x).contiguous(), _t(node.bias, x))
    if isinstance(node, G.BatchNorm):
        a, b = node.scale_shift()
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * _t(a, x).reshape(shape) + _t(b, x).reshape(shape)
    if isinstance(node, G.ReLU):
        return torch.relu(x)
    if isinstance(node, G.LeakyReLU):
        return F.leaky_relu(x, node.slope)
    if isinstance(node, G.QuantAct):
        return node.step * torch.clamp(torch.floor(x / node.step + 0.5), node.min_level, node.max_level)
    if isinstance(node, G.AvgPool):
        return F.avg_pool2d(x, node.kernel, node.stride, node.padding, node.ceil_mode, node.count_include_pad)
    if isinstance(node, G.GlobalAvgPool):
        return x.mean(dim=(2, 3), keepdim=node.keepdim)
    if isinstance(node, G.MaxPool):
        return F.max_pool2d(x, node.kernel, node.stride, node.padding, node.dilation, node.ceil_mode)
    if isinstance(node, (G.Flatten, G.Reshape)):
        return x.reshape((batch,) + tuple(node.shape))
    if isinstance(node, G.Add):
        return ins[0] + ins[1]
    if isinstance(node, G.Concat):
        return torch.cat(ins, dim=node.axis + 1)
    if isinstance(node, G.LayerNorm):
        return F.layer_norm(x, (x.shape[-1],), _t(node.weight, x), _t(node.bias, x), node.eps)
    if isinstance(node, G.GELU):
        return F.gelu(x, approximate=node.approximate)
    if isinstance(node, G.Softmax):
        return torch.softmax(x, dim=node.axis + 1)
    if isinstance(node, G.MatMul):
        return ins[0] @ ins[1]
    if isinstance(node, G.Scale):
        return x * node.factor
    if isinstance(node, G.AddConst):
        return x + _t(node.value, x)
    if isinstance(node, G.Rearrange):
        idx = torch.as_tensor(node.index.reshape(-1), device=x.device)
        return x.reshape(batch, -1)[:, idx].reshape((batch,) + tuple(node.shape))
    if isinstance(node, G.Mean):
        return x.mean(dim=tuple(a + 1 for a in node.axes), keepdim=node.keepdim)
    raise TypeError(f"ANN node {node.name!r}: no evaluation rule for op {node.op}")


def evaluate_graph(graph: G.AnnGraph, x: np.ndarray | torch.Tensor, keep: list[str] | tuple[str, ...] | None = None,
                   device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                   observe=None) -> dict[str, torch.Tensor]:
    """Run the typed graph on ``x`` (N, *input shape). Returns ``{"output": ..., name: ...}`` for
    the nodes in ``keep`` (all nodes when ``keep`` is None); values are dropped once unused.
    ``observe(name, value)``, when given, sees every node's value as it is computed."""
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    xt = xt.to(device=device or xt.device, dtype=dtype)
    batch = xt.shape[0]
    want = set(graph.nodes) if keep is None else set(keep) | {"output"}
    last_use: dict[str, int] = {}
    order = list(graph)
    for i, node in enumerate(order):
        for src in node.inputs:
            last_use[src] = i
    values: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i, node in enumerate(order):
            if isinstance(node, G.Input):
                v = xt
            else:
                v = eval_node(node, [values[s] for s in node.inputs], batch, xt)
            expect = (batch,) + tuple(node.shape)
            if tuple(v.shape) != expect:
                raise ValueError(f"ANN node {node.name!r} ({node.op}): evaluated shape {tuple(v.shape)}, graph says {expect}")
            values[node.name] = v
            if observe is not None:
                observe(node.name, v)
            if node.name in want:
                out[node.name] = v
            for src in node.inputs:
                if last_use.get(src) == i and src not in want:
                    values.pop(src, None)
    return out
