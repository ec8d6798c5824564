"""``--method mbe`` on ViTs (paper 001, issue 11): MBE operators, the staged C3 simulation, the
digits-ViT accuracy without training, HDF5 round trip and clean refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeport import ir
from spikeport.convert import ConversionError, convert
from spikeport.convert import mbe_ops as M
from spikeport.convert.mbe_params import default_fit
from spikeport.errors import SpikeportError, UnsupportedError
from spikeport.frontend import load_model
from spikeport.ir import operators_mbe as OM
from spikeport.ir.neurons_mbe import MBE
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.simulator import simulate
from spikeport.simulator.transformer_mbe import run_mbe, simulate_mbe

from conftest import export_onnx, export_pt2

ANN_ACC = {"vit": 0.9621, "encoder": 0.9688}   # the shipped models on the 449 test digits (issue 11)


class _Tiny(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.ln = nn.LayerNorm(8, eps=1e-5)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return torch.softmax(3.0 * x, dim=-1) if self.kind == "softmax" else self.ln(x)


def _tiny(kind: str):
    torch.manual_seed(0)
    m = _Tiny(kind).eval()
    x = np.random.RandomState(0).randn(40, 4, 8).astype(np.float32)
    ann = load_model(m, input_shape=(4, 8))
    return m, ann, x, convert(ann, x, "mbe")


def test_run_mbe_equals_the_spike_sum_of_mbe_ops():
    """The simulator's MBE kernel (mirrored branches run once on |x|) equals s . a of mbe_ops."""
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    for fn in ("gelu", "identity", "tanh"):
        fit = default_fit(fn)
        tabs = tuple(torch.as_tensor(a) for a in fit.neuron().tables())
        out, fired = run_mbe(x, tabs)
        s, a = M.mbe_spikes(fit, x)
        torch.testing.assert_close(out, s @ a, rtol=1e-12, atol=1e-12)
        assert torch.equal(fired, s.sum(-1).to(torch.int64))


def test_softmax_operators_equal_the_mbe_reference():
    """Exp2Split -> MBE(2^f) -> Ldexp -> MantExp -> MBE(1/M) -> product form -> Ldexp equals
    mbe_ops.mbe_softmax (Eq. 12 product form with S = s (x) s', float64) and is close to softmax."""
    m, ann, x, net = _tiny("softmax")
    kinds = sorted(type(op).__name__ for op in net.operators())
    assert kinds == ["Exp2Split", "Exp2Split", "Ldexp", "Ldexp", "MBEProduct", "MantExp", "MantExp"]
    assert all(op.runs_on in ("neuro", "embedded", "host") for op in net.operators())
    res, counts = simulate_mbe(net, x, 16)
    fits = {f: default_fit(f) for f in ("exp2", "reciprocal", "identity")}
    ref = M.mbe_softmax(torch.as_tensor(x, dtype=torch.float64) * 3.0, fits["exp2"], fits["reciprocal"], fits["identity"])
    np.testing.assert_allclose(res.outputs, ref.numpy(), rtol=1e-9, atol=1e-12)
    exact = torch.softmax(torch.as_tensor(x, dtype=torch.float64) * 3.0, -1).numpy()
    assert np.abs(res.outputs - exact).max() < 0.05
    assert res.steps_run == 3 * 16 == counts.depth * counts.timesteps   # MBE(2^f), MBE(1/M), the product's identities


def test_layernorm_operators_equal_the_mbe_reference():
    m, ann, x, net = _tiny("layernorm")
    dd = next(op for op in net.operators() if isinstance(op, OM.MBEProduct) and op.inputs[0] == op.inputs[1])
    res, counts = simulate_mbe(net, x, 16)
    ref = M.mbe_layernorm(torch.as_tensor(x, dtype=torch.float64), default_fit("invsqrt"), default_fit("identity"),
                          m.ln.weight.detach().numpy(), m.ln.bias.detach().numpy(), 1e-5, scale=dd.scale_a)
    np.testing.assert_allclose(res.outputs, ref.numpy(), rtol=1e-9, atol=1e-9)
    exact = m(torch.as_tensor(x)).detach().numpy()
    assert np.abs(res.outputs - exact).mean() < 0.1   # limited by the 1/sqrt(M) fit (docs/results/mbe_fits.md)
    # LayerNorm's d feeds both products: its identity neurons run (and are counted) once
    prods = [op.name for op in net.operators() if isinstance(op, OM.MBEProduct)]
    assert len(prods) == 2 and counts.product_spikes[prods[1]] < counts.product_spikes[prods[0]]
    assert res.steps_run == 3 * 16   # d's identities, MBE(1/sqrt M), the d*invstd identities


@pytest.fixture(scope="module")
def vit_mbe(digits, tmp_path_factory):
    ann = load_model(export_onnx(pretrained_digits_vit("vit"), tmp_path_factory.mktemp("vit") / "vit.onnx"))
    return ann, convert(ann, digits[0][:500], "mbe", timesteps=16)


def test_mbe_vit_structure_and_schedule(vit_mbe):
    _, net = vit_mbe
    assert net.coding == "C3" and net.inputs()[0].coding == "once"
    gelu = [p for p in net.populations() if isinstance(p.neuron, MBE) and p.neuron.function == "gelu"]
    assert len(gelu) == 2 and all(p.neuron.branches == 2 and p.neuron.bases == 4 for p in gelu)
    kinds = {}
    for op in net.operators():
        kinds[type(op).__name__] = kinds.get(type(op).__name__, 0) + 1
    # per block 2 attention products; 5 LayerNorms x 2 products + 2 softmax products
    assert kinds["MBEMatMul"] == 4 and kinds["MBEProduct"] == 12 and kinds["Exp2Split"] == 4
    for p in net.populations():
        if isinstance(p.neuron, MBE):
            assert p.t_start % 16 == 0
    assert net.meta["stages"] >= 10


@pytest.mark.parametrize("T", [1, 2, 32, 64])
def test_mbe_vit_converts_at_every_shipped_T(vit_mbe, digits, T):
    """The shipped fits of T = 1, 2, 32, 64 (besides 4, 8, 16) make the digits ViT convertible at every T of
    the methods table; each MBE neuron runs T steps with its function's fit of that T (small and fast:
    accuracy per T is benchmarks/vit_methods_table.py's)."""
    ann, _ = vit_mbe
    net = convert(ann, digits[0][:50], "mbe", timesteps=T)
    mbe = [p for p in net.populations() if isinstance(p.neuron, MBE)]
    assert mbe and all(p.neuron.timesteps == T and p.t_start % T == 0 for p in mbe)
    gelu = next(p.neuron for p in mbe if p.neuron.function == "gelu")
    np.testing.assert_array_equal(gelu.tau_d, default_fit("gelu", timesteps=T).tau_d)
    if T <= 2:
        res, counts = simulate_mbe(net, digits[2][:4], T, batch_size=4)
        assert res.steps_run == counts.depth * T and np.all(np.isfinite(res.outputs))


def _accuracy(net, x, y, ann) -> tuple[float, float]:
    res, counts = simulate_mbe(net, x, 16, batch_size=512)
    assert res.steps_run == counts.depth * 16
    return res.accuracy(y), ann.evaluate(x, y)["accuracy"]


def test_mbe_vit_within_1_5_points_of_the_ann_at_T16(vit_mbe, digits):
    """Training-free: only the shipped MBE fits; timm-style ViT (ONNX), 449 test digits."""
    ann, net = vit_mbe
    acc, ann_acc = _accuracy(net, digits[2], digits[3], ann)
    assert abs(ann_acc - ANN_ACC["vit"]) < 1e-3
    assert ann_acc - acc <= 0.015, (acc, ann_acc)


def test_mbe_encoder_within_1_5_points_of_the_ann_at_T16(digits, tmp_path):
    """The nn.TransformerEncoder definition (mean-pooled tokens, no class token), ONNX."""
    ann = load_model(export_onnx(pretrained_digits_vit("encoder"), tmp_path / "enc.onnx"))
    net = convert(ann, digits[0][:500], "mbe", timesteps=16)
    acc, ann_acc = _accuracy(net, digits[2], digits[3], ann)
    assert abs(ann_acc - ANN_ACC["encoder"]) < 1e-3
    assert ann_acc - acc <= 0.015, (acc, ann_acc)


@pytest.mark.parametrize("which", ["vit", "encoder"])
def test_mbe_from_pt2_matches_the_onnx_conversion(which, digits, tmp_path):
    """torch.export programs of both definitions convert to the same network function."""
    x_train, _, x_test, _ = digits
    model = pretrained_digits_vit(which)
    a = convert(load_model(export_onnx(model, tmp_path / "m.onnx")), x_train[:500], "mbe")
    b = convert(load_model(export_pt2(model, tmp_path / "m.pt2")), x_train[:500], "mbe")
    ra, _ = simulate_mbe(a, x_test[:60], 16)
    rb, _ = simulate_mbe(b, x_test[:60], 16)
    assert np.mean(ra.predictions == rb.predictions) >= 0.98
    assert np.abs(ra.outputs - rb.outputs).mean() < 0.05


def test_mbe_network_round_trips_through_hdf5(vit_mbe, digits, tmp_path):
    _, net = vit_mbe
    back = ir.load(ir.save(net, tmp_path / "mbe.h5"))
    assert [type(n).__name__ for n in back.nodes()] == [type(n).__name__ for n in net.nodes()]
    a = simulate(net, digits[2][:12], 16)
    b = simulate(back, digits[2][:12], 16)
    assert np.array_equal(a.outputs, b.outputs) and a.steps_run == b.steps_run


def test_mbe_refusals_name_the_node_and_reason(vit_mbe, digits, digits_onnx, calib_x):
    _, net = vit_mbe
    with pytest.raises(ConversionError, match=r"no shipped MBE fit for gelu with N=4, T=12"):
        convert(load_model(digits_onnx), calib_x, "mbe", timesteps=12)
    with pytest.raises(UnsupportedError, match="fitted for T = 16"):
        simulate(net, digits[2][:2], 8)
    from spikeport.compiler import quantize
    from spikeport.hw_profiles import load_profile
    with pytest.raises(SpikeportError, match="profile 'loihi1': payload_bits"):   # loihi2: tests/test_mbe_vit_fixed.py
        quantize(net, load_profile("loihi1"))
    bad = OM.MantExp("m", inputs=("a",), shape=(4, 8), axis=-1)
    with pytest.raises(ValueError, match="size 1 along axis -1"):
        bad.validate()


def test_mbe_vit_energy_paper_arithmetic_and_honest_total(vit_mbe, digits):
    """Per-neuron GELU energy = T * N * eta * E_AC from the measured rate (the paper's 16*4*0.3822*0.9
    arithmetic), eta counted independently from the spike counts; the total counts more than that."""
    from spikeport.report.mbe_energy import mbe_network_energy, mbe_neuron_energy
    _, net = vit_mbe
    x = digits[2][:24]
    res, counts = simulate_mbe(net, x, 16)
    e = mbe_network_energy(net, counts)
    assert mbe_neuron_energy(0.3822, 16, 4).energy_pj == pytest.approx(22.0, abs=0.05)
    assert len(e.gelu) == 2
    for name, g in e.gelu.items():
        pop = net[name]
        eta = res.spike_counts[name].sum() / (len(x) * pop.size * 4 * 16)
        assert g["rate"] == pytest.approx(eta, rel=1e-12) and 0 < eta < 1
        assert g["energy_pj"] == pytest.approx(16 * 4 * eta * 0.9, rel=1e-12)
    assert e.paper_pj == pytest.approx(e.neuron_spikes * 0.9)
    assert e.total_pj == pytest.approx(sum(e.parts_pj.values()))
    assert all(v > 0 for v in e.parts_pj.values())
    assert e.total_pj > 10 * e.paper_pj     # products, synapses and operators dominate the neurons
