"""NIR export: spikeport -> NIR -> spikeport is exact (same spikes, same outputs) for every float
model; the file reads with nir.read; networks a generic NIR reader would misread are refused unless
--lossy, which lists what is dropped."""
from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport.backends.nir_export import NirExportError, export_nir
from spikeport.cli import app
from spikeport.frontend.nir_import import import_nir
from spikeport.ir import IF, Conv2d, Dense, Identity, Input, Network, Population, Readout, SpikePayload, save
from spikeport.ir.neurons_cuba import CubaLIF
from spikeport.ir.neurons_extra import MultiSpikeIF
from spikeport.simulator import simulate

DATA = Path(__file__).parent / "data" / "nir"


def _net(kind: str, rng) -> tuple[Network, np.ndarray]:
    net = Network()
    conv = kind in ("conv", "residual")
    shape = (2, 5, 5) if conv else (7,)
    net.add(Input("in", shape=shape, coding="spikes"))
    if conv:
        c = Conv2d("c1", source="in", target="h", weight=rng.normal(0, 1, (3, 2, 3, 3)), padding=(1, 1), stride=(1, 1))
        hshape = c.out_shape(shape)
    else:
        hshape = (6,)
        c = Dense("c1", source="in", target="h", weight=rng.normal(0, 1, (6, 7)), delay=2 if kind == "mixed" else 0)
    neurons = {
        "if_zero": IF(threshold=np.array(1.0), reset="zero", compare=">"),
        "if_soft": IF(threshold=np.array(0.8), reset="subtract", compare=">=", bias=np.array(0.05), v_init=np.array(0.4)),
        "lif": IF(threshold=np.array(1.0), reset="zero", compare=">", leak=0.125),
        "cuba": CubaLIF(threshold=np.array(1.0), du=0.25, dv=0.125, bias=np.array(0.02)),
        "snntorch": CubaLIF(threshold=np.array(1.0), du=1.0, dv=0.1, reset="subtract", reset_timing="next_step"),
        "mixed": MultiSpikeIF(threshold=np.array(0.5), v_init=np.array(0.0), n_pos=3),
        "conv": IF(threshold=np.linspace(0.5, 1.5, 3), reset="zero", compare=">"),
        "residual": IF(threshold=np.array(1.0), reset="subtract", compare=">=", neg_threshold=np.array(0.5), neg_reset=np.array(1.0)),
    }
    payload = (SpikePayload(kind="graded", bits=3, min_level=0, max_level=3) if kind == "mixed" else
               SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1) if kind == "residual" else SpikePayload())
    net.add(Population("h", shape=hshape, neuron=neurons[kind], payload=payload))
    net.add(c)
    n_h = int(np.prod(hshape))
    if kind == "residual":
        net.add(Population("h2", shape=hshape, neuron=IF(threshold=np.array(1.0), reset="zero", compare=">")))
        net.add(Conv2d("c2", source="h", target="h2", weight=rng.normal(0, 1, (3, 3, 3, 3)), padding=(1, 1)))
        net.add(Identity("skip", source="h", target="h2", weight=np.array([0.5, 1.0, -0.5])))
        src, n_h = "h2", n_h
    else:
        src = "h"
    net.add(Population("out", shape=(4,), neuron=Readout(bias=np.array([0.0, 0.1, -0.1, 0.0]))))
    net.add(Dense("d2", source=src, target="out", weight=rng.normal(0, 1, (4, n_h))))
    net.outputs = ["out"]
    x = (rng.random((3, 10) + shape) < 0.4).astype(np.float64)
    return net, x


KINDS = ["if_zero", "if_soft", "lif", "cuba", "snntorch", "mixed", "conv", "residual"]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact(tmp_path, kind):
    rng = np.random.default_rng(KINDS.index(kind))
    net, x = _net(kind, rng)
    path, dropped = export_nir(net, tmp_path / f"{kind}.nir", lossy=True)
    g = nir.read(path)
    assert "h" in g.nodes and "output" in g.nodes
    again = import_nir(path)
    a = simulate(net, x, 10, record_spikes=True, record_states=True)
    b = simulate(again, x, 10, record_spikes=True, record_states=True)
    for name in a.spikes:
        np.testing.assert_array_equal(a.spikes[name], b.spikes[name], err_msg=f"{kind}: {name}")
        assert a.spikes[name].any()
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert type(again["h"].neuron) is type(net["h"].neuron)
    if kind in ("if_zero", "lif", "cuba", "conv"):
        assert dropped == []      # exact for any NIR reader of the spec convention
    else:
        assert dropped


def test_lossy_semantics_are_refused_by_default(tmp_path):
    net, _ = _net("if_soft", np.random.default_rng(0))
    with pytest.raises(NirExportError, match="reset 'subtract'.*comparison '>='"):
        export_nir(net, tmp_path / "x.nir")
    assert not (tmp_path / "x.nir").exists()
    q = net.copy()
    q.datapath = __import__("spikeport.ir", fromlist=["Datapath"]).Datapath()
    with pytest.raises(NirExportError, match="quantised"):
        export_nir(q, tmp_path / "q.nir")


def test_cli_export_nir(tmp_path):
    net, x = _net("if_soft", np.random.default_rng(1))
    save(net, tmp_path / "net.h5")
    run = lambda *a: CliRunner().invoke(app, [str(v) for v in a])  # noqa: E731
    r = run("export", tmp_path / "net.h5", "--target", "nir", "--out", tmp_path / "m.nir")
    assert r.exit_code == 2 and "--lossy" in r.output
    r = run("export", tmp_path / "net.h5", "--target", "nir", "--out", tmp_path / "m.nir", "--lossy")
    assert r.exit_code == 0, r.output
    assert "dropped for other NIR readers" in r.output and "reset 'subtract'" in r.output
    assert nir.read(tmp_path / "m.nir")


def test_spikeport_export_runs_in_a_peer_with_the_same_spikes():
    """Recorded by scripts/nir_peer_fixtures.py: spikeport exported zero-reset IF/LIF networks, a peer
    imported those NIR files and ran them; its spikes equal spikeport's simulation here."""
    manifest = json.loads((DATA / "manifest.json").read_text())
    cases = [k for k in manifest if k.startswith("spikeport_")]
    assert cases
    for name in cases:
        info = manifest[name]
        net = import_nir(DATA / f"{name}.nir", convention=info["convention"])
        d = np.load(DATA / f"{name}.npz")
        x = d["x"].astype(np.float64)
        res = simulate(net, x, x.shape[1], record_spikes=True)
        for layer in info["layers"]:
            want = d[f"spk__{layer}"]
            assert want.sum() > 0
            np.testing.assert_array_equal(res.spikes[layer].reshape(want.shape).astype(np.float32), want,
                                          err_msg=f"{name}: {layer} ({info['peer']})")


def test_round_trip_keeps_ungated_layers(tmp_path):
    """compiler.ungate's LavaCubaLIF (netx / Lava LIF semantics) survives spikeport -> NIR -> spikeport."""
    from spikeport.compiler import ungate
    from spikeport.ir.neurons_cuba import LavaCubaLIF
    data = Path(__file__).parent / "data" / "nir"
    net, notes = ungate(import_nir(data / "snntorch_cuba.nir", convention="snntorch", reset="zero"))
    assert notes == []
    path, dropped = export_nir(net, tmp_path / "u.nir", dt=1e-4)
    again = import_nir(path, dt=1e-4)
    assert [type(p.neuron) for p in again.populations()] == [LavaCubaLIF, LavaCubaLIF] and dropped == []
    x = np.load(data / "snntorch_cuba.npz")["x"].astype(np.float64)
    a = simulate(net, x, 12, record_spikes=True)
    b = simulate(again, x, 12, record_spikes=True)
    for name in a.spikes:
        np.testing.assert_array_equal(a.spikes[name], b.spikes[name], err_msg=name)
