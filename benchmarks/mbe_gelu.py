"""``--method mbe`` on the digits ViTs with other GELU fits and with / without
``gelu_bias_correction``: prints a table.

    python3 benchmarks/mbe_gelu.py [--weights DIR] [--domains -8,8]

Both definitions exported to ONNX, converted at T = 16 (calibration: 500 training digits) with the
GELU fit on the paper's domain (-120, 10) (``gelu_fit=paper``), the shipped one (-10, 10) and GELU
fits made here on each of ``--domains`` (same protocol: seed 0, 10,000 uniform samples, 200 epochs,
minibatch 2500), each without and with the bias correction; float64 staged simulation and loihi2
bit-accurate simulation of the 449 test digits. ``--weights DIR`` reads ``digits_vit.npz`` /
``digits_vit_encoder.npz`` from DIR instead of the shipped ones. Figures: docs/mbe.md.
"""
from __future__ import annotations

import argparse
import itertools
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
from spikeport.convert.mbe_fit import fit_mbe  # noqa: E402
from spikeport.convert.mbe_params import save_fit  # noqa: E402
from spikeport.datasets import load_digits_split  # noqa: E402
from spikeport.frontend import export_onnx, load_model  # noqa: E402
from spikeport.models.digits import load_state  # noqa: E402
from spikeport.models.digits_vit import VIT_WEIGHTS, pretrained_digits_vit  # noqa: E402
from spikeport.simulator.transformer_mbe import simulate_mbe  # noqa: E402
from spikeport.simulator.transformer_mbe_fixed import simulate_mbe_fixed  # noqa: E402


def row(ann, ref, ann_ok, calib, x_test, y_test, correction: bool, gelu_fit: str) -> str:
    """Float and loihi2 columns of one conversion."""
    n = len(y_test)
    net = convert(ann, calib, "mbe", timesteps=16, gelu_bias_correction=correction, gelu_fit=gelu_fit)
    res, _ = simulate_mbe(net, x_test, 16, batch_size=512)
    ok = int(np.sum(res.predictions == y_test))
    agree = int(np.sum(res.predictions == ref.argmax(1)))
    rq, _ = simulate_mbe_fixed(quantize(net, "loihi2")[0], x_test, 16, batch_size=512)
    okq = int(np.sum(rq.predictions == y_test))
    return (f"{ok} ({100 * (ok - ann_ok) / n:+.2f}) | {agree} | {float(np.abs(res.outputs - ref).mean()):.4f} | "
            f"{okq} ({100 * (okq - ann_ok) / n:+.2f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="folder with digits_vit.npz / digits_vit_encoder.npz")
    ap.add_argument("--domains", nargs="*", default=["-8,8"], help="GELU fit domains LO,HI to compare")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x_train, _, x_test, y_test = load_digits_split(seed=0)
    n = len(y_test)
    with tempfile.TemporaryDirectory() as d:
        fits = {"paper (-120, 10)": "paper", "shipped (-10, 10)": ""}
        for text in args.domains:
            lo, hi = (float(v) for v in text.split(","))
            fit = fit_mbe("gelu", 4, 16, seed=0, batch_size=2500, domain=(lo, hi))
            fits[f"({lo:g}, {hi:g})"] = str(save_fit(fit, Path(d) / f"gelu_{lo:g}_{hi:g}.json"))
            print(f"GELU fit on ({lo:g}, {hi:g}): MSE {fit.mse:.3e}, max |error| {fit.max_abs_err:.3f}", flush=True)
        print("\n| model | GELU fit | gelu_bias_correction | ANN correct | mbe float correct (points vs ANN) "
              "| agree with ANN | mean abs(logit - ANN) | loihi2 fixed correct |")
        print("|---|---|---|---|---|---|---|---|")
        for which in ("vit", "encoder"):
            model = pretrained_digits_vit(which)
            if args.weights is not None:
                model = load_state(model, args.weights / VIT_WEIGHTS[which].name)
            ann = load_model(export_onnx(model, Path(d) / f"{which}.onnx", np.zeros((1, 1, 8, 8), np.float32)))
            ref = ann.forward(x_test)
            ann_ok = int(np.sum(ref.argmax(1) == y_test))
            for (label, path), on in itertools.product(fits.items(), (False, True)):
                print(f"| {which} | {label} | {'on' if on else 'off'} | {ann_ok} | "
                      + row(ann, ref, ann_ok, x_train[:500], x_test, y_test, on, path), flush=True)
    print(f"\n(correct of {n} test digits; T = 16; calibration 500 training digits)")


if __name__ == "__main__":
    main()
