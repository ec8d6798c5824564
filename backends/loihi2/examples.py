"""Small random quantised IR networks (Loihi 2 datapath, Lava timing) for tests and benchmarks.

Weights are even mantissas (Lava's mixed-sign 8-bit truncation keeps them), thresholds are
multiples of 64, populations start at their path latency and every projection has delay 1
(the residual skip has delay 2), as spikeport's quantiser lays them out for Lava.
"""
from __future__ import annotations

import numpy as np

from ...ir import IF, Conv2d, Datapath, Dense, Identity, Input, Network, Population, Readout, SpikePayload
from ...ir.neurons_extra import GradedSignedIF, MultiSpikeIF

GRADED8 = dict(kind="graded", bits=8, min_level=0, max_level=255)
SIGNED = dict(kind="signed", bits=2, min_level=-1, max_level=1)


def even_weights(rng: np.random.Generator, shape, lo: int = -60, hi: int = 60) -> np.ndarray:
    return (rng.integers(lo // 2, hi // 2, size=shape) * 2).astype(np.int64)


def random_mlp(seed: int = 0, reset: str = "subtract", compare: str = ">=", signed: bool = False, leak: int = 0,
               readout: bool = True, sizes: tuple[int, int, int] = (5, 4, 3)) -> Network:
    """input -> Dense -> IF (any variant) -> Dense(weight_exp 1) -> Readout or reset-zero '>' IF."""
    rng = np.random.default_rng(seed)
    n_in, n_h, n_out = sizes
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(n_in,), payload=SpikePayload(**GRADED8)))
    kw = dict(threshold=np.full(n_h, 64 * 40), bias=rng.integers(-20, 20, n_h) * 4, reset=reset, compare=compare,
              leak=leak)
    if signed:
        kw.update(neg_threshold=np.full(n_h, 64 * 40), neg_reset=np.full(n_h, 64 * 40))
    net.add(Population("h", shape=(n_h,), neuron=IF(**kw), payload=SpikePayload(**(SIGNED if signed else {})),
                       t_start=1))
    net.add(Dense("x_h", source="x", target="h", weight=even_weights(rng, (n_h, n_in)), delay=1))
    out = Readout(bias=rng.integers(-5, 5, n_out)) if readout else IF(threshold=np.full(n_out, 64 * 3), reset="zero",
                                                                       compare=">")
    net.add(Population("o", shape=(n_out,), neuron=out, t_start=2))
    net.add(Dense("h_o", source="h", target="o", weight=even_weights(rng, (n_out, n_h), -120, 120), delay=1,
                  weight_exp=1))
    net.outputs = ["o"]
    net.validate()
    return net


def random_convnet(seed: int = 0, weight_exp: int = -1) -> Network:
    """(1,6,5) -> conv3x3 pad1 -> IF -> conv3x3 stride2 (weight_exp) -> IF(zero, '>') -> Dense -> Readout."""
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(1, 6, 5), payload=SpikePayload(**GRADED8)))
    net.add(Population("c1", shape=(2, 6, 5), neuron=IF(threshold=np.array([64 * 200, 64 * 300]), bias=np.array([8, -16])),
                       t_start=1))
    net.add(Conv2d("x_c1", source="x", target="c1", weight=even_weights(rng, (2, 1, 3, 3)), padding=(1, 1), delay=1))
    net.add(Population("c2", shape=(3, 3, 3), neuron=IF(threshold=np.full(3, 64 * 2), reset="zero", compare=">"),
                       t_start=2))
    net.add(Conv2d("c1_c2", source="c1", target="c2", weight=even_weights(rng, (3, 2, 3, 3), -200, 200), stride=(2, 2),
                   padding=(1, 1), delay=1, weight_exp=weight_exp))
    net.add(Population("o", shape=(4,), neuron=Readout(bias=np.zeros(4)), t_start=3))
    net.add(Dense("c2_o", source="c2", target="o", weight=even_weights(rng, (4, 27)), delay=1))
    net.outputs = ["o"]
    net.validate()
    return net


def random_resnet(seed: int = 0) -> Network:
    """IF -> signed IF -> IF(zero, '>') with an identity skip (delay 2) around the middle layer."""
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(6,), payload=SpikePayload(**GRADED8)))
    th = np.full(6, 64 * 100)
    net.add(Population("a", shape=(6,), neuron=IF(threshold=th), t_start=1))
    net.add(Dense("x_a", source="x", target="a", weight=even_weights(rng, (6, 6)), delay=1))
    net.add(Population("b", shape=(6,), neuron=IF(threshold=th // 50, neg_threshold=th // 50, neg_reset=th // 50),
                       payload=SpikePayload(**SIGNED), t_start=2))
    net.add(Dense("a_b", source="a", target="b", weight=even_weights(rng, (6, 6), -100, 100), delay=1))
    net.add(Population("c", shape=(6,), neuron=IF(threshold=th // 100, reset="zero", compare=">"), t_start=3))
    net.add(Dense("b_c", source="b", target="c", weight=even_weights(rng, (6, 6), -100, 100), delay=1))
    net.add(Identity("a_c", source="a", target="c", weight=np.array(40), delay=2))
    net.add(Population("o", shape=(3,), neuron=Readout(bias=np.zeros(3)), t_start=4))
    net.add(Dense("c_o", source="c", target="o", weight=even_weights(rng, (3, 6)), delay=1))
    net.outputs = ["o"]
    net.validate()
    return net


def random_if_mlp(sizes=(784, 512, 256, 10), seed: int = 0, readout: bool = False) -> Network:
    """Plain IF chain (reset by subtraction, '>=') with an IF or Readout output, for benchmarks."""
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(sizes[0],), payload=SpikePayload(**GRADED8)))
    prev = "x"
    for i, n in enumerate(sizes[1:], start=1):
        name = f"l{i}"
        last = i == len(sizes) - 1
        neuron = Readout() if (last and readout) else IF(threshold=np.full(n, 64 * (600 if i == 1 else 40)))
        net.add(Population(name, shape=(n,), neuron=neuron, t_start=i))
        hi = 16 if i == 1 else 40
        net.add(Dense(f"{prev}_{name}", source=prev, target=name,
                      weight=even_weights(rng, (n, sizes[i - 1]), -hi + 4, hi), delay=1))
        prev = name
    net.outputs = [prev]
    net.validate()
    return net


def random_graded_mlp(seed: int = 0, n_pos: int = 3, n_neg: int = 2, levels: tuple[int, int] = (-7, 5),
                      reset: str = "subtract", compare: str = ">",
                      sizes: tuple[int, int, int, int] = (5, 4, 4, 3)) -> Network:
    """input -> Dense -> MultiSpikeIF (PMSM counts in [-n_neg, n_pos], per-neuron thresholds, v_init =
    threshold / 2) -> Dense -> GradedSignedIF (+1 carries levels[1], -1 carries levels[0]) -> Dense -> Readout.

    Both hidden layers send graded events, so their projections run in Lava's graded mode."""
    rng = np.random.default_rng(seed)
    n_in, n_m, n_g, n_out = sizes
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(n_in,), payload=SpikePayload(**GRADED8)))
    theta = rng.integers(60, 120, n_m) * 64 * 25
    lo, hi = -int(n_neg), int(n_pos)
    net.add(Population("m", shape=(n_m,), neuron=MultiSpikeIF(threshold=theta, bias=rng.integers(-20, 20, n_m) * 64,
                                                              v_init=theta // 2, n_pos=n_pos, n_neg=n_neg),
                       payload=SpikePayload(kind="graded", bits=max(abs(lo), hi, 1).bit_length() + (lo < 0),
                                            min_level=lo, max_level=hi), t_start=1))
    net.add(Dense("x_m", source="x", target="m", weight=even_weights(rng, (n_m, n_in)), delay=1))
    th = np.full(n_g, 64 * 300)
    g_lo, g_hi = levels
    net.add(Population("g", shape=(n_g,), neuron=GradedSignedIF(threshold=th, bias=rng.integers(-20, 20, n_g) * 8,
                                                                reset=reset, compare=compare, neg_threshold=th,
                                                                neg_reset=th),
                       payload=SpikePayload(kind="graded", bits=8, min_level=g_lo, max_level=g_hi), t_start=2))
    net.add(Dense("m_g", source="m", target="g", weight=even_weights(rng, (n_g, n_m), -120, 120), delay=1))
    net.add(Population("o", shape=(n_out,), neuron=Readout(bias=rng.integers(-5, 5, n_out)), t_start=3))
    net.add(Dense("g_o", source="g", target="o", weight=even_weights(rng, (n_out, n_g)), delay=1))
    net.outputs = ["o"]
    net.validate()
    return net


def random_multispike_convnet(seed: int = 0) -> Network:
    """(1,5,4) -> conv3x3 pad1 -> MultiSpikeIF -> graded conv3x3 stride2 -> MultiSpikeIF (0..2) -> Dense -> Readout."""
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(1, 5, 4), payload=SpikePayload(**GRADED8)))
    th1 = np.array([64 * 300, 64 * 450])
    c1 = MultiSpikeIF(threshold=th1, bias=np.array([64, -128]), v_init=th1 // 2, n_pos=3, n_neg=1)
    net.add(Population("c1", shape=(2, 5, 4), neuron=c1,
                       payload=SpikePayload(kind="graded", bits=3, min_level=-1, max_level=3), t_start=1))
    net.add(Conv2d("x_c1", source="x", target="c1", weight=even_weights(rng, (2, 1, 3, 3)), padding=(1, 1), delay=1))
    th2 = np.full(3, 64 * 20)
    net.add(Population("c2", shape=(3, 3, 2), neuron=MultiSpikeIF(threshold=th2, v_init=th2 // 2, n_pos=2, n_neg=0),
                       payload=SpikePayload(kind="graded", bits=2, min_level=0, max_level=2), t_start=2))
    net.add(Conv2d("c1_c2", source="c1", target="c2", weight=even_weights(rng, (3, 2, 3, 3), -100, 100), stride=(2, 2),
                   padding=(1, 1), delay=1))
    net.add(Population("o", shape=(4,), neuron=Readout(bias=np.zeros(4)), t_start=3))
    net.add(Dense("c2_o", source="c2", target="o", weight=even_weights(rng, (4, 18)), delay=1))
    net.outputs = ["o"]
    net.validate()
    return net


def wrapping_convnet(seed: int = 0) -> Network:
    """(16,6,6) 8-bit graded input -> Lava's own Conv (16 -> 4, 5x5, pad 2, weight_exp 0, weights
    near the 8-bit top) -> IF(zero, '>') -> Dense -> Readout. Worst-case conv sum 400 * 254 * 255
    ~ 26M > 2^23: Lava's Conv wraps it modulo 2^24 (issue 14's example at full mantissa)."""
    rng = np.random.default_rng(seed)
    net = Network(datapath=Datapath())
    net.add(Input("x", shape=(16, 6, 6), payload=SpikePayload(**GRADED8)))
    net.add(Population("c", shape=(4, 6, 6), neuron=IF(threshold=np.array(64 * 60000), reset="zero", compare=">"),
                       t_start=1))
    net.add(Conv2d("x_c", source="x", target="c", weight=even_weights(rng, (4, 16, 5, 5), 200, 254), padding=(2, 2),
                   delay=1))
    net.add(Population("o", shape=(3,), neuron=Readout(bias=np.zeros(3)), t_start=2))
    net.add(Dense("c_o", source="c", target="o", weight=even_weights(rng, (3, 144)), delay=1))
    net.outputs = ["o"]
    net.validate()
    return net
