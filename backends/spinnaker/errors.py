"""The SpiNNaker backend's one error type (user input that cannot be mapped, or a replay that fails)."""
from __future__ import annotations

from ...errors import SpikeportError


class SpinnakerError(SpikeportError):
    """A network, machine or run that the SpiNNaker backend refuses; the message names the layer (or
    chip), the value and the limit. Part of spikeport's one error hierarchy, so the CLI reports it (exit 2)."""
