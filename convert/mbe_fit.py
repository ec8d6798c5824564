"""Fitting MBE neurons to a scalar function (paper 001, methods.md section 3), deterministic per seed.

As the paper reports: M uniform samples on the function's domain, Adam (lr 0.01, decay 0.99 per
epoch), 200 epochs, learning tau_d, tau_r, tau_V, dt and w per basis with alpha = max |f - offset|
on the domain (per branch: on the branch's side of the domain, so GELU's relu(-x) branch gets the
lobe's 0.17 rather than 10). Our choices where the paper is silent (docs/mbe.md):

* positivity: tau_* and dt are learned as logarithms;
* the spike H(u - V) is exact in the forward pass; its gradient is the derivative of a sigmoid of
  width ``SURROGATE_WIDTH * V[t]`` (relative to the step's threshold, which decays) (a surrogate; without it nothing but w would move);
* initialisation: every kernel starts near the binary code (tau = dt/ln 2, so each halves per
  step) with a seeded spread of the decay rates so bases differ, and w at the least-squares
  optimum for those kernels (w enters the output linearly);
* signed domains use the relu(x)/relu(-x) split (two branches). Odd functions (identity, tanh)
  share one fit mirrored (branch 1 = branch 0 with w negated); GELU fits both branches;
* an input <= 0 never fires, so MBE(0) = 0: functions on [lo, hi] with lo >= 0 are fitted as
  f(x) = f(lo) + MBE(x - lo) (``offset`` f(lo), ``shift`` lo, the shift is the neuron's bias), so
  the target starts at 0 where the code does (2^x = 1 + MBE(x); 1/x = 2 + MBE(x - 0.5) with w < 0);
* w enters the output linearly: at every check (every CHECK_EVERY epochs and after the last) it is
  re-solved by least squares on all samples in float64 (variable projection) and the check with
  the lowest training MSE is kept; a check whose kernels overflowed (non-finite outputs) sends the
  parameters back to the best check; minibatches of 500 (the paper gives no batch size; 20 Adam
  steps per epoch, 4,000 in all, about as much arithmetic as fewer larger steps), float32 Adam steps in one thread
  (bit-identical reruns on one machine); MSE is reported in float64 on a uniform grid.
* ``decay=False`` is the ablation of Fig. 6c: each kernel is the constant alpha*exp(-dt/tau) (the
  t in the exponent removed), same parameters, same training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..ir.neurons_mbe import MBE
from .lower import ConversionError

SURROGATE_WIDTH = 0.05
EVAL_POINTS = 20001
CHECK_EVERY = 10          # epochs between full-sample checks for the kept (best) parameters


class MBEFitError(ConversionError):
    """Bad fitting arguments or a bad fit file; the message names the file or option, field and value."""


@dataclass(frozen=True)
class FunctionSpec:
    """A function MBE neurons approximate, its domain and the defaults of the shipped fits."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    domain: tuple[float, float]
    bases: int
    timesteps: int = 16
    odd: bool = False
    note: str = ""

    @property
    def shift(self) -> float:
        """Input shift: lo for domains [lo, hi] with lo >= 0 (the code starts at x - lo = 0), else 0."""
        return self.domain[0] if self.domain[0] >= 0 else 0.0

    @property
    def offset(self) -> float:
        return float(self.fn(torch.tensor(self.shift, dtype=torch.float64))) if self.domain[0] >= 0 else 0.0

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the MBE neuron fits, as a function of its input x - shift."""
        return self.fn(x + self.shift) - self.offset


FUNCTIONS: dict[str, FunctionSpec] = {s.name: s for s in (
    FunctionSpec("gelu", lambda x: torch.nn.functional.gelu(x), (-10.0, 10.0), 4,
                 note="domain ours: the paper's (-120, 10) leaves the fit coarse near 0, where ViT GELU inputs "
                      "lie (docs/mbe.md; its fits ship as gelu_paper_*, --opt gelu_fit=paper); negative lobe by the "
                      "relu(-x) branch"),
    FunctionSpec("tanh", torch.tanh, (-4.0, 4.0), 4, odd=True, note="domain ours (the paper gives none)"),
    FunctionSpec("identity", lambda x: x, (-1.0, 1.0), 8, odd=True,
                 note="scale alpha by s for operands in [-s, s] (the code is homogeneous in x and alpha)"),
    FunctionSpec("exp2", lambda x: torch.exp2(x), (0.0, 1.0), 8,
                 note="2^f for the fractional part f of softmax's exponent; fitted as 1 + MBE(f)"),
    FunctionSpec("reciprocal", lambda x: 1.0 / x, (0.5, 1.0), 8, note="1/M for a mantissa M in [0.5, 1)"),
    FunctionSpec("invsqrt", lambda x: 1.0 / torch.sqrt(x), (0.5, 2.0), 8,
                 note="1/sqrt(M) for M in [0.5, 2) (mantissa after making the exponent even)"),
)}


@dataclass
class MBEFit:
    """Fitted basis parameters of one function, with how they were obtained and how well they fit."""

    function: str
    domain: tuple[float, float]
    offset: float              # f_hat(x) = offset + MBE(x - shift)
    shift: float
    bases: int
    timesteps: int
    decay: bool
    alpha: np.ndarray          # (B,) per branch
    odd: bool
    tau_d: np.ndarray          # (B, N) as the IR stores them (branch 1 mirrored for odd functions)
    tau_r: np.ndarray
    tau_V: np.ndarray
    dt: np.ndarray
    w: np.ndarray
    seed: int
    samples: int
    epochs: int
    lr: float
    lr_decay: float
    batch_size: int
    mse: float                 # float64, uniform grid of EVAL_POINTS on the domain
    max_abs_err: float

    def neuron(self, bias=0.0, scale: float = 1.0) -> MBE:
        """An IR ``MBE`` realising ``f(x) - offset`` (its bias holds ``bias - shift``); ``scale`` s makes it
        act on s*x (alpha -> s*alpha), exact for the identity (homogeneous), a rescaling otherwise."""
        if not self.decay:
            raise MBEFitError(f"MBE fit of {self.function!r} was made without decay (ablation); the IR neuron decays")
        B = self.w.shape[0]
        return MBE(tau_d=self.tau_d.copy(), tau_r=self.tau_r.copy(), tau_V=self.tau_V.copy(), dt=self.dt.copy(),
                   w=self.w.copy(), alpha=np.asarray(self.alpha, dtype=np.float64) * scale, timesteps=self.timesteps,
                   bias=np.asarray(bias, dtype=np.float64) - self.shift * scale, function=self.function)

    def __call__(self, x, chunk: int = 1 << 18) -> np.ndarray:
        """f_hat(x) = offset + MBE(x - shift), float64, as the float simulator computes it; ``chunk``
        elements at a time (the spike loop holds a few (elements, branches, bases) arrays)."""
        p = {k: torch.as_tensor(getattr(self, k), dtype=torch.float64) for k in ("tau_d", "tau_r", "tau_V", "dt", "w")}
        alpha = torch.as_tensor(np.asarray(self.alpha, dtype=np.float64))
        xt = (torch.as_tensor(np.asarray(x, dtype=np.float64)) - self.shift).reshape(-1)
        with torch.no_grad():
            y = torch.cat([_forward(xt[a:a + chunk], p, alpha, self.timesteps, self.decay, surrogate=False)
                           for a in range(0, max(len(xt), 1), chunk)]) if len(xt) else xt
        return (y.numpy() + self.offset).reshape(np.shape(x))


class _Spike(torch.autograd.Function):
    """H(z) forward (z >= 0 fires), sigmoid-derivative surrogate backward."""

    @staticmethod
    def forward(ctx, z, width):
        ctx.save_for_backward(z)
        ctx.width = width
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        sg = torch.sigmoid(z / ctx.width)
        return g * sg * (1 - sg) / ctx.width, None


def _kernels(p: dict, alpha: torch.Tensor, T: int, decay: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(V, R, d) of shape (B, N, T); d without the basis weight w."""
    t = torch.arange(T, dtype=p["w"].dtype, device=p["w"].device)
    steps = t if decay else torch.ones_like(t)

    def k(tau):
        return alpha[:, None, None] * torch.exp(-steps * (p["dt"] / tau)[..., None])
    return k(p["tau_V"]), k(p["tau_r"]), k(p["tau_d"])


def _spike_loop(u0: torch.Tensor, Vt: torch.Tensor, Rt: torch.Tensor, dt: torch.Tensor,
                z_: np.ndarray | None = None, s_: np.ndarray | None = None) -> torch.Tensor:
    """o[T] (M, B, N) of the recursion z = u - V_j, s = [z >= 0], u <- u - s R_j, o <- o + s d_j for
    kernels (T, B, N), one IEEE operation at a time on numpy arrays in the inputs' dtype (the same
    operations, hence the same bits, as torch's); ``z_``, ``s_`` (T, M, B, N) receive z and s."""
    T = Vt.shape[0]
    u = u0.contiguous().numpy().copy()
    out = torch.zeros(u.shape, dtype=u0.dtype)
    o_, v_, r_, d_ = out.numpy(), Vt.numpy(), Rt.numpy(), dt.numpy()
    z = np.empty_like(u)
    s = np.empty_like(u)
    sr = np.empty_like(u)
    with np.errstate(all="ignore"):                               # inf/nan propagate silently, as in torch
        for j in range(T):
            zj = z if z_ is None else z_[j]
            sj = s if s_ is None else s_[j]
            np.subtract(u, v_[j], out=zj)
            np.greater_equal(zj, 0, out=sj, casting="unsafe")
            np.multiply(sj, r_[j], out=sr)                        # exact: s is 0 or 1
            np.subtract(u, sr, out=u)
            np.multiply(sj, d_[j], out=sr)
            np.add(o_, sr, out=o_)
    return out


class _SpikeLoop(torch.autograd.Function):
    """The T-step spike recursion of every basis as one autograd node (the fitter's hot loop).

    Forward, per step j: z = u - V_j, s = H(z), u <- u - s R_j, out <- out + s d_j (the IR ``MBE``
    equations without w). Backward is written out in reverse step order with the operations, operands
    and summation order that autograd applies to the step-by-step graph of ``_Spike``
    (``_basis_outputs_stepwise``): gs_j = gout d_j + (-gu_{j+1}) R_j, gz_j = gs_j sg (1 - sg) / width,
    gu_j = gz_j + gu_{j+1}; dV_j, dR_j, dd_j are sums over the samples. Only the sequential recursions run
    step by step, as single IEEE float32 operations on numpy views (each exactly rounded, so equal to
    torch's); everything else (sigmoids, products, the sample sums) runs once over all steps. The
    gradients, and hence a seeded fit, are bit-identical to the step-by-step graph
    (tests/test_mbe_fit.py checks it) at a fraction of its per-operation overhead
    (benchmarks/mbe_fit_speed.py). Kernels V, R, d are (B, N, T); u0 is (M, B, N).
    """

    @staticmethod
    def forward(ctx, u0, V, R, d):
        Vt, Rt, dt = (k.detach().permute(2, 0, 1).contiguous() for k in (V, R, d))      # (T, B, N)
        Z = torch.empty((Vt.shape[0],) + tuple(u0.shape), dtype=u0.dtype)
        S = torch.empty_like(Z)
        out = _spike_loop(u0.detach(), Vt, Rt, dt, Z.numpy(), S.numpy())
        ctx.save_for_backward(Vt, Rt, dt, Z, S)
        return out

    @staticmethod
    def backward(ctx, gout):
        Vt, Rt, dt, Z, S = ctx.saved_tensors
        T = Vt.shape[0]
        gout = gout.contiguous()
        width = SURROGATE_WIDTH * Vt                              # as _Spike's width, elementwise (T, B, N)
        sg = torch.sigmoid(Z / width[:, None])                    # (T, M, B, N), elementwise
        omsg = 1 - sg
        GS = gout * dt[:, None]                                   # gout d_j, from out + s d_j
        GZ = torch.empty_like(Z)
        NGU = torch.empty_like(Z[:-1])                            # -gu_{j+1} for j < T - 1
        gs_, sg_, om_, w_, r_ = GS.numpy(), sg.numpy(), omsg.numpy(), width.numpy(), Rt.numpy()
        gz_, ngu_ = GZ.numpy(), NGU.numpy()
        gu = None
        tmp = np.empty(gout.shape, dtype=gs_.dtype)
        with np.errstate(all="ignore"):                           # inf/nan propagate silently, as in torch
            for j in range(T - 1, -1, -1):
                gs = gs_[j]
                if gu is not None:                                # from u - s R_j
                    np.negative(gu, out=ngu_[j])
                    np.multiply(ngu_[j], r_[j], out=tmp)
                    np.add(gs, tmp, out=gs)
                np.multiply(gs, sg_[j], out=gz_[j])               # _Spike.backward: g * sg * (1 - sg) / width
                np.multiply(gz_[j], om_[j], out=gz_[j])
                np.divide(gz_[j], w_[j], out=gz_[j])
                gu = gz_[j].copy() if gu is None else np.add(gz_[j], gu)
        def to_bnt(g):          # (T, B, N) -> contiguous (B, N, T), the layout autograd's gradients have
            return g.permute(1, 2, 0).contiguous()
        gR = None               # T = 1: R_0 never reaches the output (nor R_{T-1} at any T)
        if T > 1:
            gR = to_bnt(torch.cat([(NGU * S[:-1]).sum(1), torch.zeros_like(Vt[:1])]))
        return None, to_bnt((-GZ).sum(1)), gR, to_bnt((gout * S).sum(1))


def _basis_outputs(x: torch.Tensor, p: dict, alpha: torch.Tensor, T: int, decay: bool, surrogate: bool) -> torch.Tensor:
    """o_bn[T] of every basis (M, B, N) for samples x (M,), the IR ``MBE`` equations without w."""
    V, R, d = _kernels(p, alpha, T, decay)                       # (B, N, T)
    B, N = V.shape[0], V.shape[1]
    parts = [torch.relu(x), torch.relu(-x)][:B]
    u = torch.stack(parts, dim=-1)[..., None].expand(x.shape[0], B, N)
    if surrogate:
        return _SpikeLoop.apply(u, V, R, d)
    with torch.no_grad():
        return _spike_loop(u, *(k.permute(2, 0, 1).contiguous() for k in (V, R, d)))


def _basis_outputs_stepwise(x: torch.Tensor, p: dict, alpha: torch.Tensor, T: int, decay: bool) -> torch.Tensor:
    """The surrogate forward as one autograd graph node per step (``_Spike``): the reference that
    ``_SpikeLoop`` reproduces bit for bit (kept for the equality test)."""
    V, R, d = _kernels(p, alpha, T, decay)
    B, N = V.shape[0], V.shape[1]
    parts = [torch.relu(x), torch.relu(-x)][:B]
    u = torch.stack(parts, dim=-1)[..., None].expand(x.shape[0], B, N)
    out = torch.zeros_like(u)
    for j in range(T):
        z = u - V[:, :, j]
        s = _Spike.apply(z, SURROGATE_WIDTH * V[:, :, j].detach())
        u = u - s * R[:, :, j]
        out = out + s * d[:, :, j]
    return out


def _forward(x: torch.Tensor, p: dict, alpha: torch.Tensor, T: int, decay: bool, surrogate: bool) -> torch.Tensor:
    """MBE output (without offset): sum_bn w_bn o_bn[T]."""
    return (_basis_outputs(x, p, alpha, T, decay, surrogate) * p["w"]).sum(dim=(-2, -1))


def fit_mbe(function: str, bases: int | None = None, timesteps: int | None = None, *, seed: int = 0,
            samples: int = 10_000, epochs: int = 200, lr: float = 0.01, lr_decay: float = 0.99,
            batch_size: int = 500, decay: bool = True, domain: tuple[float, float] | None = None) -> MBEFit:
    """Learn the basis parameters of ``function`` (a key of FUNCTIONS); same seed -> same parameters.
    ``domain`` (lo, hi) replaces the function's default domain (e.g. GELU on the range a model's
    GELU inputs actually take: docs/mbe.md, "GELU: where MBE loses accuracy")."""
    if function not in FUNCTIONS:
        raise MBEFitError(f"mbe-fit: unknown function {function!r}; known: {sorted(FUNCTIONS)}")
    spec = FUNCTIONS[function]
    if domain is not None:
        lo, hi = (float(v) for v in domain)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise MBEFitError(f"mbe-fit: domain {tuple(domain)} must be two finite numbers lo < hi")
        if spec.odd and lo != -hi:
            raise MBEFitError(f"mbe-fit: {function} is fitted as an odd function; its domain must be symmetric "
                              f"(-a, a), got ({lo}, {hi})")
        spec = replace(spec, domain=(lo, hi))
    N = int(bases if bases is not None else spec.bases)
    T = int(timesteps if timesteps is not None else spec.timesteps)
    for name, v, lo, hi in (("bases", N, 1, 127), ("timesteps", T, 1, 4096), ("samples", samples, 1, 10 ** 7),
                            ("epochs", epochs, 1, 10 ** 5), ("batch_size", batch_size, 1, 10 ** 7)):
        if not lo <= int(v) <= hi:
            raise MBEFitError(f"mbe-fit: {name} = {v} outside {lo}..{hi}")
    if not (lr > 0 and 0 < lr_decay <= 1):
        raise MBEFitError(f"mbe-fit: lr = {lr} must be > 0 and lr_decay = {lr_decay} in (0, 1]")
    lo, hi = spec.domain
    signed = lo < 0 < hi
    fit_b = 2 if signed and not spec.odd else 1                    # branches with their own parameters
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(int(seed))
        f32 = torch.float32
        x = (lo + (hi - lo) * torch.rand(samples, generator=gen, dtype=torch.float64)) - spec.shift
        if spec.odd:
            x = x.abs()                                            # mirrored fit: |x| carries the loss
        y = spec.target(x)
        grid = torch.linspace(lo, hi, EVAL_POINTS, dtype=torch.float64) - spec.shift
        sides = [grid[grid >= 0], -grid[grid < 0]] if signed else [grid]
        alpha = torch.tensor([float(spec.target(g if b == 0 or not signed else -g).abs().max())
                              for b, g in enumerate(sides)][:fit_b], dtype=torch.float64)
        alpha_t = alpha.to(torch.float32)
        log_binary = math.log(1.0 / math.log(2.0))                  # tau = dt/ln 2 with dt = 1
        spread = torch.linspace(-0.5, 0.5, N, dtype=torch.float64) if N > 1 else torch.zeros(1, dtype=torch.float64)
        params = {}
        for key in ("tau_d", "tau_r", "tau_V"):
            noise = 0.05 * torch.randn(fit_b, N, generator=gen, dtype=torch.float64)
            params[key] = (log_binary + spread + noise).to(f32)
        params["dt"] = (0.05 * torch.randn(fit_b, N, generator=gen, dtype=torch.float64)).to(f32)
        params["w"] = torch.full((fit_b, N), 1.0 / N, dtype=torch.float64)
        if fit_b == 2:   # branch 1 starts small, with the sign of f's largest value on the negative side
            neg = spec.target(grid[grid < 0])
            params["w"][1] = float(torch.sign(neg[neg.abs().argmax()])) / N
        def solve_w(ps: dict) -> tuple[torch.Tensor, float]:
            """w at the least-squares optimum for the kernels of ``ps`` (w enters linearly), float64."""
            with torch.no_grad():
                q = {k: v.to(torch.float64).exp() for k, v in ps.items() if k != "w"}
                q["w"] = torch.zeros(fit_b, N, dtype=torch.float64)
                phi = _basis_outputs(x, q, alpha, T, decay, False).reshape(samples, -1)
                if not bool(torch.isfinite(phi).all()):
                    return None, math.inf        # diverged kernels: the caller restores the best check
                w = torch.linalg.lstsq(phi, y[:, None], driver="gelsd").solution[:, 0]
                return w.reshape(fit_b, N), float(torch.mean((phi @ w - y) ** 2))

        params["w"] = solve_w(params)[0].to(f32)
        best = {k: v.to(torch.float64) for k, v in params.items()}
        leaves = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
        opt = torch.optim.Adam(list(leaves.values()), lr=lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay)
        xf, yf = x.to(f32), y.to(f32)

        def real(ps):
            return {"tau_d": ps["tau_d"].exp(), "tau_r": ps["tau_r"].exp(), "tau_V": ps["tau_V"].exp(),
                    "dt": ps["dt"].exp(), "w": ps["w"]}

        best_loss = math.inf
        for epoch in range(int(epochs)):
            perm = torch.randperm(samples, generator=gen)
            for a in range(0, samples, batch_size):
                idx = perm[a:a + batch_size]
                pred = _forward(xf[idx], real(leaves), alpha_t, T, decay, surrogate=True)
                loss = torch.mean((pred - yf[idx]) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if (epoch + 1) % CHECK_EVERY and epoch + 1 != int(epochs):
                continue
            w, full = solve_w({k: v.detach() for k, v in leaves.items()})
            if w is None:                        # Adam left the representable range: back to the best check
                with torch.no_grad():
                    for k, v in best.items():
                        leaves[k].copy_(v.to(f32))
                continue
            with torch.no_grad():
                leaves["w"].copy_(w.to(f32))
            if full < best_loss:
                best_loss, best = full, {k: v.detach().to(torch.float64) for k, v in leaves.items()}
                best["w"] = w
    finally:
        torch.set_num_threads(threads)
    p = real(best)
    if spec.odd and signed:                                        # branch 1 = branch 0 mirrored
        p = {k: torch.cat([v, -v if k == "w" else v]) for k, v in p.items()}
    arr = {k: v.numpy().copy() for k, v in p.items()}
    alpha_out = alpha.numpy().copy()
    if spec.odd and signed:
        alpha_out = np.concatenate([alpha_out, alpha_out])
    fit = MBEFit(function=function, domain=(float(lo), float(hi)), offset=spec.offset, shift=spec.shift, bases=N, timesteps=T,
                 decay=decay, alpha=alpha_out, odd=spec.odd, seed=int(seed), samples=int(samples), epochs=int(epochs),
                 lr=float(lr), lr_decay=float(lr_decay), batch_size=int(batch_size), mse=0.0, max_abs_err=0.0, **arr)
    fit.mse, fit.max_abs_err = evaluate(fit)
    return fit


def evaluate(fit: MBEFit, points: int = EVAL_POINTS) -> tuple[float, float]:
    """(MSE, max |error|) of ``fit`` against its function on a uniform grid of the domain, float64."""
    spec = FUNCTIONS[fit.function]
    grid = torch.linspace(fit.domain[0], fit.domain[1], points, dtype=torch.float64)
    err = fit(grid.numpy()) - spec.fn(grid).numpy()
    return float(np.mean(err ** 2)), float(np.abs(err).max())


__all__ = ["FUNCTIONS", "FunctionSpec", "MBEFit", "MBEFitError", "evaluate", "fit_mbe"]
