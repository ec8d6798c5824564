"""Lava fixed_pt vs spikeport's bit-accurate simulator on a 784-512-256-10 IF network, T = 100.

Both run the same quantised network on the same integer inputs; spikes and final v of every layer
are checked identical on the samples Lava runs. Batch 1 is timed directly; for batch 256 Lava (which
runs samples one after another) is timed on ``--lava-samples`` samples and extrapolated linearly,
as printed
(one call's fixed compile/start cost + (batch - 1) x the measured per-sample cost). Usage: ``python -m spikeport.benchmarks.lava_vs_spikeport [--lava-samples 4]``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lava-samples", type=int, default=4, help="samples Lava runs for the batch extrapolation")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from spikeport.backends.loihi2 import run_lava
    from spikeport.backends.loihi2.examples import random_if_mlp
    from spikeport.simulator import simulate

    T = args.timesteps
    net = random_if_mlp((784, 512, 256, 10), seed=0)
    x = np.random.default_rng(1).integers(0, 256, (args.batch, 784)).astype(np.float64)

    simulate(net, x[:1], 2)  # warm-up (torch kernels)
    t0 = time.perf_counter()
    sim1 = simulate(net, x[:1], T, record_spikes=True, record_states=True)
    t_sim1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim_b = simulate(net, x, T, record_spikes=True, record_states=True)
    t_sim_b = time.perf_counter() - t0

    t0 = time.perf_counter()
    lava1 = run_lava(net, x[:1], T)
    t_lava1 = time.perf_counter() - t0
    k = min(args.lava_samples, args.batch)
    t0 = time.perf_counter()
    lava_k = run_lava(net, x[:k], T)
    t_lava_k = time.perf_counter() - t0
    # run_lava compiles once per call: extrapolate as one call's fixed cost + per-sample cost
    per_sample = (t_lava_k - t_lava1) / (k - 1) if k > 1 else t_lava1
    t_lava_b = t_lava1 + (args.batch - 1) * per_sample

    identical = all(np.array_equal(lava_k.spikes[p], sim_b.spikes[p][:k]) and
                    np.array_equal(lava_k.states[p], sim_b.states[p][:k]) for p in lava_k.spikes)
    identical &= all(np.array_equal(lava1.spikes[p], sim1.spikes[p]) for p in lava1.spikes)
    out = {
        "network": "784-512-256-10 IF (reset by subtraction, '>='), random even weights, Loihi 2 datapath",
        "timesteps": T, "steps_run": lava1.steps_run, "identical_on_lava_samples": bool(identical),
        "lava_samples_checked": k + 1,
        "spikes_per_sample": {p: int(np.abs(s).sum()) for p, s in lava1.spikes.items()},
        "batch1_s": {"spikeport": round(t_sim1, 4), "lava": round(t_lava1, 3), "lava/spikeport": round(t_lava1 / t_sim1, 1)},
        f"batch{args.batch}_s": {"spikeport": round(t_sim_b, 3), "lava_extrapolated": round(t_lava_b, 1),
                                 "lava_measured_samples": k, "lava_measured_s": round(t_lava_k, 3),
                                 "lava_per_sample_s": round(per_sample, 3),
                                 "lava/spikeport": round(t_lava_b / t_sim_b, 1)},
        "note": "Lava's times include compiling the process graph and starting its runtime once per run_lava call",
    }
    print(json.dumps(out, indent=1))
    if not identical:
        raise SystemExit("Lava and spikeport differ on the benchmark network")
    return out


if __name__ == "__main__":
    main()
