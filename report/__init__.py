"""Reports: fidelity (float vs fixed-point), JSON output, tables and plots."""
from .fidelity import FidelityReport, LayerFidelity, compare_runs, fidelity
from .output import write_json, write_npz
from .energy import EnergyReport, energy_report, plot_energy
from .plots import plot_accuracy_vs_timesteps
from .resources import ResourceReport, resources_report

__all__ = ["FidelityReport", "LayerFidelity", "compare_runs", "fidelity", "write_json", "write_npz",
           "plot_accuracy_vs_timesteps", "EnergyReport", "energy_report", "plot_energy", "ResourceReport",
           "resources_report"]
