"""Fixed-point ECMT ViTs (issue 9 item 3): quantisation to a profile, the bit-accurate operator
simulator against its plain integer reference (equality, every node, every step), the MT neuron's
integer rule, bad inputs, and loihi2 fixed point vs float accuracy on the digits ViT."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from spikeport import compiler, ir
from spikeport.compiler import QuantizationError
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.ir import operators as O
from spikeport.models.digits_vit import DigitsViT
from spikeport.simulator import simulate
from spikeport.simulator.fixed_operators import FixedMT, isqrt, rdiv
from spikeport.simulator.reference_operators import run_reference
from spikeport.simulator.transformer_fixed import simulate_operators_fixed

from conftest import export_onnx, fixed_run_equals_reference, tiny_vit as _tiny




# ---------------------------------------------------------------------- integer helpers and the MT rule
def test_rdiv_rounds_half_up_and_isqrt_is_exact():
    a = torch.arange(-20, 21, dtype=torch.int64)
    want = np.floor(a.numpy() / 4 + 0.5).astype(np.int64)
    assert torch.equal(rdiv(a, 4), torch.as_tensor(want))
    q = torch.tensor([0, 1, 2, 3, 4, 15, 16, 17, (1 << 62) - 1, (1 << 40) + 12345, 10 ** 18], dtype=torch.int64)
    import math
    assert isqrt(q).tolist() == [math.isqrt(int(v)) for v in q]


def test_fixed_mt_methods_md_example_in_integers():
    """methods.md's MT example (theta1 = theta2 = 1, n = 3, input [2.6, 0, 0] -> [2, 1, 0], v = -0.4)
    with one real unit = 0.1: theta = 10, input 26 -> events [20, 10, 0] (levels 2, 1, 0), v = -4."""
    pop = ir.Population("mt", (1,), O.MultiThreshold(theta1=np.array(10), theta2=np.array(10), levels=3,
                                                     v_init=np.array(0)),
                        ir.SpikePayload(kind="graded", bits=7, min_level=-40, max_level=40))
    k = FixedMT(pop, 1, 24, "cpu")
    out = [k.step(torch.tensor([[x]])) for x in (26, 0, 0)]
    assert [int(s) for s, _ in out] == [2, 1, 0] and [int(e) for _, e in out] == [20, 10, 0]
    assert int(k.v) == -4


# ---------------------------------------------------------------------- simulator == integer reference
CASES = [("vit", 0, dict(dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3), "loihi2"),
         ("vit", 1, dict(dim=12, depth=2, heads=3, mlp_ratio=1, patch=4, classes=4), "spinnaker2"),
         ("encoder", 2, dict(dim=8, depth=1, heads=1, mlp_ratio=2, patch=4, classes=3), "loihi2"),
         ("encoder", 3, dict(dim=16, depth=1, heads=2, mlp_ratio=1, patch=2, classes=5), "spinnaker1")]


@pytest.mark.parametrize("kind,seed,kw,profile", CASES)
def test_fixed_simulator_equals_integer_reference(kind, seed, kw, profile, tmp_path):
    ann = _tiny(kind, seed, tmp_path, **kw)
    rng = np.random.default_rng(seed)
    calib = rng.random((40, 1, 8, 8)).astype(np.float32)
    net = convert(ann, calib, "ecmt", levels=4 + seed % 3)
    qnet, table = compiler.quantize(net, profile)
    assert table.operators and all(r["arithmetic"] in ("fixed", "none") for r in table.operators)
    x = rng.random((3, 1, 8, 8)).astype(np.float32)
    T = 7
    res, ref = fixed_run_equals_reference(qnet, x, T)
    assert any(np.any(ref[p.name] != 0) for p in qnet.populations() if isinstance(p.neuron, O.MultiThreshold))


def test_saved_quantised_vit_reloads_and_simulates_identically(tmp_path):
    ann = _tiny("vit", 4, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    calib = np.random.default_rng(4).random((30, 1, 8, 8)).astype(np.float32)
    qnet, _ = compiler.quantize(convert(ann, calib, "ecmt"), "loihi2")
    ir.save(qnet, tmp_path / "q.h5")
    back = ir.load(tmp_path / "q.h5")
    a = simulate(qnet, calib[:5], 6)
    b = simulate(back, calib[:5], 6)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert a.quantized and b.quantized
    c = simulate(back, calib[:5], 6, record_spikes=True)   # MT levels per step, as the float simulator keeps them
    np.testing.assert_array_equal(c.outputs, a.outputs)
    mts = [p for p in back.populations() if isinstance(p.neuron, O.MultiThreshold)]
    assert set(c.spikes) == {p.name for p in mts}
    for p in mts:
        assert c.spikes[p.name].shape == (5, 6) + tuple(p.shape)
        np.testing.assert_array_equal((c.spikes[p.name] != 0).sum(axis=1), c.spike_counts[p.name])
        assert np.all(np.abs(c.spikes[p.name]) <= 2 ** (p.neuron.levels - 1))


# ---------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("profile", ["loihi1", "generic45nm"])
def test_profiles_without_wide_graded_payloads_are_refused_by_name(profile, tmp_path):
    ann = _tiny("vit", 7, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    net = convert(ann, np.random.default_rng(7).random((20, 1, 8, 8)).astype(np.float32), "ecmt")
    with pytest.raises(QuantizationError, match=rf"profile '{profile}': payload_bits = \d+ is below"):
        compiler.quantize(net, profile)


def test_quantiser_names_the_layer_when_mt_levels_exceed_the_payload(tmp_path):
    ann = _tiny("vit", 5, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    calib = np.random.default_rng(5).random((20, 1, 8, 8)).astype(np.float32)
    net = convert(ann, calib, "ecmt", levels=24)
    with pytest.raises(QuantizationError, match=r"layer '.*_mt'.*levels = 24.*payload"):
        compiler.quantize(net, "loihi2")


def test_loading_a_quantised_operator_with_an_out_of_range_table_names_the_node(tmp_path):
    import h5py
    ann = _tiny("vit", 6, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    calib = np.random.default_rng(6).random((20, 1, 8, 8)).astype(np.float32)
    qnet, _ = compiler.quantize(convert(ann, calib, "ecmt"), "loihi2")
    gelu = next(o for o in qnet.operators() if isinstance(o, O.GELUEC))
    gelu.params["lut"] = gelu.params["lut"].copy()
    gelu.params["lut"][0] = 1 << 40
    with pytest.raises(ir.IRError, match=rf"{gelu.name}.*lut.*exceeds"):
        ir.check_limits(qnet)
    gelu.params["lut"][0] = 0
    del gelu.params["in_mult"]
    with pytest.raises(ir.IRError, match=rf"{gelu.name}.*in_mult.*missing"):
        ir.check_limits(qnet)


# ---------------------------------------------------------------------- must show: loihi2 fixed vs float
def test_digits_vit_loihi2_fixed_point_within_one_point_of_float_at_T16(tmp_path):
    """All 449 test digits, shipped digits ViT (timm layout) given as ONNX, ecmt (n = 8, p = 99) on 500
    training images, quantised to loihi2, T = 16: |acc_fixed - acc_float| <= 1 point. Also the
    fixed-point run equals the integer reference on a few samples (every node, every step)."""
    from spikeport.datasets import load_digits_split
    from spikeport.models.digits_vit import pretrained_digits_vit
    from spikeport.simulator.transformer import simulate_operators

    x_train, _, x_test, y_test = load_digits_split(0)
    ann = load_model(export_onnx(pretrained_digits_vit("vit"), tmp_path / "vit.onnx"))
    net = convert(ann, x_train[:500], "ecmt")
    qnet, table = compiler.quantize(net, "loihi2")
    assert {r["arithmetic"] for r in table.operators} == {"fixed", "none"}
    _, f = simulate_operators(net, x_test, 16, checkpoints=(16,), batch_size=512)
    rq, q = simulate_operators_fixed(qnet, x_test, 16, checkpoints=(16,), batch_size=512)
    acc_f = 100 * float(np.mean(f[16].argmax(1) == y_test))
    acc_q = 100 * float(np.mean(q[16].argmax(1) == y_test))
    assert len(y_test) == 449
    assert abs(acc_q - acc_f) <= 1.0, (acc_f, acc_q)
    assert acc_q >= 95.0
    assert sum(v.get("saturation_events", 0) for v in rq.layers.values()) == 0
    trace = {}
    simulate_operators_fixed(qnet, x_test[:2], 4, trace=trace)
    ref, _ = run_reference(qnet, x_test[:2], 4)
    for name in ref:
        np.testing.assert_array_equal(trace[name], ref[name], err_msg=name)


# ---------------------------------------------------------------------- the command line
def test_cli_compile_simulate_fidelity_on_a_tiny_vit_and_refusals(tmp_path):
    import json

    from typer.testing import CliRunner

    from spikeport.cli import app
    runner = CliRunner()
    torch.manual_seed(8)
    model = DigitsViT(dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3).eval()
    onnx_path = export_onnx(model, tmp_path / "vit.onnx")
    rng = np.random.default_rng(8)
    np.savez(tmp_path / "calib.npz", x=rng.random((30, 1, 8, 8)).astype(np.float32))
    np.savez(tmp_path / "test.npz", x=rng.random((6, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 6))
    net, qnet = tmp_path / "net.h5", tmp_path / "qnet.h5"
    r = runner.invoke(app, ["convert", onnx_path, "--calib", str(tmp_path / "calib.npz"), "--method", "ecmt", "--out", str(net)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compile", str(net), "--profile", "loihi1", "--out", str(qnet)])
    assert r.exit_code == 2 and "loihi1" in r.output and "payload_bits" in r.output and not qnet.exists()
    r = runner.invoke(app, ["compile", str(net), "--profile", "loihi2", "--out", str(qnet), "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    assert "LayerNormEC" in r.output and "embedded" in r.output and "fixed" in r.output
    table = json.loads((tmp_path / "q.json").read_text())
    assert table["operators"] and table["operator_max_timesteps"] >= 256
    r = runner.invoke(app, ["simulate", str(qnet), "--data", str(tmp_path / "test.npz"), "--timesteps", "5",
                            "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    sim = json.loads((tmp_path / "s.json").read_text())
    assert sim["quantized"] and {o["arithmetic"] for o in sim["operators"].values()} == {"fixed", "none"}
    assert "operators:" in r.output and "embedded (fixed)" in r.output
    r = runner.invoke(app, ["fidelity", onnx_path, str(net), str(qnet), "--data", str(tmp_path / "test.npz"),
                            "--timesteps", "4,6", "--json", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    fid = json.loads((tmp_path / "f.json").read_text())
    rows = {row["layer"]: row for row in fid["points"][-1]["layers"]}
    ln = next(o.name for o in ir.load(qnet).operators() if isinstance(o, O.LayerNormEC))
    assert rows[ln]["neuron"] == "LayerNormEC (embedded, fixed)" and rows[ln]["decode_error_fixed"] >= 0
    assert any(row["neuron"] == "MultiThreshold" for row in rows.values())


@pytest.mark.skipif(os.environ.get("SPIKEPORT_TEST_DEVICE", "cuda").startswith("cuda") and not torch.cuda.is_available(),
                    reason="needs CUDA (SPIKEPORT_TEST_DEVICE=cpu dry-runs it)")
def test_fixed_operator_network_on_cuda_equals_cpu(tmp_path):
    dev = os.environ.get("SPIKEPORT_TEST_DEVICE", "cuda")
    ann = _tiny("vit", 9, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    x = np.random.default_rng(9).random((20, 1, 8, 8)).astype(np.float32)
    qnet, _ = compiler.quantize(convert(ann, x, "ecmt"), "loihi2")
    a, b = {}, {}
    simulate_operators_fixed(qnet, x[:4], 6, trace=a)
    simulate_operators_fixed(qnet, x[:4], 6, trace=b, device=dev)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_demo_model_vit_runs_the_pipeline(tmp_path):
    import json

    from typer.testing import CliRunner

    from spikeport.cli import app
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--model", "vit", "--out", str(out), "--timesteps", "2"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"] == "digits_vit" and rep["method"] == "ecmt" and rep["profile"] == "loihi2"
    assert ir.load(out / "qnet.h5").quantized and (out / "accuracy_vs_timesteps.png").exists()
    layers = rep["fidelity"]["points"][0]["layers"]
    assert any(row["neuron"] == "SoftmaxEC (embedded, fixed)" for row in layers)
    for step in ("energy", "resources"):   # either reported, or skipped with the reason printed
        assert (step in rep) != (step in rep["skipped"])
        if step in rep["skipped"]:
            assert f"{step}: skipped for the ViT" in r.output
