"""Integer tables of an MBE neuron (``ir.MBE`` -> ``ir.MBETable``) for a datapath.

The float tables V, R (input units) and D = w*d (output units) of ``MBE.tables`` are divided by the
population's ``state_scale`` (input units per state unit) and ``payload_scale`` (output units per
payload unit) and rounded half up (``floor(x + 1/2)``, the input rule of docs/fixed_point.md).
Thresholds that round below 1 become 1 (a zero threshold would fire on zero input) and are counted;
values outside the state range or the graded payload width raise ``QuantizationError`` naming the
population, table, value and limit. The quantised population decodes with ``decode_scale =
payload_scale`` and takes its input in units of ``state_scale``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.datapath import Datapath
from ..ir.neurons_mbe import MBE, MBETable
from .errors import QuantizationError


@dataclass
class MBEQuantReport:
    """What rounding did: largest |error| per table in float units, thresholds raised to 1."""

    threshold_err: float
    reset_err: float
    intensity_err: float
    thresholds_raised: int


def quantize_mbe(m: MBE, state_scale: float, payload_scale: float, dp: Datapath,
                 where: str = "MBE") -> tuple[MBETable, MBEQuantReport]:
    """Integer tables of ``m`` with one state unit = ``state_scale`` and one payload unit = ``payload_scale``."""
    if not (state_scale > 0 and payload_scale > 0 and np.isfinite(state_scale) and np.isfinite(payload_scale)):
        raise QuantizationError(f"{where}: state_scale {state_scale} and payload_scale {payload_scale} must be finite and > 0")
    V, R, D = m.tables()
    Vq = np.floor(V / state_scale + 0.5)
    raised = int(np.sum(Vq < 1))
    Vq = np.maximum(Vq, 1)
    Rq = np.floor(R / state_scale + 0.5)
    Dq = np.floor(D / payload_scale + 0.5)
    bias = np.floor(np.asarray(m.bias, dtype=np.float64) / state_scale + 0.5)
    smax = dp.state_max
    pmax = 2 ** (dp.payload_bits - 1) - 1
    for name, arr, top, rule in (("threshold", Vq, smax, f"{dp.state_bits}-bit state"),
                                 ("reset", Rq, smax, f"{dp.state_bits}-bit state"),
                                 ("bias", bias, smax, f"{dp.state_bits}-bit state"),
                                 ("intensity", Dq, pmax, f"{dp.payload_bits}-bit graded payload")):
        if np.abs(arr).max() > top:
            raise QuantizationError(f"{where}: MBE {name} {np.abs(arr).max():g} exceeds {top} ({rule} of datapath "
                                    f"{dp.profile!r}); raise the scale")
    table = MBETable(threshold=Vq, reset=Rq, intensity=Dq, bias=bias, function=m.function)
    rep = MBEQuantReport(threshold_err=float(np.abs(Vq * state_scale - V).max()),
                         reset_err=float(np.abs(Rq * state_scale - R).max()),
                         intensity_err=float(np.abs(Dq * payload_scale - D).max()),
                         thresholds_raised=raised)
    return table, rep


__all__ = ["MBEQuantReport", "quantize_mbe"]
