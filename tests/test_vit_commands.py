"""Every command on every Transformer II method's output (issue 11), through the CLI: one small ViT
per method (stbif, pmsm, mbe), float and loihi2 IR. ``compile``, ``simulate``, ``fidelity``,
``energy``, ``resources`` accept them (exit 0); ``export --target lava`` and ``verify --target lava``
refuse them with exit 2 naming the node and the reason. Never a traceback.

Also checked here, from the commands' JSON: PMSM's power figure P = 0.9 pJ * N / (T * 1 ms) from the
measured counts in both conventions (graded event vs |n| spikes), MBE's per-neuron GELU energy
T * N * eta * 0.9 pJ from the measured rate, and C2 fidelity reading the QANN as the ANN.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikeport import ir
from spikeport.models.digits_vit import DigitsViT
from spikeport.simulator.transformer_c2 import simulate_c2

from conftest import export_onnx

METHODS = ("stbif", "pmsm", "mbe")
T = 4   # mbe: the shipped T = 4 fits


def _invoke(*args):
    from typer.testing import CliRunner

    from spikeport.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def _no_traceback(r) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A one-block ViT (dim 8, 2 heads), its ONNX, training data and six evaluation samples."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("vitcmd")
    torch.manual_seed(11)
    model = DigitsViT(dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3).eval()
    onnx = export_onnx(model, d / "m.onnx")
    rng = np.random.default_rng(11)
    x = rng.random((30, 1, 8, 8)).astype(np.float32)
    np.savez(d / "train.npz", x=x, y=rng.integers(0, 3, 30))
    np.savez(d / "data.npz", x=x[:6], y=rng.integers(0, 3, 6))
    return d, onnx


@pytest.fixture(scope="module", params=METHODS)
def files(request, vit):
    """``finetune`` (C2 methods), ``convert`` and ``compile --profile loihi2`` through the CLI."""
    d, onnx = vit
    m = request.param
    out = d / m
    out.mkdir()
    model = onnx
    if m != "mbe":
        r = _invoke("finetune", onnx, "--method", m, "--train", d / "train.npz", "--epochs", 1, "--levels", 8,
                    "--out", out / "q.pt2")
        _no_traceback(r)
        assert r.exit_code == 0, r.output
        model = out / "q.pt2"
        from spikeport.frontend import ann_graph as G
        from spikeport.frontend import load_model
        q = [n for n in load_model(model).graph if isinstance(n, G.QuantAct)]   # L = 8: -L/2..L/2-1 (PQA: ..L/2)
        assert q and {(n.min_level, n.max_level) for n in q} == {(-4, 3 if m == "stbif" else 4)}
    r = _invoke("convert", model, "--calib", d / "train.npz", "--method", m, "--out", out / "net.h5",
                *(["--timesteps", T] if m == "mbe" else []))
    _no_traceback(r)
    assert r.exit_code == 0, r.output
    r = _invoke("compile", out / "net.h5", "--profile", "loihi2", "--out", out / "qnet.h5")
    _no_traceback(r)
    assert r.exit_code == 0, r.output
    assert ir.load(out / "qnet.h5").quantized
    return m, model, out, d / "data.npz"


def _accepting(m, model, out, data):
    return {
        "simulate float": ("simulate", out / "net.h5", "--data", data, "--timesteps", T),
        "simulate fixed": ("simulate", out / "qnet.h5", "--data", data, "--timesteps", T),
        # MBE: each stage runs the T its fits hold, so one T
        "fidelity": ("fidelity", model, out / "net.h5", out / "qnet.h5", "--data", data,
                     "--timesteps", f"{T}" if m == "mbe" else f"1,{T}", "--json", out / "fid.json"),
        "energy float": ("energy", out / "net.h5", "--data", data, "--timesteps", T, "--profile", "loihi2",
                         "--json", out / "e_float.json"),
        "energy fixed": ("energy", out / "qnet.h5", "--data", data, "--timesteps", T, "--json", out / "e_fixed.json"),
        "resources": ("resources", out / "qnet.h5", "--profile", "loihi2"),
    }


def test_compile_simulate_fidelity_energy_resources_accept(files):
    m, model, out, data = files
    for what, args in _accepting(m, model, out, data).items():
        r = _invoke(*args)
        _no_traceback(r)
        assert r.exit_code == 0, (m, what, r.output[-2000:])


def test_lava_export_and_verify_refuse_naming_the_node_and_the_reason(files):
    m, _, out, data = files
    net = ir.load(out / "qnet.h5")
    for args in (("export", out / "qnet.h5", "--target", "lava", "--out", out / "lava"),
                 ("verify", out / "qnet.h5", "--target", "lava", "--data", data, "--timesteps", T)):
        r = _invoke(*args)
        _no_traceback(r)
        assert r.exit_code == 2, (m, args[0], r.output)
        said = r.output.replace("\n", " ")
        named = [n.name for n in net.nodes() if f"'{n.name}'" in said]
        assert named, (m, args[0], r.output)                       # a node of this network, by name
        assert "no Lava process" in said, (m, args[0], r.output)   # and why
        assert not (out / "lava").exists()


def test_energy_gives_the_papers_figures_from_measured_counts(files):
    """C2: P = 0.9 pJ * N / (T * 1 ms) per sample with N counted both ways, equal to the counts the
    simulator measures independently. MBE: per GELU population T * N * eta * 0.9 pJ from its rate."""
    m, model, out, data = files
    r = _invoke(*_accepting(m, model, out, data)["energy fixed"])
    assert r.exit_code == 0, r.output
    e = json.loads((out / "e_fixed.json").read_text())
    x = np.load(data)["x"]
    if m == "mbe":
        gelu = e["mbe"]["gelu"]
        assert gelu
        for g in gelu.values():
            assert 0 < g["rate"] < 1 and g["timesteps"] == T and g["bases"] == 4
            assert g["energy_pj"] == pytest.approx(T * 4 * g["rate"] * 0.9, rel=1e-12)
        return
    assert "PMSM power" in r.output
    from spikeport.simulator.transformer_c2_fixed import simulate_c2_fixed
    _, _, c = simulate_c2_fixed(ir.load(out / "qnet.h5"), x, T)
    sp = e["spike_power"]
    assert sp["timesteps"] == T and sp["samples"] == len(x) and sp["e_ac_pj"] == 0.9 and sp["t_step_s"] == 1e-3
    assert sp["events"]["per_sample"] * len(x) == c.total_events > 0
    assert sp["spikes"]["per_sample"] * len(x) == c.total_spikes
    for k, n in (("events", c.total_events), ("spikes", c.total_spikes)):
        assert sp[k]["power_w"] == pytest.approx(0.9e-12 * n / len(x) / (T * 1e-3), rel=1e-12)
    if m == "stbif":
        assert c.total_spikes == c.total_events          # one signed spike per step
    else:
        assert c.total_spikes >= c.total_events
    ef = json.loads((out / "e_float.json").read_text())["spike_power"]
    _, _, cf = simulate_c2(ir.load(out / "net.h5"), x, T)
    assert ef["events"]["per_sample"] * len(x) == cf.total_events and ef["spikes"]["per_sample"] * len(x) == cf.total_spikes


def test_c2_fidelity_compares_every_population_and_operator_with_the_qann_as_the_ann(files):
    m, model, out, data = files
    if m == "mbe":
        pytest.skip("MBE fidelity: tests/test_mbe_vit_fixed.py::test_fidelity_accepts_and_lava_refuses_mbe_vits_by_node")
    r = _invoke(*_accepting(m, model, out, data)["fidelity"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "fid.json").read_text())
    net = ir.load(out / "net.h5")
    neurons = {p.name for p in net.populations() if p.neuron.spiking}
    for point in rep["points"]:
        rows = {row["layer"]: row for row in point["layers"]}
        assert {p.name for p in net.populations()} | {o.name for o in net.operators()} == set(rows)
        for name in neurons:
            assert rows[name]["count_mismatch"] is not None and 0 <= rows[name]["count_mismatch"] <= 1
            assert rows[name]["decode_error_ann"] is not None
        if point["timesteps"] == 1 and m == "pmsm":   # PMSM at T = 1 is the QANN (float32 ANN record)
            assert all(rows[n]["decode_error_ann"] <= 1e-6 for n in neurons), \
                {n: rows[n]["decode_error_ann"] for n in neurons}
    assert rep["points"][0]["timesteps"] == 1 and rep["points"][1]["timesteps"] == T
