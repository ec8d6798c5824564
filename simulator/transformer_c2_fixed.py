"""Bit-accurate simulation of quantised C2 Transformer networks (``stbif`` / ``pmsm`` on a ViT).

The node-order loop of the float C2 simulator (simulator/transformer_c2.py) on int64 tensors, with
the integer rules of docs/fixed_point.md, "C2 operator networks": the input levels, Relay /
Readout biases and a Concat prefix enter at t = 1 only; projections as in every quantised operator
network (simulator/fixed_operators.FixedProjection); ST-BIF and PMSM neurons in integer state
units with an even threshold; LayerNorm / GELU / softmax as ``O(t) = F_int(xq(S(t))) -
F_int(xq(S(t-1)))`` on the integer input sum S (the EC kernels' F_int); the product as
``S_A(t) S_B(t) - S_A(t-1) S_B(t-1)`` (exact). Every value a node emits per step is saturated to the
payload and counted (a Readout's, summed by the host in int64, is not); with no saturation the sum over steps of every node's output is the
network's integer one-shot value (``simulator.reference_c2.integer_qann``) once the neurons settle.
Decoded values are sums (C2): a population's summed payload times its decode scale; a Readout's
host sum ``v`` times ``state_scale * decode_scale`` plus its offset.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UnsupportedError
from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.graph import Network
from ..ir.neurons_extra import MultiSpikeIF
from ..ir.nodes import Input, Operator, Population, Readout, expand_channel
from .engine import encode_input
from .fixed_operators import FixedOperator, FixedProjection, exact_matmul, rdiv, rshift, saturate
from .result import LayerStats, SimResult
from .transformer_c2 import SUPPORTED_C2, C2Counts
from .transformer_fixed import node_max


def check_c2_fixed(net: Network) -> None:
    """Refuse what this simulator does not run, naming the node."""
    if not net.quantized or net.coding != "C2":
        raise UnsupportedError("simulate_c2_fixed runs quantised C2 networks (compile a stbif / pmsm ViT first)")
    for node in net.nodes():
        if isinstance(node, Input) and node.coding != "analog":
            raise UnsupportedError(f"input {node.name!r}: coding {node.coding!r} (C2 operator networks take analog input)")
        if isinstance(node, Population) and not isinstance(node.neuron, (C2.STBIF, MultiSpikeIF, O.Relay, Readout)):
            raise UnsupportedError(f"population {node.name!r}: neuron {type(node.neuron).__name__} is not simulated in "
                                   f"C2 coding ({SUPPORTED_C2})")
        if isinstance(node, Operator):
            if not isinstance(node, (C2.C2Operator, C2.MatMulC2, O.Rearrange, O.Concat, O.Mean)):
                raise UnsupportedError(f"operator {node.name!r} ({type(node).__name__}) is not simulated in C2 coding "
                                       f"({SUPPORTED_C2})")
            if node.arithmetic not in ("fixed", "none"):
                raise UnsupportedError(f"operator {node.name!r}: arithmetic {node.arithmetic!r} in a quantised network")
        if getattr(node, "delay", 0) or getattr(node, "t_start", 0):
            raise UnsupportedError(f"{node.name!r}: delays and t_start are not simulated in C2 coding")


class FixedSTBIF:
    """ST-BIF in integer state units, threshold theta (even)::

        q(0) = theta / 2 ;  A(0) = 0
        q    = sat_state(q + I)
        out  = +1 if q >= theta and A < n_max;  -1 if q < 0 and A > n_min;  else 0
        A   += out ;  q -= out * theta                  (payload: out)
    """

    def __init__(self, pop, batch: int, state_bits: int, device):
        m, shape = pop.neuron, tuple(pop.shape)
        self.theta = int(np.asarray(m.step).reshape(-1)[0])
        self.q = torch.full((batch,) + shape, self.theta // 2, dtype=torch.int64, device=device)
        self.A = torch.zeros_like(self.q)
        self.lo, self.hi, self.bits = int(m.n_min), int(m.n_max), state_bits
        self.sat = [0]

    def step(self, cur: torch.Tensor, t: int) -> torch.Tensor:
        self.q = saturate(self.q + cur, self.bits, self.sat)
        out = ((self.q >= self.theta) & (self.A < self.hi)).to(torch.int64) \
            - ((self.q < 0) & (self.A > self.lo)).to(torch.int64)
        self.A += out
        self.q -= out * self.theta
        return out


class FixedPMSM:
    """PMSM (MultiSpikeIF) in integer state units, C2 (bias at t = 1 only)::

        v(0) = v_init (= theta / 2)
        v = sat_state(v + I + [t = 1] bias)
        n = clamp(floor(v / theta), -n_neg, n_pos)      (floor division toward minus infinity)
        v -= n * theta                                   (payload: n, one graded event)
    """

    def __init__(self, pop, batch: int, state_bits: int, device):
        m, shape = pop.neuron, tuple(pop.shape)
        self.theta = int(np.asarray(m.threshold).reshape(-1)[0])
        v0 = torch.as_tensor(expand_channel(np.asarray(m.v_init, dtype=np.int64), shape), device=device)
        self.v = v0.unsqueeze(0).repeat((batch,) + (1,) * len(shape))
        self.bias = torch.as_tensor(expand_channel(np.asarray(m.bias, dtype=np.int64), shape), device=device)
        self.lo, self.hi, self.bits = -int(m.n_neg), int(m.n_pos), state_bits
        self.sat = [0]

    def step(self, cur: torch.Tensor, t: int) -> torch.Tensor:
        self.v = saturate(self.v + cur + (self.bias if t == 1 else 0), self.bits, self.sat)
        n = torch.div(self.v, self.theta, rounding_mode="floor").clamp(self.lo, self.hi)
        self.v -= n * self.theta
        return n


class FixedC2Operator:
    """One operator of a quantised C2 network with its state (S and F_int of the previous sum, or
    S_A, S_B and their previous product)."""

    def __init__(self, op, batch: int, out_bits: int, device):
        self.op, self.batch, self.out_bits = op, batch, out_bits
        self.pr = op.params
        self.sat = [0]
        self.S = self.SA = self.SB = None
        self.P = None
        self.f = FixedOperator(op, batch, out_bits, device) if isinstance(op, C2.C2Operator) else None
        if isinstance(op, O.Rearrange):
            self.index = torch.as_tensor(np.asarray(op.index, dtype=np.int64), device=device).reshape(-1)
        self.prefix = None
        if isinstance(op, O.Concat) and op.prefix is not None:
            p = torch.as_tensor(np.asarray(op.prefix, dtype=np.int64), device=device)
            self.prefix = p.unsqueeze(0).expand((batch,) + tuple(p.shape))

    def step(self, ins: list[torch.Tensor], t: int) -> torch.Tensor:
        op, pr = self.op, self.pr
        if isinstance(op, O.Rearrange):
            return ins[0].reshape(self.batch, -1)[:, self.index].reshape((self.batch,) + tuple(op.shape))
        if isinstance(op, O.Concat):
            parts = [rshift(x * int(m), int(sh)) for x, m, sh in zip(ins, pr["in_mult"], pr["in_shift"])]
            if self.prefix is not None:
                parts = [self.prefix if t == 1 else torch.zeros_like(self.prefix)] + parts
            return torch.cat(parts, dim=op.axis % len(op.shape) + 1)
        if isinstance(op, O.Mean):
            return saturate(ins[0].sum(dim=tuple(a + 1 for a in op.axes)), self.out_bits, self.sat)
        if isinstance(op, C2.MatMulC2):
            a, b = ins
            self.SA = a if self.SA is None else self.SA + a
            self.SB = b if self.SB is None else self.SB + b
            cur = exact_matmul(self.SA, self.SB, int(pr["sk_bound"]))
        else:
            self.S = ins[0] if self.S is None else self.S + ins[0]
            top = (1 << (int(pr["in_bits"]) - 1)) - 1
            xq = rdiv(self.S * int(pr["in_mult"]), 1 << int(pr["in_shift"])).clamp(-top, top)
            cur = self.f.function(xq)
        out = cur if self.P is None else cur - self.P
        self.P = cur
        return saturate(out, self.out_bits, self.sat)


def simulate_c2_fixed(net: Network, x, timesteps: int, *, checkpoints: tuple[int, ...] = (), batch_size: int = 64,
                      device=None, keep_levels: bool = False, trace: dict | None = None
                      ) -> tuple[SimResult, dict[int, np.ndarray], C2Counts]:
    """Bit-accurate run of a quantised C2 network for ``timesteps``; returns the result (outputs =
    decoded sums; ``output_states`` = the Readout's integer host sum), the decoded output after each
    t in ``checkpoints`` and the event / spike counts. ``keep_levels``: ``activations`` hold every
    spiking population's summed payload (its integer level) and every other node's integer sum.
    ``trace``: a dict that receives every node's per-step payloads, (T, N, *shape) int64."""
    check_c2_fixed(net)
    net.validate("simulate")
    T = int(timesteps)
    if T < 1 or any(not 1 <= c <= T for c in checkpoints):
        raise ValueError(f"simulate: timesteps {T} must be >= 1 and checkpoints {checkpoints} within 1..T")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    xs = torch.as_tensor(np.asarray(x))
    n = xs.shape[0]
    parts = []
    with torch.no_grad():
        for a in range(0, n, batch_size):
            parts.append(_run_batch(net, xs[a:a + batch_size].to(dev), T, set(checkpoints), dev, trace is not None))
    if trace is not None:
        for name in parts[0]["trace"]:
            trace[name] = np.concatenate([b["trace"][name] for b in parts], axis=1)

    def cat(key, name):
        return np.concatenate([b[key][name] for b in parts])
    spiking = list(parts[0]["events"])
    events = {k: int(sum(b["events"][k] for b in parts)) for k in spiking}
    spikes = {k: int(sum(b["spikes"][k] for b in parts)) for k in spiking}
    out_name = net.outputs[0]
    out = cat("decoded", out_name)
    layers = {}
    for pop in net.populations():
        s = LayerStats.counted(pop.size, events.get(pop.name), n, T)
        s.saturation_events = int(sum(b["sat"][pop.name] for b in parts))
        s.saturation_high = s.saturation_events
        s.conv_wrap_events = int(sum(b["wrap"].get(pop.name, 0) for b in parts))
        layers[pop.name] = s.as_dict()
    for op in net.operators():
        layers[op.name] = {"saturation_events": int(sum(b["sat"][op.name] for b in parts)),
                           "runs_on": op.runs_on, "arithmetic": op.arithmetic, "neurons": int(np.prod(op.shape))}
    acts = {k: cat("sums", k) for k in parts[0]["sums"]} if keep_levels else \
        {k: cat("decoded", k) for k in parts[0]["decoded"]}
    result = SimResult(outputs=out, all_outputs={out_name: out}, predictions=out.reshape(n, -1).argmax(axis=1),
                       spike_counts={k: cat("counts", k) for k in spiking}, layers=layers, timesteps=T, steps_run=T,
                       quantized=True, activations=acts, output_states={out_name: cat("sums", out_name)})
    checks = {c: np.concatenate([b["checks"][c] for b in parts]) for c in checkpoints}
    return result, checks, C2Counts(events, spikes, int(n), T)


def _run_batch(net: Network, xb: torch.Tensor, T: int, checkpoints: set, dev, keep_trace: bool) -> dict:
    dp = net.datapath
    batch = xb.shape[0]
    order = list(net.nodes())
    vmax = node_max(net)
    kern, ops, projs, biases, sums, counts, sat = {}, {}, {}, {}, {}, {}, {}
    events, spikes = {}, {}
    for node in order:
        if isinstance(node, Population):
            shape = tuple(node.shape)
            if isinstance(node.neuron, C2.STBIF):
                kern[node.name] = FixedSTBIF(node, batch, dp.state_bits, dev)
            elif isinstance(node.neuron, MultiSpikeIF):
                kern[node.name] = FixedPMSM(node, batch, dp.state_bits, dev)
            else:
                biases[node.name] = torch.as_tensor(expand_channel(np.asarray(node.neuron.bias, dtype=np.int64), shape),
                                                    device=dev)
            if node.name in kern:
                counts[node.name] = torch.zeros((batch,) + shape, dtype=torch.int64, device=dev)
                events[node.name] = spikes[node.name] = 0
            sums[node.name] = torch.zeros((batch,) + shape, dtype=torch.int64, device=dev)
            if isinstance(node.neuron, Readout):
                v0 = expand_channel(np.asarray(node.neuron.v_init, dtype=np.int64), shape)
                sums[node.name] += torch.as_tensor(v0, device=dev)
            sat[node.name] = [0]
            for p in net.incoming(node.name):
                projs[p.name] = FixedProjection(p, vmax[p.source], shape, dp, dev)
        elif isinstance(node, Operator):
            ops[node.name] = FixedC2Operator(node, batch, dp.payload_bits, dev)
            sums[node.name] = torch.zeros((batch,) + tuple(node.shape), dtype=torch.int64, device=dev)
    incoming = {p.name: net.incoming(p.name) for p in net.populations()}
    inputs = {i.name: encode_input(i, xb, True, T).reshape((batch,) + tuple(i.shape)).to(torch.int64)
              for i in net.inputs()}
    checks, steps = {}, {}
    out_pop = net[net.outputs[0]]
    for t in range(1, T + 1):
        val: dict[str, torch.Tensor] = {}
        for node in order:
            name = node.name
            if isinstance(node, Input):
                val[name] = inputs[name] if t == 1 else torch.zeros_like(inputs[name])
            elif isinstance(node, Population):
                cur = None
                for p in incoming[name]:
                    a = projs[p.name](val[p.source])
                    cur = a if cur is None else cur + a
                if cur is None:
                    cur = torch.zeros_like(sums[name])
                if name in kern:
                    s = kern[name].step(cur, t)
                    nz = s != 0
                    counts[name] += nz.to(torch.int64)
                    events[name] += int(nz.sum())
                    spikes[name] += int(s.abs().sum())
                    val[name] = s
                elif isinstance(node.neuron, Readout):   # the host sums I + [t = 1] bias in int64
                    val[name] = cur + biases[name] if t == 1 else cur
                else:   # Relay: r = sat_payload(I + [t = 1] bias)
                    val[name] = saturate(cur + biases[name] if t == 1 else cur, dp.payload_bits, sat[name])
                sums[name] += val[name]
            elif isinstance(node, Operator):
                val[name] = ops[name].step([val[i] for i in node.inputs], t)
                sums[name] += val[name]
            if keep_trace and name in val:
                steps.setdefault(name, []).append(val[name].cpu().numpy())
        if t in checkpoints:
            checks[t] = _decode(out_pop, sums)
    for name, k in kern.items():
        sat[name] = [k.sat[0]]
    wrap = {}
    for name, k in projs.items():
        if k.wrap_events:
            wrap[net[name].target] = wrap.get(net[name].target, 0) + k.wrap_events
    decoded = {p.name: _decode(p, sums) for p in net.populations()}
    for op in net.operators():
        decoded[op.name] = sums[op.name].to(torch.float64).cpu().numpy() * float(op.params["out_scale"])
    return {"trace": {k: np.stack(v) for k, v in steps.items()}, "checks": checks, "decoded": decoded,
            "sums": {k: v.cpu().numpy() for k, v in sums.items()}, "counts": {k: v.cpu().numpy() for k, v in counts.items()},
            "events": events, "spikes": spikes, "wrap": wrap,
            "sat": {**{k: v[0] for k, v in sat.items()}, **{k: o.sat[0] for k, o in ops.items()}}}


def _decode(pop: Population, sums: dict) -> np.ndarray:
    """C2 decode: the summed payload times the real unit (a Readout: state_scale * decode_scale) plus the offset."""
    shape = tuple(pop.shape)
    scale = expand_channel(np.asarray(pop.decode_scale, dtype=np.float64), shape)
    offset = expand_channel(np.asarray(pop.decode_offset, dtype=np.float64), shape)
    if isinstance(pop.neuron, Readout):
        scale = scale * expand_channel(np.asarray(pop.state_scale, dtype=np.float64), shape)
    return sums[pop.name].to(torch.float64).cpu().numpy() * scale + offset


__all__ = ["FixedC2Operator", "FixedPMSM", "FixedSTBIF", "check_c2_fixed", "simulate_c2_fixed"]
