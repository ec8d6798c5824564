"""`spikeport demo --model vit`: the whole pipeline on the shipped digits ViT.

digits ViT (timm layout) -> ONNX file -> frontend -> ECMT conversion -> IR file -> quantise to a
profile (MT neurons, token projections, fixed-point operators) -> float and bit-accurate
simulation at several T -> per-layer and per-operator fidelity -> energy and resources (when they
accept operator networks; otherwise one printed line says why they were skipped) -> report.json.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from . import compiler, datasets, frontend, report
from .demo import convert_and_quantize
from .errors import SpikeportError
from .models.digits_vit import pretrained_digits_vit
from .report.tables import accuracy_table, layer_fidelity_table
from .simulator import simulate

CALIBRATION_SAMPLES = 500
DEFAULT_TIMESTEPS = [8, 16]


def run_vit_demo(out: str | Path, timesteps: list[int], *, profile: str = "loihi2", device: str | None = None,
                 retrain: bool = False, console: Console | None = None) -> dict:
    """Run the ViT demo; ``out`` gets model.onnx, net.h5, qnet.h5, report.json and a PNG plot."""
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = datasets.load_digits_split()
    console.print(f"digits: {len(x_train)} training, {len(x_test)} test samples of shape {x_train.shape[1:]}")
    model = pretrained_digits_vit("vit", x_train if retrain else None, y_train if retrain else None, retrain=retrain)
    onnx_path, ann, acc_ann, net, prof, qnet, table = convert_and_quantize(
        model, (x_train, x_test, y_test), out, "ecmt", CALIBRATION_SAMPLES, profile, console, "ANN (digits ViT)")
    console.print(compiler.render_operator_table(table))

    acts = ann.record_activations(x_test, list(dict.fromkeys(p.source for p in net.populations() if p.source)))
    fid = report.fidelity(net, qnet, x_test, y_test, timesteps, simulate=simulate, ann_accuracy=acc_ann,
                          ann_acts=acts, device=device, progress=True).to_json()
    console.print(accuracy_table(fid, title=f"digits ViT, ECMT conversion, {prof.name} fixed point"))
    console.print(layer_fidelity_table(fid["points"][-1]))

    result = {
        "model": "digits_vit", "method": "ecmt", "profile": prof.name,
        "files": {"onnx": str(onnx_path), "net": str(out / "net.h5"), "qnet": str(out / "qnet.h5")},
        "ann_accuracy": acc_ann, "fidelity": fid, "quantization": table.as_dict(), "ir": net.summary(),
        "skipped": {},
    }
    energy_t = max(timesteps)
    try:
        energy = report.energy_report(qnet, x_test, energy_t, prof, ann_macs=frontend.count_macs(ann), device=device)
        for t in energy.tables():
            console.print(t)
        energy.plot(out / "energy_per_layer.png")
        result["energy"] = energy.to_json()
    except SpikeportError as e:   # energy of operator networks lands separately (op counting)
        result["skipped"]["energy"] = str(e)
        console.print(f"energy: skipped for the ViT ({e})", highlight=False)
    try:
        resources = report.resources_report(qnet, prof)
        for t in resources.tables():
            console.print(t)
        result["resources"] = resources.to_json()
    except SpikeportError as e:
        result["skipped"]["resources"] = str(e)
        console.print(f"resources: skipped for the ViT ({e})", highlight=False)
    report.plot_accuracy_vs_timesteps(fid, out / "accuracy_vs_timesteps.png",
                                      title=f"digits ViT: ANN vs float vs {prof.name} fixed-point SNN (ECMT)")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    report.write_json(result, out / "report.json")
    console.print(f"wrote {out / 'report.json'}, accuracy_vs_timesteps.png and the IR files to {out} in "
                  f"{result['seconds']} s")
    return result


__all__ = ["run_vit_demo", "DEFAULT_TIMESTEPS"]
