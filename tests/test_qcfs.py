"""QCFS: the quantised activation, its recognition by every frontend, and the IF neuron's closed form."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeport import compiler
from spikeport.convert import ConversionError, convert
from spikeport.convert import qcfs as _qcfs  # noqa: F401  (registers "qcfs")
from spikeport.convert.activations import QuantClipFloor, pqa_activation, qcfs_activation, swap_activations
from spikeport.frontend import ann_graph as G
from spikeport.frontend import export_onnx, export_pt2, load_model
from spikeport.simulator import simulate


def one_layer(levels: int, lam: float, n: int, readout_weight: float = 0.5) -> nn.Module:
    """Identity Linear -> QCFS -> Linear readout with power-of-two weights (exact in fixed point)."""
    lin, out = nn.Linear(n, n), nn.Linear(n, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(n))
        lin.bias.zero_()
        out.weight.fill_(readout_weight)
        out.bias.zero_()
    return nn.Sequential(lin, qcfs_activation(levels, lam=lam), out).eval()


# ---------------------------------------------------------------------- the activation module
def test_quant_clip_floor_forward_and_ste():
    act = QuantClipFloor(4, 0, 4, lam=2.0)
    z = torch.tensor([-1.0, 0.0, 0.24, 0.25, 0.74, 0.75, 1.9, 2.0, 9.0])
    act.eval()
    want = 0.5 * torch.clamp(torch.floor(z / 0.5 + 0.5), 0, 4)
    assert torch.equal(act(z), want)
    act.train()
    z = z.clone().requires_grad_(True)
    act(z).sum().backward()
    assert torch.all(z.grad[(z > 0.25) & (z < 1.75)] == 1.0)  # straight-through inside the range
    assert z.grad[0] == 0 and z.grad[-1] == 0                 # clipped outside
    assert act.lam.grad is not None


def test_pqa_levels_and_errors():
    act = pqa_activation(8, alpha=-0.25, beta=1.0, lam=8.0)
    assert (act.lo_level, act.hi_level) == (-2, 8)
    assert act.quant_act_spec() == (1.0, -2, 8)
    with pytest.raises(ValueError, match="must be integers"):
        pqa_activation(8, alpha=-0.3)
    with pytest.raises(ValueError, match="levels L=0"):
        QuantClipFloor(0)


def test_swap_activations_modules_and_fx():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    swapped = swap_activations(m, lambda: qcfs_activation(4))
    assert isinstance(swapped[1], QuantClipFloor) and isinstance(m[1], nn.ReLU)  # the original is untouched
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    out = swap_activations(gm, lambda: qcfs_activation(2))
    assert sum(isinstance(x, QuantClipFloor) for x in out.modules()) == 1
    with pytest.raises(ValueError, match="no activation"):
        swap_activations(nn.Linear(3, 3), lambda: qcfs_activation(2))


# ---------------------------------------------------------------------- frontend recognition
@pytest.mark.parametrize("fmt", ["module", "pt2", "onnx"])
@pytest.mark.parametrize("levels,lo,hi", [(4, 0, 4), (6, 0, 6), (8, -2, 8)])
def test_frontend_recognises_quant_act(tmp_path, fmt, levels, lo, hi):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), QuantClipFloor(levels, lo, hi, lam=3.0), nn.Flatten(),
                      nn.Linear(3 * 64, 5)).eval()
    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    if fmt == "module":
        ann = load_model(m, input_shape=(1, 8, 8))
    elif fmt == "pt2":
        ann = load_model(export_pt2(m, tmp_path / "m.pt2", x))
    else:  # BatchNorm-free, so constant folding keeps the graph as written
        ann = load_model(export_onnx(m, tmp_path / "m.onnx", x, keep_batchnorm=False))
    qa = [n for n in ann.graph if isinstance(n, G.QuantAct)]
    assert len(qa) == 1 and [n.op for n in ann.graph] == ["Input", "Conv2d", "QuantAct", "Flatten", "Linear", "Output"]
    assert (qa[0].min_level, qa[0].max_level) == (lo, hi)
    assert qa[0].step == pytest.approx(3.0 / levels, rel=1e-6)
    np.testing.assert_allclose(ann.forward(x), m(torch.as_tensor(x)).detach().numpy(), atol=1e-5)


def test_non_reciprocal_scales_are_refused():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.clamp(torch.floor(x * 2.0 + 0.5), 0, 4) * 0.3

    m = nn.Sequential(nn.Linear(4, 4), Odd(), nn.Linear(4, 2))
    with pytest.raises(G.UnsupportedOpError, match="not reciprocal"):
        load_model(m, input_shape=(4,))


# ---------------------------------------------------------------------- conversion
@pytest.mark.parametrize("levels,lam", [(2, 1.0), (4, 2.0), (8, 4.0), (8, 0.5)])
def test_qcfs_count_closed_form_at_T_equals_L(levels, lam):
    n = 96
    z = (np.arange(n) - 16) / 16.0 * lam / 2.0  # dyadic grid over [-lam/2, ~2.5 lam]
    ann = load_model(one_layer(levels, lam, n), input_shape=(n,))
    x = z[None].astype(np.float32)
    net = convert(ann, x, method="qcfs")
    pop = next(p for p in net.populations() if p.name not in net.outputs)
    assert float(pop.neuron.threshold) == lam and float(pop.neuron.v_init) == lam / 2
    res = simulate(net, x, levels)
    want = np.clip(np.floor(levels * z / lam + 0.5), 0, levels)
    assert np.array_equal(res.spike_counts[pop.name][0], want)
    np.testing.assert_allclose(res.outputs, ann.forward(x), rtol=1e-6, atol=1e-6)  # SNN == quantised ANN


def test_qcfs_fixed_point_equals_float_on_grid_inputs():
    """Input on the 8-bit input grid (scale 1/64), lambda, weights powers of two: Loihi 2 fixed point is exact."""
    n, levels, lam = 64, 4, 2.0
    ann = load_model(one_layer(levels, lam, n), input_shape=(n,))
    x = (np.arange(n) * 4 % 256 / 64.0)[None].astype(np.float32)
    x[0, -1] = 255 / 64.0  # calibration max -> input scale exactly 1/64
    net = convert(ann, x, method="qcfs")
    qnet, _ = compiler.quantize(net, "loihi2")
    for T in (levels, 2 * levels + 1):
        f, q = simulate(net, x, T), simulate(qnet, x, T)
        for name, counts in f.spike_counts.items():
            assert np.array_equal(q.spike_counts[name], counts), name
        # the readout's state scale is chosen for range, not dyadic: its decode is close, not equal
        np.testing.assert_allclose(q.outputs, f.outputs, rtol=1e-3)


def test_qcfs_refuses_plain_relu_and_maxpool():
    relu = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="spikeport finetune MODEL --method qcfs"):
        convert(load_model(relu, input_shape=(4,)), np.ones((2, 4), np.float32), method="qcfs")
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), qcfs_activation(4), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(32, 2))
    ann = load_model(pooled, input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ConversionError, match="maxpool='avg'"):
        convert(ann, x, method="qcfs")
    net = convert(ann, x, method="qcfs", maxpool="avg")
    assert net.meta["replaced"]
    signed = nn.Sequential(nn.Linear(4, 4), pqa_activation(8), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="levels 0..L"):
        convert(load_model(signed, input_shape=(4,)), np.ones((2, 4), np.float32), method="qcfs")


def test_quantised_activation_from_onnx_with_batchnorm_kept(tmp_path):
    """The TorchScript exporter wraps Clip bounds in Cast; the loader folds them into constants."""
    from spikeport.frontend import export_onnx
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), qcfs_activation(4), nn.Flatten(),
                      nn.Linear(128, 3)).eval()
    x = np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32)
    ann = load_model(export_onnx(m, tmp_path / "q.onnx", x[:1], keep_batchnorm=True))
    assert [type(n).__name__ for n in ann.graph] == ["Input", "Conv2d", "BatchNorm", "QuantAct", "Flatten", "Linear", "Output"]
    with torch.no_grad():
        assert np.array_equal(ann.forward(x), m(torch.as_tensor(x)).numpy())
