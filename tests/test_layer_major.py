"""The layer-major schedule (simulator/layer_major.py) changes no bit.

Random quantised networks with delays, t_start, residual projections, conv wraps and every
arithmetic path run layer-major with chunks of 1, 2 and 3 steps (so delays cross chunk borders)
and whole; spike trains, final states, voltages after every step and every overflow counter must
equal the step-major loop and the plain numpy reference.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from spikeport.ir import Datapath
from spikeport.simulator import layer_major, simulate
from spikeport.simulator.engine import BatchRun, build_plan
from spikeport.simulator.reference import reference_simulate
from test_sim_fastpaths import CASES, STATS, _mlp, _spikes
from test_simulator_reference import _assert_same, quantised_networks

torch.set_num_threads(1)
KW = dict(record_spikes=True, record_states=True, record_voltages=True)


def _equal(a, b):
    assert a.steps_run == b.steps_run
    for field in ("spikes", "states", "voltages"):
        for name, arr in getattr(b, field).items():
            np.testing.assert_array_equal(getattr(a, field)[name], arr, err_msg=f"{field} of {name}")
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for name, layer in b.layers.items():
        for key in STATS + ("conv_wrap_events", "conv_wrap_per_step"):
            assert a.layers[name].get(key) == layer.get(key), (name, key)


@pytest.fixture
def chunk(monkeypatch):
    def set_chunk(c):
        monkeypatch.setattr(layer_major, "MAX_CHUNK", c)
    return set_chunk


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(quantised_networks())
def test_layer_major_equals_step_major_and_reference(chunk, case):
    net, x, T = case
    ref = reference_simulate(net, x, T)
    chunk(10 ** 6)
    step = simulate(net, x, T, batch_size=3, schedule="step", **KW)
    _assert_same(step, ref, net)
    for c in (1, 2, 3, 10 ** 6):
        chunk(c)
        for path in ("auto", "int64", "chunked"):
            res = simulate(net, x, T, batch_size=3, schedule="layer", path=path, **KW)
            _assert_same(res, ref, net)
            _equal(res, step)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("c", [1, 5, 1000])
def test_layer_major_float_state_and_event_driven(chunk, case, c):
    """The float32-state kernels writing spikes into the chunk buffer, with event-driven sums."""
    dp, nkw, mkw = CASES[case]
    net = _mlp(dp, neuron_kw=nkw, **mkw)
    T = 12
    x = _spikes(5, T, 40, 0.8 if "overflow" in case or "2^24" in case else 0.15)
    base = simulate(net, x, T, batch_size=2, path="int64", event_driven="off", schedule="step", **KW)
    chunk(c)
    for ev in ("off", "on", "auto"):
        _equal(simulate(net, x, T, batch_size=2, event_driven=ev, schedule="layer", **KW), base)


def test_auto_schedule_choice(monkeypatch):
    """Quantised nets run layer-major under 'auto'; float nets, runners that rebuild the inputs
    (the SpiNNaker replay) and 'step' keep the step-major loop; a bad name is a clear error."""
    net = _mlp(Datapath())
    x = torch.as_tensor(_spikes(2, 6, 40, 0.2))
    calls = []
    monkeypatch.setattr("spikeport.simulator.engine.run_layer_major", lambda run, c: calls.append(c))

    class Replay(BatchRun):
        def _gather_current(self, pop, t):
            return super()._gather_current(pop, t)

    def ran_layer_major(net, schedule="auto", cls=BatchRun):
        calls.clear()
        plan = build_plan(net, 6, "cpu", schedule=schedule)
        cls(plan, {"in": x}, False).run()
        return bool(calls)

    assert ran_layer_major(net)
    assert not ran_layer_major(net, "step")
    assert not ran_layer_major(net, cls=Replay)
    net.datapath = None
    assert not ran_layer_major(net)
    with pytest.raises(ValueError, match="schedule must be one of"):
        build_plan(net, 6, "cpu", schedule="diagonal")


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("c", [1, 3, 1000])
def test_chunk_rules_on_constant_analog_current_count_every_step(chunk, overflow, c):
    """A C1 analog input delivers the same current at every step: the layer-major chunk applies
    the int16 count and the 24-bit current rule to it once per chunk (``chunk_rules`` with
    ``times``) and to summed residual currents in place; counts and states equal the step-major
    loop and the numpy reference, and every counter fires."""
    from spikeport.ir import IF, Conv2d, Dense, Input, Network, Population, Readout, SpikePayload
    rng = np.random.default_rng(3)
    dp = Datapath(current_bits=18, current_overflow=overflow)
    net = Network(coding="C1", datapath=dp)
    net.add(Input("x", shape=(2, 6, 6), coding="analog", scale=0.05, payload=SpikePayload(kind="graded", bits=8,
                                                                                      min_level=-127, max_level=127)))
    kw = dict(threshold=rng.integers(2_000, 60_000, size=3), bias=rng.integers(-40, 40, size=3),
              v_init=rng.integers(-500, 500, size=3))
    net.add(Population("c1", shape=(3, 6, 6), neuron=IF(**kw), t_start=1))
    net.add(Conv2d("k1", source="x", target="c1", weight=rng.integers(-250, 251, size=(3, 2, 3, 3)).astype(float),
                   padding=(1, 1), weight_exp=0, delay=1))
    net.add(Population("c2", shape=(3, 6, 6), neuron=IF(**kw), t_start=2))
    net.add(Conv2d("k2", source="c1", target="c2", weight=rng.integers(-3000, 3001, size=(3, 3, 3, 3)).astype(float),
                   padding=(1, 1), weight_exp=0, delay=1))
    net.add(Conv2d("k3", source="x", target="c2", weight=rng.integers(-250, 251, size=(3, 2, 1, 1)).astype(float),
                   weight_exp=0, delay=2))                                     # residual: a summed current
    net.add(Population("out", shape=(4,), neuron=Readout(bias=rng.integers(-5, 6, 4)), t_start=3))
    net.add(Dense("d", source="c2", target="out", weight=rng.integers(-100, 101, size=(4, 108)).astype(float), delay=1))
    net.outputs = ["out"]
    T = 9
    x = rng.uniform(-6.4, 6.4, size=(3, 2, 6, 6))
    assert build_plan(net, T, "cpu").float_state >= {"c1", "c2"}
    ref = reference_simulate(net, x, T)
    step = simulate(net, x, T, batch_size=2, schedule="step", **KW)
    _assert_same(step, ref, net)
    chunk(c)
    res = simulate(net, x, T, batch_size=2, schedule="layer", **KW)
    _assert_same(res, ref, net)
    _equal(res, step)
    for name in ("c1", "c2"):
        assert step.layers[name]["a_in_16bit_events"] > 0 and step.layers[name]["wrap_events"] > 0, name
