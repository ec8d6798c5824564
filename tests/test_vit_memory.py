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


# ------------------------------------------------------------------------------ one copy of the weights
# (ONNX read lean, typed graph sharing the module's memory, ANN handed over to convert, network to quantize)
import dataclasses
from pathlib import Path

import onnx
from onnx import numpy_helper

from spikeport.convert.finetune_vit import insert_quantisers
from spikeport.frontend import onnx_lean
from spikeport.frontend.ann_eval import evaluate_graph
from spikeport.frontend.ann_graph import FrontendError
from spikeport import malloc_trim

X8 = np.random.default_rng(2).random((5, 1, 8, 8), dtype=np.float32)


def _main_np(t):
    """normalise._np as it was before the typed graph kept F-ordered views: a copy unless C-ordered."""
    if t is None:
        return None
    t = t.detach()
    if t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() and not t.requires_grad:
        return t.numpy()
    return t.to("cpu", torch.float32).numpy().copy()


def _same(a, b, where: str) -> None:
    """Equal in every field, arrays in dtype, shape and every value (the IR and the typed graph)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a2, b2 = np.asarray(a), np.asarray(b)
        assert a2.dtype == b2.dtype and a2.shape == b2.shape and np.array_equal(a2, b2, equal_nan=True), where
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}[{k}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), (where, a, b)


def _same_network(a: ir.Network, b: ir.Network) -> None:
    assert [n.name for n in a.nodes()] == [n.name for n in b.nodes()]
    for x, y in zip(a.nodes(), b.nodes()):
        _same(x, y, x.name)
    _same(a.meta, b.meta, "meta")
    assert a.outputs == b.outputs and a.coding == b.coding


@pytest.fixture(scope="module", params=["transpose-nodes", "folded"])
def wide_vit_onnx(request, tmp_path_factory):
    """A 128-wide digits ViT (its Linear weights are over onnx_lean.LARGE_BYTES), exported as spikeport
    does (Transpose nodes on (out, in) weights) and with constant folding, torch.onnx.export's default
    (MatMul initialisers stored (in, out): the typed graph's weights are then F-ordered views)."""
    torch.manual_seed(0)
    model = DigitsViT(dim=128, heads=4).eval()
    for p in model.parameters():
        p.data.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("wide") / f"vit_{request.param}.onnx"
    if request.param == "folded":
        return export_onnx(model, path, dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return export_onnx(model, path)


def test_lean_onnx_read_is_the_model_without_large_data_and_checks_like_the_checker(wide_vit_onnx):
    full = onnx.load(wide_vit_onnx)
    lean, arrays = onnx_lean.load_lean(Path(wide_vit_onnx))
    assert arrays and all(a.nbytes >= onnx_lean.LARGE_BYTES // 2 for a in arrays.values())
    assert [n.SerializeToString() for n in lean.graph.node] == [n.SerializeToString() for n in full.graph.node]
    assert lean.opset_import == full.opset_import and lean.graph.input == full.graph.input
    by_name = {t.name: t for t in lean.graph.initializer}
    assert list(by_name) == [t.name for t in full.graph.initializer]
    for t in full.graph.initializer:
        want = numpy_helper.to_array(t)
        if t.name in arrays:
            got = arrays[t.name]
            assert not by_name[t.name].raw_data and list(by_name[t.name].dims) == list(t.dims)
            assert by_name[t.name].data_type == t.data_type
        else:
            got = numpy_helper.to_array(by_name[t.name])
        assert got.dtype == want.dtype and np.array_equal(got, want)
    onnx_lean.check_lean(lean, arrays)   # the checker accepts it as it accepts the file


def test_module_buffers_and_typed_graph_are_the_lean_arrays_not_copies(wide_vit_onnx):
    ann = load_model(wide_vit_onnx)
    bufs = [t.detach().numpy() for t in list(ann.module.parameters()) + list(ann.module.buffers())
            if t.dtype == torch.float32 and t.numel() > 1]
    lin = [n for n in ann.graph if isinstance(n, G.Linear)]
    assert lin and all(any(np.shares_memory(n.weight, b) for b in bufs) for n in lin)
    if "folded" in wide_vit_onnx:   # MatMul initialisers (in, out): the (out, in) weight is their F-ordered view
        assert any(n.weight.flags.f_contiguous and not n.weight.flags.c_contiguous for n in lin)


def test_typed_graph_views_give_the_values_and_networks_of_c_ordered_copies(wide_vit_onnx, monkeypatch, tmp_path):
    """Build both ways: today's typed graph (F-ordered views, ANN handed over, network quantised in
    place) against the copies it replaced; the ANN, its graph values, every converted network and the
    quantised ECMT network are equal in every value."""
    new = load_model(wide_vit_onnx)
    with monkeypatch.context() as m:
        m.setattr(N, "_np", _main_np)
        old = load_model(wide_vit_onnx)
    assert all(n.weight.flags.c_contiguous for n in old.graph if isinstance(n, G.Linear))
    _same_graph(new.graph, old.graph)
    for dtype in (torch.float32, torch.float64):
        a, b = evaluate_graph(new.graph, X8, dtype=dtype), evaluate_graph(old.graph, X8, dtype=dtype)
        assert all(torch.equal(a[k], b[k]) for k in a)
    before = new.forward(X8)
    for method in ("aif", "mbe"):
        _same_network(convert(new, X8, method=method, timesteps=8), convert(old, X8, method=method, timesteps=8))
    qa, qb = insert_quantisers(new, "stbif", 16, X8), insert_quantisers(old, "stbif", 16, X8)   # C2 fine-tuning
    assert torch.equal(qa(torch.as_tensor(X8)), qb(torch.as_tensor(X8)))
    assert not any(np.shares_memory(p.detach().numpy(), n.weight) for p in qa.params.values()
                   for n in new.graph if isinstance(n, G.Linear))   # training must not write into the ANN
    assert np.array_equal(new.forward(X8), before)   # conversion read the shared weights, never wrote them
    net_old = convert(old, X8, method="ecmt", levels=4)
    net_new = convert(load_model(wide_vit_onnx), X8, method="ecmt", levels=4, release_ann=True)
    _same_network(net_new, net_old)
    q_old, t_old = compiler.quantize(net_old, "loihi2")
    q_new, t_new = compiler.quantize(net_new, "loihi2", release_input=True)
    assert q_new is net_new
    _same_network(q_new, q_old)
    assert t_new.as_dict() == t_old.as_dict()
    _same_network(ir.load(ir.save(q_new, tmp_path / "new.h5")), ir.load(ir.save(q_old, tmp_path / "old.h5")))


def test_convert_without_release_leaves_the_ann_runnable_and_unchanged(wide_vit_onnx):
    ann = load_model(wide_vit_onnx)
    before = ann.forward(X8)
    weights = {n.name: n.weight.copy() for n in ann.graph if isinstance(n, G.Linear)}
    convert(ann, X8, method="ecmt", levels=4)
    assert np.array_equal(ann.forward(X8), before) and not ann.released
    assert all(np.array_equal(ann.graph[k].weight, w) for k, w in weights.items())


def test_released_ann_frees_its_weights_and_refuses_to_run(wide_vit_onnx):
    ann = load_model(wide_vit_onnx)
    convert(ann, X8, method="ecmt", levels=4, release_ann=True)
    assert ann.released
    live = [t for t in list(ann.module.parameters()) + list(ann.module.buffers()) if t.device.type != "meta"]
    assert live and all(t.numel() < 128 * 128 for t in live)   # every Linear weight (128 x 128 or more) is freed
    assert all(n.weight.size == 0 for n in ann.graph if isinstance(n, G.Linear))
    with pytest.raises(FrontendError, match="handed over to a conversion"):
        ann.forward(X8)
    with pytest.raises(FrontendError, match="load the model again"):
        ann.record_activations(X8, [next(iter(ann.graph)).name])


def test_quantize_release_input_on_a_cnn_still_copies():
    from spikeport.models.digits import DigitsResNet   # noqa: PLC0415 - only this test needs a CNN
    ann = load_model(DigitsResNet().eval(), input_shape=(1, 8, 8))
    net = convert(ann, X8, method="if")
    w = {p.name: p.weight.copy() for p in net.projections()}
    qnet, _ = compiler.quantize(net, "loihi2", release_input=True)
    assert qnet is not net and all(np.array_equal(net[k].weight, v) for k, v in w.items())


def test_lean_read_refuses_truncated_and_inconsistent_files(wide_vit_onnx, tmp_path):
    data = Path(wide_vit_onnx).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrontendError, match=r"cut\.onnx: not an ONNX model"):
        load_model(cut)
    model = onnx.load(wide_vit_onnx)
    big = next(t for t in model.graph.initializer if len(t.raw_data) >= onnx_lean.LARGE_BYTES)
    big.raw_data = big.raw_data[:-4]           # one value short of its dims
    bad = tmp_path / "short.onnx"
    onnx.save(model, bad)
    with pytest.raises(FrontendError, match=rf"short\.onnx: invalid ONNX model \(initializer '{big.name}'"):
        load_model(bad)
    model = onnx.load(wide_vit_onnx)
    next(n for n in model.graph.node if n.op_type == "MatMul").input[0] = "nowhere"   # the checker still sees structure
    bad2 = tmp_path / "dangling.onnx"
    onnx.save(model, bad2)
    with pytest.raises(FrontendError, match=r"dangling\.onnx: invalid ONNX model"):
        load_model(bad2)


def test_large_blocks_are_returned_to_the_system_while_probing(monkeypatch):
    seen = []
    monkeypatch.setattr(malloc_trim, "_mallopt_threshold", lambda v: seen.append(v) or True)
    with pytest.raises(RuntimeError), malloc_trim.large_blocks_returned():
        raise RuntimeError("the threshold is set back on errors too")
    assert seen == [malloc_trim.LARGE_BLOCK, malloc_trim.AFTER]
