"""The `spikeport` command end to end on a small digits model, as a user runs it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport import ir
from spikeport.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_onnx, digits):
    d = tmp_path_factory.mktemp("cli")
    x_train, y_train, x_test, y_test = digits
    np.savez(d / "calib.npz", x=x_train[:256], y=y_train[:256])
    np.savez(d / "test.npz", x=x_test[:120], y=y_test[:120])
    np.savez(d / "nolabels.npz", x=x_test[:20])
    return d


@pytest.mark.slow
def test_convert_compile_simulate_fidelity(files, digits_onnx):
    d = files
    r = invoke("convert", digits_onnx, "--calib", d / "calib.npz", "--method", "if", "--out", d / "net.h5",
               "--timesteps", "16", "--json", d / "convert.json")
    assert r.exit_code == 0, r.output
    assert ir.load(d / "net.h5").populations()
    r = invoke("compile", d / "net.h5", "--profile", "loihi2", "--out", d / "qnet.h5", "--json", d / "quant.json")
    assert r.exit_code == 0, r.output
    quant = json.loads((d / "quant.json").read_text())
    assert quant["profile"] == "loihi2" and quant["layers"]
    assert ir.load(d / "qnet.h5").quantized

    r = invoke("simulate", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "16", "--json", d / "sim.json",
               "--save-outputs", d / "out.npz")
    assert r.exit_code == 0, r.output
    sim = json.loads((d / "sim.json").read_text())
    assert {"accuracy", "timesteps", "samples", "layers"} <= set(sim)
    assert sim["timesteps"] == 16 and sim["samples"] == 120 and 0.5 < sim["accuracy"] <= 1.0
    some = next(iter(sim["layers"].values()))
    assert {"spikes", "rate"} <= set(some)
    out = np.load(d / "out.npz")
    assert out["outputs"].shape[0] == 120 and out["predictions"].shape == (120,)

    r = invoke("simulate", d / "net.h5", "--data", d / "nolabels.npz", "--timesteps", "8", "--json", d / "sim2.json")
    assert r.exit_code == 0, r.output
    assert json.loads((d / "sim2.json").read_text())["accuracy"] is None

    r = invoke("fidelity", digits_onnx, d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "8,16",
               "--json", d / "fid.json", "--plot", d / "fid.png")
    assert r.exit_code == 0, r.output
    fid = json.loads((d / "fid.json").read_text())
    assert fid["timesteps"] == [8, 16] and fid["acc_ann"] > 0.9
    r = invoke("energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "32", "--profile", "loihi2",
               "--model", digits_onnx, "--json", d / "energy.json")
    assert r.exit_code == 0, r.output
    assert "compute-only" in r.output and "with memory" in r.output
    energy = json.loads((d / "energy.json").read_text())
    assert 0 < energy["snn"]["compute_only_pj"] < energy["snn"]["with_memory_pj"]
    assert energy["ann"]["macs"] > 0 and energy["ratio_snn_over_ann"]["compute_only"] > 0
    r = invoke("resources", d / "qnet.h5", "--profile", "loihi2", "--json", d / "res.json")
    assert r.exit_code == 0, r.output
    assert json.loads((d / "res.json").read_text())["cores"] >= len(ir.load(d / "qnet.h5").populations())
    layer = fid["points"][-1]["layers"][0]
    assert {"count_mismatch", "decode_error_fixed", "saturation_events", "clipped_weights", "cause"} <= set(layer)
    assert (d / "fid.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_give_named_errors(files, digits_onnx, tmp_path):
    d = files
    r = invoke("simulate", tmp_path / "missing.h5", "--data", d / "test.npz", "--timesteps", "4")
    assert r.exit_code == 2 and "missing.h5" in r.output
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((2, 1, 8, 8), np.float32))
    r = invoke("convert", digits_onnx, "--calib", bad, "--out", tmp_path / "n.h5")
    assert r.exit_code == 2 and "bad.npz" in r.output and "'x'" in r.output
    r = invoke("convert", digits_onnx, "--calib", d / "calib.npz", "--method", "nonsense", "--out", tmp_path / "n.h5")
    assert r.exit_code == 2 and "nonsense" in r.output
    assert not (tmp_path / "n.h5").exists()
    r = invoke("fidelity", digits_onnx, "a.h5", "b.h5", "--data", d / "test.npz", "--timesteps", "8,x")
    assert r.exit_code == 2 and "--timesteps" in r.output


def test_convert_method_options(files, digits_onnx, tmp_path):
    d = files
    r = invoke("convert", digits_onnx, "--calib", d / "calib.npz", "--method", "aif", "--timesteps", "4",
               "--opt", "search=offset", "--opt", "n_offset=11", "--out", tmp_path / "aif.h5")
    assert r.exit_code == 0, r.output
    net = ir.load(tmp_path / "aif.h5")
    assert net.meta["method"] == "aif" and net.meta["options"]["search"] == "offset"
    r = invoke("convert", digits_onnx, "--calib", d / "calib.npz", "--method", "aif", "--timesteps", "4",
               "--opt", "bogus=1", "--out", tmp_path / "x.h5")
    assert r.exit_code == 2 and "unknown option(s) ['bogus']" in r.output
    r = invoke("convert", digits_onnx, "--calib", d / "calib.npz", "--opt", "novalue", "--out", tmp_path / "x.h5")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output


@pytest.mark.slow
def test_lava_export_run_verify(files, digits_onnx, tmp_path):
    """Issue 3's commands on the digits CNN: export report, Lava run, spike-for-spike verification."""
    d = files
    assert invoke("convert", digits_onnx, "--calib", d / "calib.npz", "--out", tmp_path / "net.h5").exit_code == 0
    assert invoke("compile", tmp_path / "net.h5", "--out", tmp_path / "qnet.h5").exit_code == 0
    np.savez(tmp_path / "two.npz", x=np.load(d / "test.npz")["x"][:2], y=np.load(d / "test.npz")["y"][:2])
    r = invoke("export", tmp_path / "qnet.h5", "--target", "lava", "--out", tmp_path / "lava", "--timesteps", "6",
               "--json", tmp_path / "export.json")
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "lava").iterdir()} >= {"plan.json", "arrays.npz", "load_lava.py"}
    layers = json.loads((tmp_path / "export.json").read_text())["layers"]
    assert all({"process", "hardware", "payload"} <= set(row) for row in layers)
    assert any("simulation-only" in str(row["hardware"]) for row in layers)   # soft-reset IF needs microcode
    r = invoke("verify", tmp_path / "qnet.h5", "--data", tmp_path / "two.npz", "--timesteps", "6",
               "--json", tmp_path / "verify.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "verify.json").read_text())["identical"] is True
    r = invoke("run", tmp_path / "qnet.h5", "--data", tmp_path / "two.npz", "--timesteps", "6", "--json", tmp_path / "run.json")
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "run.json").read_text())
    sim = invoke("simulate", tmp_path / "qnet.h5", "--data", tmp_path / "two.npz", "--timesteps", "6",
                 "--json", tmp_path / "sim.json")
    assert sim.exit_code == 0
    simj = json.loads((tmp_path / "sim.json").read_text())
    assert run["accuracy"] == simj["accuracy"]
    assert {k: v["spikes"] for k, v in run["layers"].items()} == {k: v["spikes"] for k, v in simj["layers"].items() if k in run["layers"]}
    r = invoke("export", tmp_path / "qnet.h5", "--target", "netx", "--out", tmp_path / "n.net.h5")
    assert r.exit_code == 2 and "netx" in r.output and "relu" in r.output
    assert not (tmp_path / "n.net.h5").exists()
