"""Shared fixtures: the digits data, a small trained digits ResNet and its ONNX / .pt2 files.

Everything is built once per test session (training takes ~2 s on one thread).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spikeport.datasets import load_digits_split
from spikeport.frontend import export_onnx as export_onnx_file
from spikeport.frontend import export_pt2 as export_pt2_file
from spikeport.models import DigitsResNet, train_digits_model


@pytest.fixture(scope="session")
def digits():
    """``(x_train, y_train, x_test, y_test)`` of the 8x8 digits, split seed 0."""
    return load_digits_split(seed=0)


@pytest.fixture(scope="session")
def digits_model(digits):
    """A trained DigitsResNet (conv-BN-ReLU, residual block, AvgPool, 2 FC), eval mode."""
    torch.set_num_threads(1)
    x_train, y_train, _, _ = digits
    return train_digits_model(DigitsResNet(), x_train, y_train, epochs=20, seed=0)


def export_onnx(model: torch.nn.Module, path, input_shape=(1, 8, 8), keep_batchnorm: bool = True,
                opset: int = 17, dynamic_axes: dict | None = None) -> str:
    """``frontend.export_onnx`` (dynamic batch); with ``dynamic_axes`` a raw TorchScript export."""
    example = torch.rand((1,) + tuple(input_shape)).numpy()
    if dynamic_axes is None:
        return str(export_onnx_file(model, path, example, keep_batchnorm=keep_batchnorm, opset=opset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.as_tensor(example),), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes=dynamic_axes)
    return str(path)


def tiny_vit(kind: str, seed: int, tmp_path, **kw):
    """A small random ViT ('vit': timm layout, else nn.TransformerEncoder) via ONNX, its weights
    perturbed beyond the init so every operator sees varied values."""
    from spikeport.frontend import load_model
    from spikeport.models.digits_vit import DigitsTransformerEncoder, DigitsViT
    torch.manual_seed(seed)
    model = (DigitsViT if kind == "vit" else DigitsTransformerEncoder)(**kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return load_model(export_onnx(model, tmp_path / f"{kind}{seed}.onnx"))


def fixed_run_equals_reference(qnet, x, T: int) -> tuple:
    """Bit-accurate operator simulation (two batches) against the plain integer reference: every
    traced node and the readout states equal; returns (the simulation result, the reference's traces)."""
    from spikeport.simulator.reference_operators import run_reference
    from spikeport.simulator.transformer_fixed import simulate_operators_fixed
    trace = {}
    res, _ = simulate_operators_fixed(qnet, x, T, batch_size=2, trace=trace)
    ref, readout = run_reference(qnet, x, T)
    assert set(ref) == set(trace)
    for name in ref:
        np.testing.assert_array_equal(trace[name], ref[name], err_msg=name)
    out = qnet.outputs[0]
    np.testing.assert_array_equal(res.output_states[out], readout[out])
    return res, ref


def export_pt2(model: torch.nn.Module, path, input_shape=(1, 8, 8), dynamic_batch: bool = True) -> str:
    """``frontend.export_pt2`` with a batch-2 example (dynamic batch axis by default)."""
    return str(export_pt2_file(model, path, torch.rand((2,) + tuple(input_shape)).numpy(), dynamic_batch=dynamic_batch))


@pytest.fixture(scope="session")
def digits_onnx(digits_model, tmp_path_factory) -> str:
    """ONNX file (opset 17, BatchNormalization kept) of the trained digits model."""
    return export_onnx(digits_model, tmp_path_factory.mktemp("onnx") / "digits.onnx")


@pytest.fixture(scope="session")
def digits_pt2(digits_model, tmp_path_factory) -> str:
    """``torch.export`` ``.pt2`` file (dynamic batch) of the trained digits model."""
    return export_pt2(digits_model, tmp_path_factory.mktemp("pt2") / "digits.pt2")


@pytest.fixture(scope="session")
def calib_x(digits) -> np.ndarray:
    """500 training images for calibration."""
    return digits[0][:500]
