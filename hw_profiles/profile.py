"""Typed view of one hardware profile: datapath, resource limits, energy figures and their sources.

Fields are explicit so that resource and energy estimators can rely on them; ``None`` means the
figure is not published for that chip (the profile's ``assumptions`` then say how to model it).
The TOML schema is documented in docs/hw_profiles.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..ir import Datapath
from ..errors import SpikeportError


class ProfileError(SpikeportError):
    """A profile file breaks the schema; the message names the file, the key, the value and the rule."""


@dataclass(frozen=True)
class Limits:
    """Per-core / per-chip capacity of the chip (counts, bytes, bits). Required unless typed ``| None``.

    neurons_per_core          largest number of neurons (compartments) one core holds
    cores_per_chip            neuro cores (application cores) usable for neurons
    memory_per_core_bytes     memory of one core for synapses + neuron state + routing
                              (Loihi: 128 KB synaptic / 192 KB flexible; SpiNNaker: DTCM)
    synapse_word_bits         bits one stored synapse occupies (weight, index, delay, type)
    neuron_state_bytes        bytes of per-neuron state a core stores for one IF/LIF neuron
    max_neurons_per_chip      neurons one chip can hold (datasheet figure)
    max_delay_steps           largest programmable synaptic delay in steps
    fan_in_per_core           distinct input axons a core accepts (None: not public)
    fan_out_per_core          distinct output axons a core drives (None: not public)
    synapse_memory_per_core_bytes  part of the core memory reserved for synapses (None: shared pool)
    sdram_per_chip_bytes      off-core memory per chip holding synaptic matrices (SpiNNaker)
    max_synapses_per_chip     synapses one chip can hold (datasheet figure)
    router_entries            routing table entries per chip router
    router_entries_usable     entries left to the application (SpiNNaker 1: one is reserved)
    axon_entry_bytes          bytes of the core's input-axon table per distinct source neuron (None: not modelled)
    router_packets_per_s      packets one chip's router can route per second (None: not modelled)
    link_packets_per_s        40-bit packets one inter-chip link carries per second (None: not modelled)
    conv_weights              how conv projections are stored: 'expanded' (every target neuron keeps its own
                              synapse list, like a sparse matrix) or 'shared' (one kernel copy per core)
    """

    neurons_per_core: int
    cores_per_chip: int
    memory_per_core_bytes: int
    synapse_word_bits: int
    neuron_state_bytes: int
    max_neurons_per_chip: int
    max_delay_steps: int
    fan_in_per_core: int | None = None
    fan_out_per_core: int | None = None
    synapse_memory_per_core_bytes: int | None = None
    sdram_per_chip_bytes: int | None = None
    max_synapses_per_chip: int | None = None
    router_entries: int | None = None
    router_entries_usable: int | None = None
    axon_entry_bytes: int | None = None
    router_packets_per_s: int | None = None
    link_packets_per_s: int | None = None
    conv_weights: str = "expanded"


CONV_WEIGHT_FORMATS = ("expanded", "shared")


@dataclass(frozen=True)
class Energy:
    """Energy per operation in picojoules (pJ) and power in watts (W). Required unless ``| None``.

    synaptic_op_pj          one synaptic event (one spike/payload reaching one synapse, incl. fetch)
    neuron_update_pj        one active neuron update in one step
    neuron_update_idle_pj   one update of a neuron that receives nothing (None: same as active)
    spike_pj                sending one spike / packet inside a chip (one tile or router)
    hop_pj                  one extra router hop of a spike packet
    bit_routed_pj           per bit of a routed packet (SpiNNaker energy model)
    packet_pj               one packet without payload; packet_payload_pj one packet with payload
    static_power_w          idle (static) power of one chip
    core_power_w            additional power of one active core
    ac_pj / mac_pj          accumulate / multiply-accumulate of the papers' convention (Horowitz)
    int8_add_pj ... dram_64b_pj   Horowitz 45 nm table (hardware.md section 5)
    """

    synaptic_op_pj: float
    neuron_update_pj: float
    neuron_update_idle_pj: float | None = None
    spike_pj: float | None = None
    hop_pj: float | None = None
    bit_routed_pj: float | None = None
    packet_pj: float | None = None
    packet_payload_pj: float | None = None
    static_power_w: float | None = None
    core_power_w: float | None = None
    ac_pj: float | None = None
    mac_pj: float | None = None
    int8_add_pj: float | None = None
    int8_mult_pj: float | None = None
    int32_add_pj: float | None = None
    int32_mult_pj: float | None = None
    fp16_add_pj: float | None = None
    fp16_mult_pj: float | None = None
    fp32_add_pj: float | None = None
    fp32_mult_pj: float | None = None
    sram_8kb_64b_pj: float | None = None
    sram_32kb_64b_pj: float | None = None
    sram_1mb_64b_pj: float | None = None
    dram_64b_pj: float | None = None


PLACES = ("neuro", "embedded", "host")


@dataclass(frozen=True)
class Operators:
    """Where the chip runs operators that are neither synapses nor neurons (hardware.md section 7).

    neuro / embedded / host   operator kinds (``ir.operators`` class names) each place can run:
                              ``neuro`` = wiring on the neuro cores' routing (no core of its own),
                              ``embedded`` = programmable cores of the chip, ``host`` = the computer
                              driving it (float32 there)
    embedded_cores_per_chip   programmable cores per chip for operators (0: none)
    embedded_on_neuro_cores   operators run on the same application cores as neurons (SpiNNaker):
                              every core they need is one core fewer for neurons
    embedded_memory_bytes     memory of one embedded core for operator state (None: not published)
    embedded_arithmetic       arithmetics embedded code runs ("fixed", "float32")
    embedded_ops_per_s        operations per second of one embedded core (None: not modelled)
    """

    neuro: tuple[str, ...] = ()
    embedded: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    embedded_cores_per_chip: int = 0
    embedded_on_neuro_cores: bool = False
    embedded_memory_bytes: int | None = None
    embedded_arithmetic: tuple[str, ...] = ("fixed",)
    embedded_ops_per_s: int | None = None

    def places(self, kind: str) -> tuple[str, ...]:
        """The places (in the order neuro, embedded, host) that can run operator ``kind``."""
        return tuple(p for p in PLACES if kind in getattr(self, p))


PROFILE_KINDS = ("loihi", "spinnaker", "generic")


@dataclass(frozen=True)
class Profile:
    """One chip as data. ``sources`` maps ``section.key`` (or a whole ``section``) to a citation;
    ``assumptions`` lists every modelling choice not backed by a published figure."""

    name: str
    description: str
    kind: str
    datapath: Datapath
    limits: Limits
    energy: Energy
    sources: dict[str, str] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()
    path: Path | None = None
    operators: Operators | None = None   # None: the profile places no operator (section [operators] absent)

    def source_of(self, section: str, key: str) -> str:
        """Citation for one number (falls back to the section-wide citation)."""
        return self.sources.get(f"{section}.{key}") or self.sources.get(section, "")
