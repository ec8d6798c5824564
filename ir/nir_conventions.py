"""What each NIR exporter means by the numbers it writes (NIR 1.0.x leaves dt, reset and spike
multiplicity open; hardware.md section 8). One :class:`Convention` per peer, read from the peers'
NIR export code and their neuron update code:

=============  ======  ==================  =========  =======  ==================================
convention     dt      tau encoding        reset      compare  notes
=============  ======  ==================  =========  =======  ==================================
spec           --dt    a = dt / tau        zero       '>'      forward Euler of the NIR equations,
                                                               IF/I: v += dt * r * I
snntorch       1e-4    a = dt / tau        subtract,  '>'      beta = 1 - a; the threshold is
                                           next step           subtracted after the next decay
norse          1e-3    a = dt^2 / tau      zero       '>'      norse writes tau = dt / tau_inv;
                       (tau = dt/tau_inv)                      IF: v += r * I; CubaLIF: i += I
sinabs         1       alpha = e^(-1/tau)  subtract   '>='     IAF emits floor(v / theta) spikes
                                                               per step (multi-spike)
spikingjelly   1e-4    a = dt / tau        zero       '>='     heaviside(v - theta) with >= 0
=============  ======  ==================  =========  =======  ==================================
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Convention:
    """How one exporter's NIR numbers map to discrete-time dynamics.

    dt            step length the exporter assumed (None: must be given with --dt)
    tau           'euler' (a = dt / tau), 'norse' (a = dt^2 / tau), 'exp' (alpha = exp(-1 / tau))
    if_dt         IF / I integrate dt * r * I (True, spec Euler) or r * I (False)
    syn_gain      CubaLIF current integrates (dt / tau_syn) * w_in * I (True) or I (False, norse)
    reset         'zero' or 'subtract'; reset_timing 'fire' or 'next_step'
    compare       '>' or '>='
    multi_spike   IF emits floor(v / threshold) spikes per step (sinabs)
    """

    name: str
    dt: float | None
    tau: str = "euler"
    if_dt: bool = True
    syn_gain: bool = True
    reset: str = "zero"
    reset_timing: str = "fire"
    compare: str = ">"
    multi_spike: bool = False
    note: str = ""


CONVENTIONS: dict[str, Convention] = {
    "spec": Convention("spec", None, note="forward Euler of the NIR 1.0 equations, reset to v_reset, fire on v > threshold"),
    "snntorch": Convention("snntorch", 1e-4, reset="subtract", reset_timing="next_step",
                           note="snntorch.export_nir writes tau = dt / (1 - beta), r = tau / dt with dt = 1e-4; Leaky/Synaptic "
                                "default to subtract reset applied after the next step's decay; the NIR file does not say which"),
    "norse": Convention("norse", 1e-3, tau="norse", if_dt=False, syn_gain=False,
                        note="norse.torch.to_nir writes tau = dt / tau_inv (dt = 1e-3); LIFCell adds input to the current "
                             "before the voltage step; IAF adds r * I"),
    "sinabs": Convention("sinabs", 1.0, tau="exp", if_dt=False, reset="subtract", compare=">=", multi_spike=True,
                         note="sinabs IAF: v += I, emits floor(v / theta) spikes per step (MultiSpike), subtracts them"),
    "spikingjelly": Convention("spikingjelly", 1e-4, compare=">=",
                               note="spikingjelly to_nir writes tau = tau_steps * dt, IF r = 1 / dt (dt = 1e-4); fires on v >= theta"),
}

__all__ = ["CONVENTIONS", "Convention"]
