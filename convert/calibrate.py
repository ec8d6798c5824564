"""Activation statistics of the ANN on calibration data, per activation node.

Data-based normalisation (Diehl 2015, Rueckauer 2017) sets each layer's scale lambda from the
largest activations seen on calibration data; a high percentile of the non-zero values is more
robust to outliers than the max. Per-channel figures are kept for methods that need them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..frontend import AnnModel


@dataclass
class ActivationStats:
    """Statistics of one activation node's output over the calibration set.

    max / min              over all values
    percentile             the p-th percentile of the positive values (0.0 if none is positive)
    neg_percentile         the p-th percentile of |negative values| (0.0 if none is negative)
    channel_max / channel_percentile   the same per channel (axis 0 of one sample), shape (C,)
    positive_fraction      share of values > 0 (a dead layer has 0)
    """

    name: str
    p: float
    max: float
    min: float
    percentile: float
    neg_percentile: float
    channel_max: np.ndarray
    channel_percentile: np.ndarray
    positive_fraction: float

    def scale(self, percentile: float | None = None) -> float:
        """lambda: the max if ``percentile`` is None or >= 100, else the stored percentile."""
        if percentile is None or percentile >= 100.0:
            return self.max
        return self.percentile

    def summary(self) -> dict:
        return {"max": self.max, "min": self.min, f"p{self.p:g}": self.percentile,
                "positive_fraction": self.positive_fraction}


def _positive_percentile(values: np.ndarray, p: float) -> float:
    pos = values[values > 0]
    return float(np.percentile(pos, p)) if pos.size else 0.0


def activation_stats(name: str, acts: np.ndarray, p: float = 99.9) -> ActivationStats:
    """Compute :class:`ActivationStats` of one node's activations ``acts`` (N, *shape)."""
    if not 0.0 < p <= 100.0:
        raise ValueError(f"percentile {p} must lie in (0, 100]")
    a = np.asarray(acts, dtype=np.float64)
    flat = a.reshape(-1)
    per_channel = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) if a.ndim >= 2 else flat[None, :]
    neg = -flat[flat < 0]
    return ActivationStats(
        name=name, p=float(p), max=float(flat.max()), min=float(flat.min()),
        percentile=_positive_percentile(flat, p),
        neg_percentile=float(np.percentile(neg, p)) if neg.size else 0.0,
        channel_max=per_channel.max(axis=1),
        channel_percentile=np.array([_positive_percentile(c, p) for c in per_channel]),
        positive_fraction=float(np.mean(flat > 0)),
    )


def calibrate(ann: AnnModel, x: np.ndarray, nodes: list[str] | None = None, percentile: float = 99.9,
              batch_size: int = 256) -> dict[str, ActivationStats]:
    """Statistics of the named nodes (default: every ReLU/LeakyReLU) on calibration data ``x``."""
    names = [n.name for n in ann.graph.activations()] if nodes is None else list(nodes)
    acts = ann.record_activations(x, names, batch_size=batch_size)
    return {name: activation_stats(name, acts[name], percentile) for name in names}


def check_calibration_data(ann: AnnModel, x: np.ndarray) -> np.ndarray:
    """Return ``x`` as float32 after checking its shape and values against the model."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"calibration data has dtype {x.dtype}, expected floating point")
    if x.ndim != len(ann.input_shape) + 1 or tuple(x.shape[1:]) != tuple(ann.input_shape):
        raise ValueError(f"calibration data has shape {x.shape}, model {ann.source} expects (N, {', '.join(map(str, ann.input_shape))})")
    if len(x) == 0:
        raise ValueError("calibration data is empty (need at least one sample)")
    if not np.all(np.isfinite(x)):
        raise ValueError("calibration data contains NaN or infinity")
    return x.astype(np.float32)
