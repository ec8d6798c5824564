"""Issue 14: fidelity finds the cause by ablation (layer, and the datapath setting within it), reports
every layer including the output, and compile is loud about destroyed layers."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport import ir
from spikeport.cli import app
from spikeport.compiler import quantize
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.hw_profiles import load_profile
from spikeport.hw_profiles.loader import PROFILE_DIR
from spikeport.report import fidelity
from spikeport.report.ablation import SHARE_TOLERANCE
from spikeport.simulator import simulate
from spikeport.simulator.mixed import run_mixed, run_variants

T = 32
N = 150


def _profile(d, name: str, **fields) -> str:
    text = (PROFILE_DIR / "loihi2.toml").read_text().replace('name = "loihi2"', f'name = "{name}"')
    for key, value in fields.items():
        text, n = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert n == 1, key
    path = d / f"{name}.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def setup(digits_model, digits, tmp_path_factory):
    x_train, _, x_test, y_test = digits
    net = convert(load_model(digits_model, input_shape=(1, 8, 8)), x_train[:500], "if")
    d = tmp_path_factory.mktemp("ablation")
    profiles = {"narrow": _profile(d, "loihi2-s12-t6", state_bits=12, threshold_bits=6),
                "w3": _profile(d, "loihi2-w3", weight_bits=3)}
    return net, x_test[:N], y_test[:N], d, profiles


def _fidelity(net, qnet, x, y):
    return fidelity(net, qnet, x, y, [T], simulate=simulate, run_variants=run_variants, quantize=quantize,
                    template_profile=load_profile("loihi2")).points[-1]


def test_mixed_runs_reproduce_float_and_fixed_simulations(setup):
    net, x, _, _, _ = setup
    qnet, _ = quantize(net, "loihi2")
    x = x[:40]
    f = run_mixed(qnet, {p.name: net for p in qnet.populations()}, x, 16, record=True)
    q = run_mixed(qnet, {}, x, 16, record=True)
    rf, rq = simulate(net, x, 16), simulate(qnet, x, 16, record_spikes=True)
    for pop in qnet.populations():
        np.testing.assert_array_equal(f.activations[pop.name], rf.activations[pop.name])
        np.testing.assert_array_equal(q.activations[pop.name], rq.activations[pop.name])
    for name, train in rq.spikes.items():
        np.testing.assert_array_equal(q.spikes[name], train)
    # replaying every spiking layer recorded in the fixed run recomputes the same output
    out = qnet.outputs[0]
    again = run_mixed(qnet, {}, x, 16, replay=dict(q.spikes))
    assert set(again.activations) == {out}
    np.testing.assert_array_equal(again.activations[out], rq.activations[out])


def test_narrow_state_and_threshold_blame_the_output_layer_and_state_width(setup):
    net, x, y, _, profiles = setup
    qnet, table = quantize(net, load_profile(profiles["narrow"]))
    out = qnet.outputs[0]
    zeroed = [w for w in table.warnings if w.what == "weights zeroed"]
    assert [w.layer for w in zeroed] == [out] and zeroed[0].value >= 0.5
    point = _fidelity(net, qnet, x, y)
    ab = point.ablation
    assert ab["loss"] > 0.1                                     # ~27 points on the full test set
    assert abs(ab["loss"] - sum(row["share"] for row in ab["layers"])) <= SHARE_TOLERANCE
    assert ab["blame_layer"] == out
    assert ab["blame_setting"] in ("state width/saturation", "threshold bits")
    rows = {lf.layer: lf for lf in point.layers}
    assert rows[out].output and rows[out].neuron == "Readout"
    assert rows[out].cause in ("state width/saturation", "threshold bits") and rows[out].cause_source == "ablation"
    assert rows[out].error_own > rows[out].error_inherited     # the output's own quantisation, not upstream
    assert rows[out].zeroed_weights > 0
    assert set(rows) == {p.name for p in qnet.populations()}   # every layer, output included


def test_three_bit_weights_blame_weight_truncation_and_rank_layers(setup):
    net, x, y, _, profiles = setup
    qnet, table = quantize(net, load_profile(profiles["w3"]))
    assert len([w for w in table.warnings if w.what == "weights zeroed"]) >= 3
    ab = _fidelity(net, qnet, x, y).ablation
    assert ab["loss"] > 0.3
    assert ab["blame_setting"] == "weight bits/exponent"
    rec = ab["network_recovery"]
    assert rec["weight bits/exponent"] == max(v for v in rec.values() if v is not None)
    hurt = ab["hurt_most"]["weight bits/exponent"]
    assert len(hurt) >= 3
    by_layer = {row["layer"]: row for row in ab["layers"]}
    assert by_layer[hurt[0]]["cause"] == "weight bits/exponent"
    recs = [by_layer[name]["recovery"]["weight bits/exponent"] for name in hurt]
    assert recs == sorted(recs, reverse=True) and recs[0] > 0
    assert abs(ab["loss"] - sum(row["share"] for row in ab["layers"])) <= SHARE_TOLERANCE


def test_default_profile_attributes_nothing_and_skips_quiet_layers(setup):
    net, x, y, _, _ = setup
    qnet, table = quantize(net, "loihi2")
    assert table.warnings == []
    ab = _fidelity(net, qnet, x[:60], y[:60]).ablation
    assert abs(ab["loss"] - sum(row["share"] for row in ab["layers"])) <= SHARE_TOLERANCE
    quiet = [row for row in ab["layers"] if row["drop_alone"] <= 0 and row["gain_restored"] <= 0]
    assert all(len(row["skipped"]) == len(row["recovery"]) for row in quiet)


def test_cli_compile_strict_and_fidelity_json_name_the_output_layer(setup, digits_onnx, digits):
    _, x, y, d, profiles = setup
    # converted from the ONNX file so the ANN column can match node names
    ir.save(convert(load_model(digits_onnx), digits[0][:500], "if"), d / "net.h5")
    np.savez(d / "test.npz", x=x[:80], y=y[:80])
    runner = CliRunner()
    r = runner.invoke(app, ["compile", str(d / "net.h5"), "--profile", profiles["narrow"], "--out", str(d / "q.h5")])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "warning" in text and "round to zero" in text and "limit 50%" in text
    r = runner.invoke(app, ["compile", str(d / "net.h5"), "--profile", profiles["narrow"], "--out", str(d / "qs.h5"),
                            "--strict"])
    assert r.exit_code == 2 and "--strict" in r.output and not (d / "qs.h5").exists()
    r = runner.invoke(app, ["fidelity", digits_onnx, str(d / "net.h5"), str(d / "q.h5"), "--data", str(d / "test.npz"),
                            "--timesteps", "16", "--json", str(d / "fid.json"), "--plot", str(d / "fid.png")])
    assert r.exit_code == 0, r.output
    rep = json.loads((d / "fid.json").read_text())
    point = rep["points"][-1]
    out = ir.load(d / "q.h5").outputs[0]
    assert any(lf["layer"] == out and lf["output"] for lf in point["layers"])
    assert point["ablation"]["blame_layer"] == out and "own" in r.output and "inherited" in r.output
    assert point["ablation"]["timesteps"] == 16
    assert (d / "fid.png").read_bytes()[:4] == b"\x89PNG"


def test_batched_variants_equal_separate_runs(setup):
    from spikeport.simulator.mixed import Variant
    net, x, _, _, _ = setup
    qnet, _ = quantize(net, "loihi2")
    x = x[:30]
    pops = [p.name for p in qnet.populations()]
    q = run_mixed(qnet, {}, x, 12, record=True)
    f = run_mixed(qnet, {p: net for p in pops}, x, 12, record=True)
    variants = [Variant({pops[1]: net}, {pops[0]: q.spikes[pops[0]]}),          # restore layer 2, replay layer 1
                Variant({p: net for p in pops[2:]}, {p: f.spikes[p] for p in pops[:2]}),
                Variant({pops[0]: qnet}, {}), Variant({p: net for p in pops})]
    batched = run_variants(qnet, variants, x, 12, batch_size=7)
    for var, res in zip(variants, batched):
        alone = run_mixed(qnet, var.source, x, 12, replay=var.replay)
        assert set(res.activations) == set(alone.activations)
        for name, act in alone.activations.items():
            np.testing.assert_array_equal(res.activations[name], act)
