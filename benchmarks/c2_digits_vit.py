"""C2 coding on the digits ViT: stbif and pmsm from the fine-tuned QANN, accuracy vs T in float64
and in loihi2 fixed point (compiler/quantize_c2.py, simulator/transformer_c2_fixed.py), agreement
with the float QANN and with the integer QANN (simulator/reference_c2.integer_qann), events and
energy per sample (report/energy.py with the operators' arithmetic) and PMSM's power formula in
both counting conventions.

    python3 benchmarks/c2_digits_vit.py [--epochs 3] [--levels 16] [--energy-samples 64] [--float-only]

"logits = float QANN's": samples whose 10 float64 logits equal, bit for bit, those of the float QANN
the network stands for (simulator.transformer_c2.float_qann: the network once, neurons as quantisers).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataclasses import replace

from spikeport import compiler
from spikeport.convert import convert
from spikeport.convert.finetune import finetune_file
from spikeport.datasets import load_digits_split
from spikeport.frontend import export_onnx, load_model
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.report.pmsm_power import pmsm_power
from spikeport.hw_profiles import load_profile
from spikeport.report.energy import energy_report
from spikeport.simulator.reference_c2 import integer_qann
from spikeport.simulator.transformer_c2 import float_qann, simulate_c2
from spikeport.simulator.transformer_c2_fixed import simulate_c2_fixed

STEPS = (1, 2, 4, 8, 16, 32, 64)
DIGITS_RANGE = (0.0, 255 / 16)   # pixels are multiples of 1/16: an input scale of 1/16 holds them exactly


def wide_weights(profile: str):
    """The profile with 16-bit weights (step 1), wide exponents and no conv wrap: a
    hypothetical datapath that isolates the operators' own rounding from loihi2's 8-bit weights."""
    prof = load_profile(profile)
    dp = replace(prof.datapath, weight_bits=16, weight_step=1, weight_exp_min=-24, weight_exp_max=24, conv_acc_bits=0)
    return replace(prof, name=f"{profile} (16-bit weights)", datapath=dp)


def energy_figures(net, x, T: int, ann_macs=None) -> dict:
    """Per sample on ``x`` at ``T`` (report/energy.py, loihi2 profile, Horowitz 45 nm fp32): events,
    SNN compute-only pJ (the papers' synaptic-op count), + the operators' arithmetic, with memory, chip;
    with ``ann_macs`` (frontend.count_macs of the ANN) the ANN's compute, MACs only and with operators."""
    j = energy_report(net, x, T, "loihi2", ann_macs=ann_macs).to_json()
    ops = j.get("operators", {})
    return {"events": j["snn"]["events"], "snn_macs": j["snn"]["macs"], "compute_only_pj": j["snn"]["compute_only_pj"],
            "with_operators_pj": j["snn"]["compute_only_pj"] + ops.get("snn_operator_pj", 0),
            "with_memory_pj": j["snn"]["with_memory_pj"], "chip_pj": j["chip"]["total_pj"],
            "ann_compute_pj": j["ann"]["compute_only_pj"],
            "ann_with_operators_pj": (None if j["ann"]["compute_only_pj"] is None
                                      else j["ann"]["compute_only_pj"] + ops.get("ann_operator_pj", 0))}


def energy_row(net, x, T: int) -> str:
    f = energy_figures(net, x, T)         # events: every population's and the input's non-zero emissions
    return (f"events/sample {f['events']:.0f}, SNN compute-only {f['compute_only_pj'] / 1e3:.2f} nJ, + operators' "
            f"arithmetic {f['with_operators_pj'] / 1e3:.2f} nJ, with memory "
            f"{f['with_memory_pj'] / 1e3:.2f} nJ, chip {f['chip_pj'] / 1e3:.2f} nJ")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--kind", default="vit", choices=("vit", "encoder"))
    ap.add_argument("--energy-samples", type=int, default=64)
    ap.add_argument("--float-only", action="store_true", help="skip the fixed-point and energy rows")
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
        print("| T | accuracy % | same prediction as QANN % | logits = float QANN's (samples %) |")
        print("|---|---|---|---|")
        qpred = np.asarray(q.evaluate(xte, yte)["logits"]).argmax(1)
        exact = float_qann(net, xte)[0]
        for t in STEPS:
            same = 100 * np.mean(np.all(checks[t] == exact, axis=1))
            print(f"| {t} | {100 * (checks[t].argmax(1) == yte).mean():.2f} | "
                  f"{100 * (checks[t].argmax(1) == qpred).mean():.2f} | {same:.2f} |")
        for t in (1, max(STEPS)):
            _, _, c = simulate_c2(net, xte, t, batch_size=len(xte)) if t != max(STEPS) else (None, None, counts)
            p = pmsm_power(c.total_events, c.total_spikes, c.samples, t)
            print(f"T={t}: events/sample {p['events']['per_sample']:.0f} -> P = {1e6 * p['events']['power_w']:.3f} uW "
                  f"(one graded event); spikes/sample {p['spikes']['per_sample']:.0f} -> P = "
                  f"{1e6 * p['spikes']['power_w']:.3f} uW (|n| spikes); E_AC 0.9 pJ, 1 ms steps")
        if a.float_only:
            continue
        # loihi2 fixed point, and the same operators with 16-bit weights (operators' rounding alone)
        fixed = {}
        for label, prof in (("loihi2", "loihi2"), ("loihi2 operators, 16-bit weights (ablation)", wide_weights("loihi2"))):
            t2 = time.time()
            qnet, _ = compiler.quantize(net, prof, input_range=DIGITS_RANGE)
            fres, fchecks, fcounts = simulate_c2_fixed(qnet, xte, max(STEPS), checkpoints=STEPS, batch_size=len(xte))
            iq = integer_qann(qnet, xte)[qnet.outputs[0]]
            sat = sum(v.get("saturation_events", 0) for v in fres.layers.values())
            fixed[label] = qnet
            print(f"\n{m} fixed point, {label}: compile + simulate T={max(STEPS)} {time.time() - t2:.0f} s, "
                  f"saturation events {sat}")
            print("| T | accuracy % | same prediction as float QANN % | integer logits = integer QANN's (samples %) |")
            print("|---|---|---|---|")
            for t in STEPS:
                rt = simulate_c2_fixed(qnet, xte, t, keep_levels=False, batch_size=len(xte))[0] if t in (1,) else None
                ints = rt.output_states[qnet.outputs[0]] if rt is not None else None
                same_int = "-" if ints is None else f"{100 * np.mean(np.all(ints == iq, axis=1)):.2f}"
                if t == max(STEPS):
                    same_int = f"{100 * np.mean(np.all(fres.output_states[qnet.outputs[0]] == iq, axis=1)):.2f}"
                print(f"| {t} | {100 * (fchecks[t].argmax(1) == yte).mean():.2f} | "
                      f"{100 * (fchecks[t].argmax(1) == qpred).mean():.2f} | {same_int} |")
            print(f"integer QANN ({label}): accuracy {100 * (iq.argmax(1) == yte).mean():.2f} %, same prediction as "
                  f"the float QANN {100 * (iq.argmax(1) == qpred).mean():.2f} %")
        xe = xte[:a.energy_samples]
        for t in (1, 16, max(STEPS)):
            print(f"energy T={t} ({len(xe)} samples, loihi2 profile, Horowitz 45 nm): float: {energy_row(net, xe, t)}; "
                  f"fixed: {energy_row(fixed['loihi2'], xe, t)}")


if __name__ == "__main__":
    main()
