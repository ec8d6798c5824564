"""Quantised clip-floor activations for conversion-aware fine-tuning (QCFS, PQA) and their swapping.

``QuantClipFloor`` computes ``y = (lam/L) * clamp(floor(L*z/lam + 1/2), lo_level, hi_level)`` with
a trainable per-layer ``lam``. QCFS (Bu et al. 2022) uses the levels 0..L; PMSM's PQA uses
alpha*L..beta*L (negative levels allowed). The floor has a straight-through gradient while training.

In eval mode the forward is plain torch ops in this order, so ``torch.export``, ``symbolic_trace``
and ONNX export all show ``mul -> add 0.5 -> floor -> clamp -> mul``, which the frontend recognises
as one ``QuantAct(step=lam/L, min_level, max_level)`` node::

    q = z * (L / lam)          # the constant L/lam is computed from the parameter
    q = floor(q + 0.5)
    q = clamp(q, lo_level, hi_level)
    y = q * (lam / L)

``swap_activations(model, factory)`` replaces activation modules (``nn.ReLU`` by default) and, on a
``torch.fx.GraphModule``, also the functional ``relu`` calls of its graph (what ``load_model`` and
``torch.export`` produce).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

DEFAULT_LAMBDA = 8.0


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity gradient (straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


class QuantClipFloor(nn.Module):
    """``y = (lam/L) * clamp(floor(L*z/lam + 1/2), lo_level, hi_level)``, ``lam`` trainable (scalar).

    levels     L, the number of positive quantisation steps (lam/L is the step)
    lo_level   lowest integer level (0 for QCFS; alpha*L < 0 for PQA)
    hi_level   highest integer level (L for QCFS; beta*L for PQA); defaults to ``levels``
    lam        initial lambda (> 0); QCFS initialises it to 8

    ``quant_act_spec()`` returns ``(step, lo_level, hi_level)``; the frontend reads it when the module
    is kept as a leaf in an fx graph.
    """

    def __init__(self, levels: int, lo_level: int = 0, hi_level: int | None = None, lam: float = DEFAULT_LAMBDA):
        super().__init__()
        levels = int(levels)
        hi = levels if hi_level is None else int(hi_level)
        if levels < 1:
            raise ValueError(f"QuantClipFloor: levels L={levels} must be >= 1")
        if not lo_level <= 0 <= hi or lo_level == hi:
            raise ValueError(f"QuantClipFloor: levels [{lo_level}, {hi}] must contain 0 and more than one level")
        if not float(lam) > 0.0:
            raise ValueError(f"QuantClipFloor: initial lambda {lam} must be > 0")
        self.levels = levels
        self.lo_level = int(lo_level)
        self.hi_level = hi
        self.lam = nn.Parameter(torch.tensor(float(lam)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lam = self.lam
        q = z * (self.levels / lam)
        q = _floor_ste(q + 0.5) if self.training else torch.floor(q + 0.5)
        q = torch.clamp(q, float(self.lo_level), float(self.hi_level))
        return q * (lam / self.levels)

    def quant_act_spec(self) -> tuple[float, int, int]:
        """(step = lam/L, lo_level, hi_level) of the eval-mode forward."""
        return float(self.lam.detach()) / self.levels, self.lo_level, self.hi_level

    def extra_repr(self) -> str:
        return f"L={self.levels}, levels=[{self.lo_level}, {self.hi_level}], lam={float(self.lam.detach()):.4g}"


def qcfs_activation(levels: int, lam: float = DEFAULT_LAMBDA) -> QuantClipFloor:
    """QCFS: levels 0..L (Bu et al. 2022)."""
    return QuantClipFloor(levels, 0, levels, lam)


def pqa_activation(levels: int = 8, alpha: float = -0.25, beta: float = 1.0, lam: float = DEFAULT_LAMBDA) -> QuantClipFloor:
    """PMSM's PQA: levels round(alpha*L)..round(beta*L), alpha <= 0 < beta."""
    lo, hi = alpha * levels, beta * levels
    if abs(lo - round(lo)) > 1e-9 or abs(hi - round(hi)) > 1e-9:
        raise ValueError(f"pqa_activation: alpha*L={lo} and beta*L={hi} must be integers (L={levels})")
    return QuantClipFloor(levels, int(round(lo)), int(round(hi)), lam)


# ---------------------------------------------------------------------- swapping
_RELU_FUNCTIONS = {torch.relu, F.relu, torch.relu_, torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
_RELU_METHODS = {"relu", "relu_"}


def _swap_modules(module: nn.Module, factory: Callable[[], nn.Module], kinds: tuple[type, ...]) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, kinds):
            setattr(module, name, factory())
            count += 1
        else:
            count += _swap_modules(child, factory, kinds)
    return count


def _swap_graph(gm: fx.GraphModule, factory: Callable[[], nn.Module], kinds: tuple[type, ...]) -> int:
    """Replace activation nodes of an fx graph (call_module of ``kinds``, functional relu when
    ``nn.ReLU`` is among ``kinds``) by call_module nodes of new ``factory()`` submodules."""
    want_relu = any(issubclass(nn.ReLU, k) for k in kinds)
    count = 0
    for node in list(gm.graph.nodes):
        hit = False
        if node.op == "call_module":
            hit = isinstance(gm.get_submodule(node.target), kinds)
        elif node.op == "call_function" and want_relu:
            hit = node.target in _RELU_FUNCTIONS
        elif node.op == "call_method" and want_relu:
            hit = node.target in _RELU_METHODS
        if not hit:
            continue
        x = node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))
        name = f"quant_act_{count}"
        while hasattr(gm, name):
            name += "_"
        gm.add_submodule(name, factory())
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (x,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def swap_activations(model: nn.Module, factory: Callable[[], nn.Module], kinds: tuple[type, ...] = (nn.ReLU,),
                     inplace: bool = False) -> nn.Module:
    """Return ``model`` with every activation of ``kinds`` replaced by a fresh ``factory()`` module.

    Plain modules: child modules of ``kinds`` are replaced (functional ``torch.relu`` calls inside
    ``forward`` cannot be reached; trace the model first, e.g. ``frontend.load_model(...).module``).
    ``torch.fx.GraphModule`` (from ``load_model`` / ``torch.export``): the graph's activation nodes,
    module or functional, are rewritten. Raises ValueError if nothing was replaced, so a model whose
    activations would silently stay ReLU is never fine-tuned by mistake.
    """
    model = model if inplace else copy.deepcopy(model)
    kinds = tuple(kinds)
    if isinstance(model, fx.GraphModule):
        count = _swap_graph(model, factory, kinds)
    else:
        count = _swap_modules(model, factory, kinds)
    if count == 0:
        raise ValueError(f"swap_activations: no activation of kinds {[k.__name__ for k in kinds]} found in "
                         f"{type(model).__name__}" + ("" if isinstance(model, fx.GraphModule) else
                                                      " (functional relu calls need an fx-traced model)"))
    return model


def quant_activations(model: nn.Module) -> list[QuantClipFloor]:
    """The QuantClipFloor modules of ``model`` in definition order."""
    return [m for m in model.modules() if isinstance(m, QuantClipFloor)]


__all__ = ["DEFAULT_LAMBDA", "QuantClipFloor", "pqa_activation", "qcfs_activation", "quant_activations",
           "swap_activations"]
