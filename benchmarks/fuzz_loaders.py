"""Fuzz the IR loader and the profile loader with mutated files; every load runs in a worker process.

    python3 benchmarks/fuzz_loaders.py --ir 10000 --profiles 10000 --workers 2

IR originals: a float network (conv, signed IF, identity skip, readout) and four quantised Loihi 2
networks (residual with delays, multi-spike and graded signed neurons, convolutions), each saved by
``ir.save`` (sealed) and also as a plain HDF5 file without the seal (``legacy``, as older spikeport
wrote them). Mutant categories:

  bytes         byte flips, overwrites, truncation, insertion, deletion of a sealed file
  h5-edit       an h5py edit of a sealed file (attribute / dataset delete, retype, reshape, NaN,
                huge values, renames, copies, JSON damage) saved by h5py, as a hand edit would be
  h5-resealed   the same edits with the seal recomputed afterwards: a writer that produces a correct
                checksum for wrong content; exercises the strict reader and the value checks
  legacy        bytes or h5py edits of the unsealed file (parsed in the sandbox child first)
  profile       TOML edits of the built-in profiles: value changes, key deletion, type changes,
                duplicated keys/sections, encoding damage, byte flips, truncation

Each mutant is generated and loaded inside a worker process; the parent gives every task a timeout,
so a crash (the worker dies) or a hang (no answer in time) is counted and the worker replaced. A
loaded IR is simulated for T steps on a fixed input and compared with the original. A loaded
profile is compared with the original and, if different, used to quantise a small network.

Outcomes: ``error`` (a clean IRError / ProfileError, or a clean QuantizationError downstream of a
valid profile), ``equal`` (loads; simulation or profile equal to the original), ``different``
(loads, passes every check, but differs), ``crash``, ``hang``, ``other`` (any other exception type).
For ``bytes`` and ``h5-edit`` a ``different`` is a finding (damage went undetected); for
``h5-resealed``, ``legacy`` and ``profile`` it is a valid file with other content, which no loader can
tell from an intended one.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

CATEGORIES = ("bytes", "h5-edit", "h5-resealed", "legacy", "profile")
TIMESTEPS = 4
TASK_TIMEOUT_S = {"legacy": 150.0}           # the sandbox child itself gives up after 60 s
DEFAULT_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 900.0
PROFILES = ("generic45nm", "loihi1", "loihi2", "spinnaker1", "spinnaker2")


# ============================================================================ originals (parent)
def _float_net():
    from spikeport import ir
    rng = np.random.default_rng(7)
    net = ir.Network(meta={"method": "fuzz", "input_range": [0.0, 1.0]})
    net.add(ir.Input("x", shape=(1, 6, 6)))
    net.add(ir.Population("h", shape=(3, 6, 6), neuron=ir.IF(threshold=np.array([1.0, 2.0, 3.0]), bias=np.zeros(3),
                                                               neg_threshold=np.array(0.0), neg_reset=np.array(1.0)),
                          payload=ir.SpikePayload(kind="signed", bits=2, min_level=-1, max_level=1),
                          decode_scale=np.array([0.5, 1.0, 2.0]), source="relu_1"))
    net.add(ir.Conv2d("x->h", source="x", target="h", weight=rng.normal(size=(3, 1, 3, 3)), padding=(1, 1), delay=1))
    net.add(ir.Population("skip", shape=(3, 6, 6), neuron=ir.IF(threshold=np.array(1.0), leak=0.1), source="relu_2"))
    net.add(ir.Identity("h->skip", source="h", target="skip", weight=np.array([1.0, 0.5, 0.25])))
    net.add(ir.Population("out", shape=(4,), neuron=ir.Readout(bias=np.zeros(4))))
    net.add(ir.Dense("skip->out", source="skip", target="out", weight=rng.normal(size=(4, 108))))
    net.outputs = ["out"]
    return net


def _write_unsealed(src: Path, dst: Path) -> None:
    """The same HDF5 content without the user block (how spikeport wrote files before the seal)."""
    import h5py
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for k in a:
            a.copy(a[k], b, name=k)


def _input_for(net, rng) -> np.ndarray:
    inp = net.inputs()[0]
    x = rng.random((3,) + tuple(inp.shape))
    if net.quantized:   # graded integer inputs scaled so that the quantised network sees every level
        x = x * inp.scale * max(inp.payload.max_level, 1)
    return x


def make_originals(folder: Path) -> list[dict]:
    from spikeport import ir
    from spikeport.simulator import simulate

    nets = {"float": _float_net()}
    try:            # the quantised example networks live with the Loihi 2 backend (whose import needs Lava)
        from spikeport.backends.loihi2 import examples as ex
        nets.update({"resnet": ex.random_resnet(3), "graded": ex.random_graded_mlp(4), "convnet": ex.random_convnet(5),
                     "multispike": ex.random_multispike_convnet(6)})
    except ImportError:
        from spikeport.compiler import quantize
        nets["quantised"] = quantize(nets["float"], "loihi2")[0]
    out = []
    for name, net in nets.items():
        sealed = ir.save(net, folder / f"{name}.h5")
        unsealed = folder / f"{name}.legacy.h5"
        _write_unsealed(sealed, unsealed)
        x = _input_for(ir.load(sealed), np.random.default_rng(11))
        res = simulate(ir.load(sealed), x, TIMESTEPS)
        np.savez(folder / f"{name}.sim.npz", x=x, y=np.asarray(res.outputs))
        out.append({"name": name, "sealed": str(sealed), "legacy": str(unsealed), "sim": str(folder / f"{name}.sim.npz")})
    return out


# ============================================================================ mutations (worker)
_VALUES = [0, -1, 1, 2, 7, 2 ** 31, 2 ** 62, -2 ** 62, 1e9, -1e9, 1e300, float("nan"), float("inf"), -float("inf"),
           0.5, -0.5, "", "x", "IF", "Dense", "Population", "graded", "analog", "C2", "zero", ">", "saturate",
           True, False, "[]", "{}", '{"a": 1}', '["out"]', "[" * 5000, '["shape"]', '["threshold"]', "null",
           "NaN", "1e999", np.bytes_(b"\xff\xfe")]          # the last: bytes that are not UTF-8


def _mutate_bytes(data: bytes, rng) -> bytes:
    """One random byte-level change (drawn again until the bytes differ)."""
    for _ in range(100):
        out = _mutate_bytes_once(data, rng)
        if out != data:
            return out
    return data[:-1]


def _mutate_bytes_once(data: bytes, rng) -> bytes:
    b = bytearray(data)
    op = int(rng.integers(7))
    n = len(b)
    focus = int(rng.integers(0, min(n, 1200))) if rng.random() < 0.3 else int(rng.integers(0, n))
    if op == 0:                                   # flip bits
        for _ in range(int(rng.integers(1, 17))):
            i = focus if rng.random() < 0.5 else int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(8))
    elif op == 1:                                 # truncate
        return bytes(b[:int(rng.integers(0, n))])
    elif op == 2:                                 # overwrite a range
        k = int(rng.integers(1, 65))
        fill = rng.choice([0, 1, 2])
        chunk = bytes(k) if fill == 0 else b"\xff" * k if fill == 1 else rng.integers(0, 256, k, dtype=np.uint8).tobytes()
        b[focus:focus + k] = chunk[:max(0, n - focus)]
    elif op == 3:                                 # append
        b += rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    elif op == 4:                                 # insert
        b[focus:focus] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif op == 5:                                 # delete
        del b[focus:focus + int(rng.integers(1, 64))]
    else:                                         # duplicate a range elsewhere
        k = int(rng.integers(1, 256))
        j = int(rng.integers(0, n))
        b[j:j] = b[focus:focus + k]
    return bytes(b)


def _objects(f):
    import h5py
    objs = [f]
    f.visititems(lambda name, o: objs.append(o))
    groups = [o for o in objs if isinstance(o, h5py.Group)]
    datasets = [o for o in objs if isinstance(o, h5py.Dataset)]
    return objs, groups, datasets


def _new_value(old, rng):
    if rng.random() < 0.4:                        # a nearby value of the same kind
        if isinstance(old, (np.integer, int)) and not isinstance(old, (bool, np.bool_)):
            return type(old)(int(old) + int(rng.choice([-2, -1, 1, 2, 100, -100])))
        if isinstance(old, (np.floating, float)):
            return old * float(rng.choice([-1.0, 0.5, 2.0, 1e6]))
        if isinstance(old, str) and old:
            i = int(rng.integers(len(old)))
            return old[:i] + old[i + 1:] if rng.random() < 0.5 else old[:i] + chr(int(rng.integers(32, 127))) + old[i:]
        if isinstance(old, np.ndarray) and old.size:
            new = old.copy()
            if new.dtype.kind in "iuf":
                new.flat[int(rng.integers(new.size))] += 1
            return new if rng.random() < 0.5 else new[:-1]
    v = _VALUES[int(rng.integers(len(_VALUES)))]
    if rng.random() < 0.15:
        return np.array([v, v]) if not isinstance(v, str) else np.array([1, 2, 3])
    return v


def _edit_h5(path: Path, rng) -> str:
    """One random h5py edit; returns a short description."""
    import h5py
    with h5py.File(path, "r+") as f:
        for _ in range(100):                      # draw until an edit applies
            done = _edit_once(f, rng)
            if done:
                return done
    return "no-op"


def _edit_once(f, rng) -> str | None:
    if True:
        objs, groups, datasets = _objects(f)
        op = int(rng.integers(9))
        obj = objs[int(rng.integers(len(objs)))]
        if op <= 2 and len(obj.attrs):
            keys = list(obj.attrs)
            key = keys[int(rng.integers(len(keys)))]
            if op == 0:
                del obj.attrs[key]
                return f"del attr {obj.name}@{key}"
            try:
                new = _new_value(obj.attrs[key], rng)
                obj.attrs[key] = new
            except (TypeError, ValueError, UnicodeEncodeError):
                obj.attrs[key] = "x"
            return f"set attr {obj.name}@{key}"
        if op == 3 and datasets:
            ds = datasets[int(rng.integers(len(datasets)))]
            data = np.array(ds[()])
            parent, full = ds.parent, ds.name
            name = full.rsplit("/", 1)[1]
            choice = int(rng.integers(7))
            if choice == 0 and data.size and data.dtype.kind == "f":
                data = data.copy()
                data.flat[int(rng.integers(data.size))] = rng.choice([np.nan, np.inf, -np.inf, 1e30])
            elif choice == 1 and data.size:
                data = data.astype(np.float64)
                data.flat[int(rng.integers(data.size))] = rng.choice([1e9, -1e9, 2.0 ** 40, 0.5, 3.0])
            elif choice == 2:
                data = data.ravel() if data.ndim > 1 else data.reshape(-1, 1)
            elif choice == 3:
                data = data.astype(rng.choice(["int8", "float16", "complex64", "bool", "S4", "uint64"]))
            elif choice == 4:
                data = data.ravel()[: max(0, data.size - 1)]
            elif choice == 5:
                data = np.asarray(data.ravel()[0] if data.size else 0)
            else:
                data = np.concatenate([data.ravel(), data.ravel()])
            del parent[name]
            parent.create_dataset(name, data=data)
            return f"dataset {full} op {choice}"
        if op == 4 and len(objs) > 1:             # delete a group or dataset
            victim = objs[1 + int(rng.integers(len(objs) - 1))]
            name = victim.name
            del f[name]
            return f"del {name}"
        if op == 5 and len(groups) > 1:           # rename
            g = groups[1 + int(rng.integers(len(groups) - 1))]
            new = g.name + rng.choice(["_x", "2", ""]) + "y"
            f.move(g.name, new)
            return f"move {g.name}"
        if op == 6 and len(groups) > 1:           # copy a group under a new name
            g = groups[1 + int(rng.integers(len(groups) - 1))]
            f.copy(g.name, g.parent, name=g.name.rsplit("/", 1)[1] + "_copy")
            return f"copy {g.name}"
        if op == 7:                               # unknown attribute
            try:
                obj.attrs["zz_unknown"] = _new_value(1, rng) if rng.random() < 0.5 else 1
            except (TypeError, ValueError):
                obj.attrs["zz_unknown"] = 1
            return f"add attr {obj.name}"
        keys = list(obj.attrs)                    # swap two attribute values
        if len(keys) >= 2:
            a, b = (keys[i] for i in rng.choice(len(keys), 2, replace=False))
            va, vb = obj.attrs[a], obj.attrs[b]
            obj.attrs[a], obj.attrs[b] = vb, va
            if not (isinstance(va, np.ndarray) or isinstance(vb, np.ndarray)) and va == vb:
                return None
            return f"swap {obj.name}@{a},{b}"
        return None


def _mutate_toml(text: str, rng) -> bytes:
    lines = text.splitlines()
    op = int(rng.integers(9))
    values = ["0", "-1", "1", "2", "9999999999999", "-9999999999999", "1e400", "nan", "inf", "-inf", "0.5", '"x"',
              "true", "[1, 2]", "{ a = 1 }", '""', "64", "63", "3.0", '"saturate"', '"wrap"', '"shared"', "1_000"]
    keyed = [i for i, l in enumerate(lines) if "=" in l and not l.lstrip().startswith("#")]
    if op <= 2 and keyed:                         # change a value
        i = keyed[int(rng.integers(len(keyed)))]
        key = lines[i].split("=", 1)[0]
        old = lines[i].split("=", 1)[1].strip()
        if op == 0 and old.lstrip("-").replace(".", "", 1).isdigit():
            num = float(old) if "." in old else int(old)
            new = repr(type(num)(num * float(rng.choice([-1, 0, 2, 1000, 0.5])))) if isinstance(num, float) else \
                str(int(num * int(rng.choice([-1, 0, 2, 1000]))) + int(rng.choice([-1, 0, 1])))
        else:
            new = values[int(rng.integers(len(values)))]
        lines[i] = f"{key}= {new}"
    elif op == 3 and keyed:                       # delete a key
        del lines[keyed[int(rng.integers(len(keyed)))]]
    elif op == 4 and keyed:                       # duplicate a line
        i = keyed[int(rng.integers(len(keyed)))]
        lines.insert(i, lines[i])
    elif op == 5:                                 # section header damage
        heads = [i for i, l in enumerate(lines) if l.startswith("[")]
        if heads:
            i = heads[int(rng.integers(len(heads)))]
            lines[i] = rng.choice(["", "[limits]", "[datapath", "[[energy]]", "[profile.x]", "[sources]", lines[i] + "x"])
    data = "\n".join(lines).encode("utf-8")
    if op == 6:                                   # encoding damage
        i = int(rng.integers(len(data)))
        bad = [b"\xff", b"\xc3", b"\xe9", b"\x00", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\x80\x80"][int(rng.integers(7))]
        data = data[:i] + bad + data[i:]
    elif op == 7:
        data = _mutate_bytes(data, rng)
    elif op == 8:
        data = data[:int(rng.integers(len(data)))]
    return data


# ============================================================================ the worker
def _same_profile(a, b) -> bool:
    return (a.datapath, a.limits, a.energy) == (b.datapath, b.limits, b.energy)


def worker(seed: int, originals: list[dict], scratch: Path) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))      # a runaway allocation becomes MemoryError
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(1)
    from spikeport import ir
    from spikeport.compiler import quantize
    from spikeport.compiler.errors import QuantizationError
    from spikeport.hw_profiles import ProfileError, load_profile
    from spikeport.simulator import simulate
    from spikeport.hw_profiles.loader import PROFILE_DIR

    sims = {o["name"]: np.load(o["sim"]) for o in originals}
    profiles = {p: (PROFILE_DIR / f"{p}.toml").read_text() for p in PROFILES}
    base = {p: load_profile(p) for p in PROFILES}
    float_net = ir.load(next(o["sealed"] for o in originals if o["name"] == "float"))
    out = sys.stdout
    sys.stdout = sys.stderr                       # nothing else may write to the result pipe
    out.write("ready\n")                         # imports done: task timeouts start now
    out.flush()
    for line in sys.stdin:
        category, index = line.split()
        index = int(index)
        rng = np.random.default_rng([seed, CATEGORIES.index(category), index])
        result = {"i": index, "category": category}
        try:
            if category == "profile":
                name = PROFILES[int(rng.integers(len(PROFILES)))]
                path = scratch / f"p-{index}.toml"
                path.write_bytes(_mutate_toml(profiles[name], rng))
                try:
                    prof = load_profile(path)
                except ProfileError:
                    result["outcome"] = "error"
                else:
                    if _same_profile(prof, base[name]):
                        result["outcome"] = "equal"
                    else:
                        try:            # a valid profile must also quantise (or refuse) cleanly
                            q, _ = quantize(float_net, prof)
                            ir.check_limits(q, "quantised")
                            simulate(q, np.random.default_rng(1).random((2, 1, 6, 6)), TIMESTEPS)
                            result["outcome"] = "different"
                        except (QuantizationError, ProfileError, ir.IRError):
                            result["outcome"] = "different-refused"
                path.unlink()
            else:
                o = originals[int(rng.integers(len(originals)))]
                src = Path(o["legacy"] if category == "legacy" else o["sealed"])
                path = scratch / f"m-{category}-{index}.h5"
                if category == "bytes" or (category == "legacy" and rng.random() < 0.5):
                    path.write_bytes(_mutate_bytes(src.read_bytes(), rng))
                else:
                    shutil.copyfile(src, path)
                    result["edit"] = _edit_h5(path, rng)
                    if category == "h5-resealed":
                        ir.seal.seal_file(path)
                try:
                    net = ir.load(path)
                except ir.IRError as e:
                    result["outcome"] = "error"
                    if "unexpected" in str(e):
                        result["fallback"] = str(e)[-300:]
                else:
                    sim = sims[o["name"]]
                    x = sim["x"]
                    inp = net.inputs()
                    if len(inp) != 1 or tuple(inp[0].shape) != x.shape[1:]:
                        result["outcome"] = "different"
                    else:
                        y = np.asarray(simulate(net, x, TIMESTEPS).outputs)
                        result["outcome"] = "equal" if y.shape == sim["y"].shape and np.array_equal(y, sim["y"]) else "different"
                path.unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001 - every other exception is a finding
            result["outcome"] = "other"
            result["detail"] = f"{type(e).__name__}: {str(e)[:300]}"
        out.write(json.dumps(result) + "\n")
        out.flush()


# ============================================================================ the parent
class _Slot(threading.Thread):
    """One worker process; restarts it after a crash or a hang."""

    def __init__(self, tasks: queue.Queue, results: list, args, originals_file: Path, scratch: Path,
                 deadline: float = float("inf")):
        super().__init__(daemon=True)
        self.deadline = deadline
        self.tasks, self.results, self.args = tasks, results, args
        self.originals_file, self.scratch = originals_file, scratch
        self.proc = None

    def _start(self):
        """Start a worker and wait for its "ready" line: start-up (importing torch on a loaded machine can
        take minutes) never counts against a mutant's timeout."""
        for _ in range(3):
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--seed", str(self.args.seed),
                                          "--originals", str(self.originals_file), "--scratch", str(self.scratch)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT_S)
            if ready and self.proc.stdout.readline() == b"ready\n":
                return
            self._stop()
        raise RuntimeError("a fuzz worker failed to start three times")

    def _stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        self.proc = None

    def run(self):
        while True:
            try:
                if time.time() > self.deadline:
                    raise queue.Empty
                category, index = self.tasks.get_nowait()
            except queue.Empty:
                self._stop()
                return
            if self.proc is None:
                self._start()
            timeout = TASK_TIMEOUT_S.get(category, DEFAULT_TIMEOUT_S)
            self.proc.stdin.write(f"{category} {index}\n".encode())
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else b""
            if line:
                self.results.append(json.loads(line))
                if len(self.results) % 500 == 0:
                    print(f"  {len(self.results)} mutants done", file=sys.stderr, flush=True)
                continue
            if not ready:
                self.results.append({"i": index, "category": category, "outcome": "hang"})
            else:
                self.proc.wait()
                self.results.append({"i": index, "category": category, "outcome": "crash",
                                     "detail": f"worker exit {self.proc.returncode}"})
            self._stop()


def run(n_ir: int, n_profiles: int, workers: int, seed: int, legacy_share: float = 0.1,
        time_limit_s: float = float("inf")) -> dict:
    """Run the fuzz; return {category: Counter(outcome)} plus the findings. After ``time_limit_s``
    no new mutant is started (the table then covers the mutants that ran)."""
    tmp = Path(tempfile.mkdtemp(prefix="spikeport-fuzz-"))
    try:
        originals = make_originals(tmp)
        originals_file = tmp / "originals.json"
        originals_file.write_text(json.dumps(originals))
        scratch = tmp / "scratch"
        scratch.mkdir()
        tasks: queue.Queue = queue.Queue()
        n_legacy = int(round(n_ir * legacy_share))
        rest = n_ir - n_legacy
        per = {"bytes": rest // 3, "h5-edit": rest // 3, "h5-resealed": rest - 2 * (rest // 3), "legacy": n_legacy,
               "profile": n_profiles}
        order = [(c, i) for c in CATEGORIES for i in range(per[c])]
        np.random.default_rng(seed).shuffle(order)
        for t in order:
            tasks.put(t)
        results: list = []
        deadline = time.time() + time_limit_s
        slots = [_Slot(tasks, results, argparse.Namespace(seed=seed), originals_file, scratch, deadline)
                 for _ in range(workers)]
        for s in slots:
            s.start()
        for s in slots:
            s.join()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = defaultdict(Counter)
    findings = []
    for r in results:
        table[r["category"]][r["outcome"]] += 1
        if "fallback" in r:
            table[r["category"]]["fallback"] += 1
        bad = r["outcome"] in ("crash", "hang", "other") or (r["outcome"] == "different" and r["category"] in ("bytes", "h5-edit"))
        if bad or "fallback" in r:
            findings.append(r)
    return {"table": table, "findings": findings, "per": per}


def format_table(table) -> str:
    cols = ("mutants", "error", "equal", "different", "different-refused", "crash", "hang", "other")
    rows = [f"| category | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    total = Counter()
    for c in CATEGORIES:
        if c not in table:
            continue
        cnt = table[c]
        n = sum(v for k, v in cnt.items() if k != "fallback")
        total.update({k: v for k, v in cnt.items() if k != "fallback"})
        rows.append(f"| {c} | {n} | " + " | ".join(str(cnt.get(k, 0)) for k in cols[1:]) + " |")
    rows.append(f"| all | {sum(total.values())} | " + " | ".join(str(total.get(k, 0)) for k in cols[1:]) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ir", type=int, default=1000, help="IR mutants (10%% of them legacy files)")
    ap.add_argument("--profiles", type=int, default=1000, help="profile mutants")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--legacy-share", type=float, default=0.1)
    ap.add_argument("--time-limit", type=float, default=float("inf"), help="seconds after which no new mutant starts")
    ap.add_argument("--json", help="write the table and findings to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--originals", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.seed, json.loads(Path(args.originals).read_text()), Path(args.scratch))
        return
    t0 = time.time()
    res = run(args.ir, args.profiles, args.workers, args.seed, args.legacy_share, args.time_limit)
    print(format_table(res["table"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"table": res["table"], "findings": res["findings"], "planned": res["per"],
                                               "seconds": time.time() - t0, "workers": args.workers, "seed": args.seed}))
    print(f"\n{time.time() - t0:.0f} s, {args.workers} workers, seed {args.seed}")
    for r in res["findings"][:30]:
        print("finding:", json.dumps(r))
    print(f"findings: {len(res['findings'])}")


if __name__ == "__main__":
    main()
