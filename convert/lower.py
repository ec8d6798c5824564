"""Lowering of the normalised ANN graph to the spikeport IR, shared by every conversion method.

The lowering does the structure; the method supplies the neuron of each activation node
(:class:`NeuronSpec`). While walking the ANN graph every value is one of

* :class:`SpikeValue` - carried by events of one or more IR sources (the input, or populations);
  one event of source channel c stands for ANN value ``scale[c]``. It may be a flattened view
  and may carry a pending average pooling that the next linear layer absorbs.
* :class:`PreAct` - a pre-activation: a sum of linear terms (source, connectivity, weight) plus a
  per-channel bias, not yet materialised. An activation turns it into an ``ir.Population``
  whose incoming projections are the terms.

Rules (all exact in real arithmetic):

* BatchNorm ``a*z + b`` on a pre-activation scales every term's weight and the bias per output
  channel (also after an Add: every term is scaled).
* Add of pre-activations merges their terms; a spiking operand (residual skip) becomes an
  ``ir.Identity`` term with per-channel weight ``scale``.
* AvgPool with kernel == stride k, no padding, followed by Conv2d (optionally after Flatten by
  Linear) folds into that layer: ``conv(avgpool_k(x), W, s, p) = conv(x, W (x) 1_kxk / k^2, s*k, p*k)``
  (``(x)`` repeats each kernel tap over a k x k block) and ``W @ flatten(avgpool_k(x))`` =
  ``W' @ flatten(x)`` with ``W'[o, c, h, w] = W[o, c, h // k, w // k] / k^2`` (rows and columns
  that floor division drops get weight 0). GlobalAvgPool then Linear: ``W'[o, c, h, w] = W[o, c]/(H*W)``.
  Any AvgPool followed by an activation becomes a depthwise ``ir.Conv2d`` (groups = C, weight 1/k^2).
  Folding into a convolution is decided per layer (``pool="auto"``): it is done only where the
  folded conv has no more ANN-equivalent MACs (= synapses, up to padding) than pooling separately
  (``C*H*W`` for the pool + the conv at pooled resolution); otherwise, when the pooled value comes
  from one non-negative binary IF population, the pool becomes its own relay population
  (:func:`pool_relay_spec`). A Linear after pooling stays folded unless ``pool="separate"``. The
  decisions, with both MAC counts, are kept in ``net.meta["pooling"]``.
* Concat of spiking values followed by a linear op splits its weights along input channels, one
  projection per source. Flatten (C order) feeding Linear gives an ``ir.Dense`` from the (C, H, W)
  population.
* The final linear layer becomes an ``ir.Readout`` population, the network output.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from ..errors import SpikeportError


class ConversionError(SpikeportError):
    """The ANN graph has a structure the lowering cannot express; the message names the nodes."""


# ---------------------------------------------------------------------- values during lowering
@dataclass
class SpikeSource:
    """One IR node emitting events: ``scale[c]`` is the ANN value of one event of channel c."""

    node: str
    shape: tuple[int, ...]
    scale: np.ndarray
    nonneg: bool

    @property
    def channels(self) -> int:
        return int(self.shape[0])


@dataclass
class SpikeValue:
    """An ANN value carried by events of ``parts`` (several after a channel Concat).

    pool        pending AvgPool ``(kh, kw)`` or ``"global"``, absorbed by the next linear op
    flat        the ANN sees it flattened; ``grid`` is the unflattened (pooled) ANN shape
    """

    parts: list[SpikeSource]
    shape: tuple[int, ...]
    origin: str
    pool: tuple[int, int] | str | None = None
    flat: bool = False
    grid: tuple[int, ...] = ()

    @property
    def nonneg(self) -> bool:
        return all(p.nonneg for p in self.parts)


@dataclass
class Term:
    """A linear term ``op(source)`` of a pre-activation (becomes one IR projection)."""

    source: str
    kind: str  # "conv2d" | "dense" | "identity"
    weight: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def scaled(self, a: np.ndarray) -> "Term":
        """This term with every output channel c multiplied by ``a[c]``."""
        w = np.asarray(self.weight, dtype=np.float64)
        if self.kind == "identity":
            w = np.broadcast_to(w, a.shape) if w.ndim == 0 else w
            a_full = a if w.ndim == 1 else a.reshape((-1,) + (1,) * (w.ndim - 1))
            return replace(self, weight=w * a_full)
        if self.kind == "conv2d":
            return replace(self, weight=w * a[:, None, None, None])
        return replace(self, weight=w * a[:, None])


@dataclass
class PreAct:
    """``sum(terms) + bias`` (bias per output channel); ``shape`` is the IR target shape."""

    terms: list[Term]
    bias: np.ndarray
    shape: tuple[int, ...]
    ann_shape: tuple[int, ...]
    origin: list[str] = field(default_factory=list)
    flat: bool = False


Value = SpikeValue | PreAct


# ---------------------------------------------------------------------- method interface
@dataclass
class NeuronSpec:
    """What a method chooses for one population: neuron model, payload, decode and event value.

    event_value  ANN value of one +1 event per channel (downstream weights are multiplied by it)
    """

    neuron: ir.NeuronModel
    payload: ir.SpikePayload
    decode_scale: np.ndarray
    event_value: np.ndarray
    decode_offset: np.ndarray = field(default_factory=lambda: np.array(0.0))
    nonneg: bool = True


@dataclass
class ActivationContext:
    """What a method gets to choose a neuron: the ANN node, population shape and folded bias."""

    node: G.AnnNode
    shape: tuple[int, ...]
    bias: np.ndarray
    pre: PreAct


class NeuronProvider(Protocol):
    def activation(self, ctx: ActivationContext) -> NeuronSpec: ...

    def readout(self, ctx: ActivationContext) -> NeuronSpec: ...


def default_readout(ctx: ActivationContext) -> NeuronSpec:
    """C1 readout: accumulate input + bias every step, decoded as v(T)/T (``ir.Readout``)."""
    c = ctx.shape[0]
    return NeuronSpec(neuron=ir.Readout(bias=ctx.bias.astype(np.float64)), payload=ir.SpikePayload(),
                      decode_scale=np.ones(c), event_value=np.ones(c), nonneg=False)


# ---------------------------------------------------------------------- the lowering
def _node_list(names) -> str:
    return ", ".join(repr(n) for n in names)


class Lowering:
    """Walks the ANN graph once, building the IR network (see module docstring)."""

    def __init__(self, ann: AnnModel, method: NeuronProvider, input_nonneg: bool, input_coding: str = "analog",
                 pool: str = "auto"):
        if pool not in POOL_CHOICES:
            raise ConversionError(f"pool={pool!r} must be one of {POOL_CHOICES}")
        self.pool_mode = pool
        self.pooling: list[dict] = []      # one decision per pooled value absorbed by a linear layer
        self.ann = ann
        self.graph = ann.graph
        self.method = method
        self.net = ir.Network(coding="C1")
        self.values: dict[str, Value] = {}
        self.input_nonneg = input_nonneg
        self.input_coding = input_coding
        self.populations: dict[str, str] = {}  # ANN activation node -> IR population name
        self.weight_dtype = natural_weight_dtype(ann.graph)

    def err(self, node: G.AnnNode, msg: str) -> ConversionError:
        return ConversionError(f"{self.ann.source}: node {node.name!r} ({node.op}): {msg}")

    def run(self) -> ir.Network:
        handlers: dict[type, Callable] = {
            G.Input: self._input, G.Conv2d: self._conv, G.Linear: self._linear, G.BatchNorm: self._bn,
            G.ReLU: self._activation, G.LeakyReLU: self._activation, G.QuantAct: self._activation,
            G.AvgPool: self._avgpool,
            G.GlobalAvgPool: self._gap, G.MaxPool: self._maxpool, G.Flatten: self._flatten, G.Add: self._add,
            G.Concat: self._concat, G.Identity: self._identity, G.Output: self._output,
        }
        for node in self.graph:
            handler = handlers.get(type(node))
            if handler is None:
                raise self.err(node, "no lowering rule for this op")
            self.values[node.name] = handler(node)
        return self.net

    def val(self, node: G.AnnNode, i: int = 0) -> Value:
        return self.values[node.inputs[i]]

    # ------------------------------------------------------------------ simple ops
    def _input(self, node: G.Input) -> Value:
        shape = tuple(node.shape)
        self.net.add(ir.Input(node.name, shape=shape, coding=self.input_coding))
        src = SpikeSource(node.name, shape, np.ones(shape[0]), self.input_nonneg)
        return SpikeValue([src], shape, node.name)

    def _identity(self, node: G.AnnNode) -> Value:
        return self.val(node)

    def _maxpool(self, node: G.MaxPool) -> Value:
        raise self.err(node, "MaxPool is not convertible to IF spikes without changing the network (the max "
                       "of spike rates is not the rate of a max); the model should use AvgPool, or pass "
                       "maxpool='avg' to replace every MaxPool by an AvgPool of the same window")

    def _flatten(self, node: G.Flatten) -> Value:
        v = self.val(node)
        if isinstance(v, PreAct):
            return replace(v, flat=True, ann_shape=tuple(node.shape), origin=v.origin + [node.name])
        if v.flat or len(v.shape) == 1:
            return replace(v, shape=tuple(node.shape))
        return replace(v, flat=True, grid=tuple(v.shape), shape=tuple(node.shape))

    # ------------------------------------------------------------------ linear ops
    def _no_preact(self, node: G.AnnNode, v: Value) -> SpikeValue:
        if isinstance(v, PreAct):
            raise self.err(node, f"follows the linear layer(s) {_node_list(v.origin)} with no activation in between; "
                           "two linear layers in a row cannot be converted (only an AvgPool with kernel == stride "
                           "folds into the next layer)")
        return v

    def _channel_split(self, node: G.AnnNode, v: SpikeValue, channels: int) -> list[tuple[SpikeSource, int, int]]:
        """``(part, first channel, last channel + 1)`` of each concat part along the input channels."""
        total = sum(p.channels for p in v.parts)
        if total != channels:
            raise self.err(node, f"expects {channels} input channels but its input has {total}")
        out, start = [], 0
        for p in v.parts:
            out.append((p, start, start + p.channels))
            start += p.channels
        return out

    def _conv(self, node: G.Conv2d) -> Value:
        v = self._no_preact(node, self.val(node))
        if v.flat or v.pool == "global":
            raise self.err(node, "a convolution after Flatten or global pooling is not supported")
        w = node.weight.astype(np.float64)
        stride, padding, dilation, groups = node.stride, node.padding, node.dilation, node.groups
        if v.pool is not None:
            kh, kw = v.pool
            per_out = w.shape[1] * w.shape[2] * w.shape[3]
            n_out = int(np.prod(node.shape))
            v = self._decide_pool(node, v, folded=n_out * per_out * kh * kw,
                                  separate=int(np.prod(v.shape)) * kh * kw + n_out * per_out)
        if v.pool is not None:
            kh, kw = v.pool
            src_h, src_w = v.parts[0].shape[1:]
            if dilation != (1, 1):
                raise self.err(node, f"AvgPool {v.origin!r} cannot fold into a dilated convolution (dilation {dilation})")
            if padding != (0, 0) and (src_h % kh or src_w % kw):
                raise self.err(node, f"AvgPool {v.origin!r} with kernel {(kh, kw)} over {src_h}x{src_w} leaves a "
                               "remainder; folding it into a padded convolution would not be exact")
            w = np.repeat(np.repeat(w, kh, axis=2), kw, axis=3) / (kh * kw)
            stride = (stride[0] * kh, stride[1] * kw)
            padding = (padding[0] * kh, padding[1] * kw)
        parts = self._channel_split(node, v, w.shape[1] * groups)
        if groups != 1 and len(parts) > 1:
            raise self.err(node, "a grouped convolution after Concat is not supported")
        terms = []
        out_ch, in_per_group = w.shape[0], w.shape[1]
        for part, lo, hi in parts:
            if groups == 1:
                wp = w[:, lo:hi] * part.scale[None, :, None, None]
            else:
                group_of_out = np.arange(out_ch) // (out_ch // groups)
                scale = part.scale.reshape(groups, in_per_group)[group_of_out]
                wp = w * scale[:, :, None, None]
            terms.append(Term(part.node, "conv2d", wp, tuple(stride), tuple(padding), tuple(dilation), groups))
            conv = ir.Conv2d("_check", weight=wp, stride=tuple(stride), padding=tuple(padding),
                             dilation=tuple(dilation), groups=groups)
            if conv.out_shape(part.shape) != tuple(node.shape):
                raise self.err(node, f"lowered convolution gives {conv.out_shape(part.shape)}, the ANN gives {tuple(node.shape)}")
        bias = node.bias.astype(np.float64) if node.bias is not None else np.zeros(out_ch)
        return PreAct(terms, bias, tuple(node.shape), tuple(node.shape), [node.name])

    def _linear(self, node: G.Linear) -> Value:
        v = self._no_preact(node, self.val(node))
        w = node.weight.astype(np.float64, order="C")   # the graph's weight may be an F-ordered view
        out = w.shape[0]
        terms = []
        if not v.flat:
            if len(v.shape) != 1 or v.pool is not None:
                raise self.err(node, f"Linear on an unflattened value of shape {v.shape}; flatten it first")
            for part, lo, hi in self._channel_split(node, v, w.shape[1]):
                terms.append(Term(part.node, "dense", w[:, lo:hi] * part.scale[None, :]))
        else:
            if v.pool is not None:
                window = int(np.prod(v.parts[0].shape[1:])) if v.pool == "global" else int(np.prod(v.pool))
                full = sum(int(np.prod(p.shape)) for p in v.parts)
                v = self._decide_pool(node, v, folded=out * full,
                                      separate=int(np.prod(v.grid)) * window + out * int(np.prod(v.grid)), linear=True)
            grid = v.grid
            if int(np.prod(grid)) != w.shape[1]:
                raise self.err(node, f"weight has {w.shape[1]} inputs, the flattened input has {int(np.prod(grid))}")
            w4 = w.reshape((out,) + tuple(grid))
            for part, lo, hi in self._channel_split(node, v, grid[0]):
                wp = w4[:, lo:hi]
                if len(part.shape) == 3 and v.pool is not None:
                    h, wd = part.shape[1:]
                    if v.pool == "global":
                        wp = np.broadcast_to(wp, wp.shape[:2] + (h, wd)) / (h * wd)
                    else:
                        kh, kw = v.pool
                        exp = np.repeat(np.repeat(wp, kh, axis=2), kw, axis=3) / (kh * kw)
                        wp = np.zeros(wp.shape[:2] + (h, wd))
                        wp[:, :, :exp.shape[2], :exp.shape[3]] = exp  # floor-dropped rows/cols keep weight 0
                scale = part.scale.reshape((1, -1) + (1,) * (wp.ndim - 2))
                terms.append(Term(part.node, "dense", (wp * scale).reshape(out, -1)))
        bias = node.bias.astype(np.float64) if node.bias is not None else np.zeros(out)
        return PreAct(terms, bias, (out,), tuple(node.shape), [node.name])

    def _bn(self, node: G.BatchNorm) -> Value:
        v = self.val(node)
        if not isinstance(v, PreAct):
            raise self.err(node, "BatchNorm must follow a Conv2d/Linear/Add (before the activation) to be folded; "
                           f"here it follows {v.origin!r}, whose output is already spiking")
        if v.flat:
            raise self.err(node, "BatchNorm on a flattened convolution output cannot be folded per channel")
        a, b = node.scale_shift()
        if a.shape[0] != v.shape[0]:
            raise self.err(node, f"has {a.shape[0]} channels, its input {v.shape[0]}")
        return PreAct([t.scaled(a) for t in v.terms], a * v.bias + b, v.shape, tuple(node.shape), v.origin + [node.name])

    # ------------------------------------------------------------------ pooling
    def _avgpool(self, node: G.AvgPool) -> Value:
        v = self.val(node)
        if isinstance(v, PreAct):
            raise self.err(node, f"AvgPool on the pre-activation of {_node_list(v.origin)}; put the pooling after the activation")
        if v.flat or v.pool is not None:
            raise self.err(node, "AvgPool after Flatten or after another pooling is not supported")
        if node.kernel == node.stride and node.padding == (0, 0) and not node.ceil_mode:
            return replace(v, pool=tuple(node.kernel), shape=tuple(node.shape), origin=node.name)
        if node.ceil_mode or (node.padding != (0, 0) and not node.count_include_pad):
            raise self.err(node, "AvgPool with ceil_mode or count_include_pad=False is not supported")
        return self._depthwise(node, v, tuple(node.kernel), tuple(node.stride), tuple(node.padding))

    def _gap(self, node: G.GlobalAvgPool) -> Value:
        v = self.val(node)
        if isinstance(v, PreAct):
            raise self.err(node, f"global pooling of the pre-activation of {_node_list(v.origin)}; pool after the activation")
        if v.flat or v.pool is not None or len(v.shape) != 3:
            raise self.err(node, f"global pooling of a value of shape {v.shape} (after Flatten or pooling)")
        c = v.shape[0]
        return replace(v, pool="global", shape=tuple(node.shape), origin=node.name,
                       flat=not node.keepdim, grid=(c, 1, 1) if not node.keepdim else ())

    def _depthwise(self, node: G.AnnNode, v: SpikeValue, kernel, stride, padding) -> PreAct:
        """Average pooling as a depthwise convolution (groups = C, weight = scale / (kh*kw))."""
        if len(v.parts) != 1:
            raise self.err(node, "pooling a Concat before an activation is not supported")
        part = v.parts[0]
        c = part.channels
        w = np.ones((c, 1) + tuple(kernel)) / float(np.prod(kernel)) * part.scale[:, None, None, None]
        term = Term(part.node, "conv2d", w, tuple(stride), tuple(padding), (1, 1), c)
        out = ir.Conv2d("_check", weight=w, stride=tuple(stride), padding=tuple(padding), groups=c).out_shape(part.shape)
        return PreAct([term], np.zeros(c), out, tuple(node.shape) if len(node.shape) == 3 else out, [node.name])

    def _decide_pool(self, node: G.AnnNode, v: SpikeValue, folded: int, separate: int,
                     linear: bool = False) -> SpikeValue:
        """Fold the pending pool of ``v`` into ``node`` or relay it through its own population.

        ``folded`` / ``separate``: ANN-equivalent MACs per sample of the folded layer and of the pool
        plus the layer at pooled resolution. Returns ``v`` unchanged (fold) or the relayed value.
        In ``auto`` mode a Linear layer (the classifier after the last pool in the networks we
        convert) stays folded: its input remains exact and no relay population rounds it.
        """
        relay_ok, why = self._relay_possible(v)
        want = self.pool_mode == "separate" or (self.pool_mode == "auto" and folded > separate and not linear)
        decision = "separate" if want and relay_ok else "fold"
        reason = (f"folding multiplies MACs by {folded / separate:.2f}" if folded > separate
                  else "folding adds no MACs")
        if linear and folded > separate and self.pool_mode == "auto":
            reason += "; Linear layer: auto keeps it folded (exact classifier input), pool='separate' relays it"
        if want and not relay_ok:
            reason += f"; kept folded: {why}"
        self.pooling.append({"pool": v.origin, "layer": node.name, "decision": decision, "folded_macs": int(folded),
                             "separate_macs": int(separate), "reason": reason})
        if decision == "fold":
            return v
        return self._pool_relay(v)

    def _relay_possible(self, v: SpikeValue) -> tuple[bool, str]:
        if len(v.parts) != 1:
            return False, "the pooled value is a Concat"
        node = self.net[v.parts[0].node] if v.parts[0].node in self.net else None
        if not isinstance(node, ir.Population):
            return False, "the pooled value is the network input"
        n = node.neuron
        if type(n) is not ir.IF or n.neg_threshold is not None or node.payload.kind != "binary" or not v.nonneg:
            return False, f"the pooled population {node.name!r} is not a non-negative binary IF population"
        return True, ""

    def _pool_relay(self, v: SpikeValue) -> SpikeValue:
        """The pending pool of ``v`` as its own population (depthwise projection + relay IF)."""
        pool_node = self.graph[v.origin]
        part = v.parts[0]
        c, h, w = part.shape
        kernel = (h, w) if v.pool == "global" else tuple(v.pool)
        pre = self._depthwise(pool_node, replace(v, pool=None), kernel, kernel, (0, 0))
        spec = pool_relay_spec(part.scale)
        out = self._population(pool_node, pre, lambda ctx: spec, natural=False)  # 1/k^2 pairs with the threshold
        if v.flat:
            return replace(out, flat=True, grid=tuple(pre.shape), shape=tuple(v.shape))
        return replace(out, shape=tuple(pre.shape))

    def _materialise(self, node: G.AnnNode, v: SpikeValue) -> PreAct:
        """Turn a spiking value that cannot be passed on as is into a pre-activation."""
        if v.pool == "global":
            h, w = v.parts[0].shape[1:]
            pre = self._depthwise(node, v, (h, w), (h, w), (0, 0))
            return replace(pre, flat=v.flat)
        if v.pool is not None:
            return self._depthwise(node, v, v.pool, v.pool, (0, 0))
        if len(v.parts) != 1:
            raise self.err(node, "a Concat must feed a linear layer or a ReLU (here it would need a population)")
        part = v.parts[0]
        return PreAct([Term(part.node, "identity", part.scale.copy())], np.zeros(part.channels), part.shape,
                      tuple(v.shape), [v.origin], flat=v.flat)

    # ------------------------------------------------------------------ add / concat
    def _add(self, node: G.Add) -> Value:
        a, b = self.val(node, 0), self.val(node, 1)
        pa = a if isinstance(a, PreAct) else self._skip(node, a)
        pb = b if isinstance(b, PreAct) else self._skip(node, b)
        if pa.shape != pb.shape or pa.flat != pb.flat:
            raise self.err(node, f"adds values of shapes {pa.shape} and {pb.shape}")
        return PreAct(pa.terms + pb.terms, pa.bias + pb.bias, pa.shape, tuple(node.shape), pa.origin + pb.origin + [node.name], pa.flat)

    def _skip(self, node: G.AnnNode, v: SpikeValue) -> PreAct:
        if v.pool is not None or len(v.parts) != 1:
            raise self.err(node, f"a residual from {v.origin!r} (pooled or concatenated) cannot be added directly")
        return self._materialise(node, v)

    def _concat(self, node: G.Concat) -> Value:
        vals = [self.values[i] for i in node.inputs]
        for i, v in zip(node.inputs, vals):
            if isinstance(v, PreAct):
                raise self.err(node, f"input {i!r} is a pre-activation (of {_node_list(v.origin)}); apply the activation before Concat")
            if v.pool is not None or v.flat:
                raise self.err(node, f"input {i!r} is pooled or flattened; concatenate before pooling/flatten")
        if node.axis != 0:
            raise self.err(node, f"concatenation along axis {node.axis + 1} (only channels, axis 1, is supported)")
        parts = [p for v in vals for p in v.parts]
        return SpikeValue(parts, tuple(node.shape), node.name)

    # ------------------------------------------------------------------ neurons
    def _activation(self, node: G.AnnNode) -> Value:
        v = self.val(node)
        if isinstance(v, SpikeValue):
            if v.pool is None and v.nonneg and not isinstance(node, G.QuantAct):
                return replace(v, origin=node.name)  # ReLU / LeakyReLU of a non-negative value is the identity
            # (a quantised activation is never the identity: it rounds to its levels)
            v = self._materialise(node, v)
        return self._population(node, v, self.method.activation)

    def _population(self, node: G.AnnNode, pre: PreAct, choose, natural: bool = True) -> SpikeValue:
        shape = tuple(pre.shape)
        if natural and self.weight_dtype == np.float32:   # the ANN's width (dense/conv; identity weights are per channel)
            pre = replace(pre, terms=[replace(t, weight=np.asarray(t.weight, np.float64).astype(np.float32)
                                              .astype(np.float64)) if t.kind in ("conv2d", "dense") else t
                                      for t in pre.terms])
        spec: NeuronSpec = choose(ActivationContext(node=node, shape=shape, bias=pre.bias.copy(), pre=pre))
        pop = ir.Population(node.name, shape=shape, neuron=spec.neuron, payload=spec.payload,
                            decode_scale=np.asarray(spec.decode_scale, dtype=np.float64),
                            decode_offset=np.asarray(spec.decode_offset, dtype=np.float64), source=node.name)
        self.net.add(pop)
        self.populations[node.name] = pop.name
        for i, t in enumerate(pre.terms):
            name = f"{pop.name}.in{i}"
            if t.kind == "conv2d":
                proj = ir.Conv2d(name, source=t.source, target=pop.name, weight=t.weight, stride=t.stride,
                                 padding=t.padding, dilation=t.dilation, groups=t.groups)
            elif t.kind == "dense":
                proj = ir.Dense(name, source=t.source, target=pop.name, weight=t.weight)
            else:
                proj = ir.Identity(name, source=t.source, target=pop.name, weight=np.asarray(t.weight, dtype=np.float64))
            self.net.add(proj)
        src = SpikeSource(pop.name, shape, np.asarray(spec.event_value, dtype=np.float64).reshape(-1) *
                          np.ones(shape[0]), spec.nonneg)
        return SpikeValue([src], tuple(node.shape), node.name, flat=pre.flat, grid=shape if pre.flat else ())

    def _output(self, node: G.Output) -> Value:
        v = self.val(node)
        if not isinstance(v, PreAct):
            raise self.err(node, f"the network output comes from {v.origin!r}, which is spiking; spikeport needs the "
                           "logits of a final linear layer (no activation after it) to build the readout")
        last = self.graph[v.origin[-1]] if v.origin[-1] in self.graph.nodes else node
        out = self._population(last, v, self.method.readout)
        self.net.outputs = [out.parts[0].node]
        return out


def lower(ann: AnnModel, method: NeuronProvider, input_nonneg: bool, input_coding: str = "analog",
          pool: str = "auto") -> tuple[ir.Network, dict[str, str]]:
    """Lower ``ann`` to an IR network; returns it and the map ANN activation node -> population.

    pool  'auto' (fold an AvgPool into the next linear layer only where that adds no MACs), 'fold'
          (always fold, exact), 'separate' (a relay population wherever possible); decisions in
          ``net.meta["pooling"]``.
    """
    low = Lowering(ann, method, input_nonneg, input_coding, pool)
    net = low.run()
    net.meta["pooling"] = low.pooling
    return net, low.populations


POOL_CHOICES = ("auto", "fold", "separate")


def natural_weight_dtype(graph) -> type:
    """float32 (dense and conv weights are rounded to float32 after folding BatchNorm and spike scales,
    the width the ANN computes in, so IR files store them as float32) unless the ANN holds float64
    parameters on purpose, then float64."""
    for node in graph:
        for attr in ("weight", "bias"):
            w = getattr(node, attr, None)
            if isinstance(w, np.ndarray) and w.dtype == np.float64:
                return np.float64
    return np.float32


def pool_relay_spec(event_value: np.ndarray) -> NeuronSpec:
    """The relay neuron of a separate AvgPool of a binary IF source with event value lambda_c.

    The depthwise projection delivers ``lambda_c * n / k^2`` per step (n of the k^2 inputs spiked);
    an IF with threshold lambda_c, soft reset and v(0) = lambda_c / 2 emits floor(sum_t n_t / k^2 +
    1/2) events of value lambda_c by step T: the window's mean rate rounded to the nearest count,
    never more than one event per step (the mean of rates <= 1 is <= 1), so no calibration is needed.
    """
    lam = np.asarray(event_value, dtype=np.float64).reshape(-1)
    theta = np.asarray(lam[0]) if np.all(lam == lam[0]) else lam
    neuron = ir.IF(threshold=theta, bias=np.zeros_like(theta), v_init=theta / 2.0, reset="subtract", compare=">=")
    return NeuronSpec(neuron=neuron, payload=ir.SpikePayload(), decode_scale=theta, event_value=lam, nonneg=True)
