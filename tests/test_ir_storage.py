"""IR files store arrays narrow and compressed (ir/storage.py); loading restores them exactly."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from spikeport import compiler, convert, datasets, frontend, hw_profiles, ir
from spikeport.ir import hdf5, storage
from spikeport.ir.seal import seal_file
from spikeport.models.digits import pretrained_digits_resnet
from spikeport.simulator import simulate


def dense_net(weight: np.ndarray, quantized: bool = False) -> ir.Network:
    n_out, n_in = weight.shape
    net = ir.Network(meta={"method": "test"})
    net.add(ir.Input("x", shape=(n_in,), scale=1 / 255 if quantized else 1.0,
                     payload=ir.SpikePayload(kind="graded", bits=8, min_level=0, max_level=255) if quantized
                     else ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0)))
    if quantized:
        net.datapath = ir.Datapath()
    net.add(ir.Population("out", shape=(n_out,), neuron=ir.Readout(bias=np.zeros(n_out))))
    net.add(ir.Dense("x->out", source="x", target="out", weight=weight))
    net.outputs = ["out"]
    return net


def stored(path, node: str, field: str = "weight") -> h5py.Dataset:
    f = h5py.File(path, "r")
    return f[f"nodes/{node}/{field}"]


def test_float32_exact_weights_are_stored_as_float32_compressed(tmp_path):
    w = np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32).astype(np.float64)
    path = ir.save(dense_net(w), tmp_path / "net.h5")
    ds = stored(path, "x->out")
    assert ds.dtype == np.float32 and ds.compression == "gzip" and ds.shuffle
    assert ds.file["nodes/x->out"].attrs["weight__dtype"] == "float64"
    ds.file.close()
    back = ir.load(path)["x->out"].weight
    assert back.dtype == np.float64 and np.array_equal(back, w)


def test_float64_on_purpose_stays_float64(tmp_path):
    w = np.random.default_rng(1).normal(size=(64, 96))          # not float32 values
    path = ir.save(dense_net(w), tmp_path / "net.h5")
    ds = stored(path, "x->out")
    assert ds.dtype == np.float64 and ds.compression == "gzip"
    ds.file.close()
    assert np.array_equal(ir.load(path)["x->out"].weight, w)


def test_quantised_weights_take_the_narrowest_integer_type(tmp_path):
    rng = np.random.default_rng(2)
    for high, want in ((63, np.int8), (127, np.int16)):
        w = rng.integers(-high, high + 1, size=(64, 96)).astype(np.int64) * 2     # loihi2: even weights
        path = ir.save(dense_net(w, quantized=True), tmp_path / "q.h5")
        ds = stored(path, "x->out")
        assert ds.dtype == want and ds.compression == "gzip"
        ds.file.close()
        back = ir.load(path)["x->out"].weight
        assert np.array_equal(back, w) and back.dtype == np.int64


def test_small_arrays_stay_contiguous(tmp_path):
    path = ir.save(dense_net(np.ones((2, 3))), tmp_path / "net.h5")
    ds = stored(path, "x->out")
    assert ds.compression is None and ds.chunks is None
    ds.file.close()


@pytest.fixture(scope="module")
def digits_nets():
    x_train, _, x_test, y_test = datasets.load_digits_split()
    ann = frontend.load_model(pretrained_digits_resnet(), input_shape=(1, 8, 8))
    net = convert.convert(ann, x_train[:200], method="if")
    qnet, _ = compiler.quantize(net, hw_profiles.load_profile("loihi2"))
    return net, qnet, x_test[:48]


def test_save_load_simulate_identical(tmp_path, digits_nets):
    """A converted and a quantised network simulate identically before saving and after loading; the
    files hold the weights in at most their float32 size (plus small metadata)."""
    for net in digits_nets[:2]:
        path = ir.save(net, tmp_path / "n.h5")
        loaded = ir.load(path)
        a = simulate(net, digits_nets[2], 8, record_states=True)
        b = simulate(loaded, digits_nets[2], 8, record_states=True)
        assert np.array_equal(a.outputs, b.outputs) and a.layers == b.layers
        for k in a.spike_counts:
            assert np.array_equal(a.spike_counts[k], b.spike_counts[k])
        for k in a.states:
            assert np.array_equal(a.states[k], b.states[k])
        weights = sum(p.weight.size for p in net.projections())
        assert path.stat().st_size <= 4 * weights + 64 * 1024, (path.stat().st_size, weights)
    assert all(p.weight.dtype == np.float64 and np.array_equal(p.weight, p.weight.astype(np.float32))
               for p in digits_nets[0].projections() if p.connectivity in ("dense", "conv2d"))  # float32 values


def _plain_v2(monkeypatch):
    """The writer of schema 2: every array as it is, contiguous and uncompressed."""
    monkeypatch.setattr(hdf5, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(hdf5, "write_array", lambda g, name, v: g.create_dataset(name, data=v))


def test_schema_2_files_still_load(tmp_path, monkeypatch, digits_nets):
    net = digits_nets[1]
    with monkeypatch.context() as m:
        _plain_v2(m)
        path = ir.save(net, tmp_path / "v2.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 2
        assert all(f[f"nodes/{p.name}/weight"].compression is None for p in net.projections())
    loaded = ir.load(path)
    for p in net.projections():
        assert np.array_equal(loaded[p.name].weight, p.weight) and loaded[p.name].weight.dtype == p.weight.dtype


def _edit_weight(make):
    def change(f):
        g = f["nodes/x->out"]
        w = g["weight"][()]
        del g["weight"]
        make(g, w)
    return change


@pytest.mark.parametrize("make, message", [
    (lambda g, w: g.create_dataset("weight", data=w, compression="lzf"),
     r"field 'weight': dataset uses HDF5 filters \[32000\]; spikeport writes only shuffle \+ gzip"),
    (lambda g, w: g.create_dataset("weight", data=w, scaleoffset=3),
     r"field 'weight': dataset uses HDF5 filters"),
    (lambda g, w: g.create_dataset("weight", shape=w.shape, dtype=w.dtype, chunks=(8, 8), compression="gzip")
     .__setitem__((slice(0, 8), slice(0, 8)), w[:8, :8]),
     r"field 'weight': compressed dataset has 1 of its 96 chunks written"),
    (lambda g, w: (g.create_dataset("weight", data=w), g.attrs.__setitem__("weight__dtype", "float16")),
     r"field 'weight': dtype marker float16 does not widen the stored float32"),
    (lambda g, w: (g.create_dataset("weight", data=w), g.attrs.__setitem__("weight__dtype", "object")),
     r"field 'weight': dtype marker 'object' is not one of"),
    (lambda g, w: (g.create_dataset("weight", data=w), g.attrs.__setitem__("bias__dtype", "float64")),
     r"/nodes/x->out: unknown field 'bias__dtype'"),
    (lambda g, w: g.create_dataset("weight", data=w.astype(np.complex64)),
     r"field 'weight': dataset dtype complex64 is not numeric"),
])
def test_reader_refuses_other_storage(tmp_path, make, message):
    """Storage spikeport does not write is refused by the strict reader, naming file, node and field,
    even in a file whose seal was recomputed (the seal is a checksum, not a signature)."""
    w = np.random.default_rng(3).normal(size=(64, 96)).astype(np.float32).astype(np.float64)
    path = ir.save(dense_net(w), tmp_path / "net.h5")
    with h5py.File(path, "r+") as f:
        _edit_weight(make)(f)
    with pytest.raises(ir.IRError, match="modified after spikeport wrote it"):
        ir.load(path)
    seal_file(path)
    with pytest.raises(ir.IRError, match=r"net.h5:/nodes/x->out: " + message.lstrip("/nodes/x->out: ")
                       if message.startswith("field") else message):
        ir.load(path)
    with pytest.raises(ir.IRError):          # and reseal refuses it too (sandbox child or the same reader)
        ir.reseal(path)


def test_decompression_size_is_bounded(tmp_path):
    """A dataset may not claim more than gzip's expansion limit over its stored bytes."""
    w = np.zeros((512, 512))                                     # compresses about 1000:1 - still allowed
    path = ir.save(dense_net(w), tmp_path / "zeros.h5")
    assert np.array_equal(ir.load(path)["x->out"].weight, w)
    assert storage.MAX_EXPANSION >= 1032
