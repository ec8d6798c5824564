"""``--method if``: integrate-and-fire with data-based normalisation (Diehl 2015, Rueckauer 2017).

C1 coding, methods.md section 1. Per activation layer l, lambda_l is the p-th percentile (default
99.9) of the layer's positive ANN activations on calibration data (or the max with
``percentile=100``), per layer or per channel. We keep W and set theta_l = lambda_l with each spike
carrying lambda_l: the membrane is in ANN units, downstream weights absorb the presynaptic lambda
(W' = W * lambda_prev, done by the lowering through ``event_value``) and ``decode_scale`` = lambda_l.
The bias is added every step. Soft reset (v -= theta) by default, ``reset="zero"`` optional;
comparison ``>=`` or ``>``; v(0) = 0 or theta/2 (``v_init="half"``).

``neuron="lava-lif"`` emits :class:`~spikeport.ir.neurons_extra.LavaLIF` populations: Lava's own LIF
semantics (reset to zero, strict '>', v(0) = 0, updated at every step of the run), so the Loihi 2
backend runs them with ``lava.proc.lif.LIF`` itself rather than a spikeport process. It implies
reset="zero", compare=">", v_init="zero"; asking for other values of those is an error.

``preset="netx"`` makes a network that lava-dl's netx holds exactly (docs/loihi2.md, "netx export"):
``neuron="lava-lif"`` everywhere, one threshold per layer (no ``channelwise``), and the final linear
layer becomes a spiking LavaLIF layer too (netx chains hold only LIF layers; no Readout), with
theta = the percentile of its positive calibration logits; the prediction is the argmax of its
spike counts (ties go to the lowest class). The quantiser sees ``meta["options"]["preset"]`` and
keeps the bias acting during the pipeline fill (netx has no v_init to cancel it) and writes every
bias with exponent 6 (netx's fixed bias_exp).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..ir.neurons_extra import LavaLIF
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from .calibrate import ActivationStats, calibrate
from .lower import ActivationContext, ConversionError, NeuronSpec
from .registry import ConversionMethod, register_method

V_INIT = ("zero", "half")
NEURONS = ("if", "lava-lif")
PRESETS = ("netx",)
_LAVA_LIF = {"reset": "zero", "compare": ">", "v_init": "zero"}
_DEFAULTS = {"reset": "subtract", "compare": ">=", "v_init": "half"}


@register_method("if")
@dataclass
class IFMethod(ConversionMethod):
    """Options: percentile (100 = max), channelwise, reset, compare, v_init, neuron ('if' | 'lava-lif')."""

    percentile: float = 99.9
    channelwise: bool = False
    reset: str | None = None       # default 'subtract' ('zero' with neuron=lava-lif)
    compare: str | None = None     # default '>=' ('>' with neuron=lava-lif)
    v_init: str | None = None      # default 'half' ('zero' with neuron=lava-lif)
    neuron: str = "if"
    preset: str | None = None      # 'netx': lava-lif, spiking output layer, netx-exact quantisation
    _stats: dict = field(default_factory=dict, repr=False)
    _logits: str = field(default="", repr=False)
    _lambdas: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"method 'if': preset {self.preset!r} must be one of {PRESETS}")
            if self.channelwise:
                raise ValueError("method 'if': preset='netx' needs one threshold per layer (netx vThMant); "
                                 "channelwise=true contradicts it")
            self.neuron = "lava-lif"
        if self.neuron not in NEURONS:
            raise ValueError(f"method 'if': neuron {self.neuron!r} must be one of {NEURONS}")
        implied = _LAVA_LIF if self.neuron == "lava-lif" else _DEFAULTS
        for name, value in implied.items():
            given = getattr(self, name)
            if given is None:
                setattr(self, name, value)
            elif self.neuron == "lava-lif" and given != value:
                raise ValueError(f"method 'if': neuron='lava-lif' is Lava's LIF ({name}={value!r}); {name}={given!r} "
                                 "contradicts it")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"method 'if': percentile {self.percentile} must lie in (0, 100]")
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"method 'if': reset {self.reset!r} must be 'subtract' or 'zero'")
        if self.compare not in (">=", ">"):
            raise ValueError(f"method 'if': compare {self.compare!r} must be '>=' or '>'")
        if self.v_init not in V_INIT:
            raise ValueError(f"method 'if': v_init {self.v_init!r} must be one of {V_INIT}")

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        nodes = [n.name for n in ann.graph.activations()]
        if self.preset == "netx":   # the logits get a threshold too: the output layer spikes
            self._logits = ann.graph.output.inputs[0]
            nodes.append(self._logits)
        self._stats = calibrate(ann, calib_x, nodes=nodes, percentile=min(float(self.percentile), 100.0))

    def readout(self, ctx: ActivationContext) -> NeuronSpec:
        """Readout (default) or, with preset='netx', a spiking LavaLIF layer read by its spike counts."""
        if self.preset != "netx":
            return super().readout(ctx)
        stats = self._stats.get(self._logits)
        if stats is None:
            raise ConversionError(f"method 'if': preset='netx': no calibration statistics for the output "
                                  f"{ctx.node.name!r}")
        lam = self._lambda(stats, ctx.shape[0])
        self._lambdas[stats.name] = lam
        theta = np.asarray(lam[0])
        neuron = LavaLIF(threshold=np.asarray(theta, np.float64), bias=ctx.bias.astype(np.float64),
                         v_init=np.zeros_like(theta, dtype=np.float64))
        return NeuronSpec(neuron=neuron, payload=ir.SpikePayload(), decode_scale=np.asarray(theta, np.float64),
                          event_value=lam, nonneg=True)

    def _lambda(self, stats: ActivationStats, channels: int) -> np.ndarray:
        """Per-channel lambda (C,), using the layer figure where a channel never fired."""
        layer = stats.scale(self.percentile)
        if layer <= 0.0:
            layer = 1.0  # dead layer: any positive threshold gives the same (zero) output
        if not self.channelwise:
            return np.full(channels, layer)
        ch = stats.channel_max if self.percentile >= 100.0 else stats.channel_percentile
        if ch.shape[0] != channels:
            raise ConversionError(f"method 'if': layer {stats.name!r} has {ch.shape[0]} channels in calibration, "
                                  f"{channels} in the population")
        return np.where(ch > 0, ch, layer)

    def activation(self, ctx: ActivationContext) -> NeuronSpec:
        node = ctx.node
        if isinstance(node, G.LeakyReLU):
            raise ConversionError(f"method 'if': node {node.name!r} is LeakyReLU(slope={node.slope}); IF neurons emit only "
                                  "positive spikes and cannot represent its negative part: use a signed-spike method")
        if isinstance(node, G.QuantAct) and node.min_level < 0:
            raise ConversionError(f"method 'if': node {node.name!r} is a signed quantised activation (levels "
                                  f"{node.min_level}..{node.max_level}); IF neurons cannot represent negative levels: "
                                  "use --method pmsm")
        if node.name not in self._stats:
            raise ConversionError(f"method 'if': no calibration statistics for activation {node.name!r}")
        c = ctx.shape[0]
        lam = self._lambda(self._stats[node.name], c)
        self._lambdas[node.name] = lam
        theta = lam if self.channelwise else np.asarray(lam[0])
        model = LavaLIF if self.neuron == "lava-lif" else ir.IF
        neuron = model(threshold=np.asarray(theta, np.float64), bias=ctx.bias.astype(np.float64),
                       v_init=np.asarray(theta / 2.0 if self.v_init == "half" else np.zeros_like(theta), np.float64),
                       reset=self.reset, compare=self.compare)
        return NeuronSpec(neuron=neuron, payload=ir.SpikePayload(), decode_scale=np.asarray(theta, np.float64),
                          event_value=lam, nonneg=True)

    def calibration_summary(self) -> dict:
        out = {}
        for name, lam in self._lambdas.items():
            s = self._stats[name]
            out[name] = {"lambda": float(lam[0]) if not self.channelwise else [float(v) for v in lam],
                         "max": s.max, f"p{s.p:g}": s.percentile, "positive_fraction": s.positive_fraction}
        return out
