"""GELU under ``--method mbe`` (docs/mbe.md): ``gelu_bias_correction`` (the fit's mean error per
channel over the calibration data, removed through the bias of the Linear that reads the GELU),
GELU fits on other domains (``mbe-fit --domain``, ``--opt gelu_fit=FILE``) and the refusal of
calibration inputs outside the fit's domain."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeport.compiler import quantize
from spikeport.convert import ConversionError, convert
from spikeport.convert.mbe_fit import fit_mbe
from spikeport.convert.mbe_params import MBEFitError, default_fit, load_fit, paper_gelu_fit, save_fit
from spikeport.ir.neurons_mbe import MBE
from spikeport.frontend import load_model
from spikeport.hw_profiles import load_profile
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.simulator.reference_mbe_vit import run_reference
from spikeport.simulator.transformer_mbe import simulate_mbe
from spikeport.simulator.transformer_mbe_fixed import simulate_mbe_fixed

from conftest import export_onnx


@pytest.fixture(scope="module")
def vit_pair(digits, tmp_path_factory):
    """The shipped timm-layout digits ViT as ONNX, converted with the paper's GELU fit (whose error
    near 0 the correction targets) without and with the correction."""
    model = pretrained_digits_vit("vit").eval()
    ann = load_model(export_onnx(model, tmp_path_factory.mktemp("vitbc") / "vit.onnx"))
    calib = digits[0][:500]
    return (model, ann, convert(ann, calib, "mbe", gelu_fit="paper"),
            convert(ann, calib, "mbe", gelu_fit="paper", gelu_bias_correction=True))


def test_fc2_bias_moves_by_W_times_the_fits_mean_error(vit_pair, digits):
    """Independent of the converter's graph evaluation: GELU inputs caught by torch hooks on the
    PyTorch model, the shipped fit applied to them; fc2's bias changes by -W_fc2 e, nothing else does."""
    model, _, plain, fixed = vit_pair
    fit = paper_gelu_fit(4, 16)
    seen: dict[int, list] = {}
    hooks = [blk.mlp.act.register_forward_hook(lambda m, i, o, k=k: seen.setdefault(k, []).append((i[0], o)))
             for k, blk in enumerate(model.blocks)]
    with torch.no_grad():
        for a in range(0, 500, 100):
            model(torch.as_tensor(digits[0][a:a + 100]))
    for h in hooks:
        h.remove()
    changed = {n.name for n in plain.populations()
               if not np.array_equal(np.asarray(getattr(n.neuron, "bias", 0.0)),
                                     np.asarray(getattr(fixed[n.name].neuron, "bias", 0.0)))}
    assert len(changed) == 2, changed
    for k, blk in enumerate(model.blocks):
        x = torch.cat([i for i, _ in seen[k]]).double()
        e = (fit(x.numpy()) - torch.nn.functional.gelu(x).numpy()).reshape(-1, x.shape[-1]).mean(0)
        assert np.abs(e).max() > 0.01          # the fit's error near 0 is not negligible (docs/mbe.md)
        W = blk.mlp.fc2.weight.detach().double().numpy()
        name = next(n for n in changed if f"blocks_{k}_mlp_fc2" in n)
        delta = np.asarray(fixed[name].neuron.bias) - np.asarray(plain[name].neuron.bias)
        np.testing.assert_allclose(delta, np.broadcast_to(-(W @ e), delta.shape), rtol=1e-4, atol=1e-5)   # hooks: float32 model
    assert [type(n).__name__ for n in plain.nodes()] == [type(n).__name__ for n in fixed.nodes()]


def test_correction_brings_the_digits_vit_closer_to_its_ann(vit_pair, digits):
    """449 test digits, T = 16: mean |logit - ANN logit| falls and accuracy does not (measured
    0.411 -> 0.348 with the paper's fit, 427 -> 432 of 449 correct at the ANN's 432)."""
    _, ann, plain, fixed = vit_pair
    x, y = digits[2], digits[3]
    ref = ann.forward(x)
    a, _ = simulate_mbe(plain, x, 16, batch_size=512)
    b, _ = simulate_mbe(fixed, x, 16, batch_size=512)
    da, db = np.abs(a.outputs - ref).mean(), np.abs(b.outputs - ref).mean()
    assert db < 0.9 * da, (da, db)
    assert b.accuracy(y) >= a.accuracy(y)


def test_corrected_network_compiles_and_its_fixed_run_equals_the_integer_reference(vit_pair, digits):
    """The correction is an ordinary relay bias: loihi2 quantises it like any other, and the
    bit-accurate run equals the plain integer reference exactly."""
    _, _, _, fixed = vit_pair
    qnet, _ = quantize(fixed, load_profile("loihi2"))
    x = digits[2][:2]
    trace: dict = {}
    simulate_mbe_fixed(qnet, x, trace=trace)
    vals, fired, _ = run_reference(qnet, x)
    assert fired and qnet.outputs[0] in vals
    for name, v in vals.items():
        np.testing.assert_array_equal(trace[name], v, err_msg=name)
    for name, v in fired.items():
        np.testing.assert_array_equal(trace[f"{name}:fired"], v, err_msg=name)


class _GeluIntoAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return x + nn.functional.gelu(self.fc(x))


def test_refuses_a_gelu_read_by_anything_but_a_linear():
    torch.manual_seed(0)
    ann = load_model(_GeluIntoAdd().eval(), input_shape=(4, 8))
    x = np.random.RandomState(0).randn(20, 4, 8).astype(np.float32)
    with pytest.raises(ConversionError, match=r"gelu_bias_correction .* node '.*' \(Add\) reads it"):
        convert(ann, x, "mbe", gelu_bias_correction=True)


class _Mlp(nn.Module):
    """Token MLP: Linear -> GELU -> Linear, the GELU inputs scaled by ``gain``."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
        with torch.no_grad():
            self.fc1.weight.mul_(gain)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def _mlp(gain: float = 1.0):
    x = np.random.RandomState(0).randn(40, 3, 8).astype(np.float32)
    return load_model(_Mlp(gain).eval(), input_shape=(3, 8)), x


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    """A quick GELU fit on (-6, 6) at T = 16 (few epochs: only its plumbing is tested here)."""
    fit = fit_mbe("gelu", 2, 16, seed=1, samples=400, epochs=2, batch_size=200, domain=(-6.0, 6.0))
    return save_fit(fit, tmp_path_factory.mktemp("fit") / "gelu_6.json")


def test_fit_on_another_domain_keeps_the_protocol_and_records_the_domain(small_fit):
    fit = load_fit(small_fit)
    assert fit.domain == (-6.0, 6.0) and fit.function == "gelu" and fit.w.shape == (2, 2)
    assert fit.alpha[0] == pytest.approx(float(torch.nn.functional.gelu(torch.tensor(6.0, dtype=torch.float64))))
    again = fit_mbe("gelu", 2, 16, seed=1, samples=400, epochs=2, batch_size=200, domain=(-6.0, 6.0))
    np.testing.assert_array_equal(again.tau_d, fit.tau_d)          # deterministic given the seed
    with pytest.raises(MBEFitError, match="symmetric"):
        fit_mbe("tanh", 1, 4, samples=50, epochs=1, batch_size=50, domain=(-2.0, 3.0))
    with pytest.raises(MBEFitError, match="lo < hi"):
        fit_mbe("gelu", 1, 4, samples=50, epochs=1, batch_size=50, domain=(3.0, 3.0))


def test_gelu_fit_option_puts_the_files_parameters_into_the_network(small_fit):
    ann, x = _mlp()
    net = convert(ann, x, "mbe", gelu_fit=str(small_fit))
    gelu = [p.neuron for p in net.populations() if isinstance(p.neuron, MBE) and p.neuron.function == "gelu"]
    fit = load_fit(small_fit)
    assert len(gelu) == 1 and gelu[0].bases == 2
    np.testing.assert_array_equal(gelu[0].tau_d, fit.tau_d)
    np.testing.assert_array_equal(gelu[0].w, fit.w)


def test_gelu_fit_paper_is_the_shipped_fit_on_the_papers_domain():
    ann, x = _mlp()
    net = convert(ann, x, "mbe", gelu_fit="paper")
    gelu = next(p.neuron for p in net.populations() if isinstance(p.neuron, MBE) and p.neuron.function == "gelu")
    paper = paper_gelu_fit(4, 16)
    assert paper.domain == (-120.0, 10.0) and default_fit("gelu").domain == (-10.0, 10.0)
    np.testing.assert_array_equal(gelu.tau_d, paper.tau_d)
    for T in (1, 2, 4, 8, 32, 64):
        assert paper_gelu_fit(4, T).timesteps == T
    with pytest.raises(MBEFitError, match=r"no shipped paper-domain GELU fit with N=4, T=12.*--domain=-120,10"):
        paper_gelu_fit(4, 12)


def test_gelu_fit_option_refuses_a_file_that_does_not_fit_the_network(small_fit, tmp_path):
    ann, x = _mlp()
    with pytest.raises(MBEFitError, match=r"gelu_6.json: gelu_fit needs timesteps 8, the file has 16"):
        convert(ann, x, "mbe", timesteps=8, gelu_fit=str(small_fit))
    other = save_fit(fit_mbe("tanh", 1, 16, samples=50, epochs=1, batch_size=50), tmp_path / "tanh.json")
    with pytest.raises(MBEFitError, match=r"tanh.json: gelu_fit needs function 'gelu'"):
        convert(ann, x, "mbe", gelu_fit=str(other))
    with pytest.raises(MBEFitError, match=r"option gelu_fit='.*nope.json': .*nope.json: no such file"):
        convert(ann, x, "mbe", gelu_fit=str(tmp_path / "nope.json"))


def test_calibration_inputs_outside_the_fits_domain_are_refused_naming_the_gelu(small_fit):
    """The shipped fit covers (-10, 10), the paper's (-120, 10); a GELU fed values up to ~50 is
    refused by both, not approximated by a fit that was never trained there; a (-6, 6) fit refuses
    inputs beyond 6 the same way."""
    ann, x = _mlp(gain=40.0)
    with pytest.raises(ConversionError, match=r"GELU '.*': calibration inputs span \[.*\], outside the GELU fit's "
                                              r"domain \[-10, 10\] \(shipped fit\).*--domain LO,HI --timesteps 16"):
        convert(ann, x, "mbe")
    with pytest.raises(ConversionError, match=r"outside the GELU fit's domain \[-120, 10\] \(paper\)"):
        convert(ann, x, "mbe", gelu_fit="paper")
    ann, x = _mlp(gain=10.0)
    with pytest.raises(ConversionError, match=r"outside the GELU fit's domain \[-6, 6\] \(.*gelu_6.json\)"):
        convert(ann, x, "mbe", gelu_fit=str(small_fit))


def test_mbe_fit_command_takes_a_domain(tmp_path):
    from typer.testing import CliRunner
    from spikeport.cli import app
    out = tmp_path / "g.json"
    r = CliRunner().invoke(app, ["mbe-fit", "--function", "gelu", "--bases", "1", "--timesteps", "4", "--samples", "100",
                                 "--epochs", "1", "--batch-size", "100", "--domain", "-4,4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert load_fit(out).domain == (-4.0, 4.0)
    r = CliRunner().invoke(app, ["mbe-fit", "--function", "gelu", "--domain", "4,-4", "--out", str(tmp_path / "h.json")])
    assert r.exit_code != 0 and "--domain '4,-4'" in r.output and not (tmp_path / "h.json").exists()
