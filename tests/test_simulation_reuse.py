"""``Simulation`` reuses one plan across calls, and the in-place float IF update changes no bit.

A prepared simulation must give what ``simulate`` gives on every call (different batch sizes and
records in any order, so kept buffers, kernel copies and memoised currents never leak between
calls); the float IF kernel's in-place update (``FloatIF.use_inplace``) must equal the
out-of-place one in float64 and float32, step- and layer-major.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport.ir import IF, Conv2d, Datapath, Dense, Input, Network, Population, Readout
from spikeport.simulator import Simulation, simulate
from spikeport.simulator.neurons import FloatIF
from test_layer_major import KW, _equal
from test_sim_fastpaths import _mlp, _spikes

torch.set_num_threads(1)


def _float_cnn(seed=0, reset="subtract", leak=0.0) -> Network:
    rng = np.random.default_rng(seed)
    net = Network(coding="C1")
    net.add(Input("x", shape=(2, 6, 6), coding="analog"))
    net.add(Population("c1", shape=(4, 6, 6), neuron=IF(threshold=rng.uniform(0.5, 1.5, 4), reset=reset,
                                                        leak=leak, bias=rng.uniform(-0.05, 0.05, 4))))
    net.add(Conv2d("k1", source="x", target="c1", weight=rng.normal(size=(4, 2, 3, 3)) * 0.4, padding=(1, 1)))
    net.add(Population("c2", shape=(4, 6, 6), neuron=IF(threshold=1.0, v_init=0.5)))
    net.add(Conv2d("k2", source="c1", target="c2", weight=rng.normal(size=(4, 4, 3, 3)) * 0.5, padding=(1, 1)))
    net.add(Conv2d("k3", source="x", target="c2", weight=rng.normal(size=(4, 2, 1, 1)) * 0.3))
    net.add(Population("out", shape=(3,), neuron=Readout(bias=rng.normal(size=3) * 0.1)))
    net.add(Dense("d", source="c2", target="out", weight=rng.normal(size=(3, 144)) * 0.2))
    net.outputs = ["out"]
    return net


def test_simulation_runs_equal_simulate_every_call():
    net = _mlp(Datapath())
    T = 10
    x = _spikes(7, T, 40, 0.3)
    sim = Simulation(net, T)
    for batch, kw in ((3, KW), (7, {}), (2, KW), (3, dict(record_spikes=True))):
        res = sim.run(x, batch_size=batch, **kw)
        ref = simulate(net, x, T, batch_size=batch, **kw)
        np.testing.assert_array_equal(res.outputs, ref.outputs)
        for name, c in ref.spike_counts.items():
            np.testing.assert_array_equal(res.spike_counts[name], c)
        assert res.layers == ref.layers
        if kw == KW:
            _equal(res, ref)
        if kw.get("record_spikes"):
            for name, sp in ref.spikes.items():
                np.testing.assert_array_equal(res.spikes[name], sp)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reset,leak", [("subtract", 0.0), ("zero", 0.0), ("subtract", 0.1)])
def test_float_if_in_place_update_changes_no_bit(monkeypatch, dtype, reset, leak):
    net = _float_cnn(reset=reset, leak=leak)
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 2, 6, 6))
    kw = dict(batch_size=2, dtype=dtype, record_spikes=True, record_states=True, record_voltages=True)
    fast = {s: simulate(net, x, 12, schedule=s, **kw) for s in ("step", "layer")}
    monkeypatch.setattr(FloatIF, "use_inplace", lambda self: None)
    for s, res in fast.items():
        slow = simulate(net, x, 12, schedule=s, **kw)
        assert sum(int(c.sum()) for c in slow.spike_counts.values()) > 0
        np.testing.assert_array_equal(res.outputs, slow.outputs)
        for field in ("spikes", "states", "voltages"):
            for name, arr in getattr(slow, field).items():
                np.testing.assert_array_equal(getattr(res, field)[name], arr, err_msg=f"{s} {field} {name}")
        for name, c in slow.spike_counts.items():
            np.testing.assert_array_equal(res.spike_counts[name], c)
