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
    """Per-layer divergence between the float and the fixed-point SNN at one T, output layer included."""
    ablated = point.get("ablation") is not None
    t = Table(title=f"per-layer fidelity at T={point['timesteps']} (float SNN vs fixed-point SNN)")
    cols = ["layer", "err vs float"]
    if ablated:
        cols += ["own", "inherited", "share of loss"]
    cols += ["err vs ANN", "rate f/q", "sat", "wrap", "clip", "zero", "cause"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("layer", "cause") else "right", overflow="fold")
    for lf in point["layers"]:
        ann = "-" if lf["decode_error_ann"] is None else f"{lf['decode_error_ann']:.4f}"
        name = lf["layer"] + (" (output)" if lf.get("output") else "")
        if lf.get("neuron", "").endswith(")") and lf.get("count_mismatch") is None:   # an operator: where, which arithmetic
            name += f" · {lf['neuron']}"
        if lf.get("constant_output"):
            name += " [red]CONSTANT[/]"
        row = [name, f"{lf['decode_error_fixed']:.4f}"]
        if ablated:
            row += [f"{lf['error_own']:.4f}" if lf.get("error_own") is not None else "-",
                    f"{lf['error_inherited']:.4f}" if lf.get("error_inherited") is not None else "-",
                    f"{100 * lf['share']:+.1f} pt" if lf.get("share") is not None else "-"]
        rate = "-" if lf.get("count_mismatch") is None else f"{lf['rate_float']:.3f}/{lf['rate_fixed']:.3f}"
        row += [ann, rate, str(lf["saturation_events"]), str(lf["wrap_events"] + lf.get("conv_wrap_events", 0)),
                str(lf["clipped_weights"]), str(lf["zeroed_weights"]), lf["cause"]]
        t.add_row(*row)
    caption = ("err: mean |decoded activation difference| / max |reference|; own: the layer fixed, fed the float "
               "network's spikes; inherited: the layer float, fed the fixed network's spikes; share: accuracy points "
               "of the float->fixed loss attributed by ablation (shares add up to the loss); sat: neuron-steps clipped "
               "at the top of the membrane range; wrap: current + conv-sum wraps; clip/zero: weights clipped / rounded "
               "to zero") if ablated else (
               "err: mean |decoded activation difference| / max |reference|; sat: neuron-steps clipped at the "
               "top of the membrane range; wrap: current + conv-sum wraps; clip/zero: weights clipped / rounded to "
               "zero; cause: heuristic (run with ablation for causes)")
    ab = point.get("ablation")
    if ab:
        caption += (f"\nablation: float {100 * ab['acc_float']:.2f}% -> fixed {100 * ab['acc_fixed']:.2f}% "
                    f"(loss {100 * ab['loss']:.2f} pt); largest share: {ab['blame_layer'] or '-'}; setting whose "
                    f"network-wide relaxation recovers most: {ab['blame_setting'] or '-'}")
        for s, layers in ab["hurt_most"].items():
            if layers and ab["network_recovery"].get(s):
                caption += f"\n  {s}: recovers {100 * ab['network_recovery'][s]:+.1f} pt; hurts most {', '.join(layers[:3])}"
        caption += f"\n  {ab['runs']} runs in {ab['seconds']:.1f} s"
    t.caption = caption
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


def operator_placement_line(operators: dict) -> str:
    """One line saying where a Transformer network's operators ran and in which arithmetic."""
    from collections import Counter
    groups = Counter((o["runs_on"], o["arithmetic"]) for o in operators.values())
    parts = [f"{n} on {where} ({arith})" for (where, arith), n in sorted(groups.items())]
    sat = sum(int(o.get("saturation_events", 0)) for o in operators.values())
    return f"operators: {', '.join(parts)}; saturated outputs: {sat}"
