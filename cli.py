"""The `spikeport` command. It only composes public functions of the packages below it."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Convert ANNs to SNNs, compile them for neuromorphic chips, simulate bit-accurately, report.")
console = Console()


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _timesteps(text: str) -> list[int]:
    try:
        ts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        _fail(f"--timesteps {text!r}: expected comma-separated positive integers, e.g. 8,16,32")
    if not ts or min(ts) < 1:
        _fail(f"--timesteps {text!r}: every value must be >= 1")
    return ts


def _options(items: list[str]) -> dict:
    """Parse repeated ``--opt KEY=VALUE``; values become int, float, bool or str."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--opt {item!r}: expected KEY=VALUE")
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


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, reported without a traceback."""
    from .ir import IRError
    errors: list[type[BaseException]] = [IRError, FileNotFoundError]
    for mod, name in (("frontend", "FrontendError"), ("frontend", "UnsupportedOpError"),
                      ("hw_profiles", "ProfileError"), ("compiler", "QuantizationError"), ("compiler", "ResourceError"),
                      ("convert", "ConversionError"), ("datasets", "DataError"),
                      ("backends.loihi2", "LavaExportError")):
        try:
            module = __import__(f"spikeport.{mod}", fromlist=[name])
            if hasattr(module, name):
                errors.append(getattr(module, name))
        except ImportError:
            pass
    return tuple(errors)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _known_errors() as e:
        _fail(str(e))


# --------------------------------------------------------------------------------------------------
@app.command()
def demo(out: Path = typer.Option(Path("spikeport-demo"), "--out", help="Folder for report.json, IR files and plots."),
         timesteps: str = typer.Option("8,16,32,64", help="Comma-separated T values."),
         profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
         device: Optional[str] = typer.Option(None, help="torch device, e.g. cuda; default CPU."),
         retrain: bool = typer.Option(False, help="Train the digits CNN instead of loading shipped weights.")):
    """Digits CNN -> IF SNN -> loihi2 fixed point: accuracy vs T, per-layer fidelity, energy, cores."""
    from .demo import run_demo
    _run(run_demo, out, _timesteps(timesteps), profile=profile, device=device, retrain=retrain, console=console)


@app.command()
def convert(model: Path = typer.Argument(..., help="ONNX file or torch.export program (.pt2)."),
            calib: Path = typer.Option(..., "--calib", help="DATA.npz with x (float32) and optional y."),
            method: str = typer.Option("if", help="Conversion method."),
            out: Path = typer.Option(..., "--out", help="Output IR file (NET.h5)."),
            timesteps: Optional[int] = typer.Option(None, help="Target T (methods that tune for T use it; "
                                                              "with labels, the float SNN is evaluated at T)."),
            percentile: float = typer.Option(99.9, help="IF: activation percentile for thresholds (100 = max)."),
            reset: str = typer.Option("subtract", help="IF: reset rule, subtract or zero."),
            v_init: str = typer.Option("half", help="IF: initial membrane, half (theta/2) or zero."),
            maxpool: str = typer.Option("error", help="MaxPool handling: error, or avg (replace by AvgPool)."),
            opt: list[str] = typer.Option([], "--opt", help="Method option KEY=VALUE (repeatable), e.g. "
                                          "--opt search=both (aif), --opt setting=ibt (negspike)."),
            json_out: Optional[Path] = typer.Option(None, "--json", help="Write a JSON summary here.")):
    """Convert a trained ANN into a float SNN in spikeport's IR."""
    from . import convert as conv
    from . import datasets, frontend, ir, report
    opts = dict(percentile=percentile, reset=reset, v_init=v_init) if method == "if" else {}
    opts.update(_options(opt))
    x, y = _run(datasets.load_npz, calib)
    ann = _run(frontend.load_model, model)
    net = _run(conv.convert, ann, x, method=method, timesteps=timesteps, maxpool=maxpool, **opts)
    _run(ir.save, net, out)
    summary = {"model": str(model), "method": method, "out": str(out), "layers": net.summary()}
    console.print(f"converted [bold]{model}[/] with method [bold]{method}[/] -> {out} "
                  f"({len(net.populations())} populations, {len(net.projections())} projections)")
    if timesteps and y is not None:
        from .simulator import simulate as sim
        res = sim(net, x, timesteps, progress=True)
        summary["calib_accuracy_snn"] = res.accuracy(y)
        summary["calib_accuracy_ann"] = ann.evaluate(x, y)["accuracy"]
        console.print(f"on the calibration data: ANN {100 * summary['calib_accuracy_ann']:.2f}%, "
                      f"float SNN at T={timesteps} {100 * summary['calib_accuracy_snn']:.2f}%")
    if json_out:
        report.write_json(summary, json_out)


@app.command(name="compile")
def compile_(net_path: Path = typer.Argument(..., metavar="NET.h5"),
             profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
             out: Path = typer.Option(..., "--out", help="Quantised IR file (QNET.h5)."),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Write the quantisation table as JSON.")):
    """Quantise a float IR to a hardware profile's fixed-point formats; print the per-layer table."""
    from . import compiler, hw_profiles, ir, report
    net = _run(ir.load, net_path)
    prof = _run(hw_profiles.load_profile, profile)
    qnet, table = _run(compiler.quantize, net, prof)
    _run(ir.save, qnet, out)
    console.print(compiler.render_quant_table(table))
    console.print(f"quantised for [bold]{prof.name}[/] -> {out}")
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


@app.command()
def simulate(net_path: Path = typer.Argument(..., metavar="NET.h5"),
             data: Path = typer.Option(..., "--data", help="DATA.npz with x and optional y."),
             timesteps: int = typer.Option(..., min=1, help="Timesteps T."),
             json_out: Optional[Path] = typer.Option(None, "--json"),
             save_outputs: Optional[Path] = typer.Option(None, "--save-outputs", help="NPZ of decoded outputs."),
             batch_size: int = typer.Option(256, min=1),
             device: Optional[str] = typer.Option(None)):
    """Float simulation of a float IR, bit-accurate integer simulation of a quantised IR."""
    from . import datasets, ir, report
    from .report.tables import simulate_table
    from .simulator import simulate as sim
    net = _run(ir.load, net_path)
    x, y = _run(datasets.load_npz, data)
    res = _run(sim, net, x, timesteps, batch_size=batch_size, device=device, progress=True)
    summary = _sim_summary(net, res, y, timesteps)
    console.print(simulate_table(summary))
    if json_out:
        report.write_json(summary, json_out)
    if save_outputs:
        arrays = {"outputs": res.outputs, "predictions": res.predictions}
        if getattr(res, "output_state", None) is not None:
            arrays["output_state"] = res.output_state
        report.write_npz(save_outputs, **arrays)


@app.command()
def fidelity(model: Path = typer.Argument(..., help="The ANN (ONNX or .pt2)."),
             net_path: Path = typer.Argument(..., metavar="NET.h5"),
             qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
             data: Path = typer.Option(..., "--data"),
             timesteps: str = typer.Option("8,16,32,64"),
             json_out: Optional[Path] = typer.Option(None, "--json"),
             plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of accuracy vs T and per-layer divergence."),
             batch_size: int = typer.Option(256, min=1),
             device: Optional[str] = typer.Option(None)):
    """ANN vs float SNN vs fixed-point SNN per T, and per layer where float and fixed diverge and why."""
    from . import datasets, frontend, ir, report
    from .report.tables import accuracy_table, layer_fidelity_table
    from .simulator import simulate as sim
    ts = _timesteps(timesteps)
    net, qnet = _run(ir.load, net_path), _run(ir.load, qnet_path)
    x, y = _run(datasets.load_npz, data)
    ann = _run(frontend.load_model, model)
    acc_ann = ann.evaluate(x, y)["accuracy"] if y is not None else None
    acts = ann.record_activations(x, [p.source for p in net.populations() if p.source])
    rep = _run(report.fidelity, net, qnet, x, y, ts, simulate=sim, ann_accuracy=acc_ann,
               ann_acts=acts, batch_size=batch_size, device=device, progress=True).to_json()
    console.print(accuracy_table(rep))
    console.print(layer_fidelity_table(rep["points"][-1]))
    if json_out:
        report.write_json(rep, json_out)
    if plot:
        report.plot_accuracy_vs_timesteps(rep, plot)


@app.command()
def energy(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           data: Path = typer.Option(..., "--data", help="DATA.npz with x (and optional y)."),
           timesteps: int = typer.Option(..., min=1, help="Timesteps T."),
           profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path) for the chip estimate."),
           model: Optional[Path] = typer.Option(None, "--model", help="The ANN (ONNX or .pt2) for the MAC baseline; "
                                                                       "default: MACs of the IR's projections."),
           convention: str = typer.Option("fp32", help="Horowitz figures: fp32 (E_AC 0.9, E_MAC 4.6 pJ), int8 or int32."),
           graded_as: str = typer.Option("ac", help="Graded events: ac (one event, spikeport) or mac (NeuroBench)."),
           timestep_ms: float = typer.Option(1.0, "--timestep-ms", help="Duration of one step for average power."),
           json_out: Optional[Path] = typer.Option(None, "--json"),
           plot: Optional[Path] = typer.Option(None, "--plot", help="PNG bar chart of energy per layer."),
           batch_size: int = typer.Option(256, min=1),
           device: Optional[str] = typer.Option(None)):
    """Operation counts and energy per layer: compute-only, with memory, the chip's estimate, ANN ratio."""
    from . import datasets, ir, report
    from .compiler.partition import ResourceError
    from .report.energy import energy_report
    from .simulator.opcount import ann_equivalent_macs
    net = _run(ir.load, qnet_path)
    x, _ = _run(datasets.load_npz, data)
    if model is not None:
        from . import frontend
        from .frontend.macs import count_macs
        ann_macs = count_macs(_run(frontend.load_model, model))
    else:
        ann_macs = ann_equivalent_macs(net)
    try:
        rep = _run(energy_report, net, x, timesteps, profile, ann_macs=ann_macs, convention=convention,
                   graded_as=graded_as, timestep_s=timestep_ms * 1e-3, batch_size=batch_size, device=device)
    except (ValueError, ResourceError) as e:
        _fail(str(e))
    for table in rep.tables():
        console.print(table)
    if json_out:
        report.write_json(rep.to_json(), json_out)
    if plot:
        rep.plot(plot)


@app.command()
def resources(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
              profile: str = typer.Option("loihi2", help="Hardware profile (name or TOML path)."),
              json_out: Optional[Path] = typer.Option(None, "--json")):
    """Partition every layer onto cores and chips under the profile's limits; binding limit per layer."""
    from . import ir, report
    from .compiler.partition import ResourceError
    from .report.resources import resources_report
    net = _run(ir.load, qnet_path)
    try:
        rep = _run(resources_report, net, profile)
    except ResourceError as e:
        _fail(str(e))
    console.print(rep.table())
    if json_out:
        report.write_json(rep.to_json(), json_out)


@app.command()
def finetune(model: Path = typer.Argument(..., help="The trained ANN (ONNX or .pt2)."),
             method: str = typer.Option("qcfs", help="Method whose activation is swapped in (qcfs, ...)."),
             train: Path = typer.Option(..., "--train", help="DATA.npz with x (float32) and labels y."),
             epochs: int = typer.Option(..., min=0, help="Fine-tuning epochs."),
             out: Path = typer.Option(..., "--out", help="Fine-tuned model, a torch.export program (.pt2)."),
             levels: Optional[int] = typer.Option(None, min=1, help="Quantisation levels L (default per method)."),
             lr: float = typer.Option(1e-3, help="Adam learning rate."),
             batch_size: int = typer.Option(64, min=1),
             seed: int = typer.Option(0),
             device: Optional[str] = typer.Option(None)):
    """Swap the ANN's ReLUs for a method's quantised activation, fine-tune, and write MODEL_Q.pt2 to convert."""
    from . import datasets
    from .convert.finetune import finetune_file
    x, y = _run(datasets.load_npz, train)
    if y is None:
        _fail(f"{train}: fine-tuning needs labels (key 'y')")
    try:
        s = _run(finetune_file, model, method, x, y, epochs, out, levels=levels, lr=lr, batch_size=batch_size,
                 seed=seed, device=device)
    except ValueError as e:
        _fail(str(e))
    console.print(f"fine-tuned [bold]{model}[/] for [bold]{method}[/] (L={s.levels}, {s.epochs} epochs): training "
                  f"accuracy {100 * s.accuracy_before:.2f}% (ReLU) -> {100 * s.accuracy_after:.2f}% (quantised) -> {s.out}")
    console.print(f"next: spikeport convert {s.out} --calib DATA.npz --method {method}")


@app.command("mbe-fit")
def mbe_fit(function: str = typer.Option(..., "--function", help="gelu, tanh, identity, exp2, reciprocal or invsqrt."),
            bases: Optional[int] = typer.Option(None, "--bases", min=1, help="Bases N (default: GELU/tanh 4, others 8)."),
            timesteps: int = typer.Option(16, "--timesteps", min=1, help="Steps T the neuron runs."),
            seed: int = typer.Option(0, "--seed", help="Seed of samples, initialisation and batches."),
            out: Path = typer.Option(..., "--out", help="Fit file to write (JSON, docs/mbe.md)."),
            samples: int = typer.Option(10_000, min=1, help="Uniform samples on the domain."),
            epochs: int = typer.Option(200, min=1, help="Adam epochs (lr 0.01, decay 0.99 per epoch)."),
            batch_size: int = typer.Option(2500, min=1, help="Samples per Adam step (smaller: more steps, slower)."),
            no_decay: bool = typer.Option(False, "--no-decay", help="Ablation: constant kernels (Fig. 6c).")):
    """Learn MBE basis parameters for a function (paper 001) and write a fit file; same seed, same file."""
    from .convert.mbe_fit import fit_mbe
    from .convert.mbe_params import save_fit
    try:
        fit = _run(fit_mbe, function, bases, timesteps, seed=seed, samples=samples, epochs=epochs,
                   batch_size=batch_size, decay=not no_decay)
    except ValueError as e:
        _fail(str(e))
    _run(save_fit, fit, out)
    console.print(f"MBE fit of [bold]{function}[/] (N={fit.bases}, T={fit.timesteps}, decay={fit.decay}) on "
                  f"{list(fit.domain)}: MSE {fit.mse:.3e}, max |error| {fit.max_abs_err:.3e} -> {out}")


def _target(target: str, allowed: tuple[str, ...]) -> str:
    if target not in allowed:
        _fail(f"--target {target!r}: must be one of {', '.join(allowed)}")
    return target


@app.command()
def export(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           target: str = typer.Option("lava", help="lava (a folder with arrays + loader) or netx (an HDF5 file)."),
           out: Path = typer.Option(..., "--out", help="Output folder (lava) or NET.net.h5 (netx)."),
           timesteps: int = typer.Option(64, min=1, help="T the network will run for (gates each layer's window)."),
           json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-layer export report here.")):
    """Export a quantised IR to Lava (Loihi 2) or to lava-dl netx HDF5; report each layer's mapping."""
    from rich.table import Table
    from . import hw_profiles, ir, report
    from .backends import loihi2
    _target(target, ("lava", "netx"))
    qnet = _run(ir.load, qnet_path)
    if not qnet.quantized:
        _fail(f"{qnet_path}: not quantised; run `spikeport compile {qnet_path} --profile loihi2 --out QNET.h5` first")
    rows = _run(loihi2.layer_report, qnet, timesteps)
    cores = {}
    if qnet.datapath.profile == "loihi2":
        res = _run(report.resources_report, qnet, hw_profiles.load_profile("loihi2")).to_json()
        cores = {layer["layer"]: layer.get("cores") for layer in res["layers"]}
    if target == "lava":
        path = _run(loihi2.export, qnet, out, timesteps)
    else:
        from .backends import netx
        try:
            path = netx.export_netx(qnet, out, timesteps)
        except netx.NetxExportError as e:
            _fail(str(e))
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


@app.command()
def run(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
        target: str = typer.Option("lava", help="lava: Lava's bit-accurate CPU simulation (Loihi2SimCfg fixed_pt)."),
        data: Path = typer.Option(..., "--data"),
        timesteps: int = typer.Option(..., min=1),
        json_out: Optional[Path] = typer.Option(None, "--json")):
    """Run a quantised IR in Lava and report what `spikeport simulate` reports."""
    from . import datasets, ir, report
    from .backends import loihi2
    from .report.tables import simulate_table
    _target(target, ("lava",))
    qnet = _run(ir.load, qnet_path)
    x, y = _run(datasets.load_npz, data)
    res = _run(loihi2.run_lava, qnet, x, timesteps)
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


@app.command()
def verify(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           target: str = typer.Option("lava"),
           data: Path = typer.Option(..., "--data"),
           timesteps: int = typer.Option(..., min=1),
           json_out: Optional[Path] = typer.Option(None, "--json")):
    """Run spikeport's simulator and Lava on the same inputs; compare every spike and membrane value.

    Exit status 0 only when identical; otherwise the first divergence is printed."""
    from dataclasses import asdict
    from . import datasets, ir, report
    from .backends import loihi2
    _target(target, ("lava",))
    qnet = _run(ir.load, qnet_path)
    x, _ = _run(datasets.load_npz, data)
    rep = _run(loihi2.verify, qnet, x, timesteps)
    console.print(("[green]" if rep.identical else "[red]") + str(rep) + "[/]", highlight=False)
    if json_out:
        report.write_json({"identical": rep.identical, "compared": rep.compared, "mismatches": rep.mismatches,
                           "predictions_equal": rep.predictions_equal, "notes": rep.notes,
                           "first_divergence": asdict(rep.first_divergence) if rep.first_divergence else None},
                          json_out)
    if not rep.identical:
        raise typer.Exit(1)


@app.command()
def profiles():
    """List the built-in hardware profiles."""
    from . import hw_profiles
    for name in hw_profiles.list_profiles():
        p = hw_profiles.load_profile(name)
        console.print(f"[bold]{name}[/]: {getattr(p, 'description', '')}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
