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
        wc, wd = np.round(wc * 25) * 2, np.round(wd * 25) * 2      # even: loihi2 weight_step 2
        net.datapath = ir.Datapath()
    net.add(ir.Population("h", shape=(3, 6, 6), neuron=ir.IF(threshold=np.array([1.0, 2.0, 3.0]), bias=np.zeros(3),
                                                               neg_threshold=np.array(0.0), neg_reset=np.array(1.0)),
                          payload=ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1),
                          decode_scale=np.array([0.5, 1.0, 2.0]), source="relu_1"))
    net.add(ir.Conv2d("x->h", source="x", target="h", weight=wc, padding=(1, 1), delay=1, weight_exp=-2))
    net.add(ir.Population("skip", shape=(3, 6, 6), neuron=ir.IF(threshold=np.array(1.0)), source="relu_2"))
    net.add(ir.Identity("h->skip", source="h", target="skip", weight=np.array([4.0, 2.0, 6.0] if quantized else [1.0, 0.5, 0.25])))
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
    net = small_net()
    net["h"].state_scale = np.zeros(0)                      # found by benchmarks/fuzz_loaders.py
    with pytest.raises(ir.IRError, match=r"population 'h': state_scale has shape \(0,\)"):
        net.validate()
    net = small_net()
    net["skip->out"].scale = np.ones(3)
    with pytest.raises(ir.IRError, match=r"skip->out.*scale has shape \(3,\)"):
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
    with pytest.raises(ir.IRError, match=r"truncated.h5: file corrupted or truncated \(\d+ bytes, the checksum block records"):
        ir.load(bad)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    (tmp_path / "flip.h5").write_bytes(bytes(flipped))
    with pytest.raises(ir.IRError, match=r"flip.h5: file corrupted or truncated, or modified"):
        ir.load(tmp_path / "flip.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(ir.IRError, match="junk.h5: not a spikeport IR file"):
        ir.load(junk)
    with pytest.raises(ir.IRError, match="no such file"):
        ir.load(tmp_path / "missing.h5")
    with pytest.raises(ir.IRError, match="not a file"):
        ir.load(tmp_path)


def test_saved_file_is_sealed_and_readable_by_plain_hdf5(tmp_path):
    path = ir.save(small_net(), tmp_path / "net.h5")
    data = path.read_bytes()
    assert data.startswith(ir.seal.MAGIC) and data[512:520] == ir.seal.HDF5_SIGNATURE
    with h5py.File(path, "r") as f:                     # HDF5 skips the user block
        assert f.attrs["format"] == "spikeport-ir" and f.userblock_size == 512
    assert path.stat().st_mode & 0o777 != 0o600         # not mkstemp's private mode


def edit(path, fn):
    """Change a saved file with h5py, as a user would by hand."""
    with h5py.File(path, "r+") as f:
        fn(f)


def test_hand_edited_file_is_refused_until_resealed(tmp_path):
    path = ir.save(small_net(), tmp_path / "net.h5")
    edit(path, lambda f: f["nodes/h"].attrs.__setitem__("t_start", 2))
    with pytest.raises(ir.IRError, match=r"net.h5: .*modified after spikeport wrote it"):
        ir.load(path)
    ir.reseal(path)                                      # accept the edit: sandbox parse + full checks
    assert ir.load(path)["h"].t_start == 2


def test_unsealed_file_is_read_after_a_sandbox_parse(tmp_path):
    """A file without the seal (older spikeport): parsed by a child process first, then strictly."""
    net = small_net()
    path = tmp_path / "old.h5"
    ir.save(net, tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5", "r") as src, h5py.File(path, "w") as dst:   # same content, no user block
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for k in src:
            src.copy(src[k], dst, name=k)
    assert not path.read_bytes().startswith(ir.seal.MAGIC)
    assert_same(net, ir.load(path))
    data = bytearray(path.read_bytes())
    data[200:4000] = bytes(3800)                         # wipe the object headers
    path.write_bytes(bytes(data))
    with pytest.raises(ir.IRError, match="old.h5: file corrupted or truncated"):
        ir.load(path)


def test_wrong_schema_gives_clear_error(tmp_path):
    path = ir.save(small_net(), tmp_path / "net.h5")
    cases = [
        (lambda f: f.attrs.__setitem__("schema_version", 99), "schema_version 99 is not supported"),
        (lambda f: f.attrs.__setitem__("format", "something-else"), "not a spikeport IR file"),
        (lambda f: f["nodes/h/neuron"].attrs.__setitem__("type", "os.system"), r"/nodes/h/neuron: unknown type 'os.system'"),
        (lambda f: (f["nodes/skip->out"].__delitem__("weight"), f["nodes/skip->out"].create_dataset("weight", data=np.zeros((4, 5)))),
         r"net.h5.*skip->out.*\(4, 5\)"),
        (lambda f: f["nodes/x->h"].attrs.__delitem__("weight_exp"), r"/nodes/x->h: field 'weight_exp': missing"),
        (lambda f: f["nodes/x->h"].attrs.__delitem__("delay"), r"/nodes/x->h: field 'delay': missing"),
        (lambda f: f["nodes/h"].attrs.__delitem__("t_start"), r"/nodes/h: field 't_start': missing"),
        (lambda f: f["nodes/h/payload"].attrs.__delitem__("kind"), r"/nodes/h/payload: field 'kind': missing"),
        (lambda f: f["nodes/h"].attrs.__setitem__("t_start", 1.5), r"/nodes/h: field 't_start': expected an integer, found 1.5"),
        (lambda f: f["nodes/h"].attrs.__setitem__("t_start", 10 ** 9), r"population 'h': t_start = 1000000000 must be an integer in 0..4096"),
        (lambda f: f["nodes/h"].attrs.__setitem__("source", 3), r"/nodes/h: field 'source': expected text"),
        (lambda f: f["nodes/h"].attrs.__setitem__("extra", 3), r"/nodes/h: unknown field 'extra'"),
        (lambda f: f["nodes/h/neuron/threshold"].__setitem__(0, np.nan), r"population 'h': neuron.threshold contains nan"),
        (lambda f: (f["nodes/x->h"].__delitem__("weight"), f["nodes/x->h"].create_dataset("weight", data=np.array(["a"], dtype="S1"))),
         r"/nodes/x->h: field 'weight': dataset dtype \|S1 is not numeric"),
        (lambda f: f.attrs.__setitem__("meta", "{[}"), r"net.h5: field 'meta': invalid JSON"),
        (lambda f: f.attrs.__setitem__("outputs", '["out", NaN]'), r"field 'outputs': invalid JSON"),
        (lambda f: f["nodes/h"].attrs.__setitem__("__none__", '["shape"]'), r"/nodes/h: field 'shape': Population.shape cannot be None"),
        (lambda f: f["nodes"].__setitem__("alias", h5py.SoftLink("/nodes/h")), r"net.h5: .*alias'? is a SoftLink"),
    ]
    for change, message in cases:
        path = ir.save(small_net(), tmp_path / "net.h5")
        edit(path, change)
        with pytest.raises(ir.IRError, match="modified after spikeport wrote it"):
            ir.load(path)
        with pytest.raises(ir.IRError, match=message):   # accepting the edit still runs every check
            ir.reseal(path)


@pytest.mark.parametrize("field, value, message", [
    ("weight", 1e9, r"conv2d 'x->h': weight = 1e\+09 exceeds the limit 254 \(9-bit weights of datapath 'loihi2'\)"),
    ("weight", -7, r"weight = -7 is not a multiple of weight_step 2"),
    ("weight_exp", 12, r"weight_exp = 12 outside -8..7"),
    ("threshold", 2 ** 30, r"population 'h': neuron.threshold = 1.07374e\+09 exceeds the limit 8388544"),
    ("bias", 2 ** 25, r"neuron.bias = 3.35544e\+07 exceeds the limit 524160"),
    ("v_init", -2 ** 24, r"neuron.v_init = -1.67772e\+07 is below the limit -8388607"),
    ("delay", 5000, r"delay = 5000 must be an integer in 0..4096"),
    ("neg_value", 0.5, r"population 'h': payload.neg_value = 0.5 is not an integer"),   # fuzz finding
])
def test_quantised_values_checked_against_datapath(field, value, message):
    net = small_net(quantized=True)
    if field == "neg_value":
        net["h"].payload.neg_value = value
    elif field in ("weight", "weight_exp", "delay"):
        obj = net["x->h"]
        if field == "weight":
            obj.weight = obj.weight.copy()
            obj.weight[0, 0, 0, 0] = value
        else:
            setattr(obj, field, value)
    else:
        net["h"].neuron.threshold = np.array([64.0, 128.0, 192.0])
        arr = np.zeros(3)
        arr[0] = value
        setattr(net["h"].neuron, field, arr if field != "threshold" else np.array([value, 64.0, 64.0]))
    with pytest.raises(ir.IRError, match=message):
        ir.check_limits(net, "net")


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
