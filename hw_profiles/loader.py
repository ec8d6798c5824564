"""Load hardware profiles from TOML and check them with one validator.

Built-in profiles live next to this file (``<name>.toml``); a user's profile is any path to a TOML
file of the same schema (docs/hw_profiles.md). Every violation raises :class:`ProfileError` naming
the file, the key, the value and the rule, so a typo never turns into a silent default.
"""
from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from ..ir import MAX_STEPS, Datapath
from .profile import CONV_WEIGHT_FORMATS, PLACES, PROFILE_KINDS, Energy, Limits, Operators, Profile, ProfileError

PROFILE_DIR = Path(__file__).resolve().parent
SECTIONS = ("profile", "datapath", "limits", "energy", "sources")
OPTIONAL_SECTIONS = ("operators",)
TOP_LEVEL_KEYS = ("assumptions",)
NUMBER_SECTIONS = ("datapath", "limits", "energy", "operators")

# ----------------------------------------------------------------------------- per-key rules
# Each rule is (python type(s), check, text of the rule). A check returns True when the value is fine.
Rule = tuple[tuple[type, ...], Callable[[Any], bool], str]


def _bits(lo: int = 1, hi: int = 64) -> Rule:
    return (int,), lambda v: lo <= v <= hi, f"an integer number of bits in {lo}..{hi}"


def _count(lo: int, hi: int) -> Rule:
    return (int,), lambda v: lo <= v <= hi, f"an integer in {lo}..{hi}"


_OVERFLOW: Rule = ((str,), lambda v: v in ("saturate", "wrap"), "'saturate' or 'wrap'")
_ENERGY: Rule = ((int, float), lambda v: 0 <= v <= 1e9, "a finite number in 0..1e9 pJ")
_POWER: Rule = ((int, float), lambda v: 0 <= v <= 1e4, "a finite number in 0..1e4 W")
_TEXT: Rule = ((str,), lambda v: bool(v.strip()), "a non-empty string")

PROFILE_RULES: dict[str, Rule] = {
    "name": _TEXT,
    "description": _TEXT,
    "kind": ((str,), lambda v: v in PROFILE_KINDS, f"one of {', '.join(PROFILE_KINDS)}"),
}

DATAPATH_RULES: dict[str, Rule] = {
    "weight_bits": _bits(2, 32),
    "weight_step": _count(1, 2 ** 31),
    "weight_exp_min": ((int,), lambda v: -32 <= v <= 32, "an integer exponent in -32..32"),
    "weight_exp_max": ((int,), lambda v: -32 <= v <= 32, "an integer exponent in -32..32"),
    "act_shift": ((int,), lambda v: 0 <= v <= 32, "an integer shift in 0..32"),
    "vth_shift": ((int,), lambda v: 0 <= v <= 32, "an integer shift in 0..32"),
    "threshold_bits": _bits(1, 63),
    "bias_bits": _bits(2, 64),
    "bias_exp_min": ((int,), lambda v: -32 <= v <= 32, "an integer exponent in -32..32"),
    "bias_exp_max": ((int,), lambda v: -32 <= v <= 32, "an integer exponent in -32..32"),
    "state_bits": _bits(2, 64),
    "state_overflow": _OVERFLOW,
    "current_bits": _bits(2, 64),
    "current_overflow": _OVERFLOW,
    "decay_bits": _bits(1, 32),
    "payload_bits": _bits(1, 32),
    "synapse_delay": _count(0, MAX_STEPS),
    "input_bits": _bits(1, 32),
    "conv_acc_bits": ((int,), lambda v: 0 <= v <= 64, "an integer number of bits in 0..64 (0: exact, no wrap)"),
}
# Optional datapath keys and the value a profile that omits them gets (a limit it does not declare).
DATAPATH_OPTIONAL = {"conv_acc_bits": 0}

# Upper bounds are far above any chip; a larger value is a typo that would make estimates absurd.
LIMIT_RULES: dict[str, Rule] = {
    "neurons_per_core": _count(1, 2 ** 24),
    "cores_per_chip": _count(1, 2 ** 20),
    "memory_per_core_bytes": _count(1, 2 ** 36),
    "synapse_word_bits": _count(1, 1024),
    "neuron_state_bytes": _count(1, 2 ** 16),
    "max_neurons_per_chip": _count(1, 2 ** 36),
    "max_delay_steps": _count(0, MAX_STEPS),
    "fan_in_per_core": _count(1, 2 ** 36),
    "fan_out_per_core": _count(1, 2 ** 36),
    "synapse_memory_per_core_bytes": _count(1, 2 ** 36),
    "sdram_per_chip_bytes": _count(1, 2 ** 44),
    "max_synapses_per_chip": _count(1, 2 ** 44),
    "router_entries": _count(1, 2 ** 24),
    "router_entries_usable": _count(1, 2 ** 24),
    "axon_entry_bytes": _count(1, 2 ** 16),
    "router_packets_per_s": _count(1, 2 ** 40),
    "link_packets_per_s": _count(1, 2 ** 40),
    "conv_weights": ((str,), lambda v: v in CONV_WEIGHT_FORMATS, f"one of {', '.join(CONV_WEIGHT_FORMATS)}"),
}
assert set(LIMIT_RULES) == {f.name for f in fields(Limits)}, "every Limits field needs a rule"
ENERGY_RULES: dict[str, Rule] = {f.name: (_POWER if f.name.endswith("_w") else _ENERGY) for f in fields(Energy)}


def _operator_kinds() -> set[str]:
    """Operator kinds the IR knows (registered typed operators, e.g. ir.operators)."""
    from ..ir.nodes import NODE_TYPES, Operator
    return {name for name, cls in NODE_TYPES.items() if isinstance(cls, type) and issubclass(cls, Operator)
            and cls is not Operator}


def _kinds_rule() -> Rule:
    return ((list,), lambda v: all(isinstance(k, str) for k in v) and set(v) <= _operator_kinds()
            and len(set(v)) == len(v), "a list of distinct operator kinds (ir.operators class names: "
            + ", ".join(sorted(_operator_kinds())) + ")")


OPERATOR_RULES: dict[str, Rule] = {
    **{place: _kinds_rule() for place in PLACES},
    "embedded_cores_per_chip": _count(0, 2 ** 20),
    "embedded_on_neuro_cores": ((bool,), lambda v: True, "true or false"),
    "embedded_memory_bytes": _count(1, 2 ** 36),
    "embedded_arithmetic": ((list,), lambda v: bool(v) and all(a in ("fixed", "float32") for a in v),
                            "a non-empty list of 'fixed' / 'float32'"),
    "embedded_ops_per_s": _count(1, 2 ** 50),
}
assert set(OPERATOR_RULES) == {f.name for f in fields(Operators)}, "every Operators field needs a rule"


def _required(cls) -> set[str]:
    """Dataclass fields without a default are required in the TOML."""
    from dataclasses import MISSING
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


REQUIRED = {
    "profile": set(PROFILE_RULES),
    "datapath": set(DATAPATH_RULES) - set(DATAPATH_OPTIONAL),
    "limits": _required(Limits),
    "energy": _required(Energy),
    "operators": set(PLACES) | {"embedded_cores_per_chip"},
}
RULES = {"profile": PROFILE_RULES, "datapath": DATAPATH_RULES, "limits": LIMIT_RULES, "energy": ENERGY_RULES,
         "operators": OPERATOR_RULES}


# ----------------------------------------------------------------------------- the validator
def _fail(where: str, key: str, value: Any, rule: str) -> ProfileError:
    """Keys are written ``section.key`` (no brackets, so no console markup can eat them)."""
    shown = repr(value)
    return ProfileError(f"{where}: {key} = {shown[:200]}{'...' if len(shown) > 200 else ''}: {rule}")


def _names(items) -> str:
    return ", ".join(str(i) for i in items)


def _check_value(where: str, section: str, key: str, value: Any, rule: Rule) -> None:
    types, ok, text = rule
    is_bool = isinstance(value, bool)
    if (is_bool and bool not in types) or not isinstance(value, types):
        raise _fail(where, f"{section}.{key}", value, f"wrong type {type(value).__name__}, must be {text}")
    if isinstance(value, float) and value != value:
        raise _fail(where, f"{section}.{key}", value, f"not a number, must be {text}")
    if not ok(value):
        raise _fail(where, f"{section}.{key}", value, f"out of range, must be {text}")


def validate_profile_data(data: dict, where: str) -> None:
    """The one validator: unknown or missing sections/keys, types, ranges, cross-field rules and a
    source for every number. Raises ProfileError naming ``where`` (the file), the key, value, rule."""
    for key in data:
        if key not in SECTIONS + OPTIONAL_SECTIONS and key not in TOP_LEVEL_KEYS:
            raise _fail(where, key, data[key], "unknown section or top-level key (allowed: "
                        f"{_names(SECTIONS + OPTIONAL_SECTIONS + TOP_LEVEL_KEYS)})")
    for section in OPTIONAL_SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise _fail(where, section, data[section], "must be a table (a section)")
    for section in SECTIONS:
        if section not in data:
            raise ProfileError(f"{where}: section [{section}] is missing (required sections: {_names(SECTIONS)})")
        if not isinstance(data[section], dict):
            raise _fail(where, section, data[section], "must be a table (a section)")
    for section, rules in RULES.items():
        if section not in data:        # an optional section left out
            continue
        table = data[section]
        for key, value in table.items():
            if key not in rules:
                raise _fail(where, f"{section}.{key}", value, f"unknown key (allowed: {_names(sorted(rules))})")
            _check_value(where, section, key, value, rules[key])
        for key in sorted(REQUIRED[section] - set(table)):
            raise ProfileError(f"{where}: {section}.{key} is missing (a required key)")
    _check_datapath_relations(data["datapath"], where)
    _check_limit_relations(data["limits"], where)
    if "operators" in data:
        _check_operator_relations(data["operators"], data["limits"], where)
    if data["datapath"]["synapse_delay"] > data["limits"]["max_delay_steps"]:
        raise _fail(where, "datapath.synapse_delay", data["datapath"]["synapse_delay"],
                    f"must be <= limits.max_delay_steps = {data['limits']['max_delay_steps']}")
    _check_sources(data, where)
    assumptions = data.get("assumptions", [])
    if not isinstance(assumptions, list) or not all(isinstance(a, str) and a.strip() for a in assumptions):
        raise _fail(where, "assumptions", assumptions, "must be a list of non-empty strings")


def _check_datapath_relations(dp: dict, where: str) -> None:
    for lo, hi in (("weight_exp_min", "weight_exp_max"), ("bias_exp_min", "bias_exp_max")):
        if dp[lo] > dp[hi]:
            raise _fail(where, f"datapath.{lo}", dp[lo], f"must be <= datapath.{hi} = {dp[hi]}")
    if dp["weight_step"] >= 2 ** (dp["weight_bits"] - 1):
        raise _fail(where, "datapath.weight_step", dp["weight_step"],
                    f"must be < 2**(weight_bits - 1) = {2 ** (dp['weight_bits'] - 1)}")
    if dp["threshold_bits"] + dp["vth_shift"] > dp["state_bits"]:
        raise _fail(where, "datapath.threshold_bits", dp["threshold_bits"],
                    f"threshold_bits + vth_shift ({dp['vth_shift']}) must be <= state_bits ({dp['state_bits']})")


def _check_limit_relations(lim: dict, where: str) -> None:
    if "router_entries_usable" in lim:
        total = lim.get("router_entries")
        if total is None or lim["router_entries_usable"] > total:
            raise _fail(where, "limits.router_entries_usable", lim["router_entries_usable"],
                        f"needs limits.router_entries and must be <= it (router_entries = {total})")


def _check_operator_relations(ops: dict, lim: dict, where: str) -> None:
    cores = ops["embedded_cores_per_chip"]
    if ops["embedded"] and cores == 0:
        raise _fail(where, "operators.embedded", ops["embedded"], "needs operators.embedded_cores_per_chip >= 1")
    if ops.get("embedded_on_neuro_cores") and cores > lim["cores_per_chip"]:
        raise _fail(where, "operators.embedded_cores_per_chip", cores,
                    f"embedded code runs on the neuro cores here: must be <= limits.cores_per_chip = {lim['cores_per_chip']}")


def _check_sources(data: dict, where: str) -> None:
    sources = data["sources"]
    for key, value in sources.items():
        if not isinstance(value, str) or not value.strip():
            raise _fail(where, f"sources.{key}", value, "wrong type, must be a non-empty citation string")
        section, _, name = key.partition(".")
        if section not in RULES or section not in data or (name and name not in data[section]):
            raise _fail(where, f"sources.{key}", value, "names no key of this profile ('section' or 'section.key')")
    for section in NUMBER_SECTIONS:
        for key in data.get(section, {}):
            if f"{section}.{key}" not in sources and section not in sources:
                raise _fail(where, f"{section}.{key}", data[section][key],
                            f"every number needs a citation: add \"{section}.{key}\" (or \"{section}\") to the sources table")


# ----------------------------------------------------------------------------- loading
def list_profiles() -> list[str]:
    """Names of the built-in profiles (TOML files shipped in hw_profiles/)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ProfileError(f"{path}: profile file not found")
        return path
    path = PROFILE_DIR / f"{text}.toml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {text!r}: built-in profiles are {_names(list_profiles())}, or give a path to a .toml file")
    return path


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a built-in profile by name (``"loihi2"``) or a user's TOML file by path, validated."""
    path = _resolve(name_or_path)
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProfileError(f"{where}: cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ProfileError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}, offset {e.start}); "
                           "TOML files must be UTF-8") from None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ProfileError(f"{where}: not valid TOML: {e}") from None
    validate_profile_data(data, where)
    meta = data["profile"]
    datapath = Datapath(profile=meta["name"], **{**DATAPATH_OPTIONAL, **data["datapath"]})
    try:
        datapath.validate()
    except ValueError as e:            # Datapath's own rules, should the two ever drift apart
        raise ProfileError(f"{where}: datapath: {e}") from None
    return Profile(
        name=meta["name"], description=meta["description"], kind=meta["kind"], datapath=datapath,
        limits=Limits(**data["limits"]),
        energy=Energy(**{k: float(v) for k, v in data["energy"].items()}),
        sources=dict(data["sources"]), assumptions=tuple(data.get("assumptions", [])), path=path,
        operators=(Operators(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["operators"].items()})
                   if "operators" in data else None),
    )
