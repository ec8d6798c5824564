"""SpiNNaker multicast packets on the wire and EIEIO trace messages.

Wire packet (hardware.md section 4): 40 bits without payload, 72 with. Bits [7:0] control byte,
[39:8] routing key, [71:40] payload. Control byte: bit 0 parity (the whole packet has an odd number
of ones), bit 1 payload present, bits 3:2 time phase (here: step mod 4), bits 5:4 emergency routing
(00), bits 7:6 type (00 multicast). Here a packet is a uint64 ``head`` (control | key << 8) plus a
uint32 ``payload`` (0 when absent).

EIEIO data messages (host <-> board event packets, spinnman's classes): a trace file is a sequence of
records ``<u32 sample, u32 step, u16 n_bytes>`` each followed by one EIEIO data message (header from
spinnman's ``EIEIODataHeader``: type KEY_32_BIT or KEY_PAYLOAD_32_BIT, count; then little-endian
32-bit keys, or key/payload pairs). A message holds at most 63 keys or 31 key/payload pairs (256-byte
UDP limit).
"""
from __future__ import annotations

import struct

import numpy as np

from .errors import SpinnakerError

TYPE_MULTICAST = 0b00
RECORD = struct.Struct("<IIH")
MAX_EIEIO_BYTES = 256


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    n = np.zeros(x.shape, dtype=np.int64)
    for shift in range(0, 64, 8):
        n += _BYTE_POP[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64)]
    return n


_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def encode(keys: np.ndarray, payloads: np.ndarray | None, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(head, payload) words of multicast packets; payloads None = 40-bit packets."""
    keys = np.asarray(keys, dtype=np.uint64)
    has = payloads is not None
    pay = np.zeros(len(keys), dtype=np.uint64) if not has else np.asarray(payloads, dtype=np.uint64)
    control = np.uint64((TYPE_MULTICAST << 6) | ((step & 3) << 2) | (int(has) << 1))
    ones = _popcount(keys) + _popcount(pay) + _popcount(np.array([control]))[0]
    parity = (ones % 2 == 0).astype(np.uint64)                 # make the total odd
    head = (keys << np.uint64(8)) | control | parity
    return head, pay.astype(np.uint32)


def decode(head: np.ndarray, payload: np.ndarray, expect_payload: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check parity, type and payload flag; return (keys uint64, payload values int64 two's complement)."""
    head = np.asarray(head, dtype=np.uint64)
    pay = np.asarray(payload, dtype=np.uint64)
    control = (head & np.uint64(0xFF)).astype(np.int64)
    keys = (head >> np.uint64(8)) & np.uint64(0xFFFFFFFF)
    flag = (control >> 1) & 1
    ones = _popcount(head & np.uint64(0xFFFFFFFFFF)) + np.where(flag == 1, _popcount(pay), 0)
    bad = (ones % 2 == 0) | ((control >> 6) != TYPE_MULTICAST) | (flag != int(expect_payload))
    if bad.any():
        i = int(np.argmax(bad))
        raise SpinnakerError(f"{where}: packet with key 0x{int(keys[i]):08X} fails its check (control byte "
                             f"0x{int(control[i]):02X}: parity, multicast type, payload flag {bool(expect_payload)})")
    values = pay.astype(np.int64)
    values = np.where(values >= 1 << 31, values - (1 << 32), values)
    return keys, values


def wire_bits(payload: bool) -> int:
    return 72 if payload else 40


# ------------------------------------------------------------------------------ EIEIO
def eieio_messages(keys: np.ndarray, payloads: np.ndarray | None) -> list[bytes]:
    """EIEIO data messages (spinnman header) carrying 32-bit keys, with 32-bit payloads where given."""
    from spinnman.messages.eieio import EIEIOType
    from spinnman.messages.eieio.data_messages import EIEIODataHeader
    kind = EIEIOType.KEY_32_BIT if payloads is None else EIEIOType.KEY_PAYLOAD_32_BIT
    per = 4 if payloads is None else 8
    header_bytes = EIEIODataHeader.get_header_size(kind)
    cap = (MAX_EIEIO_BYTES - header_bytes) // per
    keys = np.asarray(keys, dtype="<u4")
    if payloads is None:
        body = keys
    else:
        body = np.stack([keys, np.asarray(payloads, dtype=np.int64).astype(np.uint32).astype("<u4")], axis=1).reshape(-1)
    words = per // 4
    out = []
    for a in range(0, len(keys), cap):
        n = min(cap, len(keys) - a)
        out.append(EIEIODataHeader(kind, count=n).bytestring + body[a * words:(a + n) * words].tobytes())
    return out


class TraceWriter:
    """Writes (sample, step, EIEIO message) records to an open binary file."""

    def __init__(self, fh):
        self.fh = fh
        self.messages = 0

    def write(self, samples: np.ndarray, step: int, keys: np.ndarray, payloads: np.ndarray | None) -> None:
        order = np.argsort(samples, kind="stable")
        samples, keys = samples[order], keys[order]
        payloads = None if payloads is None else payloads[order]
        cuts = np.nonzero(np.diff(samples))[0] + 1
        for part in np.split(np.arange(len(samples)), cuts):
            if not len(part):
                continue
            for msg in eieio_messages(keys[part], None if payloads is None else payloads[part]):
                self.fh.write(RECORD.pack(int(samples[part[0]]), int(step), len(msg)) + msg)
                self.messages += 1


def read_trace(path) -> list[tuple[int, int, list[int], list[int] | None]]:
    """Parse a trace with spinnman's ``read_eieio_data_message``: (sample, step, keys, payloads)."""
    from spinnman.messages.eieio import read_eieio_data_message
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        sample, step, n = RECORD.unpack_from(data, pos)
        pos += RECORD.size
        msg = read_eieio_data_message(data[pos:pos + n], 0)
        pos += n
        keys, pays = [], []
        while msg.is_next_element:
            e = msg.next_element
            keys.append(int(e.key))
            if hasattr(e, "payload"):
                pays.append(int(e.payload))
        out.append((sample, step, keys, pays if pays else None))
    return out
