"""An imported CubaLIF network (snnTorch's NIR file, zero reset) quantised for loihi2: Lava's fixed_pt
run equals spikeport's bit-accurate simulator spike for spike (`spikeport verify` exit 0), the
layer the window allows runs as Lava's native LIF process; compiled with --netx (ungated, netx's
datapath) every layer is native and lava-dl's netx gives identical spikes at every step."""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport.backends.loihi2 import verify
from spikeport.backends.loihi2.plan import plan_network
from spikeport import ir
from spikeport.backends.netx import NetxExportError, export_netx, run_netx, verify_netx
from spikeport.cli import app
from spikeport.compiler import quantize, ungate
from spikeport.frontend.nir_import import import_nir
from spikeport.ir.neurons_cuba import CubaLIF, LavaCubaLIF
from spikeport.simulator import simulate
from spikeport.simulator.reference import reference_simulate

DATA = Path(__file__).parent / "data" / "nir"


def _fixture(name="snntorch_cuba"):
    d = np.load(DATA / f"{name}.npz")
    return d["x"].astype(np.float64)


def test_cli_import_compile_verify_lava_exit_0(tmp_path):
    x = _fixture()
    T = x.shape[1]
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32))
    run = lambda *a: CliRunner().invoke(app, [str(v) for v in a])  # noqa: E731
    r = run("import", DATA / "snntorch_cuba.nir", "--out", tmp_path / "net.h5", "--convention", "snntorch", "--reset", "zero")
    assert r.exit_code == 0, r.output
    r = run("compile", tmp_path / "net.h5", "--profile", "loihi2", "--out", tmp_path / "q.h5")
    assert r.exit_code == 0, r.output
    r = run("verify", tmp_path / "q.h5", "--target", "lava", "--data", tmp_path / "d.npz", "--timesteps", T)
    assert r.exit_code == 0, r.output
    assert "identical" in r.output


def test_native_lif_process_and_lava_identity():
    x = _fixture()
    T = x.shape[1]
    net = import_nir(DATA / "snntorch_cuba.nir", convention="snntorch", reset="zero")
    q, _ = quantize(net, "loihi2")
    assert (q["1"].neuron.du, q["1"].neuron.dv) == (1228, 410)     # round(0.3 * 4096) - 1, round(0.1 * 4096)
    plan = {n.name: n for n in plan_network(q, T).neurons}
    # the output layer's window ends with the run: Lava's own LIF with du/dv; the hidden layer needs
    # t_start gating (its current would keep decaying after its window) and runs the same arithmetic
    # in spikeport's process
    assert plan["3"].process == "LIF" and plan["3"].params["du"] == q["3"].neuron.du
    assert plan["1"].process == "SpikeportNeuron" and plan["1"].params["du"] == 1228
    rep = verify(q, x, T)
    assert rep.identical, str(rep)
    assert sum(simulate(q, x, T).spike_counts["1"].ravel()) > 0


def test_single_layer_cubalif_is_all_native(tmp_path):
    rng = np.random.default_rng(5)
    n_in, n = 6, 4
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([n_in])}),
                            "fc": nir.Linear(weight=rng.normal(0, 1.5, (n, n_in))),
                            "lif": nir.CubaLIF(tau_syn=np.full(n, 3e-3), tau_mem=np.full(n, 8e-3), r=np.full(n, 8.0),
                                               v_leak=np.zeros(n), v_threshold=np.ones(n), w_in=np.full(n, 3.0)),
                            "out": nir.Output(output_type={"output": np.array([n])})},
                     edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    nir.write(tmp_path / "c.nir", g)
    q, _ = quantize(import_nir(tmp_path / "c.nir", dt=1e-3), "loihi2")
    T = 20
    x = (rng.random((3, T, n_in)) < 0.5).astype(np.float64)
    assert [p.process for p in plan_network(q, T).neurons] == ["LIF"]
    rep = verify(q, x, T)
    assert rep.identical, str(rep)
    assert simulate(q, x, T).spike_counts["lif"].sum() > 0


def test_netx_export_of_imported_cubalif_identical_at_every_step(tmp_path):
    """netx blocks (Lava's LIF) run at every step; ``compile --netx`` quantises for netx's datapath and
    ungates the layers (LavaCubaLIF), so spikeport's simulator computes what netx computes: identical
    spikes in every layer at EVERY step of the run, not only inside the windows."""
    x = _fixture()
    T = x.shape[1]
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32))
    run = lambda *a: CliRunner().invoke(app, [str(v) for v in a])  # noqa: E731
    r = run("import", DATA / "snntorch_cuba.nir", "--out", tmp_path / "net.h5", "--convention", "snntorch", "--reset", "zero")
    assert r.exit_code == 0, r.output
    r = run("compile", tmp_path / "net.h5", "--profile", "loihi2", "--out", tmp_path / "q.h5", "--netx")
    assert r.exit_code == 0 and "stays gated" not in r.output, r.output
    r = run("export", tmp_path / "q.h5", "--target", "netx", "--out", tmp_path / "cuba.net.h5", "--timesteps", T)
    assert r.exit_code == 0, r.output
    qu = ir.load(tmp_path / "q.h5")
    assert [type(p.neuron) for p in qu.populations()] == [LavaCubaLIF, LavaCubaLIF]
    got = run_netx(tmp_path / "cuba.net.h5", qu, x, T)
    sim = simulate(qu, x, T, record_spikes=True)
    assert set(got) == {"1", "3"}
    for name, spikes in got.items():
        assert spikes.shape[1] == T + qu.latency()
        np.testing.assert_array_equal(spikes, sim.spikes[name], err_msg=name)
        assert spikes.sum() > 0, name
    # the gated IR (plain compile) agrees inside every window and at the output at every step; the
    # hidden layer's extra events after its window are what netx (and the chip) emit
    gated, _ = quantize(import_nir(DATA / "snntorch_cuba.nir", convention="snntorch", reset="zero"), "loihi2", netx=True)
    ref = simulate(gated, x, T, record_spikes=True)
    for pop in gated.populations():
        w = slice(pop.t_start, pop.t_start + T)
        np.testing.assert_array_equal(sim.spikes[pop.name][:, w], ref.spikes[pop.name][:, w], err_msg=pop.name)
    np.testing.assert_array_equal(sim.spikes["3"], ref.spikes["3"])
    assert sim.spikes["1"].sum() > ref.spikes["1"].sum()     # 48 vs 44: the current left after the window
    # and on Lava both layers are now its own native LIF process, still identical
    assert [n.process for n in plan_network(qu, T).neurons] == ["LIF", "LIF"]
    assert verify(qu, x, T).identical
    # the user's check: verify --target netx compares every step of both (ungated) layers
    r = run("verify", tmp_path / "q.h5", "--target", "netx", "--data", tmp_path / "d.npz", "--timesteps", T)
    assert r.exit_code == 0 and "identical" in r.output and "every step: 1, 3" in r.output, r.output
    # the gated IR: netx agrees inside the windows only, and verify says which layers it compared how
    rep = verify_netx(gated, x[:1], T)
    assert rep.identical and rep.windowed == ["1", "3"] and rep.every_step == []


def test_ungated_cubalif_engine_equals_reference_simulator():
    """The engine's every-step CubaLIF equals simulator/reference.py's plain-integer loop (no torch)."""
    x = _fixture()
    T = x.shape[1]
    qu, notes = ungate(quantize(import_nir(DATA / "snntorch_cuba.nir", convention="snntorch", reset="zero"), "loihi2")[0])
    assert notes == []
    ref = reference_simulate(qu, x, T)
    sim = simulate(qu, x, T, record_spikes=True)
    for name in ("1", "3"):
        np.testing.assert_array_equal(sim.spikes[name], ref.spikes[name], err_msg=name)
    assert ref.spikes["1"][:, 1 + T:].sum() > 0      # it does fire after its window, in both


def test_ungate_leaves_what_would_change_a_window():
    net = import_nir(DATA / "snntorch_cuba.nir", convention="snntorch", reset="zero")
    biased = net.copy()
    biased["1"].neuron.bias = np.full(biased["1"].shape, 0.01)
    qu, notes = ungate(biased)
    assert [n.population for n in notes] == ["1"] and "nonzero bias" in notes[0].reason
    assert type(qu["1"].neuron) is CubaLIF and type(qu["3"].neuron) is LavaCubaLIF
    with pytest.raises(NetxExportError, match="nonzero bias on a gated neuron"):
        export_netx(quantize(qu, "loihi2", netx=True)[0], Path("unused.h5"), 12)
