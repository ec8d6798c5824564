"""Make lava-nc 0.10.0 / lava-dl 0.6.0 importable on Python 3.11 without editing installed files.

Two problems, two narrow fixes, both applied by :func:`install` before the first Lava import:

* ``lava/magma/compiler/var_model.py`` uses a ``ByteEncoder()`` instance as a dataclass field
  default. Python 3.11 rejects defaults whose class is unhashable. A ``sys.meta_path`` finder
  compiles that one module from its own source with ``@dataclass(unsafe_hash=True)`` on the
  ``ByteEncoder`` class (an AST rewrite of one decorator; nothing on disk changes, no .pyc written).
* lava-dl's ``slayer`` imports its ``object_detection`` subpackage, the only user of ``torchvision``
  and ``cv2`` (neither installed). :func:`netx_imports` stands a placeholder in for that subpackage
  only while slayer/netx are imported, then removes it; any use of the placeholder raises a clear
  error, so nothing netx computes is faked.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Iterator

_PATCHED_MODULE = "lava.magma.compiler.var_model"
_HASHABLE_CLASSES = ("ByteEncoder",)


class _HashableDataclassLoader(importlib.machinery.SourceFileLoader):
    """Source loader that adds ``unsafe_hash=True`` to the named dataclasses before compiling."""

    def get_code(self, fullname: str):  # always compile from source: the cached .pyc is unpatched
        source = self.get_data(self.get_filename(fullname))
        tree = ast.parse(source, filename=self.path)
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in _HASHABLE_CLASSES:
                node.decorator_list = [_hashable(d) for d in node.decorator_list]
                found.append(node.name)
        if sorted(found) != sorted(_HASHABLE_CLASSES):
            raise ImportError(f"spikeport Lava compatibility: expected classes {_HASHABLE_CLASSES} in "
                              f"{self.path}, found {found}; is this lava-nc 0.10.0?")
        return compile(ast.fix_missing_locations(tree), self.path, "exec", dont_inherit=True)


def _hashable(decorator: ast.expr) -> ast.expr:
    """``@dataclass`` -> ``@dataclass(unsafe_hash=True)``; other decorators unchanged."""
    if isinstance(decorator, ast.Name) and decorator.id == "dataclass":
        return ast.Call(func=decorator, args=[], keywords=[ast.keyword(arg="unsafe_hash", value=ast.Constant(True))])
    return decorator


class _LavaCompatFinder(importlib.abc.MetaPathFinder):
    """Finds ``lava.magma.compiler.var_model`` with the normal path machinery, swaps its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _PATCHED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _HashableDataclassLoader(fullname, spec.origin)
        return spec


_FINDER = _LavaCompatFinder()


def install() -> None:
    """Register the finder (idempotent). Must run before ``lava.magma`` is first imported."""
    if sys.version_info < (3, 11):
        return
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    if _PATCHED_MODULE in sys.modules and getattr(sys.modules[_PATCHED_MODULE].ByteEncoder, "__hash__", None) is None:
        raise ImportError(f"{_PATCHED_MODULE} was imported before spikeport's compatibility hook; "
                          "import spikeport.backends.loihi2 before lava")


_OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
_OBJECT_DETECTION_DEPS = ("torchvision", "cv2")


class _Unavailable(types.ModuleType):
    """Placeholder for lava-dl's object-detection subpackage, whose dependencies are missing."""

    missing: tuple[str, ...] = ()

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        raise ImportError(f"{self.__name__}.{item} is not available: it needs {', '.join(self.missing)} "
                          "(not installed); spikeport imports lava-dl without object detection")


@contextlib.contextmanager
def netx_imports() -> Iterator[None]:
    """Import lava-dl with its object-detection subpackage replaced while the import runs.

    ``slayer/__init__`` imports ``object_detection`` unconditionally, and that subpackage alone needs
    torchvision and OpenCV. netx uses neither, so the subpackage (not its dependencies) is stood in
    for by a placeholder that raises on any use; it is removed from ``sys.modules`` afterwards.
    """
    install()
    missing = tuple(m for m in _OBJECT_DETECTION_DEPS if importlib.util.find_spec(m) is None)
    if not missing or _OBJECT_DETECTION in sys.modules:
        yield
        return
    placeholder = _Unavailable(_OBJECT_DETECTION)
    placeholder.missing = missing
    placeholder.__path__ = []
    sys.modules[_OBJECT_DETECTION] = placeholder
    try:
        yield
    finally:
        if sys.modules.get(_OBJECT_DETECTION) is placeholder:
            del sys.modules[_OBJECT_DETECTION]


def import_netx():
    """Return ``lava.lib.dl.netx`` imported with the compatibility fixes."""
    with netx_imports():
        import lava.lib.dl.netx as netx  # noqa: WPS433 (deliberately late import)
    return netx
