"""Retrain the model zoo's digits ViTs and write their shipped weights (plain ``.npz``).

    PYTHONPATH=<spikeport on the path> python3 scripts/train_digits_vits.py [--kinds vit encoder] [--out DIR]

Trains ``pretrained_digits_vit("vit")`` (timm layout) and ``("encoder")`` (``nn.TransformerEncoder``)
with :data:`spikeport.models.digits_vit.VIT_RECIPE` on the digits training split (seed 0), on one
CPU thread, deterministically; prints each model's test accuracy and how many test samples lie
within a logit margin of 1 of another class. Writes ``models/digits_vit.npz`` and
``models/digits_vit_encoder.npz`` unless ``--out`` names another folder. A few minutes per model.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from spikeport.datasets import load_digits_split
from spikeport.models.digits import save_state
from spikeport.models.digits_vit import _VIT_CLASSES, VIT_RECIPE, VIT_WEIGHTS, train_digits_vit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(_VIT_CLASSES), choices=list(_VIT_CLASSES))
    ap.add_argument("--out", type=Path, default=None, help="folder for the .npz files (default: the shipped paths)")
    args = ap.parse_args()
    x_train, y_train, x_test, y_test = load_digits_split(0)
    print(f"recipe: {VIT_RECIPE}")
    for kind in args.kinds:
        t0 = time.time()
        model = train_digits_vit(_VIT_CLASSES[kind](), x_train, y_train)
        with torch.no_grad():
            logits = model(torch.as_tensor(x_test)).numpy()
        top2 = np.sort(logits, axis=1)[:, -2:]
        path = VIT_WEIGHTS[kind] if args.out is None else args.out / VIT_WEIGHTS[kind].name
        save_state(model, path)
        print(f"{kind}: test accuracy {100 * np.mean(logits.argmax(1) == y_test):.2f} % ({len(y_test)} digits), "
              f"margin < 1: {int(np.sum(top2[:, 1] - top2[:, 0] < 1))} samples, {time.time() - t0:.0f} s -> {path}")


if __name__ == "__main__":
    main()
