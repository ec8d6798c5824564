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

from ..ir import Datapath
from .profile import CONV_WEIGHT_FORMATS, PROFILE_KINDS, Energy, Limits, Profile, ProfileError

PROFILE_DIR = Path(__file__).resolve().parent
SECTIONS = ("profile", "datapath", "limits", "energy", "sources")
TOP_LEVEL_KEYS = ("assumptions",)
NUMBER_SECTIONS = ("datapath", "limits", "energy")

# ----------------------------------------------------------------------------- per-key rules
# Each rule is (python type(s), check, text of the rule). A check returns True when the value is fine.
Rule = tuple[tuple[type, ...], Callable[[Any], bool], str]


def _bits(lo: int = 1, hi: int = 64) -> Rule:
    return (int,), lambda v: lo <= v <= hi, f"an integer number of bits in {lo}..{hi}"


_INT_NONNEG: Rule = ((int,), lambda v: v >= 0, "an integer >= 0")
_INT_POS: Rule = ((int,), lambda v: v >= 1, "an integer >= 1")
_OVERFLOW: Rule = ((str,), lambda v: v in ("saturate", "wrap"), "'saturate' or 'wrap'")
_ENERGY: Rule = ((int, float), lambda v: v >= 0 and v == v and v != float("inf"), "a finite number >= 0")
_TEXT: Rule = ((str,), lambda v: bool(v.strip()), "a non-empty string")

PROFILE_RULES: dict[str, Rule] = {
    "name": _TEXT,
    "description": _TEXT,
    "kind": ((str,), lambda v: v in PROFILE_KINDS, f"one of {PROFILE_KINDS}"),
}

DATAPATH_RULES: dict[str, Rule] = {
    "weight_bits": _bits(2, 32),
    "weight_step": _INT_POS,
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
    "synapse_delay": _INT_NONNEG,
    "input_bits": _bits(1, 32),
    "conv_acc_bits": ((int,), lambda v: 0 <= v <= 64, "an integer number of bits in 0..64 (0: exact, no wrap)"),
}
# Optional datapath keys and the value a profile that omits them gets (a limit it does not declare).
DATAPATH_OPTIONAL = {"conv_acc_bits": 0}

LIMIT_RULES: dict[str, Rule] = {
    f.name: (_INT_NONNEG if f.name == "max_delay_steps" else _INT_POS) for f in fields(Limits)
}
LIMIT_RULES["conv_weights"] = ((str,), lambda v: v in CONV_WEIGHT_FORMATS, f"one of {CONV_WEIGHT_FORMATS}")
ENERGY_RULES: dict[str, Rule] = {f.name: _ENERGY for f in fields(Energy)}


def _required(cls) -> set[str]:
    """Dataclass fields without a default are required in the TOML."""
    from dataclasses import MISSING
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


REQUIRED = {
    "profile": set(PROFILE_RULES),
    "datapath": set(DATAPATH_RULES) - set(DATAPATH_OPTIONAL),
    "limits": _required(Limits),
    "energy": _required(Energy),
}
RULES = {"profile": PROFILE_RULES, "datapath": DATAPATH_RULES, "limits": LIMIT_RULES, "energy": ENERGY_RULES}


# ----------------------------------------------------------------------------- the validator
def _fail(where: str, key: str, value: Any, rule: str) -> ProfileError:
    return ProfileError(f"{where}: {key} = {value!r}: {rule}")


def _check_value(where: str, section: str, key: str, value: Any, rule: Rule) -> None:
    types, ok, text = rule
    is_bool = isinstance(value, bool)
    if is_bool or not isinstance(value, types):
        raise _fail(where, f"[{section}] {key}", value, f"wrong type {type(value).__name__}, must be {text}")
    if not ok(value):
        raise _fail(where, f"[{section}] {key}", value, f"out of range, must be {text}")


def validate_profile_data(data: dict, where: str) -> None:
    """The one validator: unknown or missing sections/keys, types, ranges, cross-field rules and a
    source for every number. Raises ProfileError naming ``where`` (the file), the key, value, rule."""
    for key in data:
        if key not in SECTIONS and key not in TOP_LEVEL_KEYS:
            raise _fail(where, key, data[key], f"unknown section or top-level key (allowed: {SECTIONS + TOP_LEVEL_KEYS})")
    for section in SECTIONS:
        if section not in data:
            raise _fail(where, f"[{section}]", None, "missing required section")
        if not isinstance(data[section], dict):
            raise _fail(where, section, data[section], "must be a table ([section])")
    for section, rules in RULES.items():
        table = data[section]
        for key, value in table.items():
            if key not in rules:
                raise _fail(where, f"[{section}] {key}", value, f"unknown key (allowed: {sorted(rules)})")
            _check_value(where, section, key, value, rules[key])
        for key in sorted(REQUIRED[section] - set(table)):
            raise _fail(where, f"[{section}] {key}", None, "missing required key")
    _check_datapath_relations(data["datapath"], where)
    _check_limit_relations(data["limits"], where)
    _check_sources(data, where)
    assumptions = data.get("assumptions", [])
    if not isinstance(assumptions, list) or not all(isinstance(a, str) and a.strip() for a in assumptions):
        raise _fail(where, "assumptions", assumptions, "must be a list of non-empty strings")


def _check_datapath_relations(dp: dict, where: str) -> None:
    for lo, hi in (("weight_exp_min", "weight_exp_max"), ("bias_exp_min", "bias_exp_max")):
        if dp[lo] > dp[hi]:
            raise _fail(where, f"[datapath] {lo}", dp[lo], f"must be <= {hi} = {dp[hi]}")
    if dp["weight_step"] >= 2 ** (dp["weight_bits"] - 1):
        raise _fail(where, "[datapath] weight_step", dp["weight_step"],
                    f"must be < 2**(weight_bits - 1) = {2 ** (dp['weight_bits'] - 1)}")
    if dp["threshold_bits"] + dp["vth_shift"] > dp["state_bits"]:
        raise _fail(where, "[datapath] threshold_bits", dp["threshold_bits"],
                    f"threshold_bits + vth_shift ({dp['vth_shift']}) must be <= state_bits ({dp['state_bits']})")


def _check_limit_relations(lim: dict, where: str) -> None:
    if "router_entries_usable" in lim:
        total = lim.get("router_entries")
        if total is None or lim["router_entries_usable"] > total:
            raise _fail(where, "[limits] router_entries_usable", lim["router_entries_usable"],
                        f"needs router_entries and must be <= it (router_entries = {total})")


def _check_sources(data: dict, where: str) -> None:
    sources = data["sources"]
    for key, value in sources.items():
        if not isinstance(value, str) or not value.strip():
            raise _fail(where, f"[sources] {key}", value, "wrong type, must be a non-empty citation string")
        section, _, name = key.partition(".")
        if section not in RULES or (name and name not in data[section]):
            raise _fail(where, f"[sources] {key}", value, "names no key of this profile ('section' or 'section.key')")
    for section in NUMBER_SECTIONS:
        for key in data[section]:
            if f"{section}.{key}" not in sources and section not in sources:
                raise _fail(where, f"[{section}] {key}", data[section][key],
                            f"every number needs a citation: add \"{section}.{key}\" (or \"{section}\") to [sources]")


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
        raise ProfileError(f"unknown profile {text!r}: built-in profiles are {list_profiles()}, or give a path to a .toml file")
    return path


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a built-in profile by name (``"loihi2"``) or a user's TOML file by path, validated."""
    path = _resolve(name_or_path)
    where = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: not valid TOML: {e}") from None
    validate_profile_data(data, where)
    meta = data["profile"]
    datapath = Datapath(profile=meta["name"], **{**DATAPATH_OPTIONAL, **data["datapath"]})
    try:
        datapath.validate()
    except ValueError as e:            # Datapath's own rules, should the two ever drift apart
        raise ProfileError(f"{where}: [datapath] {e}") from None
    return Profile(
        name=meta["name"], description=meta["description"], kind=meta["kind"], datapath=datapath,
        limits=Limits(**data["limits"]),
        energy=Energy(**{k: float(v) for k, v in data["energy"].items()}),
        sources=dict(data["sources"]), assumptions=tuple(data.get("assumptions", [])), path=path,
    )
