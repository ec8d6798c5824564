"""Quantisation rule of (signed) IF populations in Transformer operator networks (``--method aif`` and
the layer-wise baseline on ViTs; convert/aif_vit.py).

Called by ``_OpQuantizer.population`` (compiler/quantize_operators.py). The neuron keeps the CNN IF
datapath of compiler/quantize.py and simulator/neurons.py (Lava's LIF order, docs/fixed_point.md)::

    u = wrap_current(wrap32(a_in << act_shift));  v = sat_state(v + u + bias)
    s = +1 if v CMP threshold;  -1 if v < -neg_threshold;  v -= threshold (s = +1), v += neg_reset (s = -1)

with integers in units of the population's ``state_scale`` s. What differs from the CNN rule is
where the channel-wise thresholds go. A CNN folds per-channel thresholds into per-channel state
scales (one integer threshold per population); an AIF neuron of a ViT has its channel on the last
axis (or (head, key token)) and is fed by one Identity from the accumulator or an operator, so
folding would turn that exact Identity into a per-neuron 8-bit weight mantissa. Here the state unit
is one power of two times the source's unit (as the multi-threshold rule does, so the Identity is a
power of two), and the thresholds stay per neuron: ``threshold_i = mant_i << vth_shift`` with the
largest mantissa in ``[2^(b-1), 2^b)``, b = ``MT_THETA_BITS`` (coarser when the input range needs the
room: the largest current stays ``2^headroom`` below the state and current ranges).

* bias (AIF: ``-z``) is ``bias_mant << bias_exp`` (compiler/quantize.py's ``_quantize_bias``) plus the
  CNN rule's floor compensation for negative weight exponents; v(0), neg_threshold become state
  integers; ``neg_reset`` is the integer threshold where it equals the threshold (AIF's +-theta reset).
* One event's value is its threshold (``decode_scale == threshold``, reset by subtraction; refused
  otherwise). Projections see the +1 / -1 event codes; their float weights already carry theta
  (``W diag(theta)``), and are re-folded with the quantised threshold (``theta_q / theta`` per
  source element) so the downstream weight and the neuron's firing grid agree.
* Operators reading the population (AIF's products, methods.md section 2) see the decoded integer
  ``e * threshold + z_q`` in units of s, with ``z_q = -bias`` where the float offset is ``-bias``
  (AIF) and ``round(decode_offset / s)`` otherwise; ``decode_scale = threshold * s`` and
  ``decode_offset = z_q * s`` afterwards, so the population decodes as the CNN's IF.
"""
from __future__ import annotations

import numpy as np

from ..ir import Identity, Population, expand_channel
from ..ir import operators as O
from ..ir.nodes import Conv2d, Dense
from .quant_table import LayerQuant

IF_HEADROOM_BITS = 2     # the largest calibrated input current stays 2^2 below the state/current range


def _int(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def check_if_population(q, pop: Population) -> None:
    """What the rule takes: reset by subtraction, no leak, one event worth its threshold, +-1 events."""
    m, shape, where = pop.neuron, tuple(pop.shape), f"layer {pop.name!r}"
    if m.reset != "subtract" or float(m.leak) != 0:
        raise q.err(where, f"IF with reset {m.reset!r} and leak {m.leak}: operator networks take the AIF / layer-wise "
                           "signed IF (reset by subtraction, no leak)")
    th = expand_channel(np.asarray(m.threshold, dtype=np.float64), shape)
    if not np.array_equal(expand_channel(np.asarray(pop.decode_scale, dtype=np.float64), shape), th):
        raise q.err(where, "IF decode_scale differs from its threshold: in an operator network one event is worth its "
                           "threshold (AIF's s theta + z)")
    if m.neg_threshold is not None and not np.array_equal(expand_channel(np.asarray(m.neg_reset, dtype=np.float64), shape), th):
        raise q.err(where, "signed IF whose neg_reset differs from its threshold (AIF resets by +-theta)")
    if float(pop.payload.neg_value) != 1.0 or pop.payload.kind not in ("binary", "signed"):
        raise q.err(where, f"IF payload {pop.payload.kind!r} with neg_value {pop.payload.neg_value}: operator networks "
                           "take +1 / -1 events")
    for p in q.net.outgoing(pop.name):
        if isinstance(p, Conv2d):
            raise q.err(f"projection {p.name!r}", "a Conv2d fed by an IF population has no rule in operator networks")


def quantize_if_population(q, pop: Population, incoming) -> LayerQuant:
    """Quantise one IF population of an operator network in place (module docstring); returns its row."""
    from .quantize import _compact, _quantize_bias, _state_int, floor_compensation
    from .quantize_operators import MT_THETA_BITS
    check_if_population(q, pop)
    dp, m, shape = q.dp, pop.neuron, tuple(pop.shape)
    vsh = int(dp.vth_shift)
    th_f = expand_channel(np.asarray(m.threshold, dtype=np.float64), shape)
    th_max = float(th_f.max())
    tb = min(MT_THETA_BITS, dp.threshold_max.bit_length()) + vsh
    s, limited = q._aligned_unit(incoming, th_max, tb), f"threshold {tb - vsh} bits"
    # room: the largest calibrated input current 2^headroom below the state and current ranges
    room = min(dp.state_max, (1 << (dp.current_bits - 1)) - 1) / 2.0 ** IF_HEADROOM_BITS - th_max / s
    cur = sum(q.current_bound(p, calibrated=True) for p in incoming)   # real, per step
    while cur / s > room and th_max / s >= 2 ** (vsh + 1):
        s *= 2.0
        room = min(dp.state_max, (1 << (dp.current_bits - 1)) - 1) / 2.0 ** IF_HEADROOM_BITS - th_max / s
        limited = f"input range {cur:.4g} (headroom {IF_HEADROOM_BITS} bits)"
    # the bias (AIF: -z) fits bias_max << bias_exp_max with room for the floor compensation
    b_max = float(np.abs(np.asarray(m.bias, dtype=np.float64)).max(initial=0.0))
    b_room = dp.bias_max * 2.0 ** dp.bias_exp_max - len(incoming) * 2.0 ** dp.act_shift
    while b_max / s > b_room and th_max / s >= 2 ** (vsh + 1):
        s *= 2.0
        limited = f"bias {b_max:.4g} (bias_max {dp.bias_max} << {dp.bias_exp_max})"
    # a_in unit: the CNN convention (u = a_in << act_shift), coarsened as relays are until every
    # incoming projection's exponent fits (powers of two: s follows s_in exactly)
    s_in, coarsened = q._coarsen_for_weight_exponents(incoming, s * 2.0 ** dp.act_shift)
    if coarsened:
        s, limited = s_in / 2.0 ** dp.act_shift, "weight exponent"
    projections = [q._projection(p, s_in) for p in incoming]
    mant = np.maximum(1, _int(th_f / s / 2 ** vsh)).astype(np.int64)
    if int(mant.max()) > dp.threshold_max:
        raise q.err(f"layer {pop.name!r}", f"threshold mantissa {int(mant.max())} exceeds threshold_max {dp.threshold_max}")
    th_i = mant << vsh
    th_err = float((np.abs(th_i * s - th_f) / th_f).max(initial=0.0))
    if 2 * int(th_i.max()) > dp.state_max:
        raise q.err(f"layer {pop.name!r}", f"threshold {int(th_i.max())} x 2 exceeds state_max {dp.state_max}")
    bias_f = expand_channel(np.asarray(m.bias, dtype=np.float64), shape)
    offset_f = expand_channel(np.asarray(pop.decode_offset, dtype=np.float64), shape)
    comp = floor_compensation(projections, dp)
    bias_int, bias_exp, bias_mant_max = _quantize_bias(bias_f / s + comp, dp, pop.name)
    nz = bias_f != 0
    bias_rel = float((np.abs(bias_int[nz] - bias_f[nz] / s) / np.abs(bias_f[nz] / s)).max(initial=0.0))
    # AIF: the neuron integrates x - z and decodes s theta + z, so the offset is minus the integer bias
    # (the floor compensation is a rounding correction of the input, not part of z)
    z_int = np.where(offset_f == -bias_f, _int(comp - bias_int), _int(offset_f / s)).astype(np.int64)
    m.v_init = _compact(_state_int(expand_channel(np.asarray(m.v_init, dtype=np.float64), shape) / s, dp, pop.name,
                                   "v_init"), shape)
    m.threshold = _compact(th_i, shape)
    m.bias = _compact(bias_int, shape)
    if m.neg_threshold is not None:
        m.neg_threshold = _compact(_state_int(expand_channel(np.asarray(m.neg_threshold, dtype=np.float64), shape) / s,
                                              dp, pop.name, "neg_threshold"), shape)
        m.neg_reset = _compact(th_i, shape)
    m.leak = 0
    view_max = int((th_i + np.abs(z_int)).max(initial=0))
    if view_max > q.top:
        raise q.err(f"layer {pop.name!r}", f"decoded value {view_max} (threshold + offset) exceeds the "
                                           f"{dp.payload_bits}-bit payload operators read")
    pop.state_scale = np.array(s)
    pop.decode_scale = _compact(th_i * s, shape)
    pop.decode_offset = _compact(z_int * s, shape)
    q.unit[pop.name] = s          # operators read e * threshold + z_q in units of s
    q.femit[pop.name] = s         # projections read the +-1 codes: unit / femit = 1 (weights carry theta)
    q.vmax[pop.name] = view_max
    q.pmax[pop.name] = 1
    q.eratio[pop.name] = th_i * s / th_f
    worst = cur / s
    risk = "none" if worst <= room else f"input current up to {worst / float(th_i.max()):.1f}x the largest threshold"
    return LayerQuant(name=pop.name, neuron=type(m).__name__, shape=shape, state_scale=float(s), gain=float(1.0 / s),
                      threshold_mant=int(mant.max()), threshold=int(th_i.max()), threshold_rel_err=th_err,
                      threshold_folded=False, bias_exp=int(bias_exp), bias_mant_max=int(bias_mant_max),
                      bias_max_rel_err=bias_rel, floor_comp=float(comp), leak_dv=0, limited_by=limited,
                      worst_step_current=float(worst), steps_to_saturation=None, saturation_risk=risk,
                      projections=projections)


def refold(q, p, w: np.ndarray) -> np.ndarray:
    """Float weights of projection ``p`` with its IF source's quantised thresholds (theta_q / theta per
    source element) folded in; ``w`` unchanged when the source is not an IF population."""
    r = q.eratio.get(p.source)
    if r is None:
        return w
    if isinstance(p, O.TokenDense):
        rows = r.reshape(-1, r.shape[-1])
        if np.any(rows != rows[:1]):
            raise q.err(f"projection {p.name!r}", f"the thresholds of its source {p.source!r} differ between tokens; a "
                                                  "shared token weight needs one threshold per input channel")
        return w * rows[0][None, :]
    if isinstance(p, Dense):
        return w * r.reshape(1, -1)
    if isinstance(p, Identity):
        return w * r if np.ndim(w) == 0 or np.shape(w) == r.shape else w * r.reshape(np.shape(w))
    raise q.err(f"projection {p.name!r}", f"{type(p).__name__} fed by an IF population has no rule in operator networks")

