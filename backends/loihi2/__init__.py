"""Loihi 2 backend: quantised spikeport IR -> Lava processes, bit-accurate CPU runs, verification.

Importing this package installs the Python 3.11 compatibility hook for lava-nc 0.10.0 (see
``compat``) before Lava is imported. See docs/loihi2.md.
"""
from . import compat

compat.install()

from .plan import LavaExportError, LavaPlan, plan_network  # noqa: E402
from .runner import LavaResult, run_lava  # noqa: E402
from .export import export, load_plan  # noqa: E402
from .verify import Divergence, VerifyReport, verify  # noqa: E402

__all__ = ["LavaExportError", "LavaPlan", "LavaResult", "LavaNet", "Divergence", "VerifyReport", "build_lava_network",
           "export", "layer_report", "load_plan", "plan_network", "run_lava", "verify"]


def build_lava_network(qnet_or_dir, timesteps: int | None = None, native: bool = True):
    """Wired Lava processes (a ``LavaNet``) from a quantised network (needs ``timesteps``) or an
    exported folder. Use it as a context manager so Lava's runtime is stopped."""
    from pathlib import Path
    from .build import build_from_plan
    if isinstance(qnet_or_dir, (str, Path)):
        return build_from_plan(load_plan(qnet_or_dir))
    if timesteps is None:
        raise ValueError("build_lava_network(qnet, timesteps): timesteps is needed to gate populations")
    return build_from_plan(plan_network(qnet_or_dir, timesteps, native=native))


def __getattr__(name):
    if name == "LavaNet":
        from .build import LavaNet
        return LavaNet
    raise AttributeError(name)


def layer_report(qnet, timesteps: int, native: bool = True) -> list[dict]:
    """Per layer: Lava process, Loihi 2 hardware support, payload, and why a custom one was needed."""
    if qnet.operators():  # Transformer operator networks: backends/loihi2/transformer.py
        from .transformer import layer_report as operator_report
        return operator_report(qnet, timesteps)
    return plan_network(qnet, timesteps, native=native).report()
