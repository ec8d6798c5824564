"""Write files and folders atomically: temp file (or folder) next to the target, then rename.

The one place spikeport writes output. A crash, a full disk, an exception or Ctrl-C while writing
removes the temporary and leaves any existing target untouched, so no half-written file is ever
visible under the target name. Outputs get the usual permissions (0666 / 0777 minus the umask;
``tempfile`` alone would leave them 0600 / 0700).

This module imports nothing from spikeport, so every layer (the IR included) may use it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a newly created regular file under the current umask (usually 0644)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a newly created folder under the current umask (usually 0755)."""
    return 0o777 & ~_umask()


def _remove(path: str | Path) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        try:
            p.unlink()
        except OSError:
            pass


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; when the block ends normally it is renamed to ``path``.

    The writer inside the block writes (or re-creates) the temporary file. ``suffix`` defaults to
    the target's suffix, for writers that pick the format from the name (matplotlib, np.savez).
    The parent folder must exist: output paths are checked before the work starts, and creating
    folders is the caller's decision.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.filename is None or str(e.filename) == tmp:  # report the file the user named, not the temporary
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike, replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``.

    An existing folder of that name is swapped out and removed only after the new one is in place,
    and only when it is empty or ``replaceable(folder)`` says it holds nothing but an earlier
    output of the same kind (otherwise FileExistsError, before anything is written): a user's folder
    given by mistake is never deleted.
    """
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not (replaceable and replaceable(path)):
        raise FileExistsError(17, "folder exists and holds other files; give a new or empty folder", str(path))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        old = None
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_dir", "atomic_path", "dir_mode", "file_mode", "write_bytes", "write_text"]
