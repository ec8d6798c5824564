"""One methods table of the digits ViT (issue 11): ecmt, aif, the layer-wise baseline, mbe, stbif and
pmsm, float and loihi2 fixed point, accuracy at T = 1..64, events and energy per sample.

    python3 benchmarks/vit_methods_table.py [--samples N] [--energy-samples M] [--jobs 2]
        [--models vit,encoder] [--steps 1,2,4] [--json run.json] [--render run.json ... [--json merged.json]]
        [--out docs/results/vit_methods_table.md]

Models: ``pretrained_digits_vit(kind)`` given as ONNX (``--models``: vit, the timm layout, by default;
encoder too on request), one page section each. Test set: the first N test digits
(split seed 0; 0 = all 449). Per method, the cheapest run that gives every T:
- ecmt, baseline (C1 operator nets, T-independent conversions): one 64-step run read at every T,
  float (simulator/transformer.py) and loihi2 fixed (compiler.quantize + simulator/transformer_fixed.py);
- aif: converted (grid search) and run once per T, float and fixed;
- mbe (C3): converted and run per T with shipped fits (convert/mbe_fits/), float and fixed;
- stbif, pmsm (C2): the QANN fine-tuned with ``finetune`` (3 epochs, L = 16), one 64-step run
  read at every T, float and fixed.
``--steps`` limits the per-T methods (aif, mbe) to some T, so their long runs can be split; ``--render``
of several runs merges the results of one method and model (per-T figures united; with ``--json`` the
merged figures are saved). Energy per sample at one reference T per method (T = 16 for ecmt, aif, baseline, mbe and stbif
(settled by T = 16, docs/results/c2_digits_vit.md), T = 1 for pmsm) on the first M test digits, with
the functions ``spikeport energy`` uses: report.energy.energy_report (C1, C2) and
report.mbe_energy.mbe_network_energy (C3). Shared pieces come from the per-method benchmarks.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vit_methods_digits import CALIB, MODELS, ORDER_T, STEPS  # noqa: E402

METHODS = ("ecmt", "aif", "baseline", "mbe", "stbif", "pmsm")
REF_T = {"ecmt": 16, "aif": 16, "baseline": 16, "mbe": 16, "stbif": 16, "pmsm": 1}
LABEL = {"ecmt": "ecmt (n = 8, p = 99, softmax θ 0.0125)", "aif": "aif (grid per T)", "baseline": "layer-wise baseline",
         "mbe": "mbe (shipped fits)", "stbif": "stbif (finetune, L = 16)", "pmsm": "pmsm (finetune, L = 16)"}
PAPER_E = {"ecmt": "synaptic ACs + MACs", "aif": "synaptic ACs + MACs", "baseline": "synaptic ACs + MACs",
           "mbe": "MBE neuron spikes x E_AC", "stbif": "synaptic ACs + MACs", "pmsm": "synaptic ACs + MACs"}


def _acc(logits, y) -> float:
    return 100 * float(np.mean(np.asarray(logits).argmax(1) == y))


def run_method(method: str, kind: str, samples: int, energy_samples: int, epochs: int,
               steps: tuple[int, ...] = STEPS) -> dict:
    """Accuracy (float, fixed) per T and energy at the reference T of one method (per-T methods: at ``steps``)."""
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from c2_digits_vit import DIGITS_RANGE, energy_figures
    from mbe_digits_vit import mbe_events
    from spikeport.compiler import QuantizationError, quantize
    from spikeport.convert import convert
    from spikeport.datasets import load_digits_split
    from spikeport.frontend import count_macs, export_onnx, load_model
    from spikeport.models.digits_vit import pretrained_digits_vit

    xtr, ytr, xte, yte = load_digits_split(0)
    if samples:
        xte, yte = xte[:samples], yte[:samples]
    xe = xte[:energy_samples]
    tmp = Path(tempfile.mkdtemp())
    onnx = export_onnx(pretrained_digits_vit(kind), tmp / f"{kind}.onnx", xtr[:1])
    ann = load_model(onnx)
    out = {"method": method, "kind": kind, "n": len(yte), "n_energy": len(xe), "ann": _acc(ann.forward(xte), yte),
           "float": {}, "fixed": {}, "energy": {}, "note": "", "t0": time.time()}
    ref = REF_T[method]

    def energy_c12(net, qnet):
        for ar, n in (("float", net), ("fixed", qnet)):
            if n is not None:
                out["energy"][ar] = energy_figures(n, xe, ref, ann_macs=count_macs(ann))

    if method in ("ecmt", "baseline"):
        from spikeport.simulator.transformer import simulate_operators
        from spikeport.simulator.transformer_fixed import simulate_operators_fixed
        net = (convert(ann, xtr[:CALIB], "ecmt") if method == "ecmt"
               else convert(ann, xtr[:CALIB], "aif", timesteps=max(STEPS), search="none"))
        _, ch = simulate_operators(net, xte, max(STEPS), checkpoints=STEPS, batch_size=512)
        qnet = quantize(net, "loihi2")[0]     # aif / baseline: signed IF rule, compiler/quantize_signed_if.py
        qch = simulate_operators_fixed(qnet, xte, max(STEPS), checkpoints=STEPS, batch_size=512)[1]
        for t in STEPS:
            out["float"][t], out["fixed"][t] = _acc(ch[t], yte), _acc(qch[t], yte)
        energy_c12(net, qnet)
    elif method == "aif":
        from spikeport.simulator.transformer import simulate_operators
        from spikeport.simulator.transformer_fixed import simulate_operators_fixed
        for t in steps:
            net = convert(ann, xtr[:CALIB], "aif", timesteps=t)
            _, ch = simulate_operators(net, xte, t, checkpoints=(t,), batch_size=512)
            qnet = quantize(net, "loihi2")[0]
            qch = simulate_operators_fixed(qnet, xte, t, checkpoints=(t,), batch_size=512)[1]
            out["float"][t], out["fixed"][t] = _acc(ch[t], yte), _acc(qch[t], yte)
            if t == ref:
                energy_c12(net, qnet)
            print(f"  aif T={t}: {out['float'][t]:.2f} / {out['fixed'].get(t)}", flush=True)
    elif method == "mbe":
        from spikeport.convert.mbe_params import MBEFitError, default_fit
        from spikeport.report.mbe_energy import mbe_network_energy
        from spikeport.simulator.transformer_mbe import simulate_mbe
        from spikeport.simulator.transformer_mbe_fixed import simulate_mbe_fixed
        fitted = []
        for t in steps:
            try:
                for fn in ("gelu", "identity", "exp2", "reciprocal", "invsqrt"):
                    default_fit(fn, timesteps=t)
            except MBEFitError:
                continue
            fitted.append(t)
            net = convert(ann, xtr[:CALIB], "mbe", timesteps=t)
            rf, cf = simulate_mbe(net, xte, t, batch_size=512)
            out["float"][t] = 100 * rf.accuracy(yte)
            try:
                qnet, _ = quantize(net, "loihi2")
            except QuantizationError as e:       # T = 1: the identity fits never fire (w = 0), products refused
                out["fixed_error"] = f"T = {t}: {e}"
                out.setdefault("fixed_refused", []).append(t)
                print(f"  mbe T={t}: {out['float'][t]:.2f} / not quantisable", flush=True)
                continue
            rq, cq = simulate_mbe_fixed(qnet, xte, t, batch_size=512)
            out["fixed"][t] = 100 * rq.accuracy(yte)
            if t == ref:       # priced from the same runs (all N samples), as `spikeport energy` does for C3
                for ar, n, c in (("float", net, cf), ("fixed", qnet, cq)):
                    e = mbe_network_energy(n, c)
                    out["energy"][ar] = {"events": mbe_events(c), "compute_only_pj": e.paper_pj,
                                           "with_operators_pj": e.total_pj, "with_sum_form_pj": e.total_sum_form_pj,
                                           "ann_compute_pj": sum(r.macs for r in count_macs(ann).rows) * e.e_mac_pj}
                out["n_energy"] = len(yte)
            print(f"  mbe T={t}: {out['float'][t]:.2f} / {out['fixed'][t]:.2f}", flush=True)
        out["note"] = mbe_note(fitted)
    else:                  # stbif, pmsm: C2 from the fine-tuned QANN
        from spikeport.convert.finetune import finetune_file
        from spikeport.simulator.transformer_c2 import simulate_c2
        from spikeport.simulator.transformer_c2_fixed import simulate_c2_fixed
        s = finetune_file(onnx, method, xtr, ytr, epochs, tmp / f"{method}.pt2", levels=16, progress=False)
        q = load_model(s.out)
        out["qann"] = _acc(q.forward(xte), yte)
        net = convert(q, xtr[:128], method=method)
        _, ch, _ = simulate_c2(net, xte, max(STEPS), checkpoints=STEPS, batch_size=512)
        qnet, _ = quantize(net, "loihi2", input_range=DIGITS_RANGE)
        _, qch, _ = simulate_c2_fixed(qnet, xte, max(STEPS), checkpoints=STEPS, batch_size=512)
        for t in STEPS:
            out["float"][t], out["fixed"][t] = _acc(ch[t], yte), _acc(qch[t], yte)
        energy_c12(net, qnet)
    out["seconds"] = time.time() - out.pop("t0")
    print(f"{kind} {method}: {out['seconds']:.0f} s", flush=True)
    return out


def mbe_note(fitted) -> str:
    return "fits ship for T = " + ", ".join(map(str, sorted(fitted)))


def merge(results: list[dict]) -> list[dict]:
    """One result per (method, model): runs of the same method split over T (``--steps``) united, per-T
    figures of a later run replacing an earlier one's; energy from the run that has it; seconds summed."""
    out: dict[tuple, dict] = {}
    for r in results:
        key = (r["method"], r.get("kind", "vit"))
        if key not in out:
            out[key] = {**r, "float": dict(r["float"]), "fixed": dict(r["fixed"]), "energy": dict(r["energy"])}
            continue
        m = out[key]
        if m["n"] != r["n"]:
            raise SystemExit(f"--render: {key[0]} on {key[1]} was run on {m['n']} and {r['n']} test samples; "
                             "merge only runs on the same samples")
        m["float"].update(r["float"])
        m["fixed"].update(r["fixed"])
        if r["energy"]:
            m["energy"], m["n_energy"] = dict(r["energy"]), r["n_energy"]
        m["seconds"] += r["seconds"]
        if r.get("fixed_error"):
            m["fixed_error"] = r["fixed_error"]
        m["fixed_refused"] = sorted(set(m.get("fixed_refused", [])) | set(r.get("fixed_refused", [])))
        if key[0] == "mbe":
            m["note"] = mbe_note(m["float"])
    return list(out.values())


def _cell(r: dict, kind: str, t: int) -> str:
    if t in r[kind]:
        return f"{r[kind][t]:.2f}"
    if kind == "fixed" and r.get("fixed_error") and t in r.get("fixed_refused", [t]):   # per T (mbe) or every T
        return "not quantisable"
    return "no fit"


def _first_equal(r: dict, target: float):
    """The first T from which the float accuracy equals ``target`` at every later T (None: never)."""
    ts = [t for t in STEPS if all(abs(r["float"][u] - target) < 1e-9 for u in STEPS if u >= t)]
    return ts[0] if ts else None


MODEL_TITLE = {"vit": "`vit`: timm layout, class token", "encoder": "`encoder`: nn.TransformerEncoder, mean-pooled tokens"}


def render(results: list[dict], total: float, jobs: int, cmd: str) -> str:
    kinds = [k for k in MODELS if any(r.get("kind", "vit") == k for r in results)]
    parts = []
    for k in kinds:
        rs = [r for r in results if r.get("kind", "vit") == k]
        parts.append(f"## {MODEL_TITLE[k]}\n\n" + render_model(rs, k))
    n_e = {r["method"]: r["n_energy"] for r in results}
    n = results[0]["n"]
    head = HEAD.format(cmd=cmd, n=f"all {n}" if n == 449 else f"the first {n}", ne=min(n_e.values()), calib=CALIB)
    tail = (f"Run time {total:.0f} s (wall, summed over the runs) with {jobs} process(es) per run, one torch "
            "thread each, on 2 cores shared with other work.\n")
    return head + "\n".join(parts) + NOTES + not_in_table(results, kinds) + "\n" + tail


def not_in_table(results: list[dict], kinds: list[str]) -> str:
    """The "Not in this table" notes, from what the results lack (nothing: no section)."""
    lines = [] if "encoder" in kinds else [ENCODER_MISSING]
    mbe_t = sorted({t for r in results if r["method"] == "mbe" for t in STEPS if t not in r["float"]})
    if mbe_t:
        lines.append(f"- mbe at T = {', '.join(map(str, mbe_t))}: no shipped fits of the five functions "
                     "(convert/mbe_fits/; `spikeport mbe-fit` makes them).\n")
    return "\n## Not in this table\n" + "".join(lines) if lines else ""


def render_model(results: list[dict], kind: str) -> str:
    """Table, notes and the papers' claims of one model."""
    by = {r["method"]: r for r in results}
    r0 = results[0]
    lines = ["| method | arithmetic | " + " | ".join(f"T={t}" for t in STEPS)
             + " | ref. T | events/sample | energy, papers' convention (nJ) | energy, operators counted (nJ) |",
             "|---|---|" + "---|" * len(STEPS) + "---|---|---|---|"]
    for m in METHODS:
        if m not in by:
            continue
        r = by[m]
        for ar in ("float", "fixed"):
            e = r["energy"].get(ar, {})
            lines.append(f"| {LABEL[m]} | {'float' if ar == 'float' else 'loihi2 fixed'} | "
                         + " | ".join(_cell(r, ar, t) for t in STEPS)
                         + f" | {REF_T[m]} | " + (f"{e['events']:,.0f} | {e['compute_only_pj'] / 1e3:.1f} | "
                                                  f"{e['with_operators_pj'] / 1e3:.1f} |" if e else "- | - | - |"))
    extra = [f"- ANN (float32, ONNX): {r0['ann']:.2f} %."]
    ann_e = next((r["energy"]["float"] for r in results if r["energy"].get("float", {}).get("ann_with_operators_pj")), None)
    if ann_e:
        extra.append(f"- ANN energy per sample: {ann_e['ann_compute_pj'] / 1e3:.1f} nJ (its MACs x E_MAC, the papers' "
                     f"convention), {ann_e['ann_with_operators_pj'] / 1e3:.1f} nJ with its LayerNorm, GELU and softmax "
                     "arithmetic (report/operator_energy.py).")
    for m in ("stbif", "pmsm"):
        if m in by and "qann" in by[m]:
            extra.append(f"- {m} QANN (fine-tuned, L = 16): {by[m]['qann']:.2f} %.")
    for m in METHODS:
        if m in by and by[m].get("fixed_error"):
            extra.append(f"- {m}, loihi2 fixed: not quantisable: `compiler.quantize` says \"{by[m]['fixed_error']}\".")
    if "mbe" in by:
        unfitted = [t for t in STEPS if t not in by["mbe"]["float"]]
        extra.append(f"- mbe: {by['mbe']['note']} (fit MSE per function and T: docs/results/mbe_fits.md)"
                     + ("; \"no fit\": no shipped fits of the five functions at that T (`spikeport mbe-fit` makes them)"
                        if unfitted else "; at T = 1 every kernel is alpha at its only step, so each MBE branch is one "
                        "step at |x - shift| = alpha (the identity, 2^x and 1/x fits have w = 0) and the network cannot "
                        "classify: the honest floor of the method") + ".")
    extra.append("- Run times (convert + simulate float and fixed + energy, s): "
                 + ", ".join(f"{r['method']} {r['seconds']:.0f}" for r in results) + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(extra) + "\n\n" + claims(by, kind)


def claims(by: dict, kind: str = "vit") -> str:
    out = [f"### The papers' claims on `{kind}`", "",
           "Numbers are from the table above (float rows unless said); per-method detail on the linked pages.", ""]

    def acc(m, t, kind="float"):
        return by[m][kind].get(t) if m in by else None
    if all(m in by for m in ("ecmt", "aif", "baseline")):
        for a, b in (("ecmt", "aif"), ("aif", "baseline")):
            cells = [f"T={t}: {acc(a, t):.2f} vs {acc(b, t):.2f}" for t in ORDER_T]
            fails = [t for t in ORDER_T if acc(a, t) < acc(b, t)]
            verdict = ("**holds**" if not fails else
                       f"**does not hold** at T = {', '.join(map(str, fails))}")
            out.append(f"- {a} >= {b} at T = 4, 8, 16 (issue 9's ordering; papers 003 and 000): {verdict} "
                       f"({'; '.join(cells)}; one sample = {100 / by[a]['n']:.2f} points). "
                       + WHY[(a, b)][bool(fails)])
    if "mbe" in by and 16 in by["mbe"]["float"]:
        gap = by["mbe"]["ann"] - by["mbe"]["float"][16]
        out.append(f"- MBE within 1.5 points of the ANN training-free at T = 16 (paper 001): "
                   f"{'**holds**' if gap <= 1.5 else '**does not hold**'} (ANN - mbe = {gap:+.2f} points float, "
                   f"{by['mbe']['ann'] - by['mbe']['fixed'][16]:+.2f} loihi2 fixed). See docs/results/mbe_vit.md.")
    if "mbe" in by and "float" in by["mbe"]["energy"]:
        e = by["mbe"]["energy"]["float"]
        out.append(f"- MBE's energy as the paper counts it (MBE neuron spikes only) vs with every operator: "
                   f"{e['compute_only_pj'] / 1e3:.1f} vs {e['with_operators_pj'] / 1e3:.1f} nJ per sample at T = 16 "
                   f"(sum form of the products: {e.get('with_sum_form_pj', float('nan')) / 1e3:.1f} nJ; ANN MACs "
                   f"{e.get('ann_compute_pj', float('nan')) / 1e3:.1f} nJ): the "
                   "paper's low figure **holds only in its convention**; the products' coinciding spike pairs dominate "
                   "the honest total (docs/results/mbe_vit.md).")
    if "pmsm" in by and "qann" in by["pmsm"]:
        q, f1, x1 = by["pmsm"]["qann"], acc("pmsm", 1), acc("pmsm", 1, "fixed")
        out.append(f"- PMSM at T = 1 equals the QANN (paper 002): {'**holds**' if abs(q - f1) < 1e-9 else '**does not hold**'} "
                   f"in float (QANN {q:.2f}, pmsm T=1 {f1:.2f}); loihi2 fixed {x1:.2f} (8-bit weights round the QANN's; "
                   "bit-exactness against the integer QANN: docs/results/c2_digits_vit.md).")
    if "stbif" in by and "qann" in by["stbif"]:
        q, f = by["stbif"]["qann"], acc("stbif", 64)
        settled = _first_equal(by["stbif"], q)
        out.append(f"- ST-BIF's sum equals the QANN once settled (SpikeZIP-TF, methods.md section 1): "
                   f"{'**holds**' if abs(q - f) < 1e-9 else '**does not hold**'} (QANN {q:.2f}, stbif T=64 {f:.2f}; "
                   f"accuracy equal to the QANN's from T = {settled} on); loihi2 fixed T=64 {acc('stbif', 64, 'fixed'):.2f}. "
                   "See docs/results/c2_digits_vit.md.")
    if "ecmt" in by and "float" in by["ecmt"]["energy"]:
        e = by["ecmt"]["energy"]["float"]
        ann, ann_ops = e.get("ann_compute_pj"), e.get("ann_with_operators_pj")
        if ann:
            r, r_ops = e["compute_only_pj"] / ann, e["with_operators_pj"] / ann_ops
            others = [f"{m} {by[m]['energy']['float']['compute_only_pj'] / ann:.2f}" for m in ("aif", "baseline", "stbif", "pmsm")
                      if m in by and "float" in by[m]["energy"]]
            out.append(f"- ECMT's energy claim (paper 003 section 5.5: Table 3's counts, MACs_SNN taken as zero, "
                       f"E_SNN / E_ANN = 35 % at T = 4 on EVA): at T = 16 on this model E_SNN / E_ANN = {r:.2f} in the "
                       f"papers' convention ({e['compute_only_pj'] / 1e3:.1f} vs {ann / 1e3:.1f} nJ; the SNN's MACs are "
                       f"not zero here: {e['snn_macs']:,.0f} per sample, from projections fed by analog values such as the "
                       f"patch embedding) and {r_ops:.2f} with the operators' arithmetic counted on both sides "
                       f"({e['with_operators_pj'] / 1e3:.1f} vs {ann_ops / 1e3:.1f} nJ): "
                       + ("**holds** (below the ANN)" if r < 1 else "**does not hold** (above the ANN)")
                       + " on this small model"
                       + (" in the papers' convention" if (r < 1) != (r_ops < 1) else "")
                       + ". The ratio grows with T (every step sends events; the paper's 35 % is at T = 4). Same "
                       f"ratio, papers' convention, other methods at their reference T: {', '.join(others)}.")
    return "\n".join(out) + "\n"


WHY = {("ecmt", "aif"): ("An ecmt event carries one of 2n signed levels, an AIF event one threshold: at equal T ecmt "
                         "sends more bits per step (docs/results/vit_methods_digits.md).",
                         "An ecmt event carries one of 2n signed levels, so ecmt should lead at equal T; where AIF "
                         "passes it the gap is a few samples on this test set and AIF's per-T grid search, which "
                         "ecmt's T-independent percentile thresholds do not have (docs/results/vit_methods_digits.md)."),
       ("aif", "baseline"): ("AIF's channel-wise threshold and offset fit each value better than one layer-wise "
                             "threshold (docs/results/vit_methods_digits.md, fit report).",
                             "At small T AIF's Eq. 18 fit clips 10-47 % of the values (fit report at T = 4 on "
                             "docs/results/vit_methods_digits.md) and cuts the attention tails, and the digits ViT "
                             "has none of ViT-L's outlier channels that make the layer-wise baseline useless.")}


HEAD = """# Every Transformer method on the digits ViT: float and loihi2 fixed point

Generated by `{cmd}` (benchmarks/vit_methods_table.py; do not edit by hand). Models:
`pretrained_digits_vit(kind)` as ONNX, one section per kind. Accuracy (%) on {n} test
digits (split seed 0); calibration: the first {calib} training images (C2: 128, after `finetune`).
Events and energy per sample at the reference T (column "ref. T": T = 16 for the C1/C3 methods and
for stbif, which has settled by then; T = 1 for pmsm, its design point) on the first {ne} test digits
(mbe: priced from the accuracy run's counts), with the functions `spikeport energy` uses
(report/energy.py for C1 and C2, report/mbe_energy.py for C3), Horowitz 45 nm fp32 figures (E_AC 0.9 pJ,
E_MAC 4.6 pJ). "Papers' convention": synaptic operations only (ACs x E_AC + MACs x E_MAC; for mbe the
paper's count, MBE neuron spikes x E_AC); "operators counted": plus the operators' arithmetic (mbe:
everything, the products' spike pairs included). Fixed rows are priced with the same Horowitz figures
from the fixed-point run's counts. Events: every spiking population's (and the input's) non-zero
emissions; a graded event counts once (mbe: MBE neuron spikes plus the products' identity spikes).

How each row is run: ecmt and the baseline (aif search=none) are T-independent conversions, one
64-step run read at every T; aif is converted (grid search) and run per T; mbe per T with shipped
fits; stbif and pmsm are one 64-step run of the C2 net of the fine-tuned QANN read at every T.
Fixed: `compiler.quantize(net, "loihi2")`, bit-accurate simulation. Per-method pages:
docs/results/vit_methods_digits.md (ecmt, aif, baseline, both ViT definitions),
docs/results/ecmt_digits_vit.md, docs/results/mbe_vit.md, docs/results/c2_digits_vit.md.

"""

NOTES = """
## Notes

- aif runs with the converter's defaults (`convert(..., "aif", timesteps=T)`: 4096 calibration values
  per channel in the grid search, what `spikeport convert --method aif` does);
  docs/results/vit_methods_digits.md used 1024 for speed, so its aif row differs by a few samples.
  ecmt and the baseline are the same conversions as there.
- Fixed rows of aif and the baseline: their signed IF populations are quantised by the operator
  networks' IF rule (compiler/quantize_signed_if.py: one state unit per population, a power of two
  times its source's so the feeding Identity is exact, per-neuron thresholds of 12 mantissa bits
  << vth_shift, bias -z, thresholds re-folded into the outgoing weights) and run on the CNN's
  bit-accurate IF kernel (Lava's LIF order, u = a_in << 6); operators read the decoded integers
  e theta + z (docs/fixed_point.md, "Transformer operator networks").
- Energy of the fixed rows: synaptic operations at the same fp32 Horowitz figures as the float rows
  (the papers' convention; only the counts differ), operators at the arithmetic they declare
  (fixed-point operators at the int32 figures, report/operator_energy.py), as `spikeport energy`
  prices a compiled net.
- Why ecmt's fixed row costs more than its float row in the papers' convention (vit: 3246 vs 2437 nJ):
  the synaptic ACs are alike (2.35 M vs 2.58 M per sample on 8 digits), but the operation count of
  the compiled net prices the input of every MT population and residual add once per neuron and
  step as a MAC (its integer scale-and-add) where the float net counts an AC (vit at T = 16: 274 k
  MACs fixed vs 55 k float per sample); measured with report/energy.py's per-layer rows.
- The same holds for the aif and baseline fixed rows: their synaptic ACs agree with float layer by
  layer, while the Identity into every signed IF population and the residual adds are priced as
  one MAC per neuron and step in the compiled net and as an AC in the float one (per-layer rows of
  `spikeport energy` on the float and the loihi2 aif ViT).

"""

ENCODER_MISSING = """- The `encoder` ViT definition (nn.TransformerEncoder; `--models vit,encoder` runs it): float ecmt /
  aif / baseline on docs/results/vit_methods_digits.md, mbe on docs/results/mbe_vit.md.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=0, help="test samples (0 = all 449)")
    ap.add_argument("--energy-samples", type=int, default=32, help="test samples priced for energy")
    ap.add_argument("--epochs", type=int, default=3, help="stbif/pmsm: finetune epochs")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--models", default="vit", help="digits ViT definitions: vit, encoder or vit,encoder")
    ap.add_argument("--jobs", type=int, default=1, help="methods run in parallel processes")
    ap.add_argument("--steps", default=",".join(map(str, STEPS)),
                    help="per-T methods (aif, mbe): run only these T (split a long run; --render merges the parts)")
    ap.add_argument("--json", type=Path, default=None, help="save the measured (with --render: merged) figures here")
    ap.add_argument("--render", type=Path, nargs="+", default=None,
                    help="no run: write the page from saved --json files (several: their results on one page)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown page here")
    a = ap.parse_args()
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            ap.error(f"--methods: unknown method {m!r}; one of {', '.join(METHODS)}")
    t0 = time.time()
    if a.render is not None:
        saved = [json.loads(p.read_text()) for p in a.render]      # several runs (e.g. one per model): one page
        results = [r for sv in saved for r in sv["results"]]
        total, jobs = sum(sv["total"] for sv in saved), saved[0]["jobs"]
        cmds = [re.sub(r" --(json|render|out) \S+", "", sv["cmd"]) for sv in saved]
        if len(cmds) == 1:
            cmd = f"{cmds[0]} --out docs/results/vit_methods_table.md"
        else:
            cmd = ("`, `".join(f"{c} --json run{i}.json" for i, c in enumerate(cmds)) + "`, then `python3 "
                   "benchmarks/vit_methods_table.py --render " + " ".join(f"run{i}.json" for i in range(len(cmds)))
                   + " --out docs/results/vit_methods_table.md")
        for r in results:
            for k in ("float", "fixed"):
                r[k] = {int(t): v for t, v in r[k].items()}
        results = merge(results)
        if a.json is not None:
            a.json.write_text(json.dumps({"results": results, "total": total, "jobs": jobs, "cmd": cmd}))
    else:
        cmd = "python3 benchmarks/vit_methods_table.py " + " ".join(sys.argv[1:])
        cmd_page = re.sub(r" --(json|render|out) \S+", "", cmd) + " --out docs/results/vit_methods_table.md"
        order = [m for m in ("aif", "mbe", "stbif", "pmsm", "ecmt", "baseline") if m in methods]   # longest first
        models = [k for k in a.models.split(",") if k]
        for k in models:
            if k not in MODELS:
                ap.error(f"--models: unknown model {k!r}; one of {', '.join(MODELS)}")
        try:
            steps = tuple(sorted({int(t) for t in a.steps.split(",") if t}))
        except ValueError:
            ap.error(f"--steps: {a.steps!r} is not a comma-separated list of T")
        if not steps or not set(steps) <= set(STEPS):
            ap.error(f"--steps: {a.steps!r} must be some of {', '.join(map(str, STEPS))}")
        args = [(m, k, a.samples, a.energy_samples, a.epochs, steps) for k in models for m in order]
        if a.jobs > 1:
            with mp.get_context("spawn").Pool(a.jobs) as pool:
                results = pool.starmap(run_method, args)
        else:
            results = [run_method(*x) for x in args]
        total, jobs = time.time() - t0, a.jobs
        if a.json is not None:
            a.json.write_text(json.dumps({"results": results, "total": total, "jobs": jobs, "cmd": cmd}))
    page = render(results, total, jobs, cmd if a.render is not None else cmd_page)
    print(page)
    if a.out is not None:
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(page)
        tmp.replace(a.out)


if __name__ == "__main__":
    main()
