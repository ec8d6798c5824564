"""Time and peak memory of every pipeline stage on ResNet-18 and VGG-16 sized networks (3x32x32).

The networks are plain torch (CIFAR-style ResNet-18: 3x3 stem, four stages of two basic blocks,
global average pool; VGG-16: 13 3x3 convs in five stages separated by 2x2 average pools, then a
512-10 classifier), random weights with BatchNorm statistics from a few random batches run in
train mode, exported to ONNX. Every stage then runs in its own child process so one stage's
allocations cannot inflate another's peak RSS (``ru_maxrss`` of the child, which includes the
interpreter, torch and the weights; the ``base`` column is the RSS right after imports):

    ann       the ONNX model's forward pass over the same samples (the plain-ANN reference)
    convert   ONNX -> float IR (method if, calibration on the samples), saved to NET.h5
    compile   NET.h5 -> QNET.h5 quantised for loihi2
    simulate  bit-accurate simulation of QNET.h5, all samples, T steps
    resources partition QNET.h5 onto loihi2 cores
    energy    op counts (includes its own bit-accurate simulation) and the energy report

    python benchmarks/scale.py [--models resnet18,vgg16] [--samples 64] [--timesteps 32] [--quick]
    python benchmarks/scale.py --agreement [--models resnet18] [--agreement-t 4,8,32]

``--quick`` runs 8 samples at T = 8. ``--agreement`` prints the fraction of samples on which the
float SNN's label equals the ANN's at several T (issue 13, item 4).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

STAGES = ("ann", "convert", "compile", "simulate", "resources", "energy")


# ------------------------------------------------------------------------------ models
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + (x if self.short is None else self.short(x)))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (11.2M parameters)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


VGG16_CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")


class VGG16(nn.Module):
    """VGG-16 for 3x32x32 with 2x2 average pools (spikeport has no max-pool neurons), 14.7M parameters."""

    def __init__(self, classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16_CFG:
            if v == "P":
                layers.append(nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


MODELS = {"resnet18": ResNet18, "vgg16": VGG16}


def build(name: str, seed: int = 0) -> nn.Module:
    """Random weights; BatchNorm running statistics from five random batches in train mode."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(32, 3, 32, 32))
    return model.eval()


def samples(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


# ------------------------------------------------------------------------------ one stage (child)
def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _file_sizes(net, path: Path) -> dict:
    """The IR file's size next to the fp32 size of its stored weights (issue 13, item 3b)."""
    weights = sum(int(np.size(p.weight)) for p in net.projections())
    return {"file_MB": round(path.stat().st_size / 2 ** 20, 1), "weights_fp32_MB": round(4 * weights / 2 ** 20, 1)}


def run_stage(stage: str, work: Path, n: int, T: int) -> dict:
    from spikeport import compiler, convert, frontend, hw_profiles, ir
    from spikeport.report import energy_report, resources_report
    from spikeport.simulator import simulate
    from spikeport.simulator.opcount import ann_equivalent_macs
    x = samples(n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w0, c0 = time.perf_counter(), _cpu()
    info: dict = {}
    if stage == "ann":
        ann = frontend.load_model(work / "model.onnx")
        info["params"] = int(sum(p.numel() for p in ann.module.parameters())) if hasattr(ann, "module") else None
        w0, c0 = time.perf_counter(), _cpu()
        ann.forward(x, batch_size=n)
    elif stage == "convert":
        ann = frontend.load_model(work / "model.onnx")
        net = convert.convert(ann, x, method="if")
        ir.save(net, work / "net.h5")
        info["populations"], info["projections"] = len(net.populations()), len(net.projections())
        info.update(_file_sizes(net, work / "net.h5"))
    elif stage == "compile":
        net = ir.load(work / "net.h5")
        qnet, _ = compiler.quantize(net, hw_profiles.load_profile("loihi2"))
        ir.save(qnet, work / "qnet.h5")
        info.update(_file_sizes(qnet, work / "qnet.h5"))
    elif stage == "simulate":
        qnet = ir.load(work / "qnet.h5")
        simulate(qnet, x, T, batch_size=n)
    elif stage == "resources":
        qnet = ir.load(work / "qnet.h5")
        rep = resources_report(qnet, "loihi2")
        info["cores"], info["chips"] = rep.cores, rep.chips
    elif stage == "energy":
        qnet = ir.load(work / "qnet.h5")
        rep = energy_report(qnet, x, T, "loihi2", ann_macs=ann_equivalent_macs(qnet), batch_size=n)
        info["synops_per_sample"] = rep.total("acs") + rep.total("macs")
    else:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"stage": stage, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak / 1024, "base_rss_mb": base / 1024, **info}


def agreement(work: Path, n: int, ts: list[int]) -> dict:
    """Fraction of samples whose float-SNN label equals the ANN's, per T."""
    from spikeport import convert, frontend
    from spikeport.simulator import simulate
    x = samples(n)
    ann = frontend.load_model(work / "model.onnx")
    y_ann = ann.forward(x).reshape(n, -1).argmax(axis=1)
    net = convert.convert(ann, x, method="if")
    out = {}
    for T in ts:
        res = simulate(net, x, T)
        out[T] = float(np.mean(res.predictions == y_ann))
    return out


# ------------------------------------------------------------------------------ driver
def _child(stage: str, work: Path, n: int, T: int, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(work), "--samples", str(n), "--timesteps", str(T)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet18,vgg16")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="8 samples at T = 8")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every stage (default: torch's)")
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("--agreement-t", default="4,8,32")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the ONNX and IR files (default: temporary)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.work, args.samples, args.timesteps)))
        return
    n, T = (8, 8) if args.quick else (args.samples, args.timesteps)
    from spikeport.frontend import export_onnx
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads or torch.get_num_threads()}, "
          f"{n} samples, T = {T}")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = args.keep / name if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            model = build(name)
            export_onnx(model, work / "model.onnx", torch.zeros(1, 3, 32, 32))
            params = sum(p.numel() for p in model.parameters())
            if args.agreement:
                ts = [int(t) for t in args.agreement_t.split(",")]
                agree = agreement(work, n, ts)
                print(f"{name}: SNN/ANN label agreement over {n} samples: " +
                      ", ".join(f"T={t}: {100 * a:.1f}%" for t, a in agree.items()))
                continue
            print(f"\n{name}: {params / 1e6:.1f}M parameters ({4 * params / 2 ** 20:.0f} MiB fp32)")
            print(f"{'stage':<10} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'base MB':>8}  notes")
            for stage in args.stages.split(","):
                r = _child(stage, work, n, T, args.threads)
                notes = {k: v for k, v in r.items() if k not in ("stage", "wall_s", "cpu_s", "peak_rss_mb", "base_rss_mb")}
                print(f"{stage:<10} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['peak_rss_mb']:12.0f} "
                      f"{r['base_rss_mb']:8.0f}  {notes if notes else ''}", flush=True)


if __name__ == "__main__":
    main()
