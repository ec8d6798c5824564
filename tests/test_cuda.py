"""CUDA runs give the same answers as CPU runs (skipped where no GPU is present).

The bit-accurate simulator must be exact on either device, so its spikes, states and outputs are
compared with equality for every conversion method's neurons on the digits CNN and on every
arithmetic path. AIF's grid search and NegSpike's differentiable SNN run in float64 on the device
and must pick the same optimum / produce the same spike counts as on CPU.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from spikeport.compiler import quantize
from spikeport.convert import convert
from spikeport.convert.aif import channel_rows, grid_search
from spikeport.frontend import load_model
from spikeport.hw_profiles import load_profile
from spikeport.simulator import simulate

# SPIKEPORT_TEST_DEVICE=cpu runs the same comparisons CPU-vs-CPU (a dry run of this file without a GPU).
DEV = os.environ.get("SPIKEPORT_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEV.startswith("cuda") and not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def digits_ann(digits_model):
    return load_model(digits_model, input_shape=(1, 8, 8))


@pytest.mark.parametrize("method,opts", [("if", {}), ("aif", {"timesteps": 4, "n_offset": 7, "n_threshold": 6})])
@pytest.mark.parametrize("profile", ["loihi2", "spinnaker2"])
def test_bit_accurate_digits_cnn_cuda_equals_cpu(digits_ann, digits, calib_x, method, opts, profile):
    x_test = digits[2][:64]
    qnet, _ = quantize(convert(digits_ann, calib_x, method=method, **opts), load_profile(profile))
    cpu = simulate(qnet, x_test, 12, record_spikes=True, record_states=True, batch_size=32)
    for path in ("auto", "chunked"):
        gpu = simulate(qnet, x_test, 12, record_spikes=True, record_states=True, batch_size=32, device=DEV, path=path)
        for name in cpu.spikes:
            np.testing.assert_array_equal(gpu.spikes[name], cpu.spikes[name], err_msg=f"{name} ({path})")
        for name in cpu.states:
            np.testing.assert_array_equal(gpu.states[name], cpu.states[name], err_msg=f"{name} ({path})")
        np.testing.assert_array_equal(gpu.outputs, cpu.outputs)


def test_negspike_graded_cuda_equals_cpu(digits, calib_x):
    from spikeport.models.digits import digits_leaky_cnn, train_digits_model
    x_train, y_train, x_test, _ = digits
    model = train_digits_model(digits_leaky_cnn(), x_train, y_train, epochs=3, seed=0)
    ann = load_model(model, input_shape=(1, 8, 8))
    qnet, _ = quantize(convert(ann, calib_x, method="negspike"), load_profile("loihi2"))
    cpu = simulate(qnet, x_test[:48], 10, record_spikes=True)
    gpu = simulate(qnet, x_test[:48], 10, record_spikes=True, device=DEV)
    for name in cpu.spikes:
        np.testing.assert_array_equal(gpu.spikes[name], cpu.spikes[name], err_msg=name)
    np.testing.assert_array_equal(gpu.outputs, cpu.outputs)


@pytest.mark.parametrize("search", ["both", "threshold", "offset"])
def test_aif_grid_search_cuda_same_optimum(search):
    rows = channel_rows(np.random.default_rng(3).gamma(2.0, 0.5, (400, 6, 4, 4)).astype(np.float64))
    cpu = grid_search(rows, 8, n_offset=9, n_threshold=11, search=search, layer_theta=1.0)
    gpu = grid_search(rows, 8, n_offset=9, n_threshold=11, search=search, layer_theta=1.0, device=DEV)
    np.testing.assert_array_equal(np.asarray(gpu.theta), np.asarray(cpu.theta))
    np.testing.assert_array_equal(np.asarray(gpu.z), np.asarray(cpu.z))


def test_differentiable_snn_cuda_counts_equal_cpu():
    from spikeport.convert.negspike_calibration import DifferentiableSNN
    from test_negspike_calibration import _random_net   # pytest puts tests/ on sys.path (rootdir-relative imports)
    net = _random_net(0)
    x = torch.as_tensor(np.random.default_rng(7).normal(0, 1.0, (6, 2, 6, 6)))
    cpu = DifferentiableSNN(net)(x, 9)
    gpu = DifferentiableSNN(net, DEV)(x.to(DEV), 9)
    for name, c in cpu.counts.items():
        np.testing.assert_array_equal(gpu.counts[name].cpu().numpy(), c.numpy(), err_msg=name)


# ------------------------------------------------------------------ neuron models and datapath rules added later
from hypothesis import HealthCheck, given, settings  # noqa: E402


from test_conv_wrap import example  # noqa: E402,F401  (fixture: the issue's conv example; a pinned exponent wraps)


def test_conv_wrap_cuda_equals_cpu(example):
    net, x, d = example
    qnet, _ = quantize(net, load_profile(d / "pinned.toml"))
    cpu = simulate(qnet, x, 8, record_spikes=True, record_states=True)
    gpu = simulate(qnet, x, 8, record_spikes=True, record_states=True, device=DEV)
    assert sum(layer["conv_wrap_events"] for layer in cpu.layers.values()) > 0
    for name in cpu.spikes:
        np.testing.assert_array_equal(gpu.spikes[name], cpu.spikes[name], err_msg=name)
    for name in cpu.states:
        np.testing.assert_array_equal(gpu.states[name], cpu.states[name], err_msg=name)
    for name, layer in cpu.layers.items():
        assert gpu.layers[name]["conv_wrap_events"] == layer["conv_wrap_events"], name


def _same_run(net, x, T):
    cpu = simulate(net, x, T, record_spikes=True, record_states=True)
    gpu = simulate(net, x, T, record_spikes=True, record_states=True, device=DEV)
    for name in cpu.spikes:
        np.testing.assert_array_equal(gpu.spikes[name], cpu.spikes[name], err_msg=name)
    for name in cpu.states:
        np.testing.assert_array_equal(gpu.states[name], cpu.states[name], err_msg=name)
    np.testing.assert_array_equal(gpu.outputs, cpu.outputs)


def _cuba_cases():
    from test_cuba import cuba_networks
    return cuba_networks()


def _mbe_cases():
    from test_mbe_neuron import staged_networks
    return staged_networks()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cuba_cases())
def test_cubalif_cuda_equals_cpu(case):
    _same_run(*case)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mbe_cases())
def test_mbe_staged_cuda_equals_cpu(case):
    _same_run(*case)


@pytest.mark.parametrize("reset", ["zero", None])
def test_imported_cubalif_cuda_equals_cpu(reset):
    """CubaLIF kernels (float, and bit-accurate with u carried over steps) on an imported snnTorch NIR file."""
    from pathlib import Path
    from spikeport.frontend.nir_import import import_nir
    data = Path(__file__).parent / "data" / "nir"
    net = import_nir(data / "snntorch_cuba.nir", convention="snntorch", reset=reset)
    x = np.load(data / "snntorch_cuba.npz")["x"].astype(np.float64)
    nets = [net] + ([quantize(net, load_profile("loihi2"))[0]] if reset == "zero" else [])
    for n in nets:
        cpu = simulate(n, x, x.shape[1], record_spikes=True, record_states=True)
        gpu = simulate(n, x, x.shape[1], record_spikes=True, record_states=True, device=DEV)
        for name in cpu.spikes:
            np.testing.assert_array_equal(gpu.spikes[name], cpu.spikes[name], err_msg=name)
        for name in cpu.states:
            np.testing.assert_array_equal(gpu.states[name], cpu.states[name], err_msg=name)
