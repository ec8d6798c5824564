"""Operation counting: hand-counted ACs, MACs, neuron updates and events on tiny networks."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from spikeport.compiler import schedule
from spikeport.ir import IF, Conv2d, Dense, Input, Network, Population, Readout, SpikePayload
from spikeport.simulator import simulate
from spikeport.simulator.opcount import count_ops, fan_in, fan_out

torch.set_num_threads(1)


def conv_net(delay: bool = False) -> Network:
    """in (1,4,4) spikes -conv 3x3 s2 p1 (2 ch, w=1)-> c (2,2,2) IF th .5 reset zero -dense w=1-> o Readout(3).

    c fires at a step exactly when it receives >= 1 input spike that step (zero reset, th 0.5).
    """
    net = Network()
    net.add(Input("in", shape=(1, 4, 4), coding="spikes"))
    net.add(Population("c", shape=(2, 2, 2), neuron=IF(threshold=np.array(0.5), reset="zero")))
    net.add(Conv2d("cv", source="in", target="c", weight=np.ones((2, 1, 3, 3)), stride=(2, 2), padding=(1, 1)))
    net.add(Population("o", shape=(3,), neuron=Readout()))
    net.add(Dense("d", source="c", target="o", weight=np.ones((3, 8))))
    net.outputs = ["o"]
    return schedule(net, 1) if delay else net


def conv_input() -> np.ndarray:
    """Sample 0: step 0 pixel (0,0); step 1 pixels (1,1) and (3,3); step 2 nothing. Sample 1: silent."""
    x = np.zeros((2, 3, 1, 4, 4), dtype=np.float32)
    x[0, 0, 0, 0, 0] = 1
    x[0, 1, 0, 1, 1] = 1
    x[0, 1, 0, 3, 3] = 1
    return x


def test_conv_fan_out_and_fan_in_are_exact_at_borders():
    net = conv_net()
    fo = fan_out(net["cv"], (1, 4, 4), (2, 2, 2)).reshape(4, 4)
    # per axis, input row r is covered by output rows y with 2y-1 <= r <= 2y+1: r=0:1, r=1:2, r=2:1, r=3:1
    cover = np.array([1, 2, 1, 1])
    assert fo.tolist() == (2 * np.outer(cover, cover)).tolist()
    fi = fan_in(net["cv"], (1, 4, 4), (2, 2, 2)).reshape(2, 2, 2)
    assert fi[0].tolist() == [[4, 6], [6, 9]]          # padding excluded
    assert fo.sum() == fi.sum() == 50


def test_hand_counted_binary_network():
    oc = count_ops(conv_net(), conv_input(), 3)
    c, o, inp = oc.layers["c"], oc.layers["o"], oc.layers["in"]
    # ACs into c: step 0 pixel (0,0) fan-out 2; step 1: pixel (1,1) 8 + pixel (3,3) 2
    assert c.acs.tolist() == [2, 10, 0]
    # c fires 2 neurons at step 0 (output (0,0) of both channels) and all 8 at step 1; dense fan-out 3
    assert oc.total("events") == 3 + 10 and c.events.tolist() == [2, 8, 0] and inp.events.tolist() == [1, 2, 0]
    assert o.acs.tolist() == [6, 24, 0]
    assert oc.total("acs") == 42 and oc.total("macs") == 0
    assert c.neuron_updates.tolist() == [16, 16, 16] and o.neuron_updates.tolist() == [6, 6, 6]   # 2 samples
    assert c.active_updates.tolist() == [2, 8, 0] and o.active_updates.tolist() == [3, 3, 0]
    assert oc.samples == 2 and oc.per_sample("acs") == 21.0
    assert oc.projections["cv"].synapses == 50 and oc.projections["cv"].op == "ac"
    assert c.total("weight_reads") == 12 and c.total("accumulator_rmw") == 12 and c.total("state_writes") == 48
    assert oc.total("payload_bits") == 0            # binary events carry no payload


def test_counts_follow_delays_and_start_steps():
    net = conv_net(delay=True)                       # c starts at 1, o at 2, every projection delay 1
    oc = count_ops(net, conv_input(), 3)
    assert oc.steps_run == 5
    assert oc.layers["c"].acs.tolist() == [0, 2, 10, 0, 0]
    assert oc.layers["o"].acs.tolist() == [0, 0, 6, 24, 0]
    assert oc.layers["c"].neuron_updates.tolist() == [0, 16, 16, 16, 0]
    assert oc.total("acs") == 42 and oc.total("events") == 13


def test_reuses_a_recorded_simulation():
    net, x = conv_net(), conv_input()
    res = simulate(net, x, 3, record_spikes=True)
    a, b = count_ops(net, x, 3, result=res), count_ops(net, x, 3, batch_size=1)
    assert a.to_json() == b.to_json()
    with pytest.raises(ValueError, match="record_spikes"):
        count_ops(net, x, 3, result=simulate(net, x, 3))


def analog_net(coding: str = "analog") -> Network:
    net = Network()
    net.add(Input("in", shape=(3,), coding=coding))
    net.add(Population("p", shape=(2,), neuron=IF(threshold=np.array(100.0))))
    net.add(Dense("d", source="in", target="p", weight=np.ones((2, 3))))
    net.add(Population("o", shape=(1,), neuron=Readout()))
    net.add(Dense("d2", source="p", target="o", weight=np.ones((1, 2))))
    net.outputs = ["o"]
    return net


def test_analog_input_costs_fan_in_macs_per_target_per_step():
    x = np.array([[0.1, 0.0, 0.3], [0.0, 0.0, 0.0]])
    oc = count_ops(analog_net(), x, 4)
    assert oc.layers["p"].macs.tolist() == [12, 12, 12, 12]          # 2 samples x 2 targets x 3 synapses
    assert oc.total("macs") == 48 and oc.total("acs") == 0           # p never fires (threshold 100)
    assert oc.layers["in"].events.tolist() == [2, 2, 2, 2]           # non-zero values sent per step
    assert oc.layers["p"].active_updates.tolist() == [4, 4, 4, 4]
    once = count_ops(analog_net("once"), x, 4)
    assert once.layers["p"].macs.tolist() == [12, 0, 0, 0]


def test_analog_conv_macs_exclude_padding():
    net = Network()
    net.add(Input("in", shape=(1, 3, 3)))
    net.add(Population("p", shape=(1, 3, 3), neuron=Readout()))
    net.add(Conv2d("cv", source="in", target="p", weight=np.ones((1, 1, 3, 3)), padding=(1, 1)))
    net.outputs = ["p"]
    oc = count_ops(net, np.ones((1, 1, 3, 3)), 2)
    # true fan-in: corners 4, edges 6, centre 9 -> 4*4 + 4*6 + 9 = 49 per step (not 81)
    assert oc.layers["p"].macs.tolist() == [49, 49]


def graded_net() -> Network:
    net = Network()
    net.add(Input("in", shape=(2,), coding="spikes", payload=SpikePayload("graded", bits=4, min_level=0, max_level=15)))
    net.add(Population("o", shape=(3,), neuron=Readout()))
    net.add(Dense("d", source="in", target="o", weight=np.ones((3, 2))))
    net.outputs = ["o"]
    return net


def test_graded_event_is_one_event_or_macs_in_neurobench_convention():
    x = np.array([[[7, 0], [3, 15]]], dtype=np.float32)      # (N=1, T=2, 2): 3 events
    ours = count_ops(graded_net(), x, 2)
    assert ours.total("events") == 3 and ours.total("payload_bits") == 12
    assert ours.total("acs") == 9 and ours.total("macs") == 0          # 3 events x fan-out 3, whatever the value
    nb = count_ops(graded_net(), x, 2, graded_as="mac")
    assert nb.total("acs") == 0 and nb.total("macs") == 9
    with pytest.raises(ValueError, match="graded_as"):
        count_ops(graded_net(), x, 2, graded_as="flop")


def test_signed_events_count_once_each():
    net = Network()
    net.add(Input("in", shape=(1,), coding="spikes", payload=SpikePayload("signed", bits=2, min_level=-1, max_level=1)))
    net.add(Population("o", shape=(4,), neuron=Readout()))
    net.add(Dense("d", source="in", target="o", weight=np.ones((4, 1))))
    net.outputs = ["o"]
    oc = count_ops(net, np.array([[[1], [-1], [0]]], dtype=np.float32), 3)
    assert oc.layers["o"].acs.tolist() == [4, 4, 0] and oc.total("events") == 2 and oc.total("payload_bits") == 4


def _brute_force_acs(w: np.ndarray, stride, padding, dilation, groups, spikes: np.ndarray, skip_zero: bool) -> int:
    """Loop over every target neuron and kernel tap: one AC per (spike, existing synapse)."""
    cout, cin_g, kh, kw = w.shape
    n, steps, cin, h, wd = spikes.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    total = 0
    for o, y, xx, c, i, j in itertools.product(range(cout), range(ho), range(wo), range(cin_g), range(kh), range(kw)):
        if skip_zero and w[o, c, i, j] == 0:
            continue
        g = o // (cout // groups)
        yi, xi = y * stride[0] - padding[0] + i * dilation[0], xx * stride[1] - padding[1] + j * dilation[1]
        if 0 <= yi < h and 0 <= xi < wd:
            total += int(spikes[:, :, g * cin_g + c, yi, xi].sum())
    return total


@pytest.mark.parametrize("stride,padding,dilation,groups,skip_zero", [
    ((1, 1), (0, 0), (1, 1), 1, False), ((2, 1), (1, 2), (1, 1), 2, False), ((1, 2), (2, 1), (2, 1), 4, True),
    ((3, 3), (1, 1), (1, 2), 1, True)])
def test_conv_acs_equal_brute_force(stride, padding, dilation, groups, skip_zero):
    rng = np.random.default_rng(1)
    w = rng.integers(-2, 3, size=(4, 4 // groups, 3, 2)).astype(np.float64)
    net = Network()
    net.add(Input("in", shape=(4, 7, 6), coding="spikes"))
    proj = Conv2d("cv", source="in", target="o", weight=w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    net.add(Population("o", shape=proj.out_shape((4, 7, 6)), neuron=Readout()))
    net.add(proj)
    net.outputs = ["o"]
    spikes = (rng.random((3, 4, 4, 7, 6)) < 0.3).astype(np.float32)
    oc = count_ops(net, spikes, 4, count_zero_weights=not skip_zero)
    assert oc.total("acs") == _brute_force_acs(w, stride, padding, dilation, groups, spikes, skip_zero)


def test_count_json_has_conventions_and_per_step_rows():
    js = count_ops(conv_net(), conv_input(), 3).to_json()
    assert js["conventions"]["graded_as"] == "ac" and "2 FLOPs" in js["conventions"]["mac_flops"]
    row = {r["name"]: r for r in js["layers"]}["c"]
    assert row["per_step"]["acs"] == [2, 10, 0] and row["total"]["acs"] == 12 and row["per_sample"]["acs"] == 6


def test_ann_equivalent_macs_of_the_ir():
    from spikeport.simulator.opcount import ann_equivalent_macs
    # conv: 8 outputs x 1 x 3 x 3 (padding included) = 72; dense 3 x 8 = 24
    assert ann_equivalent_macs(conv_net()) == 72 + 24
