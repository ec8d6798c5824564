"""Energy estimates of a simulated SNN and its ANN baseline (conventions: docs/energy.md).

Three figures per layer and sample, all from the exact operation counts of ``simulator.opcount``:

* compute-only (the conversion papers' figure): ``ACs * E_AC + MACs * E_MAC`` with Horowitz's
  45 nm table (``fp32``: E_AC 0.9 pJ, E_MAC 4.6 pJ; ``int8`` and ``int32`` options), read from the
  ``generic45nm`` profile so every number keeps its citation;
* fuller: compute-only + one E_AC per neuron update + memory accesses (synapse-word reads,
  accumulator read-modify-writes, neuron state reads and writes) at the Horowitz SRAM energy per
  64-bit access of the smallest table row holding one core's memory, scaled by bits / 64;
* the chip profile's own estimate: its per-synaptic-op, per-neuron-update (active / idle) and
  per-event figures, plus static and per-core power over the run when the profile has them.

The ANN baseline is ``MACs * E_MAC`` (and, given a per-layer ``frontend.macs.MacCount``, the same
memory model: one weight and one activation read per MAC, one write per output). Average power is
energy per sample over ``steps_run * timestep_s`` (default 1 ms per step).

Networks with Transformer operators: the operators' arithmetic by kind (report/operator_energy.py)
is reported next to the papers' convention, which counts operators as zero; the ANN's LayerNorm /
softmax / GELU arithmetic likewise next to its MACs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from ..hw_profiles import load_profile
from ..simulator.opcount import OpCounts, count_ops
from ..simulator.operator_work import OP_KINDS
from .operator_energy import OperatorEnergy, operator_energies
from .operator_energy import assumptions as operator_assumptions

CONVENTIONS = ("fp32", "int8", "int32")
_WORD_BITS = {"fp32": 32, "int8": 8, "int32": 32}
_SRAM_ROWS = ((8 * 1024, "sram_8kb_64b_pj"), (32 * 1024, "sram_32kb_64b_pj"), (1024 * 1024, "sram_1mb_64b_pj"))


@dataclass(frozen=True)
class HorowitzFigures:
    """Per-operation energies (pJ) of one convention and the SRAM energy per 64-bit access."""

    convention: str
    e_ac: float
    e_mac: float
    sram_64b: float
    sram_row: str
    word_bits: int
    source: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


def horowitz(convention: str = "fp32", memory_bytes: int = 1024 * 1024, sram_pj_per_64b: float | None = None
             ) -> HorowitzFigures:
    """E_AC / E_MAC of ``convention`` and the SRAM access energy for a memory of ``memory_bytes``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"energy convention {convention!r} must be one of {CONVENTIONS}")
    g = load_profile("generic45nm")
    e = g.energy
    ac, mac = {"fp32": (e.ac_pj, e.mac_pj), "int8": (e.int8_add_pj, e.int8_mult_pj + e.int8_add_pj),
               "int32": (e.int32_add_pj, e.int32_mult_pj + e.int32_add_pj)}[convention]
    row = next((key for size, key in _SRAM_ROWS if memory_bytes <= size), _SRAM_ROWS[-1][1])
    sram = float(sram_pj_per_64b) if sram_pj_per_64b is not None else float(getattr(e, row))
    return HorowitzFigures(convention, float(ac), float(mac), sram, row if sram_pj_per_64b is None else "user",
                           _WORD_BITS[convention], g.source_of("energy", "ac_pj"))


# ------------------------------------------------------------------------------ report objects
@dataclass
class LayerEnergy:
    """Per-sample counts and energies (pJ) of one layer (an input or a population)."""

    name: str
    acs: float
    macs: float
    neuron_updates: float
    active_updates: float
    events: float
    compute_pj: float
    neuron_pj: float
    memory_pj: float
    chip_pj: float

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.neuron_pj + self.memory_pj

    def to_json(self) -> dict:
        return {**self.__dict__, "total_pj": self.total_pj}


@dataclass
class EnergyReport:
    """What :func:`energy_report` returns; ``to_json()`` is the ``--json`` file."""

    profile: str
    timesteps: int
    steps_run: int
    samples: int
    timestep_s: float
    figures: HorowitzFigures
    layers: list[LayerEnergy]
    chip_static_pj: float | None
    ann_macs: int | None
    ann_compute_pj: float | None
    ann_memory_pj: float | None
    counts: OpCounts
    chip_figures: dict = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    operators: list[OperatorEnergy] = field(default_factory=list)
    spike_power: dict | None = None   # C2 ST-BIF / PMSM: report.pmsm_power.pmsm_power of the measured counts

    def total(self, name: str) -> float:
        return float(sum(getattr(layer, name) for layer in self.layers))

    @property
    def operator_pj(self) -> float:
        """Operators' arithmetic per sample (0 in the papers' convention)."""
        return float(sum(o.pj for o in self.operators))

    @property
    def ann_operator_pj(self) -> float:
        """The ANN modules' non-MAC arithmetic (LayerNorm, softmax, GELU) per sample, float32."""
        return float(sum(o.ann_pj for o in self.operators))

    @property
    def duration_s(self) -> float:
        return self.steps_run * self.timestep_s

    @property
    def chip_total_pj(self) -> float:
        return self.total("chip_pj") + (self.chip_static_pj or 0.0)

    def ratios(self) -> dict[str, float | None]:
        """SNN/ANN energy ratios: compute-only (papers') and fuller (memory included)."""
        ann_total = None if self.ann_compute_pj is None or self.ann_memory_pj is None else self.ann_compute_pj + self.ann_memory_pj
        out = {"compute_only": self.total("compute_pj") / self.ann_compute_pj if self.ann_compute_pj else None,
               "with_memory": self.total("total_pj") / ann_total if ann_total else None}
        if self.operators:
            ann_ops = None if self.ann_compute_pj is None else self.ann_compute_pj + self.ann_operator_pj
            out["compute_with_operators"] = ((self.total("compute_pj") + self.operator_pj) / ann_ops
                                             if ann_ops else None)
        return out

    def power_w(self) -> dict[str, float]:
        """Average power per inference over the run's duration."""
        d = self.duration_s
        return {"compute_only": self.total("compute_pj") * 1e-12 / d, "with_memory": self.total("total_pj") * 1e-12 / d,
                "chip": self.chip_total_pj * 1e-12 / d}

    def to_json(self) -> dict:
        return {
            "profile": self.profile, "timesteps": self.timesteps, "steps_run": self.steps_run, "samples": self.samples,
            "timestep_s": self.timestep_s, "duration_s": self.duration_s, "units": "pJ per sample, W",
            "figures": self.figures.to_json(), "chip_figures": self.chip_figures,
            "layers": [layer.to_json() for layer in self.layers],
            "snn": {"acs": self.total("acs"), "macs": self.total("macs"), "neuron_updates": self.total("neuron_updates"),
                    "events": self.total("events"), "compute_only_pj": self.total("compute_pj"),
                    "neuron_pj": self.total("neuron_pj"), "memory_pj": self.total("memory_pj"),
                    "with_memory_pj": self.total("total_pj")},
            "chip": {"dynamic_pj": self.total("chip_pj"), "static_pj": self.chip_static_pj, "total_pj": self.chip_total_pj},
            "ann": {"macs": self.ann_macs, "compute_only_pj": self.ann_compute_pj, "memory_pj": self.ann_memory_pj},
            "ratio_snn_over_ann": self.ratios(), "power_w": self.power_w(),
            **({"spike_power": self.spike_power} if self.spike_power is not None else {}),
            "assumptions": list(self.assumptions), "op_counts": self.counts.to_json(),
            **({"operators": {"convention": "papers' compute-only counts operators as zero; compute_with_operators "
                                            "adds their arithmetic by kind",
                              "per_sample_work": {k: sum(o.work[k] for o in self.operators) for k in OP_KINDS},
                              "snn_operator_pj": self.operator_pj, "ann_operator_pj": self.ann_operator_pj,
                              "snn_compute_with_operators_pj": self.total("compute_pj") + self.operator_pj,
                              "ann_compute_with_operators_pj": (None if self.ann_compute_pj is None
                                                                else self.ann_compute_pj + self.ann_operator_pj),
                              "by_operator": [o.to_json() for o in self.operators]}}
               if self.operators else {}),
        }

    # -------------------------------------------------------------- rendering
    def layer_table(self) -> Table:
        """Per-layer operations and energies (per sample)."""
        f = self.figures
        t = Table(title=f"energy per sample at T={self.timesteps} ({f.convention}: E_AC {f.e_ac} pJ, "
                        f"E_MAC {f.e_mac} pJ; SRAM {f.sram_64b} pJ/64 b; chip: {self.profile})")
        cols = ("layer", "ACs", "MACs", "neuron upd.", "events", "compute-only pJ", "neuron pJ", "memory pJ",
                "with memory pJ", f"{self.profile} pJ")
        for c in cols:
            t.add_column(c, justify="left" if c == "layer" else "right")
        for le in self.layers:
            t.add_row(le.name, f"{le.acs:,.0f}", f"{le.macs:,.0f}", f"{le.neuron_updates:,.0f}", f"{le.events:,.0f}",
                      f"{le.compute_pj:,.1f}", f"{le.neuron_pj:,.1f}", f"{le.memory_pj:,.1f}", f"{le.total_pj:,.1f}",
                      f"{le.chip_pj:,.1f}")
        t.add_row("total", f"{self.total('acs'):,.0f}", f"{self.total('macs'):,.0f}",
                  f"{self.total('neuron_updates'):,.0f}", f"{self.total('events'):,.0f}",
                  f"{self.total('compute_pj'):,.1f}", f"{self.total('neuron_pj'):,.1f}",
                  f"{self.total('memory_pj'):,.1f}", f"{self.total('total_pj'):,.1f}", f"{self.total('chip_pj'):,.1f}",
                  style="bold")
        return t

    def summary_table(self) -> Table:
        """SNN vs ANN totals, ratios and average power."""
        t = Table(title=f"energy summary (per sample; {self.steps_run} steps of {self.timestep_s * 1e3:g} ms)")
        for c in ("estimate", "energy per sample", "average power", "SNN / ANN"):
            t.add_column(c, justify="left" if c == "estimate" else "right")
        p, r = self.power_w(), self.ratios()
        ratio = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        t.add_row("SNN compute-only (papers')" + (", operators as 0" if self.operators else ""),
                  _pj(self.total("compute_pj")), _w(p["compute_only"]), ratio(r["compute_only"]))
        if self.operators:
            d = self.duration_s
            with_ops = self.total("compute_pj") + self.operator_pj
            t.add_row("SNN compute-only + operators' arithmetic", _pj(with_ops), _w(with_ops * 1e-12 / d),
                      ratio(r.get("compute_with_operators")))
        t.add_row("SNN with neuron updates + memory", _pj(self.total("total_pj")), _w(p["with_memory"]), ratio(r["with_memory"]))
        static = "" if self.chip_static_pj is None else f" (static {_pj(self.chip_static_pj)})"
        t.add_row(f"{self.profile} chip estimate{static}", _pj(self.chip_total_pj), _w(p["chip"]), "-")
        if self.ann_compute_pj is not None:
            t.add_row(f"ANN compute-only ({self.ann_macs:,} MACs)", _pj(self.ann_compute_pj), "-", "-")
            if self.operators:
                t.add_row("ANN compute-only + LayerNorm/softmax/GELU arithmetic",
                          _pj(self.ann_compute_pj + self.ann_operator_pj), "-", "-")
        if self.ann_memory_pj is not None:
            t.add_row("ANN with memory", _pj(self.ann_compute_pj + self.ann_memory_pj), "-", "-")
        return t

    def operator_table(self) -> Table:
        """Operators' arithmetic per sample by kind and its energy (operators with arithmetic only)."""
        t = Table(title="operators per sample (arithmetic by kind; 0 in the papers' convention)")
        for c in ("operator", "op", "runs on", "arithmetic") + OP_KINDS + ("pJ",):
            t.add_column(c, justify="left" if c in ("operator", "op", "runs on", "arithmetic") else "right")
        for o in self.operators:
            if o.pj or any(o.work.values()):
                t.add_row(o.name, o.op, o.runs_on, o.arithmetic, *(f"{o.work[k]:,.0f}" for k in OP_KINDS), f"{o.pj:,.1f}")
        t.add_row("total", "", "", "", *(f"{sum(o.work[k] for o in self.operators):,.0f}" for k in OP_KINDS),
                  f"{self.operator_pj:,.1f}", style="bold")
        return t

    def spike_power_table(self) -> Table:
        """PMSM's power figure (paper 002) from the measured neuron counts, both conventions."""
        sp = self.spike_power
        t = Table(title=f"PMSM power P = {sp['e_ac_pj']} pJ x N / (T x {sp['t_step_s'] * 1e3:g} ms) per sample, "
                        f"T = {sp['timesteps']} (ST-BIF / PMSM neurons' outputs)")
        for c in ("count", "N per sample", "P"):
            t.add_column(c, justify="left" if c == "count" else "right")
        t.add_row("events (a graded n != 0 is one event)", f"{sp['events']['per_sample']:,.1f}", _w(sp["events"]["power_w"]))
        t.add_row("spikes (n counted as |n| spikes, the paper's)", f"{sp['spikes']['per_sample']:,.1f}",
                  _w(sp["spikes"]["power_w"]))
        return t

    def tables(self) -> list[Table]:
        return ([self.layer_table()] + ([self.operator_table()] if self.operators else []) + [self.summary_table()]
                + ([self.spike_power_table()] if self.spike_power is not None else []))

    def plot(self, path: str | os.PathLike) -> Path:
        return plot_energy(self, path)


def _pj(v: float) -> str:
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:,.3f} {unit}"
    return f"{v:,.1f} pJ"


def _w(v: float) -> str:
    for unit, scale in (("W", 1.0), ("mW", 1e-3), ("uW", 1e-6)):
        if abs(v) >= scale:
            return f"{v / scale:,.3f} {unit}"
    return f"{v / 1e-9:,.3f} nW"


# ------------------------------------------------------------------------------ the estimate
def _event_pj(payload: str, energy) -> float:
    if payload in ("graded", "signed", "analog") and energy.packet_payload_pj is not None:
        return energy.packet_payload_pj
    return energy.spike_pj or 0.0


def _ann_figures(ann_macs, fig: HorowitzFigures) -> tuple[int | None, float | None, float | None]:
    if ann_macs is None:
        return None, None, None
    if isinstance(ann_macs, (int, float)):
        macs = int(ann_macs)
        return macs, macs * fig.e_mac, None
    macs = int(ann_macs.total_macs)
    outputs = int(sum(row.outputs for row in ann_macs.rows if row.macs))
    memory = (2 * macs + outputs) * fig.word_bits / 64 * fig.sram_64b
    return macs, macs * fig.e_mac, memory


def energy_report(net, x, timesteps: int, profile, *, ann_macs=None, convention: str = "fp32",
                  timestep_s: float = 1e-3, graded_as: str = "ac", count_zero_weights: bool = True,
                  sram_pj_per_64b: float | None = None, counts: OpCounts | None = None, result=None,
                  placement=None, batch_size: int = 256, device=None) -> EnergyReport:
    """Count the operations of ``net`` on ``x`` for ``timesteps`` and estimate energy per sample.

    profile     a Profile or its name (its energy figures, limits and assumptions are used)
    ann_macs    ANN baseline: a MAC count or a ``frontend.macs.MacCount`` (adds the ANN memory model)
    convention  Horowitz figures: 'fp32' (E_AC 0.9, E_MAC 4.6 pJ), 'int8' or 'int32'
    counts      precomputed ``OpCounts`` (skips the simulation); ``result`` a SimResult with spikes
    placement   a ``compiler.partition.Placement`` for static/core power (computed when omitted)
    """
    if timestep_s <= 0:
        raise ValueError(f"energy: timestep_s must be > 0, got {timestep_s}")
    prof = load_profile(profile) if isinstance(profile, (str, os.PathLike)) else profile
    if counts is None:
        counts = count_ops(net, x, timesteps, result=result, graded_as=graded_as,
                           count_zero_weights=count_zero_weights, batch_size=batch_size, device=device)
    fig = horowitz(convention, prof.limits.memory_per_core_bytes, sram_pj_per_64b)
    lim, en = prof.limits, prof.energy
    wbits, state_bits = lim.synapse_word_bits, 8 * lim.neuron_state_bytes
    acc_bits = net.datapath.current_bits if net.quantized else prof.datapath.current_bits
    idle_pj = en.neuron_update_idle_pj if en.neuron_update_idle_pj is not None else en.neuron_update_pj
    n = counts.samples
    layers = []
    for lo in counts.layers.values():
        tot = {k: lo.total(k) / n for k in ("acs", "macs", "neuron_updates", "active_updates", "events",
                                            "weight_reads", "accumulator_rmw", "state_reads", "state_writes")}
        bits = (tot["weight_reads"] * wbits + 2 * tot["accumulator_rmw"] * acc_bits
                + (tot["state_reads"] + tot["state_writes"]) * state_bits)
        chip = ((tot["acs"] + tot["macs"]) * en.synaptic_op_pj + tot["active_updates"] * en.neuron_update_pj
                + (tot["neuron_updates"] - tot["active_updates"]) * idle_pj + tot["events"] * _event_pj(lo.payload, en))
        layers.append(LayerEnergy(lo.name, tot["acs"], tot["macs"], tot["neuron_updates"], tot["active_updates"],
                                  tot["events"], tot["acs"] * fig.e_ac + tot["macs"] * fig.e_mac,
                                  tot["neuron_updates"] * fig.e_ac, bits / 64 * fig.sram_64b, chip))
    notes = [f"Compute-only = ACs x E_AC + MACs x E_MAC ({fig.convention}, Horowitz ISSCC 2014, 45 nm); "
             f"counting rules and conventions (graded_as={counts.graded_as!r}, "
             f"count_zero_weights={counts.count_zero_weights}) in docs/energy.md.",
             f"Memory: one {wbits}-bit synapse-word read and a {acc_bits}-bit accumulator read+write per synaptic op, "
             f"one {state_bits}-bit state read+write per neuron update, each at {fig.sram_64b} pJ per 64 bits "
             f"({fig.sram_row}, chosen for {lim.memory_per_core_bytes} bytes per core) scaled by bits/64.",
             "Fuller estimate counts one E_AC per neuron update (generic45nm convention).",
             f"Average power = energy per sample / ({counts.steps_run} steps x {timestep_s} s).",
             f"Chip estimate: {prof.name} figures per synaptic op ({en.synaptic_op_pj} pJ), active / idle neuron "
             f"update ({en.neuron_update_pj} / {idle_pj} pJ) and event; router hops are not modelled."]
    static = None
    if en.static_power_w is not None or en.core_power_w is not None:
        if placement is None:
            from ..compiler.partition import ResourceError, partition
            try:
                placement = partition(net, prof)
            except ResourceError as e:
                notes.append(f"static/core power left out: the network does not map ({e})")
        if placement is not None:
            watts = (en.static_power_w or 0.0) * placement.chips + (en.core_power_w or 0.0) * placement.cores
            static = watts * counts.steps_run * timestep_s * 1e12
            notes.append(f"Static energy: ({en.static_power_w or 0} W x {placement.chips} chips + "
                         f"{en.core_power_w or 0} W x {placement.cores} cores) x run duration.")
    ann, ann_c, ann_m = _ann_figures(ann_macs, fig)
    if ann_m is not None:
        notes.append(f"ANN memory: one {fig.word_bits}-bit weight read and activation read per MAC, one write per "
                     "output, same SRAM figure.")
    ops = operator_energies(counts)
    if ops:
        notes.extend(operator_assumptions())
    chip_figs = {k: v for k, v in en.__dict__.items() if v is not None and not k.startswith(("int", "fp", "sram", "dram"))}
    spike_power = None
    if getattr(counts, "neuron_spikes", None):   # C2 ST-BIF / PMSM (simulator/opcount_c2.py)
        from .pmsm_power import pmsm_power
        spike_power = pmsm_power(sum(counts.neuron_events.values()), sum(counts.neuron_spikes.values()), n,
                                 counts.timesteps, t_step_s=timestep_s)
        notes.append("PMSM power (paper 002): P = 0.9 pJ x N / (T x t_step) per sample from the measured ST-BIF / PMSM "
                     "outputs, N as events (a graded n is one event) and as spikes (|n| each).")
    return EnergyReport(prof.name, counts.timesteps, counts.steps_run, n, timestep_s, fig, layers, static, ann, ann_c,
                        ann_m, counts, chip_figs, notes + [f"{prof.name}: {a}" for a in prof.assumptions], ops,
                        spike_power)


def plot_energy(report: EnergyReport, path: str | os.PathLike) -> Path:
    """Per-layer bars: compute-only, + neuron updates, + memory (stacked), and the chip estimate."""
    import numpy as np

    from .plots import _save, plt
    layers = [le for le in report.layers if le.total_pj or le.chip_pj]
    names = [le.name for le in layers]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4))
    comp = np.array([le.compute_pj for le in layers])
    neur = np.array([le.neuron_pj for le in layers])
    mem = np.array([le.memory_pj for le in layers])
    ax.bar(x - 0.2, comp, 0.4, label=f"compute-only ({report.figures.convention})")
    ax.bar(x - 0.2, neur, 0.4, bottom=comp, label="neuron updates")
    ax.bar(x - 0.2, mem, 0.4, bottom=comp + neur, label="memory access")
    ax.bar(x + 0.2, [le.chip_pj for le in layers], 0.4, label=f"{report.profile} estimate")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("energy per sample (pJ)")
    ax.set_title(f"energy per layer, T={report.timesteps}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)
