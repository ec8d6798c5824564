"""Map a quantised IR network onto Lava processes: a pure-numpy plan (no Lava import).

The plan decides, per population and projection, which Lava Process realises it, converts the
arrays to Lava's layouts ((C, H, W) populations become Lava's (X, Y, C) = (W, H, C); Dense weights
are permuted to match Lava's C-order flatten of that layout; Conv kernels are transposed and
spatially flipped because lava.proc.conv computes a true convolution) and records whether Loihi 2
has a native implementation. Every refusal names the node, the value and the limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir import IF, Conv2d, Dense, Identity, Input, Network, Population, Readout, expand_channel
from ...ir.neurons_extra import GradedSignedIF, MultiSpikeIF
from ...errors import SpikeportError
from ...ir.neurons_cuba import CubaLIF

VTH_SHIFT = 6
VTH_MAX = (1 << 17) - 1
BIAS_MANT_MIN, BIAS_MANT_MAX = -(1 << 12), (1 << 12) - 1
BIAS_EXP_MAX = 7
STATE_MAX = (1 << 23) - 1
MESSAGE_BITS_MAX = 24         # graded spike payloads travel in the 24-bit datapath (a_in, u)
NATIVE = "native on Loihi 2"
SIM_ONLY = "simulation-only (a custom neuron needs Loihi 2 microcode)"


class LavaExportError(SpikeportError):
    """The network cannot be expressed exactly with the Lava processes spikeport uses."""


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava's layout of an IR shape: (C, H, W) -> (W, H, C); anything else flattened to (N,)."""
    shape = tuple(int(s) for s in shape)
    return shape[::-1] if len(shape) == 3 else (int(np.prod(shape)),)


def to_lava(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Array in IR layout (shape) -> Lava layout."""
    arr = np.asarray(arr).reshape(shape)
    return arr.transpose(2, 1, 0) if len(shape) == 3 else arr.reshape(-1)


def from_lava(arr: np.ndarray, shape: tuple[int, ...], lead: int = 0) -> np.ndarray:
    """Array in Lava layout with ``lead`` leading axes (e.g. time) -> IR layout."""
    arr = np.asarray(arr)
    if len(shape) == 3:
        axes = tuple(range(lead)) + tuple(lead + i for i in (2, 1, 0))
        return arr.transpose(axes)
    return arr.reshape(arr.shape[:lead] + tuple(shape))


def flat_perm(shape: tuple[int, ...]) -> np.ndarray:
    """perm[j] = IR (C-order) flat index of Lava flat index j."""
    n = int(np.prod(shape))
    return to_lava(np.arange(n), shape).reshape(-1)


def level_bits(lo: int, hi: int) -> int:
    """Message bits for integer event values in [lo, hi] (two's complement when lo < 0)."""
    top = max(abs(int(lo)), abs(int(hi)), 1)
    return top.bit_length() + (1 if lo < 0 else 0)


def event_values(params: dict, spikes: np.ndarray) -> np.ndarray:
    """The value each event code delivers downstream, as the neuron process sends it: the count
    itself for a multi-spike neuron, else +1 -> pos_value and -1 -> -neg_value."""
    s = np.asarray(spikes).astype(np.int64)
    if params.get("multi_spike", False):
        return s
    return np.where(s > 0, int(params.get("pos_value", 1)), np.where(s < 0, -int(params.get("neg_value", 1)), 0))


def emitted_levels(pop: Population) -> tuple[int, int] | None:
    """(min, max) of the values a spiking population sends, or None for binary 0/1 events."""
    m = pop.neuron
    if isinstance(m, MultiSpikeIF):
        return -int(m.n_neg), int(m.n_pos)
    if isinstance(m, GradedSignedIF):
        return int(pop.payload.min_level), int(pop.payload.max_level)
    if isinstance(m, IF) and m.neg_threshold is not None:
        return -int(round(float(pop.payload.neg_value))), 1
    return None


LAVA_OWN = ("LIF", "TernaryLIF", "Dense", "DelayDense", "Conv")


def runs_as(process: str) -> str:
    """'Lava' for Lava's own processes, 'spikeport' for spikeport's processes (processes/)."""
    return "Lava" if process in LAVA_OWN else "spikeport"


@dataclass
class NeuronPlan:
    """One population as a Lava neuron process."""

    name: str
    process: str                  # "LIF" | "TernaryLIF" | "SpikeportNeuron"
    shape: tuple[int, ...]        # IR shape
    lava_shape: tuple[int, ...]
    params: dict                  # Lava-layout arrays and scalars for the process constructor
    payload: str                  # what s_out carries
    hardware: str
    why: str = ""                 # why a custom process was needed
    t_start: int = 0
    always_active: bool = False   # LavaLIF: updates (and counts events) at every step of the run


@dataclass
class SynapsePlan:
    """One projection as a Lava connection process (1 step latency)."""

    name: str
    process: str                  # "Dense" | "DelayDense" | "Conv" | "ScaledConv"
    source: str
    target: str
    params: dict
    hardware: str
    note: str = ""


@dataclass
class InputPlan:
    name: str
    shape: tuple[int, ...]
    lava_shape: tuple[int, ...]
    coding: str
    scale: float
    min_level: int
    max_level: int
    bits: int


@dataclass
class LavaPlan:
    """Everything needed to build the Lava network for runs of ``timesteps`` steps."""

    inputs: list[InputPlan]
    neurons: list[NeuronPlan]
    synapses: list[SynapsePlan]
    outputs: list[str]
    coding: str
    timesteps: int
    steps_run: int
    decode: dict = field(default_factory=dict)   # population -> (decode_scale, decode_offset, state_scale)

    def report(self) -> list[dict]:
        """One row per layer: Lava process, whose code runs it (``runs``), hardware support, payload.

        ``runs`` is "Lava" for Lava's own processes (LIF, TernaryLIF, Dense, DelayDense, Conv): an
        identical verify then compares spikeport with Lava's code. It is "spikeport" for spikeport's
        processes (SpikeportNeuron, ScaledConv), whose fixed-point models re-implement Lava's
        arithmetic: identical then means identical to that re-implementation."""
        rows = [{"layer": n.name, "process": n.process, "runs": runs_as(n.process), "hardware": n.hardware,
                 "payload": n.payload, "note": n.why} for n in self.neurons]
        rows += [{"layer": s.name, "process": s.process, "runs": runs_as(s.process), "hardware": s.hardware,
                  "payload": "graded" if s.params.get("num_message_bits", 0) else "binary", "note": s.note}
                 for s in self.synapses]
        return rows


def _int_array(value, shape, where: str, what: str) -> np.ndarray:
    arr = expand_channel(np.asarray(value), shape)
    if not np.array_equal(arr, np.round(arr)):
        raise LavaExportError(f"{where}: {what} must hold integers in a quantised network, got {arr.ravel()[:4]}")
    return arr.astype(np.int64)


def split_bias(bias: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """bias = bias_mant << bias_exp with a 13-bit signed mantissa and exp in 0..7 (smallest exp)."""
    mant = np.zeros(bias.shape, np.int64)
    exp = np.full(bias.shape, -1, np.int64)
    for e in range(BIAS_EXP_MAX + 1):
        m = bias >> e
        ok = (exp < 0) & ((m << e) == bias) & (m >= BIAS_MANT_MIN) & (m <= BIAS_MANT_MAX)
        mant[ok], exp[ok] = m[ok], e
    if np.any(exp < 0):
        bad = bias[exp < 0].ravel()[0]
        raise LavaExportError(f"{where}: bias {bad} is not bias_mant << bias_exp with bias_mant in "
                              f"[{BIAS_MANT_MIN}, {BIAS_MANT_MAX}] and bias_exp in 0..{BIAS_EXP_MAX}")
    return mant, np.maximum(exp, 0)


def _vth(threshold: np.ndarray, where: str) -> np.ndarray:
    if np.any(threshold <= 0) or np.any(threshold % (1 << VTH_SHIFT)):
        bad = threshold[(threshold <= 0) | (threshold % (1 << VTH_SHIFT) != 0)].ravel()[0]
        raise LavaExportError(f"{where}: threshold {bad} is not a positive multiple of 2^{VTH_SHIFT} (vth_mant << 6)")
    vth = threshold >> VTH_SHIFT
    if vth.max() > VTH_MAX:
        raise LavaExportError(f"{where}: threshold mantissa {vth.max()} exceeds the 17-bit limit {VTH_MAX}")
    return vth


def _neuron_plan(net: Network, pop: Population, timesteps: int, steps_run: int, native: bool) -> NeuronPlan:
    where = f"population {pop.name!r}"
    shape = tuple(int(s) for s in pop.shape)
    L = lambda a: to_lava(a, shape)  # noqa: E731
    neuron = pop.neuron
    t_end = pop.t_start + timesteps
    v_init = _int_array(neuron.v_init, shape, where, "v_init")
    bias = _int_array(neuron.bias, shape, where, "bias")
    if np.abs(v_init).max() > STATE_MAX:
        raise LavaExportError(f"{where}: |v_init| {np.abs(v_init).max()} exceeds the 24-bit state limit {STATE_MAX}")
    mant, exp = split_bias(bias, where)
    # A native LIF runs for the whole run: exact only if nothing happens before t_start (zero bias,
    # zero state, upstream silent) and the population's window ends with the run.
    gating_free = (pop.t_start == 0 or not bias.any()) and t_end == steps_run and not v_init.any()
    ungated = bool(getattr(type(neuron), "always_active", False))   # LavaLIF: the IR itself is ungated
    common = dict(shape=lava_shape(shape), bias_mant=L(mant), bias_exp=L(exp))
    if isinstance(neuron, Readout):
        params = dict(common, vth=L(np.full(shape, 1)), v_init=L(v_init), dv=0, spiking=False, reset_subtract=False,
                      compare_ge=False, neg_value=1, t_start=pop.t_start, t_end=t_end, period=steps_run)
        return NeuronPlan(pop.name, "SpikeportNeuron", shape, lava_shape(shape), params, "none (non-spiking)", SIM_ONLY,
                          "Readout never fires: LIF's 17-bit threshold is below the 24-bit state maximum", pop.t_start)
    if isinstance(neuron, MultiSpikeIF):
        return _multi_spike_plan(pop, shape, common, v_init, t_end, steps_run)
    if isinstance(neuron, CubaLIF):
        return _cuba_plan(pop, shape, common, v_init, bias, t_end, steps_run, gating_free or ungated, native, ungated)
    if not isinstance(neuron, (IF, GradedSignedIF)):
        raise LavaExportError(f"{where}: neuron model {type(neuron).__name__} has no Lava mapping "
                              "(IF, GradedSignedIF, MultiSpikeIF, Readout)")
    if isinstance(neuron, GradedSignedIF):
        return _graded_signed_plan(pop, shape, common, v_init, t_end, steps_run)
    vth = _vth(_int_array(neuron.threshold, shape, where, "threshold"), where)
    dv = int(round(float(neuron.leak)))
    if not 0 <= dv <= 4095 or dv != float(neuron.leak):
        raise LavaExportError(f"{where}: leak {neuron.leak} must be the integer 12-bit decay dv in 0..4095")
    signed = neuron.neg_threshold is not None
    neg_value = float(pop.payload.neg_value)
    if signed and neg_value != int(neg_value):
        raise LavaExportError(f"{where}: payload neg_value {neg_value} must be an integer for a graded -1 event")
    reasons = []
    if neuron.reset != "zero":
        reasons.append("reset by subtraction")
    if neuron.compare != ">":
        reasons.append(f"compare {neuron.compare!r} (Lava LIF fires on '>')")
    if not gating_free and not ungated:
        reasons.append(f"t_start gating (active steps [{pop.t_start}, {t_end}) of {steps_run})")
    neg_th = neg_reset = None
    if signed:
        neg_th = _int_array(neuron.neg_threshold, shape, where, "neg_threshold")
        neg_reset = _int_array(neuron.neg_reset, shape, where, "neg_reset")
        if np.any(neg_th % (1 << VTH_SHIFT)) or neg_value != 1:
            reasons.append("negative threshold not a multiple of 64 or neg_value != 1")
    if np.unique(vth).size > 1 or (signed and np.unique(neg_th).size > 1):
        reasons.append("per-neuron thresholds (Lava's LIF holds one vth per population)")
    payload = "signed (graded)" if signed else "binary"
    if native and not reasons:
        lif = dict(common, vth=int(vth.flat[0]), du=4095, dv=dv, u=0, v=L(v_init) if v_init.any() else 0)
        if signed:
            lif.pop("vth")
            lif.update(vth_hi=int(vth.flat[0]), vth_lo=int(-(neg_th.flat[0] >> VTH_SHIFT)))
            return NeuronPlan(pop.name, "TernaryLIF", shape, lava_shape(shape), lif, payload, NATIVE, t_start=pop.t_start)
        return NeuronPlan(pop.name, "LIF", shape, lava_shape(shape), lif, payload, NATIVE, t_start=pop.t_start,
                          always_active=ungated)
    if ungated:  # a spikeport process standing in for Lava's LIF must not gate either
        t_start_p, t_end = 0, steps_run
    else:
        t_start_p = pop.t_start
    params = dict(common, vth=L(vth), v_init=L(v_init), dv=dv, spiking=True,
                  reset_subtract=neuron.reset == "subtract", compare_ge=neuron.compare == ">=",
                  neg_value=int(neg_value), t_start=t_start_p, t_end=t_end, period=steps_run)
    if signed:
        params.update(neg_threshold=L(neg_th), neg_reset=L(neg_reset))
    return NeuronPlan(pop.name, "SpikeportNeuron", shape, lava_shape(shape), params, payload, SIM_ONLY,
                      "; ".join(reasons) or "native mapping disabled", pop.t_start, always_active=ungated)


def _cuba_plan(pop: Population, shape, common: dict, v_init, bias, t_end: int, steps_run: int, gating_free: bool,
               native: bool, ungated: bool = False) -> NeuronPlan:
    """CubaLIF: Lava's own LIF (du, dv, zero reset, '>') when nothing needs gating, else spikeport's neuron
    process with the same du (its current decay is Lava's). ``LavaCubaLIF`` (ungated) runs at every step
    in either process."""
    where, m = f"population {pop.name!r}", pop.neuron
    L = lambda a: to_lava(a, shape)  # noqa: E731
    vth = _vth(_int_array(m.threshold, shape, where, "threshold"), where)
    du, dv = int(m.du), int(m.dv)
    u_init = _int_array(m.u_init, shape, where, "u_init")
    if m.reset == "subtract" and m.reset_timing == "next_step":
        raise LavaExportError(f"{where}: CubaLIF with the threshold subtracted after the next decay (snnTorch's delayed "
                              "reset) has no Lava process; import with --reset zero")
    if np.any(_int_array(m.current_bias, shape, where, "current_bias")):
        raise LavaExportError(f"{where}: CubaLIF current_bias has no Lava LIF register")
    reasons = [r for r, bad in (("reset by subtraction", m.reset != "zero"), (f"compare {m.compare!r}", m.compare != ">"),
                                (f"t_start gating (active steps [{pop.t_start}, {t_end}) of {steps_run})", not gating_free),
                                ("u_init", bool(u_init.any())),
                                ("per-neuron thresholds", np.unique(vth).size > 1)) if bad]
    if native and not reasons:
        lif = dict(common, vth=int(vth.flat[0]), du=du, dv=dv, u=0, v=0)
        return NeuronPlan(pop.name, "LIF", shape, lava_shape(shape), lif, "binary", NATIVE, t_start=pop.t_start,
                          always_active=ungated)
    if u_init.any():
        raise LavaExportError(f"{where}: CubaLIF u_init is not supported by spikeport's Lava process")
    t_start_p, t_end_p = (0, steps_run) if ungated else (pop.t_start, t_end)
    params = dict(common, vth=L(vth), v_init=L(v_init), du=du, dv=dv, spiking=True, reset_subtract=m.reset == "subtract",
                  compare_ge=m.compare == ">=", neg_value=1, t_start=t_start_p, t_end=t_end_p, period=steps_run)
    return NeuronPlan(pop.name, "SpikeportNeuron", shape, lava_shape(shape), params, "binary", SIM_ONLY,
                      "; ".join(reasons) or "native mapping disabled", pop.t_start, always_active=ungated)


def _graded_bits(where: str, lo: int, hi: int) -> int:
    bits = level_bits(lo, hi)
    if bits > MESSAGE_BITS_MAX:
        raise LavaExportError(f"{where}: graded event values [{lo}, {hi}] need {bits} message bits, more than the "
                              f"{MESSAGE_BITS_MAX}-bit datapath carries")
    return bits


def _multi_spike_plan(pop: Population, shape, common: dict, v_init, t_end: int, steps_run: int) -> NeuronPlan:
    """PMSM's MultiSpikeIF: one graded event carrying the signed count (custom microcode on the chip)."""
    where = f"population {pop.name!r}"
    m: MultiSpikeIF = pop.neuron
    L = lambda a: to_lava(a, shape)  # noqa: E731
    vth = _vth(_int_array(m.threshold, shape, where, "threshold"), where)
    lo, hi = -int(m.n_neg), int(m.n_pos)
    bits = _graded_bits(where, lo, hi)
    params = dict(common, vth=L(vth), v_init=L(v_init), dv=0, spiking=True, reset_subtract=True, compare_ge=True,
                  neg_value=1, pos_value=1, multi_spike=True, n_pos=hi, n_neg=-lo, t_start=pop.t_start, t_end=t_end,
                  period=steps_run)
    why = (f"multi-spike count n = clip(floor(v / threshold), {lo}, {hi}) sent as one graded event, v -= n * threshold"
           " (no Lava LIF; custom neuron microcode)")
    return NeuronPlan(pop.name, "SpikeportNeuron", shape, lava_shape(shape), params,
                      f"graded signed count [{lo}, {hi}] ({bits} bits)", SIM_ONLY, why, pop.t_start)


def _graded_signed_plan(pop: Population, shape, common: dict, v_init, t_end: int, steps_run: int) -> NeuronPlan:
    """GradedSignedIF: signed IF dynamics; +1 sends payload.max_level, -1 sends payload.min_level."""
    where = f"population {pop.name!r}"
    m: GradedSignedIF = pop.neuron
    L = lambda a: to_lava(a, shape)  # noqa: E731
    vth = _vth(_int_array(m.threshold, shape, where, "threshold"), where)
    dv = int(round(float(m.leak)))
    if not 0 <= dv <= 4095 or dv != float(m.leak):
        raise LavaExportError(f"{where}: leak {m.leak} must be the integer 12-bit decay dv in 0..4095")
    lo, hi = int(pop.payload.min_level), int(pop.payload.max_level)
    if not lo < 0 < hi:
        raise LavaExportError(f"{where}: GradedSignedIF payload levels [{lo}, {hi}] must satisfy "
                              "min_level < 0 < max_level")
    bits = _graded_bits(where, lo, hi)
    params = dict(common, vth=L(vth), v_init=L(v_init), dv=dv, spiking=True, reset_subtract=m.reset == "subtract",
                  compare_ge=m.compare == ">=", neg_value=-lo, pos_value=hi,
                  neg_threshold=L(_int_array(m.neg_threshold, shape, where, "neg_threshold")),
                  neg_reset=L(_int_array(m.neg_reset, shape, where, "neg_reset")),
                  t_start=pop.t_start, t_end=t_end, period=steps_run)
    why = (f"graded signed events (+1 carries {hi}, -1 carries {lo}); TernaryLIF sends only -1/0/+1 "
           "(custom neuron microcode)")
    return NeuronPlan(pop.name, "SpikeportNeuron", shape, lava_shape(shape), params,
                      f"graded signed (+1 -> {hi}, -1 -> {lo}; {bits} bits)", SIM_ONLY, why, pop.t_start)


def _message_bits(net: Network, source: str) -> int:
    node = net[source]
    if isinstance(node, Input):
        return max(int(node.payload.bits), 1)
    levels = emitted_levels(node) if isinstance(node, Population) and node.neuron.spiking else None
    if levels is None:
        return 0  # binary: Lava sums the weight columns of the active inputs
    if isinstance(node.neuron, IF):
        return max(int(node.payload.bits), 2)  # signed: Lava multiplies (a -1 would count +1 in binary mode)
    return _graded_bits(f"population {node.name!r}", *levels)  # graded: weights.dot(s) sums the payloads


def lava_dense_weights(w: np.ndarray, where: str) -> dict:
    """Dense weights + sign mode such that Lava's own clip and truncation keep them unchanged.

    Lava's bit-accurate Dense clips to 8 bits by sign mode and truncates to ``num_weight_bits``
    (mixed signs: even values). A weight those steps would change is refused, never altered.
    """
    from . import compat
    compat.install()
    from lava.utils.weightutils import SignMode, clip_weights, determine_sign_mode, truncate_weights
    mode = determine_sign_mode(w)
    lava_w = truncate_weights(clip_weights(w, mode, num_bits=8), mode, 8)
    if not np.array_equal(lava_w, w):
        i = np.argwhere(lava_w != w)[0]
        raise LavaExportError(f"{where}: weight {w[tuple(i)]} at {tuple(int(k) for k in i)} becomes "
                              f"{lava_w[tuple(i)]} in Lava's Dense (sign mode {SignMode(mode).name}: 8-bit clip, "
                              "mixed-sign weights must be even in [-256, 254])")
    return dict(weights=w.astype(np.int32), num_weight_bits=8, sign_mode=int(SignMode(mode).value))


def _synapse_plan(net: Network, proj) -> SynapsePlan:
    where = f"projection {proj.name!r} ({proj.source} -> {proj.target})"
    if not 1 <= proj.delay <= 64 or (isinstance(proj, Conv2d) and proj.delay != 1):
        raise LavaExportError(f"{where}: delay {proj.delay}; Lava's Dense and Conv add exactly 1 step and DelayDense "
                              "1 to 64 (dense / one-to-one only): quantise for a profile with synapse_delay = 1")
    src_shape, dst_shape = net.shape_of(proj.source), net.shape_of(proj.target)
    w = np.asarray(proj.weight)
    if not np.array_equal(w, np.round(w)):
        raise LavaExportError(f"{where}: weights must be integers in a quantised network")
    w = w.astype(np.int64)
    bits = _message_bits(net, proj.source)
    exp = int(proj.weight_exp)
    if isinstance(proj, Conv2d):
        kernel = w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :].copy()  # (O, I, kH, kW) -> flipped (O, kW, kH, I)
        params = dict(weight=kernel, input_shape=lava_shape(src_shape), padding=tuple(proj.padding[::-1]),
                      stride=tuple(proj.stride[::-1]), dilation=tuple(proj.dilation[::-1]), groups=int(proj.groups),
                      num_message_bits=bits)
        if np.abs(w).max(initial=0) > 256:
            raise LavaExportError(f"{where}: |weight| {np.abs(w).max()} exceeds Loihi's 8-bit magnitude limit")
        if exp == 0:
            return SynapsePlan(proj.name, "Conv", proj.source, proj.target, dict(params, weight_exp=0), NATIVE)
        return SynapsePlan(proj.name, "ScaledConv", proj.source, proj.target, dict(params, weight_exp=exp),
                           "native on Loihi 2 (hardware applies weight_exp; spikeport's CPU model adds it because "
                           "lava.proc.conv's Python model ignores weight_exp)",
                           note="lava.proc.conv Conv + weight_exp")
    if isinstance(proj, Dense):
        dense = w[np.ix_(flat_perm(dst_shape), flat_perm(src_shape))]
        note = ""
    elif isinstance(proj, Identity):
        diag = to_lava(_int_array(proj.weight, dst_shape, where, "weight"), dst_shape).reshape(-1)
        dense = np.diag(diag)
        note = "one-to-one as a diagonal Dense"
    else:
        raise LavaExportError(f"{where}: projection type {type(proj).__name__} has no Lava mapping")
    params = dict(lava_dense_weights(dense, where), weight_exp=exp, num_message_bits=bits)
    if proj.delay > 1:  # DelayDense: synaptic delay k arrives after 1 + k steps
        params["delays"] = int(proj.delay) - 1
        return SynapsePlan(proj.name, "DelayDense", proj.source, proj.target, params, NATIVE,
                           (note + "; " if note else "") + f"delay {proj.delay}")
    return SynapsePlan(proj.name, "Dense", proj.source, proj.target, params, NATIVE, note)


def plan_network(net: Network, timesteps: int, native: bool = True) -> LavaPlan:
    """Plan the Lava network of a quantised ``net`` for runs of ``timesteps`` input steps."""
    if net.datapath is None:
        raise LavaExportError("network is not quantised (net.datapath is None): run spikeport.compiler.quantize first")
    if timesteps < 1:
        raise LavaExportError(f"timesteps {timesteps} must be >= 1")
    net.validate()
    if net.operators():
        raise LavaExportError(f"operator {net.operators()[0].name!r} ({net.operators()[0].op}) has no Lava process")
    steps_run = timesteps + net.latency()
    inputs = []
    for inp in net.inputs():
        if inp.coding not in ("analog", "once", "spikes"):
            raise LavaExportError(f"input {inp.name!r}: coding {inp.coding!r} is not supported by the Lava backend")
        p = inp.payload
        inputs.append(InputPlan(inp.name, tuple(inp.shape), lava_shape(tuple(inp.shape)), inp.coding, float(inp.scale),
                                int(p.min_level), int(p.max_level), int(p.bits)))
    neurons = [_neuron_plan(net, pop, timesteps, steps_run, native) for pop in net.populations()]
    synapses = [_synapse_plan(net, proj) for proj in net.projections()]
    decode = {pop.name: (np.asarray(pop.decode_scale, float), np.asarray(pop.decode_offset, float),
                         np.asarray(pop.state_scale, float)) for pop in net.populations()}
    return LavaPlan(inputs, neurons, synapses, list(net.outputs), net.coding, timesteps, steps_run, decode)
