"""Arithmetic of the MBE Transformer operators (ir/operators_mbe.py) by operation kind, registered
with ``simulator.operator_work`` so that placement and resource reports count them.

In staged coding C3 an operator computes once per sample, at the end of its inputs' stage, so the
rules give that once-per-sample work whatever the step ``t`` (docs/energy.md). Per element (rows
reduce along ``axis``), as the fixed-point forms of docs/fixed_point.md compute them:

* ``MBEProduct`` / ``MBEMatMul``: each operand into its identity state (one mul per element), the
  identity spikes summed into the operand's integer (one ``ac`` per spike, counted at the worst
  case N T per element, one branch firing: the inputs' own events are not these spikes), then the product of the two sums: one
  ``mul`` per output element (``MBEProduct``) or ``B n k m`` ``mac`` (``MBEMatMul``), and the
  rounding shift (one ``add``). The paper's own count (one accumulate per coinciding spike pair)
  is the MBE energy report's, from measured pairs (report/mbe_energy.py).
* ``Exp2Split``: the row max (comparisons), the subtraction, the multiply, the floor: add 3, mul 1.
* ``MantExp``: the row sum (one add per input element), then per row the multiply, the eps add and
  the leading-one detection (add 2, mul 1).
* ``Ldexp``: one exponent add / shift per element.

The ANN module an MBE operator stands for is a part of softmax or LayerNorm (counted by the
operators of the EC path); only the matrix product has its own ANN work, ``B n k m`` MACs.
"""
from __future__ import annotations

import numpy as np

from ..ir import operators_mbe as OM
from .operator_work import _rows, add_work, matmul_macs, register_work_rule, scale_work, work


def _size(shape) -> int:
    return int(np.prod(tuple(int(s) for s in shape), dtype=np.int64))


def _mm_dims(in_shapes):
    a, b = (tuple(int(v) for v in s) for s in in_shapes)
    return int(np.prod(a[:-2], dtype=np.int64)), a[-2], a[-1], b[-1]


def _ann(op, in_shapes):
    if isinstance(op, OM.MBEMatMul):
        return work(mac=matmul_macs(*_mm_dims(in_shapes)))
    return work()


def _step(op, in_shapes, t, events, samples=1):
    size = _size(op.shape)
    if isinstance(op, OM._IdentityPair):
        per_spike = int(np.asarray(op.w).shape[1]) * int(op.timesteps)
        ac = sum(_size(s) for s in in_shapes) * per_spike * int(samples)
        w = work(ac=ac, mul=sum(_size(s) for s in in_shapes) * int(samples))
        prod = work(mac=matmul_macs(*_mm_dims(in_shapes))) if isinstance(op, OM.MBEMatMul) else work(mul=size)
        return add_work(w, scale_work(add_work(prod, work(add=size)), samples))
    if isinstance(op, OM.Exp2Split):
        return scale_work(work(add=3 * size, mul=size), samples)
    if isinstance(op, OM.MantExp):
        rows, _ = _rows(tuple(int(v) for v in in_shapes[0]), op.axis)
        return scale_work(work(add=_size(in_shapes[0]) + 2 * rows, mul=rows), samples)
    if isinstance(op, OM.Ldexp):
        return scale_work(work(add=size), samples)
    raise TypeError(type(op).__name__)


for _name in OM.MBE_OPERATOR_TYPES:
    register_work_rule(_name, _ann, _step)

__all__: list[str] = []
