"""SpiNNaker packet replay throughput against the bit-accurate simulator on the same run.

Runs (1) the 784-512-256-10 benchmark network (benchmarks/simulator.py: Bernoulli(0.1) binary input
spikes, delays of 1 as on SpiNNaker) and (2) the digits CNN (method if, spinnaker1, the test set),
each on a 48-chip board (the MLP also spread to one 64-neuron core per chip, so packets cross
links), once with ``simulate`` and once with the packet replay (every packet encoded,
routed hop by hop through the compressed tables, delivered, decoded, inputs rebuilt per core), and
prints packets, replay packets/s and the time of both. The replay's outputs are checked equal to the
simulator's.

    python3 benchmarks/spinnaker_replay.py [--threads 1] [--samples 64] [--timesteps 50]
"""
from __future__ import annotations

import argparse
import dataclasses as dc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulator import build_network  # noqa: E402  (benchmarks/simulator.py)

from spikeport import compiler, datasets, frontend  # noqa: E402
from spikeport.backends import spinnaker as sp  # noqa: E402
from spikeport.convert import convert  # noqa: E402
from spikeport.hw_profiles import load_profile  # noqa: E402
from spikeport.models.digits import pretrained_digits_resnet  # noqa: E402
from spikeport.simulator import simulate  # noqa: E402


def _mlp(samples: int, T: int):
    net = build_network()
    net.datapath.synapse_delay = 1
    for proj in net.projections():
        proj.delay = 1
    names = [p.name for p in net.populations()]
    for k, name in enumerate(names):
        net[name].t_start = k + 1
    x = (np.random.default_rng(1).random((samples, T, 784)) < 0.1).astype(np.int8)
    return "784-512-256-10 (spike input)", net, x


def _digits(samples: int):
    xtr, _, xte, _ = datasets.load_digits_split()
    ann = frontend.load_model(pretrained_digits_resnet(), input_shape=(1, 8, 8))
    q, _ = compiler.quantize(convert(ann, xtr[:200], method="if"), "spinnaker1")
    return "digits CNN (if, analog input)", q, xte[:samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    base = load_profile("spinnaker1")
    spread = dc.replace(base, limits=dc.replace(base.limits, neurons_per_core=64, cores_per_chip=1,
                                                    max_neurons_per_chip=64))
    label, net, x = _mlp(args.samples, args.timesteps)
    cases = [(label, net, x, base), (label + ", 64 neurons/core, 1 core/chip", net, x, spread),
             (*_digits(args.samples), base)]
    for label, net, x, profile in cases:
        desc = sp.describe(net, profile, "48-chip")
        t0 = time.perf_counter()
        ref = simulate(net, x, args.timesteps, batch_size=args.samples)
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        rr = sp.replay(desc, x, args.timesteps, batch_size=args.samples)
        t_rep = time.perf_counter() - t0
        if not np.array_equal(rr.result.outputs, ref.outputs):
            raise SystemExit(f"{label}: replay outputs differ from the simulator's")
        tr = rr.traffic
        cores = sum(len(v) for v in desc.placement.by_layer.values())
        rows.append((label, f"{cores} / {len({s.chip for s in desc.placement.slices})}", desc.routing.stats["entries"],
                     tr.packets, tr.router_visits,
                     tr.packets / t_rep, t_sim, t_rep))
    print(f"\nSpiNNaker packet replay vs bit-accurate simulator ({args.samples} samples, T = {args.timesteps}, "
          f"{args.threads} thread(s), spinnaker1, 48-chip board; outputs equal)\n")
    head = ("network", "cores / chips", "entries", "packets", "router visits", "replay packets/s", "simulate s", "replay s",
            "replay / simulate")
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    for label, cores, entries, packets, visits, pps, ts, tr_ in rows:
        print(f"{label} | {cores} | {entries} | {packets:,} | {visits:,} | {pps:,.0f} | {ts:.2f} | {tr_:.2f} | "
              f"{tr_ / ts:.1f}x")


if __name__ == "__main__":
    main()
