"""MBE fitting, the fit file format, the shipped fits and the closed-form properties of paper 001.

Must-show item of issue 11 covered here: the binary code with tau = dt/ln2 (error < alpha*2^(1-T)).
The properties that need the shipped fits are in test_mbe_shipped.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeport.convert.mbe_fit import MBEFit, fit_mbe
from spikeport.convert.mbe_ops import mbe_spikes
from spikeport.convert.mbe_params import MBEFitError, default_fit, fit_to_dict, load_fit, save_fit
from spikeport.ir import Dense, Input, Network, Population
from spikeport.simulator import simulate

torch.set_num_threads(1)
LN2 = math.log(2.0)


def simulate_fit(fit: MBEFit, x: np.ndarray, scale: float = 1.0):
    """One float MBE population whose neuron i receives x[i] (staged coding, one stage)."""
    net = Network(coding="C3")
    net.add(Input("in", shape=(1,), coding="once"))
    net.add(Population("p", shape=(len(x),), neuron=fit.neuron(scale=scale)))
    net.add(Dense("w", source="in", target="p", weight=np.asarray(x, dtype=np.float64)[:, None]))
    net.outputs = ["p"]
    return simulate(net, np.ones((1, 1)), fit.timesteps)


def binary_fit(T: int, alpha: float = 1.0) -> MBEFit:
    """A signed identity with tau = dt/ln 2: every kernel halves per step (few-spikes binary code)."""
    ones = np.ones((2, 1))
    return MBEFit(function="identity", domain=(-1.0, 1.0), offset=0.0, shift=0.0, bases=1, timesteps=T, decay=True,
                  alpha=np.array([alpha, alpha]), odd=True, tau_d=ones / LN2, tau_r=ones / LN2, tau_V=ones / LN2,
                  dt=ones.copy(), w=np.array([[1.0], [-1.0]]), seed=0, samples=0, epochs=0, lr=0.0, lr_decay=1.0,
                  batch_size=1, mse=0.0, max_abs_err=0.0)


# ------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("T", [4, 8, 16])
def test_binary_code_with_tau_dt_over_ln2(T):
    alpha = 2.0
    fit = binary_fit(T, alpha)
    rng = np.random.default_rng(T)
    x = np.concatenate([rng.uniform(0, 2 * alpha * (1 - 2.0 ** -T), 2000), np.linspace(0, 2 * alpha, 257)[:-1] + 1e-9])
    s, _ = mbe_spikes(fit, torch.as_tensor(x), scale=1.0)
    bits = s.reshape(len(x), 2, 1, T)[:, 0, 0, :].numpy()
    lsb = alpha * 2.0 ** (1 - T)
    q = np.floor(x / lsb).astype(np.int64)
    want = np.array([[(v >> (T - 1 - t)) & 1 for t in range(T)] for v in q])
    np.testing.assert_array_equal(bits, want)               # the spikes are the binary digits of x
    res = simulate_fit(fit, x)
    err = x - res.outputs[0]
    assert np.all(err >= 0) and np.all(err < lsb)           # error < alpha * 2^(1-T)
    res_neg = simulate_fit(fit, -x)
    assert np.all(np.abs(-x - res_neg.outputs[0]) < lsb)    # the relu(-x) branch mirrors it


# --------------------------------------------------------------------------------- fitting
def test_fit_is_deterministic_given_a_seed(tmp_path):
    a = fit_mbe("gelu", 2, 6, seed=3, samples=400, epochs=2, batch_size=200)
    b = fit_mbe("gelu", 2, 6, seed=3, samples=400, epochs=2, batch_size=200)
    c = fit_mbe("gelu", 2, 6, seed=4, samples=400, epochs=2, batch_size=200)
    for k in ("tau_d", "tau_r", "tau_V", "dt", "w", "alpha"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.w, c.w)
    pa, pb = save_fit(a, tmp_path / "a.json"), save_fit(b, tmp_path / "b.json")
    assert pa.read_bytes() == pb.read_bytes()
    back = load_fit(pa)
    for k in ("tau_d", "tau_r", "tau_V", "dt", "w", "alpha"):
        np.testing.assert_array_equal(getattr(back, k), getattr(a, k))   # floats survive JSON bit for bit


def _grads(outputs, leaves, x, y):
    for v in leaves.values():
        v.grad = None
    q = {k: (v.exp() if k != "w" else v) for k, v in leaves.items()}
    loss = torch.mean(((outputs(q) * q["w"]).sum(dim=(-2, -1)) - y) ** 2)
    loss.backward()
    return [loss.detach()] + [v.grad for v in leaves.values()]


@pytest.mark.parametrize("T,B,N,M", [(1, 2, 4, 300), (2, 1, 8, 1), (5, 2, 3, 257), (16, 1, 8, 500), (40, 2, 4, 64)])
def test_fused_spike_loop_gradients_equal_the_step_by_step_graph(T, B, N, M):
    """The fitter's fused loop (``_SpikeLoop``) gives the very bits autograd gives through one ``_Spike``
    node per step, loss and every parameter's gradient, including kernels that underflow to 0 (nan/inf
    gradients where the step graph has them) and T = 1 (no reset reaches the output: no gradient)."""
    from spikeport.convert import mbe_fit as F
    g = torch.Generator().manual_seed(T * 100 + M)
    leaves = {k: torch.nn.Parameter((0.3 + 0.4 * torch.randn(B, N, generator=g)).float()) for k in ("tau_d", "tau_r", "tau_V")}
    leaves["dt"] = torch.nn.Parameter((0.3 * torch.randn(B, N, generator=g)).float())
    leaves["w"] = torch.nn.Parameter(torch.randn(B, N, generator=g).float())
    alpha = (torch.rand(B, generator=g) * 3 + 0.1).float()
    x, y = (torch.rand(M, generator=g) * 4 - 2).float(), torch.randn(M, generator=g).float()
    fused = _grads(lambda q: F._basis_outputs(x, q, alpha, T, True, True), leaves, x, y)
    step = _grads(lambda q: F._basis_outputs_stepwise(x, q, alpha, T, True), leaves, x, y)
    for a, b in zip(fused, step):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])
    assert (fused[2] is None) == (T == 1)                       # tau_r: R_0 never reaches the output at T = 1


def test_fused_fit_equals_the_step_by_step_fit_file(tmp_path, monkeypatch):
    """Same seed, same file, whether the fit runs the fused loop or the step-by-step graph."""
    from spikeport.convert import mbe_fit as F
    kw = dict(seed=2, samples=300, epochs=3, batch_size=100)
    fused = save_fit(fit_mbe("gelu", 2, 7, **kw), tmp_path / "fused.json").read_bytes()
    plain = F._basis_outputs

    def stepwise(x, p, alpha, T, decay, surrogate):
        return F._basis_outputs_stepwise(x, p, alpha, T, decay) if surrogate else plain(x, p, alpha, T, decay, False)
    monkeypatch.setattr(F, "_basis_outputs", stepwise)
    assert save_fit(fit_mbe("gelu", 2, 7, **kw), tmp_path / "step.json").read_bytes() == fused


def test_loader_names_file_field_and_value(tmp_path):
    fit = fit_mbe("identity", 2, 4, seed=0, samples=200, epochs=1, batch_size=200)
    good = fit_to_dict(fit)

    def broken(mutate, match):
        d = json.loads(json.dumps(good))
        mutate(d)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(d))
        with pytest.raises(MBEFitError, match=match):
            load_fit(path)

    broken(lambda d: d.update(version=2), r"bad.json: field 'version': 2 is not supported")
    broken(lambda d: d.update(format="x"), r"field 'format'")
    broken(lambda d: d["branches"][1].update(tau_r=[1.0, -0.5]), r"field 'branches\[1\].tau_r\[1\]': -0.5 must be > 0")
    broken(lambda d: d["branches"][0].update(w=[1.0]), r"'branches\[0\].w': has 1 values, bases = 2")
    broken(lambda d: d.update(branches=d["branches"][:1]), r"needs 2")
    broken(lambda d: d.pop("timesteps"), r"field 'timesteps': missing")
    broken(lambda d: d.update(function="relu"), r"field 'function': 'relu' is not one of")
    (tmp_path / "nan.json").write_text(json.dumps(good).replace(str(good["branches"][0]["w"][0]), "NaN", 1))
    with pytest.raises(MBEFitError, match="nan.json: not valid JSON"):
        load_fit(tmp_path / "nan.json")
    with pytest.raises(MBEFitError, match="no such file"):
        load_fit(tmp_path / "missing.json")
    with pytest.raises(MBEFitError, match="no shipped MBE fit for gelu with N=3"):
        default_fit("gelu", 3)


def test_mbe_fit_command_writes_a_loadable_file(tmp_path):
    from typer.testing import CliRunner

    from spikeport.cli import app
    out = tmp_path / "f.json"
    r = CliRunner().invoke(app, ["mbe-fit", "--function", "tanh", "--bases", "2", "--timesteps", "6", "--seed", "1",
                                 "--out", str(out), "--samples", "300", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    fit = load_fit(out)
    assert (fit.function, fit.bases, fit.timesteps, fit.seed) == ("tanh", 2, 6, 1)
    r = CliRunner().invoke(app, ["mbe-fit", "--function", "relu", "--out", str(out)])
    assert r.exit_code == 2 and "'relu'" in r.output




# ---------------------------------------------------------------------------------- fuzzing the fit-file loader
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.floats(allow_nan=False),
                       st.text(max_size=8))
_JSON = st.recursive(_JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                     max_leaves=8)


def _paths(node, prefix=()):
    """Every (container, key) in a parsed JSON document, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fit_loader_fuzz_loads_or_names_the_file(tmp_path, data):
    """`--opt gelu_fit=FILE` reads user files: a mutated fit file (a value replaced or removed, or its
    bytes cut or flipped) either loads into a usable fit or raises MBEFitError naming the file; never
    another exception."""
    good = fit_to_dict(default_fit("gelu"))
    doc = json.loads(json.dumps(good))
    kind = data.draw(st.sampled_from(["replace", "remove", "bytes"]))
    if kind == "bytes":
        raw = bytearray(json.dumps(doc).encode())
        cut = data.draw(st.integers(0, len(raw)))
        pos = data.draw(st.integers(0, max(cut - 1, 0)))
        raw = raw[:cut]
        if raw:
            raw[pos] = data.draw(st.integers(0, 255))
        text = bytes(raw)
    else:
        path = data.draw(st.sampled_from(list(_paths(doc))))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if kind == "replace":
            parent[path[-1]] = data.draw(_JSON)
        else:
            del parent[path[-1]]
        text = json.dumps(doc).encode()
    f = tmp_path / "fuzzed.json"
    f.write_bytes(text)
    try:
        fit = load_fit(f)
    except MBEFitError as e:
        assert "fuzzed.json" in str(e)
        return
    assert fit.function in ("gelu", "tanh", "identity", "exp2", "reciprocal", "invsqrt")
    assert all(np.all(np.isfinite(getattr(fit, k))) for k in ("tau_d", "tau_r", "tau_V", "dt", "w", "alpha"))
    fit(np.linspace(fit.domain[0], fit.domain[1], 7))          # evaluates without raising
    if fit.decay:
        fit.neuron()                                             # and becomes an IR neuron
