"""PMSM's power figure (paper 002; methods.md section 7) from measured spike counts.

``P = E_AC * N_spikes / (T * t_step)`` with E_AC = 0.9 pJ and t_step = 1 ms, per sample. Two counting
conventions, both reported: ``events`` counts a graded output n != 0 as ONE event (what Loihi 2 or a
SpiNNaker packet sends), ``spikes`` counts it as |n| spikes (the paper's own count). For ST-BIF the
two agree (|n| <= 1).
"""
from __future__ import annotations

E_AC_PJ = 0.9
T_STEP_S = 1e-3


def pmsm_power(events: int, spikes: int, samples: int, timesteps: int, e_ac_pj: float = E_AC_PJ,
               t_step_s: float = T_STEP_S) -> dict:
    """Power in watts per sample for both conventions, with the counts it came from."""
    if samples < 1 or timesteps < 1:
        raise ValueError(f"pmsm_power: samples {samples} and timesteps {timesteps} must be >= 1")
    out = {"samples": int(samples), "timesteps": int(timesteps), "e_ac_pj": e_ac_pj, "t_step_s": t_step_s}
    for name, total in (("events", events), ("spikes", spikes)):
        per = total / samples
        out[name] = {"per_sample": per, "power_w": e_ac_pj * 1e-12 * per / (timesteps * t_step_s)}
    return out


__all__ = ["E_AC_PJ", "T_STEP_S", "pmsm_power"]
