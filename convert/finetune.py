"""Conversion-aware fine-tuning: swap in a method's activation, train briefly, export ``.pt2``.

``finetune(model, x, y, epochs)`` is a plain, deterministic cross-entropy loop (Adam) that works on
``nn.Module`` objects and on the fx ``GraphModule`` of an :class:`~spikeport.frontend.AnnModel`
(including modules unlifted from ``torch.export``, whose BatchNorm is frozen to inference mode).
``finetune_for_method(ann, method, x, y, ...)`` does swap + fine-tune; ``export_finetuned`` writes a
``.pt2`` with a dynamic batch axis that ``spikeport convert MODEL_Q.pt2 --method NAME`` reads back.

Methods needing a fine-tuned activation register a factory in :data:`ACTIVATION_FACTORIES`
(``name -> (levels) -> nn.Module``); ``qcfs`` is registered here, other methods add theirs.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..atomic import write_bytes
from ..errors import SpikeportError
from .activations import QuantClipFloor, pqa_activation, qcfs_activation, quant_activations, swap_activations

ActivationFactory = Callable[[int], nn.Module]

ACTIVATION_FACTORIES: dict[str, ActivationFactory] = {
    "qcfs": lambda levels: qcfs_activation(levels),
    "pmsm": lambda levels: pqa_activation(levels),
}
DEFAULT_LEVELS = {"qcfs": 8, "pmsm": 8}


def register_activation(method: str, factory: ActivationFactory, default_levels: int = 8) -> None:
    """Make ``finetune_for_method(..., method)`` / ``spikeport finetune --method`` use ``factory(levels)``."""
    ACTIVATION_FACTORIES[method] = factory
    DEFAULT_LEVELS[method] = int(default_levels)


@dataclass
class FinetuneLog:
    """Mean training loss and accuracy per epoch (filled by :func:`finetune` when passed)."""

    loss: list[float]
    accuracy: list[float]


def _set_train(model: nn.Module, mode: bool, freeze_bn: bool) -> None:
    """Train/eval mode; modules unlifted from torch.export refuse ``train()``, so set flags directly."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and freeze_bn:
            m.training = False
        else:
            m.training = mode


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.asarray(x)
    y = np.asarray(y)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"finetune: x has dtype {x.dtype}, expected floating point")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(f"finetune: y must be integer labels of shape (N,), got {y.dtype} {y.shape}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"finetune: {len(x)} samples but {len(y)} labels (need the same number, >= 1)")
    if not np.all(np.isfinite(x)):
        raise ValueError("finetune: x contains NaN or infinity")
    return torch.as_tensor(x.astype(np.float32)), torch.as_tensor(y.astype(np.int64))


def finetune(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 1e-3, batch_size: int = 64,
             seed: int = 0, progress: bool = True, device=None, freeze_bn: bool = False,
             log: FinetuneLog | None = None) -> nn.Module:
    """Train ``model`` in place with Adam + cross-entropy for ``epochs``; return it in eval mode.

    Deterministic: shuffling derives from ``seed`` and the global torch seed is set from it (on CPU
    the result is bit-reproducible). ``freeze_bn`` keeps BatchNorm statistics fixed (modules from
    torch.export are always frozen). Parameters are not re-initialised: this refines a trained ANN.
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"finetune: epochs {epochs!r} must be a non-negative integer")
    if batch_size < 1:
        raise ValueError(f"finetune: batch_size {batch_size} must be >= 1")
    if not lr > 0:
        raise ValueError(f"finetune: lr {lr} must be > 0")
    xt, yt = _check_xy(x, y)
    dev = torch.device(device) if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    model = model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("finetune: the model has no trainable parameters")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    _set_train(model, True, freeze_bn)
    steps = (len(xt) + batch_size - 1) // batch_size
    bar = None
    if progress and epochs > 0:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("fine-tuning", total=int(epochs) * steps)
    try:
        for _ in range(int(epochs)):
            order = torch.randperm(len(xt), generator=gen)
            total_loss, correct = 0.0, 0
            for i in range(0, len(xt), batch_size):
                idx = order[i:i + batch_size]
                xb, yb = xt[idx].to(dev), yt[idx].to(dev)
                opt.zero_grad()
                out = model(xb)
                loss = loss_fn(out, yb)
                loss.backward()
                opt.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((out.detach().argmax(1) == yb).sum())
                if bar is not None:
                    bar.advance(task)
            if log is not None:
                log.loss.append(total_loss / len(xt))
                log.accuracy.append(correct / len(xt))
    finally:
        if bar is not None:
            bar.stop()
    _set_train(model, False, True)
    return model


def activation_factory(method: str, levels: int | None = None) -> Callable[[], nn.Module]:
    """A zero-argument factory of ``method``'s fine-tuning activation with ``levels`` (default per method)."""
    if method not in ACTIVATION_FACTORIES:
        raise ValueError(f"method {method!r} has no fine-tuning activation; methods that fine-tune: "
                         f"{sorted(ACTIVATION_FACTORIES)}")
    lv = DEFAULT_LEVELS.get(method, 8) if levels is None else int(levels)
    if lv < 1:
        raise ValueError(f"--levels {lv} must be >= 1")
    make = ACTIVATION_FACTORIES[method]
    return lambda: make(lv)


def finetune_for_method(model: nn.Module, method: str, x: np.ndarray, y: np.ndarray, epochs: int,
                        levels: int | None = None, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                        progress: bool = True, device=None, freeze_bn: bool = False) -> nn.Module:
    """Swap every ReLU of ``model`` (module or fx graph) for ``method``'s activation, then fine-tune.

    Returns a new module (``model`` is not changed), in eval mode.
    """
    swapped = swap_activations(model, activation_factory(method, levels))
    return finetune(swapped, x, y, epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress,
                    device=device, freeze_bn=freeze_bn)


def export_finetuned(model: nn.Module, path: str | Path, example_x: np.ndarray) -> Path:
    """``torch.export`` the (eval-mode) model with a dynamic batch axis to ``path`` (.pt2)."""
    path = Path(path)
    if path.suffix.lower() != ".pt2":
        raise ValueError(f"{path}: the fine-tuned model is written as a torch.export program; use a .pt2 file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    _set_train(model, False, True)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.as_tensor(np.asarray(example_x[:2], dtype=np.float32)).to(dev)
    if len(x) < 2:
        x = torch.cat([x, x])  # a batch of 1 would be specialised by torch.export
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()  # serialised in memory: torch's zip writer aborts the process on a full disk
    torch.export.save(ep, buffer)
    return write_bytes(path, buffer.getvalue())




@dataclass
class FinetuneSummary:
    """What :func:`finetune_file` did: accuracies on the training data before/after, the levels, lambdas."""

    method: str
    levels: int
    epochs: int
    accuracy_before: float
    accuracy_after: float
    lambdas: list[float]
    out: str


def finetune_file(model, method: str, x: np.ndarray, y: np.ndarray, epochs: int, out: str | Path,
                  levels: int | None = None, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                  progress: bool = True, device=None) -> FinetuneSummary:
    """``spikeport finetune``: load ``model`` (file or module; MaxPool becomes AvgPool first, as QCFS
    prescribes), swap in ``method``'s activation, fine-tune on (x, y), export ``out`` (.pt2)."""
    from ..frontend import load_model

    if Path(str(out)).suffix.lower() != ".pt2":
        raise ValueError(f"--out {out}: the fine-tuned model is written as a torch.export program; use a .pt2 file name")
    kwargs = {} if isinstance(model, (str, Path)) else {"input_shape": tuple(np.asarray(x).shape[1:])}
    ann = load_model(model, maxpool="avg", **kwargs)
    before = ann.evaluate(x, y)["accuracy"]
    from .finetune_vit import C2_METHODS, DEFAULT_VIT_LEVELS, insert_quantisers, is_transformer
    vit = method in C2_METHODS and is_transformer(ann.graph)
    if method in C2_METHODS and method not in ACTIVATION_FACTORIES and not vit:
        from .lower import ConversionError
        raise ConversionError(f"finetune {ann.source} --method {method}: {method} fine-tunes Vision Transformers "
                              "(LayerNorm/attention); this model has none")
    lv = (DEFAULT_VIT_LEVELS if vit else DEFAULT_LEVELS.get(method, 8)) if levels is None else int(levels)
    try:
        if vit:  # C2 ViT QANN: quantisers where SpikeZIP-TF puts its neurons (convert/finetune_vit.py)
            tuned = finetune(insert_quantisers(ann, method, lv, x), x, y, epochs, lr=lr, batch_size=batch_size,
                             seed=seed, progress=progress, device=device, freeze_bn=True)
        else:
            tuned = finetune_for_method(ann.module, method, x, y, epochs, levels=lv, lr=lr, batch_size=batch_size,
                                        seed=seed, progress=progress, device=device, freeze_bn=True)
    except ValueError as e:  # the checks of finetune / swap_activations: the model or options do not fit
        if isinstance(e, SpikeportError):
            raise
        from .lower import ConversionError
        raise ConversionError(f"finetune {ann.source} --method {method}: {e}") from None
    path = export_finetuned(tuned, out, x[:2])
    after = load_model(path).evaluate(x, y)["accuracy"]
    lambdas = [float(m.lam.detach()) for m in quant_activations(tuned)]
    return FinetuneSummary(method, lv, int(epochs), float(before), float(after), lambdas, str(path))


__all__ = ["ACTIVATION_FACTORIES", "DEFAULT_LEVELS", "FinetuneLog", "FinetuneSummary", "QuantClipFloor",
           "activation_factory", "export_finetuned", "finetune", "finetune_file", "finetune_for_method",
           "quant_activations", "register_activation"]
