"""Throughput of the bit-accurate simulator against a float32 GEMM roofline.

Network: 784-512-256-10 feed-forward IF (Readout output), random integer weights in [-128, 127],
quantised with the default Loihi 2 ``Datapath()``; T = 100 steps of Bernoulli(0.1) binary input
spikes (Input coding "spikes"). The roofline runs the same number of float32 matmuls
(3 per step, same shapes) with no neuron logic.

    python benchmarks/simulator.py [--device cuda] [--threads 1] [--samples-b1 4]

Synaptic events = delivered spikes x fan-out (the work an event-driven chip does); dense MACs =
batch x T x (784*512 + 512*256 + 256*10) (the work the GEMM does).
"""
from __future__ import annotations

import argparse
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


def spikes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, T, SIZES[0])) < 0.1).astype(np.uint8)   # integer data: no float check needed


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_sim(net: Network, x: np.ndarray, batch: int, device: str, repeat: int) -> tuple[float, object]:
    simulate(net, x[:batch], T, batch_size=batch, device=device)           # warm-up
    best, res = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        res = simulate(net, x, T, batch_size=batch, device=device)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, res


def time_gemm(batch: int, n_samples: int, device: str, repeat: int) -> float:
    """float32 roofline: the same matmuls, no neuron logic, no conversions."""
    ws = [torch.randn(a, b, device=device) for a, b in zip(SIZES[:-1], SIZES[1:])]
    xs = [torch.rand(batch, a, device=device) for a in SIZES[:-1]]
    batches = -(-n_samples // batch)
    best = float("inf")
    for _ in range(repeat + 1):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            for _ in range(T):
                for x, w in zip(xs, ws):
                    x @ w
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def synaptic_events(net: Network, x: np.ndarray, res) -> int:
    fan_out = {"in": SIZES[1], "l1": SIZES[2], "l2": SIZES[3]}
    ev = int(x.sum()) * fan_out["in"]
    for name in ("l1", "l2"):
        ev += int(res.spike_counts[name].sum()) * fan_out[name]
    return ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples-b1", type=int, default=4, help="samples for the batch-1 run")
    ap.add_argument("--samples-b256", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = build_network()
    macs_per_sample = T * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    rows = []
    for batch, n in ((1, args.samples_b1), (256, args.samples_b256)):
        x = spikes(n)
        t_sim, res = time_sim(net, x, batch, args.device, args.repeat)
        t_gemm = time_gemm(batch, n, args.device, args.repeat)
        ev = synaptic_events(net, x, res)
        rates = "/".join(f"{res.layers[k]['rate']:.3f}" for k in ("l1", "l2"))
        rows.append((batch, n, t_sim, ev / t_sim, n / t_sim, n * macs_per_sample / t_sim,
                     n * macs_per_sample / t_gemm, n / t_gemm, t_sim / t_gemm, rates))
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} T={T} "
          f"net={'-'.join(map(str, SIZES))} input rate 0.1")
    head = ("batch", "samples", "sim s", "syn ev/s", "samples/s", "sim MAC/s", "gemm MAC/s", "gemm samp/s",
            "sim/gemm", "rates l1/l2")
    print(" | ".join(f"{h:>11}" for h in head))
    for r in rows:
        b, n, ts, ev, sps, smac, gmac, gsps, ratio, rates = r
        print(" | ".join(f"{v:>11}" for v in (b, n, f"{ts:.3f}", f"{ev:.3e}", f"{sps:.1f}", f"{smac:.3e}",
                                              f"{gmac:.3e}", f"{gsps:.1f}", f"{ratio:.2f}x", rates)))


if __name__ == "__main__":
    main()
