"""Bad input to every command, as a new user would give it: a clear message, exit code 2, no traceback,
and no new file in the output folder.

Each case names the substrings the message must hold: the file, option or layer, the value given,
and the rule or limit it breaks. The networks are the session's small digits CNN (conftest) plus a
5-class MLP for the mismatch cases; everything runs in-process through typer's CliRunner, and a few
cases through a real `python3 -m spikeport` subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from spikeport import compiler, frontend, hw_profiles, ir
from spikeport import convert as conv
from spikeport.cli import app
from spikeport.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER

runner = CliRunner()
SPIKEPORT_ROOT = Path(__file__).resolve().parents[1]


def _onnx_graph(path: Path, op: str, name: str) -> Path:
    """Input (N, 1, 8, 8) -> Flatten -> ``op`` (named ``name``) -> output (N, 64), opset 17."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flatten"), helper.make_node(op, ["f"], ["y"], name=name)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def d(tmp_path_factory, digits_onnx, digits):
    """A folder of inputs: models, IRs and good and bad data files."""
    d = tmp_path_factory.mktemp("bad_inputs")
    x_train, y_train, x_test, y_test = digits
    np.savez(d / "calib.npz", x=x_train[:64], y=y_train[:64])
    np.savez(d / "test.npz", x=x_test[:8], y=y_test[:8])
    np.savez(d / "nolabels.npz", x=x_test[:8])
    np.savez(d / "shape.npz", x=np.zeros((4, 1, 7, 7), np.float32))
    np.savez(d / "shape_y.npz", x=np.zeros((4, 1, 7, 7), np.float32), y=np.zeros(4, np.int64))
    np.savez(d / "intx.npz", x=np.zeros((4, 1, 8, 8), np.int32))
    bad = x_test[:4].copy()
    bad[1, 0, 2, 3] = np.nan
    np.savez(d / "nan.npz", x=bad)
    np.savez(d / "nokey.npz", inputs=x_test[:4])
    np.savez(d / "labels12.npz", x=x_test[:4], y=np.array([0, 3, 12, 1]))
    np.savez(d / "labelsneg.npz", x=x_test[:4], y=np.array([0, -1, 2, 1]))
    np.savez(d / "yfloat.npz", x=x_test[:4], y=np.zeros(4, np.float32))
    np.savez(d / "ylen.npz", x=x_test[:4], y=np.zeros(3, np.int64))
    np.savez(d / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    np.save(d / "single.npy", x_test[:4])
    (d / "text.npz").write_text("not an archive")
    (d / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    (d / "garbage.h5").write_text("not hdf5")
    (d / "bad.toml").write_text("[profile\nname = ")
    (d / "nosections.toml").write_text("assumptions = []\n")
    (d / "model.txt").write_text("weights")
    (d / "model.onnx").write_bytes(Path(digits_onnx).read_bytes())
    _onnx_graph(d / "hardmax.onnx", "Hardmax", "head/hardmax")
    _onnx_graph(d / "sigmoid.onnx", "Sigmoid", "head/sigmoid")
    ann = frontend.load_model(d / "model.onnx")
    net = conv.convert(ann, x_train[:64], method="if")
    ir.save(net, d / "net.h5")
    qnet, _ = compiler.quantize(net, hw_profiles.load_profile("loihi2"))
    ir.save(qnet, d / "qnet.h5")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    frontend.export_onnx(mlp, d / "mlp5.onnx", x_train[:2])
    mlp_net = conv.convert(frontend.load_model(d / "mlp5.onnx"), x_train[:64], method="if")
    ir.save(mlp_net, d / "mlp5_net.h5")
    ir.save(compiler.quantize(mlp_net, hw_profiles.load_profile("loihi2"))[0], d / "mlp5_qnet.h5")
    return d


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _setup_file(name: str):
    return lambda out: (out / name).write_text("keep me")


def _setup_folder_with(name: str):
    def make(out):
        (out / "lava").mkdir()
        (out / "lava" / name).write_text("the user's notes")
    return make


# (id, argv(d, out), substrings the message must hold (a tuple: one of them), optional setup(out))
BIG_T = "1000000000000"
NIR_FILE = Path(__file__).parent / "data" / "nir" / "norse_conv.nir"
CASES = [
    # ------------------------------------------------------------------ demo
    ("demo-timesteps-zero", lambda d, o: ["demo", "--out", o / "demo", "--timesteps", "8,0"], ["--timesteps", "8,0", ">= 1"]),
    ("demo-timesteps-word", lambda d, o: ["demo", "--out", o / "demo", "--timesteps", "8,x"], ["--timesteps", "8,x", "positive integers"]),
    ("demo-device", lambda d, o: ["demo", "--out", o / "demo", "--device", "foo"], ["--device", "foo", "cpu, cuda"]),
    ("demo-profile", lambda d, o: ["demo", "--out", o / "demo", "--profile", "nosuch"], ["nosuch", "loihi2", "built-in profiles"]),
    ("demo-model", lambda d, o: ["demo", "--out", o / "demo", "--model", "gpt"], ["--model", "gpt", "'cnn' or 'vit'"]),
    ("demo-out-is-file", lambda d, o: ["demo", "--out", o / "taken"], ["--out", "taken", "not a folder"], _setup_file("taken")),
    ("demo-out-parent", lambda d, o: ["demo", "--out", o / "missing" / "demo"], ["--out", "missing", "does not exist"]),
    # ------------------------------------------------------------------ convert
    ("convert-model-missing", lambda d, o: ["convert", d / "nothere.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5"], ["nothere.onnx", "no such file"]),
    ("convert-model-suffix", lambda d, o: ["convert", d / "model.txt", "--calib", d / "calib.npz", "--out", o / "n.h5"], ["model.txt", "'.txt'", ".onnx or .pt2"]),
    ("convert-model-garbage", lambda d, o: ["convert", d / "garbage.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5"], ["garbage.onnx", "not an ONNX model"]),
    ("convert-onnx-op-no-converter", lambda d, o: ["convert", d / "hardmax.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5"], ["hardmax.onnx", "'head/hardmax'", "Hardmax", "Supported ops"]),
    ("convert-onnx-op-unsupported", lambda d, o: ["convert", d / "sigmoid.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5"], ["sigmoid.onnx", "Sigmoid", "Supported ops"]),
    ("convert-calib-nokey", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "nokey.npz", "--out", o / "n.h5"], ["nokey.npz", "'x'", "inputs"]),
    ("convert-calib-shape", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "shape.npz", "--out", o / "n.h5"], ["shape.npz", "(1, 7, 7)", "(1, 8, 8)"]),
    ("convert-calib-dtype", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "intx.npz", "--out", o / "n.h5"], ["intx.npz", "int32", "floating"]),
    ("convert-calib-nan", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "nan.npz", "--out", o / "n.h5"], ["nan.npz", "'x'", "NaN"]),
    ("convert-calib-text", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "text.npz", "--out", o / "n.h5"], ["text.npz", "not a readable .npz"]),
    ("convert-calib-npy", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "single.npy", "--out", o / "n.h5"], ["single.npy", "single array"]),
    ("convert-calib-empty", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "empty.npz", "--out", o / "n.h5"], ["empty.npz", "(0, 1, 8, 8)", "N >= 1"]),
    ("convert-calib-labels", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "labels12.npz", "--out", o / "n.h5"], ["labels12.npz", "0..12", "10 classes", "0..9"]),
    ("convert-method", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--method", "nonsense", "--out", o / "n.h5"], ["--method", "'nonsense'", "aif", "qcfs"]),
    ("convert-opt-type", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--opt", "percentile=abc", "--out", o / "n.h5"], ["percentile", "'abc'", "number"]),
    ("convert-percentile", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--percentile", "150", "--out", o / "n.h5"], ["percentile", "150", "(0, 100]"]),
    ("convert-percentile-nan", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--percentile", "nan", "--out", o / "n.h5"], ["percentile", "nan", "(0, 100]"]),
    ("convert-reset", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--reset", "sometimes", "--out", o / "n.h5"], ["reset", "'sometimes'", "'subtract' or 'zero'"]),
    ("convert-maxpool", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--maxpool", "max", "--out", o / "n.h5"], ["--maxpool", "'max'", "error, avg"]),
    ("convert-opt-novalue", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--opt", "novalue", "--out", o / "n.h5"], ["--opt", "'novalue'", "KEY=VALUE"]),
    ("convert-opt-unknown", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--method", "aif", "--opt", "bogus=1", "--out", o / "n.h5"], ["'aif'", "['bogus']", "options are"]),
    ("convert-opt-preset", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--opt", "preset=loihi", "--out", o / "n.h5"], ["preset", "'loihi'", "('netx',)"]),
    ("convert-opt-twice", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--opt", "channelwise=true", "--opt", "channelwise=false", "--out", o / "n.h5"], ["--opt", "'channelwise'", "twice"]),
    ("convert-out-folder", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--out", o], ["--out", "is a folder"]),
    ("convert-out-parent", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--out", o / "no" / "n.h5"], ["--out", "n.h5", "does not exist"]),
    ("convert-json-same-as-out", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5", "--json", o / "n.h5"], ["--json", "n.h5", "same path as --out"]),
    ("convert-out-overwrites-input", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--out", d / "model.onnx"], ["--out", "model.onnx", "overwrite the input MODEL"]),
    ("convert-timesteps-zero", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5", "--timesteps", "0"], ["--timesteps", "0", "below the minimum 1"]),
    # ------------------------------------------------------------------ compile
    ("compile-missing", lambda d, o: ["compile", d / "nothere.h5", "--out", o / "q.h5"], ["nothere.h5", "no such file"]),
    ("compile-garbage", lambda d, o: ["compile", d / "garbage.h5", "--out", o / "q.h5"], ["garbage.h5", "not a spikeport IR file"]),
    ("compile-quantised", lambda d, o: ["compile", d / "qnet.h5", "--out", o / "q.h5"], ["qnet.h5", "already quantised", "'loihi2'"]),
    ("compile-profile-name", lambda d, o: ["compile", d / "net.h5", "--profile", "loihi9", "--out", o / "q.h5"], ["'loihi9'", "built-in profiles", "spinnaker2"]),
    ("compile-profile-toml", lambda d, o: ["compile", d / "net.h5", "--profile", d / "bad.toml", "--out", o / "q.h5"], ["bad.toml", "not valid TOML"]),
    ("compile-netx-profile", lambda d, o: ["compile", d / "net.h5", "--profile", "spinnaker1", "--netx", "--out", o / "q.h5"], ["netx datapath", "'spinnaker1'", "bias_exp range [0, 0]", "bias_exp 6"]),
    ("compile-profile-section", lambda d, o: ["compile", d / "net.h5", "--profile", d / "nosections.toml", "--out", o / "q.h5"], ["nosections.toml", "[profile]", "is missing (required sections"]),
    ("compile-out-folder", lambda d, o: ["compile", d / "net.h5", "--out", o], ["--out", "is a folder"]),
    ("compile-json-parent", lambda d, o: ["compile", d / "net.h5", "--out", o / "q.h5", "--json", o / "sub" / "t.json"], ["--json", "t.json", "does not exist"]),
    # ------------------------------------------------------------------ simulate
    ("simulate-data-shape", lambda d, o: ["simulate", d / "qnet.h5", "--data", d / "shape.npz", "--timesteps", "4"], ["shape.npz", "(1, 7, 7)", "(1, 8, 8)", "qnet.h5"]),
    ("simulate-labels", lambda d, o: ["simulate", d / "net.h5", "--data", d / "labels12.npz", "--timesteps", "4"], ["labels12.npz", "0..12", "10 classes"]),
    ("simulate-labels-negative", lambda d, o: ["simulate", d / "net.h5", "--data", d / "labelsneg.npz", "--timesteps", "4"], ["labelsneg.npz", "-1..2", "0..9"]),
    ("simulate-labels-dtype", lambda d, o: ["simulate", d / "net.h5", "--data", d / "yfloat.npz", "--timesteps", "4"], ["yfloat.npz", "'y'", "float32", "integer"]),
    ("simulate-labels-length", lambda d, o: ["simulate", d / "net.h5", "--data", d / "ylen.npz", "--timesteps", "4"], ["ylen.npz", "3 labels", "4 samples"]),
    ("simulate-data-missing", lambda d, o: ["simulate", d / "net.h5", "--data", d / "nothere.npz", "--timesteps", "4"], ["nothere.npz", "no such data file"]),
    ("simulate-timesteps-negative", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "-3"], ["--timesteps", "-3", "below the minimum 1"]),
    ("simulate-timesteps-word", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "ten"], ["--timesteps", "'ten'", "not an integer"]),
    ("simulate-batch-size", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4", "--batch-size", "0"], ["--batch-size", "0", "below the minimum 1"]),
    ("simulate-device", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4", "--device", "tpu"], ["--device", "'tpu'"]),
    ("simulate-device-index", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4", "--device", "cuda:99"], ["--device", "'cuda:99'"]),
    ("simulate-save-outputs-folder", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4", "--save-outputs", o], ["--save-outputs", "is a folder"]),
    ("simulate-same-outputs", lambda d, o: ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4", "--json", o / "x", "--save-outputs", o / "x"], ["--save-outputs", "same path as --json"]),
    ("simulate-too-long", lambda d, o: ["simulate", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", BIG_T, "--json", o / "s.json"], ["simulate", "8 samples", "--yes", "limit is 60 min"]),
    # ------------------------------------------------------------------ fidelity
    ("fidelity-swapped", lambda d, o: ["fidelity", d / "model.onnx", d / "qnet.h5", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4"], ["qnet.h5", "already quantised", "float IR"]),
    ("fidelity-float-qnet", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4"], ["net.h5", "a float IR", "quantised one is needed", "spikeport compile"]),
    ("fidelity-model-mismatch", lambda d, o: ["fidelity", d / "mlp5.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4"], ["mlp5.onnx", "net.h5", "do not match", "5 outputs"]),
    ("fidelity-ir-mismatch", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "mlp5_qnet.h5", "--data", d / "test.npz", "--timesteps", "4"], ["net.h5", "mlp5_qnet.h5", "do not match"]),
    ("fidelity-timesteps-repeat", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "8,8"], ["--timesteps", "'8,8'", "repeated"]),
    ("fidelity-timesteps-negative", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "8,-1"], ["--timesteps", "'8,-1'", ">= 1"]),
    ("fidelity-plot-parent", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--plot", o / "plots" / "f.png"], ["--plot", "f.png", "does not exist"]),
    ("fidelity-data-shape", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "shape.npz", "--timesteps", "4"], ["shape.npz", "(1, 7, 7)", "(1, 8, 8)"]),
    ("fidelity-too-long", lambda d, o: ["fidelity", d / "model.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", f"8,{BIG_T}"], ["fidelity", "--yes", "limit is 60 min"]),
    # ------------------------------------------------------------------ energy
    ("energy-timestep-ms-nan", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--timestep-ms", "nan"], ["--timestep-ms", "nan", "finite number > 0"]),
    ("energy-timestep-ms-negative", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--timestep-ms", "-1"], ["--timestep-ms", "-1", "> 0"]),
    ("energy-convention", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--convention", "fp64"], ["--convention", "'fp64'", "fp32"]),
    ("energy-graded-as", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--graded-as", "flop"], ["--graded-as", "'flop'", "ac, mac"]),
    ("energy-model-mismatch", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--model", d / "mlp5.onnx"], ["mlp5.onnx", "qnet.h5", "do not match", "5 outputs"]),
    ("energy-profile-mismatch", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--profile", "spinnaker1"], ["--profile", "'spinnaker1'", "quantised for 'loihi2'"]),
    ("energy-plot-folder", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--plot", o], ["--plot", "is a folder"]),
    ("energy-too-long", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", BIG_T], ["energy", "--yes", "limit is 60 min"]),
    # ------------------------------------------------------------------ resources
    ("resources-profile", lambda d, o: ["resources", d / "qnet.h5", "--profile", "tpu"], ["'tpu'", "built-in profiles"]),
    ("resources-missing", lambda d, o: ["resources", d / "nothere.h5"], ["nothere.h5", "no such file"]),
    ("resources-json-folder", lambda d, o: ["resources", d / "qnet.h5", "--json", o], ["--json", "is a folder"]),
    ("resources-profile-mismatch", lambda d, o: ["resources", d / "qnet.h5", "--profile", "loihi1"], ["'loihi1'", "quantised for 'loihi2'"]),
    # ------------------------------------------------------------------ finetune
    ("finetune-method", lambda d, o: ["finetune", d / "model.onnx", "--method", "if", "--train", d / "calib.npz", "--epochs", "1", "--out", o / "m.pt2"], ["--method", "'if'", "qcfs"]),
    ("finetune-out-suffix", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "calib.npz", "--epochs", "1", "--out", o / "m.onnx"], ["--out", "m.onnx", ".pt2"]),
    ("finetune-no-labels", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "nolabels.npz", "--epochs", "1", "--out", o / "m.pt2"], ["nolabels.npz", "labels", "'y'"]),
    ("finetune-lr-nan", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "calib.npz", "--epochs", "1", "--lr", "nan", "--out", o / "m.pt2"], ["--lr", "nan", "> 0"]),
    ("finetune-epochs", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "calib.npz", "--epochs", "-1", "--out", o / "m.pt2"], ["--epochs", "-1", "below the minimum 0"]),
    ("finetune-labels", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "labels12.npz", "--epochs", "1", "--out", o / "m.pt2"], ["labels12.npz", "0..12", "10 classes"]),
    ("finetune-data-shape", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "shape_y.npz", "--epochs", "1", "--out", o / "m.pt2"], ["shape_y.npz", "(1, 7, 7)", "(1, 8, 8)"]),
    ("finetune-out-parent", lambda d, o: ["finetune", d / "model.onnx", "--train", d / "calib.npz", "--epochs", "1", "--out", o / "x" / "m.pt2"], ["--out", "m.pt2", "does not exist"]),
    # ------------------------------------------------------------------ export
    ("export-target", lambda d, o: ["export", d / "qnet.h5", "--target", "truenorth", "--out", o / "lava"], ["--target", "'truenorth'", "lava, netx"]),
    ("export-float", lambda d, o: ["export", d / "net.h5", "--out", o / "lava"], ["net.h5", "a float IR", "spikeport compile"]),
    ("export-out-file", lambda d, o: ["export", d / "qnet.h5", "--out", o / "taken"], ["--out", "taken", "not a folder"], _setup_file("taken")),
    ("export-out-foreign-folder", lambda d, o: ["export", d / "qnet.h5", "--out", o / "lava"], ["--out", "lava", "other files", "plan.json"], _setup_folder_with("notes.txt")),
    ("export-approximate-no-data", lambda d, o: ["export", d / "qnet.h5", "--target", "netx", "--out", o / "n.net.h5", "--approximate"], ["--approximate", "--data", "--target netx only"]),
    ("verify-netx-refused", lambda d, o: ["verify", d / "qnet.h5", "--target", "netx", "--data", d / "test.npz", "--timesteps", "4"], ["netx holds only a chain", "'relu'"]),
    ("export-netx-refused", lambda d, o: ["export", d / "qnet.h5", "--target", "netx", "--out", o / "n.net.h5"], ["netx", "relu"]),
    ("export-timesteps", lambda d, o: ["export", d / "qnet.h5", "--out", o / "lava", "--timesteps", "0"], ["--timesteps", "0", "below the minimum 1"]),
    # ------------------------------------------------------------------ run
    ("run-target", lambda d, o: ["run", d / "qnet.h5", "--target", "gpu", "--data", d / "test.npz", "--timesteps", "4"], ["--target", "'gpu'", "lava"]),
    ("run-float", lambda d, o: ["run", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4"], ["net.h5", "a float IR"]),
    ("run-data-shape", lambda d, o: ["run", d / "qnet.h5", "--data", d / "shape.npz", "--timesteps", "4"], ["shape.npz", "(1, 7, 7)", "(1, 8, 8)"]),
    ("run-too-long", lambda d, o: ["run", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "100000", "--json", o / "r.json"], ["Lava run", "--yes", "limit is 60 min"]),
    # ------------------------------------------------------------------ verify
    ("verify-target", lambda d, o: ["verify", d / "qnet.h5", "--target", "loihi", "--data", d / "test.npz", "--timesteps", "4"], ["--target", "'loihi'", "lava"]),
    ("verify-float", lambda d, o: ["verify", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4"], ["net.h5", "a float IR"]),
    ("verify-labels", lambda d, o: ["verify", d / "qnet.h5", "--data", d / "labels12.npz", "--timesteps", "4"], ["labels12.npz", "0..12", "10 classes"]),
    ("verify-too-long", lambda d, o: ["verify", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "100000"], ["verify", "--yes", "limit is 60 min"]),
    # ------------------------------------------------------------------ profiles
    ("profiles-extra-argument", lambda d, o: ["profiles", "loihi2"], ["unexpected extra argument", "loihi2"]),
    ("profiles-unknown-option", lambda d, o: ["profiles", "--bogus"], ["No such option", "--bogus"]),
    # ------------------------------------------------------------------ options added with new features
    ("convert-pool", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--out", o / "n.h5", "--pool", "sometimes"], ["--pool", "'sometimes'", "auto, fold, separate"]),
    ("import-missing", lambda d, o: ["import", d / "nothere.nir", "--out", o / "n.h5"], ["nothere.nir", "no such file"]),
    ("import-convention", lambda d, o: ["import", NIR_FILE, "--out", o / "n.h5", "--convention", "keras"], ["--convention", "'keras'", "snntorch"]),
    ("import-dt", lambda d, o: ["import", NIR_FILE, "--out", o / "n.h5", "--dt", "-1"], ["--dt", "-1", "> 0"]),
    ("import-reset", lambda d, o: ["import", NIR_FILE, "--out", o / "n.h5", "--reset", "half"], ["--reset", "'half'", "zero, subtract"]),
    ("mbe-fit-function", lambda d, o: ["mbe-fit", "--function", "cosh", "--out", o / "f.json"], ["'cosh'", "gelu"]),
    ("mbe-fit-bases", lambda d, o: ["mbe-fit", "--function", "gelu", "--bases", "0", "--out", o / "f.json"], ["--bases", "0", "1"]),
    ("mbe-fit-domain-order", lambda d, o: ["mbe-fit", "--function", "gelu", "--domain", "4,-4", "--out", o / "f.json"], ["--domain", "'4,-4'", "LO < HI"]),
    ("mbe-fit-domain-text", lambda d, o: ["mbe-fit", "--function", "gelu", "--domain", "-4,inf", "--out", o / "f.json"], ["--domain", "'-4,inf'", "two finite numbers"]),
    ("mbe-fit-domain-odd", lambda d, o: ["mbe-fit", "--function", "tanh", "--domain=-2,3", "--out", o / "f.json"], ["tanh", "symmetric", "(-2.0, 3.0)"]),
    ("convert-mbe-gelu-fit-missing", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--method", "mbe", "--opt", f"gelu_fit={d / 'nothere.json'}", "--out", o / "n.h5"], ["gelu_fit=", "nothere.json", "no such file"]),
    ("convert-mbe-gelu-fit-not-json", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--method", "mbe", "--opt", f"gelu_fit={d / 'calib.npz'}", "--out", o / "n.h5"], ["gelu_fit=", "calib.npz", ("not valid JSON", "cannot be read")]),
    ("convert-mbe-bias-correction", lambda d, o: ["convert", d / "model.onnx", "--calib", d / "calib.npz", "--method", "mbe", "--opt", "gelu_bias_correction=3", "--out", o / "n.h5"], ["gelu_bias_correction=3", "true or false"]),
    ("export-spinnaker-machine-size", lambda d, o: ["export", d / "qnet.h5", "--target", "spinnaker", "--out", o / "sp", "--machine", "0x3"], ["--machine", "'0x3'", "1..256"]),
    ("export-spinnaker-machine-name", lambda d, o: ["export", d / "qnet.h5", "--target", "spinnaker", "--out", o / "sp", "--machine", "banana"], ["--machine", "'banana'", "48-chip"]),
    ("export-spinnaker-profile", lambda d, o: ["export", d / "qnet.h5", "--target", "spinnaker", "--out", o / "sp", "--profile", "loihi2"], ["'loihi2'", "not a SpiNNaker one"]),
    ("export-nir-convention", lambda d, o: ["export", d / "net.h5", "--target", "nir", "--out", o / "m.nir", "--convention", "keras"], ["--convention", "'keras'", "spikingjelly"]),
    ("run-spinnaker-trace", lambda d, o: ["run", d / "qnet.h5", "--target", "spinnaker", "--data", d / "test.npz", "--timesteps", "4", "--trace", o / "missing" / "t.eieio"], ["--trace", "missing", "does not exist"]),
    ("verify-spinnaker-machine", lambda d, o: ["verify", d / "qnet.h5", "--target", "spinnaker", "--data", d / "test.npz", "--timesteps", "4", "--machine", "300x300"], ["--machine", "'300x300'", "1..256"]),
    ("energy-convention-neurobench", lambda d, o: ["energy", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4", "--convention", "neurobenchx"], ["--convention", "'neurobenchx'", "neurobench"]),
]


def _case(case):
    name, argv, expect = case[:3]
    setup = case[3] if len(case) > 3 else None
    return pytest.param(argv, expect, setup, id=name)


def test_at_least_60_distinct_cases_cover_every_command():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60
    commands = {c[0].split("-")[0] for c in CASES}
    assert commands == {"demo", "convert", "finetune", "compile", "simulate", "fidelity", "energy", "resources",
                        "export", "run", "verify", "profiles", "import", "mbe"}


@pytest.mark.parametrize("argv, expect, setup", [_case(c) for c in CASES])
def test_bad_input(d, tmp_path, argv, expect, setup):
    out = tmp_path / "out"
    out.mkdir()
    if setup:
        setup(out)
    before = _files(out)
    inputs_before = _files(d)
    r = runner.invoke(app, [str(a) for a in argv(d, out)])
    text = " ".join(r.output.split())   # messages may wrap; compare with single spaces
    assert r.exit_code == EXIT_USER, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    for s in expect:   # a tuple: any one of its messages (wording that differs between loader versions)
        assert any(alt in text for alt in (s if isinstance(s, tuple) else (s,))), f"{s!r} not in: {r.output}"
    assert _files(out) == before, "new files in the output folder"
    assert _files(d) == inputs_before, "new files next to the inputs"


# ---------------------------------------------------------------------- through a real process
def _spikeport(*args, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "spikeport", *[str(a) for a in args]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_subprocess_bad_inputs_exit_2_without_traceback(d, tmp_path):
    r = _spikeport("simulate", d / "net.h5", "--data", d / "shape.npz", "--timesteps", "4", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert "shape.npz" in r.stderr and "(1, 7, 7)" in r.stderr
    bracketed = tmp_path / "[profile].npz"       # console markup would eat "[profile]"
    np.savez(bracketed, x=np.zeros((2, 1, 7, 7), np.float32))
    r = _spikeport("simulate", d / "net.h5", "--data", bracketed, "--timesteps", "4", "--json", tmp_path / "s.json",
                   cwd=tmp_path)
    assert r.returncode == 2 and "[profile].npz" in r.stderr and "Traceback" not in r.stderr
    bracketed.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- bugs, Ctrl-C, full disk
def test_internal_error_is_one_line_exit_3(d, tmp_path, monkeypatch):
    import spikeport.simulator as simulator

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug [inside]")
    monkeypatch.setattr(simulator, "simulate", broken)
    r = runner.invoke(app, ["simulate", str(d / "net.h5"), "--data", str(d / "test.npz"), "--timesteps", "4",
                            "--json", str(tmp_path / "s.json")])
    assert r.exit_code == EXIT_INTERNAL
    assert "internal error: RuntimeError: simulated bug [inside]" in r.output and "please report" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "s.json").exists()
    r = runner.invoke(app, ["--debug", "simulate", str(d / "net.h5"), "--data", str(d / "test.npz"), "--timesteps", "4"])
    assert r.exit_code == EXIT_INTERNAL and "Traceback" in r.output


def test_ctrl_c_exits_130_and_leaves_no_partial_file(d, tmp_path, monkeypatch):
    import spikeport.report.output as output

    real_savez = np.savez

    def interrupted(file, **arrays):  # half the archive written, then Ctrl-C
        real_savez(file, **arrays)
        raise KeyboardInterrupt
    monkeypatch.setattr(output.np, "savez", interrupted)
    r = runner.invoke(app, ["simulate", str(d / "net.h5"), "--data", str(d / "test.npz"), "--timesteps", "4",
                            "--save-outputs", str(tmp_path / "o.npz")])
    assert r.exit_code == EXIT_INTERRUPTED and "Ctrl-C" in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["json", "png"])
def test_full_disk_exit_2_names_the_file_and_leaves_nothing(d, tmp_path, monkeypatch, target):
    """ENOSPC injected into the write itself (after the temporary file exists); JSON and PNG both go
    through atomic.write_bytes."""
    import errno

    import spikeport.atomic as atomic

    real = atomic.atomic_path.__wrapped__

    def full(path, suffix=None):
        gen = real(path, suffix)
        tmp = next(gen)
        tmp.write_bytes(b"partial")
        try:
            gen.throw(OSError(errno.ENOSPC, "No space left on device", str(tmp)))
        except OSError:
            raise
        yield tmp  # never reached
    from contextlib import contextmanager
    monkeypatch.setattr(atomic, "atomic_path", contextmanager(full))
    opt = ["--json", str(tmp_path / "e.json")] if target == "json" else ["--plot", str(tmp_path / "e.png")]
    r = runner.invoke(app, ["energy", str(d / "qnet.h5"), "--data", str(d / "test.npz"), "--timesteps", "4", *opt])
    assert r.exit_code == EXIT_USER, r.output
    text = " ".join(r.output.split())
    assert f"e.{target}" in text and "disk is full" in text and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled up (a real ENOSPC); skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        try:
            with open(mnt / "filler", "wb") as f:
                f.write(b"\0" * (128 * 1024))
        except OSError:
            pass  # full: not one more data block fits (empty files still can be created)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk_is_a_clear_message_and_leaves_nothing(d, full_disk):
    cases = [
        ["compile", d / "net.h5", "--out", full_disk / "q.h5"],
        ["simulate", d / "net.h5", "--data", d / "test.npz", "--timesteps", "4", "--json", full_disk / "s.json"],
        ["fidelity", d / "model.onnx", d / "net.h5", d / "qnet.h5", "--data", d / "test.npz", "--timesteps", "4",
         "--plot", full_disk / "f.png"],
    ]
    big = full_disk.parent / "big.npz"
    np.savez(big, x=np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32))
    cases.append(["simulate", d / "net.h5", "--data", big, "--timesteps", "2", "--save-outputs", full_disk / "o.npz"])
    for argv in cases:
        r = runner.invoke(app, [str(a) for a in argv])
        text = " ".join(r.output.split())
        assert r.exit_code == EXIT_USER, r.output
        assert "disk is full" in text and str(full_disk) in text and "Traceback" not in r.output, r.output
        assert sorted(p.name for p in full_disk.iterdir()) == ["filler"], argv


def test_work_estimate_formula_and_yes(d, tmp_path, monkeypatch):
    from spikeport.simulator import workload
    from spikeport.simulator.opcount import ann_equivalent_macs
    net = ir.load(d / "qnet.h5")
    w = workload.estimate(net, 8, [4, 16])
    s = ann_equivalent_macs(net) + sum(p.size for p in net.populations())
    assert w.ops_per_step == s and w.steps == [4 + net.latency(), 16 + net.latency()]
    assert w.ops == 8 * (20 + 2 * net.latency()) * s and w.seconds == w.ops / workload.SIM_OPS_PER_S
    monkeypatch.setattr(workload, "LIMIT_S", 1e-9)
    monkeypatch.setattr(workload.check, "__defaults__", (False, 1e-9))
    argv = ["simulate", str(d / "qnet.h5"), "--data", str(d / "test.npz"), "--timesteps", "4",
            "--json", str(tmp_path / "s.json")]
    r = runner.invoke(app, argv)
    assert r.exit_code == EXIT_USER and "--yes" in r.output and not (tmp_path / "s.json").exists()
    r = runner.invoke(app, argv + ["--yes"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.json").is_file()


def test_piped_tables_are_not_squeezed_to_80_columns(d, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    r = runner.invoke(app, ["resources", str(d / "qnet.h5")])     # CliRunner's stdout is not a terminal
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if "binding limit" in line or "whole layer" in line]
    assert rows and max(len(line) for line in rows) > 80      # one table row per line, at its natural width
    assert all(line.count("│") + line.count("┃") >= 10 for line in rows)
