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


def test_random_shift_moves_each_image_and_fills_zeros():
    from spikeport.models.digits_vit import random_shift

    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    gen = torch.Generator().manual_seed(3)
    out = random_shift(x, 1, gen)
    gen = torch.Generator().manual_seed(3)
    dx, dy = torch.randint(0, 3, (2,), generator=gen) - 1, torch.randint(0, 3, (2,), generator=gen) - 1
    for i in range(2):  # out[y, x] = in[y + dy, x + dx] where that pixel exists, else 0
        want = torch.zeros(1, 8, 8)
        for r in range(8):
            for c in range(8):
                if 0 <= r + dy[i] < 8 and 0 <= c + dx[i] < 8:
                    want[0, r, c] = x[i, 0, r + dy[i], c + dx[i]]
        assert torch.equal(out[i], want)
    assert torch.equal(random_shift(x, 0, gen), x)


def test_vit_training_is_deterministic_and_checks_its_recipe(digits):
    from spikeport.models.digits_vit import train_digits_vit

    x, y = digits[0][:128], digits[1][:128]
    a = train_digits_vit(DigitsTransformerEncoder(), x, y, epochs=1)
    b = train_digits_vit(DigitsTransformerEncoder(), x, y, epochs=1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ValueError, match=r"unknown recipe keys \['epoch'\]"):
        train_digits_vit(DigitsViT(), x, y, epoch=1)
