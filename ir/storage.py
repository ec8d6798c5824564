"""How IR arrays are stored in HDF5: in their narrowest lossless width, compressed (docs/ir.md).

Writing: a float64 array whose every value is a float32 is stored as float32 (converted networks
carry float32 weights, the width of the ANN they came from; a network that needs float64 keeps
it), an integer array in the narrowest integer type that holds its range (quantised weights fit
int8/int16), and every array of at least ``COMPRESS_MIN`` values is compressed with HDF5's
standard gzip (deflate, level ``GZIP_LEVEL``) behind the byte-shuffle filter. When the stored type
is narrower than the array's own, the group gets a ``<name>__dtype`` attribute naming the
in-memory type, so loading gives back the same values in the same dtype.

Reading accepts exactly that: numeric datasets of the types below, no attributes, contiguous and
uncompressed (every file before schema 3 and small arrays) or chunked with only shuffle and
deflate, every chunk written (an unwritten chunk would read as fill values) and at most
``MAX_EXPANSION`` times more bytes than stored (deflate cannot expand more, so a forged size is
refused before anything is decompressed).
"""
from __future__ import annotations

import math

import h5py
import numpy as np

COMPRESS_MIN = 256            # values; smaller arrays are stored contiguous and uncompressed
GZIP_LEVEL = 4
MAX_EXPANSION = 1100          # deflate's limit is about 1032 : 1
READ_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
               "float16", "float32", "float64")
_FILTERS = {h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle"}
DTYPE_SUFFIX = "__dtype"


class StorageError(ValueError):
    """A dataset not stored the way spikeport stores arrays; ``str(e)`` says how (without the place)."""


def narrowest(value: np.ndarray) -> np.ndarray:
    """The same values in the narrowest lossless dtype this module writes (float32 / int8..int64)."""
    if value.dtype == np.float64 and value.size:
        narrow = value.astype(np.float32)
        if np.array_equal(narrow.astype(np.float64), value):   # NaN never equals: such arrays stay float64
            return narrow
        return value
    if value.dtype.kind in "iu" and value.size:
        lo, hi = int(value.min()), int(value.max())
        for t in ((np.uint8, np.uint16, np.uint32, np.uint64) if value.dtype.kind == "u" else
                  (np.int8, np.int16, np.int32, np.int64)):
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max:
                return value.astype(t) if np.dtype(t).itemsize < value.dtype.itemsize else value
    return value


def write_array(group: h5py.Group, name: str, value: np.ndarray) -> None:
    """Store ``value`` as dataset ``name`` of ``group`` (narrowest width, compressed when large)."""
    value = value if value.flags.c_contiguous else value.copy(order="C")
    stored = narrowest(value)
    if value.size >= COMPRESS_MIN:
        group.create_dataset(name, data=stored, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
    else:
        group.create_dataset(name, data=stored)
    if stored.dtype != value.dtype:
        group.attrs[name + DTYPE_SUFFIX] = str(value.dtype)


def check_layout(ds: h5py.Dataset) -> None:
    """Raise StorageError unless ``ds`` is stored as ``write_array`` (or an older spikeport) stores it."""
    if len(ds.attrs):
        raise StorageError(f"dataset carries attributes {sorted(ds.attrs)[:5]} (spikeport writes none)")
    if ds.dtype.kind not in "biuf":
        raise StorageError(f"dataset dtype {ds.dtype} is not numeric")
    if str(ds.dtype.newbyteorder("=")) not in READ_DTYPES:
        raise StorageError(f"dataset dtype {ds.dtype} is not one spikeport stores ({', '.join(READ_DTYPES)})")
    if ds.external or ds.is_virtual:
        raise StorageError("dataset stored outside the file (external or virtual) is refused")
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    stored = ds.id.get_storage_size()
    if not filters:
        if stored != ds.nbytes:
            raise StorageError(f"dataset of {ds.nbytes} bytes is not stored plainly (spikeport writes contiguous "
                               f"uncompressed data or gzip-compressed chunks; stored {stored} bytes)")
        return
    unknown = [f for f in filters if f not in _FILTERS]
    if unknown or len(set(filters)) != len(filters):
        raise StorageError(f"dataset uses HDF5 filters {filters}; spikeport writes only shuffle + gzip "
                           f"(filters {h5py.h5z.FILTER_SHUFFLE} and {h5py.h5z.FILTER_DEFLATE})")
    if ds.chunks is None:
        raise StorageError("compressed dataset is not chunked")
    want = math.prod(math.ceil(s / c) for s, c in zip(ds.shape, ds.chunks)) if ds.size else 0
    have = ds.id.get_num_chunks()
    if have != want:
        raise StorageError(f"compressed dataset has {have} of its {want} chunks written (spikeport writes all)")
    if ds.nbytes > MAX_EXPANSION * stored + 4096:
        raise StorageError(f"compressed dataset declares {ds.nbytes} bytes from {stored} stored, more than "
                           f"{MAX_EXPANSION}x (the limit of gzip)")


def widen(value: np.ndarray, memory_dtype) -> np.ndarray:
    """Restore the in-memory dtype named by a ``<name>__dtype`` marker (only a widening of the same kind)."""
    if not isinstance(memory_dtype, str) or memory_dtype not in READ_DTYPES:
        raise StorageError(f"dtype marker {memory_dtype!r} is not one of {READ_DTYPES}")
    want = np.dtype(memory_dtype)
    if want.kind != value.dtype.kind or want.itemsize < value.dtype.itemsize:
        raise StorageError(f"dtype marker {memory_dtype} does not widen the stored {value.dtype}")
    return value.astype(want)


__all__ = ["COMPRESS_MIN", "GZIP_LEVEL", "MAX_EXPANSION", "READ_DTYPES", "DTYPE_SUFFIX", "StorageError",
           "narrowest", "write_array", "check_layout", "widen"]
