"""`spikeport demo`: the whole pipeline on a built-in digits CNN, as a user would run it.

digits CNN (BatchNorm + residual add) -> ONNX file -> frontend -> IF conversion -> IR file ->
quantise to a profile -> float and bit-accurate simulation at several T -> report.json, tables, PNG.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from . import compiler, datasets, frontend, hw_profiles, ir, report
from . import convert as conv
from .models import digits
from .report.tables import accuracy_table, layer_fidelity_table
from .simulator import simulate

CALIBRATION_SAMPLES = 512


def convert_and_quantize(model, data, out: Path, method: str, calibration_samples: int, profile: str,
                         console: Console, label: str):
    """The stages every demo shares: ONNX file -> frontend -> ANN accuracy -> convert -> net.h5 ->
    quantise -> qnet.h5, printing as it goes. ``data`` is (x_train, x_test, y_test)."""
    x_train, x_test, y_test = data
    onnx_path = frontend.export_onnx(model, out / "model.onnx", x_train[:1])
    ann = frontend.load_model(onnx_path)
    acc_ann = ann.evaluate(x_test, y_test)["accuracy"]
    console.print(f"{label} loaded from {onnx_path}: test accuracy {100 * acc_ann:.2f}%")
    net = conv.convert(ann, x_train[:calibration_samples], method=method)
    ir.save(net, out / "net.h5")
    prof = hw_profiles.load_profile(profile)
    qnet, table = compiler.quantize(net, prof)
    ir.save(qnet, out / "qnet.h5")
    console.print(compiler.render_quant_table(table))
    return onnx_path, ann, acc_ann, net, prof, qnet, table


def run_demo(out: str | Path, timesteps: list[int], *, profile: str = "loihi2", device: str | None = None,
             retrain: bool = False, console: Console | None = None) -> dict:
    """Run the demo; ``out`` gets model.onnx, net.h5, qnet.h5, report.json and two PNG plots."""
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = datasets.load_digits_split()
    console.print(f"digits: {len(x_train)} training, {len(x_test)} test samples of shape {x_train.shape[1:]}")

    model = digits.pretrained_digits_resnet(x_train, y_train, retrain=retrain, progress=True)
    onnx_path, ann, acc_ann, net, prof, qnet, table = convert_and_quantize(
        model, (x_train, x_test, y_test), out, "if", CALIBRATION_SAMPLES, profile, console, "ANN")

    acts = ann.record_activations(x_test, [p.source for p in net.populations() if p.source])
    fid = report.fidelity(net, qnet, x_test, y_test, timesteps, simulate=simulate, ann_accuracy=acc_ann,
                          ann_acts=acts, device=device, progress=True).to_json()
    console.print(accuracy_table(fid, title=f"digits CNN, IF conversion, {prof.name} fixed point"))
    console.print(layer_fidelity_table(fid["points"][-1]))

    energy_t = 32 if 32 in timesteps else max(timesteps)
    energy = report.energy_report(qnet, x_test, energy_t, prof, ann_macs=frontend.count_macs(ann), device=device)
    for t in energy.tables():
        console.print(t)
    energy.plot(out / "energy_per_layer.png")
    resources = report.resources_report(qnet, prof)
    for t in resources.tables():
        console.print(t)

    result = {
        "model": "digits_resnet",
        "method": "if",
        "profile": prof.name,
        "files": {"onnx": str(onnx_path), "net": str(out / "net.h5"), "qnet": str(out / "qnet.h5")},
        "ann_accuracy": acc_ann,
        "fidelity": fid,
        "quantization": table.as_dict(),
        "ir": net.summary(),
        "energy": energy.to_json(),
        "resources": resources.to_json(),
    }
    report.plot_accuracy_vs_timesteps(fid, out / "accuracy_vs_timesteps.png",
                                      title=f"digits CNN: ANN vs float vs {prof.name} fixed-point SNN")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    report.write_json(result, out / "report.json")
    console.print(f"wrote {out / 'report.json'}, accuracy_vs_timesteps.png, energy_per_layer.png and the IR "
                  f"files to {out} in {result['seconds']} s")
    return result


__all__ = ["run_demo"]
