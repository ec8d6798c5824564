"""Runtime of the vectorised AIF grid search against a per-channel, per-candidate loop.

Data: the ANN activations of the shipped digits ResNet (4 ReLU layers, 8/8/8/32 channels) on
``--calib`` training images, each channel subsampled to ``--max-values`` values (seeded), exactly as
``convert(..., method="aif")`` does. Both searches scan the same grid (``--n-offset`` offsets over
mu +- 6 sigma, ``--n-threshold`` thresholds over (0, 6 sigma]) for each T; the script checks that
they pick the same grid point per channel (parameters equal to 1e-12 relative: mu and sigma may
differ in the last bit between torch and numpy summation) and reports both runtimes.

    python benchmarks/aif_grid_search.py [--timesteps 4,32] [--device cuda] [--threads 1]
"""
from __future__ import annotations

import argparse
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
    ap.add_argument("--timesteps", default="4,32")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--max-values", type=int, default=4096)
    ap.add_argument("--n-offset", type=int, default=41)
    ap.add_argument("--n-threshold", type=int, default=40)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = layer_rows(args.calib, args.max_values)
    grid = dict(n_offset=args.n_offset, n_threshold=args.n_threshold)
    cand = args.n_offset * args.n_threshold
    print(f"layers {[r.shape for r in rows.values()]}, {cand} candidates per channel, device {args.device or 'cpu'}, "
          f"{args.threads} thread(s)")
    print(f"{'T':>4} {'vectorised s':>13} {'loop s':>9} {'speed-up':>9} {'same optimum':>13}")
    for T in (int(t) for t in args.timesteps.split(",")):
        if args.device and args.device.startswith("cuda"):
            grid_search(next(iter(rows.values())), T, device=args.device, **grid)  # warm-up
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        vec = {k: grid_search(r, T, device=args.device, **grid) for k, r in rows.items()}
        if args.device and args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t_vec = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = {k: grid_search_loop(r, T, **grid) for k, r in rows.items()}
        t_loop = time.perf_counter() - t0
        same = all(np.allclose(vec[k].theta, ref[k].theta, rtol=1e-12, atol=0)
                   and np.allclose(vec[k].z, ref[k].z, rtol=1e-12, atol=1e-12) for k in rows)
        print(f"{T:>4} {t_vec:>13.3f} {t_loop:>9.3f} {t_loop / t_vec:>8.1f}x {str(same):>13}")
        for k in rows:
            r = vec[k]
            ok = r.sigma > 0
            print(f"      {k}: theta/sigma median {np.median(r.theta[ok] / r.sigma[ok]):.2f}, "
                  f"(z - mu)/sigma median {np.median((r.z[ok] - r.mu[ok]) / r.sigma[ok]):+.2f}, "
                  f"loss mean {r.loss.mean():.3g}")


if __name__ == "__main__":
    main()
