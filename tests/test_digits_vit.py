"""Model zoo: the tiny digits ViTs (timm layout and nn.TransformerEncoder layout), shipped as .npz."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport.models.digits_vit import VIT_WEIGHTS, DigitsTransformerEncoder, DigitsViT, pretrained_digits_vit

X = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def random_vit(kind: str, fused: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = DigitsViT(fused=fused) if kind == "vit" else DigitsTransformerEncoder()
    for p in model.parameters():
        p.data.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("kind", ["vit", "encoder"])
def test_shipped_digits_vits_reach_95_percent(digits, kind):
    assert VIT_WEIGHTS[kind].is_file()
    with np.load(VIT_WEIGHTS[kind], allow_pickle=False) as data:  # plain arrays, no pickle
        assert all(data[k].dtype == np.float32 for k in data.files)
    model = pretrained_digits_vit(kind)
    _, _, x_test, y_test = digits
    acc = float(np.mean(torch_out(model, x_test).argmax(1) == y_test))
    assert acc >= 0.95, f"{kind}: test accuracy {acc:.4f}"


def test_vit_definitions_match_their_references():
    """Fused (scaled_dot_product_attention) == explicit softmax(q k^T / sqrt(d)) v with the same
    weights; the encoder form is pre-norm with GELU."""
    explicit = random_vit("vit")
    fused = DigitsViT(fused=True).eval()
    fused.load_state_dict(explicit.state_dict())
    np.testing.assert_allclose(torch_out(fused, X), torch_out(explicit, X), rtol=1e-5, atol=1e-5)
    layer = random_vit("encoder").encoder.layers[0]
    assert layer.norm_first and layer.activation_relu_or_gelu == 2


def test_weights_file_must_fit_the_model(tmp_path):
    from spikeport.models import load_state, save_state

    path = save_state(random_vit("vit"), tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"w\.npz: weights do not fit DigitsTransformerEncoder"):
        load_state(DigitsTransformerEncoder(), path)
