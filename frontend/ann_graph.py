"""The normalised ANN layer graph: one typed node per tensor operation of the model.

Every frontend (ONNX, ``.pt2``, ``nn.Module``) produces this same graph, so conversion methods and
the lowering never see framework-specific ops. Each node keeps the name of the ``torch.fx`` node
it came from (so ANN activations can be recorded under that name), the names of its data inputs
and its output shape without the batch axis. Parameters are float32 numpy arrays, read-only by
contract: they may be the module's own memory (C order, or a Linear weight as the F-ordered transpose
of an ONNX MatMul initialiser), so readers copy before writing, and copy to C order where the layout
matters (a BLAS product, an IR array).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Iterator

import numpy as np

from ..errors import SpikeportError

SUPPORTED_OPS = (
    "Conv2d (stride, padding, dilation, groups)", "Linear/Gemm/MatMul with constant weights",
    "BatchNorm (inference)", "ReLU", "LeakyReLU",
    "QuantAct (step * clamp(floor(x / step + 1/2), lo, hi), as written by QCFS/PQA fine-tuning)",
    "AvgPool", "GlobalAvgPool (mean over H, W)",
    "MaxPool (replaced by AvgPool only with maxpool='avg')", "Flatten/Reshape",
    "residual Add", "Concat", "Identity/Dropout/Clone",
    "LayerNorm (LayerNormalization or ReduceMean/Sub/Pow/Sqrt/Div)", "GELU (exact/Erf or tanh form)",
    "Softmax", "MatMul of two input-dependent tensors", "Linear on token tensors (..., features)",
    "multiply by a constant scalar", "add of a constant (position embedding)", "concat with a constant (class token)",
    "Reshape/Transpose/Permute/Split/Slice/Gather/Squeeze/Unsqueeze (token and head plumbing)",
    "Mean over any axes (token pooling)", "scaled_dot_product_attention (no mask, no dropout)",
)


class FrontendError(SpikeportError):
    """A model file or module cannot be loaded; the message names the file and the problem."""


class UnsupportedOpError(FrontendError):
    """The model holds an op spikeport cannot convert; the message names the node and the op."""


def unsupported(node: str, op: str, why: str = "") -> UnsupportedOpError:
    """Build the standard error: node name, op, optional reason, and the supported list."""
    reason = f" ({why})" if why else ""
    return UnsupportedOpError(f"node {node!r}: op {op} is not supported{reason}. "
                              f"Supported ops: {', '.join(SUPPORTED_OPS)}")


@dataclass
class AnnNode:
    """Base of all ANN ops. ``name`` is the fx node name, ``shape`` the output shape (no batch)."""

    name: str
    inputs: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()

    op: ClassVar[str] = "node"


@dataclass
class Input(AnnNode):
    op: ClassVar[str] = "Input"


@dataclass
class Conv2d(AnnNode):
    """PyTorch Conv2d semantics, weight (C_out, C_in/groups, kH, kW), bias (C_out,) or None."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.float32))
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    op: ClassVar[str] = "Conv2d"


@dataclass
class Linear(AnnNode):
    """``y = x @ weight.T + bias`` over the last axis; weight (out, in)."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    bias: np.ndarray | None = None

    op: ClassVar[str] = "Linear"


@dataclass
class BatchNorm(AnnNode):
    """Inference BatchNorm over axis 1 (channels): ``(x - mean) / sqrt(var + eps) * weight + bias``."""

    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    var: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    weight: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    eps: float = 1e-5

    op: ClassVar[str] = "BatchNorm"

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(a, b)`` with ``bn(x) = a * x + b`` per channel (float64 for exact folding)."""
        a = self.weight.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return a, self.bias.astype(np.float64) - a * self.mean.astype(np.float64)


@dataclass
class ReLU(AnnNode):
    op: ClassVar[str] = "ReLU"


@dataclass
class LeakyReLU(AnnNode):
    slope: float = 0.01

    op: ClassVar[str] = "LeakyReLU"


@dataclass
class QuantAct(AnnNode):
    """Quantised clip-floor activation ``y = step * clamp(floor(x / step + 1/2), min_level, max_level)``.

    Written by conversion-aware fine-tuning (QCFS: levels 0..L with step = lambda/L; PMSM's PQA:
    alpha*L..beta*L). The frontend recognises the exported op sequence mul -> add 0.5 -> floor ->
    clamp -> mul as one node; the lowering treats it as an activation carrying its levels.
    """

    step: float = 1.0
    min_level: int = 0
    max_level: int = 1

    op: ClassVar[str] = "QuantAct"

    @property
    def lam(self) -> float:
        """The clip value lambda = step * max_level (QCFS's trainable lambda when max_level = L)."""
        return self.step * self.max_level


@dataclass
class AvgPool(AnnNode):
    """2-D average pooling; ``count_include_pad`` as in PyTorch (zero padding counted)."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True
    replaced: str = ""  # "MaxPool" when this node stands for a replaced max pooling

    op: ClassVar[str] = "AvgPool"


@dataclass
class GlobalAvgPool(AnnNode):
    """Mean over H and W; output (C, 1, 1) if ``keepdim`` else (C,)."""

    keepdim: bool = True

    op: ClassVar[str] = "GlobalAvgPool"


@dataclass
class MaxPool(AnnNode):
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    op: ClassVar[str] = "MaxPool"


@dataclass
class Flatten(AnnNode):
    """Flatten of all non-batch axes in C order (PyTorch's ``flatten(1)``)."""

    op: ClassVar[str] = "Flatten"


@dataclass
class Add(AnnNode):
    op: ClassVar[str] = "Add"


@dataclass
class Concat(AnnNode):
    """Concatenation along ``axis`` of the sample (no batch axis: 0 is channels)."""

    axis: int = 0

    op: ClassVar[str] = "Concat"


@dataclass
class Identity(AnnNode):
    """Identity, Dropout in inference, clone/contiguous: value passes through."""

    op: ClassVar[str] = "Identity"


@dataclass
class Output(AnnNode):
    op: ClassVar[str] = "Output"


@dataclass
class Constant(AnnNode):
    """A tensor that does not depend on the input (a class token), the same for every sample."""

    value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    op: ClassVar[str] = "Constant"


@dataclass
class LayerNorm(AnnNode):
    """``y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` over the last axis (biased variance)."""

    weight: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    eps: float = 1e-5

    op: ClassVar[str] = "LayerNorm"


@dataclass
class GELU(AnnNode):
    """``y = x * Phi(x)`` (``approximate="none"``, the Erf form) or the tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``approximate="tanh"``)."""

    approximate: str = "none"

    op: ClassVar[str] = "GELU"


@dataclass
class Softmax(AnnNode):
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along sample axis ``axis`` (no batch axis)."""

    axis: int = -1

    op: ClassVar[str] = "Softmax"


@dataclass
class MatMul(AnnNode):
    """Product of two input-dependent tensors ``y = a @ b`` over the last two axes, leading axes
    equal (attention ``q k^T`` and ``attn v``); inputs ``(a, b)``."""

    op: ClassVar[str] = "MatMul"


@dataclass
class Scale(AnnNode):
    """Multiplication by a constant scalar: ``y = factor * x`` (attention's ``d^-1/2``)."""

    factor: float = 1.0

    op: ClassVar[str] = "Scale"


@dataclass
class AddConst(AnnNode):
    """``y = x + value`` with a constant broadcast to the sample shape (position embedding)."""

    value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    op: ClassVar[str] = "AddConst"


@dataclass
class Reshape(AnnNode):
    """Row-major reshape of the sample to ``shape`` (heads split/merge, squeeze/unsqueeze); the
    flattened data order is unchanged."""

    op: ClassVar[str] = "Reshape"


@dataclass
class Rearrange(AnnNode):
    """Pure re-indexing of one sample: ``y.flat[i] = x.flat[index[i]]`` (transpose/permute, head
    split, qkv split/slice/select, class-token gather, expand). ``index`` has the output shape and
    indexes the flattened input; ``note`` names the op it came from. Data order changes, values do
    not: on hardware this is wiring (which neuron feeds which synapse), not computation."""

    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    note: str = ""

    op: ClassVar[str] = "Rearrange"


@dataclass
class Mean(AnnNode):
    """Mean over sample axes ``axes`` (token pooling); ``keepdim`` keeps them as size 1."""

    axes: tuple[int, ...] = ()
    keepdim: bool = False

    op: ClassVar[str] = "Mean"


ACTIVATION_OPS = (ReLU, LeakyReLU, QuantAct)
TOKEN_OPS = (Constant, LayerNorm, GELU, Softmax, MatMul, Scale, AddConst, Reshape, Rearrange, Mean)
LINEAR_OPS = (Conv2d, Linear)


@dataclass
class AnnGraph:
    """Nodes in topological order (dict insertion order); one Input and one Output."""

    nodes: dict[str, AnnNode] = field(default_factory=dict)

    def add(self, node: AnnNode) -> AnnNode:
        if node.name in self.nodes:
            raise ValueError(f"ANN graph: node name {node.name!r} used twice")
        for src in node.inputs:
            if src not in self.nodes:
                raise ValueError(f"ANN graph: node {node.name!r} reads unknown node {src!r}")
        self.nodes[node.name] = node
        return node

    def __getitem__(self, name: str) -> AnnNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in the ANN graph") from None

    def __iter__(self) -> Iterator[AnnNode]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def input(self) -> Input:
        return next(n for n in self if isinstance(n, Input))

    @property
    def output(self) -> Output:
        return next(n for n in self if isinstance(n, Output))

    def users(self, name: str) -> list[AnnNode]:
        """Nodes that read ``name``, in graph order."""
        return [n for n in self if name in n.inputs]

    def activations(self) -> list[AnnNode]:
        """ReLU / LeakyReLU / QuantAct nodes: the places where spiking neurons go."""
        return [n for n in self if isinstance(n, ACTIVATION_OPS)]

    def summary(self) -> list[dict]:
        """One row per node: name, op, inputs, shape (for printing and reports)."""
        return [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "shape": list(n.shape)} for n in self]
