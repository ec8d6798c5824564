"""Quantised ECMT ViTs in Lava (issue 9 item 3): MT neurons, relays and token projections as
spikeport's Lava processes, operators as Python processes (not on neuro cores); the Lava run equals
the bit-accurate simulator and the plain integer reference at every node and step (equality)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spikeport import compiler, ir
from spikeport.backends import loihi2
from spikeport.backends.loihi2 import transformer as LT
from spikeport.cli import app
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.ir import operators as O
from spikeport.models.digits_vit import DigitsViT, pretrained_digits_vit
from spikeport.simulator.reference_operators import run_reference

from conftest import export_onnx


@pytest.fixture(scope="module")
def tiny_qvit(tmp_path_factory):
    torch.manual_seed(0)
    model = DigitsViT(dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = export_onnx(model, tmp_path_factory.mktemp("lvit") / "tiny.onnx")
    calib = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    qnet, _ = compiler.quantize(convert(load_model(path), calib, "ecmt", levels=4), "loihi2")
    return qnet


def test_lava_equals_simulator_and_reference_every_node_every_step(tiny_qvit, tmp_path):
    qnet = tiny_qvit
    x = np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32)
    T = 5
    rep = loihi2.verify(qnet, x, T)                      # dispatches to the operator mapping
    assert rep.identical, str(rep)
    assert rep.predictions_equal
    names = {n.name for n in qnet.populations()} | {o.name for o in qnet.operators()}
    assert set(rep.compared) == names and all(v == 0 for v in rep.mismatches.values())
    assert "not on neuro cores" in rep.notes[0] and all(o.name in rep.notes[0] for o in qnet.operators())
    # independent of the simulator: the plain integer reference gives the same payloads
    lava, values = LT.run_operators_lava(qnet, x, T)
    ref, readout = run_reference(qnet, x, T)
    for name in values:
        np.testing.assert_array_equal(values[name], ref[name], err_msg=name)
    out = qnet.outputs[0]
    np.testing.assert_array_equal(lava.states[out], readout[out])
    mts = [p.name for p in qnet.populations() if isinstance(p.neuron, O.MultiThreshold)]
    assert mts and all(np.any(lava.spikes[m] != 0) for m in mts)       # the comparison is not vacuous
    assert any(np.any(np.abs(lava.spikes[m]) > 1) for m in mts)        # graded levels beyond 1 occur
    # the export folder runs the same
    folder = loihi2.export(qnet, tmp_path / "lava", T)
    doc = json.loads((folder / "plan.json").read_text())
    assert doc["format"] == LT.FORMAT and doc["timesteps"] == T
    rows = {r["layer"]: r for r in doc["report"]}
    assert all(rows[o.name]["hardware"].startswith("not on neuro cores") for o in qnet.operators())
    again = loihi2.run_lava(folder, x)
    np.testing.assert_array_equal(again.outputs, lava.outputs)


def test_operator_with_float_arithmetic_is_refused_by_name(tiny_qvit):
    qnet = tiny_qvit
    op = next(o for o in qnet.operators() if isinstance(o, O.SoftmaxEC))
    old = op.arithmetic
    op.arithmetic = "float32"
    try:
        with pytest.raises(loihi2.LavaExportError, match=op.name):
            loihi2.layer_report(qnet, 4)
    finally:
        op.arithmetic = old


@pytest.mark.slow
def test_cli_verify_lava_exits_0_on_the_digits_vit(digits, tmp_path):
    x_train, _, x_test, y_test = digits
    onnx = export_onnx(pretrained_digits_vit("vit"), tmp_path / "vit.onnx")
    qnet, _ = compiler.quantize(convert(load_model(onnx), x_train[:100], "ecmt"), "loihi2")
    ir.save(qnet, tmp_path / "q.h5")
    np.savez(tmp_path / "d.npz", x=x_test[:2], y=y_test[:2])
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "q.h5"), "--target", "lava", "--data",
                                   str(tmp_path / "d.npz"), "--timesteps", "3", "--json", str(tmp_path / "v.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["identical"] and doc["predictions_equal"]
    assert "not on neuro cores" in doc["notes"][0]
