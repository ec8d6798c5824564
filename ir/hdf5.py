"""Save and load IR networks as HDF5 (schema in docs/ir.md).

Layout::

    /                attrs: format="spikeport-ir", schema_version, coding, outputs (json), meta (json)
    /datapath        attrs: the Datapath fields (only in quantised networks)
    /nodes/<name>    attrs: type, order, scalar fields; datasets: array fields
    /nodes/<name>/neuron, /payload   sub-groups for nested dataclasses (attr type)

The first 512 bytes are an HDF5 user block holding the SHA-256 seal of the rest (``ir/seal.py``):
loading verifies it before the HDF5 library parses anything. Loading never executes code from the
file: types are looked up in fixed registries, every field is required and checked against its
annotation, and the values are checked by ``ir/limits.py``. Saving writes to a temporary file,
seals it and renames it, so no half-written file is left.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import h5py
import numpy as np

from ..atomic import file_mode
from .datapath import Datapath
from .graph import IRError, Network
from .limits import check_limits
from .nodes import NEURON_TYPES, NODE_TYPES, Projection, SpikePayload
from .seal import USERBLOCK_SIZE, SealError, classify, private_copy, sandbox_check, seal_file
from .storage import DTYPE_SUFFIX, StorageError, check_layout, widen, write_array

FORMAT = "spikeport-ir"
SCHEMA_VERSION = 3
# v2 adds token populations and typed operators (ir/operators.py); v3 stores arrays narrow and
# compressed (ir/storage.py); v1 and v2 files load unchanged
READABLE_VERSIONS = (1, 2, 3)
_NESTED = {"SpikePayload": SpikePayload, "Datapath": Datapath}


def _write_obj(group: h5py.Group, obj) -> None:
    group.attrs["type"] = type(obj).__name__
    none_fields = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            none_fields.append(f.name)
        elif is_dataclass(value):
            _write_obj(group.create_group(f.name), value)
        elif isinstance(value, np.ndarray):
            write_array(group, f.name, value)
        elif isinstance(value, dict):
            group.attrs[f.name] = json.dumps(_jsonable(value))
            group.attrs[f"{f.name}__json"] = True
            arrays = {k: v for k, v in value.items() if isinstance(v, np.ndarray)}
            if arrays:
                sub = group.create_group(f.name)
                for k, v in arrays.items():
                    write_array(sub, k, v)
        elif isinstance(value, (tuple, list)):
            group.attrs[f.name] = np.asarray(value, dtype=np.int64) if all(isinstance(v, (int, np.integer)) for v in value) else json.dumps(list(value))
            group.attrs[f"{f.name}__seq"] = True
        elif isinstance(value, (bool, np.bool_, int, float, str, np.integer, np.floating)):
            group.attrs[f.name] = value
        else:
            raise IRError(f"cannot store field {f.name!r} of {type(obj).__name__} (type {type(value).__name__})")
    if none_fields:
        group.attrs["__none__"] = json.dumps(none_fields)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not isinstance(v, np.ndarray)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------- reading
# Every value read from the file is checked against the field's annotation, so a damaged or
# hand-made file gives an IRError naming the field, never a TypeError deep in a pass. New node kinds
# get the same checks as long as their fields use these annotations (others are read as stored and
# left to the node's own validate()).
_BOOKKEEPING = {"type", "order", "__none__"}


def _fail(where: str, name: str, msg: str) -> IRError:
    return IRError(f"{where}: field {name!r}: {msg}")


def _attr(group: h5py.Group, key: str, where: str):
    try:
        value = group.attrs[key]
    except Exception as e:  # noqa: BLE001 - h5py raises several types for unreadable attributes
        raise IRError(f"{where}: attribute {key!r} cannot be read ({type(e).__name__}: {e})") from None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise IRError(f"{where}: attribute {key!r} is not UTF-8 text") from None
    return value


def _member(group: h5py.Group, key: str, where: str):
    """A member reached through a hard link only (soft and external links could alias or reach other files)."""
    link = group.get(key, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise IRError(f"{where}: {key!r} is a {type(link).__name__}, not a stored group or dataset")
    try:
        return group[key]
    except Exception as e:  # noqa: BLE001
        raise IRError(f"{where}: {key!r} cannot be opened ({type(e).__name__}: {e})") from None


def _dataset(ds: h5py.Dataset, where: str, name: str, group: h5py.Group, key: str) -> np.ndarray:
    """Dataset ``key`` of ``group`` stored as ir/storage.py writes it, in its in-memory dtype."""
    try:
        check_layout(ds)
    except StorageError as e:
        raise _fail(where, name, str(e)) from None
    except Exception as e:  # noqa: BLE001 - h5py reports a damaged layout in several types
        raise _fail(where, name, f"dataset layout cannot be read ({type(e).__name__}: {e})") from None
    try:
        value = np.array(ds[()])
    except Exception as e:  # noqa: BLE001
        raise _fail(where, name, f"dataset cannot be read ({type(e).__name__}: {e})") from None
    marker = key + DTYPE_SUFFIX
    if marker in group.attrs:
        try:
            value = widen(value, _attr(group, marker, where))
        except StorageError as e:
            raise _fail(where, name, str(e)) from None
    return value


def _no_stray_markers(group: h5py.Group, arrays: set[str], where: str) -> None:
    """Every ``<name>__dtype`` marker of ``group`` must belong to one of its datasets ``arrays``."""
    for key in group.attrs:
        if key.endswith(DTYPE_SUFFIX) and key[:-len(DTYPE_SUFFIX)] not in arrays:
            raise IRError(f"{where}: dtype marker {key!r} without its dataset")


def _json(text, where: str, name: str):
    if not isinstance(text, str):
        raise _fail(where, name, f"expected JSON text, found {type(text).__name__}")

    def no_constant(c):
        raise ValueError(f"{c} is not allowed")
    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as e:
        raise _fail(where, name, f"invalid JSON ({type(e).__name__}: {str(e)[:200]})") from None


def _scalar(v, kind: str, where: str, name: str):
    """A scalar attribute as int, float or str; ``kind`` is the annotation."""
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if kind == "str":
        if not isinstance(v, str):
            raise _fail(where, name, f"expected text, found {type(v).__name__} {v!r}")
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _fail(where, name, f"expected a number ({kind}), found {type(v).__name__} {v!r}")
    if kind == "int":
        if isinstance(v, (float, np.floating)):
            raise _fail(where, name, f"expected an integer, found {v!r}")
        return int(v)
    if not np.isfinite(v):
        raise _fail(where, name, f"{v} is not a finite number")
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


def _sequence(v, kind: str, where: str, name: str) -> tuple:
    if isinstance(v, str):
        items = _json(v, where, name)
        if not isinstance(items, list):
            raise _fail(where, name, "expected a JSON list")
    elif isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iu":
        items = [int(x) for x in v]
    else:
        raise _fail(where, name, f"expected a sequence, found {type(v).__name__}")
    want = str if kind.startswith("tuple[str") else int
    if not all(isinstance(x, want) and not isinstance(x, bool) for x in items):
        raise _fail(where, name, f"expected a sequence of {want.__name__}, found {items!r}"[:300])
    if kind == "tuple[int, int]" and len(items) != 2:
        raise _fail(where, name, f"expected 2 integers, found {len(items)}")
    return tuple(items)


def _flag(group: h5py.Group, key: str, where: str) -> bool:
    """A bookkeeping marker (``<field>__json`` / ``<field>__seq``): absent, or a true boolean."""
    if key not in group.attrs:
        return False
    v = _attr(group, key, where)
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if not isinstance(v, (bool, np.bool_)) or not v:
        raise IRError(f"{where}: marker attribute {key!r} must be True, found {v!r}"[:300])
    return True


def _read_field(group: h5py.Group, f, where: str):
    name, kind = f.name, str(f.type)
    if kind == "dict":
        if name not in group.attrs or not _flag(group, f"{name}__json", where):
            raise _fail(where, name, "missing (a dict is stored as JSON text with a __json marker)")
        d = _json(_attr(group, name, where), where, name)
        if not isinstance(d, dict):
            raise _fail(where, name, "expected a JSON object")
        if name in group:
            arrays = _member(group, name, where)
            if not isinstance(arrays, h5py.Group):
                raise _fail(where, name, "the dict's arrays must be a group")
            for key in arrays.attrs:
                if not (key.endswith(DTYPE_SUFFIX) and key[:-len(DTYPE_SUFFIX)] in arrays):
                    raise _fail(where, name, f"unknown attribute {key!r} of the dict's arrays")
            for k in arrays:
                ds = _member(arrays, k, f"{where}/{name}")
                if not isinstance(ds, h5py.Dataset):
                    raise _fail(where, f"{name}/{k}", "expected a dataset")
                d[k] = _dataset(ds, where, f"{name}/{k}", arrays, k)
        return d
    if name in group:
        sub = _member(group, name, where)
        if isinstance(sub, h5py.Group):
            if kind in ("NeuronModel", "SpikePayload", "Datapath"):
                return _read_obj(sub, NEURON_TYPES if kind == "NeuronModel" else _NESTED, f"{where}/{name}")
            raise _fail(where, name, "stored as a group, expected a value")
        if not kind.startswith("ArrayLike"):
            raise _fail(where, name, f"stored as a dataset, expected {kind}")
        return _dataset(sub, where, name, group, name)
    if name not in group.attrs:
        raise _fail(where, name, "missing (a loaded network is complete: no field takes a default)")
    v = _attr(group, name, where)
    if kind.startswith("tuple["):
        if not _flag(group, f"{name}__seq", where):
            raise _fail(where, name, "sequence stored without its __seq marker")
        return _sequence(v, kind, where, name)
    if kind.startswith("ArrayLike"):
        return _scalar(v, "float", where, name)
    if kind in ("str", "int", "float"):
        return _scalar(v, kind, where, name)
    if kind in ("NeuronModel", "SpikePayload", "Datapath"):
        raise _fail(where, name, f"expected a group holding a {kind}")
    return v


def _read_obj(group: h5py.Group, registry: dict, where: str):
    tname = _attr(group, "type", where) if "type" in group.attrs else None
    if not isinstance(tname, str) or tname not in registry:
        raise IRError(f"{where}: unknown type {tname!r}; known: {sorted(registry)}")
    cls = registry[tname]
    nullable = {f.name for f in fields(cls) if "None" in str(f.type)}
    none_fields = _json(_attr(group, "__none__", where), where, "__none__") if "__none__" in group.attrs else []
    if not isinstance(none_fields, list) or not all(isinstance(n, str) for n in none_fields):
        raise _fail(where, "__none__", f"expected a JSON list of field names, found {none_fields!r}"[:300])
    for n in none_fields:
        if n not in nullable:
            raise _fail(where, n, f"{tname}.{n} cannot be None")
    kwargs = {}
    for f in fields(cls):
        kwargs[f.name] = None if f.name in none_fields else _read_field(group, f, where)
    known = {f.name for f in fields(cls)}
    allowed = (_BOOKKEEPING | known | {f"{n}__json" for n in known} | {f"{n}__seq" for n in known}
               | {n + DTYPE_SUFFIX for n in known})
    for key in list(group.attrs) + list(group):
        if key not in allowed:
            raise IRError(f"{where}: unknown field {key!r} for {tname} (known: {sorted(known)})")
    _no_stray_markers(group, {k for k in group if isinstance(group.get(k, getlink=True), h5py.HardLink)
                              and isinstance(group[k], h5py.Dataset)}, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AttributeError) as e:
        raise IRError(f"{where}: fields do not fit {tname}: {e}") from None

def save(net: Network, path: str | os.PathLike) -> Path:
    """Validate ``net`` and write it to ``path`` atomically (temp file, seal, rename)."""
    path = Path(path)
    net.validate(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w", userblock_size=USERBLOCK_SIZE) as f:
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["coding"] = net.coding
            f.attrs["outputs"] = json.dumps(list(net.outputs))
            f.attrs["meta"] = json.dumps(_jsonable(net.meta))
            if net.datapath is not None:
                _write_obj(f.create_group("datapath"), net.datapath)
            nodes = f.create_group("nodes")
            for order, node in enumerate(net.nodes()):
                g = nodes.create_group(node.name)
                _write_obj(g, node)
                g.attrs["order"] = order
        seal_file(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; outputs get the umask's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _root_text(f: h5py.File, key: str, where: str) -> str:
    if key not in f.attrs:
        raise IRError(f"{where}: missing root attribute {key!r}")
    v = _attr(f, key, where)
    if not isinstance(v, str):
        raise IRError(f"{where}: root attribute {key!r} must be text, found {type(v).__name__}")
    return v


def _parse(f: h5py.File, where: str) -> Network:
    fmt = _attr(f, "format", where) if "format" in f.attrs else None
    if not isinstance(fmt, str) or fmt != FORMAT:
        raise IRError(f"{where}: not a spikeport IR file (format attribute {fmt!r}, expected {FORMAT!r})")
    version = _attr(f, "schema_version", where) if "schema_version" in f.attrs else None
    if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)) or version not in READABLE_VERSIONS:
        raise IRError(f"{where}: schema_version {version} is not supported (this spikeport reads {READABLE_VERSIONS})")
    outputs = _json(_root_text(f, "outputs", where), where, "outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise IRError(f"{where}: root attribute 'outputs' must be a JSON list of population names")
    meta = _json(_root_text(f, "meta", where), where, "meta")
    if not isinstance(meta, dict):
        raise IRError(f"{where}: root attribute 'meta' must be a JSON object")
    net = Network(coding=_root_text(f, "coding", where), outputs=outputs, meta=meta)
    for key in list(f.attrs) + list(f):
        if key not in ("format", "schema_version", "coding", "outputs", "meta", "datapath", "nodes"):
            raise IRError(f"{where}: unknown root entry {key!r}")
    if "datapath" in f:
        net.datapath = _read_obj(_member(f, "datapath", where), _NESTED, f"{where}:/datapath")
        if not isinstance(net.datapath, Datapath):
            raise IRError(f"{where}:/datapath: type must be Datapath")
    if "nodes" not in f:
        raise IRError(f"{where}: missing group /nodes")
    nodes = _member(f, "nodes", where)
    loaded = []
    for name in nodes:
        at = f"{where}:/nodes/{name}"
        g = _member(nodes, name, f"{where}:/nodes")
        if not isinstance(g, h5py.Group):
            raise IRError(f"{at}: expected a group")
        order = _scalar(_attr(g, "order", at), "int", at, "order") if "order" in g.attrs else None
        if order is None:
            raise _fail(at, "order", "missing")
        node = _read_obj(g, NODE_TYPES, at)
        if node.name != name:
            raise IRError(f"{at}: name attribute {node.name!r} differs from the group name")
        loaded.append((order, name, node))
    loaded.sort(key=lambda t: (t[0], t[1]))
    # Endpoints first: a projection can only be added once its source and target exist.
    loaded.sort(key=lambda t: isinstance(t[2], Projection))
    for order, name, node in loaded:
        try:
            net.add(node)
        except IRError as e:
            raise IRError(f"{where}:/nodes/{name}: {e}") from None
        net.graph.nodes[name]["order"] = order
    return net


def _from_bytes(data, where: str, sandbox: bool) -> Network:
    """Parse ``data``: the file's bytes, or a private verified copy of them (a binary file object)."""
    if sandbox:
        try:
            sandbox_check(data)
        except SealError as e:
            raise IRError(f"{where}: {e}") from None
    try:
        f = h5py.File(io.BytesIO(data) if isinstance(data, bytes) else data, "r")
    except Exception as e:  # noqa: BLE001 - the HDF5 library reports damage as OSError and others
        raise IRError(f"{where}: file corrupted or truncated (not a readable HDF5 file: {e})") from None
    with f:
        net = _parse(f, where)
    try:
        net.validate(where)
        check_limits(net, where)
    except IRError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError, ZeroDivisionError) as e:
        # a value combination the node checks did not anticipate; still the file's fault
        raise IRError(f"{where}: invalid network (unexpected {type(e).__name__}: {e})") from None
    return net


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise IRError(f"{path}: no such file")
    if not path.is_file():
        raise IRError(f"{path}: not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise IRError(f"{path}: cannot be read ({e.strerror or e})") from None


def load(path: str | os.PathLike) -> Network:
    """Read, verify and validate a network; any problem raises IRError naming the file and node.

    The file's SHA-256 seal is checked before the HDF5 library sees a byte (``ir/seal.py``: on a
    private temporary copy made in chunks, which HDF5 then reads dataset by dataset); a file
    without a seal (older spikeport) is parsed first by a sandbox child process. Then every field is
    read strictly (no defaults), the graph validated and the values checked (``ir/limits.py``).
    """
    path = Path(path)
    if not path.exists():
        raise IRError(f"{path}: no such file")
    if not path.is_file():
        raise IRError(f"{path}: not a file")
    try:
        with open(path, "rb") as src:
            copy, kind = private_copy(src)   # verified while copied; never held in memory whole
    except SealError as e:
        raise IRError(f"{path}: {e}") from None
    except OSError as e:
        raise IRError(f"{path}: cannot be read ({e.strerror or e})") from None
    with copy:
        return _from_bytes(copy, str(path), sandbox=kind == "unsealed")


def reseal(path: str | os.PathLike) -> Path:
    """Accept a file changed outside spikeport (or written before the seal): parse it in a sandbox
    process, read and validate it like ``load``, and write it again with a fresh seal."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        classify(data)
    except SealError as e:
        if "not a spikeport IR file" in str(e) or "damaged checksum block" in str(e):
            raise IRError(f"{path}: {e}") from None
    return save(_from_bytes(data, str(path), sandbox=True), path)

__all__ = ["save", "load", "reseal", "FORMAT", "SCHEMA_VERSION"]
