"""The one error hierarchy of spikeport and the command's exit codes.

Every error that is the user's input (a file, an option, data, a model that cannot be converted, a
network that does not fit a chip) is a :class:`SpikeportError`; its message names the file, layer or
parameter, the value and the limit. The CLI catches it in one place and exits with ``exit_code``.
Anything else reaching the CLI is a bug in spikeport and exits with :data:`EXIT_INTERNAL`.

This module imports nothing, so every layer (the IR included) may use it.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_MISMATCH = 1      # `spikeport verify`: the two simulations differ
EXIT_USER = 2          # bad input: file, data, option, model, network (a SpikeportError) or a file system error
EXIT_INTERNAL = 3      # a bug in spikeport: "internal error, please report"
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); no partial output files are left


class SpikeportError(ValueError):
    """Base of every user-facing spikeport error (a ValueError, so older ``except ValueError`` still works)."""

    exit_code: int = EXIT_USER


class OptionError(SpikeportError):
    """A command-line option or API argument is out of range; names the option, the value and the rule."""


class OutputPathError(SpikeportError):
    """An output path cannot be written (missing folder, not writable, a folder where a file is expected)."""


class UnsupportedError(SpikeportError):
    """A valid network or option that this version of spikeport cannot handle yet in the requested
    step (e.g. op counting for Transformer operators); names the node and the missing feature."""


class WorkTooLargeError(SpikeportError):
    """The estimated work of a run is far beyond what this machine can do; names the estimate and the limit."""


__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_MISMATCH", "EXIT_OK", "EXIT_USER", "OptionError",
           "OutputPathError", "SpikeportError", "UnsupportedError", "WorkTooLargeError"]
