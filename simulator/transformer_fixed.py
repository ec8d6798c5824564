"""Bit-accurate simulation of quantised networks with typed operators (ECMT ViTs, C1 coding).

The same node-order loop as the float simulator (simulator/transformer.py), on int64 tensors:
every step the input presents its integer levels, a population sums its incoming projections
(exact, then the projection's exponent shift) and updates its integer neuron, an operator steps
its fixed-point kernel (simulator/fixed_operators.py) on its inputs' integer payloads. An IF
population (``--method aif`` and the layer-wise baseline) runs the CNN's bit-accurate IF kernel
(simulator/neurons.py ``FixedIF``: Lava's LIF order, ``u = a_in << act_shift``): projections read
its +1 / -1 codes, operators the decoded integer ``e * threshold + z`` (:func:`if_operator_view`). Rules,
widths and rounding: docs/fixed_point.md, "Transformer operator networks". Decoded values are the
mean payload times the node's real unit (a population's ``decode_scale``, an operator's
``params["out_scale"]``); a Readout's per-step value is summed by the host into ``v`` (int64) and
decodes as ``v / T * state_scale * decode_scale + decode_offset``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UnsupportedError
from ..ir import operators as O
from ..ir.graph import Network
from ..ir.nodes import IF, Input, Operator, Population, Readout, expand_channel
from .engine import encode_input
from .fixed_operators import FixedMT, FixedOperator, FixedProjection, saturate
from .neurons import FixedIF


def if_operator_view(pop: Population, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(event value, offset) per neuron, int64 of the population's shape: an operator reading a quantised
    IF population sees ``e * value + offset`` in units of ``state_scale`` (compiler/quantize_signed_if.py)."""
    shape = tuple(pop.shape)
    unit = float(np.asarray(pop.state_scale, dtype=np.float64).reshape(-1)[0])
    th = expand_channel(np.asarray(pop.neuron.threshold, dtype=np.int64), shape)
    off = np.rint(expand_channel(np.asarray(pop.decode_offset, dtype=np.float64), shape) / unit).astype(np.int64)
    return torch.as_tensor(th, device=device), torch.as_tensor(off, device=device)
from .result import LayerStats, SimResult


def node_max(net: Network) -> dict[str, int]:
    """Largest |payload| each node can emit per step (inputs, populations, operators)."""
    dp = net.datapath
    out = {}
    for node in net.nodes():
        if isinstance(node, Input) or isinstance(node, Population):
            pl = node.payload
            out[node.name] = int(max(abs(pl.min_level) * abs(pl.neg_value), abs(pl.max_level)))
        elif isinstance(node, Operator):
            if isinstance(node, O.Rearrange):
                out[node.name] = out[node.inputs[0]]
            elif isinstance(node, O.Concat):
                parts = [out[i] for i in node.inputs]
                if node.prefix is not None:
                    parts.append(int(np.abs(np.asarray(node.prefix, dtype=np.int64)).max(initial=0)))
                out[node.name] = max(parts) * 2   # rescaled inputs may round up; a safe bound
            else:
                out[node.name] = (1 << (dp.payload_bits - 1)) - 1
    return out


def check_fixed_network(net: Network) -> None:
    """Refuse what the fixed-point operator simulator does not run (naming the node)."""
    if not net.quantized:
        raise UnsupportedError("simulate_operators_fixed: the network is not quantised")
    if net.coding != "C1":
        raise UnsupportedError(f"operator networks are simulated in C1 coding only, this one is {net.coding}")
    for node in net.nodes():
        if isinstance(node, Input) and node.coding != "analog":
            raise UnsupportedError(f"input {node.name!r}: coding {node.coding!r} (operator networks take analog input)")
        if isinstance(node, Population) and not isinstance(node.neuron, (O.MultiThreshold, O.Relay, Readout)) \
                and type(node.neuron) is not IF:
            raise UnsupportedError(f"population {node.name!r}: neuron {type(node.neuron).__name__} is not simulated "
                                   "with operators")
        if isinstance(node, Population) and type(node.neuron) is IF and (
                node.neuron.reset != "subtract" or float(node.neuron.leak) != 0 or node.payload.neg_value != 1):
            raise UnsupportedError(f"population {node.name!r}: IF with reset {node.neuron.reset!r}, leak {node.neuron.leak}, "
                                   f"neg_value {node.payload.neg_value} (operator networks run AIF's signed IF: "
                                   "subtract reset, no leak, +-1 events)")
        if isinstance(node, Operator):
            if not isinstance(node, O.TypedOperator):
                raise UnsupportedError(f"operator {node.name!r} (op {node.op!r}): untyped operators are not simulated")
            if node.arithmetic not in ("fixed", "none"):
                raise UnsupportedError(f"operator {node.name!r}: arithmetic {node.arithmetic!r} in a quantised network "
                                       "(the fixed-point simulator runs 'fixed' and 'none' operators)")
        if getattr(node, "delay", 0) or getattr(node, "t_start", 0):
            raise UnsupportedError(f"{node.name!r}: delays and t_start are not simulated with operators")


def max_timesteps(net: Network) -> int | None:
    """The largest T whose operator state widths the quantiser proved (``meta['quantization']``)."""
    q = net.meta.get("quantization", {})
    v = q.get("operator_max_timesteps") if isinstance(q, dict) else None
    return int(v) if isinstance(v, (int, float)) else None


def simulate_operators_fixed(net: Network, x, timesteps: int, *, checkpoints: tuple[int, ...] = (),
                             batch_size: int = 64, device=None, trace: dict | None = None,
                             record_spikes: bool = False) -> tuple[SimResult, dict[int, np.ndarray]]:
    """Bit-accurate run of a quantised operator network; returns the result and, per checkpoint
    t <= T, the decoded output after t steps (as ``simulate_operators``). ``trace``: a dict that
    receives every node's per-step payloads, (T, N, *shape) int64 (for the reference tests).
    ``record_spikes``: every MT population's signed levels (IF: event codes) per step, (N, T, *shape)
    int32, in ``SimResult.spikes`` (as the float operator simulator). An IF population's trace holds
    its event codes (what its projections carry)."""
    check_fixed_network(net)
    net.validate("simulate")
    T = int(timesteps)
    if T < 1 or any(not 1 <= c <= T for c in checkpoints):
        raise ValueError(f"simulate: timesteps {T} must be >= 1 and checkpoints {checkpoints} within 1..T")
    top = max_timesteps(net)
    if top is not None and T > top:
        raise UnsupportedError(f"simulate: T = {T} exceeds {top}, the largest T for which the quantised operators' "
                               "int64 state is proved not to overflow (compile with a larger max_timesteps)")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    xs = torch.as_tensor(np.asarray(x))
    n = xs.shape[0]
    per_batch = []
    with torch.no_grad():
        for a in range(0, n, batch_size):
            per_batch.append(_run_batch(net, xs[a:a + batch_size].to(dev), T, set(checkpoints), dev,
                                        trace is not None, record_spikes))
    if trace is not None:
        for name in per_batch[0]["trace"]:
            trace[name] = np.concatenate([b["trace"][name] for b in per_batch], axis=1)

    def cat(key, name):
        return np.concatenate([b[key][name] for b in per_batch])
    activations = {name: cat("decoded", name) for name in per_batch[0]["decoded"]}
    spike_counts = {name: cat("counts", name) for name in per_batch[0]["counts"]}
    out = activations[net.outputs[0]]
    layers = {}
    for pop in net.populations():
        s = LayerStats(neurons=pop.size)
        s.saturation_events = int(sum(b["sat"][pop.name] for b in per_batch))
        s.saturation_high = s.saturation_events
        if pop.name in per_batch[0]["if_stats"]:      # IF: the CNN kernel's counters
            for key in ("saturation_high", "wrap_events", "a_in_16bit_events", "int32_events"):
                setattr(s, key, int(sum(b["if_stats"][pop.name][key] for b in per_batch)))
        s.conv_wrap_events = int(sum(b["wrap"].get(pop.name, 0) for b in per_batch))
        if pop.name in spike_counts:
            s.spikes = int(spike_counts[pop.name].sum())
            s.rate = s.spikes / (n * pop.size * T)
        layers[pop.name] = s.as_dict()
    for op in net.operators():
        layers[op.name] = {"saturation_events": int(sum(b["sat"][op.name] for b in per_batch)),
                           "runs_on": op.runs_on, "arithmetic": op.arithmetic, "neurons": int(np.prod(op.shape))}
    result = SimResult(outputs=out, all_outputs={o: activations[o] for o in net.outputs},
                       predictions=out.reshape(n, -1).argmax(axis=1), spike_counts=spike_counts, layers=layers,
                       timesteps=T, steps_run=T, quantized=True, activations=activations,
                       output_states={o: cat("states", o) for o in net.outputs if o in per_batch[0]["states"]},
                       spikes={k: cat("trains", k) for k in per_batch[0]["trains"]} if record_spikes else None)
    return result, {c: np.concatenate([b["checks"][c] for b in per_batch]) for c in checkpoints}


def _run_batch(net: Network, xb: torch.Tensor, T: int, checkpoints: set, dev, keep_trace: bool = False,
               record_spikes: bool = False) -> dict:
    dp = net.datapath
    batch = xb.shape[0]
    order = list(net.nodes())
    vmax = node_max(net)
    neurons, ops, projs, biases, sums, counts, sat, views = {}, {}, {}, {}, {}, {}, {}, {}
    for node in order:
        if isinstance(node, Population):
            shape = tuple(node.shape)
            if isinstance(node.neuron, O.MultiThreshold):
                neurons[node.name] = FixedMT(node, batch, dp.state_bits, dev)
                counts[node.name] = torch.zeros((batch,) + shape, dtype=torch.int64, device=dev)
            elif type(node.neuron) is IF:
                neurons[node.name] = FixedIF(node, batch, dev, dp, None)
                views[node.name] = if_operator_view(node, dev)
                counts[node.name] = torch.zeros((batch,) + shape, dtype=torch.int64, device=dev)
            else:
                biases[node.name] = torch.as_tensor(expand_channel(np.asarray(node.neuron.bias, dtype=np.int64), shape),
                                                    device=dev)
                if isinstance(node.neuron, Readout):
                    v0 = expand_channel(np.asarray(node.neuron.v_init, dtype=np.int64), shape)
                    neurons[node.name] = torch.as_tensor(v0, device=dev).unsqueeze(0).repeat((batch,) + (1,) * len(shape))
            sums[node.name] = torch.zeros((batch,) + shape, dtype=torch.int64, device=dev)
            sat[node.name] = [0]
            for p in net.incoming(node.name):
                projs[p.name] = FixedProjection(p, vmax[p.source], shape, dp, dev)
        elif isinstance(node, Operator):
            ops[node.name] = FixedOperator(node, batch, dp.payload_bits, dev)
            sums[node.name] = torch.zeros((batch,) + tuple(node.shape), dtype=torch.int64, device=dev)
    incoming = {p.name: net.incoming(p.name) for p in net.populations()}
    inputs = {i.name: encode_input(i, xb, True, T).reshape((batch,) + tuple(i.shape)) for i in net.inputs()}
    trains = {k: torch.zeros((batch, T) + tuple(net[k].shape), dtype=torch.int32, device=dev)
              for k in counts} if record_spikes else {}
    checks = {}
    steps: dict[str, list] = {}
    out_name = net.outputs[0]
    for t in range(1, T + 1):
        val: dict[str, torch.Tensor] = {}
        opval: dict[str, torch.Tensor] = {}   # IF populations: the decoded integers operators read
        for node in order:
            name = node.name
            if isinstance(node, Input):
                val[name] = inputs[name]
            elif isinstance(node, Population):
                cur = None
                for p in incoming[name]:
                    a = projs[p.name](val[p.source])
                    cur = a if cur is None else cur + a
                if cur is None:
                    cur = torch.zeros_like(sums[name])
                m = node.neuron
                if isinstance(m, O.MultiThreshold):
                    s, e = neurons[name].step(cur)
                    counts[name] += (s != 0).to(torch.int64)
                    if name in trains:
                        trains[name][:, t - 1] = s.to(torch.int32)
                    val[name] = e
                    sums[name] += e
                elif type(m) is IF:        # the CNN's bit-accurate IF; +-1 codes to projections
                    k = neurons[name]
                    s = k.step(cur.reshape(batch, -1)).to(torch.int64).reshape(cur.shape)
                    counts[name] += (s != 0).to(torch.int64)
                    if name in trains:
                        trains[name][:, t - 1] = s.to(torch.int32)
                    th, off = views[name]
                    val[name] = s
                    opval[name] = s * th + off
                    sums[name] += opval[name]
                elif isinstance(m, O.Relay):
                    val[name] = saturate(cur + biases[name], dp.payload_bits, sat[name])
                    sums[name] += val[name]
                else:  # Readout: r = sat_payload(I + bias) each step, the host sums v += r (int64)
                    val[name] = saturate(cur + biases[name], dp.payload_bits, sat[name])
                    neurons[name] = neurons[name] + val[name]
            elif isinstance(node, Operator):
                val[name] = ops[name].step([opval.get(i, val[i]) for i in node.inputs])
                sums[name] += val[name]
            if keep_trace and name in val:
                steps.setdefault(name, []).append(val[name].cpu().numpy())
        if t in checkpoints:
            checks[t] = _decode(net[out_name], sums, neurons, t)
    decoded = {p.name: _decode(p, sums, neurons, T) for p in net.populations()}
    for op in net.operators():
        decoded[op.name] = sums[op.name].to(torch.float64).cpu().numpy() / T * float(op.params["out_scale"])
    if_stats = {}
    for p in net.populations():
        if isinstance(p.neuron, O.MultiThreshold):
            sat[p.name] = [neurons[p.name].sat[0]]
        elif type(p.neuron) is IF:
            k = neurons[p.name]
            sat[p.name] = [int(k.saturation)]
            if_stats[p.name] = {"saturation_high": int(k.saturation_high), "wrap_events": int(k.wrap),
                                "a_in_16bit_events": int(k.a16), "int32_events": int(k.int32)}
    wrap = {}
    for name, k in projs.items():
        if k.wrap_events:
            wrap[net[name].target] = wrap.get(net[name].target, 0) + k.wrap_events
    return {"trace": {k: np.stack(v) for k, v in steps.items()}, "trains": {k: v.cpu().numpy() for k, v in trains.items()},
            "checks": checks, "decoded": decoded, "counts": {k: v.cpu().numpy() for k, v in counts.items()},
            "sat": {**{k: v[0] for k, v in sat.items()}, **{k: o.sat[0] for k, o in ops.items()}},
            "wrap": wrap, "if_stats": if_stats, "states": {o: (neurons[o] if isinstance(neurons[o], torch.Tensor) else neurons[o].v.to(torch.int64)
                                         .reshape((batch,) + tuple(net[o].shape))).cpu().numpy()
                                     for o in net.outputs if o in neurons}}


def _decode(pop: Population, sums: dict, neurons: dict, t: int) -> np.ndarray:
    shape = tuple(pop.shape)
    scale = expand_channel(np.asarray(pop.decode_scale, dtype=np.float64), shape)
    offset = expand_channel(np.asarray(pop.decode_offset, dtype=np.float64), shape)
    if isinstance(pop.neuron, Readout):
        unit = expand_channel(np.asarray(pop.state_scale, dtype=np.float64), shape)
        return neurons[pop.name].to(torch.float64).cpu().numpy() / t * unit * scale + offset
    if type(pop.neuron) is IF:     # sums of e * threshold + z, in state units
        unit = expand_channel(np.asarray(pop.state_scale, dtype=np.float64), shape)
        return sums[pop.name].to(torch.float64).cpu().numpy() / t * unit
    return sums[pop.name].to(torch.float64).cpu().numpy() / t * scale + offset
