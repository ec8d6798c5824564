"""AIF: the signed neuron's closed form, the grid search (vectorised == loop), offset folding, fixed point."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeport import compiler, ir
from spikeport.convert import ConversionError, convert
from spikeport.convert.activations import qcfs_activation
from spikeport.convert.aif import (aif_neuron_spec, boundary_layout, candidate_grids, channel_rows, grid_search,
                                   grid_search_loop)
from spikeport.frontend import load_model
from spikeport.simulator import simulate


def signed_counts(res) -> np.ndarray:
    """Net signed count per AIF neuron (SimResult.spike_counts holds event totals |+1| + |-1|)."""
    return res.spikes["aif"].astype(np.int64).sum(axis=1)


def aif_net(theta: np.ndarray, z: np.ndarray, readout_weight: float = 0.5, in_weight=None) -> ir.Network:
    """Input (n,) -> diagonal Dense (identity by default) -> AIF population (theta, z per neuron) ->
    Dense -> Readout (1,)."""
    n = len(theta)
    net = ir.Network(coding="C1")
    net.add(ir.Input("x", shape=(n,)))
    spec = aif_neuron_spec(np.asarray(theta, float), np.asarray(z, float), -np.asarray(z, float))
    net.add(ir.Population("aif", shape=(n,), neuron=spec.neuron, payload=spec.payload,
                          decode_scale=spec.decode_scale, decode_offset=spec.decode_offset))
    net.add(ir.Dense("x_aif", source="x", target="aif", weight=np.diag(np.ones(n) if in_weight is None else in_weight)))
    net.add(ir.Population("out", shape=(1,), neuron=ir.Readout(), payload=ir.SpikePayload()))
    net.add(ir.Dense("aif_out", source="aif", target="out", weight=np.full((1, n), readout_weight) * theta[None]))
    net.outputs = ["out"]
    net.validate()
    return net


# ---------------------------------------------------------------------- the neuron
@pytest.mark.parametrize("T", [1, 2, 3, 4, 8, 16, 32])
def test_aif_count_closed_form(T):
    """Constant input a: count = clip(floor(T(a - z)/theta), -T, T), exactly, over a grid of a, z, theta."""
    a = np.arange(-48, 49) / 8.0
    grid = [(ai, zi, th) for ai in a for zi in (-1.0, -0.25, 0.0, 0.5, 2.0) for th in (0.25, 0.5, 1.0, 2.0, 4.0)]
    a_, z_, th_ = (np.array(v) for v in zip(*grid))
    res = simulate(aif_net(th_, z_), a_[None], T, record_spikes=True)
    want = np.clip(np.floor(T * (a_ - z_) / th_), -T, T)
    assert np.array_equal(signed_counts(res)[0], want)
    assert np.array_equal(res.spike_counts["aif"][0], np.abs(res.spikes["aif"][0]).sum(0))  # events, both signs
    # decoded activation of the population = (theta/T) * count + z
    np.testing.assert_array_equal(res.outputs[0, 0], np.sum(0.5 * th_ * want) / T)


def test_aif_fixed_point_equals_float_on_grid_inputs():
    """Per-channel power-of-two thresholds, inputs on the 8-bit input grid: loihi2 spike trains are exact.

    Neuron i integrates theta_i * x_i - z_i with z_i = theta_i * k_i / 4: the per-channel threshold is
    folded into per-channel state scales, so every weight row has the same integer mantissa and
    nothing is rounded (a row of 1/theta_i would need odd mantissas, which Loihi's even weights lack).
    """
    rng = np.random.default_rng(0)
    n = 40
    theta = 2.0 ** rng.integers(-1, 3, n)
    z = theta * rng.integers(-4, 5, n) / 4.0
    x = (rng.integers(0, 256, n) / 64.0)[None]
    x[0, 0] = 255 / 64.0  # calibration max: input scale exactly 1/64
    net = aif_net(theta, z, in_weight=theta)
    net.meta["input_range"] = [0.0, 255 / 64.0]
    qnet, _ = compiler.quantize(net, "loihi2")
    for T in (1, 4, 8, 13):
        f, q = simulate(net, x, T, record_spikes=True), simulate(qnet, x, T, record_spikes=True)
        k = qnet["aif"].t_start  # the quantised net is scheduled with the profile's synapse delay
        assert np.array_equal(q.spikes["aif"][:, k:k + T], f.spikes["aif"][:, :T])
        assert (signed_counts(f) < 0).any() and (signed_counts(f) > 0).any()


# ---------------------------------------------------------------------- the grid search
def gaussian_rows(seed: int = 0, c: int = 5, n: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(0, 2, c), rng.uniform(0.2, 2.0, c)
    rows = rng.normal(mu[:, None], sigma[:, None], (c, n))
    rows[-1] = 1.5  # a constant channel
    return rows


def same_result(fast, ref) -> None:
    for key in ("theta", "z", "loss", "mu", "sigma"):
        np.testing.assert_array_equal(getattr(fast, key), getattr(ref, key), err_msg=key)


@pytest.mark.parametrize("search", ["both", "threshold", "offset"])
def test_grid_search_vectorised_equals_loop(search):
    """The closed-form search picks exactly the loop's grid point: theta, z, loss, mu, sigma bit for bit."""
    rows = gaussian_rows()
    kw = dict(n_offset=9, n_threshold=8, search=search, layer_theta=3.0)
    vec = grid_search(rows, 4, **kw)
    same_result(vec, grid_search_loop(rows, 4, **kw))
    tiny = grid_search(rows, 4, chunk_elements=97, **kw)  # chunking over candidates
    same_result(tiny, vec)
    assert vec.z[-1] == (1.5 if search != "threshold" else 0.0) and vec.loss[-1] == 0.0


@pytest.mark.parametrize("T", [1, 4, 8, 16, 32])
def test_grid_search_fast_path_equals_loop_exactly(T):
    """Default grid (41 x 40, the lattice layout), ReLU-like data with ties at 0, lattice values and a
    heavy tail, several T: the closed form over the boundary table ends at the loop's optimum."""
    rng = np.random.default_rng(T)
    relu = np.maximum(rng.normal(0.3, 1.0, (3, 700)), 0.0)
    lattice = rng.integers(0, 6, (2, 700)).astype(float) * 0.25
    tail = rng.standard_cauchy((2, 700))
    rows = np.concatenate([relu, lattice, tail])
    assert boundary_layout("both", 41, 40, T, 41 * 40).lattice
    same_result(grid_search(rows, T), grid_search_loop(rows, T))
    same_result(grid_search(rows, T, chunk_elements=1000), grid_search_loop(rows, T))


@pytest.mark.parametrize("search,n_offset,n_threshold,T", [
    ("both", 41, 40, 4), ("both", 41, 40, 32), ("both", 9, 8, 3), ("both", 1, 5, 7), ("both", 2, 3, 1),
    ("both", 7, 6, 5), ("threshold", 1, 40, 16), ("threshold", 9, 3, 2)])
def test_boundary_layout_rows_are_the_grids_boundaries(search, n_offset, n_threshold, T):
    """Every candidate's boundary z_i + k theta_j / T is the lattice point at row r0 + i a + k j b (up to
    the grid's rounding), and the lattice is no larger than the boundaries it replaces."""
    mu, sigma = torch.tensor([0.37, -2.0], dtype=torch.float64), torch.tensor([1.3, 0.01], dtype=torch.float64)
    z, th = candidate_grids(mu, sigma, n_offset, n_threshold, search)
    m = n_offset * n_threshold if search == "both" else n_threshold
    lay = boundary_layout(search, n_offset, n_threshold, T, m)
    assert lay.lattice and lay.n_i * lay.n_j == m and lay.rows <= m * 2 * T
    origin = mu if search == "both" else torch.zeros_like(mu)
    h = sigma * 6.0 / lay.denom
    for i in range(lay.n_i):
        for j in range(1, lay.n_j + 1):
            for k in range(1 - T, T + 1):
                row = lay.r0 + i * lay.a + k * j * lay.b
                assert 0 <= row < lay.rows
                point = origin + (row + lay.first) * h
                want = z[:, i] + k * th[:, j - 1] / T
                assert torch.allclose(point, want, rtol=0, atol=1e-13 * float((mu.abs() + 12 * sigma).max()))
    assert not boundary_layout("offset", 41, 1, T, 41).lattice


def test_boundary_table_flags_values_on_a_point():
    """A value within rounding of a table point may fall on either side in the loop's float expression:
    the table marks the point (A = 1); elsewhere J counts the values below it exactly."""
    from spikeport.convert.aif import WINDOW_EPS, _boundary_table
    xs = torch.tensor([[-1.0, 0.0, 0.5, 0.5, 2.0, 3.0]], dtype=torch.float64)
    prefix = torch.cat([torch.zeros(1, 1, dtype=torch.float64), torch.cumsum(xs, 1)], 1)
    points = torch.tensor([[-2.0, 0.0, np.nextafter(0.5, 1.0), 0.75, 3.0 - 1e-15, 5.0]], dtype=torch.float64)
    table = _boundary_table(xs, prefix, points, WINDOW_EPS * torch.tensor([8.0], dtype=torch.float64))
    j, rj, p, amb = table.t()
    assert j.tolist() == [0, 1, 2, 4, 5, 6] and rj.tolist() == [0, 1, 4, 12, 20, 30]
    assert amb.tolist() == [0, 1, 1, 0, 1, 0]
    assert p.tolist() == [0.0, -1.0, -1.0, 0.0, 2.0, 5.0]


@pytest.mark.parametrize("T", [3, 6, 12, 24])
def test_grid_search_values_on_level_boundaries_equal_loop(T):
    """Ties of values and boundaries: mu = 0 and sigma = 5 exactly, so the values +-1, +-7 lie exactly on
    lattice points (flagged, re-evaluated by the loop's sum); inputs placed on the loop's own boundary
    values z + k theta / T and one ulp to either side. The optimum equals the loop's bit for bit."""
    from spikeport.convert.aif import WINDOW_EPS, _boundary_table
    rows = np.tile(np.array([-7.0, -1.0, 1.0, 7.0]), (2, 60))
    rows[1] = np.roll(rows[1], 1)
    assert rows.mean(1).tolist() == [0.0, 0.0] and rows.std(1).tolist() == [5.0, 5.0]
    lay = boundary_layout("both", 41, 40, T, 41 * 40)
    xs = torch.as_tensor(np.sort(rows, 1))
    points = (torch.arange(lay.first, lay.first + lay.rows, dtype=torch.float64) * 30.0 / lay.denom)[None].repeat(2, 1)
    prefix = torch.cat([torch.zeros(2, 1, dtype=torch.float64), torch.cumsum(xs, 1)], 1)
    assert _boundary_table(xs, prefix, points, WINDOW_EPS * torch.full((2,), 80.0, dtype=torch.float64))[:, 6:].sum() > 0
    same_result(grid_search(rows, T), grid_search_loop(rows, T))
    rng = np.random.default_rng(T)
    acts = rng.normal(0.5, 1.0, (3, 400))
    z, th = candidate_grids(torch.as_tensor(acts.mean(1)), torch.as_tensor(acts.std(1)), 41, 40, "both")
    i, j, k = rng.integers(0, 41, (3, 400)), rng.integers(0, 40, (3, 400)), rng.integers(1 - T, T + 1, (3, 400))
    b = z.numpy()[np.arange(3)[:, None], i] + k * th.numpy()[np.arange(3)[:, None], j] / T
    inputs = np.where(rng.random((3, 400)) < 0.5, b, np.nextafter(b, np.where(rng.random((3, 400)) < 0.5, -np.inf, np.inf)))
    same_result(grid_search(acts, T, inputs=inputs), grid_search_loop(acts, T, inputs=inputs))


@pytest.mark.parametrize("search,n_offset,T", [("both", 41, 16), ("both", 41, 5), ("both", 1, 8), ("threshold", 1, 16)])
def test_grid_search_loss_ties_pick_the_loops_first(search, n_offset, T):
    """Candidates with bit-identical losses at the optimum: targets +-1 (mu = 0, sigma = 1 exactly),
    integrated inputs within 1e-7 above the centre offset, so every threshold of that offset decodes
    every value to z (and other candidates hit 0 up to rounding): many candidates share the smallest
    loss. The search returns the first of them in the loop's order, like the loop."""
    from spikeport.convert.aif import _exact_error
    rng = np.random.default_rng(T)
    acts = np.tile(np.array([-1.0, 1.0]), (2, 150))
    z, th = candidate_grids(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), n_offset, 40, search)
    base = z.numpy()[:, (n_offset - 1) // 2]
    inputs = base[:, None] + rng.uniform(0.0, 1e-7, (2, 300))
    fast, ref = grid_search(acts, T, n_offset, 40, search, inputs=inputs), grid_search_loop(acts, T, n_offset, 40, search, inputs=inputs)
    same_result(fast, ref)
    for ch in range(2):
        grid = [(zz, tt) for zz in z[ch].tolist() for tt in th[ch].tolist()]
        err = np.array([_exact_error(acts[ch], inputs[ch], zz, tt, float(T)) for zz, tt in grid])
        ties = np.flatnonzero(err == err.min())
        assert ties.size >= 2                                   # a real tie at the optimum
        assert (fast.z[ch], fast.theta[ch]) == grid[ties[0]]    # the first one wins


def test_grid_search_odd_grids_equal_loop():
    """Grid sizes whose lattice is larger than the boundaries (the direct layout), one offset, one threshold,
    T = 1, tiny chunks (one channel, one candidate per block): the loop's optimum every time."""
    rng = np.random.default_rng(5)
    rows = np.concatenate([rng.normal(0.2, 1.0, (2, 150)), np.maximum(rng.normal(0, 1, (2, 150)), 0)])
    for search, mz, mt, T in [("both", 12, 7, 5), ("both", 1, 3, 2), ("both", 2, 1, 1), ("offset", 11, 1, 6),
                              ("threshold", 1, 13, 3), ("both", 41, 40, 7)]:
        lay = boundary_layout(search, mz, mt, T, mz * mt if search != "offset" else mz)
        assert lay.lattice == (search != "offset" and (search, mz, mt) != ("both", 12, 7))
        for chunk in (1, 1 << 18):
            same_result(grid_search(rows, T, mz, mt, search, layer_theta=2.0, chunk_elements=chunk),
                        grid_search_loop(rows, T, mz, mt, search, layer_theta=2.0))


def test_grid_search_with_inputs_equals_loop():
    rows = gaussian_rows(1)
    inputs = rows.copy()
    acts = np.maximum(rows, 0)
    for T in (8, 32):
        same_result(grid_search(acts, T, n_offset=7, n_threshold=6, inputs=inputs),
                    grid_search_loop(acts, T, n_offset=7, n_threshold=6, inputs=inputs))
        same_result(grid_search(acts, T, inputs=inputs), grid_search_loop(acts, T, inputs=inputs))


def test_grid_search_optimum_grows_with_T():
    """methods.md: the optimum theta/sigma grows with T (about 1.7 at T=4, about 3 at T=32..64)."""
    a = np.random.default_rng(0).normal(0.0, 1.0, (1, 20000))
    ratio = {T: float(grid_search(a, T, n_offset=25, n_threshold=60).theta[0]) for T in (4, 32)}
    assert 1.3 <= ratio[4] <= 2.1 and 2.5 <= ratio[32] <= 3.6 and ratio[32] > ratio[4]


# ---------------------------------------------------------------------- conversion
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                      nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                      nn.Linear(16, 3))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_aif_offsets_fold_exactly():
    """With every source at its ANN activation (rate r = (a - z)/theta), each population's current is
    its ANN pre-activation minus its own z: W Theta and W Z (zero padding included) fold exactly."""
    ann = load_model(small_cnn(), input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((16, 1, 8, 8)).astype(np.float32)
    net = convert(ann, x, method="aif", timesteps=4, n_offset=5, n_threshold=4)
    pops = net.populations()
    pre = {p.name: (ann.graph[p.source].inputs[0] if p.name not in net.outputs else p.source) for p in pops}
    acts = ann.record_activations(x, sorted({p.source for p in pops} | set(pre.values())))
    rates = {net.inputs()[0].name: torch.as_tensor(x, dtype=torch.float64)}
    for p in pops:
        if p.name not in net.outputs:
            sh = tuple(p.shape)
            z = ir.expand_channel(np.asarray(p.decode_offset), sh)
            rates[p.name] = torch.as_tensor((acts[p.source] - z) / ir.expand_channel(np.asarray(p.decode_scale), sh))
            assert np.any(z != 0)
    for p in pops:
        total = np.zeros((len(x),) + tuple(p.shape))
        for proj in net.incoming(p.name):
            s, w = rates[proj.source], torch.as_tensor(np.asarray(proj.weight, np.float64))
            if isinstance(proj, ir.Conv2d):
                out = torch.nn.functional.conv2d(s, w, None, proj.stride, proj.padding, proj.dilation, proj.groups)
            else:
                out = s.reshape(len(x), -1) @ w.T
            total += out.numpy().reshape(total.shape)
        total += ir.expand_channel(np.asarray(p.neuron.bias, np.float64), tuple(p.shape))
        own = 0.0 if p.name in net.outputs else ir.expand_channel(np.asarray(p.decode_offset), tuple(p.shape))
        want = acts[pre[p.name]].reshape(total.shape) - own
        np.testing.assert_allclose(total, want, rtol=1e-5, atol=2e-4, err_msg=p.name)


def test_aif_options_and_errors():
    ann = load_model(small_cnn(), input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ConversionError, match="timesteps"):
        convert(ann, x, method="aif")
    with pytest.raises(ConversionError, match="search"):
        convert(ann, x, method="aif", timesteps=4, search="all")
    for search in ("threshold", "offset", "none"):
        net = convert(ann, x, method="aif", timesteps=4, search=search, n_offset=5, n_threshold=4)
        cal = next(iter(net.meta["calibration"].values()))
        assert cal["search"] == search
        pops = [p for p in net.populations() if p.name not in net.outputs]
        if search in ("threshold", "none"):
            assert all(np.all(np.asarray(p.decode_offset) == 0) for p in pops)
        if search in ("offset", "none"):
            assert all(np.unique(np.asarray(p.neuron.threshold)).size == 1 for p in pops)
    qnet, _ = compiler.quantize(net, "loihi2")
    assert simulate(qnet, x, 4).outputs.shape == (8, 3)
    quant = load_model(nn.Sequential(nn.Linear(4, 4), qcfs_activation(4), nn.Linear(4, 2)), input_shape=(4,))
    with pytest.raises(ConversionError, match="qcfs"):
        convert(quant, np.ones((2, 4), np.float32), method="aif", timesteps=4)


def test_channel_rows():
    a = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    rows = channel_rows(a)
    assert rows.shape == (3, 8) and np.array_equal(rows[1], np.concatenate([a[0, 1].ravel(), a[1, 1].ravel()]))
