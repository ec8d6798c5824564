"""Layer-major schedule: every population runs a chunk of steps before the next one starts.

The step-major loop (``BatchRun.run``) visits every population once per step, so each projection
is one small GEMM per step (a GEMV at batch 1) plus a dozen small torch calls. The IR's graphs are
acyclic (``Network.validate``) and every projection's delay is >= 0, so a population's input at
step t only needs its sources' emissions at steps <= t. Visiting the populations in topological
order, each over a chunk of C steps [t0, t0 + C), therefore sees exactly the inputs the step-major
loop sees:

    input_p(t) = sum over projections (src -> p, delay d) with src emitting at t - d of W e_src(t - d)

and every source's emissions for [t0 - d, t0 + C - d) are known when p's turn comes (kept in a
buffer of the chunk plus a tail for delays). Chunks are skewed per population: p's k-th chunk is
[s_p + kC, s_p + (k+1)C) with s_p = min(t_start_p, min over its projections of s_src + d) (0 for
inputs and always-active models), so a source has always run through the steps its targets read
(s_p <= s_src + d), and a population whose window starts s_p steps in (one step of delay per layer
on Loihi) runs its whole window in one chunk when C >= T instead of two partial ones; a source keeps
``tail = max over its projections of s_src + d - s_target`` steps of the previous chunk (0 in a
pure feed-forward chain). Each projection is then one GEMM / conv over
the (steps x batch) rows of a contiguous run of emitting steps, and the neurons step through the
chunk. Each kernel receives the same sequence of ``step`` calls with the same currents (None where
no projection delivered, as in the step-major loop), so spikes, states and every counter are
identical; the quantised sums are exact integers, so their grouping into one GEMM changes no bit.

Used for quantised networks when nothing observes the step order across populations: not for
runners that override the current gathering (the SpiNNaker replay) or staged C3 kernels (their
``receive`` hook), and only when a chunk of at least two steps fits ``CHUNK_BYTES``. Float networks
keep the step-major loop in float64 (a GEMM over more rows may round differently); in float32
(``simulate(dtype="float32")``, already approximate) they run layer-major too.
"""
from __future__ import annotations

import math

import torch

from ..ir.nodes import Input, Population, Projection
from .emission import Emission

CHUNK_BYTES = 64 * 2 ** 20       # emission buffers and currents of one chunk, all populations together
                                 # (kept small: each buffer is touched once per run, and fresh pages cost)
MAX_CHUNK = 256                  # steps per chunk (longer gains nothing: the per-step loop dominates)
MAX_ROWS = 1024                  # steps x batch per GEMM: past ~1024 rows a chunk's operands and sums leave
                                 # the cache, and the GEMM runs up to 1.35x slower per row (2 threads, 784x512)
SCHEDULES = ("auto", "step", "layer")


def skews(net, pops) -> tuple[dict[str, int], dict[str, int]]:
    """(first step of each population's chunk 0 ``s_p``, steps each source keeps of its previous chunk)."""
    skew = {i.name: 0 for i in net.inputs()}
    for pop in pops:
        own = 0 if getattr(type(pop.neuron), "always_active", False) else int(pop.t_start)
        skew[pop.name] = min([own] + [skew[q.source] + int(q.delay) for q in net.incoming(pop.name)])
    tail = {}
    for pop in pops:
        out = net.outgoing(pop.name)
        if out:
            tail[pop.name] = max(skew[pop.name] + int(q.delay) - skew[q.target] for q in out)
    return skew, tail


def chunk_steps(run) -> int:
    """Steps per chunk for this batch under ``CHUNK_BYTES`` (0: keep the step-major loop).

    Counted: each source's emission buffer (chunk + tail rows; float32 for float-state kernels,
    else up to 8 bytes), the float32 GEMM outputs (shared by populations of the same size), the
    summed currents and float32 copies of spike input. No more steps than the longest window
    (a chunk beyond it only adds empty rows)."""
    plan, net = run.plan, run.plan.net
    if any(hasattr(k, "receive") for k in run.kernels.values()):
        return 0
    if not plan.quantized and plan.float_dtype == torch.float64:   # float64: bit-stable, step by step
        return 0
    if plan.schedule == "step":
        return 0
    _, tail = skews(net, plan.pops)
    B = run.batch
    fixed = per = 0
    shared: dict = {}
    for pop in plan.pops:
        n = pop.size
        if pop.name in tail:
            es = 4 if pop.name in plan.float_state or plan.float_dtype == torch.float32 and not plan.quantized else 8
            fixed += tail[pop.name] * B * n * es
            per += B * n * es
        entries = plan.incoming[pop.name]
        for i, (pk, src, _) in enumerate(entries):
            shared[("current", i, n)] = 4 * n
            if isinstance(net[src], Input) and net[src].coding == "spikes":
                per += 4 * B * math.prod(net[src].shape)
        if len(entries) > 1:
            shared[("total", n)] = 8 * n
    per += B * sum(shared.values())
    longest = max((plan.steps if getattr(type(p.neuron), "always_active", False) else plan.timesteps)
                  for p in plan.pops) if plan.pops else plan.steps
    c = min(plan.steps, longest, MAX_CHUNK, max(2, MAX_ROWS // B), (CHUNK_BYTES - fixed) // max(per, 1))
    if plan.schedule == "layer":
        return max(c, 1)
    return c if c >= 2 else 0


class _Source:
    """One population's emissions over its chunk and the last ``tail`` steps before it (for delays).

    In round k row ``r`` holds step ``first + r`` with ``first = skew + k * chunk - tail``;
    ``emitted`` says which rows hold one.
    """

    def __init__(self, tail: int, chunk: int, plan, name: str, skew: int):
        self.tail, self.chunk, self.skew = tail, chunk, skew
        self.plan, self.name = plan, name
        self.buf: torch.Tensor | None = None
        self.emitted = [False] * (tail + chunk)
        self.first = skew - tail

    def shift(self) -> None:
        """Start the next chunk: the last ``tail`` rows of this one move to the front."""
        t, c = self.tail, self.chunk
        if t and self.buf is not None:
            self.buf[:t] = self.buf[c:c + t].clone()
        self.emitted = self.emitted[c:c + t] + [False] * c if t else [False] * c
        self.first += c

    def _alloc(self, dtype, batch: int, n: int) -> torch.Tensor:
        return self.plan.buffer(("emitted", self.name), (self.tail + self.chunk, batch, n), dtype)

    def put(self, row: int, value: torch.Tensor | None, batch: int, n: int) -> None:
        if value is None:
            self.emitted[row] = False
            return
        if self.buf is None:            # rows are read only where ``emitted`` says they were written
            self.buf = self._alloc(value.dtype, batch, n)
        elif value.dtype != self.buf.dtype:
            self.buf = self.buf.to(torch.promote_types(self.buf.dtype, value.dtype))
        dst = self.buf[row]
        if value.data_ptr() != dst.data_ptr():
            dst.copy_(value.reshape(dst.shape))
        self.emitted[row] = True

    def out_row(self, row: int, dtype: torch.dtype, batch: int, n: int, device) -> torch.Tensor | None:
        """The buffer row a kernel may write its next emission into (None: buffer not of that dtype yet)."""
        if self.buf is None:
            self.buf = self._alloc(dtype, batch, n)
        return self.buf[row] if self.buf.dtype == dtype else None


def run_layer_major(run, chunk: int) -> None:
    plan, net = run.plan, run.plan.net
    T, B = plan.timesteps, run.batch
    pops = plan.pops
    always = {p.name for p in pops if getattr(type(p.neuron), "always_active", False)}
    if not plan.out_delays:
        skew, tail = skews(net, pops)
        plan.out_delays.update(skew=skew, tail=tail)
    skew, tail = plan.out_delays["skew"], plan.out_delays["tail"]
    sources = {name: _Source(t, chunk, plan, name, skew[name]) for name, t in tail.items()}
    rounds = max((-(-(plan.steps - skew[p.name]) // chunk) for p in pops), default=0)
    for k in range(rounds):
        if k:
            for s in sources.values():
                s.shift()
        for pop in pops:
            s = skew[pop.name]
            t0, t1 = (0 if k == 0 else s + k * chunk), min(plan.steps, s + (k + 1) * chunk)
            if t0 < t1:
                _run_population(run, pop, t0, t1, chunk, sources, pop.name in always, T, B)


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """Maximal [a, b) runs of True in flags."""
    out, a = [], None
    for i, f in enumerate(flags + [False]):
        if f and a is None:
            a = i
        elif not f and a is not None:
            out.append((a, i))
            a = None
    return out


def _source_runs(run, src: str, s0: int, s1: int, sources: dict):
    """The emitting steps of ``src`` in [s0, s1) as runs (a, b, value): value is a (b - a, B, n)
    tensor, or an Emission repeated at every step of the run (C1 analog input)."""
    node = run.plan.net[src]
    T = run.plan.timesteps
    if isinstance(node, Input):
        if node.coding == "analog":
            a, b = max(s0, 0), min(s1, T)
            return [(a, b, run.constant[src])] if a < b else []
        x = run.inputs[src]
        if node.coding == "once":
            return [(0, 1, x.unsqueeze(0))] if s0 <= 0 < s1 else []
        a, b = max(s0, 0), min(s1, T)
        return [(a, b, x[a:b])] if a < b else []
    s = sources[src]
    base = -s.first                                       # row of step s is base + s
    lo, hi = max(base + s0, 0), base + s1                 # (steps before the buffer emitted nothing)
    if lo >= hi:
        return []
    return [(a - base, b - base, s.buf[a:b]) for a, b in
            ((lo + ra, lo + rb) for ra, rb in _runs(s.emitted[lo:hi]))]


def _gather_chunk(run, pop, a: int, b: int, sources: dict, chunk: int, bound: bool):
    """Currents of steps [a, b) for ``pop``: (per-step current or None list, max |u| over them
    when ``bound``, else None)."""
    B = run.batch
    plan = run.plan
    n = run.kernels[pop.name].n
    parts = []                                            # (t_a, t_b, tensor (t_b - t_a, B, n) or (B, n) constant)
    for i, (pk, src, delay) in enumerate(plan.incoming[pop.name]):
        buf = None
        if pk.u_shift is not None:                        # float32 u: the GEMM writes into a kept buffer
            buf = plan.buffer(("current", i, n), (chunk * B, n), torch.float32)   # (shared by same-size targets)
        for sa, sb, val in _source_runs(run, src, a - delay, b - delay, sources):
            if isinstance(val, Emission):
                parts.append((sa + delay, sb + delay, pk(val), True))
                if pk.acc_bits:                           # the memoised sum wraps at every step it is delivered
                    run.acc_wrap[pop.name][sa + delay:sb + delay] += pk.last_wrap
                continue
            em = None
            if isinstance(plan.net[src], Input) and pk.path == "float32" and val.dtype != torch.float32:
                conv = plan.buffer(("input", src, pk.proj.name), (chunk * B, val.shape[-1]), torch.float32)
                rows = conv[:(sb - sa) * B]              # checked integer levels: exact in float32
                if pk.events is not None and pk.u_shift is not None:   # converted only if summed densely
                    em = Emission(val.reshape((sb - sa) * B, -1), into={torch.float32: rows})
                else:
                    rows.view(val.shape).copy_(val)
            else:
                rows = val.reshape((sb - sa) * B, -1)
            at = (sa + delay - a) * B                     # runs are disjoint: each has its own rows
            out = pk(em if em is not None else Emission(rows), None if buf is None else buf[at:at + (sb - sa) * B])
            if pk.acc_bits:
                wraps = pk.last_wrap_rows.reshape(sb - sa, B).sum(1)
                run.acc_wrap[pop.name][sa + delay:sb + delay] += wraps
            parts.append((sa + delay, sb + delay, out.reshape(sb - sa, B, n), False))
    steps = b - a
    if not parts:
        return [None] * steps, [0.0] * steps
    covered = [0] * steps
    for ta, tb, _, _ in parts:
        for t in range(ta, tb):
            covered[t - a] += 1
    kernel = run.kernels[pop.name]
    if len(parts) == 1:
        ta, tb, val, const = parts[0]
        hints = None
        if bound:                                         # the input rules once per chunk (chunk_rules)
            lo, hi = _min_max(val if not const else val.unsqueeze(0))
            val, m = kernel.chunk_rules(val, lo, hi, sum(covered) if const else 1)
            hints = [0.0 if not covered[i] else (m[0] if const else m[a + i - ta]) for i in range(steps)]
        return [None if not covered[i] else (val if const else val[a + i - ta]) for i in range(steps)], hints
    dtype = parts[0][2].dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p[2].dtype)
    total = plan.buffer(("total", n, dtype), (chunk, B, n), dtype)[:steps]
    total.zero_()
    for ta, tb, val, const in parts:
        seg = total[ta - a:tb - a]
        seg += val if not const else val.unsqueeze(0)
    hints = None
    if bound:
        total, hints = kernel.chunk_rules(total, *_min_max(total))
    return [total[i] if covered[i] else None for i in range(steps)], hints


def _min_max(t: torch.Tensor) -> tuple[list, list]:
    """min and max of a (steps, B, n) current per step: one pass and one host sync for the chunk."""
    if not t.numel():
        return [0.0] * t.shape[0], [0.0] * t.shape[0]
    flat = t.reshape(t.shape[0], -1)          # (amin and amax along a dim: ~5x faster than aminmax(dim=))
    return flat.amin(dim=1).tolist(), flat.amax(dim=1).tolist()


def _run_population(run, pop, t0: int, t1: int, chunk: int, sources: dict, always: bool, T: int, B: int) -> None:
    name = pop.name
    kernel = run.kernels[name]
    n = kernel.n
    a, b = (t0, t1) if always else (max(t0, pop.t_start), min(t1, pop.t_start + T))
    src = sources.get(name)
    voltages = run.voltages[name] if run.voltages is not None else None
    if a >= b:
        if voltages is not None:                          # frozen outside the active window
            voltages.extend(kernel.v.clone() for _ in range(t0, t1))
        return
    float_mode = getattr(kernel, "float_mode", False)
    currents, hints = _gather_chunk(run, pop, a, b, sources, chunk, float_mode)
    direct = float_mode and src is not None and getattr(kernel, "writes_out", False)
    records = run.records[name] if run.records is not None and name in run.records else None
    for t in range(t0, t1):
        if a <= t < b:
            row = t - src.first if src is not None else 0
            if direct:
                kernel.out = src.out_row(row, torch.float32, B, n, run.plan.device)
            if float_mode:                                # this step's max |u|, measured for the chunk
                kernel.u_hint = hints[t - a]
                kernel.u_ready = True                     # (its int16 count and current rule are done)
            spikes = kernel.step(currents[t - a])
            if spikes is not None and records is not None:
                records[:, t] = spikes
            if src is not None:
                src.put(row, None if spikes is None else kernel.value(spikes), B, n)
        if voltages is not None:
            voltages.append(kernel.v.clone())
    if direct:
        kernel.out = None
    if float_mode:
        kernel.u_ready = False
