"""The SpiNNaker backend's one error type (user input that cannot be mapped, or a replay that fails)."""
from __future__ import annotations


class SpinnakerError(ValueError):
    """A network, machine or run that the SpiNNaker backend refuses; the message names the layer (or
    chip), the value and the limit. A ValueError so the CLI reports it without a traceback."""
