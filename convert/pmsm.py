"""``--method pmsm``: polarity multi-spike mapping (paper 002; methods.md section 4), C1 coding.

The ANN is first fine-tuned with PQA, ``y = (lam/L) * clip(floor(L z/lam + 1/2), alpha L, beta L)``
(``convert.activations.pqa_activation``, swapped in and trained by :func:`pmsm_finetune`); the
frontend reads each PQA as a ``QuantAct(step = lam/L, min_level = alpha L, max_level = beta L)``
node. Each QuantAct becomes an ``ir.MultiSpikeIF`` population (``ir/neurons_extra.py``)::

    theta = step ; v(0) = theta/2 ; v_tmp = v + I(t)
    n = clip(floor(v_tmp / theta), min_level, max_level) ; emit n ; v = v_tmp - n theta

so the first step reproduces PQA exactly and the T-step mean tends to the clipped input. A count n
is ONE event with a signed graded payload (levels [min_level, max_level]); downstream weights absorb
theta (``event_value``), ``decode_scale`` = theta.

Without fine-tuning (``untrained="calibrate"``) ReLU layers get theta = lambda_p / L from the p-th
percentile of calibration activations and levels 0..L: the multi-spike neuron on an unquantised
ReLU network (not lossless, a baseline).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from ..ir.neurons_extra import MultiSpikeIF
from .calibrate import calibrate
from .lower import ActivationContext, ConversionError, NeuronSpec
from .registry import ConversionMethod, register_method

UNTRAINED = ("error", "calibrate")


def level_bits(min_level: int, max_level: int) -> int:
    """Payload bits for integer levels [min_level, max_level] (two's complement when signed)."""
    top = max(abs(int(min_level)), abs(int(max_level)), 1)
    return top.bit_length() + (1 if min_level < 0 else 0)


def multispike_spec(theta: np.ndarray, bias: np.ndarray, min_level: int, max_level: int) -> NeuronSpec:
    """The MultiSpikeIF population standing for ``step * clamp(floor(z/step + 1/2), lo, hi)``."""
    theta = np.asarray(theta, dtype=np.float64)
    neuron = MultiSpikeIF(threshold=theta, bias=np.asarray(bias, dtype=np.float64), v_init=theta / 2.0,
                          n_pos=int(max_level), n_neg=int(-min_level))
    payload = ir.SpikePayload(kind="graded", bits=level_bits(min_level, max_level), min_level=int(min_level),
                              max_level=int(max_level))
    return NeuronSpec(neuron=neuron, payload=payload, decode_scale=theta, event_value=theta, nonneg=min_level >= 0)


@register_method("pmsm")
@dataclass
class PMSMMethod(ConversionMethod):
    """Options: untrained ('error' or 'calibrate' plain ReLU layers), levels and percentile (for
    'calibrate': theta = p-th percentile / levels, levels 0..L)."""

    untrained: str = "error"
    levels: int = 8
    percentile: float = 99.9
    _stats: dict = field(default_factory=dict, repr=False)
    _chosen: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.untrained not in UNTRAINED:
            raise ValueError(f"method 'pmsm': untrained {self.untrained!r} must be one of {UNTRAINED}")
        if int(self.levels) != self.levels or not 1 <= self.levels <= 127:
            raise ValueError(f"method 'pmsm': levels {self.levels} must be an integer in 1..127")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"method 'pmsm': percentile {self.percentile} must lie in (0, 100]")

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        relus = [n.name for n in ann.graph.activations() if isinstance(n, G.ReLU)]
        if relus and self.untrained == "calibrate":
            self._stats = calibrate(ann, calib_x, nodes=relus, percentile=min(float(self.percentile), 100.0))

    def activation(self, ctx: ActivationContext) -> NeuronSpec:
        node = ctx.node
        if isinstance(node, G.QuantAct):
            lo, hi, step = int(node.min_level), int(node.max_level), float(node.step)
            if lo > 0 or hi <= 0 or not step > 0:
                raise ConversionError(f"method 'pmsm': QuantAct {node.name!r} has levels [{lo}, {hi}] and step {step}; "
                                      "PMSM needs min_level <= 0 < max_level and step > 0")
            if max(-lo, hi) > 127:
                raise ConversionError(f"method 'pmsm': QuantAct {node.name!r} levels [{lo}, {hi}] exceed |n| <= 127")
            self._chosen[node.name] = {"theta": step, "levels": [lo, hi], "source": "QuantAct"}
            return multispike_spec(np.asarray(step), ctx.bias, lo, hi)
        if isinstance(node, G.ReLU) and self.untrained == "calibrate":
            lam = self._stats[node.name].scale(self.percentile)
            lam = lam if lam > 0 else 1.0
            theta = lam / int(self.levels)
            self._chosen[node.name] = {"theta": theta, "levels": [0, int(self.levels)], "source": f"p{self.percentile:g}"}
            return multispike_spec(np.asarray(theta), ctx.bias, 0, int(self.levels))
        raise ConversionError(f"method 'pmsm': activation {node.name!r} is {node.op}; PMSM converts PQA activations "
                              "(QuantAct nodes): fine-tune first with convert.pmsm.pmsm_finetune(...) (or "
                              "finetune.finetune_for_method(model, 'pmsm', ...)), or pass untrained='calibrate' to map "
                              "plain ReLU layers with a calibrated threshold")

    def calibration_summary(self) -> dict:
        return {name: dict(v) for name, v in self._chosen.items()}

    def own_structure(self, ann: AnnModel) -> bool:
        """A Vision Transformer QANN is built in C2 coding by convert/c2vit.py (PMSM on ViT builds on
        SpikeZIP-TF's framework, methods.md section 4); CNNs go through the shared lowering (C1)."""
        from .finetune_vit import is_transformer
        if is_transformer(ann.graph):
            self.coding = "C2"
            return True
        return False

    def build(self, ann: AnnModel, calib_x: np.ndarray):
        from .c2vit import build_c2
        net, pops, self._chosen = build_c2(ann, "pmsm", calib_x)
        return net, pops


def pmsm_finetune(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 10, levels: int = 8,
                  alpha: float = -0.25, beta: float = 1.0, lam: float = 8.0, lr: float = 1e-3, seed: int = 0,
                  progress: bool = False) -> nn.Module:
    """Swap every ReLU of ``model`` for PQA (levels alpha L..beta L, initial lambda ``lam``) and fine-tune.

    ``model``: an ``nn.Module`` whose ReLUs are modules, or an fx ``GraphModule`` (e.g.
    ``frontend.load_model(model).module``, which also reaches functional ``torch.relu`` calls).
    Returns a new module in eval mode; load it with ``frontend.load_model`` to convert.
    """
    from .activations import pqa_activation, swap_activations
    from .finetune import finetune

    pqa_activation(levels, alpha, beta, lam)  # validates the options before any work
    swapped = swap_activations(model, lambda: pqa_activation(levels, alpha, beta, lam))
    return finetune(swapped, x, y, epochs, lr=lr, seed=seed, progress=progress)


def pqa_reference(z: torch.Tensor | np.ndarray, step: float, min_level: int, max_level: int) -> np.ndarray:
    """PQA in float64 numpy: step * clip(floor(z/step + 1/2), min_level, max_level) (for tests and reports)."""
    z = np.asarray(z, dtype=np.float64)
    return step * np.clip(np.floor(z / step + 0.5), min_level, max_level)


__all__ = ["PMSMMethod", "level_bits", "multispike_spec", "pmsm_finetune", "pqa_reference"]
