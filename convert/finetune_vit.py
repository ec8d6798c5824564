"""Quantised-ANN fine-tuning of Vision Transformers for the C2 methods ``stbif`` and ``pmsm``.

SpikeZIP-TF (methods.md section 1) puts a symmetric quantiser ``y = s * clamp(floor(x/s + 1/2),
n_min, n_max)`` wherever its ST-BIF neurons go: on every input of a token Linear except the head
(the LayerNorm outputs into qkv and fc1, the attention output into proj, the GELU output into fc2)
and on both operands of every product of two tensors (q, k, v and the softmax output). PMSM on a
ViT (paper 002, methods.md section 4) is the same framework with PQA in the same places.

Levels for ``--levels L`` (L even): ``stbif`` n_min = -L/2, n_max = L/2 - 1 (SpikeZIP-TF's symmetric
quantiser); ``pmsm`` PQA with alpha = -1/2, beta = 1/2, i.e. levels -L/2..L/2 (a ViT's LayerNorm
outputs are symmetric, so the CNN setting alpha = -1/4 would clip half of them). The step of each
quantiser is initialised from calibration (99.9th percentile of |value| / (L/2)) and trained with
the straight-through estimator (``convert.activations.QuantClipFloor``; its trainable ``lam`` is
``step * L``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..frontend import ann_graph as G
from ..frontend.ann_eval import eval_node, evaluate_graph
from .activations import QuantClipFloor
from .lower import ConversionError

C2_METHODS = ("stbif", "pmsm")
DEFAULT_VIT_LEVELS = 16
_TRANSFORMER_OPS = (G.LayerNorm, G.Softmax, G.MatMul, G.GELU)


def is_transformer(graph: G.AnnGraph) -> bool:
    """A graph with Transformer ops (LayerNorm, Softmax, MatMul, GELU)."""
    return any(isinstance(n, _TRANSFORMER_OPS) for n in graph)


def _is_head(graph: G.AnnGraph, node: G.AnnNode) -> bool:
    users = graph.users(node.name)
    while len(users) == 1 and isinstance(users[0], G.Identity):
        users = graph.users(users[0].name)
    return len(users) == 1 and isinstance(users[0], G.Output)


def quant_positions(graph: G.AnnGraph) -> dict[str, list[str]]:
    """``{source value: [consumers]}``: the inputs of token Linears (not the head) and of MatMuls."""
    out: dict[str, list[str]] = {}
    for node in graph:
        if isinstance(node, G.MatMul) or (isinstance(node, G.Linear) and not _is_head(graph, node)):
            for s in node.inputs:
                out.setdefault(s, []).append(node.name)
    return out


def level_range(method: str, levels: int) -> tuple[int, int]:
    """Integer levels (lo, hi) of the quantiser of ``method`` with ``--levels L``."""
    if method not in C2_METHODS:
        raise ValueError(f"method {method!r}: ViT quantisers exist for {C2_METHODS}")
    if int(levels) != levels or levels < 2 or levels % 2 or levels > 254:
        raise ValueError(f"--levels {levels} must be an even integer in 2..254 for a ViT (levels -L/2..L/2"
                         f"{'-1' if method == 'stbif' else ''})")
    half = int(levels) // 2
    return -half, (half - 1 if method == "stbif" else half)


def permute_box(in_shape: tuple[int, ...], index: np.ndarray, name: str) -> tuple[tuple[int, ...], list]:
    """Write a typed Rearrange (``y.flat[i] = x.flat[index[i]]``) as permute + one slice per axis +
    reshape, ops the frontend reads back (a raw gather is not one of them)."""
    import itertools

    a = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    want = np.asarray(index).reshape(-1)
    for perm in itertools.permutations(range(len(in_shape))):
        b = a.transpose(perm)
        coords = np.argwhere(np.isin(b, want))
        if len(coords) != want.size:
            continue
        box = [(int(c.min()), int(c.max()) + 1) for c in coords.T]
        sub = b[tuple(slice(lo, hi) for lo, hi in box)]
        if sub.size == want.size and np.array_equal(sub.reshape(-1), want):
            return perm, box
    raise ConversionError(f"node {name!r}: this re-indexing is not a permutation plus slices; the ViT QANN "
                          "cannot be exported with it")


class GraphQANN(nn.Module):
    """The typed ANN graph as a trainable module with quantisers at :func:`quant_positions`.

    Evaluates op by op (``frontend.ann_eval.eval_node``) except that Linear, Conv2d and LayerNorm
    use ``nn.Parameter`` copies of their weights, and each consumer of a quantised value reads it
    through its :class:`QuantClipFloor` (other users, e.g. the residual stream, read the plain
    value). Built from the typed graph rather than the loader's fx module because onnx2torch's
    shape plumbing cannot be re-traced by ``torch.export``; the exported program has only tensor ops
    the frontend reads back (quantisers as ``QuantAct`` nodes)."""

    def __init__(self, graph: G.AnnGraph, quantisers: dict[str, QuantClipFloor]):
        super().__init__()
        self.graph = graph
        self.order = list(graph)
        self.params = nn.ParameterDict()
        self.boxes: dict[int, tuple] = {}
        for i, node in enumerate(self.order):
            fields = {G.Linear: ("weight", "bias"), G.Conv2d: ("weight", "bias"), G.LayerNorm: ("weight", "bias")}
            for f in fields.get(type(node), ()):
                a = getattr(node, f, None)
                if a is not None:
                    # a C-ordered copy: training must not write into the graph's (the module's) arrays
                    self.params[f"n{i}_{f}"] = nn.Parameter(torch.tensor(np.ascontiguousarray(a, np.float32)))
            if isinstance(node, (G.Constant, G.AddConst)):
                self.register_buffer(f"c{i}", torch.as_tensor(np.asarray(node.value, np.float32)))
            if isinstance(node, G.Rearrange):
                self.boxes[i] = permute_box(tuple(graph[node.inputs[0]].shape), np.asarray(node.index), node.name)
        self.quant = nn.ModuleDict({f"q{i}": q for i, q in enumerate(quantisers.values())})
        self.qkey = {src: f"q{i}" for i, src in enumerate(quantisers)}
        self.consumers = quant_positions(graph)

    def _p(self, i: int, f: str):
        return self.params[f"n{i}_{f}"] if f"n{i}_{f}" in self.params else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        quantised: dict[str, torch.Tensor] = {}
        batch = x.shape[0]
        out = x
        for i, node in enumerate(self.order):
            ins = []
            for s in node.inputs:
                if s in self.qkey and node.name in self.consumers[s]:
                    if s not in quantised:
                        quantised[s] = self.quant[self.qkey[s]](values[s])
                    ins.append(quantised[s])
                else:
                    ins.append(values[s])
            if isinstance(node, G.Input):
                v = x
            elif isinstance(node, G.Linear):
                v = F.linear(ins[0], self._p(i, "weight"), self._p(i, "bias"))
            elif isinstance(node, G.Conv2d):
                v = F.conv2d(ins[0], self._p(i, "weight"), self._p(i, "bias"), node.stride, node.padding,
                             node.dilation, node.groups)
            elif isinstance(node, G.LayerNorm):
                v = F.layer_norm(ins[0], (ins[0].shape[-1],), self._p(i, "weight"), self._p(i, "bias"), node.eps)
            elif isinstance(node, G.Constant):  # buffers: torch.as_tensor inside export adds metadata asserts
                c = getattr(self, f"c{i}")
                v = c.unsqueeze(0).expand((batch,) + tuple(c.shape))
            elif isinstance(node, G.AddConst):
                v = ins[0] + getattr(self, f"c{i}")
            elif isinstance(node, G.Rearrange):
                perm, box = self.boxes[i]
                v = ins[0].permute((0,) + tuple(a + 1 for a in perm))
                for ax, (a, b) in enumerate(box):
                    v = v.narrow(ax + 1, a, b - a)
                v = v.reshape((batch,) + tuple(node.shape))
            else:
                v = eval_node(node, ins, batch, x)
            values[node.name] = v
            out = v
        return out


def insert_quantisers(ann, method: str, levels: int, calib_x: np.ndarray, percentile: float = 99.9) -> GraphQANN:
    """``ann``'s typed graph as a :class:`GraphQANN` with a :class:`QuantClipFloor` of ``method``'s
    levels on every quantiser position, its step initialised from calibration on ``calib_x``."""
    lo, hi = level_range(method, levels)
    positions = quant_positions(ann.graph)
    if not positions:
        raise ConversionError(f"{ann.source}: no token Linear or MatMul found to quantise (is this a ViT?)")
    vals = evaluate_graph(ann.graph, calib_x, keep=list(positions), dtype=torch.float64)
    quantisers = {}
    for src in positions:
        v = vals[src].abs().reshape(-1).cpu().numpy()
        step = float(np.percentile(v, percentile)) / (int(levels) // 2)
        step = step if step > 1e-8 else 1e-3
        quantisers[src] = QuantClipFloor(int(levels), lo, hi, lam=step * int(levels))
    return GraphQANN(ann.graph, quantisers)


__all__ = ["C2_METHODS", "DEFAULT_VIT_LEVELS", "GraphQANN", "insert_quantisers", "is_transformer", "level_range", "quant_positions"]
