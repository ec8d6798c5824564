"""compile_warnings: every destroyed-layer rule names the layer, the value and the limit."""
from __future__ import annotations

from spikeport.compiler import compile_warnings
from spikeport.compiler.quant_table import LayerQuant, ProjectionQuant, QuantTable


def _proj(name, *, zeroed=0, n=100, max_mantissa=10, clipped=0, acc_bound=0, acc_limit=0):
    return ProjectionQuant(name=name, source="src", connectivity="dense", weight_exp=0, n_weights=n, clipped=clipped,
                           zeroed=zeroed, max_abs_err=0.0, err_bound=0.0, max_rel_err=0.0, max_mantissa=max_mantissa,
                           acc_bound=acc_bound, acc_limit=acc_limit, n_nonzero=n)


def _layer(name, projections, threshold_mant=None, threshold_rel_err=0.0):
    return LayerQuant(name=name, neuron="IF", shape=(4,), state_scale=1.0, gain=1.0, threshold_mant=threshold_mant,
                      threshold=None, threshold_rel_err=threshold_rel_err, threshold_folded=False, bias_exp=0,
                      bias_mant_max=0, bias_max_rel_err=0.0, floor_comp=0.0, leak_dv=None, limited_by="x",
                      worst_step_current=0.0, steps_to_saturation=None, saturation_risk="none", projections=projections)


def test_rules_and_messages():
    table = QuantTable(profile="p", layers=[
        _layer("fine", [_proj("fine.in0", zeroed=10)], threshold_mant=100, threshold_rel_err=0.01),
        _layer("most", [_proj("most.in0", zeroed=60)]),
        _layer("out", [_proj("out.in0", zeroed=100, max_mantissa=0)]),
        _layer("vth", [_proj("vth.in0")], threshold_mant=3, threshold_rel_err=0.2),
        _layer("wrap", [_proj("wrap.in0", acc_bound=10_987_950, acc_limit=8_388_607, clipped=2)]),
    ])
    ws = compile_warnings(table, outputs=["out"])
    got = {(w.layer, w.what) for w in ws}
    assert got == {("most", "weights zeroed"), ("out", "weights zeroed"), ("out", "constant output"),
                   ("vth", "threshold"), ("wrap", "conv wrap"), ("wrap", "weights clipped")}
    by = {(w.layer, w.what): w for w in ws}
    assert by[("most", "weights zeroed")].value == 0.6 and by[("most", "weights zeroed")].limit == 0.5
    assert "output layer is constant" in str(by[("out", "constant output")])
    assert "20.0%" in str(by[("vth", "threshold")]) and "limit 5%" in str(by[("vth", "threshold")])
    w = by[("wrap", "conv wrap")]
    assert w.value == 10_987_950 and w.limit == 8_388_607 and "8388607" in str(w) and "'wrap'" in str(w)
    assert table.as_dict()["warnings"] == [] and compile_warnings(QuantTable(profile="p")) == []
