"""Write a SpiNNaker description to a folder (atomically: a temporary folder renamed into place).

Folder contents (docs/spinnaker.md):
  description.json   profile, machine, key layout, every core slice (layer, neurons, chip, core, key,
                     mask, payload), per-chip table sizes, checks, per-layer summary
  tables.bin         compressed routing tables, little-endian: b"SPKRT1\\0\\0", u32 chips, u32 route
                     words; per chip u16 x, u16 y, u32 n, then n x (u32 key, u32 mask, route words x u32)
                     with route bit l = link l (E, NE, N, W, SW, S) and bit 6 + p = core p
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path


from .description import Description
from .errors import SpinnakerError
from .routing import N_LINKS, pacman_compare

MAGIC = b"SPKRT1\0\0"


def route_words(desc: Description) -> int:
    bits = N_LINKS + max(max((c for c in cores), default=0) + 1 for cores in desc.machine.cores)
    return -(-bits // 32)


def tables_bytes(desc: Description) -> bytes:
    words = route_words(desc)
    out = [MAGIC, struct.pack("<II", len(desc.routing.tables), words)]
    for chip in sorted(desc.routing.tables):
        t = desc.routing.tables[chip]
        x, y = (int(v) for v in desc.machine.xy[chip])
        out.append(struct.pack("<HHI", x, y, len(t)))
        for key, mask, route in zip(t.keys, t.masks, t.route_words()):
            out.append(struct.pack("<II", int(key), int(mask)))
            out.append(b"".join(struct.pack("<I", (route >> (32 * w)) & 0xFFFFFFFF) for w in range(words)))
    return b"".join(out)


def read_tables(path) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """Parse tables.bin: (x, y) -> [(key, mask, route)] in table order."""
    data = Path(path).read_bytes()
    if data[:8] != MAGIC:
        raise SpinnakerError(f"{path}: not a spikeport SpiNNaker table file")
    n, words = struct.unpack_from("<II", data, 8)
    pos, out = 16, {}
    for _ in range(n):
        x, y, count = struct.unpack_from("<HHI", data, pos)
        pos += 8
        rows = []
        for _ in range(count):
            key, mask = struct.unpack_from("<II", data, pos)
            pos += 8
            route = 0
            for w in range(words):
                route |= struct.unpack_from("<I", data, pos)[0] << (32 * w)
                pos += 4
            rows.append((key, mask, route))
        out[(x, y)] = rows
    return out


def summary(desc: Description) -> list[dict]:
    """Per-layer summary: cores, keys, routing entries before compression, packets per step (at most
    one per sending neuron) and router visits per step at that bound."""
    visits_per_slice: dict[int, int] = {}
    for entries in desc.routing.uncompressed.values():
        for e in entries:
            visits_per_slice[e.key] = visits_per_slice.get(e.key, 0) + 1
    rows = desc.layer_summary()
    for r in rows:
        src = desc.keys.sources.get(r["layer"])
        r["max_packets_per_step"] = r["keys"]
        r["max_router_visits_per_step"] = int(sum(
            s.neurons * visits_per_slice.get(desc.keys.slice_key[s.id], 0)
            for s in desc.placement.by_layer[r["layer"]])) if src else 0
        r["wire_bits_per_packet"] = (72 if src.payload else 40) if src else None
    return rows


def description_json(desc: Description) -> dict:
    m = desc.machine
    slices = []
    for s in desc.placement.slices:
        key = desc.keys.slice_key.get(s.id)
        src = desc.keys.sources.get(s.layer)
        slices.append({"slice": s.id, "layer": s.layer, "start": s.start, "stop": s.stop,
                       "chip": [int(v) for v in m.xy[s.chip]], "core": s.core,
                       "key": None if key is None else f"0x{key:08X}",
                       "mask": None if key is None else f"0x{desc.keys.mask:08X}",
                       "payload": None if src is None else src.payload,
                       "targets": desc.routing.targets.get(s.id, [])})
    tables = [{"chip": [int(v) for v in m.xy[c]], "entries": len(t),
               "entries_uncompressed": len(desc.routing.uncompressed[c])} for c, t in sorted(desc.routing.tables.items())]
    return {
        "format": "spikeport-spinnaker-1",
        "profile": desc.profile.name,
        "datapath_profile": desc.net.datapath.profile,
        "machine": m.to_json(),
        "packet": {"wire_bits": {"no_payload": 40, "payload": 72},
                   "control_byte": "bit0 odd parity, bit1 payload, bits3:2 time phase (step mod 4), bits5:4 "
                                   "emergency routing 00, bits7:6 type 00 multicast",
                   "payload_encoding": "32-bit two's complement of the event value (negative v as 2^32 + v; "
                                       "multi-level events carry the level)"},
        "keys": desc.keys.to_json(),
        "slices": slices,
        "routing": {**desc.routing.stats, "tables": tables,
                    "route_bits": "bit l = link l (E, NE, N, W, SW, S), bit 6 + p = core p",
                    "compressor": "PACMAN ordered_covering + remove_default_routes"},
        "checks": desc.check,
        "layers": summary(desc),
    }


def export(desc: Description, out) -> Path:
    """Write ``desc`` to folder ``out`` atomically; returns the folder. Also runs PACMAN's table
    comparison (``compare_tables``) on every chip and records it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpinnakerError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "description.json").is_file():
        raise SpinnakerError(f"--out {out}: folder is not empty and holds no SpiNNaker description; refusing to replace it")
    desc.check["pacman_compare_tables"] = pacman_compare(desc.routing, desc.machine)
    doc = json.dumps(description_json(desc), indent=1)
    blob = tables_bytes(desc)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        (tmp / "description.json").write_text(doc)
        (tmp / "tables.bin").write_bytes(blob)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


__all__ = ["export", "read_tables", "summary", "description_json", "tables_bytes"]
