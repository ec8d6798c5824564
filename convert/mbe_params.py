"""MBE fit files: a versioned JSON format (docs/mbe.md), an atomic writer, a validating loader and
the fits shipped with spikeport (``convert/mbe_fits/``, package data).

Loading never executes anything from the file (plain JSON, constants such as NaN refused); every
field is checked and a bad one raises ``MBEFitError`` naming the file, the field and the value.
Floats are written with Python's shortest round-trip repr, so a loaded fit equals the saved one bit
for bit.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .mbe_fit import FUNCTIONS, MBEFit, MBEFitError

FORMAT = "spikeport-mbe-fit"
VERSION = 1
FITS_DIR = Path(__file__).with_name("mbe_fits")
BRANCH_INPUTS = ("relu(x)", "relu(-x)")
PARAMS = ("tau_d", "tau_r", "tau_V", "dt", "w")


def fit_to_dict(fit: MBEFit) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "function": fit.function,
        "domain": [float(fit.domain[0]), float(fit.domain[1])],
        "offset": float(fit.offset),
        "shift": float(fit.shift),
        "bases": int(fit.bases),
        "timesteps": int(fit.timesteps),
        "decay": bool(fit.decay),
        "odd": bool(fit.odd),
        "branches": [dict({"input": BRANCH_INPUTS[b], "alpha": float(fit.alpha[b])},
                          **{k: [float(v) for v in getattr(fit, k)[b]] for k in PARAMS})
                     for b in range(fit.w.shape[0])],
        "training": {"seed": int(fit.seed), "samples": int(fit.samples), "epochs": int(fit.epochs), "lr": float(fit.lr),
                     "lr_decay": float(fit.lr_decay), "batch_size": int(fit.batch_size), "optimizer": "Adam"},
        "quality": {"mse": float(fit.mse), "max_abs_err": float(fit.max_abs_err), "grid": "uniform, 20001 points"},
    }


def save_fit(fit: MBEFit, path: str | os.PathLike) -> Path:
    """Write ``fit`` as JSON via a temporary file renamed into place (no half-written file)."""
    path = Path(path)
    data = fit_to_dict(fit)
    check_fit_dict(data, str(path))                     # never write a file the loader would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _err(where: str, field: str, msg: str) -> MBEFitError:
    return MBEFitError(f"{where}: field {field!r}: {msg}")


def _get(d: dict, key: str, kind, where: str, prefix: str = ""):
    field = prefix + key
    if key not in d:
        raise _err(where, field, "missing")
    v = d[key]
    if kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _err(where, field, f"expected a finite number, found {v!r}"[:200])
        return float(v)
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _err(where, field, f"expected an integer, found {v!r}"[:200])
        return v
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise _err(where, field, f"expected {kind.__name__}, found {type(v).__name__} {v!r}"[:200])
    return v


def check_fit_dict(d, where: str) -> MBEFit:
    """Validate a parsed fit file and build the ``MBEFit`` (raises MBEFitError)."""
    if not isinstance(d, dict):
        raise MBEFitError(f"{where}: expected one JSON object, found {type(d).__name__}")
    fmt = d.get("format")
    if fmt != FORMAT:
        raise _err(where, "format", f"{fmt!r} is not {FORMAT!r} (not an MBE fit file)")
    version = _get(d, "version", int, where)
    if version != VERSION:
        raise _err(where, "version", f"{version} is not supported (this spikeport reads version {VERSION})")
    function = _get(d, "function", str, where)
    if function not in FUNCTIONS:
        raise _err(where, "function", f"{function!r} is not one of {sorted(FUNCTIONS)}")
    domain = _get(d, "domain", list, where)
    if len(domain) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in domain) \
            or not domain[0] < domain[1]:
        raise _err(where, "domain", f"{domain!r} must be two finite numbers lo < hi"[:200])
    offset = _get(d, "offset", float, where)
    shift = _get(d, "shift", float, where)
    N = _get(d, "bases", int, where)
    T = _get(d, "timesteps", int, where)
    if not 1 <= N <= 127:
        raise _err(where, "bases", f"{N} outside 1..127")
    if not 1 <= T <= 4096:
        raise _err(where, "timesteps", f"{T} outside 1..4096")
    decay = _get(d, "decay", bool, where)
    odd = _get(d, "odd", bool, where)
    branches = _get(d, "branches", list, where)
    signed = domain[0] < 0 < domain[1]
    want_b = 2 if signed else 1
    if len(branches) != want_b:
        raise _err(where, "branches", f"{len(branches)} branch(es); a domain {domain} needs {want_b} "
                                      f"({' and '.join(BRANCH_INPUTS[:want_b])})")
    arrays = {k: np.zeros((want_b, N)) for k in PARAMS}
    alpha = np.zeros(want_b)
    for b, br in enumerate(branches):
        pre = f"branches[{b}]."
        if not isinstance(br, dict):
            raise _err(where, f"branches[{b}]", "expected an object")
        if br.get("input") != BRANCH_INPUTS[b]:
            raise _err(where, pre + "input", f"{br.get('input')!r} must be {BRANCH_INPUTS[b]!r}")
        alpha[b] = _get(br, "alpha", float, where, pre)
        if alpha[b] <= 0:
            raise _err(where, pre + "alpha", f"{alpha[b]} must be > 0")
        for k in PARAMS:
            vals = _get(br, k, list, where, pre)
            if len(vals) != N:
                raise _err(where, pre + k, f"has {len(vals)} values, bases = {N}")
            for i, v in enumerate(vals):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise _err(where, f"{pre}{k}[{i}]", f"{v!r} is not a finite number"[:200])
                if k != "w" and v <= 0:
                    raise _err(where, f"{pre}{k}[{i}]", f"{v!r} must be > 0")
            arrays[k][b] = vals
    tr = _get(d, "training", dict, where)
    q = _get(d, "quality", dict, where)
    return MBEFit(function=function, domain=(float(domain[0]), float(domain[1])), offset=offset, shift=shift, bases=N, timesteps=T,
                  decay=decay, alpha=alpha, odd=odd, seed=_get(tr, "seed", int, where, "training."),
                  samples=_get(tr, "samples", int, where, "training."), epochs=_get(tr, "epochs", int, where, "training."),
                  lr=_get(tr, "lr", float, where, "training."), lr_decay=_get(tr, "lr_decay", float, where, "training."),
                  batch_size=_get(tr, "batch_size", int, where, "training."),
                  mse=_get(q, "mse", float, where, "quality."), max_abs_err=_get(q, "max_abs_err", float, where, "quality."),
                  **arrays)


def load_fit(path: str | os.PathLike) -> MBEFit:
    """Read and validate an MBE fit file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MBEFitError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MBEFitError(f"{path}: cannot be read ({e})") from None

    def no_constant(c):
        raise ValueError(f"{c} is not allowed")
    try:
        data = json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as e:
        raise MBEFitError(f"{path}: not valid JSON ({str(e)[:200]})") from None
    return check_fit_dict(data, str(path))


def default_name(function: str, bases: int, timesteps: int) -> str:
    return f"{function}_N{bases}_T{timesteps}.json"


PAPER_GELU_DOMAIN = (-120.0, 10.0)   # the paper's GELU fitting domain (paper 001); shipped as gelu_paper_*


def paper_gelu_name(bases: int, timesteps: int, decay: bool = True) -> str:
    """File of a GELU fit on the paper's domain (the Fig. 6c sweep and ``--opt gelu_fit=paper``)."""
    return f"gelu_paper_N{bases}_T{timesteps}{'' if decay else '_nodecay'}.json"


def _shipped_fit(name: str, family: str, what: str, make: str) -> MBEFit:
    """Load the shipped fit file ``name``; if absent, say which of its ``family`` ship and how to make it."""
    path = FITS_DIR / name
    if not path.exists():
        have = sorted(p.name for p in FITS_DIR.glob(f"{family}_N*.json"))
        raise MBEFitError(f"{path}: no shipped {what} (shipped: {have}); make one with `{make}`")
    return load_fit(path)


def paper_gelu_fit(bases: int = 4, timesteps: int = 16) -> MBEFit:
    """The shipped GELU fit on the paper's domain (-120, 10) (``--opt gelu_fit=paper``)."""
    return _shipped_fit(paper_gelu_name(bases, timesteps), "gelu_paper",
                        f"paper-domain GELU fit with N={bases}, T={timesteps}",
                        f"spikeport mbe-fit --function gelu --domain=-120,10 --bases {bases} --timesteps {timesteps} --out FILE")


def default_fit(function: str, bases: int | None = None, timesteps: int | None = None) -> MBEFit:
    """The fit shipped with spikeport (defaults: GELU/tanh N=4, the others N=8, T=16)."""
    if function not in FUNCTIONS:
        raise MBEFitError(f"MBE: unknown function {function!r}; known: {sorted(FUNCTIONS)}")
    spec = FUNCTIONS[function]
    N, T = bases or spec.bases, timesteps or spec.timesteps
    return _shipped_fit(default_name(function, N, T), function, f"MBE fit for {function} with N={N}, T={T}",
                        f"spikeport mbe-fit --function {function} --bases {N} --timesteps {T} --out FILE")


__all__ = ["FITS_DIR", "FORMAT", "MBEFitError", "PAPER_GELU_DOMAIN", "VERSION", "check_fit_dict", "default_fit",
           "fit_to_dict", "load_fit", "paper_gelu_fit", "paper_gelu_name", "save_fit"]
