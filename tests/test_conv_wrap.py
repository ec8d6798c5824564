"""Issue 14: Lava's Conv wraps its per-step sum modulo 2^24; spikeport models, counts, avoids and
reports it. The example is the issue's: Conv2d(16 -> 4, 5x5, padding 2, weights ~U(0.8, 1), no bias)
-> ReLU -> Linear, inputs ~U(0.5, 1), converted with --method if."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from spikeport import ir
from spikeport.backends.loihi2 import layer_report, verify
from spikeport.backends.loihi2.examples import wrapping_convnet
from spikeport.cli import app
from spikeport.compiler import quantize
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.hw_profiles import load_profile
from spikeport.hw_profiles.loader import PROFILE_DIR
from spikeport.simulator import simulate
from spikeport.simulator.reference import reference_simulate

LIMIT = 2 ** 23 - 1


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 4, 5, padding=2, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    with torch.no_grad():
        model[0].weight.uniform_(0.8, 1.0)
    x = np.random.default_rng(0).uniform(0.5, 1.0, (8, 16, 8, 8)).astype(np.float32)
    net = convert(load_model(model, input_shape=(16, 8, 8)), x, "if")
    d = tmp_path_factory.mktemp("wrap")
    # A profile whose weight exponent is pinned to -8: no exponent can keep the conv sum in 24 bits.
    text = (PROFILE_DIR / "loihi2.toml").read_text()
    text = text.replace('name = "loihi2"', 'name = "loihi2-exp8"')
    text = re.sub(r"(?m)^weight_exp_max = 7", "weight_exp_max = -8", text)
    assert "weight_exp_max = -8" in text
    (d / "pinned.toml").write_text(text)
    return net, x, d


def _conv_row(table):
    return next(p for layer in table.layers for p in layer.projections if p.connectivity == "conv2d")


def test_default_quantiser_avoids_the_wrap_by_exponent_choice(example):
    net, x, _ = example
    qnet, table = quantize(net, "loihi2")
    row = _conv_row(table)
    assert row.acc_limit == LIMIT and 0 < row.acc_bound <= LIMIT
    assert row.weight_exp == -7          # -8 would give mantissas up to 120 and sums up to 10.99M
    assert not [w for w in table.warnings if w.what == "conv wrap"]
    res = simulate(qnet, x, 8)
    assert all(layer["conv_wrap_events"] == 0 for layer in res.layers.values())


def test_pinned_exponent_wraps_counts_warns_and_equals_reference(example):
    net, x, d = example
    qnet, table = quantize(net, load_profile(d / "pinned.toml"))
    row = _conv_row(table)
    assert row.weight_exp == -8 and row.acc_bound == 10_987_950 > LIMIT
    warn = [w for w in table.warnings if w.what == "conv wrap"]
    assert len(warn) == 1 and warn[0].value == row.acc_bound and warn[0].limit == LIMIT
    assert str(LIMIT) in str(warn[0]) and warn[0].layer in str(warn[0])
    res = simulate(qnet, x, 8, record_spikes=True, record_states=True)
    conv_pop = warn[0].layer
    per_step = res.layers[conv_pop]["conv_wrap_per_step"]
    assert res.layers[conv_pop]["conv_wrap_events"] == sum(per_step) > 0
    assert per_step[0] == 0 and per_step[1] > 0      # the conv delivers from step 1 (Lava latency)
    ref = reference_simulate(qnet, x[:3], 8)
    res3 = simulate(qnet, x[:3], 8, record_spikes=True, record_states=True)
    np.testing.assert_array_equal(res3.layers[conv_pop]["conv_wrap_per_step"], ref.conv_wrap[conv_pop])
    np.testing.assert_array_equal(res3.spikes[conv_pop], ref.spikes[conv_pop])
    # without the wrap the simulator would disagree: the exact sum gives other spikes
    exact = qnet.copy()
    exact.datapath.conv_acc_bits = 0
    assert not np.array_equal(simulate(exact, x, 8).spike_counts[conv_pop], res.spike_counts[conv_pop])


def test_wrap_events_in_the_fidelity_report(example):
    from spikeport.report import fidelity
    from spikeport.simulator.mixed import run_variants
    net, x, d = example
    qnet, _ = quantize(net, load_profile(d / "pinned.toml"))
    y = simulate(net, x, 8).predictions
    point = fidelity(net, qnet, x, y, [8], simulate=simulate, run_variants=run_variants, quantize=quantize,
                     template_profile=load_profile("loihi2")).points[-1]
    rows = {lf.layer: lf for lf in point.layers}
    conv = next(p.name for p in qnet.populations() if any(i.connectivity == "conv2d" for i in qnet.incoming(p.name)))
    assert rows[conv].conv_wrap_events == simulate(qnet, x, 8).layers[conv]["conv_wrap_events"] > 0
    assert "current wrap" in rows[conv].cause
    assert rows[qnet.outputs[0]].output                      # the output layer is in the report


def test_issue_example_verifies_identical_against_lava(example):
    net, x, d = example
    qnet, _ = quantize(net, load_profile(d / "pinned.toml"))
    sim = simulate(qnet, x[:2], 6)
    assert sum(layer["conv_wrap_events"] for layer in sim.layers.values()) > 0
    rep = verify(qnet, x[:2], 6)
    assert rep.identical, str(rep)


def test_lava_own_conv_wraps_identically():
    net = wrapping_convnet(seed=1)
    x = np.random.default_rng(1).uniform(0.5, 1.0, (2, 16, 6, 6)) * 255
    rows = {r["layer"]: r for r in layer_report(net, 5)}
    assert rows["x_c"]["process"] == "Conv"           # lava.proc.conv's own process, weight_exp 0
    sim = simulate(net, x, 5)
    assert sim.layers["c"]["conv_wrap_events"] > 0
    rep = verify(net, x, 5)
    assert rep.identical, str(rep)
    assert sum(int(np.abs(s).sum()) for s in rep.lava.spikes.values()) > 0


def test_cli_compile_warns_strict_fails_simulate_json_counts_and_verify_passes(example):
    net, x, d = example
    ir.save(net, d / "net.h5")
    np.savez(d / "data.npz", x=x[:2])
    runner = CliRunner()
    r = runner.invoke(app, ["compile", str(d / "net.h5"), "--profile", str(d / "pinned.toml"), "--out", str(d / "q.h5")])
    assert r.exit_code == 0, r.output
    assert "conv accumulator" in r.output and str(LIMIT) in r.output
    r = runner.invoke(app, ["compile", str(d / "net.h5"), "--profile", str(d / "pinned.toml"), "--out",
                            str(d / "q_strict.h5"), "--strict"])
    assert r.exit_code == 2 and not (d / "q_strict.h5").exists()
    r = runner.invoke(app, ["simulate", str(d / "q.h5"), "--data", str(d / "data.npz"), "--timesteps", "6",
                            "--json", str(d / "sim.json")])
    assert r.exit_code == 0, r.output
    layers = json.loads((d / "sim.json").read_text())["layers"]
    wrapped = {k: v for k, v in layers.items() if v["conv_wrap_events"]}
    assert wrapped and all(sum(v["conv_wrap_per_step"]) == v["conv_wrap_events"] for v in wrapped.values())
    r = runner.invoke(app, ["verify", str(d / "q.h5"), "--target", "lava", "--data", str(d / "data.npz"),
                            "--timesteps", "6"])
    assert r.exit_code == 0, r.output
