"""Choosing a population's gain: how many membrane-state units one reference unit becomes.

The reference unit is the (per-channel) threshold of an IF population and one real unit of a Readout,
so ``state_scale = reference / gain``. Every representability rule of the datapath is an upper bound
on the gain (threshold bits, state headroom, the largest weight at the largest exponent, the bias
at the largest bias exponent, Readout saturation over ``max_timesteps``); a larger gain gives finer
state, current and bias resolution. Weights are the one place where the largest gain is not always
best: each projection picks the smallest ``weight_exp`` whose range holds its largest weight, so the
largest mantissa falls anywhere in (weight_max/2, weight_max] as the gain grows. The chosen gain
minimises

    max over projections (weight_step / 2) / largest_mantissa   +   2**act_shift / (2 * gain * ref)

(relative weight rounding plus relative current resolution, ``ref`` = 1 for IF, the worst-case
per-step current for Readout) over the candidates {largest allowed gain} and, for every projection
and exponent, the gain at which that projection's largest weight exactly fills the mantissa range.
Ties go to the larger gain. IF gains are multiples of 2**vth_shift (the threshold mantissa is an
integer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir import Datapath

_TOL = 1e-9  # relative slack for float round-off at exact range boundaries


@dataclass(frozen=True)
class Bound:
    """One upper bound on the gain; ``detail`` explains it when it makes quantisation impossible."""

    gain: float
    what: str
    detail: str


@dataclass(frozen=True)
class WeightRange:
    """Largest positive and most negative normalised weight of one projection (a-units per gain unit)."""

    pos: float
    neg: float

    @property
    def peak(self) -> float:
        return max(self.pos, -self.neg)


def fits(w: WeightRange, gain: float, e: int, dp: Datapath) -> bool:
    """True when the projection's extremes at this gain and exponent lie in the mantissa range."""
    scale = gain / 2.0 ** e
    return w.pos * scale <= dp.weight_max * (1 + _TOL) and w.neg * scale >= dp.weight_min * (1 + _TOL)


def weight_exp_for(w: WeightRange, gain: float, dp: Datapath) -> int | None:
    """Smallest exponent in the datapath's range that holds the projection (None: none does)."""
    for e in range(dp.weight_exp_min, dp.weight_exp_max + 1):
        if fits(w, gain, e, dp):
            return e
    return None


def fill_gain(w: WeightRange, e: int, dp: Datapath) -> float:
    """Gain at which the projection's largest weight exactly fills the mantissa range at exponent e."""
    lim = math.inf
    if w.pos > 0:
        lim = min(lim, dp.weight_max / w.pos)
    if w.neg < 0:
        lim = min(lim, dp.weight_min / w.neg)
    return lim * 2.0 ** e


def weight_bound(w: WeightRange, dp: Datapath) -> float:
    return fill_gain(w, dp.weight_exp_max, dp)


def objective(gain: float, weights: list[WeightRange], dp: Datapath, ref: float) -> float:
    """Relative weight rounding (worst projection) plus relative current resolution."""
    worst = 0.0
    for w in weights:
        if w.peak == 0:
            continue
        e = weight_exp_for(w, gain, dp)
        if e is None:
            return math.inf
        worst = max(worst, (dp.weight_step / 2) / (w.peak * gain / 2.0 ** e))
    return worst + 2.0 ** dp.act_shift / (2 * gain * ref)


def choose_gain(bounds: list[Bound], weights: list[WeightRange], dp: Datapath, *, quantum: float | None,
                ref: float) -> tuple[float, Bound, float]:
    """Pick the gain (see module docstring). ``quantum``: gains must be multiples of it (IF: 2**vth_shift).

    Returns the gain, the binding (smallest) bound and the largest allowed gain; the caller checks
    the gain against its minimum.
    """
    binding = min(bounds, key=lambda b: b.gain)
    top = binding.gain
    if quantum is not None:
        top = math.floor(top / quantum * (1 + _TOL)) * quantum
    if not math.isfinite(top) or top <= 0:
        return top, binding, top
    candidates = {top}
    for w in weights:
        if w.peak == 0:
            continue
        for e in range(dp.weight_exp_min, dp.weight_exp_max + 1):
            g = fill_gain(w, e, dp)
            if quantum is not None:
                g = math.floor(g / quantum * (1 + _TOL)) * quantum
            if 0 < g <= top:
                candidates.add(g)
    best, best_obj = top, objective(top, weights, dp, ref)
    for g in sorted(candidates, reverse=True):
        obj = objective(g, weights, dp, ref)
        if obj < best_obj * (1 - 1e-12):
            best, best_obj = g, obj
    return best, binding, top
