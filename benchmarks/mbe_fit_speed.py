"""Speed of one MBE-fit training step: the fused spike loop (``_SpikeLoop``) vs the step-by-step autograd graph.

    python3 benchmarks/mbe_fit_speed.py [--repeat R] [--steps S]

Times forward + backward of one minibatch (what each of the fitter's 4,000 Adam steps does) for the
shapes of the shipped fits (GELU: 2 branches x N = 4, batch 2,500; the others: 1 branch x N = 8,
batch 500) at T = 1 .. 64, one thread, alternating the two implementations and keeping the best of R
repetitions of process CPU time (the machine is shared). Prints a table; the gradients of both are asserted equal.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path and (ROOT.parent / "spikeport").exists():
    sys.path.insert(0, str(ROOT.parent))

from spikeport.convert import mbe_fit as F  # noqa: E402


def one(fn, leaves, x, y, alpha):
    for v in leaves.values():
        v.grad = None
    q = {k: (v.exp() if k != "w" else v) for k, v in leaves.items()}
    loss = torch.mean(((fn(q) * q["w"]).sum(dim=(-2, -1)) - y) ** 2)
    loss.backward()
    return [v.grad for v in leaves.values()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--timesteps", type=lambda v: [int(t) for t in v.split(",")], default=[1, 2, 4, 8, 16, 32, 64])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| shape (branches x N, batch) | T | step-by-step ms/step | fused ms/step | speed-up |")
    print("|---|---|---|---|---|")
    for B, N, M in ((2, 4, 2500), (1, 8, 500)):
        for T in args.timesteps:
            g = torch.Generator().manual_seed(0)
            leaves = {k: torch.nn.Parameter((0.37 + 0.2 * torch.randn(B, N, generator=g)).float())
                      for k in ("tau_d", "tau_r", "tau_V")}
            leaves["dt"] = torch.nn.Parameter((0.05 * torch.randn(B, N, generator=g)).float())
            leaves["w"] = torch.nn.Parameter(torch.randn(B, N, generator=g).float())
            alpha = torch.ones(B)
            x, y = torch.rand(M, generator=g) * 2 - 1, torch.randn(M, generator=g)
            impls = {"step": lambda q: F._basis_outputs_stepwise(x, q, alpha, T, True),
                     "fused": lambda q: F._basis_outputs(x, q, alpha, T, True, True)}
            ga, gb = (one(impls[k], leaves, x, y, alpha) for k in ("step", "fused"))
            assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(ga, gb)), (B, N, T)
            best = {k: float("inf") for k in impls}
            for _ in range(args.repeat):
                for k, fn in impls.items():
                    t = time.process_time()
                    for _ in range(args.steps):
                        one(fn, leaves, x, y, alpha)
                    best[k] = min(best[k], (time.process_time() - t) / args.steps * 1e3)
            print(f"| {B} x {N}, {M} | {T} | {best['step']:.2f} | {best['fused']:.2f} | {best['step'] / best['fused']:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
