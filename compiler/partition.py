"""Partitioning pass: place every population onto neuro cores and chips under a profile's limits.

A plain function ``partition(net, profile) -> Placement`` (IR in, placement out; the network is not
changed). Each population is cut into slices of ``n`` consecutive neurons (flattened C order), one
slice per core; ``n`` is the largest size (found by bisection from ``neurons_per_core`` down) for
which every slice fits every per-core limit. The memory model (docs/energy.md, "Resources"):

* neuron state: ``neurons * neuron_state_bytes``
* synapse words (``synapse_word_bits`` each): dense projections store the full weight matrix rows
  of the slice (``neurons * N_in`` words, zeros included); identity one word per neuron; conv
  ``expanded`` the true (padding-free) fan-in of every neuron, conv ``shared`` one kernel per
  output channel the slice touches (``C_in/groups * kH * kW`` words each); a token projection
  (one weight shared by every token) the weight rows of the output channels the slice holds, once
  per core whatever the number of its tokens there (``min(neurons, C_out) * C_in`` words: a core
  keeps one copy of the rows it needs and indexes them by token, as a shared conv kernel)
* input-axon table: ``axon_entry_bytes`` per distinct source neuron reaching the slice (fan-in)
* where synapses live: a dedicated pool when ``synapse_memory_per_core_bytes`` is set (Loihi 1; the
  rest of ``memory_per_core_bytes`` then holds state and axons, if any is left, else those are
  bounded by ``neurons_per_core`` alone); chip SDRAM when ``sdram_per_chip_bytes`` is set (SpiNNaker
  1; shared conv kernels stay in the core's DTCM); otherwise one pool of ``memory_per_core_bytes``.

MBE neurons (``ir.neurons_mbe``, paper 001): each of a neuron's B branches x N bases has its own
potential u_bn, so on a chip every basis is a compartment (Loihi 1) or a state of a programmable
neuron (Loihi 2, SpiNNaker): one MBE neuron counts B*N compartments against ``neurons_per_core`` and
``max_neurons_per_chip`` and holds B*N times ``neuron_state_bytes``; its input enters once and it
emits one graded event per step (the firing bases' intensities summed, what the simulators and the
fixed-point datapath send), so synapses, fan-in and fan-out are per neuron. Each core also keeps the
population's kernel tables once: threshold and reset (``state_bits``) and intensity
(``payload_bits``) for every branch, basis and step, B*N*T entries each.

Fan-in per core (distinct source neurons) is checked against ``fan_in_per_core`` and fan-out per
core (sum over its neurons of the number of target cores each reaches) against ``fan_out_per_core``
when the profile sets them; a source population whose cores drive too many output axons is split
further. Cores are then packed onto chips in order (``cores_per_chip``, ``max_neurons_per_chip``,
``max_synapses_per_chip``, ``sdram_per_chip_bytes``). A layer that does not fit even one neuron per
core raises :class:`ResourceError` naming the layer, the resource, the required amount and the limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedError
from ..ir import Conv2d, Dense, Identity, Network, Population, Projection
from ..errors import SpikeportError
from ..ir.conv_counts import conv_covers, conv_fan_in
from ..ir.neurons_mbe import MBE, MBETable
from ..ir.operators import TokenDense
from .operator_placement import OperatorPlacement, place_operators


class ResourceError(SpikeportError):
    """A layer cannot be mapped at all: names the layer, the resource, the required amount and the limit."""

    def __init__(self, layer: str, resource: str, required: int, limit: int, profile: str = "", detail: str = ""):
        self.layer, self.resource, self.required, self.limit = layer, resource, int(required), int(limit)
        on = f" on {profile}" if profile else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"layer {layer!r} cannot be mapped{on}: {resource} requires {int(required)}, "
                         f"limit is {int(limit)}{extra}")


# ------------------------------------------------------------------------------ results
@dataclass
class CoreUse:
    """One core: the neurons [start, stop) of ``layer`` and what they occupy."""

    layer: str
    start: int
    stop: int
    chip: int = 0
    synapses: int = 0              # stored synapse words (dense zeros included)
    synapse_bytes: int = 0
    state_bytes: int = 0
    axon_bytes: int = 0
    core_memory_bytes: int = 0     # bytes in the pool checked against memory_per_core_bytes
    synapse_pool_bytes: int = 0    # bytes in the dedicated synapse pool (Loihi 1), else 0
    sdram_bytes: int = 0           # synapse bytes held in chip SDRAM (SpiNNaker 1), else 0
    fan_in: int = 0
    fan_out: int = 0
    states: int = 1                # compartments per neuron (MBE: one per branch and basis)

    @property
    def neurons(self) -> int:
        return self.stop - self.start

    @property
    def compartments(self) -> int:
        return self.neurons * self.states


@dataclass
class LayerPlacement:
    """How one population was split: ``neurons_per_core`` per slice, the limit that stopped a larger
    slice (``binding``), and per resource the largest per-core use and its limit."""

    name: str
    neurons: int
    neurons_per_core: int
    binding: str
    cores: list[CoreUse] = field(default_factory=list)
    usage: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    states: int = 1                # compartments per neuron (MBE: one per branch and basis)

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def compartments(self) -> int:
        return self.neurons * self.states

    def utilisation(self) -> dict[str, float | None]:
        """Largest per-core use / limit for every resource (None: the profile sets no limit)."""
        return {k: (used / lim if lim else None) for k, (used, lim) in self.usage.items()}

    def to_json(self) -> dict:
        return {"layer": self.name, "neurons": self.neurons, "compartments": self.compartments,
                "compartments_per_neuron": self.states, "cores": self.n_cores,
                "neurons_per_core": self.neurons_per_core, "binding": self.binding,
                "max_per_core": {k: {"used": u, "limit": lim} for k, (u, lim) in self.usage.items()},
                "utilisation": self.utilisation(),
                "synapses": sum(c.synapses for c in self.cores),
                "chips": sorted({c.chip for c in self.cores})}


@dataclass
class Placement:
    """Cores and chips of a whole network on one profile."""

    profile: str
    layers: dict[str, LayerPlacement]
    chips: int
    chip_binding: str
    router_entries_max: int | None = None
    notes: list[str] = field(default_factory=list)
    operators: OperatorPlacement | None = None

    @property
    def cores(self) -> int:
        """Neuro cores: the populations' plus the operator cores taken from them (SpiNNaker)."""
        return sum(lp.n_cores for lp in self.layers.values()) + (self.operators.cores_on_neuro if self.operators else 0)

    def to_json(self) -> dict:
        return {"profile": self.profile, "cores": self.cores, "chips": self.chips, "chip_binding": self.chip_binding,
                "router_entries_max_per_chip": self.router_entries_max, "notes": list(self.notes),
                "layers": [lp.to_json() for lp in self.layers.values()],
                **({"operators": self.operators.to_json()} if self.operators else {})}


# ------------------------------------------------------------------------------ per-slice usage
def _slices(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, size, n, dtype=np.int64)
    return starts, np.minimum(starts + n, size)


def _conv_true_fan_in(proj: Conv2d, src_shape, dst_shape) -> np.ndarray:
    return conv_fan_in(proj, src_shape, dst_shape)


def _rows(cum: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, n_in) bool: inputs read by any output index in [a, b] (empty when b < a), from the
    cumulative cover ``cum`` ((n_out + 1, n_in), row y = covers of outputs < y)."""
    ok = b >= a
    hi = np.where(ok, b + 1, 0)
    lo = np.where(ok, a, 0)
    return (cum[hi] - cum[lo]) > 0


def _ranges_field(ranges, wo: int, cum_y: np.ndarray, cum_x: np.ndarray) -> np.ndarray:
    """(n, H, W) bool: input pixels in the receptive fields of a union of flat pixel ranges.

    ``ranges`` holds pairs (lo, hi) of (n,) arrays, flat output-pixel ranges [lo, hi) (empty when
    lo >= hi). A flat range is at most three rectangles (first partial row, full rows, last partial
    row), and the receptive field of a rectangle of output pixels is the product of its per-axis
    receptive fields, so the union needs no per-synapse work.
    """
    n = len(ranges[0][0])
    h, w = cum_y.shape[1], cum_x.shape[1]
    out = np.zeros((n, h, w), dtype=bool)
    for rows, cols in _rects(ranges, wo, cum_y, cum_x):
        out |= rows[:, :, None] & cols[:, None, :]
    return out


def _rects(ranges, wo: int, cum_y: np.ndarray, cum_x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The receptive fields of the (at most three per range) rectangles of flat pixel ranges, as
    pairs of (n, H) row and (n, W) column indicators (a field is their product)."""
    out = []
    for lo, hi in ranges:
        ok = lo < hi
        last = np.maximum(hi - 1, lo)
        r0, q0, r1, q1 = lo // wo, lo % wo, last // wo, last % wo
        one = r0 == r1
        rects = ((r0, r0, q0, np.where(one, q1, wo - 1)),
                 (r0 + 1, r1 - 1, np.zeros_like(q0), np.full_like(q0, wo - 1)),
                 (r1, np.where(one, r1 - 1, r1), np.zeros_like(q0), q1))
        for ya, yb, xa, xb in rects:
            out.append((_rows(cum_y, ya, np.where(ok, yb, ya - 1)), _rows(cum_x, xa, xb)))
    return out


def _ranges_count(ranges, wo: int, cum_y: np.ndarray, cum_x: np.ndarray) -> np.ndarray:
    """(n,) int64: the number of input pixels :func:`_ranges_field` would mark, without the (n, H, W)
    field: rows covered by the same set P of rectangles contribute ``|union of P's columns|`` each,
    so the count is a sum over the (few) row patterns present."""
    rects = _rects(ranges, wo, cum_y, cum_x)
    n = len(ranges[0][0])
    pattern = np.zeros((n, cum_y.shape[1]), dtype=np.int64)
    for i, (rows, _) in enumerate(rects):
        pattern |= rows.astype(np.int64) << i
    total = np.zeros(n, dtype=np.int64)
    for p in np.unique(pattern):
        if p == 0:
            continue
        union = np.zeros((n, cum_x.shape[1]), dtype=bool)
        for i, (_, cols) in enumerate(rects):
            if p >> i & 1:
                union |= cols
        total += (pattern == p).sum(axis=1) * union.sum(axis=1)
    return total


def _conv_reach(proj: Conv2d, src_shape, dst_shape, starts, stops, per_source: bool = False):
    """Distinct source neurons reaching each target slice and, optionally, for every source neuron
    the number of slices it reaches.

    Every synapse is stored (structural), so a source (c, y, x) of group g reaches a slice exactly
    when (y, x) lies in the receptive field of a slice pixel whose channel is in group g, and the
    ``C_in / groups`` channels of a group share the answer. A slice [start, stop) of the flattened
    (C_out, H_out, W_out) target is whole channels plus at most a partial first and last channel, so
    every group it touches either holds a whole channel (its field is the full receptive field) or
    is the first or last group with the union of at most two flat pixel ranges
    (:func:`_ranges_field`): closed forms per slice, no per-synapse or per-target-pixel tensor.
    """
    cin, h, w = src_shape
    co, ho, wo = dst_shape
    g = proj.groups
    hw = ho * wo
    pgo, pgi = co // g, cin // g
    cov_y, cov_x = conv_covers(proj, src_shape, dst_shape)
    cum_y = np.concatenate([np.zeros((1, h), np.int64), np.cumsum(cov_y, axis=0)])
    cum_x = np.concatenate([np.zeros((1, w), np.int64), np.cumsum(cov_x, axis=0)])
    full = np.outer(cov_y.any(axis=0), cov_x.any(axis=0)).reshape(-1)
    full_count = int(full.sum())
    starts, stops = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
    fan = np.zeros(len(starts), dtype=np.int64)
    reach = np.zeros((g, h * w), dtype=np.int64) if per_source else None
    full_groups = np.zeros(g + 1, dtype=np.int64) if per_source else None
    chunk = max(1, 4_000_000 // (h * w))
    for a in range(0, len(starts), chunk):
        s, e = starts[a:a + chunk], stops[a:a + chunk]
        c0, c1 = s // hw, (e - 1) // hw
        g0, g1 = c0 // pgo, c1 // pgo
        head_lo, head_hi = s - c0 * hw, np.where(c1 > c0, hw, e - c0 * hw)
        tail_lo, tail_hi = np.zeros_like(s), np.where(c1 > c0, e - c1 * hw, 0)
        head_full = (head_lo == 0) & (head_hi == hw)
        tail_full = (c1 > c0) & (tail_hi == hw)
        same = g0 == g1
        # first group: full when it holds a whole channel (a full head, a channel after c0 in the group)
        first_full = head_full | np.where(same, (c1 - c0 >= 2) | tail_full, c0 % pgo != pgo - 1)
        last_full = ~same & (tail_full | (c1 % pgo != 0))
        mid = np.maximum(g1 - g0 - 1, 0)
        first_ranges = [(head_lo, head_hi), (tail_lo, np.where(same, tail_hi, 0))]
        last_ranges = [(tail_lo, np.where(same, 0, tail_hi))]
        if per_source:      # the fields themselves are needed below
            first = _ranges_field(first_ranges, wo, cum_y, cum_x)
            last = _ranges_field(last_ranges, wo, cum_y, cum_x)
            first_count, last_count = first.sum(axis=(1, 2)), last.sum(axis=(1, 2))
        else:
            first_count = _ranges_count(first_ranges, wo, cum_y, cum_x)
            last_count = _ranges_count(last_ranges, wo, cum_y, cum_x)
        n_first = np.where(first_full, full_count, first_count)
        n_last = np.where(same, 0, np.where(last_full, full_count, last_count))
        fan[a:a + len(s)] = (mid * full_count + n_first + n_last) * pgi
        if per_source:
            # whole-field groups through a difference array over groups, partial ones added pixel-wise
            lo_full = np.where(first_full, g0, g0 + 1)
            hi_full = np.where(same, np.where(first_full, g0 + 1, g0 + 1), np.where(last_full, g1 + 1, g1))
            lo_full = np.minimum(lo_full, hi_full)
            np.add.at(full_groups, lo_full, 1)
            np.add.at(full_groups, hi_full, -1)
            pf = ~first_full
            np.add.at(reach, g0[pf], first[pf].reshape(-1, h * w).astype(np.int64))
            pl = ~same & ~last_full
            np.add.at(reach, g1[pl], last[pl].reshape(-1, h * w).astype(np.int64))
    if per_source:
        reach += np.cumsum(full_groups)[:g, None] * full[None, :]
        reach = np.repeat(reach, pgi, axis=0).reshape(-1)    # (C_in, H*W) in C order
    return fan, reach


class _LayerModel:
    """Per-slice resource use of one population for any slice size."""

    def __init__(self, net: Network, pop: Population, profile):
        self.net, self.pop, self.lim = net, pop, profile.limits
        self.size = pop.size
        self.states, self.table_bytes = _compartments(pop.neuron, profile)
        self.incoming: list[tuple[Projection, tuple, tuple]] = []
        self.true_fan_in: dict[str, np.ndarray] = {}
        for proj in net.incoming(pop.name):
            src_shape, dst_shape = net.shape_of(proj.source), tuple(pop.shape)
            if not isinstance(proj, (Dense, Conv2d, Identity, TokenDense)):
                raise UnsupportedError(f"projection {proj.name!r}: no partition rule for {type(proj).__name__}")
            self.incoming.append((proj, src_shape, dst_shape))
            if isinstance(proj, Conv2d):
                self.true_fan_in[proj.name] = np.concatenate([[0], np.cumsum(_conv_true_fan_in(proj, src_shape, dst_shape))])

    def usage(self, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Slices of size ``n`` and, per resource, the amount each slice needs."""
        lim = self.lim
        starts, stops = _slices(self.size, n)
        neurons = stops - starts
        syn_words = np.zeros(len(starts), dtype=np.int64)     # dense / identity / expanded conv
        kern_words = np.zeros(len(starts), dtype=np.int64)    # shared conv kernels
        fan = np.zeros(len(starts), dtype=np.int64)
        for proj, src_shape, dst_shape in self.incoming:
            n_src = int(np.prod(src_shape))
            if isinstance(proj, Dense):
                syn_words += neurons * n_src
                fan += n_src
            elif isinstance(proj, Identity):
                syn_words += neurons
                fan += neurons
            elif isinstance(proj, TokenDense):   # shared weight rows once per core; all channels of the tokens touched
                c_out, c_in = int(dst_shape[-1]), int(src_shape[-1])
                syn_words += np.minimum(neurons, c_out) * c_in
                fan += ((stops - 1) // c_out - starts // c_out + 1) * c_in
            else:
                w = np.asarray(proj.weight).shape
                if lim.conv_weights == "shared":
                    hw = dst_shape[1] * dst_shape[2]
                    channels = (stops - 1) // hw - starts // hw + 1
                    kern_words += channels * int(w[1] * w[2] * w[3])
                else:
                    cum = self.true_fan_in[proj.name]
                    syn_words += cum[stops] - cum[starts]
                fan += _conv_reach(proj, src_shape, dst_shape, starts, stops)[0]
        bits = lim.synapse_word_bits
        syn_bytes = -(-syn_words * bits // 8)
        kern_bytes = -(-kern_words * bits // 8)
        state = neurons * self.states * lim.neuron_state_bytes + np.where(neurons > 0, self.table_bytes, 0)
        axon = fan * (lim.axon_entry_bytes or 0)
        use: dict[str, np.ndarray] = {"neurons_per_core": neurons * self.states, "synapses": syn_words + kern_words,
                                      "synapse_bytes": syn_bytes + kern_bytes, "state_bytes": state,
                                      "axon_bytes": axon, "fan_in_per_core": fan}
        if lim.synapse_memory_per_core_bytes:
            use["synapse_memory_per_core_bytes"] = syn_bytes + kern_bytes
            use["memory_per_core_bytes"] = state + axon
        elif lim.sdram_per_chip_bytes:
            use["sdram_per_chip_bytes"] = syn_bytes
            use["memory_per_core_bytes"] = state + axon + kern_bytes
        else:
            use["memory_per_core_bytes"] = state + axon + syn_bytes + kern_bytes
        return starts, stops, use

    def limits(self) -> dict[str, int | None]:
        lim = self.lim
        rest = None
        if lim.synapse_memory_per_core_bytes:
            left = lim.memory_per_core_bytes - lim.synapse_memory_per_core_bytes
            rest = left if left > 0 else None
        return {"neurons_per_core": lim.neurons_per_core,
                "memory_per_core_bytes": rest if lim.synapse_memory_per_core_bytes else lim.memory_per_core_bytes,
                "synapse_memory_per_core_bytes": lim.synapse_memory_per_core_bytes,
                "sdram_per_chip_bytes": lim.sdram_per_chip_bytes,
                "fan_in_per_core": lim.fan_in_per_core}

    def violations(self, n: int) -> list[tuple[str, int, int]]:
        """(resource, largest need, limit) for every limit some slice of size ``n`` exceeds."""
        _, _, use = self.usage(n)
        out = []
        for name, limit in self.limits().items():
            if limit is not None and name in use and use[name].size and int(use[name].max()) > limit:
                out.append((name, int(use[name].max()), int(limit)))
        return out


def _compartments(neuron, profile) -> tuple[int, int]:
    """(compartments per neuron, bytes of kernel tables per core) of a neuron model: MBE neurons have
    B*N basis potentials and B*N*T-entry threshold, reset and intensity tables; others (1, 0)."""
    if isinstance(neuron, (MBE, MBETable)):
        b, n = np.asarray(neuron.threshold if isinstance(neuron, MBETable) else neuron.w).shape[:2]
        entries = int(b) * int(n) * int(neuron.timesteps)
        dp = profile.datapath
        return int(b) * int(n), -(-entries * (2 * dp.state_bits + dp.payload_bits) // 8)
    return 1, 0


def _largest_fit(model: _LayerModel, profile_name: str) -> tuple[int, str]:
    """Largest slice size found by bisection and the limit that stops a larger one."""
    top = min(model.lim.neurons_per_core, model.size)
    bad = model.violations(top)
    if not bad:
        return top, ("neurons_per_core" if top < model.size else "none (whole layer on one core)")
    lo, hi = 0, top           # hi does not fit; lo fits (0: none found yet)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v = model.violations(mid)
        if v:
            hi, bad = mid, v
        else:
            lo = mid
    if lo == 0:               # even one neuron per core breaks a limit: bad holds violations(1)
        name, need, limit = bad[0]
        raise ResourceError(model.pop.name, name, need, limit, profile_name, "even one neuron per core does not fit")
    return lo, ", ".join(sorted({b[0] for b in bad}))


# ------------------------------------------------------------------------------ the pass
def _cores_reached(net: Network, proj: Projection, target: LayerPlacement) -> np.ndarray:
    """For every source neuron of ``proj``, how many cores of the target layer it sends to."""
    src_shape, dst_shape = net.shape_of(proj.source), net.shape_of(proj.target)
    n_src = int(np.prod(src_shape))
    starts = np.array([c.start for c in target.cores], dtype=np.int64)
    stops = np.array([c.stop for c in target.cores], dtype=np.int64)
    if isinstance(proj, Dense):
        return np.full(n_src, len(starts), dtype=np.int64)
    if isinstance(proj, Identity):
        return np.ones(n_src, dtype=np.int64)
    if isinstance(proj, TokenDense):     # a source reaches the cores holding any neuron of its token
        lo, hi = _token_rows(src_shape, dst_shape)
        per_token = np.searchsorted(starts, hi, side="left") - np.searchsorted(stops, lo, side="right")
        return np.repeat(per_token.astype(np.int64), int(src_shape[-1]))
    return _conv_reach(proj, src_shape, dst_shape, starts, stops, per_source=True)[1]


def _token_rows(src_shape, dst_shape) -> tuple[np.ndarray, np.ndarray]:
    """Flat target range [lo, hi) of every token (leading index) of a token projection."""
    c_out = int(dst_shape[-1])
    tokens = np.arange(int(np.prod(src_shape[:-1], dtype=np.int64)), dtype=np.int64)
    return tokens * c_out, (tokens + 1) * c_out


def _cut(name: str, starts, stops, states: int = 1) -> list[CoreUse]:
    return [CoreUse(name, int(a), int(b), states=states) for a, b in zip(starts, stops)]


def _receptive_union(pix: np.ndarray, proj: Conv2d, in_hw: tuple[int, int], k_hw: tuple[int, int]) -> np.ndarray:
    """(..., H_out, W_out) bool target pixels -> (..., H, W) bool input pixels in their receptive fields.

    One strided copy per kernel tap (a transposed convolution with a ones kernel, done as boolean
    OR): output pixel y reads input row ``y*stride - padding + i*dilation``; rows off the input are
    padding. Within one tap the mapping is one-to-one, so the fancy-indexed OR has no collisions.
    """
    h, w = in_hw
    ho, wo = pix.shape[-2:]
    out = np.zeros(pix.shape[:-2] + (h, w), dtype=bool)
    axes = []
    for n_out, n_in, k, s, p, d in ((ho, h, k_hw[0], proj.stride[0], proj.padding[0], proj.dilation[0]),
                                    (wo, w, k_hw[1], proj.stride[1], proj.padding[1], proj.dilation[1])):
        taps = []
        for i in range(k):
            src = np.arange(n_out)
            dst = src * s - p + i * d
            ok = (dst >= 0) & (dst < n_in)
            taps.append((src[ok], dst[ok]))
        axes.append(taps)
    for ys, yd in axes[0]:
        for xs, xd in axes[1]:
            if len(ys) and len(xs):
                out[..., yd[:, None], xd[None, :]] |= pix[..., ys[:, None], xs[None, :]]
    return out


def reach_matrix(net: Network, proj: Projection, starts, stops) -> np.ndarray:
    """Structural connectivity of ``proj`` at slice granularity: ``(n_source, n_slices)`` booleans,
    True where source neuron i has at least one synapse (zero weights included) onto a target neuron
    in slice s = [starts[s], stops[s]). Routing (which target cores a source core must reach) and the
    SpiNNaker replay's subscription tables are built from it."""
    src_shape, dst_shape = net.shape_of(proj.source), net.shape_of(proj.target)
    n_src = int(np.prod(src_shape))
    starts, stops = np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64)
    if isinstance(proj, Dense):
        return np.ones((n_src, len(starts)), dtype=bool)
    if isinstance(proj, Identity):
        idx = np.arange(n_src)
        return (idx[:, None] >= starts[None, :]) & (idx[:, None] < stops[None, :])
    if isinstance(proj, TokenDense):
        lo, hi = _token_rows(src_shape, dst_shape)
        hit = (lo[:, None] < stops[None, :]) & (hi[:, None] > starts[None, :])
        return np.repeat(hit, int(src_shape[-1]), axis=0)
    if not isinstance(proj, Conv2d):
        raise UnsupportedError(f"projection {proj.name!r}: no reach rule for {type(proj).__name__}")
    cin, h, w = src_shape
    co, ho, wo = dst_shape
    g = proj.groups
    kh, kw = np.asarray(proj.weight).shape[2:]
    ind = np.zeros((len(starts), g, ho * wo), dtype=bool)
    for s, (a, b) in enumerate(zip(starts, stops)):
        flat = np.arange(int(a), int(b))
        ind[s, (flat // (ho * wo)) // (co // g), flat % (ho * wo)] = True
    hit = _receptive_union(ind.reshape(len(starts), g, ho, wo), proj, (h, w), (kh, kw))
    hit = hit.reshape(len(starts), g, h * w)                            # (slices, group, pixel)
    group_of_channel = np.arange(cin) // (cin // g)
    return hit[:, group_of_channel, :].transpose(1, 2, 0).reshape(n_src, len(starts))


def partition(net: Network, profile, sources: bool = False) -> Placement:
    """Place every population of ``net`` on cores and chips of ``profile`` (a hw_profiles.Profile).

    ``sources=True`` also gives every Input node with outgoing projections cores of its own (spike
    source cores, ``neurons_per_core`` each, no synapses), placed before the populations: the
    SpiNNaker backend injects the input as multicast packets from such cores.

    Raises ResourceError when a layer cannot be mapped (even one neuron per core exceeds a limit, a
    programmed delay (projection delay minus the quantised datapath's ``synapse_delay``, the latency
    the pipeline adds by itself) exceeds ``max_delay_steps``, or one neuron drives more output axons than ``fan_out_per_core``).
    """
    lim = profile.limits
    latency = net.datapath.synapse_delay if net.quantized else 0
    for proj in net.projections():
        programmed = proj.delay - latency      # the pipeline's own latency needs no programmed delay
        if programmed > lim.max_delay_steps:
            raise ResourceError(proj.target, "max_delay_steps", programmed, lim.max_delay_steps, profile.name,
                                f"projection {proj.name!r}: delay {proj.delay} minus the datapath latency {latency}")
    models: dict[str, _LayerModel] = {}
    sizes: dict[str, int] = {}
    binding: dict[str, str] = {}
    for pop in net.populations():
        models[pop.name] = m = _LayerModel(net, pop, profile)
        sizes[pop.name], binding[pop.name] = _largest_fit(m, profile.name)
    layers = {}
    if sources:
        for node in net.inputs():
            if net.outgoing(node.name):
                size = int(np.prod(node.shape))
                n = min(lim.neurons_per_core, size)
                layers[node.name] = LayerPlacement(node.name, size, n, "neurons_per_core (spike source)",
                                                   _cut(node.name, *_slices(size, n)))
    layers.update({name: LayerPlacement(name, m.size, sizes[name], binding[name],
                                        _cut(name, *_slices(m.size, sizes[name]), m.states), states=m.states)
                   for name, m in models.items()})
    # fan-out: output axons of a source core = sum over its neurons of target cores reached
    reach: dict[str, np.ndarray] = {name: np.zeros(m.size, dtype=np.int64) for name, m in models.items()}
    for proj in net.projections():
        if proj.source in reach:
            reach[proj.source] += _cores_reached(net, proj, layers[proj.target])
    for name, lp in layers.items():
        if name not in models:          # spike source cores: no synapses, no per-core model
            continue
        cum = np.concatenate([[0], np.cumsum(reach[name])])
        limit = lim.fan_out_per_core
        if limit is not None:
            if int(reach[name].max(initial=0)) > limit:
                raise ResourceError(name, "fan_out_per_core", int(reach[name].max()), limit, profile.name,
                                    "one neuron reaches more target cores than a core has output axons")
            def drives(k: int) -> int:
                starts, stops = _slices(lp.neurons, k)
                return int(np.max(cum[stops] - cum[starts]))
            n = lp.neurons_per_core
            if drives(n) > limit:          # bisection: lo fits (one neuron always does, checked above)
                lo, hi = 1, n
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if drives(mid) <= limit else (lo, mid)
                n = lo
            if n != lp.neurons_per_core:
                lp.neurons_per_core, lp.binding = n, "fan_out_per_core"
                lp.cores = _cut(name, *_slices(lp.neurons, n), lp.states)
        _fill(models[name], lp, cum)
    chips, chip_binding = _pack_chips(layers, lim)
    ops = place_operators(net, profile, sum(lp.n_cores for lp in layers.values()), lim.cores_per_chip)
    if ops is not None and ops.min_chips > chips:
        chips, chip_binding = ops.min_chips, ("cores_per_chip (operator cores share the neuro cores)"
                                              if ops.on_neuro_cores else "operators.embedded_cores_per_chip")
    placement = Placement(profile.name, layers, chips, chip_binding, operators=ops)
    _routing(net, placement, lim)
    if ops is not None:
        placement.notes.extend(ops.notes)
    return placement


def _fill(model: _LayerModel, lp: LayerPlacement, reach_cum: np.ndarray) -> None:
    """Per-core figures of the final cut and the largest use of each resource."""
    starts, stops, use = model.usage(lp.neurons_per_core)
    limits = model.limits()
    limits["fan_out_per_core"] = model.lim.fan_out_per_core
    use["fan_out_per_core"] = reach_cum[stops] - reach_cum[starts]
    zero = np.zeros(len(starts), dtype=np.int64)
    columns = {attr: np.asarray(use.get(key, zero)).tolist()      # one conversion per layer, not per core
               for attr, key in (("synapses", "synapses"), ("synapse_bytes", "synapse_bytes"),
                                 ("state_bytes", "state_bytes"), ("axon_bytes", "axon_bytes"),
                                 ("core_memory_bytes", "memory_per_core_bytes"),
                                 ("synapse_pool_bytes", "synapse_memory_per_core_bytes"),
                                 ("sdram_bytes", "sdram_per_chip_bytes"), ("fan_in", "fan_in_per_core"),
                                 ("fan_out", "fan_out_per_core"))}
    for attr, values in columns.items():
        for core, v in zip(lp.cores, values):
            setattr(core, attr, int(v))
    for name in ("neurons_per_core", "memory_per_core_bytes", "synapse_memory_per_core_bytes",
                 "sdram_per_chip_bytes", "fan_in_per_core", "fan_out_per_core"):
        if name in use:
            lp.usage[name] = (int(use[name].max()), limits.get(name))


def _pack_chips(layers: dict[str, LayerPlacement], lim) -> tuple[int, str]:
    """Greedy in-order packing of cores onto chips; returns the chip count and the limit that closed chips."""
    caps = {"cores_per_chip": lim.cores_per_chip, "max_neurons_per_chip": lim.max_neurons_per_chip,
            "max_synapses_per_chip": lim.max_synapses_per_chip, "sdram_per_chip_bytes": lim.sdram_per_chip_bytes}
    chip, used = 0, {k: 0 for k in caps}
    closed: dict[str, int] = {}
    any_core = False
    for lp in layers.values():
        for core in lp.cores:
            need = {"cores_per_chip": 1, "max_neurons_per_chip": core.compartments,
                    "max_synapses_per_chip": core.synapses, "sdram_per_chip_bytes": core.sdram_bytes}
            for k, cap in caps.items():
                if cap is not None and need[k] > cap:
                    raise ResourceError(lp.name, k, need[k], cap, "", "one core's share exceeds a whole chip")
            full = [k for k, cap in caps.items() if cap is not None and used[k] + need[k] > cap]
            if full and any_core:
                chip += 1
                used = {k: 0 for k in caps}
                for k in full:
                    closed[k] = closed.get(k, 0) + 1
            for k in caps:
                used[k] += need[k]
            core.chip = chip
            any_core = True
    chips = chip + 1 if any_core else 0
    binding = max(closed, key=closed.get) if closed else "none (one chip)"
    return chips, binding


def _routing(net: Network, placement: Placement, lim) -> None:
    """Upper-bound estimate of router entries per chip: one per source core on every chip it sends to
    (its own and those of its targets), without merging keys under masks."""
    if lim.router_entries is None:
        return
    per_chip = np.zeros(placement.chips, dtype=np.int64)
    for name, lp in placement.layers.items():
        target_chips = set()
        for proj in net.outgoing(name):
            target_chips |= {c.chip for c in placement.layers[proj.target].cores}
        for core in lp.cores:
            for c in target_chips | {core.chip}:
                per_chip[c] += 1
    placement.router_entries_max = int(per_chip.max(initial=0))
    usable = lim.router_entries_usable or lim.router_entries
    if placement.router_entries_max > usable:
        placement.notes.append(f"router entries: up to {placement.router_entries_max} per chip exceed the "
                               f"{usable} usable; key merging under masks would be needed")
