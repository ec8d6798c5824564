"""Conversion (--method if) and the shared lowering: exact folds, structure, errors, meta, accuracy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeport import ir
from spikeport.convert import METHODS, ConversionError, activation_stats, convert, register_method
from spikeport.convert.lower import NeuronSpec
from spikeport.convert.registry import ConversionMethod
from spikeport.frontend import load_model
from spikeport.models import digits_leaky_cnn


# ---------------------------------------------------------------------- helpers
def input_current(net: ir.Network, pop: ir.Population, rates: dict[str, np.ndarray]) -> np.ndarray:
    """Float64 forward of a population's incoming projections plus bias, from source event rates."""
    n = next(iter(rates.values())).shape[0]
    total = np.zeros((n,) + tuple(pop.shape))
    for p in net.incoming(pop.name):
        s = torch.as_tensor(rates[p.source], dtype=torch.float64)
        w = torch.as_tensor(np.asarray(p.weight, dtype=np.float64))
        if isinstance(p, ir.Dense):
            out = s.reshape(n, -1) @ w.T
        elif isinstance(p, ir.Conv2d):
            out = F.conv2d(s, w, None, p.stride, p.padding, p.dilation, p.groups)
        else:
            out = s * torch.as_tensor(ir.expand_channel(np.asarray(p.weight, np.float64), tuple(pop.shape)))
        total += out.numpy().reshape(total.shape)
    return total + ir.expand_channel(np.asarray(pop.neuron.bias, np.float64), tuple(pop.shape))


def check_every_population(ann, net, x, atol=2e-4):
    """Feeding each population's sources with the ANN's own activations (as event rates = a /
    event value) must reproduce the ANN pre-activation of that population: BN, pooling, concat and
    residual folds are exact up to float32 rounding of the ANN."""
    pops = net.populations()
    names = [p.source for p in pops]
    pre_names = [ann.graph[p.source].inputs[0] if p.name not in net.outputs else p.source for p in pops]
    acts = ann.record_activations(x, sorted(set(names + pre_names)))
    rates = {net.inputs()[0].name: x.astype(np.float64)}
    for p in pops:
        if p.name not in net.outputs:
            rates[p.name] = acts[p.source] / ir.expand_channel(np.asarray(p.decode_scale), tuple(p.shape))
    for p, pre in zip(pops, pre_names):
        want = acts[pre].reshape((len(x),) + tuple(p.shape))
        np.testing.assert_allclose(input_current(net, p, rates), want, rtol=1e-5, atol=atol, err_msg=p.name)
    return pops


def rand_bn(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    with torch.no_grad():
        c = bn.num_features
        bn.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.rand(c, generator=gen) - 0.5)


class Branchy(nn.Module):
    """Concat of two branches, conv+BN after concat, AvgPool(3,1,1) then ReLU (depthwise), AvgPool(2)
    folded into a padded grouped conv, global mean then Linear."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.a, self.bn_a = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b = nn.Conv2d(1, 3, 1)
        self.c, self.bn_c = nn.Conv2d(7, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.d = nn.Conv2d(6, 6, 3, padding=1, groups=2)
        self.fc = nn.Linear(6, 10)
        rand_bn(self.bn_a, gen)
        rand_bn(self.bn_c, gen)

    def forward(self, x):
        h = torch.cat([torch.relu(self.bn_a(self.a(x))), torch.relu(self.b(x))], dim=1)
        h = torch.relu(self.bn_c(self.c(h)))
        h = torch.relu(F.avg_pool2d(h, 3, 1, 1))
        h = torch.relu(self.d(F.avg_pool2d(h, 2)))
        return self.fc(h.mean(dim=(2, 3)))


class AddThenBN(nn.Module):
    """Two convolutions of the same spikes added, then BatchNorm (scales every term), flatten, FC."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2, self.c3 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 16, 10)
        rand_bn(self.bn, torch.Generator().manual_seed(1))

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.bn(self.c2(h) + self.c3(h)))
        return self.fc(F.avg_pool2d(h, 2).flatten(1))


@pytest.fixture(scope="module")
def digits_ann(digits_onnx):
    return load_model(digits_onnx)


@pytest.fixture(scope="module")
def digits_net(digits_ann, calib_x):
    return convert(digits_ann, calib_x, method="if")


# ---------------------------------------------------------------------- digits CNN
def test_onnx_and_pt2_convert_validate_save_load(digits_ann, digits_net, digits_pt2, calib_x, tmp_path):
    net_pt2 = convert(load_model(digits_pt2), calib_x)
    for net in (digits_net, net_pt2):
        net.validate()
        back = ir.load(ir.save(net, tmp_path / "net.h5"))
        assert [n.name for n in back.nodes()] == [n.name for n in net.nodes()]
        for a, b in zip(net.projections(), back.projections()):
            np.testing.assert_array_equal(np.asarray(a.weight), np.asarray(b.weight))
        assert back.outputs == net.outputs and back.meta["method"] == "if"
    # both frontends give the same network parameters
    for a, b in zip(digits_net.populations()[:4], net_pt2.populations()[:4]):
        np.testing.assert_allclose(np.asarray(a.neuron.threshold), np.asarray(b.neuron.threshold), rtol=1e-6)
    for a, b in zip(digits_net.projections(), net_pt2.projections()):
        np.testing.assert_allclose(np.asarray(a.weight), np.asarray(b.weight), rtol=1e-5, atol=1e-6)


def test_digits_structure(digits_ann, digits_net):
    net = digits_net
    kinds = {p.name: (type(p.neuron).__name__, tuple(p.shape)) for p in net.populations()}
    assert list(kinds.values()) == [("IF", (8, 8, 8))] * 3 + [("IF", (32,)), ("Readout", (10,))]
    assert net.coding == "C1" and net.inputs()[0].coding == "analog"
    residual = net.populations()[2]
    inc = net.incoming(residual.name)
    assert sorted(p.connectivity for p in inc) == ["conv2d", "identity"]
    skip = next(p for p in inc if p.connectivity == "identity")
    assert skip.source == net.populations()[0].name
    np.testing.assert_array_equal(np.asarray(skip.weight), np.asarray(net.populations()[0].decode_scale) * np.ones(8))
    fc1 = net.incoming(net.populations()[3].name)[0]
    assert isinstance(fc1, ir.Dense) and np.asarray(fc1.weight).shape == (32, 512)  # pooling folded: from 8x8x8
    assert net.outputs == [net.populations()[4].name]
    ann_names = set(digits_ann.graph.nodes)
    assert all(p.source in ann_names for p in net.populations())  # every population names its ANN node


def test_bn_and_avgpool_folds_are_exact(digits_ann, digits_net, digits):
    pops = check_every_population(digits_ann, digits_net, digits[2][:64])
    assert [p.source for p in pops][:4] == [n.name for n in digits_ann.graph.activations()]


def test_folds_exact_for_concat_depthwise_grouped_and_global_pool():
    model = Branchy().eval()
    ann = load_model(model, input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    net = convert(ann, x, pool="fold")      # always fold (auto would relay the pool before the 3x3 conv)
    net.validate()
    pops = {p.name: p for p in net.populations()}
    concat_inputs = sorted(p.source for p in net.incoming("relu_2"))
    assert concat_inputs == ["relu", "relu_1"]  # concat split: one projection per source
    depthwise = net.incoming("relu_3")[0]
    assert isinstance(depthwise, ir.Conv2d) and depthwise.groups == 6 and depthwise.stride == (1, 1)
    folded = net.incoming("relu_4")[0]
    assert folded.stride == (2, 2) and folded.padding == (2, 2) and np.asarray(folded.weight).shape == (6, 3, 6, 6)
    gap = net.incoming(net.outputs[0])[0]
    assert isinstance(gap, ir.Dense) and np.asarray(gap.weight).shape == (10, 6 * 4 * 4)
    assert set(pops) == {"relu", "relu_1", "relu_2", "relu_3", "relu_4", net.outputs[0]}
    check_every_population(ann, net, x)


def test_bn_after_add_scales_every_term():
    ann = load_model(AddThenBN().eval(), input_shape=(1, 8, 8))
    x = np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)
    net = convert(ann, x)
    assert len(net.incoming("relu_1")) == 2
    check_every_population(ann, net, x)


# ---------------------------------------------------------------------- IF parameters and meta
def test_if_parameters_follow_calibration(digits_ann, calib_x):
    relu = digits_ann.graph.activations()[0].name
    acts = digits_ann.record_activations(calib_x, [relu])[relu]
    net = convert(digits_ann, calib_x, percentile=100, v_init="zero", reset="zero", compare=">")
    pop = net[relu]
    assert float(pop.neuron.threshold) == pytest.approx(float(acts.max()), rel=1e-6)
    assert float(pop.neuron.v_init) == 0.0 and pop.neuron.reset == "zero" and pop.neuron.compare == ">"
    assert net.meta["calibration"][relu]["lambda"] == pytest.approx(float(acts.max()), rel=1e-6)

    net = convert(digits_ann, calib_x)  # defaults: p99.9 of positive values, v(0) = theta/2, soft reset, >=
    p999 = float(np.percentile(acts[acts > 0], 99.9))
    pop = net[relu]
    assert float(pop.neuron.threshold) == pytest.approx(p999, rel=1e-6)
    assert float(pop.neuron.v_init) == pytest.approx(p999 / 2, rel=1e-6)
    assert pop.neuron.reset == "subtract" and pop.neuron.compare == ">="
    np.testing.assert_array_equal(np.asarray(pop.decode_scale), np.asarray(pop.neuron.threshold))

    chan = convert(digits_ann, calib_x, channelwise=True)[relu]
    assert np.asarray(chan.neuron.threshold).shape == (8,)


def test_meta_records_provenance(digits_net, calib_x, digits_onnx):
    meta = digits_net.meta
    assert meta["method"] == "if" and meta["options"]["percentile"] == 99.9 and meta["options"]["v_init"] == "half"
    assert meta["input_range"] == [float(calib_x.min()), float(calib_x.max())]
    assert meta["input_shape"] == [1, 8, 8] and meta["ann_source"] == digits_onnx
    assert set(meta["calibration"]) == {p.name for p in digits_net.populations()[:4]}
    assert meta["replaced"] == []


def test_activation_stats_percentile_over_positive_values():
    acts = np.concatenate([np.zeros(1000), np.arange(1, 101, dtype=float)]).reshape(1, -1)
    s = activation_stats("r", acts, p=50)
    assert s.max == 100 and s.percentile == 50.5 and s.positive_fraction == pytest.approx(100 / 1100)


# ---------------------------------------------------------------------- errors
def test_two_linear_layers_in_a_row_are_rejected():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    ann = load_model(model, input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match=r"node '_1' \(Conv2d\): follows the linear layer\(s\) '_0'"):
        convert(ann, np.zeros((2, 1, 8, 8), np.float32))


def test_maxpool_is_refused_unless_replaced():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32, 3)).eval()
    ann = load_model(model, input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ConversionError, match=r"MaxPool is not convertible to IF spikes .*AvgPool.*maxpool='avg'"):
        convert(ann, x)
    net = convert(ann, x, maxpool="avg")
    assert "replaced by AvgPool" in net.meta["replaced"][0]
    assert np.asarray(net.incoming(net.outputs[0])[0].weight).shape == (3, 2 * 8 * 8)


def test_leaky_relu_is_refused_by_if_method():
    ann = load_model(digits_leaky_cnn(), input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match=r"method 'if': node '.*' is LeakyReLU\(slope=0.1\)"):
        convert(ann, np.zeros((2, 1, 8, 8), np.float32))


def test_bad_options_and_data(digits_ann, calib_x):
    with pytest.raises(ValueError, match=r"unknown conversion method 'nope'; available: \[.*'if'"):
        convert(digits_ann, calib_x, method="nope")
    with pytest.raises(ValueError, match=r"method 'if': unknown option\(s\) \['thresh'\]"):
        convert(digits_ann, calib_x, thresh=1)
    with pytest.raises(ValueError, match="v_init 'third' must be one of"):
        convert(digits_ann, calib_x, v_init="third")
    with pytest.raises(ValueError, match=r"calibration data has shape \(3, 8, 8\)"):
        convert(digits_ann, np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        convert(digits_ann, np.full((2, 1, 8, 8), np.nan, np.float32))


def test_a_method_registers_itself(digits_ann, calib_x):
    @register_method("test-unit-if")
    @dataclass
    class UnitIF(ConversionMethod):
        """Threshold 1 everywhere (no calibration)."""

        def activation(self, ctx):
            c = ctx.shape[0]
            return NeuronSpec(ir.IF(threshold=np.array(1.0), bias=ctx.bias), ir.SpikePayload(), np.ones(c), np.ones(c))

    try:
        assert METHODS["test-unit-if"] is UnitIF
        net = convert(digits_ann, calib_x, method="test-unit-if")
        assert all(float(p.neuron.threshold) == 1.0 for p in net.populations()[:4])
    finally:
        METHODS.pop("test-unit-if")


# ---------------------------------------------------------------------- accuracy (needs the simulator)
@pytest.mark.slow
def test_if_digits_accuracy_within_1_5_points_at_T64(digits_ann, digits_net, digits):
    simulator = pytest.importorskip("spikeport.simulator")
    x_test, y_test = digits[2], digits[3]
    ann_acc = digits_ann.evaluate(x_test, y_test)["accuracy"]
    assert ann_acc >= 0.95
    snn_acc = float(np.mean(simulator.simulate(digits_net, x_test, 64).predictions == y_test))
    assert snn_acc >= ann_acc - 0.015, (ann_acc, snn_acc)
