"""Load ONNX files, ``torch.export`` ``.pt2`` files and ``nn.Module`` objects as an :class:`AnnModel`.

All three end as a ``torch.fx.GraphModule`` in eval mode, float32, normalised by
:func:`normalise.normalise`. Loading never runs code from the file: ONNX is protobuf, and a ``.pt2``
archive is checked by :mod:`pt2_guard` (no pickles, native code, guard source or non-operator
calls) before ``torch.export.load`` reads the checked copy.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from ..malloc_trim import large_blocks_returned, release_free_memory
from .ann_graph import FrontendError, UnsupportedOpError
from .ann_model import AnnModel
from .maxpool import replace_maxpool
from .normalise import normalise
from .probe import probe_input
from .onnx_import import check_convertible, import_onnx2torch, inline_constant_identities
from .onnx_lean import check_lean, handover, load_lean
from .pt2_guard import safe_pt2_buffer

ONNX2TORCH_MAX_OPSET = 17  # onnx2torch 1.5.15 lacks converters for several ops at opsets 18+
MAXPOOL_CHOICES = ("keep", "avg")


def _check_shape(shape, where: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise FrontendError(f"{where}: input_shape {shape!r} must be a tuple of positive ints (no batch axis)") from None
    if not out or any(s <= 0 for s in out):
        raise FrontendError(f"{where}: input_shape {out} must be non-empty and positive (no batch axis)")
    return out


# ---------------------------------------------------------------------- ONNX
def _onnx_input_shape(model, path: Path, input_shape) -> tuple[tuple[int, ...], int | None]:
    """Return (sample shape, fixed batch or None) from the ONNX graph input, or from ``input_shape``."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedOpError(f"{path}: the model has {len(inputs)} inputs ({[i.name for i in inputs]}); spikeport supports exactly one")
    dims = inputs[0].type.tensor_type.shape.dim
    sizes = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    batch = sizes[0] if sizes else None
    if input_shape is not None:
        shape = _check_shape(input_shape, str(path))
        if sizes and len(sizes) - 1 != len(shape):
            raise FrontendError(f"{path}: input_shape {shape} has {len(shape)} axes but the ONNX input "
                             f"{inputs[0].name!r} has {len(sizes) - 1} besides the batch axis")
        for i, (given, declared) in enumerate(zip(shape, sizes[1:])):
            if declared is not None and given != declared:
                raise FrontendError(f"{path}: input_shape {shape} differs from the ONNX input {inputs[0].name!r} "
                                 f"at axis {i + 1} ({given} vs {declared})")
        return shape, batch
    if not sizes or any(s is None for s in sizes[1:]):
        raise FrontendError(f"{path}: input {inputs[0].name!r} has dynamic or missing dimensions "
                         f"{[d.dim_param or d.dim_value for d in dims]}; pass input_shape=(C, H, W) (no batch axis)")
    return tuple(sizes[1:]), batch


def _onnx_to_fx(model, path: Path, arrays: dict | None = None) -> fx.GraphModule:
    """``model`` as an fx module; ``arrays`` holds the data ``onnx_lean.load_lean`` took out of it."""
    onnx2torch = import_onnx2torch()
    from onnx import version_converter

    arrays = {} if arrays is None else arrays
    model = inline_constant_identities(model, arrays)
    check_convertible(model, path)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    try:
        with handover(arrays):
            return _convert_inferred(onnx2torch, model)
    except NotImplementedError as first:
        if opset <= ONNX2TORCH_MAX_OPSET:
            raise UnsupportedOpError(f"{path}: {first}") from None
        try:
            older = version_converter.convert_version(model, ONNX2TORCH_MAX_OPSET)
            with handover(arrays):
                return onnx2torch.convert(older)
        except Exception as second:  # noqa: BLE001 - report both attempts
            raise UnsupportedOpError(f"{path}: onnx2torch cannot convert opset {opset} ({first}), and converting "
                                     f"to opset {ONNX2TORCH_MAX_OPSET} failed ({second})") from None


_STRIP_ELEMENTS = 1024  # initializers above this size are weights: shape inference needs only their type


def _infer_shapes_light(model) -> None:
    """ONNX shape inference with the weights left out, its value_info copied into ``model``.

    ``onnx.shape_inference.infer_shapes`` serialises the whole model and parses a second copy; on a
    ViT-B that is two extra copies of the weights. Large initializers only contribute their type
    (element type and dims), which a graph input of the same type states exactly, so inference runs
    on a copy whose large initializers are replaced by such inputs; small ones (shape tensors that
    inference reads) stay."""
    from onnx import helper, shape_inference
    light = type(model)()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.graph.name = model.graph.name
    light.graph.node.extend(model.graph.node)
    light.graph.input.extend(model.graph.input)
    light.graph.output.extend(model.graph.output)
    light.graph.value_info.extend(model.graph.value_info)
    light.graph.sparse_initializer.extend(model.graph.sparse_initializer)
    names = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) > _STRIP_ELEMENTS:
            if init.name not in names:
                light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            light.graph.initializer.append(init)
    light.functions.extend(model.functions)
    inferred = shape_inference.infer_shapes(light)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)


def _convert_inferred(onnx2torch, model):
    """``onnx2torch.convert`` with the light shape inference above instead of its own full-copy one."""
    from onnx2torch import converter
    _infer_shapes_light(model)
    original = converter.safe_shape_inference
    converter.safe_shape_inference = lambda m, **kw: m
    try:
        return onnx2torch.convert(model)
    finally:
        converter.safe_shape_inference = original


def load_onnx(path: Path, input_shape=None) -> tuple[fx.GraphModule, tuple[int, ...], int | None]:
    import onnx

    if not path.is_file():
        raise FrontendError(f"{path}: no such file")
    # The model is read without its large initialisers' data, which comes as arrays that become the
    # module's buffers, and the checker sees that lean model (onnx_lean.py): the weights are in memory
    # once. A file that is not ONNX at all says so before the checker's verdict.
    try:
        model, arrays = load_lean(path)
    except FrontendError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise FrontendError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    if len(model.graph.node) == 0:
        raise FrontendError(f"{path}: not an ONNX model (the graph has no nodes)")
    try:
        check_lean(model, arrays)
    except onnx.checker.ValidationError as e:
        raise FrontendError(f"{path}: invalid ONNX model ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:   # the checker's own message quotes a damaged (non-UTF-8) name
        raise FrontendError(f"{path}: invalid ONNX model (a name or string is not UTF-8: {e})") from None
    shape, batch = _onnx_input_shape(model, path, input_shape)
    return _onnx_to_fx(model, path, arrays), shape, batch


# ---------------------------------------------------------------------- torch.export
def load_pt2(path: Path, input_shape=None) -> tuple[fx.GraphModule, tuple[int, ...], int | None]:
    if not path.is_file():
        raise FrontendError(f"{path}: no such file")
    buffer = safe_pt2_buffer(path)          # refuses pickles, native code and Python source first
    try:
        ep = torch.export.load(buffer)
    except FrontendError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/format errors come in several types
        raise FrontendError(f"{path}: not a torch.export program ({type(e).__name__}: {e})") from None
    gm = ep.module()
    if not isinstance(gm, fx.GraphModule):
        raise FrontendError(f"{path}: torch.export module is {type(gm).__name__}, not a GraphModule")
    user_inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(user_inputs) != 1:
        raise UnsupportedOpError(f"{path}: the program has {len(user_inputs)} inputs; spikeport supports exactly one")
    val = user_inputs[0].meta.get("val")
    dims = list(val.shape) if val is not None else None
    static = [int(d) if isinstance(d, int) else None for d in dims] if dims is not None else None
    batch = static[0] if static else None
    if input_shape is not None:
        shape = _check_shape(input_shape, str(path))
        if static is not None and [s for s in static[1:]] != list(shape) and all(s is not None for s in static[1:]):
            raise FrontendError(f"{path}: input_shape {shape} differs from the exported input shape {tuple(static[1:])}")
    else:
        if static is None or any(s is None for s in static[1:]):
            raise FrontendError(f"{path}: exported input has dynamic or unknown dimensions {dims}; pass input_shape (no batch axis)")
        shape = tuple(static[1:])
    return gm, shape, batch


# ---------------------------------------------------------------------- nn.Module
_OPAQUE_LEAVES = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.MultiheadAttention, nn.TransformerDecoder,
                  nn.TransformerDecoderLayer, nn.Transformer)

def trace_module(module: nn.Module, input_shape) -> fx.GraphModule:
    """``symbolic_trace`` a copy of the module; fall back to ``torch.export`` when tracing fails."""
    module = copy.deepcopy(module).eval().float()
    if isinstance(module, fx.GraphModule):
        return module
    try:
        gm = fx.symbolic_trace(module)
        opaque = [n.target for n in gm.graph.nodes if n.op == "call_module"
                  and isinstance(gm.get_submodule(n.target), _OPAQUE_LEAVES)]
        if opaque:  # symbolic_trace keeps these torch.nn containers as leaves; export sees inside
            raise FrontendError(f"composite torch.nn modules {opaque} stay opaque to symbolic_trace")
        return gm
    except Exception as trace_error:  # noqa: BLE001 - any trace failure: try export instead
        example = probe_input(input_shape, 2).to(next(module.parameters(), torch.zeros(0)).device)
        batch = torch.export.Dim("batch", min=1)
        try:
            ep = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        except Exception as export_error:  # noqa: BLE001
            raise FrontendError(f"<module>: cannot capture the model: torch.fx.symbolic_trace failed ({trace_error}); "
                             f"torch.export failed ({export_error})") from None
        return ep.module()


# ---------------------------------------------------------------------- entry point
def _eval_float(gm: fx.GraphModule) -> fx.GraphModule:
    """Put ``gm`` in eval mode and float32. Modules from ``torch.export`` refuse ``eval()``: they are
    already fixed to the mode they were exported in (training-mode BatchNorm is refused later)."""
    try:
        gm.eval()
    except NotImplementedError:
        pass
    return gm.float()


def load_model(source, input_shape=None, maxpool: str = "keep") -> AnnModel:
    """Load ``source`` (``.onnx`` path, ``.pt2`` path or ``nn.Module``) as an :class:`AnnModel`.

    input_shape  one sample's shape without batch axis; required for modules and for files whose
                 input has dynamic dimensions.
    maxpool      ``"keep"``: MaxPool stays (conversion then refuses it); ``"avg"``: each MaxPool is
                 replaced by an AvgPool of the same window in both the module and the graph, and
                 noted in ``AnnModel.replaced``.
    """
    if maxpool not in MAXPOOL_CHOICES:
        raise FrontendError(f"maxpool={maxpool!r} must be one of {MAXPOOL_CHOICES}")
    if isinstance(source, nn.Module):
        if input_shape is None:
            raise FrontendError("<module>: input_shape (no batch axis) is required to load an nn.Module")
        shape = _check_shape(input_shape, "<module>")
        gm, batch, name = trace_module(source, shape), None, "<module>"
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            gm, shape, batch = load_onnx(path, input_shape)
        elif suffix == ".pt2":
            gm, shape, batch = load_pt2(path, input_shape)
        else:
            raise FrontendError(f"{path}: unknown model file type {suffix!r}; expected .onnx or .pt2 "
                             "(or pass an nn.Module)")
        name = str(path)
    gm = _eval_float(gm)
    probe = probe_input(shape, batch or 2).to(next(iter(gm.parameters()), torch.zeros(0)).device)
    try:
        with large_blocks_returned():   # the probe's freed tensors go back to the system (malloc_trim.py)
            graph = normalise(gm, probe)
    except UnsupportedOpError as e:
        raise UnsupportedOpError(f"{name}: {e}") from None
    release_free_memory()   # the ONNX protobuf and the probe's values are gone: return their pages
    ann = AnnModel(module=gm, graph=graph, input_shape=shape, source=name, fixed_batch=batch)
    if maxpool == "avg":
        ann = replace_maxpool(ann)
    return ann


def sample_input(ann: AnnModel, n: int = 2) -> np.ndarray:
    """A reproducible random input batch of the model's shape (tests, smoke runs)."""
    return probe_input(ann.input_shape, n).numpy()
