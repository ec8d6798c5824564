"""Quantisation and scheduling passes: exact representability, error bounds, counts, timing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spikeport.compiler import QuantizationError, quantize, render_quant_table, schedule
from spikeport.hw_profiles import load_profile
from spikeport.ir import (IF, Conv2d, Dense, Identity, Input, Network, Operator, Population, Readout, SpikePayload,
                          expand_channel, load, save)

PROFILES = ["loihi2", "loihi1", "spinnaker1", "spinnaker2", "generic45nm"]


# ----------------------------------------------------------------------------- networks
def conv_net(seed=0, per_channel=False, input_range=(0.0, 1.0)) -> Network:
    """Input (analog) -> Conv2d -> IF -> Dense -> Readout."""
    rng = np.random.default_rng(seed)
    net = Network(meta={"input_range": list(input_range)})
    net.add(Input("x", shape=(2, 6, 6)))
    th = rng.uniform(0.5, 2.0, 4) if per_channel else np.array(1.0)
    net.add(Population("p1", shape=(4, 6, 6), neuron=IF(threshold=th, bias=rng.normal(0, 0.05, 4), v_init=th / 2)))
    net.add(Conv2d("c1", source="x", target="p1", weight=rng.normal(0, 0.3, (4, 2, 3, 3)), padding=(1, 1)))
    net.add(Population("out", shape=(5,), neuron=Readout(bias=rng.normal(0, 0.1, 5))))
    net.add(Dense("d", source="p1", target="out", weight=rng.normal(0, 0.1, (5, 144))))
    net.outputs = ["out"]
    net.validate()
    return net


def residual_net(seed=0) -> Network:
    """x -> c1 -> p1 -> c2 -> p2 -> c3 -> p3 (+ identity skip p1 -> p3) -> d -> out."""
    rng = np.random.default_rng(seed)
    net = Network(meta={"input_range": [0.0, 1.0]})
    net.add(Input("x", shape=(2, 6, 6)))
    net.add(Population("p1", shape=(4, 6, 6), neuron=IF(threshold=np.array(1.0), v_init=np.array(0.5))))
    net.add(Conv2d("c1", source="x", target="p1", weight=rng.normal(0, 0.3, (4, 2, 3, 3)), padding=(1, 1)))
    net.add(Population("p2", shape=(4, 6, 6), neuron=IF(threshold=np.array(1.0))))
    net.add(Conv2d("c2", source="p1", target="p2", weight=rng.normal(0, 0.2, (4, 4, 3, 3)), padding=(1, 1)))
    net.add(Population("p3", shape=(4, 6, 6), neuron=IF(threshold=rng.uniform(0.6, 1.2, 4))))
    net.add(Conv2d("c3", source="p2", target="p3", weight=rng.normal(0, 0.2, (4, 4, 3, 3)), padding=(1, 1)))
    net.add(Identity("skip", source="p1", target="p3", weight=np.array(1.0)))
    net.add(Population("out", shape=(5,), neuron=Readout()))
    net.add(Dense("d", source="p3", target="out", weight=rng.normal(0, 0.1, (5, 144))))
    net.outputs = ["out"]
    net.validate()
    return net


NETS = {"conv": conv_net, "per_channel": lambda: conv_net(1, per_channel=True), "residual": residual_net,
        "signed_input": lambda: conv_net(2, input_range=(-1.0, 0.5))}


def _snapshot(net: Network) -> dict:
    snap = {"meta": json.dumps(net.meta, sort_keys=True), "datapath": net.datapath}
    for node in net.nodes():
        d = {k: (np.asarray(v).copy() if isinstance(v, np.ndarray) else v) for k, v in vars(node).items() if k != "neuron"}
        if hasattr(node, "neuron"):
            d["neuron"] = {k: (None if v is None else np.asarray(v).copy()) for k, v in vars(node.neuron).items()}
        snap[node.name] = d
    return snap


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _float_view(proj, target_shape):
    """weight * 2**weight_exp * scale broadcast to the float weight's layout."""
    w = np.asarray(proj.weight, dtype=np.float64) * 2.0 ** proj.weight_exp
    s = np.asarray(proj.scale, dtype=np.float64)
    if s.ndim == 0:
        return w * s
    if isinstance(proj, Identity):
        return expand_channel(w, target_shape) * expand_channel(s, target_shape)
    return (w.reshape(s.shape[0], -1) * s[:, None]).reshape(w.shape)


# ----------------------------------------------------------------------------- exact representability
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", sorted(NETS))
def test_quantised_values_are_representable(profile, kind):
    net = NETS[kind]()
    qnet, table = quantize(net, profile)
    dp = load_profile(profile).datapath
    assert qnet.datapath == dp and net.datapath is None
    for proj in qnet.projections():
        w = np.asarray(proj.weight)
        assert w.dtype == np.int64
        assert w.min() >= dp.weight_min and w.max() <= dp.weight_max
        assert np.all(w % dp.weight_step == 0)
        assert dp.weight_exp_min <= proj.weight_exp <= dp.weight_exp_max
        # float view within the rounding bound of every (unclipped) float weight
        fw = np.asarray(net[proj.name].weight, dtype=np.float64)
        view = _float_view(proj, qnet.shape_of(proj.target))
        scale = np.asarray(proj.scale, dtype=np.float64)
        bound = dp.weight_step / 2 * 2.0 ** proj.weight_exp * scale.max()
        assert np.abs(expand_channel(fw, view.shape) - view).max() <= bound * (1 + 1e-9)
        # Projection.scale = state_scale_target * 2**act_shift / source unit
        src = qnet[proj.source]
        unit = src.scale if isinstance(src, Input) else 1.0
        tgt_scale = np.asarray(qnet[proj.target].state_scale, dtype=np.float64)
        np.testing.assert_allclose(scale, tgt_scale * 2.0 ** dp.act_shift / unit, rtol=1e-12)
    for pop in qnet.populations():
        row, m, fm = table[pop.name], pop.neuron, net[pop.name].neuron
        s_full = expand_channel(np.asarray(pop.state_scale, dtype=np.float64), tuple(pop.shape))
        bias = expand_channel(np.asarray(m.bias), tuple(pop.shape))
        assert bias.dtype == np.int64
        e = row.bias_exp
        assert dp.bias_exp_min <= e <= dp.bias_exp_max
        assert np.all(bias % 2 ** e == 0) and np.abs(bias // 2 ** e).max() <= dp.bias_max
        fb = expand_channel(np.asarray(fm.bias, dtype=np.float64), tuple(pop.shape))
        assert np.abs(bias * s_full - fb - row.floor_comp * s_full).max() <= (2.0 ** (e - 1)) * s_full.max() * (1 + 1e-9)
        v0 = np.asarray(m.v_init)
        assert v0.dtype == np.int64 and np.abs(v0).max() <= dp.state_max
        if isinstance(m, IF):
            th = int(np.asarray(m.threshold))
            assert np.asarray(m.threshold).ndim == 0 and th % 2 ** dp.vth_shift == 0
            assert 0 < th <= dp.threshold_max << dp.vth_shift
            assert th == row.threshold == row.threshold_mant << dp.vth_shift
            fth = expand_channel(np.asarray(fm.threshold, dtype=np.float64), tuple(pop.shape))
            np.testing.assert_allclose(th * s_full, fth, rtol=1e-12)            # folded exactly
            assert isinstance(m.leak, int) and m.leak == 0
    assert table.layers and all(l.clipped == 0 for l in table.layers)      # default never clips
    json.loads(table.to_json())


def test_input_quantisation_unsigned_and_signed():
    q, t = quantize(conv_net(), "loihi2")
    x = q["x"]
    assert (x.payload.kind, x.payload.bits, x.payload.min_level, x.payload.max_level) == ("graded", 8, 0, 255)
    assert x.scale == pytest.approx(1 / 255) and x.coding == "analog"
    q, t = quantize(conv_net(input_range=(-1.0, 0.5)), "loihi2", input_bits=6)
    x = q["x"]
    assert (x.payload.min_level, x.payload.max_level) == (-32, 31) and x.scale == pytest.approx(1 / 32)
    assert t.inputs[0].signed and t.options["input_bits"] == 6
    q, _ = quantize(conv_net(), "spinnaker1")
    assert q["x"].payload.bits == 16


def test_input_network_is_not_mutated():
    net = residual_net()
    before = _snapshot(net)
    quantize(net, "loihi2")
    schedule(net, 3)
    assert _same(before, _snapshot(net))


def test_per_channel_thresholds_are_folded():
    net = conv_net(1, per_channel=True)
    q, t = quantize(net, "loihi2")
    row, dp = t["p1"], q.datapath
    th = np.asarray(net["p1"].neuron.threshold)
    assert row.threshold_folded and np.asarray(q["p1"].neuron.threshold).ndim == 0
    np.testing.assert_allclose(q["p1"].state_scale, th / (row.threshold_mant << dp.vth_shift), rtol=1e-12)
    # incoming weights divided by each channel's threshold: the per-channel scale carries it
    assert np.asarray(q["c1"].scale).shape == (4,)
    assert not t["out"].threshold_folded
    rows = render_quant_table(t).row_count
    assert rows == sum(max(1, len(l.projections)) for l in t.layers)


def test_threshold_varying_inside_a_channel_is_rejected():
    net = conv_net()
    th = np.ones((4, 6, 6))
    th[0, 0, 0] = 2.0
    net["p1"].neuron.threshold = th
    with pytest.raises(QuantizationError, match=r"'p1'.*threshold varies within a channel"):
        quantize(net, "loihi2")


# ----------------------------------------------------------------------------- counts
def _dense_net(weights: np.ndarray) -> Network:
    net = Network(meta={"input_range": [0.0, 1.0]})
    net.add(Input("x", shape=(weights.shape[1],)))
    net.add(Population("h", shape=(weights.shape[0],), neuron=IF(threshold=np.array(1.0))))
    net.add(Dense("w", source="x", target="h", weight=weights))
    net.add(Population("out", shape=(2,), neuron=Readout()))
    net.add(Dense("r", source="h", target="out", weight=np.ones((2, weights.shape[0]))))
    net.outputs = ["out"]
    return net


@pytest.mark.parametrize("profile", ["loihi2", "spinnaker1", "generic45nm"])
def test_clip_and_zero_counts_match_crafted_weights(profile):
    rng = np.random.default_rng(5)
    w = rng.uniform(0.1, 0.5, (4, 25)) * rng.choice([-1, 1], (4, 25))      # 100 ordinary weights
    flat = w.reshape(-1)
    flat[[3, 40, 77]] = [50.0, -60.0, 70.0]                                # k = 3 outliers
    flat[[5, 12, 60, 99]] = [1e-12, -1e-12, 2e-12, -3e-12]                 # m = 4 vanish
    net = _dense_net(w)
    # 100 nonzero weights: percentile rank 96.01 lies just above the largest ordinary weight (rank 96),
    # so the outliers (ranks 97..99) clip (counted, never silent) and only the 4 tiny weights vanish
    q, t = quantize(net, profile, weight_percentile=96.01 / 99 * 100)
    pq = t["h"].projections[0]
    assert (pq.clipped, pq.zeroed, pq.n_weights) == (3, 4, 100)
    qw = np.asarray(q["w"].weight)
    dp = q.datapath
    assert set(qw.reshape(-1)[[3, 40, 77]]) <= {dp.weight_min, dp.weight_max}
    assert int(((w != 0) & (qw == 0)).sum()) == 4
    assert t.as_dict()["totals"] == {"clipped": 3, "zeroed": 4 + t["out"].zeroed}
    # default: nothing clips, the outliers set the scale and more small weights may vanish
    _, t100 = quantize(net, profile)
    assert t100["h"].projections[0].clipped == 0 and t100["h"].projections[0].zeroed >= 4


def test_zero_count_equals_independent_count_on_random_net():
    net = residual_net(3)
    q, t = quantize(net, "generic45nm")
    for layer in t.layers:
        for pq in layer.projections:
            fw, qw = np.asarray(net[pq.name].weight), np.asarray(q[pq.name].weight)
            qw = expand_channel(qw, fw.shape) if fw.ndim > qw.ndim else qw
            if fw.ndim < qw.ndim:
                fw = np.broadcast_to(fw, qw.shape)
            assert pq.zeroed == int(((fw != 0) & (qw == 0)).sum())


# ----------------------------------------------------------------------------- readout saturation
def test_readout_cannot_saturate_within_max_timesteps():
    net = conv_net()
    for T in (64, 256):
        q, t = quantize(net, "loihi2", max_timesteps=T)
        dp, d, out = q.datapath, q["d"], q["out"]
        w = np.abs(np.asarray(d.weight, dtype=np.float64)) * 2.0 ** (d.weight_exp + dp.act_shift)
        worst = (w.sum(axis=1) + np.abs(np.asarray(out.neuron.bias))).max()   # binary spikes: payload 1
        assert worst * T <= dp.state_max * 1.01
        assert t["out"].steps_to_saturation >= T and t["out"].saturation_risk == "none"


# ----------------------------------------------------------------------------- scheduling
def test_schedule_pads_residual_paths():
    net = residual_net()
    q, _ = quantize(net, "loihi2")                       # synapse_delay 1
    assert {p.name: p.t_start for p in q.populations()} == {"p1": 1, "p2": 2, "p3": 3, "out": 4}
    assert {p.name: p.delay for p in q.projections()} == {"c1": 1, "c2": 1, "c3": 1, "skip": 2, "d": 1}
    assert q.latency() == 4
    s = schedule(net, 2)
    assert {p.name: p.t_start for p in s.populations()} == {"p1": 2, "p2": 4, "p3": 6, "out": 8}
    assert s["skip"].delay == 4 and s["c3"].delay == 2
    z = schedule(net, 0)
    assert all(p.delay == 0 for p in z.projections()) and all(p.t_start == 0 for p in z.populations())
    q0, _ = quantize(net, "generic45nm")                 # no pipeline latency modelled
    assert all(p.delay == 0 for p in q0.projections()) and q0.latency() == 0


def test_quantised_network_saves_and_loads(tmp_path):
    q, _ = quantize(residual_net(), "loihi2")
    save(q, tmp_path / "q.h5")
    back = load(tmp_path / "q.h5")
    assert back.datapath == q.datapath
    for proj in q.projections():
        assert np.array_equal(np.asarray(back[proj.name].weight), np.asarray(proj.weight))
        assert back[proj.name].weight_exp == proj.weight_exp and back[proj.name].delay == proj.delay


# ----------------------------------------------------------------------------- errors
def test_weight_too_large_for_any_threshold_is_rejected():
    net = _dense_net(np.full((3, 4), 1e7))
    with pytest.raises(QuantizationError, match=r"layer 'h'.*projection 'w'.*weight_max 254.*weight_exp_max 7"):
        quantize(net, "loihi2")


def test_payload_wider_than_profile_is_rejected():
    net = residual_net()
    net["p2"].payload = SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1)
    net["p2"].neuron.neg_threshold, net["p2"].neuron.neg_reset = np.array(0.0), np.array(1.0)
    with pytest.raises(QuantizationError, match=r"layer 'p2': payload bits = 2 exceed the profile's payload_bits = 1"):
        quantize(net, "loihi1")
    q, _ = quantize(net, "loihi2")                       # graded payloads fit Loihi 2
    assert int(q["p2"].neuron.neg_reset) == int(q["p2"].neuron.threshold)


def test_other_rejections():
    net = conv_net()
    del net.meta["input_range"]
    with pytest.raises(QuantizationError, match=r"input 'x'.*input_range.*missing"):
        quantize(net, "loihi2")
    q, _ = quantize(net, "loihi2", input_range=(0.0, 2.0))
    assert q["x"].scale == pytest.approx(2 / 255)
    with pytest.raises(QuantizationError, match="already quantised"):
        quantize(q, "loihi2")
    with pytest.raises(QuantizationError, match="input_bits = 20 exceeds"):
        quantize(conv_net(), "loihi1", input_bits=20)
    net = conv_net()
    net["p1"].payload = SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1, neg_value=0.5)
    net["p1"].neuron.neg_threshold, net["p1"].neuron.neg_reset = np.array(0.0), np.array(1.0)
    with pytest.raises(QuantizationError, match=r"'p1': payload neg_value = 0.5 must be an integer"):
        quantize(net, "loihi2")
    net = conv_net()
    net.add(Operator("ec", op="gelu_ec", inputs=("p1",), shape=(4, 6, 6)))
    with pytest.raises(QuantizationError, match=r"operator 'ec'"):
        quantize(net, "loihi2")


def test_leak_becomes_dv():
    net = conv_net()
    net["p1"].neuron.leak = 0.1
    q, t = quantize(net, "loihi2")
    assert q["p1"].neuron.leak == round(0.1 * 4096) == t["p1"].leak_dv


# ----------------------------------------------------------------------------- fidelity (simulator)
@pytest.mark.parametrize("profile", ["loihi2", "spinnaker1"])
@pytest.mark.parametrize("kind", ["conv", "per_channel", "residual"])
def test_fixed_point_outputs_track_float(profile, kind):
    simulator = pytest.importorskip("spikeport.simulator")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    net = NETS[kind]()
    x = np.random.default_rng(7).uniform(0, 1, (8, 2, 6, 6))
    T = 64
    ref = simulator.simulate(net, x, T)
    q, _ = quantize(net, profile)
    got = simulator.simulate(q, x, T)
    span = np.abs(ref.outputs).max()
    assert np.abs(got.outputs - ref.outputs).max() <= 0.05 * span
    assert np.abs(got.outputs - ref.outputs).mean() <= 0.01 * span
    assert got.steps_run == T + q.latency()
    for name, counts in ref.spike_counts.items():
        # spike trains are shifted copies: mean count difference well below one spike per neuron
        assert np.abs(got.spike_counts[name] - counts).mean() <= 0.3
