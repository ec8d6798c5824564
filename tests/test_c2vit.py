"""C2 coding on the digits ViT (issue 11): ST-BIF (SpikeZIP-TF) and PMSM, from fine-tuned QANN to
spikes. Exactness with equality: every neuron's summed level against the QANN's quantiser level,
and the logits against the float QANN the network stands for (``float_qann``: the same network
once, each neuron replaced by its quantiser; the simulator keeps running sums, so no telescoped
float rounding enters). Against the frontend's QANN, whose Linears multiply ``step * level`` by the
unfolded weights, levels and predictions are equal and the logits differ by that fold's rounding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikeport.convert import ConversionError, convert
from spikeport.convert.finetune import finetune_file
from spikeport.frontend import load_model
from spikeport.frontend import ann_graph as G
from spikeport.frontend.ann_eval import evaluate_graph
from spikeport.ir import operators_c2 as C2
from spikeport.ir.neurons_extra import MultiSpikeIF
from spikeport.models.digits_vit import pretrained_digits_vit
from spikeport.report.pmsm_power import pmsm_power
from spikeport.simulator.transformer_c2 import float_qann, simulate_c2

from conftest import export_onnx


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory):
    torch.set_num_threads(1)
    return export_onnx(pretrained_digits_vit("vit"), tmp_path_factory.mktemp("c2") / "vit.onnx")


@pytest.fixture(scope="module")
def qanns(vit_onnx, digits, tmp_path_factory):
    """A briefly fine-tuned QANN per method (1 epoch on 256 samples: exactness does not need accuracy)."""
    x, y = digits[0][:256], digits[1][:256]
    d = tmp_path_factory.mktemp("q")
    out = {}
    for m in ("stbif", "pmsm"):
        s = finetune_file(vit_onnx, m, x, y, 1, d / f"{m}.pt2", progress=False)
        out[m] = (s, load_model(s.out))
    return out


def qann_levels(ann, x) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The QANN's logits and each QuantAct's integer level, in float64."""
    names = [n.name for n in ann.graph if isinstance(n, G.QuantAct)]
    vals = evaluate_graph(ann.graph, x, keep=names, dtype=torch.float64)
    levels = {n: np.rint(vals[n].numpy() / ann.graph[n].step) for n in names}
    return vals["output"].numpy(), levels


def test_finetune_writes_a_qann_with_quantisers_where_spikezip_puts_neurons(qanns):
    for m, hi in (("stbif", 7), ("pmsm", 8)):
        s, ann = qanns[m]
        q = [n for n in ann.graph if isinstance(n, G.QuantAct)]
        # 2 blocks x (qkv in, q, k, v, softmax out, proj in, fc1 in, fc2 in)
        assert len(q) == 16 and s.levels == 16
        assert {(n.min_level, n.max_level) for n in q} == {(-8, hi)}
        consumers = {u.op for n in q for u in ann.graph.users(n.name)}
        assert consumers == {"Linear", "MatMul"}


def test_stbif_summed_over_enough_steps_equals_the_qann(qanns, digits):
    _, ann = qanns["stbif"]
    x = digits[2]
    logits, levels = qann_levels(ann, x)
    net = convert(ann, digits[0][:64], method="stbif")
    assert net.coding == "C2"
    pops = {p.source: p for p in net.populations() if isinstance(p.neuron, C2.STBIF)}
    assert set(pops) == set(levels)
    res, checks, counts = simulate_c2(net, x, 32, checkpoints=(1, 24, 32), batch_size=len(x), keep_levels=True)
    exact, exact_levels = float_qann(net, x)
    for src, pop in pops.items():  # every ST-BIF neuron's spike sum IS its QANN level (integer equality)
        assert np.array_equal(res.activations[pop.name], levels[src]), src
        assert np.array_equal(exact_levels[pop.name], levels[src]), src
    assert np.array_equal(checks[24], checks[32])  # settled: no spikes after step 24
    assert not np.array_equal(checks[1], checks[32])  # ... and not before: the equality below is reached, not given
    assert np.array_equal(res.outputs, exact)  # the summed logits ARE the float QANN's, bit for bit
    assert np.array_equal(res.predictions, logits.argmax(1))
    # the frontend's QANN multiplies step * level by the unfolded weights: float64 rounding of that fold only
    assert np.abs(res.outputs - logits).max() <= 1e-12 * max(1.0, np.abs(logits).max())
    assert counts.total_events == counts.total_spikes  # at most one signed spike per step


def test_pmsm_at_T1_gives_the_qann_predictions_on_every_test_sample(qanns, digits):
    _, ann = qanns["pmsm"]
    x = digits[2]
    logits, levels = qann_levels(ann, x)
    net = convert(ann, digits[0][:64], method="pmsm")
    assert net.coding == "C2" and all(isinstance(p.neuron, MultiSpikeIF) for p in net.populations()
                                      if p.source in levels)
    res, _, counts = simulate_c2(net, x, 1, batch_size=len(x), keep_levels=True)
    exact, _ = float_qann(net, x)
    for p in net.populations():
        if p.source in levels:
            assert np.array_equal(res.activations[p.name], levels[p.source]), p.name
    assert np.array_equal(res.outputs, exact)  # the logits at T = 1 ARE the float QANN's, bit for bit
    assert np.array_equal(res.predictions, exact.argmax(1))
    assert np.array_equal(res.predictions, logits.argmax(1))
    assert np.abs(res.outputs - logits).max() <= 1e-12 * max(1.0, np.abs(logits).max())
    # the power figure from the measured counts, both conventions (graded event vs |n| spikes)
    p = pmsm_power(counts.total_events, counts.total_spikes, counts.samples, 1)
    assert counts.total_spikes > counts.total_events > 0
    assert p["spikes"]["power_w"] == pytest.approx(0.9e-12 * counts.total_spikes / len(x) / 1e-3, rel=1e-12)
    assert p["events"]["power_w"] == pytest.approx(0.9e-12 * counts.total_events / len(x) / 1e-3, rel=1e-12)


def test_c2_emissions_are_the_differences_of_the_running_sums(qanns, digits):
    """What each node sends per step (the trace energy counts) sums to its running value: the
    differential form O(t) = F(S(t)) - F(S(t-1)) telescopes (float64 rounding of that sum only)."""
    _, ann = qanns["stbif"]
    x = digits[2][:16]
    net = convert(ann, digits[0][:64], method="stbif")
    trace: dict = {}
    res = simulate_c2(net, x, 12, batch_size=len(x), trace=trace, keep_levels=True)[0]
    out = net.outputs[0]
    summed = trace[out].sum(axis=0)
    assert np.abs(summed - res.outputs).max() <= 1e-12 * np.abs(res.outputs).max()
    for k, lv in res.activations.items():  # spikes: integers, so their sum is exact
        assert np.array_equal(trace[k].sum(axis=0), lv) and set(np.unique(trace[k])) <= {-1.0, 0.0, 1.0}
    ops = [o for o in net.operators() if isinstance(o, (C2.SoftmaxC2, C2.MatMulC2))]
    assert ops and all(np.count_nonzero(trace[o.name][1:]) > 0 for o in ops)  # they do emit after t = 1


def _incremental_c2(net, x: np.ndarray, T: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The C2 equations as written, step by step (methods.md sections 0, 1, 4), for comparison with
    the running-sum simulator: input, biases and prefixes at t = 1; ST-BIF ``q += I/step``; PMSM
    ``u += I/theta``; operators ``F(S(t)) - F(S(t-1))``; products in difference form; the Readout
    sums its inputs. Returns the summed output and every neuron's per-step output (T, N, *shape)."""
    from spikeport.ir import operators as O
    from spikeport.ir.nodes import Input, Operator, Population, expand_channel
    from spikeport.simulator.operators import module_function
    from spikeport.simulator.transformer import _project

    f64 = torch.float64
    xb = torch.as_tensor(x, dtype=f64)
    n = xb.shape[0]
    w = {p.name: torch.as_tensor(np.asarray(p.weight), dtype=f64) for p in net.projections()}
    arr = lambda a, shape: torch.as_tensor(expand_channel(a, shape), dtype=f64)  # noqa: E731
    state, total, spikes = {}, {}, {}
    for t in range(1, T + 1):
        emit, value = {}, {}
        for node in net.nodes():
            k = node.name
            if isinstance(node, Input):
                emit[k] = value[k] = xb if t == 1 else torch.zeros_like(xb)
            elif isinstance(node, Population):
                shape = tuple(node.shape)
                cur = torch.zeros((n,) + shape, dtype=f64)
                for p in net.incoming(k):
                    cur = cur + _project(p, emit[p.source], n, shape, w[p.name])
                m = node.neuron
                if isinstance(m, C2.STBIF):
                    q, A = state.get(k, (torch.full((n,) + shape, 0.5, dtype=f64), torch.zeros((n,) + shape, dtype=f64)))
                    q = q + cur / arr(m.step, shape)
                    out = ((q >= 1) & (A < m.n_max)).to(f64) - ((q < 0) & (A > m.n_min)).to(f64)
                    state[k] = (q - out, A + out)
                elif isinstance(m, MultiSpikeIF):
                    th = arr(m.threshold, shape)
                    u = state.get(k, arr(m.v_init, shape) / th)
                    u = u + (cur + (arr(m.bias, shape) if t == 1 else 0)) / th
                    out = torch.clamp(torch.floor(u), -float(m.n_neg), float(m.n_pos))
                    state[k] = u - out
                else:
                    out = cur + arr(m.bias, shape) if t == 1 else cur
                    total[k] = total.get(k, 0) + out
                    emit[k] = value[k] = out
                    continue
                spikes.setdefault(k, []).append(out.numpy())
                emit[k], value[k] = out, out * arr(node.decode_scale, shape)
            elif isinstance(node, Operator):
                ins = [value[i] for i in node.inputs]
                if isinstance(node, C2.C2Operator):
                    S, P = state.get(k, (0, None))
                    S = S + ins[0]
                    cur = module_function(node, "cpu", f64)(S)
                    out = cur if P is None else cur - P
                    state[k] = (S, cur)
                elif isinstance(node, C2.MatMulC2):
                    a, b = ins
                    SA, SB = state.get(k, (torch.zeros_like(a), torch.zeros_like(b)))
                    out = (a @ b + a @ SB + SA @ b) * node.scale
                    state[k] = (SA + a, SB + b)
                elif isinstance(node, O.Rearrange):
                    idx = torch.as_tensor(node.index).reshape(-1)
                    out = ins[0].reshape(n, -1)[:, idx].reshape((n,) + tuple(node.shape))
                elif isinstance(node, O.Concat):
                    pre = [] if node.prefix is None else [torch.as_tensor(node.prefix, dtype=f64).expand(
                        (n,) + np.shape(node.prefix)) * (1.0 if t == 1 else 0.0)]
                    out = torch.cat(pre + ins, dim=node.axis % len(node.shape) + 1)
                elif isinstance(node, O.Mean):
                    out = ins[0].mean(dim=tuple(a + 1 for a in node.axes))
                else:
                    raise TypeError(type(node).__name__)
                emit[k] = value[k] = out
    out = net[net.outputs[0]]
    return total[out.name].numpy(), {k: np.stack(v) for k, v in spikes.items()}


@pytest.mark.parametrize("method,T", [("stbif", 20), ("pmsm", 6)])
def test_running_sums_give_the_spikes_of_the_step_by_step_c2_equations(qanns, digits, method, T):
    """The simulator keeps running sums; the C2 network is defined step by step. Every neuron emits
    the same output at every step under both (equality), and the outputs agree to float64 rounding
    of the telescoped sums."""
    _, ann = qanns[method]
    x = digits[2][:24]
    net = convert(ann, digits[0][:64], method=method)
    trace: dict = {}
    res = simulate_c2(net, x, T, batch_size=len(x), trace=trace)[0]
    want, spikes = _incremental_c2(net, x, T)
    assert spikes and set(spikes) == {p.name for p in net.populations() if p.neuron.spiking}
    for k, s in spikes.items():
        assert np.array_equal(trace[k], s), k
    assert np.abs(res.outputs - want).max() <= 1e-12 * np.abs(want).max()


def test_stbif_refuses_a_vit_without_quantisers(vit_onnx, digits):
    with pytest.raises(ConversionError, match="spikeport finetune"):
        convert(load_model(vit_onnx), digits[0][:16], method="stbif")


def test_c2_network_round_trips_and_the_commands_accept_or_refuse_it_by_node(qanns, digits, tmp_path):
    from typer.testing import CliRunner

    from spikeport import ir
    from spikeport.cli import app

    s, ann = qanns["stbif"]
    net = convert(ann, digits[0][:64], method="stbif")
    path = ir.save(net, tmp_path / "net.h5")
    back = ir.load(path)
    x = digits[2][:32]
    a = simulate_c2(net, x, 20)[0].outputs
    b = simulate_c2(back, x, 20)[0].outputs
    assert back.coding == "C2" and np.array_equal(a, b)
    np.savez(tmp_path / "d.npz", x=digits[2][:8], y=digits[3][:8])
    runner = CliRunner()
    q = tmp_path / "q.h5"
    for args in (["compile", path, "--profile", "loihi2", "--out", q], ["resources", q, "--profile", "loihi2"],
                 ["simulate", q, "--data", tmp_path / "d.npz", "--timesteps", "4"],
                 ["energy", q, "--data", tmp_path / "d.npz", "--timesteps", "4", "--profile", "loihi2"],
                 ["fidelity", s.out, path, q, "--data", tmp_path / "d.npz", "--timesteps", "4", "--no-ablation"]):
        r = runner.invoke(app, [str(v) for v in args])
        assert r.exit_code == 0, (args[0], r.output)
    for args, says in ((["export", q, "--target", "lava", "--out", tmp_path / "lv"], "C2"),
                       (["verify", q, "--target", "lava", "--data", tmp_path / "d.npz", "--timesteps", "4"], "C2")):
        r = runner.invoke(app, [str(v) for v in args])
        assert r.exit_code == 2 and says in r.output and "node '" in r.output and "Traceback" not in r.output, \
            (args[0], r.output)


def test_encoder_definition_also_converts_exactly(digits, tmp_path):
    """The nn.TransformerEncoder digits ViT (mean pooling, no class token), unfine-tuned QANN (0 epochs)."""
    onnx = export_onnx(pretrained_digits_vit("encoder"), tmp_path / "enc.onnx")
    x = digits[2][:64]
    for m, T in (("stbif", 32), ("pmsm", 1)):
        s = finetune_file(onnx, m, digits[0][:128], digits[1][:128], 0, tmp_path / f"{m}.pt2", progress=False)
        ann = load_model(s.out)
        logits, levels = qann_levels(ann, x)
        net = convert(ann, digits[0][:64], method=m)
        res = simulate_c2(net, x, T, batch_size=len(x), keep_levels=True)[0]
        for p in net.populations():
            if p.source in levels:
                assert np.array_equal(res.activations[p.name], levels[p.source]), (m, p.name)
        assert np.array_equal(res.outputs, float_qann(net, x)[0]), m
        assert np.array_equal(res.predictions, logits.argmax(1)), m
