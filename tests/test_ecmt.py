"""ECMT (paper 003): multi-threshold neuron, expectation compensation, matrix-product EC, the IR
operators (HDF5 v2, v1 still read) and the float accuracy of converted digits ViTs."""
from __future__ import annotations

from fractions import Fraction

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeport import ir
from spikeport.convert import ConversionError, convert
from spikeport.frontend import load_model
from spikeport.ir import operators as O
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.simulator.operators import ECState, MatMulECState, MTKernel, mt_fire
from spikeport.simulator.transformer import simulate_operators

from conftest import export_onnx


# ---------------------------------------------------------------------- multi-threshold neuron
def mt_reference(m: float, t1: float, t2: float, n: int, neg_compare: str = "<") -> int:
    """The paper's piecewise MTH function (Eq. 25) written out scalar by scalar."""
    for p in range(n, 0, -1):
        if m >= 2 ** (p - 1) * t1 - t1 / 2:
            return 2 ** (p - 1)
    for p in range(n, 0, -1):
        th = -(2 ** (p - 1) * t2 - t2 / 2)
        if (m < th) if neg_compare == "<" else (m <= th):
            return -(2 ** (p - 1))
    return 0


def test_methods_md_mt_example():
    """theta1 = theta2 = 1, n = 3, input [2.6, 0, 0] -> outputs [2, 1, 0], final v = -0.4."""
    model = O.MultiThreshold(theta1=np.array(1.0), theta2=np.array(1.0), levels=3)
    k = MTKernel(model, (1,), 1, "cpu", torch.float64)
    outs = [float(k.step(torch.tensor([[x]], dtype=torch.float64))) for x in (2.6, 0.0, 0.0)]
    assert outs == [2.0, 1.0, 0.0]
    assert float(k.v) == (2.6 - 2.0) - 1.0  # exactly the float64 arithmetic of v = m - value
    assert float(k.v) == pytest.approx(-0.4, abs=1e-15)


def test_mt_fire_equals_the_piecewise_definition_on_a_grid():
    t1, t2, n = 0.75, 1.25, 4
    m = np.concatenate([np.linspace(-12, 8, 4001), [t1 / 2, -t2 / 2, 7.5 * t1 - t1 / 2, -(8 - 0.5) * t2]])
    for cmp in ("<", "<="):
        got = mt_fire(torch.tensor(m), torch.tensor(t1), torch.tensor(t2), n, cmp).numpy()
        want = np.array([mt_reference(float(v), t1, t2, n, cmp) for v in m])
        np.testing.assert_array_equal(got, want)
    # the two comparisons differ exactly at m = -theta2/2
    at = torch.tensor([-t2 / 2], dtype=torch.float64)
    assert float(mt_fire(at, torch.tensor(t1), torch.tensor(t2), n, "<")) == 0.0
    assert float(mt_fire(at, torch.tensor(t1), torch.tensor(t2), n, "<=")) == -1.0


# ---------------------------------------------------------------------- closed forms (paper 003)
def fraction_matrix(rng, shape) -> np.ndarray:
    return np.array([Fraction(int(v), int(d)) for v, d in zip(rng.integers(-9, 10, int(np.prod(shape))),
                                                              rng.integers(1, 5, int(np.prod(shape))))],
                    dtype=object).reshape(shape)


def test_matrix_product_ec_sums_to_SA_SB_over_T_exactly():
    """Thm 4.2 on exact rationals: after every t, sum_{i<=t} O(i) == S_A(t) S_B(t) / t."""
    rng = np.random.default_rng(0)
    ec = MatMulECState(scale=Fraction(1, 3))
    S_A = S_B = total = None
    for t in range(1, 9):
        a, b = fraction_matrix(rng, (3, 4)), fraction_matrix(rng, (4, 2))
        out = ec.step(a, b)
        S_A = a if S_A is None else S_A + a
        S_B = b if S_B is None else S_B + b
        total = out if total is None else total + out
        assert np.array_equal(total, (S_A @ S_B) * Fraction(1, 3) / t)
        assert np.array_equal(ec.S_K, S_A @ S_B)


def test_ec_chain_with_identity_neurons_equals_the_ann_at_every_step_exactly():
    """Thm 4.1 on exact rationals: a chain of EC modules (rational F) with identity neurons between
    them has running mean output F2(F1(mean input)) at every step."""
    f1 = lambda x: x * x - x / 3          # noqa: E731
    f2 = lambda x: x / (1 + x * x)          # noqa: E731
    rng = np.random.default_rng(1)
    e1, e2 = ECState(f1), ECState(f2)
    S = total = None
    for t in range(1, 10):
        x = fraction_matrix(rng, (5,))
        out = e2.step(e1.step(x))
        S = x if S is None else S + x
        total = out if total is None else total + out
        mean_in = S / t
        assert np.array_equal(total / t, np.array([f2(f1(v)) for v in mean_in], dtype=object))


def test_ec_chain_of_layernorm_gelu_softmax_matches_the_ann_modules_every_step():
    """The same theorem with the real modules in float64 (not exact arithmetic: 1e-12 relative)."""
    torch.manual_seed(0)
    w, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    fns = [lambda x: F.layer_norm(x, (6,), w, b, 1e-6), lambda x: F.gelu(x), lambda x: torch.softmax(x * 0.7, -1)]
    ecs = [ECState(f) for f in fns]
    S = torch.zeros(4, 6, dtype=torch.float64)
    total = torch.zeros(4, 6, dtype=torch.float64)
    for t in range(1, 33):
        x = torch.randn(4, 6, dtype=torch.float64)
        v = x
        for ec in ecs:
            v = ec.step(v)
        S += x
        total += v
        ann = S / t
        for f in fns:
            ann = f(ann)
        torch.testing.assert_close(total / t, ann, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- converted digits ViTs
@pytest.fixture(scope="module")
def vit_net(digits, tmp_path_factory):
    x_train = digits[0]
    model = pretrained_digits_vit("vit")
    ann = load_model(export_onnx(model, tmp_path_factory.mktemp("vit") / "vit.onnx"))
    return ann, convert(ann, x_train[:500], "ecmt")


def test_ecmt_structure_follows_the_paper(vit_net):
    ann, net = vit_net
    mts = [p for p in net.populations() if isinstance(p.neuron, O.MultiThreshold)]
    # per block: qkv input, q, k, v, softmax output, proj input, fc1 input, fc2 input; 2 blocks
    assert len(mts) == 16 and all(p.neuron.levels == 8 for p in mts)
    kinds = {type(op).__name__: 0 for op in net.operators()}
    for op in net.operators():
        kinds[type(op).__name__] += 1
    assert kinds["LayerNormEC"] == 5 and kinds["GELUEC"] == 2 and kinds["SoftmaxEC"] == 2 and kinds["MatMulEC"] == 4
    assert all(op.runs_on in O.RUNS_ON and op.arithmetic in O.ARITHMETIC for op in net.operators())
    qkv = next(p for p in net.projections() if isinstance(p, O.TokenDense))
    assert qkv.weight.shape == (96, 32) and net[qkv.source].shape == (17, 32)  # one shared weight for 17 tokens
    head = net[net.outputs[0]]
    head_src = net[net.incoming(head.name)[0].source]
    assert isinstance(head.neuron, ir.Readout) and isinstance(head_src, O.Rearrange)  # analog class token, no MT
    for p in mts:  # theta1 / theta2 as calibrated (percentiles; softmax outputs: the reference code's 0.0125)
        t = net.meta["calibration"][p.source]
        assert float(p.neuron.theta1) == t["theta1"] > 0 and float(p.neuron.theta2) == t["theta2"] > 0


def test_ecmt_softmax_outputs_get_the_reference_codes_fixed_threshold(vit_net, digits):
    """MT neurons on softmax outputs: theta1 = theta2 = 0.0125 (the reference code's --softmax_p), at
    least 2^-(n-1) so the top level reaches a probability of 1; ``softmax_theta=0`` restores the
    percentile rule (theta1 = the 99th percentile of the attention probabilities). Every other MT
    neuron keeps its percentiles."""
    ann, net = vit_net
    mts = [p for p in net.populations() if isinstance(p.neuron, O.MultiThreshold)]
    soft = [p for p in mts if "softmax" in p.source]
    assert len(soft) == 2 and all(float(p.neuron.theta1) == float(p.neuron.theta2) == 0.0125 for p in soft)
    pct = convert(ann, digits[0][:500], "ecmt", softmax_theta=0.0)
    cal = pct.meta["calibration"]
    for p in soft:
        assert 0.5 < cal[p.source]["theta1"] <= 1.0  # 99th percentile of peaked attention maps
    assert all(cal[p.source] == net.meta["calibration"][p.source] for p in mts if p not in soft)
    few = convert(ann, digits[0][:100], "ecmt", levels=4)
    assert {few.meta["calibration"][p.source]["theta1"] for p in soft} == {0.125}  # 2^3 * 0.125 = 1
    with pytest.raises(ConversionError, match="softmax_theta 2.0 must be in"):
        convert(ann, digits[0][:100], "ecmt", softmax_theta=2.0)


def check_accuracy(ann, net, x_test, y_test, bound16: float) -> dict:
    """ANN vs ecmt float SNN on the 449 test digits at T = 4, 8, 16 (one run, read at each t).

    Bounds from issue 9: within 3 points at T = 8 and ``bound16`` at T = 16. The SNN's logits
    approach the ANN's as T grows (their mean distance must fall at every doubling of T); accuracy
    itself moves by a few boundary samples between T values, so it is bounded, not ordered (the
    T = 32, 64 figures are in benchmarks/ecmt_digits_vit.py, too slow for the suite)."""
    ann_acc = ann.evaluate(x_test, y_test)["accuracy"]
    ref = ann.forward(x_test)
    _, checks = simulate_operators(net, x_test, 16, checkpoints=(4, 8, 16), batch_size=512)
    acc = {t: float(np.mean(v.argmax(1) == y_test)) for t, v in checks.items()}
    dist = {t: float(np.abs(v - ref).mean()) for t, v in checks.items()}
    assert ann_acc - acc[8] <= 0.03, (ann_acc, acc)
    assert ann_acc - acc[16] <= bound16, (ann_acc, acc)
    assert dist[4] > dist[8] > dist[16], dist
    return acc


def test_ecmt_vit_accuracy_within_3_points_at_T8_and_1_point_at_T16(vit_net, digits):
    check_accuracy(*vit_net, digits[2], digits[3], bound16=0.01)


def test_ecmt_encoder_definition_converts_within_bounds(digits, tmp_path):
    """The nn.TransformerEncoder definition: measured 96.21 vs ANN 96.88 at T = 16 (float32) with the
    reference code's softmax threshold (95.77, one sample outside, with the percentile rule there)."""
    x_train, _, x_test, y_test = digits
    ann = load_model(export_onnx(pretrained_digits_vit("encoder"), tmp_path / "enc.onnx"))
    net = convert(ann, x_train[:500], "ecmt")
    assert any(isinstance(op, O.Mean) for op in net.operators())
    check_accuracy(ann, net, x_test, y_test, bound16=0.01)


CURVE_T = (4, 8, 16, 32)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="open (docs/results/ecmt_digits_vit.md): both bounds hold (vit +0.22 / 0.00, "
                   "encoder -0.44 / -0.67 at T = 8 / 16) but both curves drop one sample of 449 from T = 8 to 16 "
                   "(96.44 -> 96.21); 'never falls' holds on 22 % / 34 % of bootstrap resamples of the test set")
@pytest.mark.parametrize("kind", ["vit", "encoder"])
def test_ecmt_digits_vits_meet_issue_9_bounds_and_do_not_fall_as_T_grows(kind, digits, tmp_path):
    """Issue 9's accuracy must-show on both shipped digits ViTs given as ONNX (timm layout and
    nn.TransformerEncoder), ecmt with the paper's n = 8, p = 99 (softmax outputs at the reference
    code's theta 0.0125) on 500 training images, float32
    float simulation of all 449 test digits, one 32-step run read at T = 4, 8, 16, 32: within 3 points
    of the ANN at T = 8 and 1 point at T = 16, accuracy never falls from one T to the next, and the
    mean |SNN logit - ANN logit| falls at every doubling of T (expectation compensation's 1/T)."""
    x_train, _, x_test, y_test = digits
    ann = load_model(export_onnx(pretrained_digits_vit(kind), tmp_path / f"{kind}.onnx"))
    net = convert(ann, x_train[:500], "ecmt")
    ref = ann.forward(x_test)
    ann_ok = int(np.sum(ref.argmax(1) == y_test))
    _, checks = simulate_operators(net, x_test, max(CURVE_T), checkpoints=CURVE_T, batch_size=512)
    ok = {t: int(np.sum(v.argmax(1) == y_test)) for t, v in checks.items()}  # correct samples of 449
    dist = {t: float(np.abs(v - ref).mean()) for t, v in checks.items()}
    n = len(y_test)
    assert n == 449 and ann_ok >= 0.95 * n, ann_ok
    assert ann_ok - ok[8] <= 0.03 * n, (ann_ok, ok)
    assert ann_ok - ok[16] <= 0.01 * n, (ann_ok, ok)
    assert all(ok[a] <= ok[b] for a, b in zip(CURVE_T, CURVE_T[1:])), (ann_ok, ok)
    assert all(dist[a] > dist[b] for a, b in zip(CURVE_T, CURVE_T[1:])), dist


def test_ecmt_refuses_what_it_cannot_convert(digits_onnx, calib_x):
    with pytest.raises(ConversionError, match=r"node '.*' \((BatchNorm|ReLU|Conv2d)\)"):
        convert(load_model(digits_onnx), calib_x, "ecmt")
    with pytest.raises(ConversionError, match="levels 0 must be in 1..30"):
        convert(load_model(digits_onnx), calib_x, "ecmt", levels=0)


# ---------------------------------------------------------------------- IR: current schema, v1 still read
def test_operator_network_round_trips_through_hdf5(vit_net, digits, tmp_path):
    _, net = vit_net
    path = ir.save(net, tmp_path / "vit.h5")
    with h5py.File(path, "r") as f:
        assert int(f.attrs["schema_version"]) == ir.SCHEMA_VERSION == 3
    back = ir.load(path)
    assert [type(n).__name__ for n in back.nodes()] == [type(n).__name__ for n in net.nodes()]
    x = digits[2][:20]
    a, ca = simulate_operators(net, x, 6, checkpoints=(3,))
    b, cb = simulate_operators(back, x, 6, checkpoints=(3,))
    assert np.array_equal(a.outputs, b.outputs) and np.array_equal(ca[3], cb[3])
    assert all(np.array_equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)


def test_schema_v1_files_still_load(digits_onnx, calib_x, tmp_path):
    net = convert(load_model(digits_onnx), calib_x, "if")
    path = ir.save(net, tmp_path / "v1.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 1
    ir.reseal(path)            # the edit made on purpose (a sealed file edited with h5py is refused)
    back = ir.load(path)
    assert [n.name for n in back.nodes()] == [n.name for n in net.nodes()]


def test_bad_operators_are_refused_naming_the_node(vit_net, tmp_path):
    _, net = vit_net
    bad = net.copy()
    op = next(o for o in bad.operators() if isinstance(o, O.Rearrange))
    op.index = op.index + 10 ** 6
    with pytest.raises(ir.IRError, match=rf"operator {op.name!r}: index outside its input"):
        bad.validate()
    bad = net.copy()
    mm = next(o for o in bad.operators() if isinstance(o, O.MatMulEC))
    mm.shape = (1, 2, 3)
    with pytest.raises(ir.IRError, match=rf"operator {mm.name!r}: .* does not give its shape"):
        bad.validate()
    bad = net.copy()
    ec = next(o for o in bad.operators() if isinstance(o, O.LayerNormEC))
    ec.runs_on = "gpu"
    with pytest.raises(ir.IRError, match=r"runs_on 'gpu' must be one of"):
        ir.save(bad, tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()
