"""Tiny CNNs for the 1x8x8 digits set and a deterministic CPU training loop.

They exercise every structure the converter must handle (BatchNorm, a residual add, average
pooling, flatten, linear layers) while training to >= 95 % in a few seconds on one thread.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import write_bytes


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


WEIGHTS_FILE = Path(__file__).with_name("digits_resnet.npz")
PRETRAINED_RECIPE = dict(epochs=20, seed=0, lr=1e-2)  # how digits_resnet.npz was made (split seed 0)


def save_state(model: nn.Module, path: str | Path) -> Path:
    """Write the model's state dict as a plain .npz (no pickle)."""
    path = Path(path)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return write_bytes(path, buffer.getvalue())


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict written by :func:`save_state`; every key must match exactly."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        state = {k: torch.from_numpy(data[k]) for k in data.files}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: weights do not fit {type(model).__name__} (missing {missing}, unexpected {unexpected}, "
                         f"shape mismatch {wrong})")
    model.load_state_dict(state)
    return model.eval()


def pretrained_digits_resnet(x_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
                             retrain: bool = False, progress: bool = False) -> DigitsResNet:
    """The demo model: shipped weights (``digits_resnet.npz``) or, with ``retrain``, a fresh training
    run on ``(x_train, y_train)`` with :data:`PRETRAINED_RECIPE` (about 2 s on one CPU thread).

    ``progress`` is accepted for API symmetry; training is too short to need a progress bar.
    """
    model = DigitsResNet()
    if not retrain and WEIGHTS_FILE.is_file():
        return load_state(model, WEIGHTS_FILE)
    if x_train is None or y_train is None:
        raise ValueError(f"pretrained_digits_resnet: {WEIGHTS_FILE} is missing (or retrain=True) and no training data was given")
    return train_digits_model(model, x_train, y_train, **PRETRAINED_RECIPE)
