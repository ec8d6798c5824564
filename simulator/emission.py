"""What a source (input or population) emits in one step, converted lazily per consumer dtype."""
from __future__ import annotations

import torch


class Emission:
    """One step's output of a source, flattened to (batch, neurons).

    ``base`` holds the payload values (spike value after ``neg_value``, or the analog / graded
    input). Projections ask for the dtype they compute in; conversions are cached so a source with
    several outgoing projections converts once. ``spikes`` keeps the raw event code of spiking
    populations for counting and recording (int8 or int, float32 0/+-1 from float-state kernels;
    None for inputs).
    """

    __slots__ = ("base", "spikes", "_cache", "_into")

    def __init__(self, base: torch.Tensor, spikes: torch.Tensor | None = None,
                 into: dict[torch.dtype, torch.Tensor] | None = None):
        self.base = base
        self.spikes = spikes
        self._cache: dict[torch.dtype, torch.Tensor] = {base.dtype: base}
        self._into = into           # dtype -> a kept buffer of base's shape to convert into (no fresh pages)

    def as_dtype(self, dtype: torch.dtype) -> torch.Tensor:
        t = self._cache.get(dtype)
        if t is None:
            dst = self._into.get(dtype) if self._into else None
            t = dst.copy_(self.base) if dst is not None else self.base.to(dtype)
            self._cache[dtype] = t
        return t
