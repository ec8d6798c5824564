"""NeuroBench convention: spikeport's effective ACs / MACs, Dense and activation sparsity on imported
snnTorch networks equal the values the `neurobench` 2.3.0 package itself reported for the same
networks and input spikes (recorded by scripts/nir_peer_fixtures.py in the peers' environment)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.frontend.nir_import import import_nir
from spikeport.ir import Dense, Input, Network, Population, Readout, IF, save
from spikeport.report.neurobench import neurobench_counts

DATA = Path(__file__).parent / "data" / "nir"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = sorted(k for k, v in MANIFEST.items() if "neurobench" in v)


@pytest.mark.parametrize("name", CASES)
def test_counts_equal_neurobench_package(name):
    nb = MANIFEST[name]["neurobench"]
    net = import_nir(DATA / f"{name}.nir", convention="snntorch")
    x = np.load(DATA / f"{name}.npz")["x"].astype(np.float64)
    c = neurobench_counts(net, x, x.shape[1])
    assert c.effective_acs == pytest.approx(nb["Effective_ACs"], rel=1e-12, abs=0)
    assert c.effective_macs == nb["Effective_MACs"] == 0.0
    assert c.dense == nb["Dense"]
    assert c.activation_sparsity == pytest.approx(nb["activation_sparsity"], rel=1e-12)
    assert c.effective_acs > 0


def test_analog_input_counts_as_macs_and_zero_weights_are_skipped():
    net = Network()
    net.add(Input("in", shape=(3,), coding="analog"))
    net.add(Population("h", shape=(2,), neuron=IF(threshold=np.array(1.0))))
    net.add(Dense("d", source="in", target="h", weight=np.array([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]])))
    net.add(Population("o", shape=(1,), neuron=Readout()))
    net.add(Dense("d2", source="h", target="o", weight=np.array([[1.0, -1.0]])))
    net.outputs = ["o"]
    x = np.array([[0.3, 0.0, 0.7]])
    T = 4
    c = neurobench_counts(net, x, T)
    # layer d: inputs (0.3, 0, 0.7) are not in {-1, 0, 1}: MACs; nonzero pairs per step: row 0: 2, row 1: 1
    assert c.effective_macs == 3 * T
    assert c.dense == (6 + 2) * T
    row = {r["layer"]: r for r in c.layers}
    assert row["d2"]["effective_macs"] == 0 and row["d2"]["effective_acs"] >= 0


def test_cli_energy_convention_neurobench(tmp_path):
    name = "snntorch_mlp"
    net = import_nir(DATA / f"{name}.nir", convention="snntorch")
    save(net, tmp_path / "net.h5")
    x = np.load(DATA / f"{name}.npz")["x"]
    np.savez(tmp_path / "d.npz", x=x)
    r = CliRunner().invoke(app, ["energy", str(tmp_path / "net.h5"), "--data", str(tmp_path / "d.npz"), "--timesteps",
                                 str(x.shape[1]), "--convention", "neurobench", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert "NeuroBench" in r.output
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["neurobench"]["Effective_ACs"] == pytest.approx(MANIFEST[name]["neurobench"]["Effective_ACs"])
