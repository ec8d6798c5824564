"""netx export where only an approximation exists (issue 12 item 5): refused by default, naming the
reason and the --approximate flag; with --approximate --data it writes the nearest netx network (zero
reset, '>', ungated) and prints the measured accuracy difference against spikeport's simulator, the
per-layer spike agreement, and that lava-dl's netx runs exactly that approximate network."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from spikeport import ir
from spikeport.backends.netx import approximate_for_netx, run_netx
from spikeport.cli import app
from spikeport.simulator import simulate

DATA = Path(__file__).parent / "data" / "nir"


def _run(*a):
    return CliRunner().invoke(app, [str(v) for v in a])


def test_approximate_netx_export_of_a_ge_biased_net(tmp_path):
    """SpikingJelly's MLP ('>=' compare, biases on gated layers): no exact netx form."""
    d = np.load(DATA / "spikingjelly_mlp.npz")
    x = d["x"].astype(np.float32)
    y = d["spk___3"].sum(axis=1).argmax(axis=1)           # the peer's own decisions as labels
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert _run("import", DATA / "spikingjelly_mlp.nir", "--out", tmp_path / "n.h5", "--convention", "spikingjelly").exit_code == 0
    r = _run("compile", tmp_path / "n.h5", "--out", tmp_path / "q.h5", "--netx")
    assert r.exit_code == 0 and "stays gated" in r.output, r.output
    out = tmp_path / "n.net.h5"
    r = _run("export", tmp_path / "q.h5", "--target", "netx", "--out", out, "--timesteps", 12)
    assert r.exit_code == 2 and "compare '>='" in r.output and "--approximate" in r.output and not out.exists()
    r = _run("export", tmp_path / "q.h5", "--target", "netx", "--out", out, "--timesteps", 12, "--approximate")
    assert r.exit_code == 2 and "--data" in r.output and not out.exists()
    r = _run("export", tmp_path / "q.h5", "--target", "netx", "--out", out, "--timesteps", 12, "--approximate",
             "--data", tmp_path / "d.npz", "--json", tmp_path / "a.json")
    assert r.exit_code == 0, r.output
    assert "APPROXIMATE" in r.output and "accuracy: simulator" in r.output and "compare '>=' -> '>'" in r.output
    rep = json.loads((tmp_path / "a.json").read_text())["approximation"]
    assert rep["netx_equals_approximation"] is True
    assert rep["accuracy_difference"] == rep["accuracy_netx"] - rep["accuracy_simulator"]
    assert set(rep["spike_agreement"]) == {"_1", "_3"} and all(0 <= v <= 1 for v in rep["spike_agreement"].values())
    # the figures are the simulator's: recompute them
    q = ir.load(tmp_path / "q.h5")
    approx, changes = approximate_for_netx(q)
    assert any("runs at every step" in c for c in changes)
    ref, app_ = simulate(q, x, 12), simulate(approx, x, 12)
    assert rep["accuracy_simulator"] == ref.accuracy(y) and rep["accuracy_netx"] == app_.accuracy(y)
    # and lava-dl's netx file is that approximate network at every step, every layer
    got = run_netx(out, approx, x[:1], 12)
    sim = simulate(approx, x[:1], 12, record_spikes=True)
    for name, s in got.items():
        np.testing.assert_array_equal(s, sim.spikes[name], err_msg=name)


def test_approximate_only_with_netx(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 12), np.float32))
    assert _run("import", DATA / "spikingjelly_mlp.nir", "--out", tmp_path / "n.h5", "--convention", "spikingjelly").exit_code == 0
    assert _run("compile", tmp_path / "n.h5", "--out", tmp_path / "q.h5").exit_code == 0
    r = _run("export", tmp_path / "q.h5", "--target", "lava", "--out", tmp_path / "lava", "--approximate",
             "--data", tmp_path / "d.npz")
    assert r.exit_code == 2 and "--target netx only" in r.output
