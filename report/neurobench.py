"""NeuroBench-convention counts of an IR network (neurobench 2.3.0 definitions, hardware.md section 6).

Per projection and per step (one call of the layer in NeuroBench), with all samples as one batch:

* effective synaptic operations = sum over target neurons of the number of (nonzero weight, nonzero
  input) pairs: the layer re-run with binarised weights (nonzero -> 1), binarised inputs and zero
  bias (``single_layer_MACs``); they count as ACs when every input value of that call is in
  {-1, 0, 1}, else as MACs (graded and analog inputs);
* Dense = the same with every weight and every input set to 1 (zero padding stays zero);
* totals are divided by the number of samples.

Activation sparsity = zero outputs / all outputs of the spiking populations over their active steps
and all samples (NeuroBench: activation layers' outputs). Footprint = bytes of the network's
parameters as NeuroBench counts a torch module (``numel * element_size`` of parameters and buffers):
here the projection weights and the populations' parameter arrays at 4 bytes (float32) in a float
IR; in a quantised IR the weights take ceil(weight_bits / 8) bytes. A peer framework's own buffers
(e.g. snnTorch's per-layer reset flags) are not part of the IR, so footprints of the same network
differ by those.

Where this differs from spikeport's own counts (``simulator/opcount.py``, docs/energy.md): spikeport
counts a graded event as one AC and excludes padding from MACs per target; NeuroBench classifies a
whole call as MACs as soon as one input is not in {-1, 0, 1}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..ir import Conv2d, Dense, Identity, Input, Network, expand_channel
from ..ir.neurons_extra import GradedSignedIF
from ..simulator import simulate


@dataclass
class NeuroBenchCounts:
    """Per-sample effective ACs / MACs and Dense, activation sparsity, footprint; per-layer rows."""

    effective_acs: float
    effective_macs: float
    dense: float
    activation_sparsity: float
    footprint_bytes: int
    samples: int
    layers: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"Effective_ACs": self.effective_acs, "Effective_MACs": self.effective_macs, "Dense": self.dense,
                "ActivationSparsity": self.activation_sparsity, "Footprint": self.footprint_bytes, "samples": self.samples,
                "layers": self.layers}


def _source_values(net: Network, res, x: dict, name: str, t: int, T: int, n: int) -> torch.Tensor:
    """What the layer's input held at step t (zeros when the source sent nothing), (N, n_src) float64."""
    node = net[name]
    size = int(np.prod(net.shape_of(name)))
    if isinstance(node, Input):
        arr = np.asarray(x[name], dtype=np.float64)
        if node.coding == "spikes":
            v = arr[:, t] if 0 <= t < T else np.zeros((n,) + tuple(node.shape))
        elif node.coding == "analog":
            v = arr if 0 <= t < T else np.zeros_like(arr)
        else:
            v = arr if t == 0 else np.zeros_like(arr)
        return torch.as_tensor(v.reshape(n, -1))
    if name not in res.spikes or not 0 <= t < res.spikes[name].shape[1]:
        return torch.zeros((n, size), dtype=torch.float64)
    s = torch.as_tensor(res.spikes[name][:, t].reshape(n, -1).astype(np.float64))
    pl = node.payload
    if isinstance(node.neuron, GradedSignedIF):
        return (s > 0) * float(pl.max_level) + (s < 0) * float(pl.min_level)
    return torch.where(s < 0, s * float(pl.neg_value), s)


def _ops(proj, src_shape, dst_shape, s: torch.Tensor, ones_w: bool) -> float:
    """sum of the binarised layer's outputs for binarised (or all-ones) inputs s."""
    w = np.asarray(proj.weight, dtype=np.float64)
    wb = torch.as_tensor(np.ones_like(w) if ones_w else (w != 0).astype(np.float64))
    sb = (s != 0).to(torch.float64)
    if isinstance(proj, Dense):
        return float((sb @ wb.T).sum())
    if isinstance(proj, Conv2d):
        out = F.conv2d(sb.reshape((-1,) + tuple(src_shape)), wb, stride=tuple(proj.stride), padding=tuple(proj.padding),
                       dilation=tuple(proj.dilation), groups=int(proj.groups))
        return float(out.sum())
    if isinstance(proj, Identity):
        full = torch.as_tensor(expand_channel(wb.numpy(), tuple(dst_shape)).reshape(-1))
        return float((sb * full).sum())
    raise ValueError(f"projection {proj.name!r}: {type(proj).__name__} has no NeuroBench counting rule")


def neurobench_counts(net: Network, x, timesteps: int, *, batch_size: int = 256, device=None) -> NeuroBenchCounts:
    """Count as NeuroBench would on the torch model this IR stands for, from a simulation of ``x``.
    Networks with Transformer operators are refused (UnsupportedError): the convention has no rule for them."""
    if net.operators():
        op = net.operators()[0]
        raise UnsupportedError(f"NeuroBench convention: operator {op.name!r} ({type(op).__name__}) has no NeuroBench "
                               "counting rule (synaptic operations are defined on Linear/Conv layers)")
    inputs = net.inputs()
    xs = x if isinstance(x, dict) else {inputs[0].name: x}
    xs = {k: np.asarray(v) for k, v in xs.items()}
    n = int(next(iter(xs.values())).shape[0])
    T = int(timesteps)
    res = simulate(net, x, T, batch_size=batch_size, device=device, record_spikes=True)
    ac = mac = dense = 0.0
    rows = []
    for proj in net.projections():
        tgt = net[proj.target]
        src_shape, dst_shape = net.shape_of(proj.source), net.shape_of(proj.target)
        ones = torch.ones((1, int(np.prod(src_shape))), dtype=torch.float64)
        per_call_dense = _ops(proj, src_shape, dst_shape, ones, ones_w=True)
        l_ac = l_mac = 0.0
        for t in range(tgt.t_start, tgt.t_start + T):
            s = _source_values(net, res, xs, proj.source, t - int(proj.delay), T, n)
            ops = _ops(proj, src_shape, dst_shape, s, ones_w=False)
            ternary = bool(((s == 0) | (s == 1) | (s == -1)).all())
            if ternary:
                l_ac += ops
            else:
                l_mac += ops
        l_dense = per_call_dense * n * T
        ac, mac, dense = ac + l_ac, mac + l_mac, dense + l_dense
        rows.append({"layer": proj.name, "source": proj.source, "target": proj.target, "effective_acs": l_ac / n,
                     "effective_macs": l_mac / n, "dense": l_dense / n})
    nz = total = 0
    for pop in net.populations():
        if pop.name in res.spikes:
            win = res.spikes[pop.name][:, pop.t_start:pop.t_start + T]
            nz += int(np.count_nonzero(win))
            total += int(win.size)
    sparsity = (total - nz) / total if total else 0.0
    return NeuroBenchCounts(ac / n, mac / n, dense / n, sparsity, footprint_bytes(net), n, rows)


def footprint_bytes(net: Network) -> int:
    """Bytes of parameters (module docstring): weights plus every population's parameter arrays."""
    wbytes = 4 if net.datapath is None else math.ceil(net.datapath.weight_bits / 8)
    total = sum(int(np.asarray(p.weight).size) * wbytes for p in net.projections())
    for pop in net.populations():
        m = pop.neuron
        for name in getattr(m, "array_fields", ()):
            v = getattr(m, name, None)
            if v is not None:
                total += int(np.asarray(v).size) * 4
    return total


__all__ = ["NeuroBenchCounts", "footprint_bytes", "neurobench_counts"]
