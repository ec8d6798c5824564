"""Regenerate tests/data/nir/: NIR files written by peer SNN libraries, fixed input spikes, and the
peers' own output spikes for them (tests/test_nir_peers.py checks spikeport against these).

Run with the peers' virtual environment, never the main one (peers are not spikeport dependencies)::

    python3 -m venv --system-site-packages /work/wt/peers-venv      # sees the main env's torch 2.13
    /work/wt/peers-venv/bin/pip install --no-deps snntorch==1.0.0 norse==1.1.0 sinabs==3.1.3 pbr==7.1.3 \
        spikingjelly==2.0.0 loguru nirtorch==2.6 nir==1.0.8 neurobench==2.3.0 tqdm      # never another torch
    PYTHONPATH=<spikeport on the path> /work/wt/peers-venv/bin/python scripts/nir_peer_fixtures.py [peer ...]

Peers: snntorch, norse, sinabs, spikingjelly (their NIR files and spikes), spikeport (spikeport's own
export run by SpikingJelly), roundtrip (each peer reads its own file back with its own importer and
runs it: ``peer_round_trips.npz`` and ``manifest[case]["peer_round_trip"]``). The snnTorch cases also record NeuroBench 2.3.0's SynapticOperations,
ActivationSparsity and Footprint (``manifest[case]["neurobench"]``). Versions used are in the manifest.

Every case writes ``<peer>_<case>.nir`` and ``<peer>_<case>.npz`` (x: (N, T, *input shape) spikes;
``spk__<layer>``: the peer's spikes per recorded neuron layer, (N, T, *shape), named after the NIR
node of that layer; ``versions``). ``manifest.json`` lists the cases, layers and versions.
For zero-reset IF/LIF networks spikeport exports itself (``spikeport_*``), a peer imports that NIR
file and runs it; those spikes are recorded too (``*_in_<peer>.npz``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir"
N, T = 3, 12
torch.manual_seed(0)


def _spikes(rng, shape, p=0.3) -> np.ndarray:
    return (rng.random((N, T) + tuple(shape)) < p).astype(np.float32)


def _save(name: str, graph, x: np.ndarray, layers: dict[str, np.ndarray], versions: dict, manifest: dict, note: str = "",
          write: bool = True) -> None:
    import nir
    if write:
        nir.write(OUT / f"{name}.nir", graph)
    arrays = {"x": x}
    arrays.update({f"spk__{k}": np.asarray(v, dtype=np.float32) for k, v in layers.items()})
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    manifest[name] = {"layers": sorted(layers), "versions": versions, "N": N, "T": T, "note": note,
                      "spikes": {k: int(np.asarray(v).sum()) for k, v in layers.items()}}
    print(f"{name}: " + ", ".join(f"{k} {int(np.asarray(v).sum())} spikes" for k, v in layers.items()))


def _layer_names(graph, types: tuple[str, ...]) -> list[str]:
    """NIR node names of neuron layers in topological (edge) order."""
    order, seen = [], set()
    succ = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    stack = [k for k, v in graph.nodes.items() if type(v).__name__ == "Input"]
    while stack:
        k = stack.pop(0)
        if k in seen:
            continue
        seen.add(k)
        order.append(k)
        stack += succ.get(k, [])
    return [k for k in order if type(graph.nodes[k]).__name__ in types]


# --------------------------------------------------------------------------------- neurobench
def neurobench_counts(net, x: np.ndarray) -> dict:
    """NeuroBench 2.3's own SynapticOperations, ActivationSparsity and Footprint of an snnTorch model
    on the fixture's input spikes, all samples in one batch (one call per step)."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel
    import snntorch as snn

    class Stepper(torch.nn.Module):
        """Runs the Sequential over the time axis (SNNTorchModel's custom_forward: (T, B, ...) out)."""

        def __init__(self, seq):
            super().__init__()
            self.seq = seq

        def forward(self, data):
            for m in self.seq.modules():        # fresh state (utils.reset only reaches registered instances)
                if isinstance(m, snn.SpikingNeuron):
                    m.reset_mem()
            out = [self.seq(data[:, t]) for t in range(data.shape[1])]
            return torch.stack([o[0] if isinstance(o, tuple) else o for o in out])

    stepper = Stepper(net)
    model = SNNTorchModel(stepper, custom_forward=True)
    ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.zeros(x.shape[0]))
    data = torch.utils.data.DataLoader(ds, batch_size=x.shape[0], shuffle=False)
    bench = Benchmark(model, data, [], [], [[Footprint], [SynapticOperations, ActivationSparsity]])
    res = bench.run()
    with torch.no_grad():     # the benchmarked run produced the recorded spikes (last layer)
        check = stepper(torch.as_tensor(x)).transpose(0, 1).numpy()
    out = {"last_layer_spikes": int(check.sum()), "footprint": int(res["Footprint"]), "activation_sparsity": float(res["ActivationSparsity"])}
    out.update({k: float(v) for k, v in res["SynapticOperations"].items()})
    return out


# ----------------------------------------------------------------------------------- snntorch
def snntorch_cases(manifest: dict) -> None:
    import snntorch as snn
    from snntorch import utils as sutils
    from snntorch.export_nir import export_to_nir
    versions = {"snntorch": snn.__version__, "torch": torch.__version__}
    rng = np.random.default_rng(1)

    def run(net, x):
        """Step the network T times; record every Leaky/Synaptic layer's spikes with hooks."""
        rec = {}
        mods = [(i, m) for i, m in enumerate(net) if isinstance(m, (snn.Leaky, snn.Synaptic))]
        outs = {i: [] for i, _ in mods}
        hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: outs[i].append(out[0] if isinstance(out, tuple) else out))
                 for i, m in mods]
        with torch.no_grad():
            sutils.reset(net)
            for t in range(T):
                net(torch.as_tensor(x[:, t]))
        for h in hooks:
            h.remove()
        for i, _ in mods:
            rec[str(i)] = torch.stack(outs[i], dim=1).numpy()
        return rec

    full = lambda shape, v: torch.full(shape, v)  # noqa: E731  (snntorch's export needs per-neuron parameters)
    mlp = torch.nn.Sequential(torch.nn.Linear(12, 10), snn.Leaky(beta=full((10,), 0.9), threshold=full((10,), 1.0), init_hidden=True),
                              torch.nn.Linear(10, 4), snn.Leaky(beta=full((4,), 0.8), threshold=full((4,), 0.5), init_hidden=True))
    with torch.no_grad():
        mlp[0].weight.mul_(3.0)
        mlp[2].weight.mul_(3.0)
    x = _spikes(rng, (12,))
    rec = run(mlp, x)
    g = export_to_nir(mlp, torch.as_tensor(x[:, 0]), ignore_dims=[0])
    _save("snntorch_mlp", g, x, rec, versions, manifest, "Linear+bias -> Leaky(subtract) -> Linear -> Leaky")
    manifest["snntorch_mlp"]["neurobench"] = neurobench_counts(mlp, x)

    syn = torch.nn.Sequential(torch.nn.Linear(12, 10, bias=False), snn.Synaptic(alpha=full((10,), 0.7), beta=full((10,), 0.9),
                                                                                      threshold=full((10,), 1.0), init_hidden=True),
                              torch.nn.Linear(10, 4, bias=False), snn.Synaptic(alpha=full((4,), 0.5), beta=full((4,), 0.8),
                                                                                     threshold=full((4,), 1.0), init_hidden=True))
    with torch.no_grad():
        syn[0].weight.mul_(2.0)
        syn[2].weight.mul_(2.0)
    x = _spikes(rng, (12,))
    rec = run(syn, x)
    g = export_to_nir(syn, torch.as_tensor(x[:, 0]), ignore_dims=[0])
    _save("snntorch_cuba", g, x, rec, versions, manifest, "Synaptic (CubaLIF) MLP without biases")
    manifest["snntorch_cuba"]["neurobench"] = neurobench_counts(syn, x)

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1),
                               snn.Leaky(beta=full((4, 8, 8), 0.9), threshold=full((4, 8, 8), 1.0), init_hidden=True),
                               torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5),
                               snn.Leaky(beta=full((5,), 0.9), threshold=full((5,), 1.0), init_hidden=True))
    with torch.no_grad():
        conv[0].weight.mul_(3.0)
        conv[4].weight.mul_(4.0)
    x = _spikes(rng, (2, 8, 8))
    rec = run(conv, x)
    g = export_to_nir(conv, torch.as_tensor(x[:, 0]), ignore_dims=[0])
    _save("snntorch_conv", g, x, rec, versions, manifest, "Conv2d -> Leaky -> AvgPool2d -> Flatten -> Linear -> Leaky")

    conv2 = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1),
                                snn.Leaky(beta=full((4, 8, 8), 0.9), threshold=full((4, 8, 8), 1.0), init_hidden=True),
                                torch.nn.Conv2d(4, 4, 3, stride=2, padding=1),
                                snn.Leaky(beta=full((4, 4, 4), 0.8), threshold=full((4, 4, 4), 1.0), init_hidden=True),
                                torch.nn.Flatten(), torch.nn.Linear(64, 5),
                                snn.Leaky(beta=full((5,), 0.9), threshold=full((5,), 1.0), init_hidden=True))
    with torch.no_grad():
        conv2[0].weight.mul_(3.0)
        conv2[2].weight.mul_(3.0)
        conv2[5].weight.mul_(4.0)
        conv2[0].weight[0, 0, 0, 0] = 0.0           # a zero weight: NeuroBench counts only nonzero weights
    x = _spikes(rng, (2, 8, 8))
    rec = run(conv2, x)
    g = export_to_nir(conv2, torch.as_tensor(x[:, 0]), ignore_dims=[0])
    _save("snntorch_conv2", g, x, rec, versions, manifest, "Conv2d -> Leaky -> Conv2d(stride 2) -> Leaky -> Flatten -> Linear -> Leaky")
    manifest["snntorch_conv2"]["neurobench"] = neurobench_counts(conv2, x)


# -------------------------------------------------------------------------------------- norse
def _record_stateful(net, x, kinds) -> dict[str, np.ndarray]:
    """Step a norse SequentialState T times; record the spikes of every module of ``kinds``."""
    mods = [(name, m) for name, m in net.named_children() if isinstance(m, kinds)]
    outs = {name: [] for name, _ in mods}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: outs[n].append(out[0])) for name, m in mods]
    state = None
    with torch.no_grad():
        for t in range(T):
            _, state = net(torch.as_tensor(x[:, t]), state)
    for h in hooks:
        h.remove()
    return {name: torch.stack(v, dim=1).numpy() for name, v in outs.items()}


def _writable(graph, in_shape, out_shape, conv_inputs=None):
    """norse 1.1.0's (and sinabs 3.1.3's) to_nir leaves torch tensors in node fields and untyped Input/Output nodes, which
    nir.write cannot store: turn tensors into numpy arrays and give Input/Output their shapes.
    Nothing else is changed."""
    import nir
    for k, node in list(graph.nodes.items()):
        name = type(node).__name__
        if name == "Input":
            graph.nodes[k] = nir.Input(input_type={"input": np.array(in_shape)})
        elif name == "Output":
            graph.nodes[k] = nir.Output(output_type={"output": np.array(out_shape)})
        else:
            if name == "Conv2d" and node.input_shape is None:     # the conv's (H, W), as nir.Conv2d wants
                node.input_shape = tuple(conv_inputs[k])
            if name == "Flatten" and node.input_type.get("input") is None:   # the flatten's (C, H, W)
                graph.nodes[k] = node = nir.Flatten(input_type={"input": np.array(conv_inputs[k])},
                                                    start_dim=node.start_dim, end_dim=node.end_dim)
            for a, v in list(vars(node).items()):
                if isinstance(v, torch.Tensor):
                    setattr(node, a, v.detach().cpu().numpy())
    return graph


def norse_cases(manifest: dict) -> None:
    import norse
    import norse.torch as nt
    from norse.torch.utils.export_nir import to_nir
    versions = {"norse": getattr(norse, "__version__", "1.1.0"), "torch": torch.__version__}
    rng = np.random.default_rng(2)
    kinds = (nt.LIFBoxCell, nt.LIFCell, nt.IAFCell)
    # per-neuron parameter tensors: nir.write cannot store norse's 0-d parameters (gzip on scalars)
    f = lambda n, v: torch.full((n,) if isinstance(n, int) else n, v)  # noqa: E731
    box = lambda n: nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=f(n, 200.0), v_th=f(n, 0.3), v_leak=f(n, 0.0),  # noqa: E731
                                                      v_reset=f(n, 0.0)))
    mlp = nt.SequentialState(torch.nn.Linear(12, 10), box(10), torch.nn.Linear(10, 4), box(4))
    with torch.no_grad():
        mlp[0].weight.mul_(3.0)
        mlp[2].weight.mul_(6.0)
    x = _spikes(rng, (12,))
    rec = _record_stateful(mlp, x, kinds)
    _save("norse_mlp", _writable(to_nir(mlp, torch.as_tensor(x[:1, 0])), (12,), (4,)), x, rec, versions, manifest,
          "Linear+bias -> LIFBoxCell (tau_mem_inv 200, dt 1e-3) -> Linear -> LIFBoxCell")

    cuba = lambda n: nt.LIFCell(nt.LIFParameters(tau_syn_inv=f(n, 300.0), tau_mem_inv=f(n, 150.0), v_th=f(n, 0.2),  # noqa: E731
                                                 v_leak=f(n, 0.0), v_reset=f(n, 0.0)))
    mlp = nt.SequentialState(torch.nn.Linear(12, 10), cuba(10), torch.nn.Linear(10, 4), cuba(4))
    with torch.no_grad():
        mlp[0].weight.mul_(3.0)
        mlp[2].weight.mul_(3.0)
    x = _spikes(rng, (12,))
    rec = _record_stateful(mlp, x, kinds)
    _save("norse_cuba", _writable(to_nir(mlp, torch.as_tensor(x[:1, 0])), (12,), (4,)), x, rec, versions, manifest,
          "Linear+bias -> LIFCell (CubaLIF) -> Linear -> LIFCell")

    iaf = lambda n: nt.IAFCell(nt.IAFParameters(v_th=f(n, 1.0), v_reset=f(n, 0.0)))  # noqa: E731
    conv = nt.SequentialState(torch.nn.Conv2d(2, 4, 3, padding=1), iaf((4, 8, 8)), torch.nn.Conv2d(4, 3, 3, stride=2),
                              iaf((3, 3, 3)))
    with torch.no_grad():
        conv[0].weight.mul_(3.0)
        conv[2].weight.mul_(3.0)
    x = _spikes(rng, (2, 8, 8))
    rec = _record_stateful(conv, x, kinds)
    _save("norse_conv", _writable(to_nir(conv, torch.as_tensor(x[:1, 0])), (2, 8, 8), (3, 3, 3), {"0": (8, 8), "2": (8, 8)}), x, rec, versions, manifest,
          "Conv2d -> IAFCell -> Conv2d(stride 2) -> IAFCell")


# ------------------------------------------------------------------------------------- sinabs
def sinabs_cases(manifest: dict) -> None:
    import sinabs
    import sinabs.layers as sl
    from sinabs.nir import to_nir
    versions = {"sinabs": sinabs.__version__, "torch": torch.__version__}
    rng = np.random.default_rng(3)

    def run(net, x, time_first_batch: bool):
        """sinabs layers take the whole spike train; record every IAF layer's output with hooks."""
        mods = [(name, m) for name, m in net.named_children() if isinstance(m, (sl.IAF, sl.IAFSqueeze))]
        outs = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: outs.__setitem__(n, out.detach())) for name, m in mods]
        with torch.no_grad():
            for m in net.modules():
                if hasattr(m, "reset_states"):
                    m.reset_states()
            xin = torch.as_tensor(x)
            net(xin.reshape((-1,) + tuple(x.shape[2:])) if time_first_batch else xin)
        for h in hooks:
            h.remove()
        return {n: v.reshape((N, T) + tuple(v.shape[1:] if time_first_batch else v.shape[2:])).numpy() for n, v in outs.items()}

    mlp = torch.nn.Sequential(torch.nn.Linear(12, 10), sl.IAF(spike_threshold=1.0), torch.nn.Linear(10, 4),
                              sl.IAF(spike_threshold=0.5))
    with torch.no_grad():
        mlp[0].weight.mul_(4.0)
        mlp[2].weight.mul_(4.0)
    x = _spikes(rng, (12,))
    rec = run(mlp, x, time_first_batch=False)
    g = _writable(to_nir(mlp, torch.as_tensor(x[:1])), (12,), (4,))
    _save("sinabs_mlp", g, x, rec, versions, manifest, "Linear+bias -> IAF (multi-spike, subtract) -> Linear -> IAF")

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=N),
                               sl.SumPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5, bias=False),
                               sl.IAFSqueeze(batch_size=N))
    with torch.no_grad():
        conv[0].weight.mul_(4.0)
        conv[4].weight.mul_(2.0)
    x = _spikes(rng, (2, 8, 8))
    xb = np.ascontiguousarray(x)      # (N, T, ...) flattened to (N*T, ...) by IAFSqueeze's batch_size
    rec = run(conv, xb, time_first_batch=True)
    g = _writable(to_nir(conv, torch.as_tensor(x.reshape((-1, 2, 8, 8)))), (2, 8, 8), (5,), {"0": (8, 8), "3": (4, 4, 4)})
    _save("sinabs_conv", g, x, rec, versions, manifest, "Conv2d -> IAFSqueeze -> SumPool2d -> Flatten -> Linear -> IAFSqueeze")


# ------------------------------------------------------------------------------- spikingjelly
def spikingjelly_cases(manifest: dict) -> None:
    import spikingjelly
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    versions = {"spikingjelly": getattr(spikingjelly, "__version__", "2.0.0"), "torch": torch.__version__}
    rng = np.random.default_rng(4)

    def run(net, x):
        mods = [(name, m) for name, m in net.named_children() if isinstance(m, neuron.BaseNode)]
        outs = {name: [] for name, _ in mods}
        hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: outs[n].append(out.detach())) for name, m in mods]
        with torch.no_grad():
            functional.reset_net(net)
            for t in range(T):
                net(torch.as_tensor(x[:, t]))
        for h in hooks:
            h.remove()
        return {f"_{n}": torch.stack(v, dim=1).numpy() for n, v in outs.items()}   # its NIR nodes are "_<index>"

    mlp = torch.nn.Sequential(layer.Linear(12, 10), neuron.LIFNode(tau=2.0, v_threshold=1.0),
                              layer.Linear(10, 4), neuron.IFNode(v_threshold=0.5))
    with torch.no_grad():
        mlp[0].weight.mul_(4.0)
        mlp[2].weight.mul_(3.0)
    x = _spikes(rng, (12,))
    rec = run(mlp, x)
    functional.reset_net(mlp)
    g = export_to_nir(mlp, torch.as_tensor(x[:, 0]), dt=1e-4)
    _save("spikingjelly_mlp", g, x, rec, versions, manifest, "Linear+bias -> LIFNode(tau 2, hard reset) -> Linear -> IFNode")

    conv = torch.nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), neuron.IFNode(v_threshold=1.0), layer.AvgPool2d(2),
                               layer.Flatten(), layer.Linear(64, 5), neuron.LIFNode(tau=4.0, decay_input=False))
    with torch.no_grad():
        conv[0].weight.mul_(3.0)
        conv[4].weight.mul_(3.0)
    x = _spikes(rng, (2, 8, 8))
    rec = run(conv, x)
    functional.reset_net(conv)
    g = export_to_nir(conv, torch.as_tensor(x[:, 0]), dt=1e-4)
    _save("spikingjelly_conv", g, x, rec, versions, manifest,
          "Conv2d -> IFNode -> AvgPool2d -> Flatten -> Linear -> LIFNode(decay_input=False)")


# ------------------------------------------------------- spikeport's own export, run by a peer
def spikeport_export_cases(manifest: dict) -> None:
    """Zero-reset IF/LIF networks built in spikeport, exported with spikeport's NIR writer under the
    spikingjelly convention (fires on v >= threshold, hard reset, dt = 1e-4), imported and run by
    SpikingJelly's own ``import_from_nir``; its spikes are recorded."""
    import spikingjelly
    from spikingjelly.activation_based.nir_exchange import import_from_nir
    from spikeport.backends.nir_export import export_nir
    from spikeport.ir import IF, Conv2d, Dense, Input, Network, Population
    versions = {"spikingjelly": getattr(spikingjelly, "__version__", "2.0.0"), "torch": torch.__version__}
    rng = np.random.default_rng(6)

    def build(conv: bool) -> tuple[Network, np.ndarray]:
        net = Network()
        shape = (2, 6, 6) if conv else (12,)
        net.add(Input("x", shape=shape, coding="spikes"))
        if conv:
            c = Conv2d("c1", source="x", target="h1", weight=rng.normal(0, 1.2, (3, 2, 3, 3)).astype(np.float32).astype(np.float64),
                       padding=(1, 1))
            h1 = c.out_shape(shape)
        else:
            h1 = (10,)
            c = Dense("c1", source="x", target="h1", weight=rng.normal(0, 1.2, (10, 12)).astype(np.float32).astype(np.float64))
        net.add(Population("h1", shape=h1, neuron=IF(threshold=np.array(1.0), reset="zero", compare=">=")))
        net.add(c)
        n1 = int(np.prod(h1))
        net.add(Population("h2", shape=(5,), neuron=IF(threshold=np.array(0.75), reset="zero", compare=">=", leak=0.125)))
        net.add(Dense("d2", source="h1", target="h2", weight=rng.normal(0, 1.0, (5, n1)).astype(np.float32).astype(np.float64)))
        net.outputs = ["h2"]
        return net, _spikes(rng, shape, 0.4)

    for case, conv in (("mlp", False), ("conv", True)):
        net, x = build(conv)
        name = f"spikeport_{case}_in_spikingjelly"
        path, dropped = export_nir(net, OUT / f"{name}.nir", convention="spikingjelly")
        assert not dropped, dropped
        model = import_from_nir(str(path), dt=1e-4)
        outs: dict[str, list] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: outs.setdefault(n, []).append(out[0].detach()))
                 for n, m in model.named_modules() if n in ("h1", "h2")]
        state = None
        with torch.no_grad():
            for t in range(T):
                _, state = model(torch.as_tensor(x[:, t]), state)
        for h in hooks:
            h.remove()
        rec = {n: torch.stack(v, dim=1).numpy() for n, v in outs.items()}
        _save(name, _read(path), x, rec, versions, manifest, "spikeport IF (>=, zero reset) + LIF (leak 1/8) exported to NIR, "
              "run by spikingjelly.import_from_nir", write=False)
        manifest[name].update(convention="spikingjelly", peer="spikingjelly")


def _read(path):
    import nir
    return nir.read(path)


# ------------------------------------------------- each peer's own NIR round trip (its importer)
def _step_run(net, x: np.ndarray) -> np.ndarray:
    """Step an imported (nirtorch) module T times with its returned state; its output per step."""
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            r = net(torch.as_tensor(x[:, t])) if state is None else net(torch.as_tensor(x[:, t]), state)
            out, state = r if isinstance(r, tuple) else (r, None)
            outs.append(out)
    return torch.stack(outs, 1).numpy()


def _peer_importer(peer: str):
    """x (N, T, ...) -> the peer's output spikes after reading the peer's own NIR file with the peer's importer."""
    if peer == "snntorch":
        from snntorch.import_nir import import_from_nir

        def run(g, x):   # one sample at a time: snnTorch's imported Flatten flattens the batch axis too
            return np.concatenate([_step_run(import_from_nir(g), x[i:i + 1]) for i in range(x.shape[0])])
    elif peer == "norse":
        import norse.torch as nt

        def run(g, x):
            return _step_run(nt.from_nir(g, dt=1e-3), x)
    elif peer == "sinabs":
        from sinabs.nir import from_nir

        def run(g, x):   # sinabs layers take the whole train: (N, T, n) or, for conv, (N*T, C, H, W)
            with torch.no_grad():
                xin = torch.as_tensor(x)
                out = from_nir(g, batch_size=x.shape[0])(xin.reshape((-1,) + x.shape[2:]) if x.ndim > 3 else xin)
            return (out[0] if isinstance(out, tuple) else out).numpy()
    else:
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.nir_exchange import import_from_nir

        def run(g, x):
            net = import_from_nir(g, dt=1e-4)
            functional.reset_net(net)
            return _step_run(net, x)
    return run


def peer_round_trips(manifest: dict) -> None:
    """Each peer reads back its own NIR file (recorded above) with its own importer and runs the same
    input spikes; its output-layer spikes go to ``peer_round_trips.npz`` (``<case>``) and
    ``manifest[case]["peer_round_trip"]`` says whether they equal the peer's original spikes (or
    the import error). Nothing is rewritten in the cases themselves."""
    import nir
    arrays = {}
    for case in sorted(k for k in manifest if not k.startswith("spikeport_")):
        peer, layer = case.split("_")[0], manifest[case]["layers"][-1]
        d = np.load(OUT / f"{case}.npz")
        want = d[f"spk__{layer}"]
        try:
            got = np.asarray(_peer_importer(peer)(nir.read(OUT / f"{case}.nir"), d["x"]), dtype=np.float32).reshape(want.shape)
        except Exception as e:   # the peer's own importer fails on its own file: recorded, not hidden
            manifest[case]["peer_round_trip"] = {"imports": False, "error": f"{type(e).__name__}: {e}"[:300]}
            print(f"{case}: peer round trip fails: {type(e).__name__}: {e}")
            continue
        arrays[case] = got
        manifest[case]["peer_round_trip"] = {"imports": True, "layer": layer, "exact": bool(np.array_equal(got, want)),
                                             "mismatches": int((got != want).sum()), "spikes": float(got.sum()),
                                             "spikes_original": float(want.sum())}
        print(f"{case}: peer round trip {manifest[case]['peer_round_trip']}")
    np.savez_compressed(OUT / "peer_round_trips.npz", **arrays)


PEERS = {"snntorch": snntorch_cases, "norse": norse_cases, "sinabs": sinabs_cases, "spikingjelly": spikingjelly_cases,
         "spikeport": spikeport_export_cases, "roundtrip": peer_round_trips}


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    mpath = OUT / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    for name in names or list(PEERS):
        PEERS[name](manifest)
    mpath.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
