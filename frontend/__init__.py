"""spikeport.frontend: ONNX / torch.export ``.pt2`` / ``nn.Module`` -> one :class:`AnnModel`.

``load_model(source, input_shape=None, maxpool="keep")`` returns the runnable fx GraphModule and the
normalised ANN layer graph (``frontend.ann_graph``) describing the same network.
"""
from . import ann_graph
from .ann_graph import SUPPORTED_OPS, AnnGraph, AnnNode, FrontendError, UnsupportedOpError
from .ann_model import AnnModel
from .export import export_onnx, export_pt2
from .loaders import load_model, sample_input
from .macs import MacCount, count_macs
from .maxpool import replace_maxpool

__all__ = ["AnnGraph", "AnnModel", "AnnNode", "FrontendError", "SUPPORTED_OPS", "UnsupportedOpError", "ann_graph",
           "export_onnx", "export_pt2", "MacCount", "count_macs", "load_model", "replace_maxpool", "sample_input"]
