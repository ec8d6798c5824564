"""Arithmetic of the typed Transformer operators, per step, by operation kind (docs/energy.md).

Operators (ir/operators.py) are neither synapses nor neurons: they run on embedded cores or the
host (hardware.md section 7) and their cost is arithmetic. This module says, for every operator
kind, how many operations of each kind one step costs, as closed forms of the shapes:

    ac    an accumulate driven by a spike: a running sum row/column added once per event
          (the matrix-product EC's products with the running sums; a level is a power of two,
          so level x value is a shift); priced as E_AC
    mac   a multiply-accumulate of two analog values (E_MAC)
    add   an addition, subtraction or comparison of analog values
    mul   a multiplication
    div   a division (one reciprocal per row or per step, then multiplications)
    exp   an exponential;  sqrt  a square root

The recipes (what each module costs per element or row) follow the operators' equations:

* EC wrapper ``O(t) = t F(S(t)/t) - P`` per element and step: ``S += x`` (add), ``S * (1/t)``
  (mul), ``* t`` (mul), ``- P`` (add); one ``1/t`` (div) per operator and step; then F's own cost.
* LayerNorm over a row of C: mean (C-1 adds, 1 mul by 1/C), centring (C adds), variance (C muls,
  C-1 adds, 1 mul), ``+ eps`` (add), ``1/sqrt`` (1 sqrt + 1 div), normalise, scale (2C muls),
  shift (C adds): add 4C-1, mul 3C+2, sqrt 1, div 1 per row.
* softmax over a row of L with the scale folded in: scale (L muls), max (L-1 comparisons, as adds),
  subtract the max (L adds), L exps, sum (L-1 adds), one reciprocal (div), normalise (L muls):
  mul 2L, add 3L-2, exp L, div 1 per row.
* GELU per element, exact form ``0.5 x (1 + erf(x / sqrt 2))`` with erf by Abramowitz & Stegun
  7.1.26 (``t = 1/(1 + p z)``, a degree-5 polynomial in t by Horner, times ``exp(-z^2)``): mul 11,
  add 7, div 1, exp 1; tanh form ``0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))`` with
  ``tanh u = 1 - 2 / (exp(2u) + 1)``: mul 7, add 4, div 1, exp 1.
* matrix-product EC of (..., n, k) @ (..., k, m), B = product of the leading axes, per step t:
  the increment ``A(t) S_B(t) + S_A(t-1) B(t)`` (equal to Thm 4.2's three terms) costs, for a
  spiking operand, one ``ac`` per element of the running-sum row/column each event meets
  (``E_A(t) m`` and, from t = 2 on, ``E_B(t) n``), for an analog operand ``B n k m`` MACs; the
  running sums ``S_A``, ``S_B`` one add per event (per element when analog); the output
  ``S_K/t - S_K(t-1)/(t-1)`` one mul and one add per output element, ``* scale`` one mul when
  scale != 1, and one ``1/t`` (div).
* Mean over axes: one add per input element not starting a sum, one mul (by 1/count) per output.
* Rearrange and Concat are wiring (which neuron feeds which synapse): no arithmetic.

The ANN module the operator stands for (``ann_work``) costs F alone; a matrix product ``B n k m``
MACs. Counts are per sample.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import UnsupportedError
from ..ir import operators as O

OP_KINDS = ("ac", "mac", "add", "mul", "div", "exp", "sqrt")

Work = dict[str, int]


def work(**counts: int) -> Work:
    """A work record with every kind present (zeros for the rest)."""
    bad = set(counts) - set(OP_KINDS)
    if bad:
        raise ValueError(f"unknown operation kinds {sorted(bad)} (kinds: {OP_KINDS})")
    return {k: int(counts.get(k, 0)) for k in OP_KINDS}


def add_work(*parts: Work) -> Work:
    return {k: sum(int(p.get(k, 0)) for p in parts) for k in OP_KINDS}


def scale_work(w: Work, factor: int) -> Work:
    return {k: int(v) * int(factor) for k, v in w.items()}


# ------------------------------------------------------------------------------ recipes
def layernorm_work(rows: int, c: int) -> Work:
    """LayerNorm of ``rows`` rows of ``c`` channels (affine included)."""
    return scale_work(work(add=4 * c - 1, mul=3 * c + 2, sqrt=1, div=1), rows)


def softmax_work(rows: int, length: int) -> Work:
    """Softmax of ``rows`` rows of ``length`` (scale folded in, max subtracted)."""
    return scale_work(work(mul=2 * length, add=3 * length - 2, exp=length, div=1), rows)


def gelu_work(elements: int, approximate: str = "none") -> Work:
    """GELU per element: exact (erf by Abramowitz & Stegun 7.1.26) or the tanh approximation."""
    per = work(mul=11, add=7, div=1, exp=1) if approximate == "none" else work(mul=7, add=4, div=1, exp=1)
    return scale_work(per, elements)


def ec_wrapper_work(elements: int) -> Work:
    """The expectation-compensation bookkeeping around F, one step: 2 adds + 2 muls per element, one 1/t."""
    return work(add=2 * elements, mul=2 * elements, div=1)


def matmul_macs(batch: int, n: int, k: int, m: int) -> int:
    """MACs of the ANN product (..., n, k) @ (..., k, m): ``B n k m``."""
    return int(batch) * int(n) * int(k) * int(m)


def _dims(op: O.MatMulEC, shapes) -> tuple[int, int, int, int]:
    a, b = (tuple(s) for s in shapes)
    return int(np.prod(a[:-2], dtype=np.int64)), int(a[-2]), int(a[-1]), int(b[-1])


def matmul_ec_work(batch: int, n: int, k: int, m: int, t: int, events_a: int | None, events_b: int | None,
                   scale: float = 1.0, samples: int = 1) -> Work:
    """Matrix-product EC at step ``t`` (1-based) for ``samples`` samples. ``events_a`` /
    ``events_b``: non-zero events of a spiking operand this step, summed over the samples;
    ``None`` for an analog operand (dense)."""
    s = int(samples)
    w = work(add=s * batch * n * m, mul=s * batch * n * m * (1 if scale == 1.0 else 2), div=s)
    if events_a is None:
        w["mac"] += s * batch * n * k * m
        w["add"] += s * batch * n * k
    else:
        w["ac"] += int(events_a) * m
        w["add"] += int(events_a)
    if events_b is None:
        w["mac"] += s * batch * n * k * m if t > 1 else 0
        w["add"] += s * batch * k * m
    else:
        w["ac"] += int(events_b) * n if t > 1 else 0
        w["add"] += int(events_b)
    return w


def mean_work(in_elements: int, out_elements: int) -> Work:
    return work(add=in_elements - out_elements, mul=out_elements)


# ------------------------------------------------------------------------------ per operator
def _rows(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    length = int(shape[axis % len(shape)])
    return int(np.prod(shape, dtype=np.int64)) // length, length


def ann_work(op: O.TypedOperator, in_shapes: list[tuple[int, ...]]) -> Work:
    """Arithmetic of the ANN module an operator stands for, per sample (F alone, no EC bookkeeping)."""
    shape = tuple(int(s) for s in op.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(op, O.LayerNormEC):
        return layernorm_work(*_rows(shape, -1))
    if isinstance(op, O.SoftmaxEC):
        return softmax_work(*_rows(shape, op.axis))
    if isinstance(op, O.GELUEC):
        return gelu_work(size, op.approximate)
    if isinstance(op, O.MatMulEC):
        return work(mac=matmul_macs(*_dims(op, in_shapes)))
    if isinstance(op, O.Mean):
        return mean_work(int(np.prod(in_shapes[0], dtype=np.int64)), size)
    if isinstance(op, (O.Rearrange, O.Concat)):
        return work()
    rule = ANN_RULES.get(type(op).__name__)
    if rule is None:
        raise UnsupportedError(f"operator {op.name!r} ({type(op).__name__}): no operation-count rule")
    return rule(op, in_shapes)


def step_work(op: O.TypedOperator, in_shapes: list[tuple[int, ...]], t: int,
              events: list[int | None] | None = None, samples: int = 1) -> Work:
    """Arithmetic of step ``t`` (1-based) of ``op`` for ``samples`` samples. ``events``: per input,
    its non-zero events this step summed over the samples when the input is a spiking population,
    else ``None`` (analog; only the matrix-product EC depends on it)."""
    shape = tuple(int(s) for s in op.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(op, O.ECOperator):
        return scale_work(add_work(ec_wrapper_work(size), ann_work(op, in_shapes)), samples)
    if isinstance(op, O.MatMulEC):
        ev = events if events is not None else [None, None]
        return matmul_ec_work(*_dims(op, in_shapes), t, ev[0], ev[1], float(op.scale), samples)
    if isinstance(op, (O.Mean, O.Rearrange, O.Concat)):
        return scale_work(ann_work(op, in_shapes), samples)
    rule = STEP_RULES.get(type(op).__name__)
    if rule is None:
        raise UnsupportedError(f"operator {op.name!r} ({type(op).__name__}): no operation-count rule")
    return rule(op, in_shapes, t, events, samples)


#: rules of operator kinds added elsewhere (e.g. MBE operators): class name -> function
ANN_RULES: dict[str, Callable] = {}
STEP_RULES: dict[str, Callable] = {}


def register_work_rule(name: str, ann: Callable, step: Callable) -> None:
    """Make an operator kind countable: ``ann(op, in_shapes) -> Work`` and
    ``step(op, in_shapes, t, events, samples) -> Work`` (see :func:`step_work`)."""
    ANN_RULES[name], STEP_RULES[name] = ann, step


# ------------------------------------------------------------------------------ C2 operators
# (ir/operators_c2.py, ``--method stbif|pmsm`` on a ViT). Worst case per step (every input element
# changed; simulator/opcount_c2.py counts the rows that did): ``S += x`` one add per input element,
# F on every row, ``O = F(S) - P`` one add per output element. The difference form of the product,
# ``A(t) S_B(t) + S_A(t-1) B(t)``: one ``ac`` per element of the running-sum row / column each event
# meets (E_A m + E_B n), one add per event for the running sums; an analog operand B n k m MACs.
def _c2_function_ann(op, in_shapes) -> Work:
    shape = tuple(int(s) for s in op.shape)
    if op.fn == "layernorm":
        return layernorm_work(*_rows(shape, -1))
    if op.fn == "softmax":
        return softmax_work(*_rows(shape, op.axis))
    return gelu_work(int(np.prod(shape, dtype=np.int64)), op.approximate)


def _c2_function_step(op, in_shapes, t, events, samples) -> Work:
    size = int(np.prod(op.shape, dtype=np.int64))
    return scale_work(add_work(work(add=2 * size), _c2_function_ann(op, in_shapes)), samples)


def matmul_c2_work(batch: int, n: int, k: int, m: int, events_a: int | None, events_b: int | None,
                   samples: int = 1) -> Work:
    """Difference form of the product at one step for ``samples`` samples (events summed over them)."""
    s = int(samples)
    w = work()
    for ev, row, dense in ((events_a, m, batch * n * k), (events_b, n, batch * k * m)):
        if ev is None:
            w["mac"] += s * batch * n * k * m
            w["add"] += s * dense
        else:
            w["ac"] += int(ev) * row
            w["add"] += int(ev)
    return w


def _matmul_c2_ann(op, in_shapes) -> Work:
    return work(mac=matmul_macs(*_dims(op, in_shapes)))


def _matmul_c2_step(op, in_shapes, t, events, samples) -> Work:
    ev = events if events is not None else [None, None]
    return matmul_c2_work(*_dims(op, in_shapes), ev[0], ev[1], samples)


for _name in ("LayerNormC2", "GELUC2", "SoftmaxC2"):
    register_work_rule(_name, _c2_function_ann, _c2_function_step)
register_work_rule("MatMulC2", _matmul_c2_ann, _matmul_c2_step)


from . import operator_work_mbe  # noqa: E402,F401  (rules of the MBE operators, C3)
