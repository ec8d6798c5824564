"""Fixed-point ECMT ViTs (issue 9 item 3): quantisation to a profile, the bit-accurate operator
simulator against its plain integer reference (equality, every node, every step), the MT neuron's
integer rule, bad inputs, and loihi2 fixed point vs float accuracy on the digits ViT."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport import compiler, ir
from spikeport.compiler import QuantizationError
from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.ir import operators as O
from spikeport.models.digits_vit import DigitsTransformerEncoder, DigitsViT
from spikeport.simulator import simulate
from spikeport.simulator.fixed_operators import FixedMT, isqrt, rdiv
from spikeport.simulator.reference_operators import run_reference
from spikeport.simulator.transformer_fixed import simulate_operators_fixed

from conftest import export_onnx


def _tiny(kind: str, seed: int, tmp_path, **kw):
    torch.manual_seed(seed)
    model = (DigitsViT if kind == "vit" else DigitsTransformerEncoder)(**kw).eval()
    with torch.no_grad():   # larger random weights than the init so every operator sees varied values
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return load_model(export_onnx(model, tmp_path / f"{kind}{seed}.onnx"))


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
    trace = {}
    res, _ = simulate_operators_fixed(qnet, x, T, batch_size=2, trace=trace)   # two batches
    ref, readout = run_reference(qnet, x, T)
    assert set(ref) == set(trace)
    for name in ref:
        np.testing.assert_array_equal(trace[name], ref[name], err_msg=name)
    out = qnet.outputs[0]
    np.testing.assert_array_equal(res.output_states[out], readout[out])
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
