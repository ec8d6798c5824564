"""CubaLIF / CubaLI: float kernel against the equations written out, bit-accurate kernel against the
plain integer reference (property tests, equality), and the IR round trip through HDF5."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeport.ir import Conv2d, Datapath, Dense, Input, Network, Population, Readout, SpikePayload, load, save
from spikeport.ir.neurons_cuba import CubaLI, CubaLIF
from spikeport.simulator import simulate
from spikeport.simulator.reference import reference_simulate

torch.set_num_threads(1)


def _cuba(draw, rng, shape, quantized: bool) -> CubaLIF:
    per_channel = draw(st.booleans())
    size = shape[0] if per_channel else None

    def arr(lo, hi):
        return rng.integers(lo, hi + 1, size=size) if size else np.array(int(rng.integers(lo, hi + 1)))
    reset = draw(st.sampled_from(["zero", "subtract"]))
    if quantized:
        return CubaLIF(threshold=np.array(int(rng.integers(1, 400)) * 64), bias=arr(-30, 30) * 4, v_init=arr(-60, 60),
                       u_init=arr(-500, 500), current_bias=arr(-3, 3) * draw(st.sampled_from([0, 1])),
                       du=draw(st.sampled_from([4095, 0, 1, 1000, 4094])), dv=draw(st.sampled_from([0, 1, 300, 4095])),
                       reset=reset, compare=draw(st.sampled_from([">", ">="])),
                       reset_timing=draw(st.sampled_from(["fire", "next_step"])))
    return CubaLIF(threshold=arr(1, 4) * 0.5, bias=arr(-3, 3) * 0.125, du=draw(st.sampled_from([1.0, 0.25, 0.5])),
                   dv=draw(st.sampled_from([0.0, 0.125, 0.5])), reset=reset, compare=draw(st.sampled_from([">", ">="])),
                   reset_timing=draw(st.sampled_from(["fire", "next_step"])))


@st.composite
def cuba_networks(draw, quantized=True):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    T = draw(st.integers(1, 8))
    dp = draw(st.sampled_from([Datapath(), Datapath(state_bits=12, current_bits=11, act_shift=2)])) if quantized else None
    wmax = draw(st.sampled_from([3, 60, 255]))
    conv = draw(st.booleans())
    net = Network(coding="C1", datapath=dp)
    in_shape = (2, 4, 4) if conv else (int(rng.integers(2, 7)),)
    net.add(Input("in", shape=in_shape, coding="spikes", payload=SpikePayload()))
    w = lambda shape: rng.integers(-wmax, wmax + 1, size=shape).astype(np.float64) * (1 if quantized else 0.125)  # noqa: E731
    if conv:
        proj = Conv2d("c1", source="in", target="p1", weight=w((3, 2, 3, 3)), padding=(1, 1), delay=draw(st.integers(0, 2)),
                      weight_exp=draw(st.integers(-2, 1)) if quantized else 0)
        shape1 = proj.out_shape(in_shape)
    else:
        shape1 = (int(rng.integers(2, 6)),)
        proj = Dense("c1", source="in", target="p1", weight=w((shape1[0], in_shape[0])), delay=draw(st.integers(0, 2)),
                     weight_exp=draw(st.integers(-2, 1)) if quantized else 0)
    net.add(Population("p1", shape=shape1, neuron=_cuba(draw, rng, shape1, quantized), t_start=draw(st.integers(0, 2))))
    net.add(proj)
    size1 = int(np.prod(shape1))
    net.add(Population("p2", shape=(3,), neuron=_cuba(draw, rng, (3,), quantized), t_start=draw(st.integers(0, 2))))
    net.add(Dense("d12", source="p1", target="p2", weight=w((3, size1)), delay=draw(st.integers(0, 2))))
    net.add(Population("out", shape=(2,), neuron=Readout()))
    net.add(Dense("d2o", source="p2", target="out", weight=w((2, 3))))
    net.outputs = ["out"]
    x = (rng.random((5, T) + in_shape) < 0.4).astype(np.float64)
    return net, x, T


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuba_networks())
def test_fixed_cubalif_equals_integer_reference(case):
    net, x, T = case
    ref = reference_simulate(net, x, T)
    for bs in (1, 5):
        res = simulate(net, x, T, batch_size=bs, record_spikes=True, record_states=True)
        for name, train in ref.spikes.items():
            np.testing.assert_array_equal(res.spikes[name], train, err_msg=name)
        for name, v in ref.v.items():
            np.testing.assert_array_equal(res.states[name], v, err_msg=name)
            assert res.layers[name]["wrap_events"] == ref.wrap[name], name
            assert res.layers[name]["saturation_events"] == ref.saturation[name], name


def _float_loop(m: CubaLIF, currents: np.ndarray) -> np.ndarray:
    """The IR docstring's equations for one neuron, step by step."""
    u = v = 0.0
    prev, out = 0, []
    th, b = float(m.threshold), float(m.bias)
    for i in currents:
        u = u * (1 - m.du) + i
        v = v * (1 - m.dv) + u + b
        if m.reset == "subtract" and m.reset_timing == "next_step":
            v -= th * prev
        s = int(v > th if m.compare == ">" else v >= th)
        if s and m.reset == "zero":
            v = 0.0
        elif s and m.reset_timing == "fire":
            v -= th
        prev = s
        out.append(s)
    return np.array(out)


def test_float_cubalif_follows_its_equations():
    rng = np.random.default_rng(0)
    for reset, timing, compare in [("zero", "fire", ">"), ("subtract", "fire", ">="), ("subtract", "next_step", ">")]:
        m = CubaLIF(threshold=np.array(1.0), bias=np.array(0.05), du=0.25, dv=0.125, reset=reset, compare=compare,
                    reset_timing=timing)
        net = Network()
        net.add(Input("in", shape=(1,), coding="spikes"))
        net.add(Population("p", shape=(1,), neuron=m))
        net.add(Dense("d", source="in", target="p", weight=np.array([[0.375]])))
        net.outputs = ["p"]
        x = (rng.random((1, 40, 1)) < 0.5).astype(np.float64)
        res = simulate(net, x, 40, record_spikes=True)
        np.testing.assert_array_equal(res.spikes["p"][0, :, 0], _float_loop(m, x[0, :, 0] * 0.375))
        assert res.spikes["p"].sum() > 3


def test_cubali_integrates_with_leak_and_round_trips(tmp_path):
    net = Network()
    net.add(Input("in", shape=(2,), coding="spikes"))
    net.add(Population("li", shape=(2,), neuron=CubaLI(du=0.5, dv=0.25, bias=np.array([0.0, 1.0]))))
    net.add(Dense("d", source="in", target="li", weight=np.eye(2)))
    net.outputs = ["li"]
    x = np.ones((1, 3, 2))
    res = simulate(net, x, 3, record_states=True)
    u = v = np.zeros(2)
    for _ in range(3):
        u = u * 0.5 + 1
        v = v * 0.75 + u + np.array([0.0, 1.0])
    np.testing.assert_allclose(res.states["li"][0], v, rtol=0, atol=1e-12)
    again = load(save(net, tmp_path / "li.h5"))
    assert isinstance(again["li"].neuron, CubaLI) and again["li"].neuron.dv == 0.25


@settings(max_examples=10, deadline=None)
@given(cuba_networks(quantized=False))
def test_float_cubalif_network_round_trips_through_hdf5(tmp_path_factory, case):
    net, x, T = case
    path = tmp_path_factory.mktemp("cuba") / "net.h5"
    again = load(save(net, path))
    a = simulate(net, x, T, record_spikes=True)
    b = simulate(again, x, T, record_spikes=True)
    for name in a.spikes:
        np.testing.assert_array_equal(a.spikes[name], b.spikes[name])
