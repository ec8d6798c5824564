"""``AnnModel``: the one representation every frontend produces.

It holds the runnable ``torch.fx.GraphModule`` (for ANN accuracy and activation recording) and the
normalised ANN layer graph (for conversion), both describing the same network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx

from .ann_graph import AnnGraph, FrontendError


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU for a module without any)."""
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps the outputs of the requested nodes."""

    def __init__(self, gm: fx.GraphModule, names: set[str]):
        super().__init__(gm)
        self.names = names
        self.seen: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.names:
            self.seen[n.name] = out
        return out


@dataclass
class AnnModel:
    """A loaded ANN.

    module       the network as an fx GraphModule, eval mode, float32 (any device)
    graph        the normalised ANN layer graph (node names = fx node names)
    input_shape  one sample's shape, no batch axis
    source       the file it came from, or "<module>"
    fixed_batch  batch size the module only accepts (a ``.pt2`` exported with a static batch), else None
    replaced     human-readable notes of ops replaced at load time (e.g. MaxPool -> AvgPool)
    """

    module: fx.GraphModule
    graph: AnnGraph
    input_shape: tuple[int, ...]
    source: str = "<module>"
    fixed_batch: int | None = None
    replaced: list[str] = field(default_factory=list)
    hand_over: bool = field(default=False, repr=False)   # set by convert(release_ann=True): see handed_over
    released: list[str] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ handing weights over
    def handed_over(self, name: str) -> None:
        """The conversion holds its own copy of node ``name``'s parameters: when ``hand_over`` is set
        (``convert(..., release_ann=True)``), free them here, in the typed graph and in the module
        (whose tensors share their memory, ``normalise._np``), so the ANN's and the SNN's weights of a
        large model are not all alive together. The model cannot run afterwards (``_check_usable``)."""
        if not self.hand_over:
            return
        node = self.graph[name]
        ptrs = set()
        for f in ("weight", "bias"):
            a = getattr(node, f, None)
            if isinstance(a, np.ndarray) and a.size:
                ptrs.add(a.__array_interface__["data"][0])
                setattr(node, f, np.zeros((0,) * a.ndim, a.dtype))   # no silent stand-in: any use fails on shape
        if not ptrs:
            return
        for mod_name, mod in self.module.named_modules():
            for kind in ("_parameters", "_buffers"):
                for key, t in list(getattr(mod, kind).items()):
                    if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.data_ptr() in ptrs:
                        getattr(mod, kind)[key] = torch.empty(t.shape, dtype=t.dtype, device="meta")
        self.released.append(name)

    def _check_usable(self) -> None:
        if self.released:
            raise FrontendError(f"model {self.source}: its weights were handed over to a conversion "
                                f"(convert(..., release_ann=True): {len(self.released)} layers released, e.g. "
                                f"{self.released[0]!r}); load the model again to run it")

    @property
    def device(self) -> torch.device:
        return module_device(self.module)

    def to(self, device: str | torch.device) -> "AnnModel":
        """Move the module to ``device`` in place and return self."""
        self.module.to(device)
        return self

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        self._check_usable()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"model {self.source}: input of shape {x.shape}, expected (N, {', '.join(map(str, self.input_shape))})")
        return x

    def _batches(self, x: np.ndarray, batch_size: int):
        """Yield ``(tensor on the module's device, number of real rows)``; pads to ``fixed_batch``."""
        step = self.fixed_batch or batch_size
        if step < 1:
            raise ValueError(f"batch_size {batch_size} must be >= 1")
        dev = self.device
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if self.fixed_batch and n < self.fixed_batch:
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - n,) + chunk.shape[1:], np.float32)])
            yield torch.from_numpy(np.ascontiguousarray(chunk)).to(dev), n

    def forward(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """ANN outputs (logits) for ``x`` of shape (N, *input_shape), as float32 numpy."""
        x = self._check_x(x)
        outs = []
        with torch.no_grad():
            for xb, n in self._batches(x, batch_size):
                outs.append(self.module(xb)[:n].detach().float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0,) + self.graph.output.shape, np.float32)

    def evaluate(self, x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 256) -> dict:
        """Return ``{"logits": (N, classes), "accuracy": float or None}`` (accuracy needs ``y``)."""
        logits = self.forward(x, batch_size)
        acc = None
        if y is not None:
            y = np.asarray(y)
            if len(y) != len(logits):
                raise ValueError(f"model {self.source}: {len(logits)} samples but {len(y)} labels")
            acc = float(np.mean(logits.reshape(len(logits), -1).argmax(1) == y))
        return {"accuracy": acc, "logits": logits}

    def record_activations(self, x: np.ndarray, nodes: list[str] | tuple[str, ...], batch_size: int = 256
                           ) -> dict[str, np.ndarray]:
        """Activations (N, *shape) of the named ANN nodes for ``x``, as float32 numpy arrays."""
        x = self._check_x(x)
        names = list(nodes)
        fx_names = {n.name for n in self.module.graph.nodes}
        for name in names:
            if name not in fx_names:
                raise KeyError(f"model {self.source}: no node named {name!r} to record "
                               f"(ANN nodes: {[n.name for n in self.graph]})")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        with torch.no_grad():
            for xb, n in self._batches(x, batch_size):
                rec = _Recorder(self.module, set(names))
                rec.run(xb)
                for name in names:
                    parts[name].append(rec.seen[name][:n].detach().float().cpu().numpy())
        return {name: np.concatenate(p) for name, p in parts.items()}
