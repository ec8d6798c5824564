"""Time and peak memory of the ViT pipeline stages on a ViT-B/16-sized graph (issue 9).

The model is timm's ``VisionTransformer`` layout in plain torch (``models/digits_vit.py``'s blocks):
3x224x224 input, 16x16 patches, a class token, 12 pre-norm blocks 768 wide with 12 heads and an
MLP of 3072, a 1000-class head: 86.6M parameters, random weights. It is exported to ONNX once
(setup, not timed as a stage). Every stage then runs in its own child process (as
``benchmarks/scale.py``), so one stage's allocations cannot inflate another's peak RSS
(``VmHWM`` of the child: interpreter, torch, the weights; ``base`` is the RSS after imports):

    load      the ONNX file -> typed ANN graph (``frontend.load_model``)
    convert   load + ``--method ecmt`` with a small calibration batch, saved to NET.h5
    compile   NET.h5 -> QNET.h5 quantised for loihi2 (needs the operator quantiser)
    resources partition QNET.h5 onto loihi2 cores

A stage the installed spikeport cannot do yet (e.g. ``compile`` before operators are quantised)
is reported as "not available" with the one-line reason, never silently skipped.

    python benchmarks/vit_compile.py [--calib 4] [--threads 2] [--stages load,convert,compile,resources]
    python benchmarks/vit_compile.py --small     # a 2-block, 192-wide model: a smoke run in seconds
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

STAGES = ("load", "convert", "compile", "resources")
VIT_B = dict(img=224, patch=16, dim=768, depth=12, heads=12, mlp=3072, classes=1000)
SMALL = dict(img=32, patch=8, dim=192, depth=2, heads=3, mlp=768, classes=10)


class ViT(nn.Module):
    """timm ``VisionTransformer`` layout (class token, learned position embedding, pre-norm blocks
    with one qkv Linear and explicit softmax attention, GELU MLP, final LayerNorm, class-token head)."""

    def __init__(self, img: int, patch: int, dim: int, depth: int, heads: int, mlp: int, classes: int):
        super().__init__()
        from spikeport.models.digits_vit import Block, PatchEmbed
        self.patch_embed = PatchEmbed(3, dim, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def build(cfg: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ViT(**cfg).eval()


def samples(cfg: dict, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, cfg["img"], cfg["img"])).astype(np.float32)


# ------------------------------------------------------------------------------ one stage (child)
def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss``, it does not inherit the parent's peak
    across fork + exec), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(stage: str, work: Path, cfg: dict, n: int, levels: int) -> dict:
    from spikeport import compiler, convert, frontend, hw_profiles, ir
    from spikeport.errors import SpikeportError
    from spikeport.report import resources_report
    x = samples(cfg, n)
    base = _peak_mb()
    w0, c0 = time.perf_counter(), _cpu()
    info: dict = {}
    try:
        if stage == "export":
            from spikeport.frontend import export_onnx
            model = build(cfg)
            info["params"] = int(sum(p.numel() for p in model.parameters()))
            export_onnx(model, work / "model.onnx", torch.zeros(1, 3, cfg["img"], cfg["img"]))
        elif stage == "load":
            ann = frontend.load_model(work / "model.onnx")
            info["ann_nodes"] = len(list(ann.graph))
        elif stage == "convert":
            ann = frontend.load_model(work / "model.onnx")
            net = convert.convert(ann, x, method="ecmt", levels=levels, release_ann=True)
            del ann
            ir.save(net, work / "net.h5")
            info["populations"], info["operators"] = len(net.populations()), len(net.operators())
            info["h5_mb"] = round((work / "net.h5").stat().st_size / 2 ** 20)
        elif stage == "compile":
            net = ir.load(work / "net.h5")
            qnet, _ = compiler.quantize(net, hw_profiles.load_profile("loihi2"), release_input=True)
            ir.save(qnet, work / "qnet.h5")
        elif stage == "resources":
            qnet = ir.load(work / "qnet.h5")
            rep = resources_report(qnet, "loihi2")
            info["cores"], info["chips"] = rep.cores, rep.chips
        else:
            raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    except (SpikeportError, FileNotFoundError) as e:
        info["not_available"] = str(e).splitlines()[0][:160]
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    return {"stage": stage, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": _peak_mb(), "base_rss_mb": base, **info}


# ------------------------------------------------------------------------------ driver
def _child(args, stage: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(work), "--calib", str(args.calib),
           "--levels", str(args.levels)] + (["--small"] if args.small else [])
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calib", type=int, default=4, help="calibration samples (default 4)")
    ap.add_argument("--levels", type=int, default=8, help="ecmt levels n")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every stage (default: torch's)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--small", action="store_true", help="a 2-block 192-wide model instead of ViT-B")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the ONNX and IR files (default: temporary)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = SMALL if args.small else VIT_B
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.work, cfg, args.calib, args.levels)))
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads or torch.get_num_threads()}, "
          f"{args.calib} calibration samples, ecmt levels {args.levels}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        setup = _child(args, "export", work)  # build + ONNX export: setup, in its own process too
        fp32 = 4 * setup["params"] / 2 ** 20
        print(f"ViT {cfg}: {setup['params'] / 1e6:.1f}M parameters, fp32 weights {fp32:.0f} MiB "
              f"(targets: total < 60 s, peak RSS < {3 * fp32:.0f} MiB = 3x); ONNX export (setup) {setup['wall_s']:.1f} s")
        print(f"{'stage':<10} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'xfp32':>6} {'base MB':>8}  notes")
        for stage in args.stages.split(","):
            r = _child(args, stage, work)
            notes = {k: v for k, v in r.items() if k not in ("stage", "wall_s", "cpu_s", "peak_rss_mb", "base_rss_mb")}
            print(f"{stage:<10} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['peak_rss_mb']:12.0f} "
                  f"{r['peak_rss_mb'] / fp32:6.2f} {r['base_rss_mb']:8.0f}  {notes if notes else ''}", flush=True)

if __name__ == "__main__":
    main()
