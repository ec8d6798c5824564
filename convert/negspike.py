"""``--method negspike``: negative spikes for Leaky-ReLU networks (paper 004; methods.md section 6), C1.

Each LeakyReLU(alpha) becomes a signed ``ir.IF`` (which expresses the neuron exactly)::

    v_tmp = v + W p_prev + beta_prev W n_prev + b     (v(0) = 0)
    p = 1  if v_tmp >  P_th      -> v = v_tmp - P_th      (compare '>', strict)
    n = -1 if v_tmp < -N_th      -> v = v_tmp + N_th      (neg_threshold = neg_reset = N_th)
    beta = alpha * N_th / P_th   (payload.neg_value of the EMITTING population)

A +1 event stands for the ANN value P_th (downstream weights absorb it: ``event_value``); a -1 event
for -alpha N_th = -beta P_th, so the payload carries ``neg_value = beta``. P_th is the p-th percentile
of the layer's positive calibration activations. Settings for N_th:

* ``ibt``        N_th = P_th / alpha (Kim et al. 2020): beta = 1, but negative spikes are 1/alpha
                 times rarer, so it needs long T.
* ``symmetric``  N_th = P_th: beta = alpha; the quantiser carries the non-integer beta as graded
                 event levels (``compiler.quantize``: +1 -> P, -1 -> -Nq with Nq/P ~ beta).
* ``calibrated`` N_th = (p-th percentile of |negative activations|) / alpha, i.e. the threshold that
                 covers the negative side's own range (per layer).
* ``positive_only`` the baseline without negative spikes: an unsigned IF (same P_th, '>', v(0) = 0),
                 i.e. what data-normalised IF does to a LeakyReLU layer (its negative part is lost).

ReLU layers in the same network get an unsigned IF with the same P_th. Optional ANN training:
:func:`variance_penalty` / :func:`finetune_variance_penalty` (the paper's threshold optimisation,
first stage). The trainable clip layers with L2 penalty and the joint layer calibration with the
cosine schedule are NOT implemented (see :func:`cosine_layer_weights` for the schedule only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from .calibrate import ActivationStats, calibrate
from .lower import ActivationContext, ConversionError, NeuronSpec
from .registry import ConversionMethod, register_method

SETTINGS = ("ibt", "symmetric", "calibrated", "positive_only")
V_INIT = ("zero", "half")
GRADED_BITS = 16  # payload width offered to the quantiser for a non-integer beta (Loihi 2 allows 24)


@register_method("negspike")
@dataclass
class NegSpikeMethod(ConversionMethod):
    """Options: setting ('ibt' | 'symmetric' | 'calibrated' | 'positive_only'), percentile (P_th and the calibrated
    N_th), channelwise (per-channel P_th; ibt/symmetric only), v_init ('zero' per the paper, or
    'half': v(0) = P_th/2, an extension)."""

    setting: str = "symmetric"
    percentile: float = 99.9
    channelwise: bool = False
    v_init: str = "zero"
    _stats: dict = field(default_factory=dict, repr=False)
    _chosen: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"method 'negspike': setting {self.setting!r} must be one of {SETTINGS}")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"method 'negspike': percentile {self.percentile} must lie in (0, 100]")
        if self.channelwise and self.setting == "calibrated":
            raise ValueError("method 'negspike': channelwise thresholds need setting 'ibt' or 'symmetric' (beta must be "
                             "one number per layer: it is the payload's neg_value)")
        if self.v_init not in V_INIT:
            raise ValueError(f"method 'negspike': v_init {self.v_init!r} must be one of {V_INIT}")

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        self._stats = calibrate(ann, calib_x, percentile=min(float(self.percentile), 100.0))

    def _p_th(self, stats: ActivationStats, channels: int) -> np.ndarray:
        layer = stats.scale(self.percentile)
        layer = layer if layer > 0 else 1.0
        if not self.channelwise:
            return np.asarray(layer)
        ch = stats.channel_max if self.percentile >= 100.0 else stats.channel_percentile
        if ch.shape[0] != channels:
            raise ConversionError(f"method 'negspike': layer {stats.name!r} has {ch.shape[0]} channels in calibration, "
                                  f"{channels} in the population")
        return np.where(ch > 0, ch, layer)

    def _n_th(self, node: G.LeakyReLU, stats: ActivationStats, p_th: np.ndarray) -> np.ndarray:
        alpha = float(node.slope)
        if self.setting == "ibt":
            return p_th / alpha
        if self.setting == "symmetric":
            return p_th.copy()
        neg = stats.neg_percentile if self.percentile < 100.0 else -min(stats.min, 0.0)
        return np.asarray(neg / alpha if neg > 0 else float(p_th))

    def activation(self, ctx: ActivationContext) -> NeuronSpec:
        node = ctx.node
        if node.name not in self._stats:
            raise ConversionError(f"method 'negspike': no calibration statistics for activation {node.name!r}")
        if not isinstance(node, (G.ReLU, G.LeakyReLU)):
            raise ConversionError(f"method 'negspike': activation {node.name!r} is {node.op}; NegSpike converts "
                                  "LeakyReLU (and ReLU) layers")
        stats = self._stats[node.name]
        p_th = self._p_th(stats, ctx.shape[0])
        v0 = p_th / 2.0 if self.v_init == "half" else np.zeros_like(p_th)
        bias = ctx.bias.astype(np.float64)
        if isinstance(node, G.ReLU) or self.setting == "positive_only":
            neuron = ir.IF(threshold=p_th, bias=bias, v_init=v0, reset="subtract", compare=">")
            self._chosen[node.name] = {"P_th": _listify(p_th)}
            return NeuronSpec(neuron=neuron, payload=ir.SpikePayload(), decode_scale=p_th, event_value=p_th, nonneg=True)
        alpha = float(node.slope)
        if not 0.0 < alpha:
            raise ConversionError(f"method 'negspike': LeakyReLU {node.name!r} slope {alpha} must be > 0 (negative spikes "
                                  "stand for alpha * N_th)")
        n_th = self._n_th(node, stats, p_th)
        ratio = np.asarray(alpha * n_th / p_th)
        if not np.allclose(ratio, ratio.reshape(-1)[0], rtol=1e-12, atol=0):
            raise ConversionError(f"method 'negspike': layer {node.name!r}: beta = alpha N_th / P_th varies by channel")
        beta = float(ratio.reshape(-1)[0])
        if self.setting == "ibt" or abs(beta - 1.0) < 1e-12:
            beta = 1.0   # IBT: exactly one (binary-signed payload on every datapath)
            payload = ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1, neg_value=1.0)
        else:        # a graded payload lets the quantiser carry beta as integer levels
            payload = ir.SpikePayload(kind="graded", bits=GRADED_BITS, min_level=-1, max_level=1, neg_value=beta)
        neuron = ir.IF(threshold=p_th, bias=bias, v_init=v0, reset="subtract", compare=">",
                       neg_threshold=np.asarray(n_th, dtype=np.float64), neg_reset=np.asarray(n_th, dtype=np.float64))
        self._chosen[node.name] = {"alpha": alpha, "P_th": _listify(p_th), "N_th": _listify(n_th), "beta": beta}
        return NeuronSpec(neuron=neuron, payload=payload, decode_scale=p_th, event_value=p_th, nonneg=False)

    def calibration_summary(self) -> dict:
        return {name: dict(v) for name, v in self._chosen.items()}


def _listify(a) -> float | list[float]:
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else [float(v) for v in a]


# ---------------------------------------------------------------------- threshold optimisation
def bn_before_activations(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm modules of ``model`` (the ones whose (gamma, beta) describe a pre-activation)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]


def variance_penalty(model: nn.Module, eps: float = 1e-3) -> torch.Tensor:
    """Paper eq. (23) from BN parameters: sum over BN layers of mean_c sigma_c^3 / (|m_c| + eps)^3,
    sigma_c = |gamma_c| (BN weight: the std of the pre-activation), m_c = beta_c (BN bias: its mean).

    The paper writes one penalty per activation; averaging over channels keeps layers comparable."""
    bns = bn_before_activations(model)
    if not bns:
        raise ValueError("variance_penalty: the model has no affine BatchNorm layer (the penalty reads sigma and m "
                         "from BN parameters)")
    total = None
    for bn in bns:
        term = (bn.weight.abs() ** 3 / (bn.bias.abs() + eps) ** 3).mean()
        total = term if total is None else total + term
    return total


def finetune_variance_penalty(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 5, lr: float = 1e-3,
                              batch_size: int = 64, seed: int = 0, eps: float = 1e-3, ratio: float = 0.1) -> nn.Module:
    """Fine-tune ``model`` in place with loss + lambda1 * penalty, lambda1 = ratio * |loss| / penalty (detached).

    The adaptive weight keeps the penalty at ``ratio`` of the task loss each step (paper section 5.1).
    Deterministic from ``seed``; returns the model in eval mode.
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"finetune_variance_penalty: epochs {epochs!r} must be a non-negative integer")
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if len(xt) != len(yt) or len(xt) == 0:
        raise ValueError(f"finetune_variance_penalty: {len(xt)} samples but {len(yt)} labels")
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx].to(dev)), yt[idx].to(dev))
            pen = variance_penalty(model, eps)
            lam1 = (ratio * loss.detach().abs() / pen.detach().clamp_min(1e-12))
            (loss + lam1 * pen).backward()
            opt.step()
    return model.eval()


def cosine_layer_weights(n_layers: int, progress: float) -> np.ndarray:
    """Joint-calibration layer weights phi_l(p) = cos(pi/2 (l/L - p)), l = 1..L, normalised to sum 1.

    Only the schedule (paper eq. 26-27); the BPTT joint calibration itself is not implemented."""
    if n_layers < 1 or not 0.0 <= progress <= 1.0:
        raise ValueError(f"cosine_layer_weights: n_layers {n_layers} must be >= 1 and progress {progress} in [0, 1]")
    l = np.arange(1, n_layers + 1) / n_layers
    phi = np.cos(math.pi / 2 * (l - progress))
    return phi / phi.sum()


__all__ = ["NegSpikeMethod", "bn_before_activations", "cosine_layer_weights", "finetune_variance_penalty",
           "variance_penalty"]
