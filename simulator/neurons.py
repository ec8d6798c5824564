"""Neuron kernels, one float and one fixed-point class per IR neuron model, in a dispatch table.

A kernel owns the batched state of one population for one batch, advances it by one active step
(:meth:`step`), counts events and decodes. Adding a neuron model (multi-spike, multi-threshold, ...)
is one subclass per arithmetic plus :func:`register_kernel`. The fixed-point rules follow Lava
0.10.0's ``AbstractPyLifModelFixed.subthr_dynamics``; docs/fixed_point.md cites each one.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir.datapath import Datapath
from ..ir.nodes import IF, NeuronModel, Population, Readout, expand_channel

INT16_MIN, INT16_MAX = -(2 ** 15), 2 ** 15 - 1
INT32_HALF = 2 ** 31


def _param(pop: Population, value, dtype: torch.dtype, device, name: str, integer: bool) -> torch.Tensor:
    """Expand a scalar / per-channel / per-neuron parameter to a flat (n,) tensor."""
    arr = expand_channel(np.asarray(value, dtype=np.float64), tuple(pop.shape)).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"population {pop.name!r}: {name} contains NaN or infinity")
    if integer:
        if not np.array_equal(arr, np.round(arr)):
            bad = arr[arr != np.round(arr)][0]
            raise ValueError(f"population {pop.name!r}: quantised {name} must be integers, found {bad}")
        if np.any(np.abs(arr) >= 2 ** 62):
            raise ValueError(f"population {pop.name!r}: quantised {name} exceeds the int64 range (|{name}| < 2^62)")
        return torch.as_tensor(arr.astype(np.int64), device=device)
    return torch.as_tensor(arr, dtype=dtype, device=device)


def _np_as(t: torch.Tensor, dtype) -> np.ndarray:
    """A new numpy copy of ``t`` in ``dtype`` (numpy's conversions run about 3x faster than torch's
    on CPU; integer-valued counts convert exactly)."""
    return t.detach().cpu().numpy().astype(dtype)


def _zero(device) -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64, device=device)


class NeuronKernel:
    """Batched state and one-step update of a population; subclasses implement the model."""

    spiking = True

    def __init__(self, pop: Population, batch: int, device, dp: Datapath | None, in_bound: int | None):
        self.pop = pop
        self.n = pop.size
        self.batch = batch
        self.device = device
        self.dp = dp
        self.saturation = _zero(device)
        self.saturation_high = _zero(device)   # clipped at the top: lost positive charge (harmful)
        self.wrap = _zero(device)
        self.a16 = _zero(device)
        self.int32 = _zero(device)

    @staticmethod
    def max_abs_value(pop: Population) -> float:
        """Largest |payload value| one step can emit (for exactness bounds downstream)."""
        return 1.0

    def step(self, current: torch.Tensor | None) -> torch.Tensor | None:
        raise NotImplementedError

    def value(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes

    def spike_counts(self) -> torch.Tensor | None:
        return None

    def decode(self, timesteps: int, coding: str, quantized: bool) -> np.ndarray:
        raise NotImplementedError

    def _decode_total(self, total: torch.Tensor, timesteps: int, coding: str) -> np.ndarray:
        """Decoded activation from the summed event values: mean (C1) or sum (C2), scale, offset."""
        shape = tuple(self.pop.shape)
        total = torch.from_numpy(_np_as(total, np.float64)).reshape(self.batch, -1)   # (same operations, in place)
        if coding == "C1":
            total.div_(timesteps)
        scale = expand_channel(np.asarray(self.pop.decode_scale, dtype=np.float64), shape).reshape(-1)
        offset = expand_channel(np.asarray(self.pop.decode_offset, dtype=np.float64), shape).reshape(-1)
        total.mul_(torch.from_numpy(np.ascontiguousarray(scale))).add_(torch.from_numpy(np.ascontiguousarray(offset)))
        return total.numpy().reshape((self.batch,) + shape)

    def _load_state(self, integer: bool) -> None:
        """theta, bias and the batched v(0) of the population's neuron, as float64 or int64."""
        pop, m = self.pop, self.pop.neuron
        dtype = torch.int64 if integer else torch.float64
        self.theta = _param(pop, m.threshold, dtype, self.device, "threshold", integer)
        self.bias = _param(pop, m.bias, dtype, self.device, "bias", integer)
        self.v = _param(pop, m.v_init, dtype, self.device, "v_init", integer).expand(self.batch, self.n).clone()


# ------------------------------------------------------------- exact float32 state (fast path)
FLOAT32_EXACT = 2 ** 24      # every integer of magnitude <= 2^24 is a float32


def _float_bound_ok(dp: Datapath, in_bound: int | None, params: list) -> bool:
    """Whether a population's fixed-point state may be held in float32 without changing a bit.

    Static part (checked here): no decay (its products need 36 bits); u = a_in << act_shift never
    wraps int32 (|u| < 2^31); the state range and every parameter within 2^23 (so the saturated v,
    v - theta after firing and v + neg_reset stay integers of magnitude <= 2^24), and the current
    wrap (if it can happen) on a range within 2^24. u itself is exact: the float32 GEMM's partial
    sums are the integer ones times a power of two (``ProjectionKernel.emit_u``).
    Dynamic part (``_FloatState._add_input``, every step): v + bias + u is added in float32 only
    when the tracked interval of v and this step's bound on |u| prove the sum within 2^24;
    otherwise that step's sum is formed in float64 (exact) and saturated back into range.
    """
    if in_bound is None or dp.act_shift < 0:
        return False
    u_max = _shift(in_bound, dp.act_shift)
    if u_max >= INT32_HALF or u_max >= 2 ** (24 + dp.act_shift) or dp.state_bits > 24:
        return False       # (sums of several projections' u, multiples of 2^act_shift, stay exact)
    if u_max >= 2 ** (dp.current_bits - 1) and dp.current_bits > 24:
        return False
    pmax = 0
    for p in params:
        a = np.abs(np.asarray(p, dtype=np.float64))
        if a.size and not np.all(np.isfinite(a)):
            return False
        pmax = max(pmax, float(a.max(initial=0)))
    return pmax <= 2 ** 23


def _count_float(x: torch.Tensor, op, bound, scratch: torch.Tensor | None = None):
    """How many elements of a float32 tensor satisfy ``op(x, bound)`` (torch.lt / gt / ...): a Python
    int on CPU, a 0-d int64 tensor elsewhere (no host sync). Counted through a float32 0/1 mask and
    a float sum: on CPU a comparison into bool and a sum of bools cost several times more. Exact:
    every partial sum of 0/1 values is an integer below the element count, exact in float32 below
    2^24 elements (per-step sums of a chunk, or float64, beyond)."""
    if scratch is None or scratch.shape != x.shape:
        scratch = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    f = op(x, bound, out=scratch)
    if f.numel() < FLOAT32_EXACT:
        n = f.sum()
    else:
        rows = f.reshape(f.shape[0], -1)    # a chunk (steps, B, n): exact float32 sums per step
        n = rows.sum(1).to(torch.float64).sum() if rows.shape[1] < FLOAT32_EXACT else f.sum(dtype=torch.float64)
    return int(n.item()) if x.device.type == "cpu" else n.to(torch.int64)


def _const(k, value: float) -> torch.Tensor:
    """A 0-d float32 tensor of ``value`` on the kernel's device, cached (comparing with a tensor
    is about 3x faster in torch than with a Python scalar on small tensors)."""
    cache = k.__dict__.setdefault("_consts", {})
    t = cache.get(value)
    if t is None:
        t = cache[value] = torch.tensor(value, dtype=torch.float32, device=k.device)
    return t


class _FloatState:
    """Mixin: the kernel's integer state held in float32 once :meth:`use_float_state` is called.

    The plan calls it when ``float_state_ok`` holds and every incoming projection delivers
    u = a << act_shift as float32 (``ProjectionKernel.emit_u``), so no dtype conversion runs per
    step and the state is updated in place. ``v`` still reads as int64 (records, final states).

    Overflow checks without a host sync per step: the kernel carries an interval [lo, hi] that
    provably holds v (from v_init, the bias, the measured or static range of u, the reset rule).
    The saturation check (aminmax + item) runs only when that interval reaches past the state range,
    and then tightens the interval to the measured one; counts are unchanged because a skipped check
    is one that could not have found anything. On devices where a sync is costly every check runs
    as counting ops (as the integer path does).
    """

    float_mode = False
    scratch = ("_mask",)     # tensors the engine does not copy per batch (used within one call only)
    u_hint = None            # a bound on this step's |u| from the engine (None: unknown)
    u_ready = False          # layer-major: this chunk's currents already passed :meth:`chunk_rules`

    @property
    def v(self) -> torch.Tensor:
        return self._v.to(torch.int64) if self.float_mode else self._v

    @v.setter
    def v(self, value: torch.Tensor) -> None:
        self._v = value

    def use_float_state(self) -> None:
        self.float_mode = True
        self._v = self._v.to(torch.float32)
        s = 2.0 ** self.act_shift          # a_in outside int16 <=> u = a_in * 2^s outside the scaled range
        self.a16_lo, self.a16_hi = INT16_MIN * s, INT16_MAX * s
        self.u_static = float(_shift(self.in_bound, self.act_shift))
        self.lo, self.hi = (float(t) for t in torch.aminmax(self._v)) if self._v.numel() else (0.0, 0.0)
        self._mask = torch.empty_like(self._v)     # scratch of the counts (_count_float)
        self.bias = b = self.bias.to(torch.float32)
        self.has_bias = bool(b.any())
        self.b_lo, self.b_hi = (float(b.min()), float(b.max())) if b.numel() else (0.0, 0.0)
        self.sat_lo = -self.state_max - 1 if self.state_wrap else -self.state_max

    def _input_bound(self, u: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The int16 count and the 24-bit current rule on u (float32, exact); returns (u, bound on |u|).

        The engine's per-step bound (``u_hint``) skips the pass when it proves both rules idle."""
        hint = self.u_hint
        if self.u_ready:
            return u, hint
        a16, cur = self.check_a16, self.check_cur
        if hint is not None:
            a16 = a16 and hint > self.a16_hi
            cur = cur and hint >= self.cur_half
        bound = hint if hint is not None else self.u_static
        if self.sync_free:                  # no host sync: count with ops, bound statically
            if a16:
                self.a16 += (_count_float(u, torch.lt, self.a16_lo, self._mask)
                             + _count_float(u, torch.gt, self.a16_hi, self._mask))
            return (self._cur_rule(u) if cur else u), bound
        if not (a16 or cur):
            return u, bound
        u_lo, u_hi = (float(t) for t in torch.aminmax(u))
        if a16 and u_lo < self.a16_lo:
            self.a16 += _count_float(u, torch.lt, _const(self, self.a16_lo), self._mask)
        if a16 and u_hi > self.a16_hi:
            self.a16 += _count_float(u, torch.gt, _const(self, self.a16_hi), self._mask)
        if cur and (u_lo <= -self.cur_half or u_hi > self.cur_half - (0 if self.cur_wrap else 1)):
            u = self._cur_rule(u)           # wrap or clip: never increases |u|
        return u, max(-u_lo, u_hi)

    def _cur_rule(self, x: torch.Tensor, times: int = 1) -> torch.Tensor:
        """Lava's one asymmetric 24-bit wrap (or the clip), counted (``times`` steps of the same
        current), on exact float32 integers."""
        h = self.cur_half
        if self.cur_wrap:                   # (selects, no bool -> float conversions: same values)
            hi, lo = x > h, x <= -h
            self.wrap += (_count_float(x, torch.gt, h) + _count_float(x, torch.le, -h)) * times
            return torch.where(hi, x - 2 * h, torch.where(lo, x + 2 * h, x))
        self.wrap += (_count_float(x, torch.gt, h - 1) + _count_float(x, torch.lt, -h + 1)) * times
        return x.clamp(-h + 1, h - 1)

    def chunk_rules(self, u: torch.Tensor, lo: list, hi: list, times: int = 1) -> tuple[torch.Tensor, list]:
        """The int16 count and the 24-bit current rule over a whole chunk of currents at once.

        Both are functions of each neuron-step's u alone, so applying them to the (steps, B, n)
        currents before the neurons step (in place) counts and changes exactly what the per-step
        rules would, in one call per chunk instead of one per step. ``u`` may instead be one (B, n)
        current delivered at ``times`` steps (a C1 analog input's; a new tensor is returned). lo, hi:
        the measured min and max of u per step (one pair for the repeated current). Returns u and
        per-step bounds on |u| (the steps then skip :meth:`_input_bound`)."""
        a16_lo, a16_hi, h = self.a16_lo, self.a16_hi, self.cur_half
        top = h - (0 if self.cur_wrap else 1)
        if self.check_a16 and (min(lo) < a16_lo or max(hi) > a16_hi):
            self.a16 += (_count_float(u, torch.lt, a16_lo) + _count_float(u, torch.gt, a16_hi)) * times
        bounds = [max(-a, b, 0.0) for a, b in zip(lo, hi)]
        if self.check_cur and (min(lo) <= -h or max(hi) > top):
            y = self._cur_rule(u, times)
            if times == 1 and u.dim() == 3:
                u.copy_(y)
            else:
                u = y                       # (the wrap is applied once: it never increases |u|,
        return u, bounds                    #  but a sum beyond 3 * 2^(b-1) stays beyond 2^(b-1))

    def _clip_count(self, v: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, float, float]:
        """Clip v to the state range in place and count (as ``_saturate``): lo, hi bound v before."""
        m = self.state_max
        if hi > m:
            over = _count_float(v, torch.gt, _const(self, m), self._mask)
            self.saturation += over
            self.saturation_high += over
        if lo < -m:
            self.saturation += _count_float(v, torch.lt, _const(self, -m), self._mask)
        v.clamp_(-m, m)
        return v, max(lo, -m), min(hi, m)

    def _add_input(self, v: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """sat(v + bias + u); in place in float32 when the interval proves every sum below 2^24."""
        lo, hi = self.lo, self.hi
        if self.has_bias:
            lo, hi = lo + self.b_lo, hi + self.b_hi
        U = 0.0
        if u is not None:
            u, U = self._input_bound(u)
            lo, hi = lo - U, hi + U
        if lo >= -FLOAT32_EXACT and hi <= FLOAT32_EXACT:
            if self.has_bias:
                v.add_(self.bias)
            if u is not None:
                v.add_(u)
        else:                                # a sum may pass 2^24: form it in float64 (exact)
            w = v.to(torch.float64)
            if self.has_bias:
                w = w + self.bias.to(torch.float64)
            if u is not None:
                w = w + u.to(torch.float64)
            m = self.state_max
            if self.state_wrap:
                vi = w.to(torch.int64)
                wr = ((vi + m + 1) & (2 * m + 1)) - (m + 1)
                self.saturation += (wr != vi).sum()
                v = wr.to(torch.float32)
            else:
                c = w.clamp(-m, m)
                self.saturation += (c != w).sum()
                self.saturation_high += (w > m).sum()
                v = c.to(torch.float32)
            lo, hi = (float(t) for t in torch.aminmax(v)) if not self.sync_free else (self.sat_lo, m)
            self.lo, self.hi = lo, hi
            return v
        if lo < self.sat_lo or hi > self.state_max:
            if self.state_wrap:
                if not self.sync_free:
                    lo, hi = (float(t) for t in torch.aminmax(v))
                if lo < self.sat_lo or hi > self.state_max:
                    v = _saturate(self, v)           # a wrapped value may land anywhere in the range
                    lo, hi = ((float(t) for t in torch.aminmax(v)) if not self.sync_free
                              else (self.sat_lo, self.state_max))
            elif self.sync_free:
                v, lo, hi = self._clip_count(v, lo, hi)
            else:                                # measure first: one pass, cheaper than a count
                lo, hi = (float(t) for t in torch.aminmax(v))
                if lo < self.sat_lo or hi > self.state_max:
                    v, lo, hi = self._clip_count(v, lo, hi)
        self.lo, self.hi = lo, hi
        return v

# ---------------------------------------------------------------------------------------- IF
class _IFBase(NeuronKernel):
    """Shared event counting and decoding of the IF family (+1 / -1 events)."""

    def _init_counts(self) -> None:
        self.pos = torch.zeros((self.batch, self.n), dtype=torch.int32, device=self.device)
        self.neg = (torch.zeros((self.batch, self.n), dtype=torch.int32, device=self.device)
                    if self.signed else None)

    @staticmethod
    def max_abs_value(pop: Population) -> float:
        if pop.neuron.neg_threshold is None:
            return 1.0
        return max(1.0, abs(float(pop.payload.neg_value)))

    def spike_counts(self) -> torch.Tensor:
        return torch.from_numpy(_np_as(self.pos if self.neg is None else self.pos + self.neg, np.int64))

    def value(self, spikes: torch.Tensor) -> torch.Tensor:
        if not self.signed or self.neg_value == 1:
            return spikes
        s = spikes.to(self.value_dtype)
        return s + (s < 0).to(self.value_dtype) * (s * (self.neg_value - 1))

    def _reset(self, v: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None) -> torch.Tensor:
        """Reset after firing: to zero, or subtract theta (+1) / add neg_reset (-1)."""
        if self.zero_reset:
            return v * (1 - (pos if neg is None else pos + neg))
        v = v - pos * self.theta
        return v if neg is None else v + neg * self.neg_reset

    def _count(self, pos: torch.Tensor, neg: torch.Tensor | None) -> torch.Tensor:
        """Accumulate event counts; return the event code (+1 / -1 / 0), any numeric dtype."""
        self.pos += pos
        if neg is None:
            return pos
        self.neg += neg
        return pos - neg

    def decode(self, timesteps: int, coding: str, quantized: bool) -> np.ndarray:
        total = self.pos
        if self.neg is not None:
            total = total - self.neg.double() * float(self.pop.payload.neg_value)
        return self._decode_total(total, timesteps, coding)


class FloatIF(_IFBase):
    """Float IF (IR ``IF`` docstring): v <- v*(1-leak) + I + bias, fire, reset."""

    value_dtype = torch.float64

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        m: IF = pop.neuron
        f64 = torch.float64
        self._load_state(integer=False)
        self.keep = 1.0 - float(m.leak)
        self.signed = m.neg_threshold is not None
        if self.signed:
            self.neg_th = _param(pop, m.neg_threshold, f64, device, "neg_threshold", False)
            self.neg_reset = _param(pop, m.neg_reset, f64, device, "neg_reset", False)
        self.neg_value = float(pop.payload.neg_value)
        self.strict = m.compare == ">"
        self.zero_reset = m.reset == "zero"
        self._init_counts()

    inplace = False

    def use_inplace(self) -> None:
        """Update v in place and emit 0/1 spikes in v's float dtype, counted in that dtype (exact below
        2^24 steps): the same floating-point operations in the same order as :meth:`step`, without
        its temporaries and int8 conversions (unsigned IF; the engine calls it for float networks).
        A zero bias is not added (v + 0 only turns -0.0 into +0.0, which compares equal)."""
        self.inplace = True
        self.pos = self.pos.to(self.v.dtype)
        self.value_dtype = self.v.dtype
        self.has_bias = bool(self.bias.any())
        th = self.theta
        self.theta_scalar = float(th[0]) if self.n and bool((th == th[0]).all()) else None

    def _step_inplace(self, current):
        v = self.v
        if self.keep != 1.0:
            v.mul_(self.keep)
        if current is not None:
            v.add_(current)
        if self.has_bias:
            v.add_(self.bias)
        spk = (torch.gt if self.strict else torch.ge)(v, self.theta, out=torch.empty_like(v))
        if self.zero_reset:
            v.mul_(1 - spk)
        elif self.theta_scalar is not None:
            v.sub_(spk, alpha=self.theta_scalar)      # v - theta * 1 = v - theta exactly; v - 0 = v
        else:
            v.addcmul_(spk, self.theta, value=-1.0)
        self.pos.add_(spk)
        return spk

    def step(self, current):
        if self.inplace:
            return self._step_inplace(current)
        v = self.v * self.keep if self.keep != 1.0 else self.v
        if current is not None:
            v = v + current
        v = v + self.bias
        pos_b = v > self.theta if self.strict else v >= self.theta
        pos = pos_b.to(torch.int8)
        neg = ((v < -self.neg_th) & ~pos_b).to(torch.int8) if self.signed else None
        self.v = self._reset(v, pos, neg)
        return self._count(pos, neg)


class FixedIF(_FloatState, _IFBase):
    """Bit-accurate IF on the integer datapath (docs/fixed_point.md, Lava PyLifModelBitAcc order).

    u = wrap_once(wrap32(a_in << act_shift)); v = sat(decay(v) + u + bias); compare/fire/reset.
    Counters that a static bound proves can never fire are skipped. With :meth:`use_float_state`
    (chosen by the plan when :meth:`float_state_ok` proves it exact) the same integers are held in
    float32 and updated in place.
    """

    value_dtype = torch.int64
    out = None               # float state: the tensor the next step's spikes are written into (layer_major.py)

    @property
    def writes_out(self) -> bool:
        """Whether step() writes its emitted value into ``out`` (unsigned float state: value == spikes)."""
        return self.float_mode and not self.signed

    @staticmethod
    def float_state_ok(pop: Population, dp: Datapath, in_bound: int | None) -> bool:
        m: IF = pop.neuron
        params = [m.threshold, m.bias, m.v_init] + ([m.neg_threshold, m.neg_reset] if m.neg_threshold is not None else [])
        return float(m.leak) == 0 and _float_bound_ok(dp, in_bound, params)

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        m: IF = pop.neuron
        i64 = torch.int64
        self._load_state(integer=True)
        leak = float(m.leak)
        unity = 2 ** dp.decay_bits
        if leak != round(leak) or not 0 <= leak <= unity:
            raise ValueError(f"population {pop.name!r}: quantised leak (dv) must be an integer in [0, {unity}], got {m.leak}")
        self.keep = unity - int(leak)       # v * (4096 - dv) >> 12
        self.decay_shift = dp.decay_bits
        self.signed = m.neg_threshold is not None
        if self.signed:
            self.neg_th = _param(pop, m.neg_threshold, i64, device, "neg_threshold", True)
            self.neg_reset = _param(pop, m.neg_reset, i64, device, "neg_reset", True)
            nv = float(pop.payload.neg_value)
            if nv != round(nv):
                raise ValueError(f"population {pop.name!r}: quantised payload neg_value must be an integer, got {nv}")
        self.neg_value = int(round(float(pop.payload.neg_value)))
        self.strict = m.compare == ">"
        self.zero_reset = m.reset == "zero"
        params = [self.theta, self.bias, self.v] + ([self.neg_th, self.neg_reset] if self.signed else [])
        _setup_fixed_common(self, dp, in_bound, int(max(p.abs().max().item() for p in params)))
        self.theta, self.bias, self.v = (t.to(self.dtype) for t in (self.theta, self.bias, self.v))
        if self.signed:
            self.neg_th, self.neg_reset = -self.neg_th.to(self.dtype), self.neg_reset.to(self.dtype)
        self.has_bias = bool(self.bias.any())
        self._init_counts()

    def use_float_state(self) -> None:
        super().use_float_state()
        self.value_dtype = torch.float32
        f = torch.float32
        self.theta = self.theta.to(f)
        self.theta_scalar = float(self.theta[0]) if self.n and bool((self.theta == self.theta[0]).all()) else None
        self.th_min = float(self.theta.min()) if self.n else 0.0
        self.pos = self.pos.to(f)
        self._spk = torch.empty_like(self._v)
        if self.signed:
            self.neg_th, self.neg_reset = self.neg_th.to(f), self.neg_reset.to(f)
            self.neg = self.neg.to(f)
            self._neg = torch.empty_like(self._v)
            self.nr_lo = float(self.neg_reset.min()) if self.n else 0.0
            self.neg_hi = float((self.neg_th + self.neg_reset).max()) if self.n else 0.0

    def _step_float(self, current):
        """step() on float32 state (exact: every value is an integer below 2^24, float_state_ok)."""
        v = self._add_input(self._v, current)
        dst = self._spk if self.out is None else self.out
        pos = torch.gt(v, self.theta, out=dst) if self.strict else torch.ge(v, self.theta, out=dst)
        if self.out is None:
            self._spk = torch.empty_like(v)       # the emitted tensor must not be overwritten next step
        self.pos.add_(pos)
        lo, hi = self.lo, self.hi
        if self.signed:
            neg = torch.lt(v, self.neg_th, out=self._neg)
            self._neg = torch.empty_like(v)
            neg.addcmul_(neg, pos, value=-1.0)                # not both: +1 wins
            self.neg.add_(neg)
        if self.zero_reset:
            v.addcmul_(v, pos if not self.signed else pos + neg, value=-1.0)
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        else:
            if self.theta_scalar is not None:
                v.sub_(pos, alpha=self.theta_scalar)
            else:
                v.addcmul_(pos, self.theta, value=-1.0)
            lo, hi = min(lo, 0.0), max(hi, hi - self.th_min)
            if self.signed:
                v.addcmul_(neg, self.neg_reset)
                lo, hi = min(lo, lo + self.nr_lo), max(hi, self.neg_hi)
        self.lo, self.hi = lo, hi
        self._v = v
        return pos if not self.signed else pos - neg

    def step(self, current):
        if self.float_mode:
            return self._step_float(current)
        v = _decay(self.v, self.keep, self.decay_shift)
        if self.has_bias:
            v = v + self.bias
        if current is not None:
            v = v + _current(self, current)
        v = _saturate(self, v)
        pos = (v > self.theta if self.strict else v >= self.theta).to(v.dtype)
        if self.signed:
            neg = (v < self.neg_th).to(v.dtype) * (1 - pos)     # neg_th holds -neg_threshold
        else:
            neg = None
        self.v = self._reset(v, pos, neg)
        return self._count(pos, neg)


# ----------------------------------------------------------------------------------- Readout
class FloatReadout(NeuronKernel):
    """Non-spiking accumulator: v <- v + I + bias."""

    spiking = False

    def __init__(self, pop, batch, device, dp, in_bound):
        super().__init__(pop, batch, device, dp, in_bound)
        m: Readout = pop.neuron
        self.bias = _param(pop, m.bias, torch.float64, device, "bias", False)
        self.v = _param(pop, m.v_init, torch.float64, device, "v_init", False).expand(batch, self.n).clone()

    def step(self, current):
        self.v = self.v + self.bias if current is None else (self.v + current) + self.bias
        return None

    def decode(self, timesteps, coding, quantized):
        out = self.v.cpu().numpy().astype(np.float64)
        if coding == "C1":
            out = out / timesteps
        if quantized:
            out = out * expand_channel(np.asarray(self.pop.state_scale, dtype=np.float64), tuple(self.pop.shape)).reshape(-1)
        return out.reshape((self.batch,) + tuple(self.pop.shape))


class FixedReadout(_FloatState, FloatReadout):
    """Integer readout: v = sat(v + wrap_once(a_in << act_shift) + bias), never fires."""

    @staticmethod
    def float_state_ok(pop: Population, dp: Datapath, in_bound: int | None) -> bool:
        return _float_bound_ok(dp, in_bound, [pop.neuron.bias, pop.neuron.v_init])


    def __init__(self, pop, batch, device, dp, in_bound):
        NeuronKernel.__init__(self, pop, batch, device, dp, in_bound)
        m: Readout = pop.neuron
        self.bias = _param(pop, m.bias, torch.int64, device, "bias", True)
        self.v = _param(pop, m.v_init, torch.int64, device, "v_init", True).expand(batch, self.n).clone()
        _setup_fixed_common(self, dp, in_bound, int(max(self.bias.abs().max().item(), self.v.abs().max().item())))
        self.bias, self.v = self.bias.to(self.dtype), self.v.to(self.dtype)

    def step(self, current):
        if self.float_mode:
            self._v = self._add_input(self._v, current)
            return None
        v = self.v + self.bias
        if current is not None:
            v = v + _current(self, current)
        self.v = _saturate(self, v)
        return None


# ------------------------------------------------------------------- shared fixed-point rules
def _setup_fixed_common(k: NeuronKernel, dp: Datapath, in_bound: int | None, param_max: int) -> None:
    """Precompute datapath constants, skip overflow checks a static bound rules out, pick int32/int64.

    ``in_bound`` bounds |sum of a| over every step (None: unknown), so e.g. the int16 counter is
    skipped when a_in can never leave int16. The state runs in int32 (several times faster than
    int64 on CPU) when every intermediate value provably fits in int32.
    """
    k.act_shift = dp.act_shift
    k.cur_half = 2 ** (dp.current_bits - 1)
    k.cur_wrap = dp.current_overflow == "wrap"
    k.state_max = 2 ** (dp.state_bits - 1) - 1
    k.state_wrap = dp.state_overflow == "wrap"
    shifted = None if in_bound is None else _shift(in_bound, dp.act_shift)
    k.check_a16 = in_bound is None or in_bound > INT16_MAX
    k.check_int32 = shifted is None or shifted >= INT32_HALF
    k.check_cur = shifted is None or shifted >= k.cur_half
    k.dtype = fixed_state_dtype(dp, in_bound, param_max)
    k.in_bound = in_bound
    k.sync_free = torch.device(k.device).type != "cpu"


def fixed_state_dtype(dp: Datapath, in_bound: int | None, param_max: int) -> torch.dtype:
    """int32 when |v| + |u| + |params| (before saturation) and the shifted input fit in int32."""
    if in_bound is None:
        return torch.int64
    u_max = _shift(in_bound, dp.act_shift)
    v_max = max(2 ** (dp.state_bits - 1), param_max)
    return torch.int32 if u_max < INT32_HALF and v_max + u_max + 3 * param_max < INT32_HALF else torch.int64


def _shift(x: int, s: int) -> int:
    return x << s if s >= 0 else x >> -s


def _out_of(k, t: torch.Tensor, lo: int, hi: int) -> bool:
    """Cheap pre-check on CPU (one aminmax pass); on GPUs always count (no host sync)."""
    if k.sync_free:
        return True
    mn, mx = torch.aminmax(t)
    return mn.item() < lo or mx.item() > hi


def _current(k, a: torch.Tensor) -> torch.Tensor:
    """u from this step's summed synaptic input a_in (Lava du = 4095: no current memory)."""
    if k.check_a16 and _out_of(k, a, INT16_MIN, INT16_MAX):
        k.a16 += ((a < INT16_MIN) | (a > INT16_MAX)).sum()
    if k.check_int32:
        # Lava's Python model holds a_in and u in int32: a_in << 6 wraps modulo 2^32.
        a = a.to(torch.int64)
        x = a << k.act_shift if k.act_shift >= 0 else a >> -k.act_shift
        x32 = ((x + INT32_HALF) & (2 * INT32_HALF - 1)) - INT32_HALF
        k.int32 += (x32 != x).sum()
        x = x32
    else:
        a = a.to(k.dtype)
        x = a << k.act_shift if k.act_shift >= 0 else a >> -k.act_shift
    if not k.check_cur:
        return x
    h = k.cur_half
    if not _out_of(k, x, -h + 1, h if k.cur_wrap else h - 1):   # clip mode: x = h is clipped too
        return x
    if k.cur_wrap:
        # Lava: u > 2^23 -> u - 2^24; u <= -2^23 -> u + 2^24 (once, asymmetric bounds).
        hi, lo = (x > h).to(x.dtype), (x <= -h).to(x.dtype)
        k.wrap += (hi + lo).sum()
        return x - hi * (2 * h) + lo * (2 * h)
    y = x.clamp(-h + 1, h - 1)
    k.wrap += (y != x).sum()
    return y


def _saturate(k, v: torch.Tensor) -> torch.Tensor:
    """v to the state range: clip to [-(2^(b-1)) + 1, 2^(b-1) - 1] (Lava) or two's-complement wrap."""
    m = k.state_max
    if k.state_wrap:
        if not _out_of(k, v, -m - 1, m):
            return v
        if v.is_floating_point():        # float32 state: wrap on the exact integers
            vi = v.to(torch.int64)
            w = ((vi + m + 1) & (2 * m + 1)) - (m + 1)
            k.saturation += (w != vi).sum()
            return w.to(v.dtype)
        w = ((v + m + 1) & (2 * m + 1)) - (m + 1)
        k.saturation += (w != v).sum()
        return w
    if not _out_of(k, v, -m, m):
        return v
    c = v.clamp(-m, m)
    k.saturation += (c != v).sum()
    k.saturation_high += (v > m).sum()
    return c


def _decay(v: torch.Tensor, keep: int, shift: int) -> torch.Tensor:
    """Lava's decay: y = v * (4096 - dv); sign(y) * (|y| >> 12) (rounds toward zero)."""
    if keep == 2 ** shift:
        return v
    y = v.to(torch.int64) * keep
    return (torch.sign(y) * (y.abs() >> shift)).to(v.dtype)


# -------------------------------------------------------------------------- dispatch table
FLOAT_KERNELS: dict[type[NeuronModel], type[NeuronKernel]] = {IF: FloatIF, Readout: FloatReadout}
FIXED_KERNELS: dict[type[NeuronModel], type[NeuronKernel]] = {IF: FixedIF, Readout: FixedReadout}


def register_kernel(model: type[NeuronModel], float_kernel: type[NeuronKernel] | None = None,
                    fixed_kernel: type[NeuronKernel] | None = None) -> None:
    """Make the simulators run a neuron model (float and/or bit-accurate)."""
    if float_kernel is not None:
        FLOAT_KERNELS[model] = float_kernel
    if fixed_kernel is not None:
        FIXED_KERNELS[model] = fixed_kernel


def kernel_class(pop: Population, quantized: bool) -> type[NeuronKernel]:
    table = FIXED_KERNELS if quantized else FLOAT_KERNELS
    cls = table.get(type(pop.neuron))
    if cls is None:
        kind = "bit-accurate" if quantized else "float"
        raise NotImplementedError(f"population {pop.name!r}: the {kind} simulator has no kernel for neuron model "
                                  f"{type(pop.neuron).__name__} (register one with simulator.register_kernel)")
    return cls

