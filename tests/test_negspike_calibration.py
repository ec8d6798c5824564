"""NegSpike joint layer calibration: the differentiable SNN reproduces the float simulator exactly
(spike counts, readout) and passes surrogate gradients; the cosine layer weights and slope schedule;
joint calibration of a leaky digits CNN lowers its KL loss and leaves the input network untouched."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikeport.convert.negspike import cosine_layer_weights
from spikeport.convert.negspike_calibration import (DifferentiableSNN, calibration_loss, joint_calibrate, layer_kl,
                                                    slope_at)
from spikeport.ir.nodes import expand_channel
from spikeport.ir import IF, Conv2d, Dense, Identity, Input, Network, Population, Readout, SpikePayload
from spikeport.simulator import simulate

torch.set_num_threads(1)


def _random_net(seed: int) -> Network:
    """input (2,6,6) -conv-> A (NegSpike IF, beta 0.3) -conv + identity-> B (unsigned, '>=', zero reset, leak)
    ; A and B -dense-> readout. Covers every projection kind, two incoming projections, both compares."""
    rng = np.random.default_rng(seed)
    net = Network(coding="C1")
    net.add(Input("x", shape=(2, 6, 6)))
    net.add(Population("a", shape=(3, 6, 6), source="a",
                       neuron=IF(threshold=rng.uniform(0.5, 1.5, 3), bias=rng.normal(0, 0.1, 3), v_init=np.asarray(0.0),
                                 compare=">", neg_threshold=rng.uniform(0.5, 2.0, 3), neg_reset=rng.uniform(0.5, 2.0, 3)),
                       payload=SpikePayload(kind="graded", bits=16, min_level=-1, max_level=1, neg_value=0.3),
                       decode_scale=rng.uniform(0.5, 2, 3)))
    net.add(Conv2d("xa", source="x", target="a", weight=rng.normal(0, 0.6, (3, 2, 3, 3)), padding=(1, 1)))
    net.add(Population("b", shape=(3, 6, 6), source="b",
                       neuron=IF(threshold=np.asarray(0.8), bias=rng.normal(0, 0.1, (3, 6, 6)),
                                 v_init=rng.uniform(0, 0.4, 3), compare=">=", reset="zero", leak=0.1)))
    net.add(Conv2d("ab", source="a", target="b", weight=rng.normal(0, 0.5, (3, 3, 3, 3)), padding=(1, 1)))
    net.add(Identity("ab_skip", source="a", target="b", weight=rng.normal(0, 0.5, 3)))
    net.add(Population("out", shape=(4,), neuron=Readout(bias=rng.normal(0, 0.1, 4))))
    net.add(Dense("bo", source="b", target="out", weight=rng.normal(0, 0.2, (4, 108))))
    net.add(Dense("ao", source="a", target="out", weight=rng.normal(0, 0.2, (4, 108))))
    net.outputs = ["out"]
    return net


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_equals_the_float_simulator_exactly(seed):
    net = _random_net(seed)
    x = np.random.default_rng(100 + seed).normal(0, 1.0, (5, 2, 6, 6))
    T = 9
    res = simulate(net, x, T)
    run = DifferentiableSNN(net)(torch.as_tensor(x), T)
    assert set(run.counts) == {"a", "b"}
    for name, c in run.counts.items():
        np.testing.assert_array_equal(c.numpy().reshape(res.spike_counts[name].shape), res.spike_counts[name], err_msg=name)
        np.testing.assert_allclose(run.rates[name].detach().numpy(), res.activations[name], rtol=0, atol=1e-12)
    assert res.spike_counts["a"].sum() > 0 and res.spike_counts["b"].sum() > 0
    np.testing.assert_array_equal(run.rates["out"].detach().numpy(), res.outputs)   # bit for bit


def test_surrogate_gradients_reach_every_parameter_and_round_trip():
    net = _random_net(0)
    snn = DifferentiableSNN(net)
    run = snn(torch.as_tensor(np.random.default_rng(0).normal(0, 1, (4, 2, 6, 6))), 6, kappa=6.7)
    (run.rates["out"] ** 2).sum().backward()
    for key, p in list(snn.weights.items()) + list(snn.biases.items()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key
    back = snn.to_network()                       # untouched parameters give the same network back
    for proj in net.projections():
        want = expand_channel(proj.weight, net.shape_of(proj.target)) if isinstance(proj, Identity) else proj.weight
        np.testing.assert_array_equal(want, back[proj.name].weight)
    x = np.random.default_rng(5).normal(0, 1, (3, 2, 6, 6))
    np.testing.assert_array_equal(simulate(back, x, 5).outputs, simulate(net, x, 5).outputs)


def test_unsupported_networks_are_rejected():
    net = _random_net(0)
    net["ab"].delay = 1
    with pytest.raises(ValueError, match="projection 'ab' has delay 1"):
        DifferentiableSNN(net)
    net = _random_net(0)
    net.coding = "C2"
    with pytest.raises(ValueError, match="coding 'C2'"):
        DifferentiableSNN(net)


def test_cosine_weights_follow_the_formula_and_slopes_the_schedule():
    for L in (1, 3, 7):
        for p in (0.0, 0.25, 0.5, 1.0):
            phi = np.array([math.cos(math.pi / 2 * (l / L - p)) for l in range(1, L + 1)])
            np.testing.assert_allclose(cosine_layer_weights(L, p), phi / phi.sum(), rtol=1e-14)
    assert [slope_at(p) for p in (0.0, 0.3, 0.34, 0.66, 0.67, 1.0)] == [6.7, 6.7, 10.0, 10.0, 15.0, 15.0]


def test_layer_kl():
    a = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    assert float(layer_kl(a, a, 0.5)) == 0.0
    assert float(layer_kl(a, a + 7.0, 0.5)) == pytest.approx(0.0, abs=1e-12)   # shift-invariant by design
    assert float(layer_kl(a, torch.zeros_like(a), 0.5)) > 0.0


@pytest.fixture(scope="module")
def leaky_net(digits):
    from spikeport.convert import convert
    from spikeport.frontend import load_model
    from spikeport.models.digits import digits_leaky_cnn, train_digits_model

    x_train, y_train, _, _ = digits
    model = train_digits_model(digits_leaky_cnn(slope=0.5), x_train, y_train, epochs=10, seed=0)
    ann = load_model(model, input_shape=(1, 8, 8))
    return ann, convert(ann, x_train[:256], method="negspike", setting="symmetric")


def test_joint_calibration_lowers_the_loss_and_keeps_the_input(leaky_net, digits):
    ann, net = leaky_net
    x = digits[0][:192]
    keep = net.copy()
    T = 4
    before = calibration_loss(net, ann, x, T)
    cal = joint_calibrate(net, ann, x, T, epochs=3, lr=1e-2, batch_size=64)
    info = cal.meta["joint_calibration"]
    assert info["loss_before"] == pytest.approx(before.total, rel=1e-12)
    assert info["loss_after"] < 0.8 * info["loss_before"]
    assert calibration_loss(cal, ann, x, T).total == pytest.approx(info["loss_after"], rel=1e-12)
    for proj in net.projections():            # input network unchanged, output changed
        np.testing.assert_array_equal(proj.weight, keep[proj.name].weight)
    assert any(not np.array_equal(p.weight, net[p.name].weight) for p in cal.projections())
    for pop in cal.populations():             # thresholds (hence beta, decode) are not tuned
        if isinstance(pop.neuron, IF):
            assert np.array_equal(pop.neuron.threshold, net[pop.name].neuron.threshold)
            assert pop.payload.neg_value == net[pop.name].payload.neg_value
    x_test, y_test = digits[2][:100], digits[3][:100]
    acc = float((simulate(cal, x_test, T).predictions == y_test).mean())
    assert acc > 0.5                           # still a working classifier (accuracy gains: see the report)
    with pytest.raises(ValueError, match="epochs 0"):
        joint_calibrate(net, ann, x, T, epochs=0)
