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
         timesteps: str = typer.Option("8,16,32,64", help="Comma-separated T values."),
         profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
         device: Optional[str] = typer.Option(None, help="torch device, e.g. cuda; default CPU."),
         retrain: bool = typer.Option(False, help="Train the digits CNN instead of loading shipped weights.")):
    """Digits CNN -> IF SNN -> loihi2 fixed point: accuracy vs T, per-layer fidelity, energy, cores."""
    from . import hw_profiles
    from .demo import run_demo
    ts = check.timesteps_list(timesteps)
    dev = check.device(device)
    hw_profiles.load_profile(profile)
    check.output_dir(out, "--out")
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
            reset: str = typer.Option("subtract", help="IF: reset rule, subtract or zero."),
            v_init: str = typer.Option("half", help="IF: initial membrane, half (theta/2) or zero."),
            maxpool: str = typer.Option("error", help="MaxPool handling: error, or avg (replace by AvgPool)."),
            opt: list[str] = typer.Option([], "--opt", help="Method option KEY=VALUE (repeatable), e.g. "
                                          "--opt search=both (aif), --opt setting=ibt (negspike)."),
            json_out: Optional[Path] = typer.Option(None, "--json", help="Write a JSON summary here."),
            yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Convert a trained ANN into a float SNN in spikeport's IR."""
    from . import convert as conv
    from . import datasets, frontend, ir, report
    check.choice(method, sorted(conv.METHODS), "--method")
    check.choice(maxpool, conv.registry.MAXPOOL_CHOICES, "--maxpool")
    opts = dict(percentile=percentile, reset=reset, v_init=v_init) if method == "if" else {}
    opts.update(check.key_values(opt))
    check.output_file(out, "--out")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"MODEL": model, "--calib": calib}, {"--out": out, "--json": json_out})
    x, y = datasets.load_npz(calib)
    ann = frontend.load_model(model)
    check.data_for_model(ann, x, y, calib)
    with _working(f"converting with method {method}"):
        net = conv.convert(ann, x, method=method, timesteps=timesteps, maxpool=maxpool, **opts)
    if timesteps and y is not None:
        _workload(net, len(x), timesteps, yes, "float SNN accuracy on the calibration data")
    ir.save(net, out)
    summary = {"model": str(model), "method": method, "out": str(out), "layers": net.summary()}
    console.print(Text.assemble("converted ", (str(model), "bold"), " with method ", (method, "bold"),
                                f" -> {out} ({len(net.populations())} populations, {len(net.projections())} projections)"))
    if timesteps and y is not None:
        from .simulator import simulate as sim
        res = sim(net, x, timesteps, progress=True)
        summary["calib_accuracy_snn"] = res.accuracy(y)
        summary["calib_accuracy_ann"] = ann.evaluate(x, y)["accuracy"]
        console.print(f"on the calibration data: ANN {100 * summary['calib_accuracy_ann']:.2f}%, "
                      f"float SNN at T={timesteps} {100 * summary['calib_accuracy_snn']:.2f}%")
    if json_out:
        report.write_json(summary, json_out)


@command(name="compile")
def compile_(net_path: Path = typer.Argument(..., metavar="NET.h5"),
             profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
             out: Path = typer.Option(..., "--out", help="Quantised IR file (QNET.h5)."),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Write the quantisation table as JSON.")):
    """Quantise a float IR to a hardware profile's fixed-point formats; print the per-layer table."""
    from . import hw_profiles, ir
    check.output_file(out, "--out")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"NET.h5": net_path}, {"--out": out, "--json": json_out})
    net = _load_net(net_path, quantized=False)
    prof = hw_profiles.load_profile(profile)
    from . import compiler, report  # torch: imported once the inputs are known to be good
    qnet, table = compiler.quantize(net, prof)
    ir.save(qnet, out)
    console.print(compiler.render_quant_table(table))
    console.print(Text.assemble("quantised for ", (prof.name, "bold"), f" -> {out}"))
    if json_out:
        report.write_json({"profile": prof.name, "net": str(net_path), "out": str(out), **table.as_dict()}, json_out)


def _sim_summary(net, res, y, T: int) -> dict:
    layers = {}
    for pop in net.populations():
        st = dict(res.layers.get(pop.name, {}))
        st["neurons"] = pop.size
        layers[pop.name] = st
    return {"accuracy": res.accuracy(y) if y is not None else None, "timesteps": T, "samples": int(len(res.predictions)),
            "steps_run": res.steps_run, "quantized": net.quantized,
            "profile": net.datapath.profile if net.quantized else None, "layers": layers}


@command()
def simulate(net_path: Path = typer.Argument(..., metavar="NET.h5"),
             data: Path = typer.Option(..., "--data", help="DATA.npz with x and optional y."),
             timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER", help="Timesteps T."),
             json_out: Optional[Path] = typer.Option(None, "--json"),
             save_outputs: Optional[Path] = typer.Option(None, "--save-outputs", help="NPZ of decoded outputs."),
             batch_size: int = typer.Option(256, parser=check.int_at_least(1), metavar="INTEGER"),
             device: Optional[str] = typer.Option(None),
             yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Float simulation of a float IR, bit-accurate integer simulation of a quantised IR."""
    from . import datasets
    dev = check.device(device)
    check.output_file(json_out, "--json")
    check.output_file(save_outputs, "--save-outputs")
    check.distinct_outputs({"NET.h5": net_path, "--data": data}, {"--json": json_out, "--save-outputs": save_outputs})
    net = _load_net(net_path)
    x, y = datasets.load_npz(data)
    check.data_for_net(net, x, y, data, net_path)
    _workload(net, len(x), timesteps, yes, "simulate")
    from . import report  # torch: imported once the inputs are known to be good
    from .report.tables import simulate_table
    from .simulator import simulate as sim
    res = sim(net, x, timesteps, batch_size=batch_size, device=dev, progress=True)
    summary = _sim_summary(net, res, y, timesteps)
    console.print(simulate_table(summary))
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
             yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """ANN vs float SNN vs fixed-point SNN per T, and per layer where float and fixed diverge and why."""
    from . import datasets, frontend, report
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
    with _working("ANN accuracy and activations"):
        acc_ann = ann.evaluate(x, y)["accuracy"] if y is not None else None
        acts = ann.record_activations(x, [p.source for p in net.populations() if p.source])
    rep = report.fidelity(net, qnet, x, y, ts, simulate=sim, ann_accuracy=acc_ann,
                          ann_acts=acts, batch_size=batch_size, device=dev, progress=True).to_json()
    console.print(accuracy_table(rep))
    console.print(layer_fidelity_table(rep["points"][-1]))
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
           convention: str = typer.Option("fp32", help="Horowitz figures: fp32 (E_AC 0.9, E_MAC 4.6 pJ), int8 or int32."),
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
    check.choice(convention, CONVENTIONS, "--convention")
    check.choice(graded_as, GRADED_AS, "--graded-as")
    check.positive_finite(timestep_ms, "--timestep-ms")
    dev = check.device(device)
    check.output_file(json_out, "--json")
    check.output_file(plot, "--plot")
    check.distinct_outputs({"QNET.h5": qnet_path, "--data": data, "--model": model},
                           {"--json": json_out, "--plot": plot})
    net = _load_net(qnet_path)
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
    with _working(f"counting operations on {len(x)} samples at T={timesteps}"):
        rep = energy_report(net, x, timesteps, prof, ann_macs=ann_macs, convention=convention,
                            graded_as=graded_as, timestep_s=timestep_ms * 1e-3, batch_size=batch_size, device=dev)
    for table in rep.tables():
        console.print(table)
    if json_out:
        report.write_json(rep.to_json(), json_out)
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
    console.print(rep.table())
    if json_out:
        report.write_json(rep.to_json(), json_out)


@command()
def finetune(model: Path = typer.Argument(..., help="The trained ANN (ONNX or .pt2)."),
             method: str = typer.Option("qcfs", help="Method whose activation is swapped in (qcfs, ...)."),
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
    check.choice(method, sorted(ACTIVATION_FACTORIES), "--method")
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
           target: str = typer.Option("lava", help="lava (a folder with arrays + loader) or netx (an HDF5 file)."),
           out: Path = typer.Option(..., "--out", help="Output folder (lava) or NET.net.h5 (netx)."),
           timesteps: int = typer.Option(64, parser=check.int_at_least(1), metavar="INTEGER",
                                         help="T the network will run for (gates each layer's window)."),
           json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-layer export report here.")):
    """Export a quantised IR to Lava (Loihi 2) or to lava-dl netx HDF5; report each layer's mapping."""
    from rich.table import Table
    from . import hw_profiles, report
    from .backends import loihi2
    check.choice(target, ("lava", "netx"), "--target")
    if target == "lava":
        check.output_dir(out, "--out")
        from .backends.loihi2.export import EXPORT_FILES
        if out.is_dir() and any(p.name not in EXPORT_FILES for p in out.iterdir()):
            raise check.OutputPathError(f"--out {out}: the folder holds other files than a Lava export "
                                        f"({', '.join(EXPORT_FILES[:3])}); give a new or empty folder")
    else:
        check.output_file(out, "--out")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"QNET.h5": qnet_path}, {"--out": out, "--json": json_out})
    qnet = _load_net(qnet_path, quantized=True)
    rows = loihi2.layer_report(qnet, timesteps)
    cores = {}
    if qnet.datapath.profile == "loihi2":
        res = report.resources_report(qnet, hw_profiles.load_profile("loihi2")).to_json()
        cores = {layer["layer"]: layer.get("cores") for layer in res["layers"]}
    if target == "lava":
        path = loihi2.export(qnet, out, timesteps)
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
        report.write_json({"qnet": str(qnet_path), "target": target, "out": str(path), "layers": rows}, json_out)


def _lava_inputs(qnet_path: Path, data: Path, target: str, json_out: Optional[Path]):
    """Shared checks of `run` and `verify`: target, output path, quantised IR, data."""
    from . import datasets
    check.choice(target, ("lava",), "--target")
    check.output_file(json_out, "--json")
    check.distinct_outputs({"QNET.h5": qnet_path, "--data": data}, {"--json": json_out})
    qnet = _load_net(qnet_path, quantized=True)
    x, y = datasets.load_npz(data)
    check.data_for_net(qnet, x, y, data, qnet_path)
    return qnet, x, y


@command()
def run(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
        target: str = typer.Option("lava", help="lava: Lava's bit-accurate CPU simulation (Loihi2SimCfg fixed_pt)."),
        data: Path = typer.Option(..., "--data"),
        timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER"),
        json_out: Optional[Path] = typer.Option(None, "--json"),
        yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Run a quantised IR in Lava and report what `spikeport simulate` reports."""
    from . import report
    from .backends import loihi2
    from .report.tables import simulate_table
    qnet, x, y = _lava_inputs(qnet_path, data, target, json_out)
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


@command()
def verify(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           target: str = typer.Option("lava"),
           data: Path = typer.Option(..., "--data"),
           timesteps: int = typer.Option(..., parser=check.int_at_least(1), metavar="INTEGER"),
           json_out: Optional[Path] = typer.Option(None, "--json"),
           yes: bool = typer.Option(False, "--yes", help=YES_HELP)):
    """Run spikeport's simulator and Lava on the same inputs; compare every spike and membrane value.

    Exit status 0 only when identical (1 when they differ); otherwise the first divergence is printed."""
    from dataclasses import asdict
    from . import report
    from .backends import loihi2
    from .simulator import workload
    qnet, x, _ = _lava_inputs(qnet_path, data, target, json_out)
    workload.check(workload.combine(
        workload.estimate(qnet, len(x), timesteps, what="verify (Lava)", engine="lava", record_all=True),
        workload.estimate(qnet, len(x), timesteps, what="verify (spikeport)", record_all=True)), override=yes)
    rep = loihi2.verify(qnet, x, timesteps, progress=True)
    console.print(Text(str(rep), style="green" if rep.identical else "red"))
    if json_out:
        report.write_json({"identical": rep.identical, "compared": rep.compared, "mismatches": rep.mismatches,
                           "predictions_equal": rep.predictions_equal, "notes": rep.notes,
                           "first_divergence": asdict(rep.first_divergence) if rep.first_divergence else None},
                          json_out)
    if not rep.identical:
        raise typer.Exit(1)


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
