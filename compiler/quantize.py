"""Quantisation pass: a float IR network -> the same network on a profile's integer datapath.

Convention (docs/hw_profiles.md "Fixed-point quantisation"; the bit-accurate simulator relies on it):

* IF/Readout parameters (threshold, bias, v_init, neg_threshold, neg_reset) become integers in
  membrane-state units; ``Population.state_scale`` is the real value of one unit (scalar or per
  channel). The threshold is ``mant << vth_shift`` with ``mant <= threshold_max``; the bias is
  ``bias_mant << bias_exp`` (one exponent per population); ``leak`` becomes ``dv = round(leak *
  2**decay_bits)``.
* Projection weights become mantissas in [weight_min, weight_max], multiples of weight_step, with a
  per-projection ``weight_exp``; ``Projection.scale = state_scale_target * 2**act_shift / unit of
  the source payload`` so ``float weight ~= weight * 2**weight_exp * scale``.
* Inputs become graded ``input_bits`` payloads (unsigned when the calibration range is >= 0) with
  ``Input.scale`` the real value of one unit; the coding is unchanged.
* Per-channel thresholds are folded into per-channel state scales (so into the incoming weights and
  biases): the integer threshold is one value per population, as Loihi's ``vth``.
* The gain (state units per threshold) is chosen by :mod:`spikeport.compiler.gain`.
* Threshold models other than IF (``MultiSpikeIF``: they declare ``state_fields`` and
  ``state_span``) are quantised like IF; the headroom rule reserves ``state_span`` thresholds.
* A signed population whose ``neg_value`` (NegSpike's beta) is not an integer needs a ``graded``
  payload: beta is approximated by Nq / P with the smallest P (P, Nq integers, both within the
  payload's ``bits``) whose relative error is <= ``neg_value_rtol`` (else the best P in range), the
  population becomes a ``GradedSignedIF`` whose +1 / -1 events carry P / -Nq, one payload unit is
  worth 1/P of a +1 spike downstream, and ``decode_scale`` is divided by P. The choice and its error
  are recorded in ``qnet.meta["graded_negative_events"]``.
* Then :func:`~spikeport.compiler.schedule.schedule` sets delays for the profile's synapse_delay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..hw_profiles import Profile, load_profile
from ..ir import IF, Conv2d, Datapath, Dense, Identity, Input, IRError, Network, Population, Projection, Readout, SpikePayload, expand_channel
from .compile_warnings import compile_warnings
from .errors import QuantizationError
from .gain import Bound, WeightRange, choose_gain, weight_bound, weight_exp_for
from .quant_table import InputQuant, LayerQuant, ProjectionQuant, QuantTable
from .schedule import schedule


@dataclass(frozen=True)
class QuantOptions:
    """Knobs of the pass (all recorded in the table).

    input_bits         graded input payload width (None: the profile's datapath.input_bits)
    max_timesteps      Readout states must not saturate for this many steps of worst-case current
    headroom_bits      IF: threshold * 2**headroom_bits must fit the state and current ranges, so a
                       neuron can overshoot its threshold without saturating or wrapping
    weight_percentile  scale each projection for this percentile of |weight| (100: never clip);
                       larger weights are clipped, counted and shown in the table
    compensate_floor   a negative weight_exp floors the accumulated sum, a bias of -(1 - 2**e)/2
                       shifted-sum units per step on average; add that back to the target's bias
    """

    input_bits: int | None = None
    max_timesteps: int = 256
    headroom_bits: int = 2
    weight_percentile: float = 100.0
    compensate_floor: bool = True
    neg_value_rtol: float = 1.0 / 128


@dataclass
class _Source:
    """Real value of one payload unit of a projection source, and its largest |value| (real)."""

    unit: float
    max_abs: float


def _round(x: np.ndarray) -> np.ndarray:
    """Round half up (as the simulator quantises inputs): floor(x + 1/2)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _compact(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Smallest IR form of a per-neuron array: scalar, per channel (C,), or full shape."""
    a = np.asarray(arr)
    if a.size == 0 or np.all(a == a.flat[0]):
        return np.array(a.flat[0], dtype=a.dtype)
    per_channel = a.reshape(shape[0], -1)
    if np.all(per_channel == per_channel[:, :1]):
        return per_channel[:, 0].copy()
    return a.reshape(shape)


# ------------------------------------------------------------------------------------ checks
def _check_network(net: Network, dp: Datapath) -> None:
    if net.quantized:
        raise QuantizationError(f"network is already quantised (datapath {net.datapath.profile!r}); quantise the float network")
    try:
        net.validate()
    except IRError as e:
        raise QuantizationError(f"cannot quantise an invalid network: {e}") from None
    for op in net.operators():
        raise QuantizationError(f"operator {op.name!r} (op {op.op!r}): non-spiking operators have no integer-datapath "
                                "lowering; quantise a network without operators")
    for proj in net.projections():
        if not isinstance(proj, (Dense, Conv2d, Identity)):
            raise QuantizationError(f"projection {proj.name!r}: type {type(proj).__name__} has no quantisation rule")
    for pop in net.populations():
        if not (isinstance(pop.neuron, Readout) or _threshold_model(pop.neuron)):
            raise QuantizationError(f"layer {pop.name!r}: neuron model {type(pop.neuron).__name__} has no quantisation rule")
        pl = pop.payload
        if pl.kind == "analog":
            raise QuantizationError(f"layer {pop.name!r}: payload kind 'analog' cannot be carried by the integer datapath")
        if pl.bits > dp.payload_bits:
            raise QuantizationError(f"layer {pop.name!r}: payload bits = {pl.bits} exceed the profile's payload_bits = "
                                    f"{dp.payload_bits} ({dp.profile})")
        if pl.min_level < 0 and float(pl.neg_value) != round(float(pl.neg_value)):
            if pl.kind != "graded" or not isinstance(pop.neuron, IF) or pl.min_level != -1 or pl.max_level != 1:
                raise QuantizationError(f"layer {pop.name!r}: payload neg_value = {pl.neg_value} must be an integer on an "
                                        "integer datapath for a binary/signed payload (use a symmetric negative spike, e.g. "
                                        "NegSpike's IBT case beta = 1, or declare a graded payload of levels [-1, 1] on an "
                                        "IF to carry the rounded ratio)")
            if not float(pl.neg_value) > 0 or pl.bits < 3:
                raise QuantizationError(f"layer {pop.name!r}: graded payload neg_value = {pl.neg_value} must be > 0 and "
                                        f"bits = {pl.bits} >= 3 to carry it as integer levels")


def _threshold_model(m) -> bool:
    """IF, or an extra model that declares its quantisation hooks (``state_fields``, ``state_span``)."""
    return isinstance(m, IF) or (hasattr(type(m), "state_fields") and hasattr(m, "threshold"))


@dataclass(frozen=True)
class _GradedNeg:
    """NegSpike's beta as integer event levels: +1 carries ``pos``, -1 carries ``-neg`` (beta ~ neg/pos)."""

    beta: float
    pos: int
    neg: int

    @property
    def rel_err(self) -> float:
        return abs(self.neg / self.pos - self.beta) / self.beta


def _graded_neg(pop: Population, rtol: float) -> _GradedNeg | None:
    """Smallest P with |round(beta P)/P - beta| <= rtol * beta and P, round(beta P) < 2^(bits-1)."""
    pl = pop.payload
    beta = float(pl.neg_value)
    if pl.min_level >= 0 or beta == round(beta):
        return None
    top = 2 ** (pl.bits - 1) - 1
    best = None
    for p in range(1, top + 1):
        q = int(_round(beta * p))
        if q < 1 or q > top:
            continue
        cand = _GradedNeg(beta, p, q)
        if best is None or cand.rel_err < best.rel_err:
            best = cand
        if cand.rel_err <= rtol:
            return cand
    if best is None:
        raise QuantizationError(f"layer {pop.name!r}: neg_value = {beta} cannot be carried by {pl.bits}-bit graded levels")
    return best


def _to_graded_signed(pop: Population, g: _GradedNeg) -> None:
    """Rewrite a quantised signed IF with a non-integer neg_value into a GradedSignedIF (see module doc)."""
    from ..ir.neurons_extra import GradedSignedIF  # extra IR models: imported where used

    m = pop.neuron
    pop.neuron = GradedSignedIF(threshold=m.threshold, bias=m.bias, v_init=m.v_init, reset=m.reset, compare=m.compare,
                                leak=m.leak, neg_threshold=m.neg_threshold, neg_reset=m.neg_reset)
    pop.payload = SpikePayload(kind="graded", bits=pop.payload.bits, min_level=-g.neg, max_level=g.pos, neg_value=1.0)
    pop.decode_scale = np.asarray(pop.decode_scale, dtype=np.float64) / g.pos


# ------------------------------------------------------------------------------------ inputs
def _input_range(net: Network, inp: Input, input_range) -> tuple[float, float]:
    rng = input_range if input_range is not None else net.meta.get("input_range")
    if isinstance(rng, dict):
        rng = rng.get(inp.name)
    if rng is None:
        raise QuantizationError(f"input {inp.name!r}: no calibration input range: net.meta['input_range'] = [min, max] is "
                                "missing (the converter writes it); pass quantize(..., input_range=(min, max))")
    lo, hi = (float(v) for v in rng)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo or max(abs(lo), abs(hi)) == 0:
        raise QuantizationError(f"input {inp.name!r}: input_range = [{lo}, {hi}] must be finite, ordered and not all zero")
    return lo, hi


def _quantize_input(net: Network, inp: Input, dp: Datapath, bits: int, input_range) -> tuple[_Source, InputQuant]:
    if inp.coding == "spikes":
        if inp.payload.bits > dp.payload_bits:
            raise QuantizationError(f"input {inp.name!r}: spike payload bits = {inp.payload.bits} exceed payload_bits = {dp.payload_bits}")
        row = InputQuant(inp.name, inp.coding, inp.payload.bits, inp.payload.min_level < 0, float(inp.scale),
                         inp.payload.min_level, inp.payload.max_level, None)
        return _Source(float(inp.scale), inp.payload.max_abs * float(inp.scale)), row
    lo, hi = _input_range(net, inp, input_range)
    if lo >= 0:
        lo_level, hi_level = 0, 2 ** bits - 1
        scale = hi / hi_level
    else:
        lo_level, hi_level = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        scale = max(-lo / -lo_level, hi / hi_level if hi_level else 0.0)
    if scale <= 0:
        raise QuantizationError(f"input {inp.name!r}: input_range = [{lo}, {hi}] gives no positive scale at {bits} bits")
    inp.scale = float(scale)
    inp.payload = SpikePayload(kind="graded", bits=bits, min_level=lo_level, max_level=hi_level)
    row = InputQuant(inp.name, inp.coding, bits, lo < 0, float(scale), lo_level, hi_level, (lo, hi))
    return _Source(float(scale), max(abs(lo), abs(hi))), row


# ------------------------------------------------------------------------------------ weights
@dataclass
class _Incoming:
    proj: Projection
    rows: np.ndarray          # float weights, (R, k): row r feeds target channel r (R = C) or R = 1
    norm: np.ndarray          # rows * unit / (ref_row * 2**act_shift): mantissa at weight_exp 0 per gain unit
    range: WeightRange
    l1: np.ndarray            # (C,) worst-case |current| per step into each channel, real units
    src: _Source
    restore: object           # callable: (R, k) integer rows -> the IR weight shape


def _rows(proj: Projection, C: int, per_channel: bool, shape: tuple[int, ...]):
    w = np.asarray(proj.weight, dtype=np.float64)
    if not per_channel:
        return w.reshape(1, -1), lambda q: q.reshape(w.shape)
    if isinstance(proj, Identity):
        if w.ndim == 0 or w.shape == (C,):
            return np.broadcast_to(w.reshape(-1, 1) if w.ndim else w, (C, 1)).copy(), lambda q: q.reshape(C)
        return w.reshape(C, -1), lambda q: q.reshape(shape)
    return w.reshape(C, -1), lambda q: q.reshape(w.shape)


def _l1(proj: Projection, C: int, shape: tuple[int, ...]) -> np.ndarray:
    """Per target channel: max over its neurons of sum_j |w_ij| (weights only)."""
    w = np.abs(np.asarray(proj.weight, dtype=np.float64))
    if isinstance(proj, Dense):
        return w.sum(axis=1).reshape(C, -1).max(axis=1)
    if isinstance(proj, Conv2d):
        return w.reshape(w.shape[0], -1).sum(axis=1)
    return expand_channel(w, shape).reshape(C, -1).max(axis=1)


def _weight_range(norm: np.ndarray, percentile: float) -> WeightRange:
    pos = float(max(norm.max(initial=0.0), 0.0))
    neg = float(min(norm.min(initial=0.0), 0.0))
    if percentile < 100:
        nz = np.abs(norm[norm != 0])
        if nz.size:
            cap = float(np.percentile(nz, percentile))
            pos, neg = min(pos, cap), max(neg, -cap)
    return WeightRange(pos, neg)


def _quantize_weights(inc: _Incoming, gain: float, s_rows, dp: Datapath, where: str) -> ProjectionQuant:
    """Integer mantissas for one projection at the chosen gain; counts clipping and zeroing."""
    proj, rows = inc.proj, inc.rows
    e = weight_exp_for(inc.range, gain, dp) if inc.range.peak > 0 else max(dp.weight_exp_min, min(0, dp.weight_exp_max))
    if e is None:  # choose_gain keeps every projection representable; this guards the invariant
        raise QuantizationError(f"layer {where!r}: projection {proj.name!r} max weight {inc.range.peak:.4g} does not fit "
                                f"weight_max {dp.weight_max} at weight_exp_max {dp.weight_exp_max}")
    q, over = _mantissas(inc, gain, e, dp)
    acc_bound = acc_limit = 0
    if isinstance(proj, Conv2d) and dp.conv_acc_bits:
        # Lava's Conv wraps its per-step sum to conv_acc_bits: raise the exponent (coarser mantissas)
        # until the worst-case sum fits; where even weight_exp_max cannot, compile warns.
        acc_limit = 2 ** (dp.conv_acc_bits - 1) - 1
        p_max = int(math.ceil(inc.src.max_abs / inc.src.unit - 1e-9))
        acc_bound = _conv_acc_bound(inc, q, p_max)
        while acc_bound > acc_limit and e < dp.weight_exp_max:
            e += 1
            q, over = _mantissas(inc, gain, e, dp)
            acc_bound = _conv_acc_bound(inc, q, p_max)
    scale_rows = s_rows * 2.0 ** dp.act_shift / inc.src.unit
    view = q * 2.0 ** e * scale_rows
    err = np.abs(view - rows)
    scale = np.asarray(scale_rows, dtype=np.float64)
    proj.weight = inc.restore(q).astype(np.int64)
    proj.weight_exp = int(e)
    proj.scale = scale.reshape(-1) if scale.ndim else np.array(float(scale))
    peak = float(np.abs(rows).max(initial=0.0))
    return ProjectionQuant(
        name=proj.name, source=proj.source, connectivity=proj.connectivity, weight_exp=int(e), n_weights=int(rows.size),
        clipped=int(over.sum()), zeroed=int(((rows != 0) & (q == 0)).sum()),
        max_abs_err=float(err.max(initial=0.0)), err_bound=float(dp.weight_step / 2 * 2.0 ** e * scale.max()),
        max_rel_err=float(err.max(initial=0.0) / peak) if peak else 0.0, max_mantissa=int(np.abs(q).max(initial=0)),
        acc_bound=int(acc_bound), acc_limit=int(acc_limit), n_nonzero=int((rows != 0).sum()),
    )


def _mantissas(inc: _Incoming, gain: float, e: int, dp: Datapath) -> tuple[np.ndarray, np.ndarray]:
    """Rounded, clipped weight mantissas at exponent e, and the mask of clipped ones."""
    q = _round(inc.norm * (gain / 2.0 ** e) / dp.weight_step) * dp.weight_step
    over = (q > dp.weight_max) | (q < dp.weight_min)
    return np.clip(q, dp.weight_min, dp.weight_max), over


def _conv_acc_bound(inc: _Incoming, q: np.ndarray, p_max: int) -> int:
    """max over output channels of sum |mantissa| * largest payload: bounds every Conv sum (as the simulator)."""
    w = np.abs(inc.restore(q)).reshape(np.shape(inc.proj.weight)[0], -1)
    return int(w.sum(axis=1).max(initial=0)) * p_max


# ------------------------------------------------------------------------------------ populations
def _reference(pop: Population) -> tuple[np.ndarray | float, bool]:
    """Per-channel threshold (folded) or a scalar; a threshold varying inside a channel is an error."""
    C = pop.channels
    th = np.asarray(pop.neuron.threshold, dtype=np.float64)
    if th.ndim == 0:
        return float(th), False
    if th.shape != (C,):
        per = th.reshape(C, -1)
        if not np.all(per == per[:, :1]):
            raise QuantizationError(f"layer {pop.name!r}: threshold varies within a channel (range {th.min():.4g}..{th.max():.4g});"
                                    " the datapath holds one threshold per population (per-channel values are folded)")
        th = per[:, 0]
    if np.all(th == th[0]):
        return float(th[0]), False
    return th.copy(), True


def _quantize_bias(b_exact: np.ndarray, dp: Datapath, where: str) -> tuple[np.ndarray, int, int]:
    """bias = bias_mant << bias_exp with the smallest exponent whose mantissa range holds all biases."""
    if dp.bias_exp_max < 0:
        raise QuantizationError(f"layer {where!r}: profile {dp.profile!r} bias_exp_max = {dp.bias_exp_max} < 0 is not supported")
    for e in range(max(dp.bias_exp_min, 0), dp.bias_exp_max + 1):
        mant = _round(b_exact / 2.0 ** e)
        if np.abs(mant).max(initial=0) <= dp.bias_max:
            return (mant * 2 ** e).astype(np.int64), e, int(np.abs(mant).max(initial=0))
    raise QuantizationError(f"layer {where!r}: bias {np.abs(b_exact).max():.6g} state units exceeds bias_max {dp.bias_max} "
                            f"<< bias_exp_max {dp.bias_exp_max}")


def floor_compensation(projections: list[ProjectionQuant], dp: Datapath) -> float:
    """State units added to the bias for the floor ``>>`` of negative weight exponents: the mean loss
    of ``acc >> -e`` is ``(1 - 2^e) / 2`` activation units, ``2^act_shift`` state units each."""
    return sum(2.0 ** dp.act_shift * (1 - 2.0 ** pq.weight_exp) / 2 for pq in projections if pq.weight_exp < 0)


def _cuba_decays(pop: Population, dp: Datapath, s_full: np.ndarray) -> int:
    """CubaLIF: float decay fractions -> Lava's 12-bit registers (docs/fixed_point.md), u_init to state units.

    dv = round(dv * 4096) (v * (4096 - dv) >> 12); du = round(du * 4096) - 1 (Lava's ds_offset = 1:
    u * (4096 - (du + 1)) >> 12, so a float du = 1 keeps no current, du = 4095). Lava's LIF has no
    current bias, so a nonzero one is refused."""
    m, unity = pop.neuron, 2 ** dp.decay_bits
    dv = int(_round(float(m.dv) * unity))
    du = int(_round(float(m.du) * unity)) - 1
    if not 0 <= dv <= unity - 1:
        raise QuantizationError(f"layer {pop.name!r}: voltage decay {m.dv} -> dv {dv} outside 0..{unity - 1} ({dp.decay_bits}-bit)")
    if not 0 <= du <= unity - 1:
        raise QuantizationError(f"layer {pop.name!r}: current decay {m.du} -> du {du} outside 0..{unity - 1} (Lava's du register "
                                "is offset by one: a current that never decays is not representable)")
    if np.any(np.asarray(m.current_bias) != 0):
        raise QuantizationError(f"layer {pop.name!r}: current_bias {np.abs(np.asarray(m.current_bias)).max():.4g} has no place on "
                                f"{dp.profile}'s datapath (Lava's LIF adds its bias to v, not to u)")
    m.u_init = _compact(_state_int(expand_channel(np.asarray(m.u_init, dtype=np.float64), tuple(pop.shape)) / s_full,
                                   dp, pop.name, "u_init"), tuple(pop.shape))
    m.du, m.dv = du, dv
    return dv


def _state_int(x: np.ndarray, dp: Datapath, where: str, name: str) -> np.ndarray:
    q = _round(x)
    if np.abs(q).max(initial=0) > dp.state_max:
        raise QuantizationError(f"layer {where!r}: {name} {np.abs(q).max():.0f} state units exceeds state_max {dp.state_max}")
    return q.astype(np.int64)


def _quantize_population(net: Network, pop: Population, dp: Datapath, sources: dict[str, _Source],
                         opt: QuantOptions) -> LayerQuant:
    shape, C, m = tuple(pop.shape), pop.channels, pop.neuron
    is_if = _threshold_model(m)
    ref, folded = _reference(pop) if is_if else (1.0, False)
    per_channel = np.ndim(ref) == 1
    ref_rows = np.asarray(ref).reshape(C, 1) if per_channel else ref
    ref_c = np.broadcast_to(np.asarray(ref, dtype=np.float64), (C,))
    ref_full = expand_channel(np.asarray(ref, dtype=np.float64), shape)

    incoming: list[_Incoming] = []
    for proj in net.incoming(pop.name):
        src = sources[proj.source]
        rows, restore = _rows(proj, C, per_channel, shape)
        norm = rows * src.unit / (ref_rows * 2.0 ** dp.act_shift)
        incoming.append(_Incoming(proj, rows, norm, _weight_range(norm, opt.weight_percentile),
                                  _l1(proj, C, shape) * src.max_abs, src, restore))

    bias_n = expand_channel(np.asarray(m.bias, dtype=np.float64), shape) / ref_full
    step_n = float(((sum(i.l1 for i in incoming) + np.abs(bias_n * ref_full).reshape(C, -1).max(axis=1)) / ref_c).max())

    bounds: list[Bound] = []
    for inc in incoming:
        if inc.range.peak > 0:
            bounds.append(Bound(weight_bound(inc.range, dp), f"weights of {inc.proj.name}",
                                f"projection {inc.proj.name!r}: weight {inc.range.peak * 2 ** dp.act_shift:.4g} x reference "
                                f"needs a mantissa above weight_max {dp.weight_max} at weight_exp_max {dp.weight_exp_max}"))
    if np.abs(bias_n).max(initial=0) > 0:
        bmax = float(np.abs(bias_n).max())
        comp_room = len(incoming) * 2.0 ** (dp.act_shift - 1) if opt.compensate_floor else 0.0
        bounds.append(Bound((dp.bias_max * 2.0 ** dp.bias_exp_max - comp_room) / bmax, "bias",
                            f"bias {bmax:.4g} x reference exceeds bias_max {dp.bias_max} << bias_exp_max {dp.bias_exp_max}"))
    state_fields = (("v_init", "neg_threshold", "neg_reset") if isinstance(m, IF)
                    else tuple(getattr(type(m), "state_fields", ("v_init",))))
    for name in state_fields:
        val = getattr(m, name)
        if val is not None and np.abs(np.asarray(val)).max(initial=0) > 0:
            vmax = float(np.abs(expand_channel(np.asarray(val, dtype=np.float64), shape) / ref_full).max())
            bounds.append(Bound(dp.state_max / vmax, name, f"{name} {vmax:.4g} x reference exceeds state_max {dp.state_max}"))
    cur_max = 2 ** (dp.current_bits - 1) - 1
    if is_if:
        q = 2.0 ** dp.vth_shift
        bounds.append(Bound(dp.threshold_max * q, "threshold bits", f"threshold mantissa above threshold_max {dp.threshold_max}"))
        span = int(getattr(m, "state_span", 1))
        room = min(dp.state_max, cur_max) / 2.0 ** opt.headroom_bits / span
        bounds.append(Bound(room, f"headroom {opt.headroom_bits} bits" + (f" x {span} thresholds" if span > 1 else ""),
                            f"threshold x {span} << {opt.headroom_bits} headroom bits exceeds the state/current range "
                            f"{min(dp.state_max, cur_max)}"))
        gain, binding, top = choose_gain(bounds, [i.range for i in incoming], dp, quantum=q, ref=1.0)
        if not gain >= q:
            raise QuantizationError(f"layer {pop.name!r}: not representable on {dp.profile}: {binding.detail} even with threshold "
                                    f"mantissa 1 (largest allowed threshold mantissa {binding.gain / q:.3g} < 1)")
    else:
        if step_n > 0:
            bounds.append(Bound(dp.state_max / (opt.max_timesteps * step_n), f"saturation over {opt.max_timesteps} steps",
                                f"worst-case current {step_n:.4g} x {opt.max_timesteps} steps exceeds state_max {dp.state_max}"))
            bounds.append(Bound(cur_max / step_n, "current range", f"worst-case current {step_n:.4g} exceeds current range {cur_max}"))
        if not bounds:
            bounds.append(Bound(1.0, "no weights or bias", "nothing to represent"))
        gain, binding, top = choose_gain(bounds, [i.range for i in incoming], dp, quantum=None, ref=step_n or 1.0)
        if not (math.isfinite(gain) and gain > 0):
            raise QuantizationError(f"layer {pop.name!r}: no positive state scale satisfies {binding.detail}")

    s_c = ref_c / gain
    s_rows = s_c.reshape(C, 1) if per_channel else float(ref) / gain
    s_full = expand_channel(s_c, shape) if per_channel else np.full(shape, float(ref) / gain)
    pop.state_scale = s_c.copy() if per_channel else np.array(float(ref) / gain)
    limited_by = binding.what if gain >= top else f"weight fill (below {binding.what})"

    projections = [_quantize_weights(inc, gain, s_rows, dp, pop.name) for inc in incoming]

    floor_comp = floor_compensation(projections, dp) if opt.compensate_floor else 0.0
    b_exact = expand_channel(np.asarray(m.bias, dtype=np.float64), shape) / s_full + floor_comp
    bias_int, bias_exp, bias_mant_max = _quantize_bias(b_exact, dp, pop.name)
    nz = b_exact != 0
    bias_rel = float((np.abs(bias_int[nz] - b_exact[nz]) / np.abs(b_exact[nz])).max(initial=0.0))
    m.bias = _compact(bias_int, shape)
    m.v_init = _compact(_state_int(expand_channel(np.asarray(m.v_init, dtype=np.float64), shape) / s_full, dp, pop.name, "v_init"), shape)

    threshold_mant = threshold = None
    th_rel = 0.0
    leak_dv = None
    if is_if:
        threshold_mant = int(round(gain / 2.0 ** dp.vth_shift))
        threshold = threshold_mant << dp.vth_shift
        th_rel = float(np.abs(threshold * s_c - ref_c).max() / ref_c.min()) if C else 0.0
        m.threshold = np.array(threshold, dtype=np.int64)
        for name in ("neg_threshold", "neg_reset"):
            val = getattr(m, name, None)
            if val is not None:
                setattr(m, name, _compact(_state_int(expand_channel(np.asarray(val, dtype=np.float64), shape) / s_full,
                                                     dp, pop.name, name), shape))
        if hasattr(m, "leak"):
            leak_dv = int(_round(float(m.leak) * 2 ** dp.decay_bits))
            if not 0 <= leak_dv <= 2 ** dp.decay_bits - 1:
                raise QuantizationError(f"layer {pop.name!r}: leak {m.leak} -> dv {leak_dv} outside 0..{2 ** dp.decay_bits - 1} "
                                        f"({dp.decay_bits}-bit decay)")
            m.leak = leak_dv
        if hasattr(m, "du") and hasattr(m, "dv"):
            leak_dv = _cuba_decays(pop, dp, s_full)

    worst = step_n * gain
    if is_if:
        steps = None
        risks = []
        if threshold + worst > dp.state_max:
            risks.append("state may saturate")
        if worst > cur_max:
            risks.append(f"current may {dp.current_overflow}")
        risk = ", ".join(risks) + f" under worst-case input ({worst / threshold:.1f}x threshold per step)" if risks else "none"
    else:
        v0 = float(np.abs(np.asarray(m.v_init)).max(initial=0))
        steps = math.inf if worst == 0 else math.floor((dp.state_max - v0) / worst)
        risk = "none" if steps >= opt.max_timesteps else f"state may saturate after {steps} steps of worst-case input"
    return LayerQuant(
        name=pop.name, neuron=type(m).__name__, shape=shape,
        state_scale=s_c.tolist() if per_channel else float(ref) / gain, gain=float(gain),
        threshold_mant=threshold_mant, threshold=threshold, threshold_rel_err=th_rel, threshold_folded=folded,
        bias_exp=bias_exp, bias_mant_max=bias_mant_max, bias_max_rel_err=bias_rel, floor_comp=float(floor_comp), leak_dv=leak_dv,
        limited_by=limited_by, worst_step_current=float(worst), steps_to_saturation=steps, saturation_risk=risk,
        projections=projections,
    )


NETX_BIAS_EXP = 6   # lava-dl netx hdf5: every CUBA layer gets bias_exp 6 (bias = bias_mant << 6)


def _cancel_fill_bias(qnet: Network, dp: Datapath) -> dict:
    """Always-active neurons (``LavaLIF``: Lava's ungated LIF) add their bias during the pipeline fill
    ``[0, t_start)`` while no input has arrived. Start them at ``v_init - t_start * bias`` so that v at
    ``t_start`` is the windowed IF's ``v_init``. Exact when no fill step can fire (strict '>': the
    first fill step's ``v_init' + bias`` must stay <= threshold, which limits it for negative biases)
    and the state range holds it; leaky neurons are left as they are. Returns per population
    {t_start, exact, neurons_limited}."""
    notes = {}
    for pop in qnet.populations():
        m = pop.neuron
        if not getattr(type(m), "always_active", False) or pop.t_start == 0:
            continue
        shape = tuple(pop.shape)
        bias = expand_channel(np.asarray(m.bias, dtype=np.int64), shape).astype(np.int64)
        if not bias.any():
            continue
        if float(getattr(m, "leak", 0)) != 0 or not hasattr(m, "leak"):   # LavaCubaLIF: v and u decay
            notes[pop.name] = {"t_start": int(pop.t_start), "exact": False, "neurons_limited": int(pop.size),
                               "why": "leaky: the fill decays v, not cancelled"}
            continue
        v0 = expand_channel(np.asarray(m.v_init, dtype=np.int64), shape).astype(np.int64)
        theta = expand_channel(np.asarray(m.threshold, dtype=np.int64), shape).astype(np.int64)
        want = v0 - int(pop.t_start) * bias
        new = np.clip(np.minimum(want, theta - bias), -dp.state_max, dp.state_max)
        m.v_init = _compact(new, shape)
        limited = int((new != want).sum())
        notes[pop.name] = {"t_start": int(pop.t_start), "exact": limited == 0, "neurons_limited": limited}
    return notes


# ------------------------------------------------------------------------------------ the pass
def _quantize_with_operators(net: Network, prof: Profile, dp: Datapath, bits: int, input_range,
                             max_timesteps: int, release_input: bool = False) -> tuple[Network, QuantTable]:
    """Networks with typed operators (ECMT ViTs): compiler/quantize_operators.py, no delay schedule
    (the operator simulator evaluates the graph in node order within each step)."""
    from ..ir import check_limits
    from .quantize_operators import quantize_operator_network

    if net.quantized:
        raise QuantizationError(f"network is already quantised (datapath {net.datapath.profile!r}); quantise the float network")
    try:
        net.validate()
    except IRError as e:
        raise QuantizationError(f"cannot quantise an invalid network: {e}") from None
    # the passes replace arrays, never write into them; release_input: no copy, each float array is
    # dropped as its integer one replaces it
    qnet = net if release_input else net.copy(share_arrays=True)
    if net.coding == "C3":   # MBE Transformers (--method mbe): compiler/quantize_mbe_vit.py
        from .quantize_mbe_vit import quantize_mbe_network as quantize_operator_network
    elif net.coding == "C2":   # stbif / pmsm on a ViT: compiler/quantize_c2.py
        from .quantize_c2 import quantize_c2_network as quantize_operator_network
    table = quantize_operator_network(net, qnet, prof, dp, input_bits=bits, input_range=input_range,
                                      max_timesteps=max_timesteps)
    table.warnings = compile_warnings(table, qnet.outputs)
    qnet.datapath = dp
    qnet.meta["quantization"] = table.as_dict()
    try:
        qnet.validate()
        check_limits(qnet, "quantised network")
    except IRError as e:  # a value the quantiser could not fit: name it, write nothing
        raise QuantizationError(f"{e}") from None
    return qnet, table


def quantize(net: Network, profile: Profile | str | Path, *, input_bits: int | None = None,
             input_range: tuple[float, float] | dict | None = None, max_timesteps: int = 256,
             headroom_bits: int = 2, weight_percentile: float = 100.0,
             compensate_floor: bool = True, neg_value_rtol: float = 1.0 / 128,
             netx: bool = False, release_input: bool = False) -> tuple[Network, QuantTable]:
    """Lower a float network to ``profile``'s datapath; returns the quantised copy and its table.

    ``input_range`` overrides ``net.meta["input_range"]`` (``[min, max]``, or a dict per input name).
    ``netx``: the datapath lava-dl netx reads exactly (weight_exp 0, bias_exp 6), as for a network
    converted with ``preset='netx'``.
    ``neg_value_rtol``: relative error allowed when a non-integer neg_value on a graded payload is
    carried as integer levels (module docstring). The input network is never modified, unless
    ``release_input`` and it has operators (a Transformer): then ``net`` itself is quantised and
    returned (its float arrays are freed as the integer ones replace them, so a large network is not
    held in both forms; after an error it is half-quantised); the result is the same either way. Raises QuantizationError naming the layer, the parameter,
    the value and the limit when something cannot be represented.
    """
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    dp = replace(prof.datapath)
    bits = dp.input_bits if input_bits is None else int(input_bits)
    if not 1 <= bits <= 32 or (input_bits is not None and bits > max(dp.input_bits, dp.payload_bits)):
        raise QuantizationError(f"input_bits = {bits} exceeds the profile's limit {max(dp.input_bits, dp.payload_bits)} "
                                f"(input_bits / payload_bits of {prof.name})")
    if not 0 < neg_value_rtol < 1:
        raise QuantizationError(f"options: neg_value_rtol = {neg_value_rtol} must lie in (0, 1)")
    if max_timesteps < 1 or headroom_bits < 0 or not 0 < weight_percentile <= 100:
        raise QuantizationError(f"options: max_timesteps = {max_timesteps} must be >= 1, headroom_bits = {headroom_bits} >= 0, "
                                f"weight_percentile = {weight_percentile} in (0, 100]")
    opt = QuantOptions(bits, max_timesteps, headroom_bits, weight_percentile, compensate_floor, neg_value_rtol)
    if net.operators():   # Transformer operator networks: compiler/quantize_operators.py
        return _quantize_with_operators(net, prof, dp, bits, input_range, max_timesteps, release_input)
    _check_network(net, dp)
    netx = netx or net.meta.get("options", {}).get("preset") == "netx"
    if netx:   # convert preset='netx': biases in netx's fixed bias_exp, mixed-sign weights w << e within
        # [-256, 254] as integers, weight_exp 0 (netx re-derives exponents and clips), docs/loihi2.md "netx export"
        if not dp.bias_exp_min <= NETX_BIAS_EXP <= dp.bias_exp_max:
            raise QuantizationError(f"netx datapath (preset 'netx' / compile --netx): profile {prof.name!r} bias_exp range [{dp.bias_exp_min}, "
                                    f"{dp.bias_exp_max}] excludes netx's bias_exp {NETX_BIAS_EXP}")
        dp = replace(dp, bias_exp_min=NETX_BIAS_EXP, bias_exp_max=NETX_BIAS_EXP,
                     weight_exp_min=0, weight_exp_max=0)

    qnet = net.copy()
    table = QuantTable(profile=prof.name, options={"input_bits": bits, "max_timesteps": max_timesteps,
                                                   "headroom_bits": headroom_bits, "weight_percentile": weight_percentile,
                                                   "compensate_floor": compensate_floor, "neg_value_rtol": neg_value_rtol})
    sources: dict[str, _Source] = {}
    for inp in qnet.inputs():
        sources[inp.name], row = _quantize_input(qnet, inp, dp, bits, input_range)
        table.inputs.append(row)
    graded: dict[str, _GradedNeg] = {}
    for pop in qnet.populations():
        g = _graded_neg(pop, opt.neg_value_rtol)
        if g is None:
            sources[pop.name] = _Source(1.0, pop.payload.max_abs)
        else:  # one payload unit is 1/P of a +1 spike; the largest event carries max(P, Nq) units
            graded[pop.name] = g
            sources[pop.name] = _Source(1.0 / g.pos, max(g.pos, g.neg) / g.pos)
    for pop in qnet.populations():
        table.layers.append(_quantize_population(qnet, pop, dp, sources, opt))
    for name, g in graded.items():
        _to_graded_signed(qnet[name], g)
    if graded:
        qnet.meta["graded_negative_events"] = {name: {"beta": g.beta, "pos_level": g.pos, "neg_level": g.neg,
                                                      "beta_realised": g.neg / g.pos, "rel_err": g.rel_err}
                                               for name, g in graded.items()}

    table.warnings = compile_warnings(table, qnet.outputs)
    qnet.datapath = dp
    qnet = schedule(qnet, dp.synapse_delay)
    # netx has no v_init: with preset 'netx' the bias acts during the pipeline fill, as it does in lava-dl
    fill = {} if netx else _cancel_fill_bias(qnet, dp)
    if fill:
        qnet.meta["fill_bias_cancelled"] = fill
    # The quantised file carries its own table, so fidelity reports can say why a layer diverges.
    qnet.meta["quantization"] = table.as_dict()
    try:
        qnet.validate()
    except IRError as e:  # a bug in this pass, never the user's input
        raise QuantizationError(f"internal: the quantised network is invalid: {e}") from None
    return qnet, table
