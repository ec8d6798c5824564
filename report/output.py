"""Writing report files: one JSON object per file, written atomically."""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np

from ..atomic import write_bytes, write_text


def _clean(value):
    """Make numpy scalars/arrays and non-finite floats JSON-safe (NaN/inf become null)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        return _clean(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` (a dict) as one JSON object atomically (:mod:`spikeport.atomic`)."""
    if not isinstance(obj, dict):
        raise TypeError(f"report JSON must be one object, got {type(obj).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    """np.savez written atomically (no pickled objects: arrays only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # np.savez's zip file would report a full disk from its finaliser as well
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return write_bytes(path, buffer.getvalue())
