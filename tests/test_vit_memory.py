"""The memory paths of the ViT pipeline (benchmarks/vit_compile.py measures them at ViT-B scale):
the probe drops values without changing the typed graph, ecmt keeps float32 weights rounded like
convert/lower.py, the operator quantiser shares the float network's arrays and writes narrow
integers without changing a number, and ir.load verifies a private chunked copy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport import compiler, ir
from spikeport.convert import convert
from spikeport.frontend import ann_graph as G
from spikeport.frontend import load_model, normalise as N
from spikeport.ir import operators as O
from spikeport.models.digits_vit import DigitsViT

from conftest import export_onnx

X = np.random.default_rng(1).random((6, 1, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = DigitsViT().eval()
    for p in model.parameters():
        p.data.normal_(0.0, 0.3)
    return export_onnx(model, tmp_path_factory.mktemp("vitmem") / "vit.onnx")


def _same_graph(a: G.AnnGraph, b: G.AnnGraph) -> None:
    assert list(a.nodes) == list(b.nodes)
    for na, nb in zip(a, b):
        assert type(na) is type(nb) and na.inputs == nb.inputs and na.shape == nb.shape
        for k, v in vars(na).items():
            w = getattr(nb, k)
            if isinstance(v, np.ndarray):
                assert v.dtype == w.dtype and np.array_equal(v, w), (na.name, k)
            else:
                assert v == w, (na.name, k)


def test_probe_drops_values_without_changing_the_typed_graph(vit_onnx, monkeypatch):
    lean = load_model(vit_onnx)
    monkeypatch.setattr(N._Probe, "_maybe_drop", lambda self, m: None)   # keep every value, as before
    full = load_model(vit_onnx)
    _same_graph(lean.graph, full.graph)
    kinds = {type(n).__name__ for n in lean.graph}
    assert {"GELU", "LayerNorm", "Rearrange"} <= kinds   # composite regions still found during the probe


def test_probe_keeps_only_shapes_of_used_up_values(vit_onnx):
    gm = load_model(vit_onnx).module
    s = N.Normaliser(gm, torch.zeros((2, 1, 8, 8)))
    data = [n for n in gm.graph.nodes if s.depends[n] and isinstance(s.values.get(n), torch.Tensor)]
    assert data and all(s.values[n].device.type == "meta" for n in data)
    consts = [n for n in gm.graph.nodes if not s.depends[n] and isinstance(s.values.get(n), torch.Tensor)]
    assert consts and all(s.values[n].device.type != "meta" for n in consts)


def test_ecmt_weights_are_float32_rounded_from_the_float64_product(vit_onnx):
    ann = load_model(vit_onnx)
    net = convert(ann, X, method="ecmt", levels=4)
    dense = [p for p in net.projections() if isinstance(p, O.TokenDense)]
    assert dense and all(p.weight.dtype == np.float32 and p.weight.flags.c_contiguous for p in dense)
    for p in dense:
        lin = ann.graph[p.name[:-2]]
        src = net[p.source]
        mt = isinstance(src, ir.Population) and isinstance(src.neuron, O.MultiThreshold)
        factor = float(src.neuron.theta1) if mt else 1.0   # the head reads its input at factor 1
        want = (lin.weight.astype(np.float64) * factor).astype(np.float32)
        assert np.array_equal(p.weight, want)
    assert all(o.index.dtype == np.int32 for o in net.operators() if isinstance(o, O.Rearrange))


def test_operator_quantiser_shares_arrays_and_writes_narrow_integers(vit_onnx, tmp_path):
    net = convert(load_model(vit_onnx), X, method="ecmt", levels=4)
    before = {p.name: p.weight.copy() for p in net.projections()}
    qnet, _ = compiler.quantize(net, "loihi2")
    for p in net.projections():   # the float network is not modified
        assert np.array_equal(p.weight, before[p.name]) and p.weight.dtype == before[p.name].dtype
    shared = [o for o in net.operators() if isinstance(o, O.Rearrange)]
    assert shared and all(qnet[o.name].index is o.index for o in shared)
    dense = [p for p in qnet.projections() if isinstance(p, O.TokenDense)]
    assert all(p.weight.dtype == np.int16 for p in dense)
    # the same integers the int64 path gave: round(norm / 2^e / step) * step, clipped
    path = ir.save(qnet, tmp_path / "q.h5")
    back = ir.load(path)
    for p in qnet.projections():
        assert np.array_equal(back[p.name].weight, p.weight)
    assert all(back[p.name].weight.dtype == np.int16 for p in dense)


def test_network_copy_sharing_arrays_is_a_deep_copy_of_everything_else(vit_onnx):
    net = convert(load_model(vit_onnx), X, method="ecmt", levels=4)
    c = net.copy(share_arrays=True)
    p = next(iter(net.projections()))
    assert c[p.name] is not p and c[p.name].weight is p.weight
    pop = next(iter(net.populations()))
    assert c[pop.name].neuron is not pop.neuron
    d = net.copy()
    assert d[p.name].weight is not p.weight and np.array_equal(d[p.name].weight, p.weight)


def test_load_verifies_a_private_copy_and_refuses_a_changed_byte(vit_onnx, tmp_path):
    net = convert(load_model(vit_onnx), X, method="ecmt", levels=4)
    path = ir.save(net, tmp_path / "net.h5")
    back = ir.load(path)
    assert [n.name for n in back.nodes()] == [n.name for n in net.nodes()]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ir.IRError, match="SHA-256 of the content differs"):
        ir.load(path)
