"""MBE neuron (paper 001, methods.md section 3) and staged coding C3 (methods.md section 0).

The float kernel is checked against the per-step equations written out here; the bit-accurate
kernel against the plain integer reference ``simulator.reference_mbe`` (equality); chains of 2-3
stages against the composition of single-neuron outputs, and D*T steps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeport.compiler.errors import QuantizationError
from spikeport.compiler.quantize_mbe import quantize_mbe
from spikeport.ir import Datapath, Dense, Identity, Input, IRError, Network, Population, Readout, SpikePayload, load, save
from spikeport.ir.neurons_mbe import MBE, MBETable
from spikeport.simulator import simulate
from spikeport.simulator.reference_mbe import reference_staged

torch.set_num_threads(1)


def mbe_equations(m: MBE, x: np.ndarray) -> np.ndarray:
    """f_hat(x) from methods.md section 3, one scalar at a time (loops, no vectorisation)."""
    tau_d, tau_r, tau_V, dt, w = (np.asarray(getattr(m, k), float) for k in ("tau_d", "tau_r", "tau_V", "dt", "w"))
    out = np.zeros(len(x))
    for i, xi in enumerate(x):
        for b in range(w.shape[0]):
            xb = max(xi, 0.0) if b == 0 else max(-xi, 0.0)
            for n in range(w.shape[1]):
                u, o = xb, 0.0
                for t in range(m.timesteps):
                    a = float(m.alpha[b])
                    d = a * np.exp(-t * dt[b, n] / tau_d[b, n])
                    r = a * np.exp(-t * dt[b, n] / tau_r[b, n])
                    V = a * np.exp(-t * dt[b, n] / tau_V[b, n])
                    s = 1.0 if u >= V else 0.0
                    u = u - s * r
                    o = o + s * d
                out[i] += w[b, n] * o
    return out


def random_mbe(rng, B=2, N=3, T=6) -> MBE:
    return MBE(tau_d=rng.uniform(0.5, 3, (B, N)), tau_r=rng.uniform(0.5, 3, (B, N)), tau_V=rng.uniform(0.5, 3, (B, N)),
               dt=rng.uniform(0.3, 1.5, (B, N)), w=rng.normal(0, 1, (B, N)), alpha=rng.uniform(0.5, 2, B), timesteps=T)


def chain(neurons, widths, weights, T, quantized=False, dp=None, biases=None):
    """Input(once) -> MBE stage 0 -> ... (stage k at t_start k*T, delay 0)."""
    net = Network(coding="C3", datapath=dp)
    pl = SpikePayload(kind="graded", bits=8, min_level=-128, max_level=127) if quantized else SpikePayload(kind="analog", bits=32, min_level=0, max_level=0)
    net.add(Input("in", shape=(widths[0],), coding="once", payload=pl))
    src = "in"
    for k, (m, w) in enumerate(zip(neurons, weights)):
        name = f"s{k}"
        payload = SpikePayload(kind="graded", bits=24, min_level=-(2 ** 23), max_level=2 ** 23 - 1) if quantized else SpikePayload()
        net.add(Population(name, shape=(widths[k + 1],), neuron=m, t_start=k * T, payload=payload))
        net.add(Dense(f"p{k}", source=src, target=name, weight=w))
        src = name
    net.outputs = [src]
    return net


# ------------------------------------------------------------------------------------- float
def test_float_kernel_follows_the_equations():
    rng = np.random.default_rng(0)
    for B in (1, 2):
        m = random_mbe(rng, B=B, N=3, T=7)
        x = rng.uniform(-3, 3, 40)
        net = chain([m], [1, 40], [x[:, None]], 7)     # input 1: neuron i receives x_i
        res = simulate(net, np.ones((1, 1)), 7)
        np.testing.assert_allclose(res.outputs[0], mbe_equations(m, x), rtol=0, atol=1e-12)
        if B == 1:
            assert np.all(res.outputs[0][x <= 0] == 0)   # every V > 0: x <= 0 never fires


def test_staged_chain_takes_D_times_T_steps_and_composes():
    rng = np.random.default_rng(1)
    T = 5
    ms = [random_mbe(rng, B=2, N=2, T=T) for _ in range(3)]
    ws = [rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (4, 4)), rng.normal(0, 1, (2, 4))]
    net = chain(ms, [3, 4, 4, 2], ws, T)
    x = rng.normal(0, 1.5, (6, 3))
    res = simulate(net, x, T, record_spikes=True)
    assert res.steps_run == 3 * T
    h = x
    for k, (m, w) in enumerate(zip(ms, ws)):
        pre = h @ w.T
        h = np.stack([mbe_equations(m, row) for row in pre])
        np.testing.assert_allclose(res.activations[f"s{k}"], h, rtol=0, atol=1e-12)
        spk = res.spikes[f"s{k}"]
        active = np.zeros(3 * T, bool)
        active[k * T:(k + 1) * T] = True
        assert not spk[:, ~active].any()           # each stage fires only in its own T steps
    np.testing.assert_allclose(res.outputs, h, rtol=0, atol=1e-12)


def test_stage_with_a_skip_collects_early_input_and_late_input_is_an_error():
    rng = np.random.default_rng(2)
    T = 4
    ms = [random_mbe(rng, B=2, N=2, T=T) for _ in range(3)]
    ws = [rng.normal(0, 1, (3, 3)) for _ in range(3)]
    net = chain(ms, [3, 3, 3, 3], ws, T)
    skip = rng.normal(0, 1, 3)
    net.add(Identity("skip", source="s0", target="s2", weight=skip))   # stage 0 ends before stage 2 starts
    x = rng.normal(0, 1, (4, 3))
    res = simulate(net, x, T)
    h0 = np.stack([mbe_equations(ms[0], r) for r in x @ ws[0].T])
    h1 = np.stack([mbe_equations(ms[1], r) for r in h0 @ ws[1].T])
    h2 = np.stack([mbe_equations(ms[2], r) for r in h1 @ ws[2].T + h0 * skip])
    np.testing.assert_allclose(res.outputs, h2, rtol=0, atol=1e-12)
    net["s2"].t_start = T + 1                        # stage 1 still runs when stage 2 has started
    with pytest.raises(ValueError, match="'s2'.*local step"):
        simulate(net, x, T)


def test_mbe_runs_only_in_staged_coding_and_validates_parameters():
    m = random_mbe(np.random.default_rng(3))
    net = chain([m], [2, 2], [np.eye(2)], m.timesteps)
    net.coding = "C1"
    with pytest.raises(IRError, match="runs in coding C3"):
        net.validate()
    with pytest.raises(ValueError, match="tau_r must be > 0"):
        MBE(tau_r=-np.ones((1, 1))).validate("p", (1,))
    with pytest.raises(ValueError, match=r"expected \(B, N\)"):
        MBE(w=np.ones((3, 2)), tau_d=np.ones((3, 2)), tau_r=np.ones((3, 2)), tau_V=np.ones((3, 2)), dt=np.ones((3, 2)),
            alpha=np.ones(3)).validate("p", (1,))
    with pytest.raises(ValueError, match="threshold must be >= 1"):
        MBETable(threshold=np.zeros((1, 1, 1))).validate("p", (1,))


def test_hdf5_round_trip_float_and_quantised(tmp_path):
    rng = np.random.default_rng(4)
    T = 6
    m = random_mbe(rng, T=T)
    m.function, m.bias = "test", np.array([0.1, -0.2, 0.0])
    net = chain([m], [2, 3], [rng.normal(0, 1, (3, 2))], T)
    back = load(save(net, tmp_path / "f.h5"))
    assert isinstance(back["s0"].neuron, MBE) and back["s0"].neuron.function == "test"
    x = rng.normal(0, 1, (5, 2))
    np.testing.assert_array_equal(simulate(back, x, T).outputs, simulate(net, x, T).outputs)
    q = quantized_chain(rng, T, Datapath())
    qb = load(save(q, tmp_path / "q.h5"))
    assert isinstance(qb["s0"].neuron, MBETable)
    xi = rng.integers(-128, 128, (5, 3)).astype(float)
    np.testing.assert_array_equal(simulate(qb, xi, T).outputs, simulate(q, xi, T).outputs)


# -------------------------------------------------------------------------------- bit-accurate
def quantized_chain(rng, T, dp, stages=2, tmax=400):
    def table(B, N):
        return MBETable(threshold=rng.integers(1, tmax, (B, N, T)), reset=rng.integers(0, tmax, (B, N, T)),
                        intensity=rng.integers(-300, 300, (B, N, T)), bias=np.array(int(rng.integers(-20, 21))))
    widths = [3] + [int(rng.integers(1, 5)) for _ in range(stages)]
    ms = [table(int(rng.integers(1, 3)), int(rng.integers(1, 4))) for _ in range(stages)]
    # even weights within Lava's 8-bit mixed-sign range: valid for Datapath() (weight_step 2), so files load
    ws = [2 * rng.integers(-30, 31, (widths[k + 1], widths[k])).astype(float) for k in range(stages)]
    return chain(ms, widths, ws, T, quantized=True, dp=dp)


@st.composite
def staged_networks(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    T = draw(st.integers(1, 6))
    dp = draw(st.sampled_from([Datapath(), Datapath(state_bits=12, current_bits=11, act_shift=2),
                               Datapath(state_bits=10, state_overflow="wrap", current_bits=9, act_shift=1)]))
    net = quantized_chain(rng, T, dp, stages=draw(st.integers(1, 3)), tmax=draw(st.sampled_from([4, 400, 500])))
    for p in net.projections():
        p.weight_exp = int(draw(st.integers(-3, 1)))
        if draw(st.booleans()) and p.source != "in":
            p.weight = p.weight * 4   # larger currents (still even)
    if draw(st.booleans()):   # a readout accumulates the last stage during its window
        last = net.outputs[0]
        net.add(Population("out", shape=(2,), neuron=Readout(bias=rng.integers(-3, 4, 2), v_init=rng.integers(-5, 6, 2)),
                           t_start=net[last].t_start))
        net.add(Dense("r", source=last, target="out", weight=2 * rng.integers(-2, 3, (2, net[last].size)).astype(float)))
        net.outputs = ["out"]
    x = rng.integers(-128, 128, (4, 3)).astype(float)
    return net, x, T


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(staged_networks())
def test_bit_accurate_mbe_equals_reference(case):
    net, x, T = case
    ref = reference_staged(net, x, T)
    for bs in (1, 4):
        res = simulate(net, x, T, batch_size=bs, record_spikes=True, record_states=True)
        for name, train in ref.spikes.items():
            np.testing.assert_array_equal(res.spikes[name], train, err_msg=name)
            total = ref.values[name].sum(axis=1).astype(np.float64)
            np.testing.assert_array_equal(res.activations[name], total, err_msg=name)
        for name, xv in ref.x.items():
            np.testing.assert_array_equal(res.states[name], xv, err_msg=name)


def test_quantised_tables_track_the_float_neuron():
    rng = np.random.default_rng(5)
    T = 8
    m = random_mbe(rng, B=2, N=4, T=T)
    dp = Datapath()
    s_in, s_out = 2.0 ** -12, 2.0 ** -12
    table, rep = quantize_mbe(m, s_in, s_out, dp, where="p")
    assert rep.reset_err <= s_in / 2 and rep.intensity_err <= s_out / 2
    assert rep.threshold_err <= (s_in if rep.thresholds_raised else s_in / 2)   # tiny thresholds raised to 1
    wq = np.round(np.linspace(-3, 3, 301) / s_in / 64)        # act_shift 6: current = w << 6
    x = wq * 64 * s_in                                         # the inputs the chip sees, exactly
    fl = mbe_equations(m, x)
    net = chain([table], [1, 301], [wq[:, None]], T, quantized=True, dp=dp)
    res = simulate(net, np.ones((1, 1)), T)
    fx = res.activations["s0"][0] * s_out
    # same spikes -> differ by intensity rounding only; spikes differ only near a threshold
    close = np.abs(fx - fl) <= T * 2 * 4 * s_out / 2
    assert close.mean() > 0.95, close.mean()
    with pytest.raises(QuantizationError, match="intensity"):
        quantize_mbe(m, s_in, 2.0 ** -30, dp, where="p")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mbe_kernels_on_cuda_equal_cpu():
    rng = np.random.default_rng(6)
    T = 5
    q = quantized_chain(rng, T, Datapath(), stages=3)
    xi = rng.integers(-128, 128, (6, 3)).astype(float)
    a, b = simulate(q, xi, T, record_spikes=True), simulate(q, xi, T, record_spikes=True, device="cuda")
    for name in a.spikes:
        np.testing.assert_array_equal(a.spikes[name], b.spikes[name])
    np.testing.assert_array_equal(a.outputs, b.outputs)
    ms = [random_mbe(rng, T=T) for _ in range(2)]
    f = chain(ms, [3, 4, 2], [rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (2, 4))], T)
    x = rng.normal(0, 1, (6, 3))
    np.testing.assert_allclose(simulate(f, x, T).outputs, simulate(f, x, T, device="cuda").outputs, rtol=0, atol=1e-12)
