"""Frontend: ONNX / .pt2 / nn.Module load to one AnnModel with the same outputs; clear errors."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from torch import nn

from spikeport.datasets import load_digits_split, load_npz
from spikeport.frontend import UnsupportedOpError, load_model
from spikeport.frontend import ann_graph as G
from spikeport.frontend.onnx_import import NO_TORCHVISION, import_onnx2torch
from spikeport.models import digits_leaky_cnn

from conftest import export_onnx, export_pt2


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def ops(ann):
    return [n.op for n in ann.graph]


# ---------------------------------------------------------------------- the three sources
def test_onnx_pt2_module_give_the_same_outputs(digits, digits_model, digits_onnx, digits_pt2):
    x = digits[2][:300]
    ref = torch_out(digits_model, x)
    for source in (digits_onnx, digits_pt2, digits_model):
        ann = load_model(source, input_shape=(1, 8, 8) if isinstance(source, nn.Module) else None)
        assert ann.input_shape == (1, 8, 8)
        np.testing.assert_allclose(ann.forward(x), ref, rtol=1e-5, atol=1e-5)
        assert ann.evaluate(x, digits[3][:300])["accuracy"] == np.mean(ref.argmax(1) == digits[3][:300])
        assert ops(ann) == ["Input", "Conv2d", "BatchNorm", "ReLU", "Conv2d", "BatchNorm", "ReLU", "Conv2d", "BatchNorm",
                            "Add", "ReLU", "AvgPool", "Flatten", "Linear", "ReLU", "Linear", "Output"]
        assert ann.graph.output.shape == (10,)


def test_graph_parameters_match_the_module(digits_model, digits_onnx):
    ann = load_model(digits_onnx)
    convs = [n for n in ann.graph if isinstance(n, G.Conv2d)]
    bns = [n for n in ann.graph if isinstance(n, G.BatchNorm)]
    np.testing.assert_array_equal(convs[1].weight, digits_model.conv2.weight.detach().numpy())
    np.testing.assert_array_equal(bns[2].var, digits_model.bn3.running_var.numpy())
    assert convs[0].padding == (1, 1) and convs[0].stride == (1, 1)
    pool = next(n for n in ann.graph if isinstance(n, G.AvgPool))
    assert pool.kernel == (2, 2) and pool.stride == (2, 2) and pool.shape == (8, 4, 4)
    add = next(n for n in ann.graph if isinstance(n, G.Add))
    assert len(add.inputs) == 2 and ann.graph[add.inputs[1]].op == "ReLU"


def test_onnx_default_opset_with_fused_batchnorm(digits, digits_model, tmp_path):
    path = export_onnx(digits_model, tmp_path / "fused.onnx", keep_batchnorm=False, opset=20)
    ann = load_model(path)
    x = digits[2][:50]
    np.testing.assert_allclose(ann.forward(x), torch_out(digits_model, x), rtol=1e-4, atol=1e-4)
    assert "BatchNorm" not in ops(ann)


def test_pt2_with_static_batch_pads_batches(digits, digits_model, tmp_path):
    path = export_pt2(digits_model, tmp_path / "static.pt2", dynamic_batch=False)
    ann = load_model(path)
    assert ann.fixed_batch == 2
    x = digits[2][:7]  # odd count: last batch is padded and trimmed
    np.testing.assert_allclose(ann.forward(x), torch_out(digits_model, x), rtol=1e-5, atol=1e-5)


def test_record_activations_match_module_internals(digits, digits_model, digits_pt2):
    ann = load_model(digits_pt2)
    x = digits[2][:20]
    relus = [n.name for n in ann.graph.activations()]
    acts = ann.record_activations(x, relus, batch_size=7)
    m = digits_model
    with torch.no_grad():
        first = torch.relu(m.bn1(m.conv1(torch.as_tensor(x)))).numpy()
    np.testing.assert_allclose(acts[relus[0]], first, rtol=1e-5, atol=1e-6)
    assert acts[relus[-1]].shape == (20, 32)
    with pytest.raises(KeyError, match="no node named 'nope'"):
        ann.record_activations(x, ["nope"])


# ---------------------------------------------------------------------- unsupported ops
class SigmoidInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gate = nn.Sigmoid()
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.gate(self.conv(x)), 1))


class SoftmaxInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.softmax(self.fc1(x.flatten(1)), dim=1))


def test_sigmoid_in_the_middle_is_rejected_by_name():
    with pytest.raises(UnsupportedOpError, match=r"node 'gate': op Sigmoid .*Supported ops: Conv2d"):
        load_model(SigmoidInside(), input_shape=(1, 8, 8))


def test_softmax_in_onnx_and_pt2_loads_as_a_typed_op(tmp_path):
    """Softmax is a typed ANN op (Transformers); the IF-style lowering refuses it by node name."""
    from spikeport.convert import convert
    from spikeport.convert.lower import ConversionError

    model = SoftmaxInside().eval()
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    for path in (export_onnx(model, tmp_path / "softmax.onnx"), export_pt2(model, tmp_path / "softmax.pt2")):
        ann = load_model(path)
        assert "Softmax" in ops(ann)
        np.testing.assert_allclose(ann.forward(x), torch_out(model, x), rtol=1e-5, atol=1e-6)
        with pytest.raises(ConversionError, match=r"node '.*' \(Softmax\): no lowering rule"):
            convert(ann, x, "if")


def test_reshape_that_is_not_a_flatten_is_a_typed_reshape():
    class Regrid(nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 4, 16).flatten(1)

    ann = load_model(Regrid(), input_shape=(1, 8, 8))
    assert ops(ann) == ["Input", "Reshape", "Flatten", "Output"]
    assert ann.graph.nodes[ops(ann) and list(ann.graph.nodes)[1]].shape == (4, 16)


def test_constant_add_and_two_outputs_are_rejected():
    class PlusOne(nn.Module):
        def forward(self, x):
            return x.flatten(1) + 1.0

    class Two(nn.Module):
        def forward(self, x):
            return x.flatten(1), x.flatten(1)

    plus = load_model(PlusOne(), input_shape=(1, 8, 8))  # a constant add is an AddConst (position embedding)
    assert ops(plus) == ["Input", "Flatten", "AddConst", "Output"]
    with pytest.raises(UnsupportedOpError, match="2 outputs"):
        load_model(Two(), input_shape=(1, 8, 8))


def test_maxpool_loads_and_can_be_replaced():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)).eval()
    kept = load_model(model, input_shape=(1, 8, 8))
    assert "MaxPool" in ops(kept)
    avg = load_model(model, input_shape=(1, 8, 8), maxpool="avg")
    assert "MaxPool" not in ops(avg) and avg.replaced and "replaced by AvgPool" in avg.replaced[0]
    pool = next(n for n in avg.graph if isinstance(n, G.AvgPool))
    assert pool.replaced == "MaxPool" and pool.kernel == (2, 2)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    expect = nn.Sequential(model[0], model[1], nn.AvgPool2d(2), model[3], model[4])
    np.testing.assert_allclose(avg.forward(x), torch_out(expect, x), rtol=1e-6, atol=1e-6)


def test_leaky_concat_gap_dropout_are_normalised():
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 3, 3, padding=1)
            self.b = nn.Conv2d(1, 2, 1)
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(5, 10)

        def forward(self, x):
            h = torch.cat([nn.functional.leaky_relu(self.a(x), 0.2), torch.relu(self.b(x))], dim=1)
            return self.fc(self.drop(h.mean(dim=(2, 3))))

    ann = load_model(Mix(), input_shape=(1, 8, 8))
    nodes = {n.op: n for n in ann.graph}
    assert nodes["LeakyReLU"].slope == pytest.approx(0.2)
    assert nodes["Concat"].axis == 0 and nodes["Concat"].shape == (5, 8, 8)
    assert nodes["GlobalAvgPool"].keepdim is False and nodes["GlobalAvgPool"].shape == (5,)
    assert "Identity" in nodes
    assert "LeakyReLU" in ops(load_model(digits_leaky_cnn(), input_shape=(1, 8, 8)))


# ---------------------------------------------------------------------- file errors
def test_file_errors_name_the_file(tmp_path, digits_model):
    with pytest.raises(ValueError, match=r"missing\.onnx: no such file"):
        load_model(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not a protobuf model")
    with pytest.raises(ValueError, match=r"junk\.onnx: not an ONNX model"):
        load_model(junk)
    bad_pt2 = tmp_path / "junk.pt2"
    bad_pt2.write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"junk\.pt2: not a torch.export program"):
        load_model(bad_pt2)
    with pytest.raises(ValueError, match=r"model\.h5: unknown model file type"):
        load_model(tmp_path / "model.h5")
    with pytest.raises(ValueError, match="input_shape .* is required"):
        load_model(digits_model)


def test_dynamic_onnx_needs_input_shape(tmp_path, digits):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    path = export_onnx(model, tmp_path / "dyn.onnx", dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    with pytest.raises(ValueError, match=r"dyn\.onnx: input 'x' has dynamic .*pass input_shape"):
        load_model(path)
    ann = load_model(path, input_shape=(1, 8, 8))
    np.testing.assert_allclose(ann.forward(digits[2][:5]), torch_out(model, digits[2][:5]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="differs from the ONNX input"):
        load_model(export_onnx(model, tmp_path / "static.onnx"), input_shape=(1, 9, 9))


def test_onnx2torch_imports_without_torchvision():
    onnx2torch = import_onnx2torch()
    assert "torchvision" not in sys.modules and "torchvision.ops" not in sys.modules
    from onnx2torch.node_converters import nms, roialign

    with pytest.raises(NotImplementedError, match="NMS, RoiAlign"):
        nms.torchvision.ops.nms(None, None, 0.5)
    with pytest.raises(NotImplementedError, match=re.escape(NO_TORCHVISION)):
        roialign.roi_align(None)
    assert onnx2torch.convert is not None


# ---------------------------------------------------------------------- datasets
def test_digits_split_is_deterministic():
    a = load_digits_split(seed=3)
    b = load_digits_split(seed=3)
    x_train, y_train, x_test, y_test = a
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 449
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(load_digits_split(seed=4)[1], y_train)


def test_load_npz_checks(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([1, 2, 3]))
    x, y = load_npz(good)
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.tolist() == [1, 2, 3]
    only_x = tmp_path / "only_x.npz"
    np.savez(only_x, x=np.ones((2, 4), np.float64))
    assert load_npz(only_x)[1] is None
    cases = {
        "nox.npz": (dict(y=np.arange(3)), r"nox\.npz: missing key 'x'"),
        "int.npz": (dict(x=np.zeros((3, 4), np.int32)), r"int\.npz: key 'x' has dtype int32"),
        "len.npz": (dict(x=np.zeros((3, 4), np.float32), y=np.arange(2)), r"len\.npz: key 'y' has 2 labels but key 'x' has 3"),
        "ydt.npz": (dict(x=np.zeros((3, 4), np.float32), y=np.zeros(3)), r"ydt\.npz: key 'y' has dtype float64"),
        "obj.npz": (dict(x=np.array([None, 1], dtype=object)), r"obj\.npz: cannot read array"),
    }
    for name, (arrays, msg) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(ValueError, match=msg):
            load_npz(tmp_path / name)


# ---------------------------------------------------------------------- model zoo
def test_shipped_digits_weights_load_and_round_trip(tmp_path, digits):
    from spikeport.models import DigitsResNet, load_state, pretrained_digits_resnet, save_state

    model = pretrained_digits_resnet()
    assert not model.training
    x, y = digits[2], digits[3]
    assert np.mean(torch_out(model, x).argmax(1) == y) >= 0.95
    path = save_state(model, tmp_path / "w.npz")
    again = load_state(DigitsResNet(), path)
    np.testing.assert_array_equal(torch_out(again, x[:10]), torch_out(model, x[:10]))
    with pytest.raises(ValueError, match=r"w\.npz: weights do not fit DigitsResNet"):
        load_state(DigitsResNet(channels=4), path)
