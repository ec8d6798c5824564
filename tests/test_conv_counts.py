"""Closed-form conv synapse counts (ir.conv_counts, partition's slice reach, opcount's reach) equal a
brute-force enumeration of every synapse on small random shapes (stride, padding, dilation, groups)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport.compiler.partition import _conv_reach
from spikeport.ir import Conv2d
from spikeport.ir.conv_counts import conv_fan_in, conv_fan_out
from spikeport.simulator.opcount import _Reach, fan_in, fan_out


def random_convs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        g = int(rng.choice([1, 2, 3]))
        cin, co = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        p = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        h, w = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        proj = Conv2d("c", source="a", target="b", weight=rng.integers(-1, 2, size=(co, cin // g) + k).astype(float),
                      stride=s, padding=p, dilation=d, groups=g)
        dst = proj.out_shape((cin, h, w))
        if dst[1] >= 1 and dst[2] >= 1:
            out.append((proj, (cin, h, w), dst))
    return out


def synapses(proj: Conv2d, src, dst, nonzero_only: bool = False):
    """Every synapse as (source flat index, target flat index), by enumerating the definition."""
    cin, h, w = src
    co, ho, wo = dst
    g = proj.groups
    wt = np.asarray(proj.weight)
    kh, kw = wt.shape[2:]
    out = []
    for o in range(co):
        grp = o // (co // g)
        for ci in range(cin // g):
            c = grp * (cin // g) + ci
            for y in range(ho):
                for x in range(wo):
                    for i in range(kh):
                        for j in range(kw):
                            r = y * proj.stride[0] - proj.padding[0] + i * proj.dilation[0]
                            q = x * proj.stride[1] - proj.padding[1] + j * proj.dilation[1]
                            if 0 <= r < h and 0 <= q < w and (not nonzero_only or wt[o, ci, i, j] != 0):
                                out.append(((c * h + r) * w + q, (o * ho + y) * wo + x))
    return out


CASES = random_convs(40)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fan_in_and_fan_out_closed_forms_equal_enumeration(case):
    proj, src, dst = CASES[case]
    syn = synapses(proj, src, dst)
    fo = np.bincount([a for a, _ in syn], minlength=int(np.prod(src)))
    fi = np.bincount([b for _, b in syn], minlength=int(np.prod(dst)))
    assert conv_fan_out(proj, src, dst).tolist() == fo.tolist() == fan_out(proj, src, dst).tolist()
    assert conv_fan_in(proj, src, dst).tolist() == fi.tolist() == fan_in(proj, src, dst).tolist()
    nz = synapses(proj, src, dst, nonzero_only=True)     # the weight-dependent path is unchanged
    assert fan_out(proj, src, dst, False).tolist() == np.bincount([a for a, _ in nz], minlength=len(fo)).tolist()
    assert fan_in(proj, src, dst, False).tolist() == np.bincount([b for _, b in nz], minlength=len(fi)).tolist()


@pytest.mark.parametrize("case", range(len(CASES)))
def test_slice_reach_equals_enumeration(case):
    proj, src, dst = CASES[case]
    syn = synapses(proj, src, dst)
    n_dst = int(np.prod(dst))
    for size in sorted({1, 2, 3, max(1, n_dst // 3), n_dst}):
        starts = np.arange(0, n_dst, size)
        stops = np.minimum(starts + size, n_dst)
        slice_of = np.searchsorted(starts, np.arange(n_dst), side="right") - 1
        sources = [set() for _ in starts]
        slices_of_source: dict[int, set] = {}
        for a, b in syn:
            sources[slice_of[b]].add(a)
            slices_of_source.setdefault(a, set()).add(slice_of[b])
        fan, reach = _conv_reach(proj, src, dst, starts, stops, per_source=True)
        assert fan.tolist() == [len(s) for s in sources]
        assert reach.tolist() == [len(slices_of_source.get(a, ())) for a in range(int(np.prod(src)))]


@pytest.mark.parametrize("case", range(0, len(CASES), 4))
@pytest.mark.parametrize("structural", [True, False])
def test_targets_reached_equal_enumeration(case, structural):
    proj, src, dst = CASES[case]
    syn = synapses(proj, src, dst, nonzero_only=not structural)
    events = torch.as_tensor(np.random.default_rng(case).random((5, int(np.prod(src)))) < 0.2)
    want = np.zeros((5, int(np.prod(dst))), dtype=bool)
    for a, b in syn:
        want[:, b] |= events[:, a].numpy()
    got = _Reach(proj, src, dst, structural)(events)
    assert got.numpy().tolist() == want.tolist()
