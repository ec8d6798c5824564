"""Reports: fidelity (float vs fixed-point), JSON output, tables and plots."""
from .fidelity import FidelityReport, LayerFidelity, compare_runs, fidelity
from .output import write_json, write_npz
from .plots import plot_accuracy_vs_timesteps

__all__ = ["FidelityReport", "LayerFidelity", "compare_runs", "fidelity", "write_json", "write_npz",
           "plot_accuracy_vs_timesteps"]
