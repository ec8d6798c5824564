"""Per-layer quantisation report: what each population and projection became, and what it cost.

Every clipped weight is counted here (nothing is clipped silently); rows are plain JSON-friendly
dicts so the report can be written next to the quantised network or shown as a ``rich`` table.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class InputQuant:
    """How one network input was turned into graded integers: ``x_int = clip(round(x / scale))``."""

    name: str
    coding: str
    bits: int
    signed: bool
    scale: float
    min_level: int
    max_level: int
    input_range: tuple[float, float] | None


@dataclass
class ProjectionQuant:
    """One incoming projection of a population.

    weight_exp     exponent applied after accumulation
    n_weights      stored weights (nonzero in float or int); n_nonzero: nonzero in float
    clipped        weights whose rounded mantissa fell outside [weight_min, weight_max]
    zeroed         weights nonzero in float and zero as integers
    max_abs_err    max |weight * 2**weight_exp * scale - float weight| (real units), clipped included
    err_bound      rounding bound for unclipped weights: weight_step/2 * 2**weight_exp * max(scale)
    max_rel_err    max_abs_err / max |float weight|
    max_mantissa   largest |integer mantissa| used (how well the weight range is filled)
    acc_bound      Conv2d on a datapath whose conv sums wrap: worst-case |sum| per step (sum |w| * max
                   payload); acc_limit the largest sum that does not wrap (0: no such limit)
    """

    name: str
    source: str
    connectivity: str
    weight_exp: int
    n_weights: int
    clipped: int
    zeroed: int
    max_abs_err: float
    err_bound: float
    max_rel_err: float
    max_mantissa: int
    acc_bound: int = 0
    acc_limit: int = 0
    n_nonzero: int = 0


@dataclass
class LayerQuant:
    """One population.

    state_scale        real value of one membrane-state unit (float, or list per channel)
    gain               state units per reference unit (threshold for IF, one real unit for Readout)
    threshold_mant     threshold mantissa (threshold = mant << vth_shift); None for Readout
    threshold_rel_err  max relative error of the represented threshold (per channel)
    threshold_folded   per-channel thresholds were folded into per-channel state scales (and so into
                       the incoming weights and biases): one integer threshold per population
    bias_exp, bias_mant_max   bias = bias_mant << bias_exp; largest |bias_mant|
    bias_max_rel_err   max relative rounding error over nonzero biases (bias incl. floor_comp)
    floor_comp         state units added to the bias to cancel the mean floor of negative weight_exp
    limited_by         the constraint that bounded the gain (threshold bits, headroom, weights ...)
    worst_step_current worst-case |input + bias| of one step in state units (sum |w| * max payload)
    steps_to_saturation  Readout: steps of worst-case current before the state saturates
    saturation_risk    'none', or what may saturate or wrap under worst-case input
    """

    name: str
    neuron: str
    shape: tuple[int, ...]
    state_scale: float | list[float]
    gain: float
    threshold_mant: int | None
    threshold: int | None
    threshold_rel_err: float
    threshold_folded: bool
    bias_exp: int
    bias_mant_max: int
    bias_max_rel_err: float
    floor_comp: float
    leak_dv: int | None
    limited_by: str
    worst_step_current: float
    steps_to_saturation: float | None
    saturation_risk: str
    projections: list[ProjectionQuant] = field(default_factory=list)

    @property
    def clipped(self) -> int:
        return sum(p.clipped for p in self.projections)

    @property
    def zeroed(self) -> int:
        return sum(p.zeroed for p in self.projections)


@dataclass
class QuantTable:
    """The report of one :func:`spikeport.compiler.quantize` call."""

    profile: str
    inputs: list[InputQuant] = field(default_factory=list)
    layers: list[LayerQuant] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)   # CompileWarning (compiler/compile_warnings.py)
    operators: list = field(default_factory=list)  # operator networks: one dict per typed operator
    operator_max_timesteps: int | None = None      # largest T whose operator int64 state is proved safe

    def __getitem__(self, name: str) -> LayerQuant:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in the quantisation table")

    def rows(self) -> list[dict]:
        """One dict per population (projections nested), JSON-friendly."""
        return [_plain(asdict(layer)) for layer in self.layers]

    def as_dict(self) -> dict:
        return _plain({"profile": self.profile, "options": self.options,
                       "inputs": [asdict(i) for i in self.inputs], "layers": self.rows(),
                       "totals": {"clipped": sum(l.clipped for l in self.layers),
                                  "zeroed": sum(l.zeroed for l in self.layers)},
                       "warnings": [w.as_dict() for w in self.warnings],
                       **({"operators": self.operators, "operator_max_timesteps": self.operator_max_timesteps}
                          if self.operators else {})})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)


def _plain(obj):
    """numpy scalars/arrays and tuples -> JSON types; infinities as strings."""
    import numpy as np
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def _fmt_scale(s) -> str:
    if isinstance(s, list):
        return f"{min(s):.3g}..{max(s):.3g}"
    return f"{s:.4g}"


def render_quant_table(table: QuantTable):
    """A ``rich.table.Table``: one line per incoming projection, population columns on its first line."""
    from rich.table import Table

    t = Table(title=f"quantisation to {table.profile}", show_lines=False)
    for col in ("layer", "state scale", "vth mant", "vth err", "bias exp", "from", "w exp", "clip", "zero",
                "max |dw|", "limited by"):
        t.add_column(col, justify="left" if col in ("layer", "from", "limited by") else "right", overflow="fold")
    for layer in table.layers:
        projs = layer.projections or [None]
        for k, p in enumerate(projs):
            first = k == 0
            vth = "-" if layer.threshold_mant is None else str(layer.threshold_mant)
            vth += "*" if first and layer.threshold_folded else ""
            t.add_row(
                layer.name if first else "",
                _fmt_scale(layer.state_scale) if first else "",
                vth if first else "",
                f"{layer.threshold_rel_err:.0e}" if first and layer.threshold_mant is not None else "",
                str(layer.bias_exp) if first else "",
                "" if p is None else f"{p.source} ({p.connectivity})",
                "" if p is None else str(p.weight_exp),
                "" if p is None else (f"[red]{p.clipped}[/red]" if p.clipped else "0"),
                "" if p is None else (f"[yellow]{p.zeroed}[/yellow]" if p.zeroed else "0"),
                "" if p is None else f"{p.max_abs_err:.1e}",
                layer.limited_by if first else "",
            )
    t.caption = "* per-channel thresholds folded into the weights; saturation risk per layer is in --json"
    for inp in table.inputs:
        t.caption = (t.caption + "; " if t.caption else "") + (
            f"input {inp.name}: {'s' if inp.signed else 'u'}{inp.bits} levels [{inp.min_level}, {inp.max_level}], scale {inp.scale:.4g}")
    return t


def render_operator_table(table: QuantTable):
    """A ``rich.table.Table`` of the typed operators of a Transformer network: where each runs, in
    which arithmetic, its output unit and its fixed-point constants (docs/fixed_point.md)."""
    from rich.table import Table
    t = Table(title=f"operators on {table.profile} (T <= {table.operator_max_timesteps} proved for int64 state)")
    for col in ("operator", "op", "runs on", "arithmetic", "out unit", "calib range", "constants"):
        t.add_column(col, justify="right" if col in ("out unit", "calib range") else "left", overflow="fold")
    skip = {"name", "op", "runs_on", "arithmetic", "out_scale", "range"}
    for row in table.operators:
        consts = ", ".join(f"{k}={v}" for k, v in row.items() if k not in skip)
        rng = row.get("range")
        t.add_row(row["name"], row["op"], str(row["runs_on"]), str(row["arithmetic"]), f"{row['out_scale']:.4g}",
                  "-" if rng is None else f"{rng:.4g}", consts)
    return t
