"""Fixed-point AIF and layer-wise baseline ViTs (issue 9 item 3: the signed IF populations of
``--method aif`` quantised and simulated bit-accurately): the operator-network IF rule
(compiler/quantize_signed_if.py), the simulator (simulator/transformer_fixed.py, the CNN's FixedIF)
against the plain integer reference (simulator/reference_operators.py) with equality, AIF's spike
count formula in integers, bad inputs, and the command line on the digits ViT."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeport import compiler, ir
from spikeport.compiler import QuantizationError
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.simulator.reference_operators import run_reference
from spikeport.simulator.transformer import simulate_operators
from spikeport.simulator.transformer_fixed import simulate_operators_fixed

from conftest import export_onnx, fixed_run_equals_reference, tiny_vit as _tiny

SMALL = dict(n_offset=5, n_threshold=5, max_values=256)   # a coarse grid keeps the suite fast




def _ifs(net):
    return [p for p in net.populations() if type(p.neuron) is ir.IF]


# ---------------------------------------------------------------------- simulator == integer reference
CASES = [("vit", 0, dict(dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3), "both", "loihi2"),
         ("vit", 1, dict(dim=12, depth=2, heads=3, mlp_ratio=1, patch=4, classes=4), "none", "spinnaker2"),
         ("encoder", 2, dict(dim=8, depth=1, heads=1, mlp_ratio=2, patch=4, classes=3), "none", "loihi2"),
         ("encoder", 3, dict(dim=16, depth=1, heads=2, mlp_ratio=1, patch=2, classes=5), "both", "spinnaker2")]


@pytest.mark.parametrize("kind,seed,kw,search,profile", CASES)
def test_fixed_aif_simulator_equals_integer_reference(kind, seed, kw, search, profile, tmp_path):
    """aif (search both) and the baseline (search none): every node's payload at every step (IF: the
    +-1 codes), and the readout sums, equal the plain integer reference."""
    ann = _tiny(kind, seed, tmp_path, **kw)
    rng = np.random.default_rng(seed)
    calib = rng.random((40, 1, 8, 8)).astype(np.float32)
    net = convert(ann, calib, "aif", timesteps=6, search=search, **SMALL)
    qnet, table = compiler.quantize(net, profile)
    ifs = _ifs(qnet)
    assert ifs and all(r.threshold_mant is not None for r in table.layers if r.neuron == "IF")
    for p in ifs:     # integers in state units, one event worth its threshold
        m = p.neuron
        assert np.asarray(m.threshold).dtype.kind == "i" and np.asarray(m.bias).dtype.kind == "i"
        assert np.array_equal(np.asarray(m.neg_reset), np.asarray(m.threshold))
        np.testing.assert_array_equal(np.asarray(p.decode_scale), np.asarray(m.threshold) * float(p.state_scale))
    x = rng.random((3, 1, 8, 8)).astype(np.float32)
    T = 7
    res, ref = fixed_run_equals_reference(qnet, x, T)
    assert all(set(np.unique(ref[p.name])) <= {-1, 0, 1} for p in ifs)
    assert any(np.any(ref[p.name] == -1) for p in ifs) and any(np.any(ref[p.name] == 1) for p in ifs)
    for p in ifs:     # spike counts are the codes' non-zeros
        np.testing.assert_array_equal(res.spike_counts[p.name], (ref[p.name] != 0).sum(axis=0))


@pytest.mark.skipif(os.environ.get("SPIKEPORT_TEST_DEVICE", "cuda").startswith("cuda") and not torch.cuda.is_available(),
                    reason="needs CUDA (SPIKEPORT_TEST_DEVICE=cpu dry-runs it)")
def test_fixed_aif_network_on_cuda_equals_cpu(tmp_path):
    dev = os.environ.get("SPIKEPORT_TEST_DEVICE", "cuda")
    ann = _tiny("vit", 9, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    x = np.random.default_rng(9).random((20, 1, 8, 8)).astype(np.float32)
    qnet, _ = compiler.quantize(convert(ann, x, "aif", timesteps=6, **SMALL), "loihi2")
    a, b = {}, {}
    ra, _ = simulate_operators_fixed(qnet, x[:4], 6, trace=a)
    rb, _ = simulate_operators_fixed(qnet, x[:4], 6, trace=b, device=dev)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert ra.layers == rb.layers


# ---------------------------------------------------------------------- AIF's count formula in integers
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10 ** 6), T=st.integers(1, 40), profile=st.sampled_from(["loihi2", "spinnaker2"]))
def test_quantised_aif_channel_counts_follow_the_spike_count_formula_in_integers(seed, T, profile):
    """An AIF population (per-channel theta, z) on a constant input, quantised: with the integer
    per-step charge c = u + bias (u the projection's a_in << act_shift) and integer threshold th, the
    count after T steps is clip(floor(T c / th), -T, T) exactly, and simulator == reference."""
    rng = np.random.default_rng(seed)
    tokens, c = 3, 5
    th = np.tile(rng.uniform(0.05, 2.0, c), (tokens, 1))
    z = np.tile(rng.uniform(-1.0, 1.0, c), (tokens, 1))
    net = ir.Network(coding="C1")
    net.add(ir.Input("x", (tokens, c), coding="analog"))
    net.add(ir.Population("aif", (tokens, c), ir.IF(threshold=th, bias=-z, v_init=np.asarray(0.0), reset="subtract",
                                                     compare=">=", neg_threshold=np.asarray(0.0), neg_reset=th),
                          ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1),
                          decode_scale=th, decode_offset=z))
    net.add(ir.Identity("x->aif", source="x", target="aif", weight=np.asarray(1.0)))
    net.add(ir.operators.Mean("mean", inputs=["aif"], shape=(c,), axes=(0,)))    # an operator reads it
    net.outputs = ["aif"]
    net.meta["input_range"] = [-3.0, 3.0]
    net.meta["value_ranges"] = {"x": 3.0}
    qnet, _ = compiler.quantize(net, profile)
    x = rng.uniform(-3, 3, (4, tokens, c))
    trace = {}
    res, _ = simulate_operators_fixed(qnet, x, T, trace=trace)
    ref, _ = run_reference(qnet, x, T)
    for name in ref:
        np.testing.assert_array_equal(trace[name], ref[name], err_msg=name)
    dp, pop, p = qnet.datapath, qnet["aif"], qnet["x->aif"]
    inp = qnet["x"]
    xq = np.clip(np.floor(x / float(inp.scale) + 0.5), inp.payload.min_level, inp.payload.max_level).astype(np.int64)
    acc = xq * int(p.weight)
    a = acc << p.weight_exp if p.weight_exp >= 0 else acc >> -p.weight_exp
    charge = (a << dp.act_shift) + np.asarray(pop.neuron.bias, dtype=np.int64)
    thq = np.broadcast_to(np.asarray(pop.neuron.threshold, dtype=np.int64), charge.shape)
    want = np.clip(np.floor_divide(T * charge, thq), -T, T)
    np.testing.assert_array_equal(trace["aif"].sum(axis=0), want)
    # (v leaves the state range only where the count is already clipped at +-T: the formula holds there too)
    assert res.layers["aif"]["wrap_events"] == 0
    # the operator reads the decoded integers e * threshold + z_q (units of state_scale)
    zq = np.rint(np.asarray(pop.decode_offset, dtype=np.float64) / float(pop.state_scale)).astype(np.int64)
    seen = trace["aif"] * thq[None] + zq
    np.testing.assert_array_equal(trace["mean"], np.clip(seen.sum(axis=2), -(2 ** (dp.payload_bits - 1) - 1),
                                                         2 ** (dp.payload_bits - 1) - 1))


# ---------------------------------------------------------------------- bad inputs
def _one_if(**kw):
    th = np.asarray([[0.5, 1.0]])
    neuron = dict(threshold=th, bias=np.zeros((1, 2)), v_init=np.asarray(0.0), reset="subtract", compare=">=",
                  neg_threshold=np.asarray(0.0), neg_reset=th)
    neuron.update({k: v for k, v in kw.items() if k != "decode_scale"})
    net = ir.Network(coding="C1")
    net.add(ir.Input("x", (1, 2), coding="analog"))
    net.add(ir.Population("aif", (1, 2), ir.IF(**neuron), ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1),
                          decode_scale=kw.get("decode_scale", th)))
    net.add(ir.Identity("x->aif", source="x", target="aif", weight=np.asarray(1.0)))
    net.add(ir.operators.Mean("mean", inputs=["aif"], shape=(2,), axes=(0,)))
    net.outputs = ["aif"]
    net.meta["input_range"] = [-1.0, 1.0]
    return net


@pytest.mark.parametrize("kw,why", [(dict(reset="zero"), r"reset 'zero'"),
                                    (dict(leak=0.25), r"leak 0.25"),
                                    (dict(decode_scale=np.asarray([[1.0, 1.0]])), r"decode_scale differs from its threshold"),
                                    (dict(neg_reset=np.asarray([[1.0, 2.0]])), r"neg_reset differs")])
def test_if_rules_the_operator_quantiser_does_not_take_are_refused_by_layer(kw, why):
    with pytest.raises(QuantizationError, match=rf"layer 'aif'.*{why}"):
        compiler.quantize(_one_if(**kw), "loihi2")


# ---------------------------------------------------------------------- the digits ViT: accuracy, CLI
@pytest.fixture(scope="module")
def digits_vit(tmp_path_factory):
    from spikeport.models.digits_vit import pretrained_digits_vit
    return export_onnx(pretrained_digits_vit("vit"), tmp_path_factory.mktemp("aiffixed") / "vit.onnx")


@pytest.mark.slow
def test_digits_vit_baseline_loihi2_fixed_point_tracks_float(digits_vit, digits):
    """The shipped digits ViT, layer-wise baseline (T-independent), loihi2: on 120 test digits the
    fixed-point run at T = 16 is within 2 points of float, without saturation, and equals the
    integer reference on two samples (every node, every step)."""
    x_train, _, x_test, y_test = digits
    net = convert(load_model(digits_vit), x_train[:300], "aif", timesteps=16, search="none")
    qnet, _ = compiler.quantize(net, "loihi2")
    x, y = x_test[:120], y_test[:120]
    _, f = simulate_operators(net, x, 16, checkpoints=(16,), batch_size=512)
    rq, q = simulate_operators_fixed(qnet, x, 16, checkpoints=(16,), batch_size=512)
    acc_f, acc_q = (100 * float(np.mean(v[16].argmax(1) == y)) for v in (f, q))
    assert abs(acc_q - acc_f) <= 2.0 and acc_q >= 85.0, (acc_f, acc_q)
    assert sum(v.get("saturation_events", 0) + v.get("wrap_events", 0) for v in rq.layers.values()) == 0
    trace = {}
    simulate_operators_fixed(qnet, x_test[:2], 3, trace=trace)
    ref, _ = run_reference(qnet, x_test[:2], 3)
    for name in ref:
        np.testing.assert_array_equal(trace[name], ref[name], err_msg=name)


def test_cli_convert_aif_compile_loihi2_simulate_energy_resources_fidelity_on_the_digits_vit(digits_vit, digits, tmp_path):
    import json

    from typer.testing import CliRunner

    from spikeport.cli import app
    runner = CliRunner()
    x_train, _, x_test, y_test = digits
    np.savez(tmp_path / "calib.npz", x=x_train[:100])
    np.savez(tmp_path / "test.npz", x=x_test[:6], y=y_test[:6])
    net, qnet = tmp_path / "net.h5", tmp_path / "qnet.h5"
    r = runner.invoke(app, ["convert", digits_vit, "--calib", str(tmp_path / "calib.npz"), "--method", "aif",
                            "--timesteps", "4", "--opt", "n_offset=5", "--opt", "n_threshold=5", "--opt", "max_values=256",
                            "--out", str(net)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compile", str(net), "--profile", "loihi2", "--out", str(qnet), "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    table = json.loads((tmp_path / "q.json").read_text())
    assert sum(1 for row in table["layers"] if row["neuron"] == "IF") == 16
    r = runner.invoke(app, ["simulate", str(qnet), "--data", str(tmp_path / "test.npz"), "--timesteps", "4",
                            "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    sim = json.loads((tmp_path / "s.json").read_text())
    assert sim["quantized"] and "accuracy" in json.dumps(sim)
    for cmd in (["energy", str(qnet), "--data", str(tmp_path / "test.npz"), "--timesteps", "4"],
                ["resources", str(qnet)],
                ["fidelity", digits_vit, str(net), str(qnet), "--data", str(tmp_path / "test.npz"), "--timesteps", "4"]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 0, (cmd[0], r.output)
        assert "_aif" in r.output, cmd[0]


# ---------------------------------------------------------------------- Lava (the CNN's SpikeportNeuron)
def test_lava_runs_the_aif_vit_identically_to_the_simulator_and_the_reference(tmp_path):
    """The aif ViT in Lava: signed IF populations as the CNN path's SpikeportNeuron (Lava's LIF
    arithmetic), operators decoding their +-1 codes; every node's payload at every step equals the
    simulator's and the plain integer reference's, and the export folder runs the same."""
    import json

    from spikeport.backends import loihi2
    from spikeport.backends.loihi2 import transformer as LT
    ann = _tiny("vit", 0, tmp_path, dim=8, depth=1, heads=2, mlp_ratio=2, patch=4, classes=3)
    calib = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    qnet, _ = compiler.quantize(convert(ann, calib, "aif", timesteps=5, **SMALL), "loihi2")
    x = np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32)
    T = 4
    rep = loihi2.verify(qnet, x, T)
    assert rep.identical and rep.predictions_equal, str(rep)
    ifs = [p.name for p in _ifs(qnet)]
    assert set(ifs) <= set(rep.compared) and all(rep.mismatches[n] == 0 for n in ifs)
    lava, values = LT.run_operators_lava(qnet, x, T)
    ref, readout = run_reference(qnet, x, T)
    for name in values:
        np.testing.assert_array_equal(values[name], ref[name], err_msg=name)
    np.testing.assert_array_equal(lava.states[qnet.outputs[0]], readout[qnet.outputs[0]])
    assert any(np.any(values[n] == -1) for n in ifs) and any(np.any(values[n] == 1) for n in ifs)
    folder = loihi2.export(qnet, tmp_path / "lava", T)
    rows = {r["layer"]: r for r in json.loads((folder / "plan.json").read_text())["report"]}
    assert all(rows[n]["process"] == "SpikeportNeuron (signed IF)" for n in ifs)
    np.testing.assert_array_equal(loihi2.run_lava(folder, x).outputs, lava.outputs)
