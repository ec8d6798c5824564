"""ECMT, AIF and the layer-wise baseline on the digits ViTs: float SNN accuracy and events per sample.

    python3 benchmarks/vit_methods_digits.py [--samples N] [--jobs 2] [--out docs/results/vit_methods_digits.md]

Both digits ViT definitions (``pretrained_digits_vit("vit")``: timm layout, class token;
``"encoder"``: ``nn.TransformerEncoder``, mean-pooled tokens) are exported to ONNX and converted on
500 training images (split seed 0) with ``ecmt`` (n = 8, p = 99), ``aif`` (channel-wise theta and z,
grid search for each T) and ``aif search=none`` (the layer-wise baseline: one data-normalised
threshold per value, z = 0, same neuron and operators); float32 simulation of the 449 test digits
at T = 1, 2, 4, 8, 16, 32, 64. ecmt and the baseline do not depend on T: one 64-step run is read at
every T; aif is converted and run once per T. Events: spikes (MT: one graded event) of all spiking
populations per sample. ``--jobs 2`` runs the two models in two processes. ``--out`` writes the
markdown page (tables, the papers' orderings, notes).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STEPS = (1, 2, 4, 8, 16, 32, 64)
ORDER_T = (4, 8, 16)
MODELS = ("vit", "encoder")
METHODS = ("ecmt", "aif", "baseline")
LABEL = {"ecmt": "ecmt (n = 8, p = 99)", "aif": "aif (channel-wise θ, z; grid per T)",
         "baseline": "layer-wise baseline (aif search=none, p99.9 of \\|a\\|)"}
CALIB = 500


def run_model(kind: str, samples: int, max_values: int) -> dict:
    """Accuracy (%) and mean events per sample for every method and T on one model."""
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from spikeport.convert import convert
    from spikeport.datasets import load_digits_split
    from spikeport.frontend import export_onnx, load_model
    from spikeport.models.digits_vit import pretrained_digits_vit
    from spikeport.simulator.transformer import simulate_operators

    x_train, _, x_test, y_test = load_digits_split(0)
    if samples:
        x_test, y_test = x_test[:samples], y_test[:samples]
    with tempfile.TemporaryDirectory() as tmp:
        ann = load_model(export_onnx(pretrained_digits_vit(kind), Path(tmp) / f"{kind}.onnx", x_train[:1]))
    out = {"kind": kind, "ann": 100 * ann.evaluate(x_test, y_test)["accuracy"], "n": len(y_test),
           "acc": {m: {} for m in METHODS}, "events": {m: {} for m in METHODS}, "seconds": {}}

    def record(method: str, checks: dict, events: dict) -> None:
        for t, v in checks.items():
            out["acc"][method][t] = 100 * float(np.mean(v.argmax(1) == y_test))
            out["events"][method][t] = float(np.mean(events[t]))

    for method, opts in (("ecmt", {}), ("baseline", {"timesteps": max(STEPS), "search": "none"})):
        t0 = time.time()
        net = convert(ann, x_train[:CALIB], "ecmt" if method == "ecmt" else "aif", **opts)
        ev: dict = {}
        _, checks = simulate_operators(net, x_test, max(STEPS), checkpoints=STEPS, batch_size=512, checkpoint_events=ev)
        record(method, checks, ev)
        out["seconds"][method] = time.time() - t0
    t0 = time.time()
    for t in STEPS:
        net = convert(ann, x_train[:CALIB], "aif", timesteps=t, max_values=max_values)
        ev = {}
        _, checks = simulate_operators(net, x_test, t, checkpoints=(t,), batch_size=512, checkpoint_events=ev)
        record("aif", checks, ev)
        print(f"  {kind}: aif T={t} {out['acc']['aif'][t]:.2f}", flush=True)
    out["seconds"]["aif"] = time.time() - t0
    return out


def fit_report(timesteps: int, max_values: int) -> str:
    """Markdown table: per AIF placement of the timm-layout ViT, clipped share and relative RMSE of
    the T-step closed form (count = clip(floor(T (a - z) / theta), -T, T)) for aif and the baseline."""
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from spikeport.convert.aif import AIFMethod
    from spikeport.datasets import load_digits_split
    from spikeport.frontend import export_onnx, load_model
    from spikeport.frontend.ann_eval import evaluate_graph
    from spikeport.models.digits_vit import pretrained_digits_vit

    x_train = load_digits_split(0)[0][:CALIB]
    with tempfile.TemporaryDirectory() as tmp:
        ann = load_model(export_onnx(pretrained_digits_vit("vit"), Path(tmp) / "vit.onnx", x_train[:1]))
    params = {}
    for search in ("both", "none"):
        m = AIFMethod(timesteps=timesteps, search=search, max_values=max_values)
        m.prepare(ann, x_train)
        params[search] = m._vit
    names = list(params["both"])
    vals = evaluate_graph(ann.graph, x_train, keep=names, dtype=torch.float64)
    lines = ["| value | aif clipped | aif rel. RMSE | baseline clipped | baseline rel. RMSE |", "|---|---|---|---|---|"]
    t = float(timesteps)
    for n in names:
        a = vals[n].numpy()
        cells = []
        for search in ("both", "none"):
            th, z = params[search][n]
            clipped = np.mean((a > z + th) | (a < z - th))
            dec = th / t * np.clip(np.floor(t * (a - z) / th), -t, t) + z
            cells += [f"{100 * clipped:.1f} %", f"{np.sqrt(np.mean((dec - a) ** 2)) / a.std():.3f}"]
        lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables(results: list[dict]) -> str:
    head = "| model | method | ANN | " + " | ".join(f"T={t}" for t in STEPS) + " |\n|---|---|---|" + "---|" * len(STEPS)
    acc = [head]
    ev = [head.replace("| ANN |", "| |")]
    for r in results:
        for m in METHODS:
            acc.append(f"| {r['kind']} | {LABEL[m]} | {r['ann']:.2f} | " + " | ".join(f"{r['acc'][m][t]:.2f}" for t in STEPS) + " |")
            ev.append(f"| {r['kind']} | {LABEL[m]} | | " + " | ".join(f"{r['events'][m][t]:,.0f}" for t in STEPS) + " |")
    claims = ["| claim | model | " + " | ".join(f"T={t}" for t in ORDER_T) + " |", "|---|---|" + "---|" * len(ORDER_T)]
    for a, b in (("ecmt", "aif"), ("aif", "baseline")):
        for r in results:
            cells = []
            for t in ORDER_T:
                x, y = r["acc"][a][t], r["acc"][b][t]
                cells.append(f"{'yes' if x >= y else '**no**'} ({x:.2f} vs {y:.2f})")
            claims.append(f"| {a} >= {b} | {r['kind']} | " + " | ".join(cells) + " |")
    return ("## Accuracy (%), float SNN\n\n" + "\n".join(acc) + "\n\n## Events per sample (float SNN)\n\n"
            "A multi-threshold event (one graded level) and a signed AIF spike each count as one event.\n\n"
            + "\n".join(ev) + "\n\n## The papers' ordering (ecmt >= aif >= baseline at T = 4, 8, 16)\n\n" + "\n".join(claims) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=0, help="test samples (0 = all 449)")
    ap.add_argument("--jobs", type=int, default=1, help="models run in parallel processes (1 or 2)")
    ap.add_argument("--max-values", type=int, default=1024, help="aif: calibration values per channel in the grid search")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown page here")
    ap.add_argument("--json", type=Path, default=None, help="save the measured figures here")
    ap.add_argument("--render", type=Path, default=None, help="no run: write the page from a saved --json")
    ap.add_argument("--fit-report", type=int, default=4, help="T of the per-placement fit table on the page (0: none)")
    args = ap.parse_args()
    t0 = time.time()
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        results, total, args.jobs, args.max_values = saved["results"], saved["total"], saved["jobs"], saved["max_values"]
        for r in results:
            for key in ("acc", "events"):
                r[key] = {m: {int(t): v for t, v in d.items()} for m, d in r[key].items()}
    elif args.jobs > 1:
        with mp.get_context("spawn").Pool(min(args.jobs, len(MODELS))) as pool:
            results = pool.starmap(run_model, [(k, args.samples, args.max_values) for k in MODELS])
    else:
        results = [run_model(k, args.samples, args.max_values) for k in MODELS]
    if args.render is None:
        total = time.time() - t0
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "total": total, "jobs": args.jobs, "max_values": args.max_values}))
    text = tables(results)
    print(text)
    for r in results:
        print(f"{r['kind']}: " + ", ".join(f"{m} {s:.0f} s" for m, s in r["seconds"].items()))
    print(f"total {total:.0f} s")
    if args.out is not None:
        report = fit_report(args.fit_report, args.max_values) if args.fit_report else ""
        print(report)
        page = (PAGE_HEAD.format(n=results[0]["n"], calib=CALIB, mv=args.max_values) + text + "\n" + PAGE_NOTES + report
                + f"\nTotal run time {total:.0f} s ({args.jobs} process(es), one torch thread each).\n")
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(page)
        tmp.replace(args.out)


PAGE_HEAD = """# ECMT, AIF and the layer-wise baseline on the digits ViTs

All six Transformer methods in one table (float and loihi2 fixed, events and energy): docs/results/vit_methods_table.md.

Generated by `python3 benchmarks/vit_methods_digits.py --jobs 2 --out docs/results/vit_methods_digits.md`
(do not edit by hand). Test set: {n} digits (split seed 0); calibration: the first {calib} training
images; float32 float simulation (`simulator/transformer.py`). Models: `pretrained_digits_vit("vit")`
(timm layout, class token) and `("encoder")` (`nn.TransformerEncoder`, `norm_first=True`, GELU,
mean-pooled tokens), both given to spikeport as ONNX (opset 17). All three methods share the
placement (a spiking neuron on every Linear input but the head's and on q, k, v and the softmax
output), the operators (LayerNorm, GELU, softmax as expectation compensation; products as the
matrix-product EC, which for AIF is its product form in the anytime normalisation) and the analog
patch embedding, residual stream and head; they differ only in the neuron:

- ecmt: multi-threshold neuron, n = 8 levels per sign, theta1 / theta2 at the 99th / 1st percentile
  (paper 003);
- aif: signed IF with a threshold and an offset per channel from the grid search of paper 000
  (z over mu +- 6 sigma in 41 steps, theta over (0, 6 sigma] in 40 steps, {mv} seeded calibration
  values per channel),
  searched for each T;
- baseline: the same signed IF with one threshold per value (the 99.9th percentile of |a| on the
  calibration images) and no offset: paper 000 Table 4's layer-wise baseline.

"""

PAGE_NOTES = """## Why the orderings hold or not

- **ecmt >= aif** holds at T = 4 and 8 on both models and at T = 16 on the encoder, but **not at
  T = 16 on the timm layout**, where aif is one test sample ahead (96.44 vs 96.21; ecmt there
  equals its ANN's 96.21 and aif is one sample above it). At T >= 16 every method is within a few
  samples of the ANN (ecmt's mean |logit - ANN logit| is 0.15 at T = 16,
  docs/results/ecmt_digits_vit.md), so the order is decided by one or two samples near the decision
  boundary, not by the method. An ecmt event carries one of 2n signed levels (n = 8: up to 128
  theta1 per step), an AIF event one theta_c: at equal T ecmt expresses each value with several
  bits per step that AIF does not have, so it leads at small T by construction. Paper 000 compares
  with ECMT at different T (ECMT 84.6 % at T = 8 vs AIF 85.52 % at T = 64 on ViT-L), not at equal T.
- **aif >= baseline** holds at T = 8 and 16 on both models (+18.0 and +4.2 points on the timm
  layout, +7.8 and +1.3 on the encoder) and at T = 4 on the encoder (+21.6), but **not at T = 4 on
  the timm layout** (29.18 vs 33.85; both far below the ANN's 96.21, i.e. neither works there).
  Cause, measured on the calibration images with `--fit-report 4` (below): AIF's per-value error
  is 1.8 to 5.2 times smaller than the baseline's on every placement (relative RMSE 0.13 to 0.25
  against 0.36 to 1.21), but the fit that minimises paper 000's Eq. 18 at T = 4 clips 10 to 15 % of
  the values of q, k, v and the Linear inputs and 35 to 47 % of the softmax and GELU outputs (the
  baseline at most 0.1 %): with only 9 counts per neuron the squared-error optimum gives up the tails.
  In attention the tails are what matters (the largest q k products and the attention peaks, cut to
  z + theta), so a smaller average error still gives a worse network. The paper's large gap at
  T = 4 (Table 4: AIF 58.18 vs baseline 0.09 on ViT-L) comes from ViT-L's outlier channels, which
  make a layer-wise threshold useless for every other channel; this two-block digits ViT has no
  such outliers, so its baseline is much stronger than ViT-L's (33.85 % at T = 4, 92.20 % at T = 16).
- At T = 1 and 2 every method but ecmt is near chance; at T = 32 and 64 all three are within about
  one point of the ANN and differ by one to three of 449 samples (0.22 points each).

## Other notes

- Events: AIF's thresholds are 2 to 3 sigma of a channel where the baseline's is the 99.9th
  percentile of |a| over the whole tensor, so an AIF neuron fires on more steps (about 2x the
  baseline's events and 1.1 to 2.2x ecmt's at each T); that is what buys its accuracy at T = 8-16.
  ecmt's graded event counts once per step however large its level.
- The aif row at each T is a separate conversion (the grid search minimises the error for that T);
  ecmt and the baseline do not depend on T and are one 64-step run read at every T.
- LayerNorm, GELU and softmax: paper 000 Eq. 26 (S-LayerNorm, S-GELU, S-Softmax) is the
  expectation-compensation operator, so the AIF network uses `LayerNormEC` / `GELUEC` /
  `SoftmaxEC` as the paper does; the products use the anytime normalisation (methods.md section
  2), not the paper's fixed 1/T^2, because softmax follows q k^T at every step.
- Float and loihi2 fixed point for all six Transformer methods, with events and energy:
  docs/results/vit_methods_table.md.

## Fit report at T = 4, timm layout (`--fit-report 4`)

Per AIF placement, on the 500 calibration images: share of values outside the neuron's range
[z - theta, z + theta] and RMSE of the T-step decoded value relative to the values' standard
deviation, for aif and the layer-wise baseline.

"""

if __name__ == "__main__":
    main()
