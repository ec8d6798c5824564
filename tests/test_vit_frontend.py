"""Vision Transformers through the frontend: the digits ViTs in the zoo, both definitions (timm
layout and nn.TransformerEncoder) from ONNX (checked against ONNX Runtime), torch.export and
nn.Module become typed ANN graphs that evaluate to the original outputs; clear errors otherwise."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort  # a pinned test dependency (pyproject [test]): the independent reference
import pytest
import torch
from torch import nn

from spikeport.frontend import UnsupportedOpError, load_model
from spikeport.frontend import ann_graph as G
from spikeport.frontend.ann_eval import evaluate_graph
from spikeport.models.digits_vit import DigitsTransformerEncoder, DigitsViT, pretrained_digits_vit

from conftest import export_onnx, export_pt2


def random_vit(kind: str, fused: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = DigitsViT(fused=fused) if kind == "vit" else DigitsTransformerEncoder()
    for p in model.parameters():  # non-trivial weights everywhere (trained ones are checked below)
        p.data.normal_(0.0, 0.3)
    return model.eval()


def run_ort(path: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def typed_out(ann, x: np.ndarray) -> np.ndarray:
    return evaluate_graph(ann.graph, x)["output"].numpy()


X = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)


# ---------------------------------------------------------------------- the three sources
SOURCES = [("vit", False), ("vit", True), ("encoder", False)]


@pytest.mark.parametrize("kind,fused", SOURCES)
def test_onnx_pt2_module_become_typed_graphs_equal_to_the_model(tmp_path, kind, fused):
    model = random_vit(kind, fused)
    ref = torch_out(model, X)
    onnx_path = export_onnx(model, tmp_path / "vit.onnx")
    np.testing.assert_allclose(run_ort(onnx_path, X), ref, rtol=1e-4, atol=1e-5)  # independent reference
    file_ops = Counter(n.op_type for n in onnx.load(onnx_path).graph.node)
    assert file_ops["LayerNormalization"] == 5 and file_ops["Softmax"] == 2 and file_ops["Erf"] == 2
    for source in (onnx_path, export_pt2(model, tmp_path / "vit.pt2"), model):
        ann = load_model(source, input_shape=(1, 8, 8) if isinstance(source, nn.Module) else None)
        np.testing.assert_allclose(ann.forward(X), ref, rtol=1e-5, atol=1e-5)   # the fx module
        np.testing.assert_allclose(typed_out(ann, X), ref, rtol=1e-5, atol=1e-5)  # the typed graph alone
        count = Counter(n.op for n in ann.graph)
        assert count["LayerNorm"] == 5 and count["GELU"] == 2 and count["Softmax"] == 2, count
        assert count["MatMul"] == 4 and count["Linear"] == 9, count  # qkv, proj, fc1, fc2 per block + head
        ln = next(n for n in ann.graph if isinstance(n, G.LayerNorm))
        assert ln.shape == ((17, 32) if kind == "vit" else (16, 32)) and ln.weight.shape == (32,)
        qkv = next(n for n in ann.graph if isinstance(n, G.Linear))
        assert qkv.weight.shape == (96, 32) and qkv.shape[-1] == 96  # one shared weight per token
        scores = [n for n in ann.graph if isinstance(n, G.Softmax)]
        assert all(n.shape == (2,) + (ln.shape[0],) * 2 and n.axis == 2 for n in scores)  # (heads, N, N)
        if kind == "vit":
            assert any(isinstance(n, G.Constant) and n.shape == (1, 32) for n in ann.graph)  # class token
        else:
            assert any(isinstance(n, G.Mean) and n.axes == (0,) for n in ann.graph)  # mean over tokens


def test_trained_vits_agree_with_onnx_runtime_on_digits(tmp_path, digits):
    x = digits[2][:200]
    for kind in ("vit", "encoder"):
        model = pretrained_digits_vit(kind)
        path = export_onnx(model, tmp_path / f"{kind}.onnx")
        ann = load_model(path)
        ref = run_ort(path, x)
        np.testing.assert_allclose(typed_out(ann, x), ref, rtol=1e-4, atol=1e-4)
        assert np.array_equal(ann.evaluate(x)["logits"].argmax(1), ref.argmax(1))


class ManualLayerNorm(nn.Module):
    """LayerNorm written out: exports as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c))
        self.bias = nn.Parameter(torch.randn(c))

    def forward(self, x):
        d = x - x.mean(-1, keepdim=True)
        return d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight + self.bias


class DecomposedBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 16, 2, stride=2)
        self.norm = ManualLayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.fc2(self.act(self.fc1(self.norm(t)))).mean(1)


def test_decomposed_layernorm_and_tanh_gelu_are_recognised(tmp_path):
    torch.manual_seed(3)
    model = DecomposedBlock().eval()
    ref = torch_out(model, X)
    path = export_onnx(model, tmp_path / "decomposed.onnx")
    file_ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert {"ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Tanh"} <= set(file_ops) and "LayerNormalization" not in file_ops
    np.testing.assert_allclose(run_ort(path, X), ref, rtol=1e-4, atol=1e-5)
    for source in (path, export_pt2(model, tmp_path / "decomposed.pt2"), model):
        ann = load_model(source, input_shape=(1, 8, 8) if isinstance(source, nn.Module) else None)
        assert [n.op for n in ann.graph] == ["Input", "Conv2d", "Reshape", "Rearrange", "LayerNorm", "Linear", "GELU",
                                             "Linear", "Mean", "Output"]
        ln = next(n for n in ann.graph if isinstance(n, G.LayerNorm))
        np.testing.assert_allclose(ln.weight, model.norm.weight.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ln.bias, model.norm.bias.detach().numpy(), rtol=1e-4, atol=1e-5)
        assert ln.eps == pytest.approx(1e-5)
        assert next(n for n in ann.graph if isinstance(n, G.GELU)).approximate == "tanh"
        np.testing.assert_allclose(typed_out(ann, X), ref, rtol=1e-5, atol=1e-5)


def test_rearrange_index_maps_are_per_sample_and_exact():
    """timm's qkv permute(2, 0, 3, 1, 4) moves the batch axis; the typed graph keeps batch first and
    the index map picks exactly the element torch picks."""
    class Heads(nn.Module):
        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)                     # (B, 64, 1)
            qkv = t.reshape(t.shape[0], 16, 2, 2, 1).permute(2, 0, 3, 1, 4)  # (2, B, 2, 16, 1)
            q, k = qkv.unbind(0)
            return (q + k).flatten(1)

    ann = load_model(Heads(), input_shape=(1, 8, 8))
    rearr = [n for n in ann.graph if isinstance(n, G.Rearrange)]
    assert rearr and all(n.index.shape == n.shape for n in rearr)
    np.testing.assert_array_equal(typed_out(ann, X), torch_out(Heads(), X))


# ---------------------------------------------------------------------- errors
def test_unsupported_transformer_structures_name_node_op_and_why(tmp_path):
    class Gate(nn.Module):  # elementwise product of two dynamic tensors (a GLU-like gate)
        def forward(self, x):
            t = x.flatten(1)
            return t * torch.sigmoid(t)

    class Masked(nn.Module):  # attention with a mask
        def forward(self, x):
            t = x.reshape(x.shape[0], 1, 8, 8)
            return torch.nn.functional.scaled_dot_product_attention(t, t, t, attn_mask=torch.ones(8, 8, dtype=torch.bool)).flatten(1)

    class BatchSoftmax(nn.Module):
        def forward(self, x):
            return torch.softmax(x.flatten(1), dim=0)

    with pytest.raises(UnsupportedOpError, match=r"node 'sigmoid': op .*sigmoid"):
        load_model(Gate(), input_shape=(1, 8, 8))
    with pytest.raises(UnsupportedOpError, match=r"node '.*': op .*scaled_dot_product_attention.* \(attention with a mask"):
        load_model(Masked(), input_shape=(1, 8, 8))
    with pytest.raises(UnsupportedOpError, match=r"node 'softmax': .*\(softmax over the batch axis\)"):
        load_model(BatchSoftmax(), input_shape=(1, 8, 8))

    class Square(nn.Module):
        def forward(self, x):
            t = x.flatten(1)
            return t * t

    with pytest.raises(UnsupportedOpError, match=r"node 'mul': .*elementwise mul of two input-dependent tensors"):
        load_model(Square(), input_shape=(1, 8, 8))
