"""Lava Processes for quantised Transformer networks (ECMT ViTs; rules in docs/fixed_point.md,
"Transformer operator networks").

Every process here works on whole batches (ports of shape ``(N, *IR shape)``: the samples of a run
travel side by side, so one Lava run of T steps covers them all) and answers in the same Lava time
step it receives (receive, compute, send): the IR's operator networks have delay 0 everywhere and
evaluate node by node within a step, and Lava's synchronous protocol does the same when no process
holds a value back (Lava's own Dense/Conv send the previous step's buffer first, which is why they
are not used here). Every process records what it sent at every step (``hist``, (T, N, *shape)).

* :class:`MTNeuron` - the multi-threshold neuron; one graded event per step carrying ``e`` (the
  signed level times its threshold, the payload the IR defines). Neuro-core neuron (custom
  microcode on Loihi 2).
* :class:`RelayNeuron` - Relay (``r = sat_P(I + bias)``) and Readout (the same, summed into ``v``).
* :class:`TokenSynapse` - TokenDense (one shared weight per token), Dense, Identity and Conv2d.
* :class:`OperatorProcess` - typed operators (EC LayerNorm / GELU / softmax, matrix-product EC,
  Rearrange, Concat, Mean) as Python processes: **not on neuro cores** (embedded cores / wiring).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

MAX_OPERATOR_INPUTS = 4


class MTNeuron(AbstractProcess):
    """ECMT multi-threshold neuron, integers in state units, per step::

        m = sat_state(v + I)
        s = +2^p  for the largest p < n with 2m >= (2^(p+1) - 1) theta1
            -2^p  for the largest p < n with -2m > (2^(p+1) - 1) theta2   (>= when strict is False)
            0     otherwise
        e = s theta1 (s > 0), s theta2 (s < 0);   v = m - e;   sends e (one graded event)

    ``s_hist`` records the level s, ``e_hist`` the sent value, ``v_hist`` v after the step.
    """

    def __init__(self, *, shape: tuple[int, ...], theta1: np.ndarray, theta2: np.ndarray, v_init: np.ndarray,
                 levels: int, strict: bool, state_bits: int, steps: int, name: str | None = None) -> None:
        super().__init__(shape=tuple(shape), levels=int(levels), strict=bool(strict), state_bits=int(state_bits),
                         steps=int(steps), name=name)
        self.a_in = InPort(shape=tuple(shape))
        self.s_out = OutPort(shape=tuple(shape))
        self.theta1 = Var(shape=tuple(shape), init=np.broadcast_to(theta1, shape).astype(np.int64))
        self.theta2 = Var(shape=tuple(shape), init=np.broadcast_to(theta2, shape).astype(np.int64))
        self.v = Var(shape=tuple(shape), init=np.broadcast_to(v_init, shape).astype(np.int64))
        hist = (int(steps),) + tuple(shape)
        self.s_hist = Var(shape=hist, init=np.zeros(hist, np.int64))
        self.e_hist = Var(shape=hist, init=np.zeros(hist, np.int64))
        self.v_hist = Var(shape=hist, init=np.zeros(hist, np.int64))


class RelayNeuron(AbstractProcess):
    """Relay / Readout compartment: ``r = sat_P(I + bias)`` every step, sent as one graded value;
    a readout (``readout=True``) also sums ``v += r`` (the host's int64 accumulator)."""

    def __init__(self, *, shape: tuple[int, ...], bias: np.ndarray, v_init: np.ndarray, payload_bits: int,
                 readout: bool, steps: int, name: str | None = None) -> None:
        super().__init__(shape=tuple(shape), payload_bits=int(payload_bits), readout=bool(readout), steps=int(steps),
                         name=name)
        self.a_in = InPort(shape=tuple(shape))
        self.s_out = OutPort(shape=tuple(shape))
        self.bias = Var(shape=tuple(shape), init=np.broadcast_to(bias, shape).astype(np.int64))
        self.v = Var(shape=tuple(shape), init=np.broadcast_to(v_init, shape).astype(np.int64))
        hist = (int(steps),) + tuple(shape)
        self.e_hist = Var(shape=hist, init=np.zeros(hist, np.int64))


class TokenSynapse(AbstractProcess):
    """A projection answered within the step: ``acc = sum_j w[i, j] p[j]`` exactly, then
    ``a = acc << weight_exp`` (floor ``>>`` when negative).

    kind ``token_dense``: weight (C_out, C_in) shared by every token (``p`` of shape (N, ..., C_in));
    ``dense``: one (out, in) matrix over the flattened sample; ``identity``: elementwise weight
    (already expanded to the target shape); ``conv``: 2-D convolution (stride, padding, dilation,
    groups) whose sum wraps to ``conv_acc_bits`` (0: no wrap) before the shift.
    """

    def __init__(self, *, kind: str, weight: np.ndarray, weight_exp: int, src_shape: tuple[int, ...],
                 dst_shape: tuple[int, ...], stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1,
                 conv_acc_bits: int = 0, name: str | None = None) -> None:
        super().__init__(kind=kind, weight_exp=int(weight_exp), stride=tuple(stride), padding=tuple(padding),
                         dilation=tuple(dilation), groups=int(groups), conv_acc_bits=int(conv_acc_bits),
                         dst_shape=tuple(dst_shape), name=name)
        w = np.asarray(weight, dtype=np.int64)
        self.s_in = InPort(shape=tuple(src_shape))
        self.a_out = OutPort(shape=tuple(dst_shape))
        self.weight = Var(shape=w.shape, init=w)


class OperatorProcess(AbstractProcess):
    """A typed IR operator stepped with spikeport's plain integer reference kernels
    (``simulator/reference_operators.py``), in a Python process: not on neuro cores.

    ``spec`` is the operator (its class, fields and fixed-point ``params``); inputs arrive on
    ``in0 .. in{k-1}`` in the operator's input order; ``decode[k]`` = (value, offset) integer arrays
    turn a signed IF population's +-1 codes into ``s * value + offset`` (AIF's decoded operand); ``hist`` records every step's output. One
    subclass per input count (Lava binds a model's ports by name): :func:`operator_process`.
    """

    n_in = 0

    def __init__(self, *, spec, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...], payload_bits: int,
                 steps: int, name: str | None = None, decode: list | None = None) -> None:
        if len(in_shapes) != self.n_in:
            raise ValueError(f"operator {name!r}: {len(in_shapes)} inputs, {type(self).__name__} takes {self.n_in}")
        super().__init__(spec=spec, payload_bits=int(payload_bits), out_shape=tuple(out_shape), name=name,
                         decode=list(decode) if decode is not None else [None] * self.n_in)
        for k, shape in enumerate(in_shapes):
            setattr(self, f"in{k}", InPort(shape=tuple(shape)))
        self.s_out = OutPort(shape=tuple(out_shape))
        hist = (int(steps),) + tuple(out_shape)
        self.hist = Var(shape=hist, init=np.zeros(hist, np.int64))


class Operator1(OperatorProcess):
    n_in = 1


class Operator2(OperatorProcess):
    n_in = 2


class Operator3(OperatorProcess):
    n_in = 3


class Operator4(OperatorProcess):
    n_in = 4


OPERATOR_PROCESSES = {1: Operator1, 2: Operator2, 3: Operator3, 4: Operator4}


def operator_process(n_in: int) -> type[OperatorProcess]:
    """The operator Process class for ``n_in`` inputs (1..MAX_OPERATOR_INPUTS)."""
    if n_in not in OPERATOR_PROCESSES:
        raise ValueError(f"{n_in} operator inputs: the Lava operator processes take 1..{MAX_OPERATOR_INPUTS}")
    return OPERATOR_PROCESSES[n_in]
