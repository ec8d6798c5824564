"""The conversion-method registry and the ``convert`` entry point.

A method is one module defining a class decorated with ``@register_method("name")``. The class is
a dataclass whose fields are the method's options; it calibrates (``prepare``) and then chooses the
neuron of each activation (``activation``) and of the readout (``readout``) while the shared
lowering (``convert.lower``) builds the structure.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Callable

import numpy as np

from .. import ir
from ..frontend import AnnModel, replace_maxpool
from .calibrate import check_calibration_data
from .lower import ActivationContext, ConversionError, NeuronSpec, default_readout, lower

METHODS: dict[str, type] = {}
MAXPOOL_CHOICES = ("error", "avg")


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a conversion method available as ``convert(..., method=name)``."""
    def deco(cls: type) -> type:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"conversion method {name!r} is registered twice ({METHODS[name].__name__}, {cls.__name__})")
        cls.method_name = name
        METHODS[name] = cls
        return cls
    return deco


class ConversionMethod:
    """Base class of methods (subclasses are dataclasses of their options).

    coding        'C1' or 'C2', recorded on the network
    input_coding  coding of the ``ir.Input`` ('analog' for C1)
    """

    method_name = "?"
    coding = "C1"
    input_coding = "analog"

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        """Calibrate on ``calib_x`` (float32, checked) before lowering."""

    def activation(self, ctx: ActivationContext) -> NeuronSpec:
        raise NotImplementedError

    def readout(self, ctx: ActivationContext) -> NeuronSpec:
        return default_readout(ctx)

    def calibration_summary(self) -> dict:
        """Per-layer figures recorded in ``net.meta['calibration']``."""
        return {}

    def own_structure(self, ann: AnnModel) -> bool:
        """True where the method builds the IR of ``ann`` itself (``build``) instead of the shared lowering."""
        return hasattr(self, "build")


def _make_method(method: str, options: dict) -> ConversionMethod:
    if method not in METHODS:
        raise ConversionError(f"unknown conversion method {method!r}; available: {sorted(METHODS)}")
    cls = METHODS[method]
    known = {f.name for f in fields(cls) if not f.name.startswith("_")}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConversionError(f"method {method!r}: unknown option(s) {unknown}; options are {sorted(known)}")
    options = {k: _coerce(method, cls, k, v) for k, v in options.items()}
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:  # the method's own option checks
        text = str(e)
        raise ConversionError(text if text.startswith(f"method {method!r}") else f"method {method!r}: {text}") from None


_SCALAR_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


def _coerce(method: str, cls: type, key: str, value):
    """Check an option value against the field's declared scalar type (``--opt percentile=abc``
    must name the key, not fail inside the method); ints are accepted where floats are declared."""
    ftype = next(f.type for f in fields(cls) if f.name == key)
    want = _SCALAR_TYPES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
    if want is None or isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    kind = {float: "a number", int: "an integer", bool: "true or false", str: "a word"}[want]
    raise ConversionError(f"method {method!r}: option {key}={value!r} must be {kind}")


def convert(ann: AnnModel, calib_x: np.ndarray, method: str = "if", maxpool: str | None = None,
            timesteps: int | None = None, pool: str = "auto", release_ann: bool = False, **options) -> ir.Network:
    """Convert ``ann`` to a float IR network with ``method``, calibrating on ``calib_x``.

    maxpool  'error' (default): a MaxPool stops the conversion with an explanation; 'avg': each
             MaxPool is replaced by an AvgPool first (recorded in ``net.meta['replaced']``). The
             replacement changes the network, so it is never implicit: QCFS prescribes it before
             fine-tuning (``spikeport finetune``), not at conversion.
    timesteps the target T; passed to methods that have a ``timesteps`` option, recorded in
              ``net.meta['timesteps']`` either way.
    pool     AvgPool before a conv: 'auto' (fold it into the conv only where that adds no MACs,
             else a relay population; a Linear after pooling stays folded; decided per layer,
             ``net.meta['pooling']``), 'fold' (always fold, exact), 'separate' (relay wherever the
             pooled source is a non-negative binary IF population).
    release_ann  hand the ANN's weights over: each layer's are freed once its IR weights exist (methods
              that build layer by layer: ecmt and those built on it), the rest when conversion ends, so a
              large model's ANN and SNN weights are not all alive together. ``ann`` cannot run afterwards
              (``AnnModel.handed_over``); the network is the same either way.
    options  the method's own options (see ``METHODS[method]``).
    """
    if maxpool is None:
        maxpool = "error"
    if maxpool not in MAXPOOL_CHOICES:
        raise ConversionError(f"maxpool={maxpool!r} must be one of {MAXPOOL_CHOICES}")
    if timesteps is not None and (int(timesteps) != timesteps or timesteps < 1):
        raise ConversionError(f"timesteps {timesteps!r} must be a positive integer")
    if timesteps is not None and method in METHODS and "timesteps" in {f.name for f in fields(METHODS[method])}:
        options = {**options, "timesteps": int(timesteps)}
    m = _make_method(method, options)
    if maxpool == "avg":
        ann = replace_maxpool(ann)
    x = check_calibration_data(ann, calib_x)
    try:
        m.prepare(ann, x)
    except ValueError as e:  # a method's checks of its options against this model and data
        if type(e) is not ValueError:  # SpikeportErrors already say what is wrong; others are bugs
            raise
        text = str(e)
        raise ConversionError(text if text.startswith(f"method {method!r}") else f"method {method!r}: {text}") from None
    x_min, x_max = float(x.min()), float(x.max())
    ann.hand_over = bool(release_ann)
    if m.own_structure(ann):  # methods with their own structure (Transformers: convert/ecmt.py, convert/aif_vit.py, convert/c2vit.py)
        net, populations = m.build(ann, x)
    else:
        net, populations = lower(ann, m, input_nonneg=x_min >= 0.0, input_coding=m.input_coding, pool=pool)
    for node in list(ann.graph) if release_ann else ():
        ann.handed_over(node.name)
    net.coding = m.coding
    net.meta.update({
        "method": method,
        "options": {f.name: getattr(m, f.name) for f in fields(m) if not f.name.startswith("_")},
        "calibration": m.calibration_summary(),
        "calibration_samples": int(len(x)),
        "input_range": [x_min, x_max],
        "input_shape": [int(s) for s in ann.input_shape],
        "ann_source": ann.source,
        "populations": populations,
        "replaced": list(ann.replaced),
        "timesteps": timesteps,
    })
    net.validate(f"converted {ann.source}")
    return net
