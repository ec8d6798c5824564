"""Sharded runs under torchrun equal the single-process run exactly (distributed.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spikeport import compiler, convert, distributed, frontend, hw_profiles, ir


def test_pack_round_trip_without_pickle():
    obj = {"a": np.arange(5, dtype=np.int16), "b": [1, 2.5, None, "x", True, (np.float64(0.1), np.int64(7))],
           "c": {"d": np.zeros((2, 0)), "e": float("inf")}}
    back = distributed.unpack(distributed.pack(obj))
    assert back["a"].dtype == np.int16 and np.array_equal(back["a"], obj["a"])
    assert back["b"][:5] == [1, 2.5, None, "x", True] and back["b"][5] == (0.1, 7)
    assert back["c"]["d"].shape == (2, 0) and back["c"]["e"] == float("inf")
    with pytest.raises(TypeError):
        distributed.pack({"o": np.array([object()], dtype=object)})


def test_single_process_is_a_plain_loop():
    assert distributed.world() == (0, 1) and distributed.is_root() and not distributed.launched()
    assert distributed.map_pieces(range(5), lambda i: i * i) == [0, 1, 4, 9, 16]


def without_seconds(obj):
    """The JSON without wall-clock timings (the ablation's 'seconds'), the only fields that may differ."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def run(args, nproc=1):
    env = dict(os.environ)
    pre = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 \
        else [sys.executable]
    proc = subprocess.run(pre + ["-m", "spikeport"] + [str(a) for a in args], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, digits_onnx, digits):
    """simulate, fidelity (float and fixed simulations and the ablation's mixed runs) and energy: the JSON
    and NPZ outputs of a 2-process torchrun (gloo, CPU) equal the single-process ones exactly; batches of
    8 over 20 samples (3 batches, the last short, dealt 2 / 1)."""
    x_train, _, x_test, y_test = digits
    np.savez(tmp_path / "test.npz", x=x_test[:20], y=y_test[:20])
    ann = frontend.load_model(digits_onnx)
    net = convert.convert(ann, x_train[:128], method="if")
    qnet, _ = compiler.quantize(net, hw_profiles.load_profile("loihi2"))
    d = tmp_path
    ir.save(net, d / "net.h5")
    ir.save(qnet, d / "qnet.h5")
    common = ["--data", d / "test.npz", "--batch-size", "8", "--timesteps", "8"]
    outs = {}
    for n in (1, 2):
        o = d / f"p{n}"
        o.mkdir()
        run(["simulate", d / "qnet.h5", *common, "--json", o / "qnet.json", "--save-outputs", o / "qnet.npz"], n)
        run(["fidelity", digits_onnx, d / "net.h5", d / "qnet.h5", *common, "--json", o / "fid.json"], n)
        run(["energy", d / "qnet.h5", *common, "--json", o / "energy.json"], n)
        outs[n] = o
    for name in ("qnet.json", "fid.json", "energy.json"):
        a, b = (without_seconds(json.loads((outs[n] / name).read_text())) for n in (1, 2))
        assert a == b, name
    with np.load(outs[1] / "qnet.npz") as a, np.load(outs[2] / "qnet.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert sorted(p.name for p in outs[2].iterdir()) == sorted(p.name for p in outs[1].iterdir())
    fid = json.loads((outs[2] / "fid.json").read_text())
    assert fid["samples"] == 20 and fid["points"][0]["ablation"] is not None
