"""The fixed random probe input used to trace and shape-check models (same seed everywhere, so every
loader and rewrite sees the same example)."""
from __future__ import annotations

import torch

PROBE_SEED = 1234


def probe_input(input_shape: tuple[int, ...], batch: int) -> torch.Tensor:
    """``batch`` samples of shape ``input_shape`` drawn uniformly in [0, 1) from PROBE_SEED."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    return torch.rand((batch,) + tuple(input_shape), generator=gen)
