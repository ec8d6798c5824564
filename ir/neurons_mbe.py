"""MBE neurons (multi-basis exponential decay, paper 001, methods.md section 3) for staged coding C3.

``MBE`` holds the learned parameters of a float network (5N numbers per branch plus alpha);
``MBETable`` is its integer form for quantised networks: the per-step threshold, reset and
intensity tables the chip reads. Both run only in networks with ``coding == "C3"`` (staged coding,
methods.md section 0): a population collects its input while earlier stages run, starts from it,
runs T steps and takes no input after its first step (see the class docstrings). Simulator kernels
live in ``simulator/kernels_mbe.py``; the fitting of the parameters in ``convert/mbe_fit.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .nodes import ArrayLike, NeuronModel, check_array_fields, register_neuron

def _branches(arr, name: str, where: str, ndim: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != ndim or a.shape[0] not in (1, 2) or any(s < 1 for s in a.shape):
        want = "(B, N)" if ndim == 2 else "(B, N, T)"
        raise ValueError(f"{where}: MBE {name} has shape {a.shape}, expected {want} with B = 1 (relu(x) only) "
                         "or 2 (relu(x) and relu(-x) branches)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: MBE {name} contains NaN or infinity")
    return a


@register_neuron
@dataclass
class MBE(NeuronModel):
    """Multi-basis exponential decay neuron, float parameters. Per neuron, branch b, basis n, local
    step t = 0..T-1 (T = ``timesteps``)::

        d_bn[t] = alpha_b * exp(-t*dt_bn/tau_d,bn)
        r_bn[t] = alpha_b * exp(-t*dt_bn/tau_r,bn)
        V_bn[t] = alpha_b * exp(-t*dt_bn/tau_V,bn)
        u_0n[0] = relu(x),  u_1n[0] = relu(-x)                      (branch 1 only when B = 2)
        s_bn[t] = [u_bn[t] >= V_bn[t]]
        u_bn[t+1] = u_bn[t] - s_bn[t] * r_bn[t]
        o_bn[t+1] = o_bn[t] + s_bn[t] * d_bn[t]
        emitted at step t: e[t] = sum_bn w_bn * d_bn[t] * s_bn[t]     (one event per firing basis)
        f_hat(x) = sum_t e[t] = sum_bn w_bn * o_bn[T]

    Arrays ``tau_d``, ``tau_r``, ``tau_V``, ``dt``, ``w`` have shape (B, N) and ``alpha`` (B,); they are
    shared by every neuron of the population (one fitted function). B = 2 realises the signed split
    x = relu(x) - relu(-x): branch 0 approximates f(y) and branch 1 f(-y) for y >= 0 (every V > 0,
    so an input <= 0 never fires a branch). Each basis is a compartment of its own on a chip
    (compiler/partition.py counts B*N per neuron); the simulator sums a neuron's bases into one emitted value, which downstream weights multiply
    exactly as they would each basis' event.

    Staged coding (C3): x is the sum of all input current delivered up to and including the
    population's first active step (t_start), plus ``bias`` once; input arriving after that step is an
    error (the input enters once). A stage therefore starts T steps after the stage before it
    (t_start = previous t_start + T, delay 0), and a chain of D stages takes D*T steps.
    """

    tau_d: ArrayLike = field(default_factory=lambda: np.ones((1, 1)))
    tau_r: ArrayLike = field(default_factory=lambda: np.ones((1, 1)))
    tau_V: ArrayLike = field(default_factory=lambda: np.ones((1, 1)))
    dt: ArrayLike = field(default_factory=lambda: np.ones((1, 1)))
    w: ArrayLike = field(default_factory=lambda: np.ones((1, 1)))
    alpha: ArrayLike = field(default_factory=lambda: np.ones(1))
    timesteps: int = 16
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    function: str = ""

    array_fields: ClassVar[tuple[str, ...]] = ("bias",)
    codings: ClassVar[tuple[str, ...]] = ("C3",)

    @property
    def branches(self) -> int:
        return int(np.asarray(self.w).shape[0])

    @property
    def bases(self) -> int:
        return int(np.asarray(self.w).shape[1])

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(V, R, D) of shape (B, N, T) in float64; D includes the basis weight w (D = w * d)."""
        t = np.arange(int(self.timesteps), dtype=np.float64)
        alpha = np.asarray(self.alpha, dtype=np.float64)[:, None, None]
        dt = np.asarray(self.dt, dtype=np.float64)[..., None]

        def kernel(tau):
            return alpha * np.exp(-t * dt / np.asarray(tau, dtype=np.float64)[..., None])
        return kernel(self.tau_V), kernel(self.tau_r), np.asarray(self.w, dtype=np.float64)[..., None] * kernel(self.tau_d)

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        arrays = {name: _branches(getattr(self, name), name, where, 2) for name in ("tau_d", "tau_r", "tau_V", "dt", "w")}
        want = arrays["w"].shape
        for name, a in arrays.items():
            if a.shape != want:
                raise ValueError(f"{where}: MBE {name} has shape {a.shape}, w has {want} (all must be (B, N))")
            if name != "w" and np.any(a <= 0):
                raise ValueError(f"{where}: MBE {name} must be > 0 (min {a.min():g})")
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.shape != (want[0],) or not np.all(np.isfinite(alpha)) or np.any(alpha <= 0):
            raise ValueError(f"{where}: MBE alpha = {alpha.tolist()} must be {want[0]} finite value(s) > 0, one per branch")
        _check_timesteps(self.timesteps, where)
        check_array_fields(self, where, shape)


@register_neuron
@dataclass
class MBETable(NeuronModel):
    """Integer form of ``MBE`` for quantised networks: the per-step tables themselves. Per neuron,
    branch b, basis n, local step t = 0..T-1 (T = the tables' last axis)::

        x         = sat(sum of u(t') over the collection steps + bias)      (state units)
        u_0n      = max(x, 0),  u_1n = max(-x, 0)
        s_bn[t]   = [u_bn >= threshold[b, n, t]]
        u_bn     -= s_bn[t] * reset[b, n, t]
        emitted at step t: e[t] = sum_bn intensity[b, n, t] * s_bn[t]      (graded payload units)

    ``threshold`` (>= 1) and ``reset`` (>= 0) are integers in state units, ``intensity`` signed
    integers in payload units (the basis weight w is folded in). u(t') is the Lava input current of
    each collection step (docs/fixed_point.md); sat clips to the state range. Since u_bn >= threshold
    >= 1 before every reset and reset <= state max, u_bn never leaves the state range: no overflow
    rule is needed after the start. The tables come from ``compiler.quantize_mbe``.

    Staged coding (C3): x is the sum of all input current delivered up to and including the
    population's first active step (t_start), plus ``bias`` once; input arriving after that step is an
    error (the input enters once). A stage therefore starts T steps after the stage before it
    (t_start = previous t_start + T, delay 0), and a chain of D stages takes D*T steps.
    """

    threshold: ArrayLike = field(default_factory=lambda: np.ones((1, 1, 1)))
    reset: ArrayLike = field(default_factory=lambda: np.ones((1, 1, 1)))
    intensity: ArrayLike = field(default_factory=lambda: np.ones((1, 1, 1)))
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    function: str = ""

    array_fields: ClassVar[tuple[str, ...]] = ("bias",)
    codings: ClassVar[tuple[str, ...]] = ("C3",)

    @property
    def timesteps(self) -> int:
        return int(np.asarray(self.threshold).shape[2])

    @property
    def bases(self) -> int:
        return int(np.asarray(self.threshold).shape[1])

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.threshold, dtype=np.float64), np.asarray(self.reset, dtype=np.float64),
                np.asarray(self.intensity, dtype=np.float64))

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        tabs = {name: _branches(getattr(self, name), name, where, 3) for name in ("threshold", "reset", "intensity")}
        want = tabs["threshold"].shape
        for name, a in tabs.items():
            if a.shape != want:
                raise ValueError(f"{where}: MBETable {name} has shape {a.shape}, threshold has {want}")
            if not np.array_equal(a, np.round(a)):
                raise ValueError(f"{where}: MBETable {name} must hold integers, found {a[a != np.round(a)][0]}")
        if tabs["threshold"].min() < 1:
            raise ValueError(f"{where}: MBETable threshold must be >= 1 (min {tabs['threshold'].min():g}): a threshold "
                             "<= 0 would fire on zero input")
        if tabs["reset"].min() < 0:
            raise ValueError(f"{where}: MBETable reset must be >= 0 (min {tabs['reset'].min():g})")
        _check_timesteps(want[2], where)
        check_array_fields(self, where, shape)


def _check_timesteps(T, where: str) -> None:
    if int(T) != T or not 1 <= int(T) <= 4096:
        raise ValueError(f"{where}: MBE timesteps {T} must be an integer in 1..4096")


MBE_MODELS = (MBE, MBETable)

__all__ = ["MBE", "MBETable", "MBE_MODELS"]
