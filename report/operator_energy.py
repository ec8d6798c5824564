"""Energy of operator arithmetic (Transformer operators on embedded cores or the host): counts by
kind x energy per kind (docs/energy.md, "Operators").

Per kind, in the arithmetic the operator declares (``ir.operators``: ``float32``, ``fixed``,
``none`` for wiring), from Horowitz ISSCC 2014, 45 nm (the ``generic45nm`` profile, so every
figure keeps its citation):

    kind   float32                          fixed (32-bit integer)
    ac     fp32 add      0.9 pJ  (E_AC)     int32 add   0.1 pJ
    mac    fp32 mult+add 4.6 pJ  (E_MAC)    int32 mult+add 3.2 pJ
    add    fp32 add      0.9 pJ             int32 add   0.1 pJ
    mul    fp32 mult     3.7 pJ             int32 mult  3.1 pJ
    div, sqrt, exp: not in Horowitz's table. Assumed recipes (RECIPES) in multiplies and adds of
    the same arithmetic: a division is a reciprocal by two Newton-Raphson steps from a seed table
    (x(2 - d x): 2 mul + 1 add each) and one multiply: 5 mul + 2 add; a square root is x times a
    reciprocal square root by two Newton-Raphson steps (x(3 - d x^2)/2: 3 mul + 1 add each): 7 mul +
    2 add; an exponential is a range reduction (1 mul, 1 add), a degree-5 polynomial by Horner
    (5 mul, 5 add) and the exponent insertion (1 add): 6 mul + 7 add. Seed-table reads ignored.

The kinds are general (per-kind counts x per-kind energy), so any operator with a counting rule in
``simulator.operator_work`` is priced the same way. Memory traffic of operators is not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..hw_profiles import load_profile
from ..simulator.operator_work import OP_KINDS

#: non-elementary kinds as multiplies and adds of the same arithmetic (assumptions, docstring)
RECIPES: dict[str, dict[str, int]] = {"div": {"mul": 5, "add": 2}, "sqrt": {"mul": 7, "add": 2},
                                      "exp": {"mul": 6, "add": 7}}
ARITHMETICS = ("float32", "fixed", "none")


def kind_energies(arithmetic: str) -> dict[str, float]:
    """pJ per operation of every kind for one arithmetic (zeros for ``none``)."""
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"operator arithmetic {arithmetic!r} must be one of {ARITHMETICS}")
    if arithmetic == "none":
        return {k: 0.0 for k in OP_KINDS}
    e = load_profile("generic45nm").energy
    add, mul = (e.fp32_add_pj, e.fp32_mult_pj) if arithmetic == "float32" else (e.int32_add_pj, e.int32_mult_pj)
    out = {"ac": add, "mac": mul + add, "add": add, "mul": mul}
    for kind, r in RECIPES.items():
        out[kind] = r["mul"] * mul + r["add"] * add
    return {k: float(out[k]) for k in OP_KINDS}


def assumptions() -> list[str]:
    f, i = kind_energies("float32"), kind_energies("fixed")
    recipe = "; ".join(f"{k} = {r['mul']} mul + {r['add']} add" for k, r in RECIPES.items())
    return [f"Operators: counts by kind (simulator/operator_work.py recipes) x energy per kind, Horowitz 45 nm "
            f"(float32: add {f['add']}, mul {f['mul']}, mac {f['mac']} pJ; fixed = int32: add {i['add']}, mul {i['mul']} pJ); "
            f"division, square root and exponential are not in Horowitz's table and are assumed as {recipe} "
            f"(float32: div {f['div']:.1f}, sqrt {f['sqrt']:.1f}, exp {f['exp']:.1f} pJ). Operator memory traffic "
            "is not modelled; the chip estimate does not include operators (no published energy of Loihi 2's "
            "embedded cores or SpiNNaker's ARM cores per operation is used).",
            "Operator counts are the operators' equations in the event-driven form of simulator/operator_work.py, "
            "the same for float and quantised networks; a quantised operator's arithmetic ('fixed') is priced at int32 "
            "figures. The bit-accurate simulator's fixed-point kernels (lookup tables for GELU and exp, an integer "
            "square root, S_A S_B recomputed every step) are a reference implementation whose own operation mix is "
            "not what is counted.",
            "Papers' convention: operators count as zero (ECMT sets MACs_SNN = 0 for them, hardware.md section 7); "
            "the ANN baseline is its Linear/Conv and matrix-product MACs x E_MAC."]


@dataclass
class OperatorEnergy:
    """Per-sample work of one operator by kind, and its energy (pJ) in the operator's arithmetic."""

    name: str
    op: str
    runs_on: str
    arithmetic: str
    work: dict[str, float]
    pj: float
    ann_work: dict[str, int] = field(default_factory=dict)
    ann_pj: float = 0.0          # the ANN module's non-MAC arithmetic in float32 (MACs are in the ANN baseline)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def operator_energies(counts) -> list[OperatorEnergy]:
    """Per operator of an ``OpCounts``: per-sample work, its energy, and the ANN module's non-MAC
    arithmetic priced in float32 (its MACs belong to the ANN baseline)."""
    fp32 = kind_energies("float32")
    rows = []
    for op in counts.operators.values():
        per = {k: op.total(k) / counts.samples for k in OP_KINDS}
        e = kind_energies(op.arithmetic)
        ann_pj = sum(v * fp32[k] for k, v in op.ann.items() if k != "mac")
        rows.append(OperatorEnergy(op.name, op.op, op.runs_on, op.arithmetic, per,
                                   sum(per[k] * e[k] for k in OP_KINDS), dict(op.ann), ann_pj))
    return rows
