"""Where a network's Transformer operators run on a profile, and what they occupy there.

The profile's ``[operators]`` table (hw_profiles, docs/hw_profiles.md) lists the operator kinds each
place can run: ``neuro`` (wiring: Rearrange / Concat pick which neuron feeds which synapse, no core
of their own), ``embedded`` (programmable cores: Loihi's x86 cores, SpiNNaker's ARM cores, which
there are taken from the neuron pool), ``host``. Rules, per operator:

* the IR's ``runs_on`` is kept when the profile runs that kind there; a float network (not yet
  compiled for a chip) otherwise takes the profile's first place for the kind (neuro, embedded,
  host) and the placement notes the move; a quantised network must already say a place the profile
  allows, in an arithmetic it allows there (``embedded_arithmetic``);
* a kind the profile runs nowhere, or a profile without ``[operators]``, is a PlacementError naming
  the node, the op and the profile.

What they occupy (closed forms of the shapes, per sample): state words of 4 bytes (an EC operator
keeps ``S`` and ``P``; a matrix-product EC ``S_A``, ``S_B``, ``S_K`` and the previous mean; a C2
operator ``S`` and ``F(S(t-1))``, the C2 product ``S_A``, ``S_B`` and the previous product), and
the worst-case arithmetic of one step (every input neuron emitting; ``simulator.operator_work``).
Embedded cores needed: ``ceil(state / embedded_memory_bytes)`` when the profile gives the memory
of one embedded core (an operator larger than one core is split by rows over several), else one
(the state is reported, not checked). Chips: on separate embedded cores, at least
``ceil(cores / embedded_cores_per_chip)``; on the neuron cores (SpiNNaker), the operator cores are
added to the neuro cores and need ``ceil(total / cores_per_chip)`` chips at least.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpikeportError
from ..ir import operators as O
from ..ir import operators_c2 as C2
from ..ir.graph import Network
from ..ir.nodes import Population
from ..ir.operators_mbe import _IdentityPair as _MBE_PAIR
from ..simulator.operator_work import OP_KINDS, add_work, step_work, work

STATE_WORD_BYTES = 4


class PlacementError(SpikeportError):
    """An operator the profile cannot place: names the node, the op, the profile and why."""


@dataclass
class OperatorUse:
    """One operator: where it runs, in which arithmetic, its state and its worst-case work per step."""

    name: str
    op: str
    place: str
    arithmetic: str
    state_bytes: int
    work_per_step: dict[str, int]
    note: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OperatorPlacement:
    """All operators of a network on one profile and the embedded cores they need."""

    profile: str
    operators: list[OperatorUse]
    embedded_cores: int                 # embedded cores in use (network total)
    embedded_cores_per_chip: int
    on_neuro_cores: bool                # embedded cores are taken from the neuron cores (SpiNNaker)
    embedded_memory_bytes: int | None
    min_chips: int                      # chips the operators alone need
    notes: list[str] = field(default_factory=list)

    def count(self, place: str) -> int:
        return sum(1 for u in self.operators if u.place == place)

    def state_bytes(self, place: str) -> int:
        return sum(u.state_bytes for u in self.operators if u.place == place)

    def work_per_step(self, place: str) -> dict[str, int]:
        return add_work(*(u.work_per_step for u in self.operators if u.place == place)) if self.count(place) \
            else work()

    @property
    def cores_on_neuro(self) -> int:
        return self.embedded_cores if self.on_neuro_cores else 0

    def to_json(self) -> dict:
        return {"profile": self.profile, "embedded_cores": self.embedded_cores,
                "embedded_cores_per_chip": self.embedded_cores_per_chip, "on_neuro_cores": self.on_neuro_cores,
                "embedded_memory_bytes": self.embedded_memory_bytes, "min_chips": self.min_chips,
                "per_place": {p: {"operators": self.count(p), "state_bytes": self.state_bytes(p),
                                  "work_per_step_per_sample": self.work_per_step(p)} for p in O.RUNS_ON},
                "notes": list(self.notes), "operators": [u.to_json() for u in self.operators]}


def _state_bytes(op: O.TypedOperator, shapes: list[tuple[int, ...]]) -> int:
    size = int(np.prod(op.shape, dtype=np.int64))
    if isinstance(op, (O.ECOperator, C2.C2Operator)):      # S and P (C2: S and F(S(t-1)))
        words = 2 * size
    elif isinstance(op, O.MatMulEC):
        words = sum(int(np.prod(s, dtype=np.int64)) for s in shapes) + 2 * size
    elif isinstance(op, (_MBE_PAIR, C2.MatMulC2)):  # products (C3 MBE form, C2 difference form): operands' sums, output
        words = sum(int(np.prod(s, dtype=np.int64)) for s in shapes) + size
    else:
        words = 0
    return words * STATE_WORD_BYTES


def _place(net: Network, op: O.TypedOperator, profile) -> tuple[str, str]:
    kind = type(op).__name__
    ops = profile.operators
    where = f"operator {op.name!r} ({kind}) cannot be placed on profile {profile.name!r}"
    if ops is None:
        raise PlacementError(f"{where}: the profile has no [operators] table, so it places no operator "
                             "(docs/hw_profiles.md)")
    places = ops.places(kind)
    if not places:
        raise PlacementError(f"{where}: the profile runs {kind} nowhere (neuro: {list(ops.neuro)}, "
                             f"embedded: {list(ops.embedded)}, host: {list(ops.host)})")
    place, note = op.runs_on, ""
    if place not in places:
        if net.quantized:
            raise PlacementError(f"{where}: the network says runs_on = {op.runs_on!r}, the profile runs {kind} on "
                                 f"{' / '.join(places)} only")
        place = places[0]
        note = f"the IR asks for {op.runs_on}; {profile.name} runs {kind} on {place}"
    if net.quantized and place == "embedded" and op.arithmetic not in ops.embedded_arithmetic + ("none",):
        raise PlacementError(f"{where}: arithmetic {op.arithmetic!r} on embedded cores, the profile's embedded "
                             f"cores run {list(ops.embedded_arithmetic)}")
    return place, note


def place_operators(net: Network, profile, neuro_cores: int = 0, cores_per_chip: int | None = None
                    ) -> OperatorPlacement | None:
    """Place every operator of ``net`` on ``profile`` (None when the network has none).
    ``neuro_cores``: cores the populations use (for the chip bound when operators share them)."""
    if not net.operators():
        return None
    uses = []
    for op in net.operators():
        if not isinstance(op, O.TypedOperator):
            raise PlacementError(f"operator {op.name!r} (op {op.op!r}) cannot be placed on profile {profile.name!r}: "
                                 "untyped operators say neither where they run nor in which arithmetic")
        place, note = _place(net, op, profile)
        shapes = [tuple(net.shape_of(i)) for i in op.inputs]
        events = [int(np.prod(s, dtype=np.int64)) if isinstance(net[i], Population) and net[i].neuron.spiking else None
                  for i, s in zip(op.inputs, shapes)]
        per_step = step_work(op, shapes, 2, events)      # worst case: every spiking input neuron emits
        arithmetic = "none" if not any(per_step[k] for k in OP_KINDS) else op.arithmetic
        uses.append(OperatorUse(op.name, type(op).__name__, place, arithmetic,
                                _state_bytes(op, shapes) if place != "neuro" else 0, per_step, note))
    ops = profile.operators
    emb = [u for u in uses if u.place == "embedded"]
    moved: dict[str, list[str]] = {}
    for u in uses:
        if u.note:
            moved.setdefault(f"the IR asks for {net[u.name].runs_on}; {profile.name} runs them on {u.place}", []).append(u.name)
    notes = [f"{len(names)} operator(s) moved: {why} ({', '.join(repr(n) for n in names[:3])}"
             f"{', ...' if len(names) > 3 else ''})" for why, names in moved.items()]
    state = sum(u.state_bytes for u in emb)
    if not emb:
        cores = 0
    elif ops.embedded_memory_bytes:
        cores = max(1, math.ceil(state / ops.embedded_memory_bytes))
        big = [u.name for u in emb if u.state_bytes > ops.embedded_memory_bytes]
        if big:
            notes.append(f"{len(big)} operator(s) hold more state than one embedded core's "
                         f"{ops.embedded_memory_bytes} bytes and are split by rows (first: {big[0]!r})")
    else:
        cores = 1
        notes.append(f"embedded memory of {profile.name} not published: {state} bytes of operator state reported, "
                     "not checked; one embedded core counted")
    if ops.embedded_on_neuro_cores:
        per_chip = cores_per_chip or ops.embedded_cores_per_chip
        min_chips = math.ceil((neuro_cores + cores) / per_chip) if cores else 0
    else:
        min_chips = math.ceil(cores / ops.embedded_cores_per_chip) if cores else 0
    pairs = [op for op in net.operators() if isinstance(op, _MBE_PAIR)]
    if pairs:
        ids = {(i, float(sc)): int(np.prod(net.shape_of(i), dtype=np.int64)) * int(np.asarray(op.w).size)
               for op in pairs for i, sc in zip(op.inputs, (op.scale_a, op.scale_b))}   # shared ones once
        n_id = sum(ids.values())
        notes.append(f"{len(pairs)} MBE product operator(s): their identity MBE neurons ({n_id} basis neurons, one per "
                     "operand element, branch and basis, as a chip holds them) run on neuro cores and are not "
                     "partitioned here; the pairing (integer sums and their product) runs on the embedded cores")
    host = [u for u in uses if u.place == "host"]
    if host:
        notes.append(f"{len(host)} operator(s) run on the host in float32: every step their inputs leave the chip "
                     "and their outputs return (host I/O not modelled)")
    return OperatorPlacement(profile.name, uses, cores, ops.embedded_cores_per_chip, ops.embedded_on_neuro_cores,
                             ops.embedded_memory_bytes, min_chips, notes)
