"""Issue 12 item 5: an ordinary converted MLP with biases reaches lava-dl netx. ``--opt preset=netx``
converts to Lava's LIF with a spiking output layer, the quantiser keeps the bias acting during the
pipeline fill and writes it as ``bias_mant << 6``; lava-dl's own ``netx.hdf5.Network`` then gives
spikeport's bit-accurate spikes in every layer."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from conftest import export_onnx
from spikeport.backends.netx import export_netx, run_netx
from spikeport.compiler import quantize
from spikeport.convert import ConversionError, convert
from spikeport.frontend import load_model
from spikeport.ir import expand_channel
from spikeport.ir.neurons_extra import LavaLIF
from spikeport.models import train_digits_model
from spikeport.simulator import simulate

T = 16


@pytest.fixture(scope="module")
def mlp_ann(digits, tmp_path_factory):
    """64-32-10 MLP with biases, trained on the digits in about a second, loaded from ONNX."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_train, y_train, _, _ = digits
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    model = train_digits_model(model, x_train, y_train, epochs=20, seed=0)
    return load_model(export_onnx(model, tmp_path_factory.mktemp("mlp") / "mlp.onnx"), input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def preset_q(mlp_ann, digits):
    net = convert(mlp_ann, digits[0][:500], "if", preset="netx")
    return net, quantize(net, "loihi2")[0]


def test_preset_makes_a_chain_of_lava_lif_layers(preset_q):
    net, q = preset_q
    pops = net.populations()
    assert [type(p.neuron) for p in pops] == [LavaLIF, LavaLIF] and net.outputs == [pops[-1].name]
    assert all(np.any(p.neuron.bias) for p in pops)             # biases kept, not dropped
    for p in q.populations():
        b = np.asarray(p.neuron.bias)
        assert np.any(b) and np.all(b % 64 == 0) and not np.any(p.neuron.v_init)   # netx bias_exp 6, v(0) = 0
    assert "fill_bias_cancelled" not in q.meta                   # netx has no v_init: the fill bias acts
    assert all(p.weight_exp == 0 and np.abs(p.weight).max() <= 256 for p in q.projections())


def test_preset_mlp_netx_spikes_equal_simulator(preset_q, digits, tmp_path):
    _, q = preset_q
    path = export_netx(q, tmp_path / "mlp.h5", timesteps=T)
    with h5py.File(path) as f:
        assert [f[f"layer/{i}/type"][0] for i in range(len(f["layer"]))] == [b"input", b"flatten", b"dense", b"dense"]
        np.testing.assert_array_equal(f["layer/2/bias"][()], np.asarray(q.populations()[0].neuron.bias) >> 6)
    x = digits[2][:4]
    got = run_netx(path, q, x, T)
    sim = simulate(q, x, T, record_spikes=True)
    assert set(got) == {p.name for p in q.populations()}
    for name, spikes in got.items():
        np.testing.assert_array_equal(spikes, sim.spikes[name], err_msg=name)
        assert spikes.sum() > 0, f"{name} never fires: the test would prove nothing"


def test_preset_accuracy_against_default_conversion(preset_q, mlp_ann, digits):
    net, q = preset_q
    _, _, x_test, y_test = digits
    default = convert(mlp_ann, digits[0][:500], "if")
    acc = {"default float": simulate(default, x_test, 32).accuracy(y_test),
           "default loihi2": simulate(quantize(default, "loihi2")[0], x_test, 32).accuracy(y_test),
           "netx float": simulate(net, x_test, 32).accuracy(y_test),
           "netx loihi2": simulate(q, x_test, 32).accuracy(y_test)}
    print("digits MLP accuracy, T=32:", {k: round(v, 4) for k, v in acc.items()})
    assert acc["netx loihi2"] >= 0.9 and acc["default loihi2"] - acc["netx loihi2"] < 0.05


def test_preset_refuses_contradicting_options(mlp_ann, digits):
    with pytest.raises(ConversionError, match="preset 'loihi' must be one of"):
        convert(mlp_ann, digits[0][:64], "if", preset="loihi")
    with pytest.raises(ConversionError, match="channelwise"):
        convert(mlp_ann, digits[0][:64], "if", preset="netx", channelwise=True)


@pytest.fixture(scope="module")
def cnn_ann(digits, tmp_path_factory):
    """conv(1->4, 3x3, stride 2, bias) - ReLU - conv(4->6, 3x3, bias) - ReLU - flatten - linear(bias), from ONNX."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_train, y_train, _, _ = digits
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(96, 10))
    model = train_digits_model(model, x_train, y_train, epochs=15, seed=0)
    return load_model(export_onnx(model, tmp_path_factory.mktemp("cnn") / "cnn.onnx"), input_shape=(1, 8, 8))


def test_preset_cnn_with_conv_biases_netx_spikes_equal_simulator(cnn_ann, digits, tmp_path):
    """Conv biases: netx broadcasts one bias mantissa per channel over H, W (``bias`` of a conv layer)."""
    net = convert(cnn_ann, digits[0][:500], "if", preset="netx")
    q = quantize(net, "loihi2")[0]
    conv_pops = [p for p in q.populations() if len(p.shape) == 3]
    assert len(conv_pops) == 2 and all(np.any(p.neuron.bias) for p in conv_pops)
    path = export_netx(q, tmp_path / "cnn.h5", timesteps=T)
    with h5py.File(path) as f:
        assert [f[f"layer/{i}/type"][0] for i in range(len(f["layer"]))] == \
            [b"input", b"conv", b"conv", b"flatten", b"dense"]
        for i, pop in zip((1, 2), conv_pops):
            want = expand_channel(np.asarray(pop.neuron.bias), pop.shape).reshape(pop.shape[0], -1)[:, 0].astype(np.int64) >> 6
            np.testing.assert_array_equal(f[f"layer/{i}/bias"][()], want)
    x = digits[2][:3]
    got = run_netx(path, q, x, T)
    sim = simulate(q, x, T, record_spikes=True)
    assert set(got) == {p.name for p in q.populations()}
    for name, spikes in got.items():
        np.testing.assert_array_equal(spikes, sim.spikes[name], err_msg=name)
        assert spikes.sum() > 0, f"{name} never fires: the test would prove nothing"
    _, _, x_test, y_test = digits
    print("digits CNN (conv biases) preset=netx accuracy, T=32: float",
          round(simulate(net, x_test, 32).accuracy(y_test), 4), "loihi2", round(simulate(q, x_test, 32).accuracy(y_test), 4))


def test_default_conversion_reaches_netx_only_as_a_measured_approximation(mlp_ann, digits, tmp_path):
    """The default ``--method if`` network (soft reset, '>=', Readout output, biases on gated layers) has
    no exact netx form: export_netx refuses it; approximate_for_netx gives the nearest netx network,
    whose accuracy against the simulator's is measured, and lava-dl's netx runs exactly that network."""
    from spikeport.backends.netx import NetxExportError, approximate_for_netx, measure_approximation
    net = convert(mlp_ann, digits[0][:500], "if")
    q = quantize(net, "loihi2", netx=True)[0]
    with pytest.raises(NetxExportError, match="reset by subtraction .*--approximate"):
        export_netx(q, tmp_path / "refused.h5", timesteps=T)
    assert not (tmp_path / "refused.h5").exists()
    _, _, x_test, y_test = digits
    approx, changes = approximate_for_netx(q, x_test, 32)
    assert any("Readout -> spiking LIF" in c for c in changes) and any("reset 'subtract' -> 'zero'" in c for c in changes)
    path = export_netx(approx, tmp_path / "approx.h5", timesteps=32)
    m = measure_approximation(q, approx, path, x_test, y_test, 32, netx_samples=2)
    print("digits MLP default conversion -> netx approximation, T=32:", {k: v for k, v in m.items()})
    assert m["netx_equals_approximation"]
    assert m["accuracy_simulator"] == simulate(q, x_test, 32).accuracy(y_test)
    assert m["accuracy_difference"] == m["accuracy_netx"] - m["accuracy_simulator"]
    assert m["accuracy_netx"] > 0.5      # a usable approximation, its loss printed above
