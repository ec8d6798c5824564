"""AvgPool before a convolution: folded only where that adds no MACs, else a relay population."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spikeport import compiler, hw_profiles, ir
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.simulator import simulate
from spikeport.simulator.opcount import ann_equivalent_macs


class PoolConv(nn.Module):
    """conv-ReLU, AvgPool(2), 3x3 conv-ReLU (VGG's pattern), flatten, Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(nn.functional.avg_pool2d(h, 2)))
        return self.fc(h.flatten(1))


def nets():
    ann = load_model(PoolConv().eval(), input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    return ann, x, convert(ann, x), convert(ann, x, pool="fold")


def test_auto_keeps_the_pool_where_folding_multiplies_macs():
    ann, x, auto, fold = nets()
    (dec,) = auto.meta["pooling"]
    # folded: 6x4x4 targets x 4 channels x 6x6 taps; separate: 4x4x4 pooled x 2x2 + 6x4x4 x 4 x 3x3
    assert (dec["decision"], dec["folded_macs"], dec["separate_macs"]) == ("separate", 13824, 256 + 3456)
    assert fold.meta["pooling"][0]["decision"] == "fold"
    relay = auto[dec["pool"]]
    assert type(relay.neuron) is ir.IF and tuple(relay.shape) == (4, 4, 4)
    (pool_proj,) = auto.incoming(relay.name)
    assert isinstance(pool_proj, ir.Conv2d) and pool_proj.groups == 4 and pool_proj.stride == (2, 2)
    lam = float(np.asarray(auto.populations()[0].decode_scale))
    np.testing.assert_array_equal(np.asarray(pool_proj.weight), np.full((4, 1, 2, 2), lam / 4))
    assert float(relay.neuron.threshold) == lam and float(relay.neuron.v_init) == lam / 2
    conv2 = auto.incoming(auto.populations()[2].name)[0]
    assert np.asarray(conv2.weight).shape == (6, 4, 3, 3) and conv2.stride == (1, 1)      # not 6x6 stride 2
    folded2 = fold.incoming(fold.populations()[1].name)[0]
    assert np.asarray(folded2.weight).shape == (6, 4, 6, 6) and folded2.stride == (2, 2)
    assert ann_equivalent_macs(auto) < ann_equivalent_macs(fold)
    # the classifier after flatten stays folded in auto mode (no pool there) and outputs agree
    for T in (64,):
        a, f = simulate(auto, x, T), simulate(fold, x, T)
        assert np.mean(a.predictions == f.predictions) >= 0.95
        assert np.mean(a.predictions == ann.forward(x).argmax(axis=1)) >= 0.9


def test_relay_emits_the_rounded_window_mean():
    _, x, auto, _ = nets()
    src, relay = auto.populations()[0], auto[auto.meta["pooling"][0]["pool"]]
    T = 16
    res = simulate(auto, x, T, record_spikes=True)
    s = res.spikes[src.name].astype(np.int64).sum(axis=1)                    # (N, 4, 8, 8) counts over T
    window = s.reshape(len(x), 4, 4, 2, 4, 2).sum(axis=(3, 5))              # sum over each 2x2 block
    want = np.floor(window / 4 + 0.5).astype(np.int64)
    got = res.spikes[relay.name].astype(np.int64).sum(axis=1)
    tie = window % 4 == 2                                                   # float rounding may fall either way
    assert np.array_equal(got[~tie], want[~tie]) and np.abs(got - want)[tie].max(initial=0) <= 1


def test_relay_quantises_saves_and_simulates_bit_accurately(tmp_path):
    _, x, auto, _ = nets()
    qnet, _ = compiler.quantize(auto, hw_profiles.load_profile("loihi2"))
    back = ir.load(ir.save(qnet, tmp_path / "q.h5"))
    assert back.meta["pooling"] == auto.meta["pooling"]
    a, b = simulate(qnet, x[:16], 8), simulate(back, x[:16], 8)
    np.testing.assert_array_equal(a.outputs, b.outputs)
