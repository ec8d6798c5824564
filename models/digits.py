"""Tiny CNNs for the 1x8x8 digits set and a deterministic CPU training loop.

They exercise every structure the converter must handle (BatchNorm, a residual add, average
pooling, flatten, linear layers) while training to >= 95 % in a few seconds on one thread.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DigitsResNet(nn.Module):
    """conv-BN-ReLU, a residual block (conv-BN-ReLU-conv-BN + skip, ReLU), AvgPool, FC-ReLU, FC.

    Five weighted layers, about 5.7k parameters for ``channels=8``.
    """

    def __init__(self, channels: int = 8, hidden: int = 32, classes: int = 10):
        super().__init__()
        c = channels
        self.conv1 = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c * 16, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        r = torch.relu(self.bn2(self.conv2(h)))
        h = torch.relu(self.bn3(self.conv3(r)) + h)
        h = self.flatten(self.pool(h))
        return self.fc2(torch.relu(self.fc1(h)))


def digits_leaky_cnn(channels: int = 8, hidden: int = 32, slope: float = 0.1) -> nn.Sequential:
    """conv-BN-LeakyReLU, AvgPool, flatten, FC-LeakyReLU, FC (negative activations for NegSpike)."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.LeakyReLU(slope),
        nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(channels * 16, hidden), nn.LeakyReLU(slope),
        nn.Linear(hidden, 10),
    )


def train_digits_model(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 20,
                       seed: int = 0, lr: float = 1e-2, batch_size: int = 64) -> nn.Module:
    """Train with Adam and cross-entropy on CPU, deterministically; return the model in eval mode.

    Initial weights, shuffling and updates all derive from ``seed``, so a run is reproducible.
    """
    if len(x) != len(y):
        raise ValueError(f"train_digits_model: {len(x)} samples but {len(y)} labels")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in model.modules():  # re-initialise from the seed so the result does not depend on history
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    model = model.to("cpu").float().train()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()
