"""Check a ``torch.export`` ``.pt2`` archive before ``torch.export.load`` touches it.

``torch.export.load`` runs code from the file in several places (torch 2.13,
``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde/serialize.py``):

* weight and constant entries marked ``use_pickle`` are read with ``torch.load(weights_only=False)``;
  ``custom_obj_*`` / ``opaque_obj_*`` constants with pickle; legacy ``*.pt`` weight files and the
  old zip layout (``serialized_*.pt``) likewise;
* the sample inputs are unpickled with ``weights_only=True`` and, if that fails, again with
  ``weights_only=False``;
* symbolic shape expressions (``expr_str``) go through ``sympy.sympify``, which evaluates Python;
* ``guards_code`` strings are compiled into a Python guard function by ``ExportedProgram.module()``;
* ``data/aotinductor/`` holds native shared libraries that are loaded;
* a graph node's ``target`` ``torch.<anything>`` is resolved by attribute lookup (``torch.os.system``)
  and called when the module runs.

:func:`safe_pt2_buffer` reads the file once, allows only the entries a plain ``torch.export.save``
writes, refuses every construct above with a :class:`FrontendError` naming the file and the entry,
and returns a fresh in-memory archive rebuilt from exactly the checked bytes, so the reader that
``torch.export.load`` uses cannot see anything else.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch

from .ann_graph import FrontendError

# Entries torch.export.save writes (relative to the archive's root folder); {m} is the model name.
_MODEL = r"[A-Za-z0-9_]+"
_ALLOWED = [
    (re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"), "meta"),
    (re.compile(rf"models/({_MODEL})\.json"), "model"),
    (re.compile(rf"data/weights/({_MODEL})_weights_config\.json"), "weights_config"),
    (re.compile(r"data/weights/weight_[0-9]+"), "raw"),
    (re.compile(rf"data/constants/({_MODEL})_constants_config\.json"), "constants_config"),
    (re.compile(r"data/constants/tensor_[0-9]+"), "raw"),
    (re.compile(rf"data/sample_inputs/({_MODEL})\.pt"), "sample_inputs"),
    (re.compile(r"extra/[A-Za-z0-9_.\-]+"), "extra"),
]
_WRITER_OWNED = {"byteorder", ".data/version", ".data/serialization_id"}   # PyTorchFileWriter writes these itself
_REASONS = [
    ("data/aotinductor/", "holds AOTInductor native code, which loading would run"),
    ("custom_obj_", "is a pickled TorchScript object"),
    ("opaque_obj_", "is a pickled Python object"),
    ("serialized_", "belongs to the old pickled .pt2 layout"),
    (".pt", "is a pickled file"),
]

# sympy expressions as torch.export prints them (srepr-like): only these names, symbol names such
# as s0 / u12, quoted symbol names, numbers and operators. No dots, subscripts or underscores, so
# sympify's eval can reach nothing but these constructors.
_SYMPY_NAMES = frozenset("""
Symbol Integer Rational Float Add Mul Pow Mod Max Min Abs floor ceiling Eq Ne Lt Le Gt Ge And Or Not
StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality Piecewise true false True False
oo zoo nan positive negative nonnegative nonpositive integer real finite zero even odd
FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift
PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat
TruncToInt RoundToInt RoundDecimal ToFloat Identity
""".split())
_SYM_TOKEN = re.compile(r"\s+|[A-Za-z][A-Za-z0-9]*|'[A-Za-z][A-Za-z0-9]*'|[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
                        r"|\*\*|[=!<>]=|[-+*/%(),=<>]")
_SYMBOL_NAME = re.compile(r"[a-z]+[0-9]+")
_TARGET_OK = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)?|torch\.sym_[a-z_]+"
                        r"|math\.[a-z][a-z0-9_]*"
                        r"|_operator\.(getitem|add|sub|mul|truediv|floordiv|neg|pow|mod|eq|ne|lt|le|gt|ge|and_|or_|not_)")


def _refuse(path: Path, entry: str, why: str) -> FrontendError:
    return FrontendError(f"{path}: archive entry {entry!r} {why}; spikeport never runs code from a model file "
                         "(re-export the model with torch.export.save from plain tensors)")


def _check_expr(path: Path, entry: str, expr) -> None:
    if not isinstance(expr, str) or len(expr) > 10_000:
        raise _refuse(path, entry, "has a symbolic shape expression that is not short text")
    pos = 0
    while pos < len(expr):
        m = _SYM_TOKEN.match(expr, pos)
        if m is None:
            raise _refuse(path, entry, f"has a symbolic shape expression {expr[:80]!r} with the character "
                                       f"{expr[pos]!r} that sympy would evaluate as Python")
        tok = m.group(0)
        if tok[0].isalpha() and tok not in _SYMPY_NAMES and not _SYMBOL_NAME.fullmatch(tok):
            raise _refuse(path, entry, f"has a symbolic shape expression {expr[:80]!r} naming {tok!r}, which is not a "
                                       "sympy shape function or symbol")
        pos = m.end()


def _walk_model(path: Path, entry: str, obj) -> None:
    """Every shape expression and every graph node target in the serialized program."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            if "expr_str" in o:
                _check_expr(path, entry, o["expr_str"])
            if "target" in o and "inputs" in o and "outputs" in o:
                t = o["target"]
                if not isinstance(t, str) or not _TARGET_OK.fullmatch(t):
                    raise _refuse(path, entry, f"has a graph node calling {str(t)[:120]!r}, which is not a torch operator")
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


def _check_payload_config(path: Path, entry: str, text: bytes, kind: str, prefix: str, names: set[str], root: str) -> None:
    try:
        config = json.loads(text).get("config")
    except (ValueError, AttributeError, RecursionError) as e:
        raise FrontendError(f"{path}: archive entry {entry!r} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise FrontendError(f"{path}: archive entry {entry!r} has no 'config' table")
    folder = entry.rsplit("/", 1)[0]
    for fqn, meta in config.items():
        if not isinstance(meta, dict):
            raise FrontendError(f"{path}: archive entry {entry!r}: {kind} {fqn!r} is not a table")
        file = f"{folder}/{meta.get('path_name')}"
        if meta.get("use_pickle") is not False:
            raise _refuse(path, file, f"({kind} {fqn!r}) is marked use_pickle = {meta.get('use_pickle')!r}: loading would "
                                      "unpickle it")
        if not re.fullmatch(rf"{prefix}[0-9]+", str(meta.get("path_name"))) or f"{root}{file}" not in names:
            raise FrontendError(f"{path}: archive entry {entry!r}: {kind} {fqn!r} points to {file!r}, "
                                "which is not a raw tensor entry of the archive")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise FrontendError(f"{path}: archive entry {entry!r}: {kind} {fqn!r} has no tensor_meta")


def safe_pt2_buffer(path: Path) -> io.BytesIO:
    """The archive at ``path`` rebuilt in memory from checked entries only (see the module docstring)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FrontendError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise FrontendError(f"{path}: not a torch.export program (not a zip archive: {e})") from None
    names = [i.filename for i in infos]
    if not names:
        raise FrontendError(f"{path}: not a torch.export program (empty archive)")
    if len(set(names)) != len(names):
        raise FrontendError(f"{path}: not a torch.export program (the archive lists an entry twice)")
    root = names[0].split("/", 1)[0] + "/"
    kinds: dict[str, tuple[str, str]] = {}
    for name in names:
        rel = name[len(root):] if name.startswith(root) else None
        if rel is None or name.endswith("/"):
            raise FrontendError(f"{path}: not a torch.export program (entry {name!r} is outside the archive folder {root!r})")
        for pattern, kind in _ALLOWED:
            if pattern.fullmatch(rel):
                kinds[name] = (kind, rel)
                break
        else:
            why = next((text for key, text in _REASONS if key in rel), "is not written by torch.export.save")
            raise _refuse(path, rel, why)
    try:
        contents = {name: zf.read(name) for name in names}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise FrontendError(f"{path}: not a torch.export program (damaged archive: {e})") from None
    name_set = set(names)
    for name, (kind, rel) in kinds.items():
        if kind == "weights_config":
            _check_payload_config(path, rel, contents[name], "weight", "weight_", name_set, root)
        elif kind == "constants_config":
            _check_payload_config(path, rel, contents[name], "constant", "tensor_", name_set, root)
        elif kind == "model":
            try:
                program = json.loads(contents[name])
            except (ValueError, RecursionError) as e:
                raise FrontendError(f"{path}: archive entry {rel!r} is not valid JSON ({e})") from None
            if not isinstance(program, dict):
                raise FrontendError(f"{path}: archive entry {rel!r} is not a serialized program")
            if program.get("guards_code"):
                raise _refuse(path, rel, "carries guards_code (Python source that loading compiles and runs)")
            _walk_model(path, rel, program)
        elif kind == "sample_inputs":
            try:
                torch.load(io.BytesIO(contents[name]), weights_only=True, map_location="cpu")
            except Exception as e:  # noqa: BLE001 - the restricted unpickler refuses in several ways
                raise _refuse(path, rel, f"is not plain tensor data (a weights-only load refuses it: {str(e)[:200]}), "
                                         "and torch.export.load would unpickle it without restriction") from None
    from torch.export.pt2_archive._package import PT2ArchiveWriter

    out = io.BytesIO()
    with PT2ArchiveWriter(out) as writer:
        for name, (kind, rel) in kinds.items():
            if rel not in _WRITER_OWNED:
                writer.write_bytes(rel, contents[name])
    out.seek(0)
    return out


__all__ = ["safe_pt2_buffer"]
