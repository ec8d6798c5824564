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
                      ("backends.loihi2", "LavaExportError"), ("backends.spinnaker", "SpinnakerError")):
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


def _target(target: str, allowed: tuple[str, ...]) -> str:
    if target not in allowed:
        _fail(f"--target {target!r}: must be one of {', '.join(allowed)}")
    return target


@app.command()
def export(qnet_path: Path = typer.Argument(..., metavar="QNET.h5"),
           target: str = typer.Option("lava", help="lava (a folder with arrays + loader), netx (an HDF5 file) or "
                                                   "spinnaker (a folder: description.json + tables.bin)."),
           out: Path = typer.Option(..., "--out", help="Output folder (lava, spinnaker) or NET.net.h5 (netx)."),
           timesteps: int = typer.Option(64, min=1, help="T the network will run for (gates each layer's window)."),
           json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-layer export report here."),
           profile: Optional[str] = typer.Option(None, help="spinnaker: spinnaker1 or spinnaker2 (default: the "
                                                            "network's if it is a SpiNNaker one, else spinnaker1)."),
           machine: str = typer.Option("48-chip", help="spinnaker: 48-chip (one SpiNN-5 board) or WxH chips (a torus).")):
    """Export a quantised IR to Lava (Loihi 2), lava-dl netx HDF5 or SpiNNaker; report each layer's mapping."""
    from rich.table import Table
    from . import hw_profiles, ir, report
    from .backends import loihi2
    _target(target, ("lava", "netx", "spinnaker"))
    qnet = _run(ir.load, qnet_path)
    if not qnet.quantized:
        _fail(f"{qnet_path}: not quantised; run `spikeport compile {qnet_path} --profile loihi2 --out QNET.h5` first")
    if target == "spinnaker":
        from .backends import spinnaker
        desc = _run(spinnaker.describe, qnet, _spinnaker_profile(qnet, profile), machine)
        path = _run(spinnaker.export, desc, out)
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
        console.print(f"routing: {st['entries_uncompressed']} entries ({st['defaultable']} defaultable) -> "
                      f"{st['entries']} after compression, at most {st['max_entries_per_chip']} per chip "
                      f"(limit {st['limit']}); every key checked ({desc.check['keys']} keys, PACMAN compare_tables "
                      f"on {desc.check.get('pacman_compare_tables')} tables)")
        if json_out:
            report.write_json({"qnet": str(qnet_path), "target": target, "out": str(path), "layers": rows,
                               "routing": st}, json_out)
        return
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
        target: str = typer.Option("lava", help="lava: Lava's bit-accurate CPU simulation (Loihi2SimCfg fixed_pt); "
                                                "spinnaker: packet-level replay through the routing tables."),
        data: Path = typer.Option(..., "--data"),
        timesteps: int = typer.Option(..., min=1),
        json_out: Optional[Path] = typer.Option(None, "--json"),
        profile: Optional[str] = typer.Option(None, help="spinnaker: spinnaker1 or spinnaker2."),
        machine: str = typer.Option("48-chip", help="spinnaker: 48-chip or WxH chips."),
        trace: Optional[Path] = typer.Option(None, "--trace", help="spinnaker: write the packets as EIEIO data messages.")):
    """Run a quantised IR in Lava, or replay it packet by packet on SpiNNaker, and report accuracy."""
    from . import datasets, ir, report
    from .backends import loihi2
    from .report.tables import simulate_table
    _target(target, ("lava", "spinnaker"))
    qnet = _run(ir.load, qnet_path)
    x, y = _run(datasets.load_npz, data)
    if target == "spinnaker":
        _spinnaker_run(qnet, qnet_path, x, y, timesteps, profile, machine, trace, json_out)
        return
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
           json_out: Optional[Path] = typer.Option(None, "--json"),
           profile: Optional[str] = typer.Option(None, help="spinnaker: spinnaker1 or spinnaker2."),
           machine: str = typer.Option("48-chip", help="spinnaker: 48-chip or WxH chips.")):
    """Run spikeport's simulator and Lava (or the SpiNNaker packet replay) on the same inputs; compare
    every spike (and membrane value / delivered packet).

    Exit status 0 only when identical; otherwise the first divergence is printed."""
    from dataclasses import asdict
    from . import datasets, ir, report
    from .backends import loihi2
    _target(target, ("lava", "spinnaker"))
    qnet = _run(ir.load, qnet_path)
    x, _ = _run(datasets.load_npz, data)
    if target == "spinnaker":
        from .backends import spinnaker
        desc = _run(spinnaker.describe, qnet, _spinnaker_profile(qnet, profile), machine)
        rep = _run(spinnaker.verify, desc, x, timesteps)
        console.print(("[green]" if rep.identical else "[red]") + str(rep) + "[/]", highlight=False)
        if json_out:
            report.write_json({"identical": rep.identical, "compared": rep.compared,
                               "outputs_equal": rep.outputs_equal, "predictions_equal": rep.predictions_equal,
                               "first_divergence": asdict(rep.divergence) if rep.divergence else None}, json_out)
        if not rep.identical:
            raise typer.Exit(1)
        return
    rep = _run(loihi2.verify, qnet, x, timesteps)
    console.print(("[green]" if rep.identical else "[red]") + str(rep) + "[/]", highlight=False)
    if json_out:
        report.write_json({"identical": rep.identical, "compared": rep.compared, "mismatches": rep.mismatches,
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


def _spinnaker_run(qnet, qnet_path, x, y, timesteps, profile, machine, trace, json_out) -> None:
    from rich.table import Table
    from . import report
    from .backends import spinnaker
    desc = _run(spinnaker.describe, qnet, _spinnaker_profile(qnet, profile), machine)
    rr = _run(spinnaker.replay, desc, x, timesteps, trace_path=trace)
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
