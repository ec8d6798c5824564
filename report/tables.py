"""Rich tables for the terminal; every table also exists as JSON rows."""
from __future__ import annotations

from rich.table import Table


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def accuracy_table(report: dict, title: str = "accuracy vs timesteps") -> Table:
    """ANN / float-SNN / fixed-point-SNN accuracy per T."""
    t = Table(title=title)
    for col in ("T", "ANN %", "float SNN %", "fixed SNN %", "float=fixed predictions %"):
        t.add_column(col, justify="right")
    for p in report["points"]:
        t.add_row(str(p["timesteps"]), _pct(report.get("acc_ann")), _pct(p["acc_float"]), _pct(p["acc_fixed"]),
                  _pct(p["agreement"]))
    return t


def layer_fidelity_table(point: dict) -> Table:
    """Per-layer divergence between the float and the fixed-point SNN at one T."""
    t = Table(title=f"per-layer fidelity at T={point['timesteps']} (float SNN vs fixed-point SNN)")
    cols = ("layer", "counts differ %", "err vs float", "err vs ANN", "rate f/q", "sat", "clip", "zero", "likely cause")
    for c in cols:
        t.add_column(c, justify="left" if c in ("layer", "likely cause") else "right", overflow="fold")
    for lf in point["layers"]:
        ann = "-" if lf["decode_error_ann"] is None else f"{lf['decode_error_ann']:.4f}"
        t.add_row(lf["layer"], f"{100 * lf['count_mismatch']:.1f}", f"{lf['decode_error_fixed']:.4f}", ann,
                  f"{lf['rate_float']:.3f}/{lf['rate_fixed']:.3f}", str(lf["saturation_events"]),
                  str(lf["clipped_weights"]), str(lf["zeroed_weights"]), lf["cause"])
    t.caption = ("err: mean |decoded activation difference| / max |reference|; sat: neuron-steps clipped at the "
                 "top of the membrane range; clip/zero: weights clipped / rounded to zero by the quantiser")
    return t


def simulate_table(result: dict) -> Table:
    """Per-layer spike counts and firing rates of one simulation."""
    acc = "-" if result["accuracy"] is None else f"{100 * result['accuracy']:.2f}%"
    t = Table(title=f"simulation: T={result['timesteps']}, {result['samples']} samples, accuracy {acc}")
    for c in ("layer", "neurons", "spikes/sample", "firing rate", "saturations"):
        t.add_column(c, justify="left" if c == "layer" else "right")
    for name, row in result["layers"].items():
        t.add_row(name, str(row.get("neurons", "")), f"{row.get('spikes_per_sample', 0):.1f}",
                  f"{row.get('rate', 0):.4f}", str(row.get("saturation_events", 0)))
    return t
