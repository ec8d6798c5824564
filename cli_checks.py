"""Checks the `spikeport` command runs before any work: options, output paths, data against the model/IR.

Each check raises an :class:`~spikeport.errors.OptionError` (or another SpikeportError) whose message
names the option or file, the value and the rule, so every command reports bad input the same way
and before spending minutes on a computation whose result could not be written. New commands call
these helpers rather than writing their own.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .errors import OptionError, OutputPathError


# ---------------------------------------------------------------------- options
def timesteps_list(text: str, option: str = "--timesteps") -> list[int]:
    """``"8,16,32"`` -> ``[8, 16, 32]``; every value a positive integer, no duplicates."""
    try:
        ts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise OptionError(f"{option} {text!r}: expected comma-separated positive integers, e.g. 8,16,32") from None
    if not ts or min(ts) < 1:
        raise OptionError(f"{option} {text!r}: every value must be >= 1")
    if len(set(ts)) != len(ts):
        raise OptionError(f"{option} {text!r}: a value is repeated")
    return ts


def int_at_least(minimum: int):
    """A typer ``parser`` for an integer option ``>= minimum`` whose message names the value and the limit."""
    import typer

    def parse(text) -> int:
        if isinstance(text, int):
            value = text
        else:
            try:
                value = int(str(text).strip())
            except ValueError:
                raise typer.BadParameter(f"{str(text)!r} is not an integer") from None
        if value < minimum:
            raise typer.BadParameter(f"{value} is below the minimum {minimum}")
        return value
    return parse


def positive_finite(value: float, option: str) -> float:
    """A float option that must be finite and > 0 (NaN and inf are refused)."""
    if not math.isfinite(value) or value <= 0:
        raise OptionError(f"{option} {value}: must be a finite number > 0")
    return float(value)


def choice(value: str, allowed: Iterable[str], option: str) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise OptionError(f"{option} {value!r}: must be one of {', '.join(allowed)}")
    return value


def device(text: Optional[str], option: str = "--device") -> Optional[str]:
    """A torch device string that exists on this machine (``None``: CPU)."""
    if text is None:
        return None
    import torch
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise OptionError(f"{option} {text!r}: not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"{option} {text!r}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"{option} {text!r}: device index {dev.index} out of range "
                              f"(this machine has {torch.cuda.device_count()} CUDA device(s))")
    elif dev.type != "cpu":
        raise OptionError(f"{option} {text!r}: spikeport runs on cpu or cuda, not {dev.type}")
    return text


def number_pair(text: str, option: str) -> tuple[float, float]:
    """``"LO,HI"`` -> (lo, hi), two finite numbers with lo < hi."""
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise OptionError(f"{option} {text!r}: expected LO,HI, two finite numbers with LO < HI")
    return lo, hi


def key_values(items: list[str], option: str = "--opt") -> dict:
    """Parse repeated ``KEY=VALUE``; values become int, float, bool or str (the method checks types)."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{option} {item!r}: expected KEY=VALUE")
        if key.strip() in out:
            raise OptionError(f"{option} {item!r}: {key.strip()!r} given twice")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                pass
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out[key.strip()] = value
    return out


# ---------------------------------------------------------------------- output paths
OUTPUTS: list[Path] = []   # the outputs the running command checked (named when an OS error names no file)


def _probe_writable(folder: Path) -> Optional[str]:
    """Create and remove a file in ``folder``; return why that fails (None when it works)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".spikeport-probe.", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(tmp)
    return None


def output_file(path: Optional[Path], option: str) -> Optional[Path]:
    """Check that ``path`` can be written as a file: not a folder, its folder exists and is writable."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path}: is a folder; give a file name")
    parent = path.parent
    if not parent.exists():
        raise OutputPathError(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputPathError(f"{option} {path}: {parent} is not a folder")
    why = _probe_writable(parent)
    if why:
        raise OutputPathError(f"{option} {path}: cannot write in folder {parent} ({why})")
    OUTPUTS.append(path)
    return path


def output_dir(path: Optional[Path], option: str) -> Optional[Path]:
    """Check that ``path`` can be created (or replaced) as a folder: not a file, its parent writable."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: exists and is not a folder")
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(f"{option} {path}: folder {parent} does not exist")
    why = _probe_writable(path if path.is_dir() else parent)
    if why:
        raise OutputPathError(f"{option} {path}: cannot write there ({why})")
    OUTPUTS.append(path)
    return path


def distinct_outputs(inputs: dict[str, Optional[Path]], outputs: dict[str, Optional[Path]]) -> None:
    """No two outputs share a path, and no output overwrites an input of the same run."""
    seen: dict[Path, str] = {}
    for option, p in outputs.items():
        if p is None:
            continue
        key = Path(p).resolve()
        if key in seen:
            raise OutputPathError(f"{option} {p}: same path as {seen[key]}; give each output its own file")
        seen[key] = option
    for option, p in inputs.items():
        if p is not None and Path(p).resolve() in seen:
            out = seen[Path(p).resolve()]
            raise OutputPathError(f"{out} {p}: would overwrite the input {option}; choose another output path")


# ---------------------------------------------------------------------- data against the model / IR
def labels_in_range(y: Optional[np.ndarray], classes: int, data: Path, against: str) -> None:
    if y is None or len(y) == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= classes:
        raise OptionError(f"{data}: key 'y' holds labels {lo}..{hi}, but {against} has {classes} classes "
                          f"(labels must lie in 0..{classes - 1})")


def data_for_model(ann, x: np.ndarray, y: Optional[np.ndarray], data: Path) -> None:
    """``x`` has the model's sample shape and the labels name its outputs."""
    want = tuple(int(s) for s in ann.input_shape)
    if tuple(x.shape[1:]) != want:
        raise OptionError(f"{data}: key 'x' has samples of shape {tuple(x.shape[1:])}, but model {ann.source} "
                          f"expects {want} (x must be (N, {', '.join(map(str, want))}))")
    labels_in_range(y, int(np.prod(ann.graph.output.shape)), data, f"model {ann.source}")


def data_for_net(net, x: np.ndarray, y: Optional[np.ndarray], data: Path, net_path: Path) -> None:
    """``x`` has the IR input's sample shape and the labels name its output neurons."""
    inputs = net.inputs()
    if len(inputs) != 1:
        raise OptionError(f"{net_path}: the network has {len(inputs)} inputs; DATA.npz holds one ('x')")
    inp = inputs[0]
    want = tuple(int(s) for s in inp.shape)
    got = tuple(x.shape[1:])
    if inp.coding == "spikes":
        if got[1:] != want:
            raise OptionError(f"{data}: key 'x' has samples of shape {got}, but {net_path} input {inp.name!r} "
                              f"takes spike trains (T, {', '.join(map(str, want))})")
    elif got != want:
        raise OptionError(f"{data}: key 'x' has samples of shape {got}, but {net_path} input {inp.name!r} "
                          f"expects {want} (x must be (N, {', '.join(map(str, want))}))")
    if len(net.outputs) == 1:
        labels_in_range(y, int(np.prod(net.shape_of(net.outputs[0]))), data, f"{net_path}")


def quantized(net, path: Path, expected: bool, hint: str = "") -> None:
    """A quantised IR where one is required (or a float IR where that is required)."""
    if bool(net.quantized) == expected:
        return
    if expected:
        raise OptionError(f"{path}: a float IR, but a quantised one is needed here; run `spikeport compile {path} "
                          f"--profile loihi2 --out QNET.h5` first{hint}")
    raise OptionError(f"{path}: already quantised (profile {net.datapath.profile!r}); pass the float IR "
                      f"written by `spikeport convert`{hint}")


def model_matches_net(ann, net, model_path: Path, net_path: Path, need_sources: bool = False) -> None:
    """The ANN and the IR describe the same network: input and output shapes, and (for per-layer
    comparisons) every population's source node exists in the ANN."""
    inp = net.inputs()[0]
    if tuple(ann.input_shape) != tuple(inp.shape):
        raise OptionError(f"{model_path} and {net_path} do not match: the model's input is {tuple(ann.input_shape)}, "
                          f"the IR's input {inp.name!r} is {tuple(inp.shape)}")
    n_out = int(np.prod(ann.graph.output.shape))
    if len(net.outputs) == 1 and int(np.prod(net.shape_of(net.outputs[0]))) != n_out:
        raise OptionError(f"{model_path} and {net_path} do not match: the model has {n_out} outputs, the IR's "
                          f"output {net.outputs[0]!r} has {int(np.prod(net.shape_of(net.outputs[0])))}")
    if need_sources:
        names = {n.name for n in ann.module.graph.nodes}
        missing = [p.name for p in net.populations() if p.source and p.source not in names]
        if missing:
            raise OptionError(f"{model_path} and {net_path} do not match: populations {missing[:5]} come from ANN "
                              f"nodes the model does not have (was the IR converted from another model?)")


def same_structure(net, qnet, net_path: Path, qnet_path: Path) -> None:
    """The float IR and the quantised IR have the same populations (qnet compiled from net)."""
    a = {p.name: tuple(p.shape) for p in net.populations()}
    b = {p.name: tuple(p.shape) for p in qnet.populations()}
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:4]
        raise OptionError(f"{net_path} and {qnet_path} do not match: their populations differ ({diff}); "
                          f"QNET.h5 must be compiled from NET.h5")


__all__ = ["choice", "int_at_least", "data_for_model", "data_for_net", "device", "distinct_outputs", "key_values",
           "labels_in_range", "model_matches_net", "output_dir", "output_file", "positive_finite", "quantized",
           "same_structure", "timesteps_list"]
