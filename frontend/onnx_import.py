"""Import onnx2torch without torchvision.

onnx2torch imports torchvision at module import time, only for its NMS and RoiAlign converters.
spikeport does not support those ops and torchvision is not a dependency, so while onnx2torch is
imported a placeholder ``torchvision`` module is present in ``sys.modules``; any use of it raises a
clear error. The placeholder is removed right after the import (installed files are not touched).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

NO_TORCHVISION = "object-detection ops (NMS, RoiAlign) need torchvision, which spikeport does not support"


class _Unavailable:
    """Stands for any torchvision attribute: calling or using it raises the clear error."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{NO_TORCHVISION} (called {self._name})")

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._name}.{attr}")


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self.__name__}.{attr}")


def import_onnx2torch():
    """Return the ``onnx2torch`` module, importing it with a temporary torchvision placeholder."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("onnx2torch")
    names = ("torchvision", "torchvision.ops")
    placeholders = {n: _PlaceholderModule(n) for n in names}
    placeholders["torchvision"].ops = placeholders["torchvision.ops"]
    for n, mod in placeholders.items():
        sys.modules[n] = mod
    try:
        return importlib.import_module("onnx2torch")
    finally:
        for n, mod in placeholders.items():
            if sys.modules.get(n) is mod:
                del sys.modules[n]


def inline_constant_identities(model, arrays: dict | None = None):
    """Fold constant plumbing into initializers: ``Constant`` nodes, and ``Identity`` / ``Cast`` nodes
    whose input is an initializer.

    The TorchScript ONNX exporter emits such nodes for shared constants (e.g. two convs with the
    same zero bias) and wraps Clip bounds in ``Cast``; onnx2torch expects conv/gemm parameters and
    Clip bounds to be initializers ("Dynamic value of min/max" otherwise). ``arrays``: the data of
    initialisers ``onnx_lean.load_lean`` read apart from the model.
    """
    from onnx import helper, numpy_helper

    from .onnx_lean import initializer_array

    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        arr = None
        if node.op_type == "Constant" and len(node.output) == 1:
            attrs = {a.name: a for a in node.attribute}
            if "value" in attrs:
                arr = numpy_helper.to_array(attrs["value"].t)
        elif node.op_type in ("Identity", "Cast") and len(node.input) == 1 and node.input[0] in inits:
            arr = initializer_array(inits[node.input[0]], arrays or {})
            if node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                arr = arr.astype(helper.tensor_dtype_to_np_dtype(to))
        if arr is None:
            keep.append(node)
            continue
        copy = numpy_helper.from_array(arr, name=node.output[0])
        model.graph.initializer.append(copy)
        inits[copy.name] = copy
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def check_convertible(model, path) -> None:
    """Refuse a graph holding op types onnx2torch has no converter for, naming every such node.

    onnx2torch stops at the first such node with a message that names only the op type (and some
    unknown ops make it fail in other ways), so the graph is inspected before it runs.
    """
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    from .ann_graph import unsupported

    known = {(d.domain or "", d.operation_type) for d in _CONVERTER_REGISTRY}
    bad = [(node.name or f"#{i}", node.op_type, node.domain or "")
           for i, node in enumerate(model.graph.node)
           if (node.domain or "", node.op_type) not in known and node.domain in ("", "ai.onnx")]
    if not bad:
        return
    name, op, _ = bad[0]
    more = f"; also {[f'{n} ({o})' for n, o, _ in bad[1:6]]}" if len(bad) > 1 else ""
    raise unsupported(name, op, f"ONNX op in {path}, which has no converter to torch{more}")
