"""The `spikeport` command. It only composes public functions of the packages below it.

Error handling lives in one place (:func:`_handled`): a :class:`~spikeport.errors.SpikeportError`
is the user's input and exits 2 with its message; a file system error (permission denied, disk full)
exits 2 naming the path; Ctrl-C exits 130; anything else is a bug in spikeport, reported in one
line (the traceback with ``--debug`` or SPIKEPORT_DEBUG=1) with exit 3. Every command checks its
options, data and output paths (:mod:`spikeport.cli_checks`) and estimates its work
(:mod:`spikeport.simulator.workload`) before it starts computing.
"""
from __future__ import annotations

import functools
import gc
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.text import Text

from . import cli_checks as check
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, SpikeportError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Convert ANNs to SNNs, compile them for neuromorphic chips, simulate bit-accurately, report.")
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
PIPED_WIDTH = 1000   # when stdout is not a terminal, tables take the width they need (no squeezing into 80)
DEBUG_ENV = "SPIKEPORT_DEBUG"
_state = {"debug": False}
YES_HELP = "Run even when the estimated work is far beyond what this machine can do."
SPINNAKER_PROFILE_HELP = ("spinnaker: spinnaker1 or spinnaker2 (default: the network's if it is a SpiNNaker one, "
                          "else spinnaker1).")
SPINNAKER_MACHINE_HELP = "spinnaker: 48-chip (one SpiNN-5 board) or WxH chips (a torus)."


def _say_error(prefix: str, message: str) -> None:
    """Print ``prefix: message`` to stderr; the message is plain text (brackets such as [profile] survive)."""
    err_console.print(Text(f"{prefix}: ", style="bold red") + Text(message), soft_wrap=True)


def _os_error_message(e: OSError) -> str:
    why = e.strerror or str(e)
    if e.filename is not None:
        path = e.filename
    else:  # e.g. h5py, whose message names only the temporary file, in parentheses
        why = why.split(" (")[0]
        path = f"writing {' or '.join(str(p) for p in check.OUTPUTS)}" if check.OUTPUTS else "(no file named)"
    if getattr(e, "errno", None) == 28:  # ENOSPC
        why = f"{why}: the disk is full; nothing was written"
    return f"{path}: {why}"


def _debug() -> bool:
    return bool(_state["debug"] or os.environ.get(DEBUG_ENV))


def _quiet_unraisable(unraisable) -> None:
    """Finalisers (h5py objects, zip files) that fail after the real error was raised, e.g. on a full
    disk, would print a traceback of their own; the error itself is reported once by _handled."""
    if _debug():
        sys.__unraisablehook__(unraisable)


def _quiet_excepthook(*exc_info) -> None:
    """Cython finalisers (h5py's ``__dealloc__``) print their traceback through sys.excepthook."""
    if _debug():
        sys.__excepthook__(*exc_info)


@contextmanager
def _handled():
    """The one place errors become messages and exit codes (see the module docstring)."""
    check.OUTPUTS.clear()
    previous_hooks = sys.unraisablehook, sys.excepthook
    sys.unraisablehook, sys.excepthook = _quiet_unraisable, _quiet_excepthook
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except SpikeportError as e:
        _say_error("error", str(e))
        raise typer.Exit(e.exit_code) from None
    except OSError as e:
        if _debug():
            err_console.print_exception()
        _say_error("error", _os_error_message(e))
        raise typer.Exit(EXIT_USER) from None
    except KeyboardInterrupt:
        _say_error("interrupted", "stopped by Ctrl-C; no partial output files were left")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # noqa: BLE001 - anything else is a bug: one line, not a traceback
        if _debug():
            err_console.print_exception()
        _say_error("internal error", f"{type(e).__name__}: {e}")
        err_console.print(Text(f"This is a bug in spikeport; please report it with the command line. Run with "
                               f"--debug (or {DEBUG_ENV}=1) for the traceback."), soft_wrap=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    finally:
        gc.collect()  # run pending finalisers while the quiet hook is in place
        sys.unraisablehook, sys.excepthook = previous_hooks


def command(*args, **kwargs):
    """``app.command`` whose body runs inside :func:`_handled` (use it for every new command)."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            with _handled():
                return fn(*a, **k)
        app.command(*args, **kwargs)(wrapper)
        return fn
    return deco


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an internal error.")):
    """Convert ANNs to SNNs, compile them for neuromorphic chips, simulate bit-accurately, report."""
    _state["debug"] = debug
    for c in (console, err_console):
        c._width = None  # re-detect (the same Console serves several in-process invocations)
        if not c.is_terminal and "COLUMNS" not in os.environ:
            c.width = PIPED_WIDTH


@contextmanager
def _working(description: str):
    """A spinner with elapsed time for steps that have no natural progress count."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as p:
        p.add_task(description, total=None)
        yield


def _workload(net, samples: int, timesteps, yes: bool, what: str, **kwargs):
    from .simulator import workload
    return workload.check(workload.estimate(net, samples, timesteps, what=what, **kwargs), override=yes)


def _sharded(device):
    """Join a torchrun process group (distributed.py) when launched by torchrun: the work is shared
    out, results are identical to one process, and only rank 0 prints and writes. Returns the device."""
    from . import distributed
    if not distributed.launched():
        return device
    dev = distributed.setup(device)
    if not distributed.is_root():
        console.quiet = True
    return dev


def _root() -> bool:
    from . import distributed
    return distributed.is_root()


def _load_net(path: Path, quantized: Optional[bool] = None, hint: str = ""):
    from . import ir
    net = ir.load(path)
    if quantized is not None:
        check.quantized(net, path, quantized, hint)
    return net


def _profile_for(net, profile: Optional[str], net_path: Path):
    """The profile to use with an IR: the one a quantised IR was compiled for unless another is named,
    and a named one must be that one (its bit widths are in the IR's weights)."""
    from . import hw_profiles
    if profile is None:
        return hw_profiles.load_profile(net.datapath.profile if net.quantized else "loihi2")
    prof = hw_profiles.load_profile(profile)
    if net.quantized and prof.name != net.datapath.profile:
        raise check.OptionError(f"--profile {profile!r}: {net_path} is quantised for {net.datapath.profile!r}, "
                                f"not {prof.name!r}; compile it for {prof.name!r} first, or omit --profile")
    return prof


# --------------------------------------------------------------------------------------------------
@command()
def demo(out: Path = typer.Option(Path("spikeport-demo"), "--out", help="Folder for report.json, IR files and plots."),
         timesteps: Optional[str] = typer.Option(None, help="Comma-separated T values (default 8,16,32,64; "
                                                 "--model vit: 8,16)."),
         profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
         device: Optional[str] = typer.Option(None, help="torch device, e.g. cuda; default CPU."),
         retrain: bool = typer.Option(False, help="Train the model instead of loading shipped weights."),
         model: str = typer.Option("cnn", "--model", help="cnn (digits CNN, IF) or vit (digits ViT, ECMT with "
                                   "fixed-point operators).")):
    """Digits CNN (or --model vit) -> SNN -> loihi2 fixed point: accuracy vs T, per-layer fidelity, energy, cores."""
    from . import hw_profiles
    if model not in ("cnn", "vit"):
        raise check.OptionError(f"--model {model!r}: expected 'cnn' or 'vit'")
    if timesteps is None:
        timesteps = "8,16" if model == "vit" else "8,16,32,64"
    ts = check.timesteps_list(timesteps)
    dev = check.device(device)
    hw_profiles.load_profile(profile)
    check.output_dir(out, "--out")
    if model == "vit":
        from .demo_vit import run_vit_demo
        run_vit_demo(out, ts, profile=profile, device=dev, retrain=retrain, console=console)
        return
    from .demo import run_demo
    run_demo(out, ts, profile=profile, device=dev, retrain=retrain, console=console)


@command()
def convert(model: Path = typer.Argument(..., help="ONNX file or torch.export program (.pt2)."),
            calib: Path = typer.Option(..., "--calib", help="DATA.npz with x (float32) and optional y."),
            method: str = typer.Option("if", help="Conversion method."),
            out: Path = typer.Option(..., "--out", help="Output IR file (NET.h5)."),
            timesteps: Optional[int] = typer.Option(None, parser=check.int_at_least(1), metavar="INTEGER",
                                                    help="Target T (methods that tune for T use "
                                                    "it; with labels, the float SNN is evaluated at T)."),
            percentile: float = typer.Option(99.9, help="IF: activation percentile for thresholds (100 = max)."),
            reset: Optional[str] = typer.Option(None, help="IF: reset rule, subtract (default) or zero."),
            v_init: Optional[str] = typer.Option(None, help="IF: initial membrane, half (theta/2, default) or zero."),
            maxpool: str = typer.Option("error", help="MaxPool handling: error, or avg (replace by AvgPool)."),
            pool: str = typer.Option("auto", help="AvgPool before a conv: auto (fold only where that adds no MACs, "
                                     "else a relay population), fold, or separate."),
            opt: list[str] = typer.Option([], "--opt", help="Method option KEY=VALUE (repeatable), e.g. "
                                          "--opt search=both (aif), --opt setting=ibt (negspike), --opt neuron=lava-lif "
                                          "(if: Lava's own LIF), --opt preset=netx (if: netx-exact, for export --target netx)."),
            json_out: Optional[Path] = typer.Option(None, "--json", help="Write a JSON summary here."),
            yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Convert a trained ANN into a float SNN in spikeport's IR."""
    from . import convert as conv
    from . import datasets, frontend, ir, report
    check.choice(method, sorted(conv.METHODS), "--method")
    check.choice(maxpool, conv.registry.MAXPOOL_CHOICES, "--maxpool")
    check.choice(pool, ("auto", "fold", "separate"), "--pool")
    opts = {k: v for k, v in dict(percentile=percentile, reset=reset, v_init=v_init).items()
            if v is not None} if method == "if" else {}
    opts.update(check.key_values(opt))
    check.output_file(out, "--out")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"MODEL": model, "--calib": calib}, {"--out": out, "--json": json_out})
    x, y = datasets.load_npz(calib)
    ann = frontend.load_model(model)
    check.data_for_model(ann, x, y, calib)
    # the ANN's accuracy first: conversion takes its weights over (release_ann), one copy in memory at a time
    ann_accuracy = ann.evaluate(x, y)["accuracy"] if timesteps and y is not None else None
    with _working(f"converting with method {method}"):
        net = conv.convert(ann, x, method=method, timesteps=timesteps, maxpool=maxpool, pool=pool, release_ann=True, **opts)
    if timesteps and y is not None:
        _workload(net, len(x), timesteps, yes, "float SNN accuracy on the calibration data")
    ir.save(net, out)
    summary = {"model": str(model), "method": method, "out": str(out), "layers": net.summary(),
               "pooling": net.meta.get("pooling", [])}
    for d in summary["pooling"]:
        console.print(Text(f"pool {d['pool']} -> {d['layer']}: {d['decision']} (MACs folded {d['folded_macs']:,}, "
                           f"separate {d['separate_macs']:,}; {d['reason']})"))
    console.print(Text.assemble("converted ", (str(model), "bold"), " with method ", (method, "bold"),
                                f" -> {out} ({len(net.populations())} populations, {len(net.projections())} projections)"))
    if timesteps and y is not None:
        from .simulator import simulate as sim
        res = sim(net, x, timesteps, progress=True)
        summary["calib_accuracy_snn"] = res.accuracy(y)
        summary["calib_accuracy_ann"] = ann_accuracy
        console.print(f"on the calibration data: ANN {100 * summary['calib_accuracy_ann']:.2f}%, "
                      f"float SNN at T={timesteps} {100 * summary['calib_accuracy_snn']:.2f}%")
    if json_out:
        report.write_json(summary, json_out)


@command("mbe-fit")
def mbe_fit(function: str = typer.Option(..., "--function", help="gelu, tanh, identity, exp2, reciprocal or invsqrt."),
            bases: Optional[int] = typer.Option(None, "--bases", parser=check.int_at_least(1), metavar="INTEGER",
                                                help="Bases N (default: GELU/tanh 4, others 8)."),
            timesteps: int = typer.Option(16, "--timesteps", parser=check.int_at_least(1), metavar="INTEGER",
                                          help="Steps T the neuron runs."),
            seed: int = typer.Option(0, "--seed", help="Seed of samples, initialisation and batches."),
            out: Path = typer.Option(..., "--out", help="Fit file to write (JSON, docs/mbe.md)."),
            samples: int = typer.Option(10_000, parser=check.int_at_least(1), metavar="INTEGER",
                                        help="Uniform samples on the domain."),
            epochs: int = typer.Option(200, parser=check.int_at_least(1), metavar="INTEGER",
                                       help="Adam epochs (lr 0.01, decay 0.99 per epoch)."),
            batch_size: int = typer.Option(500, parser=check.int_at_least(1), metavar="INTEGER",
                                           help="Samples per Adam step (smaller: more steps, slower)."),
            no_decay: bool = typer.Option(False, "--no-decay", help="Ablation: constant kernels (Fig. 6c)."),
            domain: Optional[str] = typer.Option(None, "--domain", metavar="LO,HI",
                                                 help="Input domain instead of the function's default, e.g. -10,10 "
                                                      "for GELU (docs/mbe.md).")):
    """Learn MBE basis parameters for a function (paper 001) and write a fit file; same seed, same file."""
    check.output_file(out, "--out")
    lo_hi = check.number_pair(domain, "--domain") if domain is not None else None
    from .convert.mbe_fit import fit_mbe
    from .convert.mbe_params import save_fit
    with _working(f"fitting MBE {function}"):
        fit = fit_mbe(function, bases, timesteps, seed=seed, samples=samples, epochs=epochs,
                      batch_size=batch_size, decay=not no_decay, domain=lo_hi)
    save_fit(fit, out)
    console.print(Text(f"MBE fit of {function} (N={fit.bases}, T={fit.timesteps}, decay={fit.decay}) on "
                       f"{list(fit.domain)}: MSE {fit.mse:.3e}, max |error| {fit.max_abs_err:.3e} -> {out}"))


@command(name="import")
def import_(model: Path = typer.Argument(..., metavar="MODEL.nir", help="A NIR graph (HDF5) written by NIR 1.0.x."),
            out: Path = typer.Option(..., "--out", help="Output IR file (NET.h5)."),
            convention: str = typer.Option("spec", help="Whose conventions the file follows: spec, snntorch, norse, "
                                                        "sinabs or spikingjelly (dt, reset, multi-spike, tau encoding)."),
            dt: Optional[float] = typer.Option(None, "--dt", help="Step length in seconds (overrides the convention's)."),
            reset: Optional[str] = typer.Option(None, "--reset", help="zero or subtract (overrides the convention's)."),
            json_out: Optional[Path] = typer.Option(None, "--json", help="Write a JSON summary here.")):
    """Import a NIR graph into spikeport's IR, with the exporter's semantics recorded in the IR."""
    from . import ir, report
    if dt is not None:
        check.positive_finite(dt, "--dt")
    if reset is not None:
        check.choice(reset, ("zero", "subtract"), "--reset")
    check.output_file(out, "--out")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"MODEL.nir": model}, {"--out": out, "--json": json_out})
    from .frontend.nir_import import import_nir
    net = import_nir(model, convention=convention, dt=dt, reset=reset)
    ir.save(net, out)
    meta = net.meta["nir"]
    console.print(Text(f"imported {model} ({meta['convention']} convention: dt {meta['dt']}, reset {meta['reset']}"
                       f"{' after the next decay' if meta['reset_timing'] == 'next_step' else ''}, fire on v {meta['compare']} "
                       f"threshold{', multi-spike' if meta['multi_spike'] else ''}) -> {out} ({len(net.populations())} "
                       f"populations, {len(net.projections())} projections)"))
    for note in meta["notes"]:
        console.print(Text(f"  note: {note}"))
    if json_out:
        report.write_json({"model": str(model), "out": str(out), "nir": meta, "layers": net.summary()}, json_out)


@command(name="compile")
def compile_(net_path: Path = typer.Argument(..., metavar="NET.h5"),
             profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
             out: Path = typer.Option(..., "--out", help="Quantised IR file (QNET.h5)."),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Write the quantisation table as JSON."),
             strict: bool = typer.Option(False, "--strict", help="Treat compile warnings (destroyed layers, "
                                         "unavoidable wraps) as errors: exit 2, write nothing."),
             ungated: bool = typer.Option(False, "--ungated", help="Run IF / CubaLIF layers at every step like Lava's "
                                          "LIF and netx (no t_start gating) where no window changes; the rest are listed."),
             netx: bool = typer.Option(False, "--netx", help="Quantise for lava-dl netx (weight_exp 0, bias_exp 6) and "
                                       "--ungated, so export --target netx gives this IR's spikes at every step.")):
    """Quantise a float IR to a hardware profile's fixed-point formats; print the per-layer table."""
    from . import hw_profiles, ir
    check.output_file(out, "--out")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"NET.h5": net_path}, {"--out": out, "--json": json_out})
    net = _load_net(net_path, quantized=False)
    prof = hw_profiles.load_profile(profile)
    from . import compiler, report  # torch: imported once the inputs are known to be good
    qnet, table = compiler.quantize(net, prof, netx=netx, release_input=True)   # net is not used again
    if ungated or netx:
        qnet, notes = compiler.ungate(qnet)
        for note in notes:
            console.print(Text(f"  --ungated: {note}"))
    console.print(compiler.render_quant_table(table))
    if table.operators:
        console.print(compiler.render_operator_table(table))
    for line in compiler.render_warnings(table.warnings):
        console.print(line, highlight=False)
    if strict and table.warnings:
        raise check.OptionError(f"--strict: {len(table.warnings)} compile warning(s), nothing written; "
                                f"first: {table.warnings[0]}")
    ir.save(qnet, out)
    console.print(Text.assemble("quantised for ", (prof.name, "bold"), f" -> {out}"))
    if json_out:
        report.write_json({"profile": prof.name, "net": str(net_path), "out": str(out), **table.as_dict()}, json_out)


def _sim_summary(net, res, y, T: int) -> dict:
    layers = {}
    for pop in net.populations():
        st = dict(res.layers.get(pop.name, {}))
        st["neurons"] = pop.size
        layers[pop.name] = st
    out = {"accuracy": res.accuracy(y) if y is not None else None, "timesteps": T, "samples": int(len(res.predictions)),
           "steps_run": res.steps_run, "quantized": net.quantized,
           "profile": net.datapath.profile if net.quantized else None, "layers": layers}
    if net.operators():   # where each operator ran and in which arithmetic (every report says so)
        out["operators"] = {op.name: {"op": type(op).__name__, "runs_on": getattr(op, "runs_on", None),
                                      "arithmetic": getattr(op, "arithmetic", None),
                                      "saturation_events": int(res.layers.get(op.name, {}).get("saturation_events", 0))}
                            for op in net.operators()}
    return out


@command()
def simulate(net_path: Path = typer.Argument(..., metavar="NET.h5"),
             data: Path = typer.Option(..., "--data", help="DATA.npz with x and optional y."),
             timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER", help="Timesteps T."),
             json_out: Optional[Path] = typer.Option(None, "--json"),
             save_outputs: Optional[Path] = typer.Option(None, "--save-outputs", help="NPZ of decoded outputs."),
             batch_size: int = typer.Option(256, parser=check.int_at_least(1), metavar="INTEGER"),
             device: Optional[str] = typer.Option(None),
             dtype: str = typer.Option("float64", "--dtype", help="Float IRs: float64 (default, the IR equations) "
                                       "or float32 (about twice as fast; outputs differ by float32 rounding)."),
             yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Float simulation of a float IR, bit-accurate integer simulation of a quantised IR."""
    from . import datasets
    dev = check.device(device)
    check.choice(dtype, ("float64", "float32"), "--dtype")
    check.output_file(json_out, "--json")
    check.output_file(save_outputs, "--save-outputs")
    check.distinct_outputs({"NET.h5": net_path, "--data": data}, {"--json": json_out, "--save-outputs": save_outputs})
    net = _load_net(net_path)
    x, y = datasets.load_npz(data)
    check.data_for_net(net, x, y, data, net_path)
    _workload(net, len(x), timesteps, yes, "simulate")
    from . import report  # torch: imported once the inputs are known to be good
    from .report.tables import operator_placement_line, simulate_table
    from .simulator import simulate as sim
    dev = _sharded(dev)
    res = sim(net, x, timesteps, batch_size=batch_size, device=dev, progress=True, dtype=dtype)
    summary = _sim_summary(net, res, y, timesteps)
    console.print(simulate_table(summary))
    if summary.get("operators"):
        console.print(operator_placement_line(summary["operators"]), highlight=False)
    if not _root():
        return
    if json_out:
        report.write_json(summary, json_out)
    if save_outputs:
        arrays = {"outputs": res.outputs, "predictions": res.predictions}
        if getattr(res, "output_state", None) is not None:
            arrays["output_state"] = res.output_state
        report.write_npz(save_outputs, **arrays)


@command()
def fidelity(model: Path = typer.Argument(..., help="The ANN (ONNX or .pt2)."),
             net_path: Path = typer.Argument(..., metavar="NET.h5"),
             qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
             data: Path = typer.Option(..., "--data"),
             timesteps: str = typer.Option("8,16,32,64"),
             json_out: Optional[Path] = typer.Option(None, "--json"),
             plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of accuracy vs T and per-layer divergence."),
             batch_size: int = typer.Option(256, parser=check.int_at_least(1), metavar="INTEGER"),
             device: Optional[str] = typer.Option(None),
             yes: bool = typer.Option(False, "--yes", help=YES_HELP),
             ablation: bool = typer.Option(True, "--ablation/--no-ablation",
                                           help="Attribute the fixed-point loss at the largest T to layers and "
                                                "settings by ablation (needs labels).")):
    """ANN vs float SNN vs fixed-point SNN per T, and per layer where float and fixed diverge and why."""
    from . import compiler, datasets, frontend, hw_profiles, report
    from .simulator.mixed import run_variants
    from .report.tables import accuracy_table, layer_fidelity_table
    from .simulator import simulate as sim
    ts = check.timesteps_list(timesteps)
    dev = check.device(device)
    check.output_file(json_out, "--json")
    check.output_file(plot, "--plot")
    check.distinct_outputs({"MODEL": model, "NET.h5": net_path, "QNET.h5": qnet_path, "--data": data},
                           {"--json": json_out, "--plot": plot})
    net = _load_net(net_path, quantized=False, hint=" (NET.h5 is the float IR, QNET.h5 the quantised one)")
    qnet = _load_net(qnet_path, quantized=True, hint=" (NET.h5 is the float IR, QNET.h5 the quantised one)")
    check.same_structure(net, qnet, net_path, qnet_path)
    x, y = datasets.load_npz(data)
    check.data_for_net(net, x, y, data, net_path)
    ann = frontend.load_model(model)
    check.model_matches_net(ann, net, model, net_path, need_sources=True)
    from .simulator import workload
    workload.check(workload.combine(workload.estimate(net, len(x), ts, what="fidelity (float SNN)"),
                                    workload.estimate(qnet, len(x), ts, what="fidelity (fixed-point SNN)")),
                   override=yes)
    dev = _sharded(dev)
    with _working("ANN accuracy and activations"):
        acc_ann = ann.evaluate(x, y)["accuracy"] if y is not None else None
        acts = ann.record_activations(x, [p.source for p in net.populations() if p.source])
    rep = report.fidelity(net, qnet, x, y, ts, simulate=sim, ann_accuracy=acc_ann,
                          ann_acts=acts, batch_size=batch_size, device=dev, progress=True,
                          ablation_at=-1 if ablation else None, run_variants=run_variants, quantize=compiler.quantize,
                          template_profile=hw_profiles.load_profile("loihi2")).to_json()
    console.print(accuracy_table(rep))
    console.print(layer_fidelity_table(rep["points"][-1]))
    if not _root():
        return
    if json_out:
        report.write_json(rep, json_out)
    if plot:
        report.plot_accuracy_vs_timesteps(rep, plot)


@command()
def energy(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           data: Path = typer.Option(..., "--data", help="DATA.npz with x (and optional y)."),
           timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER", help="Timesteps T."),
           profile: Optional[str] = typer.Option(None, help="Hardware profile (name or TOML path) for the chip "
                                                 "estimate; default: the one QNET.h5 was compiled for."),
           model: Optional[Path] = typer.Option(None, "--model", help="The ANN (ONNX or .pt2) for the MAC baseline; "
                                                                       "default: MACs of the IR's projections."),
           convention: str = typer.Option("fp32", help="Horowitz figures: fp32 (E_AC 0.9, E_MAC 4.6 pJ), int8 or int32; "
                                                       "neurobench adds NeuroBench's effective ACs/MACs, sparsity, footprint."),
           graded_as: str = typer.Option("ac", help="Graded events: ac (one event, spikeport) or mac (NeuroBench)."),
           timestep_ms: float = typer.Option(1.0, "--timestep-ms", help="Duration of one step for average power."),
           json_out: Optional[Path] = typer.Option(None, "--json"),
           plot: Optional[Path] = typer.Option(None, "--plot", help="PNG bar chart of energy per layer."),
           batch_size: int = typer.Option(256, parser=check.int_at_least(1), metavar="INTEGER"),
           device: Optional[str] = typer.Option(None),
           yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Operation counts and energy per layer: compute-only, with memory, the chip's estimate, ANN ratio."""
    from . import datasets, report
    from .report.energy import CONVENTIONS, energy_report
    from .simulator.opcount import GRADED_AS, ann_equivalent_macs
    check.choice(convention, tuple(CONVENTIONS) + ("neurobench",), "--convention")
    check.choice(graded_as, GRADED_AS, "--graded-as")
    check.positive_finite(timestep_ms, "--timestep-ms")
    dev = check.device(device)
    check.output_file(json_out, "--json")
    check.output_file(plot, "--plot")
    check.distinct_outputs({"QNET.h5": qnet_path, "--data": data, "--model": model},
                           {"--json": json_out, "--plot": plot})
    net = _load_net(qnet_path)
    if convention == "neurobench" and net.operators():
        op = net.operators()[0]
        raise check.OptionError(f"--convention neurobench: {qnet_path}: operator {op.name!r} ({type(op).__name__}) has "
                                "no NeuroBench rule (Linear/Conv only); use fp32, int8 or int32")
    prof = _profile_for(net, profile, qnet_path)
    x, y = datasets.load_npz(data)
    check.data_for_net(net, x, y, data, qnet_path)
    if model is not None:
        from . import frontend
        from .frontend.macs import count_macs
        ann = frontend.load_model(model)
        check.model_matches_net(ann, net, model, qnet_path)
        ann_macs = count_macs(ann)
    else:
        ann_macs = ann_equivalent_macs(net)
    _workload(net, len(x), timesteps, yes, "energy (operation counts)")
    dev = _sharded(dev)
    if net.operators() and net.coding == "C3":   # MBE Transformers: priced from the staged simulation's counts
        from .report.mbe_energy import mbe_energy_report
        with _working(f"simulating {len(x)} samples (C3) and counting"):
            rep = mbe_energy_report(net, x, timesteps, prof, y=y, ann_macs=ann_macs, convention=convention,
                                    batch_size=batch_size, device=dev)
        for table in rep.tables():
            console.print(table)
        if _root() and json_out:
            report.write_json(rep.to_json(), json_out)
        if plot:
            raise check.OptionError(f"--plot: {qnet_path}: no per-layer plot for MBE (C3) networks yet; use --json")
        return
    nb = None
    if convention == "neurobench":      # NeuroBench's counts beside spikeport's (fp32 Horowitz figures)
        from .report.neurobench import neurobench_counts
        with _working("NeuroBench-convention counts"):
            nb = neurobench_counts(net, x, timesteps, batch_size=batch_size, device=dev)
        convention = "fp32"
    with _working(f"counting operations on {len(x)} samples at T={timesteps}"):
        rep = energy_report(net, x, timesteps, prof, ann_macs=ann_macs, convention=convention,
                            graded_as=graded_as, timestep_s=timestep_ms * 1e-3, batch_size=batch_size, device=dev)
    for table in rep.tables():
        console.print(table)
    if nb is not None:
        from rich.table import Table
        t = Table(title="NeuroBench convention (per sample; neurobench 2.3 SynapticOperations, ActivationSparsity, Footprint)")
        for col in ("layer", "Effective_ACs", "Effective_MACs", "Dense"):
            t.add_column(col)
        for row in nb.layers:
            t.add_row(row["layer"], f"{row['effective_acs']:.6g}", f"{row['effective_macs']:.6g}", f"{row['dense']:.6g}")
        t.add_row("total", f"{nb.effective_acs:.6g}", f"{nb.effective_macs:.6g}", f"{nb.dense:.6g}")
        console.print(t)
        console.print(Text(f"NeuroBench activation sparsity {nb.activation_sparsity:.4f}, footprint {nb.footprint_bytes} bytes"))
    if not _root():
        return
    if json_out:
        report.write_json({**rep.to_json(), **({"neurobench": nb.to_json()} if nb is not None else {})}, json_out)
    if plot:
        rep.plot(plot)


@command()
def resources(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
              profile: Optional[str] = typer.Option(None, help="Hardware profile (name or TOML path); default: "
                                                    "the one QNET.h5 was compiled for."),
              json_out: Optional[Path] = typer.Option(None, "--json")):
    """Partition every layer onto cores and chips under the profile's limits; binding limit per layer."""
    from . import report
    from .report.resources import resources_report
    check.output_file(json_out, "--json")
    check.distinct_outputs({"QNET.h5": qnet_path}, {"--json": json_out})
    net = _load_net(qnet_path)
    prof = _profile_for(net, profile, qnet_path)
    rep = resources_report(net, prof)
    for table in rep.tables():
        console.print(table)
    for note in rep.placement.notes:
        console.print(Text(f"note: {note}"))
    if json_out:
        report.write_json(rep.to_json(), json_out)


@command()
def finetune(model: Path = typer.Argument(..., help="The trained ANN (ONNX or .pt2)."),
             method: str = typer.Option("qcfs", help="Method whose activation is swapped in (qcfs, pmsm; ViTs: stbif, pmsm)."),
             train: Path = typer.Option(..., "--train", help="DATA.npz with x (float32) and labels y."),
             epochs: int = typer.Option(..., parser=check.int_at_least(0), metavar="INTEGER",
                                        help="Fine-tuning epochs."),
             out: Path = typer.Option(..., "--out", help="Fine-tuned model, a torch.export program (.pt2)."),
             levels: Optional[int] = typer.Option(None, parser=check.int_at_least(1), metavar="INTEGER",
                                                  help="Quantisation levels L (default per method)."),
             lr: float = typer.Option(1e-3, help="Adam learning rate."),
             batch_size: int = typer.Option(64, parser=check.int_at_least(1), metavar="INTEGER"),
             seed: int = typer.Option(0),
             device: Optional[str] = typer.Option(None)):
    """Swap the ANN's ReLUs for a method's quantised activation, fine-tune, and write MODEL_Q.pt2 to convert."""
    from . import convert as _methods  # noqa: F401  (registers every method's fine-tuning activation)
    from . import datasets, frontend
    from .convert.finetune import ACTIVATION_FACTORIES, finetune_file
    from .convert.finetune_vit import C2_METHODS
    check.choice(method, sorted(set(ACTIVATION_FACTORIES) | set(C2_METHODS)), "--method")
    check.positive_finite(lr, "--lr")
    dev = check.device(device)
    if out.suffix.lower() != ".pt2":
        raise check.OptionError(f"--out {out}: the fine-tuned model is written as a torch.export program; "
                                "use a .pt2 file name")
    check.output_file(out, "--out")
    check.distinct_outputs({"MODEL": model, "--train": train}, {"--out": out})
    x, y = datasets.load_npz(train)
    if y is None:
        raise check.OptionError(f"{train}: fine-tuning needs labels (key 'y')")
    check.data_for_model(frontend.load_model(model, maxpool="avg"), x, y, train)
    s = finetune_file(model, method, x, y, epochs, out, levels=levels, lr=lr, batch_size=batch_size,
                      seed=seed, device=dev)
    console.print(Text.assemble("fine-tuned ", (str(model), "bold"), " for ", (method, "bold"),
                                f" (L={s.levels}, {s.epochs} epochs): training accuracy {100 * s.accuracy_before:.2f}% "
                                f"(ReLU) -> {100 * s.accuracy_after:.2f}% (quantised) -> {s.out}"))
    console.print(f"next: spikeport convert {s.out} --calib DATA.npz --method {method}")


@command()
def export(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           target: str = typer.Option("lava", help="lava (a folder with arrays + loader), netx (an HDF5 file), "
                                                   "spinnaker (a folder: description.json + tables.bin) or nir."),
           out: Path = typer.Option(..., "--out", help="Output folder (lava, spinnaker), NET.net.h5 (netx) or "
                                                       "MODEL.nir (nir)."),
           timesteps: int = typer.Option(64, parser=check.int_at_least(1), metavar="INTEGER",
                                         help="T the network will run for (gates each layer's window)."),
           json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-layer export report here."),
           profile: Optional[str] = typer.Option(None, help=SPINNAKER_PROFILE_HELP),
           machine: str = typer.Option("48-chip", help=SPINNAKER_MACHINE_HELP),
           convention: str = typer.Option("spec", help="nir: the convention the file is written for (spec, spikingjelly, norse)."),
           lossy: bool = typer.Option(False, "--lossy", help="nir: write even what a generic NIR reader would misread "
                                                             "(listed; spikeport keeps it in metadata)."),
           dt: Optional[float] = typer.Option(None, "--dt", help="nir: step length in seconds written into tau and delays."),
           approximate: bool = typer.Option(False, "--approximate", help="netx: write the nearest netx network (zero "
                                            "reset, '>') and print its accuracy against the simulator on --data."),
           data: Optional[Path] = typer.Option(None, "--data", help="netx --approximate: DATA.npz (x, optional y) "
                                               "the approximation is measured on.")):
    """Export a quantised IR to Lava (Loihi 2), lava-dl netx HDF5 or SpiNNaker (each layer's mapping
    reported), or an IR to a NIR graph (--target nir)."""
    from rich.table import Table
    from . import hw_profiles, report
    check.choice(target, ("lava", "netx", "spinnaker", "nir"), "--target")
    if target == "nir":
        if dt is not None:
            check.positive_finite(dt, "--dt")
        check.output_file(out, "--out")
        check.output_file(json_out, "--json")
        check.distinct_outputs({"NET.h5": qnet_path}, {"--out": out, "--json": json_out})
        from .backends.nir_export import export_nir
        net = _load_net(qnet_path)
        path, dropped = export_nir(net, out, convention=convention, dt=dt, lossy=lossy)
        console.print(Text(f"wrote {path} (NIR, {convention} convention; reads with nir.read)"))
        if dropped:
            console.print(Text("dropped for other NIR readers (spikeport's importer restores them from metadata):"))
            for d in dropped:
                console.print(Text(f"  - {d}"))
        if json_out:
            report.write_json({"net": str(qnet_path), "target": "nir", "out": str(path), "convention": convention,
                               "dropped": dropped}, json_out)
        return
    if target == "spinnaker":
        check.output_dir(out, "--out")
    elif target == "lava":
        check.output_dir(out, "--out")
        from .backends.loihi2.export import EXPORT_FILES
        if out.is_dir() and any(p.name not in EXPORT_FILES for p in out.iterdir()):
            raise check.OutputPathError(f"--out {out}: the folder holds other files than a Lava export "
                                        f"({', '.join(EXPORT_FILES[:3])}); give a new or empty folder")
    else:
        check.output_file(out, "--out")
    if (approximate or data is not None) and not (target == "netx" and approximate and data is not None):
        raise check.OptionError("--approximate and --data go together, with --target netx only "
                                f"(got --target {target}, --approximate {approximate}, --data {data})")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"QNET.h5": qnet_path, **({"--data": data} if data else {})}, {"--out": out, "--json": json_out})
    qnet = _load_net(qnet_path, quantized=True)
    if target == "spinnaker":
        _spinnaker_export(qnet, qnet_path, out, profile, machine, json_out)
        return
    from .backends import loihi2
    rows = loihi2.layer_report(qnet, timesteps)
    cores = {}
    if qnet.datapath.profile == "loihi2":
        from .errors import UnsupportedError
        try:
            res = report.resources_report(qnet, hw_profiles.load_profile("loihi2")).to_json()
            cores = {layer["layer"]: layer.get("cores") for layer in res["layers"]}
        except UnsupportedError as e:  # e.g. an operator network the partitioner cannot place yet
            console.print(Text(f"cores not counted: {e}"))
    approx_summary = None
    if target == "lava":
        path = loihi2.export(qnet, out, timesteps)
    elif approximate:
        path, approx_summary = _netx_approximate(qnet, qnet_path, out, data, timesteps)
    else:
        from .backends import netx
        path = netx.export_netx(qnet, out, timesteps)
    t = Table(title=f"{qnet_path} -> {path} ({target})")
    for col in ("layer", "Lava process", "Loihi 2 hardware", "payload", "cores", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        r["loihi2_cores"] = cores.get(r["layer"])
        t.add_row(str(r["layer"]), str(r["process"]), str(r["hardware"]), str(r["payload"]),
                  "-" if r["loihi2_cores"] is None else str(r["loihi2_cores"]), str(r.get("note", "")))
    console.print(t)
    if json_out:
        report.write_json({"qnet": str(qnet_path), "target": target, "out": str(path), "layers": rows,
                           **({"approximation": approx_summary} if approx_summary else {})}, json_out)


def _backend_inputs(qnet_path: Path, data: Path, target: str, json_out: Optional[Path], trace: Optional[Path] = None,
                    targets: tuple[str, ...] = ("lava", "spinnaker")):
    """Shared checks of `run` and `verify`: target, output paths, quantised IR, data."""
    from . import datasets
    check.choice(target, targets, "--target")
    check.output_file(json_out, "--json")
    check.output_file(trace, "--trace")
    check.distinct_outputs({"QNET.h5": qnet_path, "--data": data}, {"--json": json_out, "--trace": trace})
    qnet = _load_net(qnet_path, quantized=True)
    x, y = datasets.load_npz(data)
    check.data_for_net(qnet, x, y, data, qnet_path)
    return qnet, x, y


@command()
def run(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
        target: str = typer.Option("lava", help="lava: Lava's bit-accurate CPU simulation (Loihi2SimCfg fixed_pt); "
                                                "spinnaker: packet-level replay through the routing tables."),
        data: Path = typer.Option(..., "--data"),
        timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER"),
        json_out: Optional[Path] = typer.Option(None, "--json"),
        yes: bool = typer.Option(False, "--yes", help=YES_HELP),
        profile: Optional[str] = typer.Option(None, help=SPINNAKER_PROFILE_HELP),
        machine: str = typer.Option("48-chip", help=SPINNAKER_MACHINE_HELP),
        trace: Optional[Path] = typer.Option(None, "--trace", help="spinnaker: write the packets as EIEIO data messages.")):
    """Run a quantised IR in Lava, or replay it packet by packet on SpiNNaker, and report accuracy."""
    from . import report
    from .report.tables import operator_placement_line, simulate_table
    qnet, x, y = _backend_inputs(qnet_path, data, target, json_out, trace)
    if target == "spinnaker":
        _workload(qnet, len(x), timesteps, yes, "SpiNNaker packet replay")
        _spinnaker_run(qnet, qnet_path, x, y, timesteps, profile, machine, trace, json_out)
        return
    from .backends import loihi2
    _workload(qnet, len(x), timesteps, yes, "Lava run", engine="lava")
    res = loihi2.run_lava(qnet, x, timesteps, progress=True)
    n = len(res.predictions)
    layers = {}
    for pop in qnet.populations():
        if pop.name in res.spike_counts:
            spikes = int(res.spike_counts[pop.name].sum())
            layers[pop.name] = {"neurons": pop.size, "spikes": spikes, "spikes_per_sample": spikes / n,
                                "rate": spikes / (n * pop.size * timesteps)}
    acc = float((res.predictions == y).mean()) if y is not None else None
    summary = {"target": "lava", "accuracy": acc, "timesteps": timesteps, "samples": n, "steps_run": res.steps_run,
               "layers": layers}
    console.print(simulate_table(summary))
    if json_out:
        report.write_json(summary, json_out)


def _netx_approximate(qnet, qnet_path: Path, out: Path, data: Path, timesteps: int) -> tuple[Path, dict]:
    """export --target netx --approximate: the nearest netx network, written with its measured accuracy."""
    from . import datasets
    from .backends import netx
    x, y = datasets.load_npz(data)
    check.data_for_net(qnet, x, y, data, qnet_path)
    approx, changes = netx.approximate_for_netx(qnet, x, timesteps)
    path = netx.export_netx(approx, out, timesteps)
    m = netx.measure_approximation(qnet, approx, path, x, y, timesteps)
    console.print(Text(f"APPROXIMATE netx export {path} (not spikeport's network; T = {timesteps}, {len(x)} samples of {data}):"))
    for c in changes or ["(no neuron changed; ungated layers only)"]:
        console.print(Text(f"  changed: {c}"))
    if y is not None:
        console.print(Text(f"  accuracy: simulator {m['accuracy_simulator']:.4f}, netx {m['accuracy_netx']:.4f}, "
                           f"difference {m['accuracy_difference']:+.4f}"))
    console.print(Text(f"  predictions equal on {m['predictions_equal']:.1%} of samples; spikes equal inside each window: "
                       + ", ".join(f"{k} {v:.1%}" for k, v in m["spike_agreement"].items())))
    console.print(Text(f"  lava-dl netx = the approximate network at every step on {m['netx_samples']} samples: "
                       f"{m['netx_equals_approximation']}"))
    return path, {"changes": changes, **m}


@command()
def verify(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           target: str = typer.Option("lava", help="lava, netx (the netx file export --target netx writes, run in "
                                               "lava-dl) or spinnaker."),
           data: Path = typer.Option(..., "--data"),
           timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER"),
           json_out: Optional[Path] = typer.Option(None, "--json"),
           yes: bool = typer.Option(False, "--yes", help=YES_HELP),
           profile: Optional[str] = typer.Option(None, help=SPINNAKER_PROFILE_HELP),
           machine: str = typer.Option("48-chip", help=SPINNAKER_MACHINE_HELP)):
    """Run spikeport's simulator and Lava (or lava-dl netx, or the SpiNNaker packet replay) on the same
    inputs; compare every spike (and membrane value / delivered packet).

    Exit status 0 only when identical (1 when they differ); otherwise the first divergence is printed."""
    from dataclasses import asdict
    from . import report
    from .simulator import workload
    qnet, x, _ = _backend_inputs(qnet_path, data, target, json_out, targets=("lava", "spinnaker", "netx"))
    if target == "netx":
        from .backends import netx
        rep = netx.verify_netx(qnet, x, timesteps)
        console.print(Text(str(rep), style="green" if rep.identical else "red"))
        if json_out:
            report.write_json(asdict(rep), json_out)
        if not rep.identical:
            raise typer.Exit(1)
        return
    if target == "spinnaker":
        from .backends import spinnaker
        _workload(qnet, len(x), timesteps, yes, "SpiNNaker verify", record_all=True)
        desc = spinnaker.describe(qnet, _spinnaker_profile(qnet, profile), machine)
        rep = spinnaker.verify(desc, x, timesteps)
        console.print(Text(str(rep), style="green" if rep.identical else "red"))
        if json_out:
            report.write_json({"identical": rep.identical, "compared": rep.compared,
                               "outputs_equal": rep.outputs_equal, "predictions_equal": rep.predictions_equal,
                               "first_divergence": asdict(rep.divergence) if rep.divergence else None}, json_out)
        if not rep.identical:
            raise typer.Exit(1)
        return
    from .backends import loihi2
    workload.check(workload.combine(
        workload.estimate(qnet, len(x), timesteps, what="verify (Lava)", engine="lava", record_all=True),
        workload.estimate(qnet, len(x), timesteps, what="verify (spikeport)", record_all=True)), override=yes)
    rep = loihi2.verify(qnet, x, timesteps, progress=True)
    console.print(Text(str(rep), style="green" if rep.identical else "red"))
    for note in rep.notes:
        console.print(Text(note))
    runs = {row["layer"]: row["runs"] for row in loihi2.layer_report(qnet, timesteps)}
    for who, said in (("Lava", "Lava's own processes"),
                      ("spikeport", "spikeport's processes (Lava arithmetic re-implemented)")):
        names = [k for k, v in runs.items() if v == who]
        if names:
            console.print(Text(f"run by {said}: " + ", ".join(names)))
    if json_out:
        report.write_json({"identical": rep.identical, "compared": rep.compared, "mismatches": rep.mismatches, "runs": runs,
                           "predictions_equal": rep.predictions_equal, "notes": rep.notes,
                           "first_divergence": asdict(rep.first_divergence) if rep.first_divergence else None},
                          json_out)
    if not rep.identical:
        raise typer.Exit(1)


def _spinnaker_profile(qnet, profile: Optional[str]) -> str:
    """--profile for the spinnaker target: given, else the network's own if it is a SpiNNaker profile."""
    if profile:
        return profile
    return qnet.datapath.profile if qnet.datapath.profile in ("spinnaker1", "spinnaker2") else "spinnaker1"


def _spinnaker_export(qnet, qnet_path: Path, out: Path, profile: Optional[str], machine: str,
                      json_out: Optional[Path]) -> None:
    from rich.table import Table
    from . import report
    from .backends import spinnaker
    desc = spinnaker.describe(qnet, _spinnaker_profile(qnet, profile), machine)
    path = spinnaker.export(desc, out)
    rows = spinnaker.summary(desc)
    t = Table(title=f"{qnet_path} -> {path} (spinnaker: {desc.profile.name}, machine {desc.machine.spec}, "
                    f"{desc.machine.n_chips} chips)")
    for col in ("layer", "neurons", "cores", "chips", "keys", "payload", "entries", "max packets/step"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["layer"], str(r["neurons"]), str(r["cores"]), str(len(r["chips"])), str(r["keys"]),
                  {None: "-", True: "32-bit", False: "none"}[r["payload"]], str(r["entries_uncompressed"]),
                  str(r["max_packets_per_step"]))
    console.print(t)
    st = desc.routing.stats
    console.print(Text(f"routing: {st['entries_uncompressed']} entries ({st['defaultable']} defaultable) -> "
                       f"{st['entries']} after compression, at most {st['max_entries_per_chip']} per chip "
                       f"(limit {st['limit']}); every key checked ({desc.check['keys']} keys, PACMAN compare_tables "
                       f"on {desc.check.get('pacman_compare_tables')} tables)"))
    if json_out:
        report.write_json({"qnet": str(qnet_path), "target": "spinnaker", "out": str(path), "layers": rows,
                           "routing": st}, json_out)


def _spinnaker_run(qnet, qnet_path, x, y, timesteps, profile, machine, trace, json_out) -> None:
    from rich.table import Table
    from . import report
    from .backends import spinnaker
    desc = spinnaker.describe(qnet, _spinnaker_profile(qnet, profile), machine)
    rr = spinnaker.replay(desc, x, timesteps, trace_path=trace)
    traffic = rr.traffic.to_json(desc, 1e-3)
    acc = float((rr.result.predictions == y).mean()) if y is not None else None
    t = Table(title=f"{qnet_path}: SpiNNaker packet replay ({desc.profile.name}, machine {desc.machine.spec}, "
                    f"T={timesteps}, {traffic['samples']} samples)")
    t.add_column("quantity")
    t.add_column("value")
    cap = lambda v: "not modelled" if v is None else f"{v:,.0f}"  # noqa: E731
    rows = [("accuracy", "-" if acc is None else f"{100 * acc:.2f}%"),
            ("packets per step (mean / max)", f"{traffic['packets_per_step']:.1f} / {traffic['max_packets_per_step']}"),
            ("busiest link per step (max / capacity at 1 ms)",
             f"{traffic['max_link_packets_per_step']} ({traffic['busiest_link']}) / {cap(traffic['link_capacity_per_step'])}"),
            ("busiest router per step (max / capacity at 1 ms)",
             f"{traffic['max_router_packets_per_step']} ({traffic['busiest_router']}) / {cap(traffic['router_capacity_per_step'])}"),
            ("payload bits", f"{traffic['payload_bits']:,}"), ("dropped packets", str(traffic["dropped"])),
            ("routing energy per sample", "-" if traffic["routing_energy_j_per_sample"] is None
             else f"{traffic['routing_energy_j_per_sample'] * 1e6:.3f} uJ")]
    steps = max(traffic["samples"] * traffic["steps"], 1)
    rows.append(("packets per step by layer", ", ".join(f"{k} {v / steps:.1f}" for k, v in traffic["per_layer_packets"].items())))
    if trace is not None:
        rows.append(("EIEIO trace", f"{trace} ({rr.trace_messages} messages)"))
    for r in rows:
        t.add_row(*r)
    console.print(t)
    if json_out:
        report.write_json({"target": "spinnaker", "accuracy": acc, "timesteps": timesteps, "traffic": traffic}, json_out)


@command()
def profiles():
    """List the built-in hardware profiles."""
    from . import hw_profiles
    for name in hw_profiles.list_profiles():
        p = hw_profiles.load_profile(name)
        console.print(Text.assemble((name, "bold"), f": {getattr(p, 'description', '')}"))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
