"""``--method mbe`` with and without ``gelu_bias_correction`` on the digits ViTs: prints a table.

    python3 benchmarks/mbe_gelu_correction.py [--weights DIR]

Both definitions exported to ONNX, converted at T = 16 with the shipped fits (calibration: 500
training digits), float64 staged simulation and loihi2 bit-accurate simulation of the 449 test
digits. ``--weights DIR`` reads ``digits_vit.npz`` / ``digits_vit_encoder.npz`` from DIR instead
of the shipped ones (e.g. other trainings of the same architectures). Figures: docs/mbe.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path and (ROOT.parent / "spikeport").exists():
    sys.path.insert(0, str(ROOT.parent))

from spikeport.compiler import quantize  # noqa: E402
from spikeport.convert import convert  # noqa: E402
from spikeport.datasets import load_digits_split  # noqa: E402
from spikeport.frontend import export_onnx, load_model  # noqa: E402
from spikeport.models.digits import load_state  # noqa: E402
from spikeport.models.digits_vit import VIT_WEIGHTS, pretrained_digits_vit  # noqa: E402
from spikeport.simulator.transformer_mbe import simulate_mbe  # noqa: E402
from spikeport.simulator.transformer_mbe_fixed import simulate_mbe_fixed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="folder with digits_vit.npz / digits_vit_encoder.npz")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x_train, _, x_test, y_test = load_digits_split(seed=0)
    n = len(y_test)
    print("| model | gelu_bias_correction | ANN correct | mbe float correct (points vs ANN) | agree with ANN "
          "| mean abs(logit - ANN) | loihi2 fixed correct |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for which in ("vit", "encoder"):
            model = pretrained_digits_vit(which)
            if args.weights is not None:
                model = load_state(model, args.weights / VIT_WEIGHTS[which].name)
            ann = load_model(export_onnx(model, Path(d) / f"{which}.onnx", np.zeros((1, 1, 8, 8), np.float32)))
            ref = ann.forward(x_test)
            ann_ok = int(np.sum(ref.argmax(1) == y_test))
            for on in (False, True):
                net = convert(ann, x_train[:500], "mbe", timesteps=16, gelu_bias_correction=on)
                res, _ = simulate_mbe(net, x_test, 16, batch_size=512)
                ok = int(np.sum(res.predictions == y_test))
                agree = int(np.sum(res.predictions == ref.argmax(1)))
                rq, _ = simulate_mbe_fixed(quantize(net, "loihi2")[0], x_test, 16, batch_size=512)
                okq = int(np.sum(rq.predictions == y_test))
                print(f"| {which} | {'on' if on else 'off'} | {ann_ok} | {ok} ({100 * (ok - ann_ok) / n:+.2f}) | {agree} "
                      f"| {float(np.abs(res.outputs - ref).mean()):.4f} | {okq} ({100 * (okq - ann_ok) / n:+.2f}) |",
                      flush=True)
    print(f"\n(correct of {n} test digits; T = 16; calibration 500 training digits)")


if __name__ == "__main__":
    main()
