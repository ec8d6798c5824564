"""Loud compile: the quantisation findings that leave a layer destroyed or its arithmetic unsafe.

``compile_warnings(table)`` turns a :class:`~spikeport.compiler.quant_table.QuantTable` into a list
of :class:`CompileWarning` (layer, what, value, limit), so ``spikeport compile`` can print them and
``--strict`` can refuse the network. Rules (thresholds are module constants, stated in the message):

* weights zeroed: a projection whose float weights are nonzero but whose integer mantissas are all
  zero (the layer's input is cut), or where at least ``ZEROED_MOST`` of them are zero;
* constant layer: every incoming weight of a population is zero, so its output cannot depend on
  the input (for the output layer: every sample gets the same prediction);
* threshold: the represented threshold differs from the float one by more than ``THRESHOLD_RTOL``;
* conv wrap: a Conv2d's worst-case per-step sum exceeds the datapath's conv accumulator (Lava's
  Conv wraps it modulo 2^24) even at the largest weight exponent;
* weights clipped: some weights exceed the mantissa range at the chosen exponent (percentile scaling).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .quant_table import QuantTable

ZEROED_MOST = 0.5
THRESHOLD_RTOL = 0.05


@dataclass(frozen=True)
class CompileWarning:
    layer: str
    what: str
    value: float
    limit: float
    message: str

    def __str__(self) -> str:
        return f"layer {self.layer!r}: {self.message}"

    def as_dict(self) -> dict:
        return asdict(self)


def compile_warnings(table: QuantTable, outputs: list[str] | tuple[str, ...] = ()) -> list[CompileWarning]:
    """Every destroyed-layer / unsafe-arithmetic finding of one quantisation table."""
    out: list[CompileWarning] = []
    for layer in table.layers:
        role = "output layer" if layer.name in outputs else "layer"
        live = 0
        for p in layer.projections:
            nonzero = p.n_nonzero or p.n_weights
            if p.zeroed and nonzero:
                frac = p.zeroed / nonzero
                if p.max_mantissa == 0 or frac >= ZEROED_MOST:
                    out.append(CompileWarning(layer.name, "weights zeroed", frac, ZEROED_MOST,
                               f"{p.zeroed} of {nonzero} weights of {p.name} ({frac:.0%}) round to zero "
                               f"(limit {ZEROED_MOST:.0%}; weight_exp {p.weight_exp}, largest mantissa {p.max_mantissa})"))
            if p.max_mantissa > 0:
                live += 1
            if p.clipped:
                out.append(CompileWarning(layer.name, "weights clipped", p.clipped, 0,
                           f"{p.clipped} weights of {p.name} clipped to the mantissa range (limit 0)"))
            if p.acc_limit and p.acc_bound > p.acc_limit:
                out.append(CompileWarning(layer.name, "conv wrap", p.acc_bound, p.acc_limit,
                           f"Conv {p.name}: worst-case per-step sum {p.acc_bound} exceeds the {p.acc_limit} the conv "
                           f"accumulator holds even at weight_exp {p.weight_exp}; sums above it wrap (counted as "
                           "conv_wrap_events by simulate)"))
        if layer.projections and live == 0:
            out.append(CompileWarning(layer.name, "constant output", 0, 1,
                       f"{role} is constant: all {sum(p.n_weights for p in layer.projections)} incoming weights round "
                       "to zero, its output no longer depends on the input (nonzero mantissas 0, need >= 1)"))
        if layer.threshold_mant is not None and layer.threshold_rel_err > THRESHOLD_RTOL:
            out.append(CompileWarning(layer.name, "threshold", layer.threshold_rel_err, THRESHOLD_RTOL,
                       f"threshold represented with relative error {layer.threshold_rel_err:.1%} (mantissa "
                       f"{layer.threshold_mant}; limit {THRESHOLD_RTOL:.0%})"))
    return out


def render_warnings(warnings: list[CompileWarning]) -> list[str]:
    return [f"[yellow]warning[/]: {w}" for w in warnings]
