"""SpiNNaker backend: machines, placement, keys, PACMAN tables, packets, EIEIO, replay == simulator."""
from __future__ import annotations

import dataclasses as dc
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spikeport import compiler, ir
from spikeport.backends import spinnaker as sp
from spikeport.backends.loihi2.examples import (random_convnet, random_graded_mlp, random_if_mlp, random_mlp,
                                                random_multispike_convnet, random_resnet)
from spikeport.backends.spinnaker import packets
from spikeport.backends.spinnaker.routing import pacman_compare, walk
from spikeport.hw_profiles import load_profile
from spikeport.ir import Conv2d, Datapath, Dense, Input, Network, Population, SpikePayload
from spikeport.ir.nodes import IF
from spikeport.simulator import simulate


def small_profile(name="spinnaker1", neurons_per_core=8, cores_per_chip=1, **kw):
    """The profile with tiny cores so that small networks spread over many chips."""
    p = load_profile(name)
    lim = dc.replace(p.limits, neurons_per_core=neurons_per_core, cores_per_chip=cores_per_chip,
                     max_neurons_per_chip=neurons_per_core * cores_per_chip, **kw)
    return dc.replace(p, limits=lim)


def spread_profile(net: Network, profile: str, npc: int, chips: int):
    """Tiny cores (``npc`` neurons), as few per chip as spreads the network over ``chips`` chips."""
    sizes = [p.size for p in net.populations()] + [int(np.prod(i.shape)) for i in net.inputs()]
    cores = -(-sum(-(-n // npc) for n in sizes) // chips)
    return small_profile(profile, neurons_per_core=npc, cores_per_chip=cores)


def _x(net: Network, n=3, seed=0):
    node = net.inputs()[0]
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n,) + tuple(node.shape)) * node.scale * node.payload.max_level).astype(np.float32)


# ------------------------------------------------------------------------------ dependencies
def test_spinnaker_libraries_import_at_pinned_versions():
    from importlib.metadata import version
    for dist in ("spinnutilities", "spinnmachine", "spinnaker-pacman", "spinnman"):
        assert version(dist) == "1!7.4.1"
    import numpy
    assert numpy.__version__ == "1.26.4"
    from pacman.operations.router_compressors.routing_compression_checker import compare_tables  # noqa: F401
    from spinnman.messages.eieio import read_eieio_data_message  # noqa: F401


# ------------------------------------------------------------------------------ machines
def test_machines_from_spinnmachine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    board = sp.make_machine("48-chip", load_profile("spinnaker1"))
    assert board.n_chips == 48 and board.router_entries == 1023
    assert all(len(c) == 16 for c in board.cores)
    # links are symmetric: over link l and back over l + 3
    for c in range(board.n_chips):
        for link in range(6):
            n = board.neighbour[c, link]
            if n >= 0:
                assert board.neighbour[n, (link + 3) % 6] == c
    one = sp.make_machine("1x1", load_profile("spinnaker1"))
    assert one.n_chips == 1 and (one.neighbour < 0).all()
    torus = sp.make_machine("4x3", load_profile("spinnaker1"))
    assert torus.n_chips == 12 and (torus.neighbour >= 0).all()
    s2 = sp.make_machine("48-chip", load_profile("spinnaker2"))
    assert s2.n_chips == 48 and len(s2.cores[0]) == 152 and s2.router_entries == 16384
    assert list(tmp_path.iterdir()) == []          # spinn_utilities wrote no report folders
    for bad in ("7", "48chips", "0x3", "big"):
        with pytest.raises(sp.SpinnakerError, match="unknown machine|must be in 1..256"):
            sp.make_machine(bad, load_profile("spinnaker1"))


# ------------------------------------------------------------------------------ reach, keys
def test_reach_matrix_equals_structural_conv_connectivity():
    net = random_convnet(seed=2)
    for proj in net.projections():
        if not isinstance(proj, Conv2d):
            continue
        src, dst = net.shape_of(proj.source), net.shape_of(proj.target)
        n_src, n_dst = int(np.prod(src)), int(np.prod(dst))
        w = torch.ones(np.asarray(proj.weight).shape, dtype=torch.float64)
        conn = np.zeros((n_src, n_dst), dtype=bool)
        for i in range(n_src):
            one = torch.zeros((1, n_src), dtype=torch.float64)
            one[0, i] = 1
            out = torch.nn.functional.conv2d(one.reshape((1,) + tuple(src)), w, stride=proj.stride,
                                             padding=proj.padding, dilation=proj.dilation, groups=proj.groups)
            conn[i] = out.reshape(-1).numpy() > 0
        starts = np.array([0, 5, 11, n_dst - 3]), np.array([5, 11, n_dst - 3, n_dst])
        want = np.stack([conn[:, a:b].any(axis=1) for a, b in zip(*starts)], axis=1)
        np.testing.assert_array_equal(compiler.reach_matrix(net, proj, *starts), want)


def test_keys_one_base_and_mask_per_slice_without_overlap():
    d = sp.describe(random_if_mlp(sizes=(40, 30, 20, 10)), small_profile(neurons_per_core=7), "48-chip")
    mask = d.keys.mask
    seen = {}
    for s in d.placement.slices:
        if s.id not in d.keys.slice_key:
            continue
        base = d.keys.slice_key[s.id]
        assert base & mask == base
        keys = base | np.arange(s.neurons)
        assert ((keys & mask) == base).all()          # the slice's mask matches all its neurons
        for k in keys:
            assert int(k) not in seen                  # no key used twice
            seen[int(k)] = s.id
    bases = sorted(d.keys.slice_key.values())
    assert len(set(b & mask for b in bases)) == len(bases)   # no two slices overlap under the mask
    assert d.keys.sources["x"].payload and not d.keys.sources["l1"].payload


# ------------------------------------------------------------------------------ routing tables
NETS = {"mlp": lambda: random_if_mlp(sizes=(30, 24, 16, 10), seed=3), "conv": lambda: random_convnet(seed=1),
        "resnet": lambda: random_resnet(seed=0), "graded": lambda: random_graded_mlp(seed=2),
        "signed": lambda: random_mlp(seed=4, signed=True), "multispike_conv": lambda: random_multispike_convnet(seed=0)}


@pytest.mark.parametrize("profile", ["spinnaker1", "spinnaker2"])
@pytest.mark.parametrize("machine", ["1x1", "2x2", "4x4", "48-chip"])
def test_tables_deliver_every_key_exactly_and_match_pacman(profile, machine):
    chips = {"1x1": 1, "2x2": 4, "4x4": 16, "48-chip": 48}[machine]
    for make in NETS.values():
        net = make()
        d = sp.describe(net, spread_profile(net, profile, 8 if chips > 1 else 16, chips), machine)
        assert d.check["keys"] == sum(s.neurons for s in d.placement.slices if s.id in d.keys.slice_key)
        assert pacman_compare(d.routing, d.machine) == len(d.routing.tables)
        assert max(len(t) for t in d.routing.tables.values()) <= d.machine.router_entries


def test_default_routing_and_compression_are_used_and_checked():
    net = random_if_mlp(sizes=(64, 48, 32, 10), seed=1)
    prof = small_profile(neurons_per_core=4, cores_per_chip=1)
    d = sp.describe(net, prof, "48-chip", compress=False)
    assert d.routing.stats["defaultable"] > 0
    assert d.routing.stats["entries"] == d.routing.stats["entries_uncompressed"] - d.routing.stats["defaultable"]
    # force merging: allow only as many entries as the busiest chip's distinct routes need
    tight = dc.replace(prof, limits=dc.replace(prof.limits, router_entries=12, router_entries_usable=12))
    c = sp.describe(net, tight, "48-chip")
    assert c.routing.stats["max_entries_per_chip"] <= 12 < d.routing.stats["max_entries_per_chip"]
    assert pacman_compare(c.routing, c.machine) == len(c.routing.tables)


def test_independent_check_and_pacman_catch_a_broken_table():
    from pacman.exceptions import PacmanRoutingException
    from spinn_machine import MulticastRoutingEntry, RoutingEntry
    d = sp.describe(random_if_mlp(sizes=(30, 24, 16, 10), seed=3), small_profile(), "48-chip")
    chip = max(d.routing.tables, key=lambda c: len(d.routing.tables[c]))
    t = d.routing.tables[chip]
    cores = next(i for i, c in enumerate(t.cores) if c)
    t.cores[cores] = t.cores[cores] << 1 if t.cores[cores] < 1 << 15 else t.cores[cores] >> 1   # wrong core
    with pytest.raises(sp.SpinnakerError, match="routing check|holds no slice"):
        sp.routing.check_tables(d.machine, d.placement, d.keys, d.routing)
    e = d.routing.compressed[chip][cores]
    d.routing.compressed[chip][cores] = MulticastRoutingEntry(e.key, e.mask, RoutingEntry(
        spinnaker_route=e.spinnaker_route ^ (1 << 6 + 17), defaultable=False))
    with pytest.raises(PacmanRoutingException):
        pacman_compare(d.routing, d.machine)


def test_uncompressible_tables_fail_naming_chip_and_count():
    net = random_if_mlp(sizes=(64, 48, 32, 10), seed=1)
    prof = small_profile(neurons_per_core=4, cores_per_chip=1)
    tight = dc.replace(prof, limits=dc.replace(prof.limits, router_entries=2, router_entries_usable=2))
    with pytest.raises(sp.SpinnakerError, match=r"routing table of chip \(\d+, \d+\) has \d+ entries after "
                                                r"compression, the router holds 2"):
        sp.describe(net, tight, "48-chip")


# ------------------------------------------------------------------------------ packets, EIEIO
def test_packet_control_byte_parity_and_payload():
    keys = np.array([0, 1, 0xFFFFFFFF, 0x12345678], dtype=np.uint64)
    head, pay = packets.encode(keys, np.array([0, -1, 7, -(1 << 31)]), step=5)
    for h, p in zip(head, pay):
        ones = bin(int(h)).count("1") + bin(int(p)).count("1")
        assert ones % 2 == 1 and (int(h) >> 1) & 1 == 1 and (int(h) >> 2) & 3 == 1 and int(h) >> 6 & 3 == 0
        assert int(h) < 1 << 40
    k, v = packets.decode(head, pay, True, "t")
    np.testing.assert_array_equal(k, keys)
    np.testing.assert_array_equal(v, [0, -1, 7, -(1 << 31)])
    head2, _ = packets.encode(keys, None, 0)
    assert all(bin(int(h)).count("1") % 2 == 1 and (int(h) >> 1) & 1 == 0 for h in head2)
    with pytest.raises(sp.SpinnakerError, match="fails its check"):
        packets.decode(head ^ np.uint64(1 << 9), pay, True, "t")     # one flipped key bit


def test_eieio_trace_parses_back_with_spinnman(tmp_path):
    net = random_graded_mlp(seed=2)
    d = sp.describe(net, "spinnaker1", "2x2")
    x = _x(net, n=3)
    rr = sp.replay(d, x, 5, trace_path=tmp_path / "t.eieio", record_spikes=True)
    recs = sp.read_trace(tmp_path / "t.eieio")
    assert rr.trace_messages == len(recs) > 0
    n_keys = sum(len(r[2]) for r in recs)
    assert n_keys == rr.traffic.packets
    # rebuild every event from the trace and compare with what the replay's neurons emitted
    ref = simulate(net, x, 5, record_spikes=True)
    got = {}
    for sample, step, keys, pays in recs:
        for j, key in enumerate(keys):
            got[(sample, step, key)] = None if pays is None else pays[j]
    for name, src in d.keys.sources.items():
        if name not in ref.spikes:
            continue
        codes = ref.spikes[name].reshape(len(x), ref.steps_run, -1)
        keys = d.keys.neuron_keys(d.placement, name)
        from spikeport.simulator.neurons import kernel_class
        k = kernel_class(net[name], True)(net[name], len(x), "cpu", net.datapath, None)
        vals = k.value(torch.as_tensor(codes)).numpy()
        for b, t, i in zip(*np.nonzero(codes)):
            p = got.pop((int(b), int(t), int(keys[i])))
            assert p is not None and (p if p < 1 << 31 else p - (1 << 32)) == int(vals[b, t, i])
    assert all(k[2] >> d.keys.index_bits in {v >> d.keys.index_bits for v in d.keys.slice_key.values()} for k in got)


# ------------------------------------------------------------------------------ replay == simulator
@pytest.mark.parametrize("profile, machine, chips", [("spinnaker1", "1x1", 1), ("spinnaker1", "48-chip", 48),
                                                     ("spinnaker2", "2x2", 4), ("spinnaker2", "3x5", 15)])
@pytest.mark.parametrize("name", sorted(NETS))
def test_replay_equals_simulator(name, profile, machine, chips):
    net = NETS[name]()
    d = sp.describe(net, spread_profile(net, profile, 8 if chips > 1 else 16, chips), machine)
    if machine != "1x1":
        assert len({s.chip for s in d.placement.slices}) > 1          # traffic crosses chips
    rep = sp.verify(d, _x(net, n=3, seed=1), 6, batch_size=2)
    assert rep.identical, str(rep)
    assert rep.traffic.packets > 0 and rep.traffic.dropped == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), width=st.integers(1, 4), height=st.integers(1, 4),
       npc=st.sampled_from([3, 8, 32]), kind=st.sampled_from(["mlp", "signed", "graded", "conv", "resnet"]),
       profile=st.sampled_from(["spinnaker1", "spinnaker2"]))
def test_replay_equals_simulator_random_networks(seed, width, height, npc, kind, profile):
    make = {"mlp": lambda: random_if_mlp(sizes=(20, 16, 12, 5), seed=seed), "signed": lambda: random_mlp(seed=seed, signed=True),
            "graded": lambda: random_graded_mlp(seed=seed), "conv": lambda: random_convnet(seed=seed),
            "resnet": lambda: random_resnet(seed=seed)}[kind]
    net = make()
    prof = spread_profile(net, profile, npc, width * height)
    assume(prof.limits.cores_per_chip <= (17 if profile == "spinnaker1" else 152))
    d = sp.describe(net, prof, f"{width}x{height}")
    rep = sp.verify(d, _x(net, n=2, seed=seed), 5)
    assert rep.identical, str(rep)


def test_verify_reports_first_divergence(monkeypatch):
    net = random_if_mlp(sizes=(30, 24, 16, 10), seed=3)
    d = sp.describe(net, small_profile(), "48-chip")
    real = packets.decode

    def corrupt(head, payload, expect, where):
        k, v = real(head, payload, expect, where)
        if "layer 'x'" in where and "step 2" in where and len(v):
            v = v.copy()
            v[0] += 1
        return k, v
    monkeypatch.setattr(packets, "decode", corrupt)
    rep = sp.verify(d, _x(net, n=2), 5)
    assert not rep.identical
    dv = rep.divergence
    assert dv.step == 2 and dv.layer == "x" and dv.chip.startswith("(")
    assert dv.key == d.keys.slice_key[d.placement.by_layer["x"][dv.neuron // 8].id] + dv.neuron % 8
    assert "first divergence: sample" in str(rep)


def test_dropped_packets_fail_loudly():
    net = random_if_mlp(sizes=(30, 24, 16, 10), seed=3)
    d = sp.describe(net, small_profile(), "48-chip")
    src_chip = d.placement.by_layer["l1"][0].chip
    t = d.routing.tables[src_chip]
    keep = np.array([not ((int(k) & d.keys.mask) == d.keys.slice_key[d.placement.by_layer["l1"][0].id]) for k in t.keys])
    d.routing.tables[src_chip] = sp.routing.ChipTable(t.chip, t.keys[keep], t.masks[keep], t.links[keep],
                                                       [c for c, k in zip(t.cores, keep) if k])
    with pytest.raises(sp.SpinnakerError, match="packets dropped at step .*layer 'l1'.*key 0x"):
        sp.replay(d, _x(net, n=2), 6)


# ------------------------------------------------------------------------------ digits CNNs
@pytest.fixture(scope="module")
def digits_nets(digits, digits_model):
    """The digits ResNet converted with if, aif and pmsm (1 fine-tuning epoch) and a Leaky CNN with negspike."""
    from spikeport import frontend
    from spikeport.convert import convert
    from spikeport.convert.pmsm import pmsm_finetune
    from spikeport.models.digits import digits_leaky_cnn, train_digits_model
    x_train, y_train, _, _ = digits
    cal = x_train[:200]
    ann = frontend.load_model(digits_model, input_shape=(1, 8, 8))
    nets = {"if": convert(ann, cal, method="if"), "aif": convert(ann, cal, method="aif", timesteps=8)}
    pm = pmsm_finetune(ann.module, x_train[:600], y_train[:600], epochs=1, lr=1e-2, seed=0)
    nets["pmsm"] = convert(frontend.load_model(pm, input_shape=(1, 8, 8)), cal, method="pmsm")
    leaky = train_digits_model(digits_leaky_cnn(slope=0.5), x_train, y_train, epochs=3, seed=0)
    nets["negspike"] = convert(frontend.load_model(leaky, input_shape=(1, 8, 8)), cal, method="negspike")
    return nets


@pytest.mark.slow
@pytest.mark.parametrize("method", ["if", "aif", "pmsm", "negspike"])
@pytest.mark.parametrize("profile", ["spinnaker1", "spinnaker2"])
def test_digits_cnn_replay_equals_simulator(digits_nets, digits, method, profile):
    q, _ = compiler.quantize(digits_nets[method], profile)
    x = digits[2][:6]
    for prof, machine in ((load_profile(profile), "48-chip"), (load_profile(profile), "1x1"),
                          (small_profile(profile, neurons_per_core=64, cores_per_chip=1), "48-chip")):
        d = sp.describe(q, prof, machine)
        rep = sp.verify(d, x, 8)
        assert rep.identical, f"{method} {profile} {machine}: {rep}"
        payload = {name: s.payload for name, s in d.keys.sources.items()}
        assert any(payload.values())                   # the analog input always carries a payload
        if method == "if":
            assert not any(v for k, v in payload.items() if k != q.inputs()[0].name)
        else:                                          # signed / multi-level / graded events
            assert all(payload.values())


# ------------------------------------------------------------------------------ large nets, errors
def test_4096_dense_and_784_512_256_10_place_and_route_on_a_board():
    big = Network(datapath=Datapath(profile="spinnaker1"))
    big.add(Input("x", shape=(4096,), payload=SpikePayload(kind="graded", bits=8, min_level=0, max_level=255)))
    big.add(Population("fc", shape=(4096,), neuron=IF(threshold=np.full(4096, 1000), bias=np.zeros(4096, dtype=np.int64)),
                       t_start=1))
    big.add(Dense("x_fc", source="x", target="fc", weight=np.ones((4096, 4096), dtype=np.int64), delay=1))
    big.outputs = ["fc"]
    d = sp.describe(big, "spinnaker1", "48-chip")
    rows = {r["layer"]: r for r in sp.summary(d)}
    assert rows["fc"]["cores"] == 16 and rows["x"]["cores"] == 16 and rows["x"]["keys"] == 4096
    assert rows["x"]["target_cores"] == 16 * 16
    assert d.check["keys"] == 4096
    mlp = sp.describe(random_if_mlp(), "spinnaker1", "48-chip")
    rows = {r["layer"]: r for r in sp.summary(mlp)}
    assert [rows[k]["cores"] for k in ("x", "l1", "l2", "l3")] == [4, 2, 1, 1]
    assert [rows[k]["keys"] for k in ("x", "l1", "l2", "l3")] == [784, 512, 256, 0]
    assert mlp.routing.stats["max_entries_per_chip"] <= 1023


def test_unplaceable_layer_and_payload_errors_name_layer_value_limit(tmp_path):
    net = random_if_mlp(sizes=(784, 512, 256, 10))
    with pytest.raises(sp.SpinnakerError, match="layer '.*' does not fit machine '1x1': the network needs 2 chips"):
        sp.describe(net, small_profile(neurons_per_core=256, cores_per_chip=4), "1x1")
    tiny = small_profile(memory_per_core_bytes=32)        # not even one 48-byte neuron state
    with pytest.raises(sp.SpinnakerError, match="layer 'l1' cannot be mapped.*memory_per_core_bytes requires"):
        sp.describe(net, tiny, "48-chip")
    g = random_graded_mlp(seed=1, levels=(-(1 << 33), 5))
    with pytest.raises(sp.SpinnakerError, match=r"layer 'g': event value -8589934592 does not fit the 32-bit packet "
                                                r"payload \(two's complement range \[-2147483648, 2147483647\]\)"):
        sp.describe(g, "spinnaker1", "48-chip")


# ------------------------------------------------------------------------------ export + CLI
def test_export_folder_is_atomic_and_machine_readable(tmp_path):
    net = random_resnet(seed=0)
    d = sp.describe(net, small_profile(), "3x3")
    out = sp.export(d, tmp_path / "desc")
    assert sorted(p.name for p in out.iterdir()) == ["description.json", "tables.bin"]
    doc = json.loads((out / "description.json").read_text())
    assert doc["checks"]["pacman_compare_tables"] == len(d.routing.tables)
    tables = sp.read_tables(out / "tables.bin")
    assert sum(len(v) for v in tables.values()) == d.routing.stats["entries"]
    for chip, t in d.routing.tables.items():
        xy = tuple(int(v) for v in d.machine.xy[chip])
        assert [(k, m) for k, m, _ in tables[xy]] == [(int(a), int(b)) for a, b in zip(t.keys, t.masks)]
        assert [r for _, _, r in tables[xy]] == t.route_words()
    assert [s["key"] for s in doc["slices"] if s["key"]] == [f"0x{d.keys.slice_key[i]:08X}" for i in sorted(d.keys.slice_key)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(sp.SpinnakerError, match="not empty"):
        sp.export(d, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"


def test_cli_export_run_verify_spinnaker(tmp_path):
    from typer.testing import CliRunner
    from spikeport.cli import app
    net = random_graded_mlp(seed=2)
    ir.save(net, tmp_path / "q.h5")
    x = _x(net, n=4)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, dtype=np.int64))
    r = CliRunner()
    res = r.invoke(app, ["export", str(tmp_path / "q.h5"), "--target", "spinnaker", "--out", str(tmp_path / "out"),
                         "--machine", "2x2", "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["layers"][0]["cores"] >= 1
    res = r.invoke(app, ["run", str(tmp_path / "q.h5"), "--target", "spinnaker", "--data", str(tmp_path / "d.npz"),
                         "--timesteps", "5", "--trace", str(tmp_path / "t.eieio"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["traffic"]["dropped"] == 0 and doc["traffic"]["packets"] > 0
    assert doc["traffic"]["routing_energy_j"] > 0
    res = r.invoke(app, ["verify", str(tmp_path / "q.h5"), "--target", "spinnaker", "--data", str(tmp_path / "d.npz"),
                         "--timesteps", "5", "--profile", "spinnaker2"])
    assert res.exit_code == 0 and "identical" in res.output, res.output
    res = r.invoke(app, ["export", str(tmp_path / "q.h5"), "--target", "spinnaker", "--out", str(tmp_path / "o2"),
                         "--machine", "banana"])
    assert res.exit_code == 2 and "unknown machine" in res.output and not (tmp_path / "o2").exists()


def test_spinnaker2_routes_to_cores_beyond_18(tmp_path):
    """SpiNNaker 2 chips have 152 PEs: route words wider than SpiNNaker 1's 24 bits, PACMAN's check
    through the relabelled routes, tables.bin with several route words, replay still exact."""
    net = random_if_mlp(sizes=(30, 24, 16, 10), seed=3)
    d = sp.describe(net, small_profile("spinnaker2", neurons_per_core=2, cores_per_chip=152), "1x1")
    assert max(s.core for s in d.placement.slices) > 18
    assert pacman_compare(d.routing, d.machine) == 1
    out = sp.export(d, tmp_path / "s2")
    rows = sp.read_tables(out / "tables.bin")[(0, 0)]
    assert max(r for _, _, r in rows) >= 1 << 32          # a core above 25 needs a second route word
    assert [r for _, _, r in rows] == d.routing.tables[0].route_words()
    rep = sp.verify(d, _x(net, n=2), 5)
    assert rep.identical, str(rep)


def test_cli_export_refuses_uncompressible_tables_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner
    from spikeport.cli import app
    from spikeport.hw_profiles.loader import PROFILE_DIR
    text = (PROFILE_DIR / "spinnaker1.toml").read_text()
    for old, new in (('name = "spinnaker1"', 'name = "tight-spinnaker"'), ("neurons_per_core = 256", "neurons_per_core = 4"),
                     ("cores_per_chip = 16", "cores_per_chip = 1"), ("max_neurons_per_chip = 4096", "max_neurons_per_chip = 4"),
                     ("router_entries = 1024", "router_entries = 2"), ("router_entries_usable = 1023", "router_entries_usable = 2")):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "tight.toml").write_text(text)
    ir.save(random_if_mlp(sizes=(64, 48, 32, 10), seed=1), tmp_path / "q.h5")
    res = CliRunner().invoke(app, ["export", str(tmp_path / "q.h5"), "--target", "spinnaker", "--out", str(tmp_path / "out"),
                                   "--profile", str(tmp_path / "tight.toml")])
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.split())
    assert "routing table of chip (" in flat and "entries after compression, the router holds 2" in flat
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.h5", "tight.toml"]
