"""Quantised Transformer networks (typed operators, ECMT ViTs) in Lava's CPU simulation.

Each IR node becomes one Lava process (processes/transformer_process.py) on batch-wide ports:
the analog input a ``RingBuffer`` (Lava's own), MultiThreshold populations ``MTNeuron`` (graded
event = the signed level times its threshold), AIF / baseline signed IF populations the CNN path's
``SpikeportNeuron`` (Lava's LIF arithmetic, +-1 events; operators reading one decode
``s * threshold + z`` with its integer tables), Relay / Readout ``RelayNeuron``, every projection a
``TokenSynapse`` (TokenDense: one weight shared by all tokens), every typed operator an
``OperatorProcess`` - a Python process, **not on neuro cores**. All of them answer within the Lava
time step they receive in, which is the IR's delay-0, node-order evaluation (docs/fixed_point.md,
"Transformer operator networks"), so Lava's trains equal the simulator's step for step.

``verify_operators`` runs both and compares every node's per-step payload (MT events, relay and
readout values, every operator's output) and the readouts' final sums, with equality.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...atomic import atomic_dir
from ...ir import Network, expand_channel
from ...ir import operators as O
from ...ir.nodes import IF, Conv2d, Dense, Identity, Input, Operator, Population, Readout
from .plan import LavaExportError
from .runner import LavaResult, input_integers

FORMAT = "spikeport-lava-operators"
VERSION = 1
NOT_NEURO = "not on neuro cores"


def is_operator_network(net: Network) -> bool:
    return bool(net.operators())


def refuse_staged(qnet: Network) -> None:
    """MBE Transformers (staged coding C3) have no Lava mapping: name the first MBE node and why."""
    if qnet.coding != "C3":
        return
    from ...ir.neurons_mbe import MBE_MODELS
    from ...ir.operators_mbe import MBE_OPERATOR_TYPES
    for node in qnet.nodes():
        if isinstance(node, Population) and isinstance(node.neuron, MBE_MODELS):
            raise LavaExportError(f"Lava export: population {node.name!r} ({type(node.neuron).__name__}): MBE neurons "
                                  "read per-step threshold/reset/intensity tables, which no Lava process (nor Loihi 2 "
                                  "without custom microcode) provides, and staged coding C3 (each stage runs after the "
                                  "previous one's T steps) has no Lava schedule; simulate it with `spikeport simulate`")
        if isinstance(node, Operator) and type(node).__name__ in MBE_OPERATOR_TYPES:
            raise LavaExportError(f"Lava export: operator {node.name!r} ({type(node).__name__}): MBE operators (C3) "
                                  "have no Lava process; simulate the network with `spikeport simulate`")
    raise LavaExportError("Lava export: staged coding C3 has no Lava schedule")


def first_c2_node(net: Network):
    """The first node that only C2 coding has (an ST-BIF / PMSM population in a C2 network, a C2
    operator), or None."""
    from ...ir import operators_c2 as C2
    if net.coding != "C2":
        return None
    for node in net.nodes():
        if isinstance(node, (C2.C2Operator, C2.MatMulC2)) or (
                getattr(node, "neuron", None) is not None and node.neuron.spiking):
            return node
    return None


def check_network(qnet: Network, timesteps: int) -> None:
    """Refuse what the Lava operator mapping cannot run, naming the node (LavaExportError)."""
    from ...errors import SpikeportError
    refuse_staged(qnet)
    from ...simulator.transformer_fixed import check_fixed_network, max_timesteps
    from .processes.transformer_process import MAX_OPERATOR_INPUTS
    c2 = first_c2_node(qnet)
    if c2 is not None:
        raise LavaExportError(f"Lava export: node {c2.name!r} ({type(getattr(c2, 'neuron', c2)).__name__}): C2 (sum-coded) "
                              "stbif / pmsm networks have no Lava processes yet (ST-BIF / PMSM neurons and the C2 "
                              "operators' difference forms); run them bit-accurately with spikeport simulate")
    try:
        check_fixed_network(qnet)
    except SpikeportError as e:
        raise LavaExportError(f"Lava export: {e}") from None
    top = max_timesteps(qnet)
    if top is not None and int(timesteps) > top:
        raise LavaExportError(f"Lava export: T = {timesteps} exceeds {top}, the largest T the quantised operators "
                              "are proved for")
    for node in qnet.nodes():
        if isinstance(node, Input) and node.coding != "analog":
            raise LavaExportError(f"input {node.name!r}: coding {node.coding!r} (operator networks take analog input)")
        if isinstance(node, Operator) and not 1 <= len(node.inputs) <= MAX_OPERATOR_INPUTS:
            raise LavaExportError(f"operator {node.name!r}: {len(node.inputs)} inputs, the Lava operator processes "
                                  f"take 1..{MAX_OPERATOR_INPUTS}")
    for p in qnet.projections():
        if not isinstance(p, (O.TokenDense, Dense, Identity, Conv2d)):
            raise LavaExportError(f"projection {p.name!r}: {type(p).__name__} has no Lava synapse in operator networks")


def layer_report(qnet: Network, timesteps: int) -> list[dict]:
    """Per node: the Lava process, where it runs on Loihi 2, its payload and whose code ran it."""
    check_network(qnet, timesteps)
    rows = []
    for node in qnet.nodes():
        if isinstance(node, Input):
            rows.append(dict(layer=node.name, process="RingBuffer (lava.proc.io.source)", hardware="host I/O",
                             payload=f"graded ({node.payload.bits} bits)", runs="Lava", note="analog input every step"))
        elif isinstance(node, Population):
            m = node.neuron
            if type(m) is IF:
                rows.append(dict(layer=node.name, process="SpikeportNeuron (signed IF)", runs="spikeport",
                                 hardware="neuro core (custom neuron microcode; simulation-only)",
                                 payload="+1 / -1 events", note="operators read s * threshold + z"))
            elif isinstance(m, O.MultiThreshold):
                rows.append(dict(layer=node.name, process="MTNeuron", runs="spikeport",
                                 hardware="neuro core (custom neuron microcode; simulation-only)",
                                 payload=f"graded: signed level x threshold, {m.levels} levels ({node.payload.bits} bits)",
                                 note="one graded event per step"))
            else:
                kind = "Readout" if isinstance(m, Readout) else "Relay"
                rows.append(dict(layer=node.name, process=f"RelayNeuron ({kind})", runs="spikeport",
                                 hardware="neuro core (custom compartment; simulation-only)",
                                 payload=f"graded value ({qnet.datapath.payload_bits} bits)",
                                 note="summed by the host" if kind == "Readout" else "accumulator"))
        elif isinstance(node, Operator):
            rows.append(dict(layer=node.name, process=f"OperatorProcess ({type(node).__name__})", runs="spikeport",
                             hardware=f"{NOT_NEURO}: {node.runs_on} ({node.arithmetic})",
                             payload=f"graded value ({qnet.datapath.payload_bits} bits)",
                             note="Python process, reference integer kernel"))
    for p in qnet.projections():
        kind = {O.TokenDense: "TokenDense (one weight shared by every token)", Dense: "Dense", Identity: "Identity",
                Conv2d: "Conv2d"}[type(p)]
        rows.append(dict(layer=p.name, process=f"TokenSynapse ({kind})", runs="spikeport",
                         hardware="neuro core synapses (no latency: evaluated within the step)",
                         payload=f"weights {np.asarray(p.weight).shape}, weight_exp {int(p.weight_exp)}",
                         note=f"{p.source} -> {p.target}"))
    return rows


@dataclass
class OperatorLavaNet:
    """Wired Lava processes of one quantised operator network for a batch of N samples and T steps."""

    net: Network
    timesteps: int
    batch: int
    source: object
    procs: dict
    run_cfg: object

    def __enter__(self) -> "OperatorLavaNet":
        return self

    def __exit__(self, *exc) -> None:
        self.source.stop()

    def run(self) -> None:
        from lava.magma.core.run_conditions import RunSteps
        self.source.run(condition=RunSteps(num_steps=self.timesteps), run_cfg=self.run_cfg)

    def values(self) -> dict[str, np.ndarray]:
        """Every node's sent value at every step, (T, N, *shape) int64 (inputs excluded)."""
        out = {}
        for name, proc in self.procs.items():
            if name in self.net and type(getattr(self.net[name], "neuron", None)) is IF:   # (N, ..., T) codes
                out[name] = np.moveaxis(np.asarray(proc.s_hist.get()), -1, 0).astype(np.int64)
                continue
            var = getattr(proc, "e_hist", None)
            var = getattr(proc, "hist", None) if var is None else var
            if var is not None:
                out[name] = np.asarray(var.get()).astype(np.int64)
        return out


def build(qnet: Network, x_int: np.ndarray, timesteps: int) -> OperatorLavaNet:
    """Create and connect the processes for the integer input ``x_int`` (N, *input shape)."""
    check_network(qnet, timesteps)
    from . import compat
    compat.install()
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    from .processes.process import SpikeportNeuron
    from .processes.transformer_process import MTNeuron, RelayNeuron, TokenSynapse, operator_process
    dp = qnet.datapath
    T, n = int(timesteps), int(x_int.shape[0])
    procs: dict = {}
    source = None
    for node in qnet.nodes():
        if not isinstance(node, (Input, Population, Operator)):
            continue                      # projections are wired below
        shape = (n,) + tuple(node.shape) if not isinstance(node, Input) else None
        if isinstance(node, Input):
            frames = np.repeat(np.asarray(x_int, dtype=np.int32)[..., None], T, axis=-1)
            source = procs[node.name] = RingBuffer(data=frames)
        elif isinstance(node, Population):
            m, own = node.neuron, tuple(node.shape)

            def arr(v):
                return expand_channel(np.asarray(v, dtype=np.int64), own)
            if type(m) is IF:
                procs[node.name] = SpikeportNeuron(shape=shape, **_if_params(node, T))
            elif isinstance(m, O.MultiThreshold):
                procs[node.name] = MTNeuron(shape=shape, theta1=arr(m.theta1), theta2=arr(m.theta2),
                                            v_init=arr(m.v_init), levels=m.levels, strict=m.neg_compare == "<",
                                            state_bits=dp.state_bits, steps=T, name=node.name)
            else:
                procs[node.name] = RelayNeuron(shape=shape, bias=arr(m.bias),
                                               v_init=arr(getattr(m, "v_init", 0)), payload_bits=dp.payload_bits,
                                               readout=isinstance(m, Readout), steps=T, name=node.name)
        elif isinstance(node, Operator):
            in_shapes = [(n,) + tuple(qnet[i].shape) for i in node.inputs]
            decode = [_if_decode(qnet[i]) for i in node.inputs]
            procs[node.name] = operator_process(len(node.inputs))(spec=node, in_shapes=in_shapes, out_shape=shape,
                                                                  payload_bits=dp.payload_bits, steps=T, name=node.name,
                                                                  decode=decode)
    for p in qnet.projections():
        src_shape = (n,) + tuple(qnet[p.source].shape)
        dst_shape = (n,) + tuple(qnet[p.target].shape)
        kw = dict(weight_exp=int(p.weight_exp), src_shape=src_shape, dst_shape=dst_shape, name=p.name)
        if isinstance(p, O.TokenDense):
            syn = TokenSynapse(kind="token_dense", weight=np.asarray(p.weight), **kw)
        elif isinstance(p, Dense):
            syn = TokenSynapse(kind="dense", weight=np.asarray(p.weight), **kw)
        elif isinstance(p, Identity):
            syn = TokenSynapse(kind="identity", weight=expand_channel(np.asarray(p.weight, dtype=np.int64),
                                                                      tuple(qnet[p.target].shape)), **kw)
        else:
            syn = TokenSynapse(kind="conv", weight=np.asarray(p.weight), stride=p.stride, padding=p.padding,
                               dilation=p.dilation, groups=p.groups, conv_acc_bits=dp.conv_acc_bits, **kw)
        procs[p.source].s_out.connect(syn.s_in)
        syn.a_out.connect(procs[p.target].a_in)
        procs[p.name] = syn
    for op in qnet.operators():
        for k, src in enumerate(op.inputs):
            procs[src].s_out.connect(getattr(procs[op.name], f"in{k}"))
    return OperatorLavaNet(qnet, T, n, source, procs, Loihi2SimCfg(select_tag="fixed_pt"))


def _if_params(pop: Population, T: int) -> dict:
    """SpikeportNeuron arguments of a quantised IF population (IR layout: the process holds the batch in
    front); the thresholds and biases are split as the CNN plan splits them (plan.py)."""
    from .plan import _int_array, _vth, split_bias
    m, own, where = pop.neuron, tuple(pop.shape), f"population {pop.name!r}"
    mant, exp = split_bias(_int_array(m.bias, own, where, "bias"), where)
    signed = m.neg_threshold is not None
    return dict(vth=_vth(_int_array(m.threshold, own, where, "threshold"), where), bias_mant=mant, bias_exp=exp,
                v_init=_int_array(m.v_init, own, where, "v_init"), dv=0, du=4095,
                neg_threshold=_int_array(m.neg_threshold, own, where, "neg_threshold") if signed else None,
                neg_reset=_int_array(m.neg_reset, own, where, "neg_reset") if signed else None,
                reset_subtract=True, compare_ge=m.compare == ">=", spiking=True, neg_value=1, pos_value=1,
                t_start=0, t_end=T, period=T, record=True, name=pop.name)


def _if_decode(node) -> tuple[np.ndarray, np.ndarray] | None:
    """(threshold, offset) integers an operator decodes a quantised IF population's +-1 codes with."""
    from ...simulator.transformer_fixed import if_operator_view
    if not isinstance(node, Population) or type(node.neuron) is not IF:
        return None
    th, off = if_operator_view(node)
    return th.numpy(), off.numpy()


def _decode(pop: Population, total: np.ndarray, T: int) -> np.ndarray:
    shape = tuple(pop.shape)
    scale = expand_channel(np.asarray(pop.decode_scale, dtype=np.float64), shape)
    offset = expand_channel(np.asarray(pop.decode_offset, dtype=np.float64), shape)
    if isinstance(pop.neuron, Readout):
        unit = expand_channel(np.asarray(pop.state_scale, dtype=np.float64), shape)
        return total.astype(np.float64) / T * unit * scale + offset
    return total.astype(np.float64) / T * scale + offset


def run_operators_lava(qnet: Network, x, timesteps: int) -> tuple[LavaResult, dict[str, np.ndarray]]:
    """Run all samples of ``x`` as one batch for ``timesteps`` steps; returns the result and every
    node's per-step values (T, N, *shape)."""
    inp = qnet.inputs()[0]
    pl = inp.payload
    x = np.asarray(x, dtype=np.float64)
    if tuple(x.shape[1:]) != tuple(inp.shape):
        raise ValueError(f"input {inp.name!r}: data shape {x.shape} does not match (N, *{tuple(inp.shape)})")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"input {inp.name!r}: data contains NaN or infinity")
    x_int = np.clip(np.floor(x / float(inp.scale) + 0.5), pl.min_level, pl.max_level).astype(np.int64)
    T = int(timesteps)
    with build(qnet, x_int, T) as lnet:
        lnet.run()
        values = lnet.values()
        finals = {p.name: np.asarray(lnet.procs[p.name].v.get()).astype(np.int64) for p in qnet.populations()}
        levels = {p.name: np.asarray(lnet.procs[p.name].s_hist.get()).astype(np.int64)
                  for p in qnet.populations() if isinstance(p.neuron, O.MultiThreshold)}
        levels.update({p.name: values[p.name] for p in qnet.populations() if type(p.neuron) is IF})
    n = x.shape[0]
    all_outputs = {}
    for o in qnet.outputs:
        pop = qnet[o]
        if type(pop.neuron) is IF:       # the codes decode with the integer tables operators use
            th, off = _if_decode(pop)
            total = (values[o] * th + off).sum(axis=0)
            all_outputs[o] = total.astype(np.float64) / T * float(np.asarray(pop.state_scale).reshape(-1)[0])
            continue
        total = finals[o] if isinstance(pop.neuron, Readout) else values[o].sum(axis=0)
        all_outputs[o] = _decode(pop, total, T)
    out = all_outputs[qnet.outputs[0]]
    spikes = {k: np.moveaxis(v, 0, 1) for k, v in levels.items()}           # (N, T, *shape) levels
    counts = {k: (v != 0).sum(axis=1).astype(np.int64) for k, v in spikes.items()}
    res = LavaResult(out, all_outputs, out.reshape(n, -1).argmax(axis=1), counts, spikes, finals, {}, T, T,
                     layer_report(qnet, T))
    return res, values


def verify_operators(qnet: Network, x, timesteps: int):
    """Simulator vs Lava on the same inputs: every node's payload at every step and the readouts'
    final sums, compared with equality (a :class:`VerifyReport`)."""
    from ...simulator.transformer_fixed import simulate_operators_fixed
    from .verify import Divergence, VerifyReport
    T = int(timesteps)
    check_network(qnet, T)
    trace: dict[str, np.ndarray] = {}
    sim, _ = simulate_operators_fixed(qnet, x, T, trace=trace)
    lava, values = run_operators_lava(qnet, x, T)
    order = [nd.name for nd in qnet.nodes() if isinstance(nd, (Population, Operator))]
    compared, mismatches, first, best = {}, {}, None, None
    checks = [(name, "payload", np.asarray(trace[name]), values[name], True) for name in order]
    checks += [(o, "v_final", np.asarray(sim.output_states[o]), lava.states[o], False)
               for o in qnet.outputs if o in (sim.output_states or {})]
    for name, qty, a, b, timed in checks:
        compared.setdefault(name, []).append(qty)
        if a.shape != b.shape:
            raise ValueError(f"node {name!r}: {qty} shapes differ: spikeport {a.shape}, Lava {b.shape}")
        bad = np.argwhere(a != b)
        mismatches[name] = mismatches.get(name, 0) + len(bad)
        if not len(bad):
            continue
        w = tuple(int(i) for i in bad[0])
        step, sample, neuron = (w[0], w[1], w[2:]) if timed else (None, w[0], w[1:])
        key = (step if step is not None else 10 ** 9, order.index(name))
        if best is None or key < best:
            best = key
            first = Divergence(sample, name, qty, step, neuron, int(a[w]), int(b[w]))
    ops = [op.name for op in qnet.operators()]
    notes = [f"{len(ops)} operators ran as Python processes ({NOT_NEURO}): " + ", ".join(ops)]
    return VerifyReport(first is None, first, compared, mismatches,
                        bool(np.array_equal(sim.predictions, lava.predictions)), lava, notes)


# ---------------------------------------------------------------------- export folder
EXPORT_FILES = ("plan.json", "qnet.h5", "load_lava.py")

_LOADER = '''"""Generated by spikeport: the quantised operator network beside this file, run in Lava.

    from load_lava import run
    result = run(x, )            # x: (N, *input shape) floats; one Lava run of T steps for the batch
"""
from pathlib import Path

from spikeport.backends.loihi2 import run_lava

HERE = Path(__file__).resolve().parent


def run(x):
    return run_lava(HERE, x)
'''


def export_operators(qnet: Network, out_dir, timesteps: int) -> Path:
    """Folder: ``plan.json`` (format, T, the per-node mapping report), ``qnet.h5`` (the network, sealed
    IR) and ``load_lava.py``; written atomically."""
    from ... import ir
    from .export import EXPORT_FILES as CNN_FILES
    rows = layer_report(qnet, timesteps)
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    allowed = set(EXPORT_FILES) | set(CNN_FILES)
    with atomic_dir(target, replaceable=lambda d: all(p.name in allowed for p in d.iterdir())) as out:
        ir.save(qnet, out / "qnet.h5")
        (out / "plan.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, "timesteps": int(timesteps),
                                                   "report": rows}, indent=1))
        (out / "load_lava.py").write_text(_LOADER)
    return target


def is_operator_export(folder) -> bool:
    path = Path(folder) / "plan.json"
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def load_operator_export(folder) -> tuple[Network, int]:
    from ... import ir
    folder = Path(folder)
    doc = json.loads((folder / "plan.json").read_text())
    if doc.get("version") != VERSION:
        raise ValueError(f"{folder / 'plan.json'}: version {doc.get('version')!r}, expected {VERSION}")
    return ir.load(folder / "qnet.h5"), int(doc["timesteps"])
