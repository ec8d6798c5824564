"""Loading a .pt2 never runs code from it: genuine torch.export archives carrying code are refused.

Each archive starts as a real ``torch.export.save`` file; one entry is then replaced the way an
attacker would. A subprocess shows that stock ``torch.export.load`` runs the payload (so the test is
not vacuous); spikeport refuses the same file with a FrontendError naming file and entry, and the
marker file the payload would create stays absent.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest
import torch
from torch.export.pt2_archive._package import PT2ArchiveWriter

from spikeport.frontend import FrontendError, load_model

WRITER_OWNED = {"byteorder", ".data/version", ".data/serialization_id"}


class _OpenForWriting:
    """Unpickles to ``open(marker, 'w')``: running it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker) -> bytes:
    buf = io.BytesIO()
    torch.save(_OpenForWriting(marker), buf)       # a real torch.save file, as use_pickle entries are
    return buf.getvalue()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    ep = torch.export.export(model, (torch.rand(2, 4),))
    path = tmp_path_factory.mktemp("pt2") / "genuine.pt2"
    torch.export.save(ep, str(path))
    return path


def _tamper(src, dst, edit) -> None:
    """Rewrite the archive ``src`` into ``dst`` with ``edit(entries)`` applied (relative names -> bytes)."""
    with zipfile.ZipFile(src) as zf:
        root = zf.namelist()[0].split("/", 1)[0] + "/"
        entries = {n[len(root):]: zf.read(n) for n in zf.namelist()}
    edit(entries)
    with PT2ArchiveWriter(str(dst)) as w:
        for rel, data in entries.items():
            if rel not in WRITER_OWNED:
                w.write_bytes(rel, data)


def _pickled_weight(marker):
    def edit(e):
        cfg = json.loads(e["data/weights/model_weights_config.json"])
        cfg["config"]["0.weight"]["use_pickle"] = True
        e["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        e["data/weights/weight_0"] = _payload(marker)
    return edit


def _pickled_sample_inputs(marker):
    def edit(e):
        e["data/sample_inputs/model.pt"] = _payload(marker)
    return edit


def _runs_with_stock_torch(path, marker) -> bool:
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(path)!r})"],
                   capture_output=True, timeout=300)
    return marker.exists()


@pytest.mark.parametrize("make, entry", [
    (_pickled_weight, r"archive entry 'data/weights/weight_0' \(weight '0.weight'\) is marked use_pickle = True"),
    (_pickled_sample_inputs, r"archive entry 'data/sample_inputs/model.pt' is not plain tensor data"),
])
def test_pickle_in_genuine_archive_is_refused_and_never_runs(genuine, tmp_path, make, entry):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt2"
    _tamper(genuine, evil, make(marker))
    assert _runs_with_stock_torch(evil, marker), "the crafted archive must run its payload under torch.export.load"
    marker.unlink()
    with pytest.raises(FrontendError, match=rf"evil.pt2: {entry}") as err:
        load_model(evil, input_shape=(4,))
    assert "never runs code" in str(err.value)
    assert not marker.exists()


def _set_model(fn):
    def edit(e):
        program = json.loads(e["models/model.json"])
        fn(program)
        e["models/model.json"] = json.dumps(program).encode()
    return edit


def _first_node(program):
    return program["graph_module"]["graph"]["nodes"][0]


@pytest.mark.parametrize("edit, message", [
    (_set_model(lambda p: _first_node(p).__setitem__("target", "torch.os.system")),
     r"models/model.json' has a graph node calling 'torch.os.system', which is not a torch operator"),
    (_set_model(lambda p: p.__setitem__("guards_code", ["__import__('os').system('true')"])),
     r"models/model.json' carries guards_code"),
    (_set_model(lambda p: p["graph_module"]["graph"]["sym_int_values"].__setitem__(
        "s9", {"as_expr": {"expr_str": "__import__('os').getcwd()", "hint": None}})),
     r"symbolic shape expression .* '_' that sympy would evaluate"),
    (lambda e: e.__setitem__("data/aotinductor/model/model.so", b"\x7fELF"), r"'data/aotinductor/model/model.so' holds AOTInductor native code"),
    (lambda e: e.__setitem__("data/constants/opaque_obj_0", b"x"), r"'data/constants/opaque_obj_0' is a pickled Python object"),
    (lambda e: e.__setitem__("data/weights/model.pt", b"x"), r"'data/weights/model.pt' is a pickled file"),
])
def test_code_carrying_constructs_are_refused(genuine, tmp_path, edit, message):
    bad = tmp_path / "bad.pt2"
    _tamper(genuine, bad, edit)
    with pytest.raises(FrontendError, match=rf"bad.pt2: .*{message}"):
        load_model(bad, input_shape=(4,))


def test_plain_archive_still_loads_and_matches(genuine):
    ann = load_model(genuine, input_shape=(4,))
    x = torch.rand(2, 4)                       # exported with a static batch of 2
    ep = torch.export.load(str(genuine))
    assert torch.equal(ann.module(x), ep.module()(x))


def test_not_a_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "junk.pt2"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(FrontendError, match="junk.pt2: not a torch.export program"):
        load_model(bad, input_shape=(4,))
