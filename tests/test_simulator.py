"""Hand-worked checks of the float and bit-accurate simulators (timing, decoding, Lava's overflow rules)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeport.errors import UnsupportedError

from spikeport.ir import IF, Conv2d, Datapath, Dense, Identity, Input, Network, Operator, Population, Readout
from spikeport.simulator import simulate
from spikeport.simulator.reference import reference_simulate

torch.set_num_threads(1)


def one_neuron_net(neuron: IF, delay: int = 0, t_start: int = 0, out_start: int | None = None) -> Network:
    """in -(w=1)-> p (one IF neuron) -(w=1)-> o (Readout)."""
    net = Network()
    net.add(Input("in", shape=(1,)))
    net.add(Population("p", shape=(1,), neuron=neuron, t_start=t_start))
    net.add(Dense("d", source="in", target="p", weight=np.array([[1.0]]), delay=delay))
    net.add(Population("o", shape=(1,), neuron=Readout(), t_start=t_start if out_start is None else out_start))
    net.add(Dense("d2", source="p", target="o", weight=np.array([[1.0]])))
    net.outputs = ["o"]
    return net


def train(res, name="p") -> list[int]:
    return res.spikes[name][0, :, 0].tolist()


# ------------------------------------------------------------------------------------ float
def test_float_if_constant_input_soft_reset():
    # v: .25 .5 .75 1.0 -> fire (v=0) .25 .5 .75 1.0 -> fire .25 .5  => spikes at t = 3, 7
    res = simulate(one_neuron_net(IF(threshold=np.array(1.0))), np.array([[0.25]]), 10, record_spikes=True,
                   record_states=True)
    assert train(res) == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert res.spike_counts["p"].tolist() == [[2]]
    assert res.states["p"][0, 0] == 0.5
    assert res.outputs[0, 0] == 2 / 10            # readout v(T)/T, v = number of spikes
    # v_init = 0.5: .75 1.0 -> fire .25 .5 .75 1.0 -> fire ... => t = 1, 5, 9
    res = simulate(one_neuron_net(IF(v_init=np.array(0.5))), np.array([[0.25]]), 10, record_spikes=True)
    assert train(res) == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_voltage_trace_is_v_after_reset_and_frozen_outside_the_window():
    res = simulate(one_neuron_net(IF(threshold=np.array(1.0)), delay=1, t_start=1, out_start=2), np.array([[0.25]]), 6,
                   record_voltages=True, record_states=True)
    # p starts at t=1 (input arrives with delay 1): .25 .5 .75 0 (fired) .25 .5, then frozen at t=7
    assert res.voltages["p"][0, :, 0].tolist() == [0.0, 0.25, 0.5, 0.75, 0.0, 0.25, 0.5, 0.5]
    assert res.voltages["o"][0, -1, 0] == res.states["o"][0, 0] == 1.0


def test_float_if_rounding_of_point_three_is_float64():
    # In exact arithmetic 0.3 for 10 steps gives 3 spikes; in float64 the 10th step reaches
    # 0.7 + 0.3 = 0.9999999999999999 < 1 after two soft resets, so only 2 (documented float semantics).
    res = simulate(one_neuron_net(IF()), np.array([[0.3]]), 10, record_spikes=True)
    assert train(res) == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0]


def test_float_compare_reset_and_signed():
    x = np.array([[0.5]])
    strict = simulate(one_neuron_net(IF(compare=">")), x, 4, record_spikes=True)
    assert train(strict) == [0, 0, 1, 0]          # v = 1.0 does not fire with '>'; 1.5 at t=2 does
    assert train(simulate(one_neuron_net(IF(compare=">=")), x, 4, record_spikes=True)) == [0, 1, 0, 1]
    zero = simulate(one_neuron_net(IF(threshold=np.array(0.75), reset="zero")), x, 4, record_spikes=True,
                    record_states=True)
    assert train(zero) == [0, 1, 0, 1] and zero.states["p"][0, 0] == 0.0
    # signed IF (AIF form: neg_threshold 0, neg_reset = threshold) on a negative input
    aif = IF(threshold=np.array(1.0), neg_threshold=np.array(0.0), neg_reset=np.array(1.0))
    res = simulate(one_neuron_net(aif), np.array([[-0.5]]), 4, record_spikes=True, record_states=True)
    assert train(res) == [-1, 0, -1, 0]          # v=-.5 -> -1 spike, v=.5; v=0 -> nothing; ...
    assert res.spike_counts["p"].tolist() == [[2]]
    assert res.outputs[0, 0] == -2 / 4


def test_float_leak():
    res = simulate(one_neuron_net(IF(leak=0.5, threshold=np.array(10.0))), np.array([[1.0]]), 3, record_states=True)
    assert res.states["p"][0, 0] == 1.75          # 1 -> 1.5 -> 1.75


def test_delay_and_t_start_shift_the_spike_train():
    x = np.array([[0.25], [0.4]])
    base = simulate(one_neuron_net(IF()), x, 10, record_spikes=True)
    shifted = simulate(one_neuron_net(IF(), delay=2, t_start=2), x, 10, record_spikes=True)
    assert base.steps_run == 10 and shifted.steps_run == 12
    np.testing.assert_array_equal(shifted.spikes["p"][:, 2:], base.spikes["p"])
    np.testing.assert_array_equal(shifted.spikes["p"][:, :2], 0)
    np.testing.assert_array_equal(shifted.outputs, base.outputs)
    np.testing.assert_array_equal(shifted.spike_counts["p"], base.spike_counts["p"])
    # a population started too early sees nothing for the first steps and misses spikes
    early = simulate(one_neuron_net(IF(), delay=2, t_start=0, out_start=2), x, 10, record_spikes=True)
    assert early.spike_counts["p"].sum() < base.spike_counts["p"].sum()


def test_input_codings_once_and_spikes():
    net = one_neuron_net(IF(threshold=np.array(0.5)))
    net.coding = "C2"
    net["in"].coding = "once"
    res = simulate(net, np.array([[1.0]]), 4, record_spikes=True)
    assert train(res) == [1, 1, 0, 0] and res.outputs[0, 0] == 2   # C2 decode: v(T), no division
    net = one_neuron_net(IF(threshold=np.array(1.0)))
    net["in"].coding = "spikes"
    res = simulate(net, np.array([[[1.0], [0.0], [1.0], [1.0]]]), 4, record_spikes=True)
    assert train(res) == [1, 0, 1, 1]


def test_float_conv_readout_matches_torch_conv():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2, 3, 3))
    net = Network()
    net.add(Input("in", shape=(2, 5, 5)))
    conv = Conv2d("c", source="in", target="o", weight=w, stride=(2, 2), padding=(1, 1))
    net.add(Population("o", shape=conv.out_shape((2, 5, 5)), neuron=Readout(bias=np.array([1.0, 0.0, -1.0]))))
    net.add(conv)
    net.outputs = ["o"]
    x = rng.normal(size=(4, 2, 5, 5))
    res = simulate(net, x, 3)
    want = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64),
                    stride=2, padding=1).numpy()
    np.testing.assert_allclose(res.outputs, want, rtol=1e-12, atol=1e-12)
    assert res.predictions.shape == (4,)
    assert res.accuracy(res.predictions) == 1.0


def test_operator_nodes_are_rejected_clearly():
    net = one_neuron_net(IF())
    net.add(Operator("ecm", op="expectation_compensation", inputs=("p",), shape=(1,)))
    with pytest.raises(UnsupportedError, match="ecm.*expectation_compensation"):
        simulate(net, np.array([[0.1]]), 2)


def test_bad_input_shape_names_the_input():
    with pytest.raises(ValueError, match="input 'in'.*expected"):
        simulate(one_neuron_net(IF()), np.zeros((2, 3)), 2)


# ------------------------------------------------------------------------------- quantised
def readout_net(weight: float, dp: Datapath | None = None, scale: float = 1.0, min_level: int = -128) -> Network:
    """in (graded int) -(identity w)-> o (integer Readout)."""
    from spikeport.ir import SpikePayload
    net = Network(datapath=dp or Datapath())
    net.add(Input("in", shape=(1,), scale=scale,
                  payload=SpikePayload(kind="graded", bits=8, min_level=min_level, max_level=127)))
    net.add(Population("o", shape=(1,), neuron=Readout()))
    net.add(Identity("id", source="in", target="o", weight=np.array(weight)))
    net.outputs = ["o"]
    return net


def test_input_rounding_is_floor_half_up_and_clipped():
    net = readout_net(1.0, Datapath(act_shift=0))
    x = np.array([[0.5], [-0.5], [2.5], [-2.5], [1.49], [300.0], [-300.0]])
    res = simulate(net, x, 1)
    assert res.output_states["o"][:, 0].tolist() == [1, 0, 3, -2, 1, 127, -128]


def test_current_wraps_once_with_lavas_asymmetric_bounds():
    dp = Datapath()                                  # act_shift 6, 24-bit u, saturating 24-bit v
    x = np.array([[1.0], [-1.0], [2.0], [-2.0]])
    res = simulate(readout_net(2.0 ** 17, dp), x, 1)
    # a<<6 = +2^23 stays 2^23 (Lava wraps only above 2^23), v saturates at 2^23 - 1;
    # -2^23 wraps to +2^23 (Lava wraps at <= -2^23), also saturating;
    # +2^24 -> 0 and -2^24 -> 0 after one wrap.
    assert res.output_states["o"][:, 0].tolist() == [2 ** 23 - 1, 2 ** 23 - 1, 0, 0]
    assert res.layers["o"]["wrap_events"] == 3
    assert res.layers["o"]["saturation_events"] == 2
    assert res.layers["o"]["a_in_16bit_events"] == 4
    ref = reference_simulate(readout_net(2.0 ** 17, dp), x, 1)
    np.testing.assert_array_equal(ref.v["o"], res.output_states["o"])


def test_single_wrap_leaves_far_values_out_of_range_and_int32_wraps_like_lava():
    dp = Datapath(state_bits=32)                     # widen v so the raw u is visible
    x = np.array([[1.0], [2.0]])
    res = simulate(readout_net(2.0 ** 19, dp), x, 1)
    # 2^19 << 6 = 2^25 -> one wrap -> 2^25 - 2^24 = 2^24 (Lava does not wrap again)
    # 2^20 << 6 = 2^26 -> 2^26 - 2^24
    assert res.output_states["o"][:, 0].tolist() == [2 ** 24, 2 ** 26 - 2 ** 24]
    res = simulate(readout_net(2.0 ** 25, dp), np.array([[1.0], [3.0]]), 1)
    # 2^25 << 6 = 2^31 and 3 * 2^25 << 6 = 3 * 2^31 both become -2^31 in Lava's int32 arithmetic,
    # then wrap once (<= -2^23: + 2^24)
    assert res.output_states["o"][:, 0].tolist() == [-2 ** 31 + 2 ** 24] * 2
    assert res.layers["o"]["int32_events"] == 2
    ref = reference_simulate(readout_net(2.0 ** 25, dp), np.array([[1.0], [3.0]]), 1)
    np.testing.assert_array_equal(ref.v["o"], res.output_states["o"])


def test_chunked_path_is_exact_beyond_float64():
    rng = np.random.default_rng(1)
    from spikeport.ir import SpikePayload
    net = Network(datapath=Datapath(act_shift=0, current_bits=64, state_bits=64))
    net.add(Input("in", shape=(40,), payload=SpikePayload(kind="graded", bits=12, min_level=-2048, max_level=2047)))
    net.add(Population("o", shape=(3,), neuron=Readout()))
    w = rng.integers(-2 ** 40, 2 ** 40, size=(3, 40)).astype(np.float64)   # bound ~ 2^57 > 2^53
    net.add(Dense("d", source="in", target="o", weight=w, weight_exp=-3))
    net.outputs = ["o"]
    x = rng.integers(-2048, 2048, size=(5, 40)).astype(np.float64)
    ref = reference_simulate(net, x, 2)
    for path in ("auto", "int64", "chunked"):
        res = simulate(net, x, 2, path=path)
        np.testing.assert_array_equal(res.output_states["o"], ref.v["o"], err_msg=path)
    inexact = simulate(net, x, 2, path="float64")                 # forced float64 is not exact here
    assert not np.array_equal(inexact.output_states["o"], ref.v["o"])


def test_quantised_readout_decodes_with_state_scale():
    net = readout_net(3.0, Datapath(act_shift=0), scale=0.5)
    net["o"].state_scale = np.array(0.25)
    res = simulate(net, np.array([[1.0]]), 4)                    # x_int = 2, v = 4 * 6 = 24
    assert res.output_states["o"][0, 0] == 24
    assert res.outputs[0, 0] == 24 / 4 * 0.25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bit_accurate_equals_cpu():
    from spikeport.ir import SpikePayload
    rng = np.random.default_rng(2)
    net = Network(datapath=Datapath())
    net.add(Input("in", shape=(2, 6, 6), payload=SpikePayload(kind="graded", bits=8, min_level=0, max_level=255),
                  scale=1 / 64))
    conv = Conv2d("c", source="in", target="p", weight=rng.integers(-255, 256, (4, 2, 3, 3)).astype(float), padding=(1, 1))
    net.add(Population("p", shape=(4, 6, 6), neuron=IF(threshold=np.array(20000), leak=100)))
    net.add(conv)
    net.add(Population("o", shape=(5,), neuron=Readout()))
    net.add(Dense("d", source="p", target="o", weight=rng.integers(-255, 256, (5, 144)).astype(float)))
    net.outputs = ["o"]
    x = rng.random((9, 2, 6, 6)) * 4
    cpu = simulate(net, x, 8, record_spikes=True, record_states=True)
    for path in ("auto", "chunked"):
        gpu = simulate(net, x, 8, record_spikes=True, record_states=True, device="cuda", path=path)
        np.testing.assert_array_equal(gpu.spikes["p"], cpu.spikes["p"])
        np.testing.assert_array_equal(gpu.states["o"], cpu.states["o"])
