"""spikeport's own Lava Processes and their fixed-point ProcessModels.

Lava discovers a Process's models by importing every module in the Process's folder, so this
subpackage holds nothing else: ``process.py`` (interfaces) and ``models.py`` (fixed_pt models).
"""
from .process import ScaledConv, SpikeportNeuron

__all__ = ["ScaledConv", "SpikeportNeuron"]
