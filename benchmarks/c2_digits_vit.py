"""C2 coding on the digits ViT: stbif and pmsm from the fine-tuned QANN, accuracy vs T (float64),
events / spikes per sample and PMSM's power formula in both counting conventions.

    python3 benchmarks/c2_digits_vit.py [--epochs 3] [--levels 16]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikeport.convert import convert
from spikeport.convert.finetune import finetune_file
from spikeport.datasets import load_digits_split
from spikeport.frontend import export_onnx, load_model
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.report.pmsm_power import pmsm_power
from spikeport.simulator.transformer_c2 import simulate_c2

STEPS = (1, 2, 4, 8, 16, 32, 64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--kind", default="vit", choices=("vit", "encoder"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = load_digits_split(seed=0)
    d = Path(tempfile.mkdtemp())
    onnx = export_onnx(pretrained_digits_vit(a.kind), d / "vit.onnx", xtr[:2])
    ann_acc = load_model(onnx).evaluate(xte, yte)["accuracy"]
    print(f"digits ViT ({a.kind}, ONNX), ANN test accuracy {100 * ann_acc:.2f}% ({len(xte)} samples); "
          f"fine-tuning {a.epochs} epochs, L = {a.levels}")
    for m in ("stbif", "pmsm"):
        t0 = time.time()
        s = finetune_file(onnx, m, xtr, ytr, a.epochs, d / f"{m}.pt2", levels=a.levels, progress=False)
        q = load_model(s.out)
        q_acc = q.evaluate(xte, yte)["accuracy"]
        net = convert(q, xtr[:128], method=m)
        t1 = time.time()
        res, checks, counts = simulate_c2(net, xte, max(STEPS), checkpoints=STEPS, batch_size=len(xte))
        print(f"\n{m}: QANN test accuracy {100 * q_acc:.2f}% (fine-tune {t1 - t0:.0f} s, simulate T={max(STEPS)} "
              f"{time.time() - t1:.0f} s)")
        print("| T | accuracy % | same prediction as QANN % |")
        print("|---|---|---|")
        qpred = np.asarray(q.evaluate(xte, yte)["logits"]).argmax(1)
        for t in STEPS:
            print(f"| {t} | {100 * (checks[t].argmax(1) == yte).mean():.2f} | "
                  f"{100 * (checks[t].argmax(1) == qpred).mean():.2f} |")
        for t in (1, max(STEPS)):
            _, _, c = simulate_c2(net, xte, t, batch_size=len(xte)) if t != max(STEPS) else (None, None, counts)
            p = pmsm_power(c.total_events, c.total_spikes, c.samples, t)
            print(f"T={t}: events/sample {p['events']['per_sample']:.0f} -> P = {1e6 * p['events']['power_w']:.3f} uW "
                  f"(one graded event); spikes/sample {p['spikes']['per_sample']:.0f} -> P = "
                  f"{1e6 * p['spikes']['power_w']:.3f} uW (|n| spikes); E_AC 0.9 pJ, 1 ms steps")


if __name__ == "__main__":
    main()
