"""Pipelining batches of samples across the stages of a staged-coding (C3) network.

In C3 (methods.md section 0) a network of depth D takes D*T steps per sample, but a stage is free
again after its own T steps: while batch i is in stage s, batch i+1 can be in stage s-1. Stage s
holds the nodes whose stage count (``transformer_mbe._stages``) is s: its MBE stage(s), which take
T steps, and the stateless nodes that act on their forwarded values (stage 0: the input and the
relays before the first MBE stage, no steps of their own). Slot k runs stage s on batch k - s for
every s, so B batches take ``(B + D - 1) * T`` steps instead of ``B * D * T``.

Every (stage, batch) pair computes the same nodes on the same tensors as the unpipelined run with
the same batch size, so the results are identical (tests/test_mbe_vit_fixed.py checks it with
equality, float and fixed point); only the order of the work and the step count change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class PipelineSchedule:
    """Which stage ran which batch in which slot (each slot is T steps)."""

    depth: int
    timesteps: int
    batches: int
    slots: list[list[tuple[int, int]]] = field(default_factory=list)   # per slot: (stage, batch) pairs

    @property
    def steps(self) -> int:
        """Steps of the pipelined run: (B + D - 1) * T."""
        return (self.batches + self.depth - 1) * self.timesteps if self.batches else 0

    @property
    def steps_unpipelined(self) -> int:
        return self.batches * self.depth * self.timesteps

    def to_json(self) -> dict:
        return {"depth": self.depth, "timesteps": self.timesteps, "batches": self.batches, "steps": self.steps,
                "steps_unpipelined": self.steps_unpipelined}


def stage_groups(order, depth: dict[str, int]) -> list[list]:
    """Nodes per stage 0..D, each list in the network's (topological) order."""
    D = max(depth.values(), default=0)
    groups: list[list] = [[] for _ in range(D + 1)]
    for node in order:
        if node.name in depth:
            groups[depth[node.name]].append(node)
    return groups


def run_pipelined(run: Callable, batches: int, groups: list[list], timesteps: int) -> tuple[list, PipelineSchedule]:
    """``run(batch_index, nodes, state) -> state`` evaluates ``nodes`` for one batch, continuing
    ``state`` (None at the first stage). Returns every batch's final state, in batch order."""
    D = len(groups) - 1
    sched = PipelineSchedule(depth=max(D, 1), timesteps=int(timesteps), batches=int(batches))
    states: list = [None] * batches
    for k in range(batches + D):
        slot = []
        for s in range(D, -1, -1):          # deeper stages first: each works on an older batch
            i = k - s
            if 0 <= i < batches:
                states[i] = run(i, groups[s], states[i])
                slot.append((s, i))
        sched.slots.append(slot)
    return states, sched


__all__ = ["PipelineSchedule", "run_pipelined", "stage_groups"]
