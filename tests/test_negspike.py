"""NegSpike (methods.md section 6): the IR IF realises the neuron exactly; beta from the emitting
layer; IBT beta = 1; graded integer levels for a non-integer beta; bit-accurate == reference;
variance penalty and the cosine schedule; the digits Leaky-ReLU CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from spikeport.compiler import QuantizationError, quantize
from spikeport.convert.negspike import NegSpikeMethod, cosine_layer_weights, finetune_variance_penalty, variance_penalty
from spikeport.ir import IF, Datapath, Dense, Input, Network, Population, Readout, SpikePayload, load, save
from spikeport.ir.neurons_extra import GradedSignedIF
from spikeport.simulator import simulate
from spikeport.simulator.kernels_extra import FixedGradedSignedIF
from spikeport.simulator.neurons import FloatIF
from spikeport.simulator.reference import reference_simulate

torch.set_num_threads(1)


def _negspike_if(p_th=1.0, n_th=2.0, n=1) -> IF:
    return IF(threshold=np.asarray(p_th), v_init=np.asarray(0.0), reset="subtract", compare=">",
              neg_threshold=np.asarray(n_th), neg_reset=np.asarray(n_th))


# ----------------------------------------------------------------------------- per-step semantics
def test_hand_worked_steps_with_the_ir_if():
    """P_th = 1, N_th = 2, v(0) = 0 (dyadic values: exact in float). I: .625 -> v .625; .625 -> 1.25 > 1:
    p, v .25; -1.5 -> -1.25 (no); -1.5 -> -2.75 < -2: n, v -.75; -1.5 -> -2.25: n, v -.25;
    1.25 -> 1.0 (strict: no spike); -3.0 -> -2.0 (strict: no spike)."""
    pop = Population("p", shape=(1,), neuron=_negspike_if(), payload=SpikePayload(kind="signed", bits=2, min_level=-1,
                                                                                   max_level=1, neg_value=0.2))
    k = FloatIF(pop, 1, "cpu", None, None)
    out = [int(k.step(torch.tensor([[c]], dtype=torch.float64)).item()) for c in (0.625, 0.625, -1.5, -1.5, -1.5, 1.25, -3.0)]
    assert out == [0, 1, 0, -1, -1, 0, 0]
    assert k.v.item() == -2.0
    # emitted values: +1 and -beta
    np.testing.assert_allclose(k.value(torch.tensor([[1, 0, -1]], dtype=torch.int8)).numpy(), [[1.0, 0.0, -0.2]])


def test_beta_of_the_emitting_layer_reaches_the_next_layer():
    """x -> A (NegSpike, neg_value beta) -> B readout: v_B(T) = w (#p - beta #n)."""
    beta = 0.3
    net = Network(coding="C1")
    net.add(Input("x", shape=(2,)))
    net.add(Population("a", shape=(2,), neuron=_negspike_if(1.0, 1.0),
                       payload=SpikePayload(kind="graded", bits=16, min_level=-1, max_level=1, neg_value=beta)))
    net.add(Dense("xa", source="x", target="a", weight=np.eye(2)))
    net.add(Population("b", shape=(1,), neuron=Readout()))
    net.add(Dense("ab", source="a", target="b", weight=np.array([[2.0, 2.0]])))
    net.outputs = ["b"]
    x = np.array([[0.55, 0.0], [0.0, -0.55], [0.55, -0.55]])
    res = simulate(net, x, 8, record_spikes=True)
    pos = (res.spikes["a"] > 0).sum(axis=1)
    neg = (res.spikes["a"] < 0).sum(axis=1)
    assert pos[0, 0] == 4 and neg[1, 1] == 4           # 0.55 * 8 = 4.4 -> 4 spikes (strict, v(0) = 0)
    np.testing.assert_allclose(res.outputs[:, 0] * 8, 2.0 * (pos.sum(1) - beta * neg.sum(1)))


# ----------------------------------------------------------------------------- the conversion
@pytest.fixture(scope="module")
def leaky(digits):
    from spikeport.frontend import load_model
    from spikeport.models.digits import digits_leaky_cnn, train_digits_model

    x_train, y_train, _, _ = digits
    model = train_digits_model(digits_leaky_cnn(), x_train, y_train, epochs=10, seed=0)
    return model, load_model(model, input_shape=(1, 8, 8))


@pytest.mark.parametrize("setting", ["ibt", "symmetric", "calibrated", "positive_only"])
def test_settings_set_thresholds_and_beta(leaky, digits, setting):
    from spikeport.convert import convert

    net = convert(leaky[1], digits[0][:200], method="negspike", setting=setting)
    pops = [p for p in net.populations() if isinstance(p.neuron, IF)]
    assert len(pops) == 2
    for p in pops:
        m, pl = p.neuron, p.payload
        assert m.compare == ">" and float(m.v_init) == 0.0 and m.reset == "subtract"
        p_th = float(m.threshold)
        if setting == "positive_only":
            assert m.neg_threshold is None and pl.kind == "binary"
            continue
        n_th = float(m.neg_threshold)
        assert float(m.neg_reset) == n_th
        beta = pl.neg_value
        assert beta == pytest.approx(0.1 * n_th / p_th, rel=1e-12)
        if setting == "ibt":
            assert n_th == pytest.approx(p_th / 0.1) and beta == 1.0 and pl.kind == "signed"
        if setting == "symmetric":
            assert n_th == p_th and beta == pytest.approx(0.1) and pl.kind == "graded"


def test_quantised_graded_beta_and_bit_accuracy(leaky, digits):
    """Symmetric setting (beta = 0.1) on Loihi 2: +1 -> P, -1 -> -Nq with Nq/P = beta; bit-accurate ==
    integer reference; IBT keeps IF with neg_value 1."""
    from spikeport.convert import convert

    x = digits[2][:3]
    net = convert(leaky[1], digits[0][:200], method="negspike", setting="symmetric")
    q, _ = quantize(net, "loihi2")
    info = q.meta["graded_negative_events"]
    for name, g in info.items():
        assert isinstance(q[name].neuron, GradedSignedIF)
        assert (q[name].payload.max_level, q[name].payload.min_level) == (g["pos_level"], -g["neg_level"])
        assert g["neg_level"] / g["pos_level"] == pytest.approx(0.1, rel=1 / 128)
    ref = reference_simulate(q, x, 3)
    res = simulate(q, x, 3, record_spikes=True, record_states=True)
    for name, train in ref.spikes.items():
        np.testing.assert_array_equal(res.spikes[name], train, err_msg=name)
    for name, v in ref.v.items():
        np.testing.assert_array_equal(res.states[name], v, err_msg=name)
    q_ibt, _ = quantize(convert(leaky[1], digits[0][:200], method="negspike", setting="ibt"), "loihi2")
    assert "graded_negative_events" not in q_ibt.meta
    assert all(type(p.neuron) is IF for p in q_ibt.populations() if p.name in info)


def test_non_integer_beta_on_a_signed_payload_is_rejected(tmp_path):
    net = Network(coding="C1")
    net.add(Input("x", shape=(2,)))
    net.add(Population("a", shape=(2,), neuron=_negspike_if(),
                       payload=SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1, neg_value=0.1)))
    net.add(Dense("xa", source="x", target="a", weight=np.eye(2)))
    net.add(Population("b", shape=(1,), neuron=Readout()))
    net.add(Dense("ab", source="a", target="b", weight=np.ones((1, 2))))
    net.outputs = ["b"]
    net.meta["input_range"] = [-1.0, 1.0]
    with pytest.raises(QuantizationError, match=r"'a': payload neg_value = 0.1 must be an integer.*graded payload"):
        quantize(net, "loihi2")
    net["a"].payload = SpikePayload(kind="graded", bits=16, min_level=-1, max_level=1, neg_value=0.1)
    with pytest.raises(QuantizationError, match=r"payload bits = 16 exceed"):
        quantize(net, "loihi1")
    q, _ = quantize(net, "loihi2")
    assert q.meta["graded_negative_events"]["a"]["pos_level"] == 10
    back = load(save(q, tmp_path / "neg.h5"))                       # HDF5 round trip of GradedSignedIF
    assert isinstance(back["a"].neuron, GradedSignedIF) and back["a"].payload.min_level == -1
    x = np.random.default_rng(0).uniform(-1, 1, (8, 2))
    np.testing.assert_array_equal(simulate(back, x, 6).outputs, simulate(q, x, 6).outputs)


def test_options_are_checked():
    with pytest.raises(ValueError, match="setting 'x'"):
        NegSpikeMethod(setting="x")
    with pytest.raises(ValueError, match="channelwise"):
        NegSpikeMethod(setting="calibrated", channelwise=True)


# ----------------------------------------------------------------------------- graded signed IF kernel
@st.composite
def graded_networks(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    T = draw(st.integers(1, 6))
    dp = draw(st.sampled_from([Datapath(), Datapath(state_bits=12, current_bits=11, act_shift=2)]))
    net = Network(coding="C1", datapath=dp)
    n_in, n1 = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    net.add(Input("in", shape=(n_in,), scale=0.25, payload=SpikePayload(kind="graded", bits=8, min_level=-128, max_level=127)))
    pos, neg = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    m = GradedSignedIF(threshold=np.array(int(rng.integers(1, 300))), bias=rng.integers(-20, 21, n1),
                       v_init=rng.integers(-50, 50, n1), compare=draw(st.sampled_from([">", ">="])),
                       reset=draw(st.sampled_from(["subtract", "zero"])), leak=draw(st.sampled_from([0, 300])),
                       neg_threshold=rng.integers(0, 300, n1), neg_reset=rng.integers(1, 300, n1))
    net.add(Population("p", shape=(n1,), neuron=m, t_start=int(draw(st.integers(0, 2))),
                       payload=SpikePayload(kind="graded", bits=8, min_level=-neg, max_level=pos)))
    net.add(Dense("a", source="in", target="p", weight=rng.integers(-255, 256, (n1, n_in)).astype(float),
                  delay=int(draw(st.integers(0, 2)))))
    net.add(Population("out", shape=(2,), neuron=Readout(bias=rng.integers(-5, 6, 2))))
    net.add(Dense("b", source="p", target="out", weight=rng.integers(-255, 256, (2, n1)).astype(float),
                  delay=int(draw(st.integers(0, 2))), weight_exp=int(draw(st.integers(-3, 1)))))
    net.outputs = ["out"]
    return net, rng.normal(0, 8, (4, n_in)), T


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graded_networks())
def test_bit_accurate_graded_signed_if_equals_reference(case):
    net, x, T = case
    ref = reference_simulate(net, x, T)
    res = simulate(net, x, T, batch_size=3, record_spikes=True, record_states=True)
    for name, train in ref.spikes.items():
        np.testing.assert_array_equal(res.spikes[name], train, err_msg=name)
    for name, v in ref.v.items():
        np.testing.assert_array_equal(res.states[name], v, err_msg=name)
        assert res.layers[name]["saturation_events"] == ref.saturation[name]
        assert res.layers[name]["wrap_events"] == ref.wrap[name]


def test_graded_kernel_values():
    pop = Population("p", shape=(2,), neuron=GradedSignedIF(threshold=np.array(4), neg_threshold=np.array(4), neg_reset=np.array(4)),
                     payload=SpikePayload(kind="graded", bits=8, min_level=-3, max_level=10))
    k = FixedGradedSignedIF(pop, 1, "cpu", Datapath(act_shift=0), 100)
    s = k.step(torch.tensor([[9, -9]]))
    assert s.tolist() == [[1, -1]] and k.value(s).tolist() == [[10, -3]]


# ----------------------------------------------------------------------------- threshold optimisation
def test_variance_penalty_formula_and_finetune_runs():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.LeakyReLU(0.1), nn.Flatten(),
                          nn.Linear(2 * 64, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, -2.0]))
        model[1].bias.copy_(torch.tensor([0.5, 1.0]))
    eps = 1e-3
    want = ((1 / (0.5 + eps)) ** 3 + (2 / (1 + eps)) ** 3) / 2
    assert float(variance_penalty(model, eps).detach()) == pytest.approx(want, rel=1e-6)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 32)
    before = float(variance_penalty(model, eps).detach())
    out = finetune_variance_penalty(model, x, y, epochs=3, lr=1e-2)
    assert not out.training and float(variance_penalty(out, eps).detach()) < before
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        variance_penalty(nn.Linear(2, 2))


def test_cosine_schedule_moves_attention_to_deep_layers():
    w0, w1, wm = cosine_layer_weights(5, 0.0), cosine_layer_weights(5, 1.0), cosine_layer_weights(5, 0.6)
    assert np.all(np.diff(w0) < 0) and np.all(np.diff(w1) > 0) and int(np.argmax(wm)) == 2
    assert w0.sum() == pytest.approx(1.0) and np.all(w1 > 0)


# ----------------------------------------------------------------------------- digits accuracy
@pytest.mark.slow
def test_digits_negspike_within_two_points_at_t16(leaky, digits):
    from spikeport.convert import convert

    model, ann = leaky
    _, _, x_test, y_test = digits
    with torch.no_grad():
        ann_acc = float((model(torch.as_tensor(x_test)).argmax(1).numpy() == y_test).mean())
    net = convert(ann, digits[0][:500], method="negspike", setting="symmetric")
    q, _ = quantize(net, "loihi2")
    for n in (net, q):
        acc = float((simulate(n, x_test, 16).predictions == y_test).mean())
        assert acc >= ann_acc - 0.02, (acc, ann_acc)


def test_fixed_graded_kernel_equals_float_if_on_integers():
    """Integer thresholds and currents: the bit-accurate GradedSignedIF fires exactly as the float IR IF
    (NegSpike rules, strict both ways) and its event values are P x the float values (beta = Nq/P)."""
    rng = np.random.default_rng(3)
    n, T, B, P, Nq = 30, 15, 2, 10, 1
    th, nth = rng.integers(1, 60, n), rng.integers(1, 60, n)
    fixed_pop = Population("p", shape=(n,), neuron=GradedSignedIF(threshold=th, neg_threshold=nth, neg_reset=nth),
                           payload=SpikePayload(kind="graded", bits=8, min_level=-Nq, max_level=P))
    float_pop = Population("p", shape=(n,), neuron=IF(threshold=th.astype(float), v_init=np.asarray(0.0), compare=">",
                                                      neg_threshold=nth.astype(float), neg_reset=nth.astype(float)),
                           payload=SpikePayload(kind="graded", bits=16, min_level=-1, max_level=1, neg_value=Nq / P))
    cur = rng.integers(-80, 80, size=(T, B, n))
    kx = FixedGradedSignedIF(fixed_pop, B, "cpu", Datapath(act_shift=0), int(np.abs(cur).max()))
    kf = FloatIF(float_pop, B, "cpu", None, None)
    for c in cur:
        sx = kx.step(torch.as_tensor(c))
        sf = kf.step(torch.as_tensor(c, dtype=torch.float64))
        np.testing.assert_array_equal(sx.numpy(), sf.numpy())
        np.testing.assert_allclose(kx.value(sx).numpy(), P * kf.value(sf).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(kx.v.numpy(), kf.v.numpy())
    assert (kx.neg.sum() > 0) and (kx.pos.sum() > 0)


# ----------------------------------------------------------------------------- trainable clip layers
def test_clip_bounds_module_ties_and_clamps():
    from spikeport.convert.negspike import ClipBounds

    a = torch.tensor([-5.0, -0.1, 0.0, 0.5, 9.0])
    assert ClipBounds(-0.2, 1.0, 0.1, "free")(a).tolist() == pytest.approx([-0.2, -0.1, 0.0, 0.5, 1.0])
    assert ClipBounds(0.0, 2.0, 0.1, "symmetric").bounds() == pytest.approx((-0.2, 2.0))   # N_th = P_th
    assert ClipBounds(0.0, 2.0, 0.1, "ibt").bounds() == (-2.0, 2.0)                        # N_th = P_th/alpha
    c = ClipBounds(-1.0, 2.0, 0.1, "free")
    assert float(c.penalty().detach()) == 5.0
    (c(a * 10 + 0.05).sum()).backward()     # each clipped value pulls its bound outwards: 2 above, 1 below
    assert c.theta_p.grad.item() == 2.0 and c.theta_n_free.grad.item() == 1.0
    with pytest.raises(ValueError, match="tie 'x'"):
        ClipBounds(-1.0, 1.0, 0.1, "x")


def test_clip_training_learns_bounds_and_l2_shrinks_them(leaky, digits):
    from spikeport.convert import convert
    from spikeport.convert.negspike import insert_clip_layers, train_clip_thresholds

    ann = leaky[1]
    x, y = digits[0][:256], digits[1][:256]
    _, init = insert_clip_layers(ann, x)
    names = [n.name for n in ann.graph.activations()]
    assert list(init) == names
    free = train_clip_thresholds(ann, x, y, epochs=3, l2=0.0)
    tight = train_clip_thresholds(ann, x, y, epochs=3, l2=1e-2)
    assert set(tight.bounds) == set(names)
    for name in names:
        n0, p0 = init[name].bounds()
        n_free, p_free = free.bounds[name]
        n_l2, p_l2 = tight.bounds[name]
        assert (n_free, p_free) != (n0, p0)                          # the bounds are learned
        assert p_l2 < p_free and abs(n_l2) < abs(n_free)              # the L2 penalty shrinks both
        assert n_l2 < 0.0 < p_l2
    assert tight.history[-1]["penalty"] < sum(c.penalty().item() for c in init.values())
    for p in ann.module.parameters():                                 # the input ANN is untouched
        assert p.grad is None
    net = convert(tight.ann, x, method="negspike", setting="calibrated", thresholds="clip", clip_bounds=tight.bounds)
    for name in names:
        pop = net[net.meta["populations"][name]]
        theta_n, theta_p = tight.bounds[name]
        assert float(pop.neuron.threshold) == theta_p
        assert float(pop.neuron.neg_threshold) == pytest.approx(-theta_n / 0.1, rel=1e-12)
        assert pop.payload.neg_value == pytest.approx(-theta_n / theta_p, rel=1e-12)   # beta = alpha N_th / P_th
    sym = train_clip_thresholds(ann, x, y, epochs=1, tie="symmetric")
    net = convert(sym.ann, x, method="negspike", setting="symmetric", thresholds="clip", clip_bounds=sym.bounds)
    assert all(p.payload.neg_value == pytest.approx(0.1) for p in net.populations() if isinstance(p.neuron, IF))
    with pytest.raises(Exception, match="setting 'symmetric' fixes N_th"):
        convert(tight.ann, x, method="negspike", setting="symmetric", thresholds="clip", clip_bounds=tight.bounds)


def test_clip_options_are_checked(leaky, digits):
    from spikeport.convert import ConversionError, convert

    x = digits[0][:64]
    names = [n.name for n in leaky[1].graph.activations()]
    good = {n: (-0.5, 2.0) for n in names}
    with pytest.raises(ConversionError, match=r"unknown activation node\(s\) \['nope'\].*miss \['" + names[1]):
        convert(leaky[1], x, method="negspike", thresholds="clip", clip_bounds={names[0]: (-0.5, 2.0), "nope": (-1, 1)})
    with pytest.raises(ValueError, match="needs clip_bounds"):
        NegSpikeMethod(thresholds="clip")
    with pytest.raises(ValueError, match="clip_bounds given but thresholds is 'percentile'"):
        NegSpikeMethod(clip_bounds=good)
    with pytest.raises(ValueError, match=r"must satisfy theta_N <= 0 < theta_P"):
        NegSpikeMethod(thresholds="clip", clip_bounds={names[0]: (0.5, 2.0)})
    with pytest.raises(ValueError, match="channelwise needs thresholds='percentile'"):
        NegSpikeMethod(thresholds="clip", clip_bounds=good, channelwise=True)
