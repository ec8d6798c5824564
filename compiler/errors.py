"""Errors raised by compiler passes."""
from __future__ import annotations

from ..errors import SpikeportError


class QuantizationError(SpikeportError):
    """A float network cannot be represented on a profile's datapath; the message names the layer,
    the parameter, the value and the limit."""
