"""Ungating: run gated neurons at every step, as Lava's LIF process and lava-dl netx do.

spikeport's IF and CubaLIF populations update only in their window ``[t_start, t_start + T)``.
netx has no such gating (nor does Lava's native LIF): every block updates at every step of the run.
``ungate`` replaces each gated neuron with its always-active twin (``IF`` -> ``LavaLIF``,
``CubaLIF`` -> ``LavaCubaLIF``) wherever that changes no window, so the IR then says what netx
computes at every step::

    before t_start:  nothing has reached the neuron (every incoming source's window starts exactly
                     ``delay`` steps earlier) and it has no bias and starts at rest (v = u = 0,
                     threshold > 0), so it stays at rest and silent;
    after the window: it may still fire from the current it holds, but those events arrive
                     downstream at >= t_start + T + delay = the target's window end (every outgoing
                     edge aligned), so no downstream window changes; an output population's window
                     must end with the run (t_start = latency).

So the ungated network's spikes equal the gated one's inside every window and at the outputs at
every step; only hidden layers gain events after their windows (which the hardware does emit).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..ir import IF, Network, Population, expand_channel
from ..ir.neurons_cuba import CubaLIF, LavaCubaLIF
from ..ir.neurons_extra import LavaLIF

TWINS = {IF: LavaLIF, CubaLIF: LavaCubaLIF}


@dataclass(frozen=True)
class UngateNote:
    """A population ``ungate`` left gated, and why."""

    population: str
    reason: str

    def __str__(self) -> str:
        return f"population {self.population!r} stays gated: {self.reason}"


def _start(net: Network, name: str) -> int:
    return int(getattr(net[name], "t_start", 0))


def _why_not(net: Network, pop: Population) -> str | None:
    """None when ``pop`` may run at every step without changing any window, else the reason."""
    m, shape = pop.neuron, tuple(pop.shape)
    if type(m) not in TWINS:
        return f"{type(m).__name__} has no always-active twin (IF, CubaLIF)"
    if type(m) is IF and (m.reset != "zero" or m.compare != ">" or m.neg_threshold is not None):
        return "only a zero-reset, '>' unsigned IF has Lava's LIF as its always-active twin"
    for name in ("bias", "v_init", "current_bias", "u_init"):
        if hasattr(m, name) and np.any(expand_channel(np.asarray(getattr(m, name), dtype=np.float64), shape)):
            return f"nonzero {name} (it would act before the window)"
    if np.any(expand_channel(np.asarray(m.threshold, dtype=np.float64), shape) <= 0):
        return "a threshold <= 0 would fire at rest"
    for p in net.incoming(pop.name):
        if _start(net, p.source) + p.delay != pop.t_start:
            return (f"input {p.source!r} via {p.name!r} arrives from step {_start(net, p.source) + p.delay}, "
                    f"before the window starts at {pop.t_start}")
    for p in net.outgoing(pop.name):
        if pop.t_start + p.delay != _start(net, p.target):
            return (f"events after its window would reach {p.target!r} (window from step {_start(net, p.target)}) "
                    f"via {p.name!r} inside that window")
    if pop.name in net.outputs and pop.t_start != net.latency():
        return f"output window ends at step {pop.t_start} + T, before the run's end (latency {net.latency()})"
    return None


def ungate(net: Network) -> tuple[Network, list[UngateNote]]:
    """A copy of ``net`` whose gated IF / CubaLIF populations run at every step where that changes no
    window (module docstring); returns it and a note for every gated population left as it was."""
    out, notes = net.copy(), []
    if out.operators():
        return out, [UngateNote(p.name, "the network has operator nodes") for p in out.populations()
                     if not getattr(type(p.neuron), "always_active", False)]
    for pop in out.populations():
        m = pop.neuron
        if getattr(type(m), "always_active", False):
            continue
        why = _why_not(out, pop)
        if why is not None:
            notes.append(UngateNote(pop.name, why))
            continue
        twin = TWINS[type(m)]
        pop.neuron = twin(**{f.name: getattr(m, f.name) for f in fields(m) if f.init})
    out.validate("ungated network")
    return out, notes


__all__ = ["UngateNote", "ungate"]
