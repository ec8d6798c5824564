"""Analytic multiply-accumulate (MAC) counts of an ANN, per layer (rules: docs/energy.md).

Reported unit: MACs (1 MAC = 2 FLOPs; ``MacCount.flops`` gives the FLOP figure). The model runs
once on an example input under a torch dispatch mode that sees every aten op with its shapes:

* matmul-family ops (mm, addmm, bmm, baddbmm, convolution, scaled-dot-product attention) use
  ``torch.utils.flop_counter``'s formulas, halved (bias additions are not counted, as there);
* average pooling counts ``kH * kW`` MACs per output (it is a projection of weight 1/(kH*kW),
  exactly as spikeport lowers it), adaptive average pooling the true window size, ``mean`` one MAC
  per input element, inference BatchNorm one MAC per element, LayerNorm two per element (variance
  accumulation and the affine step);
* non-MAC work is listed separately in ``other``: max-pool comparisons (``kH*kW - 1`` per output),
  softmax (``exp``, ``add``, ``div``, ``max`` one each per element), elementwise ``add``/``mul``,
  activations, LayerNorm's ``rsqrt`` per normalised row.

Counts are per sample: the example batch's counts are divided by its batch size. Rows are one per
``torch.fx`` node (an ``AnnModel``'s GraphModule, or ``torch.fx.symbolic_trace`` of a module),
or, when a module cannot be traced, one per innermost module call.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

aten = torch.ops.aten


@dataclass
class LayerMacs:
    """One fx node (or module call): MACs, other operations by kind, and output elements."""

    name: str
    op: str
    macs: int = 0
    outputs: int = 0
    other: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "macs": self.macs, "outputs": self.outputs, "other": dict(self.other)}


@dataclass
class MacCount:
    """Per-sample operation counts of an ANN; ``rows`` keep execution order, zero rows dropped."""

    rows: list[LayerMacs]
    batch: int
    unit: str = "MAC (1 MAC = 2 FLOPs)"

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.total_macs

    def by_name(self) -> dict[str, LayerMacs]:
        return {r.name: r for r in self.rows}

    def other_total(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            for k, v in r.other.items():
                out[k] += v
        return dict(out)

    def to_json(self) -> dict:
        return {"unit": self.unit, "total_macs": self.total_macs, "flops": self.flops, "other": self.other_total(),
                "layers": [r.to_json() for r in self.rows]}


# ------------------------------------------------------------------------------ own rules
def _numel(t) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _pair(v, default) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, int):
        return v, v
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _adaptive_window_total(size: int, out: int) -> int:
    """Sum over output positions of the adaptive pooling window length along one axis."""
    return sum(-(-(i + 1) * size // out) - (i * size // out) for i in range(out))


def _own_rule(packet, args, kwargs, out) -> tuple[int, dict[str, int]]:
    """MACs and other ops of the non-matmul ops spikeport counts (module docstring)."""
    res = out[0] if isinstance(out, (tuple, list)) else out
    n_out = _numel(res)
    x = args[0] if args else None
    if packet is aten.avg_pool2d:
        kh, kw = _pair(args[1], 1)
        return n_out * kh * kw, {}
    if packet is aten._adaptive_avg_pool2d:
        h, w = x.shape[-2:]
        oh, ow = res.shape[-2:]
        lead = int(np.prod(x.shape[:-2]))
        return lead * _adaptive_window_total(h, oh) * _adaptive_window_total(w, ow), {}
    if packet is aten.mean:
        return _numel(x), {}
    if packet in (aten.max_pool2d_with_indices, aten.max_pool2d):
        kh, kw = _pair(args[1], 1)
        return 0, {"compare": n_out * (kh * kw - 1)}
    if packet in (aten._softmax, aten.softmax, aten._log_softmax):
        return 0, {"exp": n_out, "add": n_out, "div": n_out, "max": n_out}
    if packet in (aten._native_batch_norm_legit_no_training, aten.native_batch_norm, aten._native_batch_norm_legit,
                  aten.cudnn_batch_norm, aten.batch_norm):
        return n_out, {}
    if packet in (aten.native_layer_norm, aten.layer_norm):
        shape = args[1]
        rows = n_out // int(np.prod(shape)) if len(shape) else n_out
        return 2 * n_out, {"rsqrt": rows}
    if packet in (aten.add, aten.sub):
        return 0, {"add": n_out}
    if packet in (aten.mul, aten.div):
        return 0, {"mul": n_out}
    if packet in (aten.relu, aten.gelu, aten.silu, aten.sigmoid, aten.tanh, aten.leaky_relu, aten.hardtanh,
                  aten.clamp, aten.threshold):
        return 0, {"activation": n_out}
    return 0, {}


_CPU_SDPA = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class _Counter(TorchDispatchMode):
    """Adds every aten op's MACs / other ops to the row currently executing."""

    def __init__(self):
        super().__init__()
        self.row: LayerMacs | None = None
        self.odd_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        row = self.row
        if row is None:
            return out
        packet = func._overloadpacket
        if packet in flop_registry:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            self.odd_flops += flops % 2
            row.macs += flops // 2
        elif _CPU_SDPA is not None and packet is _CPU_SDPA:
            q, k, v = args[:3]
            row.macs += int(sdpa_flop_count(q.shape, k.shape, v.shape)) // 2
        else:
            macs, other = _own_rule(packet, args, kwargs, out)
            row.macs += macs
            for key, val in other.items():
                row.other[key] = row.other.get(key, 0) + val
        return out


class _NodeRunner(fx.Interpreter):
    """Runs a GraphModule node by node, opening one row per node."""

    def __init__(self, gm: fx.GraphModule, counter: _Counter, rows: list[LayerMacs]):
        super().__init__(gm)
        self.counter, self.rows = counter, rows

    def run_node(self, n: fx.Node):
        if n.op in ("placeholder", "output", "get_attr"):
            return super().run_node(n)
        target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        if n.op == "call_module":
            target = type(self.module.get_submodule(n.target)).__name__
        row = LayerMacs(n.name, str(target))
        self.counter.row = row
        try:
            out = super().run_node(n)
        finally:
            self.counter.row = None
        row.outputs = _numel(out)
        self.rows.append(row)
        return out


def _module_rows(module: nn.Module, x: torch.Tensor, counter: _Counter) -> list[LayerMacs]:
    """Fallback for untraceable modules: attribute ops to the innermost module running."""
    rows: dict[str, LayerMacs] = {}
    stack: list[LayerMacs] = []
    handles = []
    for name, mod in module.named_modules():
        def pre(_m, _inp, name=name, mod=mod):
            row = rows.setdefault(name or "<root>", LayerMacs(name or "<root>", type(mod).__name__))
            stack.append(row)
            counter.row = row

        def post(_m, _inp, out, name=name):
            row = stack.pop()
            if not any(True for _ in _m.children()):
                row.outputs += _numel(out)
            counter.row = stack[-1] if stack else None
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    return list(rows.values())


def count_macs(model, example_input=None) -> MacCount:
    """Per-layer, per-sample MACs of ``model``: an ``AnnModel``, an fx ``GraphModule`` or an ``nn.Module``.

    example_input  a tensor with a batch axis; default zeros of ``(1, *model.input_shape)`` for an
                   AnnModel. Counts depend only on shapes, not on values.
    """
    input_shape = getattr(model, "input_shape", None)
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_macs: expected an AnnModel, GraphModule or nn.Module, got {type(model).__name__}")
    if example_input is None:
        if input_shape is None:
            raise ValueError("count_macs: example_input (with a batch axis) is required for a plain module")
        example_input = torch.zeros((1,) + tuple(input_shape))
    x = torch.as_tensor(example_input)
    dev = next((t.device for t in list(module.parameters()) + list(module.buffers())), torch.device("cpu"))
    x = x.to(dev, dtype=torch.float32) if x.is_floating_point() else x.to(dev)
    batch = int(x.shape[0]) if x.ndim else 1
    gm = module if isinstance(module, fx.GraphModule) else None
    if gm is None:
        try:
            gm = fx.symbolic_trace(module)
        except Exception:   # noqa: BLE001 - any tracing failure falls back to module hooks
            gm = None
    rows: list[LayerMacs] = []
    counter = _Counter()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            if gm is not None:
                _NodeRunner(gm, counter, rows).run(x)
            else:
                rows = _module_rows(module, x, counter)
    finally:
        module.train(was_training)
    if counter.odd_flops:
        raise ValueError(f"count_macs: {counter.odd_flops} FLOPs do not pair into MACs")
    for r in rows:
        for name in ("macs", "outputs"):
            if getattr(r, name) % batch:
                raise ValueError(f"count_macs: row {r.name!r} {name} {getattr(r, name)} is not a multiple of the "
                                 f"example batch {batch}")
            setattr(r, name, getattr(r, name) // batch)
        r.other = {k: v // batch for k, v in r.other.items()}
    return MacCount([r for r in rows if r.macs or r.other], batch)
