"""Tiny Vision Transformers for the 1x8x8 digits set, in the two forms people export.

``DigitsViT`` follows timm's ``VisionTransformer``: a strided-conv patch embedding, a class token,
a learned position embedding, pre-norm blocks (LayerNorm -> attention with one qkv Linear and
explicit ``softmax(q k^T / sqrt(d)) v`` -> residual; LayerNorm -> fc1 -> GELU -> fc2 -> residual),
a final LayerNorm, the class token into the head. ``fused=True`` computes attention with
``F.scaled_dot_product_attention`` instead (timm's ``fused_attn``), same weights and function.

``DigitsTransformerEncoder`` is the ``torch.nn.TransformerEncoder`` form (``norm_first=True``,
``activation="gelu"``, ``batch_first=True``) with mean-pooled tokens and no class token.

Both train to >= 95 % test accuracy on the digits split in seconds on one CPU thread
(:func:`spikeport.models.digits.train_digits_model`); shipped weights are plain ``.npz``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .digits import load_state, train_digits_model


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches -> ``dim`` channels: (B, C, H, W) -> (B, N, dim)."""

    def __init__(self, in_chans: int = 1, dim: int = 32, patch: int = 2):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm-style multi-head self-attention: one qkv Linear, ``softmax(q k^T * d^-1/2) v``, proj."""

    def __init__(self, dim: int, heads: int, fused: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, fused: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, fused)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsViT(nn.Module):
    """timm ``VisionTransformer`` layout for (1, 8, 8) images: 16 patches of 2x2 plus a class token."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, mlp_ratio: int = 2, patch: int = 2,
                 img: int = 8, classes: int = 10, fused: bool = False):
        super().__init__()
        self.patch_embed = PatchEmbed(1, dim, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, dim * mlp_ratio, fused) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class DigitsTransformerEncoder(nn.Module):
    """``nn.TransformerEncoder`` (pre-norm, GELU) over 2x2 patches, mean-pooled tokens, linear head."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, mlp_ratio: int = 2, patch: int = 2,
                 img: int = 8, classes: int = 10):
        super().__init__()
        self.patch_embed = PatchEmbed(1, dim, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.patch_embed(x) + self.pos_embed)
        return self.head(self.norm(x).mean(dim=1))


VIT_RECIPE = dict(epochs=60, seed=0, lr=2e-3, batch_size=32)  # how the shipped .npz were made (split seed 0)
VIT_WEIGHTS = {"vit": Path(__file__).with_name("digits_vit.npz"),
               "encoder": Path(__file__).with_name("digits_vit_encoder.npz")}
_VIT_CLASSES = {"vit": DigitsViT, "encoder": DigitsTransformerEncoder}


def train_digits_vit(model: nn.Module, x: np.ndarray, y: np.ndarray, **recipe) -> nn.Module:
    """Train a digits ViT with :data:`VIT_RECIPE` (overridable) on CPU, deterministically.

    ``train_digits_model`` re-initialises submodules with ``reset_parameters``; the model's own
    tokens and ``nn.MultiheadAttention`` (``_reset_parameters``) are re-initialised here first.
    """
    recipe = {**VIT_RECIPE, **recipe}
    torch.manual_seed(int(recipe["seed"]) + 1)
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            m._reset_parameters()
    model.reset_parameters()
    return train_digits_model(model, x, y, **recipe)


def pretrained_digits_vit(kind: str = "vit", x_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
                          retrain: bool = False) -> nn.Module:
    """A digits ViT (``kind`` ``"vit"``: timm layout; ``"encoder"``: ``nn.TransformerEncoder`` layout)
    with the shipped weights, or, with ``retrain``, freshly trained on ``(x_train, y_train)``."""
    if kind not in _VIT_CLASSES:
        raise ValueError(f"pretrained_digits_vit: kind {kind!r} must be one of {sorted(_VIT_CLASSES)}")
    model = _VIT_CLASSES[kind]()
    path = VIT_WEIGHTS[kind]
    if not retrain and path.is_file():
        return load_state(model, path)
    if x_train is None or y_train is None:
        raise ValueError(f"pretrained_digits_vit: {path} is missing (or retrain=True) and no training data was given")
    return train_digits_vit(model, x_train, y_train)
