"""``--method mbe --opt gelu_bias_correction=true``: the GELU fit's mean error per channel over the
calibration data, removed through the bias of the Linear that reads the GELU (docs/mbe.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeport.compiler import quantize
from spikeport.convert import ConversionError, convert
from spikeport.convert.mbe_params import default_fit
from spikeport.frontend import load_model
from spikeport.hw_profiles import load_profile
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.simulator.reference_mbe_vit import run_reference
from spikeport.simulator.transformer_mbe import simulate_mbe
from spikeport.simulator.transformer_mbe_fixed import simulate_mbe_fixed

from conftest import export_onnx


@pytest.fixture(scope="module")
def vit_pair(digits, tmp_path_factory):
    """The shipped timm-layout digits ViT as ONNX, converted without and with the correction."""
    model = pretrained_digits_vit("vit").eval()
    ann = load_model(export_onnx(model, tmp_path_factory.mktemp("vitbc") / "vit.onnx"))
    calib = digits[0][:500]
    return model, ann, convert(ann, calib, "mbe"), convert(ann, calib, "mbe", gelu_bias_correction=True)


def test_fc2_bias_moves_by_W_times_the_fits_mean_error(vit_pair, digits):
    """Independent of the converter's graph evaluation: GELU inputs caught by torch hooks on the
    PyTorch model, the shipped fit applied to them; fc2's bias changes by -W_fc2 e, nothing else does."""
    model, _, plain, fixed = vit_pair
    fit = default_fit("gelu", timesteps=16)
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
    0.411 -> 0.348, 96.21 % -> 96.21 % at the ANN's 96.21 %)."""
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
