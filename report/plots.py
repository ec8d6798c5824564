"""PNG plots for reports (matplotlib, headless Agg backend)."""
from __future__ import annotations

import io
import os
from pathlib import Path

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
    last = pts[-1]
    names = [lf["layer"] for lf in last["layers"]]
    ax2.bar(range(len(names)), [100 * lf["count_mismatch"] for lf in last["layers"]], color="tab:orange")
    ax2.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax2.set_ylabel("neurons with different spike count (%)")
    ax2.set_title(f"float vs fixed per layer, T={last['timesteps']}")
    ax2.grid(alpha=0.3, axis="y")
    return _save(fig, path)
