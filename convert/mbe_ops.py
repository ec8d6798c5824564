"""Transformer operators built from MBE neurons (paper 001, methods.md section 3), on torch tensors.

Plain functions, ready to be lowered to IR operator nodes once the ViT IR exists (docs/mbe.md):

* ``mbe_spikes``: the binary spike trains s (..., K) of a neuron and its intensities a (K,) over
  the flattened (branch, basis, step) index, so that MBE(x) = s . a exactly as the simulator sums;
* ``mbe_product``: x1*x2 by the product form sum_ij D_ij S_ij with D = a (x) a' precomputed and
  S = s (x) s' binary (Eq. 12); ``mbe_matmul`` is the same contraction for matrix products;
* ``mbe_softmax``: e^x = 2^floor(y) * 2^frac(y), y = x*log2(e), after subtracting the row max;
  2^frac from the exp2 fit (1 + MBE), the integer power an exponent shift; sum = M*2^E with the
  mantissa M in [0.5, 1) (our convention; frexp); 1/sum = 2^-E * MBE_recip(M); output =
  product(e^x, 1/sum) with the 2^-E shift applied after the product;
* ``mbe_layernorm``: mean by summation; var = sum product(d, d)/n; var + eps = M*2^E with E made
  even (M <- 2M, E <- E - 1, so M in [0.5, 2)); invstd = 2^(-E/2) * MBE_invsqrt(M);
  y = gamma * product(d, invstd) + beta (the 2^(-E/2) shift again after the product).

Operands of a product go through identity MBEs scaled to a power of two s >= max |operand|
(``scale``: the identity code is homogeneous, alpha -> s*alpha). The exponent/mantissa steps
(floor, frexp, shifts, the max) are not spiking: they are integer operations (hardware.md section 7
says where such operators run). Everything runs in float64 on the tensors' device.
"""
from __future__ import annotations

import math

import torch

from .mbe_fit import MBEFit

LOG2E = 1.0 / math.log(2.0)


def _tables(fit: MBEFit, scale: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = fit.neuron(scale=scale)
    return tuple(torch.as_tensor(a, dtype=torch.float64, device=device) for a in m.tables())


def mbe_spikes(fit: MBEFit, x: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, a): spikes (*x.shape, K) in {0, 1} and intensities (K,), K = B*N*T, with MBE(x) = s @ a."""
    x = torch.as_tensor(x, dtype=torch.float64) - fit.shift * scale          # the neuron's bias
    V, R, D = _tables(fit, scale, x.device)
    B, N, T = V.shape
    parts = [torch.relu(x), torch.relu(-x)][:B]
    u = torch.stack(parts, dim=-1)[..., None].expand(*x.shape, B, N).clone()
    spikes = []
    for t in range(T):
        s = (u >= V[:, :, t]).to(torch.float64)
        u = u - s * R[:, :, t]
        spikes.append(s)
    return torch.stack(spikes, dim=-1).reshape(*x.shape, B * N * T), D.reshape(-1)


def mbe_apply(fit: MBEFit, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """f_hat(x) = offset + MBE(x - shift), the sum the simulator forms (``scale``: alpha -> scale*alpha)."""
    s, a = mbe_spikes(fit, x, scale)
    return (s * a).sum(-1) + fit.offset


def pow2_scale(x: torch.Tensor) -> float:
    """Smallest power of two >= max |x| (>= 2^-30): the range an identity MBE is scaled to."""
    m = float(torch.as_tensor(x).abs().max()) if torch.as_tensor(x).numel() else 0.0
    return 2.0 ** math.ceil(math.log2(max(m, 2.0 ** -30)))


def _check_identity(fit: MBEFit) -> None:
    if fit.function != "identity" or fit.w.shape[0] != 2:
        raise ValueError(f"MBE product: needs a signed identity fit, got {fit.function!r} with {fit.w.shape[0]} branch(es)")


def mbe_product(fit: MBEFit, x1: torch.Tensor, x2: torch.Tensor, scale1: float | None = None,
                scale2: float | None = None) -> torch.Tensor:
    """Elementwise x1*x2 ~ sum_ij D_ij S_ij (Eq. 12): D = a (x) a', S = s (x) s' binary."""
    _check_identity(fit)
    x1, x2 = torch.broadcast_tensors(torch.as_tensor(x1, dtype=torch.float64), torch.as_tensor(x2, dtype=torch.float64))
    s1, a1 = mbe_spikes(fit, x1, scale1 if scale1 is not None else pow2_scale(x1))
    s2, a2 = mbe_spikes(fit, x2, scale2 if scale2 is not None else pow2_scale(x2))
    D = torch.outer(a1, a2)                                   # precomputed, shared by every product
    S = s1[..., :, None] * s2[..., None, :]                   # binary
    return (D * S).sum(dim=(-2, -1))


def mbe_matmul(fit: MBEFit, A: torch.Tensor, Bm: torch.Tensor, scale_a: float | None = None,
               scale_b: float | None = None) -> torch.Tensor:
    """A @ B with every scalar product in the product form: C_ik = sum_j sum_pq D_pq s_A[i,j,p] s_B[j,k,q]."""
    _check_identity(fit)
    A, Bm = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(Bm, dtype=torch.float64)
    sa, a1 = mbe_spikes(fit, A, scale_a if scale_a is not None else pow2_scale(A))
    sb, a2 = mbe_spikes(fit, Bm, scale_b if scale_b is not None else pow2_scale(Bm))
    D = torch.outer(a1, a2)
    return torch.einsum("...ijp,pq,...jkq->...ik", sa, D, sb)


def mbe_softmax(x: torch.Tensor, exp2: MBEFit, recip: MBEFit, ident: MBEFit, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim`` from MBE neurons (module docstring)."""
    for fit, name in ((exp2, "exp2"), (recip, "reciprocal")):
        if fit.function != name:
            raise ValueError(f"mbe_softmax: expected the {name} fit, got {fit.function!r}")
    x = torch.as_tensor(x, dtype=torch.float64)
    y = (x - x.amax(dim=dim, keepdim=True)) * LOG2E
    whole = torch.floor(y)
    e = torch.ldexp(mbe_apply(exp2, y - whole), whole.to(torch.int32))         # 2^I * (1 + MBE(f))
    mant, expo = torch.frexp(e.sum(dim=dim, keepdim=True))                    # sum = M * 2^E, M in [0.5, 1)
    inv_m = mbe_apply(recip, mant)                                            # ~ 1/M in (1, 2]
    prod = mbe_product(ident, e, inv_m.expand_as(e), scale1=1.0, scale2=2.0)  # e in (0, 1]
    return torch.ldexp(prod, (-expo).expand_as(prod).to(torch.int32))


def mbe_layernorm(x: torch.Tensor, invsqrt: MBEFit, ident: MBEFit, weight=None, bias=None, eps: float = 1e-5,
                  scale: float | None = None) -> torch.Tensor:
    """LayerNorm over the last axis from MBE neurons (module docstring). ``scale``: operand range of d."""
    if invsqrt.function != "invsqrt":
        raise ValueError(f"mbe_layernorm: expected the invsqrt fit, got {invsqrt.function!r}")
    x = torch.as_tensor(x, dtype=torch.float64)
    n = x.shape[-1]
    d = x - x.mean(dim=-1, keepdim=True)
    s = scale if scale is not None else pow2_scale(d)
    var = mbe_product(ident, d, d, scale1=s, scale2=s).sum(dim=-1, keepdim=True) / n
    mant, expo = torch.frexp(var + eps)                                       # M in [0.5, 1)
    odd = (expo % 2 != 0)
    mant = torch.where(odd, mant * 2, mant)                                   # M in [0.5, 2), E even
    expo = torch.where(odd, expo - 1, expo)
    m = mbe_apply(invsqrt, mant)                                              # ~ 1/sqrt(M) in (0.7, 1.42]
    prod = mbe_product(ident, d, m.expand_as(d), scale1=s, scale2=2.0)
    y = torch.ldexp(prod, (-expo // 2).expand_as(prod).to(torch.int32))
    if weight is not None:
        y = y * torch.as_tensor(weight, dtype=torch.float64, device=y.device)
    if bias is not None:
        y = y + torch.as_tensor(bias, dtype=torch.float64, device=y.device)
    return y


__all__ = ["mbe_apply", "mbe_layernorm", "mbe_matmul", "mbe_product", "mbe_softmax", "mbe_spikes", "pow2_scale"]
