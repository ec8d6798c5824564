"""SpiNNaker backend: placement, keys, routing tables (PACMAN), 32-bit packets, EIEIO, packet replay.

``describe(net, profile, machine)`` maps a quantised network; ``export`` writes it to a folder;
``replay`` routes the bit-accurate simulator's events as packets through the tables and rebuilds
every core's input from what was delivered; ``verify`` compares that replay with the simulator step
by step. docs/spinnaker.md documents the key layout, payload encoding, tables and file formats.
"""
from .description import DEFAULT_MACHINE, Description, describe
from .errors import SpinnakerError
from .export import export, read_tables, summary
from .machine import MachineModel, make_machine
from .packets import read_trace
from .replay import ReplayResult, Traffic, VerifyReport, replay, verify

__all__ = ["DEFAULT_MACHINE", "Description", "MachineModel", "ReplayResult", "SpinnakerError", "Traffic",
           "VerifyReport", "describe", "export", "make_machine", "read_tables", "read_trace", "replay", "summary",
           "verify"]
