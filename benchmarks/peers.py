"""Simulation throughput of spikeport against SpikingJelly and sinabs on the same models (issue 13, item 0).

Models: the digits ResCNN (shipped weights, test digits) and the CIFAR-style ResNet-18 of
``benchmarks/scale.py`` (random weights, BatchNorm statistics from random batches, N(0, 1) inputs).
Contenders, each converting the same ``nn.Module`` with its own ANN-to-SNN tool and simulating T
steps of constant (analog) input (spikeport's bit-accurate run takes T + latency steps, but each
population computes only its T-step window: the latency costs loop iterations, not arithmetic).
Conversion and preparation (spikeport ``Simulation``, sinabs' per-batch-size model) happen once,
outside the timing; the warm-up runs every contender once per batch size:

    spikeport float   convert(method="if") -> Simulation(net, T).run (float64 IR equations)
    spikeport float32 the same with dtype="float32" (layer-major)
    spikeport fixed   + compiler.quantize(loihi2) -> bit-accurate Simulation(qnet, T).run
    spikingjelly      ann2snn.Converter(RateCodingRecipe(mode="max")) -> T single-step calls
    sinabs            sinabs.from_model (IAFSqueeze) -> one call on the T-fold repeated batch

Peers are not spikeport dependencies: run this with the separate peers environment
(``/path/to/peers-venv/bin/python benchmarks/peers.py``; created with --system-site-packages and
the peers installed with --no-deps); a peer that does not import is reported and skipped.
Contenders are alternated within each repetition (the machine may be shared); every figure is the
best of ``--repeat``. Columns: samples per wall second and per CPU second (process CPU time, all
threads), and the ratio to the best peer measured in the same run.

    python benchmarks/peers.py [--models digits,resnet18] [--batches 1,64] [--threads 1] [--repeat 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spikeport import compiler, convert, frontend, hw_profiles  # noqa: E402
from spikeport.simulator import Simulation  # noqa: E402


# ------------------------------------------------------------------------------ models
class DigitsResNetModules(nn.Module):
    """The digits ResCNN with nn.ReLU modules (the peers' converters replace ReLU modules only;
    SpikingJelly misses functional relu, sinabs replaces modules): same weights, same function."""

    def __init__(self, m):
        super().__init__()
        self.m = copy.deepcopy(m)
        self.r1, self.r2, self.r3, self.r4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        m = self.m
        h = self.r1(m.bn1(m.conv1(x)))
        r = self.r2(m.bn2(m.conv2(h)))
        h = self.r3(m.bn3(m.conv3(r)) + h)
        return m.fc2(self.r4(m.fc1(m.flatten(m.pool(h)))))


def load_model(name: str) -> tuple[nn.Module, np.ndarray]:
    if name == "digits":
        from spikeport.datasets import load_digits_split
        from spikeport.models import pretrained_digits_resnet
        _, _, x_test, _ = load_digits_split()
        return DigitsResNetModules(pretrained_digits_resnet()).eval(), x_test.astype(np.float32)
    from scale import build
    model = build("resnet18").eval()
    x = np.random.default_rng(0).normal(size=(128, 3, 32, 32)).astype(np.float32)
    return model, x


# ------------------------------------------------------------------------------ contenders
def spikeport_contenders(model, x_calib, shape):
    ann = frontend.load_model(model, input_shape=shape)
    net = convert.convert(ann, x_calib, method="if")
    qnet, _ = compiler.quantize(net, hw_profiles.load_profile("loihi2"))

    sims = {}

    def runner(label, network, dtype):
        def run(x, T):              # prepared once per T, as the peers convert once (Simulation)
            if (label, T) not in sims:
                sims[label, T] = Simulation(network, T, dtype=dtype)
            return sims[label, T].run(x, batch_size=len(x)).outputs
        return run
    return {"spikeport float": runner("float", net, "float64"), "spikeport float32": runner("float32", net, "float32"),
            "spikeport fixed": runner("fixed", qnet, "float64")}


def spikingjelly_contender(model, x_calib):
    from spikingjelly.activation_based import ann2snn, functional
    from spikingjelly.activation_based.ann2snn.recipes.rate_coding import RateCodingRecipe
    loader = torch.utils.data.DataLoader(torch.as_tensor(x_calib), batch_size=64)
    snn = ann2snn.Converter(RateCodingRecipe(dataloader=loader, mode="max")).convert(copy.deepcopy(model)).eval()

    def run(x, T):
        xt = torch.as_tensor(x)
        with torch.no_grad():
            functional.reset_net(snn)
            out = 0
            for _ in range(T):
                out = out + snn(xt)
        return out
    return run


def sinabs_contender(model, shape):
    import sinabs
    cache = {}

    def prepare(b):
        if b not in cache:
            cache[b] = sinabs.from_model(copy.deepcopy(model), input_shape=shape, batch_size=b,
                                         add_spiking_output=False).spiking_model.eval()

    def run(x, T):
        b = len(x)
        prepare(b)
        snn = cache[b]
        xt = torch.as_tensor(x).unsqueeze(1).expand((b, T) + tuple(shape)).reshape((b * T,) + tuple(shape))
        with torch.no_grad():
            sinabs.reset_states(snn)
            return snn(xt).reshape(b, T, -1).sum(1)
    run.prepare = prepare
    return run


def timed(fn, x, T, batch):
    w0, c0 = time.perf_counter(), time.process_time()
    for a in range(0, len(x), batch):
        fn(x[a:a + batch], T)
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits,resnet18")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--timesteps", default="digits=32,resnet18=4")
    ap.add_argument("--samples", default="digits:1=16,digits:64=128,resnet18:1=2,resnet18:64=64")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)      # tables appear as they are measured
    if args.threads:
        torch.set_num_threads(args.threads)
    Ts = dict(kv.split("=") for kv in args.timesteps.split(","))
    samples = dict(kv.split("=") for kv in args.samples.split(","))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} cores={os.cpu_count()} "
          f"load(1 min) at start={load:.1f}  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")
    for name in args.models.split(","):
        model, x = load_model(name)
        shape = tuple(x.shape[1:])
        calib = x[:64]
        T = int(Ts[name])
        contenders = spikeport_contenders(model, calib, shape)
        for label, make in (("spikingjelly", lambda: spikingjelly_contender(model, calib)),
                            ("sinabs", lambda: sinabs_contender(model, shape))):
            try:
                contenders[label] = make()
            except Exception as e:          # a peer that is missing or fails to convert this model
                print(f"  {label}: skipped ({type(e).__name__}: {e})")
        for batch in (int(b) for b in args.batches.split(",")):
            n = int(samples.get(f"{name}:{batch}", batch))
            xs = x[:n]
            for fn in contenders.values():                  # warm-up (and per-batch conversions)
                if hasattr(fn, "prepare"):
                    fn.prepare(batch)
                fn(xs[:min(batch, 2)], T)
            best = {k: (float("inf"), float("inf")) for k in contenders}
            for _ in range(args.repeat):
                for k, fn in contenders.items():
                    w, c = timed(fn, xs, T, batch)
                    best[k] = (min(best[k][0], w), min(best[k][1], c))
            peers = [k for k in contenders if not k.startswith("spikeport")]
            top = max((n / best[k][1] for k in peers), default=float("nan"))
            print(f"\n{name}  batch={batch}  samples={n}  T={T}  load(1 min)={os.getloadavg()[0]:.1f}")
            print(f"{'contender':>16} | {'samples/s':>10} | {'samples/CPU-s':>13} | {'vs best peer (CPU)':>18}")
            for k in contenders:
                w, c = best[k]
                print(f"{k:>16} | {n / w:>10.2f} | {n / c:>13.2f} | {(n / c) / top:>17.2f}x")


if __name__ == "__main__":
    main()
