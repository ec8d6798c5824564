"""Read an ONNX file without holding its weights twice: the model with its large initialisers' data
left out, and those initialisers as numpy arrays that become the torch module's buffers.

``onnx.load`` reads the whole file into one ``bytes`` object and parses a second copy (the protobuf),
which ``onnx2torch`` then copies a third time into torch buffers: on a ViT-B (330 MB of weights)
two of these are always alive together. Here the file is walked field by field (the protobuf wire
format: a varint key, then a varint length for embedded messages and bytes), so only one
initialiser's bytes are in memory at a time: each large ``TensorProto`` of the graph is parsed
alone, turned into an array, and kept in the model as its name, type and dims only. Every other
field is passed through unchanged and parsed by protobuf itself, so what the model says is
protobuf's reading of the file, not this module's. ``handover`` then gives each array to
``onnx2torch`` instead of a copy of the protobuf's data (first reader takes the array, later
readers a copy, as ``onnx2torch`` itself gives every reader its own array).

Initialisers stored as external data stay in the model and are loaded as ``onnx.load`` does.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .ann_graph import FrontendError

LARGE_BYTES = 1 << 16   # an initialiser field this long or longer is read on its own (64 KiB)
_GRAPH, _INITIALIZER = 7, 5   # ModelProto.graph, GraphProto.initializer (onnx.proto field numbers)
_LEN = 2                      # wire type of embedded messages, bytes and strings


class _Reader:
    """Sequential reads of a binary file with the position known, failing clearly past the end."""

    def __init__(self, f, path: Path, end: int):
        self.f, self.path, self.end = f, path, end

    def pos(self) -> int:
        return self.f.tell()

    def read(self, n: int) -> bytes:
        if n < 0 or self.pos() + n > self.end:
            raise FrontendError(f"{self.path}: not an ONNX model (a field of {n} bytes at offset {self.pos()} runs past "
                                f"the end of its message at {self.end})")
        return self.f.read(n)

    def varint(self) -> tuple[int, bytes]:
        """The varint at the current position and its bytes as written."""
        raw = bytearray()
        value = shift = 0
        while True:
            b = self.read(1)[0]
            raw.append(b)
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, bytes(raw)
            shift += 7
            if shift > 63:
                raise FrontendError(f"{self.path}: not an ONNX model (a varint longer than 10 bytes at offset {self.pos()})")


def _varint_bytes(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _fields(r: _Reader, end: int):
    """``(field number, wire type, key bytes, length bytes or b'', payload start)`` for each field up to
    ``end``; the caller reads or skips the payload (``_skip``) before asking for the next field."""
    while r.pos() < end:
        key, kraw = r.varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FrontendError(f"{r.path}: not an ONNX model (field number 0 at offset {r.pos() - len(kraw)})")
        lraw = b""
        if wire == _LEN:
            _, lraw = r.varint()
        yield number, wire, kraw, lraw, r.pos()


def _payload(r: _Reader, wire: int, lraw: bytes) -> bytes:
    """The payload of the current field, as written (varint, fixed64, length-delimited or fixed32)."""
    if wire == 0:
        return r.varint()[1]
    if wire == 1:
        return r.read(8)
    if wire == _LEN:
        return r.read(_length(lraw))
    if wire == 5:
        return r.read(4)
    raise FrontendError(f"{r.path}: not an ONNX model (wire type {wire} at offset {r.pos()}; groups are not used by ONNX)")


def _length(lraw: bytes) -> int:
    n = 0
    for i, b in enumerate(lraw):
        n |= (b & 0x7F) << (7 * i)
    return n


def _lean_graph(r: _Reader, end: int, arrays: dict) -> bytes:
    """The GraphProto field bytes up to ``end`` with each large initialiser replaced by its
    data-less TensorProto; its data goes into ``arrays``."""
    import onnx
    from onnx import numpy_helper

    out = bytearray()
    for number, wire, kraw, lraw, _ in _fields(r, end):
        if number == _INITIALIZER and wire == _LEN and _length(lraw) >= LARGE_BYTES:
            t = onnx.TensorProto()
            try:
                t.ParseFromString(r.read(_length(lraw)))
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise FrontendError(f"{r.path}: not an ONNX model (an initializer does not parse: {e})") from None
            if onnx.external_data_helper.uses_external_data(t) or t.data_type == onnx.TensorProto.STRING:
                field = t.SerializeToString()   # loaded as onnx.load does, after the walk
            else:
                arrays[t.name] = _tensor_array(t, r.path)
                lean = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims), doc_string=t.doc_string)
                field = lean.SerializeToString()
            out += kraw + _varint_bytes(len(field)) + field
        else:
            out += kraw + lraw + _payload(r, wire, lraw)
    return bytes(out)


def _tensor_array(t, path: Path) -> np.ndarray:
    """The initialiser's array, with the checks ``onnx.checker`` makes of a tensor's data (the checker
    then sees the lean model, ``check_lean``): one value field, as many values as its dims say."""
    from onnx import numpy_helper
    fields = [f.name for f, v in t.ListFields() if f.name in _VALUE_FIELDS and len(v)]
    if len(fields) != 1:
        raise FrontendError(f"{path}: invalid ONNX model (TensorProto (tensor name: {t.name}) should contain one and "
                            f"only one value field; it has {fields or 'none'})")
    try:
        return numpy_helper.to_array(t).copy()
    except Exception as e:   # noqa: BLE001 - undefined or unknown type, a value count that does not match the dims
        raise FrontendError(f"{path}: invalid ONNX model (initializer {t.name!r} of dims {list(t.dims)}: {e})") from None


_VALUE_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def check_lean(model, arrays: dict) -> None:
    """``onnx.checker.check_model`` on the lean model: each initialiser ``load_lean`` took the data of
    (and checked, ``_tensor_array``) is declared as a graph input of its type and dims instead, so the
    checker sees the whole structure without a copy of the weights (checking the file by path, it
    reads the file into memory and parses a copy: two copies of the weights)."""
    import onnx
    from onnx import helper
    if not arrays:
        onnx.checker.check_model(model)
        return
    c = onnx.ModelProto()
    c.CopyFrom(model)
    keep = [t for t in c.graph.initializer if not (t.name in arrays and _is_lean(t))]
    inputs = {i.name for i in c.graph.input}
    for t in c.graph.initializer:
        if t.name in arrays and _is_lean(t) and t.name not in inputs:
            c.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del c.graph.initializer[:]
    c.graph.initializer.extend(keep)
    onnx.checker.check_model(c)


def load_lean(path: Path):
    """``(ModelProto without its large initialisers' data, {initialiser name: array})`` for ``path``."""
    import onnx

    arrays: dict[str, np.ndarray] = {}
    out = bytearray()
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = _Reader(f, path, size)
        for number, wire, kraw, lraw, start in _fields(r, size):
            if number == _GRAPH and wire == _LEN:
                end = start + _length(lraw)
                if end > size:
                    raise FrontendError(f"{path}: not an ONNX model (the graph runs past the end of the file)")
                r.end = end
                graph = _lean_graph(r, end, arrays)
                r.end = size
                out += kraw + _varint_bytes(len(graph)) + graph
            else:
                out += kraw + lraw + _payload(r, wire, lraw)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(out))
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise FrontendError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    if any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    return model, arrays


def initializer_array(tensor, arrays: dict) -> np.ndarray:
    """The value of an initialiser: its array when ``load_lean`` took the data out, else the proto's."""
    from onnx import numpy_helper
    if tensor.name in arrays and _is_lean(tensor):
        return arrays[tensor.name]
    return numpy_helper.to_array(tensor)


def _is_lean(tensor) -> bool:
    return not (tensor.raw_data or tensor.float_data or tensor.int32_data or tensor.int64_data or tensor.double_data
                or tensor.uint64_data or tensor.string_data or tensor.external_data)


@contextlib.contextmanager
def handover(arrays: dict):
    """While active, ``onnx2torch`` reads a lean initialiser from ``arrays``: the first reader gets the
    array itself (it becomes the torch buffer, nobody else holds it once ``arrays`` is dropped), later
    readers a copy, as each ``onnx2torch`` reader gets its own array."""
    from onnx2torch.onnx_tensor import OnnxTensor

    original = OnnxTensor.to_numpy
    given: set[str] = set()

    def to_numpy(self) -> np.ndarray:
        name = self._proto.name
        if name in arrays and _is_lean(self._proto):
            if name in given:
                return arrays[name].copy()
            given.add(name)
            return arrays[name]
        return original(self)

    OnnxTensor.to_numpy = to_numpy
    try:
        yield
    finally:
        OnnxTensor.to_numpy = original


__all__ = ["LARGE_BYTES", "check_lean", "handover", "initializer_array", "load_lean"]
