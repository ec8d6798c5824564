"""Fine-tuning: the deterministic loop, swapping on fx graphs of loaded models, export and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from spikeport.cli import app
from spikeport.convert import convert
from spikeport.convert import qcfs as _qcfs  # noqa: F401  (registers "qcfs")
from spikeport.convert.activations import quant_activations
from spikeport.convert.finetune import FinetuneLog, activation_factory, export_finetuned, finetune, finetune_for_method
from spikeport.frontend import ann_graph as G
from spikeport.frontend import load_model
from spikeport.simulator import simulate


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_finetune_is_deterministic_and_learns(digits):
    torch.set_num_threads(1)
    x, y = digits[0][:300], digits[1][:300]
    logs = [FinetuneLog([], []), FinetuneLog([], [])]
    models = [finetune(tiny(), x, y, epochs=3, lr=1e-2, seed=1, progress=False, log=log) for log in logs]
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    assert logs[0].loss == logs[1].loss and logs[0].loss[-1] < logs[0].loss[0]
    assert not models[0].training


def test_finetune_errors(digits):
    x, y = digits[0][:10], digits[1][:10]
    with pytest.raises(ValueError, match="labels"):
        finetune(tiny(), x, y[:5], epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        finetune(tiny(), x, y, epochs=-1, progress=False)
    with pytest.raises(ValueError, match="no fine-tuning activation"):
        activation_factory("if")


def test_swap_on_loaded_pt2_finetune_export_convert(digits_pt2, digits, tmp_path):
    """A .pt2 (torch.export module, BatchNorm frozen) gets QCFS activations on its fx graph, trains,
    exports with a dynamic batch and converts with --method qcfs; at T = L the SNN equals the QANN
    on constant-in-time (first-layer) inputs up to the later layers' rate error."""
    torch.set_num_threads(1)
    x, y, xt, yt = digits
    ann = load_model(digits_pt2)
    tuned = finetune_for_method(ann.module, "qcfs", x[:400], y[:400], epochs=1, levels=4, progress=False)
    assert len(quant_activations(tuned)) == len(ann.graph.activations())
    path = export_finetuned(tuned, tmp_path / "q.pt2", x[:2])
    q = load_model(path)
    assert q.fixed_batch is None
    acts = q.graph.activations()
    assert acts and all(isinstance(n, G.QuantAct) and (n.min_level, n.max_level) == (0, 4) for n in acts)
    np.testing.assert_allclose(q.forward(xt[:50]), tuned(torch.as_tensor(xt[:50])).detach().numpy(), atol=1e-4)
    net = convert(q, x[:64], method="qcfs")
    assert simulate(net, xt[:50], 4).outputs.shape == (50, 10)


@pytest.mark.slow
def test_cli_finetune_then_convert(digits_onnx, digits, tmp_path):
    x, y = digits[0][:300], digits[1][:300]
    np.savez(tmp_path / "train.npz", x=x, y=y)
    runner = CliRunner()
    r = runner.invoke(app, ["finetune", digits_onnx, "--method", "qcfs", "--train", str(tmp_path / "train.npz"),
                            "--epochs", "1", "--levels", "4", "--out", str(tmp_path / "q.pt2")])
    assert r.exit_code == 0, r.output
    assert "spikeport convert" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "q.pt2"), "--calib", str(tmp_path / "train.npz"),
                            "--method", "qcfs", "--out", str(tmp_path / "net.h5")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["finetune", digits_onnx, "--method", "qcfs", "--train", str(tmp_path / "train.npz"),
                            "--epochs", "1", "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code != 0 and ".pt2" in r.output
