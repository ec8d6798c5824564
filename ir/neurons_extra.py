"""Extra IR neuron models: PMSM's multi-spike IF and the graded-payload form of a signed IF.

``MultiSpikeIF`` (PMSM, methods.md section 4) emits a signed integer count per step as one graded
event. ``GradedSignedIF`` is the integer-datapath form of a signed IF whose negative events are
worth a non-integer multiple of its positive ones (NegSpike's beta): the quantiser
(``compiler.quantize``) rewrites such an ``IF`` into it, with a +1 event carrying the graded payload
``max_level`` and a -1 event carrying ``min_level``. Both register with :func:`register_neuron`
so that ``ir.load`` and ``Network.validate`` know them; simulator kernels live in
``simulator/kernels_extra.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .nodes import IF, ArrayLike, NeuronModel, check_array_fields, check_if_rules, register_neuron


@register_neuron
@dataclass
class MultiSpikeIF(NeuronModel):
    """PMSM augmented IF neuron (one signed multi-spike per step), per step t while active::

        v_tmp = v + I(t) + bias
        n     = clip(floor(v_tmp / threshold), -n_neg, n_pos)
        emit n as ONE event (graded payload, levels [-n_neg, n_pos]; value n * threshold in ANN units)
        v     = v_tmp - n * threshold

    ``v(0) = v_init`` (PMSM: threshold / 2, so the first step equals the PQA quantiser
    ``clip(floor(I/threshold + 1/2), -n_neg, n_pos)`` exactly). ``n_pos`` / ``n_neg`` are event counts
    (integers >= 0), the same in float and quantised graphs; in a quantised graph ``threshold``,
    ``bias`` and ``v_init`` are integers in state units and the floor is the exact integer floor
    division (rounds toward minus infinity, also for negative ``v_tmp``).
    """

    threshold: ArrayLike = field(default_factory=lambda: np.array(1.0))
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.5))
    n_pos: int = 1
    n_neg: int = 0

    array_fields: ClassVar[tuple[str, ...]] = ("threshold", "bias", "v_init")
    # quantiser hooks (compiler/quantize.py): state-unit fields besides threshold and bias, and how
    # many thresholds the state may legitimately span (headroom for the gain choice)
    state_fields: ClassVar[tuple[str, ...]] = ("v_init",)

    @property
    def state_span(self) -> int:
        return max(int(self.n_pos), int(self.n_neg)) + 1

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        for name in ("n_pos", "n_neg"):
            v = getattr(self, name)
            if int(v) != v or int(v) < 0 or int(v) > 2 ** 30:
                raise ValueError(f"{where}: MultiSpikeIF {name} = {v} must be an integer in 0..2^30")
        if int(self.n_pos) + int(self.n_neg) < 1:
            raise ValueError(f"{where}: MultiSpikeIF n_pos = {self.n_pos} and n_neg = {self.n_neg} allow no event")
        check_array_fields(self, where, shape)


@register_neuron
@dataclass
class GradedSignedIF(NeuronModel):
    """Signed IF whose events carry graded payload levels, per step t while active::

        v <- v * (1 - leak) + I(t) + bias
        s  = +1  if v CMP threshold          (CMP '>=' or '>', ``compare``)
             -1  if v < -neg_threshold       (strict)
        reset 'subtract': v -= threshold (s = +1);  v += neg_reset (s = -1);  'zero': v = 0 where s != 0
        a +1 event delivers payload.max_level, a -1 event delivers payload.min_level

    Same dynamics as a signed ``IF``; only the event values differ. NegSpike's beta = Nq / P is
    realised as max_level = P, min_level = -Nq (integers), so downstream weights see one payload unit
    as 1/P of a +1 spike. Quantised graphs only (the quantiser creates it, recording the rounding
    of beta); parameters are integers in state units, ``leak`` is the 12-bit decay ``dv``.
    """

    threshold: ArrayLike = field(default_factory=lambda: np.array(1.0))
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.0))
    reset: str = "subtract"
    compare: str = ">"
    leak: float = 0.0
    neg_threshold: ArrayLike = field(default_factory=lambda: np.array(1.0))
    neg_reset: ArrayLike = field(default_factory=lambda: np.array(1.0))

    array_fields: ClassVar[tuple[str, ...]] = ("threshold", "bias", "v_init", "neg_threshold", "neg_reset")

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        if self.neg_threshold is None or self.neg_reset is None:
            raise ValueError(f"{where}: GradedSignedIF needs neg_threshold and neg_reset")
        check_if_rules(self, where)
        check_array_fields(self, where, shape)


__all__ = ["GradedSignedIF", "MultiSpikeIF"]


@register_neuron
@dataclass
class LavaLIF(IF):
    """Lava's own LIF neuron (``lava.proc.lif``, du = 4095: no current memory), per step t of the
    WHOLE run (not only the population's window)::

        v <- v * (1 - leak) + I(t) + bias;   s = v > threshold;   v = 0 where s

    The IF rule with reset to zero and strict '>', except that it is never gated: like Lava's LIF
    process it updates (adds its bias, may fire) at every step ``0 .. T + latency``, also before
    its inputs arrive (``t_start``) and after they end. In a float network (no latency) that is the
    IF window exactly. The quantiser sets ``v_init = v_init - t_start * bias`` (when that cannot
    fire during the fill, see ``compiler.quantize``) so the state at ``t_start`` is the IF's; events
    after the window reach no downstream window (delays are aligned), they only add to this layer's
    own counts. Binary spikes only (Lava's LIF sends 0/1).
    """

    reset: str = "zero"
    compare: str = ">"
    always_active: ClassVar[bool] = True

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        if self.reset != "zero" or self.compare != ">" or self.neg_threshold is not None:
            raise ValueError(f"{where}: LavaLIF has Lava's LIF semantics: reset 'zero', compare '>', no negative "
                             f"threshold; got reset {self.reset!r}, compare {self.compare!r}, "
                             f"neg_threshold {self.neg_threshold!r}")
        super().validate(where, shape)
