"""NIR import: every supported primitive, the composition of linear chains, and clear errors naming
the node and its type for what cannot be imported."""
from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.frontend.nir_import import NirImportError, import_nir
from spikeport.ir import IF, Conv2d, Dense, Identity, Readout
from spikeport.ir.neurons_cuba import CubaLI, CubaLIF
from spikeport.simulator import simulate


def _write(tmp_path, nodes, edges, name="g.nir"):
    path = tmp_path / name
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return path


def _if(n, th=1.0):
    return nir.IF(r=np.ones(n), v_threshold=np.full(n, th), v_reset=np.zeros(n))


def test_every_linear_primitive_maps_and_simulates_like_numpy(tmp_path):
    """Conv2d -> IF -> SumPool2d -> AvgPool2d... and Conv1d, Scale, Delay, Flatten, Linear, Threshold, I,
    LI: the imported float network equals a hand-written numpy loop of the spec equations."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1, (3, 2, 3, 3))
    w2 = rng.normal(0, 1, (4, 12))
    nodes = {
        "in": nir.Input(input_type={"input": np.array([2, 4, 4])}),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=w1, stride=1, padding=1, dilation=1, groups=1, bias=np.array([0.1, 0.0, -0.1])),
        "if1": nir.IF(r=np.full((3, 4, 4), 1000.0), v_threshold=np.ones((3, 4, 4)), v_reset=np.zeros((3, 4, 4))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
        "scale": nir.Scale(scale=np.full(12, 0.5)),
        "delay": nir.Delay(delay=np.full(12, 2e-3)),
        "lin": nir.Linear(weight=w2),
        "th": nir.Threshold(threshold=np.full(4, 0.2)),
        "integ": nir.I(r=np.ones(4)),
        "out": nir.Output(output_type={"output": np.array([4])}),
    }
    edges = [("in", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "flat"), ("flat", "scale"), ("scale", "delay"),
             ("delay", "lin"), ("lin", "th"), ("th", "integ"), ("integ", "out")]
    net = import_nir(_write(tmp_path, nodes, edges), convention="spec", dt=1e-3)
    assert isinstance(net["if1"].neuron, IF) and isinstance(net["th"].neuron, CubaLIF) and isinstance(net["integ"].neuron, Readout)
    proj = {p.target: p for p in net.projections()}
    assert isinstance(proj["if1"], Conv2d) and isinstance(proj["th"], Dense) and proj["th"].delay == 2
    assert isinstance(proj["integ"], Identity)
    T = 8
    x = (rng.random((2, T, 2, 4, 4)) < 0.5).astype(np.float64)
    res = simulate(net, x, T, record_spikes=True, record_states=True)
    import torch
    import torch.nn.functional as F
    v1 = np.zeros((2, 3, 4, 4))
    hist, th_spk, acc = [], [], np.zeros((2, 4))
    for t in range(T):
        cur = F.conv2d(torch.as_tensor(x[:, t]), torch.as_tensor(w1), torch.as_tensor([0.1, 0.0, -0.1], dtype=torch.float64),
                       padding=1).numpy()
        v1 = v1 + cur                          # spec IF: v += dt * r * I, dt * r = 1e-3 * 1000 = 1
        s1 = (v1 > 1.0).astype(float)
        v1[s1 > 0] = 0
        np.testing.assert_array_equal(res.spikes["if1"][:, t], s1)
        pooled = s1.reshape(2, 3, 2, 2, 2, 2).sum(axis=(3, 5)).reshape(2, -1) * 0.5
        hist.append(pooled)
        d = hist[t - 2] if t >= 2 else np.zeros_like(pooled)
        z = (d @ w2.T > 0.2).astype(float)
        np.testing.assert_array_equal(res.spikes["th"][:, t], z)
        acc = acc + 1e-3 * z                    # spec I: v += dt * r * I
    np.testing.assert_allclose(res.states["integ"], acc, rtol=0, atol=1e-15)


def test_conv1d_becomes_an_exact_dense_projection(tmp_path):
    import torch
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (3, 2, 3))
    nodes = {"in": nir.Input(input_type={"input": np.array([2, 7])}),
             "c": nir.Conv1d(input_shape=7, weight=w, stride=2, padding=1, dilation=1, groups=1, bias=np.zeros(3)),
             "n": nir.IF(r=np.ones((3, 4)), v_threshold=np.ones((3, 4)), v_reset=np.zeros((3, 4))),
             "out": nir.Output(output_type={"output": np.array([3, 4])})}
    net = import_nir(_write(tmp_path, nodes, [("in", "c"), ("c", "n"), ("n", "out")]), convention="norse")
    proj = net.incoming("n")[0]
    assert isinstance(proj, Dense) and net["n"].shape == (3, 4)
    x = rng.normal(0, 1, (5, 2, 7))
    want = torch.nn.functional.conv1d(torch.as_tensor(x), torch.as_tensor(w), stride=2, padding=1).reshape(5, -1).numpy()
    np.testing.assert_allclose(x.reshape(5, -1) @ np.asarray(proj.weight).T, want, rtol=1e-12, atol=1e-12)


def test_cuba_lif_and_li_under_spec(tmp_path):
    n = 3
    nodes = {"in": nir.Input(input_type={"input": np.array([n])}),
             "c": nir.CubaLIF(tau_syn=np.full(n, 2e-3), tau_mem=np.full(n, 4e-3), r=np.full(n, 2.0), v_leak=np.zeros(n),
                              v_threshold=np.ones(n), w_in=np.full(n, 3.0)),
             "w": nir.Linear(weight=np.eye(n)),
             "li": nir.LI(tau=np.full(n, 5e-3), r=np.ones(n), v_leak=np.zeros(n)),
             "out": nir.Output(output_type={"output": np.array([n])})}
    net = import_nir(_write(tmp_path, nodes, [("in", "c"), ("c", "w"), ("w", "li"), ("li", "out")]), dt=1e-3)
    m = net["c"].neuron
    assert (m.du, m.dv) == (0.5, 0.25)
    # spec Euler: gain into u = (dt/tau_mem) r (dt/tau_syn) w_in = 0.25 * 2 * 0.5 * 3
    assert np.asarray(net.incoming("c")[0].weight).ravel()[0] == pytest.approx(0.75)
    assert isinstance(net["li"].neuron, CubaLI) and net["li"].neuron.dv == pytest.approx(0.2)


@pytest.mark.parametrize("case, message", [
    ("vreset", "v_reset"),
    ("weight", "type mismatch: in.output"),
    ("cycle", "cycle"),
    ("dt", "--dt"),
    ("threshold", "v_threshold must be > 0"),
    ("nan", "NaN"),
])
def test_bad_graphs_name_the_node(tmp_path, case, message):
    n = 2
    lif = nir.LIF(tau=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    nodes = {"in": nir.Input(input_type={"input": np.array([n])}), "fc": nir.Linear(weight=np.eye(n)), "lif": lif,
             "out": nir.Output(output_type={"output": np.array([n])})}
    edges = [("in", "fc"), ("fc", "lif"), ("lif", "out")]
    kw = {"dt": 1e-3}
    if case == "vreset":
        lif.v_reset = np.full(n, 0.5)
    elif case == "weight":
        nodes["fc"] = nir.Linear(weight=np.ones((n, n + 1)))
    elif case == "cycle":
        nodes["rec"] = nir.Linear(weight=np.eye(n))
        edges += [("lif", "rec"), ("rec", "lif")]
    elif case == "dt":
        kw = {}
    elif case == "threshold":
        lif.v_threshold = np.zeros(n)
    elif case == "nan":
        nodes["fc"] = nir.Linear(weight=np.array([[np.nan, 0], [0, 1]]))
    with pytest.raises(NirImportError, match=message) as err:
        import_nir(_write(tmp_path, nodes, edges), **kw)
    assert "g.nir" in str(err.value)
    if case not in ("cycle", "weight"):
        assert "'lif'" in str(err.value) or "'fc'" in str(err.value)


def test_unknown_node_type_is_refused_before_reading(tmp_path):
    """The type walk runs first: a node naming a type outside NIR's list never reaches a constructor."""
    path = _write(tmp_path, {"in": nir.Input(input_type={"input": np.array([2])}), "lif": _if(2),
                             "out": nir.Output(output_type={"output": np.array([2])})},
                  [("in", "lif"), ("lif", "out")])
    with h5py.File(path, "a") as f:
        del f["node/nodes/lif/type"]
        f["node/nodes/lif"].create_dataset("type", data="__import__('os')", dtype=h5py.string_dtype())
    with pytest.raises(NirImportError, match=r"node /lif has type \"__import__\('os'\)\""):
        import_nir(path)
    with pytest.raises(NirImportError, match="not a NIR file"):
        h5py.File(tmp_path / "empty.h5", "w").close()
        import_nir(tmp_path / "empty.h5")


def test_cli_import_then_simulate(tmp_path):
    from pathlib import Path
    src = Path(__file__).parent / "data" / "nir" / "snntorch_mlp.nir"
    out = tmp_path / "net.h5"
    r = CliRunner().invoke(app, ["import", str(src), "--out", str(out), "--convention", "snntorch", "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "snntorch convention" in r.output and out.exists()
    from spikeport.ir import load
    net = load(out)
    assert net.meta["nir"]["reset_timing"] == "next_step" and net["1"].neuron.reset == "subtract"
    r = CliRunner().invoke(app, ["import", str(src), "--out", str(out), "--convention", "spec"])
    assert r.exit_code == 2 and "--dt" in r.output
