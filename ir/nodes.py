"""IR node types: neuron populations, synaptic projections, inputs and non-spiking operators.

Every node is a small dataclass whose docstring states the equation it stands for. Arrays are numpy;
per-neuron parameters may be given as a scalar, per channel (shape ``(C,)`` for a population of shape
``(C, ...)``) or per neuron (the full population shape) and broadcast with :func:`expand_channel`.

Float graphs hold real values. Quantised graphs (``Network.datapath`` set) hold integers in the same
fields and keep, per node, the scale each integer came from (``state_scale`` on populations,
``scale`` on projections) so a float view can be recovered: ``float = int * scale``.

Time (see docs/ir.md "Timing"): a simulation of ``T`` steps presents the input during steps
``[0, T)``. A projection with ``delay`` d delivers at step t what its source emitted at step ``t - d``.
A population with ``t_start`` k is active during ``[k, k + T)`` and frozen (no bias, no update, no
spikes) outside it, so pipeline latency shifts spike trains without changing them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

ArrayLike = np.ndarray


def as_array(value, dtype=None) -> np.ndarray:
    """Return ``value`` as a numpy array (scalars become 0-d arrays)."""
    arr = np.asarray(value)
    return arr.astype(dtype) if dtype is not None else arr


def expand_channel(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a scalar, per-channel ``(C,)`` or full-shape parameter to ``shape``.

    A per-channel vector applies along axis 0 (channels first, as in PyTorch's (C, H, W)).
    """
    p = np.asarray(param)
    if p.ndim == 0 or p.shape == tuple(shape):
        return np.broadcast_to(p, shape).copy()
    if p.ndim == 1 and len(shape) >= 1 and p.shape[0] == shape[0]:
        return np.broadcast_to(p.reshape((shape[0],) + (1,) * (len(shape) - 1)), shape).copy()
    raise ValueError(f"parameter of shape {p.shape} cannot be broadcast to population shape {shape} "
                     f"(expected a scalar, ({shape[0] if shape else 1},) per channel, or {shape})")


def param_ok(param: np.ndarray, shape: tuple[int, ...]) -> bool:
    p = np.asarray(param)
    return p.ndim == 0 or p.shape == tuple(shape) or (p.ndim == 1 and len(shape) >= 1 and p.shape[0] == shape[0])


def check_if_rules(model, where: str) -> None:
    """Reset, comparison and negative-threshold rules shared by the IF family."""
    if model.reset not in ("subtract", "zero"):
        raise ValueError(f"{where}: reset {model.reset!r} must be 'subtract' or 'zero'")
    if model.compare not in (">=", ">"):
        raise ValueError(f"{where}: compare {model.compare!r} must be '>=' or '>'")
    if (model.neg_threshold is None) != (model.neg_reset is None):
        raise ValueError(f"{where}: neg_threshold and neg_reset must be set together")


def check_array_fields(model, where: str, shape: tuple[int, ...]) -> None:
    """Every set ``model.array_fields`` broadcasts to ``shape``; a ``threshold`` field is > 0."""
    for name in model.array_fields:
        value = getattr(model, name)
        if value is not None and not param_ok(value, shape):
            raise ValueError(f"{where}: {name} has shape {np.shape(value)}, population shape is {shape}")
    if hasattr(model, "threshold") and np.any(np.asarray(model.threshold) <= 0):
        raise ValueError(f"{where}: threshold must be > 0 (min {np.min(model.threshold)})")


# --------------------------------------------------------------------------------------------------
# Spike payloads
# --------------------------------------------------------------------------------------------------
PAYLOAD_KINDS = ("binary", "signed", "graded", "analog")


@dataclass
class SpikePayload:
    """What one event carries.

    kind      ``binary``: s in {0, 1}; ``signed``: s in {-1, 0, 1}; ``graded``: integer s in
              [min_level, max_level] sent as one event with a ``bits``-bit payload; ``analog``: a
              real value (only for non-spiking sources such as a C1 analog input).
    neg_value value delivered by a negative event, in units of a positive event's value (NegSpike's
              beta: a -1 spike arrives as ``-neg_value``). 1.0 for symmetric payloads.
    The emitted value is ``s`` for s >= 0 and ``s * neg_value`` for s < 0.
    """

    kind: str = "binary"
    bits: int = 1
    min_level: int = 0
    max_level: int = 1
    neg_value: float = 1.0

    def validate(self, where: str) -> None:
        if self.kind not in PAYLOAD_KINDS:
            raise ValueError(f"{where}: payload kind {self.kind!r} is not one of {PAYLOAD_KINDS}")
        if self.kind != "analog" and not (self.min_level <= 0 <= self.max_level):
            raise ValueError(f"{where}: payload levels [{self.min_level}, {self.max_level}] must contain 0")
        if self.bits < 1 or self.bits > 32:
            raise ValueError(f"{where}: payload bits {self.bits} outside 1..32")

    @property
    def max_abs(self) -> float:
        """Largest |value| one event can deliver (bounds for exact arithmetic)."""
        return float(max(abs(self.max_level), abs(self.min_level) * abs(self.neg_value)))


# --------------------------------------------------------------------------------------------------
# Neuron models
# --------------------------------------------------------------------------------------------------
@dataclass
class NeuronModel:
    """Base class of neuron models. ``spiking`` is False for non-spiking readouts."""

    spiking: ClassVar[bool] = True


@dataclass
class IF(NeuronModel):
    """Integrate-and-fire family (IF, signed IF, leaky IF), per step t while active::

        v   <- v * (1 - leak) + I(t) + bias
        s    = +1  if v CMP threshold                 (CMP is '>=' or '>', ``compare``)
               -1  if neg_threshold is set and v < -neg_threshold   (strict)
                0  otherwise
        reset 'subtract': v -= threshold  (s = +1);  v += neg_reset  (s = -1)
              'zero':     v  = 0 where s != 0

    ``v(0) = v_init``. Parameters are scalar, per channel or per neuron. With ``neg_threshold``
    unset the neuron is unsigned (binary spikes). AIF uses neg_threshold = 0, neg_reset = threshold;
    NegSpike uses neg_threshold = neg_reset = N_th. In a quantised graph all of these are integers in
    units of the population's ``state_scale`` and ``leak`` is the 12-bit decay ``dv`` (v*(4096-dv)>>12).
    """

    threshold: ArrayLike = field(default_factory=lambda: np.array(1.0))
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.0))
    reset: str = "subtract"
    compare: str = ">="
    leak: float = 0.0
    neg_threshold: ArrayLike | None = None
    neg_reset: ArrayLike | None = None

    array_fields: ClassVar[tuple[str, ...]] = ("threshold", "bias", "v_init", "neg_threshold", "neg_reset")

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        check_if_rules(self, where)
        check_array_fields(self, where, shape)


@dataclass
class Readout(NeuronModel):
    """Non-spiking accumulator used for output layers, per step t while active::

        v <- v + I(t) + bias          decoded output = v(T) / T   (C1)   or  v(T)   (C2)

    It never fires; hardware realises it as a neuron whose threshold is never reached.
    """

    spiking: ClassVar[bool] = False
    bias: ArrayLike = field(default_factory=lambda: np.array(0.0))
    v_init: ArrayLike = field(default_factory=lambda: np.array(0.0))

    array_fields: ClassVar[tuple[str, ...]] = ("bias", "v_init")

    def validate(self, where: str, shape: tuple[int, ...]) -> None:
        check_array_fields(self, where, shape)


NEURON_TYPES: dict[str, type[NeuronModel]] = {"IF": IF, "Readout": Readout}


def register_neuron(cls: type[NeuronModel]) -> type[NeuronModel]:
    """Class decorator: make a neuron model known to the HDF5 loader and validator."""
    NEURON_TYPES[cls.__name__] = cls
    return cls


# --------------------------------------------------------------------------------------------------
# Graph nodes
# --------------------------------------------------------------------------------------------------
@dataclass
class Node:
    """Base of every graph node. ``name`` is unique in a network."""

    name: str

    kind: ClassVar[str] = "node"


@dataclass
class Input(Node):
    """Network input of ``shape`` (one sample, no batch axis).

    coding   ``analog``: the real-valued sample enters every step (C1 rate coding, first layer is
             multiply-accumulate); ``once``: enters at step 0 only (C2); ``spikes``: the data already
             holds a spike train of shape (N, T, *shape).
    scale    value of one payload unit. Float graphs: 1.0. Quantised graphs carry graded integers:
             ``x_int = clip(floor(x / scale + 1/2), payload.min_level, payload.max_level)``
             (round half up).
    """

    shape: tuple[int, ...] = ()
    coding: str = "analog"
    scale: float = 1.0
    payload: SpikePayload = field(default_factory=lambda: SpikePayload(kind="analog", bits=32, min_level=0, max_level=0))

    kind: ClassVar[str] = "input"

    def __post_init__(self) -> None:
        # Pre-encoded spike trains default to binary events rather than the analog default.
        if self.coding == "spikes" and self.payload.kind == "analog":
            self.payload = SpikePayload()

    def validate(self) -> None:
        if self.coding not in ("analog", "once", "spikes"):
            raise ValueError(f"input {self.name!r}: coding {self.coding!r} must be analog, once or spikes")
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise ValueError(f"input {self.name!r}: shape {self.shape} must be non-empty and positive")
        self.payload.validate(f"input {self.name!r}")


@dataclass
class Population(Node):
    """A group of neurons of one model, shape ``(C, H, W)`` or ``(N,)``.

    Its input current is the sum of all projections targeting it. ``decode_scale`` (per channel)
    is the ANN activation value of one +1 event and ``decode_offset`` (AIF's z) is added after
    decoding, so the population's decoded activation is ``mean_t(value(s)) * decode_scale +
    decode_offset``. ``source`` names the ANN graph node this population stands for (used by
    fidelity reports). ``state_scale`` is the real value of one integer unit of membrane state in a
    quantised graph (1.0 in float graphs; scalar or per channel).
    """

    shape: tuple[int, ...] = ()
    neuron: NeuronModel = field(default_factory=IF)
    payload: SpikePayload = field(default_factory=SpikePayload)
    decode_scale: ArrayLike = field(default_factory=lambda: np.array(1.0))
    decode_offset: ArrayLike = field(default_factory=lambda: np.array(0.0))
    t_start: int = 0
    source: str = ""
    state_scale: ArrayLike = field(default_factory=lambda: np.array(1.0))

    kind: ClassVar[str] = "population"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    def validate(self) -> None:
        where = f"population {self.name!r}"
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise ValueError(f"{where}: shape {self.shape} must be non-empty and positive")
        self.neuron.validate(where, tuple(self.shape))
        self.payload.validate(where)
        for name in ("decode_scale", "decode_offset", "state_scale"):
            if not param_ok(getattr(self, name), tuple(self.shape)):
                raise ValueError(f"{where}: {name} has shape {np.shape(getattr(self, name))}, population shape is {self.shape}")
        if self.t_start < 0:
            raise ValueError(f"{where}: t_start {self.t_start} must be >= 0")


@dataclass
class Projection(Node):
    """Synapses from one source (input or population) to one target population.

    Delivers ``I_target(t) += op(value(s_source(t - delay)))`` where ``op`` is the connectivity of
    the subclass. In a quantised graph ``weight`` holds integer mantissas, the accumulated integer
    sum is shifted by ``weight_exp`` (floor), and ``scale`` (scalar or per target channel) is the
    real value of one unit of the shifted sum in the target's current per unit of source payload,
    so ``float weight = weight * 2**weight_exp * scale``.
    """

    source: str = ""
    target: str = ""
    weight: ArrayLike = field(default_factory=lambda: np.zeros((0, 0)))
    delay: int = 0
    weight_exp: int = 0
    scale: ArrayLike = field(default_factory=lambda: np.array(1.0))

    kind: ClassVar[str] = "projection"
    connectivity: ClassVar[str] = "abstract"

    def fan_in(self) -> int:
        raise NotImplementedError

    def validate_shapes(self, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def _where(self) -> str:
        return f"projection {self.name!r} ({self.source} -> {self.target})"

    def validate_common(self) -> None:
        if self.delay < 0:
            raise ValueError(f"{self._where()}: delay {self.delay} must be >= 0")
        w = np.asarray(self.weight)
        if w.dtype.kind not in "biu" and not np.all(np.isfinite(w.astype(float, copy=False))):  # integers are finite
            raise ValueError(f"{self._where()}: weight contains NaN or infinity")


@dataclass
class Dense(Projection):
    """All-to-all: ``I[i] += sum_j weight[i, j] * x[j]``, weight shape (N_out, N_in); the source is
    flattened in C order (PyTorch's flatten), the target likewise."""

    connectivity: ClassVar[str] = "dense"

    def fan_in(self) -> int:
        return int(np.asarray(self.weight).shape[1])

    def validate_shapes(self, src_shape, dst_shape) -> None:
        w = np.asarray(self.weight)
        want = (int(np.prod(dst_shape)), int(np.prod(src_shape)))
        if w.shape != want:
            raise ValueError(f"{self._where()}: weight shape {w.shape}, expected {want} from source {src_shape} and target {dst_shape}")


@dataclass
class Conv2d(Projection):
    """2-D convolution (PyTorch cross-correlation):
    ``I[o, y, x] += sum_{c, i, j} weight[o, c, i, j] * x[g*Cin/G + c, y*s - p + i*d, x*s - p + j*d]``
    with weight shape (C_out, C_in / groups, kH, kW), zero padding."""

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    connectivity: ClassVar[str] = "conv2d"

    def fan_in(self) -> int:
        w = np.asarray(self.weight)
        return int(w.shape[1] * w.shape[2] * w.shape[3])

    def out_shape(self, src_shape: tuple[int, ...]) -> tuple[int, int, int]:
        c, h, w = src_shape
        kh, kw = np.asarray(self.weight).shape[2:]
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return (int(np.asarray(self.weight).shape[0]), int(ho), int(wo))

    def validate_shapes(self, src_shape, dst_shape) -> None:
        w = np.asarray(self.weight)
        if w.ndim != 4 or len(src_shape) != 3:
            raise ValueError(f"{self._where()}: conv needs a 4-d weight and a (C,H,W) source; got weight {w.shape}, source {src_shape}")
        if src_shape[0] != w.shape[1] * self.groups or w.shape[0] % self.groups:
            raise ValueError(f"{self._where()}: weight {w.shape} with groups={self.groups} does not fit source channels {src_shape[0]}")
        if self.out_shape(src_shape) != tuple(dst_shape):
            raise ValueError(f"{self._where()}: conv output {self.out_shape(src_shape)} does not match target shape {tuple(dst_shape)}")


@dataclass
class Identity(Projection):
    """One-to-one (skip connection): ``I[k] += weight * x[k]`` with weight scalar, per channel or
    per neuron; source and target shapes are equal."""

    connectivity: ClassVar[str] = "identity"

    def fan_in(self) -> int:
        return 1

    def validate_shapes(self, src_shape, dst_shape) -> None:
        if tuple(src_shape) != tuple(dst_shape):
            raise ValueError(f"{self._where()}: identity needs equal shapes, got {src_shape} -> {dst_shape}")
        if not param_ok(self.weight, tuple(dst_shape)):
            raise ValueError(f"{self._where()}: weight shape {np.shape(self.weight)} must be scalar, per channel or {dst_shape}")


@dataclass
class Operator(Node):
    """A non-spiking operator node (e.g. an expectation-compensation module) marked as such.

    ``op`` names the operation; ``params`` holds its arrays. It reads ``inputs`` (node names) and
    produces a real-valued tensor of ``shape`` each step. Simulators dispatch on ``op``.
    """

    op: str = ""
    inputs: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    params: dict = field(default_factory=dict)

    kind: ClassVar[str] = "operator"
    spiking: ClassVar[bool] = False

    def validate(self) -> None:
        if not self.op:
            raise ValueError(f"operator {self.name!r}: op is empty")


PROJECTION_TYPES: dict[str, type[Projection]] = {"Dense": Dense, "Conv2d": Conv2d, "Identity": Identity}
NODE_TYPES: dict[str, type[Node]] = {"Input": Input, "Population": Population, "Operator": Operator, **PROJECTION_TYPES}


def register_projection(cls: type[Projection]) -> type[Projection]:
    """Class decorator: make a projection type known to the loader and simulators."""
    PROJECTION_TYPES[cls.__name__] = cls
    NODE_TYPES[cls.__name__] = cls
    return cls


def dataclass_fields(obj) -> list[str]:
    return [f.name for f in fields(obj)]
