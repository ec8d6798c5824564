"""The SpiNNaker machine the description targets, built with spinnmachine.

``make_machine(spec, profile)`` returns a :class:`MachineModel`: spinnmachine's ``Machine`` plus
numpy views of what routing and the replay need (chip coordinates, the neighbour over each of the
six links, the application cores of every chip).

Specs
  ``48-chip`` (also ``board``, ``spinn-5``): one 48-chip board from spinnmachine's
  ``virtual_machine(8, 8)`` (version 5 on spinnaker1, version 248 on spinnaker2): the real board
  outline with its missing corner chips, no wrap-around.
  ``WxH`` (e.g. ``1x1``, ``2x2``, ``4x3``): a W x H torus (spinnmachine ``FullWrapMachine`` with
  spinnmachine ``Chip``/``Router``/``Link`` objects; a link whose far end is the chip itself, as on a
  1-wide axis, is left out).

Global state: spinnmachine's ``virtual_machine`` reads the board version from spinn_utilities'
configuration (``[Machine] version``) through ``MachineDataView``. :func:`_configure` resets that
configuration to spinnmachine's defaults, sets the version and calls ``MachineDataWriter.mock()``
each time a machine is built; nothing else of spinnmachine's or PACMAN's global state is used
(PACMAN's compressor and checker are called as plain functions on lists of entries).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from .errors import SpinnakerError

LINK_NAMES = ("E", "NE", "N", "W", "SW", "S")    # spinnmachine link ids 0..5
BOARD_SPECS = ("48-chip", "board", "spinn-5")
_VERSION = {"spinnaker1": 5, "spinnaker2": 248}


@dataclass
class MachineModel:
    """A machine as arrays. ``neighbour[c, l]``: index of the chip over link l of chip c, or -1."""

    spec: str
    machine: object                 # spinn_machine.Machine
    xy: np.ndarray                  # (n_chips, 2) chip coordinates, in placement order
    neighbour: np.ndarray           # (n_chips, 6) int64
    cores: list[list[int]]          # application core ids per chip (what placement may use)
    router_entries: int             # usable multicast entries per router (profile)
    wrap: str

    @property
    def n_chips(self) -> int:
        return len(self.xy)

    def index(self, x: int, y: int) -> int:
        hit = np.nonzero((self.xy[:, 0] == x) & (self.xy[:, 1] == y))[0]
        return int(hit[0])

    def chip_name(self, c: int) -> str:
        return f"({int(self.xy[c, 0])}, {int(self.xy[c, 1])})"

    def to_json(self) -> dict:
        return {"spec": self.spec, "chips": self.n_chips, "wrap": self.wrap,
                "width": int(self.machine.width), "height": int(self.machine.height),
                "router_entries_usable": self.router_entries,
                "application_cores_per_chip": max((len(c) for c in self.cores), default=0),
                "chip_xy": self.xy.tolist(), "links": list(LINK_NAMES)}


def _configure(version: int) -> None:
    """Reset spinn_utilities' configuration to spinnmachine's defaults and set the board version."""
    logging.getLogger("spinn_machine").setLevel(logging.ERROR)
    logging.getLogger("spinn_utilities").setLevel(logging.ERROR)
    from spinn_machine.config_setup import add_spinn_machine_cfg
    from spinn_machine.data.machine_data_writer import MachineDataWriter
    from spinn_utilities.config_holder import clear_cfg_files, set_config
    clear_cfg_files(True)
    add_spinn_machine_cfg()
    set_config("Machine", "version", str(version))
    MachineDataWriter.mock()      # mock(): no report folders on disk (setup() makes ./reports)


def _torus(width: int, height: int, n_cores: int, n_entries: int, sdram: int):
    from spinn_machine import Chip, Link, Router
    from spinn_machine.full_wrap_machine import FullWrapMachine
    core_map = {(x, y): n_cores for x in range(width) for y in range(height)}
    m = FullWrapMachine(width, height, core_map, "spikeport torus")
    for x in range(width):
        for y in range(height):
            links = []
            for link in range(6):
                dx, dy = m.xy_over_link(x, y, link)
                if (dx, dy) != (x, y):
                    links.append(Link(source_x=x, source_y=y, source_link_id=link, destination_x=dx, destination_y=dy))
            chip = Chip(x, y, [0], range(1, n_cores), Router(links, n_entries), sdram, 0, 0,
                        "127.0.0.1" if (x, y) == (0, 0) else None)
            m.add_chip(chip)
    return m


def parse_spec(spec: str) -> tuple[int, int] | None:
    """(W, H) of a ``WxH`` spec, None for a board spec; SpinnakerError for anything else."""
    s = str(spec).strip().lower()
    if s in BOARD_SPECS:
        return None
    m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", s)
    if not m:
        raise SpinnakerError(f"--machine {spec!r}: unknown machine; use one of {', '.join(BOARD_SPECS)} or WxH chips "
                             "(e.g. 1x1, 2x2, 8x6)")
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= 256 and 1 <= h <= 256):
        raise SpinnakerError(f"--machine {spec!r}: width and height must be in 1..256 chips, got {w}x{h}")
    return w, h


def make_machine(spec: str, profile) -> MachineModel:
    """Build the machine ``spec`` for a SpiNNaker ``profile`` (hw_profiles.Profile)."""
    if profile.kind != "spinnaker":
        raise SpinnakerError(f"profile {profile.name!r} is a {profile.kind!r} profile, not a SpiNNaker one")
    version = _VERSION.get(profile.name, 248 if profile.limits.cores_per_chip > 17 else 5)
    lim = profile.limits
    entries = lim.router_entries_usable or lim.router_entries
    if entries is None:
        raise SpinnakerError(f"profile {profile.name!r}: [limits] router_entries is not set")
    size = parse_spec(spec)
    _configure(version)
    if size is None:
        from spinn_machine.virtual_machine import virtual_machine
        machine = virtual_machine(8, 8)
    else:
        from spinn_machine.data import MachineDataView
        ver = MachineDataView.get_machine_version()
        machine = _torus(size[0], size[1], ver.max_cores_per_chip, ver.n_router_entries, ver.max_sdram_per_chip)
    xys = sorted(machine.chip_coordinates, key=lambda p: (p[0] + p[1], p[1], p[0]))   # near (0, 0) first
    index = {xy: i for i, xy in enumerate(xys)}
    neighbour = np.full((len(xys), 6), -1, dtype=np.int64)
    cores = []
    for i, (x, y) in enumerate(xys):
        chip = machine[x, y]
        for link in chip.router.links:
            neighbour[i, link.source_link_id] = index[(link.destination_x, link.destination_y)]
        cores.append(sorted(chip.placable_processors_ids)[:lim.cores_per_chip])
    return MachineModel(str(spec), machine, np.array(xys, dtype=np.int64).reshape(-1, 2), neighbour, cores,
                        int(entries), str(machine.wrap))
