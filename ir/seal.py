"""Integrity seal of IR files: a SHA-256 of the content in the HDF5 user block, checked before HDF5 parses.

The HDF5 C library can crash or spin on a damaged file before any Python check runs, so
``ir.load`` never hands unverified bytes to it. ``ir.save`` reserves a 512-byte HDF5 user block
(HDF5 skips it and finds its superblock at offset 512) and, once the file is complete, writes into
it one ASCII line::

    <MAGIC> v1 sha256 <64 hex digits> length <total file bytes>\\n      (zero padded to 512 bytes)

The digest covers every byte after the user block. Loading copies the file once, in chunks, into an
anonymous temporary file that only this process can reach (:func:`private_copy`), hashing the
chunks as they pass; magic, length and digest are checked on that copy and only then does h5py
open the same copy, so what HDF5 parses is exactly what was verified, and the file is never held
in memory whole (a large network is read dataset by dataset).

Files without the block (written before the seal existed, or by other tools) cannot be verified.
They are first parsed completely by a throw-away child process (:func:`sandbox_check`) with a
timeout; only if the child survives does this process parse the same bytes. docs/ir.md states the
policy.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

USERBLOCK_SIZE = 512
MAGIC = b"\x89SPIKEPORT-IR\r\n"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SEAL_VERSION = "v1"
_LINE = re.compile(rb"v1 sha256 ([0-9a-f]{64}) length ([0-9]{1,15})\n\x00*")
SANDBOX_TIMEOUT_S = 60.0
_EDIT_HINT = ("files edited with h5py are refused: change the Network in Python and ir.save it, or accept "
              "the edit with spikeport.ir.reseal(path)")


class SealError(ValueError):
    """The file's bytes do not verify; ``str(e)`` says why (without the file name)."""


def digest(content: bytes | memoryview) -> str:
    return hashlib.sha256(content).hexdigest()


def seal_file(path: str | os.PathLike) -> None:
    """Write the seal into the user block of a complete HDF5 file that reserved 512 bytes."""
    with open(path, "r+b") as fh:   # hashed in chunks: a large network is never held twice in memory
        head = fh.read(USERBLOCK_SIZE + len(HDF5_SIGNATURE))
        if len(head) < USERBLOCK_SIZE + len(HDF5_SIGNATURE) or head[USERBLOCK_SIZE:] != HDF5_SIGNATURE:
            raise SealError("no HDF5 superblock after a 512-byte user block")
        h = hashlib.sha256(head[USERBLOCK_SIZE:])
        length = len(head)
        while chunk := fh.read(1 << 24):
            h.update(chunk)
            length += len(chunk)
        line = MAGIC + f"{SEAL_VERSION} sha256 {h.hexdigest()} length {length}\n".encode()
        fh.seek(0)
        fh.write(line.ljust(USERBLOCK_SIZE, b"\x00"))
        fh.flush()
        os.fsync(fh.fileno())


def classify(data: bytes) -> str:
    """``"sealed"`` (verified), ``"unsealed"`` (plain HDF5 at offset 0) or raise SealError."""
    head = bytes(data[:USERBLOCK_SIZE + len(HDF5_SIGNATURE)])
    sha = hashlib.sha256(memoryview(data)[USERBLOCK_SIZE:]) if head[:len(MAGIC)] == MAGIC else None
    return _judge(head, len(data), sha)


def _judge(head: bytes, size: int, content_sha) -> str:
    """The verdict from the first bytes, the total size and the SHA-256 of everything after the
    user block (``content_sha``: a hashlib object, needed only when ``head`` starts with MAGIC)."""
    if head[:len(MAGIC)] == MAGIC:
        block = head[len(MAGIC):USERBLOCK_SIZE]
        m = _LINE.fullmatch(block)
        if m is None:
            raise SealError("file corrupted or truncated (damaged checksum block)")
        want_hex, length = m.group(1).decode(), int(m.group(2))
        if size < length:
            raise SealError(f"file corrupted or truncated ({size} bytes, the checksum block records {length})")
        if size > length:
            raise SealError(f"file corrupted or truncated, or modified after spikeport wrote it ({size} bytes, "
                            f"the checksum block records {length}; {_EDIT_HINT})")
        if head[USERBLOCK_SIZE:USERBLOCK_SIZE + 8] != HDF5_SIGNATURE:
            raise SealError("file corrupted or truncated (no HDF5 superblock after the checksum block)")
        if content_sha.hexdigest() != want_hex:
            raise SealError("file corrupted or truncated, or modified after spikeport wrote it (the SHA-256 of "
                            f"the content differs from the checksum block; {_EDIT_HINT})")
        return "sealed"
    if head[:8] == HDF5_SIGNATURE:
        return "unsealed"
    if size == 0:
        raise SealError("file corrupted or truncated (empty file)")
    raise SealError("not a spikeport IR file (neither a spikeport checksum block nor an HDF5 signature at the start)")


CHUNK = 1 << 24


def private_copy(src: BinaryIO) -> tuple[BinaryIO, str]:
    """Copy ``src`` in chunks into an anonymous temporary file (unlinked: no other process can
    change it), hashing the content as it passes; return (the copy, rewound; :func:`classify`'s
    verdict on it) or raise SealError. At most one chunk is in memory at a time."""
    dst = tempfile.TemporaryFile()
    try:
        head = b""
        while len(head) < USERBLOCK_SIZE + len(HDF5_SIGNATURE):
            part = src.read(USERBLOCK_SIZE + len(HDF5_SIGNATURE) - len(head))
            if not part:
                break
            head += part
        dst.write(head)
        sha = hashlib.sha256(head[USERBLOCK_SIZE:])
        size = len(head)
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        kind = _judge(head, size, sha)
        dst.flush()
        dst.seek(0)
        return dst, kind
    except BaseException:
        dst.close()
        raise


# A child that parses every object, attribute and dataset of the file given on stdin. It imports only
# h5py, so it starts fast; any crash, hang or error in the HDF5 library stays inside it.
_CHILD = r"""
import io, sys
import h5py
data = sys.stdin.buffer.read()
limit = int(sys.argv[1])
seen = [0]
def walk(g):
    for k in list(g.attrs):
        g.attrs[k]
    if isinstance(g, h5py.Dataset):
        stored = g.id.get_storage_size()
        plist = g.id.get_create_plist()
        if plist.get_nfilters() == 0:
            ok = stored == g.nbytes
        else:  # compressed (ir/storage.py): every chunk written, no more than gzip can expand
            n = 1
            for s, c in zip(g.shape, g.chunks or g.shape):
                n *= -(-s // c)
            ok = g.chunks is not None and g.id.get_num_chunks() == (n if g.size else 0) and g.nbytes <= 1100 * stored + 4096
        if not ok or g.nbytes > limit:
            raise ValueError(f"dataset {g.name} declares {g.nbytes} bytes but stores {stored}")
        g[()]
        return
    for k in list(g):
        link = g.get(k, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ValueError(f"{g.name}/{k} is a {type(link).__name__}, not a hard link")
        seen[0] += 1
        if seen[0] > 1_000_000:
            raise ValueError("more than a million objects")
        walk(g[k])
with h5py.File(io.BytesIO(data), "r") as f:
    walk(f)
sys.stdout.write("ok")
"""


def sandbox_check(data: bytes | BinaryIO, timeout_s: float = SANDBOX_TIMEOUT_S) -> None:
    """Parse ``data`` (bytes, or a file object whose whole content it is) completely in a child
    process; raise SealError if it crashes, hangs or fails."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        size, feed = len(data), {"input": bytes(data)}
    else:
        data.seek(0, os.SEEK_END)
        size = data.tell()
        data.seek(0)
        feed = {"stdin": data}
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(1100 * size + (1 << 20))], **feed,
                              capture_output=True, timeout=timeout_s, env={"PATH": os.environ.get("PATH", "")},
                              cwd=str(Path(__file__).resolve().parent))
    except subprocess.TimeoutExpired:
        raise SealError(f"file corrupted or truncated (the HDF5 reader did not finish within {timeout_s:.0f} s)") from None
    finally:
        if "stdin" in feed:
            data.seek(0)
    if proc.returncode == 0 and proc.stdout == b"ok":
        return
    if proc.returncode < 0:
        raise SealError(f"file corrupted or truncated (the HDF5 reader crashed with signal {-proc.returncode})")
    last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
    raise SealError(f"file corrupted or truncated (the HDF5 reader failed: {last[:300]})")


__all__ = ["MAGIC", "USERBLOCK_SIZE", "SealError", "classify", "private_copy", "sandbox_check", "seal_file"]
