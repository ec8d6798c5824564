"""Resources of ECMT ViTs: token projections on neuro cores (closed forms checked by brute force),
operator placement as profile data (hw_profiles [operators]), embedded cores, clear refusals."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spikeport import hw_profiles, ir
from spikeport.cli import app
from spikeport.compiler.operator_placement import PlacementError, place_operators
from spikeport.compiler.partition import _cores_reached, partition, reach_matrix
from spikeport.errors import EXIT_USER
from spikeport.hw_profiles import ProfileError, load_profile
from spikeport.ir import operators as O

from conftest import export_onnx


@pytest.fixture(scope="module")
def vit(digits, tmp_path_factory):
    from spikeport.convert import convert
    from spikeport.frontend import load_model
    from spikeport.models.digits_vit import pretrained_digits_vit
    folder = tmp_path_factory.mktemp("vit_resources")
    ann = load_model(export_onnx(pretrained_digits_vit("vit"), folder / "vit.onnx"))
    net = convert(ann, digits[0][:300], "ecmt")
    ir.save(net, folder / "net.h5")
    return net, folder


# ---------------------------------------------------------------------- profile data and its validator
def test_builtin_profiles_place_operators_as_data():
    l2 = load_profile("loihi2").operators
    assert l2.embedded_cores_per_chip == 6 and not l2.embedded_on_neuro_cores
    assert l2.places("SoftmaxEC") == ("embedded", "host") and l2.places("Rearrange") == ("neuro",)
    s1 = load_profile("spinnaker1").operators
    assert s1.embedded_on_neuro_cores and s1.embedded_memory_bytes == 64 * 1024 and s1.embedded_arithmetic == ("fixed",)
    assert load_profile("spinnaker2").operators.embedded_arithmetic == ("fixed", "float32")
    assert load_profile("generic45nm").operators.places("MatMulEC") == ("host",)
    assert load_profile("loihi1").operators.embedded_cores_per_chip == 3
    for name in hw_profiles.list_profiles():
        p = load_profile(name)
        assert any(a.startswith("Operators") for a in p.assumptions) and p.source_of("operators", "embedded")


def _edited(tmp_path, edit) -> str:
    text = (hw_profiles.loader.PROFILE_DIR / "loihi2.toml").read_text()
    path = tmp_path / "chip.toml"
    path.write_text(edit(text))
    return str(path)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace('embedded = ["LayerNormEC"', 'embedded = ["LayerNorm"'), r"operators\.embedded = \['LayerNorm'"),
    (lambda t: t.replace("embedded_cores_per_chip = 6 ", "embedded_cores_per_chip = 0 "),
     r"operators\.embedded = .*needs operators\.embedded_cores_per_chip >= 1"),
    (lambda t: t.replace("embedded_cores_per_chip = 6 ", "embedded_cores_per_chip = true "),
     r"operators\.embedded_cores_per_chip = True: wrong type"),
    (lambda t: t.replace('embedded_arithmetic = ["fixed"]', 'embedded_arithmetic = ["double"]'),
     r"operators\.embedded_arithmetic"),
    (lambda t: t.replace("embedded_cores_per_chip = 6 ", "embedded_cores_per_chip = 6\nembedded_on_neuro_cores = 1"),
     r"operators\.embedded_on_neuro_cores = 1: wrong type"),
    (lambda t: t.replace('"operators.embedded_cores_per_chip" =', '"operators.bogus" ='), r"sources\.operators\.bogus"),
    (lambda t: t.replace("embedded_cores_per_chip = 6 ", "cores = 6 "), r"operators\.cores = 6: unknown key"),
])
def test_operator_table_errors_name_the_key(tmp_path, edit, match):
    with pytest.raises(ProfileError, match=match):
        load_profile(_edited(tmp_path, edit))


def test_a_profile_without_operators_loads_and_places_nothing(tmp_path, vit):
    net, _ = vit
    def drop(text: str) -> str:
        head, tail = text[:text.index("\n[operators]\n")], text[text.index("\n[sources]\n"):]
        return head + "\n".join(line for line in tail.split("\n") if not line.startswith('"operators'))
    path = _edited(tmp_path, drop)
    prof = load_profile(path)
    assert prof.operators is None
    with pytest.raises(PlacementError, match=r"operator 'patch_embed_reshape' \(Rearrange\) cannot be placed on profile "
                                             r"'loihi2': the profile has no \[operators\] table"):
        place_operators(net, prof)


# ---------------------------------------------------------------------- token projections: closed forms
def _small_profile(n: int):
    p = load_profile("loihi2")
    return dataclasses.replace(p, limits=dataclasses.replace(p.limits, neurons_per_core=n))


@pytest.mark.parametrize("per_core", [40, 100, 511])
def test_token_projection_partition_equals_brute_force(vit, per_core):
    """Synapse words (shared weight rows once per core), fan-in, cores reached and the reach matrix
    of every token projection, against an enumeration of the slice's neurons."""
    net, _ = vit
    prof = _small_profile(per_core)
    pl = partition(net, prof)
    tds = [p for p in net.projections() if isinstance(p, O.TokenDense)]
    assert len(tds) == 9
    for proj in tds:
        src, dst = net.shape_of(proj.source), net.shape_of(proj.target)
        c_in, c_out = src[-1], dst[-1]
        lp = pl.layers[proj.target]
        others = [p for p in net.incoming(proj.target) if p is not proj]
        assert not others
        starts = np.array([c.start for c in lp.cores])
        stops = np.array([c.stop for c in lp.cores])
        for core in lp.cores:
            flat = np.arange(core.start, core.stop)
            channels, tokens = set(flat % c_out), set(flat // c_out)
            assert core.synapses == len(channels) * c_in
            assert core.fan_in == len(tokens) * c_in
        reached = _cores_reached(net, proj, lp)
        rm = reach_matrix(net, proj, starts, stops)
        for s in range(int(np.prod(src))):
            token = s // c_in
            want = {k for k, c in enumerate(lp.cores) if c.start < (token + 1) * c_out and c.stop > token * c_out}
            assert reached[s] == len(want) and set(np.flatnonzero(rm[s])) == want


# ---------------------------------------------------------------------- operators: where they run
def test_operator_placement_of_the_digits_vit(vit):
    net, _ = vit
    l2 = partition(net, load_profile("loihi2"))
    ops = l2.operators
    assert ops.count("neuro") == 26 and ops.count("embedded") == 13 and ops.count("host") == 0
    # state: 5 LayerNorms (S, P of 17x32), 2 softmaxes (2x17x17), 2 GELUs (17x64), 2 q k^T (A, B, S_K,
    # mean) and 2 attn v products, 4 bytes a word
    want = 4 * (5 * 2 * 544 + 2 * 2 * 578 + 2 * 2 * 1088 + 2 * (544 + 544 + 2 * 578) + 2 * (578 + 544 + 2 * 544))
    assert ops.state_bytes("embedded") == want == 84_048
    assert ops.embedded_cores == 1 and l2.chips == 1 and any("not published" in n for n in l2.notes)
    neuro = sum(lp.n_cores for lp in l2.layers.values())
    assert l2.cores == neuro                                   # Loihi: embedded cores are not neuro cores
    s1 = partition(net, load_profile("spinnaker1"))
    assert s1.operators.embedded_cores == 2                    # ceil(84,048 / 65,536) DTCM cores
    assert s1.cores == sum(lp.n_cores for lp in s1.layers.values()) + 2
    g = partition(net, load_profile("generic45nm"))
    assert g.operators.count("host") == 13 and g.operators.embedded_cores == 0
    assert any("runs them on host" in n for n in g.notes)
    w = ops.work_per_step("embedded")
    assert w["exp"] == 2 * 578 + 2 * 1088 and w["sqrt"] == 5 * 17


def test_quantised_networks_keep_their_placement_or_are_refused(vit):
    net, _ = vit
    q = copy.copy(net)
    q.datapath = load_profile("generic45nm").datapath      # stands for a network compiled for a chip
    with pytest.raises(PlacementError, match=r"operator '.*' \((LayerNormEC|MatMulEC|SoftmaxEC|GELUEC)\) cannot be "
                                             r"placed on profile 'generic45nm': the network says runs_on = 'embedded'"):
        place_operators(q, load_profile("generic45nm"))
    with pytest.raises(PlacementError, match=r"arithmetic 'float32' on embedded cores, the profile's embedded cores "
                                             r"run \['fixed'\]"):
        place_operators(q, load_profile("loihi2"))
    assert place_operators(q, load_profile("spinnaker2")).count("embedded") == 13


def test_cli_resources_on_the_vit_and_an_unplaceable_operator(vit, tmp_path):
    net, folder = vit
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["resources", str(folder / "net.h5"), "--profile", "spinnaker1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "operators on spinnaker1: 2 embedded core(s) in use" in res.output
    doc = json.loads(out.read_text())
    assert doc["operators"]["per_place"]["embedded"]["operators"] == 13 and doc["operators"]["embedded_cores"] == 2
    bad = _edited(tmp_path, lambda t: t.replace('"SoftmaxEC", ', ''))
    out2 = tmp_path / "r2.json"
    res = runner.invoke(app, ["resources", str(folder / "net.h5"), "--profile", bad, "--json", str(out2)])
    assert res.exit_code == EXIT_USER and "Traceback" not in res.output
    assert "operator 'blocks_blocks_0_attn_softmax' (SoftmaxEC) cannot be placed on profile 'loihi2'" in res.output
    assert "runs SoftmaxEC nowhere" in res.output and not out2.exists()


def test_conv_fan_in_count_without_fields_equals_the_field_union():
    """The counting-only union (row patterns x column unions, used while bisecting slice sizes)
    equals the materialised receptive-field union (checked against brute force in test_resources)."""
    import importlib

    from spikeport.ir.nodes import Conv2d
    part = importlib.import_module("spikeport.compiler.partition")
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(150):
        cin, co, g = 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4)), int(rng.choice([1, 2]))
        h, w, k = int(rng.integers(3, 12)), int(rng.integers(3, 12)), int(rng.integers(1, 4))
        s, p, d = int(rng.integers(1, 3)), int(rng.integers(0, 2)), int(rng.integers(1, 3))
        ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
        if ho < 1 or wo < 1:
            continue
        proj = Conv2d("c", source="a", target="b", weight=np.ones((co, cin // g, k, k)), stride=(s, s),
                      padding=(p, p), dilation=(d, d), groups=g)
        size = co * ho * wo
        n = int(rng.integers(1, size + 1))
        starts = np.arange(0, size, n)
        stops = np.minimum(starts + n, size)
        fast = part._conv_reach(proj, (cin, h, w), (co, ho, wo), starts, stops)[0]
        ref = part._conv_reach(proj, (cin, h, w), (co, ho, wo), starts, stops, per_source=True)[0]
        assert np.array_equal(fast, ref)
        checked += 1
    assert checked > 100


def test_quantised_vit_partitions_on_loihi2(vit):
    from spikeport import compiler
    net, _ = vit
    qnet, _ = compiler.quantize(net, load_profile("loihi2"))
    pl = partition(qnet, load_profile("loihi2"))
    assert pl.operators.count("embedded") == 13 and pl.operators.embedded_cores == 1
    assert {u.arithmetic for u in pl.operators.operators if u.place == "embedded"} == {"fixed"}
    assert set(pl.layers) == {p.name for p in qnet.populations()}
