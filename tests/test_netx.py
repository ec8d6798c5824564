"""netx HDF5 export: lava-dl's own netx loads the file and produces spikeport's spikes exactly."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from spikeport.backends.loihi2.examples import GRADED8, even_weights, random_mlp, random_resnet
from spikeport.backends.netx import NetxExportError, export_netx, run_netx
from spikeport.ir import IF, Conv2d, Datapath, Dense, Input, Network, Population, SpikePayload
from spikeport.simulator import simulate


def _lif(n, th, leak=0):
    return IF(threshold=np.full(n, 64 * th), reset="zero", compare=">", leak=leak)


def conv_dense_net(seed=0) -> Network:
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(1, 6, 6), payload=SpikePayload(**GRADED8)))
    net.add(Population("c1", shape=(2, 6, 6), neuron=IF(threshold=np.full(2, 64 * 100), reset="zero", compare=">"),
                       t_start=1))
    net.add(Conv2d("x_c1", source="x", target="c1", weight=even_weights(rng, (2, 1, 3, 3)), padding=(1, 1), delay=1))
    net.add(Population("h", shape=(5,), neuron=_lif(5, 2, leak=100), t_start=2))
    net.add(Dense("c1_h", source="c1", target="h", weight=even_weights(rng, (5, 72), -100, 100), delay=1, weight_exp=-1))
    net.add(Population("o", shape=(3,), neuron=_lif(3, 1), t_start=3))
    net.add(Dense("h_o", source="h", target="o", weight=even_weights(rng, (3, 5), -100, 100), delay=1, weight_exp=1))
    net.outputs = ["o"]
    net.validate()
    return net


def test_netx_file_layout(tmp_path):
    path = export_netx(conv_dense_net(), tmp_path / "net.h5", timesteps=4)
    with h5py.File(path) as f:
        types = [f[f"layer/{i}/type"][0].decode() for i in range(len(f["layer"]))]
        assert types == ["input", "conv", "flatten", "dense", "dense"]
        assert f["layer/1/neuron/type"][0] == b"CUBA" and int(f["layer/1/neuron/vThMant"][()]) == 100
        assert int(f["layer/3/neuron/vDecay"][()]) == 100 and int(f["layer/3/neuron/iDecay"][()]) == 4096


def test_netx_spikes_equal_simulator(tmp_path):
    net = conv_dense_net()
    path = export_netx(net, tmp_path / "net.h5", timesteps=6)
    x = np.random.default_rng(3).integers(0, 256, (2, 1, 6, 6)).astype(float)
    got = run_netx(path, net, x, 6)
    sim = simulate(net, x, 6, record_spikes=True)
    for name, spikes in got.items():
        np.testing.assert_array_equal(spikes, sim.spikes[name], err_msg=name)
        assert np.abs(spikes).sum() > 0, f"{name} never fires: the test would prove nothing"


@pytest.mark.parametrize("net, message", [
    (random_mlp(), "population 'h': reset by subtraction.*compare '>='"),
    (random_mlp(reset="zero", compare=">"), "population 'h': .*nonzero bias"),
    (random_resnet(), "feeds 2 projections"),
    (random_mlp(signed=True, reset="zero", compare=">"), "signed spikes"),
])
def test_netx_refuses_what_it_cannot_express(tmp_path, net, message):
    with pytest.raises(NetxExportError, match=message):
        export_netx(net, tmp_path / "bad.h5")


def test_netx_refuses_readout(tmp_path):
    net = random_mlp(reset="zero", compare=">")
    net["h"].neuron.bias = np.zeros(4)
    with pytest.raises(NetxExportError, match="population 'o': Readout has no netx neuron"):
        export_netx(net, tmp_path / "bad.h5")
