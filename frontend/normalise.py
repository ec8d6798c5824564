"""Turn any ``torch.fx.GraphModule`` (from onnx2torch, ``torch.export`` or ``symbolic_trace``) into
the normalised :class:`AnnGraph`.

The graph module is run once on a probe batch; every node's value is recorded. Nodes that do not
depend on the model input are constants (parameters, weight transposes, reshape targets) and are
read from that run, so parameters may be ``get_attr`` nodes, onnx2torch initialisers or small
constant sub-graphs alike. Input-dependent nodes whose value is not a floating tensor (``size``,
shape arithmetic, export guards) are shape helpers. Every other node must map to one ANN op, else
:class:`UnsupportedOpError` names it: no op is dropped silently.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from . import ann_graph as G
from . import normalise_tokens as T
from .ann_graph import unsupported

aten = torch.ops.aten


def _pair(v: Any, name: str = "") -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        if len(v) != 2:
            raise ValueError(f"{name}: expected 1 or 2 values for a 2-D parameter, got {v}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _np(t: Any) -> np.ndarray | None:
    """A parameter as a float32 array: the module's own memory when it already is one, C-ordered or,
    for a 2-D weight, its transpose (an ONNX MatMul initialiser is stored (in, out): the Linear's
    (out, in) weight is then an F-ordered view), so the typed graph and the module share their weights
    instead of holding them twice; else a C-ordered copy. The typed graph's arrays are read-only
    (``ann_graph`` module docstring): readers that need C order (a BLAS product, an IR array) copy."""
    if t is None:
        return None
    t = t.detach()
    if t.device.type == "cpu" and t.dtype == torch.float32 and not t.requires_grad and (
            t.is_contiguous() or (t.ndim == 2 and t.T.is_contiguous())):
        return t.numpy()
    return t.to("cpu", torch.float32).numpy().copy()


class _Probe(fx.Interpreter):
    """Runs the graph once and records every node's value, keeping as data only what the
    normaliser reads as data later: input-independent values (weights, shapes: kept whole) and
    input-dependent ones until their last user has run and no pending composite-pattern seed can
    read them (``normalise_tokens.PatternSearch``, matched here as soon as its window is computed);
    after that a value is replaced by a ``meta`` tensor of the same shape and dtype (no memory), which
    is all the main loop asks of it (shapes, ranks, dtypes). Keeping every value of a batch-2 probe
    of a ViT-B would hold ~0.7 GB."""

    def __init__(self, gm: fx.GraphModule, s: "Normaliser"):
        super().__init__(gm, garbage_collect_values=True)
        self.s = s
        self.values: dict[fx.Node, Any] = {}
        nodes = list(gm.graph.nodes)
        order = {m: i for i, m in enumerate(nodes)}
        self.search = T.PatternSearch(s)
        self.pending = list(self.search.seeds)          # matched in graph order
        self.trigger: list[int] = []                    # seed i can be matched once node trigger[i] ran
        self.protect: dict[fx.Node, int] = {}           # node -> number of unmatched seeds that may read it
        self.windows: list[set[fx.Node]] = []
        t = -1
        for seed, _ in self.pending:
            w = self.search.window(seed)
            t = max([t] + [order[m] for m in w])
            self.trigger.append(t)
            self.windows.append(w)
            for m in w:
                self.protect[m] = self.protect.get(m, 0) + 1
        self.last_use = {m: max([order[m]] + [order[u] for u in m.users]) for m in nodes}
        self.order = order
        self.done = -1
        self.next_seed = 0

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        self.done = self.order[n]
        while self.next_seed < len(self.pending) and self.trigger[self.next_seed] <= self.done:
            self.search.match(self.pending[self.next_seed][0])
            for m in self.windows[self.next_seed]:
                self.protect[m] -= 1
                self._maybe_drop(m)
            self.next_seed += 1
        for m in n.all_input_nodes:
            self._maybe_drop(m)
        self._maybe_drop(n)
        return out

    def _maybe_drop(self, m: fx.Node) -> None:
        if (m in self.values and self.s.depends.get(m) and not self.protect.get(m) and self.last_use[m] <= self.done):
            self.values[m] = _to_meta(self.values[m])


def _to_meta(v: Any) -> Any:
    """The same structure with every tensor replaced by a data-less ``meta`` tensor of its shape and dtype."""
    if isinstance(v, torch.Tensor):
        return v if v.device.type == "meta" else torch.empty_like(v, device="meta")
    if isinstance(v, list):
        return [_to_meta(a) for a in v]
    if isinstance(v, tuple) and not isinstance(v, torch.Size):
        return tuple(_to_meta(a) for a in v)
    return v


class Normaliser:
    """Maps the fx nodes of one graph module to ANN nodes (see module docstring)."""

    def __init__(self, gm: fx.GraphModule, probe_input: torch.Tensor):
        self.gm = gm
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise G.UnsupportedOpError(f"the model has {len(placeholders)} inputs "
                                       f"({[p.name for p in placeholders]}); spikeport supports exactly one")
        self.input_node = placeholders[0]
        self.batch = int(probe_input.shape[0])
        self.device = probe_input.device
        self.depends: dict[fx.Node, bool] = {}
        for n in gm.graph.nodes:  # shape arithmetic does not depend on the input's values
            self.depends[n] = n is self.input_node or (not T.is_shape_op(gm, n) and any(self.depends[a] for a in n.all_input_nodes))
        self.values: dict[fx.Node, Any] = {}
        probe = _Probe(gm, self)
        self.values = probe.values   # filled as the probe runs (the pattern search reads it meanwhile)
        with torch.no_grad():
            probe.run(probe_input)
        self.graph = G.AnnGraph()
        self.alias: dict[fx.Node, str] = {}  # fx node -> ANN node name carrying its value
        self.layouts: dict[fx.Node, T.Layout] = {}  # where the batch sits, when not in front
        self.tuple_ops: dict[fx.Node, tuple[str, dict]] = {}
        self.quant_acts, self.quant_inner = _find_quant_acts(self)
        self.patterns, pattern_inner = probe.search.found, probe.search.inner   # matched during the probe
        self.quant_inner |= pattern_inner

    # ------------------------------------------------------------------ helpers
    def is_tensor_value(self, n: fx.Node) -> bool:
        v = self.values.get(n)
        return isinstance(v, torch.Tensor) and v.is_floating_point()

    def shape_of(self, n: fx.Node) -> tuple[int, ...]:
        """One sample's shape in the ANN graph (batch axis first; see ``normalise_tokens.Layout``)."""
        return T.layout_of(self, n).sample_shape(tuple(self.values[n].shape))

    def const(self, v: Any, where: str, what: str) -> Any:
        """The value of argument ``v`` that must not depend on the input (a weight, a shape)."""
        if isinstance(v, fx.Node):
            if self.depends[v]:
                raise unsupported(where, what, "needs a constant here but it depends on the model input")
            return self.values[v]
        if isinstance(v, (list, tuple)):
            return type(v)(self.const(a, where, what) for a in v)
        return v

    def data(self, v: Any, where: str, what: str) -> str:
        """The ANN node name of a data input."""
        if not isinstance(v, fx.Node) or not self.depends[v] or v not in self.alias:
            raise unsupported(where, what, "a data input is not a tensor computed from the model input")
        return self.alias[v]

    @staticmethod
    def arg(n: fx.Node, i: int, key: str, default: Any = None) -> Any:
        if len(n.args) > i:
            return n.args[i]
        return n.kwargs.get(key, default)

    def describe(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return f"{type(self.gm.get_submodule(n.target)).__name__} (module {n.target!r})"
        if n.op == "call_function":
            return getattr(n.target, "__name__", str(n.target)) if not isinstance(n.target, torch._ops.OpOverload) else str(n.target)
        return f"{n.op} {n.target}"

    # ------------------------------------------------------------------ main loop
    def run(self) -> G.AnnGraph:
        for n in self.gm.graph.nodes:
            if n is self.input_node:
                self.graph.add(G.Input(n.name, (), self.shape_of(n)))
                self.alias[n] = n.name
            elif n.op == "output":
                self._output(n)
            elif not self.depends[n] or n.op == "get_attr" or n in self.quant_inner:
                continue  # constant (read when used) or inside a recognised QuantAct pattern
            elif n in self.patterns:
                T.add_pattern(self, n, self.patterns[n])
            elif n in self.quant_acts:
                x, step, lo, hi = self.quant_acts[n]
                self._add(n, G.QuantAct, (self.data(x, n.name, "QuantAct"),), step=step, min_level=lo, max_level=hi)
            elif n.op == "call_function" and n.target is operator.getitem and n.args[0] in self.tuple_ops:
                if self.tuple_ops[n.args[0]][0] == "plumbing":
                    T.plumbing_item(self, n)
                else:
                    self._tuple_item(n)
            elif not self.is_tensor_value(n):
                self._produces_tuple(n)  # else a shape helper or guard: no tensor data flows through it
            else:
                self._op(n)
        return self.graph

    def _produces_tuple(self, n: fx.Node) -> bool:
        if isinstance(self.values.get(n), (tuple, list)) and any(isinstance(v, torch.Tensor) and v.is_floating_point() for v in self.values[n]):
            spec = self._tuple_spec_any(n)
            if spec is None:
                raise unsupported(n.name, self.describe(n), "returns several tensors")
            self.tuple_ops[n] = spec
            return True
        return False

    def _tuple_spec(self, n: fx.Node) -> tuple[str, dict] | None:
        if n.op != "call_function":
            return None
        t = n.target
        if t is aten._native_batch_norm_legit_no_training.default:
            return "bn_legit", {}
        if t is aten.max_pool2d_with_indices.default:
            return "maxpool_idx", {}
        if t is aten.native_batch_norm.default or t is aten._native_batch_norm_legit_functional.default:
            return "bn_native", {}
        return None

    def _tuple_spec_any(self, n: fx.Node) -> tuple[str, dict] | None:
        if T.is_plumbing(self, n, tuple_result=True):
            return "plumbing", {}
        return self._tuple_spec(n)

    def _tuple_item(self, n: fx.Node) -> None:
        src = n.args[0]
        idx = n.args[1]
        kind, _ = self.tuple_ops[src]
        if idx != 0:
            if self.is_tensor_value(n) and n.users:
                # saved statistics / pooling indices feed nothing that spikeport converts
                users = [u for u in n.users if u.op != "output"]
                if users or any(u.op == "output" for u in n.users):
                    raise unsupported(n.name, f"{self.describe(src)}[{idx}]", "only the first result may be used")
            return
        a = lambda i, k, d=None: self.arg(src, i, k, d)  # noqa: E731
        if kind == "bn_legit":
            self._add_bn(n, a(0, "input"), a(1, "weight"), a(2, "bias"), a(3, "running_mean"), a(4, "running_var"), a(6, "eps", 1e-5))
        elif kind == "bn_native":
            if a(5, "training", False):
                raise unsupported(n.name, self.describe(src), "BatchNorm in training mode")
            self._add_bn(n, a(0, "input"), a(1, "weight"), a(2, "bias"), a(3, "running_mean"), a(4, "running_var"), a(7, "eps", 1e-5))
        elif kind == "maxpool_idx":
            self._add_maxpool(n, a(0, "self"), a(1, "kernel_size"), a(2, "stride", []), a(3, "padding", 0), a(4, "dilation", 1), a(5, "ceil_mode", False))

    def _output(self, n: fx.Node) -> None:
        outs = n.args[0]
        while isinstance(outs, (list, tuple)):
            if len(outs) != 1:
                raise G.UnsupportedOpError(f"node {n.name!r}: the model has {len(outs)} outputs; spikeport supports exactly one")
            outs = outs[0]
        if isinstance(outs, dict):
            raise G.UnsupportedOpError(f"node {n.name!r}: the model returns a dict; return one tensor")
        src = self.data(outs, n.name, "output")
        self.graph.add(G.Output("output", (src,), self.graph[src].shape))

    # ------------------------------------------------------------------ op dispatch
    def _op(self, n: fx.Node) -> None:
        if n.op == "call_module":
            handler = self._module_handler(n)
        elif n.op == "call_function":
            handler = _FUNCTIONS.get(n.target)
        elif n.op == "call_method":
            handler = _METHODS.get(n.target)
        else:
            handler = None
        if handler is None:
            handler = self._token_handler(n)
        if handler is None:
            raise unsupported(n.name, self.describe(n))
        handler(self, n)

    def _token_handler(self, n: fx.Node) -> Callable | None:
        """Transformer ops (normalise_tokens): plumbing, constant arithmetic, LayerNorm, GELU, ..."""
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            for cls, handler in _TOKEN_MODULES:
                if isinstance(mod, cls):
                    return handler
        elif n.op == "call_function" and n.target in _TOKEN_FUNCTIONS:
            return _TOKEN_FUNCTIONS[n.target]
        elif n.op == "call_method" and n.target in _TOKEN_METHODS:
            return _TOKEN_METHODS[n.target]
        if T.arith_kind(self, n) is not None:
            return lambda s, m: T.arith(s, m, T.arith_kind(s, m))
        if T.is_plumbing(self, n):
            return T.plumbing
        return None

    def _module_handler(self, n: fx.Node) -> Callable | None:
        mod = self.gm.get_submodule(n.target)
        if callable(getattr(mod, "quant_act_spec", None)):
            return _mod_quant_act
        for cls, handler in _MODULES:
            if isinstance(mod, cls):
                return handler
        name = type(mod).__name__
        return _ONNX2TORCH_MODULES.get(name)

    # ------------------------------------------------------------------ node builders
    def _add(self, n: fx.Node, cls: type, inputs: tuple[str, ...], **params) -> None:
        T.inherit_layout(self, n, cls)
        self.graph.add(cls(n.name, inputs, self.shape_of(n), **params))
        self.alias[n] = n.name

    def _add_conv(self, n, x, w, b, stride, padding, dilation, groups) -> None:
        where = n.name
        weight = self.const(w, where, "Conv2d weight")
        if weight.ndim != 4:
            raise unsupported(where, self.describe(n), f"only 2-D convolution (weight of shape {tuple(weight.shape)})")
        kh, kw = weight.shape[2:]
        dil = _pair(self.const(dilation, where, "dilation"), where)
        pad = self.const(padding, where, "padding")
        if isinstance(pad, str):
            if pad == "valid":
                pad = (0, 0)
            elif pad == "same" and kh % 2 and kw % 2:
                pad = (dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2)
            else:
                raise unsupported(where, self.describe(n), f"padding={pad!r} with kernel {(kh, kw)}")
        self._add(n, G.Conv2d, (self.data(x, where, "Conv2d"),), weight=_np(weight), bias=_np(self.const(b, where, "bias")),
                  stride=_pair(self.const(stride, where, "stride"), where), padding=_pair(pad, where), dilation=dil,
                  groups=int(self.const(groups, where, "groups")))

    def _add_linear(self, n, x, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        if weight.ndim != 2:
            raise unsupported(n.name, self.describe(n), f"weight of shape {tuple(weight.shape)} is not 2-D")
        if self.values[n].shape[-1] != weight.shape[0]:
            raise unsupported(n.name, self.describe(n), f"weight of shape {tuple(weight.shape)} on a tensor of shape {tuple(self.values[n].shape)}")
        if bias is not None:
            bias = bias.reshape(-1)
            if bias.numel() == 1 and weight.shape[0] != 1:
                bias = bias.expand(weight.shape[0])
        self._add(n, G.Linear, (self.data(x, n.name, "Linear"),), weight=_np(weight), bias=_np(bias))

    def _add_bn(self, n, x, w, b, mean, var, eps) -> None:
        where = n.name
        mean_t = self.const(mean, where, "BatchNorm running_mean")
        var_t = self.const(var, where, "BatchNorm running_var")
        if mean_t is None or var_t is None:
            raise unsupported(where, "BatchNorm", "without running statistics (batch statistics cannot be folded)")
        c = mean_t.numel()
        w_t = self.const(w, where, "weight")
        b_t = self.const(b, where, "bias")
        self._add(n, G.BatchNorm, (self.data(x, where, "BatchNorm"),), mean=_np(mean_t), var=_np(var_t),
                  weight=_np(w_t) if w_t is not None else np.ones(c, np.float32),
                  bias=_np(b_t) if b_t is not None else np.zeros(c, np.float32), eps=float(self.const(eps, where, "eps")))

    def _add_avgpool(self, n, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor) -> None:
        where = n.name
        if divisor is not None:
            raise unsupported(where, self.describe(n), "divisor_override")
        k = _pair(kernel, where)
        s = _pair(stride, where) if stride not in (None, [], ()) else k
        self._add(n, G.AvgPool, (self.data(x, where, "AvgPool"),), kernel=k, stride=s, padding=_pair(padding, where),
                  ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))

    def _add_maxpool(self, n, x, kernel, stride, padding, dilation, ceil_mode) -> None:
        where = n.name
        k = _pair(kernel, where)
        s = _pair(stride, where) if stride not in (None, [], ()) else k
        self._add(n, G.MaxPool, (self.data(x, where, "MaxPool"),), kernel=k, stride=s, padding=_pair(padding, where),
                  dilation=_pair(dilation, where), ceil_mode=bool(ceil_mode))

    def _add_adaptive(self, n, x, output_size) -> None:
        in_shape = self.shape_of(x)
        out = _pair(output_size, n.name)
        if out == (1, 1):
            self._add(n, G.GlobalAvgPool, (self.data(x, n.name, "AdaptiveAvgPool"),), keepdim=True)
            return
        h, w = in_shape[-2:]
        if h % out[0] or w % out[1]:
            raise unsupported(n.name, self.describe(n), f"adaptive pooling {in_shape[-2:]} -> {out} is not a plain AvgPool")
        k = (h // out[0], w // out[1])
        self._add(n, G.AvgPool, (self.data(x, n.name, "AdaptiveAvgPool"),), kernel=k, stride=k)

    def _add_mean(self, n, x, dims, keepdim) -> None:
        T.mean(self, n, x, dims, keepdim)

    def _add_reshape(self, n, x) -> None:
        """A flatten, a no-op, or any other reshape as token plumbing; the probe shapes decide."""
        src = self.data(x, n.name, "reshape")
        in_shape, out = tuple(self.values[x].shape), tuple(self.values[n].shape)
        if not T.layout_of(self, x).standard:
            T.plumbing(self, n)
        elif out == in_shape:
            self._add(n, G.Identity, (src,))
        elif out[0] == in_shape[0] and out[1:] == (int(np.prod(in_shape[1:])),):
            self._add(n, G.Flatten, (src,))
        else:
            T.plumbing(self, n)

    def _add_add(self, n, a, b, alpha=1) -> None:
        where = n.name
        if alpha != 1:
            raise unsupported(where, self.describe(n), f"add with alpha={alpha}")
        nodes = [v for v in (a, b) if isinstance(v, fx.Node) and self.depends[v]]
        if len(nodes) == 1:
            T.arith(self, n, "add")  # a constant: position embedding or a bias
            return
        if len(nodes) != 2:
            raise unsupported(where, self.describe(n), "adding two constants")
        sa, sb = self.shape_of(a), self.shape_of(b)
        if sa != sb:
            raise unsupported(where, self.describe(n), f"add of shapes {sa} and {sb} (broadcasting)")
        self._add(n, G.Add, (self.data(a, where, "Add"), self.data(b, where, "Add")))

    def _add_cat(self, n, tensors, dim) -> None:
        rank = len(self.values[n].shape)
        d = int(dim) % rank
        if d == 0:
            raise unsupported(n.name, self.describe(n), "concatenation along the batch axis")
        srcs = tuple(self.data(t, n.name, "Concat") if self.depends[t] else T.constant_node(self, t, n.name) for t in tensors)
        T.inherit_layout(self, n, G.Concat)
        axis = T.layout_of(self, n).sample_axis(d, rank)
        if axis is None:
            raise unsupported(n.name, self.describe(n), "concatenation along the batch axis")
        self._add(n, G.Concat, srcs, axis=axis)

    def _add_matmul(self, n, x, w) -> None:
        if not isinstance(x, fx.Node) or not self.depends[x]:
            raise unsupported(n.name, self.describe(n), "MatMul of a constant left operand with a tensor (only tensor @ weight)")
        if not isinstance(w, fx.Node) or self.depends[w]:
            raise unsupported(n.name, self.describe(n), "MatMul of two input-dependent tensors of these shapes")
        weight = self.const(w, n.name, "MatMul weight")
        if weight.ndim != 2:
            raise unsupported(n.name, self.describe(n), f"MatMul with a {weight.ndim}-d constant")
        self._add_linear(n, x, weight.T, None)


# ---------------------------------------------------------------------- call_function handlers
def _conv_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    s._add_conv(n, a(n, 0, "input"), a(n, 1, "weight"), a(n, 2, "bias"), a(n, 3, "stride", 1), a(n, 4, "padding", 0),
                a(n, 5, "dilation", 1), a(n, 6, "groups", 1))


def _convolution_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    if a(n, 6, "transposed", False):
        raise unsupported(n.name, s.describe(n), "transposed convolution")
    s._add_conv(n, a(n, 0, "input"), a(n, 1, "weight"), a(n, 2, "bias"), a(n, 3, "stride", 1), a(n, 4, "padding", 0),
                a(n, 5, "dilation", 1), a(n, 8, "groups", 1))


def _linear_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    s._add_linear(n, a(n, 0, "input"), s.const(a(n, 1, "weight"), n.name, "Linear weight"),
                  s.const(a(n, 2, "bias"), n.name, "Linear bias"))


def _addmm_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    bias = s.const(a(n, 0, "self"), n.name, "addmm bias")
    w = s.const(a(n, 2, "mat2"), n.name, "addmm weight")
    beta, alpha = a(n, 3, "beta", 1), a(n, 4, "alpha", 1)
    s._add_linear(n, a(n, 1, "mat1"), w.T * alpha, bias * beta)


def _mm_fn(s: Normaliser, n: fx.Node) -> None:
    T.matmul(s, n, n.args[0], n.args[1])


def _bn_aten(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    if a(n, 5, "training", False):
        raise unsupported(n.name, s.describe(n), "BatchNorm in training mode (call model.eval() before exporting)")
    s._add_bn(n, a(n, 0, "input"), a(n, 1, "weight"), a(n, 2, "bias"), a(n, 3, "running_mean"), a(n, 4, "running_var"), a(n, 7, "eps", 1e-5))


def _bn_functional(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    if a(n, 5, "training", False):
        raise unsupported(n.name, s.describe(n), "BatchNorm in training mode")
    s._add_bn(n, a(n, 0, "input"), a(n, 3, "weight"), a(n, 4, "bias"), a(n, 1, "running_mean"), a(n, 2, "running_var"), a(n, 7, "eps", 1e-5))


def _relu_fn(s: Normaliser, n: fx.Node) -> None:
    s._add(n, G.ReLU, (s.data(n.args[0] if n.args else n.kwargs["input"], n.name, "ReLU"),))


def _leaky_fn(s: Normaliser, n: fx.Node) -> None:
    s._add(n, G.LeakyReLU, (s.data(s.arg(n, 0, "input"), n.name, "LeakyReLU"),), slope=float(s.arg(n, 1, "negative_slope", 0.01)))


def _avgpool_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    s._add_avgpool(n, a(n, 0, "input"), a(n, 1, "kernel_size"), a(n, 2, "stride", None), a(n, 3, "padding", 0),
                   a(n, 4, "ceil_mode", False), a(n, 5, "count_include_pad", True), a(n, 6, "divisor_override", None))


def _adaptive_fn(s: Normaliser, n: fx.Node) -> None:
    s._add_adaptive(n, n.args[0], s.arg(n, 1, "output_size"))


def _mean_fn(s: Normaliser, n: fx.Node) -> None:
    s._add_mean(n, s.arg(n, 0, "input"), s.arg(n, 1, "dim"), s.arg(n, 2, "keepdim", False))


def _maxpool_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    if n.target is F.max_pool2d and a(n, 6, "return_indices", False):
        raise unsupported(n.name, s.describe(n), "return_indices=True")
    s._add_maxpool(n, a(n, 0, "input"), a(n, 1, "kernel_size"), a(n, 2, "stride", None), a(n, 3, "padding", 0),
                   a(n, 4, "dilation", 1), a(n, 5, "ceil_mode", False))


def _reshape_fn(s: Normaliser, n: fx.Node) -> None:
    s._add_reshape(n, n.args[0] if n.args else n.kwargs["input"])


def _add_fn(s: Normaliser, n: fx.Node) -> None:
    s._add_add(n, n.args[0], s.arg(n, 1, "other"), s.arg(n, 2, "alpha", n.kwargs.get("alpha", 1)))


def _cat_fn(s: Normaliser, n: fx.Node) -> None:
    s._add_cat(n, s.arg(n, 0, "tensors"), s.arg(n, 1, "dim", 0))


def _identity_fn(s: Normaliser, n: fx.Node) -> None:
    s._add(n, G.Identity, (s.data(n.args[0] if n.args else n.kwargs["input"], n.name, "Identity"),))


def _dropout_fn(s: Normaliser, n: fx.Node) -> None:
    if s.arg(n, 2, "train", s.arg(n, 2, "training", False)):
        raise unsupported(n.name, s.describe(n), "dropout in training mode")
    _identity_fn(s, n)


_FUNCTIONS: dict[Any, Callable] = {
    aten.conv2d.default: _conv_fn, torch.conv2d: _conv_fn, F.conv2d: _conv_fn,
    aten.convolution.default: _convolution_fn,
    aten.linear.default: _linear_fn, F.linear: _linear_fn, torch._C._nn.linear: _linear_fn,
    aten.addmm.default: _addmm_fn, aten.mm.default: _mm_fn, aten.matmul.default: _mm_fn, torch.matmul: _mm_fn,
    operator.matmul: _mm_fn,
    aten.batch_norm.default: _bn_aten, torch.batch_norm: _bn_aten, F.batch_norm: _bn_functional,
    aten.relu.default: _relu_fn, aten.relu_.default: _relu_fn, torch.relu: _relu_fn, F.relu: _relu_fn,
    torch.relu_: _relu_fn,
    aten.leaky_relu.default: _leaky_fn, aten.leaky_relu_.default: _leaky_fn, F.leaky_relu: _leaky_fn,
    aten.avg_pool2d.default: _avgpool_fn, F.avg_pool2d: _avgpool_fn,
    aten.adaptive_avg_pool2d.default: _adaptive_fn, aten._adaptive_avg_pool2d.default: _adaptive_fn,
    F.adaptive_avg_pool2d: _adaptive_fn,
    aten.mean.dim: _mean_fn, torch.mean: _mean_fn,
    aten.max_pool2d.default: _maxpool_fn, F.max_pool2d: _maxpool_fn,
    aten.flatten.using_ints: _reshape_fn, torch.flatten: _reshape_fn, aten.view.default: _reshape_fn,
    aten.reshape.default: _reshape_fn, aten._unsafe_view.default: _reshape_fn, torch.reshape: _reshape_fn,
    aten.squeeze.dims: _reshape_fn, aten.squeeze.dim: _reshape_fn, aten.squeeze.default: _reshape_fn,
    torch.squeeze: _reshape_fn,
    operator.add: _add_fn, operator.iadd: _add_fn, torch.add: _add_fn, aten.add.Tensor: _add_fn,
    aten.add_.Tensor: _add_fn,
    torch.cat: _cat_fn, torch.concat: _cat_fn, aten.cat.default: _cat_fn,
    aten.clone.default: _identity_fn, aten.alias.default: _identity_fn, aten.detach.default: _identity_fn,
    torch.clone: _identity_fn,
    aten.dropout.default: _dropout_fn, F.dropout: _dropout_fn, torch.dropout: _dropout_fn,
}


def _method_reshape(s: Normaliser, n: fx.Node) -> None:
    s._add_reshape(n, n.args[0])


def _method_add(s: Normaliser, n: fx.Node) -> None:
    s._add_add(n, n.args[0], s.arg(n, 1, "other"), n.kwargs.get("alpha", 1))


def _method_mean(s: Normaliser, n: fx.Node) -> None:
    s._add_mean(n, n.args[0], s.arg(n, 1, "dim"), s.arg(n, 2, "keepdim", False))


_METHODS: dict[str, Callable] = {
    "relu": _relu_fn, "relu_": _relu_fn, "flatten": _method_reshape, "view": _method_reshape,
    "reshape": _method_reshape, "squeeze": _method_reshape, "contiguous": _identity_fn, "clone": _identity_fn,
    "detach": _identity_fn, "add": _method_add, "add_": _method_add, "__add__": _method_add, "mean": _method_mean,
}


# ---------------------------------------------------------------------- call_module handlers
def _m(s: Normaliser, n: fx.Node) -> nn.Module:
    return s.gm.get_submodule(n.target)


def _mod_conv(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    if m.padding_mode != "zeros":
        raise unsupported(n.name, s.describe(n), f"padding_mode={m.padding_mode!r} (only zero padding)")
    s._add_conv(n, n.args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def _mod_linear(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    s._add_linear(n, n.args[0], m.weight, m.bias)


def _mod_bn(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    s._add_bn(n, n.args[0], m.weight, m.bias, m.running_mean, m.running_var, m.eps)


def _mod_leaky(s: Normaliser, n: fx.Node) -> None:
    s._add(n, G.LeakyReLU, (s.data(n.args[0], n.name, "LeakyReLU"),), slope=float(_m(s, n).negative_slope))


def _mod_avgpool(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    s._add_avgpool(n, n.args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)


def _mod_adaptive(s: Normaliser, n: fx.Node) -> None:
    s._add_adaptive(n, n.args[0], _m(s, n).output_size)


def _mod_maxpool(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    if m.return_indices:
        raise unsupported(n.name, s.describe(n), "return_indices=True")
    s._add_maxpool(n, n.args[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


def _mod_flatten(s: Normaliser, n: fx.Node) -> None:
    s._add_reshape(n, n.args[0])


def _mod_gemm(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    if m.trans_a:
        raise unsupported(n.name, s.describe(n), "Gemm with transA=1")
    b = s.const(n.args[1], n.name, "Gemm B")
    c = s.const(n.args[2], n.name, "Gemm C") if len(n.args) > 2 else None
    w = (b if m.trans_b else b.T) * m.alpha
    s._add_linear(n, n.args[0], w, None if c is None else c * m.beta)


def _mod_binary(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    kind = T.arith_kind(s, n)
    if kind is None:
        raise unsupported(n.name, s.describe(n), "only Add/Sub/Mul/Div")
    T.arith(s, n, kind)


def _mod_concat(s: Normaliser, n: fx.Node) -> None:
    s._add_cat(n, list(n.args), _m(s, n).axis)


def _mod_matmul(s: Normaliser, n: fx.Node) -> None:
    T.matmul(s, n, n.args[0], n.args[1])


def _mod_reshape(s: Normaliser, n: fx.Node) -> None:
    s._add_reshape(n, n.args[0])


def _mod_gap(s: Normaliser, n: fx.Node) -> None:
    if len(s.values[n.args[0]].shape) != 4:
        raise unsupported(n.name, s.describe(n), "global pooling of a tensor that is not (N, C, H, W)")
    s._add(n, G.GlobalAvgPool, (s.data(n.args[0], n.name, "GlobalAveragePool"),), keepdim=True)


_MODULES: list[tuple[type, Callable]] = [
    (nn.Conv2d, _mod_conv), (nn.Linear, _mod_linear), ((nn.BatchNorm1d, nn.BatchNorm2d), _mod_bn),
    (nn.ReLU, _relu_fn), (nn.LeakyReLU, _mod_leaky), (nn.AvgPool2d, _mod_avgpool),
    (nn.AdaptiveAvgPool2d, _mod_adaptive), (nn.MaxPool2d, _mod_maxpool), (nn.Flatten, _mod_flatten),
    ((nn.Identity, nn.Dropout, nn.Dropout2d), _identity_fn),
]
_ONNX2TORCH_MODULES: dict[str, Callable] = {
    "OnnxGemm": _mod_gemm, "OnnxBinaryMathOperation": _mod_binary, "OnnxConcat": _mod_concat,
    "OnnxMatMul": _mod_matmul, "OnnxReshape": _mod_reshape, "OnnxFlatten": _mod_reshape,
    "OnnxGlobalAveragePool": _mod_gap, "OnnxGlobalAveragePoolWithKnownInputShape": _mod_gap,
    "OnnxCopyIdentity": _identity_fn,
}


# ---------------------------------------------------------------------- quantised activations
def _mod_quant_act(s: Normaliser, n: fx.Node) -> None:
    """A leaf module exposing ``quant_act_spec() -> (step, lo, hi)`` (convert.activations.QuantClipFloor)."""
    step, lo, hi = _m(s, n).quant_act_spec()
    _check_levels(n.name, float(step), lo, hi)
    s._add(n, G.QuantAct, (s.data(n.args[0], n.name, "QuantAct"),), step=float(step), min_level=int(lo), max_level=int(hi))


_MUL = {aten.mul.Tensor, aten.mul.Scalar, torch.mul, operator.mul}
_DIV = {aten.div.Tensor, aten.div.Scalar, torch.div, operator.truediv}
_ADD = {aten.add.Tensor, aten.add.Scalar, torch.add, operator.add}
_FLOOR = {aten.floor.default, torch.floor}
_CLAMP = {aten.clamp.default, aten.clamp.Tensor, aten.clip.default, aten.clip.Tensor, torch.clamp, torch.clip}
_METHOD_KIND = {"mul": "mul", "__mul__": "mul", "__rmul__": "mul", "div": "div", "__truediv__": "div",
                "add": "add", "__add__": "add", "__radd__": "add", "floor": "floor", "clamp": "clamp", "clip": "clamp"}
_QUANT_REL_TOL = 1e-5  # |in_scale * out_scale - 1| allowed between the two multipliers (float32 rounding)


def _elementary(s: Normaliser, n: fx.Node) -> tuple[str, tuple] | None:
    """Classify ``n`` as one of mul/div/add/floor/clamp with its operands, or None.

    mul/div/add: (a, b); floor: (x,); clamp: (x, lo, hi). Covers aten ops (torch.export), torch
    functions and methods (symbolic_trace) and onnx2torch modules (Mul/Div/Add, Floor, Clip; a Clip
    to [0, 6] arrives as nn.ReLU6).
    """
    t, a = n.target, n.args
    if n.op == "call_function":
        if t in _MUL or t in _DIV or t in _ADD:
            if len(a) != 2 or n.kwargs.get("rounding_mode") is not None or n.kwargs.get("alpha", 1) != 1:
                return None
            return ("mul" if t in _MUL else "div" if t in _DIV else "add"), (a[0], a[1])
        if t in _FLOOR and len(a) == 1:
            return "floor", (a[0],)
        if t in _CLAMP:
            return "clamp", (a[0], s.arg(n, 1, "min"), s.arg(n, 2, "max"))
        return None
    if n.op == "call_method":
        kind = _METHOD_KIND.get(t)
        if kind in ("mul", "div", "add") and len(a) == 2 and not n.kwargs:
            return kind, (a[0], a[1])
        if kind == "floor" and len(a) == 1:
            return kind, (a[0],)
        if kind == "clamp":
            return kind, (a[0], s.arg(n, 1, "min"), s.arg(n, 2, "max"))
        return None
    if n.op == "call_module":
        mod = s.gm.get_submodule(t)
        name = type(mod).__name__
        if name == "OnnxBinaryMathOperation" and mod.broadcast != 1 and len(a) == 2:
            kind = {torch.mul: "mul", torch.div: "div", torch.add: "add"}.get(mod.math_op_function)
            return (kind, (a[0], a[1])) if kind else None
        if name == "OnnxRound" and mod.round_function is torch.floor:
            return "floor", (a[0],)
        if name == "OnnxClip":
            return "clamp", (a[0], mod.min_val, mod.max_val)
        if isinstance(mod, nn.Hardtanh):
            return "clamp", (a[0], mod.min_val, mod.max_val)
    return None


def _scalar(s: Normaliser, v) -> float | None:
    """``v`` as a Python float if it is a constant with one element, else None."""
    if isinstance(v, fx.Node):
        if s.depends.get(v, True):
            return None
        v = s.values.get(v)
    if isinstance(v, torch.Tensor):
        return float(v.detach().reshape(-1)[0]) if v.numel() == 1 else None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def _data_and_scale(s: Normaliser, n: fx.Node, kind: str, ops: tuple) -> tuple[fx.Node, float] | None:
    """For mul/div of an input-dependent node by a scalar constant: (data node, multiplier)."""
    a, b = ops
    if kind == "mul" and isinstance(b, fx.Node) and s.depends.get(b) and _scalar(s, a) is not None:
        a, b = b, a
    if not (isinstance(a, fx.Node) and s.depends.get(a)):
        return None
    c = _scalar(s, b)
    if c is None or c == 0.0:
        return None
    return a, (c if kind == "mul" else 1.0 / c)


def _check_levels(where: str, step: float, lo, hi) -> None:
    if not step > 0 or not np.isfinite(step):
        raise unsupported(where, "QuantAct", f"step {step} must be a positive finite number")
    if float(lo) != int(lo) or float(hi) != int(hi) or int(lo) >= int(hi):
        raise unsupported(where, "QuantAct", f"clamp levels [{lo}, {hi}] must be integers with lo < hi")


def _only_user(n: fx.Node) -> fx.Node | None:
    users = list(n.users)
    return users[0] if len(users) == 1 else None


def _find_quant_acts(s: Normaliser) -> tuple[dict[fx.Node, tuple], set[fx.Node]]:
    """Find ``y = clamp(floor(x * k + 1/2), lo, hi) * step`` with ``k * step = 1`` (within float32
    rounding; multipliers may also be written as divisions). Returns {last node: (x, step, lo, hi)}
    and the set of inner nodes. Every inner value must feed only the next op of the pattern."""
    found: dict[fx.Node, tuple] = {}
    inner: set[fx.Node] = set()
    for fl in s.gm.graph.nodes:
        if not s.depends.get(fl) or fl in inner:
            continue
        e = _elementary(s, fl)
        if e is None or e[0] != "floor":
            continue
        add = e[1][0]
        ea = _elementary(s, add) if isinstance(add, fx.Node) and _only_user(add) is fl else None
        if ea is None or ea[0] != "add":
            continue
        p, q = ea[1]
        if _scalar(s, q) != 0.5:
            p, q = q, p
        if _scalar(s, q) != 0.5 or not isinstance(p, fx.Node) or _only_user(p) is not add:
            continue
        em = _elementary(s, p)
        first = _data_and_scale(s, p, em[0], em[1]) if em and em[0] in ("mul", "div") else None
        cl = _only_user(fl)
        ec = _elementary(s, cl) if cl is not None else None
        if first is None or ec is None or ec[0] != "clamp":
            continue
        lo, hi = _scalar(s, ec[1][1]), _scalar(s, ec[1][2])
        last = _only_user(cl)
        el = _elementary(s, last) if last is not None else None
        second = _data_and_scale(s, last, el[0], el[1]) if el and el[0] in ("mul", "div") else None
        if lo is None or hi is None or second is None or second[0] is not cl:
            continue
        x, k = first
        step = second[1]
        if abs(k * step - 1.0) > _QUANT_REL_TOL:
            raise unsupported(last.name, "QuantAct", f"the input multiplier {k:.9g} and the output step {step:.9g} "
                              "are not reciprocal, so this is not step * clamp(floor(x / step + 1/2), lo, hi)")
        _check_levels(last.name, step, lo, hi)
        found[last] = (x, float(step), int(lo), int(hi))
        inner.update((p, add, fl, cl))
    return found, inner


def normalise(gm: fx.GraphModule, probe_input: torch.Tensor) -> G.AnnGraph:
    """Build the ANN graph of ``gm`` (eval mode) using one probe batch for constants and shapes."""
    return Normaliser(gm, probe_input).run()


# ---------------------------------------------------------------------- transformer ops
def _ln_fn(s: Normaliser, n: fx.Node) -> None:
    a = s.arg
    T.layer_norm(s, n, a(n, 0, "input"), a(n, 1, "normalized_shape"), a(n, 2, "weight"), a(n, 3, "bias"), a(n, 4, "eps", 1e-5))


def _mod_ln(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    T.layer_norm(s, n, n.args[0], m.normalized_shape, m.weight, m.bias, m.eps)


def _gelu_fn(s: Normaliser, n: fx.Node) -> None:
    T.gelu(s, n, s.arg(n, 0, "input"), n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none"))


def _mod_gelu(s: Normaliser, n: fx.Node) -> None:
    T.gelu(s, n, n.args[0], _m(s, n).approximate)


def _softmax_fn(s: Normaliser, n: fx.Node) -> None:
    T.softmax(s, n, s.arg(n, 0, "input"), s.arg(n, 1, "dim"))


def _mod_softmax(s: Normaliser, n: fx.Node) -> None:
    T.softmax(s, n, n.args[0], _m(s, n).dim)


def _mod_reduce(s: Normaliser, n: fx.Node) -> None:
    m = _m(s, n)
    if m.operation_type != "ReduceMean":
        raise unsupported(n.name, s.describe(n), f"{m.operation_type} (only ReduceMean)")
    T.mean(s, n, n.args[0], m.axes, m.keepdims)


def _mod_identity(s: Normaliser, n: fx.Node) -> None:
    _identity_fn(s, n)


_TOKEN_FUNCTIONS: dict[Any, Callable] = {
    aten.layer_norm.default: _ln_fn, F.layer_norm: _ln_fn, torch.layer_norm: _ln_fn,
    aten.gelu.default: _gelu_fn, F.gelu: _gelu_fn,
    aten.softmax.int: _softmax_fn, aten._softmax.default: _softmax_fn, F.softmax: _softmax_fn, torch.softmax: _softmax_fn,
    aten.scaled_dot_product_attention.default: T.sdpa, F.scaled_dot_product_attention: T.sdpa,
    aten.bmm.default: _mm_fn, torch.bmm: _mm_fn,
    aten.dropout.default: _dropout_fn,
}
_TOKEN_METHODS: dict[str, Callable] = {"softmax": _softmax_fn, "matmul": _mm_fn, "__matmul__": _mm_fn}
_TOKEN_MODULES: list[tuple[type, Callable]] = [
    (nn.LayerNorm, _mod_ln), (nn.GELU, _mod_gelu), (nn.Softmax, _mod_softmax),
]
_ONNX2TORCH_MODULES["OnnxReduceStaticAxes"] = _mod_reduce
