"""SpiNNaker backend: placement, keys, routing tables (PACMAN), 32-bit packets, EIEIO, packet replay."""
from .description import Description, describe
from .errors import SpinnakerError
from .machine import MachineModel, make_machine

__all__ = ["Description", "MachineModel", "SpinnakerError", "describe", "make_machine"]
