"""Throughput of the bit-accurate simulator against a float32 GEMM roofline, and the event-driven crossover.

Network: 784-512-256-10 feed-forward IF (Readout output), random integer weights in [-128, 127],
quantised with the default Loihi 2 ``Datapath()``; T = 100 steps of Bernoulli(rate) binary input
spikes (Input coding "spikes"). The roofline runs the same number of float32 matmuls
(3 per step, same shapes) with no neuron logic.

    python benchmarks/simulator.py [--device cuda] [--threads 0,1] [--samples-b1 16] [--repeat 3]

Table 1 (rate 0.1): simulator time against the GEMM time for the step-major loop with dense sums
(``step dense``: every population once per step, the schedule before layer_major.py), the
layer-major schedule with dense sums (``dense``) and the defaults (``auto``: layer-major,
event-driven sums where measured faster); simulator and GEMM runs alternate and each figure is the
best of ``--repeat``, so both see the same machine load. Table 2: the event-driven
crossover, simulate time with ``event_driven`` off / on / auto at input rates 1, 5, 10, 20 % for
batch 1 and 256 (``auto`` should follow the faster of the two; ``auto sparse``: how many of its
projection calls took the event-driven sum, so equal work to dense reads as "0/N"). ``--threads``: a list; 0 = all
cores (torch's default). Synaptic events = delivered spikes x fan-out (the work an event-driven
chip does); dense MACs = batch x T x (784*512 + 512*256 + 256*10) (the work the GEMM does).
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time

import numpy as np
import torch

from spikeport.ir import IF, Datapath, Dense, Input, Network, Population, Readout, SpikePayload
from spikeport.simulator import simulate

SIZES = (784, 512, 256, 10)
T = 100


def build_network(seed: int = 0) -> Network:
    """The benchmark network; thresholds chosen for roughly 5-20 % firing."""
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("in", shape=(SIZES[0],), coding="spikes", payload=SpikePayload()))
    prev = "in"
    thresholds = (64 * 600, 64 * 2500)
    for i, n in enumerate(SIZES[1:]):
        name = f"l{i + 1}"
        neuron = Readout() if i == len(SIZES) - 2 else IF(threshold=np.array(thresholds[i]))
        net.add(Population(name, shape=(n,), neuron=neuron))
        w = rng.integers(-128, 128, size=(n, SIZES[i])) // 2 * 2
        net.add(Dense(f"w{i + 1}", source=prev, target=name, weight=w.astype(np.float64)))
        prev = name
    net.outputs = [prev]
    return net


def spikes(n: int, seed: int = 1, rate: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, T, SIZES[0])) < rate).astype(np.uint8)   # integer data: no float check needed


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


HAS_EVENTS = "event_driven" in inspect.signature(simulate).parameters   # False on older spikeport
HAS_SCHEDULE = "schedule" in inspect.signature(simulate).parameters


def sim_once(net: Network, x: np.ndarray, batch: int, device: str, mode: str | None):
    """mode: an event_driven mode, optionally prefixed "step-" for the step-major schedule."""
    kw = {}
    if mode and mode.startswith("step-"):
        mode = mode[5:]
        if HAS_SCHEDULE:
            kw["schedule"] = "step"
    if HAS_EVENTS and mode:
        kw["event_driven"] = mode
    sync(device)
    t0 = time.perf_counter()
    res = simulate(net, x, T, batch_size=batch, device=device, **kw)
    sync(device)
    return time.perf_counter() - t0, res


def gemm_once(batch: int, n_samples: int, device: str, ws, xs) -> float:
    """float32 roofline: the same matmuls, no neuron logic, no conversions."""
    batches = -(-n_samples // batch)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        for _ in range(T):
            for x, w in zip(xs, ws):
                x @ w
    sync(device)
    return time.perf_counter() - t0


def roofline(net, x, batch, device, repeat, modes):
    """Best-of-repeat times of the simulator (per mode) and the GEMMs, runs alternated."""
    ws = [torch.randn(a, b, device=device) for a, b in zip(SIZES[:-1], SIZES[1:])]
    xs = [torch.rand(batch, a, device=device) for a in SIZES[:-1]]
    for m in modes:
        sim_once(net, x[:batch], batch, device, m)                          # warm-up (and calibration)
    gemm_once(batch, batch, device, ws, xs)
    best = {m: (float("inf"), None) for m in modes}
    t_gemm = float("inf")
    for _ in range(repeat):
        for m in modes:
            t, res = sim_once(net, x, batch, device, m)
            if t < best[m][0]:
                best[m] = (t, res)
        t_gemm = min(t_gemm, gemm_once(batch, len(x), device, ws, xs))
    return best, t_gemm


def synaptic_events(net: Network, x: np.ndarray, res) -> int:
    fan_out = {"in": SIZES[1], "l1": SIZES[2], "l2": SIZES[3]}
    ev = int(x.sum()) * fan_out["in"]
    for name in ("l1", "l2"):
        ev += int(res.spike_counts[name].sum()) * fan_out[name]
    return ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", default="0,1", help="comma list; 0 = all cores (torch default)")
    ap.add_argument("--samples-b1", type=int, default=16,
                    help="samples for the batch-1 run (16: a ~0.15 s window; 4 gave +-25 % swings)")
    ap.add_argument("--samples-b256", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tables", default="1,2", help="which tables to print")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)      # tables appear as they are measured
    default_threads = torch.get_num_threads()
    net = build_network()
    macs_per_sample = T * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    modes = (("step-off",) if HAS_SCHEDULE else ()) + (("off", "auto") if HAS_EVENTS else (None,))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={args.device} torch={torch.__version__} cores={os.cpu_count()} T={T} "
          f"net={'-'.join(map(str, SIZES))} load(1 min)={load:.1f}")
    tables = {int(v) for v in args.tables.split(",")}
    for threads in (int(v) for v in args.threads.split(",")):
        torch.set_num_threads(threads or default_threads)
        if 1 in tables:
            table1(net, args, modes, macs_per_sample)
        if 2 in tables and HAS_EVENTS:
            table2(net, args)


def table1(net, args, modes, macs_per_sample) -> None:
    """Simulator (dense / auto) against the same-shape float32 GEMMs at rate 0.1."""
    print(f"\n[table 1] threads={torch.get_num_threads()}, input rate 0.1, load(1 min)={os.getloadavg()[0]:.1f}")
    head = ("batch", "samples", "mode", "sim s", "gemm s", "sim/gemm", "samples/s", "syn ev/s", "sim MAC/s",
            "rates l1/l2")
    print(" | ".join(f"{h:>10}" for h in head))
    for batch, n in ((1, args.samples_b1), (256, args.samples_b256)):
        x = spikes(n)
        best, t_gemm = roofline(net, x, batch, args.device, args.repeat, modes)
        for m in modes:
            t_sim, res = best[m]
            ev = synaptic_events(net, x, res)
            rates = "/".join(f"{res.layers[k]['rate']:.3f}" for k in ("l1", "l2"))
            label = {"step-off": "step dense", "off": "dense", "auto": "auto", None: "dense"}[m]
            print(" | ".join(f"{v:>10}" for v in (batch, n, label, f"{t_sim:.3f}", f"{t_gemm:.3f}",
                                                  f"{t_sim / t_gemm:.2f}x", f"{n / t_sim:.1f}", f"{ev / t_sim:.3e}",
                                                  f"{n * macs_per_sample / t_sim:.3e}", rates)))


def table2(net, args) -> None:
    """Event-driven crossover: event_driven off / on / auto at input rates 1-20 %."""
    print(f"\n[table 2] event-driven crossover, threads={torch.get_num_threads()} (seconds, best of {args.repeat}), "
          f"load(1 min)={os.getloadavg()[0]:.1f}")
    head = ("batch", "rate", "off (dense)", "on (events)", "auto", "faster", "auto/best", "auto/off", "auto sparse")
    print(" | ".join(f"{h:>11}" for h in head))
    for batch, n in ((1, args.samples_b1), (256, args.samples_b256)):
        for rate in (0.01, 0.05, 0.1, 0.2):
            x = spikes(n, rate=rate)
            times = {}
            for m in ("off", "on", "auto"):
                sim_once(net, x[:batch], batch, args.device, m)
            for _ in range(args.repeat):
                for m in ("off", "on", "auto"):
                    times[m] = min(times.get(m, float("inf")), sim_once(net, x, batch, args.device, m)[0])
            faster = "events" if times["on"] < times["off"] else "dense"
            print(" | ".join(f"{v:>11}" for v in (batch, f"{rate:.2f}", f"{times['off']:.3f}", f"{times['on']:.3f}",
                                                  f"{times['auto']:.3f}", faster,
                                                  f"{times['auto'] / min(times['off'], times['on']):.2f}",
                                                  f"{times['auto'] / times['off']:.2f}", auto_choices(net, x, batch))))


def auto_choices(net: Network, x: np.ndarray, batch: int) -> str:
    """Share of auto's projection calls that took the event-driven sum (one more run, counted), so
    a time next to dense's can be read as the same work or not."""
    if not HAS_EVENTS:
        return "n/a"
    from spikeport.simulator import Simulation
    sim = Simulation(net, T, event_driven="auto")
    sim.run(x, batch_size=batch)
    ev = [pk.events for entries in sim.plan.incoming.values() for pk, _, _ in entries if pk.events is not None]
    sparse, calls = sum(e.sparse_steps for e in ev), sum(e.sparse_steps + e.dense_steps for e in ev)
    return f"{sparse}/{calls}"


if __name__ == "__main__":
    main()
