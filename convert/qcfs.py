"""``--method qcfs``: quantisation-clip-floor-shift activations -> IF neurons (Bu et al., ICLR 2022).

C1 coding, methods.md section 1. The ANN must have been fine-tuned with the QCFS activation
``h(z) = lambda * clip(floor(L*z/lambda + 1/2)/L, 0, 1)`` (``spikeport finetune --method qcfs``),
which the frontend reads as ``QuantAct(step = lambda/L, 0, L)``. Each QuantAct becomes an IF
population with theta = lambda (= step * max_level), soft reset, v(0) = theta/2 and comparison
``>=``; a spike carries lambda (downstream weights absorb it) and ``decode_scale`` = lambda. With a
constant input z and T = L the spike count is clip(floor(T*z/lambda + 1/2), 0, T): the SNN equals
the quantised ANN layer exactly. QCFS replaces MaxPool by AvgPool (``convert(..., maxpool="avg")``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from .lower import ActivationContext, ConversionError, NeuronSpec
from .registry import ConversionMethod, register_method

FINETUNE_HINT = ("run `spikeport finetune MODEL --method qcfs --train DATA.npz --epochs N --out MODEL_Q.pt2 "
                 "[--levels L]` (or convert.finetune.finetune_for_method in Python) and convert the fine-tuned "
                 "MODEL_Q.pt2")


def check_quant_acts(ann: AnnModel, method: str, signed: bool = False) -> list[G.QuantAct]:
    """Every activation of ``ann`` must be a QuantAct (levels from 0 unless ``signed``); else a
    ConversionError naming the offending nodes and how to fine-tune."""
    acts = ann.graph.activations()
    plain = [f"{n.name!r} ({n.op})" for n in acts if not isinstance(n, G.QuantAct)]
    if plain:
        raise ConversionError(f"method {method!r}: {ann.source} has plain activations {', '.join(plain)}; {method} needs "
                              f"the quantised clip-floor activation learned by fine-tuning: {FINETUNE_HINT.replace('qcfs', method)}")
    if not signed:
        neg = [f"{n.name!r} (levels {n.min_level}..{n.max_level})" for n in acts if n.min_level != 0]
        if neg:
            raise ConversionError(f"method {method!r}: QuantAct node(s) {', '.join(neg)} do not start at level 0; "
                                  "QCFS needs levels 0..L (a signed quantiser needs a signed-spike method such as pmsm)")
    pools = [n.name for n in ann.graph if isinstance(n, G.MaxPool)]
    if pools:
        raise ConversionError(f"method {method!r}: MaxPool node(s) {pools} must become AvgPool as {method} prescribes: "
                              "pass maxpool='avg' to convert (fine-tune with the AvgPool already in place: "
                              "`spikeport finetune` replaces MaxPool before training)")
    return acts


@register_method("qcfs")
@dataclass
class QCFSMethod(ConversionMethod):
    """Options: v_init ('half' = theta/2 as QCFS prescribes, or 'zero'), compare ('>=' or '>')."""

    v_init: str = "half"
    compare: str = ">="
    _lambdas: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.v_init not in ("half", "zero"):
            raise ValueError(f"method 'qcfs': v_init {self.v_init!r} must be 'half' or 'zero'")
        if self.compare not in (">=", ">"):
            raise ValueError(f"method 'qcfs': compare {self.compare!r} must be '>=' or '>'")

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        """No calibration: lambda and L are read from the fine-tuned QuantAct nodes."""
        check_quant_acts(ann, "qcfs")

    def activation(self, ctx: ActivationContext) -> NeuronSpec:
        node = ctx.node
        if not isinstance(node, G.QuantAct):
            raise ConversionError(f"method 'qcfs': node {node.name!r} is {node.op}, not a QuantAct; {FINETUNE_HINT}")
        lam = float(node.step) * int(node.max_level)
        self._lambdas[node.name] = (lam, int(node.max_level))
        theta = np.asarray(lam, np.float64)
        neuron = ir.IF(threshold=theta, bias=ctx.bias.astype(np.float64),
                       v_init=theta / 2.0 if self.v_init == "half" else np.asarray(0.0), reset="subtract",
                       compare=self.compare)
        return NeuronSpec(neuron=neuron, payload=ir.SpikePayload(), decode_scale=theta,
                          event_value=np.full(ctx.shape[0], lam), nonneg=True)

    def calibration_summary(self) -> dict:
        return {name: {"lambda": lam, "levels": levels} for name, (lam, levels) in self._lambdas.items()}
