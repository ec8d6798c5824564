"""Hardware profiles: every built-in profile loads; malformed profiles fail naming file, key, value."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spikeport.hw_profiles import Energy, Limits, Profile, ProfileError, list_profiles, load_profile
from spikeport.hw_profiles.loader import DATAPATH_RULES, PROFILE_DIR
from spikeport.ir import Datapath

BUILTIN = ["generic45nm", "loihi1", "loihi2", "spinnaker1", "spinnaker2"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "hw_profiles.md"


def test_builtin_profiles_are_listed():
    assert list_profiles() == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profile_loads(name):
    p = load_profile(name)
    assert isinstance(p, Profile) and p.name == name and p.path == PROFILE_DIR / f"{name}.toml"
    assert isinstance(p.datapath, Datapath) and p.datapath.profile == name
    p.datapath.validate()
    assert isinstance(p.limits, Limits) and isinstance(p.energy, Energy)
    assert p.limits.neurons_per_core >= 1 and p.energy.synaptic_op_pj > 0
    # every number has a citation (key-level or section-level)
    for section, obj in (("datapath", p.datapath), ("limits", p.limits), ("energy", p.energy)):
        for f in dataclasses.fields(obj):
            if f.name != "profile" and getattr(obj, f.name) is not None:
                assert p.source_of(section, f.name), f"{name}: {section}.{f.name} has no source"


def test_loihi2_profile_matches_ir_default_datapath():
    """The IR's Datapath defaults are Loihi 2 as modelled by Lava; the profile must agree."""
    assert load_profile("loihi2").datapath == Datapath(profile="loihi2")


def test_specific_published_figures():
    l1, s1, s2, g = (load_profile(n) for n in ("loihi1", "spinnaker1", "spinnaker2", "generic45nm"))
    assert (l1.limits.fan_in_per_core, l1.limits.fan_out_per_core, l1.limits.neurons_per_core) == (4096, 4096, 1024)
    assert l1.datapath.payload_bits == 1
    assert load_profile("loihi2").limits.fan_in_per_core is None          # not public: modelled from memory
    assert any("fan-in" in a for a in load_profile("loihi2").assumptions)
    assert any("no published per-operation energy" in a for a in load_profile("loihi2").assumptions)
    assert (s1.limits.router_entries, s1.limits.router_entries_usable) == (1024, 1023)
    assert s2.limits.router_entries == 16384
    assert s1.datapath.state_overflow == "saturate" and s1.datapath.current_bits == 32
    assert (g.energy.ac_pj, g.energy.mac_pj, g.energy.int8_add_pj, g.energy.int32_add_pj) == (0.9, 4.6, 0.03, 0.1)
    assert (g.energy.sram_8kb_64b_pj, g.energy.sram_1mb_64b_pj) == (10.0, 100.0)
    assert g.datapath.weight_bits == 8 and g.datapath.state_bits == 32


def test_datapath_rules_cover_every_datapath_field():
    assert set(DATAPATH_RULES) == {f.name for f in dataclasses.fields(Datapath)} - {"profile"}


def test_docs_describe_every_field():
    text = DOCS.read_text()
    for cls in (Limits, Energy):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in text, f"docs/hw_profiles.md does not document {cls.__name__}.{f.name}"


def test_load_by_path(tmp_path):
    path = tmp_path / "mychip.toml"
    path.write_text((PROFILE_DIR / "loihi2.toml").read_text().replace('name = "loihi2"', 'name = "mychip"'))
    p = load_profile(path)
    assert p.name == "mychip" and p.path == path and p.datapath.profile == "mychip"
    assert load_profile(str(path)).name == "mychip"


def test_unknown_name_lists_profiles():
    with pytest.raises(ProfileError, match="loihi2"):
        load_profile("loihi9")


def _broken(tmp_path, old: str, new: str) -> Path:
    text = (PROFILE_DIR / "loihi2.toml").read_text()
    assert old in text, old
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,key,value,rule", [
    ("weight_bits = 9 ", "weight_bits = 9\nweight_bitz = 3 ", "weight_bitz", "3", "unknown key"),
    ("state_bits = 24 ", "", "datapath.state_bits", "is missing", "required key"),
    ("synapse_delay = 1 ", "synapse_delay = 63 ", "datapath.synapse_delay", "63", "must be <= limits.max_delay_steps = 62"),
    ("neurons_per_core = 8192 ", "neurons_per_core = 9000000000000 ", "limits.neurons_per_core", "9000000000000",
     "out of range, must be an integer in 1..16777216"),
    ("max_delay_steps = 62 ", "max_delay_steps = -1 ", "limits.max_delay_steps", "-1", "out of range"),
    ("synaptic_op_pj = 23.6 ", "synaptic_op_pj = nan ", "energy.synaptic_op_pj", "nan", "not a number"),
    ("synaptic_op_pj = 23.6 ", "synaptic_op_pj = inf ", "energy.synaptic_op_pj", "inf", "out of range"),
    ("weight_bits = 9 ", "weight_bits = 9.0 ", "datapath.weight_bits", "9.0", "wrong type float"),
    ("threshold_bits = 17 ", 'threshold_bits = "17" ', "threshold_bits", "'17'", "wrong type"),
    ("bias_bits = 13 ", "bias_bits = -4 ", "bias_bits", "-4", "out of range"),
    ("synapse_delay = 1 ", "synapse_delay = true ", "synapse_delay", "True", "wrong type"),
    ("neurons_per_core = 8192 ", "neurons_per_core = 0 ", "neurons_per_core", "0", "out of range"),
    ("synaptic_op_pj = 23.6 ", "synaptic_op_pj = -1.0 ", "synaptic_op_pj", "-1.0", "out of range"),
    ('state_overflow = "saturate"', 'state_overflow = "clamp"', "state_overflow", "'clamp'", "'saturate' or 'wrap'"),
    ("weight_exp_min = -8 ", "weight_exp_min = 9 ", "weight_exp_min", "9", "weight_exp_max"),
    ('kind = "loihi"', 'kind = "tpu"', "kind", "'tpu'", "one of"),
])
def test_malformed_profile_names_file_key_value(tmp_path, old, new, key, value, rule):
    path = _broken(tmp_path, old, new)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and value in msg and rule in msg, msg


def test_unknown_section_and_missing_source(tmp_path):
    path = _broken(tmp_path, "[limits]", "[limitz]\nx = 1\n\n[limits]")
    with pytest.raises(ProfileError, match=r"broken\.toml.*limitz.*unknown section"):
        load_profile(path)
    path = _broken(tmp_path, '"limits.max_delay_steps" = ', '"limits.unused" = ')
    with pytest.raises(ProfileError, match=r"limits\.unused.*names no key"):
        load_profile(path)
    text = (PROFILE_DIR / "loihi2.toml").read_text()
    text = "\n".join(l for l in text.splitlines() if not l.startswith('"limits.max_delay_steps"'))
    path.write_text(text)
    with pytest.raises(ProfileError, match=r"max_delay_steps = 62: every number needs a citation"):
        load_profile(path)


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[profile\nname = 1")
    with pytest.raises(ProfileError, match=r"bad\.toml: not valid TOML"):
        load_profile(path)
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "missing.toml")


def test_non_utf8_and_unreadable_profiles_name_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes((PROFILE_DIR / "loihi2.toml").read_bytes().replace(b"Loihi", b"Lo\xefhi", 1))
    with pytest.raises(ProfileError, match=r"latin1\.toml: not UTF-8 text \(byte 0xef at line \d+"):
        load_profile(path)
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ProfileError, match="dir.toml"):
        load_profile(folder)


def test_profile_errors_need_no_console_markup(tmp_path):
    """Messages name keys as section.key: nothing in them looks like a [markup] tag."""
    for old, new in (("state_bits = 24 ", ""), ("[limits]", "[limitz]\nx = 1\n\n[limits]"),
                     ("weight_bits = 9 ", "weight_bits = 9\nweight_bitz = 3 ")):
        with pytest.raises(ProfileError) as err:
            load_profile(_broken(tmp_path, old, new))
        assert "[" not in str(err.value), str(err.value)
