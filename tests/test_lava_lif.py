"""Issue 14: a conversion option that uses Lava's own LIF (reset to zero, strict '>', ungated), so
the Loihi 2 backend runs lava.proc.lif.LIF itself, verified spike for spike against Lava's code."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport import ir
from spikeport.backends.loihi2 import layer_report
from spikeport.cli import app
from spikeport.compiler import quantize
from spikeport.convert import ConversionError, convert
from spikeport.frontend import load_model
from spikeport.ir import Dense, Input, Network, Population, Readout, SpikePayload
from spikeport.ir.neurons_extra import LavaLIF
from spikeport.simulator import simulate
from spikeport.simulator.reference import reference_simulate


@pytest.fixture(scope="module")
def lif_net(digits_model, digits):
    x_train = digits[0]
    return convert(load_model(digits_model, input_shape=(1, 8, 8)), x_train[:500], "if", neuron="lava-lif")


def test_option_implies_lava_semantics_and_refuses_contradictions(digits_model, digits):
    ann = load_model(digits_model, input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="lava-lif"):
        convert(ann, digits[0][:64], "if", neuron="lava-lif", reset="subtract")
    with pytest.raises(ConversionError, match="neuron"):
        convert(ann, digits[0][:64], "if", neuron="loihi")


def test_float_lava_lif_equals_windowed_zero_reset_if(lif_net, digits_model, digits):
    pops = [p for p in lif_net.populations() if p.neuron.spiking]
    assert pops and all(isinstance(p.neuron, LavaLIF) for p in pops)
    plain = convert(load_model(digits_model, input_shape=(1, 8, 8)), digits[0][:500], "if", reset="zero",
                    compare=">", v_init="zero")
    x = digits[2][:50]
    a, b = simulate(lif_net, x, 16), simulate(plain, x, 16)   # no latency: ungated == windowed
    np.testing.assert_array_equal(a.outputs, b.outputs)


def test_quantiser_cancels_the_fill_bias_and_simulator_equals_reference(lif_net, digits):
    qnet, _ = quantize(lif_net, "loihi2")
    fill = qnet.meta["fill_bias_cancelled"]
    assert fill and all(v["exact"] for v in fill.values())
    for name, v in fill.items():
        pop = qnet[name]
        assert pop.t_start == v["t_start"] > 0
        np.testing.assert_array_equal(np.asarray(pop.neuron.v_init), -pop.t_start * np.asarray(pop.neuron.bias))
    # small hand-made net: an ungated LavaLIF with t_start 2, negative and positive biases, equal to the reference
    net = Network(datapath=qnet.datapath)
    net.add(Input("x", shape=(4,), payload=SpikePayload(kind="graded", bits=8, min_level=0, max_level=255)))
    rng = np.random.default_rng(0)
    net.add(Population("h", shape=(5,), neuron=LavaLIF(threshold=np.array(64 * 300), bias=np.array([640, -640, 0, 25600, -2000]),
                                                         v_init=np.array([-1280, 1280, 0, 0, 4000])), t_start=2))
    net.add(Dense("x_h", source="x", target="h", weight=rng.integers(-40, 60, (5, 4)) * 2, delay=2))
    net.add(Population("o", shape=(2,), neuron=Readout(bias=np.zeros(2)), t_start=3))
    net.add(Dense("h_o", source="h", target="o", weight=rng.integers(-50, 50, (2, 5)) * 2, delay=1))
    net.outputs = ["o"]
    x = rng.uniform(0, 255, (6, 4))
    ref = reference_simulate(net, x, 7)
    res = simulate(net, x, 7, record_spikes=True, record_states=True)
    np.testing.assert_array_equal(res.spikes["h"], ref.spikes["h"])
    np.testing.assert_array_equal(res.states["o"], ref.v["o"])
    assert res.spikes["h"][:, 9:, 3].all() and res.spikes["h"][:, :2, 3].all()   # ungated: fires outside its window


def test_digits_cnn_runs_on_lavas_own_lif_and_verifies(lif_net, digits, tmp_path):
    qnet, table = quantize(lif_net, "loihi2")
    _, _, x_test, y_test = digits
    assert simulate(qnet, x_test[:150], 32).accuracy(y_test[:150]) >= 0.93
    rows = {r["layer"]: r for r in layer_report(qnet, 8)}
    hidden = [p.name for p in qnet.populations() if p.neuron.spiking]
    assert all(rows[h]["process"] == "LIF" and rows[h]["runs"] == "Lava" for h in hidden)
    assert rows[qnet.outputs[0]]["runs"] == "spikeport"       # Readout: stated, not hidden
    ir.save(lif_net, tmp_path / "net.h5")
    np.savez(tmp_path / "d.npz", x=x_test[:3], y=y_test[:3])
    runner = CliRunner()
    r = runner.invoke(app, ["compile", str(tmp_path / "net.h5"), "--out", str(tmp_path / "q.h5"), "--strict"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "q.h5"), "--target", "lava", "--data", str(tmp_path / "d.npz"),
                            "--timesteps", "8", "--json", str(tmp_path / "v.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "v.json").read_text())
    assert rep["identical"] and all(rep["runs"][h] == "Lava" for h in hidden)


def test_cli_convert_option(digits_onnx, digits, tmp_path):
    np.savez(tmp_path / "c.npz", x=digits[0][:128])
    r = CliRunner().invoke(app, ["convert", digits_onnx, "--calib", str(tmp_path / "c.npz"), "--out", str(tmp_path / "n.h5"),
                                 "--opt", "neuron=lava-lif"])
    assert r.exit_code == 0, r.output
    assert all(isinstance(p.neuron, LavaLIF) for p in ir.load(tmp_path / "n.h5").populations() if p.neuron.spiking)
