"""Instantiate and wire Lava processes from a :class:`LavaPlan`; run samples one by one."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import compat
from .plan import LavaPlan, NeuronPlan, from_lava, to_lava

compat.install()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import DelayDense, Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as SinkBuffer  # noqa: E402
from lava.proc.io.source import RingBuffer as SourceBuffer  # noqa: E402
from lava.proc.lif.process import LIF, TernaryLIF  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402

from .processes import ScaledConv, SpikeportNeuron  # noqa: E402


@dataclass
class LavaNet:
    """A wired Lava network for one plan: inputs, neurons, synapses and spike sinks.

    ``run_sample`` presents one sample for ``plan.steps_run`` steps and returns per population the
    per-step events (steps, *shape) and membrane records in IR layout; state is reset between
    samples through Lava's Var interface so the compiled network is reused. Call ``stop`` (or use
    it as a context manager) to end Lava's runtime processes.
    """

    plan: LavaPlan
    inputs: dict
    neurons: dict
    synapses: dict
    sinks: dict
    started: bool = False
    samples_run: int = 0
    run_cfg: object = field(default=None)

    def __enter__(self) -> "LavaNet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _anchor(self):
        return next(iter(self.inputs.values()))

    def stop(self) -> None:
        if self.started:
            self._anchor().stop()
            self.started = False

    def _reset(self, data: dict[str, np.ndarray]) -> None:
        for name, buf in self.inputs.items():
            buf.data.set(data[name])
        for plan in self.plan.neurons:
            proc = self.neurons[plan.name]
            proc.u.set(np.zeros(plan.lava_shape, dtype=np.int32))
            init = (proc.v_init.get() if plan.process == "SpikeportNeuron"
                    else np.broadcast_to(np.asarray(plan.params.get("v", 0)), plan.lava_shape))  # LIF's own v(0)
            proc.v.set(np.asarray(init, dtype=np.int32))
        for proc in self.synapses.values():
            buf = proc.a_buff if isinstance(proc, Dense) else proc.a_buf
            buf.set(np.zeros(buf.shape, dtype=np.int32))

    def run_sample(self, data: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Run one sample; ``data`` maps input name -> (steps_run, *IR shape) integer frames."""
        lava_data = {}
        for inp in self.plan.inputs:
            frames = np.asarray(data[inp.name])
            lava_data[inp.name] = np.stack([to_lava(f, inp.shape) for f in frames], axis=-1).astype(np.int32)
        if self.started:
            self._reset(lava_data)
        else:
            for name, buf in self.inputs.items():
                buf.data.init = lava_data[name]
        self._anchor().run(condition=RunSteps(num_steps=self.plan.steps_run), run_cfg=self.run_cfg)
        self.started = True
        self.samples_run += 1
        return {plan.name: self._records(plan) for plan in self.plan.neurons}

    def _records(self, plan: NeuronPlan) -> dict[str, np.ndarray]:
        proc = self.neurons[plan.name]
        out = {"v_final": from_lava(np.asarray(proc.v.get()), plan.shape).astype(np.int64)}
        if plan.process == "SpikeportNeuron":
            s = np.asarray(proc.s_hist.get())
            v = np.asarray(proc.v_hist.get())
            out["v"] = from_lava(np.moveaxis(v, -1, 0), plan.shape, lead=1).astype(np.int64)
            out["spikes"] = from_lava(np.moveaxis(s, -1, 0), plan.shape, lead=1).astype(np.int8)
        else:
            s = np.asarray(self.sinks[plan.name].data.get())
            out["spikes"] = from_lava(np.moveaxis(s, -1, 0), plan.shape, lead=1).astype(np.int8)
        return out


def _neuron(plan: NeuronPlan):
    p = dict(plan.params)
    if plan.process == "LIF":
        return LIF(name=plan.name, **p)
    if plan.process == "TernaryLIF":
        return TernaryLIF(name=plan.name, **p)
    return SpikeportNeuron(name=plan.name, record=True, **p)


def _synapse(s):
    p = dict(s.params)
    if s.process == "Dense":
        return Dense(name=s.name, weights=p["weights"], weight_exp=p["weight_exp"], num_weight_bits=p["num_weight_bits"],
                     sign_mode=SignMode(p["sign_mode"]), num_message_bits=p["num_message_bits"])
    if s.process == "DelayDense":
        return DelayDense(name=s.name, weights=p["weights"], delays=int(p["delays"]), weight_exp=p["weight_exp"],
                          num_weight_bits=p["num_weight_bits"], sign_mode=SignMode(p["sign_mode"]),
                          num_message_bits=p["num_message_bits"])
    cls = Conv if s.process == "Conv" else ScaledConv
    kw = dict(weight=p["weight"].astype(np.int32), weight_exp=p["weight_exp"], input_shape=tuple(p["input_shape"]),
              padding=tuple(p["padding"]), stride=tuple(p["stride"]), dilation=tuple(p["dilation"]),
              groups=int(p["groups"]), num_message_bits=int(p["num_message_bits"]), name=s.name)
    return cls(**kw)


def build_from_plan(plan: LavaPlan) -> LavaNet:
    """Create the processes of ``plan`` and connect them (inputs -> synapses -> neurons)."""
    inputs = {i.name: SourceBuffer(data=np.zeros(i.lava_shape + (plan.steps_run,), dtype=np.int32))
              for i in plan.inputs}
    neurons = {n.name: _neuron(n) for n in plan.neurons}
    shapes = {i.name: i.lava_shape for i in plan.inputs} | {n.name: n.lava_shape for n in plan.neurons}
    synapses = {}
    for s in plan.synapses:
        proc = _synapse(s)
        src = inputs.get(s.source) or neurons[s.source]
        out = src.s_out
        if s.process in ("Dense", "DelayDense"):
            (out.flatten() if len(shapes[s.source]) > 1 else out).connect(proc.s_in)
            a_out = proc.a_out.reshape(shapes[s.target]) if len(shapes[s.target]) > 1 else proc.a_out
        else:
            out.connect(proc.s_in)
            a_out = proc.a_out
        a_out.connect(neurons[s.target].a_in)
        synapses[s.name] = proc
    sinks = {}
    for n in plan.neurons:
        if n.process != "SpikeportNeuron":
            sink = SinkBuffer(shape=n.lava_shape, buffer=plan.steps_run)
            neurons[n.name].s_out.connect(sink.a_in)
            sinks[n.name] = sink
    return LavaNet(plan, inputs, neurons, synapses, sinks, run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
