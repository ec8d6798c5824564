"""AIF on Vision Transformers (paper 000 on ECMT's placements, convert/aif_vit.py): the product form
and the spike-count formula as exact closed forms, the structure of converted digits ViTs (both
definitions, ONNX and .pt2), the layer-wise baseline, HDF5 round trip, and clear refusals."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from spikeport import ir
from spikeport.convert import ConversionError, convert
from spikeport.convert.aif_vit import channel_map
from spikeport.convert.ecmt import ECMT
from spikeport.frontend import load_model
from spikeport.frontend.ann_eval import evaluate_graph
from spikeport.ir import operators as O
from spikeport.models.digits_vit import DigitsViT, pretrained_digits_vit
from spikeport.simulator.operators import MatMulECState
from spikeport.simulator.transformer import simulate_operators

from conftest import export_onnx, export_pt2

SMALL = dict(n_offset=11, n_threshold=10, max_values=1024)  # a coarse grid keeps the suite fast


# ---------------------------------------------------------------------- the product form (exact)
def dyadic(rng, shape, lo=-8, hi=9, bits=3) -> np.ndarray:
    """Exact rationals k / 2^bits as an object array of Fractions."""
    return np.array([Fraction(int(v), 2 ** bits) for v in rng.integers(lo * 2 ** bits, hi * 2 ** bits, int(np.prod(shape)))],
                    dtype=object).reshape(shape)


def test_aif_product_form_sums_to_Q_K_exactly_and_is_what_the_matmul_operator_accumulates():
    """methods.md s. 2 on exact rationals. q_hat(t) = s_q(t) Theta_q + Z_q (channel-wise, channels =
    the contracted axis d), likewise k_hat; P(t) = Q(t) k_hat(t)^T + q_hat(t) K(t)^T - q_hat(t) k_hat(t)^T.
    After every t: sum_{i<=t} P(i) == Q(t) K(t)^T; the MatMulEC kernel that runs the converted ViT's
    products, fed q_hat and k_hat^T, holds S_K(t) == that sum and its anytime outputs sum to
    Q(t) K(t)^T / t; paper 000 Eq. 25 splits q_hat k_hat^T into spike-driven terms exactly."""
    rng = np.random.default_rng(0)
    n, m, d = 3, 4, 5
    th_q, th_k = (np.array([Fraction(int(v), 4) for v in rng.integers(1, 13, d)], dtype=object) for _ in range(2))
    z_q, z_k = dyadic(rng, (d,)), dyadic(rng, (d,))
    ec = MatMulECState(scale=Fraction(1))
    Q = K = total_p = total_o = None
    for t in range(1, 17):
        s_q = rng.integers(-1, 2, (n, d)).astype(object)
        s_k = rng.integers(-1, 2, (m, d)).astype(object)
        q_hat = s_q * th_q + z_q
        k_hat = s_k * th_k + z_k
        Q = q_hat if Q is None else Q + q_hat
        K = k_hat if K is None else K + k_hat
        p = Q @ k_hat.T + q_hat @ K.T - q_hat @ k_hat.T
        total_p = p if total_p is None else total_p + p
        assert np.array_equal(total_p, Q @ K.T)
        out = ec.step(q_hat, k_hat.T)
        total_o = out if total_o is None else total_o + out
        assert np.array_equal(ec.S_K, total_p)
        assert np.array_equal(total_o, (Q @ K.T) / t)
        # Eq. 25: s_q diag(Th_q Th_k) s_k^T + s_q diag(Th_q) Z_k^T + Z_q diag(Th_k) s_k^T + Z_q Z_k^T
        zq, zk = np.tile(z_q, (n, 1)), np.tile(z_k, (m, 1))
        eq25 = ((s_q * (th_q * th_k)) @ s_k.T + (s_q * th_q) @ zk.T + zq @ (s_k * th_k).T + zq @ zk.T)
        assert np.array_equal(eq25, q_hat @ k_hat.T)


# ---------------------------------------------------------------------- converted digits ViTs
@pytest.fixture(scope="module")
def vit(digits, tmp_path_factory):
    return load_model(export_onnx(pretrained_digits_vit("vit"), tmp_path_factory.mktemp("aifvit") / "vit.onnx"))


@pytest.fixture(scope="module")
def vit_aif(vit, digits):
    return convert(vit, digits[0][:300], "aif", timesteps=8, **SMALL)


@pytest.fixture(scope="module")
def vit_baseline(vit, digits):
    return convert(vit, digits[0][:300], "aif", timesteps=8, search="none")


def test_spike_count_formula_on_a_vit_channel(vit, vit_aif, digits):
    """On a channel of the converted ViT (block 0's qkv input, fed by LayerNorm: a constant current
    in C1), with its (theta_c, z_c) and the ANN's values of that channel rounded to dyadic numbers so
    float64 is exact: the decoded value after t steps is exactly theta/t * clip(floor(t (a - z)/theta),
    -t, t) + z and the event count is |that count|, for every token and sample, t = 1, 2, ..., 64.
    Then the same population inside the whole converted network (float64) against the formula on the
    ANN's own values: equal except where EC rounding crosses a floor boundary."""
    src = "blocks_blocks_0_norm1_layer_normalization"
    name = vit_aif.meta["populations"][src][0]
    pop = vit_aif[name]
    c = 5
    q = 2.0 ** -10
    th = np.round(np.asarray(pop.neuron.threshold)[:, c] / q) * q
    z = np.round(np.asarray(pop.decode_offset)[:, c] / q) * q
    assert np.all(th == th[0]) and th[0] > 0          # one threshold and offset per channel, all tokens
    assert np.array_equal(np.asarray(pop.neuron.bias)[:, c], -np.asarray(pop.decode_offset)[:, c])
    x = digits[2][:40]
    a = evaluate_graph(vit.graph, x, keep=[src], dtype=torch.float64)[src].numpy()[:, :, c]
    a = np.round(a / q) * q
    net = ir.Network(coding="C1")
    net.add(ir.Input("x", (17,), coding="analog"))
    net.add(ir.Population("aif", (17,), ir.IF(threshold=th, bias=-z, v_init=np.asarray(0.0), reset="subtract",
                                              compare=pop.neuron.compare, neg_threshold=np.asarray(0.0), neg_reset=th),
                          pop.payload, decode_scale=th, decode_offset=z))
    net.add(ir.Identity("x->aif", source="x", target="aif", weight=np.asarray(1.0)))
    net.outputs = ["aif"]
    steps = (1, 2, 4, 8, 16, 32, 64)
    for T in steps:
        res, checks = simulate_operators(net, a, T, checkpoints=steps[:steps.index(T) + 1], dtype=torch.float64)
        for t, dec in checks.items():
            count = np.clip(np.floor(t * (a - z) / th), -t, t)
            assert np.array_equal(dec, th / t * count + z), t
        assert np.array_equal(res.spike_counts["aif"], np.abs(np.clip(np.floor(T * (a - z) / th), -T, T)))
    # inside the converted network (not exact arithmetic: the EC operators round)
    a_full = evaluate_graph(vit.graph, x, keep=[src], dtype=torch.float64)[src].numpy()
    res, _ = simulate_operators(vit_aif, x, 8, dtype=torch.float64)
    th_f, z_f = np.asarray(pop.neuron.threshold), np.asarray(pop.decode_offset)
    want = th_f / 8 * np.clip(np.floor(8 * (a_full - z_f) / th_f), -8, 8) + z_f
    assert np.mean(np.isclose(res.activations[name], want, rtol=0, atol=1e-9)) > 0.999


def test_aif_vit_structure_follows_ecmt_placements(vit, vit_aif):
    net = vit_aif
    aif = [p for p in net.populations() if isinstance(p.neuron, ir.IF)]
    assert sorted(net.meta["populations"]) == sorted(ECMT().mt_sources(vit.graph))
    assert len(aif) == 16 and not any(isinstance(p.neuron, O.MultiThreshold) for p in net.populations())
    for p in aif:  # the AIF neuron: signed IF, -1 below 0, soft reset by theta, v(0) = 0, decoded s theta + z
        m = p.neuron
        assert float(np.max(np.abs(m.neg_threshold))) == 0.0 and np.array_equal(m.neg_reset, m.threshold)
        assert np.array_equal(p.decode_scale, m.threshold) and np.array_equal(m.bias, -np.asarray(p.decode_offset))
        assert p.payload.kind == "signed" and np.all(np.asarray(m.threshold) > 0)
    kinds = [type(op).__name__ for op in net.operators()]
    assert kinds.count("MatMulEC") == 4 and kinds.count("SoftmaxEC") == 2 and kinds.count("LayerNormEC") == 5
    # channels: q, k^T and v keep the qkv Linear's channels; the attention map's is (head, key token)
    g = vit.graph
    q, kt = g["blocks_blocks_0_attn_mat_mul"].inputs
    attn, v = g["blocks_blocks_0_attn_mat_mul_1"].inputs
    cq, ck, cv, ca = (channel_map(g, n) for n in (q, kt, v, attn))
    assert cq.shape == (2, 17, 16) and ck.shape == (2, 16, 17) and np.array_equal(ck, cq.transpose(0, 2, 1))
    assert np.array_equal(cq[:, 0, :], cq[:, 5, :]) and len(np.unique(cq)) == 32 == len(np.unique(cv))
    assert len(np.unique(ca)) == 34 and np.array_equal(ca[:, 3, :], ca[:, 9, :])
    for n in (q, kt):
        th = np.asarray(net[net.meta["populations"][n][0]].neuron.threshold)
        assert len(np.unique(th)) > 1  # channel-wise, not one per layer
    # a Linear after an AIF population: weight W diag(theta), bias b + W z per token
    src = "blocks_blocks_0_norm2_layer_normalization"
    pop = net[net.meta["populations"][src][0]]
    fc1 = next(p for p in net.projections() if isinstance(p, O.TokenDense) and p.source == pop.name)
    lin = g["blocks_blocks_0_mlp_fc1_mat_mul"]
    th, z = np.asarray(pop.neuron.threshold), np.asarray(pop.decode_offset)
    np.testing.assert_array_equal(fc1.weight, lin.weight.astype(np.float64) * th[0][None, :])
    np.testing.assert_allclose(net[fc1.target].neuron.bias, lin.bias + z @ lin.weight.astype(np.float64).T, rtol=1e-12)


def test_layerwise_baseline_has_one_threshold_per_value_and_no_offset(vit, vit_baseline, digits):
    net = vit_baseline
    assert net.meta["options"]["percentile"] == 99.9
    for p in (p for p in net.populations() if isinstance(p.neuron, ir.IF)):
        th = np.asarray(p.neuron.threshold)
        assert np.all(th == th.flat[0]) and not np.any(np.asarray(p.decode_offset))
        vals = evaluate_graph(vit.graph, digits[0][:300], keep=[p.source], dtype=torch.float64)[p.source].numpy()
        assert th.flat[0] == pytest.approx(np.percentile(np.abs(vals), 99.9), rel=1e-12)


def test_aif_vit_round_trips_through_hdf5_and_runs(vit_aif, digits, tmp_path):
    back = ir.load(ir.save(vit_aif, tmp_path / "aif_vit.h5"))
    x = digits[2][:16]
    ev: dict = {}
    a, ca = simulate_operators(vit_aif, x, 6, checkpoints=(3, 6), checkpoint_events=ev)
    b, cb = simulate_operators(back, x, 6, checkpoints=(3,))
    assert np.array_equal(a.outputs, b.outputs) and np.array_equal(ca[3], cb[3])
    assert all(np.array_equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)
    per_sample = sum(v.reshape(len(x), -1).sum(1) for v in a.spike_counts.values())
    assert np.array_equal(ev[6], per_sample) and np.all(ev[3] <= ev[6]) and per_sample.sum() > 0


def test_aif_beats_the_layerwise_baseline_at_T8(vit_aif, vit_baseline, digits):
    """Timm-layout ViT, T = 8, 100 test digits: channel-wise aif (coarse grid) is clearly above the
    layer-wise baseline (449 digits, full grid: 87.1 vs 69.0, docs/results/vit_methods_digits.md)."""
    x, y = digits[2][:100], digits[3][:100]
    acc = {}
    for name, net in (("aif", vit_aif), ("baseline", vit_baseline)):
        _, checks = simulate_operators(net, x, 8, checkpoints=(8,), batch_size=256)
        acc[name] = float(np.mean(checks[8].argmax(1) == y))
    assert acc["aif"] >= acc["baseline"] + 0.08, acc


def test_encoder_definition_converts_with_aif(digits, tmp_path):
    ann = load_model(export_onnx(pretrained_digits_vit("encoder"), tmp_path / "enc.onnx"))
    net = convert(ann, digits[0][:200], "aif", timesteps=4, **SMALL)
    assert sum(isinstance(p.neuron, ir.IF) for p in net.populations()) == 16
    assert any(isinstance(op, O.Mean) for op in net.operators())
    res, _ = simulate_operators(net, digits[2][:20], 4)
    assert res.outputs.shape == (20, 10) and np.all(np.isfinite(res.outputs))


def test_aif_from_pt2_equals_aif_from_onnx(vit, vit_aif, digits, tmp_path):
    """The timm-layout ViT as a torch.export program converts to the same thresholds, offsets and
    outputs as from ONNX (node names differ; values are matched by placement order)."""
    ann = load_model(export_pt2(pretrained_digits_vit("vit"), tmp_path / "vit.pt2"))
    net = convert(ann, digits[0][:300], "aif", timesteps=8, **SMALL)
    pops = [[p for p in n.populations() if isinstance(p.neuron, ir.IF)] for n in (vit_aif, net)]
    assert len(pops[0]) == len(pops[1]) == 16
    for a, b in zip(*pops):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.neuron.threshold, b.neuron.threshold, rtol=1e-9)
        np.testing.assert_allclose(a.decode_offset, b.decode_offset, rtol=1e-9, atol=1e-12)
    x = digits[2][:40]
    _, ca = simulate_operators(vit_aif, x, 8, checkpoints=(8,))
    _, cb = simulate_operators(net, x, 8, checkpoints=(8,))
    np.testing.assert_allclose(ca[8], cb[8], rtol=1e-4, atol=1e-4)


def test_aif_refuses_what_it_cannot_convert_in_a_transformer(digits):
    model = DigitsViT().eval()
    model.blocks[1].mlp.act = nn.ReLU()
    ann = load_model(model, input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match=r"method 'aif': .*node '[^']*' \(ReLU\): a ReLU inside a Transformer"):
        convert(ann, digits[0][:50], "aif", timesteps=4, **SMALL)
    with pytest.raises(ConversionError, match="timesteps=T"):
        convert(ann, digits[0][:50], "aif")


def test_cli_converts_and_simulates_a_vit_with_aif(vit, digits, tmp_path):
    from typer.testing import CliRunner

    from spikeport.cli import app
    from spikeport.simulator import simulate
    x_train, _, x_test, _ = digits
    np.savez(tmp_path / "calib.npz", x=x_train[:200])
    onnx_path = export_onnx(pretrained_digits_vit("vit"), tmp_path / "vit.onnx")
    run = CliRunner().invoke
    r = run(app, ["convert", onnx_path, "--calib", str(tmp_path / "calib.npz"), "--method", "aif", "--timesteps", "8",
                  "--opt", "n_offset=11", "--opt", "n_threshold=10", "--out", str(tmp_path / "net.h5")])
    assert r.exit_code == 0, r.output
    net = ir.load(tmp_path / "net.h5")
    assert net.meta["method"] == "aif" and sum(isinstance(p.neuron, ir.IF) for p in net.populations()) == 16
    res = simulate(net, x_test[:30], 8)  # (CLI simulate of operator networks waits on their workload estimate)
    assert res.outputs.shape == (30, 10)
