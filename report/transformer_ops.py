"""Analytic operation counts of a pre-norm Transformer block, ANN and ECMT SNN (closed forms).

A block of N tokens, C channels, Nh heads and an MLP of Ch hidden channels::

    x = x + proj(attn(LN1(x)))     attn: qkv = Linear(C, 3C); per head softmax(q k^T) v
    x = x + fc2(GELU(fc1(LN2(x))))

:func:`table3` gives ECMT's Table 3 (paper 003) with the paper's own formulas, including its
"Matrix Product q, k" entry ``Nh N (C/Nh)^2``, which is not the cost of ``q k^T`` (that is
``Nh N N (C/Nh) = N^2 C``, the same as ``s v``; methods.md section 5). :func:`ann_block` gives the
ANN's arithmetic per module and kind (linear layers and products as MACs, the true ``q k^T``);
:func:`snn_block` the ECMT SNN's over T steps from the events of its multi-threshold populations:

* a Linear fed by an MT population costs ``sum_t E_in(t) * C_out`` accumulates (one per event and
  fan-out synapse): at a firing rate r (events per neuron and step) that is ``r T`` times the ANN's
  MACs, and at the ANN equivalent (T = 1, every neuron one event) exactly the ANN's MACs;
* the two products are matrix-product EC operators, LayerNorm, softmax and GELU EC operators,
  costed per step by ``simulator.operator_work`` (the recipes are in its docstring).

Counts are totals over the samples whose events are given; ``samples = 1`` with per-sample events
gives per-sample counts. ``simulator.opcount`` measures the same quantities on a converted
network from its spike trains; tests/test_transformer_ops.py checks that both agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..simulator.operator_work import (OP_KINDS, Work, add_work, ec_wrapper_work, gelu_work, layernorm_work,
                                       matmul_ec_work, scale_work, softmax_work, work)

MODULES = ("LayerNorm 1", "Linear qkv", "Matrix Product q, k", "Softmax", "Matrix Product s, v", "Linear out",
           "LayerNorm 2", "MLP Linear 1", "GELU", "MLP Linear 2")

#: ECMT (paper 003) Table 3 "Results (M)" as printed, for N = 577, C = 1408, Nh = 16, Ch = 6144.
TABLE3_PRINTED_M = {"LayerNorm 1": 0.81, "Linear qkv": 3431.65, "Matrix Product q, k": 71.49, "Softmax": 5.33,
                    "Matrix Product s, v": 468.76, "Linear out": 1143.88, "LayerNorm 2": 0.81,
                    "MLP Linear 1": 4991.48, "GELU": 3.54, "MLP Linear 2": 4991.48}


@dataclass(frozen=True)
class BlockDims:
    """A pre-norm Transformer block: ``tokens`` N, ``channels`` C, ``heads`` Nh (C % Nh == 0),
    ``hidden`` Ch (MLP channels)."""

    tokens: int
    channels: int
    heads: int
    hidden: int

    def __post_init__(self) -> None:
        for name in ("tokens", "channels", "heads", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"block dims: {name} = {getattr(self, name)} must be >= 1")
        if self.channels % self.heads:
            raise ValueError(f"block dims: channels {self.channels} not divisible by heads {self.heads}")

    @property
    def head_dim(self) -> int:
        return self.channels // self.heads


#: the EVA block of ECMT's Table 3
EVA_BLOCK = BlockDims(tokens=577, channels=1408, heads=16, hidden=6144)


def table3(d: BlockDims) -> dict[str, int]:
    """ECMT Table 3's "Computation Complexity" column, evaluated exactly (integers)."""
    n, c, nh, ch = d.tokens, d.channels, d.heads, d.hidden
    return {"LayerNorm 1": n * c, "Linear qkv": n * c * 3 * c, "Matrix Product q, k": nh * n * (c // nh) ** 2,
            "Softmax": nh * n * n, "Matrix Product s, v": nh * n * n * (c // nh), "Linear out": n * c * c,
            "LayerNorm 2": n * c, "MLP Linear 1": n * c * ch, "GELU": n * ch, "MLP Linear 2": n * ch * c}


def ann_block(d: BlockDims, approximate: str = "none") -> dict[str, Work]:
    """Arithmetic of one ANN block per sample, per module and operation kind."""
    n, c, nh, ch, hd = d.tokens, d.channels, d.heads, d.hidden, d.head_dim
    return {"LayerNorm 1": layernorm_work(n, c), "Linear qkv": work(mac=n * c * 3 * c),
            "Matrix Product q, k": work(mac=nh * n * hd * n), "Softmax": softmax_work(nh * n, n),
            "Matrix Product s, v": work(mac=nh * n * n * hd), "Linear out": work(mac=n * c * c),
            "LayerNorm 2": layernorm_work(n, c), "MLP Linear 1": work(mac=n * c * ch),
            "GELU": gelu_work(n * ch, approximate), "MLP Linear 2": work(mac=n * ch * c)}


@dataclass
class BlockEvents:
    """Non-zero events per step (arrays of length T, summed over ``samples``) of the eight ECMT
    multi-threshold populations of one block: the qkv input, q, k (transposed, (Nh, C/Nh, N)), v,
    the softmax output, and the proj, fc1 and fc2 inputs."""

    qkv_in: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn: np.ndarray
    proj_in: np.ndarray
    fc1_in: np.ndarray
    fc2_in: np.ndarray
    samples: int = 1

    @property
    def timesteps(self) -> int:
        return len(np.asarray(self.qkv_in))

    @classmethod
    def every_neuron_once(cls, d: BlockDims) -> "BlockEvents":
        """The ANN equivalent: T = 1 and every neuron one event (one sample)."""
        n, c, nh, ch = d.tokens, d.channels, d.heads, d.hidden
        one = lambda k: np.array([k], dtype=np.int64)  # noqa: E731
        return cls(one(n * c), one(n * c), one(n * c), one(n * c), one(nh * n * n), one(n * c), one(n * c),
                   one(n * ch), samples=1)


def snn_block(d: BlockDims, ev: BlockEvents, approximate: str = "none") -> dict[str, Work]:
    """Arithmetic of one ECMT SNN block over ``ev.timesteps`` steps for ``ev.samples`` samples."""
    n, c, nh, ch, hd = d.tokens, d.channels, d.heads, d.hidden, d.head_dim
    T, s = ev.timesteps, int(ev.samples)

    def linear(events, c_out: int) -> Work:
        return work(ac=int(np.sum(np.asarray(events, dtype=np.int64))) * c_out)

    def ec(elements: int, f: Work) -> Work:
        return scale_work(add_work(ec_wrapper_work(elements), f), T * s)

    def product(a, b, batch: int, rows: int, inner: int, cols: int) -> Work:
        return add_work(*(matmul_ec_work(batch, rows, inner, cols, t + 1, int(a[t]), int(b[t]), 1.0, s)
                          for t in range(T)))

    return {"LayerNorm 1": ec(n * c, layernorm_work(n, c)), "Linear qkv": linear(ev.qkv_in, 3 * c),
            "Matrix Product q, k": product(ev.q, ev.k, nh, n, hd, n),
            "Softmax": ec(nh * n * n, softmax_work(nh * n, n)),
            "Matrix Product s, v": product(ev.attn, ev.v, nh, n, n, hd), "Linear out": linear(ev.proj_in, c),
            "LayerNorm 2": ec(n * c, layernorm_work(n, c)), "MLP Linear 1": linear(ev.fc1_in, ch),
            "GELU": ec(n * ch, gelu_work(n * ch, approximate)), "MLP Linear 2": linear(ev.fc2_in, c)}


def total(modules: dict[str, Work]) -> Work:
    """Sum over modules, per kind."""
    return add_work(*modules.values()) if modules else work()


__all__ = ["BlockDims", "BlockEvents", "EVA_BLOCK", "MODULES", "OP_KINDS", "TABLE3_PRINTED_M", "ann_block",
           "snn_block", "table3", "total"]
