"""Cost and findings of the ablation fidelity report on the digits CNN (whole digits test set).

Profiles: loihi2, loihi2 with 12-bit state and 6-bit thresholds, loihi2 with 3-bit weights. For
each: float / fixed accuracy, the loss, the layer with the largest share, the setting whose
network-wide relaxation recovers most, the layers that setting hurts most, |loss - sum(shares)|,
number of mixed runs and wall time (one torch thread by default).

    python benchmarks/fidelity_ablation.py [--timesteps 32] [--threads 1] [--samples 449]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from spikeport.compiler import quantize
from spikeport.convert import convert
from spikeport.datasets import load_digits_split
from spikeport.frontend import load_model
from spikeport.hw_profiles import load_profile
from spikeport.models import DigitsResNet, train_digits_model
from spikeport.report.ablation import ablate
from spikeport.simulator import simulate
from spikeport.simulator.mixed import run_variants

PROFILES = {"loihi2": {}, "state 12 / threshold 6 bits": dict(state_bits=12, threshold_bits=6),
            "weights 3 bits": dict(weight_bits=3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = load_digits_split(seed=0)
    n = args.samples or len(x_test)
    x, y = x_test[:n], y_test[:n]
    model = train_digits_model(DigitsResNet(), x_train, y_train, epochs=20, seed=0)
    net = convert(load_model(model, input_shape=(1, 8, 8)), x_train[:500], "if")
    base = load_profile("loihi2")
    t0 = time.perf_counter()
    simulate(quantize(net, base)[0], x, args.timesteps)
    one = time.perf_counter() - t0
    print(f"digits CNN, {n} samples, T = {args.timesteps}, {args.threads} thread(s); one bit-accurate simulate: {one:.2f} s")
    print(f"{'profile':30s} {'float':>6s} {'fixed':>6s} {'loss':>6s}  {'largest share':14s} {'setting':24s} "
          f"{'hurts most':28s} {'|loss-sum|':>10s} {'runs':>4s} {'s':>6s}")
    for name, fields in PROFILES.items():
        prof = dataclasses.replace(base, datapath=dataclasses.replace(base.datapath, **fields))
        qnet, _ = quantize(net, prof)
        ab = ablate(net, qnet, x, y, args.timesteps, run_variants=run_variants, quantize=quantize, template_profile=base)
        hurt = ", ".join(ab.hurt_most.get(ab.blame_setting, [])[:3]) if ab.blame_setting else "-"
        print(f"{name:30s} {100 * ab.acc_float:6.2f} {100 * ab.acc_fixed:6.2f} {100 * ab.loss:6.2f}  "
              f"{str(ab.blame_layer):14s} {str(ab.blame_setting):24s} {hurt:28s} {abs(ab.unexplained):10.1e} "
              f"{ab.runs:4d} {ab.seconds:6.1f}")


if __name__ == "__main__":
    main()
