"""PNG plots for reports (matplotlib, headless Agg backend)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import write_bytes  # noqa: E402


def _save(fig, path: str | os.PathLike) -> Path:
    """Render the PNG in memory and write it atomically (:mod:`spikeport.atomic`): an interrupted run
    or a full disk leaves no half-written PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_bytes(path, buffer.getvalue())


def plot_accuracy_vs_timesteps(report: dict, path: str | os.PathLike, title: str = "") -> Path:
    """Accuracy of ANN (line), float SNN and fixed-point SNN against T, plus per-layer divergence."""
    ts = report["timesteps"]
    pts = report["points"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if report.get("acc_ann") is not None:
        ax.axhline(100 * report["acc_ann"], color="k", ls="--", label="ANN")
    ax.plot(ts, [100 * p["acc_float"] if p["acc_float"] is not None else float("nan") for p in pts], "o-", label="float SNN")
    ax.plot(ts, [100 * p["acc_fixed"] if p["acc_fixed"] is not None else float("nan") for p in pts], "s-",
            label=f"fixed-point SNN ({report.get('profile', '')})")
    vals = [100 * v for p in pts for v in (p["acc_float"], p["acc_fixed"]) if v is not None]
    if report.get("acc_ann") is not None:
        vals.append(100 * report["acc_ann"])
    if vals:  # at least a 5-point span, so rounding-level differences do not look like cliffs
        lo, hi = min(vals) - 1.0, min(100.5, max(vals) + 1.0)
        ax.set_ylim(min(lo, hi - 5.0), hi)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy vs timesteps")
    ax.grid(alpha=0.3)
    ax.legend()
    last = next((p for p in reversed(pts) if p.get("ablation")), pts[-1])
    names = [lf["layer"] + (" (out)" if lf.get("output") else "") for lf in last["layers"]]
    idx = np.arange(len(names))
    if last.get("ablation"):
        # own error (the layer's quantisation, float input) next to inherited error (float layer,
        # fixed input): unlike spike-count mismatch, this does not grow with depth by construction
        ax2.bar(idx - 0.2, [lf["error_own"] or 0 for lf in last["layers"]], 0.4, color="tab:red", label="own")
        ax2.bar(idx + 0.2, [lf["error_inherited"] or 0 for lf in last["layers"]], 0.4, color="tab:blue",
                label="inherited")
        ax2.legend()
    else:
        ax2.bar(idx, [lf["decode_error_fixed"] for lf in last["layers"]], color="tab:orange")
    ax2.set_xticks(idx, names, rotation=45, ha="right")
    ax2.set_ylabel("decoded-activation error vs float SNN")
    ax2.set_title(f"float vs fixed per layer, T={last['timesteps']}")
    ax2.grid(alpha=0.3, axis="y")
    return _save(fig, path)
