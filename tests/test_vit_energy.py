"""Energy of ECMT ViTs: synaptic events at E_AC / E_MAC plus operator arithmetic by kind, next to the
papers' operators-as-zero convention (report/energy.py, report/operator_energy.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport import ir
from spikeport.cli import app
from spikeport.errors import EXIT_USER, UnsupportedError
from spikeport.report.energy import energy_report
from spikeport.report.operator_energy import RECIPES, kind_energies
from spikeport.simulator.operator_work import OP_KINDS

from conftest import export_onnx


@pytest.fixture(scope="module")
def vit(digits, tmp_path_factory):
    from spikeport.convert import convert
    from spikeport.frontend import load_model
    from spikeport.models.digits_vit import pretrained_digits_vit
    x_train, _, x_test, y_test = digits
    folder = tmp_path_factory.mktemp("vit_energy")
    ann = load_model(export_onnx(pretrained_digits_vit("vit"), folder / "vit.onnx"))
    net = convert(ann, x_train[:300], "ecmt")
    ir.save(net, folder / "net.h5")
    np.savez(folder / "test.npz", x=x_test[:8].astype(np.float32), y=y_test[:8])
    return net, x_test[:8], folder


def test_kind_energies_are_horowitz_and_the_stated_recipes():
    f, i = kind_energies("float32"), kind_energies("fixed")
    assert (f["ac"], f["add"], f["mul"], f["mac"]) == (0.9, 0.9, 3.7, 3.7 + 0.9)
    assert (i["ac"], i["add"], i["mul"]) == (0.1, 0.1, 3.1)
    for kind, r in RECIPES.items():
        assert f[kind] == r["mul"] * 3.7 + r["add"] * 0.9 and i[kind] == r["mul"] * 3.1 + r["add"] * 0.1
    assert RECIPES == {"div": {"mul": 5, "add": 2}, "sqrt": {"mul": 7, "add": 2}, "exp": {"mul": 6, "add": 7}}
    assert set(kind_energies("none").values()) == {0.0}


def test_vit_energy_counts_operators_next_to_the_papers_convention(vit):
    net, x, _ = vit
    from spikeport.simulator.opcount import ann_equivalent_macs
    rep = energy_report(net, x, 4, "loihi2", ann_macs=ann_equivalent_macs(net))
    c = rep.counts
    n = c.samples
    # papers' convention: synaptic ACs x E_AC + MACs x E_MAC, operators as zero
    assert rep.total("compute_pj") == pytest.approx((c.total("acs") * 0.9 + c.total("macs") * 4.6) / n, rel=1e-12)
    # operators: per-kind counts x per-kind energy in each operator's arithmetic
    want = sum(op.total(k) / n * kind_energies(op.arithmetic)[k] for op in c.operators.values() for k in OP_KINDS)
    assert rep.operator_pj == pytest.approx(want, rel=1e-12) and rep.operator_pj > 0
    assert c.operator_total("exp") == 4 * n * (2 * 2 * 17 * 17 + 2 * 17 * 64)   # softmax + GELU exps, every step
    assert c.operator_total("sqrt") == 4 * n * 5 * 17                            # 5 LayerNorms, one per token
    r = rep.ratios()
    assert r["compute_with_operators"] > r["compute_only"] > 0
    doc = rep.to_json()
    ops = doc["operators"]
    assert ops["snn_compute_with_operators_pj"] == pytest.approx(rep.total("compute_pj") + rep.operator_pj)
    assert ops["ann_operator_pj"] > 0 and {o["op"] for o in ops["by_operator"]} >= {"LayerNormEC", "GELUEC",
                                                                                      "SoftmaxEC", "MatMulEC"}
    assert any("5 mul + 2 add" in a for a in rep.assumptions)
    assert any("operators count as zero" in a for a in rep.assumptions)


def test_cli_energy_on_an_ecmt_vit_and_the_neurobench_refusal(vit, tmp_path):
    net, _, folder = vit
    runner = CliRunner()
    out = tmp_path / "e.json"
    res = runner.invoke(app, ["energy", str(folder / "net.h5"), "--data", str(folder / "test.npz"), "--timesteps", "3",
                              "--profile", "loihi2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "operators as 0" in res.output and "operators' arithmetic" in res.output
    doc = json.loads(out.read_text())
    assert doc["operators"]["per_sample_work"]["exp"] > 0 and doc["ratio_snn_over_ann"]["compute_with_operators"] > 0
    bad = tmp_path / "nb.json"
    res = runner.invoke(app, ["energy", str(folder / "net.h5"), "--data", str(folder / "test.npz"), "--timesteps", "3",
                              "--profile", "loihi2", "--convention", "neurobench", "--json", str(bad)])
    first = net.operators()[0]
    assert res.exit_code == EXIT_USER and "neurobench" in res.output
    assert f"operator {first.name!r} ({type(first).__name__})" in res.output and "Traceback" not in res.output
    assert not bad.exists()


def test_neurobench_counts_refuse_operator_networks_by_name(vit):
    from spikeport.report.neurobench import neurobench_counts
    net, x, _ = vit
    with pytest.raises(UnsupportedError, match="has no NeuroBench counting rule"):
        neurobench_counts(net, x, 2)



def test_quantised_vit_energy_prices_fixed_point_operators(vit):
    """The loihi2-compiled ViT: the bit-accurate run's MT events are counted like the float run's,
    and its operators (arithmetic 'fixed') are priced at Horowitz's int32 figures."""
    from spikeport import compiler
    from spikeport.hw_profiles import load_profile
    from spikeport.simulator.opcount import ann_equivalent_macs
    net, x, _ = vit
    qnet, _ = compiler.quantize(net, load_profile("loihi2"))
    rep = energy_report(qnet, x, 3, "loihi2", ann_macs=ann_equivalent_macs(net))
    c = rep.counts
    arith = {op.arithmetic for op in c.operators.values()}
    assert arith <= {"fixed", "none"} and "fixed" in arith
    fixed = kind_energies("fixed")
    want = sum(op.total(k) / c.samples * fixed[k] for op in c.operators.values() if op.arithmetic == "fixed"
               for k in OP_KINDS)
    assert rep.operator_pj == pytest.approx(want, rel=1e-12) and rep.operator_pj > 0
    assert c.operator_total("exp") == 3 * c.samples * (2 * 2 * 17 * 17 + 2 * 17 * 64)
    token = [p for p in c.projections.values() if p.op == "ac" and p.connectivity == "token_dense"]
    assert len(token) == 8 and all(int(p.synops.sum()) > 0 for p in token)
