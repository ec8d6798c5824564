"""spikeport IR -> NIR graph (``.nir``), written under one exporter convention.

Each population becomes a NIR neuron node (IF, LIF, CubaLIF, I) whose parameters make a reader of
that convention compute exactly the IR's update (r = 1 / (dt * ...) so the input gain is one, biases
as ``v_leak`` or an Affine bias); each projection becomes Linear / Affine / Conv2d / Scale (+ Delay).
What NIR cannot hold (reset by subtraction, '>=' where the convention fires on '>', signed or graded
payloads, multi-spike counts, initial states, decode scales) goes into node metadata
(``spikeport_neuron``, ``spikeport_population``: JSON), from which spikeport's importer rebuilds the
exact IR; other readers would get those semantics wrong, so such networks are refused unless
``lossy=True``, and the list of what a generic reader loses is returned and printed.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import SpikeportError
from ..ir import IF, Conv2d, Dense, Identity, Network, Readout, expand_channel
from ..ir.neurons_cuba import CubaLIF

EXPORT_CONVENTIONS = ("spec", "spikingjelly", "norse")


class NirExportError(SpikeportError):
    """A network cannot be written as NIR (the message names the node and the reason)."""


def _jsonable(obj) -> dict:
    out = {"type": type(obj).__name__}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray) or isinstance(v, np.generic):
            v = np.asarray(v).tolist()
        elif hasattr(v, "__dataclass_fields__"):
            v = _jsonable(v)
        out[f.name] = v
    return out


def _full(pop, value) -> np.ndarray:
    return expand_channel(np.asarray(value, dtype=np.float64), tuple(pop.shape)).astype(np.float64)


def _dynamics(pop, conv, dt: float):
    """(kind, a, b, v-bias, reasons a generic reader would be wrong) of one population."""
    m, where = pop.neuron, f"population {pop.name!r}"
    lossy = []
    if isinstance(m, Readout):
        return "I", 0.0, 1.0, _full(pop, m.bias), (["v_init"] if np.any(np.asarray(m.v_init)) else [])
    if isinstance(m, IF):
        kind, a, b = ("LIF" if float(m.leak) > 0 else "IF"), float(m.leak), 1.0
        if m.neg_threshold is not None:
            lossy.append("signed (negative) spikes")
    elif isinstance(m, CubaLIF):
        a, b = float(m.dv), float(m.du)
        if b < 1 and a == 0:
            raise NirExportError(f"{where}: a CubaLIF with a decaying current (du {b}) but no voltage leak has no NIR form "
                                 "(NIR's CubaLIF scales the current by dt / tau_mem)")
        kind = "CubaLIF" if b < 1 else ("LIF" if a > 0 else "IF")
        if np.any(np.asarray(m.current_bias)) and b >= 1:
            lossy.append("current bias")
        if np.any(np.asarray(m.u_init)):
            lossy.append("u_init")
        if m.reset == "subtract" and m.reset_timing == "next_step" and conv.reset_timing != "next_step":
            lossy.append("subtraction after the next decay")
    else:
        kind, a, b = "IF", 0.0, 1.0
        lossy.append(f"neuron model {type(m).__name__} (multi-spike / graded events; written as a single-spike IF)")
    if getattr(m, "reset", "zero") != conv.reset:
        lossy.append(f"reset {m.reset!r} (a {conv.name} reader resets {conv.reset!r})")
    if getattr(m, "compare", conv.compare) != conv.compare:
        lossy.append(f"comparison {m.compare!r} (a {conv.name} reader fires on {conv.compare!r})")
    if np.any(np.asarray(m.v_init)):
        lossy.append("nonzero v_init (NIR has no initial state)")
    if pop.payload.kind != "binary" and not lossy:
        lossy.append(f"payload {pop.payload.kind!r}")
    return kind, a, b, _full(pop, m.bias), lossy


def _neuron_node(pop, conv, dt: float, kind: str, a: float, b: float, vbias: np.ndarray, nir):
    """The NIR node whose reader-side update under ``conv`` is the IR's with input gain 1."""
    shape = tuple(pop.shape)
    ones = np.ones(shape)
    th = _full(pop, getattr(pop.neuron, "threshold", 1.0)) if kind != "I" else None
    step = lambda frac: dt / frac if conv.tau == "euler" else dt * dt / frac  # noqa: E731  (tau from a decay fraction)
    if kind == "I":
        return nir.I(r=ones * (1.0 / dt if conv.if_dt else 1.0))
    if kind == "IF":
        if np.any(vbias):
            return None   # the bias then goes into an Affine bias (handled by the caller)
        return nir.IF(r=ones * (1.0 / dt if conv.if_dt else 1.0), v_threshold=th, v_reset=np.zeros(shape))
    if kind == "LIF":
        # v <- (1 - a) v + a r I + a v_leak  with a r = 1
        return nir.LIF(tau=ones * step(a), r=ones / a, v_leak=vbias / a, v_threshold=th, v_reset=np.zeros(shape))
    # CubaLIF: gain a r (b w_in) = 1 and a v_leak = bias
    w_in = ones / b if conv.syn_gain else ones
    return nir.CubaLIF(tau_syn=ones * step(b), tau_mem=ones * step(a), r=ones / a, v_leak=vbias / a, v_threshold=th,
                       v_reset=np.zeros(shape), w_in=w_in)


def to_nir_graph(net: Network, *, convention: str = "spec", dt: float | None = None, lossy: bool = False):
    """Build the NIR graph of a float ``net``; returns ``(graph, dropped)`` where ``dropped`` lists what a
    generic NIR reader of ``convention`` would get wrong (spikeport's importer restores it from metadata)."""
    import nir
    from ..ir.nir_conventions import CONVENTIONS
    if convention not in EXPORT_CONVENTIONS:
        raise NirExportError(f"--convention {convention!r}: NIR export writes {', '.join(EXPORT_CONVENTIONS)}")
    conv = CONVENTIONS[convention]
    dt = float(dt if dt is not None else (conv.dt or 1e-4))
    if net.quantized:
        raise NirExportError(f"the network is quantised for {net.datapath.profile!r}; NIR holds float networks: "
                             "export the float IR (before `spikeport compile`)")
    if net.operators():
        raise NirExportError(f"operator {net.operators()[0].name!r} has no NIR node")
    nodes, edges, dropped = {}, [], []
    for inp in net.inputs():
        nodes[inp.name] = nir.Input(input_type={"input": np.array(inp.shape)})
        if inp.coding != "spikes":
            dropped.append(f"input {inp.name!r}: coding {inp.coding!r} (NIR inputs are per-step values; present the "
                           f"{'same sample every step' if inp.coding == 'analog' else 'sample at step 0 only'})")
    bias_into_affine = {}
    for pop in net.populations():
        kind, a, b, vbias, why = _dynamics(pop, conv, dt)
        node = _neuron_node(pop, conv, dt, kind, a, b, vbias, nir)
        if node is None:      # IF with a bias: carried by an Affine bias on its first incoming projection
            bias_into_affine[pop.name] = vbias
            node = nir.IF(r=np.ones(pop.shape) * (1.0 / dt if conv.if_dt else 1.0), v_threshold=_full(pop, pop.neuron.threshold),
                          v_reset=np.zeros(tuple(pop.shape)))
        if isinstance(pop.neuron, CubaLIF) and np.any(np.asarray(pop.neuron.current_bias)) and kind == "CubaLIF":
            bias_into_affine[pop.name] = _full(pop, pop.neuron.current_bias)
        node.metadata = {"spikeport_neuron": json.dumps(_jsonable(pop.neuron)),
                         "spikeport_population": json.dumps({"payload": _jsonable(pop.payload),
                                                             "decode_scale": np.asarray(pop.decode_scale).tolist(),
                                                             "decode_offset": np.asarray(pop.decode_offset).tolist(),
                                                             "t_start": int(pop.t_start), "source": pop.source})}
        nodes[pop.name] = node
        dropped += [f"population {pop.name!r}: {w}" for w in why]
        if pop.t_start:
            dropped.append(f"population {pop.name!r}: t_start {pop.t_start} (NIR has no start step)")
    for proj in net.projections():
        src_shape, dst_shape = net.shape_of(proj.source), net.shape_of(proj.target)
        w = np.asarray(proj.weight, dtype=np.float64)
        bias = bias_into_affine.pop(proj.target, None)
        name = proj.name
        if isinstance(proj, Dense):
            node = (nir.Affine(weight=w, bias=bias.reshape(-1)) if bias is not None else nir.Linear(weight=w))
        elif isinstance(proj, Conv2d):
            if bias is not None:
                per = bias.reshape(bias.shape[0], -1)
                if not np.all(per == per[:, :1]):
                    raise NirExportError(f"population {proj.target!r}: a bias that varies inside a channel cannot ride on the "
                                         f"conv {name!r}'s per-channel bias")
            node = nir.Conv2d(input_shape=tuple(src_shape[1:]), weight=w, stride=tuple(proj.stride), padding=tuple(proj.padding),
                              dilation=tuple(proj.dilation), groups=int(proj.groups),
                              bias=bias.reshape(bias.shape[0], -1)[:, 0] if bias is not None else np.zeros(w.shape[0]))
        elif isinstance(proj, Identity):
            scale = expand_channel(w, tuple(dst_shape))
            if bias is not None:
                node = nir.Affine(weight=np.diag(scale.reshape(-1)), bias=bias.reshape(-1))
            else:
                node = nir.Scale(scale=scale)
        else:
            raise NirExportError(f"projection {name!r}: {type(proj).__name__} has no NIR node")
        if float(proj.scale if np.ndim(proj.scale) == 0 else 1.0) != 1.0:
            dropped.append(f"projection {name!r}: scale")
        nodes[name] = node
        head = proj.source
        if isinstance(proj, Dense) and len(src_shape) > 1:      # NIR's Linear reads a flat vector
            nodes[f"{name}.flatten"] = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0, end_dim=-1)
            edges.append((head, f"{name}.flatten"))
            head = f"{name}.flatten"
        if proj.delay:
            nodes[f"{name}.delay"] = nir.Delay(delay=np.full((int(np.prod(src_shape)),) if head != proj.source else src_shape,
                                                             proj.delay * dt))
            edges.append((head, f"{name}.delay"))
            head = f"{name}.delay"
        edges.append((head, name))
        edges.append((name, proj.target))
    for name in bias_into_affine:
        raise NirExportError(f"population {name!r}: its bias has no incoming projection to ride on")
    out_shapes = {o: net.shape_of(o) for o in net.outputs}
    for i, o in enumerate(net.outputs):
        oname = "output" if len(net.outputs) == 1 else f"output.{i}"
        nodes[oname] = nir.Output(output_type={"output": np.array(out_shapes[o])})
        edges.append((o, oname))
    if dropped and not lossy:
        raise NirExportError("NIR cannot express, for a generic reader: " + "; ".join(dropped) +
                             " (spikeport keeps them in node metadata; pass --lossy to write the file anyway)")
    meta = {"spikeport_convention": conv.name, "spikeport_dt": dt, "spikeport_coding": net.coding,
            "spikeport_outputs": json.dumps(list(net.outputs)),
            "spikeport_inputs": json.dumps({i.name: {"coding": i.coding, "payload": _jsonable(i.payload)} for i in net.inputs()})}
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
    return graph, dropped


def export_nir(net: Network, path: str | Path, *, convention: str = "spec", dt: float | None = None,
               lossy: bool = False) -> tuple[Path, list[str]]:
    """Write ``net`` as a NIR file (temp file + rename) and check that ``nir.read`` reads it back."""
    import nir
    graph, dropped = to_nir_graph(net, convention=convention, dt=dt, lossy=lossy)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
        nir.read(str(tmp))
    return path, dropped


__all__ = ["EXPORT_CONVENTIONS", "NirExportError", "export_nir", "to_nir_graph"]
