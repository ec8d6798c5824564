"""Conversion-method study on scikit-learn digits: accuracy vs T for every method, float and fixed point.

Trains/loads two small CNNs (the shipped ReLU ResNet with BatchNorm and a residual add; a Leaky-ReLU
CNN trained here), converts them with every method, quantises each to the ``loihi2`` profile and
prints, per T in (1, 2, 4, 8, 16, 32, 64), the float-SNN / fixed-point-SNN accuracy and the events
(spikes) per sample. Writes the tables to docs/results/methods_digits.md (``--out`` to change).

    python3 benchmarks/methods_digits.py            # about 5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikeport import compiler, datasets, frontend
from spikeport.convert import convert
from spikeport.convert.finetune import export_finetuned, finetune_for_method
from spikeport.convert.negspike_calibration import joint_calibrate
from spikeport.convert.pmsm import pmsm_finetune
from spikeport.models.digits import digits_leaky_cnn, pretrained_digits_resnet, train_digits_model
from spikeport.simulator import simulate

TS = (1, 2, 4, 8, 16, 32, 64)
CALIB = 512


def _acc(pred, y) -> float:
    return 100.0 * float(np.mean(np.asarray(pred) == y))


def _events(res, n: int) -> float:
    return sum(layer["spikes"] for layer in res.layers.values()) / n


class Study:
    def __init__(self, x_test, y_test):
        self.x, self.y = x_test, y_test
        self.rows: list[dict] = []

    def curve(self, label: str, ann_acc: float, make_net) -> dict:
        """``make_net(T)`` returns the float IR for T (most methods ignore T)."""
        row = {"label": label, "ann": ann_acc, "points": {}}
        cache = {}
        for T in TS:
            net = make_net(T)
            if id(net) not in cache:
                cache[id(net)] = compiler.quantize(net, "loihi2")[0]
            rf, rq = simulate(net, self.x, T), simulate(cache[id(net)], self.x, T)
            row["points"][T] = dict(float=_acc(rf.predictions, self.y), fixed=_acc(rq.predictions, self.y),
                                    events=_events(rf, len(self.x)), predictions=rf.predictions)
        self.rows.append(row)
        print(f"{label:38s} ANN {ann_acc:5.1f} | " + " | ".join(
            f"T={T}: {p['float']:.1f}/{p['fixed']:.1f}" for T, p in row["points"].items()), flush=True)
        return row

    def markdown(self) -> str:
        head = "| method | ANN | " + " | ".join(f"T={T}" for T in TS) + " |\n|---|---|" + "---|" * len(TS) + "\n"
        acc = head + "".join(
            f"| {r['label']} | {r['ann']:.1f} | " + " | ".join(f"{p['float']:.1f} / {p['fixed']:.1f}" for p in r["points"].values())
            + " |\n" for r in self.rows)
        ev = head.replace("| ANN |", "| |").replace("|---|---|", "|---|---|") + "".join(
            f"| {r['label']} | | " + " | ".join(f"{p['events']:.0f}" for p in r["points"].values()) + " |\n" for r in self.rows)
        return acc, ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "results" / "methods_digits.md")
    ap.add_argument("--epochs", type=int, default=20, help="pmsm fine-tuning and leaky-CNN training epochs")
    ap.add_argument("--qcfs-epochs", type=int, default=5, help="qcfs fine-tuning epochs (lr 1e-3)")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = datasets.load_digits_split()
    cal = xtr[:CALIB]
    study = Study(xte, yte)
    tmp = Path(tempfile.mkdtemp(prefix="spikeport-study-"))

    # ---- ReLU ResNet (BatchNorm + residual add): if, aif ablation, qcfs, pmsm
    base = pretrained_digits_resnet()
    ann = frontend.load_model(base, input_shape=(1, 8, 8))
    acc_ann = ann.evaluate(xte, yte)["accuracy"] * 100
    net_if = convert(ann, cal, method="if")
    study.curve("if (p99.9, v(0)=θ/2, default)", acc_ann, lambda T: net_if)
    net_if0 = convert(ann, cal, method="if", v_init="zero")
    study.curve("if (p99.9, v(0)=0)", acc_ann, lambda T: net_if0)
    for search in ("none", "threshold", "offset", "both"):
        study.curve(f"aif search={search}", acc_ann,
                    lambda T, s=search: convert(ann, cal, method="aif", timesteps=T, search=s))
    qcfs_rows = {}
    for L in (4, 8):
        tuned = finetune_for_method(ann.module, "qcfs", xtr, ytr, epochs=args.qcfs_epochs, levels=L, lr=1e-3, progress=False)
        qann = frontend.load_model(export_finetuned(tuned, tmp / f"qcfs{L}.pt2", xtr[:2]))
        net = convert(qann, cal, method="qcfs")
        qcfs_rows[L] = study.curve(f"qcfs L={L}", qann.evaluate(xte, yte)["accuracy"] * 100, lambda T, n=net: n)
    pm = pmsm_finetune(ann.module, xtr, ytr, epochs=args.epochs, lr=1e-2, seed=0)
    pann = frontend.load_model(pm, input_shape=(1, 8, 8))
    pqa_pred = pann.evaluate(xte)["logits"].argmax(axis=1)
    net_pm = convert(pann, cal, method="pmsm")
    pmsm_row = study.curve("pmsm (L=8, levels -2..8)", _acc(pqa_pred, yte), lambda T: net_pm)

    # ---- Leaky-ReLU CNN: negspike settings vs the positive-only (IF-like) baseline
    leaky = train_digits_model(digits_leaky_cnn(slope=0.5), xtr, ytr, epochs=args.epochs, seed=0)
    lann = frontend.load_model(leaky, input_shape=(1, 8, 8))
    acc_leaky = lann.evaluate(xte, yte)["accuracy"] * 100
    neg = {}
    for setting in ("symmetric", "ibt", "positive_only"):
        net = convert(lann, cal, method="negspike", setting=setting)
        neg[setting] = study.curve(f"leaky CNN: negspike {setting}", acc_leaky, lambda T, n=net: n)
        if setting == "symmetric":  # the optional joint layer calibration, fitted per T (T >= 4)
            study.curve("leaky CNN: negspike symmetric + joint calibration", acc_leaky,
                        lambda T, n=net: joint_calibrate(n, lann, cal, T) if T >= 4 else n)

    # ---- the papers' claims, checked on our data
    p = lambda row, T: row["points"][T]  # noqa: E731
    by = {r["label"]: r for r in study.rows}
    claims = []
    a_both, if_def, if_zero = by["aif search=both"], by["if (p99.9, v(0)=θ/2, default)"], by["if (p99.9, v(0)=0)"]
    small = [T for T in TS if T <= 8]
    claims.append(("aif beats layer-wise if (v(0)=0, the paper's IF baseline) at T <= 8",
                   all(p(a_both, T)["float"] > p(if_zero, T)["float"] for T in small if T > 1)))
    claims.append(("aif beats our default if (v(0)=θ/2) at T <= 8",
                   all(p(a_both, T)["float"] > p(if_def, T)["float"] for T in small if T > 1)))
    abl = {s: by[f"aif search={s}"] for s in ("threshold", "offset", "both")}
    for T in (2, 4, 8):
        singles = (p(abl["threshold"], T)["float"], p(abl["offset"], T)["float"])
        claims.append((f"aif ablation at T = {T}: layer-wise if (v(0)=0) < threshold-only and offset-only < both",
                       p(if_zero, T)["float"] < min(singles) and max(singles) < p(abl["both"], T)["float"]))
    pm1 = np.asarray(pmsm_row["points"][1]["predictions"])
    claims.append(("pmsm at T = 1 equals its quantised ANN on every test sample", bool(np.all(pm1 == pqa_pred))))
    claims.append(("pmsm at T = 1 sends fewer events than qcfs (L=8) at T = 1",
                   p(pmsm_row, 1)["events"] < p(qcfs_rows[8], 1)["events"]))
    for L, row in qcfs_rows.items():
        claims.append((f"qcfs L={L} at T = L within 1 point of its quantised ANN", abs(p(row, L)["float"] - row["ann"]) <= 1.0))
    claims.append(("negspike symmetric within 2 points of the ANN at T = 16", abs(p(neg["symmetric"], 16)["float"] - acc_leaky) <= 2.0))
    claims.append(("positive-only (IF) baseline falls clearly short at T = 16 (> 2 points)", acc_leaky - p(neg["positive_only"], 16)["float"] > 2.0))
    claims.append(("symmetric needs fewer steps than IBT (higher accuracy at T = 4 and 8)",
                   all(p(neg["symmetric"], T)["float"] > p(neg["ibt"], T)["float"] for T in (4, 8))))

    acc_md, ev_md = study.markdown()
    text = (
        "# Conversion methods on scikit-learn digits\n\n"
        "Generated by `python3 benchmarks/methods_digits.py` (do not edit by hand). Test set: "
        f"{len(xte)} digits; calibration: {CALIB} training images; fixed point: the `loihi2` profile run by the "
        "bit-accurate simulator. ReLU rows use the shipped DigitsResNet (BatchNorm + residual add); qcfs and pmsm "
        f"fine-tune it ({args.qcfs_epochs} epochs at lr 1e-3 for qcfs, {args.epochs} at lr 1e-2 for pmsm); the leaky rows use a Leaky-ReLU(0.5) CNN trained for "
        f"{args.epochs} epochs. The ANN column is the accuracy of the network each method converts (the "
        "quantised ANN for qcfs and pmsm).\n\n"
        "## Accuracy (%), float SNN / fixed-point SNN\n\n" + acc_md +
        "\n## Events (spikes) per sample, float SNN\n\nA graded PMSM count is one event.\n\n" + ev_md +
        "\n## The papers' claims on our data\n\n| claim | holds |\n|---|---|\n" +
        "".join(f"| {c} | {'yes' if ok else '**no**'} |\n" for c, ok in claims) +
        "\nWhere a claim does not hold, see the notes below.\n\n"
        "## Notes\n\n"
        "- AIF's neuron is signed (methods.md section 2): with v(0) = 0 it reproduces the closed-form count "
        "exactly, but it passes negative pre-activations through as negative values where ReLU gives 0, so the "
        "search must place the offset and threshold to cut them; spikeport's default IF starts at v(0) = θ/2, "
        "which already removes most of IF's small-T error, so AIF's advantage is measured against the paper's "
        "v(0) = 0 baseline as well as against our default.\n"
        "- `aif search=none` is AIF's signed neuron with layer-wise θ and z = 0; the paper's ablation baseline is "
        "the layer-wise (unsigned) IF, row `if (p99.9, v(0)=0)`. The single-parameter variants keep the signed "
        "neuron, whose negative spikes hurt until the offset search moves z below the ReLU's negative range.\n"
        "- PMSM at T = 1 is lossless by construction (its first step is the PQA quantiser). QCFS at T = 1 sends "
        "almost nothing (its accuracy there is chance level), so 'fewer events than qcfs at T = 1' compares "
        "against a network that does not work; compare with qcfs at T = L instead.\n"
        "- The joint-calibration row fits the converted symmetric NegSpike network per T (10 epochs of BPTT on the "
        "calibration images, cosine layer weights, surrogate slope 6.7 -> 10 -> 15; at T < 4 it is left out).\n"
        "- QCFS's closed form (count = clip(floor(T z/λ + 1/2), 0, T) at T = L) is exact for constant input, "
        "which only the first layer receives; deeper layers see spike trains whose timing varies from step to "
        "step, so at T = L a few counts are off by one. With few levels (L = 4) one count is a quarter of the "
        "range, and the gap to the quantised ANN can exceed 1 point; it closes by T = 2L.\n"
        f"\nTotal run time {time.perf_counter() - t0:.0f} s.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmpf = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmpf, args.out)
    print("\n" + "\n".join(f"{'OK ' if ok else 'NO '} {c}" for c, ok in claims))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
