"""An imported CubaLIF network (snnTorch's NIR file, zero reset) quantised for loihi2: Lava's fixed_pt
run equals spikeport's bit-accurate simulator spike for spike (`spikeport verify` exit 0), the
layer the window allows runs as Lava's native LIF process, and lava-dl's netx loads the exported file
with identical spikes."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nir
import numpy as np
from typer.testing import CliRunner

from spikeport.backends.loihi2 import verify
from spikeport.backends.loihi2.plan import plan_network
from spikeport.backends.netx import export_netx, run_netx
from spikeport.cli import app
from spikeport.compiler import quantize
from spikeport.frontend.nir_import import import_nir
from spikeport.hw_profiles import load_profile
from spikeport.simulator import simulate

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


def test_netx_export_of_imported_cubalif_loads_with_identical_spikes(tmp_path):
    """netx blocks run ungated: inside every layer's window the spikes are identical; after the hidden
    layer's window its current keeps decaying in netx (spikeport freezes it), which never reaches the
    output inside the output's window."""
    x = _fixture()
    T = x.shape[1]
    prof = load_profile("loihi2")
    prof = replace(prof, datapath=replace(prof.datapath, weight_exp_max=0))   # netx re-quantises weights above 8 bits
    q, _ = quantize(import_nir(DATA / "snntorch_cuba.nir", convention="snntorch", reset="zero"), prof)
    path = export_netx(q, tmp_path / "cuba.net.h5", T)
    got = run_netx(path, q, x, T)
    sim = simulate(q, x, T, record_spikes=True)
    for pop in q.populations():
        w = slice(pop.t_start, pop.t_start + T)
        np.testing.assert_array_equal(got[pop.name][:, w], sim.spikes[pop.name][:, w], err_msg=pop.name)
    out = q.outputs[0]
    np.testing.assert_array_equal(got[out], sim.spikes[out])
    assert sim.spikes["1"].sum() > 0 and sim.spikes[out].sum() > 0
