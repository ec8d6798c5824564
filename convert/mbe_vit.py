"""``--method mbe``: Transformers from MBE neurons, training-free, staged coding C3 (paper 001).

Every non-linearity is a fitted MBE neuron (the shipped fits of ``convert/mbe_fits/``, only the
5N basis parameters are learned, once per function; the network's weights are used as they are):

* GELU: a population of GELU MBE neurons (two branches, relu(x) / relu(-x));
* products of two dynamic tensors (Q K^T, attn V, LayerNorm's d*d and d*invstd, softmax's
  e * 1/M): the identity-MBE product form (``ir.operators_mbe.MBEMatMul`` / ``MBEProduct``);
  each operand's identity MBE is scaled to a power of two >= the largest |value| seen in
  calibration (the code is homogeneous in x and alpha);
* softmax: subtract the row max, y = x log2 e = I + f (``Exp2Split``), 2^f = 1 + MBE(f),
  e = 2^I 2^f (``Ldexp``), sum = M 2^E with M in [0.5, 1) (``MantExp``), 1/M from an MBE,
  out = product(e, 1/M) 2^-E;
* LayerNorm: d = x - mean(x) (a token projection with weight I - 1/n, exact), var + eps =
  sum product(d, d)/n + eps = M 2^E with E even (``MantExp``), invstd = 2^(-E/2) MBE(1/sqrt(M)),
  y = gamma product(d, invstd) + beta (gamma and beta a diagonal token projection into a relay).

Calibration also checks every GELU's inputs against the GELU fit's domain (refused by node outside).
Optional, not the paper's (docs/mbe.md): ``gelu_fit``, a GELU fit on another domain; and
``gelu_bias_correction``, the fit's mean error per channel over the calibration data taken out
through the bias of the Linear reading the GELU.

Linear layers, residual adds, the position embedding and the class token are as in the ANN
(projections into relay populations: their values are forwarded once, C3). MBE populations get
``t_start`` = (stages before them) * T; a network of depth D takes D*T steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from ..frontend.ann_eval import evaluate_graph
from ..ir import operators as O
from ..ir import operators_mbe as OM
from .ecmt import _Builder, _f64, _Handle
from .mbe_params import MBEFitError, default_fit, load_fit, paper_gelu_fit
from .registry import ConversionMethod, register_method

FUNCTIONS = ("gelu", "identity", "exp2", "reciprocal", "invsqrt")


def pow2_at_least(v: float) -> float:
    """Smallest power of two >= v (>= 2^-30): an identity MBE's operand range."""
    return 2.0 ** math.ceil(math.log2(max(float(v), 2.0 ** -30)))


@register_method("mbe")
@dataclass
class MBEMethod(ConversionMethod):
    """Options: ``timesteps`` T of every MBE stage (shipped fits exist for T = 1, 2, 4, 8, 16, 32, 64),
    ``calib_batch`` samples per calibration batch, ``range_margin`` factor on the calibrated
    max |operand| before rounding up to a power of two, ``gelu_bias_correction`` (off: the paper)
    subtract the GELU fit's mean error per channel over the calibration data, folded into the bias
    of the Linear that reads the GELU (docs/mbe.md, "GELU: where MBE loses accuracy"), ``gelu_fit`` a GELU fit
    file (``spikeport mbe-fit --function gelu --domain LO,HI``) instead of the shipped one (on
    (-10, 10)), or ``paper`` for the shipped fit on the paper's domain (-120, 10). GELU
    inputs of the calibration data outside the fit's domain are refused, naming the node."""

    timesteps: int = 16
    calib_batch: int = 100
    range_margin: float = 1.0
    gelu_bias_correction: bool = False
    gelu_fit: str = ""
    _fits: dict = field(default_factory=dict, repr=False)
    _ranges: dict = field(default_factory=dict, repr=False)
    _tensor_ranges: dict = field(default_factory=dict, repr=False)
    _gelu_error: dict = field(default_factory=dict, repr=False)

    coding = "C3"
    input_coding = "once"

    def __post_init__(self) -> None:
        if int(self.timesteps) < 1:
            raise ValueError(f"timesteps {self.timesteps} must be >= 1")
        if int(self.calib_batch) < 1:
            raise ValueError(f"calib_batch {self.calib_batch} must be >= 1")
        if not (math.isfinite(self.range_margin) and self.range_margin >= 1.0):
            raise ValueError(f"range_margin {self.range_margin} must be >= 1")

    def prepare(self, ann: AnnModel, calib_x: np.ndarray) -> None:
        self._fits = {f: default_fit(f, timesteps=int(self.timesteps)) for f in FUNCTIONS}
        if self.gelu_fit:
            self._fits["gelu"] = _own_gelu_fit(self.gelu_fit, int(self.timesteps))
        g = ann.graph
        mm_in = [s for node in g if isinstance(node, G.MatMul) for s in node.inputs]
        ln_in = [node.inputs[0] for node in g if isinstance(node, G.LayerNorm)]
        all_gelus = [node for node in g if isinstance(node, G.GELU)]
        gelus = all_gelus if self.gelu_bias_correction else []
        for node in gelus:
            for user in g:
                if node.name in user.inputs and not isinstance(user, G.Linear):
                    raise ValueError(f"gelu_bias_correction folds GELU {node.name!r}'s correction into the Linear that "
                                     f"reads it, but node {user.name!r} ({user.op}) reads it too")
        keep = sorted(set(mm_in) | set(ln_in) | {n.name for n in gelus} | {n.inputs[0] for n in gelus})
        peak: dict[str, float] = {}
        tensors: dict[str, float] = {}
        lows: dict[str, float] = {}
        highs: dict[str, float] = {}
        gelu_in = {n.inputs[0] for n in all_gelus}
        err_sum: dict[str, np.ndarray] = {}
        err_n: dict[str, int] = {}

        def observe(name: str, v) -> None:   # max |value| of every ANN tensor: the quantiser's relay ranges
            if v.is_floating_point() and v.numel():
                tensors[name] = max(tensors.get(name, 0.0), float(v.abs().max()))
                if name in gelu_in:
                    lows[name] = min(lows.get(name, math.inf), float(v.min()))
                    highs[name] = max(highs.get(name, -math.inf), float(v.max()))
        for a in range(0, len(calib_x), int(self.calib_batch)):
            vals = evaluate_graph(g, calib_x[a:a + int(self.calib_batch)], keep=keep, dtype=_f64(), observe=observe)
            for n in keep:
                v = vals[n]
                if n in ln_in:   # LayerNorm operand: d = x - mean(x)
                    peak[f"{n}:d"] = max(peak.get(f"{n}:d", 0.0), float((v - v.mean(-1, keepdim=True)).abs().max()))
                peak[n] = max(peak.get(n, 0.0), float(v.abs().max()))
            for node in gelus:   # the fit's error on the ANN's own GELU inputs, summed per channel
                x_in = vals[node.inputs[0]].cpu().numpy()
                e = (self._fits["gelu"](x_in) - vals[node.name].cpu().numpy()).reshape(-1, x_in.shape[-1])
                err_sum[node.name] = err_sum.get(node.name, 0.0) + e.sum(axis=0)
                err_n[node.name] = err_n.get(node.name, 0) + e.shape[0]
        self._gelu_error = {n: err_sum[n] / err_n[n] for n in err_sum}
        fit = self._fits["gelu"]
        for node in all_gelus:   # outside its domain a fit is not an approximation of GELU at all
            src = node.inputs[0]
            if src in lows and (lows[src] < fit.domain[0] or highs[src] > fit.domain[1]):
                raise ValueError(
                    f"GELU {node.name!r}: calibration inputs span [{lows[src]:.4g}, {highs[src]:.4g}], outside the GELU "
                    f"fit's domain [{fit.domain[0]:g}, {fit.domain[1]:g}] ({self.gelu_fit or 'shipped fit'}); make a fit "
                    f"that covers them (spikeport mbe-fit --function gelu --domain LO,HI --timesteps "
                    f"{int(self.timesteps)} --out FILE) and pass --opt gelu_fit=FILE")
        self._ranges = {k: v * float(self.range_margin) for k, v in peak.items()}
        self._tensor_ranges = tensors

    def calibration_summary(self) -> dict:
        out = {n: {"max_abs": v} for n, v in self._ranges.items()}
        for n, e in self._gelu_error.items():
            out[f"{n}:gelu_mean_error"] = {"max_abs": float(np.abs(e).max()), "mean": float(e.mean())}
        return out

    def build(self, ann: AnnModel, calib_x: np.ndarray) -> tuple[ir.Network, dict]:
        return _MBEBuilder(self, ann).run()


class _MBEBuilder(_Builder):
    """The ECMT builder's walk and plumbing (relays, rearranges, concat, adds, head), with the
    non-linear modules and products made of MBE neurons and MBE operators."""

    def __init__(self, method: MBEMethod, ann: AnnModel):
        super().__init__(method, ann)
        self.net.coding = "C3"
        self.fits = method._fits

    def _method_ranges(self) -> dict:
        """max |value| of every ANN tensor over the calibration data (relay units when compiled)."""
        return self.m._tensor_ranges

    def run(self):
        net, pops = super().run()
        # value_ranges feed compiler/quantize_mbe_vit.py: relays and calibrated operator outputs only
        # (an MBE population's input and output ranges follow from its source and its fit)
        net.meta["value_ranges"] = {k: v for k, v in net.meta["value_ranges"].items()
                                    if not (isinstance(net[k], ir.Population) and isinstance(net[k].neuron, ir.neurons_mbe.MBE))}
        _schedule(net, int(self.m.timesteps))
        return net, pops

    # ------------------------------------------------------------- pieces
    def mbe_population(self, base: str, shape, function: str, src: str, weight: float = 1.0, source: str = "") -> str:
        """MBE neurons of ``function``; ``Population.source`` names the ANN tensor only where the
        population's value is that tensor (GELU), not for the 2^f, 1/M, 1/sqrt(M) steps inside
        softmax / LayerNorm (``populations`` still maps them to their ANN module)."""
        fit = self.fits[function]
        name = self._name(base)
        self.net.add(ir.Population(name, tuple(shape), fit.neuron(),
                                   ir.SpikePayload(kind="graded", bits=32, min_level=0, max_level=0),
                                   decode_offset=np.asarray(fit.offset), source=source if function == "gelu" else ""))
        self.identity(src, name, weight)
        self.populations.setdefault(source or name, []).append(name)
        return name

    def _pair(self, cls, base: str, ins, shape, scale_a: float, scale_b: float, scale: float = 1.0) -> str:
        f = self.fits["identity"]
        return self.operator(cls(base, inputs=tuple(ins), shape=tuple(shape), tau_d=f.tau_d.copy(), tau_r=f.tau_r.copy(),
                                 tau_V=f.tau_V.copy(), dt=f.dt.copy(), w=f.w.copy(), alpha=np.asarray(f.alpha, np.float64),
                                 timesteps=int(f.timesteps), scale_a=float(scale_a), scale_b=float(scale_b),
                                 scale=float(scale)))

    def range_of(self, value: str, factor: float = 1.0) -> float:
        """Operand range of the IR node standing for ANN value ``value`` / ``factor``."""
        return pow2_at_least(self.m._ranges[value] / abs(factor))

    # ------------------------------------------------------------- walk overrides
    def _Input(self, node: G.Input) -> None:
        self.net.add(ir.Input(node.name, tuple(node.shape), coding="once"))
        self.h[node.name] = _Handle(node.name)

    def _Linear(self, node: G.Linear) -> None:
        src = node.inputs[0]
        h = self.h[src]
        bias = np.broadcast_to(0.0 if node.bias is None else node.bias.astype(np.float64), node.shape).copy()
        w = node.weight.astype(np.float64, order="C") * h.factor   # C order (the graph's weight may be an F-ordered view)
        if src in self.m._gelu_error:   # W (g_hat - e) + b = W g_hat + (b - W e): the fit's mean error removed
            bias = bias - w @ (self.m._gelu_error[src] / h.factor)
        neuron = ir.Readout(bias=np.asarray(bias)) if _head(self.g, node) else O.Relay(bias=np.asarray(bias))
        out = self._name(node.name)
        self.net.add(ir.Population(out, tuple(node.shape), neuron,
                                   ir.SpikePayload(kind="analog", bits=32, min_level=0, max_level=0), source=node.name))
        self.net.add(O.TokenDense(self._name(f"{node.name}_w"), source=h.node, target=out, weight=w))
        self.h[node.name] = _Handle(out)

    def _GELU(self, node: G.GELU) -> None:
        h = self.h[node.inputs[0]]
        self.h[node.name] = _Handle(self.mbe_population(f"{node.name}_mbe", node.shape, "gelu", h.node, h.factor,
                                                        source=node.name))

    def _MatMul(self, node: G.MatMul) -> None:
        (a, b) = node.inputs
        ha, hb = self.h[a], self.h[b]
        name = self._pair(OM.MBEMatMul, node.name, (ha.node, hb.node), node.shape, self.range_of(a, ha.factor),
                          self.range_of(b, hb.factor), ha.factor * hb.factor)
        self.note_range(name, node.name)
        self.h[node.name] = _Handle(name)

    def _Softmax(self, node: G.Softmax) -> None:
        h = self.h[node.inputs[0]]
        shape, ax = tuple(node.shape), node.axis
        row = shape[:ax % len(shape)] + (1,) + shape[ax % len(shape) + 1:]
        frac = self.operator(OM.Exp2Split(f"{node.name}_frac", inputs=(h.node,), shape=shape, axis=ax, scale=h.factor,
                                          part="frac"))
        whole = self.operator(OM.Exp2Split(f"{node.name}_int", inputs=(h.node,), shape=shape, axis=ax, scale=h.factor,
                                           part="int"))
        p2f = self.mbe_population(f"{node.name}_exp2", shape, "exp2", frac, source=node.name)
        e = self.operator(OM.Ldexp(f"{node.name}_e", inputs=(p2f, whole), shape=shape, exponent_scale=1.0))
        mant = self.operator(OM.MantExp(f"{node.name}_M", inputs=(e,), shape=row, axis=ax, part="mantissa"))
        expo = self.operator(OM.MantExp(f"{node.name}_E", inputs=(e,), shape=row, axis=ax, part="exponent"))
        inv = self.mbe_population(f"{node.name}_recip", row, "reciprocal", mant, source=node.name)
        prod = self._pair(OM.MBEProduct, f"{node.name}_prod", (e, inv), shape, 1.0, 2.0)
        out = self.operator(OM.Ldexp(node.name, inputs=(prod, expo), shape=shape, exponent_scale=-1.0))
        self.h[node.name] = _Handle(out)

    def _LayerNorm(self, node: G.LayerNorm) -> None:
        src = node.inputs[0]
        h = self.h[src]
        shape = tuple(node.shape)
        c = shape[-1]
        row = shape[:-1] + (1,)
        d = self.relay(f"{node.name}_d", shape)      # x - mean(x): no ANN tensor holds it
        self.ranges[d] = float(self.m._ranges[f"{src}:d"])      # d = x - mean(x), not the LayerNorm output
        self.net.add(O.TokenDense(self._name(f"{node.name}_center"), source=h.node, target=d,
                                  weight=(np.eye(c) - np.full((c, c), 1.0 / c)) * h.factor))
        s = self.range_of(f"{src}:d")
        dd = self._pair(OM.MBEProduct, f"{node.name}_dd", (d, d), shape, s, s)
        mant = self.operator(OM.MantExp(f"{node.name}_M", inputs=(dd,), shape=row, axis=-1, scale=1.0 / c,
                                        eps=float(node.eps), even=True, part="mantissa"))
        expo = self.operator(OM.MantExp(f"{node.name}_E", inputs=(dd,), shape=row, axis=-1, scale=1.0 / c,
                                        eps=float(node.eps), even=True, part="exponent"))
        inv = self.mbe_population(f"{node.name}_invsqrt", row, "invsqrt", mant, source=node.name)
        prod = self._pair(OM.MBEProduct, f"{node.name}_prod", (d, inv), shape, s, 2.0)
        y = self.operator(OM.Ldexp(f"{node.name}_norm", inputs=(prod, expo), shape=shape, exponent_scale=-0.5))
        out = self.relay(node.name, shape, np.broadcast_to(node.bias.astype(np.float64), shape).copy(), source=node.name)
        self.net.add(O.TokenDense(self._name(f"{node.name}_affine"), source=y, target=out,
                                  weight=np.diag(node.weight.astype(np.float64))))
        self.h[node.name] = _Handle(out)


def _own_gelu_fit(path: str, timesteps: int):
    """A user's GELU fit file (or ``"paper"``: the shipped fit on the paper's domain), checked
    against what the network needs (function, T, decay)."""
    try:
        fit = paper_gelu_fit(4, timesteps) if path == "paper" else load_fit(path)
    except MBEFitError as e:            # name the option: the file's own message says what is wrong with it
        raise MBEFitError(f"method 'mbe': option gelu_fit={path!r}: {e}") from None
    for field_name, have, want in (("function", fit.function, "gelu"), ("timesteps", fit.timesteps, timesteps),
                                   ("decay", fit.decay, True)):
        if have != want:
            raise MBEFitError(f"{path}: gelu_fit needs {field_name} {want!r}, the file has {have!r}")
    return fit


def _head(graph: G.AnnGraph, node: G.AnnNode) -> bool:
    from .ecmt import _is_head
    return _is_head(graph, node)


def _schedule(net: ir.Network, T: int) -> None:
    """t_start of every MBE population: T times the MBE stages before it (C3, methods.md section 0)."""
    stage: dict[str, int] = {}
    for node in net.nodes():
        if isinstance(node, ir.Input):
            stage[node.name] = 0
        elif isinstance(node, ir.Population):
            before = max((stage[p.source] for p in net.incoming(node.name)), default=0)
            is_mbe = isinstance(node.neuron, ir.neurons_mbe.MBE)
            if is_mbe:
                node.t_start = before * T
            stage[node.name] = before + (1 if is_mbe else 0)
        elif isinstance(node, ir.Operator):
            before = max((stage[i] for i in node.inputs), default=0)
            stage[node.name] = before + (1 if isinstance(node, OM._IdentityPair) else 0)
    net.meta["stages"] = max(stage[o] for o in net.outputs)


__all__ = ["MBEMethod"]
