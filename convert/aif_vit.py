"""``--method aif`` on Vision Transformers (paper 000 on ECMT's placements; methods.md sections 2 and 5).

Placement: where ECMT puts its multi-threshold neurons (convert/ecmt.py, ``ECMT.mt_sources``): on
every value feeding a Linear other than the head (the qkv, proj, fc1 and fc2 inputs) and on both
operands of every product of two tensors (q, k, v and the softmax output). Each gets an AIF neuron:
the signed IF of the CNN method (``aif.aif_neuron_spec``), per step
``v_tmp = v + x(t) - z_c; s = +1 if v_tmp >= theta_c, -1 if v_tmp < 0, else 0; v = v_tmp - s theta_c``,
v(0) = 0, decoded ``q_hat(t) = s(t) theta_c + z_c``; with a constant input ``a`` the count after T
steps is ``clip(floor(T (a - z_c) / theta_c), -T, T)``.

Channels: a value's channel is its feature axis. For a value produced by a Linear, LayerNorm,
GELU, add, product or softmax of shape ``(..., N, C)`` the token axis is -2 and the channel is
every other axis (``(tokens, C)`` -> C; a per-head ``(H, N, d)`` product -> (h, d); an attention map
``(H, N, N)`` -> (h, key token)); head split, transposes, scaling and reshapes keep each element's
channel (the Rearrange index maps are followed), so q, k and v keep the qkv Linear's channels
whatever their layout (``k^T`` included). Every channel gets its own (theta_c, z_c) from the grid
search of ``convert/aif.py`` on the calibration values of that channel (all tokens and samples).

Folding: a Linear after an AIF population becomes one TokenDense with ``W diag(theta)`` and the
target's bias gains ``W z`` per token; a product operator reads the decoded ``q_hat = s theta + z``.

Products ``q k^T`` and ``attn v``: ``MatMulEC`` on the decoded AIF values. Its running sum
``S_K(t) = S_K(t-1) + A S_B(t) + S_A(t) B - A B`` is AIF's product form (paper 000 Eq. 24 without
the factor): ``Q(t) k_hat(t)^T + q_hat(t) K(t)^T - q_hat(t) k_hat(t)^T`` summed to Q(t) K(t)^T;
the output ``O(t) = S_K(t)/t - S_K(t-1)/(t-1)`` is the anytime form (methods.md section 2: the
paper's fixed 1/T^2 is exact only at t = T, and softmax follows q k^T every step).

LayerNorm, GELU and softmax: paper 000's S-LayerNorm / S-GELU / S-Softmax (its Eq. 26) are the
expectation-compensation operators ``O(t) = t F(S(t)/t) - (t-1) F(S(t-1)/(t-1))``, the same as
ECMT's, so they are ``LayerNormEC`` / ``GELUEC`` / ``SoftmaxEC``: the paper's own form, not a
substitute. The residual stream stays in the accumulator (Relay populations), the patch embedding
(a Conv2d on the analog input) and the head stay analog, as in ECMT.

``search='none'`` is the layer-wise baseline (paper 000 Table 4's "Baseline"): one threshold per
value, the data-normalised lambda = the ``percentile``-th percentile of |values| (a ViT's values
are signed), z = 0, on the same neuron and operators. The option ``fit`` has no effect here: an AIF
neuron of a ViT integrates the very value it stands for (there is no ReLU between them).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import ir
from ..frontend import AnnModel
from ..frontend import ann_graph as G
from ..frontend.ann_eval import evaluate_graph
from ..ir import operators as O
from .aif import GridResult, aif_neuron_spec, aif_objective, grid_search
from .ecmt import ECMT, _Builder, _Handle, _is_head
from .lower import ConversionError

# ops that move or scale values without mixing channels: an element keeps its channel through them
_KEEP_CHANNEL = (G.Reshape, G.Flatten, G.Scale, G.Identity)
# ops the ViT builder converts (the ECMT walk plus the AIF neuron placement)
_SUPPORTED = ("Input", "Conv2d", "Linear", "Reshape", "Flatten", "Rearrange", "Identity", "Constant", "Concat",
              "AddConst", "Add", "Scale", "LayerNorm", "GELU", "Softmax", "MatMul", "Mean", "Output")
_WHY = {"ReLU": "a ReLU inside a Transformer (aif converts GELU MLPs: LayerNorm, GELU and softmax become "
                "expectation-compensation operators)",
        "BatchNorm": "BatchNorm inside a Transformer is not supported (LayerNorm is)",
        "MaxPool": "MaxPool inside a Transformer is not supported"}


def is_transformer(graph: G.AnnGraph) -> bool:
    """A graph with LayerNorm, GELU, softmax, a product of two tensors or a Linear on token tensors."""
    return any(isinstance(n, (G.LayerNorm, G.GELU, G.Softmax, G.MatMul)) or (isinstance(n, G.Linear) and len(n.shape) >= 2)
               for n in graph)


def check_supported(ann: AnnModel) -> None:
    """Refuse, naming node, op and why, what the ViT builder has no rule for (before calibrating)."""
    for node in ann.graph:
        if node.op not in _SUPPORTED:
            why = _WHY.get(node.op, f"no rule for this op in a Transformer (aif on ViTs handles {', '.join(_SUPPORTED)})")
            raise ConversionError(f"method 'aif': {ann.source}: node {node.name!r} ({node.op}): {why}")
        if isinstance(node, G.Conv2d) and not isinstance(ann.graph[node.inputs[0]], G.Input):
            raise ConversionError(f"method 'aif': {ann.source}: node {node.name!r} (Conv2d): only the patch embedding "
                                  "(a Conv2d on the analog input) is supported inside a Transformer")
        if isinstance(node, G.Mean) and node.keepdim:
            raise ConversionError(f"method 'aif': {ann.source}: node {node.name!r} (Mean): mean with keepdim is not supported")


# ---------------------------------------------------------------------- channels
def _feature_ids(shape: tuple[int, ...]) -> np.ndarray:
    """Channel id per element of a freshly computed value: every axis but the token axis -2."""
    n = int(np.prod(shape))
    flat = np.arange(n, dtype=np.int64)
    if len(shape) < 2:
        return flat.reshape(shape)
    tokens, c = int(shape[-2]), int(shape[-1])
    return ((flat // (tokens * c)) * c + flat % c).reshape(shape)


def channel_map(graph: G.AnnGraph, name: str, memo: dict | None = None) -> np.ndarray:
    """Channel id (0..K-1) of every element of ANN value ``name`` (an int array of its sample shape).

    Re-indexings (Rearrange) and channel-preserving ops (Reshape, Flatten, Scale, Identity) are
    followed back to the op that computed the values; there the channel is every axis but the
    token axis (:func:`_feature_ids`)."""
    memo = {} if memo is None else memo

    def raw(n: str) -> np.ndarray:
        if n not in memo:
            node = graph[n]
            if isinstance(node, _KEEP_CHANNEL):
                memo[n] = raw(node.inputs[0]).reshape(tuple(node.shape))
            elif isinstance(node, G.Rearrange):
                memo[n] = raw(node.inputs[0]).reshape(-1)[np.asarray(node.index, np.int64)].reshape(tuple(node.shape))
            else:
                memo[n] = _feature_ids(tuple(node.shape))
        return memo[n]

    _, inv = np.unique(raw(name), return_inverse=True)
    return inv.reshape(tuple(graph[name].shape)).astype(np.int64)


def channel_rows(values: np.ndarray, chan: np.ndarray, where: str) -> np.ndarray:
    """(N, *shape) values -> (K, N * m) rows, one per channel of ``chan`` (each channel has m elements)."""
    ids = chan.reshape(-1)
    counts = np.bincount(ids)
    if np.any(counts != counts[0]):
        raise ConversionError(f"method 'aif': {where}: its channels have unequal element counts "
                              f"({int(counts.min())}..{int(counts.max())}); channel-wise calibration needs equal counts")
    order = np.argsort(ids, kind="stable")
    v = np.asarray(values).reshape(len(values), -1)[:, order]
    k, m = len(counts), int(counts[0])
    return v.reshape(len(values), k, m).transpose(1, 0, 2).reshape(k, -1)


# ---------------------------------------------------------------------- calibration
def prepare(method, ann: AnnModel, calib_x: np.ndarray) -> None:
    """Grid-search (theta_c, z_c) for every AIF value of the ViT ``ann`` into ``method._params``
    (GridResult per channel) and ``method._vit`` (name -> full-shape theta, z)."""
    check_supported(ann)
    names = ECMT().mt_sources(ann.graph)
    batch = 100
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    method._ranges = {}   # max |value| per ANN tensor: the quantiser sizes relays and operators from these

    def observe(name: str, value) -> None:
        ECMT._observe_range(method, name, value)
    for a in range(0, len(calib_x), batch):
        vals = evaluate_graph(ann.graph, calib_x[a:a + batch], keep=names, dtype=torch.float64, observe=observe)
        for n in names:
            parts[n].append(vals[n].cpu().numpy())
    memo: dict = {}
    method._params, method._vit = {}, {}
    t = int(method.timesteps)
    for name in names:
        acts = np.concatenate(parts.pop(name))
        chan = channel_map(ann.graph, name, memo)
        rows = channel_rows(acts, chan, f"value {name!r}")
        cols = method._subsample(rows.shape[1])
        if cols is not None:
            rows = rows[:, cols]
        lam = float(np.percentile(np.abs(acts), min(float(method.percentile), 100.0)))
        lam = lam if lam > 0 else 1.0
        if method.search == "none":
            c = rows.shape[0]
            r64 = torch.as_tensor(rows, dtype=torch.float64)
            err = aif_objective(r64, torch.zeros((c, 1), dtype=torch.float64), torch.full((c, 1), lam, dtype=torch.float64), t)
            res = GridResult(np.full(c, lam), np.zeros(c), err.sqrt().numpy() / rows.shape[1], rows.mean(1), rows.std(1))
        else:
            res = grid_search(rows, t, method.n_offset, method.n_threshold, method.search, layer_theta=lam,
                              chunk_elements=method.chunk_elements, device=method.device)
        method._params[name] = res
        method._vit[name] = (res.theta[chan].astype(np.float64), res.z[chan].astype(np.float64))


# ---------------------------------------------------------------------- building the IR
class _AIFBuilder(_Builder):
    """ECMT's walk (convert/ecmt.py) with AIF populations in place of the multi-threshold ones."""

    def mt_population(self, src: str) -> str:
        """The AIF population on ANN value ``src`` (shared by all its consumers)."""
        if src in self.mt:
            return self.mt[src]
        theta, z = self.m._vit[src]
        spec = aif_neuron_spec(theta, z, -z, self.m.compare)
        name = self._name(f"{src}_aif")
        self.net.add(ir.Population(name, tuple(self.g[src].shape), spec.neuron, spec.payload,
                                   decode_scale=spec.decode_scale, decode_offset=spec.decode_offset, source=src))
        h = self.h[src]
        self.identity(h.node, name, h.factor)
        self.mt[src] = name
        self.populations.setdefault(src, []).append(name)
        return name

    def _Linear(self, node: G.Linear) -> None:
        if _is_head(self.g, node):  # analog into the readout, as ECMT
            return super()._Linear(node)
        src = node.inputs[0]
        pop = self.mt_population(src)
        theta, z = self.m._vit[src]
        rows = theta.reshape(-1, theta.shape[-1])
        if np.any(rows != rows[:1]):
            raise self.err(node, f"the thresholds of its input {src!r} differ between tokens; a shared token weight "
                                 "needs one threshold per input channel")
        w = node.weight.astype(np.float64, order="C")   # the graph's weight may be an F-ordered view
        bias = 0.0 if node.bias is None else node.bias.astype(np.float64)
        bias = np.broadcast_to(bias + z @ w.T, tuple(node.shape)).copy()  # b + W Z_prev, per token
        out = self.relay(node.name, node.shape, bias, source=node.name)
        self.net.add(O.TokenDense(self._name(f"{node.name}_w"), source=pop, target=out, weight=w * rows[0][None, :]))
        self.h[node.name] = _Handle(out)


def build(method, ann: AnnModel) -> tuple[ir.Network, dict]:
    return _AIFBuilder(method, ann).run()
