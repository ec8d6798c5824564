"""Bit-accurate simulation of quantised MBE Transformers (staged coding C3, ``--method mbe``).

The stage-by-stage loop of the float C3 simulator (simulator/transformer_mbe.py) on int64 tensors:
the input is encoded once; every MBE stage (an ``MBETable`` population, or the identity MBE
neurons of a product operator) runs its T integer steps (compare, subtract, emit the intensity),
every other node computes once on its inputs' forwarded integers. Rules, widths and rounding:
docs/fixed_point.md, "MBE Transformer networks"; constants from compiler/quantize_mbe_vit.py.
A node's decoded value is its integer times its unit (an MBE population's ``decode_scale``, a
relay's ``decode_scale``, an operator's ``params["out_scale"]``; a Readout's ``state_scale *
decode_scale + decode_offset``). The plain integer reference is simulator/reference_mbe_vit.py.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UnsupportedError
from ..ir import operators as O
from ..ir import operators_mbe as OM
from ..ir.graph import Network
from ..ir.neurons_mbe import MBETable
from ..ir.nodes import Input, Operator, Population, Readout, expand_channel
from .engine import encode_input
from .fixed_operators import FixedOperator, FixedProjection, exact_matmul, rdiv, rshift, saturate
from .result import LayerStats, SimResult
from .transformer_fixed import node_max
from .transformer_mbe import STATELESS as WIRING
from .transformer_mbe import MBECounts, _stages, check_mbe_network



def check_mbe_fixed_network(net: Network, timesteps: int | None = None) -> int:
    """Refuse what this simulator does not run (naming the node); returns T of the MBE tables."""
    return check_mbe_network(net, timesteps, quantized=True)


def run_table(x: torch.Tensor, threshold: torch.Tensor, reset: torch.Tensor, intensity: torch.Tensor,
              codes: bool = False):
    """T integer steps of MBE neurons started from x (int64, any shape), tables (B, N, T) int64::

        u_0n = max(x, 0), u_1n = max(-x, 0);  s = [u >= threshold[t]];  u -= s reset[t];  emit s intensity[t]

    Returns (sum of emitted intensities, firing bases per element, per-step event codes (T, *x.shape)
    int8 = firing bases of branch 0 minus branch 1, or None)."""
    B, N, T = threshold.shape
    parts = [torch.clamp(x, min=0), torch.clamp(-x, min=0)][:B]
    u = torch.stack(parts, dim=-1)[..., None].expand(*x.shape, B, N).clone()
    total = torch.zeros(x.shape, dtype=torch.int64, device=x.device)
    fired = torch.zeros(x.shape, dtype=torch.int64, device=x.device)
    trains = [] if codes else None
    for t in range(T):
        s = (u >= threshold[:, :, t]).to(torch.int64)
        u -= s * reset[:, :, t]
        total += (s * intensity[:, :, t]).sum(dim=(-2, -1))
        per_branch = s.sum(dim=-1)
        fired += per_branch.sum(dim=-1)
        if codes:
            trains.append((per_branch[..., 0] - (per_branch[..., 1] if B == 2 else 0)).to(torch.int8))
    return total, fired, (torch.stack(trains) if codes else None)


def bit_length(v: torch.Tensor) -> torch.Tensor:
    """Exact bit length of positive int64 values (a float guess, then integer fix-ups)."""
    L = torch.floor(torch.log2(v.to(torch.float64))).to(torch.int64) + 1
    for _ in range(2):
        L = torch.where((v >> L) > 0, L + 1, L)
        L = torch.where((v >> (L - 1).clamp(min=0)) == 0, L - 1, L)
    return L


def _shift(x: torch.Tensor, s: torch.Tensor, top: int) -> torch.Tensor:
    """Per-element ``rshift(x, s)`` (round half up for s > 0, ``x << -s`` for s <= 0), s clamped to
    [-(P + 1), 62]: a larger left shift saturates every non-zero |x| anyway."""
    bits = top.bit_length() + 1
    s = s.clamp(-bits, 62)
    pos = s.clamp(min=0)
    right = (x + torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))) >> pos
    left = x << (-s).clamp(min=0)
    return torch.where(s > 0, right, left)


class _Kernels:
    """Integer kernels of one quantised C3 network on one device (tables as tensors, built once)."""

    def __init__(self, net: Network, dev):
        self.net, self.dev, self.dp = net, dev, net.datapath
        self.top = (1 << (self.dp.payload_bits - 1)) - 1
        self.vmax = node_max(net)
        self.tables, self.proj, self.bias = {}, {}, {}
        t64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=dev)  # noqa: E731
        for node in net.nodes():
            if isinstance(node, Population):
                shape = tuple(node.shape)
                self.bias[node.name] = t64(expand_channel(np.asarray(node.neuron.bias, dtype=np.int64), shape))
                if isinstance(node.neuron, MBETable):
                    m = node.neuron
                    self.tables[node.name] = (t64(m.threshold), t64(m.reset), t64(m.intensity))
                for p in net.incoming(node.name):
                    self.proj[p.name] = FixedProjection(p, self.vmax[p.source], shape, self.dp, dev)
            elif isinstance(node, OM._IdentityPair):
                pr = node.params
                self.tables[node.name] = tuple((t64(pr[f"threshold_{w}"]), t64(pr[f"reset_{w}"]), t64(pr[f"intensity_{w}"]))
                                               for w in "ab")

    def offset_q(self, pop: Population) -> int:
        c = float(np.asarray(pop.decode_scale, dtype=np.float64).reshape(-1)[0])
        return int(np.floor(float(np.asarray(pop.decode_offset, dtype=np.float64).reshape(-1)[0]) / c + 0.5))


def simulate_mbe_fixed(net: Network, x, timesteps: int | None = None, *, batch_size: int = 64, device=None,
                       trace: dict | None = None, pipeline: bool = False) -> tuple[SimResult, MBECounts]:
    """Bit-accurate C3 run of a quantised MBE network; returns the result and the counts
    (``simulator.transformer_mbe.MBECounts``). ``trace``: a dict that receives every node's
    forwarded integer (N, *shape) and, under ``name + ":codes"``, every MBE stage's per-step event
    codes (N, T, *shape) int8 (MBE populations and the identity neurons ``op:a`` / ``op:b``).
    ``pipeline``: batches flow through the stages as a pipeline (simulator/pipeline_mbe.py;
    identical results, ``counts.schedule`` gives the step counts)."""
    T = check_mbe_fixed_network(net, timesteps)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    order = list(net.nodes())
    depth = _stages(net, order)
    D = max(depth[o] for o in net.outputs)
    xs = torch.as_tensor(np.asarray(x))
    n = int(xs.shape[0])
    k = _Kernels(net, dev)
    counts = MBECounts(samples=n, timesteps=T, depth=D)
    keep: dict[str, list] = {}
    sat: dict[str, int] = {}
    starts = list(range(0, n, batch_size))

    def one(i, nodes=None, state=None):
        return _run_batch(k, order if nodes is None else nodes, xs[starts[i]:starts[i] + batch_size].to(dev), counts,
                          sat, T, trace is not None, state)
    with torch.no_grad():
        if pipeline:
            from .pipeline_mbe import run_pipelined, stage_groups
            runs, sched = run_pipelined(one, len(starts), stage_groups(order, depth), T)
            counts.schedule = sched.to_json()
        else:
            runs = (one(i) for i in range(len(starts)))
        for vals, _ in runs:
            for name, v in vals.items():
                keep.setdefault(name, []).append(v.cpu().numpy())
    ints = {name: np.concatenate(v) for name, v in keep.items()}
    if trace is not None:
        trace.update(ints)
    activations, spike_counts, layers = {}, {}, {}
    for node in order:
        if isinstance(node, Population):
            activations[node.name] = _decode(node, ints[node.name])
            if isinstance(node.neuron, MBETable):
                spike_counts[node.name] = ints[f"{node.name}:fired"]
            s = LayerStats.counted(node.size, spike_counts[node.name].sum() if node.name in spike_counts else None, n, T)
            s.saturation_events = s.saturation_high = int(sat.get(node.name, 0))
            layers[node.name] = s.as_dict()
        elif isinstance(node, Operator):
            activations[node.name] = ints[node.name].astype(np.float64) * float(node.params["out_scale"])
            layers[node.name] = {"saturation_events": int(sat.get(node.name, 0)), "runs_on": node.runs_on,
                                 "arithmetic": node.arithmetic, "neurons": int(np.prod(node.shape))}
    out = activations[net.outputs[0]]
    result = SimResult(outputs=out, all_outputs={o: activations[o] for o in net.outputs},
                       predictions=out.reshape(n, -1).argmax(axis=1), spike_counts=spike_counts, layers=layers,
                       timesteps=T, steps_run=D * T, quantized=True, activations=activations,
                       output_states={o: ints[o] for o in net.outputs})
    return result, counts


def _decode(pop: Population, v: np.ndarray) -> np.ndarray:
    shape = tuple(pop.shape)
    scale = expand_channel(np.asarray(pop.decode_scale, dtype=np.float64), shape)
    if isinstance(pop.neuron, Readout):
        unit = expand_channel(np.asarray(pop.state_scale, dtype=np.float64), shape)
        offset = expand_channel(np.asarray(pop.decode_offset, dtype=np.float64), shape)
        return v.astype(np.float64) * unit * scale + offset
    return v.astype(np.float64) * scale        # MBE: the offset is in the integer already; relays: offset 0


def _run_batch(k: _Kernels, order, xb: torch.Tensor, counts: MBECounts, sat: dict, T: int, codes: bool,
               state=None) -> tuple[dict, dict]:
    """Evaluate the nodes ``order`` on one batch, continuing ``state`` (value, cache) of the
    earlier stages when given (the pipeline); returns the state."""
    net, dp, top = k.net, k.dp, k.top
    batch = xb.shape[0]
    value, cache = state if state is not None else ({}, {})
    for node in order:
        name = node.name
        if isinstance(node, Input):
            value[name] = encode_input(node, xb, True, T).reshape((batch,) + tuple(node.shape)).to(torch.int64)
        elif isinstance(node, Population):
            cur = torch.zeros((batch,) + tuple(node.shape), dtype=torch.int64, device=k.dev)
            for p in net.incoming(name):
                cur = cur + k.proj[p.name](value[p.source])
            if isinstance(node.neuron, MBETable):
                c = [0]
                xq = saturate(cur + k.bias[name], dp.state_bits, c)
                total, fired, tr = run_table(xq, *k.tables[name], codes=codes)
                value[name] = total + k.offset_q(node)
                value[f"{name}:fired"] = fired
                if codes:
                    value[f"{name}:codes"] = tr.transpose(0, 1)
                counts.add("population_events", name, int(fired.sum()))
                counts.add("population_inputs", name, fired.numel())
            else:   # Relay / Readout: the input once plus the bias once (C3), saturated to the payload
                c = [0]
                value[name] = saturate(cur + k.bias[name], dp.payload_bits, c)
            sat[name] = sat.get(name, 0) + c[0]
        elif isinstance(node, Operator):
            c = [0]
            value[name] = _operator(k, node, [value[i] for i in node.inputs], counts, batch, cache, c, value, codes)
            sat[name] = sat.get(name, 0) + c[0]
    return value, cache


def _identity(k: _Kernels, op, which: str, x: torch.Tensor, cache: dict, codes: bool):
    """Operand ``which`` of product ``op`` into its identity MBE state and its T steps; shared by the
    products that read the same node through the same tables (LayerNorm's d in d*d and d*invstd)."""
    pr = op.params
    src = op.inputs[0 if which == "a" else 1]
    tabs = k.tables[op.name][0 if which == "a" else 1]
    key = (src, int(pr[f"in_mult_{which}"]), int(pr[f"in_shift_{which}"]), tuple(int(t.sum()) for t in tabs),
           tuple(tabs[0].shape))
    fresh = key not in cache
    if fresh:
        xs = saturate(rshift(x * int(pr[f"in_mult_{which}"]), int(pr[f"in_shift_{which}"])), k.dp.state_bits, [0])
        cache[key] = run_table(xs, *tabs, codes=codes)
    return cache[key] + (fresh,)


def _operator(k: _Kernels, op, ins, counts: MBECounts, batch: int, cache: dict, c: list, value: dict, codes: bool):
    top, P = k.top, k.dp.payload_bits
    name, pr = op.name, op.params
    if isinstance(op, WIRING):
        kern = FixedOperator(op, batch, P, k.dev)
        out = kern.step(ins)
        c[0] += kern.sat[0]
        return out
    if isinstance(op, OM._IdentityPair):
        ia, fa, tra, fresh_a = _identity(k, op, "a", ins[0], cache, codes)
        ib, fb, trb, fresh_b = _identity(k, op, "b", ins[1], cache, codes)
        counts.add("product_spikes", name, int(fa.sum()) * fresh_a + int(fb.sum()) * fresh_b)
        if codes:
            value[f"{name}:a:codes"], value[f"{name}:b:codes"] = tra.transpose(0, 1), trb.transpose(0, 1)
        if isinstance(op, OM.MBEMatMul):
            raw = exact_matmul(ia, ib, int(pr["bound"]))
            pairs = exact_matmul(fa, fb, 1 << 40)
        else:
            raw = ia * ib
            pairs = fa * fb
        counts.add("product_pairs", name, int(pairs.sum()))
        counts.add("product_outputs", name, raw.numel())
        return saturate(rshift(raw, int(pr["shift"])), P, c)
    counts.add("operator_elements", name, batch * int(np.prod(op.shape)))
    if isinstance(op, OM.Exp2Split):
        ax = op.axis % len(op.shape) + 1
        counts.add("operator_rows", name, batch * int(np.prod(op.shape)) // int(op.shape[op.axis]))
        d = ins[0].amax(dim=ax, keepdim=True) - ins[0]
        F = int(pr["frac_bits"])
        yq = rshift(d * int(pr["mult"]), int(pr["shift"]))                 # -y on the grid 2^-F, >= 0
        whole = -((yq + (1 << F) - 1) >> F)                                 # I = floor(y) = -ceil(yq / 2^F)
        if op.part == "int":
            return saturate(whole, P, c)
        return -yq - whole * (1 << F)                                       # f = y - I in [0, 2^F)
    if isinstance(op, OM.MantExp):
        ax = op.axis % len(op.shape) + 1
        counts.add("operator_rows", name, batch * int(np.prod(op.shape)) // int(op.shape[op.axis]))
        F = int(pr["frac_bits"])
        v = (ins[0].sum(dim=ax, keepdim=True) * int(pr["mult"]) + int(pr["eps_q"])).clamp(min=1)
        L = bit_length(v)
        E = L + int(pr["exp_base"])
        M = _shift(v, L - F, 1 << 62)
        carry = M >= (1 << F)                      # rounding reached 1.0: M = 1/2, E + 1
        M = torch.where(carry, torch.full_like(M, 1 << (F - 1)), M)
        E = torch.where(carry, E + 1, E)
        if op.even:
            odd = torch.remainder(E, 2) != 0
            M = torch.where(odd, M << 1, M)
            E = torch.where(odd, E - 1, E)
        return M if op.part == "mantissa" else saturate(E, P, c)
    if isinstance(op, OM.Ldexp):
        x, e = ins
        k2 = int(pr["exponent_twice"])
        ke = torch.div(k2 * e, 2, rounding_mode="floor")               # k E, exact (E even when |k| = 1/2)
        return saturate(_shift(x, int(pr["shift"]) - ke, top), P, c)
    raise UnsupportedError(f"operator {name!r}: no fixed-point C3 kernel for {type(op).__name__}")


__all__ = ["bit_length", "check_mbe_fixed_network", "run_table", "simulate_mbe_fixed"]
