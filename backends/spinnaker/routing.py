"""Multicast routing: trees on the machine, PACMAN routing tables per chip, compression, checks.

Targets. A sending slice must reach every core slice that holds a synapse from one of its neurons
(``compiler.reach_matrix``: dense = all target cores, identity = the overlapping slice, conv = the
slices whose receptive fields contain the slice's pixels).

Trees. Per sending slice one tree from its chip to every target chip over the machine's links, made
of shortest paths (hop counts from scipy's csgraph); among equally short next hops the one that keeps
the packet's direction is taken, so intermediate chips are straight pass-throughs that default
routing can serve. A path reaching a chip already in the tree joins it there (every chip has one
incoming link: a tree, no duplicate deliveries).

Entries. On every tree chip one entry (slice key, slice mask, route): route bits 0-5 the links E, NE,
N, W, SW, S, bit 6 + p core p. An entry is *defaultable* when the packet arrives on link a, leaves only
on link (a + 3) mod 6 and goes to no core: the router does that for unmatched packets by itself.
Tables are PACMAN ``UnCompressedMulticastRoutingTable``s of spinnmachine ``MulticastRoutingEntry``s;
compression is PACMAN's ordered-covering (``ordered_covering`` down to the usable entry count, then
``remove_default_routes``), and a table still over the limit raises :class:`SpinnakerError` naming
the chip and the count (PACMAN does not enforce the limit by itself when told not to raise).

Router semantics used by :func:`walk` (the replay and the independent check): the first entry with
``key & mask == entry key`` wins; a packet with no match that arrived on link a leaves on link
(a + 3) mod 6; a packet with no match from a local core, or sent over a link the machine lacks, is
dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from ...compiler.partition import reach_matrix
from ...ir import Network
from .errors import SpinnakerError
from .keys import KeyMap
from .machine import MachineModel
from .placement import MachinePlacement

N_LINKS = 6


@dataclass
class ChipTable:
    """A chip's table as arrays (first match wins): keys, masks, link bits, core bits (bit p = core p)."""

    chip: int
    keys: np.ndarray            # (n,) uint64
    masks: np.ndarray           # (n,) uint64
    links: np.ndarray           # (n,) int64 link bits
    cores: list[int]            # (n,) core bit sets (python ints: SpiNNaker 2 chips have > 64 cores)

    def __len__(self) -> int:
        return len(self.keys)

    def route_words(self) -> list[int]:
        return [int(l) | (c << N_LINKS) for l, c in zip(self.links, self.cores)]


@dataclass
class Routing:
    targets: dict[int, list[int]]                   # sending slice id -> target slice ids
    uncompressed: dict[int, list]                   # chip -> PACMAN MulticastRoutingEntry list (with defaultable)
    compressed: dict[int, list]                     # chip -> PACMAN entries after compression
    tables: dict[int, ChipTable]                    # chip -> arrays of the compressed table
    limit: int
    stats: dict = field(default_factory=dict)

    def entries_per_chip(self) -> dict[int, int]:
        return {c: len(t) for c, t in self.tables.items()}


def slice_targets(net: Network, placement: MachinePlacement) -> dict[int, list[int]]:
    """For every sending slice, the target core slices that hold synapses from it."""
    out: dict[int, set[int]] = {}
    for proj in net.projections():
        if proj.source not in placement.by_layer:
            continue
        tgt = placement.by_layer[proj.target]
        starts, stops = placement.layer_bounds(proj.target)
        reach = reach_matrix(net, proj, starts, stops)
        for s in placement.by_layer[proj.source]:
            hit = np.nonzero(reach[s.start:s.stop].any(axis=0))[0]
            out.setdefault(s.id, set()).update(tgt[i].id for i in hit)
    return {k: sorted(v) for k, v in out.items()}


def _distances(machine: MachineModel) -> np.ndarray:
    src, dst = np.nonzero(machine.neighbour >= 0)
    n = machine.n_chips
    graph = csr_matrix((np.ones(len(src)), (src, machine.neighbour[src, dst])), shape=(n, n))
    return shortest_path(graph, directed=True, unweighted=True)


def _tree(machine: MachineModel, dist: np.ndarray, source: int, chips: list[int]) -> dict[int, tuple[int, set[int]]]:
    """chip -> (link the packet left the previous chip by, or -1 at the source; outgoing links)."""
    tree: dict[int, tuple[int, set[int]]] = {source: (-1, set())}
    for target in sorted(chips, key=lambda c: (dist[source, c], c)):
        if not np.isfinite(dist[source, target]):
            raise SpinnakerError(f"routing: chip {machine.chip_name(target)} cannot be reached from chip "
                                 f"{machine.chip_name(source)} over the machine's links")
        c = source
        while c != target:
            came = tree[c][0]
            options = [l for l in range(N_LINKS) if machine.neighbour[c, l] >= 0
                       and dist[machine.neighbour[c, l], target] == dist[c, target] - 1]
            link = came if came in options else options[0]
            nxt = int(machine.neighbour[c, link])
            if nxt not in tree:
                tree[c][1].add(link)
                tree[nxt] = (link, set())
            c = nxt
    return tree


def build_routing(net: Network, placement: MachinePlacement, keys: KeyMap, machine: MachineModel,
                  compress: bool = True) -> Routing:
    """Trees, PACMAN tables per chip, compression and the entry limit (module docstring)."""
    from pacman.operations.router_compressors.ordered_covering_router_compressor.ordered_covering import \
        ordered_covering
    from pacman.operations.router_compressors.ordered_covering_router_compressor.utils import remove_default_routes
    from spinn_machine import MulticastRoutingEntry, RoutingEntry

    targets = slice_targets(net, placement)
    dist = _distances(machine)
    slices = placement.slices
    per_chip: dict[int, list] = {}
    for sid, tids in targets.items():
        src = slices[sid]
        by_chip: dict[int, set[int]] = {}
        for t in tids:
            by_chip.setdefault(slices[t].chip, set()).add(slices[t].core)
        tree = _tree(machine, dist, src.chip, list(by_chip))
        for chip, (came, links) in tree.items():
            cores = by_chip.get(chip, set())
            route = sum(1 << l for l in links) | sum(1 << (N_LINKS + p) for p in cores)
            defaultable = came >= 0 and not cores and links == {came}
            entry = MulticastRoutingEntry(keys.slice_key[sid], keys.mask,
                                          RoutingEntry(spinnaker_route=route, defaultable=defaultable))
            per_chip.setdefault(chip, []).append(entry)
    compressed, tables = {}, {}
    limit = machine.router_entries
    for chip, entries in per_chip.items():
        table = list(entries)
        if compress:
            table, _ = ordered_covering(table, target_length=limit, aliases={}, no_raise=True)
        table = remove_default_routes(table, None)
        if len(table) > limit:
            raise SpinnakerError(f"routing table of chip {machine.chip_name(chip)} has {len(table)} entries after "
                                 f"compression, the router holds {limit} (usable entries)")
        compressed[chip] = table
        tables[chip] = _arrays(chip, table)
    stats = {"entries_uncompressed": sum(len(e) for e in per_chip.values()),
             "defaultable": sum(e.defaultable for v in per_chip.values() for e in v),
             "entries": sum(len(t) for t in tables.values()),
             "max_entries_per_chip": max((len(t) for t in tables.values()), default=0), "limit": limit}
    return Routing(targets, per_chip, compressed, tables, limit, stats)


def _arrays(chip: int, entries: list) -> ChipTable:
    routes = [int(e.spinnaker_route) for e in entries]
    return ChipTable(chip, np.array([e.key for e in entries], dtype=np.uint64),
                     np.array([e.mask for e in entries], dtype=np.uint64),
                     np.array([r & ((1 << N_LINKS) - 1) for r in routes], dtype=np.int64),
                     [r >> N_LINKS for r in routes])


# ------------------------------------------------------------------------------ hop-by-hop walk
@dataclass
class FlatTables:
    """All chips' tables padded to one length E, for lookups of many packets at once."""

    keys: np.ndarray        # (n_chips, E) uint64
    masks: np.ndarray       # (n_chips, E) uint64
    valid: np.ndarray       # (n_chips, E) bool
    links: np.ndarray       # (n_chips, E) int64 link bits
    cores: np.ndarray       # (n_chips, E, C) core ids, -1 padded


def flatten(tables: dict[int, ChipTable], n_chips: int) -> FlatTables:
    e = max((len(t) for t in tables.values()), default=0) or 1
    core_lists = {(c, i): [p for p in range(bits.bit_length()) if bits >> p & 1]
                  for c, t in tables.items() for i, bits in enumerate(t.cores)}
    width = max((len(v) for v in core_lists.values()), default=0) or 1
    f = FlatTables(np.zeros((n_chips, e), dtype=np.uint64), np.zeros((n_chips, e), dtype=np.uint64),
                   np.zeros((n_chips, e), dtype=bool), np.zeros((n_chips, e), dtype=np.int64),
                   np.full((n_chips, e, width), -1, dtype=np.int64))
    for c, t in tables.items():
        n = len(t)
        f.keys[c, :n], f.masks[c, :n], f.valid[c, :n], f.links[c, :n] = t.keys, t.masks, True, t.links
        for i in range(n):
            ids = core_lists[(c, i)]
            f.cores[c, i, :len(ids)] = ids
    return f


@dataclass
class Walk:
    """Where packets went. Arrays are parallel per event; ``packet`` indexes the walked packets."""

    delivered_packet: np.ndarray
    delivered_chip: np.ndarray
    delivered_core: np.ndarray
    link_packet: np.ndarray         # one row per link traversal
    link_chip: np.ndarray
    link_id: np.ndarray
    router_packet: np.ndarray       # one row per router visit
    router_chip: np.ndarray
    dropped: list[tuple[int, int, str]]   # (packet, chip, reason)


def _lookup(flat: FlatTables, keys: np.ndarray, chip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First matching entry of every packet's chip table: (hit, entry index)."""
    e = flat.keys.shape[1]
    hit = np.zeros(len(keys), dtype=bool)
    first = np.zeros(len(keys), dtype=np.int64)
    step = max(1, (1 << 22) // e)
    for a in range(0, len(keys), step):
        k, c = keys[a:a + step], chip[a:a + step]
        match = ((k[:, None] & flat.masks[c]) == flat.keys[c]) & flat.valid[c]
        hit[a:a + step] = match.any(axis=1)
        first[a:a + step] = match.argmax(axis=1)
    return hit, first


def walk(machine: MachineModel, tables: dict[int, ChipTable] | FlatTables, keys: np.ndarray,
         chips: np.ndarray) -> Walk:
    """Route packets with ``keys`` sent by cores on ``chips`` hop by hop through ``tables`` (module
    docstring): every hop looks all travelling packets up at once."""
    flat = tables if isinstance(tables, FlatTables) else flatten(tables, machine.n_chips)
    keys = np.asarray(keys, dtype=np.uint64)
    pkt = np.arange(len(keys), dtype=np.int64)
    chip = np.asarray(chips, dtype=np.int64).copy()
    arrived = np.full(len(keys), -1, dtype=np.int64)
    dp, dc, dco, lp, lc, li, rp, rc = ([] for _ in range(8))
    dropped: list[tuple[int, int, str]] = []
    limit = 2 * machine.n_chips + 2
    hops = 0
    while len(pkt):
        hops += 1
        if hops > limit:
            raise SpinnakerError(f"routing loop: {len(pkt)} packets still travelling after {limit} hops "
                                 f"(e.g. key 0x{int(keys[pkt[0]]):08X} at chip {machine.chip_name(int(chip[0]))})")
        rp.append(pkt)
        rc.append(chip)
        hit, first = _lookup(flat, keys[pkt], chip)
        links = np.where(hit, flat.links[chip, first], 0)
        links = np.where(~hit & (arrived >= 0), 1 << ((arrived + 3) % N_LINKS), links)
        for q in np.nonzero(~hit & (arrived < 0))[0]:
            dropped.append((int(pkt[q]), int(chip[q]), "no table entry for a packet from a local core"))
        if hit.any():
            cm = flat.cores[chip[hit], first[hit]]
            r, j = np.nonzero(cm >= 0)
            dp.append(pkt[hit][r])
            dc.append(chip[hit][r])
            dco.append(cm[r, j])
        n_pkt, n_chip, n_arr = [], [], []
        for link in range(N_LINKS):
            go = np.nonzero((links >> link) & 1)[0]
            if not len(go):
                continue
            nxt = machine.neighbour[chip[go], link]
            for q in go[nxt < 0]:
                dropped.append((int(pkt[q]), int(chip[q]), f"link {link} does not exist"))
            go, nxt = go[nxt >= 0], nxt[nxt >= 0]
            lp.append(pkt[go])
            lc.append(chip[go])
            li.append(np.full(len(go), link, dtype=np.int64))
            n_pkt.append(pkt[go])
            n_chip.append(nxt)
            n_arr.append(np.full(len(go), (link + 3) % N_LINKS, dtype=np.int64))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
        pkt, chip, arrived = cat(n_pkt), cat(n_chip), cat(n_arr)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
    return Walk(cat(dp), cat(dc), cat(dco), cat(lp), cat(lc), cat(li), cat(rp), cat(rc), dropped)


# ------------------------------------------------------------------------------ checks
def check_tables(machine: MachineModel, placement: MachinePlacement, keys: KeyMap, routing: Routing) -> dict:
    """Independent check: every key of every sending slice, walked through the compressed tables
    (first match, default routing), reaches exactly its target cores, once each; nothing dropped."""
    slices = placement.slices
    sids = sorted(routing.targets)
    all_keys, all_chip, owner = [], [], []
    for sid in sids:
        s = slices[sid]
        all_keys.append(keys.slice_key[sid] + np.arange(s.neurons, dtype=np.uint64))
        all_chip.append(np.full(s.neurons, s.chip))
        owner.append(np.full(s.neurons, sid))
    if not sids:
        return {"keys": 0, "deliveries": 0}
    k, c, o = np.concatenate(all_keys), np.concatenate(all_chip), np.concatenate(owner)
    w = walk(machine, routing.tables, k, c)
    if w.dropped:
        p, chip, why = w.dropped[0]
        raise SpinnakerError(f"routing check: key 0x{int(k[p]):08X} (slice {int(o[p])}) dropped at chip "
                             f"{machine.chip_name(chip)}: {why}")
    n_slices = len(slices)
    max_core = max(s.core for s in slices) + 1
    core_slice = np.full((machine.n_chips, max(max_core, int(w.delivered_core.max(initial=0)) + 1)), -1, dtype=np.int64)
    for s in slices:
        core_slice[s.chip, s.core] = s.id
    got = core_slice[w.delivered_chip, w.delivered_core]
    if (got < 0).any():
        q = int(np.argmax(got < 0))
        p = int(w.delivered_packet[q])
        raise SpinnakerError(f"routing check: key 0x{int(k[p]):08X} delivered to core {int(w.delivered_core[q])} of chip "
                             f"{machine.chip_name(int(w.delivered_chip[q]))}, which holds no slice")
    code = w.delivered_packet * n_slices + got
    uniq, counts = np.unique(code, return_counts=True)
    if (counts > 1).any():
        c = int(uniq[np.argmax(counts > 1)])
        raise SpinnakerError(f"routing check: key 0x{int(k[c // n_slices]):08X} delivered {counts.max()} times to slice "
                             f"{c % n_slices}")
    # expected (packet, target slice) pairs from the slice targets
    tgt = {sid: np.asarray(routing.targets[sid], dtype=np.int64) for sid in sids}
    want = _expected_pairs(sids, slices, tgt, n_slices)
    if len(want) != len(uniq) or not np.array_equal(want, uniq):
        extra = np.setdiff1d(uniq, want)
        missing = np.setdiff1d(want, uniq)
        c = int(extra[0] if len(extra) else missing[0])
        p = c // n_slices
        raise SpinnakerError(f"routing check: key 0x{int(k[p]):08X} of slice {int(o[p])} "
                             f"{'reaches unexpected' if len(extra) else 'misses'} target slice {c % n_slices} "
                             f"({len(extra)} extra, {len(missing)} missing deliveries in all)")
    return {"keys": int(len(k)), "deliveries": int(len(uniq))}


def _expected_pairs(sids, slices, tgt, n_slices) -> np.ndarray:
    """Sorted codes packet * n_slices + target slice of every delivery the targets require."""
    parts, first = [], 0
    for sid in sids:
        n = slices[sid].neurons
        parts.append((np.arange(first, first + n, dtype=np.int64)[:, None] * n_slices + tgt[sid][None, :]).reshape(-1))
        first += n
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def pacman_compare(routing: Routing, machine: MachineModel) -> int:
    """PACMAN's own check (``compare_tables``) of every compressed table against its uncompressed one.

    PACMAN decodes at most 18 cores from a route word; routes are therefore relabelled to small codes
    (same code in both tables for the same route) so the comparison also covers SpiNNaker 2's 152 PEs.
    Returns the number of tables compared; raises PACMAN's PacmanRoutingException on a difference.
    """
    from pacman.model.routing_tables import CompressedMulticastRoutingTable, UnCompressedMulticastRoutingTable
    from pacman.operations.router_compressors.routing_compression_checker import compare_tables
    from spinn_machine import MulticastRoutingEntry, RoutingEntry
    n = 0
    for chip, original in routing.uncompressed.items():
        codes: dict[int, int] = {}

        def relabel(e):
            r = int(e.spinnaker_route)
            links, cores = r & ((1 << N_LINKS) - 1), r >> N_LINKS
            code = codes.setdefault(cores, len(codes) + 1) if cores else 0
            if code >= 1 << 18:
                raise SpinnakerError(f"pacman_compare: chip {machine.chip_name(chip)} has more than 2^18 distinct routes")
            return MulticastRoutingEntry(e.key, e.mask, RoutingEntry(
                spinnaker_route=links | (code << N_LINKS), defaultable=e.defaultable))
        x, y = (int(v) for v in machine.xy[chip])
        a, b = UnCompressedMulticastRoutingTable(x, y), CompressedMulticastRoutingTable(x, y)
        for e in original:
            a.add_multicast_routing_entry(relabel(e))
        for e in routing.compressed[chip]:
            b.add_multicast_routing_entry(relabel(e))
        compare_tables(a, b)
        n += 1
    return n
