"""Quantisation of C2 (sum-coded) Transformer networks, ``--method stbif`` / ``pmsm`` on a ViT.

Called by :func:`spikeport.compiler.quantize` for a network with operators and ``coding = "C2"``.
It is the ECMT operator quantiser (compiler/quantize_operators.py: relay / readout units, projection
mantissas and exponents, the LayerNorm / GELU / softmax fixed-point constants) with the C2 rules
(docs/fixed_point.md, "C2 operator networks"):

* ST-BIF and PMSM neurons hold their state in units ``s`` with an even integer threshold
  ``theta = step / s`` (``2 theta`` fits the state with the largest level); ``q(0) = v(0) = theta/2``
  exactly. A neuron fed by one scalar Identity projection (as ``convert/c2vit.py`` builds them)
  takes ``s = |w| unit_src / 2^j``, so that projection is an exact power of two and only the
  threshold is rounded (relative error <= 2^-(THETA_BITS - 1)); it emits its level (ST-BIF: +-1,
  PMSM: the signed count) as the payload, whose real unit is ``step``.
* MatMulC2 multiplies the integer running sums exactly (``S_A(t) S_B(t)``, int64); its output unit
  is ``unit_A unit_B scale`` (no rounding, so the product of two quantised operands is the QANN's
  product exactly).
* LayerNormC2 / GELUC2 / SoftmaxC2 use the EC constants on the input *sum* (``xq = rdiv(S M, 2^sh)``,
  no division by t); LayerNorm's input takes as many bits as int64 allows (the EC quantiser caps it
  at 16).
* A Concat whose inputs have units that differ by other than a power of two >= 1 is refused: its
  per-step rescale would round each step and the C2 sum would no longer telescope.
"""
from __future__ import annotations

import math

import numpy as np

from ..hw_profiles import Profile
from ..ir import Datapath, Identity, Input, Network, Population, Readout, SpikePayload, expand_channel
from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.neurons_extra import MultiSpikeIF
from ..ir.nodes import Conv2d, Dense, Operator
from .errors import QuantizationError
from .quant_table import LayerQuant, QuantTable
from .quantize_operators import STATE_LIMIT, _OpQuantizer, _round

THETA_BITS = 16          # the neuron threshold lies in [2^15, 2^16) state units (fewer when the state needs it)
C2_HEADROOM_BITS = 3     # relay / operator units: calibration range x 2^3 fits the payload (a C2 step's
                         # difference F(S(t)) - F(S(t-1)) is at most twice the range)
LN_NORM_FRAC_C2 = 20     # normalised LayerNorm values in units of 2^-20 (EC: 2^-14)
LN_GAMMA_BITS_C2 = 24    # LayerNorm gamma_q in [2^23, 2^24) (EC: 15 bits)
GELU_FRAC_C2 = 12        # GELU input grid 2^-12, table over [-8, 8] (65,537 entries; EC: 2^-8)
SOFTMAX_DIRECT_MAX = 1 << 16   # softmax of an exact integer input spanning at most this many units: direct table
EXP_BITS_C2 = 24         # direct softmax table values in units of 2^-24
SOFTMAX_OUT_FRAC_C2 = 20 # softmax outputs in units of 2^-20
C2_NEURONS = (C2.STBIF, MultiSpikeIF)


def _levels(m) -> tuple[int, int]:
    return (int(m.n_min), int(m.n_max)) if isinstance(m, C2.STBIF) else (-int(m.n_neg), int(m.n_pos))


def _step(m, where: str) -> float:
    v = np.asarray(m.step if isinstance(m, C2.STBIF) else m.threshold, dtype=np.float64)
    if v.ndim and not np.all(v == v.reshape(-1)[0]):
        raise QuantizationError(f"{where}: per-neuron steps (one step per population is quantised; its outgoing "
                                "weights carry it)")
    return float(v.reshape(-1)[0])


class _C2Quantizer(_OpQuantizer):
    """The operator quantiser with C2 neurons, the exact C2 product and sum-input functions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ln_in_bits_cap = 62            # the int64 variance bound decides (quantize_operators._ec)
        self.ln_norm_frac = LN_NORM_FRAC_C2
        self.gelu_frac = GELU_FRAC_C2
        self.gamma_bits = LN_GAMMA_BITS_C2

    # ------------------------------------------------------------------ populations
    def population(self, pop: Population) -> LayerQuant:
        if isinstance(pop.neuron, C2_NEURONS):
            return self._c2_neuron(pop)
        fbias = expand_channel(np.asarray(pop.neuron.bias, dtype=np.float64), tuple(pop.shape))
        pop.neuron.bias = np.array(0.0)          # not the per-step bias register: set below
        row = super().population(pop)
        # C2: the bias enters once, as one graded event at t = 1 (a payload, not the per-step bias register)
        s = self.unit[pop.name]
        b = _round(fbias / s).astype(np.int64)
        if np.abs(b).max(initial=0) > (self.top if not isinstance(pop.neuron, Readout) else STATE_LIMIT):
            raise self.err(f"layer {pop.name!r}", f"bias {np.abs(fbias).max():.6g} is {np.abs(b).max()} units of "
                                                  f"{s:.3g}, beyond the {self.dp.payload_bits}-bit payload")
        pop.neuron.bias = b if np.any(b != b.flat[0]) else np.array(b.flat[0], dtype=np.int64)
        nz = fbias != 0
        row.bias_exp, row.bias_mant_max = 0, int(np.abs(b).max(initial=0))
        row.bias_max_rel_err = float((np.abs(b[nz] * s - fbias[nz]) / np.abs(fbias[nz])).max(initial=0.0))
        return row

    def _relay_unit(self, pop: Population, incoming) -> float:
        """The range-based unit, or finer where needed so that every incoming projection's exponent
        is >= 0: a negative exponent floors each step's sum, and the floors of the steps do not add
        up to the floor of the C2 sum (a single power-of-two weight stays exact: its mantissa is a
        multiple of the shift)."""
        s = super()._relay_unit(pop, incoming)
        if isinstance(pop.neuron, Readout):     # the host sums a Readout in int64: no payload to fit
            s = min(s, 2.0 ** -40)
        for p in incoming:
            peak = float(np.abs(self._norm(p, 1.0)).max(initial=0.0))    # largest |current| per source unit
            if peak == 0 or isinstance(self.net[p.source], Input):      # the input sends once: one floor is exact
                continue
            if isinstance(p, Identity) and np.ndim(p.weight) == 0:
                # one weight: exact at any exponent once it is a power of two >= 1 in target units
                s = min(s, 2.0 ** math.floor(math.log2(peak) + 1e-9))
            else:
                s = min(s, 2.0 ** math.floor(math.log2(2.0 * peak / self.dp.weight_max) - 1e-9))
        return s

    def _c2_neuron(self, pop: Population) -> LayerQuant:
        m, where, dp = pop.neuron, f"layer {pop.name!r}", self.dp
        lo, hi = _levels(m)
        top_level = max(-lo, hi)
        step = _step(m, where)
        tb = min(THETA_BITS, dp.state_bits - 2 - (top_level + 2).bit_length())
        if tb < 2:
            raise self.err(where, f"levels [{lo}, {hi}] leave no threshold bits in the {dp.state_bits}-bit state")
        incoming = self.net.incoming(pop.name)
        s, limited = step / 2.0 ** (tb - 1), f"theta {tb} bits"
        if len(incoming) == 1 and isinstance(incoming[0], Identity) and np.ndim(incoming[0].weight) == 0:
            p = incoming[0]
            base = abs(float(p.weight)) * self.unit[p.source] / self.femit[p.source]
            if base > 0:     # s = base / 2^j: the Identity is an exact power of two, theta = step 2^j / base
                mant_bits = int(math.floor(math.log2(dp.weight_max)))
                j = (tb - 1) - math.floor(math.log2(step / base))
                # j >= 0: the Identity multiplies (a negative exponent would floor each step's current)
                j = max(0, dp.weight_exp_min + mant_bits, min(dp.weight_exp_max + mant_bits, j))
                s, limited = base * 2.0 ** -j, "exact input (power-of-two identity)"
        theta = int(2 * _round(step / s / 2.0))
        if theta < 2:
            raise self.err(where, f"threshold {step / s:.3g} state units rounds below 2 (step {step:g}, unit {s:.3g})")
        if (top_level + 2) * theta > dp.state_max:
            raise self.err(where, f"threshold {theta} x {top_level + 2} levels exceeds state_max {dp.state_max}")
        th_err = abs(theta * s - step) / step
        projections = [self._projection(p, s) for p in incoming]
        bias_exp, bias_mant_max = 0, 0
        if isinstance(m, C2.STBIF):
            m.step = np.array(theta, dtype=np.int64)
            pop.payload = SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1)
            self.vmax[pop.name] = top_level        # the bound on a neuron's summed output (per step: 1)
        else:
            from .quantize import _quantize_bias
            b = np.asarray(m.bias, dtype=np.float64) / s
            bias_int, bias_exp, bias_mant_max = _quantize_bias(b.reshape(-1), dp, pop.name)
            m.bias = bias_int.reshape(b.shape) if b.ndim else np.array(int(bias_int.reshape(-1)[0]), dtype=np.int64)
            m.threshold = np.array(theta, dtype=np.int64)
            m.v_init = np.array(theta // 2, dtype=np.int64)
            pop.payload = SpikePayload(kind="graded", bits=top_level.bit_length() + (1 if lo < 0 else 0),
                                       min_level=lo, max_level=hi)
            self.vmax[pop.name] = top_level
        pop.state_scale = np.array(s)
        pop.decode_scale = np.array(step)
        self.unit[pop.name] = step
        self.femit[pop.name] = step
        return LayerQuant(name=pop.name, neuron=type(m).__name__, shape=tuple(pop.shape), state_scale=float(s),
                          gain=1.0 / s, threshold_mant=theta, threshold=theta, threshold_rel_err=float(th_err),
                          threshold_folded=False, bias_exp=int(bias_exp), bias_mant_max=int(bias_mant_max),
                          bias_max_rel_err=0.0, floor_comp=0.0, leak_dv=None, limited_by=limited,
                          worst_step_current=float(top_level * theta), steps_to_saturation=None,
                          saturation_risk="counted per step (saturate)", projections=projections)

    # ------------------------------------------------------------------ operators
    def operator(self, op: O.TypedOperator) -> None:
        if isinstance(op, O.Concat):
            units = [self.unit[i] for i in op.inputs]
            for i, u in zip(op.inputs, units):
                r = u / units[0]
                if r < 1 or 2.0 ** round(math.log2(r)) != r:
                    raise self.err(f"operator {op.name!r} (Concat)",
                                   f"input {i!r} has unit {u:.6g}, {r:.6g} x the first input's: a C2 Concat rescales "
                                   "only by powers of two >= 1 (a rounded rescale per step breaks the C2 sum)")
        super().operator(op)

    def _ec(self, op, where: str, params: dict) -> tuple[float, int]:
        if isinstance(op, C2.MatMulC2):
            return self._matmul_c2(op, where, params)
        if isinstance(op, C2.SoftmaxC2) and 2 * self.vmax[op.inputs[0]] <= SOFTMAX_DIRECT_MAX:
            return self._softmax_direct(op, where, params)
        return super()._ec(op, where, params)

    def _softmax_direct(self, op: C2.SoftmaxC2, where: str, params: dict) -> tuple[float, int]:
        """Softmax of an input whose sum is an integer within +-vmax (a product of quantised
        operands): ``d = max_j S_j - S_i`` indexes ``lut[d] = round(2^24 exp(-d u scale))`` directly
        (``in_mult = 1, in_shift = 0``: no input rounding); the EC kernel's rule, finer constants."""
        src = op.inputs[0]
        if not op.scale > 0:
            raise self.err(where, f"scale {op.scale} must be > 0")
        vmax = int(self.vmax[src])
        d = np.arange(2 * vmax + 1, dtype=np.float64) * (self.unit[src] * float(op.scale))
        lut = _round(2.0 ** EXP_BITS_C2 * np.exp(-d)).astype(np.int64)
        params.update(lut=lut, out_frac=SOFTMAX_OUT_FRAC_C2, exp_bits=EXP_BITS_C2, in_bits=vmax.bit_length() + 2,
                      in_frac=0, in_mult=1, in_shift=0)
        return 2.0 ** -SOFTMAX_OUT_FRAC_C2, 1 << SOFTMAX_OUT_FRAC_C2

    def _matmul_c2(self, op: C2.MatMulC2, where: str, params: dict) -> tuple[float, int]:
        a, b = op.inputs
        if not op.scale > 0:
            raise self.err(where, f"scale {op.scale} must be > 0 (fold a sign into an input)")
        k = int(self.net.shape_of(a)[-1])
        bound = k * self.vmax[a] * self.vmax[b]          # |S_A(t) S_B(t)| for every t (sum bounds of the inputs)
        if 2 * bound > self.top or bound >= STATE_LIMIT:
            raise self.err(where, f"|S_A S_B| <= {bound} (k = {k}, inputs up to {self.vmax[a]} and {self.vmax[b]}): "
                                  f"a step's difference 2 x {bound} exceeds the {self.dp.payload_bits}-bit payload")
        params.update(sk_bound=int(bound))
        return float(op.scale) * self.unit[a] * self.unit[b], int(bound)


def quantize_c2_network(net: Network, qnet: Network, prof: Profile, dp: Datapath, *, input_bits: int, input_range,
                        max_timesteps: int, headroom_bits: int = C2_HEADROOM_BITS) -> QuantTable:
    """Quantise ``qnet`` (a C2 copy of ``net``) in place; returns the table (``table.operators`` rows)."""
    allowed_ops = (C2.C2Operator, C2.MatMulC2, O.Rearrange, O.Concat, O.Mean)
    for node in qnet.nodes():
        if isinstance(node, Population) and not isinstance(node.neuron, C2_NEURONS + (O.Relay, Readout)):
            raise QuantizationError(f"layer {node.name!r}: neuron {type(node.neuron).__name__} has no quantisation rule "
                                    "in a C2 operator network (STBIF, MultiSpikeIF, Relay, Readout)")
        if isinstance(node, Operator) and not isinstance(node, allowed_ops):
            raise QuantizationError(f"operator {node.name!r} (op {node.op!r}): no fixed-point rule in C2 coding "
                                    "(LayerNormC2, GELUC2, SoftmaxC2, MatMulC2, Rearrange, Concat, Mean)")
        if hasattr(node, "connectivity") and not isinstance(node, (O.TokenDense, Dense, Conv2d, Identity)):
            raise QuantizationError(f"projection {node.name!r}: type {type(node).__name__} has no quantisation rule")
        if isinstance(node, Input) and node.coding != "analog":
            raise QuantizationError(f"input {node.name!r}: coding {node.coding!r} (C2 operator networks take analog input)")
    table = QuantTable(profile=prof.name, options={"input_bits": input_bits, "max_timesteps": max_timesteps,
                                                   "headroom_bits": headroom_bits, "coding": "C2"})
    q = _C2Quantizer(qnet, dp, max_timesteps, headroom_bits)
    q.walk(table, input_bits, input_range)
    for p in qnet.projections():
        exact = p.weight_exp >= 0 or not np.any(np.mod(np.asarray(p.weight, dtype=np.int64), 1 << -p.weight_exp))
        if not exact and not isinstance(qnet[p.source], Input):
            raise QuantizationError(f"projection {p.name!r}: weight_exp {p.weight_exp} < 0 floors each step's current (mantissas not "
                                    f"multiples of 2^{-p.weight_exp}), "
                                    "so the C2 sum over steps would not be the sum's value; no unit of its target "
                                    f"{p.target!r} keeps every incoming exponent in [0, {dp.weight_exp_max}] "
                                    f"within the {dp.payload_bits}-bit payload ({dp.profile})")
    table.operators = q.ops
    table.operator_max_timesteps = int(q.t_max)
    return table


__all__ = ["THETA_BITS", "quantize_c2_network"]
