"""``--method ecmt``: expectation compensation + multi-threshold neurons for Transformers (paper 003).

Placement (methods.md section 5, the paper's Algorithm 1): a MultiThreshold population before
every Linear except the head (the qkv, proj, fc1 and fc2 inputs) and on both operands of every
product of two tensors (q, k, v and the softmax output); LayerNorm, GELU and softmax become EC
operators; each product of two tensors a matrix-product EC; residual adds, the position embedding
and Linear outputs are Relay populations (the accumulator); the patch embedding (a Conv2d on the
analog input) and the head stay analog, the head into a Readout. Thresholds per tensor:
theta1 = the p-th percentile and theta2 = minus the (100 - p)-th percentile of the ANN values
feeding the neuron, averaged over calibration batches; except on softmax outputs, where the
paper's reference code (``trans_utils.get_data_from_place``, ``--softmax_p``) sets
theta1 = theta2 = 0.0125 whatever the model: attention probabilities lie in [0, 1] and are mostly
tiny (on the digits ViTs 96 % of them lie below half the 99th percentile, so the percentile rule
leaves them to the residual alone; docs/results/ecmt_digits_vit.md). C1 coding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from ..frontend.ann_eval import evaluate_graph
from ..ir import operators as O
from .lower import ConversionError, natural_weight_dtype
from .registry import ConversionMethod, register_method

_THETA_FLOOR = 1e-6  # guard for tensors whose percentile is 0 (e.g. a tiny or one-sided tensor)


@dataclass
class _Handle:
    """The IR node whose per-step value stands for an ANN value, times a pending constant factor."""

    node: str
    factor: float = 1.0


@register_method("ecmt")
@dataclass
class ECMT(ConversionMethod):
    """Options: ``levels`` n (thresholds per sign, default 8), ``percentile`` p (default 99),
    ``calib_batch`` (samples per calibration batch; thresholds are averaged over batches),
    ``neg_compare`` ('<' as the paper's Eq. 25, '<=' as its reference code), ``softmax_theta``
    (theta1 = theta2 of the MT neurons on softmax outputs, default 0.0125 as the reference code's
    ``--softmax_p``; raised to ``2^-(n-1)`` where the top level ``2^(n-1) theta`` would otherwise stay
    below a probability of 1; 0: the percentile rule as on every other MT neuron)."""

    levels: int = 8
    percentile: float = 99.0
    calib_batch: int = 100
    neg_compare: str = "<"
    softmax_theta: float = 0.0125
    _thresholds: dict = field(default_factory=dict, repr=False)
    _ranges: dict = field(default_factory=dict, repr=False)

    coding = "C1"

    def __post_init__(self) -> None:
        if not 1 <= int(self.levels) <= 30:
            raise ValueError(f"levels {self.levels} must be in 1..30")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"percentile {self.percentile} must be in (50, 100]")
        if int(self.calib_batch) < 1:
            raise ValueError(f"calib_batch {self.calib_batch} must be >= 1")
        if self.neg_compare not in ("<", "<="):
            raise ValueError(f"neg_compare {self.neg_compare!r} must be '<' or '<='")
        if not 0.0 <= float(self.softmax_theta) <= 1.0:
            raise ValueError(f"softmax_theta {self.softmax_theta} must be in [0, 1] (0: the percentile rule)")

    # ------------------------------------------------------------------ calibration
    def mt_sources(self, graph: G.AnnGraph) -> list[str]:
        """ANN values that get a multi-threshold neuron: inputs of Linear (not the head) and MatMul."""
        out: list[str] = []
        for node in graph:
            if isinstance(node, G.MatMul) or (isinstance(node, G.Linear) and not _is_head(graph, node)):
                out.extend(s for s in node.inputs if s not in out)
        return out

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        names = self.mt_sources(ann.graph)
        hi = {n: [] for n in names}
        lo = {n: [] for n in names}
        self._ranges = {}
        wanted = set(names)

        def observe(name: str, value) -> None:  # percentiles as each value is made: no activation is kept
            self._observe_range(name, value)
            if name in wanted:
                v = value.reshape(-1).cpu().numpy()
                hi[name].append(float(np.percentile(v, self.percentile)))
                lo[name].append(float(np.percentile(v, 100.0 - self.percentile)))
        for a in range(0, len(calib_x), int(self.calib_batch)):
            evaluate_graph(ann.graph, calib_x[a:a + int(self.calib_batch)], keep=[], dtype=_f64(), observe=observe)
        self._thresholds = {}
        soft = self.softmax_base_threshold()
        for n in names:
            if soft and _is_softmax_output(ann.graph, n):
                self._thresholds[n] = (soft, soft)
                continue
            t1, t2 = float(np.mean(hi[n])), -float(np.mean(lo[n]))
            t1 = t1 if t1 > _THETA_FLOOR else max(t2, _THETA_FLOOR)
            t2 = t2 if t2 > _THETA_FLOOR else t1  # one-sided tensor: the negative side mirrors theta1
            self._thresholds[n] = (t1, t2)

    def softmax_base_threshold(self) -> float:
        """theta of the MT neurons on softmax outputs (0: percentile rule): the reference code's
        fixed ``softmax_p``, at least ``2^-(n-1)`` so that the top level ``2^(n-1) theta`` covers a
        probability of 1 (one spike per step can then carry any softmax output)."""
        if not float(self.softmax_theta):
            return 0.0
        return max(float(self.softmax_theta), 2.0 ** -(int(self.levels) - 1))

    def _observe_range(self, name: str, v) -> None:
        """max |value| per ANN tensor over the calibration data: the quantiser's range for its IR node."""
        if v.is_floating_point() and v.numel():
            self._ranges[name] = max(self._ranges.get(name, 0.0), float(v.abs().max()))

    def calibration_summary(self) -> dict:
        return {n: {"theta1": t1, "theta2": t2} for n, (t1, t2) in self._thresholds.items()}

    # ------------------------------------------------------------------ building the IR
    def build(self, ann: AnnModel, calib_x: np.ndarray) -> tuple[ir.Network, dict]:
        return _Builder(self, ann).run()


def _f64():
    import torch
    return torch.float64


def _is_softmax_output(graph: G.AnnGraph, name: str) -> bool:
    """True where ANN value ``name`` is a softmax output, possibly moved by Identity / Reshape /
    Flatten / Rearrange (values stay probabilities in [0, 1])."""
    node = graph[name]
    while isinstance(node, (G.Identity, G.Reshape, G.Flatten, G.Rearrange)):
        node = graph[node.inputs[0]]
    return isinstance(node, G.Softmax)


def _is_head(graph: G.AnnGraph, node: G.AnnNode) -> bool:
    users = graph.users(node.name)
    while len(users) == 1 and isinstance(users[0], G.Identity):
        users = graph.users(users[0].name)
    return len(users) == 1 and isinstance(users[0], G.Output)


class _Builder:
    def __init__(self, method: ECMT, ann: AnnModel):
        self.m = method
        self.ann = ann
        self.g = ann.graph
        self.net = ir.Network(coding="C1")
        self.h: dict[str, _Handle] = {}
        self.mt: dict[str, str] = {}  # ANN value -> its MT population
        self.populations: dict[str, list[str]] = {}
        self.ranges: dict[str, float] = {}  # IR node -> max |per-sample value| of its ANN tensor (calibration)
        self.wdtype = natural_weight_dtype(self.g)  # float32 weights for a float32 ANN, as convert/lower.py

    def _method_ranges(self) -> dict:
        """Calibration ranges of the ANN tensors; builders of other methods (AIF, C2) record none."""
        return getattr(self.m, "_ranges", None) or {}

    def note_range(self, ir_name: str, ann_name: str, factor: float = 1.0) -> None:
        r = self._method_ranges().get(ann_name)
        if r is not None:
            self.ranges[ir_name] = float(r) / abs(factor) if factor else float(r)

    def err(self, node: G.AnnNode, msg: str) -> ConversionError:
        return ConversionError(f"{self.ann.source}: node {node.name!r} ({node.op}): {msg}")

    def _name(self, base: str) -> str:
        name, k = base.replace("/", "_"), 1
        while name in self.net:
            name, k = f"{base}_{k}", k + 1
        return name

    # ---------------------------------------------------------------- IR pieces
    def relay(self, base: str, shape, bias=0.0, source: str = "") -> str:
        name = self._name(base)
        bias = bias if isinstance(bias, np.ndarray) and bias.dtype == np.float32 else np.asarray(bias, np.float64)
        self.net.add(ir.Population(name, tuple(shape), O.Relay(bias=bias),
                                   ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0), source=source))
        return name

    def identity(self, src: str, dst: str, weight: float) -> None:
        self.net.add(ir.Identity(self._name(f"{src}->{dst}"), source=src, target=dst, weight=np.asarray(float(weight))))

    def materialise(self, h: _Handle, shape, source: str) -> str:
        """An IR node carrying exactly the ANN value (a pending factor goes through a Relay)."""
        if h.factor == 1.0:
            return h.node
        r = self.relay(f"{source}_scaled", shape, source=source)
        self.identity(h.node, r, h.factor)
        return r

    def operator(self, op: O.TypedOperator) -> str:
        op.name = self._name(op.name)
        self.net.add(op)
        return op.name

    def mt_population(self, src: str) -> str:
        """The MultiThreshold population on ANN value ``src`` (shared by all its consumers)."""
        if src in self.mt:
            return self.mt[src]
        t1, t2 = self.m._thresholds[src]
        n = int(self.m.levels)
        shape = self.g[src].shape
        name = self._name(f"{src}_mt")
        self.net.add(ir.Population(
            name, tuple(shape),
            O.MultiThreshold(theta1=np.asarray(t1), theta2=np.asarray(t2), levels=n, neg_compare=self.m.neg_compare),
            ir.SpikePayload(kind="graded", bits=n + 1, min_level=-2 ** (n - 1), max_level=2 ** (n - 1), neg_value=t2 / t1),
            decode_scale=np.asarray(t1), source=src))
        h = self.h[src]
        self.identity(h.node, name, h.factor)
        self.mt[src] = name
        self.populations.setdefault(src, []).append(name)
        return name

    # ---------------------------------------------------------------- walk
    def run(self) -> tuple[ir.Network, dict]:
        for node in self.g:
            handler = getattr(self, f"_{node.op}", None)
            if handler is None:
                raise self.err(node, "ecmt has no rule for this op (ecmt converts Transformers: LayerNorm, GELU, Softmax, "
                                     "MatMul, token Linear, residual Add, patch-embedding Conv2d on the input)")
            handler(node)
        for pop in self.net.populations():
            if pop.name not in self.ranges and pop.source in self._method_ranges():
                self.note_range(pop.name, pop.source)
        # the quantiser sizes relays and operator outputs from these (compiler/quantize_operators.py)
        self.net.meta["value_ranges"] = dict(self.ranges)
        return self.net, self.populations

    def _Input(self, node: G.Input) -> None:
        self.net.add(ir.Input(node.name, tuple(node.shape), coding="analog"))
        self.h[node.name] = _Handle(node.name)

    def _Conv2d(self, node: G.Conv2d) -> None:
        src = self.g[node.inputs[0]]
        if not isinstance(src, G.Input):
            raise self.err(node, "only the patch embedding (a Conv2d on the analog input) is supported inside a Transformer")
        r = self.relay(node.name, node.shape, 0.0 if node.bias is None else node.bias, source=node.name)
        self.net.add(ir.Conv2d(self._name(f"{node.name}_w"), source=src.name, target=r,
                               weight=np.array(node.weight, dtype=self.wdtype), stride=node.stride, padding=node.padding,
                               dilation=node.dilation, groups=node.groups))
        self.ann.handed_over(node.name)   # frees the ANN's copy under convert(release_ann=True)
        self.h[node.name] = _Handle(r)

    def _weight(self, w: np.ndarray, factor: float) -> np.ndarray:
        """``w * factor`` computed in float64 and rounded to the ANN's width (``convert/lower.py``'s rule),
        C-ordered: one layer's float64 product is the only temporary."""
        return np.ascontiguousarray(np.multiply(w, factor, dtype=np.float64).astype(self.wdtype, copy=False))

    def _Linear(self, node: G.Linear) -> None:
        src = node.inputs[0]
        # a token population's parameters are given per neuron: a (C_out,) bias repeats over tokens
        b = np.zeros((), self.wdtype) if node.bias is None else node.bias.astype(self.wdtype, copy=False)
        bias = np.broadcast_to(b, node.shape).copy()
        if _is_head(self.g, node):  # analog into the readout, as the reference code
            h = self.h[src]
            out = self._name(node.name)
            self.net.add(ir.Population(out, tuple(node.shape), ir.Readout(bias=np.asarray(bias)),
                                       ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0), source=node.name))
            self.net.add(O.TokenDense(self._name(f"{node.name}_w"), source=h.node, target=out,
                                      weight=self._weight(node.weight, h.factor)))
        else:
            mt = self.mt_population(src)
            out = self.relay(node.name, node.shape, bias, source=node.name)
            self.net.add(O.TokenDense(self._name(f"{node.name}_w"), source=mt, target=out,
                                      weight=self._weight(node.weight, self.m._thresholds[src][0])))
        self.ann.handed_over(node.name)   # frees the ANN's copy under convert(release_ann=True)
        self.h[node.name] = _Handle(out)

    def _rearrange(self, node, index: np.ndarray) -> None:
        h = self.h[node.inputs[0]]
        small = index.size == 0 or (int(index.min()) >= 0 and int(index.max()) < 2 ** 31)
        index = index.astype(np.int32 if small else np.int64, copy=False)  # int32 maps are shared with the ANN graph
        name = self.operator(O.Rearrange(node.name, inputs=(h.node,), shape=tuple(node.shape), index=index))
        self.note_range(name, node.name, h.factor)
        self.h[node.name] = _Handle(name, h.factor)

    def _Reshape(self, node) -> None:
        self._rearrange(node, np.arange(int(np.prod(node.shape))).reshape(node.shape))

    _Flatten = _Reshape

    def _Rearrange(self, node: G.Rearrange) -> None:
        self._rearrange(node, node.index)

    def _Identity(self, node) -> None:
        self.h[node.name] = self.h[node.inputs[0]]

    def _Constant(self, node: G.Constant) -> None:
        self.h[node.name] = _Handle("", 1.0)  # used only as a Concat prefix

    def _Concat(self, node: G.Concat) -> None:
        consts = [s for s in node.inputs if isinstance(self.g[s], G.Constant)]
        data = [s for s in node.inputs if s not in consts]
        if consts and (len(consts) > 1 or node.inputs[0] != consts[0]):
            raise self.err(node, "only one constant, first (a class token), can be concatenated with token tensors")
        ins = tuple(self.materialise(self.h[s], self.g[s].shape, s) for s in data)
        prefix = self.g[consts[0]].value.astype(np.float64) if consts else None
        name = self.operator(O.Concat(node.name, inputs=ins, shape=tuple(node.shape), axis=node.axis, prefix=prefix))
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _AddConst(self, node: G.AddConst) -> None:
        h = self.h[node.inputs[0]]
        r = self.relay(node.name, node.shape, np.broadcast_to(node.value, node.shape).astype(np.float64), source=node.name)
        self.identity(h.node, r, h.factor)
        self.h[node.name] = _Handle(r)

    def _Add(self, node: G.Add) -> None:
        r = self.relay(node.name, node.shape, source=node.name)  # the residual stream: an accumulator
        for s in node.inputs:
            self.identity(self.h[s].node, r, self.h[s].factor)
        self.h[node.name] = _Handle(r)

    def _Scale(self, node: G.Scale) -> None:
        h = self.h[node.inputs[0]]
        self.h[node.name] = _Handle(h.node, h.factor * node.factor)

    def _LayerNorm(self, node: G.LayerNorm) -> None:
        src = self.materialise(self.h[node.inputs[0]], self.g[node.inputs[0]].shape, node.inputs[0])
        name = self.operator(O.LayerNormEC(node.name, inputs=(src,), shape=tuple(node.shape),
                                           weight=node.weight.astype(np.float64), bias=node.bias.astype(np.float64),
                                           eps=float(node.eps)))
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _GELU(self, node: G.GELU) -> None:
        src = self.materialise(self.h[node.inputs[0]], self.g[node.inputs[0]].shape, node.inputs[0])
        name = self.operator(O.GELUEC(node.name, inputs=(src,), shape=tuple(node.shape), approximate=node.approximate))
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _Softmax(self, node: G.Softmax) -> None:
        h = self.h[node.inputs[0]]
        name = self.operator(O.SoftmaxEC(node.name, inputs=(h.node,), shape=tuple(node.shape), axis=node.axis, scale=h.factor))
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _MatMul(self, node: G.MatMul) -> None:
        a, b = (self.mt_population(s) for s in node.inputs)
        name = self.operator(O.MatMulEC(node.name, inputs=(a, b), shape=tuple(node.shape)))
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _Mean(self, node: G.Mean) -> None:
        if node.keepdim:
            raise self.err(node, "mean with keepdim")
        src = self.materialise(self.h[node.inputs[0]], self.g[node.inputs[0]].shape, node.inputs[0])
        name = self.operator(O.Mean(node.name, inputs=(src,), shape=tuple(node.shape), axes=tuple(node.axes)))
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _Output(self, node: G.Output) -> None:
        src = node.inputs[0]
        h = self.h[src]
        obj = self.net[h.node] if h.node in self.net else None
        if isinstance(obj, ir.Population) and isinstance(obj.neuron, ir.Readout) and h.factor == 1.0:
            self.net.outputs = [h.node]
            return
        out = self._name("output")
        self.net.add(ir.Population(out, tuple(node.shape), ir.Readout(),
                                   ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0), source=src))
        self.identity(h.node, out, h.factor)
        self.net.outputs = [out]
