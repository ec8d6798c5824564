"""Compiler passes IR -> IR: quantisation to a hardware profile's datapath (with a per-layer
table) and delay scheduling. Passes never modify their input network."""
from .compile_warnings import CompileWarning, compile_warnings, render_warnings
from .errors import QuantizationError
from .partition import Placement, ResourceError, partition, reach_matrix
from .quant_table import InputQuant, LayerQuant, ProjectionQuant, QuantTable, render_operator_table, render_quant_table
from .quantize import QuantOptions, quantize
from .schedule import path_latencies, schedule

__all__ = ["CompileWarning", "compile_warnings", "render_warnings", "InputQuant", "LayerQuant", "ProjectionQuant", "QuantOptions", "QuantTable", "QuantizationError",
           "path_latencies", "quantize", "render_operator_table", "render_quant_table", "schedule", "Placement", "ResourceError", "partition", "reach_matrix"]
