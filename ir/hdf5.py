"""Save and load IR networks as HDF5 (schema in docs/ir.md).

Layout::

    /                attrs: format="spikeport-ir", schema_version, coding, outputs (json), meta (json)
    /datapath        attrs: the Datapath fields (only in quantised networks)
    /nodes/<name>    attrs: type, order, scalar fields; datasets: array fields
    /nodes/<name>/neuron, /payload   sub-groups for nested dataclasses (attr type)

Loading never executes code from the file: types are looked up in fixed registries and every
value is checked. Saving writes to a temporary file and renames it, so no half-written file is left.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import h5py
import numpy as np

from .datapath import Datapath
from .graph import IRError, Network
from .nodes import NEURON_TYPES, NODE_TYPES, Projection, SpikePayload

FORMAT = "spikeport-ir"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v2 adds token populations and typed operators (ir/operators.py); v1 files load unchanged
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
            group.create_dataset(f.name, data=value)
        elif isinstance(value, dict):
            group.attrs[f.name] = json.dumps(_jsonable(value))
            group.attrs[f"{f.name}__json"] = True
            arrays = {k: v for k, v in value.items() if isinstance(v, np.ndarray)}
            if arrays:
                sub = group.create_group(f.name)
                for k, v in arrays.items():
                    sub.create_dataset(k, data=v)
        elif isinstance(value, (tuple, list)):
            group.attrs[f.name] = np.asarray(value, dtype=np.int64) if all(isinstance(v, (int, np.integer)) for v in value) else json.dumps(list(value))
            group.attrs[f"{f.name}__seq"] = True
        elif isinstance(value, (bool, int, float, str, np.integer, np.floating)):
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


def _read_obj(group: h5py.Group, registry: dict, where: str):
    tname = group.attrs.get("type")
    if isinstance(tname, bytes):
        tname = tname.decode()
    if tname not in registry:
        raise IRError(f"{where}: unknown type {tname!r}; known: {sorted(registry)}")
    cls = registry[tname]
    none_fields = set(json.loads(group.attrs.get("__none__", "[]")))
    kwargs = {}
    for f in fields(cls):
        name = f.name
        if name in none_fields:
            kwargs[name] = None
        elif group.attrs.get(f"{name}__json", False):
            d = json.loads(group.attrs[name])
            if name in group:
                for k, ds in group[name].items():
                    d[k] = np.array(ds[()])
            kwargs[name] = d
        elif name in group and isinstance(group[name], h5py.Group):
            sub = group[name]
            reg = NEURON_TYPES if name == "neuron" else _NESTED
            kwargs[name] = _read_obj(sub, reg, f"{where}/{name}")
        elif name in group and isinstance(group[name], h5py.Dataset):
            kwargs[name] = np.array(group[name][()])
        elif name in group.attrs:
            v = group.attrs[name]
            if group.attrs.get(f"{name}__seq", False):
                kwargs[name] = tuple(json.loads(v)) if isinstance(v, str) else tuple(int(x) for x in np.asarray(v).ravel())
            elif isinstance(v, bytes):
                kwargs[name] = v.decode()
            elif isinstance(v, np.bool_):
                kwargs[name] = bool(v)
            elif isinstance(v, np.integer):
                kwargs[name] = int(v)
            elif isinstance(v, np.floating):
                kwargs[name] = float(v)
            else:
                kwargs[name] = v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise IRError(f"{where}: fields do not fit {tname}: {e}") from None


def save(net: Network, path: str | os.PathLike) -> Path:
    """Validate ``net`` and write it to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    net.validate(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike) -> Network:
    """Read and validate a network; any problem raises IRError naming the file and node."""
    path = Path(path)
    if not path.exists():
        raise IRError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise IRError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            raise IRError(f"{path}: not a spikeport IR file (format attribute {fmt!r}, expected {FORMAT!r})")
        version = int(f.attrs.get("schema_version", -1))
        if version not in READABLE_VERSIONS:
            raise IRError(f"{path}: schema_version {version} is not supported (this spikeport reads {READABLE_VERSIONS})")
        if "nodes" not in f:
            raise IRError(f"{path}: missing group /nodes")
        try:
            net = Network(coding=str(f.attrs["coding"]), outputs=list(json.loads(f.attrs["outputs"])),
                          meta=json.loads(f.attrs.get("meta", "{}")))
        except (KeyError, json.JSONDecodeError) as e:
            raise IRError(f"{path}: bad root attributes ({e})") from None
        if "datapath" in f:
            net.datapath = _read_obj(f["datapath"], _NESTED, f"{path}:/datapath")
        groups = sorted(f["nodes"].items(), key=lambda kv: int(kv[1].attrs.get("order", 0)))
        loaded = [(name, g, _read_obj(g, NODE_TYPES, f"{path}:/nodes/{name}")) for name, g in groups]
        # Endpoints first: a projection can only be added once its source and target exist.
        loaded.sort(key=lambda t: isinstance(t[2], Projection))
        for name, g, node in loaded:
            if node.name != name:
                raise IRError(f"{path}:/nodes/{name}: name attribute {node.name!r} differs from the group name")
            try:
                net.add(node)
            except IRError as e:
                raise IRError(f"{path}:/nodes/{name}: {e}") from None
            net.graph.nodes[name]["order"] = int(g.attrs.get("order", 0))
    net.validate(str(path))
    return net


__all__ = ["save", "load", "FORMAT", "SCHEMA_VERSION"]
