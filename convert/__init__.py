"""spikeport.convert: ANN -> float IR network.

``convert(ann, calib_x, method="if", **options)``; ``METHODS`` lists the registered methods (one
module each, registering itself with ``@register_method``). ``lower`` builds the structure shared by
all methods; ``calibrate`` records activation statistics.
"""
from .calibrate import ActivationStats, activation_stats, calibrate
from .lower import ActivationContext, ConversionError, NeuronSpec, lower
from .registry import METHODS, ConversionMethod, convert, register_method
from . import aif, ecmt, if_method, mbe_vit, negspike, pmsm, qcfs  # noqa: F401  (each registers its method)
from . import c2vit  # noqa: F401  (stbif; pmsm on ViTs)

__all__ = ["METHODS", "ActivationContext", "ActivationStats", "ConversionError", "ConversionMethod", "NeuronSpec",
           "activation_stats", "calibrate", "convert", "lower", "register_method"]
