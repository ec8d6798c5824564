"""Quantisation of networks with typed Transformer operators (ECMT ViTs) to a profile's datapath.

Called by :func:`spikeport.compiler.quantize` when the network has operators. Every node's
per-step output becomes an integer payload with a real unit (``unit``): inputs as for every
network (``Input.scale``); Relay / Readout / MultiThreshold populations in state units
(``Population.state_scale``); operators in ``params["out_scale"]``. The rules the simulator runs
(docs/fixed_point.md, "Transformer operator networks") fix how the constants are used:

* Relays (the accumulator: Linear outputs, residual stream, position embedding) and Readouts hold
  ``payload_bits`` signed values per step; their unit is a power of two sized so the calibration
  range times ``2^headroom_bits`` fits (``net.meta["value_ranges"]``, written by ``--method
  ecmt``; without it a static bound). The host sums a Readout's per-step values in int64.
* MultiThreshold neurons hold theta1, theta2 (integers, the larger in ``[2^(b-1), 2^b)``,
  b = ``MT_THETA_BITS`` or less when ``levels`` needs the payload bits) and emit one graded event
  per step carrying the signed level times its threshold. When the neuron is fed by one Identity
  projection (as ``--method ecmt`` builds them) its unit is a power of two times the source's, so
  that projection is exact.
* Projections: one mantissa per weight in ``[weight_min, weight_max]`` (multiples of
  ``weight_step``) and one exponent per projection in ``[weight_exp_min, weight_exp_max]``, chosen
  for the largest weight; a relay whose weights would need a larger exponent gets a coarser unit.
* Operators: fixed-point constants (input multipliers and shifts, look-up tables, fraction bits)
  in ``op.params``, ``arithmetic = "fixed"``; stateless wiring (Rearrange, Concat) stays
  ``"none"``. Each constant is checked against its width; what does not fit raises
  :class:`QuantizationError` naming the node, the value and the limit.
"""
from __future__ import annotations

import math

import numpy as np

from ..hw_profiles import Profile
from ..ir import IF, Datapath, Identity, Input, Network, Population, Readout, SpikePayload, expand_channel
from ..ir import operators as O
from ..ir.nodes import Conv2d, Dense, Operator
from ..ir.storage import narrowest
from .errors import QuantizationError
from .quant_table import LayerQuant, ProjectionQuant, QuantTable

HEADROOM_BITS = 6        # relay / operator per-step values: calibration range x 2^6 fits the payload
MT_THETA_BITS = 12       # the larger MT threshold lies in [2^11, 2^12) state units
MULT_BITS = 15           # input / rescale multipliers M in [2^14, 2^15)
GELU_FRAC = 8            # GELU input grid 2^-8, table over [-GELU_HALF, GELU_HALF]
GELU_HALF = 8.0
SOFTMAX_FRAC = 8         # softmax: scaled-logit grid 2^-8, exp table over [-EXP_RANGE, 0]
EXP_RANGE = 16
EXP_BITS = 16            # exp table values in units of 2^-16
SOFTMAX_OUT_FRAC = 14    # softmax outputs in units of 2^-14
LN_NORM_FRAC = 14        # normalised LayerNorm values in units of 2^-14
MIN_PAYLOAD_BITS = 16    # graded payload width an operator network needs at least
STATE_LIMIT = 2 ** 62    # int64 intermediate values stay below this (checked per operator)


def _round(x):
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _pow2_at_least(x: float) -> float:
    """The smallest power of two >= x (x > 0)."""
    return 2.0 ** math.ceil(math.log2(x))


def mult_shift(r: float) -> tuple[int, int]:
    """Integer M and shift sh with M / 2^sh ~ r (r > 0): M in [2^14, 2^15) and sh >= 0, or
    M = round(r) and sh = 0 when r >= 2^15 (relative error <= 2^-15 either way)."""
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"ratio {r} must be positive and finite")
    sh = (MULT_BITS - 1) - math.floor(math.log2(r))
    if sh <= 0:
        return int(_round(r)), 0
    return int(_round(r * 2.0 ** sh)), int(sh)


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


class _OpQuantizer:
    def __init__(self, qnet: Network, dp: Datapath, max_timesteps: int, headroom_bits: int):
        self.net = qnet
        self.dp = dp
        self.T = int(max_timesteps)
        self.hb = int(headroom_bits)
        self.top = (1 << (dp.payload_bits - 1)) - 1
        self.unit: dict[str, float] = {}     # real value of one payload unit
        self.femit: dict[str, float] = {}    # real value of one float-emission unit (MT: theta1)
        self.vmax: dict[str, int] = {}       # largest |payload| per step (IF: of the value operators read)
        self.pmax: dict[str, int] = {}       # IF populations: largest |event code| projections read (1)
        self.eratio: dict[str, np.ndarray] = {}   # IF populations: quantised / float threshold per neuron
        ranges = qnet.meta.get("value_ranges")
        self.ranges = ranges if isinstance(ranges, dict) else {}
        self.ops: list[dict] = []
        self.t_max = 2 ** 31
        # resolutions (the C2 quantiser, compiler/quantize_c2.py, takes finer ones)
        self.ln_in_bits_cap = 16             # LayerNorm input bits
        self.ln_norm_frac = LN_NORM_FRAC     # normalised LayerNorm values in units of 2^-ln_norm_frac
        self.gelu_frac = GELU_FRAC           # GELU input grid 2^-gelu_frac
        self.gamma_bits = MULT_BITS          # LayerNorm gamma_q in [2^(gamma_bits-1), 2^gamma_bits)

    # ------------------------------------------------------------------ helpers
    def err(self, where: str, msg: str) -> QuantizationError:
        return QuantizationError(f"{where}: {msg} ({self.dp.profile})")

    def real_range(self, name: str) -> float:
        """max |value| of a node: calibration (meta value_ranges) or the static payload bound."""
        r = self.ranges.get(name)
        if isinstance(r, (int, float)) and r > 0 and math.isfinite(r):
            return float(r)
        return max(self.vmax[name] * self.unit[name], 1e-30)

    def out_unit(self, r: float) -> float:
        return _pow2_at_least(r * 2.0 ** self.hb / self.top)

    # ------------------------------------------------------------------ populations
    def walk(self, table, input_bits: int, input_range) -> None:
        """Quantise every node in graph order into ``table``: inputs here, populations and operators
        by :meth:`population` / :meth:`operator` (which the C2 and MBE quantisers override)."""
        from .quantize import _quantize_input
        for node in self.net.nodes():
            if isinstance(node, Input):
                src, row = _quantize_input(self.net, node, self.dp, input_bits, input_range)
                table.inputs.append(row)
                self.unit[node.name], self.femit[node.name] = src.unit, 1.0
                self.vmax[node.name] = int(max(abs(node.payload.min_level), abs(node.payload.max_level)))
            elif isinstance(node, Population):
                table.layers.append(self.population(node))
            elif isinstance(node, Operator):
                self.operator(node)

    def population(self, pop: Population) -> LayerQuant:
        m, shape, where = pop.neuron, tuple(pop.shape), f"layer {pop.name!r}"
        incoming = self.net.incoming(pop.name)
        limited = "range"
        if type(m) is IF:   # AIF / layer-wise signed IF: compiler/quantize_signed_if.py
            from .quantize_signed_if import quantize_if_population
            return quantize_if_population(self, pop, incoming)
        if isinstance(m, O.MultiThreshold):
            s, tb = self._mt_unit(pop, incoming)
            limited = f"theta {tb} bits"
        else:   # a relay / readout unit, coarsened until every incoming projection's exponent fits
            s, coarsened = self._coarsen_for_weight_exponents(incoming, self._relay_unit(pop, incoming))
            limited = "weight exponent" if coarsened else limited
        projections = [self._projection(p, s) for p in incoming]
        bias_exp, bias_mant_max, bias_rel = 0, 0, 0.0
        if isinstance(m, O.MultiThreshold):
            th1 = np.maximum(1, _round(np.asarray(m.theta1, dtype=np.float64) / s)).astype(np.int64)
            th2 = np.maximum(1, _round(np.asarray(m.theta2, dtype=np.float64) / s)).astype(np.int64)
            th_err = float(max(np.abs(th1 * s - np.asarray(m.theta1)).max() / np.asarray(m.theta1).min(),
                               np.abs(th2 * s - np.asarray(m.theta2)).max() / np.asarray(m.theta2).min()))
            v0 = _round(np.asarray(m.v_init, dtype=np.float64) / s).astype(np.int64)
            top_level = 1 << (int(m.levels) - 1)
            hi, lo = top_level * int(th1.max()), top_level * int(th2.max())
            if max(hi, lo) > self.top:
                raise self.err(where, f"largest MT event {max(hi, lo)} exceeds the {self.dp.payload_bits}-bit graded payload")
            if 2 * max(hi, lo) > self.dp.state_max or np.abs(v0).max(initial=0) > self.dp.state_max:
                raise self.err(where, f"MT state 2 x {max(hi, lo)} exceeds state_max {self.dp.state_max}")
            femit = float(np.asarray(m.theta1, dtype=np.float64).reshape(-1)[0])
            if np.ndim(m.theta1) and not np.all(np.asarray(m.theta1) == femit):
                raise self.err(where, "per-neuron theta1 (outgoing weights carry one theta1 per population)")
            m.theta1, m.theta2, m.v_init = th1, th2, v0
            pop.payload = SpikePayload(kind="graded", bits=max(hi, lo).bit_length() + 1, min_level=-lo, max_level=hi,
                                       neg_value=1.0)
            pop.decode_scale = np.array(s)
            self.vmax[pop.name] = max(hi, lo)
            self.femit[pop.name] = femit
            gain, th_mant, th = 1.0 / s, int(max(th1.max(), th2.max())), int(th1.max())
        else:
            from .quantize import _quantize_bias
            b = expand_channel(np.asarray(m.bias, dtype=np.float64), shape) / s
            bias_int, bias_exp, bias_mant_max = _quantize_bias(b, self.dp, pop.name)
            nz = b != 0
            bias_rel = float((np.abs(bias_int[nz] - b[nz]) / np.abs(b[nz])).max(initial=0.0))
            # per-neuron token biases in their narrowest integer type (readers widen to int64 as they add)
            m.bias = narrowest(bias_int) if np.any(bias_int != bias_int.flat[0]) else np.array(bias_int.flat[0], dtype=np.int64)
            if isinstance(m, Readout):   # per-step values summed by the host (int64); v_init in the same units
                m.v_init = _round(expand_channel(np.asarray(m.v_init, dtype=np.float64), shape) / s).astype(np.int64)
            else:
                pop.decode_scale = np.array(s)
            top = self.top
            pop.payload = SpikePayload(kind="graded", bits=self.dp.payload_bits, min_level=-top, max_level=top)
            self.vmax[pop.name] = top
            self.femit[pop.name] = 1.0
            gain, th_mant, th, th_err = 1.0 / s, None, None, 0.0
        pop.state_scale = np.array(s)
        self.unit[pop.name] = s
        return LayerQuant(name=pop.name, neuron=type(m).__name__, shape=shape, state_scale=float(s), gain=float(gain),
                          threshold_mant=th_mant, threshold=th, threshold_rel_err=th_err, threshold_folded=False,
                          bias_exp=int(bias_exp), bias_mant_max=int(bias_mant_max), bias_max_rel_err=bias_rel,
                          floor_comp=0.0, leak_dv=None, limited_by=limited,
                          worst_step_current=float(self.vmax[pop.name]), steps_to_saturation=None,
                          saturation_risk="counted per step (saturate)", projections=projections)

    def _relay_unit(self, pop: Population, incoming) -> float:
        """Unit of a Relay / Readout: the calibration range (or static bound) x 2^headroom fits the payload."""
        r = self.real_range(pop.name) if pop.name in self.ranges else self._static_current(pop, incoming)
        return self.out_unit(r)

    def _mt_unit(self, pop: Population, incoming) -> tuple[float, int]:
        m = pop.neuron
        n = int(m.levels)
        tb = min(MT_THETA_BITS, self.dp.payload_bits - n - 1, self.dp.state_bits - n - 2)
        if tb < 1:
            raise self.err(f"layer {pop.name!r}", f"levels = {n} leave no threshold bits in the {self.dp.payload_bits}-bit "
                                                   f"payload / {self.dp.state_bits}-bit state")
        th = float(max(np.max(m.theta1), np.max(m.theta2)))
        return self._aligned_unit(incoming, th, tb), tb

    def _aligned_unit(self, incoming, th: float, tb: int) -> float:
        """State unit s with th / s in [2^(tb-1), 2^tb); a power of two times the source's unit when
        the population is fed by one scalar Identity (that projection is then exact)."""
        if len(incoming) == 1 and isinstance(incoming[0], Identity) and np.ndim(incoming[0].weight) == 0:
            p = incoming[0]
            base = abs(float(p.weight)) * self.unit[p.source] / self.femit[p.source]
            if base > 0:
                j = (tb - 1) - math.floor(math.log2(th / base))
                s = base * 2.0 ** -j
                while th / s >= 2 ** tb:
                    s *= 2.0
                while th / s < 2 ** (tb - 1):
                    s /= 2.0
                return s
        return th / 2.0 ** (tb - 1)

    def _static_current(self, pop: Population, incoming) -> float:
        tot = float(np.abs(np.asarray(pop.neuron.bias, dtype=np.float64)).max(initial=0.0))
        tot += sum(self.current_bound(p) for p in incoming)
        return max(tot, 1e-30)

    def current_bound(self, p, calibrated: bool = False) -> float:
        """Largest real |current| one step of projection ``p`` delivers: its largest row sum of |w| times
        the source's largest emission (the payload bound, or with ``calibrated`` the calibration range)."""
        w = np.abs(np.asarray(p.weight, dtype=np.float64))
        if isinstance(p, (O.TokenDense, Dense)):
            l1 = float(w.sum(axis=1).max(initial=0.0))
        elif isinstance(p, Conv2d):
            l1 = float(w.reshape(w.shape[0], -1).sum(axis=1).max(initial=0.0))
        else:
            l1 = float(w.max(initial=0.0))
        src = p.source
        if src in self.pmax:             # IF: +-1 codes, the weights carry the threshold
            return l1 * self.pmax[src]
        peak = self.real_range(src) if calibrated else self.vmax[src] * self.unit[src]
        return l1 * peak / self.femit[src]

    def _norm(self, p, s: float) -> np.ndarray:
        from .quantize_signed_if import refold
        w = refold(self, p, np.asarray(p.weight, dtype=np.float64))
        return w * self.unit[p.source] / self.femit[p.source] / s

    def _coarsen_for_weight_exponents(self, incoming, s: float) -> tuple[float, bool]:
        """The state unit ``s``, coarsened by powers of two until every incoming projection's weight
        exponent fits the datapath; and whether it was coarsened."""
        coarsened = False
        while True:
            need = max((self._exp_for(p, s)[1] for p in incoming), default=self.dp.weight_exp_min)
            if need <= self.dp.weight_exp_max:
                return s, coarsened
            s *= 2.0 ** (need - self.dp.weight_exp_max)
            coarsened = True

    def _exp_for(self, p, s: float) -> tuple[None, int]:
        # max |w * a / b / c| = max|w| * |a| / |b| / |c| exactly: rounding is monotone and sign-symmetric,
        # so the exponent needs no normalised copy of the weights
        w = np.asarray(p.weight)
        if p.source in self.eratio:      # IF source: the re-folded weights (compiler/quantize_signed_if.py)
            from .quantize_signed_if import refold
            w = refold(self, p, w.astype(np.float64))
        peak = abs(float(np.abs(w).max(initial=0.0)) * self.unit[p.source] / self.femit[p.source] / s)
        if peak == 0:
            return None, self.dp.weight_exp_min
        return None, math.ceil(math.log2(peak / self.dp.weight_max))

    def _projection(self, p, s: float) -> ProjectionQuant:
        dp = self.dp
        _, e = self._exp_for(p, s)
        norm = self._norm(p, s)
        e = max(dp.weight_exp_min, min(dp.weight_exp_max, e))
        q = _round(norm / 2.0 ** e / dp.weight_step) * dp.weight_step
        over = (q > dp.weight_max) | (q < dp.weight_min)
        q = np.clip(q, dp.weight_min, dp.weight_max)
        view = q * 2.0 ** e
        err = np.abs(view - norm) * s * self.femit[p.source] / self.unit[p.source]
        wf = np.asarray(p.weight)
        peak = float(np.abs(wf).max(initial=0.0))
        # the narrowest signed integer type of the datapath's weight range (int16 for 9-bit mantissas):
        # a ViT-B's integer weights take 2 bytes each, not 8 (readers widen as they compute)
        p.weight = q.astype(np.promote_types(np.result_type(np.min_scalar_type(dp.weight_min),
                                                            np.min_scalar_type(dp.weight_max)), np.int8))
        p.weight_exp = int(e)
        p.scale = np.array(s * self.femit[p.source] / self.unit[p.source])
        p.delay = 0
        return ProjectionQuant(name=p.name, source=p.source, connectivity=p.connectivity, weight_exp=int(e),
                               n_weights=int(wf.size), clipped=int(over.sum()), zeroed=int(((wf != 0) & (q == 0)).sum()),
                               max_abs_err=float(err.max(initial=0.0)),
                               err_bound=float(dp.weight_step / 2 * 2.0 ** e * float(p.scale)),
                               max_rel_err=float(err.max(initial=0.0) / peak) if peak else 0.0,
                               max_mantissa=int(np.abs(q).max(initial=0)), n_nonzero=int((wf != 0).sum()))

    # ------------------------------------------------------------------ operators
    def operator(self, op: O.TypedOperator) -> None:
        where = f"operator {op.name!r} ({type(op).__name__})"
        ins = list(op.inputs)
        params: dict = {}
        row = {"name": op.name, "op": type(op).__name__, "runs_on": op.runs_on}
        if isinstance(op, O.Rearrange):
            s, vmax = self.unit[ins[0]], self.vmax[ins[0]]
        elif isinstance(op, O.Concat):
            s = self.unit[ins[0]]
            mults, shifts = [], []
            for i in ins:
                r = self.unit[i] / s
                mm, sh = (1, 0) if r == 1.0 else mult_shift(r)
                mults.append(mm)
                shifts.append(sh)
            params.update(in_mult=mults, in_shift=shifts)
            vmax = max(self.vmax[i] if self.unit[i] == s else int(math.ceil(self.vmax[i] * self.unit[i] / s)) + 1
                       for i in ins)
            if op.prefix is not None:
                pq = _round(np.asarray(op.prefix, dtype=np.float64) / s).astype(np.int64)
                if np.abs(pq).max(initial=0) > self.top:
                    raise self.err(where, f"prefix {np.abs(pq).max()} units exceeds the {self.dp.payload_bits}-bit payload")
                op.prefix = pq
                vmax = max(vmax, int(np.abs(pq).max(initial=0)))
            if vmax > self.top:
                raise self.err(where, f"rescaled inputs reach {vmax}, beyond the {self.dp.payload_bits}-bit payload")
        elif isinstance(op, O.Mean):
            n = int(np.prod([self.net[ins[0]].shape[a] if hasattr(self.net[ins[0]], "shape") else 1 for a in op.axes]))
            s, vmax = self.unit[ins[0]] / n, self.top
        elif isinstance(op, O.MatMulEC):
            s, vmax = self._matmul(op, where, params)
        else:
            s, vmax = self._ec(op, where, params)
        if op.arithmetic != "none":
            op.arithmetic = "fixed"
        params["out_scale"] = float(s)
        op.params = params
        self.unit[op.name] = float(s)
        self.femit[op.name] = 1.0
        self.vmax[op.name] = int(vmax)
        row.update(arithmetic=op.arithmetic, range=self.ranges.get(op.name),
                   **{k: v for k, v in params.items() if not isinstance(v, np.ndarray)})
        self.ops.append(row)

    def _matmul(self, op: O.MatMulEC, where: str, params: dict) -> tuple[float, int]:
        a, b = op.inputs
        k = int(self.net[a].shape[-1]) if hasattr(self.net[a], "shape") else 1
        base = abs(float(op.scale)) * self.unit[a] * self.unit[b]
        if base == 0:
            raise self.err(where, "scale 0")
        r = self.real_range(op.name) if op.name in self.ranges else k * self.vmax[a] * self.vmax[b] * base
        m = round(math.log2(r * 2.0 ** self.hb / self.top / base))
        if op.scale < 0:
            raise self.err(where, f"negative scale {op.scale} (fold it into an input)")
        s = base * 2.0 ** m
        bound = k * self.vmax[a] * self.vmax[b]
        lift = 2 ** max(0, -m)
        if bound * lift >= STATE_LIMIT:
            raise self.err(where, f"S_A S_B bound {bound} x 2^{max(0, -m)} exceeds int64 even at t = 1")
        self.t_max = min(self.t_max, math.isqrt(STATE_LIMIT // (bound * lift)))
        params.update(shift=int(m), sk_bound_per_t2=int(bound))
        return s, self.top

    def _ec(self, op: O.TypedOperator, where: str, params: dict) -> tuple[float, int]:
        src = op.inputs[0]
        s_in, r_in = self.unit[src], self.real_range(src)
        fn = getattr(op, "fn", None)   # the function F (EC here, C2 in compiler/quantize_c2.py)
        if fn == "gelu":
            rx = 2.0 ** -self.gelu_frac
            r_out = self.real_range(op.name) if op.name in self.ranges else max(r_in, 0.17)
            s = self.out_unit(r_out)
            half = int(GELU_HALF / rx)
            grid = np.arange(-half, half + 1, dtype=np.float64) * rx
            lut = _round(_gelu(grid, op.approximate) / s).astype(np.int64)
            hm, hs = mult_shift(rx / s)
            params.update(lut=lut, lut_half=half, hi_mult=hm, hi_shift=hs, in_bits=32, in_frac=self.gelu_frac)
            mi, si = mult_shift(s_in / rx)
            worst_y = max(int(np.abs(lut).max(initial=0)), ((1 << 31) * hm) >> hs)
        elif fn == "softmax":
            rx = 2.0 ** -SOFTMAX_FRAC
            k = int(EXP_RANGE / rx)
            lut = _round(2.0 ** EXP_BITS * np.exp(-np.arange(k + 1, dtype=np.float64) * rx)).astype(np.int64)
            lut[-1] = 0
            s = 2.0 ** -SOFTMAX_OUT_FRAC
            params.update(lut=lut, out_frac=SOFTMAX_OUT_FRAC, exp_bits=EXP_BITS, in_bits=32, in_frac=SOFTMAX_FRAC)
            mi, si = mult_shift(s_in * abs(float(op.scale)) / rx)
            if op.scale < 0:
                raise self.err(where, f"negative scale {op.scale}")
            worst_y = 1 << SOFTMAX_OUT_FRAC
        elif fn == "layernorm":
            c = int(op.shape[-1])
            xb = min(self.ln_in_bits_cap, int((62 - 3 * math.log2(c)) // 2) - 1)
            if xb < 4:
                raise self.err(where, f"{c} channels leave {xb} bits for the int64 variance sum")
            rx = _pow2_at_least(2 * r_in / ((1 << (xb - 1)) - 1))
            gamma = np.asarray(op.weight, dtype=np.float64)
            beta = np.asarray(op.bias, dtype=np.float64)
            static = math.sqrt(max(c - 1, 1)) * float(np.abs(gamma).max(initial=0)) + float(np.abs(beta).max(initial=0))
            r_out = min(static, self.ranges[op.name]) if isinstance(self.ranges.get(op.name), (int, float)) else static
            s = self.out_unit(max(r_out, 1e-30))
            g = float(np.abs(gamma).max(initial=0)) / s
            nf = self.ln_norm_frac
            gs = (self.gamma_bits - 1 + nf) - math.floor(math.log2(g)) if g > 0 else 0   # gamma_q's top bit
            gq = _round(gamma * 2.0 ** (gs - nf) / s).astype(np.int64)
            bq = _round(beta / s).astype(np.int64)
            eps_q = max(1, int(_round(float(op.eps) * c * c / (rx * rx))))
            if eps_q >= 2 ** 62 or np.abs(bq).max(initial=0) > self.top:
                raise self.err(where, f"eps {op.eps} / beta do not fit at input resolution {rx:.3g}")
            params.update(in_bits=xb, in_res=float(rx), eps_q=eps_q, norm_frac=nf, gamma_q=gq,
                          gamma_shift=int(gs), beta_q=bq)
            mi, si = mult_shift(s_in / rx)
            worst_y = int(math.isqrt(c) + 1) * (1 << nf) * int(np.abs(gq).max(initial=0)) // (1 << max(gs, 0)) \
                + int(np.abs(bq).max(initial=0))
        else:
            raise self.err(where, "has no fixed-point rule")
        params.update(in_mult=int(mi), in_shift=int(si))
        # int64 widths: S * M over T steps, and P(t) = t * y
        s_max = self.T * self.vmax[src]
        if s_max * mi >= STATE_LIMIT or self.T * worst_y >= STATE_LIMIT:
            raise self.err(where, f"running sum {s_max} x multiplier {mi} exceeds int64 over {self.T} steps")
        return s, self.top


def quantize_operator_network(net: Network, qnet: Network, prof: Profile, dp: Datapath, *, input_bits: int,
                              input_range, max_timesteps: int, headroom_bits: int = HEADROOM_BITS) -> QuantTable:
    """Quantise ``qnet`` (a copy of ``net``) in place; returns the table (``table.operators`` rows)."""
    for op in qnet.operators():
        if type(op).__name__ not in O.OPERATOR_TYPES:
            raise QuantizationError(f"operator {op.name!r} (op {op.op!r}): untyped operators have no fixed-point form "
                                    f"(typed ones: {sorted(O.OPERATOR_TYPES)})")
    for node in qnet.nodes():
        if isinstance(node, Population) and not isinstance(node.neuron, (O.MultiThreshold, O.Relay, Readout)) \
                and type(node.neuron) is not IF:
            raise QuantizationError(f"layer {node.name!r}: neuron {type(node.neuron).__name__} has no quantisation rule "
                                    "in an operator network (MultiThreshold, IF, Relay, Readout)")
        if isinstance(node, Operator) and type(node).__name__ not in O.OPERATOR_TYPES:
            raise QuantizationError(f"operator {node.name!r} (op {node.op!r}): untyped operators have no fixed-point form")
        if hasattr(node, "connectivity") and not isinstance(node, (O.TokenDense, Dense, Conv2d, Identity)):
            raise QuantizationError(f"projection {node.name!r}: type {type(node).__name__} has no quantisation rule")
        if isinstance(node, Input) and node.coding != "analog":
            raise QuantizationError(f"input {node.name!r}: coding {node.coding!r} (operator networks take analog input)")
    if dp.payload_bits < MIN_PAYLOAD_BITS:
        raise QuantizationError(f"profile {prof.name!r}: payload_bits = {dp.payload_bits} is below the {MIN_PAYLOAD_BITS} bits a "
                                "Transformer operator network needs (relays, operator outputs and multi-threshold levels "
                                "travel as graded payloads)")
    table = QuantTable(profile=prof.name, options={"input_bits": input_bits, "max_timesteps": max_timesteps,
                                                   "headroom_bits": headroom_bits})
    q = _OpQuantizer(qnet, dp, max_timesteps, headroom_bits)
    q.walk(table, input_bits, input_range)
    table.operators = q.ops
    table.operator_max_timesteps = int(q.t_max)
    if q.t_max < max_timesteps:
        raise QuantizationError(f"operators: matrix-product state fits int64 only up to T = {q.t_max}, below "
                                f"max_timesteps = {max_timesteps} ({dp.profile})")
    return table
