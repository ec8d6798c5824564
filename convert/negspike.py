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

ReLU layers in the same network get an unsigned IF with the same P_th.

Thresholds come from the calibration percentile (``thresholds='percentile'``, default) or from
learned clip bounds (``thresholds='clip'`` with ``clip_bounds={activation node: (theta_N, theta_P)}``,
made by :func:`train_clip_thresholds`). A clip layer bounds the activation to [theta_N, theta_P], which
is what the SNN represents at its saturating rates (+P_th, -alpha N_th), so P_th = theta_P and, for
setting 'calibrated', N_th = -theta_N / alpha; 'symmetric' / 'ibt' tie theta_N to theta_P (train the
clips with the same ``tie``); 'positive_only' ignores theta_N by definition.

Optional training (the paper's threshold optimisation): :func:`variance_penalty` /
:func:`finetune_variance_penalty` (first stage), then :func:`train_clip_thresholds` (trainable clip
layers with L2 penalty, second stage). Joint layer calibration of the converted SNN with the cosine
schedule (:func:`cosine_layer_weights`) is in ``convert.negspike_calibration``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from .calibrate import ActivationStats, calibrate
from .lower import ActivationContext, ConversionError, NeuronSpec
from .registry import ConversionMethod, register_method

SETTINGS = ("ibt", "symmetric", "calibrated", "positive_only")
V_INIT = ("zero", "half")
THRESHOLDS = ("percentile", "clip")
TIES = ("free", "symmetric", "ibt")
GRADED_BITS = 16  # payload width offered to the quantiser for a non-integer beta (Loihi 2 allows 24)


@register_method("negspike")
@dataclass
class NegSpikeMethod(ConversionMethod):
    """Options: setting ('ibt' | 'symmetric' | 'calibrated' | 'positive_only'), percentile (P_th and the calibrated
    N_th), channelwise (per-channel P_th; ibt/symmetric only), v_init ('zero' per the paper, or
    'half': v(0) = P_th/2, an extension), thresholds ('percentile', or 'clip': P_th / N_th from
    ``clip_bounds``, a dict activation node -> (theta_N, theta_P) covering every activation)."""

    setting: str = "symmetric"
    percentile: float = 99.9
    channelwise: bool = False
    v_init: str = "zero"
    thresholds: str = "percentile"
    clip_bounds: dict | None = None
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
        if self.thresholds not in THRESHOLDS:
            raise ValueError(f"method 'negspike': thresholds {self.thresholds!r} must be one of {THRESHOLDS}")
        if self.thresholds == "clip":
            if not self.clip_bounds:
                raise ValueError("method 'negspike': thresholds='clip' needs clip_bounds={activation node: (theta_N, "
                                 "theta_P)} (see train_clip_thresholds)")
            if self.channelwise:
                raise ValueError("method 'negspike': clip bounds are per layer; channelwise needs thresholds='percentile'")
            self.clip_bounds = {str(k): _check_bounds(k, v) for k, v in self.clip_bounds.items()}
        elif self.clip_bounds is not None:
            raise ValueError("method 'negspike': clip_bounds given but thresholds is 'percentile' (set thresholds='clip' "
                             "to use them)")

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        self._stats = calibrate(ann, calib_x, percentile=min(float(self.percentile), 100.0))
        if self.thresholds == "clip":
            names = [n.name for n in ann.graph.activations()]
            unknown = sorted(set(self.clip_bounds) - set(names))
            missing = [n for n in names if n not in self.clip_bounds]
            if unknown or missing:
                raise ConversionError(f"method 'negspike': clip_bounds name unknown activation node(s) {unknown} and "
                                      f"miss {missing}; the activations of {ann.source} are {names}")

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
        clip = self.clip_bounds[node.name] if self.thresholds == "clip" else None
        p_th = np.asarray(clip[1]) if clip is not None else self._p_th(stats, ctx.shape[0])
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
        n_th = self._n_th(node, stats, p_th) if clip is None else self._clip_n_th(node, clip)
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
        if clip is not None:
            self._chosen[node.name]["clip"] = list(clip)
        return NeuronSpec(neuron=neuron, payload=payload, decode_scale=p_th, event_value=p_th, nonneg=False)

    def _clip_n_th(self, node: G.LeakyReLU, clip: tuple[float, float]) -> np.ndarray:
        """N_th from learned clip bounds: -theta_N / alpha ('calibrated'); the tied settings check that
        theta_N is the value their N_th implies, so a bound is never silently ignored."""
        alpha = float(node.slope)
        theta_n, theta_p = clip
        if self.setting == "calibrated":
            if theta_n == 0.0:
                raise ConversionError(f"method 'negspike': layer {node.name!r}: clip theta_N = 0 gives N_th = 0 (every "
                                      "negative membrane would fire); a LeakyReLU layer needs theta_N < 0")
            return np.asarray(-theta_n / alpha)
        n_th = theta_p if self.setting == "symmetric" else theta_p / alpha
        implied = -alpha * n_th
        if not math.isclose(theta_n, implied, rel_tol=1e-6, abs_tol=1e-12):
            raise ConversionError(f"method 'negspike': layer {node.name!r}: setting {self.setting!r} fixes N_th = {n_th:.6g},"
                                  f" i.e. theta_N = {implied:.6g}, but clip_bounds gives theta_N = {theta_n:.6g}; train the "
                                  f"clips with tie={self.setting!r} or use setting='calibrated'")
        return np.asarray(n_th)

    def calibration_summary(self) -> dict:
        return {name: dict(v) for name, v in self._chosen.items()}


def _check_bounds(name, bounds) -> tuple[float, float]:
    """(theta_N, theta_P) as floats with theta_N < 0 < theta_P (both finite)."""
    try:
        theta_n, theta_p = (float(b) for b in bounds)
    except (TypeError, ValueError) as e:
        raise ValueError(f"method 'negspike': clip_bounds[{name!r}] = {bounds!r} must be a pair (theta_N, theta_P)") from e
    if not (math.isfinite(theta_n) and math.isfinite(theta_p) and theta_n <= 0.0 < theta_p):
        raise ValueError(f"method 'negspike': clip_bounds[{name!r}] = ({theta_n}, {theta_p}) must satisfy "
                         "theta_N <= 0 < theta_P (finite)")
    return theta_n, theta_p


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


# ---------------------------------------------------------------------- trainable clip layers
class ClipBounds(nn.Module):
    """``y = clamp(a, theta_N, theta_P)`` after an activation (Ho & Chang 2021, TCL), bounds trainable.

    tie   'free': theta_N and theta_P are separate parameters; 'symmetric': theta_N = -alpha theta_P
          (N_th = P_th); 'ibt': theta_N = -theta_P (N_th = P_th / alpha); 'relu': theta_N = 0, fixed
          (a ReLU output is never negative). The gradient reaches a bound only through the values it
          clips, so cross-entropy pushes bounds out and the L2 penalty pulls them in.
    """

    def __init__(self, theta_n: float, theta_p: float, alpha: float, tie: str):
        super().__init__()
        if tie not in TIES + ("relu",):
            raise ValueError(f"ClipBounds: tie {tie!r} must be one of {TIES + ('relu',)}")
        if not theta_p > 0.0 or theta_n > 0.0:
            raise ValueError(f"ClipBounds: initial bounds ({theta_n}, {theta_p}) must satisfy theta_N <= 0 < theta_P")
        self.alpha, self.tie = float(alpha), tie
        self.theta_p = nn.Parameter(torch.tensor(float(theta_p)))
        self.theta_n_free = nn.Parameter(torch.tensor(float(theta_n)), requires_grad=tie == "free")

    def theta_n(self) -> torch.Tensor:
        if self.tie == "free":
            return self.theta_n_free
        if self.tie == "relu":
            return torch.zeros_like(self.theta_p)
        return -self.theta_p * (self.alpha if self.tie == "symmetric" else 1.0)

    def bounds(self) -> tuple[float, float]:
        return float(self.theta_n().detach()), float(self.theta_p.detach())

    def penalty(self) -> torch.Tensor:
        """|theta_P|^2 + |theta_N|^2 (paper eq. 24, one layer)."""
        return self.theta_p ** 2 + self.theta_n() ** 2

    @torch.no_grad()
    def keep_ordered(self, floor: float) -> None:
        """Projection after each step: theta_P >= floor > 0 and theta_N <= -floor (free)."""
        self.theta_p.clamp_(min=floor)
        self.theta_n_free.clamp_(max=-floor)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(a, self.theta_n().to(a.dtype)), self.theta_p.to(a.dtype))

    def extra_repr(self) -> str:
        n, p = self.bounds()
        return f"theta_N={n:.4g}, theta_P={p:.4g}, tie={self.tie}"


@dataclass
class ClipResult:
    """What :func:`train_clip_thresholds` returns.

    ann      the fine-tuned ANN without clip layers (convert this one: weights changed with the clips)
    bounds   {activation node: (theta_N, theta_P)}, pass as ``clip_bounds`` with ``thresholds='clip'``
    clipped  the fx module with the clip layers (its accuracy is what the SNN approaches at large T)
    history  per epoch: {"loss", "penalty"} means
    """

    ann: AnnModel
    bounds: dict[str, tuple[float, float]]
    clipped: fx.GraphModule
    history: list[dict] = field(default_factory=list)


def insert_clip_layers(ann: AnnModel, x: np.ndarray, tie: str = "free", percentile: float = 99.9
                       ) -> tuple[fx.GraphModule, dict[str, ClipBounds]]:
    """A copy of ``ann.module`` with a :class:`ClipBounds` after every ReLU / LeakyReLU node, initialised
    to the calibration percentiles of ``x`` (theta_P: positive values, theta_N: |negative| values).

    Returns the module and {activation node name: its ClipBounds}."""
    if tie not in TIES:
        raise ValueError(f"insert_clip_layers: tie {tie!r} must be one of {TIES}")
    acts = [n for n in ann.graph.activations()]
    bad = [f"{n.name} ({n.op})" for n in acts if not isinstance(n, (G.ReLU, G.LeakyReLU))]
    if bad or not acts:
        raise ValueError(f"insert_clip_layers: {ann.source} needs ReLU / LeakyReLU activations only; found {bad or 'none'}")
    stats = calibrate(ann, x, percentile=percentile)
    gm = copy.deepcopy(ann.module)
    nodes = {n.name: n for n in gm.graph.nodes}
    clips: dict[str, ClipBounds] = {}
    for i, node in enumerate(acts):
        st = stats[node.name]
        theta_p = st.scale(percentile) if st.scale(percentile) > 0 else 1.0
        leaky = isinstance(node, G.LeakyReLU)
        alpha = float(node.slope) if leaky else 1.0
        if not leaky:
            clip = ClipBounds(0.0, theta_p, 1.0, "relu")
        elif tie == "free":
            neg = st.neg_percentile if percentile < 100.0 else -min(st.min, 0.0)
            clip = ClipBounds(-(neg if neg > 0 else alpha * theta_p), theta_p, alpha, tie)
        else:
            clip = ClipBounds(-theta_p * (alpha if tie == "symmetric" else 1.0), theta_p, alpha, tie)
        sub = f"negspike_clip_{i}"
        while hasattr(gm, sub):
            sub += "_"
        gm.add_submodule(sub, clip)
        fx_node = nodes[node.name]
        with gm.graph.inserting_after(fx_node):
            new = gm.graph.call_module(sub, (fx_node,))
        fx_node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
        clips[node.name] = clip
    gm.graph.lint()
    gm.recompile()
    return gm, clips


def train_clip_thresholds(ann: AnnModel, x: np.ndarray, y: np.ndarray, epochs: int = 5, lr: float = 1e-3,
                          l2: float = 1e-3, clip_lr: float = 1e-2, tie: str = "free", train_weights: bool = True, percentile: float = 99.9,
                          batch_size: int = 64, seed: int = 0) -> ClipResult:
    """Second stage of the paper's threshold optimisation: clip layers after the activations, trained
    with cross-entropy + ``l2`` * sum_l (theta_P^2 + theta_N^2) (eq. 24), Adam at ``lr`` for the weights
    and ``clip_lr`` for the bounds (bounds are O(activation) in size, weights O(0.1): one rate fits neither).

    ``train_weights`` also fine-tunes the network's weights (TCL trains both); the returned
    ``ClipResult.ann`` is the clip-free ANN with those weights, ready for ``convert(...,
    method='negspike', thresholds='clip', clip_bounds=result.bounds, setting=...)`` (use
    setting='calibrated' with tie='free', or the setting named by ``tie``). ``ann`` is not modified.
    Deterministic from ``seed`` on CPU.
    """
    from ..frontend import load_model

    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"train_clip_thresholds: epochs {epochs!r} must be a non-negative integer")
    if not l2 >= 0.0 or not lr > 0.0 or not clip_lr > 0.0:
        raise ValueError(f"train_clip_thresholds: l2 {l2} must be >= 0, lr {lr} and clip_lr {clip_lr} > 0")
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if len(xt) != len(yt) or len(xt) == 0:
        raise ValueError(f"train_clip_thresholds: {len(xt)} samples but {len(yt)} labels")
    gm, clips = insert_clip_layers(ann, np.asarray(x, dtype=np.float32), tie, percentile)
    floors = {name: 1e-3 * c.bounds()[1] for name, c in clips.items()}
    dev = ann.device
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    clip_params = {id(p) for c in clips.values() for p in c.parameters()}
    weights = [p for p in gm.parameters() if p.requires_grad and id(p) not in clip_params] if train_weights else []
    bounds = [p for c in clips.values() for p in c.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": bounds, "lr": clip_lr}] + ([{"params": weights, "lr": lr}] if weights else []))
    loss_fn = nn.CrossEntropyLoss()
    history = []
    for _ in range(int(epochs)):
        gm.train()
        order = torch.randperm(len(xt), generator=gen)
        tot, pen_tot, n_b = 0.0, 0.0, 0
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(gm(xt[idx].to(dev)), yt[idx].to(dev))
            pen = sum(c.penalty() for c in clips.values())
            (loss + l2 * pen).backward()
            opt.step()
            for name, c in clips.items():
                c.keep_ordered(floors[name])
            tot, pen_tot, n_b = tot + float(loss.detach()), pen_tot + float(pen.detach()), n_b + 1
        history.append({"loss": tot / n_b, "penalty": pen_tot / n_b})
    gm.eval()
    plain = copy.deepcopy(ann.module)
    state = {k: v for k, v in gm.state_dict().items() if not any(k.startswith(f"{s}.") for s in _clip_names(gm))}
    plain.load_state_dict(state)
    tuned = load_model(plain.eval(), input_shape=ann.input_shape)
    before = [n.name for n in ann.graph.activations()]
    after = [n.name for n in tuned.graph.activations()]
    if before != after:
        raise RuntimeError(f"train_clip_thresholds: re-loading renamed the activations {before} -> {after}")
    return ClipResult(ann=tuned, bounds={name: c.bounds() for name, c in clips.items()}, clipped=gm, history=history)


def _clip_names(gm: nn.Module) -> list[str]:
    return [name for name, m in gm.named_children() if isinstance(m, ClipBounds)]


def cosine_layer_weights(n_layers: int, progress: float) -> np.ndarray:
    """Joint-calibration layer weights phi_l(p) = cos(pi/2 (l/L - p)), l = 1..L, normalised to sum 1.

    The schedule of paper eq. 26-27; ``convert.negspike_calibration.joint_calibrate`` uses it."""
    if n_layers < 1 or not 0.0 <= progress <= 1.0:
        raise ValueError(f"cosine_layer_weights: n_layers {n_layers} must be >= 1 and progress {progress} in [0, 1]")
    l = np.arange(1, n_layers + 1) / n_layers
    phi = np.cos(math.pi / 2 * (l - progress))
    return phi / phi.sum()


__all__ = ["ClipBounds", "ClipResult", "NegSpikeMethod", "bn_before_activations", "cosine_layer_weights",
           "finetune_variance_penalty", "insert_clip_layers", "train_clip_thresholds", "variance_penalty"]
