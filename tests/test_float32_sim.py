"""simulate(dtype="float32") on float networks: the peers' precision, same answers as float64.

float64 stays the default (the IR equations in double precision, bit-stable across batch sizes
and schedules; tests/test_simulator.py pins its rounding). float32 is an explicit option for
throughput; it must classify like float64 on the digits CNN.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport.convert import convert
from spikeport.frontend import load_model
from spikeport.simulator import simulate
from spikeport.simulator.engine import build_plan

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_net(digits_model, calib_x):
    return convert(load_model(digits_model, input_shape=(1, 8, 8)), calib_x, method="if")


def test_float32_classifies_like_float64(digits_net, digits):
    _, _, x, y = digits
    x, y = x[:200], y[:200]
    f64 = simulate(digits_net, x, 32, batch_size=50)
    f32 = simulate(digits_net, x, 32, batch_size=50, dtype="float32")
    step = simulate(digits_net, x, 32, batch_size=50, dtype="float32", schedule="step")
    assert f32.outputs.dtype == np.float64                       # decoded values stay float64
    for res in (f32, step):
        assert abs(res.accuracy(y) - f64.accuracy(y)) <= 0.01
        assert np.mean(res.predictions == f64.predictions) >= 0.98
        # per-layer spike counts within float32 rounding of the thresholds' crossings
        for name, counts in f64.spike_counts.items():
            assert abs(int(res.spike_counts[name].sum()) - int(counts.sum())) <= 0.01 * max(1, int(counts.sum()))


def test_float32_weights_state_and_bad_dtype(digits_net):
    plan = build_plan(digits_net, 4, "cpu", dtype="float32")
    assert all(pk._w.dtype == torch.float32 for entries in plan.incoming.values() for pk, _, _ in entries)
    res = simulate(digits_net, np.zeros((2, 1, 8, 8), dtype=np.float32), 4, dtype="float32", record_states=True)
    assert all(np.isfinite(v).all() for v in res.states.values())
    with pytest.raises(ValueError, match="dtype must be one of"):
        build_plan(digits_net, 4, "cpu", dtype="float16")


def test_cli_dtype_option(digits_net, digits, tmp_path):
    import json

    from typer.testing import CliRunner

    from spikeport import ir
    from spikeport.cli import app
    _, _, x, y = digits
    ir.save(digits_net, tmp_path / "net.h5")
    np.savez(tmp_path / "d.npz", x=x[:40], y=y[:40])
    runner = CliRunner()
    args = ["simulate", str(tmp_path / "net.h5"), "--data", str(tmp_path / "d.npz"), "--timesteps", "8"]
    r = runner.invoke(app, args + ["--dtype", "float32", "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    acc32 = json.loads((tmp_path / "s.json").read_text())["accuracy"]
    r = runner.invoke(app, args + ["--json", str(tmp_path / "s64.json")])
    assert abs(acc32 - json.loads((tmp_path / "s64.json").read_text())["accuracy"]) <= 0.05
    r = runner.invoke(app, args + ["--dtype", "float16"])
    assert r.exit_code == 2 and "--dtype" in r.output
