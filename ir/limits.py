"""The one value check of a network: finite numbers, bounded timing, and a quantised graph's datapath.

``Network.validate`` checks structure (shapes, references, rules of each model); this checks the
numbers themselves, which a damaged or hand-made file can get wrong while keeping a valid
structure. ``ir.load`` runs it on every file; passes may call it on what they produce.

Every network:
  * every numeric field (weights, neuron parameters, scales, offsets, payload values) is finite;
  * ``delay`` and ``t_start`` are integers in 0..MAX_STEPS (a larger value is damage, and would
    make every simulation of the network run for hours).

Quantised networks (``net.datapath`` set), for datapath ``dp`` (docs/fixed_point.md):
  * projection weights are integers in [dp.weight_min, dp.weight_max] and multiples of
    dp.weight_step; ``weight_exp`` in [dp.weight_exp_min, dp.weight_exp_max];
  * neuron array parameters are integers in state units with |x| <= dp.state_max; a ``threshold``
    is in 1..(dp.threshold_max << dp.vth_shift); a ``bias`` has |bias| <= dp.bias_max << dp.bias_exp_max;
    an integer ``leak`` (decay dv) is in 0..2**dp.decay_bits - 1;
  * payloads are integer events: no ``analog`` payload, an integer ``neg_value``; a graded population payload has at most
    dp.payload_bits bits, a graded input at most dp.input_bits.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass

import numpy as np

from .graph import IRError, Network
from .nodes import Input, Operator, Population, Projection

# Fixed-point constants of quantised operators (docs/fixed_point.md, "Transformer operator networks"):
# key -> (lowest, highest); None = the payload range of the datapath.
_OPERATOR_PARAMS = {
    "Concat": {"in_mult": (1, 2 ** 31), "in_shift": (0, 62)},
    "MatMulEC": {"shift": (-62, 62), "sk_bound_per_t2": (0, 2 ** 62)},
    "GELUEC": {"in_mult": (1, 2 ** 31), "in_shift": (0, 62), "in_bits": (2, 33), "lut": None, "lut_half": (1, 2 ** 20),
               "hi_mult": (1, 2 ** 31), "hi_shift": (0, 62)},
    "SoftmaxEC": {"in_mult": (1, 2 ** 31), "in_shift": (0, 62), "in_bits": (2, 33), "lut": (0, 2 ** 31),
                  "out_frac": (0, 30)},
    "LayerNormEC": {"in_mult": (1, 2 ** 31), "in_shift": (0, 62), "in_bits": (2, 33), "eps_q": (1, 2 ** 62),
                    "norm_frac": (0, 30), "gamma_q": (-(2 ** 31), 2 ** 31), "gamma_shift": (-62, 62), "beta_q": None},
}
# MBE operators (C3, docs/fixed_point.md "MBE Transformer networks"): identity tables of both operands
_MBE_OPERAND = {f"{k}_{w}": lim for w in "ab" for k, lim in
                (("threshold", (1, 2 ** 31)), ("reset", (0, 2 ** 31)), ("intensity", None), ("in_mult", (1, 2 ** 62)),
                 ("in_shift", (0, 62)))}
_OPERATOR_PARAMS.update({
    "MBEProduct": {**_MBE_OPERAND, "shift": (-62, 62), "bound": (0, 2 ** 62)},
    "MBEMatMul": {**_MBE_OPERAND, "shift": (-62, 62), "bound": (0, 2 ** 62)},
    "Exp2Split": {"mult": (1, 2 ** 62), "shift": (0, 62), "frac_bits": (1, 30)},
    "MantExp": {"mult": (1, 2 ** 16), "exp_base": (-1100, 1100), "eps_q": (0, 2 ** 62), "frac_bits": (1, 30)},
    "Ldexp": {"shift": (-1100, 1100), "exponent_twice": (-2, 2)},
})
# C2 (sum-coded) forms share their function's constants (compiler/quantize_c2.py); MatMulC2 is exact
_OPERATOR_PARAMS.update(GELUC2=_OPERATOR_PARAMS["GELUEC"], SoftmaxC2=_OPERATOR_PARAMS["SoftmaxEC"],
                        LayerNormC2=_OPERATOR_PARAMS["LayerNormEC"], MatMulC2={})

MAX_STEPS = 4096


def _numeric(value) -> np.ndarray | None:
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        return None
    arr = np.asarray(value)
    return arr if arr.dtype.kind in "biuf" else None


def _check_finite(obj, where: str, prefix: str = "") -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            _check_finite(value, where, f"{prefix}{f.name}.")
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                arr = _numeric(v)
                if arr is not None and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    raise IRError(f"{where}: {prefix}{f.name}[{k!r}] contains NaN or infinity")
            continue
        arr = _numeric(value)
        if arr is not None and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = arr[~np.isfinite(arr)].ravel()[0] if arr.ndim else arr
            raise IRError(f"{where}: {prefix}{f.name} contains {bad} (every number must be finite)")


def _limit(where: str, name: str, arr: np.ndarray, lo, hi, rule: str) -> None:
    if arr.size == 0:
        return
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.floor(arr)):
        bad = arr[arr != np.floor(arr)].ravel()[0]
        raise IRError(f"{where}: {name} = {bad} is not an integer (quantised network, {rule})")
    lo_v, hi_v = arr.min(), arr.max()
    if lo is not None and lo_v < lo:
        raise IRError(f"{where}: {name} = {lo_v:g} is below the limit {lo} ({rule})")
    if hi is not None and hi_v > hi:
        raise IRError(f"{where}: {name} = {hi_v:g} exceeds the limit {hi} ({rule})")


def _check_steps(node, where: str) -> None:
    for name in ("delay", "t_start"):
        if hasattr(node, name):
            v = getattr(node, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= MAX_STEPS:
                raise IRError(f"{where}: {name} = {v!r} must be an integer in 0..{MAX_STEPS} steps")


def _check_quantized(net: Network, node, where: str) -> None:
    dp = net.datapath
    src = f"datapath {dp.profile!r}"
    if isinstance(node, Projection):
        w = np.asarray(node.weight)
        w = w if w.dtype.kind in "iu" else w.astype(np.float64)   # integer weights are checked as they are
        _limit(where, "weight", w, dp.weight_min, dp.weight_max, f"{dp.weight_bits}-bit weights of {src}")
        if w.size and dp.weight_step > 1 and np.any(np.mod(w, dp.weight_step) != 0):
            bad = w[np.mod(w, dp.weight_step) != 0].ravel()[0]
            raise IRError(f"{where}: weight = {bad:g} is not a multiple of weight_step {dp.weight_step} of {src}")
        e = node.weight_exp
        if not isinstance(e, (int, np.integer)) or not dp.weight_exp_min <= e <= dp.weight_exp_max:
            raise IRError(f"{where}: weight_exp = {e!r} outside {dp.weight_exp_min}..{dp.weight_exp_max} of {src}")
        return
    payload = getattr(node, "payload", None)
    if payload is not None:
        if payload.kind == "analog":
            raise IRError(f"{where}: payload kind 'analog' in a quantised network (events carry integers on {src})")
        if payload.neg_value != int(payload.neg_value):
            raise IRError(f"{where}: payload.neg_value = {payload.neg_value} is not an integer (quantised events carry "
                          f"integer values on {src})")
        if payload.kind == "graded":
            top = dp.input_bits if isinstance(node, Input) else dp.payload_bits
            if payload.bits > top:
                raise IRError(f"{where}: payload bits = {payload.bits} exceeds the limit {top} of {src}")
    if isinstance(node, Operator):
        _check_operator(dp, node, where, src)
        return
    if not isinstance(node, Population):
        return
    m = node.neuron
    for name in getattr(m, "array_fields", ()):
        value = getattr(m, name)
        if value is None:
            continue
        arr = np.asarray(value)
        arr = arr if arr.dtype.kind in "iu" else arr.astype(np.float64)
        if name == "threshold":
            _limit(where, "neuron.threshold", arr, 1, dp.threshold_max << dp.vth_shift,
                   f"threshold_max {dp.threshold_max} << vth_shift {dp.vth_shift} of {src}")
        elif name == "bias" and net.coding == "C2" and not m.spiking:
            # C2: a Relay / Readout bias enters once, as one graded event at t = 1 (compiler/quantize_c2.py)
            top = 2 ** (dp.payload_bits - 1) - 1 if m.__class__.__name__ != "Readout" else 2 ** 62
            _limit(where, "neuron.bias", arr, -top, top, f"{dp.payload_bits}-bit payload of {src} (C2: bias sent once)"
                   if top < 2 ** 62 else "the host's int64 sum (C2 Readout)")
        elif name == "bias":
            _limit(where, "neuron.bias", arr, -(dp.bias_max << dp.bias_exp_max), dp.bias_max << dp.bias_exp_max,
                   f"bias_max {dp.bias_max} << bias_exp_max {dp.bias_exp_max} of {src}")
        else:
            _limit(where, f"neuron.{name}", arr, -dp.state_max, dp.state_max, f"{dp.state_bits}-bit state of {src}")
    leak = getattr(m, "leak", None)
    if leak is not None and leak != 0:
        _limit(where, "neuron.leak", np.asarray(leak, dtype=np.float64), 0, 2 ** dp.decay_bits - 1,
               f"{dp.decay_bits}-bit decay of {src}")


def _check_operator(dp, op, where: str, src: str) -> None:
    """A quantised typed operator: its fixed-point constants present, integers, within their widths."""
    arith = getattr(op, "arithmetic", "none")
    if arith not in ("fixed", "none"):
        raise IRError(f"{where}: arithmetic {arith!r} in a quantised network (operators run 'fixed' or are wiring 'none')")
    params = op.params if isinstance(op.params, dict) else {}
    rules = _OPERATOR_PARAMS.get(type(op).__name__, {})
    if arith == "none" and type(op).__name__ in ("Rearrange", "Concat", "Mean") or arith == "fixed":
        scale = params.get("out_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise IRError(f"{where}: params.out_scale = {scale!r} must be a positive number (quantised operator)")
    top = 2 ** (dp.payload_bits - 1) - 1
    for key, lim in rules.items():
        if key not in params:
            raise IRError(f"{where}: params.{key} is missing (quantised {type(op).__name__}, docs/fixed_point.md)")
        arr = np.asarray(params[key])
        if arr.dtype.kind not in "biuf":
            raise IRError(f"{where}: params.{key} = {params[key]!r} is not numeric")
        lo, hi = (-top, top) if lim is None else lim
        _limit(where, f"params.{key}", arr.astype(np.float64), lo, hi,
               f"{dp.payload_bits}-bit payload of {src}" if lim is None else "its fixed-point width")
    prefix = getattr(op, "prefix", None)
    if prefix is not None:
        _limit(where, "prefix", np.asarray(prefix, dtype=np.float64), -top, top, f"{dp.payload_bits}-bit payload of {src}")


def check_limits(net: Network, where: str = "network") -> None:
    """Raise IRError naming ``where``, the node, the field, the value and the limit it breaks."""
    for node in net.nodes():
        at = f"{where}: {type(node).__name__.lower()} {node.name!r}"
        _check_finite(node, at)
        _check_steps(node, at)
        if net.datapath is not None:
            _check_quantized(net, node, at)


__all__ = ["MAX_STEPS", "check_limits"]
