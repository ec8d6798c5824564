"""IR: construction, validation, HDF5 round trip and clear errors on bad files."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from spikeport import ir


def small_net(quantized: bool = False, seed: int = 0) -> ir.Network:
    rng = np.random.default_rng(seed)
    net = ir.Network(meta={"method": "test", "input_range": [0.0, 1.0]})
    net.add(ir.Input("x", shape=(1, 6, 6), scale=1 / 255 if quantized else 1.0,
                     payload=ir.SpikePayload(kind="graded", bits=8, min_level=0, max_level=255) if quantized
                     else ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0)))
    wc = rng.normal(size=(3, 1, 3, 3))
    wd = rng.normal(size=(4, 3 * 6 * 6))
    if quantized:
        wc, wd = np.round(wc * 50), np.round(wd * 50)
        net.datapath = ir.Datapath()
    net.add(ir.Population("h", shape=(3, 6, 6), neuron=ir.IF(threshold=np.array([1.0, 2.0, 3.0]), bias=np.zeros(3),
                                                               neg_threshold=np.array(0.0), neg_reset=np.array(1.0)),
                          payload=ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1),
                          decode_scale=np.array([0.5, 1.0, 2.0]), source="relu_1"))
    net.add(ir.Conv2d("x->h", source="x", target="h", weight=wc, padding=(1, 1), delay=1, weight_exp=-2))
    net.add(ir.Population("skip", shape=(3, 6, 6), neuron=ir.IF(threshold=np.array(1.0)), source="relu_2"))
    net.add(ir.Identity("h->skip", source="h", target="skip", weight=np.array([4.0, 2.0, 1.0] if quantized else [1.0, 0.5, 0.25])))
    net.add(ir.Population("out", shape=(4,), neuron=ir.Readout(bias=np.zeros(4))))
    net.add(ir.Dense("skip->out", source="skip", target="out", weight=wd))
    net.outputs = ["out"]
    return net


def assert_same(a: ir.Network, b: ir.Network) -> None:
    assert [n.name for n in a.nodes()] == [n.name for n in b.nodes()]
    assert a.coding == b.coding and a.outputs == b.outputs and a.meta == b.meta and a.datapath == b.datapath
    for na, nb in zip(a.nodes(), b.nodes()):
        assert type(na) is type(nb)
        for key, va in vars(na).items():
            vb = getattr(nb, key)
            if hasattr(va, "__dataclass_fields__"):
                for k2, v2 in vars(va).items():
                    w2 = getattr(vb, k2)
                    assert (v2 is None and w2 is None) or np.array_equal(np.asarray(v2), np.asarray(w2)), (na.name, k2)
                    if isinstance(v2, np.ndarray):
                        assert v2.dtype == w2.dtype
            elif isinstance(va, np.ndarray):
                assert np.array_equal(va, vb) and va.dtype == vb.dtype, (na.name, key)
            else:
                assert va == vb, (na.name, key)


@pytest.mark.parametrize("quantized", [False, True])
def test_round_trip_is_exact(tmp_path, quantized):
    net = small_net(quantized)
    net.validate()
    path = ir.save(net, tmp_path / "net.h5")
    loaded = ir.load(path)
    assert_same(net, loaded)
    from spikeport.simulator import simulate
    x = np.random.default_rng(3).random((4, 1, 6, 6))
    a, b = simulate(net, x, 5, record_spikes=True), simulate(loaded, x, 5, record_spikes=True)
    assert np.array_equal(a.outputs, b.outputs)
    assert all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert a.spikes["h"].any()


def test_save_leaves_no_partial_file_on_invalid_network(tmp_path):
    net = small_net()
    net["x->h"].weight = np.zeros((3, 2, 3, 3))          # wrong input channels
    with pytest.raises(ir.IRError, match="x->h"):
        ir.save(net, tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []


def test_validation_names_node_and_values():
    net = small_net()
    net["h"].neuron.threshold = np.array([1.0, -1.0, 1.0])
    with pytest.raises(ir.IRError, match=r"population 'h'.*threshold must be > 0"):
        net.validate()
    net = small_net()
    net["skip->out"].weight = np.zeros((4, 7))
    with pytest.raises(ir.IRError, match=r"skip->out.*\(4, 7\).*expected \(4, 108\)"):
        net.validate()
    net = small_net(quantized=True)
    net["skip->out"].weight = net["skip->out"].weight + 0.5
    with pytest.raises(ir.IRError, match="non-integer weights"):
        net.validate()


def test_names_and_references_checked():
    net = ir.Network()
    with pytest.raises(ir.IRError, match="contain no '/'"):
        net.add(ir.Input("a/b", shape=(2,)))
    net.add(ir.Input("x", shape=(2,)))
    with pytest.raises(ir.IRError, match="unknown node 'nope'"):
        net.add(ir.Dense("p", source="x", target="nope", weight=np.zeros((2, 2))))
    with pytest.raises(ir.IRError, match="used twice"):
        net.add(ir.Input("x", shape=(2,)))


def test_corrupted_file_gives_clear_error(tmp_path):
    path = ir.save(small_net(), tmp_path / "net.h5")
    data = path.read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ir.IRError, match="truncated.h5: not a readable HDF5 file"):
        ir.load(bad)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(ir.IRError, match="junk.h5"):
        ir.load(junk)
    with pytest.raises(ir.IRError, match="no such file"):
        ir.load(tmp_path / "missing.h5")


def test_wrong_schema_gives_clear_error(tmp_path):
    path = ir.save(small_net(), tmp_path / "net.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ir.IRError, match="schema_version 99 is not supported"):
        ir.load(path)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = ir.SCHEMA_VERSION
        f.attrs["format"] = "something-else"
    with pytest.raises(ir.IRError, match="not a spikeport IR file"):
        ir.load(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "spikeport-ir"
        f["nodes/h/neuron"].attrs["type"] = "os.system"
    with pytest.raises(ir.IRError, match=r"/nodes/h/neuron: unknown type 'os.system'"):
        ir.load(path)
    with h5py.File(path, "r+") as f:
        f["nodes/h/neuron"].attrs["type"] = "IF"
        del f["nodes/skip->out/weight"]
        f["nodes/skip->out"].create_dataset("weight", data=np.zeros((4, 5)))
    with pytest.raises(ir.IRError, match=r"net.h5.*skip->out.*\(4, 5\)"):
        ir.load(path)


def test_cycle_rejected():
    net = small_net()
    net.add(ir.Identity("loop", source="skip", target="h", weight=np.array(1.0)))
    with pytest.raises(ir.IRError, match="cycle"):
        net.validate()


def test_expand_channel():
    assert ir.expand_channel(np.array([1, 2]), (2, 2, 2))[1, 1, 1] == 2
    assert ir.expand_channel(np.array(3.0), (2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        ir.expand_channel(np.array([1, 2, 3]), (2, 2))
