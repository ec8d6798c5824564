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

import math
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


def _exact_error(row: np.ndarray, xrow: np.ndarray, z: float, theta: float, t: float) -> float:
    """The objective of one channel and candidate, summed in numpy exactly as the reference loop does
    (the grid search's last word: both paths pick their optimum by this value)."""
    q = np.clip(np.floor(t * (xrow - z) / theta), -t, t)
    return float(np.sum(np.square(theta / t * q + z - row)))


def _row_stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma per row with numpy's own row reductions (the loop's values, bit for bit)."""
    return (np.array([r.mean() for r in a], dtype=np.float64).reshape(-1),
            np.array([r.std() for r in a], dtype=np.float64).reshape(-1))


# ---------------------------------------------------------------------- the closed form over boundary tables
@dataclass(frozen=True)
class BoundaryLayout:
    """Where each candidate's 2T level boundaries sit in a per-channel table of points.

    Candidate c = i * n_j + (j - 1) (i < n_i, 1 <= j <= n_j: z-major, the loop's order) has boundary
    k (-T < k <= T), the smallest x with level q(x) = clip(floor(T(x - z)/theta), -T, T) >= k, near
    the table point of row
        r(i, j, k) = r0 + i * a + k * j * b,
    so a candidate's boundaries are one arithmetic progression of rows (stride j b) and all
    candidates of one j a strided view of the table. ``lattice`` (search both / threshold): every
    boundary z_i + k theta_j / T of the grid equals, in exact arithmetic, origin + (row + first) h
    with h = 6 sigma / D, D = lcm(n_offset - 1, T n_threshold) (origin mu; 0 and D = T n_threshold
    for search threshold), so the table holds ``rows`` lattice points for all n_i * n_j candidates.
    Otherwise (search offset, or a lattice larger than the boundaries themselves) the table holds the
    boundaries of a slice of candidates directly (n_j = 1, a = 2T, b = 1, r0 = T - 1).
    """

    lattice: bool
    n_i: int
    n_j: int
    a: int
    b: int
    r0: int
    rows: int
    first: int = 0
    denom: int = 1


def boundary_layout(search: str, n_offset: int, n_threshold: int, timesteps: int, n_direct: int) -> BoundaryLayout:
    """The lattice layout of the grid when it is no larger than the boundaries it replaces, else the
    direct layout for ``n_direct`` candidates."""
    T, K = int(timesteps), 2 * int(timesteps)
    direct = BoundaryLayout(False, n_direct, 1, K, 1, T - 1, n_direct * K)
    if search not in ("both", "threshold"):
        return direct
    mt = n_threshold
    if search == "both" and n_offset > 1:
        denom = math.lcm(n_offset - 1, T * mt)
        n_i, a, first_z = n_offset, 2 * denom // (n_offset - 1), -denom       # z_i = mu + (-D + i a) h
    else:                                # one offset: mu - 6 sigma (both) or 0 (threshold)
        denom = T * mt
        n_i, a, first_z = 1, 0, (-denom if search == "both" else 0)
    b = denom // (T * mt)                                                     # theta_j / T = j b h
    lo = first_z + (1 - T) * mt * b
    hi = first_z + (n_i - 1) * a + T * mt * b
    rows = hi - lo + 1
    if rows > n_i * mt * K:
        return direct
    return BoundaryLayout(True, n_i, mt, a, b, first_z - lo, rows, first=lo, denom=denom)


def _boundary_table(xs: torch.Tensor, prefix: torch.Tensor, points: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """(rows, 4 C) table over points (C, rows): columns [J, row * J, P, A] per channel, where J = the
    number of values below the point, P = the sum of the targets there (``prefix`` in sorted order),
    A = 1 where a value lies within ``delta`` of the point (its side in the loop's float expression is
    not certain), else 0. Outside those windows J counts exactly the values below every boundary that
    rounds to the point."""
    c, n = xs.shape
    lo = torch.searchsorted(xs, points - delta[:, None])                 # values below the window
    nxt = xs.gather(1, lo.clamp(max=n - 1))                               # the first value at or above it
    amb = (lo < n) & (nxt <= points + delta[:, None])
    j = lo.to(torch.float64)
    row = torch.arange(points.shape[1], device=xs.device, dtype=torch.float64)
    table = torch.empty((points.shape[1], 4 * c), dtype=torch.float64, device=xs.device)
    for col, val in enumerate((j, j * row, prefix.gather(1, lo), amb.to(torch.float64))):
        table[:, col * c:(col + 1) * c] = val.t()
    return table


def _progression_sums(table: torch.Tensor, layout: BoundaryLayout, timesteps: int) -> torch.Tensor:
    """(n_i n_j, R): for every candidate the sum of its 2T boundary rows of ``table`` (rows, R), one
    strided view and one reduction per j (no index tensors, no gathers)."""
    T, K = int(timesteps), 2 * int(timesteps)
    r = table.shape[1]
    out = torch.empty((layout.n_i, layout.n_j, r), dtype=table.dtype, device=table.device)
    for j in range(1, layout.n_j + 1):
        step = j * layout.b
        view = table.as_strided((layout.n_i, K, r), (layout.a * r, step * r, 1), (layout.r0 + (1 - T) * step) * r)
        out[:, j - 1] = view.sum(1)
    return out.reshape(-1, r)


def _table_losses(table: torch.Tensor, layout: BoundaryLayout, n: int, sums, z: torch.Tensor, th: torch.Tensor,
                  timesteps: int):
    """(loss, bound, reliable) per channel (C, m) and candidate from a boundary table (C channels).

    With j_k the number of values whose level is below k (-T < k <= T), q_i = -T + #{k: i >= j_k} in
    sorted order, so
        Q1 = sum q = T N - sum_k j_k,   Q2 = sum q^2 = N T^2 - 2 sum_k k j_k + sum_k j_k,
        QA = sum q a = T sum a - sum_k P[j_k],
        L = (theta/T)^2 Q2 + 2 z (theta/T) Q1 + N z^2 - 2 (theta/T) QA - 2 z sum a + sum a^2
    = sum_i ((theta/T) q_i + z - a_i)^2. sum_k k j_k = (sum_k row j - row(k = 0) sum_k j) / stride,
    all integers below 2^53, so Q1, Q2 are exact. ``bound`` (:func:`_rounding_bound`) bounds |L - the
    loop's float sum|; ``reliable`` is False where a boundary's side of some value is not certain.
    """
    c = table.shape[1] // 4
    t, T = float(timesteps), int(timesteps)
    a_sum, a2_sum, abs_sum = sums
    s = _progression_sums(table, layout, T).t()                       # (4 C, m)
    sj, snj, sp, amb = s[:c], s[c:2 * c], s[2 * c:3 * c], s[3 * c:]
    cand = torch.arange(s.shape[1], device=table.device)
    i, j = cand // layout.n_j, cand % layout.n_j + 1
    row0 = (layout.r0 + i * layout.a).to(torch.float64)
    skj = (snj - row0 * sj) / (j * layout.b).to(torch.float64)
    q1 = t * n - sj
    q2 = n * t * t - 2.0 * skj + sj
    qa = t * a_sum[:, None] - sp
    step = th / t
    loss = (step * step * q2 + 2.0 * z * step * q1 + n * z * z - 2.0 * step * qa - 2.0 * z * a_sum[:, None]
            + a2_sum[:, None])
    return loss, _rounding_bound(n, T, z, th, abs_sum, a2_sum), amb == 0


def _rounding_bound(n: int, T: int, z: torch.Tensor, th: torch.Tensor, abs_sum: torch.Tensor,
                    a2_sum: torch.Tensor) -> torch.Tensor:
    """A rigorous bound on the rounding error of any of the float sums here (the loop's and the closed
    form's) for candidates (z, th): 4 u (N (2T + 2) + 256) B, B = sum_i (theta + |z| + |a_i|)^2 >=
    the magnitude of every term and partial sum involved."""
    r = th + z.abs()
    big = n * r * r + 2.0 * r * abs_sum[:, None] + a2_sum[:, None]
    return 4.0 * float(np.finfo(np.float64).eps) * (n * (2 * T + 2) + 256) * big


# the window around a table point inside which a value's side is uncertain: 1024 eps times the
# magnitudes involved, far beyond the few roundings of the grid, the points and the loop's expression
WINDOW_EPS = 1024.0 * float(np.finfo(np.float64).eps)


def _closed_form_all(xs: torch.Tensor, prefix: torch.Tensor, sums, mu: torch.Tensor, sigma: torch.Tensor,
                     z: torch.Tensor, th: torch.Tensor, layout: BoundaryLayout, timesteps: int, chunk_elements: int,
                     search: str):
    """(loss, bound, reliable) (C, m) for every candidate of (z, th) (C, m, z-major), in blocks of
    channels (and, for the direct layout, slices of candidates) of about ``chunk_elements`` table entries."""
    c, n = xs.shape
    m = z.shape[1]
    T, K = int(timesteps), 2 * int(timesteps)
    dev = xs.device
    xmax = xs.abs().amax(1)
    delta = WINDOW_EPS * (xmax + z.abs().amax(1) + 2.0 * th.amax(1) + mu.abs())
    out = [torch.empty((c, m), dtype=torch.float64, device=dev) for _ in range(2)] + \
          [torch.empty((c, m), dtype=torch.bool, device=dev)]
    exact_rows = (1 << 53) // (K * n + 1)          # sum_k row * j stays an exact float64 integer below it
    if layout.lattice and layout.rows < exact_rows:
        block = max(1, int(chunk_elements) // (4 * layout.rows))
        rows = torch.arange(layout.first, layout.first + layout.rows, device=dev, dtype=torch.float64)
        origin = mu if search == "both" else torch.zeros_like(mu)
        h = sigma * SIGMA_SPAN / layout.denom
        for c0 in range(0, c, block):
            sl = slice(c0, c0 + block)
            points = origin[sl, None] + rows * h[sl, None]
            table = _boundary_table(xs[sl], prefix[sl], points, delta[sl])
            res = _table_losses(table, layout, n, tuple(v[sl] for v in sums), z[sl], th[sl], T)
            for o, r in zip(out, res):
                o[sl] = r
        return tuple(out)
    block = max(1, int(chunk_elements) // (4 * K * m))
    width = max(1, min(m, int(chunk_elements) // (4 * K * block), exact_rows // K))
    k = torch.arange(1 - T, T + 1, device=dev, dtype=torch.float64)
    for c0 in range(0, c, block):
        sl = slice(c0, c0 + block)
        for m0 in range(0, m, width):
            cs = slice(m0, m0 + width)
            zc, tc = z[sl, cs], th[sl, cs]
            points = (zc[:, :, None] + k * (tc / float(T))[:, :, None]).reshape(zc.shape[0], -1)
            table = _boundary_table(xs[sl], prefix[sl], points, delta[sl])
            part = BoundaryLayout(False, zc.shape[1], 1, K, 1, T - 1, points.shape[1])
            res = _table_losses(table, part, n, tuple(v[sl] for v in sums), zc, tc, T)
            for o, r in zip(out, res):
                o[sl, cs] = r
    return tuple(out)


def grid_search(acts: np.ndarray | torch.Tensor, timesteps: int, n_offset: int = 41, n_threshold: int = 40,
                search: str = "both", layer_theta: float | None = None, chunk_elements: int = 1 << 18,
                device=None, inputs: np.ndarray | torch.Tensor | None = None) -> GridResult:
    """AIF grid search over channels and candidates; the same optimum as :func:`grid_search_loop`, bit for bit.

    acts    (C, N) activations of one layer, one row per channel (all samples and positions).
    inputs  optional (C, N) values the neuron integrates (see :func:`aif_objective`); mu and sigma
            (the grid's centre and width) always come from ``acts``.
    Each channel's values are sorted once. The grid's level boundaries z_i + k theta_j / T all lie on
    one lattice per channel (:class:`BoundaryLayout`); one table over its points holds the count and
    target sum below each point (a searchsorted per point), and every candidate's objective follows in
    closed form from the sums of its 2T rows, an arithmetic progression: one strided reduction per
    threshold for all offsets (:func:`_table_losses`, O(T) simple additions per candidate instead of
    O(N)), with a rigorous bound on its rounding error. Points with a value within rounding of them are
    flagged; their candidates, and those whose bound overlaps the best one's, are re-evaluated with the
    loop's own numpy expression, which picks the optimum: the chosen theta, z and loss equal the
    loop's exactly, ties broken towards the first candidate (z-major, then theta ascending). The grid
    (mu, sigma, candidates) is computed on the CPU with the loop's numpy reductions, so every device
    searches the same values; the closed form runs on ``device``, in blocks of channels (and, without a
    lattice, slices of candidates) whose tables hold about ``chunk_elements`` entries. A channel with
    sigma = 0 (constant) gets z = its value and theta = ``layer_theta`` or 1 (error 0).
    """
    if search not in SEARCH_MODES:
        raise ValueError(f"search={search!r} must be one of {SEARCH_MODES}")
    if search == "none":
        raise ValueError("search='none' has nothing to search (theta = layer lambda, z = 0)")
    if int(timesteps) != timesteps or timesteps < 1:
        raise ValueError(f"AIF grid search: timesteps {timesteps!r} must be a positive integer")
    if n_offset < 1 or n_threshold < 1:
        raise ValueError(f"AIF grid search: grid sizes n_offset={n_offset}, n_threshold={n_threshold} must be >= 1")
    a = torch.as_tensor(acts, dtype=torch.float64).cpu().numpy()
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"AIF grid search: activations of shape {tuple(a.shape)}, expected (channels, values >= 1)")
    x = a if inputs is None else torch.as_tensor(inputs, dtype=torch.float64).cpu().numpy()
    if x.shape != a.shape:
        raise ValueError(f"AIF grid search: inputs of shape {tuple(x.shape)} differ from activations {tuple(a.shape)}")
    c, n = a.shape
    t = float(timesteps)
    mu, sigma = _row_stats(a)
    flat = sigma <= 0
    zc, tc = candidate_grids(torch.as_tensor(mu), torch.as_tensor(np.where(flat, 1.0, sigma)), n_offset, n_threshold,
                             search, layer_theta)
    mz, mt = zc.shape[1], tc.shape[1]
    z_all = zc[:, :, None].expand(c, mz, mt).reshape(c, -1)       # z-major, theta ascending: the loop's order
    t_all = tc[:, None, :].expand(c, mz, mt).reshape(c, -1)
    m = z_all.shape[1]
    theta, z, err = np.zeros(c), np.zeros(c), np.zeros(c)
    live = np.flatnonzero(~flat)
    if live.size:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        xt = torch.as_tensor(x[live], device=dev)
        at = xt if inputs is None else torch.as_tensor(a[live], device=dev)
        xs, order = torch.sort(xt, dim=1, stable=True)
        a_sorted = xs if inputs is None else at.gather(1, order)
        prefix = torch.cat([torch.zeros_like(a_sorted[:, :1]), torch.cumsum(a_sorted, 1)], 1)
        sums = (prefix[:, -1], (at * at).sum(1), at.abs().sum(1))
        layout = boundary_layout(search, n_offset, n_threshold, int(timesteps), m)
        mu_l = torch.as_tensor(mu[live], device=dev)
        sig_l = torch.as_tensor(sigma[live], device=dev)
        loss, bound, reliable = _closed_form_all(xs, prefix, sums, mu_l, sig_l, z_all[live].to(dev),
                                                 t_all[live].to(dev), layout, int(timesteps), chunk_elements, search)
        loss, bound, reliable = (v.cpu().numpy() for v in (loss, bound, reliable))
        upper = np.where(reliable, loss + bound, np.inf).min(1, keepdims=True)
        maybe = ~reliable | (loss - bound <= upper)      # every candidate that could be the loop's optimum
        zn, tn = z_all.numpy(), t_all.numpy()
        for r, ch in enumerate(live):
            best = (np.inf, 0.0, 0.0)
            for j in np.flatnonzero(maybe[r]):          # ascending: the loop's order, first minimum wins
                e = _exact_error(a[ch], x[ch], zn[ch, j], tn[ch, j], t)
                if e < best[0]:
                    best = (e, zn[ch, j], tn[ch, j])
            err[ch], z[ch], theta[ch] = best
    for ch in np.flatnonzero(flat):
        theta[ch] = float(layer_theta) if layer_theta else 1.0
        z[ch] = mu[ch] if search != "threshold" else 0.0
        err[ch] = _exact_error(a[ch], x[ch], z[ch], theta[ch], t)
    return GridResult(theta=theta, z=z, loss=np.sqrt(err) / n, mu=mu, sigma=sigma)


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
            err = _exact_error(row, xrow, zz, th, t)
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
    chunk_elements: int = 1 << 18
    device: str | None = None
    seed: int = 0
    _params: dict = field(default_factory=dict, repr=False)   # ANN node -> GridResult
    _offsets: dict = field(default_factory=dict, repr=False)  # IR population -> (z, event value, shape)
    _vit: dict = field(default_factory=dict, repr=False)      # ViT: ANN value -> full-shape (theta, z)
    _ranges: dict = field(default_factory=dict, repr=False)   # ViT: ANN value -> max |calibration value|

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
