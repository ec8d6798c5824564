"""NegSpike joint layer calibration (paper 004 section 4.2; methods.md section 6) on a converted IR net.

:class:`DifferentiableSNN` re-implements the float simulator for the IR subset conversion produces
(C1 analog input every step; ``Dense`` / ``Conv2d`` / ``Identity`` projections with delay 0; ``IF``
populations, signed or not, and ``Readout``; t_start 0) in float64 torch, performing the simulator's
operations in the simulator's order, so its spikes equal ``simulator.simulate``'s exactly. The spike
functions' backward is the paper's sigmoid surrogate ``g(x) = 1 / (1 + exp(-kappa x))`` with
``x = (v - theta) / theta`` (the membrane's distance to the threshold in threshold units, so one slope
means the same in every layer).

:func:`joint_calibrate` tunes the projection weights and population biases of ALL layers at once
with BPTT, minimising ``sum_l w_l(p) KL(ANN_l || SNN_l)`` with the cosine weights
``w_l(p) ~ cos(pi/2 (l/L - p))`` (p = training progress, l = 1..L over the populations in topological
order, the readout last) and the slope schedule 6.7 -> 10 -> 15 (the paper's epochs 10 and 20 read as
thirds of the run). Thresholds stay fixed: they set beta (the payload's neg_value), the decode scale and
the quantiser's levels, and the paper calibrates the coefficients (weights), not the neuron.

KL between an ANN layer and the SNN rate, concretely: per sample, P = softmax(a / tau_l) and
Q = softmax(r / tau_l) over ALL neurons of the layer (C*H*W or N values), where a is the ANN activation,
r the SNN's decoded rate (mean_t value(s) * decode_scale + decode_offset, the same units as a), and
tau_l = temperature * max(decode_scale) (temperature times the layer's P_th; 1 for the readout, whose
logits are already in softmax units). KL is averaged over samples. The softmax makes a layer a
distribution whatever the sign of its (Leaky-ReLU) values; it ignores a common shift of the whole map,
which the next layer's term sees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import ir
from ..frontend import AnnModel
from ..ir.nodes import expand_channel
from .negspike import cosine_layer_weights

SLOPES = (6.7, 10.0, 15.0)


class _SigmoidSpike(torch.autograd.Function):
    """Heaviside forward (``x > 0`` or ``x >= 0``), sigmoid-surrogate backward kappa g (1 - g)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fired: torch.Tensor, kappa: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kappa = kappa
        return fired.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        g = torch.sigmoid(ctx.kappa * x)
        return grad * ctx.kappa * g * (1.0 - g), None, None


def _flat(pop: ir.Population, value, device) -> torch.Tensor:
    arr = expand_channel(np.asarray(value, dtype=np.float64), tuple(pop.shape)).reshape(-1)
    return torch.tensor(arr, dtype=torch.float64, device=device)


@dataclass
class SNNRun:
    """One forward: ``rates`` {population: (B, *shape) decoded activation}, ``counts`` {spiking
    population: (B, n) event counts (+1 and -1 events together, as ``SimResult.spike_counts``)}."""

    rates: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor] = field(default_factory=dict)


class DifferentiableSNN(torch.nn.Module):
    """Trainable float64 copy of a float IR network (see the module docstring for the subset).

    Parameters: one weight per projection (Dense stored as (in, out), the simulator's layout, so the
    forward multiplies the same numbers in the same order) and one bias per population (per neuron).
    :meth:`to_network` writes them back into a copy of the network.
    """

    def __init__(self, net: ir.Network, device=None):
        super().__init__()
        _check_supported(net)
        self.net = net
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.order = [n.name for n in net.nodes() if isinstance(n, (ir.Input, ir.Population))]
        self.weights = torch.nn.ParameterDict()
        self.biases = torch.nn.ParameterDict()
        self._key: dict[str, str] = {}
        for proj in net.projections():
            w = np.asarray(proj.weight, dtype=np.float64)
            if isinstance(proj, ir.Dense):
                w = np.ascontiguousarray(w.T)
            elif isinstance(proj, ir.Identity):
                w = expand_channel(w, tuple(net.shape_of(proj.target))).reshape(-1)
            self._key[proj.name] = f"p{len(self._key)}"
            # torch.tensor copies: training must never write into the input network's numpy arrays
            self.weights[self._key[proj.name]] = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64, device=dev))
        for pop in net.populations():
            self._key[pop.name] = f"n{len(self._key)}"
            self.biases[self._key[pop.name]] = torch.nn.Parameter(_flat(pop, pop.neuron.bias, dev))
        self._consts = {pop.name: self._neuron_constants(pop, dev) for pop in net.populations()}

    @staticmethod
    def _neuron_constants(pop: ir.Population, dev) -> dict:
        m = pop.neuron
        c = {"v_init": _flat(pop, m.v_init, dev), "readout": isinstance(m, ir.Readout),
             "scale": _flat(pop, pop.decode_scale, dev), "offset": _flat(pop, pop.decode_offset, dev)}
        if isinstance(m, ir.IF):
            c.update(theta=_flat(pop, m.threshold, dev), keep=1.0 - float(m.leak), strict=m.compare == ">",
                     zero=m.reset == "zero", signed=m.neg_threshold is not None, nv=float(pop.payload.neg_value))
            if c["signed"]:
                c.update(neg_th=_flat(pop, m.neg_threshold, dev), neg_reset=_flat(pop, m.neg_reset, dev))
        return c

    def weight(self, proj: ir.Projection) -> torch.Tensor:
        return self.weights[self._key[proj.name]]

    def _project(self, proj: ir.Projection, x: torch.Tensor) -> torch.Tensor:
        w = self.weight(proj)
        if isinstance(proj, ir.Dense):
            return x @ w
        if isinstance(proj, ir.Conv2d):
            x4 = x.reshape((x.shape[0],) + tuple(self.net.shape_of(proj.source)))
            y = F.conv2d(x4, w, None, tuple(proj.stride), tuple(proj.padding), tuple(proj.dilation), int(proj.groups))
            return y.reshape(x.shape[0], -1)
        return x * w

    def forward(self, x: torch.Tensor, timesteps: int, kappa: float = SLOPES[-1], detach_reset: bool = False) -> SNNRun:
        """Run ``timesteps`` steps on ``x`` (B, *input shape); rates are differentiable."""
        net = self.net
        if int(timesteps) != timesteps or timesteps < 1:
            raise ValueError(f"DifferentiableSNN: timesteps {timesteps!r} must be a positive integer")
        inp = net.inputs()[0]
        if tuple(x.shape[1:]) != tuple(inp.shape):
            raise ValueError(f"DifferentiableSNN: input of shape {tuple(x.shape)}, expected (B, {tuple(inp.shape)})")
        batch = x.shape[0]
        xin = x.reshape(batch, -1).to(torch.float64)
        pops = {p.name: p for p in net.populations()}
        incoming = {name: net.incoming(name) for name in pops}
        v = {name: self._consts[name]["v_init"].expand(batch, -1).clone() for name in pops}
        total = {name: torch.zeros_like(v[name]) for name in pops}
        counts = {name: torch.zeros_like(v[name]) for name in pops if not self._consts[name]["readout"]}
        emitted: dict[str, torch.Tensor] = {inp.name: xin}
        constant_current = {}   # a projection from the analog input delivers the same current every step
        for _ in range(int(timesteps)):
            for name in self.order:
                if name not in pops:
                    continue
                current = None
                for proj in incoming[name]:
                    if proj.source == inp.name:
                        if proj.name not in constant_current:
                            constant_current[proj.name] = self._project(proj, xin)
                        c = constant_current[proj.name]
                    else:
                        c = self._project(proj, emitted[proj.source])
                    current = c if current is None else current + c
                c_ = self._consts[name]
                bias = self.biases[self._key[name]]
                if c_["readout"]:
                    v[name] = v[name] + bias if current is None else (v[name] + current) + bias
                    continue
                u = v[name] * c_["keep"] if c_["keep"] != 1.0 else v[name]
                if current is not None:
                    u = u + current
                u = u + bias
                theta = c_["theta"]
                pos_b = u > theta if c_["strict"] else u >= theta
                pos = _SigmoidSpike.apply((u - theta) / theta, pos_b, kappa)
                neg = None
                if c_["signed"]:
                    nth = c_["neg_th"]
                    scale = torch.clamp(c_["neg_reset"].abs(), min=1e-12)   # N_th (NegSpike); > 0 even if nth = 0
                    neg_raw = _SigmoidSpike.apply((-nth - u) / scale, u < -nth, kappa)
                    neg = neg_raw * (1.0 - pos)
                rp = pos.detach() if detach_reset else pos           # spikes as seen by the reset
                rn = None if neg is None else (neg.detach() if detach_reset else neg)
                if c_["zero"]:
                    u = u * (1 - (rp if rn is None else rp + rn))
                else:
                    u = u - rp * theta
                    if rn is not None:
                        u = u + rn * c_["neg_reset"]
                v[name] = u
                s = pos if neg is None else pos - neg
                counts[name] = counts[name] + (pos if neg is None else pos + neg)
                if c_["signed"] and c_["nv"] != 1.0:
                    s = s + (s < 0).to(s.dtype) * (s * (c_["nv"] - 1.0))
                emitted[name] = s
                total[name] = total[name] + s
        rates = {}
        for name, pop in pops.items():
            c_ = self._consts[name]
            if c_["readout"]:
                out = v[name] / timesteps
            else:
                out = total[name] / timesteps * c_["scale"] + c_["offset"]
            rates[name] = out.reshape((batch,) + tuple(pop.shape))
        return SNNRun(rates=rates, counts={k: c.detach() for k, c in counts.items()})

    def to_network(self) -> ir.Network:
        """A copy of the network with this module's weights and biases (float64 numpy)."""
        out = self.net.copy()
        for proj in out.projections():
            w = self.weight(proj).detach().cpu().numpy().astype(np.float64)
            if isinstance(proj, ir.Dense):
                w = np.ascontiguousarray(w.T)
            elif isinstance(proj, ir.Identity):
                w = w.reshape(tuple(out.shape_of(proj.target)))
            proj.weight = w
        for pop in out.populations():
            b = self.biases[self._key[pop.name]].detach().cpu().numpy().astype(np.float64)
            pop.neuron.bias = b.reshape(tuple(pop.shape))
        out.validate("joint calibration")
        return out


def _check_supported(net: ir.Network) -> None:
    """Reject what the differentiable copy does not reproduce, naming the node and the limit."""
    if net.datapath is not None:
        raise ValueError("DifferentiableSNN: the network is quantised; calibrate the float network, then quantise")
    if net.coding != "C1":
        raise ValueError(f"DifferentiableSNN: coding {net.coding!r}; NegSpike calibration needs C1 (average coding)")
    ins = net.inputs()
    if len(ins) != 1 or ins[0].coding != "analog":
        raise ValueError(f"DifferentiableSNN: needs one analog input, got {[(i.name, i.coding) for i in ins]}")
    if net.operators():
        raise ValueError(f"DifferentiableSNN: operator nodes {[o.name for o in net.operators()]} are not supported")
    if len(net.outputs) != 1:
        raise ValueError(f"DifferentiableSNN: needs exactly one output population, got {net.outputs}")
    for proj in net.projections():
        if not isinstance(proj, (ir.Dense, ir.Conv2d, ir.Identity)):
            raise ValueError(f"DifferentiableSNN: projection {proj.name!r} is {type(proj).__name__}; supported: Dense, "
                             "Conv2d, Identity")
        if proj.delay != 0:
            raise ValueError(f"DifferentiableSNN: projection {proj.name!r} has delay {proj.delay}; only delay 0 (the "
                             "converted, unscheduled network) is supported")
    for pop in net.populations():
        if type(pop.neuron) not in (ir.IF, ir.Readout):
            raise ValueError(f"DifferentiableSNN: population {pop.name!r} is {type(pop.neuron).__name__}; supported: IF, "
                             "Readout")
        if pop.t_start != 0:
            raise ValueError(f"DifferentiableSNN: population {pop.name!r} has t_start {pop.t_start}; only 0 is supported")


# ---------------------------------------------------------------------- the loss and the loop
def layer_kl(ann_act: torch.Tensor, snn_rate: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(P || Q), P = softmax(ann / tau), Q = softmax(snn / tau) over each sample's flattened layer;
    mean over samples."""
    b = ann_act.shape[0]
    logp = F.log_softmax(ann_act.reshape(b, -1) / tau, dim=1)
    logq = F.log_softmax(snn_rate.reshape(b, -1) / tau, dim=1)
    return F.kl_div(logq, logp, log_target=True, reduction="batchmean")


def slope_at(progress: float, slopes: tuple[float, ...] = SLOPES) -> float:
    """Surrogate slope kappa at training progress p: slopes[k] for p in [k/K, (k+1)/K)."""
    k = min(int(progress * len(slopes)), len(slopes) - 1)
    return float(slopes[k])


def ann_targets(net: ir.Network, ann: AnnModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """ANN activations of every population's source node (the logits for the output), float64."""
    names = {}
    for pop in net.populations():
        if pop.name in net.outputs:
            continue
        if not pop.source:
            raise ValueError(f"joint calibration: population {pop.name!r} names no ANN source node to compare with")
        names[pop.name] = pop.source
    acts = ann.record_activations(x, sorted(set(names.values())))
    out = {pop: acts[src].astype(np.float64) for pop, src in names.items()}
    out[net.outputs[0]] = ann.forward(x).astype(np.float64)
    for pop in net.populations():
        if tuple(out[pop.name].shape[1:]) != tuple(pop.shape):
            raise ValueError(f"joint calibration: population {pop.name!r} has shape {tuple(pop.shape)}, its ANN node "
                             f"{pop.source!r} gives {tuple(out[pop.name].shape[1:])}")
    return out


@dataclass
class CalibrationLoss:
    """Total weighted loss and the per-population KL (ordered as the layers l = 1..L)."""

    total: float
    per_layer: dict[str, float]


class _Objective:
    """The weighted KL of one batch; layer order and temperatures fixed at construction."""

    def __init__(self, net: ir.Network, temperature: float):
        if not temperature > 0.0:
            raise ValueError(f"joint calibration: temperature {temperature} must be > 0")
        self.layers = [p.name for p in net.populations()]   # topological order (the readout is last)
        out = net.outputs[0]
        self.layers = [n for n in self.layers if n != out] + [out]
        self.tau = {p.name: 1.0 if p.name == out else
                    temperature * float(np.max(np.abs(np.asarray(p.decode_scale, dtype=np.float64))))
                    for p in net.populations()}

    def __call__(self, run: SNNRun, targets: dict[str, torch.Tensor], progress: float) -> tuple[torch.Tensor, dict]:
        w = cosine_layer_weights(len(self.layers), progress)
        kls = {n: layer_kl(targets[n], run.rates[n], self.tau[n]) for n in self.layers}
        total = sum(float(wl) * kls[n] for wl, n in zip(w, self.layers))
        return total, kls


def calibration_loss(net: ir.Network, ann: AnnModel, x: np.ndarray, timesteps: int, progress: float = 1.0,
                     temperature: float = 0.1, batch_size: int = 256, device=None) -> CalibrationLoss:
    """The joint-calibration loss of ``net`` on ``x`` at ``progress`` (1.0: the end-of-training weights)."""
    snn = DifferentiableSNN(net, device)
    obj = _Objective(net, temperature)
    targets = ann_targets(net, ann, x)
    x = np.asarray(x, dtype=np.float64)
    sums = {n: 0.0 for n in obj.layers}
    with torch.no_grad():
        for a in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[a:a + batch_size], device=snn.weights[next(iter(snn.weights))].device)
            tb = {k: torch.as_tensor(v[a:a + batch_size], device=xb.device) for k, v in targets.items()}
            _, kls = obj(snn(xb, timesteps), tb, progress)
            for n, k in kls.items():
                sums[n] += float(k) * len(xb)
    per = {n: s / len(x) for n, s in sums.items()}
    w = cosine_layer_weights(len(obj.layers), progress)
    return CalibrationLoss(total=float(sum(wl * per[n] for wl, n in zip(w, obj.layers))), per_layer=per)


def joint_calibrate(net: ir.Network, ann: AnnModel, x: np.ndarray, timesteps: int, epochs: int = 10,
                    lr: float = 3e-3, batch_size: int = 64, temperature: float = 0.1,
                    slopes: tuple[float, ...] = SLOPES, train_bias: bool = True, detach_reset: bool = False,
                    keep_best: bool = True, seed: int = 0, device=None) -> ir.Network:
    """Jointly calibrate every layer of the float NegSpike network ``net`` against ``ann`` on ``x``.

    BPTT over ``timesteps`` steps through :class:`DifferentiableSNN`; loss sum_l w_l(p) KL_l (module
    docstring), p = iteration / (iterations - 1). Adam with a per-tensor learning rate
    ``lr * rms(initial tensor)`` (weights absorb each layer's thresholds, so their sizes differ by
    layer; ``lr`` is a relative step). ``keep_best``: after each epoch the loss at p = 1 on ``x`` is
    measured and the best parameters seen (the initial ones included) are returned, so the result is
    never worse than ``net`` on that loss. Returns a NEW network (``net`` is not modified) whose
    ``meta['joint_calibration']`` records the settings, the loss (at p = 1) before and after, and
    ``best_epoch`` (0: no epoch improved on the input).
    Deterministic from ``seed`` on CPU.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"joint_calibrate: epochs {epochs!r} must be a positive integer")
    if not lr > 0.0 or batch_size < 1:
        raise ValueError(f"joint_calibrate: lr {lr} must be > 0 and batch_size {batch_size} >= 1")
    if not slopes or any(not s > 0 for s in slopes):
        raise ValueError(f"joint_calibrate: surrogate slopes {slopes} must be positive")
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        raise ValueError("joint_calibrate: the calibration set is empty")
    before = calibration_loss(net, ann, x, timesteps, 1.0, temperature, device=device)
    snn = DifferentiableSNN(net, device)
    dev = snn.weights[next(iter(snn.weights))].device
    obj = _Objective(net, temperature)
    targets = {k: torch.as_tensor(v, device=dev) for k, v in ann_targets(net, ann, x).items()}
    xt = torch.as_tensor(x, device=dev)
    groups = [{"params": [p], "lr": lr * max(float(p.detach().pow(2).mean().sqrt()), 1e-6)} for p in snn.weights.values()]
    if train_bias:
        groups += [{"params": [p], "lr": lr * max(float(p.detach().pow(2).mean().sqrt()), 1e-3)} for p in snn.biases.values()]
    else:
        for p in snn.biases.values():
            p.requires_grad_(False)
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    n_batches = math.ceil(len(x) / batch_size)
    total_iters = int(epochs) * n_batches
    it = 0
    history = []
    best = (before.total, 0, {k: v.detach().clone() for k, v in snn.state_dict().items()})
    for _ in range(int(epochs)):
        order = torch.randperm(len(x), generator=gen).to(dev)
        run_loss = 0.0
        for a in range(0, len(x), batch_size):
            idx = order[a:a + batch_size]
            p = it / (total_iters - 1) if total_iters > 1 else 1.0
            opt.zero_grad()
            run = snn(xt[idx], timesteps, kappa=slope_at(p, slopes), detach_reset=detach_reset)
            loss, _ = obj(run, {k: v[idx] for k, v in targets.items()}, p)
            loss.backward()
            opt.step()
            run_loss += float(loss.detach()) * len(idx)
            it += 1
        history.append(run_loss / len(x))
        if keep_best:
            score = calibration_loss(snn.to_network(), ann, x, timesteps, 1.0, temperature, device=device).total
            if score < best[0]:
                best = (score, len(history), {k: v.detach().clone() for k, v in snn.state_dict().items()})
    if keep_best:
        snn.load_state_dict(best[2])
    out = snn.to_network()
    after = calibration_loss(out, ann, x, timesteps, 1.0, temperature, device=device)
    out.meta["joint_calibration"] = {
        "timesteps": int(timesteps), "epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
        "temperature": float(temperature), "slopes": [float(s) for s in slopes], "train_bias": bool(train_bias),
        "detach_reset": bool(detach_reset), "samples": int(len(x)), "tuned": "weights and biases (thresholds fixed)",
        "keep_best": bool(keep_best), "best_epoch": int(best[1]) if keep_best else int(epochs),
        "loss_before": before.total, "loss_after": after.total,
        "kl_before": before.per_layer, "kl_after": after.per_layer, "epoch_loss": history,
    }
    return out


__all__ = ["CalibrationLoss", "DifferentiableSNN", "SLOPES", "SNNRun", "ann_targets", "calibration_loss",
           "joint_calibrate", "layer_kl", "slope_at"]
