"""``--method stbif`` and ``--method pmsm`` on a ViT QANN: C2 coding (methods.md sections 0, 1, 4).

The QANN comes from ``spikeport finetune vit.onnx --method stbif|pmsm`` (convert/finetune_vit.py):
its quantisers are ``QuantAct`` nodes on the inputs of the token Linears and of the products. Each
becomes a spiking population whose summed output stands for the quantiser's level: the ST-BIF
neuron (``ir.operators_c2.STBIF``, at most one signed spike per step) for ``stbif``, PMSM's
``MultiSpikeIF`` (one signed graded count per step, v(0) = theta/2) for ``pmsm``. LayerNorm, GELU and
softmax become C2 operators ``O(t) = F(S(t)) - F(S(t-1))``, each product of two tensors the
difference form of the product, Linear outputs / the residual stream / the position embedding Relay
populations; biases, the class token and the position embedding enter once (t = 1). The patch
embedding (a Conv2d on the analog input, which C2 presents at t = 1 only) and the head stay analog.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.neurons_extra import MultiSpikeIF
from .ecmt import _Builder, _Handle, _is_head
from .finetune_vit import is_transformer
from .lower import ConversionError
from .pmsm import level_bits
from .registry import ConversionMethod, register_method


class C2Builder(_Builder):
    """ECMT's Transformer walk (convert/ecmt.py) with C2 operators and QuantAct neurons."""

    def __init__(self, method_name: str, ann: AnnModel):
        super().__init__(None, ann)
        self.method_name = method_name
        self.net = ir.Network(coding="C2")
        self.chosen: dict[str, dict] = {}

    def run(self) -> tuple[ir.Network, dict]:
        for node in self.g:
            handler = getattr(self, f"_{node.op}", None)
            if handler is None:
                raise self.err(node, f"{self.method_name} on a Transformer has no rule for this op (it converts a ViT "
                                     "QANN: QuantAct, LayerNorm, GELU, Softmax, MatMul, token Linear, residual Add, "
                                     "patch-embedding Conv2d on the input)")
            handler(node)
        return self.net, self.populations

    def out_scale(self, name: str) -> float:
        """What one unit of ``name``'s emission is worth: a neuron population's step, else 1."""
        obj = self.net[name] if name in self.net else None
        if isinstance(obj, ir.Population) and isinstance(obj.neuron, (C2.STBIF, MultiSpikeIF)):
            return float(np.asarray(obj.decode_scale))
        return 1.0

    def identity(self, src: str, dst: str, weight: float) -> None:
        super().identity(src, dst, float(weight) * self.out_scale(src))

    def _QuantAct(self, node: G.QuantAct) -> None:
        lo, hi, step = int(node.min_level), int(node.max_level), float(node.step)
        if not lo <= 0 < hi or not step > 0:
            raise self.err(node, f"levels [{lo}, {hi}] and step {step}: {self.method_name} needs lo <= 0 < hi, step > 0")
        if self.method_name == "stbif":
            neuron = C2.STBIF(step=np.asarray(step), n_min=lo, n_max=hi)
            payload = ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1)
        else:
            if max(-lo, hi) > 127:
                raise self.err(node, f"levels [{lo}, {hi}] exceed PMSM's |n| <= 127")
            neuron = MultiSpikeIF(threshold=np.asarray(step), bias=np.asarray(0.0), v_init=np.asarray(step / 2.0),
                                  n_pos=hi, n_neg=-lo)
            payload = ir.SpikePayload(kind="graded", bits=level_bits(lo, hi), min_level=lo, max_level=hi)
        name = self._name(f"{node.name}_{self.method_name}")
        self.net.add(ir.Population(name, tuple(node.shape), neuron, payload, decode_scale=np.asarray(step),
                                   source=node.name))
        h = self.h[node.inputs[0]]
        self.identity(h.node, name, h.factor)
        self.h[node.name] = _Handle(name)
        self.populations.setdefault(node.name, []).append(name)
        self.chosen[node.name] = {"step": step, "levels": [lo, hi], "neuron": type(neuron).__name__}

    def _Linear(self, node: G.Linear) -> None:
        h = self.h[node.inputs[0]]
        w = node.weight.astype(np.float64, order="C") * h.factor * self.out_scale(h.node)   # C order (F-ordered views)
        bias = np.broadcast_to(0.0 if node.bias is None else node.bias.astype(np.float64), node.shape).copy()
        if _is_head(self.g, node):
            out = self._name(node.name)
            self.net.add(ir.Population(out, tuple(node.shape), ir.Readout(bias=np.asarray(bias)),
                                       ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0), source=node.name))
        else:
            out = self.relay(node.name, node.shape, bias, source=node.name)
        self.net.add(O.TokenDense(self._name(f"{node.name}_w"), source=h.node, target=out, weight=w))
        self.h[node.name] = _Handle(out)

    def _LayerNorm(self, node: G.LayerNorm) -> None:
        src = self.materialise(self.h[node.inputs[0]], self.g[node.inputs[0]].shape, node.inputs[0])
        name = self.operator(C2.LayerNormC2(node.name, inputs=(src,), shape=tuple(node.shape),
                                            weight=node.weight.astype(np.float64), bias=node.bias.astype(np.float64),
                                            eps=float(node.eps)))
        self.h[node.name] = _Handle(name)

    def _GELU(self, node: G.GELU) -> None:
        src = self.materialise(self.h[node.inputs[0]], self.g[node.inputs[0]].shape, node.inputs[0])
        name = self.operator(C2.GELUC2(node.name, inputs=(src,), shape=tuple(node.shape), approximate=node.approximate))
        self.h[node.name] = _Handle(name)

    def _Softmax(self, node: G.Softmax) -> None:
        h = self.h[node.inputs[0]]
        name = self.operator(C2.SoftmaxC2(node.name, inputs=(h.node,), shape=tuple(node.shape), axis=node.axis,
                                          scale=h.factor))
        self.h[node.name] = _Handle(name)

    def _MatMul(self, node: G.MatMul) -> None:
        ins = tuple(self.materialise(self.h[s], self.g[s].shape, s) for s in node.inputs)
        name = self.operator(C2.MatMulC2(node.name, inputs=ins, shape=tuple(node.shape)))
        self.h[node.name] = _Handle(name)

    def _ReLU(self, node) -> None:
        raise self.err(node, f"{self.method_name} on a Transformer converts a QANN: fine-tune first "
                             f"(spikeport finetune MODEL --method {self.method_name})")


def _check_qann(ann: AnnModel, method: str) -> None:
    if not any(isinstance(n, G.QuantAct) for n in ann.graph):
        raise ConversionError(f"{ann.source}: method {method!r} on a Transformer needs its quantised ANN (QuantAct "
                              f"nodes); make it with: spikeport finetune {ann.source} --method {method} --train DATA.npz "
                              "--epochs 3 --out MODEL_Q.pt2")


def observed_ranges(ann: AnnModel, calib_x: np.ndarray, batch: int = 256) -> dict[str, float]:
    """max |QANN value| over ``calib_x`` of every value of the ANN graph (by name). Run before the
    build: under ``convert(..., release_ann=True)`` the walk frees each layer's weights."""
    import torch

    from ..frontend.ann_eval import evaluate_graph

    seen: dict[str, float] = {}

    def observe(name: str, v) -> None:
        if v.is_floating_point() and v.numel():
            seen[name] = max(seen.get(name, 0.0), float(v.abs().max()))
    for a in range(0, len(calib_x), batch):
        evaluate_graph(ann.graph, calib_x[a:a + batch], keep=[], dtype=torch.float64, observe=observe)
    return seen


def value_ranges(ann: AnnModel, net: ir.Network, calib_x: np.ndarray, batch: int = 256,
                 seen: dict[str, float] | None = None) -> dict[str, float]:
    """max |QANN value| over ``calib_x`` of every Relay / Readout (by its ANN source) and C2 function
    operator (by name): in C2 the summed output of these IR nodes IS that ANN value. The fixed-point
    quantiser sizes their units from it (compiler/quantize_c2.py; a static bound otherwise).
    ``seen``: :func:`observed_ranges`, measured already."""
    seen = observed_ranges(ann, calib_x, batch) if seen is None else seen
    out = {}
    for node in net.nodes():
        if isinstance(node, ir.Population) and not node.neuron.spiking and node.source in seen:
            out[node.name] = seen[node.source]
        elif isinstance(node, C2.C2Operator) and node.name in seen:
            out[node.name] = seen[node.name]
    return {k: v for k, v in out.items() if v > 0}


def build_c2(ann: AnnModel, method: str, calib_x: np.ndarray | None = None) -> tuple[ir.Network, dict, dict]:
    """The C2 network of a ViT QANN for ``method`` ('stbif' or 'pmsm'); also the per-neuron choices.
    With ``calib_x`` the network records ``meta["value_ranges"]`` (:func:`value_ranges`)."""
    _check_qann(ann, method)
    seen = observed_ranges(ann, calib_x) if calib_x is not None and len(calib_x) else None
    b = C2Builder(method, ann)
    net, pops = b.run()
    if seen is not None:
        net.meta["value_ranges"] = value_ranges(ann, net, calib_x, seen=seen)
    return net, pops, b.chosen


@register_method("stbif")
@dataclass
class STBIFMethod(ConversionMethod):
    """SpikeZIP-TF's ST-BIF conversion of a ViT QANN (C2; no options: the QANN fixes the levels)."""

    coding = "C2"
    _chosen: dict = field(default_factory=dict, repr=False)

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        if not is_transformer(ann.graph):
            raise ConversionError(f"{ann.source}: method 'stbif' converts Vision Transformer QANNs (LayerNorm, "
                                  "attention); for CNNs use qcfs or pmsm")
        _check_qann(ann, "stbif")

    def build(self, ann: AnnModel, calib_x: np.ndarray) -> tuple[ir.Network, dict]:
        net, pops, self._chosen = build_c2(ann, "stbif", calib_x)
        return net, pops

    def calibration_summary(self) -> dict:
        return {k: dict(v) for k, v in self._chosen.items()}


__all__ = ["C2Builder", "STBIFMethod", "build_c2"]
