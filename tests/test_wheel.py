"""Packaging: the wheel holds every subpackage and its data, and works when installed normally.

The repository root is the ``spikeport`` package (pyproject maps it), so the package list in
pyproject.toml is explicit: the first test checks it against the source tree; the slow test builds
the wheel offline, installs it into a fresh virtual environment (system site-packages give the
pinned dependencies) and runs it from outside the source tree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_PACKAGED = {"tests", "benchmarks", "docs", "scripts"}


def _source_packages() -> set[str]:
    found = {"spikeport"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and (rel.parts[0] in NOT_PACKAGED or rel.parts[0].startswith(".") or rel.parts[0] == "build"):
            continue
        found.add(".".join(("spikeport",) + rel.parts))
    return found


def test_pyproject_lists_every_subpackage():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(conf["packages"]) == _source_packages()
    assert {"spikeport.backends.loihi2", "spikeport.backends.loihi2.processes"} <= set(conf["packages"])
    assert not any(p.split(".")[1:2] and p.split(".")[1] in NOT_PACKAGED for p in conf["packages"])


def _run(cmd, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


IMPORT_ALL = r"""
import importlib, pkgutil, sys, pathlib
import spikeport
venv = pathlib.Path(sys.argv[1]).resolve()
assert pathlib.Path(spikeport.__file__).resolve().is_relative_to(venv), spikeport.__file__
names = [m.name for m in pkgutil.walk_packages(spikeport.__path__, "spikeport.") if m.name != "spikeport.__main__"]
for name in names:
    mod = importlib.import_module(name)
    assert pathlib.Path(mod.__file__).resolve().is_relative_to(venv), (name, mod.__file__)
from spikeport import hw_profiles
from spikeport.models.digits import WEIGHTS_FILE
assert WEIGHTS_FILE.is_file() and len(hw_profiles.list_profiles()) >= 5
print(len(names), "modules")
# a tiny model and data for the CLI run below
import numpy as np, torch
from spikeport.frontend import export_onnx
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
x = np.random.default_rng(0).random((32, 1, 4, 4), dtype=np.float32)
export_onnx(m, "tiny.onnx", x[:2])
np.savez("calib.npz", x=x)
"""


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.egg-info",
                                                             "build", ".hypothesis", "spikeport-demo"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, src],
         cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("spikeport-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"spikeport", f"{wheel.name.split('-py3')[0]}.dist-info"}
    for needed in ("spikeport/backends/loihi2/processes/models.py", "spikeport/hw_profiles/loihi2.toml",
                   "spikeport/models/digits_resnet.npz", "spikeport/cli.py", "spikeport/errors.py"):
        assert needed in names
    assert not any(n.startswith(("spikeport/tests/", "spikeport/benchmarks/", "spikeport/docs/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path, env=env)
    py, exe = venv / "bin" / "python", venv / "bin" / "spikeport"
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=tmp_path, env=env)
    work = tmp_path / "work"
    work.mkdir()
    r = _run([py, "-c", IMPORT_ALL, venv], cwd=work, env=env)
    assert int(r.stdout.split()[0]) > 60
    r = _run([exe, "profiles"], cwd=work, env=env)
    assert "loihi2" in r.stdout and "spinnaker1" in r.stdout
    r = _run([exe, "convert", "tiny.onnx", "--calib", "calib.npz", "--out", "net.h5"], cwd=work, env=env)
    assert "converted tiny.onnx" in r.stdout
    assert (work / "net.h5").is_file() and oct((work / "net.h5").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
