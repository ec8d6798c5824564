"""Export quantised IR networks to lava-dl netx HDF5 (lava-dl 0.6.0 ``lava.lib.dl.netx.hdf5``).

netx builds a chain: an input layer, then ``dense`` / ``conv`` blocks (synapse + CUBA neuron, i.e.
Lava's LIF: hard reset to 0, fires on ``v > vThMant << 6``, one threshold per layer, bias_exp 6)
with an optional ``flatten`` (PyTorch C, H, W order) before the first dense. It re-derives each
layer's weight exponent from the file's weights, so the file holds the *effective* integer weights
``w << weight_exp`` and the export reloads the file with netx and checks that netx's Dense/Conv
processes compute exactly the IR's ``(W @ s) << weight_exp``.

Biases: Lava's LIF adds its bias at every step, also during the pipeline fill before a layer's
first input. That is exactly ``LavaLIF`` (always active) with ``v_init = 0``, which ``convert
--opt preset=netx`` produces (its quantiser writes every bias as ``bias_mant << 6``, netx's fixed
bias_exp); such layers get a ``bias`` dataset of mantissas (per neuron for dense, per channel for
conv). A gated IF's bias would act before its t_start, so it is refused.

Anything else (reset by subtraction, '>=' compare, signed neurons, Readout, residual or multi-input
populations, biases of gated neurons or not in ``<< 6`` form, conv biases that vary within a channel, v_init, delays other
than 1) is refused with an error naming the layer and the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from ..ir import IF, Conv2d, Dense, Input, Network, Population, Readout, SpikePayload, expand_channel
from ..atomic import atomic_path
from ..errors import SpikeportError
from ..ir.neurons_cuba import CubaLIF


class NetxExportError(SpikeportError):
    """The network cannot be expressed as a netx HDF5 chain."""


def _chain(net: Network) -> list[tuple]:
    """[(projection, population), ...] from the single input to the single output."""
    if net.datapath is None:
        raise NetxExportError("network is not quantised: run spikeport.compiler.quantize first")
    ins = net.inputs()
    if len(ins) != 1 or net.operators():
        raise NetxExportError(f"netx needs one input and no operators; found {len(ins)} inputs, "
                              f"{len(net.operators())} operators")
    chain, node = [], ins[0].name
    while True:
        outs = net.outgoing(node)
        if not outs:
            break
        if len(outs) > 1:
            raise NetxExportError(f"node {node!r} feeds {len(outs)} projections ({[p.name for p in outs]}): "
                                  "netx holds only a chain (no residual or branching graphs)")
        proj = outs[0]
        pop = net[proj.target]
        if len(net.incoming(pop.name)) > 1:
            raise NetxExportError(f"population {pop.name!r} has {len(net.incoming(pop.name))} incoming projections: "
                                  "netx cannot sum several inputs (residual)")
        chain.append((proj, pop))
        node = pop.name
    if [pop.name for _, pop in chain[-1:]] != list(net.outputs):
        raise NetxExportError(f"netx output must be the end of the chain; outputs are {net.outputs}")
    return chain


NETX_BIAS_EXP = 6   # netx hdf5: bias_exp is 6 for every CUBA layer
APPROX_HINT = "export --approximate --data D.npz writes the nearest netx network and prints its measured accuracy"


def _neuron_group(grp: h5py.Group, pop: Population, T: int, steps_run: int, conv_layer: bool = False) -> np.ndarray | None:
    """Write the layer's ``neuron`` group; return the bias mantissas (or None) for the layer's ``bias``:
    one per neuron for a dense layer, one per channel for a conv layer (netx broadcasts it over H, W)."""
    where = f"population {pop.name!r}"
    n = pop.neuron
    cuba = isinstance(n, CubaLIF)
    if not isinstance(n, IF) and not cuba:
        raise NetxExportError(f"{where}: {type(n).__name__} has no netx neuron (CUBA is Lava's LIF, which fires)")
    problems = []
    if cuba and (np.any(np.asarray(n.current_bias)) or np.any(np.asarray(n.u_init))):
        problems.append("current_bias or u_init (netx CUBA has neither)")
    if n.reset != "zero":
        problems.append(f"reset by subtraction (netx CUBA resets to 0; {APPROX_HINT})")
    if n.compare != ">":
        problems.append(f"compare {n.compare!r} (netx CUBA fires on '>'; {APPROX_HINT})")
    if getattr(n, "neg_threshold", None) is not None:
        problems.append("signed spikes (netx CUBA is unsigned)")
    th = expand_channel(n.threshold, pop.shape).astype(np.int64)
    if np.unique(th).size != 1 or th.flat[0] % 64:
        problems.append(f"threshold must be one multiple of 64 per layer (netx vThMant), got {np.unique(th)[:4]}")
    bias = expand_channel(n.bias, pop.shape).astype(np.int64)
    ungated = bool(getattr(type(n), "always_active", False))
    if np.any(expand_channel(n.v_init, pop.shape)):
        problems.append("nonzero v_init (netx starts every neuron at v = 0)")
    if np.any(bias):
        if not ungated:
            problems.append("nonzero bias on a gated neuron (netx has no t_start gating: it would act before the "
                            f"layer's first input at step {pop.t_start}; convert with --opt preset=netx)")
        elif conv_layer and np.any(bias != bias.reshape(bias.shape[0], -1)[:, :1, None]):
            problems.append("conv bias not one value per channel (netx broadcasts a per-channel bias)")
        elif np.any(bias % (1 << NETX_BIAS_EXP)):
            problems.append(f"bias not a multiple of 2^{NETX_BIAS_EXP} (netx bias_exp is {NETX_BIAS_EXP}; quantise a "
                            "network converted with --opt preset=netx)")
    if pop.payload.kind != "binary":
        problems.append(f"payload {pop.payload.kind!r} (netx CUBA emits binary spikes)")
    if problems:
        raise NetxExportError(f"{where}: " + "; ".join(problems))
    g = grp.create_group("neuron")
    g.create_dataset("type", data=np.array([b"CUBA"]))
    g.create_dataset("vThMant", data=int(th.flat[0]) >> 6)
    # netx: du = iDecay - 1, dv = vDecay (hardware.md section 2); an IF keeps no current (du = 4095)
    g.create_dataset("iDecay", data=int(n.du) + 1 if cuba else 4096)
    g.create_dataset("vDecay", data=int(n.dv) if cuba else int(n.leak))
    g.create_dataset("refDelay", data=1)
    g.create_dataset("gradedSpike", data=False)
    if not np.any(bias):
        return None
    return (bias.reshape(bias.shape[0], -1)[:, 0] if conv_layer else bias.reshape(-1)) >> NETX_BIAS_EXP


def _effective(proj, where: str) -> np.ndarray:
    w = np.asarray(proj.weight).astype(np.float64) * 2.0 ** int(proj.weight_exp)
    if w.max(initial=0) > 254 or w.min(initial=0) < -256:
        raise NetxExportError(f"{where}: effective weight w << weight_exp spans [{w.min()}, {w.max()}]; netx clips "
                              "weights to [-256, 254] (compile --netx quantises with weight_exp 0)")
    return w


def export_netx(qnet: Network, path: str | Path, timesteps: int | None = None) -> Path:
    """Write ``qnet`` as a netx HDF5 file; reload it with netx and check its synapses; return the path.

    Written atomically: a refused layer or a failed check leaves no file behind."""
    chain = _chain(qnet)
    inp: Input = qnet.inputs()[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps_run = (timesteps or 1) + qnet.latency()
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            layers = f.create_group("layer")
            g = layers.create_group("0")
            g.create_dataset("type", data=np.array([b"input"]))
            g.create_dataset("shape", data=np.array(inp.shape, dtype=np.int64))
            idx, prev_shape = 1, tuple(inp.shape)
            for proj, pop in chain:
                where = f"projection {proj.name!r} ({proj.source} -> {proj.target})"
                if proj.delay != 1:
                    raise NetxExportError(f"{where}: delay {proj.delay}; every netx layer adds exactly 1 step")
                w = _effective(proj, where)
                if isinstance(proj, Dense):
                    if len(prev_shape) == 3:
                        layers.create_group(str(idx)).create_dataset("type", data=np.array([b"flatten"]))
                        idx += 1
                    g = layers.create_group(str(idx))
                    g.create_dataset("type", data=np.array([b"dense"]))
                    g.create_dataset("shape", data=np.array(pop.shape, dtype=np.int64))
                    g.create_dataset("weight", data=w)
                elif isinstance(proj, Conv2d):
                    if len(pop.shape) != 3 or proj.groups != 1 or proj.stride[0] != proj.stride[1] \
                            or proj.padding[0] != proj.padding[1] or proj.dilation[0] != proj.dilation[1]:
                        raise NetxExportError(f"{where}: netx conv export supports groups 1 and equal H/W stride, "
                                              f"padding and dilation; got {proj.stride}, {proj.padding}, {proj.dilation}")
                    g = layers.create_group(str(idx))
                    g.create_dataset("type", data=np.array([b"conv"]))
                    g.create_dataset("shape", data=np.array(pop.shape, dtype=np.int64))
                    g.create_dataset("weight", data=w)
                    for name in ("stride", "padding", "dilation"):
                        g.create_dataset(name, data=np.array(getattr(proj, name), dtype=np.int64))
                    g.create_dataset("groups", data=int(proj.groups))
                else:
                    raise NetxExportError(f"{where}: {type(proj).__name__} has no netx layer (dense, conv)")
                bias = _neuron_group(g, pop, timesteps or 1, steps_run, conv_layer=isinstance(proj, Conv2d))
                if bias is not None:
                    g.create_dataset("bias", data=bias)
                idx += 1
                prev_shape = tuple(pop.shape)
        _check_loaded(qnet, chain, tmp)  # netx reads the complete file before it gets its name
    return path


def _check_loaded(qnet: Network, chain: list[tuple], path: Path) -> None:
    """Load the file with netx and check each synapse realises ``(W @ s) << weight_exp`` exactly."""
    net = load_netx(path, qnet.inputs()[0])
    try:
        for (proj, _), layer in zip(chain, net.layers):
            syn = layer.synapse
            w = np.asarray(syn.weights.init if hasattr(syn, "weights") else syn.weight.init, dtype=np.float64)
            exp = int(syn.proc_params.get("weight_exp", 0)) if hasattr(syn, "proc_params") else 0
            if hasattr(syn, "weight_exp"):
                exp = int(np.asarray(syn.weight_exp.init).ravel()[0])
            want = _effective(proj, proj.name)
            if isinstance(proj, Conv2d):
                want = want[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)
            got = w * 2.0 ** exp
            if got.shape != want.shape or not np.array_equal(got, want):
                raise NetxExportError(f"projection {proj.name!r}: netx re-quantises its weights (weight_exp {exp}) and "
                                      "would not compute the IR's values exactly")
    finally:
        del net


def load_netx(path: str | Path, inp: Input | None = None):
    """``lava.lib.dl.netx.hdf5.Network`` for ``path`` (graded input of the IR input's payload bits)."""
    from .loihi2 import compat
    netx = compat.import_netx()
    bits = max(int(inp.payload.bits), 1) if inp is not None else 8
    return netx.hdf5.Network(net_config=str(path), input_message_bits=bits)


def run_netx(path: str | Path, qnet: Network, x, timesteps: int) -> dict[str, np.ndarray]:
    """Run a netx file in Lava fixed_pt, one sample at a time; per IR population (N, steps, *shape) spikes.

    The file is rebuilt per sample (netx blocks have no reset). Inputs use the IR input's rule.
    """
    from .loihi2 import compat
    compat.install()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from .loihi2.plan import from_lava, lava_shape, to_lava
    from .loihi2.runner import input_frames, input_integers
    from .loihi2.plan import InputPlan
    chain = _chain(qnet)
    inp = qnet.inputs()[0]
    p = inp.payload
    iplan = InputPlan(inp.name, tuple(inp.shape), lava_shape(tuple(inp.shape)), inp.coding, float(inp.scale),
                      int(p.min_level), int(p.max_level), int(p.bits))
    steps = timesteps + qnet.latency()
    x = np.asarray(x)
    out = {pop.name: [] for _, pop in chain}
    for i in range(x.shape[0]):
        frames = input_frames(iplan, input_integers(iplan, x[i]), timesteps, steps)
        net = load_netx(path, inp)
        if tuple(net.inp.shape) == (int(np.prod(iplan.shape)),):   # netx drops input+flatten before a first dense
            data = [np.asarray(fr).reshape(-1) for fr in frames]      # and takes the PyTorch (C, H, W) order
        else:
            data = [to_lava(fr, iplan.shape) for fr in frames]
        src = Source(data=np.stack(data, axis=-1).astype(np.int32))
        src.s_out.connect(net.inp)
        sinks = []
        for layer in net.layers:
            sink = Sink(shape=layer.out.shape, buffer=steps)
            layer.out.connect(sink.a_in)
            sinks.append(sink)
        try:
            net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            for (_, pop), sink in zip(chain, sinks):
                s = np.moveaxis(np.asarray(sink.data.get()), -1, 0)
                out[pop.name].append(from_lava(s, tuple(pop.shape), lead=1).astype(np.int8))
        finally:
            net.stop()
    return {k: np.stack(v) for k, v in out.items()}


# ------------------------------------------------------------------ approximations, only on request
def _spiking_readout(qnet: Network, pop: Population, x, timesteps: int) -> tuple[object, str]:
    """A Readout output as a spiking LavaLIF layer read by its counts: theta (a multiple of 64) = the
    99.9th percentile over ``x`` of the Readout's positive mean input per step, so it fires at most
    about once a step."""
    from ..ir.neurons_extra import LavaLIF
    from ..simulator import simulate
    v = simulate(qnet, x, timesteps, record_voltages=True).voltages[pop.name][:, pop.t_start + timesteps - 1]
    rate = np.maximum(np.asarray(v, dtype=np.float64) - expand_channel(np.asarray(pop.neuron.v_init), pop.shape), 0) / timesteps
    theta = max(64, int(np.ceil(np.percentile(rate, 99.9) / 64.0)) * 64)
    m = pop.neuron
    return (LavaLIF(threshold=np.array(theta), bias=np.asarray(m.bias), v_init=np.zeros_like(np.asarray(m.v_init))),
            f"Readout -> spiking LIF read by its spike counts, threshold {theta} (99.9th percentile of its mean input "
            f"per step on the data)")


def approximate_for_netx(qnet: Network, x=None, timesteps: int | None = None) -> tuple[Network, list[str]]:
    """The nearest network netx holds: every IF / CubaLIF layer resets to zero and fires on '>' (netx's
    CUBA) and runs at every step (also a biased layer during its pipeline fill, from v = 0), as netx
    runs it; given data ``x``, a Readout output becomes a spiking layer read by its spike counts
    (:func:`_spiking_readout`). Returns it and the changes made.

    Not exact ('>=' and '>' differ when v equals the threshold; a zero reset drops the residual that a
    subtraction keeps), so it is written only on request, with its accuracy measured
    (:func:`measure_approximation`)."""
    from ..compiler.ungate import TWINS, ungate
    out, changes = qnet.copy(), []
    for pop in out.populations():
        m = pop.neuron
        if isinstance(m, Readout) and x is not None and pop.name in out.outputs:
            pop.neuron, why = _spiking_readout(qnet, pop, x, timesteps)
            pop.payload = SpikePayload()
            changes.append(f"population {pop.name!r}: {why}")
            continue
        if not isinstance(m, (IF, CubaLIF)) or getattr(m, "neg_threshold", None) is not None:
            continue
        made = []
        if m.reset != "zero":
            made.append(f"reset {m.reset!r} -> 'zero'")
            m.reset = "zero"
        if m.compare != ">":
            made.append(f"compare {m.compare!r} -> '>'")
            m.compare = ">"
        if isinstance(m, CubaLIF) and m.reset_timing != "fire":
            m.reset_timing = "fire"
        if made:
            changes.append(f"population {pop.name!r}: " + ", ".join(made))
    out, gated = ungate(out)
    for note in gated:        # netx runs them ungated anyway: the bias acts during the fill, v starts at 0
        pop = out[note.population]
        m, twin = pop.neuron, TWINS.get(type(pop.neuron))
        if twin is None or getattr(m, "neg_threshold", None) is not None:
            continue
        made = [f"runs at every step (was gated: {note.reason})"]
        if np.any(np.asarray(m.v_init)):
            made.append("v_init -> 0")
            m.v_init = np.zeros_like(np.asarray(m.v_init))
        pop.neuron = twin(**{f.name: getattr(m, f.name) for f in fields(m) if f.init})
        changes.append(f"population {pop.name!r}: " + ", ".join(made))
    out.validate("netx approximation")
    return out, changes


def measure_approximation(qnet: Network, approx: Network, path: str | Path, x, y, timesteps: int,
                          netx_samples: int = 2) -> dict:
    """Accuracy of the approximate network against spikeport's simulator of the original on ``x``, the
    per-layer spike agreement inside each layer's window, and a check that lava-dl's netx gives the
    approximate network's spikes at every step on the first ``netx_samples`` samples."""
    from ..simulator import simulate
    ref = simulate(qnet, x, timesteps, record_spikes=True)
    app = simulate(approx, x, timesteps, record_spikes=True)
    agree = {}
    for pop in qnet.populations():
        if pop.name in ref.spikes and pop.name in app.spikes:
            w = slice(pop.t_start, pop.t_start + timesteps)
            agree[pop.name] = float(np.mean(ref.spikes[pop.name][:, w] == app.spikes[pop.name][:, w]))
    k = min(netx_samples, len(x))
    got = run_netx(path, approx, x[:k], timesteps)
    netx_equal = all(np.array_equal(got[name], app.spikes[name][:k]) for name in got)
    out = {"spike_agreement": agree, "netx_equals_approximation": bool(netx_equal), "netx_samples": k,
           "predictions_equal": float(np.mean(np.asarray(ref.predictions) == np.asarray(app.predictions)))}
    if y is not None:
        out.update(accuracy_simulator=ref.accuracy(y), accuracy_netx=app.accuracy(y))
        out["accuracy_difference"] = out["accuracy_netx"] - out["accuracy_simulator"]
    return out


# ------------------------------------------------------------------ verification against lava-dl
@dataclass
class NetxVerifyReport:
    """lava-dl netx vs spikeport's simulator, spike for spike. Ungated (always-active) layers are
    compared at every step of the run, gated ones inside their window (where the IR defines them)."""

    identical: bool
    compared: int                                   # spike entries compared
    mismatches: dict[str, int] = field(default_factory=dict)
    every_step: list[str] = field(default_factory=list)
    windowed: list[str] = field(default_factory=list)
    first_divergence: str | None = None

    def __str__(self) -> str:
        where = (f"every step: {', '.join(self.every_step) or '-'}; inside the window only (gated, see compile "
                 f"--ungated): {', '.join(self.windowed) or '-'}")
        if self.identical:
            return f"identical: {self.compared} spike entries of lava-dl netx equal spikeport's ({where})"
        return (f"DIFFERENT: {sum(self.mismatches.values())} of {self.compared} spike entries differ "
                f"({self.mismatches}); first: {self.first_divergence} ({where})")


def verify_netx(qnet: Network, x, timesteps: int) -> NetxVerifyReport:
    """Export ``qnet`` to netx (a temporary file), run it in lava-dl and compare every spike with
    spikeport's bit-accurate simulator."""
    import tempfile
    from ..simulator import simulate
    with tempfile.TemporaryDirectory(prefix="spikeport-netx-") as tmp:
        path = export_netx(qnet, Path(tmp) / "net.h5", timesteps)
        got = run_netx(path, qnet, x, timesteps)
    sim = simulate(qnet, x, timesteps, record_spikes=True)
    rep = NetxVerifyReport(identical=True, compared=0)
    for name, spikes in got.items():
        pop = qnet[name]
        if getattr(type(pop.neuron), "always_active", False):
            w = slice(0, spikes.shape[1])
            rep.every_step.append(name)
        else:
            w = slice(pop.t_start, pop.t_start + timesteps)
            rep.windowed.append(name)
        a, b = spikes[:, w], np.asarray(sim.spikes[name])[:, w]
        bad = a != b
        rep.compared += int(a.size)
        rep.mismatches[name] = int(bad.sum())
        if bad.any() and rep.first_divergence is None:
            i = np.argwhere(bad)[0]
            rep.first_divergence = (f"population {name!r} sample {i[0]} step {w.start + i[1]} neuron {tuple(i[2:])}: "
                                    f"netx {a[tuple(i)]}, spikeport {b[tuple(i)]}")
    rep.identical = not any(rep.mismatches.values())
    return rep
