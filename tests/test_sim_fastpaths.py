"""The simulator's fast paths change no bit: exact float32 state and event-driven Dense sums.

Every case runs the same network on the fast path (``path="auto"``: float32 state where
``neurons._float_bound_ok`` proves it; ``event_driven`` "on"/"auto") and on the integer paths
(``path="float32"`` keeps int32 state, ``"int64"``), and against the plain numpy reference;
spike trains, counts, final states and every overflow counter must be equal.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport.ir import IF, Datapath, Dense, Input, Network, Population, Readout, SpikePayload
from spikeport.simulator import simulate
from spikeport.simulator.engine import build_plan
from spikeport.simulator.event_driven import sparse_sum
from spikeport.simulator.reference import reference_simulate

torch.set_num_threads(1)
STATS = ("saturation_events", "saturation_high", "wrap_events", "a_in_16bit_events", "int32_events", "spikes")


def _mlp(dp: Datapath, sizes=(40, 24, 16, 4), wmax=120, positive=False, neuron_kw=None, payload=None,
         weight_exp=(0, -2, 1), seed=0, signed_hidden=False) -> Network:
    rng = np.random.default_rng(seed)
    net = Network(datapath=dp)
    net.add(Input("in", shape=(sizes[0],), coding="spikes", payload=payload or SpikePayload()))
    prev = "in"
    for i, n in enumerate(sizes[1:]):
        name = f"l{i + 1}"
        last = i == len(sizes) - 2
        kw = dict(threshold=rng.integers(2000, 9000, size=n), bias=rng.integers(-40, 40, size=n),
                  v_init=rng.integers(-500, 500, size=n))
        kw.update(neuron_kw or {})
        pl = SpikePayload()
        if signed_hidden and not last:
            kw.update(neg_threshold=rng.integers(1000, 5000, size=n), neg_reset=rng.integers(500, 3000, size=n))
            pl = SpikePayload(kind="graded", bits=3, min_level=-1, max_level=1, neg_value=2)
        neuron = Readout(bias=rng.integers(-5, 6, n)) if last else IF(**kw)
        net.add(Population(name, shape=(n,), neuron=neuron, payload=pl if not last else SpikePayload()))
        lo = 0 if positive else -wmax
        w = rng.integers(lo, wmax + 1, size=(n, sizes[i]))
        net.add(Dense(f"w{i + 1}", source=prev, target=name, weight=w.astype(np.float64), weight_exp=weight_exp[i]))
        prev = name
    net.outputs = [prev]
    return net


def _spikes(n, T, size, rate, seed=1, levels=(0, 1)):
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array(levels[1:]), size=(n, T, size))
    return np.where(rng.random((n, T, size)) < rate, x, 0).astype(np.int8)


def _same(a, b, net):
    for name in b.spikes:
        np.testing.assert_array_equal(a.spikes[name], b.spikes[name], err_msg=name)
    for name in b.states:
        np.testing.assert_array_equal(a.states[name], b.states[name], err_msg=name)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for name in b.layers:
        for key in STATS:
            assert a.layers[name][key] == b.layers[name][key], (name, key)


def _ref_same(res, ref):
    for name, train in ref.spikes.items():
        np.testing.assert_array_equal(res.spikes[name], train, err_msg=name)
    for name, v in ref.v.items():
        np.testing.assert_array_equal(res.states[name], v, err_msg=name)
        assert res.layers[name]["saturation_events"] == ref.saturation[name], name
        assert res.layers[name]["wrap_events"] == ref.wrap[name], name


CASES = {
    "subtract": (Datapath(), {}, dict()),
    "zero-reset-strict": (Datapath(), dict(reset="zero", compare=">"), dict()),
    "signed-graded": (Datapath(), {}, dict(signed_hidden=True)),
    "state-wrap": (Datapath(state_overflow="wrap"), {}, dict()),
    "uniform-threshold": (Datapath(), dict(threshold=np.array(3000)), dict()),
    # a_in beyond int16 and v beyond the 24-bit state: both counters must fire
    "overflow-counters": (Datapath(), dict(threshold=np.array(100_000)),
                          dict(wmax=3000, positive=True, weight_exp=(0, 0, 0))),
    "overflow-wrap": (Datapath(state_overflow="wrap"), dict(threshold=np.array(100_000)),
                      dict(wmax=3000, positive=True, weight_exp=(0, 0, 0))),
    # |v + u| past 2^24 (the float64 step) and the 24-bit current wrap / clip on float32 u
    "past-2^24": (Datapath(), dict(threshold=np.array(100_000)), dict(wmax=6000, positive=True, weight_exp=(0, 0, 0))),
    "current-wrap": (Datapath(current_bits=18), {}, dict(wmax=3000, weight_exp=(0, 0, 0))),
    "current-clip": (Datapath(current_bits=18, current_overflow="saturate"), {}, dict(wmax=3000, weight_exp=(0, 0, 0))),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 5])
def test_float_state_and_event_driven_equal_integer_paths_and_reference(case, batch):
    dp, nkw, mkw = CASES[case]
    net = _mlp(dp, neuron_kw=nkw, **mkw)
    T = 12
    x = _spikes(5, T, 40, 0.8 if "overflow" in case or "2^24" in case else 0.15)
    plan = build_plan(net, T, "cpu")
    assert plan.float_state == {"l1", "l2", "l3"}, plan.float_state      # the fast path is taken
    assert all(pk.events is not None for entries in plan.incoming.values() for pk, _, _ in entries)
    kw = dict(batch_size=batch, record_spikes=True, record_states=True)
    base = simulate(net, x, T, path="int64", event_driven="off", **kw)
    for path, ev in (("auto", "off"), ("auto", "on"), ("auto", "auto"), ("float32", "on"), ("float64", "on")):
        _same(simulate(net, x, T, path=path, event_driven=ev, **kw), base, net)
    _ref_same(base, reference_simulate(net, x, T))
    if "overflow" in case or "2^24" in case:
        assert base.layers["l1"]["a_in_16bit_events"] > 0 and base.layers["l1"]["saturation_events"] > 0
    if "current" in case:
        assert base.layers["l1"]["wrap_events"] > 0


def test_graded_signed_input_spikes_use_event_values():
    """Input payload in [-2, 3]: the event-driven sum multiplies each row by its event value."""
    pl = SpikePayload(kind="graded", bits=3, min_level=-2, max_level=3)
    net = _mlp(Datapath(), payload=pl)
    x = _spikes(4, 10, 40, 0.2, levels=(0, -2, -1, 1, 2, 3))
    assert (x < 0).any() and (x > 1).any()
    kw = dict(batch_size=2, record_spikes=True, record_states=True)
    _same(simulate(net, x, 10, event_driven="on", **kw), simulate(net, x, 10, path="int64", event_driven="off", **kw), net)


def test_leaky_or_unbounded_populations_keep_the_integer_state():
    net = _mlp(Datapath(), neuron_kw=dict(leak=300))                 # decay needs products beyond 2^24
    assert build_plan(net, 5, "cpu").float_state == {"l3"}
    net = _mlp(Datapath(act_shift=16), wmax=3000, weight_exp=(0, 0, 0))  # u may wrap int32
    assert not {"l1", "l2"} & build_plan(net, 5, "cpu").float_state
    x = _spikes(3, 5, 40, 0.3)
    kw = dict(batch_size=3, record_spikes=True, record_states=True)
    _same(simulate(net, x, 5, **kw), simulate(net, x, 5, path="int64", **kw), net)


@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("rate", [0.0, 0.01, 0.2, 1.0])
def test_sparse_sum_equals_dense_gemm(batch, rate):
    rng = np.random.default_rng(3)
    w = torch.as_tensor(rng.integers(-128, 128, size=(300, 70)).astype(np.float32))
    x = torch.as_tensor((rng.random((batch, 300)) < rate).astype(np.float32))
    assert torch.equal(sparse_sum(x, w, True), x @ w)
    xg = x * torch.as_tensor(rng.integers(-3, 4, size=(batch, 300)).astype(np.float32))
    assert torch.equal(sparse_sum(xg, w, False), xg @ w)


def test_float_simulation_keeps_the_dense_gemm():
    net = _mlp(Datapath())
    net.datapath = None
    plan = build_plan(net, 4, "cpu")
    assert plan.float_state == set()
    assert all(pk.events is None for entries in plan.incoming.values() for pk, _, _ in entries)


def test_bad_event_driven_mode_is_a_clear_error():
    net = _mlp(Datapath())
    with pytest.raises(ValueError, match="event_driven must be one of"):
        simulate(net, _spikes(1, 2, 40, 0.1), 2, event_driven="sometimes")


def test_wrapped_state_interval_lets_the_next_wrap_be_seen():
    """Regression (hypothesis, test_pmsm): after a two's-complement state wrap the value may land
    anywhere in the range, so the float32 state's tracked interval must be re-measured; a clipped
    interval skipped the second wrap of a readout drifting up by its bias."""
    dp = Datapath(state_bits=10, state_overflow="wrap")
    net = Network(datapath=dp)
    net.add(Input("in", shape=(1,), coding="spikes", payload=SpikePayload()))
    net.add(Population("out", shape=(1,), neuron=Readout(bias=np.array([50]))))
    net.add(Dense("w", source="in", target="out", weight=np.array([[-10.0]])))
    net.outputs = ["out"]
    x = np.zeros((1, 3, 1))
    x[0, 0, 0] = 1             # v = 50 - (10 << 6) = -590 wraps to 434; +50 +50 = 534 wraps to -490
    assert "out" in build_plan(net, 3, "cpu").float_state
    ref = reference_simulate(net, x, 3)
    for path in ("auto", "int64"):       # events "on": idle steps bound |u| by 0, so no pass runs
        res = simulate(net, x, 3, path=path, record_states=True, event_driven="on")
        np.testing.assert_array_equal(res.states["out"], ref.v["out"], err_msg=path)
        assert res.layers["out"]["saturation_events"] == ref.saturation["out"] == 2, path
