"""Runtime of the AIF grid search (closed form per candidate) against the per-channel, per-candidate loop.

Data: the ANN activations of the shipped digits ResNet (4 ReLU layers, 8/8/8/32 channels) on
``--calib`` training images, each channel subsampled to ``--max-values`` values (seeded), exactly as
``convert(..., method="aif")`` does. Both searches scan the same grid (``--n-offset`` offsets over
mu +- 6 sigma, ``--n-threshold`` thresholds over (0, 6 sigma]) for each T; the script checks that
they pick the same grid point per channel bit for bit (theta, z, loss, mu, sigma equal) and reports
both runtimes in CPU seconds of this process (the comparable figure on a shared machine) and wall
seconds: ``--repeat`` rounds per T, the two searches alternated within each round (after one
untimed warm-up of the fast search), medians and the smallest per-round speed-up printed, with the
load average before and after.

    python benchmarks/aif_grid_search.py [--timesteps 4,8,16,32] [--repeat 3] [--device cuda] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from spikeport import datasets, frontend
from spikeport.convert.aif import channel_rows, grid_search, grid_search_loop
from spikeport.models.digits import pretrained_digits_resnet


def layer_rows(calib: int, max_values: int, seed: int = 0) -> dict[str, np.ndarray]:
    x = datasets.load_digits_split()[0][:calib]
    ann = frontend.load_model(pretrained_digits_resnet(), input_shape=(1, 8, 8))
    names = [n.name for n in ann.graph.activations()]
    acts = ann.record_activations(x, names)
    out = {}
    for name in names:
        rows = channel_rows(acts[name])
        if rows.shape[1] > max_values:
            cols = np.sort(np.random.default_rng(seed).choice(rows.shape[1], max_values, replace=False))
            rows = rows[:, cols]
        out[name] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", default="4,8,16,32")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--max-values", type=int, default=4096)
    ap.add_argument("--n-offset", type=int, default=41)
    ap.add_argument("--n-threshold", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = layer_rows(args.calib, args.max_values)
    grid = dict(n_offset=args.n_offset, n_threshold=args.n_threshold)
    cand = args.n_offset * args.n_threshold
    cuda = bool(args.device and args.device.startswith("cuda"))

    def timed(fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = {k: fn(r) for k, r in rows.items()}
        if cuda:
            torch.cuda.synchronize()
        return out, time.process_time() - c0, time.perf_counter() - t0

    print(f"layers {[r.shape for r in rows.values()]}, {cand} candidates per channel, device {args.device or 'cpu'}, "
          f"{args.threads} thread(s), {args.repeat} alternated round(s) per T, medians; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'T':>4} {'fast CPU s':>11} {'loop CPU s':>11} {'speed-up':>9} {'min':>7} {'fast wall s':>12} "
          f"{'loop wall s':>12} {'identical':>10}")
    results = {}
    for T in (int(t) for t in args.timesteps.split(",")):
        timed(lambda r: grid_search(r, T, device=args.device, **grid))         # warm-up, untimed
        fast, loop, same = [], [], True
        for _ in range(args.repeat):
            vec, c_vec, w_vec = timed(lambda r: grid_search(r, T, device=args.device, **grid))
            ref, c_loop, w_loop = timed(lambda r: grid_search_loop(r, T, **grid))
            fast.append((c_vec, w_vec))
            loop.append((c_loop, w_loop))
            same &= all(np.array_equal(getattr(vec[k], f), getattr(ref[k], f))
                        for k in rows for f in ("theta", "z", "loss", "mu", "sigma"))
        (c_vec, w_vec), (c_loop, w_loop) = np.median(fast, 0), np.median(loop, 0)
        worst = min(cl / cv for (cv, _), (cl, _) in zip(fast, loop))
        print(f"{T:>4} {c_vec:>11.3f} {c_loop:>11.3f} {c_loop / c_vec:>8.1f}x {worst:>6.1f}x {w_vec:>12.3f} "
              f"{w_loop:>12.3f} {str(same):>10}")
        results[T] = vec
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for T, vec in results.items():
        for k in rows:
            r = vec[k]
            ok = r.sigma > 0
            print(f"T={T:<3} {k}: theta/sigma median {np.median(r.theta[ok] / r.sigma[ok]):.2f}, "
                  f"(z - mu)/sigma median {np.median((r.z[ok] - r.mu[ok]) / r.sigma[ok]):+.2f}, "
                  f"loss mean {r.loss.mean():.3g}")


if __name__ == "__main__":
    main()
