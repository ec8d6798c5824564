"""``--method aif``: adaptive IF neurons with channel-wise threshold and offset (paper 000; methods.md s. 2).

C1 coding, training-free. Per activation layer and channel c, a threshold theta_c > 0 and an offset
z_c are chosen by a grid search on calibration activations ``a`` (no training), minimising
``(1/N) || (theta/T) clip(floor(T(a - z)/theta), -T, T) + z - a ||_2`` for the target T. Neuron, per
step: ``v_tmp = v + I(t) - z_c``; ``s = +1 if v_tmp >= theta_c, -1 if v_tmp < 0, else 0``;
``v = v_tmp - s*theta_c``; v(0) = 0; decoded ``a_hat = mean_t(s)*theta_c + z_c``. In the IR this is a
signed ``ir.IF`` (neg_threshold = 0, neg_reset = theta_c) with per-channel thresholds; Theta and Z
are folded into the neighbouring parameters: downstream weights absorb Theta (the lowering's
``event_value``), the downstream bias absorbs ``W Z_prev`` (computed here per target neuron, so zero
padding at borders stays exact) and the layer's own ``-z_c`` enters its bias. ``decode_scale`` =
theta, ``decode_offset`` = z.

Ablation (``search``): ``both`` (the paper), ``threshold`` (z = 0, theta searched), ``offset``
(theta = the layer-wise data-normalised lambda, z searched), ``none`` (theta = lambda, z = 0: the
paper's layer-wise baseline on the same signed neuron).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from .calibrate import activation_stats
from .lower import ActivationContext, ConversionError, NeuronSpec, PreAct, Term, default_readout
from .registry import ConversionMethod, register_method

SEARCH_MODES = ("both", "threshold", "offset", "none")
FIT_MODES = ("activation", "input")
SIGMA_SPAN = 6.0  # the paper scans z in [mu - 6 sigma, mu + 6 sigma] and theta in (0, 6 sigma]


# ---------------------------------------------------------------------- the grid search
@dataclass
class GridResult:
    """Per channel: the chosen theta, z, the objective at the optimum, and mu / sigma of the data."""

    theta: np.ndarray
    z: np.ndarray
    loss: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray


def aif_objective(a: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, timesteps: int,
                  inputs: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the last axis of the squared AIF conversion error (broadcasting a, z, theta).

    ``inputs`` (same shape as ``a``): what the neuron integrates, if it differs from the target
    ``a`` (a ReLU layer's neuron sees the pre-activation); None means the neuron sees ``a``.
    """
    t = float(timesteps)
    x = a if inputs is None else inputs
    e = (x - z).mul_(t).div_(theta).floor_().clamp_(-t, t)  # in place: one temporary per chunk
    return e.mul_(theta / t).add_(z).sub_(a).square_().sum(-1)


def candidate_grids(mu: torch.Tensor, sigma: torch.Tensor, n_offset: int, n_threshold: int, search: str,
                    layer_theta: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z candidates (C, Mz), theta candidates (C, Mt)) for each channel.

    z: ``n_offset`` points evenly over [mu - 6 sigma, mu + 6 sigma] (``search`` both/offset) or 0;
    theta: ``n_threshold`` points 6 sigma * k / n_threshold, k = 1..n (both/threshold) or ``layer_theta``.
    """
    c = mu.shape[0]
    if search in ("both", "offset"):
        steps = torch.as_tensor(np.linspace(-SIGMA_SPAN, SIGMA_SPAN, n_offset), dtype=mu.dtype, device=mu.device)
        z = mu[:, None] + sigma[:, None] * steps
    else:
        z = torch.zeros((c, 1), dtype=mu.dtype, device=mu.device)
    if search in ("both", "threshold"):
        k = torch.as_tensor(SIGMA_SPAN * np.arange(1, n_threshold + 1) / n_threshold, dtype=mu.dtype, device=mu.device)
        th = sigma[:, None] * k
    else:
        if layer_theta is None or not layer_theta > 0:
            raise ValueError(f"search={search!r} needs a positive layer-wise theta, got {layer_theta}")
        th = torch.full((c, 1), float(layer_theta), dtype=mu.dtype, device=mu.device)
    return z, th


def grid_search(acts: np.ndarray | torch.Tensor, timesteps: int, n_offset: int = 41, n_threshold: int = 40,
                search: str = "both", layer_theta: float | None = None, chunk_elements: int = 1 << 16,
                device=None, inputs: np.ndarray | torch.Tensor | None = None) -> GridResult:
    """Vectorised AIF grid search over channels and candidates (torch, float64, chunked).

    acts    (C, N) activations of one layer, one row per channel (all samples and positions).
    inputs  optional (C, N) values the neuron integrates (see :func:`aif_objective`); mu and sigma
            (the grid's centre and width) always come from ``acts``.
    Chunks over candidates and samples keep each temporary below ``chunk_elements`` values (small
    chunks stay in the CPU cache: 2^16 float64 values was fastest on CPU; use more on a GPU). Ties are
    broken towards the first candidate (z-major, then theta ascending). A channel with sigma = 0
    (constant) gets z = its value and theta = ``layer_theta`` or 1 (error 0).
    """
    if search not in SEARCH_MODES:
        raise ValueError(f"search={search!r} must be one of {SEARCH_MODES}")
    if search == "none":
        raise ValueError("search='none' has nothing to search (theta = layer lambda, z = 0)")
    if int(timesteps) != timesteps or timesteps < 1:
        raise ValueError(f"AIF grid search: timesteps {timesteps!r} must be a positive integer")
    if n_offset < 1 or n_threshold < 1:
        raise ValueError(f"AIF grid search: grid sizes n_offset={n_offset}, n_threshold={n_threshold} must be >= 1")
    a = torch.as_tensor(acts, dtype=torch.float64).cpu()
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"AIF grid search: activations of shape {tuple(a.shape)}, expected (channels, values >= 1)")
    x = None if inputs is None else torch.as_tensor(inputs, dtype=torch.float64).cpu()
    if x is not None and x.shape != a.shape:
        raise ValueError(f"AIF grid search: inputs of shape {tuple(x.shape)} differ from activations {tuple(a.shape)}")
    c, n = a.shape
    # The grid (mu, sigma, candidates) is computed on the CPU so that every device searches the
    # same candidate values; only the objective runs on ``device``.
    mu = a.mean(1)
    sigma = a.std(1, unbiased=False)
    flat = sigma <= 0
    sig = torch.where(flat, torch.ones_like(sigma), sigma)  # constant channels: grid is ignored below
    zc, tc = candidate_grids(mu, sig, n_offset, n_threshold, search, layer_theta)
    a, zc, tc, mu, flat = (t.to(device) for t in (a, zc, tc, mu, flat))
    x = None if x is None else x.to(device)
    z_all = zc[:, :, None].expand(c, zc.shape[1], tc.shape[1]).reshape(c, -1)
    t_all = tc[:, None, :].expand(c, zc.shape[1], tc.shape[1]).reshape(c, -1)
    m = z_all.shape[1]
    n_chunk = max(1, min(n, chunk_elements // max(1, c)))
    m_chunk = max(1, chunk_elements // max(1, c * n_chunk))
    loss = torch.zeros((c, m), dtype=torch.float64, device=a.device)
    for j in range(0, m, m_chunk):
        zj, tj = z_all[:, j:j + m_chunk, None], t_all[:, j:j + m_chunk, None]
        for i in range(0, n, n_chunk):
            xi = None if x is None else x[:, None, i:i + n_chunk]
            loss[:, j:j + m_chunk] += aif_objective(a[:, None, i:i + n_chunk], zj, tj, timesteps, xi)
    best = loss.argmin(1)
    idx = torch.arange(c, device=a.device)
    theta, z, err = t_all[idx, best], z_all[idx, best], loss[idx, best]
    const_theta = float(layer_theta) if layer_theta else 1.0
    theta = torch.where(flat, torch.full_like(theta, const_theta), theta)
    z = torch.where(flat, mu if search != "threshold" else torch.zeros_like(mu), z)
    err = torch.where(flat, aif_objective(a, z[:, None], theta[:, None], timesteps, x), err)
    return GridResult(theta=theta.cpu().numpy(), z=z.cpu().numpy(), loss=(err.sqrt() / n).cpu().numpy(),
                      mu=mu.cpu().numpy(), sigma=sigma.numpy())


def grid_search_loop(acts: np.ndarray, timesteps: int, n_offset: int = 41, n_threshold: int = 40,
                     search: str = "both", layer_theta: float | None = None, inputs: np.ndarray | None = None) -> GridResult:
    """Straightforward reference: one channel and one candidate at a time (numpy). Same grids and
    tie-breaking as :func:`grid_search`; used by the benchmark and tests to check it."""
    a = np.asarray(acts, dtype=np.float64)
    c, n = a.shape
    t = float(timesteps)
    out = {k: np.zeros(c) for k in ("theta", "z", "loss", "mu", "sigma")}
    xs = a if inputs is None else np.asarray(inputs, dtype=np.float64)
    for ch in range(c):
        row, xrow = a[ch], xs[ch]
        mu, sigma = row.mean(), row.std()
        out["mu"][ch], out["sigma"][ch] = mu, sigma
        if sigma <= 0:
            th = float(layer_theta) if layer_theta else 1.0
            zz = mu if search != "threshold" else 0.0
            cands = [(zz, th)]
        else:
            zs = mu + sigma * np.linspace(-SIGMA_SPAN, SIGMA_SPAN, n_offset) if search in ("both", "offset") else [0.0]
            ths = (sigma * (SIGMA_SPAN * np.arange(1, n_threshold + 1) / n_threshold) if search in ("both", "threshold")
                   else [float(layer_theta)])
            cands = [(zz, th) for zz in zs for th in ths]
        best = (np.inf, 0.0, 0.0)
        for zz, th in cands:
            q = np.clip(np.floor(t * (xrow - zz) / th), -t, t)
            err = float(np.sum(np.square(th / t * q + zz - row)))
            if err < best[0]:
                best = (err, zz, th)
        out["loss"][ch], out["z"][ch], out["theta"][ch] = np.sqrt(best[0]) / n, best[1], best[2]
    return GridResult(**out)


def channel_rows(acts: np.ndarray) -> np.ndarray:
    """(N, C, ...) activations -> (C, N * ...) rows, one per channel."""
    a = np.asarray(acts)
    if a.ndim < 2:
        raise ValueError(f"activations of shape {a.shape} have no channel axis")
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)


# ---------------------------------------------------------------------- folding the offsets
def term_response(term: Term, src_shape: tuple[int, ...], u: np.ndarray, dst_shape: tuple[int, ...]) -> np.ndarray:
    """The current ``term`` delivers to its target (``dst_shape``) when every neuron of source
    channel c emits the constant value ``u[c]`` (exact, zero padding included)."""
    src = torch.as_tensor(ir.expand_channel(np.asarray(u, np.float64), tuple(src_shape)))
    w = torch.as_tensor(np.asarray(term.weight, np.float64))
    if term.kind == "conv2d":
        out = F.conv2d(src[None], w, None, term.stride, term.padding, term.dilation, term.groups)[0]
    elif term.kind == "dense":
        out = w @ src.reshape(-1)
    else:
        out = torch.as_tensor(ir.expand_channel(np.asarray(term.weight, np.float64), tuple(src_shape))) * src
    return out.numpy().reshape(dst_shape)


def compact(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel (C,) when constant over each channel's positions, else the full shape."""
    a = np.asarray(arr, np.float64).reshape(shape)
    rows = a.reshape(shape[0], -1)
    return rows[:, 0].copy() if np.all(rows == rows[:, :1]) else a


# ---------------------------------------------------------------------- the method
def aif_neuron_spec(theta: np.ndarray, z: np.ndarray, bias: np.ndarray, compare: str = ">=") -> NeuronSpec:
    """The signed IF population of one AIF layer: ``bias`` already holds ``b + W Z_prev - z``.

    s = +1 if v >= theta, -1 if v < 0 (neg_threshold 0, strict), soft reset by +-theta, v(0) = 0;
    one event carries theta (event_value, decode_scale) and the decoded value adds z.
    """
    theta = np.asarray(theta, np.float64)
    neuron = ir.IF(threshold=theta.copy(), bias=np.asarray(bias, np.float64), v_init=np.asarray(0.0), reset="subtract",
                   compare=compare, neg_threshold=np.asarray(0.0), neg_reset=theta.copy())
    return NeuronSpec(neuron=neuron, payload=ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1),
                      decode_scale=theta.copy(), event_value=theta.copy(), decode_offset=np.asarray(z, np.float64).copy(),
                      nonneg=False)


@register_method("aif")
@dataclass
class AIFMethod(ConversionMethod):
    """Options: timesteps (required: the T the grid search targets), search (both / threshold / offset /
    none), fit, n_offset x n_threshold grid, max_values (calibration values per channel, seeded
    subsample), percentile (layer-wise lambda for search offset/none), compare, chunk_elements,
    device, seed.

    fit 'activation' (methods.md): the objective quantises the ANN activation a itself.
    fit 'input': it quantises what the neuron integrates, the ANN pre-activation I, against the
    target a = ReLU(I) - the actual conversion error of a ReLU layer, whose AIF neuron (a signed,
    clipped identity) would otherwise pass negative pre-activations on as negative values.
    """

    timesteps: int | None = None
    search: str = "both"
    fit: str = "activation"
    n_offset: int = 41
    n_threshold: int = 40
    max_values: int = 4096
    percentile: float = 99.9
    compare: str = ">="
    chunk_elements: int = 1 << 16
    device: str | None = None
    seed: int = 0
    _params: dict = field(default_factory=dict, repr=False)   # ANN node -> GridResult
    _offsets: dict = field(default_factory=dict, repr=False)  # IR population -> (z, event value, shape)
    _vit: dict = field(default_factory=dict, repr=False)      # ViT: ANN value -> full-shape (theta, z)

    def __post_init__(self) -> None:
        if self.timesteps is None:
            raise ConversionError("method 'aif': the grid search targets one T; pass timesteps=T to convert "
                                  "(CLI: --timesteps T)")
        if int(self.timesteps) != self.timesteps or self.timesteps < 1:
            raise ConversionError(f"method 'aif': timesteps {self.timesteps!r} must be a positive integer")
        if self.search not in SEARCH_MODES:
            raise ConversionError(f"method 'aif': search {self.search!r} must be one of {SEARCH_MODES}")
        if self.fit not in FIT_MODES:
            raise ConversionError(f"method 'aif': fit {self.fit!r} must be one of {FIT_MODES}")
        if self.n_offset < 1 or self.n_threshold < 1:
            raise ConversionError(f"method 'aif': n_offset {self.n_offset} and n_threshold {self.n_threshold} must be >= 1")
        if self.max_values < 1:
            raise ConversionError(f"method 'aif': max_values {self.max_values} must be >= 1")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ConversionError(f"method 'aif': percentile {self.percentile} must lie in (0, 100]")
        if self.compare not in (">=", ">"):
            raise ConversionError(f"method 'aif': compare {self.compare!r} must be '>=' or '>'")

    def _subsample(self, n: int) -> np.ndarray | None:
        """Column indices of at most ``max_values`` values per channel (seeded, sorted), or None for all."""
        if n <= self.max_values:
            return None
        return np.sort(np.random.default_rng(self.seed).choice(n, self.max_values, replace=False))

    def own_structure(self, ann: AnnModel) -> bool:
        """Vision Transformers are built by convert/aif_vit.py (ECMT's placements), CNNs lowered."""
        from .aif_vit import is_transformer
        return is_transformer(ann.graph)

    def build(self, ann: AnnModel, calib_x: np.ndarray) -> tuple[ir.Network, dict]:
        from .aif_vit import build
        return build(self, ann)

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        if self.own_structure(ann):
            from .aif_vit import prepare
            return prepare(self, ann, calib_x)
        nodes = ann.graph.activations()
        quant = [n.name for n in nodes if isinstance(n, G.QuantAct)]
        if quant:
            raise ConversionError(f"method 'aif': {ann.source} has quantised activations (QuantAct) {quant} from "
                                  "conversion-aware fine-tuning; AIF converts ReLU networks without training: use "
                                  "the method the model was fine-tuned for (e.g. 'qcfs')")
        names = [n.name for n in nodes]
        inputs = {n.name: n.inputs[0] for n in nodes}
        record = names + ([inputs[n] for n in names] if self.fit == "input" else [])
        acts = ann.record_activations(calib_x, sorted(set(record)))
        self._params, self._offsets = {}, {}
        t = int(self.timesteps)
        for name in names:
            rows = channel_rows(acts[name])
            xin = channel_rows(acts[inputs[name]]) if self.fit == "input" else None
            if xin is not None and xin.shape != rows.shape:
                raise ConversionError(f"method 'aif': the input of activation {name!r} has {xin.shape} values per "
                                      f"channel, its output {rows.shape}")
            cols = self._subsample(rows.shape[1])
            if cols is not None:
                rows = rows[:, cols]
                xin = None if xin is None else xin[:, cols]
            lam = activation_stats(name, acts[name], min(float(self.percentile), 100.0)).scale(self.percentile)
            lam = lam if lam > 0 else 1.0
            if self.search == "none":
                c = rows.shape[0]
                theta, z = np.full(c, lam), np.zeros(c)
                err = aif_objective(torch.as_tensor(rows, dtype=torch.float64), torch.zeros((c, 1), dtype=torch.float64),
                                    torch.full((c, 1), lam, dtype=torch.float64), t,
                                    None if xin is None else torch.as_tensor(xin, dtype=torch.float64))
                res = GridResult(theta, z, err.sqrt().numpy() / rows.shape[1], rows.mean(1), rows.std(1))
            else:
                res = grid_search(rows, t, self.n_offset, self.n_threshold, self.search, layer_theta=lam,
                                  chunk_elements=self.chunk_elements, device=self.device, inputs=xin)
            self._params[name] = res

    def _offset_bias(self, pre: PreAct, shape: tuple[int, ...]) -> np.ndarray:
        """Sum over the terms from AIF populations of W Z_prev, per target neuron."""
        total = np.zeros(shape)
        for term in pre.terms:
            if term.source in self._offsets:
                z, scale, src_shape = self._offsets[term.source]
                if np.any(z != 0):
                    total += term_response(term, src_shape, z / scale, shape)
        return total

    def activation(self, ctx: ActivationContext) -> NeuronSpec:
        node = ctx.node
        if isinstance(node, G.QuantAct):
            raise ConversionError(f"method 'aif': node {node.name!r} is a QuantAct (a fine-tuned quantised activation); "
                                  "AIF converts ReLU networks without training: use method 'qcfs' for this model")
        if node.name not in self._params:
            raise ConversionError(f"method 'aif': no calibration for activation {node.name!r}")
        res = self._params[node.name]
        shape = tuple(ctx.shape)
        if res.theta.shape[0] != shape[0]:
            raise ConversionError(f"method 'aif': activation {node.name!r} has {res.theta.shape[0]} channels in "
                                  f"calibration, {shape[0]} in the population")
        theta, z = res.theta.astype(np.float64), res.z.astype(np.float64)
        bias = ir.expand_channel(ctx.bias.astype(np.float64), shape) + self._offset_bias(ctx.pre, shape) \
            - ir.expand_channel(z, shape)
        self._offsets[node.name] = (z, theta, shape)
        return aif_neuron_spec(theta, z, compact(bias, shape), self.compare)

    def readout(self, ctx: ActivationContext) -> NeuronSpec:
        spec = default_readout(ctx)
        shape = tuple(ctx.shape)
        extra = self._offset_bias(ctx.pre, shape)
        if np.any(extra != 0):
            bias = ir.expand_channel(ctx.bias.astype(np.float64), shape) + extra
            spec.neuron = ir.Readout(bias=compact(bias, shape))
        return spec

    def calibration_summary(self) -> dict:
        out = {}
        for name, r in self._params.items():
            out[name] = {"theta": [float(v) for v in r.theta], "z": [float(v) for v in r.z],
                         "loss": [float(v) for v in r.loss], "mu": [float(v) for v in r.mu],
                         "sigma": [float(v) for v in r.sigma], "search": self.search, "timesteps": int(self.timesteps)}
        return out
