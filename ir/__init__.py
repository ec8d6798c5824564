"""Hardware-neutral IR of spiking networks: populations, projections, inputs, operators.

The IR imports nothing from the rest of spikeport. See docs/ir.md for the schema.
"""
from .datapath import Datapath
from .graph import IRError, Network
from .hdf5 import SCHEMA_VERSION, load, reseal, save
from .limits import MAX_STEPS, check_limits
from . import seal
from . import neurons_extra  # noqa: F401  (registers MultiSpikeIF, GradedSignedIF)
from . import neurons_cuba  # noqa: F401  (registers CubaLIF, CubaLI)
from . import neurons_mbe  # noqa: F401  (registers MBE, MBETable)
from . import operators  # noqa: F401  (registers MultiThreshold, Relay, TokenDense and the typed operators)
from . import operators_mbe  # noqa: F401  (registers the MBE product and exponent/mantissa operators)
from . import operators_c2  # noqa: F401  (registers STBIF and the C2 operators)
from .nodes import (IF, NEURON_TYPES, NODE_TYPES, PROJECTION_TYPES, Conv2d, Dense, Identity, Input,
                    NeuronModel, Node, Operator, Population, Projection, Readout, SpikePayload,
                    expand_channel, register_neuron, register_projection)

__all__ = [
    "Datapath", "IRError", "Network", "SCHEMA_VERSION", "load", "save", "reseal", "check_limits", "MAX_STEPS", "IF", "Readout", "NeuronModel",
    "NEURON_TYPES", "NODE_TYPES", "PROJECTION_TYPES", "Conv2d", "Dense", "Identity", "Input", "Node",
    "Operator", "Population", "Projection", "SpikePayload", "expand_channel", "register_neuron",
    "register_projection",
]
