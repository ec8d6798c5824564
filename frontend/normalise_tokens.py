"""Transformer ops for the normaliser: token tensors, LayerNorm, GELU, softmax, dynamic MatMul.

Three ideas keep this frontend-agnostic (ONNX via onnx2torch, ``torch.export`` aten, symbolic trace):

* **Plumbing by index probing.** Reshape/transpose/permute/split/slice/gather/select/squeeze/expand
  only move values. Such a node is re-run with its data input replaced by the element indices, so
  the output tells exactly which input element lands where: an order-preserving result becomes a
  ``Reshape``, any other a ``Rearrange`` with its index map. The batch axis must map onto itself.
* **Composite non-linearities by function.** GELU (Erf or tanh form) and LayerNorm written as
  elementary ops (ReduceMean/Sub/Pow/Sqrt/Div) are found from their seed op (erf, tanh, sqrt): a
  region between a data node ``x`` and an exit node that reads nothing but ``x`` and constants, is
  read by nothing outside it, and computes GELU(x) / LayerNorm(x) on the probe values (LayerNorm's
  affine weight and bias are fitted per channel and then checked).
* **Shape arithmetic is constant.** ``Shape``/``size`` results do not depend on the input values,
  so values computed from them (class-token ``expand``, attention scale ``1/sqrt(d)``) are
  constants.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from . import ann_graph as G
from .ann_graph import unsupported

if TYPE_CHECKING:
    from .normalise import Normaliser

aten = torch.ops.aten

# ---------------------------------------------------------------------- shape ops (no data dependence)
_SHAPE_FUNCTIONS = {aten.sym_size.int, aten.sym_size.default if hasattr(aten.sym_size, "default") else None,
                    aten.size.default if hasattr(aten, "size") else None, torch._C._functions.__dict__.get("size")}
_SHAPE_FUNCTIONS.discard(None)
_SHAPE_MODULES = ("OnnxShape",)


def is_shape_op(gm: fx.GraphModule, n: fx.Node) -> bool:
    """True for nodes whose value is the input's shape (not its values)."""
    if n.op == "call_function":
        if n.target in _SHAPE_FUNCTIONS:
            return True
        return n.target is getattr and len(n.args) > 1 and n.args[1] == "shape"
    if n.op == "call_method":
        return n.target in ("size", "dim")
    if n.op == "call_module":
        return type(gm.get_submodule(n.target)).__name__ in _SHAPE_MODULES
    return False


# ---------------------------------------------------------------------- batch layout
@dataclass(frozen=True)
class Layout:
    """Where the batch sits in an intermediate tensor of full shape S.

    Attention code moves the batch axis (``permute(2, 0, 3, 1, 4)`` of timm's qkv) or merges it with
    the heads (``nn.MultiheadAttention``'s ``(B*H, N, D)`` and ``(N*B, E)``). Axis ``axis`` has
    size ``outer * B * inner`` with sample ``b = (i // inner) % B``. The ANN graph stores the
    canonical sample: S with that axis replaced by ``(outer, inner)`` (sizes 1 dropped), batch
    first. Ops that act on other axes (Linear over the last axis, softmax, MatMul over the last
    two) keep their meaning on the canonical form.
    """

    axis: int = 0
    inner: int = 1
    outer: int = 1

    @property
    def standard(self) -> bool:
        return self.axis == 0 and self.inner == 1 and self.outer == 1

    def _mid(self) -> tuple[int, ...]:
        return tuple(v for v in (self.outer, self.inner) if v > 1)

    def sample_shape(self, full: tuple[int, ...]) -> tuple[int, ...]:
        a = self.axis
        return tuple(full[:a]) + self._mid() + tuple(full[a + 1:])

    def sample_axis(self, d: int, rank: int) -> int | None:
        """Sample axis of full-tensor axis ``d``; None for the batch axis itself."""
        d = int(d) % rank
        if d == self.axis:
            return None
        return d if d < self.axis else d - 1 + len(self._mid())

    def canon(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Full tensor -> (batch, *sample) in canonical order."""
        full = tuple(t.shape)
        a = self.axis
        t = t.reshape(full[:a] + (self.outer, batch, self.inner) + full[a + 1:]).movedim(a + 1, 0)
        return t.reshape((batch,) + self.sample_shape(full))

    def uncanon(self, c: torch.Tensor, full: tuple[int, ...]) -> torch.Tensor:
        """(batch, *sample) -> the full tensor in this layout (inverse of :meth:`canon`)."""
        a, batch = self.axis, c.shape[0]
        c = c.reshape((batch,) + tuple(full[:a]) + (self.outer, self.inner) + tuple(full[a + 1:]))
        return c.movedim(0, a + 1).reshape(full).contiguous()


STANDARD = Layout()
_LAYOUT_FIXED_OPS = ("Conv2d", "BatchNorm", "AvgPool", "GlobalAvgPool", "MaxPool", "Flatten", "Input", "Output")
_LAST_AXIS_OPS = {"Linear": 1, "LayerNorm": 1, "MatMul": 2, "QuantAct": 0, "GELU": 0, "Scale": 0, "AddConst": 0,
                  "Add": 0, "ReLU": 0, "LeakyReLU": 0, "Identity": 0, "Softmax": 0, "Concat": 0, "Mean": 0}


def layout_of(s: "Normaliser", n: fx.Node) -> Layout:
    return s.layouts.get(n, STANDARD) if hasattr(s, "layouts") else STANDARD


def inherit_layout(s: "Normaliser", n: fx.Node, cls: type) -> None:
    """Give ``n`` the batch layout of its data inputs (checked to agree and to suit the op)."""
    if not hasattr(s, "layouts"):
        s.layouts = {}
    if n in s.layouts:
        return
    ins = _data_inputs(s, n)
    lays = {layout_of(s, a) for a in ins}
    if len(lays) > 1:
        raise unsupported(n.name, s.describe(n), f"inputs with different batch layouts {sorted(map(str, lays))}")
    lay = lays.pop() if lays else STANDARD
    if lay.standard:
        return
    op = cls.op
    full = tuple(s.values[n].shape)
    if op in _LAYOUT_FIXED_OPS or op not in _LAST_AXIS_OPS:
        raise unsupported(n.name, s.describe(n), f"{op} on a tensor whose batch axis is at position {lay.axis}")
    if lay.axis >= len(full) - _LAST_AXIS_OPS[op] or full[lay.axis] != s.batch * lay.inner * lay.outer:
        raise unsupported(n.name, s.describe(n), f"{op} acts on the axis that holds the batch")
    s.layouts[n] = lay


def _find_layout(out: torch.Tensor, per: int, batch: int) -> Layout | None:
    """Layout of a tensor of canonical global indices (value // per = sample)."""
    samp = torch.div(out, per, rounding_mode="floor").to(torch.int64)
    full = tuple(out.shape)
    axes = sorted(range(len(full)), key=lambda a: full[a] != batch)  # prefer an axis of exactly B
    for a in axes:
        if full[a] % batch:
            continue
        m = samp.movedim(a, 0).reshape(full[a], -1)
        if not bool((m == m[:, :1]).all()):
            continue
        col = m[:, 0]
        rest = full[a] // batch
        for inner in (d for d in range(1, rest + 1) if rest % d == 0):
            i = torch.arange(full[a], device=m.device)
            if torch.equal(col, (i // inner) % batch):
                return Layout(a, inner, rest // inner)
    return None


# ---------------------------------------------------------------------- plumbing ops
_PLUMBING_FUNCTIONS = {
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.permute.default, aten.transpose.int,
    aten.t.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
    aten.select.int, aten.slice.Tensor, aten.unflatten.int, aten.flatten.using_ints, aten.expand.default,
    aten.contiguous.default if hasattr(aten, "contiguous") else None, aten.narrow.default, aten.movedim.int,
    aten.index_select.default, aten.clone.default, aten.alias.default,
    torch.reshape, torch.permute, torch.transpose, torch.unsqueeze, torch.squeeze, torch.select, torch.flatten,
    torch.unflatten, torch.narrow, torch.movedim, torch.t, operator.getitem,
}
_PLUMBING_FUNCTIONS.discard(None)
_PLUMBING_TUPLE_FUNCTIONS = {aten.unbind.int, aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default,
                             torch.unbind, torch.split, torch.chunk}
_PLUMBING_METHODS = {"view", "reshape", "permute", "transpose", "t", "unsqueeze", "squeeze", "select", "flatten",
                     "unflatten", "narrow", "movedim", "contiguous", "expand", "__getitem__", "view_as", "reshape_as"}
_PLUMBING_TUPLE_METHODS = {"unbind", "split", "chunk"}
_PLUMBING_MODULES = ("OnnxReshape", "OnnxTranspose", "OnnxSqueezeStaticAxes", "OnnxSqueezeDynamicAxes",
                     "OnnxUnsqueezeStaticAxes", "OnnxUnsqueezeDynamicAxes", "OnnxGather", "OnnxSlice", "OnnxSliceV9",
                     "OnnxExpand", "OnnxFlatten")
_PLUMBING_TUPLE_MODULES = ("OnnxSplit13", "OnnxSplit")


def _module_name(s: "Normaliser", n: fx.Node) -> str:
    return type(s.gm.get_submodule(n.target)).__name__ if n.op == "call_module" else ""


def is_plumbing(s: "Normaliser", n: fx.Node, tuple_result: bool = False) -> bool:
    if n.op == "call_function":
        return n.target in (_PLUMBING_TUPLE_FUNCTIONS if tuple_result else _PLUMBING_FUNCTIONS)
    if n.op == "call_method":
        return n.target in (_PLUMBING_TUPLE_METHODS if tuple_result else _PLUMBING_METHODS)
    if n.op == "call_module":
        return _module_name(s, n) in (_PLUMBING_TUPLE_MODULES if tuple_result else _PLUMBING_MODULES)
    return False


def _rerun(s: "Normaliser", n: fx.Node, replace: dict[fx.Node, Any]) -> Any:
    """Evaluate node ``n`` alone, with the values of ``replace`` substituted for its inputs."""
    def val(a):
        return replace[a] if a in replace else s.values[a]
    args = fx.node.map_arg(n.args, val)
    kwargs = fx.node.map_arg(n.kwargs, val)
    with torch.no_grad():
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return s.gm.get_submodule(n.target)(*args, **kwargs)


def _data_inputs(s: "Normaliser", n: fx.Node) -> list[fx.Node]:
    return [a for a in n.all_input_nodes if s.depends[a] and s.is_tensor_value(a)]


def index_map(s: "Normaliser", n: fx.Node, item: int | None = None) -> tuple[fx.Node, np.ndarray, Layout]:
    """(data input, index map of one output sample into the flattened canonical input sample, the
    output's batch layout) of a plumbing node."""
    srcs = _data_inputs(s, n)
    if len(srcs) != 1:
        raise unsupported(n.name, s.describe(n), f"re-indexing op with {len(srcs)} data inputs (expects one)")
    x = srcs[0]
    xv = s.values[x]
    lay_in = layout_of(s, x)
    sample_in = lay_in.sample_shape(tuple(xv.shape))
    per = int(np.prod(sample_in))
    canon_idx = torch.arange(xv.numel(), dtype=torch.float64, device=s.device).reshape((s.batch,) + sample_in)
    idx = lay_in.uncanon(canon_idx, tuple(xv.shape))
    try:
        out = _rerun(s, n, {x: idx})
    except Exception as e:  # noqa: BLE001 - the op does not accept a float64 stand-in
        raise unsupported(n.name, s.describe(n), f"cannot trace its index map ({type(e).__name__}: {e})") from None
    if item is not None:
        out = out[item]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(s.values[n].shape if item is None else s.values[n][item].shape):
        raise unsupported(n.name, s.describe(n), "re-indexing result does not match the recorded value")
    out = out.detach().to(torch.float64)
    lay = _find_layout(out, per, s.batch) if out.ndim else None
    if lay is None:
        raise unsupported(n.name, s.describe(n), "the op mixes samples of the batch or removes the batch axis")
    c = lay.canon(out, s.batch).cpu().numpy().astype(np.int64)
    local = c - (np.arange(s.batch) * per).reshape((-1,) + (1,) * (c.ndim - 1))
    if local.min() < 0 or local.max() >= per or any(not np.array_equal(local[0], local[b]) for b in range(1, len(local))):
        raise unsupported(n.name, s.describe(n), "the op mixes samples of the batch")
    return x, local[0], lay


def add_plumbing(s: "Normaliser", n: fx.Node, x: fx.Node, local: np.ndarray, lay: Layout, note: str) -> None:
    src = s.data(x, n.name, note)
    s.layouts[n] = lay
    if local.size == int(np.prod(s.shape_of(x))) and np.array_equal(local.reshape(-1), np.arange(local.size)):
        if tuple(local.shape) == s.shape_of(x):
            s._add(n, G.Identity, (src,))
        else:
            s._add(n, G.Reshape, (src,))
    else:
        # int32 indices (a sample has fewer than 2^31 elements): a ViT-B's index maps take half the memory
        s._add(n, G.Rearrange, (src,), index=local.astype(np.int32 if local.size < 2 ** 31 else np.int64), note=note)


def plumbing(s: "Normaliser", n: fx.Node) -> None:
    x, local, lay = index_map(s, n)
    add_plumbing(s, n, x, local, lay, s.describe(n))


def plumbing_item(s: "Normaliser", n: fx.Node) -> None:
    """``getitem`` on a split/unbind result: the index map of that one output."""
    src, idx = n.args[0], n.args[1]
    x, local, lay = index_map(s, src, int(idx))
    add_plumbing(s, n, x, local, lay, f"{s.describe(src)}[{idx}]")


# ---------------------------------------------------------------------- constants
def constant_node(s: "Normaliser", v: fx.Node, where: str) -> str:
    """An ANN ``Constant`` for an input-independent tensor used as data (class token)."""
    val = s.values[v]
    if not isinstance(val, torch.Tensor) or not val.is_floating_point() or val.ndim == 0:
        raise unsupported(where, "constant", f"constant operand {v.name!r} is not a float tensor with a batch axis")
    if val.shape[0] != s.batch or any(not torch.equal(val[0], val[b]) for b in range(1, val.shape[0])):
        raise unsupported(where, "constant", f"constant operand {v.name!r} of shape {tuple(val.shape)} is not one tensor "
                                             "repeated over the batch")
    name = f"{v.name}_const"
    if name not in s.graph.nodes:
        s.graph.add(G.Constant(name, (), tuple(int(d) for d in val.shape[1:]),
                               value=val[0].detach().to("cpu", torch.float32).numpy().copy()))
    return name


def sample_constant(s: "Normaliser", c: Any, n: fx.Node, where: str) -> np.ndarray:
    """A constant operand broadcast to one sample of ``n``'s shape (batch axis dropped)."""
    full = tuple(s.values[n].shape)
    val = c if isinstance(c, torch.Tensor) else torch.as_tensor(c)
    val = val.detach().to("cpu", torch.float32)
    try:
        b = torch.broadcast_to(val, full)
    except RuntimeError:
        raise unsupported(where, "constant", f"constant of shape {tuple(val.shape)} does not broadcast to {full}") from None
    b = layout_of(s, n).canon(b.contiguous(), s.batch)
    if any(not torch.equal(b[0], b[i]) for i in range(1, b.shape[0])):
        raise unsupported(where, "constant", "a constant that differs between samples of the batch")
    return b[0].numpy().copy()


# ---------------------------------------------------------------------- elementwise arithmetic
_ARITH_FUNCTIONS = {
    aten.mul.Tensor: "mul", aten.mul.Scalar: "mul", torch.mul: "mul", operator.mul: "mul",
    aten.div.Tensor: "div", aten.div.Scalar: "div", torch.div: "div", operator.truediv: "div",
    aten.sub.Tensor: "sub", aten.sub.Scalar: "sub", torch.sub: "sub", operator.sub: "sub",
    aten.add.Tensor: "add", aten.add.Scalar: "add", torch.add: "add", operator.add: "add", operator.iadd: "add",
    aten.add_.Tensor: "add",
}
_ARITH_METHODS = {"mul": "mul", "__mul__": "mul", "__rmul__": "mul", "div": "div", "__truediv__": "div",
                  "sub": "sub", "__sub__": "sub", "add": "add", "add_": "add", "__add__": "add", "__radd__": "add"}
_ONNX_ARITH = {torch.mul: "mul", torch.div: "div", torch.sub: "sub", torch.add: "add"}


def arith_kind(s: "Normaliser", n: fx.Node) -> str | None:
    if n.op == "call_function":
        return _ARITH_FUNCTIONS.get(n.target)
    if n.op == "call_method":
        return _ARITH_METHODS.get(n.target)
    if n.op == "call_module" and _module_name(s, n) == "OnnxBinaryMathOperation":
        mod = s.gm.get_submodule(n.target)
        return _ONNX_ARITH.get(mod.math_op_function) if mod.broadcast != 1 else None
    return None


def arith(s: "Normaliser", n: fx.Node, kind: str) -> None:
    """mul/div/add/sub where at most one operand is data: Scale, AddConst (or a bias folded into the
    preceding bias-free Linear); add of two data tensors is the residual Add."""
    a, b = (n.args[0], n.args[1]) if len(n.args) >= 2 else (n.args[0], n.kwargs.get("other"))
    if n.kwargs.get("alpha", 1) != 1 or n.kwargs.get("rounding_mode") is not None:
        raise unsupported(n.name, s.describe(n), "alpha or rounding_mode")
    da = isinstance(a, fx.Node) and s.depends[a]
    db = isinstance(b, fx.Node) and s.depends[b]
    if da and db:
        if kind == "add":
            s._add_add(n, a, b)
            return
        raise unsupported(n.name, s.describe(n), f"elementwise {kind} of two input-dependent tensors "
                                                 "(only MatMul products and residual adds are supported)")
    if not (da or db):
        raise unsupported(n.name, s.describe(n), "no input-dependent operand")
    x, c = (a, b) if da else (b, a)
    cval = s.values[c] if isinstance(c, fx.Node) else c
    inherit_layout(s, n, G.Scale if kind in ("mul", "div") else G.AddConst)
    if kind in ("mul", "div"):
        if not da and kind == "div":
            raise unsupported(n.name, s.describe(n), "division by an input-dependent tensor")
        t = torch.as_tensor(cval)
        if t.numel() != 1:
            raise unsupported(n.name, s.describe(n), f"{kind} by a constant of shape {tuple(t.shape)} (only scalars)")
        f = float(t.reshape(-1)[0])
        factor = f if kind == "mul" else 1.0 / f
        s._add(n, G.Scale, (s.data(x, n.name, kind),), factor=factor)
        return
    value = sample_constant(s, cval, n, n.name)
    if kind == "sub":
        if not da:
            raise unsupported(n.name, s.describe(n), "constant minus tensor")
        value = -value
    src = s.data(x, n.name, kind)
    prev = s.graph[src]
    shape = s.shape_of(n)
    if (isinstance(prev, G.Linear) and prev.bias is None and len(s.graph.users(src)) == 0
            and len([u for u in x.users]) == 1 and np.all(value == value.reshape(-1, shape[-1])[0])):
        prev.bias = value.reshape(-1, shape[-1])[0].astype(np.float32).copy()  # ONNX MatMul + Add(bias)
        s.alias[n] = src
        return
    s._add(n, G.AddConst, (src,), value=value.astype(np.float32))


# ---------------------------------------------------------------------- LayerNorm, GELU, Softmax
def layer_norm(s: "Normaliser", n: fx.Node, x, normalized_shape, weight, bias, eps) -> None:
    shape = s.shape_of(n)
    ns = tuple(int(v) for v in (normalized_shape if isinstance(normalized_shape, (list, tuple, torch.Size)) else [normalized_shape]))
    if len(ns) != 1 or ns[0] != shape[-1]:
        raise unsupported(n.name, s.describe(n), f"normalized_shape {ns} (only the last axis, {shape[-1]})")
    c = shape[-1]
    w = s.const(weight, n.name, "LayerNorm weight")
    b = s.const(bias, n.name, "LayerNorm bias")
    s._add(n, G.LayerNorm, (s.data(x, n.name, "LayerNorm"),),
           weight=_np(w) if w is not None else np.ones(c, np.float32),
           bias=_np(b) if b is not None else np.zeros(c, np.float32), eps=float(s.const(eps, n.name, "eps")))


def _np(t) -> np.ndarray:
    return torch.as_tensor(t).detach().to("cpu", torch.float32).reshape(-1).numpy().copy()


def softmax(s: "Normaliser", n: fx.Node, x, dim) -> None:
    rank = len(s.values[n].shape)
    if dim is None:
        raise unsupported(n.name, s.describe(n), "softmax without an explicit axis")
    inherit_layout(s, n, G.Softmax)
    d = layout_of(s, n).sample_axis(int(dim), rank)
    if d is None:
        raise unsupported(n.name, s.describe(n), "softmax over the batch axis")
    s._add(n, G.Softmax, (s.data(x, n.name, "Softmax"),), axis=d)


def gelu(s: "Normaliser", n: fx.Node, x, approximate) -> None:
    if approximate not in ("none", "tanh"):
        raise unsupported(n.name, s.describe(n), f"approximate={approximate!r}")
    s._add(n, G.GELU, (s.data(x, n.name, "GELU"),), approximate=approximate)


def matmul(s: "Normaliser", n: fx.Node, a, b) -> None:
    """MatMul: constant right operand -> Linear over the last axis; two data operands -> MatMul."""
    if isinstance(b, fx.Node) and s.depends[b] and isinstance(a, fx.Node) and s.depends[a]:
        sa, sb = s.shape_of(a), s.shape_of(b)
        if len(sa) < 2 or len(sb) < 2 or sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
            raise unsupported(n.name, s.describe(n), f"MatMul of shapes {sa} x {sb} (needs equal leading axes, "
                                                     "inner sizes equal; no broadcasting)")
        s._add(n, G.MatMul, (s.data(a, n.name, "MatMul"), s.data(b, n.name, "MatMul")))
        return
    s._add_matmul(n, a, b)


def sdpa(s: "Normaliser", n: fx.Node) -> None:
    """``scaled_dot_product_attention(q, k, v)`` as Rearrange(k^T) -> MatMul -> Scale -> Softmax -> MatMul."""
    q, k, v = n.args[:3]
    mask = s.arg(n, 3, "attn_mask")
    drop = s.arg(n, 4, "dropout_p", 0.0)
    causal = s.arg(n, 5, "is_causal", False)
    scale = n.kwargs.get("scale", s.arg(n, 6, "scale") if n.target is not F.scaled_dot_product_attention else None)
    if mask is not None or drop or causal or n.kwargs.get("enable_gqa", False):
        raise unsupported(n.name, s.describe(n), "attention with a mask, dropout, causal masking or GQA")
    qs, ks = s.shape_of(q), s.shape_of(k)
    if len(qs) < 2 or qs[:-2] != ks[:-2] or qs[-1] != ks[-1]:
        raise unsupported(n.name, s.describe(n), f"attention of q {qs} and k {ks}")
    factor = float(scale) if scale is not None else 1.0 / math.sqrt(qs[-1])
    idx = np.arange(int(np.prod(ks))).reshape(ks)
    kt_shape = ks[:-2] + (ks[-1], ks[-2])
    kt = s.graph.add(G.Rearrange(f"{n.name}_kT", (s.data(k, n.name, "attention k"),), kt_shape,
                                 index=np.swapaxes(idx, -1, -2).copy(), note="k transpose in scaled_dot_product_attention"))
    sc_shape = qs[:-1] + (ks[-2],)
    qk = s.graph.add(G.MatMul(f"{n.name}_qk", (s.data(q, n.name, "attention q"), kt.name), sc_shape))
    sc = s.graph.add(G.Scale(f"{n.name}_scaled", (qk.name,), sc_shape, factor=factor))
    p = s.graph.add(G.Softmax(f"{n.name}_softmax", (sc.name,), sc_shape, axis=len(sc_shape) - 1))
    inherit_layout(s, n, G.MatMul)
    s.graph.add(G.MatMul(n.name, (p.name, s.data(v, n.name, "attention v")), s.shape_of(n)))
    s.alias[n] = n.name


def mean(s: "Normaliser", n: fx.Node, x, dims, keepdim) -> None:
    rank = len(s.values[x].shape)
    if dims is None:
        raise unsupported(n.name, s.describe(n), "mean over all axes including the batch axis")
    dims_n = sorted(int(d) % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
    lay = layout_of(s, x)
    if lay.axis in dims_n:
        raise unsupported(n.name, s.describe(n), "mean over the batch axis")
    if rank == 4 and dims_n == [2, 3] and lay.standard:
        s._add(n, G.GlobalAvgPool, (s.data(x, n.name, "mean"),), keepdim=bool(keepdim))
        return
    if not lay.standard:
        shift = 0 if keepdim else sum(d < lay.axis for d in dims_n)
        s.layouts[n] = Layout(lay.axis - shift, lay.inner)
    axes = tuple(lay.sample_axis(d, rank) for d in dims_n)
    s._add(n, G.Mean, (s.data(x, n.name, "mean"),), axes=axes, keepdim=bool(keepdim))


# ---------------------------------------------------------------------- composite patterns
_SEED_FUNCTIONS = {aten.erf.default: "erf", torch.erf: "erf", torch.special.erf: "erf",
                   aten.tanh.default: "tanh", torch.tanh: "tanh", F.tanh: "tanh",
                   aten.sqrt.default: "sqrt", torch.sqrt: "sqrt", aten.rsqrt.default: "sqrt", torch.rsqrt: "sqrt"}
_SEED_METHODS = {"erf": "erf", "tanh": "tanh", "sqrt": "sqrt", "rsqrt": "sqrt"}


def _seed_kind(s: "Normaliser", n: fx.Node) -> str | None:
    if n.op == "call_function":
        return _SEED_FUNCTIONS.get(n.target)
    if n.op == "call_method":
        return _SEED_METHODS.get(n.target)
    if n.op == "call_module":
        mod = s.gm.get_submodule(n.target)
        name = type(mod).__name__
        if name == "OnnxErf":
            return "erf"
        if name == "OnnxSqrt":
            return "sqrt"
        if isinstance(mod, nn.Tanh) or (name == "OnnxFunction" and getattr(mod, "function", None) is torch.tanh):
            return "tanh"
    return None


def _ancestors(s: "Normaliser", n: fx.Node, depth: int) -> list[fx.Node]:
    out, frontier = [], [n]
    for _ in range(depth):
        nxt = []
        for f in frontier:
            for a in f.all_input_nodes:
                if s.depends.get(a) and s.is_tensor_value(a) and a not in out:
                    out.append(a)
                    nxt.append(a)
        frontier = nxt
    return out


def _descendants(s: "Normaliser", n: fx.Node, depth: int) -> list[fx.Node]:
    out, frontier = [n], [n]
    for _ in range(depth):
        nxt = []
        for f in frontier:
            for u in f.users:
                if u.op != "output" and s.is_tensor_value(u) and u not in out:
                    out.append(u)
                    nxt.append(u)
        frontier = nxt
    return out


def _region(s: "Normaliser", x: fx.Node, exit_: fx.Node, order: dict[fx.Node, int]) -> set[fx.Node] | None:
    """Nodes strictly after ``x`` up to ``exit_`` on data paths; None unless ``exit_`` reads data
    only through ``x`` and nothing outside reads the inner nodes."""
    region, stack = set(), [exit_]
    while stack:
        m = stack.pop()
        if m is x or m in region:
            continue
        if not s.depends.get(m) or order[m] <= order[x]:
            return None  # reaches data that is not x
        region.add(m)
        stack.extend(a for a in m.all_input_nodes if s.depends.get(a))
    for m in region:
        if m is not exit_ and any(u not in region for u in m.users):
            return None
    return region


_PREFILTER = 4096  # elements compared first: a candidate region that fails there is rejected without the full check


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """allclose with a tolerance relative to max|b|. A prefix of the elements is compared first with
    the same tolerance (a necessary condition), so most wrong candidates cost almost nothing."""
    if a.shape != b.shape:
        return False
    atol = 1e-5 * (1 + float(b.abs().max()))
    fa, fb = a.reshape(-1), b.reshape(-1)
    if fa.numel() > _PREFILTER and not torch.allclose(fa[:_PREFILTER].double(), fb[:_PREFILTER].double(),
                                                      rtol=1e-4, atol=atol):
        return False
    return bool(torch.allclose(a.double(), b.double(), rtol=1e-4, atol=atol))


def _gelu_close(x: torch.Tensor, y: torch.Tensor, approx: str) -> bool:
    """``_close(gelu(x), y)``; GELU is elementwise, so a prefix of x is tried first (same tolerance)."""
    fx, fy = x.reshape(-1), y.reshape(-1)
    k = min(_PREFILTER, fx.numel())
    atol = 1e-5 * (1 + float(y.abs().max()))
    if not torch.allclose(F.gelu(fx[:k].double(), approximate=approx), fy[:k].double(), rtol=1e-4, atol=atol):
        return False
    return _close(F.gelu(x.double(), approximate=approx), y)


def _fit_affine(x: torch.Tensor, eps: float, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``w, b`` with ``y = layer_norm(x) * w + b`` on the probe rows, if they fit."""
    if x.shape != y.shape:
        return None
    z = F.layer_norm(x.double(), (x.shape[-1],), eps=eps)
    zr, yr = z.reshape(-1, z.shape[-1]), y.double().reshape(-1, y.shape[-1])
    zc = zr - zr.mean(0)
    var = (zc * zc).sum(0)
    if zr.shape[0] < 2 or torch.any(var <= 0):
        return None
    w = (zc * (yr - yr.mean(0))).sum(0) / var
    b = yr.mean(0) - w * zr.mean(0)
    if not _close(z * w + b, y):
        return None
    return w.float().numpy(), b.float().numpy()


def _eps_of(s: "Normaliser", region: set[fx.Node], seed: fx.Node) -> float:
    """The scalar constant added just before the square root (LayerNorm's eps)."""
    for a in seed.all_input_nodes:
        if a in region and arith_kind(s, a) == "add":
            for c in list(a.args[:2]):
                v = c if not isinstance(c, fx.Node) else (None if s.depends[c] else s.values[c])
                if v is not None and torch.as_tensor(v).numel() == 1:
                    return float(torch.as_tensor(v).reshape(-1)[0])
    return 1e-5


def find_token_patterns(s: "Normaliser") -> tuple[dict[fx.Node, tuple], set[fx.Node]]:
    """Composite GELU / LayerNorm regions: ({exit node: (kind, x, params)}, inner nodes)."""
    search = PatternSearch(s)
    for seed, _ in search.seeds:
        search.match(seed)
    return search.found, search.inner


class PatternSearch:
    """The composite-region search, one seed at a time in graph order, so it can run while the probe
    runs: a seed's candidate inputs and exits lie within ``window(seed)`` (a structural superset:
    ancestors within ``_ANCESTORS`` and users within ``_DESCENDANTS`` steps), so once the probe has
    computed every node up to ``trigger`` of a seed the seed can be matched, and values outside
    every pending window are no longer needed as data (the normaliser keeps only their shapes)."""

    def __init__(self, s: "Normaliser"):
        self.s = s
        self.order = {m: i for i, m in enumerate(s.gm.graph.nodes)}
        self.found: dict[fx.Node, tuple] = {}
        self.inner: set[fx.Node] = set()
        self.seeds: list[tuple[fx.Node, str]] = []
        for seed in s.gm.graph.nodes:
            if s.depends.get(seed):
                kind = _seed_kind(s, seed)
                if kind is not None:
                    self.seeds.append((seed, kind))
        self._kind = dict(self.seeds)

    def window(self, seed: fx.Node) -> set[fx.Node]:
        """Every node ``match(seed)`` may read as data (without looking at values)."""
        out, frontier = set(), [seed]
        for _ in range(_ANCESTORS):
            frontier = [a for f in frontier for a in f.all_input_nodes if self.s.depends.get(a) and a not in out]
            out.update(frontier)
        out.add(seed)
        frontier = [seed]
        for _ in range(_DESCENDANTS):
            frontier = [u for f in frontier for u in f.users if u.op != "output" and u not in out]
            out.update(frontier)
        return out

    def match(self, seed: fx.Node) -> None:
        s, order = self.s, self.order
        if seed in self.inner:
            return
        kind = self._kind[seed]
        # the widest region wins: a centred input also passes the LayerNorm test, and the affine
        # weight and bias come after the division
        xs = sorted(_ancestors(s, seed, _ANCESTORS), key=order.get)
        exits = sorted(_descendants(s, seed, _DESCENDANTS), key=order.get, reverse=True)
        hit = None
        for e in exits:
            for x in xs:
                region = _region(s, x, e, order)
                if region is None or seed not in region:
                    continue
                xv, ev = s.values[x], s.values[e]
                if kind in ("erf", "tanh"):
                    approx = "none" if kind == "erf" else "tanh"
                    if xv.shape == ev.shape and _gelu_close(xv, ev, approx):
                        hit = (e, ("GELU", x, {"approximate": approx}), region)
                elif kind == "sqrt" and xv.ndim >= 2:
                    eps = _eps_of(s, region, seed)
                    fit = _fit_affine(xv, eps, ev)
                    if fit is not None:
                        hit = (e, ("LayerNorm", x, {"weight": fit[0], "bias": fit[1], "eps": eps}), region)
                if hit:
                    break
            if hit:
                break
        if hit is None:
            return  # an unexplained erf/tanh/sqrt is refused when the main loop reaches it
        e, spec, region = hit
        self.found[e] = spec
        self.inner.update(region - {e})


_ANCESTORS, _DESCENDANTS = 8, 6


def add_pattern(s: "Normaliser", n: fx.Node, spec: tuple) -> None:
    kind, x, params = spec
    cls = G.GELU if kind == "GELU" else G.LayerNorm
    s._add(n, cls, (s.data(x, n.name, kind),), **params)
