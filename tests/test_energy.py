"""Energy report: every figure equals the exact operation counts times the per-op energies."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from spikeport.compiler import quantize
from spikeport.hw_profiles import load_profile
from spikeport.ir import Dense, Input, Network, Population, Readout
from spikeport.report.energy import energy_report, horowitz
from spikeport.simulator.opcount import count_ops
from test_opcount import conv_input, conv_net

torch.set_num_threads(1)


def render(tables) -> str:
    con = Console(width=250, record=True)
    for t in tables:
        con.print(t)
    return con.export_text()


def test_horowitz_conventions_come_from_the_table():
    f = horowitz("fp32")
    assert (f.e_ac, f.e_mac, f.word_bits) == (0.9, 4.6, 32)
    assert (horowitz("int8").e_ac, horowitz("int8").e_mac) == (0.03, pytest.approx(0.23))
    assert (horowitz("int32").e_ac, horowitz("int32").e_mac) == (0.1, pytest.approx(3.2))
    assert horowitz("fp32", 8 * 1024).sram_64b == 10.0 and horowitz("fp32", 20_000).sram_64b == 20.0
    assert horowitz("fp32", 196608).sram_64b == 100.0 and horowitz("fp32", sram_pj_per_64b=5).sram_64b == 5
    with pytest.raises(ValueError, match="fp64"):
        horowitz("fp64")


def test_energy_equals_counts_times_figures():
    # per sample (2 samples): ACs c 6, o 15; events in 1.5, c 5; updates c 24, o 9; active c 5, o 3
    rep = energy_report(conv_net(), conv_input(), 3, "loihi2", ann_macs=1000)
    lay = {le.name: le for le in rep.layers}
    assert lay["c"].acs == 6 and lay["o"].acs == 15 and rep.total("macs") == 0
    assert rep.total("compute_pj") == pytest.approx(21 * 0.9)
    assert rep.total("neuron_pj") == pytest.approx(33 * 0.9)
    # memory: per synaptic op 16-bit weight + 2 x 24-bit accumulator; per update 2 x 64-bit state; 100 pJ / 64 bit
    assert lay["c"].memory_pj == pytest.approx((6 * 16 + 2 * 6 * 24 + 2 * 24 * 64) / 64 * 100.0)
    # loihi2 chip figures: 23.6 pJ per synop, 81 / 52 pJ active / idle update, 1.7 pJ per event
    assert lay["c"].chip_pj == pytest.approx(6 * 23.6 + 5 * 81.0 + 19 * 52.0 + 5 * 1.7)
    assert lay["in"].chip_pj == pytest.approx(1.5 * 1.7)
    assert rep.chip_static_pj is None                          # loihi2 publishes no static power
    assert rep.ann_compute_pj == pytest.approx(4600.0)
    assert rep.ratios()["compute_only"] == pytest.approx(21 * 0.9 / 4600.0) and rep.ratios()["with_memory"] is None
    assert rep.power_w()["compute_only"] == pytest.approx(21 * 0.9e-12 / 3e-3)
    assert rep.total("total_pj") == pytest.approx(rep.total("compute_pj") + rep.total("neuron_pj") + rep.total("memory_pj"))


def test_int8_convention_and_timestep_duration():
    rep = energy_report(conv_net(), conv_input(), 3, "generic45nm", convention="int8", timestep_s=1e-6)
    assert rep.total("compute_pj") == pytest.approx(21 * 0.03)
    assert rep.duration_s == pytest.approx(3e-6)
    with pytest.raises(ValueError, match="timestep_s"):
        energy_report(conv_net(), conv_input(), 3, "generic45nm", timestep_s=0)


def test_spinnaker_static_power_uses_the_placement():
    rep = energy_report(conv_net(), conv_input(), 3, "spinnaker1")
    # two populations -> 2 cores on 1 chip; (0.35 W + 2 x 0.034 W) x 3 ms
    assert rep.chip_static_pj == pytest.approx((0.35 + 2 * 0.034) * 3e-3 * 1e12)
    assert rep.chip_total_pj == pytest.approx(rep.total("chip_pj") + rep.chip_static_pj)


def test_ann_baseline_from_a_mac_count_adds_memory():
    from spikeport.frontend.macs import count_macs
    mc = count_macs(torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)), torch.zeros(1, 16))
    assert mc.total_macs == 16 * 8 + 8 * 3
    rep = energy_report(conv_net(), conv_input(), 3, "generic45nm", ann_macs=mc)
    assert rep.ann_compute_pj == pytest.approx(152 * 4.6)
    # one 32-bit weight + activation read per MAC, one write per output (8 + 3), 1 MB SRAM row
    assert rep.ann_memory_pj == pytest.approx((2 * 152 + 11) * 32 / 64 * 100.0)
    assert rep.ratios()["with_memory"] == pytest.approx(rep.total("total_pj") / (rep.ann_compute_pj + rep.ann_memory_pj))


def test_report_prints_both_totals_and_writes_json_and_plot(tmp_path):
    counts = count_ops(conv_net(), conv_input(), 3)
    rep = energy_report(conv_net(), None, 3, "loihi2", counts=counts, ann_macs=500)
    text = render(rep.tables())
    assert "compute-only" in text and "with memory" in text and "loihi2" in text
    js = json.loads(json.dumps(rep.to_json()))
    assert js["snn"]["compute_only_pj"] == pytest.approx(18.9) and js["snn"]["with_memory_pj"] > js["snn"]["compute_only_pj"]
    assert any("no published per-operation energy" in a for a in js["assumptions"])
    assert js["op_counts"]["total"]["acs"] == 42
    png = rep.plot(tmp_path / "energy.png")
    assert png.stat().st_size > 1000


def test_quantized_network_report():
    net = conv_net()
    net.meta["input_range"] = [0.0, 1.0]
    qnet, _ = quantize(net, load_profile("loihi2"))
    x = conv_input()
    rep = energy_report(qnet, x, 3, "loihi2")
    # quantisation keeps this net's spike trains (exact thresholds), so counts match the float net
    assert rep.total("acs") == 21 and rep.steps_run == 3 + qnet.latency()


def test_cli_energy_and_resources(tmp_path):
    from typer.testing import CliRunner

    from spikeport import ir
    from spikeport.cli import app
    net = conv_net()
    ir.save(net, tmp_path / "net.h5")
    np.savez(tmp_path / "data.npz", x=conv_input())
    runner = CliRunner()
    out = runner.invoke(app, ["energy", str(tmp_path / "net.h5"), "--data", str(tmp_path / "data.npz"), "--timesteps", "3",
                              "--profile", "generic45nm", "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")])
    assert out.exit_code == 0, out.output
    js = json.loads((tmp_path / "e.json").read_text())
    assert js["snn"]["compute_only_pj"] == pytest.approx(21 * 0.9) and js["ann"]["macs"] == 96
    assert (tmp_path / "e.png").is_file()
    out = runner.invoke(app, ["resources", str(tmp_path / "net.h5"), "--profile", "spinnaker1", "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "r.json").read_text())["cores"] == 2
    big = Network()
    big.add(Input("in", shape=(5000,)))
    big.add(Population("fc", shape=(2,), neuron=Readout()))
    big.add(Dense("d", source="in", target="fc", weight=np.zeros((2, 5000))))
    big.outputs = ["fc"]
    ir.save(big, tmp_path / "big.h5")
    out = runner.invoke(app, ["resources", str(tmp_path / "big.h5"), "--profile", "loihi1"])
    assert out.exit_code == 2 and "fan_in_per_core" in out.output and "5000" in out.output
