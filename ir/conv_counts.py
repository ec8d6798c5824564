"""Closed-form synapse counts of a 2-D convolution, without materialising any per-synapse tensor.

A Conv2d's synapses factor per axis: target (o, y, x) reads source (c, y*s - p + i*d, x*s - p + j*d)
for every channel c of its group and every tap (i, j) that lands inside the source (zero padding
has no synapse). So along one axis of input length ``n_in`` and output length ``n_out``:

* ``axis_fan_in[y]``  = #{i < k : 0 <= y*s - p + i*d < n_in}                (taps of output y)
* ``axis_fan_out[r]`` = #{(y, i) : y < n_out, i < k, y*s - p + i*d = r}      (uses of input r)
* ``axis_cover[y, r]`` = r is read by output y (the receptive field of y along the axis)

and a neuron's count is the product of its two axis counts times the channels it connects to:
fan-in (o, y, x) = C_in/G * fi_y[y] * fi_x[x]; fan-out (c, r, q) = C_out/G * fo_y[r] * fo_x[q].
Used by operation counting (``simulator.opcount``) and partitioning (``compiler.partition``).
"""
from __future__ import annotations

import numpy as np

from .nodes import Conv2d


def axis_cover(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """(n_out, n_in) bool: input index r is in the receptive field of output index y."""
    pos = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d          # (n_out, k)
    cover = np.zeros((n_out, n_in), dtype=bool)
    ok = (pos >= 0) & (pos < n_in)
    rows = np.broadcast_to(np.arange(n_out)[:, None], pos.shape)
    cover[rows[ok], pos[ok]] = True
    return cover


def axis_fan_in(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """(n_out,) int64: taps of each output index that land inside the input."""
    pos = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d
    return ((pos >= 0) & (pos < n_in)).sum(axis=1).astype(np.int64)


def axis_fan_out(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """(n_in,) int64: (output, tap) pairs that read each input index."""
    pos = (np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d).reshape(-1)
    pos = pos[(pos >= 0) & (pos < n_in)]
    return np.bincount(pos, minlength=n_in).astype(np.int64)


def _axes(proj: Conv2d, src_shape, dst_shape):
    _, h, w = src_shape
    _, ho, wo = dst_shape
    kh, kw = np.asarray(proj.weight).shape[2:]
    return ((h, ho, int(kh), proj.stride[0], proj.padding[0], proj.dilation[0]),
            (w, wo, int(kw), proj.stride[1], proj.padding[1], proj.dilation[1]))


def conv_fan_in(proj: Conv2d, src_shape, dst_shape) -> np.ndarray:
    """Synapses onto every target neuron (flattened (C_out, H_out, W_out) order), int64."""
    ay, ax = _axes(proj, src_shape, dst_shape)
    per_pixel = np.outer(axis_fan_in(*ay), axis_fan_in(*ax)).reshape(-1) * (src_shape[0] // proj.groups)
    return np.tile(per_pixel, dst_shape[0])


def conv_fan_out(proj: Conv2d, src_shape, dst_shape) -> np.ndarray:
    """Synapses of every source neuron (flattened (C_in, H, W) order), int64."""
    ay, ax = _axes(proj, src_shape, dst_shape)
    per_pixel = np.outer(axis_fan_out(*ay), axis_fan_out(*ax)).reshape(-1) * (dst_shape[0] // proj.groups)
    return np.tile(per_pixel, src_shape[0])


def conv_covers(proj: Conv2d, src_shape, dst_shape) -> tuple[np.ndarray, np.ndarray]:
    """The two axis cover matrices (H_out, H) and (W_out, W) of :func:`axis_cover`."""
    ay, ax = _axes(proj, src_shape, dst_shape)
    return axis_cover(*ay), axis_cover(*ax)
