"""Write a trained ``nn.Module`` as an ONNX file or a ``torch.export`` ``.pt2`` program.

ONNX uses the TorchScript exporter (``dynamo=False``): the dynamo exporter needs the ``onnxscript``
package, which spikeport does not depend on. Opset 17 is the newest that onnx2torch 1.5.15 reads
for every supported op; BatchNorm is kept as its own node (not fused into the convolution) so the
file shows the network as trained. Both files get a dynamic batch axis.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import write_bytes

ONNX_OPSET = 17


def _example(model: nn.Module, example_x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(example_x, dtype=np.float32))
    if x.ndim < 2:
        raise ValueError(f"example input of shape {tuple(x.shape)} needs a batch axis: (N, ...)")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return x.to(device)


def export_onnx(model: nn.Module, path: str | Path, example_x, keep_batchnorm: bool = True,
                opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` (eval mode) to ONNX at ``path``; ``example_x`` is one input batch (N, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    extra = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False) if keep_batchnorm else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        buffer = io.BytesIO()  # serialised in memory, written atomically (a full disk is an OSError)
        torch.onnx.export(model, (_example(model, example_x),), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **extra)
    write_bytes(path, buffer.getvalue())
    return path


def export_pt2(model: nn.Module, path: str | Path, example_x, dynamic_batch: bool = True) -> Path:
    """``torch.export`` ``model`` (eval mode) and save it to ``path`` (.pt2)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _example(model, example_x)
    if dynamic_batch and x.shape[0] < 2:
        x = torch.cat([x, x])  # a batch of 1 would be specialised by torch.export
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    buffer = io.BytesIO()  # torch's zip writer aborts the process on a full disk; memory cannot fill up like that
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=shapes), buffer)
    write_bytes(path, buffer.getvalue())
    return path
