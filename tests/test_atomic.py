"""spikeport.atomic: outputs appear complete or not at all, with the umask's permissions."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from spikeport import ir, report
from spikeport.atomic import atomic_dir, atomic_path, write_text
from spikeport.errors import SpikeportError


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_outputs_get_0644_not_tempfile_0600(tmp_path, umask_022, digits_onnx, calib_x):
    from spikeport import convert, frontend
    report.write_json({"a": 1}, tmp_path / "r.json")
    report.write_npz(tmp_path / "o.npz", x=np.arange(3))
    from spikeport.report.plots import _save, plt
    _save(plt.figure(), tmp_path / "p.png")
    write_text(tmp_path / "t.txt", "x")
    net = convert.convert(frontend.load_model(digits_onnx), calib_x[:32])
    ir.save(net, tmp_path / "net.h5")
    for name in ("r.json", "o.npz", "p.png", "t.txt", "net.h5"):
        assert _mode(tmp_path / name) == 0o644, name
    with atomic_dir(tmp_path / "folder") as d:
        (d / "f").write_text("x")
    assert _mode(tmp_path / "folder") == 0o755 and _mode(tmp_path / "folder" / "f") == 0o644


def test_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.txt") == 0o600


@pytest.mark.parametrize("exc", [RuntimeError("writer failed"), KeyboardInterrupt(),
                                 OSError(errno.ENOSPC, "No space left on device")])
def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, exc):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(type(exc)) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise exc
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    if isinstance(exc, OSError):   # the message names the file the user asked for, not the temporary
        assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC


def test_atomic_dir_replaces_only_its_own_kind_of_folder(tmp_path):
    out = tmp_path / "export"
    with atomic_dir(out) as d:
        (d / "plan.json").write_text("1")
    with atomic_dir(out, replaceable=lambda p: {f.name for f in p.iterdir()} <= {"plan.json"}) as d:
        (d / "plan.json").write_text("2")
    assert (out / "plan.json").read_text() == "2"
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(FileExistsError):
        with atomic_dir(out, replaceable=lambda p: {f.name for f in p.iterdir()} <= {"plan.json"}) as d:
            (d / "plan.json").write_text("3")
    assert (out / "notes.txt").read_text() == "the user's" and (out / "plan.json").read_text() == "2"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "other") as d:
            (d / "half").write_text("x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_every_user_error_is_a_spikeport_error():
    from spikeport.backends.loihi2 import LavaExportError
    from spikeport.backends.netx import NetxExportError
    from spikeport.compiler import QuantizationError
    from spikeport.compiler.partition import ResourceError
    from spikeport.convert import ConversionError
    from spikeport.datasets import DataError
    from spikeport.frontend import FrontendError, UnsupportedOpError
    from spikeport.hw_profiles import ProfileError
    for cls in (ir.IRError, ProfileError, FrontendError, UnsupportedOpError, QuantizationError, ResourceError,
                ConversionError, DataError, LavaExportError, NetxExportError):
        assert issubclass(cls, SpikeportError) and issubclass(cls, ValueError), cls
