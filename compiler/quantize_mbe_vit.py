"""Quantisation of MBE Transformers (``--method mbe``, staged coding C3) to a profile's datapath.

Called by :func:`spikeport.compiler.quantize` for networks with operators and ``coding == "C3"``.
Every node's forwarded value becomes one integer with a real unit (``unit``), as in the ECMT
operator networks (compiler/quantize_operators.py, whose relay / readout / projection / wiring
rules are reused): in C3 a node forwards its value once, at the end of its stage. The rules the
simulator runs are in docs/fixed_point.md, "MBE Transformer networks"; the constants chosen here:

* MBE populations (GELU, 2^f, 1/M, 1/sqrt M) become ``ir.MBETable``: the state unit is a power of
  two so that max(input range, alpha) fills ``2^(state_bits - 2)`` units (one bit of headroom; the
  input range is the static bound of its projections over their sources' ranges); the payload unit
  is a power of two so that the sum of every intensity (the largest total a neuron can emit) fits
  ``2^(payload_bits - 2)``; the fit's offset becomes ``offset_q = floor(offset / unit + 1/2)``.
* product operators (``MBEProduct``, ``MBEMatMul``): each operand's identity MBE gets integer
  tables in the same way (state unit ``scale_x 2^-(state_bits - 2)``, ``scale_x`` the operand's
  power-of-two range), the operand enters its state through a multiplier ``in_mult / 2^in_shift``;
  the product of the two integer sums (= the product form sum_pq D_pq s s' with integer D) is
  shifted right by ``shift`` into the output unit ``scale * unit_a * unit_b * 2^shift``.
* ``Exp2Split``: y = -(max - x) * r on the grid ``2^-FRAC_BITS`` by a 15-bit multiplier; integer
  part (unit 1) and fraction (unit 2^-FRAC_BITS).
* ``MantExp``: the row sum times a 15-bit multiplier plus ``eps_q`` on a power-of-two grid
  ``2^exp_base``; the leading one gives E, the mantissa keeps ``FRAC_BITS`` fraction bits.
* ``Ldexp``: a rounding shift by ``shift - k E`` into a power-of-two multiple of the input unit.

Each constant is checked against its width; what does not fit raises :class:`QuantizationError`
naming the node, the value and the limit.
"""
from __future__ import annotations

import math

import numpy as np

from ..hw_profiles import Profile
from ..ir import Datapath, Input, Network, Population, Readout, SpikePayload
from ..ir import operators as O
from ..ir import operators_mbe as OM
from ..ir.neurons_mbe import MBE
from ..ir.nodes import Conv2d, Dense, Identity, Operator
from .errors import QuantizationError
from .quant_table import LayerQuant, QuantTable
from .quantize_mbe import quantize_mbe
from .quantize_operators import HEADROOM_BITS, MIN_PAYLOAD_BITS, STATE_LIMIT, _OpQuantizer, mult_shift

FRAC_BITS = 20          # Exp2Split's fraction f and MantExp's mantissa M: units of 2^-20
STATIC_HEADROOM = 1     # bits of headroom over a static (proved) range
LOG2E = 1.0 / math.log(2.0)
MBE_OPERATORS = tuple(OM.MBE_OPERATOR_TYPES.values())
WIRING = (O.Rearrange, O.Concat, O.Mean)


def _pow2_at_least(x: float) -> float:
    return 2.0 ** math.ceil(math.log2(max(float(x), 2.0 ** -60)))


def _intensity_total(m) -> float:
    """Largest |total| an MBE neuron can emit: the sum of |w d| over branches, bases and steps."""
    return float(np.abs(m.tables()[2]).sum())


def _fold_bias(table) -> int:
    """A one-branch table's bias b <= 0 (the fit's shift, e.g. M - 0.5) moves into its thresholds:
    ``max(x + b, 0) - R >= V`` fires exactly when ``max(x, 0) - R >= V - b`` (both never fire for
    x + b <= 0, as V > 0), so the neuron needs no bias register. Returns the folded bias (0: none)."""
    b = np.asarray(table.bias)
    if b.size != 1 or int(b.reshape(-1)[0]) == 0 or np.asarray(table.threshold).shape[0] != 1 or b.reshape(-1)[0] > 0:
        return 0
    bias = int(b.reshape(-1)[0])
    table.threshold = np.asarray(table.threshold, dtype=np.int64) - bias
    table.bias = np.array(0, dtype=np.int64)
    return bias


class _MBEQuantizer(_OpQuantizer):
    def __init__(self, qnet: Network, dp: Datapath, headroom_bits: int):
        super().__init__(qnet, dp, 1, headroom_bits)
        self.ranges = dict(self.ranges)      # a copy: static ranges of MBE operators are added below
        self.calibrated = set(self.ranges)
        self.state_units = 1 << (dp.state_bits - 2)
        self.payload_units = 1 << (dp.payload_bits - 2)

    # ------------------------------------------------------------------ MBE tables
    def population(self, pop: Population) -> LayerQuant:
        return self.mbe_population(pop) if isinstance(pop.neuron, MBE) else super().population(pop)

    def operator(self, op) -> None:
        if isinstance(op, MBE_OPERATORS):
            self.mbe_operator(op)
        else:
            super().operator(op)

    def _tables(self, m: MBE, in_range: float, where: str):
        """(state unit, payload unit, MBETable, offset units) of one MBE neuron for operands up to ``in_range``."""
        alpha = float(np.max(np.asarray(m.alpha, dtype=np.float64)))
        s = _pow2_at_least(max(in_range, alpha) / self.state_units)
        c = _pow2_at_least(_intensity_total(m) / self.payload_units)
        table, rep = quantize_mbe(m, s, c, self.dp, where)
        return s, c, table, rep

    def mbe_population(self, pop: Population) -> LayerQuant:
        m, shape, where = pop.neuron, tuple(pop.shape), f"layer {pop.name!r}"
        incoming = self.net.incoming(pop.name)
        r_in = float(np.abs(np.asarray(m.bias, dtype=np.float64)).max(initial=0.0))
        for p in incoming:
            w = np.abs(np.asarray(p.weight, dtype=np.float64))
            l1 = float(w.sum(axis=1).max(initial=0.0)) if isinstance(p, (O.TokenDense, Dense)) else \
                float(w.reshape(w.shape[0], -1).sum(axis=1).max(initial=0.0)) if isinstance(p, Conv2d) else float(w.max(initial=0.0))
            r_in += l1 * self.real_range(p.source)
        alpha = float(np.max(np.asarray(m.alpha, dtype=np.float64)))
        s = _pow2_at_least(max(r_in, alpha) / self.state_units)
        limited = "range"
        s, coarsened = self._coarsen_for_weight_exponents(incoming, s)
        limited = "weight exponent" if coarsened else limited
        projections = [self._projection(p, s) for p in incoming]
        c = _pow2_at_least(_intensity_total(m) / self.payload_units)
        table, rep = quantize_mbe(m, s, c, self.dp, where)
        folded = _fold_bias(table)
        offset = np.asarray(pop.decode_offset, dtype=np.float64)
        if offset.size != 1:
            raise self.err(where, "a per-neuron decode offset (MBE populations of --method mbe carry one per fit)")
        offset_q = int(np.floor(float(offset.reshape(-1)[0]) / c + 0.5))
        top = int(np.abs(np.asarray(table.intensity)).sum()) + abs(offset_q)
        if top > self.top:
            raise self.err(where, f"emitted total {top} exceeds the {self.dp.payload_bits}-bit payload")
        pop.neuron = table
        pop.state_scale = np.array(s)
        pop.decode_scale = np.array(c)
        pop.payload = SpikePayload(kind="graded", bits=self.dp.payload_bits, min_level=-top, max_level=top)
        self.unit[pop.name], self.femit[pop.name], self.vmax[pop.name] = c, 1.0, top
        self.ranges[pop.name] = top * c
        th = int(np.asarray(table.threshold).max())
        return LayerQuant(name=pop.name, neuron="MBETable", shape=shape, state_scale=float(s), gain=1.0 / s,
                          threshold_mant=None, threshold=th, threshold_rel_err=float(rep.threshold_err / s),
                          threshold_folded=False, bias_exp=0, bias_mant_max=int(np.abs(np.asarray(table.bias)).max(initial=0)),
                          bias_max_rel_err=0.0, floor_comp=0.0, leak_dv=None, limited_by=limited,
                          worst_step_current=float(r_in / s), steps_to_saturation=None,
                          saturation_risk=f"input saturates beyond {self.dp.state_max} state units "
                                          f"({self.dp.state_max * s:.4g}); {rep.thresholds_raised} threshold(s) raised to 1"
                                          + (f"; bias {folded} folded into the thresholds" if folded else ""),
                          projections=projections)

    # ------------------------------------------------------------------ operators
    def mbe_operator(self, op) -> None:
        where = f"operator {op.name!r} ({type(op).__name__})"
        params: dict = {}
        if isinstance(op, OM._IdentityPair):
            s, r = self._product(op, where, params)
        elif isinstance(op, OM.Exp2Split):
            s, r = self._exp2split(op, where, params)
        elif isinstance(op, OM.MantExp):
            s, r = self._mantexp(op, where, params)
        elif isinstance(op, OM.Ldexp):
            s, r = self._ldexp(op, where, params)
        else:
            raise self.err(where, "has no fixed-point rule")
        op.arithmetic = "fixed"
        params["out_scale"] = float(s)
        op.params = params
        self.unit[op.name], self.femit[op.name], self.vmax[op.name] = float(s), 1.0, self.top
        self.ranges.setdefault(op.name, float(r))
        calibrated = op.name in self.calibrated
        self.ops.append({"name": op.name, "op": type(op).__name__, "runs_on": op.runs_on, "arithmetic": op.arithmetic,
                         "range": float(r) if calibrated else None, **({} if calibrated else {"static_range": float(r)}),
                         **{k: v for k, v in params.items() if not isinstance(v, np.ndarray)}})

    def _operand(self, op, which: str, src: str, where: str, params: dict) -> tuple[float, int]:
        m = op.identity(which)
        s, c, table, _ = self._tables(m, float(op.scale_a if which == "a" else op.scale_b), f"{where} operand {which}")
        mi, si = mult_shift(self.unit[src] / s)
        if self.vmax[src] * mi >= STATE_LIMIT:
            raise self.err(where, f"operand {which} {self.vmax[src]} x multiplier {mi} exceeds int64")
        params.update({f"threshold_{which}": np.asarray(table.threshold, dtype=np.int64),
                       f"reset_{which}": np.asarray(table.reset, dtype=np.int64),
                       f"intensity_{which}": np.asarray(table.intensity, dtype=np.int64),
                       f"in_mult_{which}": int(mi), f"in_shift_{which}": int(si), f"unit_{which}": float(c)})
        return c, int(np.abs(np.asarray(table.intensity)).sum())

    def _product(self, op, where: str, params: dict) -> tuple[float, float]:
        a, b = op.inputs
        if not op.scale > 0:
            raise self.err(where, f"scale {op.scale} must be > 0 (fold a sign into an operand)")
        ca, qa = self._operand(op, "a", a, where, params)
        cb, qb = self._operand(op, "b", b, where, params)
        k = int(self.net.shape_of(a)[-1]) if isinstance(op, OM.MBEMatMul) else 1
        bound = k * qa * qb
        base = float(op.scale) * ca * cb
        if bound == 0:
            raise self.err(where, f"an operand's identity MBE never emits (sum of |intensity| {qa} x {qb}): its fit "
                                  f"has w = 0 (at T = 1 every kernel is alpha, so no sample below alpha fires); "
                                  "the product is identically 0 and has no fixed-point unit")
        if op.name in self.ranges:
            r, hb = self.ranges[op.name], self.hb
        else:
            r, hb = bound * base, STATIC_HEADROOM
        shift = math.ceil(math.log2(r * 2.0 ** hb / self.top / base))
        if bound * 2 ** max(0, -shift) >= STATE_LIMIT:
            raise self.err(where, f"product bound {bound} x 2^{max(0, -shift)} exceeds int64")
        params.update(shift=int(shift), bound=int(bound))
        return base * 2.0 ** shift, r

    def _exp2split(self, op: OM.Exp2Split, where: str, params: dict) -> tuple[float, float]:
        x = op.inputs[0]
        r = float(op.scale) * LOG2E * self.unit[x]
        mi, si = mult_shift(r * 2.0 ** FRAC_BITS)
        if 2 * self.vmax[x] * mi >= STATE_LIMIT:
            raise self.err(where, f"row span {2 * self.vmax[x]} x multiplier {mi} exceeds int64")
        params.update(mult=int(mi), shift=int(si), frac_bits=FRAC_BITS)
        if op.part == "frac":
            return 2.0 ** -FRAC_BITS, 1.0
        span = math.ceil(2 * self.vmax[x] * mi / 2.0 ** si / 2.0 ** FRAC_BITS) + 1
        return 1.0, float(min(span, self.top))

    def _mantexp(self, op: OM.MantExp, where: str, params: dict) -> tuple[float, float]:
        x = op.inputs[0]
        n = int(self.net.shape_of(x)[op.axis])
        r = float(op.scale) * self.unit[x]
        exp_base = math.floor(math.log2(r)) - 14            # the sum's grid 2^exp_base: multiplier in [2^14, 2^15]
        mi = int(np.floor(r / 2.0 ** exp_base + 0.5))
        eps_q = int(np.floor(float(op.eps) / 2.0 ** exp_base + 0.5))
        if op.eps > 0:
            eps_q = max(eps_q, 1)
        if n * self.vmax[x] * mi + eps_q >= STATE_LIMIT:
            raise self.err(where, f"row sum {n * self.vmax[x]} x multiplier {mi} + eps {eps_q} exceeds int64")
        params.update(mult=int(mi), exp_base=int(exp_base), eps_q=int(eps_q), frac_bits=FRAC_BITS)
        if op.part == "mantissa":
            return 2.0 ** -FRAC_BITS, 2.0 if op.even else 1.0
        return 1.0, 64.0

    def _ldexp(self, op: OM.Ldexp, where: str, params: dict) -> tuple[float, float]:
        x, e = op.inputs
        k2 = int(round(2 * float(op.exponent_scale)))
        if abs(k2) == 1:
            src = self.net[e]
            if not (isinstance(src, OM.MantExp) and src.even and src.part == "exponent"):
                raise self.err(where, f"exponent_scale {op.exponent_scale} needs an even exponent (a MantExp with even=True), "
                                      f"input {e!r} is not one")
        if k2 == -1:        # LayerNorm: d / sqrt(var + eps), |y| <= sqrt(C) (the fits' error: a factor 2)
            r, hb = 2.0 * math.sqrt(int(op.shape[-1])), STATIC_HEADROOM
        else:               # softmax: e = 2^f 2^I with I <= 0, and out = p 2^-E with E >= 1: |y| <= |x|
            r, hb = self.real_range(x), STATIC_HEADROOM
        shift = math.ceil(math.log2(r * 2.0 ** hb / self.top / self.unit[x]))
        params.update(shift=int(shift), exponent_twice=int(k2))
        return self.unit[x] * 2.0 ** shift, r


def quantize_mbe_network(net: Network, qnet: Network, prof: Profile, dp: Datapath, *, input_bits: int,
                         input_range, max_timesteps: int, headroom_bits: int = HEADROOM_BITS) -> QuantTable:
    """Quantise ``qnet`` (a copy of the C3 network ``net``) in place; returns the table."""
    for node in qnet.nodes():
        where = f"{node.name!r}"
        if isinstance(node, Population) and not isinstance(node.neuron, (MBE, O.Relay, Readout)):
            raise QuantizationError(f"layer {where}: neuron {type(node.neuron).__name__} has no quantisation rule in an "
                                    "MBE operator network (MBE, Relay, Readout)")
        if isinstance(node, Operator) and not isinstance(node, MBE_OPERATORS + WIRING):
            raise QuantizationError(f"operator {where} (op {node.op!r}): no fixed-point rule in an MBE (C3) network "
                                    f"(MBE operators {sorted(OM.MBE_OPERATOR_TYPES)}, wiring Rearrange / Concat / Mean)")
        if hasattr(node, "connectivity") and not isinstance(node, (O.TokenDense, Dense, Conv2d, Identity)):
            raise QuantizationError(f"projection {where}: type {type(node).__name__} has no quantisation rule")
        if hasattr(node, "connectivity") and getattr(node, "delay", 0):
            raise QuantizationError(f"projection {where}: delay {node.delay} (C3 operator networks use delay 0)")
        if isinstance(node, Input) and node.coding not in ("once", "analog"):
            raise QuantizationError(f"input {where}: coding {node.coding!r} (MBE networks take the input once)")
    if dp.payload_bits < MIN_PAYLOAD_BITS:
        raise QuantizationError(f"profile {prof.name!r}: payload_bits = {dp.payload_bits} is below the {MIN_PAYLOAD_BITS} bits an "
                                "MBE Transformer network needs (relays, operator outputs and MBE intensities travel as "
                                "graded payloads)")
    T = {int(n.neuron.timesteps) for n in qnet.populations() if isinstance(n.neuron, MBE)}
    T |= {int(op.timesteps) for op in qnet.operators() if isinstance(op, OM._IdentityPair)}
    table = QuantTable(profile=prof.name, options={"input_bits": input_bits, "headroom_bits": headroom_bits,
                                                   "coding": "C3"})
    q = _MBEQuantizer(qnet, dp, headroom_bits)
    q.walk(table, input_bits, input_range)
    table.operators = q.ops
    table.operator_max_timesteps = max(T) if T else int(max_timesteps)   # the MBE tables fix T
    return table


__all__ = ["FRAC_BITS", "quantize_mbe_network"]
